//! The WAL's bytes on disk: segment header, record frame, seal trailer.
//! Pure functions over byte slices; no I/O. `docs/wal-format.md` is the
//! byte-by-byte reference and must change with this file.
//!
//! Limits: a frame's payload is at most `u32::MAX - 1` bytes by format (the
//! configured `record_bytes_max` is far lower); `u32::MAX` in the length
//! field marks the seal trailer.
//!
//! Must never: trust a length before bounds-checking it, or return a payload
//! whose checksum did not match (the fuzz target `segment_decode` checks it).
//!
//! Assertions (see `wal/mod.rs`): every encoder decodes what it just wrote
//! in debug builds (checksum recomputed), and `scan_segment` asserts how its
//! result fits the image before any caller cuts or reads by it; the fuzz
//! targets build with debug assertions, so they check these too.

use std::ops::Range;

/// Record number: dense and monotonic across all segments of one log.
pub type Lsn = u64;

/// `WEIRWAL` then a NUL: the first 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"WEIRWAL\0";
/// The segment format this build writes and reads (see the version log in
/// `docs/wal-format.md`).
pub const FORMAT_VERSION: u16 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes in a frame header (and in the seal trailer, which has its shape).
pub const FRAME_HEADER_BYTES: usize = 16;
/// Length-field value that marks the seal trailer of a finished segment.
pub const SEAL_MARKER: u32 = u32::MAX;
/// The highest first LSN a header may carry: record numbers stay far from
/// `u64::MAX`, so no arithmetic on them can overflow.
pub const LSN_MAX: Lsn = 1 << 62;
/// The longest all-zero tail that can be a torn write: one 512-byte
/// sector (a filesystem that extended the file before the data landed).
/// A longer zero run at the end of a segment is damage.
pub const TORN_ZERO_BYTES_MAX: usize = 512;
/// The most payload bytes one scan may checksum while looking for a valid
/// frame after damage ([`find_valid_frame_after`]). Without a bound, a
/// crafted segment full of frame-shaped headers with large lengths makes
/// the search quadratic; past the bound the scan reports the damage as
/// undecidable ([`ScanEnd::Damaged`] with [`FormatError::ResyncLimit`]),
/// which is corruption, never a torn tail. 16 MiB: sixteen records of the
/// default `record_bytes_max`; a real frame after real damage costs one.
pub const RESYNC_CHECKSUM_BYTES_MAX: u64 = 16 << 20;

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    /// Random per segment and mixed into every frame checksum, so that a
    /// record whose payload embeds bytes shaped like a frame can never pass
    /// as one (which would turn a torn tail into "corruption").
    pub salt: u32,
    pub first_lsn: Lsn,
    /// The payload limit the segment was written with; every frame in it
    /// must respect it, so a corrupted length is caught before it is used.
    pub record_bytes_max: u32,
}

