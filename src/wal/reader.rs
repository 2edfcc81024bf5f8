//! Range reads: records `start..end` in order, every frame checked
//! (checksum and record number) right after it is read.
//!
//! A reader holds one segment open and a buffer of `read_chunk_bytes` (or one
//! frame, if larger): memory is bounded by `max(read_chunk_bytes,
//! record_bytes_max + 16)` per reader. Reads start at 64 KiB and double up
//! to `read_chunk_bytes`, and the buffer is reused (zeroed only where it
//! grows), so a short range costs a short read. It starts at the nearest indexed
//! position at or before `start` and records index positions it passes, so
//! later reads of finished segments start close to their target.
//!
//! Must never: return a payload that failed its checksum, or read past the
//! acknowledged end (the range was checked against it when created).
//!
//! Assertions (see `wal/mod.rs`): a cursor starts at or before the record
//! it wants and never passes it; a decoded record is the one asked for and
//! lies whole in the buffer within the segment's record limit.

use std::ops::Range;
use std::sync::Arc;

use super::error::{Corruption, WalError};
use super::format::{self, Decoded, Lsn};
use super::{SegmentMeta, Shared};
use crate::storage::StorageFile;

/// An owned record, as the [`Iterator`] impl of [`WalReader`] yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's number in the log.
    pub lsn: Lsn,
    /// The bytes that were appended.
    pub payload: Vec<u8>,
}

struct Cursor {
    meta: Arc<SegmentMeta>,
    file: Box<dyn StorageFile>,
    header: format::SegmentHeader,
    /// `buf[..len]` holds the file's bytes `buf_offset..buf_offset + len`;
    /// the bytes past `len` are stale (kept initialized so that a refill
    /// reads into them without zeroing the buffer again).
    buf: Vec<u8>,
    len: usize,
    buf_offset: u64,
    /// Position of the next frame within `buf`.
    pos: usize,
    /// Record number of the next frame.
    lsn: Lsn,
    /// File offset from which the next frame is offered to the segment's
    /// index: one lock per `index_interval_bytes` read, not one per frame.
    note_from: u64,
    /// Bytes the next refill asks for: [`FIRST_READ_BYTES`], doubling per
    /// refill up to `read_chunk_bytes`, so a short range (a batch's share
    /// is often far below a chunk) neither zeroes nor reads a whole chunk.
    read_ahead: usize,
}

/// The first refill of a cursor reads at most this much (64 KiB).
const FIRST_READ_BYTES: usize = 64 << 10;

/// Reads a range of records; see the module docs.
pub struct WalReader {
    shared: Arc<Shared>,
    next: Lsn,
    end: Lsn,
    cursor: Option<Cursor>,
    failed: bool,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("dir", &self.shared.dir)
            .field("next", &self.next)
            .field("end", &self.end)
            .finish()
    }
}

impl WalReader {
    pub(crate) fn new(shared: Arc<Shared>, range: Range<Lsn>) -> WalReader {
        assert!(
            range.start <= range.end,
            "a reversed range reached the reader"
        );
        WalReader {
            shared,
            next: range.start,
            end: range.end,
            cursor: None,
            failed: false,
        }
    }

