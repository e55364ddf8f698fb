//! Two-sample tests and distances between particle sets in R^d.
//!
//! Rows of a `DMatrix<f64>` are particles.
//!
//! # Energy distance (Szekely & Rizzo 2004)
//!
//! ```text
//! E = 2 mean|X - Y| - mean|X - X'| - mean|Y - Y'|     (V-statistics)
//! T = n m / (n + m) E
//! ```
//!
//! In 1-D, E = 2 int (F - G)^2, and scipy's `energy_distance` returns
//! sqrt(E).
//!
//! # MMD (Gretton et al. 2012, JMLR 13:723)
//!
//! The unbiased MMD^2 with the Gaussian kernel
//! k(x, y) = exp(-|x - y|^2 / (2 l^2)):
//!
//! ```text
//! MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n-1))
//!         + sum_{i != j} k(y_i, y_j) / (m (m-1))
//!         - 2 sum_{i,j} k(x_i, y_j) / (n m)
//! ```
//!
//! The bandwidth l must be fixed without looking at the data (e.g. from
//! a truth sample) for the permutation test to be exact.
//!
//! # Permutation p-values
//!
//! B random relabellings of the pooled sample from a `ChaCha8Rng` seeded
//! with the caller's seed; p = (1 + #{T_b >= T}) / (B + 1) (Phipson &
//! Smyth 2010), never 0, and at least 1/(B + 1).
//!
//! # Sliced Wasserstein distances
//!
//! For unit directions u drawn uniformly on the sphere (normalised
//! Gaussian vectors from a seeded `ChaCha8Rng`),
//!
//! ```text
//! SW_p = ( mean_u W_p^p(u'X, u'Y) )^(1/p),
//! W_p^p(F, G) = int_0^1 |F^-1(t) - G^-1(t)|^p dt
//! ```
//!
//! with the 1-D integral evaluated exactly over the merged breakpoints of
//! the two empirical quantile functions (Bonneel et al. 2015). It is an
//! effect size: its null law is not distribution-free, so no p-value is
//! attached (statistics reference, section 4).

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ensure};
use crate::stats::TestOutcome;

fn check_particles(name: &str, x: &DMatrix<f64>) -> Result<()> {
    ensure!(x.nrows() > 0 && x.ncols() > 0, "{name} is empty");
    if let Some(v) = x.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{name} must be finite, got {}",
            crate::stats::show(*v)
        )));
    }
    Ok(())
}

fn check_pair(first: &DMatrix<f64>, second: &DMatrix<f64>) -> Result<()> {
    check_particles("first particle set", first)?;
    check_particles("second particle set", second)?;
    ensure!(
        first.ncols() == second.ncols(),
        "particle sets have dimensions {} and {}",
        first.ncols(),
        second.ncols()
    );
    Ok(())
}

/// Pooled matrix of f(|x_i - x_j|^2) over all pairs of pooled particles.
fn pooled_matrix(
    first: &DMatrix<f64>,
    second: &DMatrix<f64>,
    f: impl Fn(f64) -> f64,
) -> DMatrix<f64> {
    let pooled: Vec<_> = first.row_iter().chain(second.row_iter()).collect();
    let total = pooled.len();
    let mut out = DMatrix::zeros(total, total);
    for i in 0..total {
        for j in 0..i {
            let value = f((pooled[i] - pooled[j]).norm_squared());
            out[(i, j)] = value;
            out[(j, i)] = value;
        }
        out[(i, i)] = f(0.0);
    }
    out
}

/// Sums of the pooled matrix over (first, first), (second, second) and
/// (first, second) blocks for a labelling (`true` = first), with or
/// without the diagonal.
fn block_sums(
    matrix: &DMatrix<f64>,
    labels: &[bool],
    diagonal: bool,
) -> (f64, f64, f64) {
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    let total = labels.len();
    for i in 0..total {
        for j in 0..total {
            if i == j && !diagonal {
                continue;
            }
            let value = matrix[(i, j)];
            match (labels[i], labels[j]) {
                (true, true) => xx += value,
                (false, false) => yy += value,
                (true, false) => xy += value,
                (false, true) => {}
            }
        }
    }
    (xx, yy, xy)
}

