//! weir as a service: pipelines from TOML (`config`, `compile`), the
//! built-in generator source, and the daemon around a
//! [`StreamingContext`]: signals, systemd notification and watchdog, the
//! HTTP endpoint (`/metrics`, `/status`, the status page).
//!
//! [`run_service`] is the one call a library user needs for the same
//! behaviour as `weir run`. Its life cycle:
//! 1. bind the HTTP endpoint (loopback), start the context (recovery:
//!    load state, replay pending batches);
//! 2. `READY=1` once the first new batch after recovery has committed (so
//!    recovery is done and the batch loop and receivers are live);
//! 3. `WATCHDOG=1` every quarter watchdog period while a batch completed
//!    within the last three quarters of it — a batch loop stuck that long
//!    stops the pings and systemd restarts the service (so `WatchdogSec`
//!    must exceed the batch interval plus the slowest batch; a period
//!    under twice the interval is refused with a warning and ignored);
//! 4. first SIGTERM/SIGINT: `STOPPING=1`, stop accepting input, finish the
//!    batch in flight and keep cutting batches until the durable backlog
//!    is processed or `stop_timeout` (default 20 s) has passed, commit,
//!    return (exit 0). What is left stays in the WAL for the next start.
//!    A second signal exits at once (status 128 + signal); recovery does
//!    the rest at the next start.
//!
//! Limits: status history `status::RECENT_BATCHES_MAX` batches; HTTP
//! limits in `http.rs`; the service loop polls every [`POLL`].
//! Must never: contain engine logic (it drives the public
//! `StreamingContext` API only), or listen on a non-loopback address.

internal! {
    mod chaos;
    mod compile;
    mod http;
    mod notify;
    mod status;
}
pub mod config;
mod daemon;
// The generator lives with the sources; this path stays for the config
// module and its tests until they import `crate::source::generator`.
pub use crate::source::generator;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use compile::{compile, Compiled, Num};
pub use config::{ConfigError, Pipeline};

use crate::wal::Wal;
use crate::StreamingContext;

/// How often the service loop looks at the batch loop.
pub const POLL: Duration = Duration::from_millis(50);
/// The embedded default pipeline (`weir run` without a file).
pub const DEMO_TOML: &str = include_str!("demo.toml");
/// Where `weir run` keeps its data when neither `--data-dir`,
/// `pipeline.data_dir` nor `$STATE_DIRECTORY` says.
pub const DATA_DIR_DEFAULT: &str = "weir-data";

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The pipeline file is wrong; the message locates it.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The pipeline file cannot be read.
    #[error("cannot read the pipeline file {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP endpoint cannot listen.
    #[error("cannot listen on {addr} for the status endpoint: {source}; choose another address with --http-address (or service.http_address), or \"off\"")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The service's runtime could not be started.
    #[error("cannot start the service runtime: {0}")]
    Runtime(std::io::Error),
    /// A usage mistake, with what to do instead.
    #[error("{0}")]
    Usage(String),
}

impl From<ConfigError> for ServiceError {
    fn from(e: ConfigError) -> Self {
        ServiceError::Config(Box::new(e))
    }
}

/// A hook run at the first stop signal, before draining: stop accepting
/// input (the generator's `stop_accepting`, a custom receiver's flag).
pub type StopHook = Box<dyn FnOnce() + Send>;

/// How [`run_service`] behaves. `Default`: HTTP on
/// [`config::HTTP_ADDRESS_DEFAULT`], systemd from the environment, no
/// batch limit.
pub struct ServiceOptions {
    /// The HTTP endpoint (None: off). Must be loopback.
    pub http_address: Option<SocketAddr>,
    /// Stop gracefully after this many new batches (not counting replays).
    pub batches_max: Option<u64>,
    /// systemd's notification socket (default: `$NOTIFY_SOCKET`).
    pub notify_socket: Option<String>,
    /// systemd's watchdog period (default: `$WATCHDOG_USEC`).
    pub watchdog: Option<Duration>,
    /// Run at the first stop signal, before draining.
    pub on_stop: Vec<StopHook>,
    /// More logs whose figures `/metrics` shows, `(stream name, log)`
    /// (those the context opened are always shown).
    pub wals: Vec<(String, Arc<Wal>)>,
    /// Extra figures (the TOML front door's generators and drop counts).
    pub compiled: Option<Compiled>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            http_address: config::HTTP_ADDRESS_DEFAULT.parse().ok(),
            batches_max: None,
            notify_socket: std::env::var("NOTIFY_SOCKET").ok(),
            watchdog: notify::watchdog_from_env(),
            on_stop: Vec::new(),
            wals: Vec::new(),
            compiled: None,
        }
    }
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("http_address", &self.http_address)
            .field("batches_max", &self.batches_max)
            .field("watchdog", &self.watchdog)
            .finish_non_exhaustive()
    }
}

