//! The audit: a sampler's particles, checkpoint by checkpoint, against the
//! exact noised posterior `p_t(x_t | y)`.
//!
//! At every checkpoint `t` (and for the final particles, against the law
//! at their `final_time`) the audit measures:
//!
//! - **spread**: the ratio of particle to true standard deviation along
//!   the posterior's principal directions, the top range direction and a
//!   null-space direction of `A`, random directions, and of the total
//!   variance. The null law of the sample variance is the one under the
//!   true (non-Gaussian) projected mixture, through its fourth moment.
//!   `spread_too_narrow` / `spread_too_wide` need a significant test *and*
//!   a confidence interval wholly outside the spread band (equivalence
//!   style), so a large sample does not turn a trivial deviation into a
//!   finding. When components of so little total weight that fewer than
//!   five particles are expected on them carry more than 10% of a
//!   variance, that spread test is reported undecided (p = 1, the reason
//!   in its method): the sample variance is then dominated by whether the
//!   rare components happen to be hit, far from its normal approximation;
//!   the mode and unsupported-mass tests judge those components.
//! - **modes**: particles are assigned to the component with the largest
//!   responsibility under the target; the counts are tested against the
//!   cell probabilities under the truth (the share of exact draws landing
//!   in each cell, which equals the posterior weight only when components
//!   do not overlap). `mode_misweighted` needs a significant test and a
//!   cell whose observed share's interval lies wholly outside its expected
//!   share plus or minus the mode tolerance.
//! - **unsupported mass**: the share of particles on prior components that
//!   the observation rules out (posterior weight below 1e-6), below the
//!   `low_density_mass` quantile of the true log-density, and, for the
//!   final particles of a training-set prior, below that quantile of the
//!   noised prior's density (off every training point); one-sided
//!   binomial tests against the mass exact draws put there.
//!   `unsupported_mode` needs a significant test and excess mass beyond the
//!   tolerance.
//! - **omnibus tests**: one-sample Kolmogorov-Smirnov and Anderson-Darling
//!   on every projection against the exact projected-mixture CDF; they
//!   back the targeted tests up and are reported, but decide no finding.
//! - **stop-time sensitivity**: `stop_time_sensitive` when the verdict
//!   (any finding or none) changes along the checkpoints, i.e. stopping the
//!   sampler at a different time would change the answer.
//!
//! All p-values of one audit form one family, adjusted with Holm's method
//! at the family-wise false-alarm rate `fwer` (default 1e-3); the report
//! keeps raw and adjusted p-values. Weighted particles (SMC samplers) use
//! weighted moments and ECDFs, with Kish's effective sample size.
//!
//! The audit validates a run before testing it (shapes, NaN and infinite
//! values, weights) and reports bad output as an input error.

use std::fmt;

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand_distr::{Distribution, StandardNormal};

use crate::case::Case;
use crate::error::{Error, Result, ensure};
use crate::mixture::{Covariances, Density, Mixture};
use crate::report::{
    Cell, CheckpointReport, Failure, Finding, Occupancy, Omnibus, Report,
    SCHEMA_VERSION, Spread, Unsupported, format_time,
};
use crate::rng::{self, Purpose};
use crate::sampler::{Run, Sampler, Setup, TrajectoryMeaning};
use crate::stats::{self, Alternative, Effect, TestOutcome};
use crate::truth::Truth;

/// How an audit is run and judged. Build with [`Audit::new`] and the
/// setters; every setting has a documented default.
#[derive(Clone, Debug)]
pub struct Audit {
    num_particles: usize,
    seed: u64,
    fwer: f64,
    spread_band: [f64; 2],
    mode_tolerance: f64,
    unsupported_tolerance: f64,
    ruled_out_tolerance: f64,
    low_density_mass: f64,
    checkpoints: Option<Vec<f64>>,
    reference_draws: usize,
    random_directions: usize,
}

impl Default for Audit {
    fn default() -> Audit {
        Audit::new()
    }
}

impl Audit {
    /// The default audit: 1000 particles, seed 0, family-wise false-alarm
    /// rate 1e-3, spread band [0.9, 1/0.9] on the standard-deviation
    /// ratio, mode tolerance 0.05, excess-mass tolerance 0.02 in the
    /// low-density region (of mass 0.01) and 0.005 on prior modes the
    /// observation rules out (where the exact mass is essentially 0), checkpoints at 0.8, 0.5, 0.2 and
    /// 0.05 of the schedule's end time, 20 000 exact reference draws per
    /// checkpoint and 2 random directions.
    pub fn new() -> Audit {
        Audit {
            num_particles: 1000,
            seed: 0,
            fwer: 1e-3,
            spread_band: [0.9, 1.0 / 0.9],
            mode_tolerance: 0.05,
            unsupported_tolerance: 0.02,
            ruled_out_tolerance: 0.005,
            low_density_mass: 0.01,
            checkpoints: None,
            reference_draws: 20_000,
            random_directions: 2,
        }
    }

    /// The number of particles the sampler draws.
    pub fn particles(mut self, n: usize) -> Audit {
        self.num_particles = n;
        self
    }

    /// The run seed.
    pub fn seed(mut self, seed: u64) -> Audit {
        self.seed = seed;
        self
    }

