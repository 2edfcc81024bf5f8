//! The durable checkpoint store: batch lineage and operator state in sled.
//!
//! Owns one sled database (a directory) holding, in one keyspace so that a
//! commit is one atomic `apply_batch`:
//!
//! | key | value |
//! |---|---|
//! | `m/format` | [`StoreMeta`]: the store's format version |
//! | `m/pipeline` | [`PipelineRecord`]: the description (fingerprint) of the pipeline the state belongs to |
//! | `b/` + batch time (u64 BE) | [`BatchRecord`]: the batch's lineage (per-source ranges) and whether it completed |
//! | `o/` + op name length (u16 BE) + op name | [`OpRecord`]: the operator's bucket addressing and key count |
//! | `s/` + op name length (u16 BE) + op name + bucket (u32 BE) | one bucket of the operator's state ([`buckets`]) |
//!
//! Every value is a versioned enum encoded through [`crate::codec`] (state
//! buckets have their own versioned layout, [`buckets`]), distinct from the
//! in-memory types (`docs/checkpoint-format.md`). A format 1 store (one
//! value per state key) is migrated to format 2 at open, atomically.
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
//! is at most 65,535 bytes; opening waits at most `LOCK_WAIT_MAX` (2 s) for
//! a database another opener has just let go of.
//!
//! Must never: read or write the WAL; decide what a batch contains (the
//! scheduler does); skip a record it cannot decode (it fails naming the key).

pub mod buckets;
pub mod compat;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::dstream::state::EncodedState;
use crate::dstream::{OperatorDesc, PipelineDescription, StateChange, StateDelta};
use crate::scheduler::{BatchSpec, CheckpointError, CheckpointStore, StateReader, StreamRange};
use buckets::{Bucket, LinearHash};

/// The store format this build writes (see `docs/checkpoint-format.md`).
pub const STORE_FORMAT_VERSION: u32 = 2;
/// Default average number of state keys per bucket (per sled value).
pub const BUCKET_KEYS_TARGET_DEFAULT: u64 = 64;
/// Default sled page cache.
pub const CACHE_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default number of completed batch records kept.
pub const COMPLETED_BATCHES_MAX_DEFAULT: usize = 1000;

const META_FORMAT: &[u8] = b"m/format";
const META_PIPELINE: &[u8] = b"m/pipeline";
const BATCH_PREFIX: &[u8] = b"b/";
const STATE_PREFIX: &[u8] = b"s/";
const OP_PREFIX: &[u8] = b"o/";

/// Store metadata, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMeta {
    V1 { format_version: u32 },
}

/// Per operator: how its state is cut into buckets, versioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpRecord {
    V1(OpRecordV1),
}

/// Version 1 of an operator's bucket record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpRecordV1 {
    /// Linear hashing level: `2^level + split` buckets.
    pub level: u32,
    /// Buckets below `split` are split at this level.
    pub split: u64,
    /// Number of keys over all buckets.
    pub keys: u64,
}

impl OpRecordV1 {
    fn lh(&self) -> LinearHash {
        LinearHash {
            level: self.level,
            split: self.split,
        }
    }
}

/// A batch as persisted, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchRecord {
    V1(BatchRecordV1),
}

/// Version 1 of a persisted batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecordV1 {
    pub time_ms: u64,
    pub zero_ms: u64,
    /// `(source name, start, end)` per input stream.
    pub ranges: Vec<(String, u64, u64)>,
    pub completed: bool,
}

impl BatchRecordV1 {
    fn from_spec(spec: &BatchSpec, completed: bool) -> Self {
        BatchRecordV1 {
            time_ms: spec.time_ms,
            zero_ms: spec.zero_ms,
            ranges: spec
                .ranges
                .iter()
                .map(|r| (r.source.clone(), r.start, r.end))
                .collect(),
            completed,
        }
    }

    fn to_spec(&self) -> BatchSpec {
        BatchSpec {
            time_ms: self.time_ms,
            zero_ms: self.zero_ms,
            ranges: self
                .ranges
                .iter()
                .map(|(source, start, end)| StreamRange {
                    source: source.clone(),
                    start: *start,
                    end: *end,
                })
                .collect(),
        }
    }
}

/// The pipeline a checkpoint belongs to, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipelineRecord {
    V1(PipelineRecordV1),
}

