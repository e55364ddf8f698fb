//! Forward models: a measurement operator plus isotropic Gaussian noise.
//!
//! ```text
//! y = A(x0) + b + n,    n ~ N(0, noise_std^2 I_m),    x0 in R^d, y in R^m
//! log p(y | x0) = -m/2 ln(2 pi noise_std^2)
//!                 - |y - A(x0) - b|^2 / (2 noise_std^2)
//! ```
//!
//! `A` is an [`Operator`]: linear (identity, dense matrix, pixel mask,
//! coordinate subsampling, 2-D blur) or a nonlinear map. The optional bias
//! `b` applies to every operator. A nonlinear map keeps the posterior exact
//! only for atom (empirical) priors, where conditioning just reweights the
//! atoms by the likelihood above (DESIGN.md section 2).
//!
//! Particles are rows: the batch functions take an `n x d` matrix and
//! return `n x m` (or `n x d` for the adjoint). The linear operators also
//! expose their adjoint, a dense matrix and a thin SVD, with structured
//! fast paths where the operator is a coordinate selection.

use std::fmt;
use std::sync::{Arc, OnceLock};

use nalgebra::{DMatrix, DVector, DVectorView};
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, ErrorKind, Result, ensure};

/// The signature of a nonlinear forward map.
pub type MapFn = dyn Fn(DVectorView<f64>) -> DVector<f64> + Send + Sync;

/// The measurement operator `A` of a [`ForwardModel`].
///
/// The fields are public so operators are easy to build; they are checked
/// when the operator goes into [`ForwardModel::new`] (or by
/// [`Operator::validate`]).
#[derive(Clone, Debug)]
pub enum Operator {
    /// `A = I_d`.
    Identity {
        /// The dimension `d = m`.
        dim: usize,
    },
    /// A dense `m x d` matrix.
    Dense(DMatrix<f64>),
    /// Pixel mask (inpainting): `y_i = x[keep[i]]`, `m = keep.len()`.
    Mask {
        /// The input dimension `d`.
        dim: usize,
        /// The kept coordinates, in output order, distinct, each `< dim`.
        keep: Vec<usize>,
    },
    /// Coordinate subsampling: every `stride`-th coordinate from `offset`.
    ///
    /// ```text
    /// y_i = x[offset + i stride],  i = 0..m,  m = ceil((d - offset)/stride)
    /// ```
    Subsample {
        /// The input dimension `d`.
        dim: usize,
        /// The step between kept coordinates, at least 1.
        stride: usize,
        /// The first kept coordinate, less than `dim`.
        offset: usize,
    },
    /// A 2-D convolution of an image stored row-major; see [`Blur`].
    Blur(Blur),
    /// A nonlinear map; see [`NonlinearMap`].
    Nonlinear(NonlinearMap),
}

/// A 2-D convolution with zero padding and "same" output size.
///
/// The vector `x` of length `d = height * width` holds an image row by row
/// (`x[r * width + c]`). With a kernel of odd size `kh x kw` and centre
/// `(ch, cw) = (kh/2, kw/2)`:
///
/// ```text
/// y[r, c] = sum_{a, b} k[a, b] x[r - a + ch, c - b + cw]
/// ```
///
/// with `x` zero outside the image. This is a true convolution, so the
/// image of a centred delta is the kernel itself, unflipped. The adjoint is
/// the correlation with the same kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Blur {
    /// Image height (rows).
    pub height: usize,
    /// Image width (columns).
    pub width: usize,
    /// The kernel, odd in both sizes, finite.
    pub kernel: DMatrix<f64>,
}

