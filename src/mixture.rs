//! Gaussian mixtures and their closed forms.
//!
//! One type, [`Mixture`], carries almost all of the ground truth: a mixture
//! of Gaussians whose covariances are zero (the atoms of a training set),
//! isotropic, diagonal or full. Three closed-form operations give every
//! exact quantity the harness needs:
//!
//! ```text
//! noised(alpha, sigma):   law of alpha x0 + sigma eps,  x0 ~ p0
//!     pi_k,  alpha mu_k,  alpha^2 Sigma_k + sigma^2 I
//! condition(A, b, s, y):  p0(x0 | y) under y = A x0 + b + N(0, s^2 I)
//!     G_k   = A Sigma_k A^T + s^2 I
//!     pi~_k ∝ pi_k N(y; A mu_k + b, G_k)
//!     mu~_k = mu_k + Sigma_k A^T G_k^{-1} (y - A mu_k - b)
//!     S~_k  = Sigma_k - Sigma_k A^T G_k^{-1} A Sigma_k
//! project(u):             law of <u, x0>, a 1-D mixture with analytic CDF
//!     pi_k,  <u, mu_k>,  u^T Sigma_k u
//! ```
//!
//! The backward (denoising) posterior `p(x0 | x_t = x)` is the mixture
//! conditioned on the observation `x = alpha x0 + sigma eps`, that is
//! `condition(alpha I, 0, sigma, x)`; [`Backward`] evaluates it for whole
//! batches of particles without forming `d x d` matrices for atoms,
//! isotropic or diagonal components. The formulas are those of
//! `condition` above with `A = alpha I`, `b = 0`, `s = sigma`; the tests
//! check them against finite differences and Monte Carlo.
//!
//! All weights are kept as normalised log-weights and combined with
//! log-sum-exp in f64.

use std::convert::Infallible;
use std::sync::OnceLock;

use nalgebra::{
    Cholesky, DMatrix, DMatrixView, DVector, DVectorView, Dyn, MatrixView,
    SymmetricEigen, U1,
};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::error::{Error, Result, ensure};
use crate::rng::{self, CHUNK, Purpose};
use crate::stats::normal::normal_cdf;

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// The covariances of a mixture's components, all of one kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Covariances {
    /// Every component is a point mass (a training example).
    Atoms,
    /// Component `k` has covariance `v_k I`.
    Isotropic(DVector<f64>),
    /// Component `k` has covariance `diag(row k)`; a `K x d` matrix.
    Diagonal(DMatrix<f64>),
    /// Component `k` has the given `d x d` covariance.
    Full(Vec<DMatrix<f64>>),
}

impl Covariances {
    /// The name of the kind, as used in messages and reports.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Covariances::Atoms => "atoms",
            Covariances::Isotropic(_) => "isotropic",
            Covariances::Diagonal(_) => "diagonal",
            Covariances::Full(_) => "full",
        }
    }
}

/// A mixture of Gaussians `sum_k pi_k N(mu_k, Sigma_k)` in `d` dimensions.
///
/// Means are the rows of a `K x d` matrix; weights are stored as
/// normalised log-weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    log_weights: DVector<f64>,
    means: DMatrix<f64>,
    covariances: Covariances,
}

/// A mixture conditioned on an observation, with the log-evidence of the
/// observation under the unconditioned mixture.
#[derive(Clone, Debug)]
pub struct Conditioned {
    /// The conditional law.
    pub mixture: Mixture,
    /// `log p(y)`, the log-density of the observation.
    pub log_evidence: f64,
}

impl Mixture {
    /// A mixture from (unnormalised, non-negative) weights, means as the
    /// rows of a `K x d` matrix, and covariances.
    ///
    /// # Errors
    ///
    /// When the weights are negative, not finite or sum to zero, when
    /// shapes disagree, when a value is not finite, or when a covariance is
    /// negative, not symmetric or not positive semi-definite. Messages name
    /// the field (`weights[1]`, `covariances[2]`) and the value.
    pub fn new(
        weights: DVector<f64>,
        means: DMatrix<f64>,
        covariances: Covariances,
    ) -> Result<Mixture> {
        ensure!(!weights.is_empty(), "weights must not be empty");
        for (k, &w) in weights.iter().enumerate() {
            ensure!(
                w.is_finite() && w >= 0.0,
                "weights[{k}] must be finite and non-negative, got {w}"
            );
        }
        let total: f64 = weights.iter().sum();
        ensure!(
            total > 0.0 && total.is_finite(),
            "weights must sum to a positive finite number, got {total}"
        );
        let log_weights = weights.map(|w| (w / total).ln());
        Mixture::from_log_weights(log_weights, means, covariances)
    }

    /// A mixture from log-weights (normalised here), means and covariances.
    ///
    /// # Errors
    ///
    /// As [`Mixture::new`].
    pub fn from_log_weights(
        log_weights: DVector<f64>,
        means: DMatrix<f64>,
        covariances: Covariances,
    ) -> Result<Mixture> {
        let k = log_weights.len();
        ensure!(k > 0, "a mixture needs at least one component");
        ensure!(
            means.nrows() == k,
            "means has {} rows but there are {k} weights",
            means.nrows()
        );
        let d = means.ncols();
        ensure!(d > 0, "means must have at least one column");
        for (i, &w) in log_weights.iter().enumerate() {
            ensure!(
                !w.is_nan() && w != f64::INFINITY,
                "weights[{i}] must be finite, got log-weight {w}"
            );
        }
        if let Some((i, j)) = first_non_finite(&means) {
            return Err(Error::invalid(format!(
                "means[{i}][{j}] must be finite, got {}",
                means[(i, j)]
            )));
        }
        validate_covariances(&covariances, k, d)?;
        let norm = log_sum_exp(log_weights.as_slice());
        ensure!(
            norm.is_finite(),
            "weights must sum to a positive finite number"
        );
        let log_weights = log_weights.map(|w| w - norm);
        Ok(Mixture { log_weights, means, covariances })
    }

    /// Equal-weight point masses at the rows of `points` (an empirical
    /// prior, i.e. a training set).
    ///
    /// # Errors
    ///
    /// When there are no points or a coordinate is not finite.
    pub fn atoms(points: DMatrix<f64>) -> Result<Mixture> {
        ensure!(points.nrows() > 0, "the training set is empty");
        let k = points.nrows();
        let log_weights = DVector::from_element(k, -(k as f64).ln());
        Mixture::from_log_weights(log_weights, points, Covariances::Atoms)
    }

    /// A single Gaussian.
    ///
    /// # Errors
    ///
    /// As [`Mixture::new`].
    pub fn gaussian(
        mean: DVector<f64>,
        covariance: DMatrix<f64>,
    ) -> Result<Mixture> {
        let means = DMatrix::from_row_slice(1, mean.len(), mean.as_slice());
        Mixture::new(
            DVector::from_element(1, 1.0),
            means,
            Covariances::Full(vec![covariance]),
        )
    }

    /// The number of components `K`.
    pub fn num_components(&self) -> usize {
        self.log_weights.len()
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }

    /// Normalised log-weights.
    pub fn log_weights(&self) -> &DVector<f64> {
        &self.log_weights
    }

    /// Normalised weights.
    pub fn weights(&self) -> DVector<f64> {
        self.log_weights.map(f64::exp)
    }

    /// The means, one row per component.
    pub fn means(&self) -> &DMatrix<f64> {
        &self.means
    }

    /// The covariances.
    pub fn covariances(&self) -> &Covariances {
        &self.covariances
    }

    /// Whether every component is a point mass.
    pub fn is_atomic(&self) -> bool {
        matches!(self.covariances, Covariances::Atoms)
    }

    /// The covariance of component `k` as a dense `d x d` matrix.
    ///
    /// # Panics
    ///
    /// When `k >= num_components()`.
    pub fn component_covariance(&self, k: usize) -> DMatrix<f64> {
        let d = self.dim();
        match &self.covariances {
            Covariances::Atoms => DMatrix::zeros(d, d),
            Covariances::Isotropic(v) => DMatrix::identity(d, d) * v[k],
            Covariances::Diagonal(v) => {
                DMatrix::from_diagonal(&v.row(k).transpose())
            }
            Covariances::Full(c) => c[k].clone(),
        }
    }

    /// `Sigma_k v` without forming `Sigma_k` unless it is full.
    fn component_cov_mul(&self, k: usize, v: DVectorView<f64>) -> DVector<f64> {
        match &self.covariances {
            Covariances::Atoms => DVector::zeros(v.len()),
            Covariances::Isotropic(s) => v * s[k],
            Covariances::Diagonal(s) => v.component_mul(&s.row(k).transpose()),
            Covariances::Full(c) => &c[k] * v,
        }
    }

    /// The mixture mean `sum_k pi_k mu_k`.
    pub fn mean(&self) -> DVector<f64> {
        let w = self.weights();
        self.means.tr_mul(&w)
    }

    /// The mixture covariance as a dense `d x d` matrix:
    ///
    /// ```text
    /// sum_k pi_k Sigma_k + sum_k pi_k (mu_k - m)(mu_k - m)^T
    /// ```
    pub fn covariance(&self) -> DMatrix<f64> {
        let d = self.dim();
        let w = self.weights();
        let m = self.mean();
        let mut cov = DMatrix::zeros(d, d);
        for k in 0..self.num_components() {
            let centred = self.means.row(k).transpose() - &m;
            cov += (&centred * centred.transpose()) * w[k];
            match &self.covariances {
                Covariances::Atoms => {}
                Covariances::Isotropic(v) => {
                    for i in 0..d {
                        cov[(i, i)] += w[k] * v[k];
                    }
                }
                Covariances::Diagonal(v) => {
                    for i in 0..d {
                        cov[(i, i)] += w[k] * v[(k, i)];
                    }
                }
                Covariances::Full(c) => cov += &c[k] * w[k],
            }
        }
        symmetrise(cov)
    }

    /// The product of the mixture covariance with `v`, in `O(K d)` for
    /// atoms, isotropic and diagonal components:
    ///
    /// ```text
    /// Cov v = sum_k pi_k Sigma_k v + sum_k pi_k (mu_k - m) <mu_k - m, v>
    /// ```
    ///
    /// # Panics
    ///
    /// When `v.len() != dim()`.
    pub fn cov_mul(&self, v: DVectorView<f64>) -> DVector<f64> {
        assert_eq!(v.len(), self.dim(), "cov_mul: vector length");
        let w = self.weights();
        let m = self.mean();
        let mut out = DVector::zeros(self.dim());
        for k in 0..self.num_components() {
            if w[k] == 0.0 {
                continue;
            }
            let centred = self.means.row(k).transpose() - &m;
            let along = centred.dot(&v);
            out += centred * (w[k] * along);
            out += self.component_cov_mul(k, v) * w[k];
        }
        out
    }

