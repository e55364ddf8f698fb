//! DDRM, denoising diffusion restoration models (Kawar, Elad, Ermon, Song,
//! NeurIPS 2022).

use std::collections::BTreeMap;

use super::{Spectral, at_least_two};
use crate::error::Result;
use crate::sampler::declined;
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};

/// Noise stream of the initial state (apart from the per-step streams).
const INIT_STREAM: u64 = 1 << 39;

/// DDRM: a variational reverse process in the SVD coordinates of `A`.
///
/// **Approximation of `p(y | x_t)`.** None is formed. DDRM replaces the
/// reverse transition by a hand-built `q(x_s | x_t, y)` that, per singular
/// direction, trusts the measurement wherever it is noisier than the
/// current level and the denoiser elsewhere. With `eta_b = 1` the measured
/// directions at levels `s_i sbar > sigma_y` are drawn from the measurement
/// alone, `N(ybar_i, sbar^2 - sigma_y^2 / s_i^2)`, so the prior is ignored
/// there. Note the variance: `q` is built so that `x_t`
/// given `x0` has the right law *averaged over the measurement noise*;
/// for the fixed `y` in hand it is `sigma_y^2 / s_i^2` narrower than the
/// forward noise, where the noised posterior is wider than it by the
/// posterior variance. Below the crossing the update mixes `xbar0` and
/// `ybar` with little fresh noise. On a Gaussian prior the output is
/// therefore too **narrow** in measured directions (measured in
/// `tests/integration/sampler_spectral.rs`), not too wide as an argument
/// from "the prior is ignored" alone would suggest. It is not a posterior
/// sampler.
///
/// **Update.** In VE units (`x_ve = x / alpha`, `sbar = sigma / alpha`),
/// with `xbar = V^T x_ve`, `xbar0 = V^T D(x_t, t)`, `epsbar = V^T epshat`,
/// `ybar_i = (U^T (y - b))_i / s_i` and `sbar'` the next level:
///
/// ```text
/// null space (s_i = 0):
///     xbar'_i = xbar0_i + sqrt(1 - eta^2) sbar' epsbar_i + eta sbar' z_i
/// s_i sbar' < sigma_y:
///     xbar'_i = xbar0_i
///               + sqrt(1 - eta^2) sbar' (ybar_i - xbar0_i) s_i / sigma_y
///               + eta sbar' z_i
/// s_i sbar' > sigma_y:
///     xbar'_i = eta_b ybar_i + (1 - eta_b) xbar0_i
///               + sqrt(sbar'^2 - eta_b^2 sigma_y^2 / s_i^2) z_i
/// x_s = alpha_s V xbar'
/// ```
///
/// (`s_i sbar' = sigma_y` exactly falls to the null-space rule, as in the
/// authors' code.) The start is DDRM's `p(x_T | y)`: coordinates with
/// `s_i sbar_T > sigma_y` are `ybar_i + sqrt(sbar_T^2 - sigma_y^2/s_i^2) z`,
/// the others `sbar_T z`, and `x_T = alpha_T V xbar`. The authors divide by
/// `sbar_T` instead of multiplying by `alpha_T = 1/sqrt(1 + sbar_T^2)`,
/// the same to `O(1/sbar_T^2)`.
///
/// The grid has `steps` times from `t_max` to `t_min`, spaced by the
/// schedule's default (uniform in `t`, the image of the authors' every
/// `T/steps`-th DDPM step; Karras for EDM, where uniform `t` would leave
/// one step across most of the noise range), each with one denoiser call;
/// the last step goes to `sbar' = 0`, so the output is the clean estimate
/// `D(x_{t_min}, t_min)` (`final_time = 0`), as in the code, where the last
/// target index is `-1` (`abar = 1`).
///
/// **Defaults and sources.** `eta = 0.85`, `eta_b = 1`, 20 steps. Checked
/// against the authors' code `bahjat-kawar/ddrm` `functions/denoising.py`
/// (`efficient_generalized_steps`: the three cases, the `etaA/etaB/etaC`
/// roles and the initialisation) and RED-diff's DDRM baseline config
/// (`NVlabs/RED-diff` `_configs/algo/ddrm.yaml`: `eta 0.85, eta_b 1`).
/// Here `eta` plays both `etaA` and `etaC` (the MCGdiff benchmark used
/// `etaA = 0.85, etaB = 1, etaC = 1`). The step count 20 is the paper's
/// headline setting (Kawar et al., NeurIPS 2022); it is not in the code we
/// read (unverified).
#[derive(Clone, Debug)]
pub struct Ddrm {
    /// `eta` (the code's `etaA` and `etaC`), in `[0, 1]`.
    pub eta: f64,
    /// `eta_b` (the code's `etaB`), in `[0, 1]`.
    pub eta_b: f64,
    /// Number of denoiser calls, at least 2.
    pub steps: usize,
}

