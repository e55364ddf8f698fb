//! The crate's one error type.
//!
//! Every fallible function in the library returns [`Error`]. Its message is
//! a single lowercase line that names the offending field and value, for
//! example `noise_std must be positive, got -0.1`; the underlying cause (an
//! I/O or parse error) is kept in [`std::error::Error::source`] rather than
//! repeated in the message.

use std::fmt;

/// What kind of problem an [`Error`] reports.
///
/// The command line maps every kind to exit code 3 ("bad input") except
/// [`ErrorKind::Usage`], which maps to 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A value is out of range, malformed or inconsistent with another.
    InvalidInput,
    /// A file could not be read or written.
    Io,
    /// A computation met a value it cannot work with (for example a
    /// covariance that is not positive definite).
    Numerical,
    /// The caller combined options that do not go together.
    Usage,
}

/// An error from posterior-lens: a kind, a one-line message and an optional
/// cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of the given kind with a one-line message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), source: None }
    }

    /// Shorthand for an [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for an [`ErrorKind::Numerical`] error.
    pub fn numerical(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Numerical, message)
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        self.source = Some(Box::new(source));
        self
    }

    /// Prefixes the message with where the problem was found, for example
    /// a file name or the path of a field (`prior.weights[2]`).
    pub fn context(mut self, context: impl fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The one-line message, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns an [`ErrorKind::InvalidInput`] error from the enclosing function
/// unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if $cond {
        } else {
            return Err($crate::error::Error::invalid(format!($($arg)+)));
        }
    };
}
pub(crate) use ensure;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_message_and_keeps_kind() {
        let err = Error::invalid("noise_std must be positive, got -0.1")
            .context("case.json");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.to_string(),
            "case.json: noise_std must be positive, got -0.1"
        );
    }

    #[test]
    fn source_is_kept_out_of_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err =
            Error::new(ErrorKind::Io, "cannot read case.json").with_source(io);
        assert_eq!(err.to_string(), "cannot read case.json");
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "gone");
    }
}
