//! `weir wal verify` / `inspect` / `repair`: a full, read-only check of
//! every frame of every segment, and the explicit repair.
//!
//! Verify reads one segment at a time into memory (bounded by the largest
//! segment, `segment_bytes_max`) and never writes. Repair runs only when an
//! operator asks: it cuts the log at the first damaged byte and moves
//! everything from there on into `DIR/quarantine/<time>-lsn<N>/`, fsyncing
//! the moved files and both directories. It never deletes anything.
//!
//! Both apply the synced-end marker's rule as open does: a log that ends
//! below the marker is a problem naming the missing records, never a torn
//! tail; repair then rewrites the marker to the log it leaves. Verify
//! takes no lock (it only reads; a log being written may show a torn tail
//! at its end); repair takes the directory's lock, so it refuses while
//! weir runs on the log.
//!
//! Assertions (see `wal/mod.rs`): a verify report is dense (each segment
//! starts where the previous one's intact records end), names its problem
//! at or after the last intact segment, and is never both torn and damaged.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::error::{Corruption, WalError};
use super::format::{self, Decoded, Lsn, ScanEnd};
use super::marker::{self, MissingCause, SyncedEnd};
use super::recover::TornTail;
use super::writer::new_segment_file;
use super::{list_segments, read_file, segment_name};
use crate::storage::Storage;

/// One segment as verify saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// LSN of its first record, from its file name.
    pub first_lsn: Lsn,
    /// Intact records before any damage.
    pub records: u64,
    /// The file's size, in bytes.
    pub bytes: u64,
    /// Whether it ends with a valid seal trailer (every segment but the
    /// last should).
    pub sealed: bool,
}

/// The first place where the log fails a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The damaged segment file (for a gap, the segment after it).
    pub path: PathBuf,
    /// Byte offset of the damage in that file (0 for a gap or a bad
    /// header); repair cuts the file here.
    pub offset: u64,
    /// What is wrong.
    pub detail: Corruption,
    /// Index of the damaged segment in [`DirReport::segments`] (or, for a
    /// gap, of the first segment after it).
    pub segment: usize,
    /// The record number that should have been at the damage.
    pub lsn: Lsn,
}

/// What verify found in a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirReport {
    /// The log directory that was checked.
    pub dir: PathBuf,
    /// The segments checked, oldest first; checking stops at the first
    /// problem, so later segments are not listed.
    pub segments: Vec<SegmentReport>,
    /// A torn tail of the last segment: not corruption (open cuts it).
    pub torn_tail: Option<TornTail>,
    /// The first damage found, if any (`weir wal repair` cuts there).
    pub problem: Option<Problem>,
    /// What the synced-end marker says (None: no marker, or a damaged one,
    /// which is then the problem).
    pub synced_end: Option<SyncedEnd>,
}

impl DirReport {
    /// LSN of the log's first record (`None` without segments).
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.segments.first().map(|s| s.first_lsn)
    }

    /// One past the last intact record before any problem.
    pub fn end_lsn(&self) -> Option<Lsn> {
        self.segments.last().map(|s| s.first_lsn + s.records)
    }

    /// Intact records in the listed segments.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Size of the listed segment files, in bytes.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }
}

/// Checks every frame of every segment in `dir`. Returns `Err` only when
/// the directory or a file cannot be read; damage is in the report.
pub fn verify_dir(storage: &dyn Storage, dir: &Path) -> Result<DirReport, WalError> {
    let (synced, defect) = match marker::read(storage, dir)? {
        None => (None, None),
        Some(Ok(m)) => (Some(m), None),
        Some(Err(d)) => (None, Some(d)),
    };
    let mut report = verify_segments(storage, dir, synced)?;
    if let (None, Some(d)) = (&report.problem, defect) {
        // The segments check out; the marker alone is damaged.
        report.problem = Some(Problem {
            path: marker::path(dir),
            offset: 0,
            detail: Corruption::Marker(d),
            segment: report.segments.len(),
            lsn: report.end_lsn().unwrap_or(0),
        });
        report.torn_tail = None;
    }
    let listed = list_segments(storage, dir)?.len();
    Ok(checked_report(report, listed))
}

