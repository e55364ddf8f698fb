//! DAPS, decoupled annealing posterior sampling (Zhang, Chu, Berner, Meng,
//! Anandkumar, Song, CVPR 2025; arXiv 2407.01521).

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::require_linear;
use crate::error::{Error, Result, ensure};
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};
use crate::schedule::{Schedule, Spacing};

/// Noise stream of the initial state (apart from the per-level streams).
const INIT_STREAM: u64 = 1 << 39;

/// DAPS: at every level of an annealing schedule, estimate `x0` by a short
/// probability-flow ODE solve, run Langevin dynamics on a Gaussian
/// approximation of `p(x0 | x_t, y)`, and re-noise to the next level.
///
/// **Approximation of `p(y | x_t)`.** Through
/// `p^(x0 | x_t, y) ∝ N(x0; x0hat(x_t), r_t^2 I) N(y; A x0, tau^2 I)` with
/// `r_t = sigma_t` (the VE level; the code's `gaussian` prior solver) and
/// `x0hat` the ODE estimate. If the inner law were exact, the re-noised
/// draws would follow `p_t(. | y)` at every level for any grid; the errors
/// come from the prior-agnostic `r_t`, from `tau != sigma_y` (with the
/// published `tau = 0.01` below the task noise the likelihood is
/// over-weighted, so measured directions come out too narrow) and from
/// running the Langevin chain for finitely many steps.
///
/// **Update.** DAPS is written in VE units (`alpha = 1`); here
/// `x_ve = x_t / alpha_t`, the level `s = ve_sigma(t)` and the denoiser at a
/// level is `D_ve(x, s) = D(alpha_t x, t)` with `t = time_for_ve_sigma(s)`:
///
/// ```text
/// levels s_0 > ... > s_{L-1}: the first L of L + 1 poly-7 (Karras rho = 7)
///     levels from sigma_max to sigma_min; s_L = 0
/// x_ve = s_0 z
/// for k in 0..L:
///     x0hat = Euler PF-ODE from s_k to ode_sigma_min = 0.01 on a poly-7
///             sub-grid of ode_steps steps: x += (s' - s)(x - D_ve(x, s)) / s
///     l     = lr (1 + (k / (L + 1)) (lr_min_ratio - 1))
///     x0    = x0hat, then mcmc_steps times:
///             x0 += l [ -c A^T (A x0 + b - y) / tau^2 + (x0hat - x0) / s_k^2 ]
///                   + sqrt(2 l) z
///     x_ve  = x0 + s_{k+1} z
/// ```
///
/// `c = 2` with `loss=code` (the code's loss is `|A x - y|^2` without a
/// half, so its effective likelihood variance is `tau^2 / 2`) and `c = 1`
/// with `loss=gaussian` (the paper's `N(y; A x0, tau^2 I)`). The levels are
/// clipped to the case's schedule (`sigma_max` to at most `ve_sigma(t_max)`,
/// `sigma_min` to at least `ve_sigma(t_min)`), and the checkpoints inside
/// that range are inserted as extra levels; checkpoints outside it are not
/// recorded. Recorded states are `alpha_t x_ve` at the level times, which
/// DAPS means as draws of the noised posterior; the output is the last
/// `x0` (`final_time = 0`).
///
/// **Defaults and sources.** `zhangbingliang2019/DAPS`
/// `configs/sampler/edm_daps.yaml`: 200 annealing levels, poly-7,
/// `sigma_max = 100`, `sigma_min = 0.1`, ODE 5 steps to `sigma_min = 0.01`;
/// `configs/task/inpainting.yaml` (box inpainting, pixel space): Langevin,
/// 100 steps, `lr = 5e-5`, `tau = 0.01`, `lr_min_ratio = 0.01`, `gaussian`
/// prior solver (`down_sampling.yaml` has `lr = 1e-4`). The loop, the
/// learning-rate schedule, the score and the re-noising are checked against
/// `sampler.py` (`DAPS.sample`), `cores/mcmc.py` (`MCMCSampler`) and
/// `cores/scheduler.py` (`EDMScheduler`, `DiffusionPFODE`: the last level
/// is replaced by 0 and the ODE's fixed-grid Euler steps). The operator's
/// `loss` as `|A x - y|^2` summed is from the `Operator` base class of the
/// DAPS forward operators (found by search, not pinned to a commit).
///
/// Every published value is the default **except `levels`, 50 instead of
/// 200** (`daps:levels=200` restores it): a run costs `levels x ode_steps`
/// denoiser calls (plus `levels x mcmc_steps` products with `A` and `A^T`),
/// and 1000 calls on the 1797-atom digits case took about 9 s for 16
/// particles in the test profile. On the Gaussian test cases 50 and 200
/// levels give the same bias (see `tests/integration/sampler_spectral.rs`).
#[derive(Clone, Debug)]
pub struct Daps {
    /// Number of annealing levels (published: 200; default 50, see above).
    pub levels: usize,
    /// The largest annealing level (VE noise).
    pub sigma_max: f64,
    /// The level the annealing grid ends at (VE noise).
    pub sigma_min: f64,
    /// Euler steps of the inner ODE.
    pub ode_steps: usize,
    /// The VE level the inner ODE stops at.
    pub ode_sigma_min: f64,
    /// Langevin steps per level.
    pub mcmc_steps: usize,
    /// Langevin step size at the first level.
    pub lr: f64,
    /// Ratio of the last to the first step size.
    pub lr_min_ratio: f64,
    /// Standard deviation of the data term.
    pub tau: f64,
    /// `code` (`|Ax - y|^2 / tau^2`) or `gaussian` (`/ (2 tau^2)`).
    pub loss: &'static str,
}

