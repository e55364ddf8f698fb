//! The `posterior-lens` command line.
//!
//! Results go to stdout, progress and errors to stderr. Exit codes: 0 ok,
//! 1 failures found (gated commands: `audit`, `check`), 2 usage, 3 bad
//! input. A closed stdout (`| head`) is not an error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use posterior_lens::{Error, ErrorKind};

mod cli;

use cli::progress::ProgressMode;

const AFTER_HELP: &str = "\
Exit codes: 0 ok (survey: it ran, whatever it found), 1 failures found \
(audit, check), 2 usage (a bad flag value, such as an unknown case or \
sampler name, a bad sampler setting, a sampler that does not apply to \
the case or an output path that cannot be written), 3 bad input (a case or run file that cannot be read or is \
invalid). Errors are one line on stderr naming the flag or file, the \
field and the value; a failing command writes no output file.";

/// Tests diffusion posterior samplers against exact posteriors.
#[derive(Parser)]
#[command(name = "posterior-lens", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human, global = true)]
    format: Format,
    /// Progress on stderr: a bar on a terminal, plain lines otherwise.
    #[arg(
        long,
        value_enum,
        default_value_t = ProgressMode::Auto,
        global = true
    )]
    progress: ProgressMode,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every built-in sampler on the standard suite of built-in cases
    /// and prints the failure matrix (exit 0 whatever it finds).
    Survey(cli::survey::SurveyArgs),
    /// Combines survey shard reports (survey --shard i/n) into one.
    Merge(cli::survey::MergeArgs),
    /// Audits one built-in sampler on one case; exit 1 on any finding.
    Audit {
        #[command(flatten)]
        gate: GateArgs,
        /// The sampler and its settings: name[:key=value,...].
        #[arg(long)]
        sampler: String,
        /// Number of particles the sampler draws.
        #[arg(long, default_value_t = 1000)]
        particles: usize,
    },
    /// Audits samples written by an external program (a run directory of
    /// NPY files); exit 1 on any finding.
    Check {
        #[command(flatten)]
        gate: GateArgs,
        /// The run directory: samples.npy, optional log_weights.npy,
        /// trajectory.npy with trajectory_times.npy, run.json. The particle
        /// count is the number of samples in samples.npy: check takes no
        /// --particles.
        #[arg(long)]
        samples: PathBuf,
        /// Refused with a usage error rather than ignored (audit's flag).
        #[arg(long, hide = true, allow_hyphen_values = true)]
        particles: Option<String>,
    },
    /// Writes everything an external sampler needs: case.json, NPY arrays
    /// and probe points of the exact denoiser.
    Export {
        /// A built-in case name or a path to a case file.
        #[arg(long)]
        case: String,
        /// The directory to write.
        #[arg(long)]
        out: PathBuf,
        /// Checkpoint times (comma separated); the audit's defaults
        /// otherwise.
        #[arg(long, value_delimiter = ',')]
        checkpoints: Option<Vec<f64>>,
        /// Seed of the probe points.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Prints the exact posterior p(x0 | y) of a case and its summary at a
    /// few diffusion times (of every built-in case without --case).
    Truth {
        /// A built-in case name or a path to a case file.
        #[arg(long)]
        case: Option<String>,
        /// Diffusion times for the per-time summary (comma separated);
        /// defaults to six times spread over the schedule.
        #[arg(long, value_delimiter = ',')]
        times: Option<Vec<f64>>,
    },
    /// Lists the built-in cases, one line each (the full descriptions
    /// with --format json or markdown).
    Cases,
    /// Lists the built-in samplers: name, kind and summary, then their
    /// settings at the defaults on a second line.
    Samplers,
}

/// What `audit` and `check` share.
#[derive(Args)]
pub struct GateArgs {
    /// A built-in case name or a path to a case file.
    #[arg(long)]
    case: String,
    /// The run seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Checkpoint times, decreasing and comma separated; 0.8, 0.5, 0.2 and
    /// 0.05 of the schedule's end time otherwise. Audit only: check tests
    /// the trajectory times in --samples and refuses this flag.
    #[arg(long, value_delimiter = ',')]
    checkpoints: Option<Vec<f64>>,
    /// Family-wise false-alarm rate of the audit (Holm).
    #[arg(long, default_value_t = 1e-3)]
    fwer: f64,
    /// Exact reference draws per checkpoint (cell probabilities, region
    /// masses, the total-variance null); at least 1000.
    #[arg(long, default_value_t = cli::gate::DEFAULT_REFERENCE_DRAWS)]
    reference_draws: usize,
    /// Writes JUnit XML: one test case per check and checkpoint.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Writes report.json and report.md into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Output format.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Format {
    /// Text for a terminal.
    Human,
    /// One JSON document.
    Json,
    /// Markdown, e.g. for a CI job summary.
    Markdown,
}

/// What a command produced: text for stdout and the exit code it asks
/// for.
pub struct Outcome {
    text: String,
    code: u8,
}

impl Outcome {
    /// Text with exit code 0.
    pub fn ok(text: String) -> Outcome {
        Outcome { text, code: 0 }
    }

    /// Text with exit code 1 (gated command found failures) or 0.
    pub fn gated(text: String, failed: bool) -> Outcome {
        Outcome { text, code: u8::from(failed) }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let progress = cli.progress;
    let format = cli.format;
    let result = match cli.command {
        Command::Survey(args) => cli::survey::survey(&args, format, progress),
        Command::Merge(args) => cli::survey::merge(&args, format),
        Command::Audit { gate, sampler, particles } => {
            cli::gate::audit(&gate, &sampler, particles, format, progress)
        }
        Command::Check { gate, samples, particles } => {
            cli::gate::check(&gate, &samples, particles.as_deref(), format)
        }
        Command::Export { case, out, checkpoints, seed } => {
            cli::gate::export(&case, &out, checkpoints, seed, format)
        }
        Command::Cases => cli::info::cases(format).map(Outcome::ok),
        Command::Samplers => cli::info::samplers(format).map(Outcome::ok),
        Command::Truth { case: Some(case), times } => {
            cli::info::truth(&case, format, times).map(Outcome::ok)
        }
        Command::Truth { case: None, times } => {
            cli::info::truth_of_builtins(format, times).map(Outcome::ok)
        }
    };
    match result {
        Ok(outcome) => emit(&outcome.text, outcome.code),
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            match err.kind() {
                ErrorKind::Usage => ExitCode::from(2),
                _ => ExitCode::from(3),
            }
        }
    }
}

/// The message followed by its causes, on one line.
fn one_line(err: &Error) -> String {
    let mut s = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        s += &format!(": {cause}");
        source = cause.source();
    }
    s.replace('\n', " ")
}

/// Writes the result to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str, code: u8) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::from(code),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(3)
        }
    }
}
