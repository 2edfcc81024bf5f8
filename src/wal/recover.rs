//! Opening a log: find the segments, check them, cut a torn tail.
//!
//! Finished segments are checked by header, seal trailer and continuity of
//! record numbers only (32 + 16 bytes each), so opening costs O(segments),
//! not O(bytes): a 1 GiB backlog does not slow a restart. Their frames are
//! checked when read, and all of them by `weir wal verify`. The last segment
//! is scanned frame by frame, since only it can hold a torn write.
//!
//! The synced-end marker (`marker.rs`) draws the line between a torn
//! write and damage: a log that ends, for any reason, below the marker's
//! end is refused naming the missing records, before anything is cut.
//!
//! Must never: delete or rewrite anything but the torn tail of the last
//! segment (or a last segment whose header never reached the disk), nor
//! cut a record the marker proves durable.
//!
//! Assertions (see `wal/mod.rs`): what is kept of the last segment is
//! exactly what its scan checked, the rewritten file holds exactly those
//! bytes (debug builds), and the opened log is dense with one open segment.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::{Corruption, WalError};
use super::format::{self, Decoded, Lsn, ScanEnd};
use super::marker::{self, MissingCause, SyncedEnd};
use super::writer::new_segment_file;
use super::{list_segments, open_segment, read_file, segment_name, SegmentMeta, WalConfig};
use crate::storage::{Storage, StorageFile};

/// What opening a log found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether the directory held no log and a new one was started.
    pub created: bool,
    /// Segment files the log holds after opening.
    pub segments: usize,
    /// LSN of the oldest record held.
    pub first_lsn: Lsn,
    /// The record number the next append gets.
    pub next_lsn: Lsn,
    /// The torn tail that was cut, if any.
    pub torn_tail: Option<TornTail>,
}

/// A torn tail cut at open: bytes of unacknowledged writes that did not
/// fully reach the disk before a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment's file.
    pub path: PathBuf,
    /// Byte offset where the torn bytes start: the file is cut to this
    /// length.
    pub offset: u64,
    /// Bytes from there to the file's end, in bytes.
    pub bytes_cut: u64,
    /// Why they are not a complete frame.
    pub reason: String,
}

pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<SegmentMeta>>,
    /// What is durable now: the marker open writes.
    pub(crate) synced: SyncedEnd,
    pub(crate) active_file: Box<dyn StorageFile>,
    pub(crate) active_bytes: u64,
    pub(crate) active_salt: u32,
    pub(crate) next_lsn: Lsn,
    pub(crate) report: RecoveryReport,
}

fn corrupt(dir: &Path, path: &Path, offset: u64, detail: Corruption) -> WalError {
    WalError::Corrupt {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        offset,
        detail,
    }
}

/// The marker of `dir`, if any; a damaged one is corruption.
fn read_marker(storage: &dyn Storage, dir: &Path) -> Result<Option<SyncedEnd>, WalError> {
    match marker::read(storage, dir)? {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(d)) => Err(corrupt(dir, &marker::path(dir), 0, Corruption::Marker(d))),
    }
}

/// The error for records below the marker that the log lacks.
fn missing_error(
    dir: &Path,
    (path, offset, cause): (PathBuf, u64, MissingCause),
    missing: std::ops::Range<Lsn>,
) -> WalError {
    corrupt(
        dir,
        &path,
        offset,
        Corruption::AcknowledgedMissing { missing, cause },
    )
}