/// [`verify_dir`]'s checks of the segments, against `synced` (the marker,
/// if any).
fn verify_segments(
    storage: &dyn Storage,
    dir: &Path,
    synced: Option<SyncedEnd>,
) -> Result<DirReport, WalError> {
    let listed = list_segments(storage, dir)?;
    let mut report = DirReport {
        dir: dir.to_path_buf(),
        segments: Vec::with_capacity(listed.len()),
        torn_tail: None,
        problem: None,
        synced_end: synced,
    };
    let mut expected_first: Option<Lsn> = None;
    for (i, (name_first, path)) in listed.iter().enumerate() {
        let last = i + 1 == listed.len();
        // Builds the report's problem for this segment.
        let problem = |offset: u64, detail: Corruption, lsn: Lsn| Problem {
            path: path.clone(),
            offset,
            detail,
            segment: i,
            lsn,
        };
        if let Some(expected) = expected_first {
            if expected != *name_first {
                report.problem = Some(problem(
                    0,
                    Corruption::Gap {
                        expected_first: expected,
                        found_first: *name_first,
                    },
                    expected,
                ));
                break;
            }
        }
        let buf = read_file(storage, path)?;
        if last && (buf.len() < format::SEGMENT_HEADER_BYTES || buf.iter().all(|&b| b == 0)) {
            headerless_last(&mut report, synced, (i, *name_first, path), &buf);
            break;
        }
        let scan = match format::scan_segment(&buf, u64::MAX) {
            Ok(scan) => scan,
            Err(e) => {
                report.problem = Some(problem(0, Corruption::Frame(e), *name_first));
                break;
            }
        };
        if scan.header.first_lsn != *name_first {
            report.problem = Some(problem(
                16,
                Corruption::NameMismatch {
                    name_first: *name_first,
                    header_first: scan.header.first_lsn,
                },
                *name_first,
            ));
            break;
        }
        let at_damage = name_first + scan.records;
        let sealed = matches!(scan.end, ScanEnd::Sealed { .. });
        report.segments.push(SegmentReport {
            path: path.clone(),
            first_lsn: *name_first,
            records: scan.records,
            bytes: buf.len() as u64,
            sealed,
        });
        if last {
            // The end of the log: below the marker is damage, whatever
            // the scan says.
            let at = (i, path.as_path(), buf.len());
            if let Some(p) = below_marker(dir, synced, at, &scan.end, at_damage) {
                report.problem = Some(p);
                break;
            }
        }
        if let Some(p) = end_problem(&scan.end, last, buf.len()) {
            report.problem = Some(problem(p.0, p.1, at_damage));
            break;
        }
        if let (true, ScanEnd::Torn { offset, reason }) = (last, &scan.end) {
            report.torn_tail = Some(TornTail {
                path: path.clone(),
                offset: *offset as u64,
                bytes_cut: (buf.len() - offset) as u64,
                reason: reason.to_string(),
            });
        }
        expected_first = Some(at_damage);
    }
    if listed.is_empty() {
        if let Some(m) = synced {
            if let Some(missing) = marker::missing(synced, m.segment_first) {
                report.problem = Some(Problem {
                    path: dir.join(segment_name(m.segment_first)),
                    offset: 0,
                    detail: Corruption::AcknowledgedMissing {
                        missing,
                        cause: MissingCause::SegmentMissing,
                    },
                    segment: 0,
                    lsn: m.segment_first,
                });
            }
        }
    }
    Ok(report)
}

