//! Exact identities of the closed forms, as properties over random cases:
//! dimension 1-8, 1-6 components, 1-d measurements, every covariance kind.
//! Each identity compares two independent computations (finite
//! differences, a second formula, Monte Carlo).

use nalgebra::{DMatrix, DVector};
use posterior_lens::forward::{ForwardModel, Operator};
use posterior_lens::mixture::{Backward, Covariances, Density, Mixture};
use posterior_lens::schedule::Schedule;
use posterior_lens::truth::Truth;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A random case: the mixture, a dense measurement, a point and a time.
#[derive(Debug)]
struct Random {
    truth: Truth,
    point: DVector<f64>,
    t: f64,
}

fn random_mixture(
    rng: &mut ChaCha8Rng,
    d: usize,
    k: usize,
    kind: u8,
) -> Mixture {
    let weights = DVector::from_fn(k, |_, _| rng.random_range(0.2..1.0));
    let means = DMatrix::from_fn(k, d, |_, _| rng.random_range(-2.0..2.0));
    let covariances = match kind {
        0 => Covariances::Atoms,
        1 => Covariances::Isotropic(DVector::from_fn(k, |_, _| {
            rng.random_range(0.05..1.5)
        })),
        2 => Covariances::Diagonal(DMatrix::from_fn(k, d, |_, _| {
            rng.random_range(0.05..1.5)
        })),
        _ => Covariances::Full(
            (0..k)
                .map(|_| {
                    let l = DMatrix::from_fn(d, d, |_, _| {
                        rng.random_range(-0.8..0.8)
                    });
                    &l * l.transpose() + DMatrix::identity(d, d) * 0.05
                })
                .collect(),
        ),
    };
    Mixture::new(weights, means, covariances).unwrap()
}

fn random_case(seed: u64, d: usize, k: usize, kind: u8, m: usize) -> Random {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let prior = random_mixture(&mut rng, d, k, kind);
    let matrix = DMatrix::from_fn(m, d, |_, _| rng.random_range(-1.0..1.0));
    let noise_std = rng.random_range(0.3..1.0);
    let forward =
        ForwardModel::new(Operator::Dense(matrix), noise_std).unwrap();
    let signal = prior.sample_one(&mut rng);
    let y = forward.sample_observation(signal.as_view(), &mut rng);
    let schedule = Schedule::vp_linear_default();
    let truth = Truth::from_parts(prior, forward, y, schedule).unwrap();
    let t = rng.random_range(0.05..0.6);
    // A point from p_t(. | y), where the identities matter.
    let point = truth.noised_posterior(t).sample_one(&mut rng);
    Random { truth, point, t }
}

fn params() -> impl Strategy<Value = (u64, usize, usize, u8, usize)> {
    (any::<u64>(), 1usize..=8, 1usize..=6, 0u8..4).prop_flat_map(
        |(seed, d, k, kind)| (Just(seed), Just(d), Just(k), Just(kind), 1..=d),
    )
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs())
}

fn assert_vec_close(a: &DVector<f64>, b: &DVector<f64>, rel: f64, abs: f64) {
    let scale = a.amax().max(b.amax());
    for i in 0..a.len() {
        assert!(
            (a[i] - b[i]).abs() <= abs + rel * scale,
            "coordinate {i}: {} vs {} (scale {scale})\n{a}\n{b}",
            a[i],
            b[i]
        );
    }
}

