//! The keys of a `kafka` source and a `kafka` sink: where the brokers
//! are and how to log in ([`CLIENT_KEYS`]: brokers, TLS, SASL, timeouts,
//! read by one function, [`kafka_client`], for both, with one rule for
//! relative paths and one for brokers off this machine), what the source
//! reads ([`SOURCE_KEYS`]) and where the sink writes ([`SINK_KEYS`]).
//!
//! Limits: those of `crate::kafka` and `crate::source::KafkaSourceConfig`
//! / `crate::sink::KafkaSinkConfig` (1 to 64 brokers and topics,
//! timeouts 1 to 600,000 ms, fetches up to 64 MiB).
//! Must never: accept a broker off this machine without TLS, or a SASL
//! user without its password.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use super::model::{SinkKind, SourceKind};
use super::validate::SinkIn;
use crate::kafka::{KafkaClientConfig, KafkaError, KafkaSasl, KafkaTls, TIMEOUT_MS_MAX};
use crate::source::{KafkaFormat, KafkaSourceConfig, StartAt};

const BROKERS: KeySpec = KeySpec::of(
    "brokers",
    KeyType::TextList,
    "bootstrap brokers as host:port, such as [\"127.0.0.1:9092\"]; one off this machine needs tls_ca_file",
);
const TLS_CA_FILE: KeySpec = KeySpec::of(
    "tls_ca_file",
    KeyType::Text,
    "a PEM file of the authorities the brokers' certificates end in: turns TLS (1.3) on; relative paths are from this file's directory",
);
const TLS_CERT_FILE: KeySpec = KeySpec::of(
    "tls_cert_file",
    KeyType::Text,
    "a PEM client certificate for brokers that ask for one (with tls_key_file)",
);
const TLS_KEY_FILE: KeySpec = KeySpec::of(
    "tls_key_file",
    KeyType::Text,
    "the PEM private key of tls_cert_file",
);
const SASL_MECHANISM: KeySpec = KeySpec::of(
    "sasl_mechanism",
    KeyType::Text,
    "\"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\" (with sasl_user and sasl_password)",
);
const SASL_USER: KeySpec = KeySpec::of("sasl_user", KeyType::Text, "the SASL user name");
const SASL_PASSWORD: KeySpec = KeySpec::of(
    "sasl_password",
    KeyType::Text,
    "the SASL password (this file then holds a secret: keep it readable by weir's user only)",
);
const CONNECT_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "connect_timeout_ms",
    1,
    TIMEOUT_MS_MAX as i64,
    "ms connecting may take at start (default 10000)",
);
const REQUEST_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "request_timeout_ms",
    1,
    TIMEOUT_MS_MAX as i64,
    "ms one request, with the client's retries, may take before it fails (default 30000; a sink's default 45000, at least 31000)",
);
const TOPICS: KeySpec = KeySpec::of(
    "topics",
    KeyType::TextList,
    "Kafka topics read; each partition is a weir partition (weir stream `<id>-<topic>-<partition>`)",
);
const START: KeySpec = KeySpec::of(
    "start",
    KeyType::Text,
    "where a partition new to the checkpoint starts: \"earliest\" (default) or \"latest\"",
);
const START_OFFSETS: KeySpec = KeySpec::of(
    "start_offsets",
    KeyType::TextList,
    "start offsets of particular partitions, as \"topic:partition:offset\" (over start)",
);
const MAX_RATE: KeySpec = KeySpec::whole(
    "max_rate_per_partition",
    1,
    crate::source::RATE_PER_PARTITION_CEILING as i64,
    "most records per partition per second of batch interval (Spark's maxRatePerPartition)",
);
const FETCH_BYTES_MAX: KeySpec = KeySpec::whole(
    "fetch_bytes_max",
    1,
    crate::kafka::FETCH_BYTES_CEILING as i64,
    "bytes one fetch request asks for (default 4194304)",
);
const FETCH_WAIT_MS: KeySpec = KeySpec::whole(
    "fetch_wait_ms",
    1,
    crate::source::FETCH_WAIT_MS_MAX as i64,
    "ms a fetch waits for records (default 500)",
);
const RECORD_BYTES_MAX: KeySpec = KeySpec::whole(
    "record_bytes_max",
    1,
    crate::source::KAFKA_RECORD_BYTES_CEILING as i64,
    "largest record value in bytes (default 1048576); a larger one follows on_error",
);
const FORMAT: KeySpec = KeySpec::of(
    "format",
    KeyType::Text,
    "\"text\" (default: the value as a UTF-8 line), \"json\" (the value must be JSON) or \"record\" (a JSON object with topic, partition, offset, timestamp_ms, key, value, headers)",
);
const ON_ERROR: KeySpec = KeySpec::of(
    "on_error",
    KeyType::Text,
    "what a record that does not decode does: \"fail\" (default) stops the batch naming topic, partition and offset; \"dead_letter\" writes it to DATA_DIR/dead-letter/ and goes on",
);
const PARTITIONS: KeySpec = KeySpec::of(
    "partitions",
    KeyType::TextList,
    "the partitions this instance reads, as \"topic:partition\", such as [\"orders:0\", \"orders:2\"] (default all)",
);
const TOPIC: KeySpec = KeySpec::of("topic", KeyType::Text, "the Kafka topic written");
const SINK_ID: KeySpec = KeySpec::of(
    "sink_id",
    KeyType::Text,
    "the sink's id (default \"kafka\"), in its records' weir-sink header and its operator name",
);
const PRODUCE_BYTES_MAX: KeySpec = KeySpec::whole(
    "produce_bytes_max",
    1,
    crate::sink::PRODUCE_BYTES_CEILING as i64,
    "bytes of one produce request (default 921600)",
);
const REPLAY_SCAN_RECORDS_MAX: KeySpec = KeySpec::whole(
    "replay_scan_records_max",
    1,
    crate::sink::REPLAY_SCAN_RECORDS_CEILING as i64,
    "records of each partition a replayed batch reads back to find what it wrote (default 100000)",
);