impl Daps {
    pub(super) fn from_settings(s: &mut Settings) -> Result<Daps> {
        let positive = |v: f64| v > 0.0;
        let daps = Daps {
            levels: s.count("levels", 50)?,
            sigma_max: s.f64(
                "sigma_max",
                100.0,
                "must be positive",
                positive,
            )?,
            sigma_min: s.f64("sigma_min", 0.1, "must be positive", positive)?,
            ode_steps: s.count("ode_steps", 5)?,
            ode_sigma_min: s.f64(
                "ode_sigma_min",
                0.01,
                "must be positive",
                positive,
            )?,
            mcmc_steps: s.count("mcmc_steps", 100)?,
            lr: s.f64("lr", 5e-5, "must be positive", positive)?,
            lr_min_ratio: s.f64(
                "lr_min_ratio",
                0.01,
                "must be positive",
                positive,
            )?,
            tau: s.f64("tau", 0.01, "must be positive", positive)?,
            loss: s.choice("loss", "code", &["code", "gaussian"])?,
        };
        ensure!(
            daps.sigma_max > daps.sigma_min,
            "sampler daps: setting sigma_max must exceed sigma_min {}, got {}",
            daps.sigma_min,
            daps.sigma_max
        );
        Ok(daps)
    }

    /// `x0hat`: Euler steps of the PF-ODE from level `level` down to
    /// `ode_sigma_min`, in VE units. Returns it with `D(x_t, t)`, the
    /// denoiser at the start.
    fn ode_estimate(
        &self,
        problem: &Problem<'_>,
        x_ve: &DMatrix<f64>,
        level: f64,
        floor: f64,
    ) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
        let schedule = problem.schedule;
        let rho = 7.0;
        let (a, b) = (level.powf(1.0 / rho), floor.powf(1.0 / rho));
        let steps = self.ode_steps;
        let mut x = x_ve.clone();
        let mut first = None;
        for j in 0..steps {
            let s = (a + (j as f64 / steps as f64) * (b - a)).powf(rho);
            let s_next =
                (a + ((j + 1) as f64 / steps as f64) * (b - a)).powf(rho);
            let denoised = denoise_ve(problem, schedule, &x, s)?;
            let slope = (&x - &denoised) / s;
            x += slope * (s_next - s);
            first.get_or_insert(denoised);
        }
        let first = match first {
            Some(first) => first,
            None => denoise_ve(problem, schedule, x_ve, level)?,
        };
        Ok((x, first))
    }
}

/// `D_ve(x, s) = D(alpha_t x, t)`, `t = time_for_ve_sigma(s)`.
fn denoise_ve(
    problem: &Problem<'_>,
    schedule: &Schedule,
    x_ve: &DMatrix<f64>,
    s: f64,
) -> Result<DMatrix<f64>> {
    // Levels come from powers and roots that may land an ulp outside the
    // schedule's range.
    let (lo, hi) = schedule.time_range();
    let s = s.clamp(schedule.ve_sigma(lo), schedule.ve_sigma(hi));
    let t = schedule.time_for_ve_sigma(s)?;
    problem.denoiser.denoise(&(x_ve * schedule.alpha(t)), t)
}

