//! Hypothesis tests with exact or well-documented null distributions.
//!
//! Every test returns a [`TestOutcome`]: the test's name, its statistic,
//! its p-value, how the p-value was obtained (`method`), the sample size
//! and, where one exists, an [`Effect`] with a confidence interval. The
//! outcome is plain data (serde), never a tuple.
//!
//! The families follow `shared/reference/statistics.md`:
//!
//! - [`ks`]: one-sample Kolmogorov-Smirnov against any continuous CDF with
//!   the finite-n Kolmogorov distribution (Simard & L'Ecuyer 2011), exact
//!   one-sided Smirnov tails, and two-sample KS with ties;
//! - [`edf`]: Anderson-Darling (case 0 and k-sample) and Cramer-von Mises;
//! - [`occupancy`]: chi-square, G, exact multinomial (or seeded Monte
//!   Carlo), the exact binomial test and the Clopper-Pearson interval;
//! - [`moments`]: mean, variance along a direction and covariance against
//!   the truth, with the mixture null for the variance;
//! - [`twosample`]: energy distance and MMD with seeded permutation
//!   p-values, sliced Wasserstein distances;
//! - [`multiple`]: Bonferroni, Holm and Hochberg adjusted p-values;
//! - [`weighted`]: importance weights, effective sample size, weighted
//!   empirical CDF;
//! - [`normal`]: the standard normal CDF, survival function and log-CDF
//!   computed from an accurate `erfc`.
//!
//! # Reproducibility
//!
//! Every Monte-Carlo p-value takes a `u64` seed and draws from a
//! `ChaCha8Rng` seeded with it; the seed is recorded in the outcome's
//! `method` string (`monte-carlo(seed=7, draws=9999)`), so a p-value can
//! be recomputed bit for bit.
//!
//! # Accuracy (measured against `fixtures/stats/reference.json`)
//!
//! - [`kolmogorov_sf`]: within 1.5e-11 relative of scipy's exact `kstwo`
//!   for n <= 140, within 5e-12 of 50-digit mpmath for n up to 10^4, and
//!   within 2e-12 in the upper tail down to 1e-300 for n up to 10^5. In
//!   the Pelz-Good region (n > 500, large nd, n d^2 < 4, so p >= 7e-4)
//!   the relative error is below 1e-6 at n = 1000 and falls like 1/n^2.
//! - Binomial, chi-square, G, exact multinomial, k-sample AD: within
//!   1e-10 relative of scipy (Clopper-Pearson limits are Newton-polished
//!   statrs beta quantiles).
//! - Cramer-von Mises: within 1e-6 absolute of scipy (whose series stops
//!   at 1e-7). One-sample Anderson-Darling: Marsaglia & Marsaglia's
//!   approximation, about six digits of the CDF; checked by simulation.
//!
//! # Limitations
//!
//! - All tests assume independent particles. For weighted (SMC) particle
//!   systems the KS p-value plugs Kish's ESS into the unweighted null and
//!   the moment tests use importance-sampling sandwich variances; both
//!   are asymptotic approximations, and their method strings say so.
//! - Continuous-CDF tests (KS, AD, CvM) are conservative for tied data
//!   and meaningless for atom (t = 0) truths.
//! - [`variance_test`] uses a normal approximation on the log scale; with
//!   strongly heavy-tailed truths it needs a few hundred particles.
//! - [`anderson_darling_ksample`] p-values are interpolated and clipped
//!   to [0.001, 0.25], as in scipy.
//!
//! # What statrs is used for
//!
//! statrs 0.19.1 supplies the chi-square, beta and binomial
//! distributions and the gamma function. Its `Normal::cdf` (about 1e-10
//! relative error), `stats_tests::ks_test` (NaN or errors for n >= 144)
//! and `anderson_darling` (composite-normality p-value) are not used; see
//! issue 7 and section 11 of the statistics reference.

use serde::{Deserialize, Serialize};

use crate::error::{Result, ensure};

