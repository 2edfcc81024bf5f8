//! The NATS JetStream sink: `stream.save_to_jetstream(config)` publishes
//! every record of every batch to `config.subject`, exactly once in the
//! target stream, by the server's deduplication.
//!
//! Owns: the message ids and the dedup-window rule. Each record goes out
//! with header `Nats-Msg-Id` =
//! `<data dir id>/<sink id>/<batch time ms>/<P>.<p>.<i>`: the data
//! directory's identity (32 hex digits, so two pipelines never collide),
//! the sink's id, the batch time, and the record's place in the batch:
//! `i`-th record of partition `p` of `P`. That place is the same on every
//! replay: the engine evaluates partitions concurrently but returns them in
//! partition order, and a replay reads exactly the recorded input ranges,
//! so each partition yields the same records in the same order (the same
//! property that lets file sinks rewrite the same bytes). `P` is in the id
//! so that a replay under another `partitions` setting publishes again
//! (duplicates) rather than map an old id to another record (a loss).
//!
//! The output returns Ok only after the stream acknowledged every record;
//! a failed publish or ack is published again under the same id (up to
//! `publish_tries_max` rounds), then fails the output, so the batch is not
//! committed and is replayed, and the server drops what it already holds.
//!
//! The dedup window bounds how late a replay may come: JetStream forgets a
//! message id `duplicate_window` after it saw it. At first use the sink
//! reads the target stream's window; a batch that may have run before (a
//! replay at start, or a retry) whose batch time is older than now minus
//! the window is refused with [`JetStreamSinkError::ReplayTooOld`], unless
//! `replay_older_than_window` is [`ReplayOlderThanWindow::Publish`]. Batch
//! times are the context's clock (the system clock in production);
//! "now" is the system clock, as the server's window is.
//!
//! Limits: servers 1 to [`crate::nats::SERVERS_MAX`]; a sink id 1 to
//! [`SINK_ID_BYTES_MAX`] bytes of letters, digits, `_`, `-`, `.`;
//! `acks_in_flight_max` 1 to [`ACKS_IN_FLIGHT_CEILING`] (default
//! [`ACKS_IN_FLIGHT_MAX_DEFAULT`]); `publish_tries_max` 1 to
//! [`PUBLISH_TRIES_CEILING`] (default [`PUBLISH_TRIES_MAX_DEFAULT`]);
//! timeouts 1 to [`crate::nats::TIMEOUT_MS_MAX`] ms. A batch's payloads are held
//! in memory once more, rendered (bounded by `batch_records_max`).
//! Must never: return Ok before every record's ack, publish a record under
//! an id that depends on anything but its place in the batch, or publish
//! a replay older than the dedup window without the explicit option.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::jetstream_conn::{Msg, SinkConnection};
use super::Show;
use crate::dstream::{DStream, Data, EngineError};
pub use crate::nats::NatsAuth;
use crate::nats::{check_client, ClientSpec, SINK_CLIENT_NAME};

/// Default bound on acks awaited at once.
pub const ACKS_IN_FLIGHT_MAX_DEFAULT: usize = 1024;
/// Largest `acks_in_flight_max` (async-nats blocks at 5,000).
pub const ACKS_IN_FLIGHT_CEILING: usize = 4096;
/// Default publish rounds per batch.
pub const PUBLISH_TRIES_MAX_DEFAULT: u32 = 10;
/// Largest `publish_tries_max`.
pub const PUBLISH_TRIES_CEILING: u32 = 100;
/// Longest sink id, in bytes.
pub const SINK_ID_BYTES_MAX: usize = 64;

