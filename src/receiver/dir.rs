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
//! (`DATA_DIR/receivers/<name>.progress`) holds what the released (committed)
//! chunks said; the release hook rewrites it atomically (temp, fsync,
//! rename, directory fsync) before their WAL segments may be deleted, so
//! what cleanup removes is always remembered. The stream's decoder strips
//! the header: the DStream sees plain lines.
//!
//! Rules:
//! - Files present at start are processed unless the WAL or the progress
//!   file records them as read (same name and identity).
//! - Ignored: names starting with `.` or `_`, ending in `.tmp`, or
//!   containing `_COPYING_`; anything not a regular file.
//! - A file must not change after it was moved in: a file whose inode, size
//!   or mtime differs from the recorded one is read again as a new file.
//!   The size at open bounds what is read.
//! - Line rules are those of [`super::lines`] (over-long lines dropped
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
//! file does not cover.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::lines::{log_nth, to_text, Line, LineSplitter};
use super::{sleep_unless_stopping, Receiver, ReceiverContext, ReceiverError};
use crate::dstream::{BoxError, DStream};
use crate::StreamingContext;

/// Longest accepted file name, in bytes.
pub const NAME_BYTES_MAX: usize = 4096;
const CHUNK_MAGIC: &[u8; 4] = b"WDC1";
const PROGRESS_MAGIC: &[u8; 4] = b"WDP1";
/// Fixed part of a chunk header besides the name.
const CHUNK_FIXED_BYTES: usize = 4 + 2 + 8 * 6 + 1 + 4;
const READ_BYTES: usize = 64 << 10;

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
    fn validate(&self, stream: &str, wal: &crate::wal::WalConfig) -> Result<(), ReceiverError> {
        let bad = |m: String| {
            Err(ReceiverError::Config {
                stream: stream.to_string(),
                message: m,
            })
        };
        let record_max = wal.record_bytes_max as usize;
        let overhead = CHUNK_FIXED_BYTES + NAME_BYTES_MAX + 4 * self.lines_per_chunk_max;
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

/// Which version of a file: changes when it is replaced or modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: u64,
}

impl FileIdentity {
    fn of(m: &std::fs::Metadata) -> Self {
        FileIdentity {
            inode: m.ino(),
            size: m.len(),
            mtime_ns: (m.mtime().max(0) as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(m.mtime_nsec().max(0) as u64),
        }
    }
}

/// How far a file got: what one chunk header (or progress entry) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProgress {
    /// File name within the directory.
    pub name: String,
    pub identity: FileIdentity,
    /// Lines of the file before this chunk (0-based number of its first).
    pub first_line: u64,
    /// Lines of the file up to the end of this chunk, counting dropped
    /// over-long lines: the next chunk's `first_line`.
    pub lines: u64,
    /// Byte offset in the file just after this chunk's last line.
    pub offset: u64,
    /// Whether this chunk ends the file.
    pub complete: bool,
    /// End LSN of the chunk that said so (orders versions of a name).
    pub lsn: u64,
}

