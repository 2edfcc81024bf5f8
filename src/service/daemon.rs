//! The service loop behind [`super::run_service`]: one tokio task that
//! starts the context, watches its batches, answers the stop signals,
//! talks to systemd and serves the HTTP endpoint (the life cycle is in the
//! module docs of `service`).
//!
//! Owns: [`serve`] and its state between events (`Driver`), the live
//! status's probe of the context (`ContextProbe`), the watchdog.
//! Limits: polls every [`super::POLL`]; pings the watchdog every quarter
//! period while a batch completed within three quarters of it; a period
//! under twice the batch interval is refused (no pings).
//! Must never: block its runtime (start, stop and file reads run in
//! blocking tasks), hold engine logic, or listen off loopback without TLS
//! and tokens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::status::{Live, Phase, Probe, Rates, ReceiverRow, Sample, SourceRow, WalRow};
use super::{
    compile, generator, http, notify, stateful_operators, ServiceError, ServiceOptions,
    ServiceReport, StopHook, POLL,
};
use crate::wal::Wal;
use crate::StreamingContext;

/// The signals the service answers, caught before the pipeline is built.
pub(super) struct Signals {
    /// SIGTERM: stop gracefully.
    pub(super) term: tokio::signal::unix::Signal,
    /// SIGINT: stop gracefully.
    pub(super) int: tokio::signal::unix::Signal,
    /// SIGHUP: reload the status endpoint's TLS and tokens (never fatal).
    pub(super) hup: tokio::signal::unix::Signal,
}

/// What SIGHUP logs: weir reloads only the status endpoint's TLS
/// certificate and tokens while it runs.
pub(super) const RELOAD_WORDS: &str = "reload requested (SIGHUP): the TLS files and tokens files of the status endpoint and of listening sources are read again (if set), nothing else; weir keeps running; the log level ($WEIR_LOG) and the pipeline file are read at start, so a pipeline change needs a restart: `weir check --data-dir DIR PIPELINE`, then `systemctl restart weir` (a restart drains, commits and recovers; nothing is lost)";

/// Stop signals arriving within this many milliseconds of the first are
/// the same request (one from the parent, one to the process group); a
/// later one means "exit now".
pub const SIGNAL_GRACE_MS: u64 = 1_000;

struct ContextProbe {
    ssc: Arc<StreamingContext>,
    wals: Vec<(String, Arc<Wal>)>,
    generators: Vec<(String, Arc<generator::GeneratorSource>)>,
    jetstreams: Vec<(String, Arc<crate::PartitionStats>)>,
    kafkas: Vec<(String, Arc<crate::KafkaPartitionStats>)>,
    receivers: Vec<(String, compile::ReceiverCounters)>,
    sinks: Vec<(String, Arc<dyn crate::sink::SinkCounters>)>,
    dropped: Option<Arc<compile::Dropped>>,
    rates: Rates,
}

impl Probe for ContextProbe {
    fn sample(&self) -> Sample {
        use crate::dstream::Source;
        let committed = self.ssc.committed_positions();
        let pos = |n: &str| committed.iter().find(|(s, _)| s == n).map(|(_, p)| *p);
        let mut sources = Vec::new();
        let mut wal = Vec::new();
        for (name, w) in &self.wals {
            let c = pos(name).unwrap_or(w.first_lsn());
            sources.push(SourceRow {
                name: name.clone(),
                committed: c,
                backlog_records: w.end().saturating_sub(c),
            });
            let st = w.stats();
            wal.push(WalRow {
                name: name.clone(),
                segments: w.segments().len() as u64,
                end_lsn: w.end(),
                records_appended: st.records,
                bytes_written: st.bytes_written,
                fsyncs: st.fsyncs,
                fsync_seconds_total: st.fsync_nanos_total as f64 / 1e9,
                segment_removals_failed: st.segment_removals_failed,
                kept_bytes: st.kept_bytes,
            });
        }
        for (name, g) in &self.generators {
            let c = pos(name).unwrap_or(g.last_cut());
            sources.push(SourceRow {
                name: name.clone(),
                committed: c,
                backlog_records: g.available_end().saturating_sub(c),
            });
        }
        // A JetStream partition's backlog is its lag: sequences in the
        // stream past the committed end.
        for (name, p) in &self.jetstreams {
            let c = pos(name).unwrap_or(0);
            let last = p.last_seq.load(std::sync::atomic::Ordering::Relaxed);
            sources.push(SourceRow {
                name: name.clone(),
                committed: c,
                backlog_records: (last + 1).saturating_sub(c.max(1)),
            });
        }
        // A Kafka partition's backlog: offsets below its high watermark
        // past the committed end.
        for (name, p) in &self.kafkas {
            let c = pos(name).unwrap_or(0);
            let hw = p.high_watermark.load(std::sync::atomic::Ordering::Relaxed);
            sources.push(SourceRow {
                name: name.clone(),
                committed: c,
                backlog_records: hw.saturating_sub(c),
            });
        }
        let dropped = self
            .dropped
            .as_ref()
            .map(|d| d.snapshot())
            .unwrap_or_default();
        let receivers = self.receiver_rows();
        Sample {
            sources,
            wal,
            dropped,
            dead_lettered: self.ssc.dead_letter_counts(),
            receivers,
            sinks: self
                .sinks
                .iter()
                .map(|(name, s)| super::status::SinkRow {
                    name: name.clone(),
                    kind: s.kind(),
                    counters: s.counters(),
                })
                .collect(),
            state_keys: self.ssc.state_keys(),
            queue: self.ssc.batch_queue(),
            now_ms: self.ssc.clock().now_ms(),
        }
    }
}

