//! The ingest stream's at-rest formats: pure encode/decode, no I/O.
//!
//! Owns the stored-record header `(tag, producer, seq)` that an ingest
//! stream puts in front of every WAL record (so the producer table can be
//! rebuilt from the log), and the bytes of the producer-table snapshot file
//! `DATA_DIR/wal/<name>.producers`. Layouts: `docs/ingest-protocol.md`.
//!
//! Limits: a stored producer id is at most [`PRODUCER_ID_WIRE_MAX`] (255)
//! bytes (one length byte); a snapshot entry is at least 10 bytes, and a
//! snapshot's entry count is checked against the caller's `entries_max`
//! and against what its bytes can hold before anything is allocated.
//! Must never: do I/O, panic on any input, or allocate in proportion to a
//! count it has not checked. Every damaged input is a typed
//! [`RecordError`] naming the byte offset; decoders borrow from the input.

use std::ops::Range;

use super::proto::PRODUCER_ID_WIRE_MAX;
// The WAL's little-endian readers (callers check bounds first).
use crate::wal::format::{le_u32, le_u64};

/// Tag of the stored-record header (its format version).
const STORED_TAG: u8 = 0x01;
/// Magic of the producer-table snapshot: `WPT1`.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"WPT1";
/// Bytes of a snapshot without entries: magic, covered LSN, count, CRC.
const SNAPSHOT_FIXED_BYTES: usize = 20;
/// The smallest snapshot entry: id length, a 1-byte id, next sequence.
const SNAPSHOT_ENTRY_BYTES_MIN: usize = 10;

/// A damaged stored record or snapshot. Offsets are from the start of the
/// record (or snapshot file); the caller adds the stream, file or LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A WAL record of an ingest stream whose header does not decode.
    #[error("stored ingest record is damaged at byte {offset}: {what}")]
    Stored {
        /// Byte of the record where decoding failed.
        offset: usize,
        /// What is wrong there (empty record, unknown tag, truncated, ...).
        what: &'static str,
    },
    /// The snapshot is shorter than its fixed part.
    #[error("producer table snapshot is damaged at byte {len}: only {len} bytes; at least {SNAPSHOT_FIXED_BYTES} needed")]
    SnapshotShort {
        /// The file's size, in bytes.
        len: usize,
    },
    /// The snapshot does not start with `SNAPSHOT_MAGIC` (`WPT1`).
    #[error("producer table snapshot is damaged at byte 0: wrong magic (expected `WPT1`)")]
    SnapshotMagic {
        /// The file's first 4 bytes.
        found: [u8; 4],
    },
    /// The snapshot's CRC (stored at `offset`) does not match its bytes.
    #[error("producer table snapshot is damaged at byte {offset}: checksum mismatch: expected {expected:#010x}, found {found:#010x}")]
    SnapshotCrc {
        /// Byte where the stored CRC starts (the file's last 4 bytes).
        offset: usize,
        /// The CRC stored in the file.
        expected: u32,
        /// The CRC computed over the bytes before it.
        found: u32,
    },
    /// More entries than the table may hold.
    #[error("producer table snapshot is damaged at byte 12: {count} entries, over producers_max ({max})")]
    SnapshotTooMany {
        /// The snapshot's entry count.
        count: usize,
        /// The most entries the reader accepts (the ingest server allows
        /// twice its `producers_max`).
        max: usize,
    },
    /// More entries than the snapshot's bytes can hold.
    #[error("producer table snapshot is damaged at byte 12: {count} entries cannot fit in {bytes} bytes")]
    SnapshotCount {
        /// The snapshot's entry count.
        count: usize,
        /// The file's bytes before the CRC.
        bytes: usize,
    },
    /// Entry `index` (at `offset`) has an empty id or runs past the end.
    #[error("producer table snapshot is damaged at byte {offset}: entry {index} is empty or runs past the end")]
    SnapshotEntry {
        /// Byte where the entry starts.
        offset: usize,
        /// The entry's position, from 0.
        index: usize,
    },
    /// Bytes left over after the last entry (which ends at `offset`).
    #[error(
        "producer table snapshot is damaged at byte {offset}: {extra} bytes after the last entry"
    )]
    SnapshotTrailing {
        /// Byte where the last entry ends.
        offset: usize,
        /// Bytes between it and the CRC.
        extra: usize,
    },
}

/// Bytes the stored-record header adds for a producer id of `id_len` bytes.
pub fn stored_header_bytes(id_len: usize) -> usize {
    2 + id_len + 8
}

/// Appends a stored ingest record: header (tag, producer, seq) + payload.
pub fn encode_stored(out: &mut Vec<u8>, producer: &[u8], seq: u64, payload: &[u8]) {
    let p = &producer[..producer.len().min(PRODUCER_ID_WIRE_MAX)];
    out.push(STORED_TAG);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A stored ingest record, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub producer: &'a [u8],
    pub seq: u64,
    pub payload: &'a [u8],
}

