//! Encode/decode round trip of a whole segment, then truncation.
//!
//! From the input: a first LSN, a record limit, a list of payloads, whether
//! to seal, and a cut point. The segment is encoded with the crate's
//! encoders and scanned back: every payload must come back identical under
//! the right record number, and the scan must end `Clean` (or `Sealed` with
//! the right end). Then the image is cut at the chosen point, as a crash
//! during the write would leave it: the scan must report exactly the
//! records wholly before the cut and end `Clean` (cut on a frame boundary)
//! or `Torn`, never `Corrupt`. A truncated log is always a torn tail.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir::wal::format::{
    decode_frame, encode_frame, encode_seal, encode_segment_header, frame_bytes, scan_segment,
    Decoded, FormatError, ScanEnd, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

#[derive(Arbitrary, Debug)]
struct Input {
    first_lsn: u64,
    /// Added to the longest payload to get the segment's record limit.
    slack: u16,
    payloads: Vec<Vec<u8>>,
    seal: bool,
    /// Index spacing for the scan, 0..=65535 bytes.
    index_interval: u16,
    /// Where to cut the image (taken modulo its length + 1).
    cut: u32,
}

fuzz_target!(|input: Input| {
    let payloads = &input.payloads;
    let n = payloads.len() as u64;
    // Keep the record numbers (and the seal's end) representable.
    let first = input.first_lsn.min(u64::MAX - n);
    let longest = payloads.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let record_bytes_max = longest + u32::from(input.slack);
    let interval = u64::from(input.index_interval);

    let mut img = encode_segment_header(first, record_bytes_max).to_vec();
    // Frame boundaries: boundaries[i] is where frame i starts.
    let mut boundaries = vec![img.len()];
    for (i, p) in payloads.iter().enumerate() {
        encode_frame(&mut img, first + i as u64, p);
        boundaries.push(img.len());
        assert_eq!(img.len() - boundaries[i], frame_bytes(p.len()));
    }
    let frames_end = img.len();
    if input.seal {
        encode_seal(&mut img, first + n);
    }

    // Whole image: everything comes back.
    let scan = scan_segment(&img, interval).expect("a freshly encoded header decodes");
    assert_eq!(scan.header.first_lsn, first);
    assert_eq!(scan.header.record_bytes_max, record_bytes_max);
    assert_eq!(scan.records, n);
    assert_eq!(scan.valid_bytes, frames_end);
    let want_end = if input.seal {
        ScanEnd::Sealed {
            offset: frames_end,
            end_lsn: first + n,
        }
    } else {
        ScanEnd::Clean
    };
    assert_eq!(scan.end, want_end);
    check_records(&img, first, record_bytes_max, &payloads[..], &boundaries);
    if n > 0 {
        assert_eq!(
            scan.index.first(),
            Some(&(first, SEGMENT_HEADER_BYTES as u64))
        );
    }
    for entry in &scan.index {
        let i = (entry.0 - first) as usize;
        assert_eq!(
            entry.1, boundaries[i] as u64,
            "index entry off a frame start"
        );
    }

    // Truncated image: a prefix of the records, then a torn (or clean) end.
    let cut = input.cut as usize % (img.len() + 1);
    let part = &img[..cut];
    if cut < SEGMENT_HEADER_BYTES {
        assert!(matches!(
            scan_segment(part, interval),
            Err(FormatError::Short { .. })
        ));
        return;
    }
    let scan = scan_segment(part, interval).expect("the header survived the cut");
    // Records wholly before the cut.
    let whole = boundaries[1..].iter().take_while(|&&b| b <= cut).count();
    assert_eq!(
        scan.records, whole as u64,
        "cut at {cut}: wrong record count"
    );
    assert_eq!(scan.valid_bytes, boundaries[whole]);
    check_records(
        part,
        first,
        record_bytes_max,
        &payloads[..whole],
        &boundaries,
    );
    match &scan.end {
        ScanEnd::Clean => assert_eq!(cut, boundaries[whole], "clean end off a boundary"),
        ScanEnd::Torn { offset, .. } => {
            assert_eq!(*offset, boundaries[whole]);
            assert!(cut > *offset);
        }
        ScanEnd::Sealed { offset, end_lsn } => {
            assert!(input.seal && cut == img.len());
            assert_eq!((*offset, *end_lsn), (frames_end, first + n));
        }
        other => panic!(
            "cut at {cut} of {}: a truncated log scanned as {other:?}",
            img.len()
        ),
    }
});

/// Decodes frame by frame and compares with the payloads that were encoded.
fn check_records(
    img: &[u8],
    first: u64,
    record_bytes_max: u32,
    payloads: &[Vec<u8>],
    boundaries: &[usize],
) {
    let mut at = SEGMENT_HEADER_BYTES;
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(at, boundaries[i]);
        let lsn = first + i as u64;
        match decode_frame(img, at, lsn, record_bytes_max) {
            Decoded::Record {
                lsn: got,
                payload,
                frame_len,
            } => {
                assert_eq!(got, lsn);
                assert_eq!(&img[payload], &p[..], "record {lsn} came back different");
                assert_eq!(frame_len, FRAME_HEADER_BYTES + p.len());
                at += frame_len;
            }
            other => panic!("record {lsn} at {at} decodes as {other:?}"),
        }
    }
}
