//! The store's format at open: a new store gets the current version (and
//! a new data directory identity, `m/datadir`, in the same write), a
//! format 1 store (one sled value per state key) is rewritten into format
//! 2 (state in buckets), a store from a newer weir is refused
//! ([`CheckpointError::NewerFormat`]).
//!
//! The migration is one atomic `apply_batch` + flush: a crash midway leaves
//! the version 1 store as it was. Batch records and the pipeline record are
//! the same in both versions and are not touched.
//!
//! Limits: the migration holds the whole state in memory once.
//! Must never: write a store it cannot read back, or change a store whose
//! version it does not know.

use std::collections::BTreeMap;

use super::buckets::{self, Bucket, LinearHash};
use super::error::CheckpointError;
use super::guard::sled_call;
use super::records::{
    self, named_prefix, state_key, state_prefix, OpRecordV1, META_DATADIR, META_FORMAT, OP_PREFIX,
    STATE_PREFIX, STORE_FORMAT_VERSION,
};
use super::store::SledCheckpointStore;
use super::DataDirId;

impl SledCheckpointStore {
    /// Records the current format in a new store, migrates a format 1
    /// store, refuses one newer than this build.
    pub(super) fn check_format(&mut self, existed: bool) -> Result<(), CheckpointError> {
        match self.get(META_FORMAT)? {
            // Every store records its format at its first open: files
            // without it lost their contents.
            None if existed => Err(CheckpointError::Emptied {
                store: self.path.clone(),
            }),
            None => {
                // A new store: its format and its data directory's
                // identity, together.
                let mut batch = sled::Batch::default();
                batch.insert(META_FORMAT, records::encode_meta(STORE_FORMAT_VERSION)?);
                batch.insert(META_DATADIR, records::encode_datadir(DataDirId::random())?);
                sled_call(&self.path, "initialise", || self.db.apply_batch(batch))?;
                self.flush()
            }
            Some(bytes) => match records::decode_meta(&self.path, &bytes)? {
                1 => self.migrate_v1(),
                STORE_FORMAT_VERSION => Ok(()),
                found => Err(CheckpointError::NewerFormat {
                    store: self.path.clone(),
                    found,
                    supported: STORE_FORMAT_VERSION,
                }),
            },
        }
    }

    /// Rewrites a format 1 store (one sled value per state key) into
    /// format 2 (buckets) in one atomic `apply_batch` + flush.
    fn migrate_v1(&mut self) -> Result<(), CheckpointError> {
        let mut by_op: BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>> = BTreeMap::new();
        let mut batch = sled::Batch::default();
        for entry in self.named_entries(STATE_PREFIX) {
            let (op, k, v) = entry?;
            let key = k[STATE_PREFIX.len() + 2 + op.len()..].to_vec();
            by_op.entry(op).or_default().push((key, v.to_vec()));
            // A sled batch is a map (last write per key wins), and bucket
            // inserts come after: an old key equal to a bucket key (key
            // bytes = 4 bytes of bucket number) ends up as the bucket.
            batch.remove(k);
        }
        let mut keys = 0;
        for (op, pairs) in by_op {
            let prefix = state_prefix(&op)?;
            let r = buckets::rebucket(
                LinearHash::default(),
                0,
                pairs.into_iter().map(|(k, v)| (k, Some(v))),
                self.config.bucket_keys_target,
                |_| Ok::<_, CheckpointError>(Bucket::new()),
            )?;
            for (b, bucket) in &r.buckets {
                if !bucket.is_empty() {
                    batch.insert(state_key(&prefix, *b), buckets::encode_bucket(bucket));
                }
            }
            let rec = OpRecordV1 {
                level: r.lh.level,
                split: r.lh.split,
                keys: r.keys,
            };
            batch.insert(named_prefix(OP_PREFIX, &op)?, records::encode_op(&op, rec)?);
            keys += r.keys;
        }
        batch.insert(META_FORMAT, records::encode_meta(STORE_FORMAT_VERSION)?);
        sled_call(&self.path, "migrate", || self.db.apply_batch(batch))?;
        self.flush()?;
        tracing::warn!(store = %self.path.display(), keys, "migrated the checkpoint from format 1 to format 2 (state in buckets)");
        Ok(())
    }
}
