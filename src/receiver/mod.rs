//! Sources whose records come from a write-ahead log.
//!
//! [`WalSource`] exposes one [`Wal`] to the engine as a [`Source`]:
//! positions are the log's record numbers (LSNs), a batch is cut at the
//! log's acknowledged end, and a batch's range is re-read from the log
//! exactly on replay. When the scheduler releases a position (after the
//! batch's commit is durable), the source lets the log delete every finished
//! segment below it: windows keep their panes in the checkpoint, so no
//! committed record is needed again.
//!
//! Limits: one read holds the decoded records of one batch partition in
//! memory (bounded by the scheduler's `batch_records_max`).
//! Must never: fsync on its own (appends go through the WAL's group commit),
//! or skip a record it cannot decode (the batch fails, naming the LSN).

pub mod feed;
pub mod ingest_proto;

use std::ops::Range;
use std::sync::Arc;

use crate::dstream::{BoxError, Source};
use crate::wal::Wal;

/// Turns a record's bytes into a typed record.
pub type Decoder<T> = Arc<dyn Fn(&[u8]) -> Result<T, BoxError> + Send + Sync>;

/// A [`Source`] reading from a [`Wal`]; see the module docs.
pub struct WalSource<T> {
    wal: Arc<Wal>,
    decode: Decoder<T>,
}

impl<T> WalSource<T> {
    pub fn new(wal: Arc<Wal>, decode: Decoder<T>) -> Self {
        WalSource { wal, decode }
    }

    /// The log this source reads.
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }
}

/// Decodes a record as UTF-8 text.
pub fn utf8(bytes: &[u8]) -> Result<String, BoxError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|e| -> BoxError { format!("record is not valid UTF-8 ({e})").into() })
}

impl<T: Send + 'static> Source<T> for WalSource<T> {
    fn available_end(&self) -> u64 {
        self.wal.end()
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<T>, BoxError> {
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
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
            out.push(v);
        }
        Ok(out)
    }

    fn release(&self, end: u64) {
        // Only called after the batch's commit is durable (checkpoint
        // before cleanup). A failed cleanup loses nothing: it is retried at
        // the next release.
        if let Err(e) = self.wal.remove_segments_below(end) {
            tracing::warn!(
                dir = %self.wal.dir().display(),
                error = %e,
                "could not delete WAL segments below the committed position; will retry after the next batch"
            );
        }
    }
}
