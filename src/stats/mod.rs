//! Hypothesis tests.
