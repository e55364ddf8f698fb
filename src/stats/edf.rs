//! Anderson-Darling and Cramer-von Mises tests.
//!
//! # Anderson-Darling, one sample, fully specified F ("case 0")
//!
//! ```text
//! A^2 = -n - (1/n) sum_{i=1}^n (2i - 1) [ln u_(i) + ln(1 - u_(n+1-i))]
//! ```
//!
//! with u = F(x) sorted (Anderson & Darling 1954). The p-value uses
//! Marsaglia & Marsaglia (2004, JSS 9(2)), "Evaluating the
//! Anderson-Darling distribution": their two-piece approximation
//! `ADinf(z)` of the limiting CDF,
//!
//! ```text
//! z < 2:  exp(-1.2337141/z)/sqrt(z) (2.00012 + 0.247105 z - 0.0649821 z^2
//!         + 0.0347962 z^3 - 0.0116720 z^4 + 0.00168691 z^5)
//! z >= 2: exp(-exp(1.0776 - 2.30695 z + 0.43424 z^2 - 0.082433 z^3
//!         + 0.008056 z^4 - 0.0003146 z^5))
//! ```
//!
//! plus their finite-n correction `errfix(n, x)` (three pieces in x =
//! ADinf(z), with the polynomial coefficients of the paper). The authors
//! quote about six correct digits of the CDF for z < 2; in the far upper
//! tail (p < 1e-4) the z >= 2 piece is an extrapolation, so the survival
//! function there is computed as -expm1(-exp(g(z))) (no cancellation) and
//! should be read as an order of magnitude. statrs's `anderson_darling`
//! returns the composite-normality p-value and is not used.
//!
//! # k-sample Anderson-Darling
//!
//! Scholz & Stephens (1987, JASA 82:918), the midrank statistic A2akN
//! (their eq. 7, valid with ties), standardised as
//! T = (A2akN - (k - 1))/sigma_N with the variance of their eq. 4, and the
//! p-value interpolated as in scipy's `anderson_ksamp`: ln(alpha) fitted by
//! a least-squares quadratic to the critical values
//! b0 + b1/sqrt(m) + b2/m (m = k - 1) of their Table 2 at
//! alpha = 0.25 ... 0.001, and clipped to [0.001, 0.25] outside that range
//! (the method string then says `capped`/`floored`).
//!
//! # Cramer-von Mises, one sample
//!
//! ```text
//! T = 1/(12n) + sum_i ((2i - 1)/(2n) - u_(i))^2
//! ```
//!
//! The p-value follows Csorgo & Faraway (1996, JRSS B 58:221), eq. 1.8:
//! P(T <= x) ~ V(x)(1 + 1/(12n)) + psi1(x)/n on 1/(12n) < x < n/3, with
//! the limiting CDF (their eq. 1.2-1.3)
//!
//! ```text
//! V(x) = sum_{k>=0} Gamma(k+1/2)/(Gamma(k+1) pi^{3/2} sqrt x) sqrt(4k+1)
//!        exp(-(4k+1)^2/(16x)) K_{1/4}((4k+1)^2/(16x))
//! ```
//!
//! and psi1 of their eq. 1.10 (a series in K_{1/4}, K_{3/4}, K_{5/4}), as
//! also evaluated by scipy's `cramervonmises`. The modified Bessel
//! functions come from K_nu(z) = int_0^inf exp(-z cosh t) cosh(nu t) dt by
//! the trapezoidal rule, which converges geometrically for this analytic,
//! doubly-exponentially decaying integrand.

use nalgebra::{Matrix3, Vector3};

use crate::error::{Result, ensure};
use crate::stats::{TestOutcome, check_sample, clamp_prob};

fn sorted_uniforms(
    sample: &[f64],
    cdf: &dyn Fn(f64) -> f64,
) -> Result<Vec<f64>> {
    check_sample("sample", sample)?;
    let mut u = Vec::with_capacity(sample.len());
    for &x in sample {
        let v = cdf(x);
        ensure!(
            (0.0..=1.0).contains(&v),
            "cdf must lie in [0, 1], got {} at sample value {x}",
            crate::stats::show(v)
        );
        u.push(v);
    }
    u.sort_by(f64::total_cmp);
    Ok(u)
}

