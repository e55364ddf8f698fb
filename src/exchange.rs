//! File exchange with samplers written in other languages: a case
//! directory out (`export`), a run directory in (`check`).
//!
//! Arrays are NPY files (`numpy.save` / `numpy.load`), so a sampler in
//! Python needs nothing beyond NumPy. Everything is float64 on the way
//! out; samples may come back as float32 or float64, in C or Fortran
//! order.
//!
//! ```text
//! case directory (written by export)
//!   case.json                    the case file (schema_version 1), loadable
//!                                with --case DIR/case.json
//!   manifest.json                dimensions, prior kind, time range, and
//!                                the shape and meaning of every array
//!   prior_weights.npy     (K,)   mixture weights (sum to 1)
//!   prior_means.npy       (K, d) component means (training points for atoms)
//!   prior_covariances.npy (K, d, d)  full covariances; absent for atoms
//!   operator.npy          (m, d) the matrix A; absent for nonlinear maps
//!   bias.npy              (m,)   only when the forward model has a bias
//!   y.npy                 (m,)   the observation
//!   noise_std.npy         ()     the measurement noise standard deviation
//!   checkpoint_times.npy  (T,)   decreasing times at which to record x_t
//!   checkpoint_alpha.npy, checkpoint_sigma.npy   (T,)  alpha_t, sigma_t
//!   grid_times.npy        (G,)   a decreasing time grid from t_max to
//!                                t_min with the checkpoints inserted
//!   grid_alpha.npy, grid_sigma.npy   (G,)
//!   probe_t.npy           (P,)   probe times
//!   probe_x.npy           (P, d) probe points x_t
//!   probe_denoised.npy    (P, d) the exact prior denoiser E[x0 | x_t]
//!   probe_conditional_denoised.npy (P, d)  E[x0 | x_t, y]
//!
//! run directory (read by check)
//!   samples.npy           (n, d) or (n, ...) with d values per sample
//!   log_weights.npy       (n,)   optional, unnormalised log-weights
//!   trajectory.npy        (T, n, d)  optional states x_t at ...
//!   trajectory_times.npy  (T,)   ... these times (both files or neither)
//!   run.json              optional {"sampler": "...", "settings": {...},
//!                                "final_time": 0.0}
//! ```
//!
//! The probe points let an external re-implementation of the denoiser be
//! checked to 1e-10 before any sampling. Every error names the file, the
//! field and the value; [`write_files`] writes every file or none, each
//! through a temporary name.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector};
use npyz::WriterBuilder;
use serde::Deserialize;
use serde_json::json;

use crate::audit::SamplerIdentity;
use crate::case::Case;
use crate::error::{Error, ErrorKind, Result};
use crate::forward::Operator;
use crate::mixture::Covariances;
use crate::sampler::{Checkpoint, Run, TrajectoryMeaning};
use crate::truth::Truth;

/// The version of the exchange layout, written to `manifest.json`.
pub const EXCHANGE_VERSION: u32 = 1;

/// How many probe points are drawn per checkpoint, half from the noised
/// prior and half from the noised posterior.
const PROBES_PER_TIME: usize = 4;

/// Steps of the exported time grid.
const GRID_STEPS: usize = 100;

/// One file to write: a name inside the directory and its bytes.
#[derive(Clone, Debug)]
pub struct OutputFile {
    /// The file name.
    pub name: String,
    /// The content.
    pub bytes: Vec<u8>,
}

/// An array read from an NPY file, as f64 in C (row-major) order.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The shape.
    pub shape: Vec<usize>,
    /// The values, last index fastest.
    pub data: Vec<f64>,
}

