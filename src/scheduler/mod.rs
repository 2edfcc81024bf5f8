//! Batch scheduling: the batch generator (driven by a [`Clock`]), the
//! executor (a bounded rayon pool of `parallelism` threads), commit through
//! a [`CheckpointStore`], recovery, and per-batch statistics.
//!
//! One scheduler thread runs the loop: wait for the next tick → cut each
//! source at `min(available, start + cap)` → allocate the batch → evaluate
//! it on the pool → commit state deltas → apply them to the in-memory
//! committed state → release consumed source records. The cap is
//! `batch_records_max`, or less with adaptive batches (default on): what
//! the pipeline processes in about one interval, learnt from the batches
//! before (`sizer`). Only one batch is in flight; a slow batch delays the
//! next tick's cut instead of queueing batches.
//!
//! Limits: `batch_records_max` records per source per batch (default
//! [`BATCH_RECORDS_MAX_DEFAULT`]); statistics of the last
//! `stats_batches_max` batches (default [`STATS_BATCHES_MAX_DEFAULT`]);
//! a graceful stop drains for at most `graceful_stop_timeout`.
//! Must never: parse configuration, or evaluate operators itself (that is
//! `dstream::Plan::run_batch`).

mod error;
mod sizer;
mod stats;

pub use error::SchedulerError;
pub use stats::{ActiveBatch, BatchQueue, BatchStats, OutputTime};

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::checkpoint::{BatchSpec, CheckpointStore, StreamRange};
use crate::clock::Clock;
use crate::dstream::graph::SourceControl;
use crate::dstream::{BadRecord, BatchCtx, DeadLetterSink, EngineError, Plan, Runner, StateStore};
use crate::Error;

/// Default cap of records per source per batch.
pub const BATCH_RECORDS_MAX_DEFAULT: u64 = 10_000_000;
/// Default number of batches whose statistics are kept.
pub const STATS_BATCHES_MAX_DEFAULT: usize = 1000;
/// How long one clock wait may block before the stop flag is checked.
const STOP_POLL: Duration = Duration::from_millis(20);


/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The clock driving batches.
    pub clock: Arc<dyn Clock>,
    /// Worker threads.
    pub parallelism: usize,
    /// Cap of records per source per batch.
    pub batch_records_max: u64,
    /// Whether new batches are sized to what the pipeline processes in
    /// about one interval (see `sizer`); otherwise a batch takes all
    /// that is available up to `batch_records_max`.
    pub adaptive_batches: bool,
    /// Statistics kept, in batches.
    pub stats_batches_max: usize,
    /// Longest a graceful stop keeps draining sources.
    pub graceful_stop_timeout: Duration,
    /// How often a failing batch is tried before the context stops.
    pub batch_attempts_max: u32,
    /// Wait before the first retry; doubles with every retry.
    pub retry_backoff: Duration,
    /// Where dead-lettered records go before their batch commits (`None`:
    /// a batch that dead-letters fails, naming the missing data directory).
    pub dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

/// Default of [`SchedulerConfig::batch_attempts_max`].
pub const BATCH_ATTEMPTS_MAX_DEFAULT: u32 = 3;
/// Default of [`SchedulerConfig::retry_backoff`].
pub const RETRY_BACKOFF_DEFAULT: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Progress {
    stop: Option<bool>,
    finished: bool,
    error: Option<Error>,
    error_msg: Option<String>,
    last_completed: Option<u64>,
    stats: VecDeque<BatchStats>,
    /// Each source's position after the last committed batch.
    committed: Vec<(String, u64)>,
    /// The batch in flight.
    active: Option<ActiveBatch>,
    /// The next batch time to cut.
    next_ms: u64,
    /// Keys per stateful operator after the last commit (or the load).
    state_keys: Vec<(String, u64)>,
    /// Set when the engine ends: each source's records past its last
    /// batch (acknowledged, left for the next start).
    waiting: Option<Vec<(String, u64)>>,
}

