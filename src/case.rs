//! Cases: a prior, a forward model, an observation and a noise schedule.
//!
//! A case is read from a JSON case file (`schema_version` 1) or taken from
//! the built-in suite, whose files also live under `fixtures/cases/`.
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "name": "gmm-1d-two-modes",
//!   "description": "optional, one line",
//!   "prior": {"type": "gaussian_mixture", "weights": [0.4, 0.6],
//!             "means": [[-1.0], [1.5]],
//!             "covariances": [[[0.16]], [[0.36]]]},
//!   "forward": {"type": "linear", "matrix": [[1.0]], "noise_std": 0.3},
//!   "observation": [0.5],
//!   "schedule": {"type": "vp_linear", "beta_min": 0.01, "beta_max": 20.0},
//!   "image_shape": [8, 8]
//! }
//! ```
//!
//! Unknown fields are errors, every number is an f64, and weights are
//! normalised by the reader. Compact forms: `"covariances"` may be
//! `{"isotropic": [v_1, ...]}` or `{"diagonal": [[...], ...]}` (variances);
//! a prior may be `{"type": "empirical", "points": [[...], ...]}` or
//! `{"type": "empirical", "file": "../data/digits.csv.gz", "columns": 64,
//! "scale": 0.125, "shift": -1.0}` (a CSV file, gzip-compressed when its
//! name ends in `.gz`, relative to the case file; the first `columns`
//! columns of every row, mapped by `scale * value + shift`, optionally only
//! the first `limit` rows). Forward models: `linear` (`matrix`, optional
//! `bias`), `identity`, `mask` (`keep`: observed coordinates, in order),
//! `subsample` (`stride`, `offset`), `blur` (needs `image_shape`; `kernel`
//! or `gaussian_std` with odd `size`) and `nonlinear` (`map`: `abs`,
//! `square` or `norm`; atom priors only), each with `noise_std`. An
//! observation is either the vector `y` or `{"draw": {"seed": 7}}`: draw
//! `x*` from the prior and then `y` from the forward model, both from the
//! seed's observation stream.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result, ensure};
use crate::forward::{Blur, ForwardModel, NonlinearMap, Operator};
use crate::mixture::{Covariances, Mixture};
use crate::rng::{self, Purpose};
use crate::schedule::Schedule;

/// A test case: everything needed to define an exact posterior.
#[derive(Clone, Debug)]
pub struct Case {
    /// Short name, used in reports and on the command line.
    pub name: String,
    /// One line saying what the case is and where it comes from.
    pub description: String,
    /// The prior `p0`.
    pub prior: Mixture,
    /// The measurement `y = A(x0) + n`.
    pub forward: ForwardModel,
    /// The observation `y`.
    pub observation: DVector<f64>,
    /// The noise schedule of the diffusion.
    pub schedule: Schedule,
    /// The image shape (height, width) for image-shaped data.
    pub image_shape: Option<(usize, usize)>,
    /// The signal `x*` that produced `y`, when the observation was drawn.
    pub signal: Option<DVector<f64>>,
}

/// The built-in cases, in the order `cases` lists them.
const BUILTIN: &[(&str, &str)] = &[
    ("fsr-three-atoms", include_str!("../fixtures/cases/fsr-three-atoms.json")),
    ("fsr-gaussian-1d", include_str!("../fixtures/cases/fsr-gaussian-1d.json")),
    (
        "fsr-two-modes-1d",
        include_str!("../fixtures/cases/fsr-two-modes-1d.json"),
    ),
    (
        "gmm-2d-one-coordinate",
        include_str!("../fixtures/cases/gmm-2d-one-coordinate.json"),
    ),
    ("mcgdiff-grid-d8", include_str!("../fixtures/cases/mcgdiff-grid-d8.json")),
    (
        "digits-half-masked",
        include_str!("../fixtures/cases/digits-half-masked.json"),
    ),
];