    /// The family-wise false-alarm rate.
    pub fn fwer(mut self, fwer: f64) -> Audit {
        self.fwer = fwer;
        self
    }

    /// The band of standard-deviation ratios that counts as right.
    pub fn spread_band(mut self, low: f64, high: f64) -> Audit {
        self.spread_band = [low, high];
        self
    }

    /// The largest difference of mode shares that counts as right.
    pub fn mode_tolerance(mut self, tolerance: f64) -> Audit {
        self.mode_tolerance = tolerance;
        self
    }

    /// The checkpoint times (decreasing).
    pub fn checkpoints(mut self, times: Vec<f64>) -> Audit {
        self.checkpoints = Some(times);
        self
    }

    /// The number of exact draws per checkpoint used for cell
    /// probabilities, region masses and the total-variance null.
    pub fn reference_draws(mut self, n: usize) -> Audit {
        self.reference_draws = n;
        self
    }

    /// The configured particle count.
    pub fn num_particles(&self) -> usize {
        self.num_particles
    }

    /// The configured seed.
    pub fn run_seed(&self) -> u64 {
        self.seed
    }

    fn validate(&self) -> Result<()> {
        ensure!(
            self.num_particles >= 10,
            "the audit needs at least 10 particles, got {}",
            self.num_particles
        );
        ensure!(
            self.fwer > 0.0 && self.fwer < 1.0,
            "fwer must lie in (0, 1), got {}",
            self.fwer
        );
        let [low, high] = self.spread_band;
        ensure!(
            low > 0.0 && low <= 1.0 && high >= 1.0 && high.is_finite(),
            "the spread band must contain 1 and be positive, got [{low}, \
             {high}]"
        );
        ensure!(
            self.mode_tolerance >= 0.0 && self.mode_tolerance < 1.0,
            "the mode tolerance must lie in [0, 1), got {}",
            self.mode_tolerance
        );
        ensure!(
            self.reference_draws >= 1000,
            "at least 1000 reference draws are needed, got {}",
            self.reference_draws
        );
        Ok(())
    }

    /// The checkpoints used for a case: the configured ones, or 0.8, 0.5,
    /// 0.2 and 0.05 of the schedule's end time.
    pub fn checkpoints_for(&self, case: &Case) -> Vec<f64> {
        if let Some(times) = &self.checkpoints {
            return times.clone();
        }
        let (_, t_max) = case.schedule.time_range();
        let t_min = case.schedule.default_t_min();
        [0.8, 0.5, 0.2, 0.05]
            .iter()
            .map(|f| f * t_max)
            .filter(|&t| t > t_min)
            .collect()
    }

    /// Runs `sampler` on `case` and audits the run.
    ///
    /// # Errors
    ///
    /// When the configuration is invalid, the sampler fails, or its output
    /// is malformed.
    pub fn run(&self, case: &Case, sampler: &dyn Sampler) -> Result<Report> {
        self.validate()?;
        let setup = Setup::new(case, self.checkpoints_for(case))?;
        let problem = setup.for_sampler(sampler);
        let run = sampler
            .run(&problem, self.num_particles, self.seed)
            .map_err(|e| e.context(format!("sampler {}", sampler.name())))?;
        let identity = SamplerIdentity {
            name: sampler.name().to_string(),
            settings: sampler.settings(),
            meaning: sampler.trajectory_meaning(),
        };
        let mut report = self.audit_run(case, &setup.truth, &run, &identity)?;
        for (i, c) in report.checkpoints.iter_mut().enumerate() {
            if c.sigma > 0.0 {
                c.lens = lens(
                    &setup.truth,
                    &problem,
                    sampler,
                    c.t,
                    i as u64,
                    self.seed,
                )?;
            }
        }
        Ok(report)
    }

    /// Runs and audits, as a `Result` for use with `?` inside property
    /// tests: `Err` holds the report when anything was found.
    ///
    /// # Errors
    ///
    /// [`AuditFailure::Findings`] with the report when the audit found a
    /// failure, [`AuditFailure::Error`] when it could not run.
    pub fn check(
        &self,
        case: &Case,
        sampler: &dyn Sampler,
    ) -> std::result::Result<Report, AuditFailure> {
        let report = self.run(case, sampler).map_err(AuditFailure::Error)?;
        if report.passed() {
            Ok(report)
        } else {
            Err(AuditFailure::Findings(Box::new(report)))
        }
    }

