//! Errors of the checkpoint: [`CheckpointError`], one variant per kind of
//! failure, so that callers (and messages) can tell a full disk from a
//! damaged value, a held lock or a store written by a newer weir.
//!
//! Every damaged-value error names the store directory and the key (in a
//! printable form, at most 64 bytes of it shown), and says what was wrong:
//! the codec's reason, the bucket byte offset, or the field with the value
//! found and the value expected ([`Damage`]).
//!
//! Limits: none (values only). Must never: render a message in Rust
//! `Debug` form, or carry a catch-all `String` variant.

use std::fmt;
use std::path::{Path, PathBuf};

use super::buckets::BucketError;
use super::records::show_key;
use crate::codec::CodecError;

/// Errors of a checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Batches must be allocated in increasing time order.
    #[error("batch {time_ms} ms allocated after batch {last_ms} ms")]
    OutOfOrder {
        /// The batch being allocated.
        time_ms: u64,
        /// The last allocated batch.
        last_ms: u64,
    },
    /// Commit of a batch that was never allocated (or already completed).
    #[error("batch {time_ms} ms is not pending")]
    NotPending {
        /// The batch time.
        time_ms: u64,
    },
    /// State could not be encoded.
    #[error("encoding state of operator `{op}`: {source}")]
    Encode {
        /// Operator name.
        op: String,
        /// Codec error.
        source: CodecError,
    },
    /// A checkpoint record (batch, pipeline, bucket addressing, format)
    /// could not be encoded, so nothing was written.
    #[error("checkpoint store: could not encode the value for key {key}: {source}")]
    EncodeRecord {
        /// The key the value was for, printable.
        key: String,
        /// Codec error.
        source: CodecError,
    },
    /// The database could not be read, written, flushed or opened.
    #[error(
        "could not {op} {}: {source}; check the disk and permissions, then restart",
        path.display()
    )]
    Io {
        /// What was being done, in words ("commit a batch to").
        op: &'static str,
        /// The store directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// Another process (or a context in this one) holds the database.
    #[error(
        "could not open the checkpoint store in {}: another process (or another context in this one) \
         has it open, and it was still locked after waiting {} ms",
        dir.display(), wait_ms
    )]
    LockHeld {
        /// The store directory.
        dir: PathBuf,
        /// How long the open waited for the lock, ms.
        wait_ms: u64,
    },
    /// A stored value does not decode, or decodes to something impossible.
    #[error(
        "checkpoint store {}: the value under key {key} {detail}; the store is damaged or from another version",
        store.display()
    )]
    Damaged {
        /// The store directory.
        store: PathBuf,
        /// The key, printable: ASCII graphic bytes as they are, others as
        /// `.`, at most 64 bytes, with its length.
        key: String,
        /// What is wrong with the value.
        detail: Damage,
    },
    /// A key does not have the shape its prefix calls for.
    #[error(
        "checkpoint store {}: malformed key {key} (expected {expected}); the store is damaged",
        store.display()
    )]
    MalformedKey {
        /// The store directory.
        store: PathBuf,
        /// The key, printable.
        key: String,
        /// What should follow the prefix, in words.
        expected: &'static str,
    },
    /// The store was written by a newer weir.
    #[error(
        "checkpoint store {} has format version {found}; this build reads versions 1 and {supported} \
         (it was written by a newer weir): run that weir, or start on a new data directory",
        store.display()
    )]
    NewerFormat {
        /// The store directory.
        store: PathBuf,
        /// The version the store records.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// sled found its files damaged (for example a truncated database).
    #[error(
        "the checkpoint store in {} is damaged: sled found corrupted data{} while trying to {op} it. \
         weir cannot use it. {RECOVERY}",
        store.display(), offset.map_or_else(String::new, |o| format!(" at file offset {o}"))
    )]
    Corrupt {
        /// The store directory.
        store: PathBuf,
        /// What was being done, in words ("open the checkpoint store in").
        op: &'static str,
        /// Where in sled's log the damage was found, if sled says.
        offset: Option<u64>,
    },
    /// sled panicked on the store's files (caught; it happens on some
    /// damaged databases instead of an error).
    #[error(
        "the checkpoint store in {} is damaged: sled failed while trying to {op} it ({panic}). \
         weir cannot use it. {RECOVERY}",
        store.display()
    )]
    Panicked {
        /// The store directory.
        store: PathBuf,
        /// What was being done, in words.
        op: &'static str,
        /// sled's panic message.
        panic: String,
    },
    /// The store's files exist but hold nothing, not even its format
    /// record (which every store writes at its first open).
    #[error(
        "the checkpoint store in {} is empty, but its files exist: its database file was truncated \
         or replaced (a store records its format at its first open). {RECOVERY}; if weir never \
         completed a first start on this directory, remove {} and start again",
        store.display(), store.display()
    )]
    Emptied {
        /// The store directory.
        store: PathBuf,
    },
    /// A read of one key kept meeting commits that re-addressed the
    /// operator's buckets, and gave up.
    #[error(
        "checkpoint store {}: reading a key of `{op}` gave up after {attempts} attempts, each \
         overtaken by a commit that split its buckets; try again (the pipeline is writing \
         this table faster than it can be read)",
        store.display()
    )]
    ReadUnstable {
        /// The store directory.
        store: PathBuf,
        /// The operator (or `kv:<table>`).
        op: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An operator name too long to be a key (its length is a u16).
    #[error("operator name of {len} bytes exceeds the limit of 65535: `{start}...`")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
        /// The name's first characters (about 40 bytes).
        start: String,
    },
    /// The rebuilt pipeline cannot use the checkpoint's state.
    #[error(
        "the pipeline no longer matches its checkpoint in {store}: {}. Ways out: undo the change; \
         or start from an empty data directory; or, to drop one operator's state and keep the rest, \
         run `weir checkpoint reset-operator DIR NAME` (library: `SledCheckpointStore::reset_operator`)",
        changes.join("; ")
    )]
    Incompatible {
        /// Where the checkpoint is.
        store: String,
        /// One sentence per change, naming the operator.
        changes: Vec<String>,
    },
}

