//! Skipped record ranges in the sled store (`k/` records): what
//! `weir wal skip` writes and the scheduler reads at start.
//!
//! Limits: one record per skip; ranges are listed whole (an operator
//! writes a handful, each a deliberate act).
//! Must never: remove or change a skip record (it is the audit trail).

use super::SledCheckpointStore;
use crate::checkpoint::error::CheckpointError;
use crate::checkpoint::records::{self, SkipRecordV1, SKIP_PREFIX};

impl SledCheckpointStore {
    /// Every skipped range with its audit line, by stream and first record.
    pub fn skips(&self) -> Result<Vec<SkipRecordV1>, CheckpointError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(SKIP_PREFIX) {
            let (k, v) = kv.map_err(|e| CheckpointError::io("scan", &self.path, e))?;
            out.push(records::decode_skip(&self.path, &k, &v)?);
        }
        Ok(out)
    }

    /// Records `r` durably (inserted, then flushed).
    pub fn add_skip(&mut self, r: &SkipRecordV1) -> Result<(), CheckpointError> {
        let (k, v) = records::encode_skip(r)?;
        self.db
            .insert(k, v)
            .map_err(|e| CheckpointError::io("record a skipped range in", &self.path, e))?;
        self.flush()
    }
}
