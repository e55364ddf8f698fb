//! RED-diff, regularisation by denoising diffusion (Mardani, Song, Kautz,
//! Vahdat, ICLR 2024).

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::{at_least_two, centred_observation, require_linear};
use crate::error::Result;
use crate::sampler::{
    Problem, Recorder, Run, Sampler, SamplerKind, Settings, TrajectoryMeaning,
    gaussian_noise,
};

/// The weightings of the denoising term that the authors' code offers.
const WEIGHTINGS: &[&str] =
    &["linear", "sqrt", "square", "log", "trunc_linear", "const"];

/// RED-diff: a variational point estimate fitted by Adam, with the
/// diffusion model as a regulariser swept from `t_max` to `t_min`.
///
/// **Approximation of `p(y | x_t)`.** None: RED-diff fits
/// `q(x0) = N(mu, sigma_v^2 I)` with `sigma_v = 0` (the published default),
/// i.e. a point `mu`, by minimising the data misfit plus a score-matching
/// regulariser. Its output is a point estimate per particle, so the spread
/// across particles is near zero by construction (maximal
/// `spread_too_narrow`).
///
/// **Particles.** Each particle is an independent run of the optimiser
/// with its own noise draws `eps` (the code draws `randn_like` per batch
/// element too). All particles start from the same `A^+ (y - b)`, so any
/// spread between them comes only from those noise draws.
///
/// **Update**, one Adam step per grid time `t` (from `t_max` down):
///
/// ```text
/// x_t    = alpha_t mu + sigma_t eps,  eps ~ N(0, I)
/// epshat = (x_t - alpha_t D(x_t, t)) / sigma_t        (stop-gradient)
/// loss   = w_t mean((epshat - eps) * mu) + v |y - b - A mu|^2 / (2 m)
/// grad   = w_t (epshat - eps) / d + v A^T (A mu + b - y) / m
/// w_t    = lambda * weight(sigma_t / alpha_t),  weight = linear: identity
/// Adam(lr, betas = (0.9, 0.99), eps = 1e-8) on mu
/// ```
///
/// The `mean` is over the `d` (or `m`) coordinates of one particle; the
/// code also averages over the batch, which scales every gradient by
/// `1 / n` and, Adam being scale-invariant up to its `1e-8`, changes
/// nothing else, so it is left out to keep particles independent.
///
/// The grid has `steps` times from `t_max` to `t_min`, spaced by the
/// schedule's default (uniform in `t`, as the code's DDIM grid; Karras for
/// EDM). The
/// recorded states are `mu` after the update at each checkpoint time:
/// estimates of `x0` (`TrajectoryMeaning::Denoised`); the output is the
/// final `mu` (`final_time = 0`).
///
/// **Defaults and sources.** `NVlabs/RED-diff` `_configs/algo/reddiff.yaml`:
/// `lr = 0.1`, `grad_term_weight = 0.25` (`lambda`), `obs_weight = 1`,
/// `denoise_term_weight = linear`, `sigma_x0 = 0`, `eta = 0`, `awd = True`;
/// `algos/reddiff.py`: Adam betas `(0.9, 0.99)`, the start `H_pinv(y)`, the
/// loss and the weightings. Steps: `_configs/exp/default.yaml` has
/// `num_steps: 50`, the README example uses 100 (with `lr = 0.5`); the
/// paper's value is unverified. The `power2over3` weighting is omitted.
#[derive(Clone, Debug)]
pub struct RedDiff {
    /// Adam learning rate, positive.
    pub lr: f64,
    /// Weight of the denoising term (`grad_term_weight`), non-negative.
    pub lambda: f64,
    /// Weight of the data term (`obs_weight`), non-negative.
    pub obs_weight: f64,
    /// The weighting of the denoising term in `sigma_t / alpha_t`.
    pub weighting: &'static str,
    /// Number of Adam steps (denoiser calls), at least 2.
    pub steps: usize,
}

impl RedDiff {
    pub(super) fn from_settings(s: &mut Settings) -> Result<RedDiff> {
        let non_negative = |v: f64| v >= 0.0;
        Ok(RedDiff {
            lr: s.f64("lr", 0.1, "must be positive", |v| v > 0.0)?,
            lambda: s.f64(
                "lambda",
                0.25,
                "must be non-negative",
                non_negative,
            )?,
            obs_weight: s.f64(
                "obs_weight",
                1.0,
                "must be non-negative",
                non_negative,
            )?,
            weighting: s.choice("weighting", "linear", WEIGHTINGS)?,
            steps: at_least_two("red-diff", s.count("steps", 50)?)?,
        })
    }

    /// The weight of the denoising term at `snr_inv = sigma_t / alpha_t`.
    fn weight(&self, snr_inv: f64) -> f64 {
        let w = match self.weighting {
            "sqrt" => snr_inv.sqrt(),
            "square" => snr_inv * snr_inv,
            "log" => snr_inv.ln_1p(),
            "trunc_linear" => snr_inv.min(1.0),
            "const" => 1.0,
            _ => snr_inv,
        };
        self.lambda * w
    }
}

impl Sampler for RedDiff {
    fn name(&self) -> &'static str {
        "red-diff"
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::UnderTest
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::Denoised
    }

    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("lr".to_string(), self.lr.to_string()),
            ("lambda".to_string(), self.lambda.to_string()),
            ("obs_weight".to_string(), self.obs_weight.to_string()),
            ("weighting".to_string(), self.weighting.to_string()),
            ("steps".to_string(), self.steps.to_string()),
        ])
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        require_linear(problem, "it uses A^T for the data term")?;
        let schedule = problem.schedule;
        let forward = problem.forward;
        let (n, d) = (num_particles, problem.dim());
        let m = forward.output_dim() as f64;
        let grid = problem.grid(self.steps - 1, schedule.default_spacing())?;

        let start = forward
            .pseudo_inverse_apply(centred_observation(problem).column(0))?;
        let mut mu = DMatrix::from_fn(n, d, |_, j| start[j]);
        let (beta1, beta2, tiny) = (0.9_f64, 0.99_f64, 1e-8);
        let mut first = DMatrix::<f64>::zeros(n, d);
        let mut second = DMatrix::<f64>::zeros(n, d);

        let mut recorder = Recorder::new(problem);
        for (k, &t) in grid.iter().enumerate() {
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let eps = gaussian_noise(seed, k as u64, n, d);
            let xt = &mu * alpha + &eps * sigma;
            let denoised = problem.denoiser.denoise(&xt, t)?;
            let eps_hat = (&xt - &denoised * alpha) / sigma;

            // The gradient of the per-particle loss (apply_batch adds b).
            let residual = forward.apply_batch(&mu)
                - DMatrix::from_fn(n, problem.observation.len(), |_, j| {
                    problem.observation[j]
                });
            let data_grad = forward.adjoint_batch(&residual)?;
            let w = self.weight(schedule.ve_sigma(t));
            let grad = (eps_hat - eps) * (w / d as f64)
                + data_grad * (self.obs_weight / m);

            // Adam, elementwise.
            let step = k as i32 + 1;
            let (fix1, fix2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
            first = first * beta1 + &grad * (1.0 - beta1);
            second = second * beta2 + grad.map(|g| g * g) * (1.0 - beta2);
            mu.zip_zip_apply(&first, &second, |value, m1, m2| {
                *value -= self.lr * (m1 / fix1) / ((m2 / fix2).sqrt() + tiny);
            });
            recorder.offer(t, &mu, None);
        }

        Ok(Run {
            particles: mu,
            final_time: 0.0,
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}
