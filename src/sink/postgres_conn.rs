//! The PostgreSQL sink's connection and transaction: [`PgWriter`] holds
//! the sink's small tokio runtime, one client (made at first use, again
//! after a failure), the table's plan, and runs each batch's transaction
//! with its retries.
//!
//! One batch: encode the rows (before any I/O), then up to `tries_max`
//! tries of: `BEGIN`; make sure the progress row exists; lock it
//! `FOR UPDATE`; fenced if another writer holds it, skipped if it records
//! this batch or a later one; `SAVEPOINT`; COPY (and, staged, one
//! `INSERT ... SELECT` per round); on a data error (SQLSTATE class 22 or
//! 23) back to the savepoint and row by row, each in its own savepoint,
//! to find the rejected rows; dead letters; the progress row updated;
//! failpoint `postgres_before_commit`; `COMMIT`. A lost connection, the
//! server shutting down or starting (class 08, 57P01-57P03), too many
//! connections (53300), serialization failures and deadlocks (40001,
//! 40P01) and a read-only server (25006) are retried on a fresh
//! connection after a backoff doubling from 100 ms to 5 s; anything else
//! fails the output at once, as does a TLS failure that a retry does not
//! cure (a certificate refused, a server without TLS: `postgres_tls`).
//!
//! Limits: [`RUNTIME_THREADS`] runtime thread; the session sets
//! `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout` to `statement_timeout_ms`.
//! Must never: be called from inside an async runtime (it blocks on its
//! own), retry a data error (a retry would fail the same way), or report a
//! batch written before COMMIT returned.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Transaction};

use super::postgres::{
    PgFence, PgMode, PgOnError, PgPassword, PgRow, PostgresSinkConfig, PostgresSinkError,
    PostgresSinkStats, PG_BACKOFF_MS_FIRST, PG_BACKOFF_MS_MAX, PG_COPY_CHUNK_BYTES,
};
use super::postgres_copy::{qualified, row_json, Column, Enc, Encoded, Plan};

/// Threads of the sink's runtime.
pub const RUNTIME_THREADS: usize = 1;
/// The failpoint at the start of a batch's write (before connecting).
pub const BEFORE_TRANSACTION_FAILPOINT: &str = "postgres_before_transaction";
/// The failpoint after the rows and the progress row, before COMMIT.
pub const BEFORE_COMMIT_FAILPOINT: &str = "postgres_before_commit";

/// The runtime, shut down in the background when dropped (a context may
/// be dropped inside another runtime).
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A connected session with its plan.
struct Session {
    client: Client,
    plan: Arc<Plan>,
}

/// Why a try failed: retry on a new connection, or give up.
enum TryError {
    Retry {
        step: &'static str,
        error: tokio_postgres::Error,
    },
    Fatal(PostgresSinkError),
}

/// What a committed (or skipped) batch did.
#[derive(Debug, Default)]
struct Done {
    replay: bool,
    rows: u64,
    dead: u64,
    row_by_row: bool,
}

/// One sink's writer; see the module docs.
pub(super) struct PgWriter {
    cfg: PostgresSinkConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    identity: String,
    stats: Arc<PostgresSinkStats>,
    rt: Option<Rt>,
    session: Option<Session>,
    table: String,
    progress: String,
    dead_letter: String,
}

/// Whether `e` says nothing about the data: the connection or server.
fn retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(s) => {
            let c = s.code();
            c.starts_with("08")
                || matches!(
                    c,
                    "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" | "25006"
                )
        }
    }
}

/// Whether `e` is a rejected value or row (class 22 or 23).
fn data_error(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|s| s.code().starts_with("22") || s.code().starts_with("23"))
}

/// The error's words: the server's message (and detail), or the client's.
fn words(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.detail() {
            Some(detail) => format!("{} ({detail})", d.message()),
            None => d.message().to_string(),
        },
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    }
}

