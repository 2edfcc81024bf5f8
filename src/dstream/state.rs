//! The state-store interface used by stateful operators.
//!
//! Every stateful operator (update_state_by_key, map_with_state, window
//! panes, windowed reduce with inverse) keeps its state as a typed key-value
//! map [`KvState`], hash-partitioned like the shuffle, stored under the
//! operator's **stable name**. A batch reads the last *committed* state from
//! a [`StateStore`] (never mutating it) and emits a [`StateDelta`] (upserts
//! and removals). Only after the batch's outputs are done does the
//! scheduler hand the deltas to the checkpoint store and then apply them
//! here; a failed batch's deltas are dropped, so committed state is
//! untouched.
//!
//! Persistence goes through [`StateDelta::encode`] (key and value bytes via
//! `crate::codec`) and back through [`StateDecoder`].
//!
//! Limits: one encoded key or value at most `codec::DECODE_BYTES_MAX`
//! (64 MiB). Must never: do I/O, or let a batch change committed state
//! before its commit.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::hash::partition_of;
use super::EngineError;
use crate::codec::{self, CodecError};

/// One encoded change to an operator's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded new value, or `None` when the key was removed.
    pub value: Option<Vec<u8>>,
}

/// Changes one stateful operator made in one batch.
pub trait StateDelta: Send + Sync {
    /// Stable name of the operator.
    fn op(&self) -> &str;
    /// Number of changed keys.
    fn len(&self) -> usize;
    /// Whether nothing changed.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The changes as bytes, for a durable store.
    fn encode(&self) -> Result<Vec<StateChange>, CodecError>;
    /// Applies the changes to the committed in-memory state.
    fn apply(&self, store: &mut StateStore) -> Result<(), EngineError>;
}

/// An operator's committed state as a store hands it over: encoded
/// `(key, value)` pairs, lent one at a time so that loading a large state
/// costs no allocation per pair.
pub trait EncodedState {
    /// Calls `f` with every pair, in no particular order.
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8]));
}

impl EncodedState for Vec<(Vec<u8>, Vec<u8>)> {
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for (k, v) in self {
            f(k, v)
        }
    }
}

/// Rebuilds an operator's typed state from encoded key/value pairs.
pub trait StateDecoder: Send + Sync {
    /// Decodes `pairs` into a typed state for `partitions` partitions;
    /// also returns how many keys it holds (for the state-size metric).
    fn decode(
        &self,
        op: &str,
        pairs: &dyn EncodedState,
        partitions: usize,
    ) -> Result<(Box<dyn Any + Send + Sync>, u64), EngineError>;
}

/// Last committed state of every stateful operator, by stable name.
#[derive(Default)]
pub struct StateStore {
    ops: HashMap<String, Box<dyn Any + Send + Sync>>,
    /// Keys per operator, kept beside the type-erased states so metrics
    /// can read sizes without knowing the types.
    keys: BTreeMap<String, u64>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("ops", &self.ops.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a decoded state of `keys` keys for `op` (recovery).
    pub fn insert(&mut self, op: String, state: Box<dyn Any + Send + Sync>, keys: u64) {
        self.keys.insert(op.clone(), keys);
        self.ops.insert(op, state);
    }

    /// `(operator, keys)` of every operator with state, by name.
    pub fn key_counts(&self) -> Vec<(String, u64)> {
        self.keys.iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// The committed state of `op`, if any.
    pub(crate) fn get<S: 'static>(&self, op: &str) -> Result<Option<&S>, EngineError> {
        match self.ops.get(op) {
            None => Ok(None),
            Some(b) => b
                .downcast_ref::<S>()
                .map(Some)
                .ok_or_else(|| EngineError::StateType { op: op.to_string() }),
        }
    }

    fn get_or_insert_mut<S: Send + Sync + 'static>(
        &mut self,
        op: &str,
        make: impl FnOnce() -> S,
    ) -> Result<&mut S, EngineError> {
        self.ops
            .entry(op.to_string())
            .or_insert_with(|| Box::new(make()))
            .downcast_mut::<S>()
            .ok_or_else(|| EngineError::StateType { op: op.to_string() })
    }

