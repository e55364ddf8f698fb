//! `survey`: every built-in sampler on the standard suite, as a failure
//! matrix; `merge`: survey shards back into one survey.
//!
//! A survey is a list of cells (sampler x case, sampler-major, in registry
//! and suite order). Each cell is audited independently from the same
//! seed, so a cell's result does not depend on the thread count, on the
//! order in which cells run, or on the shard it falls in; `--shard i/n`
//! orders the cells by weight (heaviest case first) then index and deals
//! them round-robin, taking every `n`-th from place `i`, and `merge` puts
//! shards back together in index order.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use clap::Args;
use posterior_lens::audit::{Audit, SamplerIdentity};
use posterior_lens::case::Case;
use posterior_lens::report::{Failure, Report, format_time, markdown_cell};
use posterior_lens::sampler::{self, Sampler, SamplerKind, Setup};
use posterior_lens::{Error, ErrorKind};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::info::kind_name;
use super::output::{self, Planned};
use super::progress::{Progress, ProgressMode};
use super::timing::{self, CellTime, Timed};
use super::{counted, flags};
use crate::{Format, Outcome};

/// The version of the survey file.
const SURVEY_VERSION: u32 = 1;

/// The standard suite: every built-in case, the digits training set
/// included. The particle count and reference draws are the smallest that
/// still separate the reference samplers from the broken ones; the
/// digits cells dominate the time (see the README).
fn standard_suite() -> Vec<String> {
    Case::builtin_names().into_iter().map(String::from).collect()
}

const DEFAULT_PARTICLES: usize = 250;
const DEFAULT_REFERENCE_DRAWS: usize = 1000;
const DEFAULT_MAX_STEPS: usize = 100;

/// `survey` options.
#[derive(Args)]
pub struct SurveyArgs {
    /// Cases (built-in names or case files, comma separated); the standard
    /// suite (every built-in case) otherwise.
    #[arg(long, value_delimiter = ',')]
    cases: Option<Vec<String>>,
    /// Samplers as name[:key=value,...] (separated by `;`); every built-in
    /// sampler with its defaults otherwise.
    #[arg(long, value_delimiter = ';')]
    samplers: Option<Vec<String>>,
    /// Particles per run.
    #[arg(long, default_value_t = DEFAULT_PARTICLES)]
    particles: usize,
    /// Exact reference draws per checkpoint (cell probabilities, region
    /// masses, the total-variance null); at least 1000.
    #[arg(long, default_value_t = DEFAULT_REFERENCE_DRAWS)]
    reference_draws: usize,
    /// The most steps (or annealing levels) a built-in sampler under test
    /// or broken sampler takes, so that the survey finishes in about a
    /// minute on two cores; 0 keeps the published step counts. Reference
    /// samplers, and samplers given with --samplers, keep their settings.
    #[arg(long, default_value_t = DEFAULT_MAX_STEPS)]
    max_steps: usize,
    /// The run seed of every cell.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Family-wise false-alarm rate of each audit (Holm).
    #[arg(long, default_value_t = 1e-3)]
    fwer: f64,
    /// Runs only shard i of n (1-based). The cells are ordered by weight
    /// (atoms or components times dimension of the case, heaviest first),
    /// then by index, and dealt round-robin: shard i takes places i, i + n,
    /// i + 2n, ... so the heavy case is spread over the shards. Combine the
    /// shard files with `merge`.
    #[arg(long)]
    shard: Option<Shard>,
    /// Where survey.json and survey.md go (survey-shard-I-of-N.* for a
    /// shard).
    #[arg(long, default_value = "target/posterior-lens/survey")]
    out: PathBuf,
    /// Prints where the time went to stderr: set-up, sampler and audit
    /// seconds by case, by sampler, and the slowest cells. The seconds are
    /// the cells' wall-clock spans, which overlap as cells run
    /// concurrently: not CPU time.
    #[arg(long)]
    timings: bool,
}

/// `merge` options.
#[derive(Args)]
pub struct MergeArgs {
    /// Shard files (survey-shard-*.json), or directories holding them.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where the merged survey.json and survey.md go.
    #[arg(long, default_value = "target/posterior-lens/survey")]
    out: PathBuf,
}