struct Shared {
    m: Mutex<Progress>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct PoolRunner(rayon::ThreadPool);

impl Runner for PoolRunner {
    fn for_each_index(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n <= 1 {
            (0..n).for_each(f)
        } else {
            self.0.install(|| (0..n).into_par_iter().for_each(f))
        }
    }
}

/// A running scheduler.
pub struct Scheduler {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    clock: Arc<dyn Clock>,
    interval_ms: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

struct Engine {
    plan: Arc<Plan>,
    cfg: SchedulerConfig,
    store: Box<dyn CheckpointStore>,
    state: StateStore,
    runner: PoolRunner,
    sources: Vec<Arc<dyn SourceControl>>,
    source_names: Vec<String>,
    positions: Vec<u64>,
    zero_ms: u64,
    next_ms: u64,
    shared: Arc<Shared>,
    sizer: Option<sizer::BatchSizer>,
    /// Whether the last cut was limited by the sizer's cap.
    last_cut_capped: bool,
    /// Per source: ranges `weir wal skip` marked (never fed).
    skipped: Arc<Vec<Vec<Range<u64>>>>,
}

/// Each source's position: the end of its last allocated range, or, for
/// one the checkpoint records nothing of, where it says it starts.
fn first_positions(
    sources: &[Arc<dyn SourceControl>],
    names: &[String],
    known: Vec<Option<u64>>,
    fresh: bool,
) -> Result<Vec<u64>, SchedulerError> {
    let start = |i: usize| {
        let source_name = names[i].clone();
        (sources[i].first_position(fresh))
            .map_err(|cause| SchedulerError::SourceStart { source_name, cause })
    };
    let v = known.into_iter().enumerate().map(|(i, k)| k.map_or_else(|| start(i), Ok));
    v.collect()
}

impl Scheduler {
    /// Recovers from `store` (loads committed state, prepares to replay
    /// pending batches) and starts the scheduler thread.
    pub fn start(
        plan: Arc<Plan>,
        cfg: SchedulerConfig,
        store: Box<dyn CheckpointStore>,
    ) -> Result<Scheduler, Error> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.parallelism.max(1))
            .thread_name(|i| format!("weir-worker-{i}"))
            .build()
            .map_err(|e| SchedulerError::Pool(e.to_string()))?;
        let mut store = store;
        store
            .check_pipeline(plan.description())
            .map_err(SchedulerError::from)?;
        let mut state = StateStore::new();
        for (name, decoder) in plan.stateful_operators() {
            if let Some(pairs) = store.load_encoded(&name).map_err(SchedulerError::from)? {
                let (st, keys) = decoder.decode(&name, &*pairs, plan_partitions(&plan))?;
                state.insert(name, st, keys);
            }
        }
        let interval = plan.interval_ms();
        let source_names = plan.source_names();
        let sources = plan.source_controls();
        let mut positions = vec![None::<u64>; source_names.len()];
        let last = store.last_allocated().map_err(SchedulerError::from)?;
        for r in last.iter().flat_map(|l| &l.ranges) {
            if let Some(i) = source_names.iter().position(|n| *n == r.source) {
                positions[i] = Some(r.end);
            }
        }
        let positions = first_positions(&sources, &source_names, positions, last.is_none())?;
        let (zero_ms, next_ms) = match last {
            Some(last) => {
                // No downtime storm: after a long stop, continue at the
                // current tick instead of running every missed one. The
                // first batch takes what is available, capped by
                // `batch_records_max`; the rest follows batch by batch.
                let now_tick = cfg.clock.now_ms() / interval * interval;
                (last.zero_ms, (last.time_ms + interval).max(now_tick))
            }
            None => {
                let zero = cfg.clock.now_ms() / interval * interval;
                (zero, zero + interval)
            }
        };
        let shared = Arc::new(Shared {
            m: Mutex::new(Progress {
                state_keys: state.key_counts(),
                next_ms,
                ..Progress::default()
            }),
            cv: Condvar::new(),
        });
        let mut skipped = vec![Vec::new(); source_names.len()];
        for r in store.skipped().map_err(SchedulerError::from)? {
            if let Some(i) = source_names.iter().position(|n| *n == r.source) {
                tracing::warn!(stream = %r.source, from = r.start, to = r.end, "records skipped deliberately (weir wal skip; see weir checkpoint show) are not fed to the pipeline");
                skipped[i].push(r.start..r.end);
            }
        }
        let sizer = cfg.adaptive_batches.then(|| {
            let n = source_names.len().max(1) as u64;
            sizer::BatchSizer::new(interval, cfg.batch_records_max.saturating_mul(n))
        });
        let clock = cfg.clock.clone();
        let engine = Engine {
            skipped: Arc::new(skipped),
            sizer,
            last_cut_capped: false,
            sources,
            plan,
            cfg,
            store,
            state,
            runner: PoolRunner(pool),
            source_names,
            positions,
            zero_ms,
            next_ms,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("weir-scheduler".into())
            .spawn(move || engine.run())
            .map_err(SchedulerError::Thread)?;
        Ok(Scheduler {
            shared,
            thread: Mutex::new(Some(thread)),
            clock,
            interval_ms: interval,
        })
    }

