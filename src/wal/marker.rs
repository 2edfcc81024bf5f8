//! The synced-end marker: `DIR/synced-end`, a 48-byte CRC-framed record of
//! how far the log is known to be fsynced, so that open and verify can tell
//! a torn write (bytes after the last fsync: cut) from damage to fsynced,
//! acknowledged bytes (refused, naming the missing records).
//!
//! The rule it keeps: every record below the marker's `end_lsn` was covered
//! by an fsync (and so may have been acknowledged) before the marker was
//! written. The marker may lag behind the log, never run ahead of it.
//!
//! Owns: the marker's bytes (`docs/wal-format.md`), reading it, writing it
//! atomically through `Storage` (temp file, fsync, rename, directory
//! fsync), and the keeper thread that writes it after group commits.
//!
//! Limits: a marker write (temp file, two fsyncs, a rename) costs about
//! as much device time as three group commits, so it is written when the
//! log goes quiet ([`MARKER_QUIET_MS`] without a new fsync), or
//! [`MARKER_LAG_MS_MAX`] after the oldest unwritten position while appends
//! keep coming, and never twice within [`MARKER_INTERVAL_MS_MIN`]: at most
//! 10 writes a second, and 1 under a continuous load. It lags the
//! acknowledged end by at most `MARKER_LAG_MS_MAX` plus one write while
//! the log is busy, and by `MARKER_QUIET_MS` plus one write once it goes
//! idle; at close the last synced position is written.
//!
//! Must never: write a position that was not fsynced, or block an append
//! (the writer only hands a position over; this thread does the I/O).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::error::WalError;
use super::format::{self, le_u16, le_u64, Lsn, ScanEnd};
use crate::storage::Storage;

/// The marker's file name inside a WAL directory.
pub const MARKER_FILE: &str = "synced-end";
/// `WEIRSYN` then a NUL: the marker's first 8 bytes.
pub const MARKER_MAGIC: [u8; 8] = *b"WEIRSYN\0";
/// The marker format this build writes and reads.
pub const MARKER_VERSION: u16 = 1;
/// Bytes in a marker file.
pub const MARKER_BYTES: usize = 48;
/// The shortest time between two marker writes, in milliseconds.
pub const MARKER_INTERVAL_MS_MIN: u64 = 100;
/// How long without a new fsync makes the log "quiet" (the marker is then
/// written), in milliseconds.
pub const MARKER_QUIET_MS: u64 = 10;
/// The longest a synced position waits for its marker write while appends
/// keep coming, in milliseconds.
pub const MARKER_LAG_MS_MAX: u64 = 1000;

/// What the marker says: records below `end_lsn` are durable, and they end
/// at byte `offset` of the segment whose first record is `segment_first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedEnd {
    /// First LSN (file name) of the segment the position is in.
    pub segment_first: Lsn,
    /// Bytes of that segment covered by an fsync (header, frames and, once
    /// sealed, the seal).
    pub offset: u64,
    /// One past the last record covered by an fsync.
    pub end_lsn: Lsn,
}

/// Why a marker file fails its checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerDefect {
    /// The file is not [`MARKER_BYTES`] long.
    Length {
        /// Its length, in bytes.
        found: usize,
    },
    /// The first 8 bytes are not [`MARKER_MAGIC`].
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion {
        /// The version stored.
        found: u16,
    },
    /// The CRC of bytes 0..44 does not match the stored one.
    Checksum {
        /// The CRC stored in the file.
        expected: u32,
        /// The CRC computed from its bytes.
        actual: u32,
    },
    /// The fields contradict each other (an end before the segment's
    /// first record, an offset inside the header, more records than bytes).
    Inconsistent,
}

impl std::fmt::Display for MarkerDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkerDefect::Length { found } => {
                write!(f, "expected {MARKER_BYTES} bytes, found {found}")
            }
            MarkerDefect::BadMagic => write!(f, "the file does not start with WEIRSYN"),
            MarkerDefect::UnsupportedVersion { found } => write!(
                f,
                "marker format version {found} is not supported (this build reads version {MARKER_VERSION})"
            ),
            MarkerDefect::Checksum { expected, actual } => write!(
                f,
                "checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            MarkerDefect::Inconsistent => write!(f, "its fields contradict each other"),
        }
    }
}

/// Why records the marker proves durable are not in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingCause {
    /// The bytes where they should start fail a check.
    Damaged(format::FormatError),
    /// The segment ends, at a record boundary, at this length in bytes.
    EndsEarly {
        /// The segment file's length, in bytes.
        file_bytes: u64,
    },
    /// The segment file that held them is gone.
    SegmentMissing,
    /// The segment's header is missing or zeroed.
    HeaderMissing,
}

impl std::fmt::Display for MissingCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissingCause::Damaged(e) => write!(f, "the bytes here fail a check ({e})"),
            MissingCause::EndsEarly { file_bytes } => write!(
                f,
                "the segment ends at byte {file_bytes}, at a record boundary (it was truncated)"
            ),
            MissingCause::SegmentMissing => write!(f, "the segment file is missing"),
            MissingCause::HeaderMissing => write!(f, "the segment's header is missing or zeroed"),
        }
    }
}