/// Errors decoding chunk records and the progress file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirFormatError {
    #[error("{what}: truncated at byte {offset} (needed {needed} more bytes)")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{what}: bad magic at byte 0 (expected {expected:?}, found {found:?})")]
    Magic {
        what: &'static str,
        expected: [u8; 4],
        found: Vec<u8>,
    },
    #[error("{what}: {problem} at byte {offset}")]
    Invalid {
        what: &'static str,
        offset: usize,
        problem: String,
    },
    #[error("progress file: checksum mismatch (expected {expected:#010x}, found {found:#010x})")]
    Checksum { expected: u32, found: u32 },
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DirFormatError> {
        if self.b.len() - self.at < n {
            return Err(DirFormatError::Truncated {
                what: self.what,
                offset: self.at,
                needed: n - (self.b.len() - self.at),
            });
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DirFormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DirFormatError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> Result<u32, DirFormatError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, DirFormatError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn invalid(&self, problem: impl Into<String>) -> DirFormatError {
        DirFormatError::Invalid {
            what: self.what,
            offset: self.at,
            problem: problem.into(),
        }
    }
    fn magic(&mut self, m: &[u8; 4]) -> Result<(), DirFormatError> {
        let found = self.take(4.min(self.b.len()))?;
        if found != m {
            return Err(DirFormatError::Magic {
                what: self.what,
                expected: *m,
                found: found.to_vec(),
            });
        }
        Ok(())
    }
    fn name(&mut self) -> Result<String, DirFormatError> {
        let n = self.u16()? as usize;
        if n == 0 || n > NAME_BYTES_MAX {
            return Err(self.invalid(format!("file name length {n} not in 1..={NAME_BYTES_MAX}")));
        }
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| DirFormatError::Invalid {
            what: self.what,
            offset: at,
            problem: "file name is not UTF-8".into(),
        })
    }
    /// Identity, lines/offset fields shared by chunks and progress entries.
    fn progress(&mut self, name: String) -> Result<FileProgress, DirFormatError> {
        let identity = FileIdentity {
            inode: self.u64()?,
            size: self.u64()?,
            mtime_ns: self.u64()?,
        };
        let first_line = self.u64()?;
        let lines = self.u64()?;
        let offset = self.u64()?;
        let complete = match self.u8()? {
            0 => false,
            1 => true,
            f => return Err(self.invalid(format!("flags {f:#04x} (expected 0 or 1)"))),
        };
        if lines < first_line {
            return Err(self.invalid(format!(
                "line count {lines} before the first line {first_line}"
            )));
        }
        if offset > identity.size {
            return Err(self.invalid(format!(
                "offset {offset} beyond the file size {}",
                identity.size
            )));
        }
        Ok(FileProgress {
            name,
            identity,
            first_line,
            lines,
            offset,
            complete,
            lsn: 0,
        })
    }
}

fn put_progress(out: &mut Vec<u8>, p: &FileProgress) {
    out.extend_from_slice(&(p.name.len() as u16).to_le_bytes());
    out.extend_from_slice(p.name.as_bytes());
    for v in [
        p.identity.inode,
        p.identity.size,
        p.identity.mtime_ns,
        p.first_line,
        p.lines,
        p.offset,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(u8::from(p.complete));
}

/// Encodes a chunk record: header, then each line as u32 length + bytes.
pub fn encode_chunk(p: &FileProgress, lines: &[&str]) -> Vec<u8> {
    let body: usize = lines.iter().map(|l| 4 + l.len()).sum();
    let mut out = Vec::with_capacity(CHUNK_FIXED_BYTES + p.name.len() + body);
    out.extend_from_slice(CHUNK_MAGIC);
    put_progress(&mut out, p);
    out.extend_from_slice(&(lines.len() as u32).to_le_bytes());
    for l in lines {
        out.extend_from_slice(&(l.len() as u32).to_le_bytes());
        out.extend_from_slice(l.as_bytes());
    }
    out
}

/// Decodes a chunk's header: its progress, its line count and where its
/// lines start.
fn chunk_header(bytes: &[u8]) -> Result<(FileProgress, u32, usize), DirFormatError> {
    let mut c = Cursor {
        b: bytes,
        at: 0,
        what: "directory chunk",
    };
    c.magic(CHUNK_MAGIC)?;
    let name = c.name()?;
    let p = c.progress(name)?;
    let n = c.u32()?;
    Ok((p, n, c.at))
}

/// Decodes a chunk record into its header and lines (the stream's
/// decoder). Strict: every length must fit, lines must be UTF-8, and no
/// bytes may follow.
pub fn decode_chunk(bytes: &[u8]) -> Result<(FileProgress, Vec<String>), DirFormatError> {
    let (p, n, at) = chunk_header(bytes)?;
    let mut c = Cursor {
        b: bytes,
        at,
        what: "directory chunk",
    };
    // Each line takes at least 4 bytes: refuse counts the bytes cannot hold
    // before allocating.
    if n as usize > (bytes.len() - at) / 4 {
        return Err(c.invalid(format!(
            "{n} lines cannot fit in {} bytes",
            bytes.len() - at
        )));
    }
    let mut lines = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = c.u32()? as usize;
        let at = c.at;
        let raw = c.take(len)?;
        let s = std::str::from_utf8(raw).map_err(|_| DirFormatError::Invalid {
            what: "directory chunk",
            offset: at,
            problem: "line is not UTF-8".into(),
        })?;
        lines.push(s.to_string());
    }
    if c.at != bytes.len() {
        return Err(c.invalid(format!("{} trailing bytes", bytes.len() - c.at)));
    }
    Ok((p, lines))
}

