//! The Kafka sink: `stream.save_to_kafka(config)` produces every record of
//! every batch (rendered as `print` shows it) to `config.topic`, each once
//! while this sink is the only writer of its records, by reading back
//! what a replayed batch already wrote.
//!
//! Kafka's idempotent producer and transactions would make the broker drop
//! a replay's duplicates; rskafka offers neither, so weir does it itself:
//! each record carries headers `weir-sink` = `<data dir id>/<sink id>` and
//! `weir-place` = `<batch time ms>/<P>.<p>.<i>` (`i`-th record of
//! partition `p` of `P`, the same on every replay, as for the JetStream
//! sink) and the batch time as its timestamp. Engine partition `p` goes to
//! topic partition `p % N` (so a pair stream's key always lands in the
//! same topic partition), in order, one produce request (one record batch,
//! appended whole or not at all) after another. What a partition holds of
//! a batch is therefore a prefix of what the batch sends it. When a batch
//! may have run before (a replay at start, a retry), the sink reads each
//! partition's last `replay_scan_records_max` records back, finds the last
//! one of this sink, and sends only what follows it.
//!
//! The guarantee, plainly: exactly once in the topic when (1) no one else
//! writes records with this sink's `weir-sink` header, (2) fewer than
//! `replay_scan_records_max` records from other producers land in a
//! partition between the crash and the replay, and (3) retention keeps a
//! batch's records until its replay. Past (2) a replay is written again
//! (duplicates, never a loss); consumers that must never see one drop
//! records whose `weir-sink` + `weir-place` they already saw.
//!
//! Failpoint: [`BETWEEN_REQUESTS_FAILPOINT`] between two produce requests
//! of a partition (part of a batch written).
//!
//! Limits: one produce request carries at most `produce_bytes_max` bytes
//! (default [`PRODUCE_BYTES_MAX_DEFAULT`], up to
//! [`PRODUCE_BYTES_CEILING`]; a single larger record goes alone); the
//! read-back scans at most `replay_scan_records_max` (up to
//! [`REPLAY_SCAN_RECORDS_CEILING`]) records per partition; a sink id 1 to
//! [`super::SINK_ID_BYTES_MAX`] bytes. A batch's records are held in
//! memory once more, rendered.
//! Must never: return Ok before every record of the batch was
//! acknowledged, send a record under a place that depends on anything
//! but its place in the batch, or skip a record on replay that it has not
//! found in the topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Show;
use crate::dstream::{DStream, Data, EngineError};
use crate::kafka::{Fetched, KafkaClientConfig, KafkaConn, KafkaError, ProduceRecord, Retries};

/// Default bytes of one produce request (under Kafka's default
/// `max.message.bytes`, 1 MiB).
pub const PRODUCE_BYTES_MAX_DEFAULT: usize = 900 << 10;
/// Largest `produce_bytes_max`.
pub const PRODUCE_BYTES_CEILING: usize = 64 << 20;
/// Shortest request timeout of the sink, in ms: rskafka asks the broker
/// to answer a produce within 30 s, and a produce weir gave up on earlier
/// may still be appended after the read-back of its retry.
pub const SINK_REQUEST_TIMEOUT_MS_MIN: u64 = 31_000;
/// Default request timeout of the sink, in ms.
pub const SINK_REQUEST_TIMEOUT_MS_DEFAULT: u64 = 45_000;
/// Default records of a partition read back on a replay.
pub const REPLAY_SCAN_RECORDS_MAX_DEFAULT: u64 = 100_000;
/// Largest `replay_scan_records_max`.
pub const REPLAY_SCAN_RECORDS_CEILING: u64 = 100_000_000;
/// Failpoint after each produce request of a batch but its last: a crash
/// there leaves part of the batch in the topic.
pub const BETWEEN_REQUESTS_FAILPOINT: &str = "kafka_between_requests";
/// Fetches in a row that bring nothing new end a read-back window early.
const EMPTY_FETCHES_MAX: u32 = 20;
/// Records of one read-back window (the read-back goes backwards from the
/// end, window by window, and stops at the first holding this sink's).
const SCAN_WINDOW_RECORDS: u64 = 10_000;
/// Header naming the data directory and sink of a record.
pub const SINK_HEADER: &str = "weir-sink";
/// Header naming a record's place: `<batch time ms>/<P>.<p>.<i>`.
pub const PLACE_HEADER: &str = "weir-place";

