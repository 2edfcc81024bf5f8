//! Splitting a byte stream into records (text lines by default), shared by
//! the socket and directory receivers, with one rule for every odd input:
//!
//! - A record ends at the delimiter: `\n` by default, where one trailing
//!   `\r` is removed (CRLF input); or any other byte string of 1 to
//!   [`DELIMITER_BYTES_MAX`] bytes (a socket source's `delimiter`, e.g. the
//!   Spark tutorial's `__end`), taken exactly: nothing is trimmed. A
//!   delimiter split across reads is found (the bytes before it are kept).
//! - A record longer than `line_bytes_max` bytes (without its delimiter) is
//!   dropped whole, never cut. It is reported ([`Line::TooLong`]) once, the
//!   moment its bytes pass the limit (a server that never sends the
//!   delimiter is seen at once, not when a delimiter finally arrives); its
//!   remaining bytes are skipped up to the next delimiter, reported no
//!   more, so memory never grows.
//! - Bytes that are not valid UTF-8 are replaced by U+FFFD (as Java's
//!   decoder does in Spark's socket stream); the line is kept and counted.
//! - At end of input, an unterminated last line counts as a line (as
//!   `readLine` does); after a broken connection it is discarded instead.
//!
//! Limits: a partial record holds at most `line_bytes_max + delimiter
//! bytes` (`+ 1` for the default's `\r`), plus a tail of at most
//! `DELIMITER_BYTES_MAX - 1` bytes while an over-long one is skipped.
//! Must never: hold more than that, or report one over-long record twice.

use std::borrow::Cow;

use memchr::memmem::Finder;

/// Longest record delimiter, in bytes.
pub const DELIMITER_BYTES_MAX: usize = 64;

/// What the splitter saw: a complete line, or an over-long one (reported
/// when it passes the limit, before its end).
pub(crate) enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// Incremental record splitter; see the module docs.
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    line_bytes_max: usize,
    delimiter: Vec<u8>,
    /// The default `\n`: one trailing `\r` is removed.
    crlf: bool,
    finder: Finder<'static>,
    /// Skipping the rest of an over-long record (already reported).
    dropping: bool,
    /// While dropping: the last `delimiter.len() - 1` bytes seen, to find
    /// a delimiter that began in an earlier read.
    tail: Vec<u8>,
}

fn strip_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// Appends `more` to `tail`, keeping only its last `keep` bytes.
fn keep_tail(tail: &mut Vec<u8>, keep: usize, more: &[u8]) {
    tail.extend_from_slice(&more[more.len().saturating_sub(keep)..]);
    let extra = tail.len().saturating_sub(keep);
    tail.drain(..extra);
}

impl LineSplitter {
    /// Newline-terminated lines (CRLF accepted).
    pub(crate) fn new(line_bytes_max: usize) -> Self {
        Self::with_delimiter(line_bytes_max, b"\n")
    }

    /// Records ending at `delimiter` (1..=[`DELIMITER_BYTES_MAX`] bytes,
    /// checked by the caller's config); `b"\n"` is [`LineSplitter::new`].
    pub(crate) fn with_delimiter(line_bytes_max: usize, delimiter: &[u8]) -> Self {
        LineSplitter {
            partial: Vec::new(),
            line_bytes_max,
            delimiter: delimiter.to_vec(),
            crlf: delimiter == b"\n",
            finder: Finder::new(delimiter).into_owned(),
            dropping: false,
            tail: Vec::new(),
        }
    }

    /// Whether bytes of an unfinished record are waiting for a delimiter
    /// (kept, or being skipped as too long).
    pub(crate) fn holds_partial(&self) -> bool {
        !self.partial.is_empty() || self.dropping
    }

    /// Bytes past `line_bytes_max` a partial record may hold before it is
    /// known to be too long: a delimiter's beginning, or the default's `\r`.
    fn slack(&self) -> usize {
        if self.crlf {
            1
        } else {
            self.delimiter.len() - 1
        }
    }

