//! The JetStream source's configuration ([`JetStreamConfig`]) and its
//! connection ([`JetStreamConnection`]): one NATS client and the small
//! tokio runtime its I/O runs on, shared by every partition of one weir
//! stream. The engine calls sources from plain worker threads; each call
//! here blocks on the runtime for one request.
//!
//! Limits: 1 to [`crate::nats::SERVERS_MAX`] servers and [`STREAMS_MAX`] streams;
//! `connect_timeout_ms` and `request_timeout_ms` 1 to
//! [`TIMEOUT_MS_MAX`]; `record_bytes_max` 1 to [`RECORD_BYTES_CEILING`];
//! [`crate::nats::RUNTIME_THREADS`] runtime threads per connection; a
//! read's consumer asks for at most [`read_batch_max`] messages at once
//! (at most [`READ_BUFFER_BYTES_MAX`] bytes of `record_bytes_max`-sized
//! messages buffered, 500 at most).
//! Must never: be called from inside an async runtime (it blocks on its
//! own), or keep a subscription past the request it serves.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::jetstream::{JetStreamError, RECORD_BYTES_MAX_DEFAULT, STREAMS_MAX};
use crate::nats::{check_client, connect, ClientSpec, NatsError, NatsRuntime, SOURCE_CLIENT_NAME};
pub use crate::nats::NatsAuth;
use super::scale_out::ScaleOut;
use crate::dstream::OnError;

/// Largest `record_bytes_max` (JetStream's own payload ceiling, 64 MiB).
pub const RECORD_BYTES_CEILING: usize = 64 << 20;

/// A JetStream input: where the servers are, how to log in, which streams
/// (one weir partition each) and how records are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamConfig {
    /// Server URLs (`nats://host:port`, `tls://host:port`), 1 to
    /// [`crate::nats::SERVERS_MAX`].
    pub servers: Vec<String>,
    /// JetStream stream names, one partition each, 1 to [`STREAMS_MAX`].
    pub streams: Vec<String>,
    /// Credentials.
    pub auth: NatsAuth,
    /// A PEM file of certificate authorities to trust (TLS).
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse servers that do not speak TLS.
    pub tls_required: bool,
    /// How long connecting may take, in ms.
    pub connect_timeout_ms: u64,
    /// How long one request (stream info, a consumer's next message) may take,
    /// in ms.
    pub request_timeout_ms: u64,
    /// Largest record, in bytes; a larger message follows `on_error`.
    pub record_bytes_max: usize,
    /// What an oversized or non-UTF-8 message does: fail the batch, or go
    /// to the dead-letter log.
    pub on_error: OnError,
    /// Which streams this instance reads, and how it fences them
    /// (`docs/scale-out.md`).
    pub scale_out: ScaleOut,
}

