//! [`KafkaSource`]: one partition of a Kafka topic as one weir partition,
//! read the way Spark's direct stream reads it. Positions are the
//! partition's offsets; a batch's range `[from, until)` is an interval of
//! offsets (compaction and transaction markers leave gaps), never a count.
//! There is no local copy: the checkpoint records each range before the
//! batch runs, and a replay fetches exactly that interval again.
//!
//! Cut: one ListOffsets (latest) request per batch gives the high
//! watermark; the range ends there, or earlier at the engine's cap
//! (`batch_records_max`, the adaptive sizer) or at
//! `max_rate_per_partition` × the batch interval. A partition new to the
//! checkpoint starts at its earliest offset, its high watermark, or an
//! offset given ([`Source::first_position`]), recorded by the first
//! batch's range.
//!
//! Reads: fetch requests from the range's start, records below it (a
//! record batch starts earlier) or at or past its end dropped, until the
//! end. A fetch that fails or brings nothing of the interval is tried
//! again, [`READ_TRIES_MAX`] attempts in all, resuming after the last
//! record given.
//!
//! Retention: an offset the broker no longer holds (OffsetOutOfRange, or
//! a range starting below the earliest offset) fails the read with
//! [`KafkaSourceError::Removed`], naming the topic, the partition and the
//! missing offsets, and the way out. Never a skip.
//!
//! Release: nothing is committed to the broker (no consumer group); the
//! checkpoint is the source of truth. `release` records the committed
//! end for the lag counter.
//!
//! Limits: one fetch holds at most `fetch_bytes_max` bytes (up to
//! [`crate::kafka::FETCH_BYTES_CEILING`]) decoded; a value larger than
//! `record_bytes_max` keeps only its first [`OVERSIZED_KEPT_BYTES`] bytes
//! and goes to the bad-record policy.
//! Must never: skip an offset it was asked for that the broker holds,
//! read past a range's end, or give a range's records differently on a
//! replay (the interval is fixed; records come in offset order).

use std::ops::Range;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::kafka_config::StartAt;
use crate::dstream::{BoxError, RecordText, Source};
use crate::kafka::{Fetched, FetchedRecord, KafkaConn, KafkaError};

/// What the source needs of one partition's log: the Kafka connection
/// ([`KafkaConn`]), or a model of a partition in tests.
pub trait PartitionLog: Send + Sync {
    /// The earliest offset held.
    fn earliest(&self) -> Result<i64, KafkaError>;
    /// The end of what a reader may read now: the last stable offset
    /// (the high watermark unless a transaction is open).
    fn latest(&self) -> Result<i64, KafkaError>;
    /// Records from `offset` on, about `bytes_max` bytes, waiting at most
    /// `wait_ms` for the first.
    fn fetch(&self, offset: i64, bytes_max: usize, wait_ms: i32) -> Result<Fetched, KafkaError>;
    /// Whether the log still holds a record at `offset` or after it: a
    /// fetch there (up to 1 MiB, waiting up to 100 ms) brings one.
    fn holds(&self, offset: i64) -> Result<bool, KafkaError> {
        match self.fetch(offset, 1 << 20, 100)? {
            Fetched::Records(r, _) => Ok(r.iter().any(|r| r.offset >= offset)),
            Fetched::OutOfRange => Ok(false),
        }
    }
}

