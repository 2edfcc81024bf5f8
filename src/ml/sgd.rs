//! Streaming linear / logistic regression with SGD, as Spark MLlib 4.0.1 trains one
//! batch in `StreamingLinearRegressionWithSGD` / `StreamingLogisticRegressionWithSGD`:
//! `GradientDescent.runMiniBatchSGD` with `LeastSquaresGradient` + `SimpleUpdater`, or
//! `LogisticGradient` (binary) + `SquaredL2Updater` with regParam 0, bit for bit.
//!
//! Owns: [`SgdParams`] (Spark's setter rules), [`LinearModel`], [`train_batch`] and the
//! matching [`predict`] / [`predict_probability`]. The intercept is never trained
//! (Spark's streaming classes do not fit one) but is used by prediction.
//!
//! Limits (numbers): 1..=[`super::DIMS_MAX`] features, 0..=[`super::ITERATIONS_MAX`]
//! iterations, `step_size` finite and > 0, `mini_batch_fraction` in (0, 1],
//! `convergence_tol` in [0, 1], all values finite, logistic labels exactly 0 or 1.
//! With `mini_batch_fraction < 1` the points are drawn by this crate's own Bernoulli
//! sampler (SplitMix64), not Spark's, so results then differ from Spark. Logistic
//! `Math.exp` is Rust's libm `exp`: the JDK 17 x86-64 `exp` is not correctly rounded and
//! differed by 1 ulp on 5 of 3 000 recorded arguments, so logistic weights can drift from
//! Spark's by a few ulps (relative ~1e-15) over many iterations; squared loss is exact.
//! The loss history Spark computes is not computed.
//!
//! Must never: change the model on error or on an empty batch, store NaN or infinite
//! weights (a diverging step is reported as [`MlError::Diverged`]), reorder a sum, or
//! use a fused multiply-add where Spark's BLAS does not.

use super::javablas::{daxpy, ddot, java_max};
use super::rng::SplitMix64;
use super::{check_vector, MlError, DIMS_MAX, ITERATIONS_MAX};

/// Spark's `GradientDescent` settings. `Default` is the streaming classes' default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Initial step; iteration `i` uses `step_size / sqrt(i)`.
    pub step_size: f64,
    /// Updates per batch at most.
    pub num_iterations: usize,
    /// Fraction of the batch used per iteration; 1.0 uses every point in order.
    pub mini_batch_fraction: f64,
    /// Stop when `||w_prev - w|| < tol * max(||w||, 1)`, checked from the 2nd update.
    pub convergence_tol: f64,
}

impl Default for SgdParams {
    fn default() -> Self {
        SgdParams {
            step_size: 0.1,
            num_iterations: 50,
            mini_batch_fraction: 1.0,
            convergence_tol: 0.001,
        }
    }
}

impl SgdParams {
    /// Spark's setter `require`s, plus finiteness and [`super::ITERATIONS_MAX`].
    pub fn validate(&self) -> Result<(), MlError> {
        let bad = |name, value, rule| Err(MlError::InvalidParameter { name, value, rule });
        if !(self.step_size > 0.0 && self.step_size.is_finite()) {
            return bad("step size", self.step_size, "a finite number above 0");
        }
        if !(self.mini_batch_fraction > 0.0 && self.mini_batch_fraction <= 1.0) {
            return bad(
                "mini-batch fraction",
                self.mini_batch_fraction,
                "above 0 and at most 1",
            );
        }
        if !(self.convergence_tol >= 0.0 && self.convergence_tol <= 1.0) {
            return bad(
                "convergence tolerance",
                self.convergence_tol,
                "between 0 and 1",
            );
        }
        if self.num_iterations > ITERATIONS_MAX {
            return Err(MlError::TooLarge {
                what: "the number of iterations",
                value: self.num_iterations,
                limit: ITERATIONS_MAX,
            });
        }
        Ok(())
    }
}

/// Which gradient (and prediction) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Least squares: gradient `(w.x - y) x`; prediction `w.x + intercept`.
    Squared,
    /// Binary logistic: gradient `(1 / (1 + exp(-w.x)) - y) x`; prediction 0 or 1.
    Logistic,
}