/// Encodes a marker.
pub fn encode(m: &SyncedEnd) -> [u8; MARKER_BYTES] {
    let mut b = [0u8; MARKER_BYTES];
    b[0..8].copy_from_slice(&MARKER_MAGIC);
    b[8..10].copy_from_slice(&MARKER_VERSION.to_le_bytes());
    b[10..12].copy_from_slice(&(MARKER_BYTES as u16).to_le_bytes());
    b[16..24].copy_from_slice(&m.segment_first.to_le_bytes());
    b[24..32].copy_from_slice(&m.offset.to_le_bytes());
    b[32..40].copy_from_slice(&m.end_lsn.to_le_bytes());
    let crc = crc32fast::hash(&b[0..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode(&b), Ok(*m), "an encoded marker must decode");
    b
}

/// Decodes and checks a marker file's bytes.
pub fn decode(b: &[u8]) -> Result<SyncedEnd, MarkerDefect> {
    if b.len() != MARKER_BYTES {
        return Err(MarkerDefect::Length { found: b.len() });
    }
    if b[0..8] != MARKER_MAGIC {
        return Err(MarkerDefect::BadMagic);
    }
    let expected = format::le_u32(b, 44);
    let actual = crc32fast::hash(&b[0..44]);
    if expected != actual {
        return Err(MarkerDefect::Checksum { expected, actual });
    }
    let version = le_u16(b, 8);
    if version != MARKER_VERSION {
        return Err(MarkerDefect::UnsupportedVersion { found: version });
    }
    let m = SyncedEnd {
        segment_first: le_u64(b, 16),
        offset: le_u64(b, 24),
        end_lsn: le_u64(b, 32),
    };
    let header = format::SEGMENT_HEADER_BYTES as u64;
    let frames = m.end_lsn.checked_sub(m.segment_first);
    let fits = frames.is_some_and(|n| {
        m.offset >= header
            && n.checked_mul(format::FRAME_HEADER_BYTES as u64)
                .is_some_and(|b| b <= m.offset - header)
    });
    if le_u16(b, 10) as usize != MARKER_BYTES || m.end_lsn > format::LSN_MAX || !fits {
        return Err(MarkerDefect::Inconsistent);
    }
    Ok(m)
}

/// The marker's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(MARKER_FILE)
}

/// Reads the marker of `dir`: `None` if there is none (a log written
/// before markers existed), else what it says or why it is unreadable.
pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Option<Result<SyncedEnd, MarkerDefect>>, WalError> {
    let path = path(dir);
    if !storage
        .exists(&path)
        .map_err(|e| WalError::io("check for the synced-end marker", &path, e))?
    {
        return Ok(None);
    }
    let file = storage
        .open(&path)
        .map_err(|e| WalError::io("open the synced-end marker", &path, e))?;
    let len = file
        .len()
        .map_err(|e| WalError::io("read the length of the synced-end marker", &path, e))?;
    if len != MARKER_BYTES as u64 {
        let found = usize::try_from(len).unwrap_or(usize::MAX);
        return Ok(Some(Err(MarkerDefect::Length { found })));
    }
    let mut b = [0u8; MARKER_BYTES];
    file.read_exact_at(&mut b, 0)
        .map_err(|e| WalError::io("read the synced-end marker", &path, e))?;
    Ok(Some(decode(&b)))
}

