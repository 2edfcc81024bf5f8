//! Operations on streams of key-value pairs: per-key combines (with a
//! map-side combine per partition before the hash shuffle), joins, cogroup.
//!
//! Determinism rule: a keyed result has `partitions` partitions, key `k` in
//! partition `partition_of(k)`; inside a partition keys appear in the order
//! of their first occurrence in the input (input partitions in order,
//! records in order), and grouped values keep input order. Hashing never
//! decides an order.
//!
//! Limits: a shuffle holds one batch's partial combiners (at most one per
//! distinct key per input partition). Must never: iterate a hash map to
//! produce output.

use std::hash::Hash;
use std::sync::{Arc, Mutex};

use super::eval::{BatchCtx, PartFn};
use super::hash::{partition_of, table_hash_with, table_hasher, OrderedMap};
use super::{meta, DStream, Data, EngineError};

/// A key type: hashable, comparable for equality, shareable.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// A per-key combine table that remembers the order of first appearance.
///
/// Entries live in a dense vector in order of first appearance (so output
/// order never depends on hashing, and the frequent keys of a skewed input,
/// inserted early, share a few cache lines); an open-addressing index
/// (linear probing, power-of-two size, at most 3/4 full) maps a hash to
/// the entry. A slot is one `u64`: the top half of the key's hash and the
/// entry's index + 1 (0 = empty), so most probes of other keys are
/// rejected without touching the entry. Every entry keeps its full hash:
/// growing the index never rehashes a key, and the reduce side merges by
/// the hash carried from the map side. The hash is the seeded
/// [`table_hash`](super::hash::table_hash) (crafted colliding keys cannot make probing quadratic);
/// partitions use the deterministic hash, once per distinct key.
///
/// Limits: fewer than `u32::MAX` entries. Must never: reorder entries.
pub(crate) struct Combiner<K, C> {
    slots: Vec<u64>,
    entries: Vec<(K, C)>,
    hashes: Vec<u64>,
}

impl<K: Eq, C> Combiner<K, C> {
    /// A table for about `n` keys before it first grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let slots = (n.max(8) * 4 / 3 + 1).next_power_of_two();
        Combiner {
            slots: vec![0; slots],
            entries: Vec::with_capacity(n),
            hashes: Vec::with_capacity(n),
        }
    }

    /// Hints the CPU to fetch the slot where a key with hash `h` starts
    /// probing (a few records ahead of [`Combiner::upsert`]).
    #[inline]
    pub(crate) fn prefetch(&self, h: u64) {
        let i = h as usize & (self.slots.len() - 1);
        prefetch_read(&self.slots[i]);
    }

    /// Merges `v` into the entry of `k` (hash `h`, from [`table_hash`](super::hash::table_hash)), or
    /// appends a new entry `create(v)`.
    #[inline(always)]
    pub(crate) fn upsert<V>(
        &mut self,
        h: u64,
        k: K,
        v: V,
        create: impl FnOnce(V) -> C,
        merge: impl FnOnce(&mut C, V),
    ) {
        let mask = self.slots.len() - 1;
        let tag = h & 0xFFFF_FFFF_0000_0000;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                break;
            }
            if s & 0xFFFF_FFFF_0000_0000 == tag {
                let e = &mut self.entries[(s as u32 - 1) as usize];
                if e.0 == k {
                    merge(&mut e.1, v);
                    return;
                }
            }
            i = (i + 1) & mask;
        }
        let n = self.entries.len();
        assert!(
            n < u32::MAX as usize - 1,
            "more than 2^32 keys in one table"
        );
        self.slots[i] = tag | (n as u64 + 1);
        self.entries.push((k, create(v)));
        self.hashes.push(h);
        if (n + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
    }

    /// The longest run of slots any entry's lookup walks (tests).
    #[cfg(test)]
    fn probe_max(&self) -> usize {
        let mask = self.slots.len() - 1;
        let mut longest = 0;
        for &h in &self.hashes {
            let mut i = h as usize & mask;
            let mut n = 1;
            while self.slots[i] != 0 && self.hashes[(self.slots[i] as u32 - 1) as usize] != h {
                i = (i + 1) & mask;
                n += 1;
            }
            longest = longest.max(n);
        }
        longest
    }

    /// Doubles the index, re-placing entries by their stored hashes.
    #[cold]
    fn grow(&mut self) {
        let len = self.slots.len() * 2;
        let mask = len - 1;
        self.slots.clear();
        self.slots.resize(len, 0);
        for (n, &h) in self.hashes.iter().enumerate() {
            let mut i = h as usize & mask;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (h & 0xFFFF_FFFF_0000_0000) | (n as u64 + 1);
        }
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries with their hashes, in order of first appearance.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (u64, K, C)> {
        self.hashes
            .into_iter()
            .zip(self.entries)
            .map(|(h, (k, c))| (h, k, c))
    }
}

