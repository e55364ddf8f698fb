//! TMPD, Tweedie moment projected diffusions (Boys, Girolami, Pidstrigach,
//! Reich, Mosca, Akyildiz; TMLR 2024).
//!
//! Approximation of the likelihood: `x0 | x_t` is replaced by the Gaussian
//! with its first two moments (second-order Tweedie),
//! `N(D, C_t)` with `C_t = Cov[x0 | x_t] = (sigma_t^2/alpha_t) J`, hence
//!
//! ```text
//! p(y | x_t) ~ N(y; A D, A C_t A^T + sigma_y^2 I)
//! g = J^T A^T (A C_t A^T + sigma_y^2 I)^{-1} (y - A D)
//! variant=full: A C_t A^T from m VJPs (the rows of A J), Cholesky solve
//! variant=diag: only diag(A C_t A^T) (TMPD-D), elementwise solve
//! ```
//!
//! `g` drops the derivative of `C_t` with respect to `x_t`, so it is not
//! the gradient of `log p^` (as in the authors' code). The `m` products
//! `e_k^T A J(x_i)` come from one denoiser call on the particles repeated
//! `m` times with the rows of `A` as cotangents; the same call gives `D`,
//! and `J^T A^T f = (A J)^T f` needs no further product.
//!
//! Sources and what was checked: diffusionjax `inverse_problems.py` (the
//! TMPD authors' library, read): `get_vjp_guidance` builds
//! `C_yy = ratio(t) H (dD/dx) H^T + sigma_y^2 I` from `H.shape[0]` VJPs
//! and solves it; `get_diag_vjp_guidance` keeps its diagonal; `ratio` is
//! `sigma_t^2/alpha_t` ((1 - abar)/sqrt(abar) for VP), which is what makes
//! `ratio(t) dD/dx` the covariance `C_t` above. No step size. The
//! authors' GMM and GRF experiments in the same library use 1000
//! Euler-Maruyama steps: 1000 is the default here, in the DDPM driver
//! rather than Euler-Maruyama.
//!
//! Expected bias (derived from the approximation): exact for a Gaussian prior
//! with linear `A` (up to discretisation); for a multimodal `p(x0 | x_t)` the
//! Gaussian moment projection flattens the likelihood near one component (too
//! wide, prior modes survive) and can pull toward averages of components.

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::{Guide, Method, Step, residuals};
use crate::error::{Error, Result};
use crate::mixture::stack_rows;
use crate::rng::CHUNK;
use crate::sampler::declined;
use crate::sampler::{Problem, Settings};

/// TMPD (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Tmpd {
    variant: &'static str,
}

impl Tmpd {
    pub(super) fn from_settings(s: &mut Settings) -> Result<Tmpd> {
        Ok(Tmpd { variant: s.choice("variant", "full", &["full", "diag"])? })
    }
}

impl Method for Tmpd {
    fn name(&self) -> &'static str {
        "tmpd"
    }

    fn settings(&self, out: &mut BTreeMap<String, String>) {
        out.insert("variant".into(), self.variant.to_string());
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
        let a = problem
            .forward
            .matrix()
            .ok_or_else(|| declined("needs the matrix of A"))?;
        let (n, d, m) = (xs.nrows(), xs.ncols(), a.nrows());

        // Row i m + k: particle i with the cotangent e_k^T A.
        // One denoiser call for every row of A at every particle.
        let (denoised, products) =
            problem.denoiser.denoise_with_vjps(xs, step.t, &a)?;
        let a_jac = products.ok_or_else(|| {
            declined("needs vector-Jacobian products of the denoiser")
        })?;
        let r = residuals(problem, &denoised);

        // Per particle: f = (ratio A J A^T + sigma_y^2 I)^{-1} r and
        // g = (A J)^T f.
        let ratio = step.sigma * step.sigma / step.alpha;
        let noise_var = problem.forward.noise_std().powi(2);
        let full = self.variant == "full";
        let chunks: Vec<Result<DMatrix<f64>>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let rows = CHUNK.min(n - c * CHUNK);
                let mut out = DMatrix::zeros(rows, d);
                for local in 0..rows {
                    let i = c * CHUNK + local;
                    let aj = a_jac.rows(i * m, m);
                    let residual = r.row(i).transpose();
                    let f = if full {
                        let mut cyy = aj * a.transpose() * ratio;
                        cyy = (&cyy + cyy.transpose()) * 0.5;
                        for k in 0..m {
                            cyy[(k, k)] += noise_var;
                        }
                        let chol = cyy.cholesky().ok_or_else(|| {
                            Error::invalid(format!(
                                "sampler tmpd: A C_t A^T + sigma_y^2 I is not \
                                 positive definite at t = {}",
                                step.t
                            ))
                        })?;
                        chol.solve(&residual)
                    } else {
                        DVector::from_fn(m, |k, _| {
                            let var =
                                ratio * aj.row(k).dot(&a.row(k)) + noise_var;
                            residual[k] / var
                        })
                    };
                    out.set_row(local, &(aj.tr_mul(&f)).transpose());
                }
                Ok(out)
            })
            .collect();
        let chunks = chunks.into_iter().collect::<Result<Vec<_>>>()?;
        let score = stack_rows(&chunks, d);
        Ok(Guide { denoised, likelihood_score: Some(score), shift: None })
    }
}
