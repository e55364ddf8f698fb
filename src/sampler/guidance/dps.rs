//! DPS, diffusion posterior sampling (Chung, Kim, McCann, Klasky, Ye;
//! ICLR 2023).
//!
//! Approximation of the likelihood: a point mass at the denoiser's mean,
//! `p(y | x_t) ~ p(y | x0 = D(x_t)) = N(y; A D, sigma_y^2 I)`, which drops
//! the spread `A C_t A^T` of `x0 | x_t`.
//!
//! Two forms, the setting `form`:
//!
//! ```text
//! zeta (published; default):
//!     x' = DDPM ancestral step from x_t with D(x_t)       (eta = 1)
//!     x_s = x' - scale grad_{x_t} |y - A D(x_t)|
//!         = x' + scale J^T A^T r / |r|,   r = y - A D(x_t),  per particle
//! sigma (the likelihood score in the common driver):
//!     g = scale J^T A^T r / sigma_y^2,    added to the prior score
//! ```
//!
//! Sources and what was checked:
//!
//! - The zeta form follows the official code (DPS2022 repository,
//!   `guided_diffusion/condition_methods.py`, class `PosteriorSampling`,
//!   read): the gradient of the *non-squared* norm `|y - A(D)|` with
//!   respect to the state before the step is subtracted, times `scale`,
//!   from the state after the DDPM step. The official code takes the norm
//!   of the whole batch tensor, which couples particles; here the norm is
//!   per particle, so that particles stay independent.
//! - Default `scale = 0.3`: the official configs (checked) use 0.3 for
//!   super-resolution, Gaussian, motion and nonlinear deblurring and 0.5
//!   for random inpainting (`configs/inpainting_config.yaml`), 1.0 for
//!   phase retrieval, all with `sigma_y = 0.05` and 1000 DDPM steps. 0.3
//!   is the value of most linear tasks and the `zeta = 0.3` of Burns'
//!   testbed comparison; use `scale=0.5` for the inpainting setting.
//! - Default 1000 steps: the official DDPM chain.
//! - The paper's Algorithm 1 writes `zeta_t = zeta' / |y - A D|` times the
//!   gradient of the *squared* norm, i.e. `2 zeta'` times the official
//!   step (unverified against the paper's text; the official code was
//!   read).
//! - The sigma form is the FSR paper's "sigma-DPS" (Burns &
//!   Fridovich-Keil); its `scale` defaults to 1, the unweighted
//!   approximation.
//!
//! Expected bias (derived from the approximation): with the matched sigma
//! form the likelihood is over-weighted at intermediate times, so the
//! particles are too narrow (`spread_too_narrow`); the zeta step has a
//! fixed length whatever the residual, so its effective temperature
//! depends on `|r|`.
//! Note that the zeta step length does not shrink with the step count:
//! fewer steps means weaker guidance in total.

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::{Guide, Method, Step, residuals, vjp};
use crate::error::Result;
use crate::sampler::{Problem, Settings};

/// DPS (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Dps {
    form: &'static str,
    scale: f64,
}

impl Dps {
    pub(super) fn from_settings(s: &mut Settings) -> Result<Dps> {
        let form = s.choice("form", "zeta", &["zeta", "sigma"])?;
        let default_scale = if form == "zeta" { 0.3 } else { 1.0 };
        let scale =
            s.f64("scale", default_scale, "must be positive", |v| v > 0.0)?;
        Ok(Dps { form, scale })
    }
}

impl Method for Dps {
    fn name(&self) -> &'static str {
        "dps"
    }

    fn settings(&self, out: &mut BTreeMap<String, String>) {
        out.insert("form".into(), self.form.to_string());
        out.insert("scale".into(), self.scale.to_string());
    }

    fn default_steps(&self) -> usize {
        1000
    }

    fn guide(
        &self,
        problem: &Problem<'_>,
        xs: &DMatrix<f64>,
        step: &Step,
    ) -> Result<Guide> {
        let denoised = problem.denoiser.denoise(xs, step.t)?;
        let r = residuals(problem, &denoised);
        let mut cotangent = problem.forward.adjoint_batch(&r)?;
        if self.form == "sigma" {
            let noise_var = problem.forward.noise_std().powi(2);
            cotangent /= noise_var;
            let score = vjp(problem, xs, step.t, &cotangent)? * self.scale;
            return Ok(Guide {
                denoised,
                likelihood_score: Some(score),
                shift: None,
            });
        }

        // grad_{x_t} |r_i| = -J^T A^T r_i / |r_i|, per particle.
        for (mut row, r) in cotangent.row_iter_mut().zip(r.row_iter()) {
            let norm = r.norm();
            if norm > 0.0 {
                row /= norm;
            }
        }
        let shift = vjp(problem, xs, step.t, &cotangent)? * self.scale;
        Ok(Guide { denoised, likelihood_score: None, shift: Some(shift) })
    }
}
