//! The exact posterior of a case at every time of the diffusion.
//!
//! For a mixture prior `p0`, a measurement `y = A(x0) + n` with
//! `n ~ N(0, s^2 I)`, and the noising `x_t = alpha_t x0 + sigma_t eps`:
//!
//! ```text
//! p(x0 | y)        = condition(p0, y)                        (a mixture)
//! p_t(x_t | y)     = condition(p0, y).noised(alpha_t, sigma_t)
//! p(x0 | x_t)      = Backward(p0, t)(x_t)
//! p(x0 | x_t, y)   = Backward(condition(p0, y), t)(x_t)
//! log p(y | x_t)   = LSE_k [ log w_k(x_t) + log N(y; A mu_k|t, A S_k A^T + s^2 I) ]
//!                  = log-evidence of y under p(x0 | x_t)
//! grad log p(y|x_t) = (alpha_t / sigma_t^2) (E[x0 | x_t, y] - E[x0 | x_t])
//! ```
//!
//! `y` is independent of `x_t` given `x0`, which is why the noised
//! posterior keeps the posterior weights at every `t`. The two ways of
//! computing the weights of `p(x0 | x_t, y)` (through the noised posterior,
//! or by conditioning the backward posterior on `y`) agree; the tests check
//! it, together with Bayes' rule
//! `log p_t(x|y) = log p_t(x) + log p(y|x_t) - log p(y)`.
//!
//! The exact reverse transition (the DDIM family of Song, Meng & Ermon,
//! ICLR 2021, with any `eta`) draws `x0 ~ p(x0 | x_t, y)` and then
//! `x_s ~ q_eta(x_s | x_t, x0)`:
//!
//! ```text
//! var~ = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,  sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2
//! c = eta sqrt(var~),  a = sqrt(sigma_s^2 - c^2) / sigma_t,  b = alpha_s - alpha_t a
//! x_s = a x_t + b x0 + c z
//! ```
//!
//! Because the DDIM family preserves `q(x_s | x0)`, this maps exact draws of
//! `p_t(. | y)` to exact draws of `p_s(. | y)` for any pair `s < t`: a
//! sampler with no discretisation error.

use nalgebra::{DMatrix, DVector, DVectorView};
use rayon::prelude::*;

use crate::case::Case;
use crate::error::{Error, Result, ensure};
use crate::forward::{ForwardModel, Operator};
use crate::mixture::{self, Backward, Conditioned, Density, Mixture};
use crate::rng::{self, CHUNK, Purpose};
use crate::schedule::Schedule;

/// The exact posterior of a case: `p(x0 | y)` and everything derived from
/// it at any diffusion time.
#[derive(Clone, Debug)]
pub struct Truth {
    prior: Mixture,
    forward: ForwardModel,
    observation: DVector<f64>,
    schedule: Schedule,
    posterior: Mixture,
    log_evidence: f64,
}

impl Truth {
    /// Computes the exact posterior of a case.
    ///
    /// # Errors
    ///
    /// When the observation is impossible under the prior, or the
    /// measurement is nonlinear and the prior is not a set of atoms.
    pub fn new(case: &Case) -> Result<Truth> {
        Truth::from_parts(
            case.prior.clone(),
            case.forward.clone(),
            case.observation.clone(),
            case.schedule.clone(),
        )
    }

    /// Computes the exact posterior from its parts.
    ///
    /// # Errors
    ///
    /// As [`Truth::new`].
    pub fn from_parts(
        prior: Mixture,
        forward: ForwardModel,
        observation: DVector<f64>,
        schedule: Schedule,
    ) -> Result<Truth> {
        let Conditioned { mixture: posterior, log_evidence } =
            condition(&prior, &forward, &observation)?;
        Ok(Truth {
            prior,
            forward,
            observation,
            schedule,
            posterior,
            log_evidence,
        })
    }

    /// The prior `p0`.
    pub fn prior(&self) -> &Mixture {
        &self.prior
    }

    /// The forward model.
    pub fn forward(&self) -> &ForwardModel {
        &self.forward
    }