    /// Runs and audits, panicking with the failing numbers, the case, the
    /// seed and a replay command when anything is found.
    ///
    /// # Panics
    ///
    /// When the audit finds a failure or cannot run.
    #[track_caller]
    pub fn assert_passes(&self, case: &Case, sampler: &dyn Sampler) -> Report {
        match self.check(case, sampler) {
            Ok(report) => report,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Audits a run that was produced elsewhere (for example by a sampler
    /// written in Python, read from files).
    ///
    /// # Errors
    ///
    /// When the run is malformed: wrong shapes, NaN or infinite values,
    /// bad weights, checkpoint times outside the schedule.
    pub fn audit_run(
        &self,
        case: &Case,
        truth: &Truth,
        run: &Run,
        sampler: &SamplerIdentity,
    ) -> Result<Report> {
        self.validate()?;
        let weights = validate_run(run, case)?;
        let ess =
            weights.as_deref().map(stats::effective_sample_size).transpose()?;

        let mut checkpoints = Vec::new();
        let mut notes = Vec::new();
        if sampler.meaning == TrajectoryMeaning::NoisedPosterior {
            for (i, c) in run.trajectory.iter().enumerate() {
                checkpoints.push(self.diagnose(
                    truth,
                    &c.states,
                    None,
                    c.t,
                    "trajectory",
                    i as u64,
                )?);
            }
        } else if !run.trajectory.is_empty() {
            notes.push(format!(
                "the trajectory holds {:?} states, which have no exact law; \
                 only the final particles are tested",
                sampler.meaning
            ));
        }
        let final_index = run.trajectory.len() as u64;
        checkpoints.push(self.diagnose(
            truth,
            &run.particles,
            weights.as_deref(),
            run.final_time,
            "final",
            final_index,
        )?);
        if weights.is_some() {
            notes.push(
                "the final particles are weighted: tests use the weighted \
                 ECDF and moments with Kish's effective sample size, which \
                 is approximate for one dependent particle system"
                    .into(),
            );
        }

        // One family: every p-value of the audit, Holm-adjusted.
        let raw: Vec<f64> =
            checkpoints.iter().flat_map(CheckpointReport::p_values).collect();
        let adjusted = stats::holm(&raw)?;
        let mut next = adjusted.into_iter();
        for c in &mut checkpoints {
            c.set_adjusted(&mut next);
        }

        let mut findings = Vec::new();
        for c in &checkpoints {
            findings.extend(self.findings_at(c));
        }
        if let Some(f) = stop_time_finding(&checkpoints, &findings) {
            findings.push(f);
        }
        if case.prior.is_atomic() {
            notes.push(
                "empirical prior: Kolmogorov-Smirnov and Anderson-Darling \
                 are skipped where the target is a set of atoms (t = 0)"
                    .into(),
            );
        }

        let mut replay = format!(
            "posterior-lens audit --case {} --sampler {} --seed {} \
             --particles {}",
            case.name,
            crate::report::sampler_spec(&sampler.name, &sampler.settings),
            self.seed,
            run.particles.nrows()
        );
        if let Some(times) = &self.checkpoints {
            let times: Vec<String> = times.iter().map(f64::to_string).collect();
            replay += &format!(" --checkpoints {}", times.join(","));
        }
        Ok(Report {
            schema_version: SCHEMA_VERSION,
            case: case.name.clone(),
            sampler: sampler.name.clone(),
            settings: sampler.settings.clone(),
            seed: self.seed,
            num_particles: run.particles.nrows(),
            effective_sample_size: ess,
            fwer: self.fwer,
            spread_band: self.spread_band,
            checkpoints,
            findings,
            notes,
            replay,
        })
    }

    /// Everything measured at one checkpoint, with raw p-values (adjusted
    /// ones are filled in later).
    fn diagnose(
        &self,
        truth: &Truth,
        states: &DMatrix<f64>,
        weights: Option<&[f64]>,
        t: f64,
        role: &str,
        index: u64,
    ) -> Result<CheckpointReport> {
        let (alpha, sigma) =
            if t > 0.0 { truth.schedule().alpha_sigma(t) } else { (1.0, 0.0) };
        let (target, target_name) = if sigma > 0.0 {
            (truth.posterior().noised(alpha, sigma), "p_t(x_t|y)")
        } else {
            (truth.posterior().clone(), "p(x0|y)")
        };
        let prior_at_t = truth.prior().noised(alpha, sigma);
        let level = 1.0 - self.fwer;
        let seed =
            self.seed ^ (0x9E37_79B9_7F4A_7C15_u64.wrapping_mul(index + 1));
        let reference = target.sample(self.reference_draws, seed);
        let label = |e: Error| e.context(format!("at t = {}", format_time(t)));

        // Spread and omnibus tests along each direction.
        let size = match weights {
            Some(w) => stats::effective_sample_size(w).map_err(label)?,
            None => states.nrows() as f64,
        };
        let target_weights: Vec<f64> =
            target.weights().iter().copied().collect();
        let mut spread = Vec::new();
        let mut omnibus = Vec::new();
        for (name, u) in
            directions(truth, &target, self.random_directions, seed)
        {
            let projected: Vec<f64> = (states * &u).iter().copied().collect();
            let law = target.project(u.as_view());
            let (var, mu4) = (law.variance(), law.fourth_central_moment());
            if var <= 1e-300 {
                continue;
            }
            let mean = law.mean();
            let contributions: Vec<f64> = target_weights
                .iter()
                .zip(law.means.iter().zip(&law.variances))
                .map(|(w, (m, v))| w * ((m - mean).powi(2) + v))
                .collect();
            let test =
                stats::variance_test(&projected, weights, var, mu4, level)
                    .map_err(label)?;
            let test = undecided_if_rare(
                test,
                rare_share(&target_weights, &contributions, size),
            );
            spread.push(spread_entry(name.clone(), test));
            if !target.is_atomic() {
                let cdf = |x: f64| law.cdf(x);
                let ks = stats::ks_one_sample(&projected, weights, &cdf)
                    .map_err(label)?;
                omnibus.push(Omnibus {
                    direction: name.clone(),
                    test: ks,
                    p_adjusted: f64::NAN,
                });
                if weights.is_none() {
                    let ad = stats::anderson_darling(&projected, &cdf)
                        .map_err(label)?;
                    omnibus.push(Omnibus {
                        direction: name,
                        test: ad,
                        p_adjusted: f64::NAN,
                    });
                }
            }
        }
        if target.dim() > 1 {
            let test = total_variance_test(
                states, weights, &target, &reference, level,
            )
            .map_err(label)?;
            let share = rare_share(
                &target_weights,
                &total_contributions(&target),
                size,
            );
            spread.push(spread_entry(
                "total".into(),
                undecided_if_rare(test, share),
            ));
        }

        // Cells: the target's components, by largest responsibility.
        let cells_of = assigner(&target)?;
        let particle_cells = cells_of(states);
        let reference_cells = cells_of(&reference);
        let occupancy = self
            .occupancy(
                &particle_cells,
                weights,
                &reference_cells,
                target.num_components(),
                seed,
                level,
            )
            .map_err(label)?;

        // Unsupported mass.
        let mut unsupported = Vec::new();
        let posterior_weights = truth.posterior().weights();
        let ruled_out: Vec<bool> =
            posterior_weights.iter().map(|&w| w < 1e-6).collect();
        if ruled_out.iter().any(|&r| r) && ruled_out.iter().any(|&r| !r) {
            let prior_cells = assigner(&prior_at_t)?;
            let in_region = |cells: &[usize]| -> Vec<bool> {
                cells.iter().map(|&k| ruled_out[k]).collect()
            };
            let observed = in_region(&prior_cells(states));
            let expected = in_region(&prior_cells(&reference));
            unsupported.push(
                region_test(
                    "ruled_out_prior_mode",
                    &observed,
                    weights,
                    &expected,
                    level,
                )
                .map_err(label)?,
            );
        }
        // Low density: below the `low_density_mass` quantile of the true
        // log-density. For a training-set prior at the final particles,
        // also far from every training point: below the same quantile of
        // the noised *prior* density, which is small exactly where no
        // (noised) training point is near.
        let mut low_regions = Vec::new();
        if !target.is_atomic() {
            low_regions.push(("low_density", Density::new(&target)?));
            if role == "final" && truth.prior().is_atomic() {
                low_regions
                    .push(("off_training_set", Density::new(&prior_at_t)?));
            }
        }
        for (kind, density) in low_regions {
            let particle_log = density.log_density_batch(states);
            let reference_log = density.log_density_batch(&reference);
            let mut sorted: Vec<f64> = reference_log.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let cut = sorted[((self.low_density_mass * sorted.len() as f64)
                as usize)
                .min(sorted.len() - 1)];
            let below = |v: &DVector<f64>| -> Vec<bool> {
                v.iter().map(|&l| l < cut).collect()
            };
            unsupported.push(
                region_test(
                    kind,
                    &below(&particle_log),
                    weights,
                    &below(&reference_log),
                    level,
                )
                .map_err(label)?,
            );
        }

        let sliced_wasserstein = if weights.is_none() {
            let n = states.nrows().min(reference.nrows());
            stats::sliced_wasserstein(
                states,
                &reference.rows(0, n).into_owned(),
                1,
                50,
                seed,
            )
            .ok()
            .map(|s| s.value)
        } else {
            None
        };

        Ok(CheckpointReport {
            t,
            alpha,
            sigma,
            role: role.to_string(),
            target: target_name.to_string(),
            spread,
            omnibus,
            occupancy,
            unsupported,
            sliced_wasserstein,
            lens: None,
        })
    }

    fn occupancy(
        &self,
        particle_cells: &[usize],
        weights: Option<&[f64]>,
        reference_cells: &[usize],
        num_components: usize,
        seed: u64,
        level: f64,
    ) -> Result<Option<Occupancy>> {
        let n = particle_cells.len();
        let mut expected = vec![0.0; num_components];
        for &k in reference_cells {
            expected[k] += 1.0 / reference_cells.len() as f64;
        }
        let mut observed = vec![0.0; num_components];
        for (i, &k) in particle_cells.iter().enumerate() {
            observed[k] += weights.map_or(1.0 / n as f64, |w| w[i]);
        }
        // Keep cells expected to hold at least 5 particles; merge the rest.
        let mut order: Vec<usize> = (0..num_components).collect();
        order.sort_by(|&a, &b| expected[b].total_cmp(&expected[a]));
        let (kept, merged): (Vec<usize>, Vec<usize>) =
            order.into_iter().partition(|&k| expected[k] * n as f64 >= 5.0);
        let mut labels: Vec<String> =
            kept.iter().map(|k| format!("component {k}")).collect();
        let mut probs: Vec<f64> = kept.iter().map(|&k| expected[k]).collect();
        let mut shares: Vec<f64> = kept.iter().map(|&k| observed[k]).collect();
        let other_p: f64 = merged.iter().map(|&k| expected[k]).sum();
        let other_s: f64 = merged.iter().map(|&k| observed[k]).sum();
        if other_p > 0.0 || other_s > 0.0 {
            labels.push("other".into());
            probs.push(other_p);
            shares.push(other_s);
        }
        if labels.len() < 2 {
            return Ok(None);
        }
        // A cell no exact draw reached keeps a tiny probability, so that
        // particles there count against the sampler rather than break the
        // test.
        let floor = 0.5 / reference_cells.len() as f64;
        for p in &mut probs {
            *p = p.max(floor);
        }
        let total: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        let size = match weights {
            Some(w) => stats::effective_sample_size(w)?,
            None => n as f64,
        };
        let counts: Vec<u64> =
            shares.iter().map(|s| (s * size).round() as u64).collect();
        let total_count: u64 = counts.iter().sum::<u64>().max(1);
        let test = stats::occupancy_test(&counts, &probs, seed)?;
        let cells = labels
            .into_iter()
            .zip(probs.iter().zip(&shares).zip(&counts))
            .map(|(label, ((&expected, &observed), &count))| {
                let ci = stats::clopper_pearson(count, total_count, level)
                    .map(|e| [e.ci_low, e.ci_high])
                    .unwrap_or([0.0, 1.0]);
                Cell { label, expected, observed, ci }
            })
            .collect();
        Ok(Some(Occupancy { cells, test, p_adjusted: f64::NAN }))
    }

    fn findings_at(&self, c: &CheckpointReport) -> Vec<Finding> {
        let mut out = Vec::new();
        let significant = |p: f64| p <= self.fwer;
        let [low, high] = self.spread_band;
        for s in &c.spread {
            if !significant(s.p_adjusted) {
                continue;
            }
            let failure = if s.ci[1] < low {
                Failure::SpreadTooNarrow
            } else if s.ci[0] > high {
                Failure::SpreadTooWide
            } else {
                continue;
            };
            out.push(Finding {
                failure,
                t: c.t,
                location: s.direction.clone(),
                evidence: format!(
                    "sd ratio {:.3} [{:.3}, {:.3}] outside [{:.3}, {:.3}]",
                    s.sd_ratio, s.ci[0], s.ci[1], low, high
                ),
                p_adjusted: s.p_adjusted,
            });
        }
        if let Some(o) =
            c.occupancy.as_ref().filter(|o| significant(o.p_adjusted))
        {
            let tol = self.mode_tolerance;
            let worst = o
                .cells
                .iter()
                .filter(|cell| {
                    cell.ci[1] < cell.expected - tol
                        || cell.ci[0] > cell.expected + tol
                })
                .max_by(|a, b| {
                    (a.observed - a.expected)
                        .abs()
                        .total_cmp(&(b.observed - b.expected).abs())
                });
            if let Some(cell) = worst {
                out.push(Finding {
                    failure: Failure::ModeMisweighted,
                    t: c.t,
                    location: cell.label.clone(),
                    evidence: format!(
                        "share {:.3} [{:.3}, {:.3}] vs expected {:.3} (tolerance {tol})",
                        cell.observed, cell.ci[0], cell.ci[1], cell.expected
                    ),
                    p_adjusted: o.p_adjusted,
                });
            }
        }
        for u in &c.unsupported {
            let tolerance = if u.kind == "ruled_out_prior_mode" {
                self.ruled_out_tolerance
            } else {
                self.unsupported_tolerance
            };
            if significant(u.p_adjusted) && u.ci[0] > u.expected + tolerance {
                out.push(Finding {
                    failure: Failure::UnsupportedMode,
                    t: c.t,
                    location: u.kind.clone(),
                    evidence: format!(
                        "mass {:.3} [{:.3}, {:.3}] vs expected {:.3}",
                        u.observed, u.ci[0], u.ci[1], u.expected
                    ),
                    p_adjusted: u.p_adjusted,
                });
            }
        }
        out
    }
}

/// Who produced a run: the sampler's name, settings and what its
/// trajectory means.
#[derive(Clone, Debug)]
pub struct SamplerIdentity {
    /// The sampler's name (or a label for an external program).
    pub name: String,
    /// Its settings.
    pub settings: std::collections::BTreeMap<String, String>,
    /// What its recorded states mean.
    pub meaning: TrajectoryMeaning,
}

/// Why [`Audit::check`] did not pass.
#[derive(Debug)]
pub enum AuditFailure {
    /// The audit ran and found failures.
    Findings(Box<Report>),
    /// The audit could not run.
    Error(Error),
}

impl fmt::Display for AuditFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditFailure::Error(e) => write!(f, "audit could not run: {e}"),
            AuditFailure::Findings(report) => {
                writeln!(
                    f,
                    "audit of {} on {} found {} failure(s) (seed {}, {} \
                     particles):",
                    report.sampler_spec(),
                    report.case,
                    report.findings.len(),
                    report.seed,
                    report.num_particles
                )?;
                for finding in &report.findings {
                    writeln!(
                        f,
                        "  {} at t = {} ({}): {}, adjusted p = {:.2e}",
                        finding.failure.name(),
                        format_time(finding.t),
                        finding.location,
                        finding.evidence,
                        finding.p_adjusted
                    )?;
                }
                write!(f, "replay: {}", report.replay)
            }
        }
    }
}