    /// The law of `alpha x0 + sigma eps` for `x0` from this mixture and
    /// independent `eps ~ N(0, I)`.
    ///
    /// Atoms become isotropic components of variance `sigma^2` (they stay
    /// atoms when `sigma = 0`).
    ///
    /// # Panics
    ///
    /// When `alpha` or `sigma` is negative or not finite.
    pub fn noised(&self, alpha: f64, sigma: f64) -> Mixture {
        assert!(alpha.is_finite() && alpha >= 0.0, "noised: alpha {alpha}");
        assert!(sigma.is_finite() && sigma >= 0.0, "noised: sigma {sigma}");
        let (a2, s2) = (alpha * alpha, sigma * sigma);
        let k = self.num_components();
        let covariances = match &self.covariances {
            Covariances::Atoms if sigma == 0.0 => Covariances::Atoms,
            Covariances::Atoms => {
                Covariances::Isotropic(DVector::from_element(k, s2))
            }
            Covariances::Isotropic(v) => {
                Covariances::Isotropic(v.map(|v| a2 * v + s2))
            }
            Covariances::Diagonal(v) => {
                Covariances::Diagonal(v.map(|v| a2 * v + s2))
            }
            Covariances::Full(c) => Covariances::Full(
                c.iter()
                    .map(|c| {
                        let mut c = c * a2;
                        for i in 0..c.nrows() {
                            c[(i, i)] += s2;
                        }
                        c
                    })
                    .collect(),
            ),
        };
        Mixture {
            log_weights: self.log_weights.clone(),
            means: &self.means * alpha,
            covariances,
        }
    }

    /// Bayes' rule under a linear-Gaussian measurement
    /// `y = A x0 + b + N(0, noise_std^2 I)`.
    ///
    /// Uses the `m x m` gain form when `m <= d` or a covariance is
    /// singular, and the `d x d` information form otherwise (see the
    /// module docs). Atoms keep their positions; only their weights change.
    ///
    /// # Errors
    ///
    /// When shapes disagree, `noise_std` is not positive, `y` is not
    /// finite, or a matrix that must be positive definite is not.
    pub fn condition(
        &self,
        matrix: &DMatrix<f64>,
        bias: Option<&DVector<f64>>,
        noise_std: f64,
        y: &DVector<f64>,
    ) -> Result<Conditioned> {
        let (m, d) = (matrix.nrows(), matrix.ncols());
        ensure!(
            d == self.dim(),
            "forward matrix has {d} columns but the prior has dimension {}",
            self.dim()
        );
        ensure!(
            y.len() == m,
            "observation has length {} but the forward model gives {m}",
            y.len()
        );
        check_noise_and_observation(noise_std, y)?;
        let shifted = match bias {
            Some(b) => {
                ensure!(
                    b.len() == m,
                    "bias has length {} but the forward model gives {m}",
                    b.len()
                );
                y - b
            }
            None => y.clone(),
        };
        let noise_var = noise_std * noise_std;

        if self.is_atomic() {
            let predicted = &self.means * matrix.transpose();
            let log_lik = DVector::from_iterator(
                self.num_components(),
                predicted.row_iter().map(|row| {
                    isotropic_log_normal(&shifted, &row.transpose(), noise_var)
                }),
            );
            return self.reweight(&log_lik);
        }

        let use_information = m > d && self.all_components_invertible();
        let k_count = self.num_components();
        let mut log_weights = DVector::zeros(k_count);
        let mut means = DMatrix::zeros(k_count, d);
        let mut covs = Vec::with_capacity(k_count);
        for k in 0..k_count {
            let mu = self.means.row(k).transpose();
            let sigma = self.component_covariance(k);
            let residual = &shifted - matrix * &mu;
            let (log_z, mean, cov) = if use_information {
                condition_information(&sigma, matrix, noise_var, &mu, &residual)
            } else {
                condition_gain(&sigma, matrix, noise_var, &mu, &residual)
            }
            .map_err(|e| e.context(format!("component {k}")))?;
            log_weights[k] = self.log_weights[k] + log_z;
            means.set_row(k, &mean.transpose());
            covs.push(cov);
        }
        let log_evidence = log_sum_exp(log_weights.as_slice());
        ensure_evidence(log_evidence)?;
        log_weights.add_scalar_mut(-log_evidence);
        let covariances = Covariances::Full(covs);
        let mixture = Mixture { log_weights, means, covariances };
        Ok(Conditioned { mixture, log_evidence })
    }

    /// Bayes' rule when the measurement observes coordinates directly:
    /// `y_i = x0[keep_i] + N(0, noise_std^2)` (identity, pixel masks,
    /// subsampling). Diagonal structure is kept, so this is `O(K d)` for
    /// isotropic and diagonal components.
    ///
    /// # Errors
    ///
    /// When an index is out of range or repeated, lengths disagree, or
    /// `noise_std` is not positive.
    pub fn condition_on_coordinates(
        &self,
        keep: &[usize],
        noise_std: f64,
        y: &DVector<f64>,
    ) -> Result<Conditioned> {
        let d = self.dim();
        ensure!(
            y.len() == keep.len(),
            "observation has length {} but {} coordinates are observed",
            y.len(),
            keep.len()
        );
        check_noise_and_observation(noise_std, y)?;
        let mut seen = vec![false; d];
        for (i, &j) in keep.iter().enumerate() {
            ensure!(j < d, "keep[{i}] = {j} is out of range for dimension {d}");
            ensure!(!seen[j], "keep[{i}] = {j} is repeated");
            seen[j] = true;
        }
        let noise_var = noise_std * noise_std;
        let variances = match &self.covariances {
            Covariances::Atoms => None,
            Covariances::Isotropic(v) => {
                Some(DMatrix::from_fn(self.num_components(), d, |k, _| v[k]))
            }
            Covariances::Diagonal(v) => Some(v.clone()),
            Covariances::Full(_) => {
                let matrix = DMatrix::from_fn(keep.len(), d, |i, j| {
                    if keep[i] == j { 1.0 } else { 0.0 }
                });
                return self.condition(&matrix, None, noise_std, y);
            }
        };

        let k_count = self.num_components();
        let mut log_weights = self.log_weights.clone();
        let mut means = self.means.clone();
        let mut post_var = variances.clone();
        for k in 0..k_count {
            for (i, &j) in keep.iter().enumerate() {
                let prior_var = variances.as_ref().map_or(0.0, |v| v[(k, j)]);
                let total = prior_var + noise_var;
                let r = y[i] - self.means[(k, j)];
                log_weights[k] -= 0.5 * (r * r / total + (LN_2PI + total.ln()));
                if let Some(pv) = post_var.as_mut() {
                    means[(k, j)] += prior_var / total * r;
                    pv[(k, j)] = prior_var * noise_var / total;
                }
            }
        }
        let log_evidence = log_sum_exp(log_weights.as_slice());
        ensure_evidence(log_evidence)?;
        log_weights.add_scalar_mut(-log_evidence);
        let covariances = match post_var {
            None => Covariances::Atoms,
            Some(v) => Covariances::Diagonal(v),
        };
        let mixture = Mixture { log_weights, means, covariances };
        Ok(Conditioned { mixture, log_evidence })
    }

    /// Multiplies the weights by `exp(log_likelihoods)` and normalises.
    ///
    /// For atoms this is exact Bayes under any measurement, linear or not:
    /// `pi~_k ∝ pi_k p(y | x0 = x_k)`.
    ///
    /// # Errors
    ///
    /// When the length is wrong, a value is NaN, or every component gets
    /// zero weight (the observation is impossible under the prior).
    pub fn reweight(
        &self,
        log_likelihoods: &DVector<f64>,
    ) -> Result<Conditioned> {
        ensure!(
            log_likelihoods.len() == self.num_components(),
            "{} log-likelihoods for {} components",
            log_likelihoods.len(),
            self.num_components()
        );
        ensure!(
            log_likelihoods.iter().all(|l| !l.is_nan()),
            "a log-likelihood is NaN"
        );
        let mut log_weights = &self.log_weights + log_likelihoods;
        let log_evidence = log_sum_exp(log_weights.as_slice());
        ensure_evidence(log_evidence)?;
        log_weights.add_scalar_mut(-log_evidence);
        let mixture = Mixture {
            log_weights,
            means: self.means.clone(),
            covariances: self.covariances.clone(),
        };
        Ok(Conditioned { mixture, log_evidence })
    }

    /// The law of `<u, x0>`: a 1-D mixture with an analytic CDF.
    ///
    /// # Panics
    ///
    /// When `u.len() != dim()`.
    pub fn project(&self, u: DVectorView<f64>) -> Mixture1d {
        assert_eq!(u.len(), self.dim(), "project: direction length");
        let means = (&self.means * u).iter().copied().collect();
        let variances = (0..self.num_components())
            .map(|k| self.component_cov_mul(k, u).dot(&u).max(0.0))
            .collect();
        Mixture1d {
            log_weights: self.log_weights.iter().copied().collect(),
            means,
            variances,
        }
    }

    /// Draws `n` points (rows of an `n x d` matrix) from the mixture.
    ///
    /// Rows are drawn in fixed chunks of [`CHUNK`], chunk `i` from its own
    /// stream of `seed`, so the result does not depend on the thread count.
    pub fn sample(&self, n: usize, seed: u64) -> DMatrix<f64> {
        let sampler = ComponentSampler::new(self);
        let d = self.dim();
        let chunks: Vec<DMatrix<f64>> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let rows = CHUNK.min(n - c * CHUNK);
                let mut rng = rng::stream(seed, Purpose::Sample, c as u64);
                let mut out = DMatrix::zeros(rows, d);
                for i in 0..rows {
                    let x = sampler.draw(&mut rng);
                    out.set_row(i, &x.transpose());
                }
                out
            })
            .collect();
        stack_rows(&chunks, d)
    }

    /// Draws one point with the caller's generator.
    pub fn sample_one(&self, rng: &mut impl rand::Rng) -> DVector<f64> {
        ComponentSampler::new(self).draw(rng)
    }

    fn all_components_invertible(&self) -> bool {
        match &self.covariances {
            Covariances::Atoms => false,
            Covariances::Isotropic(v) => v.iter().all(|&v| v > 0.0),
            Covariances::Diagonal(v) => v.iter().all(|&v| v > 0.0),
            Covariances::Full(c) => {
                c.iter().all(|c| Cholesky::new(c.clone()).is_some())
            }
        }
    }
}

/// Draws from a mixture: picks a component by its weight, then adds a
/// square-root factor of its covariance times standard normals.
pub(crate) struct ComponentSampler<'a> {
    mixture: &'a Mixture,
    cumulative: Vec<f64>,
    factors: Vec<DMatrix<f64>>,
}

