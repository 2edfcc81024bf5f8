//! `text_file_stream`: text files moved (atomically) into a directory are
//! each read exactly once, including when weir dies in the middle of a file.
//!
//! How: a file is read in *chunks* of whole lines; each chunk is one WAL
//! record carrying a header (file name, identity = inode + size + mtime,
//! first line number, byte offset after its last line, whether it ends the
//! file) followed by its lines. Because the WAL itself says how far every
//! file got, a restart scans the retained WAL records plus a small progress
//! file and continues each file at the byte after its last logged chunk:
//! no line is logged twice and none is skipped. The progress file
//! (`DATA_DIR/receivers/<name>.progress`, `crate::layout::dir_progress`)
//! holds what the released (committed) chunks said; the release hook
//! rewrites it atomically (temp, fsync, rename, directory fsync) before
//! their WAL segments may be deleted, so what cleanup removes is always
//! remembered. The stream's decoder strips the header: the DStream sees
//! plain lines.
//!
//! Rules:
//! - Files present at start are processed unless the WAL or the progress
//!   file records them as read (same name and identity).
//! - Ignored: names starting with `.` or `_`, ending in `.tmp`, or
//!   containing `_COPYING_`; anything not a regular file.
//! - A file must not change after it was moved in: a file whose inode, size
//!   or mtime differs from the recorded one is read again as a new file.
//!   The size at open bounds what is read.
//! - Line rules are those of `super::lines` (over-long lines dropped
//!   whole, counted and logged with the file and line number; invalid UTF-8
//!   replaced by U+FFFD; CRLF accepted).
//! - Files are taken in (mtime, name) order, one at a time.
//! - A file that disappears is forgotten once no unreleased chunk refers to
//!   it; a file that cannot be read is logged and retried at the next scan.
//!
//! Limits: `lines_per_chunk_max` (default 4,096) lines and `chunk_bytes_max`
//! (default 512 KiB) per chunk (one WAL record, so at most the WAL's
//! `record_bytes_max` minus the header); `line_bytes_max` (default 64 KiB);
//! `files_per_scan_max` (default 1,000) new files taken per scan;
//! `files_tracked_max` (default 100,000) files remembered (memory and the
//! progress file grow with the files kept in the directory, about 100 bytes
//! each: move processed files away); unreleased chunks are bounded by the
//! backlog. Names at most [`NAME_BYTES_MAX`] bytes.
//! Must never: log a line twice or skip one, read a file that is still being
//! written under a temp name, or let cleanup delete a chunk the progress
//! file does not cover; or import the context (it builds this receiver).
//!
//! Files: `mod.rs` the settings, counters and the receiver's loop;
//! `records.rs` the chunk and progress byte formats (pure, fuzzed);
//! `known.rs` what is known per file, recovery and the release hook;
//! `scan.rs` listing the directory; `read.rs` reading a file into chunks.
//! The context's `text_file_stream[_with]` (in `crate::context`) builds
//! the receiver with `receiver`.

mod known;
mod read;
pub mod records;
mod scan;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use records::decode_lines;
pub use records::NAME_BYTES_MAX;
pub use scan::file_partition;
#[cfg(any(test, feature = "testing"))]
pub use scan::ignored_name;

use self::known::{persist, KnownCell};
use super::{sleep_unless_stopping, Receiver, ReceiverContext, ReceiverError, ReleaseHook};
use crate::dstream::BoxError;

/// Settings of a directory stream.
#[derive(Debug, Clone)]
pub struct DirConfig {
    /// Longest accepted line in bytes, without its `\n`.
    pub line_bytes_max: usize,
    /// Most lines per chunk (one WAL record).
    pub lines_per_chunk_max: usize,
    /// Most line bytes per chunk (at least 3 x `line_bytes_max`: invalid
    /// UTF-8 can triple a line).
    pub chunk_bytes_max: usize,
    /// Most new files taken per directory scan.
    pub files_per_scan_max: usize,
    /// Most files remembered (read or partly read).
    pub files_tracked_max: usize,
    /// Wait between scans when there is nothing new.
    pub scan_interval: Duration,
}

impl Default for DirConfig {
    fn default() -> Self {
        DirConfig {
            line_bytes_max: 64 << 10,
            lines_per_chunk_max: 4096,
            chunk_bytes_max: 512 << 10,
            files_per_scan_max: 1000,
            files_tracked_max: 100_000,
            scan_interval: Duration::from_millis(200),
        }
    }
}

