//! The PostgreSQL sink: `stream.save_to_postgres(config)` writes every
//! record of every batch as one row of `config.table`, exactly once,
//! without two-phase commit.
//!
//! Owns: the sink's configuration and its limits, the row model
//! ([`PgValue`], [`PgCell`], [`PgRow`]), the error enum and the counters.
//! The rows' binary encoding and the SQL are in `postgres_copy`, the
//! connection, the transaction and its retries in `postgres_conn`.
//!
//! Exactly once: a batch's rows and its progress row
//! `(pipeline, sink_id, partition) → (last batch time, writer)` in
//! `progress_table` (default `weir_progress`) are written in one
//! transaction. The progress row is locked `FOR UPDATE` first: a batch
//! whose time is at or below the recorded one was applied already (a
//! replay after a crash between PostgreSQL's COMMIT and weir's checkpoint
//! commit) and is skipped; a row whose writer is another data directory
//! (the data directory's identity, as in the JetStream sink's message ids)
//! fences this one: the output fails naming the other writer and the way
//! out. The output returns Ok only after COMMIT returned, and weir marks
//! the batch done in its checkpoint only after that; an unknown COMMIT
//! outcome (the connection lost during it) is retried, and the progress
//! row then tells whether it happened.
//!
//! Limits: identifiers (table, columns, progress and dead-letter tables,
//! each part of `schema.table`) 1 to [`PG_IDENTIFIER_BYTES_MAX`] bytes,
//! always quoted; 1 to [`PG_COLUMNS_MAX`] columns; a sink id or pipeline
//! 1 to [`PG_SINK_ID_BYTES_MAX`] bytes; `connect_timeout_ms` and
//! `statement_timeout_ms` 1 to [`PG_TIMEOUT_MS_MAX`] (defaults 5,000 and
//! 60,000); `tries_max` 1 to [`PG_TRIES_CEILING`] (default
//! [`PG_TRIES_MAX_DEFAULT`]), backoff doubling from
//! [`PG_BACKOFF_MS_FIRST`] to [`PG_BACKOFF_MS_MAX`] ms; rows go out in
//! COPY chunks of [`PG_COPY_CHUNK_BYTES`]. A batch is held once more in
//! memory, encoded. A batch with a row the table rejects is redone row by
//! row inside savepoints (about three round trips a row) to find it.
//! Must never: return Ok before COMMIT returned, write rows without the
//! progress row in the same transaction, build SQL from record values
//! (they travel as COPY data or parameters), leave an identifier unquoted,
//! or drop a row silently (a rejected row fails the batch or goes to the
//! dead-letter table, in the same transaction).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use super::postgres_conn::PgWriter;
use super::postgres_tls::PgTls;
use crate::dstream::{DStream, Data, EngineError, Text};

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1), in bytes.
pub const PG_IDENTIFIER_BYTES_MAX: usize = 63;
/// Most columns one sink writes.
pub const PG_COLUMNS_MAX: usize = 256;
/// Longest sink id or pipeline name, in bytes.
pub const PG_SINK_ID_BYTES_MAX: usize = 128;
/// Largest `connect_timeout_ms` and `statement_timeout_ms`.
pub const PG_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// Default tries of a batch's transaction.
pub const PG_TRIES_MAX_DEFAULT: u32 = 10;
/// Largest `tries_max`.
pub const PG_TRIES_CEILING: u32 = 1_000;
/// First pause before a retry, in ms.
pub const PG_BACKOFF_MS_FIRST: u64 = 100;
/// Longest pause between retries, in ms.
pub const PG_BACKOFF_MS_MAX: u64 = 5_000;
/// Bytes of one COPY data message.
pub const PG_COPY_CHUNK_BYTES: usize = 1 << 20;

