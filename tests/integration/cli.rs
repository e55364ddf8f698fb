//! The command line, run as a real binary on temporary directories:
//! outputs (snapshots), exit codes, bad input, the export/check round trip
//! (with the NumPy example when Python and NumPy are available), survey
//! shards and merge.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nalgebra::DMatrix;
use npyz::WriterBuilder;
use posterior_lens::case::Case;
use posterior_lens::exchange::npy_bytes;
use posterior_lens::report::Report;
use posterior_lens::sampler;
use posterior_lens::truth::Truth;

use crate::util::bin;

/// Snapshots live in the top-level `snapshots/` directory.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Exit code and stderr of a failing call, with the temporary directory
/// replaced by `[DIR]`.
fn failure(out: &Output, dir: &Path) -> String {
    let dir = dir.display().to_string();
    // The list of samplers grows as samplers are added; keep it out.
    let err = stderr(out).replace(&dir, "[DIR]");
    let err = match err.split_once("built-in samplers: ") {
        Some((head, _)) => format!("{head}built-in samplers: [...]\n"),
        None => err,
    };
    format!(
        "exit {}\nstdout: {}\nstderr: {err}",
        code(out),
        stdout(out).replace(&dir, "[DIR]"),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_npy(path: &Path, shape: &[usize], data: &[f64]) {
    std::fs::write(path, npy_bytes(shape, data)).unwrap();
}

/// Exact draws of `p(x0 | y)` as a run directory (float32, Fortran order
/// when asked), optionally shrunk towards their mean.
fn exact_run(case: &Case, dir: &Path, n: usize, shrink: f64, fortran: bool) {
    let truth = Truth::new(case).unwrap();
    let mut x = truth.posterior().sample(n, 11);
    let mean = x.row_mean();
    for mut row in x.row_iter_mut() {
        let centred = &row - &mean;
        row.copy_from(&(&mean + centred * shrink));
    }
    std::fs::create_dir_all(dir).unwrap();
    let d = case.dim();
    let (order, data): (npyz::Order, Vec<f32>) = if fortran {
        (npyz::Order::Fortran, x.as_slice().iter().map(|&v| v as f32).collect())
    } else {
        let t = x.transpose();
        (npyz::Order::C, t.as_slice().iter().map(|&v| v as f32).collect())
    };
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[n as u64, d as u64])
        .order(order)
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    w.extend(data).unwrap();
    w.finish().unwrap();
    std::fs::write(dir.join("samples.npy"), bytes).unwrap();
}

#[test]
fn samplers_lists_every_registered_sampler_with_its_kind() {
    let out = run(&["samplers"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let registry = sampler::registry();
    // Two lines a sampler: name, kind and summary, then its settings.
    assert_eq!(text.lines().count(), 2 * registry.len());
    let lines: Vec<&str> = text.lines().collect();
    for (pair, entry) in lines.chunks(2).zip(&registry) {
        assert!(pair[0].starts_with(entry.name), "{}", pair[0]);
        let defaults = sampler::build(entry.name).unwrap().settings();
        let listed: Vec<String> =
            defaults.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let expected = if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        };
        assert_eq!(pair[1].trim(), format!("settings: {expected}"));
    }
    let out = run(&["samplers", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), registry.len());
    assert_eq!(json[0]["kind"], "reference");
    assert_eq!(json[0]["name"], "exact");
    assert_eq!(json[0]["settings"]["steps"], "50");
}

/// Every row of a Markdown table has as many cells as its header: a `|`
/// inside a cell (as in `p(y|x_t)`) is escaped.
fn assert_tables_are_valid(markdown: &str) {
    let cells = |line: &str| {
        line.replace("\\|", "").matches('|').count().saturating_sub(1)
    };
    let mut columns = None;
    for line in markdown.lines() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let n = cells(line);
        match columns {
            None => columns = Some(n),
            Some(c) => assert_eq!(n, c, "cells of {line}"),
        }
    }
}

#[test]
fn samplers_markdown_escapes_pipes_in_cells() {
    let out = run(&["samplers", "--format", "markdown"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains("p(y\\|x_t)"), "{text}");
    assert_eq!(text.lines().count(), sampler::registry().len() + 2);
    assert_tables_are_valid(&text);
    assert_tables_are_valid(&stdout(&run(&["cases", "--format", "markdown"])));
}

#[test]
fn audit_of_the_exact_sampler_passes() {
    let out = run(&[
        "audit",
        "--case",
        "fsr-two-modes-1d",
        "--sampler",
        "exact:steps=20",
        "--particles",
        "300",
        "--seed",
        "3",
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.passed());
    snapshot!(
        "cli_audit_exact_json",
        serde_json::to_string_pretty(&report.snapshot_view()).unwrap()
    );
}

#[test]
fn audit_with_findings_exits_1_and_writes_junit_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let out_dir = dir.path().join("report");
    // Two Euler-Maruyama steps: far too coarse to be right.
    let out = run(&[
        "audit",
        "--case",
        "fsr-two-modes-1d",
        "--sampler",
        "score:steps=2",
        "--particles",
        "300",
        "--format",
        "markdown",
        "--junit",
        path(&junit),
        "--out",
        path(&out_dir),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.starts_with("### `score:method=em,spacing=logsnr,steps=2` on"),
        "{md}"
    );
    assert!(md.contains("❌ fail"));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("<testcase name=\"spread/x/t=0.8\""), "{xml}");
    assert!(xml.contains("<failure"), "{xml}");
    assert!(xml.contains("replay: posterior-lens audit"), "{xml}");
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("report.json")).unwrap(),
    )
    .unwrap();
    assert!(!report.passed());
    assert!(out_dir.join("report.md").exists());
}

