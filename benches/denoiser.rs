//! Denoiser and likelihood-score throughput on the digits prior (1797
//! atoms, d = 64) for 1024 particles, as GFLOP/s and as a ratio to plain
//! f64 matrix products of the same shapes run the same way (same chunks,
//! same threads) in this run.
//!
//! The likelihood score of an atom prior is
//! `(alpha / sigma^2) (D_y(x) - D(x))`: two denoisers, one over the atoms
//! reweighted by `p(y | x_k)` (case: the first 32 pixels observed with
//! noise 0.1).
//!
//! Run with `cargo bench --bench denoiser`.

use std::hint::black_box;

use nalgebra::DMatrix;
use posterior_lens::mixture::Backward;
use posterior_lens::rng::CHUNK;
use posterior_lens::truth::Truth;
use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::{best_of, best_of_interleaved};

/// `products` pairs of `K x d` by `d x chunk` and `d x K` by `K x chunk`
/// products, chunk by chunk, as the kernels do them.
fn reference(atoms: &DMatrix<f64>, xs: &DMatrix<f64>, pairs: usize) {
    let n = xs.nrows();
    let blocks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let block = xs.rows(c * CHUNK, CHUNK.min(n - c * CHUNK));
            let mut out = DMatrix::zeros(0, 0);
            for _ in 0..pairs {
                let logits = atoms * block.transpose();
                out = atoms.transpose() * logits;
            }
            out
        })
        .collect();
    black_box(blocks);
}

fn main() {
    let case = common::digits_top_half_case();
    let truth = Truth::new(&case).expect("truth");
    let atoms = case.prior.means().clone();
    let (k, d) = (atoms.nrows(), atoms.ncols());
    let n = 1024;
    let repeats = 9;
    println!(
        "digits prior (K = {k}, d = {d}), {n} particles, {} threads, \
         best of {repeats} interleaved rounds",
        rayon::current_num_threads()
    );
    for t in [0.9, 0.3, 0.05, 0.01, 0.002] {
        let (alpha, sigma) = case.schedule.alpha_sigma(t);
        let prior = Backward::new(&case.prior, alpha, sigma).unwrap();
        let post = Backward::new(truth.posterior(), alpha, sigma).unwrap();
        let xs = case.prior.noised(alpha, sigma).sample(n, 1);

        // Two products of 2 n K d flops per denoiser.
        let flops = 4.0 * (n * k * d) as f64;
        let factor = alpha / (sigma * sigma);
        let times = best_of_interleaved(
            repeats,
            &mut [
                &mut || {
                    black_box(prior.denoise_batch(black_box(&xs)));
                },
                &mut || {
                    let diff =
                        post.denoise_batch(&xs) - prior.denoise_batch(&xs);
                    black_box(diff * factor);
                },
                &mut || reference(&atoms, &xs, 1),
                &mut || reference(&atoms, &xs, 2),
            ],
        );
        let [denoiser, score, one, two] = times[..] else {
            unreachable!("four timings")
        };
        let unoptimised = best_of(3, || {
            black_box(prior.denoise_batch_reference(black_box(&xs)));
        });
        let gflops = |secs: f64, f: f64| f / secs / 1e9;
        println!("t = {t} (alpha = {alpha:.3}, sigma = {sigma:.3})");
        println!(
            "  denoise_batch          {:8.3} ms  {:6.2} GFLOP/s  ratio {:.2}",
            denoiser * 1e3,
            gflops(denoiser, flops),
            one / denoiser
        );
        println!(
            "  likelihood score       {:8.3} ms  {:6.2} GFLOP/s  ratio {:.2}",
            score * 1e3,
            gflops(score, 2.0 * flops),
            two / score
        );
        println!(
            "  unoptimised denoiser   {:8.3} ms  {:6.2} GFLOP/s  ratio {:.2}",
            unoptimised * 1e3,
            gflops(unoptimised, flops),
            one / unoptimised
        );
        println!(
            "  matrix products        {:8.3} ms  {:6.2} GFLOP/s",
            one * 1e3,
            gflops(one, flops)
        );
    }
    println!("ratio: matrix-product time / kernel time (target >= 0.6)");
}