/// One partition of a [`KafkaConn`] as a [`PartitionLog`].
pub struct ConnPartition {
    /// The connection.
    pub conn: Arc<KafkaConn>,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl PartitionLog for ConnPartition {
    fn earliest(&self) -> Result<i64, KafkaError> {
        self.conn.earliest(&self.topic, self.partition)
    }
    fn latest(&self) -> Result<i64, KafkaError> {
        self.conn.readable_end(&self.topic, self.partition)
    }
    fn fetch(&self, offset: i64, bytes_max: usize, wait_ms: i32) -> Result<Fetched, KafkaError> {
        self.conn.fetch(&self.topic, self.partition, offset, bytes_max, wait_ms)
    }
}

/// Bytes an oversized value keeps for its dead letter.
pub const OVERSIZED_KEPT_BYTES: usize = 4096;
/// Framing of a record in a record batch beyond its key, value and
/// headers (varints, attributes, deltas), roughly, in bytes.
const RECORD_OVERHEAD_BYTES: usize = 16;
/// Bytes a fetch asks for beyond its estimate (a batch header, rounding).
const FETCH_BYTES_SLACK: u64 = 16 << 10;
/// Attempts of one read (error, timeout, nothing of the interval).
pub const READ_TRIES_MAX: u32 = 20;

/// Errors of the Kafka source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSourceError {
    /// The client, a setting, or a request.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Retention or a deletion removed offsets of an allocated range.
    #[error("offsets {from}..{until} of Kafka topic `{topic}` partition {partition} (weir stream `{stream}`) are gone: the partition now starts at offset {earliest}, so retention (retention.ms, retention.bytes) or a deletion removed them before weir committed the batch that reads them. weir never skips records on its own. Way out: if the records can be produced again, restore them; otherwise record the loss deliberately, with the service stopped: weir wal skip --data-dir DATA_DIR --stream {stream} --from {from} --to {until} --reason \"...\", then start again. To stop it recurring, give the topic more retention than weir's longest outage")]
    Removed {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The weir stream reading it.
        stream: String,
        /// First missing offset.
        from: u64,
        /// End (exclusive) of the missing offsets.
        until: u64,
        /// The partition's earliest offset now.
        earliest: i64,
    },
    /// The partition ends below offsets the checkpoint allocated (the
    /// topic was deleted and created again, or an unclean leader
    /// election truncated it): the pipeline stops.
    #[error("Kafka topic `{topic}` partition {partition} (weir stream `{stream}`) ends at offset {high_watermark}, below offsets {from}..{until} that weir already allocated: the topic was deleted and created again, or the partition was truncated (an unclean leader election), so records weir counted on are gone and new ones would reuse their offsets. weir stops rather than skip or mix them. Way out: to read the new topic from its start, give the source a new id (its partitions are new weir streams); if the offsets will come back (a broker restored), start again once they have")]
    Truncated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The weir stream reading it.
        stream: String,
        /// Start of the interval.
        from: u64,
        /// End (exclusive) of the interval.
        until: u64,
        /// The partition's high watermark.
        high_watermark: i64,
    },
    /// A start offset outside what the partition holds.
    #[error("start offset {offset} of Kafka topic `{topic}` partition {partition} is outside what the partition holds ({earliest}..{latest}): give an offset in that interval, or start = \"earliest\" / \"latest\"")]
    StartOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset given.
        offset: i64,
        /// The earliest offset.
        earliest: i64,
        /// The high watermark.
        latest: i64,
    },
    /// A read failed past its tries.
    #[error("could not read offsets {from}..{until} of Kafka topic `{topic}` partition {partition} after {tries} tries: {detail}")]
    Read {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Start of what was left to read.
        from: u64,
        /// End (exclusive) of the interval.
        until: u64,
        /// Tries made.
        tries: u32,
        /// The last error.
        detail: String,
    },
}

/// One Kafka record, as the source gives it to the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Its topic.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (create or log-append time, as the topic says), ms
    /// since the Unix epoch.
    pub timestamp_ms: i64,
    /// Its key, if any.
    pub key: Option<Bytes>,
    /// Its value (None: a tombstone); only the first
    /// [`OVERSIZED_KEPT_BYTES`] of an oversized one.
    pub value: Option<Bytes>,
    /// Its headers, in the order the broker gave them (by name).
    pub headers: Vec<(String, Bytes)>,
    /// The full size of an oversized value (None: within the limit).
    pub oversized: Option<usize>,
}

impl KafkaRecord {
    fn fitting(&self, record_bytes_max: usize) -> Result<(), String> {
        match self.oversized {
            Some(n) => Err(format!(
                "record value of {n} bytes is larger than record_bytes_max ({record_bytes_max})"
            )),
            None => Ok(()),
        }
    }

