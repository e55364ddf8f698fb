//! posterior-lens: tests diffusion posterior samplers against exact
//! posteriors.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod case;
pub mod error;
pub mod forward;
pub mod mixture;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod stats;
pub mod truth;

pub use error::{Error, ErrorKind, Result};