/// Encodes the progress file: magic, count, entries (with their line count
/// and LSN), CRC-32 of everything before it.
pub fn encode_progress(entries: &[&FileProgress]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(PROGRESS_MAGIC);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for p in entries {
        put_progress(&mut out, p);
        out.extend_from_slice(&p.lsn.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the progress file written by [`encode_progress`].
pub fn decode_progress(bytes: &[u8]) -> Result<Vec<FileProgress>, DirFormatError> {
    let what = "progress file";
    if bytes.len() < 12 {
        return Err(DirFormatError::Truncated {
            what,
            offset: bytes.len(),
            needed: 12 - bytes.len(),
        });
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let found = u32::from_le_bytes(crc.try_into().unwrap_or([0; 4]));
    let expected = crc32fast::hash(body);
    let mut c = Cursor {
        b: body,
        at: 0,
        what,
    };
    c.magic(PROGRESS_MAGIC)?;
    if found != expected {
        return Err(DirFormatError::Checksum { expected, found });
    }
    let n = c.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(body.len() / 40));
    for _ in 0..n {
        let name = c.name()?;
        let mut p = c.progress(name)?;
        p.lsn = c.u64()?;
        out.push(p);
    }
    if c.at != body.len() {
        return Err(c.invalid(format!("{} trailing bytes", body.len() - c.at)));
    }
    Ok(out)
}

/// The decoders' property, for the `dir_records` fuzz target and tests:
/// on any input they return a value or an error, and what decodes
/// re-encodes to exactly `data` (the formats are canonical). Panics if not.
pub fn check_canonical(data: &[u8]) {
    if let Ok((p, lines)) = decode_chunk(data) {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(
            encode_chunk(&p, &refs),
            data,
            "chunk re-encodes differently"
        );
    }
    if let Ok(entries) = decode_progress(data) {
        let refs: Vec<_> = entries.iter().collect();
        assert_eq!(
            encode_progress(&refs),
            data,
            "progress re-encodes differently"
        );
    }
}

/// The stream's decoder: a chunk's lines, header stripped.
fn decode_lines(bytes: &[u8]) -> Result<Vec<String>, BoxError> {
    Ok(decode_chunk(bytes)?.1)
}

/// What the receiver knows about every file, shared with the release hook.
#[derive(Default)]
struct Known {
    /// Newest progress per name (released or not).
    current: HashMap<String, FileProgress>,
    /// Progress as of released chunks: what the progress file holds.
    released: HashMap<String, FileProgress>,
    /// Logged chunks not yet released, oldest first.
    unreleased: VecDeque<FileProgress>,
    /// `released` changed since the progress file was written.
    dirty: bool,
    /// Every chunk below this LSN has been learned (0 until recovery ran):
    /// the hook refuses cleanup above it, so a chunk whose `store` returned
    /// but is not yet recorded here can never lose its segment unrecorded.
    learned_end: u64,
}

impl Known {
    fn learn(&mut self, p: FileProgress) {
        if self.current.get(&p.name).is_none_or_older(p.lsn) {
            self.current.insert(p.name.clone(), p.clone());
        }
        self.learned_end = self.learned_end.max(p.lsn);
        self.unreleased.push_back(p);
    }

    fn release(&mut self, end: u64) {
        while self.unreleased.front().is_some_and(|p| p.lsn <= end) {
            if let Some(p) = self.unreleased.pop_front() {
                if self.released.get(&p.name).is_none_or_older(p.lsn) {
                    self.released.insert(p.name.clone(), p);
                    self.dirty = true;
                }
            }
        }
    }

    /// Forgets files no longer in the directory (once nothing unreleased
    /// refers to them).
    fn prune(&mut self, present: &HashSet<String>) {
        let pinned: HashSet<&str> = self.unreleased.iter().map(|p| p.name.as_str()).collect();
        let gone: Vec<String> = self
            .current
            .keys()
            .filter(|n| !present.contains(*n) && !pinned.contains(n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            self.current.remove(&n);
            if self.released.remove(&n).is_some() {
                self.dirty = true;
            }
        }
    }
}

trait OlderThan {
    fn is_none_or_older(&self, lsn: u64) -> bool;
}

impl OlderThan for Option<&FileProgress> {
    fn is_none_or_older(&self, lsn: u64) -> bool {
        self.map_or(true, |q| q.lsn < lsn)
    }
}

/// Whether a directory entry name is a temp or hidden file (ignored).
pub fn ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || name.ends_with(".tmp")
        || name.contains("_COPYING_")
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
}

/// [`Known`] and the signal that more chunks were learned.
#[derive(Default)]
struct KnownCell {
    known: Mutex<Known>,
    learned: Condvar,
}

/// How long the release hook waits for a chunk whose `store` returned to
/// be recorded before it refuses cleanup for this batch.
const LEARN_WAIT: Duration = Duration::from_secs(1);

fn lock(k: &KnownCell) -> std::sync::MutexGuard<'_, Known> {
    k.known.lock().unwrap_or_else(|e| e.into_inner())
}

impl DirReceiver {
    fn io_err(
        &self,
        ctx: &ReceiverContext,
        action: &'static str,
        path: &Path,
        e: std::io::Error,
    ) -> ReceiverError {
        ReceiverError::Io {
            stream: ctx.stream_name().to_string(),
            action,
            path: path.display().to_string(),
            source: e,
        }
    }

    /// Rebuilds what is known from the progress file and the retained WAL.
    fn recover(&self, ctx: &ReceiverContext) -> Result<(), BoxError> {
        let mut k = lock(&self.known);
        match std::fs::read(&self.progress_path) {
            Ok(bytes) => {
                let entries = decode_progress(&bytes).map_err(|e| {
                    format!(
                        "{}: {e}. The file is written atomically, so this is damage; restore it from a backup, \
                         or delete it to read every file in the directory again (lines already processed would be repeated)",
                        self.progress_path.display()
                    )
                })?;
                for p in entries {
                    k.current.insert(p.name.clone(), p.clone());
                    k.released.insert(p.name.clone(), p);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(self
                    .io_err(ctx, "read the progress file", &self.progress_path, e)
                    .into())
            }
        }
        let wal = ctx.wal();
        let mut reader = wal.read(wal.first_lsn()..wal.end())?;
        while let Some(r) = reader.next_ref() {
            let (lsn, bytes) = r?;
            let (mut p, _, _) = chunk_header(bytes)
                .map_err(|e| format!("record {lsn} of the WAL in {}: {e}", wal.dir().display()))?;
            p.lsn = lsn + 1;
            k.learn(p);
        }
        k.learned_end = k.learned_end.max(wal.end());
        drop(k);
        self.known.learned.notify_all();
        Ok(())
    }
}

/// One file to read, as listed.
struct Candidate {
    name: String,
    path: PathBuf,
    mtime_ns: u64,
}

/// Lines of the chunk being built.
struct ChunkBuf {
    text: String,
    ends: Vec<usize>,
}

impl DirReceiver {
    /// Lists the directory: new or unfinished files (at most
    /// `files_per_scan_max`, oldest first) and, when the listing was
    /// complete, forgets files that are gone.
    fn scan(&self, ctx: &ReceiverContext) -> Result<Vec<Candidate>, std::io::Error> {
        let mut present = HashSet::new();
        let mut out = Vec::new();
        let mut truncated = false;
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue; // not UTF-8: cannot be recorded in a chunk header
            };
            if ignored_name(&name) || name.len() > NAME_BYTES_MAX {
                continue;
            }
            if present.len() >= self.config.files_tracked_max {
                truncated = true;
                break;
            }
            let m = match e.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let id = FileIdentity::of(&m);
            let done = lock(&self.known)
                .current
                .get(&name)
                .is_some_and(|p| p.complete && p.identity == id);
            present.insert(name.clone());
            if !done {
                out.push(Candidate {
                    path: e.path(),
                    name,
                    mtime_ns: id.mtime_ns,
                });
            }
        }
        if truncated {
            tracing::warn!(
                stream = ctx.stream_name(),
                dir = %self.dir.display(),
                files_tracked_max = self.config.files_tracked_max,
                "the directory holds more files than files_tracked_max; only part of it is read. Move processed files elsewhere or raise files_tracked_max"
            );
        } else {
            lock(&self.known).prune(&present);
        }
        out.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        out.truncate(self.config.files_per_scan_max);
        Ok(out)
    }

    /// Reads one file from where the log says it got, chunk by chunk.
    /// Returns Err only for errors that must stop the context.
    fn read_file(&self, ctx: &ReceiverContext, c: &Candidate) -> Result<(), ReceiverError> {
        let warn = |action: &str, e: &std::io::Error| {
            let n = bump(&self.stats.read_errors, 1);
            if log_nth(n) {
                tracing::warn!(
                    stream = ctx.stream_name(),
                    file = %c.path.display(),
                    error = %e,
                    errors_total = n,
                    "cannot {action} the file; it is retried at the next scan (check its permissions)"
                );
            }
        };
        let file = match File::open(&c.path) {
            Ok(f) => f,
            Err(e) => {
                warn("open", &e);
                return Ok(());
            }
        };
        let identity = match file.metadata() {
            Ok(m) => FileIdentity::of(&m),
            Err(e) => {
                warn("stat", &e);
                return Ok(());
            }
        };
        let known = lock(&self.known).current.get(&c.name).cloned();
        let (mut line_no, mut offset) = match known {
            Some(p) if p.identity == identity => {
                if p.complete {
                    return Ok(());
                }
                (p.lines, p.offset)
            }
            _ => (0, 0),
        };
        if offset > 0 {
            tracing::info!(
                stream = ctx.stream_name(),
                file = %c.path.display(),
                line = line_no,
                byte = offset,
                "continuing a partly logged file where its last logged chunk ended"
            );
        }
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            warn("seek in", &e);
            return Ok(());
        }
        let mut r = BufReader::with_capacity(READ_BYTES, file.take(identity.size - offset));
        let mut splitter = LineSplitter::new(self.config.line_bytes_max);
        let mut chunk = ChunkBuf {
            text: String::with_capacity(self.config.chunk_bytes_max),
            ends: Vec::new(),
        };
        loop {
            let first_line = line_no;
            let complete;
            loop {
                let buf = match r.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn("read", &e);
                        return Ok(());
                    }
                };
                if buf.is_empty() {
                    splitter.finish(|l| self.on_line(ctx, c, &mut chunk, &mut line_no, l));
                    complete = true;
                    break;
                }
                let used =
                    splitter.feed(buf, |l| self.on_line(ctx, c, &mut chunk, &mut line_no, l));
                let full = used < buf.len() || !self.has_room(&chunk);
                r.consume(used);
                offset += used as u64;
                if full {
                    // A chunk ends at a line boundary: peek for the end of
                    // the file so the last chunk says it is the last.
                    complete = matches!(r.fill_buf(), Ok(b) if b.is_empty());
                    break;
                }
            }
            if complete {
                offset = identity.size;
            }
            let p = FileProgress {
                name: c.name.clone(),
                identity,
                first_line,
                lines: line_no,
                offset,
                complete,
                lsn: 0,
            };
            let mut start = 0;
            let lines: Vec<&str> = chunk
                .ends
                .iter()
                .map(|&e| {
                    let l = &chunk.text[start..e];
                    start = e;
                    l
                })
                .collect();
            let record = encode_chunk(&p, &lines);
            let range = ctx.store(&[&record[..]])?;
            bump(&self.stats.chunks_stored, 1);
            bump(&self.stats.lines_stored, lines.len() as u64);
            lock(&self.known).learn(FileProgress {
                lsn: range.end,
                ..p
            });
            self.known.learned.notify_all();
            chunk.text.clear();
            chunk.ends.clear();
            if complete {
                bump(&self.stats.files_done, 1);
                tracing::debug!(stream = ctx.stream_name(), file = %c.path.display(), lines = line_no, "file logged");
                return Ok(());
            }
        }
    }

    fn has_room(&self, c: &ChunkBuf) -> bool {
        c.ends.len() < self.config.lines_per_chunk_max
            && c.text.len() + super::lines::repaired_bytes_max(self.config.line_bytes_max)
                <= self.config.chunk_bytes_max
    }

    fn on_line(
        &self,
        ctx: &ReceiverContext,
        c: &Candidate,
        chunk: &mut ChunkBuf,
        line_no: &mut u64,
        line: Line<'_>,
    ) -> bool {
        *line_no += 1;
        match line {
            Line::TooLong => {
                let n = bump(&self.stats.lines_too_long, 1);
                if log_nth(n) {
                    tracing::warn!(
                        stream = ctx.stream_name(),
                        file = %c.path.display(),
                        line = *line_no,
                        line_bytes_max = self.config.line_bytes_max,
                        dropped_total = n,
                        "dropped a line longer than line_bytes_max; raise line_bytes_max or split the line"
                    );
                }
            }
            Line::Text(t) => {
                let text = to_text(t);
                if let std::borrow::Cow::Owned(_) = text {
                    let n = bump(&self.stats.lines_repaired, 1);
                    if log_nth(n) {
                        tracing::warn!(
                            stream = ctx.stream_name(),
                            file = %c.path.display(),
                            line = *line_no,
                            repaired_total = n,
                            "a line was not valid UTF-8; invalid bytes were replaced by U+FFFD and the line kept"
                        );
                    }
                }
                chunk.text.push_str(&text);
                chunk.ends.push(chunk.text.len());
            }
        }
        self.has_room(chunk)
    }

    /// The release hook: remembers what released chunks said, durably,
    /// before their WAL segments may go.
    fn persist(known: &KnownCell, path: &Path, end: u64) -> Result<(), BoxError> {
        let bytes = {
            let mut k = lock(known);
            // A chunk the batch consumed may have been acknowledged a moment
            // ago, its receiver not yet past recording it: wait briefly.
            let deadline = std::time::Instant::now() + LEARN_WAIT;
            while k.learned_end < end {
                let now = std::time::Instant::now();
                if now >= deadline {
                    break;
                }
                k = known
                    .learned
                    .wait_timeout(k, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            k.release(end);
            if k.learned_end < end {
                return Err(format!(
                    "chunks below record {end} are not all recorded yet (recorded up to {}); cleanup waits for the next batch",
                    k.learned_end
                )
                .into());
            }
            if !k.dirty {
                return Ok(());
            }
            let mut entries: Vec<&FileProgress> = k.released.values().collect();
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            encode_progress(&entries)
        };
        crate::storage::write_atomic(&crate::storage::RealFs, path, &bytes)?;
        lock(known).dirty = false;
        Ok(())
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
                    missing_logged = false;
                    f
                }
                Err(e) => {
                    if !missing_logged {
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

impl StreamingContext {
    /// Spark's `textFileStream`: the lines of every file moved into `dir`,
    /// each file read exactly once (across crashes too), through the WAL
    /// `DATA_DIR/wal/<name>` and the progress file
    /// `DATA_DIR/receivers/<name>.progress`, with default [`DirConfig`].
    /// See [`crate::receiver::dir`] for the rules.
    pub fn text_file_stream(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
    ) -> crate::Result<DStream<String>> {
        Ok(self
            .text_file_stream_with(name, dir, DirConfig::default())?
            .0)
    }

    /// [`StreamingContext::text_file_stream`] with explicit settings; also
    /// returns the stream's counters.
    pub fn text_file_stream_with(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        config: DirConfig,
    ) -> crate::Result<(DStream<String>, Arc<DirStats>)> {
        config.validate(name, self.wal_config())?;
        let data_dir = self.data_dir().ok_or_else(|| ReceiverError::Config {
            stream: name.to_string(),
            message: "text_file_stream needs a data directory: set .data_dir(..) or use StreamingContext::get_or_create".into(),
        })?;
        let receivers = data_dir.join("receivers");
        std::fs::create_dir_all(&receivers).map_err(|e| ReceiverError::Io {
            stream: name.to_string(),
            action: "create the directory",
            path: receivers.display().to_string(),
            source: e,
        })?;
        let stats = Arc::new(DirStats::default());
        let known: Arc<KnownCell> = Arc::default();
        let progress_path = receivers.join(format!("{name}.progress"));
        let receiver = DirReceiver {
            dir: dir.as_ref().to_path_buf(),
            progress_path: progress_path.clone(),
            config,
            known: known.clone(),
            stats: stats.clone(),
        };
        let (chunks, shared) =
            self.receiver_stream_shared(name, Box::new(receiver), Arc::new(decode_lines))?;
        // Set before start: a batch may be released before the receiver
        // thread runs.
        ReceiverContext::new(shared).set_release_hook(Box::new(move |end| {
            DirReceiver::persist(&known, &progress_path, end).map(|()| end)
        }));
        Ok((chunks.flat_map(|lines: Vec<String>| lines), stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(name: &str, lsn: u64) -> FileProgress {
        FileProgress {
            name: name.into(),
            identity: FileIdentity {
                inode: 7,
                size: 100,
                mtime_ns: 123_456_789,
            },
            first_line: 3,
            lines: 5,
            offset: 40,
            complete: false,
            lsn,
        }
    }

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let p = progress("a.txt", 0);
        let rec = encode_chunk(&p, &["x", "", "héllo"]);
        let (q, lines) = decode_chunk(&rec).unwrap();
        assert_eq!(q, p);
        assert_eq!(lines, vec!["x", "", "héllo"]);
        for cut in 0..rec.len() {
            assert!(decode_chunk(&rec[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = rec.clone();
        extra.push(0);
        assert!(decode_chunk(&extra)
            .unwrap_err()
            .to_string()
            .contains("1 trailing bytes"));
        let mut bad = rec.clone();
        bad[0] = b'X';
        assert!(matches!(
            decode_chunk(&bad),
            Err(DirFormatError::Magic { .. })
        ));
    }

    #[test]
    fn progress_round_trips_and_checks_its_crc() {
        let (a, b) = (progress("a", 9), progress("b", 12));
        let bytes = encode_progress(&[&a, &b]);
        assert_eq!(decode_progress(&bytes).unwrap(), vec![a, b]);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(matches!(
            decode_progress(&bad),
            Err(DirFormatError::Checksum { .. })
        ));
        assert!(decode_progress(&bytes[..bytes.len() - 1]).is_err());
    }

    // The fuzz target's property, on mutated valid images.
    proptest::proptest! {
        #[test]
        fn damaged_records_never_panic_and_decode_canonically(
            lines in proptest::collection::vec("[a-zé]{0,6}", 0..5),
            flips in proptest::collection::vec((0usize..400, 0u8..=255), 0..4),
            cut in 0usize..400,
            progress_file in proptest::bool::ANY,
        ) {
            let p = progress("n.txt", 4);
            let mut img = if progress_file {
                encode_progress(&[&p, &progress("m", 9)])
            } else {
                let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
                encode_chunk(&p, &refs)
            };
            check_canonical(&img);
            for (at, b) in flips {
                if !img.is_empty() {
                    let i = at % img.len();
                    img[i] = b;
                }
            }
            check_canonical(&img);
            check_canonical(&img[..cut.min(img.len())]);
        }
    }

    #[test]
    fn the_release_hook_persists_released_chunks_and_refuses_cleanup_past_unrecorded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.progress");
        let cell = Arc::new(KnownCell::default());
        lock(&cell).learn(progress("a", 3));
        DirReceiver::persist(&cell, &path, 3).unwrap();
        let on_disk = decode_progress(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk, vec![progress("a", 3)]);
        // Record 3 is consumed but not recorded yet: a receiver records it
        // while the hook waits, and the hook succeeds.
        let c = cell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            lock(&c).learn(progress("b", 4));
            c.learned.notify_all();
        });
        DirReceiver::persist(&cell, &path, 4).unwrap();
        t.join().unwrap();
        let on_disk = decode_progress(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk, vec![progress("a", 3), progress("b", 4)]);
        // Never recorded: cleanup is refused, the file stays as it was.
        let e = DirReceiver::persist(&cell, &path, 9)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not all recorded"), "{e}");
        assert_eq!(
            decode_progress(&std::fs::read(&path).unwrap())
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn temp_and_hidden_names_are_ignored() {
        for n in [".x", "_SUCCESS", "a.tmp", "b._COPYING_", "c_COPYING_d"] {
            assert!(ignored_name(n), "{n}");
        }
        for n in ["a.txt", "tmp", "x.tmp.txt"] {
            assert!(!ignored_name(n), "{n}");
        }
    }

    #[test]
    fn release_moves_only_released_chunks_and_prune_keeps_pinned_files() {
        let mut k = Known::default();
        k.learn(progress("a", 3));
        k.learn(progress("b", 5));
        k.release(4);
        assert_eq!(k.released.keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(k.dirty);
        k.prune(&HashSet::new());
        // "b" has an unreleased chunk: kept; "a" is gone from the directory.
        assert!(k.current.contains_key("b") && !k.current.contains_key("a"));
        assert!(k.released.is_empty());
    }
}
