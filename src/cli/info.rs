//! What is built in and what is exact: `cases`, `samplers`, `truth`.

use std::collections::BTreeMap;

use posterior_lens::case::Case;
use posterior_lens::mixture::{Covariances, Mixture};
use posterior_lens::report::markdown_cell;
use posterior_lens::sampler::{self, SamplerKind};
use posterior_lens::truth::Truth;
use posterior_lens::{Error, ErrorKind};
use serde_json::json;

use super::counted;
use crate::Format;

/// `samplers`: every registered sampler with its kind, its summary and
/// its settings at their defaults (what `sampler::build(name)` gives).
pub fn samplers(format: Format) -> Result<String, Error> {
    let entries = sampler::registry();
    let mut defaults = Vec::new();
    for e in &entries {
        defaults.push(sampler::build(e.name)?.settings());
    }
    let listed = |settings: &BTreeMap<String, String>| -> String {
        if settings.is_empty() {
            return "none".into();
        }
        let items: Vec<String> =
            settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        items.join(", ")
    };
    Ok(match format {
        Format::Json => {
            let items: Vec<_> = entries
                .iter()
                .zip(&defaults)
                .map(|(e, settings)| {
                    json!({
                        "name": e.name,
                        "kind": kind_name(e.kind),
                        "summary": e.summary,
                        "settings": settings,
                    })
                })
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&items).unwrap())
        }
        Format::Markdown => {
            let mut s = String::from(
                "| sampler | kind | summary | settings (defaults) |\n\
                 |---|---|---|---|\n",
            );
            for (e, settings) in entries.iter().zip(&defaults) {
                s += &format!(
                    "| `{}` | {} | {} | {} |\n",
                    e.name,
                    kind_name(e.kind),
                    markdown_cell(e.summary),
                    markdown_cell(&listed(settings))
                );
            }
            s
        }
        Format::Human => {
            let mut s = String::new();
            for (e, settings) in entries.iter().zip(&defaults) {
                s += &format!(
                    "{:<24} {:<11} {}\n{:<24} settings: {}\n",
                    e.name,
                    kind_name(e.kind),
                    e.summary,
                    "",
                    listed(settings)
                );
            }
            s
        }
    })
}

/// The sampler kind as printed: `reference`, `under_test`, `broken`.
pub fn kind_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Reference => "reference",
        SamplerKind::UnderTest => "under_test",
        SamplerKind::Broken => "broken",
    }
}

/// `cases`: the built-in cases, one line each.
pub fn cases(format: Format) -> Result<String, Error> {
    let mut cases = Vec::new();
    for name in Case::builtin_names() {
        cases.push(Case::builtin(name)?);
    }
    Ok(match format {
        Format::Json => {
            let items: Vec<_> = cases
                .iter()
                .map(|case| {
                    json!({
                        "name": case.name,
                        "dim": case.dim(),
                        "observation_dim": case.forward.output_dim(),
                        "components": case.prior.num_components(),
                        "covariance": case.prior.covariances().kind_name(),
                        "description": case.description,
                    })
                })
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&items).unwrap())
        }
        Format::Markdown => {
            let mut s = String::from(
                "| case | d | m | prior | description |\n\
                 |---|---|---|---|---|\n",
            );
            for case in &cases {
                s += &format!(
                    "| `{}` | {} | {} | {} | {} |\n",
                    case.name,
                    case.dim(),
                    case.forward.output_dim(),
                    prior_summary(&case.prior),
                    markdown_cell(&case.description)
                );
            }
            s
        }
        Format::Human => {
            // Columns two spaces apart, each as wide as its widest entry;
            // the description's headline takes what is left of the line.
            let rows: Vec<[String; 4]> = cases
                .iter()
                .map(|case| {
                    [
                        case.name.clone(),
                        format!("d={}", case.dim()),
                        format!("m={}", case.forward.output_dim()),
                        prior_summary(&case.prior),
                    ]
                })
                .collect();
            let widths: Vec<usize> = (0..4)
                .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                .collect();
            let used: usize = widths.iter().map(|w| w + 2).sum();
            let room = LINE_WIDTH.saturating_sub(used).max(30);
            let mut s = String::new();
            for (row, case) in rows.iter().zip(&cases) {
                for (cell, width) in row.iter().zip(&widths) {
                    s += &format!("{cell:<width$}  ");
                }
                s += &shorten(headline(&case.description), room);
                s += "\n";
            }
            s
        }
    })
}