#[test]
fn bad_input_gives_one_line_and_exit_3_or_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let run_dir = |name: &str| {
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };

    // Files: wrong dtype, wrong shape, NaN, all-zero weights, half a
    // trajectory, a file that is not NPY.
    let int_dir = run_dir("int");
    let mut bytes = Vec::new();
    let mut w = npyz::WriteOptions::<i64>::new()
        .default_dtype()
        .shape(&[3, 2])
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    w.extend([1i64, 2, 3, 4, 5, 6]).unwrap();
    w.finish().unwrap();
    std::fs::write(int_dir.join("samples.npy"), bytes).unwrap();
    let shape_dir = run_dir("shape");
    write_npy(&shape_dir.join("samples.npy"), &[4, 3], &[0.0; 12]);
    let nan_dir = run_dir("nan");
    write_npy(
        &nan_dir.join("samples.npy"),
        &[2, 2],
        &[0.0, 1.0, f64::NAN, 0.0],
    );
    let weights_dir = run_dir("weights");
    exact_run(&case, &weights_dir, 20, 1.0, false);
    write_npy(
        &weights_dir.join("log_weights.npy"),
        &[20],
        &[f64::NEG_INFINITY; 20],
    );
    let half_dir = run_dir("half");
    exact_run(&case, &half_dir, 20, 1.0, false);
    write_npy(&half_dir.join("trajectory_times.npy"), &[1], &[0.5]);
    let garbage_dir = run_dir("garbage");
    std::fs::write(garbage_dir.join("samples.npy"), b"not an array").unwrap();
    let empty_dir = run_dir("empty");
    let case_file = d.join("bad-case.json");
    std::fs::write(&case_file, r#"{"schema_version": 1, "name": "x", "prior": {"type": "empirical", "points": []}, "forward": {"type": "identity", "noise_std": 0.1}, "observation": [0.0], "schedule": {"type": "vp_linear", "beta_min": 0.1, "beta_max": 20.0}}"#).unwrap();

    let check = |dir: &Path| -> Vec<String> {
        vec![
            "check".into(),
            "--case".into(),
            "gmm-2d-one-coordinate".into(),
            "--samples".into(),
            path(dir).into(),
        ]
    };
    let calls: Vec<(&str, Vec<String>)> = vec![
        (
            "usage_unknown_case",
            vec!["truth".into(), "--case".into(), "no-such-case".into()],
        ),
        (
            "missing_case_file",
            vec![
                "truth".into(),
                "--case".into(),
                path(&d.join("missing.json")).into(),
            ],
        ),
        (
            "invalid_case_file",
            vec!["truth".into(), "--case".into(), path(&case_file).into()],
        ),
        (
            "usage_unknown_sampler",
            vec![
                "audit".into(),
                "--case".into(),
                "fsr-gaussian-1d".into(),
                "--sampler".into(),
                "nope".into(),
            ],
        ),
        (
            "usage_unknown_setting",
            vec![
                "audit".into(),
                "--case".into(),
                "fsr-gaussian-1d".into(),
                "--sampler".into(),
                "exact:speed=3".into(),
            ],
        ),
        (
            "usage_bad_setting_value",
            vec![
                "audit".into(),
                "--case".into(),
                "fsr-gaussian-1d".into(),
                "--sampler".into(),
                "exact:eta=2".into(),
            ],
        ),
        ("missing_run_directory", check(&d.join("nowhere"))),
        ("missing_samples", check(&empty_dir)),
        ("wrong_dtype", check(&int_dir)),
        ("wrong_shape", check(&shape_dir)),
        ("nan_in_samples", check(&nan_dir)),
        ("all_zero_weights", check(&weights_dir)),
        ("trajectory_without_states", check(&half_dir)),
        ("not_npy", check(&garbage_dir)),
        (
            "usage_fwer",
            vec![
                "audit".into(),
                "--case".into(),
                "fsr-gaussian-1d".into(),
                "--sampler".into(),
                "exact".into(),
                "--fwer".into(),
                "2".into(),
            ],
        ),
        (
            "usage_checkpoints",
            vec![
                "export".into(),
                "--case".into(),
                "fsr-gaussian-1d".into(),
                "--out".into(),
                path(&d.join("never")).into(),
                "--checkpoints".into(),
                "0.2,0.5".into(),
            ],
        ),
        ("usage_shard", vec!["survey".into(), "--shard".into(), "3/2".into()]),
    ];
    let mut all = String::new();
    for (name, args) in &calls {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        let err = stderr(&out);
        let expected = if name.starts_with("usage") { 2 } else { 3 };
        assert_eq!(code(&out), expected, "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        if !name.starts_with("usage_shard") {
            assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        }
        all += &format!("== {name}\n{}\n", failure(&out, d));
    }
    // Nothing was written half-way.
    assert!(!d.join("never").exists());
    snapshot!("cli_bad_input", all);
}