/// Asks the CPU to bring `x`'s cache line closer; no effect on results.
#[inline(always)]
fn prefetch_read<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint: it never faults, reads nothing
        // into the program and writes nothing; `x` is a valid reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// How many records the map-side combine hashes ahead of inserting them,
/// so the index slot of each is (being) fetched by the time it is probed.
const PREFETCH_LAG: usize = 16;

/// Combines values per key: map side per input partition, then shuffles
/// the partial combiners into `ctx.partitions()` partitions and merges them.
pub(crate) fn shuffle_combine<K, V, C, FC, FV, FM>(
    ctx: &BatchCtx,
    d: &dyn PartFn<(K, V)>,
    create: &FC,
    merge_value: &FV,
    merge_combiners: &FM,
) -> Result<Vec<Vec<(K, C)>>, EngineError>
where
    K: Key,
    V: Data,
    C: Data,
    FC: Fn(V) -> C + Sync,
    FV: Fn(&mut C, V) + Sync,
    FM: Fn(&mut C, C) + Sync,
{
    let r = ctx.partitions();
    type Bucket<K, C> = Vec<(u64, K, C)>;
    let mapped: Vec<Vec<(usize, Bucket<K, C>)>> = ctx.par_map(d.parts(), |p| {
        // Map-side combine, in order of first appearance. Records wait in a
        // short FIFO between hashing and inserting while their slot is
        // prefetched; FIFO keeps the order of first appearance.
        let mut m: Combiner<K, C> = Combiner::with_capacity(1024);
        let mut ring: [Option<(u64, K, V)>; PREFETCH_LAG] = std::array::from_fn(|_| None);
        let mut pos = 0usize;
        let hasher = table_hasher();
        d.run(p, &mut |(k, v)| {
            let h = table_hash_with(hasher, &k);
            m.prefetch(h);
            let slot = &mut ring[pos % PREFETCH_LAG];
            pos = pos.wrapping_add(1);
            if let Some((h0, k0, v0)) = slot.replace((h, k, v)) {
                m.upsert(h0, k0, v0, create, merge_value);
            }
        });
        // The oldest waiting record is at `pos`.
        for i in 0..PREFETCH_LAG {
            if let Some((h, k, v)) = ring[(pos + i) % PREFETCH_LAG].take() {
                m.upsert(h, k, v, create, merge_value);
            }
        }
        split_by_partition(m.into_entries(), r)
    });
    ctx.check_reads()?;
    let mut by_reducer: Vec<Vec<Bucket<K, C>>> = (0..r).map(|_| Vec::new()).collect();
    for buckets in mapped {
        for (i, b) in buckets {
            by_reducer[i].push(b);
        }
    }
    let slots: Vec<Mutex<Vec<Bucket<K, C>>>> = by_reducer.into_iter().map(Mutex::new).collect();
    Ok(ctx.par_map(r, |i| {
        let buckets = std::mem::take(&mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()));
        let mut buckets = buckets.into_iter().filter(|b| !b.is_empty());
        let Some(first) = buckets.next() else {
            return Vec::new();
        };
        let rest: Vec<Bucket<K, C>> = buckets.collect();
        if rest.is_empty() {
            return first.into_iter().map(|(_, k, c)| (k, c)).collect();
        }
        // Reduce side: merge by the hashes carried from the map side.
        let mut m: Combiner<K, C> = Combiner::with_capacity(first.len() * 2);
        for (h, k, c) in first.into_iter().chain(rest.into_iter().flatten()) {
            m.upsert(h, k, c, |c| c, merge_combiners);
        }
        debug_assert!(m.len() > 0);
        m.into_entries().map(|(_, k, c)| (k, c)).collect()
    }))
}

