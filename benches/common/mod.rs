//! Helpers shared by the benchmarks (included with `#[path]`).

#![allow(dead_code)]

use std::time::Instant;

use nalgebra::DVector;
use posterior_lens::case::Case;
use posterior_lens::forward::{ForwardModel, Operator};
use rand_distr::{Distribution, StandardNormal};

/// The best wall time of `repeats` runs, in seconds.
pub fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The best wall time of each of `fs`, in seconds, over `rounds` rounds
/// that run every function once in turn: interference from the rest of
/// the machine then hits all of them alike, so ratios of the results are
/// steadier than ratios of separate [`best_of`] calls.
pub fn best_of_interleaved(
    rounds: usize,
    fs: &mut [&mut dyn FnMut()],
) -> Vec<f64> {
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..rounds {
        for (f, best) in fs.iter_mut().zip(&mut best) {
            let start = Instant::now();
            f();
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    best
}

/// The digits training set with its first 32 pixels observed with noise
/// 0.1: `y` is the top half of training row 5 plus noise from the seeded
/// stream 7.
pub fn digits_top_half_case() -> Case {
    let mut case = Case::builtin("digits-half-masked").expect("built-in case");
    let d = case.dim();
    let keep: Vec<usize> = (0..32).collect();
    let noise_std = 0.1;
    let mut rng = posterior_lens::rng::stream(
        7,
        posterior_lens::rng::Purpose::Observation,
        0,
    );
    let row = case.prior.means().row(5).into_owned();
    case.observation = DVector::from_fn(32, |i, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        row[keep[i]] + noise_std * z
    });
    case.forward =
        ForwardModel::new(Operator::Mask { dim: d, keep }, noise_std)
            .expect("mask");
    case.name = "digits-top-half-0.1".into();
    case
}

/// Peak resident memory of this process (VmHWM), in MiB.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
