//! What the service knows about itself, and its renderings: `/metrics`
//! (Prometheus text format 0.0.4), `/status` (JSON) and `/` (the status
//! page, `page.html`, which draws its timelines from `/status`).
//!
//! The batch loop's statistics come from the scheduler's `BatchStats`, WAL
//! figures from `WalStats`, backlogs from each source's end minus its
//! committed position.
//! Receivers' states and last errors come from the context's
//! `receiver_health`, their records per second from two samples at least
//! [`RATE_WINDOW`] apart; the batch in flight and the due batches from the
//! scheduler's `BatchQueue`.
//! Limits: [`RECENT_BATCHES_MAX`] batches kept for the page and `/status`
//! (each with one range per source and one time per output).
//! Must never: block the batch loop (it only reads snapshots).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::scheduler::{BatchQueue, BatchStats};

/// Shortest time between the two samples a receiver's rate is taken from.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Batches kept for `/status` and the page.
pub const RECENT_BATCHES_MAX: usize = 300;

/// The status page (self-contained: inline CSS and JS, no remote assets).
pub const PAGE_HTML: &str = include_str!("page.html");

/// The service's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recovering (loading state, replaying pending batches).
    Starting,
    /// Batches are running; READY was sent.
    Running,
    /// A stop was asked for: draining and committing.
    Stopping,
    /// Stopped.
    Stopped,
}

/// One batch as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    /// Batch time, ms since the epoch.
    pub time_ms: u64,
    /// Input records.
    pub records: u64,
    /// Scheduling delay, ms.
    pub scheduling_delay_ms: u64,
    /// Processing time, ms.
    pub processing_time_ms: u64,
    /// Total delay, ms.
    pub total_delay_ms: u64,
    /// A replay of a batch pending at start.
    pub replayed: bool,
    /// Records per source range.
    pub ranges: Vec<RangeRow>,
    /// Time per output that ran.
    pub outputs: Vec<OutputRow>,
}

/// One source's range in a batch.
#[derive(Debug, Clone, Serialize)]
pub struct RangeRow {
    /// The source.
    pub source: String,
    /// First record (inclusive).
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// `end - start`.
    pub records: u64,
}

/// One output's time in a batch.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRow {
    /// The output in words (`"2: print of lower"`).
    pub output: String,
    /// Time it took, ms (fractional).
    pub time_ms: f64,
}

/// The batch in flight.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveRow {
    /// Batch time, ms since the epoch.
    pub time_ms: u64,
    /// Ms it has been running (this attempt).
    pub running_ms: u64,
    /// Attempt (1 first; more after failures).
    pub attempt: u32,
    /// A replay of a batch pending at start.
    pub replayed: bool,
    /// Its input ranges.
    pub ranges: Vec<RangeRow>,
}

fn range_rows(r: &[crate::checkpoint::StreamRange]) -> Vec<RangeRow> {
    r.iter()
        .map(|r| RangeRow {
            source: r.source.clone(),
            start: r.start,
            end: r.end,
            records: r.end.saturating_sub(r.start),
        })
        .collect()
}

impl From<&BatchStats> for BatchRow {
    fn from(s: &BatchStats) -> Self {
        BatchRow {
            time_ms: s.batch_time_ms,
            records: s.input_records,
            scheduling_delay_ms: s.scheduling_delay_ms,
            processing_time_ms: s.processing_time_ms,
            total_delay_ms: s.total_delay_ms,
            replayed: s.replayed,
            ranges: range_rows(&s.ranges),
            outputs: s
                .outputs
                .iter()
                .map(|o| OutputRow {
                    output: o.output.clone(),
                    time_ms: o.time_us as f64 / 1000.0,
                })
                .collect(),
        }
    }
}

/// One source's position.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    /// Its name.
    pub name: String,
    /// Position after the last committed batch.
    pub committed: u64,
    /// Records available (durable) but not yet in a committed batch.
    pub backlog_records: u64,
}

/// One sink's counters.
#[derive(Debug, Clone, Serialize)]
pub struct SinkRow {
    /// Its name (`jetstream:<sink id>`).
    pub name: String,
    /// Its kind (`jetstream`).
    pub kind: &'static str,
    /// Its counters since start.
    pub counters: Vec<crate::sink::SinkCounter>,
}

