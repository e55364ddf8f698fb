//! Importance weights: normalisation, effective sample size and the
//! weighted empirical CDF.
//!
//! SMC samplers return particles with log-weights. The tests in this
//! module family accept normalised weights w_i >= 0, sum w_i = 1, and
//! report Kish's (1965) effective sample size
//!
//! ```text
//! ESS = (sum w_i)^2 / sum w_i^2 = 1 / sum w_i^2   (normalised w)
//! ```
//!
//! A weighted particle system is not an iid sample, so p-values computed
//! by plugging the ESS into an unweighted null are approximations; the
//! outcomes say so in their `method` string (statistics reference,
//! section 1).

use crate::error::{Error, Result, ensure};

/// Normalises non-negative weights to sum to one, checking them.
pub(crate) fn checked_normalized_weights(
    weights: &[f64],
    expected_len: usize,
) -> Result<Vec<f64>> {
    ensure!(
        weights.len() == expected_len,
        "weights has length {}, expected {expected_len}",
        weights.len()
    );
    for (i, &w) in weights.iter().enumerate() {
        ensure!(
            w.is_finite() && w >= 0.0,
            "weights[{i}] must be finite and non-negative, got {}",
            crate::stats::show(w)
        );
    }
    let total: f64 = weights.iter().sum();
    ensure!(crate::stats::above(total, 0.0), "weights are all zero");
    Ok(weights.iter().map(|w| w / total).collect())
}

/// Turns log-weights into normalised weights with the log-sum-exp shift.
///
/// `-inf` entries (zero weight) are allowed.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if `log_weights` is empty,
/// holds NaN or `+inf`, or every entry is `-inf`.
pub fn normalize_log_weights(log_weights: &[f64]) -> Result<Vec<f64>> {
    ensure!(!log_weights.is_empty(), "log_weights is empty");
    for (i, &l) in log_weights.iter().enumerate() {
        ensure!(
            !l.is_nan() && l != f64::INFINITY,
            "log_weights[{i}] must be finite or -inf, got {}",
            crate::stats::show(l)
        );
    }
    let top = log_weights.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    if top == f64::NEG_INFINITY {
        return Err(Error::invalid(
            "weights are all zero (every log-weight is -inf)",
        ));
    }
    let raw: Vec<f64> = log_weights.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = raw.iter().sum();
    Ok(raw.into_iter().map(|w| w / total).collect())
}

/// Kish's effective sample size (sum w)^2 / sum w^2 of non-negative
/// weights (normalisation is not required).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if `weights` is empty, holds
/// a negative or non-finite value, or sums to zero.
pub fn effective_sample_size(weights: &[f64]) -> Result<f64> {
    ensure!(!weights.is_empty(), "weights is empty");
    let w = checked_normalized_weights(weights, weights.len())?;
    Ok(1.0 / w.iter().map(|x| x * x).sum::<f64>())
}

/// The weighted empirical CDF as its jump points: sorted distinct sample
/// values with the cumulative weight at or below each.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] for an empty or non-finite
/// sample, or malformed weights (see [`effective_sample_size`]).
pub fn weighted_ecdf(
    sample: &[f64],
    weights: &[f64],
) -> Result<Vec<(f64, f64)>> {
    crate::stats::check_sample("sample", sample)?;
    let w = checked_normalized_weights(weights, sample.len())?;
    let mut order: Vec<usize> = (0..sample.len()).collect();
    order.sort_by(|&a, &b| sample[a].total_cmp(&sample[b]));
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut cumulative = 0.0;
    for i in order {
        cumulative += w[i];
        match steps.last_mut() {
            Some(last) if last.0 == sample[i] => last.1 = cumulative.min(1.0),
            _ => steps.push((sample[i], cumulative.min(1.0))),
        }
    }
    Ok(steps)
}

/// Weighted mean and the bias-corrected weighted variance
/// sum w (x - mean)^2 / (1 - sum w^2) of normalised weights (the
/// "reliability weights" estimator, unbiased for iid draws with fixed
/// weights).
pub(crate) fn weighted_mean_variance(sample: &[f64], w: &[f64]) -> (f64, f64) {
    let mean: f64 = sample.iter().zip(w).map(|(x, w)| w * x).sum();
    let sum_sq: f64 = w.iter().map(|w| w * w).sum();
    let spread: f64 =
        sample.iter().zip(w).map(|(x, w)| w * (x - mean) * (x - mean)).sum();
    (mean, spread / (1.0 - sum_sq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ess_of_equal_weights_is_n_and_of_one_weight_is_one() {
        assert!(
            (effective_sample_size(&[2.0; 8]).unwrap() - 8.0).abs() < 1e-12
        );
        let one = effective_sample_size(&[0.0, 3.0, 0.0]).unwrap();
        assert!((one - 1.0).abs() < 1e-15);
    }

    #[test]
    fn bad_weights_name_the_problem() {
        let err = effective_sample_size(&[0.0, 0.0]).unwrap_err();
        assert_eq!(err.to_string(), "weights are all zero");
        let err = effective_sample_size(&[1.0, -0.5]).unwrap_err();
        assert!(err.to_string().contains("weights[1]"), "{err}");
        let err = normalize_log_weights(&[f64::NEG_INFINITY]).unwrap_err();
        assert!(err.to_string().contains("all zero"));
    }

    #[test]
    fn log_weights_survive_large_offsets() {
        let w = normalize_log_weights(&[-1000.0, -1000.0 + 2f64.ln()]).unwrap();
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-12);
        assert!((w[1] - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ecdf_merges_ties() {
        let steps = weighted_ecdf(&[1.0, 0.0, 1.0], &[1.0, 1.0, 2.0]).unwrap();
        assert_eq!(steps.len(), 2);
        assert!((steps[0].1 - 0.25).abs() < 1e-15);
        assert!((steps[1].1 - 1.0).abs() < 1e-15);
    }
}
