//! weir as a service: pipelines from TOML (`config`, `compile`), the
//! built-in generator source, and the daemon around a
//! [`StreamingContext`]: signals, systemd notification and watchdog, the
//! HTTP endpoint (`/metrics`, `/status`, the status page).
//!
//! [`run_service`] is the one call a library user needs for the same
//! behaviour as `weir run`. Its life cycle:
//! 1. bind the HTTP endpoint (loopback, or TLS with tokens; see
//!    `docs/security.md`), start the context (recovery:
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
//! 5. SIGHUP (systemd's `ExecReload`): the status endpoint's TLS files
//!    and tokens file are read again (a failure keeps the old ones and is
//!    logged; they are also reloaded when they change); nothing else is
//!    reloaded and the service keeps running: the log
//!    level (`$WEIR_LOG`) and the pipeline file are read at start, and a
//!    pipeline change needs a restart (check it first with `weir check
//!    --data-dir`); a restart drains, commits and recovers, losing nothing.
//!
//! Limits: status history `status::RECENT_BATCHES_MAX` batches; HTTP
//! limits in `http.rs`; the service loop polls every [`POLL`].
//! Must never: contain engine logic (it drives the public
//! `StreamingContext` API only), or listen off loopback without TLS and
//! tokens.

internal! {
    mod chaos;
    mod check;
    mod compile;
    mod compile_sources;
    mod compile_ml;
    mod compile_pg;
    #[cfg(feature = "sql")]
    mod compile_sql;
    mod gen_feed;
    mod http;
    mod initial;
    mod metrics;
    mod notify;
    mod status;
    mod values;
}
pub mod config;
mod daemon;
pub use daemon::SIGNAL_GRACE_MS;
// The generator lives with the sources; this path stays for the config
// module and its tests until they import `crate::source::generator`.
pub use crate::source::generator;
pub mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::net::{SecurityError, TlsError, TokenError};
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
    /// The pipeline file is longer than a pipeline file may be (or is a
    /// device or stream that never ends, such as `/dev/zero`).
    #[error("the pipeline file {} is longer than {limit_bytes} bytes (reading stopped there); a pipeline file may be at most {limit_bytes} bytes: split the pipeline or give a regular file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit ([`config::CONFIG_BYTES_MAX`]).
        limit_bytes: usize,
    },
    /// The pipeline file is not UTF-8 text.
    #[error("{}:{line}:{column}: the pipeline file is not UTF-8 text: byte {offset} is not valid UTF-8; save it as UTF-8 (for example `iconv -f latin1 -t utf-8`)", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The first byte that is not valid UTF-8.
        offset: usize,
        /// Its line, 1-based.
        line: usize,
        /// Its column, 1-based, in characters.
        column: usize,
    },
    /// The HTTP endpoint cannot listen.
    #[error("cannot listen on {addr} for the status endpoint: {source}; choose another address with --http-address (or service.http_address), or \"off\"")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The status endpoint's TLS or tokens file cannot be used.
    #[error("the status endpoint cannot start: {0}")]
    Security(Box<crate::net::SecurityError>),
    /// A listening source's TLS or tokens file cannot be used.
    #[error("source {source_id} cannot start: {error}")]
    SourceSecurity {
        /// The source's id.
        source_id: String,
        /// Why.
        error: Box<crate::net::SecurityError>,
    },
    /// `weir check --data-dir` could not copy the checkpoint to read it.
    #[error("cannot copy the checkpoint to check it ({}): {source}; `weir check --data-dir` reads a copy under $TMPDIR (as large as the checkpoint): point TMPDIR at a directory with room", path.display())]
    CheckCopy {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step's initial-state file is wrong.
    #[error(transparent)]
    Initial(#[from] initial::InitialError),
    /// `weir check --data-dir`'s checkpoint is larger than it copies.
    #[error("the checkpoint {} holds {bytes} bytes, more than the {limit_bytes} `weir check --data-dir` copies to read; check against it with the service stopped by starting it (`weir run` refuses an incompatible pipeline the same way, before any batch), or compare `weir checkpoint show` by hand", path.display())]
    CheckTooLarge {
        /// The checkpoint directory.
        path: PathBuf,
        /// Its files' bytes.
        bytes: u64,
        /// The limit ([`check::CHECK_COPY_BYTES_MAX`]).
        limit_bytes: u64,
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
    /// The HTTP endpoint (None: off). Off loopback, `http` must name TLS
    /// files and a tokens file.
    pub http_address: Option<SocketAddr>,
    /// The HTTP endpoint's limits, TLS and tokens (default: today's
    /// limits, plain HTTP, no tokens).
    pub http: config::HttpSettings,
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
    /// Install weir's default log output if the program has installed no
    /// `tracing` subscriber (default `true`): text lines on stderr, level
    /// `info` or `$WEIR_LOG` (e.g. `WEIR_LOG=warn`), the same lines as
    /// `weir run`: the status page's address, one line per committed
    /// batch, the stop. A subscriber the program installed before
    /// [`run_service`] always wins; `false` leaves logging to the program
    /// (then weir logs nothing unless it installs one).
    pub default_logging: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            http_address: config::HTTP_ADDRESS_DEFAULT.parse().ok(),
            http: config::HttpSettings::default(),
            batches_max: None,
            notify_socket: std::env::var("NOTIFY_SOCKET").ok(),
            watchdog: notify::watchdog_from_env(),
            on_stop: Vec::new(),
            wals: Vec::new(),
            compiled: None,
            default_logging: true,
        }
    }
}

