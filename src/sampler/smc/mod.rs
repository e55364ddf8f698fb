//! Asymptotically exact samplers: sequential Monte Carlo (SMC) over the
//! reverse diffusion chain.
//!
//! Both samplers run one population of `num_particles` particles down a
//! time grid, reweight it with a potential that approximates `p(y | x_t)`,
//! resample, and end with the true likelihood:
//!
//! - `mcgdiff` ([`mcgdiff`]): Cardoso et al. (ICLR 2024), Gaussian
//!   potentials in the SVD coordinates of a linear operator;
//! - `tds` ([`tds`]): Wu et al. (NeurIPS 2023), the twisted diffusion
//!   sampler, a twist built from the denoiser and its vector-Jacobian
//!   product.
//!
//! # What "asymptotically exact" means here
//!
//! Write `p^N(x_{0:T})` for the law of the sampler's own reverse chain
//! (DDIM or DDPM steps driven by the prior's denoiser, started from
//! `N(0, sigma_T^2 I)`). Whatever the intermediate potentials, the final
//! weight makes the SMC target
//!
//! ```text
//! pi(x_{0:T}) ∝ p^N(x_{0:T}) p(y | x_0)
//! ```
//!
//! so as the particle count grows the output converges to the posterior
//! *of the chain*. That differs from `p(x0 | y)` by the chain's
//! discretisation error only (with an exact denoiser it vanishes as the
//! step count grows), which is what the integration tests check.
//!
//! # Output
//!
//! The final step is always the clean estimate `x_0 = D(x_{t_min})` (the
//! last DDIM step to `alpha = 1, sigma = 0`), so [`Run::final_time`] is 0.
//! The last weights are then removed by one final resampling with the
//! sampler's scheme: [`Run::log_weights`] is `None` and every returned
//! row is an equally weighted draw.
//!
//! The live population at an intermediate time approximates the *twisted*
//! target `p_t(x_t) psi_t(x_t)`, not `p_t(x_t | y)`. The recorded states are
//! therefore traced back through the genealogy instead: checkpoint row `k`
//! is the ancestor, at that time, of final particle `k`. For `tds`, whose
//! final path target is `p^N(x_{0:T}) p(y | x_0)`, these are draws of
//! `p^N_t(x_t | y)`, which converges to `p_t(x_t | y)`
//! ([`TrajectoryMeaning::NoisedPosterior`]). Resampling makes lineages
//! coalesce, so at early times rows repeat (path degeneracy); the number of
//! distinct rows limits the power of tests on early checkpoints. For
//! `mcgdiff` the traced states are not draws of `p_t(x_t | y)` (see its
//! docs) and the meaning is [`TrajectoryMeaning::Nothing`].
//!
//! # Randomness
//!
//! Proposal noise comes from [`gaussian_noise`] with step id `4 j` for the
//! `j`-th step and 2 for the start; the uniforms of a resampling come from
//! one seeded stream (step id `4 j + 1`, the final one `4 J + 1`), drawn
//! and used in index order, so a run does not depend on the thread count.

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use rand::RngExt;

#[cfg(doc)]
use super::TrajectoryMeaning;
use super::{
    Checkpoint, Entry, Problem, Run, SamplerKind, Settings, gaussian_noise,
};
use crate::error::{Error, Result};
use crate::mixture::log_sum_exp;
use crate::rng::{self, Purpose};

pub mod mcgdiff;
pub mod tds;

#[cfg(test)]
mod tests;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "mcgdiff",
            kind: SamplerKind::UnderTest,
            summary: "MCGdiff (Cardoso et al. 2024): SMC with Gaussian \
                      potentials in SVD coordinates, final true-likelihood \
                      weight; asymptotically exact in the particle count",
            build: |s| Ok(Box::new(mcgdiff::McgDiff::from_settings(s)?)),
        },
        Entry {
            name: "tds",
            kind: SamplerKind::UnderTest,
            summary: "twisted diffusion sampler (Wu et al. 2023): SMC \
                      twisted by N(y; A D(x_t), tau_t^2 + sigma_y^2), final \
                      true-likelihood weight; asymptotically exact",
            build: |s| Ok(Box::new(tds::Tds::from_settings(s)?)),
        },
    ]
}

/// The step id of the start noise (see the module docs).
const START_STEP: u64 = 2;

/// How ancestors are drawn from normalised weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `n` independent draws (ordered uniforms from exponential spacings,
    /// then one pass of the inverse CDF).
    Multinomial,
    /// One uniform `u`, points `(k + u) / n`, one pass of the inverse CDF.
    Systematic,
}

impl Scheme {
    fn parse(word: &str) -> Scheme {
        match word {
            "systematic" => Scheme::Systematic,
            _ => Scheme::Multinomial,
        }
    }

