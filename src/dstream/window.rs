//! Window operators.
//!
//! How windows survive a restart: each window keeps its parent's per-batch
//! results as **panes** in operator state (`<window name>.panes`, keyed by
//! batch time, one pane per parent batch, panes older than the window (plus
//! one slide for inverse reduces) are removed in the same commit that adds
//! the new one). A recovered window is rebuilt from its panes; sources are
//! never re-read for past batches. `reduce_by_key_and_window` keeps per-batch
//! *reduced* panes, so its state is one value per key per batch, not the raw
//! records.
//!
//! Limits: a window holds `window / parent slide` panes (plus
//! `slide / parent slide` for inverse reduces). Must never: accept a window
//! or slide that is not a positive multiple of the batch interval and of
//! its input's slide.

use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::eval::{BatchCtx, MatParts, PartFn, Parts, Stream};
use super::graph::{NodeId, StatefulEntry};
use super::pair::Key;
use super::state::{push_partition_changes, KvDecoder, KvDelta, KvState};
use super::{meta, DStream, Data, EngineError};

/// A type that can be persisted in operator state.
pub trait Persist: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Persist for T {}

/// One parent batch kept by a window, shared without copying.
#[derive(Debug, Clone)]
pub struct Pane<T>(pub Parts<T>);

impl<T: Serialize> Serialize for Pane<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Pane<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Vec<T>>::deserialize(d).map(|v| Pane(Arc::new(v)))
    }
}

type PaneMap<T> = BTreeMap<u64, Parts<T>>;

/// The stateful pane store of one window.
pub(crate) struct PaneStore<T> {
    id: NodeId,
    parent: Arc<dyn Stream<T>>,
    retain_ms: u64,
}

impl<T: Data + Persist> PaneStore<T> {
    /// Committed panes newer than `t - retain` plus the pane for now.
    fn get(&self, ctx: &BatchCtx) -> Result<Arc<PaneMap<T>>, EngineError> {
        ctx.memo(self.id, || {
            let t = ctx.time_ms;
            let name = ctx.name(self.id).to_string();
            let horizon = t.saturating_sub(self.retain_ms);
            let mut panes: PaneMap<T> = BTreeMap::new();
            let mut changes = Vec::new();
            if let Some(st) = ctx.state.get::<KvState<u64, Pane<T>>>(&name)? {
                for (&time, pane) in st.iter() {
                    if time > horizon && time < t {
                        panes.insert(time, pane.0.clone());
                    } else if time <= horizon {
                        changes.push((time, None));
                    }
                }
            }
            let d = self.parent.prepare(ctx)?;
            let now: Parts<T> = Arc::new(ctx.collect(&*d)?);
            panes.insert(t, now.clone());
            changes.push((t, Some(Pane(now))));
            ctx.push_delta(Box::new(KvDelta {
                op: name,
                partitions: ctx.partitions(),
                changes,
            }));
            Ok(panes)
        })
    }
}

pub(crate) fn duration_ms<T>(d: &DStream<T>, what: &str, v: Duration) -> u64 {
    let ms = v.as_millis() as u64;
    if !v.subsec_nanos().is_multiple_of(1_000_000) {
        d.g.problem(
            d.id,
            format!("{what} {v:?} is not a whole number of milliseconds"),
        );
    }
    ms
}

impl<T: Data + Persist> DStream<T> {
    /// Registers a pane store over this stream (an internal node).
    pub(crate) fn pane_store(&self, retain_ms: u64) -> (NodeId, Arc<PaneStore<T>>) {
        let id = self.g.add_node(meta(
            "window_panes",
            vec![self.id],
            self.slide_ms(),
            vec![("retain_ms", retain_ms.to_string())],
        ));
        self.g.set_stateful(id);
        let store = Arc::new(PaneStore {
            id,
            parent: self.s.clone(),
            retain_ms,
        });
        let s2 = store.clone();
        self.g.add_stateful(StatefulEntry {
            node: id,
            input_slide_ms: self.slide_ms(),
            force: Arc::new(move |ctx: &BatchCtx| s2.get(ctx).map(|_| ())),
            decoder: Arc::new(KvDecoder::<u64, Pane<T>>(PhantomData)),
        });
        (id, store)
    }

