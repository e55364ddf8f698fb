//! Cell-count tests for mode occupancy and the mass in a region.
//!
//! - Pearson's X^2 = sum (O - E)^2 / E and the G statistic
//!   G = 2 sum O ln(O/E) (with 0 ln 0 = 0), both referred to
//!   chi-square(K - 1) (scipy's `chisquare` and `power_divergence`);
//! - the exact multinomial test: p = sum of the probabilities of all
//!   outcomes no more likely than the observed one, with scipy's relative
//!   tolerance 1 + 1e-7 on "no more likely" (statistics reference,
//!   section 6.2); enumerated when there are at most 2 * 10^6 outcomes,
//!   otherwise estimated by seeded Monte Carlo with
//!   p = (1 + #{as extreme}) / (B + 1) (Phipson & Smyth 2010);
//! - the exact binomial test with scipy's two-sided "minlike" rule and
//!   the Clopper & Pearson (1934) interval
//!   [B^-1(a/2; k, n-k+1), B^-1(1-a/2; k+1, n-k)].

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use statrs::distribution::{
    Beta, Binomial, ChiSquared, ContinuousCDF, Discrete, DiscreteCDF,
};

use crate::error::{Error, Result, ensure};
use crate::stats::{Alternative, Effect, TestOutcome, check_level, clamp_prob};

/// Largest number of outcomes the exact multinomial test enumerates.
const MULTINOMIAL_ENUMERATION_LIMIT: f64 = 2e6;

/// Draws used by [`occupancy_test`] when it falls back to Monte Carlo.
pub const DEFAULT_MONTE_CARLO_DRAWS: usize = 9_999;

/// Relative tolerance of "no more likely than observed" (scipy).
const LIKELIHOOD_TOLERANCE: f64 = 1e-7;

fn check_counts(observed: &[f64], expected: &[f64]) -> Result<()> {
    ensure!(
        observed.len() >= 2,
        "need at least 2 cells, got {}",
        observed.len()
    );
    ensure!(
        observed.len() == expected.len(),
        "observed has {} cells but expected has {}",
        observed.len(),
        expected.len()
    );
    for (i, &o) in observed.iter().enumerate() {
        ensure!(
            o.is_finite() && o >= 0.0,
            "observed[{i}] must be finite and non-negative, got {}",
            crate::stats::show(o)
        );
    }
    for (i, &e) in expected.iter().enumerate() {
        ensure!(
            e.is_finite() && e > 0.0,
            "expected[{i}] must be positive, got {}",
            crate::stats::show(e)
        );
    }
    let total_o: f64 = observed.iter().sum();
    let total_e: f64 = expected.iter().sum();
    ensure!(
        crate::stats::at_most(
            (total_o - total_e).abs(),
            1e-8 * total_o.max(total_e)
        ),
        "observed counts sum to {total_o} but expected counts sum to {total_e}"
    );
    Ok(())
}

fn chi_square_outcome(
    test: &str,
    statistic: f64,
    cells: usize,
    n: f64,
) -> TestOutcome {
    let df = (cells - 1) as f64;
    let p_value =
        ChiSquared::new(df).map(|c| c.sf(statistic)).unwrap_or(f64::NAN);
    TestOutcome {
        test: test.into(),
        statistic,
        p_value: clamp_prob(p_value),
        method: format!("asymptotic-chi-square(df={df})"),
        n: n.round() as usize,
        ess: None,
        effect: None,
    }
}

/// Pearson's chi-square goodness-of-fit test of observed cell counts
/// against expected counts (same total), with K - 1 degrees of freedom.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if there are fewer than two
/// cells, the lengths differ, a count is negative or non-finite, an
/// expected count is not positive, or the totals differ.
pub fn chi_square_gof(
    observed: &[f64],
    expected: &[f64],
) -> Result<TestOutcome> {
    check_counts(observed, expected)?;
    let statistic: f64 =
        observed.iter().zip(expected).map(|(o, e)| (o - e) * (o - e) / e).sum();
    let n = observed.iter().sum();
    Ok(chi_square_outcome("chi_square", statistic, observed.len(), n))
}

