//! `SimFs`: a simulated, in-memory filesystem implementing [`Storage`], used
//! only by crash tests. It must never be used in production: nothing it holds
//! ever reaches a disk.
//!
//! # What it owns
//! All simulated files and directories live inside one `Arc<Mutex<_>>`, so a
//! [`SimFs`] is cheap to clone and every clone (and every [`SimFile`] handle)
//! sees the same filesystem.
//!
//! # What it models
//! - Every file (inode) has a *live* image (what reads see; the page cache)
//!   and a *durable* image (what survives power loss). [`StorageFile::append`]
//!   and [`StorageFile::truncate`] change the live image only;
//!   [`StorageFile::sync_data`] copies live to durable, length included.
//! - Every directory has live and durable entries. `create_new`, `remove` and
//!   `rename` change live entries only; [`Storage::sync_dir`] copies the
//!   directory's live entries to its durable entries. A rename across
//!   directories is durable on each side only after `sync_dir` of that side
//!   (so a crash may show the file in both directories, or in neither).
//!   Directories themselves are durable as soon as `create_dir_all` returns.
//! - [`SimFs::crash`] is a power loss: directories fall back to their durable
//!   entries, files no longer referenced vanish, every file falls back to its
//!   durable image, optionally keeping a torn, sector-aligned prefix of an
//!   unsynced append (see [`Tear`]), with at most [`ZERO_TAIL_BYTES_MAX`]
//!   zero bytes at its end. Handles opened before the crash fail
//!   every operation afterwards: the process that held them is dead.
//! - A failed `sync_data` (see [`Fault`]) leaves the durable image unchanged
//!   and, like Linux after an fsync error, forgets the dirty bytes: they stay
//!   readable in the live image, but a later successful `sync_data` of the
//!   same file writes zeros (or the old durable bytes) in their place. A
//!   caller that retries as if nothing happened is therefore caught.
//! - Directory locks ([`Storage::try_lock`]): a table of locked paths;
//!   a crash clears it (the holders died), as the kernel drops `flock`s.
//! - Fault injection ([`Fault`]) and helpers for corruption tests and fsync
//!   assertions (`live_bytes`, `durable_bytes`, `flip_bit`, counters).
//!
//! # What it deliberately does not model
//! - Reordering of unsynced writes within a file: a torn crash keeps a
//!   *prefix* of an unsynced append, never a later sector without an earlier
//!   one, and never garbage other than the optional zero-filled sector.
//! - Unsynced rewrites: a file that was truncated since its last sync falls
//!   back to its durable image exactly.
//! - Directory metadata, permissions, timestamps, symlinks, hard links,
//!   `..` resolution, free space, and renaming or removing directories.
//! - Unsynced directory entries never survive a crash, even though a real
//!   filesystem might persist them anyway (the pessimistic choice).
//!
//! Files: `mod.rs` ([`SimFs`], faults, the shared state), `inode.rs`
//! (directories and inodes: live and durable images, what a crash or a
//! failed sync does to them), `file.rs` ([`SimFile`]), `tests.rs`.
//!
//! Paths are plain keys compared component-wise (`a//b` equals `a/b`); the
//! parent of a path is `path.parent()`. The roots `/` and `` (the parent of a
//! relative single-component path) exist from the start.

mod file;
mod inode;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use file::SimFile;
use inode::{Dir, Entry, Ino, Inode};

use super::{DirLock, LockAttempt, LockHolder, Storage, StorageFile};

/// The most zero bytes a simulated crash leaves at the end of a file's
/// unsynced part (a zero-filled torn sector, or bytes a failed fsync
/// dropped): one 512-byte sector. weir's fault model: a longer zero run at
/// the end of a WAL segment is damage, not a torn write (issue 13), so the
/// simulator does not produce one from a crash.
pub const ZERO_TAIL_BYTES_MAX: usize = 512;