/// The Anderson-Darling statistic A^2 of sorted uniforms.
fn anderson_darling_statistic(u: &[f64]) -> f64 {
    let n = u.len();
    let nf = n as f64;
    let mut sum = 0.0;
    for i in 0..n {
        let weight = (2 * i + 1) as f64;
        sum += weight * (u[i].ln() + (-u[n - 1 - i]).ln_1p());
    }
    -nf - sum / nf
}

/// Marsaglia & Marsaglia's limiting CDF piece for z < 2.
fn ad_inf_low(z: f64) -> f64 {
    let poly = 2.00012
        + z * (0.247105
            + z * (-0.0649821
                + z * (0.0347962 + z * (-0.011672 + z * 0.00168691))));
    (-1.2337141 / z).exp() / z.sqrt() * poly
}

/// The exponent g(z) of the z >= 2 piece, ADinf = exp(-exp(g)).
fn ad_inf_high_exponent(z: f64) -> f64 {
    1.0776
        + z * (-2.30695
            + z * (0.43424 + z * (-0.082433 + z * (0.008056 - z * 0.0003146))))
}

/// Marsaglia & Marsaglia's finite-n correction of x = ADinf(z).
fn ad_errfix(n: f64, x: f64) -> f64 {
    let cutoff = 0.01265 + 0.1757 / n;
    if x < cutoff {
        let t = x / cutoff;
        let g1 = t.sqrt() * (1.0 - t) * (49.0 * t - 102.0);
        g1 * (0.0037 / (n * n * n) + 0.00078 / (n * n) + 0.00006 / n)
    } else if x < 0.8 {
        let t = (x - cutoff) / (0.8 - cutoff);
        let g2 = -0.00022633
            + t * (6.54034
                + t * (-14.6538 + t * (14.458 + t * (-8.259 + t * 1.91864))));
        g2 * (0.04213 / n + 0.01365 / (n * n))
    } else {
        let g3 = -130.2137
            + x * (745.2337
                + x * (-1705.091
                    + x * (1950.646 + x * (-1116.36 + x * 255.7844))));
        g3 / n
    }
}

/// P(A^2_n >= z) by Marsaglia & Marsaglia (2004).
fn anderson_darling_sf(n: usize, z: f64) -> f64 {
    if z.is_nan() || z <= 0.0 {
        return 1.0;
    }
    if z == f64::INFINITY {
        return 0.0;
    }
    let nf = n as f64;
    if z < 2.0 {
        let x = ad_inf_low(z);
        return clamp_prob(1.0 - x - ad_errfix(nf, x));
    }
    let g = ad_inf_high_exponent(z);
    let x = (-g.exp()).exp();
    clamp_prob(-(-g.exp()).exp_m1() - ad_errfix(nf, x))
}

/// One-sample Anderson-Darling test of `sample` against the fully
/// specified continuous CDF `cdf` (case 0), p-value by Marsaglia &
/// Marsaglia (2004); see the module docs for its accuracy.
///
/// A PIT of exactly 0 or 1 makes A^2 infinite and the p-value 0.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if the sample is empty or
/// non-finite, or the CDF returns a value outside [0, 1].
pub fn anderson_darling(
    sample: &[f64],
    cdf: &dyn Fn(f64) -> f64,
) -> Result<TestOutcome> {
    let u = sorted_uniforms(sample, cdf)?;
    let statistic = anderson_darling_statistic(&u);
    let statistic = if statistic.is_nan() { f64::INFINITY } else { statistic };
    Ok(TestOutcome {
        test: "anderson_darling".into(),
        statistic,
        p_value: anderson_darling_sf(u.len(), statistic),
        method: "marsaglia-2004".into(),
        n: u.len(),
        ess: None,
        effect: None,
    })
}