pub mod edf;
pub mod ks;
pub mod moments;
pub mod multiple;
pub mod normal;
pub mod occupancy;
pub mod twosample;
pub mod weighted;

pub use edf::{anderson_darling, anderson_darling_ksample, cramer_von_mises};
pub use ks::{
    kolmogorov_cdf, kolmogorov_limit_sf, kolmogorov_sf, ks_one_sample,
    ks_one_sided, ks_two_sample, smirnov_sf,
};
pub use moments::{
    covariance_test, mean_test, mixture_central_moments, variance_test,
    variance_test_gaussian,
};
pub use multiple::{bonferroni, hochberg, holm};
pub use occupancy::{
    binomial_test, chi_square_gof, clopper_pearson, g_test, multinomial_test,
    occupancy_test,
};
pub use twosample::{
    SlicedWasserstein, energy_test, mmd_test, sliced_wasserstein,
};
pub use weighted::{effective_sample_size, normalize_log_weights};

/// The result of one hypothesis test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    /// Which test, for example `ks_one_sample` or `variance_mixture`.
    pub test: String,
    /// The test statistic.
    pub statistic: f64,
    /// The p-value, in [0, 1].
    pub p_value: f64,
    /// How the p-value was computed, for example `exact-durbin`,
    /// `smirnov-tail`, `pelz-good`, `asymptotic` or
    /// `monte-carlo(seed=7, draws=9999)`.
    pub method: String,
    /// The number of observations (particles, or the total count).
    pub n: usize,
    /// Kish's effective sample size when the particles carry importance
    /// weights; `None` for unweighted samples.
    pub ess: Option<f64>,
    /// An effect size with its confidence interval, where one exists.
    pub effect: Option<Effect>,
}

/// An effect size with a confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// What is estimated, for example `sd_ratio` or `proportion`.
    pub name: String,
    /// The point estimate.
    pub estimate: f64,
    /// Lower end of the confidence interval.
    pub ci_low: f64,
    /// Upper end of the confidence interval.
    pub ci_high: f64,
    /// Confidence level of the interval, for example 0.95.
    pub level: f64,
}

/// The alternative hypothesis of a test that has a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alternative {
    /// The two-sided alternative.
    TwoSided,
    /// The parameter (or CDF) is smaller than under the null. For a
    /// one-sample KS test: the sample's CDF lies below the null CDF.
    Less,
    /// The parameter (or CDF) is larger than under the null. For a
    /// one-sample KS test: the sample's CDF lies above the null CDF.
    Greater,
}

/// Checks that a sample is non-empty and finite.
pub(crate) fn check_sample(name: &str, sample: &[f64]) -> Result<()> {
    ensure!(!sample.is_empty(), "{name} is empty");
    if let Some((i, x)) =
        sample.iter().enumerate().find(|(_, x)| !x.is_finite())
    {
        let x = show(*x);
        return Err(crate::Error::invalid(format!(
            "{name}[{i}] must be finite, got {x}"
        )));
    }
    Ok(())
}

/// `x > bound`, false for NaN; a function so that `ensure!`, which
/// negates its condition, does not trip clippy's
/// `neg_cmp_op_on_partial_ord`.
pub(crate) fn above(x: f64, bound: f64) -> bool {
    x > bound
}

/// `x <= bound`, false for NaN (see [`above`]).
pub(crate) fn at_most(x: f64, bound: f64) -> bool {
    x <= bound
}

/// Formats a number for an error message: lowercase `nan`/`inf`.
pub(crate) fn show(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        x.to_string()
    }
}

/// Checks a confidence level in (0, 1).
pub(crate) fn check_level(level: f64) -> Result<()> {
    ensure!(
        level > 0.0 && level < 1.0,
        "confidence level must be in (0, 1), got {}",
        crate::stats::show(level)
    );
    Ok(())
}

/// Clamps a probability into [0, 1] (rounding can leave it just outside).
pub(crate) fn clamp_prob(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}
