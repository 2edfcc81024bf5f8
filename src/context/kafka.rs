//! Kafka input streams: [`StreamingContext::kafka_stream`] makes one
//! partition per Kafka topic partition this instance owns (every
//! partition of every topic by default) and returns their union. Topic
//! `orders`'s partition 3 read by weir stream `events` is the weir stream
//! `events-orders-3` (a `.` in a topic name becomes `_`); with several,
//! the union is named `events`.
//!
//! Lineage is the engine's, as for every source: each partition's range
//! of offsets is recorded in the checkpoint before the batch runs and
//! replayed exactly after a crash. No local log is written, and nothing
//! is committed to the brokers.
//!
//! Bad records: a value that does not decode (not UTF-8, not JSON for
//! `format = json`, a tombstone, larger than `record_bytes_max`) follows
//! `on_error` in the partition's own step `<partition>.decode`.
//!
//! Limits: [`KafkaSourceConfig::validate`]'s; at most
//! [`crate::kafka::PARTITION_CLIENTS_MAX`] partitions; one connection (and
//! its 2-thread runtime) per call.
//! Must never: write a WAL for a Kafka stream, or name two partitions
//! alike.

use std::sync::Arc;

use super::{ContextError, StreamingContext};
use crate::dstream::{DStream, Source};
use crate::kafka::{KafkaConn, KafkaError, Retries, PARTITION_CLIENTS_MAX};
use crate::source::{
    ConnPartition, KafkaFormat, KafkaPartitionStats, KafkaRecord, KafkaSource, KafkaSourceConfig,
    KafkaSourceError, PartitionSpec,
};
use crate::Result;

/// The weir stream name of partition `partition` of `topic` read by weir
/// stream `name`.
pub fn kafka_partition_name(name: &str, topic: &str, partition: i32) -> String {
    format!("{name}-{}-{partition}", topic.replace('.', "_"))
}

/// Counters of a Kafka stream's partitions, in partition order.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// One per partition read: (weir stream name, counters).
    pub partitions: Vec<(String, Arc<KafkaPartitionStats>)>,
}

impl StreamingContext {
    /// A text stream over the partitions of `config.topics` this instance
    /// owns, decoded as `config.format` says; see the module docs.
    /// Returns the stream (named `name`) and the partitions' counters.
    pub fn kafka_stream(
        &self,
        name: &str,
        config: KafkaSourceConfig,
    ) -> Result<(DStream<String>, Arc<KafkaStats>)> {
        let (max, on_error, format) = (config.record_bytes_max, config.on_error, config.format);
        let (parts, stats) = self.kafka_partitions(name, &config)?;
        let texts: Vec<DStream<String>> = parts
            .into_iter()
            .map(|(part_name, d)| {
                d.try_map(on_error, move |r: &KafkaRecord| match format {
                    KafkaFormat::Text => r.text(max),
                    KafkaFormat::Json => r.json(max),
                    KafkaFormat::Record => r.record_json(max),
                })
                .name(&format!("{part_name}.decode"))
            })
            .collect();
        Ok((self.union_named(name, texts), stats))
    }

    /// The records of the partitions of `config.topics` this instance
    /// owns as [`KafkaRecord`]s (key, value, topic, partition, offset,
    /// timestamp, headers), unchecked: for binary payloads.
    pub fn kafka_records(
        &self,
        name: &str,
        config: KafkaSourceConfig,
    ) -> Result<(DStream<KafkaRecord>, Arc<KafkaStats>)> {
        let (parts, stats) = self.kafka_partitions(name, &config)?;
        let streams = parts.into_iter().map(|(_, d)| d).collect();
        Ok((self.union_named(name, streams), stats))
    }

