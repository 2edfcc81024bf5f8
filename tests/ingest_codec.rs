//! Property tests of the ingest protocol codec against a model (the
//! token, producer and list of frames that were encoded): whatever the
//! records, with or without an AUTH frame, and wherever the byte stream
//! is split into reads, the decoder yields exactly those frames; any
//! single flipped byte is refused (CRC or layout), never silently
//! accepted as different data.

use proptest::prelude::*;
use weir::ingest::proto::{
    encode_auth, encode_data, encode_hello, encode_preamble, ClientDecoder, ClientFrame,
    FrameBuffer, Limits, ProtoError,
};

const LIMITS: Limits = Limits {
    record_bytes_max: 64,
    records_per_frame_max: 8,
    frame_bytes_max: 1024,
    producer_id_bytes_max: 16,
};

type Frames = Vec<(u64, Vec<Vec<u8>>)>;

/// What a stream decodes to: the token (if an AUTH came), the producer,
/// the DATA frames and the bytes left undecoded.
type Decoded = (Option<Vec<u8>>, Vec<u8>, Frames, usize);

fn encode(
    token: Option<&[u8]>,
    producer: &[u8],
    first: u64,
    frames: &[Vec<Vec<u8>>],
) -> (Vec<u8>, Frames) {
    let mut b = Vec::new();
    encode_preamble(&mut b);
    if let Some(t) = token {
        encode_auth(&mut b, t);
    }
    encode_hello(&mut b, producer);
    let mut seq = first;
    let mut model = Vec::new();
    for f in frames {
        encode_data(&mut b, seq, f);
        model.push((seq, f.clone()));
        seq += f.len() as u64;
    }
    (b, model)
}

/// Feeds `bytes` in chunks of the given sizes; returns token, producer,
/// frames decoded and bytes left undecoded, or the first error.
fn decode_split(bytes: &[u8], chunks: &[usize]) -> Result<Decoded, ProtoError> {
    let mut d = ClientDecoder::new(LIMITS);
    let mut buf = FrameBuffer::new(LIMITS.buffer_bytes());
    let mut token = None;
    let mut producer = Vec::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < bytes.len() {
        let step = *sizes.next().unwrap_or(&bytes.len());
        let end = (fed + step.max(1)).min(bytes.len());
        fed += buf.push(&bytes[fed..end]);
        while let Some((f, n)) = d.decode(buf.data())? {
            match f {
                ClientFrame::Preamble => {}
                ClientFrame::Auth { token: t } => token = Some(t.to_vec()),
                ClientFrame::Hello { producer: p } => producer = p.to_vec(),
                ClientFrame::Data(data) => {
                    frames.push((data.first_seq, data.records().map(<[u8]>::to_vec).collect()))
                }
            }
            buf.consume(n);
        }
    }
    Ok((token, producer, frames, buf.data().len()))
}

fn frames_strategy() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..=64), 1..=8),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_decodes_the_same_frames(
        token in prop::option::of(prop::collection::vec(any::<u8>(), 1..=300)),
        producer in prop::collection::vec(any::<u8>(), 1..=16),
        first in 0u64..1_000_000,
        frames in frames_strategy(),
        chunks in prop::collection::vec(1usize..200, 1..20),
    ) {
        let (bytes, model) = encode(token.as_deref(), &producer, first, &frames);
        let whole = decode_split(&bytes, &[bytes.len()]).expect("decodes whole");
        prop_assert_eq!(&whole.0, &token);
        prop_assert_eq!(&whole.1, &producer);
        prop_assert_eq!(&whole.2, &model);
        prop_assert_eq!(whole.3, 0, "bytes left over after a whole stream");
        let split = decode_split(&bytes, &chunks).expect("decodes split");
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn a_flipped_byte_is_never_silently_accepted(
        frames in frames_strategy().prop_filter("some data", |f| !f.is_empty()),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (mut bytes, model) = encode(Some(b"tok-0123456789abcdef"), b"prod", 0, &frames);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        match decode_split(&bytes, &[7]) {
            Err(_) => {}
            // A flip can only pass if it made the stream end early inside
            // a frame (a length grew): then fewer frames came out, each
            // equal to the model's.
            Ok((_, p, got, left)) => {
                // The frame cut short may be the HELLO itself: then no
                // producer was decoded, and no data frame either.
                prop_assert!(
                    p == b"prod".to_vec() || (p.is_empty() && got.is_empty()),
                    "producer {:?} with {} frames", p, got.len()
                );
                prop_assert!(got.len() < model.len());
                prop_assert!(left > 0, "an incomplete frame stays buffered");
                prop_assert_eq!(&got[..], &model[..got.len()]);
            }
        }
    }
}
