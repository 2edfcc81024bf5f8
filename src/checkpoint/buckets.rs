//! State buckets: how an operator's state is cut into sled values.
//!
//! Owns the addressing (a stable 64-bit hash of the encoded key, then
//! linear hashing, [`LinearHash`]), the byte layout of one bucket
//! ([`encode_bucket`] / [`decode_bucket`], `docs/checkpoint-format.md`), and
//! [`rebucket`]: applying a batch's changes to the touched buckets and
//! splitting buckets so that none outgrows its target.
//!
//! Why buckets: sled 0.34 pays per item when iterating (page
//! deserialization, one allocation per key and value), about 10 µs per
//! key at a million keys. Holding `bucket_keys_target` keys per value
//! makes loading a few thousand items instead of a million; a commit
//! rewrites only the buckets its changed keys fall into.
//!
//! Limits: at most 2^[`LEVEL_MAX`] + 2^[`LEVEL_MAX`] - 1 buckets per
//! operator; a bucket holds at most `u32::MAX` entries and keys and values
//! of at most `u32::MAX` bytes each. Buckets split, they never merge (an
//! operator that shrank keeps its bucket count).
//! Crafted keys that share a bucket cannot grow the bucket count (splits
//! follow the total key count) and cost a commit at most one rewrite of
//! each touched bucket (`docs/checkpoint-format.md`, "Crafted keys").
//! Must never: do I/O (the store reads and writes the bytes), or change the
//! hash or the split rule without a new format version: both decide where
//! existing keys are found.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Largest linear-hashing level: at most 2^32 buckets per operator.
pub const LEVEL_MAX: u32 = 31;
/// Version tag, the first byte of every encoded bucket.
pub const BUCKET_FORMAT_V1: u8 = 1;

/// The stable hash of an encoded key: FNV-1a 64 over the bytes, then the
/// splitmix64 finalizer so that the low bits (used for addressing) are
/// well mixed. Fixed by the format; never seeded.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Linear hashing state of one operator: `2^level + split` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinearHash {
    /// Buckets `0..2^level` exist at least.
    pub level: u32,
    /// Buckets `0..split` have already been split into `b + 2^level`.
    pub split: u64,
}

impl LinearHash {
    /// Number of buckets.
    pub fn buckets(&self) -> u64 {
        (1u64 << self.level) + self.split
    }

    /// The bucket a key with hash `h` lives in.
    pub fn bucket_of(&self, h: u64) -> u64 {
        let b = h & ((1u64 << self.level) - 1);
        if b < self.split {
            h & ((1u64 << (self.level + 1)) - 1)
        } else {
            b
        }
    }

    /// Splits the next bucket; returns `(split bucket, new bucket)`, or
    /// `None` at [`LEVEL_MAX`].
    fn split_next(&mut self) -> Option<(u64, u64)> {
        if self.level >= LEVEL_MAX {
            return None;
        }
        let from = self.split;
        let new = from + (1u64 << self.level);
        self.split += 1;
        if self.split == 1u64 << self.level {
            self.level += 1;
            self.split = 0;
        }
        Some((from, new))
    }
}

/// One bucket in memory: encoded key → encoded value, in key byte order.
pub type Bucket = BTreeMap<Vec<u8>, Vec<u8>>;

/// Why bucket bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket of {len} bytes is damaged at byte {offset}: {what}")]
pub struct BucketError {
    /// Length of the bucket value.
    pub len: usize,
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong (expected vs found).
    pub what: String,
}

/// Encodes a bucket: tag `1`, entry count (u32 LE), then per entry in key
/// order: key length (u32 LE), key, value length (u32 LE), value.
///
/// Panics if a count or length does not fit its u32 (the codec caps a value
/// at 64 MiB, so only a bug gets there): a silently cut length would write
/// a bucket that no longer decodes.
pub fn encode_bucket(b: &Bucket) -> Vec<u8> {
    let bytes: usize = b.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(5 + bytes);
    out.push(BUCKET_FORMAT_V1);
    out.extend_from_slice(&u32_len(b.len(), "entry count").to_le_bytes());
    for (k, v) in b {
        out.extend_from_slice(&u32_len(k.len(), "key length").to_le_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&u32_len(v.len(), "value length").to_le_bytes());
        out.extend_from_slice(v);
    }
    debug_assert_eq!(out.len(), 5 + bytes);
    out
}

/// `n` as the u32 the bucket layout stores; a larger one is a bug.
fn u32_len(n: usize, what: &str) -> u32 {
    match u32::try_from(n) {
        Ok(n) => n,
        Err(_) => panic!("bucket {what} {n} does not fit the layout's u32"),
    }
}