impl std::error::Error for AuditFailure {}

impl CheckpointReport {
    /// The raw p-values of this checkpoint, in a fixed order.
    fn p_values(&self) -> Vec<f64> {
        let mut p: Vec<f64> =
            self.spread.iter().map(|s| s.test.p_value).collect();
        p.extend(self.omnibus.iter().map(|o| o.test.p_value));
        p.extend(self.occupancy.iter().map(|o| o.test.p_value));
        p.extend(self.unsupported.iter().map(|u| u.test.p_value));
        p
    }

    /// Fills in adjusted p-values in the order of [`Self::p_values`].
    fn set_adjusted(&mut self, next: &mut impl Iterator<Item = f64>) {
        let mut take = || next.next().expect("one adjusted p per raw p");
        for s in &mut self.spread {
            s.p_adjusted = take();
        }
        for o in &mut self.omnibus {
            o.p_adjusted = take();
        }
        if let Some(o) = &mut self.occupancy {
            o.p_adjusted = take();
        }
        for u in &mut self.unsupported {
            u.p_adjusted = take();
        }
    }
}

/// A set of components whose total mass is expected to hold fewer
/// particles than this is rare: a sample may well miss all of it.
const RARE_COUNT: f64 = 5.0;
/// The largest share of a variance that a rare set of components may
/// carry for a spread test along it to decide anything.
const RARE_SHARE: f64 = 0.1;