/// The G-test (likelihood-ratio) of observed against expected counts,
/// G = 2 sum O ln(O/E), referred to chi-square(K - 1).
///
/// # Errors
///
/// As [`chi_square_gof`].
pub fn g_test(observed: &[f64], expected: &[f64]) -> Result<TestOutcome> {
    check_counts(observed, expected)?;
    let statistic: f64 = 2.0
        * observed
            .iter()
            .zip(expected)
            .map(|(&o, &e)| if o == 0.0 { 0.0 } else { o * (o / e).ln() })
            .sum::<f64>();
    let n = observed.iter().sum();
    Ok(chi_square_outcome("g_test", statistic.max(0.0), observed.len(), n))
}

fn check_probs(probs: &[f64], cells: usize) -> Result<()> {
    ensure!(cells >= 2, "need at least 2 cells, got {cells}");
    ensure!(
        probs.len() == cells,
        "observed has {cells} cells but probs has {}",
        probs.len()
    );
    for (i, &p) in probs.iter().enumerate() {
        ensure!(
            p.is_finite() && p >= 0.0,
            "probs[{i}] must be finite and non-negative, got {}",
            crate::stats::show(p)
        );
    }
    let total: f64 = probs.iter().sum();
    ensure!(
        crate::stats::at_most((total - 1.0).abs(), 1e-8),
        "probs must sum to 1, got {}",
        crate::stats::show(total)
    );
    Ok(())
}

/// log multinomial pmf with a table of ln k!.
fn log_pmf(counts: &[u64], log_probs: &[f64], ln_fact: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let mut value = ln_fact[n as usize];
    for (&c, &lp) in counts.iter().zip(log_probs) {
        if c > 0 {
            value += c as f64 * lp - ln_fact[c as usize];
        }
    }
    value
}

/// Number of compositions of n into k cells, C(n + k - 1, k - 1).
fn composition_count(n: u64, k: usize) -> f64 {
    use statrs::function::gamma::ln_gamma;
    let (n, k) = (n as f64, k as f64);
    (ln_gamma(n + k) - ln_gamma(n + 1.0) - ln_gamma(k)).exp()
}