/// Scholz & Stephens (1987) Table 2 coefficients and levels.
const KSAMPLE_B0: [f64; 7] = [0.675, 1.281, 1.645, 1.96, 2.326, 2.573, 3.085];
const KSAMPLE_B1: [f64; 7] = [-0.245, 0.25, 0.678, 1.149, 1.822, 2.364, 3.615];
const KSAMPLE_B2: [f64; 7] =
    [-0.105, -0.305, -0.362, -0.391, -0.396, -0.345, -0.154];
const KSAMPLE_LEVELS: [f64; 7] = [0.25, 0.1, 0.05, 0.025, 0.01, 0.005, 0.001];

/// k-sample Anderson-Darling test (Scholz & Stephens 1987, midrank
/// version), returning the standardised statistic T and the
/// interpolated p-value (see the module docs).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if there are fewer than two
/// samples, a sample is empty or non-finite, fewer than 4 observations
/// in total, or all observations are equal.
pub fn anderson_darling_ksample(samples: &[&[f64]]) -> Result<TestOutcome> {
    let k = samples.len();
    ensure!(k >= 2, "need at least 2 samples, got {k}");
    for (i, s) in samples.iter().enumerate() {
        check_sample(&format!("samples[{i}]"), s)?;
    }
    let mut pooled: Vec<f64> =
        samples.iter().flat_map(|s| s.iter().copied()).collect();
    pooled.sort_by(f64::total_cmp);
    let big_n = pooled.len();
    ensure!(big_n >= 4, "need at least 4 observations in total, got {big_n}");
    let mut distinct = pooled.clone();
    distinct.dedup();
    ensure!(distinct.len() > 1, "all observations are equal");
    let nf = big_n as f64;

    // Counts strictly below / at or below each distinct value.
    let below = |s: &[f64], z: f64| s.partition_point(|&v| v < z) as f64;
    let at_or_below = |s: &[f64], z: f64| s.partition_point(|&v| v <= z) as f64;
    let sorted: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| {
            let mut v = s.to_vec();
            v.sort_by(f64::total_cmp);
            v
        })
        .collect();
    let mut a2 = 0.0;
    for s in &sorted {
        let ni = s.len() as f64;
        let mut inner = 0.0;
        for &z in &distinct {
            let lj = at_or_below(&pooled, z) - below(&pooled, z);
            let bj = below(&pooled, z) + lj / 2.0;
            let fij = at_or_below(s, z) - below(s, z);
            let mij = at_or_below(s, z) - fij / 2.0;
            let num = nf * mij - bj * ni;
            inner += lj / nf * num * num / (bj * (nf - bj) - nf * lj / 4.0);
        }
        a2 += inner / ni;
    }
    a2 *= (nf - 1.0) / nf;

    // Standardisation (Scholz & Stephens eq. 4).
    let kf = k as f64;
    let h_sum: f64 = sorted.iter().map(|s| 1.0 / s.len() as f64).sum();
    let h: f64 = (1..big_n).map(|i| 1.0 / i as f64).sum();
    let mut g = 0.0;
    let mut tail = 0.0; // sum_{j=i+1}^{N-1} 1/j, built from the top
    for i in (1..=big_n - 2).rev() {
        tail += 1.0 / (i + 1) as f64;
        g += tail / (big_n - i) as f64;
    }
    let a = (4.0 * g - 6.0) * (kf - 1.0) + (10.0 - 6.0 * g) * h_sum;
    let b = (2.0 * g - 4.0) * kf * kf
        + 8.0 * h * kf
        + (2.0 * g - 14.0 * h - 4.0) * h_sum
        - 8.0 * h
        + 4.0 * g
        - 6.0;
    let c = (6.0 * h + 2.0 * g - 2.0) * kf * kf
        + (4.0 * h - 4.0 * g + 6.0) * kf
        + (2.0 * h - 6.0) * h_sum
        + 4.0 * h;
    let d = (2.0 * h + 6.0) * kf * kf - 4.0 * h * kf;
    let sigma2 = (a * nf.powi(3) + b * nf * nf + c * nf + d)
        / ((nf - 1.0) * (nf - 2.0) * (nf - 3.0));
    let m = kf - 1.0;
    let statistic = (a2 - m) / sigma2.sqrt();

    // Interpolate ln(level) against the critical values.
    let critical: Vec<f64> = (0..7)
        .map(|i| KSAMPLE_B0[i] + KSAMPLE_B1[i] / m.sqrt() + KSAMPLE_B2[i] / m)
        .collect();
    let lowest = critical.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = critical.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (p_value, method) = if statistic < lowest {
        (0.25, "scholz-stephens-interpolation(capped at 0.25)")
    } else if statistic > highest {
        (0.001, "scholz-stephens-interpolation(floored at 0.001)")
    } else {
        let coef = quadratic_fit(&critical, &KSAMPLE_LEVELS.map(f64::ln));
        let ln_p =
            coef[0] * statistic * statistic + coef[1] * statistic + coef[2];
        (ln_p.exp(), "scholz-stephens-interpolation")
    };
    Ok(TestOutcome {
        test: "anderson_darling_ksample".into(),
        statistic,
        p_value: clamp_prob(p_value),
        method: method.into(),
        n: big_n,
        ess: None,
        effect: None,
    })
}

