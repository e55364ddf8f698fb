//! Deliberately broken samplers, for the harness's own power tests: each
//! is an exact reference sampler with one strong, known defect, so the
//! audit must name a specific failure for it. They see the oracle.
//!
//! - `broken-no-noise`: the exact conditional-score DDPM sampler without
//!   its noise term; expected finding `spread_too_narrow`.
//! - `broken-double-guidance`: prior score + 2 x exact likelihood score;
//!   `spread_too_narrow`, `mode_misweighted`.
//! - `broken-dropped-mode`: exact sampler of the posterior without its
//!   heaviest component; `mode_misweighted` (a missing mode).
//! - `broken-no-likelihood`: exact sampler of the prior, ignoring `y`;
//!   `unsupported_mode`, `spread_too_wide`.
//!
//! The first two run the DDPM ancestral step (DDIM with `eta = 1`) on the
//! exact conditional denoiser `D_y = E[x0 | x_t, y]`, started from exact
//! draws of `p_T(. | y)`:
//!
//! ```text
//! broken-no-noise:        x_s = a x_t + b D_y(x_t)       (c z dropped)
//! broken-double-guidance: x_s = a x_t + b (2 D_y - D)(x_t) + c z
//!   (2 D_y - D = D + 2 (sigma^2/alpha) grad log p(y | x_t): the likelihood
//!    score counted twice)
//! ```
//!
//! The last two run the exact reverse transition (no discretisation
//! error) of a wrong target mixture, started from its exact noised law:
//! the posterior with its heaviest component removed and the rest
//! renormalised, or the prior. A posterior with a single component has no
//! mode to drop: `broken-dropped-mode` then samples the posterior exactly,
//! so it is only a broken sampler on cases with at least two posterior
//! components.

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::{
    Entry, Problem, Recorder, Run, Sampler, SamplerKind, Settings,
    TrajectoryMeaning, gaussian_noise,
};
use crate::error::Result;
use crate::mixture::{Backward, Covariances, Mixture, stack_rows};
use crate::rng::{self, CHUNK, Purpose};
use crate::truth::ddim_coefficients;

pub(super) fn entries() -> Vec<Entry> {
    vec![
        Entry {
            name: "broken-no-noise",
            kind: SamplerKind::Broken,
            summary: "broken on purpose: exact conditional-score DDPM with \
                      the noise term removed (collapses the spread)",
            build: |s| Broken::from_settings(s, Defect::NoNoise),
        },
        Entry {
            name: "broken-double-guidance",
            kind: SamplerKind::Broken,
            summary: "broken on purpose: prior score + 2 x exact likelihood \
                      score in DDPM (over-weights the likelihood)",
            build: |s| Broken::from_settings(s, Defect::DoubleGuidance),
        },
        Entry {
            name: "broken-dropped-mode",
            kind: SamplerKind::Broken,
            summary: "broken on purpose: exact sampler of the posterior \
                      without its heaviest component (needs >= 2 posterior \
                      components; otherwise exact)",
            build: |s| Broken::from_settings(s, Defect::DroppedMode),
        },
        Entry {
            name: "broken-no-likelihood",
            kind: SamplerKind::Broken,
            summary: "broken on purpose: exact sampler of the prior, \
                      ignoring y",
            build: |s| Broken::from_settings(s, Defect::NoLikelihood),
        },
    ]
}

/// The defect of a broken sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Defect {
    NoNoise,
    DoubleGuidance,
    DroppedMode,
    NoLikelihood,
}

/// A reference sampler with one deliberate defect (see the module docs).
#[derive(Clone, Debug)]
struct Broken {
    defect: Defect,
    steps: usize,
}

impl Broken {
    fn from_settings(
        s: &mut Settings,
        defect: Defect,
    ) -> Result<Box<dyn Sampler>> {
        let default_steps = match defect {
            Defect::NoNoise | Defect::DoubleGuidance => 100,
            Defect::DroppedMode | Defect::NoLikelihood => 50,
        };
        let steps = s.count("steps", default_steps)?;
        Ok(Box::new(Broken { defect, steps }))
    }