impl Blur {
    /// A blur with a normalised isotropic Gaussian kernel of `size x size`
    /// taps:
    ///
    /// ```text
    /// k[a, b] ∝ exp(-((a - c)^2 + (b - c)^2) / (2 std^2)),  c = size/2,
    /// sum k = 1
    /// ```
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error when `std` is not positive and
    /// finite, `size` is even, or the image is empty.
    pub fn gaussian(
        height: usize,
        width: usize,
        std: f64,
        size: usize,
    ) -> Result<Blur> {
        ensure!(
            std.is_finite() && std > 0.0,
            "forward.blur.std must be positive, got {std}"
        );
        ensure!(size % 2 == 1, "forward.blur.size must be odd, got {size}");
        let centre = (size / 2) as f64;
        let mut kernel = DMatrix::from_fn(size, size, |a, b| {
            let (da, db) = (a as f64 - centre, b as f64 - centre);
            (-(da * da + db * db) / (2.0 * std * std)).exp()
        });
        kernel /= kernel.sum();
        let blur = Blur { height, width, kernel };
        blur.validate()?;
        Ok(blur)
    }

    /// Checks the image shape and the kernel.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error naming the field and value.
    pub fn validate(&self) -> Result<()> {
        let (height, width) = (self.height, self.width);
        ensure!(height >= 1, "forward.height must be at least 1, got 0");
        ensure!(width >= 1, "forward.width must be at least 1, got 0");
        let (rows, cols) = self.kernel.shape();
        ensure!(
            rows % 2 == 1 && cols % 2 == 1,
            "forward.kernel must have odd sizes, got {rows}x{cols}"
        );
        if let Some(index) = self.kernel.iter().position(|v| !v.is_finite()) {
            let value = self.kernel[index];
            let (a, b) = (index % rows, index / rows);
            return Err(Error::invalid(format!(
                "forward.kernel[{a}][{b}] must be finite, got {value}"
            )));
        }
        Ok(())
    }

    fn dim(&self) -> usize {
        self.height * self.width
    }

    /// Convolves (`adjoint = false`) or correlates (`adjoint = true`) one
    /// image.
    fn filter(&self, x: &[f64], out: &mut [f64], adjoint: bool) {
        let (rows, cols) = self.kernel.shape();
        let (ch, cw) = ((rows / 2) as isize, (cols / 2) as isize);
        let (height, width) = (self.height as isize, self.width as isize);
        for r in 0..height {
            for c in 0..width {
                let mut acc = 0.0;
                for a in 0..rows as isize {
                    // Convolution reads x[r - a + ch]; its adjoint reads
                    // x[r + a - ch].
                    let rr = if adjoint { r + a - ch } else { r - a + ch };
                    if !(0..height).contains(&rr) {
                        continue;
                    }
                    for b in 0..cols as isize {
                        let cc = if adjoint { c + b - cw } else { c - b + cw };
                        if !(0..width).contains(&cc) {
                            continue;
                        }
                        let k = self.kernel[(a as usize, b as usize)];
                        acc += k * x[(rr * width + cc) as usize];
                    }
                }
                out[(r * width + c) as usize] = acc;
            }
        }
    }
}

/// A named nonlinear forward map with its input and output dimensions.
///
/// Exact posteriors through a nonlinear map exist only for atom priors
/// (the atoms are reweighted by the likelihood); the truth module refuses
/// other priors.
#[derive(Clone)]
pub struct NonlinearMap {
    name: String,
    input_dim: usize,
    output_dim: usize,
    map: Arc<MapFn>,
}

impl NonlinearMap {
    /// A map from `R^input_dim` to `R^output_dim`. `map` must return a
    /// vector of length `output_dim`; [`ForwardModel::apply`] panics if it
    /// does not.
    pub fn new(
        name: impl Into<String>,
        input_dim: usize,
        output_dim: usize,
        map: Arc<MapFn>,
    ) -> NonlinearMap {
        NonlinearMap { name: name.into(), input_dim, output_dim, map }
    }

    /// Elementwise absolute value, `y_i = |x_i|` (phase-retrieval-like:
    /// the sign is lost, so symmetric atoms stay tied).
    pub fn abs(dim: usize) -> NonlinearMap {
        NonlinearMap::new("abs", dim, dim, Arc::new(|x| x.abs()))
    }

