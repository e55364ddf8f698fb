use proptest::prelude::*;

use super::*;

/// One schedule of every family with published or typical parameters.
fn all_families() -> Vec<Schedule> {
    vec![
        Schedule::vp_linear_default(),
        Schedule::VpLinear { beta_min: 0.1, beta_max: 25.0 },
        Schedule::VpLinear { beta_min: 2.0, beta_max: 2.0 },
        Schedule::ddpm_linear_default(),
        Schedule::DdpmLinear { beta_start: 0.01, beta_end: 0.2, steps: 7 },
        Schedule::ddpm_cosine_default(),
        Schedule::DdpmCosine { s: 0.0, steps: 13 },
        Schedule::VeGeometric { sigma_min: 0.01, sigma_max: 378.0 },
        Schedule::edm_default(),
        Schedule::RectifiedFlow {},
    ]
}

/// A time strictly inside the schedule's range and, for discrete
/// schedules, at least a fifth of a step away from every grid point, so a
/// central difference with a small step stays on one linear segment.
fn interior_time(schedule: &Schedule, u: f64) -> f64 {
    let (lo, hi) = schedule.time_range();
    match *schedule {
        Schedule::DdpmLinear { steps, .. }
        | Schedule::DdpmCosine { steps, .. } => {
            let scaled = u * (steps as f64 - 1.0);
            let k = scaled.floor();
            let frac = 0.2 + 0.6 * (scaled - k);
            (k + frac) / steps as f64
        }
        _ => lo + (hi - lo) * (0.02 + 0.96 * u),
    }
}

fn central_difference(f: impl Fn(f64) -> f64, t: f64, h: f64) -> f64 {
    (f(t + h) - f(t - h)) / (2.0 * h)
}

fn step_for(schedule: &Schedule, t: f64) -> f64 {
    match *schedule {
        Schedule::DdpmLinear { steps, .. }
        | Schedule::DdpmCosine { steps, .. } => 1e-5 / steps as f64,
        _ => 1e-6 * t.abs().max(1e-3),
    }
}

fn assert_close(actual: f64, expected: f64, rel: f64, what: &str) {
    let scale = expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= rel * scale,
        "{what}: got {actual}, expected {expected}"
    );
}

#[test]
fn families_validate() {
    for schedule in all_families() {
        schedule.validate().unwrap();
    }
}

