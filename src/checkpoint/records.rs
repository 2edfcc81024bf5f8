//! The checkpoint's byte formats: every key and every versioned value the
//! sled store holds (the counterpart of `wal/format.rs`; the table is in
//! `docs/checkpoint-format.md`), and their encode/decode.
//!
//! | key | value |
//! |---|---|
//! | `m/format` | [`StoreMeta`]: the store's format version |
//! | `m/datadir` | [`DataDirRecord`]: the data directory's identity, shared with its input logs |
//! | `m/pipeline` | [`PipelineRecord`]: the description (fingerprint) of the pipeline the state belongs to |
//! | `b/` + batch time (u64 BE) | [`BatchRecord`]: the batch's lineage (per-source ranges) and whether it completed |
//! | `o/` + op name length (u16 BE) + op name | [`OpRecord`]: the operator's bucket addressing and key count |
//! | `s/` + op name length (u16 BE) + op name + bucket (u32 BE) | one bucket of the operator's state (`buckets.rs`) |
//! | `k/` + stream name length (u16 BE) + stream name + first record (u64 BE) | [`SkipRecord`]: a record range `weir wal skip` marked as never to be processed, with its audit line |
//!
//! Every value is a versioned enum encoded through [`crate::codec`],
//! distinct from the in-memory types. Encoding asserts the invariants of
//! what is about to be written (a bug of ours must not reach the disk);
//! decoding checks them and returns [`CheckpointError::Damaged`] naming the
//! key (the bytes come from disk: damage is an error, never a panic).
//!
//! Limits: an operator name is at most 65,535 bytes (its length is a u16
//! in the key); a bucket number is below 2^32 (u32 in the key, kept there
//! by `buckets::LEVEL_MAX`); a decoded value at most
//! `codec::DECODE_BYTES_MAX` (64 MiB).
//! Must never: do I/O (the store reads and writes the bytes), or change a
//! layout without a new version (a new enum variant or format version).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::buckets::{LinearHash, LEVEL_MAX};
use super::error::{CheckpointError, Damage};
use super::{BatchSpec, DataDirId, StreamRange};
use crate::codec;
use crate::dstream::{OperatorDesc, PipelineDescription};

/// The store format this build writes (see `docs/checkpoint-format.md`).
pub const STORE_FORMAT_VERSION: u32 = 2;

/// Key of the store's format version.
pub(crate) const META_FORMAT: &[u8] = b"m/format";
/// Key of the data directory's identity.
pub(crate) const META_DATADIR: &[u8] = b"m/datadir";
/// Key of the pipeline description.
pub(crate) const META_PIPELINE: &[u8] = b"m/pipeline";
/// Prefix of batch records.
pub(crate) const BATCH_PREFIX: &[u8] = b"b/";
/// Prefix of state buckets.
pub(crate) const STATE_PREFIX: &[u8] = b"s/";
/// Prefix of operator (bucket addressing) records.
pub(crate) const OP_PREFIX: &[u8] = b"o/";
/// Prefix of skipped record ranges (`weir wal skip`).
pub(crate) const SKIP_PREFIX: &[u8] = b"k/";
/// Bytes of an operator name shown in an error.
const NAME_SHOWN_BYTES_MAX: usize = 40;
/// Bytes of a key shown in an error.
const KEY_SHOWN_BYTES_MAX: usize = 64;

/// Store metadata, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreMeta {
    V1 { format_version: u32 },
}

/// The data directory's identity, versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataDirRecord {
    V1 { id: [u8; 16] },
}

/// A record range deliberately skipped (`weir wal skip`), versioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipRecord {
    V1(SkipRecordV1),
}

