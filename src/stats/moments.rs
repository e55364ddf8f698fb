//! Moment checks against the truth: mean, variance along a direction,
//! covariance.
//!
//! # Mean (known covariance)
//!
//! ```text
//! T^2 = n (xbar - m)' Sigma^-1 (xbar - m)  ~  chi-square(d)
//! ```
//!
//! exactly for a Gaussian truth and by the CLT for a mixture (statistics
//! reference, section 5.1). With normalised importance weights the
//! covariance of the weighted mean is estimated by the self-normalised
//! importance-sampling sandwich sum w_i^2 (x_i - m)(x_i - m)' (Owen
//! 2013, section 9.2); Kish's ESS is reported alongside.
//!
//! # Variance along a direction: the mixture null
//!
//! For iid draws with variance sigma^2 and fourth central moment mu4 the
//! unbiased sample variance s^2 has (Cramer 1946, eq. 27.4.2)
//!
//! ```text
//! Var(s^2) = mu4/n - sigma^4 (n - 3)/(n (n - 1))
//! ```
//!
//! and the test uses the log scale (less skew), by the delta method
//!
//! ```text
//! z = ln(s^2/sigma^2) / se,   se = sqrt(Var(s^2)) / sigma^2,
//! p = 2 S(|z|),   sd ratio CI = exp((ln(s^2/sigma^2) -+ z_{a/2} se)/2)
//! ```
//!
//! (statistics reference, sections 5.2 and 5.3). A projected Gaussian
//! mixture is not Gaussian, so the textbook chi-square law of
//! (n - 1) s^2/sigma^2, [`variance_test_gaussian`], is wrong for it
//! through the kurtosis: for a bimodal mixture (mu4 < 3 sigma^4) its
//! interval is too wide, for a heavy-tailed one (mu4 > 3 sigma^4) too
//! narrow. [`mixture_central_moments`] gives sigma^2 and mu4 in closed
//! form:
//!
//! ```text
//! mean = sum w_k mu_k,   d_k = mu_k - mean
//! var  = sum w_k (s_k^2 + d_k^2)
//! mu4  = sum w_k (d_k^4 + 6 d_k^2 s_k^2 + 3 s_k^4)
//! ```
//!
//! # Covariance (Gaussian truth, known mean)
//!
//! The likelihood-ratio statistic (Anderson 2003, section 10.8)
//!
//! ```text
//! n [tr(Sigma0^-1 S) - ln det(Sigma0^-1 S) - d]  ~  chi-square(d(d+1)/2)
//! ```
//!
//! with S = (1/n) sum (x_i - mu)(x_i - mu)'. It assumes a Gaussian truth
//! and n >> d^2; use it for d up to about 10.

use nalgebra::{DMatrix, DVector};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::error::{Error, Result, ensure};
use crate::stats::normal::{normal_quantile, normal_sf};
use crate::stats::weighted::{
    checked_normalized_weights, weighted_mean_variance,
};
use crate::stats::{
    Effect, TestOutcome, check_level, check_sample, clamp_prob,
};

/// Mean, variance and fourth central moment of a 1-D Gaussian mixture
/// with the given weights (normalised here), means and variances.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if the lengths differ or are
/// zero, a weight is negative or non-finite, all weights are zero, a mean
/// is non-finite, or a variance is negative or non-finite.
pub fn mixture_central_moments(
    weights: &[f64],
    means: &[f64],
    variances: &[f64],
) -> Result<(f64, f64, f64)> {
    ensure!(!weights.is_empty(), "mixture has no components");
    ensure!(
        means.len() == weights.len() && variances.len() == weights.len(),
        "mixture has {} weights, {} means and {} variances",
        weights.len(),
        means.len(),
        variances.len()
    );
    check_sample("means", means)?;
    for (i, &v) in variances.iter().enumerate() {
        ensure!(
            v.is_finite() && v >= 0.0,
            "variances[{i}] must be finite and non-negative, got {}",
            crate::stats::show(v)
        );
    }
    let w = checked_normalized_weights(weights, weights.len())?;
    let mean: f64 = w.iter().zip(means).map(|(w, m)| w * m).sum();
    let (mut var, mut mu4) = (0.0, 0.0);
    for ((w, m), s2) in w.iter().zip(means).zip(variances) {
        let d = m - mean;
        var += w * (s2 + d * d);
        mu4 += w * (d.powi(4) + 6.0 * d * d * s2 + 3.0 * s2 * s2);
    }
    Ok((mean, var, mu4))
}

