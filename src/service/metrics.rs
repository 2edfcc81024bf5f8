//! `/metrics`: the service's figures in the Prometheus text format 0.0.4,
//! rendered from a [`Status`] snapshot (`super::status`).
//!
//! Limits: one sample per source, log, receiver, operator and step (all
//! bounded by the pipeline).
//! Must never: read anything but the snapshot it is given.

use std::fmt::Write as _;

use super::status::{BatchRow, Phase, ReceiverRow, SourceRow, Status, WalRow};

pub(super) fn label(v: &str) -> String {
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
    sink_metrics(&mut o, s);
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
    o.by(
        "weir_records_dead_lettered_total",
        "counter",
        "Records a step wrote to the dead-letter log (on_error = \"dead_letter\") in committed batches since start.",
        "step",
        &s.dead_lettered,
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

/// Each counting sink's counters: one metric `weir_sink_<counter>_total`
/// per counter name, one sample per sink (labels `sink`, `kind`).
fn sink_metrics(o: &mut Exposition, s: &Status) {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for c in s.sinks.iter().flat_map(|r| &r.counters) {
        if !names.iter().any(|(n, _)| *n == c.name) {
            names.push((c.name, c.help));
        }
    }
    for (name, help) in names {
        let rows: Vec<(String, String)> = s
            .sinks
            .iter()
            .filter_map(|r| {
                let c = r.counters.iter().find(|c| c.name == name)?;
                let labels = format!("{{sink=\"{}\",kind=\"{}\"}}", label(&r.name), r.kind);
                Some((labels, c.value.to_string()))
            })
            .collect();
        o.metric(&format!("weir_sink_{name}_total"), "counter", help, &rows);
    }
}

/// Each input log's figures.
fn wal_metrics(o: &mut Exposition, wal: &[WalRow]) {
    let w = |f: fn(&WalRow) -> u64| -> Vec<(String, u64)> {
        wal.iter().map(|r| (r.name.clone(), f(r))).collect()
    };
    let gauges: [(&str, &str, &str, fn(&WalRow) -> u64); 7] = [
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
        (
            "weir_wal_segment_removals_failed_total",
            "counter",
            "Failed deletions of segments below the committed position (alert on any increase: disk is not being freed).",
            |r| r.segment_removals_failed,
        ),
        (
            "weir_wal_kept_bytes",
            "gauge",
            "Bytes of segments below the committed position still on disk; they count in the backlog.",
            |r| r.kept_bytes,
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
    let states: Vec<(String, String)> = receivers
        .iter()
        .map(|r| {
            (
                format!(
                    "{{source=\"{}\",state=\"{}\"}}",
                    label(&r.name),
                    label(&r.state)
                ),
                "1".to_string(),
            )
        })
        .collect();
    o.metric(
        "weir_receiver_state",
        "gauge",
        "A receiver's state (label: connected, retrying, listening, running, stopped, failed, ...), always 1.",
        &states,
    );
    o.metric(
        "weir_receiver_rejected_total",
        "counter",
        "What a receiver refused or lost before storing, by reason.",
        &rej,
    );
    let table: Vec<(String, u64)> = receivers
        .iter()
        .filter_map(|r| r.producers.map(|(n, _)| (r.name.clone(), n)))
        .collect();
    o.by(
        "weir_ingest_producers",
        "gauge",
        "Producers in an ingest source's table (at most producers_max).",
        "source",
        &table,
    );
    let requests: Vec<(String, String)> = receivers
        .iter()
        .flat_map(|r| {
            r.requests.iter().map(move |(token, code, n)| {
                let l = format!("{{source=\"{}\",token=\"{}\",code=\"{code}\"}}", label(&r.name), label(token));
                (l, n.to_string())
            })
        })
        .collect();
    o.metric(
        "weir_http_ingest_requests_total",
        "counter",
        "Requests to an HTTP ingest source by token name (anonymous: none) and status code.",
        &requests,
    );
    let connections: Vec<(String, String)> = receivers
        .iter()
        .flat_map(|r| {
            r.connections.iter().map(move |(token, outcome, n)| {
                let l = format!("{{source=\"{}\",token=\"{}\",outcome=\"{}\"}}", label(&r.name), label(token), label(outcome));
                (l, n.to_string())
            })
        })
        .collect();
    o.metric(
        "weir_ingest_connections_total",
        "counter",
        "Connections to an ingest source by token name (anonymous: none) and outcome (accepted, unauthorized, forbidden).",
        &connections,
    );
    let expired: Vec<(String, u64)> = receivers
        .iter()
        .filter_map(|r| r.producers.map(|(_, e)| (r.name.clone(), e)))
        .collect();
    o.by(
        "weir_ingest_producers_expired_total",
        "counter",
        "Producers an ingest source forgot after producers_idle_ms_max without a connection.",
        "source",
        &expired,
    );
}
