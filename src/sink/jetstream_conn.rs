//! The JetStream sink's connection: one NATS client, the JetStream context
//! with its bound on unawaited acks, the small tokio runtime they run on,
//! the target stream (found from the subject) and its `duplicate_window`,
//! read once at connect. [`SinkConnection::publish_all`] publishes one
//! batch with bounded acks in flight and retries what failed under the
//! same message ids.
//!
//! Limits: [`crate::nats::RUNTIME_THREADS`] runtime threads; at most
//! `acks_in_flight_max` (1 to 4,096) acks awaited at once (the context's
//! own bound is set to the same number, below async-nats' 5,000);
//! `publish_tries_max` rounds per batch (and tries of the stream lookup),
//! backoff doubling from [`RETRY_BACKOFF_MS_FIRST`] to
//! [`RETRY_BACKOFF_MS_MAX`] ms; each ack's deadline is its publish plus
//! twice `ack_timeout_ms`, and a failed publish ends its round, so a
//! round over a dead connection lasts about one such deadline.
//! Must never: be called from inside an async runtime (it blocks on its
//! own; dropping it there is fine, its runtime shuts down in the
//! background), publish a record under two message ids, or report a batch
//! published before every one of its acks arrived.

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream;
use async_nats::Subject;
use bytes::Bytes;

use super::jetstream::{JetStreamSinkConfig, JetStreamSinkError};
use crate::nats::{connect, NatsError, NatsRuntime};

fn connect_error(cfg: &JetStreamSinkConfig, e: NatsError) -> JetStreamSinkError {
    JetStreamSinkError::Connect {
        servers: cfg.servers.join(","),
        detail: e.to_string(),
    }
}
/// First pause between publish rounds, in ms.
pub const RETRY_BACKOFF_MS_FIRST: u64 = 50;
/// Longest pause between publish rounds, in ms.
pub const RETRY_BACKOFF_MS_MAX: u64 = 2_000;

/// One message of a batch: its `Nats-Msg-Id` and payload.
pub(super) struct Msg {
    pub(super) id: String,
    pub(super) payload: Bytes,
}

/// What publishing a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Published {
    /// Acks the stream gave (one per record).
    pub(super) acked: u64,
    /// Of those, records the stream already held (a replay, deduplicated).
    pub(super) duplicates: u64,
    /// Records published again after a failed publish or ack.
    pub(super) retried: u64,
}

/// A connected client and its target stream; see the module docs.
pub(super) struct SinkConnection {
    rt: NatsRuntime,
    js: jetstream::Context,
    subject: Subject,
    /// The stream the subject belongs to.
    pub(super) stream: String,
    /// The stream's `duplicate_window`.
    pub(super) window: Duration,
    /// Longest wait for room to publish or for one ack (twice the ack
    /// timeout: the client's own timeout fires first when it has one).
    wait_max: Duration,
}

