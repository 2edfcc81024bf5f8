//! Streaming k-means, as Spark MLlib 4.0.1's `StreamingKMeansModel.update` and
//! `KMeansModel.predict` (Euclidean distance) compute it, bit for bit.
//!
//! Owns: the model state ([`KMeansModel`]), the per-batch update with forgetfulness
//! (decay per batch or per point) and the dying-cluster split, nearest-center search
//! with Spark's norm bounds and triangle-inequality statistics ([`Predictor`]), and
//! deterministic random initial centers ([`random_centers`], not Spark's generator).
//!
//! Limits (numbers): 1..=[`super::CLUSTERS_MAX`] clusters, 1..=[`super::DIMS_MAX`] coordinates,
//! `k * dim` at most [`super::MODEL_VALUES_MAX`]; weights finite, zero or more; decay
//! finite, zero or more; all coordinates finite; one Spark partition per batch. Spark's
//! statistics shortcut is used when k < 1000 and k*k*dim < 1 000 000, as Spark decides.
//! `Math.pow` (unit `Points`) comes from Rust's libm: it equalled the JDK 17 value on all
//! 3 000 recorded cases. `decay_for_half_life` uses libm `exp`, which differed from the
//! JDK's by 1 ulp on 1 of 1 000 recorded half-lives (the JDK's exp is not correctly
//! rounded); pass Spark's decay value itself where bit-exactness matters.
//!
//! Must never: change the model when returning an error, leave NaN or infinity in
//! the model, reorder a sum, or use a fused multiply-add where Spark does not.

use super::javablas::{daxpy, dscal, java_compare, java_max, norm2, sqdist};
use super::rng::SplitMix64;
use super::{check_vector, MlError, CLUSTERS_MAX, DIMS_MAX, MODEL_VALUES_MAX};
use std::cmp::Ordering;

/// What one unit of forgetting is: a batch, or a single point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// `discount = decay` per batch (also for an empty batch).
    Batches,
    /// `discount = decay ^ (points in the batch)`; an empty batch changes nothing.
    Points,
}

/// Cluster centers and their weights (Spark's `clusterCenters`/`clusterWeights`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KMeansModel {
    /// One center per cluster, each of the model's dimension.
    pub centers: Vec<Vec<f64>>,
    /// One weight per cluster (points seen, discounted).
    pub weights: Vec<f64>,
}

/// A dying-cluster split: `dying`'s weight was below 1e-8 times `split_from`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitInfo {
    /// Index of the smallest cluster (first one on ties); it gets center `x - p`.
    pub dying: usize,
    /// Index of the largest cluster (first one on ties); it keeps center `x + p`.
    pub split_from: usize,
    /// The dying cluster's weight before the split.
    pub min_weight: f64,
    /// The largest weight before the split; both now weigh `(max + min) / 2`.
    pub max_weight: f64,
}

/// What one `update` did.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateInfo {
    /// Factor all weights were multiplied by before adding the batch.
    pub discount: f64,
    /// Points in the batch.
    pub points: u64,
    /// The split that happened after the update, if any.
    pub split: Option<SplitInfo>,
}

impl UpdateInfo {
    /// Whether the dying-cluster rule split a cluster in this update.
    pub fn split_happened(&self) -> bool {
        self.split.is_some()
    }
}

/// Spark's `max(updatedWeight, 1e-16)` floor in `lambda = n / w'`.
const LAMBDA_FLOOR: f64 = 1e-16;
/// A cluster is dying when its weight is below this times the largest weight.
const DYING_RATIO: f64 = 1e-8;
/// Split perturbation per coordinate: `1e-14 * max(|x|, 1)`.
const SPLIT_EPSILON: f64 = 1e-14;
/// `DistanceMeasure.shouldComputeStatistics`: k < 1000.
const STATS_MAX_K: usize = 1000;
/// `DistanceMeasure.shouldComputeStatisticsLocally`: k * k * dim < 1 000 000.
const STATS_MAX_KKD: u64 = 1_000_000;