/// Version 1 of the persisted pipeline description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineRecordV1 {
    pub batch_interval_ms: u64,
    pub partitions: u64,
    pub operators: Vec<OperatorRecordV1>,
}

/// Version 1 of one persisted operator description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecordV1 {
    pub name: String,
    pub kind: String,
    pub inputs: Vec<String>,
    pub params: Vec<(String, String)>,
    pub slide_ms: u64,
    pub stateful: bool,
}

impl PipelineRecordV1 {
    fn from_desc(d: &PipelineDescription) -> Self {
        PipelineRecordV1 {
            batch_interval_ms: d.batch_interval_ms,
            partitions: d.partitions as u64,
            operators: d
                .operators
                .iter()
                .map(|o| OperatorRecordV1 {
                    name: o.name.clone(),
                    kind: o.kind.clone(),
                    inputs: o.inputs.clone(),
                    params: o
                        .params
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    slide_ms: o.slide_ms,
                    stateful: o.stateful,
                })
                .collect(),
        }
    }

    fn to_desc(&self) -> PipelineDescription {
        PipelineDescription {
            batch_interval_ms: self.batch_interval_ms,
            partitions: self.partitions as usize,
            operators: self
                .operators
                .iter()
                .map(|o| OperatorDesc {
                    name: o.name.clone(),
                    kind: o.kind.clone(),
                    inputs: o.inputs.clone(),
                    params: o.params.iter().cloned().collect(),
                    slide_ms: o.slide_ms,
                    stateful: o.stateful,
                })
                .collect(),
            outputs: Vec::new(),
        }
    }
}

/// Configuration of a [`SledCheckpointStore`].
#[derive(Debug, Clone)]
pub struct SledConfig {
    pub cache_bytes_max: u64,
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
    db: sled::Db,
    path: PathBuf,
    config: SledConfig,
    /// Bucket records of operators seen so far (a cache of `o/…`; dropped
    /// whenever a commit fails, so it never runs ahead of sled).
    ops: HashMap<String, OpRecordV1>,
    /// Times of the completed batch records kept, oldest first: pruning
    /// pops from the front instead of scanning the batch log.
    completed: VecDeque<u64>,
}

fn batch_key(time_ms: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(BATCH_PREFIX);
    k[2..].copy_from_slice(&time_ms.to_be_bytes());
    k
}

fn state_prefix(op: &str) -> Result<Vec<u8>, CheckpointError> {
    named_prefix(STATE_PREFIX, op)
}

fn state_key(prefix: &[u8], bucket: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 4);
    k.extend_from_slice(prefix);
    // `buckets::LEVEL_MAX` keeps bucket numbers below 2^32.
    k.extend_from_slice(&(bucket as u32).to_be_bytes());
    k
}

fn named_prefix(kind: &[u8], op: &str) -> Result<Vec<u8>, CheckpointError> {
    let len = u16::try_from(op.len()).map_err(|_| {
        CheckpointError::Store(format!(
            "operator name of {} bytes exceeds the limit of 65535: `{}...`",
            op.len(),
            &op[..op.len().min(40)]
        ))
    })?;
    let mut p = Vec::with_capacity(2 + 2 + op.len());
    p.extend_from_slice(kind);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(op.as_bytes());
    Ok(p)
}

/// Longest [`SledCheckpointStore::open`] waits for another opener's lock.
pub const LOCK_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(2);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Opens the checkpoint of an existing data directory (`DATA_DIR/checkpoint`)
/// for the offline tools; a directory without one is a usage error saying
/// what to give instead (it is never created here).
pub fn open_existing(data_dir: &Path) -> crate::Result<SledCheckpointStore> {
    let dir = data_dir.join("checkpoint");
    if !dir.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{} has no checkpoint (expected {}); give the data directory weir runs with",
            data_dir.display(),
            dir.display()
        )));
    }
    SledCheckpointStore::open(&dir, SledConfig::default())
        .map_err(|e| crate::scheduler::SchedulerError::from(e).into())
}

