//! The streaming operators: Spark's `StreamingKMeans`,
//! `StreamingLinearRegressionWithSGD` and
//! `StreamingLogisticRegressionWithSGD` on DStreams.
//!
//! `train_on` adds one stateful operator whose state is the model
//! (`DStream::one_value_state`): every batch trains the committed model on
//! the batch, emits the new one, and commits it with the batch, so a
//! replayed batch trains from the same model to the same model and a
//! crash never trains twice. `predict_on` maps another stream with the
//! model of the same batch (after training on it, as Spark's `predictOn`
//! sees its model once `trainOn`'s output has run).
//!
//! Operator parameters recorded in the checkpoint (a change is refused at
//! start; `weir checkpoint reset-operator DIR NAME` starts the model over):
//! k-means `k` and `dim`; regressions `features`. Learning settings (decay,
//! step size, iterations) may change between runs.
//!
//! Limits: one model per operator, within [`super`]'s numbers (k at most
//! 100,000, k·dim at most 4,000,000, at most 1,000,000 features and
//! 1,000,000 SGD iterations per batch). A k-means batch is summed
//! partition by partition in parallel, its points lent, never copied or
//! held; an SGD batch is held in memory whole (its points, in partition
//! order) and run on one thread. Must never: train a model on a batch
//! twice, or emit a prediction with another batch's model.

use std::sync::{Arc, Mutex};

use super::kmeans::{decay_for_half_life, random_centers, ClusterSums, KMeansModel, TimeUnit};
use super::sgd::{self, LinearModel, Loss, SgdParams};
use super::MlError;
use crate::dstream::{BatchCtx, BoxError, DStream, Data, EngineError, PartFn};

/// Streaming k-means with Spark MLlib's update rule. Build it, give it
/// initial centers ([`Self::initial_centers`] or [`Self::random_centers`]),
/// then [`Self::train_on`] a stream of points.
#[derive(Debug, Clone)]
pub struct StreamingKMeans {
    k: usize,
    decay_factor: f64,
    /// A half-life given instead of the decay (checked at `train_on`).
    half_life: Option<f64>,
    time_unit: TimeUnit,
    initial: Option<KMeansModel>,
}

impl StreamingKMeans {
    /// `k` clusters, decay factor 1.0 (remember everything), time unit
    /// batches: Spark's defaults.
    pub fn new(k: usize) -> Self {
        StreamingKMeans {
            k,
            decay_factor: 1.0,
            half_life: None,
            time_unit: TimeUnit::Batches,
            initial: None,
        }
    }

    /// The forgetfulness: weights are multiplied by it every batch (or,
    /// with [`TimeUnit::Points`], by it to the power of the batch's
    /// points). 0 keeps only the newest batch; 1 keeps everything.
    pub fn decay_factor(mut self, a: f64) -> Self {
        self.decay_factor = a;
        self.half_life = None;
        self
    }

    /// What one unit of forgetting is.
    pub fn time_unit(mut self, unit: TimeUnit) -> Self {
        self.time_unit = unit;
        self
    }

    /// Spark's `setHalfLife`: after `half_life` units (batches or points)
    /// a point's weight is halved: decay `exp(ln 0.5 / half_life)`.
    pub fn half_life(mut self, half_life: f64, unit: TimeUnit) -> Self {
        self.decay_factor = decay_for_half_life(half_life);
        self.half_life = Some(half_life);
        self.time_unit = unit;
        self
    }

    /// The initial centers and their weights (Spark's `setInitialCenters`);
    /// `k` of them, all of one dimension.
    pub fn initial_centers(
        mut self,
        centers: Vec<Vec<f64>>,
        weights: Vec<f64>,
    ) -> Result<Self, MlError> {
        let m = KMeansModel { centers, weights };
        m.predictor()?;
        self.initial = Some(m);
        Ok(self)
    }

