//! [`IngestError`]: what can go wrong setting up an ingest stream,
//! recovering its producer table, or saving the table's snapshot. Wire
//! problems of one connection are not errors of the stream: they close that
//! connection with an ERROR frame ([`super::proto::ProtoError`]).
//!
//! Limits: none. Must never: print a path or producer id in Rust `Debug`
//! form, or lose the file and stream a problem is about.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::records::RecordError;
use crate::storage::AtomicWriteError;

/// Errors of the ingest server (setup, recovery, snapshot).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The `IngestConfig` is invalid: limits inconsistent with each other
    /// or with the stream's WAL, a zero count or timeout.
    #[error("ingest stream `{stream}`: {what}")]
    Config {
        /// The stream's name.
        stream: String,
        /// Which setting is wrong and why.
        what: String,
    },
    /// Binding the listening socket, or reading its bound address, failed.
    #[error("ingest stream `{stream}`: could not listen on {addr}: {source}")]
    Listen {
        /// The stream's name.
        stream: String,
        /// The address from the configuration.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The producer table snapshot exists but could not be read.
    #[error("ingest stream `{stream}`: reading {}: {source}", path.display())]
    SnapshotIo {
        /// The stream's name.
        stream: String,
        /// The snapshot file, `DATA_DIR/wal/<name>.producers`.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// The producer table snapshot's bytes are not a valid snapshot (bad
    /// magic, truncated, CRC mismatch, too many entries).
    #[error("ingest stream `{stream}`: {}: {source}; move it aside only if you accept that producers' old records may be stored again", path.display())]
    SnapshotCorrupt {
        /// The stream's name.
        stream: String,
        /// The snapshot file, `DATA_DIR/wal/<name>.producers`.
        path: PathBuf,
        /// What is wrong with its bytes.
        #[source]
        source: RecordError,
    },
    /// WAL records were deleted that the producer table snapshot does not
    /// cover (or there is no snapshot), so re-sent records could not be
    /// recognised as duplicates; the stream refuses to start.
    #[error("ingest stream `{stream}`: the WAL starts at record {first_lsn} but the producer table snapshot {} covers only records below {covered}: records were deleted without being reflected in it, so duplicates could not be recognised. Restore the snapshot from a backup, or move the WAL directory aside to start this stream afresh", path.display())]
    SnapshotBehind {
        /// The stream's name.
        stream: String,
        /// The snapshot file, `DATA_DIR/wal/<name>.producers`.
        path: PathBuf,
        /// LSN of the WAL's first retained record.
        first_lsn: u64,
        /// The LSN below which the snapshot covers every record (0 without
        /// a snapshot).
        covered: u64,
    },
    /// A record in the stream's WAL lacks the ingest stored-record header:
    /// the WAL was written by something other than an ingest stream.
    #[error("ingest stream `{stream}`: record {lsn} of its WAL is not an ingest record ({source}); is another stream using the name?")]
    NotIngest {
        /// The stream's name.
        stream: String,
        /// LSN of the offending WAL record.
        lsn: u64,
        /// Why its header does not decode.
        #[source]
        source: RecordError,
    },
    /// Writing the producer table snapshot (before WAL segments are
    /// deleted) failed; the segments are kept.
    #[error("ingest stream `{stream}`: saving the producer table: {source}")]
    SnapshotWrite {
        /// The stream's name.
        stream: String,
        /// The atomic write's failure.
        #[source]
        source: AtomicWriteError,
    },
    /// Opening, reading or scanning the stream's WAL failed.
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
}