/// The largest share of a variance, given each component's contribution
/// to it, that a rare set of components carries: components in decreasing
/// order of contribution per unit of weight (the distant ones first),
/// each taken while the set's weight keeps its expected count among
/// `size` particles below [`RARE_COUNT`].
fn rare_share(weights: &[f64], contributions: &[f64], size: f64) -> f64 {
    let total: f64 = contributions.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut order: Vec<usize> =
        (0..weights.len()).filter(|&k| weights[k] > 0.0).collect();
    let per_weight = |k: usize| contributions[k] / weights[k];
    order.sort_by(|&a, &b| per_weight(b).total_cmp(&per_weight(a)));
    let budget = RARE_COUNT / size;
    let (mut mass, mut carried) = (0.0, 0.0);
    for k in order {
        if mass + weights[k] < budget {
            mass += weights[k];
            carried += contributions[k];
        }
    }
    carried / total
}

/// Each component's contribution to the total variance of `target`:
/// `pi_k (|mu_k - m|^2 + tr Sigma_k)`.
fn total_contributions(target: &Mixture) -> Vec<f64> {
    let mean = target.mean();
    let d = target.dim() as f64;
    target
        .weights()
        .iter()
        .enumerate()
        .map(|(k, w)| {
            let spread =
                (target.means().row(k).transpose() - &mean).norm_squared();
            let trace = match target.covariances() {
                Covariances::Atoms => 0.0,
                Covariances::Isotropic(v) => d * v[k],
                Covariances::Diagonal(v) => v.row(k).sum(),
                Covariances::Full(c) => c[k].trace(),
            };
            w * (spread + trace)
        })
        .collect()
}

