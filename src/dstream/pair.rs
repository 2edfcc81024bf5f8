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

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use super::eval::{BatchCtx, PartFn};
use super::hash::{partition_of, FxBuild, OrderedMap};
use super::{meta, DStream, Data};

/// A key type: hashable, comparable for equality, shareable.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// Combines values per key: map side per input partition, then shuffles
/// the partial combiners into `ctx.partitions()` partitions and merges them.
pub(crate) fn shuffle_combine<K, V, C, FC, FV, FM>(
    ctx: &BatchCtx,
    d: &dyn PartFn<(K, V)>,
    create: &FC,
    merge_value: &FV,
    merge_combiners: &FM,
) -> Vec<Vec<(K, C)>>
where
    K: Key,
    V: Data,
    C: Data,
    FC: Fn(V) -> C + Sync,
    FV: Fn(&mut C, V) + Sync,
    FM: Fn(&mut C, C) + Sync,
{
    let r = ctx.partitions();
    let mapped: Vec<Vec<Vec<(K, C)>>> = ctx.par_map(d.parts(), |p| {
        // Map-side combine into a plain hash map (entries inline: one probe
        // per record); `order` remembers keys in order of first appearance
        // so the output order never depends on hashing.
        let mut m: HashMap<K, C, FxBuild> = HashMap::default();
        let mut order: Vec<K> = Vec::new();
        d.run(p, &mut |(k, v)| match m.get_mut(&k) {
            Some(c) => merge_value(c, v),
            None => {
                order.push(k.clone());
                m.insert(k, create(v));
            }
        });
        let entries = order.into_iter().filter_map(|k| m.remove_entry(&k));
        let mut out: Vec<Vec<(K, C)>> = (0..r).map(|_| Vec::new()).collect();
        if r == 1 {
            out[0] = entries.collect();
        } else {
            for (k, c) in entries {
                out[partition_of(&k, r)].push((k, c));
            }
        }
        out
    });
    let mut by_reducer: Vec<Vec<Vec<(K, C)>>> = (0..r).map(|_| Vec::new()).collect();
    for buckets in mapped {
        for (i, b) in buckets.into_iter().enumerate() {
            by_reducer[i].push(b);
        }
    }
    let slots: Vec<Mutex<Vec<Vec<(K, C)>>>> = by_reducer.into_iter().map(Mutex::new).collect();
    ctx.par_map(r, |i| {
        let buckets = std::mem::take(&mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()));
        let mut it = buckets.into_iter().filter(|b| !b.is_empty());
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut m: OrderedMap<K, C> = first.into_iter().collect();
        for b in it {
            for (k, c) in b {
                match m.entry(k) {
                    indexmap::map::Entry::Occupied(e) => merge_combiners(e.into_mut(), c),
                    indexmap::map::Entry::Vacant(e) => {
                        e.insert(c);
                    }
                }
            }
        }
        m.into_iter().collect()
    })
}

/// Groups both sides by key into the same partitions.
#[allow(clippy::type_complexity)]
pub(crate) fn cogroup_parts<K: Key, V: Data, W: Data>(
    ctx: &BatchCtx,
    a: &dyn PartFn<(K, V)>,
    b: &dyn PartFn<(K, W)>,
) -> Vec<Vec<(K, (Vec<V>, Vec<W>))>> {
    let ga = group(ctx, a);
    let gb = group(ctx, b);
    let slots: Vec<Mutex<(Vec<(K, Vec<V>)>, Vec<(K, Vec<W>)>)>> =
        ga.into_iter().zip(gb).map(Mutex::new).collect();
    ctx.par_map(slots.len(), |i| {
        let (la, lb) = std::mem::take(&mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()));
        let mut m: OrderedMap<K, (Vec<V>, Vec<W>)> = OrderedMap::default();
        for (k, vs) in la {
            m.insert(k, (vs, Vec::new()));
        }
        for (k, ws) in lb {
            m.entry(k).or_insert_with(|| (Vec::new(), Vec::new())).1 = ws;
        }
        m.into_iter().collect()
    })
}

pub(crate) fn group<K: Key, V: Data>(
    ctx: &BatchCtx,
    d: &dyn PartFn<(K, V)>,
) -> Vec<Vec<(K, Vec<V>)>> {
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
                    Ok(shuffle_combine(
                        ctx,
                        &*d,
                        &create,
                        &merge_value,
                        &merge_combiners,
                    ))
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
                        return Ok(shuffle_combine(ctx, &*d, &|v| v, &merge, &merge));
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
                    );
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
                    Ok(group(ctx, &*d))
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
                    let groups = cogroup_parts(ctx, &*da, &*db);
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