/// Why a header or frame failed its checks. Offsets are added by callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    Short {
        needed: usize,
        found: usize,
    },
    BadMagic {
        found: [u8; 8],
    },
    UnsupportedVersion {
        found: u16,
        supported: u16,
    },
    BadHeaderLength {
        found: u16,
    },
    HeaderChecksum {
        expected: u32,
        actual: u32,
    },
    FrameChecksum {
        lsn: Lsn,
        expected: u32,
        actual: u32,
    },
    SealChecksum {
        expected: u32,
        actual: u32,
    },
    LsnMismatch {
        expected: Lsn,
        found: Lsn,
    },
    LengthTooLarge {
        len: u32,
        max: u32,
    },
    BadRecordLimit {
        found: u32,
    },
    LsnTooLarge {
        found: Lsn,
    },
    /// The segment ends in more zero bytes than a torn sector leaves.
    ZeroTail {
        bytes: usize,
    },
    /// Bytes here fail a check, and the search for a valid frame after
    /// them stopped at [`RESYNC_CHECKSUM_BYTES_MAX`].
    ResyncLimit {
        checksummed_bytes: u64,
    },
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Short { needed, found } => {
                write!(f, "needed {needed} bytes, found {found}")
            }
            FormatError::BadMagic { found } => {
                write!(f, "expected magic {SEGMENT_MAGIC:02x?}, found {found:02x?}")
            }
            FormatError::UnsupportedVersion { found, supported } => write!(
                f,
                "segment format version {found} is not supported (this build reads version {supported})"
            ),
            FormatError::BadHeaderLength { found } => write!(
                f,
                "expected header length {SEGMENT_HEADER_BYTES}, found {found}"
            ),
            FormatError::HeaderChecksum { expected, actual } => write!(
                f,
                "header checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            FormatError::FrameChecksum {
                lsn,
                expected,
                actual,
            } => write!(
                f,
                "record {lsn}: checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            FormatError::SealChecksum { expected, actual } => write!(
                f,
                "seal trailer checksum mismatch: stored {expected:#010x}, computed {actual:#010x}"
            ),
            FormatError::LsnMismatch { expected, found } => {
                write!(f, "expected record number {expected}, found {found}")
            }
            FormatError::LengthTooLarge { len, max } => {
                write!(f, "record length {len} exceeds the limit of {max} bytes")
            }
            FormatError::LsnTooLarge { found } => {
                write!(f, "first record number {found} exceeds the limit {LSN_MAX}")
            }
            FormatError::BadRecordLimit { found } => {
                write!(f, "header record limit {found} is not below the seal marker")
            }
            FormatError::ZeroTail { bytes } => write!(
                f,
                "the segment ends in {bytes} zero bytes, more than the {TORN_ZERO_BYTES_MAX} \
                 bytes (one sector) a torn write can leave: damage, not a torn write"
            ),
            FormatError::ResyncLimit { checksummed_bytes } => write!(
                f,
                "damage; cannot tell whether valid frames follow (the search for one \
                 checksummed {checksummed_bytes} bytes, the limit is {RESYNC_CHECKSUM_BYTES_MAX})"
            ),
        }
    }
}

pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// A fresh random salt for a new segment (std's per-process random keys,
/// so no extra dependency).
pub fn new_salt() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish() as u32
}

/// Encodes a segment header.
pub fn encode_segment_header(
    first_lsn: Lsn,
    record_bytes_max: u32,
    salt: u32,
) -> [u8; SEGMENT_HEADER_BYTES] {
    assert!(
        first_lsn <= LSN_MAX,
        "first LSN {first_lsn} exceeds LSN_MAX"
    );
    assert!(
        record_bytes_max < SEAL_MARKER,
        "record limit collides with the seal marker"
    );
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&(SEGMENT_HEADER_BYTES as u16).to_le_bytes());
    h[12..16].copy_from_slice(&salt.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    h[24..28].copy_from_slice(&record_bytes_max.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(
        decode_segment_header(&h),
        Ok(SegmentHeader {
            version: FORMAT_VERSION,
            salt,
            first_lsn,
            record_bytes_max,
        }),
        "an encoded segment header must decode to what was encoded"
    );
    h
}

/// Decodes and checks a segment header from the first bytes of a segment.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, FormatError> {
    if b.len() < SEGMENT_HEADER_BYTES {
        return Err(FormatError::Short {
            needed: SEGMENT_HEADER_BYTES,
            found: b.len(),
        });
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&b[0..8]);
    if magic != SEGMENT_MAGIC {
        return Err(FormatError::BadMagic { found: magic });
    }
    let expected = le_u32(b, 28);
    let actual = crc32fast::hash(&b[0..28]);
    if expected != actual {
        return Err(FormatError::HeaderChecksum { expected, actual });
    }
    let version = le_u16(b, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let header_len = le_u16(b, 10);
    if header_len as usize != SEGMENT_HEADER_BYTES {
        return Err(FormatError::BadHeaderLength { found: header_len });
    }
    let first_lsn = le_u64(b, 16);
    if first_lsn > LSN_MAX {
        return Err(FormatError::LsnTooLarge { found: first_lsn });
    }
    let record_bytes_max = le_u32(b, 24);
    if record_bytes_max == SEAL_MARKER {
        return Err(FormatError::BadRecordLimit {
            found: record_bytes_max,
        });
    }
    Ok(SegmentHeader {
        version,
        salt: le_u32(b, 12),
        first_lsn,
        record_bytes_max,
    })
}

/// The checksum of a frame: CRC-32 (IEEE) over the length field, the LSN
/// field and the payload, so a frame moved to another position, a zeroed
/// header or a header/payload mismatch all fail.
///
/// The checksum is of the bytes salt ‖ length ‖ LSN ‖ payload. A payload of
/// at most [`CRC_ONE_CALL_PAYLOAD_MAX`] bytes is copied behind its 16-byte
/// prefix on the stack and checksummed in one call: a tweet-sized record
/// then costs one carry-less-multiply fold instead of four calls, three of
/// them on 4- and 8-byte pieces through the table fallback (the WAL writer
/// spent most of its time there). Same bytes, same CRC: the format does not
/// change.
#[inline]
pub fn frame_crc(salt: u32, len_field: u32, lsn: Lsn, payload: &[u8]) -> u32 {
    const PREFIX: usize = 16;
    let mut buf = [0u8; PREFIX + CRC_ONE_CALL_PAYLOAD_MAX];
    buf[0..4].copy_from_slice(&salt.to_le_bytes());
    buf[4..8].copy_from_slice(&len_field.to_le_bytes());
    buf[8..16].copy_from_slice(&lsn.to_le_bytes());
    let mut h = crc_hasher();
    if payload.len() <= CRC_ONE_CALL_PAYLOAD_MAX {
        buf[PREFIX..PREFIX + payload.len()].copy_from_slice(payload);
        h.update(&buf[..PREFIX + payload.len()]);
        return h.finalize();
    }
    h.update(&buf[..PREFIX]);
    h.update(payload);
    h.finalize()
}

/// A fresh CRC-32 hasher: a copy of one made once per process, so the CPU
/// feature detection `crc32fast::Hasher::new` does runs once, not per frame.
#[inline]
fn crc_hasher() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone()
}