/// Errors of the PostgreSQL sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PostgresSinkError {
    /// A setting is missing or out of its range.
    #[error("invalid PostgreSQL sink configuration: {setting} {found} must be {expected}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: String,
    },
    /// The context has no data directory (the writer's identity).
    #[error("the PostgreSQL sink `{sink}` needs a data directory: its progress row names the data directory's identity as the writer. Build the context with StreamingContext::get_or_create(DIR, ...)")]
    NoDataDir {
        /// The sink id.
        sink: String,
    },
    /// The password could not be read.
    #[error("the PostgreSQL sink `{sink}` could not read its password from {from}: {detail}. Create it (one line; a trailing newline is ignored) or point password_file / password_env elsewhere")]
    Password {
        /// The sink id.
        sink: String,
        /// `file PATH` or `environment variable NAME`.
        from: String,
        /// What went wrong.
        detail: String,
    },
    /// The sink's runtime could not start.
    #[error("could not start the PostgreSQL sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The server could not be reached, or the connection broke, on every
    /// try.
    #[error("PostgreSQL at {target} failed {tries} tries of batch {batch_time_ms} for table {table} (last during {step}: {detail}). The batch is not committed; its input stays in the log and it is replayed. Check that the server runs and accepts this user, then restart")]
    Unavailable {
        /// Host, port and database.
        target: String,
        /// The target table.
        table: String,
        /// The batch.
        batch_time_ms: u64,
        /// Tries made.
        tries: u32,
        /// What the sink was doing.
        step: &'static str,
        /// The last error.
        detail: String,
    },
    /// The target table or one of its columns cannot be used.
    #[error("PostgreSQL table {table}: {detail}. Create the table with the columns {columns} (docs/pipeline.md, `postgres`), or fix table / columns")]
    Table {
        /// The table.
        table: String,
        /// The columns the sink writes.
        columns: String,
        /// What is wrong.
        detail: String,
    },
    /// Another data directory writes this progress row.
    #[error("{0}")]
    Fenced(Box<PgFence>),
    /// A row the table rejects, under `on_error = fail`.
    #[error("PostgreSQL table {table} rejects row {row} of {rows} of batch {batch_time_ms}{}: {message}{}. The batch is not committed and nothing of it was written; fix the record or the table, or set on_error = \"dead_letter\" to divert such rows to a dead-letter table", column.as_ref().map(|c| format!(" (column `{c}`)")).unwrap_or_default(), sqlstate.as_ref().map(|s| format!(" [SQLSTATE {s}]")).unwrap_or_default())]
    BadRow {
        /// The table.
        table: String,
        /// The batch.
        batch_time_ms: u64,
        /// The row's place in the batch (0-based, partitions in order).
        row: usize,
        /// Rows in the batch.
        rows: usize,
        /// The column, when known.
        column: Option<String>,
        /// The database's (or the encoder's) message.
        message: String,
        /// The SQLSTATE, when the database refused it.
        sqlstate: Option<String>,
    },
    /// The database refused a statement for a reason that a retry does
    /// not cure.
    #[error("PostgreSQL refused the sink's {step} for table {table}: {message} [SQLSTATE {sqlstate}]{}. The batch is not committed", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Database {
        /// The table.
        table: String,
        /// What the sink was doing.
        step: &'static str,
        /// The SQLSTATE.
        sqlstate: String,
        /// The database's message.
        message: String,
        /// The database's detail, if any.
        detail: Option<String>,
    },
    /// The TLS files cannot be read or used.
    #[error("the PostgreSQL sink cannot use its TLS files: {0}")]
    TlsFiles(#[source] Box<crate::net::TlsError>),
    /// The TLS handshake failed in a way a retry does not cure.
    #[error("PostgreSQL at {target}: TLS failed ({detail}): {hint}. Nothing was written; the batch stays in weir's log and is written after a restart with the fix (docs/security.md, PostgreSQL)")]
    Tls {
        /// Host, port and database.
        target: String,
        /// The client's words.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
    /// A crash test's failpoint fired (tests only).
    #[error(transparent)]
    Crashed(#[from] crate::failpoint::Crash),
}

/// Who holds a progress row that fenced this sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgFence {
    /// The pipeline.
    pub pipeline: String,
    /// The sink id.
    pub sink: String,
    /// The partition.
    pub partition: i32,
    /// The progress table (quoted).
    pub progress_table: String,
    /// The writer on record.
    pub other: String,
    /// This data directory's identity.
    pub mine: String,
    /// The batch time on record.
    pub last_batch_ms: i64,
}

impl std::fmt::Display for PgFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        write!(
            f,
            "the PostgreSQL sink `{}` (pipeline `{}`, partition {}) is fenced: its progress row in {} was written by data directory {} (last batch {}), this one is {}. Nothing was written. If the other instance still runs, stop this one (or give it another sink_id or partition); to move the sink here deliberately, stop the other and run: UPDATE {} SET writer = {} WHERE pipeline = {} AND sink = {} AND part = {} (docs/operations.md)",
            self.sink,
            self.pipeline,
            self.partition,
            self.progress_table,
            self.other,
            self.last_batch_ms,
            self.mine,
            self.progress_table,
            lit(&self.mine),
            lit(&self.pipeline),
            lit(&self.sink),
            self.partition
        )
    }
}

