//! The DataFusion side: [`SqlSession`] (static tables and user functions
//! shared by a pipeline's queries, and the small runtime they run on) and
//! [`Query`], one operator's long-lived DataFusion session that plans its
//! query against its tables' schemas and runs it on each batch's tables.
//!
//! Limits: a query at most [`QUERY_BYTES_MAX`] bytes; at most
//! [`STATIC_TABLES_MAX`] static tables of at most
//! [`STATIC_TABLE_BYTES_MAX`] bytes each (file size); at most
//! [`UDFS_MAX`] user functions. Queries run on one DataFusion partition
//! (`target_partitions = 1`), so a batch's result rows come out in the
//! same order on every run of that batch.
//! Must never: run anything but one read-only `SELECT`-like statement (no
//! DDL, DML or `SET`), let a DataFusion panic unwind into the engine, or
//! block a tokio worker (queries run on their own current-thread runtime,
//! from a plain thread when called inside another runtime).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, SessionConfig, SessionContext};

use super::SqlError;

/// Longest query text.
pub const QUERY_BYTES_MAX: usize = 64 * 1024;
/// Most static tables one session holds.
pub const STATIC_TABLES_MAX: usize = 64;
/// Largest file a static table is loaded from.
pub const STATIC_TABLE_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Most user functions one session holds.
pub const UDFS_MAX: usize = 256;

/// What a pipeline's queries share: static tables (loaded once, at
/// registration), scalar user functions, and the runtime queries run on.
/// Cheap to clone (one `Arc`); register tables and functions before the
/// queries that use them are declared (each query takes what the session
/// holds at that moment).
#[derive(Clone, Default)]
pub struct SqlSession {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tables: Mutex<Vec<(String, Arc<MemTable>)>>,
    udfs: Mutex<Vec<ScalarUDF>>,
    rt: OnceLock<Arc<Rt>>,
}

