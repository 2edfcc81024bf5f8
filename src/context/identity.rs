//! The data directory's identity: its checkpoint and its input logs carry
//! the same [`DataDirId`], so that a log is never read against a
//! checkpoint it was not written beside.
//!
//! The checkpoint records the id (created with it, `m/datadir`); each
//! input log's directory holds it in `wal/<stream>/IDENTITY` (32 bytes:
//! magic `WEIRDDID`, version 1 as u32 LE, the 16 id bytes, CRC-32 of the
//! 28 bytes before it as u32 LE), written atomically through `Storage`
//! (temp file, fsync, rename, directory fsync).
//!
//! At open ([`open_checkpoint`], used by `get_or_create`):
//! - no checkpoint, but a log with an id or with records: refused
//!   ([`IdentityError::CheckpointMissing`]), before anything is created;
//! - a checkpoint whose id differs from a log's (or a checkpoint without
//!   an id beside a log with one): refused ([`IdentityError::Foreign`]);
//! - a checkpoint from before identities: it adopts a new id, and every
//!   log without one gets it (migration);
//! - a log without an id (new, or from before identities) gets the
//!   checkpoint's.
//!
//! The way out, deliberately: [`adopt_logs`] (`weir checkpoint
//! adopt-logs`) gives the logs a new checkpoint that processes again what
//! they hold.
//!
//! Limits: reads one 32-byte file per log; a log is read whole (one
//! `wal::verify_dir`) only when the checkpoint is missing and the log has
//! no id, and by `adopt_logs`.
//! Must never: create a checkpoint beside logs it refuses, or let a run
//! start on a log whose id differs from its checkpoint's.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::{
    BatchSpec, CheckpointStore, DataDirId, SledCheckpointStore, SledConfig, StreamRange,
};
use crate::storage::{write_atomic, AtomicWriteError, RealFs, Storage};
use crate::{layout, wal};

const MAGIC: [u8; 8] = *b"WEIRDDID";
const VERSION: u32 = 1;
/// Bytes of an identity file.
pub const IDENTITY_FILE_BYTES: usize = 32;

/// One input log: its stream, directory and identity (if it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogIdentity {
    /// The stream.
    pub name: String,
    /// `DATA_DIR/wal/<stream>`.
    pub dir: PathBuf,
    /// The id in its `IDENTITY` file.
    pub id: Option<DataDirId>,
}

/// Why a data directory's checkpoint and logs do not go together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The checkpoint is missing, but logs were written beside one.
    #[error(
        "{} has no checkpoint (expected {}), but its input logs were written beside one: {}. \
         Starting over would process again every record they hold. Ways out: restore the \
         checkpoint from its backup into {}; or run `weir checkpoint adopt-logs {}` to give the \
         logs a new checkpoint that processes what they hold again (outputs already written are \
         written again); or move {} aside to start with empty logs",
        data_dir.display(), checkpoint.display(), show_logs(logs), checkpoint.display(),
        data_dir.display(), layout::wal_root(data_dir).display()
    )]
    CheckpointMissing {
        /// The data directory.
        data_dir: PathBuf,
        /// Where the checkpoint should be.
        checkpoint: PathBuf,
        /// The logs that were written beside a checkpoint.
        logs: Vec<LogIdentity>,
    },
    /// The checkpoint and a log belong to different data directories.
    #[error(
        "the checkpoint {} (data directory id {}) belongs to another data directory than the \
         input log {} (id {}): the log's positions in it would be wrong. Ways out: restore this \
         data directory's own checkpoint from its backup into {}; or move {} aside and run \
         `weir checkpoint adopt-logs {}` (the logs' records are processed again); or move {} \
         aside to keep this checkpoint with empty logs",
        checkpoint.display(), show_id(checkpoint_id), log.display(), log_id,
        checkpoint.display(), checkpoint.display(), data_dir.display(), log.display()
    )]
    Foreign {
        /// The data directory.
        data_dir: PathBuf,
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// The checkpoint's id (`None`: from before identities).
        checkpoint_id: Option<DataDirId>,
        /// The log directory.
        log: PathBuf,
        /// The log's id.
        log_id: DataDirId,
    },
    /// An identity file does not hold an identity.
    #[error(
        "the identity file {} is damaged at byte {offset}: expected {expected}, found {found}. \
         Write back the file from a backup, or remove it if this log belongs to the checkpoint \
         beside it (it is written again at the next start)",
        file.display()
    )]
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What belongs there, in words.
        expected: &'static str,
        /// What is there.
        found: String,
    },
    /// `adopt-logs` on a checkpoint that already records batches.
    #[error(
        "the checkpoint {} already records batches: adopting the logs into it would read them \
         at its positions. Move it aside (weir does not delete it), then run \
         `weir checkpoint adopt-logs {}` again",
        checkpoint.display(), data_dir.display()
    )]
    CheckpointInUse {
        /// The data directory.
        data_dir: PathBuf,
        /// The checkpoint directory.
        checkpoint: PathBuf,
    },
    /// A directory or identity file could not be read.
    #[error("could not {action} {}: {source}; check the disk and permissions", path.display())]
    Io {
        /// What was being done, in words.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An identity file could not be written.
    #[error("could not write the identity file of an input log: {0}")]
    Write(#[from] AtomicWriteError),
}

fn show_id(id: &Option<DataDirId>) -> String {
    id.map_or_else(
        || "none: written before identities".into(),
        |i| i.to_string(),
    )
}

fn show_logs(logs: &[LogIdentity]) -> String {
    let shown: Vec<String> = logs
        .iter()
        .map(|l| match l.id {
            Some(id) => format!("{} (data directory id {id})", l.dir.display()),
            None => format!("{} (holds records)", l.dir.display()),
        })
        .collect();
    shown.join(", ")
}

impl fmt::Display for LogIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.dir.display(), show_id(&self.id))
    }
}