/// Where the password comes from (never from the connection string of a
/// pipeline file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PgPassword {
    /// None (trust, peer or a password in the Rust caller's string).
    #[default]
    None,
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// The password itself (Rust API only).
    Value(String),
}

/// How rows reach the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgMode {
    /// Plain inserts (binary COPY straight into the table when every
    /// column's type has a binary encoding here).
    Insert,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE SET update` from a staging
    /// table; rows of one batch with the same key are applied in batch
    /// order.
    Upsert {
        /// The conflict columns (a unique index must cover them).
        key: Vec<String>,
        /// The `SET` list, such as `n = n + excluded.n` (default: every
        /// other column from `excluded`). It is SQL written by whoever
        /// configures the sink, never record data.
        update: Option<String>,
    },
}

/// What a row the table rejects does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PgOnError {
    /// The batch fails naming the row, column and message.
    #[default]
    Fail,
    /// The row goes to the dead-letter table, in the same transaction.
    DeadLetter,
}

/// Where and how the sink writes; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSinkConfig {
    /// A libpq-style connection string (`host=... port=... user=...
    /// dbname=...`) or URL (`postgresql://user@host:port/db`), without
    /// `sslmode`: TLS is `tls`.
    pub url: String,
    /// TLS (default: none).
    pub tls: PgTls,
    /// The password's source.
    pub password: PgPassword,
    /// The target table (`table` or `schema.table`).
    pub table: String,
    /// The columns, in the order of each record's cells.
    pub columns: Vec<String>,
    /// Insert or upsert.
    pub mode: PgMode,
    /// What a rejected row does.
    pub on_error: PgOnError,
    /// The dead-letter table (default `<table>_dead_letter`).
    pub dead_letter_table: Option<String>,
    /// The progress table (default `weir_progress`).
    pub progress_table: String,
    /// The pipeline's name in the progress row (default `weir`).
    pub pipeline: String,
    /// The sink's id in the progress row and the pipeline's names
    /// (`postgres:<sink_id>`; default: the table).
    pub sink_id: String,
    /// The partition in the progress row (default 0): instances writing
    /// one table from disjoint inputs take one each.
    pub partition: i32,
    /// How long connecting may take, in ms.
    pub connect_timeout_ms: u64,
    /// How long one statement may take, in ms (also the lock wait).
    pub statement_timeout_ms: u64,
    /// Tries of a batch's transaction before the output fails.
    pub tries_max: u32,
}

impl PostgresSinkConfig {
    /// A config inserting into `table`'s `columns` over `url`, with default
    /// limits; the sink id is the table.
    pub fn new(url: &str, table: &str, columns: &[&str]) -> Self {
        PostgresSinkConfig {
            url: url.to_string(),
            tls: PgTls::default(),
            password: PgPassword::None,
            table: table.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            mode: PgMode::Insert,
            on_error: PgOnError::Fail,
            dead_letter_table: None,
            progress_table: "weir_progress".to_string(),
            pipeline: "weir".to_string(),
            sink_id: table.to_string(),
            partition: 0,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 60_000,
            tries_max: PG_TRIES_MAX_DEFAULT,
        }
    }

