//! Every registered sampler against the contract: it runs on every
//! built-in case without panicking, returns finite particles of the right
//! shape and records the checkpoints it was asked for; bad settings give a
//! clear error; reference samplers reproduce the exact posterior.

use posterior_lens::case::Case;
use posterior_lens::mixture::Mixture;
use posterior_lens::sampler::{self, SamplerKind, Setup, TrajectoryMeaning};

fn checkpoints(case: &Case) -> Vec<f64> {
    let (_, t_max) = case.schedule.time_range();
    vec![0.5 * t_max, 0.1 * t_max]
}

/// The sampler with at most 20 steps (or levels), so that every sampler
/// on every case, the digits training set included, stays quick; the
/// published step counts are exercised on the small cases elsewhere.
fn short(name: &str) -> String {
    let defaults = sampler::build(name).unwrap().settings();
    let shortened: Vec<String> = ["steps", "levels"]
        .iter()
        .filter(|key| defaults.contains_key(**key))
        .map(|key| format!("{key}=20"))
        .collect();
    if shortened.is_empty() {
        name.to_string()
    } else {
        format!("{name}:{}", shortened.join(","))
    }
}

#[test]
fn every_sampler_runs_on_every_builtin_case() {
    for name in Case::builtin_names() {
        let case = Case::builtin(name).unwrap();
        let setup = Setup::new(&case, checkpoints(&case)).unwrap();
        for entry in sampler::registry() {
            let sampler = sampler::build(&short(entry.name)).unwrap();
            let problem = setup.for_sampler(sampler.as_ref());
            let label = format!("{} on {name}", sampler.spec());
            let run = match sampler.run(&problem, 16, 7) {
                Ok(run) => run,
                // A sampler may decline a case it cannot handle, with a
                // one-line reason; it must not panic.
                Err(e) => {
                    assert!(!e.to_string().contains('\n'), "{label}: {e}");
                    continue;
                }
            };
            assert_eq!(run.particles.nrows(), 16, "{label}");
            assert_eq!(run.particles.ncols(), case.dim(), "{label}");
            assert!(run.particles.iter().all(|v| v.is_finite()), "{label}");
            if let Some(w) = &run.log_weights {
                assert_eq!(w.len(), 16, "{label}");
                assert!(w.iter().all(|v| !v.is_nan()), "{label}");
            }
            if sampler.trajectory_meaning() != TrajectoryMeaning::Nothing {
                let times: Vec<f64> =
                    run.trajectory.iter().map(|c| c.t).collect();
                assert_eq!(times, checkpoints(&case), "{label}");
            }
        }
    }
}

#[test]
fn bad_settings_are_rejected_with_a_clear_message() {
    for entry in sampler::registry() {
        let err = sampler::build(&format!("{}:no_such_key=1", entry.name))
            .err()
            .unwrap_or_else(|| {
                panic!("{} accepted an unknown key", entry.name)
            });
        let message = err.to_string();
        assert!(message.contains("unknown setting `no_such_key`"), "{message}");
        assert!(message.contains(entry.name), "{message}");
    }
    let err = sampler::build("exact:steps=0").err().unwrap().to_string();
    assert!(err.contains("steps") && err.contains('0'), "{err}");
    let err = sampler::build("exact:eta=-0.5").err().unwrap().to_string();
    assert!(err.contains("eta") && err.contains("-0.5"), "{err}");
    let err = sampler::build("exact:steps").err().unwrap().to_string();
    assert!(err.contains("key=value"), "{err}");
    let err = sampler::build("no-such-sampler").err().unwrap().to_string();
    assert!(err.contains("unknown sampler `no-such-sampler`"), "{err}");
}

#[test]
fn a_built_sampler_reads_back_its_own_spec() {
    for entry in sampler::registry() {
        let sampler = sampler::build(entry.name).unwrap();
        let again = sampler::build(&sampler.spec()).unwrap();
        assert_eq!(sampler.settings(), again.settings(), "{}", entry.name);
        assert_eq!(sampler.kind(), entry.kind);
    }
}

#[test]
fn samplers_under_test_never_see_the_oracle() {
    let case = Case::builtin("fsr-two-modes-1d").unwrap();
    let setup = Setup::new(&case, vec![]).unwrap();
    for entry in sampler::registry() {
        let sampler = sampler::build(entry.name).unwrap();
        let problem = setup.for_sampler(sampler.as_ref());
        assert_eq!(
            problem.oracle.is_some(),
            entry.kind != SamplerKind::UnderTest,
            "{}",
            entry.name
        );
    }
}

/// Mean and variance of the particles at a checkpoint lie within 5
/// standard errors of the exact noised posterior (1-D cases).
fn assert_matches_1d(sample: &[f64], target: &Mixture, label: &str) {
    let n = sample.len() as f64;
    let mean = target.mean()[0];
    let var = target.covariance()[(0, 0)];
    let sample_mean = sample.iter().sum::<f64>() / n;
    assert!(
        (sample_mean - mean).abs() < 5.0 * (var / n).sqrt(),
        "{label}: mean {sample_mean} vs exact {mean}"
    );
    let dev: Vec<f64> = sample.iter().map(|x| (x - mean).powi(2)).collect();
    let sample_var = dev.iter().sum::<f64>() / n;
    let se =
        (dev.iter().map(|d| (d - sample_var).powi(2)).sum::<f64>() / n / n)
            .sqrt();
    assert!(
        (sample_var - var).abs() < 5.0 * se,
        "{label}: variance {sample_var} vs exact {var} (se {se})"
    );
}

#[test]
fn reference_samplers_reproduce_the_noised_posterior() {
    for name in ["fsr-two-modes-1d", "fsr-gaussian-1d", "fsr-three-atoms"] {
        let case = Case::builtin(name).unwrap();
        let setup = Setup::new(&case, vec![0.5, 0.1]).unwrap();
        for spec in ["exact", "exact:eta=0", "score:method=ddpm,steps=200"] {
            let sampler = sampler::build(spec).unwrap();
            let problem = setup.for_sampler(sampler.as_ref());
            let run = sampler.run(&problem, 4000, 11).unwrap();
            for checkpoint in &run.trajectory {
                let target = setup.truth.noised_posterior(checkpoint.t);
                let sample: Vec<f64> =
                    checkpoint.states.iter().copied().collect();
                let label = format!("{spec} on {name} at t = {}", checkpoint.t);
                assert_matches_1d(&sample, &target, &label);
            }
        }
    }
}

#[test]
fn runs_repeat_exactly_from_the_seed() {
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let setup = Setup::new(&case, vec![0.5]).unwrap();
    for entry in sampler::registry() {
        let sampler = sampler::build(entry.name).unwrap();
        let problem = setup.for_sampler(sampler.as_ref());
        let (Ok(a), Ok(b)) =
            (sampler.run(&problem, 100, 5), sampler.run(&problem, 100, 5))
        else {
            continue;
        };
        assert_eq!(a.particles, b.particles, "{}", entry.name);
        let pool =
            rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let single = pool.install(|| sampler.run(&problem, 100, 5).unwrap());
        assert_eq!(
            a.particles, single.particles,
            "{} with one thread",
            entry.name
        );
    }
}
