//! Builds the streaming-ML steps on `crate::ml`: `op = "kmeans"`,
//! `"linear_regression"`, `"logistic_regression"`. A JSON record's
//! `features` (and `label`) become numbers; the model trains on every
//! batch under the step's name; every record goes on with its prediction
//! added (`cluster` and `distance` for k-means, `prediction` for the
//! regressions); `model_to` writes the model after every batch.
//!
//! Limits: as `crate::ml`; a record is read once per batch
//! (`computed_once`) however many operators use it.
//! Must never: train on a record whose features are not all numbers (it
//! follows the step's `on_error`), or add a prediction from another
//! batch's model.

use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::compile::{field, json_files, resolve, Dropped, S};
use super::config::{KMeansStepDef, OnBadRecord, Op, RegressionStepDef};
use crate::dstream::{DStream, OnError};
use crate::ml::{StreamingKMeans, StreamingLinearRegressionWithSGD, StreamingLogisticRegressionWithSGD};

/// What an ML step needs besides its definition.
pub(super) struct MlCtx<'a> {
    /// The operator name: the model is state kept under it.
    pub(super) name: &'a str,
    /// The step id (drop counters).
    pub(super) id: &'a str,
    /// Where `model_to` paths go.
    pub(super) data_dir: &'a Path,
    pub(super) dropped: &'a Dropped,
}

/// A record, its vector and its label (when it has one).
type Row = (Value, Vec<f64>, Option<f64>);

/// Builds an ML step on its input.
pub(super) fn build(op: &Op, cx: &MlCtx<'_>, input: S) -> crate::Result<S> {
    let d = match input {
        S::Records(d) => d,
        other => return Err(super::compile::unvalidated(&format!("step `{}`", cx.id), op.name(), &other)),
    };
    match op {
        Op::KMeans(def) => kmeans(def, cx, &d),
        Op::Regression(def) => regression(def, cx, &d),
        _ => Err(super::compile::unvalidated(&format!("step `{}`", cx.id), op.name(), &S::Records(d))),
    }
}

fn model_error(cx: &MlCtx<'_>, e: crate::ml::MlError) -> crate::Error {
    crate::Error::Usage(format!("step `{}`: {e}", cx.id))
}

fn kmeans(def: &KMeansStepDef, cx: &MlCtx<'_>, d: &DStream<Value>) -> crate::Result<S> {
    let rows = rows(cx, d, def.features.clone(), None, def.on_error);
    let km = StreamingKMeans::new(def.initial.centers.len())
        .decay_factor(def.decay)
        .time_unit(def.unit)
        .initial_centers(def.initial.centers.clone(), def.initial.weights.clone())
        .map_err(|e| model_error(cx, e))?;
    let points = rows.map(|(_, x, _): Row| x).name(&format!("{}.points", cx.name));
    let trained = km.train_on(&points).map_err(|e| model_error(cx, e))?.name(cx.name);
    if let Some(to) = &def.model_to {
        let models = trained.models().transform(|t, ms| {
            ms.into_iter()
                .map(|m| json!({"batch_time": t, "centers": m.centers, "weights": m.weights}))
                .collect::<Vec<Value>>()
        });
        let prefix = resolve(cx.data_dir, to).display().to_string();
        json_files(&models.name(&format!("{}.model", cx.name)), &prefix, "json", false)?;
    }
    let pairs = rows.map(|(v, x, _): Row| (v, x)).name(&format!("{}.pairs", cx.name));
    let out = trained.nearest_on_values(&pairs).map(|(v, (c, dist))| {
        with_fields(v, &[("cluster", json!(c)), ("distance", json!(dist))])
    });
    Ok(S::Records(out.name(&format!("{}.predict", cx.name))))
}