/// Exact multinomial goodness-of-fit test of `observed` counts against
/// cell probabilities `probs`.
///
/// The p-value is the total probability of the outcomes whose
/// probability is at most (1 + 1e-7) times that of the observed counts.
/// It is computed by enumeration when C(n + K - 1, K - 1) <= 2 * 10^6,
/// and otherwise by `draws` multinomial samples from a `ChaCha8Rng`
/// seeded with `seed`, as (1 + hits)/(draws + 1).
///
/// The outcome's statistic is -ln P(observed counts). Cells with
/// probability 0 are allowed: a count in such a cell makes the
/// observation impossible and the p-value 0.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if there are fewer than two
/// cells, the lengths differ, the probabilities are negative, non-finite
/// or do not sum to 1, the total count is zero, or Monte Carlo is needed
/// and `draws` is zero.
pub fn multinomial_test(
    observed: &[u64],
    probs: &[f64],
    seed: u64,
    draws: usize,
) -> Result<TestOutcome> {
    check_probs(probs, observed.len())?;
    let n: u64 = observed.iter().sum();
    ensure!(n > 0, "observed counts are all zero");
    let outcome = |p_value: f64, method: String| TestOutcome {
        test: "multinomial_exact".into(),
        statistic: 0.0,
        p_value: clamp_prob(p_value),
        method,
        n: n as usize,
        ess: None,
        effect: None,
    };

    // Impossible observations and empty cells.
    if observed.iter().zip(probs).any(|(&c, &p)| c > 0 && p == 0.0) {
        return Ok(outcome(0.0, "exact-impossible-outcome".into()));
    }
    let (counts, cell_probs): (Vec<u64>, Vec<f64>) =
        observed.iter().zip(probs).filter(|(_, p)| **p > 0.0).unzip();
    let log_probs: Vec<f64> = cell_probs.iter().map(|p| p.ln()).collect();
    let ln_fact: Vec<f64> = std::iter::once(0.0)
        .chain((1..=n).scan(0.0, |acc, k| {
            *acc += (k as f64).ln();
            Some(*acc)
        }))
        .collect();
    let observed_lp = log_pmf(&counts, &log_probs, &ln_fact);
    let cut = observed_lp + LIKELIHOOD_TOLERANCE.ln_1p();
    let mut result = outcome(0.0, String::new());
    result.statistic = -observed_lp;

    if counts.len() == 1 {
        result.p_value = 1.0;
        result.method = "exact-enumeration".into();
        return Ok(result);
    }
    if composition_count(n, counts.len()) <= MULTINOMIAL_ENUMERATION_LIMIT {
        let mut current = vec![0u64; counts.len()];
        let mut total = 0.0;
        enumerate(&mut current, 0, n, &mut |c| {
            let lp = log_pmf(c, &log_probs, &ln_fact);
            if lp <= cut {
                total += lp.exp();
            }
        });
        result.p_value = clamp_prob(total);
        result.method = "exact-enumeration".into();
        return Ok(result);
    }

    ensure!(draws > 0, "draws must be positive for a monte-carlo p-value");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut hits = 0usize;
    let mut draw = vec![0u64; counts.len()];
    for _ in 0..draws {
        sample_multinomial(&mut rng, n, &cell_probs, &mut draw)?;
        if log_pmf(&draw, &log_probs, &ln_fact) <= cut {
            hits += 1;
        }
    }
    result.p_value = (1 + hits) as f64 / (draws + 1) as f64;
    result.method = format!("monte-carlo(seed={seed}, draws={draws})");
    Ok(result)
}

/// Calls `visit` on every composition of `remaining` into the cells from
/// `cell` on.
fn enumerate(
    current: &mut [u64],
    cell: usize,
    remaining: u64,
    visit: &mut dyn FnMut(&[u64]),
) {
    if cell + 1 == current.len() {
        current[cell] = remaining;
        visit(current);
        return;
    }
    for c in 0..=remaining {
        current[cell] = c;
        enumerate(current, cell + 1, remaining - c, visit);
    }
}

/// Multinomial draw by successive conditional binomials.
fn sample_multinomial(
    rng: &mut ChaCha8Rng,
    n: u64,
    probs: &[f64],
    out: &mut [u64],
) -> Result<()> {
    let mut remaining = n;
    let mut mass_left = 1.0;
    for (i, &p) in probs.iter().enumerate() {
        if i + 1 == probs.len() || remaining == 0 {
            out[i] = remaining;
            remaining = 0;
            continue;
        }
        let q = (p / mass_left).clamp(0.0, 1.0);
        let binomial =
            rand_distr::Binomial::new(remaining, q).map_err(|e| {
                Error::numerical(format!("binomial draw failed: {e}"))
            })?;
        out[i] = binomial.sample(rng);
        remaining -= out[i];
        mass_left -= p;
    }
    Ok(())
}

/// Mode-occupancy test: Pearson chi-square when every expected count
/// n q_k is at least 5, otherwise the exact multinomial test (or its
/// seeded Monte-Carlo estimate with 9999 draws).
///
/// # Errors
///
/// As [`multinomial_test`].
pub fn occupancy_test(
    observed: &[u64],
    probs: &[f64],
    seed: u64,
) -> Result<TestOutcome> {
    check_probs(probs, observed.len())?;
    let n: u64 = observed.iter().sum();
    ensure!(n > 0, "observed counts are all zero");
    let expected: Vec<f64> = probs.iter().map(|p| p * n as f64).collect();
    if expected.iter().all(|&e| e >= 5.0) {
        let obs: Vec<f64> = observed.iter().map(|&c| c as f64).collect();
        return chi_square_gof(&obs, &expected);
    }
    multinomial_test(observed, probs, seed, DEFAULT_MONTE_CARLO_DRAWS)
}