/// What a finished service did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReport {
    /// Batches completed (replays included).
    pub batches: u64,
    /// Input records of those batches.
    pub records: u64,
    /// The signal that stopped it, if any.
    pub signal: Option<&'static str>,
    /// Where the HTTP endpoint listened.
    pub http_address: Option<SocketAddr>,
}

/// Runs `ssc` as a service until a stop signal (or `batches_max`), with
/// the behaviour described in the module docs. Call it from a plain
/// thread (it runs its own tokio runtime), after building the pipeline
/// and before `start()` (it starts the context itself).
pub fn run_service(ssc: StreamingContext, opts: ServiceOptions) -> crate::Result<ServiceReport> {
    Service::new()?.run(ssc, opts)
}

/// The service's runtime with SIGTERM/SIGINT already caught: create it
/// first, then build the pipeline (which may take a while: opening logs
/// and the checkpoint), then [`Service::run`]. A signal that arrives while
/// the pipeline is built is not lost: the service stops right after the
/// start instead of being killed by the signal's default action.
pub struct Service {
    rt: tokio::runtime::Runtime,
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// Starts the runtime and catches the stop signals.
    pub fn new() -> crate::Result<Service> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("weir-service")
            .build()
            .map_err(ServiceError::Runtime)?;
        let _guard = rt.enter();
        let sigterm = signal(SignalKind::terminate()).map_err(ServiceError::Runtime)?;
        let sigint = signal(SignalKind::interrupt()).map_err(ServiceError::Runtime)?;
        drop(_guard);
        Ok(Service {
            rt,
            sigterm,
            sigint,
        })
    }

    /// Runs `ssc` as [`run_service`] describes.
    pub fn run(self, ssc: StreamingContext, opts: ServiceOptions) -> crate::Result<ServiceReport> {
        let Service {
            rt,
            sigterm,
            sigint,
        } = self;
        rt.block_on(daemon::serve(Arc::new(ssc), opts, sigterm, sigint))
    }
}

/// Where a TOML pipeline keeps its data: `--data-dir`, else
/// `pipeline.data_dir`, else `$STATE_DIRECTORY` (systemd), else
/// [`DATA_DIR_DEFAULT`] in the current directory.
pub fn data_dir_for(p: &Pipeline, flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = &p.settings.data_dir {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories separated by ':'.
        if let Some(first) = d
            .to_string_lossy()
            .split(':')
            .next()
            .filter(|s| !s.is_empty())
        {
            return PathBuf::from(first);
        }
    }
    PathBuf::from(DATA_DIR_DEFAULT)
}

/// Builds the context for a TOML pipeline on `data_dir` (checkpoint
/// attached, recovered at start) and compiles the pipeline onto it.
/// `clock` drives batches (`SystemClock` in production, `ManualClock` in
/// tests).
pub fn build(
    p: &Pipeline,
    data_dir: &Path,
    clock: Arc<dyn crate::Clock>,
) -> crate::Result<(StreamingContext, Compiled)> {
    let mut compiled = None;
    let ssc = StreamingContext::get_or_create(data_dir, |b| {
        let s = &p.settings;
        let mut b = b
            .clock(clock)
            .batch_interval(s.batch_interval)
            .graceful_stop_timeout(s.stop_timeout);
        if let Some(n) = s.partitions {
            b = b.partitions(n);
        }
        if let Some(n) = s.parallelism {
            b = b.parallelism(n);
        }
        if let Some(n) = s.batch_records_max {
            b = b.batch_records_max(n);
        }
        b = b.adaptive_batches(s.adaptive_batches);
        let ssc = b.build()?;
        compiled = Some(compile(p, &ssc, data_dir)?);
        Ok(ssc)
    })?;
    Ok((ssc, compiled.unwrap_or_default()))
}