proptest! {
    #[test]
    fn vp_scales_preserve_variance(
        index in 0usize..7,
        u in 0.0f64..=1.0,
    ) {
        let schedule = &all_families()[index];
        let (alpha, sigma) = schedule.alpha_sigma(u);
        prop_assert!((alpha * alpha + sigma * sigma - 1.0).abs() < 1e-14);
    }

    #[test]
    fn derivatives_match_finite_differences(
        index in 0usize..10,
        u in 0.0f64..1.0,
    ) {
        let schedule = &all_families()[index];
        let t = interior_time(schedule, u);
        let h = step_for(schedule, t);

        let alpha_fd = central_difference(|s| schedule.alpha(s), t, h);
        let sigma_fd = central_difference(|s| schedule.sigma(s), t, h);
        let log_alpha_fd =
            central_difference(|s| schedule.alpha(s).ln(), t, h);
        let var_fd = central_difference(|s| schedule.sigma(s).powi(2), t, h);
        let g2_fd = var_fd - 2.0 * log_alpha_fd * schedule.sigma(t).powi(2);

        assert_close(schedule.alpha_dot(t), alpha_fd, 1e-6, "alpha_dot");
        assert_close(schedule.sigma_dot(t), sigma_fd, 1e-6, "sigma_dot");
        assert_close(schedule.drift(t), log_alpha_fd, 1e-6, "drift");
        assert_close(
            schedule.diffusion_squared(t),
            g2_fd,
            1e-6,
            "diffusion_squared",
        );
    }

    #[test]
    fn ve_sigma_inverse_round_trips(
        index in 0usize..10,
        u in 0.0f64..1.0,
    ) {
        let schedule = &all_families()[index];
        let t = interior_time(schedule, u);
        let s = schedule.ve_sigma(t);
        let back = schedule.time_for_ve_sigma(s).unwrap();
        prop_assert!(
            (back - t).abs() <= 1e-9 * t.max(1.0),
            "t {t} -> ve_sigma {s} -> {back}"
        );
    }

    #[test]
    fn log_snr_agrees_with_scales(
        index in 0usize..10,
        u in 0.0f64..1.0,
    ) {
        let schedule = &all_families()[index];
        let t = interior_time(schedule, u);
        let (alpha, sigma) = schedule.alpha_sigma(t);
        let direct = 2.0 * (alpha / sigma).ln();
        prop_assert!((schedule.log_snr(t) - direct).abs() < 1e-9);
        prop_assert!(
            (schedule.ve_sigma(t) / (sigma / alpha) - 1.0).abs() < 1e-12
        );
    }

    #[test]
    fn grids_decrease_between_the_endpoints(
        index in 0usize..10,
        steps in 1usize..40,
        spacing_index in 0usize..4,
    ) {
        let schedule = &all_families()[index];
        let (lo, hi) = schedule.time_range();
        let t_min = lo + 1e-3 * (hi - lo);
        let t_max = hi - 1e-3 * (hi - lo);
        let spacing = [
            Spacing::Uniform,
            Spacing::Quadratic,
            Spacing::LogSnr,
            Spacing::Karras { rho: 7.0 },
        ][spacing_index];
        let grid = schedule.grid(steps, t_min, t_max, spacing).unwrap();
        prop_assert_eq!(grid.len(), steps + 1);
        prop_assert_eq!(grid[0], t_max);
        prop_assert_eq!(grid[steps], t_min);
        for pair in grid.windows(2) {
            prop_assert!(pair[0] > pair[1], "{:?}", grid);
        }
    }
}

#[test]
fn vp_linear_matches_closed_form_and_stays_accurate_near_zero() {
    let schedule = Schedule::VpLinear { beta_min: 0.1, beta_max: 20.0 };
    let t: f64 = 0.3;
    let abar = (-0.1 * t - 0.5 * 19.9 * t * t).exp();
    assert_close(schedule.alpha(t), abar.sqrt(), 1e-15, "alpha");
    assert_close(schedule.sigma(t), (1.0 - abar).sqrt(), 1e-14, "sigma");
    assert_close(schedule.drift(t), -0.5 * (0.1 + 19.9 * t), 1e-15, "f");

    // sigma^2 = 1 - abar ~ beta_min t for tiny t; naive 1 - exp(..) would
    // lose about half the digits here.
    let tiny = 1e-12;
    let sigma = schedule.sigma(tiny);
    assert!((sigma * sigma / (0.1 * tiny) - 1.0).abs() < 1e-9, "{sigma}");
}

#[test]
fn ddpm_linear_matches_a_direct_product() {
    let schedule = Schedule::ddpm_linear_default();
    let mut abar = 1.0;
    for i in 1..=1000 {
        let beta = 1e-4 + (i - 1) as f64 / 999.0 * (0.02 - 1e-4);
        abar *= 1.0 - beta;
        let t = i as f64 / 1000.0;
        let (alpha, sigma) = schedule.alpha_sigma(t);
        assert!((alpha * alpha / abar - 1.0).abs() < 1e-12, "step {i}");
        assert!((sigma * sigma / (1.0 - abar) - 1.0).abs() < 1e-10, "step {i}");
    }
    assert_eq!(schedule.alpha(0.0), 1.0);
    assert_eq!(schedule.sigma(0.0), 0.0);

    // The published endpoint: abar_1000 of the DDPM schedule is about 4e-5.
    let abar_end = schedule.alpha(1.0).powi(2);
    assert!((3.9e-5..4.1e-5).contains(&abar_end), "{abar_end}");
}