impl std::fmt::Debug for ServiceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceOptions")
            .field("http_address", &self.http_address)
            .field("http", &self.http)
            .field("batches_max", &self.batches_max)
            .field("watchdog", &self.watchdog)
            .field("default_logging", &self.default_logging)
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
///
/// Logging: unless the program installed a `tracing` subscriber first (or
/// set [`ServiceOptions::default_logging`] to `false`), this installs
/// weir's default one ([`install_default_logging`]), so a program's own
/// binary shows the status page's address and a line per batch on
/// stderr, as `weir run` does.
pub fn run_service(ssc: StreamingContext, opts: ServiceOptions) -> crate::Result<ServiceReport> {
    Service::new()?.run(ssc, opts)
}

/// Installs weir's default log output as the global `tracing` subscriber:
/// text lines on stderr (colours only on a terminal), level `info` unless
/// `$WEIR_LOG` says otherwise (an `EnvFilter`, e.g. `warn` or
/// `weir=debug`). Does nothing when a global subscriber is already
/// installed: the program's own always wins. Returns whether it installed
/// one. [`run_service`] calls it (see [`ServiceOptions::default_logging`]).
pub fn install_default_logging() -> bool {
    use std::io::IsTerminal;
    if tracing::dispatcher::has_been_set() {
        return false;
    }
    let subscriber = log_format("info")
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    // Not `try_init`: that also claims the `log` crate's logger, and fails
    // without installing anything where the program set one.
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

/// weir's log format: to stderr, at `default_level` unless `WEIR_LOG`
/// says otherwise (`weir`'s own commands and [`install_default_logging`]
/// share it).
pub(crate) fn log_format(
    default_level: &str,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
    fn() -> std::io::Stderr,
> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr as fn() -> std::io::Stderr)
}

/// The service's runtime with SIGTERM/SIGINT (and SIGHUP, see the module
/// docs) already caught: create it
/// first, then build the pipeline (which may take a while: opening logs
/// and the checkpoint), then [`Service::run`]. A signal that arrives while
/// the pipeline is built is not lost: the service stops right after the
/// start instead of being killed by the signal's default action.
pub struct Service {
    rt: tokio::runtime::Runtime,
    signals: daemon::Signals,
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
        let signals = daemon::Signals {
            term: signal(SignalKind::terminate()).map_err(ServiceError::Runtime)?,
            int: signal(SignalKind::interrupt()).map_err(ServiceError::Runtime)?,
            hup: signal(SignalKind::hangup()).map_err(ServiceError::Runtime)?,
        };
        drop(_guard);
        Ok(Service { rt, signals })
    }

    /// Runs `ssc` as [`run_service`] describes.
    pub fn run(self, ssc: StreamingContext, opts: ServiceOptions) -> crate::Result<ServiceReport> {
        let Service { rt, signals } = self;
        if opts.default_logging {
            install_default_logging();
        }
        rt.block_on(daemon::serve(Arc::new(ssc), opts, signals))
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
    default_data_dir()
}

