//! The write-ahead log: one log per input stream, in its own directory, cut
//! into segment files. It owns record framing, group commit, recovery of a
//! torn tail, range reads, cleanup of old segments, verification and the
//! explicit repair. `docs/wal-format.md` describes the bytes.
//!
//! Invariants:
//! - An append is acknowledged (its call returns `Ok`) only after an fsync
//!   (`fdatasync`) covering all of its records returned, unless the log was
//!   opened with [`SyncPolicy::NoSyncUnsafe`].
//! - Record numbers (LSNs) are dense: the log holds `first_lsn()..end()`
//!   with no holes. A record never spans segments.
//! - Every segment except the last ends with a seal trailer and was fsynced
//!   before the next segment was created; so a torn tail can only be in the
//!   last segment.
//! - There is always at least one segment (the active one); cleanup never
//!   deletes it, nor any segment holding a record at or above the cut.
//! - After a failed write or fsync the log accepts no more appends.
//!
//! Limits (defaults in [`WalConfig::default`]): `segment_bytes_max` 64 MiB,
//! `record_bytes_max` 1 MiB, `append_records_max` 65,536 records and
//! `append_bytes_max` 8 MiB per append call, `pending_appends_max` 64 queued
//! appends; so at most 512 MiB of appends wait in memory, and an appender
//! over the limit waits (backpressure).
//!
//! The WAL must never know about batches, DStreams or sled: it stores and
//! returns opaque byte records by number.
//!
//! Assertions: the invariants above are asserted where bytes cross a
//! boundary, in pairs: before a header, frame or seal is written (format,
//! writer) and right after one is decoded, scanned or recovered (format,
//! reader, recover, check). `assert!` where the check costs O(1) per group,
//! segment or open; `debug_assert!` per record or where it re-reads bytes
//! (a checksum recomputed, a file length queried), so release hot paths
//! pay nothing; `.ci/run` runs the tests in the debug profile too, and the
//! fuzz targets build with debug assertions. Anything damaged bytes can
//! cause is a [`WalError`], never an assertion.

internal! {
    mod error;
    mod format;
}
mod check;
mod dump;
mod marker;
mod reader;
mod recover;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use crate::storage::{DirLock, LockAttempt, RealFs, Storage, StorageFile};

pub use check::{repair_dir, verify_dir, DirReport, Problem, RepairReport, SegmentReport};
pub use dump::read_range;
pub use error::{Corruption, WalError};
pub use format::Lsn;
pub use marker::{MarkerDefect, MissingCause, SyncedEnd, MARKER_FILE};
pub use reader::{Record, WalReader};
pub use recover::{RecoveryReport, TornTail};

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Acknowledge after an fdatasync that covers the append; one fsync
    /// covers every append waiting at that moment (group commit).
    GroupCommit,
    /// Acknowledge as soon as the bytes are written to the OS, with no
    /// fsync. A crash or power loss can lose acknowledged records. For tests
    /// and benchmarks only; segment creation and sealing still fsync so the
    /// log stays recoverable.
    NoSyncUnsafe,
}

/// Configuration of one log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A segment file (header + frames + seal) never exceeds this.
    pub segment_bytes_max: u64,
    /// The largest record payload accepted.
    pub record_bytes_max: u32,
    /// The most records one append call may carry.
    pub append_records_max: usize,
    /// The most payload bytes one append call may carry.
    pub append_bytes_max: usize,
    /// How many append calls may wait for the writer; more callers block.
    pub pending_appends_max: usize,
    /// Spacing of the in-memory index that lets reads start mid-segment.
    pub index_interval_bytes: u64,
    /// Reads fetch this many bytes at a time (more if a frame is larger).
    pub read_chunk_bytes: usize,
    /// When an append is acknowledged: after an fsync (the default) or
    /// without one.
    pub sync: SyncPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 1 << 20,
            append_records_max: 65_536,
            append_bytes_max: 8 << 20,
            pending_appends_max: 64,
            index_interval_bytes: 64 << 10,
            read_chunk_bytes: 1 << 20,
            sync: SyncPolicy::GroupCommit,
        }
    }
}

