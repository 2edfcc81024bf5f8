//! What the service knows about itself, and its renderings: `/metrics`
//! (Prometheus text format 0.0.4), `/status` (JSON) and `/` (the status
//! page, `page.html`, which draws its timelines from `/status`).
//!
//! The batch loop's statistics come from the scheduler's `BatchStats`, WAL
//! figures from `WalStats`, backlogs from each source's end minus its
//! committed position.
//! Limits: [`RECENT_BATCHES_MAX`] batches kept for the page and `/status`.
//! Must never: block the batch loop (it only reads snapshots).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::scheduler::BatchStats;

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
}

/// One receiver's counters.
#[derive(Debug, Clone, Serialize)]
pub struct ReceiverRow {
    /// The source.
    pub name: String,
    /// Records (lines) stored durably.
    pub records: u64,
    /// `(reason, count)` of what it refused or lost before storing.
    pub rejected: Vec<(String, u64)>,
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
    /// Receivers.
    pub receivers: Vec<ReceiverRow>,
    /// `(operator, keys)` of the committed state.
    pub state_keys: Vec<(String, u64)>,
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
    /// Receivers' counters.
    pub receivers: Vec<ReceiverRow>,
    /// Stateful operators (their state lives in the checkpoint).
    pub stateful_operators: Vec<String>,
    /// `(operator, keys)` of the committed state, live.
    pub state_keys: Vec<(String, u64)>,
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
            receivers,
            state_keys,
        } = self.probe.sample();
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
            receivers,
            stateful_operators: self.operators.clone(),
            state_keys,
        }
    }
}

/// `/status` as JSON.
pub fn status_json(s: &Status) -> String {
    serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text being written: one `# HELP`/`# TYPE` pair and its
/// sample lines per metric.
struct Exposition(String);

impl Exposition {
    /// A metric with one sample line per `(labels, value)` row.
    fn metric(&mut self, name: &str, kind: &str, help: &str, rows: &[(String, String)]) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(self.0, "{name}{labels} {v}");
        }
    }

    /// A metric with one unlabelled value.
    fn one(&mut self, name: &str, kind: &str, help: &str, v: String) {
        self.metric(name, kind, help, &[(String::new(), v)]);
    }

    /// A metric with one sample per `(label value, value)`, labelled `key`.
    fn by(&mut self, name: &str, kind: &str, help: &str, key: &str, rows: &[(String, u64)]) {
        let rows: Vec<(String, String)> = rows
            .iter()
            .map(|(n, v)| (format!("{{{key}=\"{}\"}}", label(n)), v.to_string()))
            .collect();
        self.metric(name, kind, help, &rows);
    }
}

/// `/metrics` in Prometheus text format.
pub fn metrics_text(s: &Status) -> String {
    let mut o = Exposition(String::new());
    service_metrics(&mut o, s);
    if let Some(b) = s.batches.last() {
        last_batch_metrics(&mut o, b);
    }
    source_metrics(&mut o, s);
    wal_metrics(&mut o, &s.wal);
    o.by(
        "weir_state_keys",
        "gauge",
        "Keys in a stateful operator's committed state.",
        "operator",
        &s.state_keys,
    );
    o.by(
        "weir_records_dropped_total",
        "counter",
        "Records a step dropped by its on_error = \"drop\".",
        "step",
        &s.dropped,
    );
    receiver_metrics(&mut o, &s.receivers);
    o.0
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::Stopping => "stopping",
        Phase::Stopped => "stopped",
    }
}

/// The service as a whole: up, phase, uptime, interval, batch totals.
fn service_metrics(o: &mut Exposition, s: &Status) {
    o.one("weir_up", "gauge", "1 while the service runs.", "1".into());
    o.metric(
        "weir_phase",
        "gauge",
        "The service's phase (label), always 1.",
        &[(
            format!("{{phase=\"{}\"}}", phase_name(s.phase)),
            "1".to_string(),
        )],
    );
    o.one(
        "weir_uptime_seconds",
        "gauge",
        "Seconds since the service started.",
        format!("{:.3}", s.uptime_seconds),
    );
    o.one(
        "weir_batch_interval_seconds",
        "gauge",
        "The batch interval.",
        format!("{}", s.batch_interval_ms as f64 / 1000.0),
    );
    o.one(
        "weir_batches_completed_total",
        "counter",
        "Batches completed (committed) since start, replays included.",
        s.batches_completed.to_string(),
    );
    o.one(
        "weir_batches_replayed_total",
        "counter",
        "Batches pending at start and replayed.",
        s.batches_replayed.to_string(),
    );
    o.one(
        "weir_input_records_total",
        "counter",
        "Input records of completed batches.",
        s.records_total.to_string(),
    );
    o.one(
        "weir_processing_seconds_total",
        "counter",
        "Time spent processing and committing batches.",
        format!("{}", s.processing_time_ms_total as f64 / 1000.0),
    );
}

