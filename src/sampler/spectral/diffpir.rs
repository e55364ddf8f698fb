//! DiffPIR, denoising diffusion models for plug-and-play image restoration
//! (Zhu, Zhang, Liang, Cao, Wen, Timofte, Van Gool, CVPR 2023).

use std::collections::BTreeMap;

use super::{Spectral, at_least_two, centred_observation, with_checkpoints};
use crate::error::Result;
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};

/// Noise stream of the initial state (apart from the per-step streams).
const INIT_STREAM: u64 = 1 << 39;

/// DiffPIR: a proximal data step on the denoised estimate, then a DDIM-like
/// step with a share `zeta` of fresh noise.
///
/// **Approximation of `p(y | x_t)`.** Implicitly `p(x0 | x_t) ≈ N(D,
/// (sbar_t^2 / lambda) I)` with `sbar_t = sigma_t / alpha_t`, combined with
/// the likelihood `N(y; A x0, sigma_y^2 I)`; but the step takes the
/// **mean** of that Gaussian posterior (a proximal point) instead of a
/// draw, so within-step spread is lost and only partly re-injected by the
/// `zeta` noise.
///
/// **Update** from `t` to `s`, for linear `A` through its SVD:
///
/// ```text
/// x0    = D(x_t, t)
/// rho_t = lambda sigma^2 / sbar_t^2
/// xhat  = argmin |y - A x|^2 + rho_t |x - x0|^2
///       = (A^T A + rho_t I)^{-1} (A^T y + rho_t x0)
///         (range: xhat_i = (s_i (U^T y)_i + rho_t xbar0_i) / (s_i^2 + rho_t);
///          null space: xhat = x0)
/// eps   = (x_t - alpha_t xhat) / sigma_t
/// x_s   = alpha_s xhat + sigma_s (sqrt(1 - zeta) eps + sqrt(zeta) z)
/// ```
///
/// `sigma` in `rho_t` is the case's noise standard deviation
/// (`noise=paper`, the paper's formula) or half of it (`noise=code`): the
/// authors' scripts add noise of standard deviation `2 noise_level_img` on
/// the `[-1, 1]` scale but put `noise_level_img` into `rho`, which in
/// consistent units is `lambda / 4`.
///
/// The start is the code's `x_T = alpha_T y_img + sigma_T z`, with
/// `y_img = A^+ (y - b)` standing in for the image-shaped measurement. The
/// grid is the code's "quad" skip mapped to `[t_min, t_max]`:
/// `t_k = t_min + (t_max - t_min)(1 - sqrt(k / (steps - 1)))`, `k = 0 ..
/// steps - 1`, plus the checkpoints. The output is the state at `t_min`
/// (`final_time = t_min`): the code's last iteration calls the network but
/// neither applies the data step nor moves `x`, and saves `x`.
///
/// **Defaults and sources.** `lambda = 1`, `zeta = 0.1`, 100 steps, the
/// noisy-task configs (`yuanzhi-zhu/DiffPIR` `configs/sisr.yaml`; the
/// inpainting config `configs/inpaint.yaml` has `zeta = 1`, 20 steps and
/// no noise: `diffpir:zeta=1,steps=20`). The DDIM `eta` is 0 in every
/// config and is not exposed. Checked against `main_ddpir.py` and
/// `main_ddpir_inpainting.py` (the `rhos` and `sigma_ks` loops, the quad
/// `seq`, the update and the start). Note that `main_ddpir.py` overrides the
/// config in its experiment loop (SR: `lambda` 2..12 times the config value
/// and `zeta = 0.25`; deblur: `lambda = 7`, `zeta = 0.3`), so the values
/// behind the paper's tables may differ from the config files (unverified).
#[derive(Clone, Debug)]
pub struct DiffPir {
    /// `lambda`, positive.
    pub lambda: f64,
    /// `zeta` in `[0, 1]`.
    pub zeta: f64,
    /// Number of times on the grid (the code's `iter_num`), at least 2;
    /// `steps - 1` denoiser calls (the code's last call is unused).
    pub steps: usize,
    /// `paper` (sigma = noise_std) or `code` (sigma = noise_std / 2).
    pub noise: &'static str,
}

impl DiffPir {
    pub(super) fn from_settings(s: &mut Settings) -> Result<DiffPir> {
        Ok(DiffPir {
            lambda: s.f64("lambda", 1.0, "must be positive", |v| v > 0.0)?,
            zeta: s.f64("zeta", 0.1, "must lie in [0, 1]", |v| {
                (0.0..=1.0).contains(&v)
            })?,
            steps: at_least_two("diffpir", s.count("steps", 100)?)?,
            noise: s.choice("noise", "paper", &["paper", "code"])?,
        })
    }
}

impl Sampler for DiffPir {
    fn name(&self) -> &'static str {
        "diffpir"
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::UnderTest
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("lambda".to_string(), self.lambda.to_string()),
            ("zeta".to_string(), self.zeta.to_string()),
            ("steps".to_string(), self.steps.to_string()),
            ("noise".to_string(), self.noise.to_string()),
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
        let sigma = match self.noise {
            "code" => spectral.noise_std / 2.0,
            _ => spectral.noise_std,
        };

        // The quad skip: dense near t_min, sparse near t_max.
        let span = problem.t_max - problem.t_min;
        let last = (self.steps - 1) as f64;
        let mut grid: Vec<f64> = (0..self.steps)
            .map(|k| problem.t_min + span * (1.0 - (k as f64 / last).sqrt()))
            .collect();
        grid[0] = problem.t_max;
        grid[self.steps - 1] = problem.t_min;
        let grid = with_checkpoints(problem, grid);

        // Start from the measurement noised to t_max.
        let y_img = problem
            .forward
            .pseudo_inverse_apply(centred_observation(problem).column(0))?;
        let (alpha_start, sigma_start) = schedule.alpha_sigma(grid[0]);
        let mut x = gaussian_noise(seed, INIT_STREAM, n, d) * sigma_start;
        for mut row in x.row_iter_mut() {
            row += y_img.transpose() * alpha_start;
        }

        let mut recorder = Recorder::new(problem);
        for (k, pair) in grid.windows(2).enumerate() {
            let (t, s) = (pair[0], pair[1]);
            let (alpha, sigma_t) = schedule.alpha_sigma(t);
            let denoised = problem.denoiser.denoise(&x, t)?;
            recorder.offer(t, &x, Some(&denoised));

            // The proximal data step in SVD coordinates.
            let rho =
                self.lambda * sigma * sigma / schedule.ve_sigma(t).powi(2);
            let (mut coords, null) = spectral.split(&denoised);
            for i in 0..r {
                let s_i = spectral.singular_values[i];
                let data = s_i * spectral.u_t_y[i];
                for p in 0..n {
                    coords[(p, i)] =
                        (data + rho * coords[(p, i)]) / (s_i * s_i + rho);
                }
            }
            let x0 = spectral.join(&coords, &null);

            let eps = (&x - &x0 * alpha) / sigma_t;
            let (alpha_s, sigma_s) = schedule.alpha_sigma(s);
            let z = gaussian_noise(seed, k as u64, n, d);
            x = x0 * alpha_s
                + eps * (sigma_s * (1.0 - self.zeta).sqrt())
                + z * (sigma_s * self.zeta.sqrt());
        }
        let t_last = *grid.last().expect("a grid has two times");
        recorder.offer(t_last, &x, None);

        Ok(Run {
            particles: x,
            final_time: t_last,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