/// Sample size used by the null: n, or Kish's ESS for weights.
fn mean_and_variance(
    sample: &[f64],
    weights: Option<&[f64]>,
) -> Result<(f64, f64, f64, Option<f64>)> {
    check_sample("sample", sample)?;
    let n = sample.len();
    let w = match weights {
        Some(w) => checked_normalized_weights(w, n)?,
        None => vec![1.0 / n as f64; n],
    };
    let ess = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
    ensure!(
        crate::stats::above(ess, 1.0 + 1e-9),
        "need an effective sample size above 1, got {}",
        crate::stats::show(ess)
    );
    let (mean, var) = weighted_mean_variance(sample, &w);
    let size = if weights.is_some() { ess } else { n as f64 };
    Ok((mean, var, size, weights.map(|_| ess)))
}

fn check_truth_variance(true_var: f64) -> Result<()> {
    ensure!(
        true_var.is_finite() && true_var > 0.0,
        "true variance must be positive, got {}",
        crate::stats::show(true_var)
    );
    Ok(())
}

/// Variance along a direction against the truth's variance, using the
/// null law of s^2 under the true distribution (see the module docs).
///
/// `projected` are the particles projected on the direction; `true_var`
/// and `true_mu4` are the truth's variance and fourth central moment
/// along it (for a Gaussian mixture from [`mixture_central_moments`]).
/// The effect is the sd ratio s/sigma ("0.8" means 20% too narrow) with a
/// `level` confidence interval. With importance `weights`, s^2 is the
/// weighted (reliability) variance and its variance is the
/// importance-sampling sandwich (asymptotic; `true_mu4` is then unused).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if the sample is empty or
/// non-finite, the effective size is at most 1, `true_var` is not
/// positive, `true_mu4 < true_var^2`, `level` is outside (0, 1), or the
/// weights are malformed.
pub fn variance_test(
    projected: &[f64],
    weights: Option<&[f64]>,
    true_var: f64,
    true_mu4: f64,
    level: f64,
) -> Result<TestOutcome> {
    check_truth_variance(true_var)?;
    ensure!(
        true_mu4.is_finite() && true_mu4 >= true_var * true_var * (1.0 - 1e-12),
        "true fourth central moment must be at least variance^2 = {}, \
         got {true_mu4}",
        true_var * true_var
    );
    check_level(level)?;
    let (mean, var, size, ess) = mean_and_variance(projected, weights)?;
    ensure!(crate::stats::above(var, 0.0), "sample variance is zero");

    // Var(s^2) under the truth, then the log-scale z. Weighted particles
    // use the self-normalised importance-sampling sandwich
    // sum w_i^2 ((x_i - xbar_w)^2 - sigma^2)^2 instead (Owen 2013,
    // "Monte Carlo theory, methods and examples", section 9.2): Kish's
    // ESS ignores how the weights correlate with (x - mu)^2.
    let sigma4 = true_var * true_var;
    let var_s2 = match weights {
        None => true_mu4 / size - sigma4 * (size - 3.0) / (size * (size - 1.0)),
        Some(raw) => {
            let w = checked_normalized_weights(raw, projected.len())?;
            projected
                .iter()
                .zip(&w)
                .map(|(x, w)| {
                    let r = (x - mean) * (x - mean) - true_var;
                    w * w * r * r
                })
                .sum()
        }
    };
    if var_s2.is_nan() || var_s2 <= 0.0 {
        return Err(Error::numerical(format!(
            "variance of the sample variance is not positive ({var_s2})"
        )));
    }
    let se = var_s2.sqrt() / true_var;
    let log_ratio = (var / true_var).ln();
    let z = log_ratio / se;
    let half = normal_quantile(0.5 + level / 2.0) * se;
    let method = if ess.is_some() {
        "weighted-snis-sandwich(log-delta)"
    } else {
        "asymptotic-log-delta-mixture-kurtosis"
    };
    Ok(TestOutcome {
        test: "variance_mixture".into(),
        statistic: z,
        p_value: clamp_prob(2.0 * normal_sf(z.abs())),
        method: method.into(),
        n: projected.len(),
        ess,
        effect: Some(Effect {
            name: "sd_ratio".into(),
            estimate: (0.5 * log_ratio).exp(),
            ci_low: (0.5 * (log_ratio - half)).exp(),
            ci_high: (0.5 * (log_ratio + half)).exp(),
            level,
        }),
    })
}

