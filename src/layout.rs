//! The data directory's layout: every path weir derives under `DATA_DIR`,
//! built here and nowhere else. `docs/data-dir.md` is the map (which
//! writer, how written, which reader) and the argument why no two kinds of
//! file can collide.
//!
//! ```text
//! DATA_DIR/
//!   LOCK                         the running weir's lock (flock; its pid)
//!   checkpoint/                  sled: batch lineage, state, kv tables
//!   wal/<stream>/                a stream's write-ahead log (segments)
//!   wal/<stream>/IDENTITY        the data directory id the log belongs to
//!   wal/<stream>.producers       an ingest stream's producer table
//!   receivers/<stream>.progress  a directory stream's progress file
//!   dead-letter/batch-<ms>.jsonl records steps dead-lettered, per batch
//!   sql/<step>.<input>.schema.json  a SQL step's inferred columns
//! ```
//!
//! Stream names pass [`crate::names::validate_stream_name`] before a path
//! is built from them: no `.`, so `<stream>` (a directory) and
//! `<stream>.<suffix>` (a file) never meet, and no name is a temporary
//! file (those start with `.`).
//!
//! Limits: a path is the data directory plus at most two components of at
//! most [`crate::names::STREAM_NAME_BYTES_MAX`] + 10 bytes.
//! Must never: do I/O, or change a path an existing data directory uses
//! (data directories written by earlier versions must keep opening).

use std::path::{Component, Path, PathBuf};

/// The checkpoint store's directory (sled).
const CHECKPOINT_DIR: &str = "checkpoint";
/// The parent of every stream's write-ahead log.
const WAL_DIR: &str = "wal";
/// The parent of the receivers' own files.
const RECEIVERS_DIR: &str = "receivers";
/// The identity file inside a stream's log directory.
const IDENTITY_FILE: &str = "IDENTITY";
/// Records the pipeline's steps dead-lettered, one file per batch.
const DEAD_LETTER_DIR: &str = "dead-letter";
/// SQL steps' inferred columns (`crate::sql`).
const SQL_DIR: &str = "sql";
/// Suffix of an ingest stream's producer table, beside its log.
const PRODUCERS_SUFFIX: &str = "producers";
/// Suffix of a directory stream's progress file.
const PROGRESS_SUFFIX: &str = "progress";
/// The entries of the data directory that belong to weir itself.
pub const RESERVED: [&str; 5] = [CHECKPOINT_DIR, WAL_DIR, RECEIVERS_DIR, DEAD_LETTER_DIR, SQL_DIR];

/// `DATA_DIR/LOCK`: the data directory's lock file (`storage::try_lock`).
pub fn data_dir_lock(data_dir: &Path) -> PathBuf {
    data_dir.join(crate::storage::LOCK_FILE)
}

/// `DATA_DIR/checkpoint`.
pub fn checkpoint_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(CHECKPOINT_DIR)
}

/// `DATA_DIR/wal`: one directory per stream, plus the streams' sidecar
/// files.
pub fn wal_root(data_dir: &Path) -> PathBuf {
    data_dir.join(WAL_DIR)
}

/// `DATA_DIR/wal/<stream>`: the stream's write-ahead log.
pub fn wal_dir(data_dir: &Path, stream: &str) -> PathBuf {
    debug_assert_valid(stream);
    wal_root(data_dir).join(stream)
}

/// `<log>/IDENTITY`: the data directory id inside a stream's log
/// directory (`log` is a [`wal_dir`]). Not a segment name, so the log
/// itself ignores it.
pub fn log_identity(log: &Path) -> PathBuf {
    log.join(IDENTITY_FILE)
}

/// `DATA_DIR/wal/<stream>.producers`: an ingest stream's producer table
/// (the same path as "the log's directory name plus `.producers`").
pub fn producers_snapshot(data_dir: &Path, stream: &str) -> PathBuf {
    debug_assert_valid(stream);
    wal_root(data_dir).join(format!("{stream}.{PRODUCERS_SUFFIX}"))
}

/// `DATA_DIR/dead-letter`: the dead-letter log (`crate::sink::DeadLetterLog`).
pub fn dead_letter_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DEAD_LETTER_DIR)
}

/// `DATA_DIR/sql`: SQL steps keep the columns they inferred here, one
/// file `<step>.<input>.schema.json` each (`crate::sql::schema_file`).
pub fn sql_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(SQL_DIR)
}

/// `DATA_DIR/receivers`.
pub fn receivers_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(RECEIVERS_DIR)
}

/// `DATA_DIR/receivers/<stream>.progress`: a directory stream's progress
/// file.
pub fn dir_progress(data_dir: &Path, stream: &str) -> PathBuf {
    debug_assert_valid(stream);
    receivers_dir(data_dir).join(format!("{stream}.{PROGRESS_SUFFIX}"))
}

/// Which of weir's own entries a file written at `relative` (a path under
/// the data directory, e.g. a sink's prefix) would land inside, if any:
/// its first component is one of [`RESERVED`] and more components follow.
/// A path leaving the data directory (`..`) or absolute is not judged here.
pub fn inside_reserved(relative: &Path) -> Option<&'static str> {
    let mut parts = relative.components().filter(|c| *c != Component::CurDir);
    let Some(Component::Normal(first)) = parts.next() else {
        return None;
    };
    parts.next()?;
    RESERVED.into_iter().find(|r| first == *r)
}

/// Paths are built from validated names only (the context checks first).
fn debug_assert_valid(stream: &str) {
    debug_assert!(
        crate::names::validate_stream_name(stream).is_ok(),
        "a path built from an unchecked stream name: {stream}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_those_existing_data_directories_use() {
        let d = Path::new("/data");
        assert_eq!(checkpoint_dir(d), Path::new("/data/checkpoint"));
        assert_eq!(wal_dir(d, "in"), Path::new("/data/wal/in"));
        assert_eq!(
            producers_snapshot(d, "in"),
            Path::new("/data/wal/in.producers")
        );
        assert_eq!(
            dir_progress(d, "files"),
            Path::new("/data/receivers/files.progress")
        );
        // The ingest server derived its snapshot from the log's directory:
        // the same file.
        let wal = wal_dir(d, "in");
        let mut beside = wal.file_name().unwrap_or_default().to_os_string();
        beside.push(".producers");
        assert_eq!(wal.with_file_name(beside), producers_snapshot(d, "in"));
    }

    #[test]
    fn no_stream_directory_is_another_streams_sidecar_file() {
        // Every valid name: no `.`, so never `<other>.<suffix>`.
        for name in ["a", "a-producers", "a_progress", "producers"] {
            assert!(crate::names::validate_stream_name(name).is_ok());
            let d = Path::new("/d");
            for other in ["a", "producers"] {
                assert_ne!(wal_dir(d, name), producers_snapshot(d, other));
            }
        }
        assert!(crate::names::validate_stream_name("a.producers").is_err());
    }

    #[test]
    fn sink_prefixes_inside_weirs_own_directories_are_found() {
        for (p, want) in [
            ("checkpoint/out", Some("checkpoint")),
            ("./wal/x/y", Some("wal")),
            ("receivers/p", Some("receivers")),
            ("sql/p", Some("sql")),
            ("wal", None),
            ("out/counts", None),
            ("walrus/x", None),
            ("../wal/x", None),
        ] {
            assert_eq!(inside_reserved(Path::new(p)), want, "{p}");
        }
    }
}
