//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// The `posterior-lens` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_posterior-lens"))
}

/// The `fixtures/` directory, independent of the working directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}
