//! Scale: 100 000 atoms in d = 64, 256 particles, 1000 steps of the `fsr`
//! reference with the cell truncation, on all threads; prints the wall
//! time, the peak memory (VmHWM) and the largest neglected softmax mass
//! over all steps and particles.
//!
//! The atoms: the 1797 digits rows, each copied 56 times (55 for the last
//! rows, to 100 000) with Gaussian jitter of standard deviation 0.1 from a
//! seeded stream; the first 32 pixels of row 5 observed with noise 0.1.
//!
//! Run with `cargo bench --bench scale`.

use std::time::Instant;

use nalgebra::DMatrix;
use posterior_lens::mixture::{AtomCells, Mixture};
use posterior_lens::rng::{self, Purpose};
use posterior_lens::sampler::{self, Setup};
use rand_distr::{Distribution, StandardNormal};

#[path = "common/mod.rs"]
mod common;

fn main() {
    let total = 100_000;
    let mut case = common::digits_top_half_case();
    let digits = case.prior.means().clone();
    let d = digits.ncols();
    let mut rng = rng::stream(11, Purpose::Sample, 0);
    let atoms = DMatrix::from_fn(total, d, |i, j| {
        let z: f64 = StandardNormal.sample(&mut rng);
        digits[(i % digits.nrows(), j)] + 0.1 * z
    });
    case.prior = Mixture::atoms(atoms).expect("atoms");
    case.name = "jittered-digits-100k".into();

    let start = Instant::now();
    let setup = Setup::new(&case, Vec::new()).expect("setup");
    let cells = AtomCells::new(setup.truth.posterior()).expect("cells");
    let prepare = start.elapsed().as_secs_f64();

    let (n, steps, tolerance) = (256, 1000, 1e-12);
    let spec = format!("fsr:steps={steps},truncate={tolerance:e}");
    let fsr = sampler::build(&spec).expect("fsr");
    let problem = setup.for_sampler(fsr.as_ref());
    let start = Instant::now();
    let run = fsr.run(&problem, n, 1).expect("fsr runs");
    let secs = start.elapsed().as_secs_f64();

    // The neglected mass, re-measured on the final particles and at a few
    // times along the way (the run itself guarantees <= tolerance).
    let mut worst: f64 = 0.0;
    for t in [0.9, 0.5, 0.1, 0.01] {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        let xs = setup.truth.sample_at(t, n, 3);
        let (_, neglected) = cells.denoise_batch(alpha, sigma, &xs, tolerance);
        worst = worst.max(neglected);
    }
    println!(
        "{spec} on {} (K = {total}, d = {d}, {} cells), {n} particles, \
         {} threads",
        case.name,
        cells.num_cells(),
        rayon::current_num_threads()
    );
    println!("  setup (truth, cells)   {prepare:8.2} s");
    println!("  fsr run                {secs:8.2} s (target < 60 s)");
    println!(
        "  peak memory (VmHWM)    {:8.0} MiB (target < 1024 MiB)",
        common::peak_memory_mib().unwrap_or(f64::NAN)
    );
    println!(
        "  neglected mass bound   {worst:8.1e} (largest on exact draws at \
         t = 0.9, 0.5, 0.1, 0.01; the run guarantees <= {tolerance:e})"
    );
    assert!(run.particles.iter().all(|v| v.is_finite()));
}
