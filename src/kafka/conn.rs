//! [`KafkaConn`]: one rskafka client on its own small runtime, with a
//! blocking call per request the source and sink make (list a topic's
//! partitions, earliest and latest offsets, fetch from an offset, produce
//! a batch of records to a partition). Every call is bounded by the
//! request timeout: rskafka's own retries stop at the same deadline.
//!
//! Limits: [`PARTITION_CLIENTS_MAX`] partition clients, kept for the
//! connection's life; a fetch asks for at most [`FETCH_BYTES_CEILING`]
//! bytes (the broker may send one record batch more than asked, as Kafka
//! does for a batch larger than the request).
//! Must never: be called from inside an async runtime (it blocks on its
//! own), or retry past the request timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rskafka::client::error::{Error as RsError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::BackoffConfig;

use super::{
    KafkaClientConfig, KafkaError, KafkaSasl, FETCH_BYTES_CEILING, PARTITION_CLIENTS_MAX,
};
use crate::nats::NatsRuntime;

/// A record as a fetch gives it (rskafka's, with its offset).
pub type FetchedRecord = rskafka::record::RecordAndOffset;
/// A record to produce.
pub type ProduceRecord = rskafka::record::Record;

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// Records from the offset asked for on (maybe none yet), and the
    /// partition's high watermark.
    Records(Vec<FetchedRecord>, i64),
    /// The offset is outside what the partition holds (retention or a
    /// deletion removed it, or it is past the end).
    OutOfRange,
}

/// Whether rskafka retries a failed request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Until the request timeout (reads: a retry cannot double anything).
    UntilTimeout,
    /// Never: every error comes back at once (the sink: a produce whose
    /// answer was lost may have been appended, so only weir's replay,
    /// which reads back what is there, may send it again).
    None,
}

/// One client connection; see the module docs.
pub struct KafkaConn {
    rt: NatsRuntime,
    client: Client,
    brokers: String,
    timeout: Duration,
    parts: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
}

impl std::fmt::Debug for KafkaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KafkaConn({})", self.brokers)
    }
}

