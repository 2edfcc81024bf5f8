//! The dead-letter log: records a step could not process under
//! `on_error = "dead_letter"`, with their position and error, in
//! `DATA_DIR/dead-letter/batch-<batch time ms, 20 digits>.jsonl` (JSON
//! lines, one file per batch that dead-lettered).
//!
//! A batch's file is written atomically and fsynced (through
//! `crate::storage::write_atomic`) by the scheduler **before** the batch
//! commits; a replayed batch evaluates the same records the same way and
//! rewrites the same file with the same bytes, so a crash never
//! duplicates an entry.
//!
//! Limits: all files together at most `bytes_max` bytes (default
//! [`DEAD_LETTER_BYTES_MAX_DEFAULT`], 1 GiB); a batch whose file would pass
//! it fails (not committed, its input stays in the log) with an error that
//! says to list, save and remove the files, never a silent drop.
//! `weir dead-letter list` reads at most [`DEAD_LETTER_READ_BYTES_MAX`]
//! per file.
//! Must never: write after its batch committed, or drop an entry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::SinkError;
use crate::dstream::{BadRecord, BoxError, DeadLetterSink};
use crate::storage::{RealFs, Storage};

/// Default bound of the dead-letter log, in bytes (1 GiB).
pub const DEAD_LETTER_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Most bytes of one dead-letter file that `read_dead_letters` reads.
pub const DEAD_LETTER_READ_BYTES_MAX: u64 = 1 << 30;

/// One entry of the dead-letter log (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The batch that dead-lettered it.
    pub batch_time_ms: u64,
    /// The input stream (absent after a shuffle).
    pub stream: Option<String>,
    /// The record number in that stream (the WAL's LSN).
    pub lsn: Option<u64>,
    /// The step that could not process it.
    pub step: String,
    /// The step's error.
    pub error: String,
    /// The step's input as text (a line as it was, JSON compact).
    pub record: String,
}

/// `DATA_DIR/dead-letter/`, bounded, counting per step.
#[derive(Debug)]
pub struct DeadLetterLog {
    dir: PathBuf,
    bytes_max: u64,
    /// Records dead-lettered by committed batches since start, per step.
    counts: Mutex<BTreeMap<String, u64>>,
}

/// The file of batch `time_ms`.
fn file_name(time_ms: u64) -> String {
    format!("batch-{time_ms:020}.jsonl")
}

impl DeadLetterLog {
    /// The log of data directory `data_dir`, at most `bytes_max` bytes.
    pub fn new(data_dir: &Path, bytes_max: u64) -> DeadLetterLog {
        DeadLetterLog {
            dir: crate::layout::dead_letter_dir(data_dir),
            bytes_max,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// `(step, records dead-lettered since start)`, by step.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        g.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Bytes of every batch file but `except`.
    fn used_bytes(&self, except: &str) -> Result<u64, SinkError> {
        let io = |source| SinkError::DeadLetterIo {
            path: self.dir.clone(),
            source,
        };
        let mut total = 0;
        for name in RealFs.list(&self.dir).map_err(io)? {
            if name.starts_with("batch-") && name != except {
                let p = self.dir.join(&name);
                total += std::fs::metadata(&p)
                    .map_err(|source| SinkError::DeadLetterIo { path: p, source })?
                    .len();
            }
        }
        Ok(total)
    }

    fn write_file(&self, time_ms: u64, records: &[BadRecord]) -> Result<(), SinkError> {
        let mut text = String::new();
        for r in records {
            let e = DeadLetter {
                batch_time_ms: time_ms,
                stream: r.stream.clone(),
                lsn: r.lsn,
                step: r.step.clone(),
                error: r.error.clone(),
                record: r.record.clone(),
            };
            // Serializing a struct of strings and numbers cannot fail.
            text.push_str(&serde_json::to_string(&e).unwrap_or_default());
            text.push('\n');
        }
        let io = |source| SinkError::DeadLetterIo {
            path: self.dir.clone(),
            source,
        };
        if !RealFs.exists(&self.dir).map_err(io)? {
            RealFs.create_dir_all(&self.dir).map_err(io)?;
            if let Some(parent) = self.dir.parent() {
                RealFs.sync_dir(parent).map_err(io)?;
            }
        }
        let name = file_name(time_ms);
        let used = self.used_bytes(&name)?;
        let bytes = text.len() as u64;
        if used + bytes > self.bytes_max {
            return Err(SinkError::DeadLetterFull {
                dir: self.dir.clone(),
                used,
                bytes,
                bytes_max: self.bytes_max,
            });
        }
        crate::storage::write_atomic(&RealFs, &self.dir.join(name), text.as_bytes())?;
        Ok(())
    }
}

impl DeadLetterSink for DeadLetterLog {
    fn write(&self, batch_time_ms: u64, records: &[BadRecord]) -> Result<(), BoxError> {
        Ok(self.write_file(batch_time_ms, records)?)
    }

    fn committed(&self, _batch_time_ms: u64, records: &[BadRecord]) {
        let mut g = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            *g.entry(r.step.clone()).or_default() += 1;
        }
    }
}

/// Every entry of `data_dir`'s dead-letter log, oldest batch first (none
/// when the directory does not exist).
pub fn read_dead_letters(data_dir: &Path) -> Result<Vec<DeadLetter>, SinkError> {
    let dir = crate::layout::dead_letter_dir(data_dir);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut names = RealFs
        .list(&dir)
        .map_err(|source| SinkError::DeadLetterIo {
            path: dir.clone(),
            source,
        })?;
    names.retain(|n| n.starts_with("batch-") && n.ends_with(".jsonl"));
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let path = dir.join(&n);
        let io = |source| SinkError::DeadLetterIo {
            path: path.clone(),
            source,
        };
        let len = std::fs::metadata(&path).map_err(io)?.len();
        if len > DEAD_LETTER_READ_BYTES_MAX {
            return Err(SinkError::DeadLetterEntry {
                file: path,
                line: 0,
                reason: format!("the file holds {len} bytes, more than {DEAD_LETTER_READ_BYTES_MAX} this command reads"),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(io)?;
        for (i, l) in text.lines().enumerate() {
            let e = serde_json::from_str(l).map_err(|e| SinkError::DeadLetterEntry {
                file: path.clone(),
                line: i + 1,
                reason: e.to_string(),
            })?;
            out.push(e);
        }
    }
    Ok(out)
}