impl Ddrm {
    pub(super) fn from_settings(s: &mut Settings) -> Result<Ddrm> {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        Ok(Ddrm {
            eta: s.f64("eta", 0.85, "must lie in [0, 1]", unit)?,
            eta_b: s.f64("eta_b", 1.0, "must lie in [0, 1]", unit)?,
            steps: at_least_two("ddrm", s.count("steps", 20)?)?,
        })
    }
}

impl Sampler for Ddrm {
    fn name(&self) -> &'static str {
        "ddrm"
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::UnderTest
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("eta".to_string(), self.eta.to_string()),
            ("eta_b".to_string(), self.eta_b.to_string()),
            ("steps".to_string(), self.steps.to_string()),
        ])
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        let spectral = Spectral::new(problem)?;
        let schedule = problem.schedule;
        let (n, d, r) = (num_particles, problem.dim(), spectral.rank());
        let sigma_y = spectral.noise_std;
        let grid = problem.grid(self.steps - 1, schedule.default_spacing())?;

        // The start p(x_T | y), in VE units and then scaled by alpha_T.
        let (alpha_start, _) = schedule.alpha_sigma(grid[0]);
        let sbar_start = schedule.ve_sigma(grid[0]);
        if !(alpha_start > 0.0 && sbar_start.is_finite()) {
            return Err(declined(format!(
                "needs alpha > 0 at the start time {}",
                grid[0]
            )));
        }
        let z = gaussian_noise(seed, INIT_STREAM, n, d);
        let (mut coords, null) = spectral.split(&z);
        for i in 0..r {
            let s_i = spectral.singular_values[i];
            let (ybar, floor) = (spectral.ybar(i), sigma_y / s_i);
            for p in 0..n {
                coords[(p, i)] = if s_i * sbar_start > sigma_y {
                    ybar + (sbar_start.powi(2) - floor.powi(2)).sqrt()
                        * coords[(p, i)]
                } else {
                    sbar_start * coords[(p, i)]
                };
            }
        }
        let mut x = spectral.join(&coords, &(null * sbar_start)) * alpha_start;

        let mut recorder = Recorder::new(problem);
        for (k, &t) in grid.iter().enumerate() {
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let denoised = problem.denoiser.denoise(&x, t)?;
            recorder.offer(t, &x, Some(&denoised));
            let eps = (&x - &denoised * alpha) / sigma;

            // The next level; after the last time, the clean image.
            let (alpha_next, sbar_next) = match grid.get(k + 1) {
                Some(&s) => (schedule.alpha(s), schedule.ve_sigma(s)),
                None => (1.0, 0.0),
            };
            let keep = (1.0 - self.eta * self.eta).sqrt() * sbar_next;
            let fresh = self.eta * sbar_next;
            let (x0_coords, x0_null) = spectral.split(&denoised);
            let (eps_coords, eps_null) = spectral.split(&eps);
            let (z_coords, z_null) =
                spectral.split(&gaussian_noise(seed, k as u64, n, d));

            let mut next = x0_coords.clone();
            for i in 0..r {
                let s_i = spectral.singular_values[i];
                let (ybar, floor) = (spectral.ybar(i), sigma_y / s_i);
                for p in 0..n {
                    let (x0, e, zz) = (
                        x0_coords[(p, i)],
                        eps_coords[(p, i)],
                        z_coords[(p, i)],
                    );
                    next[(p, i)] = if s_i * sbar_next < sigma_y {
                        x0 + keep * (ybar - x0) / floor + fresh * zz
                    } else if s_i * sbar_next > sigma_y {
                        let var =
                            sbar_next.powi(2) - (self.eta_b * floor).powi(2);
                        self.eta_b * ybar
                            + (1.0 - self.eta_b) * x0
                            + var.max(0.0).sqrt() * zz
                    } else {
                        x0 + keep * e + fresh * zz
                    };
                }
            }
            let null_next = x0_null + eps_null * keep + z_null * fresh;
            x = spectral.join(&next, &null_next) * alpha_next;
        }

        Ok(Run {
            particles: x,
            final_time: 0.0,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
