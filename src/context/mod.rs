//! [`StreamingContext`]: the entry point. Holds the operator graph, creates
//! streams, and starts/stops the scheduler and the receivers.
//!
//! Life cycle (as in Spark): *initialized* (build the graph) → `start()` →
//! *active* → `stop()` → *stopped*. Output operations cannot be added once
//! started; a stopped context cannot be started again.
//!
//! Files: `mod.rs` the context and its life cycle (start, stop, await,
//! `get_or_create`, statistics, key-value readers); `builder.rs` the
//! settings and their checks; `inputs.rs` every stream-creating
//! constructor (queue, source, WAL, receiver, socket and directory
//! streams); `partitions.rs` partitioned receiver streams; `jetstream.rs`
//! JetStream streams; `kafka.rs` Kafka streams. Every named stream's name passes
//! `crate::names::validate_stream_name`, and its files are where
//! `crate::layout` says.
//!
//! Limits: batch interval 1 ms to [`BATCH_INTERVAL_MAX`] (one day);
//! `parallelism` 1 to
//! [`PARALLELISM_MAX`] threads; `partitions` 1 to [`PARTITIONS_MAX`];
//! `stop()` waits at most [`RECEIVER_STOP_WAIT_MAX`] for receivers.
//! Must never: hold engine logic (graph semantics live in `dstream`,
//! execution in `scheduler`, receiving in `receiver`), or build a path
//! under the data directory other than through `crate::layout`.

mod builder;
mod identity;
mod inputs;
mod jetstream;
mod kafka;
mod partitions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::receiver::dir::file_partition;
pub use builder::StreamingContextBuilder;
pub use identity::{
    adopt_logs, check_offline, check_offline_missing, scan_logs, Adopted, IdentityError,
    LogIdentity,
};
pub use jetstream::jetstream_partition_name;
pub use kafka::{kafka_partition_name, KafkaStats};
pub use partitions::{partition_name, STREAM_PARTITIONS_MAX};

use crate::checkpoint::{CheckpointStore, MemoryCheckpointStore, StateReader};
use crate::clock::Clock;
use crate::dstream::{DStream, Data, Graph, PipelineDescription};
use crate::receiver::{Receiver, ReceiverError, StreamShared};
use crate::scheduler::{BatchStats, Scheduler, SchedulerConfig};
use crate::Result;

/// Longest accepted batch interval: one day. Longer ones would run their
/// first batch so late that the process looks hung (2^63 ms never runs
/// one); a daily job is a day-long interval or an external timer.
pub const BATCH_INTERVAL_MAX: Duration = Duration::from_secs(86_400);
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
    /// A required builder setting was not given.
    #[error("invalid configuration: {setting} is required")]
    Missing {
        /// The builder method.
        setting: &'static str,
    },
    /// A builder setting is out of range.
    #[error("invalid configuration: {setting} {found} must be {expected}")]
    OutOfRange {
        /// The builder method.
        setting: &'static str,
        /// The value given, in words.
        found: String,
        /// What is accepted, in words.
        expected: String,
    },
    /// A builder setting is zero where it must be positive.
    #[error("invalid configuration: {setting} must be positive{note}")]
    NotPositive {
        /// The builder method.
        setting: &'static str,
        /// What else may be given (empty, or starting with a space).
        note: &'static str,
    },
    /// A stream that keeps files was created without a data directory.
    #[error(
        "invalid configuration: {call}(\"{stream}\") needs a data directory: set .data_dir(..) or use StreamingContext::get_or_create"
    )]
    NoDataDir {
        /// The constructor called.
        call: &'static str,
        /// The stream's name.
        stream: String,
    },
    /// The data directory could not be created.
    #[error("invalid configuration: cannot create the data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process (or another context in this one) holds the data
    /// directory's lock: one weir per data directory.
    #[error(
        "the data directory {} is in use by {holder} (lock file {}): two weir processes must \
         never share a data directory. Stop the other one first, or give this one another \
         directory; the lock is released when its process exits, even by SIGKILL",
        dir.display(), lock_file.display()
    )]
    DataDirLocked {
        /// The data directory.
        dir: PathBuf,
        /// Its lock file (`DATA_DIR/LOCK`).
        lock_file: PathBuf,
        /// Who holds it, as the lock file says.
        holder: crate::storage::LockHolder,
    },
    /// A partitioned stream asks for fewer partitions (or another layout)
    /// than its logs on disk hold.
    #[error(
        "stream `{stream}` would have {partitions} partition(s), but its data directory holds logs they do not read: {}. Their records would never be processed. Keep the partition count those logs were written with; or, to change it, stop producers, let weir process everything, stop it, and remove those logs (DATA_DIR/wal/NAME)",
        logs.join(", ")
    )]
    PartitionsShrunk {
        /// The stream.
        stream: String,
        /// The partitions asked for.
        partitions: usize,
        /// The logs left out (directory names under `DATA_DIR/wal`).
        logs: Vec<String>,
    },
    /// A stream name outside the rule of `crate::names`.
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
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
    /// The data directory's identity, when `get_or_create` opened its
    /// checkpoint: every input log opened must carry it.
    data_dir_id: Option<crate::checkpoint::DataDirId>,
    wal_config: crate::wal::WalConfig,
    backlog_bytes_max: u64,
    records_per_second_max: Option<u64>,
    /// The dead-letter log (contexts with a data directory).
    dead_letters: Option<Arc<crate::sink::DeadLetterLog>>,
    /// Every input log opened for a stream, by stream name (for metrics).
    input_logs: Mutex<Vec<(String, Arc<crate::wal::Wal>)>>,
    /// The data directory's lock (`get_or_create`), held while the
    /// context lives.
    data_dir_lock: Mutex<Option<crate::storage::DirLock>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingContext")
            .field("batch_interval_ms", &self.graph.interval_ms())
            .finish_non_exhaustive()
    }
}