/// Everything `export` writes for a case, in memory.
///
/// # Errors
///
/// When the case's posterior cannot be computed, a checkpoint is outside
/// the schedule, or the prior cannot be written as a case file (atoms
/// with unequal weights).
pub fn export_case(
    case: &Case,
    checkpoints: &[f64],
    seed: u64,
) -> Result<Vec<OutputFile>> {
    let truth = Truth::new(case)?;
    let schedule = &case.schedule;
    let (_, t_max) = schedule.time_range();
    let t_min = schedule.default_t_min();
    for &t in checkpoints {
        if !(t > t_min && t <= t_max) {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("--checkpoints: {t} is outside ({t_min}, {t_max}]"),
            ));
        }
    }
    let d = case.dim();
    let prior = &case.prior;
    let k = prior.num_components();
    let mut files = Vec::new();
    let mut arrays = serde_json::Map::new();
    let mut add = |name: &str, shape: &[usize], data: &[f64], meaning: &str| {
        arrays.insert(
            name.to_string(),
            json!({"shape": shape, "meaning": meaning}),
        );
        files.push(OutputFile {
            name: format!("{name}.npy"),
            bytes: npy_bytes(shape, data),
        });
    };

    // The prior.
    add(
        "prior_weights",
        &[k],
        prior.weights().as_slice(),
        "mixture weights, summing to 1",
    );
    add(
        "prior_means",
        &[k, d],
        &row_major(prior.means()),
        "component means (training points for atoms)",
    );
    if !prior.is_atomic() {
        let mut covariances = Vec::with_capacity(k * d * d);
        for c in 0..k {
            covariances.extend(row_major(&prior.component_covariance(c)));
        }
        add(
            "prior_covariances",
            &[k, d, d],
            &covariances,
            "full component covariances",
        );
    }

    // The measurement.
    let forward = &case.forward;
    let m = forward.output_dim();
    if let Some(matrix) = forward.matrix() {
        add("operator", &[m, d], &row_major(&matrix), "the matrix A");
    }
    if let Some(bias) = forward.bias() {
        add("bias", &[m], bias.as_slice(), "y = A x0 + bias + noise");
    }
    add("y", &[m], case.observation.as_slice(), "the observation");
    add(
        "noise_std",
        &[],
        &[forward.noise_std()],
        "standard deviation of the Gaussian measurement noise",
    );

    // Times.
    let alphas = |times: &[f64]| -> (Vec<f64>, Vec<f64>) {
        times.iter().map(|&t| schedule.alpha_sigma(t)).unzip()
    };
    let (alpha, sigma) = alphas(checkpoints);
    add(
        "checkpoint_times",
        &[checkpoints.len()],
        checkpoints,
        "decreasing times at which the audit tests x_t",
    );
    add("checkpoint_alpha", &[checkpoints.len()], &alpha, "alpha_t");
    add("checkpoint_sigma", &[checkpoints.len()], &sigma, "sigma_t");
    let mut grid =
        schedule.grid(GRID_STEPS, t_min, t_max, schedule.default_spacing())?;
    for &c in checkpoints {
        if c < t_max && !grid.contains(&c) {
            grid.push(c);
        }
    }
    grid.sort_by(|a, b| b.total_cmp(a));
    let (alpha, sigma) = alphas(&grid);
    add(
        "grid_times",
        &[grid.len()],
        &grid,
        "a decreasing grid from t_max to t_min with the checkpoints",
    );
    add("grid_alpha", &[grid.len()], &alpha, "alpha_t on the grid");
    add("grid_sigma", &[grid.len()], &sigma, "sigma_t on the grid");

    // Probe points: draws of the noised prior and posterior at every
    // checkpoint, with the exact denoisers there.
    let mut probe_t = Vec::new();
    let mut probe_x = Vec::new();
    let mut denoised = Vec::new();
    let mut conditional = Vec::new();
    for (i, &t) in checkpoints.iter().enumerate() {
        let at = truth.at(t)?;
        let (a, s) = (at.alpha(), at.sigma());
        let half = PROBES_PER_TIME / 2;
        let stream = seed.wrapping_add(i as u64);
        let from_prior = truth.prior().noised(a, s).sample(half, stream);
        let from_posterior = truth.sample_at(t, PROBES_PER_TIME - half, stream);
        for xs in [from_prior, from_posterior] {
            for row in xs.row_iter() {
                let x = row.transpose();
                probe_t.push(t);
                probe_x.extend(x.iter());
                denoised.extend(at.denoise(x.as_view()).iter());
                conditional.extend(at.conditional_denoise(x.as_view()).iter());
            }
        }
    }
    let p = probe_t.len();
    add("probe_t", &[p], &probe_t, "probe times");
    add("probe_x", &[p, d], &probe_x, "probe points x_t");
    add(
        "probe_denoised",
        &[p, d],
        &denoised,
        "the exact prior denoiser E[x0 | x_t] at the probes",
    );
    add(
        "probe_conditional_denoised",
        &[p, d],
        &conditional,
        "the exact conditional denoiser E[x0 | x_t, y] at the probes",
    );

    let manifest = json!({
        "exchange_version": EXCHANGE_VERSION,
        "case": case.name,
        "dim": d,
        "observation_dim": m,
        "image_shape": case.image_shape.map(|(h, w)| [h, w]),
        "prior_kind": prior.covariances().kind_name(),
        "forward_linear": forward.is_linear(),
        "t_min": t_min,
        "t_max": t_max,
        "arrays": arrays,
    });
    files.insert(0, json_file("manifest.json", &manifest));
    files.insert(0, json_file("case.json", &case_file(case)?));
    Ok(files)
}