/// The bytes of an identity file holding `id`.
pub(crate) fn encode(id: DataDirId) -> [u8; IDENTITY_FILE_BYTES] {
    let mut b = [0u8; IDENTITY_FILE_BYTES];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..28].copy_from_slice(&id.to_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The identity in the bytes of the identity file `file`.
pub(crate) fn decode(file: &Path, b: &[u8]) -> Result<DataDirId, IdentityError> {
    let damaged = |offset: u64, expected, found: String| IdentityError::Damaged {
        file: file.to_path_buf(),
        offset,
        expected,
        found,
    };
    if b.len() != IDENTITY_FILE_BYTES {
        let at = b.len().min(IDENTITY_FILE_BYTES) as u64;
        return Err(damaged(
            at,
            "a file of 32 bytes",
            format!("{} bytes", b.len()),
        ));
    }
    if b[..8] != MAGIC {
        return Err(damaged(
            0,
            "the magic WEIRDDID",
            format!("{:02x?}", &b[..8]),
        ));
    }
    let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    let want = crc32fast::hash(&b[..28]);
    if crc != want {
        return Err(damaged(
            28,
            "the CRC-32 of bytes 0..28",
            format!("{crc:#010x}, computed {want:#010x}"),
        ));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != VERSION {
        return Err(damaged(8, "version 1", version.to_string()));
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[12..28]);
    DataDirId::from_bytes(id).ok_or_else(|| damaged(12, "a non-zero id", "all zero".into()))
}

/// The id in `log`'s identity file, if it has one.
pub(crate) fn read_log_id(log: &Path) -> Result<Option<DataDirId>, IdentityError> {
    let file = layout::log_identity(log);
    match RealFs.read_all(&file) {
        Ok(b) => decode(&file, &b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            action: "read the identity file",
            path: file,
            source,
        }),
    }
}

/// Writes `id` into `log`'s identity file (atomically, durably).
pub(crate) fn write_log_id(log: &Path, id: DataDirId) -> Result<(), IdentityError> {
    write_atomic(&RealFs, &layout::log_identity(log), &encode(id))?;
    Ok(())
}

/// Every input log under `DATA_DIR/wal`, sorted by name, with its id.
pub fn scan_logs(data_dir: &Path) -> Result<Vec<LogIdentity>, IdentityError> {
    let root = layout::wal_root(data_dir);
    let names = match RealFs.list(&root) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(IdentityError::Io {
                action: "list",
                path: root,
                source,
            })
        }
    };
    let mut logs = Vec::new();
    for name in names {
        let dir = root.join(&name);
        // Only stream directories: sidecar and temporary files have a `.`.
        if !dir.is_dir() || crate::names::validate_stream_name(&name).is_err() {
            continue;
        }
        let id = read_log_id(&dir)?;
        logs.push(LogIdentity { name, dir, id });
    }
    logs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(logs)
}

