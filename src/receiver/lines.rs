//! Splitting a byte stream into newline-terminated text lines, shared by the
//! socket and directory receivers, with one rule for every odd input:
//!
//! - A line ends at `\n`; one trailing `\r` is removed (CRLF input).
//! - A line longer than `line_bytes_max` bytes (without its `\n`/`\r\n`) is
//!   dropped whole, never cut; the caller counts and logs it. Bytes of an
//!   over-long line are skipped as they arrive, so memory never grows past
//!   `line_bytes_max + 1` bytes for the partial line.
//! - Bytes that are not valid UTF-8 are replaced by U+FFFD (as Java's
//!   decoder does in Spark's socket stream); the line is kept and counted.
//! - At end of input, an unterminated last line counts as a line (as
//!   `readLine` does); after a broken connection it is discarded instead.
//!
//! Must never: hold more than `line_bytes_max + 1` bytes of a partial line.

use std::borrow::Cow;

/// What the splitter saw: a complete line, or a dropped over-long one.
pub(crate) enum Line<'a> {
    Text(&'a [u8]),
    TooLong,
}

/// Incremental line splitter; see the module docs.
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
    line_bytes_max: usize,
    dropping: bool,
}

fn strip_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

impl LineSplitter {
    pub(crate) fn new(line_bytes_max: usize) -> Self {
        LineSplitter {
            partial: Vec::new(),
            line_bytes_max,
            dropping: false,
        }
    }

    /// Feeds `data`, calling `on_line` for every line completed; stops
    /// early (after the line) when `on_line` returns false. Returns how many
    /// bytes of `data` were consumed.
    pub(crate) fn feed(&mut self, data: &[u8], mut on_line: impl FnMut(Line<'_>) -> bool) -> usize {
        let max = self.line_bytes_max;
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            let Some(p) = memchr::memchr(b'\n', rest) else {
                if !self.dropping {
                    if self.partial.len() + rest.len() > max + 1 {
                        self.dropping = true;
                        self.partial = Vec::new();
                    } else {
                        self.partial.extend_from_slice(rest);
                    }
                }
                return data.len();
            };
            i += p + 1;
            let go_on = if self.dropping {
                self.dropping = false;
                on_line(Line::TooLong)
            } else if self.partial.is_empty() {
                let line = strip_cr(&rest[..p]);
                if line.len() > max {
                    on_line(Line::TooLong)
                } else {
                    on_line(Line::Text(line))
                }
            } else {
                let go_on = if self.partial.len() + p > max + 1 {
                    on_line(Line::TooLong)
                } else {
                    self.partial.extend_from_slice(&rest[..p]);
                    let line = strip_cr(&self.partial);
                    if line.len() > max {
                        on_line(Line::TooLong)
                    } else {
                        on_line(Line::Text(line))
                    }
                };
                self.partial.clear();
                go_on
            };
            if !go_on {
                return i;
            }
        }
        i
    }

    /// End of input: an unterminated last line is a line.
    pub(crate) fn finish(&mut self, mut on_line: impl FnMut(Line<'_>) -> bool) {
        if self.dropping {
            on_line(Line::TooLong);
        } else if !self.partial.is_empty() {
            let line = strip_cr(&self.partial);
            if line.len() > self.line_bytes_max {
                on_line(Line::TooLong);
            } else {
                on_line(Line::Text(line));
            }
        }
        self.reset();
    }

    /// Drops a partial line (a broken connection); whether there was one.
    pub(crate) fn reset(&mut self) -> bool {
        let had = self.dropping || !self.partial.is_empty();
        self.dropping = false;
        self.partial.clear();
        had
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
    n <= 10 || n % 1000 == 0
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
        for _ in 0..1000 {
            s.feed(&[b'x'; 100], |_| true);
            assert!(s.partial.capacity() <= 9 || s.partial.is_empty());
        }
        let mut n = 0;
        s.feed(b"\n", |l| {
            assert!(matches!(l, Line::TooLong));
            n += 1;
            true
        });
        assert_eq!(n, 1);
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

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(to_text(b"ok"), "ok");
        assert_eq!(to_text(b"a\xffb"), "a\u{fffd}b");
        assert!(matches!(to_text(b"a\xffb"), Cow::Owned(_)));
    }
}
