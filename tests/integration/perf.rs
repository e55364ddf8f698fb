//! The optimised kernels against the straightforward path: the atom
//! softmax (vectorisable `exp`, fused passes) must agree with the
//! reference to 1e-12 relative, and the cell truncation must stay within
//! the neglected mass it reports.

use nalgebra::DMatrix;
use posterior_lens::case::Case;
use posterior_lens::forward::{ForwardModel, Operator};
use posterior_lens::mixture::{AtomCells, Backward, Mixture};
use posterior_lens::truth::Truth;

/// Digits prior, first 32 pixels observed with noise 0.1, and its exact
/// posterior over the atoms.
fn digits_posterior() -> (Case, Mixture) {
    let mut case = Case::builtin("digits-half-masked").expect("built-in");
    let keep: Vec<usize> = (0..32).collect();
    case.observation = case.prior.means().row(5).columns(0, 32).transpose();
    case.forward =
        ForwardModel::new(Operator::Mask { dim: 64, keep }, 0.1).unwrap();
    let posterior = Truth::new(&case).unwrap().posterior().clone();
    (case, posterior)
}

/// The largest entry of `|a - b|` relative to the largest entry of `|b|`.
fn relative_gap(a: &DMatrix<f64>, b: &DMatrix<f64>) -> f64 {
    (a - b).amax() / b.amax().max(1e-300)
}

#[test]
fn optimised_atom_denoiser_matches_the_reference_path() {
    let (case, posterior) = digits_posterior();
    for t in [0.999, 0.5, 0.1, 0.01, 1e-3] {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        for prior in [&case.prior, &posterior] {
            let backward = Backward::new(prior, alpha, sigma).unwrap();
            // 70 rows: one full chunk and a partial one.
            let xs = prior.noised(alpha, sigma).sample(70, 5);
            let fast = backward.denoise_batch(&xs);
            let slow = backward.denoise_batch_reference(&xs);
            let gap = relative_gap(&fast, &slow);
            assert!(gap < 1e-12, "t = {t}: denoiser gap {gap:e}");

            // The JVP path shares the softmax (normalised on the weights
            // rather than on the outputs, so equal up to rounding).
            let (denoised, _) = backward.denoise_and_jvp_batch(&xs, &xs);
            let gap = relative_gap(&denoised, &fast);
            assert!(gap < 1e-12, "t = {t}: the two batch paths differ {gap:e}");
        }
    }
}

#[test]
fn shared_direction_jacobian_products_match_one_product_per_row() {
    // TMPD's products: every row of A at every particle, from one softmax
    // per particle, against one (particle, direction) pair per row.
    let (case, posterior) = digits_posterior();
    let a = case.forward.matrix().unwrap();
    let m = a.nrows();
    assert!(m > 1);
    // The prior's denoiser (what TMPD calls) has a wide covariance; the
    // posterior's is nearly a point mass.
    for (t, target) in [(0.9, &case.prior), (0.1, &case.prior)]
        .into_iter()
        .chain([(0.3, &posterior), (1e-3, &case.prior)])
    {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        let backward = Backward::new(target, alpha, sigma).unwrap();
        let xs = target.noised(alpha, sigma).sample(67, 9);
        let (denoised, shared) = backward.denoise_and_jvps_batch(&xs, &a);
        let repeated = DMatrix::from_fn(67 * m, 64, |r, j| xs[(r / m, j)]);
        let directions = DMatrix::from_fn(67 * m, 64, |r, j| a[(r % m, j)]);
        let (_, one_by_one) =
            backward.denoise_and_jvp_batch(&repeated, &directions);
        let gap = relative_gap(&shared, &one_by_one);
        assert!(gap < 1e-10, "t = {t}: products differ by {gap:e}");
        let gap = relative_gap(&denoised, &backward.denoise_batch(&xs));
        assert!(gap < 1e-12, "t = {t}: denoisers differ by {gap:e}");
    }
}

#[test]
fn cell_truncation_stays_within_the_reported_bound() {
    let (case, posterior) = digits_posterior();
    let cells = AtomCells::new(&posterior).unwrap();
    let scale = posterior.means().amax();
    for t in [0.999, 0.5, 0.1, 0.01, 1e-3] {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        let backward = Backward::new(&posterior, alpha, sigma).unwrap();
        // Particles from the prior's noised law: far from the posterior,
        // where truncation has the most to lose.
        let xs = case.prior.noised(alpha, sigma).sample(70, 6);
        let exact = backward.denoise_batch_reference(&xs);

        // Nothing skipped: the same answer up to rounding.
        let (all, neglected) = cells.denoise_batch(alpha, sigma, &xs, 0.0);
        assert_eq!(neglected, 0.0);
        assert!(relative_gap(&all, &exact) < 1e-12, "t = {t}");

        // Skipping: the error is at most 2 * bound * max |x_k| (plus
        // rounding), and the bound is at most the tolerance.
        for tolerance in [1e-12, 1e-6] {
            let (cut, bound) =
                cells.denoise_batch(alpha, sigma, &xs, tolerance);
            assert!(bound <= tolerance, "t = {t}: bound {bound:e}");
            let error = (&cut - &exact).amax();
            let allowed = 2.0 * bound * scale + 1e-12 * exact.amax();
            assert!(error <= allowed, "t = {t}: {error:e} > {allowed:e}");
        }
    }
}

#[test]
fn fsr_with_truncation_is_reproducible_and_close_to_the_full_run() {
    let (case, _) = digits_posterior();
    let setup = posterior_lens::sampler::Setup::new(&case, Vec::new()).unwrap();
    let run = |spec: &str| {
        let sampler = posterior_lens::sampler::build(spec).unwrap();
        let problem = setup.for_sampler(sampler.as_ref());
        sampler.run(&problem, 70, 3).unwrap().particles
    };
    let full = run("fsr:steps=50");
    let cut = run("fsr:steps=50,truncate=1e-12");
    assert_eq!(cut, run("fsr:steps=50,truncate=1e-12"));
    // Per-step errors below 1e-11 relative, through 50 contracting steps.
    assert!(relative_gap(&cut, &full) < 1e-9, "{}", relative_gap(&cut, &full));
}
