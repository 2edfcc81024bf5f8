//! [`StreamingContextBuilder`]: the context's settings, their defaults and
//! their checks.
//!
//! Limits: see [`super`] (`parallelism` 1 to [`PARALLELISM_MAX`],
//! `partitions` 1 to [`PARTITIONS_MAX`], a batch interval of whole
//! milliseconds up to [`BATCH_INTERVAL_MAX`]); `backlog_bytes_max`, `batch_records_max` and a given
//! `records_per_second_max` positive.
//! Must never: build a context from a setting it did not check.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    ContextError, Inner, Phase, StreamingContext, BATCH_INTERVAL_MAX,
    GRACEFUL_STOP_TIMEOUT_DEFAULT, PARALLELISM_MAX, PARTITIONS_DEFAULT, PARTITIONS_MAX,
};
use crate::checkpoint::{CheckpointStore, MemoryCheckpointStore};
use crate::clock::{Clock, SystemClock};
use crate::dstream::Graph;
use crate::scheduler::{SchedulerConfig, BATCH_RECORDS_MAX_DEFAULT, STATS_BATCHES_MAX_DEFAULT};
use crate::Result;

/// Builds a [`StreamingContext`].
pub struct StreamingContextBuilder {
    batch_interval: Option<Duration>,
    parallelism: usize,
    partitions: usize,
    clock: Arc<dyn Clock>,
    data_dir: Option<PathBuf>,
    data_dir_id: Option<crate::checkpoint::DataDirId>,
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
    dead_letter_bytes_max: u64,
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
            data_dir_id: None,
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
            dead_letter_bytes_max: crate::sink::DEAD_LETTER_BYTES_MAX_DEFAULT,
        }
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

    /// The identity of the data directory's checkpoint (set by
    /// `get_or_create`): every input log opened must carry it.
    pub(crate) fn data_dir_id(mut self, id: crate::checkpoint::DataDirId) -> Self {
        self.data_dir_id = Some(id);
        self
    }

    /// Bound of the dead-letter log `DATA_DIR/dead-letter/` (default
    /// [`crate::sink::DEAD_LETTER_BYTES_MAX_DEFAULT`], 1 GiB): a batch whose
    /// dead letters would pass it fails instead of committing.
    pub fn dead_letter_bytes_max(mut self, bytes: u64) -> Self {
        self.dead_letter_bytes_max = bytes;
        self
    }

    /// Where batch lineage and state are kept (default: in memory).
    pub fn checkpoint_store(mut self, store: Box<dyn CheckpointStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Validates the settings and creates the context.
    pub fn build(self) -> Result<StreamingContext> {
        let interval_ms = self.check()?;
        let store = self
            .store
            .unwrap_or_else(|| Box::new(MemoryCheckpointStore::new()));
        let dead_letters = self.data_dir.as_deref().map(|d| {
            Arc::new(crate::sink::DeadLetterLog::new(
                d,
                self.dead_letter_bytes_max,
            ))
        });
        let graph = Graph::new(interval_ms, self.partitions);
        graph.set_data_dir_id(self.data_dir_id.map(|id| id.to_string()));
        Ok(StreamingContext {
            dead_letters: dead_letters.clone(),
            input_logs: Mutex::new(Vec::new()),
            data_dir_lock: Mutex::new(None),
            graph,
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
                dead_letters: dead_letters.map(|d| d as Arc<dyn crate::dstream::DeadLetterSink>),
            },
            data_dir: self.data_dir,
            data_dir_id: self.data_dir_id,
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

    /// Checks every setting; the batch interval in milliseconds.
    fn check(&self) -> std::result::Result<u64, ContextError> {
        let interval = self.batch_interval.ok_or(ContextError::Missing {
            setting: "batch_interval",
        })?;
        let interval_ms = interval.as_millis() as u64;
        if interval_ms == 0
            || interval.subsec_nanos() % 1_000_000 != 0
            || interval > BATCH_INTERVAL_MAX
        {
            return Err(ContextError::OutOfRange {
                setting: "batch_interval",
                found: format!("{} ms", interval.as_secs_f64() * 1000.0),
                expected: format!(
                    "a whole number of milliseconds from 1 to {}",
                    BATCH_INTERVAL_MAX.as_millis()
                ),
            });
        }
        let range = |setting, found: usize, max: usize| {
            if (1..=max).contains(&found) {
                Ok(())
            } else {
                Err(ContextError::OutOfRange {
                    setting,
                    found: found.to_string(),
                    expected: format!("1..={max}"),
                })
            }
        };
        range("parallelism", self.parallelism, PARALLELISM_MAX)?;
        range("partitions", self.partitions, PARTITIONS_MAX)?;
        let positive = |setting, zero: bool, note| {
            if zero {
                Err(ContextError::NotPositive { setting, note })
            } else {
                Ok(())
            }
        };
        positive("backlog_bytes_max", self.backlog_bytes_max == 0, "")?;
        positive(
            "records_per_second_max",
            self.records_per_second_max == Some(0),
            " (None for no limit)",
        )?;
        positive("batch_records_max", self.batch_records_max == 0, "")?;
        positive("dead_letter_bytes_max", self.dead_letter_bytes_max == 0, "")?;
        Ok(interval_ms)
    }
}
