//! Random cases for property tests: proptest strategies and quickcheck
//! `Arbitrary`.
//!
//! A [`CaseSpec`] is a small recipe (dimension, number of components,
//! covariance kind, measurement rows, noise, conditioning and a seed) that
//! [`CaseSpec::build`] turns into a [`Case`] deterministically. Shrinking
//! moves toward fewer components, lower dimension, isotropic covariances,
//! one measurement row and better conditioning, so a failing property
//! reports the simplest case that still fails, with the seed that
//! rebuilds it.
//!
//! ```
//! use posterior_lens::audit::Audit;
//! use posterior_lens::sampler;
//! use posterior_lens::strategy::cases;
//! use proptest::prelude::*;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(2))]
//!     fn exact_sampler_passes(spec in cases(3, 3)) {
//!         let case = spec.build().unwrap();
//!         let exact = sampler::build("exact").unwrap();
//!         // `?` turns an audit failure (an error type) into a proptest
//!         // failure that prints the findings and the replay command.
//!         Audit::new().particles(300).check(&case, exact.as_ref())?;
//!     }
//! }
//! # exact_sampler_passes();
//! ```

use std::fmt;

use nalgebra::{DMatrix, DVector};
use proptest::arbitrary::any;
use proptest::prop_oneof;
use proptest::strategy::{Just, Strategy};
use rand_distr::{Distribution, StandardNormal};

use crate::case::Case;
use crate::error::Result;
use crate::forward::{ForwardModel, Operator};
use crate::mixture::{Covariances, Mixture};
use crate::rng::{self, Purpose};
use crate::schedule::Schedule;

/// The covariance kind of a random case, simplest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `v_k I`.
    Isotropic,
    /// Point masses (a training set).
    Atoms,
    /// Per-coordinate variances.
    Diagonal,
    /// Full covariances with the spec's condition number.
    Full,
}

/// A recipe for a random case; [`CaseSpec::build`] makes the case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpec {
    /// Dimension `d`.
    pub dim: usize,
    /// Number of mixture components.
    pub components: usize,
    /// Covariance kind.
    pub kind: Kind,
    /// Measurement rows `m` (at most `dim`).
    pub rows: usize,
    /// Measurement noise standard deviation.
    pub noise_std: f64,
    /// Ratio of largest to smallest covariance eigenvalue (>= 1).
    pub condition: f64,
    /// Seed of every random number in the case.
    pub seed: u64,
}

impl fmt::Display for CaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "random case d={} K={} {:?} m={} noise={} condition={} seed={}",
            self.dim,
            self.components,
            self.kind,
            self.rows,
            self.noise_std,
            self.condition,
            self.seed
        )
    }
}

impl CaseSpec {
    /// Builds the case: means uniform in `[-3, 3]^d`, weights uniform in
    /// `[0.2, 1]`, covariances of the spec's kind with eigenvalues between
    /// `0.3 / condition` and `0.3`, a Gaussian `m x d` operator, an
    /// observation drawn from the prior, and the VP schedule
    /// (0.01, 20).
    ///
    /// # Errors
    ///
    /// When the spec is out of range (zero dimension, `rows > dim`,
    /// non-positive noise or condition below 1).
    pub fn build(&self) -> Result<Case> {
        crate::error::ensure!(
            self.dim >= 1 && self.components >= 1,
            "a case needs a dimension and a component, got {self}"
        );
        crate::error::ensure!(
            self.rows >= 1 && self.rows <= self.dim,
            "rows must lie in 1..={}, got {}",
            self.dim,
            self.rows
        );
        crate::error::ensure!(
            self.condition >= 1.0 && self.noise_std > 0.0,
            "condition must be >= 1 and noise positive, got {self}"
        );
        let (d, k) = (self.dim, self.components);
        let mut rng = rng::stream(self.seed, Purpose::Sample, u64::MAX >> 8);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let means = DMatrix::from_fn(k, d, |_, _| 3.0 * normal().tanh());
        let weights = DVector::from_fn(k, |_, _| 0.6 + 0.4 * normal().tanh());
        let top = 0.3;
        let low = top / self.condition;
        let covariances = match self.kind {
            Kind::Isotropic => {
                Covariances::Isotropic(DVector::from_element(k, top))
            }
            Kind::Atoms => Covariances::Atoms,
            Kind::Diagonal => {
                Covariances::Diagonal(DMatrix::from_fn(k, d, |_, j| {
                    if d == 1 {
                        top
                    } else {
                        low + (top - low) * j as f64 / (d - 1) as f64
                    }
                }))
            }
            Kind::Full => Covariances::Full(
                (0..k)
                    .map(|_| {
                        let q =
                            DMatrix::from_fn(d, d, |_, _| normal()).qr().q();
                        let eig = DVector::from_fn(d, |j, _| {
                            if d == 1 {
                                top
                            } else {
                                low * (top / low)
                                    .powf(j as f64 / (d - 1) as f64)
                            }
                        });
                        let c =
                            &q * DMatrix::from_diagonal(&eig) * q.transpose();
                        (&c + c.transpose()) * 0.5
                    })
                    .collect(),
            ),
        };
        let prior = Mixture::new(weights, means, covariances)?;
        let matrix = DMatrix::from_fn(self.rows, d, |_, _| normal());
        let forward =
            ForwardModel::new(Operator::Dense(matrix), self.noise_std)?;
        let mut obs_rng = rng::stream(self.seed, Purpose::Observation, 0);
        let signal = prior.sample_one(&mut obs_rng);
        let observation =
            forward.sample_observation(signal.as_view(), &mut obs_rng);
        Ok(Case {
            name: format!("random-{}", self.seed),
            description: self.to_string(),
            prior,
            forward,
            observation,
            schedule: Schedule::vp_linear_default(),
            image_shape: None,
            signal: Some(signal),
        })
    }
}