/// Data files the built-in cases refer to, embedded in the binary so that
/// built-in cases work from any directory.
const EMBEDDED_DATA: &[(&str, &[u8])] = &[(
    "../data/digits.csv.gz",
    include_bytes!("../fixtures/data/digits.csv.gz"),
)];

impl Case {
    /// The names of the built-in cases.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(name, _)| *name).collect()
    }

    /// A built-in case by name.
    ///
    /// # Errors
    ///
    /// When no built-in case has that name.
    pub fn builtin(name: &str) -> Result<Case> {
        let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
            return Err(Error::invalid(format!(
                "unknown case `{name}`; built-in cases: {}",
                Case::builtin_names().join(", ")
            )));
        };
        Case::from_json(text, &Base::Embedded)
            .map_err(|e| e.context(format!("built-in case {name}")))
    }

    /// A case named on the command line: a path to a case file when such a
    /// file exists, a built-in case name otherwise.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a valid case, or the name is
    /// neither a file nor a built-in case.
    pub fn load(name_or_path: &str) -> Result<Case> {
        let path = Path::new(name_or_path);
        if path.is_file() {
            return Case::from_file(path);
        }
        if name_or_path.ends_with(".json") {
            return Err(Error::new(
                ErrorKind::Io,
                format!("case file {name_or_path} does not exist"),
            ));
        }
        Case::builtin(name_or_path)
    }

    /// Reads a case file; data files it names are relative to it.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not a valid case. The message
    /// starts with the file name and names the field and the value.
    pub fn from_file(path: &Path) -> Result<Case> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot read case file {}", path.display()),
            )
            .with_source(e)
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Case::from_json(&text, &Base::Dir(dir))
            .map_err(|e| e.context(path.display()))
    }

    /// Parses a case from JSON text.
    ///
    /// # Errors
    ///
    /// When the text is not a valid case.
    pub fn from_json(text: &str, base: &Base) -> Result<Case> {
        let file: CaseFile = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("invalid case file: {e}")))?;
        ensure!(
            file.schema_version == 1,
            "schema_version must be 1, got {}",
            file.schema_version
        );
        ensure!(!file.name.trim().is_empty(), "name must not be empty");
        let image_shape = file.image_shape.map(|[h, w]| (h, w));
        let prior =
            build_prior(&file.prior, base).map_err(|e| e.context("prior"))?;
        let d = prior.dim();
        if let Some((h, w)) = image_shape {
            ensure!(
                h * w == d,
                "image_shape {h} x {w} does not match dimension {d}"
            );
        }
        file.schedule.validate()?;
        let forward = build_forward(&file.forward, d, image_shape)
            .map_err(|e| e.context("forward"))?;
        let (observation, signal) =
            build_observation(&file.observation, &prior, &forward)
                .map_err(|e| e.context("observation"))?;
        Ok(Case {
            name: file.name,
            description: file.description.unwrap_or_default(),
            prior,
            forward,
            observation,
            schedule: file.schedule,
            image_shape,
            signal,
        })
    }

    /// The dimension `d` of the signal.
    pub fn dim(&self) -> usize {
        self.prior.dim()
    }
}