/// One write-ahead log's figures.
#[derive(Debug, Clone, Serialize)]
pub struct WalRow {
    /// The stream it feeds.
    pub name: String,
    /// Segment files now.
    pub segments: u64,
    /// End of the log (next record number).
    pub end_lsn: u64,
    /// Records appended by this process.
    pub records_appended: u64,
    /// Bytes written by this process.
    pub bytes_written: u64,
    /// fsyncs by this process.
    pub fsyncs: u64,
    /// Total time in fsync, seconds.
    pub fsync_seconds_total: f64,
    /// Failed segment deletions by this process.
    pub segment_removals_failed: u64,
    /// Bytes of segments below the committed position still on disk.
    pub kept_bytes: u64,
}

/// One receiver's state and counters.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverRow {
    /// The source.
    pub name: String,
    /// Its kind (`socket`, `ingest`, `directory`, `generator`, `custom`).
    pub kind: String,
    /// What it is doing: `connected`, `retrying`, `listening`, `running`,
    /// `stopped`, `failed`, ...
    pub state: String,
    /// Records stored per second, over the last [`RATE_WINDOW`] or more.
    pub records_per_second: f64,
    /// Its last error in words (kept after it recovers).
    pub last_error: Option<String>,
    /// When the last error happened, ms since the Unix epoch.
    pub last_error_ms: Option<u64>,
    /// Records (lines) stored durably.
    pub records: u64,
    /// `(counter, count)`: what it refused or lost before storing, by
    /// reason (any counter a receiver keeps; the page shows them all).
    pub rejected: Vec<(String, u64)>,
    /// An ingest source's producer table: `(producers now, producers
    /// expired since start)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producers: Option<(u64, u64)>,
    /// An HTTP ingest source's requests: `(token name, status code,
    /// count)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<(String, u16, u64)>,
    /// An ingest source's connections by token: `(token name, outcome
    /// (accepted, unauthorized, forbidden), count)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<(String, String, u64)>,
}

/// What a [`Probe`] reads at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Sources.
    pub sources: Vec<SourceRow>,
    /// Logs.
    pub wal: Vec<WalRow>,
    /// `(step, records dropped)`.
    pub dropped: Vec<(String, u64)>,
    /// `(step, records dead-lettered by committed batches since start)`.
    pub dead_lettered: Vec<(String, u64)>,
    /// Receivers.
    pub receivers: Vec<ReceiverRow>,
    /// Sinks that keep counters.
    pub sinks: Vec<SinkRow>,
    /// `(operator, keys)` of the committed state.
    pub state_keys: Vec<(String, u64)>,
    /// The batch in flight and those due (None before start).
    pub queue: Option<BatchQueue>,
    /// The scheduler clock's now, ms (for the running time of the batch
    /// in flight).
    pub now_ms: u64,
}

/// A snapshot for `/status` (and the figures of `/metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Phase.
    pub phase: Phase,
    /// Seconds since the service started.
    pub uptime_seconds: f64,
    /// Batch interval, ms.
    pub batch_interval_ms: u64,
    /// Batches completed since start (replays included).
    pub batches_completed: u64,
    /// Of which replays of batches pending at start.
    pub batches_replayed: u64,
    /// Input records of all completed batches.
    pub records_total: u64,
    /// Sum of processing times, ms.
    pub processing_time_ms_total: u64,
    /// The most recent batches, oldest first.
    pub batches: Vec<BatchRow>,
    /// Sources.
    pub sources: Vec<SourceRow>,
    /// Logs.
    pub wal: Vec<WalRow>,
    /// `(step, records dropped)`.
    pub dropped: Vec<(String, u64)>,
    /// `(step, records dead-lettered by committed batches since start)`.
    pub dead_lettered: Vec<(String, u64)>,
    /// Receivers' counters.
    pub receivers: Vec<ReceiverRow>,
    /// Sinks' counters (the sinks that keep them).
    pub sinks: Vec<SinkRow>,
    /// Stateful operators (their state lives in the checkpoint).
    pub stateful_operators: Vec<String>,
    /// `(operator, keys)` of the committed state, live.
    pub state_keys: Vec<(String, u64)>,
    /// The batch in flight.
    pub active_batch: Option<ActiveRow>,
    /// Batch times due and waiting for the batch in flight, oldest first
    /// (at most `scheduler::QUEUED_SHOWN_MAX`).
    pub queued_batches: Vec<u64>,
    /// All batch times due and waiting.
    pub queued_total: u64,
}

