//! Kolmogorov-Smirnov tests and the finite-n Kolmogorov distribution.
//!
//! # The two-sided null of D_n
//!
//! The distribution of D_n = sup |F_n - F| for a continuous F is computed
//! following Simard & L'Ecuyer (2011, JSS 39(11)), "Computing the
//! two-sided Kolmogorov-Smirnov distribution", with the upper tail taken
//! directly rather than as 1 - CDF:
//!
//! - exact closed forms (Ruben & Gambino 1982): CDF = 0 for d <= 1/(2n);
//!   CDF = n!/n^n (2nd - 1)^n for d <= 1/n; SF = 2 (1 - d)^n for
//!   d >= 1 - 1/n; CDF = 2d - 1 for n = 1;
//! - the Durbin (1968) matrix as in Marsaglia, Tsang & Wang (2003,
//!   JSS 8(18)): with k = floor(nd) + 1, m = 2k - 1, h = k - nd,
//!
//!   ```text
//!   H[i][j] = 1/(i-j+1)!  for i - j + 1 >= 0, else 0
//!   H[i][0]   -= h^(i+1)/(i+1)!     H[m-1][j] -= h^(m-j)/(m-j)!
//!   H[m-1][0] += max(0, 2h-1)^m/m!
//!   P(D_n < d) = n!/n^n (H^n)[k-1][k-1]
//!   ```
//!
//!   with H^n by binary powering and power-of-two rescaling (n^n
//!   overflows at n = 144);
//! - the Pelz & Good (1976) expansion in 1/sqrt(n) of P(sqrt(n) D_n <= z)
//!   (its four terms K0..K3 as written in Simard & L'Ecuyer, section 2.3)
//!   for large n and large nd where the matrix is too big;
//! - in the upper tail, P(D_n >= d) = 2 P(D_n^+ >= d) - P(D^+ >= d, D^- >=
//!   d); the joint term is 0 for d >= 1/2 and below exp(-6 n d^2)
//!   relative otherwise, so for n d^2 >= 4 it is dropped (relative error
//!   below 4e-11).
//!
//! Selection (a variant of Simard & L'Ecuyer's, chosen so the dropped
//! joint term never matters at 1e-10): n d^2 >= 4 gives the Smirnov tail;
//! otherwise n <= 500, or n^2 d^3 <= 7, or k <= 60 gives the Durbin
//! matrix; otherwise Pelz-Good.
//!
//! # The one-sided Smirnov tail
//!
//! Birnbaum & Tingey (1951), exact for every n:
//!
//! ```text
//! P(D_n^+ >= d) = d sum_{j=0}^{floor(n(1-d))} C(n,j) (d + j/n)^(j-1)
//!                                              (1 - d - j/n)^(n-j)
//! ```
//!
//! All terms are positive; they are summed in log space (log-sum-exp),
//! which keeps relative accuracy down to the smallest doubles, with
//! ln C(n, j) accumulated by compensated summation.
//!
//! # Two samples
//!
//! The statistic is max over the pooled points of |F_1 - F_2| with both
//! ECDFs right-continuous, so ties are handled as in scipy's `ks_2samp`.
//! The exact p-value counts lattice paths (Hodges 1958): the fraction of
//! the C(m+n, m) monotone paths that touch the band |i/m - j/n| >= D,
//! accumulated as probabilities of "already outside" so that no
//! subtraction from 1 is needed. For ties this continuous null is
//! conservative. For m n > 10^6 the p-value is scipy's asymptotic choice,
//! the one-sample law at n_eff = round(mn/(m+n)).

use nalgebra::DMatrix;

use crate::error::{Result, ensure};
use crate::stats::weighted::checked_normalized_weights;
use crate::stats::{Alternative, TestOutcome, check_sample, clamp_prob};

/// Which algorithm produced a Kolmogorov probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KolmogorovMethod {
    ClosedForm,
    Durbin,
    PelzGood,
    SmirnovTail,
}

impl KolmogorovMethod {
    fn name(self) -> &'static str {
        match self {
            KolmogorovMethod::ClosedForm => "exact-closed-form",
            KolmogorovMethod::Durbin => "exact-durbin",
            KolmogorovMethod::PelzGood => "pelz-good",
            KolmogorovMethod::SmirnovTail => "exact-smirnov-tail",
        }
    }
}

