//! Per-batch evaluation: the batch context, partition drivers and the
//! `Runner` seam through which the scheduler supplies parallelism.
//!
//! Narrow transformations never materialize: a stream hands out a
//! `PartFn` that pushes one partition's records through the whole fused
//! chain into a sink closure. Sources do not materialize either: a source
//! partition reads its sub-range record by record while it runs, and
//! records a failed read in the context ([`BatchCtx::check_reads`]). Only
//! shuffles, windows and stateful operators materialize (and are memoized
//! for the batch).
//!
//! Limits: one memo entry per node per batch; at most one batch's
//! materialized partitions are alive at a time (the scheduler runs one
//! batch). Must never: spawn threads (parallelism comes through
//! [`Runner`]) or mutate committed state (changes go to state deltas).

use std::any::Any;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::graph::{NodeId, Plan};
use super::state::{StateDelta, StateStore};
use super::{BoxError, EngineError};

/// Materialized partitions of one stream in one batch.
pub type Parts<T> = Arc<Vec<Vec<T>>>;

/// Runs independent per-partition tasks, possibly in parallel. The scheduler
/// implements it over its bounded worker pool; [`SequentialRunner`] runs
/// them one after another.
pub trait Runner: Sync {
    /// Calls `f(i)` once for every `i` in `0..n`, in any order, and returns
    /// when all calls have returned. A panic in `f` propagates to the caller.
    fn for_each_index(&self, n: usize, f: &(dyn Fn(usize) + Sync));
}

#[cfg(any(test, feature = "testing"))]
/// Runs tasks one by one on the calling thread.
#[derive(Debug, Default, Clone, Copy)]
pub struct SequentialRunner;

#[cfg(any(test, feature = "testing"))]
impl Runner for SequentialRunner {
    fn for_each_index(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(f)
    }
}

/// Pushes one partition's records to a sink.
///
/// A source part reads its records while it runs; if the read fails it
/// stops and records the failure in the batch context, so every consumer
/// checks [`BatchCtx::check_reads`] before it uses what it got.
pub(crate) trait PartFn<T>: Send + Sync {
    fn parts(&self) -> usize;
    fn run(&self, p: usize, sink: &mut dyn FnMut(T));
    /// Like `run`, but may stop early once `more()` is false (checked
    /// between input records, so a few extra records can still arrive).
    /// For consumers that need only a prefix, such as `print`.
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(T)) {
        let _ = more;
        self.run(p, sink)
    }
    /// Like `run`, lending each record: for consumers that only read
    /// records, so that a part holding them (materialized partitions, a
    /// queue) copies nothing. Default: `run`, lending what it hands over.
    fn run_ref(&self, p: usize, sink: &mut dyn FnMut(&T)) {
        self.run(p, &mut |x| sink(&x))
    }
}

/// A stream's way of producing a batch.
pub(crate) trait Stream<T>: Send + Sync {
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<T>>, EngineError>;
}

/// Drives already-materialized partitions (clones each record out).
pub(crate) struct MatParts<T>(pub Parts<T>);

impl<T: Clone + Send + Sync> PartFn<T> for MatParts<T> {
    fn parts(&self) -> usize {
        self.0.len()
    }
    fn run(&self, p: usize, sink: &mut dyn FnMut(T)) {
        for x in &self.0[p] {
            sink(x.clone())
        }
    }
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(T)) {
        for x in &self.0[p] {
            if !more() {
                return;
            }
            sink(x.clone())
        }
    }
    fn run_ref(&self, p: usize, sink: &mut dyn FnMut(&T)) {
        self.0[p].iter().for_each(sink)
    }
}

/// The first failure of a batch: a source read (source name, the range
/// that was read, and the reason as text: every check hands out its own
/// error, and a boxed reason is not `Clone`), or a step's bad record.
/// Sticky: once set, every later check fails too, so no consumer acts on a
/// partial batch.
#[derive(Default)]
pub(crate) struct ReadFailure(Mutex<Option<Failure>>);

enum Failure {
    Read(String, Range<u64>, String),
    Record {
        step: String,
        stream: Option<String>,
        lsn: Option<u64>,
        record: String,
        error: String,
    },
    Full(String, usize),
}

impl ReadFailure {
    pub(crate) fn is_set(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Keeps the first failure; of bad records, the one at the lowest
    /// position (partitions run in parallel: the name must not depend on
    /// which finished first).
    fn keep(&self, f: Failure) {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let earlier = match (&*slot, &f) {
            (None, _) => true,
            (
                Some(Failure::Record {
                    stream: s0,
                    lsn: Some(l0),
                    ..
                }),
                Failure::Record {
                    stream: s1,
                    lsn: Some(l1),
                    ..
                },
            ) => (s1, l1) < (s0, l0),
            _ => false,
        };
        if earlier {
            *slot = Some(f);
        }
    }

    /// Keeps the first failure (later ones are usually its echoes).
    pub(crate) fn set(&self, source_name: &str, range: Range<u64>, reason: &BoxError) {
        self.keep(Failure::Read(
            source_name.to_string(),
            range,
            reason.to_string(),
        ));
    }

    /// Keeps a step's failure ([`EngineError::BadRecord`] or
    /// [`EngineError::BadRecordsFull`]; other errors as a read failure of
    /// no source).
    pub(crate) fn set_error(&self, e: EngineError) {
        self.keep(match e {
            EngineError::BadRecord {
                step,
                stream,
                lsn,
                record,
                error,
            } => Failure::Record {
                step,
                stream,
                lsn,
                record,
                error,
            },
            EngineError::BadRecordsFull { step, bytes_max } => Failure::Full(step, bytes_max),
            other => Failure::Read(String::new(), 0..0, other.to_string()),
        })
    }

    fn check(&self) -> Result<(), EngineError> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(Failure::Read(source_name, range, reason)) => Err(EngineError::Source {
                source_name: source_name.clone(),
                start: range.start,
                end: range.end,
                reason: reason.clone().into(),
            }),
            Some(Failure::Record {
                step,
                stream,
                lsn,
                record,
                error,
            }) => Err(EngineError::BadRecord {
                step: step.clone(),
                stream: stream.clone(),
                lsn: *lsn,
                record: record.clone(),
                error: error.clone(),
            }),
            Some(Failure::Full(step, bytes_max)) => Err(EngineError::BadRecordsFull {
                step: step.clone(),
                bytes_max: *bytes_max,
            }),
        }
    }
}

