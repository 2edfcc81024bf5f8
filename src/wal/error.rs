//! Errors of the WAL. Every corruption error names the file, the byte offset
//! and what was expected against what was found, and says what to do next.

use std::io;
use std::ops::Range;
use std::path::PathBuf;

use super::format::{FormatError, Lsn};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("WAL I/O error: could not {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "WAL corruption in {} at byte {offset}: {detail}. The log refuses to open rather than skip data; \
         run `weir wal verify {}` for a report and `weir wal repair {}` to move the damaged part aside",
        path.display(), dir.display(), dir.display()
    )]
    Corrupt {
        dir: PathBuf,
        path: PathBuf,
        offset: u64,
        detail: Corruption,
    },

    #[error("record of {bytes} bytes refused: the limit is record_bytes_max = {max} bytes")]
    RecordTooLarge { bytes: usize, max: u32 },

    #[error(
        "append of {records} records / {bytes} bytes refused: one append may carry at most \
         {records_max} records and {bytes_max} bytes; split it"
    )]
    AppendTooLarge {
        records: usize,
        bytes: usize,
        records_max: usize,
        bytes_max: usize,
    },

    #[error(
        "the WAL in {} stopped accepting appends after a failed {op}: {cause}. Unsynced data may be lost \
         from the page cache, so the log will not pretend it is durable; restart weir to recover from what is on disk",
        dir.display()
    )]
    Failed {
        dir: PathBuf,
        op: &'static str,
        cause: String,
    },

    #[error("the WAL in {} is closed", dir.display())]
    Closed { dir: PathBuf },

    #[error(
        "records {}..{} requested from the WAL in {}, but it holds {}..{} \
         (older segments were cleaned up, or the range is not yet acknowledged)",
        requested.start, requested.end, dir.display(), available.start, available.end
    )]
    OutOfRange {
        dir: PathBuf,
        requested: Range<Lsn>,
        available: Range<Lsn>,
    },

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
        expected_first: Lsn,
        found_first: Lsn,
    },
    /// A segment's file name and header disagree on its first record.
    NameMismatch { name_first: Lsn, header_first: Lsn },
    /// The seal's end number disagrees with the records counted.
    SealMismatch { counted_end: Lsn, seal_end: Lsn },
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