/// Reads the live figures the status derives from (sources, logs).
pub trait Probe: Send + Sync {
    /// Sources, logs, receivers now.
    fn sample(&self) -> Sample;
}

/// Shared between the service loop (writer) and the HTTP endpoint.
pub struct Live {
    started: Instant,
    interval_ms: u64,
    operators: Vec<String>,
    probe: Box<dyn Probe>,
    m: Mutex<Counters>,
}

#[derive(Debug)]
struct Counters {
    phase: Phase,
    completed: u64,
    replayed: u64,
    records: u64,
    processing_ms: u64,
    recent: VecDeque<BatchRow>,
}

impl Live {
    /// A new status for a pipeline with batch interval `interval_ms` and
    /// these stateful operators.
    pub fn new(interval_ms: u64, operators: Vec<String>, probe: Box<dyn Probe>) -> Arc<Live> {
        Arc::new(Live {
            started: Instant::now(),
            interval_ms,
            operators,
            probe,
            m: Mutex::new(Counters {
                phase: Phase::Starting,
                completed: 0,
                replayed: 0,
                records: 0,
                processing_ms: 0,
                recent: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the phase.
    pub fn set_phase(&self, p: Phase) {
        self.lock().phase = p;
    }

    /// The phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Records a completed batch.
    pub fn batch(&self, s: &BatchStats) {
        let mut c = self.lock();
        c.completed += 1;
        c.replayed += u64::from(s.replayed);
        c.records += s.input_records;
        c.processing_ms += s.processing_time_ms;
        c.recent.push_back(s.into());
        while c.recent.len() > RECENT_BATCHES_MAX {
            c.recent.pop_front();
        }
    }

    /// A snapshot.
    pub fn status(&self) -> Status {
        let Sample {
            sources,
            wal,
            dropped,
            dead_lettered,
            receivers,
            sinks,
            state_keys,
            queue,
            now_ms,
        } = self.probe.sample();
        let queue = queue.unwrap_or_default();
        let active_batch = queue.active.map(|a| ActiveRow {
            time_ms: a.time_ms,
            running_ms: now_ms.saturating_sub(a.started_ms),
            attempt: a.attempt,
            replayed: a.replayed,
            ranges: range_rows(&a.ranges),
        });
        let c = self.lock();
        Status {
            phase: c.phase,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            batch_interval_ms: self.interval_ms,
            batches_completed: c.completed,
            batches_replayed: c.replayed,
            records_total: c.records,
            processing_time_ms_total: c.processing_ms,
            batches: c.recent.iter().cloned().collect(),
            sources,
            wal,
            dropped,
            dead_lettered,
            receivers,
            sinks,
            stateful_operators: self.operators.clone(),
            state_keys,
            active_batch,
            queued_batches: queue.queued_ms,
            queued_total: queue.queued_total,
        }
    }
}

/// Receivers' records per second, from two samples at least
/// [`RATE_WINDOW`] apart (one entry per receiver).
#[derive(Debug, Default)]
pub struct Rates(Mutex<Vec<(String, Instant, u64, f64)>>);

impl Rates {
    /// The rate of `name` whose total is `records` now.
    pub fn rate(&self, name: &str, records: u64) -> f64 {
        let now = Instant::now();
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(e) = v.iter_mut().find(|e| e.0 == name) else {
            v.push((name.to_string(), now, records, 0.0));
            return 0.0;
        };
        let dt = now.duration_since(e.1);
        if dt >= RATE_WINDOW {
            e.3 = records.saturating_sub(e.2) as f64 / dt.as_secs_f64();
            e.1 = now;
            e.2 = records;
        }
        e.3
    }
}

/// `/status` as JSON.
pub fn status_json(s: &Status) -> String {
    serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::metrics::{label, metrics_text};

    struct Fixed;
    impl Probe for Fixed {
        fn sample(&self) -> Sample {
            Sample {
                sources: vec![SourceRow {
                    name: "in".into(),
                    committed: 10,
                    backlog_records: 5,
                }],
                wal: vec![WalRow {
                    name: "in".into(),
                    segments: 2,
                    end_lsn: 15,
                    records_appended: 15,
                    bytes_written: 900,
                    fsyncs: 3,
                    fsync_seconds_total: 0.25,
                    segment_removals_failed: 4,
                    kept_bytes: 8192,
                }],
                dropped: vec![("parse".into(), 1)],
                dead_lettered: vec![("parse".into(), 2)],
                receivers: vec![ReceiverRow {
                    name: "in".into(),
                    kind: "socket".into(),
                    state: "retrying".into(),
                    records_per_second: 0.0,
                    last_error: Some("cannot connect to 127.0.0.1:1: refused".into()),
                    last_error_ms: Some(1),
                    records: 15,
                    rejected: vec![("line_too_long".into(), 2)],
                    producers: Some((3, 1)),
                    requests: vec![("ci".into(), 200, 7)],
                    connections: vec![("ci".into(), "accepted".into(), 2)],
                }],
                sinks: vec![SinkRow {
                    name: "jetstream:out".into(),
                    kind: "jetstream",
                    counters: vec![crate::sink::SinkCounter {
                        name: "duplicates",
                        help: "Duplicates.",
                        value: 6,
                    }],
                }],
                state_keys: vec![("totals".into(), 12)],
                queue: Some(BatchQueue {
                    active: Some(crate::scheduler::ActiveBatch {
                        time_ms: 3000,
                        ranges: vec![],
                        started_ms: 3100,
                        attempt: 1,
                        replayed: false,
                    }),
                    queued_ms: vec![4000],
                    queued_total: 1,
                }),
                now_ms: 4200,
            }
        }
    }

    #[test]
    fn metrics_and_status_show_what_happened() {
        let live = Live::new(1000, vec!["totals".into()], Box::new(Fixed));
        live.batch(&BatchStats {
            batch_time_ms: 2000,
            input_records: 7,
            scheduling_delay_ms: 3,
            processing_time_ms: 40,
            total_delay_ms: 43,
            replayed: false,
            ranges: vec![crate::checkpoint::StreamRange {
                source: "in".into(),
                start: 3,
                end: 10,
            }],
            outputs: vec![crate::scheduler::OutputTime {
                output: "1: print of in".into(),
                time_us: 1500,
            }],
        });
        let m = metrics_text(&live.status());
        for line in [
            "weir_batches_completed_total 1",
            "weir_input_records_total 7",
            "weir_last_batch_processing_seconds 0.04",
            "weir_last_batch_total_delay_seconds 0.043",
            "weir_source_backlog_records{source=\"in\"} 5",
            "weir_wal_segments{stream=\"in\"} 2",
            "weir_wal_fsync_seconds_total{stream=\"in\"} 0.25",
            "weir_wal_segment_removals_failed_total{stream=\"in\"} 4",
            "weir_wal_kept_bytes{stream=\"in\"} 8192",
            "weir_records_dropped_total{step=\"parse\"} 1",
            "weir_state_keys{operator=\"totals\"} 12",
            "weir_phase{phase=\"starting\"} 1",
            "weir_receiver_records_total{source=\"in\"} 15",
            "weir_receiver_rejected_total{source=\"in\",reason=\"line_too_long\"} 2",
            "weir_ingest_producers{source=\"in\"} 3",
            "weir_ingest_producers_expired_total{source=\"in\"} 1",
            "weir_ingest_connections_total{source=\"in\",token=\"ci\",outcome=\"accepted\"} 2",
            "weir_receiver_state{source=\"in\",state=\"retrying\"} 1",
            "weir_sink_duplicates_total{sink=\"jetstream:out\",kind=\"jetstream\"} 6",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line} in\n{m}");
        }
        let j: serde_json::Value =
            serde_json::from_str(&status_json(&live.status())).expect("json");
        assert_eq!(j["batches"][0]["records"], 7);
        assert_eq!(j["stateful_operators"][0], "totals");
        assert_eq!(j["state_keys"][0][1], 12);
        assert_eq!(j["batches"][0]["ranges"][0]["records"], 7);
        assert_eq!(j["batches"][0]["outputs"][0]["time_ms"], 1.5);
        assert_eq!(j["active_batch"]["running_ms"], 1100);
        assert_eq!(j["queued_batches"][0], 4000);
        assert_eq!(j["receivers"][0]["state"], "retrying");
        let rates = Rates::default();
        assert_eq!(rates.rate("in", 10), 0.0, "no rate from one sample");
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