    /// The dead-letter table's name.
    pub fn dead_letter_table(&self) -> String {
        self.dead_letter_table
            .clone()
            .unwrap_or_else(|| format!("{}_dead_letter", self.table))
    }

    /// Checks every setting against its limits.
    pub fn validate(&self) -> Result<(), PostgresSinkError> {
        let bad = |setting, found: String, expected: String| {
            Err(PostgresSinkError::Config {
                setting,
                found,
                expected,
            })
        };
        let ident = format!(
            "1 to {PG_IDENTIFIER_BYTES_MAX} bytes without control characters (as `name` or `schema.name`)"
        );
        if let Some((setting, found, expected)) =
            super::postgres_tls::check_url(&self.url, &self.tls)
        {
            return bad(setting, found, expected);
        }
        let dl = self.dead_letter_table();
        for (setting, t) in [
            ("table", &self.table),
            ("progress_table", &self.progress_table),
            ("dead_letter_table", &dl),
        ] {
            if super::postgres_copy::qualified(t).is_none() {
                return bad(setting, format!("{t:?}"), ident.clone());
            }
        }
        if self.columns.is_empty() || self.columns.len() > PG_COLUMNS_MAX {
            let n = self.columns.len().to_string();
            return bad("columns", n, format!("1 to {PG_COLUMNS_MAX} columns"));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if !super::postgres_copy::valid_ident(c) || !seen.insert(c) {
                return bad(
                    "columns",
                    format!("{c:?}"),
                    format!("distinct names of {ident}"),
                );
            }
        }
        if let PgMode::Upsert { key, update } = &self.mode {
            if key.is_empty() || key.iter().any(|k| !self.columns.contains(k)) {
                return bad(
                    "key",
                    format!("{key:?}"),
                    "1 or more of the sink's columns (a unique index must cover them)".into(),
                );
            }
            if update
                .as_ref()
                .is_some_and(|u| u.trim().is_empty() || u.contains(';'))
            {
                return bad(
                    "update",
                    format!("{update:?}"),
                    "a SET list such as \"n = n + excluded.n\" (no `;`)".into(),
                );
            }
        }
        for (setting, v) in [("pipeline", &self.pipeline), ("sink_id", &self.sink_id)] {
            if v.is_empty() || v.len() > PG_SINK_ID_BYTES_MAX || v.chars().any(char::is_control) {
                let s = format!("{v:?}");
                return bad(
                    setting,
                    s,
                    format!("1 to {PG_SINK_ID_BYTES_MAX} bytes without control characters"),
                );
            }
        }
        if self.partition < 0 {
            return bad("partition", self.partition.to_string(), "0 or more".into());
        }
        for (setting, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
        ] {
            if v == 0 || v > PG_TIMEOUT_MS_MAX {
                return bad(setting, v.to_string(), format!("1 to {PG_TIMEOUT_MS_MAX}"));
            }
        }
        if self.tries_max == 0 || self.tries_max > PG_TRIES_CEILING {
            let n = self.tries_max.to_string();
            return bad("tries_max", n, format!("1 to {PG_TRIES_CEILING}"));
        }
        Ok(())
    }
}

/// One value of a row, before it is encoded for its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum PgValue {
    /// SQL NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (into integer, float, numeric or text columns).
    Int(i64),
    /// A float.
    Float(f64),
    /// Text (parsed by the column's type where it is not text).
    Text(String),
    /// A JSON document (into json, jsonb or text columns).
    Json(String),
    /// Bytes (into bytea).
    Bytes(Vec<u8>),
}

/// A value that fills one column.
pub trait PgCell {
    /// The value.
    fn pg_value(&self) -> PgValue;
}

macro_rules! cell_int {
    ($($t:ty),*) => {$(
        impl PgCell for $t {
            fn pg_value(&self) -> PgValue {
                PgValue::Int(i64::from(*self))
            }
        }
    )*};
}
cell_int!(i8, i16, i32, i64, u8, u16, u32);

