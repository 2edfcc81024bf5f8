//! The durable checkpoint store: batch lineage and operator state in sled,
//! [`SledCheckpointStore`].
//!
//! Owns one sled database (a directory) holding, in one keyspace so that a
//! commit is one atomic `apply_batch`, the keys and values of
//! [`super::records`] (state cut into buckets by [`super::buckets`]). A
//! format 1 store is migrated at open (`migrate.rs`).
//!
//! Durable means flushed: sled 0.34 only fsyncs on `flush()`, so `allocate`
//! and `commit` end with `flush()`; the background flusher is off, so
//! nothing is half-written behind our back. The cache is small
//! (`cache_bytes_max`, 16 MiB by default).
//!
//! State is cut into buckets of about `bucket_keys_target` keys (default
//! 64) per sled value: loading a million keys reads some 16,000 values, and
//! a commit rewrites the buckets its changed keys fall into.
//!
//! Limits: at most `completed_batches_max` completed batch records are kept
//! (older ones are pruned inside the commit that completes a newer one; the
//! store remembers their times, so pruning costs no scan); an operator name
//! is at most 65,535 bytes; opening waits at most [`LOCK_WAIT_MAX`] (2 s)
//! for a database another opener has just let go of.
//!
//! Must never: read or write the WAL; decide what a batch contains (the
//! scheduler does); skip a record it cannot decode (it fails naming the key).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::buckets::{self, Bucket};
use super::error::{CheckpointError, Damage};
use super::guard::{guarded_scan, quietly, sled_call};
use super::reader::{load_buckets, CheckedBuckets, SledStateReader};
use super::records::{
    self, batch_key, named_prefix, op_of_key, state_key, state_prefix, BatchRecordV1, OpRecordV1,
    BATCH_PREFIX, META_DATADIR, META_FORMAT, META_PIPELINE, OP_PREFIX, STATE_PREFIX,
    STORE_FORMAT_VERSION,
};
use super::{
    compat, BatchSpec, CheckpointStore, DataDirId, StateReader, COMPLETED_BATCHES_MAX_DEFAULT,
};
use crate::dstream::state::EncodedState;
use crate::dstream::{PipelineDescription, StateChange, StateDelta};

/// Default average number of state keys per bucket (per sled value).
pub const BUCKET_KEYS_TARGET_DEFAULT: u64 = 64;
/// Default sled page cache.
pub const CACHE_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Longest [`SledCheckpointStore::open`] waits for another opener's lock.
pub const LOCK_WAIT_MAX: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(10);
/// The files sled 0.34 creates in a new database directory.
const SLED_FILES: [&str; 2] = ["conf", "db"];

/// Configuration of a [`SledCheckpointStore`].
#[derive(Debug, Clone)]
pub struct SledConfig {
    /// Size of sled's page cache, in bytes (default 16 MiB).
    pub cache_bytes_max: u64,
    /// Most completed batch records kept (default 1000); each commit
    /// deletes the oldest beyond it.
    pub completed_batches_max: usize,
    /// Average keys per state bucket above which buckets split. Smaller:
    /// cheaper commits of scattered changes; larger: fewer sled values to
    /// load. Safe to change between runs (addressing is stored).
    pub bucket_keys_target: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
            completed_batches_max: COMPLETED_BATCHES_MAX_DEFAULT,
            bucket_keys_target: BUCKET_KEYS_TARGET_DEFAULT,
        }
    }
}

/// Batch lineage and operator state in a sled database.
#[derive(Debug)]
pub struct SledCheckpointStore {
    pub(super) db: sled::Db,
    pub(super) path: PathBuf,
    pub(super) config: SledConfig,
    /// Bucket records of operators seen so far (a cache of `o/…`; dropped
    /// whenever a commit fails, so it never runs ahead of sled).
    ops: HashMap<String, OpRecordV1>,
    /// Times of the completed batch records kept, oldest first: pruning
    /// pops from the front instead of scanning the batch log.
    completed: VecDeque<u64>,
}

