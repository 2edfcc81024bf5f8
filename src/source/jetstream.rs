//! [`JetStreamSource`]: one NATS JetStream stream as one weir partition.
//! Positions are the stream's sequences; a batch's range `[from, until)` is
//! an interval of sequences (deleted messages leave gaps), never a count.
//! Like Spark's Kafka direct stream there is no local copy: the checkpoint
//! records each range before the batch runs, and a replay reads exactly
//! that interval again from JetStream.
//!
//! Reads: an ordered consumer (ephemeral, served by the stream's leader,
//! no acknowledgements) from the range's start, stopped at its end or when
//! the stream has nothing after the last message, through a small tokio
//! runtime the connection owns (the engine calls sources from plain
//! worker threads). A message that does not come within the request
//! timeout fails the attempt; the next one resumes after the last record
//! given, [`READ_TRIES_MAX`] attempts in all. Measured faster than
//! direct-get batches (`docs/performance.md`); any replica may answer a
//! direct get, the consumer always reads the leader's view. async-nats
//! 0.52 recreates an ordered consumer that resets before its first message
//! from the stream's first sequence: a read that sees a sequence below
//! where it stands gives nothing of it, and starts again from there with
//! a fresh consumer (a failed attempt).
//!
//! Retention: a read that finds fewer records than the interval holds asks
//! the stream for its first sequence; if retention or a purge removed part
//! of the interval, the read fails with [`JetStreamError::Removed`], naming
//! the stream, the missing sequences and the way out. Never a skip.
//!
//! Release: weir never acknowledges to JetStream before the batch that
//! read a range committed. For a limits-retention stream (the one
//! supported kind) there is nothing to acknowledge: `release` only records
//! the committed end for the lag counter.
//!
//! Limits: the consumer buffers at most one pull batch (async-nats's
//! ordered batch, 500 messages, each at most the server's `max_payload`,
//! 1 MiB by default); a record larger than `record_bytes_max` (default
//! [`RECORD_BYTES_MAX_DEFAULT`], 1 MiB) keeps only its first
//! [`OVERSIZED_KEPT_BYTES`] bytes and goes to the bad-record policy;
//! [`READ_TRIES_MAX`] tries of a request; servers 1 to [`crate::nats::SERVERS_MAX`],
//! streams 1 to [`STREAMS_MAX`].
//! Must never: acknowledge or purge anything before the commit of the batch
//! that read it, skip a sequence it was asked for, or return a range's
//! records differently on a replay (the interval is fixed; records are
//! given in sequence order).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::dstream::{BoxError, RecordText, Source};

use super::jetstream_conn::JetStreamConnection;

/// Default largest record, in bytes (JetStream's own default payload max).
pub const RECORD_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Bytes an oversized record keeps for its dead letter.
pub const OVERSIZED_KEPT_BYTES: usize = 4096;
/// Attempts of one read (timeout, no leader) before it fails.
pub const READ_TRIES_MAX: u32 = 20;
/// Most JetStream streams (partitions) of one weir stream.
pub const STREAMS_MAX: usize = 64;

