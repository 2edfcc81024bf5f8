//! Receivers: where records enter weir, and where "acknowledged" gets its
//! meaning. A record is acknowledged (its [`ReceiverContext::store`]
//! returns) only after it is durable in the stream's write-ahead log.
//!
//! Owns: the [`Receiver`] trait (user code may implement it, like Spark's
//! custom receivers), the [`ReceiverContext`] handed to it (store with
//! backpressure and rate limit, backlog tracking, the release hook), and
//! the stream's side of a release (`OnRelease` for the engine's
//! `crate::source::WalSource`). Built-in receivers live in the
//! submodules; the context's constructors (`socket_text_stream`,
//! `text_file_stream`, ...) live in `crate::context`: receivers never
//! import the context.
//!
//! Backpressure: the *backlog* of a stream is the number of record bytes
//! appended to its WAL but not yet released by a committed batch. While it is
//! at or above `backlog_bytes_max`, `store` waits and `backlog_full()` is
//! true (socket receivers stop reading, so TCP flow control pushes back on
//! the producer). Finished segments wholly below the committed position
//! that are still on disk (their deletion failed, or the release hook held
//! them back) count too, by file size, until they are deleted: disk use
//! stays bounded when deletion keeps failing. Records already in the log
//! when it is opened are not counted (they are at most the previous run's
//! backlog).
//!
//! Limits: the backlog bookkeeping holds at most [`BACKLOG_ENTRIES_MAX`]
//! entries (older appends are merged into the newest entry, which only ever
//! over-counts); each concurrent `store` that passed the backlog check may
//! overshoot the maximum by its append (at most the WAL's
//! `append_bytes_max`; `docs/receivers.md`); a blocked `store` notices a stop
//! within [`STOP_POLL`]; the rate limit allows a burst of a tenth of a
//! second's worth of records (at least one).
//! Must never: acknowledge before the WAL's fsync, fsync on its own (appends
//! go through the WAL's group commit), skip a record it cannot decode (the
//! batch fails, naming the LSN), or delete WAL segments before the release
//! hook succeeded.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

mod health;
pub(crate) mod lines;

internal! {
    mod dir;
    mod socket;
    mod socket_tls;
}
pub use dir::{DirConfig, DirStats};
pub use health::{HealthSnapshot, LastError, ReceiverHealth, ReceiverState};
pub use socket::{SocketConfig, SocketStats, DELIMITER_BYTES_MAX};
pub use socket_tls::{ClientCert, SocketTls};

use crate::dstream::BoxError;
use crate::scheduler::Scheduler;
use crate::source::OnRelease;
use crate::wal::{Wal, WalError};

/// Default maximum backlog of a stream: 512 MiB of record bytes. At least
/// two batches' worth at full speed, so a receiver keeps reading while a
/// batch runs; it is disk (the WAL), not memory: batches are read from the
/// log record by record.
pub const BACKLOG_BYTES_MAX_DEFAULT: u64 = 512 << 20;
/// Most backlog bookkeeping entries kept per stream.
pub const BACKLOG_ENTRIES_MAX: usize = 4096;
/// Longest a blocked `store` or wait goes without checking for a stop.
pub const STOP_POLL: Duration = Duration::from_millis(20);

/// The release hook: see [`ReceiverContext::set_release_hook`].
/// It returns the position below which WAL segments may be deleted (the
/// source uses the smaller of it and the released `end`).
pub type ReleaseHook = Box<dyn Fn(u64) -> Result<u64, BoxError> + Send + Sync>;

