//! Deterministic hashing for map-side combines and hash partitioning.
//!
//! Uses FxHash with no random seed: the same key lands in the same
//! partition in every run and on every replay (on the same pointer width).

use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Fixed (unseeded) hasher builder used by every keyed operator.
pub type FxBuild = BuildHasherDefault<fxhash::FxHasher>;

/// Insertion-ordered map with the fixed hasher: iteration order is the order
/// keys were first inserted, whatever their hashes.
pub type OrderedMap<K, V> = indexmap::IndexMap<K, V, FxBuild>;

/// The partition (in `0..partitions`) that `key` belongs to.
#[inline]
pub fn partition_of<K: Hash + ?Sized>(key: &K, partitions: usize) -> usize {
    let mut h = fxhash::FxHasher::default();
    key.hash(&mut h);
    // Multiply-shift uses the well-mixed high bits of the hash.
    ((h.finish() as u128 * partitions as u128) >> 64) as usize
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
    }
}
