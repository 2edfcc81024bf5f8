//! `update_state_by_key` in its three forms (Spark's `updateStateByKey`):
//! the plain function `f(new_values, old_state)`, the key-aware function
//! `f(batch_time_ms, key, new_values, old_state)`, and the partition
//! iterator `f(iter of (key, new_values, old_state)) -> (key, state)s`,
//! each with an optional initial state ([`UpdateSpec`]): given, or loaded
//! by a function called only while the operator has no committed state.
//!
//! State is a [`KvState`] under the operator's stable name, partitioned by
//! key hash like the shuffle, each partition in key order. The initial
//! state stands in for committed state only while the operator has none
//! (first start): the first batch commits it, with that batch's changes,
//! like any state; a later start loads the committed state instead. The
//! output is the whole new state, per partition in key order.
//!
//! Limits: state is bounded only by the user's keys (`None`, or a key the
//! partition function does not return, removes a key); the partition form
//! clones one partition's state per batch. Must never: mutate committed
//! state during a batch, or let a key live in a partition its hash does not
//! name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::eval::BatchCtx;
use super::hash::partition_of;
use super::pair::{group, Key};
use super::state::{push_partition_changes, KvState};
use super::stateful::same_encoding;
use super::window::Persist;
use super::{meta, BoxError, DStream, Data, EngineError};

type KeyFn<K, V, S> = dyn Fn(u64, &K, &[V], Option<&S>) -> Option<S> + Send + Sync;
type LoadFn<K, S> = dyn Fn() -> Result<Vec<(K, S)>, BoxError> + Send + Sync;
type PartitionFn<K, V, S> =
    dyn Fn(&mut dyn Iterator<Item = (K, Vec<V>, Option<S>)>) -> Vec<(K, S)> + Send + Sync;

enum UpdateFn<K, V, S> {
    PerKey(Arc<KeyFn<K, V, S>>),
    Partition(Arc<PartitionFn<K, V, S>>),
}

impl<K, V, S> Clone for UpdateFn<K, V, S> {
    fn clone(&self) -> Self {
        match self {
            UpdateFn::PerKey(f) => UpdateFn::PerKey(f.clone()),
            UpdateFn::Partition(f) => UpdateFn::Partition(f.clone()),
        }
    }
}

/// Where the initial state comes from.
enum Initial<K, S> {
    Given(Vec<(K, S)>),
    Load(Arc<LoadFn<K, S>>),
}

impl<K: Clone, S: Clone> Initial<K, S> {
    /// The pairs, loading them if need be (only while there is no
    /// committed state, so a loader runs at a first start only).
    fn pairs(&self, op: &str) -> Result<std::borrow::Cow<'_, [(K, S)]>, EngineError> {
        match self {
            Initial::Given(v) => Ok(std::borrow::Cow::Borrowed(v)),
            Initial::Load(f) => {
                f().map(std::borrow::Cow::Owned)
                    .map_err(|reason| EngineError::InitialState {
                        op: op.to_string(),
                        reason,
                    })
            }
        }
    }
}

/// What `update_state_by_key_with` does: the update function in one of
/// Spark's three forms, and an optional initial state (Spark's
/// `initialRDD`).
pub struct UpdateSpec<K, V, S> {
    func: UpdateFn<K, V, S>,
    initial: Initial<K, S>,
}

impl<K, V, S> UpdateSpec<K, V, S> {
    /// `f(new_values, old_state)` for every key with state or new values;
    /// `None` removes the key (the form of
    /// [`DStream::update_state_by_key`]).
    pub fn function(f: impl Fn(&[V], Option<&S>) -> Option<S> + Send + Sync + 'static) -> Self {
        Self::with_key(move |_, _, vals, old| f(vals, old))
    }

    /// `f(batch_time_ms, key, new_values, old_state)` for every key with
    /// state or new values; `None` removes the key (Spark's
    /// `(time, key, values, state) => Option[S]`).
    pub fn with_key(
        f: impl Fn(u64, &K, &[V], Option<&S>) -> Option<S> + Send + Sync + 'static,
    ) -> Self {
        UpdateSpec {
            func: UpdateFn::PerKey(Arc::new(f)),
            initial: Initial::Given(Vec::new()),
        }
    }

