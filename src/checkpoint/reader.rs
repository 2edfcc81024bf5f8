//! Reading committed state from other threads while the scheduler owns the
//! store: the [`StateReader`] trait, and [`SledStateReader`] over a shared
//! sled database (plus the bucket loading the store's recovery shares).
//!
//! A `get` sees one committed batch's value (it re-reads when a commit
//! re-addressed the operator meanwhile); a scan reads bucket by bucket and
//! may see two consecutive batches if one commits meanwhile.
//!
//! Limits: a `get` reads one bucket (about `bucket_keys_target` keys); a
//! scan holds the whole operator's state in memory once.
//! Must never: write to the store, or skip a bucket it cannot decode (it
//! fails naming the key and the byte offset).

use std::path::{Path, PathBuf};

use super::buckets;
use super::error::{CheckpointError, Damage};
use super::records::{self, OpRecordV1, OP_PREFIX};
use crate::dstream::state::EncodedState;

/// Reads committed operator state (and key-value tables, which are state
/// too) by encoded key, from any thread, while the scheduler owns the
/// store.
pub trait StateReader: Send + Sync {
    /// The committed encoded value of `key` in `op`'s state.
    fn get(&self, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError>;
    /// Every committed `(key, value)` of `op`, in no particular order.
    fn scan(&self, op: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError>;
}

/// Reads committed state (and key-value tables) of a sled store from any
/// thread. A `get` sees one committed batch's value; a scan reads bucket by
/// bucket and may see two consecutive batches if one commits meanwhile.
#[derive(Debug, Clone)]
pub struct SledStateReader {
    db: sled::Db,
    path: PathBuf,
}

impl SledStateReader {
    /// A reader sharing `db`, the store in `path`.
    pub(super) fn new(db: sled::Db, path: PathBuf) -> Self {
        SledStateReader { db, path }
    }

    fn op_record(&self, op: &str) -> Result<OpRecordV1, CheckpointError> {
        let key = records::named_prefix(OP_PREFIX, op)?;
        match self
            .db
            .get(&key)
            .map_err(|e| CheckpointError::io("read from", &self.path, e))?
        {
            None => Ok(OpRecordV1::default()),
            Some(v) => records::decode_op(&self.path, &key, &v),
        }
    }

    /// The value of `key` in bucket `bkey`, if the bucket holds it.
    fn find_in_bucket(&self, bkey: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some(v) = self
            .db
            .get(bkey)
            .map_err(|e| CheckpointError::io("read from", &self.path, e))?
        else {
            return Ok(None);
        };
        let mut hit = None;
        buckets::decode_bucket(&v, |k, v| {
            if k == key {
                hit = Some(v.to_vec());
            }
        })
        .map_err(|e| CheckpointError::damaged(&self.path, bkey, Damage::Bucket(e)))?;
        Ok(hit)
    }
}

impl StateReader for SledStateReader {
    fn get(&self, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        let prefix = records::state_prefix(op)?;
        let h = buckets::key_hash(key);
        // A commit may split the bucket between reading the addressing and
        // the bucket: read again until the addressing held still.
        let mut rec = self.op_record(op)?;
        loop {
            let bkey = records::state_key(&prefix, rec.lh().bucket_of(h));
            let found = self.find_in_bucket(&bkey, key)?;
            let again = self.op_record(op)?;
            if again.lh() == rec.lh() {
                return Ok(found);
            }
            rec = again;
        }
    }

    fn scan(&self, op: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError> {
        load_buckets(&self.db, &self.path, op)
    }
}

/// Bucket values that decoded once already.
pub(super) struct CheckedBuckets(Vec<sled::IVec>);

impl CheckedBuckets {
    /// Every bucket of `op`, each decoded once to check it (so that lending
    /// the pairs later cannot fail); `None` if `op` has no bucket.
    pub(super) fn load(
        db: &sled::Db,
        path: &Path,
        op: &str,
    ) -> Result<Option<Self>, CheckpointError> {
        let prefix = records::state_prefix(op)?;
        let mut out = Vec::new();
        for kv in db.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(|e| CheckpointError::io("load state from", path, e))?;
            buckets::decode_bucket(&v, |_, _| {})
                .map_err(|e| CheckpointError::damaged(path, &k, Damage::Bucket(e)))?;
            out.push(v);
        }
        Ok(if out.is_empty() {
            None
        } else {
            Some(CheckedBuckets(out))
        })
    }
}

impl EncodedState for CheckedBuckets {
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for b in &self.0 {
            // Cannot fail: `CheckedBuckets::load` checked every bucket.
            let decoded = buckets::decode_bucket(b, &mut *f);
            debug_assert!(decoded.is_ok(), "a checked bucket failed to decode");
        }
    }
}

/// Every entry of `op`'s buckets, bucket by bucket.
pub(super) fn load_buckets(
    db: &sled::Db,
    path: &Path,
    op: &str,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError> {
    let prefix = records::state_prefix(op)?;
    let mut out = Vec::new();
    for kv in db.scan_prefix(&prefix) {
        let (k, v) = kv.map_err(|e| CheckpointError::io("load state from", path, e))?;
        buckets::decode_bucket(&v, |k, v| out.push((k.to_vec(), v.to_vec())))
            .map_err(|e| CheckpointError::damaged(path, &k, Damage::Bucket(e)))?;
    }
    Ok(out)
}