impl PgCell for u64 {
    fn pg_value(&self) -> PgValue {
        i64::try_from(*self).map_or_else(|_| PgValue::Text(self.to_string()), PgValue::Int)
    }
}
impl PgCell for usize {
    fn pg_value(&self) -> PgValue {
        (*self as u64).pg_value()
    }
}
impl PgCell for f64 {
    fn pg_value(&self) -> PgValue {
        PgValue::Float(*self)
    }
}
impl PgCell for f32 {
    fn pg_value(&self) -> PgValue {
        PgValue::Float(f64::from(*self))
    }
}
impl PgCell for bool {
    fn pg_value(&self) -> PgValue {
        PgValue::Bool(*self)
    }
}
impl PgCell for String {
    fn pg_value(&self) -> PgValue {
        PgValue::Text(self.clone())
    }
}
impl PgCell for &str {
    fn pg_value(&self) -> PgValue {
        PgValue::Text((*self).to_string())
    }
}
impl PgCell for Text {
    fn pg_value(&self) -> PgValue {
        PgValue::Text(self.as_str().to_string())
    }
}
impl PgCell for Vec<u8> {
    fn pg_value(&self) -> PgValue {
        PgValue::Bytes(self.clone())
    }
}
impl PgCell for PgValue {
    fn pg_value(&self) -> PgValue {
        self.clone()
    }
}
impl<T: PgCell> PgCell for Option<T> {
    fn pg_value(&self) -> PgValue {
        self.as_ref().map_or(PgValue::Null, PgCell::pg_value)
    }
}
/// A JSON value: strings as text, numbers, booleans and null as such,
/// objects and arrays as JSON documents.
impl PgCell for serde_json::Value {
    fn pg_value(&self) -> PgValue {
        use serde_json::Value as V;
        match self {
            V::Null => PgValue::Null,
            V::Bool(b) => PgValue::Bool(*b),
            V::Number(n) => n.as_i64().map_or_else(
                || PgValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                PgValue::Int,
            ),
            V::String(s) => PgValue::Text(s.clone()),
            other => PgValue::Json(other.to_string()),
        }
    }
}

/// A record that is one row: its cells in the order of the sink's
/// `columns`.
pub trait PgRow {
    /// Appends the row's cells to `out`.
    fn pg_row(&self, out: &mut Vec<PgValue>);
}

impl PgRow for Vec<PgValue> {
    fn pg_row(&self, out: &mut Vec<PgValue>) {
        out.extend(self.iter().cloned());
    }
}
impl PgRow for String {
    fn pg_row(&self, out: &mut Vec<PgValue>) {
        out.push(self.pg_value());
    }
}
impl PgRow for Text {
    fn pg_row(&self, out: &mut Vec<PgValue>) {
        out.push(self.pg_value());
    }
}

macro_rules! row_tuple {
    ($($n:ident),+) => {
        impl<$($n: PgCell),+> PgRow for ($($n,)+) {
            #[allow(non_snake_case)]
            fn pg_row(&self, out: &mut Vec<PgValue>) {
                let ($($n,)+) = self;
                $(out.push($n.pg_value());)+
            }
        }
    };
}
row_tuple!(A);
row_tuple!(A, B);
row_tuple!(A, B, C);
row_tuple!(A, B, C, D);
row_tuple!(A, B, C, D, E);
row_tuple!(A, B, C, D, E, F);

/// Counters of one sink, for metrics and tests.
#[derive(Debug, Default)]
pub struct PostgresSinkStats {
    /// Batches committed in PostgreSQL (replays skipped not counted).
    pub batches: AtomicU64,
    /// Rows written to the table.
    pub rows: AtomicU64,
    /// Replayed batches skipped: the progress row had them.
    pub replays_skipped: AtomicU64,
    /// Rows diverted to the dead-letter table.
    pub dead_letters: AtomicU64,
    /// Transactions tried again after a connection or server failure.
    pub retries: AtomicU64,
    /// Batches whose bulk write failed on a bad row and were redone row
    /// by row.
    pub row_by_row: AtomicU64,
}

