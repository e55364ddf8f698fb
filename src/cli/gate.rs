//! The gated commands (`audit`, `check`) and the case export.

use std::path::Path;

use posterior_lens::audit::Audit;
use posterior_lens::case::Case;
use posterior_lens::exchange::{self, OutputFile};
use posterior_lens::report::{Failure, Report, format_time};
use posterior_lens::truth::Truth;
use posterior_lens::{Error, ErrorKind};
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use super::flags;
use super::output::{self, Planned};
use super::progress::{Progress, ProgressMode};
use crate::{Format, GateArgs, Outcome};

/// The audit's default number of reference draws (`Audit::new`).
pub const DEFAULT_REFERENCE_DRAWS: usize = 20_000;

/// `audit --case C --sampler S`.
pub fn audit(
    args: &GateArgs,
    spec: &str,
    particles: usize,
    format: Format,
    progress: ProgressMode,
) -> Result<Outcome, Error> {
    check_audit_flags(args.fwer, Some(particles), args.reference_draws)?;
    output::check(&planned_outputs(args))?;
    let sampler = flags::sampler("--sampler", spec)?;
    let case = flags::case("--case", &args.case)?;
    let audit = configure(args, &case)?.particles(particles);
    // One job: a run can take minutes at published step counts.
    let bar = Progress::new(progress, 1);
    bar.started(&format!(
        "audit: running {} on {} ({particles} particles), then testing it",
        sampler.name(),
        case.name
    ));
    let clock = std::time::Instant::now();
    let report = audit.run(&case, sampler.as_ref());
    if report.is_ok() {
        bar.finished(&format!(
            "audit: {} on {} ran and was tested in {:.1}s",
            sampler.name(),
            case.name,
            clock.elapsed().as_secs_f64()
        ));
    }
    bar.finish();
    let mut report = report?;
    replay_case_as_given(&mut report, &args.case);
    add_reference_draws(&mut report, args.reference_draws);
    finish("audit", args, &report, format)
}

/// `check --case C --samples DIR`; `particles` is the value of the
/// `--particles` flag that belongs to `audit`, refused here rather than
/// ignored, as is `--checkpoints`.
pub fn check(
    args: &GateArgs,
    dir: &Path,
    particles: Option<&str>,
    format: Format,
) -> Result<Outcome, Error> {
    if let Some(value) = particles {
        return Err(usage(format!(
            "--particles {value}: check audits every sample in --samples \
             (the number of samples in samples.npy); --particles is for \
             audit"
        )));
    }
    if let Some(times) = &args.checkpoints {
        let times: Vec<String> = times.iter().map(f64::to_string).collect();
        return Err(usage(format!(
            "--checkpoints {}: check tests the trajectory times in --samples \
             (trajectory_times.npy); --checkpoints is for audit",
            times.join(",")
        )));
    }
    check_audit_flags(args.fwer, None, args.reference_draws)?;
    output::check(&planned_outputs(args))?;
    let case = flags::case("--case", &args.case)?;
    let external = exchange::read_run(dir, &case)?;
    let truth = Truth::new(&case)?;
    let audit = configure(args, &case)?;
    let mut report =
        audit.audit_run(&case, &truth, &external.run, &external.identity)?;
    // An external run is replayed by `check`, not by `audit`.
    report.replay = format!(
        "posterior-lens check --case {} --samples {} --seed {}",
        args.case,
        dir.display(),
        args.seed
    );
    add_reference_draws(&mut report, args.reference_draws);
    finish("check", args, &report, format)
}

/// A case read from a file is replayed from the same file: the replay
/// line names the case as given on the command line (a path) rather than
/// by its name.
pub fn replay_case_as_given(report: &mut Report, given: &str) {
    report.replay = report.replay.replacen(
        &format!("--case {} ", report.case),
        &format!("--case {given} "),
        1,
    );
}

/// The replay line names the reference draws when they are not the
/// audit's default, so that it reproduces the same numbers.
pub fn add_reference_draws(report: &mut Report, draws: usize) {
    if draws != DEFAULT_REFERENCE_DRAWS {
        report.replay += &format!(" --reference-draws {draws}");
    }
}

