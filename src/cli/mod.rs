//! The subcommands, one module per area.

pub mod flags;
pub mod gate;
pub mod info;
pub mod output;
pub mod progress;
pub mod survey;
pub mod timing;
