//! The transactional key-value sink: `pairs.save_to_kv("name")` upserts
//! every batch's `(key, value)` records into the table `name`, kept in the
//! checkpoint store and written **inside the batch's commit** (the same
//! sled `apply_batch` + flush as the state changes and "batch complete"),
//! so the table shows each batch exactly once.
//!
//! Semantics: per batch, the last record per key wins, "last" in the
//! stream's batch order (partition by partition, records in order), which
//! is deterministic for a given pipeline and input; keys not in the batch
//! keep their value. The table is an operator `kv:<name>` (kind
//! `kv_table`, stateful) in the pipeline description, so removing it is a
//! refused change like removing any state (`weir checkpoint
//! reset-operator DIR kv:<name>` drops it).
//!
//! Reading: [`KvTable`] (typed `get` and `scan`) from a running context
//! (`StreamingContext::kv_table`) or offline from a stopped data directory
//! ([`KvTable::open`]); untyped for the command line ([`RawTable`],
//! `weir kv get|scan`).
//!
//! Limits: one batch's records for a table are held in memory once more,
//! encoded (bounded by `batch_records_max`); `scan` loads the whole table.
//! Must never: keep the table in the engine's memory (it is written, not
//! read, by the pipeline), or write outside the commit.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;

use crate::codec::{self, CodecError};
use crate::dstream::graph::OutputEntry;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::checkpoint::StateReader;
use crate::dstream::{
    meta, BatchCtx, DStream, Data, EngineError, StateChange, StateDelta, StateStore,
};

use super::SinkError;

/// The operator (and state) name of table `table`.
pub fn table_op(table: &str) -> String {
    format!("kv:{table}")
}

/// One batch's writes to one table: already encoded, in key byte order.
struct TableDelta {
    op: String,
    changes: Vec<StateChange>,
}

