//! The SQL operator on the DStream graph: [`DStream::sql`],
//! [`DStream::sql_as`] and [`sql_with`] build one whole-batch node whose
//! function fixes any table schema still unknown (inferred from this
//! batch, saved), turns the tables into Arrow, runs the query and turns
//! the rows into JSON objects.
//!
//! Limits: as `query` and `schema`.
//! Must never: run a query whose tables' schemas differ from the ones it
//! was planned against, or save a schema after the rows built on it left.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::query::{BatchTable, Query};
use super::{Cell, Columns, Part, SqlError, SqlRecord, SqlSession, SqlTable};
use crate::dstream::{BoxError, DStream, Data, OnError, RecordText};
use crate::storage::{write_atomic, RealFs, Storage};

impl<T: SqlRecord> DStream<T> {
    /// Runs `query` on every batch, the batch visible as table `batch`
    /// (text records: one column `value`; JSON records: columns inferred
    /// from the first batch). Each result row is a JSON object. A query
    /// that does not plan against a known schema is an error here.
    pub fn sql(&self, session: &SqlSession, query: &str) -> Result<DStream<Value>, SqlError> {
        sql_with(session, &[SqlTable::new("batch", self)], query)
    }

    /// Like [`DStream::sql`], each row read into a `U` (its fields by
    /// column name); a row that does not read fails the batch.
    pub fn sql_as<U: DeserializeOwned + Data>(
        &self,
        session: &SqlSession,
        query: &str,
    ) -> Result<DStream<U>, SqlError> {
        Ok(self
            .sql(session, query)?
            .try_map(OnError::Fail, |v: &Value| {
                serde_json::from_value::<U>(v.clone())
                    .map_err(|e| format!("a result row does not read as the requested type: {e}"))
            }))
    }
}

/// Typed records as JSON objects (their fields by name, via serde), ready
/// for [`SqlTable::json`] with a declared schema; a record serde cannot
/// turn into JSON follows `on_error`.
pub fn typed_rows<T: Serialize + Data + RecordText>(
    stream: &DStream<T>,
    on_error: OnError,
) -> DStream<Value> {
    stream.try_map(on_error, |x: &T| {
        serde_json::to_value(x).map_err(|e| e.to_string())
    })
}

/// Runs `query` on every batch of several tables (Spark's join of two
/// streams in the same batch, or a stream with a static table of
/// `session`). Every table must slide at the same interval (window them
/// alike). The query is planned now when every schema is known.
pub fn sql_with(
    session: &SqlSession,
    tables: &[SqlTable],
    query: &str,
) -> Result<DStream<Value>, SqlError> {
    sql_step(session, "sql", tables, query)
}

/// [`sql_with`] for step `step` (named in its errors).
pub fn sql_step(
    session: &SqlSession,
    step: &str,
    tables: &[SqlTable],
    query: &str,
) -> Result<DStream<Value>, SqlError> {
    let Some(first) = tables.first() else {
        return Err(SqlError::NoTables {
            step: step.to_string(),
        });
    };
    let q = Arc::new(Query::new(session, step, query)?);
    let ts: Vec<(Vec<String>, Arc<Cell>)> = tables
        .iter()
        .map(|t| (t.names.clone(), t.cell.clone()))
        .collect();
    preplan(&q, &ts)?;
    let streams: Vec<DStream<Part>> = tables.iter().map(|t| t.parts.clone()).collect();
    let g = first.parts.g.clone();
    Ok(crate::dstream::try_transform_all(
        &g,
        &streams,
        "sql",
        move |time, parts| {
            run(&q, &ts, parts, time).map_err(|e| -> BoxError { e.to_string().into() })
        },
    ))
}

/// Checks `query` of step `step` before anything runs (`weir check`):
/// plans it when every table's columns are known (`None`: inferred at
/// the first batch), else parses it only.
pub fn check_query(
    session: &SqlSession,
    step: &str,
    tables: &[(Vec<String>, Option<Columns>)],
    query: &str,
) -> Result<(), SqlError> {
    let q = Query::new(session, step, query)?;
    let mut known = Vec::with_capacity(tables.len());
    for (names, cols) in tables {
        let Some(cols) = cols else {
            return q.parse();
        };
        known.push(BatchTable {
            names: names.clone(),
            schema: cols.arrow(),
            batches: Vec::new(),
        });
    }
    q.plan(known).map(|_| ())
}

