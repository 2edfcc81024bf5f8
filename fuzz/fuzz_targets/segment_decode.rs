//! Arbitrary bytes into the segment decoder.
//!
//! Checks, for every input: the decoder never panics; `scan_segment` never
//! reports a record whose checksum (recomputed here independently with
//! crc32fast) does not match the stored one; its byte counts, index and end
//! state agree with each other and with a frame-by-frame re-walk; and
//! `decode_segment_header` / `decode_frame` called directly at offsets, LSNs
//! and limits taken from the input never panic nor accept a bad frame.
//! Header checks: a header the decoder accepts really has the magic, the
//! checksum and a first LSN of at most `LSN_MAX`; one that passes every
//! other check but carries a first LSN above `LSN_MAX` is refused with
//! `LsnTooLarge` (first LSNs up to `u64::MAX` are fed freely).
//!
//! Raw bytes almost never carry a valid header checksum, so the input is
//! also scanned a second time after a "fix-up" pass (steered by the first
//! input byte) that writes a valid header and recomputes frame checksums
//! (with the salt the header carries):
//! that lets the fuzzer reach the frame, seal, torn-tail and corruption
//! paths instead of stopping at the header check.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::wal::format::{
    decode_frame, decode_segment_header, find_valid_frame_after, scan_segment, Decoded,
    FormatError, Resync, ScanEnd, SegmentHeader, FORMAT_VERSION, FRAME_HEADER_BYTES, LSN_MAX,
    SEAL_MARKER, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};