/// The longest payload [`frame_crc`] checksums in one call over a stack
/// copy (longer ones: two calls, prefix then payload in place).
pub const CRC_ONE_CALL_PAYLOAD_MAX: usize = 240;

/// Bytes a frame with `payload_bytes` of payload takes on disk.
pub fn frame_bytes(payload_bytes: usize) -> usize {
    FRAME_HEADER_BYTES + payload_bytes
}

/// Appends one encoded frame to `out`. The caller has checked the payload
/// length against its configured limit; `payload.len()` must be below
/// [`SEAL_MARKER`].
pub fn encode_frame(out: &mut Vec<u8>, salt: u32, lsn: Lsn, payload: &[u8]) {
    assert!(
        payload.len() < SEAL_MARKER as usize,
        "payload length {} collides with the seal marker",
        payload.len()
    );
    let start = out.len();
    let len = payload.len() as u32;
    let crc = frame_crc(salt, len, lsn, payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    debug_assert_eq!(
        decode_frame(out, start, lsn, &accept_any_length(salt)),
        Decoded::Record {
            lsn,
            payload: start + FRAME_HEADER_BYTES..out.len(),
            frame_len: frame_bytes(payload.len()),
        },
        "an encoded frame must decode (checksum recomputed) to what was encoded"
    );
}

/// Appends the seal trailer that closes a finished segment. `end_lsn` is one
/// past the segment's last record.
pub fn encode_seal(out: &mut Vec<u8>, salt: u32, end_lsn: Lsn) {
    let start = out.len();
    let crc = frame_crc(salt, SEAL_MARKER, end_lsn, &[]);
    out.extend_from_slice(&SEAL_MARKER.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&end_lsn.to_le_bytes());
    debug_assert_eq!(
        decode_frame(out, start, end_lsn, &accept_any_length(salt)),
        Decoded::Seal { end_lsn },
        "an encoded seal must decode (checksum recomputed) to what was encoded"
    );
}

/// A header under which every frame of a segment salted `salt` decodes:
/// the encoders check what they wrote against it.
fn accept_any_length(salt: u32) -> SegmentHeader {
    SegmentHeader {
        version: FORMAT_VERSION,
        salt,
        first_lsn: 0,
        record_bytes_max: SEAL_MARKER - 1,
    }
}

/// One step of decoding at some offset of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A valid record: its payload is `buf[payload]`; the next frame starts
    /// `frame_len` bytes after this one.
    Record {
        lsn: Lsn,
        payload: Range<usize>,
        frame_len: usize,
    },
    /// A valid seal trailer: the segment ends here with `end_lsn`.
    Seal { end_lsn: Lsn },
    /// The buffer ends inside a frame: `needed` bytes from the frame start
    /// would be required to decode it.
    Incomplete { needed: usize },
    /// The bytes here are not the expected frame.
    Bad(FormatError),
}

