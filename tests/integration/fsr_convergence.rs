//! The finite-sample reference converges to the population posterior as
//! the training set grows: training sets drawn from the two-mode mixture
//! of the FSR paper give empirical posteriors whose error shrinks at the
//! Monte-Carlo rate N^(-1/2), and the `fsr` sampler reproduces the
//! empirical posterior of its training set.

use posterior_lens::audit::Audit;
use posterior_lens::case::Case;
use posterior_lens::mixture::Mixture;
use posterior_lens::sampler;
use posterior_lens::truth::Truth;

fn population() -> Case {
    Case::builtin("fsr-two-modes-1d").unwrap()
}

/// The case with its prior replaced by `n` atoms drawn from it.
fn training_set_case(n: usize, seed: u64) -> Case {
    let mut case = population();
    let atoms = case.prior.sample(n, seed);
    case.prior = Mixture::atoms(atoms).unwrap();
    case.name = format!("fsr-two-modes-1d-atoms-{n}");
    case
}

/// Posterior mean and standard deviation.
fn moments(truth: &Truth) -> (f64, f64) {
    let p = truth.posterior();
    (p.mean()[0], p.covariance()[(0, 0)].sqrt())
}

#[test]
fn empirical_posterior_error_shrinks_at_the_monte_carlo_rate() {
    let exact = moments(&Truth::new(&population()).unwrap());
    let rms_error = |n: usize| -> f64 {
        let sets = 40;
        let total: f64 = (0..sets)
            .map(|seed| {
                let truth =
                    Truth::new(&training_set_case(n, 1000 + seed)).unwrap();
                let (mean, sd) = moments(&truth);
                (mean - exact.0).powi(2) + (sd - exact.1).powi(2)
            })
            .sum();
        (total / sets as f64).sqrt()
    };
    let (small, large) = (rms_error(100), rms_error(1600));
    // Sixteen times the atoms: four times smaller error.
    let ratio = small / large;
    assert!(
        (2.5..6.5).contains(&ratio),
        "error {small} at N = 100, {large} at N = 1600, ratio {ratio}"
    );
}

#[test]
fn the_fsr_sampler_reproduces_the_empirical_posterior() {
    let case = training_set_case(1600, 7);
    let fsr = sampler::build("fsr:steps=300").unwrap();
    let report = Audit::new().particles(1000).run(&case, fsr.as_ref()).unwrap();
    assert!(report.passed(), "{}", report.to_text());
    // And the empirical posterior is close to the population one.
    let (empirical, population) = (
        moments(&Truth::new(&case).unwrap()),
        moments(&Truth::new(&population()).unwrap()),
    );
    assert!(
        (empirical.0 - population.0).abs() < 0.05,
        "{empirical:?} vs {population:?}"
    );
}