/// The last segment when it is shorter than a header or all zeros: a
/// torn creation (reported as a torn tail), or damage if it holds more
/// zeros than a torn sector or records the marker proves durable.
fn headerless_last(
    report: &mut DirReport,
    synced: Option<SyncedEnd>,
    (i, first, path): (usize, Lsn, &Path),
    buf: &[u8],
) {
    let problem = |detail| Problem {
        path: path.to_path_buf(),
        offset: 0,
        detail,
        segment: i,
        lsn: first,
    };
    if buf.len() > format::TORN_ZERO_BYTES_MAX {
        let bytes = buf.len();
        report.problem = Some(problem(Corruption::Frame(format::FormatError::ZeroTail {
            bytes,
        })));
        return;
    }
    report.segments.push(SegmentReport {
        path: path.to_path_buf(),
        first_lsn: first,
        records: 0,
        bytes: buf.len() as u64,
        sealed: false,
    });
    if let Some(missing) = marker::missing(synced, first) {
        let cause = MissingCause::HeaderMissing;
        report.problem = Some(problem(Corruption::AcknowledgedMissing { missing, cause }));
        return;
    }
    report.torn_tail = Some(TornTail {
        path: path.to_path_buf(),
        offset: 0,
        bytes_cut: buf.len() as u64,
        reason: "the segment header never reached the disk (crash while creating it)".into(),
    });
}

/// The problem of a log whose last segment (index `i`, file `path` of
/// `len` bytes) ends at `end` with `scan_end`, below the marker `synced`.
fn below_marker(
    dir: &Path,
    synced: Option<SyncedEnd>,
    (i, path, len): (usize, &Path, usize),
    scan_end: &ScanEnd,
    end: Lsn,
) -> Option<Problem> {
    let missing = marker::missing(synced, end)?;
    let (p, offset, cause) = marker::missing_cause(dir, path, len, scan_end, false, end)?;
    let sealed = matches!(scan_end, ScanEnd::Sealed { .. });
    Some(Problem {
        path: p,
        offset,
        detail: Corruption::AcknowledgedMissing { missing, cause },
        // A missing next segment is one past the list.
        segment: if sealed { i + 1 } else { i },
        lsn: end,
    })
}

/// The problem (offset, detail) a segment's scan end is, if any: a torn
/// tail is one only in a segment that is not the last.
fn end_problem(end: &ScanEnd, last: bool, len: usize) -> Option<(u64, Corruption)> {
    match end {
        ScanEnd::Sealed { .. } => None,
        ScanEnd::Clean if last => None,
        ScanEnd::Clean => Some((len as u64, Corruption::MissingSeal)),
        ScanEnd::Torn { .. } if last => None,
        ScanEnd::Torn { offset, reason } => Some((
            *offset as u64,
            Corruption::Frame(reason.clone().into_error()),
        )),
        ScanEnd::Corrupt { offset, error, .. } | ScanEnd::Damaged { offset, error } => {
            Some((*offset as u64, Corruption::Frame(error.clone())))
        }
        ScanEnd::DataAfterSeal { offset } => Some((*offset as u64, Corruption::DataAfterSeal)),
    }
}

/// Returns `report` after asserting what `repair_dir` and the CLI rely on
/// in it (`listed`: segment files found).
fn checked_report(report: DirReport, listed: usize) -> DirReport {
    let segments = &report.segments;
    assert!(
        segments.len() <= listed
            && segments
                .windows(2)
                .all(|w| w[0].first_lsn + w[0].records == w[1].first_lsn),
        "verify reported {} of {listed} segments, or a gap it did not flag",
        segments.len()
    );
    if let Some(p) = &report.problem {
        // A missing last segment (or marker) is named one past the list.
        assert!(
            p.segment <= listed && p.segment <= segments.len() && segments.len() <= p.segment + 1,
            "verify reported a problem in segment {} of {listed}",
            p.segment
        );
        assert!(
            report.torn_tail.is_none(),
            "a log reported both torn and damaged"
        );
    }
    report
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The damage that was cut away (None: nothing to repair).
    pub problem: Option<Problem>,
    /// The folder the cut-off bytes went to,
    /// `DIR/quarantine/<unix seconds>-lsn<N>/` (None: nothing to repair).
    pub quarantine: Option<PathBuf>,
    /// Files written into the quarantine folder.
    pub files_moved: Vec<PathBuf>,
    /// Intact-looking records in the moved bytes (the damaged ones are not
    /// counted): records that are no longer in the log. A lower bound when
    /// a segment holds more frame-shaped bytes than the count checks
    /// (`RESYNC_CHECKSUM_BYTES_MAX` of payload per segment).
    pub records_moved: u64,
    /// Bytes taken out of the log, in bytes.
    pub bytes_moved: u64,
    /// The record number the next append gets after the repair.
    pub next_lsn: Lsn,
}

