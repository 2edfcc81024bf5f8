//! Reading one file into chunks: from where the log says it got, whole
//! lines at a time, each chunk one WAL append (header + lines), learned by
//! [`super::known::Known`] as soon as it is durable.
//!
//! Limits: a chunk holds at most `lines_per_chunk_max` lines and
//! `chunk_bytes_max` line bytes; the reader buffers [`READ_BYTES`]; the
//! size at open bounds what is read.
//! Must never: store a partial line, start a file anywhere but at the byte
//! after its last logged chunk (or at 0 for a new identity), or stop the
//! context for a file it cannot read (that is logged and retried).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Take};

use super::known::lock;
use super::records::{encode_chunk, FileIdentity, FileProgress};
use super::scan::Candidate;
use super::{bump, DirReceiver};
use crate::receiver::lines::{log_nth, repaired_bytes_max, to_text, Line, LineSplitter};
use crate::receiver::{ReceiverContext, ReceiverError};

/// Bytes of a file buffered per read.
const READ_BYTES: usize = 64 << 10;

/// Lines of the chunk being built.
struct ChunkBuf {
    text: String,
    ends: Vec<usize>,
}

/// A file being read: where it stands and what is pending.
struct Reading<'a> {
    c: &'a Candidate,
    r: BufReader<Take<File>>,
    identity: FileIdentity,
    /// Lines of the file before the next one read.
    line_no: u64,
    /// Byte offset of the next byte read.
    offset: u64,
    splitter: LineSplitter,
    chunk: ChunkBuf,
}

impl DirReceiver {
    /// Reads one file from where the log says it got, chunk by chunk.
    /// Returns Err only for errors that must stop the context.
    pub(super) fn read_file(
        &self,
        ctx: &ReceiverContext,
        c: &Candidate,
    ) -> Result<(), ReceiverError> {
        let Some(mut f) = self.open_at(ctx, c) else {
            return Ok(());
        };
        loop {
            let first_line = f.line_no;
            let Some(complete) = self.fill_chunk(ctx, &mut f) else {
                return Ok(());
            };
            if complete {
                f.offset = f.identity.size;
            }
            let p = FileProgress {
                name: c.name.clone(),
                identity: f.identity,
                first_line,
                lines: f.line_no,
                offset: f.offset,
                complete,
                lsn: 0,
            };
            self.store_chunk(ctx, p, &mut f.chunk)?;
            if complete {
                bump(&self.stats.files_done, 1);
                tracing::debug!(stream = ctx.stream_name(), file = %c.path.display(), lines = f.line_no, "file logged");
                return Ok(());
            }
        }
    }

    /// Opens `c` and positions it after its last logged chunk; `None` when
    /// it is done or cannot be read now (logged, retried at the next scan).
    fn open_at<'a>(&self, ctx: &ReceiverContext, c: &'a Candidate) -> Option<Reading<'a>> {
        let mut file = File::open(&c.path)
            .map_err(|e| self.read_failed(ctx, c, "open", &e))
            .ok()?;
        let identity = file
            .metadata()
            .map(|m| FileIdentity::of(&m))
            .map_err(|e| self.read_failed(ctx, c, "stat", &e))
            .ok()?;
        let known = lock(&self.known).current.get(&c.name).cloned();
        let (line_no, offset) = match known {
            Some(p) if p.identity == identity => {
                if p.complete {
                    return None;
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
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| self.read_failed(ctx, c, "seek in", &e))
            .ok()?;
        Some(Reading {
            c,
            r: BufReader::with_capacity(READ_BYTES, file.take(identity.size - offset)),
            identity,
            line_no,
            offset,
            splitter: LineSplitter::new(self.config.line_bytes_max),
            chunk: ChunkBuf {
                text: String::with_capacity(self.config.chunk_bytes_max),
                ends: Vec::new(),
            },
        })
    }

    /// Reads lines into the chunk until it is full or the file ends;
    /// whether the chunk ends the file, `None` after a read error (logged).
    fn fill_chunk(&self, ctx: &ReceiverContext, f: &mut Reading<'_>) -> Option<bool> {
        loop {
            let buf = match f.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.read_failed(ctx, f.c, "read", &e);
                    return None;
                }
            };
            let (c, chunk, line_no) = (f.c, &mut f.chunk, &mut f.line_no);
            if buf.is_empty() {
                f.splitter
                    .finish(|l| self.on_line(ctx, c, chunk, line_no, l));
                return Some(true);
            }
            let used = f
                .splitter
                .feed(buf, |l| self.on_line(ctx, c, chunk, line_no, l));
            let full = used < buf.len() || !self.has_room(chunk);
            f.r.consume(used);
            f.offset += used as u64;
            if full {
                // A chunk ends at a line boundary: peek for the end of
                // the file so the last chunk says it is the last.
                return Some(matches!(f.r.fill_buf(), Ok(b) if b.is_empty()));
            }
        }
    }

    /// Stores the chunk as one WAL append, records what it says, and
    /// empties it.
    fn store_chunk(
        &self,
        ctx: &ReceiverContext,
        p: FileProgress,
        chunk: &mut ChunkBuf,
    ) -> Result<(), ReceiverError> {
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
        Ok(())
    }

    /// Counts and (throttled) logs a file that cannot be read now.
    fn read_failed(&self, ctx: &ReceiverContext, c: &Candidate, action: &str, e: &std::io::Error) {
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
    }

    fn has_room(&self, c: &ChunkBuf) -> bool {
        c.ends.len() < self.config.lines_per_chunk_max
            && c.text.len() + repaired_bytes_max(self.config.line_bytes_max)
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
                        "dropped a line longer than line_bytes_max: split the line where it is written (pipeline files use the 64 KiB default; Rust programs may raise DirConfig::line_bytes_max)"
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
}
