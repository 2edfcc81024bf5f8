//! The directory stream's byte formats: the chunk record (one WAL record:
//! header + lines) and the progress file (`DATA_DIR/receivers/
//! <stream>.progress`). Pure: no I/O. Bytes: `docs/receivers.md`.
//!
//! Limits: a file name is 1 to [`NAME_BYTES_MAX`] bytes; a decoder refuses
//! a line count its bytes cannot hold before allocating for it.
//! Must never: panic on any input, accept trailing bytes, or decode to a
//! value that re-encodes differently (the formats are canonical; fuzzed by
//! `fuzz/fuzz_targets/dir_records.rs` through [`check_canonical`]).

use std::os::unix::fs::MetadataExt;

use crate::dstream::BoxError;

/// Longest accepted file name, in bytes.
pub const NAME_BYTES_MAX: usize = 4096;
const CHUNK_MAGIC: &[u8; 4] = b"WDC1";
const PROGRESS_MAGIC: &[u8; 4] = b"WDP1";
/// Fixed part of a chunk header besides the name.
pub(super) const CHUNK_FIXED_BYTES: usize = 4 + 2 + 8 * 6 + 1 + 4;

/// Which version of a file: changes when it is replaced or modified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: u64,
}

impl FileIdentity {
    pub(super) fn of(m: &std::fs::Metadata) -> Self {
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
pub(super) fn chunk_header(bytes: &[u8]) -> Result<(FileProgress, u32, usize), DirFormatError> {
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

#[cfg(any(test, feature = "testing"))]
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
pub(crate) fn decode_lines(bytes: &[u8]) -> Result<Vec<String>, BoxError> {
    Ok(decode_chunk(bytes)?.1)
}