/// How [`SimFs::crash`] treats unsynced appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tear {
    /// Nothing unsynced survives: every file falls back to exactly its
    /// durable image.
    None,
    /// A file whose only change since its last sync is an append (its live
    /// image is its durable image followed by more bytes) keeps its durable
    /// image plus a pseudo-random prefix of the unsynced bytes. The prefix
    /// ends at a file offset that is a multiple of `sector_bytes` (or at the
    /// durable length, i.e. nothing kept, or at the live length, i.e.
    /// everything kept, the last partial sector having been written whole).
    /// Every other file falls back to its durable image exactly. Whatever
    /// survives is durable afterwards.
    Sectors {
        /// Sector size, typically 512 or 4096. `0` is treated as `1`.
        sector_bytes: u64,
        /// Seed of the cut choice; the same seed and the same history give
        /// the same result.
        seed: u64,
        /// If `true`, the torn sector (from the cut to the next sector
        /// boundary, capped at the live length) survives as zeros instead
        /// of being dropped: the filesystem extended the file before the
        /// data landed.
        zero_fill: bool,
    },
}

/// A fault to inject with [`SimFs::set_fault`].
///
/// Counts start at the `set_fault` call and are 1-based: `FailSync(1)` fails
/// the very next `sync_data` (of any file). `0` behaves like `1`. An
/// operation counts once its arguments are valid (live handle, existing
/// parent directory, and so on); a call that fails because of a fault still
/// counts, so `FailSync(1)` and `FailSync(3)` together fail the first and the
/// third sync. Failed operations return an `io::Error` of kind `Other` whose
/// message names the fault. Faults are cleared by [`SimFs::clear_faults`] and
/// by [`SimFs::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The `n`th next `sync_data` fails; later ones succeed. The durable
    /// image is unchanged and the file's dirty bytes are forgotten (see the
    /// module docs).
    FailSync(u64),
    /// The `n`th next `sync_data` and every one after it fail.
    FailSyncFrom(u64),
    /// The `nth` next `append` fails after writing the first `keep` bytes of
    /// its buffer to the live image (a short write; `0` writes nothing,
    /// values beyond the buffer length write all of it and still fail).
    FailAppend {
        /// Which append fails (1-based).
        nth: u64,
        /// How many bytes of the buffer land before the failure.
        keep: usize,
    },
    /// The `n`th next `sync_dir` fails; the directory's durable entries are
    /// unchanged.
    FailSyncDir(u64),
    /// The `n`th next `create_new` fails; no entry is created.
    FailCreateNew(u64),
    /// The `n`th next `remove` and every one after it fail; the entry
    /// stays (a file the process may not delete).
    FailRemoveFrom(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SyncData,
    Append,
    SyncDir,
    CreateNew,
    Remove,
}

impl Fault {
    fn op(self) -> Op {
        match self {
            Fault::FailSync(_) | Fault::FailSyncFrom(_) => Op::SyncData,
            Fault::FailAppend { .. } => Op::Append,
            Fault::FailSyncDir(_) => Op::SyncDir,
            Fault::FailCreateNew(_) => Op::CreateNew,
            Fault::FailRemoveFrom(_) => Op::Remove,
        }
    }

    fn nth(self) -> u64 {
        let n = match self {
            Fault::FailSync(n)
            | Fault::FailSyncFrom(n)
            | Fault::FailSyncDir(n)
            | Fault::FailCreateNew(n)
            | Fault::FailRemoveFrom(n) => n,
            Fault::FailAppend { nth, .. } => nth,
        };
        n.max(1)
    }

    fn sticky(self) -> bool {
        matches!(self, Fault::FailSyncFrom(_) | Fault::FailRemoveFrom(_))
    }

    fn error(self) -> io::Error {
        io::Error::other(format!("simulated fault {self:?}"))
    }
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    seen: u64,
}

#[derive(Debug, Default)]
struct State {
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<Ino, Inode>,
    next_ino: Ino,
    generation: u64,
    crashes: u64,
    syncs: u64,
    dir_syncs: u64,
    faults: Vec<Armed>,
    faults_fired: u64,
    /// Locked directories and the id of the lock holding each; a crash
    /// (which kills every holder) clears them.
    locks: BTreeMap<PathBuf, u64>,
    next_lock_id: u64,
}

