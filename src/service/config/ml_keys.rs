//! The keys of the streaming-ML steps and their checks: `op = "kmeans"`
//! ([`KMeansStepDef`]) and `op = "linear_regression"` /
//! `"logistic_regression"` ([`RegressionStepDef`]). Both read JSON
//! records, take the numbers of `features` as the vector, train on every
//! batch and emit every record with its prediction added; `model_to`
//! writes the model after every batch as a JSON-lines file.
//!
//! Limits: `k` 1 to [`crate::ml::CLUSTERS_MAX`]; 1 to [`FEATURES_MAX`]
//! features; `num_iterations` 0 to [`crate::ml::ITERATIONS_MAX`]; the
//! numbers' rules are Spark's (checked by `crate::ml`, whose error is
//! shown at the key).
//! Must never: accept a model `crate::ml` would refuse at start.

use std::path::PathBuf;

use super::error::ConfigError;
use super::keys::{KeySpec, KeyType};
use super::model::{OnBadRecord, Op};
use super::ops::{on_error, ON_ERROR};
use super::raw::describe;
use super::validate::StepIn;
use crate::ml::{KMeansModel, MlError, SgdParams, TimeUnit};

/// Most features of a pipeline step's vector.
pub const FEATURES_MAX: i64 = 10_000;

const FEATURES: KeySpec = KeySpec::of(
    "features",
    KeyType::TextList,
    "the numeric fields making a record's vector, in order; dotted paths such as \"pos.x\" reach into nested objects",
);
const K: KeySpec = KeySpec::whole("k", 1, crate::ml::CLUSTERS_MAX as i64, "how many clusters");
const DECAY_FACTOR: KeySpec = KeySpec::of(
    "decay_factor",
    KeyType::Number,
    "weights are multiplied by it every time unit: 1 (default) remembers everything, 0 only the newest batch",
);
const HALF_LIFE: KeySpec = KeySpec::of(
    "half_life",
    KeyType::Number,
    "time units after which a point counts half (instead of decay_factor)",
);
const TIME_UNIT: KeySpec = KeySpec::of(
    "time_unit",
    KeyType::Text,
    "\"batches\" (default): decay once per batch, empty ones too; \"points\": decay to the power of the batch's points",
);
const INITIAL_CENTERS: KeySpec = KeySpec::of(
    "initial_centers",
    KeyType::NumberRows,
    "k centers of as many numbers as features; leave it out for random centers from `seed`",
);
const INITIAL_WEIGHTS: KeySpec = KeySpec::of(
    "initial_weights",
    KeyType::NumberList,
    "k-means: one weight per initial center (default 0: the first points move the centers all the way); regression: one weight per feature (default 0)",
);
const SEED: KeySpec = KeySpec::whole("seed", 0, i64::MAX, "the seed of random initial centers");
const MODEL_TO: KeySpec = KeySpec::of(
    "model_to",
    KeyType::Text,
    "a path prefix (relative to the data directory): the model after every batch goes to PREFIX-<batch ms>.json as one JSON line",
);
const LABEL: KeySpec = KeySpec::of(
    "label",
    KeyType::Text,
    "the numeric field to learn; records without it are predicted, not trained on",
);
const STEP_SIZE: KeySpec = KeySpec::of(
    "step_size",
    KeyType::Number,
    "the initial SGD step (default 0.1)",
);
const NUM_ITERATIONS: KeySpec = KeySpec::whole(
    "num_iterations",
    0,
    crate::ml::ITERATIONS_MAX as i64,
    "most SGD updates per batch (default 50)",
);
const MINI_BATCH_FRACTION: KeySpec = KeySpec::of(
    "mini_batch_fraction",
    KeyType::Number,
    "the share of a batch each iteration samples (default 1.0: all); below 1 weir's own sampler is used, not Spark's",
);
const CONVERGENCE_TOL: KeySpec = KeySpec::of(
    "convergence_tol",
    KeyType::Number,
    "stop a batch's iterations when the weights move less than this share (default 0.001)",
);

