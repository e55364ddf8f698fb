//! Forward models through the public API, on the shapes the built-in
//! cases use.

use nalgebra::{DMatrix, DVector};
use posterior_lens::ErrorKind;
use posterior_lens::forward::{Blur, ForwardModel, NonlinearMap, Operator};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn scalar_testbed_likelihood_is_the_normal_density() {
    // The FSR paper's 1-D Gaussian testbed: y = 1.2 x + n, noise 0.25.
    let model = ForwardModel::new(
        Operator::Dense(DMatrix::from_element(1, 1, 1.2)),
        0.25,
    )
    .unwrap();
    let (x, y) = (0.5, 0.8);
    let z: f64 = (y - 1.2 * x) / 0.25;
    let expected =
        -0.5 * z * z - (0.25 * (2.0 * std::f64::consts::PI).sqrt()).ln();
    let got = model.log_likelihood(
        DVector::from_element(1, y).as_view(),
        DVector::from_element(1, x).as_view(),
    );
    assert!((got - expected).abs() < 1e-14, "{got} vs {expected}");
}

#[test]
fn half_mask_pseudo_inverse_fills_kept_pixels_and_zeroes_the_rest() {
    // The digits case: an 8 x 8 image with its top half kept.
    let keep: Vec<usize> = (0..32).collect();
    let model =
        ForwardModel::new(Operator::Mask { dim: 64, keep }, 0.1).unwrap();
    let x = DVector::from_fn(64, |i, _| i as f64 / 64.0 - 0.5);
    let y = model.apply(x.as_view());
    let back = model.pseudo_inverse_apply(y.as_view()).unwrap();
    assert_eq!(back.rows(0, 32), x.rows(0, 32));
    assert!(back.rows(32, 32).iter().all(|&v| v == 0.0));
}

#[test]
fn one_row_operator_pseudo_inverse_is_the_scaled_transpose() {
    let a = DVector::from_vec(vec![0.3, -1.2, 0.0, 2.0, 0.7, -0.1, 0.4, 1.1]);
    let model = ForwardModel::new(
        Operator::Dense(DMatrix::from_row_slice(1, 8, a.as_slice())),
        0.5,
    )
    .unwrap();
    let y = DVector::from_element(1, 1.7);
    let x = model.pseudo_inverse_apply(y.as_view()).unwrap();
    let expected = &a * (1.7 / a.norm_squared());
    assert!((x - expected).amax() < 1e-14);
}

#[test]
fn blur_and_its_dense_matrix_are_the_same_model() {
    let blur = Blur::gaussian(6, 7, 0.8, 3).unwrap();
    let blurred = ForwardModel::new(Operator::Blur(blur), 0.05).unwrap();
    let dense =
        ForwardModel::new(Operator::Dense(blurred.matrix().unwrap()), 0.05)
            .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = DVector::from_fn(42, |i, _| (i as f64 * 0.37).sin());
    let y = blurred.sample_observation(x.as_view(), &mut rng);
    let xs = DMatrix::from_fn(5, 42, |i, j| ((i * 42 + j) as f64).cos());
    let a = blurred.log_likelihood_batch(y.as_view(), &xs);
    let b = dense.log_likelihood_batch(y.as_view(), &xs);
    assert!((a - b).amax() < 1e-9);
}

#[test]
fn observations_replay_from_the_seed() {
    let model = ForwardModel::new(Operator::Identity { dim: 3 }, 0.3).unwrap();
    let x = DVector::from_vec(vec![-1.8, 0.2, 2.2]);
    let draw = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        model.sample_observation(x.as_view(), &mut rng)
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));
}

#[test]
fn nonlinear_norm_reweights_symmetric_points_equally() {
    let model =
        ForwardModel::new(Operator::Nonlinear(NonlinearMap::norm(2)), 0.3)
            .unwrap();
    assert_eq!(model.output_dim(), 1);
    let xs = DMatrix::from_row_slice(3, 2, &[1.0, 0.0, 0.0, -1.0, 2.0, 0.0]);
    let y = DVector::from_element(1, 1.0);
    let ll = model.log_likelihood_batch(y.as_view(), &xs);
    assert_eq!(ll[0], ll[1]);
    assert!(ll[2] < ll[0]);
    let err = model.pseudo_inverse_apply(y.as_view()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
}

#[test]
fn bad_noise_is_an_input_error() {
    let err =
        ForwardModel::new(Operator::Identity { dim: 1 }, -0.1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.to_string(), "forward.noise_std must be positive, got -0.1");
}