    /// Checks window and slide lengths against the batch interval and the
    /// parent's slide; problems are reported at start naming `on`.
    pub(crate) fn check_window(&self, on: NodeId, window_ms: u64, slide_ms: u64) {
        let interval = self.g.interval_ms();
        let parent = self.slide_ms();
        for (what, v) in [("window length", window_ms), ("slide length", slide_ms)] {
            if v == 0 {
                self.g.problem(on, format!("{what} must be positive"));
            } else if v % interval != 0 {
                self.g.problem(
                    on,
                    format!("{what} {v} ms is not a multiple of the batch interval {interval} ms"),
                );
            } else if v % parent != 0 {
                self.g.problem(
                    on,
                    format!("{what} {v} ms is not a multiple of its input's slide {parent} ms"),
                );
            }
        }
    }

    /// All records of the last `window` of batches, every `slide`. Both
    /// must be multiples of the batch interval.
    pub fn window(&self, window: Duration, slide: Duration) -> DStream<T> {
        let (w, s) = (
            duration_ms(self, "window", window),
            duration_ms(self, "slide", slide),
        );
        let (panes_id, store) = self.pane_store(w);
        let out = self.new_node(
            meta(
                "window",
                vec![panes_id],
                s.max(1),
                vec![("window_ms", w.to_string()), ("slide_ms", s.to_string())],
            ),
            |id| {
                Arc::new(WindowStream {
                    id,
                    store,
                    window_ms: w,
                })
            },
        );
        self.g.compose(
            out.id,
            "window",
            vec![("window_ms", w.to_string()), ("slide_ms", s.to_string())],
            vec![self.id],
            &[(panes_id, "panes")],
        );
        self.check_window(out.id, w, s);
        out
    }

    /// Number of records in each window, as Spark's `countByWindow`:
    /// `map(|_| 1)` then [`reduce_by_window_inv`](Self::reduce_by_window_inv)
    /// with `+` and `-`. So it emits nothing (an empty batch) for windows
    /// before the stream's first record, and `0` for a window that has
    /// become empty after it. The state is one count per batch of the
    /// window, never the records.
    pub fn count_by_window(&self, window: Duration, slide: Duration) -> DStream<u64> {
        let ones = self.map(|_| 1u64);
        let out = ones.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, window, slide);
        let params = self.g.lock().nodes[out.id].params.clone();
        self.g.compose(
            out.id,
            "count_by_window",
            params,
            vec![self.id],
            &[(ones.id, "ones")],
        );
        out
    }

    /// All records of each window combined with the associative `f`
    /// (each batch is reduced first; the window keeps one value per batch).
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> DStream<T> {
        let f = Arc::new(f);
        let (f1, f2) = (f.clone(), f.clone());
        let batch = self.reduce(move |a, b| f1(a, b));
        let win = batch.window(window, slide);
        let out = win.reduce(move |a, b| f2(a, b));
        let params = self.g.lock().nodes[win.id].params.clone();
        self.g.compose(
            out.id,
            "reduce_by_window",
            params,
            vec![self.id],
            &[(batch.id, "batch"), (win.id, "window")],
        );
        out
    }

    /// [`reduce_by_window`](Self::reduce_by_window) maintained
    /// incrementally (Spark's `reduceByWindow(reduce, invReduce, window,
    /// slide)`): the previous window's value, plus `f` of the batches
    /// entering, "minus" `inv` of the batches leaving. `inv` must undo `f`
    /// (`inv(f(a, b), b) == a`). As in Spark, once the stream has seen a
    /// record it emits one value at every slide, even when the window has
    /// since become empty (then the "zero" `inv` leaves, e.g. `0`); before
    /// the first record it emits nothing.
    pub fn reduce_by_window_inv(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        inv: impl Fn(T, T) -> T + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> DStream<T> {
        // One key for the whole stream, as Spark does it.
        let pairs = self.map(|x| ((), x));
        let reduced =
            pairs.reduce_by_key_and_window_inv(f, inv, window, slide, None::<fn(&((), T)) -> bool>);
        let out = reduced.map(|(_, v)| v);
        let params = self.g.lock().nodes[reduced.id].params.clone();
        self.g.compose(
            out.id,
            "reduce_by_window",
            params.into_iter().filter(|(k, _)| *k != "filter").collect(),
            vec![self.id],
            &[(pairs.id, "pairs"), (reduced.id, "reduced")],
        );
        out
    }

    pub(crate) fn compose_over<U, W>(
        &self,
        out: &DStream<U>,
        kind: &'static str,
        win: &DStream<W>,
        role: &'static str,
    ) {
        let params = {
            let g = self.g.lock();
            g.nodes[win.id].params.clone()
        };
        self.g
            .compose(out.id, kind, params, vec![self.id], &[(win.id, role)]);
    }
}