/// P(D_n <= d) and P(D_n > d), each computed on its own footing.
#[derive(Clone, Copy, Debug)]
struct Kolmogorov {
    cdf: f64,
    sf: f64,
    method: KolmogorovMethod,
}

const TWO_POW_256: f64 = 1.157_920_892_373_162e77;

/// x * 2^e without overflow in the intermediate power.
fn scale_by_pow2(mut x: f64, mut e: i64) -> f64 {
    while e > 0 {
        let step = e.min(256);
        x *= 2f64.powi(step as i32);
        e -= step;
    }
    while e < 0 {
        let step = (-e).min(256);
        x *= 2f64.powi(-(step as i32));
        e += step;
    }
    x
}

fn kolmogorov(n: usize, d: f64) -> Kolmogorov {
    assert!(n > 0, "kolmogorov distribution needs n >= 1");
    let closed = |cdf: f64, sf: f64| Kolmogorov {
        cdf: clamp_prob(cdf),
        sf: clamp_prob(sf),
        method: KolmogorovMethod::ClosedForm,
    };
    if d.is_nan() {
        return Kolmogorov {
            cdf: f64::NAN,
            sf: f64::NAN,
            method: KolmogorovMethod::ClosedForm,
        };
    }
    let nf = n as f64;

    // Closed forms at the edges (Ruben & Gambino 1982).
    if d >= 1.0 {
        return closed(1.0, 0.0);
    }
    if d <= 0.5 / nf {
        return closed(0.0, 1.0);
    }
    if n == 1 {
        return closed(2.0 * d - 1.0, 2.0 - 2.0 * d);
    }
    if d <= 1.0 / nf {
        // n!/n^n (2nd - 1)^n as a product of n factors below one.
        let base = 2.0 * nf * d - 1.0;
        let cdf = (1..=n).fold(1.0, |acc, i| acc * (i as f64 / nf) * base);
        return closed(cdf, 1.0 - cdf);
    }
    if d >= 1.0 - 1.0 / nf {
        let sf = 2.0 * (1.0 - d).powi(n as i32);
        return closed(1.0 - sf, sf);
    }

    let t = nf * d * d;
    if t >= 4.0 {
        let sf = (2.0 * smirnov_sf(n, d)).min(1.0);
        return Kolmogorov {
            cdf: 1.0 - sf,
            sf,
            method: KolmogorovMethod::SmirnovTail,
        };
    }
    let k = (nf * d).floor() as usize + 1;
    if n <= 500 || nf * nf * d * d * d <= 7.0 || k <= 60 {
        let cdf = clamp_prob(durbin_cdf(n, d));
        return Kolmogorov {
            cdf,
            sf: 1.0 - cdf,
            method: KolmogorovMethod::Durbin,
        };
    }
    let cdf = clamp_prob(pelz_good_cdf(n, d));
    Kolmogorov { cdf, sf: 1.0 - cdf, method: KolmogorovMethod::PelzGood }
}

/// P(D_n < d) by the Durbin matrix (Marsaglia, Tsang & Wang 2003).
fn durbin_cdf(n: usize, d: f64) -> f64 {
    let nd = n as f64 * d;
    let k = nd.floor() as usize + 1;
    let m = 2 * k - 1;
    let h = k as f64 - nd;

    // H[i][j] = 1/(i-j+1)! on and below the superdiagonal, with the
    // boundary corrections of the first column and last row.
    let mut inv_fact = vec![1.0f64; m + 2];
    for g in 1..m + 2 {
        inv_fact[g] = inv_fact[g - 1] / g as f64;
    }
    let mut hmat = DMatrix::<f64>::zeros(m, m);
    for i in 0..m {
        for j in 0..m {
            if i + 1 >= j {
                hmat[(i, j)] = inv_fact[i + 1 - j];
            }
        }
    }
    for i in 0..m {
        hmat[(i, 0)] -= h.powi(i as i32 + 1) * inv_fact[i + 1];
        hmat[(m - 1, i)] -= h.powi((m - i) as i32) * inv_fact[m - i];
    }
    if 2.0 * h - 1.0 > 0.0 {
        hmat[(m - 1, 0)] += (2.0 * h - 1.0).powi(m as i32) * inv_fact[m];
    }

    // H^n by squaring, keeping entries in range with a power-of-two
    // exponent.
    let (power, mut exponent) = matrix_power_scaled(&hmat, n);
    let mut value = power[(k - 1, k - 1)];

    // Multiply by n!/n^n one factor at a time.
    let nf = n as f64;
    for i in 1..=n {
        value *= i as f64 / nf;
        if value != 0.0 && value < 1.0 / TWO_POW_256 {
            value *= TWO_POW_256;
            exponent -= 256;
        }
    }
    scale_by_pow2(value, exponent)
}