/// `i/n`, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let parse = |v: &str| v.trim().parse::<usize>().ok();
        match s.split_once('/').map(|(i, n)| (parse(i), parse(n))) {
            Some((Some(index), Some(count)))
                if count >= 1 && (1..=count).contains(&index) =>
            {
                Ok(Shard { index, count })
            }
            _ => Err(format!(
                "expected i/n with 1 <= i <= n (e.g. 2/4), got `{s}`"
            )),
        }
    }
}

/// The settings every cell shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    seed: u64,
    particles: usize,
    reference_draws: usize,
    fwer: f64,
}

/// One sampler of the survey.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct SamplerRow {
    /// The spec as given (a registry name for the defaults).
    spec: String,
    name: String,
    kind: String,
}

/// How a cell ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// Audited, nothing found.
    Pass,
    /// Audited, findings.
    Fail,
    /// The sampler does not apply to the case (it said why).
    Declined,
    /// The sampler's output could not be audited (shapes, NaN, weights).
    InvalidOutput,
}

/// A finding as the matrix shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CellFinding {
    failure: Failure,
    t: f64,
    location: String,
}

/// One sampler on one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Cell {
    index: usize,
    sampler: String,
    case: String,
    verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    findings: Vec<CellFinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay: Option<String>,
    /// The full audit report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<serde_json::Value>,
}

/// A survey (or one shard of it).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Survey {
    schema_version: u32,
    settings: Settings,
    samplers: Vec<SamplerRow>,
    cases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard: Option<Shard>,
    cells: Vec<Cell>,
}

/// `survey`.
pub fn survey(
    args: &SurveyArgs,
    format: Format,
    progress: ProgressMode,
) -> Result<Outcome, Error> {
    super::gate::check_audit_flags(
        args.fwer,
        Some(args.particles),
        args.reference_draws,
    )?;
    let stem = match args.shard {
        Some(s) => format!("survey-shard-{}-of-{}", s.index, s.count),
        None => "survey".into(),
    };
    output::check(&planned_outputs(&args.out, &stem))?;

    // Everything is resolved before anything runs: unknown cases and
    // samplers fail fast, and so does a case or sampler given twice.
    // Entries may be spaced out after their separators (`a; b`).
    let trimmed = |list: &Vec<String>| -> Vec<String> {
        list.iter().map(|s| s.trim().to_string()).collect()
    };
    let case_names = args.cases.as_ref().map_or_else(standard_suite, trimmed);
    let cases: Vec<Case> = case_names
        .iter()
        .map(|name| flags::case("--cases", name))
        .collect::<Result<_, _>>()?;
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    refuse_twice("--cases", &case_names, &names, "case")?;
    let specs: Vec<String> = match &args.samplers {
        Some(specs) => trimmed(specs),
        // Reference samplers keep their step counts: they are the
        // yardstick, and cheap (one exact denoiser call per step).
        None => sampler::registry()
            .iter()
            .map(|e| match e.kind {
                SamplerKind::Reference => Ok(e.name.to_string()),
                _ => capped(e.name, args.max_steps),
            })
            .collect::<Result<_, _>>()?,
    };
    let samplers: Vec<Box<dyn Sampler>> = specs
        .iter()
        .map(|spec| flags::sampler("--samplers", spec))
        .collect::<Result<_, _>>()?;
    let full_specs: Vec<String> = samplers.iter().map(|s| s.spec()).collect();
    refuse_twice("--samplers", &specs, &full_specs, "sampler")?;
    let rows: Vec<SamplerRow> = specs
        .iter()
        .zip(&samplers)
        .map(|(spec, s)| SamplerRow {
            spec: spec.clone(),
            name: s.name().to_string(),
            kind: kind_name(s.kind()).to_string(),
        })
        .collect();
    let settings = Settings {
        seed: args.seed,
        particles: args.particles,
        reference_draws: args.reference_draws,
        fwer: args.fwer,
    };

    // The cells of this shard, heaviest case first so that the slowest
    // cells do not start last; results are put back in index order.
    let weights: Vec<usize> = (0..samplers.len() * cases.len())
        .map(|i| {
            let case = &cases[i % cases.len()];
            case.prior.num_components() * case.dim()
        })
        .collect();
    let mine = cells_of_shard(&weights, args.shard);
    let bar = Progress::new(progress, mine.len());
    let audit = Audit::new()
        .particles(args.particles)
        .seed(args.seed)
        .fwer(args.fwer)
        .reference_draws(args.reference_draws);
    let started = Instant::now();
    let mut timed: Vec<(Cell, CellTime)> = mine
        .par_iter()
        .map(|&index| {
            let sampler = samplers[index / cases.len()].as_ref();
            let case = &cases[index % cases.len()];
            let given = &case_names[index % cases.len()];
            let mut time = CellTime::default();
            let cell = run_cell(
                &audit,
                args.reference_draws,
                index,
                case,
                given,
                sampler,
                &mut time,
            );
            bar.finished(&format!(
                "{} on {}: {} ({:.1}s)",
                sampler.name(),
                case.name,
                verdict_word(&cell),
                time.total()
            ));
            (cell, time)
        })
        .collect();
    bar.finish();
    let wall = started.elapsed().as_secs_f64();
    timed.sort_by_key(|c| c.0.index);
    let times: Vec<Timed<'_>> = timed
        .iter()
        .map(|(cell, time)| Timed {
            sampler: &rows[cell.index / cases.len()].spec,
            case: &cell.case,
            time: *time,
        })
        .collect();
    eprintln!(
        "{}",
        timing::summary(&times, wall, rayon::current_num_threads())
    );
    if args.timings {
        eprint!("{}", timing::breakdown(&times));
    }
    let cells: Vec<Cell> = timed.into_iter().map(|c| c.0).collect();

    let survey = Survey {
        schema_version: SURVEY_VERSION,
        settings,
        samplers: rows,
        cases: cases.iter().map(|c| c.name.clone()).collect(),
        shard: args.shard,
        cells,
    };
    write_survey("survey", &survey, &args.out, &stem)?;
    Ok(Outcome::ok(render(&survey, format)))
}