/// Shared permutation driver.
fn permutation_p_value(
    observed: f64,
    n: usize,
    total: usize,
    num_permutations: usize,
    seed: u64,
    statistic: impl Fn(&[bool]) -> f64,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut labels: Vec<bool> = (0..total).map(|i| i < n).collect();
    let mut at_least = 0usize;
    for _ in 0..num_permutations {
        labels.shuffle(&mut rng);
        // A relative slack keeps ties that differ only by rounding.
        if statistic(&labels) >= observed * (1.0 - 1e-12) {
            at_least += 1;
        }
    }
    (1 + at_least) as f64 / (num_permutations + 1) as f64
}

/// Two-sample energy-distance test with a seeded permutation p-value.
///
/// The statistic is T = n m/(n + m) E (module docs); `num_permutations`
/// relabellings are drawn from a `ChaCha8Rng` seeded with `seed`. Cost is
/// O((n + m)^2) memory and O(B (n + m)^2) time.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if a set is empty or
/// non-finite, the dimensions differ, or `num_permutations` is 0.
pub fn energy_test(
    first: &DMatrix<f64>,
    second: &DMatrix<f64>,
    num_permutations: usize,
    seed: u64,
) -> Result<TestOutcome> {
    check_pair(first, second)?;
    ensure!(num_permutations > 0, "num_permutations must be positive, got 0");
    let (n, m) = (first.nrows(), second.nrows());
    let distances = pooled_matrix(first, second, f64::sqrt);
    let (nf, mf) = (n as f64, m as f64);
    let statistic = |labels: &[bool]| {
        let (xx, yy, xy) = block_sums(&distances, labels, true);
        let energy = 2.0 * xy / (nf * mf) - xx / (nf * nf) - yy / (mf * mf);
        nf * mf / (nf + mf) * energy
    };
    let labels: Vec<bool> = (0..n + m).map(|i| i < n).collect();
    let observed = statistic(&labels);
    let p_value = permutation_p_value(
        observed,
        n,
        n + m,
        num_permutations,
        seed,
        statistic,
    );
    Ok(TestOutcome {
        test: "energy_distance".into(),
        statistic: observed,
        p_value,
        method: format!(
            "permutation(seed={seed}, permutations={num_permutations})"
        ),
        n: n + m,
        ess: None,
        effect: None,
    })
}

/// Two-sample MMD test (unbiased MMD^2, Gaussian kernel of the given
/// `bandwidth`) with a seeded permutation p-value.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if a set has fewer than two
/// particles or is non-finite, the dimensions differ, the bandwidth is
/// not positive, or `num_permutations` is 0.
pub fn mmd_test(
    first: &DMatrix<f64>,
    second: &DMatrix<f64>,
    bandwidth: f64,
    num_permutations: usize,
    seed: u64,
) -> Result<TestOutcome> {
    check_pair(first, second)?;
    let (n, m) = (first.nrows(), second.nrows());
    ensure!(
        n >= 2 && m >= 2,
        "mmd needs at least 2 particles per set, got {n} and {m}"
    );
    ensure!(
        bandwidth.is_finite() && bandwidth > 0.0,
        "bandwidth must be positive, got {}",
        crate::stats::show(bandwidth)
    );
    ensure!(num_permutations > 0, "num_permutations must be positive, got 0");
    let scale = 1.0 / (2.0 * bandwidth * bandwidth);
    let kernel = pooled_matrix(first, second, |d2| (-d2 * scale).exp());
    let (nf, mf) = (n as f64, m as f64);
    let statistic = |labels: &[bool]| {
        let (xx, yy, xy) = block_sums(&kernel, labels, false);
        xx / (nf * (nf - 1.0)) + yy / (mf * (mf - 1.0)) - 2.0 * xy / (nf * mf)
    };
    let labels: Vec<bool> = (0..n + m).map(|i| i < n).collect();
    let observed = statistic(&labels);
    let p_value = permutation_p_value(
        observed,
        n,
        n + m,
        num_permutations,
        seed,
        statistic,
    );
    Ok(TestOutcome {
        test: "mmd_gaussian".into(),
        statistic: observed,
        p_value,
        method: format!(
            "permutation(seed={seed}, permutations={num_permutations})"
        ),
        n: n + m,
        ess: None,
        effect: None,
    })
}