/// Opens the log in `dir` (creating it if empty): checks the finished
/// segments, recovers the last one and, if it was sealed, starts the next.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
) -> Result<Recovered, WalError> {
    storage
        .create_dir_all(dir)
        .map_err(|e| WalError::io("create the WAL directory", dir, e))?;
    let synced = read_marker(storage, dir)?;
    let listed = list_segments(storage, dir)?;
    let Some((last_first, last_path)) = listed.last().cloned() else {
        // No segment: a new log, or one whose every file is gone. The
        // marker says which: it keeps the numbering, or names the loss.
        let start = synced.map_or(0, |m| m.segment_first);
        if let Some(missing) = marker::missing(synced, start) {
            let at = (
                dir.join(segment_name(start)),
                0,
                MissingCause::SegmentMissing,
            );
            return Err(missing_error(dir, at, missing));
        }
        return start_new_log(storage, dir, config, start);
    };
    let mut segments = check_finished_segments(storage, dir, &listed)?;
    let last = recover_last_segment(storage, dir, config, (last_first, &last_path), synced)?;
    let next_lsn = last.next_lsn;
    let (active_file, active_bytes, active_salt) = if last.sealed {
        // Crash after sealing, before the next segment was durable.
        last.meta.sealed_end.store(next_lsn, Ordering::Release);
        segments.push(last.meta);
        let path = dir.join(segment_name(next_lsn));
        let (file, salt) =
            new_segment_file(storage, dir, &path, next_lsn, config.record_bytes_max)?;
        segments.push(Arc::new(SegmentMeta::new(next_lsn, path, None)));
        (file, format::SEGMENT_HEADER_BYTES as u64, salt)
    } else {
        segments.push(last.meta);
        (last.file, last.active_bytes, last.salt)
    };
    let first_lsn = segments.first().map_or(next_lsn, |s| s.first_lsn);
    let active_first = segments.last().map_or(next_lsn, |s| s.first_lsn);
    let report = RecoveryReport {
        created: false,
        segments: segments.len(),
        first_lsn,
        next_lsn,
        torn_tail: last.torn_tail,
    };
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        first_lsn,
        next_lsn,
        "opened WAL"
    );
    let recovered = Recovered {
        segments,
        synced: SyncedEnd {
            segment_first: active_first,
            offset: active_bytes,
            end_lsn: next_lsn,
        },
        active_file,
        active_bytes,
        active_salt,
        next_lsn,
        report,
    };
    assert_recovered(&recovered);
    Ok(recovered)
}

/// An empty directory: the log starts with segment `first` (0 for a new
/// log; where the marker says for a log whose empty active segment is
/// gone, so that no record number is ever reused).
fn start_new_log(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
    first: Lsn,
) -> Result<Recovered, WalError> {
    let path = dir.join(segment_name(first));
    let (file, salt) = new_segment_file(storage, dir, &path, first, config.record_bytes_max)?;
    tracing::info!(dir = %dir.display(), first_lsn = first, "started a new WAL");
    let header = format::SEGMENT_HEADER_BYTES as u64;
    let recovered = Recovered {
        segments: vec![Arc::new(SegmentMeta::new(first, path, None))],
        synced: SyncedEnd {
            segment_first: first,
            offset: header,
            end_lsn: first,
        },
        active_file: file,
        active_bytes: header,
        active_salt: salt,
        next_lsn: first,
        report: RecoveryReport {
            created: true,
            segments: 1,
            first_lsn: first,
            next_lsn: first,
            torn_tail: None,
        },
    };
    assert_recovered(&recovered);
    Ok(recovered)
}

/// Checks every segment but the last by header and seal; returns them,
/// sealed, oldest first.
fn check_finished_segments(
    storage: &dyn Storage,
    dir: &Path,
    listed: &[(Lsn, PathBuf)],
) -> Result<Vec<Arc<SegmentMeta>>, WalError> {
    let mut segments = Vec::with_capacity(listed.len() + 1);
    for pair in listed.windows(2) {
        let ((first, path), (next_first, _)) = (&pair[0], &pair[1]);
        let end = check_finished_segment(storage, dir, path, *first, *next_first)?;
        segments.push(Arc::new(SegmentMeta::new(*first, path.clone(), Some(end))));
    }
    Ok(segments)
}

/// The last segment as recovery leaves it: a torn tail cut and what
/// survives rewritten durably.
struct LastSegment {
    meta: Arc<SegmentMeta>,
    file: Box<dyn StorageFile>,
    /// Bytes kept (header, whole frames and, if sealed, the seal).
    active_bytes: u64,
    salt: u32,
    /// One past its last record.
    next_lsn: Lsn,
    sealed: bool,
    torn_tail: Option<TornTail>,
}