    /// The observation `y`.
    pub fn observation(&self) -> &DVector<f64> {
        &self.observation
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The exact posterior `p(x0 | y)`.
    pub fn posterior(&self) -> &Mixture {
        &self.posterior
    }

    /// `log p(y)`.
    pub fn log_evidence(&self) -> f64 {
        self.log_evidence
    }

    /// The noised posterior `p_t(x_t | y)` as a mixture.
    pub fn noised_posterior(&self, t: f64) -> Mixture {
        let (alpha, sigma) = self.schedule.alpha_sigma(t);
        self.posterior.noised(alpha, sigma)
    }

    /// Everything exact at time `t`, prepared for evaluation at many
    /// points.
    ///
    /// # Errors
    ///
    /// When `t` gives `alpha = 0` or `sigma = 0` (the backward posterior is
    /// then not defined), or `t` is not finite.
    pub fn at(&self, t: f64) -> Result<TruthAt<'_>> {
        ensure!(t.is_finite(), "time must be finite, got {t}");
        let (alpha, sigma) = self.schedule.alpha_sigma(t);
        let context = |e: Error| e.context(format!("at t = {t}"));
        let prior =
            Backward::new(&self.prior, alpha, sigma).map_err(context)?;
        let posterior =
            Backward::new(&self.posterior, alpha, sigma).map_err(context)?;
        Ok(TruthAt { truth: self, t, alpha, sigma, prior, posterior })
    }

    /// `n` exact draws of `p_t(x_t | y)` (rows), from the seed's sample
    /// stream.
    pub fn sample_at(&self, t: f64, n: usize, seed: u64) -> DMatrix<f64> {
        self.noised_posterior(t).sample(n, seed)
    }

    /// Runs the exact reverse transition along a decreasing time grid,
    /// starting from exact draws of `p_{grid[0]}(. | y)`; returns the
    /// particles at every time of the grid (the first entry is the start).
    ///
    /// # Errors
    ///
    /// When the grid is not strictly decreasing, has fewer than two times,
    /// or `eta` is outside `[0, 1]`.
    pub fn exact_reverse_run(
        &self,
        grid: &[f64],
        num_particles: usize,
        eta: f64,
        seed: u64,
    ) -> Result<Vec<DMatrix<f64>>> {
        ensure!(grid.len() >= 2, "the time grid needs at least two times");
        for (i, pair) in grid.windows(2).enumerate() {
            ensure!(
                pair[1] < pair[0],
                "the time grid must decrease: grid[{}] = {} is not below \
                 grid[{i}] = {}",
                i + 1,
                pair[1],
                pair[0]
            );
        }
        let mut states = vec![self.sample_at(grid[0], num_particles, seed)];
        for (step, pair) in grid.windows(2).enumerate() {
            let at = self.at(pair[0])?;
            let next = at.reverse_step(
                states.last().expect("at least the start"),
                pair[1],
                eta,
                seed,
                step as u64,
            )?;
            states.push(next);
        }
        Ok(states)
    }
}

/// The exact quantities at one time `t`: densities, scores, denoisers and
/// the likelihood `p(y | x_t)`.
#[derive(Clone, Debug)]
pub struct TruthAt<'a> {
    truth: &'a Truth,
    t: f64,
    alpha: f64,
    sigma: f64,
    prior: Backward<'a>,
    posterior: Backward<'a>,
}

