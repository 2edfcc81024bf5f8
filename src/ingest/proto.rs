//! The ingest protocol's wire bytes: pure, bounded, incremental
//! encode/decode.
//!
//! Owns the wire format of `docs/ingest-protocol.md` (preamble, AUTH,
//! HELLO, DATA, WELCOME, ACK, ERROR frames) and, in `buffer.rs`,
//! [`FrameBuffer`], the bounded input buffer both sides read into. The
//! at-rest formats (the stored-record header, the producer-table
//! snapshot) are in [`super::records`].
//!
//! Limits (as numbers, [`Limits`]): a frame's length field is checked
//! against `frame_bytes_max` (default 1 MiB + 64 KiB) as soon as its 4 bytes
//! are present, so no input needs more than `8 + frame_bytes_max` bytes of
//! buffer; records at most `record_bytes_max` (64 KiB), at most
//! `records_per_frame_max` (4096) per frame, producer ids at most
//! `producer_id_bytes_max` (64, wire maximum 255) bytes; an AUTH token 1 to
//! [`TOKEN_WIRE_MAX`] (4096) bytes; server frames at most
//! [`SERVER_FRAME_BYTES_MAX`] (2048); error messages at most
//! [`ERROR_MESSAGE_BYTES_MAX`] (1024).
//!
//! Must never: do I/O, panic or allocate in proportion to a length field
//! it has not checked against a limit, or show a token's bytes in an
//! error. Every malformed input is a typed [`ProtoError`]; decoders borrow
//! from the input instead of copying.

mod buffer;
mod show;

pub use buffer::FrameBuffer;

use crate::wal::format::{le_u16, le_u32, le_u64}; // callers check bounds first

/// The preamble's magic: `WING`.
pub const MAGIC: [u8; 4] = *b"WING";
/// The protocol version this code speaks.
pub const VERSION: u16 = 1;
/// Bytes of the preamble (magic + version).
pub const PREAMBLE_BYTES: usize = 6;
/// Bytes of a frame header (length + CRC).
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest frame (`L`) a server sends; clients decode with this limit.
pub const SERVER_FRAME_BYTES_MAX: u32 = 2048;
/// The longest ERROR message, in bytes.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// The wire's limit on a producer id (its length is one byte).
pub const PRODUCER_ID_WIRE_MAX: usize = 255;
/// Bytes of DATA body before the records (first seq + count).
pub const DATA_HEADER_BYTES: usize = 12;
/// Bytes of framing per record inside a DATA frame (its length).
pub const RECORD_HEADER_BYTES: usize = 4;
/// The wire's limit on an AUTH frame's token, in bytes (a tokens file
/// holds tokens of at most 256).
pub const TOKEN_WIRE_MAX: usize = 4096;

const T_HELLO: u8 = 0x01;
const T_DATA: u8 = 0x02;
const T_AUTH: u8 = 0x03;
const T_WELCOME: u8 = 0x81;
const T_ACK: u8 = 0x82;
const T_ERROR: u8 = 0x83;

/// The decoder's limits. `Limits::default()` is the server's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record payload in a DATA frame.
    pub record_bytes_max: u32,
    /// Most records in one DATA frame.
    pub records_per_frame_max: u32,
    /// Largest frame length field (type + body).
    pub frame_bytes_max: u32,
    /// Longest producer id (at most `PRODUCER_ID_WIRE_MAX`, 255).
    pub producer_id_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            record_bytes_max: 64 << 10,
            records_per_frame_max: 4096,
            frame_bytes_max: (1 << 20) + (64 << 10),
            producer_id_bytes_max: 64,
        }
    }
}

impl Limits {
    /// Checks the limits against each other and the wire format.
    pub fn validate(&self) -> Result<(), String> {
        if self.producer_id_bytes_max == 0 || self.producer_id_bytes_max > PRODUCER_ID_WIRE_MAX {
            return Err(format!(
                "producer_id_bytes_max must be 1..={PRODUCER_ID_WIRE_MAX}, got {}",
                self.producer_id_bytes_max
            ));
        }
        if self.records_per_frame_max == 0 {
            return Err("records_per_frame_max must be at least 1".into());
        }
        let one = 1 + DATA_HEADER_BYTES as u64 + RECORD_HEADER_BYTES as u64;
        if u64::from(self.frame_bytes_max) < one + u64::from(self.record_bytes_max) {
            return Err(format!(
                "frame_bytes_max ({}) must hold one record of record_bytes_max ({}): at least {}",
                self.frame_bytes_max,
                self.record_bytes_max,
                one + u64::from(self.record_bytes_max)
            ));
        }
        if self.frame_bytes_max > u32::MAX - FRAME_HEADER_BYTES as u32 {
            return Err("frame_bytes_max is too large".into());
        }
        Ok(())
    }