impl StateDelta for TableDelta {
    fn op(&self) -> &str {
        &self.op
    }
    fn len(&self) -> usize {
        self.changes.len()
    }
    fn encode(&self) -> Result<Vec<StateChange>, CodecError> {
        Ok(self.changes.clone())
    }
    fn apply(&self, _store: &mut StateStore) -> Result<(), EngineError> {
        // The table lives only in the checkpoint store.
        Ok(())
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Data + std::hash::Hash + Ord + Serialize + DeserializeOwned,
    V: Data + Serialize + DeserializeOwned,
{
    /// Upserts every batch's records into the key-value table `table`,
    /// exactly once (see the module docs). Read it with
    /// `StreamingContext::kv_table` or `weir kv get|scan DIR TABLE`.
    pub fn save_to_kv(&self, table: &str) -> Result<(), EngineError> {
        let id = self
            .g
            .add_node(meta("kv_table", vec![self.id], self.slide_ms(), vec![]));
        self.g.set_name(id, &table_op(table));
        self.g.set_stateful(id);
        let s = self.s.clone();
        self.g.add_output(OutputEntry {
            node: id,
            kind: "save_to_kv",
            slide_ms: self.slide_ms(),
            run: Arc::new(move |ctx: &BatchCtx| {
                let d = s.prepare(ctx)?;
                let parts = ctx.collect(&*d)?;
                let fail = |e: CodecError| EngineError::Output {
                    kind: "save_to_kv",
                    input: ctx.name(id).to_string(),
                    reason: Box::new(e),
                };
                // Last write per key wins: later records overwrite.
                let mut last: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
                for (k, v) in parts.iter().flatten() {
                    last.insert(
                        codec::encode(k).map_err(fail)?,
                        codec::encode(v).map_err(fail)?,
                    );
                }
                ctx.push_delta(Box::new(TableDelta {
                    op: ctx.name(id).to_string(),
                    changes: last
                        .into_iter()
                        .map(|(key, value)| StateChange {
                            key,
                            value: Some(value),
                        })
                        .collect(),
                }));
                Ok(())
            }),
        })
    }
}

/// A typed reader of one key-value table.
pub struct KvTable<K, V> {
    reader: Arc<dyn StateReader>,
    table: String,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for KvTable<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvTable")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl<K: Serialize + DeserializeOwned + Ord, V: DeserializeOwned> KvTable<K, V> {
    /// A reader of `table` over a store's state reader.
    pub fn new(reader: Arc<dyn StateReader>, table: &str) -> Self {
        KvTable {
            reader,
            table: table.to_string(),
            _t: PhantomData,
        }
    }

    /// Opens `table` of the stopped data directory `data_dir` (sled allows
    /// one process at a time: stop weir first, or read through the running
    /// context).
    pub fn open(data_dir: impl AsRef<Path>, table: &str) -> crate::Result<Self> {
        Ok(Self::new(
            Arc::new(open_table(data_dir.as_ref(), table)?),
            table,
        ))
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &K) -> crate::Result<Option<V>> {
        let k = codec::encode(key)?;
        let op = table_op(&self.table);
        match self.reader.get(&op, &k)? {
            None => Ok(None),
            Some(v) => Ok(Some(self.decode(&v)?)),
        }
    }

    /// Every committed entry, in key order.
    pub fn scan(&self) -> crate::Result<Vec<(K, V)>> {
        let op = table_op(&self.table);
        let mut out: Vec<(K, V)> = Vec::new();
        for (k, v) in self.reader.scan(&op)? {
            out.push((self.decode(&k)?, self.decode(&v)?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, SinkError> {
        codec::decode(bytes).map_err(|source| SinkError::KvDecode {
            table: self.table.clone(),
            source,
        })
    }
}

/// Opens the checkpoint of the stopped `data_dir` for reading `table`,
/// refusing a table no pipeline there declared (naming the ones it has).
fn open_table(data_dir: &Path, table: &str) -> crate::Result<crate::checkpoint::SledStateReader> {
    let store = crate::checkpoint::open_existing(data_dir).map_err(|e| match e {
        crate::Error::Usage(_) => e,
        e => crate::Error::Usage(format!(
            "{e}. If weir is running on {}, stop it first (sled lets one process open a \
             checkpoint) or read through the running context (`StreamingContext::kv_table`)",
            data_dir.display()
        )),
    })?;
    let tables: Vec<String> = store
        .pipeline()?
        .map(|p| {
            p.operators
                .iter()
                .filter(|o| o.kind == "kv_table")
                .filter_map(|o| o.name.strip_prefix("kv:").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !tables.iter().any(|t| t == table) {
        return Err(crate::Error::Usage(format!(
            "{} has no key-value table `{table}`; its tables: {}",
            data_dir.display(),
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            }
        )));
    }
    Ok(store.state_reader())
}

/// How the command line reads and shows untyped keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// UTF-8 text (`String`, `Text`).
    Text,
    /// An unsigned integer (`u8` to `u64`).
    Unsigned,
    /// A signed integer (`i8` to `i64`).
    Signed,
    /// An `f64`.
    Float,
    /// The encoded bytes in hex.
    Hex,
    /// Values only: the first of unsigned, text that decodes, else hex.
    Auto,
}

impl std::str::FromStr for Shape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "string" => Shape::Text,
            "u64" => Shape::Unsigned,
            "i64" => Shape::Signed,
            "f64" => Shape::Float,
            "hex" => Shape::Hex,
            "auto" => Shape::Auto,
            _ => {
                return Err(format!(
                    "`{s}`: expected string, u64, i64, f64, hex or auto"
                ))
            }
        })
    }
}

/// Encodes a key given on the command line as `shape`.
pub fn encode_key(key: &str, shape: Shape) -> crate::Result<Vec<u8>> {
    let bad = |what: &str| crate::Error::Usage(format!("key `{key}` is not {what}"));
    Ok(match shape {
        Shape::Text | Shape::Auto => codec::encode(key)?,
        Shape::Unsigned => codec::encode(&key.parse::<u64>().map_err(|_| bad("a u64"))?)?,
        Shape::Signed => codec::encode(&key.parse::<i64>().map_err(|_| bad("an i64"))?)?,
        Shape::Float => codec::encode(&key.parse::<f64>().map_err(|_| bad("an f64"))?)?,
        Shape::Hex => (0..key.len())
            .step_by(2)
            .map(|i| {
                key.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("hex bytes"))?,
    })
}

/// Shows encoded bytes as `shape`; bytes that do not decode as `shape`
/// are shown as `hex:<bytes>`.
pub fn show_bytes(bytes: &[u8], shape: Shape) -> String {
    let hex = || {
        let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("hex:{h}")
    };
    match shape {
        Shape::Text => codec::decode::<String>(bytes).unwrap_or_else(|_| hex()),
        Shape::Unsigned => codec::decode::<u64>(bytes).map_or_else(|_| hex(), |n| n.to_string()),
        Shape::Signed => codec::decode::<i64>(bytes).map_or_else(|_| hex(), |n| n.to_string()),
        Shape::Float => codec::decode::<f64>(bytes).map_or_else(|_| hex(), |n| n.to_string()),
        Shape::Hex => hex(),
        Shape::Auto => codec::decode::<u64>(bytes)
            .map(|n| n.to_string())
            .or_else(|_| codec::decode::<String>(bytes))
            .unwrap_or_else(|_| hex()),
    }
}

/// Renders encoded entries, sorted by key (numerically for numeric keys).
pub fn show_sorted(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    key_as: Shape,
    value_as: Shape,
) -> Vec<(String, String)> {
    let mut rows: Vec<(Option<f64>, String, String)> = entries
        .iter()
        .map(|(k, v)| {
            let key = show_bytes(k, key_as);
            let num = match key_as {
                Shape::Unsigned | Shape::Signed | Shape::Float => key.parse::<f64>().ok(),
                _ => None,
            };
            (num, key, show_bytes(v, value_as))
        })
        .collect();
    rows.sort_by(|a, b| {
        a.0.partial_cmp(&b.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.cmp(&b.1))
    });
    rows.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// An untyped reader of a table in a stopped data directory (the command
/// line's view).
pub struct RawTable {
    reader: crate::checkpoint::SledStateReader,
    op: String,
}

impl RawTable {
    /// Opens `table` of `data_dir`, refusing a name no pipeline there ever
    /// declared.
    pub fn open(data_dir: &Path, table: &str) -> crate::Result<Self> {
        Ok(RawTable {
            reader: open_table(data_dir, table)?,
            op: table_op(table),
        })
    }

    /// The encoded value of an encoded key.
    pub fn get(&self, key: &[u8]) -> crate::Result<Option<Vec<u8>>> {
        Ok(self.reader.get(&self.op, key)?)
    }

    /// Every encoded entry, in no particular order.
    pub fn scan(&self) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.reader.scan(&self.op)?)
    }
}
