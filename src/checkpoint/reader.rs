//! Reading committed state from other threads while the scheduler owns the
//! store: the [`StateReader`] trait, and [`SledStateReader`] over a shared
//! sled database (plus the bucket loading the store's recovery shares).
//!
//! A `get` sees one committed batch's value (it re-reads when a commit
//! re-addressed the operator meanwhile); a scan reads bucket by bucket and
//! may see two consecutive batches if one commits meanwhile.
//!
//! Limits: a `get` reads one bucket (about `bucket_keys_target` keys) per
//! attempt, at most [`GET_ATTEMPTS_MAX`] (64) attempts while commits keep
//! re-addressing the operator (then [`CheckpointError::ReadUnstable`]); a
//! scan holds the whole operator's state in memory once.
//! Must never: write to the store, or skip a bucket it cannot decode (it
//! fails naming the key and the byte offset).

use std::path::{Path, PathBuf};

use super::buckets;
use super::buckets::LinearHash;
use super::error::{CheckpointError, Damage};
use super::guard::{guarded_scan, sled_call};
use super::records::{self, OpRecordV1, OP_PREFIX};
use crate::dstream::state::EncodedState;

/// Most times a `get` reads the addressing and the bucket while commits
/// keep re-addressing (splitting) the operator; each commit splits a few
/// buckets at most, so one attempt in a few is expected to hold still.
pub const GET_ATTEMPTS_MAX: u32 = 64;

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
        match sled_call(&self.path, "read from", || self.db.get(&key))? {
            None => Ok(OpRecordV1::default()),
            Some(v) => records::decode_op(&self.path, &key, &v),
        }
    }

    /// The value of `key` in bucket `bkey`, if the bucket holds it.
    fn find_in_bucket(&self, bkey: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some(v) = sled_call(&self.path, "read from", || self.db.get(bkey))? else {
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
        let found = read_stable(
            GET_ATTEMPTS_MAX,
            || Ok(self.op_record(op)?.lh()),
            |lh| self.find_in_bucket(&records::state_key(&prefix, lh.bucket_of(h)), key),
        );
        found.map_err(|e| match e {
            Unstable::Attempts(attempts) => CheckpointError::ReadUnstable {
                store: self.path.clone(),
                op: op.to_string(),
                attempts,
            },
            Unstable::Read(e) => e,
        })
    }

    fn scan(&self, op: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError> {
        load_buckets(&self.db, &self.path, op)
    }
}

/// Why [`read_stable`] gave up.
#[derive(Debug)]
enum Unstable {
    /// The addressing changed during each of this many attempts.
    Attempts(u32),
    /// A read failed.
    Read(CheckpointError),
}

/// Reads the addressing, the bucket it points to, and the addressing
/// again, until the addressing held still (a commit may split the bucket
/// in between): at most `attempts_max` times.
fn read_stable<T>(
    attempts_max: u32,
    mut addressing: impl FnMut() -> Result<LinearHash, CheckpointError>,
    mut bucket: impl FnMut(LinearHash) -> Result<T, CheckpointError>,
) -> Result<T, Unstable> {
    let mut lh = addressing().map_err(Unstable::Read)?;
    for _ in 0..attempts_max {
        let found = bucket(lh).map_err(Unstable::Read)?;
        let again = addressing().map_err(Unstable::Read)?;
        if again == lh {
            return Ok(found);
        }
        lh = again;
    }
    Err(Unstable::Attempts(attempts_max))
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
        for kv in guarded_scan(path, "load state from", db.scan_prefix(&prefix)) {
            let (k, v) = kv?;
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
    for kv in guarded_scan(path, "load state from", db.scan_prefix(&prefix)) {
        let (k, v) = kv?;
        buckets::decode_bucket(&v, |k, v| out.push((k.to_vec(), v.to_vec())))
            .map_err(|e| CheckpointError::damaged(path, &k, Damage::Bucket(e)))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An addressing that changes on each of its first `changes` reads
    /// after the first.
    fn moving(changes: u32) -> impl FnMut() -> Result<LinearHash, CheckpointError> {
        let mut reads = 0u32;
        move || {
            let lh = LinearHash {
                level: 0,
                split: u64::from(reads.min(changes)),
            };
            reads += 1;
            Ok(lh)
        }
    }

    #[test]
    fn a_get_succeeds_when_the_addressing_holds_still_on_the_last_attempt() {
        let mut reads = 0;
        let got = read_stable(GET_ATTEMPTS_MAX, moving(GET_ATTEMPTS_MAX - 1), |lh| {
            reads += 1;
            Ok(lh.split)
        });
        assert_eq!(got.ok(), Some(u64::from(GET_ATTEMPTS_MAX - 1)));
        assert_eq!(reads, GET_ATTEMPTS_MAX);
    }

    #[test]
    fn a_get_gives_up_after_the_most_attempts_while_splits_go_on() {
        let mut reads = 0;
        let got = read_stable(GET_ATTEMPTS_MAX, moving(u32::MAX), |_| {
            reads += 1;
            Ok(())
        });
        assert!(matches!(got, Err(Unstable::Attempts(GET_ATTEMPTS_MAX))));
        assert_eq!(reads, GET_ATTEMPTS_MAX);
    }

    #[test]
    fn the_unstable_read_error_names_the_store_the_table_and_the_attempts() {
        let e = CheckpointError::ReadUnstable {
            store: "/d/checkpoint".into(),
            op: "kv:totals".into(),
            attempts: GET_ATTEMPTS_MAX,
        };
        let m = e.to_string();
        assert!(
            m.contains("/d/checkpoint") && m.contains("kv:totals") && m.contains("64"),
            "{m}"
        );
    }
}