impl<T: Data + Persist + std::hash::Hash + Eq + Ord> DStream<T> {
    /// Count of each distinct record over the window (kept incrementally
    /// with an inverse reduce; keys whose count drops to 0 are removed).
    pub fn count_by_value_and_window(
        &self,
        window: Duration,
        slide: Duration,
    ) -> DStream<(T, u64)> {
        let pairs = self.map(|x| (x, 1u64));
        let out = pairs.reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            window,
            slide,
            Some(|(_, c): &(T, u64)| *c > 0),
        );
        let params = self.g.lock().nodes[out.id].params.clone();
        let inner: Vec<(NodeId, &'static str)> = vec![(pairs.id, "pairs")];
        self.g.compose(
            out.id,
            "count_by_value_and_window",
            params,
            vec![self.id],
            &inner,
        );
        out
    }
}

struct WindowStream<T> {
    id: NodeId,
    store: Arc<PaneStore<T>>,
    window_ms: u64,
}

impl<T: Data + Persist> Stream<T> for WindowStream<T> {
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<T>>, EngineError> {
        let parts = ctx.memo(self.id, || {
            let panes = self.store.get(ctx)?;
            let from = ctx.time_ms.saturating_sub(self.window_ms);
            let n = panes.values().map(|p| p.len()).max().unwrap_or(0);
            let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
            for (_, pane) in panes_between(&panes, from, ctx.time_ms) {
                for (i, part) in pane.iter().enumerate() {
                    out[i].extend(part.iter().cloned());
                }
            }
            Ok(Arc::new(out))
        })?;
        Ok(Arc::new(MatParts((*parts).clone())))
    }
}

impl<K: Key + Persist, V: Data + Persist> DStream<(K, V)> {
    /// Per-key reduce over a sliding window, recomputed from the window's
    /// per-batch reduced panes at every slide.
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
    ) -> DStream<(K, V)> {
        let f = Arc::new(f);
        let (f1, f2) = (f.clone(), f.clone());
        let batch = self.reduce_by_key(move |a, b| f1(a, b));
        let win = batch.window(window, slide);
        let out = win.reduce_by_key(move |a, b| f2(a, b));
        let params = self.g.lock().nodes[win.id].params.clone();
        self.g.compose(
            out.id,
            "reduce_by_key_and_window",
            params,
            vec![self.id],
            &[(batch.id, "batch"), (win.id, "window")],
        );
        out
    }

    /// All values per key over a sliding window.
    pub fn group_by_key_and_window(
        &self,
        window: Duration,
        slide: Duration,
    ) -> DStream<(K, Vec<V>)> {
        let win = self.window(window, slide);
        let out = win.group_by_key();
        self.compose_over(&out, "group_by_key_and_window", &win, "window");
        out
    }
}

impl<K: Key + Persist + Ord, V: Data + Persist> DStream<(K, V)> {
    /// Per-key reduce over a sliding window, maintained incrementally: the
    /// previous window's values, plus `f` of the batches entering, "minus"
    /// `inv` of the batches leaving (Spark's reduceByKeyAndWindow with an
    /// inverse function). Keys for which `filter` returns false are dropped
    /// from the state. Keyed by the operator's name; output per partition
    /// in key order.
    pub fn reduce_by_key_and_window_inv<F>(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        inv: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: Duration,
        slide: Duration,
        filter: Option<F>,
    ) -> DStream<(K, V)>
    where
        F: Fn(&(K, V)) -> bool + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let f1 = f.clone();
        let batch = self.reduce_by_key(move |a, b| f1(a, b));
        let (w, s) = (
            duration_ms(self, "window", window),
            duration_ms(self, "slide", slide),
        );
        let (panes_id, store) = batch.pane_store(w + s);
        let params = vec![
            ("window_ms", w.to_string()),
            ("slide_ms", s.to_string()),
            ("inverse", "true".to_string()),
            ("filter", filter.is_some().to_string()),
        ];
        let inv = Arc::new(inv);
        let filter = filter.map(Arc::new);
        let out: DStream<(K, V)> = self.materialized(
            meta(
                "reduce_by_key_and_window",
                vec![panes_id],
                s.max(1),
                params.clone(),
            ),
            move |id| {
                move |ctx: &BatchCtx| {
                    inverse_window(ctx, id, &store, w, s, &*f, &*inv, filter.as_deref())
                }
            },
        );
        self.g.set_stateful(out.id);
        self.g.add_stateful(StatefulEntry {
            node: out.id,
            input_slide_ms: s.max(1),
            force: {
                let st = out.s.clone();
                Arc::new(move |ctx: &BatchCtx| st.prepare(ctx).map(|_| ()))
            },
            decoder: Arc::new(KvDecoder::<K, V>(PhantomData)),
        });
        self.g.compose(
            out.id,
            "reduce_by_key_and_window",
            params,
            vec![self.id],
            &[(batch.id, "batch"), (panes_id, "panes")],
        );
        batch.check_window(out.id, w, s);
        out
    }
}