impl super::SinkCounters for PostgresSinkStats {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn counters(&self) -> Vec<super::SinkCounter> {
        let c = super::SinkCounter::read;
        vec![
            c(
                "batches",
                "Batches committed in PostgreSQL (replays skipped not counted).",
                &self.batches,
            ),
            c("rows", "Rows written to the table.", &self.rows),
            c(
                "replays_skipped",
                "Replayed batches skipped: the progress row had them.",
                &self.replays_skipped,
            ),
            c(
                "dead_letters",
                "Rows diverted to the dead-letter table.",
                &self.dead_letters,
            ),
            c(
                "retries",
                "Transactions tried again after a connection or server failure.",
                &self.retries,
            ),
            c(
                "row_by_row",
                "Batches redone row by row after a rejected row.",
                &self.row_by_row,
            ),
        ]
    }
}

/// The pipeline name of the sink with id `sink_id`.
pub fn postgres_sink_op(sink_id: &str) -> String {
    format!("postgres:{sink_id}")
}

impl<T: Data + PgRow> DStream<T> {
    /// Writes every record of every batch as one row of `config.table`,
    /// exactly once (see the module docs). Needs a context with a data
    /// directory (`StreamingContext::get_or_create`). The TLS files are
    /// read here; nothing connects before the first batch. Returns the
    /// sink's counters.
    pub fn save_to_postgres(
        &self,
        config: PostgresSinkConfig,
    ) -> Result<Arc<PostgresSinkStats>, EngineError> {
        let invalid = |e: PostgresSinkError| EngineError::InvalidGraph {
            problems: vec![format!("save_to_postgres: {e}")],
        };
        config.validate().map_err(invalid)?;
        let tls = config.tls.load().map_err(invalid)?;
        let identity = self.sink_identity().ok_or_else(|| {
            invalid(PostgresSinkError::NoDataDir {
                sink: config.sink_id.clone(),
            })
        })?;
        let place = super::ExternalSink {
            node: "postgres_sink",
            output: "save_to_postgres",
            name: postgres_sink_op(&config.sink_id),
            params: vec![("table", config.table.clone())],
        };
        let stats = Arc::new(PostgresSinkStats::default());
        let writer = Mutex::new(PgWriter::new(config, tls, identity, stats.clone()));
        self.add_external_sink(place, move |time_ms, _replay, parts| {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            w.write(time_ms, parts)
                .map_err(|e| -> crate::dstream::BoxError { Box::new(e) })
        })?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_checks_every_limit() {
        let ok = PostgresSinkConfig::new("host=127.0.0.1 user=weir", "counts", &["word", "n"]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.columns = vec!["a".into(), "a".into()];
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.table = "a.b.c".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.table = "x".repeat(64);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.mode = PgMode::Upsert {
            key: vec!["nope".into()],
            update: None,
        };
        assert!(c.validate().unwrap_err().to_string().contains("key"));
        let mut c = ok.clone();
        c.tries_max = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.url = "host=x sslmode=require".into();
        assert!(c.validate().unwrap_err().to_string().contains("tls_mode"));
        let mut c = ok.clone();
        c.tls.mode = crate::sink::PgTlsMode::Require;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("tls_ca_file") && e.contains("verify-full"),
            "{e}"
        );
        let mut c = ok.clone();
        c.url = "host=x channel_binding=require".into();
        assert!(c.validate().is_err());
        let mut c = ok;
        c.url = "postgresql://[".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn cells_follow_their_types() {
        let mut out = Vec::new();
        (Text::new("a"), 3u64, Some(1.5f64), None::<i32>).pg_row(&mut out);
        assert_eq!(
            out,
            vec![
                PgValue::Text("a".into()),
                PgValue::Int(3),
                PgValue::Float(1.5),
                PgValue::Null
            ]
        );
        assert_eq!(u64::MAX.pg_value(), PgValue::Text(u64::MAX.to_string()));
    }
}