impl<'a> ComponentSampler<'a> {
    pub(crate) fn new(mixture: &'a Mixture) -> ComponentSampler<'a> {
        let mut total = 0.0;
        let cumulative = mixture
            .weights()
            .iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        // A symmetric square root through the eigendecomposition works for
        // singular (positive semi-definite) covariances, where a Cholesky
        // factorisation would fail.
        let factors = match &mixture.covariances {
            Covariances::Full(c) => c.iter().map(psd_sqrt).collect(),
            _ => Vec::new(),
        };
        ComponentSampler { mixture, cumulative, factors }
    }

    pub(crate) fn pick(&self, rng: &mut impl rand::Rng) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1.0);
        let u: f64 = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.cumulative.len() - 1)
    }

    pub(crate) fn draw(&self, rng: &mut impl rand::Rng) -> DVector<f64> {
        let k = self.pick(rng);
        let d = self.mixture.dim();
        let mean = self.mixture.means.row(k).transpose();
        let z = DVector::from_fn(d, |_, _| StandardNormal.sample(rng));
        match &self.mixture.covariances {
            Covariances::Atoms => mean,
            Covariances::Isotropic(v) => mean + z * v[k].sqrt(),
            Covariances::Diagonal(v) => {
                mean + z.component_mul(&v.row(k).transpose().map(f64::sqrt))
            }
            Covariances::Full(_) => mean + &self.factors[k] * z,
        }
    }
}

/// A one-dimensional Gaussian mixture (the projection of a [`Mixture`]),
/// with analytic density, CDF, survival function and quantile.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Mixture1d {
    /// Normalised log-weights.
    pub log_weights: Vec<f64>,
    /// Component means.
    pub means: Vec<f64>,
    /// Component variances (zero for atoms).
    pub variances: Vec<f64>,
}

impl Mixture1d {
    /// `P(X <= x)`: `sum_k pi_k Phi((x - m_k) / s_k)`, a step for atoms.
    pub fn cdf(&self, x: f64) -> f64 {
        self.sum_over(|m, v| {
            if v == 0.0 {
                if x >= m { 1.0 } else { 0.0 }
            } else {
                normal_cdf((x - m) / v.sqrt())
            }
        })
        .min(1.0)
    }

    /// `P(X > x)`, computed directly (not as `1 - cdf`) so that small
    /// upper tails keep their relative accuracy.
    pub fn sf(&self, x: f64) -> f64 {
        self.sum_over(|m, v| {
            if v == 0.0 {
                if x < m { 1.0 } else { 0.0 }
            } else {
                normal_cdf(-(x - m) / v.sqrt())
            }
        })
        .min(1.0)
    }

    /// The density at `x` (atoms contribute nothing).
    pub fn pdf(&self, x: f64) -> f64 {
        self.sum_over(|m, v| {
            if v == 0.0 {
                0.0
            } else {
                (-0.5 * ((x - m) * (x - m) / v + LN_2PI + v.ln())).exp()
            }
        })
    }

    /// The smallest `x` with `cdf(x) >= p`, by bracketing and bisection to
    /// full double precision.
    ///
    /// # Panics
    ///
    /// When `p` is not in `[0, 1]`.
    pub fn quantile(&self, p: f64) -> f64 {
        assert!((0.0..=1.0).contains(&p), "quantile: p = {p}");
        let spread = self.variances.iter().fold(0.0_f64, |a, &v| a.max(v));
        let spread = spread.sqrt().max(1e-300);
        let low_mean = self.means.iter().copied().fold(f64::INFINITY, f64::min);
        let high_mean =
            self.means.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut lo, mut hi) =
            (low_mean - 40.0 * spread, high_mean + 40.0 * spread);
        if p == 0.0 {
            return lo;
        }
        for _ in 0..2000 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if self.cdf(mid) >= p {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }

    /// The mean `sum_k pi_k m_k`.
    pub fn mean(&self) -> f64 {
        self.sum_over(|m, _| m)
    }

    /// The variance.
    pub fn variance(&self) -> f64 {
        let mean = self.mean();
        self.sum_over(|m, v| v + (m - mean) * (m - mean))
    }

    /// The fourth central moment
    /// `sum_k pi_k (d^4 + 6 d^2 v + 3 v^2)`, `d = m_k - mean`.
    pub fn fourth_central_moment(&self) -> f64 {
        let mean = self.mean();
        self.sum_over(|m, v| {
            let d = m - mean;
            d.powi(4) + 6.0 * d * d * v + 3.0 * v * v
        })
    }

    fn sum_over(&self, f: impl Fn(f64, f64) -> f64) -> f64 {
        let mut total = 0.0;
        for k in 0..self.means.len() {
            let w = self.log_weights[k].exp();
            if w > 0.0 {
                total += w * f(self.means[k], self.variances[k]);
            }
        }
        total
    }
}

/// Component log-densities, the density and the score of a mixture with
/// positive definite covariances, prepared once (Cholesky factors,
/// log-determinants) and evaluated on whole batches.
#[derive(Clone, Debug)]
pub struct Density {
    log_weights: DVector<f64>,
    means: DMatrix<f64>,
    /// The means as columns (`d x K`), contiguous per component.
    means_by_column: DMatrix<f64>,
    /// `log pi_k - (log det C_k + d log 2 pi) / 2`, per component.
    offsets: DVector<f64>,
    /// For diagonal components, the reciprocal variances as columns.
    precisions_by_column: Option<DMatrix<f64>>,
    shape: Shape,
}

#[derive(Clone, Debug)]
enum Shape {
    Isotropic(DVector<f64>),
    Diagonal(DMatrix<f64>),
    Full(Vec<Cholesky<f64, Dyn>>),
}