/// Least-squares y ~ c0 x^2 + c1 x + c2, by the normal equations.
fn quadratic_fit(x: &[f64], y: &[f64]) -> [f64; 3] {
    let mut ata = Matrix3::<f64>::zeros();
    let mut aty = Vector3::<f64>::zeros();
    for (&xi, &yi) in x.iter().zip(y) {
        let row = Vector3::new(xi * xi, xi, 1.0);
        ata += row * row.transpose();
        aty += row * yi;
    }
    let sol = ata.lu().solve(&aty).unwrap_or_else(Vector3::zeros);
    [sol[0], sol[1], sol[2]]
}

/// e^z K_nu(z) = int_0^inf exp(-z (cosh t - 1)) cosh(nu t) dt, by the
/// trapezoidal rule.
fn scaled_bessel_k(nu: f64, z: f64) -> f64 {
    let step = 0.02;
    let mut sum = 0.5; // t = 0 term, halved
    let mut t: f64 = step;
    loop {
        let term = (-z * (t.cosh() - 1.0)).exp() * (nu * t).cosh();
        sum += term;
        if term < 1e-18 * sum {
            break;
        }
        t += step;
    }
    sum * step
}

/// Csorgo & Faraway's limiting CDF V(x) of the CvM statistic.
fn cvm_limit_cdf(x: f64) -> f64 {
    use statrs::function::gamma::ln_gamma;
    use std::f64::consts::PI;
    let mut total = 0.0;
    for k in 0..200 {
        let kf = k as f64;
        let y = 4.0 * kf + 1.0;
        let q = y * y / (16.0 * x);
        let u = (ln_gamma(kf + 0.5) - ln_gamma(kf + 1.0)).exp()
            / (PI.powf(1.5) * x.sqrt());
        // exp(-q) K(q) = exp(-2q) (e^q K(q)).
        let term = u * y.sqrt() * (-2.0 * q).exp() * scaled_bessel_k(0.25, q);
        total += term;
        if term.abs() < 1e-16 {
            break;
        }
    }
    total
}

