//! `write_atomic`: the crate's durable whole-file write, used by receivers
//! (the directory receiver's progress file, the ingest producer snapshot)
//! and sinks (batch output files) alike.
//!
//! Protocol (the same on every [`Storage`]): write the bytes to a temp file
//! `.<name>.tmp` beside the target, fsync it, rename it over the target,
//! fsync the directory. A crash leaves the old file or the new one, never a
//! mix; a stale temp file from an earlier crash is replaced.
//!
//! Failpoints: [`ATOMIC_FILE_RENAME`] fires after the temp file is durable
//! and before the rename, on every atomic write;
//! [`write_atomic_with_failpoint`] passes a caller's point at that same step
//! first (the text-file sinks pass `sink_write`), so arming a sink's point
//! never breaks a receiver's file.
//!
//! Limits: one whole file in memory (the caller's `bytes`); the temp name
//! adds 5 bytes to the file name.
//! Must never: leave the target partly written, report success before the
//! directory fsync returned, or interpret the bytes it writes.

use std::io;
use std::path::{Path, PathBuf};

use super::Storage;

/// The failpoint inside every atomic write: after the temp file is
/// durable, before the rename.
pub const ATOMIC_FILE_RENAME: &str = "atomic_file_rename";

/// An atomic write that did not complete: the target holds its old
/// contents (or does not exist).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtomicWriteError {
    /// A file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A crash test's failpoint fired before the rename.
    #[error(transparent)]
    Crashed(#[from] crate::failpoint::Crash),
}

/// Writes `bytes` to `path` atomically through `storage`: a temp file in
/// the same directory, fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> Result<(), AtomicWriteError> {
    write_atomic_steps(storage, path, bytes, None)
}

/// [`write_atomic`] that also passes the failpoint `point` right before
/// [`ATOMIC_FILE_RENAME`] (the sinks' `sink_write`).
pub fn write_atomic_with_failpoint(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
    point: &'static str,
) -> Result<(), AtomicWriteError> {
    write_atomic_steps(storage, path, bytes, Some(point))
}

fn write_atomic_steps(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
    point: Option<&'static str>,
) -> Result<(), AtomicWriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    storage
        .create_dir_all(&dir)
        .map_err(io_error("create directory", &dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    write_durable_temp(storage, &tmp, bytes)?;
    if let Some(point) = point {
        crate::failpoint::hit(point)?;
    }
    crate::failpoint::hit(ATOMIC_FILE_RENAME)?;
    storage
        .rename(&tmp, path)
        .map_err(io_error("rename into", path))?;
    storage
        .sync_dir(&dir)
        .map_err(io_error("fsync directory", &dir))?;
    Ok(())
}

/// Creates `tmp` afresh (replacing a stale one), writes `bytes`, fsyncs.
fn write_durable_temp(
    storage: &dyn Storage,
    tmp: &Path,
    bytes: &[u8],
) -> Result<(), AtomicWriteError> {
    let mut file = match storage.create_new(tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            storage.remove(tmp).map_err(io_error("create", tmp))?;
            storage.create_new(tmp)
        }
        other => other,
    }
    .map_err(io_error("create", tmp))?;
    file.append(bytes).map_err(io_error("write", tmp))?;
    file.sync_all().map_err(io_error("fsync", tmp))?;
    Ok(())
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AtomicWriteError {
    let path = path.to_path_buf();
    move |source| AtomicWriteError::Io { op, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{Fault, SimFs, Tear};

    fn fs_with_dir() -> (SimFs, PathBuf) {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("create /d");
        (fs, PathBuf::from("/d/f"))
    }

    #[test]
    fn a_completed_write_survives_a_crash_and_leaves_no_temp_file() {
        let (fs, path) = fs_with_dir();
        write_atomic(&fs, &path, b"one").expect("first write");
        write_atomic(&fs, &path, b"two").expect("second write");
        fs.crash(Tear::None);
        assert_eq!(fs.durable_bytes(&path).as_deref(), Some(&b"two"[..]));
        assert_eq!(fs.list(Path::new("/d")).expect("list"), vec!["f"]);
    }

    #[test]
    fn a_stale_temp_file_is_replaced() {
        let (fs, path) = fs_with_dir();
        let mut stale = fs.create_new(Path::new("/d/.f.tmp")).expect("temp");
        stale.append(b"garbage from a crash").expect("append");
        drop(stale);
        write_atomic(&fs, &path, b"new").expect("write");
        assert_eq!(fs.live_bytes(&path).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn a_failed_fsync_names_the_step_and_keeps_the_old_file() {
        let (fs, path) = fs_with_dir();
        write_atomic(&fs, &path, b"old").expect("write");
        fs.set_fault(Fault::FailSync(1));
        let e = write_atomic(&fs, &path, b"new").expect_err("fsync fails");
        assert!(
            matches!(&e, AtomicWriteError::Io { op: "fsync", path, .. } if path.ends_with(".f.tmp")),
            "{e}"
        );
        assert_eq!(fs.live_bytes(&path).as_deref(), Some(&b"old"[..]));
    }

    #[test]
    fn the_rename_is_durable_only_after_the_directory_fsync() {
        let (fs, path) = fs_with_dir();
        write_atomic(&fs, &path, b"old").expect("write");
        fs.set_fault(Fault::FailSyncDir(1));
        let e = write_atomic(&fs, &path, b"new").expect_err("dir fsync fails");
        assert!(
            matches!(
                &e,
                AtomicWriteError::Io {
                    op: "fsync directory",
                    ..
                }
            ),
            "{e}"
        );
        fs.crash(Tear::None);
        assert_eq!(fs.durable_bytes(&path).as_deref(), Some(&b"old"[..]));
    }
}