#[test]
fn export_writes_a_loadable_case_and_the_probe_points() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("case");
    let out = run(&[
        "export",
        "--case",
        "gmm-2d-one-coordinate",
        "--out",
        path(&out_dir),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    snapshot!("cli_export", failure(&out, dir.path()));

    // case.json gives the same exact posterior as the built-in case.
    let truth = |case: &str| {
        let out = run(&["truth", "--case", case, "--format", "json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["posterior"].clone()
    };
    let exported = out_dir.join("case.json");
    let (a, b) = (truth("gmm-2d-one-coordinate"), truth(path(&exported)));
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
            match v {
                serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
                serde_json::Value::Array(a) => {
                    a.iter().for_each(|v| walk(v, out))
                }
                serde_json::Value::Object(m) => {
                    m.values().for_each(|v| walk(v, out))
                }
                _ => {}
            }
        }
        walk(v, &mut out);
        out
    };
    for (x, y) in flat(&a).iter().zip(flat(&b)) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + x.abs()), "{x} vs {y}");
    }

    // The probes hold the exact denoiser.
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let read = |name: &str| {
        posterior_lens::exchange::read_npy(&out_dir.join(name)).unwrap()
    };
    let (t, x, den) =
        (read("probe_t.npy"), read("probe_x.npy"), read("probe_denoised.npy"));
    let truth = Truth::new(&case).unwrap();
    let d = case.dim();
    for (i, &t) in t.data.iter().enumerate() {
        let at = truth.at(t).unwrap();
        let xi =
            nalgebra::DVector::from_column_slice(&x.data[i * d..(i + 1) * d]);
        let expected = at.denoise(xi.as_view());
        for j in 0..d {
            assert_eq!(den.data[i * d + j], expected[j]);
        }
    }
}

