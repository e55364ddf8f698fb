//! The schedule's case-file contract: JSON shape, defaults, rejection.

use posterior_lens::schedule::{Schedule, Spacing};

fn parse(json: &str) -> Result<Schedule, serde_json::Error> {
    serde_json::from_str(json)
}

#[test]
fn vp_linear_has_the_documented_json_shape() {
    let schedule =
        parse(r#"{"type": "vp_linear", "beta_min": 0.01, "beta_max": 20.0}"#)
            .unwrap();
    assert_eq!(schedule, Schedule::vp_linear_default());
    assert_eq!(
        serde_json::to_value(&schedule).unwrap(),
        serde_json::json!({
            "type": "vp_linear",
            "beta_min": 0.01,
            "beta_max": 20.0,
        })
    );
}

#[test]
fn every_family_round_trips_through_json() {
    let families = [
        Schedule::vp_linear_default(),
        Schedule::ddpm_linear_default(),
        Schedule::ddpm_cosine_default(),
        Schedule::VeGeometric { sigma_min: 0.01, sigma_max: 378.0 },
        Schedule::edm_default(),
        Schedule::RectifiedFlow {},
    ];
    for schedule in families {
        let text = serde_json::to_string(&schedule).unwrap();
        assert_eq!(parse(&text).unwrap(), schedule, "{text}");
    }
    assert_eq!(
        serde_json::to_string(&Schedule::RectifiedFlow {}).unwrap(),
        r#"{"type":"rectified_flow"}"#
    );
}

#[test]
fn ddpm_fields_default_to_the_published_values() {
    assert_eq!(
        parse(r#"{"type": "ddpm_linear"}"#).unwrap(),
        Schedule::ddpm_linear_default()
    );
    assert_eq!(
        parse(r#"{"type": "ddpm_cosine", "steps": 1000}"#).unwrap(),
        Schedule::ddpm_cosine_default()
    );
}

#[test]
fn unknown_fields_and_types_are_rejected() {
    let err = parse(
        r#"{"type": "vp_linear", "beta_min": 0.1, "beta_max": 20,
            "beta_mid": 3}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `beta_mid`"), "{err}");

    let err = parse(r#"{"type": "rectified_flow", "t_max": 1}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `t_max`"), "{err}");

    let err = parse(r#"{"type": "vp_cosine"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown variant"), "{err}");

    let err = parse(r#"{"type": "vp_linear", "beta_min": 0.1}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `beta_max`"), "{err}");
}

#[test]
fn bad_values_parse_but_fail_validation() {
    let schedule =
        parse(r#"{"type": "vp_linear", "beta_min": 0.01, "beta_max": -1}"#)
            .unwrap();
    let err = schedule.validate().unwrap_err();
    assert_eq!(err.kind(), posterior_lens::ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "schedule.beta_max must be positive, got -1");
}

#[test]
fn spacing_has_a_tagged_json_form() {
    let spacing: Spacing =
        serde_json::from_str(r#"{"type": "karras", "rho": 7.0}"#).unwrap();
    assert_eq!(spacing, Spacing::Karras { rho: 7.0 });
    let spacing: Spacing =
        serde_json::from_str(r#"{"type": "log_snr"}"#).unwrap();
    assert_eq!(spacing, Spacing::LogSnr);
}

#[test]
fn ddpm_grid_hits_the_discrete_steps() {
    // A uniform grid of T steps over [0, 1] lands on t = i/T, where the
    // interpolated schedule equals the discrete one.
    let schedule =
        Schedule::DdpmLinear { beta_start: 0.01, beta_end: 0.1, steps: 10 };
    let grid = schedule.grid(10, 0.0, 1.0, Spacing::Uniform).unwrap();
    let betas = schedule.discrete_betas().unwrap();
    let mut abar = 1.0;
    for (i, beta) in betas.iter().enumerate() {
        abar *= 1.0 - beta;
        let t = grid[grid.len() - 2 - i];
        let got = schedule.alpha(t).powi(2);
        assert!((got / abar - 1.0).abs() < 1e-12, "step {}: {got}", i + 1);
    }
}