impl DirConfig {
    pub(crate) fn validate(
        &self,
        stream: &str,
        wal: &crate::wal::WalConfig,
    ) -> Result<(), ReceiverError> {
        let bad = |m: String| {
            Err(ReceiverError::Config {
                stream: stream.to_string(),
                message: m,
            })
        };
        let record_max = wal.record_bytes_max as usize;
        let overhead = records::CHUNK_FIXED_BYTES + NAME_BYTES_MAX + 4 * self.lines_per_chunk_max;
        if self.line_bytes_max == 0
            || self.chunk_bytes_max < super::lines::repaired_bytes_max(self.line_bytes_max)
        {
            return bad(format!(
                "line_bytes_max {} must be positive and at most a third of chunk_bytes_max {} (invalid UTF-8 can triple a line)",
                self.line_bytes_max, self.chunk_bytes_max
            ));
        }
        if self.chunk_bytes_max + overhead > record_max {
            return bad(format!(
                "chunk_bytes_max {} plus the chunk header ({overhead} bytes at most) must fit the WAL's record_bytes_max {record_max}",
                self.chunk_bytes_max
            ));
        }
        if self.lines_per_chunk_max == 0
            || self.files_per_scan_max == 0
            || self.files_tracked_max == 0
        {
            return bad(
                "lines_per_chunk_max, files_per_scan_max and files_tracked_max must be positive"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Counters of a directory stream (monotonic).
#[derive(Debug, Default)]
pub struct DirStats {
    /// Files completely logged.
    pub files_done: std::sync::atomic::AtomicU64,
    /// Chunks logged.
    pub chunks_stored: std::sync::atomic::AtomicU64,
    /// Lines logged.
    pub lines_stored: std::sync::atomic::AtomicU64,
    /// Lines dropped for exceeding `line_bytes_max`.
    pub lines_too_long: std::sync::atomic::AtomicU64,
    /// Lines kept with invalid UTF-8 replaced by U+FFFD.
    pub lines_repaired: std::sync::atomic::AtomicU64,
    /// Failed attempts to open, stat, seek or read a file (retried).
    pub read_errors: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64, n: u64) -> u64 {
    c.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n
}

struct DirReceiver {
    dir: PathBuf,
    progress_path: PathBuf,
    config: DirConfig,
    known: Arc<KnownCell>,
    stats: Arc<DirStats>,
    /// `(p, n)`: this receiver reads only the files of partition `p` of
    /// `n` (`crate::context::file_partition`); `(0, 1)`: every file.
    share: (usize, usize),
}

/// A directory receiver ready to register: the receiver, its counters, and
/// the release hook that writes its progress file before cleanup.
pub(crate) struct DirParts {
    /// The receiver (its thread starts with the context).
    pub(crate) receiver: Box<dyn Receiver>,
    /// The stream's counters.
    pub(crate) stats: Arc<DirStats>,
    /// To register before `start()`: a batch may be released before the
    /// receiver thread runs.
    pub(crate) release_hook: ReleaseHook,
}

/// The receiver of a directory stream reading `dir`, keeping its progress
/// file at `progress_path` (`crate::layout::dir_progress`).
pub(crate) fn receiver(dir: PathBuf, progress_path: PathBuf, config: DirConfig) -> DirParts {
    receiver_part(dir, progress_path, config, (0, 1), Arc::default())
}

/// The receiver of partition `share.0` of `share.1` of a directory
/// stream: it reads only the files whose name hashes to it, counting into
/// `stats` (shared by the partitions).
pub(crate) fn receiver_part(
    dir: PathBuf,
    progress_path: PathBuf,
    config: DirConfig,
    share: (usize, usize),
    stats: Arc<DirStats>,
) -> DirParts {
    debug_assert!(share.0 < share.1);
    let known: Arc<KnownCell> = Arc::default();
    let hook_known = known.clone();
    let hook_path = progress_path.clone();
    DirParts {
        receiver: Box::new(DirReceiver {
            dir,
            progress_path,
            config,
            known,
            stats: stats.clone(),
            share,
        }),
        stats,
        release_hook: Box::new(move |end| persist(&hook_known, &hook_path, end).map(|()| end)),
    }
}

impl Receiver for DirReceiver {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        // The release hook was set before start; it allows no cleanup until
        // recovery has learned every retained chunk.
        self.recover(&ctx)?;
        let mut missing_logged = false;
        while !ctx.is_stopping() {
            let files = match self.scan(&ctx) {
                Ok(f) => {
                    if missing_logged {
                        ctx.set_state(super::ReceiverState::Running, None);
                    }
                    missing_logged = false;
                    f
                }
                Err(e) => {
                    if !missing_logged {
                        let why = format!("cannot list {}: {e}", self.dir.display());
                        ctx.set_state(super::ReceiverState::Retrying, Some(&why));
                        tracing::warn!(
                            stream = ctx.stream_name(),
                            dir = %self.dir.display(),
                            error = %e,
                            "cannot list the input directory; retrying (create it or fix its permissions)"
                        );
                        missing_logged = true;
                    }
                    Vec::new()
                }
            };
            // Idle unless a chunk was stored: an unreadable file must not
            // make the loop spin.
            let before = self
                .stats
                .chunks_stored
                .load(std::sync::atomic::Ordering::Relaxed);
            for c in &files {
                match self.read_file(&ctx, c) {
                    Ok(()) => {}
                    Err(ReceiverError::Stopping) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            let idle = self
                .stats
                .chunks_stored
                .load(std::sync::atomic::Ordering::Relaxed)
                == before;
            if idle && sleep_unless_stopping(&ctx, self.config.scan_interval) {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
