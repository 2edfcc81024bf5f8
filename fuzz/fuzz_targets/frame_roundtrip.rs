//! Encode/decode round trip of a whole segment, then truncation.
//!
//! From the input: a salt, a first LSN (at most `LSN_MAX`), a record limit,
//! a list of payloads, whether to seal, and a cut point. The segment is encoded with the crate's
//! encoders and scanned back: every payload must come back identical under
//! the right record number, and the scan must end `Clean` (or `Sealed` with
//! the right end). Then the image is cut at the chosen point, as a crash
//! during the write would leave it: the scan must report exactly the
//! records wholly before the cut and end `Clean` (cut on a frame boundary)
//! or `Torn`, never `Corrupt`. A truncated log is always a torn tail.
//!
//! Then the salt's purpose: a second segment whose payloads embed
//! byte-perfect frames (and a seal) encoded with a *different* salt, numbered
//! as the record being torn and the ones after it, is cut inside a record:
//! the scan must still report the records before it and a `Torn` (or
//! `Clean`) end, never `Corrupt`.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir::wal::format::{
    decode_frame, encode_frame, encode_seal, encode_segment_header, find_valid_frame_after,
    frame_bytes, scan_segment, Decoded, FormatError, Resync, ScanEnd, SegmentHeader,
    FORMAT_VERSION, FRAME_HEADER_BYTES, LSN_MAX, RESYNC_CHECKSUM_BYTES_MAX, SEGMENT_HEADER_BYTES,
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// The segment's salt.
    salt: u32,
    /// The salt of the look-alike frames embedded in payloads (made to
    /// differ from `salt`).
    other_salt: u32,
    /// Where the look-alikes go inside each payload, and whether a
    /// look-alike seal follows them.
    embed: u16,
    /// Which record the look-alike segment is cut inside, and where.
    tear: u32,
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
    // The header refuses first LSNs above LSN_MAX.
    let first = input.first_lsn.min(LSN_MAX);
    let salt = input.salt;
    let longest = payloads.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let record_bytes_max = longest + u32::from(input.slack);
    let interval = u64::from(input.index_interval);

    let mut img = encode_segment_header(first, record_bytes_max, salt).to_vec();
    // Frame boundaries: boundaries[i] is where frame i starts.
    let mut boundaries = vec![img.len()];
    for (i, p) in payloads.iter().enumerate() {
        encode_frame(&mut img, salt, first + i as u64, p);
        boundaries.push(img.len());
        assert_eq!(img.len() - boundaries[i], frame_bytes(p.len()));
    }
    let frames_end = img.len();
    if input.seal {
        encode_seal(&mut img, salt, first + n);
    }

    // Whole image: everything comes back.
    let scan = scan_segment(&img, interval).expect("a freshly encoded header decodes");
    assert_eq!(scan.header.first_lsn, first);
    assert_eq!(scan.header.salt, salt);
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
    check_records(&img, &scan.header, &payloads[..], &boundaries);
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
    check_records(part, &scan.header, &payloads[..whole], &boundaries);
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
        // The fuzzer sees the salt and can learn 4-byte comparisons, so it
        // may plant a frame valid under the segment's *own* salt inside a
        // payload. Truncating that record then honestly reads as
        // corruption: that is the documented limit of the salt (it only
        // works while producers cannot know it), not a decoder bug.
        ScanEnd::Corrupt { valid_after, .. }
            if find_valid_frame_after(
                part,
                boundaries[whole],
                first + whole as u64,
                &scan.header,
                RESYNC_CHECKSUM_BYTES_MAX,
            ) == Resync::Found(*valid_after) => {}
        other => panic!(
            "cut at {cut} of {}: a truncated log scanned as {other:?}",
            img.len()
        ),
    }

    check_foreign_lookalikes(&input, first);
});

