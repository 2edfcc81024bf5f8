//! [`KafkaSourceConfig`]: what a Kafka input reads (topics, the partitions
//! this instance owns, where a fresh checkpoint starts) and its limits,
//! checked by [`KafkaSourceConfig::validate`] before anything connects.
//!
//! Limits: 1 to [`TOPICS_MAX`] topics and at most
//! [`crate::kafka::PARTITION_CLIENTS_MAX`] partitions read; fetches of 1
//! byte to [`crate::kafka::FETCH_BYTES_CEILING`]; a fetch waits at most
//! [`FETCH_WAIT_MS_MAX`] ms; `max_rate_per_partition` 1 to
//! [`RATE_PER_PARTITION_CEILING`] records per second; records at most
//! [`RECORD_BYTES_CEILING`] bytes.
//! Must never: accept a start offset it cannot place (a topic not read, a
//! negative offset).

use std::collections::BTreeMap;

use crate::dstream::OnError;
use crate::kafka::{topic_name_ok, KafkaClientConfig, KafkaError, FETCH_BYTES_CEILING, FETCH_BYTES_MAX_DEFAULT};


/// Most topics of one Kafka input.
pub const TOPICS_MAX: usize = 64;
/// Longest time a fetch waits for records, in ms.
pub const FETCH_WAIT_MS_MAX: u32 = 10_000;
/// Default time a fetch waits for records, in ms.
pub const FETCH_WAIT_MS_DEFAULT: u32 = 500;
/// Largest `max_rate_per_partition`, in records per second.
pub const RATE_PER_PARTITION_CEILING: u64 = 100_000_000;
/// Largest record (value) weir reads, in bytes.
pub const RECORD_BYTES_CEILING: usize = 64 << 20;
/// Default largest record (value), in bytes (Kafka's default
/// `max.message.bytes`, about 1 MiB).
pub const KAFKA_RECORD_BYTES_MAX_DEFAULT: usize = 1 << 20;

/// Where a partition the checkpoint records nothing of starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Its earliest offset still held (Spark's `earliest`).
    #[default]
    Earliest,
    /// Its high watermark: only records produced after the first start
    /// (Spark's `latest`).
    Latest,
}

impl StartAt {
    /// `earliest` or `latest`.
    pub fn parse(s: &str) -> Option<StartAt> {
        match s {
            "earliest" => Some(StartAt::Earliest),
            "latest" => Some(StartAt::Latest),
            _ => None,
        }
    }
}

/// How a text stream decodes each record (`kafka_stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaFormat {
    /// The value as UTF-8 text.
    #[default]
    Text,
    /// The value as UTF-8 text that is one JSON value.
    Json,
    /// The whole record as a JSON object: topic, partition, offset,
    /// timestamp_ms, key, value, headers.
    Record,
}

impl KafkaFormat {
    /// `text`, `json` or `record`.
    pub fn parse(s: &str) -> Option<KafkaFormat> {
        match s {
            "text" => Some(KafkaFormat::Text),
            "json" => Some(KafkaFormat::Json),
            "record" => Some(KafkaFormat::Record),
            _ => None,
        }
    }
}

/// A Kafka input: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// Brokers, TLS, SASL, timeouts.
    pub client: KafkaClientConfig,
    /// Topics read, 1 to [`TOPICS_MAX`]; their partitions, topic by topic
    /// in partition order, are the input's partitions.
    pub topics: Vec<String>,
    /// The partitions this instance reads, by topic and number (None:
    /// every partition of every topic). Named, not indexed, so that a
    /// partition added to one topic moves no other one between instances.
    pub partitions: Option<Vec<(String, i32)>>,
    /// Where a partition new to the checkpoint starts.
    pub start: StartAt,
    /// Start offsets of particular partitions, `(topic, partition)` to
    /// offset, overriding `start` for them.
    pub start_offsets: BTreeMap<(String, i32), i64>,
    /// Most records per partition per second of batch interval (Spark's
    /// `maxRatePerPartition`); None: no cap beyond `batch_records_max`.
    pub max_rate_per_partition: Option<u64>,
    /// Bytes one fetch request asks for.
    pub fetch_bytes_max: usize,
    /// How long a fetch waits for records, in ms.
    pub fetch_wait_ms: u32,
    /// Largest record value, in bytes; a larger one follows `on_error`.
    pub record_bytes_max: usize,
    /// What a record that does not decode does.
    pub on_error: OnError,
    /// How `kafka_stream` decodes records.
    pub format: KafkaFormat,
}

impl KafkaSourceConfig {
    /// A config reading every partition of `topics` at `brokers`, from
    /// the earliest offset, with default limits.
    pub fn new(brokers: &[&str], topics: &[&str]) -> KafkaSourceConfig {
        KafkaSourceConfig {
            client: KafkaClientConfig::new(brokers),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            partitions: None,
            start: StartAt::Earliest,
            start_offsets: BTreeMap::new(),
            max_rate_per_partition: None,
            fetch_bytes_max: FETCH_BYTES_MAX_DEFAULT,
            fetch_wait_ms: FETCH_WAIT_MS_DEFAULT,
            record_bytes_max: KAFKA_RECORD_BYTES_MAX_DEFAULT,
            on_error: OnError::Fail,
            format: KafkaFormat::Text,
        }
    }

