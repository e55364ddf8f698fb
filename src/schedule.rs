//! Noise schedules in one parametrisation.
//!
//! Every schedule is a pair of functions of time `t` in one formula:
//!
//! ```text
//! x_t = alpha_t x0 + sigma_t eps,    eps ~ N(0, I_d)
//! SNR_t = alpha_t^2 / sigma_t^2,     log_snr(t) = log SNR_t
//! ve_sigma(t) = sigma_t / alpha_t    (the VE-equivalent noise level)
//! ```
//!
//! Time runs from data (small `t`) to noise (large `t`):
//! [`Schedule::time_range`] gives the meaningful domain and its upper end
//! is always the noise end. `log_snr` decreases strictly over the range,
//! which is what makes [`Schedule::time_for_ve_sigma`] well defined.
//! Outside the range the formulas are evaluated as written (discrete
//! schedules extend their end segments); nothing is clamped.
//!
//! The families, with the defaults of the papers that introduced them:
//!
//! | variant | alpha_t | sigma_t | t in |
//! |---|---|---|---|
//! | [`Schedule::VpLinear`] | `sqrt(abar(t))` | `sqrt(1 - abar(t))` | `[0,1]` |
//! | [`Schedule::DdpmLinear`] | same, discrete `abar_i` | same | `[0, 1]` |
//! | [`Schedule::DdpmCosine`] | same, discrete `abar_i` | same | `[0, 1]` |
//! | [`Schedule::VeGeometric`] | `1` | `smin (smax/smin)^t` | `[0,1]` |
//! | [`Schedule::Edm`] | `1` | `t` | `[0, smax]` |
//! | [`Schedule::RectifiedFlow`] | `1 - t` | `t` | `[0, 1]` |
//!
//! The forward SDE with the same marginals is
//!
//! ```text
//! dx = f_t x dt + g_t dW,
//! f_t   = d log(alpha_t) / dt,
//! g_t^2 = d(sigma_t^2)/dt - 2 f_t sigma_t^2
//! ```
//!
//! and [`Schedule::drift`] and [`Schedule::diffusion_squared`] return
//! `f_t` and `g_t^2` in closed form for every family.
//!
//! # Discrete schedules on continuous time
//!
//! The DDPM schedules are defined at steps `i = 0..=T` (`abar_0 = 1`). They
//! are exposed on `t in [0, 1]` with `t = i / T` at the discrete points and
//! `log abar` interpolated linearly in between, so the values at `t = i/T`
//! are exactly the published ones, `alpha` and `sigma` are continuous, and
//! the drift and diffusion are piecewise constant (on `((i-1)/T, i/T]` they
//! equal `f = T ln(1 - beta_i) / 2` and `g^2 = -T ln(1 - beta_i)`).
//! Evaluating a discrete schedule costs `O(T)` (the cumulative product is
//! recomputed rather than cached, which keeps the type plain data).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, ensure};

/// Largest number of discrete steps accepted; evaluation is `O(steps)`.
const MAX_STEPS: usize = 1_000_000;