/// `p` with frames encoded under `other` embedded at an input-chosen point:
/// a record numbered `lsn` (carrying `p` itself), one numbered `lsn + 1`,
/// and optionally a seal ending at `lsn + 2`. Returns the payload and the
/// offsets (inside it) of the embedded frames.
fn with_lookalikes(p: &[u8], other: u32, lsn: u64, embed: u16) -> (Vec<u8>, Vec<usize>) {
    let split = usize::from(embed >> 1) % (p.len() + 1);
    let mut out = p[..split].to_vec();
    let mut at = Vec::new();
    at.push(out.len());
    encode_frame(&mut out, other, lsn, p);
    at.push(out.len());
    encode_frame(&mut out, other, lsn + 1, &p[split..]);
    if embed & 1 != 0 {
        at.push(out.len());
        encode_seal(&mut out, other, lsn + 2);
    }
    out.extend_from_slice(&p[split..]);
    (out, at)
}

/// Encodes a segment under `input.salt` whose record `i` embeds byte-perfect
/// frames under another salt numbered `first + i` and on, cuts it inside
/// one record, and checks the scan calls that a torn tail.
fn check_foreign_lookalikes(input: &Input, first: u64) {
    if input.payloads.is_empty() {
        return;
    }
    let salt = input.salt;
    let other = if input.other_salt == salt {
        !salt
    } else {
        input.other_salt
    };
    let n = input.payloads.len();
    let mut outer = Vec::with_capacity(n);
    let mut embedded = Vec::with_capacity(n);
    for (i, p) in input.payloads.iter().enumerate() {
        let (q, at) = with_lookalikes(p, other, first + i as u64, input.embed);
        outer.push(q);
        embedded.push(at);
    }
    let longest = outer.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let record_bytes_max = longest + u32::from(input.slack);
    let mut img = encode_segment_header(first, record_bytes_max, salt).to_vec();
    let mut boundaries = vec![img.len()];
    for (i, q) in outer.iter().enumerate() {
        encode_frame(&mut img, salt, first + i as u64, q);
        boundaries.push(img.len());
    }
    if input.seal {
        encode_seal(&mut img, salt, first + n as u64);
    }

    // The look-alikes are real frames under their own salt (so the property
    // below is not vacuous), and the whole image still scans back intact.
    let foreign = SegmentHeader {
        version: FORMAT_VERSION,
        salt: other,
        first_lsn: first,
        record_bytes_max,
    };
    for (i, offsets) in embedded.iter().enumerate() {
        let base = boundaries[i] + FRAME_HEADER_BYTES;
        for (k, &off) in offsets.iter().enumerate() {
            let lsn = first + (i + k) as u64;
            match decode_frame(&img, base + off, lsn, &foreign) {
                Decoded::Record { .. } if k < 2 => {}
                Decoded::Seal { end_lsn } if k == 2 && end_lsn == lsn => {}
                other => panic!("look-alike {k} in record {i} decodes as {other:?}"),
            }
        }
    }
    let scan = scan_segment(&img, u64::from(input.index_interval))
        .expect("a freshly encoded header decodes");
    assert_eq!(scan.records, n as u64);
    check_records(&img, &scan.header, &outer, &boundaries);

    // Cut strictly inside record `j` (frame header included).
    let j = input.tear as usize % n;
    let frame_len = boundaries[j + 1] - boundaries[j];
    let cut = boundaries[j] + 1 + (input.tear as usize / n) % (frame_len - 1);
    let part = &img[..cut];
    let scan =
        scan_segment(part, u64::from(input.index_interval)).expect("the header survived the cut");
    match &scan.end {
        ScanEnd::Torn { offset, .. } => assert_eq!(*offset, boundaries[j]),
        ScanEnd::Clean => assert_eq!(cut, boundaries[j], "clean end off a boundary"),
        other => panic!(
            "cut at {cut} inside record {} (frame {}..{}): foreign-salt look-alikes made a \
             torn tail scan as {other:?}",
            first + j as u64,
            boundaries[j],
            boundaries[j + 1]
        ),
    }
    assert_eq!(scan.records, j as u64, "cut at {cut}: wrong record count");
    assert_eq!(scan.valid_bytes, boundaries[j]);
    check_records(part, &scan.header, &outer[..j], &boundaries);
}

/// Decodes frame by frame and compares with the payloads that were encoded.
fn check_records(img: &[u8], h: &SegmentHeader, payloads: &[Vec<u8>], boundaries: &[usize]) {
    let mut at = SEGMENT_HEADER_BYTES;
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(at, boundaries[i]);
        let lsn = h.first_lsn + i as u64;
        match decode_frame(img, at, lsn, h) {
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