/// A sliced Wasserstein distance between two particle sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlicedWasserstein {
    /// The order p of the distance (1 or 2 in practice).
    pub order: u32,
    /// SW_p = (mean over directions of W_p^p)^(1/p).
    pub value: f64,
    /// W_p along each direction, in the order the directions were drawn.
    pub per_direction: Vec<f64>,
    /// The seed of the `ChaCha8Rng` that drew the directions.
    pub seed: u64,
}

/// W_p^p between two sorted 1-D samples (empirical quantile functions).
fn wasserstein_pow_1d(x: &[f64], y: &[f64], order: i32) -> f64 {
    let (n, m) = (x.len(), y.len());
    let (mut i, mut j) = (0usize, 0usize);
    let mut t = 0.0;
    let mut total = 0.0;
    // Walk the merged breakpoints k/n and l/m; compare by cross-products
    // so that equal breakpoints advance together.
    while i < n && j < m {
        let next_x = (i + 1) as f64 / n as f64;
        let next_y = (j + 1) as f64 / m as f64;
        let order_cmp = ((i + 1) * m).cmp(&((j + 1) * n));
        let next = next_x.min(next_y);
        total += (next - t) * (x[i] - y[j]).abs().powi(order);
        t = next;
        match order_cmp {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    total
}

/// Sliced Wasserstein-p distance between two particle sets over
/// `num_directions` random unit directions drawn from a `ChaCha8Rng`
/// seeded with `seed` (module docs). In 1-D both directions are ±1 and
/// the result is the exact W_p.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if a set is empty or
/// non-finite, the dimensions differ, `order` is 0, or `num_directions`
/// is 0.
pub fn sliced_wasserstein(
    first: &DMatrix<f64>,
    second: &DMatrix<f64>,
    order: u32,
    num_directions: usize,
    seed: u64,
) -> Result<SlicedWasserstein> {
    check_pair(first, second)?;
    ensure!(order >= 1, "order must be at least 1, got 0");
    ensure!(num_directions > 0, "num_directions must be positive, got 0");
    let d = first.ncols();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut per_direction = Vec::with_capacity(num_directions);
    let mut sum_pow = 0.0;
    for _ in 0..num_directions {
        let mut direction = DVector::<f64>::zeros(d);
        loop {
            for v in direction.iter_mut() {
                *v = StandardNormal.sample(&mut rng);
            }
            let norm = direction.norm();
            if norm > 1e-12 {
                direction /= norm;
                break;
            }
        }
        let mut x: Vec<f64> = (first * &direction).iter().copied().collect();
        let mut y: Vec<f64> = (second * &direction).iter().copied().collect();
        x.sort_by(f64::total_cmp);
        y.sort_by(f64::total_cmp);
        let w_pow = wasserstein_pow_1d(&x, &y, order as i32);
        sum_pow += w_pow;
        per_direction.push(w_pow.powf(1.0 / order as f64));
    }
    let value = (sum_pow / num_directions as f64).powf(1.0 / order as f64);
    Ok(SlicedWasserstein { order, value, per_direction, seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let x: Vec<f64> = (0..10).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| v + 0.5).collect();
        assert!((wasserstein_pow_1d(&x, &y, 1) - 0.5).abs() < 1e-15);
        assert!((wasserstein_pow_1d(&x, &y, 2) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn unequal_sizes_integrate_over_merged_breakpoints() {
        // F^-1 of {0, 1} vs {0, 0, 3}: on (0, 1/2) 0 vs 0; (1/2, 2/3)
        // 1 vs 0; (2/3, 1) 1 vs 3.
        let w1 = wasserstein_pow_1d(&[0.0, 1.0], &[0.0, 0.0, 3.0], 1);
        let want = (2.0 / 3.0 - 0.5) * 1.0 + (1.0 / 3.0) * 2.0;
        assert!((w1 - want).abs() < 1e-15);
    }
}