/// Whether a checkpoint was ever created in `dir` (sled's files exist).
fn checkpoint_present(dir: &Path) -> bool {
    SledCheckpointStore::exists(dir)
}

/// `(first, end)` record numbers the log in `dir` holds.
fn log_range(dir: &Path) -> crate::Result<(u64, u64)> {
    let r = wal::verify_dir(&RealFs, dir)?;
    Ok((r.first_lsn().unwrap_or(0), r.end_lsn().unwrap_or(0)))
}

/// Opens (creating if new) the checkpoint of `data_dir` after checking
/// that it belongs with the data directory's input logs (see the module
/// documentation); gives every log without an id the checkpoint's.
pub(crate) fn open_checkpoint(data_dir: &Path) -> crate::Result<(SledCheckpointStore, DataDirId)> {
    let logs = scan_logs(data_dir)?;
    let checkpoint = layout::checkpoint_dir(data_dir);
    check_not_missing(data_dir, &logs)?;
    // Files of a store that holds nothing, beside logs that never saw a
    // checkpoint: a first start killed before the store was initialised.
    let opened = if written_beside(&logs, true)?.is_empty() {
        SledCheckpointStore::open_allowing_empty(&checkpoint, SledConfig::default())
    } else {
        SledCheckpointStore::open(&checkpoint, SledConfig::default())
    };
    let mut store = opened.map_err(crate::scheduler::SchedulerError::from)?;
    let stored = store.data_dir_id()?;
    if let Some((l, lid)) = mismatch(&logs, stored) {
        return Err(foreign(data_dir, &checkpoint, stored, &l.dir, lid).into());
    }
    let id = match stored {
        Some(id) => id,
        None => {
            let id = DataDirId::random();
            store.record_data_dir_id(id)?;
            tracing::warn!(checkpoint = %checkpoint.display(), id = %id, "the checkpoint had no data directory id (written by an earlier weir): adopted a new one, and its input logs get it");
            id
        }
    };
    for l in logs.iter().filter(|l| l.id.is_none()) {
        write_log_id(&l.dir, id)?;
    }
    Ok((store, id))
}

/// The first log with an id other than `stored`.
fn mismatch(logs: &[LogIdentity], stored: Option<DataDirId>) -> Option<(&LogIdentity, DataDirId)> {
    logs.iter()
        .find_map(|l| l.id.filter(|i| Some(*i) != stored).map(|i| (l, i)))
}

/// Refuses a missing checkpoint beside `logs` that were written beside
/// one (an id, or records).
fn check_not_missing(data_dir: &Path, logs: &[LogIdentity]) -> crate::Result<()> {
    let checkpoint = layout::checkpoint_dir(data_dir);
    if checkpoint_present(&checkpoint) {
        return Ok(());
    }
    let written = written_beside(logs, false)?;
    if written.is_empty() {
        return Ok(());
    }
    Err(IdentityError::CheckpointMissing {
        data_dir: data_dir.to_path_buf(),
        checkpoint,
        logs: written,
    }
    .into())
}

/// The logs that were written beside a checkpoint: those with an id or
/// with records (read only for a log without an id); with `first`, at
/// most the first one found.
fn written_beside(logs: &[LogIdentity], first: bool) -> crate::Result<Vec<LogIdentity>> {
    let mut written = Vec::new();
    let (with_id, without): (Vec<_>, Vec<_>) = logs.iter().partition(|l| l.id.is_some());
    for l in with_id {
        written.push(l.clone());
        if first {
            return Ok(written);
        }
    }
    for l in without {
        if log_range(&l.dir)?.1 > 0 {
            written.push(l.clone());
            if first {
                return Ok(written);
            }
        }
    }
    Ok(written)
}