const INDEX_INTERVAL: u64 = 4096;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The frame checksum, computed here without the crate's helper: CRC-32
/// (IEEE) over the segment's salt (LE), the length field (LE), the LSN (LE)
/// and the payload.
fn frame_crc(salt: u32, len_field: u32, lsn: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&len_field.to_le_bytes());
    h.update(&lsn.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Asserts that the frame at `buf[at..]` really is a valid record with
/// number `lsn` whose payload is `payload` and whose size is `frame_len`,
/// under the salt and record limit of `h`.
fn assert_record_valid(
    buf: &[u8],
    at: usize,
    lsn: u64,
    h: &SegmentHeader,
    payload: &std::ops::Range<usize>,
    frame_len: usize,
) {
    assert!(frame_len >= FRAME_HEADER_BYTES);
    assert!(
        at + frame_len <= buf.len(),
        "frame past the end of the buffer"
    );
    let len = u32_at(buf, at);
    assert_ne!(len, SEAL_MARKER, "a seal reported as a record");
    assert!(
        len <= h.record_bytes_max,
        "record longer than the limit accepted"
    );
    assert_eq!(len as usize + FRAME_HEADER_BYTES, frame_len);
    assert_eq!(*payload, at + FRAME_HEADER_BYTES..at + frame_len);
    assert_eq!(u64_at(buf, at + 8), lsn, "record number field differs");
    let stored = u32_at(buf, at + 4);
    let actual = frame_crc(h.salt, len, lsn, &buf[payload.clone()]);
    assert_eq!(
        stored, actual,
        "record {lsn} at {at} returned with a bad checksum"
    );
}

fn assert_seal_valid(buf: &[u8], at: usize, end_lsn: u64, salt: u32) {
    assert!(at + FRAME_HEADER_BYTES <= buf.len());
    assert_eq!(u32_at(buf, at), SEAL_MARKER);
    assert_eq!(u64_at(buf, at + 8), end_lsn);
    assert_eq!(
        u32_at(buf, at + 4),
        frame_crc(salt, SEAL_MARKER, end_lsn, &[])
    );
}

/// Checks `decode_segment_header`'s answer against the bytes, independently:
/// an accepted header has the magic, a matching checksum, the version, the
/// header length, a first LSN of at most `LSN_MAX` and a record limit below
/// the seal marker, and its fields are the bytes at their offsets; a header
/// that passes every check but the first-LSN one is refused as `LsnTooLarge`.
fn check_header(data: &[u8], header: &Result<SegmentHeader, FormatError>) {
    let well_formed = data.len() >= SEGMENT_HEADER_BYTES
        && data[0..8] == SEGMENT_MAGIC
        && crc32fast::hash(&data[0..28]) == u32_at(data, 28)
        && u16::from_le_bytes([data[8], data[9]]) == FORMAT_VERSION
        && usize::from(u16::from_le_bytes([data[10], data[11]])) == SEGMENT_HEADER_BYTES;
    match header {
        Ok(h) => {
            assert!(well_formed, "accepted a malformed header: {h:?}");
            assert_eq!(h.version, FORMAT_VERSION);
            assert_eq!(h.salt, u32_at(data, 12));
            assert_eq!(h.first_lsn, u64_at(data, 16));
            assert_eq!(h.record_bytes_max, u32_at(data, 24));
            assert!(h.first_lsn <= LSN_MAX, "accepted first LSN {}", h.first_lsn);
            assert!(h.record_bytes_max < SEAL_MARKER);
        }
        Err(e) => {
            if well_formed {
                // Only the first LSN or the record limit can be wrong.
                let first = u64_at(data, 16);
                let limit = u32_at(data, 24);
                let lsn_refused = *e == FormatError::LsnTooLarge { found: first };
                let limit_refused = *e == FormatError::BadRecordLimit { found: limit };
                assert!(
                    (first > LSN_MAX && lsn_refused) || (limit == SEAL_MARKER && limit_refused),
                    "well-formed header (first LSN {first}, limit {limit}) refused as {e:?}"
                );
            }
        }
    }
}

/// Scans `data` and checks everything the scan claims.
fn check_scan(data: &[u8]) {
    let header = decode_segment_header(data);
    check_header(data, &header);
    let scan = match scan_segment(data, INDEX_INTERVAL) {
        Ok(scan) => scan,
        Err(e) => {
            assert_eq!(header, Err(e), "scan and header decoder disagree");
            return;
        }
    };
    assert_eq!(Ok(scan.header), header);
    assert!(data.len() >= SEGMENT_HEADER_BYTES);
    assert_eq!(&data[0..8], &SEGMENT_MAGIC);
    assert_eq!(scan.header.version, FORMAT_VERSION);
    assert!(scan.header.record_bytes_max < SEAL_MARKER);
    assert!(scan.header.first_lsn <= LSN_MAX);
    assert!(scan.valid_bytes >= SEGMENT_HEADER_BYTES);
    assert!(scan.valid_bytes <= data.len(), "valid_bytes past the end");

    // Re-walk every record the scan reports and check it independently.
    let h = scan.header;
    let mut at = SEGMENT_HEADER_BYTES;
    let mut lsn = scan.header.first_lsn;
    let mut offsets = Vec::new();
    for _ in 0..scan.records {
        match decode_frame(data, at, lsn, &h) {
            Decoded::Record {
                lsn: got,
                payload,
                frame_len,
            } => {
                assert_eq!(got, lsn);
                assert_record_valid(data, at, lsn, &h, &payload, frame_len);
                offsets.push((lsn, at as u64));
                at += frame_len;
                // Cannot overflow: first_lsn <= LSN_MAX, checked above.
                lsn += 1;
            }
            other => panic!("scan counted a record at {at} that decodes as {other:?}"),
        }
    }
    assert_eq!(
        at, scan.valid_bytes,
        "valid_bytes is not the end of the last record"
    );

    // The index: strictly increasing, every entry a real record position,
    // the first record always indexed.
    for w in scan.index.windows(2) {
        assert!(
            w[0].0 < w[1].0,
            "index LSNs not increasing: {:?}",
            scan.index
        );
        assert!(
            w[0].1 < w[1].1,
            "index offsets not increasing: {:?}",
            scan.index
        );
        assert!(w[1].1 >= w[0].1 + INDEX_INTERVAL, "index entries too close");
    }
    for entry in &scan.index {
        assert!(
            offsets.contains(entry),
            "index entry {entry:?} is not a record"
        );
    }
    assert_eq!(
        scan.index.first(),
        offsets.first(),
        "first record not indexed"
    );

    match scan.end {
        ScanEnd::Clean => assert_eq!(scan.valid_bytes, data.len()),
        ScanEnd::Sealed { offset, end_lsn } => {
            assert_eq!(offset, scan.valid_bytes);
            assert_eq!(offset + FRAME_HEADER_BYTES, data.len());
            assert_eq!(end_lsn, lsn, "seal end differs from the counted end");
            assert_seal_valid(data, offset, end_lsn, h.salt);
        }
        ScanEnd::Torn { offset, .. } => {
            assert_eq!(offset, scan.valid_bytes);
            assert!(offset < data.len(), "torn tail of zero bytes");
        }
        ScanEnd::Corrupt {
            offset,
            valid_after,
            ..
        } => {
            assert_eq!(offset, scan.valid_bytes);
            assert!(offset < data.len());
            assert!(valid_after >= offset && valid_after < data.len());
            // The frame that proves corruption must itself be valid (or be
            // the whole frame with the wrong record number at `offset`).
            if valid_after > offset {
                let found = u64_at(data, valid_after + 8);
                match decode_frame(data, valid_after, found, &h) {
                    Decoded::Record {
                        payload, frame_len, ..
                    } => assert_record_valid(data, valid_after, found, &h, &payload, frame_len),
                    Decoded::Seal { end_lsn } => {
                        assert_seal_valid(data, valid_after, end_lsn, h.salt)
                    }
                    other => panic!("corruption proven by an invalid frame: {other:?}"),
                }
            }
        }
        ScanEnd::Damaged { offset, .. } => {
            assert_eq!(offset, scan.valid_bytes);
            assert!(offset < data.len(), "damage reported past the end");
        }
        ScanEnd::DataAfterSeal { offset } => {
            assert_eq!(offset, scan.valid_bytes + FRAME_HEADER_BYTES);
            assert!(offset < data.len());
            assert_seal_valid(data, scan.valid_bytes, lsn, h.salt);
        }
    }
}

/// Direct calls at offsets, record numbers, salts and limits derived from
/// `data`.
fn check_direct(data: &[u8]) {
    let _ = decode_segment_header(data);
    if data.len() < 21 {
        return;
    }
    let sel = data[0];
    let raw_at = u32_at(data, 1) as usize;
    let at = match sel & 3 {
        0 => raw_at % (data.len() + 1),
        1 => raw_at,
        2 => usize::MAX - (raw_at & 0xff),
        _ => data.len().saturating_sub(raw_at & 0x1f),
    };
    let lsn = u64_at(data, 5);
    let fits = at
        .checked_add(FRAME_HEADER_BYTES)
        .is_some_and(|end| end <= data.len());
    let lsn = if sel & 4 != 0 && fits {
        u64_at(data, at + 8) // the record number stored there
    } else {
        lsn
    };
    let rbm = match (sel >> 3) & 3 {
        0 => u32_at(data, 13),
        1 => u32::MAX,
        2 => u32::MAX - 1,
        _ => u32_at(data, 13) % 4096,
    };
    // A header as `decode_frame` sees it; it reads only the salt and the
    // record limit, so these need not be a header the decoder would accept.
    let h = SegmentHeader {
        version: FORMAT_VERSION,
        salt: u32_at(data, 17),
        first_lsn: lsn,
        record_bytes_max: rbm,
    };
    if let Some(tail) = data.get(at..) {
        let header = decode_segment_header(tail);
        check_header(tail, &header);
    }
    match decode_frame(data, at, lsn, &h) {
        Decoded::Record {
            lsn: got,
            payload,
            frame_len,
        } => {
            assert_eq!(got, lsn);
            assert_record_valid(data, at, lsn, &h, &payload, frame_len);
        }
        Decoded::Seal { end_lsn } => {
            assert_eq!(end_lsn, lsn);
            assert_seal_valid(data, at, end_lsn, h.salt);
        }
        Decoded::Incomplete { needed } => {
            assert!(needed >= FRAME_HEADER_BYTES);
            assert!(at > data.len() || data.len() - at < needed);
        }
        Decoded::Bad(_) => {}
    }
    // The resynchronisation search, from any damaged offset inside the
    // buffer: whatever it finds must be a valid record or seal under `h`
    // whose number could follow `lsn`.
    if at < data.len() {
        // A small budget so the give-up path runs too.
        let budget = match sel >> 5 {
            0 => u64::MAX,
            n => u64::from(n) * 64,
        };
        if let Resync::Found(found_at) = find_valid_frame_after(data, at, lsn, &h, budget) {
            assert!(found_at > at && found_at + FRAME_HEADER_BYTES <= data.len());
            let found = u64_at(data, found_at + 8);
            assert!(found >= lsn, "resynchronised on an earlier record number");
            match decode_frame(data, found_at, found, &h) {
                Decoded::Record {
                    payload, frame_len, ..
                } => assert_record_valid(data, found_at, found, &h, &payload, frame_len),
                Decoded::Seal { end_lsn } => assert_seal_valid(data, found_at, end_lsn, h.salt),
                other => panic!("resynchronised on an invalid frame: {other:?}"),
            }
        }
    }
}

/// Makes the header of `img` valid and recomputes frame checksums along the
/// chain of length fields, steered by `mode`:
/// - bit 0: clamp the record limit to 0..4096 (so lengths can be satisfied)
/// - bit 1: put the first LSN near a limit: within 128 of `LSN_MAX` (either
///   side) or, if bit 0 of the salt is set, within 255 of `u64::MAX`;
///   otherwise the input's first LSN is kept as it is (any `u64`; the
///   decoder must refuse those above `LSN_MAX`)
/// - bit 2: also rewrite each frame's LSN field to the expected number
/// - bit 3: leave frame number `mode >> 4` (bits 4..8) unfixed (damage
///   mid-log)
///
/// The salt is the input's bytes 12..16, kept as they are.
fn fix_up(img: &mut [u8], mode: u8) {
    if img.len() < SEGMENT_HEADER_BYTES {
        return;
    }
    img[0..8].copy_from_slice(&SEGMENT_MAGIC);
    img[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    img[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
    let mut rbm = u32_at(img, 24);
    if mode & 1 != 0 {
        rbm %= 4096;
    }
    if rbm == SEAL_MARKER {
        rbm -= 1;
    }
    img[24..28].copy_from_slice(&rbm.to_le_bytes());
    let salt = u32_at(img, 12);
    let first = if mode & 2 == 0 {
        u64_at(img, 16)
    } else if salt & 1 != 0 {
        u64::MAX - u64::from(img[16])
    } else {
        LSN_MAX - 128 + u64::from(img[16])
    };
    img[16..24].copy_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&img[0..28]);
    img[28..32].copy_from_slice(&crc.to_le_bytes());

    let skip = usize::from(mode >> 4);
    let mut lsn = u64_at(img, 16);
    let mut at = SEGMENT_HEADER_BYTES;
    let mut n = 0usize;
    while at + FRAME_HEADER_BYTES <= img.len() {
        let len = u32_at(img, at);
        let fix = n != skip || mode & 8 == 0;
        if mode & 4 != 0 && fix {
            img[at + 8..at + 16].copy_from_slice(&lsn.to_le_bytes());
        }
        let stored_lsn = u64_at(img, at + 8);
        if len == SEAL_MARKER {
            if fix {
                let crc = frame_crc(salt, SEAL_MARKER, stored_lsn, &[]);
                img[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            }
            break;
        }
        if len > rbm || at + FRAME_HEADER_BYTES + len as usize > img.len() {
            break;
        }
        let end = at + FRAME_HEADER_BYTES + len as usize;
        if fix {
            let crc = frame_crc(salt, len, stored_lsn, &img[at + FRAME_HEADER_BYTES..end]);
            img[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        }
        at = end;
        lsn = lsn.wrapping_add(1);
        n += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    check_scan(data);
    check_direct(data);
    if let Some((&mode, rest)) = data.split_first() {
        let mut img = rest.to_vec();
        fix_up(&mut img, mode);
        check_scan(&img);
    }
});