    /// Checks every setting (the assignment is checked against the
    /// partitions once they are known).
    pub fn validate(&self) -> Result<(), KafkaError> {
        self.client.check()?;
        let n = self.topics.len();
        if n == 0 || n > TOPICS_MAX {
            return Err(bad("topics", n, format!("1 to {TOPICS_MAX} topics")));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !topic_name_ok(t) {
                let expected = "1 to 249 letters, digits, '.', '_' or '-' (a Kafka topic name)";
                return Err(bad("topics", format!("\"{t}\""), expected));
            }
            if self.topics[..i].contains(t) {
                return Err(bad("topics", format!("\"{t}\" twice"), "each topic once"));
            }
        }
        if let Some(v) = &self.partitions {
            let bad_one = v.iter().enumerate().find(|(i, (t, p))| {
                !self.topics.contains(t) || *p < 0 || v[..*i].contains(&(t.clone(), *p))
            });
            if v.is_empty() || bad_one.is_some() {
                let found = bad_one.map_or("[]".into(), |(_, (t, p))| format!("{t}:{p}"));
                let expected = "topic:partition of a topic read, each once, at least one";
                return Err(bad("partitions", found, expected));
            }
        }
        if self.request_timeout_too_short() {
            let expected = format!("more than fetch_wait_ms + 1000 ({} ms)", self.fetch_wait_ms as u64 + 1000);
            return Err(bad("request_timeout_ms", self.client.request_timeout_ms, expected));
        }
        for ((t, p), o) in &self.start_offsets {
            if !self.topics.contains(t) || *p < 0 || *o < 0 {
                let found = format!("{t}:{p}:{o}");
                return Err(bad("start_offsets", found, "topic:partition:offset of a topic read, each at least 0"));
            }
        }
        if let Some(r) = self.max_rate_per_partition {
            if r == 0 || r > RATE_PER_PARTITION_CEILING {
                return Err(bad("max_rate_per_partition", r, format!("1 to {RATE_PER_PARTITION_CEILING}")));
            }
        }
        let checks = [
            ("fetch_bytes_max", self.fetch_bytes_max, FETCH_BYTES_CEILING),
            ("fetch_wait_ms", self.fetch_wait_ms as usize, FETCH_WAIT_MS_MAX as usize),
            ("record_bytes_max", self.record_bytes_max, RECORD_BYTES_CEILING),
        ];
        for (name, v, max) in checks {
            if v == 0 || v > max {
                return Err(bad(name, v, format!("1 to {max}")));
            }
        }
        Ok(())
    }
}

impl KafkaSourceConfig {
    /// A fetch waits up to `fetch_wait_ms`: the request timeout must leave
    /// it a second more, or every fetch at the end of the log times out.
    fn request_timeout_too_short(&self) -> bool {
        self.client.request_timeout_ms <= u64::from(self.fetch_wait_ms) + 1000
    }
}

fn bad(setting: &'static str, found: impl ToString, expected: impl ToString) -> KafkaError {
    KafkaError::Config {
        setting,
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_checked_at_its_edges() {
        let ok = KafkaSourceConfig::new(&["127.0.0.1:9092"], &["events"]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.topics = (0..TOPICS_MAX).map(|i| format!("t{i}")).collect();
        assert!(c.validate().is_ok());
        c.topics.push("one-more".into());
        assert!(c.validate().unwrap_err().to_string().contains("1 to 64"));
        for t in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            let mut c = ok.clone();
            c.topics = vec![t.to_string()];
            assert!(c.validate().is_err(), "{t:?}");
        }
        let mut c = ok.clone();
        c.topics = vec!["a".into(), "a".into()];
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.start_offsets.insert(("other".into(), 0), 5);
        assert!(c.validate().unwrap_err().to_string().contains("start_offsets"));
        c.start_offsets.clear();
        c.start_offsets.insert(("events".into(), 0), -1);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.max_rate_per_partition = Some(RATE_PER_PARTITION_CEILING);
        assert!(c.validate().is_ok());
        c.max_rate_per_partition = Some(RATE_PER_PARTITION_CEILING + 1);
        assert!(c.validate().is_err());
        c.max_rate_per_partition = Some(0);
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.fetch_bytes_max = FETCH_BYTES_CEILING;
        assert!(c.validate().is_ok());
        c.fetch_bytes_max = FETCH_BYTES_CEILING + 1;
        assert!(c.validate().unwrap_err().to_string().contains("fetch_bytes_max"));
        let mut c = ok.clone();
        c.fetch_wait_ms = FETCH_WAIT_MS_MAX + 1;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.record_bytes_max = 0;
        assert!(c.validate().is_err());
    }
}