/// Returns (M, e) with H^n = M 2^e.
fn matrix_power_scaled(hmat: &DMatrix<f64>, n: usize) -> (DMatrix<f64>, i64) {
    let rescale = |m: &mut DMatrix<f64>, e: &mut i64| {
        let biggest = m.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
        if biggest > TWO_POW_256 {
            *m /= TWO_POW_256;
            *e += 256;
        }
    };
    if n == 1 {
        return (hmat.clone(), 0);
    }
    let (half, half_e) = matrix_power_scaled(hmat, n / 2);
    let mut result = &half * &half;
    let mut exponent = 2 * half_e;
    rescale(&mut result, &mut exponent);
    if n % 2 == 1 {
        result = hmat * &result;
        rescale(&mut result, &mut exponent);
    }
    (result, exponent)
}

/// P(sqrt(n) D_n <= z) by the Pelz-Good expansion, z = sqrt(n) d.
///
/// ```text
/// K0 = sqrt(2 pi)/z sum_k e^{-a m^2},         m = 2k - 1,
///                                             a = pi^2/(8 z^2)
/// K1 = sqrt(2 pi)/(6 z^4) sum_k (pi^2 m^2/4 - z^2) e^{-a m^2}
/// K2 = sqrt(2 pi)/(72 z^7) sum_k [6z^6 + 2z^4 + pi^2 (2z^4 - 5z^2) m^2/4
///          + pi^4 (1 - 2z^2) m^4/16] e^{-a m^2}
///      - sqrt(2 pi) pi^2/(36 z^3) sum_k k^2 e^{-pi^2 k^2/(2 z^2)}
/// K3 = sqrt(2 pi)/(6480 z^10) sum_k [pi^6 (5 - 30z^2) m^6/64
///          + pi^4 (212 z^4 - 60 z^2) m^4/16
///          + pi^2 (135 z^4 - 96 z^6) m^2/4 - 30 z^6 - 90 z^8] e^{-a m^2}
///      + sqrt(2 pi) pi^2/(216 z^6) sum_k (3 z^2 - pi^2 k^2) k^2
///          e^{-pi^2 k^2/(2 z^2)}
/// P ~ K0 + K1/sqrt(n) + K2/n + K3/n^{3/2}
/// ```
fn pelz_good_cdf(n: usize, d: f64) -> f64 {
    use std::f64::consts::PI;
    let nf = n as f64;
    let z = nf.sqrt() * d;
    let (z2, z4, z6) = (z * z, z.powi(4), z.powi(6));
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let root = (2.0 * PI).sqrt();
    let a = pi2 / (8.0 * z2);
    let b = pi2 / (2.0 * z2);

    let terms = (16.0 * z / PI).ceil() as usize + 2;
    let (mut s0, mut s1, mut s2, mut s3) = (0.0, 0.0, 0.0, 0.0);
    let (mut e2, mut e3) = (0.0, 0.0);
    for k in (1..=terms).rev() {
        let m = (2 * k - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let w = (-a * m2).exp();
        s0 += w;
        s1 += (pi2 * m2 / 4.0 - z2) * w;
        s2 += (6.0 * z6
            + 2.0 * z4
            + pi2 * (2.0 * z4 - 5.0 * z2) * m2 / 4.0
            + pi4 * (1.0 - 2.0 * z2) * m4 / 16.0)
            * w;
        s3 += (pi6 * (5.0 - 30.0 * z2) * m6 / 64.0
            + pi4 * (212.0 * z4 - 60.0 * z2) * m4 / 16.0
            + pi2 * (135.0 * z4 - 96.0 * z6) * m2 / 4.0
            - 30.0 * z6
            - 90.0 * z6 * z2)
            * w;
        let kf = k as f64;
        let v = (-b * kf * kf).exp();
        e2 += kf * kf * v;
        e3 += (3.0 * z2 - pi2 * kf * kf) * kf * kf * v;
    }
    let k0 = root / z * s0;
    let k1 = root / (6.0 * z4) * s1;
    let k2 = root / (72.0 * z6 * z) * s2 - root * pi2 / (36.0 * z2 * z) * e2;
    let k3 = root / (6480.0 * z6 * z4) * s3 + root * pi2 / (216.0 * z6) * e3;
    k0 + k1 / nf.sqrt() + k2 / nf + k3 / (nf * nf.sqrt())
}

/// The two-sided Kolmogorov CDF, P(D_n <= d), for a sample of size `n`
/// from a continuous distribution.
///
/// See the module docs for the algorithms. In the upper tail this is
/// 1 - [`kolmogorov_sf`]; use that function for p-values.
///
/// # Panics
///
/// Panics if `n` is 0.
pub fn kolmogorov_cdf(n: usize, d: f64) -> f64 {
    kolmogorov(n, d).cdf
}

/// The two-sided Kolmogorov survival function, P(D_n >= d), computed
/// directly in the upper tail (Simard & L'Ecuyer 2011), so that tiny
/// p-values keep their relative accuracy down to about 1e-300.
///
/// # Panics
///
/// Panics if `n` is 0.
pub fn kolmogorov_sf(n: usize, d: f64) -> f64 {
    kolmogorov(n, d).sf
}

/// The exact one-sided Smirnov tail P(D_n^+ >= d) (Birnbaum & Tingey
/// 1951), summed in log space. D_n^- has the same law.
///
/// # Panics
///
/// Panics if `n` is 0.
pub fn smirnov_sf(n: usize, d: f64) -> f64 {
    assert!(n > 0, "smirnov distribution needs n >= 1");
    if d.is_nan() {
        return f64::NAN;
    }
    if d <= 0.0 {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    if d >= 1.0 - 1.0 / nf {
        // Only j = 0 contributes.
        return (1.0 - d).powi(n as i32);
    }

    // log of each term; ln C(n, j) by a running sum of ln((n-j+1)/j).
    let mut logs = Vec::new();
    // Neumaier-compensated running sum: the plain running sum loses
    // about j^2 * 1e-16 absolute by j ~ 10^4 (measured 8e-10 relative at
    // n = 10^5 against mpmath).
    let (mut ln_choose, mut carry) = (0.0f64, 0.0f64);
    for j in 0..=n {
        if j > 0 {
            let step = ((n - j + 1) as f64).ln() - (j as f64).ln();
            let sum = ln_choose + step;
            carry += if ln_choose.abs() >= step.abs() {
                (ln_choose - sum) + step
            } else {
                (step - sum) + ln_choose
            };
            ln_choose = sum;
        }
        let jf = j as f64;
        let left = d + jf / nf;
        let right = if left < 0.5 {
            (-left).ln_1p()
        } else {
            let rest = (n - j) as f64 / nf - d;
            if rest <= 0.0 {
                break;
            }
            rest.ln()
        };
        logs.push(
            (ln_choose + carry) + (jf - 1.0) * left.ln() + (nf - jf) * right,
        );
    }
    let top = logs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f64 = logs.iter().map(|&l| (l - top).exp()).sum();
    clamp_prob(d * sum * top.exp())
}

/// The limiting Kolmogorov survival function P(K > x) with
/// K = lim sqrt(n) D_n:
///
/// ```text
/// x >= 0.82:  Q(x) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 x^2)
/// x <  0.82:  1 - sqrt(2 pi)/x sum_{k>=1} exp(-(2k-1)^2 pi^2/(8 x^2))
/// ```
///
/// (Kolmogorov 1933; the second form is the Jacobi-theta transform, with
/// scipy's switch point.)
pub fn kolmogorov_limit_sf(x: f64) -> f64 {
    use std::f64::consts::PI;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x < 0.82 {
        let a = PI * PI / (8.0 * x * x);
        let cdf: f64 = (1..=20)
            .map(|k| {
                let m = (2 * k - 1) as f64;
                (-a * m * m).exp()
            })
            .sum::<f64>()
            * (2.0 * PI).sqrt()
            / x;
        return clamp_prob(1.0 - cdf);
    }
    let mut sum = 0.0;
    for k in (1..=40).rev() {
        let kf = k as f64;
        let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
        sum += sign * (-2.0 * kf * kf * x * x).exp();
    }
    clamp_prob(2.0 * sum)
}

/// Probability-integral transforms of the sorted sample, checked.
fn sorted_pits(
    sample: &[f64],
    weights: Option<&[f64]>,
    cdf: &dyn Fn(f64) -> f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    check_sample("sample", sample)?;
    let weights = match weights {
        Some(w) => checked_normalized_weights(w, sample.len())?,
        None => vec![1.0 / sample.len() as f64; sample.len()],
    };
    let mut order: Vec<usize> = (0..sample.len()).collect();
    order.sort_by(|&a, &b| sample[a].total_cmp(&sample[b]));
    let mut pits = Vec::with_capacity(sample.len());
    let mut sorted_weights = Vec::with_capacity(sample.len());
    for &i in &order {
        let u = cdf(sample[i]);
        ensure!(
            (0.0..=1.0).contains(&u),
            "cdf must lie in [0, 1], got {} at sample value {}",
            crate::stats::show(u),
            sample[i]
        );
        pits.push(u);
        sorted_weights.push(weights[i]);
    }
    Ok((pits, sorted_weights))
}

/// D^+ = sup(F_n - F) and D^- = sup(F - F_n) from sorted PITs and their
/// weights. Ties in the sample give equal PITs, and taking the maxima
/// over all indices then uses the ECDF's full jump.
fn one_sample_deviations(pits: &[f64], weights: &[f64]) -> (f64, f64) {
    let mut cumulative = 0.0;
    let (mut d_plus, mut d_minus) = (0.0f64, 0.0f64);
    for (u, w) in pits.iter().zip(weights) {
        d_minus = d_minus.max(u - cumulative);
        cumulative += w;
        d_plus = d_plus.max(cumulative.min(1.0) - u);
    }
    (d_plus, d_minus)
}

/// Unweighted sizes use n; weighted ones use Kish's ESS, rounded.
fn effective_n(
    weights: Option<&[f64]>,
    n: usize,
    w: &[f64],
) -> (usize, Option<f64>) {
    match weights {
        None => (n, None),
        Some(_) => {
            let ess = 1.0 / w.iter().map(|x| x * x).sum::<f64>();
            ((ess.round() as usize).max(1), Some(ess))
        }
    }
}

/// Two-sided one-sample Kolmogorov-Smirnov test of `sample` against the
/// continuous CDF `cdf`.
///
/// The statistic is D_n = sup |F_n - F|; the p-value is
/// [`kolmogorov_sf`]`(n, D_n)`, the finite-n law (scipy's
/// `kstest(method='exact')`). With importance `weights` (non-negative,
/// normalised here), F_n is the weighted ECDF and n is Kish's effective
/// sample size rounded to an integer; that p-value is an approximation
/// (the method string then starts with `weighted-ess-approx`).
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if the sample is empty or
/// holds a non-finite value, if the CDF returns a value outside [0, 1],
/// or if the weights are malformed (wrong length, negative, non-finite or
/// all zero).
pub fn ks_one_sample(
    sample: &[f64],
    weights: Option<&[f64]>,
    cdf: &dyn Fn(f64) -> f64,
) -> Result<TestOutcome> {
    let (pits, w) = sorted_pits(sample, weights, cdf)?;
    let (d_plus, d_minus) = one_sample_deviations(&pits, &w);
    let d = d_plus.max(d_minus);
    let (n_eff, ess) = effective_n(weights, sample.len(), &w);
    let k = kolmogorov(n_eff, d);
    let method = match ess {
        None => k.method.name().to_string(),
        Some(_) => format!("weighted-ess-approx({})", k.method.name()),
    };
    Ok(TestOutcome {
        test: "ks_one_sample".into(),
        statistic: d,
        p_value: k.sf,
        method,
        n: sample.len(),
        ess,
        effect: None,
    })
}

/// One-sided one-sample Kolmogorov-Smirnov test.
///
/// [`Alternative::Greater`] uses D^+ = sup(F_n - F) (the sample sits to
/// the left of F); [`Alternative::Less`] uses D^- = sup(F - F_n). The
/// p-value is the exact [`smirnov_sf`] (scipy's `ksone.sf`).
/// [`Alternative::TwoSided`] is the same as [`ks_one_sample`].
///
/// # Errors
///
/// As [`ks_one_sample`].
pub fn ks_one_sided(
    sample: &[f64],
    weights: Option<&[f64]>,
    cdf: &dyn Fn(f64) -> f64,
    alternative: Alternative,
) -> Result<TestOutcome> {
    if alternative == Alternative::TwoSided {
        return ks_one_sample(sample, weights, cdf);
    }
    let (pits, w) = sorted_pits(sample, weights, cdf)?;
    let (d_plus, d_minus) = one_sample_deviations(&pits, &w);
    let (d, test) = match alternative {
        Alternative::Greater => (d_plus, "ks_one_sample_greater"),
        _ => (d_minus, "ks_one_sample_less"),
    };
    let (n_eff, ess) = effective_n(weights, sample.len(), &w);
    let method = match ess {
        None => "exact-smirnov".to_string(),
        Some(_) => "weighted-ess-approx(exact-smirnov)".to_string(),
    };
    Ok(TestOutcome {
        test: test.into(),
        statistic: d,
        p_value: smirnov_sf(n_eff, d),
        method,
        n: sample.len(),
        ess,
        effect: None,
    })
}

/// Largest m n for which the two-sample p-value is computed exactly.
const TWO_SAMPLE_EXACT_LIMIT: usize = 1_000_000;

/// Two-sided two-sample Kolmogorov-Smirnov test.
///
/// The statistic is computed in integers, D = max |c_1 n_2 - c_2 n_1| /
/// (n_1 n_2) over pooled points, with c_i the counts at or below the
/// point, so ties are handled exactly. The p-value is exact (lattice
/// paths; conservative for tied data) for n_1 n_2 <= 10^6 and otherwise
/// [`kolmogorov_sf`] at n_eff = round(n_1 n_2/(n_1 + n_2)), scipy's
/// `ks_2samp` asymptotic choice.
///
/// # Errors
///
/// Returns [`crate::ErrorKind::InvalidInput`] if either sample is empty or
/// holds a non-finite value.
pub fn ks_two_sample(first: &[f64], second: &[f64]) -> Result<TestOutcome> {
    check_sample("first sample", first)?;
    check_sample("second sample", second)?;
    let (m, n) = (first.len(), second.len());
    let mut x = first.to_vec();
    let mut y = second.to_vec();
    x.sort_by(f64::total_cmp);
    y.sort_by(f64::total_cmp);

    // Walk the pooled order; after consuming all copies of a value,
    // compare the counts.
    let (mut i, mut j) = (0usize, 0usize);
    let mut gap: u64 = 0;
    while i < m || j < n {
        let next = match (x.get(i), y.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => unreachable!(),
        };
        while i < m && x[i] == next {
            i += 1;
        }
        while j < n && y[j] == next {
            j += 1;
        }
        let diff = (i as i64 * n as i64 - j as i64 * m as i64).unsigned_abs();
        gap = gap.max(diff);
    }
    let d = gap as f64 / (m as f64 * n as f64);

    let (p_value, method) = if m * n <= TWO_SAMPLE_EXACT_LIMIT {
        (two_sample_exact_sf(m, n, gap), "exact-lattice-paths".to_string())
    } else {
        let n_eff = ((m * n) as f64 / (m + n) as f64).round() as usize;
        (kolmogorov_sf(n_eff.max(1), d), "asymptotic-kolmogorov-n-eff".into())
    };
    Ok(TestOutcome {
        test: "ks_two_sample".into(),
        statistic: d,
        p_value,
        method,
        n: m + n,
        ess: None,
        effect: None,
    })
}

/// P(D >= gap/(mn)) under the null: the probability that a uniformly
/// random monotone lattice path from (0,0) to (m,n) meets a point with
/// |i n - j m| >= gap.
fn two_sample_exact_sf(m: usize, n: usize, gap: u64) -> f64 {
    if gap == 0 {
        return 1.0;
    }
    // outside[j] holds, for the current row i, the fraction of paths to
    // (i, j) that have already met the band; a path reaches (i, j) from
    // (i-1, j) with probability i/(i+j) and from (i, j-1) with j/(i+j).
    let hit = |i: usize, j: usize| {
        (i as i64 * n as i64 - j as i64 * m as i64).unsigned_abs() >= gap
    };
    let mut outside = vec![0.0f64; n + 1];
    for i in 0..=m {
        for j in 0..=n {
            if hit(i, j) {
                outside[j] = 1.0;
                continue;
            }
            if i == 0 && j == 0 {
                outside[j] = 0.0;
                continue;
            }
            let total = (i + j) as f64;
            let from_left = if i > 0 { outside[j] * i as f64 } else { 0.0 };
            let from_below =
                if j > 0 { outside[j - 1] * j as f64 } else { 0.0 };
            outside[j] = (from_left + from_below) / total;
        }
    }
    clamp_prob(outside[n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sf_and_cdf_are_complementary_in_the_body() {
        for n in [2, 5, 10, 50, 141, 400, 1000, 20_000] {
            for d in [0.02, 0.05, 0.1, 0.2, 0.3] {
                let k = kolmogorov(n, d);
                assert!((k.cdf + k.sf - 1.0).abs() < 1e-12, "n {n} d {d}");
            }
        }
    }

    #[test]
    fn closed_forms_agree_with_durbin_at_their_edges() {
        // Just inside the Durbin region the matrix must reproduce the
        // Ruben-Gambino closed form evaluated at the same d.
        let n = 7;
        let d: f64 = 1.0 / 7.0 + 1e-12;
        let closed = (1..=n)
            .fold(1.0, |acc, i| acc * (i as f64 / 7.0) * (2.0 * 7.0 * d - 1.0));
        assert!((durbin_cdf(n, d) - closed).abs() < 1e-9);
        let d: f64 = 1.0 - 1.0 / 7.0 - 1e-12;
        let sf = 2.0 * (1.0 - d).powi(7);
        assert!((1.0 - durbin_cdf(n, d) - sf).abs() < 1e-9);
    }

    #[test]
    fn smirnov_tail_matches_two_sided_for_large_d() {
        // For d >= 1/2 the joint event is empty: sf = 2 * smirnov.
        for n in [3, 10, 40] {
            let d = 0.6;
            let durbin = 1.0 - durbin_cdf(n, d);
            let tail = 2.0 * smirnov_sf(n, d);
            assert!((durbin - tail).abs() <= 1e-12 + 1e-9 * tail, "n {n}");
        }
    }

    #[test]
    fn pelz_good_is_close_to_durbin_for_moderate_n() {
        for d in [0.02, 0.03, 0.04] {
            let durbin = durbin_cdf(2000, d);
            let pelz = pelz_good_cdf(2000, d);
            assert!((durbin - pelz).abs() < 1e-6, "d {d}: {durbin} {pelz}");
        }
    }

    #[test]
    #[ignore = "accuracy probe: Pelz-Good against the Durbin matrix"]
    fn pelz_good_accuracy_probe() {
        for n in [1000usize, 5000, 20_000] {
            for t in [0.3, 1.0, 2.0, 3.9] {
                let d = (t / n as f64).sqrt();
                let (durbin, pelz) = (durbin_cdf(n, d), pelz_good_cdf(n, d));
                eprintln!(
                    "n={n} nd^2={t}: durbin sf {:.10e} pelz-good sf {:.10e} \
                     rel {:.1e}",
                    1.0 - durbin,
                    1.0 - pelz,
                    ((pelz - durbin) / (1.0 - durbin)).abs()
                );
            }
        }
    }

    #[test]
    fn limit_series_branches_meet() {
        // mpmath, alternating series at 40 digits.
        let reference = 0.511_971_705_298_497_3;
        let below = kolmogorov_limit_sf(0.82 - 1e-15);
        let above = kolmogorov_limit_sf(0.82);
        assert!((below - reference).abs() < 1e-14, "{below}");
        assert!((above - reference).abs() < 1e-14, "{above}");
    }

    #[test]
    fn two_sample_singletons_give_one() {
        let out = ks_two_sample(&[0.0], &[1.0]).unwrap();
        assert_eq!(out.statistic, 1.0);
        assert!((out.p_value - 1.0).abs() < 1e-15);
    }
}
