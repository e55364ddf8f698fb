//! Denoiser throughput on the digits prior (1797 atoms, d = 64) for 1024
//! particles, as GFLOP/s and as a ratio to plain f64 matrix products of the
//! same shapes run the same way (same chunks, same threads) in this run.
//!
//! Run with `cargo bench --bench denoiser`.

use std::hint::black_box;
use std::time::Instant;

use nalgebra::DMatrix;
use posterior_lens::case::Case;
use posterior_lens::mixture::Backward;
use posterior_lens::rng::CHUNK;
use rayon::prelude::*;

/// The best wall time of `repeats` runs, in seconds.
fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let case = Case::builtin("digits-half-masked").expect("built-in case");
    let atoms = case.prior.means().clone();
    let (k, d) = (atoms.nrows(), atoms.ncols());
    let n = 1024;
    let t = 0.3;
    let (alpha, sigma) = case.schedule.alpha_sigma(t);
    let backward = Backward::new(&case.prior, alpha, sigma).unwrap();
    let xs = case.prior.noised(alpha, sigma).sample(n, 1);

    // The denoiser does two products of n x d by d x K shapes (logits and
    // the weighted sum of atoms), 2 n K d flops each.
    let flops = 4.0 * (n * k * d) as f64;
    let denoiser = best_of(7, || {
        black_box(backward.denoise_batch(black_box(&xs)));
    });
    let reference = best_of(7, || {
        let blocks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let block = xs.rows(c * CHUNK, CHUNK.min(n - c * CHUNK));
                let logits = &atoms * block.transpose();
                atoms.transpose() * logits
            })
            .collect();
        black_box(blocks);
    });
    let gflops = |secs: f64| flops / secs / 1e9;
    println!(
        "denoiser, digits prior (K = {k}, d = {d}), {n} particles, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "  denoise_batch      {:8.3} ms  {:6.2} GFLOP/s",
        denoiser * 1e3,
        gflops(denoiser)
    );
    println!(
        "  matrix products    {:8.3} ms  {:6.2} GFLOP/s",
        reference * 1e3,
        gflops(reference)
    );
    println!(
        "  ratio to matrix products: {:.2} (target >= 0.3)",
        reference / denoiser
    );
}