    /// `k` centers of `dim` standard-normal coordinates with weight
    /// `weight` each, drawn from `seed` (Spark's `setRandomCenters`; the
    /// generator is weir's own, so the centers differ from Spark's).
    pub fn random_centers(mut self, dim: usize, weight: f64, seed: u64) -> Result<Self, MlError> {
        self.initial = Some(random_centers(self.k, dim, weight, seed)?);
        Ok(self)
    }

    /// The checked settings and initial model.
    fn checked(&self) -> Result<KMeansModel, MlError> {
        let Some(m) = self.initial.clone() else {
            return Err(MlError::NoInitialModel {
                what: "centers: give them with .initial_centers(centers, weights) or .random_centers(dim, weight, seed)",
            });
        };
        if m.centers.len() != self.k {
            return Err(MlError::InvalidParameter {
                name: "the number of initial centers",
                value: m.centers.len() as f64,
                rule: "equal to k",
            });
        }
        if let Some(h) = self.half_life.filter(|h| h.is_nan() || *h <= 0.0) {
            return Err(MlError::InvalidParameter {
                name: "the half-life",
                value: h,
                rule: "a number above 0",
            });
        }
        let d = self.decay_factor;
        if !d.is_finite() || d < 0.0 {
            return Err(MlError::InvalidParameter {
                name: "the decay factor",
                value: d,
                rule: "a finite number, zero or more",
            });
        }
        m.predictor()?;
        Ok(m)
    }

    /// Trains on every batch of `points`: the model after each batch is
    /// the returned handle's [`KMeansTrained::models`]. Refused without
    /// initial centers or with settings Spark refuses.
    pub fn train_on(&self, points: &DStream<Vec<f64>>) -> Result<KMeansTrained, MlError> {
        let initial = self.checked()?;
        let latest = Arc::new(Mutex::new(initial.clone()));
        let (decay, unit, seen) = (self.decay_factor, self.time_unit, latest.clone());
        let dim = initial.centers.first().map_or(0, Vec::len);
        let params = vec![("k", self.k.to_string()), ("dim", dim.to_string())];
        let next = move |ctx: &BatchCtx, op: &str, m: &KMeansModel, d: &dyn PartFn<Vec<f64>>| {
            let next = kmeans_batch(ctx, m, d, decay, unit).map_err(|e| step_error(op, e))?;
            // A short read or a failed record upstream fails the batch:
            // never show a model of part of it.
            ctx.check_reads()?;
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
            Ok(next)
        };
        let models = points.one_value_state("streaming_kmeans", params, initial, Box::new(next));
        Ok(KMeansTrained { models, latest })
    }
}

/// One batch of k-means: partitions summed in parallel, then the update.
fn kmeans_batch(
    ctx: &BatchCtx,
    m: &KMeansModel,
    d: &dyn PartFn<Vec<f64>>,
    decay: f64,
    unit: TimeUnit,
) -> Result<KMeansModel, MlError> {
    let predictor = m.predictor()?;
    let partials = ctx.par_map(d.parts(), |p| {
        let mut sums = predictor.sums();
        d.run_ref(p, &mut |x| sums.add(x));
        sums.finish()
    });
    let partials: Vec<ClusterSums> = partials.into_iter().collect::<Result<_, _>>()?;
    let mut next = m.clone();
    next.apply(partials, decay, unit)?;
    Ok(next)
}

/// A model failure as the batch's error, naming the training operator.
fn step_error(op: &str, e: MlError) -> EngineError {
    EngineError::Step {
        step: op.to_string(),
        reason: Box::new(e),
    }
}

/// A trained k-means model stream: the model after every batch, the
/// latest one, and predictions with it.
#[derive(Clone)]
pub struct KMeansTrained {
    models: DStream<KMeansModel>,
    latest: Arc<Mutex<KMeansModel>>,
}

impl KMeansTrained {
    /// Names the training operator: its model is state kept under this
    /// name (as `.name(...)` on any stateful operator).
    pub fn name(mut self, name: &str) -> Self {
        self.models = self.models.name(name);
        self
    }

    /// The model after every batch (one element per batch).
    pub fn models(&self) -> &DStream<KMeansModel> {
        &self.models
    }