    /// Elementwise square, `y_i = x_i^2`.
    pub fn square(dim: usize) -> NonlinearMap {
        NonlinearMap::new("square", dim, dim, Arc::new(|x| x.map(|v| v * v)))
    }

    /// The Euclidean norm, `y = |x|_2` (`m = 1`).
    pub fn norm(dim: usize) -> NonlinearMap {
        NonlinearMap::new(
            "norm",
            dim,
            1,
            Arc::new(|x| DVector::from_element(1, x.norm())),
        )
    }

    /// The map's name (`abs`, `square`, `norm` for the built-in ones).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    /// The output dimension `m`.
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// Applies the map.
    pub fn call(&self, x: DVectorView<f64>) -> DVector<f64> {
        (self.map)(x)
    }
}

impl fmt::Debug for NonlinearMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonlinearMap")
            .field("name", &self.name)
            .field("input_dim", &self.input_dim)
            .field("output_dim", &self.output_dim)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        match self {
            Operator::Identity { dim }
            | Operator::Mask { dim, .. }
            | Operator::Subsample { dim, .. } => *dim,
            Operator::Dense(matrix) => matrix.ncols(),
            Operator::Blur(blur) => blur.dim(),
            Operator::Nonlinear(map) => map.input_dim,
        }
    }

    /// The output dimension `m`.
    pub fn output_dim(&self) -> usize {
        match self {
            Operator::Identity { dim } => *dim,
            Operator::Dense(matrix) => matrix.nrows(),
            Operator::Mask { keep, .. } => keep.len(),
            Operator::Subsample { dim, stride, offset } => {
                dim.saturating_sub(*offset).div_ceil(*stride.max(&1))
            }
            Operator::Blur(blur) => blur.dim(),
            Operator::Nonlinear(map) => map.output_dim,
        }
    }

    /// Whether the operator is linear (everything but
    /// [`Operator::Nonlinear`]).
    pub fn is_linear(&self) -> bool {
        !matches!(self, Operator::Nonlinear(_))
    }

    /// Checks shapes and values.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error naming the field and value:
    /// an empty input or output, a mask index out of range or repeated, a
    /// zero stride, an offset past the end, an even or non-finite kernel,
    /// a non-finite matrix entry.
    pub fn validate(&self) -> Result<()> {
        match self {
            Operator::Identity { dim } => {
                ensure!(*dim >= 1, "forward.dim must be at least 1, got 0");
            }
            Operator::Dense(matrix) => {
                let (rows, cols) = matrix.shape();
                ensure!(
                    rows >= 1 && cols >= 1,
                    "forward.matrix must not be empty, got {rows}x{cols}"
                );
                if let Some(index) = matrix.iter().position(|v| !v.is_finite())
                {
                    let value = matrix[index];
                    let (i, j) = (index % rows, index / rows);
                    return Err(Error::invalid(format!(
                        "forward.matrix[{i}][{j}] must be finite, got {value}"
                    )));
                }
            }
            Operator::Mask { dim, keep } => {
                let dim = *dim;
                ensure!(dim >= 1, "forward.dim must be at least 1, got 0");
                ensure!(!keep.is_empty(), "forward.keep must not be empty");
                let mut seen = vec![false; dim];
                for (i, &index) in keep.iter().enumerate() {
                    ensure!(
                        index < dim,
                        "forward.keep[{i}] must be less than dim {dim}, \
                         got {index}"
                    );
                    ensure!(
                        !seen[index],
                        "forward.keep[{i}] repeats an earlier index, \
                         got {index}"
                    );
                    seen[index] = true;
                }
            }
            Operator::Subsample { dim, stride, offset } => {
                let (dim, offset) = (*dim, *offset);
                ensure!(dim >= 1, "forward.dim must be at least 1, got 0");
                ensure!(
                    *stride >= 1,
                    "forward.stride must be at least 1, got 0"
                );
                ensure!(
                    offset < dim,
                    "forward.offset must be less than dim {dim}, \
                     got {offset}"
                );
            }
            Operator::Blur(blur) => blur.validate()?,
            Operator::Nonlinear(map) => {
                let (d, m) = (map.input_dim, map.output_dim);
                ensure!(d >= 1, "forward.input_dim must be at least 1, got 0");
                ensure!(m >= 1, "forward.output_dim must be at least 1, got 0");
            }
        }
        Ok(())
    }

    /// The kept input coordinates of a selection operator (identity, mask,
    /// subsample), in output order.
    fn selection(&self) -> Option<Vec<usize>> {
        match self {
            Operator::Identity { dim } => Some((0..*dim).collect()),
            Operator::Mask { keep, .. } => Some(keep.clone()),
            Operator::Subsample { dim, stride, offset } => {
                Some((*offset..*dim).step_by(*stride).collect())
            }
            _ => None,
        }
    }
}