/// The last completed batch.
fn last_batch_metrics(o: &mut Exposition, b: &BatchRow) {
    let seconds = |ms: u64| format!("{}", ms as f64 / 1000.0);
    o.one(
        "weir_last_batch_time_seconds",
        "gauge",
        "Batch time of the last completed batch (Unix time).",
        seconds(b.time_ms),
    );
    o.one(
        "weir_last_batch_input_records",
        "gauge",
        "Input records of the last completed batch.",
        b.records.to_string(),
    );
    o.one(
        "weir_last_batch_scheduling_delay_seconds",
        "gauge",
        "Scheduling delay of the last completed batch.",
        seconds(b.scheduling_delay_ms),
    );
    o.one(
        "weir_last_batch_processing_seconds",
        "gauge",
        "Processing time of the last completed batch.",
        seconds(b.processing_time_ms),
    );
    o.one(
        "weir_last_batch_total_delay_seconds",
        "gauge",
        "Total delay (scheduling + processing) of the last completed batch.",
        seconds(b.total_delay_ms),
    );
}

/// Each source's backlog and committed position.
fn source_metrics(o: &mut Exposition, s: &Status) {
    let per_source = |f: fn(&SourceRow) -> u64| -> Vec<(String, u64)> {
        s.sources.iter().map(|r| (r.name.clone(), f(r))).collect()
    };
    o.by(
        "weir_source_backlog_records",
        "gauge",
        "Records available (durable) but not yet in a committed batch.",
        "source",
        &per_source(|r| r.backlog_records),
    );
    o.by(
        "weir_source_committed_position",
        "gauge",
        "Position after the last committed batch.",
        "source",
        &per_source(|r| r.committed),
    );
}

/// Each input log's figures.
fn wal_metrics(o: &mut Exposition, wal: &[WalRow]) {
    let w = |f: fn(&WalRow) -> u64| -> Vec<(String, u64)> {
        wal.iter().map(|r| (r.name.clone(), f(r))).collect()
    };
    let gauges: [(&str, &str, &str, fn(&WalRow) -> u64); 5] = [
        (
            "weir_wal_segments",
            "gauge",
            "Segment files of the stream's log.",
            |r| r.segments,
        ),
        (
            "weir_wal_end_lsn",
            "gauge",
            "Next record number of the stream's log.",
            |r| r.end_lsn,
        ),
        (
            "weir_wal_records_appended_total",
            "counter",
            "Records appended (durable) by this process.",
            |r| r.records_appended,
        ),
        (
            "weir_wal_bytes_written_total",
            "counter",
            "Bytes written to the log by this process.",
            |r| r.bytes_written,
        ),
        (
            "weir_wal_fsyncs_total",
            "counter",
            "fsyncs of the log by this process.",
            |r| r.fsyncs,
        ),
    ];
    for (name, kind, help, f) in gauges {
        o.by(name, kind, help, "stream", &w(f));
    }
    let fs: Vec<(String, String)> = wal
        .iter()
        .map(|r| {
            (
                format!("{{stream=\"{}\"}}", label(&r.name)),
                format!("{}", r.fsync_seconds_total),
            )
        })
        .collect();
    o.metric(
        "weir_wal_fsync_seconds_total",
        "counter",
        "Time spent in fsync (latency = this / fsyncs).",
        &fs,
    );
}

/// Each receiver's stored and refused records.
fn receiver_metrics(o: &mut Exposition, receivers: &[ReceiverRow]) {
    let recs: Vec<(String, u64)> = receivers
        .iter()
        .map(|r| (r.name.clone(), r.records))
        .collect();
    o.by(
        "weir_receiver_records_total",
        "counter",
        "Records a receiver stored durably (rate: rate() of this).",
        "source",
        &recs,
    );
    let rej: Vec<(String, String)> = receivers
        .iter()
        .flat_map(|r| {
            r.rejected.iter().map(move |(why, n)| {
                (
                    format!(
                        "{{source=\"{}\",reason=\"{}\"}}",
                        label(&r.name),
                        label(why)
                    ),
                    n.to_string(),
                )
            })
        })
        .collect();
    o.metric(
        "weir_receiver_rejected_total",
        "counter",
        "What a receiver refused or lost before storing, by reason.",
        &rej,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
                }],
                dropped: vec![("parse".into(), 1)],
                receivers: vec![ReceiverRow {
                    name: "in".into(),
                    records: 15,
                    rejected: vec![("line_too_long".into(), 2)],
                }],
                state_keys: vec![("totals".into(), 12)],
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
            "weir_records_dropped_total{step=\"parse\"} 1",
            "weir_state_keys{operator=\"totals\"} 12",
            "weir_phase{phase=\"starting\"} 1",
            "weir_receiver_records_total{source=\"in\"} 15",
            "weir_receiver_rejected_total{source=\"in\",reason=\"line_too_long\"} 2",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line} in\n{m}");
        }
        let j: serde_json::Value =
            serde_json::from_str(&status_json(&live.status())).expect("json");
        assert_eq!(j["batches"][0]["records"], 7);
        assert_eq!(j["stateful_operators"][0], "totals");
        assert_eq!(j["state_keys"][0][1], 12);
        assert_eq!(label("a\"b"), "a\\\"b");
    }
}