/// The data directory without a flag or pipeline file: `$STATE_DIRECTORY`
/// (its first entry), else `./weir-data`.
pub fn default_data_dir() -> PathBuf {
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
        let ssc = configure(b.clock(clock), &p.settings).build()?;
        compiled = Some(compile(p, &ssc, data_dir)?);
        Ok(ssc)
    })?;
    Ok((ssc, compiled.unwrap_or_default()))
}

/// `b` with the pipeline-wide settings `s` (`run` and `weir check
/// --data-dir` build with the same).
fn configure(
    b: crate::context::StreamingContextBuilder,
    s: &config::Settings,
) -> crate::context::StreamingContextBuilder {
    let mut b = b
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
    if let Some(n) = s.dead_letter_bytes_max {
        b = b.dead_letter_bytes_max(n);
    }
    b.adaptive_batches(s.adaptive_batches)
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

/// `log wal/in`, or for partitions `4 connections, logs wal/in-p0 to
/// wal/in-p3`.
fn logs_words(id: &str, partitions: usize, each: &str) -> String {
    if partitions == 1 {
        return format!("log wal/{id}");
    }
    format!(
        "{partitions} {each}s, logs wal/{} to wal/{}",
        crate::context::partition_name(id, 0, partitions),
        crate::context::partition_name(id, partitions - 1, partitions)
    )
}

/// `, records end at "__end"` for a socket source's own delimiter.
fn ends_at(delimiter: Option<&str>) -> String {
    delimiter.map_or(String::new(), |d| {
        format!(", records end at \"{}\"", d.escape_default())
    })
}

/// The graph of a validated pipeline, as `weir check` prints it.
pub fn describe(p: &Pipeline) -> String {
    use config::Node;
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
                let what = source_words(src);
                let _ = writeln!(o, "  source {:<16} {what} -> {}", src.id, n.kind().label());
            }
            Node::Step(st) => {
                let input = p.nodes[st.input].id();
                let op = op_words(&st.op, s.batch_interval);
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
        let what = sink_words(&sink.kind);
        let _ = writeln!(o, "  sink   {input} -> {what}");
    }
    o
}

/// What a source reads, in `weir check`'s words.
fn source_words(src: &config::SourceDef) -> String {
    use config::SourceKind;
    let rate = |r: &Option<u64>| r.map_or(String::new(), |r| format!(", at most {r} records/s"));
    match &src.kind {
        SourceKind::Generator(g) => generator_words(g, &src.id),
        SourceKind::Socket {
            address,
            rate_max,
            delimiter,
            partitions,
            tls,
        } => format!(
            "socket client of {address} over {}{} ({})",
            tls.as_ref()
                .map_or("plain TCP".into(), |t| t.describe(address)),
            rate(rate_max) + &ends_at(delimiter.as_deref()),
            logs_words(&src.id, *partitions, "connection")
        ),
        SourceKind::Ingest {
            address,
            rate_max,
            limits,
            security,
        } => format!(
            "ingest server on {address}{} ({}; {})",
            rate(rate_max),
            logs_words(&src.id, limits.partitions, "partition"),
            security.describe()
        ),
        SourceKind::Http {
            address,
            rate_max,
            limits,
            json,
            security,
            ..
        } => format!(
            "HTTP ingest of {} on {}://{address}/v1/streams/{}{} ({}; {})",
            if *json { "JSON lines" } else { "text lines" },
            if security.tls.is_some() {
                "https"
            } else {
                "http"
            },
            src.id,
            rate(rate_max),
            logs_words(&src.id, limits.partitions, "partition"),
            security.describe()
        ),
        SourceKind::JetStream(cfg) => jetstream_words(&src.id, cfg),
        SourceKind::Kafka(cfg) => config::kafka_source_words(&src.id, cfg),
        SourceKind::Directory { path, partitions } => format!(
            "new files in {} ({})",
            path.display(),
            logs_words(&src.id, *partitions, "receiver")
        ),
    }
}