#[test]
fn ddpm_interpolates_log_alpha_bar_linearly() {
    let schedule =
        Schedule::DdpmLinear { beta_start: 0.01, beta_end: 0.2, steps: 7 };
    let log_abar = |t: f64| 2.0 * schedule.alpha(t).ln();
    let (a, b) = (log_abar(3.0 / 7.0), log_abar(4.0 / 7.0));
    let mid = log_abar(3.25 / 7.0);
    assert_close(mid, a + 0.25 * (b - a), 1e-14, "interpolated log abar");
}

#[test]
fn ddpm_cosine_telescopes_to_the_defining_function() {
    // Without clipping the product of f(i/T)/f((i-1)/T) telescopes, so
    // abar_i = f(i/T) / f(0): an independent check of the cumulative
    // product.
    let s = 0.008;
    let f = |u: f64| {
        ((u + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2)
    };
    let schedule = Schedule::ddpm_cosine_default();
    for i in [1, 10, 250, 500, 900, 990] {
        let t = i as f64 / 1000.0;
        let expected = f(t) / f(0.0);
        assert_close(
            schedule.alpha(t).powi(2),
            expected,
            1e-12,
            &format!("abar_{i}"),
        );
    }

    // The last step is clipped at beta = 0.999.
    let betas = schedule.discrete_betas().unwrap();
    assert_eq!(betas.len(), 1000);
    assert_close(betas[999], 0.999, 1e-15, "beta_T");
    assert!(betas[..990].iter().all(|&b| b < 0.999));
}

#[test]
fn ve_and_rectified_flow_scales() {
    let ve = Schedule::VeGeometric { sigma_min: 0.01, sigma_max: 50.0 };
    assert_eq!(ve.alpha(0.4), 1.0);
    assert_close(ve.sigma(0.0), 0.01, 1e-15, "sigma(0)");
    assert_close(ve.sigma(1.0), 50.0, 1e-13, "sigma(1)");
    assert_close(ve.sigma(0.5), (0.01f64 * 50.0).sqrt(), 1e-14, "midpoint");

    let rf = Schedule::RectifiedFlow {};
    assert_eq!(rf.alpha_sigma(0.25), (0.75, 0.25));
    assert_close(rf.diffusion_squared(0.25), 2.0 * 0.25 / 0.75, 1e-15, "g2");
    assert_close(rf.ve_sigma(0.25), 1.0 / 3.0, 1e-15, "ve_sigma");
}

#[test]
fn edm_grid_is_the_karras_grid() {
    let schedule = Schedule::edm_default();
    let n = 18;
    let grid =
        schedule.grid(n - 1, 0.002, 80.0, schedule.default_spacing()).unwrap();
    assert_eq!(grid.len(), n);
    assert_eq!(grid[0], 80.0);
    assert_eq!(grid[n - 1], 0.002);

    let (a, b) = (80f64.powf(1.0 / 7.0), 0.002f64.powf(1.0 / 7.0));
    for (i, &t) in grid.iter().enumerate() {
        let expected = (a + i as f64 / (n - 1) as f64 * (b - a)).powi(7);
        assert_close(t, expected, 1e-13, &format!("sigma_{i}"));
        assert_eq!(schedule.sigma(t), t);
    }
}

#[test]
fn log_snr_grid_is_uniform_in_log_snr() {
    let schedule = Schedule::vp_linear_default();
    let grid = schedule.grid(10, 1e-3, 1.0, Spacing::LogSnr).unwrap();
    let lambdas: Vec<f64> = grid.iter().map(|&t| schedule.log_snr(t)).collect();
    let step = lambdas[1] - lambdas[0];
    for pair in lambdas.windows(2) {
        assert_close(pair[1] - pair[0], step, 1e-9, "log-snr step");
    }
}

#[test]
fn grid_rejects_bad_arguments() {
    let schedule = Schedule::vp_linear_default();
    let message = |r: Result<Vec<f64>>| r.unwrap_err().to_string();
    assert_eq!(
        message(schedule.grid(0, 0.0, 1.0, Spacing::Uniform)),
        "grid steps must be at least 1, got 0"
    );
    assert_eq!(
        message(schedule.grid(5, 0.5, 0.5, Spacing::Uniform)),
        "grid t_max must be greater than t_min 0.5, got 0.5"
    );
    assert_eq!(
        message(schedule.grid(5, 0.0, 1.5, Spacing::Uniform)),
        "grid t_max must be at most 1, got 1.5"
    );
    assert!(
        message(schedule.grid(5, 0.0, 1.0, Spacing::LogSnr))
            .starts_with("log-snr grid needs finite log_snr")
    );
}

#[test]
fn time_for_ve_sigma_rejects_out_of_range() {
    let schedule = Schedule::VeGeometric { sigma_min: 0.01, sigma_max: 50.0 };
    let err = schedule.time_for_ve_sigma(0.001).unwrap_err();
    assert_eq!(err.to_string(), "ve_sigma must be in [0.01, 50], got 0.001");
    assert!(schedule.time_for_ve_sigma(f64::NAN).is_err());
}

#[test]
fn validate_names_field_and_value() {
    let cases = [
        (
            Schedule::VpLinear { beta_min: 0.1, beta_max: -1.0 },
            "schedule.beta_max must be positive, got -1",
        ),
        (
            Schedule::VpLinear { beta_min: 5.0, beta_max: 1.0 },
            "schedule.beta_max must be at least beta_min 5, got 1",
        ),
        (
            Schedule::VpLinear { beta_min: f64::NAN, beta_max: 1.0 },
            "schedule.beta_min must be positive, got NaN",
        ),
        (
            Schedule::DdpmLinear { beta_start: 1e-4, beta_end: 0.02, steps: 0 },
            "schedule.steps must be in 1..=1000000, got 0",
        ),
        (
            Schedule::DdpmLinear { beta_start: 1e-4, beta_end: 1.0, steps: 9 },
            "schedule.beta_end must be less than 1, got 1",
        ),
        (
            Schedule::DdpmCosine { s: -0.1, steps: 10 },
            "schedule.s must be non-negative, got -0.1",
        ),
        (
            Schedule::VeGeometric { sigma_min: 1.0, sigma_max: 1.0 },
            "schedule.sigma_max must be greater than sigma_min 1, got 1",
        ),
        (
            Schedule::Edm { sigma_min: 0.002, sigma_max: 80.0, rho: 0.0 },
            "schedule.rho must be positive, got 0",
        ),
        (
            Schedule::Edm {
                sigma_min: 0.002,
                sigma_max: f64::INFINITY,
                rho: 7.0,
            },
            "schedule.sigma_max must be positive, got inf",
        ),
    ];
    for (schedule, expected) in cases {
        assert_eq!(schedule.validate().unwrap_err().to_string(), expected);
    }
}

#[test]
fn grids_reach_the_ends_of_the_time_range() {
    // The ends' noise levels, inverted, can land an ulp outside the range
    // (the DDPM cosine schedule at t = 1 did).
    for schedule in all_families() {
        let (_, hi) = schedule.time_range();
        let t_min = schedule.default_t_min();
        if !schedule.log_snr(hi).is_finite() {
            continue;
        }
        for spacing in [Spacing::LogSnr, Spacing::Karras { rho: 7.0 }] {
            for steps in [1, 2, 50, 1000] {
                let grid = schedule.grid(steps, t_min, hi, spacing);
                let grid = grid.unwrap_or_else(|e| {
                    panic!("{schedule:?} {spacing:?} {steps}: {e}")
                });
                assert_eq!((grid[0], grid[steps]), (hi, t_min));
            }
        }
    }
}
