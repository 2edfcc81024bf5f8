//! Storage: every file and directory operation that durability rests on
//! goes through the [`Storage`] / [`StorageFile`] traits: the WAL's
//! segments, and every whole file written with [`write_atomic`] (the
//! directory receiver's progress file, the ingest producer snapshot, the
//! sinks' batch files).
//!
//! Why a trait: crash safety is only testable if a test can decide what
//! survives a crash. Production uses [`RealFs`] (std::fs, `fdatasync` via
//! `File::sync_data`); tests use [`sim::SimFs`], which keeps a live and a
//! durable image and drops the unsynced part on `crash()`.
//!
//! Contract (what callers rely on, and what `SimFs` enforces):
//! - Data written with [`StorageFile::append`] is durable only after
//!   [`StorageFile::sync_data`] (or [`StorageFile::sync_all`]) on that file
//!   returns `Ok`.
//! - A created, removed or renamed directory entry is durable only after
//!   [`Storage::sync_dir`] on the parent directory returns `Ok`.
//! - [`StorageFile::truncate`] shortens the live file at once; the shorter
//!   length is durable after the next `sync_data`.
//! - After a failed `sync_data` nothing is known about what reached the disk
//!   (the kernel may have dropped the dirty pages): callers must not retry as
//!   if nothing happened.
//!
//! Files: `mod.rs` (the traits and [`RealFs`]), `atomic.rs`
//! ([`write_atomic`]: temp, fsync, rename, directory fsync), `lock.rs`
//! (directory locks: one writer per WAL or data directory), `sim/`
//! ([`sim::SimFs`], tests only).
//!
//! Limits: none of its own; [`Storage::read_all`] holds one whole file in
//! memory (callers read only files they wrote, of bounded size).
//! Must never: interpret the bytes it moves, or be bypassed by code whose
//! durability a crash test checks.

mod atomic;
mod lock;
#[cfg(any(test, feature = "testing"))]
pub mod sim;

#[cfg(any(test, feature = "testing"))]
pub use atomic::ATOMIC_FILE_RENAME;
pub use atomic::{write_atomic, write_atomic_with_failpoint, AtomicWriteError};
pub use lock::{DirLock, LockAttempt, LockHolder, LOCK_FILE};

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file opened through a [`Storage`].
pub trait StorageFile: Send + Sync + Debug {
    /// Current (live) length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Appends all of `buf` at the end of the file.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data (and its length) durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`). Whole-file
    /// writes use it; by default it is [`StorageFile::sync_data`].
    fn sync_all(&mut self) -> io::Result<()> {
        self.sync_data()
    }
    /// Shortens the file to `len` bytes.
    fn truncate(&mut self, len: u64) -> io::Result<()>;

    /// Fills `buf` from `offset`, failing with `UnexpectedEof` if the file
    /// ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended before the requested range",
                ));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A filesystem as the WAL and the atomic file writes see it.
pub trait Storage: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing. Directories are treated as
    /// durable once created (the WAL's parent is created by the operator or
    /// at first start, before any acknowledged record exists).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists (live view).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Creates a new empty file; fails with `AlreadyExists` if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file for reading and appending.
    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file (atomic replace of `to` if it exists).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries durable (creations, removals, renames).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock of the existing directory `dir` without
    /// waiting: held until the returned [`DirLock`] is dropped or its
    /// process dies; [`LockAttempt::Held`] if another holder has it
    /// (`lock.rs`).
    fn try_lock(&self, dir: &Path) -> io::Result<LockAttempt>;

    /// Reads the whole file `path` (live view); `NotFound` if it is absent.
    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.open(path)?;
        let len = usize::try_from(file.len()?).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "file too large to read whole")
        })?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// The production [`Storage`]: plain files.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl StorageFile for RealFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        loop {
            match FileExt::read_at(&self.file, buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        // The file is opened with O_APPEND, so every write lands at the end.
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

impl Storage for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(RealFile { file }))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(Box::new(RealFile { file }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, dir: &Path) -> io::Result<LockAttempt> {
        lock::flock_dir(dir)
    }

    fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
}