/// Weights and intercept (Spark's `GeneralizedLinearModel`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearModel {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// Added to every prediction's margin; never trained (Spark's
    /// streaming regressions fit no intercept).
    pub intercept: f64,
}

/// What one `train_batch` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SgdInfo {
    /// Weight updates applied (0 for an empty batch).
    pub iterations: usize,
    /// Whether the convergence test stopped the loop early.
    pub converged: bool,
    /// Iterations skipped because the sampled mini-batch was empty (fraction < 1).
    pub empty_samples: usize,
}

/// Validates the model and returns the number of features.
pub(super) fn check_model(model: &LinearModel) -> Result<usize, MlError> {
    let dim = model.weights.len();
    if dim == 0 {
        return Err(MlError::EmptyModel);
    }
    if dim > DIMS_MAX {
        return Err(MlError::TooLarge {
            what: "the number of features",
            value: dim,
            limit: DIMS_MAX,
        });
    }
    if model.weights.iter().any(|w| !w.is_finite()) {
        return Err(MlError::NonFinite {
            what: "model weights",
            index: None,
        });
    }
    if !model.intercept.is_finite() {
        return Err(MlError::NonFinite {
            what: "model intercept",
            index: None,
        });
    }
    Ok(dim)
}

fn check_points(points: &[(f64, Vec<f64>)], dim: usize, loss: Loss) -> Result<(), MlError> {
    for (i, (label, x)) in points.iter().enumerate() {
        check_vector(x, dim, "feature vector", Some(i))?;
        if !label.is_finite() {
            return Err(MlError::NonFinite {
                what: "label",
                index: Some(i),
            });
        }
        // Spark's DataValidators.binaryLabelValidator (the batch fails otherwise).
        if loss == Loss::Logistic && *label != 0.0 && *label != 1.0 {
            return Err(MlError::InvalidLabel {
                index: i,
                value: *label,
            });
        }
    }
    Ok(())
}

/// Trains `model.weights` on one batch (`(label, features)` in input order), as one
/// `GeneralizedLinearAlgorithm.run` does. An empty batch leaves the model unchanged
/// (pyspark and Scala skip it). `seed` is only used when `mini_batch_fraction < 1`.
pub fn train_batch(
    model: &mut LinearModel,
    points: &[(f64, Vec<f64>)],
    params: &SgdParams,
    loss: Loss,
    seed: u64,
) -> Result<SgdInfo, MlError> {
    params.validate()?;
    let dim = check_model(model)?;
    check_points(points, dim, loss)?;
    if points.is_empty() {
        return Ok(SgdInfo::default());
    }
    let (weights, info) = run_mini_batch_sgd(&model.weights, points, params, loss, seed);
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(MlError::Diverged {
            what: "regression weights",
        });
    }
    model.weights = weights;
    Ok(info)
}

/// The iteration loop of `runMiniBatchSGD` (the extra loss-only pass Spark runs after
/// the last update changes nothing and is left out).
fn run_mini_batch_sgd(
    initial: &[f64],
    points: &[(f64, Vec<f64>)],
    params: &SgdParams,
    loss: Loss,
    seed: u64,
) -> (Vec<f64>, SgdInfo) {
    let mut w = initial.to_vec();
    let mut grad = vec![0.0; w.len()];
    let mut previous: Option<Vec<f64>> = None;
    let mut info = SgdInfo::default();
    for i in 1..=params.num_iterations {
        let count = gradient_sum(
            points,
            &w,
            params.mini_batch_fraction,
            loss,
            seed,
            i,
            &mut grad,
        );
        if count == 0 {
            info.empty_samples += 1;
            continue;
        }
        apply_update(&mut w, &grad, count, params.step_size, i, loss);
        info.iterations += 1;
        if let Some(prev) = &previous {
            if is_converged(prev, &w, params.convergence_tol) {
                info.converged = true;
                break;
            }
        }
        previous = Some(w.clone());
    }
    (w, info)
}

