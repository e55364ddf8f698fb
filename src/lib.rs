//! posterior-lens tests diffusion posterior samplers against exact answers.
//!
//! A diffusion posterior sampler (DPS, ΠGDM, TMPD, DAPS, DDRM, MCGdiff, ...)
//! solves `y = A x0 + noise` with a diffusion prior, replacing the
//! intractable likelihood `p(y | x_t)` at intermediate times with an
//! approximation. Whether that approximation distorts the posterior cannot
//! be seen on real images. With a finite training set (an empirical prior)
//! or any Gaussian mixture prior and a linear-Gaussian measurement, every
//! quantity is exact: the noised prior, the denoiser, the posterior
//! `p(x0 | y)`, the noised posterior `p_t(x_t | y)`, the likelihood
//! `p(y | x_t)` and its gradient. posterior-lens computes them, runs
//! faithful implementations of the popular samplers on such cases, and
//! compares, timestep by timestep.
//!
//! # Should I use this?
//!
//! Use it to find out whether a sampler gets the posterior right on cases
//! where the right answer is known: whether it under- or over-estimates
//! the spread at some time, misweights modes, puts mass where the
//! posterior has none, or depends on when it stops. Do not use it to score
//! image quality: its cases are small analytic problems and finite
//! training sets (such as the 1797 8x8 UCI digits), chosen because their
//! posterior is exact, not because they look like photographs.
//!
//! # Example
//!
//! The exact posterior of a built-in case, and the exact conditional
//! denoiser at a point:
//!
//! ```
//! use nalgebra::DVector;
//! use posterior_lens::case::Case;
//! use posterior_lens::truth::Truth;
//!
//! let case = Case::builtin("fsr-two-modes-1d")?;
//! let truth = Truth::new(&case)?;
//! // p(x0 | y) is again a two-component mixture.
//! assert_eq!(truth.posterior().num_components(), 2);
//! let at = truth.at(0.3)?;
//! let x = DVector::from_element(1, 0.2);
//! let conditional = at.conditional_denoise(x.as_view());
//! let unconditional = at.denoise(x.as_view());
//! // The observation y = 0.5 pulls the estimate of x0 towards it.
//! assert!(conditional[0] > unconditional[0]);
//! # Ok::<(), posterior_lens::Error>(())
//! ```
//!
//! # Auditing a sampler in `cargo test`
//!
//! [`audit::Audit`] runs a sampler on a case and tests its particles
//! against the exact posterior at every checkpoint; `check` returns the
//! report, or an error carrying the findings and a replay command, so it
//! works with `?` inside proptest and quickcheck properties
//! (see [`strategy`]); `assert_passes` panics with the failing numbers.
//!
//! ```
//! use posterior_lens::audit::Audit;
//! use posterior_lens::case::Case;
//! use posterior_lens::report::Failure;
//! use posterior_lens::sampler;
//!
//! let case = Case::builtin("fsr-gaussian-1d")?;
//! // The exact reverse transition passes.
//! let exact = sampler::build("exact:steps=20")?;
//! Audit::new().particles(500).assert_passes(&case, exact.as_ref());
//! // A sampler that drops the noise of its reverse steps collapses.
//! let broken = sampler::build("broken-no-noise:steps=50")?;
//! let report = Audit::new().particles(500).run(&case, broken.as_ref())?;
//! assert!(report.failures().contains(&Failure::SpreadTooNarrow));
//! # Ok::<(), posterior_lens::Error>(())
//! ```
//!
//! # Modules
//!
//! - [`schedule`]: `x_t = alpha_t x0 + sigma_t eps` for VP, DDPM, VE, EDM
//!   and rectified-flow schedules; time grids.
//! - [`mixture`]: the Gaussian mixture type and its closed forms (noising,
//!   conditioning, projection, densities, the batched denoiser).
//! - [`forward`]: forward models (dense, identity, masks, subsampling,
//!   blur, nonlinear maps for empirical priors).
//! - [`case`]: cases, the case file format and the built-in cases.
//! - [`truth`]: the exact posterior at every time, the exact likelihood and
//!   its gradient, and the exact reverse transition.
//! - [`sampler`]: the sampler contract and the samplers: reference
//!   (exact transition, exact-score integrators, the finite-sample
//!   reference), under test (DPS, ΠGDM, TMPD, DMPS, score-ALD, DDRM,
//!   DDNM+, DiffPIR, RED-diff, DAPS, MCGdiff, TDS) and deliberately broken
//!   ones.
//! - [`audit`]: the per-checkpoint diagnosis and the assertion API.
//! - [`report`]: the serde report, its text, Markdown and snapshot views.
//! - [`stats`]: hypothesis tests with exact or accurate null laws.
//! - [`strategy`]: proptest strategies and quickcheck `Arbitrary` for
//!   random cases.
//! - [`rng`]: named, seeded random streams.
//!
//! # Reproducibility
//!
//! Every random number comes from the run seed through ChaCha8 streams
//! keyed by purpose, step and a fixed-size chunk of particles. Parallel
//! work is split into those chunks and reduced in index order, so results
//! are bit-identical for a given seed whatever the number of threads.
//!
//! # What it does not check
//!
//! - Particles are assumed independent. SMC samplers return resampled,
//!   dependent particles (their checkpoint states are ancestors of the
//!   final particles); the tests then treat them as independent, which
//!   overstates the evidence.
//! - The early-stopping finding compares verdicts along the checkpoints;
//!   the law of a sampler's denoised output at an early stop is not
//!   compared with an exact counterpart.
//!
//! - Learned denoisers: the cases use exact denoisers, so a sampler is
//!   tested with a perfect prior score; errors of a trained network are
//!   outside the scope (an imperfect prior can be modelled as a different
//!   mixture).
//! - Nonlinear measurements are exact only for empirical priors (atoms),
//!   where the posterior is a reweighting of the training set.
//! - The empirical prior's posterior is the posterior of that training
//!   set; it approaches the population posterior only as the training set
//!   grows.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod case;
pub mod error;
pub mod exchange;
pub mod forward;
pub mod mixture;
pub mod report;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod stats;
pub mod strategy;
pub mod truth;

pub use error::{Error, ErrorKind, Result};
