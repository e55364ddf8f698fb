//! Score-ALD: annealed Langevin dynamics with a measurement term (Jalal,
//! Arvinte, Daras, Price, Dimakis, Tamir; NeurIPS 2021).
//!
//! Approximation of the likelihood: a flat prior with a scalar variance,
//! `p(y | x) ~ N(y; A x, (sigma_y^2 + gamma_i^2) I)` at noise level `i`,
//! with the annealing term `gamma_i = sigmabar_i`.
//!
//! The chain lives on the VE-equivalent variable `xbar = x_t/alpha_t`
//! (`xbar = x0 + sigmabar eps`, `sigmabar = sigma_t/alpha_t`), whose score
//! comes from the VP denoiser as `(D(alpha_t xbar, t) - xbar)/sigmabar^2`.
//! On the levels `sigmabar_1 > ... > sigmabar_L` (the times of a grid
//! uniform in log-SNR, i.e. geometric in `sigmabar` as in NCSN, with the
//! checkpoints inserted) it runs `K` Langevin steps per level:
//!
//! ```text
//! xbar ~ N(0, sigmabar_1^2 I)
//! for i = 1..L, K times:
//!     eta_i = step_ratio sigmabar_i^2
//!     xbar <- xbar + eta_i [ (D(alpha_i xbar) - xbar)/sigmabar_i^2
//!                            + A^T (y - A xbar)/(sigma_y^2 + gamma_i^2) ]
//!             + sqrt(2 eta_i) z
//! record x_t = alpha_i xbar after the K steps of level i
//! ```
//!
//! Sources and what was checked: the authors' code (`utcsilab/
//! csgm-mri-langevin`, `main.py` and `configs/run_langevin.yaml`, read)
//! uses `step_size = step_lr (sigma_i / sigma_L)^2` with `step_lr =
//! 9e-7`, `sigma_L = 0.0066`, `n_steps_each = 3`, and 2311 geometric
//! levels from 232 down to 0.0066, and divides the measurement gradient
//! by `sigma_i^2` alone (their `mse` weight 1).
//! `step_ratio` is `step_lr / sigma_L^2 = 9e-7 / 0.0066^2 ~ 0.02066`, which
//! makes the rule independent of where the levels end. The denominator
//! `sigma_y^2 + gamma_i^2` is the paper's as reported by a secondary
//! source (not checked against the paper itself). The level count 2311
//! belongs to that MRI model's training levels, not to the method; the
//! default here is 1000 levels. The authors start from uniform noise; here
//! the start is `N(0, sigmabar_1^2 I)`.
//!
//! Expected bias (derived from the approximation): the flat-prior likelihood
//! is too flat, so intermediate levels are too wide (as DMPS), plus the bias
//! of finitely many Langevin steps per level.

use std::collections::BTreeMap;

use super::{START_STREAM, require_linear, residuals};
use crate::error::Result;
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};
use crate::schedule::Spacing;

/// Score-ALD (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct ScoreAld {
    levels: usize,
    steps_each: usize,
    step_ratio: f64,
}

impl ScoreAld {
    pub(super) fn from_settings(s: &mut Settings) -> Result<ScoreAld> {
        Ok(ScoreAld {
            levels: s.count("levels", 1000)?,
            steps_each: s.count("steps_each", 3)?,
            step_ratio: s.f64(
                "step_ratio",
                9e-7 / (0.0066 * 0.0066),
                "must lie in (0, 1)",
                |v| v > 0.0 && v < 1.0,
            )?,
        })
    }
}

impl Sampler for ScoreAld {
    fn name(&self) -> &'static str {
        "score-ald"
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::UnderTest
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("levels".to_string(), self.levels.to_string()),
            ("steps_each".to_string(), self.steps_each.to_string()),
            ("step_ratio".to_string(), self.step_ratio.to_string()),
        ])
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
        let grid = problem.grid(self.levels, Spacing::LogSnr)?;
        let noise_var = problem.forward.noise_std().powi(2);

        let mut xbar = gaussian_noise(seed, START_STREAM, n, d)
            * schedule.ve_sigma(grid[0]);
        let mut recorder = Recorder::new(problem);
        for (level, &t) in grid.iter().enumerate() {
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let ve = sigma / alpha;
            let eta = self.step_ratio * ve * ve;
            for k in 0..self.steps_each {
                let denoised = problem.denoiser.denoise(&(&xbar * alpha), t)?;
                let prior = (denoised - &xbar) / (ve * ve);
                let r = residuals(problem, &xbar);
                let likelihood =
                    problem.forward.adjoint_batch(&r)? / (noise_var + ve * ve);
                let id = (level * self.steps_each + k) as u64;
                let z = gaussian_noise(seed, id, n, d);
                xbar += (prior + likelihood) * eta + z * (2.0 * eta).sqrt();
            }
            recorder.offer(t, &(&xbar * alpha), None);
        }
        let t_min = *grid.last().expect("a grid has two times");
        Ok(Run {
            particles: xbar * schedule.alpha(t_min),
            final_time: t_min,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
