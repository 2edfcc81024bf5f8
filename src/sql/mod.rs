//! SQL on micro-batches: each batch of a stream becomes a table (Apache
//! DataFusion over Arrow record batches) and a query turns it into the
//! batch of a new stream, Spark's `foreachRDD { rdd.toDF()
//! .createOrReplaceTempView(...); spark.sql(...) }` as one operator.
//!
//! Owns: [`SqlSession`] (static tables, user functions), [`SqlTable`] (a
//! stream seen as a table: its schema, fixed by its record type, declared,
//! or inferred from the first batch and saved), the operator
//! ([`DStream::sql`], [`sql_with`]) and the conversions to and from Arrow.
//! Data path per batch: each partition's records become one Arrow record
//! batch in parallel (`map_partitions`), the query runs on all of them
//! (one DataFusion partition, so rows come out in the same order on every
//! run of a batch), and each result row becomes a JSON object.
//!
//! Limits: those of `query` (query text, static tables, functions) and
//! `schema` (columns, schema file); a batch's tables and result are in
//! memory, as for any whole-batch operator.
//! Must never: keep state across batches (a query is a pure function of
//! its batch: running totals go through weir's own state operators),
//! change a table's schema once it is fixed, or let a record that does
//! not fit its table's schema through (it follows the table's bad-record
//! policy).

mod convert;
mod query;
mod schema;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use serde_json::Value;

use crate::dstream::{DStream, Data, OnError, Text};

pub use datafusion;
pub use query::{
    schema_file, SqlSession, QUERY_BYTES_MAX, QUERY_MEMORY_BYTES_MAX, RESULT_ROWS_MAX,
    STATIC_TABLES_MAX, STATIC_TABLE_BYTES_MAX, UDFS_MAX,
};
pub use schema::{ColumnType, Columns, COLUMNS_MAX, SCHEMA_FILE_BYTES_MAX, TYPE_NAMES};

