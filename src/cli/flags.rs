//! Flag values that name a case or a sampler, read with the exit code the
//! contract asks for: a value that names nothing (an unknown built-in
//! case, an unknown sampler or setting, a setting out of range) is usage
//! (exit 2); a case file that cannot be read or is invalid is bad input
//! (exit 3).

use std::path::Path;

use posterior_lens::case::Case;
use posterior_lens::sampler::{self, Sampler};
use posterior_lens::{Error, ErrorKind};

/// The case that `value` of `flag` names: a case file when such a file
/// exists (or the value ends in `.json`), a built-in case otherwise.
pub fn case(flag: &str, value: &str) -> Result<Case, Error> {
    if Path::new(value).is_file() || value.ends_with(".json") {
        return Case::load(value);
    }
    match Case::builtin(value) {
        Err(err) if !Case::builtin_names().contains(&value) => {
            Err(usage(flag, value, err))
        }
        other => other,
    }
}

/// The sampler that `spec` (`name[:key=value,...]`) of `flag` names.
pub fn sampler(flag: &str, spec: &str) -> Result<Box<dyn Sampler>, Error> {
    sampler::build(spec).map_err(|err| usage(flag, spec, err))
}

/// A usage error naming the flag and its value, with the library's
/// reason as the cause.
fn usage(flag: &str, value: &str, reason: Error) -> Error {
    Error::new(ErrorKind::Usage, format!("{flag} {value}")).with_source(reason)
}