fn json_file(name: &str, value: &serde_json::Value) -> OutputFile {
    let mut bytes =
        serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    OutputFile { name: name.to_string(), bytes }
}

/// The case as a self-contained case file: the prior in full, a linear
/// measurement as its matrix.
///
/// # Errors
///
/// When the prior is a set of atoms with unequal weights (the case-file
/// format has no such prior) or the forward model is an unnamed
/// nonlinear map.
pub fn case_file(case: &Case) -> Result<serde_json::Value> {
    let prior = case.prior.clone();
    let means = rows(prior.means());
    let prior_json = match prior.covariances() {
        Covariances::Atoms => {
            let w = prior.weights();
            let first = w[0];
            if w.iter().any(|v| (v - first).abs() > 1e-12 * first) {
                return Err(Error::invalid(
                    "an atom prior with unequal weights cannot be written \
                     as a case file",
                ));
            }
            json!({"type": "empirical", "points": means})
        }
        _ => {
            let covariances: Vec<Vec<Vec<f64>>> = (0..prior.num_components())
                .map(|k| rows(&prior.component_covariance(k)))
                .collect();
            json!({
                "type": "gaussian_mixture",
                "weights": prior.weights().as_slice(),
                "means": means,
                "covariances": covariances,
            })
        }
    };
    let forward = &case.forward;
    let forward_json = match (forward.matrix(), forward.operator()) {
        (Some(matrix), _) => {
            let mut f = json!({
                "type": "linear",
                "matrix": rows(&matrix),
                "noise_std": forward.noise_std(),
            });
            if let Some(bias) = forward.bias() {
                f["bias"] = json!(bias.as_slice());
            }
            f
        }
        (None, Operator::Nonlinear(map))
            if ["abs", "square", "norm"].contains(&map.name()) =>
        {
            json!({
                "type": "nonlinear",
                "map": map.name(),
                "noise_std": forward.noise_std(),
            })
        }
        _ => {
            return Err(Error::invalid(
                "this forward model cannot be written as a case file",
            ));
        }
    };
    let mut file = json!({
        "schema_version": 1,
        "name": case.name,
        "description": case.description,
        "prior": prior_json,
        "forward": forward_json,
        "observation": case.observation.as_slice(),
        "schedule": serde_json::to_value(&case.schedule)
            .expect("a schedule serialises"),
    });
    if let Some((h, w)) = case.image_shape {
        file["image_shape"] = json!([h, w]);
    }
    Ok(file)
}

fn rows(m: &DMatrix<f64>) -> Vec<Vec<f64>> {
    m.row_iter().map(|r| r.iter().copied().collect()).collect()
}

fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

/// An f64 array as the bytes of an NPY file (C order).
///
/// # Panics
///
/// When `data` does not hold the product of `shape` values.
pub fn npy_bytes(shape: &[usize], data: &[f64]) -> Vec<u8> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data");
    let shape: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::<f64>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut bytes)
        .begin_nd()
        .expect("writing to memory does not fail");
    writer.extend(data.iter().copied()).expect("writing to memory");
    writer.finish().expect("writing to memory");
    bytes
}

/// Writes files into `dir` (created if needed), all of them or none (see
/// [`write_all`]).
///
/// # Errors
///
/// When the directory cannot be created or a file cannot be written.
pub fn write_files(dir: &Path, files: &[OutputFile]) -> Result<()> {
    let files: Vec<(PathBuf, &[u8])> =
        files.iter().map(|f| (dir.join(&f.name), &f.bytes[..])).collect();
    write_all(&files)
}

/// Writes one file through a temporary name in the same directory.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_all(&[(path, bytes)])
}