/// Cuts the log in `dir` at its first damaged byte, moving the rest aside,
/// and rewrites the synced-end marker to the log it leaves. Takes the
/// directory's lock: refused while weir (or another repair) has the log
/// open.
pub fn repair_dir(storage: &dyn Storage, dir: &Path) -> Result<RepairReport, WalError> {
    let _lock = super::lock_dir(storage, dir)?;
    let report = verify_dir(storage, dir)?;
    let Some(problem) = report.problem.clone() else {
        return Ok(RepairReport {
            problem: None,
            quarantine: None,
            files_moved: Vec::new(),
            records_moved: 0,
            bytes_moved: 0,
            next_lsn: report.end_lsn().unwrap_or(0),
        });
    };
    let moved = if matches!(problem.detail, Corruption::Marker(_)) {
        // Only the marker is damaged: nothing to move.
        Moved::default()
    } else {
        move_aside(storage, dir, &problem)?
    };
    if list_segments(storage, dir)?.is_empty() {
        // Keep numbering where it was, so nothing downstream sees a record
        // number reused.
        let path = dir.join(segment_name(problem.lsn));
        let limit = super::WalConfig::default().record_bytes_max;
        new_segment_file(storage, dir, &path, problem.lsn, limit)?;
    }
    let next_lsn = rewrite_marker(storage, dir)?;
    tracing::warn!(
        dir = %dir.display(),
        quarantine = moved.qdir.as_ref().map(|q| q.display().to_string()),
        records_moved = moved.records,
        bytes_moved = moved.bytes,
        next_lsn,
        "repaired the WAL: cut at the first damaged byte and moved the rest aside"
    );
    Ok(RepairReport {
        problem: Some(problem),
        quarantine: moved.qdir,
        files_moved: moved.files,
        records_moved: moved.records,
        bytes_moved: moved.bytes,
        next_lsn,
    })
}

/// What [`move_aside`] moved.
#[derive(Default)]
struct Moved {
    qdir: Option<PathBuf>,
    files: Vec<PathBuf>,
    records: u64,
    bytes: u64,
}

