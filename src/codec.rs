//! The one place that calls bincode.
//!
//! Owns: turning serde values into bytes and back, with one fixed,
//! versionable configuration (little-endian, variable-length integers).
//! Limits: a single decoded value may claim at most `DECODE_BYTES_MAX`
//! (64 MiB) of memory, so corrupt input cannot make it allocate without
//! bound; decoding must consume every byte it is given.
//! Must never: do I/O, or be bypassed: every persisted value (operator state
//! today, checkpoint records next) goes through [`encode`] / [`decode`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest amount of memory one [`decode`] call may allocate, in bytes.
pub const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("cannot decode value ({len} bytes): {reason}")]
    Decode {
        /// Length of the input in bytes.
        len: usize,
        /// What bincode reported.
        reason: String,
    },
    /// The bytes decoded, but did not use all of the input.
    #[error("trailing bytes after value: used {used} of {len} bytes")]
    Trailing {
        /// Bytes consumed by the value.
        used: usize,
        /// Length of the input in bytes.
        len: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<DECODE_BYTES_MAX>()
}

/// Encodes `value` into a fresh byte vector.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a `T` from exactly all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| CodecError::Decode {
            len: bytes.len(),
            reason: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            used,
            len: bytes.len(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes() {
        let v = (7u64, String::from("word"), vec![Some(1i32), None]);
        let bytes = encode(&v).unwrap();
        let back: (u64, String, Vec<Option<i32>>) = decode(&bytes).unwrap();
        assert_eq!(back, v);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<(u64, String, Vec<Option<i32>>)>(&longer),
            Err(CodecError::Trailing { .. })
        ));
        assert!(matches!(
            decode::<String>(&[0xff, 0xff]),
            Err(CodecError::Decode { .. })
        ));
    }
}
