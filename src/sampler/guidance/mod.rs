//! Guidance-based samplers: a prior score plus an approximation of the
//! likelihood score `grad log p(y | x_t)`, in one common reverse sampler.
//!
//! Every method here replaces the intractable `p(y | x_t)` by something it
//! can differentiate, and differs from the others only in that
//! approximation (notation: `D = D(x_t)`, `J = dD/dx_t`, `r = y - A(D)`,
//! `C_t = (sigma_t^2/alpha_t) J`, the covariance of `x0 | x_t` by
//! second-order Tweedie):
//!
//! - `dps`: `N(y; A D, sigma_y^2 I)`, or the residual-normalised step;
//!   the denoiser and one VJP per step.
//! - `pigdm`: `N(y; A D, r_t^2 A A^T + sigma_y^2 I)`; the denoiser and
//!   one VJP.
//! - `tmpd`: `N(y; A D, A C_t A^T + sigma_y^2 I)`, full or diagonal; `m`
//!   VJPs.
//! - `dmps`: `N(y; A x_t/alpha, sigma_y^2 I + sigmabar_t^2 A A^T)`; the
//!   denoiser only.
//! - `score-ald`: flat prior, `N(y; A x, (sigma_y^2 + gamma^2) I)`; the
//!   denoiser only.
//!
//! # The common driver (the harness pattern)
//!
//! Following the code of the FSR paper (Burns & Fridovich-Keil), the
//! method's likelihood score `g` is added to the prior score and the sum
//! drives one standard reverse sampler, so that only the likelihood
//! approximation differs between methods. The driver is the DDIM(eta)
//! step of [`crate::truth`] (eta = 1 is the DDPM ancestral step) with the
//! conditional score plugged in through the equivalent denoiser:
//!
//! ```text
//! x_T ~ N(0, (alpha_T^2 + sigma_T^2) I)         (N(0, I) for VP schedules)
//! grad log p_t(x | y) ~ (alpha_t D - x)/sigma_t^2 + g
//!                     = (alpha_t D_y - x)/sigma_t^2
//! D_y = D + (sigma_t^2/alpha_t) g
//! x_s = a x_t + b D_y + c z + shift
//! (a, b, c) = ddim_coefficients(t, s, eta)
//! ```
//!
//! The settings common to these samplers: `steps` (published default per
//! method), `eta` (default 1, ancestral) and `spacing` of the grid
//! (`schedule`: the schedule's default, uniform in `t` for VP; or
//! `uniform`, `quadratic`, `logsnr`). On a uniform grid the ancestral step
//! under-disperses near `t_min` even with the exact score (about 5% in
//! variance at 500 steps on `fsr-gaussian-1d`); a `logsnr` grid removes
//! most of that discretisation error.
//!
//! `shift` is zero except for the as-published update rules that add a
//! step after the transition (`dps:form=zeta`, `pigdm:update=published`).
//! The grid is the schedule's default spacing from `t_max` to `t_min` with
//! the checkpoints inserted; the recorded states are the `x_t` of the
//! chain, so the trajectory means draws of `p_t(x_t | y)` as far as the
//! method is right.
//!
//! Vector-Jacobian products come from [`Denoiser::denoise_with_vjp`]. As
//! that interface takes the cotangent up front, methods whose cotangent
//! depends on `D` (DPS, ΠGDM) call the denoiser twice per step: once for
//! `D`, once for `J^T v`. TMPD needs no separate call: its cotangents are
//! the rows of `A`, so one call on the particles repeated `m` times gives
//! both `D` and `A J`.
//!
//! All these methods need a linear forward model (they use `A^T` or the
//! SVD); a nonlinear map is declined with an error.
//!
//! [`Denoiser::denoise_with_vjp`]: super::Denoiser::denoise_with_vjp

use std::collections::BTreeMap;
use std::fmt;

use nalgebra::DMatrix;

use super::{
    Entry, Problem, Recorder, Run, Sampler, SamplerKind, Settings,
    TrajectoryMeaning, gaussian_noise,
};
use crate::error::Result;
use crate::forward::{Operator, Svd};
use crate::sampler::declined;
use crate::schedule::Spacing;
use crate::truth::ddim_coefficients;

mod dmps;
mod dps;
mod langevin;
mod pigdm;
mod tmpd;

