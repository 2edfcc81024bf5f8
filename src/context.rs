//! [`StreamingContext`]: the entry point. Holds the operator graph, creates
//! sources, and starts/stops the scheduler.
//!
//! Life cycle (as in Spark): *initialized* (build the graph) → `start()` →
//! *active* → `stop()` → *stopped*. Output operations cannot be added once
//! started; a stopped context cannot be started again.
//! Limits: batch interval at least 1 ms; `parallelism` 1 to
//! [`PARALLELISM_MAX`] threads; `partitions` 1 to [`PARTITIONS_MAX`].
//! Must never: hold engine logic (graph semantics live in `dstream`,
//! execution in `scheduler`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::checkpoint::{CheckpointStore, MemoryCheckpointStore, StateReader};
use crate::clock::{Clock, SystemClock};
use crate::dstream::{DStream, Data, Graph, PipelineDescription, Queue, Source};
use crate::receiver::{Receiver, StreamShared};
use crate::scheduler::{
    BatchStats, Scheduler, SchedulerConfig, BATCH_RECORDS_MAX_DEFAULT, STATS_BATCHES_MAX_DEFAULT,
};
use crate::Result;

/// Largest accepted `parallelism`, in threads.
pub const PARALLELISM_MAX: usize = 1024;
/// Largest accepted `partitions`.
pub const PARTITIONS_MAX: usize = 65_536;
/// Default number of shuffle partitions.
pub const PARTITIONS_DEFAULT: usize = 4;
/// Longest `stop()` waits for the receiver threads together; a receiver
/// still running then is named in the log and left behind.
pub const RECEIVER_STOP_WAIT_MAX: Duration = Duration::from_secs(5);
/// Default bound on a graceful stop's draining.
pub const GRACEFUL_STOP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Errors of the context's life cycle and configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A builder setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// `start()` on an active context.
    #[error("the streaming context has already been started")]
    AlreadyStarted,
    /// `start()` on a stopped context.
    #[error("the streaming context has been stopped and cannot be restarted; create a new one")]
    Stopped,
    /// An operation that needs a started context.
    #[error("the streaming context has not been started")]
    NotStarted,
}

/// Builds a [`StreamingContext`].
pub struct StreamingContextBuilder {
    batch_interval: Option<Duration>,
    parallelism: usize,
    partitions: usize,
    clock: Arc<dyn Clock>,
    data_dir: Option<PathBuf>,
    batch_records_max: u64,
    adaptive_batches: bool,
    stats_batches_max: usize,
    graceful_stop_timeout: Duration,
    batch_attempts_max: u32,
    retry_backoff: Duration,
    wal_config: crate::wal::WalConfig,
    store: Option<Box<dyn CheckpointStore>>,
    backlog_bytes_max: u64,
    records_per_second_max: Option<u64>,
}

