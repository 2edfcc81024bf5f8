//! The stateful operator `map_with_state` (`update_state_by_key` is in
//! `update.rs`) and the registration both use.
//!
//! It keeps a [`KvState`] under its stable operator name, partitioned by
//! key hash like the shuffle, each partition in key order. Output order:
//! per partition, the mapped values of the batch's records (keys in order
//! of first appearance, records in input order; a function returning
//! `None` emits nothing for that call), then the values returned by
//! timing-out keys in key order; its
//! `state_snapshots()` emits the whole new state, per partition in key
//! order, computed on demand from the committed state and the batch's
//! changes.
//!
//! Limits: state is bounded only by the user's keys (`None`/`remove`/
//! timeouts drop keys). Must never: mutate committed state during a batch.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::eval::{BatchCtx, MatParts, PartFn, Parts, Stream};
use super::graph::{NodeId, StatefulEntry};
use super::pair::{group, Key};
use super::state::{KvDecoder, KvDelta, KvState};
use super::window::Persist;
use super::{meta, DStream, Data, EngineError};

/// The state of one key, as seen by a `map_with_state` function.
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timing_out: bool,
    misuse: Option<String>,
}

impl<S> State<S> {
    fn new(value: Option<S>, timing_out: bool) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out,
            misuse: None,
        }
    }

    /// The current state, if the key has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// Sets the key's state. Not allowed while the key is timing out (the
    /// batch then fails, like Spark's exception).
    pub fn update(&mut self, s: S) {
        if self.timing_out {
            self.misuse = Some("cannot update the state of a key that is timing out".into());
            return;
        }
        self.value = Some(s);
        self.updated = true;
        self.removed = false;
    }

    /// Removes the key's state. Not allowed while timing out (the state is
    /// removed anyway after the call).
    pub fn remove(&mut self) {
        if self.timing_out {
            self.misuse = Some("cannot remove the state of a key that is timing out".into());
            return;
        }
        self.value = None;
        self.removed = true;
        self.updated = false;
    }

    /// Whether this call is the key's timeout (no new value, last call).
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

type MapFn<K, V, S, U> = dyn Fn(u64, &K, Option<V>, &mut State<S>) -> Option<U> + Send + Sync;

/// What `map_with_state` does: the mapping function, an optional initial
/// state and an optional idle timeout (Spark's `StateSpec`).
pub struct StateSpec<K, V, S, U> {
    func: Arc<MapFn<K, V, S, U>>,
    initial: Vec<(K, S)>,
    timeout_ms: Option<u64>,
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// A spec calling `f(key, value, state)` once per record; with `value`
    /// `None` when the key times out.
    pub fn function(f: impl Fn(&K, Option<V>, &mut State<S>) -> U + Send + Sync + 'static) -> Self {
        Self::function_with_time(move |_, k, v, st| Some(f(k, v, st)))
    }

    /// A spec calling `f(batch_time_ms, key, value, state)` once per record
    /// (`value` `None` when the key times out); a `None` result emits no
    /// record for that call (Spark's `(time, key, value, state) =>
    /// Option[mapped]`).
    pub fn function_with_time(
        f: impl Fn(u64, &K, Option<V>, &mut State<S>) -> Option<U> + Send + Sync + 'static,
    ) -> Self {
        StateSpec {
            func: Arc::new(f),
            initial: Vec::new(),
            timeout_ms: None,
        }
    }

    /// State the operator starts from when it has no committed state.
    pub fn initial_state(mut self, initial: Vec<(K, S)>) -> Self {
        self.initial = initial;
        self
    }

    /// Keys that receive no data for longer than `idle` time out: checked
    /// at every batch, a key last updated at `u` times out at the first
    /// batch time `t` with `u < t - idle`.
    pub fn timeout(mut self, idle: Duration) -> Self {
        self.timeout_ms = Some(idle.as_millis() as u64);
        self
    }
}

impl<K: Key + Ord + Persist, V: Data> DStream<(K, V)> {
    /// Keeps a state per key, called only for keys with new data (once per
    /// record) and for keys timing out (every batch). Emits what the
    /// function returns; [`MapWithStateDStream::state_snapshots`] gives the
    /// whole state after each batch.
    pub fn map_with_state<S: Data + Persist, U: Data>(
        &self,
        spec: StateSpec<K, V, S, U>,
    ) -> MapWithStateDStream<K, S, U> {
        let parent = self.s.clone();
        let params = vec![(
            "timeout_ms",
            spec.timeout_ms
                .map_or("none".to_string(), |t| t.to_string()),
        )];
        let StateSpec {
            func,
            initial,
            timeout_ms,
        } = spec;
        let id = self.g.add_node(meta(
            "map_with_state",
            vec![self.id],
            self.slide_ms(),
            params,
        ));
        let op = Arc::new(MapWithStateOp {
            id,
            parent,
            func,
            initial,
            timeout_ms,
        });
        let out = DStream {
            g: self.g.clone(),
            id,
            s: op.clone() as Arc<dyn Stream<U>>,
        };
        out.register_stateful::<K, (S, u64)>(self.slide_ms());
        let snapshots: SnapshotFn<K, S, U> = Arc::new(move |out: &DStream<U>| {
            let op = op.clone();
            out.new_node(
                meta("state_snapshots", vec![out.id], out.slide_ms(), vec![]),
                move |id| Arc::new(Snapshots { id, op }),
            )
        });
        MapWithStateDStream {
            stream: out,
            snapshots,
        }
    }
}