/// Errors of SQL steps: planning (at declaration, or at the first batch
/// for an inferred schema), running, static tables and schemas.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The query does not parse, or does not plan against its tables.
    #[error("the query of `{step}` is not valid{}: {message}", at(*line, *column))]
    Plan {
        /// The step (operator name).
        step: String,
        /// DataFusion's message, without its error-kind prefix.
        message: String,
        /// Line in the query (from 1), where DataFusion knows it.
        line: Option<u64>,
        /// Column in the query (from 1), where DataFusion knows it.
        column: Option<u64>,
    },
    /// The query failed while running on a batch.
    #[error("the query of `{step}` failed on the batch of {batch_time_ms} ms: {message}")]
    Execute {
        /// The step.
        step: String,
        /// The batch's time.
        batch_time_ms: u64,
        /// DataFusion's message.
        message: String,
    },
    /// The query engine failed in a way that is not the query's fault.
    #[error("the SQL engine failed in `{step}`: {message}")]
    Internal {
        /// The step.
        step: String,
        /// What happened.
        message: String,
    },
    /// The query text is longer than [`QUERY_BYTES_MAX`].
    #[error(
        "the query of `{step}` has {bytes} bytes, more than the {max} allowed; split it into steps"
    )]
    QueryTooLong {
        /// The step.
        step: String,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A static table could not be loaded.
    #[error("static table `{table}` could not be loaded from {}: {message}", path.display())]
    StaticTable {
        /// The table name.
        table: String,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// More tables or functions than a session holds.
    #[error("a SQL session holds at most {max} {what}")]
    TooMany {
        /// "static tables" or "user functions".
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A schema with more than [`COLUMNS_MAX`] columns.
    #[error("a schema of {count} columns; at most {max} are allowed")]
    TooManyColumns {
        /// Columns given or inferred.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A column named twice in a schema.
    #[error("column `{name}` is named twice in the schema")]
    DuplicateColumn {
        /// The column.
        name: String,
    },
    /// A schema file could not be read, parsed or written.
    #[error("schema file {}: {reason}; with weir stopped, fix or delete it (deleted: the columns are inferred again from the next batch with records)", path.display())]
    SchemaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `sql_with` given no table.
    #[error("`{step}` has no input table; give it at least one stream")]
    NoTables {
        /// The step.
        step: String,
    },
    /// The small runtime queries run on could not start.
    #[error("the SQL runtime could not start: {source}")]
    Runtime {
        /// The operating system's error.
        source: std::io::Error,
    },
}

fn at(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c} of the query"),
        _ => String::new(),
    }
}

impl SqlError {
    fn plan(step: &str, e: &DataFusionError) -> SqlError {
        let (message, pos) = user_message(e);
        SqlError::Plan {
            step: step.to_string(),
            message,
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
        }
    }
}

/// DataFusion's error in user words: the diagnostic's message where there
/// is one, else the error without its kind prefix and backtrace; with the
/// position in the query where known.
pub(crate) fn user_message(e: &DataFusionError) -> (String, Option<(u64, u64)>) {
    if let Some(d) = e.diagnostic() {
        if let Some(span) = d.span.filter(|s| s.start.line > 0) {
            return (tidy(&d.message), Some((span.start.line, span.start.column)));
        }
    }
    let text = strip_kinds(e.strip_backtrace().trim());
    let pos = parser_position(&text);
    (tidy(&text), pos)
}

/// DataFusion's error-kind prefixes, in any order and nesting.
const KIND_PREFIXES: &[&str] = &[
    "Error during planning: ",
    "Schema error: ",
    "SQL error: ",
    "This feature is not implemented: ",
    "Execution error: ",
    "Arrow error: ",
    "Internal error: ",
    "Optimizer rule ",
];

fn strip_kinds(text: &str) -> String {
    let mut text = text.to_string();
    while let Some(p) = KIND_PREFIXES.iter().find(|p| text.starts_with(**p)) {
        text = text[p.len()..].to_string();
    }
    if let Some(inner) = text.strip_prefix("ParserError(\"") {
        text = inner
            .trim_end_matches(")")
            .trim_end_matches('"')
            .to_string();
    }
    text
}

/// The message on one line, without DataFusion's "file a bug" sentence,
/// its per-signature list (kept: the sentence naming the call and the
/// candidate signatures) or the parser's position suffix; at most
/// [`MESSAGE_CHARS_MAX`] characters.
fn tidy(text: &str) -> String {
    let mut text = text.to_string();
    if let Some(i) = text.find("No function matches") {
        text = text[i..].to_string();
    }
    if let Some(i) = text.find("This issue was likely caused by a bug") {
        let end = text[i..]
            .find("issues.")
            .map_or(text.len(), |j| i + j + "issues.".len());
        text.replace_range(i..end, "");
    }
    if let Some(i) = text.find(" at Line: ") {
        text.truncate(i);
    }
    let (main, candidates) = match text.split_once("Candidate functions:") {
        Some((m, c)) => (
            m.to_string(),
            Some(c.split_whitespace().collect::<Vec<_>>().join(" ")),
        ),
        None => (text.clone(), None),
    };
    let mut out = main.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(c) = candidates.filter(|c| !c.is_empty()) {
        out.push_str(&format!(" Candidates: {c}"));
    }
    if out.chars().count() > MESSAGE_CHARS_MAX {
        out = out.chars().take(MESSAGE_CHARS_MAX).collect::<String>() + "...";
    }
    out
}

/// Longest message of a query error shown.
const MESSAGE_CHARS_MAX: usize = 400;

/// `... at Line: 3, Column: 14` in a parser message.
fn parser_position(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.find("at Line: ")? + "at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, col.parse().ok()?))
}

/// Where SQL steps spent their time since the process started, summed
/// over every step and thread (what `examples/bench_sql_wordcount.rs`
/// reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqlTimings {
    /// Records turned into Arrow record batches (all partitions' threads).
    pub to_arrow_ns: u64,
    /// Planning and running the queries.
    pub query_ns: u64,
    /// Result rows turned into JSON records.
    pub to_rows_ns: u64,
}

static TO_ARROW_NS: AtomicU64 = AtomicU64::new(0);
static QUERY_NS: AtomicU64 = AtomicU64::new(0);
static TO_ROWS_NS: AtomicU64 = AtomicU64::new(0);

/// The time SQL steps spent so far, by phase.
pub fn timings() -> SqlTimings {
    SqlTimings {
        to_arrow_ns: TO_ARROW_NS.load(Ordering::Relaxed),
        query_ns: QUERY_NS.load(Ordering::Relaxed),
        to_rows_ns: TO_ROWS_NS.load(Ordering::Relaxed),
    }
}

/// Adds the time since `t0` to `counter`.
fn spent(counter: &AtomicU64, t0: std::time::Instant) {
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(ns, Ordering::Relaxed);
}