    /// Names of operators with committed state.
    pub fn operators(&self) -> Vec<String> {
        let mut v: Vec<String> = self.ops.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Typed state of one operator: one sorted map per hash partition.
#[derive(Debug, Clone)]
pub struct KvState<K, V> {
    pub(crate) parts: Vec<BTreeMap<K, V>>,
}

impl<K: Ord + Hash, V> KvState<K, V> {
    pub(crate) fn new(partitions: usize) -> Self {
        KvState {
            parts: (0..partitions.max(1)).map(|_| BTreeMap::new()).collect(),
        }
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        let p = partition_of(&k, self.parts.len());
        self.parts[p].insert(k, v);
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.parts.iter().map(BTreeMap::len).sum()
    }

    #[cfg(any(test, feature = "testing"))]
    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All entries, partition by partition, each in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.iter())
    }
}

/// Upserts and removals of one operator in one batch, per partition.
pub(crate) struct KvDelta<K, V> {
    pub op: String,
    pub partitions: usize,
    pub changes: Vec<(K, Option<V>)>,
}

impl<K, V> StateDelta for KvDelta<K, V>
where
    K: Ord + Hash + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    fn op(&self) -> &str {
        &self.op
    }
    fn len(&self) -> usize {
        self.changes.len()
    }
    fn encode(&self) -> Result<Vec<StateChange>, CodecError> {
        self.changes
            .iter()
            .map(|(k, v)| {
                Ok(StateChange {
                    key: codec::encode(k)?,
                    value: v.as_ref().map(codec::encode).transpose()?,
                })
            })
            .collect()
    }
    fn apply(&self, store: &mut StateStore) -> Result<(), EngineError> {
        let n = self.partitions;
        let st = store.get_or_insert_mut(&self.op, || KvState::<K, V>::new(n))?;
        for (k, v) in &self.changes {
            let p = partition_of(k, st.parts.len());
            match v {
                Some(v) => {
                    st.parts[p].insert(k.clone(), v.clone());
                }
                None => {
                    st.parts[p].remove(k);
                }
            }
        }
        let keys = st.len() as u64;
        store.keys.insert(self.op.clone(), keys);
        Ok(())
    }
}

/// Decoder for a [`KvState<K, V>`].
pub(crate) struct KvDecoder<K, V>(pub PhantomData<fn() -> (K, V)>);

impl<K, V> StateDecoder for KvDecoder<K, V>
where
    K: Ord + Hash + DeserializeOwned + Send + Sync + 'static,
    V: DeserializeOwned + Send + Sync + 'static,
{
    fn decode(
        &self,
        op: &str,
        pairs: &dyn EncodedState,
        partitions: usize,
    ) -> Result<(Box<dyn Any + Send + Sync>, u64), EngineError> {
        // Sorted runs build a BTreeMap in one pass (no per-key search):
        // about twice as fast as inserting a million keys one by one.
        let n = partitions.max(1);
        let mut runs: Vec<Vec<(K, V)>> = (0..n).map(|_| Vec::new()).collect();
        let mut failed = None;
        pairs.for_each_pair(&mut |k, v| {
            if failed.is_some() {
                return;
            }
            match (codec::decode::<K>(k), codec::decode::<V>(v)) {
                (Ok(k), Ok(v)) => runs[partition_of(&k, n)].push((k, v)),
                (Err(e), _) | (_, Err(e)) => failed = Some(e),
            }
        });
        if let Some(source) = failed {
            return Err(EngineError::StateDecode {
                op: op.to_string(),
                source,
            });
        }
        let parts = runs
            .into_iter()
            .map(|mut run| {
                run.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                run.into_iter().collect::<BTreeMap<K, V>>()
            })
            .collect();
        let st = KvState { parts };
        let keys = st.len() as u64;
        Ok((Box::new(st), keys))
    }
}

/// Finishes a keyed stateful operator's batch: takes each partition's
/// `(output, changes)`, pushes one [`KvDelta`] for `op` with all changes, and
/// returns the outputs in partition order.
pub(crate) fn push_partition_changes<K, V, O>(
    ctx: &super::eval::BatchCtx,
    op: String,
    results: Vec<(O, Vec<(K, Option<V>)>)>,
) -> Vec<O>
where
    K: Ord + Hash + Clone + Serialize + Send + Sync + 'static,
    V: Clone + Serialize + Send + Sync + 'static,
{
    let partitions = results.len();
    let mut out = Vec::with_capacity(partitions);
    let mut changes = Vec::new();
    for (o, c) in results {
        out.push(o);
        changes.extend(c);
    }
    ctx.push_delta(Box::new(KvDelta {
        op,
        partitions,
        changes,
    }));
    out
}