impl SledCheckpointStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, config: SledConfig) -> Result<Self, CheckpointError> {
        let path = dir.as_ref().to_path_buf();
        // sled releases its file lock when its last I/O thread lets go of
        // the file, which can be a moment after the previous opener (a
        // stopped context in this process, or `weir` that just exited) is
        // gone: retry a locked database for a bounded time.
        let deadline = std::time::Instant::now() + LOCK_WAIT_MAX;
        let db = loop {
            let opened = sled::Config::new()
                .path(&path)
                .cache_capacity(config.cache_bytes_max)
                .flush_every_ms(None)
                .open();
            match opened {
                // sled reports a held lock as `Other` with this text.
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_POLL);
                }
                other => {
                    break other.map_err(|e| sled_err("open the checkpoint store in", &path, e))?
                }
            }
        };
        let mut store = SledCheckpointStore {
            db,
            path,
            config,
            ops: HashMap::new(),
            completed: VecDeque::new(),
        };
        match store.get(META_FORMAT)? {
            None => {
                let meta = codec::encode(&StoreMeta::V1 {
                    format_version: STORE_FORMAT_VERSION,
                })
                .map_err(|e| CheckpointError::Store(e.to_string()))?;
                store
                    .db
                    .insert(META_FORMAT, meta)
                    .map_err(|e| sled_err("initialise", &store.path, e))?;
                store.flush()?;
            }
            Some(bytes) => {
                let meta: StoreMeta = store.decode(META_FORMAT, &bytes)?;
                let StoreMeta::V1 { format_version } = meta;
                if format_version == 1 {
                    store.migrate_v1()?;
                } else if format_version != STORE_FORMAT_VERSION {
                    return Err(CheckpointError::Store(format!(
                        "checkpoint store {} has format version {format_version}; this build reads versions 1 and {STORE_FORMAT_VERSION} \
                         (it was written by a newer weir): run that weir, or start on a new data directory",
                        store.path.display(),
                    )));
                }
            }
        }
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

    /// Rewrites a format 1 store (one sled value per state key) into
    /// format 2 (buckets) in one atomic `apply_batch` + flush: a crash
    /// midway leaves the version 1 store as it was. Batch records and the
    /// pipeline are unchanged. Holds the whole state in memory once.
    fn migrate_v1(&mut self) -> Result<(), CheckpointError> {
        let mut by_op: std::collections::BTreeMap<String, Vec<(Vec<u8>, Vec<u8>)>> =
            std::collections::BTreeMap::new();
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
            let rec = OpRecord::V1(OpRecordV1 {
                level: r.lh.level,
                split: r.lh.split,
                keys: r.keys,
            });
            let enc = codec::encode(&rec).map_err(|e| CheckpointError::Store(e.to_string()))?;
            batch.insert(named_prefix(OP_PREFIX, &op)?, enc);
            keys += r.keys;
        }
        let meta = codec::encode(&StoreMeta::V1 {
            format_version: STORE_FORMAT_VERSION,
        })
        .map_err(|e| CheckpointError::Store(e.to_string()))?;
        batch.insert(META_FORMAT, meta);
        self.db
            .apply_batch(batch)
            .map_err(|e| sled_err("migrate", &self.path, e))?;
        self.flush()?;
        tracing::warn!(store = %self.path.display(), keys, "migrated the checkpoint from format 1 to format 2 (state in buckets)");
        Ok(())
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, CheckpointError> {
        self.db
            .get(key)
            .map_err(|e| sled_err("read from", &self.path, e))
    }

    fn flush(&self) -> Result<(), CheckpointError> {
        self.db
            .flush()
            .map_err(|e| sled_err("flush (fsync)", &self.path, e))?;
        Ok(())
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<T, CheckpointError> {
        codec::decode(bytes).map_err(|e| damaged(&self.path, key, e))
    }

    fn batch(&self, key: &[u8], bytes: &[u8]) -> Result<BatchRecordV1, CheckpointError> {
        let BatchRecord::V1(b) = self.decode(key, bytes)?;
        Ok(b)
    }

    /// All batch records, oldest first.
    fn batches(
        &self,
    ) -> impl DoubleEndedIterator<Item = Result<BatchRecordV1, CheckpointError>> + '_ {
        self.db.scan_prefix(BATCH_PREFIX).map(move |kv| {
            let (k, v) = kv.map_err(|e| sled_err("scan", &self.path, e))?;
            self.batch(&k, &v)
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
            Some(v) => {
                let PipelineRecord::V1(p) = self.decode(META_PIPELINE, &v)?;
                Ok(Some(p.to_desc()))
            }
        }
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
        for kv in self.db.scan_prefix(OP_PREFIX) {
            let (k, v) = kv.map_err(|e| sled_err("scan", &self.path, e))?;
            if op_of_key(OP_PREFIX, &k).is_some_and(|name| belongs(&name)) {
                n += self.op_record_from(&k, &v)?.keys;
                batch.remove(k);
            }
        }
        for kv in self.db.scan_prefix(STATE_PREFIX) {
            let (k, _) = kv.map_err(|e| sled_err("scan", &self.path, e))?;
            if op_of_key(STATE_PREFIX, &k).is_some_and(|name| belongs(&name)) {
                batch.remove(k);
            }
        }
        if let Some(mut desc) = self.pipeline()? {
            desc.operators.retain(|o| !belongs(&o.name));
            let rec = codec::encode(&PipelineRecord::V1(PipelineRecordV1::from_desc(&desc)))
                .map_err(|e| CheckpointError::Store(e.to_string()))?;
            batch.insert(META_PIPELINE, rec);
        }
        self.ops.clear();
        self.db
            .apply_batch(batch)
            .map_err(|e| sled_err("reset an operator in", &self.path, e))?;
        self.flush()?;
        tracing::warn!(store = %self.path.display(), operator = op, keys = n, "reset the state of an operator");
        Ok(n)
    }

    /// Every `(operator name, key, value)` under `kind` (`s/` or `o/`); a
    /// key whose name part is malformed is an error naming it.
    fn named_entries(
        &self,
        kind: &'static [u8],
    ) -> impl Iterator<Item = Result<(String, sled::IVec, sled::IVec), CheckpointError>> + '_ {
        self.db.scan_prefix(kind).map(move |kv| {
            let (k, v) = kv.map_err(|e| sled_err("scan", &self.path, e))?;
            match op_of_key(kind, &k) {
                Some(op) => Ok((op, k, v)),
                None => Err(CheckpointError::Store(format!(
                    "checkpoint store {}: malformed key {} (no operator name after its prefix)",
                    self.path.display(),
                    show_key(&k)
                ))),
            }
        })
    }

    /// Operators with committed state and how many keys each holds.
    pub fn state_sizes(&self) -> Result<Vec<(String, u64)>, CheckpointError> {
        let mut out = Vec::new();
        for entry in self.named_entries(OP_PREFIX) {
            let (op, k, v) = entry?;
            let rec = self.op_record_from(&k, &v)?;
            if rec.keys > 0 {
                out.push((op, rec.keys));
            }
        }
        Ok(out)
    }

    /// A reader of committed state that shares this store's database, for
    /// other threads while the scheduler owns the store.
    pub fn state_reader(&self) -> SledStateReader {
        SledStateReader {
            db: self.db.clone(),
            path: self.path.clone(),
        }
    }

    fn op_record_from(&self, key: &[u8], bytes: &[u8]) -> Result<OpRecordV1, CheckpointError> {
        let OpRecord::V1(r) = self.decode(key, bytes)?;
        Ok(r)
    }

    fn op_record(&mut self, op: &str) -> Result<OpRecordV1, CheckpointError> {
        if let Some(r) = self.ops.get(op) {
            return Ok(*r);
        }
        let key = named_prefix(OP_PREFIX, op)?;
        let r = match self.get(&key)? {
            Some(v) => self.op_record_from(&key, &v)?,
            None => OpRecordV1::default(),
        };
        self.ops.insert(op.to_string(), r);
        Ok(r)
    }

    fn bucket(&self, key: &[u8]) -> Result<Bucket, CheckpointError> {
        match self.get(key)? {
            None => Ok(Bucket::new()),
            Some(v) => buckets::decode_bucket_map(&v).map_err(|e| damaged(&self.path, key, e)),
        }
    }

    /// Everything `commit` writes besides the batch record: per operator
    /// the rewritten buckets and its new bucket record.
    fn state_writes(
        &mut self,
        deltas: &[Box<dyn StateDelta>],
        batch: &mut sled::Batch,
    ) -> Result<Vec<(String, OpRecordV1)>, CheckpointError> {
        // One rebucketing per operator: two deltas of one operator in a
        // batch would otherwise each start from the stored buckets, and the
        // second would overwrite the first's. Later changes win.
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
        let mut records = Vec::new();
        for (op, changes) in per_op {
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
            let enc = codec::encode(&OpRecord::V1(new))
                .map_err(|e| CheckpointError::Store(e.to_string()))?;
            batch.insert(named_prefix(OP_PREFIX, op)?, enc);
            records.push((op.to_string(), new));
        }
        Ok(records)
    }
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
    fn op_record(&self, op: &str) -> Result<OpRecordV1, CheckpointError> {
        let key = named_prefix(OP_PREFIX, op)?;
        match self
            .db
            .get(&key)
            .map_err(|e| sled_err("read from", &self.path, e))?
        {
            None => Ok(OpRecordV1::default()),
            Some(v) => match codec::decode::<OpRecord>(&v) {
                Ok(OpRecord::V1(r)) => Ok(r),
                Err(e) => Err(damaged(&self.path, &key, e)),
            },
        }
    }
}