/// Errors of the JetStream sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamSinkError {
    /// A setting is missing or out of its range.
    #[error("invalid JetStream sink configuration: {setting} {found} must be {expected}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: String,
    },
    /// The context has no data directory to derive message ids from.
    #[error("the JetStream sink `{sink}` needs a data directory: its message ids start with the data directory's identity. Build the context with StreamingContext::get_or_create(DIR, ...)")]
    NoDataDir {
        /// The sink id.
        sink: String,
    },
    /// The client could not connect.
    #[error("could not connect to NATS at {servers}: {detail}. Check that the servers run and the URLs, credentials and TLS settings are right")]
    Connect {
        /// The server URLs.
        servers: String,
        /// The client's error.
        detail: String,
    },
    /// The sink's runtime could not start.
    #[error("could not start the JetStream sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// No stream captures the subject (or its info could not be read).
    #[error("no JetStream stream takes subject `{subject}` ({detail}). Create one whose subjects match it (nats stream add --subjects '{subject}'), or fix the subject")]
    NoStream {
        /// The subject.
        subject: String,
        /// The client's error.
        detail: String,
    },
    /// A replay is older than the stream's dedup window.
    #[error("refusing to publish batch {batch_time_ms} again to JetStream stream `{stream}` (sink `{sink}`): it may have been published {age_ms} ms ago, longer than the stream's duplicate_window ({window_ms} ms), so the server may no longer recognise its message ids and would store duplicates. Nothing was published; the batch is not committed. Ways out: raise the window (nats stream edit {stream} --dupe-window ...; this helps only while the ids are still held), or accept duplicates for this replay with replay_older_than_window = \"publish\"")]
    ReplayTooOld {
        /// The sink id.
        sink: String,
        /// The target stream.
        stream: String,
        /// The batch's time.
        batch_time_ms: u64,
        /// Now minus the batch time.
        age_ms: u64,
        /// The stream's `duplicate_window`.
        window_ms: u64,
    },
    /// Records stayed unacknowledged after every round.
    #[error("{failed} of {records} records were not acknowledged by JetStream stream `{stream}` (subject `{subject}`) after {tries} tries: {detail}. The batch is not committed; it is retried, and records the stream already holds are deduplicated")]
    Publish {
        /// The subject.
        subject: String,
        /// The target stream.
        stream: String,
        /// Records without an ack.
        failed: usize,
        /// Records in the batch.
        records: usize,
        /// Rounds made.
        tries: u32,
        /// The last error.
        detail: String,
    },
}

/// What a replay older than the stream's dedup window does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReplayOlderThanWindow {
    /// Refuse it: the output fails naming the stream and the window.
    #[default]
    Refuse,
    /// Publish it anyway: the stream may hold some records twice.
    Publish,
}

/// Where and how the sink publishes; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamSinkConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`).
    pub servers: Vec<String>,
    /// The subject every record is published to (no wildcards).
    pub subject: String,
    /// The sink's id in message ids and in the pipeline's names
    /// (`jetstream:<sink_id>`); default: the subject.
    pub sink_id: String,
    /// Credentials.
    pub auth: NatsAuth,
    /// A PEM file of certificate authorities to trust (TLS).
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse servers that do not speak TLS.
    pub tls_required: bool,
    /// How long connecting may take, in ms.
    pub connect_timeout_ms: u64,
    /// How long one ack (and one request) may take, in ms.
    pub ack_timeout_ms: u64,
    /// Most acks awaited at once.
    pub acks_in_flight_max: usize,
    /// Publish rounds per batch before the output fails.
    pub publish_tries_max: u32,
    /// What a replay older than the dedup window does.
    pub replay_older_than_window: ReplayOlderThanWindow,
}

impl JetStreamSinkConfig {
    /// A config publishing to `subject` on `servers`, with default limits;
    /// the sink id is the subject.
    pub fn new(servers: &[&str], subject: &str) -> Self {
        JetStreamSinkConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            subject: subject.to_string(),
            sink_id: subject.to_string(),
            auth: NatsAuth::None,
            tls_ca_file: None,
            tls_required: false,
            connect_timeout_ms: 5_000,
            ack_timeout_ms: 5_000,
            acks_in_flight_max: ACKS_IN_FLIGHT_MAX_DEFAULT,
            publish_tries_max: PUBLISH_TRIES_MAX_DEFAULT,
            replay_older_than_window: ReplayOlderThanWindow::Refuse,
        }
    }

    /// The client's part of the settings.
    pub(crate) fn client_spec(&self) -> ClientSpec<'_> {
        ClientSpec {
            name: SINK_CLIENT_NAME,
            servers: &self.servers,
            auth: &self.auth,
            tls_ca_file: self.tls_ca_file.as_deref(),
            tls_required: self.tls_required,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.ack_timeout_ms,
        }
    }

    /// Checks every setting against its limits.
    pub fn validate(&self) -> Result<(), JetStreamSinkError> {
        let bad = |setting, found: String, expected: String| {
            Err(JetStreamSinkError::Config {
                setting,
                found,
                expected,
            })
        };
        if let Some((setting, found, expected)) = check_client(&self.client_spec()) {
            return bad(setting, found, expected);
        }
        if !valid_subject(&self.subject) {
            let s = format!("{:?}", self.subject);
            return bad(
                "subject",
                s,
                "a subject without spaces or wildcards (`*`, `>`), such as \"out.counts\"".into(),
            );
        }
        if !valid_sink_id(&self.sink_id) {
            let s = format!("{:?}", self.sink_id);
            return bad(
                "sink_id",
                s,
                format!("1 to {SINK_ID_BYTES_MAX} letters, digits, `_`, `-` or `.`"),
            );
        }
        if self.acks_in_flight_max == 0 || self.acks_in_flight_max > ACKS_IN_FLIGHT_CEILING {
            let n = self.acks_in_flight_max.to_string();
            return bad(
                "acks_in_flight_max",
                n,
                format!("1 to {ACKS_IN_FLIGHT_CEILING}"),
            );
        }
        if self.publish_tries_max == 0 || self.publish_tries_max > PUBLISH_TRIES_CEILING {
            let n = self.publish_tries_max.to_string();
            return bad(
                "publish_tries_max",
                n,
                format!("1 to {PUBLISH_TRIES_CEILING}"),
            );
        }
        Ok(())
    }
}

