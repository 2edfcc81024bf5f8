//! Streaming machine learning with Spark MLlib's exact update rules:
//! streaming k-means ([`StreamingKMeans`]) and linear or logistic
//! regression trained by mini-batch SGD
//! ([`StreamingLinearRegressionWithSGD`],
//! [`StreamingLogisticRegressionWithSGD`]), as stateful DStream operators
//! whose model is operator state: committed with the batch that trained
//! it, restored at restart, so a model is updated exactly once per batch
//! across crashes.
//!
//! Owns: the arithmetic ([`kmeans`], [`sgd`]: bit-exact ports of Spark
//! 4.0.1's `StreamingKMeansModel.update` and `GradientDescent.runMiniBatchSGD`
//! operation for operation, the JDK vector BLAS included, matched against
//! pyspark fixtures in `tests/ml_spark.rs`), and the operators
//! (`stream.rs`): train, predict, the model stream.
//!
//! Limits: at most [`DIMS_MAX`] coordinates or features per vector,
//! [`CLUSTERS_MAX`] clusters, [`MODEL_VALUES_MAX`] center coordinates in all,
//! [`ITERATIONS_MAX`] SGD iterations per batch; point counts exact up to
//! 2^53. k-means: Spark sums a batch's points per partition and then adds
//! the partitions' sums in partition order; so does weir, so one partition
//! gives Spark's single-partition bits and more partitions may differ in
//! the last bits, as Spark's do. SGD reads the batch's partitions in
//! order on one thread (Spark's `treeAggregate` adds per-partition
//! gradients), so its bits do not depend on the partitioning.
//!
//! Must never: panic on any input (every entry point validates and returns
//! [`MlError`]); leave a model half-updated or non-finite; read clocks,
//! the environment or global random state; reorder a floating-point sum;
//! change committed state during a batch (the model goes through the
//! state store like every operator's state).

mod error;
pub(crate) mod javablas;
pub mod kmeans;
mod rng;
pub mod sgd;
mod stream;

pub use error::MlError;
pub use kmeans::{KMeansModel, TimeUnit};
pub use sgd::{LinearModel, Loss, SgdParams};
pub use stream::{
    KMeansTrained, RegressionTrained, StreamingKMeans, StreamingLinearRegressionWithSGD,
    StreamingLogisticRegressionWithSGD,
};

/// Lanes of the JDK `DoubleVector.SPECIES_MAX` on the reference machine
/// (AVX-512: 8 doubles). Spark's pure-Java BLAS
/// (`dev.ludovic.netlib.blas.VectorBLAS`) computes `dot` and `axpy` in
/// chunks of this many lanes with fused multiply-adds, then a scalar tail;
/// weir does the same. On an AVX2-only JVM Spark uses 4, and vectors of 4
/// to 7 values (and the chunking of longer ones) differ by ulps.
pub const SPARK_VECTOR_LANES: usize = 8;

/// Most coordinates (k-means) or features (SGD) per vector.
pub const DIMS_MAX: usize = 1_000_000;

/// Most k-means clusters.
pub const CLUSTERS_MAX: usize = 100_000;

/// Most `k * dim` of a k-means model (4 M doubles = 32 MiB): a model is
/// one value of operator state, and state values are read back with a
/// 64 MiB bound (`codec::DECODE_BYTES_MAX`).
pub const MODEL_VALUES_MAX: usize = 4_000_000;

/// Largest magnitude of a feature a pipeline step accepts: squares and
/// sums of larger values can overflow to infinity, which would fail every
/// retry of the batch instead of following the step's `on_error`.
pub const FEATURE_ABS_MAX: f64 = 1e150;

/// Most SGD iterations per batch.
pub const ITERATIONS_MAX: usize = 1_000_000;

/// `v` has `dim` values, all finite; else the error naming `what` (and
/// its position in its list, when it has one).
pub(crate) fn check_vector(
    v: &[f64],
    dim: usize,
    what: &'static str,
    index: Option<usize>,
) -> Result<(), MlError> {
    if v.len() != dim {
        return Err(MlError::DimensionMismatch {
            what,
            index,
            expected: dim,
            found: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(MlError::NonFinite { what, index });
    }
    Ok(())
}
