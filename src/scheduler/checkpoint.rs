//! Batch bookkeeping: the [`CheckpointStore`] trait and an in-memory
//! implementation.
//!
//! Protocol per batch: [`CheckpointStore::allocate`] records the batch
//! (time and per-source record ranges) **before** it executes; after its
//! outputs, [`CheckpointStore::commit`] records all of the batch's operator
//! state changes and marks it complete, in one call (the durable store does
//! it in one transaction). Recovery asks for [`CheckpointStore::pending`]
//! (allocated, not completed) batches, re-runs them with exactly their
//! recorded ranges, and continues after [`CheckpointStore::last_allocated`].
//!
//! Limits: [`MemoryCheckpointStore`] keeps the specs of at most
//! `completed_batches_max` completed batches (older ones are forgotten; the
//! last allocated one is always kept).
//! Must never: read sources or run operators.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::dstream::state::EncodedState;
use crate::dstream::{PipelineDescription, StateDelta};

/// The record range one source contributes to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRange {
    /// Stable name of the source.
    pub source: String,
    /// First record position (inclusive).
    pub start: u64,
    /// End position (exclusive).
    pub end: u64,
}

/// What a batch is: its time and its exact input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// Batch time in milliseconds.
    pub time_ms: u64,
    /// The pipeline's zero time (first batch is at `zero_ms + interval`).
    pub zero_ms: u64,
    /// Input range per source.
    pub ranges: Vec<StreamRange>,
}

/// Errors of a checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Batches must be allocated in increasing time order.
    #[error("batch {time_ms} ms allocated after batch {last_ms} ms")]
    OutOfOrder {
        /// The batch being allocated.
        time_ms: u64,
        /// The last allocated batch.
        last_ms: u64,
    },
    /// Commit of a batch that was never allocated (or already completed).
    #[error("batch {time_ms} ms is not pending")]
    NotPending {
        /// The batch time.
        time_ms: u64,
    },
    /// State could not be encoded.
    #[error("encoding state of operator `{op}`: {source}")]
    Encode {
        /// Operator name.
        op: String,
        /// Codec error.
        source: crate::codec::CodecError,
    },
    /// The store failed (I/O, corruption...).
    #[error("checkpoint store: {0}")]
    Store(String),
    /// The rebuilt pipeline cannot use the checkpoint's state.
    #[error(
        "the pipeline no longer matches its checkpoint in {store}: {}. Ways out: undo the change; \
         or start from an empty data directory; or, to drop one operator's state and keep the rest, \
         run `weir checkpoint reset-operator DIR NAME` (library: `SledCheckpointStore::reset_operator`)",
        changes.join("; ")
    )]
    Incompatible {
        /// Where the checkpoint is.
        store: String,
        /// One sentence per change, naming the operator.
        changes: Vec<String>,
    },
}

