//! The exact posteriors and the exact quantities at probe points, against
//! an independent NumPy/SciPy computation (`fixtures/reference/`, made by
//! `reference.py` with the plain textbook formulas). Values agree to
//! `1e-10 * max(1, max |reference|)` per vector or matrix; log-weights are
//! compared on the log scale so that tiny weights count.

use nalgebra::{DMatrix, DVector};
use posterior_lens::case::Case;
use posterior_lens::mixture::Backward;
use posterior_lens::truth::Truth;
use serde_json::Value;

use crate::util::fixtures;

const TOLERANCE: f64 = 1e-10;

fn reference() -> Value {
    let path = fixtures().join("reference").join("posteriors.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    match value {
        Value::Array(items) => items.iter().flat_map(numbers).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap()],
        other => panic!("not a number or array: {other}"),
    }
}

/// Asserts `|a - r| <= TOLERANCE * max(1, max |r|)` entry by entry.
fn assert_close(label: &str, got: &[f64], expected: &Value) {
    let expected = numbers(expected);
    assert_eq!(got.len(), expected.len(), "{label}: length");
    let scale = expected.iter().fold(1.0_f64, |a, v| a.max(v.abs()));
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - e).abs() <= TOLERANCE * scale,
            "{label}[{i}]: {g} vs reference {e} (difference {:e}, scale {scale})",
            (g - e).abs()
        );
    }
}

fn matrix_entries(m: &DMatrix<f64>) -> Vec<f64> {
    m.row_iter().flat_map(|r| r.iter().copied().collect::<Vec<_>>()).collect()
}

#[test]
fn posteriors_match_the_numpy_reference() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), Case::builtin_names().len());
    for expected in cases {
        let name = expected["name"].as_str().unwrap();
        let case = Case::builtin(name).unwrap();
        let truth = Truth::new(&case).unwrap();
        let posterior = truth.posterior();
        let post = &expected["posterior"];
        assert_close(
            &format!("{name} log_evidence"),
            &[truth.log_evidence()],
            &post["log_evidence"],
        );
        let log_weights = posterior.log_weights().as_slice().to_vec();
        assert_close(
            &format!("{name} log_weights"),
            &log_weights,
            &post["log_weights"],
        );
        if !post["means"].is_null() {
            assert_close(
                &format!("{name} means"),
                &matrix_entries(posterior.means()),
                &post["means"],
            );
            let covs: Vec<f64> = (0..posterior.num_components())
                .flat_map(|k| {
                    matrix_entries(&posterior.component_covariance(k))
                })
                .collect();
            assert_close(
                &format!("{name} covariances"),
                &covs,
                &post["covariances"],
            );
        }
        for at in expected["times"].as_array().unwrap() {
            let t = at["t"].as_f64().unwrap();
            let (alpha, sigma) = case.schedule.alpha_sigma(t);
            let label = format!("{name} t={t}");
            assert_close(&format!("{label} alpha"), &[alpha], &at["alpha"]);
            assert_close(&format!("{label} sigma"), &[sigma], &at["sigma"]);
            let noised = truth.noised_posterior(t);
            assert_close(
                &format!("{label} noised mean"),
                noised.mean().as_slice(),
                &at["noised_posterior_mean"],
            );
            assert_close(
                &format!("{label} noised covariance"),
                &matrix_entries(&noised.covariance()),
                &at["noised_posterior_covariance"],
            );
        }
    }
}

#[test]
fn probe_values_match_the_numpy_reference() {
    let reference = reference();
    for expected in reference["cases"].as_array().unwrap() {
        let name = expected["name"].as_str().unwrap();
        let case = Case::builtin(name).unwrap();
        let truth = Truth::new(&case).unwrap();
        for (p, probe) in
            expected["probes"].as_array().unwrap().iter().enumerate()
        {
            let t = probe["t"].as_f64().unwrap();
            let at = truth.at(t).unwrap();
            let x = DVector::from_vec(numbers(&probe["x"]));
            let x = x.as_view();
            let label = |what: &str| format!("{name} probe {p} (t={t}) {what}");
            assert_close(
                &label("log_p_t"),
                &[at.prior_log_density(x)],
                &probe["log_p_t"],
            );
            assert_close(
                &label("grad_log_p_t"),
                at.prior_score(x).as_slice(),
                &probe["grad_log_p_t"],
            );
            assert_close(
                &label("denoiser_mean"),
                at.denoise(x).as_slice(),
                &probe["denoiser_mean"],
            );
            let backward: &Backward = at.prior_backward();
            assert_close(
                &label("denoiser_covariance"),
                &matrix_entries(&backward.posterior(x).covariance()),
                &probe["denoiser_covariance"],
            );
            assert_close(
                &label("log_p_t_given_y"),
                &[at.log_density(x)],
                &probe["log_p_t_given_y"],
            );
            assert_close(
                &label("grad_log_p_t_given_y"),
                at.score(x).as_slice(),
                &probe["grad_log_p_t_given_y"],
            );
            assert_close(
                &label("log_likelihood"),
                &[at.log_likelihood(x).unwrap()],
                &probe["log_likelihood"],
            );
            assert_close(
                &label("grad_log_likelihood"),
                at.likelihood_score(x).as_slice(),
                &probe["grad_log_likelihood"],
            );
            assert_close(
                &label("posterior_denoiser_mean"),
                at.conditional_denoise(x).as_slice(),
                &probe["posterior_denoiser_mean"],
            );
            if !probe["posterior_denoiser_covariance"].is_null() {
                assert_close(
                    &label("posterior_denoiser_covariance"),
                    &matrix_entries(&at.conditional_backward(x).covariance()),
                    &probe["posterior_denoiser_covariance"],
                );
            }
            if !probe["log_responsibilities"].is_null() {
                let log_w = backward.marginal().log_responsibilities(x);
                assert_close(
                    &label("log_responsibilities"),
                    log_w.as_slice(),
                    &probe["log_responsibilities"],
                );
                let conditional = at.conditional_backward(x);
                assert_close(
                    &label("log_conditional_weights"),
                    conditional.log_weights().as_slice(),
                    &probe["log_conditional_weights"],
                );
            }
        }
    }
}
