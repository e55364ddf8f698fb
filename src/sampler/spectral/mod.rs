//! Samplers that use the singular value decomposition of a linear `A`, a
//! proximal step, a variational fit or Markov chains inside each step:
//! DDRM, DDNM+, DiffPIR, RED-diff and DAPS.
//!
//! Each method was written for one schedule (DDPM's VP for the first four,
//! EDM's VE for DAPS). Here every one is mapped onto the case's schedule
//! `x_t = alpha_t x0 + sigma_t eps`: the VP quantities `sqrt(abar_t)` and
//! `sqrt(1 - abar_t)` become `alpha_t` and `sigma_t`, and where a method
//! uses a VE-equivalent noise level it is `ve_sigma(t) = sigma_t / alpha_t`,
//! with `x_ve = x_t / alpha_t` and [`Schedule::time_for_ve_sigma`] to find
//! the time of a given level. The DDPM time grids (every `T/N`-th step,
//! DiffPIR's "quad" skip) are mapped onto `[t_min, t_max]` through
//! `t = index / T`; the uniform ones use the schedule's default spacing,
//! which is uniform in `t` except for EDM (Karras).
//!
//! All five need a linear forward model: DDRM, DDNM+ and DiffPIR work in
//! its SVD, RED-diff and DAPS need `A^T` for the data gradient. They decline
//! a nonlinear one with a one-line error. A bias `b` in `y = A x0 + b + n`
//! is removed from `y` first.
//!
//! [`Schedule::time_for_ve_sigma`]:
//!     crate::schedule::Schedule::time_for_ve_sigma

use nalgebra::{DMatrix, DVector};

use super::{Entry, Problem, SamplerKind};
use crate::error::{Error, Result};
use crate::forward::Operator;
use crate::sampler::declined;

mod daps;
mod ddnm;
mod ddrm;
mod diffpir;
mod reddiff;

pub use daps::Daps;
pub use ddnm::Ddnm;
pub use ddrm::Ddrm;
pub use diffpir::DiffPir;
pub use reddiff::RedDiff;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "ddrm",
            kind: SamplerKind::UnderTest,
            summary: "DDRM (Kawar et al. 2022): variational steps in the \
                      SVD of A, eta 0.85, eta_b 1, 20 steps",
            build: |s| Ok(Box::new(Ddrm::from_settings(s)?)),
        },
        Entry {
            name: "ddnm",
            kind: SamplerKind::UnderTest,
            summary: "DDNM+ (Wang et al. 2023): range-null projection with \
                      noise-aware scaling, eta 0.85, 100 steps",
            build: |s| Ok(Box::new(Ddnm::from_settings(s)?)),
        },
        Entry {
            name: "diffpir",
            kind: SamplerKind::UnderTest,
            summary: "DiffPIR (Zhu et al. 2023): proximal data step on the \
                      denoised estimate, lambda 1, zeta 0.1, 100 steps",
            build: |s| Ok(Box::new(DiffPir::from_settings(s)?)),
        },
        Entry {
            name: "red-diff",
            kind: SamplerKind::UnderTest,
            summary: "RED-diff (Mardani et al. 2024): Adam fit of a point \
                      estimate, lr 0.1, lambda 0.25, linear weighting",
            build: |s| Ok(Box::new(RedDiff::from_settings(s)?)),
        },
        Entry {
            name: "daps",
            kind: SamplerKind::UnderTest,
            summary: "DAPS (Zhang et al. 2025): annealed levels, ODE x0 \
                      estimate, Langevin on N(x0hat, s^2) N(y; Ax, tau^2)",
            build: |s| Ok(Box::new(Daps::from_settings(s)?)),
        },
    ]
}

/// The error for a forward model that a sampler cannot use.
fn needs_linear(problem: &Problem<'_>, why: &str) -> Error {
    let map = match problem.forward.operator() {
        Operator::Nonlinear(map) => map.name().to_string(),
        _ => "?".to_string(),
    };
    declined(format!(
        "needs a linear forward model ({why}), but this case's forward \
         model is the nonlinear map `{map}`"
    ))
}