/// Decodes the frame that starts at `buf[at..]`, expecting record number
/// `expected_lsn` and payloads of at most `record_bytes_max`.
pub fn decode_frame(buf: &[u8], at: usize, expected_lsn: Lsn, h: &SegmentHeader) -> Decoded {
    let record_bytes_max = h.record_bytes_max;
    let rest = buf.len().saturating_sub(at);
    if rest < FRAME_HEADER_BYTES {
        return Decoded::Incomplete {
            needed: FRAME_HEADER_BYTES,
        };
    }
    let len = le_u32(buf, at);
    let stored_crc = le_u32(buf, at + 4);
    let lsn = le_u64(buf, at + 8);
    if len == SEAL_MARKER {
        let actual = frame_crc(h.salt, SEAL_MARKER, lsn, &[]);
        if actual != stored_crc {
            return Decoded::Bad(FormatError::SealChecksum {
                expected: stored_crc,
                actual,
            });
        }
        if lsn != expected_lsn {
            return Decoded::Bad(FormatError::LsnMismatch {
                expected: expected_lsn,
                found: lsn,
            });
        }
        return Decoded::Seal { end_lsn: lsn };
    }
    if len > record_bytes_max {
        return Decoded::Bad(FormatError::LengthTooLarge {
            len,
            max: record_bytes_max,
        });
    }
    let frame_len = FRAME_HEADER_BYTES + len as usize;
    if rest < frame_len {
        return Decoded::Incomplete { needed: frame_len };
    }
    let payload = at + FRAME_HEADER_BYTES..at + frame_len;
    let actual = frame_crc(h.salt, len, lsn, &buf[payload.clone()]);
    if actual != stored_crc {
        return Decoded::Bad(FormatError::FrameChecksum {
            lsn: expected_lsn,
            expected: stored_crc,
            actual,
        });
    }
    if lsn != expected_lsn {
        return Decoded::Bad(FormatError::LsnMismatch {
            expected: expected_lsn,
            found: lsn,
        });
    }
    Decoded::Record {
        lsn,
        payload,
        frame_len,
    }
}

/// What the search for a valid frame after damage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// A valid frame or seal at this offset: the damage is corruption.
    Found(usize),
    /// No valid frame: the damage may be a torn tail.
    NotFound,
    /// The search stopped after checksumming this many payload bytes
    /// ([`RESYNC_CHECKSUM_BYTES_MAX`]): it cannot tell.
    GaveUp { checksummed_bytes: u64 },
}

/// After a bad frame at `bad_at` (which should have been `expected_lsn`),
/// looks for any later valid frame or seal whose record number could follow
/// it. Finding one means the damage is not a torn tail but corruption in
/// the middle of the log.
///
/// Candidates must carry a record number in `expected_lsn..=expected_lsn +
/// (bytes left / 16)` (each record takes at least 16 bytes), a plausible
/// length and a matching checksum; random bytes pass with probability about
/// 2^-32 per offset after the LSN filter. Work is bounded: every offset
/// costs O(1) plus, for a candidate, the payload it checksums, and those
/// payload bytes together stop at `checksum_bytes_max`.
pub fn find_valid_frame_after(
    buf: &[u8],
    bad_at: usize,
    expected_lsn: Lsn,
    h: &SegmentHeader,
    checksum_bytes_max: u64,
) -> Resync {
    let lsn_max = expected_lsn.saturating_add(((buf.len() - bad_at) / FRAME_HEADER_BYTES) as u64);
    let mut checksummed: u64 = 0;
    let mut at = bad_at + 1;
    while at + FRAME_HEADER_BYTES <= buf.len() {
        let lsn = le_u64(buf, at + 8);
        if lsn >= expected_lsn && lsn <= lsn_max {
            let len = le_u32(buf, at);
            let whole = at + FRAME_HEADER_BYTES + len as usize <= buf.len();
            if len != SEAL_MARKER && len <= h.record_bytes_max && whole {
                checksummed += u64::from(len);
                if checksummed > checksum_bytes_max {
                    return Resync::GaveUp {
                        checksummed_bytes: checksummed - u64::from(len),
                    };
                }
            }
            match decode_frame(buf, at, lsn, h) {
                Decoded::Record { .. } | Decoded::Seal { .. } => return Resync::Found(at),
                Decoded::Incomplete { .. } | Decoded::Bad(_) => {}
            }
        }
        at += 1;
    }
    Resync::NotFound
}

