//! The in-memory checkpoint store, [`MemoryCheckpointStore`]: what a
//! context uses without a data directory, and what tests restart on.
//!
//! State goes through the same encoding (`StateDelta::encode`) as the
//! durable store, and allocation refuses the same out-of-order batches.
//!
//! Limits: keeps the specs of at most `completed_batches_max` completed
//! batches (default [`COMPLETED_BATCHES_MAX_DEFAULT`]; older ones are
//! forgotten; the last allocated one is always kept); everything else is
//! held in memory without bound, so it is for tests and small pipelines.
//! Must never: do I/O, or apply a commit halfway (a delta that fails to
//! encode leaves the store untouched).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::{
    compat, BatchSpec, CheckpointError, CheckpointStore, StateReader, COMPLETED_BATCHES_MAX_DEFAULT,
};
use crate::dstream::{PipelineDescription, StateDelta};

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
        spec.assert_well_formed();
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
            let changes = compat::incompatibilities(old, desc);
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