/// Declines nonlinear forward models.
fn require_linear(problem: &Problem<'_>, why: &str) -> Result<()> {
    if problem.forward.is_linear() {
        Ok(())
    } else {
        Err(needs_linear(problem, why))
    }
}

/// A setting `steps` that counts denoiser calls including a final one, so
/// it must be at least 2.
fn at_least_two(sampler: &str, steps: usize) -> Result<usize> {
    if steps < 2 {
        return Err(Error::invalid(format!(
            "sampler {sampler}: setting steps must be at least 2, got {steps}"
        )));
    }
    Ok(steps)
}

/// `y - b`, the observation with the forward model's bias removed.
fn centred_observation(problem: &Problem<'_>) -> DVector<f64> {
    match problem.forward.bias() {
        Some(b) => problem.observation - b,
        None => problem.observation.clone(),
    }
}

/// A decreasing grid with the problem's checkpoints inserted (those
/// strictly between its ends), for samplers that build their own grid.
fn with_checkpoints(problem: &Problem<'_>, mut grid: Vec<f64>) -> Vec<f64> {
    let (last, first) = (grid[grid.len() - 1], grid[0]);
    for &c in problem.checkpoints {
        if c > last && c < first && !grid.contains(&c) {
            grid.push(c);
        }
    }
    grid.sort_by(|a, b| b.total_cmp(a));
    grid
}

/// A linear forward model in its SVD coordinates.
///
/// Only the singular directions with `s_i` above the pseudo-inverse
/// tolerance (`max(m, d) eps s_max`) are kept as "range" coordinates; the
/// rest of `R^d`, including directions of zero singular values, is the
/// null space, handled as the projection `x - V V^T x`:
///
/// ```text
/// A = U diag(s) V^T,  xbar = V^T x,  ybar_i = (U^T (y - b))_i / s_i
/// x = V xbar + x_null
/// ```
#[derive(Clone, Debug)]
struct Spectral {
    /// Right singular vectors of the kept directions, `d x r`.
    v: DMatrix<f64>,
    /// The kept singular values, length `r`.
    singular_values: DVector<f64>,
    /// `(U^T (y - b))_i`, length `r`.
    u_t_y: DVector<f64>,
    /// The measurement noise standard deviation.
    noise_std: f64,
}

impl Spectral {
    fn new(problem: &Problem<'_>) -> Result<Spectral> {
        let why = "it works in the svd of A";
        let Some(svd) = problem.forward.svd() else {
            return Err(needs_linear(problem, why));
        };
        let s_max = svd.singular_values.max();
        let size =
            problem.forward.input_dim().max(problem.forward.output_dim());
        let tol = size as f64 * f64::EPSILON * s_max;
        let keep: Vec<usize> = (0..svd.singular_values.len())
            .filter(|&i| svd.singular_values[i] > tol)
            .collect();
        let y = centred_observation(problem);
        let u_t_y_all = svd.u.tr_mul(&y);
        Ok(Spectral {
            v: svd.v.select_columns(keep.iter()),
            singular_values: DVector::from_iterator(
                keep.len(),
                keep.iter().map(|&i| svd.singular_values[i]),
            ),
            u_t_y: DVector::from_iterator(
                keep.len(),
                keep.iter().map(|&i| u_t_y_all[i]),
            ),
            noise_std: problem.forward.noise_std(),
        })
    }

    /// The number of range coordinates.
    fn rank(&self) -> usize {
        self.singular_values.len()
    }

    /// `ybar_i = (U^T (y - b))_i / s_i`.
    fn ybar(&self, i: usize) -> f64 {
        self.u_t_y[i] / self.singular_values[i]
    }

    /// The range coordinates `X V` (`n x r`) and the null-space parts
    /// `X - X V V^T` (`n x d`) of the rows of `xs`.
    fn split(&self, xs: &DMatrix<f64>) -> (DMatrix<f64>, DMatrix<f64>) {
        let coords = xs * &self.v;
        let null = xs - &coords * self.v.transpose();
        (coords, null)
    }

    /// The inverse of [`Spectral::split`].
    fn join(&self, coords: &DMatrix<f64>, null: &DMatrix<f64>) -> DMatrix<f64> {
        coords * self.v.transpose() + null
    }
}