/// Writes every file or none.
///
/// Each file goes to a temporary name in its own directory (created if
/// needed) first; only when every one of them is written are they renamed
/// into place. When a file cannot be written, the temporary files and the
/// directories made for them are removed, so that a failure leaves the
/// file system as it found it. A rename that fails after the others
/// succeeded (a race with another process) is the one case that can leave
/// some files replaced.
///
/// # Errors
///
/// When a directory cannot be created or a file cannot be written; the
/// message names the file.
pub fn write_all(files: &[(impl AsRef<Path>, impl AsRef<[u8]>)]) -> Result<()> {
    for (i, (path, _)) in files.iter().enumerate() {
        let path = path.as_ref();
        if files[..i].iter().any(|(p, _)| p.as_ref() == path) {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("{} is to be written twice", path.display()),
            ));
        }
    }
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    let mut made: Vec<PathBuf> = Vec::new();
    let result = files.iter().try_for_each(|(path, bytes)| {
        let path = path.as_ref();
        let tmp = stage(path, bytes.as_ref(), &mut made)?;
        staged.push((tmp, path));
        Ok(())
    });
    let result = result.and_then(|()| {
        staged.iter().try_for_each(|(tmp, path)| {
            std::fs::rename(tmp, path).map_err(|e| cannot_write(path, e))
        })
    });

    // On failure, undo what is still undoable: the temporary files left
    // and the directories made for them, deepest first.
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        made.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in &made {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Writes `bytes` to a temporary name beside `path` and returns it,
/// adding the directories it had to make to `made`.
fn stage(
    path: &Path,
    bytes: &[u8],
    made: &mut Vec<PathBuf>,
) -> Result<PathBuf> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // Recorded before they are made, so that a half-made chain is
        // removed too.
        let missing: Vec<PathBuf> = parent
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .filter(|a| !made.iter().any(|m| m == a))
            .map(Path::to_path_buf)
            .collect();
        made.extend(missing);
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create directory {}", parent.display()),
            )
            .with_source(e)
        })?;
    }
    // Renaming onto a directory would fail only after other files are in
    // place.
    if path.is_dir() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("cannot write {}: it is a directory", path.display()),
        ));
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(cannot_write(path, e));
    }
    Ok(tmp)
}

fn cannot_write(path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("cannot write {}", path.display()))
        .with_source(e)
}

/// Reads an NPY file of float32 or float64 values (either byte order, C
/// or Fortran order) as f64 in C order.
///
/// # Errors
///
/// When the file cannot be read, is not an NPY file, or holds another
/// dtype. The message starts with the file name.
pub fn read_npy(path: &Path) -> Result<Array> {
    let name = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(ErrorKind::Io, format!("cannot read {name}")).with_source(e)
    })?;
    let invalid = |what: String| Error::invalid(format!("{name}: {what}"));
    let file = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| invalid(format!("not a valid NPY file ({e})")))?;
    let shape: Vec<usize> = file.shape().iter().map(|&s| s as usize).collect();
    let order = file.order();
    let dtype = file.dtype();
    let type_str = match &dtype {
        npyz::DType::Plain(t) => t.to_string(),
        other => format!("{other:?}"),
    };
    let data: Vec<f64> = match type_str.as_str() {
        "<f8" | ">f8" => file.into_vec::<f64>(),
        "<f4" | ">f4" => file
            .into_vec::<f32>()
            .map(|v| v.into_iter().map(f64::from).collect()),
        _ => {
            return Err(invalid(format!(
                "dtype {type_str} is not supported; write float32 or float64"
            )));
        }
    }
    .map_err(|e| invalid(format!("cannot read the data ({e})")))?;
    let data = match order {
        npyz::Order::C => data,
        npyz::Order::Fortran => fortran_to_c(&shape, &data),
    };
    Ok(Array { shape, data })
}