/// The width `cases` keeps its lines to.
const LINE_WIDTH: usize = 100;

/// The prior in a few words: `3 atoms`, `1 diagonal Gaussian`,
/// `25 isotropic Gaussians`, `2 full-covariance Gaussians`.
fn prior_summary(prior: &Mixture) -> String {
    let k = prior.num_components();
    let kind = match prior.covariances() {
        Covariances::Atoms => return counted(k, "atom"),
        Covariances::Isotropic(_) => "isotropic",
        Covariances::Diagonal(_) => "diagonal",
        Covariances::Full(_) => "full-covariance",
    };
    counted(k, &format!("{kind} Gaussian"))
}

/// What a description says before its first colon (`FSR paper 1-D
/// Gaussian testbed: prior N(0.5, ...`), or all of it.
fn headline(description: &str) -> &str {
    description.split_once(": ").map_or(description, |(head, _)| head)
}

/// `text` in at most `width` characters: whole when it fits, otherwise
/// cut after the last word that fits (without the punctuation ending it)
/// and followed by `...`.
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let room = width.saturating_sub(3);
    let mut cut = 0;
    for (count, (i, c)) in text.char_indices().enumerate() {
        if count > room {
            break;
        }
        if c == ' ' {
            cut = i;
        }
    }
    // A first word too long for the room is cut where the room ends.
    if cut == 0 {
        cut = text.char_indices().nth(room).map_or(text.len(), |(i, _)| i);
    }
    let head = text[..cut].trim_end_matches([',', ';', ':', ' ']);
    format!("{head}...")
}

/// `truth` without `--case`: every built-in case.
pub fn truth_of_builtins(
    format: Format,
    times: Option<Vec<f64>>,
) -> Result<String, Error> {
    let mut parts = Vec::new();
    for name in Case::builtin_names() {
        eprintln!("computing the exact posterior of {name}");
        let text = truth(name, format, times.clone())?;
        parts.push(text.trim_end().to_string());
    }
    Ok(match format {
        Format::Json => format!("[{}]\n", parts.join(",\n")),
        _ => format!("{}\n", parts.join("\n\n")),
    })
}

/// `truth --case C`: the exact posterior and its summary by time.
pub fn truth(
    name: &str,
    format: Format,
    times: Option<Vec<f64>>,
) -> Result<String, Error> {
    let case = super::flags::case("--case", name)?;
    let truth = Truth::new(&case)?;
    let schedule = truth.schedule();
    let (t_min, t_max) = schedule.time_range();
    let times = match times {
        Some(times) => {
            for &t in &times {
                if !(t.is_finite() && t > t_min.min(0.0) && t <= t_max) {
                    return Err(Error::new(
                        ErrorKind::Usage,
                        format!(
                            "--times: {t} is outside the schedule's range \
                             ({t_min}, {t_max}]"
                        ),
                    ));
                }
            }
            times
        }
        None => default_times(t_min.max(schedule.default_t_min()), t_max),
    };
    let summary: Vec<_> = times
        .iter()
        .map(|&t| {
            let noised = truth.noised_posterior(t);
            let (alpha, sigma) = schedule.alpha_sigma(t);
            let mean = noised.mean();
            let total_variance = noised.covariance().trace();
            (t, alpha, sigma, mean, total_variance)
        })
        .collect();
    let posterior = truth.posterior();
    Ok(match format {
        Format::Json => {
            let value = json!({
                "schema_version": 1,
                "case": case.name,
                "dim": case.dim(),
                "observation_dim": case.forward.output_dim(),
                "log_evidence": truth.log_evidence(),
                "posterior": mixture_json(posterior),
                "summary": summary.iter().map(|(t, a, s, m, v)| json!({
                    "t": t, "alpha": a, "sigma": s,
                    "mean": m.as_slice(), "total_variance": v,
                })).collect::<Vec<_>>(),
            });
            format!("{}\n", serde_json::to_string(&value).unwrap())
        }
        Format::Human | Format::Markdown => {
            let md = format == Format::Markdown;
            let mut s = String::new();
            if md {
                s += &format!("# Exact posterior of `{}`\n\n", case.name);
            } else {
                s += &format!("exact posterior of {}\n", case.name);
            }
            s += &format!(
                "{}d = {}, m = {}, prior: {}, log p(y) = {:.6}\n\n",
                if md { "" } else { "  " },
                case.dim(),
                case.forward.output_dim(),
                prior_summary(&case.prior),
                truth.log_evidence()
            );
            s += &components_table(posterior, md);
            s += "\n";
            s += &summary_table(&summary, md);
            s
        }
    })
}