impl Density {
    /// Prepares the density of `mixture`.
    ///
    /// # Errors
    ///
    /// When a component is an atom or its covariance is not positive
    /// definite: such a mixture has no density.
    pub fn new(mixture: &Mixture) -> Result<Density> {
        let shape = match &mixture.covariances {
            Covariances::Atoms => {
                return Err(Error::numerical(
                    "a mixture of atoms has no density",
                ));
            }
            Covariances::Isotropic(v) => {
                if let Some(k) = v.iter().position(|&v| v <= 0.0) {
                    return Err(Error::numerical(format!(
                        "component {k} has variance {}; it has no density",
                        v[k]
                    )));
                }
                Shape::Isotropic(v.clone())
            }
            Covariances::Diagonal(v) => {
                if let Some(i) = v.iter().position(|&v| v <= 0.0) {
                    let (k, j) = (i % v.nrows(), i / v.nrows());
                    return Err(Error::numerical(format!(
                        "component {k} has variance {} in coordinate {j}; \
                         it has no density",
                        v[(k, j)]
                    )));
                }
                Shape::Diagonal(v.clone())
            }
            Covariances::Full(c) => Shape::Full(
                c.iter()
                    .enumerate()
                    .map(|(k, c)| {
                        Cholesky::new(symmetrise(c.clone())).ok_or_else(|| {
                            Error::numerical(format!(
                                "covariance of component {k} is not \
                                 positive definite"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        let d = mixture.dim() as f64;
        let log_det = |k: usize| match &shape {
            Shape::Isotropic(v) => d * v[k].ln(),
            Shape::Diagonal(v) => v.row(k).iter().map(|v| v.ln()).sum(),
            Shape::Full(chol) => chol_log_det(&chol[k]),
        };
        let offsets = DVector::from_fn(mixture.num_components(), |k, _| {
            mixture.log_weights[k] - 0.5 * (log_det(k) + d * LN_2PI)
        });
        let precisions_by_column = match &shape {
            Shape::Diagonal(v) => Some(v.map(|v| 1.0 / v).transpose()),
            _ => None,
        };
        Ok(Density {
            log_weights: mixture.log_weights.clone(),
            means: mixture.means.clone(),
            means_by_column: mixture.means.transpose(),
            offsets,
            precisions_by_column,
            shape,
        })
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.means.ncols()
    }

    /// `log pi_k + log N(x; mu_k, C_k)` for every component `k`.
    pub fn joint_log_densities(&self, x: DVectorView<f64>) -> DVector<f64> {
        let k_count = self.log_weights.len();
        let x = x.as_slice();
        DVector::from_fn(k_count, |k, _| {
            let mean = self.means_by_column.column(k);
            let mean = mean.as_slice();
            let quad = match &self.shape {
                Shape::Isotropic(v) => {
                    let dist2: f64 = x
                        .iter()
                        .zip(mean)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum();
                    dist2 / v[k]
                }
                Shape::Diagonal(_) => {
                    let precisions = self
                        .precisions_by_column
                        .as_ref()
                        .expect("diagonal densities keep their precisions");
                    let precision = precisions.column(k);
                    x.iter()
                        .zip(mean)
                        .zip(precision.iter())
                        .map(|((a, b), p)| (a - b) * (a - b) * p)
                        .sum()
                }
                Shape::Full(chol) => {
                    let centred = DVector::from_iterator(
                        x.len(),
                        x.iter().zip(mean).map(|(a, b)| a - b),
                    );
                    chol[k]
                        .l_dirty()
                        .solve_lower_triangular(&centred)
                        .expect("a Cholesky factor is invertible")
                        .norm_squared()
                }
            };
            self.offsets[k] - 0.5 * quad
        })
    }

    /// `log p(x)`.
    pub fn log_density(&self, x: DVectorView<f64>) -> f64 {
        log_sum_exp(self.joint_log_densities(x).as_slice())
    }

    /// Normalised log-responsibilities `log w_k(x)`.
    pub fn log_responsibilities(&self, x: DVectorView<f64>) -> DVector<f64> {
        let mut joint = self.joint_log_densities(x);
        let norm = log_sum_exp(joint.as_slice());
        joint.add_scalar_mut(-norm);
        joint
    }

    /// `grad log p(x) = - sum_k w_k(x) C_k^{-1} (x - mu_k)`.
    pub fn score(&self, x: DVectorView<f64>) -> DVector<f64> {
        let log_w = self.log_responsibilities(x);
        let mut score = DVector::zeros(self.dim());
        for k in 0..log_w.len() {
            let w = log_w[k].exp();
            if w == 0.0 {
                continue;
            }
            let centred = x - self.means.row(k).transpose();
            let precision_times = match &self.shape {
                Shape::Isotropic(v) => centred / v[k],
                Shape::Diagonal(v) => {
                    centred.component_div(&v.row(k).transpose())
                }
                Shape::Full(chol) => chol[k].solve(&centred),
            };
            score -= precision_times * w;
        }
        score
    }

    /// `log p(x)` for every row of `xs`.
    pub fn log_density_batch(&self, xs: &DMatrix<f64>) -> DVector<f64> {
        let values = self.reduce_rows(xs, log_sum_exp);
        DVector::from_vec(values)
    }

    /// For every row of `xs`, the component with the largest
    /// responsibility.
    pub fn most_responsible_batch(&self, xs: &DMatrix<f64>) -> Vec<usize> {
        self.reduce_rows(xs, |joint| {
            let mut best = 0;
            for (k, v) in joint.iter().enumerate() {
                if *v > joint[best] {
                    best = k;
                }
            }
            best
        })
    }

    /// Applies `reduce` to the joint log-densities of every row, in fixed
    /// chunks. For isotropic components the squared distances go through
    /// one matrix product per chunk,
    /// `|x - m|^2 = |x|^2 - 2 <x, m> + |m|^2`; rows where the rounding of
    /// that expansion could exceed 1e-9 in a log-density are recomputed
    /// from explicit differences.
    fn reduce_rows<T: Send>(
        &self,
        xs: &DMatrix<f64>,
        reduce: impl Fn(&[f64]) -> T + Sync,
    ) -> Vec<T> {
        let direct = |x: DVector<f64>| {
            reduce(self.joint_log_densities(x.as_view()).as_slice())
        };
        let Shape::Isotropic(variances) = &self.shape else {
            return (0..xs.nrows())
                .into_par_iter()
                .map(|i| direct(xs.row(i).transpose()))
                .collect();
        };
        let norms: Vec<f64> = self
            .means_by_column
            .column_iter()
            .map(|m| m.norm_squared())
            .collect();
        let min_var = variances.min();
        let max_norm = norms.iter().copied().fold(0.0, f64::max);
        let chunks: Vec<Vec<T>> = (0..xs.nrows().div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let start = c * CHUNK;
                let rows = CHUNK.min(xs.nrows() - start);
                let block = xs.rows(start, rows);
                // One column of inner products per particle.
                let inner = self.means_by_column.tr_mul(&block.transpose());
                let mut joint = vec![0.0; norms.len()];
                (0..rows)
                    .map(|i| {
                        let x_norm = block.row(i).norm_squared();
                        let bound =
                            8.0 * f64::EPSILON * (x_norm + max_norm) / min_var;
                        if bound > 1e-9 {
                            return direct(block.row(i).transpose());
                        }
                        for (k, value) in joint.iter_mut().enumerate() {
                            let dist2 = x_norm - 2.0 * inner[(k, i)] + norms[k];
                            *value =
                                self.offsets[k] - 0.5 * dist2 / variances[k];
                        }
                        reduce(&joint)
                    })
                    .collect()
            })
            .collect();
        chunks.into_iter().flatten().collect()
    }

    /// The score for every row of `xs` (an `n x d` matrix).
    pub fn score_batch(&self, xs: &DMatrix<f64>) -> DMatrix<f64> {
        map_rows(xs, self.dim(), |x| self.score(x.as_view()))
    }
}

/// The backward (denoising) posterior `p(x0 | x_t = x)` of a mixture prior
/// at one noise level `x_t = alpha x0 + sigma eps`, prepared once and
/// evaluated for many `x`.
///
/// ```text
/// C_k      = alpha^2 Sigma_k + sigma^2 I
/// w_k(x)   ∝ pi_k N(x; alpha mu_k, C_k)
/// mu_k|t   = mu_k + alpha Sigma_k C_k^{-1} (x - alpha mu_k)
/// S_k      = sigma^2 Sigma_k C_k^{-1}
/// D(x)     = E[x0 | x_t = x] = sum_k w_k mu_k|t = (x + sigma^2 score) / alpha
/// Cov(x) v = sum_k w_k S_k v + sum_k w_k (mu_k|t - D) <mu_k|t - D, v>
/// dD/dx v  = (alpha / sigma^2) Cov(x) v
/// ```
///
/// For atoms `mu_k|t = x_k` and `S_k = 0`; for isotropic and diagonal
/// components the gains are elementwise. Only full covariances need `d x d`
/// matrices, which are computed once here. The prior is borrowed, and for
/// atoms the density of `x_t` is prepared on first use, so that a
/// `Backward` per time step costs `O(K)` set-up.
#[derive(Clone, Debug)]
pub struct Backward<'a> {
    prior: &'a Mixture,
    alpha: f64,
    sigma: f64,
    marginal: OnceLock<Density>,
    gains: Gains,
    /// Square roots of the full posterior covariances `S_k`, for sampling.
    factors: Vec<DMatrix<f64>>,
    /// For atoms: `log pi_k - alpha^2 |x_k|^2 / (2 sigma^2)`.
    atom_offsets: DVector<f64>,
    /// For atoms: `max_k alpha^2 |x_k|^2 / 2`.
    max_half_norm: f64,
}

#[derive(Clone, Debug)]
enum Gains {
    Atoms,
    /// Per component: the gain `alpha v / c` and the variance `sigma^2 v / c`.
    Isotropic(DVector<f64>, DVector<f64>),
    /// As isotropic, per coordinate (`K x d`).
    Diagonal(DMatrix<f64>, DMatrix<f64>),
    /// Per component: `alpha Sigma C^{-1}` and `sigma^2 Sigma C^{-1}`.
    Full(Vec<DMatrix<f64>>, Vec<DMatrix<f64>>),
}

impl<'a> Backward<'a> {
    /// Prepares `p(x0 | x_t)` of `prior` at the noise level
    /// `(alpha, sigma)`.
    ///
    /// # Errors
    ///
    /// When `alpha` is not positive or `sigma` is not positive (the
    /// backward posterior of a noise-free observation is not a density
    /// for every prior), or a noised covariance is not positive definite.
    pub fn new(
        prior: &'a Mixture,
        alpha: f64,
        sigma: f64,
    ) -> Result<Backward<'a>> {
        ensure!(
            alpha.is_finite() && alpha > 0.0,
            "alpha must be positive, got {alpha}"
        );
        ensure!(
            sigma.is_finite() && sigma > 0.0,
            "sigma must be positive, got {sigma}"
        );
        let marginal = OnceLock::new();
        if !prior.is_atomic() {
            let _ = marginal.set(Density::new(&prior.noised(alpha, sigma))?);
        }
        let s2 = sigma * sigma;
        let a2 = alpha * alpha;
        let gains = match &prior.covariances {
            Covariances::Atoms => Gains::Atoms,
            Covariances::Isotropic(v) => {
                let c = v.map(|v| a2 * v + s2);
                Gains::Isotropic(
                    v.zip_map(&c, |v, c| alpha * v / c),
                    v.zip_map(&c, |v, c| s2 * v / c),
                )
            }
            Covariances::Diagonal(v) => {
                let c = v.map(|v| a2 * v + s2);
                Gains::Diagonal(
                    v.zip_map(&c, |v, c| alpha * v / c),
                    v.zip_map(&c, |v, c| s2 * v / c),
                )
            }
            Covariances::Full(covs) => {
                let density = marginal.get().expect("set above");
                let Shape::Full(chols) = &density.shape else {
                    unreachable!("full covariances give a full density")
                };
                let mut gains = Vec::with_capacity(covs.len());
                let mut posts = Vec::with_capacity(covs.len());
                for (cov, chol) in covs.iter().zip(chols) {
                    // Sigma C^{-1} = (C^{-1} Sigma)^T, both symmetric.
                    let sigma_c_inv = chol.solve(cov).transpose();
                    gains.push(&sigma_c_inv * alpha);
                    posts.push(symmetrise(&sigma_c_inv * s2));
                }
                Gains::Full(gains, posts)
            }
        };
        let factors = match &gains {
            Gains::Full(_, posts) => posts.iter().map(psd_sqrt).collect(),
            _ => Vec::new(),
        };
        let half_norms = DVector::from_iterator(
            prior.num_components(),
            prior.means.row_iter().map(|r| 0.5 * a2 * r.norm_squared()),
        );
        let max_half_norm = half_norms.max();
        let atom_offsets = &prior.log_weights - half_norms / s2;
        Ok(Backward {
            prior,
            alpha,
            sigma,
            marginal,
            gains,
            factors,
            atom_offsets,
            max_half_norm,
        })
    }

    /// The signal scale `alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The noise scale `sigma`.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The density of `x_t`, i.e. of the noised prior.
    pub fn marginal(&self) -> &Density {
        self.marginal.get_or_init(|| {
            // Atoms noised with sigma > 0 are isotropic components with
            // finite means and positive variance, which always give a
            // density.
            Density::new(&self.prior.noised(self.alpha, self.sigma))
                .expect("a noised atom prior has a density")
        })
    }

    /// `log p_t(x)`.
    pub fn log_marginal(&self, x: DVectorView<f64>) -> f64 {
        self.marginal().log_density(x)
    }

    /// `grad log p_t(x)`.
    pub fn score(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.marginal().score(x)
    }

    /// The whole backward posterior `p(x0 | x_t = x)` as a mixture.
    pub fn posterior(&self, x: DVectorView<f64>) -> Mixture {
        let log_weights = self.marginal().log_responsibilities(x);
        let k_count = self.prior.num_components();
        let d = self.prior.dim();
        let mut means = self.prior.means.clone();
        let covariances = match &self.gains {
            Gains::Atoms => Covariances::Atoms,
            Gains::Isotropic(gain, post) => {
                for k in 0..k_count {
                    for j in 0..d {
                        let mu = means[(k, j)];
                        means[(k, j)] = mu + gain[k] * (x[j] - self.alpha * mu);
                    }
                }
                Covariances::Isotropic(post.clone())
            }
            Gains::Diagonal(gain, post) => {
                for k in 0..k_count {
                    for j in 0..d {
                        let mu = means[(k, j)];
                        means[(k, j)] =
                            mu + gain[(k, j)] * (x[j] - self.alpha * mu);
                    }
                }
                Covariances::Diagonal(post.clone())
            }
            Gains::Full(gain, post) => {
                for (k, gain) in gain.iter().enumerate() {
                    let mu = self.prior.means.row(k).transpose();
                    let shifted = x - &mu * self.alpha;
                    let mean = mu + gain * shifted;
                    means.set_row(k, &mean.transpose());
                }
                Covariances::Full(post.clone())
            }
        };
        Mixture { log_weights, means, covariances }
    }

    /// Draws `x0 ~ p(x0 | x_t = x)`.
    pub fn sample_posterior(
        &self,
        x: DVectorView<f64>,
        rng: &mut impl rand::Rng,
    ) -> DVector<f64> {
        let log_w = self.marginal().log_responsibilities(x);
        let u: f64 = rng.random();
        let mut k = log_w.len() - 1;
        let mut cumulative = 0.0;
        for (j, lw) in log_w.iter().enumerate() {
            cumulative += lw.exp();
            if u < cumulative {
                k = j;
                break;
            }
        }
        let d = self.prior.dim();
        let mu = self.prior.means.row(k).transpose();
        let mut z = || DVector::from_fn(d, |_, _| StandardNormal.sample(rng));
        match &self.gains {
            Gains::Atoms => mu,
            Gains::Isotropic(gain, post) => {
                let shifted = x - &mu * self.alpha;
                mu + shifted * gain[k] + z() * post[k].sqrt()
            }
            Gains::Diagonal(gain, post) => {
                let shifted = x - &mu * self.alpha;
                let gain = gain.row(k).transpose();
                let sd = post.row(k).transpose().map(f64::sqrt);
                mu + shifted.component_mul(&gain) + z().component_mul(&sd)
            }
            Gains::Full(gain, _) => {
                let shifted = x - &mu * self.alpha;
                mu + &gain[k] * shifted + &self.factors[k] * z()
            }
        }
    }

    /// The denoiser `D(x) = E[x0 | x_t = x]`.
    pub fn denoise(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.posterior(x).mean()
    }

    /// `Cov[x0 | x_t = x] v`, without forming `d x d` matrices for atoms,
    /// isotropic or diagonal components.
    pub fn cov_mul(
        &self,
        x: DVectorView<f64>,
        v: DVectorView<f64>,
    ) -> DVector<f64> {
        self.posterior(x).cov_mul(v)
    }

    /// The Jacobian-vector product `(dD/dx) v = (alpha / sigma^2) Cov v`;
    /// the Jacobian is symmetric, so this is also the vector-Jacobian
    /// product.
    pub fn jvp(
        &self,
        x: DVectorView<f64>,
        v: DVectorView<f64>,
    ) -> DVector<f64> {
        self.cov_mul(x, v) * (self.alpha / (self.sigma * self.sigma))
    }

    /// The denoiser for every row of `xs` (an `n x d` matrix).
    ///
    /// For atoms the squared distances go through one matrix product,
    /// `|x - a m|^2 = |x|^2 - 2 a <x, m> + a^2 |m|^2`, where `|x|^2` cancels
    /// in the softmax; rows where the rounding error of that expansion
    /// could matter (components nearly as far apart as the noise is small,
    /// relative to machine precision) are recomputed from explicit
    /// differences.
    pub fn denoise_batch(&self, xs: &DMatrix<f64>) -> DMatrix<f64> {
        match &self.gains {
            Gains::Atoms => self.denoise_atoms_batch(xs),
            _ => map_rows(xs, self.prior.dim(), |x| self.denoise(x.as_view())),
        }
    }

    /// The denoiser and the Jacobian-vector products `(dD/dx)(x_i) v_i`
    /// for every row `x_i` of `xs` and `v_i` of `vs`. For atoms both come
    /// from one softmax per particle:
    ///
    /// ```text
    /// D = W X,   Cov v = X^T (w ∘ (X v)) - D <D, v>,   dD/dx v = (alpha/sigma^2) Cov v
    /// ```
    ///
    /// # Panics
    ///
    /// When `xs` and `vs` differ in shape.
    pub fn denoise_and_jvp_batch(
        &self,
        xs: &DMatrix<f64>,
        vs: &DMatrix<f64>,
    ) -> (DMatrix<f64>, DMatrix<f64>) {
        assert_eq!(xs.shape(), vs.shape(), "denoise_and_jvp_batch: shapes");
        let d = self.prior.dim();
        let factor = self.alpha / (self.sigma * self.sigma);
        let pairs: Vec<(DMatrix<f64>, DMatrix<f64>)> =
            (0..xs.nrows().div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let start = c * CHUNK;
                    let rows = CHUNK.min(xs.nrows() - start);
                    let block = xs.rows(start, rows);
                    let v_block = vs.rows(start, rows);
                    if matches!(self.gains, Gains::Atoms) {
                        let atoms = &self.prior.means;
                        let weights = self.atom_weights(block);
                        let denoised_t = atoms.transpose() * &weights;
                        let along = atoms * v_block.transpose();
                        let mut cov_v =
                            atoms.transpose() * weights.component_mul(&along);
                        for i in 0..rows {
                            let dv = denoised_t
                                .column(i)
                                .dot(&v_block.row(i).transpose());
                            let mut col = cov_v.column_mut(i);
                            col.axpy(-dv, &denoised_t.column(i), 1.0);
                        }
                        (denoised_t.transpose(), cov_v.transpose() * factor)
                    } else {
                        let mut denoised = DMatrix::zeros(rows, d);
                        let mut jvp = DMatrix::zeros(rows, d);
                        for i in 0..rows {
                            let x = block.row(i).transpose();
                            let v = v_block.row(i).transpose();
                            let posterior = self.posterior(x.as_view());
                            denoised.set_row(i, &posterior.mean().transpose());
                            let cv = posterior.cov_mul(v.as_view()) * factor;
                            jvp.set_row(i, &cv.transpose());
                        }
                        (denoised, jvp)
                    }
                })
                .collect();
        let (denoised, jvp): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        (stack_rows(&denoised, d), stack_rows(&jvp, d))
    }

    /// The denoiser and, for every row `x_i` of `xs`, the Jacobian-vector
    /// products `(dD/dx)(x_i) u_j` with every row `u_j` of `us`, stacked so
    /// that rows `i m .. (i + 1) m` belong to particle `i`. For atoms one
    /// softmax per particle serves all `m` directions, and `X U^T` is
    /// formed once:
    ///
    /// ```text
    /// Cov U^T = X^T (w ∘ (X U^T)) - D (U D)^T
    /// ```
    ///
    /// Other components go particle by particle through
    /// [`Backward::denoise_and_jvp_batch`] on repeated rows.
    ///
    /// # Panics
    ///
    /// When `xs` and `us` differ in their number of columns.
    pub fn denoise_and_jvps_batch(
        &self,
        xs: &DMatrix<f64>,
        us: &DMatrix<f64>,
    ) -> (DMatrix<f64>, DMatrix<f64>) {
        assert_eq!(xs.ncols(), us.ncols(), "denoise_and_jvps_batch: shapes");
        let (n, d, m) = (xs.nrows(), xs.ncols(), us.nrows());
        if m == 0 {
            return (self.denoise_batch(xs), DMatrix::zeros(0, d));
        }
        if !matches!(self.gains, Gains::Atoms) {
            let Ok(out) = over_row_pairs(xs, us, |xs, vs| {
                Ok::<_, Infallible>(self.denoise_and_jvp_batch(xs, vs))
            });
            return out;
        }
        let atoms = &self.prior.means;
        let factor = self.alpha / (self.sigma * self.sigma);
        let along = atoms * us.transpose(); // K x m
        let pairs: Vec<(DMatrix<f64>, DMatrix<f64>)> = (0..n.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let start = c * CHUNK;
                let rows = CHUNK.min(n - start);
                let weights = self.atom_weights(xs.rows(start, rows));
                let denoised_t = atoms.transpose() * &weights; // d x rows
                let mut jvp = DMatrix::zeros(rows * m, d);
                let mut weighted = along.clone();
                for i in 0..rows {
                    let w = weights.column(i);
                    for (mut column, source) in
                        weighted.column_iter_mut().zip(along.column_iter())
                    {
                        column.zip_zip_apply(&source, &w, |v, a, w| *v = a * w);
                    }
                    let mut cov = atoms.transpose() * &weighted; // d x m
                    let mean = denoised_t.column(i);
                    let projections = us * mean; // m
                    for (j, mut column) in cov.column_iter_mut().enumerate() {
                        column.axpy(-projections[j], &mean, 1.0);
                    }
                    jvp.rows_mut(i * m, m)
                        .copy_from(&(cov.transpose() * factor));
                }
                (denoised_t.transpose(), jvp)
            })
            .collect();
        let (denoised, jvp): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        (stack_rows(&denoised, d), stack_rows(&jvp, d))
    }

    /// The softmax weights of the atoms for a block of particles, one
    /// column per particle (`K x rows`).
    ///
    /// The squared distances go through one matrix product,
    /// `|x - a m|^2 = |x|^2 - 2 a <x, m> + a^2 |m|^2`, where `|x|^2` cancels
    /// in the softmax; columns where the rounding error of that expansion
    /// could matter (components far apart relative to a tiny noise) are
    /// recomputed from explicit differences.
    fn atom_weights(&self, block: DMatrixView<f64>) -> DMatrix<f64> {
        let (mut weights, totals) = self.atom_weights_unnormalised(block);
        for (i, total) in totals.iter().enumerate() {
            scale(weights.column_mut(i).as_mut_slice(), 1.0 / total);
        }
        weights
    }

    /// As [`Backward::atom_weights`] before normalisation: `exp(logit -
    /// max)` per column, and each column's sum.
    fn atom_weights_unnormalised(
        &self,
        block: DMatrixView<f64>,
    ) -> (DMatrix<f64>, Vec<f64>) {
        let means = &self.prior.means;
        let (alpha, s2) = (self.alpha, self.sigma * self.sigma);

        // One product with the scale `alpha / sigma^2` folded in, unless
        // every column is computed from explicit differences.
        let explicit: Vec<bool> = block
            .row_iter()
            .map(|x| self.needs_explicit(x.norm_squared()))
            .collect();
        let mut logits = DMatrix::zeros(means.nrows(), block.nrows());
        if explicit.contains(&false) {
            logits.gemm(alpha / s2, means, &block.transpose(), 0.0);
        }

        // Per column (contiguous, in cache): offsets and max in one pass,
        // exp in a second, the sum in a third; on the widest vectors the
        // processor has.
        let mut totals = Vec::with_capacity(block.nrows());
        pulp::Arch::new().dispatch(SoftmaxColumns {
            backward: self,
            block,
            explicit: &explicit,
            logits: &mut logits,
            totals: &mut totals,
        });
        (logits, totals)
    }

    /// The softmax passes of [`Backward::atom_weights_unnormalised`] over
    /// the columns of `logits`; `explicit[i]` says whether column `i` comes
    /// from explicit differences rather than the product.
    #[inline(always)]
    fn softmax_columns(
        &self,
        block: DMatrixView<f64>,
        explicit: &[bool],
        logits: &mut DMatrix<f64>,
        totals: &mut Vec<f64>,
    ) {
        let means = &self.prior.means;
        let offsets = self.atom_offsets.as_slice();
        let (alpha, s2) = (self.alpha, self.sigma * self.sigma);
        for (i, &explicit) in explicit.iter().enumerate() {
            let x = block.row(i);
            let mut column = logits.column_mut(i);
            let column = column.as_mut_slice();
            let max = if !explicit {
                add_and_max(column, offsets)
            } else {
                explicit_logits(
                    column,
                    x,
                    means,
                    alpha,
                    s2,
                    self.prior.log_weights.as_slice(),
                );
                lane_max(column)
            };
            totals.push(exp_shifted_sum(column, max));
        }
    }

    /// Whether the logits of a particle with squared norm `norm2` must come
    /// from explicit differences: the expansion through the product loses
    /// up to `8 eps (|x|^2 + max_k alpha^2 |m_k|^2) / sigma^2` to rounding,
    /// which must stay below 1e-10.
    #[inline(always)]
    fn needs_explicit(&self, norm2: f64) -> bool {
        let s2 = self.sigma * self.sigma;
        8.0 * f64::EPSILON * (norm2 + 2.0 * self.max_half_norm) / s2 >= 1e-10
    }

    /// The denoiser for every row of `xs` through the straightforward
    /// path the optimised kernels replace: for atoms, the scaled product,
    /// offsets added, and a softmax with the standard library's `exp`,
    /// one pass per step; for other components, row by row. Slower;
    /// kept as the reference the optimised kernels are tested against.
    pub fn denoise_batch_reference(&self, xs: &DMatrix<f64>) -> DMatrix<f64> {
        if !matches!(self.gains, Gains::Atoms) {
            return map_rows(xs, self.prior.dim(), |x| {
                self.denoise(x.as_view())
            });
        }
        let means = &self.prior.means;
        let (alpha, s2) = (self.alpha, self.sigma * self.sigma);
        let mut logits = means * xs.transpose() * (alpha / s2);
        for i in 0..xs.nrows() {
            let x = xs.row(i);
            let mut column = logits.column_mut(i);
            for k in 0..means.nrows() {
                column[k] = if !self.needs_explicit(x.norm_squared()) {
                    column[k] + self.atom_offsets[k]
                } else {
                    let dist2 = (x - means.row(k) * alpha).norm_squared();
                    self.prior.log_weights[k] - 0.5 * dist2 / s2
                };
            }
            softmax_in_place(column.as_mut_slice());
        }
        (means.transpose() * logits).transpose()
    }

    fn denoise_atoms_batch(&self, xs: &DMatrix<f64>) -> DMatrix<f64> {
        let means = &self.prior.means;
        let chunks: Vec<DMatrix<f64>> = (0..xs.nrows().div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let start = c * CHUNK;
                let rows = CHUNK.min(xs.nrows() - start);
                let (weights, totals) =
                    self.atom_weights_unnormalised(xs.rows(start, rows));
                // Normalised on the d outputs rather than the K weights.
                let mut denoised = (means.transpose() * weights).transpose();
                for (i, total) in totals.iter().enumerate() {
                    denoised.row_mut(i).scale_mut(1.0 / total);
                }
                denoised
            })
            .collect();
        stack_rows(&chunks, means.ncols())
    }
}

/// Atoms grouped into cells, for a denoiser that skips whole cells whose
/// softmax weight is provably negligible.
///
/// The atoms are split into bands of log-weight (`BAND` nats wide), and
/// each band recursively at the median of its widest coordinate into cells
/// of at most `CELL` atoms; a cell keeps its centre `c`, radius `r` (the
/// largest distance of an atom to `c`), size `|C|` and largest log-weight.
/// For a particle `x` at noise level `(alpha, sigma)`, every atom of a
/// cell has a logit (log-weight minus `|x - alpha x_k|^2 / (2 sigma^2)`)
/// at most
///
/// ```text
/// u_C = max_k log pi_k - max(0, |x - alpha c| - alpha r)^2 / (2 sigma^2)
/// ```
///
/// so the cell's total weight is at most `|C| exp(u_C)`. The cell with the
/// largest bound is evaluated first, giving a partial sum `S`; every other
/// cell with `ln |C| + u_C < ln S + ln(tolerance / cells)` is skipped, so
/// the skipped mass is at most `tolerance` times the total; the rest are
/// evaluated exactly. The bound actually reached, `sum_skipped |C|
/// exp(u_C) / S_total`, is returned with the result: it bounds the
/// total-variation distance between the truncated and the exact softmax,
/// and the denoiser error by `2 bound max_k |x_k|`.
#[derive(Clone, Debug)]
pub struct AtomCells {
    /// Atoms in cell order, one column each (`d x K`).
    points: DMatrix<f64>,
    /// Log-weights in cell order.
    log_weights: Vec<f64>,
    /// Cell centres, one column each.
    centres: DMatrix<f64>,
    cells: Vec<Cell>,
}

#[derive(Clone, Debug)]
struct Cell {
    start: usize,
    len: usize,
    radius: f64,
    max_log_weight: f64,
}

/// Width in nats of the log-weight bands of [`AtomCells`].
const BAND: f64 = 4.0;
/// Largest number of atoms in a cell of [`AtomCells`].
const CELL: usize = 32;

impl AtomCells {
    /// Groups the atoms of an empirical `mixture` into cells.
    ///
    /// # Errors
    ///
    /// When the mixture is not made of atoms.
    pub fn new(mixture: &Mixture) -> Result<AtomCells> {
        ensure!(mixture.is_atomic(), "cells need atoms (an empirical prior)");
        let lw = &mixture.log_weights;
        let top = lw.max();
        let band = |k: usize| ((top - lw[k]) / BAND).floor().min(1e6) as u64;
        let mut order: Vec<usize> = (0..lw.len()).collect();
        order.sort_by_key(|&k| (band(k), k));
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let b = band(order[start]);
            let mut end = start;
            while end < order.len() && band(order[end]) == b {
                end += 1;
            }
            split_cells(
                &mixture.means,
                &mut order[start..end],
                start,
                &mut ranges,
            );
            start = end;
        }
        let d = mixture.dim();
        let points = DMatrix::from_fn(d, order.len(), |j, i| {
            mixture.means[(order[i], j)]
        });
        let log_weights: Vec<f64> = order.iter().map(|&k| lw[k]).collect();
        let mut centres = DMatrix::zeros(d, ranges.len());
        let mut cells = Vec::with_capacity(ranges.len());
        for (c, &(start, len)) in ranges.iter().enumerate() {
            let members = points.columns(start, len);
            let centre = members.column_mean();
            let radius = members
                .column_iter()
                .map(|p| (p - &centre).norm())
                .fold(0.0, f64::max);
            let max_log_weight = log_weights[start..start + len]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            centres.set_column(c, &centre);
            cells.push(Cell { start, len, radius, max_log_weight });
        }
        Ok(AtomCells { points, log_weights, centres, cells })
    }

    /// The number of cells.
    pub fn num_cells(&self) -> usize {
        self.cells.len()
    }

    /// The denoiser `E[x0 | x_t = x]` for every row of `xs`, skipping
    /// cells whose weight is below `tolerance` times the total (see the
    /// type's docs), and the largest bound on the skipped relative mass
    /// over the rows. `tolerance = 0` skips nothing.
    ///
    /// # Panics
    ///
    /// When `alpha` or `sigma` is not positive, `tolerance` is negative or
    /// `xs` has the wrong number of columns.
    pub fn denoise_batch(
        &self,
        alpha: f64,
        sigma: f64,
        xs: &DMatrix<f64>,
        tolerance: f64,
    ) -> (DMatrix<f64>, f64) {
        assert!(alpha > 0.0 && sigma > 0.0 && tolerance >= 0.0);
        assert_eq!(xs.ncols(), self.points.nrows(), "AtomCells: dimension");
        let d = xs.ncols();
        let chunks: Vec<(DMatrix<f64>, f64)> = (0..xs.nrows().div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let start = c * CHUNK;
                let rows = CHUNK.min(xs.nrows() - start);
                pulp::Arch::new().dispatch(CellChunk {
                    cells: self,
                    block: xs.rows(start, rows),
                    alpha,
                    sigma,
                    tolerance,
                })
            })
            .collect();
        let worst = chunks.iter().map(|c| c.1).fold(0.0, f64::max);
        let blocks: Vec<DMatrix<f64>> =
            chunks.into_iter().map(|c| c.0).collect();
        (stack_rows(&blocks, d), worst)
    }

