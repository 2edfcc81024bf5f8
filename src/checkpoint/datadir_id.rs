//! [`DataDirId`]: the identity a data directory's checkpoint shares with
//! its input logs (a random 128-bit number, created with the checkpoint).
//!
//! The checkpoint records it under `m/datadir` (`records.rs`); the context
//! writes it into every input log's directory (`context/identity.rs`) and
//! refuses to run a checkpoint beside logs of another identity, or logs
//! whose checkpoint is missing.
//!
//! Limits: 16 bytes; never all zero (zero is what a damaged or unwritten
//! value would read as).
//! Must never: be derived from anything a second data directory could
//! share (paths, clocks alone): each id draws on the process's random keys.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// A data directory's identity: 128 random bits, shown as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataDirId([u8; 16]);

impl DataDirId {
    /// A new random identity. Each half is SipHash, keyed with the
    /// standard library's random keys (drawn from the operating system),
    /// of the time, the process id and the half's index.
    pub fn random() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut out = [0u8; 16];
        for (i, half) in out.chunks_mut(8).enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_u128(now);
            h.write_u32(std::process::id());
            h.write_usize(i);
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
        if out == [0; 16] {
            out[0] = 1;
        }
        DataDirId(out)
    }

    /// The identity in `bytes`; `None` for all zero (never an identity).
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(DataDirId(bytes))
    }

    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for DataDirId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_and_show_as_32_hex_digits() {
        let a = DataDirId::random();
        let b = DataDirId::random();
        assert_ne!(a, b);
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert!(s.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(DataDirId::from_bytes(a.to_bytes()), Some(a));
        assert_eq!(DataDirId::from_bytes([0; 16]), None);
    }
}
