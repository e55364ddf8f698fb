//! Case files: every built-in case loads, and every kind of bad case file
//! is rejected by the real binary with a one-line message naming the field
//! and the value, exit code 3, and no panic.

use std::path::Path;
use std::process::Command;

use posterior_lens::case::Case;
use serde_json::{Value, json};

use crate::util::{bin, fixtures};

fn two_modes() -> Value {
    json!({
        "schema_version": 1,
        "name": "two-modes",
        "prior": {
            "type": "gaussian_mixture",
            "weights": [0.4, 0.6],
            "means": [[-1.0], [1.5]],
            "covariances": [[[0.16]], [[0.36]]]
        },
        "forward": {"type": "linear", "matrix": [[1.0]], "noise_std": 0.3},
        "observation": [0.5],
        "schedule": {"type": "vp_linear", "beta_min": 0.01, "beta_max": 20.0}
    })
}

/// Runs `truth --case <file>` on the given JSON text.
fn run_truth(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.json");
    std::fs::write(&path, text).unwrap();
    run_truth_path(&path)
}

fn run_truth_path(path: &Path) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(["truth", "--case"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Asserts a bad-input rejection: exit 3, nothing on stdout, one line on
/// stderr containing every expected fragment, no panic.
fn assert_rejected(case: &Value, expected: &[&str]) {
    let (code, stdout, stderr) = run_truth(&case.to_string());
    assert_eq!(code, 3, "exit code for {case}: stderr {stderr}");
    assert!(stdout.is_empty(), "stdout for a bad case: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for fragment in expected {
        assert!(stderr.contains(fragment), "`{fragment}` not in `{stderr}`");
    }
}

#[test]
fn every_builtin_case_loads_and_matches_its_fixture_file() {
    for name in Case::builtin_names() {
        let builtin = Case::builtin(name).unwrap();
        let path = fixtures().join("cases").join(format!("{name}.json"));
        let from_file = Case::from_file(&path).unwrap();
        assert_eq!(builtin.name, name);
        assert_eq!(builtin.prior, from_file.prior, "{name}");
        assert_eq!(builtin.observation, from_file.observation, "{name}");
    }
}

#[test]
fn a_valid_case_file_runs() {
    let (code, stdout, stderr) = run_truth(&two_modes().to_string());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("exact posterior of two-modes"), "{stdout}");
}

#[test]
fn unknown_field_is_rejected() {
    let mut case = two_modes();
    case["forward"]["noise_sd"] = json!(0.3);
    assert_rejected(&case, &["unknown field", "noise_sd"]);
    let mut case = two_modes();
    case["colour"] = json!("blue");
    assert_rejected(&case, &["unknown field", "colour"]);
}

#[test]
fn shapes_that_disagree_are_rejected() {
    let mut case = two_modes();
    case["prior"]["means"] = json!([[-1.0], [1.5], [3.0]]);
    assert_rejected(&case, &["prior", "means has 3 rows", "2"]);
    let mut case = two_modes();
    case["forward"]["matrix"] = json!([[1.0, 2.0]]);
    assert_rejected(&case, &["forward", "matrix has 2 columns", "1"]);
    let mut case = two_modes();
    case["observation"] = json!([0.5, 0.1]);
    assert_rejected(&case, &["observation has length 2", "1"]);
}

#[test]
fn non_finite_numbers_are_rejected() {
    // JSON has no NaN literal; a file that writes one is not JSON.
    let text = two_modes().to_string().replace("0.16", "NaN");
    let (code, _, stderr) = run_truth(&text);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("invalid case file"), "{stderr}");
    // A number too large for an f64 is rejected by the reader too.
    let text = two_modes().to_string().replace("0.16", "1e999");
    let (code, _, stderr) = run_truth(&text);
    assert_eq!(code, 3, "{stderr}");
}

#[test]
fn non_psd_covariance_is_rejected() {
    let mut case = two_modes();
    case["prior"]["means"] = json!([[-1.0, 0.0], [1.5, 0.0]]);
    case["prior"]["covariances"] =
        json!([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]]);
    case["forward"]["matrix"] = json!([[1.0, 0.0]]);
    assert_rejected(
        &case,
        &["covariances[1]", "not positive semi-definite", "-1"],
    );
    let mut case = two_modes();
    case["prior"]["covariances"] = json!({"isotropic": [0.1, -0.2]});
    assert_rejected(&case, &["covariances[1]", "-0.2"]);
}