/// The noise stream of the start `x_T`, apart from every step's streams
/// (`4 * step + k`).
const START_STREAM: u64 = 1 << 38;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "dps",
            kind: SamplerKind::UnderTest,
            summary: "DPS (Chung et al. 2023): p(y|x_t) ~ N(y; A D, \
                      sigma_y^2); published zeta step (official code, \
                      per-particle norm) or the sigma form in the driver",
            build: |s| {
                Ok(Box::new(Guided::new(dps::Dps::from_settings(s)?, s)?))
            },
        },
        Entry {
            name: "pigdm",
            kind: SamplerKind::UnderTest,
            summary: "PiGDM (Song et al. 2023): p(y|x_t) ~ N(y; A D, r_t^2 \
                      AA^T + sigma_y^2), r_t^2 of a unit-variance (vp) or \
                      flat prior",
            build: |s| {
                Ok(Box::new(Guided::new(pigdm::Pigdm::from_settings(s)?, s)?))
            },
        },
        Entry {
            name: "tmpd",
            kind: SamplerKind::UnderTest,
            summary: "TMPD (Boys et al. 2024): p(y|x_t) ~ N(y; A D, A C_t \
                      A^T + sigma_y^2), C_t = sigma^2/alpha J from m VJPs; \
                      full or diagonal",
            build: |s| {
                Ok(Box::new(Guided::new(tmpd::Tmpd::from_settings(s)?, s)?))
            },
        },
        Entry {
            name: "dmps",
            kind: SamplerKind::UnderTest,
            summary: "DMPS (Meng & Kabashima 2022): flat-prior likelihood \
                      N(y; A x_t/alpha, sigma_y^2 + sigmabar^2 AA^T), no \
                      Jacobian",
            build: |s| {
                Ok(Box::new(Guided::new(dmps::Dmps::from_settings(s)?, s)?))
            },
        },
        Entry {
            name: "score-ald",
            kind: SamplerKind::UnderTest,
            summary: "annealed Langevin (Jalal et al. 2021) on VE-equivalent \
                      levels with A^T (y - A x)/(sigma_y^2 + gamma^2)",
            build: |s| Ok(Box::new(langevin::ScoreAld::from_settings(s)?)),
        },
    ]
}

/// The times and scales of one step of the driver, from `t` to `s < t`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    /// The current time.
    pub t: f64,
    /// `alpha_t`.
    pub alpha: f64,
    /// `sigma_t`.
    pub sigma: f64,
    /// `alpha_s` of the next time.
    pub alpha_next: f64,
}

/// What a method contributes at one step.
pub(super) struct Guide {
    /// `D(x_t)` for every particle (rows).
    pub denoised: DMatrix<f64>,
    /// The method's approximation of `grad log p(y | x_t)`, added to the
    /// prior score.
    pub likelihood_score: Option<DMatrix<f64>>,
    /// A displacement added after the transition (as-published rules).
    pub shift: Option<DMatrix<f64>>,
}

/// A likelihood approximation that plugs into the common driver.
pub(super) trait Method: Send + Sync + fmt::Debug {
    /// The registry name.
    fn name(&self) -> &'static str;

    /// The method's own settings (the driver adds `steps` and `eta`).
    fn settings(&self, out: &mut BTreeMap<String, String>);

    /// The published default number of steps.
    fn default_steps(&self) -> usize;

    /// The method's guidance at the particles `xs` (rows) at one step.
    fn guide(
        &self,
        problem: &Problem<'_>,
        xs: &DMatrix<f64>,
        step: &Step,
    ) -> Result<Guide>;
}

/// A method run through the common driver.
#[derive(Clone, Debug)]
pub(super) struct Guided<M> {
    method: M,
    steps: usize,
    eta: f64,
    spacing: &'static str,
}

impl<M: Method> Guided<M> {
    fn new(method: M, s: &mut Settings) -> Result<Guided<M>> {
        let steps = s.count("steps", method.default_steps())?;
        let eta = s.f64("eta", 1.0, "must lie in [0, 1]", |v| {
            (0.0..=1.0).contains(&v)
        })?;
        let spacing = s.choice(
            "spacing",
            "schedule",
            &["schedule", "uniform", "quadratic", "logsnr"],
        )?;
        Ok(Guided { method, steps, eta, spacing })
    }

    /// The time grid: the schedule's default spacing, or the one asked.
    fn grid(&self, problem: &Problem<'_>) -> Result<Vec<f64>> {
        let spacing = match self.spacing {
            "uniform" => Spacing::Uniform,
            "quadratic" => Spacing::Quadratic,
            "logsnr" => Spacing::LogSnr,
            _ => problem.schedule.default_spacing(),
        };
        problem.grid(self.steps, spacing)
    }
}

