//! Audit reports: serde types, human text, Markdown and a rounded snapshot
//! view.
//!
//! A [`Report`] holds everything an audit measured: the case, the sampler
//! and its settings, the seed and particle count, and per checkpoint the
//! spread ratios with their confidence intervals, the test outcomes with
//! raw and Holm-adjusted p-values, the mode occupancy (expected against
//! observed shares), the unsupported mass, and the findings with their
//! evidence. `schema_version` changes whenever a field changes meaning.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::TestOutcome;

/// The version of the report schema.
pub const SCHEMA_VERSION: u32 = 1;

/// A failure the audit can name, in the words used everywhere.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// Particles are under-dispersed relative to `p_t(x_t | y)`.
    SpreadTooNarrow,
    /// Particles are over-dispersed relative to `p_t(x_t | y)`.
    SpreadTooWide,
    /// Posterior modes get the wrong share of particles.
    ModeMisweighted,
    /// Mass where the posterior has none.
    UnsupportedMode,
    /// The verdict changes with the time at which sampling stops.
    StopTimeSensitive,
}

impl Failure {
    /// The failure's name (`spread_too_narrow`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Failure::SpreadTooNarrow => "spread_too_narrow",
            Failure::SpreadTooWide => "spread_too_wide",
            Failure::ModeMisweighted => "mode_misweighted",
            Failure::UnsupportedMode => "unsupported_mode",
            Failure::StopTimeSensitive => "stop_time_sensitive",
        }
    }
}

/// One finding: a failure at a time, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The failure.
    pub failure: Failure,
    /// The checkpoint time (`NaN`-free; the final particles use their
    /// `final_time`).
    pub t: f64,
    /// Where it shows: a direction, a cell, or a kind of unsupported mass.
    pub location: String,
    /// The numbers behind it, in one line.
    pub evidence: String,
    /// The Holm-adjusted p-value of the deciding test.
    pub p_adjusted: f64,
}

/// The spread along one direction (or of the total variance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// `principal_1`, `range_1`, `null_1`, `random_1`, `total`, ...
    pub direction: String,
    /// The ratio of particle to true standard deviation along it.
    pub sd_ratio: f64,
    /// Confidence interval of the ratio, at the report's level.
    pub ci: [f64; 2],
    /// The test of equal spread.
    pub test: TestOutcome,
    /// Holm-adjusted p-value within the audit's family.
    pub p_adjusted: f64,
}

/// An omnibus test on a projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Omnibus {
    /// The direction.
    pub direction: String,
    /// The outcome.
    pub test: TestOutcome,
    /// Holm-adjusted p-value within the audit's family.
    pub p_adjusted: f64,
}

/// One cell of the mode occupancy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Component index (or `other` for merged small cells).
    pub label: String,
    /// Share of exact draws of the target that land in the cell.
    pub expected: f64,
    /// Share of the particles that land in it.
    pub observed: f64,
    /// Confidence interval of the observed share.
    pub ci: [f64; 2],
}

/// Mode occupancy at a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Occupancy {
    /// The cells, heaviest expected first, small ones merged.
    pub cells: Vec<Cell>,
    /// The goodness-of-fit test of the counts.
    pub test: TestOutcome,
    /// Holm-adjusted p-value within the audit's family.
    pub p_adjusted: f64,
}

/// Mass in a region the posterior (nearly) does not support.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unsupported {
    /// `ruled_out_prior_mode`, `low_density` or `off_training_set`.
    pub kind: String,
    /// The region's mass under the target (by exact draws).
    pub expected: f64,
    /// The particles' share in it.
    pub observed: f64,
    /// Confidence interval of the observed share.
    pub ci: [f64; 2],
    /// One-sided binomial test for excess mass.
    pub test: TestOutcome,
    /// Holm-adjusted p-value within the audit's family.
    pub p_adjusted: f64,
}

/// Everything measured at one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The time.
    pub t: f64,
    /// `alpha_t`.
    pub alpha: f64,
    /// `sigma_t`.
    pub sigma: f64,
    /// `trajectory` or `final`.
    pub role: String,
    /// The law the particles are tested against: `p_t(x_t|y)` or
    /// `p(x0|y)`.
    pub target: String,
    /// Spread along each direction and of the total variance.
    pub spread: Vec<Spread>,
    /// Omnibus tests on projections (KS, Anderson-Darling).
    pub omnibus: Vec<Omnibus>,
    /// Mode occupancy, when there are at least two cells.
    pub occupancy: Option<Occupancy>,
    /// Unsupported mass.
    pub unsupported: Vec<Unsupported>,
    /// Sliced Wasserstein-1 distance to exact draws (an effect size).
    pub sliced_wasserstein: Option<f64>,
    /// The sampler's likelihood score against the exact one at exact
    /// draws, for samplers that expose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lens: Option<Lens>,
}