    /// The next record, borrowed from the reader's buffer: no allocation
    /// per record. `None` once the range is exhausted or after an error.
    pub fn next_ref(&mut self) -> Option<Result<(Lsn, &[u8]), WalError>> {
        if self.failed || self.next >= self.end {
            return None;
        }
        match self.advance() {
            Ok(payload) => {
                let lsn = self.next;
                self.next += 1;
                let cursor = self.cursor.as_ref()?;
                // What the caller relies on: record `lsn`, whole, in limits.
                debug_assert!(
                    cursor.lsn == lsn + 1
                        && payload.end <= cursor.len
                        && payload.len() <= cursor.header.record_bytes_max as usize,
                    "record {lsn} read from the wrong place"
                );
                Some(Ok((lsn, &cursor.buf[payload])))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }

    /// Calls `f` for every remaining record; stops at the first error.
    pub fn for_each_ref(mut self, mut f: impl FnMut(Lsn, &[u8])) -> Result<(), WalError> {
        while let Some(r) = self.next_ref() {
            let (lsn, payload) = r?;
            f(lsn, payload);
        }
        Ok(())
    }

    /// Positions the cursor on record `self.next`; returns its payload's
    /// range in the cursor's buffer.
    fn advance(&mut self) -> Result<Range<usize>, WalError> {
        // Bounded: at most one switch to the next segment per record.
        for _ in 0..2 {
            let needs_segment = match &self.cursor {
                None => true,
                Some(c) => c.meta.sealed_end().is_some_and(|end| self.next >= end),
            };
            if needs_segment {
                self.cursor = Some(self.open_segment()?);
            }
            match self.scan_to_next()? {
                Some(payload) => return Ok(payload),
                // Sealed while we read it: the record is in the next one.
                None => self.cursor = None,
            }
        }
        Err(WalError::Closed {
            dir: self.shared.dir.clone(),
        })
    }

    /// Decodes forward in the current segment up to record `self.next`.
    /// `Ok(None)` means the segment's seal came first.
    fn scan_to_next(&mut self) -> Result<Option<Range<usize>>, WalError> {
        let interval = self.shared.config.index_interval_bytes;
        let chunk = self.shared.config.read_chunk_bytes;
        let dir = &self.shared.dir;
        let Some(cursor) = self.cursor.as_mut() else {
            return Err(WalError::Closed { dir: dir.clone() });
        };
        let corrupt = |cursor: &Cursor, detail: Corruption| WalError::Corrupt {
            dir: dir.clone(),
            path: cursor.meta.path.clone(),
            offset: cursor.buf_offset + cursor.pos as u64,
            detail,
        };
        loop {
            debug_assert!(
                cursor.lsn <= self.next,
                "the cursor passed record {}",
                self.next
            );
            let valid = &cursor.buf[..cursor.len];
            match format::decode_frame(valid, cursor.pos, cursor.lsn, &cursor.header) {
                Decoded::Record {
                    lsn,
                    payload,
                    frame_len,
                } => {
                    debug_assert_eq!(lsn, cursor.lsn, "decoded a record not asked for");
                    let offset = cursor.buf_offset + cursor.pos as u64;
                    if offset >= cursor.note_from {
                        cursor.meta.note_position(lsn, offset, interval);
                        cursor.note_from = offset.saturating_add(interval);
                    }
                    cursor.pos += frame_len;
                    cursor.lsn += 1;
                    if lsn == self.next {
                        return Ok(Some(payload));
                    }
                }
                Decoded::Incomplete { needed } => {
                    let ahead = cursor.read_ahead.min(chunk);
                    cursor.read_ahead = ahead.saturating_mul(2);
                    if cursor.refill(needed.max(ahead))? == 0 {
                        let found = cursor.len - cursor.pos;
                        return Err(corrupt(
                            cursor,
                            Corruption::Frame(format::FormatError::Short { needed, found }),
                        ));
                    }
                }
                Decoded::Seal { end_lsn } if end_lsn == self.next => {
                    debug_assert_eq!(end_lsn, cursor.lsn, "a seal must follow its last record");
                    return Ok(None);
                }
                Decoded::Seal { end_lsn } => {
                    return Err(corrupt(
                        cursor,
                        Corruption::SealMismatch {
                            counted_end: cursor.lsn,
                            seal_end: end_lsn,
                        },
                    ))
                }
                Decoded::Bad(e) => return Err(corrupt(cursor, Corruption::Frame(e))),
            }
        }
    }

    fn open_segment(&self) -> Result<Cursor, WalError> {
        let meta = {
            let segments = self
                .shared
                .segments
                .read()
                .expect("segment list lock poisoned");
            let i = segments.partition_point(|s| s.first_lsn <= self.next);
            if i == 0 {
                return Err(WalError::OutOfRange {
                    dir: self.shared.dir.clone(),
                    requested: self.next..self.end,
                    available: segments.first().map_or(0, |s| s.first_lsn)
                        ..self
                            .shared
                            .acked_end
                            .load(std::sync::atomic::Ordering::Acquire),
                });
            }
            Arc::clone(&segments[i - 1])
        };
        let file = self
            .shared
            .storage
            .open(&meta.path)
            .map_err(|e| WalError::io("open segment", &meta.path, e))?;
        let mut head = [0u8; format::SEGMENT_HEADER_BYTES];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| WalError::io("read the header of segment", &meta.path, e))?;
        let header = format::decode_segment_header(&head).map_err(|e| WalError::Corrupt {
            dir: self.shared.dir.clone(),
            path: meta.path.clone(),
            offset: 0,
            detail: Corruption::Frame(e),
        })?;
        let (lsn, offset) = meta
            .seek(self.next)
            .unwrap_or((meta.first_lsn, format::SEGMENT_HEADER_BYTES as u64));
        // The cursor starts inside this segment, at or before its target.
        assert!(
            meta.first_lsn <= lsn
                && lsn <= self.next
                && offset >= format::SEGMENT_HEADER_BYTES as u64,
            "segment {} index points at record {lsn}, byte {offset}, for record {}",
            meta.path.display(),
            self.next
        );
        Ok(Cursor {
            meta,
            file,
            header,
            buf: Vec::new(),
            len: 0,
            buf_offset: offset,
            pos: 0,
            lsn,
            note_from: offset,
            read_ahead: FIRST_READ_BYTES,
        })
    }
}

impl Cursor {
    /// Drops consumed bytes and reads at least `want` more bytes past `pos`
    /// if the file has them; returns how many bytes were added.
    /// The buffer is zeroed only where it grows: consumed bytes are moved
    /// out of the way, and the read lands on the stale bytes behind them.
    fn refill(&mut self, want: usize) -> Result<usize, WalError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.buf_offset += self.pos as u64;
            self.pos = 0;
        }
        let have = self.len;
        let target = want.max(have + 1);
        if self.buf.len() < target {
            self.buf.resize(target, 0);
        }
        let mut filled = have;
        while filled < target {
            let n = self
                .file
                .read_at(&mut self.buf[filled..], self.buf_offset + filled as u64)
                .map_err(|e| WalError::io("read segment", &self.meta.path, e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.len = filled;
        Ok(filled - have)
    }
}

impl Iterator for WalReader {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| {
            r.map(|(lsn, p)| Record {
                lsn,
                payload: p.to_vec(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Wal, WalConfig};

    /// Records shorter and longer than the read chunk, read in ranges that
    /// start anywhere: the buffer is reused across refills (consumed bytes
    /// moved out, stale bytes read over), grows for a long frame and keeps
    /// serving short ones after it; with the default chunk, reads grow from
    /// 64 KiB through every doubling.
    #[test]
    fn reused_buffer_reads_every_record_whole() {
        let tiny = WalConfig {
            segment_bytes_max: 1024,
            record_bytes_max: 300,
            index_interval_bytes: 64,
            read_chunk_bytes: 40,
            ..WalConfig::default()
        };
        read_back(tiny, 60);
        read_back(WalConfig::default(), 12_000);
    }

    fn read_back(config: WalConfig, n: u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (wal, _) = Wal::open(dir.path(), config).expect("open");
        let rec = |i: u64| -> Vec<u8> {
            let n = [3, 30, 250, 0, 41, 7][(i % 6) as usize];
            (0..n)
                .map(|j| (i as u8).wrapping_mul(31).wrapping_add(j as u8))
                .collect()
        };
        let records: Vec<Vec<u8>> = (0..n).map(rec).collect();
        wal.append(&records).expect("append");
        wal.sync().expect("sync");
        for start in [0, 1, 2, 5, 17, n - 1] {
            let mut r = wal.read(start..n).expect("range");
            let mut want = start;
            while let Some(x) = r.next_ref() {
                let (lsn, payload) = x.expect("record");
                assert_eq!((lsn, payload), (want, &rec(want)[..]), "from {start}");
                want += 1;
            }
            assert_eq!(want, n, "from {start}");
        }
    }
}
