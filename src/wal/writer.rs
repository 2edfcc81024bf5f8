//! The writer thread: the only code that appends to segment files.
//!
//! It takes every append waiting in the bounded queue (at most
//! `pending_appends_max`), encodes their frames into one buffer, writes it,
//! issues one fdatasync for the whole group, and only then completes each
//! append. A segment that would exceed `segment_bytes_max` is sealed and
//! fsynced before the next one is created (file fsynced, directory fsynced).
//!
//! After any failed write or fsync it marks the log failed and answers every
//! later append with that error: after a failed fsync the kernel may have
//! dropped the dirty pages, so retrying could acknowledge lost data.
//!
//! Assertions (see `wal/mod.rs`): before bytes go to a segment, a request
//! is within the append limits, record numbers continue densely, a segment
//! plus its seal stays within `segment_bytes_max`, and (debug builds) the
//! file is exactly as long as the writer believes, before and after each
//! write.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::error::WalError;
use super::format::{self, Lsn};
use super::{segment_name, SegmentMeta, Shared, SyncPolicy};
use crate::storage::StorageFile;

pub(crate) type Done = tokio::sync::oneshot::Receiver<Result<Range<Lsn>, WalError>>;

/// One append call: its payloads back to back, their lengths, and where to
/// send the result.
pub(crate) struct Request {
    data: Vec<u8>,
    lens: Vec<u32>,
    force_sync: bool,
    done: tokio::sync::oneshot::Sender<Result<Range<Lsn>, WalError>>,
}