    /// Connects, lists the topics' partitions, and opens one source per
    /// partition owned: (partition name, stream).
    fn kafka_partitions(
        &self,
        name: &str,
        config: &KafkaSourceConfig,
    ) -> Result<(Vec<(String, DStream<KafkaRecord>)>, Arc<KafkaStats>)> {
        config.validate().map_err(KafkaSourceError::from)?;
        crate::names::validate_stream_name(name).map_err(ContextError::from)?;
        let conn = Arc::new(
            KafkaConn::connect(&config.client, "weir-kafka", Retries::UntilTimeout)
                .map_err(KafkaSourceError::from)?,
        );
        let all = all_partitions(&conn, config)?;
        let owned: Vec<usize> = match &config.partitions {
            None => (0..all.len()).collect(),
            Some(v) => owned_of(&all, v)?,
        };
        let mut stats = KafkaStats::default();
        let mut parts: Vec<(String, DStream<KafkaRecord>)> = Vec::with_capacity(owned.len());
        let per_batch = config
            .max_rate_per_partition
            .map(|r| (r.saturating_mul(self.batch_interval_ms()) / 1000).max(1));
        for k in owned {
            let (topic, p) = &all[k];
            let part_name = kafka_partition_name(name, topic, *p);
            crate::names::validate_stream_name(&part_name).map_err(ContextError::from)?;
            if parts.iter().any(|(n, _)| *n == part_name) {
                return Err(KafkaSourceError::from(KafkaError::Config {
                    setting: "topics",
                    found: format!("two topics whose partition {p} is weir stream `{part_name}`"),
                    expected: "topic names that stay distinct when '.' is read as '_'".into(),
                })
                .into());
            }
            let spec = PartitionSpec {
                topic: topic.clone(),
                partition: *p,
                stream: part_name.clone(),
                start: config.start,
                start_offset: config.start_offsets.get(&(topic.clone(), *p)).copied(),
                records_per_batch_max: per_batch,
                fetch_bytes_max: config.fetch_bytes_max,
                fetch_wait_ms: config.fetch_wait_ms,
                record_bytes_max: config.record_bytes_max,
            };
            let log = Arc::new(ConnPartition {
                conn: conn.clone(),
                topic: topic.clone(),
                partition: *p,
            });
            let src = KafkaSource::open(log, spec)?;
            stats.partitions.push((part_name.clone(), src.stats()));
            let src: Arc<dyn Source<KafkaRecord>> = Arc::new(src);
            let d = self.source_stream("kafka", src).name(&part_name);
            parts.push((part_name, d));
        }
        tracing::info!(
            source = name,
            brokers = conn.brokers(),
            partitions = parts.len(),
            "reading Kafka partitions"
        );
        Ok((parts, Arc::new(stats)))
    }
}

/// The indexes into `all` of the partitions `named`; each must exist.
fn owned_of(all: &[(String, i32)], named: &[(String, i32)]) -> Result<Vec<usize>> {
    let mut owned = Vec::with_capacity(named.len());
    for (t, p) in named {
        let Some(k) = all.iter().position(|(at, ap)| at == t && ap == p) else {
            return Err(KafkaSourceError::from(KafkaError::Config {
                setting: "partitions",
                found: format!("{t}:{p}"),
                expected: format!("a partition of topic `{t}`"),
            })
            .into());
        };
        owned.push(k);
    }
    owned.sort_unstable();
    Ok(owned)
}

/// Every partition of `config.topics`, topic by topic, ascending.
fn all_partitions(conn: &KafkaConn, config: &KafkaSourceConfig) -> Result<Vec<(String, i32)>> {
    let mut all = Vec::new();
    for t in &config.topics {
        for p in conn.partitions(t).map_err(KafkaSourceError::from)? {
            all.push((t.clone(), p));
        }
    }
    if all.len() > PARTITION_CLIENTS_MAX {
        let (t, p) = all[PARTITION_CLIENTS_MAX].clone();
        return Err(KafkaSourceError::from(KafkaError::TooManyPartitions {
            topic: t,
            partition: p,
            max: PARTITION_CLIENTS_MAX,
        })
        .into());
    }
    for (t, p) in config.start_offsets.keys() {
        if !all.iter().any(|(at, ap)| at == t && ap == p) {
            return Err(KafkaSourceError::from(KafkaError::Config {
                setting: "start_offsets",
                found: format!("{t}:{p}"),
                expected: format!("a partition of topic `{t}`"),
            })
            .into());
        }
    }
    Ok(all)
}