#[test]
fn zero_or_negative_noise_is_rejected() {
    for noise in [0.0, -0.1] {
        let mut case = two_modes();
        case["forward"]["noise_std"] = json!(noise);
        assert_rejected(&case, &["noise_std", &format!("{noise}")]);
    }
}

#[test]
fn empty_training_set_is_rejected() {
    let mut case = two_modes();
    case["prior"] = json!({"type": "empirical", "points": []});
    assert_rejected(&case, &["prior", "training set is empty"]);
}

#[test]
fn weights_that_do_not_sum_to_a_positive_number_are_rejected() {
    let mut case = two_modes();
    case["prior"]["weights"] = json!([0.0, 0.0]);
    assert_rejected(&case, &["weights must sum to a positive", "0"]);
    let mut case = two_modes();
    case["prior"]["weights"] = json!([0.5, -0.5]);
    assert_rejected(&case, &["weights[1]", "-0.5"]);
}

#[test]
fn missing_files_and_unknown_names_are_rejected() {
    let (code, _, stderr) = run_truth_path(Path::new("/nonexistent/case.json"));
    assert_eq!(code, 3);
    assert!(stderr.contains("/nonexistent/case.json"), "{stderr}");
    let out = Command::new(bin())
        .args(["truth", "--case", "no-such-case"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // A name that is neither a file nor a built-in case is a bad flag
    // value (usage), not a bad input file.
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("unknown case `no-such-case`"), "{stderr}");
    assert!(stderr.contains("fsr-three-atoms"), "lists the built-ins");
    let mut case = two_modes();
    case["prior"] = json!({"type": "empirical", "file": "missing.csv"});
    assert_rejected(&case, &["cannot read data file", "missing.csv"]);
}

#[test]
fn schedule_errors_name_the_field() {
    let mut case = two_modes();
    case["schedule"] = json!({"type": "vp_linear", "beta_min": 0.01,
                              "beta_max": -20.0});
    assert_rejected(&case, &["beta_max", "-20"]);
}

#[test]
fn truth_json_is_round_trip_exact() {
    let out = Command::new(bin())
        .args(["truth", "--case", "gmm-2d-one-coordinate", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let truth = posterior_lens::truth::Truth::new(&case).unwrap();
    let posterior = truth.posterior();
    let weights = posterior.weights();
    for (k, w) in
        value["posterior"]["weights"].as_array().unwrap().iter().enumerate()
    {
        // Bit-for-bit: the printed decimal parses back to the same f64.
        assert_eq!(w.as_f64().unwrap().to_bits(), weights[k].to_bits());
    }
    let cov = posterior.component_covariance(0);
    let printed = &value["posterior"]["covariances"][0];
    for i in 0..2 {
        for j in 0..2 {
            assert_eq!(
                printed[i][j].as_f64().unwrap().to_bits(),
                cov[(i, j)].to_bits()
            );
        }
    }
}

#[test]
fn a_drawn_observation_repeats_from_its_seed() {
    let mut case = two_modes();
    case["observation"] = json!({"draw": {"seed": 7}});
    let load = |case: &Value| {
        Case::from_json(
            &case.to_string(),
            &posterior_lens::case::Base::Embedded,
        )
        .unwrap()
    };
    let (a, b) = (load(&case), load(&case));
    assert_eq!(a.observation, b.observation);
    assert_eq!(a.signal, b.signal);
    // y - x* is the measurement noise: small against noise_std 0.3.
    let noise = a.observation[0] - a.signal.as_ref().unwrap()[0];
    assert!(noise.abs() < 5.0 * 0.3, "{noise}");
    case["observation"] = json!({"draw": {"seed": 8}});
    assert_ne!(load(&case).observation, a.observation);
    case["observation"] = json!({"draw": {"sead": 8}});
    let (code, _, stderr) = run_truth(&case.to_string());
    assert_eq!(code, 3);
    assert!(stderr.contains("sead"), "{stderr}");
}
