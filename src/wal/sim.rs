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
//!   unsynced append (see [`Tear`]). Handles opened before the crash fail
//!   every operation afterwards: the process that held them is dead.
//! - A failed `sync_data` (see [`Fault`]) leaves the durable image unchanged
//!   and, like Linux after an fsync error, forgets the dirty bytes: they stay
//!   readable in the live image, but a later successful `sync_data` of the
//!   same file writes zeros (or the old durable bytes) in their place. A
//!   caller that retries as if nothing happened is therefore caught.
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
//! Paths are plain keys compared component-wise (`a//b` equals `a/b`); the
//! parent of a path is `path.parent()`. The roots `/` and `` (the parent of a
//! relative single-component path) exist from the start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::storage::{Storage, StorageFile};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SyncData,
    Append,
    SyncDir,
    CreateNew,
}

impl Fault {
    fn op(self) -> Op {
        match self {
            Fault::FailSync(_) | Fault::FailSyncFrom(_) => Op::SyncData,
            Fault::FailAppend { .. } => Op::Append,
            Fault::FailSyncDir(_) => Op::SyncDir,
            Fault::FailCreateNew(_) => Op::CreateNew,
        }
    }

    fn nth(self) -> u64 {
        let n = match self {
            Fault::FailSync(n)
            | Fault::FailSyncFrom(n)
            | Fault::FailSyncDir(n)
            | Fault::FailCreateNew(n) => n,
            Fault::FailAppend { nth, .. } => nth,
        };
        n.max(1)
    }

    fn sticky(self) -> bool {
        matches!(self, Fault::FailSyncFrom(_))
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

type Ino = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(Ino),
    Dir,
}

#[derive(Debug, Default)]
struct Dir {
    live: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Truncated (or extended by truncate) since the last sync: the change
    /// is not a pure append.
    rewritten: bool,
    /// Live byte range `[start, end)` whose dirty pages were dropped by a
    /// failed sync: it never reaches the durable image.
    lost: Option<(usize, usize)>,
    /// Handles of the current generation referencing this inode.
    open_handles: usize,
}

impl Inode {
    fn is_pure_extension(&self) -> bool {
        !self.rewritten
            && self.live.len() > self.durable.len()
            && self.live.starts_with(&self.durable)
    }

    /// A sync failed: the dirty bytes are forgotten.
    fn drop_dirty(&mut self) {
        if !self.rewritten && self.live == self.durable {
            return;
        }
        let start = if !self.rewritten && self.live.starts_with(&self.durable) {
            self.durable.len()
        } else {
            0
        };
        let end = self.live.len();
        let (start, end) = match self.lost {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        };
        self.lost = (start < end).then_some((start, end));
    }