/// A JetStream source in words: the streams this instance reads (its
/// share when scaled out) and whether it claims them.
fn jetstream_words(id: &str, cfg: &crate::JetStreamConfig) -> String {
    let owned = cfg.scale_out.assignment.owned(cfg.streams.len());
    let names: Vec<String> = owned
        .iter()
        .map(|&k| {
            format!(
                "`{}`",
                crate::context::jetstream_partition_name(id, &cfg.streams[k])
            )
        })
        .collect();
    let share = match &cfg.scale_out.assignment {
        crate::Assignment::All => String::new(),
        crate::Assignment::Instance { index, count } => {
            format!(", as instance {index} of {count}")
        }
        crate::Assignment::Partitions(_) => ", the listed partitions".to_string(),
    };
    let claims = if cfg.scale_out.leases {
        "claimed in weir_owners and weir_leases"
    } else {
        "not claimed (leases = false)"
    };
    let read: Vec<&str> = owned.iter().map(|&k| cfg.streams[k].as_str()).collect();
    format!(
        "NATS JetStream streams {} of {} on {}{share} ({} partition{}: weir streams {}; {claims}; no local log, ranges of sequences replayed from JetStream)",
        read.join(", "),
        cfg.streams.len(),
        cfg.servers.join(", "),
        owned.len(),
        if owned.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// What a sink writes, in `weir check`'s words.
fn sink_words(kind: &config::SinkKind) -> String {
    use config::SinkKind;
    match kind {
        SinkKind::Print { count, time_format } => format!(
            "print the first {count} of each batch, time {}",
            match time_format {
                crate::sink::TimeFormat::Millis => "in ms",
                crate::sink::TimeFormat::DateTime => "as UTC date and time",
            }
        ),
        SinkKind::TextFiles {
            prefix,
            suffix,
            skip_empty,
        } => format!(
            "text files {}-<batch ms>.{suffix}{}",
            prefix.display(),
            skipping(*skip_empty)
        ),
        SinkKind::Kv { table } => {
            format!("key-value table `{table}` (weir kv scan DATA_DIR {table})")
        }
        SinkKind::JetStream(c) => format!(
            "NATS JetStream subject `{}` (sink id `{}`, at most {} acks in flight; a replay older than the stream's duplicate_window is {})",
            c.subject,
            c.sink_id,
            c.acks_in_flight_max,
            match c.replay_older_than_window {
                crate::sink::ReplayOlderThanWindow::Refuse => "refused",
                crate::sink::ReplayOlderThanWindow::Publish => "published anyway",
            }
        ),
        SinkKind::Kafka(c) => config::kafka_sink_words(c),
        SinkKind::Postgres(d) => {
            let c = &d.config;
            let cols: Vec<String> = c
                .columns
                .iter()
                .zip(&d.sources)
                .map(|(c, s)| format!("{c} ← {s}"))
                .collect();
            format!(
                "PostgreSQL table {} ({}; {}, rejected rows {}; progress row ({}, {}, {}) in {}; {})",
                c.table,
                cols.join(", "),
                match &c.mode {
                    crate::sink::PgMode::Insert => "insert".to_string(),
                    crate::sink::PgMode::Upsert { key, .. } => format!("upsert on {}", key.join(", ")),
                },
                match c.on_error {
                    crate::sink::PgOnError::Fail => "fail the batch".to_string(),
                    crate::sink::PgOnError::DeadLetter =>
                        format!("go to {}", c.dead_letter_table()),
                },
                c.pipeline,
                c.sink_id,
                c.partition,
                c.progress_table,
                c.tls.describe()
            )
        }
        SinkKind::JsonFiles {
            prefix,
            suffix,
            skip_empty,
        } => format!(
            "JSON-lines files {}-<batch ms>.{suffix}{}",
            prefix.display(),
            skipping(*skip_empty)
        ),
    }
}

fn skipping(skip_empty: bool) -> &'static str {
    if skip_empty {
        ", none for an empty batch"
    } else {
        ""
    }
}

/// `s` in double quotes, escaped as in a TOML basic string.
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() => q.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// What a step does, in the words `weir check` prints (the file's keys
/// and values, never Rust's `Debug` form).
fn op_words(op: &config::Op, interval: Duration) -> String {
    use config::{OnBadRecord, Op, Predicate};
    let on_error = |e: &OnBadRecord| match e {
        OnBadRecord::Fail => "",
        OnBadRecord::Drop => ", drop bad records",
        OnBadRecord::DeadLetter => ", dead-letter bad records",
    };
    let of = |f: &Option<String>| {
        f.as_ref()
            .map_or(String::new(), |f| format!(" of field {f}"))
    };
    match op {
        Op::Split {
            separator,
            keep_empty,
        } => format!(
            "split on {}{}",
            separator
                .as_deref()
                .map_or("whitespace".to_string(), quoted),
            if *keep_empty {
                ", keep empty pieces"
            } else {
                ""
            }
        ),
        Op::Filter {
            predicate,
            field,
            invert,
        } => {
            let test = match predicate {
                Predicate::Contains(x) => format!("contains {}", quoted(x)),
                Predicate::StartsWith(x) => format!("starts with {}", quoted(x)),
                Predicate::EndsWith(x) => format!("ends with {}", quoted(x)),
                Predicate::Regex(r) => format!("matches regex {}", quoted(r.as_str())),
                Predicate::NotEmpty => "not empty".to_string(),
            };
            format!(
                "filter{}{} {test}",
                field
                    .as_ref()
                    .map_or(String::new(), |f| format!(" on field {f}:")),
                if *invert { " not" } else { "" },
            )
        }
        Op::WindowCount { window, slide } | Op::WindowSum { window, slide, .. } => {
            let slide = if slide.is_zero() { interval } else { *slide };
            let sum = match op {
                Op::WindowSum {
                    field, on_error: e, ..
                } => format!("{}{}", of(field), on_error(e)),
                _ => String::new(),
            };
            format!(
                "{} window {} ms sliding {} ms{sum}",
                op.name(),
                window.as_millis(),
                slide.as_millis()
            )
        }
        Op::ParseJson { on_error: e } => format!("parse_json{}", on_error(e)),
        Op::Select { fields } => format!("select {}", fields.join(", ")),
        Op::Rename { fields } => {
            let r: Vec<String> = fields.iter().map(|(a, b)| format!("{a} to {b}")).collect();
            format!("rename {}", r.join(", "))
        }
        Op::KeyBy { field } => format!("key_by field {field}"),
        Op::SumByKey { field, on_error: e } => {
            format!("{}{}{}", op.name(), of(field), on_error(e))
        }
        Op::RunningTotal {
            field,
            on_error: e,
            initial,
        } => {
            let from = initial.as_ref().map_or(String::new(), |p| {
                format!(" from the initial state in {}", p.display())
            });
            format!("{}{}{from}{}", op.name(), of(field), on_error(e))
        }
        Op::Top { n } => format!("top {n}"),
        Op::Sql(def) => def.words(interval, &quoted),
        Op::KMeans(_) | Op::Regression(_) => config::ml_words(op),
        Op::Lowercase | Op::Uppercase | Op::Trim | Op::CountByKey => op.name().to_string(),
    }
}

/// `weir check`'s words for a generator source `id`.
fn generator_words(g: &generator::GeneratorConfig, id: &str) -> String {
    format!(
        "generator, {} records/s{}, {}{}",
        g.records_per_second,
        g.count.map_or(String::new(), |c| format!(", {c} in all")),
        if g.json {
            "one JSON object per record".to_string()
        } else {
            format!("{} line(s) per record", g.lines_per_record)
        },
        if g.durable {
            format!(" (durable: log wal/{id})")
        } else {
            String::new()
        }
    )
}