/// How a bad or partial frame at `at` ends a scan: corruption if a valid
/// frame follows, damage if the tail is too long a zero run or the search
/// gave up, else a torn tail.
fn end_after_bad(
    buf: &[u8],
    at: usize,
    lsn: Lsn,
    header: &SegmentHeader,
    error: FormatError,
    torn: TornReason,
) -> ScanEnd {
    let search = find_valid_frame_after(buf, at, lsn, header, RESYNC_CHECKSUM_BYTES_MAX);
    match search {
        Resync::Found(valid_after) => ScanEnd::Corrupt {
            offset: at,
            error,
            valid_after,
        },
        Resync::GaveUp { checksummed_bytes } => ScanEnd::Damaged {
            offset: at,
            error: FormatError::ResyncLimit { checksummed_bytes },
        },
        Resync::NotFound => {
            let tail = &buf[at..];
            if tail.len() > TORN_ZERO_BYTES_MAX && tail.iter().all(|&b| b == 0) {
                ScanEnd::Damaged {
                    offset: at,
                    error: FormatError::ZeroTail { bytes: tail.len() },
                }
            } else {
                ScanEnd::Torn {
                    offset: at,
                    reason: torn,
                }
            }
        }
    }
}

/// How a scan of a whole segment image ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte after the header is a valid frame; no seal (active segment).
    Clean,
    /// A valid seal at `offset`, with nothing after it.
    Sealed { offset: usize, end_lsn: Lsn },
    /// Damage at `offset` with nothing valid after it: a torn tail if this is
    /// the last segment.
    Torn { offset: usize, reason: TornReason },
    /// Damage at `offset`, proven not to be a torn write by the valid frame
    /// at `valid_after` (equal to `offset` for a whole frame that carries the
    /// wrong record number): corruption.
    Corrupt {
        offset: usize,
        error: FormatError,
        valid_after: usize,
    },
    /// Bytes follow the seal trailer.
    DataAfterSeal { offset: usize },
    /// Damage at `offset` that no torn write explains, though no valid
    /// frame after it proves it: an all-zero tail longer than one sector
    /// ([`FormatError::ZeroTail`]), or a search for a valid frame that
    /// gave up ([`FormatError::ResyncLimit`]). Corruption.
    Damaged { offset: usize, error: FormatError },
}

/// Why a tail was judged torn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TornReason {
    /// The last frame is cut short by the end of the file.
    Partial { needed: usize, found: usize },
    /// The bytes at the tail fail a check (often zeros from a torn sector).
    Invalid(FormatError),
}

impl TornReason {
    /// The check the torn bytes fail, as a [`FormatError`].
    pub fn into_error(self) -> FormatError {
        match self {
            TornReason::Invalid(e) => e,
            TornReason::Partial { needed, found } => FormatError::Short { needed, found },
        }
    }
}

impl std::fmt::Display for TornReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TornReason::Partial { needed, found } => {
                write!(f, "partial frame: {found} of {needed} bytes present")
            }
            TornReason::Invalid(e) => write!(f, "invalid frame ({e})"),
        }
    }
}

/// The result of scanning a segment image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    pub header: SegmentHeader,
    /// Number of valid records found before `end`.
    pub records: u64,
    /// Offset just past the last valid record (where a torn tail is cut).
    pub valid_bytes: usize,
    /// `(lsn, offset)` of every record whose offset is at least
    /// `index_interval_bytes` past the previous entry; the first record is
    /// always an entry.
    pub index: Vec<(Lsn, u64)>,
    pub end: ScanEnd,
}