/// Where a case's data files are found.
#[derive(Clone, Debug)]
pub enum Base {
    /// Relative to this directory (the case file's).
    Dir(PathBuf),
    /// In the data embedded in the binary (built-in cases).
    Embedded,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    schema_version: u32,
    name: String,
    #[serde(default)]
    description: Option<String>,
    prior: PriorSpec,
    forward: ForwardSpec,
    observation: Value,
    schedule: Schedule,
    #[serde(default)]
    image_shape: Option<[usize; 2]>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum PriorSpec {
    GaussianMixture {
        weights: Vec<f64>,
        means: Vec<Vec<f64>>,
        covariances: Value,
    },
    Empirical {
        #[serde(default)]
        points: Option<Vec<Vec<f64>>>,
        #[serde(default)]
        file: Option<String>,
        #[serde(default)]
        columns: Option<usize>,
        #[serde(default)]
        scale: Option<f64>,
        #[serde(default)]
        shift: Option<f64>,
        #[serde(default)]
        limit: Option<usize>,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ForwardSpec {
    Linear {
        matrix: Vec<Vec<f64>>,
        noise_std: f64,
        #[serde(default)]
        bias: Option<Vec<f64>>,
    },
    Identity {
        noise_std: f64,
    },
    Mask {
        keep: Vec<usize>,
        noise_std: f64,
    },
    Subsample {
        stride: usize,
        #[serde(default)]
        offset: usize,
        noise_std: f64,
    },
    Blur {
        #[serde(default)]
        kernel: Option<Vec<Vec<f64>>>,
        #[serde(default)]
        gaussian_std: Option<f64>,
        #[serde(default)]
        size: Option<usize>,
        noise_std: f64,
    },
    Nonlinear {
        map: String,
        noise_std: f64,
    },
}

fn rows_to_matrix(rows: &[Vec<f64>], field: &str) -> Result<DMatrix<f64>> {
    ensure!(!rows.is_empty(), "{field} must not be empty");
    let width = rows[0].len();
    ensure!(width > 0, "{field}[0] must not be empty");
    for (i, row) in rows.iter().enumerate() {
        ensure!(
            row.len() == width,
            "{field}[{i}] has length {} but {field}[0] has {width}",
            row.len()
        );
        for (j, v) in row.iter().enumerate() {
            ensure!(v.is_finite(), "{field}[{i}][{j}] must be finite, got {v}");
        }
    }
    Ok(DMatrix::from_fn(rows.len(), width, |i, j| rows[i][j]))
}

fn build_prior(spec: &PriorSpec, base: &Base) -> Result<Mixture> {
    match spec {
        PriorSpec::GaussianMixture { weights, means, covariances } => {
            ensure!(!weights.is_empty(), "weights must not be empty");
            ensure!(
                means.len() == weights.len(),
                "means has {} rows but weights has {} entries",
                means.len(),
                weights.len()
            );
            let means = rows_to_matrix(means, "means")?;
            let covariances =
                parse_covariances(covariances, weights.len(), means.ncols())?;
            Mixture::new(
                DVector::from_column_slice(weights),
                means,
                covariances,
            )
        }
        PriorSpec::Empirical { points, file, columns, scale, shift, limit } => {
            let points = match (points, file) {
                (Some(points), None) => {
                    ensure!(
                        columns.is_none()
                            && scale.is_none()
                            && shift.is_none()
                            && limit.is_none(),
                        "columns, scale, shift and limit go with file, not \
                         with points"
                    );
                    ensure!(!points.is_empty(), "the training set is empty");
                    rows_to_matrix(points, "points")?
                }
                (None, Some(file)) => read_points(
                    file,
                    base,
                    *columns,
                    scale.unwrap_or(1.0),
                    shift.unwrap_or(0.0),
                    *limit,
                )?,
                _ => {
                    return Err(Error::invalid(
                        "an empirical prior needs exactly one of points and \
                         file",
                    ));
                }
            };
            Mixture::atoms(points)
        }
    }
}

fn parse_covariances(value: &Value, k: usize, d: usize) -> Result<Covariances> {
    let numbers = |v: &Value, field: &str| -> Result<Vec<f64>> {
        let items = v.as_array().ok_or_else(|| {
            Error::invalid(format!("{field} must be an array, got {v}"))
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_f64().ok_or_else(|| {
                    Error::invalid(format!(
                        "{field}[{i}] must be a number, got {x}"
                    ))
                })
            })
            .collect()
    };
    let rows = |v: &Value, field: &str| -> Result<Vec<Vec<f64>>> {
        let items = v.as_array().ok_or_else(|| {
            Error::invalid(format!("{field} must be an array, got {v}"))
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, row)| numbers(row, &format!("{field}[{i}]")))
            .collect()
    };
    match value {
        Value::Object(map) => {
            let mut keys = map.keys();
            let (Some(kind), None) = (keys.next(), keys.next()) else {
                return Err(Error::invalid(
                    "covariances must have exactly one of isotropic and \
                     diagonal",
                ));
            };
            match kind.as_str() {
                "isotropic" => {
                    let v = numbers(&map[kind], "covariances.isotropic")?;
                    ensure!(
                        v.len() == k,
                        "covariances.isotropic has {} entries but there are \
                         {k} components",
                        v.len()
                    );
                    Ok(Covariances::Isotropic(DVector::from_vec(v)))
                }
                "diagonal" => {
                    let v = rows(&map[kind], "covariances.diagonal")?;
                    ensure!(
                        v.len() == k,
                        "covariances.diagonal has {} rows but there are {k} \
                         components",
                        v.len()
                    );
                    let m = rows_to_matrix(&v, "covariances.diagonal")?;
                    ensure!(
                        m.ncols() == d,
                        "covariances.diagonal rows have length {} but the \
                         dimension is {d}",
                        m.ncols()
                    );
                    Ok(Covariances::Diagonal(m))
                }
                other => Err(Error::invalid(format!(
                    "unknown covariance form `{other}`; expected isotropic \
                     or diagonal"
                ))),
            }
        }
        Value::Array(items) => {
            ensure!(
                items.len() == k,
                "covariances has {} matrices but there are {k} components",
                items.len()
            );
            let mut out = Vec::with_capacity(k);
            for (i, item) in items.iter().enumerate() {
                let field = format!("covariances[{i}]");
                let m = rows(item, &field)?;
                out.push(rows_to_matrix(&m, &field)?);
            }
            Ok(Covariances::Full(out))
        }
        other => Err(Error::invalid(format!(
            "covariances must be a list of matrices or an object, got {other}"
        ))),
    }
}

fn read_points(
    file: &str,
    base: &Base,
    columns: Option<usize>,
    scale: f64,
    shift: f64,
    limit: Option<usize>,
) -> Result<DMatrix<f64>> {
    ensure!(
        scale.is_finite() && shift.is_finite(),
        "scale and shift must be finite, got {scale} and {shift}"
    );
    let bytes = match base {
        Base::Dir(dir) => {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot read data file {}", path.display()),
                )
                .with_source(e)
            })?
        }
        Base::Embedded => EMBEDDED_DATA
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, bytes)| bytes.to_vec())
            .ok_or_else(|| {
                Error::invalid(format!("no embedded data file {file}"))
            })?,
    };
    let text = if file.ends_with(".gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("cannot decompress {file}"))
                    .with_source(e)
            })?;
        text
    } else {
        String::from_utf8(bytes).map_err(|e| {
            Error::invalid(format!("{file} is not UTF-8 text")).with_source(e)
        })?
    };
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let width = columns.unwrap_or(fields.len());
        ensure!(
            fields.len() >= width,
            "{file} line {} has {} columns but {width} are needed",
            line_no + 1,
            fields.len()
        );
        let row = fields[..width]
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let v: f64 = f.trim().parse().map_err(|_| {
                    Error::invalid(format!(
                        "{file} line {} column {}: `{f}` is not a number",
                        line_no + 1,
                        j + 1
                    ))
                })?;
                ensure!(
                    v.is_finite(),
                    "{file} line {} column {}: value {v} is not finite",
                    line_no + 1,
                    j + 1
                );
                Ok(scale * v + shift)
            })
            .collect::<Result<Vec<f64>>>()?;
        rows.push(row);
    }
    ensure!(!rows.is_empty(), "the training set in {file} is empty");
    rows_to_matrix(&rows, file)
}