/// The textbook chi-square variance test, valid only when the projection
/// is Gaussian: q = (n - 1) s^2/sigma^2 ~ chi-square(n - 1), two-sided
/// p = 2 min(cdf, sf), and the exact interval for the sd ratio
/// sqrt((n - 1) r / chi2_{n-1}(1 - a/2)) .. sqrt((n - 1) r /
/// chi2_{n-1}(a/2)).
///
/// Kept to show (and test) why the mixture null of [`variance_test`] is
/// needed: on a non-Gaussian projection this test is miscalibrated.
///
/// # Errors
///
/// As [`variance_test`], without the fourth-moment check.
pub fn variance_test_gaussian(
    projected: &[f64],
    weights: Option<&[f64]>,
    true_var: f64,
    level: f64,
) -> Result<TestOutcome> {
    check_truth_variance(true_var)?;
    check_level(level)?;
    let (_, var, size, ess) = mean_and_variance(projected, weights)?;
    let df = size - 1.0;
    let chi =
        ChiSquared::new(df).map_err(|e| Error::numerical(e.to_string()))?;
    let q = df * var / true_var;
    let p_value = 2.0 * chi.cdf(q).min(chi.sf(q));
    let ratio = var / true_var;
    let alpha = 1.0 - level;
    Ok(TestOutcome {
        test: "variance_gaussian".into(),
        statistic: q,
        p_value: clamp_prob(p_value),
        method: format!("exact-chi-square(df={df})"),
        n: projected.len(),
        ess,
        effect: Some(Effect {
            name: "sd_ratio".into(),
            estimate: ratio.sqrt(),
            ci_low: (df * ratio / chi.inverse_cdf(1.0 - alpha / 2.0)).sqrt(),
            ci_high: (df * ratio / chi.inverse_cdf(alpha / 2.0)).sqrt(),
            level,
        }),
    })
}

/// Checks a particle matrix (rows are particles) and its weights.
fn particle_weights(
    particles: &DMatrix<f64>,
    weights: Option<&[f64]>,
) -> Result<(Vec<f64>, f64, Option<f64>)> {
    let n = particles.nrows();
    ensure!(n > 0 && particles.ncols() > 0, "particles is empty");
    if let Some(v) = particles.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "particles must be finite, got {}",
            crate::stats::show(*v)
        )));
    }
    let w = match weights {
        Some(w) => checked_normalized_weights(w, n)?,
        None => vec![1.0 / n as f64; n],
    };
    let ess = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
    let size = if weights.is_some() { ess } else { n as f64 };
    Ok((w, size, weights.map(|_| ess)))
}

fn check_truth(
    mean: &DVector<f64>,
    covariance: &DMatrix<f64>,
    d: usize,
) -> Result<()> {
    ensure!(
        mean.len() == d,
        "true mean has dimension {}, particles have {d}",
        mean.len()
    );
    ensure!(
        covariance.nrows() == d && covariance.ncols() == d,
        "true covariance is {}x{}, particles have dimension {d}",
        covariance.nrows(),
        covariance.ncols()
    );
    Ok(())
}

/// Mean of the particles (rows of `particles`) against the truth's mean
/// and covariance: T^2 = n (xbar - m)' Sigma^-1 (xbar - m) ~
/// chi-square(d). For weighted particles the covariance of the weighted
/// mean is the importance-sampling sandwich sum w_i^2 (x_i - m)(x_i -
/// m)' (asymptotic).
///
/// The statistic is T^2; no effect is reported (the Mahalanobis shift
/// is sqrt(T^2/n)).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] for empty or non-finite
/// particles, mismatched dimensions or malformed weights, and
/// [`crate::ErrorKind::Numerical`] if the covariance is not positive
/// definite.
pub fn mean_test(
    particles: &DMatrix<f64>,
    weights: Option<&[f64]>,
    mean: &DVector<f64>,
    covariance: &DMatrix<f64>,
) -> Result<TestOutcome> {
    let d = particles.ncols();
    check_truth(mean, covariance, d)?;
    let (w, size, ess) = particle_weights(particles, weights)?;
    let xbar = particles.transpose() * DVector::from_vec(w.clone());
    let diff = &xbar - mean;

    // Unweighted: Var(xbar) = Sigma/n. Weighted: the self-normalised
    // importance-sampling sandwich sum w_i^2 (x_i - m)(x_i - m)'.
    let spread = match weights {
        None => covariance / size,
        Some(_) => {
            let mut centered = particles.clone();
            for (mut row, wi) in centered.row_iter_mut().zip(&w) {
                row -= mean.transpose();
                row *= *wi;
            }
            centered.transpose() * centered
        }
    };
    let chol = spread.cholesky().ok_or_else(|| {
        Error::numerical("covariance of the mean is not positive definite")
    })?;
    let statistic = diff.dot(&chol.solve(&diff));
    let chi = ChiSquared::new(d as f64)
        .map_err(|e| Error::numerical(e.to_string()))?;
    Ok(TestOutcome {
        test: "mean_mahalanobis".into(),
        statistic,
        p_value: clamp_prob(chi.sf(statistic)),
        method: format!("chi-square(df={d})"),
        n: particles.nrows(),
        ess,
        effect: None,
    })
}