/// Errors of the Kafka sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSinkError {
    /// The client, a setting or a request.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// A crash test's failpoint fired.
    #[error(transparent)]
    Crashed(#[from] crate::failpoint::Crash),
    /// The sink needs a data directory's identity.
    #[error("save_to_kafka `{sink}` needs a context with a data directory (StreamingContext::get_or_create): its records are marked with the directory's identity so a replay finds what it already wrote")]
    NoDataDir {
        /// The sink id.
        sink: String,
    },
    /// The topic holds a later batch of this sink than the one replayed.
    #[error("Kafka topic `{topic}` partition {partition} holds batch {found_ms} ms of sink `{sink}`, later than batch {batch_ms} ms being written again: another process writes with this data directory's identity (a copy of it?). Stop it, or give this sink another sink_id")]
    Later {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The sink id.
        sink: String,
        /// The batch written.
        batch_ms: u64,
        /// The later batch found.
        found_ms: u64,
    },
}

/// A Kafka sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// Brokers, TLS, SASL, timeouts.
    pub client: KafkaClientConfig,
    /// The topic written.
    pub topic: String,
    /// The sink's id (its operator name `kafka:<id>`, its header).
    pub sink_id: String,
    /// Bytes of one produce request.
    pub produce_bytes_max: usize,
    /// Records of a partition read back on a replay.
    pub replay_scan_records_max: u64,
}