/// Writes the marker of `dir` atomically: temp file, fsync, rename over
/// the marker, directory fsync. A crash leaves the old marker or the new
/// one; both are lower bounds of what is durable.
pub(crate) fn write(storage: &dyn Storage, dir: &Path, m: &SyncedEnd) -> Result<(), WalError> {
    let target = path(dir);
    let tmp = dir.join(format!(".{MARKER_FILE}.tmp"));
    if storage
        .exists(&tmp)
        .map_err(|e| WalError::io("check for a stale temporary file", &tmp, e))?
    {
        storage
            .remove(&tmp)
            .map_err(|e| WalError::io("remove a stale temporary file", &tmp, e))?;
    }
    let mut file = storage
        .create_new(&tmp)
        .map_err(|e| WalError::io("create", &tmp, e))?;
    file.append(&encode(m))
        .map_err(|e| WalError::io("write", &tmp, e))?;
    file.sync_data()
        .map_err(|e| WalError::io("fsync", &tmp, e))?;
    drop(file);
    storage
        .rename(&tmp, &target)
        .map_err(|e| WalError::io("rename the synced-end marker into", &target, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// The records a marker proves durable that a log ending at `end` lacks.
pub(crate) fn missing(marker: Option<SyncedEnd>, end: Lsn) -> Option<Range<Lsn>> {
    marker.filter(|m| m.end_lsn > end).map(|m| end..m.end_lsn)
}

/// Where and why the last segment lacks records the marker proves
/// durable, from how its scan ended: `(file, byte offset, cause)`. `None`
/// for a scan that ends in bytes after a seal (reported as such).
pub(crate) fn missing_cause(
    dir: &Path,
    path: &Path,
    file_bytes: usize,
    end: &ScanEnd,
    header_missing: bool,
    kept_end: Lsn,
) -> Option<(PathBuf, u64, MissingCause)> {
    if header_missing {
        return Some((path.to_path_buf(), 0, MissingCause::HeaderMissing));
    }
    let here = |offset: usize, cause| Some((path.to_path_buf(), offset as u64, cause));
    match end {
        ScanEnd::Clean => here(
            file_bytes,
            MissingCause::EndsEarly {
                file_bytes: file_bytes as u64,
            },
        ),
        ScanEnd::Sealed { .. } => Some((
            dir.join(super::segment_name(kept_end)),
            0,
            MissingCause::SegmentMissing,
        )),
        ScanEnd::Torn { offset, reason } => {
            here(*offset, MissingCause::Damaged(reason.clone().into_error()))
        }
        ScanEnd::Corrupt { offset, error, .. } | ScanEnd::Damaged { offset, error } => {
            here(*offset, MissingCause::Damaged(error.clone()))
        }
        ScanEnd::DataAfterSeal { .. } => None,
    }
}

/// Hands synced positions from the writer to the keeper thread.
#[derive(Debug, Default)]
pub(crate) struct Keeper {
    state: Mutex<KeeperState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct KeeperState {
    /// The newest synced position not yet written, with when the oldest
    /// unwritten one and the newest arrived.
    pending: Option<(SyncedEnd, Instant, Instant)>,
    /// Set at close: write what is pending and exit.
    closing: bool,
}

impl Keeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that everything up to `m` is fsynced (called by the writer
    /// after each fsync; O(1), no I/O).
    pub(crate) fn publish(&self, m: SyncedEnd) {
        let now = Instant::now();
        let mut st = self.lock();
        debug_assert!(
            st.pending.is_none_or(|(p, _, _)| p.end_lsn <= m.end_lsn),
            "synced positions go backwards"
        );
        let was_idle = st.pending.is_none();
        let oldest = st.pending.map_or(now, |(_, oldest, _)| oldest);
        st.pending = Some((m, oldest, now));
        // With a position already pending, the keeper sleeps until a
        // deadline this publish can only push back: no wake-up needed.
        if was_idle {
            self.wake.notify_one();
        }
    }

    /// Asks the keeper thread to write what is pending and exit.
    pub(crate) fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Waits for the next position to write: once the log is quiet or the
    /// oldest unwritten position waited its longest, and not within the
    /// minimum interval after the write at `last`; `(position, closing)`.
    fn next(&self, last: Option<Instant>) -> (Option<SyncedEnd>, bool) {
        let ms = Duration::from_millis;
        let mut st = self.lock();
        loop {
            if st.closing {
                return (st.pending.take().map(|(m, _, _)| m), true);
            }
            let Some((_, oldest, newest)) = st.pending else {
                st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let quiet = ms(MARKER_QUIET_MS).saturating_sub(newest.elapsed());
            let lag = ms(MARKER_LAG_MS_MAX).saturating_sub(oldest.elapsed());
            let spaced = last.map_or(Duration::ZERO, |t| {
                ms(MARKER_INTERVAL_MS_MIN).saturating_sub(t.elapsed())
            });
            let wait = quiet.min(lag).max(spaced);
            if wait.is_zero() {
                return (st.pending.take().map(|(m, _, _)| m), false);
            }
            st = self
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The keeper thread: writes published positions until closed. A
    /// failed write is logged once (the marker then lags, which keeps the
    /// rule) and retried with the next position.
    pub(crate) fn run(&self, storage: Arc<dyn Storage>, dir: PathBuf, mut written: SyncedEnd) {
        let mut last: Option<Instant> = None;
        let mut failing = false;
        loop {
            let (next, closing) = self.next(last);
            if let Some(m) = next.filter(|m| *m != written) {
                last = Some(Instant::now());
                match write(storage.as_ref(), &dir, &m) {
                    Ok(()) => {
                        written = m;
                        failing = false;
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(dir = %dir.display(), error = %e, "could not update the WAL's synced-end marker; it lags behind the log (nothing is lost, but damage to the newest records would read as a torn tail). Check the disk");
                    }
                    Err(_) => {}
                }
            }
            if closing {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trip_and_checks() {
        let m = SyncedEnd {
            segment_first: 7,
            offset: 32 + 3 * 20,
            end_lsn: 10,
        };
        let b = encode(&m);
        assert_eq!(decode(&b), Ok(m));
        let mut bad = b;
        bad[33] ^= 1;
        assert!(matches!(decode(&bad), Err(MarkerDefect::Checksum { .. })));
        assert_eq!(decode(&b[..47]), Err(MarkerDefect::Length { found: 47 }));
        let too_many = SyncedEnd { end_lsn: 100, ..m };
        let mut raw = [0u8; MARKER_BYTES];
        raw.copy_from_slice(&b);
        raw[32..40].copy_from_slice(&too_many.end_lsn.to_le_bytes());
        let crc = crc32fast::hash(&raw[0..44]);
        raw[44..48].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&raw), Err(MarkerDefect::Inconsistent));
    }
}
