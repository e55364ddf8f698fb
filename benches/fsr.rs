//! A whole finite-sample reference run (`fsr`: VP SDE, 1000 Euler-Maruyama
//! steps) on the digits training set with the first 32 pixels observed
//! with noise 0.1, for 256 and 1024 particles: wall time with every atom
//! evaluated, and with the cell truncation (`truncate=1e-12`).
//!
//! Writes what the NumPy reference (`benches/numpy/fsr.py`) needs to run
//! the same algorithm and compare laws and times: the atoms, the posterior
//! log-weights, the time grid with its coefficients, and the particles and
//! times of each run, under `target/fsr-bench/`.
//!
//! Run with `cargo bench --bench fsr` (or `benches/numpy/run.sh`, which
//! runs this and then the NumPy reference).

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use nalgebra::DMatrix;
use posterior_lens::sampler::{self, Setup};
use posterior_lens::schedule::Spacing;

#[path = "common/mod.rs"]
mod common;

fn write_matrix(path: &PathBuf, m: &DMatrix<f64>) {
    let mut text = String::new();
    for row in m.row_iter() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:e}")).collect();
        writeln!(text, "{}", cells.join(",")).unwrap();
    }
    fs::write(path, text).expect("write");
}

fn main() {
    let out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target"))
        .join("fsr-bench");
    fs::create_dir_all(&out).expect("output directory");
    let case = common::digits_top_half_case();
    let setup = Setup::new(&case, Vec::new()).expect("setup");
    let steps = 1000;

    // What the NumPy reference needs.
    write_matrix(&out.join("atoms.csv"), case.prior.means());
    let lw = setup.truth.posterior().log_weights();
    write_matrix(
        &out.join("log_weights.csv"),
        &DMatrix::from_column_slice(lw.len(), 1, lw.as_slice()),
    );
    let schedule = &case.schedule;
    let grid = schedule
        .grid(steps, setup.t_min, setup.t_max, Spacing::Uniform)
        .expect("grid");
    let coefficients = DMatrix::from_fn(steps, 6, |i, j| {
        let (t, s) = (grid[i], grid[i + 1]);
        let (alpha, sigma) = schedule.alpha_sigma(t);
        [t, s, alpha, sigma, schedule.drift(t), schedule.diffusion_squared(t)]
            [j]
    });
    write_matrix(&out.join("grid.csv"), &coefficients);

    println!(
        "fsr on {} (K = {}, d = {}), {steps} steps, {} threads",
        case.name,
        case.prior.num_components(),
        case.dim(),
        rayon::current_num_threads()
    );
    let mut summary = String::new();
    for n in [256, 1024] {
        for (label, spec) in [
            // The uniform grid the NumPy reference runs (the sampler's
            // default is uniform in log-SNR).
            ("all atoms", format!("fsr:steps={steps},spacing=uniform")),
            (
                "truncate=1e-12",
                format!("fsr:steps={steps},spacing=uniform,truncate=1e-12"),
            ),
        ] {
            let fsr = sampler::build(&spec).expect("fsr");
            let problem = setup.for_sampler(fsr.as_ref());
            let start = Instant::now();
            let run = fsr.run(&problem, n, 1).expect("fsr runs");
            let secs = start.elapsed().as_secs_f64();
            println!("  {n:5} particles, {label:15} {secs:8.2} s");
            let tag = if label == "all atoms" { "full" } else { "truncated" };
            write_matrix(
                &out.join(format!("rust_{tag}_{n}.csv")),
                &run.particles,
            );
            writeln!(summary, "{tag},{n},{secs}").unwrap();
        }
    }
    fs::write(out.join("rust_times.csv"), summary).expect("write");
    println!("  wrote {}", out.display());
}
