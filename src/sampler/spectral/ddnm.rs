//! DDNM+, denoising diffusion null-space models with noise (Wang, Yu,
//! Zhang, ICLR 2023).

use std::collections::BTreeMap;

use super::{Spectral, at_least_two};
use crate::error::Result;
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};

/// Noise stream of the initial state (apart from the per-step streams).
const INIT_STREAM: u64 = 1 << 39;

/// DDNM+: range-null decomposition of the denoised estimate, with a
/// noise-aware scaling of the range correction.
///
/// **Approximation of `p(y | x_t)`.** None is formed. The denoised estimate
/// is corrected in the range of `A^T` toward `A^+ y` ("hard consistency")
/// and left alone in the null space. At levels `sigma_s > alpha_s sigma_y /
/// s_i` the correction is complete (`lambda_i = 1`) and the measured
/// coordinate is `N(alpha_s ybar_i, sigma_s^2 - alpha_s^2 sigma_y^2 /
/// s_i^2)`, built from `y` alone, exactly as in DDRM, so the bias is
/// DDRM's: the measured output on a Gaussian prior is too **narrow**, not
/// too wide (see [`super::Ddrm`] for why).
///
/// **Update** from `t` to `s`, with `a = alpha_s`, `sig = sigma_s`,
/// `xbar0 = V^T D(x_t, t)`, `epsbar = V^T epshat`, `ybar_i` as in DDRM:
///
/// ```text
/// lambda_i = 1                                    if sig >= a sigma_y / s_i
///          = s_i sig sqrt(1 - eta^2) / (a sigma_y) otherwise
/// xhat_i   = xbar0_i - lambda_i (xbar0_i - ybar_i)
///            (that is, x0 - Lambda A^+ (A x0 - y))
/// x_s      = a xhat + noise, per coordinate:
///     sig > a sigma_y / s_i:  sqrt(sig^2 - a^2 sigma_y^2 / s_i^2) z_i
///     sig < a sigma_y / s_i:  sig eta z_i
///     null space (s_i = 0):   sig eta z_i + sig sqrt(1 - eta^2) epsbar_i
/// ```
///
/// (`sig = a sigma_y / s_i` exactly takes the null-space noise, as in the
/// code.) The start is `sigma_{t_max} z` (the code's `randn`, the VP
/// stationary law). The grid has `steps` times from `t_max` to `t_min`,
/// spaced by the schedule's default (uniform in `t`, the image of the
/// code's every `T/steps`-th DDPM step; Karras for EDM), each with one
/// denoiser call; the last step goes to `a = 1, sig = 0`, where
/// `lambda = 0`, so the output is the uncorrected
/// `D(x_{t_min}, t_min)` (`final_time = 0`), exactly as the code's last
/// step to index `-1`.
///
/// **Defaults and sources.** `eta = 0.85` (`wyhuai/DDNM` `main.py`,
/// `--eta` default), 100 steps (`configs/celeba_hq.yml`:
/// `time_travel.T_sampling: 100`, `travel_length: 1`, `travel_repeat: 1`,
/// which is no time travel). The update is checked against
/// `functions/svd_ddnm.py` (`ddnm_plus_diffusion`) and the `Lambda` /
/// `Lambda_noise` methods of `functions/svd_operators.py`. The RePaint-style
/// time travel is not implemented (the published default does not use it).
#[derive(Clone, Debug)]
pub struct Ddnm {
    /// `eta` in `[0, 1]`.
    pub eta: f64,
    /// Number of denoiser calls, at least 2.
    pub steps: usize,
}

impl Ddnm {
    pub(super) fn from_settings(s: &mut Settings) -> Result<Ddnm> {
        Ok(Ddnm {
            eta: s.f64("eta", 0.85, "must lie in [0, 1]", |v| {
                (0.0..=1.0).contains(&v)
            })?,
            steps: at_least_two("ddnm", s.count("steps", 100)?)?,
        })
    }
}

impl Sampler for Ddnm {
    fn name(&self) -> &'static str {
        "ddnm"
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
        let keep_share = (1.0 - self.eta * self.eta).sqrt();

        let mut x =
            gaussian_noise(seed, INIT_STREAM, n, d) * schedule.sigma(grid[0]);
        let mut recorder = Recorder::new(problem);
        for (k, &t) in grid.iter().enumerate() {
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let denoised = problem.denoiser.denoise(&x, t)?;
            recorder.offer(t, &x, Some(&denoised));
            let eps = (&x - &denoised * alpha) / sigma;

            let (a, sig) = match grid.get(k + 1) {
                Some(&s) => schedule.alpha_sigma(s),
                None => (1.0, 0.0),
            };
            let (x0_coords, x0_null) = spectral.split(&denoised);
            let (_, eps_null) = spectral.split(&eps);
            let (z_coords, z_null) =
                spectral.split(&gaussian_noise(seed, k as u64, n, d));

            let mut next = x0_coords.clone();
            for i in 0..r {
                let s_i = spectral.singular_values[i];
                let ybar = spectral.ybar(i);
                let threshold = a * sigma_y / s_i;
                let lambda = if sig < threshold {
                    s_i * sig * keep_share / (a * sigma_y)
                } else {
                    1.0
                };
                for p in 0..n {
                    let x0 = x0_coords[(p, i)];
                    let zz = z_coords[(p, i)];
                    let mean = a * (x0 - lambda * (x0 - ybar));
                    next[(p, i)] = if sig > threshold {
                        mean + (sig * sig - threshold * threshold).sqrt() * zz
                    } else if sig < threshold {
                        mean + sig * self.eta * zz
                    } else {
                        // The code's default branch; in SVD coordinates
                        // of a range direction the eps term is this one.
                        let e = (eps.row(p) * spectral.v.column(i))[(0, 0)];
                        mean + sig * self.eta * zz + sig * keep_share * e
                    };
                }
            }
            let null_next = x0_null * a
                + z_null * (sig * self.eta)
                + eps_null * (sig * keep_share);
            x = spectral.join(&next, &null_next);
        }

        Ok(Run {
            particles: x,
            final_time: 0.0,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