impl JetStreamConfig {
    /// A config for `streams` on `servers`, with default limits.
    pub fn new(servers: &[&str], streams: &[&str]) -> Self {
        JetStreamConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            streams: streams.iter().map(|s| s.to_string()).collect(),
            auth: NatsAuth::None,
            tls_ca_file: None,
            tls_required: false,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            on_error: OnError::Fail,
            scale_out: ScaleOut::default(),
        }
    }

    /// The client's part of the settings.
    pub(crate) fn client_spec(&self) -> ClientSpec<'_> {
        ClientSpec {
            name: SOURCE_CLIENT_NAME,
            servers: &self.servers,
            auth: &self.auth,
            tls_ca_file: self.tls_ca_file.as_deref(),
            tls_required: self.tls_required,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.request_timeout_ms,
        }
    }

    /// Checks every setting against its limits.
    pub fn validate(&self) -> Result<(), JetStreamError> {
        let bad = |setting, found: String, expected: String| {
            Err(JetStreamError::Config {
                setting,
                found,
                expected,
            })
        };
        if let Some((setting, found, expected)) = check_client(&self.client_spec()) {
            return bad(setting, found, expected);
        }
        if self.streams.is_empty() || self.streams.len() > STREAMS_MAX {
            let n = self.streams.len().to_string();
            return bad("streams", n, format!("1 to {STREAMS_MAX} stream names"));
        }
        for s in &self.streams {
            if !valid_stream_name(s) {
                return bad("stream name", format!("{s:?}"), "1 to 255 characters without spaces, '.', '*', '>', '/' or '\\'".into());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = self.streams.iter().find(|s| !seen.insert(s.as_str())) {
            return bad("streams", format!("{dup:?} twice"), "each stream once".into());
        }
        self.scale_out.validate(self.streams.len())?;
        if self.record_bytes_max == 0 || self.record_bytes_max > RECORD_BYTES_CEILING {
            let n = self.record_bytes_max.to_string();
            return bad("record_bytes_max", n, format!("1 to {RECORD_BYTES_CEILING}"));
        }
        Ok(())
    }
}

/// JetStream's rule for stream names.
fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

/// Bytes of messages one read may have buffered at most (pulled but not
/// yet handed to the batch), counted at `record_bytes_max` each.
pub const READ_BUFFER_BYTES_MAX: usize = 256 << 20;
/// The client's own batch of an ordered consumer's pull.
const ORDERED_PULL_MAX: usize = 500;

/// Messages a read's consumer pulls at once: as many
/// `record_bytes_max`-sized messages as fit in [`READ_BUFFER_BYTES_MAX`],
/// 1 to 500.
pub fn read_batch_max(record_bytes_max: usize) -> usize {
    (READ_BUFFER_BYTES_MAX / record_bytes_max.max(1)).clamp(1, ORDERED_PULL_MAX)
}

/// A connected client and the runtime it runs on; see the module docs.
pub struct JetStreamConnection {
    rt: NatsRuntime,
    js: jetstream::Context,
    request_timeout: Duration,
    /// [`read_batch_max`] of the source's `record_bytes_max`.
    read_batch_max: usize,
}

impl std::fmt::Debug for JetStreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamConnection")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl JetStreamConnection {
    /// Connects to `cfg.servers` (validated first).
    pub fn connect(cfg: &JetStreamConfig) -> Result<Self, JetStreamError> {
        cfg.validate()?;
        let connect_err = |e: NatsError| match e {
            NatsError::Runtime(io) => JetStreamError::Runtime(io),
            other => JetStreamError::Connect {
                servers: cfg.servers.join(","),
                detail: other.to_string(),
            },
        };
        let rt = NatsRuntime::new("weir-nats").map_err(connect_err)?;
        let request_timeout = Duration::from_millis(cfg.request_timeout_ms);
        let client = rt
            .get()
            .block_on(connect(&cfg.client_spec()))
            .map_err(connect_err)?;
        // The context spawns its acker task on the current runtime.
        let entered = rt.get().enter();
        let js = jetstream::ContextBuilder::new()
            .timeout(request_timeout)
            .build(client);
        drop(entered);
        Ok(JetStreamConnection {
            rt,
            js,
            request_timeout,
            read_batch_max: read_batch_max(cfg.record_bytes_max),
        })
    }

    /// The runtime the client runs on (for the lease's renewals).
    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt()
    }

    /// The JetStream context (for the lease's key-value buckets).
    pub(crate) fn context(&self) -> &jetstream::Context {
        &self.js
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.get()
    }

    /// Stream `name`'s info (config and state), from its leader.
    pub fn info(&self, name: &str) -> Result<stream::Info, JetStreamError> {
        self.rt()
            .block_on(async {
                let s = self.js.get_stream_no_info(name).await?;
                Ok::<_, async_nats::Error>(s.get_info().await?)
            })
            .map_err(|e| JetStreamError::Info {
                stream: name.to_string(),
                detail: e.to_string(),
            })
    }

    /// Reads stream `name` from sequence `at` on with an ordered
    /// consumer (ephemeral, served by the stream's leader), calling `f`
    /// with each message's sequence, payload and the number of messages
    /// after it, until `f` returns false. Returns at once when nothing is
    /// at or after `at`; an error when a message does not come within the
    /// request timeout (the caller resumes after what it got).
    pub(crate) fn consume(
        &self,
        name: &str,
        at: u64,
        f: &mut dyn FnMut(u64, Bytes, u64) -> bool,
    ) -> Result<(), String> {
        self.rt().block_on(async {
            let s = self
                .js
                .get_stream_no_info(name)
                .await
                .map_err(|e| e.to_string())?;
            let wait = self.request_timeout;
            let late = |what: &str| format!("{what} took longer than {wait:?}");
            let consumer = tokio::time::timeout(
                wait,
                s.create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: at },
                    // Bounds what the client buffers (its pulls).
                    max_batch: self.read_batch_max as i64,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|_| late("creating the consumer"))?
            .map_err(|e| e.to_string())?;
            if consumer.cached_info().num_pending == 0 {
                return Ok(());
            }
            let mut messages = tokio::time::timeout(wait, consumer.messages())
                .await
                .map_err(|_| late("starting the consumer"))?
                .map_err(|e| e.to_string())?;
            loop {
                let m = match tokio::time::timeout(self.request_timeout, messages.next()).await {
                    Ok(Some(Ok(m))) => m,
                    Ok(Some(Err(e))) => return Err(e.to_string()),
                    Ok(None) => return Err("the consumer ended".into()),
                    Err(_) => return Err(format!("no message within {:?}", self.request_timeout)),
                };
                let (seq, pending) = match m.info() {
                    Ok(i) => (i.stream_sequence, i.pending),
                    Err(e) => return Err(e.to_string()),
                };
                if !f(seq, m.message.payload, pending) {
                    return Ok(());
                }
            }
        })
    }
}

impl JetStreamConnection {
    /// The first sequence at or after `at` that stream `name`'s leader
    /// holds (`None`: none). A direct `STREAM.MSG.GET`, which only the
    /// leader answers.
    pub(crate) fn leader_next(&self, name: &str, at: u64) -> Result<Option<u64>, String> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        self.rt().block_on(async {
            let s = self
                .js
                .get_stream_no_info(name)
                .await
                .map_err(|e| e.to_string())?;
            let got = s
                .raw_message_builder()
                .sequence(at)
                .next_by_subject(">")
                .send()
                .await;
            match got {
                Ok(m) => Ok(Some(m.sequence)),
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_buffers_at_most_its_byte_bound() {
        assert_eq!(read_batch_max(1), 500);
        assert_eq!(read_batch_max(RECORD_BYTES_MAX_DEFAULT), 256);
        assert_eq!(read_batch_max(RECORD_BYTES_CEILING), 4);
        assert_eq!(read_batch_max(READ_BUFFER_BYTES_MAX + 1), 1);
        for n in [1, 1000, RECORD_BYTES_MAX_DEFAULT, RECORD_BYTES_CEILING] {
            assert!(read_batch_max(n) * n <= READ_BUFFER_BYTES_MAX.max(n));
        }
    }

    #[test]
    fn validate_checks_every_limit() {
        let ok = JetStreamConfig::new(&["nats://127.0.0.1:4222"], &["EV0", "EV1"]);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.streams.clear();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.streams = vec!["EV.0".into()];
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.streams = vec!["EV0".into(), "EV0".into()];
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.servers.clear();
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.request_timeout_ms = 0;
        assert!(c.validate().is_err());
        let mut c = ok;
        c.record_bytes_max = RECORD_BYTES_CEILING + 1;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("record_bytes_max"), "{e}");
    }
}