    /// The value as text, or why it cannot be a record of a text stream.
    pub fn text(&self, record_bytes_max: usize) -> Result<String, String> {
        self.fitting(record_bytes_max)?;
        let v = self.value.as_deref().ok_or("record has no value (a tombstone)")?;
        match std::str::from_utf8(v) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(format!("record value is not UTF-8 text ({e})")),
        }
    }

    /// The value as text that is one JSON value.
    pub fn json(&self, record_bytes_max: usize) -> Result<String, String> {
        let t = self.text(record_bytes_max)?;
        serde_json::from_str::<serde::de::IgnoredAny>(&t)
            .map_err(|e| format!("record value is not JSON ({e})"))?;
        Ok(t)
    }

    /// The whole record as one JSON object line: `topic`, `partition`,
    /// `offset`, `timestamp_ms`, `key` (text or null), `value` (text or
    /// null), `headers` (name to text); key, value and headers must be
    /// UTF-8.
    pub fn record_json(&self, record_bytes_max: usize) -> Result<String, String> {
        self.fitting(record_bytes_max)?;
        let text = |what: &str, b: &Option<Bytes>| -> Result<serde_json::Value, String> {
            match b {
                None => Ok(serde_json::Value::Null),
                Some(b) => std::str::from_utf8(b)
                    .map(|s| serde_json::Value::String(s.to_string()))
                    .map_err(|e| format!("record {what} is not UTF-8 text ({e})")),
            }
        };
        let mut headers = serde_json::Map::new();
        for (k, v) in &self.headers {
            headers.insert(k.clone(), text(&format!("header `{k}`"), &Some(v.clone()))?);
        }
        let o = serde_json::json!({
            "topic": &*self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": text("key", &self.key)?,
            "value": text("value", &self.value)?,
            "headers": headers,
        });
        Ok(o.to_string())
    }
}

impl RecordText for KafkaRecord {
    fn record_text(&self) -> String {
        let v = self.value.as_deref().unwrap_or_default();
        format!(
            "{}:{}@{} {}",
            self.topic,
            self.partition,
            self.offset,
            String::from_utf8_lossy(v)
        )
    }
}

/// Counters of one partition, for the service's metrics.
#[derive(Debug, Default)]
pub struct KafkaPartitionStats {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The high watermark, as last seen.
    pub high_watermark: AtomicU64,
    /// End (exclusive) of the committed offsets.
    pub committed_end: AtomicU64,
    /// Records read (replays count again).
    pub records_read: AtomicU64,
    /// Value bytes read.
    pub bytes_read: AtomicU64,
    /// Fetches retried.
    pub retries: AtomicU64,
    /// ListOffsets requests that failed (the cut kept its last view).
    pub offset_errors: AtomicU64,
}

impl KafkaPartitionStats {
    /// Offsets in the partition not yet committed.
    pub fn lag(&self) -> u64 {
        self.high_watermark
            .load(Ordering::Relaxed)
            .saturating_sub(self.committed_end.load(Ordering::Relaxed))
    }
}

/// How one partition is read: what [`KafkaSource::open`] needs.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The weir stream name.
    pub stream: String,
    /// Where it starts when new to the checkpoint.
    pub start: StartAt,
    /// A start offset given for it, overriding `start`.
    pub start_offset: Option<i64>,
    /// Most records of one batch (rate × interval), None: no cap.
    pub records_per_batch_max: Option<u64>,
    /// Bytes a fetch asks for.
    pub fetch_bytes_max: usize,
    /// How long a fetch waits, in ms.
    pub fetch_wait_ms: u32,
    /// Largest value, in bytes.
    pub record_bytes_max: usize,
}

/// The source of one partition; see the module docs.
pub struct KafkaSource {
    log: Arc<dyn PartitionLog>,
    spec: PartitionSpec,
    topic: Arc<str>,
    /// The high watermark as seen at the last cut.
    hw: AtomicU64,
    /// The earliest offset as last seen.
    earliest: AtomicI64,
    /// Average bytes of a record in the last fetch (0: none yet).
    record_bytes_seen: AtomicU64,
    /// The position a cut found the partition ending below
    /// (`u64::MAX`: none), and the high watermark it saw.
    behind: AtomicU64,
    behind_hw: AtomicU64,
    stats: Arc<KafkaPartitionStats>,
}