/// Everything one batch evaluation sees. Built by the scheduler per batch.
pub struct BatchCtx<'a> {
    pub(crate) time_ms: u64,
    pub(crate) zero_ms: u64,
    pub(crate) plan: &'a Plan,
    pub(crate) ranges: Vec<Range<u64>>,
    pub(crate) runner: &'a dyn Runner,
    pub(crate) state: &'a StateStore,
    memo: Mutex<HashMap<NodeId, Arc<dyn Any + Send + Sync>>>,
    deltas: Mutex<Vec<Box<dyn StateDelta>>>,
    pub(crate) read_failure: Arc<ReadFailure>,
    pub(crate) bad_records: Arc<super::bad::BadRecords>,
    /// Per source (plan order): record ranges never fed to the pipeline
    /// (`weir wal skip`).
    pub(crate) skipped: Arc<Vec<Vec<Range<u64>>>>,
    /// Whether this batch may have run before (a pending batch replayed at
    /// start, or a retry): external sinks check their dedup window.
    pub(crate) replay: bool,
}

impl<'a> BatchCtx<'a> {
    /// A context for the batch at `time_ms`. `ranges[i]` is the record range
    /// of source `i` (in [`Plan::source_names`] order); `state` is the last
    /// committed operator state, which evaluation never modifies.
    pub fn new(
        plan: &'a Plan,
        time_ms: u64,
        zero_ms: u64,
        ranges: Vec<Range<u64>>,
        runner: &'a dyn Runner,
        state: &'a StateStore,
    ) -> Self {
        BatchCtx {
            time_ms,
            zero_ms,
            plan,
            ranges,
            runner,
            state,
            memo: Mutex::new(HashMap::new()),
            deltas: Mutex::new(Vec::new()),
            read_failure: Arc::default(),
            bad_records: Arc::default(),
            skipped: Arc::default(),
            replay: false,
        }
    }

    /// Fails if any source read of this batch failed so far. Every consumer
    /// of a [`PartFn`] calls it after running partitions and before using
    /// (or acting on) what they produced.
    pub(crate) fn check_reads(&self) -> Result<(), EngineError> {
        self.read_failure.check()
    }

    /// Record ranges of each source (plan order) that are never fed to
    /// the pipeline: skipped deliberately with `weir wal skip`.
    pub fn with_skipped(mut self, skipped: Arc<Vec<Vec<Range<u64>>>>) -> Self {
        self.skipped = skipped;
        self
    }

    /// Marks the batch as one that may have run before (a replay at start
    /// or a retry).
    pub fn with_replay(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }

    /// Whether the batch may have run before ([`BatchCtx::with_replay`]).
    pub fn is_replay(&self) -> bool {
        self.replay
    }

    /// The records this batch dead-lettered (taken once, before the
    /// commit), in (step, stream, position) order.
    pub fn take_bad_records(&self) -> Vec<super::BadRecord> {
        self.bad_records.take()
    }

    /// The batch time in milliseconds.
    #[cfg(any(test, feature = "testing"))]
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// Whether a stream sliding every `slide_ms` produces a batch now.
    pub(crate) fn valid(&self, slide_ms: u64) -> bool {
        self.time_ms >= self.zero_ms && (self.time_ms - self.zero_ms).is_multiple_of(slide_ms)
    }

    pub(crate) fn partitions(&self) -> usize {
        self.plan.partitions
    }

    pub(crate) fn name(&self, id: NodeId) -> &str {
        &self.plan.names[id]
    }

    /// State changes produced so far by this batch (taken once, at commit).
    pub fn take_deltas(&self) -> Vec<Box<dyn StateDelta>> {
        std::mem::take(&mut *self.deltas.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn push_delta(&self, d: Box<dyn StateDelta>) {
        self.deltas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d)
    }

    /// Computes `f` once per batch for node `id`, returning the cached value
    /// afterwards.
    pub(crate) fn memo<V: Send + Sync + 'static>(
        &self,
        id: NodeId,
        f: impl FnOnce() -> Result<V, EngineError>,
    ) -> Result<Arc<V>, EngineError> {
        if let Some(v) = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            if let Ok(v) = v.clone().downcast::<V>() {
                return Ok(v);
            }
        }
        let v = Arc::new(f()?);
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, v.clone());
        Ok(v)
    }

    /// Runs `f` for each index in `0..n` on the runner; results in order.
    pub(crate) fn par_map<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
        self.runner.for_each_index(n, &|i| {
            let r = f(i);
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        });
        slots
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("runner called every index")
            })
            .collect()
    }

    /// Materializes all partitions of a driver.
    pub(crate) fn collect<T: Send>(&self, d: &dyn PartFn<T>) -> Result<Vec<Vec<T>>, EngineError> {
        let parts = self.par_map(d.parts(), |p| {
            let mut v = Vec::new();
            d.run(p, &mut |x| v.push(x));
            v
        });
        self.check_reads()?;
        Ok(parts)
    }
}