fn default_times(t_min: f64, t_max: f64) -> Vec<f64> {
    let fractions = [1.0, 0.5, 0.2, 0.1, 0.05];
    let mut times: Vec<f64> =
        fractions.iter().map(|f| t_min + f * (t_max - t_min)).collect();
    times.push(t_min);
    times
}

fn mixture_json(mixture: &Mixture) -> serde_json::Value {
    let d = mixture.dim();
    let means: Vec<Vec<f64>> = mixture
        .means()
        .row_iter()
        .map(|r| r.iter().copied().collect())
        .collect();
    let covariances: Vec<Vec<Vec<f64>>> = (0..mixture.num_components())
        .map(|k| {
            let c = mixture.component_covariance(k);
            (0..d).map(|i| (0..d).map(|j| c[(i, j)]).collect()).collect()
        })
        .collect();
    json!({
        "covariance_kind": match mixture.covariances() {
            Covariances::Atoms => "atoms",
            Covariances::Isotropic(_) => "isotropic",
            Covariances::Diagonal(_) => "diagonal",
            Covariances::Full(_) => "full",
        },
        "weights": mixture.weights().as_slice(),
        "means": means,
        "covariances": covariances,
    })
}

fn components_table(mixture: &Mixture, md: bool) -> String {
    let weights = mixture.weights();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]));
    let shown = order.len().min(10);
    let d = mixture.dim();
    let mut s = String::new();
    if md {
        s += "| component | weight | mean | trace of covariance |\n\
              |---|---|---|---|\n";
    } else {
        s += "  component      weight  trace(cov)  mean\n";
    }
    for &k in &order[..shown] {
        let mean: Vec<String> = mixture
            .means()
            .row(k)
            .iter()
            .take(6)
            .map(|v| format!("{v:.4}"))
            .collect();
        let ellipsis = if d > 6 { ", ..." } else { "" };
        let trace = mixture.component_covariance(k).trace();
        if md {
            s += &format!(
                "| {k} | {:.6} | [{}{ellipsis}] | {trace:.6} |\n",
                weights[k],
                mean.join(", ")
            );
        } else {
            s += &format!(
                "  {k:>9}  {:>10.6}  {trace:>10.6}  [{}{ellipsis}]\n",
                weights[k],
                mean.join(", ")
            );
        }
    }
    if order.len() > shown {
        let rest: f64 = order[shown..].iter().map(|&k| weights[k]).sum();
        s += &format!(
            "{}... {} more components with total weight {rest:.3e}\n",
            if md { "\n" } else { "  " },
            order.len() - shown
        );
    }
    s
}

fn summary_table(
    summary: &[(f64, f64, f64, nalgebra::DVector<f64>, f64)],
    md: bool,
) -> String {
    let mut s = String::new();
    if md {
        s += "| t | alpha | sigma | norm of mean | total variance |\n\
              |---|---|---|---|---|\n";
    } else {
        s += "  p_t(x_t | y) by time\n         t       alpha       sigma      |mean|  total var\n";
    }
    for (t, alpha, sigma, mean, var) in summary {
        let norm = mean.norm();
        if md {
            s += &format!(
                "| {t:.4} | {alpha:.6} | {sigma:.6} | {norm:.6} | {var:.6} |\n"
            );
        } else {
            s += &format!(
                "  {t:>8.4}  {alpha:>10.6}  {sigma:>10.6}  {norm:>10.6}  {var:>9.6}\n"
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorten_cuts_after_a_whole_word() {
        assert_eq!(shorten("two words", 9), "two words");
        assert_eq!(shorten("one, two three", 12), "one, two...");
        assert_eq!(shorten("one, two three", 10), "one...");
        assert_eq!(shorten("unbreakable", 8), "unbre...");
        assert_eq!(shorten("été à la plage", 11), "été à la...");
    }

    #[test]
    fn headline_is_what_comes_before_the_first_colon() {
        assert_eq!(headline("testbed: three atoms: more"), "testbed");
        assert_eq!(headline("no colon here"), "no colon here");
    }
}
