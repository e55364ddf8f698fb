//! Samplers under test, and the contract they share.
//!
//! A [`Sampler`] gets a [`Problem`]: exactly what a real diffusion posterior
//! sampler may see (the prior's denoiser as a batched function of
//! `(x_t, t)` with vector-Jacobian products, the forward model, `y`, the
//! schedule, and the times at which to record its state). It returns a
//! [`Run`]: final particles, optional log-weights, and the recorded states
//! at the checkpoints. A sampler under test never sees the posterior; only
//! reference samplers ([`SamplerKind::Reference`]) and the deliberately
//! broken ones built from them ([`SamplerKind::Broken`]) are handed the
//! exact answers through [`Problem::oracle`]; the harness hands them to no
//! other kind (see [`Setup::for_sampler`]).
//!
//! Samplers are named and configured with `key=value` settings, the same
//! form as on the command line (`dps:scale=0.5,form=sigma`); each carries
//! its published defaults and documents its approximation of `p(y | x_t)`,
//! its update rule and its source. `posterior-lens samplers` lists every
//! sampler with its settings at their defaults. The samplers live in
//! private submodules (`exact`, `guidance`, `spectral`, `smc`, `broken`),
//! reached through [`registry`] and [`build`]; their documentation is
//! rendered by `cargo doc --document-private-items`.
//!
//! Randomness: every random number comes from the run seed, through
//! streams keyed by (purpose, step, chunk of [`CHUNK`] particles), so a run
//! is bit-identical whatever the thread count.

use std::collections::BTreeMap;
use std::fmt;

use nalgebra::{DMatrix, DVector};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, ensure};
use crate::forward::ForwardModel;
use crate::mixture::{self, Backward, Mixture};
use crate::rng::{self, CHUNK, Purpose};
use crate::schedule::Schedule;
use crate::truth::Truth;

mod broken;
mod exact;
mod guidance;
mod smc;
mod spectral;

pub use exact::{ExactTransition, ScoreSampler};

/// The error of a sampler declining a problem it does not apply to (`fsr`
/// without a training set, an SVD method with a nonlinear forward model).
/// The sampler and the case do not go together, so it is a usage error.
/// `needs` says what the sampler needs (`needs the SVD of A`) without
/// naming the sampler: whoever runs it names it (the audit prefixes
/// `sampler NAME: `, the survey lists the cell).
pub(crate) fn declined(needs: impl Into<String>) -> Error {
    Error::new(ErrorKind::Usage, needs)
}

/// The prior's denoiser `D(x_t, t) = E[x0 | x_t]`, the "network" a sampler
/// calls, as a batched function (rows of `xs` are particles).
pub trait Denoiser: Sync {
    /// The dimension of `x`.
    fn dim(&self) -> usize;

    /// `D(x_t, t)` for every row of `xs`.
    ///
    /// # Errors
    ///
    /// When `t` is outside the range where the denoiser is defined.
    fn denoise(&self, xs: &DMatrix<f64>, t: f64) -> Result<DMatrix<f64>>;

    /// `D(x_t, t)` and the vector-Jacobian products `v_i^T dD/dx (x_i)`
    /// for every row `x_i` of `xs` and `v_i` of `vs`. The default
    /// implementation returns `None` for the products (no autodiff).
    ///
    /// # Errors
    ///
    /// As [`Denoiser::denoise`].
    fn denoise_with_vjp(
        &self,
        xs: &DMatrix<f64>,
        t: f64,
        vs: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, Option<DMatrix<f64>>)> {
        let _ = vs;
        Ok((self.denoise(xs, t)?, None))
    }

    /// `D(x_t, t)` and, for every row `x_i` of `xs`, the products
    /// `u_j^T dD/dx (x_i)` with every row `u_j` of `us` (the same `m`
    /// cotangents at every particle, e.g. the rows of `A`), stacked so
    /// that rows `i m .. (i + 1) m` belong to particle `i`. The default
    /// repeats each particle `m` times through
    /// [`Denoiser::denoise_with_vjp`]; a denoiser that can share work
    /// across the cotangents overrides it.
    ///
    /// # Errors
    ///
    /// As [`Denoiser::denoise`].
    fn denoise_with_vjps(
        &self,
        xs: &DMatrix<f64>,
        t: f64,
        us: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, Option<DMatrix<f64>>)> {
        if us.nrows() == 0 {
            let none = DMatrix::zeros(0, xs.ncols());
            return Ok((self.denoise(xs, t)?, Some(none)));
        }
        mixture::over_row_pairs(xs, us, |xs, vs| {
            self.denoise_with_vjp(xs, t, vs)
        })
    }
}