impl State {
    /// Counts one `op` against every armed fault and returns the fault that
    /// fires, if any (for appends, the one keeping the fewest bytes).
    fn tick(&mut self, op: Op) -> Option<Fault> {
        let mut fired: Option<Fault> = None;
        for armed in self.faults.iter_mut().filter(|a| a.fault.op() == op) {
            armed.seen = armed.seen.saturating_add(1);
            let n = armed.fault.nth();
            let fires = if armed.fault.sticky() {
                armed.seen >= n
            } else {
                armed.seen == n
            };
            if !fires {
                continue;
            }
            fired = match (fired, armed.fault) {
                (Some(Fault::FailAppend { nth, keep: a }), Fault::FailAppend { keep: b, .. }) => {
                    Some(Fault::FailAppend {
                        nth,
                        keep: a.min(b),
                    })
                }
                (Some(f), _) => Some(f),
                (None, f) => Some(f),
            };
        }
        if fired.is_some() {
            self.faults_fired += 1;
        }
        fired
    }

    /// Drops inodes referenced by no directory entry and no open handle.
    fn collect_garbage(&mut self) {
        let mut referenced = BTreeSet::new();
        for dir in self.dirs.values() {
            for entry in dir.live.values().chain(dir.durable.values()) {
                if let Entry::File(ino) = entry {
                    referenced.insert(*ino);
                }
            }
        }
        self.inodes
            .retain(|ino, inode| inode.open_handles > 0 || referenced.contains(ino));
    }

    fn dir(&self, dir: &Path) -> io::Result<&Dir> {
        self.dirs
            .get(dir)
            .ok_or_else(|| not_found(dir, "no such directory"))
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| not_found(dir, "no such directory"))
    }

    /// The inode a live entry `path` names.
    fn live_file(&self, path: &Path) -> io::Result<Ino> {
        let (parent, name) = split(path)?;
        match self.dir(parent)?.live.get(&name) {
            Some(Entry::File(ino)) => Ok(*ino),
            Some(Entry::Dir) => Err(invalid(path, "is a directory")),
            None => Err(not_found(path, "no such file")),
        }
    }

    fn inode_mut(&mut self, ino: Ino) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::other(format!("simulated inode {ino} vanished")))
    }

    fn names(dir: &BTreeMap<String, Entry>) -> Vec<String> {
        dir.keys().cloned().collect()
    }
}

fn not_found(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: {what}", path.display()),
    )
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {what}", path.display()),
    )
}