/// Errors of the JetStream source and its connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JetStreamError {
    /// A setting is missing or out of its range.
    #[error("invalid JetStream configuration: {setting} {found} must be {expected}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: String,
    },
    /// The scale-out settings, an owner or lease claim, or a lost lease.
    #[error(transparent)]
    Lease(Box<super::jetstream_lease::LeaseError>),
    /// The client could not connect.
    #[error("could not connect to NATS at {servers}: {detail}. Check that the servers run and the URLs, credentials and TLS settings are right")]
    Connect {
        /// The server URLs.
        servers: String,
        /// The client's error.
        detail: String,
    },
    /// The source's runtime could not start.
    #[error("could not start the JetStream client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The stream's info could not be read.
    #[error("could not read the info of JetStream stream `{stream}`: {detail}. Check that the stream exists (nats stream info {stream}) and has a leader")]
    Info {
        /// The JetStream stream.
        stream: String,
        /// The client's error.
        detail: String,
    },
    /// The stream does not use limits retention.
    #[error("JetStream stream `{stream}` uses {retention} retention; weir reads streams with limits retention only (it never acknowledges, so a work-queue or interest stream would keep or drop messages regardless of weir's commits). Read a limits stream (a mirror or a copy of this one, say)")]
    NotLimits {
        /// The JetStream stream.
        stream: String,
        /// Its retention policy.
        retention: String,
    },
    /// Retention or a purge removed sequences of an allocated range.
    #[error("sequences {from}..{until} of JetStream stream `{stream}` (weir stream `{partition}`) are gone: the stream now starts at sequence {first}, so retention (max_age, max_msgs, max_bytes) or a purge removed them before weir committed the batch that reads them. weir never skips records on its own. Way out: if the records can be published again, restore them; otherwise record the loss deliberately, with the service stopped: weir wal skip --data-dir DATA_DIR --stream {partition} --from {from} --to {until} --reason \"...\", then start again. To stop it recurring, give the stream more retention than weir's longest outage")]
    Removed {
        /// The JetStream stream.
        stream: String,
        /// The weir stream (partition) reading it.
        partition: String,
        /// First missing sequence.
        from: u64,
        /// End (exclusive) of the missing sequences.
        until: u64,
        /// The stream's first sequence now.
        first: u64,
    },
    /// A read request failed past its tries.
    #[error("could not read sequences {from}..{until} of JetStream stream `{stream}` after {tries} tries: {detail}")]
    Read {
        /// The JetStream stream.
        stream: String,
        /// Start of the interval.
        from: u64,
        /// End (exclusive) of the interval.
        until: u64,
        /// Tries made.
        tries: u32,
        /// The last error.
        detail: String,
    },
}

impl From<super::jetstream_lease::LeaseError> for JetStreamError {
    fn from(e: super::jetstream_lease::LeaseError) -> Self {
        JetStreamError::Lease(Box::new(e))
    }
}

/// One message of a JetStream stream, as the source gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsRecord {
    /// Its stream sequence.
    pub seq: u64,
    /// Its payload; only the first [`OVERSIZED_KEPT_BYTES`] of an
    /// oversized one.
    pub payload: Bytes,
    /// The full size of an oversized payload (`None`: within the limit).
    pub oversized: Option<usize>,
}

impl JsRecord {
    /// The payload as text, or why it cannot be a record of a text stream.
    pub fn text(&self, record_bytes_max: usize) -> Result<String, String> {
        if let Some(n) = self.oversized {
            return Err(format!(
                "message of {n} bytes is larger than record_bytes_max ({record_bytes_max})"
            ));
        }
        match std::str::from_utf8(&self.payload) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(format!("message is not UTF-8 text ({e})")),
        }
    }
}

impl RecordText for JsRecord {
    fn record_text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Counters of one partition, for the service's metrics.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// The JetStream stream.
    pub stream: String,
    /// The stream's last sequence, as last seen.
    pub last_seq: AtomicU64,
    /// End (exclusive) of the committed sequences.
    pub committed_end: AtomicU64,
    /// Records read (replays count again).
    pub records_read: AtomicU64,
    /// Payload bytes read.
    pub bytes_read: AtomicU64,
    /// Read attempts retried (timeout, no leader).
    pub retries: AtomicU64,
    /// Stream info requests that failed (the cut kept its last view).
    pub info_errors: AtomicU64,
}

impl PartitionStats {
    /// Sequences in the stream not yet committed: last sequence + 1 minus
    /// the committed end.
    pub fn lag(&self) -> u64 {
        (self.last_seq.load(Ordering::Relaxed) + 1)
            .saturating_sub(self.committed_end.load(Ordering::Relaxed))
    }
}

/// Counters of a JetStream stream's partitions, in partition order.
#[derive(Debug, Default)]
pub struct JetStreamStats {
    /// One per partition.
    pub partitions: Vec<Arc<PartitionStats>>,
}