impl KafkaSource {
    /// The source of `spec`'s partition, read from `log`; asks for its
    /// offsets once.
    pub fn open(log: Arc<dyn PartitionLog>, spec: PartitionSpec) -> Result<Self, KafkaSourceError> {
        let (t, p) = (&spec.topic, spec.partition);
        let earliest = log.earliest()?;
        let hw = log.latest()?;
        let stats = Arc::new(KafkaPartitionStats {
            topic: t.clone(),
            partition: p,
            ..Default::default()
        });
        stats.high_watermark.store(hw.max(0) as u64, Ordering::Relaxed);
        Ok(KafkaSource {
            topic: Arc::from(t.as_str()),
            log,
            hw: AtomicU64::new(hw.max(0) as u64),
            earliest: AtomicI64::new(earliest),
            record_bytes_seen: AtomicU64::new(0),
            behind: AtomicU64::new(u64::MAX),
            behind_hw: AtomicU64::new(0),
            stats,
            spec,
        })
    }

    /// This partition's counters.
    pub fn stats(&self) -> Arc<KafkaPartitionStats> {
        self.stats.clone()
    }

    /// Asks for the high watermark; keeps the last view (and counts the
    /// error) when it cannot.
    fn refresh(&self) -> u64 {
        match self.log.latest() {
            Ok(hw) => {
                let hw = hw.max(0) as u64;
                self.hw.store(hw, Ordering::Relaxed);
                self.stats.high_watermark.store(hw, Ordering::Relaxed);
                hw
            }
            Err(e) => {
                self.stats.offset_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %self.spec.topic, partition = self.spec.partition, error = %e, "could not read the Kafka partition's high watermark; this batch is cut at the last one seen");
                self.hw.load(Ordering::Relaxed)
            }
        }
    }

    fn read_err(&self, from: i64, until: u64, tries: u32, detail: String) -> KafkaSourceError {
        KafkaSourceError::Read {
            topic: self.spec.topic.clone(),
            partition: self.spec.partition,
            from: from as u64,
            until,
            tries,
            detail,
        }
    }

    /// Reads `range`, calling `f` with each record in offset order; see
    /// the module docs.
    fn read_range(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, KafkaRecord) -> bool,
    ) -> Result<(), KafkaSourceError> {
        let end = range.end as i64;
        let mut at = range.start as i64;
        let mut attempt = 0u32;
        let mut detail = String::new();
        while at < end {
            if attempt == READ_TRIES_MAX {
                return Err(self.read_err(at, range.end, attempt, detail));
            }
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                if attempt == 1 || attempt.is_multiple_of(5) {
                    tracing::warn!(topic = %self.spec.topic, partition = self.spec.partition, from = at, until = end, attempt, error = %detail, "a Kafka fetch failed; retrying after what it got");
                }
                std::thread::sleep(retry_pause(attempt));
            }
            let (t, p) = (&self.spec.topic, self.spec.partition);
            let want = self.fetch_bytes_for(end - at);
            let got = self.log.fetch(at, want, self.spec.fetch_wait_ms as i32);
            let (records, hw) = match got {
                Ok(Fetched::Records(r, hw)) => {
                    self.learn_record_bytes(&r);
                    (r, hw)
                }
                Ok(Fetched::OutOfRange) => {
                    self.out_of_range(at, range.end)?;
                    attempt += 1;
                    detail = "the broker answered OffsetOutOfRange".into();
                    continue;
                }
                Err(e) => {
                    attempt += 1;
                    detail = e.to_string();
                    continue;
                }
            };
            match self.give(records, &mut at, end, f) {
                Given::Stopped => return Ok(()),
                Given::Some => attempt = 0,
                Given::PastEnd => at = end,
                Given::Nothing if hw <= at => {
                    return Err(KafkaSourceError::Truncated {
                        topic: t.clone(),
                        partition: p,
                        stream: self.spec.stream.clone(),
                        from: at as u64,
                        until: range.end,
                        high_watermark: hw,
                    })
                }
                Given::Nothing => {
                    attempt += 1;
                    detail = format!("a fetch at offset {at} brought nothing (high watermark {hw})");
                }
            }
        }
        Ok(())
    }

    /// Bytes to ask for `remaining` offsets: what they take at the record
    /// size seen so far, with room to spare, within `fetch_bytes_max` (an
    /// engine worker reads its share of a range: a full-size fetch near
    /// the share's end would mostly bring records of the next share).
    fn fetch_bytes_for(&self, remaining: i64) -> usize {
        let per = self.record_bytes_seen.load(Ordering::Relaxed);
        if per == 0 {
            return self.spec.fetch_bytes_max;
        }
        let want = (remaining.max(1) as u64).saturating_mul(per + per / 8) + FETCH_BYTES_SLACK;
        (want.min(self.spec.fetch_bytes_max as u64)) as usize
    }

    /// Records the average size of `records` (with their batch framing,
    /// roughly) for [`KafkaSource::fetch_bytes_for`].
    fn learn_record_bytes(&self, records: &[FetchedRecord]) {
        if records.is_empty() {
            return;
        }
        let bytes: usize = records.iter().map(|r| r.record.approximate_size() + RECORD_OVERHEAD_BYTES).sum();
        self.record_bytes_seen.store((bytes / records.len()) as u64, Ordering::Relaxed);
    }

    /// Gives the records of `records` in `[*at, end)` to `f`, moving `at`.
    fn give(
        &self,
        records: Vec<FetchedRecord>,
        at: &mut i64,
        end: i64,
        f: &mut dyn FnMut(u64, KafkaRecord) -> bool,
    ) -> Given {
        let mut given = Given::Nothing;
        for r in records {
            if r.offset < *at {
                continue;
            }
            if r.offset >= end {
                // Offsets come in order: nothing is left below `end`.
                *at = end;
                return if matches!(given, Given::Some) { Given::Some } else { Given::PastEnd };
            }
            debug_assert!(r.offset >= *at && r.offset < end);
            *at = r.offset + 1;
            given = Given::Some;
            let offset = r.offset as u64;
            let rec = self.record(r);
            self.stats.records_read.fetch_add(1, Ordering::Relaxed);
            let n = rec.value.as_ref().map_or(0, |v| v.len()) as u64;
            self.stats.bytes_read.fetch_add(n, Ordering::Relaxed);
            if !f(offset, rec) {
                return Given::Stopped;
            }
        }
        given
    }

    fn record(&self, r: FetchedRecord) -> KafkaRecord {
        let max = self.spec.record_bytes_max;
        let mut value = r.record.value.map(Bytes::from);
        let mut oversized = None;
        if let Some(v) = &value {
            if v.len() > max {
                oversized = Some(v.len());
                // A copy: a slice would keep the whole value's buffer.
                value = Some(Bytes::copy_from_slice(&v[..OVERSIZED_KEPT_BYTES.min(v.len())]));
            }
        }
        KafkaRecord {
            topic: self.topic.clone(),
            partition: self.spec.partition,
            offset: r.offset,
            timestamp_ms: r.record.timestamp.timestamp_millis(),
            key: r.record.key.map(Bytes::from),
            value,
            headers: r
                .record
                .headers
                .into_iter()
                .map(|(k, v)| (k, Bytes::from(v)))
                .collect(),
            oversized,
        }
    }

    /// A fetch at `at` was out of range: fails with the missing offsets
    /// when the partition now starts past `at`; Ok to retry otherwise.
    fn out_of_range(&self, at: i64, until: u64) -> Result<(), KafkaSourceError> {
        let earliest = self.log.earliest()?;
        self.earliest.store(earliest, Ordering::Relaxed);
        self.check_start(at as u64, until, earliest)?;
        let end = self.log.latest()?;
        if end <= at {
            return Err(KafkaSourceError::Truncated {
                topic: self.spec.topic.clone(),
                partition: self.spec.partition,
                stream: self.spec.stream.clone(),
                from: at as u64,
                until,
                high_watermark: end,
            });
        }
        Ok(())
    }

    fn check_start(&self, from: u64, until: u64, earliest: i64) -> Result<(), KafkaSourceError> {
        if earliest > from as i64 && from < until {
            return Err(KafkaSourceError::Removed {
                topic: self.spec.topic.clone(),
                partition: self.spec.partition,
                stream: self.spec.stream.clone(),
                from,
                until: earliest as u64,
                earliest,
            });
        }
        Ok(())
    }
}