/// Scans a whole segment image. Fails only if the header is bad; frame
/// damage is reported in [`SegmentScan::end`].
pub fn scan_segment(buf: &[u8], index_interval_bytes: u64) -> Result<SegmentScan, FormatError> {
    let header = decode_segment_header(buf)?;
    let mut at = SEGMENT_HEADER_BYTES;
    let mut lsn = header.first_lsn;
    let mut index: Vec<(Lsn, u64)> = Vec::new();
    let end = loop {
        if at == buf.len() {
            break ScanEnd::Clean;
        }
        match decode_frame(buf, at, lsn, &header) {
            Decoded::Record { frame_len, .. } => {
                let take = match index.last() {
                    None => true,
                    Some(&(_, last)) => at as u64 >= last.saturating_add(index_interval_bytes),
                };
                if take {
                    index.push((lsn, at as u64));
                }
                at += frame_len;
                lsn += 1;
            }
            Decoded::Seal { end_lsn } => {
                let after = at + FRAME_HEADER_BYTES;
                if after != buf.len() {
                    break ScanEnd::DataAfterSeal { offset: after };
                }
                break ScanEnd::Sealed {
                    offset: at,
                    end_lsn,
                };
            }
            Decoded::Incomplete { needed } => {
                // A corrupted length that points past the end of file,
                // with real frames behind it, is corruption; else torn.
                let found = buf.len() - at;
                let error = FormatError::Short { needed, found };
                let torn = TornReason::Partial { needed, found };
                break end_after_bad(buf, at, lsn, &header, error, torn);
            }
            // A checksummed frame with the wrong record number was written
            // whole: no crash produces that, so it is corruption.
            Decoded::Bad(error @ FormatError::LsnMismatch { .. }) => {
                break ScanEnd::Corrupt {
                    offset: at,
                    error,
                    valid_after: at,
                }
            }
            Decoded::Bad(error) => {
                let torn = TornReason::Invalid(error.clone());
                break end_after_bad(buf, at, lsn, &header, error, torn);
            }
        }
    };
    let scan = SegmentScan {
        header,
        records: lsn - header.first_lsn,
        valid_bytes: at,
        index,
        end,
    };
    assert_scan_fits(&scan, buf.len());
    Ok(scan)
}