    /// The buffer a reader needs: one whole frame with its header.
    pub fn buffer_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.frame_bytes_max as usize
    }
}

/// ERROR frame codes (`docs/ingest-protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    BadPreamble = 1,
    Malformed = 2,
    TooLarge = 3,
    SequenceGap = 4,
    OutOfOrder = 5,
    Busy = 6,
    ProducersFull = 7,
    Timeout = 8,
    Superseded = 9,
    Stopping = 10,
    Storage = 11,
    InvalidRecord = 12,
    Unauthorized = 13,
    Forbidden = 14,
}

impl ErrorCode {
    pub fn from_u8(b: u8) -> Option<ErrorCode> {
        use ErrorCode::*;
        Some(match b {
            1 => BadPreamble,
            2 => Malformed,
            3 => TooLarge,
            4 => SequenceGap,
            5 => OutOfOrder,
            6 => Busy,
            7 => ProducersFull,
            8 => Timeout,
            9 => Superseded,
            10 => Stopping,
            11 => Storage,
            12 => InvalidRecord,
            13 => Unauthorized,
            14 => Forbidden,
            _ => return None,
        })
    }

    /// Whether a client may reconnect and resume after this error.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy | ErrorCode::Timeout | ErrorCode::Stopping | ErrorCode::Storage
        )
    }

    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadPreamble => "bad_preamble",
            Malformed => "malformed",
            TooLarge => "too_large",
            SequenceGap => "sequence_gap",
            OutOfOrder => "out_of_order",
            Busy => "busy",
            ProducersFull => "producers_full",
            Timeout => "timeout",
            Superseded => "superseded",
            Stopping => "stopping",
            Storage => "storage",
            InvalidRecord => "invalid_record",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
        }
    }
}