/// The cells one shard runs (all of them without a shard), heaviest
/// first: the cells ordered by weight (heaviest first), then by index, and
/// dealt round-robin to the shards, so that every shard gets its share of
/// the heavy case. `weights` has one entry per cell, in index order.
fn cells_of_shard(weights: &[usize], shard: Option<Shard>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(weights[i]), i));
    match shard {
        None => order,
        Some(s) => order
            .into_iter()
            .enumerate()
            .filter(|(dealt, _)| dealt % s.count == s.index - 1)
            .map(|(_, i)| i)
            .collect(),
    }
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// Refuses a value of `flag` whose key (the case name, the sampler's full
/// spec) an earlier value has: it would run twice. `what` names the keys.
fn refuse_twice(
    flag: &str,
    values: &[String],
    keys: &[impl AsRef<str>],
    what: &str,
) -> Result<(), Error> {
    for (i, key) in keys.iter().map(AsRef::as_ref).enumerate() {
        let Some(j) = keys[..i].iter().position(|k| k.as_ref() == key) else {
            continue;
        };
        let (first, again) = (&values[j], &values[i]);
        return Err(usage(if first == again {
            format!("{flag} {again}: given twice")
        } else {
            format!(
                "{flag} {again}: given twice, as {first} too (both are \
                 {what} {key})"
            )
        }));
    }
    Ok(())
}

/// Runs and audits one cell, telling a sampler that declines the case
/// apart from output that cannot be audited; `given` is the case as the
/// command line named it, for the replay line, and `time` gets the
/// seconds of each phase.
fn run_cell(
    audit: &Audit,
    audit_reference_draws: usize,
    index: usize,
    case: &Case,
    given: &str,
    sampler: &dyn Sampler,
    time: &mut CellTime,
) -> Cell {
    let clock = Instant::now();
    let mut cell = Cell {
        index,
        sampler: sampler.spec(),
        case: case.name.clone(),
        verdict: Verdict::Declined,
        message: None,
        findings: Vec::new(),
        replay: None,
        report: None,
    };
    let setup = match Setup::new(case, audit.checkpoints_for(case)) {
        Ok(setup) => setup,
        Err(e) => {
            cell.verdict = Verdict::InvalidOutput;
            cell.message = Some(format!("cannot set the case up: {e}"));
            return cell;
        }
    };
    time.setup = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let problem = setup.for_sampler(sampler);
    let run = sampler.run(&problem, audit.num_particles(), audit.run_seed());
    time.run = clock.elapsed().as_secs_f64();
    let run = match run {
        Ok(run) => run,
        Err(e) => {
            cell.message = Some(e.to_string());
            return cell;
        }
    };
    let clock = Instant::now();
    let identity = SamplerIdentity {
        name: sampler.name().to_string(),
        settings: sampler.settings(),
        meaning: sampler.trajectory_meaning(),
    };
    let audited = audit.audit_run(case, &setup.truth, &run, &identity);
    time.audit = clock.elapsed().as_secs_f64();
    match audited {
        Ok(mut report) => {
            super::gate::replay_case_as_given(&mut report, given);
            super::gate::add_reference_draws(
                &mut report,
                audit_reference_draws,
            );
            fill(&mut cell, &report)
        }
        Err(e) => {
            cell.verdict = Verdict::InvalidOutput;
            cell.message = Some(e.to_string());
        }
    }
    cell
}

