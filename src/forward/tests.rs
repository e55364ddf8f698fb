use nalgebra::{DMatrix, DVector};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use statrs::distribution::{Continuous, Normal};

use super::*;

fn gaussian_matrix(
    rows: usize,
    cols: usize,
    rng: &mut ChaCha8Rng,
) -> DMatrix<f64> {
    DMatrix::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

fn gaussian_vector(len: usize, rng: &mut ChaCha8Rng) -> DVector<f64> {
    DVector::from_fn(len, |_, _| StandardNormal.sample(rng))
}

/// An asymmetric kernel, so a flipped convolution cannot pass the tests.
fn lopsided_kernel() -> DMatrix<f64> {
    DMatrix::from_row_slice(
        3,
        3,
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0],
    )
}

/// Every kind of linear operator, with awkward shapes.
fn linear_models() -> Vec<ForwardModel> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let tall = gaussian_matrix(5, 3, &mut rng);
    let wide = gaussian_matrix(2, 5, &mut rng);
    // Rank 1: both rows proportional.
    let mut deficient = gaussian_matrix(3, 4, &mut rng);
    let first = deficient.row(0).into_owned();
    deficient.set_row(1, &(first.clone() * 2.0));
    deficient.set_row(2, &(first * -0.5));
    let operators = vec![
        Operator::Identity { dim: 5 },
        Operator::Dense(tall),
        Operator::Dense(wide),
        Operator::Dense(deficient),
        Operator::Mask { dim: 6, keep: vec![4, 0, 2] },
        Operator::Subsample { dim: 7, stride: 3, offset: 1 },
        Operator::Subsample { dim: 4, stride: 1, offset: 0 },
        Operator::Blur(Blur { height: 3, width: 4, kernel: lopsided_kernel() }),
        Operator::Blur(Blur {
            height: 2,
            width: 5,
            kernel: DMatrix::from_row_slice(1, 3, &[1.0, -2.0, 0.5]),
        }),
        Operator::Blur(Blur::gaussian(4, 5, 1.0, 5).unwrap()),
    ];
    operators
        .into_iter()
        .map(|op| ForwardModel::new(op, 0.3).unwrap())
        .collect()
}

/// The convolution written from its definition with 2-D indices, as an
/// independent reference for the blur.
fn naive_blur(blur: &Blur, x: &DVector<f64>) -> DVector<f64> {
    let (kh, kw) = blur.kernel.shape();
    let (h, w) = (blur.height as i64, blur.width as i64);
    let mut y = DVector::zeros(x.len());
    for r in 0..h {
        for c in 0..w {
            let mut acc = 0.0;
            for a in 0..kh as i64 {
                for b in 0..kw as i64 {
                    let (rr, cc) =
                        (r - a + kh as i64 / 2, c - b + kw as i64 / 2);
                    if rr >= 0 && rr < h && cc >= 0 && cc < w {
                        acc += blur.kernel[(a as usize, b as usize)]
                            * x[(rr * w + cc) as usize];
                    }
                }
            }
            y[(r * w + c) as usize] = acc;
        }
    }
    y
}

proptest! {
    #[test]
    fn adjoint_satisfies_the_inner_product_identity(
        index in 0usize..10,
        seed in any::<u64>(),
    ) {
        let model = &linear_models()[index];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = gaussian_vector(model.input_dim(), &mut rng);
        let v = gaussian_vector(model.output_dim(), &mut rng);
        let lhs = model.apply(x.as_view()).dot(&v);
        let rhs = x.dot(&model.adjoint(v.as_view()).unwrap());
        prop_assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
    }

    #[test]
    fn batches_equal_row_by_row(index in 0usize..10, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let base = linear_models()[index].clone();
        let bias = gaussian_vector(base.output_dim(), &mut rng);
        let model = base.with_bias(bias).unwrap();
        let (d, m) = (model.input_dim(), model.output_dim());
        let xs = gaussian_matrix(4, d, &mut rng);
        let vs = gaussian_matrix(4, m, &mut rng);
        let y = gaussian_vector(m, &mut rng);

        let ys = model.apply_batch(&xs);
        let adjoints = model.adjoint_batch(&vs).unwrap();
        let lls = model.log_likelihood_batch(y.as_view(), &xs);
        for i in 0..4 {
            let x = xs.row(i).transpose();
            let v = vs.row(i).transpose();
            let one = model.apply(x.as_view());
            prop_assert!((ys.row(i).transpose() - one).amax() < 1e-12);
            let back = model.adjoint(v.as_view()).unwrap();
            prop_assert!((adjoints.row(i).transpose() - back).amax() < 1e-12);
            let ll = model.log_likelihood(y.as_view(), x.as_view());
            prop_assert!((lls[i] - ll).abs() < 1e-9);
        }
    }
}

#[test]
fn matrix_agrees_with_apply() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for model in linear_models() {
        let a = model.matrix().unwrap();
        assert_eq!(a.shape(), (model.output_dim(), model.input_dim()));
        let x = gaussian_vector(model.input_dim(), &mut rng);
        let diff = (&a * &x - model.apply(x.as_view())).amax();
        assert!(diff < 1e-12, "{:?}: {diff}", model.operator());
    }
}