    /// The setting value.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Multinomial => "multinomial",
            Scheme::Systematic => "systematic",
        }
    }

    /// Ancestor indices (non-decreasing) for normalised `weights`, from
    /// the seeded stream of step id `step`.
    pub fn ancestors(
        self,
        weights: &[f64],
        seed: u64,
        step: u64,
    ) -> Vec<usize> {
        let n = weights.len();
        let mut rng = rng::stream(seed, Purpose::Sampler, step << 24);
        let points: Vec<f64> = match self {
            Scheme::Multinomial => {
                // Sorted uniforms without sorting: normalised partial sums
                // of n + 1 standard exponentials.
                let mut sums = Vec::with_capacity(n + 1);
                let mut total = 0.0;
                for _ in 0..=n {
                    let u: f64 = rng.random();
                    total += -(1.0 - u).ln();
                    sums.push(total);
                }
                sums.truncate(n);
                sums.iter().map(|s| s / total).collect()
            }
            Scheme::Systematic => {
                let u: f64 = rng.random();
                (0..n).map(|k| (k as f64 + u) / n as f64).collect()
            }
        };
        inverse_cdf(&points, weights)
    }
}

/// For sorted `points` in `[0, 1]`, the index `j` with
/// `W_0 + .. + W_{j-1} <= p < W_0 + .. + W_j`; a zero weight is never
/// picked except, through round-off, as the last index.
fn inverse_cdf(points: &[f64], weights: &[f64]) -> Vec<usize> {
    let mut out = Vec::with_capacity(points.len());
    let mut j = 0;
    let mut cumulative = weights[0];
    for &p in points {
        while p >= cumulative && j + 1 < weights.len() {
            j += 1;
            cumulative += weights[j];
        }
        out.push(j);
    }
    out
}

/// When and how a population is resampled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resampling {
    /// The scheme.
    pub scheme: Scheme,
    /// Resample when `ESS < ess_threshold * n` (1: at every step where the
    /// weights are not uniform; 0: never before the end).
    pub ess_threshold: f64,
}

impl Resampling {
    fn from_settings(s: &mut Settings, scheme: &'static str) -> Result<Self> {
        let scheme =
            s.choice("resampling", scheme, &["multinomial", "systematic"])?;
        let ess_threshold =
            s.f64("ess_threshold", 1.0, "must lie in [0, 1]", |v| {
                (0.0..=1.0).contains(&v)
            })?;
        Ok(Resampling { scheme: Scheme::parse(scheme), ess_threshold })
    }

    fn insert_settings(&self, settings: &mut BTreeMap<String, String>) {
        settings.insert("resampling".into(), self.scheme.name().into());
        settings.insert("ess_threshold".into(), self.ess_threshold.to_string());
    }

    /// Resamples when the rule says so and returns the ancestors; the
    /// weights are then reset to uniform.
    fn apply(
        &self,
        weights: &mut Weights,
        seed: u64,
        step: u64,
    ) -> Option<Vec<usize>> {
        let n = weights.log_w.len() as f64;
        if weights.is_uniform() || weights.ess() >= self.ess_threshold * n {
            return None;
        }
        Some(weights.resample(self.scheme, seed, step))
    }
}

/// The weights of a population and the running estimate of the evidence.
#[derive(Clone, Debug)]
pub struct Weights {
    /// Unnormalised log-weights, one per particle.
    log_w: Vec<f64>,
    /// `log Z^`, the product of the mean incremental weights: an unbiased
    /// estimate (on the natural scale) of the chain's evidence `p^N(y)`.
    log_evidence: f64,
    /// How many times the population was resampled.
    resamplings: usize,
}

impl Weights {
    fn uniform(n: usize) -> Weights {
        Weights { log_w: vec![0.0; n], log_evidence: 0.0, resamplings: 0 }
    }

    /// Multiplies in incremental weights and adds
    /// `log sum_j W_j exp(increment_j)` to the evidence.
    fn reweight(&mut self, increments: &[f64], what: &str) -> Result<()> {
        if let Some(j) = increments.iter().position(|v| v.is_nan()) {
            return Err(Error::numerical(format!(
                "{what}: incremental log-weight of particle {j} is NaN"
            )));
        }
        let before = log_sum_exp(&self.log_w);
        for (w, inc) in self.log_w.iter_mut().zip(increments) {
            *w += inc;
        }
        let after = log_sum_exp(&self.log_w);
        if !after.is_finite() {
            return Err(Error::numerical(format!(
                "{what}: every particle has weight zero or an infinite \
                 weight (log-sum {after})"
            )));
        }
        self.log_evidence += after - before;
        Ok(())
    }

    fn is_uniform(&self) -> bool {
        self.log_w.iter().all(|&w| w == self.log_w[0])
    }

    /// Normalised weights `W_j`.
    fn normalised(&self) -> Vec<f64> {
        let total = log_sum_exp(&self.log_w);
        self.log_w.iter().map(|w| (w - total).exp()).collect()
    }