/// Takes the lock of data directory `dir` (`DATA_DIR/LOCK`): refused,
/// naming the holder, while another weir has the directory.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<crate::storage::DirLock> {
    use crate::storage::{LockAttempt, Storage};
    let lock_file = crate::layout::data_dir_lock(dir);
    match crate::storage::RealFs.try_lock(dir) {
        Ok(LockAttempt::Acquired(lock)) => Ok(lock),
        Ok(LockAttempt::Held(holder)) => Err(ContextError::DataDirLocked {
            dir: dir.to_path_buf(),
            lock_file,
            holder,
        }
        .into()),
        Err(source) => Err(ContextError::DataDir {
            path: lock_file,
            source,
        }
        .into()),
    }
}

impl StreamingContext {
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

    /// `(step, records dead-lettered since start)` for every step that
    /// dead-lettered a record in a committed batch.
    pub fn dead_letter_counts(&self) -> Vec<(String, u64)> {
        self.dead_letters
            .as_ref()
            .map_or_else(Vec::new, |d| d.counts())
    }

    /// The configured data directory, if any.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Spark's `getOrCreate`: the context for data directory `dir`, with its
    /// checkpoint store (`dir/checkpoint`, sled) attached. `build` gets a
    /// builder already set to `dir` and builds the pipeline, the same code
    /// on a first start and after a restart; at `start()` the pipeline is
    /// checked against the checkpoint, committed state is loaded, every
    /// allocated but uncommitted batch is re-run with exactly its recorded
    /// input, and new batches continue where the last one ended.
    ///
    /// The checkpoint and the input logs share the data directory's
    /// identity: a missing checkpoint beside logs that were written beside
    /// one, or a checkpoint of another data directory, is refused
    /// ([`IdentityError`]; the way out is [`adopt_logs`]).
    pub fn get_or_create(
        dir: impl AsRef<Path>,
        build: impl FnOnce(StreamingContextBuilder) -> Result<StreamingContext>,
    ) -> Result<StreamingContext> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| ContextError::DataDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_data_dir(dir)?;
        let (store, id) = identity::open_checkpoint(dir)?;
        let ssc = build(
            StreamingContext::builder()
                .data_dir(dir)
                .data_dir_id(id)
                .checkpoint_store(Box::new(store)),
        )?;
        *ssc.data_dir_lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(lock);
        Ok(ssc)
    }

    /// Spark's `ssc.union(streams)`: one stream with the records of every
    /// stream in `streams` at each batch, the first stream's first (its
    /// partitions, then the next stream's). All must slide at the same
    /// interval and come from this context; an empty slice, a stream of
    /// another context or different slides are refused by `start()`,
    /// naming the operator (`<inputs>/union`).
    pub fn union<T: Data>(&self, streams: &[DStream<T>]) -> DStream<T> {
        crate::dstream::union_all(&self.graph, streams)
    }

    /// Spark's `ssc.transform(streams, f)`: at each batch,
    /// `f(batch_time_ms, batches)` gets the batch of every stream, one
    /// `Vec` per stream in the order of `streams`, and returns the new
    /// stream's batch (split evenly over the partitions, larger chunks
    /// last). Streams of different record types: map them into one enum
    /// first. The same refusals as [`StreamingContext::union`].
    pub fn transform<T: Data, U: Data>(
        &self,
        streams: &[DStream<T>],
        f: impl Fn(u64, Vec<Vec<T>>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        crate::dstream::transform_all(&self.graph, streams, f)
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
                start_receivers(&mut inner, &sched);
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
        stop_receivers(receivers);
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

    /// After processing stopped: `(source, records)` each source holds
    /// past its last batch (acknowledged input left for the next start);
    /// None while processing runs or before `start()`.
    pub fn waiting_records(&self) -> Option<Vec<(String, u64)>> {
        self.lock()
            .scheduler
            .as_ref()
            .and_then(|s| s.waiting_records())
    }

    /// `(stream, health)` of every receiver-fed stream: its receiver's
    /// state, last error and records stored (the status page's receivers).
    pub fn receiver_health(&self) -> Vec<(String, crate::receiver::HealthSnapshot)> {
        let inner = self.lock();
        let pending = inner.receivers.iter().map(|r| &r.shared);
        let running = inner.receiver_threads.iter().map(|(s, _)| s);
        pending
            .chain(running)
            .map(|s| (s.name().to_string(), s.health()))
            .collect()
    }

    /// What the batch loop is doing now: the batch in flight and the batch
    /// times due but not yet started (None before `start()`).
    pub fn batch_queue(&self) -> Option<crate::scheduler::BatchQueue> {
        self.lock().scheduler.as_ref().map(|s| s.queue())
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

/// Starts the thread of every receiver registered before `start()`; a
/// receiver's failure (or a thread that cannot start) stops the scheduler.
fn start_receivers(inner: &mut Inner, sched: &Arc<Scheduler>) {
    for r in std::mem::take(&mut inner.receivers) {
        r.shared.attach(sched);
        let weak = Arc::downgrade(sched);
        let spawned = crate::receiver::spawn(r.receiver, r.shared.clone(), move |e| {
            if let Some(s) = weak.upgrade() {
                s.fail(e.into());
            }
        });
        match spawned {
            Ok(t) => inner.receiver_threads.push((r.shared, t)),
            Err(e) => {
                sched.fail(
                    ReceiverError::Io {
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
}

/// Asks every receiver to stop, then waits for their threads, at most
/// [`RECEIVER_STOP_WAIT_MAX`] for all together.
fn stop_receivers(receivers: Vec<(Arc<StreamShared>, JoinHandle<()>)>) {
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
}