/// Keys both take.
macro_rules! client_keys {
    ($($k:expr),*) => {
        &[BROKERS, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, SASL_MECHANISM, SASL_USER,
          SASL_PASSWORD, CONNECT_TIMEOUT_MS, REQUEST_TIMEOUT_MS, $($k),*]
    };
}

/// The keys of a `kafka` source.
pub(super) const SOURCE_KEYS: &[KeySpec] = client_keys!(
    TOPICS,
    START,
    START_OFFSETS,
    MAX_RATE,
    FETCH_BYTES_MAX,
    FETCH_WAIT_MS,
    RECORD_BYTES_MAX,
    FORMAT,
    ON_ERROR,
    PARTITIONS
);
/// The keys of a `kafka` sink.
pub(super) const SINK_KEYS: &[KeySpec] =
    client_keys!(TOPIC, SINK_ID, PRODUCE_BYTES_MAX, REPLAY_SCAN_RECORDS_MAX);

/// Reads the client keys of `item`; relative paths resolve from `base`.
fn kafka_client(item: &Item<'_>, base: &Path) -> Result<KafkaClientConfig, ConfigError> {
    let brokers = match item.list(&BROKERS)? {
        Some(v) if !v.get_ref().is_empty() => v.into_inner(),
        found => {
            return Err(item.err(
                found.as_ref().map_or(item.span(), |v| v.span()),
                BROKERS.name,
                "a non-empty list of brokers",
                Some(if found.is_some() { "[]" } else { "nothing" }.into()),
                "add brokers = [\"127.0.0.1:9092\"]",
            ))
        }
    };
    let mut c = KafkaClientConfig::new(&[]);
    c.brokers = brokers;
    c.tls = match item.string(&TLS_CA_FILE)? {
        None => None,
        Some(ca) => Some(KafkaTls {
            ca_file: base.join(ca),
            cert_file: item.string(&TLS_CERT_FILE)?.map(|p| base.join(p)),
            key_file: item.string(&TLS_KEY_FILE)?.map(|p| base.join(p)),
        }),
    };
    c.sasl = sasl(item)?;
    if let Some(n) = item.positive(&CONNECT_TIMEOUT_MS)? {
        c.connect_timeout_ms = n;
    }
    if let Some(n) = item.positive(&REQUEST_TIMEOUT_MS)? {
        c.request_timeout_ms = n;
    }
    Ok(c)
}