    #[inline(always)]
    fn denoise_one(
        &self,
        alpha: f64,
        sigma: f64,
        x: &DVector<f64>,
        tolerance: f64,
        scratch: &mut CellScratch,
    ) -> (DVector<f64>, f64) {
        let s2 = sigma * sigma;

        // Upper bounds on the log-mass of every cell, from exact distances
        // to the centres.
        let bounds = &mut scratch.bounds;
        bounds.clear();
        for (c, cell) in self.cells.iter().enumerate() {
            let centre = self.centres.column(c);
            let dist2 = scaled_dist2(x.as_slice(), centre.as_slice(), alpha);
            // Shrunk by 1e-12 so that rounding cannot raise the bound.
            let gap =
                (dist2.sqrt() * (1.0 - 1e-12) - alpha * cell.radius).max(0.0);
            bounds.push(
                (cell.len as f64).ln() + cell.max_log_weight
                    - 0.5 * gap * gap / s2,
            );
        }

        // Evaluate the most promising cell, then every cell that may
        // matter against it; logits are shifted by the first cell's max.
        let best = (0..bounds.len())
            .max_by(|&a, &b| bounds[a].total_cmp(&bounds[b]))
            .expect("at least one cell");
        let logits = &mut scratch.logits;
        let members = &mut scratch.members;
        logits.clear();
        members.clear();
        self.cell_logits(best, alpha, s2, x, logits, members);
        let shift = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let first: f64 = logits.iter().map(|l| (l - shift).exp()).sum();
        let threshold =
            shift + first.ln() + (tolerance / self.cells.len() as f64).ln();
        let mut skipped = Vec::new();
        for (c, &bound) in bounds.iter().enumerate() {
            if c == best {
                continue;
            }
            if bound < threshold {
                skipped.push(bound);
            } else {
                self.cell_logits(c, alpha, s2, x, logits, members);
            }
        }

        // Softmax over the evaluated atoms, in evaluation order.
        let shift = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut total = 0.0;
        let mut mean = DVector::zeros(x.len());
        for (l, &k) in logits.iter().zip(members.iter()) {
            let w = (l - shift).exp();
            total += w;
            mean.axpy(w, &self.points.column(k), 1.0);
        }
        mean /= total;
        let log_total = shift + total.ln();
        let neglected = if skipped.is_empty() {
            0.0
        } else {
            (log_sum_exp(&skipped) - log_total).exp()
        };
        (mean, neglected)
    }