/// A sample variance is a sum dominated by rare events when components
/// of so little total weight that a sample may miss them all carry much
/// of the variance: its law is then far from the normal approximation of
/// the spread tests (a sample that, as expected, misses a distant
/// component of weight 1e-4 looks far too narrow). Such a test is kept in
/// the report, marked undecided, with p = 1; the mode and
/// unsupported-mass tests judge the rare components.
fn undecided_if_rare(mut test: TestOutcome, share: f64) -> TestOutcome {
    if share > RARE_SHARE {
        test.method = format!(
            "{}; undecided: components expected to hold fewer than {} \
             particles between them carry {:.0}% of this variance",
            test.method,
            RARE_COUNT,
            100.0 * share
        );
        test.p_value = 1.0;
    }
    test
}

fn spread_entry(direction: String, test: TestOutcome) -> Spread {
    let effect = test.effect.clone().unwrap_or(Effect {
        name: "sd_ratio".into(),
        estimate: f64::NAN,
        ci_low: f64::NAN,
        ci_high: f64::NAN,
        level: f64::NAN,
    });
    Spread {
        direction,
        sd_ratio: effect.estimate,
        ci: [effect.ci_low, effect.ci_high],
        test,
        p_adjusted: f64::NAN,
    }
}

/// Checks a run's shapes, values and weights; returns the normalised
/// weights of the final particles, if any.
fn validate_run(run: &Run, case: &Case) -> Result<Option<Vec<f64>>> {
    let d = case.dim();
    let check_states = |what: &str, m: &DMatrix<f64>| -> Result<()> {
        ensure!(m.nrows() > 0, "{what} holds no particles");
        ensure!(
            m.ncols() == d,
            "{what} has {} columns but the case has dimension {d}",
            m.ncols()
        );
        if let Some(i) = m.iter().position(|v| !v.is_finite()) {
            let (row, col) = (i % m.nrows(), i / m.nrows());
            return Err(Error::invalid(format!(
                "{what}[{row}][{col}] is {}, not a finite number",
                m[(row, col)]
            )));
        }
        Ok(())
    };
    check_states("samples", &run.particles)?;
    ensure!(
        run.particles.nrows() >= 10,
        "samples holds {} particles; the audit needs at least 10",
        run.particles.nrows()
    );
    ensure!(
        run.final_time.is_finite() && run.final_time >= 0.0,
        "the final time must be a non-negative number, got {}",
        run.final_time
    );
    let (_, t_max) = case.schedule.time_range();
    for c in &run.trajectory {
        ensure!(
            c.t.is_finite() && c.t > 0.0 && c.t <= t_max,
            "trajectory time {} is outside (0, {t_max}]",
            c.t
        );
        check_states(&format!("trajectory at t = {}", c.t), &c.states)?;
    }
    let Some(log_weights) = &run.log_weights else {
        return Ok(None);
    };
    ensure!(
        log_weights.len() == run.particles.nrows(),
        "log_weights has {} entries but there are {} samples",
        log_weights.len(),
        run.particles.nrows()
    );
    if let Some(i) =
        log_weights.iter().position(|w| w.is_nan() || *w == f64::INFINITY)
    {
        return Err(Error::invalid(format!(
            "log_weights[{i}] is {}, not a number below infinity",
            log_weights[i]
        )));
    }
    let weights = stats::normalize_log_weights(log_weights.as_slice())
        .map_err(|e| e.context("log_weights"))?;
    let ess = stats::effective_sample_size(&weights)?;
    ensure!(
        ess >= 10.0,
        "log_weights give an effective sample size of {ess:.2}; the audit \
         needs at least 10"
    );
    Ok(Some(weights))
}