type SnapshotFn<K, S, U> = Arc<dyn Fn(&DStream<U>) -> DStream<(K, S)> + Send + Sync>;

/// The stream `map_with_state` returns: the mapped values (it derefs to a
/// [`DStream<U>`]) plus [`state_snapshots`](Self::state_snapshots), as
/// Spark's `MapWithStateDStream`.
pub struct MapWithStateDStream<K, S, U> {
    stream: DStream<U>,
    snapshots: SnapshotFn<K, S, U>,
}

impl<K, S, U> Clone for MapWithStateDStream<K, S, U> {
    fn clone(&self) -> Self {
        MapWithStateDStream {
            stream: self.stream.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

impl<K, S, U> std::fmt::Debug for MapWithStateDStream<K, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("MapWithStateDStream")
            .field(&self.stream)
            .finish()
    }
}

impl<K, S, U> std::ops::Deref for MapWithStateDStream<K, S, U> {
    type Target = DStream<U>;
    fn deref(&self) -> &DStream<U> {
        &self.stream
    }
}

impl<K, S, U> From<MapWithStateDStream<K, S, U>> for DStream<U> {
    fn from(m: MapWithStateDStream<K, S, U>) -> DStream<U> {
        m.stream
    }
}

impl<K, S, U: Data> MapWithStateDStream<K, S, U> {
    /// Names the operator (its state is keyed by this name); see
    /// [`DStream::name`].
    pub fn name(self, name: &str) -> Self {
        MapWithStateDStream {
            stream: self.stream.name(name),
            snapshots: self.snapshots,
        }
    }

    /// The mapped values as a plain [`DStream`].
    pub fn into_stream(self) -> DStream<U> {
        self.stream
    }

