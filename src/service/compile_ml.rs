//! Builds the streaming-ML steps on `crate::ml`: `op = "kmeans"`,
//! `"linear_regression"`, `"logistic_regression"`. A JSON record's
//! `features` (and `label`) become numbers; the model trains on every
//! batch under the step's name; every record goes on with its prediction
//! added (`cluster` and `distance` for k-means, `prediction` for the
//! regressions); `model_to` writes the model after every batch.
//!
//! Limits: at most 10,000 features per step (`FEATURES_MAX`), each a
//! finite number of magnitude at most 1e150 (`ml::FEATURE_ABS_MAX`); the
//! models' limits are `crate::ml`'s. A batch's records are read once
//! (`computed_once`: held in memory for the batch) however many operators
//! use them.
//! Must never: train on a record whose features are not all numbers (it
//! follows the step's `on_error`), or add a prediction from another
//! batch's model.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::compile::{field, json_files, resolve, truncate, Dropped, S};
use super::config::{KMeansStepDef, OnBadRecord, Op, RegressionStepDef};
use crate::dstream::DStream;
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

/// A record, its vector and its label (when it has one). The record is
/// shared: the batch's rows are kept once and read by training and by
/// prediction, which need not copy the JSON value to do so.
type Row = (Arc<Value>, Vec<f64>, Option<f64>);

/// The label field of a regression, and whether it must be 0 or 1.
#[derive(Clone)]
struct Label {
    field: String,
    binary: bool,
}

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
        write_models(cx, trained.models(), to, |t, m| {
            json!({"batch_time": t, "centers": m.centers, "weights": m.weights})
        })?;
    }
    let pairs = rows.map(|(v, x, _): Row| (v, x)).name(&format!("{}.pairs", cx.name));
    let out = trained.nearest_on_values(&pairs).map(|(v, (c, dist))| {
        with_fields(v, &[("cluster", json!(c)), ("distance", json!(dist))])
    });
    Ok(S::Records(out.name(&format!("{}.predict", cx.name))))
}

fn regression(def: &RegressionStepDef, cx: &MlCtx<'_>, d: &DStream<Value>) -> crate::Result<S> {
    let label = Label { field: def.label.clone(), binary: def.logistic };
    let rows = rows(cx, d, def.features.clone(), Some(label), def.on_error);
    let labelled = rows
        .flat_map(|(_, x, y): Row| y.map(|y| (y, x)))
        .name(&format!("{}.labelled", cx.name));
    let w = def.initial_weights.clone();
    let trained = match def.logistic {
        false => StreamingLinearRegressionWithSGD::new().with_params(def.params).initial_weights(w).train_on(&labelled),
        true => StreamingLogisticRegressionWithSGD::new().with_params(def.params).initial_weights(w).train_on(&labelled),
    }
    .map_err(|e| model_error(cx, e))?
    .name(cx.name);
    if let Some(to) = &def.model_to {
        write_models(cx, trained.models(), to, |t, m| {
            json!({"batch_time": t, "weights": m.weights, "intercept": m.intercept})
        })?;
    }
    let pairs = rows.map(|(v, x, _): Row| (v, x)).name(&format!("{}.pairs", cx.name));
    let out = trained
        .predict_on_values(&pairs)
        .map(|(v, y)| with_fields(v, &[("prediction", json!(y))]));
    Ok(S::Records(out.name(&format!("{}.predict", cx.name))))
}

/// `model_to`: every batch's model as one JSON line, `as_json(batch ms,
/// model)`, in `<to>-<batch ms>.json` (exactly once, as `json_files`).
fn write_models<M: crate::dstream::Data>(
    cx: &MlCtx<'_>,
    models: &DStream<M>,
    to: &Path,
    as_json: fn(u64, M) -> Value,
) -> crate::Result<()> {
    let lines = models
        .transform(move |t, ms| ms.into_iter().map(|m| as_json(t, m)).collect::<Vec<Value>>())
        .name(&format!("{}.model", cx.name));
    let prefix = resolve(cx.data_dir, to).display().to_string();
    json_files(&lines, &prefix, "json", false)
}