/// One encoded cell as a parameter: its bytes are sent as they are.
#[derive(Debug)]
struct Raw<'a>(Option<&'a [u8]>);

impl ToSql for Raw<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(b) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

impl PgWriter {
    pub(super) fn new(
        cfg: PostgresSinkConfig,
        tls: Option<Arc<rustls::ClientConfig>>,
        identity: String,
        stats: Arc<PostgresSinkStats>,
    ) -> PgWriter {
        let table = qualified(&cfg.table).unwrap_or_default();
        let progress = qualified(&cfg.progress_table).unwrap_or_default();
        let dead_letter = qualified(&cfg.dead_letter_table()).unwrap_or_default();
        PgWriter {
            cfg,
            tls,
            identity,
            stats,
            rt: None,
            session: None,
            table,
            progress,
            dead_letter,
        }
    }

    /// Host, port and database, for messages (never the password).
    fn target(&self) -> String {
        match self.cfg.url.parse::<tokio_postgres::Config>() {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(s) => s.clone(),
                        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                    })
                    .collect();
                let ports: Vec<String> = c.get_ports().iter().map(u16::to_string).collect();
                format!(
                    "{}:{} database {}",
                    hosts.join(","),
                    ports.join(","),
                    c.get_dbname().or(c.get_user()).unwrap_or("(default)")
                )
            }
            Err(_) => "(an invalid connection string)".into(),
        }
    }

    fn password(&self) -> Result<Option<String>, PostgresSinkError> {
        let err = |from: String, detail: String| PostgresSinkError::Password {
            sink: self.cfg.sink_id.clone(),
            from,
            detail,
        };
        Ok(match &self.cfg.password {
            PgPassword::None => None,
            PgPassword::Value(v) => Some(v.clone()),
            PgPassword::Env(var) => Some(
                std::env::var(var)
                    .map_err(|e| err(format!("environment variable {var}"), e.to_string()))?,
            ),
            PgPassword::File(p) => {
                let s = std::fs::read_to_string(p)
                    .map_err(|e| err(format!("file {}", p.display()), e.to_string()))?;
                Some(s.lines().next().unwrap_or("").to_string())
            }
        })
    }

    /// Writes one batch; Ok once PostgreSQL committed it (or had it).
    pub(super) fn write<T: PgRow>(
        &mut self,
        time_ms: u64,
        parts: &[Vec<T>],
    ) -> Result<(), PostgresSinkError> {
        crate::failpoint::hit(BEFORE_TRANSACTION_FAILPOINT)?;
        if self.rt.is_none() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(RUNTIME_THREADS)
                .thread_name("weir-pg-sink")
                .enable_all()
                .build()
                .map_err(PostgresSinkError::Runtime)?;
            self.rt = Some(Rt(Some(rt)));
        }
        let rt = match self.rt.as_ref().and_then(|r| r.0.as_ref()) {
            Some(rt) => rt.handle().clone(),
            None => {
                return Err(PostgresSinkError::Runtime(std::io::Error::other(
                    "no runtime",
                )))
            }
        };
        let flat: Vec<&T> = parts.iter().flatten().collect();
        // Only a row the server rejects is rendered again (dead letter).
        let json_of = |plan: &Plan, row: usize| {
            let mut v = Vec::new();
            if let Some(r) = flat.get(row) {
                r.pg_row(&mut v);
            }
            row_json(plan, &v)
        };
        let mut encoded: Option<Encoded> = None;
        let mut backoff = Duration::from_millis(PG_BACKOFF_MS_FIRST);
        let mut tries = 0;
        loop {
            tries += 1;
            let got = rt.block_on(async {
                let mut session = self.session().await?;
                let plan = session.plan.clone();
                if encoded.is_none() {
                    encoded = Some(Encoded::new(&plan, &self.key_indices(), &flat));
                }
                let enc = encoded.as_ref().ok_or_else(|| {
                    TryError::Fatal(PostgresSinkError::Runtime(std::io::Error::other("no rows")))
                })?;
                let done = self
                    .transaction(&mut session, time_ms, &plan, enc, &json_of)
                    .await?;
                self.session = Some(session);
                Ok(done)
            });
            match got {
                Ok(done) => {
                    let s = &self.stats;
                    if done.replay {
                        s.replays_skipped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        s.batches.fetch_add(1, Ordering::Relaxed);
                        s.rows.fetch_add(done.rows, Ordering::Relaxed);
                        s.dead_letters.fetch_add(done.dead, Ordering::Relaxed);
                        s.row_by_row
                            .fetch_add(u64::from(done.row_by_row), Ordering::Relaxed);
                    }
                    return Ok(());
                }
                // A failed try's session is gone: the next starts clean.
                Err(TryError::Fatal(e)) => return Err(e),
                Err(TryError::Retry { step, error }) => {
                    let detail = words(&error);
                    if tries >= self.cfg.tries_max {
                        return Err(PostgresSinkError::Unavailable {
                            target: self.target(),
                            table: self.table.clone(),
                            batch_time_ms: time_ms,
                            tries,
                            step,
                            detail,
                        });
                    }
                    tracing::warn!(table = %self.table, tries, step, error = %detail, "PostgreSQL sink: the transaction failed on the connection or the server; trying again on a new connection");
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(PG_BACKOFF_MS_MAX));
                }
            }
        }
    }

    fn key_indices(&self) -> Vec<usize> {
        match &self.cfg.mode {
            PgMode::Insert => Vec::new(),
            PgMode::Upsert { key, .. } => key
                .iter()
                .filter_map(|k| self.cfg.columns.iter().position(|c| c == k))
                .collect(),
        }
    }

    /// The session (taken out; put back after a good try), connected and
    /// set up at first use.
    async fn session(&mut self) -> Result<Session, TryError> {
        if let Some(s) = self.session.take() {
            if !s.client.is_closed() {
                return Ok(s);
            }
        }
        let mut pc: tokio_postgres::Config = self.cfg.url.parse().map_err(|e| {
            TryError::Fatal(PostgresSinkError::Config {
                setting: "url",
                found: "(not shown)".into(),
                expected: format!("a valid connection string ({e})"),
            })
        })?;
        if let Some(p) = self.password().map_err(TryError::Fatal)? {
            pc.password(p);
        }
        pc.connect_timeout(Duration::from_millis(self.cfg.connect_timeout_ms));
        pc.application_name(format!("weir {}", self.cfg.sink_id));
        pc.keepalives(true);
        let client = match super::postgres_tls::connect(&mut pc, self.tls.as_ref()).await {
            Ok(c) => c,
            Err(error) => {
                return Err(match super::postgres_tls::tls_failure(&error) {
                    Some(hint) => TryError::Fatal(PostgresSinkError::Tls {
                        target: self.target(),
                        detail: words(&error),
                        hint,
                    }),
                    None => TryError::Retry {
                        step: "connect",
                        error,
                    },
                })
            }
        };
        let retry = |step| move |error| TryError::Retry { step, error };
        let t = self.cfg.statement_timeout_ms;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {t}; SET lock_timeout = {t}; SET idle_in_transaction_session_timeout = {t}"
            ))
            .await
            .map_err(retry("session settings"))?;
        let plan = Arc::new(self.setup(&client).await?);
        Ok(Session { client, plan })
    }

    /// Creates the progress and dead-letter tables if missing, reads the
    /// target's columns and creates the staging table.
    async fn setup(&self, client: &Client) -> Result<Plan, TryError> {
        let table = &self.table;
        let db = |step: &'static str| {
            move |error: tokio_postgres::Error| self.classify(step, table, error)
        };
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, part integer NOT NULL, batch_time_ms bigint NOT NULL, writer text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink, part))",
                self.progress
            ))
            .await
            .map_err(db("creating the progress table"))?;
        if self.cfg.on_error == PgOnError::DeadLetter {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, sink text NOT NULL, batch_time_ms bigint NOT NULL, row_index bigint NOT NULL, row_json text NOT NULL, error text NOT NULL, sqlstate text, stored_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink, batch_time_ms, row_index))",
                    self.dead_letter
                ))
                .await
                .map_err(db("creating the dead-letter table"))?;
        }
        let rows = client
            .query(
                "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&self.table],
            )
            .await
            .map_err(db("reading the table's columns"))?;
        let table_err = |detail: String| {
            TryError::Fatal(PostgresSinkError::Table {
                table: self.table.clone(),
                columns: self.cfg.columns.join(", "),
                detail,
            })
        };
        if rows.is_empty() {
            return Err(table_err(
                "the table does not exist (or has no columns)".into(),
            ));
        }
        let mut columns = Vec::with_capacity(self.cfg.columns.len());
        for name in &self.cfg.columns {
            let Some(r) = rows.iter().find(|r| r.get::<_, String>(0) == *name) else {
                let have: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
                return Err(table_err(format!(
                    "it has no column `{name}` (it has {})",
                    have.join(", ")
                )));
            };
            let oid: u32 = r.get(1);
            columns.push(Column {
                name: name.clone(),
                sql_type: r.get(2),
                enc: Enc::of(oid),
            });
        }
        let plan = Plan::new(&self.cfg, &self.table, columns);
        if !plan.direct {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS pg_temp.weir_stage; {}",
                    plan.create_stage
                ))
                .await
                .map_err(db("creating the staging table"))?;
        }
        Ok(plan)
    }

    /// A server error as a retry or a fatal error of `step`.
    fn classify(&self, step: &'static str, table: &str, error: tokio_postgres::Error) -> TryError {
        if retryable(&error) {
            return TryError::Retry { step, error };
        }
        let (sqlstate, message, detail) = match error.as_db_error() {
            Some(d) => (
                d.code().code().to_string(),
                d.message().to_string(),
                d.detail().map(str::to_string),
            ),
            None => (String::new(), words(&error), None),
        };
        TryError::Fatal(PostgresSinkError::Database {
            table: table.to_string(),
            step,
            sqlstate,
            message,
            detail,
        })
    }

    /// Makes sure the progress row exists, locks it and returns the batch
    /// time it records; fenced if another data directory wrote it.
    async fn lock_progress(&self, tx: &Transaction<'_>) -> Result<i64, TryError> {
        let (cfg, progress, identity) = (&self.cfg, &self.progress, &self.identity);
        let db = |step: &'static str| {
            move |error: tokio_postgres::Error| self.classify(step, &self.table, error)
        };
        let part = cfg.partition;
        tx.execute(
            &format!("INSERT INTO {progress} (pipeline, sink, part, batch_time_ms, writer) VALUES ($1, $2, $3, -1, $4) ON CONFLICT DO NOTHING"),
            &[&cfg.pipeline, &cfg.sink_id, &part, identity],
        )
        .await
        .map_err(db("creating the progress row"))?;
        let row = tx
            .query_one(
                &format!("SELECT batch_time_ms, writer FROM {progress} WHERE pipeline = $1 AND sink = $2 AND part = $3 FOR UPDATE"),
                &[&cfg.pipeline, &cfg.sink_id, &part],
            )
            .await
            .map_err(db("locking the progress row"))?;
        let (last, writer): (i64, String) = (row.get(0), row.get(1));
        if writer != *identity {
            return Err(TryError::Fatal(PostgresSinkError::Fenced(Box::new(
                PgFence {
                    pipeline: cfg.pipeline.clone(),
                    sink: cfg.sink_id.clone(),
                    partition: part,
                    progress_table: progress.clone(),
                    other: writer,
                    mine: identity.clone(),
                    last_batch_ms: last,
                },
            ))));
        }
        Ok(last)
    }

    /// Writes `bad` into the dead-letter table (batch time `t`).
    async fn dead_letters(
        &self,
        tx: &Transaction<'_>,
        t: i64,
        bad: &[BadFound],
    ) -> Result<(), TryError> {
        let cfg = &self.cfg;
        let db = |step: &'static str| {
            move |error: tokio_postgres::Error| self.classify(step, &self.table, error)
        };
        let stmt = format!("INSERT INTO {} (pipeline, sink, batch_time_ms, row_index, row_json, error, sqlstate) VALUES ($1, $2, $3, $4, $5, $6, $7)", self.dead_letter);
        let stmt = tx
            .prepare(&stmt)
            .await
            .map_err(db("preparing the dead-letter insert"))?;
        for b in bad {
            let message = match &b.column {
                Some(c) => format!("column `{c}`: {}", b.message),
                None => b.message.clone(),
            };
            let row = i64::try_from(b.row).unwrap_or(i64::MAX);
            tx.execute(
                &stmt,
                &[
                    &cfg.pipeline,
                    &cfg.sink_id,
                    &t,
                    &row,
                    &b.json,
                    &message,
                    &b.sqlstate,
                ],
            )
            .await
            .map_err(db("writing the dead-letter table"))?;
        }
        Ok(())
    }

    /// One try of the batch's transaction; see the module docs.
    async fn transaction(
        &self,
        session: &mut Session,
        time_ms: u64,
        plan: &Plan,
        enc: &Encoded,
        json_of: &dyn Fn(&Plan, usize) -> String,
    ) -> Result<Done, TryError> {
        let cfg = &self.cfg;
        let db = |step: &'static str| {
            move |error: tokio_postgres::Error| self.classify(step, &self.table, error)
        };
        let mut tx = session.client.transaction().await.map_err(db("BEGIN"))?;
        let last = self.lock_progress(&tx).await?;
        let t = i64::try_from(time_ms).unwrap_or(i64::MAX);
        if t <= last {
            tx.rollback().await.map_err(db("ROLLBACK"))?;
            return Ok(Done {
                replay: true,
                ..Done::default()
            });
        }
        let mut bad: Vec<BadFound> = enc
            .bad
            .iter()
            .map(|b| BadFound {
                row: b.row,
                column: Some(b.column.clone()).filter(|c| !c.is_empty()),
                message: b.message.clone(),
                sqlstate: None,
                json: b.json.clone(),
            })
            .collect();
        let fail = |b: &BadFound| {
            TryError::Fatal(PostgresSinkError::BadRow {
                table: self.table.clone(),
                batch_time_ms: time_ms,
                row: b.row,
                rows: enc.total,
                column: b.column.clone(),
                message: b.message.clone(),
                sqlstate: b.sqlstate.clone(),
            })
        };
        if cfg.on_error == PgOnError::Fail {
            if let Some(b) = bad.first() {
                return Err(fail(b));
            }
        }
        let mut row_by_row = false;
        let written = match bulk(&mut tx, plan, enc).await {
            Ok(n) => n,
            Err(e) if data_error(&e) => {
                row_by_row = true;
                let found = one_by_one(&mut tx, plan, enc, cfg.on_error, json_of).await;
                let (n, found) = found.map_err(db("writing rows one by one"))?;
                if cfg.on_error == PgOnError::Fail {
                    if let Some(b) = found.first() {
                        return Err(fail(b));
                    }
                }
                bad.extend(found);
                bad.sort_by_key(|b| b.row);
                n
            }
            Err(e) => return Err(db("writing the rows (COPY)")(e)),
        };
        if !bad.is_empty() {
            self.dead_letters(&tx, t, &bad).await?;
        }
        tx.execute(
            &format!("UPDATE {} SET batch_time_ms = $4, updated_at = now() WHERE pipeline = $1 AND sink = $2 AND part = $3", self.progress),
            &[&cfg.pipeline, &cfg.sink_id, &cfg.partition, &t],
        )
        .await
        .map_err(db("updating the progress row"))?;
        crate::failpoint::hit(BEFORE_COMMIT_FAILPOINT)
            .map_err(|c| TryError::Fatal(PostgresSinkError::Crashed(c)))?;
        tx.commit().await.map_err(db("COMMIT"))?;
        Ok(Done {
            replay: false,
            rows: written,
            dead: bad.len() as u64,
            row_by_row,
        })
    }
}