impl std::fmt::Debug for SqlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: Vec<String> = lock(&self.inner.tables)
            .iter()
            .map(|t| t.0.clone())
            .collect();
        f.debug_struct("SqlSession")
            .field("tables", &tables)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SqlSession {
    /// An empty session.
    pub fn new() -> SqlSession {
        SqlSession::default()
    }

    fn runtime(&self) -> Result<Arc<Rt>, SqlError> {
        if let Some(rt) = self.inner.rt.get() {
            return Ok(rt.clone());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|source| SqlError::Runtime { source })?;
        Ok(self.inner.rt.get_or_init(|| Arc::new(Rt(Some(rt)))).clone())
    }

    /// Loads the CSV file `path` (a header line, types inferred) into
    /// memory as table `name`.
    pub fn register_csv(&self, name: &str, path: &Path) -> Result<(), SqlError> {
        self.load(name, path, |ctx, p| {
            Box::pin(async move {
                ctx.read_csv(p, CsvReadOptions::new())
                    .await?
                    .collect()
                    .await
            })
        })
    }

    /// Loads the JSON-lines file `path` (one object per line, types
    /// inferred) into memory as table `name`.
    pub fn register_json(&self, name: &str, path: &Path) -> Result<(), SqlError> {
        self.load(name, path, |ctx, p| {
            Box::pin(async move {
                let ext = ext_of(&p);
                let opts = JsonReadOptions::default().file_extension(&ext);
                ctx.read_json(p, opts).await?.collect().await
            })
        })
    }

    /// Loads `path` as table `name`, by its extension: `.csv` (a header
    /// line) or `.json`, `.jsonl`, `.ndjson` (one object per line).
    pub fn register_file(&self, name: &str, path: &Path) -> Result<(), SqlError> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("csv") => self.register_csv(name, path),
            Some("json" | "jsonl" | "ndjson") => self.register_json(name, path),
            _ => Err(SqlError::StaticTable {
                table: name.to_string(),
                path: path.to_path_buf(),
                message: "the file name must end in .csv, .json, .jsonl or .ndjson".into(),
            }),
        }
    }

    fn load(
        &self,
        name: &str,
        path: &Path,
        read: impl FnOnce(SessionContext, String) -> BoxFut<'static, Vec<RecordBatch>>,
    ) -> Result<(), SqlError> {
        let fail = |message: String| SqlError::StaticTable {
            table: name.to_string(),
            path: path.to_path_buf(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.len() > STATIC_TABLE_BYTES_MAX {
            return Err(fail(format!(
                "the file has {} bytes, more than the {STATIC_TABLE_BYTES_MAX} a static table may have",
                meta.len()
            )));
        }
        let p = path
            .to_str()
            .ok_or_else(|| fail("the path is not UTF-8".into()))?;
        let ctx = SessionContext::new_with_config(config());
        let rt = self.runtime()?;
        let batches = block(&rt, read(ctx, p.to_string()))
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(super::user_message(&e).0))?;
        let schema = batches.first().map(RecordBatch::schema);
        let schema = schema.ok_or_else(|| fail("the file holds no rows".into()))?;
        let table = MemTable::try_new(schema, vec![batches]).map_err(|e| fail(e.to_string()))?;
        self.add_table(name, Arc::new(table))
    }

    fn add_table(&self, name: &str, table: Arc<MemTable>) -> Result<(), SqlError> {
        let mut tables = lock(&self.inner.tables);
        if tables.len() >= STATIC_TABLES_MAX {
            return Err(SqlError::TooMany {
                what: "static tables",
                max: STATIC_TABLES_MAX,
            });
        }
        tables.retain(|(n, _)| n != name);
        tables.push((name.to_string(), table));
        Ok(())
    }

    /// Registers a scalar user function (build one with
    /// [`datafusion::logical_expr::create_udf`]).
    pub fn register_udf(&self, udf: ScalarUDF) -> Result<(), SqlError> {
        let mut udfs = lock(&self.inner.udfs);
        if udfs.len() >= UDFS_MAX {
            return Err(SqlError::TooMany {
                what: "user functions",
                max: UDFS_MAX,
            });
        }
        udfs.push(udf);
        Ok(())
    }

    /// The static tables' names.
    pub fn table_names(&self) -> Vec<String> {
        lock(&self.inner.tables)
            .iter()
            .map(|t| t.0.clone())
            .collect()
    }
}

type BoxFut<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, DataFusionError>> + Send + 'a>>;

fn ext_of(p: &str) -> String {
    Path::new(p)
        .extension()
        .map_or(String::new(), |e| format!(".{}", e.to_string_lossy()))
}

/// The configuration of every session: one partition (deterministic row
/// order), spans collected (errors point into the query).
fn config() -> SessionConfig {
    let mut c = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(false);
    c.options_mut().sql_parser.collect_spans = true;
    c
}