/// Checks the flags every audit shares (`--fwer`, `--particles` where the
/// command draws particles, `--reference-draws`); a bad value is a usage
/// error.
pub fn check_audit_flags(
    fwer: f64,
    particles: Option<usize>,
    reference_draws: usize,
) -> Result<(), Error> {
    if !(fwer > 0.0 && fwer < 1.0) {
        return Err(usage(format!("--fwer must lie in (0, 1), got {fwer}")));
    }
    if let Some(particles) = particles.filter(|&n| n < 10) {
        return Err(usage(format!(
            "--particles must be at least 10, got {particles}"
        )));
    }
    if reference_draws < 1000 {
        return Err(usage(format!(
            "--reference-draws must be at least 1000, got {reference_draws}"
        )));
    }
    Ok(())
}

fn configure(args: &GateArgs, case: &Case) -> Result<Audit, Error> {
    let mut audit = Audit::new()
        .seed(args.seed)
        .fwer(args.fwer)
        .reference_draws(args.reference_draws);
    if let Some(times) = &args.checkpoints {
        check_checkpoints(times, case)?;
        audit = audit.checkpoints(times.clone());
    }
    Ok(audit)
}

/// Checkpoints must be decreasing and inside the schedule's range.
pub fn check_checkpoints(times: &[f64], case: &Case) -> Result<(), Error> {
    let (_, t_max) = case.schedule.time_range();
    let t_min = case.schedule.default_t_min();
    for (i, &t) in times.iter().enumerate() {
        if !(t.is_finite() && t > t_min && t <= t_max) {
            return Err(usage(format!(
                "--checkpoints: {t} is outside ({t_min}, {t_max}] for case {}",
                case.name
            )));
        }
        if i > 0 && t >= times[i - 1] {
            return Err(usage(format!(
                "--checkpoints must decrease: {t} follows {}",
                times[i - 1]
            )));
        }
    }
    Ok(())
}

fn usage(message: String) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// The files `--out` and `--junit` ask for.
fn planned_outputs(args: &GateArgs) -> Vec<Planned<'_>> {
    let mut planned = Vec::new();
    if let Some(dir) = &args.out {
        planned.extend(Planned::in_dir("--out", dir, &REPORT_FILES));
    }
    if let Some(path) = &args.junit {
        planned.push(Planned::file("--junit", path));
    }
    planned
}

/// What `--out` writes: the report as JSON and as Markdown.
const REPORT_FILES: [&str; 2] = ["report.json", "report.md"];

/// Renders the report, writes the requested files, and gates.
fn finish(
    command: &str,
    args: &GateArgs,
    report: &Report,
    format: Format,
) -> Result<Outcome, Error> {
    // Everything is rendered before anything is written.
    let mut files = Vec::new();
    if let Some(dir) = &args.out {
        let [json, md] = REPORT_FILES;
        files.push((
            dir.join(json),
            format!("{}\n", report.to_json()).into_bytes(),
        ));
        files.push((dir.join(md), report.to_markdown().into_bytes()));
    }
    if let Some(path) = &args.junit {
        files.push((path.clone(), junit(report).into_bytes()));
    }
    output::write(command, &files)?;
    let text = match format {
        Format::Human => report.to_text(),
        Format::Markdown => report.to_markdown(),
        Format::Json => format!("{}\n", report.to_json()),
    };
    Ok(Outcome::gated(text, !report.passed()))
}

