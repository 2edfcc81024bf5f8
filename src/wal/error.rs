//! Errors of the WAL. Every corruption error names the file, the byte offset
//! and what was expected against what was found, and says what to do next.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use super::format::{FormatError, Lsn};
use super::marker::{MarkerDefect, MissingCause};

/// What can go wrong opening, appending to, reading, verifying or repairing
/// a write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A file system operation on a WAL file or directory failed.
    #[error("WAL I/O error: could not {op} {}: {source}", path.display())]
    Io {
        /// What was being done (e.g. `"fsync segment"`), a verb phrase.
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A segment fails a check that a torn tail cannot explain; the log
    /// refuses to open rather than skip records.
    #[error(
        "WAL corruption in {} at byte {offset}: {detail}. The log refuses to open rather than skip data; \
         run `weir wal verify {}` for a report, then restore the directory from a backup or run \
         `weir wal repair {}` to move the damaged part aside",
        path.display(), dir.display(), dir.display()
    )]
    Corrupt {
        /// The log's directory.
        dir: PathBuf,
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// What is wrong there.
        detail: Corruption,
    },

    /// An append carried a record over `record_bytes_max`; nothing of the
    /// append was written.
    #[error("record of {bytes} bytes refused: the limit is record_bytes_max = {max} bytes")]
    RecordTooLarge {
        /// The record's size, in bytes.
        bytes: usize,
        /// The log's `record_bytes_max`, in bytes.
        max: u32,
    },

    /// An append carried more records or payload bytes than one append may;
    /// nothing of it was written.
    #[error(
        "append of {records} records / {bytes} bytes refused: one append may carry at most \
         {records_max} records and {bytes_max} bytes; split it"
    )]
    AppendTooLarge {
        /// Records in the refused append.
        records: usize,
        /// Payload bytes in the refused append.
        bytes: usize,
        /// The log's `append_records_max`, in records.
        records_max: usize,
        /// The log's `append_bytes_max`, in bytes.
        bytes_max: usize,
    },

    /// An earlier write, fsync or segment creation failed, so the log
    /// accepts no more appends until it is reopened.
    #[error(
        "the WAL in {} stopped accepting appends after a failed {op}: {cause}. Unsynced data may be lost \
         from the page cache, so the log will not pretend it is durable; restart weir to recover from what is on disk",
        dir.display()
    )]
    Failed {
        /// The log's directory.
        dir: PathBuf,
        /// The step that failed: `"write"`, `"fsync"` or `"create segment"`.
        op: &'static str,
        /// The original error, as text.
        cause: String,
    },

    /// The log is shut down: its writer thread has exited (the log is being
    /// dropped) without a recorded failure, or a reader lost its segment.
    #[error("the WAL in {} is closed", dir.display())]
    Closed {
        /// The log's directory.
        dir: PathBuf,
    },

    /// A read asked for records outside `first_lsn()..end()` (or a range
    /// whose start is after its end).
    #[error(
        "records {}..{} requested from the WAL in {}, but it holds {}..{} \
         (older segments were cleaned up, or the range is not yet acknowledged)",
        requested.start, requested.end, dir.display(), available.start, available.end
    )]
    OutOfRange {
        /// The log's directory.
        dir: PathBuf,
        /// The LSNs asked for.
        requested: Range<Lsn>,
        /// The LSNs the log holds: `first_lsn()..end()`.
        available: Range<Lsn>,
    },

    /// Another process (or another open `Wal` in this one) holds the
    /// directory's lock: a log has one writer.
    #[error(
        "the WAL directory {} is in use by {holder} (lock file {}): a log has one writer. \
         Stop the weir that runs on it first (`weir wal verify` reads a log without the lock); \
         the lock is released when its process exits, even by SIGKILL",
        dir.display(), lock_file.display()
    )]
    Locked {
        /// The log's directory.
        dir: PathBuf,
        /// The lock file (`DIR/LOCK`).
        lock_file: PathBuf,
        /// Who holds it, as the lock file says.
        holder: crate::storage::LockHolder,
    },

    /// The `WalConfig` is invalid (the message names the limit), or opening
    /// found no segment to append to.
    #[error("invalid WAL configuration: {0}")]
    Config(String),
}

/// What exactly is wrong at a corrupt position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// A header or frame failed a check, and valid data follows it (so it is
    /// not a torn tail), or it is in a sealed segment.
    Frame(FormatError),
    /// A sealed (non-last) segment has no valid seal trailer.
    MissingSeal,
    /// A sealed segment has bytes after its seal.
    DataAfterSeal,
    /// Record numbers jump between two segments: a segment is missing.
    Gap {
        /// The LSN the previous segment ends before.
        expected_first: Lsn,
        /// The LSN the next segment starts at.
        found_first: Lsn,
    },
    /// A segment's file name and header disagree on its first record.
    NameMismatch {
        /// The first LSN the file name encodes.
        name_first: Lsn,
        /// The first LSN the segment header records.
        header_first: Lsn,
    },
    /// Records that the synced-end marker proves were fsynced (and so may
    /// have been acknowledged) are not in the log: damage, not a torn tail.
    AcknowledgedMissing {
        /// The missing records: from the log's intact end to the marker's.
        missing: Range<Lsn>,
        /// What is wrong where they should be.
        cause: MissingCause,
    },
    /// The synced-end marker file itself fails its checks.
    Marker(MarkerDefect),
    /// The seal's end number disagrees with the records counted.
    SealMismatch {
        /// One past the last record found in the segment.
        counted_end: Lsn,
        /// One past the last record, as the seal states it.
        seal_end: Lsn,
    },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Frame(e) => write!(f, "{e}"),
            Corruption::MissingSeal => write!(
                f,
                "a finished segment has no valid seal trailer (expected one in the last 16 bytes)"
            ),
            Corruption::DataAfterSeal => write!(f, "bytes follow the seal trailer"),
            Corruption::AcknowledgedMissing { missing, cause } => write!(
                f,
                "records {}..{} are missing: they were fsynced and may have been acknowledged \
                 (the synced-end marker says the log held records up to {}), but {cause}; \
                 this is damage, not a torn write",
                missing.start, missing.end, missing.end
            ),
            Corruption::Marker(d) => write!(
                f,
                "the synced-end marker fails its check ({d}); `weir wal repair` rewrites it from the log"
            ),
            Corruption::Gap {
                expected_first,
                found_first,
            } => write!(
                f,
                "gap in record numbers: expected the next segment to start at {expected_first}, found {found_first} (a segment is missing)"
            ),
            Corruption::NameMismatch {
                name_first,
                header_first,
            } => write!(
                f,
                "file name says the segment starts at record {name_first}, its header says {header_first}"
            ),
            Corruption::SealMismatch {
                counted_end,
                seal_end,
            } => write!(
                f,
                "seal says the segment ends before record {seal_end}, but its records end before {counted_end}"
            ),
        }
    }
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