/// Opens the checkpoint of an existing data directory (`DATA_DIR/checkpoint`)
/// for the offline tools; a directory without one is a usage error saying
/// what to give instead (it is never created here).
pub fn open_existing(data_dir: &Path) -> crate::Result<SledCheckpointStore> {
    let dir = crate::layout::checkpoint_dir(data_dir);
    if !dir.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{} has no checkpoint (expected {}); give the data directory weir runs with",
            data_dir.display(),
            dir.display()
        )));
    }
    Ok(SledCheckpointStore::open(&dir, SledConfig::default())?)
}

/// The pipeline the checkpoint in `dir` records (what `start` compares a
/// rebuilt pipeline with), for `weir check --data-dir`: read without any
/// write of weir's (no format record, no migration, no identity; sled
/// itself only replays its own log, as any open does). `None`: the store
/// records no pipeline yet. A store of a newer format is refused, as at
/// start; a format 1 store is read as is (start migrates it).
pub fn recorded_pipeline(dir: &Path) -> Result<Option<PipelineDescription>, CheckpointError> {
    let db = open_db(dir, &SledConfig::default())?;
    let get = |key: &[u8]| sled_call(dir, "read from", || db.get(key));
    let Some(meta) = get(META_FORMAT)? else {
        return Ok(None);
    };
    match records::decode_meta(dir, &meta)? {
        1 | STORE_FORMAT_VERSION => {}
        found => {
            return Err(CheckpointError::NewerFormat {
                store: dir.to_path_buf(),
                found,
                supported: STORE_FORMAT_VERSION,
            })
        }
    }
    match get(META_PIPELINE)? {
        None => Ok(None),
        Some(v) => Ok(Some(records::decode_pipeline(dir, &v)?)),
    }
}

/// Opens the sled database in `path`. sled releases its file lock when its
/// last I/O thread lets go of the file, which can be a moment after the
/// previous opener (a stopped context in this process, or `weir` that just
/// exited) is gone: a locked database is retried for [`LOCK_WAIT_MAX`].
/// A store sled finds corrupt is retried once after removing snapshot
/// files sled never finished ([`remove_unfinished_snapshots`]).
fn open_db(path: &Path, config: &SledConfig) -> Result<sled::Db, CheckpointError> {
    let deadline = Instant::now() + LOCK_WAIT_MAX;
    let mut unfinished_removed = false;
    loop {
        let opened = quietly(|| {
            sled::Config::new()
                .path(path)
                .cache_capacity(config.cache_bytes_max)
                .flush_every_ms(None)
                .open()
        });
        let opened = match opened {
            Ok(o) => o,
            Err(panic) => {
                return Err(CheckpointError::Panicked {
                    store: path.to_path_buf(),
                    op: "open the checkpoint store in",
                    panic,
                })
            }
        };
        match opened {
            // sled reports a held lock as `Other` with this text.
            Err(sled::Error::Io(e)) if e.to_string().starts_with("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(CheckpointError::LockHeld {
                        dir: path.to_path_buf(),
                        wait_ms: LOCK_WAIT_MAX.as_millis() as u64,
                    });
                }
                std::thread::sleep(LOCK_POLL);
            }
            Err(sled::Error::Corruption { .. })
                if !unfinished_removed && remove_unfinished_snapshots(path)? > 0 =>
            {
                unfinished_removed = true;
            }
            other => {
                return other
                    .map_err(|e| CheckpointError::io("open the checkpoint store in", path, e))
            }
        }
    }
}