/// Malformed input on the wire. Offsets are from the start of the frame
/// being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The connection's first bytes are not the magic `WING`: it is not a
    /// weir ingest client.
    #[error("not a weir ingest connection: byte {offset} of the preamble is {found:#04x}, expected {expected:#04x} (magic `WING`)")]
    BadMagic {
        /// Position of the first wrong byte in the preamble (0 to 3).
        offset: usize,
        /// The magic's byte at that position.
        expected: u8,
        /// The byte that arrived instead.
        found: u8,
    },
    /// The preamble names a protocol version other than the one this code
    /// speaks (1).
    #[error("unsupported protocol version {found}; this server speaks version {VERSION}")]
    BadVersion {
        /// The version the peer sent.
        found: u16,
    },
    /// A frame's length field is 0 or over the decoder's `frame_bytes_max`.
    #[error("frame length {len} is outside 1..={max} (frame_bytes_max)")]
    FrameLength {
        /// The length field: bytes of type + body.
        len: u32,
        /// The limit it was checked against, in bytes.
        max: u32,
    },
    /// A frame's CRC-32 does not match its type and body bytes.
    #[error("frame checksum mismatch: expected {expected:#010x}, found {found:#010x}")]
    Crc {
        /// The CRC the frame header carries.
        expected: u32,
        /// The CRC computed over the received bytes.
        found: u32,
    },
    /// A frame's type byte (given) is not one this side accepts.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A frame arrived at the wrong point of the conversation (DATA before
    /// HELLO, a second HELLO, AUTH after HELLO or twice).
    #[error("frame type {kind} is not allowed here: {why}")]
    OutOfOrder {
        /// The frame's type name (`"AUTH"`, `"HELLO"`, `"DATA"`).
        kind: &'static str,
        /// The rule it broke.
        why: &'static str,
    },
    /// A frame's body does not have the size its type's layout requires.
    #[error("{kind} frame body is {len} bytes; its layout needs {need}")]
    BodyLength {
        /// The frame's type name (`"HELLO"`, `"DATA"`, `"WELCOME"`, ...).
        kind: &'static str,
        /// The body's actual size, in bytes.
        len: usize,
        /// The size the layout needs, in bytes.
        need: usize,
    },
    /// A HELLO's producer id is empty or longer than `producer_id_bytes_max`.
    #[error("producer id length {len} is outside 1..={max} (producer_id_bytes_max)")]
    ProducerId {
        /// The id's length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An AUTH frame's token is empty or longer than [`TOKEN_WIRE_MAX`]
    /// (its bytes are never shown).
    #[error("AUTH token length {len} is outside 1..={TOKEN_WIRE_MAX}")]
    Token {
        /// The token's length field, in bytes.
        len: usize,
    },
    /// A DATA frame holds no records or more than `records_per_frame_max`.
    #[error("DATA frame record count {count} is outside 1..={max} (records_per_frame_max)")]
    RecordCount {
        /// The frame's record count field.
        count: u32,
        /// The limit, in records.
        max: u32,
    },
    /// A record in a DATA frame is longer than `record_bytes_max`.
    #[error("record {index} of the DATA frame is {len} bytes, over record_bytes_max ({max})")]
    RecordTooLarge {
        /// The record's position in the frame, from 0.
        index: u32,
        /// The record's length field, in bytes.
        len: u32,
        /// The limit, in bytes.
        max: u32,
    },
    /// A DATA frame's body ends before the record its count promises.
    #[error("DATA frame is truncated inside record {index} (at byte {offset} of the body)")]
    RecordTruncated {
        /// The record being read, from 0.
        index: u32,
        /// Where in the body the bytes ran out, in bytes.
        offset: usize,
    },
    /// A DATA frame's body continues after its last record.
    #[error("DATA frame has {extra} bytes after its {count} records")]
    TrailingBytes {
        /// The frame's record count.
        count: u32,
        /// Bytes left over after the records.
        extra: usize,
    },
    /// A DATA frame's sequence numbers would pass 2^64 - 1.
    #[error("sequence numbers {first} + {count} overflow")]
    SeqOverflow {
        /// The frame's first sequence number.
        first: u64,
        /// The frame's record count.
        count: u32,
    },
    /// An ERROR frame's message is over 1024 bytes or not UTF-8.
    #[error("ERROR message is {len} bytes, over {ERROR_MESSAGE_BYTES_MAX}, or not UTF-8")]
    BadMessage {
        /// The message length field, in bytes.
        len: usize,
    },
}

impl ProtoError {
    /// The ERROR code the server answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::BadMagic { .. } | ProtoError::BadVersion { .. } => ErrorCode::BadPreamble,
            ProtoError::FrameLength { len, .. } if *len > 0 => ErrorCode::TooLarge,
            ProtoError::RecordCount { count, .. } if *count > 0 => ErrorCode::TooLarge,
            ProtoError::RecordTooLarge { .. } | ProtoError::ProducerId { .. } => {
                ErrorCode::TooLarge
            }
            ProtoError::Token { len } if *len > 0 => ErrorCode::TooLarge,
            ProtoError::OutOfOrder { .. } => ErrorCode::OutOfOrder,
            _ => ErrorCode::Malformed,
        }
    }
}

/// A DATA frame's records, validated, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    pub first_seq: u64,
    pub count: u32,
    /// The records region (each record: u32 length + bytes), already checked.
    records: &'a [u8],
}

impl<'a> Data<'a> {
    /// The records, in order (record `i` has sequence `first_seq + i`).
    pub fn records(&self) -> Records<'a> {
        Records { rest: self.records }
    }
}

/// Iterator over a validated DATA frame's records.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        // Validated at decode, so the lengths are in bounds; `get` keeps it
        // panic-free regardless.
        let len = le_u32(self.rest.get(..4)?, 0) as usize;
        let rec = self.rest.get(4..4 + len)?;
        self.rest = &self.rest[4 + len..];
        Some(rec)
    }
}

/// A frame from client to server (`Debug` never shows a token's bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// The preamble was read (magic and version are right).
    Preamble,
    /// A bearer token (optional; after the preamble, before HELLO).
    Auth {
        token: &'a [u8],
    },
    Hello {
        producer: &'a [u8],
    },
    Data(Data<'a>),
}