/// The source of one partition; see the module docs.
pub struct JetStreamSource {
    conn: Arc<JetStreamConnection>,
    stream: String,
    partition: String,
    record_bytes_max: usize,
    /// The stream's last sequence as seen at the last cut.
    last_seq: Mutex<u64>,
    /// The stream's first sequence as seen at the last cut.
    first_seq: AtomicU64,
    /// Whether a stream ending below the committed position was logged.
    behind_warned: std::sync::atomic::AtomicBool,
    stats: Arc<PartitionStats>,
}

impl JetStreamSource {
    /// The source of JetStream stream `stream`, read as weir stream
    /// `partition`; checks that the stream exists and uses limits retention.
    pub fn open(
        conn: Arc<JetStreamConnection>,
        stream: &str,
        partition: &str,
        record_bytes_max: usize,
    ) -> Result<Self, JetStreamError> {
        let info = conn.info(stream)?;
        let retention = info.config.retention;
        if retention != async_nats::jetstream::stream::RetentionPolicy::Limits {
            return Err(JetStreamError::NotLimits {
                stream: stream.to_string(),
                retention: format!("{retention:?}").to_lowercase(),
            });
        }
        let stats = Arc::new(PartitionStats {
            stream: stream.to_string(),
            ..Default::default()
        });
        stats
            .last_seq
            .store(info.state.last_sequence, Ordering::Relaxed);
        Ok(JetStreamSource {
            conn,
            stream: stream.to_string(),
            partition: partition.to_string(),
            record_bytes_max,
            last_seq: Mutex::new(info.state.last_sequence),
            first_seq: AtomicU64::new(info.state.first_sequence),
            behind_warned: std::sync::atomic::AtomicBool::new(false),
            stats,
        })
    }

    /// This partition's counters.
    pub fn stats(&self) -> Arc<PartitionStats> {
        self.stats.clone()
    }

    fn cached_last(&self) -> u64 {
        *self.last_seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the stream for its last sequence; keeps the last view (and
    /// counts the error) when it cannot.
    fn refresh(&self) -> u64 {
        match self.conn.info(&self.stream) {
            Ok(info) => {
                self.first_seq
                    .store(info.state.first_sequence, Ordering::Relaxed);
                let last = info.state.last_sequence;
                let mut g = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
                // A stream's last sequence never goes back; a replica that
                // answers behind does not move the cut back.
                *g = (*g).max(last);
                self.stats.last_seq.store(*g, Ordering::Relaxed);
                *g
            }
            Err(e) => {
                self.stats.info_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = %self.stream, error = %e, "could not read the JetStream stream's last sequence; this batch is cut at the last one seen");
                self.cached_last()
            }
        }
    }

    /// Reads `range` with an ordered consumer from its start, calling
    /// `f` with each record in sequence order; a failed attempt resumes
    /// after the last record given. See the module docs.
    fn read_range(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, JsRecord) -> bool,
    ) -> Result<(), JetStreamError> {
        // Sequences start at 1: position 0 is never a message.
        let mut at = range.start.max(1);
        let mut gap = false;
        let mut stopped = false;
        let mut detail = String::new();
        let mut done = at >= range.end;
        let mut attempt = 0;
        while !done {
            if attempt == READ_TRIES_MAX {
                return Err(JetStreamError::Read {
                    stream: self.stream.clone(),
                    from: at,
                    until: range.end,
                    tries: READ_TRIES_MAX,
                    detail,
                });
            }
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 || attempt % 5 == 0 {
                    tracing::warn!(stream = %self.stream, from = at, until = range.end, attempt, error = %detail, "a JetStream read failed; retrying after what it got");
                }
                std::thread::sleep(retry_pause(attempt));
            }
            attempt += 1;
            let mut restarted = None;
            let got = self.conn.consume(&self.stream, at, &mut |seq, payload, pending| {
                if seq >= range.end {
                    return false;
                }
                if seq < at {
                    // async-nats 0.52 recreates an ordered consumer that
                    // reset before its first message from the stream's
                    // start: begin again from `at` with a new one.
                    restarted = Some(seq);
                    return false;
                }
                gap |= seq != at;
                at = seq + 1;
                self.stats.records_read.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_read
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
                if !f(seq, self.record(seq, payload)) {
                    stopped = true;
                    return false;
                }
                // Nothing after this one in the stream: the rest of the
                // range was deleted (or removed: checked below).
                at < range.end && pending > 0
            });
            match (got, restarted) {
                // Ended before the range's end: the rest is deleted only
                // if the leader holds nothing more below it (the consumer
                // may have seen a view from before a leader change).
                (Ok(()), None) if !stopped && at < range.end => {
                    match self.conn.leader_next(&self.stream, at) {
                        Ok(next) if next.is_none_or(|s| s >= range.end) => done = true,
                        Ok(next) => {
                            detail = format!(
                                "the consumer ended at {at}, the leader holds {next:?} below {}",
                                range.end
                            )
                        }
                        Err(e) => detail = e,
                    }
                }
                (Ok(()), None) => done = true,
                (Ok(()), Some(seq)) => {
                    detail = format!("the consumer restarted at sequence {seq}, before {at}")
                }
                (Err(e), _) => detail = e,
            }
        }
        if !stopped && (gap || at < range.end) {
            self.check_retained(range)?;
        }
        Ok(())
    }

    fn record(&self, seq: u64, payload: Bytes) -> JsRecord {
        if payload.len() > self.record_bytes_max {
            let n = payload.len();
            return JsRecord {
                seq,
                payload: payload.slice(..OVERSIZED_KEPT_BYTES.min(n)),
                oversized: Some(n),
            };
        }
        JsRecord {
            seq,
            payload,
            oversized: None,
        }
    }

    /// A read found fewer records than `range` spans: fails if the stream
    /// no longer holds the start of it (retention, purge).
    ///
    /// The error names every missing sequence from the range's start on,
    /// up to the stream's first (past `range.end` too: later batches
    /// would miss them as well), so one `weir wal skip` covers the gap.
    fn check_retained(&self, range: Range<u64>) -> Result<(), JetStreamError> {
        let info = self.conn.info(&self.stream)?;
        let first = info.state.first_sequence;
        self.first_seq.store(first, Ordering::Relaxed);
        let from = range.start.max(1);
        if first > from && from < range.end {
            return Err(JetStreamError::Removed {
                stream: self.stream.clone(),
                partition: self.partition.clone(),
                from,
                until: first,
                first,
            });
        }
        Ok(())
    }
}