/// The queries' runtime. Dropped without waiting (`shutdown_background`):
/// the last query may go away inside the service's own async code, where
/// a plain drop of a runtime panics.
pub(crate) struct Rt(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Rt {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        match &self.0 {
            Some(rt) => rt,
            // Only `drop` takes it out.
            None => unreachable!("the SQL runtime is used after its drop"),
        }
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` to completion on `rt`, from a plain thread when the caller is
/// inside a tokio runtime; a panic inside comes back as an error.
fn block<F>(rt: &tokio::runtime::Runtime, f: F) -> Result<F::Output, String>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f)))
            .map_err(|p| panic_text(p.as_ref()))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .unwrap_or_else(|p| Err(panic_text(p.as_ref())))
    })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("the query engine panicked ({what})")
}

/// One operator's query and its own DataFusion session (the static
/// tables and functions of its [`SqlSession`], plus its batch tables).
pub(crate) struct Query {
    /// Held from registering a batch's tables to the end of its query
    /// (two runs at once would swap each other's tables).
    turn: Mutex<()>,
    step: String,
    text: String,
    ctx: SessionContext,
    rt: Arc<Rt>,
}

/// One table of a batch: the names it is visible under, its schema and
/// its rows.
pub(crate) struct BatchTable {
    pub(crate) names: Vec<String>,
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
}

impl Query {
    /// A query of step `step` in `session`.
    pub(crate) fn new(session: &SqlSession, step: &str, text: &str) -> Result<Query, SqlError> {
        if text.len() > QUERY_BYTES_MAX {
            return Err(SqlError::QueryTooLong {
                step: step.to_string(),
                bytes: text.len(),
                max: QUERY_BYTES_MAX,
            });
        }
        let ctx = SessionContext::new_with_config(config());
        for (name, t) in lock(&session.inner.tables).iter() {
            let table: Arc<dyn datafusion::catalog::TableProvider> = t.clone();
            ctx.register_table(name.as_str(), table)
                .map_err(|e| SqlError::plan(step, &e))?;
        }
        for u in lock(&session.inner.udfs).iter() {
            ctx.register_udf(u.clone());
        }
        Ok(Query {
            turn: Mutex::new(()),
            step: step.to_string(),
            text: text.to_string(),
            ctx,
            rt: session.runtime()?,
        })
    }

    fn register(&self, tables: Vec<BatchTable>) -> Result<(), SqlError> {
        for t in tables {
            let mem = MemTable::try_new(t.schema, vec![t.batches])
                .map_err(|e| SqlError::plan(&self.step, &e))?;
            let mem: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(mem);
            for n in t.names {
                // Replaces the previous batch's table of that name.
                let _ = self.ctx.deregister_table(n.as_str());
                self.ctx
                    .register_table(n.as_str(), mem.clone())
                    .map_err(|e| SqlError::plan(&self.step, &e))?;
            }
        }
        Ok(())
    }

    fn options() -> SQLOptions {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
    }

    /// Plans the query against empty tables of these schemas; returns the
    /// result's schema.
    pub(crate) fn plan(&self, tables: Vec<BatchTable>) -> Result<SchemaRef, SqlError> {
        let _turn = lock(&self.turn);
        self.register(tables)?;
        let ctx = self.ctx.clone();
        let text = self.text.clone();
        let df = block(&self.rt, async move {
            ctx.sql_with_options(&text, Query::options()).await
        })
        .map_err(|m| SqlError::Internal {
            step: self.step.clone(),
            message: m,
        })?
        .map_err(|e| SqlError::plan(&self.step, &e))?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    /// Runs the query on one batch's tables.
    pub(crate) fn run(
        &self,
        tables: Vec<BatchTable>,
        time_ms: u64,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let _turn = lock(&self.turn);
        self.register(tables)?;
        let ctx = self.ctx.clone();
        let text = self.text.clone();
        let out = block(&self.rt, async move {
            let df = ctx.sql_with_options(&text, Query::options()).await?;
            df.collect().await
        })
        .map_err(|m| SqlError::Internal {
            step: self.step.clone(),
            message: m,
        })?;
        out.map_err(|e| SqlError::Execute {
            step: self.step.clone(),
            batch_time_ms: time_ms,
            message: super::user_message(&e).0,
        })
    }

    /// Parses the query only (no table needed): syntax errors and
    /// statements other than queries.
    pub(crate) fn parse(&self) -> Result<(), SqlError> {
        let state = self.ctx.state();
        let dialect = datafusion::config::Dialect::Generic;
        state
            .sql_to_statement(&self.text, &dialect)
            .map(|_| ())
            .map_err(|e| SqlError::plan(&self.step, &e))
    }

    /// The step it belongs to.
    pub(crate) fn step(&self) -> &str {
        &self.step
    }
}

/// Where an inferred schema is kept: `dir/<step>.schema.json`.
pub fn schema_file(dir: &Path, step: &str) -> PathBuf {
    dir.join(format!("{step}.schema.json"))
}