impl WalConfig {
    /// Checks the limits against each other and the format.
    pub fn validate(&self) -> Result<(), WalError> {
        let overhead = (format::SEGMENT_HEADER_BYTES + 2 * format::FRAME_HEADER_BYTES) as u64;
        if self.record_bytes_max == 0 || self.record_bytes_max == format::SEAL_MARKER {
            return Err(WalError::Config(format!(
                "record_bytes_max must be between 1 and {}, got {}",
                format::SEAL_MARKER - 1,
                self.record_bytes_max
            )));
        }
        if self.segment_bytes_max < overhead + u64::from(self.record_bytes_max) {
            return Err(WalError::Config(format!(
                "segment_bytes_max ({}) must hold the segment header, one record of record_bytes_max ({}) and the seal: at least {} bytes",
                self.segment_bytes_max,
                self.record_bytes_max,
                overhead + u64::from(self.record_bytes_max)
            )));
        }
        if self.append_records_max == 0 || self.pending_appends_max == 0 {
            return Err(WalError::Config(
                "append_records_max and pending_appends_max must be at least 1".into(),
            ));
        }
        if self.append_bytes_max < self.record_bytes_max as usize {
            return Err(WalError::Config(format!(
                "append_bytes_max ({}) must be at least record_bytes_max ({})",
                self.append_bytes_max, self.record_bytes_max
            )));
        }
        if self.read_chunk_bytes < format::FRAME_HEADER_BYTES {
            return Err(WalError::Config(
                "read_chunk_bytes must be at least 16".into(),
            ));
        }
        Ok(())
    }
}

/// Counters for metrics and benchmarks. Monotonic.
#[derive(Debug, Default)]
pub struct WalStats {
    /// Append calls acknowledged (a [`Wal::sync`] call counts as one).
    pub appends: AtomicU64,
    /// Records acknowledged.
    pub records: AtomicU64,
    /// Bytes of record frames written to segment files (headers and seals
    /// not counted).
    pub bytes_written: AtomicU64,
    /// fdatasync calls on segment files by the writer.
    pub fsyncs: AtomicU64,
    /// Time spent in those fdatasync calls, in nanoseconds.
    pub fsync_nanos_total: AtomicU64,
    /// Segments started by rolling over a full one (not at open).
    pub segments_created: AtomicU64,
    /// Segments deleted by [`Wal::remove_segments_below`].
    pub segments_removed: AtomicU64,
    /// Calls of [`Wal::remove_segments_below`] that failed to delete a
    /// segment (the segment stays listed and is retried next time).
    pub segment_removals_failed: AtomicU64,
    /// Bytes of finished segments wholly below the last released position
    /// that are still on disk (see [`Wal::kept_bytes_below`]).
    pub kept_bytes: AtomicU64,
}

/// A plain copy of [`WalStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStatsSnapshot {
    /// Append calls acknowledged (a [`Wal::sync`] call counts as one).
    pub appends: u64,
    /// Records acknowledged.
    pub records: u64,
    /// Bytes of record frames written to segment files (headers and seals
    /// not counted).
    pub bytes_written: u64,
    /// fdatasync calls on segment files by the writer.
    pub fsyncs: u64,
    /// Time spent in those fdatasync calls, in nanoseconds.
    pub fsync_nanos_total: u64,
    /// Segments started by rolling over a full one (not at open).
    pub segments_created: u64,
    /// Segments deleted by [`Wal::remove_segments_below`].
    pub segments_removed: u64,
    /// Calls of [`Wal::remove_segments_below`] that failed to delete a
    /// segment.
    pub segment_removals_failed: u64,
    /// Bytes of finished segments wholly below the last released position
    /// still on disk.
    pub kept_bytes: u64,
}

/// One segment as the running log knows it.
#[derive(Debug)]
pub(crate) struct SegmentMeta {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    /// One past the last record once sealed; `OPEN` while active.
    pub(crate) sealed_end: AtomicU64,
    /// Sparse `(lsn, offset)` entries, sorted, spaced by
    /// `index_interval_bytes`; filled by the writer and by readers.
    pub(crate) index: Mutex<Vec<(Lsn, u64)>>,
}

pub(crate) const OPEN: u64 = u64::MAX;