    /// Appends the exact logits of the atoms of cell `c` and their indices.
    #[inline(always)]
    fn cell_logits(
        &self,
        c: usize,
        alpha: f64,
        s2: f64,
        x: &DVector<f64>,
        logits: &mut Vec<f64>,
        members: &mut Vec<usize>,
    ) {
        let cell = &self.cells[c];
        for k in cell.start..cell.start + cell.len {
            let point = self.points.column(k);
            let dist2 = scaled_dist2(x.as_slice(), point.as_slice(), alpha);
            logits.push(self.log_weights[k] - 0.5 * dist2 / s2);
            members.push(k);
        }
    }
}

/// The truncated denoiser for a block of particles, as an operation that
/// `pulp` compiles for the widest vector instructions available (as
/// [`SoftmaxColumns`]): the denoised block and the largest neglected
/// mass.
struct CellChunk<'a> {
    cells: &'a AtomCells,
    block: DMatrixView<'a, f64>,
    alpha: f64,
    sigma: f64,
    tolerance: f64,
}

impl pulp::WithSimd for CellChunk<'_> {
    type Output = (DMatrix<f64>, f64);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> (DMatrix<f64>, f64) {
        let (rows, d) = self.block.shape();
        let mut out = DMatrix::zeros(rows, d);
        let mut worst: f64 = 0.0;
        let mut scratch = CellScratch::default();
        for i in 0..rows {
            let x = self.block.row(i).transpose();
            let (mean, bound) = self.cells.denoise_one(
                self.alpha,
                self.sigma,
                &x,
                self.tolerance,
                &mut scratch,
            );
            out.set_row(i, &mean.transpose());
            worst = worst.max(bound);
        }
        (out, worst)
    }
}

/// Reused buffers of [`AtomCells::denoise_one`].
#[derive(Default)]
struct CellScratch {
    bounds: Vec<f64>,
    logits: Vec<f64>,
    members: Vec<usize>,
}

/// `|x - alpha p|^2` from explicit differences, over eight interleaved
/// partial sums combined in a fixed order.
#[inline(always)]
fn scaled_dist2(x: &[f64], p: &[f64], alpha: f64) -> f64 {
    let mut lanes = [0.0; LANES];
    let mut cx = x.chunks_exact(LANES);
    let mut cp = p.chunks_exact(LANES);
    for (u, v) in (&mut cx).zip(&mut cp) {
        for j in 0..LANES {
            let diff = u[j] - alpha * v[j];
            lanes[j] += diff * diff;
        }
    }
    for (u, v) in cx.remainder().iter().zip(cp.remainder()) {
        let diff = u - alpha * v;
        lanes[0] += diff * diff;
    }
    lanes.iter().sum()
}

