//! DPS speed on the digits prior (1797 atoms, d = 64, 32 observed pixels):
//! 1000 steps and 1024 particles, as seconds and GFLOP/s, and as a ratio
//! to plain f64 matrix products of the same shapes run the same way (same
//! chunks of particles, same threads) in this process.
//!
//! Flops counted: each DPS step calls the denoiser once for `D` (two
//! products of `n x d` by `d x K` shapes: the logits and the weighted sum
//! of atoms) and once with a vector-Jacobian product (the same two, plus
//! `X v` and `X^T (w ∘ X v)`), so six products of `2 n K d` flops each;
//! the forward model, the softmax and the noise are not counted.
//!
//! Run with `cargo bench --bench dps`.

use std::hint::black_box;
use std::time::Instant;

use nalgebra::DMatrix;
use posterior_lens::case::Case;
use posterior_lens::rng::CHUNK;
use posterior_lens::sampler::{self, Setup};
use rayon::prelude::*;

/// The reference: the six products of one DPS step, chunk by chunk.
fn reference_step(atoms: &DMatrix<f64>, xs: &DMatrix<f64>) {
    let n = xs.nrows();
    let blocks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let block = xs.rows(c * CHUNK, CHUNK.min(n - c * CHUNK));
            let mut out = DMatrix::zeros(0, 0);
            // The denoiser call, then the denoiser-with-VJP call.
            for products in [2, 4] {
                let logits = atoms * block.transpose();
                out = atoms.transpose() * &logits;
                if products == 4 {
                    let along = atoms * block.transpose();
                    out += atoms.transpose() * along.component_mul(&logits);
                }
            }
            out
        })
        .collect();
    black_box(blocks);
}

fn main() {
    let case = Case::builtin("digits-half-masked").expect("built-in case");
    let setup = Setup::new(&case, Vec::new()).expect("setup");
    let (k, d) = (case.prior.num_components(), case.dim());
    let (n, steps) = (1024, 1000);
    let spec = format!("dps:steps={steps}");
    let dps = sampler::build(&spec).expect("dps");
    let problem = setup.for_sampler(dps.as_ref());
    let flops_per_step = 6.0 * 2.0 * (n * k * d) as f64;

    let start = Instant::now();
    let run = dps.run(&problem, n, 1).expect("dps runs");
    let dps_secs = start.elapsed().as_secs_f64();
    black_box(run);

    // The reference per step, timed over 100 steps (the same work every
    // step) to keep the benchmark short.
    let xs = case.prior.noised(0.5, 0.8).sample(n, 2);
    let atoms = case.prior.means().clone();
    let reference_steps = 100;
    let start = Instant::now();
    for _ in 0..reference_steps {
        reference_step(&atoms, &xs);
    }
    let reference_per_step =
        start.elapsed().as_secs_f64() / reference_steps as f64;

    let dps_gflops = flops_per_step * steps as f64 / dps_secs / 1e9;
    let reference_gflops = flops_per_step / reference_per_step / 1e9;
    println!(
        "{spec} on digits-half-masked (K = {k}, d = {d}), {n} particles, \
         {} threads",
        rayon::current_num_threads()
    );
    println!(
        "  dps                {dps_secs:8.2} s   {dps_gflops:6.2} GFLOP/s \
         ({:.2} ms per step)",
        dps_secs / steps as f64 * 1e3
    );
    println!(
        "  matrix products    {:8.2} s   {reference_gflops:6.2} GFLOP/s \
         (per {steps} steps, timed over {reference_steps})",
        reference_per_step * steps as f64
    );
    println!(
        "  ratio to matrix products: {:.2}",
        dps_gflops / reference_gflops
    );
}