impl std::fmt::Debug for SinkConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkConnection")
            .field("stream", &self.stream)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl SinkConnection {
    /// Connects (`cfg` validated by the caller) and finds the stream that
    /// captures `cfg.subject` and its dedup window.
    pub(super) fn connect(cfg: &JetStreamSinkConfig) -> Result<Self, JetStreamSinkError> {
        let rt = NatsRuntime::new("weir-nats-sink").map_err(|e| match e {
            NatsError::Runtime(io) => JetStreamSinkError::Runtime(io),
            other => connect_error(cfg, other),
        })?;
        let client = rt
            .get()
            .block_on(connect(&cfg.client_spec()))
            .map_err(|e| connect_error(cfg, e))?;
        // The context spawns its acker task on the current runtime.
        let entered = rt.get().enter();
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(cfg.ack_timeout_ms))
            .max_ack_inflight(cfg.acks_in_flight_max)
            .backpressure_on_inflight(true)
            .build(client);
        drop(entered);
        // Right after a node loss the meta group may still be electing:
        // the lookup is retried like a publish round, bounded.
        let lookup = rt.get().block_on(async {
            let mut backoff = Duration::from_millis(RETRY_BACKOFF_MS_FIRST);
            let mut tries = 1;
            loop {
                let got = async {
                    let name = js.stream_by_subject(cfg.subject.clone()).await?;
                    let info = js.get_stream_no_info(&name).await?.get_info().await?;
                    Ok::<_, async_nats::Error>((name, info.config.duplicate_window))
                }
                .await;
                match got {
                    Err(e) if tries < cfg.publish_tries_max => {
                        tracing::warn!(subject = %cfg.subject, tries, error = %e, "could not find the JetStream stream of the sink's subject; trying again");
                    }
                    other => return other,
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MS_MAX));
                tries += 1;
            }
        });
        let (stream, window) = lookup.map_err(|e| JetStreamSinkError::NoStream {
            subject: cfg.subject.clone(),
            detail: e.to_string(),
        })?;
        Ok(SinkConnection {
            rt,
            js,
            subject: Subject::from(cfg.subject.as_str()),
            stream,
            window,
            wait_max: Duration::from_millis(cfg.ack_timeout_ms.saturating_mul(2)),
        })
    }

    /// Publishes every message of `msgs`, at most `in_flight_max` acks
    /// awaited at once, in up to `tries_max` rounds (a round publishes
    /// again, under the same ids, what failed in the one before).
    pub(super) fn publish_all(
        &self,
        msgs: &[Msg],
        in_flight_max: usize,
        tries_max: u32,
    ) -> Result<Published, JetStreamSinkError> {
        self.rt.get().block_on(async {
            let mut counts = Published::default();
            let mut todo: Vec<usize> = (0..msgs.len()).collect();
            let mut backoff = Duration::from_millis(RETRY_BACKOFF_MS_FIRST);
            let mut tries = 0;
            loop {
                tries += 1;
                let (failed, detail) = self.round(msgs, &todo, in_flight_max, &mut counts).await;
                let Some(detail) = detail else {
                    return Ok(counts);
                };
                if tries >= tries_max {
                    return Err(JetStreamSinkError::Publish {
                        subject: self.subject.to_string(),
                        stream: self.stream.clone(),
                        failed: failed.len(),
                        records: msgs.len(),
                        tries,
                        detail,
                    });
                }
                tracing::warn!(stream = %self.stream, failed = failed.len(), tries, error = %detail, "publishing to JetStream failed; publishing those records again under the same message ids");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(RETRY_BACKOFF_MS_MAX));
                counts.retried += failed.len() as u64;
                todo = failed;
            }
        })
    }

    /// An ack, waited for until `due` (its publish plus `wait_max`).
    async fn bounded<F>(
        &self,
        ack: F,
        due: tokio::time::Instant,
    ) -> Result<jetstream::publish::PublishAck, String>
    where
        F: std::future::Future<
            Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        >,
    {
        match tokio::time::timeout_at(due, ack).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no acknowledgement within {:?}", self.wait_max)),
        }
    }

    /// One round over `todo`: the indices that failed and the last error
    /// (`None`: every ack arrived).
    async fn round(
        &self,
        msgs: &[Msg],
        todo: &[usize],
        in_flight_max: usize,
        counts: &mut Published,
    ) -> (Vec<usize>, Option<String>) {
        type AckFut = <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture;
        // Each ack's deadline runs from its publish: awaited in order, the
        // client's own timeouts would only start at the first poll.
        let mut pending: VecDeque<(usize, tokio::time::Instant, AckFut)> =
            VecDeque::with_capacity(in_flight_max);
        let mut failed = Vec::new();
        let mut detail = None;
        let mut settle = |i: usize, r: Result<jetstream::publish::PublishAck, String>| match r {
            Ok(ack) if ack.stream == self.stream => {
                counts.acked += 1;
                counts.duplicates += u64::from(ack.duplicate);
            }
            Ok(ack) => {
                failed.push(i);
                detail = Some(format!(
                    "acknowledged by stream `{}`, not `{}`: two streams capture the subject",
                    ack.stream, self.stream
                ));
            }
            Err(e) => {
                failed.push(i);
                detail = Some(e);
            }
        };
        for (n, &i) in todo.iter().enumerate() {
            if pending.len() >= in_flight_max {
                if let Some((j, due, ack)) = pending.pop_front() {
                    settle(j, self.bounded(ack, due).await);
                }
            }
            let mut h = HeaderMap::new();
            h.insert(NATS_MESSAGE_ID, msgs[i].id.as_str());
            let sent =
                self.js
                    .publish_with_headers(self.subject.clone(), h, msgs[i].payload.clone());
            // Bounded even where the client's own wait is not (its wait
            // for an ack permit has no deadline).
            let err = match tokio::time::timeout(self.wait_max, sent).await {
                Ok(Ok(ack)) => {
                    let due = tokio::time::Instant::now() + self.wait_max;
                    pending.push_back((i, due, ack.into_future()));
                    continue;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no room to publish within {:?}", self.wait_max),
            };
            // The connection or the stream is in trouble: the rest of the
            // round waits for the next one rather than for a timeout each.
            for &k in &todo[n..] {
                settle(k, Err(err.clone()));
            }
            break;
        }
        while let Some((j, due, ack)) = pending.pop_front() {
            settle(j, self.bounded(ack, due).await);
        }
        (failed, detail)
    }
}