/// Spark's `setHalfLife`: `exp(ln(0.5) / half_life)`. Spark requires `half_life > 0`;
/// for anything else (zero, negative, NaN) this returns NaN, which `update` refuses.
pub fn decay_for_half_life(half_life: f64) -> f64 {
    if half_life > 0.0 {
        (0.5f64.ln() / half_life).exp()
    } else {
        f64::NAN
    }
}

/// `k` centers of `dim` standard-normal coordinates, each with weight `weight`, like
/// Spark's `setRandomCenters`, but drawn from this crate's SplitMix64 + Box-Muller
/// generator (coordinates in row order), NOT Spark's `XORShiftRandom`: the same seed
/// gives different centers than Spark.
pub fn random_centers(
    k: usize,
    dim: usize,
    weight: f64,
    seed: u64,
) -> Result<KMeansModel, MlError> {
    check_shape(k, dim)?;
    if !weight.is_finite() {
        return Err(MlError::NonFinite {
            what: "initial weight",
            index: None,
        });
    }
    if weight < 0.0 {
        return Err(MlError::InvalidParameter {
            name: "initial weight",
            value: weight,
            rule: "zero or more",
        });
    }
    let mut rng = SplitMix64::new(seed);
    let centers = (0..k)
        .map(|_| (0..dim).map(|_| rng.next_gaussian()).collect())
        .collect();
    Ok(KMeansModel {
        centers,
        weights: vec![weight; k],
    })
}

fn check_shape(k: usize, dim: usize) -> Result<(), MlError> {
    if k == 0 || dim == 0 {
        return Err(MlError::EmptyModel);
    }
    if k > CLUSTERS_MAX {
        return Err(MlError::TooLarge {
            what: "the number of clusters",
            value: k,
            limit: CLUSTERS_MAX,
        });
    }
    if dim > DIMS_MAX {
        return Err(MlError::TooLarge {
            what: "the number of coordinates",
            value: dim,
            limit: DIMS_MAX,
        });
    }
    let values = k.saturating_mul(dim);
    if values > MODEL_VALUES_MAX {
        return Err(MlError::TooLarge {
            what: "clusters times coordinates",
            value: values,
            limit: MODEL_VALUES_MAX,
        });
    }
    Ok(())
}

/// Validates the model and returns its dimension.
fn check_model(m: &KMeansModel) -> Result<usize, MlError> {
    let dim = match m.centers.first() {
        Some(c) => c.len(),
        None => return Err(MlError::EmptyModel),
    };
    check_shape(m.centers.len(), dim)?;
    if m.weights.len() != m.centers.len() {
        return Err(MlError::WeightCountMismatch {
            centers: m.centers.len(),
            weights: m.weights.len(),
        });
    }
    for (i, c) in m.centers.iter().enumerate() {
        check_vector(c, dim, "cluster center", Some(i))?;
    }
    for (i, &w) in m.weights.iter().enumerate() {
        if !w.is_finite() {
            return Err(MlError::NonFinite {
                what: "cluster weight",
                index: Some(i),
            });
        }
        if w < 0.0 {
            return Err(MlError::InvalidParameter {
                name: "a cluster weight",
                value: w,
                rule: "zero or more",
            });
        }
    }
    Ok(dim)
}

/// Nearest-center search over a fixed set of centers, with the norms and (for small
/// models) the pairwise statistics Spark's `KMeansModel` precomputes. Build it once
/// per batch: building costs O(k^2 * dim) when the statistics are used.
#[derive(Debug, Clone)]
pub struct Predictor<'a> {
    centers: &'a [Vec<f64>],
    norms: Vec<f64>,
    stats: Option<Vec<f64>>,
    dim: usize,
}