/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and
/// renames it to `snap.<lsn>`, removing older snapshots only after the
/// rename; but its open takes the greatest `snap.` name, `.generating`
/// included, and refuses the store when that file is short or fails its
/// CRC. A SIGKILL inside a snapshot write therefore left a checkpoint that
/// would not open. A `.generating` file was never made a snapshot (the
/// rename does that), and the snapshot before it and the log it covers are
/// still there: the file is removed (directory fsynced) and the open tried
/// once more. Called only after an open found the store corrupt, so never
/// while another opener holds the store (its lock would have been the error)
/// and never on a snapshot being written. Returns how many were removed.
pub(super) fn remove_unfinished_snapshots(path: &Path) -> Result<usize, CheckpointError> {
    use crate::storage::{RealFs, Storage};
    let failed = |e: std::io::Error| {
        CheckpointError::io(
            "remove an unfinished snapshot from",
            path,
            sled::Error::Io(e),
        )
    };
    let fs = RealFs;
    let mut removed = 0;
    for name in fs.list(path).map_err(failed)? {
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                store = %path.display(),
                file = %name,
                "removing a snapshot file sled never finished (a kill during its write); \
                 the store opens from the snapshot before it and its log"
            );
            fs.remove(&path.join(&name)).map_err(failed)?;
            removed += 1;
        }
    }
    if removed > 0 {
        fs.sync_dir(path).map_err(failed)?;
    }
    Ok(removed)
}

impl SledCheckpointStore {
    /// Opens (creating if needed) the store in `dir`. A damaged store is
    /// an error naming it and the way out, never a panic; so is a store
    /// whose files exist but hold nothing (not even the format record: its
    /// database file was truncated or replaced).
    pub fn open(dir: impl AsRef<Path>, config: SledConfig) -> Result<Self, CheckpointError> {
        Self::open_inner(dir.as_ref(), config, false)
    }

    /// [`SledCheckpointStore::open`], except that a store whose files
    /// exist but hold nothing is initialised as new: for a caller that
    /// knows nothing was ever committed beside it (a first start killed
    /// before the store recorded its format; the context checks that no
    /// input log has an id or a record).
    pub(crate) fn open_allowing_empty(
        dir: &Path,
        config: SledConfig,
    ) -> Result<Self, CheckpointError> {
        Self::open_inner(dir, config, true)
    }

    fn open_inner(dir: &Path, config: SledConfig, empty_ok: bool) -> Result<Self, CheckpointError> {
        let path = dir.to_path_buf();
        let existed = Self::exists(&path) && !empty_ok;
        let db = open_db(&path, &config)?;
        let mut store = SledCheckpointStore {
            db,
            path,
            config,
            ops: HashMap::new(),
            completed: VecDeque::new(),
        };
        store.check_format(existed)?;
        let mut completed = VecDeque::new();
        for b in store.batches() {
            let b = b?;
            if b.completed {
                completed.push_back(b.time_ms);
            }
        }
        store.completed = completed;
        Ok(store)
    }

    /// Whether a store was ever created in `dir`: sled's files are there
    /// (other files in the directory do not count).
    pub fn exists(dir: &Path) -> bool {
        SLED_FILES.iter().any(|f| dir.join(f).exists())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, CheckpointError> {
        sled_call(&self.path, "read from", || self.db.get(key))
    }

    pub(super) fn flush(&self) -> Result<(), CheckpointError> {
        sled_call(&self.path, "flush (fsync)", || self.db.flush())?;
        Ok(())
    }

    /// All batch records, oldest first.
    fn batches(
        &self,
    ) -> impl DoubleEndedIterator<Item = Result<BatchRecordV1, CheckpointError>> + '_ {
        guarded_scan(&self.path, "scan", self.db.scan_prefix(BATCH_PREFIX)).map(move |kv| {
            let (k, v) = kv?;
            records::decode_batch(&self.path, &k, &v)
        })
    }

    /// Completed batch records still kept, oldest first.
    pub fn completed(&self) -> Result<Vec<BatchSpec>, CheckpointError> {
        let mut out = Vec::new();
        for b in self.batches() {
            let b = b?;
            if b.completed {
                out.push(b.to_spec());
            }
        }
        Ok(out)
    }

    /// The stored pipeline description, if a pipeline ever started here.
    pub fn pipeline(&self) -> Result<Option<PipelineDescription>, CheckpointError> {
        match self.get(META_PIPELINE)? {
            None => Ok(None),
            Some(v) => Ok(Some(records::decode_pipeline(&self.path, &v)?)),
        }
    }

