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
    #[error("ingest stream `{stream}`: {what}")]
    Config { stream: String, what: String },
    #[error("ingest stream `{stream}`: could not listen on {addr}: {source}")]
    Listen {
        stream: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest stream `{stream}`: reading {}: {source}", path.display())]
    SnapshotIo {
        stream: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest stream `{stream}`: {}: {source}; move it aside only if you accept that producers' old records may be stored again", path.display())]
    SnapshotCorrupt {
        stream: String,
        path: PathBuf,
        #[source]
        source: RecordError,
    },
    #[error("ingest stream `{stream}`: the WAL starts at record {first_lsn} but the producer table snapshot {} covers only records below {covered}: records were deleted without being reflected in it, so duplicates could not be recognised. Restore the snapshot from a backup, or move the WAL directory aside to start this stream afresh", path.display())]
    SnapshotBehind {
        stream: String,
        path: PathBuf,
        first_lsn: u64,
        covered: u64,
    },
    #[error("ingest stream `{stream}`: record {lsn} of its WAL is not an ingest record ({source}); is another stream using the name?")]
    NotIngest {
        stream: String,
        lsn: u64,
        #[source]
        source: RecordError,
    },
    #[error("ingest stream `{stream}`: saving the producer table: {source}")]
    SnapshotWrite {
        stream: String,
        #[source]
        source: AtomicWriteError,
    },
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
}
