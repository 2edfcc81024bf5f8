//! The parts of an HTTP ingest request that weir reads itself (hyper
//! parses the HTTP): the route ([`route`]), the producer id and sequence
//! number headers ([`origin`]) and the body's records ([`split_records`]).
//! Protocol: `docs/http-ingest.md`.
//!
//! Pure and fuzzed (`fuzz/fuzz_targets/http_ingest_request.rs`).
//! Limits: a producer id is 1 to the caller's `id_bytes_max` (at most
//! 255) visible ASCII bytes; a sequence number is at most 20 decimal
//! digits and fits a `u64` with the request's records; a body yields at
//! most `records_max` records of at most `record_bytes_max` bytes each;
//! a path segment is at most [`SEGMENT_BYTES_MAX`] bytes.
//! Must never: panic or allocate beyond the record count it checked, on
//! any input.

use std::ops::Range;

/// The header naming the producer (case-insensitive, as all headers).
pub const PRODUCER_HEADER: &str = "weir-producer";
/// The header with the sequence number of the request's first record.
pub const SEQUENCE_HEADER: &str = "weir-sequence";
/// The response header with the producer's next expected sequence number.
pub const NEXT_SEQUENCE_HEADER: &str = "weir-next-sequence";
/// Longest path segment (a stream name or a producer id, encoded).
pub const SEGMENT_BYTES_MAX: usize = 1024;