/// Scans the last segment frame by frame, cuts a torn tail and rewrites
/// the surviving bytes durably; damage that is not a torn tail is an error,
/// and so is a log that ends below the `synced` marker.
fn recover_last_segment(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
    (first, path): (Lsn, &Path),
    synced: Option<SyncedEnd>,
) -> Result<LastSegment, WalError> {
    let (buf, header_torn) = read_last_segment(storage, dir, config, first, path)?;
    let scan = format::scan_segment(&buf, config.index_interval_bytes)
        .map_err(|e| corrupt(dir, path, 0, Corruption::Frame(e)))?;
    if scan.header.first_lsn != first {
        return Err(corrupt(
            dir,
            path,
            16,
            Corruption::NameMismatch {
                name_first: first,
                header_first: scan.header.first_lsn,
            },
        ));
    }
    // Before anything is cut: records the marker proves durable must all
    // be here.
    let kept_end = first + scan.records;
    if let Some(missing) = marker::missing(synced, kept_end) {
        let header_missing = header_torn.is_some();
        let file_bytes = if header_missing { 0 } else { buf.len() };
        if let Some(at) =
            marker::missing_cause(dir, path, file_bytes, &scan.end, header_missing, kept_end)
        {
            return Err(missing_error(dir, at, missing));
        }
    }
    let (keep, tail_torn) = bytes_to_keep(dir, path, &buf, &scan.end)?;
    let sealed = matches!(scan.end, ScanEnd::Sealed { .. });
    // Pair of `scan_segment`'s checks: what is kept is exactly the header,
    // the scanned records and, if sealed, their seal.
    let seal_bytes = if sealed {
        format::FRAME_HEADER_BYTES
    } else {
        0
    };
    assert_eq!(
        keep,
        scan.valid_bytes + seal_bytes,
        "recovery would keep bytes the scan did not check in {}",
        path.display()
    );
    let meta = Arc::new(SegmentMeta::new(first, path.to_path_buf(), None));
    for &(lsn, off) in &scan.index {
        meta.note_position(lsn, off, config.index_interval_bytes);
    }
    let file = rewrite_durably(storage, dir, path, &buf[..keep])?;
    Ok(LastSegment {
        meta,
        file,
        active_bytes: keep as u64,
        salt: scan.header.salt,
        next_lsn: first + scan.records,
        sealed,
        // A rewritten header leaves a clean image, so at most one is set.
        torn_tail: tail_torn.or(header_torn),
    })
}

/// How many bytes of the last segment's image survive, by how its scan
/// ended: all of a clean or sealed segment, everything before a torn tail
/// (reported), nothing if it is damaged (an error).
fn bytes_to_keep(
    dir: &Path,
    path: &Path,
    buf: &[u8],
    end: &ScanEnd,
) -> Result<(usize, Option<TornTail>), WalError> {
    match end {
        ScanEnd::Clean | ScanEnd::Sealed { .. } => Ok((buf.len(), None)),
        ScanEnd::Torn { offset, reason } => {
            let cut = (buf.len() - offset) as u64;
            tracing::warn!(
                segment = %path.display(),
                offset = *offset,
                bytes_cut = cut,
                reason = %reason,
                "cut a torn tail from the WAL: these bytes were never acknowledged (a crash interrupted their write)"
            );
            let torn = TornTail {
                path: path.to_path_buf(),
                offset: *offset as u64,
                bytes_cut: cut,
                reason: reason.to_string(),
            };
            Ok((*offset, Some(torn)))
        }
        ScanEnd::Corrupt { offset, error, .. } | ScanEnd::Damaged { offset, error } => {
            let detail = Corruption::Frame(error.clone());
            Err(corrupt(dir, path, *offset as u64, detail))
        }
        ScanEnd::DataAfterSeal { offset } => Err(corrupt(
            dir,
            path,
            *offset as u64,
            Corruption::DataAfterSeal,
        )),
    }
}

/// Reads the last segment. One whose header never reached the disk
/// (shorter than a header, or all zeros) was being created when the process
/// died and cannot hold an acknowledged record: its image becomes a fresh
/// header, and the bytes it had are reported as a torn tail.
fn read_last_segment(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
    first: Lsn,
    path: &Path,
) -> Result<(Vec<u8>, Option<TornTail>), WalError> {
    let buf = read_file(storage, path)?;
    if buf.len() >= format::SEGMENT_HEADER_BYTES && buf.iter().any(|&b| b != 0) {
        return Ok((buf, None));
    }
    if buf.len() > format::TORN_ZERO_BYTES_MAX {
        // More zeros than a torn sector: the segment was zeroed.
        let detail = Corruption::Frame(format::FormatError::ZeroTail { bytes: buf.len() });
        return Err(corrupt(dir, path, 0, detail));
    }
    if first > format::LSN_MAX {
        // A file name no header can match: no segment of this log.
        let detail = Corruption::Frame(format::FormatError::LsnTooLarge { found: first });
        return Err(corrupt(dir, path, 0, detail));
    }
    let torn = TornTail {
        path: path.to_path_buf(),
        offset: 0,
        bytes_cut: buf.len() as u64,
        reason:
            "the segment header never reached the disk (crash while creating it); header rewritten"
                .into(),
    };
    let header = format::encode_segment_header(first, config.record_bytes_max, format::new_salt());
    Ok((header.to_vec(), Some(torn)))
}