    /// Asks the scheduler to stop and waits for it. `graceful`: keep
    /// cutting batches at the clock's ticks until every source is drained
    /// (at most `graceful_stop_timeout`); otherwise stop after the batch in
    /// flight. Returns the error the scheduler stopped with, if any.
    pub fn stop(&self, graceful: bool) -> Result<(), Error> {
        {
            let mut p = self.shared.lock();
            if p.stop.is_none() {
                p.stop = Some(graceful);
            }
            self.shared.cv.notify_all();
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = handle {
            let _ = t.join();
        }
        self.take_error()
    }

    /// Stops processing with `error` (from outside the scheduler thread,
    /// e.g. a failed receiver) without waiting: the batch in flight
    /// finishes, no new one starts, and `stop`/`await_termination` return
    /// this error. The first error wins.
    pub fn fail(&self, error: Error) {
        let mut p = self.shared.lock();
        if p.error_msg.is_none() {
            p.error_msg = Some(error.to_string());
            p.error = Some(error);
        }
        p.stop = Some(false);
        self.shared.cv.notify_all();
    }

    /// Whether the scheduler thread has finished (stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.shared.lock().finished
    }

    fn take_error(&self) -> Result<(), Error> {
        let mut p = self.shared.lock();
        match p.error.take() {
            Some(e) => Err(e),
            None => match &p.error_msg {
                Some(m) => Err(SchedulerError::Failed(m.clone()).into()),
                None => Ok(()),
            },
        }
    }

