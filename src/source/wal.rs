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
//! Limits: a read holds one record decoded at a time (decoded straight out
//! of the reader's buffer), whatever the batch size.
//! Must never: skip a record it cannot decode (the read fails naming the
//! LSN and the log's directory), delete segments at or above a position
//! not yet released, or delete any when the release hook refused.

use std::ops::Range;
use std::sync::Arc;

use crate::dstream::{BoxError, Source};
use crate::wal::Wal;

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
}

/// A [`Source`] reading from a [`Wal`]; see the module docs. The engine
/// reads with [`Source::read_each`], which decodes one record at a time
/// out of the reader's buffer.
pub struct WalSource<T> {
    wal: Arc<Wal>,
    decode: Decoder<T>,
    on_release: Option<Arc<dyn OnRelease>>,
}

impl<T> WalSource<T> {
    /// A source over `wal`, decoding each record with `decode`.
    pub fn new(wal: Arc<Wal>, decode: Decoder<T>) -> Self {
        WalSource {
            wal,
            decode,
            on_release: None,
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
        // the next release.
        let mut delete_below = end;
        if let Some(r) = &self.on_release {
            match r.on_release(end) {
                Some(safe) => delete_below = safe.min(end),
                None => return,
            }
        }
        if let Err(e) = self.wal.remove_segments_below(delete_below) {
            tracing::warn!(
                dir = %self.wal.dir().display(),
                error = %e,
                "could not delete WAL segments below the committed position; will retry after the next batch"
            );
        }
    }
}