impl KafkaConn {
    /// Connects to `cfg`'s brokers (checked first); the runtime's threads
    /// are named `thread_name`.
    pub fn connect(
        cfg: &KafkaClientConfig,
        thread_name: &str,
        retries: Retries,
    ) -> Result<KafkaConn, KafkaError> {
        cfg.check()?;
        let rt = NatsRuntime::new(thread_name).map_err(|e| match e {
            crate::nats::NatsError::Runtime(io) => KafkaError::Runtime(io),
            other => KafkaError::Runtime(std::io::Error::other(other.to_string())),
        })?;
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let mut b = ClientBuilder::new(cfg.brokers.clone())
            .client_id("weir")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
                deadline: Some(match retries {
                    Retries::UntilTimeout => timeout,
                    Retries::None => Duration::ZERO,
                }),
            });
        if let Some(t) = &cfg.tls {
            let identity = match (&t.cert_file, &t.key_file) {
                (Some(cert), Some(key)) => Some(crate::net::tls::ClientIdentity {
                    cert_what: "the Kafka client certificate (tls_cert_file)",
                    cert,
                    key_what: "the Kafka client key (tls_key_file)",
                    key,
                }),
                _ => None,
            };
            let tls = crate::net::tls::client_config("the Kafka CA file (tls_ca_file)", &t.ca_file, identity)
                .map_err(|e| KafkaError::Tls(Box::new(e)))?;
            b = b.tls_config(Arc::new(tls));
        }
        if let Some(s) = &cfg.sasl {
            let c = Credentials::new(s.user().to_string(), s.password().to_string());
            b = b.sasl_config(match s {
                KafkaSasl::Plain { .. } => SaslConfig::Plain(c),
                KafkaSasl::ScramSha256 { .. } => SaslConfig::ScramSha256(c),
                KafkaSasl::ScramSha512 { .. } => SaslConfig::ScramSha512(c),
            });
        }
        let brokers = cfg.brokers_text();
        let connect = Duration::from_millis(cfg.connect_timeout_ms);
        let client = rt
            .get()
            .block_on(async { tokio::time::timeout(connect, b.build()).await })
            .map_err(|_| KafkaError::Connect {
                brokers: brokers.clone(),
                detail: format!(
                    "no broker could be reached and answer within connect_timeout_ms ({} ms; refused connections are tried again until then)",
                    cfg.connect_timeout_ms
                ),
            })?
            .map_err(|e| KafkaError::Connect {
                brokers: brokers.clone(),
                detail: e.to_string(),
            })?;
        Ok(KafkaConn {
            rt,
            client,
            brokers,
            timeout,
            parts: Mutex::new(HashMap::new()),
        })
    }

    /// The bootstrap brokers, for messages.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Runs `fut` on the connection's runtime, failing past the request
    /// timeout.
    fn block<T>(&self, fut: impl Future<Output = Result<T, RsError>>) -> Result<T, String> {
        self.block_raw(fut).map_err(|e| match e {
            Some(e) => describe(&e),
            None => self.timed_out(),
        })
    }

    /// Runs `fut`; `Err(None)` when it did not finish within the timeout.
    fn block_raw<T>(&self, fut: impl Future<Output = Result<T, RsError>>) -> Result<T, Option<RsError>> {
        let t = self.timeout;
        match self.rt.get().block_on(async { tokio::time::timeout(t, fut).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Some(e)),
            Err(_) => Err(None),
        }
    }

    fn timed_out(&self) -> String {
        format!("no answer within request_timeout_ms ({} ms)", self.timeout.as_millis())
    }

    /// Runs a request of `topic`'s partition `p`; a timeout also drops
    /// the partition's client (its connection may hang half-open), so the
    /// next request connects again.
    fn on_partition<T>(
        &self,
        what: &'static str,
        topic: &str,
        p: i32,
        fut: impl Future<Output = Result<T, RsError>>,
    ) -> Result<T, KafkaError> {
        self.block_raw(fut).map_err(|e| {
            let detail = match e {
                Some(e) => describe(&e),
                None => {
                    self.lock().remove(&(topic.to_string(), p));
                    self.timed_out()
                }
            };
            self.request_err(what, topic, p, detail)
        })
    }

    /// The partitions of `topic`, ascending.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let no_topic = |detail: String| KafkaError::NoTopic {
            topic: topic.to_string(),
            brokers: self.brokers.clone(),
            detail,
        };
        let topics = self
            .block(self.client.list_topics())
            .map_err(|d| KafkaError::Connect {
                brokers: self.brokers.clone(),
                detail: format!("listing the topics: {d}"),
            })?;
        let t = topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| no_topic(String::new()))?;
        let mut v: Vec<i32> = t.partitions.into_iter().collect();
        v.sort_unstable();
        if v.is_empty() {
            return Err(no_topic(" (it has no partitions)".into()));
        }
        Ok(v)
    }

    /// The client of `topic`'s partition `p`, made on first use.
    fn partition(&self, topic: &str, p: i32) -> Result<Arc<PartitionClient>, KafkaError> {
        let key = (topic.to_string(), p);
        if let Some(c) = self.lock().get(&key) {
            return Ok(c.clone());
        }
        if self.lock().len() >= PARTITION_CLIENTS_MAX {
            return Err(KafkaError::TooManyPartitions {
                topic: topic.to_string(),
                partition: p,
                max: PARTITION_CLIENTS_MAX,
            });
        }
        let c = self
            .block(self.client.partition_client(topic, p, UnknownTopicHandling::Retry))
            .map_err(|detail| self.request_err("connection to the partition's leader", topic, p, detail))?;
        let mut g = self.lock();
        if !g.contains_key(&key) && g.len() >= PARTITION_CLIENTS_MAX {
            return Err(KafkaError::TooManyPartitions {
                topic: topic.to_string(),
                partition: p,
                max: PARTITION_CLIENTS_MAX,
            });
        }
        Ok(g.entry(key).or_insert(Arc::new(c)).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i32), Arc<PartitionClient>>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_err(&self, what: &'static str, topic: &str, p: i32, detail: String) -> KafkaError {
        KafkaError::Request {
            what,
            topic: topic.to_string(),
            partition: p,
            detail,
        }
    }

    /// The earliest offset `topic`'s partition `p` holds.
    pub fn earliest(&self, topic: &str, p: i32) -> Result<i64, KafkaError> {
        let c = self.partition(topic, p)?;
        self.on_partition("list offsets (earliest)", topic, p, c.get_offset(OffsetAt::Earliest))
    }

    /// The end of what `topic`'s partition `p` lets a reader read: rskafka
    /// asks with read-committed isolation, so this is the last stable
    /// offset (the high watermark, or the first offset of an open
    /// transaction).
    pub fn last_stable(&self, topic: &str, p: i32) -> Result<i64, KafkaError> {
        let c = self.partition(topic, p)?;
        self.on_partition("list offsets (latest)", topic, p, c.get_offset(OffsetAt::Latest))
    }

    /// The end of what a reader of `topic`'s partition `p` may read now:
    /// the last stable offset (rskafka reads committed records only, so it
    /// never passes an open transaction). tansu 0.6 lists the last record
    /// batch's base offset + 1 instead: a fetch of the record before the
    /// listed end brings that whole batch, and so the real end (on Kafka
    /// it brings records below the listed end only).
    pub fn readable_end(&self, topic: &str, p: i32) -> Result<i64, KafkaError> {
        let listed = self.last_stable(topic, p)?;
        if listed <= 0 {
            return Ok(listed.max(0));
        }
        match self.fetch(topic, p, listed - 1, END_PROBE_BYTES, PROBE_WAIT_MS)? {
            Fetched::Records(r, _) => Ok(r.last().map_or(listed, |r| (r.offset + 1).max(listed))),
            Fetched::OutOfRange => Ok(listed),
        }
    }

    /// Records of `topic`'s partition `p` from `offset` on: at most about
    /// `bytes_max` bytes (clamped to [`FETCH_BYTES_CEILING`]), waiting at
    /// most `wait_ms` for the first.
    pub fn fetch(
        &self,
        topic: &str,
        p: i32,
        offset: i64,
        bytes_max: usize,
        wait_ms: i32,
    ) -> Result<Fetched, KafkaError> {
        let c = self.partition(topic, p)?;
        // rskafka asks for at most `end - 1` bytes of a `start..end` range.
        let max = bytes_max.clamp(1, FETCH_BYTES_CEILING) as i32 + 1;
        let got = self.on_partition("fetch", topic, p, c.fetch_records(offset, 1..max, wait_ms));
        match got {
            Ok((records, hw)) => Ok(Fetched::Records(records, hw)),
            Err(KafkaError::Request { detail, .. }) if detail.starts_with(OUT_OF_RANGE) => {
                Ok(Fetched::OutOfRange)
            }
            Err(e) => Err(e),
        }
    }

    /// Produces `records` to `topic`'s partition `p` in one request (one
    /// record batch, appended whole or not at all); returns their offsets.
    pub fn produce(
        &self,
        topic: &str,
        p: i32,
        records: Vec<ProduceRecord>,
    ) -> Result<Vec<i64>, KafkaError> {
        let c = self.partition(topic, p)?;
        self.on_partition("produce", topic, p, c.produce(records, Compression::NoCompression))
    }
}