    /// Whether the partial record is already longer than the limit
    /// (whatever follows).
    fn over_limit(&self) -> bool {
        let p = &self.partial;
        let extra = if self.crlf {
            usize::from(p.ends_with(b"\r"))
        } else {
            (1..self.delimiter.len())
                .rev()
                .find(|&k| p.ends_with(&self.delimiter[..k]))
                .unwrap_or(0)
        };
        p.len() - extra > self.line_bytes_max
    }

    fn find(&self, h: &[u8]) -> Option<usize> {
        match self.delimiter[..] {
            [b] => memchr::memchr(b, h),
            _ => self.finder.find(h),
        }
    }

    /// A delimiter that began in an earlier read and ends in `data`: how
    /// many of its bytes came before `data`.
    fn straddle(&self, data: &[u8]) -> Option<usize> {
        let d = &self.delimiter[..];
        let prev = if self.dropping {
            &self.tail
        } else {
            &self.partial
        };
        (1..d.len().min(prev.len() + 1))
            .rev()
            .find(|&k| prev.ends_with(&d[..k]) && data.starts_with(&d[k..]))
    }

    /// Feeds `data`, calling `on_line` for every record completed and
    /// every over-long one; stops early (after the record) when `on_line`
    /// returns false for a record's text. Returns how many bytes of `data`
    /// were consumed.
    pub(crate) fn feed(&mut self, data: &[u8], mut on_line: impl FnMut(Line<'_>) -> bool) -> usize {
        let dlen = self.delimiter.len();
        let mut i = 0;
        if dlen > 1 {
            if let Some(k) = self.straddle(data) {
                i = dlen - k;
                let go_on = if self.dropping {
                    self.end_dropping()
                } else {
                    let end = self.partial.len() - k;
                    let go_on = emit(&self.partial[..end], self, &mut on_line);
                    self.partial.clear();
                    go_on
                };
                if !go_on {
                    return i;
                }
            }
        }
        while i < data.len() {
            let rest = &data[i..];
            let Some(p) = self.find(rest) else {
                self.absorb(rest, &mut on_line);
                return data.len();
            };
            i += p + dlen;
            if !self.complete(&rest[..p], &mut on_line) {
                return i;
            }
        }
        i
    }

    /// The delimiter ended an over-long record: back to normal.
    fn end_dropping(&mut self) -> bool {
        self.dropping = false;
        self.tail.clear();
        true
    }

    /// A delimiter ends the current record, whose bytes in this read are
    /// `last`; false when `on_line` asked to stop.
    fn complete(&mut self, last: &[u8], on_line: &mut impl FnMut(Line<'_>) -> bool) -> bool {
        if self.dropping {
            return self.end_dropping();
        }
        if self.partial.is_empty() {
            return emit(last, self, on_line);
        }
        let go_on = if self.partial.len() + last.len() > self.line_bytes_max + self.slack() {
            on_line(Line::TooLong);
            true
        } else {
            self.partial.extend_from_slice(last);
            emit(&self.partial, self, on_line)
        };
        self.partial.clear();
        go_on
    }

    /// Bytes with no delimiter: kept, or (past the limit) reported once
    /// and skipped.
    fn absorb(&mut self, rest: &[u8], on_line: &mut impl FnMut(Line<'_>) -> bool) {
        let keep = self.delimiter.len() - 1;
        if self.dropping {
            keep_tail(&mut self.tail, keep, rest);
            return;
        }
        self.tail.clear();
        if self.partial.len() + rest.len() <= self.line_bytes_max + self.slack() {
            self.partial.extend_from_slice(rest);
            if !self.over_limit() {
                return;
            }
            keep_tail(&mut self.tail, keep, &self.partial);
        } else {
            keep_tail(&mut self.tail, keep, &self.partial);
            keep_tail(&mut self.tail, keep, rest);
        }
        self.dropping = true;
        self.partial = Vec::new();
        on_line(Line::TooLong);
    }

    /// End of input: an unterminated last record is a record (an
    /// over-long one was reported already).
    pub(crate) fn finish(&mut self, mut on_line: impl FnMut(Line<'_>) -> bool) {
        if !self.dropping && !self.partial.is_empty() {
            let p = std::mem::take(&mut self.partial);
            emit(&p, self, &mut on_line);
        }
        self.reset();
    }

    /// Drops a partial record (a broken connection); whether there was one
    /// not yet reported (an over-long one was, as too long).
    pub(crate) fn reset(&mut self) -> bool {
        let had = !self.dropping && !self.partial.is_empty();
        self.dropping = false;
        self.partial.clear();
        self.tail.clear();
        had
    }
}

/// Reports one complete record's bytes (delimiter removed).
fn emit(line: &[u8], s: &LineSplitter, on_line: &mut impl FnMut(Line<'_>) -> bool) -> bool {
    let line = if s.crlf { strip_cr(line) } else { line };
    if line.len() > s.line_bytes_max {
        on_line(Line::TooLong);
        true
    } else {
        on_line(Line::Text(line))
    }
}

/// How large a line of `line_bytes_max` bytes can become as text: each
/// invalid byte turns into U+FFFD, 3 bytes in UTF-8. Chunk and store
/// limits are checked against this, not the raw length, so bad bytes from
/// a peer cannot make a record the WAL refuses (which would stop the
/// stream).
pub(crate) fn repaired_bytes_max(line_bytes_max: usize) -> usize {
    line_bytes_max.saturating_mul(3)
}

/// The line as text: valid UTF-8 as is, otherwise with U+FFFD replacing
/// each invalid sequence (`Cow::Owned` tells the caller it was repaired).
pub(crate) fn to_text(line: &[u8]) -> Cow<'_, str> {
    // `from_utf8` checks ASCII a word at a time; the lossy decoder walks
    // chunk by chunk, so it only runs for the rare line that needs repair.
    match std::str::from_utf8(line) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(line),
    }
}

/// Whether the `n`-th (1-based) occurrence of a problem is logged: the first
/// ten, then every thousandth, so a flood of bad input cannot flood the log.
pub(crate) fn log_nth(n: u64) -> bool {
    n <= 10 || n.is_multiple_of(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]], finish: bool) -> Vec<Option<String>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut push = |l: Line<'_>| {
            out.push(match l {
                Line::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => None,
            });
            true
        };
        for c in chunks {
            assert_eq!(s.feed(c, &mut push), c.len());
        }
        if finish {
            s.finish(&mut push);
        }
        out
    }

    #[test]
    fn lines_split_across_chunks_with_crlf_and_the_limit() {
        let got = split(4, &[b"ab\r\ncd", b"e\nabcd\nabcde\n", b"x"], true);
        assert_eq!(
            got,
            vec![
                Some("ab".into()),
                Some("cde".into()),
                Some("abcd".into()),
                None,
                Some("x".into())
            ]
        );
        // Exactly at the limit with a CR, and a long line over many chunks.
        let got = split(4, &[b"abcd\r\n", b"123", b"456", b"789\n", b"ok\n"], false);
        assert_eq!(got, vec![Some("abcd".into()), None, Some("ok".into())]);
        // Unterminated: kept at finish, not without it.
        assert_eq!(split(4, &[b"a\nbb"], false), vec![Some("a".into())]);
        assert_eq!(split(4, &[b"toolong"], true), vec![None]);
    }

    #[test]
    fn partial_memory_is_bounded_by_the_limit() {
        let mut s = LineSplitter::new(8);
        let mut n = 0;
        for _ in 0..1000 {
            s.feed(&[b'x'; 100], |l| {
                assert!(matches!(l, Line::TooLong));
                n += 1;
                true
            });
            assert!(s.partial.capacity() <= 9 || s.partial.is_empty());
        }
        // Reported once, in the first read; the newline only ends it.
        assert_eq!(n, 1);
        s.feed(b"\nok\n", |l| {
            assert!(matches!(l, Line::Text(b"ok")));
            n += 1;
            true
        });
        assert_eq!(n, 2);
    }

    #[test]
    fn feed_stops_after_the_line_that_asked() {
        let mut s = LineSplitter::new(10);
        let mut seen = Vec::new();
        let used = s.feed(b"a\nb\nc\n", |l| {
            if let Line::Text(t) = l {
                seen.push(t.to_vec());
            }
            seen.len() < 2
        });
        assert_eq!(used, 4);
        assert_eq!(seen, vec![b"a".to_vec(), b"b".to_vec()]);
    }

    /// Splits `input` the slow way: every record at once.
    fn reference(max: usize, delim: &[u8], input: &[u8]) -> Vec<Option<String>> {
        let finder = Finder::new(delim);
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let (rec, next) = match finder.find(rest) {
                Some(p) => (&rest[..p], Some(&rest[p + delim.len()..])),
                None => (rest, None),
            };
            if next.is_none() && rec.is_empty() {
                break;
            }
            let rec = if delim == b"\n" { strip_cr(rec) } else { rec };
            out.push((rec.len() <= max).then(|| String::from_utf8_lossy(rec).into_owned()));
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
        out
    }

    fn split_with(max: usize, delim: &[u8], chunks: &[&[u8]]) -> Vec<Option<String>> {
        let mut s = LineSplitter::with_delimiter(max, delim);
        let mut out = Vec::new();
        let mut push = |l: Line<'_>| {
            out.push(match l {
                Line::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => None,
            });
            true
        };
        for c in chunks {
            assert_eq!(s.feed(c, &mut push), c.len());
            assert!(s.partial.len() <= max + delim.len().max(2) && s.tail.len() < delim.len());
        }
        s.finish(&mut push);
        out
    }

    #[test]
    fn a_delimiter_split_across_reads_one_byte_at_a_time() {
        let input = b"hello world __endsecond one __end__endx__en";
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let got = split_with(64, b"__end", &bytes);
        assert_eq!(
            got,
            vec![
                Some("hello world ".into()),
                Some("second one ".into()),
                Some("".into()),
                Some("x__en".into()),
            ]
        );
        assert_eq!(got, reference(64, b"__end", input));
        // Bytes exact: no \r is removed with a delimiter of one's own.
        assert_eq!(
            split_with(8, b";", &[b"a\r;b\n;"]),
            vec![Some("a\r".into()), Some("b\n".into())]
        );
    }

    #[test]
    fn an_over_long_record_is_reported_once_the_moment_it_passes_the_limit() {
        for delim in [&b"\n"[..], b"__end"] {
            let mut s = LineSplitter::with_delimiter(4, delim);
            let too_long = std::cell::Cell::new(0);
            let count = |l: Line<'_>| {
                if let Line::TooLong = l {
                    too_long.set(too_long.get() + 1);
                }
                true
            };
            s.feed(b"abcd", count);
            s.feed(&delim[..delim.len() - 1], count);
            assert_eq!(too_long.get(), 0, "a delimiter may still come");
            s.feed(b"x", count);
            assert_eq!(too_long.get(), 1, "reported before any delimiter");
            for _ in 0..100 {
                s.feed(b"more bytes without the delimiter", count);
            }
            s.finish(count);
            assert_eq!(too_long.get(), 1, "once per record, not per read");
        }
    }

    #[test]
    fn any_chunking_splits_as_the_whole_input_does() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let pieces: [&[u8]; 9] = [
            b"a", b"_", b"__end", b"__e", b"n", b"d", b"\r", b"\n", b"xyz",
        ];
        for round in 0..2000 {
            let delim: &[u8] = [&b"\n"[..], b"__end", b"aa", b";"][round % 4];
            let max = 1 + next(12) as usize;
            let mut input = Vec::new();
            for _ in 0..next(40) {
                input.extend_from_slice(pieces[next(pieces.len() as u64) as usize]);
            }
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let n = (1 + next(6) as usize).min(input.len() - at);
                chunks.push(&input[at..at + n]);
                at += n;
            }
            assert_eq!(
                split_with(max, delim, &chunks),
                reference(max, delim, &input),
                "max {max}, delimiter {:?}, input {:?}",
                String::from_utf8_lossy(delim),
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(to_text(b"ok"), "ok");
        assert_eq!(to_text(b"a\xffb"), "a\u{fffd}b");
        assert!(matches!(to_text(b"a\xffb"), Cow::Owned(_)));
    }
}