#[test]
fn check_passes_exact_draws_and_fails_shrunk_ones() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::builtin("gmm-2d-one-coordinate").unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    exact_run(&case, &good, 400, 1.0, true);
    exact_run(&case, &bad, 400, 0.6, false);
    let check = |d: &Path| {
        run(&["check", "--case", "gmm-2d-one-coordinate", "--samples", path(d)])
    };
    let out = check(&good);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("PASS  external on gmm-2d-one-coordinate")
    );
    let out = check(&bad);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert!(stdout(&out).contains("spread_too_narrow"), "{}", stdout(&out));
}

/// A Python with NumPy: `POSTERIOR_LENS_PYTHON`, the repository's
/// `.venv`, or `python3`.
fn python_with_numpy() -> Option<PathBuf> {
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let candidates = [
        std::env::var_os("POSTERIOR_LENS_PYTHON").map(PathBuf::from),
        Some(venv),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import numpy"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn python_example_round_trip_exact_passes_and_no_noise_fails() {
    let Some(python) = python_with_numpy() else {
        eprintln!(
            "skipped: no Python with NumPy (set POSTERIOR_LENS_PYTHON or \
             create .venv with numpy)"
        );
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/python/exact_sampler.py");
    let dir = tempfile::tempdir().unwrap();
    let case_dir = dir.path().join("case");
    let case = "gmm-2d-one-coordinate";
    let out = run(&["export", "--case", case, "--out", path(&case_dir)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for (name, extra, expected) in
        [("exact", None, 0), ("no-noise", Some("--no-noise"), 1)]
    {
        let run_dir = dir.path().join(name);
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg(&case_dir)
            .arg(&run_dir)
            .args(["--particles", "500"]);
        cmd.args(extra);
        let py = cmd.output().unwrap();
        assert!(py.status.success(), "{}", stderr(&py));
        assert!(stdout(&py).contains("denoisers match the probes"));
        let out = run(&[
            "check",
            "--case",
            path(&case_dir.join("case.json")),
            "--samples",
            path(&run_dir),
        ]);
        assert_eq!(code(&out), expected, "{name}: {}", stdout(&out));
        let head = stdout(&out).lines().next().unwrap().to_string();
        let verdict = if expected == 0 { "PASS" } else { "FAIL" };
        assert!(head.starts_with(verdict), "{name}: {head}");
    }
}

#[test]
fn survey_shards_merge_to_the_full_survey_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "survey",
        "--cases",
        "fsr-two-modes-1d,fsr-three-atoms",
        "--samplers",
        "exact:steps=10;score:steps=3",
        "--particles",
        "200",
        "--reference-draws",
        "1000",
        "--progress",
        "lines",
    ];
    let survey = |extra: &[&str], threads: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = Command::new(bin())
            .args(&args)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        out
    };
    let full_dir = dir.path().join("full");
    let one_dir = dir.path().join("one-thread");
    let shard_dir = dir.path().join("shards");
    let merged_dir = dir.path().join("merged");
    let full = survey(&["--out", path(&full_dir)], "2");
    let header = stdout(&full).lines().next().unwrap().to_string();
    assert!(header.contains("2 samplers x 2 cases"), "{header}");
    survey(&["--out", path(&one_dir)], "1");
    survey(&["--out", path(&shard_dir), "--shard", "1/2"], "2");
    survey(&["--out", path(&shard_dir), "--shard", "2/2"], "1");
    let merged = run(&["merge", path(&shard_dir), "--out", path(&merged_dir)]);
    assert_eq!(code(&merged), 0, "{}", stderr(&merged));

    let read =
        |d: &Path| std::fs::read_to_string(d.join("survey.json")).unwrap();
    assert_eq!(read(&full_dir), read(&one_dir), "thread count changed it");
    assert_eq!(read(&full_dir), read(&merged_dir), "merge differs");
    assert_eq!(stdout(&full), stdout(&merged));
    assert!(full_dir.join("survey.md").exists());
    snapshot!("cli_survey_small", stdout(&full));

    // A merge with a shard missing is bad input.
    std::fs::remove_file(shard_dir.join("survey-shard-2-of-2.json")).unwrap();
    let out = run(&["merge", path(&shard_dir), "--out", path(&merged_dir)]);
    assert_eq!(code(&out), 3);
    assert_eq!(stderr(&out), "error: merge: shard 2/2 is missing\n");
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let mut child = Command::new(bin())
        .args(["truth", "--case", "mcgdiff-grid-d8"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn check_reads_a_trajectory_and_tests_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::builtin("fsr-two-modes-1d").unwrap();
    let truth = Truth::new(&case).unwrap();
    let run_dir = dir.path().join("run");
    exact_run(&case, &run_dir, 300, 1.0, false);
    let times = [0.8, 0.2];
    let mut states = Vec::new();
    for (i, &t) in times.iter().enumerate() {
        let x: DMatrix<f64> = truth.sample_at(t, 300, 20 + i as u64);
        states.extend(x.iter().copied());
    }
    write_npy(&run_dir.join("trajectory.npy"), &[2, 300, 1], &states);
    write_npy(&run_dir.join("trajectory_times.npy"), &[2], &times);
    let out = check_two_modes(&run_dir, &["--format", "json"]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    let t: Vec<f64> = report.checkpoints.iter().map(|c| c.t).collect();
    assert_eq!(t, vec![0.8, 0.2, 0.0]);

    // Times in the wrong order are bad input, not a failed audit.
    write_npy(&run_dir.join("trajectory_times.npy"), &[2], &[0.2, 0.8]);
    let samples = path(&run_dir);
    let out =
        run(&["check", "--case", "fsr-two-modes-1d", "--samples", samples]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trajectory_times[1] is 0.8, not below"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn export_replaces_an_earlier_export_and_refuses_other_directories() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("case");
    let out = run(&[
        "export",
        "--case",
        "gmm-2d-one-coordinate",
        "--out",
        path(&out_dir),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let first: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // A second export of another case into the same directory leaves no
    // file of the first behind.
    let out =
        run(&["export", "--case", "fsr-three-atoms", "--out", path(&out_dir)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let second: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed = stdout(&out);
    for name in &second {
        assert!(
            name == "manifest.json"
                || name == "case.json"
                || listed.contains(name.as_str()),
            "{name} is left over from the first export: {first:?}"
        );
    }
    // A directory holding something else is not written into: a bad
    // output path, so a usage error like every other.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let out =
        run(&["export", "--case", "fsr-three-atoms", "--out", path(&other)]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}

/// `check` of the run directory `run_dir` on `fsr-two-modes-1d`, with
/// `extra` flags.
fn check_two_modes(run_dir: &Path, extra: &[&str]) -> Output {
    let mut args =
        vec!["check", "--case", "fsr-two-modes-1d", "--samples", path(run_dir)];
    args.extend_from_slice(extra);
    run(&args)
}

/// The lines on stderr, checked to be exactly one error line.
fn one_error_line(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// `audit` of the exact sampler on a Gaussian case, quick to run, with
/// `extra` flags.
fn quick_audit(extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "--case",
        "fsr-gaussian-1d",
        "--sampler",
        "exact:steps=10",
        "--particles",
        "100",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// A survey of `samplers` on `cases` with few particles, written to
/// `out_dir`.
fn quick_survey(out_dir: &Path, cases: &str, samplers: &str) -> Output {
    run(&[
        "survey",
        "--cases",
        cases,
        "--samplers",
        samplers,
        "--particles",
        "100",
        "--progress",
        "none",
        "--out",
        path(out_dir),
    ])
}

#[test]
fn a_failing_output_path_leaves_no_partial_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("report");
    let junit_dir = dir.path().join("junit-is-a-directory");
    std::fs::create_dir_all(&junit_dir).unwrap();
    let out =
        quick_audit(&["--out", path(&out_dir), "--junit", path(&junit_dir)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = one_error_line(&out);
    assert!(err.contains("--junit") && err.contains(path(&junit_dir)), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!out_dir.exists(), "--out was written before the error");

    // A file in the way of --out: refused before the survey runs.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    for out_dir in [file.clone(), file.join("below")] {
        let out = quick_survey(&out_dir, "fsr-gaussian-1d", "exact:steps=10");
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = one_error_line(&out);
        assert!(err.contains("--out") && err.contains(path(&file)), "{err}");
        assert!(!err.contains("cells in"), "the survey ran: {err}");
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // --junit naming one of the files --out writes.
    let clash = out_dir.join("report.json");
    let out = quick_audit(&["--out", path(&out_dir), "--junit", path(&clash)]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = one_error_line(&out);
    assert!(err.contains("--junit") && err.contains("report.json"), "{err}");
    assert!(!out_dir.exists());
}

#[test]
fn check_refuses_audit_flags_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::builtin("fsr-two-modes-1d").unwrap();
    let run_dir = dir.path().join("run");
    exact_run(&case, &run_dir, 200, 1.0, false);
    // --particles: the count is that of samples.npy; --checkpoints: the
    // times are those of the run's trajectory.
    for (flag, value, why) in [
        ("--particles", "50", "samples.npy"),
        ("--checkpoints", "0.5,0.2", "trajectory times"),
    ] {
        let out = check_two_modes(&run_dir, &[flag, value]);
        assert_eq!(code(&out), 2, "{}", stdout(&out));
        let err = one_error_line(&out);
        assert!(err.contains(&format!("{flag} {value}")), "{err}");
        assert!(err.contains(why), "{err}");
        assert!(out.stdout.is_empty());
    }
    let help = stdout(&run(&["check", "--help"]));
    assert!(help.contains("number of samples in samples.npy"), "{help}");
}

#[test]
fn a_sampler_declining_a_case_is_a_usage_error_said_once() {
    let out = run(&[
        "audit",
        "--case",
        "fsr-gaussian-1d",
        "--sampler",
        "fsr",
        "--progress",
        "none",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = one_error_line(&out);
    assert_eq!(err.matches("sampler fsr").count(), 1, "{err}");
    assert!(err.contains("needs an empirical prior"), "{err}");
}

#[test]
fn audit_says_what_it_runs_before_it_runs_it() {
    let out = run(&[
        "audit",
        "--case",
        "fsr-three-atoms",
        "--sampler",
        "exact:steps=5",
        "--particles",
        "100",
        "--progress",
        "lines",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("audit: running exact on fsr-three-atoms"));
    assert!(lines[1].starts_with("[1/1] audit: exact on fsr-three-atoms"));
    // Without progress, stderr stays empty.
    let quiet = run(&[
        "audit",
        "--case",
        "fsr-three-atoms",
        "--sampler",
        "exact:steps=5",
        "--particles",
        "100",
        "--progress",
        "none",
    ]);
    assert_eq!(stderr(&quiet), "");
    assert_eq!(stdout(&quiet), stdout(&out));
}

#[test]
fn survey_shards_share_the_heavy_case_and_counts_read_in_the_singular() {
    let dir = tempfile::tempdir().unwrap();
    // Cells (sampler-major): 0 exact/gaussian, 1 exact/three-atoms,
    // 2 score/gaussian, 3 score/three-atoms. The three atoms weigh more,
    // so each shard gets one of their cells.
    let out = run(&[
        "survey",
        "--cases",
        "fsr-gaussian-1d,fsr-three-atoms",
        "--samplers",
        "exact:steps=3;score:steps=3",
        "--particles",
        "100",
        "--progress",
        "none",
        "--shard",
        "1/2",
        "--format",
        "json",
        "--out",
        path(dir.path()),
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indices: Vec<u64> = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1]);

    // One sampler on one case, on one thread.
    let out = Command::new(bin())
        .args([
            "survey",
            "--cases",
            "fsr-gaussian-1d",
            "--samplers",
            "exact:steps=3",
            "--particles",
            "100",
            "--progress",
            "none",
            "--out",
            path(&dir.path().join("one")),
        ])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("survey: 1 sampler x 1 case,"), "{text}");
    let err = stderr(&out);
    assert!(err.contains("survey: 1 cell in "), "{err}");
    assert!(err.contains(" on 1 thread;"), "{err}");
    assert!(err.contains("not CPU time"), "{err}");
}

#[test]
fn sampler_setting_errors_are_usage_errors() {
    let audit = |spec: &str| {
        run(&["audit", "--case", "fsr-gaussian-1d", "--sampler", spec])
    };
    for spec in ["dps:zeta=abc", "dps:scale=abc", "exact:eta=2", "nope"] {
        let out = audit(spec);
        assert_eq!(code(&out), 2, "{spec}: {}", stderr(&out));
        let err = one_error_line(&out);
        assert!(err.contains(&format!("--sampler {spec}")), "{err}");
    }
    let out = run(&["survey", "--samplers", "exact;dps:zeta=abc"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = one_error_line(&out);
    assert!(err.contains("--samplers dps:zeta=abc"), "{err}");
    // An unknown case name is a bad flag value too; a bad file is input.
    let out = run(&["truth", "--case", "no-such-case"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(one_error_line(&out).contains("--case no-such-case"));
    let out = run(&["truth", "--case", "/no/such/case.json"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
}

#[test]
fn survey_refuses_duplicate_samplers_and_cases() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("survey");
    let calls = [
        ("fsr-gaussian-1d", "exact:steps=10;exact:steps=10", "exact:steps=10"),
        // The same sampler, spelled with and without its default setting.
        ("fsr-gaussian-1d", "exact;exact:eta=1", "exact:eta=1"),
        (
            "fsr-gaussian-1d,fsr-gaussian-1d",
            "exact:steps=10",
            "fsr-gaussian-1d",
        ),
    ];
    for (cases, samplers, duplicate) in calls {
        let out = quick_survey(&out_dir, cases, samplers);
        assert_eq!(code(&out), 2, "{cases} / {samplers}: {}", stderr(&out));
        let err = one_error_line(&out);
        assert!(err.contains(duplicate), "{err}");
        assert!(err.contains("twice"), "{err}");
    }
    assert!(!out_dir.exists());
}

#[test]
fn survey_replay_names_the_case_file_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let case_dir = dir.path().join("case");
    let case = "fsr-two-modes-1d";
    let out = run(&["export", "--case", case, "--out", path(&case_dir)]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let case_file = case_dir.join("case.json");
    let survey_dir = dir.path().join("survey");
    let out = quick_survey(&survey_dir, path(&case_file), "score:steps=2");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = std::fs::read_to_string(survey_dir.join("survey.json")).unwrap();
    let survey: serde_json::Value = serde_json::from_str(&text).unwrap();
    let replay = survey["cells"][0]["replay"].as_str().unwrap().to_string();
    assert!(
        replay.contains(&format!("--case {} ", path(&case_file))),
        "{replay}"
    );
    assert!(stdout(&out).contains(&replay), "{}", stdout(&out));

    // The replay command runs and finds the same failure.
    let args: Vec<&str> = replay.split(' ').collect();
    assert_eq!(args[0], "posterior-lens");
    let out = run(&args[1..]);
    assert_eq!(code(&out), 1, "{replay}: {}", stderr(&out));
}

#[test]
fn survey_names_every_file_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("survey");
    let out = quick_survey(&out_dir, "fsr-gaussian-1d", "exact:steps=10");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    let written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    for file in &written {
        assert!(err.contains(file.as_str()), "{file} not named: {err}");
    }
}

#[test]
fn cases_listing_is_aligned_and_cut_at_a_word() {
    let out = run(&["cases"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    snapshot!("cli_cases", text.as_str());
    let builtins = Case::builtin_names();
    assert_eq!(text.lines().count(), builtins.len());
    let mut column = None;
    for (line, name) in text.lines().zip(&builtins) {
        assert!(line.chars().count() <= 100, "too wide: {line}");
        assert!(!line.contains("atoms components"), "{line}");
        // Columns are set apart by two spaces or more, and every column
        // starts where the one above it starts.
        let bytes = line.as_bytes();
        let starts: Vec<usize> = (2..bytes.len())
            .filter(|&i| &bytes[i - 2..i] == b"  " && bytes[i] != b' ')
            .take(4)
            .collect();
        assert_eq!(*column.get_or_insert(starts.clone()), starts, "{line}");
        let description = Case::builtin(name).unwrap().description;
        let shown = &line[starts[3]..];
        match shown.strip_suffix("...") {
            Some(cut) => {
                assert!(description.starts_with(cut), "{line}");
                // The word cut after may lose its comma or colon.
                let rest = description[cut.len()..]
                    .trim_start_matches([',', ':', ';']);
                assert!(rest.starts_with(' '), "cut inside a word: {line}");
            }
            None => assert!(description.starts_with(shown), "{line}"),
        }
    }
    let out = run(&["truth", "--case", "fsr-three-atoms"]);
    assert!(!stdout(&out).contains("atoms components"), "{}", stdout(&out));
}