/// Decodes a stored ingest record (a WAL record of an ingest stream).
pub fn decode_stored(b: &[u8]) -> Result<Stored<'_>, RecordError> {
    let bad = |offset, what| RecordError::Stored { offset, what };
    match b.first() {
        None => return Err(bad(0, "empty record")),
        Some(&STORED_TAG) => {}
        Some(_) => {
            return Err(bad(
                0,
                "unknown header tag (not written by an ingest stream?)",
            ))
        }
    }
    let Some(&len) = b.get(1) else {
        return Err(bad(1, "truncated before the producer id length"));
    };
    // Length 0: an anonymous record (an HTTP request without a producer
    // id): no producer, not in the producer table.
    let len = usize::from(len);
    if b.len() < stored_header_bytes(len) {
        return Err(bad(b.len(), "truncated inside the header"));
    }
    Ok(Stored {
        producer: &b[2..2 + len],
        seq: le_u64(b, 2 + len),
        payload: &b[stored_header_bytes(len)..],
    })
}

/// Encodes a producer-table snapshot covering WAL records below
/// `covered_lsn`.
pub fn encode_snapshot<'a>(
    covered_lsn: u64,
    entries: impl ExactSizeIterator<Item = (&'a [u8], u64)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_FIXED_BYTES + entries.len() * 24);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&covered_lsn.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (id, next) in entries {
        let id = &id[..id.len().min(PRODUCER_ID_WIRE_MAX)];
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&next.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A decoded snapshot: covered LSN and entries as ranges into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub covered_lsn: u64,
    /// (producer id bytes range, next expected sequence).
    pub entries: Vec<(Range<usize>, u64)>,
}

/// Decodes a snapshot; refuses more than `entries_max` entries before
/// allocating for them.
pub fn decode_snapshot(b: &[u8], entries_max: usize) -> Result<Snapshot, RecordError> {
    if b.len() < SNAPSHOT_FIXED_BYTES {
        return Err(RecordError::SnapshotShort { len: b.len() });
    }
    if b[..4] != SNAPSHOT_MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(&b[..4]);
        return Err(RecordError::SnapshotMagic { found });
    }
    let body = b.len() - 4;
    let want = le_u32(b, body);
    let got = crc32fast::hash(&b[..body]);
    if want != got {
        return Err(RecordError::SnapshotCrc {
            offset: body,
            expected: want,
            found: got,
        });
    }
    let covered_lsn = le_u64(b, 4);
    let n = le_u32(b, 12) as usize;
    if n > entries_max {
        return Err(RecordError::SnapshotTooMany {
            count: n,
            max: entries_max,
        });
    }
    // A count the bytes cannot hold is refused before allocating.
    if n > (body - 16) / SNAPSHOT_ENTRY_BYTES_MIN {
        return Err(RecordError::SnapshotCount {
            count: n,
            bytes: body,
        });
    }
    let mut entries = Vec::with_capacity(n);
    let mut at = 16;
    for index in 0..n {
        let len = usize::from(b[at]);
        if len == 0 || at + 1 + len + 8 > body {
            return Err(RecordError::SnapshotEntry { offset: at, index });
        }
        let id = at + 1..at + 1 + len;
        let next = le_u64(b, at + 1 + len);
        entries.push((id, next));
        at += 1 + len + 8;
    }
    if at != body {
        return Err(RecordError::SnapshotTrailing {
            offset: at,
            extra: body - at,
        });
    }
    Ok(Snapshot {
        covered_lsn,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_and_snapshot_round_trip() {
        let mut b = Vec::new();
        encode_stored(&mut b, b"prod", 9, b"payload");
        assert_eq!(b.len(), stored_header_bytes(4) + 7);
        assert_eq!(
            decode_stored(&b),
            Ok(Stored {
                producer: b"prod",
                seq: 9,
                payload: b"payload"
            })
        );
        assert!(decode_stored(&b[..5]).is_err());
        let s = encode_snapshot(
            100,
            vec![(b"a".as_slice(), 3u64), (b"bb".as_slice(), 0)].into_iter(),
        );
        let d = decode_snapshot(&s, 10).unwrap();
        assert_eq!(d.covered_lsn, 100);
        assert_eq!(d.entries, vec![(17..18, 3), (27..29, 0)]);
        assert!(decode_snapshot(&s, 1).is_err());
        let mut bad = s.clone();
        bad[18] ^= 1;
        assert!(decode_snapshot(&bad, 10).is_err());
    }

    /// The structured errors keep the messages the single `Snapshot`
    /// variant used to print.
    #[test]
    fn snapshot_errors_name_the_offset_and_what_was_found() {
        let s = encode_snapshot(7, vec![(b"a".as_slice(), 3u64)].into_iter());
        let text = |b: &[u8], max| decode_snapshot(b, max).unwrap_err().to_string();
        assert_eq!(
            text(&s[..3], 10),
            "producer table snapshot is damaged at byte 3: only 3 bytes; at least 20 needed"
        );
        let mut bad = s.clone();
        bad[0] = b'X';
        assert_eq!(
            decode_snapshot(&bad, 10),
            Err(RecordError::SnapshotMagic { found: *b"XPT1" })
        );
        assert_eq!(
            text(&s, 0),
            "producer table snapshot is damaged at byte 12: 1 entries, over producers_max (0)"
        );
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_snapshot(&bad, 10),
            Err(RecordError::SnapshotCrc { offset, .. }) if offset == s.len() - 4
        ));
        assert_eq!(
            decode_stored(&[2]),
            Err(RecordError::Stored {
                offset: 0,
                what: "unknown header tag (not written by an ingest stream?)"
            })
        );
    }
}
