//! Reference samplers: exact up to Monte-Carlo error, or up to the
//! discretisation error of a standard integrator driven by the exact
//! conditional score. They see the oracle; the audit must pass them.
//!
//! - `exact`: the exact reverse transition (DDIM with any `eta`; no
//!   discretisation error for any grid), started from exact draws of
//!   `p_T(. | y)`.
//! - `score`: a standard integrator with the exact conditional score
//!   `grad log p_t(x | y) = (alpha D_y(x) - x) / sigma^2`, where
//!   `D_y = E[x0 | x_t, y]`; isolates discretisation error:
//!
//!   ```text
//!   em:    x <- x + [-f_t x + g_t^2 s(x, t)] h + g_t sqrt(h) z      (reverse SDE)
//!   ddpm:  x_s = a x_t + b D_y(x_t) + c z   with eta = 1             (ancestral)
//!   ddim:  x_s = a x_t + b D_y(x_t)         with eta = 0             (PF-ODE)
//!   ```
//!
//! - `fsr`: the finite-sample reference of Burns & Fridovich-Keil (2026):
//!   reverse Euler-Maruyama on the VP SDE from an N(0, I) start, with the
//!   atoms' exact likelihood score added to the prior score (their code's
//!   defaults: 1000 steps, `t_min = 1e-3`). Needs an empirical prior.

use std::collections::BTreeMap;

use super::{
    Entry, Problem, Recorder, Run, Sampler, SamplerKind, Settings,
    TrajectoryMeaning, gaussian_noise,
};
use crate::error::Result;
use nalgebra::DMatrix;

use crate::mixture::{self, Backward};
use crate::schedule::Spacing;
use crate::truth::ddim_coefficients;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "exact",
            kind: SamplerKind::Reference,
            summary: "exact reverse transition (DDIM with any eta) from \
                      exact draws of p_T(.|y); no discretisation error",
            build: |s| Ok(Box::new(ExactTransition::from_settings(s)?)),
        },
        Entry {
            name: "score",
            kind: SamplerKind::Reference,
            summary: "reverse SDE (em), DDPM ancestral (ddpm) or PF-ODE \
                      (ddim) driven by the exact conditional score",
            build: |s| Ok(Box::new(ScoreSampler::from_settings(s, false)?)),
        },
        Entry {
            name: "fsr",
            kind: SamplerKind::Reference,
            summary: "finite-sample reference (Burns & Fridovich-Keil 2026): \
                      VP reverse Euler-Maruyama with the atoms' exact \
                      likelihood score, N(0, I) start",
            build: |s| Ok(Box::new(ScoreSampler::from_settings(s, true)?)),
        },
    ]
}

/// The exact reverse transition as a sampler.
#[derive(Clone, Debug)]
pub struct ExactTransition {
    /// DDIM `eta` in `[0, 1]` (1: ancestral).
    pub eta: f64,
    /// Number of steps.
    pub steps: usize,
}

impl ExactTransition {
    fn from_settings(s: &mut Settings) -> Result<ExactTransition> {
        Ok(ExactTransition {
            eta: s.f64("eta", 1.0, "must lie in [0, 1]", |v| {
                (0.0..=1.0).contains(&v)
            })?,
            steps: s.count("steps", 50)?,
        })
    }
}