/// For the offline tools (`weir status`), before the checkpoint is
/// opened: fails as `weir run` would when the checkpoint is missing
/// beside logs that were written beside one.
pub fn check_offline_missing(data_dir: &Path) -> crate::Result<()> {
    check_not_missing(data_dir, &scan_logs(data_dir)?)
}

fn foreign(
    data_dir: &Path,
    checkpoint: &Path,
    checkpoint_id: Option<DataDirId>,
    log: &Path,
    log_id: DataDirId,
) -> IdentityError {
    IdentityError::Foreign {
        data_dir: data_dir.to_path_buf(),
        checkpoint: checkpoint.to_path_buf(),
        checkpoint_id,
        log: log.to_path_buf(),
        log_id,
    }
}

/// Refuses a log (about to be opened) whose id is not `id`.
pub(crate) fn check_log(data_dir: &Path, log: &Path, id: DataDirId) -> crate::Result<()> {
    match read_log_id(log)? {
        Some(found) if found != id => {
            let checkpoint = layout::checkpoint_dir(data_dir);
            Err(foreign(data_dir, &checkpoint, Some(id), log, found).into())
        }
        _ => Ok(()),
    }
}

/// Gives an opened log without an id the id `id`.
pub(crate) fn ensure_log_id(log: &Path, id: DataDirId) -> crate::Result<()> {
    if read_log_id(log)?.is_none() {
        write_log_id(log, id)?;
    }
    Ok(())
}

/// For the offline tools (`weir status`): fails when a log's id differs
/// from the checkpoint's (as `weir run` would).
pub fn check_offline(data_dir: &Path, store: &SledCheckpointStore) -> crate::Result<()> {
    let stored = store.data_dir_id()?;
    let logs = scan_logs(data_dir)?;
    match mismatch(&logs, stored) {
        Some((l, lid)) => Err(foreign(data_dir, store.path(), stored, &l.dir, lid).into()),
        None => Ok(()),
    }
}

/// What [`adopt_logs`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The checkpoint directory.
    pub checkpoint: PathBuf,
    /// Whether the checkpoint was created.
    pub created: bool,
    /// The identity the logs now share with it.
    pub id: DataDirId,
    /// `(stream, first, end)`: the records each log holds, all processed
    /// again at the next start.
    pub logs: Vec<(String, u64, u64)>,
}