/// JUnit XML: one suite per audit, one test case per check and
/// checkpoint (spread per direction, modes, unsupported mass, omnibus
/// tests) and one for the stop-time sensitivity.
pub fn junit(report: &Report) -> String {
    let spec = report.sampler_spec();
    let mut suite = TestSuite::new(format!("{spec} on {}", report.case));
    suite.add_property(("case", report.case.as_str()));
    suite.add_property(("sampler", spec.as_str()));
    suite.add_property(("seed", report.seed.to_string().as_str()));
    suite
        .add_property(("particles", report.num_particles.to_string().as_str()));
    let classname =
        format!("posterior-lens.{}.{}", report.case, report.sampler);
    let mut add = |name: String,
                   failures: Vec<Failure>,
                   location: Option<&str>,
                   t: Option<f64>,
                   detail: String| {
        let found: Vec<_> = report
            .findings
            .iter()
            .filter(|f| {
                failures.contains(&f.failure)
                    && t.is_none_or(|t| f.t == t)
                    && location.is_none_or(|l| f.location == l)
            })
            .collect();
        let status = if found.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut status =
                TestCaseStatus::non_success(NonSuccessKind::Failure);
            let lines: Vec<String> = found
                .iter()
                .map(|f| {
                    format!(
                        "{} at t = {} ({}): {}",
                        f.failure.name(),
                        format_time(f.t),
                        f.location,
                        f.evidence
                    )
                })
                .collect();
            status.set_message(lines.join("; "));
            status.set_type(found[0].failure.name());
            status.set_description(format!(
                "{}\n{detail}\nreplay: {}",
                lines.join("\n"),
                report.replay
            ));
            status
        };
        let mut case = TestCase::new(name, status);
        case.set_classname(classname.as_str());
        suite.add_test_case(case);
    };
    let spread = vec![Failure::SpreadTooNarrow, Failure::SpreadTooWide];
    for c in &report.checkpoints {
        let at = format!("t={}", format_time(c.t));
        for s in &c.spread {
            add(
                format!("spread/{}/{at}", s.direction),
                spread.clone(),
                Some(&s.direction),
                Some(c.t),
                format!(
                    "sd ratio {:.4} [{:.4}, {:.4}], adjusted p {:.3e}",
                    s.sd_ratio, s.ci[0], s.ci[1], s.p_adjusted
                ),
            );
        }
        if let Some(o) = &c.occupancy {
            add(
                format!("modes/{at}"),
                vec![Failure::ModeMisweighted],
                None,
                Some(c.t),
                format!("occupancy test, adjusted p {:.3e}", o.p_adjusted),
            );
        }
        for u in &c.unsupported {
            add(
                format!("unsupported/{}/{at}", u.kind),
                vec![Failure::UnsupportedMode],
                Some(&u.kind),
                Some(c.t),
                format!(
                    "mass {:.4} vs expected {:.4}, adjusted p {:.3e}",
                    u.observed, u.expected, u.p_adjusted
                ),
            );
        }
        for o in &c.omnibus {
            // Omnibus tests back the targeted ones up; they decide nothing.
            add(
                format!("{}/{}/{at}", o.test.test, o.direction),
                Vec::new(),
                None,
                None,
                String::new(),
            );
        }
    }
    add(
        "stop_time".into(),
        vec![Failure::StopTimeSensitive],
        None,
        None,
        String::new(),
    );
    let mut junit = quick_junit::Report::new("posterior-lens");
    junit.add_test_suite(suite);
    junit.to_string().expect("JUnit XML serialises")
}

/// `export --case C --out DIR`.
pub fn export(
    name: &str,
    out: &Path,
    checkpoints: Option<Vec<f64>>,
    seed: u64,
    format: Format,
) -> Result<Outcome, Error> {
    output::check(&Planned::in_dir("--out", out, &["manifest.json"]))?;
    let case = flags::case("--case", name)?;
    let checkpoints = match checkpoints {
        Some(times) => {
            check_checkpoints(&times, &case)?;
            times
        }
        None => Audit::new().checkpoints_for(&case),
    };
    let files = exchange::export_case(&case, &checkpoints, seed)?;
    let stale = stale_export_files(out, &files)?;
    exchange::write_files(out, &files)?;
    for path in stale {
        std::fs::remove_file(&path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot remove stale file {}", path.display()),
            )
            .with_source(e)
        })?;
    }
    Ok(Outcome::ok(listing(&case, out, &files, format)))
}

/// The `.npy` files an earlier export left in `out` that this export does
/// not write (removed after the new files are in place, so that a case
/// directory never mixes two cases). A non-empty `out` that holds no
/// earlier export (no `manifest.json`) is refused rather than mixed into.
fn stale_export_files(
    out: &Path,
    files: &[OutputFile],
) -> Result<Vec<std::path::PathBuf>, Error> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(Vec::new());
    };
    let earlier_export = out.join("manifest.json").is_file();
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if files.iter().any(|f| f.name == name) {
            continue;
        }
        if !earlier_export {
            return Err(usage(format!(
                "--out {} is not empty and holds no earlier export (found \
                 {name}); choose an empty directory",
                out.display()
            )));
        }
        if name.ends_with(".npy") {
            stale.push(entry.path());
        }
    }
    Ok(stale)
}

fn listing(
    case: &Case,
    out: &Path,
    files: &[OutputFile],
    format: Format,
) -> String {
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    match format {
        Format::Json => format!(
            "{}\n",
            serde_json::json!({
                "case": case.name,
                "directory": out.display().to_string(),
                "files": names,
            })
        ),
        Format::Markdown => {
            let mut s =
                format!("Exported `{}` to `{}`:\n\n", case.name, out.display());
            for n in names {
                s += &format!("- `{n}`\n");
            }
            s
        }
        Format::Human => format!(
            "exported {} to {}: {}\n",
            case.name,
            out.display(),
            names.join(" ")
        ),
    }
}