impl StateReader for SledStateReader {
    fn get(&self, op: &str, key: &[u8]) -> Result<Option<Vec<u8>>, CheckpointError> {
        let prefix = state_prefix(op)?;
        let h = buckets::key_hash(key);
        // A commit may split the bucket between reading the addressing and
        // the bucket: read again until the addressing held still.
        let mut rec = self.op_record(op)?;
        loop {
            let bkey = state_key(&prefix, rec.lh().bucket_of(h));
            let found = match self
                .db
                .get(&bkey)
                .map_err(|e| sled_err("read from", &self.path, e))?
            {
                None => None,
                Some(v) => {
                    let mut hit = None;
                    buckets::decode_bucket(&v, |k, v| {
                        if k == key {
                            hit = Some(v.to_vec());
                        }
                    })
                    .map_err(|e| damaged(&self.path, &bkey, e))?;
                    hit
                }
            };
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
struct CheckedBuckets(Vec<sled::IVec>);

impl EncodedState for CheckedBuckets {
    fn for_each_pair(&self, f: &mut dyn FnMut(&[u8], &[u8])) {
        for b in &self.0 {
            // Cannot fail: `load_encoded` checked every bucket.
            let _ = buckets::decode_bucket(b, &mut *f);
        }
    }
}

/// Every entry of `op`'s buckets, bucket by bucket.
fn load_buckets(
    db: &sled::Db,
    path: &Path,
    op: &str,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, CheckpointError> {
    let prefix = state_prefix(op)?;
    let mut out = Vec::new();
    for kv in db.scan_prefix(&prefix) {
        let (k, v) = kv.map_err(|e| sled_err("load state from", path, e))?;
        buckets::decode_bucket(&v, |k, v| out.push((k.to_vec(), v.to_vec())))
            .map_err(|e| damaged(path, &k, e))?;
    }
    Ok(out)
}

fn damaged(path: &Path, key: &[u8], e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Store(format!(
        "checkpoint store {}: the value under key {} does not decode ({e}); the store is damaged or from another version",
        path.display(),
        show_key(key)
    ))
}

fn op_of_key(kind: &[u8], k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(kind)?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let name = rest.get(2..2 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

fn show_key(k: &[u8]) -> String {
    let printable: String = k
        .iter()
        .take(64)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    format!("`{printable}` ({} bytes)", k.len())
}

fn sled_err(op: &str, path: &Path, e: sled::Error) -> CheckpointError {
    CheckpointError::Store(format!(
        "could not {op} {}: {e}; check the disk and permissions, then restart",
        path.display()
    ))
}

impl CheckpointStore for SledCheckpointStore {
    fn allocate(&mut self, spec: &BatchSpec) -> Result<(), CheckpointError> {
        if let Some(last) = self.last_allocated()? {
            if spec.time_ms <= last.time_ms {
                return Err(CheckpointError::OutOfOrder {
                    time_ms: spec.time_ms,
                    last_ms: last.time_ms,
                });
            }
        }
        let record = codec::encode(&BatchRecord::V1(BatchRecordV1::from_spec(spec, false)))
            .map_err(|e| CheckpointError::Store(e.to_string()))?;
        self.db
            .insert(batch_key(spec.time_ms), record)
            .map_err(|e| sled_err("record a batch in", &self.path, e))?;
        // The batch's lineage is durable before any of it runs.
        self.flush()
    }

    fn commit(
        &mut self,
        time_ms: u64,
        deltas: &[Box<dyn StateDelta>],
    ) -> Result<(), CheckpointError> {
        let key = batch_key(time_ms);
        let record = match self.get(&key)? {
            Some(v) => self.batch(&key, &v)?,
            None => return Err(CheckpointError::NotPending { time_ms }),
        };
        if record.completed {
            return Err(CheckpointError::NotPending { time_ms });
        }
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
        let done = codec::encode(&BatchRecord::V1(done))
            .map_err(|e| CheckpointError::Store(e.to_string()))?;
        batch.insert(&key[..], done);
        // Prune the oldest completed records beyond the limit, in the same
        // atomic batch; their times are remembered, so this is no scan.
        let keep = self.config.completed_batches_max.saturating_sub(1);
        let prune = self.completed.len().saturating_sub(keep);
        for t in self.completed.iter().take(prune) {
            batch.remove(&batch_key(*t)[..]);
        }
        let written = self
            .db
            .apply_batch(batch)
            .map_err(|e| sled_err("commit a batch to", &self.path, e))
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
        // Checked once here, so that lending the pairs cannot fail.
        let prefix = state_prefix(op)?;
        let mut buckets = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, v) = kv.map_err(|e| sled_err("load state from", &self.path, e))?;
            buckets::decode_bucket(&v, |_, _| {}).map_err(|e| damaged(&self.path, &k, e))?;
            buckets.push(v);
        }
        Ok(if buckets.is_empty() {
            None
        } else {
            Some(Box::new(CheckedBuckets(buckets)))
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
        let rec = codec::encode(&PipelineRecord::V1(PipelineRecordV1::from_desc(desc)))
            .map_err(|e| CheckpointError::Store(e.to_string()))?;
        self.db
            .insert(META_PIPELINE, rec)
            .map_err(|e| sled_err("record the pipeline in", &self.path, e))?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dstream::{EngineError, StateChange, StateStore};

    /// A delta with fixed encoded changes.
    struct Fixed {
        op: String,
        changes: Vec<StateChange>,
    }

    impl StateDelta for Fixed {
        fn op(&self) -> &str {
            &self.op
        }
        fn len(&self) -> usize {
            self.changes.len()
        }
        fn encode(&self) -> Result<Vec<StateChange>, codec::CodecError> {
            Ok(self.changes.clone())
        }
        fn apply(&self, _store: &mut StateStore) -> Result<(), EngineError> {
            Ok(())
        }
    }

    fn delta(op: &str, changes: &[(&str, Option<&str>)]) -> Box<dyn StateDelta> {
        Box::new(Fixed {
            op: op.into(),
            changes: changes
                .iter()
                .map(|(k, v)| StateChange {
                    key: k.as_bytes().to_vec(),
                    value: v.map(|v| v.as_bytes().to_vec()),
                })
                .collect(),
        })
    }

    fn spec(t: u64, start: u64, end: u64) -> BatchSpec {
        BatchSpec {
            time_ms: t,
            zero_ms: 0,
            ranges: vec![StreamRange {
                source: "in".into(),
                start,
                end,
            }],
        }
    }

    fn pairs(v: Option<Vec<(Vec<u8>, Vec<u8>)>>) -> Vec<(String, String)> {
        v.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k).expect("k"),
                    String::from_utf8(v).expect("v"),
                )
            })
            .collect()
    }

    #[test]
    fn lineage_and_state_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
            assert_eq!(s.last_allocated().expect("last"), None);
            s.allocate(&spec(1000, 0, 10)).expect("allocate");
            s.commit(
                1000,
                &[delta("counts", &[("a", Some("1")), ("b", Some("2"))])],
            )
            .expect("commit");
            s.allocate(&spec(2000, 10, 25)).expect("allocate");
        }
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("reopen");
        assert_eq!(s.pending().expect("pending"), vec![spec(2000, 10, 25)]);
        assert_eq!(s.last_allocated().expect("last"), Some(spec(2000, 10, 25)));
        assert_eq!(
            pairs(s.load_state("counts").expect("load")),
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        s.commit(2000, &[delta("counts", &[("a", None), ("c", Some("3"))])])
            .expect("commit");
        assert_eq!(
            pairs(s.load_state("counts").expect("load")),
            vec![("b".into(), "2".into()), ("c".into(), "3".into())]
        );
        assert!(s.pending().expect("pending").is_empty());
        assert_eq!(s.state_sizes().expect("sizes"), vec![("counts".into(), 2)]);
    }

    /// A fresh store with batch 1000 allocated.
    fn with_batch_1000() -> (tempfile::TempDir, SledCheckpointStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        s.allocate(&spec(1000, 0, 1)).expect("allocate");
        (dir, s)
    }

    #[test]
    fn two_deltas_of_one_operator_in_a_batch_both_land() {
        let (_dir, mut s) = with_batch_1000();
        s.commit(
            1000,
            &[
                delta("c", &[("a", Some("1")), ("b", Some("1"))]),
                delta("c", &[("b", Some("2")), ("d", Some("3"))]),
            ],
        )
        .expect("commit");
        let mut got = pairs(s.load_state("c").expect("load"));
        got.sort();
        assert_eq!(
            got,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "2".into()),
                ("d".into(), "3".into())
            ]
        );
        assert_eq!(s.state_sizes().expect("sizes"), vec![("c".into(), 3)]);
    }

