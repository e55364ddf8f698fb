//! The audit on runs with known defects: exact draws pass; exact draws
//! shrunk, with a mode emptied, or with mass moved off the support fail
//! with the intended finding; malformed runs are input errors.

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use posterior_lens::audit::{Audit, AuditFailure, SamplerIdentity};
use posterior_lens::case::Case;
use posterior_lens::mixture::Mixture;
use posterior_lens::report::Failure;
use posterior_lens::sampler::{self, Checkpoint, Run, TrajectoryMeaning};
use posterior_lens::truth::Truth;

fn identity() -> SamplerIdentity {
    SamplerIdentity {
        name: "planted".into(),
        settings: BTreeMap::new(),
        meaning: TrajectoryMeaning::NoisedPosterior,
    }
}

/// A run whose checkpoint states are exact draws of `p_t(. | y)`, passed
/// through `defect`.
fn planted_run(
    truth: &Truth,
    times: &[f64],
    n: usize,
    seed: u64,
    defect: impl Fn(&Truth, f64, DMatrix<f64>) -> DMatrix<f64>,
) -> Run {
    let trajectory: Vec<Checkpoint> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| Checkpoint {
            t,
            states: defect(truth, t, truth.sample_at(t, n, seed + i as u64)),
            denoised: None,
        })
        .collect();
    let last = *times.last().unwrap();
    Run {
        particles: trajectory.last().unwrap().states.clone(),
        final_time: last,
        log_weights: None,
        trajectory: trajectory[..trajectory.len() - 1].to_vec(),
    }
}

fn audit(case: &Case, run: &Run) -> posterior_lens::report::Report {
    let truth = Truth::new(case).unwrap();
    Audit::new().audit_run(case, &truth, run, &identity()).unwrap()
}

const TIMES: [f64; 3] = [0.5, 0.2, 0.05];

#[test]
fn exact_draws_pass() {
    for name in ["fsr-two-modes-1d", "gmm-2d-one-coordinate", "mcgdiff-grid-d8"]
    {
        let case = Case::builtin(name).unwrap();
        let truth = Truth::new(&case).unwrap();
        let run = planted_run(&truth, &TIMES, 1000, 3, |_, _, x| x);
        let report = audit(&case, &run);
        assert!(report.passed(), "{}", report.to_text());
    }
}

/// Two training points, the second ruled out to a posterior weight of
/// about 1e-4 yet carrying most of the posterior variance.
fn rare_distant_atom() -> Case {
    let json = r#"{"schema_version": 1, "name": "two-atoms-rare-2d",
        "prior": {"type": "empirical", "points": [[0, 0], [0.6, 0]]},
        "forward": {"type": "identity", "noise_std": 0.14},
        "observation": [0, 0],
        "schedule": {"type": "vp_linear", "beta_min": 0.01, "beta_max": 20}}"#;
    Case::from_json(json, &posterior_lens::case::Base::Embedded).unwrap()
}

#[test]
fn a_rare_component_carrying_the_variance_decides_no_spread() {
    // 250 exact draws nearly always miss the distant atom, so their
    // variance is far below the truth's; the normal approximation of the
    // spread tests called that too narrow in 18 of 20 seeds.
    let case = rare_distant_atom();
    let truth = Truth::new(&case).unwrap();
    let times = [0.5, 0.05, 0.001];
    for seed in 0..10 {
        let run = planted_run(&truth, &times, 250, 10 * seed, |_, _, x| x);
        let report = audit(&case, &run);
        assert!(report.passed(), "seed {seed}: {}", report.to_text());
        let last = report.checkpoints.last().unwrap();
        let total = last.spread.iter().find(|s| s.direction == "total");
        assert!(total.unwrap().test.method.contains("undecided"));
    }
    // Collapsed particles are still too narrow: along the directions the
    // rare atom does not dominate, and by the mode tests.
    let run = planted_run(&truth, &times, 250, 1, |_, _, x| x * 0.5);
    let report = audit(&case, &run);
    assert!(
        report.findings.iter().any(|f| f.failure == Failure::SpreadTooNarrow),
        "{}",
        report.to_text()
    );
}

#[test]
fn shrunk_draws_are_spread_too_narrow_and_widened_ones_too_wide() {
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let truth = Truth::new(&case).unwrap();
    for (factor, failure) in
        [(0.7, Failure::SpreadTooNarrow), (1.4, Failure::SpreadTooWide)]
    {
        let run = planted_run(&truth, &TIMES, 1000, 5, |truth, t, x| {
            // Scale about the exact mean.
            let mean = truth.noised_posterior(t).mean().transpose();
            let mut out = x.clone();
            for mut row in out.row_iter_mut() {
                let scaled = (&row - &mean) * factor + &mean;
                row.copy_from(&scaled);
            }
            out
        });
        let report = audit(&case, &run);
        assert!(report.failures().contains(&failure), "{}", report.to_text());
        for f in report.findings.iter().filter(|f| f.failure == failure) {
            assert!(f.p_adjusted <= 1e-3);
        }
    }
}