/// The exact denoiser of a mixture prior under a schedule.
///
/// For atoms (a training set) the vector-Jacobian products reuse the
/// softmax weights of the denoiser call:
///
/// ```text
/// W = softmax rows,  D = W X,  dD/dx v = (alpha/sigma^2) Cov[x0|x_t] v
/// Cov v = X^T (w ∘ (X v)) - D <D, v>
/// ```
#[derive(Clone, Debug)]
pub struct MixtureDenoiser {
    prior: Mixture,
    schedule: Schedule,
}

impl MixtureDenoiser {
    /// The exact denoiser of `prior`.
    pub fn new(prior: Mixture, schedule: Schedule) -> MixtureDenoiser {
        MixtureDenoiser { prior, schedule }
    }

    /// The prior.
    pub fn prior(&self) -> &Mixture {
        &self.prior
    }

    fn backward(&self, t: f64) -> Result<Backward<'_>> {
        let (alpha, sigma) = self.schedule.alpha_sigma(t);
        Backward::new(&self.prior, alpha, sigma)
    }
}

impl Denoiser for MixtureDenoiser {
    fn dim(&self) -> usize {
        self.prior.dim()
    }

    fn denoise(&self, xs: &DMatrix<f64>, t: f64) -> Result<DMatrix<f64>> {
        Ok(self.backward(t)?.denoise_batch(xs))
    }

    fn denoise_with_vjp(
        &self,
        xs: &DMatrix<f64>,
        t: f64,
        vs: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, Option<DMatrix<f64>>)> {
        let backward = self.backward(t)?;
        let (denoised, vjp) = backward.denoise_and_jvp_batch(xs, vs);
        Ok((denoised, Some(vjp)))
    }

    /// One softmax per particle for all the cotangents (the Jacobian is
    /// symmetric, so these are Jacobian-vector products).
    fn denoise_with_vjps(
        &self,
        xs: &DMatrix<f64>,
        t: f64,
        us: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, Option<DMatrix<f64>>)> {
        let backward = self.backward(t)?;
        let (denoised, products) = backward.denoise_and_jvps_batch(xs, us);
        Ok((denoised, Some(products)))
    }
}

/// What a sampler may see.
#[derive(Clone, Copy)]
pub struct Problem<'a> {
    /// The prior's denoiser (the "network").
    pub denoiser: &'a dyn Denoiser,
    /// The forward model: apply, adjoint, SVD where it exists.
    pub forward: &'a ForwardModel,
    /// The observation `y`.
    pub observation: &'a DVector<f64>,
    /// The noise schedule.
    pub schedule: &'a Schedule,
    /// The times at which to record the state, decreasing.
    pub checkpoints: &'a [f64],
    /// The time where sampling starts (the noise end).
    pub t_max: f64,
    /// The time where sampling stops.
    pub t_min: f64,
    /// The exact answers; handed only to reference and broken samplers.
    pub oracle: Option<&'a Truth>,
}

/// The parts of a [`Problem`] that the harness builds once per case.
#[derive(Debug)]
pub struct Setup {
    /// The exact posterior of the case.
    pub truth: Truth,
    /// The exact prior denoiser.
    pub denoiser: MixtureDenoiser,
    /// The checkpoint times, decreasing.
    pub checkpoints: Vec<f64>,
    /// Where sampling starts.
    pub t_max: f64,
    /// Where sampling stops.
    pub t_min: f64,
}

impl Setup {
    /// The exact denoiser and truth of a case, with `t_min` the schedule's
    /// default and the given checkpoints.
    ///
    /// # Errors
    ///
    /// When the case's posterior cannot be computed.
    pub fn new(
        case: &crate::case::Case,
        checkpoints: Vec<f64>,
    ) -> Result<Setup> {
        let truth = Truth::new(case)?;
        let denoiser =
            MixtureDenoiser::new(case.prior.clone(), case.schedule.clone());
        let (_, mut t_max) = case.schedule.time_range();
        // Where the schedule's end has no signal at all (rectified flow:
        // alpha = 0 at t = 1) the backward posterior is undefined; start
        // just below it.
        if case.schedule.alpha(t_max) <= 0.0 {
            t_max *= 1.0 - 1e-3;
        }
        let t_min = case.schedule.default_t_min();
        Ok(Setup { truth, denoiser, checkpoints, t_max, t_min })
    }