/// A forward-noising schedule `x_t = alpha_t x0 + sigma_t eps`.
///
/// The serialised form is the case-file contract, for example
/// `{"type": "vp_linear", "beta_min": 0.01, "beta_max": 20.0}`; unknown
/// fields are rejected. Deserialising does not check values: call
/// [`Schedule::validate`] on anything read from a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Continuous variance-preserving schedule with a linear `beta(t)`
    /// (Song et al. 2021).
    ///
    /// ```text
    /// beta(t) = beta_min + t (beta_max - beta_min),   t in [0, 1]
    /// abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)
    /// alpha_t = sqrt(abar(t)),  sigma_t = sqrt(1 - abar(t))
    /// f_t = -beta(t) / 2,       g_t^2 = beta(t)
    /// ```
    ///
    /// `1 - abar` is computed with `expm1` so `sigma_t` keeps full relative
    /// precision near `t = 0`. Burns' code (the FSR paper) uses
    /// `beta_min = 0.01, beta_max = 20` ([`Schedule::vp_linear_default`]).
    VpLinear {
        /// `beta(0)`, positive.
        beta_min: f64,
        /// `beta(1)`, at least `beta_min`.
        beta_max: f64,
    },
    /// Discrete DDPM schedule with linearly spaced betas (Ho et al. 2020).
    ///
    /// ```text
    /// beta_i = beta_start + (i - 1)/(T - 1) (beta_end - beta_start),
    ///          i = 1..T   (beta_1 = beta_start when T = 1)
    /// abar_i = prod_{j <= i} (1 - beta_j),   abar_0 = 1,   t = i / T
    /// ```
    ///
    /// Defaults `1e-4, 0.02, 1000` as in the DDPM code (and the DiffPIR
    /// configs). Between grid points see the module docs.
    DdpmLinear {
        /// `beta_1`, in `(0, 1)`; default `1e-4`.
        #[serde(default = "default_beta_start")]
        beta_start: f64,
        /// `beta_T`, in `[beta_start, 1)`; default `0.02`.
        #[serde(default = "default_beta_end")]
        beta_end: f64,
        /// `T`, the number of steps; default 1000.
        #[serde(default = "default_steps")]
        steps: usize,
    },
    /// Discrete cosine schedule (Nichol & Dhariwal 2021).
    ///
    /// ```text
    /// f(u)   = cos^2(((u + s) / (1 + s)) pi / 2)
    /// beta_i = min(1 - f(i/T) / f((i-1)/T), 0.999),   i = 1..T
    /// abar_i = prod_{j <= i} (1 - beta_j),            t = i / T
    /// ```
    ///
    /// Defaults `s = 0.008, T = 1000` (the improved-DDPM code).
    DdpmCosine {
        /// Offset `s`, non-negative; default 0.008.
        #[serde(default = "default_cosine_s")]
        s: f64,
        /// `T`, the number of steps; default 1000.
        #[serde(default = "default_steps")]
        steps: usize,
    },
    /// Variance-exploding schedule with geometric noise levels (Song &
    /// Ermon 2019; Song et al. 2021).
    ///
    /// ```text
    /// alpha_t = 1,  sigma_t = sigma_min (sigma_max / sigma_min)^t,
    /// t in [0, 1];  f_t = 0,  g_t^2 = 2 sigma_t^2 ln(sigma_max/sigma_min)
    /// ```
    ///
    /// Note that `t = 0` is not noise-free: `sigma_0 = sigma_min > 0`.
    VeGeometric {
        /// `sigma_0`, positive.
        sigma_min: f64,
        /// `sigma_1`, greater than `sigma_min`.
        sigma_max: f64,
    },
    /// The EDM parametrisation (Karras et al. 2022): time is the noise
    /// level.
    ///
    /// ```text
    /// alpha_t = 1,  sigma_t = t,  t in [0, sigma_max]
    /// f_t = 0,      g_t^2 = 2 t
    /// ```
    ///
    /// `sigma_min` and `rho` describe the sampling grid, not the process:
    /// [`Schedule::default_t_min`] is `sigma_min` and
    /// [`Schedule::default_spacing`] is [`Spacing::Karras`] with this `rho`,
    /// so `grid(N - 1, sigma_min, sigma_max, Karras { rho })` is the EDM
    /// grid `sigma_0 > ... > sigma_{N-1}` (without the final `0`).
    /// Usual values `0.002, 80, 7` ([`Schedule::edm_default`]).
    Edm {
        /// Smallest noise level of the sampling grid, positive.
        sigma_min: f64,
        /// Largest noise level, greater than `sigma_min`.
        sigma_max: f64,
        /// Karras grid exponent, positive.
        rho: f64,
    },
    /// Rectified flow / linear interpolant (Liu et al. 2022).
    ///
    /// ```text
    /// alpha_t = 1 - t,  sigma_t = t,  t in [0, 1]
    /// f_t = -1 / (1 - t),  g_t^2 = 2 t / (1 - t)
    /// ```
    ///
    /// The drift is singular at `t = 1` (pure noise, `alpha = 0`). Many
    /// codebases put the data at `t = 1`; flip time when importing.
    RectifiedFlow {},
}

