//! Progress on stderr: a bar on a terminal, one plain line per finished
//! job otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, lines otherwise.
    Auto,
    /// A bar; nothing is drawn when stderr is not a terminal (use lines
    /// there).
    Bar,
    /// One line per finished job.
    Lines,
    /// Nothing.
    None,
}

/// Progress over a known number of jobs; safe to share between threads.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    total: usize,
    done: AtomicUsize,
}

impl Progress {
    /// Progress over `total` jobs.
    pub fn new(mode: ProgressMode, total: usize) -> Progress {
        let bar = match mode {
            ProgressMode::Bar => true,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Lines | ProgressMode::None => false,
        };
        let bar = bar.then(|| {
            let bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            lines: bar.is_none() && mode != ProgressMode::None,
            bar,
            total,
            done: AtomicUsize::new(0),
        }
    }

    /// A job started; `message` says which. A bar shows it next to the
    /// elapsed time; lines mode prints it.
    pub fn started(&self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
        } else if self.lines {
            eprintln!("{message} ...");
        }
    }

    /// One job finished; `message` says which and how it went.
    pub fn finished(&self, message: &str) {
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(bar) = &self.bar {
            bar.set_message(message.to_string());
            bar.inc(1);
        } else if self.lines {
            eprintln!("[{done}/{}] {message}", self.total);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