    /// The problem as the given sampler may see it: the oracle only for
    /// reference and broken samplers.
    pub fn for_sampler(&self, sampler: &dyn Sampler) -> Problem<'_> {
        let oracle = match sampler.kind() {
            SamplerKind::Reference | SamplerKind::Broken => Some(&self.truth),
            SamplerKind::UnderTest => None,
        };
        Problem {
            denoiser: &self.denoiser,
            forward: self.truth.forward(),
            observation: self.truth.observation(),
            schedule: self.truth.schedule(),
            checkpoints: &self.checkpoints,
            t_max: self.t_max,
            t_min: self.t_min,
            oracle,
        }
    }
}

impl fmt::Debug for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Problem")
            .field("dim", &self.denoiser.dim())
            .field("observation", &self.observation)
            .field("checkpoints", &self.checkpoints)
            .field("t_max", &self.t_max)
            .field("t_min", &self.t_min)
            .finish_non_exhaustive()
    }
}

impl<'a> Problem<'a> {
    /// The dimension of `x`.
    pub fn dim(&self) -> usize {
        self.denoiser.dim()
    }

    /// The exact answers, for reference samplers.
    ///
    /// # Errors
    ///
    /// When the harness did not hand them over (the sampler is not a
    /// reference sampler).
    pub fn oracle(&self) -> Result<&'a Truth> {
        self.oracle.ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                "this sampler needs the exact posterior, which is only \
                 handed to reference samplers",
            )
        })
    }

    /// A decreasing time grid from `t_max` to `t_min` with `steps` steps,
    /// with every checkpoint time inserted (so that states can be recorded
    /// exactly at the checkpoints).
    ///
    /// # Errors
    ///
    /// When `steps` is zero or the range is empty.
    pub fn grid(
        &self,
        steps: usize,
        spacing: crate::schedule::Spacing,
    ) -> Result<Vec<f64>> {
        let mut grid =
            self.schedule.grid(steps, self.t_min, self.t_max, spacing)?;
        for &c in self.checkpoints {
            if c > self.t_min && c < self.t_max && !grid.contains(&c) {
                grid.push(c);
            }
        }
        grid.sort_by(|a, b| b.total_cmp(a));
        Ok(grid)
    }
}

/// What a sampler's recorded states mean, so the audit tests only what is
/// meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrajectoryMeaning {
    /// States are draws of the noised posterior `p_t(x_t | y)`.
    NoisedPosterior,
    /// States are estimates of `x0` (compared with `p(x0 | y)`).
    Denoised,
    /// States are not comparable with any exact law.
    Nothing,
}

/// The role of a sampler in the harness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// Exact up to Monte-Carlo error (sees the oracle); must pass.
    Reference,
    /// A published sampler.
    UnderTest,
    /// Deliberately broken, for the harness's power tests; must fail.
    Broken,
}

/// The particles recorded at one checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The time.
    pub t: f64,
    /// The states `x_t` (rows).
    pub states: DMatrix<f64>,
    /// The denoised estimates at `x_t`, when the sampler computed them.
    pub denoised: Option<DMatrix<f64>>,
}

/// The output of a sampler.
#[derive(Clone, Debug)]
pub struct Run {
    /// The final particles (rows).
    pub particles: DMatrix<f64>,
    /// The time the final particles live at: 0 for clean samples of
    /// `p(x0 | y)`, or `t_min` for states of `p_{t_min}(. | y)`.
    pub final_time: f64,
    /// Normalised log-weights of the final particles (SMC samplers).
    pub log_weights: Option<DVector<f64>>,
    /// The recorded states, in decreasing time.
    pub trajectory: Vec<Checkpoint>,
}

/// A posterior sampler.
pub trait Sampler: Send + Sync {
    /// The registry name (`dps`, `tmpd`, ...).
    fn name(&self) -> &'static str;

    /// The sampler's role.
    fn kind(&self) -> SamplerKind;