    /// DDPM on the exact conditional denoiser, without noise or with the
    /// likelihood score doubled.
    fn run_ddpm(
        &self,
        problem: &Problem<'_>,
        n: usize,
        seed: u64,
    ) -> Result<Run> {
        let truth = problem.oracle()?;
        let d = problem.dim();
        let schedule = problem.schedule;
        let grid = problem.grid(self.steps, schedule.default_spacing())?;
        let mut x = truth.sample_at(grid[0], n, seed);
        let mut recorder = Recorder::new(problem);
        recorder.offer(grid[0], &x, None);
        for (step, pair) in grid.windows(2).enumerate() {
            let (alpha, sigma) = schedule.alpha_sigma(pair[0]);
            let posterior = Backward::new(truth.posterior(), alpha, sigma)?;
            let conditional = posterior.denoise_batch(&x);
            let (a, b, c) = ddim_coefficients(
                (alpha, sigma),
                schedule.alpha_sigma(pair[1]),
                1.0,
            );
            x = if self.defect == Defect::NoNoise {
                x * a + conditional * b
            } else {
                let prior = problem.denoiser.denoise(&x, pair[0])?;
                let doubled = conditional * 2.0 - prior;
                let z = gaussian_noise(seed, step as u64, n, d);
                x * a + doubled * b + z * c
            };
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

impl Sampler for Broken {
    fn name(&self) -> &'static str {
        match self.defect {
            Defect::NoNoise => "broken-no-noise",
            Defect::DoubleGuidance => "broken-double-guidance",
            Defect::DroppedMode => "broken-dropped-mode",
            Defect::NoLikelihood => "broken-no-likelihood",
        }
    }

    fn kind(&self) -> SamplerKind {
        SamplerKind::Broken
    }

    fn trajectory_meaning(&self) -> TrajectoryMeaning {
        TrajectoryMeaning::NoisedPosterior
    }

    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("steps".to_string(), self.steps.to_string())])
    }

    fn run(
        &self,
        problem: &Problem<'_>,
        num_particles: usize,
        seed: u64,
    ) -> Result<Run> {
        let truth = problem.oracle()?;
        match self.defect {
            Defect::NoNoise | Defect::DoubleGuidance => {
                self.run_ddpm(problem, num_particles, seed)
            }
            Defect::DroppedMode => {
                let target = without_heaviest(truth.posterior())?;
                exact_chain(problem, &target, self.steps, num_particles, seed)
            }
            Defect::NoLikelihood => exact_chain(
                problem,
                truth.prior(),
                self.steps,
                num_particles,
                seed,
            ),
        }
    }
}

/// The mixture without its heaviest component, renormalised; a single
/// component is kept.
fn without_heaviest(mixture: &Mixture) -> Result<Mixture> {
    let count = mixture.num_components();
    if count == 1 {
        return Ok(mixture.clone());
    }
    let heaviest = mixture.log_weights().argmax().0;
    let keep: Vec<usize> = (0..count).filter(|&k| k != heaviest).collect();
    let log_weights = mixture.log_weights().select_rows(keep.iter());
    let means = mixture.means().select_rows(keep.iter());
    let covariances = match mixture.covariances() {
        Covariances::Atoms => Covariances::Atoms,
        Covariances::Isotropic(v) => {
            Covariances::Isotropic(v.select_rows(keep.iter()))
        }
        Covariances::Diagonal(v) => {
            Covariances::Diagonal(v.select_rows(keep.iter()))
        }
        Covariances::Full(c) => {
            Covariances::Full(keep.iter().map(|&k| c[k].clone()).collect())
        }
    };
    Mixture::from_log_weights(log_weights, means, covariances)
}

/// The exact reverse transition (DDPM, `eta = 1`) of `target` along the
/// problem's grid, from exact draws of its noised law: an exact sampler of
/// `target` noised to every time.
fn exact_chain(
    problem: &Problem<'_>,
    target: &Mixture,
    steps: usize,
    n: usize,
    seed: u64,
) -> Result<Run> {
    let d = problem.dim();
    let schedule = problem.schedule;
    let grid = problem.grid(steps, schedule.default_spacing())?;
    let (alpha, sigma) = schedule.alpha_sigma(grid[0]);
    let mut x = target.noised(alpha, sigma).sample(n, seed);
    let mut recorder = Recorder::new(problem);
    recorder.offer(grid[0], &x, None);
    for (step, pair) in grid.windows(2).enumerate() {
        let (alpha, sigma) = schedule.alpha_sigma(pair[0]);
        let backward = Backward::new(target, alpha, sigma)?;
        let (a, b, c) = ddim_coefficients(
            (alpha, sigma),
            schedule.alpha_sigma(pair[1]),
            1.0,
        );
        let chunks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|chunk| {
                let start = chunk * CHUNK;
                let rows = CHUNK.min(n - start);
                let stream = ((step as u64) << 24) | chunk as u64;
                let mut rng = rng::stream(seed, Purpose::Sampler, stream);
                let mut out = DMatrix::zeros(rows, d);
                for i in 0..rows {
                    let xi = x.row(start + i).transpose();
                    let x0 = backward.sample_posterior(xi.as_view(), &mut rng);
                    let z = DVector::from_fn(d, |_, _| {
                        StandardNormal.sample(&mut rng)
                    });
                    let next = xi * a + x0 * b + z * c;
                    out.set_row(i, &next.transpose());
                }
                out
            })
            .collect();
        x = stack_rows(&chunks, d);
        recorder.offer(pair[1], &x, None);
    }
    Ok(Run {
        particles: x,
        final_time: *grid.last().expect("a grid has two times"),
        log_weights: None,
        trajectory: recorder.finish(),
    })
}