/// What exactly is wrong with a damaged value.
#[derive(Debug)]
#[non_exhaustive]
pub enum Damage {
    /// The bytes are not an encoding of the record the key calls for.
    Codec(CodecError),
    /// A state bucket breaks its byte layout (the offset is inside).
    Bucket(BucketError),
    /// The record decodes, but one of its fields is impossible.
    Field {
        /// Which field, in words ("batch time").
        field: &'static str,
        /// The value found.
        found: String,
        /// What a sound store holds there.
        expected: String,
    },
}

impl Damage {
    /// The byte offset inside the value where the damage was found, when
    /// the decoder knows it.
    pub fn offset(&self) -> Option<usize> {
        match self {
            Damage::Bucket(e) => Some(e.offset),
            Damage::Codec(_) | Damage::Field { .. } => None,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Codec(e) => write!(f, "does not decode ({e})"),
            Damage::Bucket(e) => write!(f, "does not decode ({e})"),
            Damage::Field {
                field,
                found,
                expected,
            } => write!(
                f,
                "is impossible: its {field} is {found}, expected {expected}"
            ),
        }
    }
}

/// The ways out of a damaged checkpoint, in every such message.
const RECOVERY: &str = "Ways out: stop weir and restore the checkpoint directory from its backup \
     (taken together with the input logs beside it); or start on a new data directory";

impl CheckpointError {
    /// A failed sled call on the store in `path`; sled's corruption
    /// reports become [`CheckpointError::Corrupt`].
    pub(crate) fn io(op: &'static str, path: &Path, source: sled::Error) -> Self {
        match source {
            sled::Error::Corruption { at, .. } => CheckpointError::Corrupt {
                store: path.to_path_buf(),
                op,
                offset: at.map(|p| p.lid()),
            },
            sled::Error::ReportableBug(_) => CheckpointError::Corrupt {
                store: path.to_path_buf(),
                op,
                offset: None,
            },
            source => CheckpointError::Io {
                op,
                path: path.to_path_buf(),
                source,
            },
        }
    }

    /// The value under `key` of the store in `store` is damaged.
    pub(crate) fn damaged(store: &Path, key: &[u8], detail: Damage) -> Self {
        CheckpointError::Damaged {
            store: store.to_path_buf(),
            key: show_key(key),
            detail,
        }
    }

    /// The value under `key` has an impossible field.
    pub(crate) fn bad_field(
        store: &Path,
        key: &[u8],
        field: &'static str,
        found: impl fmt::Display,
        expected: impl fmt::Display,
    ) -> Self {
        Self::damaged(
            store,
            key,
            Damage::Field {
                field,
                found: found.to_string(),
                expected: expected.to_string(),
            },
        )
    }

    /// `key` of the store in `store` lacks what should follow its prefix.
    pub(crate) fn malformed_key(store: &Path, key: &[u8], expected: &'static str) -> Self {
        CheckpointError::MalformedKey {
            store: store.to_path_buf(),
            key: show_key(key),
            expected,
        }
    }
}
