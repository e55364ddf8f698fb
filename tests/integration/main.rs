//! Integration tests: one binary, one module per area.

mod case_files;
mod forward;
mod identities;
mod reference;
mod sampler_guidance;
mod samplers;
mod schedule;
mod util;
