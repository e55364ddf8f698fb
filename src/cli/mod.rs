//! The subcommands, one module per area.

pub mod flags;
pub mod gate;
pub mod info;
pub mod output;
pub mod progress;
pub mod survey;
pub mod timing;

/// `n` and the noun, plural unless `n` is 1: `1 cell`, `3 cells`.
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 { format!("{n} {noun}") } else { format!("{n} {noun}s") }
}