/// The keys of `op = "kmeans"`.
pub(super) const KMEANS_KEYS: &[KeySpec] = &[
    FEATURES,
    K,
    DECAY_FACTOR,
    HALF_LIFE,
    TIME_UNIT,
    INITIAL_CENTERS,
    INITIAL_WEIGHTS,
    SEED,
    MODEL_TO,
    ON_ERROR,
];

/// The keys of `op = "linear_regression"` and `"logistic_regression"`.
pub(super) const REGRESSION_KEYS: &[KeySpec] = &[
    FEATURES,
    LABEL,
    INITIAL_WEIGHTS,
    STEP_SIZE,
    NUM_ITERATIONS,
    MINI_BATCH_FRACTION,
    CONVERGENCE_TOL,
    MODEL_TO,
    ON_ERROR,
];

/// An `op = "kmeans"` step (`compile_ml.rs` builds it on `crate::ml`).
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansStepDef {
    /// The fields making the vector.
    pub features: Vec<String>,
    /// The decay factor (from `half_life` when given).
    pub decay: f64,
    /// The time unit.
    pub unit: TimeUnit,
    /// The initial model (given, or random from `seed`).
    pub initial: KMeansModel,
    /// Where the model goes after every batch (`None`: nowhere).
    pub model_to: Option<PathBuf>,
    /// What a record without the features does.
    pub on_error: OnBadRecord,
}

/// An `op = "linear_regression"` / `"logistic_regression"` step.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionStepDef {
    /// Logistic (labels 0 or 1, predictions 0 or 1) or least squares.
    pub logistic: bool,
    /// The fields making the vector.
    pub features: Vec<String>,
    /// The field to learn.
    pub label: String,
    /// The initial weights, one per feature.
    pub initial_weights: Vec<f64>,
    /// SGD settings.
    pub params: SgdParams,
    /// Where the model goes after every batch.
    pub model_to: Option<PathBuf>,
    /// What a record without the features does.
    pub on_error: OnBadRecord,
}

/// `features`: required, 1 to [`FEATURES_MAX`] names.
fn features(s: &StepIn<'_>) -> Result<Vec<String>, ConfigError> {
    let hint = "add features = [\"x\", \"y\"]: the numeric fields of each record";
    let Some(f) = s.item.list(&FEATURES)? else {
        return Err(s.item.err(
            s.item.span(),
            FEATURES.name,
            "the feature fields",
            Some("nothing".into()),
            hint,
        ));
    };
    let n = f.get_ref().len() as i64;
    if n == 0 || n > FEATURES_MAX {
        let want = format!("1 to {FEATURES_MAX} field names");
        return Err(s
            .item
            .err(f.span(), FEATURES.name, want, Some(format!("{n}")), hint));
    }
    Ok(f.get_ref().clone())
}

/// `ok`, or an error at `key` saying it must be `want`.
fn check(s: &StepIn<'_>, key: &KeySpec, v: f64, ok: bool, want: &str) -> Result<(), ConfigError> {
    if ok {
        return Ok(());
    }
    let span = s.item.value_span(key.name);
    Err(s
        .item
        .err(span, key.name, want, Some(v.to_string()), key.hint))
}

/// A refusal of `crate::ml` shown at `key`'s value.
fn refused(s: &StepIn<'_>, key: &KeySpec, e: crate::ml::MlError) -> ConfigError {
    let span = s.item.value_span(key.name);
    s.item.err(
        span,
        key.name,
        key.ty.expected(),
        Some(e.to_string()),
        key.hint,
    )
}

/// Checks an `op = "kmeans"` step and builds its op.
pub(super) fn kmeans(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let features = features(s)?;
    let k = s.item.positive(&K)?.ok_or_else(|| {
        s.item.err(
            s.item.span(),
            K.name,
            "the number of clusters",
            Some("nothing".into()),
            "add k = 3",
        )
    })? as usize;
    let (decay, unit) = decay(s)?;
    let initial = initial_model(s, k, features.len())?;
    Ok(Op::KMeans(Box::new(KMeansStepDef {
        features,
        decay,
        unit,
        initial,
        model_to: s.item.string(&MODEL_TO)?.map(PathBuf::from),
        on_error: on_error(s)?,
    })))
}