/// The rows in bulk inside a savepoint: COPY, then (staged) one insert per
/// round. Rolls back to the savepoint on any error.
async fn bulk(
    tx: &mut Transaction<'_>,
    plan: &Plan,
    enc: &Encoded,
) -> Result<u64, tokio_postgres::Error> {
    let sp = tx.savepoint("weir_rows").await?;
    let run = async {
        if enc.len() == 0 {
            return Ok(0);
        }
        let sink = sp.copy_in::<_, bytes::Bytes>(plan.copy.as_str()).await?;
        futures_util::pin_mut!(sink);
        for chunk in enc.chunks(PG_COPY_CHUNK_BYTES) {
            sink.feed(chunk).await?;
        }
        let copied = sink.as_mut().finish().await?;
        if plan.direct {
            return Ok(copied);
        }
        let mut n = 0;
        if plan.rounds {
            let stmt = sp.prepare(&plan.insert_staged).await?;
            for r in 0..enc.round_count {
                n += sp.execute(&stmt, &[&(r as i32)]).await?;
            }
        } else {
            n = sp.execute(plan.insert_staged.as_str(), &[]).await?;
        }
        Ok(n)
    };
    match run.await {
        Ok(n) => {
            sp.commit().await?;
            Ok(n)
        }
        Err(e) => {
            // A broken connection fails the rollback too; the caller
            // classifies the first error.
            let _ = sp.rollback().await;
            Err(e)
        }
    }
}