#[test]
fn a_misweighted_mode_is_mode_misweighted() {
    // The posterior of this case has two modes of weight 0.48 and 0.52;
    // the planted particles are exact draws of the same components with
    // weights 0.3 and 0.7.
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let truth = Truth::new(&case).unwrap();
    let run = planted_run(&truth, &[0.05], 1000, 9, |truth, t, _| {
        let target = truth.noised_posterior(t);
        let w = target.weights();
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
        let mut skewed = w.clone();
        let top = w[order[0]] + w[order[1]];
        skewed[order[0]] = 0.7 * top;
        skewed[order[1]] = 0.3 * top;
        Mixture::new(
            skewed,
            target.means().clone(),
            target.covariances().clone(),
        )
        .unwrap()
        .sample(1000, 77)
    });
    let report = audit(&case, &run);
    assert!(
        report.failures().contains(&Failure::ModeMisweighted),
        "{}",
        report.to_text()
    );
}

#[test]
fn mass_on_a_ruled_out_prior_mode_is_unsupported() {
    let case = Case::builtin("fsr-three-atoms").unwrap();
    let truth = Truth::new(&case).unwrap();
    // Put 10% of the particles on the atom at 2.2, which y = -1.8 rules
    // out (posterior weight 2.5e-39).
    let run = planted_run(&truth, &[0.05], 1000, 4, |_, t, mut x| {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        for i in 0..100 {
            x[(i, 0)] = alpha * 2.2 + sigma * 0.1 * (i as f64 / 100.0 - 0.5);
        }
        x
    });
    let report = audit(&case, &run);
    let kinds: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.failure == Failure::UnsupportedMode)
        .map(|f| f.location.as_str())
        .collect();
    assert!(kinds.contains(&"ruled_out_prior_mode"), "{}", report.to_text());
}

#[test]
fn a_failure_at_one_time_only_is_stop_time_sensitive() {
    let case = Case::builtin("fsr-two-modes-1d").unwrap();
    let truth = Truth::new(&case).unwrap();
    let run = planted_run(&truth, &TIMES, 1000, 6, |truth, t, x| {
        if t == 0.2 {
            let mean = truth.noised_posterior(t).mean()[0];
            x.map(|v| mean + 0.6 * (v - mean))
        } else {
            x
        }
    });
    let report = audit(&case, &run);
    assert!(
        report.failures().contains(&Failure::StopTimeSensitive),
        "{}",
        report.to_text()
    );
}

#[test]
fn malformed_runs_are_input_errors() {
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let truth = Truth::new(&case).unwrap();
    let good = planted_run(&truth, &[0.05], 100, 1, |_, _, x| x);
    let check = |run: &Run, expected: &str| {
        let err = Audit::new()
            .audit_run(&case, &truth, run, &identity())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "`{expected}` not in `{err}`");
    };
    let mut run = good.clone();
    run.particles[(3, 1)] = f64::NAN;
    check(&run, "samples[3][1] is NaN");
    let mut run = good.clone();
    run.particles = DMatrix::zeros(100, 3);
    check(&run, "samples has 3 columns but the case has dimension 2");
    let mut run = good.clone();
    run.log_weights = Some(DVector::from_element(100, f64::NEG_INFINITY));
    check(&run, "log_weights");
    let mut run = good.clone();
    run.log_weights = Some(DVector::zeros(7));
    check(&run, "log_weights has 7 entries but there are 100 samples");
}

#[test]
fn check_returns_the_report_and_failures_carry_numbers_and_replay() {
    let case = Case::builtin("fsr-two-modes-1d").unwrap();
    let exact = sampler::build("exact").unwrap();
    let audit = Audit::new().particles(500).seed(2);
    let report = audit.check(&case, exact.as_ref()).unwrap();
    assert!(report.replay.contains("--case fsr-two-modes-1d"));
    assert!(report.replay.contains("--seed 2"));

    let truth = Truth::new(&case).unwrap();
    let run = planted_run(&truth, &[0.2], 1000, 3, |_, _, x| x * 0.5);
    let failing = audit.audit_run(&case, &truth, &run, &identity()).unwrap();
    // Halving every particle halves the standard deviation: the interval
    // of the measured ratio holds 0.5.
    let ci = failing.checkpoints[0].spread[0].ci;
    assert!(ci[0] < 0.5 && 0.5 < ci[1], "{ci:?}");
    let evidence = failing.findings[0].evidence.clone();
    let message = AuditFailure::Findings(Box::new(failing)).to_string();
    assert!(message.contains("spread_too_narrow at t = 0.2"), "{message}");
    assert!(message.contains(&evidence), "{message}");
    assert!(message.contains("replay: posterior-lens audit"), "{message}");
}