impl Request {
    pub(crate) fn new(data: Vec<u8>, lens: Vec<u32>, force_sync: bool) -> (Request, Done) {
        let (done, rx) = tokio::sync::oneshot::channel();
        (
            Request {
                data,
                lens,
                force_sync,
                done,
            },
            rx,
        )
    }
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn StorageFile>,
    segment: Arc<SegmentMeta>,
    /// The active segment's checksum salt (from its header).
    salt: u32,
    /// Bytes in the active segment file (header and frames written).
    segment_bytes: u64,
    next_lsn: Lsn,
    /// The next file offset at which the segment's index takes an entry:
    /// the index lock is taken once per `index_interval_bytes`, not per
    /// record.
    index_next_offset: u64,
    buf: Vec<u8>,
    rx: tokio::sync::mpsc::Receiver<Request>,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        file: Box<dyn StorageFile>,
        segment: Arc<SegmentMeta>,
        salt: u32,
        segment_bytes: u64,
        next_lsn: Lsn,
        rx: tokio::sync::mpsc::Receiver<Request>,
    ) -> Writer {
        Writer {
            shared,
            file,
            segment,
            salt,
            segment_bytes,
            next_lsn,
            index_next_offset: 0,
            buf: Vec::new(),
            rx,
        }
    }

    pub(crate) fn run(mut self) {
        let group_max = self.shared.config.pending_appends_max;
        let mut group: Vec<Request> = Vec::with_capacity(group_max);
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            // Everything already waiting joins this fsync; bounded by the
            // queue's capacity, so a group never grows without limit.
            while group.len() < group_max {
                match self.rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            if self.shared.failure().is_some() {
                for r in group.drain(..) {
                    let _ = r.done.send(Err(self.failure()));
                }
                continue;
            }
            match self.write_group(&group) {
                Ok(ranges) => {
                    for (r, range) in group.drain(..).zip(ranges) {
                        // The appender may have given up waiting; that is fine.
                        let _ = r.done.send(Ok(range));
                    }
                }
                Err((op, e)) => {
                    tracing::error!(
                        dir = %self.shared.dir.display(),
                        error = %e,
                        "WAL {op} failed; the log now refuses appends. Restart weir to recover from what is on disk"
                    );
                    {
                        let mut failed = self
                            .shared
                            .failed
                            .lock()
                            .expect("WAL failure lock poisoned");
                        *failed = Some((op, e.to_string()));
                    }
                    for r in group.drain(..) {
                        let _ = r.done.send(Err(self.failure()));
                    }
                }
            }
        }
    }

    fn failure(&self) -> WalError {
        self.shared.failure().unwrap_or_else(|| WalError::Closed {
            dir: self.shared.dir.clone(),
        })
    }

    /// Writes and syncs one group; returns each request's record numbers.
    fn write_group(
        &mut self,
        group: &[Request],
    ) -> Result<Vec<Range<Lsn>>, (&'static str, WalError)> {
        let group_start = self.next_lsn;
        let mut ranges = Vec::with_capacity(group.len());
        self.buf.clear();
        for req in group {
            ranges.push(self.encode_request(req)?);
        }
        let records = self.next_lsn - group_start;
        // Dense: the group continues the log and each request the previous.
        debug_assert!(
            ranges.windows(2).all(|w| w[0].end == w[1].start)
                && ranges
                    .first()
                    .map_or(records == 0, |r| r.start == group_start),
            "record numbers of a group are not dense"
        );
        self.flush_buf()?;
        let written_end = self.next_lsn;
        let acked = self.shared.acked_end.load(Ordering::Acquire);
        assert!(
            acked <= written_end,
            "acknowledged end {acked} ahead of the written end {written_end}"
        );
        let force_sync = group.iter().any(|r| r.force_sync);
        if self.shared.config.sync == SyncPolicy::GroupCommit || force_sync {
            self.sync_active()?;
            self.shared
                .durable_end
                .store(written_end, Ordering::Release);
            self.publish_synced(self.segment_bytes);
        }
        self.shared.acked_end.store(written_end, Ordering::Release);
        let stats = &self.shared.stats;
        stats
            .appends
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        stats.records.fetch_add(records, Ordering::Relaxed);
        Ok(ranges)
    }

    /// Encodes one request's frames into the buffer, rolling to a new
    /// segment first whenever the next frame and a seal would not fit;
    /// returns the request's record numbers.
    fn encode_request(&mut self, req: &Request) -> Result<Range<Lsn>, (&'static str, WalError)> {
        let shared = Arc::clone(&self.shared);
        let config = &shared.config;
        let interval = config.index_interval_bytes;
        let seal_bytes = format::FRAME_HEADER_BYTES as u64;
        // What `Wal::prepare` checked before queueing the request.
        assert!(
            req.lens.len() <= config.append_records_max
                && req.data.len() <= config.append_bytes_max,
            "an append of {} records / {} bytes passed the limits",
            req.lens.len(),
            req.data.len()
        );
        let start = self.next_lsn;
        let mut at = 0usize;
        for &len in &req.lens {
            debug_assert!(len <= config.record_bytes_max, "record over the limit");
            let payload = &req.data[at..at + len as usize];
            at += len as usize;
            let frame = format::frame_bytes(payload.len()) as u64;
            let used = self.segment_bytes + self.buf.len() as u64;
            let has_records = self.next_lsn > self.segment.first_lsn;
            if has_records && used + frame + seal_bytes > config.segment_bytes_max {
                self.flush_buf()?;
                self.roll()?;
            }
            let offset = self.segment_bytes + self.buf.len() as u64;
            if offset >= self.index_next_offset {
                self.segment.note_position(self.next_lsn, offset, interval);
                self.index_next_offset = offset.saturating_add(interval);
            }
            format::encode_frame(&mut self.buf, self.salt, self.next_lsn, payload);
            self.next_lsn += 1;
            debug_assert!(
                self.segment_bytes + self.buf.len() as u64 + seal_bytes <= config.segment_bytes_max,
                "segment {} would outgrow segment_bytes_max",
                self.segment.path.display()
            );
        }
        assert_eq!(at, req.data.len(), "record lengths do not cover the data");
        Ok(start..self.next_lsn)
    }

    fn flush_buf(&mut self) -> Result<(), (&'static str, WalError)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        debug_assert_file_len(&*self.file, self.segment_bytes, &self.segment.path);
        self.file.append(&self.buf).map_err(|e| {
            (
                "write",
                WalError::io("append to segment", &self.segment.path, e),
            )
        })?;
        self.segment_bytes += self.buf.len() as u64;
        debug_assert_file_len(&*self.file, self.segment_bytes, &self.segment.path);
        self.shared
            .stats
            .bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), (&'static str, WalError)> {
        let t = Instant::now();
        self.file.sync_data().map_err(|e| {
            (
                "fsync",
                WalError::io("fsync segment", &self.segment.path, e),
            )
        })?;
        let stats = &self.shared.stats;
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        stats
            .fsync_nanos_total
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals the active segment (trailer + fsync) and starts the next one
    /// (header + fsync, then directory fsync). The order guarantees that a
    /// torn tail can only ever be in the last segment.
    fn roll(&mut self) -> Result<(), (&'static str, WalError)> {
        let end = self.next_lsn;
        // The seal goes right after the last frame of a non-empty segment.
        assert!(
            self.buf.is_empty() && end > self.segment.first_lsn,
            "seal of segment {} with unwritten frames or no record",
            self.segment.path.display()
        );
        assert!(
            self.segment.sealed_end().is_none(),
            "segment {} sealed twice",
            self.segment.path.display()
        );
        let mut seal = Vec::with_capacity(format::FRAME_HEADER_BYTES);
        format::encode_seal(&mut seal, self.salt, end);
        debug_assert_file_len(&*self.file, self.segment_bytes, &self.segment.path);
        self.file
            .append(&seal)
            .map_err(|e| ("write", WalError::io("seal segment", &self.segment.path, e)))?;
        debug_assert_file_len(
            &*self.file,
            self.segment_bytes + seal.len() as u64,
            &self.segment.path,
        );
        self.sync_active()?;
        self.segment.sealed_end.store(end, Ordering::Release);
        // Records up to here are durable now, whatever the policy says.
        self.shared.durable_end.fetch_max(end, Ordering::AcqRel);

        let next = create_segment(&self.shared, end).map_err(|e| ("create segment", e))?;
        assert_eq!(next.meta.first_lsn, end, "segments must be dense");
        self.file = next.file;
        self.segment = next.meta;
        self.salt = next.salt;
        self.segment_bytes = format::SEGMENT_HEADER_BYTES as u64;
        self.index_next_offset = 0;
        // The new segment's header and directory entry are durable.
        self.publish_synced(self.segment_bytes);
        Ok(())
    }

    /// Hands the marker keeper the position just fsynced: `offset` bytes
    /// of the active segment, records below `next_lsn`.
    fn publish_synced(&self, offset: u64) {
        self.shared.marker.publish(super::marker::SyncedEnd {
            segment_first: self.segment.first_lsn,
            offset,
            end_lsn: self.next_lsn,
        });
    }
}