/// A row the table rejected.
struct BadFound {
    /// Its place in the batch.
    row: usize,
    /// The column, when known.
    column: Option<String>,
    /// The database's (or the encoder's) message.
    message: String,
    /// The SQLSTATE, when the database refused it.
    sqlstate: Option<String>,
    /// The row as JSON.
    json: String,
}

/// Every row on its own, each in a savepoint: the rows written and the
/// rows rejected (row, column, message, SQLSTATE, row JSON); under `Fail`
/// it stops at the first rejected row.
async fn one_by_one(
    tx: &mut Transaction<'_>,
    plan: &Plan,
    enc: &Encoded,
    on_error: PgOnError,
    json_of: &dyn Fn(&Plan, usize) -> String,
) -> Result<(u64, Vec<BadFound>), tokio_postgres::Error> {
    let stmt = tx.prepare(&plan.insert_one).await?;
    let mut bad = Vec::new();
    let mut n = 0;
    for t in 0..enc.len() {
        let raw: Vec<Raw<'_>> = enc
            .cells(t, plan.columns.len())
            .into_iter()
            .map(Raw)
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> =
            raw.iter().map(|r| r as &(dyn ToSql + Sync)).collect();
        let sp = tx.savepoint("weir_row").await?;
        match sp.execute(&stmt, &params).await {
            Ok(k) => {
                sp.commit().await?;
                n += k;
            }
            Err(e) if data_error(&e) => {
                sp.rollback().await?;
                let row = enc.rows[t];
                let d = e.as_db_error();
                bad.push(BadFound {
                    row,
                    column: d.and_then(|d| d.column()).map(str::to_string),
                    message: words(&e),
                    sqlstate: e.code().map(|s| s.code().to_string()),
                    json: json_of(plan, row),
                });
                if on_error == PgOnError::Fail {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok((n, bad))
}