/// The sampler-free lens: the method's approximation of
/// `grad log p(y | x_t)` against the exact likelihood score, at exact
/// draws of `p_t(x_t | y)`. It explains findings; it decides none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Lens {
    /// Number of exact draws.
    pub points: usize,
    /// Mean cosine between the method's and the exact score.
    pub cosine_mean: f64,
    /// Median of |method| / |exact|: above 1 the likelihood is
    /// over-weighted (too sharp), below 1 under-weighted (too flat).
    pub norm_ratio_median: f64,
    /// 10% and 90% quantiles of the norm ratio.
    pub norm_ratio_range: [f64; 2],
}

/// The result of one audit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The case name.
    pub case: String,
    /// The sampler's registry name.
    pub sampler: String,
    /// The sampler's effective settings.
    pub settings: BTreeMap<String, String>,
    /// The run seed.
    pub seed: u64,
    /// The number of particles.
    pub num_particles: usize,
    /// Kish's effective sample size of the final particles, when weighted.
    pub effective_sample_size: Option<f64>,
    /// The family-wise false-alarm rate of the audit.
    pub fwer: f64,
    /// The band of standard-deviation ratios that counts as right.
    pub spread_band: [f64; 2],
    /// Per checkpoint, in decreasing time; the final particles last.
    pub checkpoints: Vec<CheckpointReport>,
    /// The findings.
    pub findings: Vec<Finding>,
    /// Remarks on what was and was not tested.
    pub notes: Vec<String>,
    /// A command line that replays the audit.
    pub replay: String,
}

impl Report {
    /// Whether the audit found nothing.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// The distinct failures found, in a stable order.
    pub fn failures(&self) -> Vec<Failure> {
        let mut f: Vec<Failure> =
            self.findings.iter().map(|f| f.failure).collect();
        f.sort();
        f.dedup();
        f
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serialises")
    }

    /// A copy with every number rounded to what the tests guarantee
    /// (3 significant digits; p-values to their order of magnitude), for
    /// snapshots that stay stable across platforms.
    pub fn snapshot_view(&self) -> serde_json::Value {
        let mut value =
            serde_json::to_value(self).expect("a report serialises");
        round_numbers(&mut value, None);
        value
    }