    #[test]
    fn operators_do_not_see_each_others_state() {
        let (_dir, mut s) = with_batch_1000();
        // "ab" + key "c" must not collide with "a" + key "bc".
        s.commit(
            1000,
            &[
                delta("ab", &[("c", Some("1"))]),
                delta("a", &[("bc", Some("2"))]),
            ],
        )
        .expect("commit");
        assert_eq!(
            pairs(s.load_state("ab").expect("load")),
            vec![("c".into(), "1".into())]
        );
        assert_eq!(
            pairs(s.load_state("a").expect("load")),
            vec![("bc".into(), "2".into())]
        );
        assert_eq!(s.load_state("zz").expect("load"), None);
    }

    #[test]
    fn refuses_out_of_order_and_unknown_or_repeated_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        s.allocate(&spec(2000, 0, 1)).expect("allocate");
        assert!(matches!(
            s.allocate(&spec(2000, 1, 2)),
            Err(CheckpointError::OutOfOrder { .. })
        ));
        assert!(matches!(
            s.commit(3000, &[]),
            Err(CheckpointError::NotPending { time_ms: 3000 })
        ));
        s.commit(2000, &[]).expect("commit");
        assert!(matches!(
            s.commit(2000, &[]),
            Err(CheckpointError::NotPending { time_ms: 2000 })
        ));
    }

    #[test]
    fn completed_records_are_pruned_to_the_limit_but_the_last_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SledConfig {
            completed_batches_max: 3,
            ..SledConfig::default()
        };
        let mut s = SledCheckpointStore::open(dir.path(), config).expect("open");
        for i in 1..=10u64 {
            s.allocate(&spec(i * 1000, i, i + 1)).expect("allocate");
            s.commit(i * 1000, &[]).expect("commit");
        }
        let kept: Vec<u64> = s
            .completed()
            .expect("completed")
            .iter()
            .map(|b| b.time_ms)
            .collect();
        assert_eq!(kept, vec![8000, 9000, 10000]);
        assert_eq!(
            s.last_allocated().expect("last").map(|b| b.time_ms),
            Some(10000)
        );
    }

    #[test]
    fn a_damaged_value_is_named_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
            s.db.insert(batch_key(5000), &b"\xff\xff garbage"[..])
                .expect("insert");
            s.flush().expect("flush");
        }
        // Open reads the batch log, so the damage stops it there.
        let e =
            SledCheckpointStore::open(dir.path(), SledConfig::default()).expect_err("must fail");
        let msg = e.to_string();
        assert!(
            msg.contains("does not decode") && msg.contains("b/"),
            "{msg}"
        );
    }

    #[test]
    fn a_damaged_bucket_is_named_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        s.allocate(&spec(1000, 0, 1)).expect("allocate");
        s.commit(1000, &[delta("counts", &[("a", Some("1"))])])
            .expect("commit");
        let k = state_key(&state_prefix("counts").expect("prefix"), 0);
        s.db.insert(&k, &[1u8, 9, 0, 0, 0][..]).expect("insert");
        let msg = s.load_state("counts").expect_err("must fail").to_string();
        assert!(
            msg.contains("s/") && msg.contains("at byte 5: key length needs 4 bytes, 0 left"),
            "{msg}"
        );
    }

    #[test]
    fn a_version_1_store_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // A format 1 store: one value per key under `s/` + name + key.
            let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
            s.allocate(&spec(1000, 0, 5)).expect("allocate");
            s.commit(1000, &[]).expect("commit");
            s.allocate(&spec(2000, 5, 9)).expect("allocate");
            let v1 = codec::encode(&StoreMeta::V1 { format_version: 1 }).expect("encode");
            s.db.insert(META_FORMAT, v1).expect("insert");
            // "\0\0\0\0" under `c` has the very key of `c`'s bucket 0.
            for (op, k, v) in [
                ("counts", "a", "1"),
                ("counts", "b", "2"),
                ("c", "x", "9"),
                ("c", "\0\0\0\0", "0"),
            ] {
                let mut key = state_prefix(op).expect("prefix");
                key.extend_from_slice(k.as_bytes());
                s.db.insert(key, v.as_bytes()).expect("insert");
            }
            s.flush().expect("flush");
        }
        let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("migrates");
        let mut counts = pairs(s.load_state("counts").expect("load"));
        counts.sort();
        assert_eq!(
            counts,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            pairs(s.load_state("c").expect("load")),
            vec![("\0\0\0\0".into(), "0".into()), ("x".into(), "9".into())]
        );
        assert_eq!(
            s.state_sizes().expect("sizes"),
            vec![("c".into(), 2), ("counts".into(), 2)]
        );
        assert_eq!(s.pending().expect("pending"), vec![spec(2000, 5, 9)]);
        let meta: StoreMeta = s
            .decode(
                META_FORMAT,
                &s.get(META_FORMAT).expect("get").expect("meta"),
            )
            .expect("decode");
        assert_eq!(meta, StoreMeta::V1 { format_version: 2 });
        let v3 = codec::encode(&StoreMeta::V1 { format_version: 3 }).expect("encode");
        s.db.insert(META_FORMAT, v3).expect("insert");
        s.flush().expect("flush");
        drop(s);
        let msg = SledCheckpointStore::open(dir.path(), SledConfig::default())
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("format version 3; this build reads versions 1 and 2")
                && msg.contains("new data directory"),
            "{msg}"
        );
    }

    #[test]
    fn many_keys_spread_over_buckets_and_read_back_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SledConfig {
            bucket_keys_target: 4,
            ..SledConfig::default()
        };
        let mut s = SledCheckpointStore::open(dir.path(), config.clone()).expect("open");
        let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        s.allocate(&spec(1000, 0, 1)).expect("allocate");
        let changes: Vec<(&str, Option<&str>)> =
            keys.iter().map(|k| (k.as_str(), Some("v"))).collect();
        s.commit(1000, &[delta("big", &changes)]).expect("commit");
        s.allocate(&spec(2000, 1, 2)).expect("allocate");
        s.commit(2000, &[delta("big", &[("k7", None), ("k8", Some("w"))])])
            .expect("commit");
        drop(s);
        let s = SledCheckpointStore::open(dir.path(), config).expect("reopen");
        assert_eq!(s.state_sizes().expect("sizes"), vec![("big".into(), 299)]);
        let buckets = s.db.scan_prefix(state_prefix("big").expect("p")).count();
        // 299 keys at 4 a bucket: 75 buckets addressed, a few may be empty.
        assert!((60..=75).contains(&buckets), "{buckets} buckets");
        let r = s.state_reader();
        assert_eq!(r.get("big", b"k8").expect("get"), Some(b"w".to_vec()));
        assert_eq!(r.get("big", b"k7").expect("get"), None);
        assert_eq!(r.get("big", b"k299").expect("get"), Some(b"v".to_vec()));
        assert_eq!(r.get("other", b"k1").expect("get"), None);
        let mut all = pairs(s.load_state("big").expect("load"));
        all.sort();
        let mut want: Vec<(String, String)> = keys
            .iter()
            .filter(|k| *k != "k7")
            .map(|k| (k.clone(), if k == "k8" { "w" } else { "v" }.to_string()))
            .collect();
        want.sort();
        assert_eq!(all, want);
    }
}