/// Random case specs with dimension `1..=max_dim` and `1..=max_components`
/// components; shrinks toward fewer components, lower dimension, isotropic
/// covariances, one measurement row and condition number 1.
pub fn cases(
    max_dim: usize,
    max_components: usize,
) -> impl Strategy<Value = CaseSpec> {
    let kind = prop_oneof![
        Just(Kind::Isotropic),
        Just(Kind::Atoms),
        Just(Kind::Diagonal),
        Just(Kind::Full),
    ];
    (
        1..=max_dim.max(1),
        1..=max_components.max(1),
        kind,
        1.0..10.0f64,
        0.2..1.0f64,
        any::<u64>(),
    )
        .prop_flat_map(
            |(dim, components, kind, condition, noise, seed)| {
                (1..=dim).prop_map(move |rows| CaseSpec {
                    dim,
                    components,
                    kind,
                    rows,
                    noise_std: noise,
                    condition,
                    seed,
                })
            },
        )
}

impl quickcheck::Arbitrary for CaseSpec {
    fn arbitrary(g: &mut quickcheck::Gen) -> CaseSpec {
        let dim = 1 + usize::arbitrary(g) % 4;
        let kinds = [Kind::Isotropic, Kind::Atoms, Kind::Diagonal, Kind::Full];
        CaseSpec {
            dim,
            components: 1 + usize::arbitrary(g) % 4,
            kind: *g.choose(&kinds).expect("four kinds"),
            rows: 1 + usize::arbitrary(g) % dim,
            noise_std: 0.2 + (u16::arbitrary(g) as f64 / u16::MAX as f64) * 0.8,
            condition: 1.0 + (u16::arbitrary(g) as f64 / u16::MAX as f64) * 9.0,
            seed: u64::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = CaseSpec>> {
        let mut smaller = Vec::new();
        let base = self.clone();
        if self.components > 1 {
            smaller.push(CaseSpec {
                components: self.components - 1,
                ..base.clone()
            });
        }
        if self.dim > 1 {
            let dim = self.dim - 1;
            smaller.push(CaseSpec {
                dim,
                rows: self.rows.min(dim),
                ..base.clone()
            });
        }
        if self.kind != Kind::Isotropic {
            smaller.push(CaseSpec { kind: Kind::Isotropic, ..base.clone() });
        }
        if self.rows > 1 {
            smaller.push(CaseSpec { rows: 1, ..base.clone() });
        }
        if self.condition > 1.0 {
            smaller.push(CaseSpec { condition: 1.0, ..base });
        }
        Box::new(smaller.into_iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::Arbitrary;

    #[test]
    fn specs_build_deterministically() {
        let spec = CaseSpec {
            dim: 3,
            components: 2,
            kind: Kind::Full,
            rows: 2,
            noise_std: 0.5,
            condition: 4.0,
            seed: 9,
        };
        let (a, b) = (spec.build().unwrap(), spec.build().unwrap());
        assert_eq!(a.prior, b.prior);
        assert_eq!(a.observation, b.observation);
        // The requested conditioning holds.
        let c = a.prior.component_covariance(0);
        let eig = c.symmetric_eigenvalues();
        assert!((eig.max() / eig.min() - 4.0).abs() < 1e-9);
    }

    #[test]
    fn quickcheck_shrinks_toward_simpler_cases() {
        let spec = CaseSpec {
            dim: 3,
            components: 3,
            kind: Kind::Full,
            rows: 3,
            noise_std: 0.5,
            condition: 5.0,
            seed: 1,
        };
        let shrunk: Vec<CaseSpec> = spec.shrink().collect();
        assert!(shrunk.iter().any(|s| s.components == 2));
        assert!(shrunk.iter().any(|s| s.dim == 2 && s.rows <= 2));
        assert!(shrunk.iter().any(|s| s.kind == Kind::Isotropic));
        assert!(shrunk.iter().any(|s| s.condition == 1.0));
        for s in shrunk {
            s.build().unwrap();
        }
    }
}
