//! Bad records: steps that can fail on one record ([`DStream::try_map`],
//! [`DStream::try_flat_map_with`]), their policy ([`OnError`]), the
//! position of the record being processed, and the per-batch collection of
//! dead-lettered records that the scheduler hands to a [`DeadLetterSink`]
//! before it commits.
//!
//! Positions: a source partition sets the thread's current position
//! (source index, record number) before it pushes each record into the
//! fused chain, and clears it when it is done; a step after a shuffle sees
//! no position (its error names none, and says so).
//!
//! Limits: a batch collects at most [`BATCH_BAD_BYTES_MAX`] bytes of
//! dead-lettered records (record text and error); past it the batch fails
//! naming the step, never drops silently. Error and record texts are cut
//! to [`RECORD_TEXT_BYTES_MAX`] in error messages (not in dead letters).
//! Must never: do I/O (the sink writes), or decide anything on its own
//! beyond the step's policy.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::eval::{BatchCtx, PartFn, Stream};
use super::graph::NodeId;
use super::{meta, BoxError, DStream, Data, EngineError, Text};

/// Most bytes of dead-lettered records one batch may collect (64 MiB).
pub const BATCH_BAD_BYTES_MAX: usize = 64 << 20;
/// Longest record text an error message quotes, in bytes.
pub const RECORD_TEXT_BYTES_MAX: usize = 200;

/// What a step does with a record it cannot process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OnError {
    /// Fail the batch (nothing is committed; it fails the same way on
    /// every retry and restart until the record is dead-lettered or
    /// skipped with `weir wal skip`). The default.
    #[default]
    Fail,
    /// Write the record, its position and the error to the dead-letter
    /// log (`DATA_DIR/dead-letter/`) before the batch commits, and go on.
    DeadLetter,
}

/// A record a step could not process, as the dead-letter log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    /// The step (operator name) that failed on it.
    pub step: String,
    /// The input stream it came from; `None` after a shuffle.
    pub stream: Option<String>,
    /// Its record number in that stream (the WAL's LSN).
    pub lsn: Option<u64>,
    /// The step's input as text ([`RecordText`]).
    pub record: String,
    /// What went wrong.
    pub error: String,
}

/// Where a batch's dead-lettered records go before it commits. The
/// scheduler calls `write` after the batch ran and before its commit (an
/// error fails the batch), then `committed` once the commit is durable.
pub trait DeadLetterSink: Send + Sync + std::fmt::Debug {
    /// Stores `records` of batch `batch_time_ms` durably; the same batch
    /// written again (a replay) replaces what it wrote before.
    fn write(&self, batch_time_ms: u64, records: &[BadRecord]) -> Result<(), BoxError>;
    /// The batch committed: count its records.
    fn committed(&self, batch_time_ms: u64, records: &[BadRecord]);
}

/// A record's text in error messages and dead letters: what replaying it
/// should feed back. Text lines as they are, JSON compact, a keyed
/// record as its value (the record it was keyed from).
pub trait RecordText {
    /// The record as text.
    fn record_text(&self) -> String;
}

impl RecordText for Text {
    fn record_text(&self) -> String {
        self.as_str().to_string()
    }
}
impl RecordText for String {
    fn record_text(&self) -> String {
        self.clone()
    }
}
impl RecordText for serde_json::Value {
    fn record_text(&self) -> String {
        self.to_string()
    }
}
impl<K, V: RecordText> RecordText for (K, V) {
    fn record_text(&self) -> String {
        self.1.record_text()
    }
}

thread_local! {
    /// (source index, record number) of the record being pushed.
    static POSITION: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
}

/// Sets (or clears) the current thread's record position.
pub(crate) fn set_position(p: Option<(usize, u64)>) {
    POSITION.with(|c| c.set(p));
}

fn position() -> Option<(usize, u64)> {
    POSITION.with(Cell::get)
}

/// The dead-lettered records of one batch, keyed so a step that runs
/// twice in a batch (two consumers read the same source) records each
/// record once, in a deterministic order.
#[derive(Default)]
pub(crate) struct BadRecords {
    inner: Mutex<BadInner>,
}

#[derive(Default)]
struct BadInner {
    by_key: BTreeMap<(String, usize, u64, u64), BadRecord>,
    bytes: usize,
    /// Orders records without a position.
    unplaced: u64,
}

impl BadRecords {
    /// Adds `r`; an error when the batch holds too much already.
    fn add(&self, r: BadRecord, src: usize) -> Result<(), EngineError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = match r.lsn {
            Some(l) => (r.step.clone(), src, l, 0),
            None => {
                g.unplaced += 1;
                (r.step.clone(), usize::MAX, u64::MAX, g.unplaced)
            }
        };
        if g.by_key.contains_key(&key) {
            return Ok(());
        }
        let size = r.record.len() + r.error.len();
        if g.bytes + size > BATCH_BAD_BYTES_MAX {
            return Err(EngineError::BadRecordsFull {
                step: r.step,
                bytes_max: BATCH_BAD_BYTES_MAX,
            });
        }
        g.bytes += size;
        g.by_key.insert(key, r);
        Ok(())
    }

    /// Every record collected, in (step, stream, position) order.
    pub(crate) fn take(&self) -> Vec<BadRecord> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.bytes = 0;
        std::mem::take(&mut g.by_key).into_values().collect()
    }
}

