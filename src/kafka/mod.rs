//! Kafka client plumbing shared by the Kafka source (`source::kafka`) and
//! the Kafka sink (`sink::kafka`): where the brokers are and how to log in
//! ([`KafkaClientConfig`], [`KafkaTls`], [`KafkaSasl`]), the limits both
//! check ([`KafkaClientConfig::check`]), and the blocking connection both
//! read and write through ([`KafkaConn`], `conn.rs`).
//!
//! The client is `rskafka` 0.6 (pure Rust, tokio, rustls on ring): chosen
//! over `rdkafka` by measurement (`docs/kafka.md`). It speaks the plain
//! protocol: no consumer groups, no idempotent producer, no transactions;
//! weir needs none of them to read exactly once (the checkpoint holds the
//! offsets) and states what its sink guarantees without them.
//!
//! Limits: 1 to [`BROKERS_MAX`] bootstrap brokers; connect and request
//! timeouts 1 to [`TIMEOUT_MS_MAX`] ms; [`crate::nats::RUNTIME_THREADS`]
//! runtime threads per connection; at most [`PARTITION_CLIENTS_MAX`]
//! partition clients (one per topic partition read or written) per
//! connection; a fetch asks for at most [`FETCH_BYTES_CEILING`] bytes.
//! Must never: block inside an async runtime (callers block on the
//! connection's own runtime), wait on the broker without a deadline, or
//! reach a broker off this machine without TLS.

mod conn;

use std::path::PathBuf;

pub use conn::{Fetched, FetchedRecord, KafkaConn, ProduceRecord, Retries};

/// Most bootstrap brokers of one source or sink.
pub const BROKERS_MAX: usize = 64;
/// Largest connect or request timeout, in ms.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
/// Most partition clients (topic partitions) one connection holds.
pub const PARTITION_CLIENTS_MAX: usize = 1024;
/// Largest `fetch_bytes_max`: bytes one fetch request asks for.
pub const FETCH_BYTES_CEILING: usize = 64 << 20;
/// Default bytes one fetch request asks for.
pub const FETCH_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Default connect timeout, in ms.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default request timeout, in ms.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest user name or password, in bytes.
pub const CREDENTIAL_BYTES_MAX: usize = 1024;

/// SASL login (over TLS off this machine).
#[derive(Clone, PartialEq, Eq)]
pub enum KafkaSasl {
    /// SASL/PLAIN.
    Plain {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// SASL/SCRAM-SHA-256.
    ScramSha256 {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// SASL/SCRAM-SHA-512.
    ScramSha512 {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KafkaSasl({}, user {})", self.mechanism(), self.user())
    }
}

impl KafkaSasl {
    /// The mechanism's name as Kafka spells it.
    pub fn mechanism(&self) -> &'static str {
        match self {
            KafkaSasl::Plain { .. } => "PLAIN",
            KafkaSasl::ScramSha256 { .. } => "SCRAM-SHA-256",
            KafkaSasl::ScramSha512 { .. } => "SCRAM-SHA-512",
        }
    }

    /// `mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, any case)
    /// with its credentials; None for another mechanism.
    pub fn parse(mechanism: &str, user: String, password: String) -> Option<KafkaSasl> {
        match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => Some(KafkaSasl::Plain { user, password }),
            "SCRAM-SHA-256" => Some(KafkaSasl::ScramSha256 { user, password }),
            "SCRAM-SHA-512" => Some(KafkaSasl::ScramSha512 { user, password }),
            _ => None,
        }
    }

    fn user(&self) -> &str {
        match self {
            KafkaSasl::Plain { user, .. }
            | KafkaSasl::ScramSha256 { user, .. }
            | KafkaSasl::ScramSha512 { user, .. } => user,
        }
    }

    fn password(&self) -> &str {
        match self {
            KafkaSasl::Plain { password, .. }
            | KafkaSasl::ScramSha256 { password, .. }
            | KafkaSasl::ScramSha512 { password, .. } => password,
        }
    }
}