/// The initial centers and weights, or random centers from `seed`.
fn initial_model(s: &StepIn<'_>, k: usize, dim: usize) -> Result<KMeansModel, ConfigError> {
    let Some(c) = s.item.number_rows(&INITIAL_CENTERS)? else {
        only_one(
            s,
            &INITIAL_WEIGHTS,
            "random centers start at weight 0: give initial_centers with the weights",
        )?;
        let seed = s.item.positive(&SEED)?.unwrap_or(0);
        return crate::ml::kmeans::random_centers(k, dim, 0.0, seed).map_err(|e| refused(s, &K, e));
    };
    only_one(
        s,
        &SEED,
        "the seed draws random centers, which initial_centers replace: remove one",
    )?;
    let centers = c.get_ref().clone();
    let weights = match s.item.numbers(&INITIAL_WEIGHTS)? {
        Some(w) => w.get_ref().clone(),
        None => vec![0.0; centers.len()],
    };
    let m = KMeansModel { centers, weights };
    m.predictor().map_err(|e| {
        let weights = matches!(
            e,
            MlError::WeightCountMismatch { .. } | MlError::InvalidParameter { .. }
        );
        refused(
            s,
            if weights {
                &INITIAL_WEIGHTS
            } else {
                &INITIAL_CENTERS
            },
            e,
        )
    })?;
    let width = m.centers.first().map_or(0, Vec::len);
    if m.centers.len() != k || width != dim {
        let found = format!("{} centers of {width} numbers", m.centers.len());
        let want = format!("{k} centers (k) of {dim} numbers (one per feature)");
        return Err(s.item.err(
            c.span(),
            INITIAL_CENTERS.name,
            want,
            Some(found),
            INITIAL_CENTERS.hint,
        ));
    }
    Ok(m)
}

/// An error at `key` when it is set: `why` it does not apply here.
fn only_one(s: &StepIn<'_>, key: &KeySpec, why: &str) -> Result<(), ConfigError> {
    match s.item.raw.get(key.name) {
        None => Ok(()),
        Some(v) => Err(s.item.err(
            v.span(),
            key.name,
            "nothing here",
            Some(describe(v.get_ref())),
            why,
        )),
    }
}

/// `decay_factor` or `half_life` (not both), and `time_unit`.
fn decay(s: &StepIn<'_>) -> Result<(f64, TimeUnit), ConfigError> {
    let unit = match s.item.text(&TIME_UNIT)? {
        None => TimeUnit::Batches,
        Some(v) => match *v.get_ref() {
            "batches" => TimeUnit::Batches,
            "points" => TimeUnit::Points,
            other => {
                let found = Some(format!("\"{other}\""));
                return Err(s.item.err(
                    v.span(),
                    TIME_UNIT.name,
                    "\"batches\" or \"points\"",
                    found,
                    TIME_UNIT.hint,
                ));
            }
        },
    };
    let factor = s.item.number(&DECAY_FACTOR)?;
    let half = s.item.number(&HALF_LIFE)?;
    let decay = match (factor, half) {
        (Some(_), Some(h)) => {
            let hint = "remove one: half_life sets the decay factor";
            return Err(s.item.err(
                h.span(),
                HALF_LIFE.name,
                "either decay_factor or half_life",
                Some("both".into()),
                hint,
            ));
        }
        (Some(f), None) if *f.get_ref() >= 0.0 => *f.get_ref(),
        (None, Some(h)) if *h.get_ref() > 0.0 => {
            crate::ml::kmeans::decay_for_half_life(*h.get_ref())
        }
        (Some(f), None) => {
            let found = Some(f.get_ref().to_string());
            return Err(s.item.err(
                f.span(),
                DECAY_FACTOR.name,
                "zero or more",
                found,
                DECAY_FACTOR.hint,
            ));
        }
        (None, Some(h)) => {
            let found = Some(h.get_ref().to_string());
            return Err(s.item.err(
                h.span(),
                HALF_LIFE.name,
                "a number above 0",
                found,
                HALF_LIFE.hint,
            ));
        }
        (None, None) => 1.0,
    };
    Ok((decay, unit))
}