/// How [`Schedule::grid`] spaces its points between `t_max` and `t_min`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Spacing {
    /// Uniform in `t`.
    Uniform,
    /// Quadratic in `t`, dense near `t_min` (as DDIM's "quad" skip):
    ///
    /// ```text
    /// t_i = t_min + (t_max - t_min) (1 - i/N)^2
    /// ```
    Quadratic,
    /// Uniform in `log_snr(t)` (the DPM-Solver "logSNR" spacing).
    LogSnr,
    /// The Karras et al. (2022) rho-spacing, applied to the VE-equivalent
    /// noise `s = sigma/alpha` and mapped back to time:
    ///
    /// ```text
    /// s_i = (s_max^(1/rho) + i/N (s_min^(1/rho) - s_max^(1/rho)))^rho
    /// t_i = time_for_ve_sigma(s_i)
    /// ```
    Karras {
        /// The exponent `rho` (7 in EDM).
        rho: f64,
    },
}

fn default_beta_start() -> f64 {
    1e-4
}

fn default_beta_end() -> f64 {
    0.02
}

fn default_steps() -> usize {
    1000
}

fn default_cosine_s() -> f64 {
    0.008
}

/// `log abar` of a variance-preserving schedule and its time derivative.
#[derive(Clone, Copy, Debug)]
struct LogAlphaBar {
    value: f64,
    slope: f64,
}

impl Schedule {
    /// The continuous VP schedule of Burns' code (the FSR paper),
    /// `beta_min = 0.01, beta_max = 20` (`src/sde/vp.py`).
    pub fn vp_linear_default() -> Schedule {
        Schedule::VpLinear { beta_min: 0.01, beta_max: 20.0 }
    }

    /// The DDPM linear schedule of Ho et al. (2020):
    /// `beta_start = 1e-4, beta_end = 0.02, steps = 1000`.
    pub fn ddpm_linear_default() -> Schedule {
        Schedule::DdpmLinear {
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
            steps: default_steps(),
        }
    }

    /// The cosine schedule of Nichol & Dhariwal (2021):
    /// `s = 0.008, steps = 1000`.
    pub fn ddpm_cosine_default() -> Schedule {
        Schedule::DdpmCosine { s: default_cosine_s(), steps: default_steps() }
    }

    /// The EDM settings of Karras et al. (2022):
    /// `sigma_min = 0.002, sigma_max = 80, rho = 7` (the paper's own sampler;
    /// DAPS' "poly-7" scheduler uses the same grid).
    pub fn edm_default() -> Schedule {
        Schedule::Edm { sigma_min: 0.002, sigma_max: 80.0, rho: 7.0 }
    }