/// A thin singular value decomposition `A = U diag(s) V^T`.
///
/// `u` is `m x r`, `v` is `d x r`, both with orthonormal columns,
/// `r = min(m, d)`, and `singular_values` is sorted in decreasing order
/// (it may end in zeros for rank-deficient operators).
#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// Left singular vectors, `m x r`.
    pub u: DMatrix<f64>,
    /// Singular values, decreasing, length `r`.
    pub singular_values: DVector<f64>,
    /// Right singular vectors, `d x r`.
    pub v: DMatrix<f64>,
}

/// A forward model `y = A(x0) + b + n`, `n ~ N(0, noise_std^2 I_m)`.
///
/// Built by [`ForwardModel::new`], which validates the operator, so every
/// model in hand is well formed.
#[derive(Clone, Debug)]
pub struct ForwardModel {
    operator: Operator,
    noise_std: f64,
    bias: Option<DVector<f64>>,
    /// The SVD, computed on first use (`None` inside for nonlinear maps).
    svd: OnceLock<Option<Svd>>,
}

impl ForwardModel {
    /// A forward model without bias.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error when `noise_std` is not finite
    /// and positive (`forward.noise_std must be positive, got 0`) or the
    /// operator fails [`Operator::validate`].
    pub fn new(operator: Operator, noise_std: f64) -> Result<ForwardModel> {
        ensure!(
            noise_std.is_finite() && noise_std > 0.0,
            "forward.noise_std must be positive, got {noise_std}"
        );
        operator.validate()?;
        Ok(ForwardModel {
            operator,
            noise_std,
            bias: None,
            svd: OnceLock::new(),
        })
    }

    /// Adds the bias `b` to the model's output.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::InvalidInput`] error when the length is not the
    /// output dimension or an entry is not finite.
    pub fn with_bias(mut self, bias: DVector<f64>) -> Result<ForwardModel> {
        let m = self.output_dim();
        let len = bias.len();
        ensure!(
            len == m,
            "forward.bias must have length {m} (the output dimension), \
             got {len}"
        );
        if let Some(i) = bias.iter().position(|v| !v.is_finite()) {
            let value = bias[i];
            return Err(Error::invalid(format!(
                "forward.bias[{i}] must be finite, got {value}"
            )));
        }
        self.bias = Some(bias);
        Ok(self)
    }

    /// The operator `A`.
    pub fn operator(&self) -> &Operator {
        &self.operator
    }

    /// The noise standard deviation.
    pub fn noise_std(&self) -> f64 {
        self.noise_std
    }

    /// The bias `b`, if any.
    pub fn bias(&self) -> Option<&DVector<f64>> {
        self.bias.as_ref()
    }

    /// The input dimension `d`.
    pub fn input_dim(&self) -> usize {
        self.operator.input_dim()
    }