/// Version 1 of a skipped range and its audit line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipRecordV1 {
    /// The input stream.
    pub stream: String,
    /// First record skipped.
    pub from: u64,
    /// End (exclusive) of the range.
    pub to: u64,
    /// Why, as the operator said it.
    pub reason: String,
    /// When, in ms since the Unix epoch.
    pub time_ms: u64,
    /// Who ($USER) and where (the host name), as far as known.
    pub user: String,
    /// The host name.
    pub host: String,
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
    /// The record's bucket addressing.
    pub(crate) fn lh(&self) -> LinearHash {
        LinearHash {
            level: self.level,
            split: self.split,
        }
    }

    /// Why the addressing is impossible (`level` above
    /// [`LEVEL_MAX`], or `split` not below `2^level`), as (field, found,
    /// expected); `None` if it is sound.
    fn flaw(&self) -> Option<(&'static str, String, String)> {
        if self.level > LEVEL_MAX {
            return Some((
                "linear hashing level",
                self.level.to_string(),
                format!("at most {LEVEL_MAX}"),
            ));
        }
        let split_max = 1u64 << self.level;
        if self.split >= split_max {
            return Some((
                "split position",
                self.split.to_string(),
                format!("below 2^{} = {split_max}", self.level),
            ));
        }
        None
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
    /// The record of `spec`.
    pub(crate) fn from_spec(spec: &BatchSpec, completed: bool) -> Self {
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

    /// The in-memory spec of this record.
    pub(crate) fn to_spec(&self) -> BatchSpec {
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

    /// Why the record is impossible under the key of batch `key_ms`, as
    /// (field, found, expected); `None` if it is sound.
    fn flaw(&self, key_ms: u64) -> Option<(&'static str, String, String)> {
        if self.time_ms != key_ms {
            return Some((
                "batch time",
                format!("{} ms", self.time_ms),
                format!("{key_ms} ms (the time in its key)"),
            ));
        }
        if self.zero_ms > self.time_ms {
            return Some((
                "zero time",
                format!("{} ms", self.zero_ms),
                format!("at most the batch time {} ms", self.time_ms),
            ));
        }
        self.ranges
            .iter()
            .find(|(_, start, end)| start > end)
            .map(|(source, start, end)| {
                (
                    "record range",
                    format!("{start}..{end} for source `{source}`"),
                    "a start at most its end".to_string(),
                )
            })
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

    fn to_desc(&self, partitions: usize) -> PipelineDescription {
        PipelineDescription {
            batch_interval_ms: self.batch_interval_ms,
            partitions,
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

// ---- keys ----

/// `b/` + the batch time, big-endian (so that key order is batch order).
pub(crate) fn batch_key(time_ms: u64) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..2].copy_from_slice(BATCH_PREFIX);
    k[2..].copy_from_slice(&time_ms.to_be_bytes());
    k
}

/// The batch time in a `b/` key; `None` if the key is not one.
fn time_of_batch_key(key: &[u8]) -> Option<u64> {
    let rest: [u8; 8] = key.strip_prefix(BATCH_PREFIX)?.try_into().ok()?;
    Some(u64::from_be_bytes(rest))
}

/// `s/` + `name(op)`: the prefix of every bucket of `op`.
pub(crate) fn state_prefix(op: &str) -> Result<Vec<u8>, CheckpointError> {
    named_prefix(STATE_PREFIX, op)
}

/// The key of bucket `bucket` under a [`state_prefix`].
pub(crate) fn state_key(prefix: &[u8], bucket: u64) -> Vec<u8> {
    // `buckets::LEVEL_MAX` keeps bucket numbers below 2^32.
    let Ok(bucket) = u32::try_from(bucket) else {
        panic!("bucket number {bucket} does not fit the u32 of a state key");
    };
    let mut k = Vec::with_capacity(prefix.len() + 4);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// `kind` + the length of `op` (u16 BE) + `op`.
pub(crate) fn named_prefix(kind: &[u8], op: &str) -> Result<Vec<u8>, CheckpointError> {
    let len = u16::try_from(op.len()).map_err(|_| CheckpointError::NameTooLong {
        len: op.len(),
        start: name_start(op).to_string(),
    })?;
    let mut p = Vec::with_capacity(2 + 2 + op.len());
    p.extend_from_slice(kind);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(op.as_bytes());
    Ok(p)
}

/// The first characters of `op` (at most [`NAME_SHOWN_BYTES_MAX`] bytes,
/// cut at a character boundary).
fn name_start(op: &str) -> &str {
    let mut end = op.len().min(NAME_SHOWN_BYTES_MAX);
    while !op.is_char_boundary(end) {
        end -= 1;
    }
    &op[..end]
}

/// The operator name in a key under `kind` (`s/` or `o/`); `None` if the
/// key is too short for the length it states or the name is not UTF-8.
pub(crate) fn op_of_key(kind: &[u8], k: &[u8]) -> Option<String> {
    let rest = k.strip_prefix(kind)?;
    let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let name = rest.get(2..2 + len)?;
    String::from_utf8(name.to_vec()).ok()
}

/// A key in printable form: ASCII graphic bytes as they are, others as
/// `.`, at most [`KEY_SHOWN_BYTES_MAX`] bytes, with its length.
pub(crate) fn show_key(k: &[u8]) -> String {
    let printable: String = k
        .iter()
        .take(KEY_SHOWN_BYTES_MAX)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    format!("`{printable}` ({} bytes)", k.len())
}

// ---- values ----

fn encode<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, CheckpointError> {
    codec::encode(value).map_err(|source| CheckpointError::EncodeRecord {
        key: show_key(key),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    store: &Path,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, CheckpointError> {
    codec::decode(bytes).map_err(|e| CheckpointError::damaged(store, key, Damage::Codec(e)))
}

/// The value of `m/format` for `format_version`.
pub(crate) fn encode_meta(format_version: u32) -> Result<Vec<u8>, CheckpointError> {
    assert!(
        (1..=STORE_FORMAT_VERSION).contains(&format_version),
        "writing format version {format_version}, this build knows 1..={STORE_FORMAT_VERSION}"
    );
    encode(META_FORMAT, &StoreMeta::V1 { format_version })
}

/// The format version in the value of `m/format` (at least 1; newer than
/// this build is the caller's to judge).
pub(crate) fn decode_meta(store: &Path, bytes: &[u8]) -> Result<u32, CheckpointError> {
    let StoreMeta::V1 { format_version } = decode(store, META_FORMAT, bytes)?;
    if format_version == 0 {
        return Err(CheckpointError::bad_field(
            store,
            META_FORMAT,
            "format version",
            0,
            format!("1 to {STORE_FORMAT_VERSION} (or higher, from a newer weir)"),
        ));
    }
    Ok(format_version)
}

/// The value of `m/datadir` for `id`.
pub(crate) fn encode_datadir(id: DataDirId) -> Result<Vec<u8>, CheckpointError> {
    encode(META_DATADIR, &DataDirRecord::V1 { id: id.to_bytes() })
}

/// The identity in the value of `m/datadir` (never all zero).
pub(crate) fn decode_datadir(store: &Path, bytes: &[u8]) -> Result<DataDirId, CheckpointError> {
    let DataDirRecord::V1 { id } = decode(store, META_DATADIR, bytes)?;
    DataDirId::from_bytes(id).ok_or_else(|| {
        CheckpointError::bad_field(
            store,
            META_DATADIR,
            "data directory id",
            "all zero",
            "16 random bytes",
        )
    })
}

/// Key and value of skip record `r`.
pub(crate) fn encode_skip(r: &SkipRecordV1) -> Result<(Vec<u8>, Vec<u8>), CheckpointError> {
    assert!(r.from < r.to, "writing an empty or reversed skipped range");
    let mut key = named_prefix(SKIP_PREFIX, &r.stream)?;
    key.extend_from_slice(&r.from.to_be_bytes());
    let value = encode(&key, &SkipRecord::V1(r.clone()))?;
    Ok((key, value))
}

/// The skip record under `key` (a `k/` key), checked.
pub(crate) fn decode_skip(
    store: &Path,
    key: &[u8],
    bytes: &[u8],
) -> Result<SkipRecordV1, CheckpointError> {
    let SkipRecord::V1(r) = decode(store, key, bytes)?;
    if r.from >= r.to {
        return Err(CheckpointError::bad_field(
            store,
            key,
            "skipped range",
            format!("{}..{}", r.from, r.to),
            "a non-empty range",
        ));
    }
    Ok(r)
}

/// The value of `b/<time>` for `record`.
pub(crate) fn encode_batch(record: &BatchRecordV1) -> Result<Vec<u8>, CheckpointError> {
    let key = batch_key(record.time_ms);
    if let Some((field, found, expected)) = record.flaw(record.time_ms) {
        panic!("writing an impossible batch record: its {field} is {found}, expected {expected}");
    }
    encode(&key, &BatchRecord::V1(record.clone()))
}

/// The batch record stored under `key` (a `b/` key), checked against it.
pub(crate) fn decode_batch(
    store: &Path,
    key: &[u8],
    bytes: &[u8],
) -> Result<BatchRecordV1, CheckpointError> {
    let Some(key_ms) = time_of_batch_key(key) else {
        return Err(CheckpointError::malformed_key(
            store,
            key,
            "a batch time of 8 bytes after `b/`",
        ));
    };
    let BatchRecord::V1(b) = decode(store, key, bytes)?;
    if let Some((field, found, expected)) = b.flaw(key_ms) {
        return Err(CheckpointError::bad_field(
            store, key, field, found, expected,
        ));
    }
    Ok(b)
}

/// The value of `o/name(op)` for `record`.
pub(crate) fn encode_op(op: &str, record: OpRecordV1) -> Result<Vec<u8>, CheckpointError> {
    if let Some((field, found, expected)) = record.flaw() {
        panic!("writing an impossible bucket record for `{op}`: its {field} is {found}, expected {expected}");
    }
    encode(&named_prefix(OP_PREFIX, op)?, &OpRecord::V1(record))
}

/// The bucket record stored under `key` (an `o/` key), checked.
pub(crate) fn decode_op(
    store: &Path,
    key: &[u8],
    bytes: &[u8],
) -> Result<OpRecordV1, CheckpointError> {
    let OpRecord::V1(r) = decode(store, key, bytes)?;
    if let Some((field, found, expected)) = r.flaw() {
        return Err(CheckpointError::bad_field(
            store, key, field, found, expected,
        ));
    }
    Ok(r)
}

/// The value of `m/pipeline` for `desc`.
pub(crate) fn encode_pipeline(desc: &PipelineDescription) -> Result<Vec<u8>, CheckpointError> {
    encode(
        META_PIPELINE,
        &PipelineRecord::V1(PipelineRecordV1::from_desc(desc)),
    )
}

/// The pipeline description in the value of `m/pipeline`.
pub(crate) fn decode_pipeline(
    store: &Path,
    bytes: &[u8],
) -> Result<PipelineDescription, CheckpointError> {
    let PipelineRecord::V1(p) = decode(store, META_PIPELINE, bytes)?;
    let Ok(partitions) = usize::try_from(p.partitions) else {
        return Err(CheckpointError::bad_field(
            store,
            META_PIPELINE,
            "partition count",
            p.partitions,
            format!("at most {}", usize::MAX),
        ));
    };
    Ok(p.to_desc(partitions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time_ms: u64, ranges: &[(u64, u64)]) -> BatchRecordV1 {
        BatchRecordV1 {
            time_ms,
            zero_ms: 0,
            ranges: ranges.iter().map(|&(s, e)| ("in".into(), s, e)).collect(),
            completed: false,
        }
    }

    fn detail(e: CheckpointError) -> String {
        match e {
            CheckpointError::Damaged { detail, .. } => detail.to_string(),
            other => panic!("not a damaged value: {other}"),
        }
    }

    #[test]
    fn a_batch_record_round_trips_under_its_key() {
        let r = record(2000, &[(5, 9)]);
        let bytes = encode_batch(&r).expect("encode");
        let got = decode_batch(Path::new("ck"), &batch_key(2000), &bytes).expect("decode");
        assert_eq!(got, r);
    }

    #[test]
    fn a_batch_record_under_another_time_or_with_a_reversed_range_is_damaged() {
        let store = Path::new("ck");
        let bytes = encode_batch(&record(2000, &[(5, 9)])).expect("encode");
        let moved = decode_batch(store, &batch_key(3000), &bytes).expect_err("moved");
        assert!(
            detail(moved).contains("batch time is 2000 ms, expected 3000 ms"),
            "moved"
        );
        let reversed = codec::encode(&BatchRecord::V1(record(2000, &[(9, 5)]))).expect("enc");
        let e = decode_batch(store, &batch_key(2000), &reversed).expect_err("reversed");
        assert!(detail(e).contains("9..5 for source `in`"));
        let short = decode_batch(store, b"b/12", &bytes).expect_err("short key");
        assert!(matches!(short, CheckpointError::MalformedKey { .. }));
    }

    #[test]
    #[should_panic(expected = "impossible batch record")]
    fn writing_a_reversed_range_is_a_bug() {
        let _ = encode_batch(&record(2000, &[(9, 5)]));
    }

    #[test]
    fn impossible_bucket_addressing_is_damaged() {
        let key = named_prefix(OP_PREFIX, "c").expect("key");
        for (level, split, want) in [
            (32, 0, "level is 32, expected at most 31"),
            (2, 4, "split position is 4, expected below 2^2 = 4"),
        ] {
            let r = OpRecordV1 {
                level,
                split,
                keys: 0,
            };
            let bytes = codec::encode(&OpRecord::V1(r)).expect("encode");
            let e = decode_op(Path::new("ck"), &key, &bytes).expect_err("impossible");
            let d = detail(e);
            assert!(d.contains(want), "{d}");
        }
        let ok = OpRecordV1 {
            level: 2,
            split: 3,
            keys: 9,
        };
        let bytes = encode_op("c", ok).expect("encode");
        assert_eq!(decode_op(Path::new("ck"), &key, &bytes).expect("ok"), ok);
    }

    #[test]
    fn format_version_zero_is_damaged_and_versions_round_trip() {
        let zero = codec::encode(&StoreMeta::V1 { format_version: 0 }).expect("encode");
        assert!(
            detail(decode_meta(Path::new("ck"), &zero).expect_err("zero"))
                .contains("format version is 0")
        );
        let two = encode_meta(2).expect("encode");
        assert_eq!(decode_meta(Path::new("ck"), &two).expect("decode"), 2);
    }

    #[test]
    fn a_long_name_is_refused_without_cutting_a_character() {
        let name = "é".repeat(40_000);
        match named_prefix(STATE_PREFIX, &name) {
            Err(CheckpointError::NameTooLong { len, start }) => {
                assert_eq!(len, 80_000);
                assert_eq!(start, "é".repeat(20));
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn keys_name_their_operator_and_print_readably() {
        let p = state_prefix("counts").expect("prefix");
        assert_eq!(
            op_of_key(STATE_PREFIX, &state_key(&p, 7)).as_deref(),
            Some("counts")
        );
        assert_eq!(op_of_key(STATE_PREFIX, b"s/\x00\x09ab"), None);
        assert_eq!(show_key(&batch_key(1)), "`b/........` (10 bytes)");
    }
}