    /// What the recorded states mean.
    fn trajectory_meaning(&self) -> TrajectoryMeaning;

    /// The effective settings, defaults included, in a stable order.
    fn settings(&self) -> BTreeMap<String, String>;

    /// Draws `num_particles` particles.
    ///
    /// # Errors
    ///
    /// When the problem does not fit the sampler (for example a nonlinear
    /// operator for an SVD-based method).
    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run>;

    /// The sampler's approximation of the likelihood score
    /// `grad_x log p(y | x_t = x)` at the rows of `xs`, for samplers whose
    /// guidance is such a score (DPS, ΠGDM, TMPD, ...). The audit compares
    /// it with the exact likelihood score at exact draws of
    /// `p_t(x_t | y)`, which explains findings time by time without
    /// running the sampler. The default, `None`, means the sampler has no
    /// such field (projections, SMC, optimisation).
    ///
    /// # Errors
    ///
    /// As [`Sampler::run`].
    fn likelihood_score(
        &self,
        problem: &Problem<'_>,
        xs: &DMatrix<f64>,
        t: f64,
    ) -> Option<Result<DMatrix<f64>>> {
        let _ = (problem, xs, t);
        None
    }

    /// The sampler and its settings as `name:key=value,...`, the form that
    /// [`build`] reads back.
    fn spec(&self) -> String {
        crate::report::sampler_spec(self.name(), &self.settings())
    }
}

/// One entry of the sampler registry.
pub struct Entry {
    /// The registry name.
    pub name: &'static str,
    /// The role.
    pub kind: SamplerKind,
    /// One line: what it approximates and where it comes from.
    pub summary: &'static str,
    /// Builds the sampler from its settings.
    pub build: fn(&mut Settings) -> Result<Box<dyn Sampler>>,
}

/// Every built-in sampler: reference samplers first, then the samplers
/// under test, then the deliberately broken ones.
pub fn registry() -> Vec<Entry> {
    let mut entries = exact::entries();
    entries.extend(guidance::entries());
    entries.extend(spectral::entries());
    entries.extend(smc::entries());
    entries.extend(broken::entries());
    entries
}

/// Builds a sampler from `name[:key=value,...]`.
///
/// # Errors
///
/// When the name is unknown, a setting is unknown or malformed, or a value
/// is out of range. The message names the sampler, the setting and the
/// value.
pub fn build(spec: &str) -> Result<Box<dyn Sampler>> {
    let (name, rest) = match spec.split_once(':') {
        Some((name, rest)) => (name.trim(), rest),
        None => (spec.trim(), ""),
    };
    let entries = registry();
    let Some(entry) = entries.iter().find(|e| e.name == name) else {
        let names: Vec<&str> = entries.iter().map(|e| e.name).collect();
        return Err(Error::invalid(format!(
            "unknown sampler `{name}`; built-in samplers: {}",
            names.join(", ")
        )));
    };
    let mut settings = Settings::parse(name, rest)?;
    let sampler = (entry.build)(&mut settings)?;
    settings.finish()?;
    Ok(sampler)
}

/// `key=value` settings of one sampler, consumed by its builder; keys left
/// over are reported as unknown.
#[derive(Clone, Debug)]
pub struct Settings {
    sampler: String,
    values: BTreeMap<String, String>,
    known: Vec<&'static str>,
}