impl Sampler for Daps {
    fn name(&self) -> &'static str {
        "daps"
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
            ("sigma_max".to_string(), self.sigma_max.to_string()),
            ("sigma_min".to_string(), self.sigma_min.to_string()),
            ("ode_steps".to_string(), self.ode_steps.to_string()),
            ("ode_sigma_min".to_string(), self.ode_sigma_min.to_string()),
            ("mcmc_steps".to_string(), self.mcmc_steps.to_string()),
            ("lr".to_string(), self.lr.to_string()),
            ("lr_min_ratio".to_string(), self.lr_min_ratio.to_string()),
            ("tau".to_string(), self.tau.to_string()),
            ("loss".to_string(), self.loss.to_string()),
        ])
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        require_linear(problem, "it uses A^T for the data gradient")?;
        let schedule = problem.schedule;
        let forward = problem.forward;
        let (n, d) = (num_particles, problem.dim());

        // The annealing levels, clipped to the case's schedule, in time.
        let top = schedule.ve_sigma(problem.t_max);
        let bottom = schedule.ve_sigma(problem.t_min);
        let (s_hi, s_lo) =
            (self.sigma_max.min(top), self.sigma_min.max(bottom));
        ensure!(
            s_hi > s_lo,
            "sampler daps: the annealing range [{s_lo}, {s_hi}] is empty on \
             this schedule"
        );
        let t_hi = if s_hi < top {
            schedule.time_for_ve_sigma(s_hi)?
        } else {
            problem.t_max
        };
        let t_lo = if s_lo > bottom {
            schedule.time_for_ve_sigma(s_lo)?
        } else {
            problem.t_min
        };
        let annealing = Problem { t_max: t_hi, t_min: t_lo, ..*problem };
        let mut grid =
            annealing.grid(self.levels, Spacing::Karras { rho: 7.0 })?;
        // The last poly-7 level is replaced by 0, as in the code.
        grid.pop();
        let levels = grid.len();
        let (range_lo, _) = schedule.time_range();
        let ode_floor = self.ode_sigma_min.max(schedule.ve_sigma(range_lo));

        let y = DMatrix::from_fn(n, problem.observation.len(), |_, j| {
            problem.observation[j]
        });
        let data_factor = match self.loss {
            "code" => 2.0,
            _ => 1.0,
        } / (self.tau * self.tau);

        let mut x_ve = gaussian_noise(seed, INIT_STREAM, n, d)
            * schedule.ve_sigma(grid[0]);
        let mut recorder = Recorder::new(problem);
        for (k, &t) in grid.iter().enumerate() {
            let level = schedule.ve_sigma(t);
            let alpha = schedule.alpha(t);

            // 1. The ODE estimate of x0.
            let (x0hat, denoised) = if level > ode_floor {
                self.ode_estimate(problem, &x_ve, level, ode_floor)?
            } else {
                let denoised = denoise_ve(problem, schedule, &x_ve, level)?;
                (denoised.clone(), denoised)
            };
            recorder.offer(t, &(&x_ve * alpha), Some(&denoised));

            // 2. Langevin on N(x0hat, level^2 I) N(y; A x0, tau^2 / c I).
            let ratio = k as f64 / (levels + 1) as f64;
            let lr = self.lr * (1.0 + ratio * (self.lr_min_ratio - 1.0));
            let noise =
                gaussian_noise(seed, 2 * k as u64, n, d * self.mcmc_steps);
            let precision = 1.0 / (level * level);
            let mut x0 = x0hat.clone();
            for j in 0..self.mcmc_steps {
                let residual = forward.apply_batch(&x0) - &y;
                let data = forward.adjoint_batch(&residual)?;
                let score = data * (-data_factor) + (&x0hat - &x0) * precision;
                x0 += score * lr + noise.columns(j * d, d) * (2.0 * lr).sqrt();
            }
            if x0.iter().any(|v| !v.is_finite()) {
                return Err(Error::numerical(format!(
                    "sampler daps: the langevin chain diverged at level \
                     {level} (lr {lr}); lower lr"
                )));
            }

            // 3. Re-noise to the next level (0 after the last).
            x_ve = match grid.get(k + 1) {
                Some(&next) => {
                    let z = gaussian_noise(seed, 2 * k as u64 + 1, n, d);
                    x0 + z * schedule.ve_sigma(next)
                }
                None => x0,
            };
        }

        Ok(Run {
            particles: x_ve,
            final_time: 0.0,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