/// A record type a SQL table can be made of.
pub trait SqlRecord: Data {
    /// The columns the type fixes (one `value` column for text), or
    /// `None` for JSON records, whose schema is declared or inferred.
    fn fixed_columns() -> Option<Columns>;
    /// One partition's records as a table part of `cols`.
    fn to_arrow(
        records: &[Self],
        cols: &Columns,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, String>;
    /// The record as a JSON value, where it is one (for inference).
    fn as_json(&self) -> Option<&Value>;
}

fn value_column() -> Columns {
    Columns(vec![("value".to_string(), ColumnType::String)])
}

impl SqlRecord for Text {
    fn fixed_columns() -> Option<Columns> {
        Some(value_column())
    }
    fn to_arrow(records: &[Self], _: &Columns, schema: &SchemaRef) -> Result<RecordBatch, String> {
        convert::text_batch(records.iter().map(Text::as_str), schema).map_err(|e| e.to_string())
    }
    fn as_json(&self) -> Option<&Value> {
        None
    }
}

impl SqlRecord for String {
    fn fixed_columns() -> Option<Columns> {
        Some(value_column())
    }
    fn to_arrow(records: &[Self], _: &Columns, schema: &SchemaRef) -> Result<RecordBatch, String> {
        convert::text_batch(records.iter().map(String::as_str), schema).map_err(|e| e.to_string())
    }
    fn as_json(&self) -> Option<&Value> {
        None
    }
}

impl SqlRecord for Value {
    fn fixed_columns() -> Option<Columns> {
        None
    }
    fn to_arrow(
        records: &[Self],
        cols: &Columns,
        schema: &SchemaRef,
    ) -> Result<RecordBatch, String> {
        convert::json_batch(records, cols, schema).map_err(|e| e.to_string())
    }
    fn as_json(&self) -> Option<&Value> {
        Some(self)
    }
}

/// A table's schema once it is known, shared by its partition stage and
/// the query stage; `file`: where an inferred schema is saved.
struct Cell {
    fixed: RwLock<Option<Fixed>>,
    file: Option<PathBuf>,
}

/// A fixed schema: the columns (shared: every record's fit test reads
/// them) and their Arrow schema.
type Fixed = (Arc<Columns>, SchemaRef);

impl Cell {
    fn new(cols: Option<Columns>, file: Option<PathBuf>) -> Cell {
        Cell {
            fixed: RwLock::new(cols.map(|c| {
                let s = c.arrow();
                (Arc::new(c), s)
            })),
            file,
        }
    }
    fn get(&self) -> Option<Fixed> {
        self.fixed.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, cols: Columns) -> Fixed {
        let schema = cols.arrow();
        let mut g = self.fixed.write().unwrap_or_else(|e| e.into_inner());
        g.get_or_insert((Arc::new(cols), schema)).clone()
    }
}

/// One partition of a table: Arrow once the schema is known, else the
/// JSON records the first batch infers it from.
#[derive(Clone)]
enum Part {
    Arrow(RecordBatch),
    Json(Vec<Value>),
    Failed(String),
}

/// The schema of a table of JSON records.
#[derive(Debug, Clone)]
pub enum SqlSchema {
    /// These columns; a record that does not fit them is a bad record.
    Declared(Columns),
    /// Inferred from the first batch the step runs (logged), then fixed;
    /// with a file, saved there before that batch's rows leave the step
    /// and read back at the next start, so a replayed batch sees the
    /// same columns.
    Infer(Option<PathBuf>),
}

/// What a record that does not fit its table's schema does.
#[derive(Debug, Clone)]
pub enum Misfits {
    /// As [`OnError`]: fail the batch, or dead-letter the record.
    Policy(OnError),
    /// Skip it, counted here.
    Drop(Arc<AtomicU64>),
}

/// A stream seen as a table named `name` in a query.
#[derive(Clone)]
pub struct SqlTable {
    names: Vec<String>,
    parts: DStream<Part>,
    cell: Arc<Cell>,
}

impl std::fmt::Debug for SqlTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTable")
            .field("names", &self.names)
            .finish()
    }
}

impl SqlTable {
    /// `stream` as table `name`: text records as one `value` column, JSON
    /// records with a schema inferred from the first batch (not saved:
    /// use [`SqlTable::json`] to keep it across restarts).
    ///
    /// JSON records that are not objects fail their batch; an inferred
    /// schema lives in memory only, so a restart infers again from the
    /// first batch it runs (possibly another one): for a pipeline that
    /// must replay to the same rows, give the columns or a schema file.
    pub fn new<T: SqlRecord>(name: &str, stream: &DStream<T>) -> SqlTable {
        let Some(cols) = T::fixed_columns() else {
            let json = stream.map(|r: T| r.as_json().cloned().unwrap_or(Value::Null));
            let cell = Arc::new(Cell::new(None, None));
            let fitted = fit(&json, cell.clone(), Misfits::Policy(OnError::Fail));
            return SqlTable::of(name, &fitted, cell);
        };
        SqlTable::of(name, stream, Arc::new(Cell::new(Some(cols), None)))
    }