fn finite_difference_gradient(
    f: impl Fn(&DVector<f64>) -> f64,
    x: &DVector<f64>,
    h: f64,
) -> DVector<f64> {
    DVector::from_fn(x.len(), |i, _| {
        let mut plus = x.clone();
        let mut minus = x.clone();
        plus[i] += h;
        minus[i] -= h;
        (f(&plus) - f(&minus)) / (2.0 * h)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn score_equals_finite_differences_of_log_density(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let conditional = |x: &DVector<f64>| at.log_density(x.as_view());
        let prior = |x: &DVector<f64>| at.prior_log_density(x.as_view());
        let fd = finite_difference_gradient(conditional, &r.point, 1e-5);
        assert_vec_close(&at.score(r.point.as_view()), &fd, 1e-5, 1e-6);
        let fd = finite_difference_gradient(prior, &r.point, 1e-5);
        assert_vec_close(&at.prior_score(r.point.as_view()), &fd, 1e-5, 1e-6);
    }

    #[test]
    fn tweedie_mean_matches_score(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let (alpha, sigma) = (at.alpha(), at.sigma());
        let x = r.point.as_view();
        let from_score =
            (r.point.clone() + at.prior_score(x) * sigma * sigma) / alpha;
        assert_vec_close(&at.denoise(x), &from_score, 1e-9, 1e-10);
        let conditional =
            (r.point.clone() + at.score(x) * sigma * sigma) / alpha;
        assert_vec_close(&at.conditional_denoise(x), &conditional, 1e-9, 1e-10);
    }

    #[test]
    fn second_order_tweedie_matches_jacobian_of_denoiser(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let backward = at.prior_backward();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 1);
        let v = DVector::from_fn(d, |_, _| StandardNormal.sample(&mut rng));
        let jvp = backward.jvp(r.point.as_view(), v.as_view());
        let h = 1e-5;
        let fd = (backward.denoise((&r.point + &v * h).as_view())
            - backward.denoise((&r.point - &v * h).as_view()))
            / (2.0 * h);
        assert_vec_close(&jvp, &fd, 1e-5, 1e-6);
        // The covariance product agrees with the dense covariance.
        let posterior = backward.posterior(r.point.as_view());
        let dense = posterior.covariance() * &v;
        let product = backward.cov_mul(r.point.as_view(), v.as_view());
        assert_vec_close(&product, &dense, 1e-10, 1e-12);
    }

    #[test]
    fn bayes_rule_links_prior_likelihood_and_posterior(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let x = r.point.as_view();
        let lhs = at.log_density(x);
        let rhs = at.prior_log_density(x) + at.log_likelihood(x).unwrap()
            - r.truth.log_evidence();
        prop_assert!(close(lhs, rhs, 1e-10, 1e-9), "{lhs} vs {rhs}");
    }

    #[test]
    fn both_forms_of_the_conditional_weights_agree(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let x = r.point.as_view();
        let direct = at.conditional_backward(x).weights();
        let by_conditioning =
            at.conditional_log_weights_by_conditioning(x).unwrap().map(f64::exp);
        assert_vec_close(&direct, &by_conditioning, 1e-9, 1e-12);
    }

    #[test]
    fn likelihood_score_equals_finite_differences(
        (seed, d, k, kind, m) in params()
    ) {
        let r = random_case(seed, d, k, kind, m);
        let at = r.truth.at(r.t).unwrap();
        let score = at.likelihood_score(r.point.as_view());
        let fd = finite_difference_gradient(
            |x| at.log_likelihood(x.as_view()).unwrap(),
            &r.point,
            1e-5,
        );
        assert_vec_close(&score, &fd, 1e-5, 1e-6);
    }

    #[test]
    fn gain_and_information_forms_agree(
        (seed, d, k, kind, _m) in params()
    ) {
        // A tall operator (m > d) selects the information form for
        // invertible covariances; the gain form must give the same law.
        prop_assume!(kind != 0);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let prior = random_mixture(&mut rng, d, k, kind);
        let m = d + 2;
        let matrix = DMatrix::from_fn(m, d, |_, _| rng.random_range(-1.0..1.0));
        let y = DVector::from_fn(m, |_, _| rng.random_range(-1.0..1.0));
        let tall = prior.condition(&matrix, None, 0.7, &y).unwrap();
        // Gain form through a stack of two wide measurements with the
        // same total information: condition on the rows one at a time.
        let mut sequential = prior.clone();
        let mut log_evidence = 0.0;
        for i in 0..m {
            let row = matrix.rows(i, 1).into_owned();
            let yi = DVector::from_element(1, y[i]);
            let step = sequential.condition(&row, None, 0.7, &yi).unwrap();
            log_evidence += step.log_evidence;
            sequential = step.mixture;
        }
        prop_assert!(close(tall.log_evidence, log_evidence, 1e-9, 1e-9));
        assert_vec_close(
            &tall.mixture.weights(), &sequential.weights(), 1e-8, 1e-12);
        assert_vec_close(
            &tall.mixture.mean(), &sequential.mean(), 1e-8, 1e-10);
    }

    #[test]
    fn coordinate_conditioning_matches_dense_conditioning(
        (seed, d, k, kind, m) in params()
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let prior = random_mixture(&mut rng, d, k, kind);
        let mut keep: Vec<usize> = (0..d).collect();
        for i in (1..d).rev() {
            keep.swap(i, rng.random_range(0..=i));
        }
        keep.truncate(m);
        let matrix = DMatrix::from_fn(m, d, |i, j| {
            if keep[i] == j { 1.0 } else { 0.0 }
        });
        let y = DVector::from_fn(m, |_, _| rng.random_range(-2.0..2.0));
        let fast = prior.condition_on_coordinates(&keep, 0.5, &y).unwrap();
        let dense = prior.condition(&matrix, None, 0.5, &y).unwrap();
        prop_assert!(close(fast.log_evidence, dense.log_evidence, 1e-10, 1e-10));
        assert_vec_close(
            &fast.mixture.weights(), &dense.mixture.weights(), 1e-9, 1e-12);
        let (a, b) = (fast.mixture.covariance(), dense.mixture.covariance());
        prop_assert!((a - b).amax() < 1e-9);
    }
}

/// The batched denoiser (one matrix product for atoms) agrees with the
/// per-particle closed form, including at tiny noise and for atoms far
/// apart, where the expanded squared distance would cancel.
#[test]
fn batched_atom_denoiser_matches_direct_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (spread, sigma) in [(1.0, 0.5), (1.0, 1e-3), (1e3, 1e-6), (1e3, 1.0f64)]
    {
        let atoms = DMatrix::from_fn(40, 5, |_, _| {
            rng.random_range(-1.0..1.0) * spread
        });
        let prior = Mixture::atoms(atoms.clone()).unwrap();
        let alpha = (1.0 - sigma * sigma).max(0.0).sqrt().max(0.1);
        let backward = Backward::new(&prior, alpha, sigma).unwrap();
        let xs = DMatrix::from_fn(70, 5, |i, j| {
            let z: f64 = StandardNormal.sample(&mut rng);
            alpha * atoms[(i % 40, j)] + sigma * z * 2.0
        });
        let batch = backward.denoise_batch(&xs);
        for i in 0..xs.nrows() {
            let x = xs.row(i).transpose();
            // Direct: softmax of -|x - alpha x_k|^2 / (2 sigma^2).
            let logits: Vec<f64> = (0..40)
                .map(|k| {
                    -(x.clone() - atoms.row(k).transpose() * alpha)
                        .norm_squared()
                        / (2.0 * sigma * sigma)
                })
                .collect();
            let max = logits.iter().copied().fold(f64::MIN, f64::max);
            let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = w.iter().sum();
            let direct = (0..40).fold(DVector::zeros(5), |acc, k| {
                acc + atoms.row(k).transpose() * (w[k] / total)
            });
            let got = batch.row(i).transpose();
            assert_vec_close(&got, &direct, 1e-9, 1e-12);
        }
    }
}