impl Sampler for ExactTransition {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::Reference
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
        let truth = problem.oracle()?;
        let grid = problem.grid(self.steps, Spacing::Uniform)?;
        let mut recorder = Recorder::new(problem);
        let mut x = truth.sample_at(grid[0], num_particles, seed);
        recorder.offer(grid[0], &x, None);
        for (step, pair) in grid.windows(2).enumerate() {
            let at = truth.at(pair[0])?;
            x = at.reverse_step(&x, pair[1], self.eta, seed, step as u64)?;
            recorder.offer(pair[1], &x, None);
        }
        Ok(Run {
            particles: x,
            final_time: *grid.last().expect("a grid has two times"),
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}

/// A standard integrator driven by an exact score (see the module docs).
#[derive(Clone, Debug)]
pub struct ScoreSampler {
    /// `em`, `ddpm` or `ddim`.
    pub method: &'static str,
    /// Number of steps.
    pub steps: usize,
    /// `fsr`: the finite-sample reference (N(0, I) start, atoms' score).
    pub finite_sample: bool,
    /// Grid spacing: `logsnr` (default), `quadratic` or `uniform`.
    pub spacing: &'static str,
    /// `fsr` only: skip cells of atoms whose softmax mass is provably
    /// below this fraction of the total at every step (see
    /// [`mixture::AtomCells`]); 0 (the default) evaluates every atom.
    pub truncate: f64,
}

impl ScoreSampler {
    fn from_settings(s: &mut Settings, fsr: bool) -> Result<ScoreSampler> {
        if fsr {
            return Ok(ScoreSampler {
                method: "em",
                steps: s.count("steps", 1000)?,
                finite_sample: true,
                spacing: spacing(s)?,
                truncate: s.f64(
                    "truncate",
                    0.0,
                    "must lie in [0, 1e-3]",
                    |v| (0.0..=1e-3).contains(&v),
                )?,
            });
        }
        Ok(ScoreSampler {
            method: s.choice("method", "em", &["em", "ddpm", "ddim"])?,
            steps: s.count("steps", 500)?,
            finite_sample: false,
            spacing: spacing(s)?,
            truncate: 0.0,
        })
    }
}

impl Sampler for ScoreSampler {
    fn name(&self) -> &'static str {
        if self.finite_sample { "fsr" } else { "score" }
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::Reference
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        let mut s = BTreeMap::from([
            ("steps".into(), self.steps.to_string()),
            ("spacing".into(), self.spacing.to_string()),
        ]);
        if !self.finite_sample {
            s.insert("method".into(), self.method.to_string());
        } else if self.truncate > 0.0 {
            s.insert("truncate".into(), self.truncate.to_string());
        }
        s
    }

    fn likelihood_score(
        &self,
        problem: &Problem<'_>,
        xs: &DMatrix<f64>,
        t: f64,
    ) -> Option<Result<DMatrix<f64>>> {
        // The exact likelihood score: the lens must read cosine 1 and norm
        // ratio 1 for this sampler.
        let score = || -> Result<DMatrix<f64>> {
            let at = problem.oracle()?.at(t)?;
            Ok(mixture::map_rows(xs, xs.ncols(), |x| {
                at.likelihood_score(x.as_view())
            }))
        };
        Some(score())
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        let truth = problem.oracle()?;
        let d = problem.dim();
        let schedule = problem.schedule;
        if self.finite_sample && !truth.prior().is_atomic() {
            return Err(super::declined(
                "needs an empirical prior (a training set)",
            ));
        }
        let grid = problem.grid(
            self.steps,
            match self.spacing {
                "uniform" => Spacing::Uniform,
                "quadratic" => Spacing::Quadratic,
                _ => Spacing::LogSnr,
            },
        )?;
        let mut x = if self.finite_sample {
            // Burns' code starts from N(0, I), the VP stationary law.
            gaussian_noise(seed, u64::MAX >> 8, num_particles, d)
        } else {
            truth.sample_at(grid[0], num_particles, seed)
        };
        // With truncation, the posterior atoms are grouped into cells once.
        let cells = if self.finite_sample && self.truncate > 0.0 {
            Some(mixture::AtomCells::new(truth.posterior())?)
        } else {
            None
        };
        let mut recorder = Recorder::new(problem);
        recorder.offer(grid[0], &x, None);
        for (step, pair) in grid.windows(2).enumerate() {
            let (t, s) = (pair[0], pair[1]);
            let (alpha, sigma) = schedule.alpha_sigma(t);
            // The exact conditional denoiser D_y = E[x0 | x_t, y]: for the
            // fsr sampler from the atoms' reweighted softmax (the training
            // set times the likelihood of y under each atom).
            let denoised = match &cells {
                Some(cells) => {
                    let (denoised, neglected) =
                        cells.denoise_batch(alpha, sigma, &x, self.truncate);
                    debug_assert!(neglected <= self.truncate);
                    denoised
                }
                None => Backward::new(truth.posterior(), alpha, sigma)?
                    .denoise_batch(&x),
            };
            let z = gaussian_noise(seed, step as u64, num_particles, d);
            x = match self.method {
                "em" => {
                    let h = t - s;
                    let f = schedule.drift(t);
                    let g2 = schedule.diffusion_squared(t);
                    let score =
                        (denoised.clone() * alpha - &x) / (sigma * sigma);
                    &x + (x.clone() * (-f) + score * g2) * h
                        + z * (g2 * h).sqrt()
                }
                method => {
                    let eta = if method == "ddpm" { 1.0 } else { 0.0 };
                    let (a, b, c) = ddim_coefficients(
                        (alpha, sigma),
                        schedule.alpha_sigma(s),
                        eta,
                    );
                    x.clone() * a + denoised.clone() * b + z * c
                }
            };
            recorder.offer(s, &x, None);
            debug_assert!(x.iter().all(|v| v.is_finite()));
        }
        Ok(Run {
            particles: x,
            final_time: *grid.last().expect("a grid has two times"),
            log_weights: None,
            trajectory: recorder.finish(),
        })
    }
}

/// The `spacing` setting of the score-driven samplers. The default is
/// uniform in log-SNR: near `t = 0` an empirical prior's score changes on
/// the scale of `sigma_t`, and a grid uniform in `t` (Burns' code) leaves
/// visible discretisation error at `t_min = 1e-3` (`spacing=uniform`
/// shows it).
fn spacing(s: &mut Settings) -> Result<&'static str> {
    s.choice("spacing", "logsnr", &["logsnr", "quadratic", "uniform"])
}