/// What `Wal::open_with` and the writer rely on once the log is open:
/// segments dense and sealed but the last, the active one open and at
/// least a header long, and a report that says the same.
fn assert_recovered(r: &Recovered) {
    assert!(!r.segments.is_empty(), "recovery left no active segment");
    let (first, last) = (&r.segments[0], &r.segments[r.segments.len() - 1]);
    assert!(
        r.segments
            .windows(2)
            .all(|w| w[0].sealed_end() == Some(w[1].first_lsn))
            && last.sealed_end().is_none(),
        "recovered segments are not dense, or the active one is sealed"
    );
    assert!(
        last.first_lsn <= r.next_lsn
            && r.active_bytes >= format::SEGMENT_HEADER_BYTES as u64
            && (r.next_lsn == last.first_lsn
                || r.active_bytes > format::SEGMENT_HEADER_BYTES as u64),
        "active segment {} holds records up to {} in {} bytes",
        last.first_lsn,
        r.next_lsn,
        r.active_bytes
    );
    assert!(
        r.report.segments == r.segments.len()
            && r.report.first_lsn == first.first_lsn
            && r.report.next_lsn == r.next_lsn,
        "the recovery report disagrees with the recovered log"
    );
}

/// Replaces the last segment with exactly `bytes`, written to a new file,
/// fsynced and renamed into place (then the directory fsynced).
///
/// Why not trust the file as it is: bytes the previous process wrote but
/// never synced may be in the page cache only, and after a failed fsync the
/// kernel may show bytes that will never reach the disk. Everything that
/// recovery accepts into the log must really be durable before new records
/// (or a new segment) are built on it. Costs one write of at most
/// `segment_bytes_max` per open.
fn rewrite_durably(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<Box<dyn StorageFile>, WalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".rewrite");
    let tmp = PathBuf::from(tmp);
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
    file.append(bytes)
        .map_err(|e| WalError::io("write", &tmp, e))?;
    file.sync_data()
        .map_err(|e| WalError::io("fsync", &tmp, e))?;
    drop(file);
    storage
        .rename(&tmp, path)
        .map_err(|e| WalError::io("rename the rewritten segment into", path, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    let file = storage
        .open(path)
        .map_err(|e| WalError::io("open segment", path, e))?;
    // Both sides of the write: the reopened file holds exactly `bytes`.
    debug_assert!(
        file.len().map_or(true, |len| len == bytes.len() as u64),
        "rewritten segment {} does not have its {} bytes",
        path.display(),
        bytes.len()
    );
    Ok(file)
}

/// Checks a finished segment's header and seal; returns its end LSN, which
/// must equal the next segment's first.
fn check_finished_segment(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    name_first: Lsn,
    next_first: Lsn,
) -> Result<Lsn, WalError> {
    let (file, len) = open_segment(storage, path)?;
    let mut head = [0u8; format::SEGMENT_HEADER_BYTES];
    let got = file
        .read_at(&mut head, 0)
        .map_err(|e| WalError::io("read the header of segment", path, e))?;
    let header = format::decode_segment_header(&head[..got])
        .map_err(|e| corrupt(dir, path, 0, Corruption::Frame(e)))?;
    if header.first_lsn != name_first {
        return Err(corrupt(
            dir,
            path,
            16,
            Corruption::NameMismatch {
                name_first,
                header_first: header.first_lsn,
            },
        ));
    }
    let min = (format::SEGMENT_HEADER_BYTES + format::FRAME_HEADER_BYTES) as u64;
    if len < min {
        return Err(corrupt(dir, path, len, Corruption::MissingSeal));
    }
    let mut tail = [0u8; format::FRAME_HEADER_BYTES];
    file.read_exact_at(&mut tail, len - format::FRAME_HEADER_BYTES as u64)
        .map_err(|e| WalError::io("read the seal of segment", path, e))?;
    let seal_at = len - format::FRAME_HEADER_BYTES as u64;
    match format::decode_frame(&tail, 0, next_first, &header) {
        Decoded::Seal { end_lsn } if end_lsn >= name_first => {
            debug_assert_eq!(
                end_lsn, next_first,
                "a seal decodes only at the expected end"
            );
            Ok(end_lsn)
        }
        Decoded::Bad(format::FormatError::LsnMismatch { found, .. }) if is_seal(&tail) => {
            let next_path = dir.join(segment_name(next_first));
            Err(corrupt(
                dir,
                &next_path,
                0,
                Corruption::Gap {
                    expected_first: found,
                    found_first: next_first,
                },
            ))
        }
        _ => Err(corrupt(dir, path, seal_at, Corruption::MissingSeal)),
    }
}

fn is_seal(tail: &[u8]) -> bool {
    tail.len() >= 4 && tail[0..4] == format::SEAL_MARKER.to_le_bytes()
}