/// Stateful operator names of a built context.
pub fn stateful_operators(ssc: &StreamingContext) -> Vec<String> {
    ssc.describe()
        .operators
        .into_iter()
        .filter(|o| o.stateful)
        .map(|o| o.name)
        .collect()
}

/// The graph of a validated pipeline, as `weir check` prints it.
pub fn describe(p: &Pipeline) -> String {
    use config::{Node, Op, SinkKind, SourceKind};
    use std::fmt::Write as _;
    let s = &p.settings;
    let mut o = format!(
        "pipeline {}: batch interval {} ms, stop timeout {} s, status endpoint {}\n",
        p.file,
        s.batch_interval.as_millis(),
        s.stop_timeout.as_secs(),
        s.http_address
            .map_or("off".to_string(), |a| format!("http://{a}/"))
    );
    for n in &p.nodes {
        match n {
            Node::Source(src) => {
                let rate = |r: &Option<u64>| {
                    r.map_or(String::new(), |r| format!(", at most {r} records/s"))
                };
                let what = match &src.kind {
                    SourceKind::Generator(g) => format!(
                        "generator, {} records/s{}, {}",
                        g.records_per_second,
                        g.count.map_or(String::new(), |c| format!(", {c} in all")),
                        if g.json {
                            "one JSON object per record".to_string()
                        } else {
                            format!("{} line(s) per record", g.lines_per_record)
                        }
                    ),
                    SourceKind::Socket { address, rate_max } => {
                        format!(
                            "socket client of {address}{} (log wal/{})",
                            rate(rate_max),
                            src.id
                        )
                    }
                    SourceKind::Ingest { address, rate_max } => {
                        format!(
                            "ingest server on {address}{} (log wal/{})",
                            rate(rate_max),
                            src.id
                        )
                    }
                    SourceKind::Directory { path } => {
                        format!("new files in {} (log wal/{})", path.display(), src.id)
                    }
                };
                let _ = writeln!(o, "  source {:<16} {what} -> {}", src.id, n.kind().label());
            }
            Node::Step(st) => {
                let input = p.nodes[st.input].id();
                let op = match &st.op {
                    Op::Split { separator, .. } => format!(
                        "split on {}",
                        separator
                            .as_deref()
                            .map_or("whitespace".to_string(), |s| format!("{s:?}"))
                    ),
                    Op::Filter {
                        predicate,
                        field,
                        invert,
                    } => format!(
                        "filter {}{:?}{}",
                        if *invert { "not " } else { "" },
                        predicate,
                        field
                            .as_ref()
                            .map_or(String::new(), |f| format!(" on field {f}"))
                    ),
                    Op::WindowCount { window, slide } | Op::WindowSum { window, slide, .. } => {
                        format!(
                            "{} window {} ms sliding {} ms",
                            st.op.name(),
                            window.as_millis(),
                            if slide.is_zero() {
                                s.batch_interval.as_millis()
                            } else {
                                slide.as_millis()
                            }
                        )
                    }
                    other => format!("{other:?}"),
                };
                let state = if st.op.stateful() {
                    format!("  [state: `{}`]", st.name)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    o,
                    "  step   {:<16} {input} -> {op} -> {}{state}",
                    st.id,
                    st.kind.label()
                );
            }
        }
    }
    for sink in &p.sinks {
        let input = p.nodes[sink.input].id();
        let what = match &sink.kind {
            SinkKind::Print { count } => format!("print the first {count} of each batch"),
            SinkKind::TextFiles { prefix, suffix } => {
                format!("text files {}-<batch ms>.{suffix}", prefix.display())
            }
            SinkKind::Kv { table } => {
                format!("key-value table `{table}` (weir kv scan DATA_DIR {table})")
            }
            SinkKind::JsonFiles { prefix, suffix } => {
                format!("JSON-lines files {}-<batch ms>.{suffix}", prefix.display())
            }
        };
        let _ = writeln!(o, "  sink   {input} -> {what}");
    }
    o
}
