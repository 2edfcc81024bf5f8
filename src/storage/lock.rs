//! Directory locks: one writer per WAL directory and per data directory.
//!
//! A lock is an advisory, exclusive `flock(2)` on a file named `LOCK` in
//! the directory, taken without waiting and held by an open file
//! description for as long as the [`DirLock`] lives. The kernel drops it
//! when the holder exits, however it dies (SIGKILL included), so a stale
//! lock never outlives its process and never needs cleaning up. The
//! holder writes its pid into the file, for the error message only: the
//! lock is the `flock`, never the file's content or existence.
//!
//! Why beside the [`Storage`] trait and through it: what is locked is a
//! directory of that storage, so [`Storage::try_lock`] does the locking
//! (`RealFs`: `flock`; `SimFs`: a table of held paths that a simulated
//! crash clears, since a crash kills the holder).
//!
//! Within one process, the directories this process holds are also kept
//! in a table: a second lock of one of them is refused at once (`flock`
//! would refuse it too: its locks belong to the open file description,
//! not the process). The table also tells a real holder from a copy: a
//! child process that this process is starting (fork, then exec) holds a
//! copy of every descriptor until its exec closes them, so for that
//! moment a lock this process just released still looks held by this
//! pid. Such a lock (the file names our pid, the table says we do not
//! hold it) is tried again for up to [`INHERITED_LOCK_WAIT_MS`].
//!
//! Limits: one `LOCK` file per locked directory, at most 32 bytes (`pid
//! N\n`); a lock held by a starting child is waited for at most
//! [`INHERITED_LOCK_WAIT_MS`] (2 s), polled every 5 ms.
//! Must never: block on another holder (a lock held by anyone else is an
//! error at once), delete the lock
//! file (removing it while held would let a second process lock a new
//! file of the same name), or claim the pid is authoritative.

use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = "LOCK";

/// Longest wait for a lock that only a child process being started holds
/// (a copy of this process's descriptor between fork and exec).
pub const INHERITED_LOCK_WAIT_MS: u64 = 2000;

/// Lock files this process holds through `flock_dir`.
static HELD_HERE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn held_here() -> std::sync::MutexGuard<'static, Option<HashSet<PathBuf>>> {
    HELD_HERE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A held lock; dropping it releases the lock.
pub struct DirLock {
    path: PathBuf,
    _held: Box<dyn std::any::Any + Send + Sync>,
}

impl fmt::Debug for DirLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirLock").field("path", &self.path).finish()
    }
}

impl DirLock {
    /// A lock on `path` held as long as `held` lives.
    pub fn new(path: PathBuf, held: Box<dyn std::any::Any + Send + Sync>) -> DirLock {
        DirLock { path, _held: held }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds a lock, as far as the lock file says: for messages only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder(pub Option<u32>);

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) if pid == std::process::id() => {
                write!(f, "this process (pid {pid}: it is open here already)")
            }
            Some(pid) => write!(f, "another process (pid {pid}, from the lock file)"),
            None => write!(f, "another process"),
        }
    }
}

/// What [`crate::storage::Storage::try_lock`] found.
#[derive(Debug)]
pub enum LockAttempt {
    /// The lock is ours until the [`DirLock`] is dropped.
    Acquired(DirLock),
    /// Someone else holds it.
    Held(LockHolder),
}

/// The pid a lock file names (`pid N`), if it names one.
pub fn parse_holder(content: &[u8]) -> LockHolder {
    let text = String::from_utf8_lossy(content);
    LockHolder(
        text.trim()
            .strip_prefix("pid ")
            .and_then(|p| p.trim().parse().ok()),
    )
}

/// What a holder writes into its lock file.
pub fn holder_line() -> String {
    format!("pid {}\n", std::process::id())
}

/// `RealFs`'s lock: `flock(LOCK_EX | LOCK_NB)` on `dir/LOCK`; a lock
/// that only a starting child of this process holds is tried again for up
/// to [`INHERITED_LOCK_WAIT_MS`].
pub(super) fn flock_dir(dir: &Path) -> io::Result<LockAttempt> {
    let path = dir.join(LOCK_FILE);
    let key = std::fs::canonicalize(dir).map_or_else(|_| path.clone(), |d| d.join(LOCK_FILE));
    let deadline = Instant::now() + Duration::from_millis(INHERITED_LOCK_WAIT_MS);
    loop {
        let mut held = held_here();
        let table = held.get_or_insert_with(HashSet::new);
        if table.contains(&key) {
            return Ok(LockAttempt::Held(LockHolder(Some(std::process::id()))));
        }
        match flock_once(&path)? {
            Flock::Acquired(file) => {
                table.insert(key.clone());
                return Ok(LockAttempt::Acquired(DirLock::new(
                    path,
                    Box::new(LockedFile {
                        file: Some(file),
                        key,
                    }),
                )));
            }
            // Our pid, but not in the table: a child's inherited copy.
            Flock::Held(holder)
                if holder.0 == Some(std::process::id()) && Instant::now() < deadline =>
            {
                drop(held);
                std::thread::sleep(Duration::from_millis(5));
            }
            Flock::Held(holder) => return Ok(LockAttempt::Held(holder)),
        }
    }
}

enum Flock {
    Acquired(File),
    Held(LockHolder),
}

/// One non-blocking `flock` of `path`; the holder written in on success.
fn flock_once(path: &Path) -> io::Result<Flock> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock takes a file descriptor that `file` owns and keeps
    // open for the duration of the call; it touches no memory of ours.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            let mut content = Vec::with_capacity(32);
            // Informational: an unreadable file just names no pid.
            let _ = Read::by_ref(&mut file).take(32).read_to_end(&mut content);
            return Ok(Flock::Held(parse_holder(&content)));
        }
        return Err(e);
    }
    // Ours now: name the holder (not synced; the flock is the lock).
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(holder_line().as_bytes())?;
    Ok(Flock::Acquired(file))
}

/// Keeps the locked file open (closing it releases the `flock`) and its
/// entry in this process's table.
struct LockedFile {
    file: Option<File>,
    key: PathBuf,
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        // Closed first: once out of the table, a new lock must find the
        // flock free (or held only by a starting child's copy).
        drop(self.file.take());
        if let Some(table) = held_here().as_mut() {
            let was_held = table.remove(&self.key);
            debug_assert!(was_held, "a held lock is in the table");
        }
    }
}