fn check_binomial(k: u64, n: u64) -> Result<()> {
    ensure!(n > 0, "number of trials must be positive, got 0");
    ensure!(k <= n, "successes must be at most trials ({n}), got {k}");
    Ok(())
}

/// Exact binomial test of `k` successes in `n` trials against success
/// probability `p`, with the Clopper-Pearson interval for the proportion
/// at confidence `level` (one-sided for one-sided alternatives, as in
/// scipy's `binomtest(...).proportion_ci(method='exact')`).
///
/// Two-sided p-values follow scipy's rule: the probability of all
/// outcomes with pmf <= (1 + 1e-7) pmf(k), the far side found by binary
/// search.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if `n` is 0, `k > n`, `p`
/// is outside [0, 1], or `level` is outside (0, 1).
pub fn binomial_test(
    k: u64,
    n: u64,
    p: f64,
    alternative: Alternative,
    level: f64,
) -> Result<TestOutcome> {
    check_binomial(k, n)?;
    ensure!(
        (0.0..=1.0).contains(&p),
        "p must be in [0, 1], got {}",
        crate::stats::show(p)
    );
    check_level(level)?;
    let dist = Binomial::new(p, n)
        .map_err(|e| Error::invalid(format!("binomial({n}, {p}): {e}")))?;
    let cdf = |x: u64| dist.cdf(x);
    let at_least = |x: u64| if x == 0 { 1.0 } else { dist.sf(x - 1) };

    let p_value = match alternative {
        Alternative::Less => cdf(k),
        Alternative::Greater => at_least(k),
        Alternative::TwoSided => two_sided_binomial(k, n, p, &dist),
    };
    let (ci_low, ci_high) = match alternative {
        Alternative::TwoSided => clopper_pearson_bounds(k, n, level),
        Alternative::Less => {
            (0.0, clopper_pearson_bounds(k, n, 2.0 * level - 1.0).1)
        }
        Alternative::Greater => {
            (clopper_pearson_bounds(k, n, 2.0 * level - 1.0).0, 1.0)
        }
    };
    Ok(TestOutcome {
        test: "binomial".into(),
        statistic: k as f64,
        p_value: clamp_prob(p_value),
        method: "exact".into(),
        n: n as usize,
        ess: None,
        effect: Some(Effect {
            name: "proportion".into(),
            estimate: k as f64 / n as f64,
            ci_low,
            ci_high,
            level,
        }),
    })
}

fn two_sided_binomial(k: u64, n: u64, p: f64, dist: &Binomial) -> f64 {
    let pmf = |x: u64| dist.pmf(x);
    let at_least = |x: u64| if x == 0 { 1.0 } else { dist.sf(x - 1) };
    let mean = p * n as f64;
    let cut = pmf(k) * (1.0 + LIKELIHOOD_TOLERANCE);
    if k as f64 == mean {
        return 1.0;
    }
    if (k as f64) < mean {
        // First j above the mean with pmf(j) <= cut (pmf decreasing).
        let (mut lo, mut hi) = (mean.ceil() as u64, n + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pmf(mid) <= cut { hi = mid } else { lo = mid + 1 }
        }
        let upper = if lo > n { 0.0 } else { at_least(lo) };
        (dist.cdf(k) + upper).min(1.0)
    } else {
        // Last j below the mean with pmf(j) <= cut (pmf increasing).
        let top = mean.floor() as u64;
        let (mut lo, mut hi) = (0u64, top + 1);
        // Find the first j in [0, top] with pmf(j) > cut.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pmf(mid) > cut { hi = mid } else { lo = mid + 1 }
        }
        let lower = if lo == 0 { 0.0 } else { dist.cdf(lo - 1) };
        (lower + at_least(k)).min(1.0)
    }
}

