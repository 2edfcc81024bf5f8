//! The ingest protocol decoder: never panics on any bytes, and what the
//! encoders write decodes back identically, however the bytes are split.
//!
//! From the input: raw bytes (fed to the server-side decoder, the client's
//! server-frame decoder, the stored-record and the snapshot decoders: each
//! must return a frame, "need more" or a typed error, never panic), a
//! producer id, a token, frames of records, and split points. The encoded
//! stream (preamble, AUTH when the token is not empty, HELLO, DATA frames)
//! is pushed through a `FrameBuffer` in input-chosen chunks and must
//! decode to exactly the token, producer and records encoded.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use weir::ingest::proto::{
    decode_server_frame, encode_auth, encode_data, encode_hello, encode_preamble, ClientDecoder,
    ClientFrame, FrameBuffer, Limits,
};
use weir::ingest::records::{decode_snapshot, decode_stored};

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    producer: Vec<u8>,
    token: Vec<u8>,
    first_seq: u32,
    frames: Vec<Vec<Vec<u8>>>,
    splits: Vec<u16>,
}

fuzz_target!(|input: Input| {
    let limits = Limits {
        record_bytes_max: 256,
        records_per_frame_max: 16,
        frame_bytes_max: 8192,
        producer_id_bytes_max: 32,
    };

    // Any bytes: decode until an error or no progress.
    let mut d = ClientDecoder::new(limits);
    let mut at = 0;
    while let Ok(Some((f, n))) = d.decode(&input.raw[at..]) {
        assert!(n > 0 && at + n <= input.raw.len());
        if let ClientFrame::Data(data) = f {
            assert_eq!(data.records().count(), data.count as usize);
            assert!(data.records().all(|r| r.len() <= 256));
        }
        at += n;
    }
    let _ = decode_server_frame(&input.raw);
    let _ = decode_stored(&input.raw);
    let _ = decode_snapshot(&input.raw, 1000);

    // Round trip of well-formed frames under arbitrary splits.
    let mut producer = input.producer.clone();
    producer.truncate(32);
    if producer.is_empty() {
        producer.push(b'p');
    }
    let frames: Vec<Vec<Vec<u8>>> = input
        .frames
        .iter()
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.iter()
                .take(16)
                .map(|r| r[..r.len().min(256)].to_vec())
                .collect()
        })
        .collect();
    // At most 4096 bytes (the wire's limit), and well within this
    // target's frame_bytes_max (8192).
    let mut token = input.token.clone();
    token.truncate(4096);
    let mut bytes = Vec::new();
    encode_preamble(&mut bytes);
    if !token.is_empty() {
        encode_auth(&mut bytes, &token);
    }
    encode_hello(&mut bytes, &producer);
    let mut seq = u64::from(input.first_seq);
    for f in &frames {
        encode_data(&mut bytes, seq, f);
        seq += f.len() as u64;
    }
    let mut d = ClientDecoder::new(limits);
    let mut buf = FrameBuffer::new(limits.buffer_bytes());
    let mut got_producer = None;
    let mut got_token = None;
    let mut got: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
    let mut fed = 0;
    let mut split = input.splits.iter().cycle();
    while fed < bytes.len() {
        let step = split
            .next()
            .map_or(bytes.len(), |&s| 1 + usize::from(s) % 512);
        let end = (fed + step).min(bytes.len());
        fed += buf.push(&bytes[fed..end]);
        loop {
            let n = match d.decode(buf.data()).expect("well-formed input decodes") {
                None => break,
                Some((ClientFrame::Preamble, n)) => n,
                Some((ClientFrame::Auth { token }, n)) => {
                    got_token = Some(token.to_vec());
                    n
                }
                Some((ClientFrame::Hello { producer }, n)) => {
                    got_producer = Some(producer.to_vec());
                    n
                }
                Some((ClientFrame::Data(data), n)) => {
                    got.push((data.first_seq, data.records().map(<[u8]>::to_vec).collect()));
                    n
                }
            };
            buf.consume(n);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got_producer.as_deref(), Some(producer.as_slice()));
    assert_eq!(got_token, (!token.is_empty()).then_some(token));
    let mut seq = u64::from(input.first_seq);
    let want: Vec<(u64, Vec<Vec<u8>>)> = frames
        .iter()
        .map(|f| {
            let s = seq;
            seq += f.len() as u64;
            (s, f.clone())
        })
        .collect();
    assert_eq!(got, want);
});