impl KMeansModel {
    /// Validates the model and prepares nearest-center searches.
    pub fn predictor(&self) -> Result<Predictor<'_>, MlError> {
        let dim = check_model(self)?;
        Ok(Predictor::build(&self.centers, dim))
    }

    /// Index of the nearest center, exactly as Spark's `KMeansModel.predict` (first
    /// index on ties). Builds a [`Predictor`] per call; use one for many points.
    pub fn predict(&self, p: &[f64]) -> Result<usize, MlError> {
        self.predictor()?.predict(p)
    }

    /// Index of the nearest center and the squared Euclidean distance to it, as
    /// Spark's `findClosest` returns them.
    pub fn nearest_distance(&self, p: &[f64]) -> Result<(usize, f64), MlError> {
        self.predictor()?.nearest_distance(p)
    }

    /// One `StreamingKMeansModel.update` with `points` as the batch (in
    /// input order, one partition). On error the model is unchanged.
    pub fn update(
        &mut self,
        points: &[Vec<f64>],
        decay: f64,
        unit: TimeUnit,
    ) -> Result<UpdateInfo, MlError> {
        let partial = self.predictor()?.cluster_sums(points)?;
        self.apply(vec![partial], decay, unit)
    }

    /// The update from per-partition sums ([`Predictor::cluster_sums`] of
    /// this model), added in partition order as Spark's `aggregateByKey`
    /// combines them. On error the model is unchanged.
    pub fn apply(
        &mut self,
        partials: Vec<ClusterSums>,
        decay: f64,
        unit: TimeUnit,
    ) -> Result<UpdateInfo, MlError> {
        let dim = check_model(self)?;
        let k = self.centers.len();
        for p in &partials {
            let fits = p.counts.len() == k && p.sums.iter().all(|s| s.is_empty() || s.len() == dim);
            if !fits {
                let found = p
                    .sums
                    .iter()
                    .map(Vec::len)
                    .find(|&n| n != 0 && n != dim)
                    .unwrap_or(p.counts.len());
                return Err(MlError::DimensionMismatch {
                    what: "the sums of another model",
                    index: None,
                    expected: if p.counts.len() == k { dim } else { k },
                    found,
                });
            }
        }
        if !decay.is_finite() || decay < 0.0 {
            return Err(MlError::InvalidParameter {
                name: "decay",
                value: decay,
                rule: "a finite number, zero or more",
            });
        }
        let ClusterSums { sums, counts } = merge(partials, k);
        let total: u64 = counts.iter().sum();
        let discount = match unit {
            TimeUnit::Batches => decay,
            TimeUnit::Points => decay.powf(total as f64),
        };
        let mut next = self.clone();
        dscal(discount, &mut next.weights);
        for (label, (sum, &count)) in sums.iter().zip(&counts).enumerate() {
            if count > 0 {
                next.add_cluster_batch(label, sum, count);
            }
        }
        let split = next.split_dying_cluster();
        if check_model(&next).is_err() {
            return Err(MlError::Diverged {
                what: "k-means model",
            });
        }
        *self = next;
        Ok(UpdateInfo {
            discount,
            points: total,
            split,
        })
    }

    /// Spark's per-cluster step: `w' = w + n`, `lambda = n / max(w', 1e-16)`,
    /// `c = c * (1 - lambda)`, then `c += (lambda / n) * sum`.
    fn add_cluster_batch(&mut self, label: usize, sum: &[f64], count: u64) {
        let n = count as f64;
        let (Some(w), Some(center)) = (self.weights.get_mut(label), self.centers.get_mut(label))
        else {
            return;
        };
        let updated = *w + n;
        let lambda = n / java_max(updated, LAMBDA_FLOOR);
        *w = updated;
        dscal(1.0 - lambda, center);
        daxpy(lambda / n, sum, center);
    }

    /// The dying-cluster rule: with `max`/`min` the first largest/smallest weight (Java
    /// `Double.compare` order), if `min < 1e-8 * max` both weights become
    /// `(max + min) / 2`, and with `x` the largest cluster's center and
    /// `p_j = 1e-14 * max(|x_j|, 1)`, the largest gets `x + p` and the dying one `x - p`.
    fn split_dying_cluster(&mut self) -> Option<SplitInfo> {
        let (largest, max_w) = extreme_weight(&self.weights, Ordering::Greater)?;
        let (smallest, min_w) = extreme_weight(&self.weights, Ordering::Less)?;
        // Negated on purpose: Spark's `dcmpg`/`ifge` also means "no split" for NaN.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(min_w < DYING_RATIO * max_w) {
            return None;
        }
        let weight = (max_w + min_w) / 2.0;
        self.weights[largest] = weight;
        self.weights[smallest] = weight;
        let dim = self.centers[largest].len();
        for j in 0..dim {
            let x = self.centers[largest][j];
            let p = SPLIT_EPSILON * java_max(x.abs(), 1.0);
            self.centers[largest][j] = x + p;
            self.centers[smallest][j] = x - p;
        }
        Some(SplitInfo {
            dying: smallest,
            split_from: largest,
            min_weight: min_w,
            max_weight: max_w,
        })
    }
}