impl TruthAt<'_> {
    /// The time.
    pub fn t(&self) -> f64 {
        self.t
    }

    /// `alpha_t`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// `sigma_t`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The density of the noised posterior `p_t(. | y)`.
    pub fn density(&self) -> &Density {
        self.posterior.marginal()
    }

    /// `log p_t(x | y)`.
    pub fn log_density(&self, x: DVectorView<f64>) -> f64 {
        self.posterior.log_marginal(x)
    }

    /// The conditional score `grad log p_t(x | y)`.
    pub fn score(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.posterior.score(x)
    }

    /// `log p_t(x)` of the noised prior.
    pub fn prior_log_density(&self, x: DVectorView<f64>) -> f64 {
        self.prior.log_marginal(x)
    }

    /// The prior score `grad log p_t(x)`.
    pub fn prior_score(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.prior.score(x)
    }

    /// The prior's backward posterior (the exact "network").
    pub fn prior_backward(&self) -> &Backward<'_> {
        &self.prior
    }

    /// The posterior's backward law `p(x0 | x_t, y)`.
    pub fn posterior_backward(&self) -> &Backward<'_> {
        &self.posterior
    }

    /// The prior denoiser `E[x0 | x_t = x]`.
    pub fn denoise(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.prior.denoise(x)
    }

    /// The conditional denoiser `E[x0 | x_t = x, y]`.
    pub fn conditional_denoise(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.posterior.denoise(x)
    }

    /// `p(x0 | x_t = x, y)` as a mixture.
    pub fn conditional_backward(&self, x: DVectorView<f64>) -> Mixture {
        self.posterior.posterior(x)
    }

    /// `log p(y | x_t = x)`, computed as the evidence of `y` under the
    /// backward posterior `p(x0 | x_t = x)` (not through Bayes' rule, so
    /// that Bayes' rule can be checked against it).
    ///
    /// # Errors
    ///
    /// When the observation has zero likelihood under every component.
    pub fn log_likelihood(&self, x: DVectorView<f64>) -> Result<f64> {
        let backward = self.prior.posterior(x);
        let truth = self.truth;
        Ok(condition(&backward, &truth.forward, &truth.observation)?
            .log_evidence)
    }

    /// The weights of `p(x0 | x_t = x, y)` computed the second way: by
    /// conditioning the prior's backward posterior on `y`. They equal the
    /// responsibilities of the noised posterior (checked in the tests).
    ///
    /// # Errors
    ///
    /// As [`TruthAt::log_likelihood`].
    pub fn conditional_log_weights_by_conditioning(
        &self,
        x: DVectorView<f64>,
    ) -> Result<DVector<f64>> {
        let backward = self.prior.posterior(x);
        let truth = self.truth;
        let conditioned =
            condition(&backward, &truth.forward, &truth.observation)?;
        Ok(conditioned.mixture.log_weights().clone())
    }

    /// The exact likelihood score
    /// `grad log p(y | x_t) = (alpha / sigma^2) (E[x0|x_t,y] - E[x0|x_t])`.
    ///
    /// For atoms the difference is formed from the weights,
    /// `sum_k (w^_k - w_k) x_k`, which avoids subtracting two large,
    /// nearly equal scores when `sigma` is small.
    pub fn likelihood_score(&self, x: DVectorView<f64>) -> DVector<f64> {
        let factor = self.alpha / (self.sigma * self.sigma);
        if self.truth.prior.is_atomic() {
            let prior_w = self.prior.marginal().log_responsibilities(x);
            let post_w = self.posterior.marginal().log_responsibilities(x);
            let delta = post_w.map(f64::exp) - prior_w.map(f64::exp);
            return self.truth.prior.means().tr_mul(&delta) * factor;
        }
        (self.posterior.denoise(x) - self.prior.denoise(x)) * factor
    }

    /// `log p_t(x | y)` for every row.
    pub fn log_density_batch(&self, xs: &DMatrix<f64>) -> DVector<f64> {
        self.density().log_density_batch(xs)
    }

    /// One exact reverse transition from this time `t` to `s < t` for every
    /// row of `xs` (see the module docs), with `eta` in `[0, 1]`; `eta = 1`
    /// is the DDPM ancestral step, `eta = 0` the deterministic DDIM step.
    ///
    /// Particles are handled in fixed chunks; chunk `i` of step `step`
    /// draws from its own stream of `seed`, so the result does not depend
    /// on the thread count.
    ///
    /// # Errors
    ///
    /// When `s >= t`, `eta` is outside `[0, 1]`, or shapes disagree.
    pub fn reverse_step(
        &self,
        xs: &DMatrix<f64>,
        s: f64,
        eta: f64,
        seed: u64,
        step: u64,
    ) -> Result<DMatrix<f64>> {
        ensure!(s < self.t, "target time {s} must be below {}", self.t);
        ensure!(
            (0.0..=1.0).contains(&eta),
            "eta must lie in [0, 1], got {eta}"
        );
        let d = self.truth.prior.dim();
        ensure!(
            xs.ncols() == d,
            "particles have {} coordinates but the case has {d}",
            xs.ncols()
        );
        let (a, b, c) = ddim_coefficients(
            (self.alpha, self.sigma),
            self.truth.schedule.alpha_sigma(s),
            eta,
        );
        let chunks: Vec<DMatrix<f64>> = (0..xs.nrows().div_ceil(CHUNK))
            .into_par_iter()
            .map(|chunk| {
                let start = chunk * CHUNK;
                let rows = CHUNK.min(xs.nrows() - start);
                let stream = (step << 24) | chunk as u64;
                let mut rng = rng::stream(seed, Purpose::Transition, stream);
                let mut out = DMatrix::zeros(rows, d);
                for i in 0..rows {
                    let x = xs.row(start + i).transpose();
                    let x0 =
                        self.posterior.sample_posterior(x.as_view(), &mut rng);
                    let mut next = x * a + x0 * b;
                    if c > 0.0 {
                        next += DVector::from_fn(d, |_, _| {
                            rand_distr::Distribution::<f64>::sample(
                                &rand_distr::StandardNormal,
                                &mut rng,
                            )
                        }) * c;
                    }
                    out.set_row(i, &next.transpose());
                }
                out
            })
            .collect();
        Ok(mixture::stack_rows(&chunks, d))
    }
}