impl KafkaSinkConfig {
    /// Writes to `topic` at `brokers`, sink id `kafka`, default limits.
    pub fn new(brokers: &[&str], topic: &str) -> KafkaSinkConfig {
        let mut client = KafkaClientConfig::new(brokers);
        client.request_timeout_ms = SINK_REQUEST_TIMEOUT_MS_DEFAULT;
        KafkaSinkConfig {
            client,
            topic: topic.to_string(),
            sink_id: "kafka".into(),
            produce_bytes_max: PRODUCE_BYTES_MAX_DEFAULT,
            replay_scan_records_max: REPLAY_SCAN_RECORDS_MAX_DEFAULT,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), KafkaError> {
        self.client.check()?;
        let bad = |setting, found: String, expected: String| {
            Err(KafkaError::Config {
                setting,
                found,
                expected,
            })
        };
        let ms = self.client.request_timeout_ms;
        if ms < SINK_REQUEST_TIMEOUT_MS_MIN {
            let expected = format!("at least {SINK_REQUEST_TIMEOUT_MS_MIN} for a sink (the broker may take 30 s to answer a produce)");
            return bad("request_timeout_ms", ms.to_string(), expected);
        }
        if !crate::kafka::topic_name_ok(&self.topic) {
            return bad(
                "topic",
                format!("\"{}\"", self.topic),
                "a Kafka topic name".into(),
            );
        }
        let id = &self.sink_id;
        let id_ok = id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if id.is_empty() || id.len() > super::SINK_ID_BYTES_MAX || !id_ok {
            let expected = format!(
                "1 to {} letters, digits, '_', '-', '.'",
                super::SINK_ID_BYTES_MAX
            );
            return bad("sink_id", format!("\"{id}\""), expected);
        }
        if self.produce_bytes_max == 0 || self.produce_bytes_max > PRODUCE_BYTES_CEILING {
            let expected = format!("1 to {PRODUCE_BYTES_CEILING}");
            return bad(
                "produce_bytes_max",
                self.produce_bytes_max.to_string(),
                expected,
            );
        }
        let n = self.replay_scan_records_max;
        if n == 0 || n > REPLAY_SCAN_RECORDS_CEILING {
            let expected = format!("1 to {REPLAY_SCAN_RECORDS_CEILING}");
            return bad("replay_scan_records_max", n.to_string(), expected);
        }
        Ok(())
    }
}

/// The operator name of the Kafka sink `sink_id`.
pub fn kafka_sink_op(sink_id: &str) -> String {
    format!("kafka:{sink_id}")
}

/// Counters of a Kafka sink.
#[derive(Debug, Default)]
pub struct KafkaSinkStats {
    /// Records the brokers acknowledged.
    pub produced: AtomicU64,
    /// Records of replays found already in the topic and not sent again.
    pub found_on_replay: AtomicU64,
    /// Produce requests sent.
    pub requests: AtomicU64,
    /// Batches all of whose records were acknowledged.
    pub batches: AtomicU64,
}

impl super::SinkCounters for KafkaSinkStats {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn counters(&self) -> Vec<super::SinkCounter> {
        let c = super::SinkCounter::read;
        vec![
            c(
                "records_produced",
                "Records the Kafka brokers acknowledged.",
                &self.produced,
            ),
            c(
                "found_on_replay",
                "Records of replayed batches found already in the topic and not sent again.",
                &self.found_on_replay,
            ),
            c("produce_requests", "Produce requests sent.", &self.requests),
            c(
                "batches",
                "Batches all of whose records were acknowledged.",
                &self.batches,
            ),
        ]
    }
}

/// One planned record: its place and its record.
struct Planned {
    place: String,
    record: ProduceRecord,
}

struct Sink {
    cfg: KafkaSinkConfig,
    /// `<data dir id>/<sink id>`.
    marker: String,
    conn: Mutex<Option<(Arc<KafkaConn>, Vec<i32>)>>,
    stats: Arc<KafkaSinkStats>,
}

impl Sink {
    /// The connection and the topic's partitions, made on first use.
    fn connection(&self) -> Result<(Arc<KafkaConn>, Vec<i32>), KafkaError> {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let conn = Arc::new(KafkaConn::connect(
            &self.cfg.client,
            "weir-kafka-sink",
            Retries::None,
        )?);
        let parts = conn.partitions(&self.cfg.topic)?;
        *g = Some((conn.clone(), parts.clone()));
        Ok((conn, parts))
    }

