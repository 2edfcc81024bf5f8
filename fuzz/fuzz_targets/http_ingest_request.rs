//! HTTP ingest's own parsing (`weir::ingest::http_request`): the route,
//! the producer and sequence headers and the body's records never panic
//! on any bytes, and the records equal a plain model of "lines": the
//! body split at `\n`, a `\r` before it dropped, no record after a final
//! `\n`; or the error names the first limit the model passes.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir::ingest::http_request::{check_producer, origin, route, split_records, RequestError, Route, SEGMENT_BYTES_MAX};

#[derive(Arbitrary, Debug)]
struct Input {
    path: String,
    producer: Option<Vec<u8>>,
    sequence: Option<Vec<u8>>,
    id_max: u8,
    body: Vec<u8>,
    records_max: u8,
    record_bytes_max: u8,
}

/// The model: lines of `body`.
fn model(body: &[u8]) -> Vec<&[u8]> {
    if body.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if body.ends_with(b"\n") {
        v.pop();
    }
    v.into_iter().map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect()
}

fuzz_target!(|i: Input| {
    match route(&i.path) {
        Route::Stream(s) => assert!(!s.is_empty() && s.len() <= SEGMENT_BYTES_MAX),
        Route::Producer(s, id) => assert!(!s.is_empty() && !id.is_empty() && id.len() <= SEGMENT_BYTES_MAX),
        Route::Unknown => {}
    }
    let id_max = usize::from(i.id_max);
    if let Ok(Some((id, seq))) = origin(i.producer.as_deref(), i.sequence.as_deref(), id_max) {
        assert!(check_producer(id, id_max).is_ok());
        let text = std::str::from_utf8(i.sequence.as_deref().expect("a sequence")).expect("digits");
        assert_eq!(text.parse::<u64>().ok(), Some(seq));
    }
    let (rmax, bmax) = (usize::from(i.records_max), usize::from(i.record_bytes_max));
    let want = model(&i.body);
    match split_records(&i.body, rmax, bmax) {
        Ok(ranges) => {
            let got: Vec<&[u8]> = ranges.iter().map(|r| &i.body[r.clone()]).collect();
            assert_eq!(got, want);
            assert!(got.len() <= rmax && got.iter().all(|r| r.len() <= bmax));
        }
        Err(RequestError::TooManyRecords { max }) => {
            assert_eq!(max, rmax);
            assert!(want.len() > rmax && want[..rmax].iter().all(|r| r.len() <= bmax));
        }
        Err(RequestError::RecordTooLong { line, bytes, max }) => {
            assert_eq!(max, bmax);
            assert_eq!(want[line - 1].len(), bytes);
            assert!(bytes > bmax && line <= rmax && want[..line - 1].iter().all(|r| r.len() <= bmax));
        }
        Err(e) => panic!("split_records returned {e:?}"),
    }
});