impl std::fmt::Debug for StreamingContextBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContextBuilder")
            .field("batch_interval", &self.batch_interval)
            .field("parallelism", &self.parallelism)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl StreamingContextBuilder {
    /// The batch interval (required; a whole number of milliseconds).
    pub fn batch_interval(mut self, d: Duration) -> Self {
        self.batch_interval = Some(d);
        self
    }
    /// Worker threads evaluating a batch (default: available cores).
    pub fn parallelism(mut self, threads: usize) -> Self {
        self.parallelism = threads;
        self
    }
    /// Shuffle partitions of keyed operators (default
    /// [`PARTITIONS_DEFAULT`]). Part of the pipeline: it fixes keyed output
    /// order and state layout, independently of `parallelism`.
    pub fn partitions(mut self, n: usize) -> Self {
        self.partitions = n;
        self
    }
    /// The clock (default: [`SystemClock`]; tests use `ManualClock`).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
    /// Directory for durable data (WAL, checkpoints) once those are wired.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
    /// Cap of records per source per batch.
    pub fn batch_records_max(mut self, n: u64) -> Self {
        self.batch_records_max = n;
        self
    }
    /// Whether new batches are sized to what the pipeline processes in
    /// about 90 % of a batch interval, learnt from the batches before
    /// (default: on; the first batch takes at most 1,000,000 records per
    /// second of interval).
    /// Off: every batch takes all durable input up to `batch_records_max`.
    pub fn adaptive_batches(mut self, on: bool) -> Self {
        self.adaptive_batches = on;
        self
    }
    /// Number of batches whose statistics are kept.
    pub fn stats_batches_max(mut self, n: usize) -> Self {
        self.stats_batches_max = n;
        self
    }
    /// Longest a graceful stop keeps draining sources.
    pub fn graceful_stop_timeout(mut self, d: Duration) -> Self {
        self.graceful_stop_timeout = d;
        self
    }
    /// How often a failing batch is tried before the context stops with
    /// an error naming the batch (default 3), and the first retry's wait
    /// (default 100 ms, doubling).
    pub fn batch_retries(mut self, attempts_max: u32, backoff: Duration) -> Self {
        self.batch_attempts_max = attempts_max.max(1);
        self.retry_backoff = backoff;
        self
    }

    /// Limits of the input logs opened by `wal_stream` (segment size,
    /// record size, queue bounds).
    pub fn wal_config(mut self, config: crate::wal::WalConfig) -> Self {
        self.wal_config = config;
        self
    }

    /// Most record bytes a receiver-fed stream may have in its WAL that no
    /// committed batch has consumed yet (default
    /// [`crate::receiver::BACKLOG_BYTES_MAX_DEFAULT`], 512 MiB). At the
    /// maximum, `store` waits and socket receivers stop reading.
    pub fn backlog_bytes_max(mut self, bytes: u64) -> Self {
        self.backlog_bytes_max = bytes;
        self
    }

    /// Default rate limit of every receiver, in records per second
    /// (default: none). A receiver's own configuration overrides it.
    pub fn records_per_second_max(mut self, max: Option<u64>) -> Self {
        self.records_per_second_max = max;
        self
    }

    /// Where batch lineage and state are kept (default: in memory).
    pub fn checkpoint_store(mut self, store: Box<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Validates the settings and creates the context.
    pub fn build(self) -> Result<StreamingContext> {
        let interval = self
            .batch_interval
            .ok_or_else(|| ContextError::Config("batch_interval is required".into()))?;
        let interval_ms = interval.as_millis() as u64;
        if interval_ms == 0 || interval.subsec_nanos() % 1_000_000 != 0 {
            return Err(ContextError::Config(format!(
                "batch_interval {interval:?} must be a positive whole number of milliseconds"
            ))
            .into());
        }
        if !(1..=PARALLELISM_MAX).contains(&self.parallelism) {
            return Err(ContextError::Config(format!(
                "parallelism {} must be 1..={PARALLELISM_MAX}",
                self.parallelism
            ))
            .into());
        }
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(ContextError::Config(format!(
                "partitions {} must be 1..={PARTITIONS_MAX}",
                self.partitions
            ))
            .into());
        }
        if self.backlog_bytes_max == 0 {
            return Err(ContextError::Config("backlog_bytes_max must be positive".into()).into());
        }
        if self.records_per_second_max == Some(0) {
            return Err(ContextError::Config(
                "records_per_second_max must be positive (None for no limit)".into(),
            )
            .into());
        }
        if self.batch_records_max == 0 {
            return Err(ContextError::Config("batch_records_max must be positive".into()).into());
        }
        let store = self
            .store
            .unwrap_or_else(|| Box::new(MemoryCheckpointStore::new()));
        Ok(StreamingContext {
            input_logs: Mutex::new(Vec::new()),
            graph: Graph::new(interval_ms, self.partitions),
            state_reader: store.state_reader(),
            cfg: SchedulerConfig {
                clock: self.clock,
                parallelism: self.parallelism,
                batch_records_max: self.batch_records_max,
                adaptive_batches: self.adaptive_batches,
                stats_batches_max: self.stats_batches_max,
                graceful_stop_timeout: self.graceful_stop_timeout,
                batch_attempts_max: self.batch_attempts_max,
                retry_backoff: self.retry_backoff,
            },
            data_dir: self.data_dir,
            wal_config: self.wal_config,
            backlog_bytes_max: self.backlog_bytes_max,
            records_per_second_max: self.records_per_second_max,
            inner: Mutex::new(Inner {
                receivers: Vec::new(),
                receiver_threads: Vec::new(),
                phase: Phase::Initialized,
                store: Some(store),
                scheduler: None,
            }),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initialized,
    Active,
    Stopped,
}

/// A receiver waiting for `start()`.
struct PendingReceiver {
    receiver: Box<dyn Receiver>,
    shared: Arc<StreamShared>,
}

struct Inner {
    /// Receivers registered before `start()`; their threads start with it.
    receivers: Vec<PendingReceiver>,
    /// Running receiver threads, stopped first at `stop()`.
    receiver_threads: Vec<(Arc<StreamShared>, JoinHandle<()>)>,
    phase: Phase,
    store: Option<Box<dyn CheckpointStore>>,
    scheduler: Option<Arc<Scheduler>>,
}

/// The entry point of a streaming pipeline (Spark's `StreamingContext`).
pub struct StreamingContext {
    graph: Arc<Graph>,
    /// Reads committed state (key-value tables) while the scheduler owns
    /// the store.
    state_reader: Arc<dyn StateReader>,
    cfg: SchedulerConfig,
    data_dir: Option<PathBuf>,
    wal_config: crate::wal::WalConfig,
    backlog_bytes_max: u64,
    records_per_second_max: Option<u64>,
    /// Every input log opened for a stream, by stream name (for metrics).
    input_logs: Mutex<Vec<(String, Arc<crate::wal::Wal>)>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("batch_interval_ms", &self.graph.interval_ms())
            .finish_non_exhaustive()
    }
}

impl StreamingContext {
    /// A builder with defaults: system clock, `parallelism` = available
    /// cores, [`PARTITIONS_DEFAULT`] partitions, in-memory checkpoints.
    pub fn builder() -> StreamingContextBuilder {
        StreamingContextBuilder {
            batch_interval: None,
            parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
            partitions: PARTITIONS_DEFAULT,
            clock: Arc::new(SystemClock),
            data_dir: None,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            adaptive_batches: true,
            stats_batches_max: STATS_BATCHES_MAX_DEFAULT,
            graceful_stop_timeout: GRACEFUL_STOP_TIMEOUT_DEFAULT,
            batch_attempts_max: crate::scheduler::BATCH_ATTEMPTS_MAX_DEFAULT,
            retry_backoff: crate::scheduler::RETRY_BACKOFF_DEFAULT,
            wal_config: crate::wal::WalConfig::default(),
            store: None,
            backlog_bytes_max: crate::receiver::BACKLOG_BYTES_MAX_DEFAULT,
            records_per_second_max: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch interval in milliseconds.
    pub fn batch_interval_ms(&self) -> u64 {
        self.graph.interval_ms()
    }

    /// The clock driving batches.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.cfg.clock.clone()
    }

    /// The limits of the input logs this context opens.
    pub(crate) fn wal_config(&self) -> &crate::wal::WalConfig {
        &self.wal_config
    }

    /// The configured data directory, if any.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// A stream of the batches pushed to `queue` (Spark's `queueStream`).
    pub fn queue_stream<T: Data>(&self, queue: &Queue<T>) -> DStream<T> {
        DStream::from_source(&self.graph, "queue", Arc::new(queue.clone()))
    }

    /// A stream over any [`Source`]; `kind` is its auto-name base.
    pub fn source_stream<T: Data>(
        &self,
        kind: &'static str,
        src: Arc<dyn Source<T>>,
    ) -> DStream<T> {
        DStream::from_source(&self.graph, kind, src)
    }

    /// A stream whose input is the write-ahead log `name` under the data
    /// directory (`DATA_DIR/wal/<name>`), opened (and recovered) now.
    /// Returns the stream, named `name`, and the log, to which receivers or
    /// user code append; an append is acknowledged once durable, and each
    /// acknowledged record lands in exactly one batch.
    pub fn wal_stream<T: Data>(
        &self,
        name: &str,
        decode: impl Fn(&[u8]) -> std::result::Result<T, crate::dstream::BoxError>
            + Send
            + Sync
            + 'static,
    ) -> Result<(DStream<T>, Arc<crate::wal::Wal>)> {
        let wal = self.open_stream_wal("wal_stream", name)?;
        let src = crate::receiver::WalSource::new(wal.clone(), Arc::new(decode));
        let stream = DStream::from_source(&self.graph, "wal", Arc::new(src)).name(name);
        Ok((stream, wal))
    }

    /// Opens (and recovers) `DATA_DIR/wal/<name>` for a stream.
    fn open_stream_wal(&self, what: &str, name: &str) -> Result<Arc<crate::wal::Wal>> {
        let dir = self.data_dir.as_ref().ok_or_else(|| {
            ContextError::Config(format!(
                "{what}(\"{name}\") needs a data directory: set .data_dir(..) or use StreamingContext::get_or_create"
            ))
        })?;
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ContextError::Config(format!(
                "stream name `{name}` must be a plain file name (it names the directory of its log)"
            ))
            .into());
        }
        let (wal, report) =
            crate::wal::Wal::open(dir.join("wal").join(name), self.wal_config.clone())?;
        if let Some(t) = &report.torn_tail {
            tracing::warn!(stream = name, segment = %t.path.display(), bytes = t.bytes_cut, "recovered the input log: cut a torn tail of never-acknowledged bytes");
        }
        let wal = Arc::new(wal);
        self.input_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), wal.clone()));
        Ok(wal)
    }

    /// `(stream name, log)` of every input log this context opened (WAL and
    /// receiver streams), for metrics and status.
    pub fn input_logs(&self) -> Vec<(String, Arc<crate::wal::Wal>)> {
        self.input_logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A stream fed by `receiver`, through the WAL `DATA_DIR/wal/<name>`
    /// (opened and recovered now); `decode` maps a stored record to `T`.
    /// The receiver's thread starts at `start()` and is stopped first at
    /// `stop()` (it stops storing, then batches drain what was logged). An
    /// error of the receiver stops the context with
    /// [`crate::receiver::ReceiverError::Failed`] naming the stream.
    pub fn receiver_stream<T: Data>(
        &self,
        name: &str,
        receiver: impl Receiver,
        decode: impl Fn(&[u8]) -> std::result::Result<T, crate::dstream::BoxError>
            + Send
            + Sync
            + 'static,
    ) -> Result<DStream<T>> {
        Ok(self
            .receiver_stream_shared(name, Box::new(receiver), Arc::new(decode))?
            .0)
    }

    /// [`StreamingContext::receiver_stream`], also returning the stream's
    /// shared state (built-in receivers that need it before `start()`).
    pub(crate) fn receiver_stream_shared<T: Data>(
        &self,
        name: &str,
        receiver: Box<dyn Receiver>,
        decode: crate::receiver::Decoder<T>,
    ) -> Result<(DStream<T>, Arc<StreamShared>)> {
        if self.lock().phase != Phase::Initialized {
            return Err(ContextError::AlreadyStarted.into());
        }
        let wal = self.open_stream_wal("receiver_stream", name)?;
        let shared = StreamShared::new(
            name,
            wal,
            self.backlog_bytes_max,
            self.records_per_second_max,
        );
        let src = crate::receiver::WalSource::for_receiver(shared.clone(), decode);
        let stream = DStream::from_source(&self.graph, "receiver", Arc::new(src)).name(name);
        self.lock().receivers.push(PendingReceiver {
            receiver,
            shared: shared.clone(),
        });
        Ok((stream, shared))
    }

    /// [`StreamingContext::wal_stream`] of UTF-8 text records.
    pub fn wal_text_stream(&self, name: &str) -> Result<(DStream<String>, Arc<crate::wal::Wal>)> {
        self.wal_stream(name, crate::receiver::utf8)
    }

    /// Spark's `getOrCreate`: the context for data directory `dir`, with its
    /// checkpoint store (`dir/checkpoint`, sled) attached. `build` gets a
    /// builder already set to `dir` and builds the pipeline, the same code
    /// on a first start and after a restart; at `start()` the pipeline is
    /// checked against the checkpoint, committed state is loaded, every
    /// allocated but uncommitted batch is re-run with exactly its recorded
    /// input, and new batches continue where the last one ended.
    pub fn get_or_create(
        dir: impl AsRef<std::path::Path>,
        build: impl FnOnce(StreamingContextBuilder) -> Result<StreamingContext>,
    ) -> Result<StreamingContext> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            ContextError::Config(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        let store = crate::checkpoint::SledCheckpointStore::open(
            dir.join("checkpoint"),
            crate::checkpoint::SledConfig::default(),
        )
        .map_err(crate::scheduler::SchedulerError::from)?;
        build(
            StreamingContext::builder()
                .data_dir(dir)
                .checkpoint_store(Box::new(store)),
        )
    }

    /// The pipeline description (names, kinds, parameters).
    pub fn describe(&self) -> PipelineDescription {
        self.graph.describe()
    }

    /// Validates the graph and starts processing. Nothing runs before.
    pub fn start(&self) -> Result<()> {
        let mut inner = self.lock();
        match inner.phase {
            Phase::Active => return Err(ContextError::AlreadyStarted.into()),
            Phase::Stopped => return Err(ContextError::Stopped.into()),
            Phase::Initialized => {}
        }
        let plan = self.graph.build()?;
        let store = inner
            .store
            .take()
            .unwrap_or_else(|| Box::new(MemoryCheckpointStore::new()));
        match Scheduler::start(plan, self.cfg.clone(), store) {
            Ok(sched) => {
                let sched = Arc::new(sched);
                inner.scheduler = Some(sched.clone());
                inner.phase = Phase::Active;
                for r in std::mem::take(&mut inner.receivers) {
                    r.shared.attach(&sched);
                    let weak = Arc::downgrade(&sched);
                    let spawned = crate::receiver::spawn(r.receiver, r.shared.clone(), move |e| {
                        if let Some(s) = weak.upgrade() {
                            s.fail(e.into());
                        }
                    });
                    match spawned {
                        Ok(t) => inner.receiver_threads.push((r.shared, t)),
                        Err(e) => {
                            sched.fail(
                                crate::receiver::ReceiverError::Io {
                                    stream: r.shared.name().to_string(),
                                    action: "start the receiver thread for",
                                    path: "the stream".into(),
                                    source: e,
                                }
                                .into(),
                            );
                            break;
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                // The graph is frozen and the store consumed: this context
                // is done (as after a stop); the error says why.
                inner.phase = Phase::Stopped;
                self.graph.mark_stopped();
                Err(e)
            }
        }
    }

    fn scheduler(&self) -> Result<Arc<Scheduler>> {
        self.lock()
            .scheduler
            .clone()
            .ok_or_else(|| ContextError::NotStarted.into())
    }

    /// Stops processing. `graceful`: first drain what the sources hold
    /// (bounded by `graceful_stop_timeout`); otherwise stop after the batch
    /// in flight. Idempotent; returns the error processing stopped with.
    pub fn stop(&self, graceful: bool) -> Result<()> {
        let (sched, receivers) = {
            let mut inner = self.lock();
            inner.phase = Phase::Stopped;
            self.graph.mark_stopped();
            inner.receivers.clear();
            (
                inner.scheduler.clone(),
                std::mem::take(&mut inner.receiver_threads),
            )
        };
        // Receivers first: once they stopped storing, a graceful stop can
        // drain everything that was logged.
        for (shared, _) in &receivers {
            shared.request_stop();
        }
        // Bounded: a custom receiver that ignores `is_stopping` must not
        // hold the stop past systemd's stop timeout. It is left running
        // (its stores fail with `Stopping` from here on) and named.
        let deadline = std::time::Instant::now() + RECEIVER_STOP_WAIT_MAX;
        for (shared, t) in receivers {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !t.is_finished() {
                tracing::error!(
                    stream = %shared.name(),
                    waited_ms = RECEIVER_STOP_WAIT_MAX.as_millis() as u64,
                    "receiver did not stop in time; stopping without it (its Receiver::run must return once ctx.is_stopping() is true)"
                );
            } else if t.join().is_err() {
                tracing::error!(stream = %shared.name(), "receiver thread panicked while stopping");
            }
        }
        match sched {
            Some(s) => s.stop(graceful),
            None => Ok(()),
        }
    }

    /// Blocks until processing stops (by `stop` or an error).
    pub fn await_termination(&self) -> Result<()> {
        self.scheduler()?.await_termination(None).map(|_| ())
    }

    /// Like `await_termination`, at most `timeout`; whether it stopped.
    pub fn await_termination_or_timeout(&self, timeout: Duration) -> Result<bool> {
        self.scheduler()?.await_termination(Some(timeout))
    }

    /// Blocks (at most `timeout`) until the batch at `time_ms` completed.
    pub fn await_batch(&self, time_ms: u64, timeout: Duration) -> Result<BatchStats> {
        self.scheduler()?.await_batch(time_ms, timeout)
    }

    /// A reader of the key-value table `table` (written by
    /// `save_to_kv(table)`): what the last committed batch left in it.
    pub fn kv_table<K, V>(&self, table: &str) -> crate::sink::KvTable<K, V>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Ord,
        V: serde::de::DeserializeOwned,
    {
        crate::sink::KvTable::new(self.state_reader.clone(), table)
    }

    /// The committed value of `key` in the key-value table `table`.
    pub fn kv_get<K, V>(&self, table: &str, key: &K) -> Result<Option<V>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Ord,
        V: serde::de::DeserializeOwned,
    {
        self.kv_table::<K, V>(table).get(key)
    }

    /// Every committed entry of the key-value table `table`, in key order.
    pub fn kv_scan<K, V>(&self, table: &str) -> Result<Vec<(K, V)>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned + Ord,
        V: serde::de::DeserializeOwned,
    {
        self.kv_table::<K, V>(table).scan()
    }

    /// Statistics of recent batches, oldest first.
    pub fn statistics(&self) -> Vec<BatchStats> {
        self.lock()
            .scheduler
            .as_ref()
            .map(|s| s.statistics())
            .unwrap_or_default()
    }

    /// `(source, position)` after the last batch this process committed
    /// (empty before the first commit); the service's backlog metric.
    pub fn committed_positions(&self) -> Vec<(String, u64)> {
        self.lock()
            .scheduler
            .as_ref()
            .map(|s| s.committed_positions())
            .unwrap_or_default()
    }

    /// `(operator, keys)` of each stateful operator's committed state
    /// (empty before `start()`); the service's state-size metric.
    pub fn state_keys(&self) -> Vec<(String, u64)> {
        self.lock()
            .scheduler
            .as_ref()
            .map(|s| s.state_keys())
            .unwrap_or_default()
    }
}

impl Drop for StreamingContext {
    fn drop(&mut self) {
        let _ = self.stop(false);
    }
}