/// Errors of receivers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The context is stopping; the records of this call were not stored.
    #[error("the streaming context is stopping; the records were not stored")]
    Stopping,
    /// The stream's WAL refused the append.
    #[error("stream `{stream}`: could not log the records: {source}")]
    Wal {
        /// Stream name.
        stream: String,
        /// The WAL's error.
        source: WalError,
    },
    /// A receiver's `run` returned an error or panicked; the context stopped.
    #[error(
        "the receiver of stream `{stream}` failed: {message}. Records it stored are safe in the \
         stream's WAL and are processed after a restart; fix the cause and restart"
    )]
    Failed {
        /// Stream name.
        stream: String,
        /// What the receiver reported.
        message: String,
    },
    /// A receiver's configuration is invalid.
    #[error("stream `{stream}`: invalid receiver configuration: {message}")]
    Config {
        /// Stream name.
        stream: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A receiver's TLS files cannot be used (read when it is built).
    #[error("stream `{stream}`: {source}")]
    TlsFiles {
        /// Stream name.
        stream: String,
        /// What is wrong with which file, and what to do.
        source: Box<crate::net::TlsError>,
    },
    /// A receiver's own I/O failed where it cannot retry.
    #[error("stream `{stream}`: cannot {action} {path}: {source}")]
    Io {
        /// Stream name.
        stream: String,
        /// What was attempted.
        action: &'static str,
        /// The file, directory or address.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A source of records that runs on its own thread (Spark's custom
/// receiver).
pub trait Receiver: Send + 'static {
    /// Runs from `StreamingContext::start()` until `ctx.is_stopping()`;
    /// must notice a stop within 100 ms (poll with timeouts, never block
    /// unbounded). Returning `Err` (other than [`ReceiverError::Stopping`]
    /// while stopping) is logged with the stream name and stops the context
    /// with [`ReceiverError::Failed`]. Returning `Ok` early just ends this
    /// receiver; the stream keeps what it stored.
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError>;
}

/// Backlog bookkeeping: `(end LSN, bytes)` per append, oldest first.
#[derive(Default)]
struct Backlog {
    bytes: u64,
    /// Bytes of finished segments below the released position still on
    /// disk (see `OnRelease::kept`).
    kept: u64,
    entries: VecDeque<(u64, u64)>,
    released: u64,
}

impl Backlog {
    fn add(&mut self, end: u64, bytes: u64) {
        // A batch may have committed (and released) this append before we
        // got here: it is no longer backlog.
        if end <= self.released {
            return;
        }
        self.bytes += bytes;
        let full = self.entries.len() >= BACKLOG_ENTRIES_MAX;
        match self.entries.back_mut() {
            Some(last) if full || last.0 >= end => {
                // Merging into the newest entry keeps the bookkeeping bounded;
                // it can only delay the release of these bytes.
                last.0 = last.0.max(end);
                last.1 += bytes;
            }
            _ => self.entries.push_back((end, bytes)),
        }
    }

    /// What backpressure compares with `backlog_bytes_max`.
    fn total(&self) -> u64 {
        self.bytes.saturating_add(self.kept)
    }

    fn release(&mut self, end: u64) {
        self.released = self.released.max(end);
        while let Some(&(e, b)) = self.entries.front() {
            if e > end {
                break;
            }
            self.bytes -= b;
            self.entries.pop_front();
        }
    }
}

/// Token bucket over real time.
struct RateLimit {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(per_second: u64) -> Self {
        let per_second = per_second.max(1) as f64;
        RateLimit {
            per_second,
            tokens: Self::burst(per_second),
            last: Instant::now(),
        }
    }
    fn burst(per_second: f64) -> f64 {
        (per_second / 10.0).max(1.0)
    }
    /// Takes `n` records once `min(n, burst)` tokens are there (a store
    /// larger than the burst goes into debt, which later calls pay), else
    /// says how long to wait.
    fn take(&mut self, n: u64) -> Option<Duration> {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let burst = Self::burst(self.per_second);
        self.tokens = (self.tokens + dt * self.per_second).min(burst);
        let need = (n as f64).min(burst);
        if self.tokens >= need {
            self.tokens -= n as f64;
            None
        } else {
            Some(Duration::from_secs_f64(
                (need - self.tokens) / self.per_second,
            ))
        }
    }
}

/// What one receiver-fed stream shares between its receiver, the engine's
/// [`crate::source::WalSource`] (through [`OnRelease`]) and the context.
pub(crate) struct StreamShared {
    name: String,
    wal: Arc<Wal>,
    backlog_bytes_max: u64,
    backlog: Mutex<Backlog>,
    changed: Condvar,
    stopping: AtomicBool,
    scheduler: OnceLock<Weak<Scheduler>>,
    hook: Mutex<Option<Arc<ReleaseHook>>>,
    rate: Mutex<Option<RateLimit>>,
    stored_records: AtomicU64,
    health: ReceiverHealth,
}

impl StreamShared {
    pub(crate) fn new(
        name: &str,
        wal: Arc<Wal>,
        backlog_bytes_max: u64,
        records_per_second_max: Option<u64>,
    ) -> Arc<Self> {
        Arc::new(StreamShared {
            name: name.to_string(),
            wal,
            backlog_bytes_max,
            backlog: Mutex::new(Backlog::default()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            scheduler: OnceLock::new(),
            hook: Mutex::new(None),
            rate: Mutex::new(records_per_second_max.map(RateLimit::new)),
            stored_records: AtomicU64::new(0),
            health: ReceiverHealth::default(),
        })
    }

    fn backlog(&self) -> std::sync::MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The receiver's state, last error and records stored now.
    pub(crate) fn health(&self) -> HealthSnapshot {
        self.health
            .snapshot(self.stored_records.load(Ordering::Relaxed))
    }

    /// Called by the context at `start()`.
    pub(crate) fn attach(&self, scheduler: &Arc<Scheduler>) {
        let _ = self.scheduler.set(Arc::downgrade(scheduler));
    }

    /// Asks the receiver to stop and wakes every waiting `store`.
    pub(crate) fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _g = self.backlog();
        self.changed.notify_all();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
            || self
                .scheduler
                .get()
                .is_some_and(|w| w.upgrade().is_none_or(|s| s.is_finished()))
    }

    fn release(&self, end: u64) {
        let mut b = self.backlog();
        b.release(end);
        self.changed.notify_all();
    }
}

/// Handed to a receiver: where its records go. Cheap to clone.
#[derive(Clone)]
pub struct ReceiverContext {
    shared: Arc<StreamShared>,
}

impl std::fmt::Debug for ReceiverContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverContext")
            .field("stream", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl ReceiverContext {
    pub(crate) fn new(shared: Arc<StreamShared>) -> Self {
        ReceiverContext { shared }
    }

    /// Appends `records` to the stream's WAL as one append. First waits
    /// while the backlog is at or above `backlog_bytes_max` and for the rate
    /// limit; returns only after the records are durable (fsynced), with
    /// the LSN range they got (empty for no records, without waiting).
    /// Returns [`ReceiverError::Stopping`] if the context stops while
    /// waiting (nothing of this call was stored).
    pub fn store(&self, records: &[&[u8]]) -> Result<Range<u64>, ReceiverError> {
        let s = &self.shared;
        if records.is_empty() {
            let end = s.wal.end();
            return Ok(end..end);
        }
        loop {
            if s.is_stopping() {
                return Err(ReceiverError::Stopping);
            }
            if self.wait_backlog_below(STOP_POLL) {
                break;
            }
        }
        loop {
            let wait = match s.rate.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                Some(r) => r.take(records.len() as u64),
                None => None,
            };
            match wait {
                None => break,
                Some(d) => {
                    if s.is_stopping() {
                        return Err(ReceiverError::Stopping);
                    }
                    std::thread::sleep(d.min(STOP_POLL));
                }
            }
        }
        let range = s.wal.append(records).map_err(|e| ReceiverError::Wal {
            stream: s.name.clone(),
            source: e,
        })?;
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        s.backlog().add(range.end, bytes);
        s.stored_records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(range)
    }

    /// True while the backlog (record bytes not yet in a committed batch) is
    /// at or above the maximum: socket receivers stop reading until it drops.
    pub fn backlog_full(&self) -> bool {
        self.shared.backlog().total() >= self.shared.backlog_bytes_max
    }

    /// The current backlog in bytes: records not yet in a committed batch,
    /// plus finished segments below the committed position that could not
    /// be deleted yet.
    pub fn backlog_bytes(&self) -> u64 {
        self.shared.backlog().total()
    }

    /// Waits (at most `timeout`, less if the context stops) until the
    /// backlog is below the maximum; returns whether it is.
    pub fn wait_backlog_below(&self, timeout: Duration) -> bool {
        let s = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut b = s.backlog();
        loop {
            if b.total() < s.backlog_bytes_max {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || s.is_stopping() {
                return false;
            }
            b = s
                .changed
                .wait_timeout(b, (deadline - now).min(STOP_POLL))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether the context is stopping (or processing stopped on an error):
    /// the receiver should return from `run`.
    pub fn is_stopping(&self) -> bool {
        self.shared.is_stopping()
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.shared.name
    }

    /// The stream's WAL (e.g. to scan it at start to rebuild what a
    /// receiver already logged).
    pub fn wal(&self) -> &Arc<Wal> {
        &self.shared.wal
    }

    /// Records stored through this stream's contexts since it was created.
    pub fn stored_records(&self) -> u64 {
        self.shared.stored_records.load(Ordering::Relaxed)
    }

    /// Says what the receiver is doing now (the status page's state), and
    /// its last error in words when `error` is given (kept until the next
    /// one).
    pub fn set_state(&self, state: ReceiverState, error: Option<&str>) {
        self.shared.health.set(state, error);
    }

    /// Replaces the rate limit of this stream (records per second; `None`:
    /// unlimited). A receiver applies its own configuration with it.
    pub fn set_records_per_second_max(&self, max: Option<u64>) {
        *self.shared.rate.lock().unwrap_or_else(|e| e.into_inner()) = max.map(RateLimit::new);
    }

    /// Registers a hook called by the source's `release(end)` after the
    /// batch commit is durable and before WAL segments below `end` are
    /// deleted. It returns how far deletion may go: `end` when everything
    /// below `end` is safe to drop, less when the hook has not (yet) saved
    /// what the records below `end` taught it. The bound is the hook's
    /// answer, not a second look at the segment list, so a segment roll
    /// between the hook and the deletion cannot delete records the hook
    /// did not cover. If it returns `Err`, no segments are deleted this
    /// time (retried at the next release). Replaces an earlier hook.
    pub fn set_release_hook(&self, hook: ReleaseHook) {
        *self.shared.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }
}

/// Decodes a record as UTF-8 text.
pub fn utf8(bytes: &[u8]) -> Result<String, BoxError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| -> BoxError { format!("record is not valid UTF-8 ({e})").into() })
}

impl OnRelease for StreamShared {
    /// Releases the backlog up to `end`, then runs the release hook (if
    /// any): how far the source may delete segments.
    fn on_release(&self, end: u64) -> Option<u64> {
        self.release(end);
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(hook) = hook else {
            return Some(end);
        };
        match hook(end) {
            Ok(safe) => Some(safe),
            Err(e) => {
                tracing::warn!(
                    stream = %self.name,
                    error = %e,
                    "the receiver's release hook failed; WAL segments are kept and cleanup is retried after the next batch"
                );
                None
            }
        }
    }

    fn kept(&self, bytes: u64) {
        let mut b = self.backlog();
        let less = bytes < b.kept;
        b.kept = bytes;
        if less {
            self.changed.notify_all();
        }
    }
}

/// Sleeps `d` in slices; true if the context stops meanwhile.
pub(crate) fn sleep_unless_stopping(ctx: &ReceiverContext, d: Duration) -> bool {
    let deadline = std::time::Instant::now() + d;
    loop {
        if ctx.is_stopping() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(STOP_POLL));
    }
}

/// Runs `receiver` on its own thread; an error stops the context through
/// `fail`.
pub(crate) fn spawn(
    receiver: Box<dyn Receiver>,
    shared: Arc<StreamShared>,
    fail: impl Fn(ReceiverError) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = shared.name.clone();
    std::thread::Builder::new()
        .name(format!("weir-recv-{name}"))
        .spawn(move || {
            let ctx = ReceiverContext::new(shared);
            ctx.set_state(ReceiverState::Running, None);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                receiver.run(ctx.clone())
            }));
            let message = match result {
                Ok(Ok(())) => return ctx.set_state(ReceiverState::Stopped, None),
                Ok(Err(e)) => {
                    let stopping = matches!(
                        e.downcast_ref::<ReceiverError>(),
                        Some(ReceiverError::Stopping)
                    );
                    if stopping && ctx.is_stopping() {
                        return ctx.set_state(ReceiverState::Stopped, None);
                    }
                    e.to_string()
                }
                Err(p) => format!("panicked: {}", crate::scheduler::panic_message(&*p)),
            };
            ctx.set_state(ReceiverState::Failed, Some(&message));
            tracing::error!(stream = %name, error = %message, "receiver failed; stopping the streaming context");
            fail(ReceiverError::Failed {
                stream: name,
                message,
            });
        })
}