/// What [`KafkaSource::give`] did with a fetch.
enum Given {
    /// Nothing in the interval, nothing past it.
    Nothing,
    /// Some records of the interval.
    Some,
    /// Nothing in the interval, records past its end: a gap to the end.
    PastEnd,
    /// `f` asked to stop.
    Stopped,
}

/// Pause before try `attempt` (1-based): 10 ms doubling to 1 s.
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(7)).min(1000))
}

impl Source<KafkaRecord> for KafkaSource {
    fn available_end(&self) -> u64 {
        self.hw.load(Ordering::Relaxed)
    }

    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        let mut hw = self.refresh();
        if hw < start {
            // The last allocated record still there: an end read short
            // (a broker answering behind), not a truncation.
            if start > 0 && self.log.holds(start as i64 - 1).unwrap_or(true) {
                hw = start;
            } else {
                // Checked (and the pipeline stopped) before the next cut.
                self.behind.fetch_min(start, Ordering::Relaxed);
                self.behind_hw.store(hw, Ordering::Relaxed);
            }
        }
        let cap = self
            .spec
            .records_per_batch_max
            .map_or(u64::MAX, |n| start.saturating_add(n));
        hw.min(max_end).min(cap).max(start)
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<KafkaRecord>, BoxError> {
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
        f: &mut dyn FnMut(KafkaRecord) -> bool,
    ) -> Result<(), BoxError> {
        Ok(self.read_range(range, &mut |_, r| f(r))?)
    }