/// Splits `path` into its parent directory and its (UTF-8) file name.
fn split(path: &Path) -> io::Result<(&Path, String)> {
    let parent = path
        .parent()
        .ok_or_else(|| invalid(path, "has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| invalid(path, "has no file name"))?
        .to_str()
        .ok_or_else(|| invalid(path, "file name is not UTF-8"))?;
    Ok((parent, name.to_owned()))
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().expect("SimFs state mutex poisoned")
}

/// A simulated filesystem for crash tests; see the module docs.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SimFs");
        match self.state.try_lock() {
            Ok(st) => d
                .field("dirs", &st.dirs.len())
                .field("inodes", &st.inodes.len())
                .field("crashes", &st.crashes)
                .field("syncs", &st.syncs)
                .field("dir_syncs", &st.dir_syncs)
                .field("faults", &st.faults.len()),
            Err(_) => d.field("state", &"<locked>"),
        };
        d.finish()
    }
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty filesystem holding only the roots `/` and ``.
    pub fn new() -> Self {
        let mut state = State::default();
        state.dirs.insert(PathBuf::from("/"), Dir::default());
        state.dirs.insert(PathBuf::new(), Dir::default());
        SimFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn handle(&self, st: &mut State, ino: Ino, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        st.inode_mut(ino)?.open_handles += 1;
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            generation: st.generation,
            path: path.to_path_buf(),
        }))
    }

    /// Simulates power loss (see [`Tear`]). Afterwards every directory holds
    /// its durable entries, every file its durable image (plus a torn
    /// prefix, which is then durable too), handles opened before fail every
    /// operation, and all faults are cleared.
    pub fn crash(&self, tear: Tear) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.generation += 1;
        st.crashes += 1;
        st.faults.clear();
        st.locks.clear();
        for dir in st.dirs.values_mut() {
            dir.live = dir.durable.clone();
        }
        for inode in st.inodes.values_mut() {
            inode.open_handles = 0;
        }
        st.collect_garbage();
        for (ino, inode) in st.inodes.iter_mut() {
            inode.crash(tear, *ino);
        }
    }

    /// Arms `fault` (in addition to those already armed).
    pub fn set_fault(&self, fault: Fault) {
        self.lock().faults.push(Armed { fault, seen: 0 });
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many times an armed fault has made an operation fail.
    pub fn faults_fired(&self) -> u64 {
        self.lock().faults_fired
    }

    /// How many times [`SimFs::crash`] ran.
    pub fn crash_count(&self) -> u64 {
        self.lock().crashes
    }

    /// How many `sync_data` calls on live handles there were, failed ones
    /// included.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// How many `sync_dir` calls on existing directories there were, failed
    /// ones included.
    pub fn dir_sync_count(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// The live image of the file a live entry `path` names (what a read
    /// sees now), or `None` if there is no such file.
    pub fn live_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.live_file(path).ok()?;
        st.inodes.get(&ino).map(|inode| inode.live.clone())
    }

    /// The durable image of the file a *durable* entry `path` names (what a
    /// crash with [`Tear::None`] would leave there), or `None` if no file
    /// would be there.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let (parent, name) = split(path).ok()?;
        match st.dirs.get(parent)?.durable.get(&name)? {
            Entry::File(ino) => st.inodes.get(ino).map(|inode| inode.durable.clone()),
            Entry::Dir => None,
        }
    }

    /// Durable entry names of `dir` (what [`Storage::list`] would return
    /// after a crash), sorted.
    pub fn list_durable(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(State::names(&self.lock().dir(dir)?.durable))
    }

    /// Bit rot: overwrites `bytes` at `offset` in the file `path` names. The
    /// range must lie within the live image; the part of it that lies within
    /// the durable image is overwritten there too.
    pub fn write_live_bytes(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let ino = st.live_file(path)?;
        let inode = st.inode_mut(ino)?;
        let start = usize::try_from(offset).map_err(|_| invalid(path, "offset too large"))?;
        let end = start
            .checked_add(bytes.len())
            .filter(|&end| end <= inode.live.len())
            .ok_or_else(|| invalid(path, "range beyond the end of the file"))?;
        inode.live[start..end].copy_from_slice(bytes);
        let durable_end = end.min(inode.durable.len());
        if start < durable_end {
            inode.durable[start..durable_end].copy_from_slice(&bytes[..durable_end - start]);
        }
        Ok(())
    }

    /// Bit rot: flips bit `bit` (0..8, 0 = least significant) of the byte at
    /// `byte_offset` of the file `path` names, in the live image and, if the
    /// offset lies within it, in the durable image.
    pub fn flip_bit(&self, path: &Path, byte_offset: u64, bit: u8) -> io::Result<()> {
        if bit >= 8 {
            return Err(invalid(path, "bit index must be below 8"));
        }
        let mut st = self.lock();
        let ino = st.live_file(path)?;
        let inode = st.inode_mut(ino)?;
        let at = usize::try_from(byte_offset)
            .ok()
            .filter(|&at| at < inode.live.len())
            .ok_or_else(|| invalid(path, "offset beyond the end of the file"))?;
        let mask = 1u8 << bit;
        inode.live[at] ^= mask;
        if let Some(byte) = inode.durable.get_mut(at) {
            *byte ^= mask;
        }
        Ok(())
    }
}