    /// The data directory identity this store records; `None` for a store
    /// written before identities (weir adopts one at its first open).
    pub fn data_dir_id(&self) -> Result<Option<DataDirId>, CheckpointError> {
        match self.get(META_DATADIR)? {
            None => Ok(None),
            Some(v) => Ok(Some(records::decode_datadir(&self.path, &v)?)),
        }
    }

    /// Records `id` as the store's data directory identity (durably).
    pub fn record_data_dir_id(&mut self, id: DataDirId) -> Result<(), CheckpointError> {
        let value = records::encode_datadir(id)?;
        sled_call(&self.path, "record the data directory id in", || {
            self.db.insert(META_DATADIR, value)
        })?;
        self.flush()
    }

    /// Removes the identity, as in a store written before identities.
    #[cfg(test)]
    pub(crate) fn forget_data_dir_id(&mut self) {
        self.db.remove(META_DATADIR).expect("remove");
        self.flush().expect("flush");
    }

    /// Drops one operator's committed state and forgets the operator in the
    /// stored pipeline description, so that a changed or removed operator
    /// no longer blocks the start. The explicit way out of an incompatible
    /// change; returns how many state keys were removed.
    pub fn reset_operator(&mut self, op: &str) -> Result<u64, CheckpointError> {
        // An operator and its internal nodes (`op.panes`, ...).
        let inner = format!("{op}.");
        let belongs = |name: &str| name == op || name.starts_with(&inner);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in guarded_scan(&self.path, "scan", self.db.scan_prefix(OP_PREFIX)) {
            let (k, v) = kv?;
            if op_of_key(OP_PREFIX, &k).is_some_and(|name| belongs(&name)) {
                n += records::decode_op(&self.path, &k, &v)?.keys;
                batch.remove(k);
            }
        }
        for kv in guarded_scan(&self.path, "scan", self.db.scan_prefix(STATE_PREFIX)) {
            let (k, _) = kv?;
            if op_of_key(STATE_PREFIX, &k).is_some_and(|name| belongs(&name)) {
                batch.remove(k);
            }
        }
        if let Some(mut desc) = self.pipeline()? {
            desc.operators.retain(|o| !belongs(&o.name));
            batch.insert(META_PIPELINE, records::encode_pipeline(&desc)?);
        }
        self.ops.clear();
        sled_call(&self.path, "reset an operator in", || {
            self.db.apply_batch(batch)
        })?;
        self.flush()?;
        tracing::warn!(store = %self.path.display(), operator = op, keys = n, "reset the state of an operator");
        Ok(n)
    }