    /// Every `(key, state)` after each batch's update (timed-out and
    /// removed keys excluded), per partition in key order: Spark's
    /// `stateSnapshots()`. Named `<map_with_state name>/state_snapshots`.
    pub fn state_snapshots(&self) -> DStream<(K, S)> {
        (self.snapshots)(&self.stream)
    }
}

/// One batch of `map_with_state`: the mapped values and, per partition,
/// the state changes in key order (`None` = removed).
struct MwsBatch<K, S, U> {
    outs: Parts<U>,
    changes: Vec<Changes<K, S>>,
}

struct MapWithStateOp<K, V, S, U> {
    id: NodeId,
    parent: Arc<dyn Stream<(K, V)>>,
    func: Arc<MapFn<K, V, S, U>>,
    initial: Vec<(K, S)>,
    timeout_ms: Option<u64>,
}

impl<K, V, S, U> MapWithStateOp<K, V, S, U>
where
    K: Key + Ord + Persist,
    V: Data,
    S: Data + Persist,
    U: Data,
{
    fn batch(&self, ctx: &BatchCtx) -> Result<Arc<MwsBatch<K, S, U>>, EngineError> {
        ctx.memo(self.id, || {
            map_with_state_batch(
                ctx,
                ctx.name(self.id),
                &self.parent,
                &*self.func,
                &self.initial,
                self.timeout_ms,
            )
        })
    }
}

impl<K, V, S, U> Stream<U> for MapWithStateOp<K, V, S, U>
where
    K: Key + Ord + Persist,
    V: Data,
    S: Data + Persist,
    U: Data,
{
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<U>>, EngineError> {
        Ok(Arc::new(MatParts(self.batch(ctx)?.outs.clone())))
    }
}

/// The state after a `map_with_state` batch: its committed state with the
/// batch's changes applied.
struct Snapshots<K, V, S, U> {
    id: NodeId,
    op: Arc<MapWithStateOp<K, V, S, U>>,
}

impl<K, V, S, U> Stream<(K, S)> for Snapshots<K, V, S, U>
where
    K: Key + Ord + Persist,
    V: Data,
    S: Data + Persist,
    U: Data,
{
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<(K, S)>>, EngineError> {
        let parts = ctx.memo(self.id, || {
            let b = self.op.batch(ctx)?;
            let prev = ctx
                .state
                .get::<KvState<K, (S, u64)>>(ctx.name(self.op.id))?;
            let parts = ctx.par_map(b.changes.len(), |i| {
                let mut m: BTreeMap<&K, &S> = BTreeMap::new();
                if let Some(p) = prev {
                    m.extend(p.parts[i].iter().map(|(k, (s, _))| (k, s)));
                }
                for (k, c) in &b.changes[i] {
                    match c {
                        Some((s, _)) => m.insert(k, s),
                        None => m.remove(k),
                    };
                }
                m.into_iter()
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect::<Vec<_>>()
            });
            Ok(Arc::new(parts))
        })?;
        Ok(Arc::new(MatParts((*parts).clone())))
    }
}

impl<T: Data> DStream<T> {
    pub(crate) fn register_stateful<K: Key + Ord + Persist, S: Data + Persist>(
        &self,
        input_slide_ms: u64,
    ) {
        self.g.set_stateful(self.id);
        let st = self.s.clone();
        self.g.add_stateful(StatefulEntry {
            node: self.id,
            input_slide_ms,
            force: Arc::new(move |ctx: &BatchCtx| st.prepare(ctx).map(|_| ())),
            decoder: Arc::new(KvDecoder::<K, S>(PhantomData)),
        });
    }
}

type Changes<K, S> = Vec<(K, Option<(S, u64)>)>;

fn map_with_state_batch<K, V, S, U>(
    ctx: &BatchCtx,
    name: &str,
    parent: &Arc<dyn Stream<(K, V)>>,
    func: &MapFn<K, V, S, U>,
    initial: &[(K, S)],
    timeout_ms: Option<u64>,
) -> Result<MwsBatch<K, S, U>, EngineError>
where
    K: Key + Ord + Persist,
    V: Data,
    S: Data + Persist,
    U: Data,
{
    let t = ctx.time_ms;
    let r = ctx.partitions();
    let prev = ctx.state.get::<KvState<K, (S, u64)>>(name)?;
    if prev.is_some_and(|p| p.parts.len() != r) {
        return Err(EngineError::StateType {
            op: name.to_string(),
        });
    }
    // First batch of this operator: start from the initial state.
    let init: Option<KvState<K, (S, u64)>> = match prev {
        Some(_) => None,
        None => {
            let mut st = KvState::new(r);
            for (k, s) in initial {
                st.insert(k.clone(), (s.clone(), t));
            }
            Some(st)
        }
    };
    let Some(base) = prev.or(init.as_ref()) else {
        return Err(EngineError::StateType {
            op: name.to_string(),
        });
    };
    let d = parent.prepare(ctx)?;
    let groups: Vec<Mutex<Vec<(K, Vec<V>)>>> =
        group(ctx, &*d)?.into_iter().map(Mutex::new).collect();
    let results = ctx.par_map(r, |i| -> Result<(Vec<U>, Changes<K, S>), String> {
        let g = std::mem::take(&mut *groups[i].lock().unwrap_or_else(|e| e.into_inner()));
        let mut out = Vec::new();
        let mut overlay: BTreeMap<K, Option<(S, u64)>> = BTreeMap::new();
        if init.is_some() {
            for (k, v) in &base.parts[i] {
                overlay.insert(k.clone(), Some(v.clone()));
            }
        }
        for (k, vals) in g {
            let mut cur: Option<S> = match overlay.get(&k) {
                Some(v) => v.as_ref().map(|(s, _)| s.clone()),
                None => base.parts[i].get(&k).map(|(s, _)| s.clone()),
            };
            let mut changed = false;
            for v in vals {
                let mut st = State::new(cur.take(), false);
                out.extend(func(t, &k, Some(v), &mut st));
                changed |= st.updated || st.removed;
                cur = st.value;
            }
            if changed || (cur.is_some() && timeout_ms.is_some()) {
                overlay.insert(k, cur.map(|s| (s, t)));
            }
        }
        if let Some(to) = timeout_ms {
            if let Some(threshold) = t.checked_sub(to) {
                for (k, (s, last)) in &base.parts[i] {
                    if *last < threshold && !overlay.contains_key(k) {
                        let mut st = State::new(Some(s.clone()), true);
                        out.extend(func(t, k, None, &mut st));
                        if let Some(m) = st.misuse {
                            return Err(m);
                        }
                        overlay.insert(k.clone(), None);
                    }
                }
            }
        }
        Ok((out, overlay.into_iter().collect()))
    });
    let mut outs = Vec::with_capacity(r);
    let mut changes = Vec::with_capacity(r);
    for res in results {
        let (o, c) = res.map_err(|msg| EngineError::StateMisuse {
            op: name.to_string(),
            msg,
        })?;
        outs.push(o);
        changes.push(c);
    }
    ctx.push_delta(Box::new(KvDelta {
        op: name.to_string(),
        partitions: r,
        changes: changes.iter().flatten().cloned().collect(),
    }));
    Ok(MwsBatch {
        outs: Arc::new(outs),
        changes,
    })
}

/// Whether two values encode to the same bytes (so persisting `a` over `b`
/// would change nothing).
pub(super) fn same_encoding<S: serde::Serialize>(a: &S, b: &S) -> bool {
    matches!(
        (crate::codec::encode(a), crate::codec::encode(b)),
        (Ok(x), Ok(y)) if x == y
    )
}