impl<M: Method> Sampler for Guided<M> {
    fn name(&self) -> &'static str {
        self.method.name()
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::UnderTest
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::from([
            ("steps".to_string(), self.steps.to_string()),
            ("eta".to_string(), self.eta.to_string()),
            ("spacing".to_string(), self.spacing.to_string()),
        ]);
        self.method.settings(&mut out);
        out
    }

    /// The method's likelihood score at `t`; for as-published rules that
    /// add a displacement after the step, the score that would move the
    /// particles as far through the driver's step to the next grid time.
    fn likelihood_score(
        &self,
        problem: &Problem<'_>,
        xs: &DMatrix<f64>,
        t: f64,
    ) -> Option<Result<DMatrix<f64>>> {
        let score = || -> Result<DMatrix<f64>> {
            require_linear(problem)?;
            let schedule = problem.schedule;
            let next = self
                .grid(problem)?
                .into_iter()
                .filter(|&g| g < t)
                .fold(problem.t_min.min(t * 0.5), f64::max);
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let next_scales = schedule.alpha_sigma(next);
            let step = Step { t, alpha, sigma, alpha_next: next_scales.0 };
            let guide = self.method.guide(problem, xs, &step)?;
            let mut score = guide
                .likelihood_score
                .unwrap_or_else(|| DMatrix::zeros(xs.nrows(), xs.ncols()));
            if let Some(shift) = guide.shift {
                let (_, b, _) =
                    ddim_coefficients((alpha, sigma), next_scales, self.eta);
                score += shift * (alpha / (b * sigma * sigma));
            }
            Ok(score)
        };
        Some(score())
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        require_linear(problem)?;
        let (n, d) = (num_particles, problem.dim());
        let schedule = problem.schedule;
        let grid = self.grid(problem)?;

        // Start from the noised law of unit-variance data, N(0, I) for VP.
        let (alpha_max, sigma_max) = schedule.alpha_sigma(grid[0]);
        let spread = alpha_max.hypot(sigma_max);
        let mut x = gaussian_noise(seed, START_STREAM, n, d) * spread;
        let mut recorder = Recorder::new(problem);
        recorder.offer(grid[0], &x, None);

        for (index, pair) in grid.windows(2).enumerate() {
            let (t, s) = (pair[0], pair[1]);
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let next_scales = schedule.alpha_sigma(s);
            let step = Step { t, alpha, sigma, alpha_next: next_scales.0 };
            let guide = self.method.guide(problem, &x, &step)?;

            // The conditional score enters through D_y = D + sigma^2/alpha g.
            let mut target = guide.denoised;
            if let Some(score) = guide.likelihood_score {
                target += score * (sigma * sigma / alpha);
            }
            let (a, b, c) =
                ddim_coefficients((alpha, sigma), next_scales, self.eta);
            let mut next = x * a + target * b;
            if c > 0.0 {
                next += gaussian_noise(seed, 4 * index as u64, n, d) * c;
            }
            if let Some(shift) = guide.shift {
                next += shift;
            }
            x = next;
            recorder.offer(s, &x, None);
        }
        Ok(Run {
            particles: x,
            final_time: *grid.last().expect("a grid has two times"),
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}

/// Declines nonlinear forward models, with a one-line reason.
fn require_linear(problem: &Problem<'_>) -> Result<()> {
    if let Operator::Nonlinear(map) = problem.forward.operator() {
        return Err(declined(format!(
            "needs a linear forward model (it uses A^T), got the nonlinear \
             map {}",
            map.name()
        )));
    }
    Ok(())
}

/// The residuals `y - A(x_i)` (bias included) for every row `x_i`, as an
/// `n x m` matrix.
fn residuals(problem: &Problem<'_>, xs: &DMatrix<f64>) -> DMatrix<f64> {
    let mut r = problem.forward.apply_batch(xs);
    for mut row in r.row_iter_mut() {
        row.zip_apply(&problem.observation.transpose(), |p, y| *p = y - *p);
    }
    r
}

/// The vector-Jacobian products `v_i^T dD/dx (x_i)` (rows).
fn vjp(
    problem: &Problem<'_>,
    xs: &DMatrix<f64>,
    t: f64,
    vs: &DMatrix<f64>,
) -> Result<DMatrix<f64>> {
    let (_, products) = problem.denoiser.denoise_with_vjp(xs, t, vs)?;
    products.ok_or_else(|| {
        declined(
            "needs vector-Jacobian products of the denoiser, which it does \
             not provide",
        )
    })
}

/// The SVD of the forward model's linear part.
fn svd<'a>(problem: &Problem<'a>) -> Result<&'a Svd> {
    problem.forward.svd().ok_or_else(|| declined("needs the SVD of A"))
}

/// `A^T h(A A^T) r_i` for every row `r_i` of `rs` through the thin SVD
/// `A = U diag(s) V^T`, i.e. the rows of `V diag(s_j h(s_j^2)) U^T r_i`.
///
/// Exact for any `A`: the part of `r_i` outside the range of `U` is
/// annihilated by `A^T` whatever `h` does to it.
fn spectral_adjoint(
    svd: &Svd,
    rs: &DMatrix<f64>,
    h: impl Fn(f64) -> f64,
) -> DMatrix<f64> {
    let mut coefficients = rs * &svd.u;
    for (j, mut column) in coefficients.column_iter_mut().enumerate() {
        let s = svd.singular_values[j];
        column *= s * h(s * s);
    }
    coefficients * svd.v.transpose()
}