/// Two-sided Clopper-Pearson limits.
fn clopper_pearson_bounds(k: u64, n: u64, level: f64) -> (f64, f64) {
    let alpha = 1.0 - level;
    let (kf, nf) = (k as f64, n as f64);
    let low = if k == 0 {
        0.0
    } else {
        beta_quantile(kf, nf - kf + 1.0, alpha / 2.0)
    };
    let high = if k == n {
        1.0
    } else {
        beta_quantile(kf + 1.0, nf - kf, 1.0 - alpha / 2.0)
    };
    (low, high)
}

/// The `prob` quantile of Beta(a, b): statrs's `Beta::inverse_cdf`
/// polished by Newton steps on the regularised incomplete beta function
/// (statrs's `inverse_cdf` alone is off by ~2e-9 relative at
/// a = 301, b = 99700).
fn beta_quantile(a: f64, b: f64, prob: f64) -> f64 {
    use statrs::function::beta::{beta_reg, ln_beta};
    let Ok(dist) = Beta::new(a, b) else { return f64::NAN };
    let mut x = dist.inverse_cdf(prob);
    let ln_norm = ln_beta(a, b);
    for _ in 0..4 {
        if !(x > 0.0 && x < 1.0) {
            break;
        }
        let density =
            ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - ln_norm).exp();
        if density.is_nan() || density <= 0.0 {
            break;
        }
        let step = (beta_reg(a, b, x) - prob) / density;
        let next = x - step;
        if !(next > 0.0 && next < 1.0) {
            break;
        }
        x = next;
        if step.abs() <= 1e-16 * x {
            break;
        }
    }
    x
}

/// The two-sided Clopper & Pearson (1934) exact interval for a binomial
/// proportion, from beta quantiles (statrs's `Beta::inverse_cdf`, which
/// reproduces scipy to about 1e-14).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if `n` is 0, `k > n`, or
/// `level` is outside (0, 1).
pub fn clopper_pearson(k: u64, n: u64, level: f64) -> Result<Effect> {
    check_binomial(k, n)?;
    check_level(level)?;
    let (ci_low, ci_high) = clopper_pearson_bounds(k, n, level);
    Ok(Effect {
        name: "proportion".into(),
        estimate: k as f64 / n as f64,
        ci_low,
        ci_high,
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_expected_count_is_named() {
        let err = chi_square_gof(&[1.0, 2.0], &[4.0, -1.0]).unwrap_err();
        assert_eq!(err.to_string(), "expected[1] must be positive, got -1");
    }

    #[test]
    fn exact_multinomial_of_two_cells_is_the_binomial_test() {
        let exact = multinomial_test(&[9, 1], &[0.3, 0.7], 1, 0).unwrap();
        let binom =
            binomial_test(9, 10, 0.3, Alternative::TwoSided, 0.95).unwrap();
        assert!((exact.p_value - binom.p_value).abs() < 1e-12);
    }

    #[test]
    fn monte_carlo_multinomial_is_reproducible_and_close_to_exact() {
        // 40 particles in 30 cells: too many outcomes to enumerate.
        let probs = vec![1.0 / 30.0; 30];
        let mut counts = vec![1u64; 30];
        counts[0] = 6;
        counts[1] = 5;
        let a = multinomial_test(&counts, &probs, 11, 2000).unwrap();
        let b = multinomial_test(&counts, &probs, 11, 2000).unwrap();
        assert_eq!(a, b);
        assert!(a.method.starts_with("monte-carlo(seed=11"));
        assert!(a.p_value > 0.0 && a.p_value < 1.0);
    }

    #[test]
    fn impossible_cell_gives_zero() {
        let out = multinomial_test(&[1, 3], &[0.0, 1.0], 0, 10).unwrap();
        assert_eq!(out.p_value, 0.0);
    }
}