/// What is wrong with a request, in the client's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `Weir-Sequence` is not a decimal number that fits 64 bits.
    #[error("the Weir-Sequence header must be a decimal number below 2^64 (the sequence number of the request's first record), not {found:?}")]
    BadSequence {
        /// The header's value (lossy UTF-8, cut to 40 bytes).
        found: String,
    },
    /// One of the two headers without the other.
    #[error("Weir-Producer and Weir-Sequence go together: send both (exactly once per producer) or neither (at least once)")]
    HalfOrigin,
    /// The producer id is empty, too long or not visible ASCII.
    #[error("the producer id must be 1 to {max} visible ASCII characters (no spaces or controls); it is {len} bytes")]
    BadProducer {
        /// Its length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// More records than `records_per_request_max`.
    #[error("the request holds more than {max} records (records_per_request_max); send fewer per request")]
    TooManyRecords {
        /// The limit.
        max: usize,
    },
    /// A record over `record_bytes_max`.
    #[error("line {line} is {bytes} bytes; a record is at most {max} bytes (record_bytes_max)")]
    RecordTooLong {
        /// Its line number, from 1.
        line: usize,
        /// Its length.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The request's last sequence number would pass 2^64 - 1.
    #[error("sequence {first} plus {count} records passes the largest sequence number (2^64 - 1)")]
    SequenceOverflow {
        /// The first sequence number.
        first: u64,
        /// Records in the request.
        count: usize,
    },
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v1/streams/<stream>`: records to store (POST).
    Stream(String),
    /// `/v1/streams/<stream>/producers/<id>`: a producer's next sequence
    /// number (GET).
    Producer(String, Vec<u8>),
    /// Anything else.
    Unknown,
}

/// The route of `path` (without the query); segments are
/// percent-decoded.
pub fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v1/streams/") else {
        return Route::Unknown;
    };
    let segs: Vec<&str> = rest.splitn(4, '/').collect();
    let decode = |s: &str| percent_decode(s).filter(|d| !d.is_empty());
    match segs.as_slice() {
        [s] => match decode(s).and_then(|b| String::from_utf8(b).ok()) {
            Some(stream) => Route::Stream(stream),
            None => Route::Unknown,
        },
        [s, "producers", id] => {
            match (
                decode(s).and_then(|b| String::from_utf8(b).ok()),
                decode(id),
            ) {
                (Some(stream), Some(id)) => Route::Producer(stream, id),
                _ => Route::Unknown,
            }
        }
        _ => Route::Unknown,
    }
}

/// `%XX` escapes decoded; None for a bad escape or a segment over
/// [`SEGMENT_BYTES_MAX`].
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() > SEGMENT_BYTES_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(v, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A producer id as the headers and the path carry it: 1 to `max`
/// visible ASCII bytes.
pub fn check_producer(id: &[u8], max: usize) -> Result<(), RequestError> {
    let max = max.min(super::proto::PRODUCER_ID_WIRE_MAX);
    if id.is_empty() || id.len() > max || !id.iter().all(|b| b.is_ascii_graphic()) {
        return Err(RequestError::BadProducer { len: id.len(), max });
    }
    Ok(())
}

/// The producer and first sequence number of a request (None: neither
/// header, an anonymous request).
pub fn origin<'a>(
    producer: Option<&'a [u8]>,
    sequence: Option<&[u8]>,
    id_bytes_max: usize,
) -> Result<Option<(&'a [u8], u64)>, RequestError> {
    let (id, seq) = match (producer, sequence) {
        (None, None) => return Ok(None),
        (Some(id), Some(seq)) => (id, seq),
        _ => return Err(RequestError::HalfOrigin),
    };
    check_producer(id, id_bytes_max)?;
    let bad = || RequestError::BadSequence {
        found: String::from_utf8_lossy(&seq[..seq.len().min(40)]).into_owned(),
    };
    if seq.is_empty() || seq.len() > 20 || !seq.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(seq).map_err(|_| bad())?;
    let first = text.parse::<u64>().map_err(|_| bad())?;
    Ok(Some((id, first)))
}

/// The records of a body: one per line (`\n`; a `\r` before it is not
/// part of the record), the last line needing no `\n`; an empty body has
/// none. Checked against `records_max` and `record_bytes_max` as it goes.
pub fn split_records(
    body: &[u8],
    records_max: usize,
    record_bytes_max: usize,
) -> Result<Vec<Range<usize>>, RequestError> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let next = end + 1;
        let end = if end > start && body[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        if out.len() == records_max {
            return Err(RequestError::TooManyRecords { max: records_max });
        }
        if end - start > record_bytes_max {
            return Err(RequestError::RecordTooLong {
                line: out.len() + 1,
                bytes: end - start,
                max: record_bytes_max,
            });
        }
        out.push(start..end);
        start = next;
    }
    Ok(out)
}

/// Checks that a request of `count` records from `first` stays within
/// the sequence space.
pub fn check_span(first: u64, count: usize) -> Result<(), RequestError> {
    match first.checked_add(count as u64) {
        Some(_) => Ok(()),
        None => Err(RequestError::SequenceOverflow { first, count }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1/streams/events"), Route::Stream("events".into()));
        assert_eq!(route("/v1/streams/a%20b"), Route::Stream("a b".into()));
        assert_eq!(
            route("/v1/streams/events/producers/sensor%2F7"),
            Route::Producer("events".into(), b"sensor/7".to_vec())
        );
        for bad in [
            "/",
            "/v1/streams/",
            "/v1/streams/a/b",
            "/v1/streams/%zz",
            "/v2/streams/a",
            "/v1/streams/a/producers/",
        ] {
            assert_eq!(route(bad), Route::Unknown, "{bad}");
        }
        let long = format!("/v1/streams/{}", "a".repeat(SEGMENT_BYTES_MAX + 1));
        assert_eq!(route(&long), Route::Unknown);
        let at_max = format!("/v1/streams/{}", "a".repeat(SEGMENT_BYTES_MAX));
        assert!(matches!(route(&at_max), Route::Stream(_)));
    }

    #[test]
    fn origins() {
        assert_eq!(origin(None, None, 64), Ok(None));
        assert_eq!(
            origin(Some(b"p1"), Some(b"42"), 64),
            Ok(Some((&b"p1"[..], 42)))
        );
        assert_eq!(origin(Some(b"p1"), None, 64), Err(RequestError::HalfOrigin));
        assert_eq!(origin(None, Some(b"1"), 64), Err(RequestError::HalfOrigin));
        assert!(matches!(
            origin(Some(b"p 1"), Some(b"1"), 64),
            Err(RequestError::BadProducer { .. })
        ));
        assert!(matches!(
            origin(Some(b""), Some(b"1"), 64),
            Err(RequestError::BadProducer { .. })
        ));
        assert!(origin(Some(&[b'x'; 64]), Some(b"1"), 64).is_ok());
        assert!(matches!(
            origin(Some(&[b'x'; 65]), Some(b"1"), 64),
            Err(RequestError::BadProducer { len: 65, max: 64 })
        ));
        for bad in [
            &b"-1"[..],
            b"+1",
            b"1.0",
            b"",
            b"18446744073709551616",
            b" 1",
        ] {
            assert!(
                matches!(
                    origin(Some(b"p"), Some(bad), 64),
                    Err(RequestError::BadSequence { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            origin(Some(b"p"), Some(b"18446744073709551615"), 64),
            Ok(Some((&b"p"[..], u64::MAX)))
        );
        assert!(check_span(u64::MAX, 1).is_err());
        assert!(check_span(u64::MAX - 1, 1).is_ok());
    }

    #[test]
    fn records_are_lines() {
        let lines = |b: &[u8]| -> Vec<Vec<u8>> {
            split_records(b, 10, 5)
                .expect("ok")
                .into_iter()
                .map(|r| b[r].to_vec())
                .collect()
        };
        assert!(lines(b"").is_empty());
        assert_eq!(
            lines(b"a\nbb\r\n\nc"),
            vec![b"a".to_vec(), b"bb".to_vec(), vec![], b"c".to_vec()]
        );
        assert_eq!(lines(b"a\n"), vec![b"a".to_vec()]);
        assert_eq!(lines(b"\r\n"), vec![Vec::<u8>::new()]);
        assert_eq!(lines(b"12345\n"), vec![b"12345".to_vec()]);
        assert_eq!(
            split_records(b"1\n123456\n", 10, 5),
            Err(RequestError::RecordTooLong {
                line: 2,
                bytes: 6,
                max: 5
            })
        );
        assert_eq!(split_records(b"1\n2\n3", 3, 5).map(|v| v.len()), Ok(3));
        assert_eq!(
            split_records(b"1\n2\n3\n4", 3, 5),
            Err(RequestError::TooManyRecords { max: 3 })
        );
    }
}