impl Storage for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let ancestors: Vec<&Path> = dir.ancestors().collect();
        for path in ancestors.into_iter().rev() {
            if st.dirs.contains_key(path) {
                continue;
            }
            let (parent, name) = split(path)?;
            let parent_dir = st.dir_mut(parent)?;
            if let Some(Entry::File(_)) = parent_dir.live.get(&name) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: exists and is a file", path.display()),
                ));
            }
            parent_dir.live.insert(name.clone(), Entry::Dir);
            parent_dir.durable.insert(name, Entry::Dir);
            st.dirs.insert(path.to_path_buf(), Dir::default());
        }
        st.collect_garbage();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        match st.dirs.get(dir) {
            Some(d) => Ok(State::names(&d.live)),
            None if st.live_file(dir).is_ok() => Err(invalid(dir, "not a directory")),
            None => Err(not_found(dir, "no such directory")),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.lock();
        if st.dirs.contains_key(path) {
            return Ok(true);
        }
        let Ok((parent, name)) = split(path) else {
            return Ok(false);
        };
        Ok(st
            .dirs
            .get(parent)
            .is_some_and(|d| d.live.contains_key(&name)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let (parent, name) = split(path)?;
        let mut st = self.lock();
        if st.dir(parent)?.live.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: already exists", path.display()),
            ));
        }
        if let Some(fault) = st.tick(Op::CreateNew) {
            return Err(fault.error());
        }
        let ino = st.next_ino;
        st.next_ino += 1;
        st.inodes.insert(ino, Inode::default());
        st.dir_mut(parent)?.live.insert(name, Entry::File(ino));
        self.handle(&mut st, ino, path)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut st = self.lock();
        let ino = st.live_file(path)?;
        self.handle(&mut st, ino, path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let mut st = self.lock();
        if let Some(f) = st.tick(Op::Remove) {
            return Err(f.error());
        }
        let dir = st.dir_mut(parent)?;
        match dir.live.get(&name) {
            Some(Entry::File(_)) => {
                dir.live.remove(&name);
            }
            Some(Entry::Dir) => return Err(invalid(path, "is a directory")),
            None => return Err(not_found(path, "no such file")),
        }
        st.collect_garbage();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let mut st = self.lock();
        let ino = match st.dir(from_dir)?.live.get(&from_name) {
            Some(Entry::File(ino)) => *ino,
            Some(Entry::Dir) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{}: SimFs cannot rename directories", from.display()),
                ))
            }
            None => return Err(not_found(from, "no such file")),
        };
        match st.dir(to_dir)?.live.get(&to_name) {
            Some(Entry::Dir) => return Err(invalid(to, "is a directory")),
            // Renaming a file onto itself does nothing (POSIX).
            Some(Entry::File(target)) if *target == ino => return Ok(()),
            _ => {}
        }
        st.dir_mut(from_dir)?.live.remove(&from_name);
        st.dir_mut(to_dir)?.live.insert(to_name, Entry::File(ino));
        st.collect_garbage();
        Ok(())
    }

    fn try_lock(&self, dir: &Path) -> io::Result<LockAttempt> {
        let mut st = self.lock();
        st.dir(dir)?;
        if st.locks.contains_key(dir) {
            return Ok(LockAttempt::Held(LockHolder(Some(std::process::id()))));
        }
        st.next_lock_id += 1;
        let id = st.next_lock_id;
        st.locks.insert(dir.to_path_buf(), id);
        let held = SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
            id,
        };
        Ok(LockAttempt::Acquired(DirLock::new(
            dir.join(super::LOCK_FILE),
            Box::new(held),
        )))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.dir(dir)?;
        st.dir_syncs += 1;
        if let Some(fault) = st.tick(Op::SyncDir) {
            return Err(fault.error());
        }
        let d = st.dir_mut(dir)?;
        d.durable = d.live.clone();
        st.collect_garbage();
        Ok(())
    }
}

/// A held [`SimFs`] lock: released on drop, unless a crash already did
/// (and a later holder took it).
struct SimLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    id: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.locks.get(&self.dir) == Some(&self.id) {
            st.locks.remove(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests;