/// Reads committed operator state (and key-value tables, which are state
/// too) by encoded key, from any thread, while the scheduler owns the
/// store.
pub trait StateReader: Send + Sync {
    /// The committed encoded value of `key` in `op`'s state.
    fn get(&self, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError>;
    /// Every committed `(key, value)` of `op`, in no particular order.
    fn scan(&self, op: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError>;
}

/// Where batch lineage and operator state are kept.
pub trait CheckpointStore: Send {
    /// Records a batch before it executes.
    fn allocate(&mut self, spec: &BatchSpec) -> Result<(), CheckpointError>;
    /// Records the batch's state changes and marks it complete, atomically.
    fn commit(
        &mut self,
        time_ms: u64,
        deltas: &[Box<dyn StateDelta>],
    ) -> Result<(), CheckpointError>;
    /// Batches allocated but not completed, oldest first.
    fn pending(&self) -> Result<Vec<BatchSpec>, CheckpointError>;
    /// The last allocated batch (where the next one starts).
    fn last_allocated(&self) -> Result<Option<BatchSpec>, CheckpointError>;
    /// Committed state of `op` as encoded pairs; `None` if `op` never
    /// committed any state.
    fn load_state(&self, op: &str) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, CheckpointError>;
    /// [`CheckpointStore::load_state`] for recovery: the pairs lent without
    /// a copy per pair where the store can (the default copies).
    fn load_encoded(&self, op: &str) -> Result<Option<Box<dyn EncodedState>>, CheckpointError> {
        Ok(self
            .load_state(op)?
            .map(|p| Box::new(p) as Box<dyn EncodedState>))
    }
    /// Checks that `desc` can use the stored state (see
    /// [`crate::checkpoint::compat`]), then records `desc` as the
    /// pipeline's description. Called once at start, before any state is
    /// loaded.
    fn check_pipeline(&mut self, desc: &PipelineDescription) -> Result<(), CheckpointError>;
    /// A reader of this store's committed state for other threads.
    fn state_reader(&self) -> Arc<dyn StateReader>;
}

/// Default of `completed_batches_max` for [`MemoryCheckpointStore`].
pub const COMPLETED_BATCHES_MAX_DEFAULT: usize = 1000;

#[derive(Debug, Default)]
struct MemInner {
    pending: BTreeMap<u64, BatchSpec>,
    completed: VecDeque<BatchSpec>,
    last: Option<BatchSpec>,
    state: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    pipeline: Option<PipelineDescription>,
}

/// A checkpoint store in memory. State goes through the same encoding as
/// the durable store. Clones share the store, so a test can "restart" a
/// pipeline on it.
#[derive(Debug, Clone)]
pub struct MemoryCheckpointStore {
    inner: Arc<Mutex<MemInner>>,
    completed_batches_max: usize,
}

impl Default for MemoryCheckpointStore {
    fn default() -> Self {
        MemoryCheckpointStore {
            inner: Arc::default(),
            completed_batches_max: COMPLETED_BATCHES_MAX_DEFAULT,
        }
    }
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completed batch specs still remembered, oldest first.
    pub fn completed(&self) -> Vec<BatchSpec> {
        self.lock().completed.iter().cloned().collect()
    }

    /// Operators with committed state.
    pub fn operators(&self) -> Vec<String> {
        self.lock().state.keys().cloned().collect()
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn allocate(&mut self, spec: &BatchSpec) -> Result<(), CheckpointError> {
        let mut m = self.lock();
        if let Some(last) = &m.last {
            if spec.time_ms <= last.time_ms {
                return Err(CheckpointError::OutOfOrder {
                    time_ms: spec.time_ms,
                    last_ms: last.time_ms,
                });
            }
        }
        m.pending.insert(spec.time_ms, spec.clone());
        m.last = Some(spec.clone());
        Ok(())
    }

    fn commit(
        &mut self,
        time_ms: u64,
        deltas: &[Box<dyn StateDelta>],
    ) -> Result<(), CheckpointError> {
        // Encode everything first: a failure leaves the store untouched.
        let mut encoded = Vec::with_capacity(deltas.len());
        for d in deltas {
            let changes = d.encode().map_err(|source| CheckpointError::Encode {
                op: d.op().to_string(),
                source,
            })?;
            encoded.push((d.op().to_string(), changes));
        }
        let mut m = self.lock();
        let Some(spec) = m.pending.remove(&time_ms) else {
            return Err(CheckpointError::NotPending { time_ms });
        };
        for (op, changes) in encoded {
            let st = m.state.entry(op).or_default();
            for c in changes {
                match c.value {
                    Some(v) => {
                        st.insert(c.key, v);
                    }
                    None => {
                        st.remove(&c.key);
                    }
                }
            }
        }
        m.completed.push_back(spec);
        while m.completed.len() > self.completed_batches_max {
            m.completed.pop_front();
        }
        Ok(())
    }

    fn pending(&self) -> Result<Vec<BatchSpec>, CheckpointError> {
        Ok(self.lock().pending.values().cloned().collect())
    }

    fn last_allocated(&self) -> Result<Option<BatchSpec>, CheckpointError> {
        Ok(self.lock().last.clone())
    }

    fn load_state(&self, op: &str) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, CheckpointError> {
        Ok(self
            .lock()
            .state
            .get(op)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }

    fn check_pipeline(&mut self, desc: &PipelineDescription) -> Result<(), CheckpointError> {
        let mut m = self.lock();
        if let Some(old) = &m.pipeline {
            let changes = crate::checkpoint::compat::incompatibilities(old, desc);
            if !changes.is_empty() {
                return Err(CheckpointError::Incompatible {
                    store: "memory".into(),
                    changes,
                });
            }
        }
        m.pipeline = Some(desc.clone());
        Ok(())
    }

    fn state_reader(&self) -> Arc<dyn StateReader> {
        Arc::new(self.clone())
    }
}

impl StateReader for MemoryCheckpointStore {
    fn get(&self, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        Ok(self.lock().state.get(op).and_then(|m| m.get(key).cloned()))
    }

    fn scan(&self, op: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError> {
        Ok(self
            .lock()
            .state
            .get(op)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}