fn fill(cell: &mut Cell, report: &Report) {
    cell.verdict = if report.passed() { Verdict::Pass } else { Verdict::Fail };
    cell.findings = report
        .findings
        .iter()
        .map(|f| CellFinding {
            failure: f.failure,
            t: f.t,
            location: f.location.clone(),
        })
        .collect();
    cell.replay = Some(report.replay.clone());
    cell.report =
        Some(serde_json::to_value(report).expect("a report serialises"));
}

fn verdict_word(cell: &Cell) -> String {
    match cell.verdict {
        Verdict::Pass => "pass".into(),
        Verdict::Fail => {
            let names: Vec<&str> =
                failures(cell).keys().map(|f| f.name()).collect();
            format!("fail ({})", names.join(", "))
        }
        Verdict::Declined => "declined".into(),
        Verdict::InvalidOutput => "invalid output".into(),
    }
}

/// The cell's failures with the times (decreasing) and locations where
/// they show.
fn failures(cell: &Cell) -> BTreeMap<Failure, (Vec<f64>, Vec<String>)> {
    let mut out: BTreeMap<Failure, (Vec<f64>, Vec<String>)> = BTreeMap::new();
    for f in &cell.findings {
        let entry = out.entry(f.failure).or_default();
        if !entry.0.contains(&f.t) {
            entry.0.push(f.t);
        }
        if !entry.1.contains(&f.location) {
            entry.1.push(f.location.clone());
        }
    }
    for (times, _) in out.values_mut() {
        times.sort_by(|a, b| b.total_cmp(a));
    }
    out
}

fn code(failure: Failure) -> char {
    match failure {
        Failure::SpreadTooNarrow => 'N',
        Failure::SpreadTooWide => 'W',
        Failure::ModeMisweighted => 'M',
        Failure::UnsupportedMode => 'U',
        Failure::StopTimeSensitive => 'S',
    }
}

fn cell_code(cell: &Cell) -> String {
    match cell.verdict {
        Verdict::Pass => ".".into(),
        Verdict::Fail => failures(cell).keys().map(|&f| code(f)).collect(),
        Verdict::Declined => "-".into(),
        Verdict::InvalidOutput => "!".into(),
    }
}

fn times(times: &[f64]) -> String {
    let t: Vec<String> = times.iter().map(|&t| format_time(t)).collect();
    t.join(", ")
}

/// The matrix and the details of every cell that did not pass.
fn render(survey: &Survey, format: Format) -> String {
    match format {
        Format::Json => {
            let mut light = survey.clone();
            for cell in &mut light.cells {
                cell.report = None;
            }
            format!(
                "{}\n",
                serde_json::to_string_pretty(&light).expect("serialises")
            )
        }
        Format::Markdown => markdown(survey),
        Format::Human => human(survey),
    }
}

fn header(survey: &Survey) -> String {
    let s = &survey.settings;
    let shard = match survey.shard {
        Some(sh) => format!(" (shard {}/{})", sh.index, sh.count),
        None => String::new(),
    };
    format!(
        "survey{shard}: {} x {}, {} per run, seed {}, family-wise \
         false-alarm rate {} per audit",
        counted(survey.samplers.len(), "sampler"),
        counted(survey.cases.len(), "case"),
        counted(s.particles, "particle"),
        s.seed,
        s.fwer
    )
}

/// The cell of a sampler row and case column, if this survey holds it.
fn cell_at(survey: &Survey, row: usize, col: usize) -> Option<&Cell> {
    let index = row * survey.cases.len() + col;
    survey.cells.iter().find(|c| c.index == index)
}