/// A subject one can publish to: dot-separated tokens, no wildcards.
fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| !t.is_empty() && t != "*" && t != ">")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn valid_sink_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SINK_ID_BYTES_MAX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The pipeline name of the sink with id `sink_id`.
pub fn jetstream_sink_op(sink_id: &str) -> String {
    format!("jetstream:{sink_id}")
}

/// The `Nats-Msg-Id` of record `i` of partition `p` of `parts` in the
/// batch at `time_ms`; see the module docs.
pub fn message_id(
    identity: &str,
    sink_id: &str,
    time_ms: u64,
    parts: usize,
    p: usize,
    i: usize,
) -> String {
    format!("{identity}/{sink_id}/{time_ms}/{parts}.{p}.{i}")
}

/// Counters of one sink, for metrics and tests.
#[derive(Debug, Default)]
pub struct JetStreamSinkStats {
    /// Records the stream acknowledged (a replay counts again).
    pub acked: AtomicU64,
    /// Of those, records the stream already held (deduplicated).
    pub duplicates: AtomicU64,
    /// Records published again after a failed publish or ack.
    pub retried: AtomicU64,
    /// Batches committed through this sink.
    pub batches: AtomicU64,
    /// Replays refused as older than the dedup window.
    pub refused_replays: AtomicU64,
    /// Replays older than the window published anyway (the option).
    pub late_replays_published: AtomicU64,
}

impl super::SinkCounters for JetStreamSinkStats {
    fn kind(&self) -> &'static str {
        "jetstream"
    }

    fn counters(&self) -> Vec<super::SinkCounter> {
        let c = super::SinkCounter::read;
        vec![
            c("records_acked", "Records the target stream acknowledged (a replay counts again).", &self.acked),
            c("duplicates", "Acknowledged records the stream already held (replays, deduplicated by message id).", &self.duplicates),
            c("records_retried", "Records published again after a failed publish or ack.", &self.retried),
            c("batches", "Batches whose records were all acknowledged.", &self.batches),
            c("replays_refused", "Replays refused as older than the stream's duplicate_window.", &self.refused_replays),
            c("late_replays_published", "Replays older than the window published anyway (replay_older_than_window = \"publish\").", &self.late_replays_published),
        ]
    }
}

/// One sink: its config, identity, lazily made connection and counters.
struct Sink {
    cfg: JetStreamSinkConfig,
    identity: String,
    conn: Mutex<Option<Arc<SinkConnection>>>,
    stats: Arc<JetStreamSinkStats>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Sink {
    /// The connection, made at first use (and after a failed attempt).
    fn connection(&self) -> Result<Arc<SinkConnection>, JetStreamSinkError> {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*g {
            return Ok(c.clone());
        }
        let c = Arc::new(SinkConnection::connect(&self.cfg)?);
        tracing::info!(subject = %self.cfg.subject, stream = %c.stream, duplicate_window_ms = c.window.as_millis() as u64, "JetStream sink connected");
        *g = Some(c.clone());
        Ok(c)
    }

    /// Refuses a replay older than the stream's window (see module docs).
    fn check_window(&self, c: &SinkConnection, time_ms: u64) -> Result<(), JetStreamSinkError> {
        let window_ms = u64::try_from(c.window.as_millis()).unwrap_or(u64::MAX);
        let age_ms = now_ms().saturating_sub(time_ms);
        if age_ms <= window_ms {
            return Ok(());
        }
        if self.cfg.replay_older_than_window == ReplayOlderThanWindow::Publish {
            self.stats
                .late_replays_published
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream = %c.stream, batch_time_ms = time_ms, age_ms, window_ms, "publishing a replay older than the stream's duplicate_window (replay_older_than_window = \"publish\"): the stream may hold some of its records twice");
            return Ok(());
        }
        self.stats.refused_replays.fetch_add(1, Ordering::Relaxed);
        Err(JetStreamSinkError::ReplayTooOld {
            sink: self.cfg.sink_id.clone(),
            stream: c.stream.clone(),
            batch_time_ms: time_ms,
            age_ms,
            window_ms,
        })
    }