/// The directions along which spread and projections are tested.
fn directions(
    truth: &Truth,
    target: &Mixture,
    random: usize,
    seed: u64,
) -> Vec<(String, DVector<f64>)> {
    let d = target.dim();
    if d == 1 {
        return vec![("x".into(), DVector::from_element(1, 1.0))];
    }
    let mut out = Vec::new();
    let eigen = SymmetricEigen::new(target.covariance());
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| {
        eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a])
    });
    for (rank, &i) in order.iter().take(2).enumerate() {
        out.push((
            format!("principal_{}", rank + 1),
            canonical_sign(eigen.eigenvectors.column(i).into_owned()),
        ));
    }
    if let Some(svd) = truth.forward().svd() {
        let range = canonical_sign(svd.v.column(0).into_owned());
        // A null-space direction: the first principal direction with its
        // range components removed.
        let mut null = out[0].1.clone();
        for j in 0..svd.v.ncols() {
            let v = svd.v.column(j);
            null -= v * v.dot(&null);
        }
        out.push(("range_1".into(), range));
        if null.norm() > 1e-6 {
            out.push(("null_1".into(), canonical_sign(null.normalize())));
        }
    }
    let mut rng = rng::stream(seed, Purpose::Test, 0);
    for r in 0..random {
        let z = DVector::from_fn(d, |_, _| StandardNormal.sample(&mut rng));
        out.push((format!("random_{}", r + 1), z.normalize()));
    }
    out
}

/// Flips a direction so that its largest entry is positive.
fn canonical_sign(v: DVector<f64>) -> DVector<f64> {
    let i = v.iamax();
    if v[i] < 0.0 { -v } else { v }
}

/// A function assigning each row to the component of `mixture` with the
/// largest responsibility (the nearest atom of positive weight for atoms).
#[allow(clippy::type_complexity)]
fn assigner(
    mixture: &Mixture,
) -> Result<Box<dyn Fn(&DMatrix<f64>) -> Vec<usize> + Sync>> {
    let density = if mixture.is_atomic() {
        // Equal unit variances: the largest responsibility is the nearest
        // atom; atoms of zero weight keep weight zero.
        let k = mixture.num_components();
        let log_weights = mixture.log_weights().map(|w| {
            if w > f64::NEG_INFINITY { 0.0 } else { f64::NEG_INFINITY }
        });
        let unit = Mixture::from_log_weights(
            log_weights,
            mixture.means().clone(),
            Covariances::Isotropic(DVector::from_element(k, 1.0)),
        )?;
        Density::new(&unit)?
    } else {
        Density::new(mixture)?
    };
    Ok(Box::new(move |xs: &DMatrix<f64>| density.most_responsible_batch(xs)))
}

/// One-sided binomial test for excess mass in a region, with the mass
/// exact draws put there as the null.
fn region_test(
    kind: &str,
    observed: &[bool],
    weights: Option<&[f64]>,
    expected: &[bool],
    level: f64,
) -> Result<Unsupported> {
    let n = observed.len();
    let share: f64 = match weights {
        Some(w) => {
            observed.iter().zip(w).filter(|(o, _)| **o).map(|(_, w)| w).sum()
        }
        None => observed.iter().filter(|&&o| o).count() as f64 / n as f64,
    };
    let size = match weights {
        Some(w) => stats::effective_sample_size(w)?,
        None => n as f64,
    };
    let trials = size.round().max(1.0) as u64;
    let count = ((share * size).round() as u64).min(trials);
    let p0 =
        expected.iter().filter(|&&e| e).count() as f64 / expected.len() as f64;
    // A region no exact draw reached keeps a tiny probability.
    let p0 = p0.max(0.5 / expected.len() as f64);
    let test =
        stats::binomial_test(count, trials, p0, Alternative::Greater, level)?;
    let ci = stats::clopper_pearson(count, trials, level)
        .map(|e| [e.ci_low, e.ci_high])
        .unwrap_or([0.0, 1.0]);
    Ok(Unsupported {
        kind: kind.to_string(),
        expected: p0,
        observed: share,
        ci,
        test,
        p_adjusted: f64::NAN,
    })
}

