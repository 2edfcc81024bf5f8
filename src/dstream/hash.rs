//! Hashing for hash partitioning (deterministic) and for the combine and
//! group tables (seeded).
//!
//! Two hashes, for two jobs. Keys come from the network, so a producer can
//! craft keys that collide under any fixed hash function; in a probing
//! table that makes a batch quadratic. So:
//! - **Tables** (the combine index, [`OrderedMap`]) hash with
//!   [`table_hash`]: foldhash seeded once per process from the OS's
//!   randomness. Nothing observable depends on it (entries keep the order
//!   of first appearance), so it need not be the same across runs.
//! - **Partitions** use [`WeirHasher`], which has no random seed: the same
//!   key lands in the same partition in every run and on every replay
//!   (a replayed batch must write the same bytes). Crafted keys can at most
//!   put every key in one partition: the work stays linear (each partition's
//!   table is seeded), only the parallelism is lost. The checkpoint's state
//!   buckets use their own fixed hash (`checkpoint::buckets`, bounded there).
//!
//! [`WeirHasher`] It combines words the FxHash
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

/// Fixed (unseeded) hasher builder, for benchmarks that compare against
/// the engine's own combine (`examples/bench_wordcount.rs`).
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub type FxBuild = BuildHasherDefault<WeirHasher>;

/// The table hasher: foldhash with this process's random seed (the same
/// for every table of the process, so a hash computed on the map side can
/// be carried to the reduce side).
#[derive(Debug, Clone, Copy, Default)]
pub struct TableBuild;

impl std::hash::BuildHasher for TableBuild {
    type Hasher = foldhash::fast::FoldHasher<'static>;
    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        table_state().build_hasher()
    }
}

/// foldhash keyed from the OS's randomness (std's `RandomState` draws its
/// keys from it), once per process.
fn table_state() -> &'static foldhash::fast::SeedableRandomState {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    static SHARED: OnceLock<foldhash::SharedSeed> = OnceLock::new();
    static STATE: OnceLock<foldhash::fast::SeedableRandomState> = OnceLock::new();
    STATE.get_or_init(|| {
        let os = std::collections::hash_map::RandomState::new();
        let shared = SHARED.get_or_init(|| foldhash::SharedSeed::from_u64(os.hash_one(1u64)));
        foldhash::fast::SeedableRandomState::with_seed(os.hash_one(2u64), shared)
    })
}

/// The seeded table hash of `key` (see the module docs): what the combine
/// index probes with. Differs between processes.
#[inline]
// Only tests hash one key at a time (the combine uses `table_hash_with`).
#[cfg(any(test, feature = "testing"))]
pub fn table_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    table_hash_with(table_hasher(), key)
}

/// The seeded table hasher of this process, for loops that hash many keys
/// ([`table_hash_with`]): looked up once, not once per key.
#[inline]
pub fn table_hasher() -> &'static TableHasher {
    table_state()
}

/// The state behind [`table_hash`] ([`table_hasher`]).
pub type TableHasher = foldhash::fast::SeedableRandomState;

/// [`table_hash`] with the hasher looked up by the caller: the same value.
/// Hashes `K` itself (not `&K`, which `BuildHasher::hash_one` would hash
/// through a forwarding call the compiler did not inline in the combine).
#[inline(always)]
#[allow(clippy::manual_hash_one)] // hash_one(&key) is the `&K` detour this avoids
pub fn table_hash_with<K: Hash + ?Sized>(st: &TableHasher, key: &K) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = st.build_hasher();
    key.hash(&mut h);
    h.finish()
}

/// Insertion-ordered map with the seeded table hasher: iteration order is
/// the order keys were first inserted, whatever their hashes.
pub type OrderedMap<K, V> = indexmap::IndexMap<K, V, TableBuild>;

/// The [`WeirHasher`] hash of `key`: the partitioning hash.
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
    fn table_hash_with_is_table_hash() {
        use std::hash::BuildHasher;
        let st = super::table_hasher();
        for w in ["", "a", "word", "a much longer word than twenty-two bytes"] {
            let t = crate::Text::new(w);
            assert_eq!(super::table_hash_with(st, &t), super::table_hash(&t));
            assert_eq!(super::table_hash_with(st, &t), super::TableBuild.hash_one(&t));
            assert_eq!(super::table_hash_with(st, w), super::table_hash(w));
        }
    }

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