/// A receiver's source kind (`socket`, `directory`, `ingest`, `generator`).
fn receiver_kind(c: &compile::ReceiverCounters) -> &'static str {
    match c {
        compile::ReceiverCounters::Socket(_) => "socket",
        compile::ReceiverCounters::Directory(_) => "directory",
        compile::ReceiverCounters::Ingest(_) => "ingest",
        compile::ReceiverCounters::Http(_) => "http",
        compile::ReceiverCounters::Generator(_) => "generator",
    }
}

/// Whether `name` is a partition (`<source>-p<digits>`) of `source`.
fn is_partition_of(name: &str, source: &str) -> bool {
    name.strip_prefix(source)
        .and_then(|r| r.strip_prefix("-p"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

impl ContextProbe {
    /// Every receiver-fed stream: state and last error from the context,
    /// counters from the compiled pipeline (a custom receiver has none).
    fn receiver_rows(&self) -> Vec<ReceiverRow> {
        self.ssc
            .receiver_health()
            .into_iter()
            .map(|(name, h)| {
                let c = self
                    .receivers
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| c);
                // A partition (`in-p3`) has its own records; the source's
                // shared counters (rejections) show on its partition 0.
                let part_of = self
                    .receivers
                    .iter()
                    .find(|(n, _)| is_partition_of(&name, n))
                    .map(|(_, c)| c);
                let (records, rejected) = match (c, part_of) {
                    (Some(c), _) => c.sample(),
                    (None, Some(c)) if name.ends_with("-p0") => (h.records, c.sample().1),
                    _ => (h.records, Vec::new()),
                };
                ReceiverRow {
                    kind: c.or(part_of).map_or("custom", receiver_kind).to_string(),
                    state: h.state.as_str().to_string(),
                    records_per_second: self.rates.rate(&name, records),
                    last_error: h.last_error.as_ref().map(|e| e.message.clone()),
                    last_error_ms: h.last_error.as_ref().map(|e| e.at_ms),
                    records,
                    rejected: rejected
                        .into_iter()
                        .map(|(w, n)| (w.to_string(), n))
                        .collect(),
                    producers: c.and_then(|c| c.producers()),
                    requests: c.map(|c| c.requests()).unwrap_or_default(),
                    connections: c.map(|c| c.connections()).unwrap_or_default(),
                    name,
                }
            })
            .collect()
    }
}

struct Watchdog {
    period: Duration,
    last_ping: Instant,
}

/// The watchdog for `period` (systemd's), or none when there is none or
/// it is under twice the batch `interval` (healthy batches would look
/// stuck; a warning says so).
fn watchdog_for(period: Option<Duration>, interval: Duration) -> Option<Watchdog> {
    match period {
        Some(period) if period < interval * 2 => {
            tracing::warn!(
                watchdog_ms = period.as_millis() as u64,
                batch_interval_ms = interval.as_millis() as u64,
                "the watchdog period is under twice the batch interval: healthy batches would look stuck; not pinging (raise WatchdogSec)"
            );
            None
        }
        p => p.map(|period| Watchdog {
            period,
            last_ping: Instant::now(),
        }),
    }
}

/// The live status of `ssc`, probing every input log it opened plus those
/// in `opts.wals`, and the compiled pipeline's generators (whose
/// `stop_accepting` joins `opts.on_stop`), receivers and drop counts.
fn live_status(ssc: &Arc<StreamingContext>, opts: &mut ServiceOptions) -> Arc<Live> {
    let compiled = opts.compiled.take();
    let dropped = compiled.as_ref().map(|c| c.dropped.clone());
    let c = compiled.unwrap_or_default();
    let (generators, jetstreams, kafkas, receivers, sinks) =
        (c.generators, c.jetstreams, c.kafkas, c.receivers, c.sinks);
    // Every input log the context opened, plus any the caller named.
    let mut wals = std::mem::take(&mut opts.wals);
    for (name, w) in ssc.input_logs() {
        if !wals.iter().any(|(n, _)| *n == name) {
            wals.push((name, w));
        }
    }
    for (_, g) in &generators {
        let g = g.clone();
        opts.on_stop.push(Box::new(move || g.stop_accepting()));
    }
    Live::new(
        ssc.batch_interval_ms(),
        stateful_operators(ssc),
        Box::new(ContextProbe {
            ssc: ssc.clone(),
            wals,
            generators,
            jetstreams,
            kafkas,
            receivers,
            sinks,
            dropped,
            rates: Rates::default(),
        }),
    )
}

/// The HTTP endpoint: where it listens, its serving task, its TLS and
/// tokens (reloaded on SIGHUP).
#[derive(Default)]
struct Http {
    address: Option<SocketAddr>,
    task: Option<tokio::task::JoinHandle<()>>,
    security: Option<Arc<crate::net::Security>>,
}

/// Loads the endpoint's TLS and tokens, binds it (if `addr`) and serves
/// `live` on it.
async fn start_http(
    addr: Option<SocketAddr>,
    settings: &super::config::HttpSettings,
    live: &Arc<Live>,
) -> crate::Result<Http> {
    let Some(addr) = addr else {
        return Ok(Http::default());
    };
    if let Some(key) = settings.missing_for(addr) {
        return Err(ServiceError::Usage(format!(
            "the status endpoint on {addr} is off this machine: it needs TLS and tokens; add service.{key} to the pipeline file (see docs/security.md), or listen on 127.0.0.1"
        ))
        .into());
    }
    let files = http::security_files(settings);
    let security = tokio::task::spawn_blocking(move || crate::net::Security::load(files))
        .await
        .map_err(|e| {
            ServiceError::Usage(format!(
                "loading the status endpoint's TLS and tokens failed: {e}"
            ))
        })?
        .map_err(|e| ServiceError::Security(Box::new(e)))?;
    let security = Arc::new(security);
    let l = http::bind(addr)
        .await
        .map_err(|source| ServiceError::Listen { addr, source })?;
    let bound = l.local_addr().unwrap_or(addr);
    let ep = Arc::new(http::Endpoint::new(
        live.clone(),
        settings.clone(),
        security.clone(),
    ));
    let names = security
        .tokens()
        .map(|t| t.names().collect::<Vec<_>>().join(","));
    tracing::info!(
        address = %format!("{}://{bound}/", ep.scheme()),
        tokens = names.as_deref().unwrap_or("none"),
        client_certificates = security.files().tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        "status page (also /metrics and /status)"
    );
    Ok(Http {
        address: Some(bound),
        task: Some(tokio::spawn(http::serve(l, ep))),
        security: Some(security),
    })
}

/// SIGHUP: reload the TLS and tokens of the endpoint and the listening
/// sources (if any), say what else is not reloaded.
async fn on_hup(securities: Vec<Arc<crate::net::Security>>) {
    tracing::info!(signal = "SIGHUP", "{RELOAD_WORDS}");
    for sec in securities {
        let _ = tokio::task::spawn_blocking(move || sec.reload("SIGHUP")).await;
    }
}

type Task = tokio::task::JoinHandle<crate::Result<()>>;

/// Awaits the task in `t` (the select branch is guarded by `t.is_some()`).
async fn join(t: &mut Option<Task>) -> Result<crate::Result<()>, tokio::task::JoinError> {
    t.as_mut().expect("guarded").await
}

/// The service loop's state between events: the start and stop tasks,
/// the signal seen, batch progress and the watchdog.
struct Driver {
    ssc: Arc<StreamingContext>,
    live: Arc<Live>,
    notifier: Option<notify::Notifier>,
    start: Option<Task>,
    stop_task: Option<Task>,
    stop_hooks: Vec<StopHook>,
    signal_name: Option<&'static str>,
    /// When the first stop signal arrived.
    signal_at: Option<Instant>,
    last_seen: Option<u64>,
    new_batches: u64,
    last_progress: Instant,
    watchdog: Option<Watchdog>,
    batches_max: Option<u64>,
}

impl Driver {
    fn notify(&self, m: &str) {
        if let Some(n) = &self.notifier {
            n.send(m)
        }
    }

    /// The first stop: stop accepting input, then drain and commit in a
    /// blocking task. Later calls do nothing.
    fn begin_stop(&mut self, why: &str) {
        if self.stop_task.is_some() {
            return;
        }
        tracing::info!(reason = why, "stopping: no new input; finishing the batch in flight and the durable backlog, then committing");
        self.notify("STOPPING=1\nSTATUS=stopping: draining the backlog");
        self.live.set_phase(Phase::Stopping);
        for h in self.stop_hooks.drain(..) {
            h();
        }
        let ssc = self.ssc.clone();
        self.stop_task = Some(tokio::task::spawn_blocking(move || ssc.stop(true)));
    }

    /// SIGTERM or SIGINT: the first stops (once started); another within
    /// [`SIGNAL_GRACE_MS`] is the same stop; a later one exits at once.
    fn on_signal(&mut self, name: &'static str, signo: i32) {
        if let Some(first) = self.signal_at {
            let since = first.elapsed();
            if since < Duration::from_millis(SIGNAL_GRACE_MS) {
                tracing::info!(signal = name, since_ms = since.as_millis() as u64, "stop signal repeated within the grace window: counted once (send it again later to exit at once)");
                return;
            }
            second_signal(name, signo)
        }
        self.signal_at = Some(Instant::now());
        self.signal_name = Some(name);
        if self.start.is_none() {
            self.begin_stop(name)
        }
    }

    /// The start task ended; `Some` ends the loop with that result.
    fn on_started(
        &mut self,
        r: Result<crate::Result<()>, tokio::task::JoinError>,
    ) -> Option<crate::Result<()>> {
        self.start = None;
        match r {
            Ok(Ok(())) => {
                self.notify("STATUS=recovered; waiting for the first batch");
                if let Some(s) = self.signal_name {
                    self.begin_stop(s)
                }
                None
            }
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(ServiceError::Usage(format!(
                "the start task failed: {e}"
            ))
            .into())),
        }
    }

    /// The stop task ended: the loop's result.
    fn on_stopped(
        &mut self,
        r: Result<crate::Result<()>, tokio::task::JoinError>,
    ) -> crate::Result<()> {
        drain_stats(
            &self.ssc,
            &self.live,
            &mut self.last_seen,
            &mut self.new_batches,
        );
        match r {
            Ok(r) => r,
            Err(e) => Err(ServiceError::Usage(format!("the stop task failed: {e}")).into()),
        }
    }

    /// One poll: batch progress, READY, watchdog, `batches_max`, and
    /// whether the context stopped on its own; `Some` ends the loop.
    fn on_tick(&mut self) -> Option<crate::Result<()>> {
        if self.start.is_some() {
            // Recovery may take a while: keep systemd's start
            // timeout from firing while it makes progress.
            return None;
        }
        if drain_stats(
            &self.ssc,
            &self.live,
            &mut self.last_seen,
            &mut self.new_batches,
        ) {
            self.last_progress = Instant::now();
            if self.live.phase() == Phase::Starting && self.new_batches > 0 {
                self.live.set_phase(Phase::Running);
                self.notify("READY=1\nSTATUS=running");
                tracing::info!("ready: recovery finished, batches running");
            }
        }
        self.ping_watchdog();
        if self.batches_max.is_some_and(|n| self.new_batches >= n) {
            self.begin_stop("--batches reached");
        }
        if self.stop_task.is_none() {
            match self.ssc.await_termination_or_timeout(Duration::ZERO) {
                Ok(false) => {}
                Ok(true) => return Some(Ok(())),
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    fn ping_watchdog(&mut self) {
        if self.live.phase() == Phase::Starting {
            return;
        }
        let Some(w) = self.watchdog.as_mut() else {
            return;
        };
        // Healthy: a batch completed within 3/4 of the period.
        // A loop stuck for longer stops the pings, and systemd
        // restarts the service about one period later.
        if w.last_ping.elapsed() >= w.period / 4 && self.last_progress.elapsed() < w.period * 3 / 4
        {
            w.last_ping = Instant::now();
            self.notify("WATCHDOG=1");
        }
    }

    /// After the loop: stopped phase, endpoint closed, final status and
    /// log line, the report.
    fn finish(self, result: crate::Result<()>, http: Http) -> crate::Result<ServiceReport> {
        self.live.set_phase(Phase::Stopped);
        if let Some(t) = http.task {
            t.abort();
        }
        let st = self.live.status();
        match &result {
            Ok(()) => {
                self.notify("STATUS=stopped");
                let waiting = self.ssc.waiting_records().unwrap_or_default();
                tracing::info!(
                    batches = st.batches_completed,
                    records = st.records_total,
                    "stopped cleanly: every completed batch is committed; {}",
                    waiting_words(&waiting)
                );
            }
            Err(e) => {
                self.notify(&format!("STATUS=failed: {e}"));
                tracing::error!(error = %e, "the service stopped with an error; committed batches are safe, the rest is replayed at the next start");
            }
        }
        result.map(|()| ServiceReport {
            batches: st.batches_completed,
            records: st.records_total,
            signal: self.signal_name,
            http_address: http.address,
        })
    }
}

/// Runs `ssc` as a service until a stop signal, `batches_max` or an
/// error (see [`super::run_service`]).
pub(super) async fn serve(
    ssc: Arc<StreamingContext>,
    mut opts: ServiceOptions,
    mut signals: Signals,
) -> crate::Result<ServiceReport> {
    let sources_security: Vec<Arc<crate::net::Security>> = opts
        .compiled
        .as_ref()
        .map(|c| c.securities.clone())
        .unwrap_or_default();
    let live = live_status(&ssc, &mut opts);
    let notifier = opts.notify_socket.as_deref().and_then(notify::Notifier::to);
    let http = start_http(opts.http_address, &opts.http, &live).await?;
    let interval = Duration::from_millis(ssc.batch_interval_ms());
    let mut d = Driver {
        ssc: ssc.clone(),
        live,
        notifier,
        start: None,
        stop_task: None,
        stop_hooks: std::mem::take(&mut opts.on_stop),
        signal_name: None,
        signal_at: None,
        last_seen: None,
        new_batches: 0,
        last_progress: Instant::now(),
        watchdog: None,
        batches_max: opts.batches_max,
    };
    d.notify("STATUS=recovering");
    d.start = Some(tokio::task::spawn_blocking(move || ssc.start()));
    d.last_progress = Instant::now();
    d.watchdog = watchdog_for(opts.watchdog, interval);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result: crate::Result<()> = loop {
        tokio::select! {
            _ = signals.term.recv() => d.on_signal("SIGTERM", 15),
            _ = signals.int.recv() => d.on_signal("SIGINT", 2),
            _ = signals.hup.recv() => on_hup(http.security.iter().chain(&sources_security).cloned().collect()).await,
            r = join(&mut d.start), if d.start.is_some() => {
                if let Some(r) = d.on_started(r) {
                    break r;
                }
            }
            r = join(&mut d.stop_task), if d.stop_task.is_some() => break d.on_stopped(r),
            _ = tick.tick() => {
                if let Some(r) = d.on_tick() {
                    break r;
                }
            }
        }
    };
    d.finish(result, http)
}

/// "no input waits ..." or "N records past the last batch wait in the
/// input logs for the next start (`a`: n, `b`: m)".
pub(super) fn waiting_words(waiting: &[(String, u64)]) -> String {
    let total: u64 = waiting.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return "no input waits for the next start".to_string();
    }
    let each: Vec<String> = waiting
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("`{s}`: {n}"))
        .collect();
    format!(
        "{total} record{} past the last batch wait in the input logs for the next start ({})",
        if total == 1 { "" } else { "s" },
        each.join(", ")
    )
}

fn second_signal(name: &str, signo: i32) -> ! {
    tracing::warn!(signal = name, "second stop signal: exiting at once; the next start recovers (replays the uncommitted batch)");
    std::process::exit(128 + signo)
}

/// Feeds new batch statistics to `live` and the log; whether any arrived.
fn drain_stats(
    ssc: &StreamingContext,
    live: &Live,
    last_seen: &mut Option<u64>,
    new_batches: &mut u64,
) -> bool {
    let mut any = false;
    for s in ssc.statistics() {
        if last_seen.is_some_and(|t| s.batch_time_ms <= t) {
            continue;
        }
        *last_seen = Some(s.batch_time_ms);
        any = true;
        if !s.replayed {
            *new_batches += 1;
        }
        live.batch(&s);
        tracing::info!(
            batch_time_ms = s.batch_time_ms,
            records = s.input_records,
            scheduling_delay_ms = s.scheduling_delay_ms,
            processing_ms = s.processing_time_ms,
            replayed = s.replayed,
            "batch committed"
        );
    }
    any
}
