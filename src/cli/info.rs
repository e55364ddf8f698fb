//! What is built in and what is exact: `cases`, `samplers`, `truth`.

use posterior_lens::case::Case;
use posterior_lens::mixture::{Covariances, Mixture};
use posterior_lens::sampler::{self, SamplerKind};
use posterior_lens::truth::Truth;
use posterior_lens::{Error, ErrorKind};
use serde_json::json;

use crate::Format;

/// `samplers`: every registered sampler, one line each.
pub fn samplers(format: Format) -> Result<String, Error> {
    let entries = sampler::registry();
    Ok(match format {
        Format::Json => {
            let items: Vec<_> = entries
                .iter()
                .map(|e| {
                    json!({
                        "name": e.name,
                        "kind": kind_name(e.kind),
                        "summary": e.summary,
                    })
                })
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&items).unwrap())
        }
        Format::Markdown => {
            let mut s =
                String::from("| sampler | kind | summary |\n|---|---|---|\n");
            for e in &entries {
                s += &format!(
                    "| `{}` | {} | {} |\n",
                    e.name,
                    kind_name(e.kind),
                    e.summary
                );
            }
            s
        }
        Format::Human => {
            let mut s = String::new();
            for e in &entries {
                s += &format!(
                    "{:<24} {:<10} {}\n",
                    e.name,
                    kind_name(e.kind),
                    e.summary
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
    let mut rows = Vec::new();
    for name in Case::builtin_names() {
        let case = Case::builtin(name)?;
        rows.push((
            name,
            case.dim(),
            case.forward.output_dim(),
            case.prior.num_components(),
            case.prior.covariances().kind_name(),
            case.description,
        ));
    }
    Ok(match format {
        Format::Json => {
            let items: Vec<_> = rows
                .iter()
                .map(|(name, d, m, k, kind, description)| {
                    json!({
                        "name": name, "dim": d, "observation_dim": m,
                        "components": k, "covariance": kind,
                        "description": description,
                    })
                })
                .collect();
            format!("{}\n", serde_json::to_string_pretty(&items).unwrap())
        }
        Format::Markdown => {
            let mut s = String::from(
                "| case | d | m | components | description |\n\
                 |---|---|---|---|---|\n",
            );
            for (name, d, m, k, kind, description) in &rows {
                s += &format!(
                    "| `{name}` | {d} | {m} | {k} {kind} | {description} |\n"
                );
            }
            s
        }
        Format::Human => {
            let mut s = String::new();
            for (name, d, m, k, kind, description) in &rows {
                s += &format!(
                    "{name:<24} d={d:<3} m={m:<3} {k} {kind}  {}\n",
                    first_sentence(description)
                );
            }
            s
        }
    })
}

fn first_sentence(text: &str) -> &str {
    match text.find(": ").or_else(|| text.find(". ")) {
        Some(i) if i < 90 => &text[..i],
        _ => text.get(..90).unwrap_or(text),
    }
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
    let case = Case::load(name)?;
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
                "{}d = {}, m = {}, prior: {} {} components, log p(y) = {:.6}\n\n",
                if md { "" } else { "  " },
                case.dim(),
                case.forward.output_dim(),
                case.prior.num_components(),
                case.prior.covariances().kind_name(),
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