/// Plans the query now if every table's schema is known.
fn preplan(q: &Query, tables: &[(Vec<String>, Arc<Cell>)]) -> Result<(), SqlError> {
    let mut empty = Vec::with_capacity(tables.len());
    for (names, cell) in tables {
        let Some((_, schema)) = cell.get() else {
            return Ok(());
        };
        empty.push(BatchTable {
            names: names.clone(),
            schema,
            batches: Vec::new(),
        });
    }
    q.plan(empty).map(|_| ())
}

/// One batch: fix unknown schemas, build the tables, run, convert.
fn run(
    q: &Query,
    tables: &[(Vec<String>, Arc<Cell>)],
    parts: Vec<Vec<Part>>,
    time: u64,
) -> Result<Vec<Value>, SqlError> {
    let mut batch_tables = Vec::with_capacity(tables.len());
    for ((names, cell), parts) in tables.iter().zip(parts) {
        let (cols, schema) = match cell.get() {
            Some(fixed) => fixed,
            None => match infer(q.step(), names, cell, &parts, time)? {
                Some(fixed) => fixed,
                // Nothing to infer from yet: no rows, as the same batch
                // gives again on a replay (its columns are still unknown).
                None => return Ok(Vec::new()),
            },
        };
        let mut batches = Vec::with_capacity(parts.len());
        for p in parts {
            let b = match p {
                Part::Arrow(b) => b,
                Part::Json(rows) => super::convert::json_batch(&rows, &cols, &schema)
                    .map_err(|e| internal(q, e.to_string()))?,
                Part::Failed(m) => return Err(internal(q, m)),
            };
            if b.schema() != schema {
                return Err(internal(
                    q,
                    "a partition was built under another schema".into(),
                ));
            }
            batches.push(b);
        }
        batch_tables.push(BatchTable {
            names: names.clone(),
            schema,
            batches,
        });
    }
    let t0 = std::time::Instant::now();
    let out = q.run(batch_tables, time)?;
    super::spent(&super::QUERY_NS, t0);
    let t0 = std::time::Instant::now();
    let rows = super::convert::rows_of(&out).map_err(|e| internal(q, e.to_string()));
    super::spent(&super::TO_ROWS_NS, t0);
    rows
}

fn internal(q: &Query, message: String) -> SqlError {
    SqlError::Internal {
        step: q.step().to_string(),
        message,
    }
}

/// Infers a table's schema from this batch's records, saves it (when the
/// table has a file) and fixes it; `None` when the batch has no field to
/// infer from (no records, or only empty objects and non-objects).
fn infer(
    step: &str,
    names: &[String],
    cell: &Cell,
    parts: &[Part],
    time: u64,
) -> Result<Option<super::Fixed>, SqlError> {
    let rows = parts.iter().flat_map(|p| match p {
        Part::Json(v) => v.as_slice(),
        _ => &[],
    });
    let count = rows.clone().count();
    let cols = Columns::infer(rows)?;
    if cols.0.is_empty() {
        tracing::debug!(
            step,
            batch_time_ms = time,
            records = count,
            "no columns to infer from this batch: it gives no rows"
        );
        return Ok(None);
    }
    if let Some(file) = &cell.file {
        save_schema(file, &cols)?;
    }
    tracing::info!(
        step,
        table = %names.join(" / "),
        batch_time_ms = time,
        records = count,
        columns = %cols.describe(),
        file = %cell.file.as_ref().map_or("(not saved)".into(), |f| f.display().to_string()),
        "inferred the table's schema from this batch; it is fixed from now on (records that do not fit follow the step's on_error)"
    );
    Ok(Some(cell.set(cols)))
}

fn save_schema(file: &std::path::Path, cols: &Columns) -> Result<(), SqlError> {
    let bad = |reason: String| SqlError::SchemaFile {
        path: file.to_path_buf(),
        reason,
    };
    if let Some(dir) = file.parent() {
        RealFs.create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        if let Some(up) = dir.parent() {
            RealFs.sync_dir(up).map_err(|e| bad(e.to_string()))?;
        }
    }
    write_atomic(&RealFs, file, cols.to_file().as_bytes()).map_err(|e| bad(e.to_string()))
}