/// Moments of the noised posterior: the closed-form mean and covariance
/// agree with a large Monte-Carlo sample, and the exact reverse transition
/// maps exact draws at t to exact draws at s (moments within Monte-Carlo
/// error), for every eta.
#[test]
fn exact_reverse_transition_preserves_the_noised_posterior() {
    for (seed, kind) in [(11, 0u8), (12, 1), (13, 2), (14, 3)] {
        let r = random_case(seed, 2, 3, kind, 1);
        let n = 20_000;
        for eta in [0.0, 0.5, 1.0] {
            let (t, s) = (0.5, 0.1);
            let start = r.truth.sample_at(t, n, seed);
            let at = r.truth.at(t).unwrap();
            let moved = at.reverse_step(&start, s, eta, seed, 0).unwrap();
            let target = r.truth.noised_posterior(s);
            check_moments(&moved, &target, &format!("kind {kind} eta {eta}"));
        }
    }
}

/// The sample mean and covariance lie within 5 standard errors of the
/// closed form (standard errors from the closed-form covariance and the
/// sample's own fourth moments).
fn check_moments(sample: &DMatrix<f64>, target: &Mixture, label: &str) {
    let n = sample.nrows() as f64;
    let mean = target.mean();
    let cov = target.covariance();
    for j in 0..target.dim() {
        let col = sample.column(j);
        let sample_mean = col.mean();
        let se = (cov[(j, j)] / n).sqrt();
        assert!(
            (sample_mean - mean[j]).abs() < 5.0 * se,
            "{label}: mean[{j}] {sample_mean} vs {} (se {se})",
            mean[j]
        );
        let centred: Vec<f64> =
            col.iter().map(|v| (v - mean[j]).powi(2)).collect();
        let var = centred.iter().sum::<f64>() / n;
        let var_se =
            (centred.iter().map(|c| (c - var).powi(2)).sum::<f64>() / n / n)
                .sqrt();
        assert!(
            (var - cov[(j, j)]).abs() < 5.0 * var_se,
            "{label}: var[{j}] {var} vs {} (se {var_se})",
            cov[(j, j)]
        );
    }
}

/// The density integrates the mixture correctly: a Monte-Carlo estimate of
/// E[log p] under the mixture against the closed-form density evaluated at
/// the same points gives a consistent sample (a sanity check that
/// `sample` and `Density` describe the same law, through the mean of the
/// score, which is zero for any density).
#[test]
fn score_has_zero_mean_under_its_own_law() {
    for (seed, kind) in [(21, 1u8), (22, 2), (23, 3)] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mixture = random_mixture(&mut rng, 3, 4, kind);
        let density = Density::new(&mixture).unwrap();
        let sample = mixture.sample(40_000, seed);
        let scores = density.score_batch(&sample);
        for j in 0..3 {
            let col = scores.column(j);
            let m = col.mean();
            let sd = col.variance().sqrt();
            let se = sd / (40_000f64).sqrt();
            assert!(
                m.abs() < 5.0 * se,
                "kind {kind}: mean score {m} (se {se})"
            );
        }
    }
}
