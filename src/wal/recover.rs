//! Opening a log: find the segments, check them, cut a torn tail.
//!
//! Finished segments are checked by header, seal trailer and continuity of
//! record numbers only (32 + 16 bytes each), so opening costs O(segments),
//! not O(bytes): a 1 GiB backlog does not slow a restart. Their frames are
//! checked when read, and all of them by `weir wal verify`. The last segment
//! is scanned frame by frame, since only it can hold a torn write.
//!
//! Must never: delete or rewrite anything but the torn tail of the last
//! segment (or a last segment whose header never reached the disk).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{Corruption, WalError};
use super::format::{self, Decoded, Lsn, ScanEnd};
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

pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
) -> Result<Recovered, WalError> {
    storage
        .create_dir_all(dir)
        .map_err(|e| WalError::io("create the WAL directory", dir, e))?;
    let listed = list_segments(storage, dir)?;
    let Some((last_first, last_path)) = listed.last().cloned() else {
        let path = dir.join(segment_name(0));
        let (file, salt) = new_segment_file(storage, dir, &path, 0, config.record_bytes_max)?;
        tracing::info!(dir = %dir.display(), "started a new WAL");
        return Ok(Recovered {
            segments: vec![Arc::new(SegmentMeta::new(0, path, None))],
            active_file: file,
            active_bytes: format::SEGMENT_HEADER_BYTES as u64,
            active_salt: salt,
            next_lsn: 0,
            report: RecoveryReport {
                created: true,
                segments: 1,
                first_lsn: 0,
                next_lsn: 0,
                torn_tail: None,
            },
        });
    };

    let mut segments = Vec::with_capacity(listed.len() + 1);
    for (i, (first, path)) in listed[..listed.len() - 1].iter().enumerate() {
        let next_first = listed[i + 1].0;
        let end = check_finished_segment(storage, dir, path, *first, next_first)?;
        segments.push(Arc::new(SegmentMeta::new(*first, path.clone(), Some(end))));
    }

    let mut buf = read_file(storage, &last_path)?;
    let mut torn_tail = None;
    if buf.len() < format::SEGMENT_HEADER_BYTES || buf.iter().all(|&b| b == 0) {
        // The segment was being created when the process died: its header
        // never reached the disk, so it cannot hold an acknowledged record.
        torn_tail = Some(TornTail {
            path: last_path.clone(),
            offset: 0,
            bytes_cut: buf.len() as u64,
            reason: "the segment header never reached the disk (crash while creating it); header rewritten"
                .into(),
        });
        buf =
            format::encode_segment_header(last_first, config.record_bytes_max, format::new_salt())
                .to_vec();
    }
    let scan = format::scan_segment(&buf, config.index_interval_bytes)
        .map_err(|e| corrupt(dir, &last_path, 0, Corruption::Frame(e)))?;
    if scan.header.first_lsn != last_first {
        return Err(corrupt(
            dir,
            &last_path,
            16,
            Corruption::NameMismatch {
                name_first: last_first,
                header_first: scan.header.first_lsn,
            },
        ));
    }
    let next_lsn = last_first + scan.records;
    let meta = Arc::new(SegmentMeta::new(last_first, last_path.clone(), None));
    for &(lsn, off) in &scan.index {
        meta.note_position(lsn, off, config.index_interval_bytes);
    }
    let mut active_bytes = buf.len() as u64;
    let mut active_salt = scan.header.salt;
    let mut sealed = false;
    match &scan.end {
        ScanEnd::Clean => {}
        ScanEnd::Sealed { .. } => sealed = true,
        ScanEnd::Torn { offset, reason } => {
            let cut = (buf.len() - offset) as u64;
            tracing::warn!(
                segment = %last_path.display(),
                offset = *offset,
                bytes_cut = cut,
                reason = %reason,
                "cut a torn tail from the WAL: these bytes were never acknowledged (a crash interrupted their write)"
            );
            torn_tail = Some(TornTail {
                path: last_path.clone(),
                offset: *offset as u64,
                bytes_cut: cut,
                reason: reason.to_string(),
            });
            active_bytes = *offset as u64;
        }
        ScanEnd::Corrupt { offset, error, .. } => {
            return Err(corrupt(
                dir,
                &last_path,
                *offset as u64,
                Corruption::Frame(error.clone()),
            ))
        }
        ScanEnd::DataAfterSeal { offset } => {
            return Err(corrupt(
                dir,
                &last_path,
                *offset as u64,
                Corruption::DataAfterSeal,
            ))
        }
    }
    let mut file = rewrite_durably(storage, dir, &last_path, &buf[..active_bytes as usize])?;

    if sealed {
        // Crash after sealing, before the next segment was durable.
        meta.sealed_end
            .store(next_lsn, std::sync::atomic::Ordering::Release);
        segments.push(meta);
        let path = dir.join(segment_name(next_lsn));
        let (new_file, salt) =
            new_segment_file(storage, dir, &path, next_lsn, config.record_bytes_max)?;
        file = new_file;
        active_salt = salt;
        segments.push(Arc::new(SegmentMeta::new(next_lsn, path, None)));
        active_bytes = format::SEGMENT_HEADER_BYTES as u64;
    } else {
        segments.push(meta);
    }

    let first_lsn = segments.first().map_or(next_lsn, |s| s.first_lsn);
    let report = RecoveryReport {
        created: false,
        segments: segments.len(),
        first_lsn,
        next_lsn,
        torn_tail,
    };
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        first_lsn,
        next_lsn,
        "opened WAL"
    );
    Ok(Recovered {
        segments,
        active_file: file,
        active_bytes,
        active_salt,
        next_lsn,
        report,
    })
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
    storage
        .open(path)
        .map_err(|e| WalError::io("open segment", path, e))
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
        Decoded::Seal { end_lsn } if end_lsn >= name_first => Ok(end_lsn),
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