/// Pause before try `attempt` (1-based): 10 ms doubling to 1 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(7)).min(1000))
}

impl Source<JsRecord> for JetStreamSource {
    fn available_end(&self) -> u64 {
        self.cached_last() + 1
    }

    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        // One stream info request per batch.
        let last = self.refresh();
        if last + 1 < start && !self.behind_warned.swap(true, Ordering::Relaxed) {
            tracing::error!(stream = %self.stream, partition = %self.partition, last_sequence = last, committed = start, "the JetStream stream ends below what weir already committed of it: was it deleted and created again? weir reads nothing of it until its sequences pass the committed position; to start over on the new stream, give the source a new id (its partitions are new weir streams)");
        }
        (last + 1).min(max_end).max(start)
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<JsRecord>, BoxError> {
        let mut out = Vec::new();
        self.read_each(range, &mut |r| {
            out.push(r);
            true
        })?;
        Ok(out)
    }

    fn read_each(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(JsRecord) -> bool,
    ) -> Result<(), BoxError> {
        Ok(self.read_range(range, &mut |_, r| f(r))?)
    }

    fn read_each_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, JsRecord) -> bool,
    ) -> Result<(), BoxError> {
        Ok(self.read_range(range, f)?)
    }

    fn check_held(&self, range: Range<u64>) -> Result<(), BoxError> {
        // Asks the stream only when the first sequence seen at the last
        // cut is past the range's start.
        if self.first_seq.load(Ordering::Relaxed) > range.start.max(1) {
            self.check_retained(range)?;
        }
        Ok(())
    }

    fn release(&self, end: u64) {
        // Limits retention: nothing to acknowledge or purge (see the
        // module docs); the committed end feeds the lag counter only.
        self.stats.committed_end.fetch_max(end, Ordering::Relaxed);
    }
}