/// Decodes a bucket, calling `f(key, value)` per entry in key order. Checks
/// the tag, every length against the bytes left, strictly increasing keys
/// and that nothing trails.
pub fn decode_bucket(bytes: &[u8], mut f: impl FnMut(&[u8], &[u8])) -> Result<usize, BucketError> {
    let err = |offset: usize, what: String| BucketError {
        len: bytes.len(),
        offset,
        what,
    };
    match bytes.first() {
        Some(&BUCKET_FORMAT_V1) => {}
        Some(&t) => {
            return Err(err(
                0,
                format!("version tag {t}, expected {BUCKET_FORMAT_V1}"),
            ))
        }
        None => return Err(err(0, "empty value, expected a version tag".into())),
    }
    let mut pos = 1;
    let take =
        |pos: &mut usize, n: usize, what: &str| -> Result<std::ops::Range<usize>, BucketError> {
            let left = bytes.len() - *pos;
            if n > left {
                return Err(err(*pos, format!("{what} needs {n} bytes, {left} left")));
            }
            let r = *pos..*pos + n;
            *pos += n;
            Ok(r)
        };
    let u32_at = |pos: &mut usize, what: &str| -> Result<usize, BucketError> {
        let r = take(pos, 4, what)?;
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[r]);
        Ok(u32::from_le_bytes(w) as usize)
    };
    let count = u32_at(&mut pos, "entry count")?;
    let mut prev: Option<std::ops::Range<usize>> = None;
    for i in 0..count {
        let at = pos;
        let klen = u32_at(&mut pos, "key length")?;
        let k = take(&mut pos, klen, "key")?;
        let vlen = u32_at(&mut pos, "value length")?;
        let v = take(&mut pos, vlen, "value")?;
        if let Some(p) = &prev {
            if bytes[p.clone()] >= bytes[k.clone()] {
                return Err(err(
                    at,
                    format!("entry {i}: keys out of order (expected strictly increasing)"),
                ));
            }
        }
        f(&bytes[k.clone()], &bytes[v]);
        prev = Some(k);
    }
    if pos != bytes.len() {
        return Err(err(
            pos,
            format!("{} trailing bytes after {count} entries", bytes.len() - pos),
        ));
    }
    Ok(count)
}

/// Decodes a bucket into memory.
pub fn decode_bucket_map(bytes: &[u8]) -> Result<Bucket, BucketError> {
    let mut b = Bucket::new();
    decode_bucket(bytes, |k, v| {
        b.insert(k.to_vec(), v.to_vec());
    })?;
    Ok(b)
}

/// The outcome of [`rebucket`]: the new addressing and key count, and every
/// bucket that changed (an empty one is to be removed).
#[derive(Debug, Default)]
pub struct Rebucketed {
    pub lh: LinearHash,
    pub keys: u64,
    pub buckets: BTreeMap<u64, Bucket>,
}

/// Applies `changes` (key, `Some(value)` upsert or `None` remove; later
/// ones win) to an operator with addressing `lh` and `keys` keys, then
/// splits buckets until at most `target` keys per bucket remain on
/// average. `load(b)` returns the stored bucket `b` (empty if none); it is
/// called at most once per bucket. Work: the touched buckets plus the
/// buckets split, never the whole state unless it (at least) doubled.
pub fn rebucket<E>(
    lh: LinearHash,
    keys: u64,
    changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    target: u64,
    mut load: impl FnMut(u64) -> Result<Bucket, E>,
) -> Result<Rebucketed, E> {
    let mut buckets: BTreeMap<u64, Bucket> = BTreeMap::new();
    // `keys` comes from disk: a wrong count must not panic or wrap (it
    // only steers splitting), so it saturates.
    let mut keys = keys;
    for (k, v) in changes {
        let b = lh.bucket_of(key_hash(&k));
        let bucket = match buckets.entry(b) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(load(b)?),
        };
        match v {
            Some(v) => {
                if bucket.insert(k, v).is_none() {
                    keys = keys.saturating_add(1);
                }
            }
            None => {
                if bucket.remove(&k).is_some() {
                    keys = keys.saturating_sub(1);
                }
            }
        }
    }
    // Grow: every bucket split on the way (old or new) changes address
    // for some of its keys; all others keep theirs.
    let old_n = lh.buckets();
    let mut new_lh = lh;
    let mut moved: BTreeSet<u64> = BTreeSet::new();
    while keys > new_lh.buckets().saturating_mul(target.max(1)) {
        match new_lh.split_next() {
            Some((from, new)) => {
                moved.insert(from);
                moved.insert(new);
            }
            None => break,
        }
    }
    let mut entries = Vec::new();
    for &b in moved.iter().filter(|&&b| b < old_n) {
        let bucket = match buckets.remove(&b) {
            Some(x) => x,
            None => load(b)?,
        };
        entries.extend(bucket);
    }
    for &b in &moved {
        buckets.entry(b).or_default();
    }
    for (k, v) in entries {
        let b = new_lh.bucket_of(key_hash(&k));
        buckets.entry(b).or_default().insert(k, v);
    }
    let r = Rebucketed {
        lh: new_lh,
        keys,
        buckets,
    };
    r.assert_sound(target);
    Ok(r)
}

