//! The DataFusion side: [`SqlSession`] (static tables and user functions
//! shared by a pipeline's queries, and the small runtime they run on) and
//! [`Query`], one operator's long-lived DataFusion session that plans its
//! query against its tables' schemas and runs it on each batch's tables.
//!
//! Limits: a query at most [`QUERY_BYTES_MAX`] bytes; at most
//! [`STATIC_TABLES_MAX`] static tables of at most
//! [`STATIC_TABLE_BYTES_MAX`] bytes each (file size); at most
//! [`UDFS_MAX`] user functions; a query's operators (hash tables, sorts)
//! at most [`QUERY_MEMORY_BYTES_MAX`] bytes, its result at most
//! [`RESULT_ROWS_MAX`] rows. Queries run on one DataFusion partition
//! (`target_partitions = 1`), so a batch's result rows come out in the
//! same order on every run of that batch.
//! Must never: run anything but one read-only query (no DDL, DML, `SET`
//! or `EXPLAIN`, whose timings differ run to run), let a DataFusion panic
//! unwind into the engine, keep a batch's tables after its query, or run
//! a query on a tokio worker thread (queries run on their own
//! current-thread runtime; a caller inside another runtime waits for a
//! plain thread that runs it).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{LogicalPlan, ScalarUDF};
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
/// Most memory one query's operators (hash tables, sorts, a join's build
/// side) may hold; more fails the batch ("resources exhausted"; nothing
/// spills to disk). The batch's tables as registered are the engine's,
/// bounded as any batch.
pub const QUERY_MEMORY_BYTES_MAX: usize = 2 << 30;
/// Most rows one query may return for one batch.
pub const RESULT_ROWS_MAX: usize = 10_000_000;

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
        // Wrapped at once: a runtime that loses the race below is dropped
        // as an `Rt` too (a plain drop inside async code panics).
        let rt = Arc::new(Rt(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|source| SqlError::Runtime { source })?,
        )));
        Ok(self.inner.rt.get_or_init(|| rt).clone())
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
        if !meta.is_file() {
            return Err(fail("it is not a plain file".into()));
        }
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
        // No spilling: a query over its memory fails its batch rather than
        // write files outside the data directory.
        let env = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .with_memory_limit(QUERY_MEMORY_BYTES_MAX, 1.0)
            .build_arc()
            .map_err(|e| SqlError::plan(step, &e))?;
        let ctx = SessionContext::new_with_config_rt(config(), env);
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

    /// Registers a batch's tables; returns their names (for
    /// [`Query::deregister`] once the query ran).
    fn register(&self, tables: Vec<BatchTable>) -> Result<Vec<String>, SqlError> {
        let mut names = Vec::with_capacity(tables.len());
        for t in tables {
            let mem = match MemTable::try_new(t.schema, vec![t.batches]) {
                Ok(m) => m,
                Err(e) => {
                    self.deregister(&names);
                    return Err(SqlError::plan(&self.step, &e));
                }
            };
            let mem: Arc<dyn datafusion::catalog::TableProvider> = Arc::new(mem);
            for n in t.names {
                // Replaces the previous batch's table of that name.
                let _ = self.ctx.deregister_table(n.as_str());
                if let Err(e) = self.ctx.register_table(n.as_str(), mem.clone()) {
                    self.deregister(&names);
                    return Err(SqlError::plan(&self.step, &e));
                }
                names.push(n);
            }
        }
        Ok(names)
    }

    /// Drops a batch's tables: its rows are not held until the next batch.
    fn deregister(&self, names: &[String]) {
        for n in names {
            // Nothing to do when it is already gone.
            let _ = self.ctx.deregister_table(n.as_str());
        }
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
        let names = self.register(tables)?;
        let ctx = self.ctx.clone();
        let text = self.text.clone();
        let df = block(&self.rt, async move {
            ctx.sql_with_options(&text, Query::options()).await
        });
        self.deregister(&names);
        let df = df
            .map_err(|m| self.internal(m))?
            .map_err(|e| SqlError::plan(&self.step, &e))?;
        self.refuse(df.logical_plan())?;
        Ok(Arc::new(df.schema().as_arrow().clone()))
    }

    fn internal(&self, message: String) -> SqlError {
        SqlError::Internal {
            step: self.step.clone(),
            message,
        }
    }

    /// A planned query weir does not run: `EXPLAIN` (its `ANALYZE` timings
    /// differ on a replay), or a result with two columns of one name (a
    /// row object would keep only one).
    fn refuse(&self, plan: &LogicalPlan) -> Result<(), SqlError> {
        let bad = |message: String| SqlError::Plan {
            step: self.step.clone(),
            message,
            line: None,
            column: None,
        };
        if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) {
            return Err(bad(
                "EXPLAIN is not run by a step; plan the query by hand with datafusion-cli".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in plan.schema().fields() {
            if !seen.insert(f.name().as_str()) {
                return Err(bad(format!(
                    "the result has two columns named `{}`; give one another name with AS",
                    f.name()
                )));
            }
        }
        Ok(())
    }

    /// Runs the query on one batch's tables.
    pub(crate) fn run(
        &self,
        tables: Vec<BatchTable>,
        time_ms: u64,
    ) -> Result<Vec<RecordBatch>, SqlError> {
        let _turn = lock(&self.turn);
        let names = self.register(tables)?;
        let ctx = self.ctx.clone();
        let text = self.text.clone();
        // Planned and checked as at declaration (a first batch may be the
        // first plan, for inferred columns), then collected with one row
        // more than allowed at most, so an oversized result is refused
        // without being built whole.
        let out = block(&self.rt, async move {
            let df = ctx.sql_with_options(&text, Query::options()).await?;
            let plan = df.logical_plan().clone();
            let rows = df.limit(0, Some(RESULT_ROWS_MAX + 1))?.collect().await;
            Ok::<_, datafusion::error::DataFusionError>((plan, rows))
        });
        self.deregister(&names);
        let out = out.map_err(|m| self.internal(m))?;
        let out = match out {
            Ok((plan, rows)) => {
                self.refuse(&plan)?;
                rows
            }
            Err(e) => Err(e),
        };
        let out = out.map_err(|e| SqlError::Execute {
            step: self.step.clone(),
            batch_time_ms: time_ms,
            message: super::user_message(&e).0,
        })?;
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        if rows > RESULT_ROWS_MAX {
            return Err(SqlError::Execute {
                step: self.step.clone(),
                batch_time_ms: time_ms,
                message: format!(
                    "the result has {rows} rows, more than the {RESULT_ROWS_MAX} a step may give for one batch; aggregate or filter more"
                ),
            });
        }
        Ok(out)
    }

    /// Parses the query only (no table needed): syntax errors, and
    /// statements other than a query (`SELECT`, `WITH`, `VALUES`...).
    pub(crate) fn parse(&self) -> Result<(), SqlError> {
        use datafusion::sql::parser::Statement as DfStatement;
        use datafusion::sql::sqlparser::ast::Statement;
        let state = self.ctx.state();
        let dialect = datafusion::config::Dialect::Generic;
        let stmt = state
            .sql_to_statement(&self.text, &dialect)
            .map_err(|e| SqlError::plan(&self.step, &e))?;
        match stmt {
            DfStatement::Statement(s) if matches!(*s, Statement::Query(_)) => Ok(()),
            _ => Err(SqlError::Plan {
                step: self.step.clone(),
                message: "only a query (SELECT, WITH ... SELECT, VALUES) runs in a step".into(),
                line: None,
                column: None,
            }),
        }
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