/// Csorgo & Faraway's psi1(x) without its V(x)/12 term.
fn cvm_psi1_without_v(x: f64) -> f64 {
    use statrs::function::gamma::gamma;
    use std::f64::consts::PI;
    let sqrt_pi = PI.sqrt();
    // exp(-z) K_nu(z) at z = y^2/4, times exp(-z) again.
    let ed2 = |y: f64| {
        let z = y * y / 4.0;
        let b = scaled_bessel_k(0.25, z) + scaled_bessel_k(0.75, z);
        (-2.0 * z).exp() * (y / 2.0).powf(1.5) * b / sqrt_pi
    };
    let ed3 = |y: f64| {
        let z = y * y / 4.0;
        let b = 2.0 * scaled_bessel_k(0.25, z) + 3.0 * scaled_bessel_k(0.75, z)
            - scaled_bessel_k(1.25, z);
        (-2.0 * z).exp() * (y / 2.0).powf(2.5) * b / sqrt_pi
    };
    let sx = 2.0 * x.sqrt();
    let (y1, y2) = (x.powf(0.75), x.powf(1.25));
    let mut total = 0.0;
    for k in 0..200 {
        let kf = k as f64;
        let m = 2.0 * kf + 1.0;
        let g_half = gamma(kf + 0.5);
        let g_three_half = gamma(kf + 1.5);
        let a_k = m * g_half * ed2((4.0 * kf + 3.0) / sx) / (9.0 * y1)
            + g_half * ed3((4.0 * kf + 1.0) / sx) / (72.0 * y2)
            + 2.0 * (m + 2.0) * g_three_half * ed3((4.0 * kf + 5.0) / sx)
                / (12.0 * y2)
            + 7.0 * m * g_half * ed2((4.0 * kf + 1.0) / sx) / (144.0 * y1)
            + 7.0 * m * g_half * ed2((4.0 * kf + 5.0) / sx) / (144.0 * y1);
        let term = -a_k / (PI * gamma(kf + 1.0));
        total += term;
        if term.abs() < 1e-16 || !term.is_finite() {
            break;
        }
    }
    total
}

/// P(T_n <= x) for the one-sample CvM statistic (Csorgo & Faraway).
fn cramer_von_mises_cdf(n: usize, x: f64) -> f64 {
    let nf = n as f64;
    if x <= 1.0 / (12.0 * nf) {
        return 0.0;
    }
    if x >= nf / 3.0 {
        return 1.0;
    }
    cvm_limit_cdf(x) * (1.0 + 1.0 / (12.0 * nf)) + cvm_psi1_without_v(x) / nf
}

/// One-sample Cramer-von Mises test of `sample` against the continuous
/// CDF `cdf`, p-value by Csorgo & Faraway (1996) as in scipy's
/// `cramervonmises` (module docs). The approximation is not accurate for
/// very large statistics (p below about 1e-6).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if the sample is empty or
/// non-finite, or the CDF returns a value outside [0, 1].
pub fn cramer_von_mises(
    sample: &[f64],
    cdf: &dyn Fn(f64) -> f64,
) -> Result<TestOutcome> {
    let u = sorted_uniforms(sample, cdf)?;
    let n = u.len();
    let nf = n as f64;
    let statistic = 1.0 / (12.0 * nf)
        + u.iter()
            .enumerate()
            .map(|(i, &ui)| {
                let gap = (2 * i + 1) as f64 / (2.0 * nf) - ui;
                gap * gap
            })
            .sum::<f64>();
    Ok(TestOutcome {
        test: "cramer_von_mises".into(),
        statistic,
        p_value: clamp_prob(1.0 - cramer_von_mises_cdf(n, statistic)),
        method: "csorgo-faraway-1996".into(),
        n,
        ess: None,
        effect: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_k_half_has_closed_form() {
        // K_{1/2}(z) = sqrt(pi/(2z)) e^{-z}.
        for z in [0.05, 0.5, 2.0, 20.0] {
            let closed = (std::f64::consts::PI / (2.0 * z)).sqrt();
            let got = scaled_bessel_k(0.5, z);
            assert!(
                (got - closed).abs() < 1e-13 * closed,
                "z {z}: {got} {closed}"
            );
        }
    }

    #[test]
    fn ad_pieces_meet_at_two() {
        let low = ad_inf_low(2.0);
        let high = (-ad_inf_high_exponent(2.0).exp()).exp();
        assert!((low - high).abs() < 1e-5, "{low} {high}");
    }
}