impl Rebucketed {
    /// Asserts what the store is about to write: addressing within its
    /// limits, every bucket addressable, and no more keys per bucket than
    /// `target` unless the addressing is at its last level.
    fn assert_sound(&self, target: u64) {
        let lh = self.lh;
        assert!(lh.level <= LEVEL_MAX && lh.split < 1u64 << lh.level);
        assert!(self.buckets.keys().all(|&b| b < lh.buckets()));
        assert!(
            self.keys <= lh.buckets().saturating_mul(target.max(1)) || lh.level == LEVEL_MAX,
            "{} keys left in {} buckets of target {target}",
            self.keys,
            lh.buckets()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addressing_is_fixed_by_the_format() {
        // The hash decides where stored keys are found: it must never change.
        assert_eq!(key_hash(b""), 17_665_956_581_633_026_203);
        assert_eq!(key_hash(b"word"), key_hash(b"word"));
        let lh = LinearHash { level: 2, split: 1 };
        assert_eq!(lh.buckets(), 5);
        assert_eq!(lh.bucket_of(0b1100), 4); // low 2 bits 0 < split: 3 bits
        assert_eq!(lh.bucket_of(0b1101), 1);
    }

    #[test]
    fn bucket_bytes_round_trip_and_damage_is_located() {
        let mut b = Bucket::new();
        b.insert(b"a".to_vec(), b"1".to_vec());
        b.insert(b"bc".to_vec(), vec![]);
        let bytes = encode_bucket(&b);
        assert_eq!(
            bytes,
            [
                1, 2, 0, 0, 0, 1, 0, 0, 0, b'a', 1, 0, 0, 0, b'1', 2, 0, 0, 0, b'b', b'c', 0, 0, 0,
                0
            ]
        );
        assert_eq!(decode_bucket_map(&bytes), Ok(b));
        let e = decode_bucket_map(&bytes[..bytes.len() - 1]).expect_err("short");
        assert_eq!(e.offset, 21);
        assert!(e.what.contains("value length needs 4 bytes, 3 left"), "{e}");
        let mut swapped = bytes.clone();
        swapped[9] = b'c';
        assert!(decode_bucket_map(&swapped)
            .expect_err("order")
            .what
            .contains("out of order"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(decode_bucket_map(&long)
            .expect_err("trail")
            .what
            .contains("trailing"));
        assert!(decode_bucket_map(&[2])
            .expect_err("tag")
            .what
            .contains("tag 2"));
    }

    fn apply_model(
        stored: &mut BTreeMap<u64, Bucket>,
        lh: &mut LinearHash,
        keys: &mut u64,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        target: u64,
    ) -> usize {
        let mut loads = BTreeSet::new();
        let r = rebucket(*lh, *keys, changes, target, |b| {
            assert!(loads.insert(b), "bucket {b} loaded twice");
            Ok::<_, ()>(stored.get(&b).cloned().unwrap_or_default())
        })
        .expect("rebucket");
        for (b, bucket) in r.buckets {
            if bucket.is_empty() {
                stored.remove(&b);
            } else {
                stored.insert(b, bucket);
            }
        }
        *lh = r.lh;
        *keys = r.keys;
        loads.len()
    }

    proptest! {
        /// Against a plain map: every key is in the bucket its hash
        /// addresses, nothing is lost, buckets stay near the target.
        #[test]
        fn rebucketing_matches_a_plain_map(
            batches in prop::collection::vec(
                prop::collection::vec((0u16..400, prop::option::of(0u8..=255)), 0..120), 1..12),
            target in 1u64..8,
        ) {
            let mut stored: BTreeMap<u64, Bucket> = BTreeMap::new();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let (mut lh, mut keys) = (LinearHash::default(), 0u64);
            for batch in batches {
                let changes: Vec<(Vec<u8>, Option<Vec<u8>>)> = batch
                    .into_iter()
                    .map(|(k, v)| (k.to_le_bytes().to_vec(), v.map(|v| vec![v])))
                    .collect();
                for (k, v) in &changes {
                    match v {
                        Some(v) => { model.insert(k.clone(), v.clone()); }
                        None => { model.remove(k); }
                    }
                }
                apply_model(&mut stored, &mut lh, &mut keys, changes, target);
                prop_assert_eq!(keys, model.len() as u64);
                prop_assert!(keys <= lh.buckets() * target);
                let mut all = BTreeMap::new();
                for (b, bucket) in &stored {
                    prop_assert!(*b < lh.buckets());
                    for (k, v) in bucket {
                        prop_assert_eq!(lh.bucket_of(key_hash(k)), *b);
                        all.insert(k.clone(), v.clone());
                    }
                }
                prop_assert_eq!(&all, &model);
            }
        }
    }

    #[test]
    fn a_small_change_to_a_large_state_touches_few_buckets() {
        let mut stored = BTreeMap::new();
        let (mut lh, mut keys) = (LinearHash::default(), 0);
        let big: Vec<_> = (0u32..20_000)
            .map(|i| (i.to_le_bytes().to_vec(), Some(vec![1])))
            .collect();
        apply_model(&mut stored, &mut lh, &mut keys, big, 64);
        assert_eq!(keys, 20_000);
        assert!(lh.buckets() >= 20_000 / 64 && lh.buckets() <= 2 * 20_000 / 64 + 1);
        let loads = apply_model(
            &mut stored,
            &mut lh,
            &mut keys,
            vec![(5u32.to_le_bytes().to_vec(), Some(vec![2]))],
            64,
        );
        assert_eq!(loads, 1);
    }
}
