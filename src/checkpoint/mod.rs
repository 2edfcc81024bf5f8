//! The checkpoint: batch lineage and operator state, behind one trait,
//! durable in sled or kept in memory. The scheduler uses it; it never uses
//! the scheduler.
//!
//! Protocol per batch: [`CheckpointStore::allocate`] records the batch
//! (time and per-source record ranges) **before** it executes; after its
//! outputs, [`CheckpointStore::commit`] records all of the batch's operator
//! state changes and marks it complete, in one call (the durable store does
//! it in one transaction). Recovery asks for [`CheckpointStore::pending`]
//! (allocated, not completed) batches, re-runs them with exactly their
//! recorded ranges, and continues after [`CheckpointStore::last_allocated`].
//!
//! Map:
//! - `mod.rs`: [`CheckpointStore`], [`BatchSpec`], [`StreamRange`];
//! - `records`: the byte formats of keys and values (pure);
//! - `buckets`: how an operator's state is cut into sled values (pure);
//! - `store.rs`: [`SledCheckpointStore`], the durable store, and
//!   `migrate.rs`, its format check and format 1 → 2 migration at open;
//! - `reader.rs`: [`StateReader`] and [`SledStateReader`], committed state
//!   for other threads;
//! - `memory.rs`: [`MemoryCheckpointStore`];
//! - `datadir_id.rs`: [`DataDirId`], the identity the checkpoint shares
//!   with its data directory's input logs;
//! - `compat`: may a rebuilt pipeline use the stored state (pure);
//! - `error.rs`: [`CheckpointError`].
//!
//! Bytes: `docs/checkpoint-format.md`.
//!
//! Limits: at most `completed_batches_max` completed batch records
//! (default [`COMPLETED_BATCHES_MAX_DEFAULT`], 1000) are kept by either
//! store; an operator name is at most 65,535 bytes; opening a sled store
//! waits at most [`LOCK_WAIT_MAX`] (2 s) for a database another opener
//! has just let go of.
//! Must never: read or write the WAL; read sources or run operators;
//! decide what a batch contains (the scheduler does); name the scheduler;
//! skip a record it cannot decode (it fails naming the key).

internal! {
    mod buckets;
    mod compat;
    mod records;
}
mod datadir_id;
mod error;
mod guard;
mod memory;
mod migrate;
mod reader;
mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dstream::state::EncodedState;
use crate::dstream::{PipelineDescription, StateDelta};

pub use datadir_id::DataDirId;
pub use error::{CheckpointError, Damage};
pub use memory::MemoryCheckpointStore;
pub use reader::{SledStateReader, StateReader, GET_ATTEMPTS_MAX};
// The stored records: formats, not API (the tests and fuzz targets decode
// them through the `testing` feature).
pub use records::SkipRecordV1;
#[cfg(feature = "testing")]
pub use records::{
    BatchRecord, BatchRecordV1, DataDirRecord, OpRecord, OpRecordV1, OperatorRecordV1,
    PipelineRecord, PipelineRecordV1, SkipRecord, StoreMeta, STORE_FORMAT_VERSION,
};
pub use store::{
    open_existing, recorded_pipeline, SledCheckpointStore, SledConfig, BUCKET_KEYS_TARGET_DEFAULT,
    CACHE_BYTES_MAX_DEFAULT, LOCK_WAIT_MAX,
};

/// Default number of completed batches kept (records in sled, specs in
/// memory).
pub const COMPLETED_BATCHES_MAX_DEFAULT: usize = 1000;

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

impl std::fmt::Display for StreamRange {
    /// `` `in` records 0..10 `` (the end excluded).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` records {}..{}", self.source, self.start, self.end)
    }
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

impl BatchSpec {
    /// Asserts what every store relies on before recording a batch: no
    /// range ends before it starts, and the batch is not before the
    /// pipeline's zero time. A violation is a bug of the caller (the
    /// scheduler cuts ranges forward from committed positions), never a
    /// property of input data.
    pub(crate) fn assert_well_formed(&self) {
        assert!(
            self.zero_ms <= self.time_ms,
            "batch {} ms is before its zero time {} ms",
            self.time_ms,
            self.zero_ms
        );
        for r in &self.ranges {
            assert!(
                r.start <= r.end,
                "batch {} ms: range {}..{} of source `{}` ends before it starts",
                self.time_ms,
                r.start,
                r.end,
                r.source
            );
        }
    }
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
    /// Checks that `desc` can use the stored state (see `compat`), then
    /// records `desc` as the pipeline's description. Called once at start,
    /// before any state is loaded.
    fn check_pipeline(&mut self, desc: &PipelineDescription) -> Result<(), CheckpointError>;
    /// A reader of this store's committed state for other threads.
    fn state_reader(&self) -> Arc<dyn StateReader>;
    /// Record ranges `weir wal skip` marked as never to be processed
    /// (none by default).
    fn skipped(&self) -> Result<Vec<StreamRange>, CheckpointError> {
        Ok(Vec::new())
    }
}