impl Settings {
    /// Parses `key=value,key=value`.
    ///
    /// # Errors
    ///
    /// When an item has no `=` or a key is repeated.
    pub fn parse(sampler: &str, text: &str) -> Result<Settings> {
        let mut values = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(Error::invalid(format!(
                    "sampler {sampler}: setting `{item}` must be key=value"
                )));
            };
            let key = key.trim().to_string();
            ensure!(
                !values.contains_key(&key),
                "sampler {sampler}: setting {key} is given twice"
            );
            values.insert(key, value.trim().to_string());
        }
        Ok(Settings { sampler: sampler.to_string(), values, known: Vec::new() })
    }

    fn invalid(&self, key: &str, value: &str, why: &str) -> Error {
        Error::invalid(format!(
            "sampler {}: setting {key} {why}, got {value}",
            self.sampler
        ))
    }

    /// A number, with a default, that must satisfy `valid` (described by
    /// `requirement`, e.g. "must be positive").
    ///
    /// # Errors
    ///
    /// When the value does not parse or fails the requirement.
    pub fn f64(
        &mut self,
        key: &'static str,
        default: f64,
        requirement: &str,
        valid: impl Fn(f64) -> bool,
    ) -> Result<f64> {
        self.known.push(key);
        let Some(text) = self.values.remove(key) else {
            return Ok(default);
        };
        let value: f64 = text
            .parse()
            .map_err(|_| self.invalid(key, &text, "must be a number"))?;
        if !value.is_finite() || !valid(value) {
            return Err(self.invalid(key, &text, requirement));
        }
        Ok(value)
    }

    /// A positive whole number, with a default.
    ///
    /// # Errors
    ///
    /// When the value does not parse or is zero.
    pub fn count(
        &mut self,
        key: &'static str,
        default: usize,
    ) -> Result<usize> {
        self.known.push(key);
        let Some(text) = self.values.remove(key) else {
            return Ok(default);
        };
        match text.parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => {
                Err(self.invalid(key, &text, "must be a positive whole number"))
            }
        }
    }

    /// One of a fixed set of words, with a default.
    ///
    /// # Errors
    ///
    /// When the value is not one of `choices`.
    pub fn choice(
        &mut self,
        key: &'static str,
        default: &'static str,
        choices: &[&'static str],
    ) -> Result<&'static str> {
        self.known.push(key);
        let Some(text) = self.values.remove(key) else {
            return Ok(default);
        };
        choices.iter().copied().find(|c| *c == text).ok_or_else(|| {
            self.invalid(
                key,
                &text,
                &format!("must be one of {}", choices.join(", ")),
            )
        })
    }

    /// Reports settings that no builder asked for.
    ///
    /// # Errors
    ///
    /// When a setting is unknown.
    pub fn finish(self) -> Result<()> {
        if let Some(key) = self.values.keys().next() {
            let known = if self.known.is_empty() {
                "it takes no settings".to_string()
            } else {
                format!("known: {}", self.known.join(", "))
            };
            return Err(Error::invalid(format!(
                "sampler {}: unknown setting `{key}`; {known}",
                self.sampler
            )));
        }
        Ok(())
    }
}

/// Standard normal noise for `n` particles in `d` dimensions at one step,
/// drawn in fixed chunks from streams of `seed` keyed by `step`, so that it
/// does not depend on the thread count.
pub fn gaussian_noise(
    seed: u64,
    step: u64,
    n: usize,
    d: usize,
) -> DMatrix<f64> {
    let chunks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let rows = CHUNK.min(n - c * CHUNK);
            let stream = (step << 24) | c as u64;
            let mut rng = rng::stream(seed, Purpose::Sampler, stream);
            // Row by row, so that a particle's noise does not depend on
            // how many particles share its chunk.
            let mut out = DMatrix::zeros(rows, d);
            for i in 0..rows {
                for j in 0..d {
                    out[(i, j)] = StandardNormal.sample(&mut rng);
                }
            }
            out
        })
        .collect();
    mixture::stack_rows(&chunks, d)
}

/// Records states at the checkpoint times while a sampler walks its grid.
#[derive(Debug, Default)]
pub struct Recorder {
    checkpoints: Vec<f64>,
    trajectory: Vec<Checkpoint>,
}

impl Recorder {
    /// A recorder for the problem's checkpoints.
    pub fn new(problem: &Problem<'_>) -> Recorder {
        Recorder {
            checkpoints: problem.checkpoints.to_vec(),
            trajectory: Vec::new(),
        }
    }

    /// Records `states` when `t` is one of the checkpoints.
    pub fn offer(
        &mut self,
        t: f64,
        states: &DMatrix<f64>,
        denoised: Option<&DMatrix<f64>>,
    ) {
        if self.checkpoints.contains(&t)
            && !self.trajectory.iter().any(|c| c.t == t)
        {
            self.trajectory.push(Checkpoint {
                t,
                states: states.clone(),
                denoised: denoised.cloned(),
            });
        }
    }

    /// The recorded trajectory, in decreasing time.
    pub fn finish(mut self) -> Vec<Checkpoint> {
        self.trajectory.sort_by(|a, b| b.t.total_cmp(&a.t));
        self.trajectory
    }
}