fn human(survey: &Survey) -> String {
    let mut s = header(survey);
    s += "\n\ncases:";
    for (i, name) in survey.cases.iter().enumerate() {
        let _ = write!(s, "  {} {name}", i + 1);
    }
    s += "\ncodes:  . pass  N spread_too_narrow  W spread_too_wide  \
          M mode_misweighted  U unsupported_mode  S stop_time_sensitive  \
          - declined  ! invalid output\n\n";
    let width =
        survey.samplers.iter().map(|r| r.name.len()).max().unwrap_or(7).max(7);
    let _ = write!(s, "{:<width$}  {:<10}", "sampler", "kind");
    for i in 0..survey.cases.len() {
        let _ = write!(s, " {:>5}", i + 1);
    }
    s += "\n";
    for (r, row) in survey.samplers.iter().enumerate() {
        let _ = write!(s, "{:<width$}  {:<10}", row.name, row.kind);
        for c in 0..survey.cases.len() {
            let code = cell_at(survey, r, c).map_or(" ".into(), cell_code);
            let _ = write!(s, " {code:>5}");
        }
        s += "\n";
    }
    let details: Vec<&Cell> =
        survey.cells.iter().filter(|c| c.verdict != Verdict::Pass).collect();
    if !details.is_empty() {
        s += "\n";
    }
    for cell in details {
        let _ = writeln!(s, "{} on {}", cell.sampler, cell.case);
        if let Some(message) = &cell.message {
            let word = match cell.verdict {
                Verdict::Declined => "declined",
                _ => "invalid output",
            };
            let _ = writeln!(s, "  {word}: {message}");
        }
        for (failure, (t, locations)) in failures(cell) {
            let _ = writeln!(
                s,
                "  {:<20} t = {}  ({})",
                failure.name(),
                times(&t),
                locations.join(", ")
            );
        }
        if let Some(replay) = &cell.replay {
            let _ = writeln!(s, "  replay: {replay}");
        }
    }
    s
}

fn markdown(survey: &Survey) -> String {
    let mut s = format!("## posterior-lens {}\n\n", header(survey));
    s += "| sampler | kind |";
    for name in &survey.cases {
        let _ = write!(s, " `{name}` |");
    }
    s += "\n|---|---|";
    s += &"---|".repeat(survey.cases.len());
    s += "\n";
    for (r, row) in survey.samplers.iter().enumerate() {
        let _ = write!(s, "| `{}` | {} |", row.name, row.kind);
        for c in 0..survey.cases.len() {
            let text = match cell_at(survey, r, c) {
                None => String::new(),
                Some(cell) => match cell.verdict {
                    Verdict::Pass => "pass".into(),
                    Verdict::Declined => "declined".into(),
                    Verdict::InvalidOutput => "invalid output".into(),
                    Verdict::Fail => failures(cell)
                        .iter()
                        .map(|(f, (t, _))| {
                            format!("`{}` t = {}", f.name(), times(t))
                        })
                        .collect::<Vec<_>>()
                        .join("<br>"),
                },
            };
            let _ = write!(s, " {text} |");
        }
        s += "\n";
    }
    let details: Vec<&Cell> =
        survey.cells.iter().filter(|c| c.verdict != Verdict::Pass).collect();
    if !details.is_empty() {
        s += "\n| sampler | case | failure | t | where |\n|---|---|---|---|---|\n";
    }
    for cell in &details {
        if let Some(message) = &cell.message {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | {} | | {} |",
                cell.sampler,
                cell.case,
                match cell.verdict {
                    Verdict::Declined => "declined",
                    _ => "invalid output",
                },
                markdown_cell(message)
            );
        }
        for (failure, (t, locations)) in failures(cell) {
            let _ = writeln!(
                s,
                "| `{}` | `{}` | `{}` | {} | {} |",
                cell.sampler,
                cell.case,
                failure.name(),
                times(&t),
                markdown_cell(&locations.join(", "))
            );
        }
    }
    s
}

/// The files a survey writes into `dir`: `<stem>.json` and `<stem>.md`.
fn planned_outputs<'a>(dir: &'a Path, stem: &str) -> Vec<Planned<'a>> {
    let names = [format!("{stem}.json"), format!("{stem}.md")];
    Planned::in_dir("--out", dir, &[&names[0], &names[1]])
}

