//! `weir status DATA_DIR` as a library call: what a stopped service's data
//! directory holds, as a [`DataDirReport`] (the CLI only prints it).
//!
//! Owns: [`DataDirReport`], [`LogReport`] and [`data_dir_report`]. It is
//! kept apart from `status.rs`, which holds the *live* figures of a running
//! service (read from its context, served on `/status` and `/metrics`):
//! this one reads the files of a stopped one, and a running service holds
//! the checkpoint's lock, so the two never describe the same moment.
//! Limits: reads every frame of every input log under `DATA_DIR/wal/` (one
//! `wal::verify_dir` each, read-only), so it costs about one read of the
//! logs; the checkpoint is read through `checkpoint::open_existing`.
//! Must never: change what weir stored (no WAL is opened for writing, so a
//! torn tail stays for the next start to cut; nothing is committed), or
//! print (the caller renders the report).

use std::path::{Path, PathBuf};

use crate::checkpoint::BatchSpec;
use crate::storage::RealFs;
use crate::wal;

/// What a stopped data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirReport {
    /// Committed batches on record.
    pub batches_completed: u64,
    /// The last committed batch (its time and the range of each source).
    pub last_committed: Option<BatchSpec>,
    /// Batches allocated but not committed: re-run at the next start with
    /// exactly these ranges.
    pub pending: Vec<BatchSpec>,
    /// `(operator, keys)` of the committed state (operators with keys).
    pub state_keys: Vec<(String, u64)>,
    /// One row per input log (`DATA_DIR/wal/<stream>`), sorted by name;
    /// empty when the pipeline has none (generator sources).
    pub logs: Vec<LogReport>,
}

/// One input stream's write-ahead log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    /// The stream (its directory's name).
    pub name: String,
    /// Segment files checked.
    pub segments: u64,
    /// Bytes of those segments.
    pub bytes: u64,
    /// First record still held (0 for an empty log).
    pub first_lsn: u64,
    /// One past the last intact record (0 for an empty log).
    pub end_lsn: u64,
    /// Position after the last committed batch (the first record still
    /// held when no committed batch read this stream).
    pub committed: u64,
    /// Records logged but not in a committed batch: `end_lsn - committed`.
    pub backlog_records: u64,
    /// The first damaged place, if the log is damaged.
    pub problem: Option<wal::Problem>,
}

impl DataDirReport {
    /// Whether any input log is damaged (`weir status` then exits 1).
    pub fn damaged(&self) -> bool {
        self.logs.iter().any(|l| l.problem.is_some())
    }

    /// Nothing damaged and every allocated batch committed.
    pub fn clean(&self) -> bool {
        !self.damaged() && self.pending.is_empty()
    }
}

/// Reads the checkpoint and every input log of the stopped data directory
/// `data_dir`. Fails when it has no checkpoint, when the checkpoint is
/// locked (weir runs on it) or unreadable, when a log belongs to another
/// data directory than the checkpoint (`weir run` refuses it too), or when a log cannot be read;
/// damage inside a log is not an error but [`LogReport::problem`].
pub fn data_dir_report(data_dir: &Path) -> crate::Result<DataDirReport> {
    use crate::checkpoint::CheckpointStore;
    crate::context::check_offline_missing(data_dir)?;
    let store = crate::checkpoint::open_existing(data_dir)?;
    crate::context::check_offline(data_dir, &store)?;
    let completed = store.completed()?;
    let pending = store.pending()?;
    let state_keys = store.state_sizes()?;
    drop(store);
    let batches_completed = completed.len() as u64;
    let last_committed = completed.into_iter().last();
    let logs = input_log_dirs(data_dir)
        .into_iter()
        .map(|(name, dir)| log_report(name, &dir, last_committed.as_ref()))
        .collect::<crate::Result<Vec<_>>>()?;
    Ok(DataDirReport {
        batches_completed,
        last_committed,
        pending,
        state_keys,
        logs,
    })
}

/// `(stream, directory)` of each input log, sorted; none when
/// `DATA_DIR/wal` is absent or unreadable.
fn input_log_dirs(data_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut dirs: Vec<PathBuf> = match std::fs::read_dir(data_dir.join("wal")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    dirs.sort();
    dirs.into_iter()
        .map(|d| {
            let name = d
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            (name, d)
        })
        .collect()
}

fn log_report(name: String, dir: &Path, last: Option<&BatchSpec>) -> crate::Result<LogReport> {
    let report = wal::verify_dir(&RealFs, dir)?;
    let first_lsn = report.first_lsn().unwrap_or(0);
    let end_lsn = report.end_lsn().unwrap_or(0);
    let committed = last
        .and_then(|b| b.ranges.iter().find(|r| r.source == name))
        .map_or(first_lsn, |r| r.end);
    Ok(LogReport {
        segments: report.segments.len() as u64,
        bytes: report.bytes(),
        first_lsn,
        end_lsn,
        committed,
        backlog_records: end_lsn.saturating_sub(committed),
        problem: report.problem,
        name,
    })
}
