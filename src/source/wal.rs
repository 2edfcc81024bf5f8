//! [`WalSource`]: the engine's view of a write-ahead log. Positions are
//! the log's record numbers (LSNs), a batch is cut at the log's
//! acknowledged end, and a batch's range is re-read from the log exactly
//! on replay.
//!
//! Release: when the scheduler releases a position (after the batch's
//! commit is durable), the source first tells its [`OnRelease`] (a
//! receiver-fed stream releases its backlog and runs its release hook
//! there), then lets the log delete every finished segment below the
//! smaller of the released position and what the hook allowed. Windows keep
//! their panes in the checkpoint, so no committed record is needed again.
//!
//! Segments below the released position that stay on disk (a failed
//! deletion, or a hook that held them back) are reported to the
//! [`OnRelease`] after every release, so a receiver's backlog keeps
//! counting their bytes and backpressure sees the disk they hold.
//!
//! Limits: a read holds one record decoded at a time (decoded straight out
//! of the reader's buffer), whatever the batch size; a failing deletion is
//! logged at most once per [`REMOVAL_WARN_INTERVAL`] (60 s) after its first.
//! Must never: skip a record it cannot decode (the read fails naming the
//! LSN and the log's directory), delete segments at or above a position
//! not yet released, or delete any when the release hook refused.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::dstream::{BoxError, Source};
use crate::wal::Wal;

/// The shortest time between two log lines about failing deletions.
pub const REMOVAL_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Turns a record's bytes into a typed record.
pub type Decoder<T> = Arc<dyn Fn(&[u8]) -> Result<T, BoxError> + Send + Sync>;

/// Told when a [`WalSource`]'s position is released, before any segment is
/// deleted (a receiver-fed stream: backlog release, then the release hook).
pub(crate) trait OnRelease: Send + Sync {
    /// Called after the commit up to `end` is durable. Returns the
    /// position below which segments may be deleted (the source uses the
    /// smaller of it and `end`), or `None` to keep every segment this time
    /// (cleanup is retried at the next release).
    fn on_release(&self, end: u64) -> Option<u64>;

    /// Told after each release how many bytes of finished segments wholly
    /// below the released position are still on disk (a deletion failed or
    /// the hook held it back): a backlog keeps counting them.
    fn kept(&self, bytes: u64);
}

/// A [`Source`] reading from a [`Wal`]; see the module docs. The engine
/// reads with [`Source::read_each`], which decodes one record at a time
/// out of the reader's buffer.
pub struct WalSource<T> {
    wal: Arc<Wal>,
    decode: Decoder<T>,
    on_release: Option<Arc<dyn OnRelease>>,
    /// Whether the last deletion failed.
    failing: AtomicBool,
    /// When a failing deletion was last logged.
    last_warn: Mutex<Option<Instant>>,
}

impl<T> WalSource<T> {
    /// A source over `wal`, decoding each record with `decode`.
    pub fn new(wal: Arc<Wal>, decode: Decoder<T>) -> Self {
        WalSource {
            wal,
            decode,
            on_release: None,
            failing: AtomicBool::new(false),
            last_warn: Mutex::new(None),
        }
    }

    /// A source whose releases go through `on_release` first (a
    /// receiver-fed stream).
    pub(crate) fn with_release(
        wal: Arc<Wal>,
        decode: Decoder<T>,
        on_release: Arc<dyn OnRelease>,
    ) -> Self {
        WalSource {
            wal,
            decode,
            on_release: Some(on_release),
            failing: AtomicBool::new(false),
            last_warn: Mutex::new(None),
        }
    }

    /// The log this source reads.
    #[cfg(any(test, feature = "testing"))]
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }
}

impl<T: Send + 'static> Source<T> for WalSource<T> {
    fn available_end(&self) -> u64 {
        self.wal.end()
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<T>, BoxError> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        self.read_each(range, &mut |v| {
            out.push(v);
            true
        })?;
        Ok(out)
    }

    fn read_each(&self, range: Range<u64>, f: &mut dyn FnMut(T) -> bool) -> Result<(), BoxError> {
        // Decoded straight out of the reader's buffer: one record at a time
        // is alive here, whatever the batch size.
        let mut reader = self.wal.read(range)?;
        while let Some(r) = reader.next_ref() {
            let (lsn, bytes) = r?;
            let v = (self.decode)(bytes).map_err(|e| -> BoxError {
                format!(
                    "record {lsn} of the WAL in {}: {e}",
                    self.wal.dir().display()
                )
                .into()
            })?;
            if !f(v) {
                break;
            }
        }
        Ok(())
    }

    fn release(&self, end: u64) {
        // Only called after the batch's commit is durable (checkpoint
        // before cleanup). A failed cleanup loses nothing: it is retried at
        // the next release, and the bytes it kept count in the backlog.
        let mut delete_below = Some(end);
        if let Some(r) = &self.on_release {
            delete_below = r.on_release(end).map(|safe| safe.min(end));
        }
        if let Some(below) = delete_below {
            match self.wal.remove_segments_below(below) {
                Ok(_) => self.failing.store(false, Ordering::Relaxed),
                Err(e) => self.warn_removal(&e),
            }
        }
        let kept = self.wal.kept_bytes_below(end);
        if let Some(r) = &self.on_release {
            r.kept(kept);
        }
    }
}

impl<T> WalSource<T> {
    /// Logs a failed deletion: the first of a run of failures, then at
    /// most one line per [`REMOVAL_WARN_INTERVAL`] (a batch a second
    /// would otherwise log a line a second).
    fn warn_removal(&self, e: &crate::wal::WalError) {
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        let first = !self.failing.swap(true, Ordering::Relaxed);
        if first || last.is_none_or(|t| t.elapsed() >= REMOVAL_WARN_INTERVAL) {
            *last = Some(Instant::now());
            let st = self.wal.stats();
            tracing::warn!(
                dir = %self.wal.dir().display(),
                error = %e,
                failures = st.segment_removals_failed,
                "could not delete WAL segments below the committed position; they stay on disk, count in the backlog (input slows down when it is full) and deletion is retried after every batch: fix the permission or file system error"
            );
        }
    }
}