/// Writes `<stem>.json` (the full survey with every report) and
/// `<stem>.md` into `dir`, and names them on stderr after `command`.
fn write_survey(
    command: &str,
    survey: &Survey,
    dir: &Path,
    stem: &str,
) -> Result<(), Error> {
    let json = serde_json::to_string_pretty(survey).expect("serialises");
    let md = markdown(survey);
    output::write(
        command,
        &[
            (
                dir.join(format!("{stem}.json")),
                format!("{json}\n").into_bytes(),
            ),
            (dir.join(format!("{stem}.md")), md.into_bytes()),
        ],
    )
}

/// `merge`.
pub fn merge(args: &MergeArgs, format: Format) -> Result<Outcome, Error> {
    output::check(&planned_outputs(&args.out, "survey"))?;
    let mut paths = Vec::new();
    for input in &args.inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| io_error(input, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("survey-shard-") && n.ends_with(".json")
                    })
                })
                .collect();
            found.sort();
            paths.extend(found);
        } else {
            paths.push(input.clone());
        }
    }
    let mut shards = Vec::new();
    for path in &paths {
        let text =
            std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
        let survey: Survey = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!(
                "{}: not a survey file: {e}",
                path.display()
            ))
        })?;
        if survey.schema_version != SURVEY_VERSION {
            return Err(Error::invalid(format!(
                "{}: schema_version must be {SURVEY_VERSION}, got {}",
                path.display(),
                survey.schema_version
            )));
        }
        shards.push((path.clone(), survey));
    }
    let Some((first_path, first)) = shards.first() else {
        return Err(usage("merge: no survey-shard-*.json files found".into()));
    };

    // Shards must come from one survey: same settings, samplers, cases and
    // shard count, each shard once.
    let count = first.shard.map_or(1, |s| s.count);
    let mut seen = vec![false; count];
    for (path, s) in &shards {
        let same = s.settings == first.settings
            && s.samplers == first.samplers
            && s.cases == first.cases
            && s.shard.map_or(1, |sh| sh.count) == count;
        if !same {
            return Err(Error::invalid(format!(
                "{}: settings, samplers, cases or shard count differ from {}",
                path.display(),
                first_path.display()
            )));
        }
        let index = s.shard.map_or(1, |sh| sh.index);
        if std::mem::replace(&mut seen[index - 1], true) {
            return Err(Error::invalid(format!(
                "{}: shard {index}/{count} is given twice",
                path.display()
            )));
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(Error::invalid(format!(
            "merge: shard {}/{count} is missing",
            missing + 1
        )));
    }
    let mut cells: Vec<Cell> =
        shards.iter().flat_map(|(_, s)| s.cells.clone()).collect();
    cells.sort_by_key(|c| c.index);
    let merged = Survey {
        schema_version: SURVEY_VERSION,
        settings: first.settings.clone(),
        samplers: first.samplers.clone(),
        cases: first.cases.clone(),
        shard: None,
        cells,
    };
    write_survey("merge", &merged, &args.out, "survey")?;
    Ok(Outcome::ok(render(&merged, format)))
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot read {}", path.display()))
        .with_source(e)
}

/// The spec of a built-in sampler with `steps` and `levels` capped at
/// `max` (0: no cap).
fn capped(name: &str, max: usize) -> Result<String, Error> {
    let defaults = sampler::build(name)?.settings();
    let capped: Vec<String> = ["steps", "levels"]
        .iter()
        .filter_map(|key| {
            let value: usize = defaults.get(*key)?.parse().ok()?;
            (max > 0 && value > max).then(|| format!("{key}={max}"))
        })
        .collect();
    Ok(if capped.is_empty() {
        name.to_string()
    } else {
        format!("{name}:{}", capped.join(","))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_the_heavy_case() {
        // Two samplers x six cases, sampler-major; case 5 is the heavy one
        // (cells 5 and 11).
        let weights: Vec<usize> =
            (0..12).map(|i| if i % 6 == 5 { 1000 } else { 1 }).collect();
        let shard = |index| Some(Shard { index, count: 2 });
        let first = cells_of_shard(&weights, shard(1));
        let second = cells_of_shard(&weights, shard(2));
        assert_eq!(first, [5, 0, 2, 4, 7, 9]);
        assert_eq!(second, [11, 1, 3, 6, 8, 10]);

        // Every cell falls in exactly one shard.
        let mut all: Vec<usize> = first.into_iter().chain(second).collect();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>());
        assert_eq!(cells_of_shard(&weights, None)[..2], [5, 11]);
    }
}