/// Splits `order` (atom indices, at positions `offset..`) at the median of
/// the widest coordinate until pieces hold at most `CELL` atoms, pushing
/// `(start, len)` for each piece.
fn split_cells(
    means: &DMatrix<f64>,
    order: &mut [usize],
    offset: usize,
    ranges: &mut Vec<(usize, usize)>,
) {
    if order.len() <= CELL {
        ranges.push((offset, order.len()));
        return;
    }
    let widest = (0..means.ncols())
        .map(|j| {
            let (lo, hi) = order
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &k| {
                    (lo.min(means[(k, j)]), hi.max(means[(k, j)]))
                });
            (j, hi - lo)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(j, _)| j)
        .expect("a dimension");
    let half = order.len() / 2;
    order.select_nth_unstable_by(half, |&a, &b| {
        means[(a, widest)].total_cmp(&means[(b, widest)]).then(a.cmp(&b))
    });
    let (left, right) = order.split_at_mut(half);
    split_cells(means, left, offset, ranges);
    split_cells(means, right, offset + half, ranges);
}

/// Conditioning of one component in the gain (`m x m`) form.
fn condition_gain(
    sigma: &DMatrix<f64>,
    matrix: &DMatrix<f64>,
    noise_var: f64,
    mu: &DVector<f64>,
    residual: &DVector<f64>,
) -> Result<(f64, DVector<f64>, DMatrix<f64>)> {
    let sigma_at = sigma * matrix.transpose();
    let mut gram = matrix * &sigma_at;
    for i in 0..gram.nrows() {
        gram[(i, i)] += noise_var;
    }
    let chol = Cholesky::new(symmetrise(gram)).ok_or_else(|| {
        Error::numerical("A Sigma A^T + noise is not positive definite")
    })?;
    let log_z = chol_log_normal(&chol, residual);
    let mean = mu + &sigma_at * chol.solve(residual);
    let cov = sigma - &sigma_at * chol.solve(&sigma_at.transpose());
    Ok((log_z, mean, symmetrise(cov)))
}

/// Conditioning of one component in the information (`d x d`) form, for
/// tall operators and invertible covariances.
fn condition_information(
    sigma: &DMatrix<f64>,
    matrix: &DMatrix<f64>,
    noise_var: f64,
    mu: &DVector<f64>,
    residual: &DVector<f64>,
) -> Result<(f64, DVector<f64>, DMatrix<f64>)> {
    let m = matrix.nrows() as f64;
    let prior_chol = Cholesky::new(symmetrise(sigma.clone()))
        .ok_or_else(|| Error::numerical("covariance is not invertible"))?;
    let precision =
        prior_chol.inverse() + matrix.transpose() * matrix * (1.0 / noise_var);
    let post_chol = Cholesky::new(symmetrise(precision)).ok_or_else(|| {
        Error::numerical("posterior precision is not positive definite")
    })?;
    // Woodbury: r^T G^{-1} r = |r|^2/s2 - u^T P^{-1} u, u = A^T r / s2;
    // determinant lemma: log det G = m log s2 + log det Sigma + log det P.
    let u = matrix.transpose() * residual / noise_var;
    let p_inv_u = post_chol.solve(&u);
    let quad = residual.norm_squared() / noise_var - u.dot(&p_inv_u);
    let log_det = m * noise_var.ln()
        + chol_log_det(&prior_chol)
        + chol_log_det(&post_chol);
    let log_z = -0.5 * (quad + log_det + m * LN_2PI);
    let mean = mu + &p_inv_u;
    let cov = post_chol.inverse();
    Ok((log_z, mean, symmetrise(cov)))
}

fn check_noise_and_observation(noise_std: f64, y: &DVector<f64>) -> Result<()> {
    ensure!(
        noise_std.is_finite() && noise_std > 0.0,
        "noise_std must be positive, got {noise_std}"
    );
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "observation[{i}] must be finite, got {}",
            y[i]
        )));
    }
    Ok(())
}

fn ensure_evidence(log_evidence: f64) -> Result<()> {
    if log_evidence.is_finite() {
        Ok(())
    } else {
        Err(Error::numerical(format!(
            "observation: zero likelihood under every component \
             (log-evidence {log_evidence}); is it on the scale of A x0?"
        )))
    }
}

fn validate_covariances(
    covariances: &Covariances,
    k: usize,
    d: usize,
) -> Result<()> {
    match covariances {
        Covariances::Atoms => Ok(()),
        Covariances::Isotropic(v) => {
            ensure!(
                v.len() == k,
                "covariances has {} entries but there are {k} components",
                v.len()
            );
            for (i, &v) in v.iter().enumerate() {
                ensure!(
                    v.is_finite() && v >= 0.0,
                    "covariances[{i}] must be a finite non-negative variance, \
                     got {v}"
                );
            }
            Ok(())
        }
        Covariances::Diagonal(v) => {
            ensure!(
                v.nrows() == k && v.ncols() == d,
                "diagonal covariances are {} x {} but must be {k} x {d}",
                v.nrows(),
                v.ncols()
            );
            for i in 0..k {
                for j in 0..d {
                    let x = v[(i, j)];
                    ensure!(
                        x.is_finite() && x >= 0.0,
                        "covariances[{i}][{j}] must be a finite non-negative \
                         variance, got {x}"
                    );
                }
            }
            Ok(())
        }
        Covariances::Full(c) => {
            ensure!(
                c.len() == k,
                "covariances has {} matrices but there are {k} components",
                c.len()
            );
            for (i, c) in c.iter().enumerate() {
                validate_psd(c, d)
                    .map_err(|e| e.context(format!("covariances[{i}]")))?;
            }
            Ok(())
        }
    }
}

fn validate_psd(c: &DMatrix<f64>, d: usize) -> Result<()> {
    ensure!(
        c.nrows() == d && c.ncols() == d,
        "matrix is {} x {} but must be {d} x {d}",
        c.nrows(),
        c.ncols()
    );
    if let Some((i, j)) = first_non_finite(c) {
        return Err(Error::invalid(format!(
            "entry [{i}][{j}] must be finite, got {}",
            c[(i, j)]
        )));
    }
    let scale = c.amax().max(f64::MIN_POSITIVE);
    for i in 0..d {
        for j in 0..i {
            let gap = (c[(i, j)] - c[(j, i)]).abs();
            ensure!(
                gap <= 1e-10 * scale,
                "matrix is not symmetric: [{i}][{j}] = {} but [{j}][{i}] = {}",
                c[(i, j)],
                c[(j, i)]
            );
        }
    }
    let eigen = SymmetricEigen::new(symmetrise(c.clone()));
    let smallest = eigen.eigenvalues.min();
    ensure!(
        smallest >= -1e-10 * scale,
        "matrix is not positive semi-definite (smallest eigenvalue \
         {smallest})"
    );
    Ok(())
}

fn first_non_finite(m: &DMatrix<f64>) -> Option<(usize, usize)> {
    let i = m.iter().position(|v| !v.is_finite())?;
    Some((i % m.nrows(), i / m.nrows()))
}

/// `(M + M^T) / 2`.
pub(crate) fn symmetrise(m: DMatrix<f64>) -> DMatrix<f64> {
    (&m + m.transpose()) * 0.5
}

/// A symmetric square root of a positive semi-definite matrix, with
/// eigenvalues below zero (rounding) clamped to zero.
fn psd_sqrt(c: &DMatrix<f64>) -> DMatrix<f64> {
    let eigen = SymmetricEigen::new(symmetrise(c.clone()));
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors
        * DMatrix::from_diagonal(&roots)
        * eigen.eigenvectors.transpose()
}

fn chol_log_det(chol: &Cholesky<f64, Dyn>) -> f64 {
    2.0 * chol.l_dirty().diagonal().iter().map(|v| v.ln()).sum::<f64>()
}

/// `log N(r; 0, G)` from the Cholesky factor of `G`.
fn chol_log_normal(chol: &Cholesky<f64, Dyn>, r: &DVector<f64>) -> f64 {
    let z = chol
        .l_dirty()
        .solve_lower_triangular(r)
        .expect("a Cholesky factor is invertible");
    -0.5 * (z.norm_squared() + chol_log_det(chol) + r.len() as f64 * LN_2PI)
}

/// `log N(y; mean, var I)`.
pub(crate) fn isotropic_log_normal(
    y: &DVector<f64>,
    mean: &DVector<f64>,
    var: f64,
) -> f64 {
    let m = y.len() as f64;
    -0.5 * ((y - mean).norm_squared() / var + m * (LN_2PI + var.ln()))
}

/// `log sum_i exp(v_i)`, stable for large and `-inf` entries.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

fn softmax_in_place(values: &mut [f64]) {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    for v in values.iter_mut() {
        *v /= total;
    }
}

/// The number of independent accumulators of the vector kernels below.
///
/// Sums and maxima run over `LANES` interleaved partial results combined
/// in a fixed order: the compiler may then keep them in vector registers
/// (it may not reorder a single running sum), and the result still does
/// not depend on how the loop is compiled.
const LANES: usize = 8;

/// `values[k] *= factor`.
fn scale(values: &mut [f64], factor: f64) {
    values.iter_mut().for_each(|v| *v *= factor);
}

/// `exp(x)` for `x <= 0`, within a few ulp, written so that loops over it
/// vectorise: Cody-Waite reduction `x = n ln 2 + r` with `|r| <= ln 2 / 2`,
/// a degree-13 Taylor polynomial for `exp(r)` (truncation below 1e-17
/// relative) and `2^n` assembled from its bits. Arguments below
/// [`NEGLIGIBLE_LOG`] give 0: a softmax entry under `1e-130` of its
/// maximum changes no sum of fewer than `1e110` terms in double
/// precision, and zeros keep the products that follow free of subnormal
/// numbers, which run many times slower.
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let clamped = x.max(-708.0);
    let shifted = clamped * std::f64::consts::LOG2_E + MAGIC;
    let n = shifted - MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 6_227_020_800.0; // 1/13!
    for c in [
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    let exponent = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let two_n = f64::from_bits(exponent.wrapping_add(1023) << 52);
    if x < NEGLIGIBLE_LOG { 0.0 } else { p * two_n }
}

/// Log of the smallest softmax weight, relative to the largest, that
/// [`exp_nonpositive`] keeps.
const NEGLIGIBLE_LOG: f64 = -300.0;

/// The softmax passes over a block's logits, as an operation that
/// `pulp` compiles for the widest vector instructions the processor has
/// (AVX-512, or AVX2 with FMA, detected at run time; baseline otherwise):
/// the loops inlined into it vectorise on them. Rust neither fuses nor
/// reorders floating-point operations, so the results are the same bits
/// on every instruction set.
struct SoftmaxColumns<'a> {
    backward: &'a Backward<'a>,
    block: DMatrixView<'a, f64>,
    explicit: &'a [bool],
    logits: &'a mut DMatrix<f64>,
    totals: &'a mut Vec<f64>,
}

impl pulp::WithSimd for SoftmaxColumns<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.backward.softmax_columns(
            self.block,
            self.explicit,
            self.logits,
            self.totals,
        );
    }
}