/// Panes with times in `(after, until]`.
fn panes_between<T>(
    panes: &PaneMap<T>,
    after: u64,
    until: u64,
) -> impl Iterator<Item = (&u64, &Parts<T>)> {
    let r = if after < until {
        Some(panes.range(after + 1..=until))
    } else {
        None
    };
    r.into_iter().flatten()
}

#[allow(clippy::too_many_arguments)]
fn inverse_window<K, V, F>(
    ctx: &BatchCtx,
    id: NodeId,
    store: &PaneStore<(K, V)>,
    w: u64,
    s: u64,
    f: &(dyn Fn(V, V) -> V + Send + Sync),
    inv: &(dyn Fn(V, V) -> V + Send + Sync),
    filter: Option<&F>,
) -> Result<Vec<Vec<(K, V)>>, EngineError>
where
    K: Key + Persist + Ord,
    V: Data + Persist,
    F: Fn(&(K, V)) -> bool + Send + Sync,
{
    let t = ctx.time_ms;
    let name = ctx.name(id).to_string();
    let panes = store.get(ctx)?;
    let prev = ctx.state.get::<KvState<K, V>>(&name)?;
    let r = ctx.partitions();
    if prev.is_some_and(|p| p.parts.len() != r) || panes.values().any(|p| p.len() != r) {
        return Err(EngineError::StateType { op: name });
    }
    let win_from = t.saturating_sub(w);
    let results = ctx.par_map(r, |i| {
        let mut cur: BTreeMap<K, V> = BTreeMap::new();
        let mut touched: BTreeSet<K> = BTreeSet::new();
        let merge = |cur: &mut BTreeMap<K, V>, k: &K, v: &V| {
            let nv = match cur.remove(k) {
                Some(old) => f(old, v.clone()),
                None => v.clone(),
            };
            cur.insert(k.clone(), nv);
        };
        match prev {
            None => {
                for (_, pane) in panes_between(&panes, win_from, t) {
                    for (k, v) in &pane[i] {
                        merge(&mut cur, k, v);
                        touched.insert(k.clone());
                    }
                }
            }
            Some(p) => {
                cur = p.parts[i].clone();
                let old_from = t.saturating_sub(w + s);
                for (_, pane) in panes_between(&panes, old_from, win_from) {
                    for (k, v) in &pane[i] {
                        if let Some(old) = cur.remove(k) {
                            cur.insert(k.clone(), inv(old, v.clone()));
                            touched.insert(k.clone());
                        }
                    }
                }
                for (_, pane) in panes_between(&panes, t.saturating_sub(s), t) {
                    for (k, v) in &pane[i] {
                        merge(&mut cur, k, v);
                        touched.insert(k.clone());
                    }
                }
            }
        }
        let mut changes = Vec::new();
        for k in touched {
            let keep = match (cur.get(&k), filter) {
                (Some(v), Some(fl)) => fl(&(k.clone(), v.clone())),
                (Some(_), None) => true,
                (None, _) => false,
            };
            if keep {
                changes.push((k.clone(), cur.get(&k).cloned()));
            } else {
                cur.remove(&k);
                changes.push((k, None));
            }
        }
        (cur.into_iter().collect::<Vec<_>>(), changes)
    });
    Ok(push_partition_changes(ctx, name, results))
}