    /// Waits until the scheduler has finished (stopped or failed), or for
    /// `timeout`. Returns whether it finished.
    pub fn await_termination(&self, timeout: Option<Duration>) -> Result<bool, Error> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.shared.lock();
        while !p.finished {
            match deadline {
                None => p = self.shared.cv.wait(p).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(false);
                    }
                    p = self
                        .shared
                        .cv
                        .wait_timeout(p, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        drop(p);
        self.take_error().map(|_| true)
    }

    /// Waits (at most `timeout`) until the batch at `time_ms` has completed;
    /// returns its statistics.
    pub fn await_batch(&self, time_ms: u64, timeout: Duration) -> Result<BatchStats, Error> {
        let start = Instant::now();
        let mut p = self.shared.lock();
        loop {
            if p.last_completed.is_some_and(|t| t >= time_ms) {
                return p
                    .stats
                    .iter()
                    .rev()
                    .find(|s| s.batch_time_ms == time_ms)
                    .cloned()
                    .ok_or_else(|| SchedulerError::StoppedBefore { time_ms }.into());
            }
            if let Some(m) = &p.error_msg {
                return Err(SchedulerError::Failed(m.clone()).into());
            }
            if p.finished {
                return Err(SchedulerError::StoppedBefore { time_ms }.into());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(SchedulerError::Timeout { time_ms, waited }.into());
            }
            p = self
                .shared
                .cv
                .wait_timeout(p, timeout - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Statistics of the most recent batches, oldest first.
    pub fn statistics(&self) -> Vec<BatchStats> {
        self.shared.lock().stats.iter().cloned().collect()
    }

    /// The batch in flight and the batch times due behind it.
    pub fn queue(&self) -> BatchQueue {
        let p = self.shared.lock();
        let active = p.active.clone();
        let now = self.clock.now_ms();
        let (queued_ms, queued_total) = stats::due(
            if p.finished { 0 } else { p.next_ms },
            self.interval_ms,
            now,
            active.as_ref().map(|a| a.time_ms),
        );
        BatchQueue {
            active,
            queued_ms,
            queued_total,
        }
    }

    /// `(source, position)` after the last batch committed by this
    /// process (empty before the first commit).
    pub fn committed_positions(&self) -> Vec<(String, u64)> {
        self.shared.lock().committed.clone()
    }

    /// `(source, records)` each source holds past its last batch, once the
    /// engine has ended (None while it runs): what waits for the next start.
    pub fn waiting_records(&self) -> Option<Vec<(String, u64)>> {
        self.shared.lock().waiting.clone()
    }

    /// `(operator, keys)` of the committed state, after the last commit
    /// (or the load at start).
    pub fn state_keys(&self) -> Vec<(String, u64)> {
        self.shared.lock().state_keys.clone()
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let running = self.thread.lock().map(|t| t.is_some()).unwrap_or(false);
        if running {
            let _ = self.stop(false);
        }
    }
}

fn plan_partitions(plan: &Plan) -> usize {
    plan.description().partitions
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

impl Engine {
    fn run(mut self) {
        let result = self.run_inner();
        let waiting: Vec<(String, u64)> = self
            .source_names
            .iter()
            .zip(self.sources.iter().zip(&self.positions))
            .map(|(n, (s, &p))| (n.clone(), s.available_end().saturating_sub(p)))
            .collect();
        let mut p = self.shared.lock();
        p.waiting = Some(waiting);
        if let Err(e) = result {
            tracing::error!(error = %e, "streaming stopped");
            // The first error wins (a receiver's `fail` may have come first).
            if p.error_msg.is_none() {
                p.error_msg = Some(e.to_string());
                p.error = Some(e);
            }
        }
        p.finished = true;
        p.active = None;
        self.shared.cv.notify_all();
    }

    fn stop_requested(&self) -> Option<bool> {
        self.shared.lock().stop
    }

    fn run_inner(&mut self) -> Result<(), Error> {
        let pending = self.store.pending().map_err(SchedulerError::from)?;
        // Before any replay: a pending batch holding records of a source
        // this pipeline no longer has would commit without them.
        for spec in &pending {
            self.check_pending_sources(spec)?;
        }
        for spec in pending {
            tracing::info!(time_ms = spec.time_ms, "replaying pending batch");
            self.execute(&spec, true)?;
        }
        let mut drain_deadline: Option<Instant> = None;
        loop {
            match self.stop_requested() {
                Some(false) => return Ok(()),
                Some(true) => {
                    let deadline = *drain_deadline
                        .get_or_insert_with(|| Instant::now() + self.cfg.graceful_stop_timeout);
                    let drained = self
                        .sources
                        .iter()
                        .zip(&self.positions)
                        .all(|(s, &p)| s.available_end() <= p);
                    if drained || Instant::now() >= deadline {
                        return Ok(());
                    }
                }
                None => {}
            }
            let now = self.cfg.clock.wait_until(self.next_ms, STOP_POLL);
            if now < self.next_ms {
                continue;
            }
            self.check_sources(self.next_ms)?;
            let spec = self.cut(self.next_ms);
            self.store.allocate(&spec).map_err(SchedulerError::from)?;
            crate::failpoint::hit("after_allocate").map_err(SchedulerError::from)?;
            self.execute(&spec, false)?;
            self.next_ms += self.plan.interval_ms();
            self.shared.lock().next_ms = self.next_ms;
        }
    }

    /// Fails if pending batch `spec` holds records of a source this
    /// pipeline does not read (removed or renamed since it was allocated).
    fn check_pending_sources(&self, spec: &BatchSpec) -> Result<(), SchedulerError> {
        let missing = spec
            .ranges
            .iter()
            .find(|r| r.end > r.start && !self.source_names.contains(&r.source));
        match missing {
            None => Ok(()),
            Some(r) => Err(SchedulerError::PendingSourceGone {
                time_ms: spec.time_ms,
                source_name: r.source.clone(),
                start: r.start,
                end: r.end,
            }),
        }
    }

    /// Every source can go on (`Source::check`), or the first that cannot.
    fn check_sources(&self, time_ms: u64) -> Result<(), SchedulerError> {
        for (i, s) in self.sources.iter().enumerate() {
            s.check().map_err(|cause| SchedulerError::SourceRefused {
                time_ms,
                source_name: self.source_names[i].clone(),
                cause,
            })?;
        }
        Ok(())
    }

    fn cut(&mut self, time_ms: u64) -> BatchSpec {
        let mut ranges = Vec::with_capacity(self.sources.len());
        // The sizer's cap is for the whole batch: shared by the sources.
        let per_source = match &self.sizer {
            Some(z) => {
                (z.cap() / self.sources.len().max(1) as u64).clamp(1, self.cfg.batch_records_max)
            }
            None => self.cfg.batch_records_max,
        };
        self.last_cut_capped = false;
        for (i, s) in self.sources.iter().enumerate() {
            let start = self.positions[i];
            let max_end = start.saturating_add(per_source);
            let end = s.next_cut(start, max_end);
            if end == max_end && s.available_end() > end {
                self.last_cut_capped = true;
            }
            self.positions[i] = end;
            ranges.push(StreamRange {
                source: self.source_names[i].clone(),
                start,
                end,
            });
        }
        BatchSpec {
            time_ms,
            zero_ms: self.zero_ms,
            ranges,
        }
    }

    /// Runs a batch until it commits, at most `batch_attempts_max` times
    /// with doubling backoff. A simulated crash is never retried.
    fn execute(&mut self, spec: &BatchSpec, replayed: bool) -> Result<(), Error> {
        let attempts_max = self.cfg.batch_attempts_max.max(1);
        let mut backoff = self.cfg.retry_backoff;
        let mut attempt = 1;
        loop {
            self.shared.lock().active = Some(ActiveBatch {
                time_ms: spec.time_ms,
                ranges: spec.ranges.clone(),
                started_ms: self.cfg.clock.now_ms(),
                attempt,
                replayed,
            });
            match self.execute_once(spec, replayed, replayed || attempt > 1) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(point) = crate::failpoint::fired() {
                        return Err(
                            SchedulerError::Crashed(crate::failpoint::Crash { point }).into()
                        );
                    }
                    // A bad record fails the same way every time, and a
                    // source that lost its lease stays lost: no retry.
                    let deterministic = matches!(
                        &e,
                        Error::Engine(EngineError::BadRecord { .. } | EngineError::BadRecordsFull { .. })
                            | Error::Scheduler(SchedulerError::SourceLost { .. })
                    );
                    if attempt >= attempts_max || deterministic {
                        return Err(SchedulerError::BatchFailed {
                            time_ms: spec.time_ms,
                            attempts: attempt,
                            cause: Box::new(e),
                        }
                        .into());
                    }
                    tracing::warn!(
                        batch_time_ms = spec.time_ms,
                        attempt,
                        attempts_max,
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "batch failed; nothing was committed, retrying with the same input"
                    );
                    if self.stop_requested() == Some(false) {
                        return Err(e);
                    }
                    std::thread::sleep(backoff);
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }

    /// Writes (durably) the records batch `time_ms` dead-lettered, before
    /// its commit, and logs one line for the batch.
    fn store_dead_letters(&self, time_ms: u64, bad: &[BadRecord]) -> Result<(), Error> {
        let Some(first) = bad.first() else {
            return Ok(());
        };
        let fail = |reason: String| SchedulerError::DeadLetters {
            time_ms,
            records: bad.len(),
            step: first.step.clone(),
            reason,
        };
        let Some(sink) = &self.cfg.dead_letters else {
            return Err(fail("this context has no data directory for a dead-letter log; build it with a data directory (StreamingContext::get_or_create) or use OnError::Fail".into()).into());
        };
        sink.write(time_ms, bad).map_err(|e| fail(e.to_string()))?;
        tracing::warn!(
            batch_time_ms = time_ms,
            records = bad.len(),
            step = %first.step,
            stream = first.stream.as_deref().unwrap_or("?"),
            lsn = first.lsn.map_or(-1, |l| l as i64),
            first_error = %first.error,
            "records dead-lettered; `weir dead-letter list` shows them"
        );
        Ok(())
    }

    /// `(output index, time)` as [`OutputTime`]s named from the plan.
    fn output_times(&self, times: &[(usize, Duration)]) -> Vec<OutputTime> {
        let outs = &self.plan.description().outputs;
        times
            .iter()
            .map(|&(i, d)| OutputTime {
                output: outs.get(i).map_or_else(
                    || format!("output {}", i + 1),
                    |o| format!("{}: {} of {}", i + 1, o.kind, o.input),
                ),
                time_us: u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// `replay`: the batch may have run before (a replay, or a retry).
    fn execute_once(&mut self, spec: &BatchSpec, replayed: bool, replay: bool) -> Result<(), Error> {
        let started = Instant::now();
        let scheduling_delay_ms = self.cfg.clock.now_ms().saturating_sub(spec.time_ms);
        let ranges: Vec<Range<u64>> = self
            .source_names
            .iter()
            .map(|n| {
                spec.ranges
                    .iter()
                    .find(|r| &r.source == n)
                    .map_or(0..0, |r| r.start..r.end)
            })
            .collect();
        let input_records = ranges.iter().map(|r| r.end - r.start).sum();
        let mut output_times = Vec::new();
        let deltas = {
            let ctx = BatchCtx::new(
                &self.plan,
                spec.time_ms,
                spec.zero_ms,
                ranges.clone(),
                &self.runner,
                &self.state,
            )
            .with_skipped(self.skipped.clone())
            .with_replay(replay);
            match catch_unwind(AssertUnwindSafe(|| {
                self.plan.run_batch(&ctx, &mut output_times)
            })) {
                Err(p) => {
                    return Err(SchedulerError::Panicked {
                        time_ms: spec.time_ms,
                        message: panic_message(&*p),
                    }
                    .into())
                }
                Ok(r) => r?,
            }
            (ctx.take_deltas(), ctx.take_bad_records())
        };
        let (deltas, bad) = deltas;
        self.store_dead_letters(spec.time_ms, &bad)?;
        // Asked again before the commit: a lease lost while the batch ran
        // leaves it uncommitted.
        self.check_sources(spec.time_ms).map_err(|e| match e {
            SchedulerError::SourceRefused {
                time_ms,
                source_name,
                cause,
            } => SchedulerError::SourceLost {
                time_ms,
                source_name,
                cause,
            },
            other => other,
        })?;
        crate::failpoint::hit("before_commit").map_err(SchedulerError::from)?;
        self.store
            .commit(spec.time_ms, &deltas)
            .map_err(SchedulerError::from)?;
        if let (false, Some(d)) = (bad.is_empty(), &self.cfg.dead_letters) {
            d.committed(spec.time_ms, &bad);
        }
        for d in &deltas {
            d.apply(&mut self.state)?;
        }
        crate::failpoint::hit("after_commit").map_err(SchedulerError::from)?;
        for (s, r) in self.sources.iter().zip(&ranges) {
            s.release(r.end);
        }
        let elapsed = started.elapsed();
        let processing_time_ms = elapsed.as_millis() as u64;
        if let Some(z) = &mut self.sizer {
            // A replay's range was cut before this start; it teaches the
            // sizer only if it was at least as large as the current cap.
            let capped = if replayed {
                input_records >= z.cap()
            } else {
                self.last_cut_capped
            };
            let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            if z.observe(input_records, elapsed_us, capped) {
                tracing::warn!(
                    batch_ms = spec.time_ms,
                    records = input_records,
                    processing_ms = processing_time_ms,
                    interval_ms = self.plan.interval_ms(),
                    "a batch of few records still took longer than the batch interval: the time goes to per-batch work (for example update_state_by_key visiting every key), not to records; batches are no longer made smaller. Raise the batch interval or reduce the per-batch work"
                );
            }
        }
        let stats = BatchStats {
            batch_time_ms: spec.time_ms,
            input_records,
            scheduling_delay_ms,
            processing_time_ms,
            total_delay_ms: scheduling_delay_ms + processing_time_ms,
            replayed,
            ranges: spec.ranges.clone(),
            outputs: self.output_times(&output_times),
        };
        let mut p = self.shared.lock();
        p.active = None;
        p.stats.push_back(stats);
        while p.stats.len() > self.cfg.stats_batches_max.max(1) {
            p.stats.pop_front();
        }
        p.last_completed = Some(spec.time_ms);
        p.committed = self
            .source_names
            .iter()
            .cloned()
            .zip(ranges.iter().map(|r| r.end))
            .collect();
        p.state_keys = self.state.key_counts();
        self.shared.cv.notify_all();
        Ok(())
    }
}