#[test]
fn selections_pick_the_documented_coordinates() {
    let x = DVector::from_fn(7, |i, _| 10.0 * i as f64);
    let mask =
        ForwardModel::new(Operator::Mask { dim: 7, keep: vec![4, 0, 2] }, 1.0)
            .unwrap();
    assert_eq!(mask.apply(x.as_view()).as_slice(), &[40.0, 0.0, 20.0]);
    let sub = ForwardModel::new(
        Operator::Subsample { dim: 7, stride: 3, offset: 1 },
        1.0,
    )
    .unwrap();
    assert_eq!(sub.output_dim(), 2);
    assert_eq!(sub.apply(x.as_view()).as_slice(), &[10.0, 40.0]);
    let sub = ForwardModel::new(
        Operator::Subsample { dim: 7, stride: 2, offset: 0 },
        1.0,
    )
    .unwrap();
    assert_eq!(sub.apply(x.as_view()).as_slice(), &[0.0, 20.0, 40.0, 60.0]);
}

#[test]
fn blur_matches_the_naive_convolution() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for model in linear_models() {
        if let Operator::Blur(blur) = model.operator() {
            let x = gaussian_vector(model.input_dim(), &mut rng);
            let diff = (model.apply(x.as_view()) - naive_blur(blur, &x)).amax();
            assert!(diff < 1e-12, "{diff}");
        }
    }
}

#[test]
fn blur_of_a_delta_is_the_kernel() {
    let blur = Blur { height: 5, width: 6, kernel: lopsided_kernel() };
    let model = ForwardModel::new(Operator::Blur(blur), 1.0).unwrap();
    let (r0, c0) = (2, 3);
    let mut delta = DVector::zeros(30);
    delta[r0 * 6 + c0] = 1.0;
    let y = model.apply(delta.as_view());
    for r in 0..5 {
        for c in 0..6 {
            let (a, b) = (r as i64 - r0 as i64 + 1, c as i64 - c0 as i64 + 1);
            let expected = if (0..3).contains(&a) && (0..3).contains(&b) {
                lopsided_kernel()[(a as usize, b as usize)]
            } else {
                0.0
            };
            assert_eq!(y[r * 6 + c], expected, "pixel ({r}, {c})");
        }
    }
}

#[test]
fn gaussian_kernel_is_normalised_and_symmetric() {
    let blur = Blur::gaussian(8, 8, 1.5, 7).unwrap();
    assert!((blur.kernel.sum() - 1.0).abs() < 1e-15);
    assert_eq!(blur.kernel, blur.kernel.transpose());
    let ratio = blur.kernel[(3, 4)] / blur.kernel[(3, 3)];
    assert!((ratio - (-1.0 / (2.0 * 1.5 * 1.5f64)).exp()).abs() < 1e-15);
}

#[test]
fn svd_reconstructs_the_operator() {
    for model in linear_models() {
        let a = model.matrix().unwrap();
        let svd = model.svd().unwrap();
        let r = a.nrows().min(a.ncols());
        assert_eq!(svd.singular_values.len(), r);
        assert_eq!(svd.u.shape(), (a.nrows(), r));
        assert_eq!(svd.v.shape(), (a.ncols(), r));
        let s = DMatrix::from_diagonal(&svd.singular_values);
        let rebuilt = &svd.u * s * svd.v.transpose();
        assert!((rebuilt - &a).amax() < 1e-12, "{:?}", model.operator());
        for pair in svd.singular_values.as_slice().windows(2) {
            assert!(pair[0] >= pair[1]);
        }
        let eye = DMatrix::<f64>::identity(r, r);
        assert!((svd.v.tr_mul(&svd.v) - &eye).amax() < 1e-12);
        assert!((svd.u.tr_mul(&svd.u) - &eye).amax() < 1e-12);
    }
}

#[test]
fn pseudo_inverse_solves_the_normal_equations() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for base in linear_models() {
        let bias = gaussian_vector(base.output_dim(), &mut rng);
        let model = base.with_bias(bias.clone()).unwrap();
        let a = model.matrix().unwrap();
        let y = gaussian_vector(model.output_dim(), &mut rng);
        let x = model.pseudo_inverse_apply(y.as_view()).unwrap();

        // Least squares: A^T (A x - (y - b)) = 0.
        let gradient = a.tr_mul(&(&a * &x - (&y - &bias)));
        assert!(gradient.amax() < 1e-10, "{:?}", model.operator());

        // Minimum norm: x lies in the row space of A, and A^+ A projects
        // onto that space, so A^+ (A x + b) gives x back.
        let projected = model.pseudo_inverse_apply((&a * &x + &bias).as_view());
        assert!((projected.unwrap() - &x).amax() < 1e-9);
    }
}