    /// The output dimension `m`.
    pub fn output_dim(&self) -> usize {
        self.operator.output_dim()
    }

    /// Whether the operator is linear.
    pub fn is_linear(&self) -> bool {
        self.operator.is_linear()
    }

    /// The noise-free measurement `A(x) + b`.
    ///
    /// # Panics
    ///
    /// When `x.len() != input_dim()`, or a nonlinear map returns a vector
    /// of the wrong length.
    pub fn apply(&self, x: DVectorView<f64>) -> DVector<f64> {
        self.check_input(x.len());
        let mut y = self.apply_operator(x);
        if let Some(bias) = &self.bias {
            y += bias;
        }
        y
    }

    /// `A(x)` without the bias.
    fn apply_operator(&self, x: DVectorView<f64>) -> DVector<f64> {
        match &self.operator {
            Operator::Dense(matrix) => matrix * x,
            Operator::Blur(blur) => {
                let mut y = DVector::zeros(blur.dim());
                blur.filter(x.as_slice(), y.as_mut_slice(), false);
                y
            }
            Operator::Nonlinear(map) => {
                let y = map.call(x);
                assert_eq!(
                    y.len(),
                    map.output_dim,
                    "nonlinear map {} returned the wrong length",
                    map.name
                );
                y
            }
            selection => {
                let keep = selection.selection().expect("selection operator");
                DVector::from_iterator(keep.len(), keep.iter().map(|&i| x[i]))
            }
        }
    }

    /// [`ForwardModel::apply`] on every row of `xs` (`n x d` to `n x m`):
    /// one matrix product for dense operators, a column gather for the
    /// selections.
    ///
    /// # Panics
    ///
    /// When `xs.ncols() != input_dim()`.
    pub fn apply_batch(&self, xs: &DMatrix<f64>) -> DMatrix<f64> {
        self.check_input(xs.ncols());
        let mut ys = match &self.operator {
            Operator::Dense(matrix) => xs * matrix.transpose(),
            Operator::Blur(_) | Operator::Nonlinear(_) => {
                let m = self.output_dim();
                let mut ys = DMatrix::zeros(xs.nrows(), m);
                for (i, row) in xs.row_iter().enumerate() {
                    let y = self.apply_operator(row.transpose().as_view());
                    ys.set_row(i, &y.transpose());
                }
                ys
            }
            selection => {
                let keep = selection.selection().expect("selection operator");
                xs.select_columns(keep.iter())
            }
        };
        if let Some(bias) = &self.bias {
            for mut row in ys.row_iter_mut() {
                row += bias.transpose();
            }
        }
        ys
    }

