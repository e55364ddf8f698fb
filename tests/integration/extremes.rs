//! Extreme cases stay finite and right: tiny measurement noise, sigma near
//! zero and near the end of the schedule, a training set of 100 000 atoms,
//! and atoms 1e3 apart. Each value is checked against a closed form or a
//! direct computation, not only for finiteness.

use nalgebra::{DMatrix, DVector};
use posterior_lens::forward::{ForwardModel, Operator};
use posterior_lens::mixture::{Backward, Covariances, Mixture};
use posterior_lens::schedule::Schedule;
use posterior_lens::truth::Truth;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gaussian_1d(mean: f64, var: f64) -> Mixture {
    Mixture::new(
        DVector::from_element(1, 1.0),
        DMatrix::from_element(1, 1, mean),
        Covariances::Isotropic(DVector::from_element(1, var)),
    )
    .unwrap()
}

fn identity(d: usize, noise_std: f64) -> ForwardModel {
    ForwardModel::new(Operator::Identity { dim: d }, noise_std).unwrap()
}

fn relative_gap(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn tiny_measurement_noise_gives_the_conjugate_posterior() {
    let (mu, v, y) = (0.5, 0.6, 0.8);
    for noise in [1e-6, 1e-9] {
        let truth = Truth::from_parts(
            gaussian_1d(mu, v),
            identity(1, noise),
            DVector::from_element(1, y),
            Schedule::vp_linear_default(),
        )
        .unwrap();
        let s2 = noise * noise;
        let exact_var = v * s2 / (v + s2);
        let exact_mean = mu + v / (v + s2) * (y - mu);
        let post = truth.posterior();
        assert!(relative_gap(post.mean()[0], exact_mean) < 1e-12);
        assert!(
            relative_gap(post.covariance()[(0, 0)], exact_var) < 1e-9,
            "{} vs {exact_var}",
            post.covariance()[(0, 0)]
        );
        // log p(y) = log N(y; mu, v + s2).
        let log_evidence = -0.5
            * ((y - mu).powi(2) / (v + s2)
                + (2.0 * std::f64::consts::PI * (v + s2)).ln());
        assert!(relative_gap(truth.log_evidence(), log_evidence) < 1e-12);
        // At an intermediate time the likelihood score is large but finite
        // and equals the Gaussian closed form.
        let at = truth.at(0.3).unwrap();
        let (alpha, sigma) = (at.alpha(), at.sigma());
        let x = DVector::from_element(1, alpha * y + 0.1 * sigma);
        // y | x_t ~ N(m(x), S + s2) with S, m from the Gaussian backward law.
        let c = alpha * alpha * v + sigma * sigma;
        let m = mu + alpha * v / c * (x[0] - alpha * mu);
        let s_var = v * sigma * sigma / c;
        let exact_grad = (y - m) / (s_var + s2) * (alpha * v / c);
        let got = at.likelihood_score(x.as_view())[0];
        assert!(got.is_finite());
        assert!(relative_gap(got, exact_grad) < 1e-8, "{got} vs {exact_grad}");
    }
}

#[test]
fn sigma_near_zero_and_near_the_end_of_the_schedule() {
    let atoms = DMatrix::from_row_slice(3, 1, &[-1.8, 0.2, 2.2]);
    let truth = Truth::from_parts(
        Mixture::atoms(atoms).unwrap(),
        identity(1, 0.3),
        DVector::from_element(1, -1.8),
        Schedule::vp_linear_default(),
    )
    .unwrap();
    // Near t = 0: sigma ~ 1e-5, the denoiser snaps to the nearest atom and
    // the likelihood score is formed from weight differences, not from
    // two huge scores.
    let at = truth.at(1e-8).unwrap();
    assert!(at.sigma() < 1e-4);
    let x = DVector::from_element(1, 0.2 * at.alpha() + 3.0 * at.sigma());
    assert!((at.denoise(x.as_view())[0] - 0.2).abs() < 1e-12);
    let score = at.likelihood_score(x.as_view())[0];
    assert!(score.is_finite());
    // Exactly zero: at this x the atom 0.2 has all the weight with and
    // without y, so E[x0|x_t,y] = E[x0|x_t].
    assert_eq!(score, 0.0);
    // Between two atoms the weights split, and Bayes' rule still holds.
    let mid = DVector::from_element(1, at.alpha() * 1.2);
    let lhs = at.log_density(mid.as_view());
    let rhs = at.prior_log_density(mid.as_view())
        + at.log_likelihood(mid.as_view()).unwrap()
        - truth.log_evidence();
    assert!((lhs - rhs).abs() < 1e-8 * lhs.abs().max(1.0), "{lhs} vs {rhs}");

    // At the end of the schedule alpha ~ 6.7e-3: the weights are nearly the
    // prior's; compare with the softmax written out.
    let at = truth.at(1.0).unwrap();
    assert!(at.alpha() < 1e-2);
    let x = DVector::from_element(1, 0.7);
    let (alpha, sigma) = (at.alpha(), at.sigma());
    let atoms = [-1.8, 0.2, 2.2];
    let lik = [0.0, -(2.0f64.powi(2)), -(4.0f64.powi(2))].map(|r| r / 0.18);
    let expected = |with_y: bool| {
        let logits: Vec<f64> = (0..3)
            .map(|k| {
                -(0.7 - alpha * atoms[k]).powi(2) / (2.0 * sigma * sigma)
                    + if with_y { lik[k] } else { 0.0 }
            })
            .collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        (0..3).map(|k| w[k] * atoms[k]).sum::<f64>() / total
    };
    let got = at.denoise(x.as_view())[0];
    assert!(relative_gap(got, expected(false)) < 1e-12, "{got}");
    let got = at.conditional_denoise(x.as_view())[0];
    assert!(relative_gap(got, expected(true)) < 1e-12, "{got}");
    assert!(at.log_density(x.as_view()).is_finite());
}

#[test]
fn a_training_set_of_100_000_atoms() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, d) = (100_000, 8);
    let atoms = DMatrix::from_fn(n, d, |_, _| rng.random_range(-1.0..1.0));
    let prior = Mixture::atoms(atoms.clone()).unwrap();
    let keep: Vec<usize> = (0..4).collect();
    let forward =
        ForwardModel::new(Operator::Mask { dim: d, keep: keep.clone() }, 0.2)
            .unwrap();
    let y = DVector::from_fn(4, |i, _| atoms[(17, i)]);
    let truth = Truth::from_parts(
        prior,
        forward,
        y.clone(),
        Schedule::vp_linear_default(),
    )
    .unwrap();
    let weights = truth.posterior().weights();
    assert!((weights.sum() - 1.0).abs() < 1e-12);
    // Direct: w_i ∝ exp(-|y - x_i[keep]|^2 / (2 * 0.04)).
    let logits: Vec<f64> = (0..n)
        .map(|i| {
            -(0..4).map(|j| (y[j] - atoms[(i, j)]).powi(2)).sum::<f64>() / 0.08
        })
        .collect();
    let max = logits.iter().copied().fold(f64::MIN, f64::max);
    let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    for i in [0, 17, 99_999] {
        let direct = (logits[i] - max).exp() / total;
        assert!(
            (weights[i] - direct).abs() < 1e-12 * direct.max(1e-300) + 1e-300
        );
    }
    // The batched denoiser on 100 particles agrees with the per-particle
    // closed form at a few rows.
    let (alpha, sigma) = (0.8, 0.6);
    let backward = Backward::new(truth.prior(), alpha, sigma).unwrap();
    let xs = DMatrix::from_fn(100, d, |_, _| rng.random_range(-1.0..1.0));
    let batch = backward.denoise_batch(&xs);
    for i in [0, 63, 64, 99] {
        let direct = backward.denoise(xs.row(i).transpose().as_view());
        let gap = (batch.row(i).transpose() - direct).amax();
        assert!(gap < 1e-12, "row {i}: {gap}");
    }
}

#[test]
fn atoms_a_thousand_apart() {
    let atoms = DMatrix::from_row_slice(2, 1, &[0.0, 1000.0]);
    let truth = Truth::from_parts(
        Mixture::atoms(atoms).unwrap(),
        identity(1, 1.0),
        DVector::from_element(1, 500.5),
        Schedule::vp_linear_default(),
    )
    .unwrap();
    // log w_1 - log w_0 = (500.5^2 - 499.5^2) / 2 = 500: finite in log
    // space although exp(-500) underflows nothing here.
    let lw = truth.posterior().log_weights();
    assert!(((lw[1] - lw[0]) - 500.0).abs() < 1e-9, "{lw}");
    assert!(truth.log_evidence().is_finite());
    let at = truth.at(0.01).unwrap();
    let x = DVector::from_element(1, at.alpha() * 400.0);
    let score = at.likelihood_score(x.as_view());
    assert!(score[0].is_finite());
    let d = at.conditional_denoise(x.as_view());
    assert!(d[0].is_finite() && (0.0..=1000.0).contains(&d[0]));
}