mod properties {
    //! The assertion API inside property tests: `?` on `Audit::check`.

    use posterior_lens::audit::{Audit, AuditFailure};
    use posterior_lens::sampler;
    use posterior_lens::strategy::{CaseSpec, cases};
    use proptest::prelude::*;

    proptest! {
        // A fixed seed: the audit is statistical, and CI must not depend
        // on the draw of cases (a failure still shrinks and persists).
        #![proptest_config(ProptestConfig {
            cases: 3,
            rng_seed: proptest::test_runner::RngSeed::Fixed(7),
            ..ProptestConfig::default()
        })]

        #[test]
        fn exact_sampler_passes_on_random_cases(spec in cases(3, 3)) {
            let case = spec.build().unwrap();
            let exact = sampler::build("exact:steps=20").unwrap();
            Audit::new().particles(400).seed(1).check(&case, exact.as_ref())?;
        }
    }

    #[test]
    fn quickcheck_properties_can_return_audit_results() {
        fn exact_passes(spec: CaseSpec) -> Result<(), AuditFailure> {
            let case = spec.build().expect("valid spec");
            let exact = sampler::build("exact:steps=20").expect("built-in");
            // quickcheck's generator cannot be seeded: a very low false-alarm
            // rate keeps this demonstration from flaking.
            Audit::new()
                .particles(400)
                .fwer(1e-6)
                .check(&case, exact.as_ref())?;
            Ok(())
        }
        quickcheck::QuickCheck::new().tests(2).quickcheck(
            exact_passes as fn(CaseSpec) -> Result<(), AuditFailure>,
        );
    }
}

#[test]
fn the_lens_reads_one_for_the_exact_likelihood_score() {
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let score = sampler::build("score:method=ddpm,steps=100").unwrap();
    let report =
        Audit::new().particles(300).run(&case, score.as_ref()).unwrap();
    let lenses: Vec<_> =
        report.checkpoints.iter().filter_map(|c| c.lens.as_ref()).collect();
    assert!(!lenses.is_empty());
    for lens in lenses {
        assert!((lens.cosine_mean - 1.0).abs() < 1e-9, "{lens:?}");
        assert!((lens.norm_ratio_median - 1.0).abs() < 1e-9, "{lens:?}");
    }
    // The exact sampler exposes no likelihood score.
    let exact = sampler::build("exact").unwrap();
    let report =
        Audit::new().particles(300).run(&case, exact.as_ref()).unwrap();
    assert!(report.checkpoints.iter().all(|c| c.lens.is_none()));
}

/// TMPD's likelihood approximation is exact for a Gaussian prior with a
/// linear measurement (its covariance A C_t A^T + sigma_y^2 I is the true
/// one): the lens reads 1 at every checkpoint. DPS (sigma form, no
/// covariance term) over-weights the likelihood: norm ratio above 1.
#[test]
fn the_lens_explains_tmpd_and_dps_on_a_gaussian_prior() {
    let case = Case::builtin("fsr-gaussian-1d").unwrap();
    let audit = Audit::new().particles(200);
    let tmpd = sampler::build("tmpd:steps=50").unwrap();
    let report = audit.run(&case, tmpd.as_ref()).unwrap();
    for c in report.checkpoints.iter().filter_map(|c| c.lens.as_ref()) {
        assert!((c.norm_ratio_median - 1.0).abs() < 1e-8, "{c:?}");
        assert!((c.cosine_mean - 1.0).abs() < 1e-8, "{c:?}");
    }
    let dps = sampler::build("dps:form=sigma,steps=50").unwrap();
    let report = audit.run(&case, dps.as_ref()).unwrap();
    let lenses: Vec<_> =
        report.checkpoints.iter().filter_map(|c| c.lens.as_ref()).collect();
    assert!(!lenses.is_empty());
    for lens in lenses {
        assert!(lens.norm_ratio_range[0] > 1.0, "{lens:?}");
    }
}

#[test]
fn final_particles_away_from_every_training_point_are_unsupported() {
    let case = Case::builtin("fsr-three-atoms").unwrap();
    let truth = Truth::new(&case).unwrap();
    // 10% of the final particles halfway between the training points 0.2
    // and 2.2, where no (noised) training point is near.
    let run = planted_run(&truth, &[0.02], 1000, 8, |_, t, mut x| {
        let alpha = case.schedule.alpha(t);
        for i in 0..100 {
            x[(i, 0)] = alpha * 1.2;
        }
        x
    });
    let report = audit(&case, &run);
    let kinds: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.failure == Failure::UnsupportedMode)
        .map(|f| f.location.as_str())
        .collect();
    assert!(kinds.contains(&"off_training_set"), "{}", report.to_text());
}