    /// `f(iter)` once per partition and batch: `iter` yields `(key,
    /// new_values, old_state)` for every key of the partition with state or
    /// new values, in key order; `f` returns the partition's new `(key,
    /// state)` pairs. Keys it does not return are removed; a key returned
    /// twice keeps its last state; a key that was not in `iter` fails the
    /// batch (it may belong to another partition). Spark's
    /// `Iterator[(K, Seq[V], Option[S])] => Iterator[(K, S)]` with
    /// `rememberPartitioner = true`.
    pub fn partitions(
        f: impl Fn(&mut dyn Iterator<Item = (K, Vec<V>, Option<S>)>) -> Vec<(K, S)>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        UpdateSpec {
            func: UpdateFn::Partition(Arc::new(f)),
            initial: Initial::Given(Vec::new()),
        }
    }

    /// State the operator starts from when it has no committed state yet
    /// (first start). Committed with the first batch; not applied again on
    /// a later start. A key given twice keeps its last state.
    pub fn initial_state(mut self, initial: Vec<(K, S)>) -> Self {
        self.initial = Initial::Given(initial);
        self
    }

    /// The initial state from `load`, called when a batch finds the
    /// operator without committed state (the first start, and retries of
    /// its first batch), never once state is committed: a file it reads
    /// is needed at the first start only. An error fails that batch
    /// ([`EngineError::InitialState`]).
    pub fn initial_state_from(
        mut self,
        load: impl Fn() -> Result<Vec<(K, S)>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        self.initial = Initial::Load(Arc::new(load));
        self
    }
}

impl<K: Key + Ord + Persist, V: Data> DStream<(K, V)> {
    /// Keeps a state per key, updated at every batch for **every** key:
    /// `f(new_values, old_state)`; returning `None` removes the key. The
    /// output is the whole new state.
    pub fn update_state_by_key<S: Data + Persist>(
        &self,
        f: impl Fn(&[V], Option<&S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        self.update_state_by_key_with(UpdateSpec::function(f))
    }

    /// [`update_state_by_key`](Self::update_state_by_key) with a function
    /// that sees the key and batch time, or one per partition, and an
    /// optional initial state: see [`UpdateSpec`].
    pub fn update_state_by_key_with<S: Data + Persist>(
        &self,
        spec: UpdateSpec<K, V, S>,
    ) -> DStream<(K, S)> {
        let parent = self.s.clone();
        let UpdateSpec { func, initial } = spec;
        let out: DStream<(K, S)> = self.materialized(
            meta(
                "update_state_by_key",
                vec![self.id],
                self.slide_ms(),
                vec![],
            ),
            move |id| {
                move |ctx: &BatchCtx| {
                    let name = ctx.name(id).to_string();
                    let prev = ctx.state.get::<KvState<K, S>>(&name)?;
                    let r = ctx.partitions();
                    if prev.is_some_and(|p| p.parts.len() != r) {
                        return Err(EngineError::StateType { op: name });
                    }
                    // First start: the initial state stands in for the
                    // committed state, and every key of it is a change.
                    let init = match prev {
                        Some(_) => None,
                        None => Some(initial_parts(&initial.pairs(&name)?, r)),
                    };
                    let committed = prev.is_some();
                    let base = |i: usize| match (prev, &init) {
                        (Some(p), _) => p.parts.get(i),
                        (None, Some(init)) => init.get(i),
                        (None, None) => None,
                    };
                    let d = parent.prepare(ctx)?;
                    let groups: Vec<Mutex<Vec<(K, Vec<V>)>>> =
                        group(ctx, &*d)?.into_iter().map(Mutex::new).collect();
                    let results = ctx.par_map(r, |i| {
                        let g = std::mem::take(
                            &mut *groups[i].lock().unwrap_or_else(|e| e.into_inner()),
                        );
                        let old = base(i);
                        let new_vals: BTreeMap<K, Vec<V>> = g.into_iter().collect();
                        let next = match &func {
                            UpdateFn::PerKey(f) => per_key(&**f, ctx.time_ms, old, new_vals),
                            UpdateFn::Partition(f) => per_partition(&**f, old, new_vals, i, r)?,
                        };
                        let changes = diff(old, &next.0, &next.1, committed);
                        Ok((next.0.into_iter().collect::<Vec<_>>(), changes))
                    });
                    let results = results
                        .into_iter()
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|msg| EngineError::StateMisuse {
                            op: name.clone(),
                            msg,
                        })?;
                    Ok(push_partition_changes(ctx, name, results))
                }
            },
        );
        out.register_stateful::<K, S>(self.slide_ms());
        out
    }
}