/// Covariance of the particles against a known Gaussian truth (known
/// mean): the likelihood-ratio statistic of the module docs.
///
/// The effect is the trace ratio tr S / tr Sigma0 with a `level`
/// interval from the Gaussian delta method on the log scale,
/// Var(tr S) = 2 tr(Sigma0^2)/n.
///
/// # Errors
///
/// As [`mean_test`], and [`crate::ErrorKind::InvalidInput`] when the
/// effective sample size does not exceed the dimension (S singular).
pub fn covariance_test(
    particles: &DMatrix<f64>,
    weights: Option<&[f64]>,
    mean: &DVector<f64>,
    covariance: &DMatrix<f64>,
    level: f64,
) -> Result<TestOutcome> {
    let d = particles.ncols();
    check_truth(mean, covariance, d)?;
    check_level(level)?;
    let (w, size, ess) = particle_weights(particles, weights)?;
    ensure!(
        crate::stats::above(size, d as f64),
        "need more (effective) particles than dimensions ({d}), got {}",
        crate::stats::show(size)
    );

    // S = sum w_i (x_i - mu)(x_i - mu)'.
    let mut centered = particles.clone();
    for mut row in centered.row_iter_mut() {
        row -= mean.transpose();
    }
    let mut weighted = centered.clone();
    for (mut row, wi) in weighted.row_iter_mut().zip(&w) {
        row *= *wi;
    }
    let s = centered.transpose() * weighted;

    let chol = covariance.clone().cholesky().ok_or_else(|| {
        Error::numerical("true covariance is not positive definite")
    })?;
    let m = chol.solve(&s);
    let trace = m.trace();
    let ln_det_s = s
        .clone()
        .cholesky()
        .ok_or_else(|| Error::numerical("sample covariance is singular"))?
        .l()
        .diagonal()
        .iter()
        .map(|x| 2.0 * x.ln())
        .sum::<f64>();
    let ln_det_sigma: f64 =
        chol.l().diagonal().iter().map(|x| 2.0 * x.ln()).sum();
    let statistic = size * (trace - (ln_det_s - ln_det_sigma) - d as f64);
    let df = (d * (d + 1) / 2) as f64;
    let chi =
        ChiSquared::new(df).map_err(|e| Error::numerical(e.to_string()))?;
    let trace_ratio = s.trace() / covariance.trace();
    let se = (2.0 * (covariance * covariance).trace() / size).sqrt()
        / covariance.trace();
    let half = normal_quantile(0.5 + level / 2.0) * se;
    Ok(TestOutcome {
        test: "covariance_lrt".into(),
        statistic,
        p_value: clamp_prob(chi.sf(statistic.max(0.0))),
        method: format!("asymptotic-gaussian-lrt(df={df})"),
        n: particles.nrows(),
        ess,
        effect: Some(Effect {
            name: "trace_ratio".into(),
            estimate: trace_ratio,
            ci_low: trace_ratio * (-half).exp(),
            ci_high: trace_ratio * half.exp(),
            level,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_mixture_of_one_component_has_gaussian_kurtosis() {
        let (m, v, mu4) =
            mixture_central_moments(&[1.0], &[2.0], &[3.0]).unwrap();
        assert_eq!((m, v, mu4), (2.0, 3.0, 27.0));
    }

    #[test]
    fn bad_truth_is_rejected() {
        let err =
            variance_test(&[1.0, 2.0, 3.0], None, -1.0, 1.0, 0.95).unwrap_err();
        assert_eq!(err.to_string(), "true variance must be positive, got -1");
        let err =
            mixture_central_moments(&[0.0, 0.0], &[0.0, 1.0], &[1.0, 1.0])
                .unwrap_err();
        assert_eq!(err.to_string(), "weights are all zero");
    }
}