    /// Publishes one batch; Ok once every record is acknowledged.
    fn write<T: Show>(
        &self,
        time_ms: u64,
        replay: bool,
        parts: &[Vec<T>],
    ) -> Result<(), JetStreamSinkError> {
        let c = self.connection()?;
        if replay {
            self.check_window(&c, time_ms)?;
        }
        let mut msgs = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        let mut text = String::new();
        for (p, part) in parts.iter().enumerate() {
            for (i, x) in part.iter().enumerate() {
                text.clear();
                x.show(&mut text);
                msgs.push(Msg {
                    id: message_id(
                        &self.identity,
                        &self.cfg.sink_id,
                        time_ms,
                        parts.len(),
                        p,
                        i,
                    ),
                    payload: Bytes::copy_from_slice(text.as_bytes()),
                });
            }
        }
        let done = c
            .publish_all(
                &msgs,
                self.cfg.acks_in_flight_max,
                self.cfg.publish_tries_max,
            )
            .inspect_err(|_| {
                // The retry of the batch starts on a fresh connection (and
                // a fresh ack bound), whatever state this one is in.
                *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            })?;
        let s = &self.stats;
        s.acked.fetch_add(done.acked, Ordering::Relaxed);
        s.duplicates.fetch_add(done.duplicates, Ordering::Relaxed);
        s.retried.fetch_add(done.retried, Ordering::Relaxed);
        s.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl<T: Data + Show> DStream<T> {
    /// Publishes every record of every batch (rendered as `print` shows
    /// it) to `config.subject`, exactly once in the target stream by its
    /// deduplication; see the module docs. Needs a context with a data
    /// directory (`StreamingContext::get_or_create`). Returns the sink's
    /// counters.
    pub fn save_to_jetstream(
        &self,
        config: JetStreamSinkConfig,
    ) -> Result<Arc<JetStreamSinkStats>, EngineError> {
        let invalid = |e: JetStreamSinkError| EngineError::InvalidGraph {
            problems: vec![format!("save_to_jetstream: {e}")],
        };
        config.validate().map_err(invalid)?;
        let identity = self.sink_identity().ok_or_else(|| {
            invalid(JetStreamSinkError::NoDataDir {
                sink: config.sink_id.clone(),
            })
        })?;
        let place = super::ExternalSink {
            node: "jetstream_sink",
            output: "save_to_jetstream",
            name: jetstream_sink_op(&config.sink_id),
            params: vec![("subject", config.subject.clone())],
        };
        let stats = Arc::new(JetStreamSinkStats::default());
        let sink = Sink {
            cfg: config,
            identity,
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
    fn validate_checks_every_limit() {
        let ok = JetStreamSinkConfig::new(&["nats://127.0.0.1:4222"], "out.counts");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.acks_in_flight_max, 1024);
        let mut c = ok.clone();
        c.subject = "out.*".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.subject = "out..x".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.sink_id = "a/b".into();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.acks_in_flight_max = ACKS_IN_FLIGHT_CEILING + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("acks_in_flight_max") && e.contains("4096"),
            "{e}"
        );
        let mut c = ok.clone();
        c.acks_in_flight_max = 0;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.servers.clear();
        assert!(c.validate().is_err());
        let mut c = ok;
        c.ack_timeout_ms = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn message_ids_name_the_place_in_the_batch() {
        let id = message_id("00ff", "counts", 1000, 4, 2, 17);
        assert_eq!(id, "00ff/counts/1000/4.2.17");
    }
}
