//! What a directory stream knows about every file ([`Known`]): rebuilt at
//! start from the progress file and the retained WAL, grown as chunks are
//! logged, and written to the progress file by the release hook
//! ([`persist`]) before the WAL segments of released chunks may be deleted.
//!
//! Limits: the hook waits at most [`LEARN_WAIT`] for a logged chunk to be
//! recorded; memory grows with the files remembered (`files_tracked_max`).
//! Must never: let cleanup go past a chunk it has not recorded, or write
//! the progress file other than atomically (temp, fsync, rename, directory
//! fsync).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::records::{chunk_header, decode_progress, encode_progress, FileProgress};
use super::DirReceiver;
use crate::dstream::BoxError;
use crate::receiver::{ReceiverContext, ReceiverError};

/// What the receiver knows about every file, shared with the release hook.
#[derive(Default)]
pub(super) struct Known {
    /// Newest progress per name (released or not).
    pub(super) current: HashMap<String, FileProgress>,
    /// Progress as of released chunks: what the progress file holds.
    pub(super) released: HashMap<String, FileProgress>,
    /// Logged chunks not yet released, oldest first.
    pub(super) unreleased: VecDeque<FileProgress>,
    /// `released` changed since the progress file was written.
    pub(super) dirty: bool,
    /// Every chunk below this LSN has been learned (0 until recovery ran):
    /// the hook refuses cleanup above it, so a chunk whose `store` returned
    /// but is not yet recorded here can never lose its segment unrecorded.
    pub(super) learned_end: u64,
}

impl Known {
    pub(super) fn learn(&mut self, p: FileProgress) {
        if self.current.get(&p.name).is_none_or_older(p.lsn) {
            self.current.insert(p.name.clone(), p.clone());
        }
        self.learned_end = self.learned_end.max(p.lsn);
        self.unreleased.push_back(p);
    }

    pub(super) fn release(&mut self, end: u64) {
        while self.unreleased.front().is_some_and(|p| p.lsn <= end) {
            if let Some(p) = self.unreleased.pop_front() {
                if self.released.get(&p.name).is_none_or_older(p.lsn) {
                    self.released.insert(p.name.clone(), p);
                    self.dirty = true;
                }
            }
        }
    }

    /// Forgets files no longer in the directory (once nothing unreleased
    /// refers to them).
    pub(super) fn prune(&mut self, present: &HashSet<String>) {
        let pinned: HashSet<&str> = self.unreleased.iter().map(|p| p.name.as_str()).collect();
        let gone: Vec<String> = self
            .current
            .keys()
            .filter(|n| !present.contains(*n) && !pinned.contains(n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            self.current.remove(&n);
            if self.released.remove(&n).is_some() {
                self.dirty = true;
            }
        }
    }
}

trait OlderThan {
    fn is_none_or_older(&self, lsn: u64) -> bool;
}

impl OlderThan for Option<&FileProgress> {
    fn is_none_or_older(&self, lsn: u64) -> bool {
        self.is_none_or(|q| q.lsn < lsn)
    }
}

/// [`Known`] and the signal that more chunks were learned.
#[derive(Default)]
pub(super) struct KnownCell {
    pub(super) known: Mutex<Known>,
    pub(super) learned: Condvar,
}

/// How long the release hook waits for a chunk whose `store` returned to
/// be recorded before it refuses cleanup for this batch.
pub(super) const LEARN_WAIT: Duration = Duration::from_secs(1);

pub(super) fn lock(k: &KnownCell) -> std::sync::MutexGuard<'_, Known> {
    k.known.lock().unwrap_or_else(|e| e.into_inner())
}

/// The release hook: remembers what released chunks said, durably,
/// before their WAL segments may go.
pub(super) fn persist(known: &KnownCell, path: &Path, end: u64) -> Result<(), BoxError> {
    let bytes = {
        let mut k = lock(known);
        // A chunk the batch consumed may have been acknowledged a moment
        // ago, its receiver not yet past recording it: wait briefly.
        let deadline = std::time::Instant::now() + LEARN_WAIT;
        while k.learned_end < end {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            k = known
                .learned
                .wait_timeout(k, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        k.release(end);
        if k.learned_end < end {
            return Err(format!(
                "chunks below record {end} are not all recorded yet (recorded up to {}); cleanup waits for the next batch",
                k.learned_end
            )
            .into());
        }
        if !k.dirty {
            return Ok(());
        }
        let mut entries: Vec<&FileProgress> = k.released.values().collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        encode_progress(&entries)
    };
    crate::storage::write_atomic(&crate::storage::RealFs, path, &bytes)?;
    lock(known).dirty = false;
    Ok(())
}

impl DirReceiver {
    /// Rebuilds what is known from the progress file and the retained WAL.
    pub(super) fn recover(&self, ctx: &ReceiverContext) -> Result<(), BoxError> {
        let mut k = lock(&self.known);
        match std::fs::read(&self.progress_path) {
            Ok(bytes) => {
                let entries = decode_progress(&bytes).map_err(|e| {
                    format!(
                        "{}: {e}. The file is written atomically, so this is damage; restore it from a backup, \
                         or delete it to read every file in the directory again (lines already processed would be repeated)",
                        self.progress_path.display()
                    )
                })?;
                for p in entries {
                    k.current.insert(p.name.clone(), p.clone());
                    k.released.insert(p.name.clone(), p);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ReceiverError::Io {
                    stream: ctx.stream_name().to_string(),
                    action: "read the progress file",
                    path: self.progress_path.display().to_string(),
                    source: e,
                }
                .into())
            }
        }
        let wal = ctx.wal();
        let mut reader = wal.read(wal.first_lsn()..wal.end())?;
        while let Some(r) = reader.next_ref() {
            let (lsn, bytes) = r?;
            let (mut p, _, _) = chunk_header(bytes)
                .map_err(|e| format!("record {lsn} of the WAL in {}: {e}", wal.dir().display()))?;
            p.lsn = lsn + 1;
            k.learn(p);
        }
        k.learned_end = k.learned_end.max(wal.end());
        drop(k);
        self.known.learned.notify_all();
        Ok(())
    }
}