/// The coefficients `(a, b, c)` of the DDIM(eta) step
/// `x_s = a x_t + b x0 + c z` from `(alpha_t, sigma_t)` to
/// `(alpha_s, sigma_s)`.
pub fn ddim_coefficients(
    (alpha_t, sigma_t): (f64, f64),
    (alpha_s, sigma_s): (f64, f64),
    eta: f64,
) -> (f64, f64, f64) {
    let ratio = alpha_t / alpha_s;
    let bridge =
        (sigma_t * sigma_t - ratio * ratio * sigma_s * sigma_s).max(0.0);
    let var = bridge * sigma_s * sigma_s / (sigma_t * sigma_t);
    let c = eta * var.sqrt();
    let a = (sigma_s * sigma_s - c * c).max(0.0).sqrt() / sigma_t;
    let b = alpha_s - alpha_t * a;
    (a, b, c)
}

/// Bayes' rule for a mixture under a case's measurement: exact for any
/// linear operator and Gaussian components, and for any measurement
/// (linear or not) when the mixture is a set of atoms.
///
/// # Errors
///
/// When the measurement is nonlinear and the mixture has non-atomic
/// components, or the observation is impossible.
pub fn condition(
    mixture: &Mixture,
    forward: &ForwardModel,
    y: &DVector<f64>,
) -> Result<Conditioned> {
    let d = mixture.dim();
    ensure!(
        forward.input_dim() == d,
        "the forward model takes dimension {} but the prior has {d}",
        forward.input_dim()
    );
    ensure!(
        y.len() == forward.output_dim(),
        "observation has length {} but the forward model gives {}",
        y.len(),
        forward.output_dim()
    );
    let noise_std = forward.noise_std();
    if mixture.is_atomic() {
        let log_lik =
            forward.log_likelihood_batch(y.as_view(), mixture.means());
        return mixture.reweight(&log_lik);
    }
    let keep: Option<Vec<usize>> = match forward.operator() {
        Operator::Identity { dim } => Some((0..*dim).collect()),
        Operator::Mask { keep, .. } => Some(keep.clone()),
        Operator::Subsample { dim, stride, offset } => {
            Some((*offset..*dim).step_by(*stride).collect())
        }
        _ => None,
    };
    let shifted = match forward.bias() {
        Some(b) => y - b,
        None => y.clone(),
    };
    if let Some(keep) = keep {
        return mixture.condition_on_coordinates(&keep, noise_std, &shifted);
    }
    let Some(matrix) = forward.matrix() else {
        return Err(Error::invalid(format!(
            "forward {}: a nonlinear forward model needs a prior of atoms \
             (an empirical prior), got {} components of kind {}; its \
             posterior is not a Gaussian mixture otherwise",
            match forward.operator() {
                Operator::Nonlinear(map) => map.name(),
                _ => "operator",
            },
            mixture.num_components(),
            mixture.covariances().kind_name()
        )));
    };
    mixture.condition(&matrix, None, noise_std, &shifted)
}