/// A frame from server to client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    Welcome {
        next_seq: u64,
        record_bytes_max: u32,
        records_per_frame_max: u32,
        frame_bytes_max: u32,
    },
    Ack {
        next_seq: u64,
    },
    Error {
        /// `None` for a code this version does not know.
        code: Option<ErrorCode>,
        raw_code: u8,
        message: String,
    },
}

/// Splits one frame off `buf`: `Ok(None)` if incomplete, else the frame's
/// type, body and total length. Checks length (as soon as it is present)
/// and CRC.
fn split_frame(buf: &[u8], frame_bytes_max: u32) -> Result<Option<(u8, &[u8], usize)>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = le_u32(buf, 0);
    if len == 0 || len > frame_bytes_max {
        return Err(ProtoError::FrameLength {
            len,
            max: frame_bytes_max,
        });
    }
    let total = FRAME_HEADER_BYTES + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let want = le_u32(buf, 4);
    let payload = &buf[FRAME_HEADER_BYTES..total];
    let got = crc32fast::hash(payload);
    if got != want {
        return Err(ProtoError::Crc {
            expected: want,
            found: got,
        });
    }
    Ok(Some((payload[0], &payload[1..], total)))
}

/// Where a server-side connection is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preamble,
    /// Before HELLO; an AUTH may come first.
    Hello,
    /// Before HELLO, after an AUTH.
    Authed,
    Data,
}

/// The server's decoder of one connection: preamble, then HELLO, then DATA
/// frames. Incremental: give it whatever bytes have arrived.
#[derive(Debug, Clone)]
pub struct ClientDecoder {
    limits: Limits,
    stage: Stage,
}

impl ClientDecoder {
    pub fn new(limits: Limits) -> Self {
        ClientDecoder {
            limits,
            stage: Stage::Preamble,
        }
    }

    #[cfg(any(test, feature = "testing"))]
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the HELLO has been decoded.
    pub fn greeted(&self) -> bool {
        self.stage == Stage::Data
    }

    /// Decodes the next item at the start of `buf`. `Ok(None)`: more bytes
    /// are needed (nothing consumed). `Ok(Some((frame, n)))`: the caller
    /// consumes `n` bytes. After an `Err` the connection must be closed.
    pub fn decode<'a>(
        &mut self,
        buf: &'a [u8],
    ) -> Result<Option<(ClientFrame<'a>, usize)>, ProtoError> {
        if self.stage == Stage::Preamble {
            // Refuse garbage at its first wrong byte.
            for (i, (&b, &m)) in buf.iter().zip(MAGIC.iter()).enumerate() {
                if b != m {
                    return Err(ProtoError::BadMagic {
                        offset: i,
                        expected: m,
                        found: b,
                    });
                }
            }
            if buf.len() < PREAMBLE_BYTES {
                return Ok(None);
            }
            let v = le_u16(buf, 4);
            if v != VERSION {
                return Err(ProtoError::BadVersion { found: v });
            }
            self.stage = Stage::Hello;
            return Ok(Some((ClientFrame::Preamble, PREAMBLE_BYTES)));
        }
        let Some((kind, body, total)) = split_frame(buf, self.limits.frame_bytes_max)? else {
            return Ok(None);
        };
        let frame = match (kind, self.stage) {
            (T_AUTH, Stage::Hello) => {
                let token = decode_auth(body)?;
                self.stage = Stage::Authed;
                ClientFrame::Auth { token }
            }
            (T_AUTH, _) => {
                return Err(ProtoError::OutOfOrder {
                    kind: "AUTH",
                    why: "a connection sends AUTH at most once, before HELLO",
                })
            }
            (T_HELLO, Stage::Hello | Stage::Authed) => {
                let producer = decode_hello(body, self.limits.producer_id_bytes_max)?;
                self.stage = Stage::Data;
                ClientFrame::Hello { producer }
            }
            (T_HELLO, _) => {
                return Err(ProtoError::OutOfOrder {
                    kind: "HELLO",
                    why: "a connection sends HELLO once",
                })
            }
            (T_DATA, Stage::Data) => ClientFrame::Data(decode_data(body, &self.limits)?),
            (T_DATA, _) => {
                return Err(ProtoError::OutOfOrder {
                    kind: "DATA",
                    why: "HELLO must come first",
                })
            }
            (k, _) => return Err(ProtoError::UnknownType(k)),
        };
        Ok(Some((frame, total)))
    }
}