    /// A sync succeeded: durable := live, except forgotten bytes.
    fn commit(&mut self) {
        let mut image = self.live.clone();
        if let Some((start, end)) = self.lost.take() {
            let end = end.min(image.len());
            for (i, byte) in image.iter_mut().enumerate().take(end).skip(start) {
                *byte = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        self.durable = image;
        self.rewritten = false;
    }

    fn clip_lost(&mut self) {
        let len = self.live.len();
        self.lost = self
            .lost
            .map(|(s, e)| (s, e.min(len)))
            .filter(|&(s, e)| s < e);
    }

    /// Power loss: what is on disk afterwards becomes both images.
    fn crash(&mut self, tear: Tear, ino: Ino) {
        let survived = match tear {
            Tear::Sectors {
                sector_bytes,
                seed,
                zero_fill,
            } if self.is_pure_extension() => {
                let mut rng = SplitMix64::new(seed ^ ino.wrapping_mul(0xA24B_AED4_963E_E407));
                let durable_len = self.durable.len() as u64;
                let live_len = self.live.len() as u64;
                let sector = sector_bytes.max(1);
                let cut = choose_cut(durable_len, live_len, sector, &mut rng);
                let end = if zero_fill {
                    (cut / sector + 1).saturating_mul(sector).min(live_len)
                } else {
                    cut
                };
                // cut <= end <= live_len, which is a usize.
                let (cut, end) = (cut as usize, end as usize);
                let mut image = self.live[..cut].to_vec();
                if let Some((s, e)) = self.lost {
                    let from = s.max(self.durable.len());
                    for byte in image.iter_mut().take(e).skip(from) {
                        *byte = 0;
                    }
                }
                image.resize(end, 0);
                image
            }
            _ => self.durable.clone(),
        };
        self.durable = survived;
        self.live = self.durable.clone();
        self.rewritten = false;
        self.lost = None;
        self.open_handles = 0;
    }
}

/// Picks the end of the surviving prefix of an unsynced append from
/// `durable_len` to `live_len` (`durable_len < live_len`): the durable
/// length, a sector boundary in between, or the live length, uniformly.
fn choose_cut(durable_len: u64, live_len: u64, sector: u64, rng: &mut SplitMix64) -> u64 {
    let first_boundary = (durable_len / sector + 1).saturating_mul(sector);
    let inner = if first_boundary < live_len {
        (live_len - 1 - first_boundary) / sector + 1
    } else {
        0
    };
    let choices = inner + 2;
    match rng.next_u64() % choices {
        0 => durable_len,
        i if i == choices - 1 => live_len,
        i => first_boundary + (i - 1) * sector,
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, deterministic, good enough.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
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

/// A handle on a [`SimFs`] file. It dies with the simulated process: after
/// [`SimFs::crash`] every operation on it fails.
pub struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("generation", &self.generation)
            .finish()
    }
}

impl SimFile {
    /// Locks the state and checks the handle survived every crash.
    fn live_state(&self) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.generation != self.generation {
            return Err(io::Error::other(format!(
                "{}: handle opened before a simulated crash",
                self.path.display()
            )));
        }
        Ok(st)
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        // Never panic in drop, even if another thread poisoned the mutex.
        let mut st = match self.state.lock() {
            Ok(st) => st,
            Err(poisoned) => poisoned.into_inner(),
        };
        if st.generation != self.generation {
            return;
        }
        if let Some(inode) = st.inodes.get_mut(&self.ino) {
            inode.open_handles = inode.open_handles.saturating_sub(1);
        }
        st.collect_garbage();
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        let mut st = self.live_state()?;
        Ok(st.inode_mut(self.ino)?.live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.live_state()?;
        let live = &st.inode_mut(self.ino)?.live;
        let Some(start) = usize::try_from(offset).ok().filter(|&s| s < live.len()) else {
            return Ok(0);
        };
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.live_state()?;
        let fault = st.tick(Op::Append);
        let inode = st.inode_mut(self.ino)?;
        match fault {
            Some(fault @ Fault::FailAppend { keep, .. }) => {
                inode.live.extend_from_slice(&buf[..keep.min(buf.len())]);
                Err(fault.error())
            }
            Some(fault) => Err(fault.error()),
            None => {
                inode.live.extend_from_slice(buf);
                Ok(())
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.live_state()?;
        st.syncs += 1;
        let fault = st.tick(Op::SyncData);
        let inode = st.inode_mut(self.ino)?;
        match fault {
            Some(fault) => {
                inode.drop_dirty();
                Err(fault.error())
            }
            None => {
                inode.commit();
                Ok(())
            }
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.live_state()?;
        let len = usize::try_from(len).map_err(|_| invalid(&self.path, "length too large"))?;
        let inode = st.inode_mut(self.ino)?;
        if len != inode.live.len() {
            inode.rewritten = true;
            inode.live.resize(len, 0);
            inode.clip_lost();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    /// A filesystem holding the durable, empty directory `/d`.
    fn fs_with_dir() -> SimFs {
        let fs = SimFs::new();
        fs.create_dir_all(p("/d")).expect("create /d");
        fs
    }

    /// Creates `path` with `data`, syncs its data and its directory.
    fn durable_file(fs: &SimFs, path: &str, data: &[u8]) -> Box<dyn StorageFile> {
        let mut f = fs.create_new(p(path)).expect("create");
        f.append(data).expect("append");
        f.sync_data().expect("sync_data");
        let parent = p(path).parent().expect("parent");
        fs.sync_dir(parent).expect("sync_dir");
        f
    }

    fn read_all(f: &dyn StorageFile) -> Vec<u8> {
        let len = usize::try_from(f.len().expect("len")).expect("len fits");
        let mut buf = vec![0; len];
        f.read_exact_at(&mut buf, 0).expect("read");
        buf
    }

    fn reopen(fs: &SimFs, path: &str) -> Vec<u8> {
        read_all(&*fs.open(p(path)).expect("open"))
    }

    /// Bytes that are never zero, so zero-filled sectors are recognisable.
    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_add(salt) % 251 + 1)
            .collect()
    }

    fn tear(sector_bytes: u64, seed: u64, zero_fill: bool) -> Tear {
        Tear::Sectors {
            sector_bytes,
            seed,
            zero_fill,
        }
    }

    fn assert_fault(err: io::Error, name: &str) {
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert!(err.to_string().contains(name), "{err} should name {name}");
    }

    #[test]
    fn is_clone_debug_send_sync_and_clones_share_state() {
        fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
        assert_send_sync::<SimFs>();
        let fs = fs_with_dir();
        let other = fs.clone();
        durable_file(&other, "/d/a", b"x");
        assert_eq!(fs.live_bytes(p("/d/a")), Some(b"x".to_vec()));
        let f = fs.open(p("/d/a")).expect("open");
        assert!(format!("{fs:?} {f:?}").contains("SimFs"));
    }

    #[test]
    fn unsynced_data_vanishes_on_crash() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        f.append(b"abc").expect("append");
        assert_eq!(fs.live_bytes(p("/d/a")), Some(b"abc".to_vec()));
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(vec![]));
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"");
    }

    #[test]
    fn synced_data_survives_and_later_appends_do_not() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"hello");
        f.append(b" world").expect("append");
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"hello");
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"hello".to_vec()));
    }

    #[test]
    fn unsynced_dir_entry_vanishes_even_if_data_synced() {
        let fs = fs_with_dir();
        let mut f = fs.create_new(p("/d/a")).expect("create");
        f.append(b"data").expect("append");
        f.sync_data().expect("sync");
        assert!(fs.exists(p("/d/a")).expect("exists"));
        assert_eq!(fs.durable_bytes(p("/d/a")), None);
        assert!(fs.list_durable(p("/d")).expect("list").is_empty());
        fs.crash(Tear::None);
        assert!(!fs.exists(p("/d/a")).expect("exists"));
        assert!(fs.list(p("/d")).expect("list").is_empty());
        let err = fs.open(p("/d/a")).expect_err("must be gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // The name is free again.
        fs.create_new(p("/d/a")).expect("create again");
    }

    #[test]
    fn removal_not_dir_synced_comes_back_after_crash() {
        let fs = fs_with_dir();
        drop(durable_file(&fs, "/d/a", b"keep"));
        fs.remove(p("/d/a")).expect("remove");
        assert!(!fs.exists(p("/d/a")).expect("exists"));
        assert_eq!(fs.list_durable(p("/d")).expect("list"), vec!["a"]);
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"keep");

        fs.remove(p("/d/a")).expect("remove");
        fs.sync_dir(p("/d")).expect("sync_dir");
        fs.crash(Tear::None);
        assert!(!fs.exists(p("/d/a")).expect("exists"));
        assert_eq!(fs.durable_bytes(p("/d/a")), None);
    }

    #[test]
    fn removed_file_stays_readable_through_an_open_handle() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "/d/a", b"still here");
        fs.remove(p("/d/a")).expect("remove");
        fs.sync_dir(p("/d")).expect("sync_dir");
        assert_eq!(read_all(&*f), b"still here");
    }

    #[test]
    fn truncate_then_crash_without_sync_restores_durable() {
        for t in [Tear::None, tear(512, 7, false), tear(1, 9, true)] {
            let fs = fs_with_dir();
            let data = pattern(3000, 1);
            let mut f = durable_file(&fs, "/d/a", &data);
            f.truncate(10).expect("truncate");
            assert_eq!(f.len().expect("len"), 10);
            assert_eq!(fs.durable_bytes(p("/d/a")), Some(data.clone()));
            fs.crash(t);
            assert_eq!(reopen(&fs, "/d/a"), data, "{t:?}");
        }
    }

    #[test]
    fn truncate_then_sync_is_durable() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"0123456789");
        f.truncate(4).expect("truncate");
        f.sync_data().expect("sync");
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"0123");
    }

    #[test]
    fn truncate_beyond_the_end_zero_extends() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"ab");
        f.truncate(4).expect("truncate");
        assert_eq!(read_all(&*f), b"ab\0\0");
    }

    #[test]
    fn rewrite_after_truncate_is_never_torn() {
        for seed in 0..200 {
            let fs = fs_with_dir();
            let mut f = durable_file(&fs, "/d/a", &pattern(1000, 1));
            f.truncate(100).expect("truncate");
            f.append(&pattern(5000, 2)).expect("append");
            fs.crash(tear(512, seed, seed % 2 == 0));
            assert_eq!(reopen(&fs, "/d/a"), pattern(1000, 1), "seed {seed}");
        }
    }

    /// Durable length 700 (not sector-aligned), 10_000 unsynced bytes.
    fn torn_outcome(sector: u64, seed: u64, zero_fill: bool) -> (Vec<u8>, Vec<u8>) {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", &pattern(700, 3));
        f.append(&pattern(10_000, 4)).expect("append");
        let live = fs.live_bytes(p("/d/a")).expect("live");
        fs.crash(tear(sector, seed, zero_fill));
        let after = reopen(&fs, "/d/a");
        // Whatever survived is durable now: a second crash changes nothing.
        fs.crash(tear(sector, seed ^ 1, zero_fill));
        assert_eq!(reopen(&fs, "/d/a"), after);
        (live, after)
    }

    #[test]
    fn torn_crash_keeps_a_sector_aligned_prefix_never_less_than_durable() {
        for sector in [512u64, 4096] {
            let mut lengths = BTreeSet::new();
            for seed in 0..300 {
                let (live, after) = torn_outcome(sector, seed, false);
                let len = after.len();
                assert!(len >= 700, "sector {sector} seed {seed}: lost durable data");
                assert_eq!(after, live[..len], "sector {sector} seed {seed}");
                assert!(
                    len == 700 || len == live.len() || len as u64 % sector == 0,
                    "sector {sector} seed {seed}: cut {len} not aligned"
                );
                lengths.insert(len);
            }
            assert!(
                lengths.contains(&700),
                "sector {sector}: never kept nothing"
            );
            assert!(lengths.contains(&10_700), "sector {sector}: never kept all");
            assert!(lengths.len() >= 4, "sector {sector}: {lengths:?}");
        }
    }

    #[test]
    fn torn_crash_with_zero_fill_zeroes_the_torn_sector() {
        for sector in [512u64, 4096] {
            let mut saw_zeros = false;
            for seed in 0..300 {
                let (live, after) = torn_outcome(sector, seed, true);
                // pattern() never yields 0, so the data ends at the first 0.
                let cut = after.iter().position(|&b| b == 0).unwrap_or(after.len());
                assert!(cut >= 700, "sector {sector} seed {seed}");
                assert_eq!(after[..cut], live[..cut], "sector {sector} seed {seed}");
                assert!(after[cut..].iter().all(|&b| b == 0));
                assert!(cut == 700 || cut == live.len() || cut as u64 % sector == 0);
                let boundary = (cut as u64 / sector + 1) * sector;
                let expected_len = if cut == live.len() {
                    cut
                } else {
                    boundary.min(live.len() as u64) as usize
                };
                assert_eq!(after.len(), expected_len, "sector {sector} seed {seed}");
                saw_zeros |= after.len() > cut;
            }
            assert!(saw_zeros, "sector {sector}: zero fill never happened");
        }
    }

    #[test]
    fn torn_crash_is_deterministic_for_a_seed() {
        let run = |seed: u64| {
            let fs = fs_with_dir();
            let mut files = Vec::new();
            for name in ["/d/a", "/d/b", "/d/c"] {
                let mut f = durable_file(&fs, name, &pattern(100, 5));
                f.append(&pattern(20_000, 6)).expect("append");
                files.push(f);
            }
            fs.crash(tear(512, seed, false));
            ["/d/a", "/d/b", "/d/c"].map(|name| reopen(&fs, name))
        };
        let mut distinct = BTreeSet::new();
        for seed in 0..20 {
            let first = run(seed);
            assert_eq!(first, run(seed), "seed {seed}");
            distinct.insert(first);
        }
        assert!(distinct.len() > 1, "seeds make no difference");
    }

    #[test]
    fn tear_none_keeps_nothing_unsynced() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"x");
        f.append(&pattern(9000, 0)).expect("append");
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"x");
    }

    #[test]
    fn old_handles_fail_after_crash() {
        let fs = fs_with_dir();
        let mut old = durable_file(&fs, "/d/a", b"abc");
        fs.crash(Tear::None);
        assert_eq!(fs.crash_count(), 1);
        assert!(old.len().is_err());
        assert!(old.read_at(&mut [0; 3], 0).is_err());
        assert!(old.append(b"x").is_err());
        assert!(old.sync_data().is_err());
        assert!(old.truncate(0).is_err());
        let syncs = fs.sync_count();
        let mut new = fs.open(p("/d/a")).expect("open");
        drop(old);
        new.append(b"d").expect("append");
        new.sync_data().expect("sync");
        assert_eq!(fs.sync_count(), syncs + 1, "dead handles do not count");
        assert_eq!(read_all(&*new), b"abcd");
        fs.crash(Tear::None);
        assert!(new.len().is_err());
        assert_eq!(fs.crash_count(), 2);
    }

    #[test]
    fn fail_sync_fires_once_at_the_nth_sync() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        let mut g = durable_file(&fs, "/d/b", b"");
        fs.set_fault(Fault::FailSync(2));
        f.sync_data().expect("first sync");
        assert_fault(g.sync_data().expect_err("second sync"), "FailSync");
        f.sync_data().expect("third sync");
        g.sync_data().expect("fourth sync");
        assert_eq!(fs.faults_fired(), 1);
    }

    #[test]
    fn faults_count_independently_and_failed_ops_count() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        fs.set_fault(Fault::FailSync(1));
        fs.set_fault(Fault::FailSync(3));
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok());
        assert!(f.sync_data().is_err());
        assert!(f.sync_data().is_ok());
        assert_eq!(fs.faults_fired(), 2);
    }

    #[test]
    fn fail_sync_from_keeps_failing_until_cleared() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        fs.set_fault(Fault::FailSyncFrom(2));
        f.sync_data().expect("first sync");
        for _ in 0..5 {
            assert_fault(f.sync_data().expect_err("failing"), "FailSyncFrom");
        }
        fs.clear_faults();
        f.sync_data().expect("after clear");
        assert_eq!(fs.faults_fired(), 5);
    }

    #[test]
    fn failed_sync_makes_nothing_durable_and_forgets_the_dirty_bytes() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"abc");
        f.append(b"def").expect("append");
        fs.set_fault(Fault::FailSync(1));
        assert!(f.sync_data().is_err());
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"abc".to_vec()));
        // The page cache still shows the data...
        assert_eq!(read_all(&*f), b"abcdef");
        // ...but a retry "succeeds" without writing it.
        f.append(b"gh").expect("append");
        f.sync_data().expect("retry");
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"abc\0\0\0gh".to_vec()));
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"abc\0\0\0gh");
    }

    #[test]
    fn torn_crash_after_failed_sync_never_shows_forgotten_bytes() {
        for seed in 0..100 {
            let fs = fs_with_dir();
            let mut f = durable_file(&fs, "/d/a", b"");
            f.append(&pattern(2048, 1)).expect("append");
            fs.set_fault(Fault::FailSync(1));
            assert!(f.sync_data().is_err());
            fs.crash(tear(512, seed, false));
            let after = reopen(&fs, "/d/a");
            assert!(after.iter().all(|&b| b == 0), "seed {seed}");
        }
    }

    #[test]
    fn fail_append_writes_a_prefix_then_fails() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        fs.set_fault(Fault::FailAppend { nth: 2, keep: 3 });
        f.append(b"aaaa").expect("first append");
        assert_fault(f.append(b"bbbbbb").expect_err("second"), "FailAppend");
        f.append(b"c").expect("third append");
        assert_eq!(read_all(&*f), b"aaaabbbc");
    }

    #[test]
    fn fail_append_keep_is_capped_and_zero_writes_nothing() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        fs.set_fault(Fault::FailAppend { nth: 1, keep: 0 });
        fs.set_fault(Fault::FailAppend { nth: 2, keep: 100 });
        assert!(f.append(b"xx").is_err());
        assert!(f.append(b"yy").is_err());
        assert_eq!(read_all(&*f), b"yy");
    }

    #[test]
    fn fail_sync_dir_leaves_entries_undurable() {
        let fs = fs_with_dir();
        drop(fs.create_new(p("/d/a")).expect("create"));
        fs.set_fault(Fault::FailSyncDir(1));
        assert_fault(fs.sync_dir(p("/d")).expect_err("fails"), "FailSyncDir");
        assert!(fs.list_durable(p("/d")).expect("list").is_empty());
        fs.sync_dir(p("/d")).expect("second sync_dir");
        assert_eq!(fs.list_durable(p("/d")).expect("list"), vec!["a"]);
        assert_eq!(fs.dir_sync_count(), 2);
    }

    #[test]
    fn fail_create_new_creates_nothing() {
        let fs = fs_with_dir();
        fs.set_fault(Fault::FailCreateNew(2));
        drop(fs.create_new(p("/d/a")).expect("first"));
        // Invalid calls do not count.
        let err = fs.create_new(p("/d/a")).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_fault(
            fs.create_new(p("/d/b")).expect_err("second"),
            "FailCreateNew",
        );
        assert!(!fs.exists(p("/d/b")).expect("exists"));
        drop(fs.create_new(p("/d/c")).expect("third"));
        assert_eq!(fs.list(p("/d")).expect("list"), vec!["a", "c"]);
    }

    #[test]
    fn crash_clears_faults() {
        let fs = fs_with_dir();
        fs.set_fault(Fault::FailSyncFrom(1));
        fs.crash(Tear::None);
        let mut f = durable_file(&fs, "/d/a", b"ok");
        f.sync_data().expect("sync");
        assert_eq!(fs.faults_fired(), 0);
    }

    #[test]
    fn sync_counters_count_calls() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"x");
        assert_eq!((fs.sync_count(), fs.dir_sync_count()), (1, 1));
        fs.set_fault(Fault::FailSync(1));
        assert!(f.sync_data().is_err());
        assert_eq!(fs.sync_count(), 2, "failed syncs count");
        assert!(fs.sync_dir(p("/nope")).is_err());
        assert_eq!(fs.dir_sync_count(), 1, "invalid calls do not count");
    }

    #[test]
    fn rename_within_a_directory_needs_sync_dir() {
        let fs = fs_with_dir();
        drop(durable_file(&fs, "/d/tmp", b"new"));
        drop(durable_file(&fs, "/d/cur", b"old"));
        fs.rename(p("/d/tmp"), p("/d/cur")).expect("rename");
        assert_eq!(fs.live_bytes(p("/d/cur")), Some(b"new".to_vec()));
        assert_eq!(fs.live_bytes(p("/d/tmp")), None);
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/cur"), b"old");
        assert_eq!(reopen(&fs, "/d/tmp"), b"new");

        fs.rename(p("/d/tmp"), p("/d/cur")).expect("rename");
        fs.sync_dir(p("/d")).expect("sync_dir");
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/cur"), b"new");
        assert_eq!(fs.list(p("/d")).expect("list"), vec!["cur"]);
        // Onto itself: nothing happens.
        fs.rename(p("/d/cur"), p("/d/cur")).expect("self rename");
        assert_eq!(fs.list(p("/d")).expect("list"), vec!["cur"]);
    }

    #[test]
    fn rename_across_directories_is_durable_per_side() {
        let setup = || {
            let fs = fs_with_dir();
            fs.create_dir_all(p("/e")).expect("mkdir");
            drop(durable_file(&fs, "/d/a", b"x"));
            fs.rename(p("/d/a"), p("/e/a")).expect("rename");
            fs
        };
        let fs = setup();
        fs.sync_dir(p("/e")).expect("sync");
        fs.crash(Tear::None);
        assert!(fs.exists(p("/d/a")).expect("exists"));
        assert!(fs.exists(p("/e/a")).expect("exists"));

        let fs = setup();
        fs.sync_dir(p("/d")).expect("sync");
        fs.crash(Tear::None);
        assert!(!fs.exists(p("/d/a")).expect("exists"));
        assert!(!fs.exists(p("/e/a")).expect("exists"));

        let fs = setup();
        fs.sync_dir(p("/d")).expect("sync");
        fs.sync_dir(p("/e")).expect("sync");
        fs.crash(Tear::None);
        assert!(!fs.exists(p("/d/a")).expect("exists"));
        assert_eq!(reopen(&fs, "/e/a"), b"x");
    }

    #[test]
    fn errors_for_missing_and_existing_paths() {
        let fs = fs_with_dir();
        let kind = |r: io::Result<Box<dyn StorageFile>>| r.expect_err("must fail").kind();
        assert_eq!(kind(fs.open(p("/d/x"))), io::ErrorKind::NotFound);
        assert_eq!(kind(fs.create_new(p("/nope/x"))), io::ErrorKind::NotFound);
        drop(fs.create_new(p("/d/x")).expect("create"));
        assert_eq!(kind(fs.create_new(p("/d/x"))), io::ErrorKind::AlreadyExists);
        assert_eq!(kind(fs.create_new(p("/d"))), io::ErrorKind::AlreadyExists);
        assert!(fs.open(p("/d")).is_err());
        assert!(fs.open(p("/")).is_err());
        let err = fs.list(p("/nope")).expect_err("no dir");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(fs.list(p("/d/x")).is_err());
        let err = fs.remove(p("/d/y")).expect_err("no file");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(fs.remove(p("/d")).is_err());
        let err = fs.rename(p("/d/y"), p("/d/z")).expect_err("no file");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(fs.rename(p("/d/x"), p("/nope/x")).is_err());
        assert!(fs.rename(p("/d/x"), p("/d")).is_err());
        assert!(fs.sync_dir(p("/nope")).is_err());
        assert!(fs.create_dir_all(p("/d/x/sub")).is_err());
    }

    #[test]
    fn directories_are_listed_durable_and_nest() {
        let fs = SimFs::new();
        fs.create_dir_all(p("/data/wal/segments")).expect("mkdir");
        fs.create_dir_all(p("/data/wal")).expect("again");
        drop(fs.create_new(p("/data/wal/x")).expect("create"));
        assert_eq!(
            fs.list(p("/data/wal")).expect("list"),
            vec!["segments", "x"]
        );
        fs.crash(Tear::None);
        assert_eq!(fs.list(p("/data/wal")).expect("list"), vec!["segments"]);
        assert!(fs.exists(p("/data/wal/segments")).expect("exists"));
        // Relative paths hang off the root "".
        fs.create_dir_all(p("rel")).expect("mkdir");
        drop(durable_file(&fs, "rel/f", b"r"));
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "rel/f"), b"r");
    }

    #[test]
    fn read_at_past_the_end_and_short_reads() {
        let fs = fs_with_dir();
        let f = durable_file(&fs, "/d/a", b"abcdef");
        let mut buf = [0u8; 4];
        assert_eq!(f.read_at(&mut buf, 4).expect("read"), 2);
        assert_eq!(&buf[..2], b"ef");
        assert_eq!(f.read_at(&mut buf, 6).expect("read"), 0);
        assert_eq!(f.read_at(&mut buf, u64::MAX).expect("read"), 0);
        let err = f.read_exact_at(&mut buf, 4).expect_err("eof");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn flip_bit_changes_both_images() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"\x00\x00");
        f.append(b"\x00").expect("append");
        fs.flip_bit(p("/d/a"), 1, 3).expect("flip durable byte");
        fs.flip_bit(p("/d/a"), 2, 0).expect("flip live-only byte");
        assert_eq!(fs.live_bytes(p("/d/a")), Some(vec![0, 8, 1]));
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(vec![0, 8]));
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), vec![0, 8]);
        assert!(fs.flip_bit(p("/d/a"), 2, 0).is_err());
        assert!(fs.flip_bit(p("/d/a"), 0, 8).is_err());
        assert!(fs.flip_bit(p("/d/zz"), 0, 0).is_err());
    }

    #[test]
    fn write_live_bytes_overwrites_both_images() {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"0123");
        f.append(b"45").expect("append");
        fs.write_live_bytes(p("/d/a"), 2, b"xyz").expect("write");
        assert_eq!(fs.live_bytes(p("/d/a")), Some(b"01xyz5".to_vec()));
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"01xy".to_vec()));
        assert!(fs.write_live_bytes(p("/d/a"), 5, b"ab").is_err());
        assert!(fs.write_live_bytes(p("/d/a"), u64::MAX, b"a").is_err());
        fs.crash(Tear::None);
        assert_eq!(reopen(&fs, "/d/a"), b"01xy");
    }
}