/// `logits[k] = log_weights[k] - |x - alpha m_k|^2 / (2 s2)` for the rows
/// `m_k` of `means`, from explicit differences: coordinate by coordinate
/// over all atoms at once, so the inner loop runs along a contiguous
/// column of `means` and vectorises, while each atom's sum still runs
/// over the coordinates in order.
#[inline(always)]
fn explicit_logits(
    logits: &mut [f64],
    x: MatrixView<f64, U1, Dyn, U1, Dyn>,
    means: &DMatrix<f64>,
    alpha: f64,
    s2: f64,
    log_weights: &[f64],
) {
    // Four coordinates per pass keep each partial sum in a register for
    // four additions (in coordinate order) instead of one.
    let k = means.nrows();
    logits.fill(0.0);
    let data = means.as_slice();
    let mut j = 0;
    while j + 4 <= means.ncols() {
        let (x0, x1, x2, x3) = (x[j], x[j + 1], x[j + 2], x[j + 3]);
        let c0 = &data[j * k..(j + 1) * k];
        let c1 = &data[(j + 1) * k..(j + 2) * k];
        let c2 = &data[(j + 2) * k..(j + 3) * k];
        let c3 = &data[(j + 3) * k..(j + 4) * k];
        for (i, acc) in logits.iter_mut().enumerate() {
            let d0 = x0 - alpha * c0[i];
            let d1 = x1 - alpha * c1[i];
            let d2 = x2 - alpha * c2[i];
            let d3 = x3 - alpha * c3[i];
            *acc = (((*acc + d0 * d0) + d1 * d1) + d2 * d2) + d3 * d3;
        }
        j += 4;
    }
    for j in j..means.ncols() {
        let xj = x[j];
        for (acc, m) in logits.iter_mut().zip(&data[j * k..(j + 1) * k]) {
            let diff = xj - alpha * m;
            *acc += diff * diff;
        }
    }
    for (value, lw) in logits.iter_mut().zip(log_weights) {
        *value = lw - 0.5 * *value / s2;
    }
}

/// `values[k] += offsets[k]`, returning the maximum of the sums.
#[inline(always)]
fn add_and_max(values: &mut [f64], offsets: &[f64]) -> f64 {
    assert_eq!(values.len(), offsets.len());
    for (v, o) in values.iter_mut().zip(offsets) {
        *v += o;
    }
    lane_max(values)
}

/// The maximum of `values` (`-inf` when empty).
#[inline(always)]
fn lane_max(values: &[f64]) -> f64 {
    let mut lanes = [f64::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for v in &mut chunks {
        for j in 0..LANES {
            lanes[j] = if v[j] > lanes[j] { v[j] } else { lanes[j] };
        }
    }
    for v in chunks.remainder() {
        lanes[0] = lanes[0].max(*v);
    }
    lanes.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// `values[k] = exp(values[k] - shift)` for `shift >= max(values)`,
/// returning their sum.
#[inline(always)]
fn exp_shifted_sum(values: &mut [f64], shift: f64) -> f64 {
    // A pure map (which the compiler vectorises), then the lane sum.
    for v in values.iter_mut() {
        *v = exp_nonpositive(*v - shift);
    }
    let mut lanes = [0.0; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for v in &mut chunks {
        for j in 0..LANES {
            lanes[j] += v[j];
        }
    }
    for v in chunks.remainder() {
        lanes[0] += *v;
    }
    lanes.iter().sum()
}

/// `f` applied to every pair of a row of `xs` (a particle) and a row of
/// `us` (a direction), particle-major: row `i m + j` of its inputs pairs
/// particle `i` with direction `j`. Its first output, one row per pair,
/// is kept once per particle (`m >= 1`); the second is returned as is.
pub(crate) fn over_row_pairs<T, E>(
    xs: &DMatrix<f64>,
    us: &DMatrix<f64>,
    f: impl FnOnce(
        &DMatrix<f64>,
        &DMatrix<f64>,
    ) -> std::result::Result<(DMatrix<f64>, T), E>,
) -> std::result::Result<(DMatrix<f64>, T), E> {
    let (n, d, m) = (xs.nrows(), xs.ncols(), us.nrows());
    let repeated = DMatrix::from_fn(n * m, d, |r, j| xs[(r / m, j)]);
    let directions = DMatrix::from_fn(n * m, us.ncols(), |r, j| us[(r % m, j)]);
    let (first, second) = f(&repeated, &directions)?;
    let first = DMatrix::from_fn(n, first.ncols(), |i, j| first[(i * m, j)]);
    Ok((first, second))
}

/// Applies `f` to every row of `xs` in parallel, in fixed chunks.
pub(crate) fn map_rows(
    xs: &DMatrix<f64>,
    out_dim: usize,
    f: impl Fn(DVector<f64>) -> DVector<f64> + Sync,
) -> DMatrix<f64> {
    let chunks: Vec<DMatrix<f64>> = (0..xs.nrows().div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let start = c * CHUNK;
            let rows = CHUNK.min(xs.nrows() - start);
            let mut out = DMatrix::zeros(rows, out_dim);
            for i in 0..rows {
                let value = f(xs.row(start + i).transpose());
                out.set_row(i, &value.transpose());
            }
            out
        })
        .collect();
    stack_rows(&chunks, out_dim)
}

/// Stacks row blocks into one matrix.
pub(crate) fn stack_rows(blocks: &[DMatrix<f64>], d: usize) -> DMatrix<f64> {
    let n = blocks.iter().map(|b| b.nrows()).sum();
    let mut out = DMatrix::zeros(n, d);
    let mut start = 0;
    for b in blocks {
        out.rows_mut(start, b.nrows()).copy_from(b);
        start += b.nrows();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_nonpositive_is_within_two_ulp_of_exp_and_zero_below_the_cutoff() {
        let mut worst: f64 = 0.0;
        for i in 0..300_000 {
            let x = -(i as f64) * 1e-3 - 1e-9 * (i % 7) as f64;
            let exact = x.exp();
            let ulp = f64::EPSILON * exact;
            worst = worst.max((exp_nonpositive(x) - exact).abs() / ulp);
        }
        assert!(worst <= 2.0, "{worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(NEGLIGIBLE_LOG - 1e-9), 0.0);
        assert_eq!(exp_nonpositive(-1e300), 0.0);
        assert!(exp_nonpositive(NEGLIGIBLE_LOG) > 0.0);
    }

    #[test]
    fn the_softmax_gives_the_same_bits_on_every_instruction_set() {
        // Digits-like atoms: values on a grid in [-1, 1]; noise levels
        // from nearly clean (most weights negligible) to pure noise.
        let (k, d, n) = (301, 17, 9);
        let means = DMatrix::from_fn(k, d, |i, j| {
            ((i * 7 + j * 13) % 17) as f64 / 8.0 - 1.0
        });
        let log_weights = DVector::from_fn(k, |i, _| -((i % 5) as f64));
        let prior =
            Mixture::from_log_weights(log_weights, means, Covariances::Atoms)
                .unwrap();
        let xs = DMatrix::from_fn(n, d, |i, j| ((i * 3 + j) as f64).sin());
        for (alpha, sigma) in [(0.999, 0.05), (0.8, 0.6), (0.02, 1.0)] {
            let backward = Backward::new(&prior, alpha, sigma).unwrap();
            let run = |arch: Option<pulp::Scalar>| {
                let mut logits = DMatrix::zeros(k, n);
                logits.gemm(
                    alpha / (sigma * sigma),
                    &backward.prior.means,
                    &xs.transpose(),
                    0.0,
                );
                let mut totals = Vec::new();
                let explicit: Vec<bool> = xs
                    .row_iter()
                    .map(|x| backward.needs_explicit(x.norm_squared()))
                    .collect();
                let op = SoftmaxColumns {
                    backward: &backward,
                    block: xs.as_view(),
                    explicit: &explicit,
                    logits: &mut logits,
                    totals: &mut totals,
                };
                match arch {
                    Some(scalar) => pulp::Simd::vectorize(scalar, op),
                    None => pulp::Arch::new().dispatch(op),
                }
                (logits, totals)
            };
            let (widest, widest_totals) = run(None);
            let (scalar, scalar_totals) = run(Some(pulp::Scalar::new()));
            let bits = |m: &DMatrix<f64>| -> Vec<u64> {
                m.iter().map(|v| v.to_bits()).collect()
            };
            assert_eq!(bits(&widest), bits(&scalar), "sigma = {sigma}");
            assert_eq!(widest_totals, scalar_totals, "sigma = {sigma}");
        }
    }

    fn two_modes() -> Mixture1d {
        Mixture1d {
            log_weights: vec![0.4f64.ln(), 0.6f64.ln()],
            means: vec![-1.0, 1.5],
            variances: vec![0.16, 0.36],
        }
    }

    #[test]
    fn normal_cdf_matches_tabulated_values() {
        // Values of Phi from Abramowitz & Stegun, Table 26.1 (to 15 digits).
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_543).abs() < 1e-15);
        assert!((normal_cdf(-2.0) - 0.022_750_131_948_179_2).abs() < 1e-16);
    }

    #[test]
    fn cdf_and_sf_are_complementary_and_quantile_inverts_cdf() {
        let m = two_modes();
        for x in [-3.0, -1.0, 0.0, 0.3, 1.5, 4.0] {
            assert!((m.cdf(x) + m.sf(x) - 1.0).abs() < 1e-15);
        }
        for p in [1e-9, 0.01, 0.4, 0.5, 0.99, 1.0 - 1e-9] {
            let q = m.quantile(p);
            assert!((m.cdf(q) - p).abs() < 1e-13 * p.max(1e-3), "p = {p}");
        }
        // The density integrates to the CDF (trapezoid rule).
        let (a, b, n) = (-1.0, 1.0, 20_000);
        let h = (b - a) / n as f64;
        let integral: f64 = (0..n)
            .map(|i| {
                let x = a + i as f64 * h;
                0.5 * h * (m.pdf(x) + m.pdf(x + h))
            })
            .sum();
        assert!((integral - (m.cdf(b) - m.cdf(a))).abs() < 1e-8);
    }

    #[test]
    fn moments_of_a_projection_match_the_mixture() {
        let m = two_modes();
        let mean = -0.4 + 0.6 * 1.5;
        let var = 0.4 * (0.16 + (-1.0f64 - mean).powi(2))
            + 0.6 * (0.36 + (1.5f64 - mean).powi(2));
        assert!((m.mean() - mean).abs() < 1e-15);
        assert!((m.variance() - var).abs() < 1e-14);
        // Fourth central moment by numerical integration of the density.
        let (a, b, n) = (-8.0, 10.0, 200_000);
        let h = (b - a) / n as f64;
        let mu4: f64 = (0..=n)
            .map(|i| {
                let x = a + i as f64 * h;
                let w = if i == 0 || i == n { 0.5 } else { 1.0 };
                w * h * (x - mean).powi(4) * m.pdf(x)
            })
            .sum();
        assert!((m.fourth_central_moment() - mu4).abs() < 1e-8 * mu4);
    }
}
