//! Builds an `op = "sql"` step on `crate::sql`: each input (windowed
//! first when the step has a window) becomes a table, named `batch` and
//! its id for the first input and by id for the others; JSON inputs get
//! the declared columns or a schema inferred from their first batch and
//! kept in `DATA_DIR/sql/<step>.<input>.schema.json`; the step's static
//! tables are loaded into the pipeline's one SQL session.
//!
//! Limits: as `crate::sql`.
//! Must never: build a windowed table under a name other than the
//! step's (its panes are state kept under `<step>.<input>.window`), or
//! window JSON records as `serde_json::Value` (state is bincode, which
//! cannot read a `Value` back: they are windowed as their JSON text).

use std::path::Path;

use serde_json::Value;

use super::compile::S;
use super::config::{OnBadRecord, SqlStepDef};
use crate::dstream::{DStream, OnError, Text};
use crate::sql::{schema_file, ColumnType, Columns, Misfits, SqlSchema, SqlSession, SqlTable};

/// What the step needs besides its definition: its name and id, the
/// batch interval, where inferred schemas are kept (`None`: nowhere,
/// for `weir check`), and the step's drop counter when `on_error` drops.
pub(super) struct SqlCtx<'a> {
    pub(super) name: &'a str,
    pub(super) interval: std::time::Duration,
    pub(super) sql_dir: Option<&'a Path>,
    pub(super) session: &'a SqlSession,
    pub(super) dropped: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

/// Builds the step on `inputs` (id, stream), the first visible as `batch`.
pub(super) fn build(def: &SqlStepDef, cx: &SqlCtx<'_>, inputs: Vec<(String, S)>) -> crate::Result<S> {
    for (name, file) in &def.static_tables {
        cx.session.register_file(name, file)?;
    }
    let declared = match &def.columns {
        Some(c) => Some(columns(c)?),
        None => None,
    };
    let mut tables = Vec::with_capacity(inputs.len());
    for (i, (id, s)) in inputs.into_iter().enumerate() {
        let t = table(def, cx, i == 0, &id, s, declared.as_ref())?;
        tables.push(t);
    }
    let out = crate::sql::sql_step(cx.session, cx.name, &tables, &def.query)?;
    Ok(S::Records(out.name(cx.name)))
}

fn columns(c: &[(String, String)]) -> crate::Result<Columns> {
    let mut out = Vec::with_capacity(c.len());
    for (name, ty) in c {
        // The validator checked every type name.
        let t = ColumnType::parse(ty).unwrap_or(ColumnType::Json);
        out.push((name.clone(), t));
    }
    Ok(Columns::new(out)?)
}

/// One input as a table: `batch` and its id for the first, else its id.
fn table(
    def: &SqlStepDef,
    cx: &SqlCtx<'_>,
    first: bool,
    id: &str,
    s: S,
    declared: Option<&Columns>,
) -> crate::Result<SqlTable> {
    let t = table_of(def, cx, id, s, declared)?;
    Ok(if first { t.also_named("batch") } else { t })
}

fn table_of(def: &SqlStepDef, cx: &SqlCtx<'_>, id: &str, s: S, declared: Option<&Columns>) -> crate::Result<SqlTable> {
    let name = |suffix: &str| format!("{}.{id}.{suffix}", cx.name);
    let slide = if def.slide.is_zero() { cx.interval } else { def.slide };
    match s {
        S::Lines(d) => {
            let d: DStream<Text> = match def.window.is_zero() {
                true => d,
                false => d.window(def.window, slide).name(&name("window")),
            };
            Ok(SqlTable::new(id, &d))
        }
        S::Records(d) => {
            let schema = match declared {
                Some(c) => SqlSchema::Declared(c.clone()),
                None => SqlSchema::Infer(cx.sql_dir.map(|dir| schema_file(dir, &format!("{}.{id}", cx.name)))),
            };
            let misfits = match (def.on_error, &cx.dropped) {
                (OnBadRecord::Drop, Some(c)) => Misfits::Drop(c.clone()),
                (OnBadRecord::DeadLetter, _) => Misfits::Policy(OnError::DeadLetter),
                _ => Misfits::Policy(OnError::Fail),
            };
            let window = name("window");
            Ok(SqlTable::json_then(id, &d, schema, misfits, |fit| {
                match def.window.is_zero() {
                    true => fit.clone().name(&name("fit")),
                    false => windowed_json(&fit.clone().name(&name("fit")), def, slide, &window),
                }
            })?)
        }
        other => Err(super::compile::unvalidated(&format!("step `{}`", cx.name), "sql", &other)),
    }
}

/// The window of JSON records, kept as their JSON text (state is bincode,
/// which cannot read a `serde_json::Value` back).
fn windowed_json(d: &DStream<Value>, def: &SqlStepDef, slide: std::time::Duration, name: &str) -> DStream<Value> {
    d.map(|v: Value| v.to_string())
        .window(def.window, slide)
        .name(name)
        .try_map(OnError::Fail, |t: &String| {
            serde_json::from_str::<Value>(t).map_err(|e| format!("a windowed record no longer reads as JSON: {e}"))
        })
}