/// Reorders column-major (first index fastest) data to row-major.
fn fortran_to_c(shape: &[usize], data: &[f64]) -> Vec<f64> {
    let n = data.len();
    let mut out = vec![0.0; n];
    let mut index = vec![0usize; shape.len()];
    for value in data {
        // `index` walks the array in Fortran order; place the value at its
        // row-major offset.
        let mut offset = 0;
        for (i, &s) in shape.iter().enumerate() {
            offset = offset * s + index[i];
        }
        out[offset] = *value;
        for (i, &s) in shape.iter().enumerate() {
            index[i] += 1;
            if index[i] < s {
                break;
            }
            index[i] = 0;
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunFile {
    #[serde(default)]
    sampler: Option<String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    final_time: Option<f64>,
}

/// A run read from a run directory, with who made it.
#[derive(Clone, Debug)]
pub struct ExternalRun {
    /// The particles, weights and trajectory.
    pub run: Run,
    /// The sampler's name and settings from `run.json` (`external` when
    /// absent), and the meaning of the trajectory.
    pub identity: SamplerIdentity,
}

/// Reads a run directory (see the module docs) written for `case`.
///
/// # Errors
///
/// When a file is missing or unreadable, has another dtype, a shape that
/// disagrees with the case or with the other files, a value that is NaN
/// or infinite, or log-weights that are all `-inf` (all-zero weights).
/// Messages name the file, the field and the value.
pub fn read_run(dir: &Path, case: &Case) -> Result<ExternalRun> {
    if !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("run directory {} does not exist", dir.display()),
        ));
    }
    let d = case.dim();
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let optional = |name: &str| -> Option<PathBuf> {
        let p = path(name);
        p.exists().then_some(p)
    };

    // run.json first: its final time decides what the samples mean.
    let mut identity = SamplerIdentity {
        name: "external".into(),
        settings: BTreeMap::new(),
        meaning: TrajectoryMeaning::NoisedPosterior,
    };
    let mut final_time = 0.0;
    if let Some(p) = optional("run.json") {
        let text = std::fs::read_to_string(&p).map_err(|e| {
            Error::new(ErrorKind::Io, format!("cannot read {}", p.display()))
                .with_source(e)
        })?;
        let file: RunFile = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(format!("{}: invalid run file: {e}", p.display()))
        })?;
        if let Some(name) = file.sampler {
            identity.name = name;
        }
        identity.settings = file.settings;
        if let Some(t) = file.final_time {
            let (_, t_max) = case.schedule.time_range();
            if !(t.is_finite() && (0.0..t_max).contains(&t)) {
                return Err(Error::invalid(format!(
                    "{}: final_time must lie in [0, {t_max}), got {t}",
                    p.display()
                )));
            }
            final_time = t;
        }
    }

    let samples_path = path("samples.npy");
    let samples = read_npy(&samples_path)?;
    let particles = particle_matrix(&samples, d, &samples_path, "samples")?;
    let n = particles.nrows();

    let log_weights = match optional("log_weights.npy") {
        None => None,
        Some(p) => {
            let w = read_npy(&p)?;
            if w.shape != [n] {
                return Err(Error::invalid(format!(
                    "{}: shape {:?} does not match the {n} samples; expected \
                     [{n}]",
                    p.display(),
                    w.shape
                )));
            }
            if let Some(i) =
                w.data.iter().position(|v| v.is_nan() || *v == f64::INFINITY)
            {
                return Err(Error::invalid(format!(
                    "{}: log_weights[{i}] is {}, not a number below infinity",
                    p.display(),
                    w.data[i]
                )));
            }
            if w.data.iter().all(|v| *v == f64::NEG_INFINITY) {
                return Err(Error::invalid(format!(
                    "{}: every weight is zero (all log_weights are -inf)",
                    p.display()
                )));
            }
            Some(DVector::from_vec(w.data))
        }
    };

    let trajectory =
        match (optional("trajectory.npy"), optional("trajectory_times.npy")) {
            (None, None) => Vec::new(),
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "{}: trajectory.npy and trajectory_times.npy go together; \
                 only one of them is there",
                    dir.display()
                )));
            }
            (Some(states_path), Some(times_path)) => {
                read_trajectory(&states_path, &times_path, case, n)?
            }
        };

    Ok(ExternalRun {
        run: Run { particles, final_time, log_weights, trajectory },
        identity,
    })
}

fn read_trajectory(
    states_path: &Path,
    times_path: &Path,
    case: &Case,
    n: usize,
) -> Result<Vec<Checkpoint>> {
    let d = case.dim();
    let times = read_npy(times_path)?;
    if times.shape.len() != 1 || times.shape[0] == 0 {
        return Err(Error::invalid(format!(
            "{}: shape {:?} must be [T] with T >= 1",
            times_path.display(),
            times.shape
        )));
    }
    let (_, t_max) = case.schedule.time_range();
    for (i, &t) in times.data.iter().enumerate() {
        if !(t.is_finite() && t > 0.0 && t <= t_max) {
            return Err(Error::invalid(format!(
                "{}: trajectory_times[{i}] is {t}, outside (0, {t_max}]",
                times_path.display()
            )));
        }
        if i > 0 && t >= times.data[i - 1] {
            return Err(Error::invalid(format!(
                "{}: trajectory_times[{i}] is {t}, not below \
                 trajectory_times[{}] = {}: the times must decrease, from \
                 noise towards data",
                times_path.display(),
                i - 1,
                times.data[i - 1]
            )));
        }
    }
    let t_count = times.shape[0];
    let states = read_npy(states_path)?;
    let per_sample: usize = states.shape.iter().skip(2).product();
    if states.shape.len() < 3
        || states.shape[0] != t_count
        || states.shape[1] != n
        || per_sample != d
    {
        return Err(Error::invalid(format!(
            "{}: shape {:?} does not match [{t_count}, {n}, {d}] (times, \
             samples, dimension of the case)",
            states_path.display(),
            states.shape
        )));
    }
    let block = n * d;
    let mut out = Vec::with_capacity(t_count);
    for (i, &t) in times.data.iter().enumerate() {
        let slice = &states.data[i * block..(i + 1) * block];
        if let Some(j) = slice.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "{}: trajectory[{i}][{}][{}] is {}, not a finite number",
                states_path.display(),
                j / d,
                j % d,
                slice[j]
            )));
        }
        out.push(Checkpoint {
            t,
            states: DMatrix::from_row_slice(n, d, slice),
            denoised: None,
        });
    }
    out.sort_by(|a, b| b.t.total_cmp(&a.t));
    Ok(out)
}