/// Cuts `s` for an error message.
pub(crate) fn cut(s: &str) -> String {
    if s.len() <= RECORD_TEXT_BYTES_MAX {
        return s.to_string();
    }
    let mut end = RECORD_TEXT_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

type TryFn<T, U> = dyn Fn(&T, &mut dyn FnMut(U)) -> Result<(), BoxError> + Send + Sync;

struct TryNarrow<T, U> {
    id: NodeId,
    parent: Arc<dyn Stream<T>>,
    f: Arc<TryFn<T, U>>,
    on_error: OnError,
}

struct TryPart<T, U> {
    parent: Arc<dyn PartFn<T>>,
    f: Arc<TryFn<T, U>>,
    on_error: OnError,
    step: String,
    sources: Arc<Vec<String>>,
    failure: Arc<super::eval::ReadFailure>,
    bad: Arc<BadRecords>,
}

impl<T: Data + RecordText, U: Data> Stream<U> for TryNarrow<T, U> {
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<U>>, EngineError> {
        Ok(Arc::new(TryPart {
            parent: self.parent.prepare(ctx)?,
            f: self.f.clone(),
            on_error: self.on_error,
            step: ctx.name(self.id).to_string(),
            sources: Arc::new(ctx.plan.source_names()),
            failure: ctx.read_failure.clone(),
            bad: ctx.bad_records.clone(),
        }))
    }
}

impl<T: Data + RecordText, U: Data> TryPart<T, U> {
    fn one(&self, x: T, sink: &mut dyn FnMut(U)) {
        let Err(e) = (self.f)(&x, sink) else {
            return;
        };
        let pos = position();
        let r = BadRecord {
            step: self.step.clone(),
            stream: pos.and_then(|(s, _)| self.sources.get(s).cloned()),
            lsn: pos.map(|(_, l)| l),
            record: x.record_text(),
            error: e.to_string(),
        };
        let failed = match self.on_error {
            OnError::Fail => Err(EngineError::BadRecord {
                step: r.step,
                stream: r.stream,
                lsn: r.lsn,
                record: cut(&r.record),
                error: r.error,
            }),
            OnError::DeadLetter => self.bad.add(r, pos.map_or(usize::MAX, |p| p.0)),
        };
        if let Err(e) = failed {
            self.failure.set_error(e);
        }
    }
}

impl<T: Data + RecordText, U: Data> PartFn<U> for TryPart<T, U> {
    fn parts(&self) -> usize {
        self.parent.parts()
    }
    fn run(&self, p: usize, sink: &mut dyn FnMut(U)) {
        self.parent.run(p, &mut |x| self.one(x, sink))
    }
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(U)) {
        self.parent.run_while(p, more, &mut |x| self.one(x, sink))
    }
}

impl<T: Data + RecordText> DStream<T> {
    /// Like [`DStream::map`] for a function that can fail on a record.
    /// `on_error` says what a failure does: [`OnError::Fail`] fails the
    /// batch with an error naming this step, the record's stream and
    /// record number and the error; [`OnError::DeadLetter`] writes the
    /// record to the dead-letter log (a context with a data directory)
    /// and goes on. Spark users would write `flatMap(x => Try(f(x)))`
    /// and lose the failures; here they are counted and kept.
    pub fn try_map<U: Data, E: std::fmt::Display>(
        &self,
        on_error: OnError,
        f: impl Fn(&T) -> Result<U, E> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.try_flat_map_with(on_error, move |x, out| -> Result<(), E> {
            out(f(x)?);
            Ok(())
        })
    }

    /// Like [`DStream::flat_map_with`] for a function that can fail on a
    /// record; `on_error` as for [`DStream::try_map`]. Records emitted
    /// before the error are kept.
    pub fn try_flat_map_with<U: Data, E: std::fmt::Display>(
        &self,
        on_error: OnError,
        f: impl Fn(&T, &mut dyn FnMut(U)) -> Result<(), E> + Send + Sync + 'static,
    ) -> DStream<U> {
        let parent = self.s.clone();
        let f: Arc<TryFn<T, U>> = Arc::new(move |x: &T, out: &mut dyn FnMut(U)| {
            f(x, out).map_err(|e| e.to_string().into())
        });
        let params = match on_error {
            OnError::Fail => vec![],
            OnError::DeadLetter => vec![("on_error", "dead_letter".to_string())],
        };
        self.new_node(
            meta("try_map", vec![self.id], self.slide_ms(), params),
            move |id| {
                Arc::new(TryNarrow {
                    id,
                    parent,
                    f,
                    on_error,
                })
            },
        )
    }
}

/// "record 7 of stream `in`", or what is known of it.
pub(crate) fn describe_position(stream: Option<&str>, lsn: Option<u64>) -> String {
    match (stream, lsn) {
        (Some(s), Some(l)) => format!("record {l} of stream `{s}`"),
        _ => "a record (its position is unknown: the step runs after a shuffle)".to_string(),
    }
}