/// Scala's `zipWithIndex.maxBy(_._1)` / `minBy`: the first index whose weight compares
/// `want` against every earlier best.
fn extreme_weight(weights: &[f64], want: Ordering) -> Option<(usize, f64)> {
    let (&first, rest) = weights.split_first()?;
    let mut best = (0, first);
    for (i, &w) in rest.iter().enumerate() {
        if java_compare(w, best.1) == want {
            best = (i + 1, w);
        }
    }
    Some(best)
}

/// `Utils.indexUpperTriangular` (symmetric): packed index of (i, j).
fn packed_index(i: usize, j: usize) -> usize {
    let (a, b) = if i <= j { (i, j) } else { (j, i) };
    b * (b + 1) / 2 + a
}

/// `DistanceMeasure.computeStatistics` for Euclidean distance: for i < j the entry is
/// `0.25 * d * d` with `d = sqrt(sqdist(c_i, c_j))`; the diagonal holds each row's
/// minimum (starting from +infinity). A single center gives `[NaN]`.
fn compute_statistics(centers: &[Vec<f64>]) -> Vec<f64> {
    let k = centers.len();
    if k == 1 {
        return vec![f64::NAN];
    }
    let mut packed = vec![0.0; k * (k + 1) / 2];
    let mut diag = vec![f64::INFINITY; k];
    for i in 0..k {
        for j in (i + 1)..k {
            let d = sqdist(&centers[i], &centers[j]).sqrt();
            let s = 0.25 * d * d;
            packed[packed_index(i, j)] = s;
            if s < diag[i] {
                diag[i] = s;
            }
            if s < diag[j] {
                diag[j] = s;
            }
        }
    }
    for (i, &d) in diag.iter().enumerate() {
        packed[packed_index(i, i)] = d;
    }
    packed
}

impl<'a> Predictor<'a> {
    fn build(centers: &'a [Vec<f64>], dim: usize) -> Self {
        let norms = centers.iter().map(|c| norm2(c)).collect();
        let k = centers.len();
        let use_stats = k < STATS_MAX_K && (k as u64) * (k as u64) * (dim as u64) < STATS_MAX_KKD;
        let stats = use_stats.then(|| compute_statistics(centers));
        Predictor {
            centers,
            norms,
            stats,
            dim,
        }
    }

    /// Index of the nearest center (Spark's `KMeansModel.predict`).
    pub fn predict(&self, p: &[f64]) -> Result<usize, MlError> {
        Ok(self.nearest_distance(p)?.0)
    }

    /// Index of the nearest center and its squared distance, as Spark's `findClosest`.
    pub fn nearest_distance(&self, p: &[f64]) -> Result<(usize, f64), MlError> {
        check_vector(p, self.dim, "point", None)?;
        Ok(self.closest(p))
    }

    fn closest(&self, p: &[f64]) -> (usize, f64) {
        let p_norm = norm2(p);
        match &self.stats {
            Some(stats) => self.closest_with_stats(stats, p, p_norm),
            None => self.closest_plain(p, p_norm),
        }
    }