    fn write<T: Show>(
        &self,
        time_ms: u64,
        replay: bool,
        parts: &[Vec<T>],
    ) -> Result<(), KafkaSinkError> {
        let (conn, topic_parts) = self.connection()?;
        let plan = self.plan(time_ms, parts, &topic_parts);
        let result = self.send(&conn, time_ms, replay, plan);
        if result.is_err() {
            // The retry starts on a fresh connection.
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        result
    }

    /// Every record of the batch, by topic partition, in sending order.
    fn plan<T: Show>(
        &self,
        time_ms: u64,
        parts: &[Vec<T>],
        topic_parts: &[i32],
    ) -> BTreeMap<i32, Vec<Planned>> {
        debug_assert!(!topic_parts.is_empty());
        let ts = crate::kafka::timestamp_of_ms(time_ms);
        let mut plan: BTreeMap<i32, Vec<Planned>> = BTreeMap::new();
        let mut text = String::new();
        for (p, part) in parts.iter().enumerate() {
            let kp = topic_parts[p % topic_parts.len()];
            let out = plan.entry(kp).or_default();
            for (i, x) in part.iter().enumerate() {
                text.clear();
                x.show(&mut text);
                let place = format!("{time_ms}/{}.{p}.{i}", parts.len());
                let headers = [
                    (SINK_HEADER.to_string(), self.marker.clone().into_bytes()),
                    (PLACE_HEADER.to_string(), place.clone().into_bytes()),
                ];
                out.push(Planned {
                    place,
                    record: ProduceRecord {
                        key: None,
                        value: Some(text.as_bytes().to_vec()),
                        headers: headers.into_iter().collect(),
                        timestamp: ts,
                    },
                });
            }
        }
        plan
    }

    fn send(
        &self,
        conn: &KafkaConn,
        time_ms: u64,
        replay: bool,
        plan: BTreeMap<i32, Vec<Planned>>,
    ) -> Result<(), KafkaSinkError> {
        for (kp, mut records) in plan {
            if replay {
                let done = self.written(conn, kp, time_ms, &records)?;
                self.stats
                    .found_on_replay
                    .fetch_add(done as u64, Ordering::Relaxed);
                records.drain(..done);
            }
            self.produce(conn, kp, records)?;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `records` to partition `kp` in requests of at most
    /// `produce_bytes_max` bytes, one after another.
    fn produce(
        &self,
        conn: &KafkaConn,
        kp: i32,
        records: Vec<Planned>,
    ) -> Result<(), KafkaSinkError> {
        let mut chunk: Vec<ProduceRecord> = Vec::new();
        let mut bytes = 0usize;
        let n = records.len();
        let mut sent = 0usize;
        for r in records {
            let size = r.record.approximate_size() + 64;
            if !chunk.is_empty() && bytes + size > self.cfg.produce_bytes_max {
                sent += self.request(conn, kp, std::mem::take(&mut chunk))?;
                crate::failpoint::hit(BETWEEN_REQUESTS_FAILPOINT)?;
                bytes = 0;
            }
            bytes += size;
            chunk.push(r.record);
        }
        if !chunk.is_empty() {
            sent += self.request(conn, kp, chunk)?;
        }
        debug_assert_eq!(sent, n);
        Ok(())
    }

    fn request(
        &self,
        conn: &KafkaConn,
        kp: i32,
        chunk: Vec<ProduceRecord>,
    ) -> Result<usize, KafkaError> {
        let n = chunk.len();
        let offsets = conn.produce(&self.cfg.topic, kp, chunk)?;
        debug_assert_eq!(offsets.len(), n, "one offset per record acknowledged");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.produced.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// How many of `records` (partition `kp`'s share of batch `time_ms`)
    /// the partition already holds: the prefix up to the last record of
    /// this sink found in its last `replay_scan_records_max` records, read
    /// back window by window from the end.
    fn written(
        &self,
        conn: &KafkaConn,
        kp: i32,
        time_ms: u64,
        records: &[Planned],
    ) -> Result<usize, KafkaSinkError> {
        if records.is_empty() {
            return Ok(0);
        }
        let topic = &self.cfg.topic;
        let end = conn.readable_end(topic, kp)?;
        let earliest = conn.earliest(topic, kp)?;
        let floor = end
            .saturating_sub(self.cfg.replay_scan_records_max as i64)
            .max(earliest);
        let window = (SCAN_WINDOW_RECORDS as i64).min(self.cfg.replay_scan_records_max as i64);
        let mut hi = end;
        let last = loop {
            if hi <= floor {
                return Ok(0);
            }
            let lo = hi.saturating_sub(window).max(floor);
            if let Some(place) = self.last_place(conn, kp, lo, hi)? {
                break place;
            }
            hi = lo;
        };
        let batch: u64 = last
            .split('/')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if batch > time_ms {
            return Err(KafkaSinkError::Later {
                topic: topic.clone(),
                partition: kp,
                sink: self.cfg.sink_id.clone(),
                batch_ms: time_ms,
                found_ms: batch,
            });
        }
        if batch < time_ms {
            return Ok(0);
        }
        match records.iter().position(|r| r.place == last) {
            Some(i) => Ok(i + 1),
            None => {
                tracing::warn!(topic = %topic, partition = kp, place = %last, "the Kafka topic holds part of this batch under places it does not have now (the number of partitions changed?): the batch's records are sent again, so that none is lost");
                Ok(0)
            }
        }
    }

    /// The `weir-place` of the last record of this sink in `from..to`
    /// (offsets retention removed meanwhile are passed over).
    fn last_place(
        &self,
        conn: &KafkaConn,
        kp: i32,
        from: i64,
        to: i64,
    ) -> Result<Option<String>, KafkaError> {
        let topic = &self.cfg.topic;
        let (mut at, mut last, mut empty) = (from, None, 0);
        while at < to && empty < EMPTY_FETCHES_MAX {
            let recs =
                match conn.fetch(topic, kp, at, crate::kafka::FETCH_BYTES_MAX_DEFAULT, 100)? {
                    Fetched::Records(r, _) => r,
                    Fetched::OutOfRange => {
                        let earliest = conn.earliest(topic, kp)?;
                        if earliest <= at {
                            return Ok(last);
                        }
                        at = earliest;
                        continue;
                    }
                };
            let before = at;
            for r in recs.into_iter().filter(|r| r.offset < to) {
                if r.offset < at {
                    continue;
                }
                at = r.offset + 1;
                let h = &r.record.headers;
                if h.get(SINK_HEADER)
                    .is_some_and(|v| v.as_slice() == self.marker.as_bytes())
                {
                    if let Some(p) = h.get(PLACE_HEADER) {
                        last = Some(String::from_utf8_lossy(p).into_owned());
                    }
                }
            }
            empty = if at == before { empty + 1 } else { 0 };
        }
        Ok(last)
    }
}

impl<T: Data + Show> DStream<T> {
    /// Produces every record of every batch (rendered as `print` shows
    /// it) to `config.topic`; see the module docs for what a replay does
    /// and the guarantee. Needs a context with a data directory
    /// (`StreamingContext::get_or_create`). Returns the sink's counters.
    pub fn save_to_kafka(
        &self,
        config: KafkaSinkConfig,
    ) -> Result<Arc<KafkaSinkStats>, EngineError> {
        let invalid = |e: KafkaSinkError| EngineError::InvalidGraph {
            problems: vec![format!("save_to_kafka: {e}")],
        };
        config.validate().map_err(|e| invalid(e.into()))?;
        let identity = self.sink_identity().ok_or_else(|| {
            invalid(KafkaSinkError::NoDataDir {
                sink: config.sink_id.clone(),
            })
        })?;
        let place = super::ExternalSink {
            node: "kafka_sink",
            output: "save_to_kafka",
            name: kafka_sink_op(&config.sink_id),
            params: vec![("topic", config.topic.clone())],
        };
        let stats = Arc::new(KafkaSinkStats::default());
        let sink = Sink {
            marker: format!("{identity}/{}", config.sink_id),
            cfg: config,
            conn: Mutex::new(None),
            stats: stats.clone(),
        };
        self.add_external_sink(place, move |time_ms, replay, parts| {
            sink.write(time_ms, replay, parts)
                .map_err(|e| -> crate::dstream::BoxError { Box::new(e) })
        })?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_checks_every_limit_at_its_edges() {
        let ok = KafkaSinkConfig::new(&["127.0.0.1:9092"], "out");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.client.request_timeout_ms = SINK_REQUEST_TIMEOUT_MS_MIN;
        assert!(c.validate().is_ok());
        c.client.request_timeout_ms = SINK_REQUEST_TIMEOUT_MS_MIN - 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("request_timeout_ms"));
        let mut c = ok.clone();
        c.topic = "a/b".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.sink_id = "x".repeat(super::super::SINK_ID_BYTES_MAX);
        assert!(c.validate().is_ok());
        c.sink_id.push('x');
        assert!(c.validate().unwrap_err().to_string().contains("sink_id"));
        let mut c = ok.clone();
        c.produce_bytes_max = PRODUCE_BYTES_CEILING;
        assert!(c.validate().is_ok());
        c.produce_bytes_max = PRODUCE_BYTES_CEILING + 1;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.replay_scan_records_max = REPLAY_SCAN_RECORDS_CEILING;
        assert!(c.validate().is_ok());
        c.replay_scan_records_max = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn the_operator_name_carries_the_sink_id() {
        assert_eq!(kafka_sink_op("counts"), "kafka:counts");
    }
}
