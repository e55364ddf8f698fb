//! Output files: checked before a command does its work, written all
//! together once it has succeeded, so that a failing command leaves no
//! partial outputs.

use std::path::{Path, PathBuf};

use posterior_lens::exchange;
use posterior_lens::{Error, ErrorKind};

/// A file a command is going to write, and the flag that asked for it.
pub struct Planned<'a> {
    /// The flag, e.g. `--out`.
    pub flag: &'a str,
    /// The flag's value as given (a directory for `--out`).
    pub value: &'a Path,
    /// The file.
    pub file: PathBuf,
}

impl<'a> Planned<'a> {
    /// The file named by the flag itself (`--junit FILE`).
    pub fn file(flag: &'a str, file: &'a Path) -> Planned<'a> {
        Planned { flag, value: file, file: file.to_path_buf() }
    }

    /// The files named `names` in the directory the flag names
    /// (`--out DIR`).
    pub fn in_dir(
        flag: &'a str,
        dir: &'a Path,
        names: &[&str],
    ) -> Vec<Planned<'a>> {
        names
            .iter()
            .map(|name| Planned { flag, value: dir, file: dir.join(name) })
            .collect()
    }
}

/// Checks that every planned file can be written: it is not a directory,
/// nothing on the way to it is a file, and no two flags name the same
/// file. A bad path is a usage error naming the flag and its value.
pub fn check(planned: &[Planned<'_>]) -> Result<(), Error> {
    for (i, p) in planned.iter().enumerate() {
        let given = format!("{} {}", p.flag, p.value.display());
        if p.file.is_dir() {
            return Err(usage(if p.file == p.value {
                format!("{given} is a directory; name a file")
            } else {
                format!("{given}: {} is a directory", p.file.display())
            }));
        }
        let parent = p.file.parent().filter(|d| !d.as_os_str().is_empty());
        let existing = parent.and_then(|d| d.ancestors().find(|a| a.exists()));
        if let Some(blocker) = existing.filter(|a| !a.is_dir()) {
            return Err(usage(format!(
                "{given}: {} is a file, not a directory",
                blocker.display()
            )));
        }
        if let Some(other) = planned[..i].iter().find(|o| o.file == p.file) {
            return Err(usage(format!(
                "{given}: {} writes {} too",
                if other.flag == p.flag {
                    other.flag.to_string()
                } else {
                    format!("{} {}", other.flag, other.value.display())
                },
                p.file.display()
            )));
        }
    }
    Ok(())
}

/// Writes every file or none, then names each on stderr after `command`.
pub fn write(command: &str, files: &[(PathBuf, Vec<u8>)]) -> Result<(), Error> {
    exchange::write_all(files)?;
    for (path, _) in files {
        eprintln!("{command}: wrote {}", path.display());
    }
    Ok(())
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}