fn sasl(item: &Item<'_>) -> Result<Option<KafkaSasl>, ConfigError> {
    let m = item.text(&SASL_MECHANISM)?;
    let (user, password) = (item.string(&SASL_USER)?, item.string(&SASL_PASSWORD)?);
    match (m, user, password) {
        (None, None, None) => Ok(None),
        (Some(m), Some(u), Some(p)) => {
            KafkaSasl::parse(m.get_ref(), u, p)
                .map(Some)
                .ok_or_else(|| {
                    item.err(
                        m.span(),
                        SASL_MECHANISM.name,
                        "\"PLAIN\", \"SCRAM-SHA-256\" or \"SCRAM-SHA-512\"",
                        Some(format!("\"{}\"", m.get_ref())),
                        SASL_MECHANISM.hint,
                    )
                })
        }
        _ => Err(item.err(
            item.span(),
            SASL_MECHANISM.name,
            "sasl_mechanism, sasl_user and sasl_password together",
            Some("only some of them".into()),
            "set all three, or none",
        )),
    }
}

/// A setting's check failed: the error at its key.
fn refused(item: &Item<'_>, e: KafkaError) -> ConfigError {
    let (key, expected, found) = match &e {
        KafkaError::Config {
            setting,
            found,
            expected,
        } => (*setting, expected.clone(), Some(found.clone())),
        KafkaError::OffMachine { broker } => (
            "brokers",
            "loopback brokers, or tls_ca_file for brokers off this machine".to_string(),
            Some(format!("\"{broker}\"")),
        ),
        other => (
            "kafka",
            "settings within their limits".to_string(),
            Some(other.to_string()),
        ),
    };
    let span = item.raw.get(key).map_or(item.span(), |v| v.span());
    item.err(
        span,
        key,
        expected,
        found,
        "docs/pipeline.md, `kafka`, says what each key takes",
    )
}

fn choice<T>(
    item: &Item<'_>,
    spec: &KeySpec,
    parse: fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    let Some(v) = item.text(spec)? else {
        return Ok(None);
    };
    parse(v.get_ref()).map(Some).ok_or_else(|| {
        item.err(
            v.span(),
            spec.name,
            expected,
            Some(format!("\"{}\"", v.get_ref())),
            spec.hint,
        )
    })
}

/// A `kafka` source.
pub(super) fn kafka_source(item: &Item<'_>, base: &Path) -> Result<SourceKind, ConfigError> {
    let mut c = KafkaSourceConfig::new(&[], &[]);
    c.client = kafka_client(item, base)?;
    c.topics = item
        .list(&TOPICS)?
        .map(|v| v.into_inner())
        .unwrap_or_default();
    if let Some(s) = choice(item, &START, StartAt::parse, "\"earliest\" or \"latest\"")? {
        c.start = s;
    }
    c.start_offsets = start_offsets(item)?;
    c.max_rate_per_partition = item.positive(&MAX_RATE)?;
    if let Some(n) = item.positive(&FETCH_BYTES_MAX)? {
        c.fetch_bytes_max = n as usize;
    }
    if let Some(n) = item.positive(&FETCH_WAIT_MS)? {
        c.fetch_wait_ms = n as u32;
    }
    if let Some(n) = item.positive(&RECORD_BYTES_MAX)? {
        c.record_bytes_max = n as usize;
    }
    if let Some(f) = choice(
        item,
        &FORMAT,
        KafkaFormat::parse,
        "\"text\", \"json\" or \"record\"",
    )? {
        c.format = f;
    }
    let on_error = |s: &str| match s {
        "fail" => Some(crate::dstream::OnError::Fail),
        "dead_letter" => Some(crate::dstream::OnError::DeadLetter),
        _ => None,
    };
    if let Some(o) = choice(item, &ON_ERROR, on_error, "\"fail\" or \"dead_letter\"")? {
        c.on_error = o;
    }
    if let Some(list) = item.list(&PARTITIONS)? {
        c.partitions = Some(
            topic_partitions(item, &list, &PARTITIONS)?
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        );
    }
    c.validate().map_err(|e| refused(item, e))?;
    Ok(SourceKind::Kafka(Box::new(c)))
}