    fn read_each_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, KafkaRecord) -> bool,
    ) -> Result<(), BoxError> {
        Ok(self.read_range(range, f)?)
    }

    fn check_held(&self, range: Range<u64>) -> Result<(), BoxError> {
        // One ListOffsets (earliest) per batch and consumer: the error then
        // names the whole gap, not one worker's share of it.
        let earliest = self.log.earliest()?;
        self.earliest.store(earliest, Ordering::Relaxed);
        self.check_start(range.start, range.end, earliest)?;
        Ok(())
    }

    fn release(&self, end: u64) {
        self.stats.committed_end.fetch_max(end, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), BoxError> {
        let at = self.behind.load(Ordering::Relaxed);
        if at == u64::MAX {
            return Ok(());
        }
        let hw = self.behind_hw.load(Ordering::Relaxed);
        Err(Box::new(KafkaSourceError::Truncated {
            topic: self.spec.topic.clone(),
            partition: self.spec.partition,
            stream: self.spec.stream.clone(),
            from: hw,
            until: at,
            high_watermark: hw as i64,
        }))
    }

    fn first_position(&self, fresh: bool) -> Result<u64, BoxError> {
        let (t, p) = (&self.spec.topic, self.spec.partition);
        let earliest = self.log.earliest()?;
        let latest = self.log.latest()?;
        let at = match (self.spec.start_offset, self.spec.start) {
            (Some(o), _) if o < earliest || o > latest => {
                return Err(Box::new(KafkaSourceError::StartOutOfRange {
                    topic: t.clone(),
                    partition: p,
                    offset: o,
                    earliest,
                    latest,
                }))
            }
            (Some(o), _) => o,
            // A partition added to a topic weir already reads: from its
            // start, as Spark does, so nothing produced into it is missed.
            (None, _) if !fresh => earliest,
            (None, StartAt::Earliest) => earliest,
            (None, StartAt::Latest) => latest,
        };
        tracing::info!(topic = %t, partition = p, offset = at, earliest, latest, "a Kafka partition new to the checkpoint starts here");
        Ok(at.max(0) as u64)
    }
}