/// The record `v` with `fields` set (copied out of the shared row; a
/// record that is not an object cannot have features, so it never gets
/// here; it is kept as is).
fn with_fields(v: Arc<Value>, fields: &[(&str, Value)]) -> Value {
    let mut v = Arc::unwrap_or_clone(v);
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
    label: Option<Label>,
    on_error: OnBadRecord,
) -> DStream<Row> {
    let read = move |v: &Value| vector_of(v, &features, label.as_ref());
    let name = format!("{}.in", cx.name);
    let rows = match on_error {
        OnBadRecord::Drop => {
            let counter = cx.dropped.counter(cx.id);
            d.flat_map_with(move |v: Value, out| match read(&v) {
                Ok((x, y)) => out((Arc::new(v), x, y)),
                Err(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        }
        other => d.try_map(super::compile::policy(other), move |v: &Value| {
            read(v).map(|(x, y)| (Arc::new(v.clone()), x, y))
        }),
    };
    rows.name(&name).computed_once()
}

/// A record's vector and label, or what is wrong with it.
fn vector_of(
    v: &Value,
    features: &[String],
    label: Option<&Label>,
) -> Result<(Vec<f64>, Option<f64>), String> {
    let mut x = Vec::with_capacity(features.len());
    for f in features {
        x.push(number(v, f)?);
    }
    let y = match label.map(|l| (l, field(v, &l.field))) {
        None | Some((_, None | Some(Value::Null))) => None,
        Some((l, _)) => {
            let y = number(v, &l.field)?;
            if l.binary && y != 0.0 && y != 1.0 {
                return Err(format!(
                    "label `{}` is {y}, but logistic regression learns labels 0 and 1 only",
                    l.field
                ));
            }
            Some(y)
        }
    };
    Ok((x, y))
}

/// The finite number at `path` no larger than
/// [`crate::ml::FEATURE_ABS_MAX`], or what is there instead.
fn number(v: &Value, path: &str) -> Result<f64, String> {
    match field(v, path).and_then(Value::as_f64) {
        Some(n) if n.abs() <= crate::ml::FEATURE_ABS_MAX => Ok(n),
        Some(n) => Err(format!(
            "field `{path}` is {n:e}, larger than a model takes (at most {:e} either way)",
            crate::ml::FEATURE_ABS_MAX
        )),
        None => {
            let found = field(v, path).map_or("nothing".to_string(), |x| truncate(&x.to_string()));
            Err(format!("field `{path}` is not a number (found {found})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_or_refused_in_the_user_s_words() {
        let f = vec!["x".to_string(), "p.y".to_string()];
        let v = json!({"x": 1.5, "p": {"y": -2}, "y": 1});
        let (x, y) = vector_of(&v, &f, None).expect("a row");
        assert_eq!((x, y), (vec![1.5, -2.0], None));
        let label = Label { field: "y".into(), binary: true };
        assert_eq!(vector_of(&v, &f, Some(&label)).expect("a row").1, Some(1.0));
        let no_label = json!({"x": 1, "p": {"y": 2}});
        assert_eq!(vector_of(&no_label, &f, Some(&label)).expect("predicted only").1, None);
        let three = json!({"x": 1, "p": {"y": 2}, "y": 3});
        let e = vector_of(&three, &f, Some(&label)).expect_err("not 0 or 1");
        assert!(e.contains("label `y` is 3") && e.contains("0 and 1"), "{e}");
        let huge = json!({"x": 1e200, "p": {"y": 2}});
        let e = vector_of(&huge, &f, None).expect_err("too large");
        assert!(e.contains("field `x` is 1e200") && e.contains("at most 1e150"), "{e}");
        let text = json!({"x": "n/a", "p": {}});
        let e = vector_of(&text, &f, None).expect_err("not a number");
        assert_eq!(e, "field `x` is not a number (found \"n/a\")");
    }
}