/// What recovery, verify and repair rely on when they cut or read by a
/// scan: the valid part is the header plus `records` whole frames and ends
/// where the scan stopped; a seal closes exactly those records; the index
/// starts at the first record and is strictly increasing.
fn assert_scan_fits(scan: &SegmentScan, image_bytes: usize) {
    let at = scan.valid_bytes;
    assert!(
        SEGMENT_HEADER_BYTES <= at && at <= image_bytes,
        "scan stopped at byte {at} of a {image_bytes}-byte image"
    );
    assert!(
        at as u64 >= SEGMENT_HEADER_BYTES as u64 + scan.records * FRAME_HEADER_BYTES as u64,
        "{} records cannot fit in {at} bytes",
        scan.records
    );
    let stop_ok = match &scan.end {
        ScanEnd::Clean => at == image_bytes,
        ScanEnd::Sealed { offset, end_lsn } => {
            *offset == at
                && *end_lsn == scan.header.first_lsn + scan.records
                && at + FRAME_HEADER_BYTES == image_bytes
        }
        ScanEnd::Torn { offset, .. } | ScanEnd::Damaged { offset, .. } => *offset == at,
        ScanEnd::Corrupt {
            offset,
            valid_after,
            ..
        } => *offset == at && *valid_after >= at && *valid_after < image_bytes,
        ScanEnd::DataAfterSeal { offset } => *offset == at + FRAME_HEADER_BYTES,
    };
    assert!(
        stop_ok,
        "the scan's end does not fit a stop at byte {at} of {image_bytes} after {} records",
        scan.records
    );
    let first = (scan.header.first_lsn, SEGMENT_HEADER_BYTES as u64);
    debug_assert!(
        scan.index
            .first()
            .map_or(scan.records == 0, |&e| e == first)
            && scan
                .index
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && scan
                .index
                .last()
                .is_none_or(|&(lsn, off)| lsn < first.0 + scan.records
                    && off < at as u64),
        "the segment index ({} entries) does not fit {} records in {at} bytes",
        scan.index.len(),
        scan.records
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u32 = 0x5A17_5A17;

    fn segment(first: Lsn, payloads: &[&[u8]], seal: bool) -> Vec<u8> {
        let mut b = encode_segment_header(first, 1024, SALT).to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_frame(&mut b, SALT, first + i as u64, p);
        }
        if seal {
            encode_seal(&mut b, SALT, first + payloads.len() as u64);
        }
        b
    }

    /// `frame_crc` is the CRC of salt ‖ length ‖ LSN ‖ payload on both of
    /// its paths (one call over a stack copy, two calls in place) and at
    /// the boundary between them.
    #[test]
    fn frame_crc_one_call_matches_piecewise() {
        let bytes: Vec<u8> = (0..CRC_ONE_CALL_PAYLOAD_MAX as u32 + 80)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in (0..=CRC_ONE_CALL_PAYLOAD_MAX + 70).chain([bytes.len()]) {
            let payload = &bytes[..n];
            let mut h = crc32fast::Hasher::new();
            h.update(&SALT.to_le_bytes());
            h.update(&(n as u32).to_le_bytes());
            h.update(&(7 + n as u64).to_le_bytes());
            h.update(payload);
            let want = h.finalize();
            assert_eq!(frame_crc(SALT, n as u32, 7 + n as u64, payload), want, "{n} bytes");
        }
        let mut b = Vec::new();
        encode_frame(&mut b, SALT, 3, &bytes[..CRC_ONE_CALL_PAYLOAD_MAX + 1]);
        let h = accept_any_length(SALT);
        assert!(matches!(decode_frame(&b, 0, 3, &h), Decoded::Record { lsn: 3, .. }));
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = encode_segment_header(42, 1024, SALT);
        assert_eq!(
            decode_segment_header(&h),
            Ok(SegmentHeader {
                version: 1,
                salt: SALT,
                first_lsn: 42,
                record_bytes_max: 1024,
            })
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(FormatError::BadMagic { .. })
        ));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(FormatError::HeaderChecksum { .. })
        ));
        assert!(matches!(
            decode_segment_header(&h[..31]),
            Err(FormatError::Short { .. })
        ));
    }

    #[test]
    fn frames_round_trip() {
        let b = segment(7, &[b"a", b"", b"hello world"], true);
        let s = scan_segment(&b, 0).expect("header");
        assert_eq!(s.records, 3);
        assert_eq!(
            s.end,
            ScanEnd::Sealed {
                offset: b.len() - 16,
                end_lsn: 10
            }
        );
        assert_eq!(s.index.len(), 3);
        let h = decode_segment_header(&b).expect("header");
        match decode_frame(&b, SEGMENT_HEADER_BYTES + 17 + 16, 9, &h) {
            Decoded::Record { payload, .. } => assert_eq!(&b[payload], b"hello world"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_zero_tail_of_one_sector_is_torn_a_longer_one_is_damage() {
        let mut b = segment(0, &[b"abc", b"def"], false);
        let good = b.len();
        b.extend_from_slice(&[0u8; TORN_ZERO_BYTES_MAX]);
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.records, 2);
        assert_eq!(s.valid_bytes, good);
        assert!(matches!(s.end, ScanEnd::Torn { .. }), "{:?}", s.end);
        b.push(0);
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.valid_bytes, good);
        assert_eq!(
            s.end,
            ScanEnd::Damaged {
                offset: good,
                error: FormatError::ZeroTail {
                    bytes: TORN_ZERO_BYTES_MAX + 1
                }
            }
        );
    }

    #[test]
    fn the_search_after_damage_checksums_a_bounded_number_of_bytes() {
        // Frame-shaped headers every 16 bytes, each claiming a payload of
        // the segment's whole record limit: unbounded, every one costs a
        // checksum of 64 KiB.
        let limit = 64 << 10;
        let mut b = encode_segment_header(0, limit, SALT).to_vec();
        for _ in 0..(8 << 20) / FRAME_HEADER_BYTES {
            b.extend_from_slice(&limit.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        let h = decode_segment_header(&b).expect("header");
        let at = SEGMENT_HEADER_BYTES;
        match find_valid_frame_after(&b, at, 0, &h, 1 << 20) {
            Resync::GaveUp { checksummed_bytes } => assert!(
                checksummed_bytes <= 1 << 20 && checksummed_bytes + u64::from(limit) > 1 << 20,
                "the work stops at the bound: {checksummed_bytes}"
            ),
            other => panic!("unexpected {other:?}"),
        }
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.records, 0);
        match s.end {
            ScanEnd::Damaged {
                offset,
                error: FormatError::ResyncLimit { checksummed_bytes },
            } => {
                assert_eq!(offset, at);
                assert!(checksummed_bytes <= RESYNC_CHECKSUM_BYTES_MAX);
                assert!(checksummed_bytes + u64::from(limit) > RESYNC_CHECKSUM_BYTES_MAX);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn partial_last_frame_is_torn() {
        let b = segment(0, &[b"abc", b"defghij"], false);
        let cut = &b[..b.len() - 3];
        let s = scan_segment(cut, 4096).expect("header");
        assert_eq!(s.records, 1);
        assert!(matches!(
            s.end,
            ScanEnd::Torn {
                reason: TornReason::Partial { .. },
                ..
            }
        ));
    }

    #[test]
    fn flipped_bit_mid_log_is_corruption() {
        let mut b = segment(0, &[b"abc", b"def", b"ghi"], false);
        let second = SEGMENT_HEADER_BYTES + 19;
        b[second + 17] ^= 0x10;
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.records, 1);
        match s.end {
            ScanEnd::Corrupt {
                offset,
                error: FormatError::FrameChecksum { lsn: 1, .. },
                valid_after,
            } => {
                assert_eq!(offset, second);
                assert_eq!(valid_after, second + 19);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn oversized_length_with_frames_after_is_corruption() {
        let mut b = segment(0, &[b"abc", b"def", b"ghi"], false);
        let second = SEGMENT_HEADER_BYTES + 19;
        b[second..second + 4].copy_from_slice(&5000u32.to_le_bytes());
        let s = scan_segment(&b, 4096).expect("header");
        assert!(matches!(
            s.end,
            ScanEnd::Corrupt {
                error: FormatError::LengthTooLarge { .. },
                ..
            }
        ));
    }

    #[test]
    fn misplaced_frame_fails_lsn_check() {
        let mut b = segment(0, &[b"abc"], false);
        encode_frame(&mut b, SALT, 5, b"zzz");
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.records, 1);
        assert!(matches!(
            s.end,
            ScanEnd::Corrupt {
                error: FormatError::LsnMismatch {
                    expected: 1,
                    found: 5
                },
                ..
            }
        ));
    }

    #[test]
    fn frame_look_alike_inside_a_torn_payload_is_not_corruption() {
        // A user's payload embeds a perfectly encoded frame, but without
        // the segment's salt; tearing the record must read as a torn tail.
        let mut fake = Vec::new();
        encode_frame(&mut fake, 0, 2, b"x");
        fake.extend_from_slice(b"tail");
        let mut b = segment(0, &[b"a", &fake], false);
        b.truncate(b.len() - 4);
        let s = scan_segment(&b, 4096).expect("header");
        assert_eq!(s.records, 1);
        assert!(matches!(s.end, ScanEnd::Torn { .. }), "{:?}", s.end);
    }

    #[test]
    fn header_refuses_record_numbers_near_overflow() {
        let mut h = encode_segment_header(0, 1024, SALT);
        h[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let crc = crc32fast::hash(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            decode_segment_header(&h),
            Err(FormatError::LsnTooLarge { .. })
        ));
    }

    #[test]
    fn data_after_seal_is_reported() {
        let mut b = segment(0, &[b"abc"], true);
        b.push(1);
        let s = scan_segment(&b, 4096).expect("header");
        assert!(matches!(s.end, ScanEnd::DataAfterSeal { .. }));
    }
}