/// Below this many partitions a map task splits its entries through one
/// bucket per partition; from it on, by sorting on the partition (so a task
/// costs O(its keys), never O(partitions): `parts × partitions` empty
/// buckets were the quadratic that made 16,384 partitions run out of
/// memory).
const DENSE_SPLIT_PARTITIONS_MAX: usize = 256;

/// Splits one map task's combined entries into the shuffle partitions:
/// only the non-empty buckets, as `(partition, entries)` in ascending
/// partition order, each bucket keeping the entries' order.
fn split_by_partition<K: Key, C>(
    entries: impl Iterator<Item = (u64, K, C)>,
    r: usize,
) -> Vec<(usize, Vec<(u64, K, C)>)> {
    if r == 1 {
        let all: Vec<_> = entries.collect();
        return if all.is_empty() {
            Vec::new()
        } else {
            vec![(0, all)]
        };
    }
    if r <= DENSE_SPLIT_PARTITIONS_MAX {
        let mut out: Vec<Vec<(u64, K, C)>> = (0..r).map(|_| Vec::new()).collect();
        // The deterministic partition hash: once per distinct key.
        for (h, k, c) in entries {
            out[partition_of(&k, r)].push((h, k, c));
        }
        return out
            .into_iter()
            .enumerate()
            .filter(|(_, b)| !b.is_empty())
            .collect();
    }
    let mut tagged: Vec<(usize, (u64, K, C))> = entries
        .map(|(h, k, c)| (partition_of(&k, r), (h, k, c)))
        .collect();
    tagged.sort_by_key(|(i, _)| *i); // stable: keeps first-appearance order
    let mut out: Vec<(usize, Vec<(u64, K, C)>)> = Vec::new();
    for (i, e) in tagged {
        debug_assert!(i < r);
        match out.last_mut() {
            Some((last, b)) if *last == i => b.push(e),
            _ => out.push((i, vec![e])),
        }
    }
    out
}

/// Groups both sides by key into the same partitions.
#[allow(clippy::type_complexity)]
pub(crate) fn cogroup_parts<K: Key, V: Data, W: Data>(
    ctx: &BatchCtx,
    a: &dyn PartFn<(K, V)>,
    b: &dyn PartFn<(K, W)>,
) -> Result<Vec<Vec<(K, (Vec<V>, Vec<W>))>>, EngineError> {
    let ga = group(ctx, a)?;
    let gb = group(ctx, b)?;
    let slots: Vec<Mutex<(Vec<(K, Vec<V>)>, Vec<(K, Vec<W>)>)>> =
        ga.into_iter().zip(gb).map(Mutex::new).collect();
    Ok(ctx.par_map(slots.len(), |i| {
        let (la, lb) = std::mem::take(&mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()));
        let mut m: OrderedMap<K, (Vec<V>, Vec<W>)> = OrderedMap::default();
        for (k, vs) in la {
            m.insert(k, (vs, Vec::new()));
        }
        for (k, ws) in lb {
            m.entry(k).or_insert_with(|| (Vec::new(), Vec::new())).1 = ws;
        }
        m.into_iter().collect()
    }))
}