#[test]
fn log_likelihood_matches_a_product_of_normals() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a = gaussian_matrix(3, 4, &mut rng);
    let bias = gaussian_vector(3, &mut rng);
    let model = ForwardModel::new(Operator::Dense(a.clone()), 0.7)
        .unwrap()
        .with_bias(bias.clone())
        .unwrap();
    let x = gaussian_vector(4, &mut rng);
    let y = gaussian_vector(3, &mut rng);
    let mean = &a * &x + &bias;
    let direct: f64 =
        (0..3).map(|i| Normal::new(mean[i], 0.7).unwrap().ln_pdf(y[i])).sum();
    let got = model.log_likelihood(y.as_view(), x.as_view());
    assert!((got - direct).abs() < 1e-12, "{got} vs {direct}");
}

#[test]
fn observations_have_the_stated_noise() {
    let model =
        ForwardModel::new(Operator::Mask { dim: 3, keep: vec![2, 0] }, 0.5)
            .unwrap();
    let x = DVector::from_vec(vec![1.0, -2.0, 3.0]);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let n = 20_000;
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    for _ in 0..n {
        let y = model.sample_observation(x.as_view(), &mut rng);
        let z = (y[0] - 3.0) / 0.5;
        sum += z;
        sum_sq += z * z;
        assert_eq!(y.len(), 2);
    }
    let mean = sum / n as f64;
    let var = sum_sq / n as f64 - mean * mean;
    // Five standard errors: mean se = 1/sqrt(n), variance se = sqrt(2/n).
    assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "{mean}");
    assert!((var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(), "{var}");
}

#[test]
fn nonlinear_maps_apply_but_have_no_linear_structure() {
    let x = DVector::from_vec(vec![3.0, -4.0]);
    let cases = [
        (NonlinearMap::abs(2), vec![3.0, 4.0]),
        (NonlinearMap::square(2), vec![9.0, 16.0]),
        (NonlinearMap::norm(2), vec![5.0]),
    ];
    for (map, expected) in cases {
        let name = map.name().to_string();
        let model = ForwardModel::new(Operator::Nonlinear(map), 0.1).unwrap();
        assert!(!model.is_linear());
        assert_eq!(model.apply(x.as_view()).as_slice(), expected.as_slice());
        assert!(model.matrix().is_none());
        assert!(model.svd().is_none());
        let err = model.adjoint(DVector::zeros(expected.len()).as_view());
        let err = err.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        assert_eq!(
            err.to_string(),
            format!(
                "forward.adjoint is not defined for the nonlinear map {name}"
            )
        );
        let xs = DMatrix::from_row_slice(2, 2, &[3.0, -4.0, 0.0, 1.0]);
        let ys = model.apply_batch(&xs);
        assert_eq!(ys.row(0).transpose().as_slice(), expected.as_slice());
    }
}

#[test]
fn bad_inputs_are_rejected_with_field_and_value() {
    let message = |op: Operator, noise: f64| {
        ForwardModel::new(op, noise).unwrap_err().to_string()
    };
    let cases = [
        (
            message(Operator::Identity { dim: 2 }, 0.0),
            "forward.noise_std must be positive, got 0",
        ),
        (
            message(Operator::Identity { dim: 2 }, f64::NAN),
            "forward.noise_std must be positive, got NaN",
        ),
        (
            message(Operator::Identity { dim: 0 }, 1.0),
            "forward.dim must be at least 1, got 0",
        ),
        (
            message(Operator::Mask { dim: 4, keep: vec![1, 7] }, 1.0),
            "forward.keep[1] must be less than dim 4, got 7",
        ),
        (
            message(Operator::Mask { dim: 4, keep: vec![1, 3, 1] }, 1.0),
            "forward.keep[2] repeats an earlier index, got 1",
        ),
        (
            message(Operator::Mask { dim: 4, keep: vec![] }, 1.0),
            "forward.keep must not be empty",
        ),
        (
            message(Operator::Subsample { dim: 4, stride: 0, offset: 0 }, 1.0),
            "forward.stride must be at least 1, got 0",
        ),
        (
            message(Operator::Subsample { dim: 4, stride: 1, offset: 4 }, 1.0),
            "forward.offset must be less than dim 4, got 4",
        ),
        (
            message(
                Operator::Dense(DMatrix::from_row_slice(
                    2,
                    2,
                    &[1.0, 2.0, f64::INFINITY, 4.0],
                )),
                1.0,
            ),
            "forward.matrix[1][0] must be finite, got inf",
        ),
        (
            message(
                Operator::Blur(Blur {
                    height: 2,
                    width: 2,
                    kernel: DMatrix::zeros(2, 3),
                }),
                1.0,
            ),
            "forward.kernel must have odd sizes, got 2x3",
        ),
        (
            message(
                Operator::Blur(Blur {
                    height: 2,
                    width: 2,
                    kernel: DMatrix::from_element(1, 1, f64::NAN),
                }),
                1.0,
            ),
            "forward.kernel[0][0] must be finite, got NaN",
        ),
    ];
    for (got, expected) in cases {
        assert_eq!(got, expected);
    }

    let model = ForwardModel::new(Operator::Identity { dim: 2 }, 1.0).unwrap();
    let err = model.with_bias(DVector::zeros(3)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "forward.bias must have length 2 (the output dimension), got 3"
    );
    assert_eq!(
        Blur::gaussian(3, 3, 1.0, 4).unwrap_err().to_string(),
        "forward.blur.size must be odd, got 4"
    );
}
