//! Deterministic hashing for map-side combines and hash partitioning.
//!
//! [`WeirHasher`] has no random seed: the same key lands in the same
//! partition in every run and on every replay. It combines words the FxHash
//! way (rotate, xor, multiply: a few cycles a word) and finishes by folding
//! the high half into the low half, so both the low bits (hash-table
//! buckets) and the high bits (partitions) are well distributed; plain
//! FxHash's low bits are poor for keys whose last word is mostly zeros.
//!
//! Limits: results are identical across runs on 64-bit targets. Must
//! never: take a random seed (that would make replays write other bytes).

use std::hash::{BuildHasherDefault, Hash, Hasher};

const SEED_MUL: u64 = 0x517c_c1b7_2722_0a95;

/// Fast deterministic hasher (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct WeirHasher {
    h: u64,
}

impl WeirHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.h = (self.h.rotate_left(5) ^ w).wrapping_mul(SEED_MUL);
    }
}

impl Hasher for WeirHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        w[7] = rest.len() as u8 | 0x80;
        self.add(u64::from_le_bytes(w));
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64)
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i)
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the well-mixed high half into the low bits.
        self.h ^ (self.h >> 32)
    }
}

/// Fixed (unseeded) hasher builder used by every keyed operator.
pub type FxBuild = BuildHasherDefault<WeirHasher>;

/// Insertion-ordered map with the fixed hasher: iteration order is the order
/// keys were first inserted, whatever their hashes.
pub type OrderedMap<K, V> = indexmap::IndexMap<K, V, FxBuild>;

/// The [`WeirHasher`] hash of `key` (what [`FxBuild`] maps compute).
#[inline]
pub fn hash_of<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = WeirHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The partition (in `0..partitions`) that `key` belongs to.
#[inline]
pub fn partition_of<K: Hash + ?Sized>(key: &K, partitions: usize) -> usize {
    partition_of_hash(hash_of(key), partitions)
}

/// The partition of a key whose [`hash_of`] is `hash` (so a hash computed
/// once can be carried through a shuffle instead of hashing the key again).
#[inline]
pub fn partition_of_hash(hash: u64, partitions: usize) -> usize {
    // Multiply-shift uses the well-mixed high bits of the hash.
    ((hash as u128 * partitions as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn partition_is_stable_and_in_range() {
        for k in 0..1000u64 {
            let p = super::partition_of(&k, 7);
            assert!(p < 7);
            assert_eq!(p, super::partition_of(&k, 7));
        }
        assert_eq!(super::partition_of("a", 1), 0);
        let t = crate::Text::new("word");
        assert_eq!(
            super::partition_of_hash(super::hash_of(&t), 5),
            super::partition_of(&t, 5)
        );
    }
}