/// The deliberate way out when the checkpoint is missing or foreign:
/// gives the input logs of `data_dir` a new checkpoint (creating it if
/// absent; an existing one must record no batch), starting each log at its
/// first retained record, and the checkpoint's id. What the logs hold is
/// processed again at the next start. Stop weir first.
pub fn adopt_logs(data_dir: &Path) -> crate::Result<Adopted> {
    // One writer: refused while weir runs on this directory.
    let _lock = super::lock_data_dir(data_dir)?;
    let logs = scan_logs(data_dir)?;
    let checkpoint = layout::checkpoint_dir(data_dir);
    let created = !checkpoint_present(&checkpoint);
    let mut store = SledCheckpointStore::open(&checkpoint, SledConfig::default())?;
    if store.last_allocated()?.is_some() {
        return Err(IdentityError::CheckpointInUse {
            data_dir: data_dir.to_path_buf(),
            checkpoint,
        }
        .into());
    }
    let id = match store.data_dir_id()? {
        Some(id) => id,
        None => {
            let id = DataDirId::random();
            store.record_data_dir_id(id)?;
            id
        }
    };
    let mut ranges = Vec::new();
    for l in &logs {
        let (first, end) = log_range(&l.dir)?;
        ranges.push((l.name.clone(), first, end));
    }
    // A log whose first records were removed starts at its first retained
    // record: one empty, completed batch at time 0 records the positions.
    if ranges.iter().any(|r| r.1 > 0) {
        let spec = BatchSpec {
            time_ms: 0,
            zero_ms: 0,
            ranges: ranges
                .iter()
                .map(|(name, first, _)| StreamRange {
                    source: name.clone(),
                    start: *first,
                    end: *first,
                })
                .collect(),
        };
        store.allocate(&spec)?;
        store.commit(0, &[])?;
    }
    drop(store);
    for l in &logs {
        write_log_id(&l.dir, id)?;
    }
    tracing::warn!(checkpoint = %checkpoint.display(), id = %id, logs = logs.len(), "adopted the input logs into a new checkpoint: what they hold is processed again at the next start");
    Ok(Adopted {
        checkpoint,
        created,
        id,
        logs: ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_file_round_trips_and_damage_is_named() {
        let id = DataDirId::random();
        let f = Path::new("/d/wal/in/IDENTITY");
        let b = encode(id);
        assert_eq!(decode(f, &b).ok(), Some(id));
        for (at, want) in [(0usize, 0u64), (9, 28), (15, 28), (30, 28)] {
            let mut d = b;
            d[at] ^= 1;
            match decode(f, &d) {
                Err(IdentityError::Damaged { offset, .. }) => assert_eq!(offset, want, "byte {at}"),
                other => panic!("byte {at}: {other:?}"),
            }
        }
        let m = decode(f, &b[..10]).expect_err("short").to_string();
        assert!(
            m.contains("/d/wal/in/IDENTITY") && m.contains("10 bytes"),
            "{m}"
        );
    }

    /// A checkpoint written before identities, beside `wal/in` (with the
    /// id `log`, if given).
    fn old_data_dir(log: Option<DataDirId>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let ckpt = layout::checkpoint_dir(dir.path());
        let mut s = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect("open");
        s.forget_data_dir_id();
        drop(s);
        let wal = layout::wal_dir(dir.path(), "in");
        std::fs::create_dir_all(&wal).expect("mkdir");
        if let Some(id) = log {
            write_log_id(&wal, id).expect("write");
        }
        dir
    }

    #[test]
    fn a_checkpoint_and_logs_from_before_identities_adopt_one_at_first_open() {
        let dir = old_data_dir(None);
        let (store, id) = open_checkpoint(dir.path()).expect("open");
        assert_eq!(store.data_dir_id().expect("read"), Some(id));
        let wal = layout::wal_dir(dir.path(), "in");
        assert_eq!(read_log_id(&wal).expect("read"), Some(id));
        drop(store);
        let (_, again) = open_checkpoint(dir.path()).expect("reopen");
        assert_eq!(again, id);
    }

    #[test]
    fn a_checkpoint_without_an_id_beside_a_log_with_one_is_refused() {
        let log = DataDirId::random();
        let dir = old_data_dir(Some(log));
        let e = open_checkpoint(dir.path()).expect_err("refused");
        let m = e.to_string();
        assert!(
            matches!(
                e,
                crate::Error::Identity(IdentityError::Foreign {
                    checkpoint_id: None,
                    ..
                })
            ),
            "{m}"
        );
        assert!(
            m.contains(&log.to_string()) && m.contains("none: written before"),
            "{m}"
        );
    }

    /// A data directory whose checkpoint files exist but hold nothing
    /// (as after a first start killed inside sled's creation).
    fn empty_checkpoint(log: Option<DataDirId>) -> tempfile::TempDir {
        let dir = old_data_dir(log);
        let ckpt = layout::checkpoint_dir(dir.path());
        for e in std::fs::read_dir(&ckpt).expect("list").flatten() {
            if e.file_name().to_string_lossy().starts_with("snap.") {
                std::fs::remove_file(e.path()).expect("remove");
            }
        }
        std::fs::write(ckpt.join("db"), b"").expect("truncate");
        dir
    }

    #[test]
    fn an_empty_checkpoint_beside_logs_that_never_saw_one_is_initialised() {
        let dir = empty_checkpoint(None);
        let (store, id) = open_checkpoint(dir.path()).expect("a first start again");
        assert_eq!(store.data_dir_id().expect("read"), Some(id));
    }

    #[test]
    fn an_empty_checkpoint_beside_a_log_with_an_id_is_refused() {
        let dir = empty_checkpoint(Some(DataDirId::random()));
        let e = open_checkpoint(dir.path()).expect_err("refused");
        assert!(
            e.to_string().contains("is empty, but its files exist"),
            "{e}"
        );
    }
}
