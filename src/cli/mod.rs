//! The subcommands, one module per area.

pub mod gate;
pub mod info;
pub mod progress;
pub mod survey;
pub mod timing;