    /// `EuclideanDistanceMeasure.findClosest(centers, statistics, point)`.
    fn closest_with_stats(&self, stats: &[f64], p: &[f64], p_norm: f64) -> (usize, f64) {
        let mut best = sqdist(&self.centers[0], p);
        if best < stats[0] {
            return (0, best);
        }
        let mut best_index = 0;
        for i in 1..self.centers.len() {
            let norm_diff = self.norms[i] - p_norm;
            let lower_bound = norm_diff * norm_diff;
            if lower_bound < best && stats[packed_index(i, best_index)] < best {
                let d = sqdist(&self.centers[i], p);
                if d < stats[packed_index(i, i)] {
                    return (i, d);
                }
                if d < best {
                    best = d;
                    best_index = i;
                }
            }
        }
        (best_index, best)
    }

    /// `EuclideanDistanceMeasure.findClosest(centers, point)` (no statistics).
    fn closest_plain(&self, p: &[f64], p_norm: f64) -> (usize, f64) {
        let mut best = f64::INFINITY;
        let mut best_index = 0;
        for (i, c) in self.centers.iter().enumerate() {
            let norm_diff = self.norms[i] - p_norm;
            let lower_bound = norm_diff * norm_diff;
            if lower_bound < best {
                let d = sqdist(c, p);
                if d < best {
                    best = d;
                    best_index = i;
                }
            }
        }
        (best_index, best)
    }

    /// Per-cluster sums of one partition's points (`0.0 + 1.0 * x`
    /// accumulated in input order, Spark's `aggregateByKey` with
    /// `axpy(1.0, point, sum)`) and counts. A point of another dimension or
    /// with a value that is not finite is an error naming its position.
    pub fn cluster_sums(&self, points: &[Vec<f64>]) -> Result<ClusterSums, MlError> {
        let mut sums = self.sums();
        for p in points {
            sums.add(p);
        }
        sums.finish()
    }

    /// [`Self::cluster_sums`] point by point, for points that stream by.
    pub fn sums(&self) -> SumsBuilder<'_, 'a> {
        let k = self.centers.len();
        SumsBuilder {
            predictor: self,
            out: ClusterSums {
                sums: vec![Vec::new(); k],
                counts: vec![0; k],
            },
            seen: 0,
            failed: None,
        }
    }
}

/// Sums of one partition being built ([`Predictor::sums`]).
#[derive(Debug)]
pub struct SumsBuilder<'p, 'a> {
    predictor: &'p Predictor<'a>,
    out: ClusterSums,
    seen: usize,
    failed: Option<MlError>,
}

impl SumsBuilder<'_, '_> {
    /// Adds the next point; after a bad one, the rest are ignored and
    /// [`Self::finish`] reports the first.
    pub fn add(&mut self, p: &[f64]) {
        if self.failed.is_some() {
            return;
        }
        let pr = self.predictor;
        if let Err(e) = check_vector(p, pr.dim, "batch point", Some(self.seen)) {
            self.failed = Some(e);
            return;
        }
        self.seen += 1;
        let (label, _) = pr.closest(p);
        let sum = &mut self.out.sums[label];
        if sum.is_empty() {
            *sum = vec![0.0; pr.dim];
        }
        daxpy(1.0, p, sum);
        self.out.counts[label] += 1;
    }

    /// The sums, or the first bad point.
    pub fn finish(self) -> Result<ClusterSums, MlError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// One partition's per-cluster sums and counts (an empty sum: no point).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSums {
    sums: Vec<Vec<f64>>,
    counts: Vec<u64>,
}

/// The partitions' sums added in partition order: a cluster's first
/// non-empty sum is taken as is, the next ones added with `axpy(1.0)`.
fn merge(partials: Vec<ClusterSums>, k: usize) -> ClusterSums {
    let mut out = ClusterSums {
        sums: vec![Vec::new(); k],
        counts: vec![0; k],
    };
    for p in partials {
        for (c, (sum, count)) in p.sums.into_iter().zip(p.counts).enumerate().take(k) {
            if count == 0 {
                continue;
            }
            if out.sums[c].is_empty() {
                out.sums[c] = sum;
            } else {
                daxpy(1.0, &sum, &mut out.sums[c]);
            }
            out.counts[c] += count;
        }
    }
    out
}