    /// Every `(operator name, key, value)` under `kind` (`s/` or `o/`); a
    /// key whose name part is malformed is an error naming it.
    pub(super) fn named_entries(
        &self,
        kind: &'static [u8],
    ) -> impl Iterator<Item = Result<(String, sled::IVec, sled::IVec), CheckpointError>> + '_ {
        guarded_scan(&self.path, "scan", self.db.scan_prefix(kind)).map(move |kv| {
            let (k, v) = kv?;
            match op_of_key(kind, &k) {
                Some(op) => Ok((op, k, v)),
                None => Err(CheckpointError::malformed_key(
                    &self.path,
                    &k,
                    "an operator name after its prefix",
                )),
            }
        })
    }

    /// Operators with committed state and how many keys each holds.
    pub fn state_sizes(&self) -> Result<Vec<(String, u64)>, CheckpointError> {
        let mut out = Vec::new();
        for entry in self.named_entries(OP_PREFIX) {
            let (op, k, v) = entry?;
            let rec = records::decode_op(&self.path, &k, &v)?;
            if rec.keys > 0 {
                out.push((op, rec.keys));
            }
        }
        Ok(out)
    }

    /// A reader of committed state that shares this store's database, for
    /// other threads while the scheduler owns the store.
    pub fn state_reader(&self) -> SledStateReader {
        SledStateReader::new(self.db.clone(), self.path.clone())
    }

    fn op_record(&mut self, op: &str) -> Result<OpRecordV1, CheckpointError> {
        if let Some(r) = self.ops.get(op) {
            return Ok(*r);
        }
        let key = named_prefix(OP_PREFIX, op)?;
        let r = match self.get(&key)? {
            Some(v) => records::decode_op(&self.path, &key, &v)?,
            None => OpRecordV1::default(),
        };
        self.ops.insert(op.to_string(), r);
        Ok(r)
    }

    fn bucket(&self, key: &[u8]) -> Result<Bucket, CheckpointError> {
        match self.get(key)? {
            None => Ok(Bucket::new()),
            Some(v) => buckets::decode_bucket_map(&v)
                .map_err(|e| CheckpointError::damaged(&self.path, key, Damage::Bucket(e))),
        }
    }

    /// Everything `commit` writes besides the batch record: per operator
    /// the rewritten buckets and its new bucket record.
    fn state_writes(
        &mut self,
        deltas: &[Box<dyn StateDelta>],
        batch: &mut sled::Batch,
    ) -> Result<Vec<(String, OpRecordV1)>, CheckpointError> {
        let mut records = Vec::new();
        for (op, changes) in changes_per_op(deltas)? {
            let op = op.as_str();
            let rec = self.op_record(op)?;
            let prefix = state_prefix(op)?;
            let r = buckets::rebucket(
                rec.lh(),
                rec.keys,
                changes.into_iter().map(|c| (c.key, c.value)),
                self.config.bucket_keys_target,
                |b| self.bucket(&state_key(&prefix, b)),
            )?;
            for (b, bucket) in &r.buckets {
                let k = state_key(&prefix, *b);
                if bucket.is_empty() {
                    batch.remove(k);
                } else {
                    batch.insert(k, buckets::encode_bucket(bucket));
                }
            }
            let new = OpRecordV1 {
                level: r.lh.level,
                split: r.lh.split,
                keys: r.keys,
            };
            batch.insert(named_prefix(OP_PREFIX, op)?, records::encode_op(op, new)?);
            records.push((op.to_string(), new));
        }
        Ok(records)
    }

    /// The record of pending batch `time_ms` (under `key`), or
    /// [`CheckpointError::NotPending`].
    fn pending_record(&self, time_ms: u64, key: &[u8]) -> Result<BatchRecordV1, CheckpointError> {
        let record = match self.get(key)? {
            Some(v) => records::decode_batch(&self.path, key, &v)?,
            None => return Err(CheckpointError::NotPending { time_ms }),
        };
        if record.completed {
            return Err(CheckpointError::NotPending { time_ms });
        }
        Ok(record)
    }
}

/// A batch's encoded changes, one entry per operator in first-seen order.
/// One rebucketing per operator: two deltas of one operator in a batch
/// would otherwise each start from the stored buckets, and the second would
/// overwrite the first's. Later changes win.
fn changes_per_op(
    deltas: &[Box<dyn StateDelta>],
) -> Result<Vec<(String, Vec<StateChange>)>, CheckpointError> {
    let mut per_op: Vec<(String, Vec<StateChange>)> = Vec::new();
    for d in deltas {
        let changes = d.encode().map_err(|source| CheckpointError::Encode {
            op: d.op().to_string(),
            source,
        })?;
        if changes.is_empty() {
            continue;
        }
        match per_op.iter_mut().find(|(name, _)| name == d.op()) {
            Some((_, all)) => all.extend(changes),
            None => per_op.push((d.op().to_string(), changes)),
        }
    }
    Ok(per_op)
}

impl CheckpointStore for SledCheckpointStore {
    fn allocate(&mut self, spec: &BatchSpec) -> Result<(), CheckpointError> {
        spec.assert_well_formed();
        if let Some(last) = self.last_allocated()? {
            if spec.time_ms <= last.time_ms {
                return Err(CheckpointError::OutOfOrder {
                    time_ms: spec.time_ms,
                    last_ms: last.time_ms,
                });
            }
        }
        let record = records::encode_batch(&BatchRecordV1::from_spec(spec, false))?;
        self.db
            .insert(batch_key(spec.time_ms), record)
            .map_err(|e| CheckpointError::io("record a batch in", &self.path, e))?;
        // The batch's lineage is durable before any of it runs.
        self.flush()
    }