/// Checks an `op = "linear_regression"` / `"logistic_regression"` step.
pub(super) fn regression(s: &StepIn<'_>, logistic: bool) -> Result<Op, ConfigError> {
    let features = features(s)?;
    let label = s
        .item
        .required(&LABEL, "the field to learn", "add label = \"y\"")?
        .get_ref()
        .to_string();
    let initial_weights = match s.item.numbers(&INITIAL_WEIGHTS)? {
        None => vec![0.0; features.len()],
        Some(w) if w.get_ref().len() == features.len() => w.get_ref().clone(),
        Some(w) => {
            let want = format!("{} weights, one per feature", features.len());
            let found = Some(format!("{} weights", w.get_ref().len()));
            return Err(s.item.err(
                w.span(),
                INITIAL_WEIGHTS.name,
                want,
                found,
                INITIAL_WEIGHTS.hint,
            ));
        }
    };
    let d = SgdParams::default();
    let num = |k: &KeySpec, default: f64| {
        Ok::<_, ConfigError>(s.item.number(k)?.map_or(default, |v| *v.get_ref()))
    };
    let params = SgdParams {
        step_size: num(&STEP_SIZE, d.step_size)?,
        num_iterations: s
            .item
            .positive(&NUM_ITERATIONS)?
            .map_or(d.num_iterations, |n| n as usize),
        mini_batch_fraction: num(&MINI_BATCH_FRACTION, d.mini_batch_fraction)?,
        convergence_tol: num(&CONVERGENCE_TOL, d.convergence_tol)?,
    };
    let p = &params;
    check(
        s,
        &STEP_SIZE,
        p.step_size,
        p.step_size > 0.0,
        "a number above 0",
    )?;
    let f = p.mini_batch_fraction;
    check(
        s,
        &MINI_BATCH_FRACTION,
        f,
        f > 0.0 && f <= 1.0,
        "above 0 and at most 1",
    )?;
    let t = p.convergence_tol;
    check(
        s,
        &CONVERGENCE_TOL,
        t,
        (0.0..=1.0).contains(&t),
        "from 0 to 1",
    )?;
    Ok(Op::Regression(Box::new(RegressionStepDef {
        logistic,
        features,
        label,
        initial_weights,
        params,
        model_to: s.item.string(&MODEL_TO)?.map(PathBuf::from),
        on_error: on_error(s)?,
    })))
}

/// What an ML step does, in the words `weir check` prints.
pub fn ml_words(op: &Op) -> String {
    let errors = |e: &OnBadRecord| match e {
        OnBadRecord::Fail => "",
        OnBadRecord::Drop => ", drop records without numeric features",
        OnBadRecord::DeadLetter => ", dead-letter records without numeric features",
    };
    let to = |p: &Option<PathBuf>| {
        p.as_ref().map_or(String::new(), |p| {
            format!(", model to {}-<ms>.json", p.display())
        })
    };
    match op {
        Op::KMeans(d) => format!(
            "kmeans k={} on {} (decay {} per {}){}{}",
            d.initial.centers.len(),
            d.features.join(", "),
            d.decay,
            match d.unit {
                TimeUnit::Batches => "batch",
                TimeUnit::Points => "point",
            },
            to(&d.model_to),
            errors(&d.on_error)
        ),
        Op::Regression(d) => format!(
            "{} of {} on {} (step {}, {} iterations, fraction {}, tolerance {}){}{}",
            op.name(),
            d.label,
            d.features.join(", "),
            d.params.step_size,
            d.params.num_iterations,
            d.params.mini_batch_fraction,
            d.params.convergence_tol,
            to(&d.model_to),
            errors(&d.on_error)
        ),
        other => other.name().to_string(),
    }
}