/// The total variance against the truth's, with the null law of the
/// estimate from exact draws: `z = (T_hat - T) / sqrt(Var|x - m|^2 / n)`.
fn total_variance_test(
    states: &DMatrix<f64>,
    weights: Option<&[f64]>,
    target: &Mixture,
    reference: &DMatrix<f64>,
    level: f64,
) -> Result<TestOutcome> {
    let mean = target.mean();
    let truth_total = target.covariance().trace();
    ensure!(truth_total > 0.0, "the target has zero total variance");
    let squared = |m: &DMatrix<f64>| -> Vec<f64> {
        m.row_iter().map(|r| (r.transpose() - &mean).norm_squared()).collect()
    };
    let reference_sq = squared(reference);
    let r_mean = reference_sq.iter().sum::<f64>() / reference_sq.len() as f64;
    let r_var = reference_sq.iter().map(|v| (v - r_mean).powi(2)).sum::<f64>()
        / (reference_sq.len() - 1) as f64;
    let n = states.nrows();
    let (estimate, size) = match weights {
        Some(w) => {
            let centre = states.tr_mul(&DVector::from_column_slice(w));
            let total: f64 = states
                .row_iter()
                .zip(w)
                .map(|(r, w)| w * (r.transpose() - &centre).norm_squared())
                .sum();
            (total, stats::effective_sample_size(w)?)
        }
        None => {
            let centre = states.row_mean().transpose();
            let total: f64 = states
                .row_iter()
                .map(|r| (r.transpose() - &centre).norm_squared())
                .sum::<f64>()
                / (n - 1) as f64;
            (total, n as f64)
        }
    };
    let se = (r_var / size).sqrt();
    let z = (estimate - truth_total) / se;
    let p_value: f64 =
        (2.0 * crate::stats::normal::normal_sf(z.abs())).min(1.0);
    let half = crate::stats::normal::normal_quantile(0.5 + level / 2.0) * se;
    let ratio = |v: f64| (v.max(0.0) / truth_total).sqrt();
    Ok(TestOutcome {
        test: "total_variance".into(),
        statistic: z,
        p_value,
        method: "normal(null variance from exact draws)".into(),
        n,
        ess: weights.map(|_| size),
        effect: Some(Effect {
            name: "sd_ratio".into(),
            estimate: ratio(estimate),
            ci_low: ratio(estimate - half),
            ci_high: ratio(estimate + half),
            level,
        }),
    })
}

/// `stop_time_sensitive` when some checkpoints have findings and others
/// do not.
fn stop_time_finding(
    checkpoints: &[CheckpointReport],
    findings: &[Finding],
) -> Option<Finding> {
    if checkpoints.len() < 2 {
        return None;
    }
    let verdicts: Vec<(f64, bool)> = checkpoints
        .iter()
        .map(|c| (c.t, findings.iter().any(|f| f.t == c.t)))
        .collect();
    let any_fail = verdicts.iter().any(|v| v.1);
    let any_pass = verdicts.iter().any(|v| !v.1);
    if !(any_fail && any_pass) {
        return None;
    }
    let first_change = verdicts.windows(2).find(|w| w[0].1 != w[1].1)?;
    let listing: Vec<String> = verdicts
        .iter()
        .map(|(t, fail)| {
            format!(
                "{}:{}",
                format_time(*t),
                if *fail { "fail" } else { "pass" }
            )
        })
        .collect();
    let p = findings.iter().map(|f| f.p_adjusted).fold(1.0, f64::min);
    Some(Finding {
        failure: Failure::StopTimeSensitive,
        t: first_change[1].0,
        location: "verdict along the checkpoints".into(),
        evidence: listing.join(" "),
        p_adjusted: p,
    })
}

/// The sampler's likelihood score against the exact one at 200 exact
/// draws of `p_t(x_t | y)`.
fn lens(
    truth: &Truth,
    problem: &crate::sampler::Problem<'_>,
    sampler: &dyn Sampler,
    t: f64,
    index: u64,
    seed: u64,
) -> Result<Option<crate::report::Lens>> {
    let points = 200;
    let xs = truth.sample_at(t, points, seed ^ (0xA5A5_5A5A ^ index));
    let Some(method) = sampler.likelihood_score(problem, &xs, t) else {
        return Ok(None);
    };
    let method = method?;
    let at = truth.at(t)?;
    let mut cosines = Vec::with_capacity(points);
    let mut ratios = Vec::with_capacity(points);
    for i in 0..points {
        let x = xs.row(i).transpose();
        let exact = at.likelihood_score(x.as_view());
        let approx = method.row(i).transpose();
        let (ne, na) = (exact.norm(), approx.norm());
        if ne > 0.0 && na > 0.0 {
            cosines.push(exact.dot(&approx) / (ne * na));
            ratios.push(na / ne);
        }
    }
    if ratios.is_empty() {
        return Ok(None);
    }
    ratios.sort_by(f64::total_cmp);
    let quantile =
        |q: f64| ratios[((q * (ratios.len() - 1) as f64).round()) as usize];
    Ok(Some(crate::report::Lens {
        points: ratios.len(),
        cosine_mean: cosines.iter().sum::<f64>() / cosines.len() as f64,
        norm_ratio_median: quantile(0.5),
        norm_ratio_range: [quantile(0.1), quantile(0.9)],
    }))
}