    /// The adjoint of the linear part, `A^T v` (no bias).
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Usage`] error for a nonlinear map.
    ///
    /// # Panics
    ///
    /// When `v.len() != output_dim()`.
    pub fn adjoint(&self, v: DVectorView<f64>) -> Result<DVector<f64>> {
        self.check_output(v.len());
        let d = self.input_dim();
        match &self.operator {
            Operator::Dense(matrix) => Ok(matrix.tr_mul(&v)),
            Operator::Blur(blur) => {
                let mut x = DVector::zeros(d);
                blur.filter(v.as_slice(), x.as_mut_slice(), true);
                Ok(x)
            }
            Operator::Nonlinear(map) => Err(not_linear(map, "adjoint")),
            selection => {
                let keep = selection.selection().expect("selection operator");
                let mut x = DVector::zeros(d);
                for (&i, &value) in keep.iter().zip(v.iter()) {
                    x[i] = value;
                }
                Ok(x)
            }
        }
    }

    /// [`ForwardModel::adjoint`] on every row of `vs` (`n x m` to `n x d`).
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Usage`] error for a nonlinear map.
    ///
    /// # Panics
    ///
    /// When `vs.ncols() != output_dim()`.
    pub fn adjoint_batch(&self, vs: &DMatrix<f64>) -> Result<DMatrix<f64>> {
        self.check_output(vs.ncols());
        let (n, d) = (vs.nrows(), self.input_dim());
        match &self.operator {
            Operator::Dense(matrix) => Ok(vs * matrix),
            Operator::Blur(blur) => {
                let mut xs = DMatrix::zeros(n, d);
                let mut x = vec![0.0; d];
                for (i, row) in vs.row_iter().enumerate() {
                    let v: Vec<f64> = row.iter().copied().collect();
                    blur.filter(&v, &mut x, true);
                    for (j, &value) in x.iter().enumerate() {
                        xs[(i, j)] = value;
                    }
                }
                Ok(xs)
            }
            Operator::Nonlinear(map) => Err(not_linear(map, "adjoint")),
            selection => {
                let keep = selection.selection().expect("selection operator");
                let mut xs = DMatrix::zeros(n, d);
                for (k, &i) in keep.iter().enumerate() {
                    xs.set_column(i, &vs.column(k));
                }
                Ok(xs)
            }
        }
    }

    /// The dense `m x d` matrix of the linear part (built column by column
    /// for the blur), `None` for a nonlinear map.
    pub fn matrix(&self) -> Option<DMatrix<f64>> {
        let (m, d) = (self.output_dim(), self.input_dim());
        match &self.operator {
            Operator::Dense(matrix) => Some(matrix.clone()),
            Operator::Blur(blur) => {
                let mut a = DMatrix::zeros(m, d);
                let mut e = vec![0.0; d];
                let mut column = vec![0.0; m];
                for j in 0..d {
                    e[j] = 1.0;
                    blur.filter(&e, &mut column, false);
                    e[j] = 0.0;
                    a.column_mut(j).copy_from_slice(&column);
                }
                Some(a)
            }
            Operator::Nonlinear(_) => None,
            selection => {
                let keep = selection.selection().expect("selection operator");
                let mut a = DMatrix::zeros(m, d);
                for (k, &i) in keep.iter().enumerate() {
                    a[(k, i)] = 1.0;
                }
                Some(a)
            }
        }
    }

    /// The thin SVD of the linear part, computed on first use and cached;
    /// `None` for a nonlinear map.
    ///
    /// Selections (identity, mask, subsample) take a fast path: all
    /// singular values are 1, `U = I_m` and the columns of `V` are the
    /// selected coordinate vectors. Dense and blur operators go through
    /// nalgebra's SVD of [`ForwardModel::matrix`].
    pub fn svd(&self) -> Option<&Svd> {
        self.svd.get_or_init(|| self.compute_svd()).as_ref()
    }

    fn compute_svd(&self) -> Option<Svd> {
        if let Some(keep) = self.operator.selection() {
            let (m, d) = (keep.len(), self.input_dim());
            let mut v = DMatrix::zeros(d, m);
            for (k, &i) in keep.iter().enumerate() {
                v[(i, k)] = 1.0;
            }
            return Some(Svd {
                u: DMatrix::identity(m, m),
                singular_values: DVector::from_element(m, 1.0),
                v,
            });
        }
        let a = self.matrix()?;
        let svd = a.svd(true, true);
        Some(Svd {
            u: svd.u.expect("u was requested"),
            singular_values: svd.singular_values,
            v: svd.v_t.expect("v_t was requested").transpose(),
        })
    }

    /// The minimum-norm least-squares solution `A^+ (y - b)`.
    ///
    /// ```text
    /// A^+ = V diag(1/s_i for s_i > tol, else 0) U^T,
    /// tol = max(m, d) eps s_max   (NumPy's pinv default)
    /// ```
    ///
    /// Selections skip the SVD: `A^+ = A^T`.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Usage`] error for a nonlinear map.
    ///
    /// # Panics
    ///
    /// When `y.len() != output_dim()`.
    pub fn pseudo_inverse_apply(
        &self,
        y: DVectorView<f64>,
    ) -> Result<DVector<f64>> {
        self.check_output(y.len());
        let centred = match &self.bias {
            Some(bias) => y - bias,
            None => y.into_owned(),
        };
        if let Operator::Nonlinear(map) = &self.operator {
            return Err(not_linear(map, "pseudo-inverse"));
        }
        if self.operator.selection().is_some() {
            return self.adjoint(centred.column(0));
        }

        let svd = self.svd().expect("linear operators have an svd");
        let s_max = svd.singular_values.max();
        let size = self.input_dim().max(self.output_dim()) as f64;
        let tol = size * f64::EPSILON * s_max;
        let mut coefficients = svd.u.tr_mul(&centred);
        for (c, &s) in coefficients.iter_mut().zip(svd.singular_values.iter()) {
            *c = if s > tol { *c / s } else { 0.0 };
        }
        Ok(&svd.v * coefficients)
    }

    /// The log-likelihood `log N(y; A(x) + b, noise_std^2 I_m)`.
    ///
    /// ```text
    /// -m/2 ln(2 pi noise_std^2) - |y - A(x) - b|^2 / (2 noise_std^2)
    /// ```
    ///
    /// # Panics
    ///
    /// When `y` or `x` has the wrong length.
    pub fn log_likelihood(
        &self,
        y: DVectorView<f64>,
        x: DVectorView<f64>,
    ) -> f64 {
        self.check_output(y.len());
        let residual = self.apply(x) - y;
        self.log_normaliser() - residual.norm_squared() * self.half_precision()
    }

    /// [`ForwardModel::log_likelihood`] for every row of `xs`, as a vector
    /// of length `n`.
    ///
    /// # Panics
    ///
    /// When `y` or `xs` has the wrong shape.
    pub fn log_likelihood_batch(
        &self,
        y: DVectorView<f64>,
        xs: &DMatrix<f64>,
    ) -> DVector<f64> {
        self.check_output(y.len());
        let predictions = self.apply_batch(xs);
        let (normaliser, half_precision) =
            (self.log_normaliser(), self.half_precision());
        DVector::from_iterator(
            xs.nrows(),
            predictions.row_iter().map(|row| {
                let squared: f64 = row
                    .iter()
                    .zip(y.iter())
                    .map(|(p, o)| (p - o).powi(2))
                    .sum();
                normaliser - squared * half_precision
            }),
        )
    }

    /// Draws `y = A(x) + b + noise_std z`, `z ~ N(0, I_m)`.
    ///
    /// # Panics
    ///
    /// When `x.len() != input_dim()`.
    pub fn sample_observation<R: rand::Rng + ?Sized>(
        &self,
        x: DVectorView<f64>,
        rng: &mut R,
    ) -> DVector<f64> {
        let mut y = self.apply(x);
        for value in y.iter_mut() {
            let z: f64 = StandardNormal.sample(rng);
            *value += self.noise_std * z;
        }
        y
    }

    fn log_normaliser(&self) -> f64 {
        let m = self.output_dim() as f64;
        -0.5 * m * (2.0 * std::f64::consts::PI).ln() - m * self.noise_std.ln()
    }

    fn half_precision(&self) -> f64 {
        0.5 / (self.noise_std * self.noise_std)
    }

    fn check_input(&self, len: usize) {
        let d = self.input_dim();
        assert_eq!(len, d, "forward model input has length {len}, not {d}");
    }

    fn check_output(&self, len: usize) {
        let m = self.output_dim();
        assert_eq!(len, m, "forward model output has length {len}, not {m}");
    }
}

fn not_linear(map: &NonlinearMap, what: &str) -> Error {
    Error::new(
        ErrorKind::Usage,
        format!(
            "forward.{what} is not defined for the nonlinear map {}",
            map.name
        ),
    )
}

#[cfg(test)]
mod tests;
