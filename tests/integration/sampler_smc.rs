//! The SMC samplers (`mcgdiff`, `tds`) against the exact posterior: the
//! final particles converge to `p(x0 | y)` as the particle count grows,
//! up to the discretisation error of the sampler's own reverse chain.

use nalgebra::{DMatrix, DVector};
use posterior_lens::case::Case;
use posterior_lens::mixture::Mixture;
use posterior_lens::sampler::{self, Setup};

/// Mean, variance and the share above `threshold` of one coordinate.
#[derive(Clone, Copy, Debug)]
struct Summary {
    mean: f64,
    var: f64,
    share: f64,
}

fn summarise(xs: &DMatrix<f64>, coord: usize, threshold: f64) -> Summary {
    let n = xs.nrows() as f64;
    let col = xs.column(coord);
    let mean = col.iter().sum::<f64>() / n;
    let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let share = col.iter().filter(|&&x| x > threshold).count() as f64 / n;
    Summary { mean, var, share }
}

fn exact(post: &Mixture, coord: usize, threshold: f64) -> Summary {
    let mut u = DVector::zeros(post.dim());
    u[coord] = 1.0;
    let p = post.project(u.as_view());
    Summary { mean: p.mean(), var: p.variance(), share: p.sf(threshold) }
}

/// Runs `spec` on `case` with `n` particles for each seed.
fn runs(case: &str, spec: &str, n: usize, seeds: &[u64]) -> Vec<DMatrix<f64>> {
    let case = Case::builtin(case).unwrap();
    let setup = Setup::new(&case, vec![]).unwrap();
    let sampler = sampler::build(spec).unwrap();
    let problem = setup.for_sampler(sampler.as_ref());
    seeds
        .iter()
        .map(|&seed| sampler.run(&problem, n, seed).unwrap().particles)
        .collect()
}

fn truth(case: &str) -> Mixture {
    let case = Case::builtin(case).unwrap();
    Setup::new(&case, vec![]).unwrap().truth.posterior().clone()
}

/// Pools rows of several runs.
fn pooled(samples: &[DMatrix<f64>]) -> DMatrix<f64> {
    let rows: usize = samples.iter().map(|s| s.nrows()).sum();
    let d = samples[0].ncols();
    let mut out = DMatrix::zeros(rows, d);
    let mut at = 0;
    for s in samples {
        out.rows_mut(at, s.nrows()).copy_from(s);
        at += s.nrows();
    }
    out
}

/// The root-mean-square error of the mean and of the share over runs.
fn rms_errors(
    samples: &[DMatrix<f64>],
    exact: Summary,
    coord: usize,
    threshold: f64,
) -> (f64, f64) {
    let k = samples.len() as f64;
    let (mut mean, mut share) = (0.0, 0.0);
    for s in samples {
        let got = summarise(s, coord, threshold);
        mean += (got.mean - exact.mean).powi(2) / k;
        share += (got.share - exact.share).powi(2) / k;
    }
    (mean.sqrt(), share.sqrt())
}

/// `(case, observed-or-not coordinate to test, mode threshold)`.
const CASES: [(&str, usize, f64); 2] =
    [("fsr-two-modes-1d", 0, 0.25), ("gmm-2d-one-coordinate", 1, 0.0)];

#[test]
fn tds_converges_to_the_exact_posterior() {
    for (case, coord, threshold) in CASES {
        let exact = exact(&truth(case), coord, threshold);
        let small = runs(case, "tds", 100, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let large = runs(case, "tds", 3000, &[11, 12, 13]);
        let got = summarise(&pooled(&large), coord, threshold);
        let label =
            format!("tds on {case} (x[{coord}]): {got:?} vs exact {exact:?}");
        eprintln!("{label}");
        let sd = exact.var.sqrt();
        assert!((got.mean - exact.mean).abs() < 0.1 * sd, "{label}");
        assert!((got.var / exact.var - 1.0).abs() < 0.2, "{label}");
        assert!((got.share - exact.share).abs() < 0.03, "{label}");
        let (mean_small, share_small) =
            rms_errors(&small, exact, coord, threshold);
        let (mean_large, share_large) =
            rms_errors(&large, exact, coord, threshold);
        eprintln!(
            "rms mean {mean_small} -> {mean_large}, \
             share {share_small} -> {share_large}"
        );
        assert!(
            mean_large < 0.5 * mean_small,
            "{label}: rms of the mean {mean_small} -> {mean_large}"
        );
        assert!(
            share_large < 0.5 * share_small,
            "{label}: rms of the share {share_small} -> {share_large}"
        );
    }
}

/// MCGdiff's own benchmark (Cardoso et al. 2024, d = 8, one measurement):
/// the shares of the 25 modes (nearest component mean) match the exact
/// posterior weights. The pooled total-variation distance is measured at
/// about 0.05 to 0.1 (single runs of 1000 particles range from 0.03 to
/// 0.25: the mode choice is made early, by few ancestors); the prior
/// weights are 0.5 away.
#[test]
fn mcgdiff_matches_the_mode_weights_of_its_own_benchmark() {
    let case = "mcgdiff-grid-d8";
    let post = truth(case);
    let weights = post.weights();
    let means = post.means();
    for spec in ["mcgdiff", "mcgdiff:final_weight=pinned"] {
        let sample = pooled(&runs(case, spec, 1000, &[1, 2, 3, 4]));
        let n = sample.nrows() as f64;
        let mut shares = vec![0.0; weights.len()];
        for row in sample.row_iter() {
            let nearest = (0..weights.len())
                .min_by(|&a, &b| {
                    let da = (row - means.row(a)).norm();
                    let db = (row - means.row(b)).norm();
                    da.total_cmp(&db)
                })
                .unwrap();
            shares[nearest] += 1.0 / n;
        }
        let tv: f64 = shares
            .iter()
            .zip(weights.iter())
            .map(|(s, w)| (s - w).abs())
            .sum::<f64>()
            / 2.0;
        assert!(
            tv < 0.15,
            "{spec} on {case}: total variation {tv}, shares {shares:?}, \
             exact {weights:?}"
        );
    }
}

/// A measured defect of MCGdiff as coded (`final_weight=code`, the
/// default): each Gaussian potential is divided out when its coordinate is
/// released, although the population is pinned there to within
/// `sqrt(kappa)`; the final true-likelihood weight then counts the
/// measurement a second time. On a 1-D case where the measurement is
/// informative the spread comes out far too narrow (measured variance
/// 0.03 to 0.04 against 0.087). Keeping the pins (`final_weight=pinned`)
/// removes the double count; what is left is the chain's discretisation
/// (only about 4 of the 100 alpha-uniform steps lie below `tau`).
#[test]
fn mcgdiff_as_coded_counts_the_likelihood_twice() {
    let (case, coord, threshold) = CASES[0];
    let exact = exact(&truth(case), coord, threshold);
    let code = summarise(
        &pooled(&runs(case, "mcgdiff", 2000, &[1, 2])),
        coord,
        threshold,
    );
    let pinned = summarise(
        &pooled(&runs(case, "mcgdiff:final_weight=pinned", 2000, &[1, 2])),
        coord,
        threshold,
    );
    let label = format!("code {code:?}, pinned {pinned:?}, exact {exact:?}");
    assert!(code.var < 0.6 * exact.var, "{label}");
    assert!(pinned.var > 1.15 * code.var, "{label}");
    assert!(pinned.var < exact.var, "{label}");
}