/// Sum of per-point gradients into `grad` (reset to 0.0 first) over the sampled
/// points, in input order; returns how many points were sampled.
fn gradient_sum(
    points: &[(f64, Vec<f64>)],
    w: &[f64],
    fraction: f64,
    loss: Loss,
    seed: u64,
    iteration: usize,
    grad: &mut [f64],
) -> u64 {
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut sampler = (fraction < 1.0).then(|| SplitMix64::new(sample_seed(seed, iteration)));
    let mut count = 0u64;
    for (label, x) in points {
        if let Some(rng) = sampler.as_mut() {
            if rng.next_f64() >= fraction {
                continue;
            }
        }
        add_gradient(loss, x, *label, w, grad);
        count += 1;
    }
    count
}

/// Seed of iteration `i`'s sampler: `seed + 42 + i` (Spark seeds its sampler with
/// `42 + i`; the stream itself is SplitMix64, not Spark's).
fn sample_seed(seed: u64, iteration: usize) -> u64 {
    seed.wrapping_add(42).wrapping_add(iteration as u64)
}

/// `LeastSquaresGradient.compute` / `LogisticGradient.compute` (2 classes), adding
/// into `grad` with Spark's BLAS `axpy`.
fn add_gradient(loss: Loss, x: &[f64], label: f64, w: &[f64], grad: &mut [f64]) {
    let multiplier = match loss {
        Loss::Squared => ddot(x, w) - label,
        Loss::Logistic => {
            let margin = -ddot(x, w); // Spark's `-1.0 * dot`: exactly a negation
            (1.0 / (1.0 + margin.exp())) - label
        }
    };
    daxpy(multiplier, x, grad);
}

/// `gradientSum / miniBatchSize`, then the updater at iteration `i`:
/// `step = stepSize / sqrt(i)`; logistic (SquaredL2Updater, regParam 0) first scales
/// `w *= 1 - step * 0`; then breeze `axpy`: `w_j = w_j + g_j * (-step)`.
fn apply_update(w: &mut [f64], grad: &[f64], count: u64, step_size: f64, i: usize, loss: Loss) {
    let n = count as f64;
    let step = step_size / (i as f64).sqrt();
    let scale = 1.0 - step * 0.0;
    for (wj, gj) in w.iter_mut().zip(grad) {
        let g = gj / n;
        if loss == Loss::Logistic {
            *wj *= scale;
        }
        *wj += g * -step;
    }
}

/// `GradientDescent.isConverged`: `norm(prev - cur) < tol * max(norm(cur), 1.0)`.
fn is_converged(prev: &[f64], cur: &[f64], tol: f64) -> bool {
    let mut diff_sq = 0.0;
    for (p, c) in prev.iter().zip(cur) {
        let d = p - c;
        diff_sq += d * d;
    }
    let cur_norm = super::javablas::norm2(cur);
    diff_sq.sqrt() < tol * java_max(cur_norm, 1.0)
}

/// Spark's `predictPoint`: `dot(w, x) + intercept` for [`Loss::Squared`]; for
/// [`Loss::Logistic`] 1.0 if `1 / (1 + exp(-margin)) > 0.5`, else 0.0 (strictly
/// greater: probability exactly 0.5 predicts 0).
pub fn predict(model: &LinearModel, x: &[f64], loss: Loss) -> Result<f64, MlError> {
    let margin = margin(model, x)?;
    Ok(match loss {
        Loss::Squared => margin,
        Loss::Logistic => {
            if sigmoid(margin) > 0.5 {
                1.0
            } else {
                0.0
            }
        }
    })
}

/// Logistic probability of class 1, `1 / (1 + exp(-margin))` (Spark's Scala
/// `predictPoint` with the threshold cleared).
pub fn predict_probability(model: &LinearModel, x: &[f64]) -> Result<f64, MlError> {
    Ok(sigmoid(margin(model, x)?))
}

fn margin(model: &LinearModel, x: &[f64]) -> Result<f64, MlError> {
    let dim = check_model(model)?;
    check_vector(x, dim, "feature vector", None)?;
    Ok(ddot(&model.weights, x) + model.intercept)
}

fn sigmoid(margin: f64) -> f64 {
    1.0 / (1.0 + (-margin).exp())
}