pub(crate) fn group<K: Key, V: Data>(
    ctx: &BatchCtx,
    d: &dyn PartFn<(K, V)>,
) -> Result<Vec<Vec<(K, Vec<V>)>>, EngineError> {
    shuffle_combine(
        ctx,
        d,
        &|v| vec![v],
        &|c: &mut Vec<V>, v| c.push(v),
        &|c: &mut Vec<V>, o| c.extend(o),
    )
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// Applies `f` to every value, keeping keys.
    pub fn map_values<U: Data>(
        &self,
        f: impl Fn(V) -> U + Send + Sync + 'static,
    ) -> DStream<(K, U)> {
        self.narrow("map_values", move |(k, v), out| out((k, f(v))))
    }

    /// Replaces every value by the values of `f(value)`, keeping keys.
    pub fn flat_map_values<U: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> DStream<(K, U)>
    where
        I: IntoIterator<Item = U>,
    {
        self.narrow("flat_map_values", move |(k, v), out| {
            for u in f(v) {
                out((k.clone(), u))
            }
        })
    }

    /// Generic per-key combine (Spark's `combineByKey`).
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(&mut C, V) + Send + Sync + 'static,
        merge_combiners: impl Fn(&mut C, C) + Send + Sync + 'static,
    ) -> DStream<(K, C)> {
        let parent = self.s.clone();
        self.materialized(
            meta("combine_by_key", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    shuffle_combine(ctx, &*d, &create, &merge_value, &merge_combiners)
                }
            },
        )
    }

    /// Combines the values of each key with the associative `f`.
    pub fn reduce_by_key(&self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> DStream<(K, V)> {
        self.reduce_by_key_kind("reduce_by_key", f)
    }

    pub(crate) fn reduce_by_key_kind(
        &self,
        kind: &'static str,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> DStream<(K, V)> {
        let parent = self.s.clone();
        let f = Arc::new(f);
        self.materialized(
            meta(kind, vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    if !std::mem::needs_drop::<V>() {
                        // Plain-data values (counts, sums): combine in place,
                        // keeping hash-map entries small.
                        let merge = |c: &mut V, v: V| {
                            // SAFETY: `V` has no drop glue, so the bitwise
                            // copy read here and the bits left in `c` never
                            // cause a double drop, even if `f` panics (the
                            // slot then keeps its old, valid value).
                            unsafe {
                                let old = std::ptr::read(c);
                                std::ptr::write(c, f(old, v));
                            }
                        };
                        return shuffle_combine(ctx, &*d, &|v| v, &merge, &merge);
                    }
                    // Otherwise the combiner is an always-`Some` Option so
                    // `f` can take both values by value without `V: Default`.
                    let merge = |c: &mut Option<V>, v: Option<V>| {
                        if let (Some(a), Some(b)) = (c.take(), v) {
                            *c = Some(f(a, b));
                        }
                    };
                    let parts = shuffle_combine(
                        ctx,
                        &*d,
                        &Some,
                        &|c: &mut Option<V>, v: V| merge(c, Some(v)),
                        &merge,
                    )?;
                    Ok(parts
                        .into_iter()
                        .map(|p| {
                            p.into_iter()
                                .filter_map(|(k, v)| v.map(|v| (k, v)))
                                .collect()
                        })
                        .collect())
                }
            },
        )
    }

    /// All values of each key, in input order.
    pub fn group_by_key(&self) -> DStream<(K, Vec<V>)> {
        let parent = self.s.clone();
        self.materialized(
            meta("group_by_key", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    group(ctx, &*d)
                }
            },
        )
    }

    /// For each key, the values of both streams (Spark's `cogroup`).
    pub fn cogroup<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (Vec<V>, Vec<W>))> {
        self.join_kind(other, "cogroup", |k, vs, ws, out| out((k, (vs, ws))))
    }

    /// Pairs of values for keys present in both streams.
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, W))> {
        self.join_kind(other, "join", |k, vs, ws, out| {
            for v in &vs {
                for w in &ws {
                    out((k.clone(), (v.clone(), w.clone())))
                }
            }
        })
    }

    /// Every value of this stream, with the other's values or `None`.
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (V, Option<W>))> {
        self.join_kind(other, "left_outer_join", |k, vs, ws, out| {
            for v in &vs {
                if ws.is_empty() {
                    out((k.clone(), (v.clone(), None)))
                }
                for w in &ws {
                    out((k.clone(), (v.clone(), Some(w.clone()))))
                }
            }
        })
    }

    /// Every value of the other stream, with this one's values or `None`.
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, W))> {
        self.join_kind(other, "right_outer_join", |k, vs, ws, out| {
            for w in &ws {
                if vs.is_empty() {
                    out((k.clone(), (None, w.clone())))
                }
                for v in &vs {
                    out((k.clone(), (Some(v.clone()), w.clone())))
                }
            }
        })
    }

    /// Every key of either stream, with `None` on the side that lacks it.
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, Option<W>))> {
        self.join_kind(other, "full_outer_join", |k, vs, ws, out| {
            if ws.is_empty() {
                for v in &vs {
                    out((k.clone(), (Some(v.clone()), None)))
                }
            } else if vs.is_empty() {
                for w in &ws {
                    out((k.clone(), (None, Some(w.clone()))))
                }
            } else {
                for v in &vs {
                    for w in &ws {
                        out((k.clone(), (Some(v.clone()), Some(w.clone()))))
                    }
                }
            }
        })
    }

    fn join_kind<W: Data, O: Data>(
        &self,
        other: &DStream<(K, W)>,
        kind: &'static str,
        emit: impl Fn(K, Vec<V>, Vec<W>, &mut dyn FnMut(O)) + Send + Sync + 'static,
    ) -> DStream<O> {
        let (a, b) = (self.s.clone(), other.s.clone());
        let d = self.materialized(
            meta(kind, vec![self.id, other.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let da = a.prepare(ctx)?;
                    let db = b.prepare(ctx)?;
                    let groups = cogroup_parts(ctx, &*da, &*db)?;
                    let slots: Vec<Mutex<Vec<_>>> = groups.into_iter().map(Mutex::new).collect();
                    Ok(ctx.par_map(slots.len(), |i| {
                        let g = std::mem::take(
                            &mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()),
                        );
                        let mut out = Vec::new();
                        for (k, (vs, ws)) in g {
                            emit(k, vs, ws, &mut |o| out.push(o));
                        }
                        out
                    }))
                }
            },
        );
        d.check_same_slide(other);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dstream::hash::{hash_of, table_hash};
    use crate::Text;

    /// Keys `(a, b)` that all have the same fixed (partition) hash: the
    /// fixed hash folds words as `h = (rotl(h, 5) ^ w) * M`, so for any
    /// `a`, `b = rotl(a * M, 5) ^ C` gives the same final state.
    fn colliding_keys(n: u64) -> Vec<(u64, u64)> {
        const M: u64 = 0x517c_c1b7_2722_0a95;
        (1..=n)
            .map(|a| (a, a.wrapping_mul(M).rotate_left(5) ^ 0x00C0_FFEE))
            .collect()
    }

    #[test]
    fn keys_crafted_to_collide_do_not_collide_in_the_combine_table() {
        // Miri interprets ~1000x slower: 20,000 keys took it 5 minutes,
        // 2,000 still give one fixed hash and long unseeded chains.
        let keys = colliding_keys(if cfg!(miri) { 2_000 } else { 20_000 });
        let fixed: std::collections::HashSet<u64> = keys.iter().map(hash_of).collect();
        assert_eq!(
            fixed.len(),
            1,
            "the crafted keys collide under the fixed hash"
        );
        let seeded: std::collections::HashSet<u64> = keys.iter().map(table_hash).collect();
        assert_eq!(seeded.len(), keys.len(), "the table hash separates them");
        // Top halves (the slot tags) and the low bits (the start slots)
        // are spread too: probing stays short.
        let mut m: Combiner<(u64, u64), u64> = Combiner::with_capacity(0);
        for k in &keys {
            m.upsert(table_hash(k), *k, 1, |v| v, |c, v| *c += v);
        }
        assert_eq!(m.len(), keys.len());
        // Unseeded, the crafted keys would share one chain as long as
        // the key count. Seeded (a new seed each process), linear probing at a
        // load of up to 3/4 gives a longest chain of tens: 64 was passed
        // now and then (68 seen), so the bound sits well above chance
        // and far below the attack.
        assert!(m.probe_max() < 256, "longest probe {}", m.probe_max());
    }

    #[test]
    fn combiner_keeps_first_appearance_order_through_growth_and_collisions() {
        let mut m: Combiner<Text, u64> = Combiner::with_capacity(0);
        // Miri interprets ~1000x slower: fewer keys, still many doublings.
        let keys_n = if cfg!(miri) { 120 } else { 5000 };
        let keys: Vec<Text> = (0..keys_n)
            .map(|i| Text::new(&format!("k{i}{}", "x".repeat(i % 30))))
            .collect();
        for round in 0..3u64 {
            for (i, k) in keys.iter().enumerate() {
                // Every fourth key gets the same (colliding) hash, so probe
                // chains, equal tags and growth all get exercised.
                let h = if i % 4 == 0 {
                    0xABCD_0000_0000_0007
                } else {
                    hash_of(k)
                };
                m.prefetch(h);
                m.upsert(h, k.clone(), round + 1, |v| v, |c, v| *c += v);
            }
        }
        assert_eq!(m.len(), keys.len());
        let got: Vec<(u64, Text, u64)> = m.into_entries().collect();
        for (i, (h, k, c)) in got.iter().enumerate() {
            assert_eq!(*k, keys[i]);
            assert_eq!(*c, 6);
            assert_eq!(
                *h,
                if i % 4 == 0 {
                    0xABCD_0000_0000_0007
                } else {
                    hash_of(k)
                }
            );
        }
    }

    /// Runs `reduce_by_key(f)` over one batch of `records` through the
    /// engine (queue source, `partitions` partitions, sequential runner)
    /// and returns the output partitions.
    fn reduce_through_engine<V: Data>(
        records: Vec<(Text, V)>,
        partitions: usize,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Result<Vec<Vec<(Text, V)>>, EngineError> {
        use crate::dstream::{BatchCtx, Graph, Queue, SequentialRunner, Source, StateStore};
        let g = Graph::new(1000, partitions);
        let q = Queue::new();
        let n = records.len() as u64;
        q.push(records).expect("queue bound");
        let src: Arc<dyn Source<(Text, V)>> = Arc::new(q);
        let out: Arc<Mutex<Vec<Vec<(Text, V)>>>> = Arc::default();
        let sink = Arc::clone(&out);
        DStream::from_source(&g, "queue", src)
            .reduce_by_key(f)
            .add_output("test", move |_, parts| {
                *sink.lock().unwrap_or_else(|e| e.into_inner()) = parts;
                Ok(())
            })?;
        let plan = g.build()?;
        let state = StateStore::new();
        // One source, all of whose records are in this batch.
        let ranges = std::iter::once(0..n).collect();
        let ctx = BatchCtx::new(&plan, 1000, 0, ranges, &SequentialRunner, &state);
        plan.run_batch(&ctx, &mut Vec::new())?;
        let parts = std::mem::take(&mut *out.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(parts)
    }

    /// Keys on both sides of the inline limit (22 bytes), so shared texts
    /// are cloned into combiners, shuffled and dropped too.
    fn key(i: usize) -> Text {
        Text::new(&format!("key{i}{}", "-".repeat(i % 3 * 12)))
    }

    /// The in-place combine of plain-data values (the `unsafe` read/write
    /// of `reduce_by_key`) agrees with the `Option` path of values with
    /// drop glue, and with a model. Small enough for Miri (`.ci/run`).
    #[test]
    fn reduce_by_key_in_place_and_option_paths_agree() {
        let records: Vec<(Text, u64)> = (0..60).map(|i| (key(i % 7), i as u64)).collect();
        let mut want: Vec<(Text, u64)> = Vec::new();
        for (k, v) in &records {
            match want.iter_mut().find(|(w, _)| w == k) {
                Some((_, c)) => *c += v,
                None => want.push((k.clone(), *v)),
            }
        }
        assert!(!std::mem::needs_drop::<u64>() && std::mem::needs_drop::<String>());
        for partitions in [1, 3] {
            let plain = reduce_through_engine(records.clone(), partitions, |a, b| a + b)
                .expect("plain-data reduce");
            let boxed_in = records
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect();
            let boxed = reduce_through_engine(boxed_in, partitions, |a: String, b| {
                (a.parse::<u64>().unwrap_or(0) + b.parse::<u64>().unwrap_or(0)).to_string()
            })
            .expect("boxed reduce");
            assert_eq!(plain.len(), partitions);
            let mut got: Vec<(Text, u64)> = plain.into_iter().flatten().collect();
            let mut got_boxed: Vec<(Text, u64)> = boxed
                .into_iter()
                .flatten()
                .map(|(k, v)| (k, v.parse().unwrap_or(u64::MAX)))
                .collect();
            got.sort();
            got_boxed.sort();
            let mut want = want.clone();
            want.sort();
            assert_eq!(got, want, "{partitions} partitions");
            assert_eq!(got_boxed, want, "{partitions} partitions");
        }
    }

    /// Partition counts on both sides of the dense/sorted split agree with
    /// a model: every key in exactly one partition, the one its hash names,
    /// sums intact, and each partition's keys in order of first appearance.
    #[test]
    fn the_sorted_shuffle_split_agrees_with_the_dense_one() {
        // Miri runs this too (the split moves keys with `unsafe`): fewer
        // records and only the two counts either side of the boundary.
        let (n, distinct) = if cfg!(miri) { (100, 37) } else { (3000, 997) };
        let records: Vec<(Text, u64)> = (0..n).map(|i| (key(i % distinct), i as u64)).collect();
        let mut want: std::collections::HashMap<Text, (usize, u64)> = Default::default();
        for (i, (k, v)) in records.iter().enumerate() {
            want.entry(k.clone()).or_insert((i, 0)).1 += v;
        }
        let max = DENSE_SPLIT_PARTITIONS_MAX;
        let counts: &[usize] = if cfg!(miri) {
            &[max, max + 1]
        } else {
            &[max - 1, max, max + 1, 4 * max]
        };
        for &partitions in counts {
            let parts =
                reduce_through_engine(records.clone(), partitions, |a, b| a + b).expect("reduce");
            assert_eq!(parts.len(), partitions);
            let mut seen = 0;
            for (i, part) in parts.iter().enumerate() {
                let mut last_first = None;
                for (k, v) in part {
                    assert_eq!(
                        partition_of(k, partitions),
                        i,
                        "{k:?} in the wrong partition"
                    );
                    let (first, sum) = want[k];
                    assert_eq!(*v, sum, "{k:?} at {partitions} partitions");
                    assert!(last_first < Some(first), "order at {partitions}");
                    last_first = Some(first);
                    seen += 1;
                }
            }
            assert_eq!(seen, distinct, "{partitions} partitions");
        }
    }

    /// A combine function that panics half way through the in-place path
    /// leaves every slot valid: unwinding drops the keys (shared texts
    /// included) and values exactly once (Miri reports a double drop or a
    /// leak).
    #[test]
    fn reduce_by_key_survives_a_panicking_combine() {
        let records: Vec<(Text, u64)> = (0..40).map(|i| (key(i % 5), 1)).collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reduce_through_engine(records.clone(), 2, |a: u64, b| {
                assert!(a + b < 5, "combine refused {a} + {b}");
                a + b
            })
        }));
        assert!(result.is_err(), "the combine function panicked");
        // The same keys still combine once the function behaves.
        let parts = reduce_through_engine(records, 2, |a: u64, b| a + b).expect("reduce");
        let total: u64 = parts.iter().flatten().map(|(_, c)| c).sum();
        assert_eq!(total, 40);
    }
}