/// The initial state cut into `r` hash partitions.
fn initial_parts<K: Key + Ord, S: Clone>(initial: &[(K, S)], r: usize) -> Vec<BTreeMap<K, S>> {
    let mut st = KvState::new(r);
    for (k, s) in initial {
        st.insert(k.clone(), s.clone());
    }
    st.parts
}

/// A partition's new state and the keys that had new values.
type Next<K, S> = (BTreeMap<K, S>, Vec<K>);

/// The per-key forms: `f` for every key with state, then for every new key.
fn per_key<K: Key + Ord, V, S: Clone>(
    f: &KeyFn<K, V, S>,
    time_ms: u64,
    old: Option<&BTreeMap<K, S>>,
    mut new_vals: BTreeMap<K, Vec<V>>,
) -> Next<K, S> {
    // In key order, so that `diff` can search it.
    let touched: Vec<K> = new_vals.keys().cloned().collect();
    let mut next = BTreeMap::new();
    for (k, s) in old.into_iter().flatten() {
        let vals = new_vals.remove(k).unwrap_or_default();
        if let Some(s) = f(time_ms, k, &vals, Some(s)) {
            next.insert(k.clone(), s);
        }
    }
    for (k, vals) in new_vals {
        if let Some(s) = f(time_ms, &k, &vals, None) {
            next.insert(k, s);
        }
    }
    (next, touched)
}

/// The partition form: one call with every key of partition `i` of `r`.
fn per_partition<K: Key + Ord, V, S: Clone>(
    f: &PartitionFn<K, V, S>,
    old: Option<&BTreeMap<K, S>>,
    mut new_vals: BTreeMap<K, Vec<V>>,
    i: usize,
    r: usize,
) -> Result<Next<K, S>, String> {
    let touched: Vec<K> = new_vals.keys().cloned().collect();
    let mut keys: Vec<K> = old.into_iter().flatten().map(|(k, _)| k.clone()).collect();
    keys.extend(
        new_vals
            .keys()
            .filter(|k| !old.is_some_and(|o| o.contains_key(k)))
            .cloned(),
    );
    keys.sort();
    let mut iter = keys.into_iter().map(|k| {
        let vals = new_vals.remove(&k).unwrap_or_default();
        let s = old.and_then(|o| o.get(&k)).cloned();
        (k, vals, s)
    });
    let mut next = BTreeMap::new();
    for (k, s) in f(&mut iter) {
        if partition_of(&k, r) != i {
            return Err(
                "the partition function returned a key of another partition; return only \
                 keys the iterator gave it"
                    .into(),
            );
        }
        next.insert(k, s);
    }
    Ok((next, touched))
}

/// The changes from `old` to `next`. Keys without new values that keep
/// their encoding are not persisted (a commit costs what changed, not the
/// whole state), unless `old` is the uncommitted initial state.
fn diff<K: Key + Ord, S: Data + Persist>(
    old: Option<&BTreeMap<K, S>>,
    next: &BTreeMap<K, S>,
    touched: &[K],
    committed: bool,
) -> Vec<(K, Option<S>)> {
    let mut changes = Vec::new();
    for (k, s) in next {
        let unchanged = committed
            && touched.binary_search(k).is_err()
            && old
                .and_then(|o| o.get(k))
                .is_some_and(|o| same_encoding(s, o));
        if !unchanged {
            changes.push((k.clone(), Some(s.clone())));
        }
    }
    for k in old.into_iter().flat_map(|o| o.keys()) {
        if !next.contains_key(k) {
            changes.push((k.clone(), None));
        }
    }
    changes
}
