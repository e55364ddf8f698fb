//! Multiple-testing adjustments over one family of p-values.
//!
//! All three return adjusted p-values in the input order; reject
//! hypothesis i at family-wise level alpha when `adjusted[i] <= alpha`.
//! With p_(1) <= ... <= p_(m) the sorted p-values:
//!
//! ```text
//! Bonferroni:        adj_i     = min(1, m p_i)
//! Holm (1979):       adj_(j)   = max_{i<=j} min(1, (m - i + 1) p_(i))
//! Hochberg (1988):   adj_(j)   = min_{i>=j} min(1, (m - i + 1) p_(i))
//! ```
//!
//! Bonferroni and Holm control the family-wise error rate under any
//! dependence; Holm is uniformly at least as powerful. Hochberg's step-up
//! (built on Simes' inequality) is valid only under independence or
//! positive regression dependence, so the audit gates on Holm (statistics
//! reference, section 9).

use crate::error::{Result, ensure};

fn check_p_values(p_values: &[f64]) -> Result<()> {
    for (i, &p) in p_values.iter().enumerate() {
        ensure!(
            (0.0..=1.0).contains(&p),
            "p_values[{i}] must be in [0, 1], got {}",
            crate::stats::show(p)
        );
    }
    Ok(())
}

/// Indices that sort the p-values ascending (stable).
fn ascending(p_values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p_values.len()).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    order
}

/// Bonferroni-adjusted p-values, min(1, m p_i).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if a p-value is NaN or
/// outside [0, 1].
pub fn bonferroni(p_values: &[f64]) -> Result<Vec<f64>> {
    check_p_values(p_values)?;
    let m = p_values.len() as f64;
    Ok(p_values.iter().map(|p| (m * p).min(1.0)).collect())
}

/// Holm's step-down adjusted p-values.
///
/// # Errors
///
/// As [`bonferroni`].
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in ascending(p_values).iter().enumerate() {
        let scaled = ((m - rank) as f64 * p_values[i]).min(1.0);
        running = running.max(scaled);
        adjusted[i] = running;
    }
    Ok(adjusted)
}

/// Hochberg's step-up adjusted p-values.
///
/// # Errors
///
/// As [`bonferroni`].
pub fn hochberg(p_values: &[f64]) -> Result<Vec<f64>> {
    check_p_values(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in ascending(p_values).iter().enumerate().rev() {
        let scaled = ((m - rank) as f64 * p_values[i]).min(1.0);
        running = running.min(scaled);
        adjusted[i] = running;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_is_between_raw_and_bonferroni_and_monotone() {
        let p = [0.04, 0.001, 0.3, 0.02, 0.02];
        let h = holm(&p).unwrap();
        let b = bonferroni(&p).unwrap();
        let s = hochberg(&p).unwrap();
        for i in 0..p.len() {
            assert!(p[i] <= s[i] && s[i] <= h[i] && h[i] <= b[i], "{i}");
        }
        let order = ascending(&p);
        for w in order.windows(2) {
            assert!(h[w[0]] <= h[w[1]]);
        }
    }

    #[test]
    fn nan_p_value_is_rejected() {
        let err = holm(&[0.1, f64::NAN]).unwrap_err();
        assert_eq!(err.to_string(), "p_values[1] must be in [0, 1], got nan");
        assert!(holm(&[]).unwrap().is_empty());
    }
}