    /// Human-readable text: a verdict line, the findings, then a compact
    /// table per checkpoint.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let ess = self
            .effective_sample_size
            .map(|e| format!(", effective sample size {e:.1}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{verdict}  {} on {}  ({} particles{ess}, seed {}, family-wise \
             false-alarm rate {})",
            self.sampler_spec(),
            self.case,
            self.num_particles,
            self.seed,
            self.fwer
        );
        for f in &self.findings {
            let _ = writeln!(
                s,
                "  {:<20} t = {:<8} {:<22} {}  (adjusted p = {:.2e})",
                f.failure.name(),
                format_time(f.t),
                f.location,
                f.evidence,
                f.p_adjusted
            );
        }
        for c in &self.checkpoints {
            let _ = writeln!(
                s,
                "\n  t = {} ({}, against {}; alpha {:.4}, sigma {:.4})",
                format_time(c.t),
                c.role,
                c.target,
                c.alpha,
                c.sigma
            );
            for sp in &c.spread {
                let _ = writeln!(
                    s,
                    "    spread {:<12} sd ratio {:.3} [{:.3}, {:.3}]  p_adj {:.2e}",
                    sp.direction,
                    sp.sd_ratio,
                    sp.ci[0],
                    sp.ci[1],
                    sp.p_adjusted
                );
            }
            if let Some(o) = &c.occupancy {
                let cells: Vec<String> = o
                    .cells
                    .iter()
                    .map(|cell| {
                        format!(
                            "{} {:.3}/{:.3}",
                            cell.label, cell.observed, cell.expected
                        )
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "    modes (observed/expected) {}  p_adj {:.2e}",
                    cells.join(", "),
                    o.p_adjusted
                );
            }
            for u in &c.unsupported {
                let _ = writeln!(
                    s,
                    "    unsupported {:<20} {:.4} (expected {:.4})  p_adj {:.2e}",
                    u.kind, u.observed, u.expected, u.p_adjusted
                );
            }
            for o in &c.omnibus {
                let _ = writeln!(
                    s,
                    "    {:<18} {:<12} stat {:.4}  p_adj {:.2e}",
                    o.test.test, o.direction, o.test.statistic, o.p_adjusted
                );
            }
            if let Some(lens) = &c.lens {
                let _ = writeln!(
                    s,
                    "    lens: likelihood score cosine {:.3}, norm ratio {:.3} \
                     [{:.3}, {:.3}] over {} exact draws",
                    lens.cosine_mean,
                    lens.norm_ratio_median,
                    lens.norm_ratio_range[0],
                    lens.norm_ratio_range[1],
                    lens.points
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(s, "  note: {note}");
        }
        let _ = writeln!(s, "  replay: {}", self.replay);
        s
    }

    /// Markdown, sized for a CI job summary.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed() { "✅ pass" } else { "❌ fail" };
        let _ = writeln!(
            s,
            "### `{}` on `{}`: {verdict}\n\n{} particles, seed {}, \
             family-wise false-alarm rate {}, spread band [{:.3}, {:.3}].\n",
            self.sampler_spec(),
            self.case,
            self.num_particles,
            self.seed,
            self.fwer,
            self.spread_band[0],
            self.spread_band[1]
        );
        if !self.findings.is_empty() {
            s += "| failure | t | where | evidence | adjusted p |\n\
                  |---|---|---|---|---|\n";
            for f in &self.findings {
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {} | {} | {:.2e} |",
                    f.failure.name(),
                    format_time(f.t),
                    markdown_cell(&f.location),
                    markdown_cell(&f.evidence),
                    f.p_adjusted
                );
            }
            s += "\n";
        }
        s += "| t | target | spread (sd ratio, worst direction) | modes p_adj | unsupported (obs/exp) |\n\
              |---|---|---|---|---|\n";
        for c in &self.checkpoints {
            let worst = c
                .spread
                .iter()
                .max_by(|a, b| {
                    (a.sd_ratio.ln().abs()).total_cmp(&b.sd_ratio.ln().abs())
                })
                .map(|sp| format!("{:.3} ({})", sp.sd_ratio, sp.direction))
                .unwrap_or_else(|| "-".into());
            let modes = c
                .occupancy
                .as_ref()
                .map(|o| format!("{:.2e}", o.p_adjusted))
                .unwrap_or_else(|| "-".into());
            let unsupported: Vec<String> = c
                .unsupported
                .iter()
                .map(|u| format!("{:.3}/{:.3}", u.observed, u.expected))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {worst} | {modes} | {} |",
                format_time(c.t),
                markdown_cell(&c.target),
                if unsupported.is_empty() {
                    "-".into()
                } else {
                    unsupported.join(", ")
                }
            );
        }
        let _ = writeln!(s, "\nReplay: `{}`", self.replay);
        s
    }

    /// `name:key=value,...`.
    pub fn sampler_spec(&self) -> String {
        sampler_spec(&self.sampler, &self.settings)
    }
}

/// A sampler and its settings as `name:key=value,...`, the form the
/// sampler registry and the command line read.
pub fn sampler_spec(name: &str, settings: &BTreeMap<String, String>) -> String {
    if settings.is_empty() {
        return name.to_string();
    }
    let settings: Vec<String> =
        settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}:{}", settings.join(","))
}

/// `text` made safe for a Markdown table cell: a `|` (as in `p(y|x_t)`)
/// would end the cell, so it is escaped.
pub fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// A time printed compactly and exactly enough to identify a checkpoint.
pub fn format_time(t: f64) -> String {
    let s = format!("{t:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" { "0".into() } else { s.to_string() }
}

fn round_numbers(value: &mut serde_json::Value, key: Option<&str>) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|_| !n.is_u64() && !n.is_i64()) {
                let is_p = key.is_some_and(|k| k.starts_with("p_"));
                let rounded = if is_p { round_p(x) } else { round_sig(x, 3) };
                if let Some(r) = serde_json::Number::from_f64(rounded) {
                    *n = r;
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                round_numbers(item, key);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                round_numbers(v, Some(k));
            }
        }
        _ => {}
    }
}

/// Rounds to `digits` significant digits.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// A p-value reduced to its decade (p >= 0.1 to one digit).
fn round_p(p: f64) -> f64 {
    if p >= 0.1 || p == 0.0 {
        return round_sig(p, 1);
    }
    // Parsed from its decimal form, so the value prints the same way
    // everywhere (`10f64.powi(-30)` is not the double nearest 1e-30).
    format!("1e{}", p.log10().floor() as i32).parse().unwrap_or(p)
}