impl SegmentMeta {
    pub(crate) fn new(first_lsn: Lsn, path: PathBuf, sealed_end: Option<Lsn>) -> Self {
        SegmentMeta {
            first_lsn,
            path,
            sealed_end: AtomicU64::new(sealed_end.unwrap_or(OPEN)),
            index: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn sealed_end(&self) -> Option<Lsn> {
        match self.sealed_end.load(Ordering::Acquire) {
            OPEN => None,
            end => Some(end),
        }
    }

    /// Adds an index entry if it keeps the index sorted and spaced.
    pub(crate) fn note_position(&self, lsn: Lsn, offset: u64, interval: u64) {
        assert!(
            lsn >= self.first_lsn
                && offset >= format::SEGMENT_HEADER_BYTES as u64
                && self.sealed_end().is_none_or(|end| lsn < end),
            "record {lsn} at byte {offset} is not in segment {}",
            self.path.display()
        );
        let mut index = self.index.lock().expect("segment index lock poisoned");
        let take = match index.last() {
            None => true,
            Some(&(last_lsn, last_off)) => {
                lsn > last_lsn && offset >= last_off.saturating_add(interval)
            }
        };
        if take {
            index.push((lsn, offset));
        }
    }

    /// The indexed position at or before `lsn`, if any.
    pub(crate) fn seek(&self, lsn: Lsn) -> Option<(Lsn, u64)> {
        let index = self.index.lock().expect("segment index lock poisoned");
        let i = index.partition_point(|&(l, _)| l <= lsn);
        if i == 0 {
            None
        } else {
            Some(index[i - 1])
        }
    }
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) config: WalConfig,
    pub(crate) segments: RwLock<Vec<Arc<SegmentMeta>>>,
    /// Records below this are acknowledged and may be read.
    pub(crate) acked_end: AtomicU64,
    /// Records below this are covered by an fsync.
    pub(crate) durable_end: AtomicU64,
    /// Set once by the writer when a write or fsync fails.
    pub(crate) failed: Mutex<Option<(&'static str, String)>>,
    pub(crate) stats: WalStats,
    /// Takes synced positions from the writer to the marker's keeper.
    pub(crate) marker: marker::Keeper,
}

impl Shared {
    pub(crate) fn failure(&self) -> Option<WalError> {
        let failed = self.failed.lock().expect("WAL failure lock poisoned");
        failed.as_ref().map(|(op, cause)| WalError::Failed {
            dir: self.dir.clone(),
            op,
            cause: cause.clone(),
        })
    }

    pub(crate) fn first_lsn(&self) -> Lsn {
        let segments = self.segments.read().expect("segment list lock poisoned");
        segments.first().map_or(0, |s| s.first_lsn)
    }
}

/// An open write-ahead log. Share it with `Arc<Wal>`; appends from many
/// threads or tasks are grouped under one fsync.
#[derive(Debug)]
pub struct Wal {
    shared: Arc<Shared>,
    tx: Option<tokio::sync::mpsc::Sender<writer::Request>>,
    writer: Option<JoinHandle<()>>,
    /// Writes the synced-end marker (`marker.rs`).
    keeper: Option<JoinHandle<()>>,
    /// The directory's lock, released when the log is dropped.
    _lock: DirLock,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` on real files.
    pub fn open(
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        Wal::open_with(Arc::new(RealFs), dir, config)
    }

    /// Opens the log through any `Storage`. Takes the directory's lock
    /// first ([`WalError::Locked`] if another open log holds it), then
    /// recovers: a torn tail of the last segment is truncated (and
    /// reported); anything else that fails a check, and a log that ends
    /// below its synced-end marker, is returned as [`WalError::Corrupt`].
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        storage
            .create_dir_all(&dir)
            .map_err(|e| WalError::io("create the WAL directory", &dir, e))?;
        let lock = lock_dir(storage.as_ref(), &dir)?;
        let recovered = recover::recover(storage.as_ref(), &dir, &config)?;
        // What recovery kept is durable: the marker says so before any
        // append (a log from before markers gets its first one here).
        marker::write(storage.as_ref(), &dir, &recovered.synced)?;
        let end = recovered.next_lsn;
        let active = recovered
            .segments
            .last()
            .cloned()
            .ok_or_else(|| WalError::Config("recovery produced no active segment".into()))?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            storage,
            config: config.clone(),
            segments: RwLock::new(recovered.segments),
            acked_end: AtomicU64::new(end),
            durable_end: AtomicU64::new(end),
            failed: Mutex::new(None),
            stats: WalStats::default(),
            marker: marker::Keeper::default(),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(config.pending_appends_max);
        let w = writer::Writer::new(
            Arc::clone(&shared),
            recovered.active_file,
            active,
            recovered.active_salt,
            recovered.active_bytes,
            end,
            rx,
        );
        let handle = std::thread::Builder::new()
            .name("weir-wal-writer".into())
            .spawn(move || w.run())
            .map_err(|e| WalError::io("start the writer thread for", &dir, e))?;
        let keeper_shared = Arc::clone(&shared);
        let synced = recovered.synced;
        let keeper = std::thread::Builder::new()
            .name("weir-wal-marker".into())
            .spawn(move || {
                let s = &keeper_shared;
                s.marker.run(Arc::clone(&s.storage), s.dir.clone(), synced);
            });
        let keeper = match keeper {
            Ok(k) => k,
            Err(e) => {
                // Stop the writer before reporting.
                drop(tx);
                let _ = handle.join();
                return Err(WalError::io("start the marker thread for", &dir, e));
            }
        };
        Ok((
            Wal {
                shared,
                tx: Some(tx),
                writer: Some(handle),
                keeper: Some(keeper),
                _lock: lock,
            },
            recovered.report,
        ))
    }

    /// Appends `records` and returns their record numbers once they are
    /// acknowledged (durable under [`SyncPolicy::GroupCommit`]). Blocks the
    /// calling thread; from async code use [`Wal::append_async`].
    pub fn append<R: AsRef<[u8]>>(&self, records: &[R]) -> Result<Range<Lsn>, WalError> {
        let (request, done) = self.prepare(records, false)?;
        self.sender()?
            .blocking_send(request)
            .map_err(|_| self.closed())?;
        done.blocking_recv().map_err(|_| self.closed())?
    }

    /// The async form of [`Wal::append`]: waits without blocking a runtime
    /// thread, including while the queue of pending appends is full.
    pub async fn append_async<R: AsRef<[u8]>>(
        &self,
        records: &[R],
    ) -> Result<Range<Lsn>, WalError> {
        let (request, done) = self.prepare(records, false)?;
        self.sender()?
            .send(request)
            .await
            .map_err(|_| self.closed())?;
        done.await.map_err(|_| self.closed())?
    }

    /// Forces an fsync of everything written and returns the durable end.
    /// Under group commit every acknowledged record is already durable; this
    /// is for [`SyncPolicy::NoSyncUnsafe`] logs and tests.
    pub fn sync(&self) -> Result<Lsn, WalError> {
        let (request, done) = self.prepare::<&[u8]>(&[], true)?;
        self.sender()?
            .blocking_send(request)
            .map_err(|_| self.closed())?;
        done.blocking_recv()
            .map_err(|_| self.closed())?
            .map(|r| r.end)
    }

    fn prepare<R: AsRef<[u8]>>(
        &self,
        records: &[R],
        force_sync: bool,
    ) -> Result<(writer::Request, writer::Done), WalError> {
        if let Some(e) = self.shared.failure() {
            return Err(e);
        }
        let config = &self.shared.config;
        let bytes: usize = records.iter().map(|r| r.as_ref().len()).sum();
        if records.len() > config.append_records_max || bytes > config.append_bytes_max {
            return Err(WalError::AppendTooLarge {
                records: records.len(),
                bytes,
                records_max: config.append_records_max,
                bytes_max: config.append_bytes_max,
            });
        }
        let mut data = Vec::with_capacity(bytes);
        let mut lens = Vec::with_capacity(records.len());
        for r in records {
            let r = r.as_ref();
            if r.len() > config.record_bytes_max as usize {
                return Err(WalError::RecordTooLarge {
                    bytes: r.len(),
                    max: config.record_bytes_max,
                });
            }
            data.extend_from_slice(r);
            lens.push(r.len() as u32);
        }
        Ok(writer::Request::new(data, lens, force_sync))
    }

    fn sender(&self) -> Result<&tokio::sync::mpsc::Sender<writer::Request>, WalError> {
        self.tx.as_ref().ok_or_else(|| self.closed())
    }

    fn closed(&self) -> WalError {
        self.shared.failure().unwrap_or_else(|| WalError::Closed {
            dir: self.shared.dir.clone(),
        })
    }

    /// Reads records `range` (which must lie within `first_lsn()..end()`),
    /// checking every frame's checksum and record number.
    pub fn read(&self, range: Range<Lsn>) -> Result<WalReader, WalError> {
        let available = self.first_lsn()..self.end();
        if range.start > range.end || range.start < available.start || range.end > available.end {
            return Err(WalError::OutOfRange {
                dir: self.shared.dir.clone(),
                requested: range,
                available,
            });
        }
        Ok(WalReader::new(Arc::clone(&self.shared), range))
    }

    /// Deletes every finished segment whose records are all below `lsn`.
    /// Never deletes the active segment or one holding a record `>= lsn`.
    /// The directory is fsynced after the deletions. Returns how many
    /// segments were removed. A segment that cannot be deleted stays
    /// listed (with every one after it), so the next call retries it, and
    /// the failure is counted in [`WalStats::segment_removals_failed`].
    pub fn remove_segments_below(&self, lsn: Lsn) -> Result<usize, WalError> {
        let removed = self.take_segments_below(lsn);
        if removed.is_empty() {
            return Ok(0);
        }
        for (i, seg) in removed.iter().enumerate() {
            if let Err(e) = self.shared.storage.remove(&seg.path) {
                self.put_back(&removed[i..]);
                self.shared
                    .stats
                    .segment_removals_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.count_removed(i);
                return Err(WalError::io("delete segment", &seg.path, e));
            }
            tracing::debug!(segment = %seg.path.display(), "removed WAL segment below the cleanup cut");
        }
        self.count_removed(removed.len());
        self.shared
            .storage
            .sync_dir(&self.shared.dir)
            .map_err(|e| WalError::io("fsync directory", &self.shared.dir, e))?;
        Ok(removed.len())
    }

    /// Unlists the finished segments whose records are all below `lsn`.
    fn take_segments_below(&self, lsn: Lsn) -> Vec<Arc<SegmentMeta>> {
        let mut segments = self
            .shared
            .segments
            .write()
            .expect("segment list lock poisoned");
        let mut n = 0;
        while n + 1 < segments.len() {
            match segments[n].sealed_end() {
                Some(end) if end <= lsn => n += 1,
                _ => break,
            }
        }
        let removed: Vec<Arc<SegmentMeta>> = segments.drain(..n).collect();
        // The active segment, and every record at or above the cut, stay.
        assert!(
            !segments.is_empty()
                && removed
                    .iter()
                    .all(|s| s.sealed_end().is_some_and(|end| end <= lsn)),
            "cleanup below {lsn} would drop live records"
        );
        removed
    }

    /// Lists again, in front, segments whose deletion failed.
    fn put_back(&self, kept: &[Arc<SegmentMeta>]) {
        let mut segments = self
            .shared
            .segments
            .write()
            .expect("segment list lock poisoned");
        assert!(
            kept.last()
                .zip(segments.first())
                .is_none_or(|(k, first)| k.sealed_end() == Some(first.first_lsn)),
            "segments put back must precede the listed ones"
        );
        let rest = std::mem::take(&mut *segments);
        segments.extend(kept.iter().cloned());
        segments.extend(rest);
    }

    fn count_removed(&self, n: usize) {
        self.shared
            .stats
            .segments_removed
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes of the finished segments whose records are all below `lsn`
    /// and that are still on disk (their deletion failed or was held back
    /// by a release hook): disk a backlog must keep counting. Also kept in
    /// [`WalStats::kept_bytes`]. A segment whose size cannot be read counts
    /// as `segment_bytes_max`.
    pub fn kept_bytes_below(&self, lsn: Lsn) -> u64 {
        let paths: Vec<PathBuf> = {
            let segments = self
                .shared
                .segments
                .read()
                .expect("segment list lock poisoned");
            let n = segments.len().saturating_sub(1);
            segments[..n]
                .iter()
                .take_while(|s| s.sealed_end().is_some_and(|end| end <= lsn))
                .map(|s| s.path.clone())
                .collect()
        };
        let max = self.shared.config.segment_bytes_max;
        let bytes = paths
            .iter()
            .map(|p| {
                self.shared
                    .storage
                    .open(p)
                    .and_then(|f| f.len())
                    .unwrap_or(max)
            })
            .sum();
        self.shared.stats.kept_bytes.store(bytes, Ordering::Relaxed);
        bytes
    }

    /// The oldest record still held.
    pub fn first_lsn(&self) -> Lsn {
        self.shared.first_lsn()
    }

    /// One past the last acknowledged record: the next append's first LSN
    /// once everything queued is written.
    pub fn end(&self) -> Lsn {
        self.shared.acked_end.load(Ordering::Acquire)
    }

    /// One past the last record covered by an fsync (the synced-end
    /// marker follows it, at most `MARKER_LAG_MS_MAX` behind).
    pub fn durable_end(&self) -> Lsn {
        self.shared.durable_end.load(Ordering::Acquire)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.shared.config
    }

    /// The storage the log lives on (files kept beside it, such as an
    /// ingest stream's producer snapshot, use it too).
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.shared.storage
    }

    /// `(first_lsn, path, sealed_end)` of every segment, oldest first.
    pub fn segments(&self) -> Vec<(Lsn, PathBuf, Option<Lsn>)> {
        let segments = self
            .shared
            .segments
            .read()
            .expect("segment list lock poisoned");
        segments
            .iter()
            .map(|s| (s.first_lsn, s.path.clone(), s.sealed_end()))
            .collect()
    }

    /// The counters since the log was opened.
    pub fn stats(&self) -> WalStatsSnapshot {
        let s = &self.shared.stats;
        WalStatsSnapshot {
            appends: s.appends.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            bytes_written: s.bytes_written.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            fsync_nanos_total: s.fsync_nanos_total.load(Ordering::Relaxed),
            segments_created: s.segments_created.load(Ordering::Relaxed),
            segments_removed: s.segments_removed.load(Ordering::Relaxed),
            segment_removals_failed: s.segment_removals_failed.load(Ordering::Relaxed),
            kept_bytes: s.kept_bytes.load(Ordering::Relaxed),
        }
    }

    /// Whether a failed write or fsync has stopped the log.
    pub fn failed(&self) -> Option<WalError> {
        self.shared.failure()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued and exit.
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "the WAL writer thread panicked");
            }
        }
        // The writer is done: the keeper writes the last synced position.
        self.shared.marker.close();
        if let Some(handle) = self.keeper.take() {
            if handle.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "the WAL marker thread panicked");
            }
        }
    }
}

/// Takes the lock of WAL directory `dir` (which exists): refused, naming
/// the holder, while another open log or a repair has it.
pub(crate) fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<DirLock, WalError> {
    let lock_file = dir.join(crate::storage::LOCK_FILE);
    match storage
        .try_lock(dir)
        .map_err(|e| WalError::io("lock", &lock_file, e))?
    {
        LockAttempt::Acquired(lock) => Ok(lock),
        LockAttempt::Held(holder) => Err(WalError::Locked {
            dir: dir.to_path_buf(),
            lock_file,
            holder,
        }),
    }
}

/// File name of the segment whose first record is `first_lsn`: 20 digits so
/// that names sort like numbers.
pub(crate) fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

/// The first record number a segment file name encodes, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files of `dir`, sorted by first record number.
pub(crate) fn list_segments(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let names = storage
        .list(dir)
        .map_err(|e| WalError::io("list the WAL directory", dir, e))?;
    let mut segments: Vec<(Lsn, PathBuf)> = names
        .iter()
        .filter_map(|n| parse_segment_name(n).map(|lsn| (lsn, dir.join(n))))
        .collect();
    segments.sort_unstable_by_key(|&(lsn, _)| lsn);
    Ok(segments)
}

/// Opens a segment and reads its length.
pub(crate) fn open_segment(
    storage: &dyn Storage,
    path: &Path,
) -> Result<(Box<dyn StorageFile>, u64), WalError> {
    let file = storage
        .open(path)
        .map_err(|e| WalError::io("open segment", path, e))?;
    let len = file
        .len()
        .map_err(|e| WalError::io("read the length of segment", path, e))?;
    Ok((file, len))
}

/// Reads a whole file into memory.
pub(crate) fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>, WalError> {
    let (file, len) = open_segment(storage, path)?;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| WalError::io("read segment", path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn config_validation_names_the_limit() {
        let c = WalConfig {
            segment_bytes_max: 100,
            record_bytes_max: 100,
            ..WalConfig::default()
        };
        let e = c.validate().expect_err("too small");
        assert!(e.to_string().contains("segment_bytes_max"), "{e}");
        assert!(WalConfig::default().validate().is_ok());
    }
}