    fn commit(
        &mut self,
        time_ms: u64,
        deltas: &[Box<dyn StateDelta>],
    ) -> Result<(), CheckpointError> {
        let key = batch_key(time_ms);
        let record = self.pending_record(time_ms, &key)?;
        let mut batch = sled::Batch::default();
        let records = match self.state_writes(deltas, &mut batch) {
            Ok(r) => r,
            Err(e) => {
                self.ops.clear();
                return Err(e);
            }
        };
        let done = BatchRecordV1 {
            completed: true,
            ..record
        };
        batch.insert(&key[..], records::encode_batch(&done)?);
        // Prune the oldest completed records beyond the limit, in the same
        // atomic batch; their times are remembered, so this is no scan.
        let keep = self.config.completed_batches_max.saturating_sub(1);
        let prune = self.completed.len().saturating_sub(keep);
        for t in self.completed.iter().take(prune) {
            assert_ne!(*t, time_ms, "pruning the record being completed");
            batch.remove(&batch_key(*t)[..]);
        }
        let written = sled_call(&self.path, "commit a batch to", || {
            self.db.apply_batch(batch)
        })
        .and_then(|()| self.flush());
        if let Err(e) = written {
            // Unknown how much is durable: re-read everything next time.
            self.ops.clear();
            return Err(e);
        }
        self.completed.drain(..prune);
        self.completed.push_back(time_ms);
        for (op, r) in records {
            self.ops.insert(op, r);
        }
        Ok(())
    }

    fn pending(&self) -> Result<Vec<BatchSpec>, CheckpointError> {
        let mut out = Vec::new();
        for b in self.batches() {
            let b = b?;
            if !b.completed {
                out.push(b.to_spec());
            }
        }
        Ok(out)
    }

    fn last_allocated(&self) -> Result<Option<BatchSpec>, CheckpointError> {
        match self.batches().next_back() {
            None => Ok(None),
            Some(b) => Ok(Some(b?.to_spec())),
        }
    }

    fn load_state(&self, op: &str) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, CheckpointError> {
        let out = load_buckets(&self.db, &self.path, op)?;
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    fn load_encoded(&self, op: &str) -> Result<Option<Box<dyn EncodedState>>, CheckpointError> {
        if let Some(b) = CheckedBuckets::load(&self.db, &self.path, op)? {
            return Ok(Some(Box::new(b)));
        }
        // An operator whose committed state emptied keeps its record: it
        // has state (none), so an initial state is not applied again.
        Ok(match self.get(&named_prefix(OP_PREFIX, op)?)? {
            Some(_) => Some(Box::new(Vec::<(Vec<u8>, Vec<u8>)>::new())),
            None => None,
        })
    }

    fn state_reader(&self) -> Arc<dyn StateReader> {
        Arc::new(SledCheckpointStore::state_reader(self))
    }

    fn check_pipeline(&mut self, desc: &PipelineDescription) -> Result<(), CheckpointError> {
        if let Some(old) = self.pipeline()? {
            let changes = compat::incompatibilities(&old, desc);
            if !changes.is_empty() {
                return Err(CheckpointError::Incompatible {
                    store: self.path.display().to_string(),
                    changes,
                });
            }
        }
        let rec = records::encode_pipeline(desc)?;
        sled_call(&self.path, "record the pipeline in", || {
            self.db.insert(META_PIPELINE, rec)
        })?;
        self.flush()
    }

    fn skipped(&self) -> Result<Vec<super::StreamRange>, CheckpointError> {
        Ok(self
            .skips()?
            .into_iter()
            .map(|r| super::StreamRange {
                source: r.stream,
                start: r.from,
                end: r.to,
            })
            .collect())
    }
}

mod skips;
#[cfg(test)]
mod tests;