    /// JSON records as table `name` under `schema`; `misfits` says what
    /// a record that does not fit it does.
    pub fn json(
        name: &str,
        stream: &DStream<Value>,
        schema: SqlSchema,
        misfits: Misfits,
    ) -> Result<SqlTable, SqlError> {
        SqlTable::json_then(name, stream, schema, misfits, DStream::clone)
    }

    /// [`SqlTable::json`] with `then` applied to the records that fit,
    /// before they become the table: a window there sees each record once
    /// through the fit test (a misfit is failed, dead-lettered or dropped
    /// once, not once per window it would be in).
    pub fn json_then(
        name: &str,
        stream: &DStream<Value>,
        schema: SqlSchema,
        misfits: Misfits,
        then: impl FnOnce(&DStream<Value>) -> DStream<Value>,
    ) -> Result<SqlTable, SqlError> {
        let fixed = match &schema {
            SqlSchema::Declared(c) => Some(c.clone()),
            SqlSchema::Infer(Some(file)) => read_schema_file(file)?,
            SqlSchema::Infer(None) => None,
        };
        let file = match schema {
            SqlSchema::Infer(f) => f,
            SqlSchema::Declared(_) => None,
        };
        let cell = Arc::new(Cell::new(fixed, file));
        let fitted = then(&fit(stream, cell.clone(), misfits));
        Ok(SqlTable::of(name, &fitted, cell))
    }

    fn of<T: SqlRecord>(name: &str, stream: &DStream<T>, cell: Arc<Cell>) -> SqlTable {
        let c = cell.clone();
        let parts = stream.map_partitions(move |v: Vec<T>| {
            let t0 = std::time::Instant::now();
            let part = match c.get() {
                Some((cols, schema)) => match T::to_arrow(&v, &cols, &schema) {
                    Ok(b) => Part::Arrow(b),
                    Err(e) => Part::Failed(e),
                },
                None => Part::Json(v.iter().filter_map(|r| r.as_json().cloned()).collect()),
            };
            spent(&TO_ARROW_NS, t0);
            [part]
        });
        SqlTable {
            names: vec![name.to_string()],
            parts,
            cell,
        }
    }

    /// Makes the table visible under `name` too.
    pub fn also_named(mut self, name: &str) -> SqlTable {
        self.names.push(name.to_string());
        self
    }

    /// Its schema, if fixed yet.
    pub fn columns(&self) -> Option<Columns> {
        self.cell.get().map(|c| (*c.0).clone())
    }
}

/// The records of `stream` that fit the cell's schema (once fixed); the
/// others follow `misfits`.
fn fit(stream: &DStream<Value>, cell: Arc<Cell>, misfits: Misfits) -> DStream<Value> {
    let check = move |v: &Value| -> Result<(), String> {
        if !v.is_object() {
            return Err(format!(
                "the record is {}, not a JSON object: a table's rows are objects",
                schema::kind_of(v)
            ));
        }
        match cell.get().and_then(|(c, _)| c.misfit(v)) {
            None => Ok(()),
            Some((col, want, got)) => Err(format!(
                "the record does not fit column `{col}`: expected {want}, found {got}"
            )),
        }
    };
    match misfits {
        Misfits::Policy(on_error) => {
            stream.try_map(on_error, move |v: &Value| check(v).map(|()| v.clone()))
        }
        Misfits::Drop(counter) => stream.flat_map_with(move |v: Value, out| match check(&v) {
            Ok(()) => out(v),
            Err(_) => {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }),
    }
}

fn read_schema_file(file: &std::path::Path) -> Result<Option<Columns>, SqlError> {
    let bad = |reason: String| SqlError::SchemaFile {
        path: file.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if meta.len() > SCHEMA_FILE_BYTES_MAX {
        return Err(bad(format!(
            "{} bytes, more than {SCHEMA_FILE_BYTES_MAX}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
    Columns::from_file(&text).map(Some).map_err(bad)
}

mod operator;
pub use operator::{check_query, sql_step, sql_with, typed_rows};
