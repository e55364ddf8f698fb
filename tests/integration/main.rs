//! Integration tests: one binary, one module per area.

mod audit;
mod calibration;
mod case_files;
mod cli;
mod extremes;
mod findings;
mod forward;
mod fsr_convergence;
mod identities;
mod perf;
mod reference;
mod sampler_guidance;
mod sampler_smc;
mod sampler_spectral;
mod samplers;
mod schedule;
mod snapshots;
mod stats;
mod util;