    /// The effective sample size `1 / sum_j W_j^2`.
    fn ess(&self) -> f64 {
        1.0 / self.normalised().iter().map(|w| w * w).sum::<f64>()
    }

    fn resample(&mut self, scheme: Scheme, seed: u64, step: u64) -> Vec<usize> {
        let ancestors = scheme.ancestors(&self.normalised(), seed, step);
        self.log_w.iter_mut().for_each(|w| *w = 0.0);
        self.resamplings += 1;
        ancestors
    }
}

/// Records the population at the checkpoint times and follows the
/// lineages through later resamplings, so that the states handed back are
/// the ancestors of the final particles.
#[derive(Debug, Default)]
struct Genealogy {
    checkpoints: Vec<f64>,
    records: Vec<Record>,
}

#[derive(Debug)]
struct Record {
    t: f64,
    states: DMatrix<f64>,
    denoised: Option<DMatrix<f64>>,
    /// `lineage[k]`: the row of `states` that current particle `k`
    /// descends from.
    lineage: Vec<usize>,
}

impl Genealogy {
    fn new(problem: &Problem<'_>) -> Genealogy {
        Genealogy {
            checkpoints: problem.checkpoints.to_vec(),
            records: Vec::new(),
        }
    }

    fn offer(
        &mut self,
        t: f64,
        states: &DMatrix<f64>,
        denoised: Option<&DMatrix<f64>>,
    ) {
        if self.checkpoints.contains(&t)
            && !self.records.iter().any(|r| r.t == t)
        {
            self.records.push(Record {
                t,
                states: states.clone(),
                denoised: denoised.cloned(),
                lineage: (0..states.nrows()).collect(),
            });
        }
    }

    /// New particle `k` is a copy of old particle `ancestors[k]`.
    fn resampled(&mut self, ancestors: &[usize]) {
        for record in &mut self.records {
            record.lineage =
                ancestors.iter().map(|&a| record.lineage[a]).collect();
        }
    }

    fn finish(self) -> Vec<Checkpoint> {
        let mut trajectory: Vec<Checkpoint> = self
            .records
            .into_iter()
            .map(|r| Checkpoint {
                t: r.t,
                states: r.states.select_rows(r.lineage.iter()),
                denoised: r.denoised.map(|d| d.select_rows(r.lineage.iter())),
            })
            .collect();
        trajectory.sort_by(|a, b| b.t.total_cmp(&a.t));
        trajectory
    }
}

/// What a run produced, with the SMC diagnostics the contract has no room
/// for.
#[derive(Clone, Debug)]
#[allow(
    dead_code,
    reason = "the diagnostics are read by the unit tests only until the \
              sampler contract (`Run`) has a place for them"
)]
pub struct Outcome {
    /// The run (equally weighted final particles, traced trajectory).
    pub run: Run,
    /// `log Z^`, the estimate of the chain's evidence `log p^N(y)`.
    pub log_evidence: f64,
    /// The effective sample size of the final weights, before the final
    /// resampling.
    pub final_ess: f64,
    /// How many resamplings happened before the final one.
    pub resamplings: usize,
}

/// Ends a run: the final resampling of `x0` (and of the genealogy).
fn finish(
    x0: DMatrix<f64>,
    mut weights: Weights,
    mut genealogy: Genealogy,
    scheme: Scheme,
    seed: u64,
    steps: usize,
) -> Outcome {
    let final_ess = weights.ess();
    let resamplings = weights.resamplings;
    let ancestors = weights.resample(scheme, seed, 4 * steps as u64 + 1);
    genealogy.resampled(&ancestors);
    Outcome {
        run: Run {
            particles: x0.select_rows(ancestors.iter()),
            final_time: 0.0,
            log_weights: None,
            trajectory: genealogy.finish(),
        },
        log_evidence: weights.log_evidence,
        final_ess,
        resamplings,
    }
}

/// `log N(x; mean, var)` in one dimension.
fn log_normal(x: f64, mean: f64, var: f64) -> f64 {
    -0.5 * ((2.0 * std::f64::consts::PI * var).ln() + (x - mean).powi(2) / var)
}

/// The observation minus the forward model's bias, as a row.
fn centred_observation(problem: &Problem<'_>) -> DVector<f64> {
    match problem.forward.bias() {
        Some(b) => problem.observation - b,
        None => problem.observation.clone(),
    }
}

/// Start noise `N(0, sigma_T^2 I)`, the DDIM/DDPM starting law.
fn start_noise(problem: &Problem<'_>, n: usize, seed: u64) -> DMatrix<f64> {
    let (_, sigma) = problem.schedule.alpha_sigma(problem.t_max);
    gaussian_noise(seed, START_STEP, n, problem.dim()) * sigma
}