fn build_forward(
    spec: &ForwardSpec,
    d: usize,
    image_shape: Option<(usize, usize)>,
) -> Result<ForwardModel> {
    let (operator, noise_std, bias) = match spec {
        ForwardSpec::Linear { matrix, noise_std, bias } => {
            let matrix = rows_to_matrix(matrix, "matrix")?;
            ensure!(
                matrix.ncols() == d,
                "matrix has {} columns but the prior has dimension {d}",
                matrix.ncols()
            );
            let bias = bias.as_ref().map(|b| DVector::from_column_slice(b));
            (Operator::Dense(matrix), *noise_std, bias)
        }
        ForwardSpec::Identity { noise_std } => {
            (Operator::Identity { dim: d }, *noise_std, None)
        }
        ForwardSpec::Mask { keep, noise_std } => {
            (Operator::Mask { dim: d, keep: keep.clone() }, *noise_std, None)
        }
        ForwardSpec::Subsample { stride, offset, noise_std } => (
            Operator::Subsample { dim: d, stride: *stride, offset: *offset },
            *noise_std,
            None,
        ),
        ForwardSpec::Blur { kernel, gaussian_std, size, noise_std } => {
            let Some((height, width)) = image_shape else {
                return Err(Error::invalid(
                    "a blur needs the case's image_shape",
                ));
            };
            let operator = match (kernel, gaussian_std) {
                (Some(kernel), None) => Operator::Blur(Blur {
                    height,
                    width,
                    kernel: rows_to_matrix(kernel, "kernel")?,
                }),
                (None, Some(std)) => Operator::Blur(Blur::gaussian(
                    height,
                    width,
                    *std,
                    size.unwrap_or(5),
                )?),
                _ => {
                    return Err(Error::invalid(
                        "a blur needs exactly one of kernel and gaussian_std",
                    ));
                }
            };
            (operator, *noise_std, None)
        }
        ForwardSpec::Nonlinear { map, noise_std } => {
            let map = match map.as_str() {
                "abs" => NonlinearMap::abs(d),
                "square" => NonlinearMap::square(d),
                "norm" => NonlinearMap::norm(d),
                other => {
                    return Err(Error::invalid(format!(
                        "unknown map `{other}`; expected abs, square or norm"
                    )));
                }
            };
            (Operator::Nonlinear(map), *noise_std, None)
        }
    };
    let mut forward = ForwardModel::new(operator, noise_std)?;
    if let Some(bias) = bias {
        forward = forward.with_bias(bias)?;
    }
    Ok(forward)
}

