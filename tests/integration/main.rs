//! Integration tests: one binary, one module per area.

mod audit;
mod case_files;
mod cli;
mod extremes;
mod forward;
mod identities;
mod reference;
mod samplers;
mod schedule;
mod stats;
mod util;