fn particle_matrix(
    array: &Array,
    d: usize,
    path: &Path,
    field: &str,
) -> Result<DMatrix<f64>> {
    let per_sample: usize = array.shape.iter().skip(1).product();
    if array.shape.len() < 2 || array.shape[0] == 0 || per_sample != d {
        return Err(Error::invalid(format!(
            "{}: shape {:?} does not match the case: expected [n, {d}] with \
             n >= 1",
            path.display(),
            array.shape
        )));
    }
    let n = array.shape[0];
    if let Some(j) = array.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "{}: {field}[{}][{}] is {}, not a finite number",
            path.display(),
            j / d,
            j % d,
            array.data[j]
        )));
    }
    Ok(DMatrix::from_row_slice(n, d, &array.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_writes_nothing_when_one_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "mine").unwrap();
        let fresh = dir.path().join("fresh/deeper");
        let files = [
            (fresh.join("a.txt"), "a"),
            (dir.path().join("b.txt"), "b"),
            // A file where a directory has to be.
            (blocker.join("c.txt"), "c"),
        ];
        let err = write_all(&files).unwrap_err();
        assert!(err.to_string().contains("blocker"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["blocker"], "left behind: {left:?}");

        // A directory where a file has to be.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let files =
            [(dir.path().join("b.txt"), "b"), (dir.path().join("d"), "d")];
        assert!(write_all(&files).is_err());
        assert!(!dir.path().join("b.txt").exists());

        let files = [(fresh.join("a.txt"), "a"), (fresh.join("e.txt"), "e")];
        write_all(&files).unwrap();
        assert_eq!(std::fs::read_to_string(fresh.join("e.txt")).unwrap(), "e");
        assert_eq!(std::fs::read_dir(&fresh).unwrap().count(), 2);
    }

    #[test]
    fn npy_round_trip_keeps_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let data: Vec<f64> = (0..6).map(|i| i as f64 * 0.5).collect();
        std::fs::write(&path, npy_bytes(&[2, 3], &data)).unwrap();
        let array = read_npy(&path).unwrap();
        assert_eq!(array.shape, vec![2, 3]);
        assert_eq!(array.data, data);
    }

    #[test]
    fn fortran_order_is_reordered_to_rows() {
        // [[0, 1, 2], [3, 4, 5]] stored column by column.
        let fortran = [0.0, 3.0, 1.0, 4.0, 2.0, 5.0];
        let c = fortran_to_c(&[2, 3], &fortran);
        assert_eq!(c, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // Three dimensions: shape (2, 2, 2), value = 4i + 2j + k.
        let mut fortran = Vec::new();
        for k in 0..2 {
            for j in 0..2 {
                for i in 0..2 {
                    fortran.push((4 * i + 2 * j + k) as f64);
                }
            }
        }
        let c = fortran_to_c(&[2, 2, 2], &fortran);
        assert_eq!(c, (0..8).map(f64::from).collect::<Vec<_>>());
    }

    #[test]
    fn exported_case_file_loads_back_to_the_same_posterior() {
        for name in ["fsr-two-modes-1d", "fsr-three-atoms"] {
            let case = Case::builtin(name).unwrap();
            let text = case_file(&case).unwrap().to_string();
            let back =
                Case::from_json(&text, &crate::case::Base::Embedded).unwrap();
            let (a, b) =
                (Truth::new(&case).unwrap(), Truth::new(&back).unwrap());
            assert_eq!(a.posterior().means(), b.posterior().means());
            let diff =
                (a.posterior().weights() - b.posterior().weights()).abs().max();
            assert!(diff < 1e-12, "{name}: weights differ by {diff}");
        }
    }
}