/// A segment just created by [`create_segment`].
pub(crate) struct NewSegment {
    file: Box<dyn StorageFile>,
    meta: Arc<SegmentMeta>,
    salt: u32,
}

/// Creates the segment starting at `first_lsn`: file, header, fsync, then
/// the directory fsync; and adds it to the segment list.
pub(crate) fn create_segment(shared: &Shared, first_lsn: Lsn) -> Result<NewSegment, WalError> {
    let path = shared.dir.join(segment_name(first_lsn));
    let (file, salt) = new_segment_file(
        shared.storage.as_ref(),
        &shared.dir,
        &path,
        first_lsn,
        shared.config.record_bytes_max,
    )?;
    let meta = Arc::new(SegmentMeta::new(first_lsn, path, None));
    {
        let mut segments = shared.segments.write().expect("segment list lock poisoned");
        // The new segment starts where the last one was sealed.
        assert!(
            segments
                .last()
                .is_none_or(|s| s.sealed_end() == Some(first_lsn)),
            "segment {first_lsn} does not continue the sealed log"
        );
        segments.push(Arc::clone(&meta));
    }
    shared
        .stats
        .segments_created
        .fetch_add(1, Ordering::Relaxed);
    Ok(NewSegment { file, meta, salt })
}

/// Writes a new segment file with its header (and a fresh salt) and makes
/// file and directory entry durable. Returns the file and its salt.
pub(crate) fn new_segment_file(
    storage: &dyn super::Storage,
    dir: &std::path::Path,
    path: &std::path::Path,
    first_lsn: Lsn,
    record_bytes_max: u32,
) -> Result<(Box<dyn StorageFile>, u32), WalError> {
    let salt = format::new_salt();
    let mut file = storage
        .create_new(path)
        .map_err(|e| WalError::io("create segment", path, e))?;
    file.append(&format::encode_segment_header(
        first_lsn,
        record_bytes_max,
        salt,
    ))
    .map_err(|e| WalError::io("write the header of segment", path, e))?;
    debug_assert_file_len(&*file, format::SEGMENT_HEADER_BYTES as u64, path);
    file.sync_data()
        .map_err(|e| WalError::io("fsync segment", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    tracing::debug!(segment = %path.display(), first_lsn, "created WAL segment");
    Ok((file, salt))
}

/// Debug builds: asserts that `file` is `expected` bytes long, i.e. that
/// the next append lands at the offset the writer computed (a second
/// writer or a lost write would break it). A failed length query is
/// ignored here: it is no bug of the writer's, and the write reports it.
fn debug_assert_file_len(file: &dyn StorageFile, expected: u64, path: &std::path::Path) {
    if cfg!(debug_assertions) {
        if let Ok(len) = file.len() {
            assert_eq!(
                len,
                expected,
                "segment {} is {len} bytes long, the writer expected {expected}",
                path.display()
            );
        }
    }
}