fn build_observation(
    value: &Value,
    prior: &Mixture,
    forward: &ForwardModel,
) -> Result<(DVector<f64>, Option<DVector<f64>>)> {
    let m = forward.output_dim();
    match value {
        Value::Array(items) => {
            let y = items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_f64().filter(|v| v.is_finite()).ok_or_else(|| {
                        Error::invalid(format!(
                            "observation[{i}] must be a finite number, got {v}"
                        ))
                    })
                })
                .collect::<Result<Vec<f64>>>()?;
            ensure!(
                y.len() == m,
                "observation has length {} but the forward model gives {m}",
                y.len()
            );
            Ok((DVector::from_vec(y), None))
        }
        Value::Object(_) => {
            let draw: BTreeMap<String, DrawSpec> =
                serde_json::from_value(value.clone()).map_err(|e| {
                    Error::invalid(format!(
                        "observation must be a list of numbers or \
                         {{\"draw\": {{\"seed\": N}}}}: {e}"
                    ))
                })?;
            let Some(spec) = draw.get("draw").filter(|_| draw.len() == 1)
            else {
                return Err(Error::invalid(
                    "observation object must have the single key draw",
                ));
            };
            let mut rng = rng::stream(spec.seed, Purpose::Observation, 0);
            let signal = prior.sample_one(&mut rng);
            let y = forward.sample_observation(signal.as_view(), &mut rng);
            Ok((y, Some(signal)))
        }
        other => Err(Error::invalid(format!(
            "observation must be a list of numbers or {{\"draw\": \
             {{\"seed\": N}}}}, got {other}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrawSpec {
    seed: u64,
}