/// An AUTH body: u16 token length, then the token.
fn decode_auth(body: &[u8]) -> Result<&[u8], ProtoError> {
    if body.len() < 2 {
        return Err(ProtoError::BodyLength {
            kind: "AUTH",
            len: body.len(),
            need: 2,
        });
    }
    let len = usize::from(le_u16(body, 0));
    if len == 0 || len > TOKEN_WIRE_MAX {
        return Err(ProtoError::Token { len });
    }
    if body.len() != 2 + len {
        return Err(ProtoError::BodyLength {
            kind: "AUTH",
            len: body.len(),
            need: 2 + len,
        });
    }
    Ok(&body[2..])
}

fn decode_hello(body: &[u8], max: usize) -> Result<&[u8], ProtoError> {
    let Some(&len) = body.first() else {
        return Err(ProtoError::BodyLength {
            kind: "HELLO",
            len: 0,
            need: 1,
        });
    };
    let len = usize::from(len);
    if len == 0 || len > max {
        return Err(ProtoError::ProducerId { len, max });
    }
    if body.len() != 1 + len {
        return Err(ProtoError::BodyLength {
            kind: "HELLO",
            len: body.len(),
            need: 1 + len,
        });
    }
    Ok(&body[1..])
}

fn decode_data<'a>(body: &'a [u8], limits: &Limits) -> Result<Data<'a>, ProtoError> {
    if body.len() < DATA_HEADER_BYTES {
        return Err(ProtoError::BodyLength {
            kind: "DATA",
            len: body.len(),
            need: DATA_HEADER_BYTES,
        });
    }
    let first_seq = le_u64(body, 0);
    let count = le_u32(body, 8);
    if count == 0 || count > limits.records_per_frame_max {
        return Err(ProtoError::RecordCount {
            count,
            max: limits.records_per_frame_max,
        });
    }
    if first_seq.checked_add(u64::from(count)).is_none() {
        return Err(ProtoError::SeqOverflow {
            first: first_seq,
            count,
        });
    }
    let records = &body[DATA_HEADER_BYTES..];
    let mut at = 0usize;
    for index in 0..count {
        if records.len() - at < RECORD_HEADER_BYTES {
            return Err(ProtoError::RecordTruncated {
                index,
                offset: DATA_HEADER_BYTES + at,
            });
        }
        let len = le_u32(records, at);
        if len > limits.record_bytes_max {
            return Err(ProtoError::RecordTooLarge {
                index,
                len,
                max: limits.record_bytes_max,
            });
        }
        at += RECORD_HEADER_BYTES;
        if records.len() - at < len as usize {
            return Err(ProtoError::RecordTruncated {
                index,
                offset: DATA_HEADER_BYTES + at,
            });
        }
        at += len as usize;
    }
    if at != records.len() {
        return Err(ProtoError::TrailingBytes {
            count,
            extra: records.len() - at,
        });
    }
    Ok(Data {
        first_seq,
        count,
        records,
    })
}

/// Decodes one server frame at the start of `buf` (client side).
/// `Ok(None)`: incomplete.
pub fn decode_server_frame(buf: &[u8]) -> Result<Option<(ServerFrame, usize)>, ProtoError> {
    let Some((kind, body, total)) = split_frame(buf, SERVER_FRAME_BYTES_MAX)? else {
        return Ok(None);
    };
    let need = |kind: &'static str, need: usize| {
        if body.len() == need {
            Ok(())
        } else {
            Err(ProtoError::BodyLength {
                kind,
                len: body.len(),
                need,
            })
        }
    };
    let f = match kind {
        T_WELCOME => {
            need("WELCOME", 20)?;
            ServerFrame::Welcome {
                next_seq: le_u64(body, 0),
                record_bytes_max: le_u32(body, 8),
                records_per_frame_max: le_u32(body, 12),
                frame_bytes_max: le_u32(body, 16),
            }
        }
        T_ACK => {
            need("ACK", 8)?;
            ServerFrame::Ack {
                next_seq: le_u64(body, 0),
            }
        }
        T_ERROR => {
            if body.len() < 3 {
                return Err(ProtoError::BodyLength {
                    kind: "ERROR",
                    len: body.len(),
                    need: 3,
                });
            }
            let len = usize::from(le_u16(body, 1));
            need("ERROR", 3 + len)?;
            if len > ERROR_MESSAGE_BYTES_MAX {
                return Err(ProtoError::BadMessage { len });
            }
            let message = std::str::from_utf8(&body[3..])
                .map_err(|_| ProtoError::BadMessage { len })?
                .to_string();
            ServerFrame::Error {
                code: ErrorCode::from_u8(body[0]),
                raw_code: body[0],
                message,
            }
        }
        k => return Err(ProtoError::UnknownType(k)),
    };
    Ok(Some((f, total)))
}