    /// Checks that every parameter is finite and in range.
    ///
    /// # Errors
    ///
    /// An [`crate::ErrorKind::InvalidInput`] error naming the field and
    /// its value, for example `schedule.beta_max must be positive, got -1`.
    pub fn validate(&self) -> Result<()> {
        // Float comparisons go through a binding because `ensure!` negates
        // its condition, which clippy rejects for a bare partial order.
        match *self {
            Schedule::VpLinear { beta_min, beta_max } => {
                positive("beta_min", beta_min)?;
                positive("beta_max", beta_max)?;
                let in_order = beta_min <= beta_max;
                ensure!(
                    in_order,
                    "schedule.beta_max must be at least beta_min \
                     {beta_min}, got {beta_max}"
                );
            }
            Schedule::DdpmLinear { beta_start, beta_end, steps } => {
                positive("beta_start", beta_start)?;
                positive("beta_end", beta_end)?;
                let in_order = beta_end < 1.0;
                ensure!(
                    in_order,
                    "schedule.beta_end must be less than 1, got {beta_end}"
                );
                let in_order = beta_start <= beta_end;
                ensure!(
                    in_order,
                    "schedule.beta_end must be at least beta_start \
                     {beta_start}, got {beta_end}"
                );
                check_steps(steps)?;
            }
            Schedule::DdpmCosine { s, steps } => {
                ensure!(
                    s.is_finite() && s >= 0.0,
                    "schedule.s must be non-negative, got {s}"
                );
                check_steps(steps)?;
            }
            Schedule::VeGeometric { sigma_min, sigma_max } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                let in_order = sigma_min < sigma_max;
                ensure!(
                    in_order,
                    "schedule.sigma_max must be greater than sigma_min \
                     {sigma_min}, got {sigma_max}"
                );
            }
            Schedule::Edm { sigma_min, sigma_max, rho } => {
                positive("sigma_min", sigma_min)?;
                positive("sigma_max", sigma_max)?;
                positive("rho", rho)?;
                let in_order = sigma_min < sigma_max;
                ensure!(
                    in_order,
                    "schedule.sigma_max must be greater than sigma_min \
                     {sigma_min}, got {sigma_max}"
                );
            }
            Schedule::RectifiedFlow {} => {}
        }
        Ok(())
    }

    /// The meaningful time domain `(t_lo, t_hi)`; `t_hi` is the noise end.
    ///
    /// ```text
    /// VP, DDPM, VE, rectified flow: (0, 1)      EDM: (0, sigma_max)
    /// ```
    ///
    /// At `t_lo` every schedule except VE is noise-free (`sigma = 0`); VE
    /// has `sigma = sigma_min` there. Rectified flow has `alpha = 0` at
    /// `t_hi`, where its drift and `ve_sigma` are infinite.
    pub fn time_range(&self) -> (f64, f64) {
        match *self {
            Schedule::Edm { sigma_max, .. } => (0.0, sigma_max),
            _ => (0.0, 1.0),
        }
    }

    /// The smallest time a sampler should step to by default (early
    /// stopping).
    ///
    /// ```text
    /// VP, rectified flow: 1e-3     DDPM: 1/T (the first discrete step)
    /// VE: 0 (sigma_min > 0 already) EDM: sigma_min
    /// ```
    pub fn default_t_min(&self) -> f64 {
        match *self {
            Schedule::VpLinear { .. } | Schedule::RectifiedFlow {} => 1e-3,
            Schedule::DdpmLinear { steps, .. }
            | Schedule::DdpmCosine { steps, .. } => 1.0 / steps as f64,
            Schedule::VeGeometric { .. } => 0.0,
            Schedule::Edm { sigma_min, .. } => sigma_min,
        }
    }

    /// The spacing a sampler should use by default: [`Spacing::Karras`]
    /// with the schedule's `rho` for EDM, [`Spacing::Uniform`] otherwise.
    pub fn default_spacing(&self) -> Spacing {
        match *self {
            Schedule::Edm { rho, .. } => Spacing::Karras { rho },
            _ => Spacing::Uniform,
        }
    }

    /// The signal scale `alpha_t`.
    pub fn alpha(&self, t: f64) -> f64 {
        self.alpha_sigma(t).0
    }

    /// The noise scale `sigma_t`.
    pub fn sigma(&self, t: f64) -> f64 {
        self.alpha_sigma(t).1
    }

    /// Both scales `(alpha_t, sigma_t)` at once (one evaluation of a
    /// discrete schedule instead of two).
    ///
    /// ```text
    /// VP-type: alpha = exp(L/2), sigma = sqrt(-expm1(L)), L = log abar(t)
    /// ```
    pub fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        if let Some(lab) = self.log_alpha_bar(t) {
            return ((0.5 * lab.value).exp(), (-lab.value.exp_m1()).sqrt());
        }
        match *self {
            Schedule::VeGeometric { sigma_min, sigma_max } => {
                (1.0, sigma_min * (sigma_max / sigma_min).powf(t))
            }
            Schedule::Edm { .. } => (1.0, t),
            Schedule::RectifiedFlow {} => (1.0 - t, t),
            _ => unreachable!("variance-preserving handled above"),
        }
    }

    /// The time derivatives `(d alpha_t/dt, d sigma_t/dt)`.
    ///
    /// ```text
    /// VP-type: alpha' = alpha L'/2,  sigma' = -abar L' / (2 sigma)
    /// VE: (0, sigma ln(smax/smin))   EDM: (0, 1)   RF: (-1, 1)
    /// ```
    ///
    /// For VP-type schedules `sigma'` is infinite at `t = 0`.
    pub fn alpha_sigma_dot(&self, t: f64) -> (f64, f64) {
        if let Some(lab) = self.log_alpha_bar(t) {
            let (alpha, sigma) = self.alpha_sigma(t);
            let abar = lab.value.exp();
            return (0.5 * alpha * lab.slope, -0.5 * abar * lab.slope / sigma);
        }
        match *self {
            Schedule::VeGeometric { sigma_min, sigma_max } => {
                (0.0, self.sigma(t) * (sigma_max / sigma_min).ln())
            }
            Schedule::Edm { .. } => (0.0, 1.0),
            Schedule::RectifiedFlow {} => (-1.0, 1.0),
            _ => unreachable!("variance-preserving handled above"),
        }
    }

    /// `d alpha_t / dt`; see [`Schedule::alpha_sigma_dot`].
    pub fn alpha_dot(&self, t: f64) -> f64 {
        self.alpha_sigma_dot(t).0
    }

    /// `d sigma_t / dt`; see [`Schedule::alpha_sigma_dot`].
    pub fn sigma_dot(&self, t: f64) -> f64 {
        self.alpha_sigma_dot(t).1
    }

    /// The VE-equivalent noise level `sigma_t / alpha_t` (used by DDRM,
    /// DiffPIR and DMPS).
    ///
    /// ```text
    /// VP-type: sqrt(expm1(-L)),  L = log abar(t)
    /// ```
    pub fn ve_sigma(&self, t: f64) -> f64 {
        if let Some(lab) = self.log_alpha_bar(t) {
            return (-lab.value).exp_m1().sqrt();
        }
        let (alpha, sigma) = self.alpha_sigma(t);
        sigma / alpha
    }

    /// The log signal-to-noise ratio `log(alpha_t^2 / sigma_t^2)`,
    /// `-2 ln ve_sigma(t)`; strictly decreasing in `t`.
    ///
    /// ```text
    /// VP-type: -ln(expm1(-L))    VE, EDM: -2 ln sigma_t
    /// RF: 2 ln((1 - t) / t)
    /// ```
    pub fn log_snr(&self, t: f64) -> f64 {
        if let Some(lab) = self.log_alpha_bar(t) {
            return -(-lab.value).exp_m1().ln();
        }
        match *self {
            Schedule::RectifiedFlow {} => 2.0 * ((1.0 - t) / t).ln(),
            _ => -2.0 * self.sigma(t).ln(),
        }
    }

    /// The drift coefficient `f_t = d log(alpha_t)/dt` of the forward SDE
    /// `dx = f_t x dt + g_t dW` with the schedule's marginals.
    ///
    /// ```text
    /// VP-type: L'/2 (= -beta(t)/2)   VE, EDM: 0   RF: -1/(1 - t)
    /// ```
    pub fn drift(&self, t: f64) -> f64 {
        if let Some(lab) = self.log_alpha_bar(t) {
            return 0.5 * lab.slope;
        }
        match *self {
            Schedule::RectifiedFlow {} => -1.0 / (1.0 - t),
            _ => 0.0,
        }
    }

    /// The squared diffusion coefficient of the forward SDE,
    /// `g_t^2 = d(sigma_t^2)/dt - 2 f_t sigma_t^2`.
    ///
    /// ```text
    /// VP-type: -L' (= beta(t))   VE: 2 sigma_t^2 ln(smax/smin)
    /// EDM: 2t                    RF: 2t / (1 - t)
    /// ```
    pub fn diffusion_squared(&self, t: f64) -> f64 {
        if let Some(lab) = self.log_alpha_bar(t) {
            return -lab.slope;
        }
        match *self {
            Schedule::VeGeometric { sigma_min, sigma_max } => {
                2.0 * self.sigma(t).powi(2) * (sigma_max / sigma_min).ln()
            }
            Schedule::Edm { .. } => 2.0 * t,
            Schedule::RectifiedFlow {} => 2.0 * t / (1.0 - t),
            _ => unreachable!("variance-preserving handled above"),
        }
    }

    /// The time at which `ve_sigma(t) = s`, the inverse of
    /// [`Schedule::ve_sigma`] on [`Schedule::time_range`].
    ///
    /// Closed form for every family (for the DDPM schedules the
    /// interpolated `log abar` is inverted segment by segment):
    ///
    /// ```text
    /// VP linear: t = 2c / (bmin + sqrt(bmin^2 + 2 (bmax - bmin) c)),
    ///            c = ln(1 + s^2)
    /// VE: ln(s/smin) / ln(smax/smin)   EDM: s   RF: s / (1 + s)
    /// ```
    ///
    /// # Errors
    ///
    /// An [`crate::ErrorKind::InvalidInput`] error when `s` is not finite
    /// or lies outside `[ve_sigma(t_lo), ve_sigma(t_hi)]`.
    pub fn time_for_ve_sigma(&self, s: f64) -> Result<f64> {
        let (t_lo, t_hi) = self.time_range();
        let (s_lo, s_hi) = (self.ve_sigma(t_lo), self.ve_sigma(t_hi));
        ensure!(
            s.is_finite() && s >= s_lo && s <= s_hi,
            "ve_sigma must be in [{s_lo}, {s_hi}], got {s}"
        );

        let t = match *self {
            Schedule::VpLinear { beta_min, beta_max } => {
                // Solve (bmax - bmin)/2 t^2 + bmin t = c in the form that
                // does not cancel when bmax = bmin.
                let c = (s * s).ln_1p();
                let root = (beta_min * beta_min
                    + 2.0 * (beta_max - beta_min) * c)
                    .sqrt();
                2.0 * c / (beta_min + root)
            }
            Schedule::DdpmLinear { steps, .. }
            | Schedule::DdpmCosine { steps, .. } => {
                let target = -(s * s).ln_1p();
                let mut log_abar = 0.0;
                let mut found = 1.0;
                for (i, log_keep) in self.discrete_log_keeps().enumerate() {
                    let next = log_abar + log_keep;
                    if next <= target {
                        let frac = (target - log_abar) / log_keep;
                        found = (i as f64 + frac) / steps as f64;
                        break;
                    }
                    log_abar = next;
                }
                found
            }
            Schedule::VeGeometric { sigma_min, sigma_max } => {
                (s / sigma_min).ln() / (sigma_max / sigma_min).ln()
            }
            Schedule::Edm { .. } => s,
            Schedule::RectifiedFlow {} => s / (1.0 + s),
        };
        Ok(t.clamp(t_lo, t_hi))
    }

    /// A decreasing time grid of `steps + 1` points from `t_max` down to
    /// `t_min`, both included exactly, spaced as `spacing` says.
    ///
    /// ```text
    /// Uniform:   t_i = t_max - i/N (t_max - t_min)
    /// Quadratic: t_i = t_min + (t_max - t_min) (1 - i/N)^2
    /// LogSnr:    log_snr(t_i) = l(t_max) + i/N (l(t_min) - l(t_max))
    /// Karras:    ve_sigma(t_i) = (a + i/N (b - a))^rho,
    ///            a = ve_sigma(t_max)^(1/rho), b = ve_sigma(t_min)^(1/rho)
    /// ```
    ///
    /// For [`Schedule::Edm`], `grid(N - 1, sigma_min, sigma_max,
    /// Karras { rho })` is the EDM grid `sigma_0..sigma_{N-1}`; append the
    /// final `0` yourself if the sampler needs it.
    ///
    /// # Errors
    ///
    /// An [`crate::ErrorKind::InvalidInput`] error when `steps` is zero,
    /// when `t_min < t_max` fails or either lies outside
    /// [`Schedule::time_range`], when `rho` is not positive, or when
    /// [`Spacing::LogSnr`] meets an infinite log-SNR at an endpoint.
    pub fn grid(
        &self,
        steps: usize,
        t_min: f64,
        t_max: f64,
        spacing: Spacing,
    ) -> Result<Vec<f64>> {
        let (t_lo, t_hi) = self.time_range();
        ensure!(steps >= 1, "grid steps must be at least 1, got {steps}");
        ensure!(
            t_min.is_finite() && t_min >= t_lo,
            "grid t_min must be at least {t_lo}, got {t_min}"
        );
        ensure!(
            t_max.is_finite() && t_max <= t_hi,
            "grid t_max must be at most {t_hi}, got {t_max}"
        );
        let in_order = t_min < t_max;
        ensure!(
            in_order,
            "grid t_max must be greater than t_min {t_min}, got {t_max}"
        );

        // Interior points from the spacing rule; the endpoints are set
        // exactly afterwards so round-off never moves them.
        let n = steps as f64;
        let mut times = Vec::with_capacity(steps + 1);
        match spacing {
            Spacing::Uniform => {
                for i in 0..=steps {
                    times.push(t_max - (i as f64 / n) * (t_max - t_min));
                }
            }
            Spacing::Quadratic => {
                for i in 0..=steps {
                    let u = 1.0 - i as f64 / n;
                    times.push(t_min + (t_max - t_min) * u * u);
                }
            }
            Spacing::LogSnr => {
                let (l_lo, l_hi) = (self.log_snr(t_max), self.log_snr(t_min));
                ensure!(
                    l_lo.is_finite() && l_hi.is_finite(),
                    "log-snr grid needs finite log_snr at t_min {t_min} \
                     and t_max {t_max}, got {l_hi} and {l_lo}"
                );
                // The ends are t_max and t_min themselves: inverting their
                // rounded noise levels can land an ulp outside the range.
                times.push(t_max);
                for i in 1..steps {
                    let l = l_lo + (i as f64 / n) * (l_hi - l_lo);
                    times.push(self.time_for_ve_sigma((-0.5 * l).exp())?);
                }
                times.push(t_min);
            }
            Spacing::Karras { rho } => {
                ensure!(
                    rho.is_finite() && rho > 0.0,
                    "grid rho must be positive, got {rho}"
                );
                let a = self.ve_sigma(t_max).powf(1.0 / rho);
                let b = self.ve_sigma(t_min).powf(1.0 / rho);
                ensure!(
                    a.is_finite(),
                    "karras grid needs a finite ve_sigma at t_max {t_max}"
                );
                times.push(t_max);
                for i in 1..steps {
                    let s = (a + (i as f64 / n) * (b - a)).powf(rho);
                    times.push(self.time_for_ve_sigma(s)?);
                }
                times.push(t_min);
            }
        }
        times[0] = t_max;
        times[steps] = t_min;
        Ok(times)
    }

    /// The discrete betas `beta_1..beta_T` of a DDPM schedule, `None` for
    /// the continuous families.
    pub fn discrete_betas(&self) -> Option<Vec<f64>> {
        match self {
            Schedule::DdpmLinear { .. } | Schedule::DdpmCosine { .. } => {
                Some(self.discrete_log_keeps().map(|l| -l.exp_m1()).collect())
            }
            _ => None,
        }
    }

    /// `ln(1 - beta_i)` for `i = 1..T` of a discrete schedule (empty for
    /// the others).
    fn discrete_log_keeps(&self) -> impl Iterator<Item = f64> + '_ {
        let steps = match *self {
            Schedule::DdpmLinear { steps, .. }
            | Schedule::DdpmCosine { steps, .. } => steps,
            _ => 0,
        };
        (1..=steps).map(move |i| match *self {
            Schedule::DdpmLinear { beta_start, beta_end, steps } => {
                let frac = if steps == 1 {
                    0.0
                } else {
                    (i - 1) as f64 / (steps - 1) as f64
                };
                (-(beta_start + frac * (beta_end - beta_start))).ln_1p()
            }
            Schedule::DdpmCosine { s, steps } => {
                let f = |u: f64| {
                    let c = ((u + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                        .cos();
                    c * c
                };
                let t = steps as f64;
                let beta =
                    (1.0 - f(i as f64 / t) / f((i - 1) as f64 / t)).min(0.999);
                (-beta).ln_1p()
            }
            _ => unreachable!("only discrete schedules have steps"),
        })
    }

    /// `log abar(t)` and its derivative for the variance-preserving
    /// families, `None` for the others.
    fn log_alpha_bar(&self, t: f64) -> Option<LogAlphaBar> {
        match *self {
            Schedule::VpLinear { beta_min, beta_max } => {
                let width = beta_max - beta_min;
                Some(LogAlphaBar {
                    value: -beta_min * t - 0.5 * width * t * t,
                    slope: -(beta_min + width * t),
                })
            }
            Schedule::DdpmLinear { steps, .. }
            | Schedule::DdpmCosine { steps, .. } => {
                // Segment k covers ((k-1)/T, k/T]; outside [0, 1] the end
                // segments extend linearly.
                let scaled = t * steps as f64;
                let segment = (scaled.ceil() as usize).clamp(1, steps);
                let mut value = 0.0;
                let mut slope = 0.0;
                for (i, log_keep) in
                    self.discrete_log_keeps().take(segment).enumerate()
                {
                    if i + 1 < segment {
                        value += log_keep;
                    } else {
                        value += (scaled - i as f64) * log_keep;
                        slope = steps as f64 * log_keep;
                    }
                }
                Some(LogAlphaBar { value, slope })
            }
            _ => None,
        }
    }
}

fn positive(field: &str, value: f64) -> Result<()> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "schedule.{field} must be positive, got {value}"
        )))
    }
}

fn check_steps(steps: usize) -> Result<()> {
    ensure!(
        (1..=MAX_STEPS).contains(&steps),
        "schedule.steps must be in 1..={MAX_STEPS}, got {steps}"
    );
    Ok(())
}

#[cfg(test)]
mod tests;