/// Moves everything from `problem` on into a new quarantine folder: the
/// damaged segment's bytes from the offset (copied, fsynced, then the
/// segment truncated), every later segment whole (renamed).
fn move_aside(storage: &dyn Storage, dir: &Path, problem: &Problem) -> Result<Moved, WalError> {
    let listed = list_segments(storage, dir)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let qdir = dir
        .join("quarantine")
        .join(format!("{secs}-lsn{}", problem.lsn));
    storage
        .create_dir_all(&qdir)
        .map_err(|e| WalError::io("create the quarantine folder", &qdir, e))?;
    let mut moved = Moved::default();
    for (i, (_, path)) in listed.iter().enumerate().skip(problem.segment) {
        let name = path
            .file_name()
            .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned());
        let buf = read_file(storage, path)?;
        let cut = if i == problem.segment && problem.offset as usize >= format::SEGMENT_HEADER_BYTES
        {
            (problem.offset as usize).min(buf.len())
        } else {
            0
        };
        moved.records += count_intact_frames(&buf, cut);
        moved.bytes += (buf.len() - cut) as u64;
        if cut == 0 {
            let to = qdir.join(&name);
            storage
                .rename(path, &to)
                .map_err(|e| WalError::io("move segment into quarantine", path, e))?;
            moved.files.push(to);
        } else if cut < buf.len() {
            let to = qdir.join(format!("{name}.from-{cut}"));
            let mut out = storage
                .create_new(&to)
                .map_err(|e| WalError::io("create quarantine file", &to, e))?;
            out.append(&buf[cut..])
                .map_err(|e| WalError::io("write quarantine file", &to, e))?;
            out.sync_data()
                .map_err(|e| WalError::io("fsync quarantine file", &to, e))?;
            // The damaged bytes are safe in quarantine before the log is cut.
            storage
                .sync_dir(&qdir)
                .map_err(|e| WalError::io("fsync directory", &qdir, e))?;
            let mut f = storage
                .open(path)
                .map_err(|e| WalError::io("open segment", path, e))?;
            f.truncate(cut as u64)
                .map_err(|e| WalError::io("truncate segment", path, e))?;
            f.sync_data()
                .map_err(|e| WalError::io("fsync segment", path, e))?;
            moved.files.push(to);
        }
    }
    storage
        .sync_dir(&qdir)
        .map_err(|e| WalError::io("fsync directory", &qdir, e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WalError::io("fsync directory", dir, e))?;
    moved.qdir = Some(qdir);
    Ok(moved)
}

/// Writes the marker for the log as a repair leaves it (verified without
/// the old marker, whose records are gone): its intact end, with a torn
/// tail, if any, not counted. Returns that end.
fn rewrite_marker(storage: &dyn Storage, dir: &Path) -> Result<Lsn, WalError> {
    let report = verify_segments(storage, dir, None)?;
    let Some(last) = report.segments.last() else {
        return Ok(0);
    };
    let header = format::SEGMENT_HEADER_BYTES as u64;
    let offset = report
        .torn_tail
        .as_ref()
        .map_or(last.bytes, |t| t.offset)
        .max(header);
    let end = last.first_lsn + last.records;
    let synced = SyncedEnd {
        segment_first: last.first_lsn,
        offset,
        end_lsn: end,
    };
    marker::write(storage, dir, &synced)?;
    Ok(end)
}

/// Counts frames in `buf[from..]` that check out under the record number
/// they carry, resynchronising byte by byte over damage. The header's limit
/// is used when the header is intact, the format's maximum otherwise.
fn count_intact_frames(buf: &[u8], from: usize) -> u64 {
    // Without an intact header (salt, limit) no frame can be checked.
    let Ok(header) = format::decode_segment_header(buf) else {
        return 0;
    };
    let mut at = from.max(format::SEGMENT_HEADER_BYTES);
    let mut n = 0;
    // Bounded like the scan's search: a crafted segment must not make the
    // count quadratic (past the bound the count is a lower bound).
    let mut checksummed = 0u64;
    while at + format::FRAME_HEADER_BYTES <= buf.len() {
        let len = format::le_u32(buf, at);
        let whole = at + format::FRAME_HEADER_BYTES + len as usize <= buf.len();
        if len <= header.record_bytes_max && whole {
            checksummed += u64::from(len);
            if checksummed > format::RESYNC_CHECKSUM_BYTES_MAX {
                break;
            }
        }
        let lsn = format::le_u64(buf, at + 8);
        match format::decode_frame(buf, at, lsn, &header) {
            Decoded::Record { frame_len, .. } => {
                n += 1;
                at += frame_len;
            }
            Decoded::Seal { .. } => at += format::FRAME_HEADER_BYTES,
            Decoded::Incomplete { .. } | Decoded::Bad(_) => at += 1,
        }
    }
    n
}