/// `start_offsets = ["topic:partition:offset", ...]`.
fn start_offsets(item: &Item<'_>) -> Result<BTreeMap<(String, i32), i64>, ConfigError> {
    let Some(list) = item.list(&START_OFFSETS)? else {
        return Ok(BTreeMap::new());
    };
    let v = topic_partitions(item, &list, &START_OFFSETS)?;
    Ok(v.into_iter().map(|(k, o)| (k, o.unwrap_or(-1))).collect())
}

/// Items `"topic:partition"` or (for `start_offsets`) `"topic:partition:offset"`.
#[allow(clippy::type_complexity)]
fn topic_partitions(
    item: &Item<'_>,
    list: &toml::Spanned<Vec<String>>,
    spec: &KeySpec,
) -> Result<Vec<((String, i32), Option<i64>)>, ConfigError> {
    let with_offset = spec.name == START_OFFSETS.name;
    let mut out = Vec::with_capacity(list.get_ref().len());
    for s in list.get_ref() {
        let (rest, offset) = match (with_offset, s.rsplit_once(':')) {
            (true, Some((r, o))) => (r, o.parse::<i64>().ok()),
            (true, None) => ("", None),
            (false, _) => (s.as_str(), Some(0)),
        };
        let parsed = rest
            .rsplit_once(':')
            .and_then(|(t, p)| Some((t.to_string(), p.parse::<i32>().ok()?)));
        let (Some(k), Some(o)) = (parsed, offset) else {
            let expected = if with_offset {
                "\"topic:partition:offset\""
            } else {
                "\"topic:partition\""
            };
            return Err(item.err(
                list.span(),
                spec.name,
                expected,
                Some(format!("\"{s}\"")),
                spec.hint,
            ));
        };
        out.push((k, with_offset.then_some(o)));
    }
    Ok(out)
}

/// A `kafka` sink.
pub(super) fn kafka_sink(s: &SinkIn<'_>) -> Result<SinkKind, ConfigError> {
    let item = s.item;
    let client = kafka_client(item, s.base)?;
    let topic = item.required(&TOPIC, "a topic such as \"counts\"", TOPIC.hint)?;
    let mut c = crate::sink::KafkaSinkConfig::new(&[], topic.get_ref());
    let timeout = c.client.request_timeout_ms;
    c.client = client;
    if item.positive(&REQUEST_TIMEOUT_MS)?.is_none() {
        c.client.request_timeout_ms = timeout;
    }
    if let Some(id) = item.string(&SINK_ID)? {
        c.sink_id = id;
    }
    if let Some(n) = item.positive(&PRODUCE_BYTES_MAX)? {
        c.produce_bytes_max = n as usize;
    }
    if let Some(n) = item.positive(&REPLAY_SCAN_RECORDS_MAX)? {
        c.replay_scan_records_max = n;
    }
    c.validate().map_err(|e| refused(item, e))?;
    Ok(SinkKind::Kafka(Box::new(c)))
}

/// A Kafka source in words, for `weir check` and the start log.
pub(crate) fn kafka_source_words(id: &str, cfg: &KafkaSourceConfig) -> String {
    let topics: Vec<String> = cfg.topics.iter().map(|t| format!("`{t}`")).collect();
    let share = match &cfg.partitions {
        Some(p) => format!("{} of the", p.len()),
        None => "every one of the".to_string(),
    };
    let start = match cfg.start {
        StartAt::Earliest => "the earliest offset",
        StartAt::Latest => "the latest offset",
    };
    let tls = if cfg.client.tls.is_some() {
        "TLS"
    } else {
        "plain TCP"
    };
    format!(
        "Kafka topics {} at {} ({share} partitions, each the weir stream `{id}-<topic>-<partition>`; new ones start at {start}; {tls})",
        topics.join(", "),
        cfg.client.brokers_text(),
    )
}

/// A Kafka sink in words.
pub(crate) fn kafka_sink_words(c: &crate::sink::KafkaSinkConfig) -> String {
    format!(
        "Kafka topic `{}` at {} (sink id `{}`; a replayed batch reads back the last {} records of each partition to send only what is missing)",
        c.topic,
        c.client.brokers_text(),
        c.sink_id,
        c.replay_scan_records_max
    )
}