    /// The model of the last batch this process trained, committed or
    /// about to be (a batch that fails after training is trained again to
    /// the same model); the initial one before the first batch, also after
    /// a restart (the committed model is read by the first batch).
    pub fn latest_model(&self) -> KMeansModel {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The nearest cluster of every point (Spark's `predictOn`), with the
    /// model of the same batch.
    pub fn predict_on(&self, points: &DStream<Vec<f64>>) -> DStream<usize> {
        self.predict_on_values(&points.map(|x| ((), x)))
            .map(|(_, c)| c)
    }

    /// The nearest cluster of every pair's point, keeping the key (Spark's
    /// `predictOnValues`).
    pub fn predict_on_values<K: Data>(
        &self,
        pairs: &DStream<(K, Vec<f64>)>,
    ) -> DStream<(K, usize)> {
        self.nearest_on_values(pairs).map(|(k, (c, _))| (k, c))
    }

    /// The nearest cluster and the Euclidean distance to its center, for
    /// every pair's point: what anomaly detection needs.
    pub fn nearest_on_values<K: Data>(
        &self,
        pairs: &DStream<(K, Vec<f64>)>,
    ) -> DStream<(K, (usize, f64))> {
        let f = move |m: &KMeansModel, d: &dyn PartFn<(K, Vec<f64>)>, p: usize| {
            let pr = m.predictor()?;
            map_pairs(d, p, |x| {
                pr.nearest_distance(x).map(|(c, sq)| (c, sq.sqrt()))
            })
        };
        pairs.map_parts_with_value(&self.models, "kmeans_predict", Box::new(f))
    }
}

/// Partition `p`'s `(key, point)` pairs mapped by `f`, keys kept; the
/// first point `f` refuses fails the partition.
fn map_pairs<K, U>(
    d: &dyn PartFn<(K, Vec<f64>)>,
    p: usize,
    mut f: impl FnMut(&[f64]) -> Result<U, MlError>,
) -> Result<Vec<(K, U)>, BoxError> {
    let mut out = Vec::new();
    let mut failed = None;
    d.run(p, &mut |(k, x)| {
        if failed.is_none() {
            match f(&x) {
                Ok(u) => out.push((k, u)),
                Err(e) => failed = Some(e),
            }
        }
    });
    match failed {
        Some(e) => Err(Box::new(e)),
        None => Ok(out),
    }
}

/// Settings shared by the SGD regressions (Spark's defaults: step 0.1,
/// 50 iterations, fraction 1.0, tolerance 0.001).
#[derive(Debug, Clone)]
struct SgdSpec {
    params: SgdParams,
    initial: Option<LinearModel>,
}

macro_rules! sgd_builder {
    ($name:ident, $loss:expr, $kind:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name {
            spec: SgdSpec,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// Spark's defaults; initial weights are required.
            pub fn new() -> Self {
                $name {
                    spec: SgdSpec {
                        params: SgdParams::default(),
                        initial: None,
                    },
                }
            }
            /// The initial step; iteration `i` of a batch uses `step / sqrt(i)`.
            pub fn step_size(mut self, step: f64) -> Self {
                self.spec.params.step_size = step;
                self
            }
            /// Most updates per batch.
            pub fn num_iterations(mut self, n: usize) -> Self {
                self.spec.params.num_iterations = n;
                self
            }
            /// The share of a batch each iteration samples (1.0: all, in
            /// order). Below 1 weir samples with its own generator seeded
            /// by the batch time, not Spark's: results then differ from
            /// Spark's, and a replayed batch samples the same points.
            pub fn mini_batch_fraction(mut self, f: f64) -> Self {
                self.spec.params.mini_batch_fraction = f;
                self
            }
            /// Stop a batch's iterations when the weights moved less than
            /// `tol * max(|w|, 1)` (from the second update on).
            pub fn convergence_tol(mut self, tol: f64) -> Self {
                self.spec.params.convergence_tol = tol;
                self
            }
            /// All four SGD settings at once.
            pub fn with_params(mut self, params: SgdParams) -> Self {
                self.spec.params = params;
                self
            }
            /// The initial weights (required), one per feature.
            pub fn initial_weights(mut self, weights: Vec<f64>) -> Self {
                self.spec.initial = Some(LinearModel {
                    weights,
                    intercept: 0.0,
                });
                self
            }
            /// Trains on every batch of `(label, features)`.
            pub fn train_on(
                &self,
                points: &DStream<(f64, Vec<f64>)>,
            ) -> Result<RegressionTrained, MlError> {
                self.spec.train_on(points, $loss, $kind)
            }
        }
    };
}

sgd_builder!(
    StreamingLinearRegressionWithSGD,
    Loss::Squared,
    "streaming_linear_regression",
    "Linear regression trained by mini-batch SGD on every batch, with Spark MLlib's rules (no intercept)."
);
sgd_builder!(
    StreamingLogisticRegressionWithSGD,
    Loss::Logistic,
    "streaming_logistic_regression",
    "Binary logistic regression trained by mini-batch SGD on every batch, with Spark MLlib's rules (labels 0 or 1, no intercept)."
);

impl SgdSpec {
    fn train_on(
        &self,
        points: &DStream<(f64, Vec<f64>)>,
        loss: Loss,
        kind: &'static str,
    ) -> Result<RegressionTrained, MlError> {
        self.params.validate()?;
        let Some(initial) = self.initial.clone() else {
            return Err(MlError::NoInitialModel {
                what: "weights: give one per feature with .initial_weights(weights)",
            });
        };
        sgd::check_model(&initial)?;
        let latest = Arc::new(Mutex::new(initial.clone()));
        let (params, seen) = (self.params, latest.clone());
        let features = initial.weights.len().to_string();
        let next =
            move |ctx: &BatchCtx, op: &str, m: &LinearModel, d: &dyn PartFn<(f64, Vec<f64>)>| {
                let batch: Vec<(f64, Vec<f64>)> = ctx.collect(d)?.into_iter().flatten().collect();
                let mut next = m.clone();
                sgd::train_batch(&mut next, &batch, &params, loss, ctx.time_ms)
                    .map_err(|e| step_error(op, e))?;
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
                Ok(next)
            };
        let models =
            points.one_value_state(kind, vec![("features", features)], initial, Box::new(next));
        Ok(RegressionTrained {
            models,
            latest,
            loss,
        })
    }
}

/// A trained regression model stream: the model after every batch, the
/// latest one, and predictions with it.
#[derive(Clone)]
pub struct RegressionTrained {
    models: DStream<LinearModel>,
    latest: Arc<Mutex<LinearModel>>,
    loss: Loss,
}

impl RegressionTrained {
    /// Names the training operator (its model is state kept under it).
    pub fn name(mut self, name: &str) -> Self {
        self.models = self.models.name(name);
        self
    }

    /// The model after every batch (one element per batch).
    pub fn models(&self) -> &DStream<LinearModel> {
        &self.models
    }

    /// The model of the last batch this process trained, as
    /// [`KMeansTrained::latest_model`].
    pub fn latest_model(&self) -> LinearModel {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The prediction for every feature vector (Spark's `predictOn`):
    /// `w.x + intercept`, or 0/1 for logistic regression.
    pub fn predict_on(&self, points: &DStream<Vec<f64>>) -> DStream<f64> {
        self.predict_on_values(&points.map(|x| ((), x)))
            .map(|(_, y)| y)
    }

    /// The prediction for every pair's features, keeping the key (Spark's
    /// `predictOnValues`).
    pub fn predict_on_values<K: Data>(&self, pairs: &DStream<(K, Vec<f64>)>) -> DStream<(K, f64)> {
        let loss = self.loss;
        let f = move |m: &LinearModel, d: &dyn PartFn<(K, Vec<f64>)>, p: usize| {
            map_pairs(d, p, |x| sgd::predict(m, x, loss))
        };
        pairs.map_parts_with_value(&self.models, "regression_predict", Box::new(f))
    }
}