/// Starts a frame of `kind` at the end of `out`; [`finish_frame`] fills in
/// length and CRC. Returns the frame's start.
fn begin_frame(out: &mut Vec<u8>, kind: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    out.push(kind);
    start
}

fn finish_frame(out: &mut [u8], start: usize) {
    let payload = &out[start + FRAME_HEADER_BYTES..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the 6-byte preamble.
pub fn encode_preamble(out: &mut Vec<u8>) {
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
}

/// Appends an AUTH frame carrying `token` (1 to [`TOKEN_WIRE_MAX`] bytes:
/// the caller checks; a longer one is cut so the frame stays
/// well-formed).
pub fn encode_auth(out: &mut Vec<u8>, token: &[u8]) {
    let t = &token[..token.len().min(TOKEN_WIRE_MAX)];
    let s = begin_frame(out, T_AUTH);
    out.extend_from_slice(&(t.len() as u16).to_le_bytes());
    out.extend_from_slice(t);
    finish_frame(out, s);
}

/// Appends a HELLO frame. `producer` must be 1..=255 bytes (the caller
/// checks; a longer id is cut to 255 so the frame stays well-formed).
pub fn encode_hello(out: &mut Vec<u8>, producer: &[u8]) {
    let p = &producer[..producer.len().min(PRODUCER_ID_WIRE_MAX)];
    let s = begin_frame(out, T_HELLO);
    out.push(p.len() as u8);
    out.extend_from_slice(p);
    finish_frame(out, s);
}

#[cfg(any(test, feature = "testing"))]
/// Bytes of a DATA frame (header included) carrying records of these lengths.
pub fn data_frame_bytes(record_lens: impl IntoIterator<Item = usize>) -> usize {
    FRAME_HEADER_BYTES
        + 1
        + DATA_HEADER_BYTES
        + record_lens
            .into_iter()
            .map(|l| RECORD_HEADER_BYTES + l)
            .sum::<usize>()
}

/// Appends a DATA frame with `records` numbered from `first_seq`.
pub fn encode_data<R: AsRef<[u8]>>(out: &mut Vec<u8>, first_seq: u64, records: &[R]) {
    let s = begin_frame(out, T_DATA);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        let r = r.as_ref();
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    finish_frame(out, s);
}

/// Appends a WELCOME frame.
pub fn encode_welcome(out: &mut Vec<u8>, next_seq: u64, limits: &Limits) {
    let s = begin_frame(out, T_WELCOME);
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(&limits.record_bytes_max.to_le_bytes());
    out.extend_from_slice(&limits.records_per_frame_max.to_le_bytes());
    out.extend_from_slice(&limits.frame_bytes_max.to_le_bytes());
    finish_frame(out, s);
}

/// Appends an ACK frame.
pub fn encode_ack(out: &mut Vec<u8>, next_seq: u64) {
    let s = begin_frame(out, T_ACK);
    out.extend_from_slice(&next_seq.to_le_bytes());
    finish_frame(out, s);
}

/// Appends an ERROR frame; the message is cut (at a char boundary) to
/// [`ERROR_MESSAGE_BYTES_MAX`].
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    let mut end = message.len().min(ERROR_MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let m = &message.as_bytes()[..end];
    let s = begin_frame(out, T_ERROR);
    out.push(code as u8);
    out.extend_from_slice(&(m.len() as u16).to_le_bytes());
    out.extend_from_slice(m);
    finish_frame(out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_bytes(id: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        encode_preamble(&mut b);
        encode_hello(&mut b, id);
        b
    }

    #[test]
    fn handshake_and_data_decode_exactly() {
        let mut b = hello_bytes(b"p1");
        encode_data(&mut b, 7, &[b"a".as_slice(), b"", b"ccc"]);
        assert_eq!(b.len(), 6 + (8 + 1 + 1 + 2) + data_frame_bytes([1, 0, 3]));
        let mut d = ClientDecoder::new(Limits::default());
        let (f, n) = d.decode(&b).unwrap().unwrap();
        assert_eq!((f, n), (ClientFrame::Preamble, 6));
        let (f, n2) = d.decode(&b[n..]).unwrap().unwrap();
        assert_eq!(f, ClientFrame::Hello { producer: b"p1" });
        let (f, n3) = d.decode(&b[n + n2..]).unwrap().unwrap();
        assert_eq!(n + n2 + n3, b.len());
        let ClientFrame::Data(data) = f else {
            panic!("{f:?}")
        };
        assert_eq!((data.first_seq, data.count), (7, 3));
        let recs: Vec<&[u8]> = data.records().collect();
        assert_eq!(recs, vec![b"a".as_slice(), b"", b"ccc"]);
        assert_eq!(d.decode(&[]).unwrap(), None);
    }

    #[test]
    fn garbage_is_refused_at_its_first_byte() {
        let mut d = ClientDecoder::new(Limits::default());
        assert_eq!(
            d.decode(b"GET / HTTP/1.1"),
            Err(ProtoError::BadMagic {
                offset: 0,
                expected: b'W',
                found: b'G'
            })
        );
        let mut d = ClientDecoder::new(Limits::default());
        assert_eq!(d.decode(b"WI"), Ok(None));
        assert_eq!(
            d.decode(b"WINGx\x00"),
            Err(ProtoError::BadVersion { found: 0x78 })
        );
    }

    #[test]
    fn oversized_frame_is_refused_from_its_length_alone() {
        let mut d = ClientDecoder::new(Limits::default());
        let mut b = hello_bytes(b"p");
        let at = b.len();
        b.extend_from_slice(&(Limits::default().frame_bytes_max + 1).to_le_bytes());
        d.decode(&b).unwrap();
        d.decode(&b[6..]).unwrap();
        let e = d.decode(&b[at..]).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn record_limits_and_layout_are_checked() {
        let limits = Limits {
            record_bytes_max: 4,
            records_per_frame_max: 2,
            ..Limits::default()
        };
        let greeted = || {
            let mut d = ClientDecoder::new(limits);
            let b = hello_bytes(b"p");
            let (_, n) = d.decode(&b).unwrap().unwrap();
            d.decode(&b[n..]).unwrap().unwrap();
            d
        };
        let mut b = Vec::new();
        encode_data(&mut b, 0, &[b"12345".as_slice()]);
        assert_eq!(
            greeted().decode(&b),
            Err(ProtoError::RecordTooLarge {
                index: 0,
                len: 5,
                max: 4
            })
        );
        let mut b = Vec::new();
        encode_data(&mut b, 0, &[b"1".as_slice(), b"2", b"3"]);
        assert_eq!(
            greeted().decode(&b),
            Err(ProtoError::RecordCount { count: 3, max: 2 })
        );
        let mut b = Vec::new();
        encode_data(&mut b, u64::MAX, &[b"1".as_slice()]);
        assert_eq!(
            greeted().decode(&b),
            Err(ProtoError::SeqOverflow {
                first: u64::MAX,
                count: 1
            })
        );
        // A flipped byte: CRC.
        let mut b = Vec::new();
        encode_data(&mut b, 0, &[b"1".as_slice()]);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(greeted().decode(&b), Err(ProtoError::Crc { .. })));
        // DATA before HELLO.
        let mut d = ClientDecoder::new(limits);
        let mut b = Vec::new();
        encode_preamble(&mut b);
        encode_data(&mut b, 0, &[b"1".as_slice()]);
        d.decode(&b).unwrap();
        assert_eq!(d.decode(&b[6..]).unwrap_err().code(), ErrorCode::OutOfOrder);
    }

    #[test]
    fn an_auth_frame_comes_once_before_hello_and_is_bounded() {
        let token = b"ingest-0123456789abcdef";
        let mut b = Vec::new();
        encode_preamble(&mut b);
        encode_auth(&mut b, token);
        encode_hello(&mut b, b"p1");
        assert_eq!(b.len(), 6 + (8 + 1 + 2 + token.len()) + (8 + 1 + 1 + 2));
        let mut d = ClientDecoder::new(Limits::default());
        let (_, n) = d.decode(&b).unwrap().unwrap();
        let (f, m) = d.decode(&b[n..]).unwrap().unwrap();
        assert_eq!(f, ClientFrame::Auth { token });
        assert!(!d.greeted(), "AUTH alone is not the HELLO");
        let (f, k) = d.decode(&b[n + m..]).unwrap().unwrap();
        assert_eq!(f, ClientFrame::Hello { producer: b"p1" });
        assert_eq!(n + m + k, b.len());
        assert!(d.greeted());
        // AUTH after HELLO, and twice.
        let mut again = Vec::new();
        encode_auth(&mut again, token);
        assert_eq!(d.decode(&again).unwrap_err().code(), ErrorCode::OutOfOrder);
        let mut d = ClientDecoder::new(Limits::default());
        d.decode(&b).unwrap();
        d.decode(&b[n..]).unwrap();
        assert_eq!(d.decode(&again).unwrap_err().code(), ErrorCode::OutOfOrder);
        // Lengths: 0, over the wire limit (the token is never shown), and
        // a body that does not match its length field.
        let frame = |body: &[u8]| {
            let mut f = Vec::new();
            let s = begin_frame(&mut f, T_AUTH);
            f.extend_from_slice(body);
            finish_frame(&mut f, s);
            f
        };
        let decode = |f: &[u8]| {
            let mut d = ClientDecoder::new(Limits::default());
            d.decode(&hello_bytes(b"p")[..6]).unwrap();
            d.decode(f).map(|o| o.map(|(_, n)| n))
        };
        let e = decode(&frame(&[0, 0])).unwrap_err();
        assert_eq!((e.clone(), e.code()), (ProtoError::Token { len: 0 }, ErrorCode::Malformed));
        let mut long = (TOKEN_WIRE_MAX as u16 + 1).to_le_bytes().to_vec();
        long.extend(std::iter::repeat_n(b's', TOKEN_WIRE_MAX + 1));
        let e = decode(&frame(&long)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooLarge);
        assert!(!e.to_string().contains("sss"), "{e}");
        let mut short = 5u16.to_le_bytes().to_vec();
        short.extend_from_slice(b"abc");
        assert!(matches!(
            decode(&frame(&short)),
            Err(ProtoError::BodyLength { kind: "AUTH", len: 5, need: 7 })
        ));
        let mut b = Vec::new();
        encode_error(&mut b, ErrorCode::Forbidden, "no");
        let (f, _) = decode_server_frame(&b).unwrap().unwrap();
        assert!(matches!(f, ServerFrame::Error { code: Some(ErrorCode::Forbidden), raw_code: 14, .. }));
        assert!(!ErrorCode::Unauthorized.retryable() && !ErrorCode::Forbidden.retryable());
    }

    #[test]
    fn server_frames_round_trip() {
        let mut b = Vec::new();
        encode_welcome(&mut b, 42, &Limits::default());
        encode_ack(&mut b, 43);
        encode_error(&mut b, ErrorCode::SequenceGap, "gap: expected 43, got 50");
        let (f, n) = decode_server_frame(&b).unwrap().unwrap();
        assert_eq!(
            f,
            ServerFrame::Welcome {
                next_seq: 42,
                record_bytes_max: 65536,
                records_per_frame_max: 4096,
                frame_bytes_max: (1 << 20) + (64 << 10)
            }
        );
        let (f, m) = decode_server_frame(&b[n..]).unwrap().unwrap();
        assert_eq!(f, ServerFrame::Ack { next_seq: 43 });
        let (f, k) = decode_server_frame(&b[n + m..]).unwrap().unwrap();
        assert_eq!(
            f,
            ServerFrame::Error {
                code: Some(ErrorCode::SequenceGap),
                raw_code: 4,
                message: "gap: expected 43, got 50".into()
            }
        );
        assert_eq!(n + m + k, b.len());
        assert_eq!(decode_server_frame(&b[..n - 1]), Ok(None));
    }
}