/// TLS to the brokers: the authorities to trust, and a client
/// certificate for brokers that ask for one (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTls {
    /// PEM file of certificate authorities the brokers' chains end in.
    pub ca_file: PathBuf,
    /// PEM client certificate chain (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Where the brokers are and how to reach them: what a source's and a
/// sink's configurations share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaClientConfig {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// TLS (None: plain TCP, loopback brokers only).
    pub tls: Option<KafkaTls>,
    /// SASL login (None: none).
    pub sasl: Option<KafkaSasl>,
    /// How long connecting may take, in ms.
    pub connect_timeout_ms: u64,
    /// How long one request, with the client's own retries, may take, in ms.
    pub request_timeout_ms: u64,
}

impl KafkaClientConfig {
    /// Plain TCP to `brokers` with the default timeouts.
    pub fn new(brokers: &[&str]) -> KafkaClientConfig {
        KafkaClientConfig {
            brokers: brokers.iter().map(|s| s.to_string()).collect(),
            tls: None,
            sasl: None,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Checks every setting against its limits and the off-machine rule.
    pub fn check(&self) -> Result<(), KafkaError> {
        let n = self.brokers.len();
        if n == 0 || n > BROKERS_MAX {
            return Err(config("brokers", n, format!("1 to {BROKERS_MAX} brokers")));
        }
        if let Some(b) = self.brokers.iter().find(|b| !host_port(b)) {
            return Err(config("brokers", format!("\"{b}\""), "host:port"));
        }
        for (name, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
        ] {
            if ms == 0 || ms > TIMEOUT_MS_MAX {
                return Err(config(name, ms, format!("1 to {TIMEOUT_MS_MAX}")));
            }
        }
        if let Some(s) = &self.sasl {
            for (name, v) in [("sasl_user", s.user()), ("sasl_password", s.password())] {
                if v.is_empty() || v.len() > CREDENTIAL_BYTES_MAX {
                    let expected = format!("1 to {CREDENTIAL_BYTES_MAX} bytes");
                    return Err(config(name, format!("{} bytes", v.len()), expected));
                }
            }
        }
        if let Some(t) = &self.tls {
            if t.cert_file.is_some() != t.key_file.is_some() {
                return Err(config(
                    "tls_cert_file",
                    "one of tls_cert_file and tls_key_file",
                    "both or neither",
                ));
            }
        }
        match self.brokers.iter().find(|b| !crate::nats::loopback_url(b)) {
            Some(b) if self.tls.is_none() => Err(KafkaError::OffMachine {
                broker: b.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The brokers, comma-separated, for messages.
    pub fn brokers_text(&self) -> String {
        self.brokers.join(",")
    }
}

/// A Kafka topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn topic_name_ok(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A record timestamp of `ms` since the Unix epoch (the epoch itself if
/// out of chrono's range).
pub fn timestamp_of_ms(ms: u64) -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn host_port(b: &str) -> bool {
    match b.rsplit_once(':') {
        Some((h, p)) => !h.is_empty() && !h.contains("://") && p.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn config(setting: &'static str, found: impl ToString, expected: impl ToString) -> KafkaError {
    KafkaError::Config {
        setting,
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

/// Errors of the Kafka client plumbing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    /// A setting is missing or out of its range.
    #[error("invalid Kafka configuration: {setting} {found} must be {expected}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: String,
    },
    /// A broker off this machine without TLS.
    #[error("Kafka broker {broker} is not on this machine, and weir reaches brokers off it only over TLS: set tls_ca_file (and SASL or a client certificate), or use a loopback address")]
    OffMachine {
        /// The broker.
        broker: String,
    },
    /// The TLS files could not be used.
    #[error("Kafka TLS: {0}")]
    Tls(#[source] Box<crate::net::tls::TlsError>),
    /// The client's runtime could not start.
    #[error("could not start a runtime for the Kafka client: {0}")]
    Runtime(#[source] std::io::Error),
    /// No bootstrap broker answered (or the login was refused).
    #[error("could not connect to Kafka at {brokers}: {detail}. Check that the brokers run and the addresses, TLS and SASL settings are right")]
    Connect {
        /// The bootstrap brokers.
        brokers: String,
        /// The client's error.
        detail: String,
    },
    /// A topic is not known to the brokers.
    #[error("Kafka topic `{topic}` does not exist at {brokers}{detail}. Create it (kafka-topics.sh --create --topic {topic} ...) or fix the name")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap brokers.
        brokers: String,
        /// More, when the broker said more.
        detail: String,
    },
    /// More partition clients than [`PARTITION_CLIENTS_MAX`].
    #[error("a Kafka connection reads or writes at most {max} topic partitions; {topic} partition {partition} would be one more")]
    TooManyPartitions {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// [`PARTITION_CLIENTS_MAX`].
        max: usize,
    },
    /// The offset asked for is outside what the partition holds.
    #[error("offset {offset} of Kafka topic `{topic}` partition {partition} is out of range (the broker holds {earliest}..{latest})")]
    OutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked for.
        offset: i64,
        /// The partition's earliest offset, as asked afterwards (-1: unknown).
        earliest: i64,
        /// The partition's high watermark, as asked afterwards (-1: unknown).
        latest: i64,
    },
    /// A request failed or did not finish within the request timeout.
    #[error("Kafka {what} of topic `{topic}` partition {partition} failed: {detail}")]
    Request {
        /// The request (fetch, produce, list offsets).
        what: &'static str,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The client's error, or the timeout.
        detail: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_the_off_machine_rule_are_checked() {
        let ok = KafkaClientConfig::new(&["127.0.0.1:9092"]);
        assert!(ok.check().is_ok());
        let mut c = ok.clone();
        c.brokers.clear();
        assert!(c.check().is_err());
        c.brokers = (0..=BROKERS_MAX).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
        assert!(c.check().unwrap_err().to_string().contains("1 to 64"));
        c.brokers = (0..BROKERS_MAX).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
        assert!(c.check().is_ok());
        for bad in ["127.0.0.1", "kafka://127.0.0.1:9092", ":9092", "h:0", "h:70000"] {
            let mut c = ok.clone();
            c.brokers = vec![bad.into()];
            assert!(c.check().is_err(), "{bad}");
        }
        let mut c = ok.clone();
        c.request_timeout_ms = TIMEOUT_MS_MAX + 1;
        assert!(c.check().unwrap_err().to_string().contains("request_timeout_ms"));
        c.request_timeout_ms = TIMEOUT_MS_MAX;
        assert!(c.check().is_ok());
        c.connect_timeout_ms = 0;
        assert!(c.check().is_err());
        let mut c = ok.clone();
        c.brokers = vec!["kafka.example.com:9093".into()];
        let e = c.check().unwrap_err();
        assert!(matches!(e, KafkaError::OffMachine { .. }), "{e}");
        c.tls = Some(KafkaTls {
            ca_file: "ca.pem".into(),
            cert_file: Some("c.pem".into()),
            key_file: None,
        });
        assert!(c.check().unwrap_err().to_string().contains("both or neither"));
        c.tls = Some(KafkaTls {
            ca_file: "ca.pem".into(),
            cert_file: None,
            key_file: None,
        });
        assert!(c.check().is_ok());
        c.sasl = KafkaSasl::parse("plain", "u".into(), "x".repeat(CREDENTIAL_BYTES_MAX + 1));
        assert!(c.check().unwrap_err().to_string().contains("sasl_password"));
    }

    #[test]
    fn sasl_mechanisms_parse_and_debug_hides_the_password() {
        let s = KafkaSasl::parse("scram-sha-512", "me".into(), "secret".into()).unwrap();
        assert_eq!(s.mechanism(), "SCRAM-SHA-512");
        assert!(!format!("{s:?}").contains("secret"));
        assert!(KafkaSasl::parse("GSSAPI", "me".into(), "x".into()).is_none());
    }
}
