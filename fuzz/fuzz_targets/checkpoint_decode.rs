//! Arbitrary bytes into the checkpoint decoders: a state bucket and every
//! versioned checkpoint record.
//!
//! Checks, for every input: no decoder panics; a bucket that decodes has
//! strictly increasing keys, and encoding what it decoded gives back the
//! exact input bytes (the layout has one encoding per bucket); a record
//! that decodes re-encodes to the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::checkpoint::buckets::{decode_bucket, decode_bucket_map, encode_bucket};
use weir::checkpoint::{BatchRecord, OpRecord, PipelineRecord, StoreMeta};
use weir::codec;

/// A record that decodes re-encodes, and that encoding is stable.
macro_rules! record {
    ($t:ty, $data:expr) => {
        if let Ok(v) = codec::decode::<$t>($data) {
            let again = codec::encode(&v).expect("a decoded record encodes");
            let back: $t = codec::decode(&again).expect("its encoding decodes");
            assert_eq!(back, v);
        }
    };
}

fuzz_target!(|data: &[u8]| {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let counted = decode_bucket(data, |k, _| keys.push(k.to_vec()));
    if let Ok(n) = counted {
        assert_eq!(n, keys.len());
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys out of order");
        let map = decode_bucket_map(data).expect("decodes twice");
        assert_eq!(encode_bucket(&map), data, "one encoding per bucket");
    }
    record!(StoreMeta, data);
    record!(OpRecord, data);
    record!(BatchRecord, data);
    record!(PipelineRecord, data);
});