/// Bytes the fetch of [`KafkaConn::readable_end`] asks for (room for the
/// record batch it looks at: tansu sends none that does not fit).
const END_PROBE_BYTES: usize = 1 << 20;
/// How long that fetch waits, in ms (records are there: no wait on Kafka).
const PROBE_WAIT_MS: i32 = 100;

/// How [`describe`] starts the text of an OffsetOutOfRange answer.
const OUT_OF_RANGE: &str = "the broker answered OffsetOutOfRange";

/// rskafka's error in a line: the protocol error's name and the broker's
/// message, through rskafka's retry wrapper, without the request's debug
/// form.
fn describe(e: &RsError) -> String {
    match e {
        RsError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        } => OUT_OF_RANGE.to_string(),
        RsError::ServerError {
            protocol_error,
            error_message,
            ..
        } => match error_message {
            Some(m) if !m.is_empty() => format!("the broker answered {protocol_error} ({m})"),
            _ => format!("the broker answered {protocol_error}"),
        },
        RsError::RetryFailed(rskafka::BackoffError::DeadlineExceded { deadline, source }) => {
            let inner = match source.downcast_ref::<RsError>() {
                Some(e) => describe(e),
                None => source.to_string(),
            };
            format!("{inner} (given up after {} ms of retries)", deadline.as_millis())
        }
        other => other.to_string(),
    }
}
