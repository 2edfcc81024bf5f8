//! The directory stream's decoders (`weir::receiver::dir`): a chunk record
//! as stored in the WAL, and the progress file. On any input they return a
//! value or an error, never panic or allocate beyond the input's size; a
//! decoded value re-encodes to exactly the input (the formats are
//! canonical, so a damaged record can never decode as a different valid
//! one silently).

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::receiver::dir::{decode_chunk, decode_progress, encode_chunk, encode_progress};

fuzz_target!(|data: &[u8]| {
    if let Ok((p, lines)) = decode_chunk(data) {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(encode_chunk(&p, &refs), data);
    }
    if let Ok(entries) = decode_progress(data) {
        let refs: Vec<_> = entries.iter().collect();
        assert_eq!(encode_progress(&refs), data);
    }
});