fn regression(def: &RegressionStepDef, cx: &MlCtx<'_>, d: &DStream<Value>) -> crate::Result<S> {
    let rows = rows(cx, d, def.features.clone(), Some(def.label.clone()), def.on_error);
    let labelled = rows
        .flat_map(|(_, x, y): Row| y.map(|y| (y, x)))
        .name(&format!("{}.labelled", cx.name));
    let p = def.params;
    let w = def.initial_weights.clone();
    let trained = match def.logistic {
        false => StreamingLinearRegressionWithSGD::new()
            .step_size(p.step_size)
            .num_iterations(p.num_iterations)
            .mini_batch_fraction(p.mini_batch_fraction)
            .convergence_tol(p.convergence_tol)
            .initial_weights(w)
            .train_on(&labelled),
        true => StreamingLogisticRegressionWithSGD::new()
            .step_size(p.step_size)
            .num_iterations(p.num_iterations)
            .mini_batch_fraction(p.mini_batch_fraction)
            .convergence_tol(p.convergence_tol)
            .initial_weights(w)
            .train_on(&labelled),
    }
    .map_err(|e| model_error(cx, e))?
    .name(cx.name);
    if let Some(to) = &def.model_to {
        let models = trained.models().transform(|t, ms| {
            ms.into_iter()
                .map(|m| json!({"batch_time": t, "weights": m.weights, "intercept": m.intercept}))
                .collect::<Vec<Value>>()
        });
        let prefix = resolve(cx.data_dir, to).display().to_string();
        json_files(&models.name(&format!("{}.model", cx.name)), &prefix, "json", false)?;
    }
    let pairs = rows.map(|(v, x, _): Row| (v, x)).name(&format!("{}.pairs", cx.name));
    let out = trained
        .predict_on_values(&pairs)
        .map(|(v, y)| with_fields(v, &[("prediction", json!(y))]));
    Ok(S::Records(out.name(&format!("{}.predict", cx.name))))
}

/// `v` with `fields` set (a record that is not an object cannot have
/// features, so it never gets here; it is kept as is).
fn with_fields(mut v: Value, fields: &[(&str, Value)]) -> Value {
    if let Value::Object(m) = &mut v {
        for (k, x) in fields {
            m.insert((*k).to_string(), x.clone());
        }
    }
    v
}

/// The records with their vectors, computed once per batch; a record
/// whose features (or label, when present) are not numbers follows
/// `on_error`.
fn rows(
    cx: &MlCtx<'_>,
    d: &DStream<Value>,
    features: Vec<String>,
    label: Option<String>,
    on_error: OnBadRecord,
) -> DStream<Row> {
    let read = move |v: &Value| row_of(v, &features, label.as_deref());
    let name = format!("{}.in", cx.name);
    let rows = match on_error {
        OnBadRecord::Drop => {
            let counter = cx.dropped.counter(cx.id);
            d.flat_map_with(move |v: Value, out| match read(&v) {
                Ok(r) => out(r),
                Err(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        }
        OnBadRecord::DeadLetter => d.try_map(OnError::DeadLetter, read),
        OnBadRecord::Fail => d.try_map(OnError::Fail, read),
    };
    rows.name(&name).computed_once()
}

/// A record's vector and label, or what is wrong with it.
fn row_of(v: &Value, features: &[String], label: Option<&str>) -> Result<Row, String> {
    let mut x = Vec::with_capacity(features.len());
    for f in features {
        x.push(number(v, f)?);
    }
    let y = match label.map(|l| (l, field(v, l))) {
        None | Some((_, None | Some(Value::Null))) => None,
        Some((l, _)) => Some(number(v, l)?),
    };
    Ok((v.clone(), x, y))
}

/// The finite number at `path`, or what is there instead.
fn number(v: &Value, path: &str) -> Result<f64, String> {
    match field(v, path).and_then(Value::as_f64) {
        Some(n) if n.is_finite() => Ok(n),
        _ => {
            let found = field(v, path).map_or("nothing".to_string(), |x| super::compile::truncate(&x.to_string()));
            Err(format!("field `{path}` is not a number (found {found})"))
        }
    }
}
