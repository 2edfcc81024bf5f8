//! The DStream engine: typed, lazy streams of micro-batches.
//!
//! Owns: [`DStream<T>`] and its transformations (narrow, pair, window,
//! stateful), the operator graph with stable names (`graph`), per-batch
//! evaluation (`eval`), the source interface (`source`) and the
//! state-store interface (`state`).
//!
//! Execution model: narrow transformations (map, filter, flat_map, ...)
//! are fused per partition — records are pushed through the whole chain of
//! closures, no `Vec` in between. Sources, shuffles (keyed operators, with a
//! map-side combine per partition), windows and stateful operators
//! materialize their partitions once per batch.
//!
//! Limits: names at most `graph::NAME_BYTES_MAX` (200) bytes; the number
//! of shuffle partitions is fixed per pipeline (builder `partitions`).
//! Must never: do I/O, spawn threads, or know the scheduler, the WAL or the
//! checkpoint store. It is pure: parallelism comes in through
//! `eval::Runner`, committed state through `state::StateStore`, input
//! through [`source::Source`].

internal! {
    mod eval;
    mod graph;
    mod hash;
    mod source;
    mod state;
    mod text;
}
mod bad;
mod multi;
mod pair;
mod single;
mod stateful;
mod update;
mod window;

use std::marker::PhantomData;
use std::sync::Arc;

pub use bad::{BadRecord, DeadLetterSink, OnError, RecordText, BATCH_BAD_BYTES_MAX};
pub use graph::{OperatorDesc, OutputDesc, PipelineDescription};
pub use source::{BoxError, Queue, QueueFull, QueueMode, Source};
// The engine's machinery: crate-internal, reachable by the tests through
// the `testing` feature.
#[cfg(feature = "testing")]
pub use eval::{BatchCtx, Parts, Runner, SequentialRunner};
#[cfg(not(feature = "testing"))]
pub(crate) use eval::{BatchCtx, Runner};
#[cfg(feature = "testing")]
pub use graph::{Graph, Plan};
#[cfg(not(feature = "testing"))]
pub(crate) use graph::{Graph, Plan};
#[cfg(feature = "testing")]
pub use state::{StateChange, StateDecoder, StateDelta, StateStore};
#[cfg(not(feature = "testing"))]
pub(crate) use state::{StateChange, StateDelta, StateStore};
pub use stateful::{MapWithStateDStream, State, StateSpec};
pub use text::Text;
pub use update::UpdateSpec;

#[cfg(feature = "sql")]
pub(crate) use bad::cut as cut_text;
pub(crate) use eval::PartFn;
#[cfg(feature = "sql")]
pub(crate) use multi::try_transform_all;
pub(crate) use multi::{transform_all, union_all};

use eval::{MatParts, Stream};
use graph::{NodeId, NodeMeta, OutputEntry};

use crate::codec::CodecError;

/// What a record type must be: cloneable and shareable across workers.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// Errors of graph building and batch evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The graph is invalid (bad window, mismatched slides, bad name...).
    #[error("invalid pipeline: {}", problems.join("; "))]
    InvalidGraph {
        /// One message per problem, each naming its operator.
        problems: Vec<String>,
    },
    /// Two operators resolve to the same name.
    #[error("duplicate operator name `{name}` (used by a {} and a {}); give one of them another .name(...)", kinds.0, kinds.1)]
    DuplicateName {
        /// The name.
        name: String,
        /// Kinds of the two operators.
        kinds: (&'static str, &'static str),
    },
    /// `start()` without any output operation.
    #[error("no output operations registered: nothing to execute")]
    NoOutputs,
    /// Operators cannot be added once the context has started.
    #[error("cannot add output operations after the streaming context has started")]
    AlreadyStarted,
    /// The context was stopped; it cannot be used again.
    #[error("the streaming context has been stopped and cannot be restarted or changed")]
    Stopped,
    /// A source failed to read a batch's range.
    #[error("source `{source_name}` failed to read records {start}..{end}: {reason}")]
    Source {
        /// Stable name of the source.
        source_name: String,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// The source's error.
        reason: BoxError,
    },
    /// A step could not process a record and its policy is
    /// [`OnError::Fail`].
    #[error(
        "step `{step}` could not process {}: {error} (record: {record:?}). The batch is not committed and fails the same way on every retry and restart. To get past it: fix the step, or let it dead-letter such records (on_error = \"dead_letter\" in a pipeline file, OnError::DeadLetter in Rust), or skip the record deliberately with `weir wal skip --stream {} --from {} --to {} --reason \"...\"` while the service is stopped",
        bad::describe_position(stream.as_deref(), *lsn),
        stream.as_deref().unwrap_or("STREAM"),
        lsn.map_or("N".to_string(), |l| l.to_string()),
        lsn.map_or("N+1".to_string(), |l| (l + 1).to_string()),
    )]
    BadRecord {
        /// The step (operator name).
        step: String,
        /// The input stream the record came from (none after a shuffle).
        stream: Option<String>,
        /// Its record number in that stream.
        lsn: Option<u64>,
        /// The record's text, cut to 200 bytes.
        record: String,
        /// The step's error.
        error: String,
    },
    /// A batch dead-lettered more than it may hold in memory.
    #[error("step `{step}` dead-lettered more than {bytes_max} bytes of records in one batch; the batch is not committed. Most of the input is bad: fix the input or the step (on_error = \"fail\" stops at the first bad record and names it)")]
    BadRecordsFull {
        /// The step whose record passed the limit.
        step: String,
        /// The limit ([`BATCH_BAD_BYTES_MAX`]).
        bytes_max: usize,
    },
    /// An output operation failed.
    #[error("output operation {kind} on `{input}` failed: {reason}")]
    Output {
        /// Output kind.
        kind: &'static str,
        /// Name of the stream it outputs.
        input: String,
        /// The sink's error.
        reason: BoxError,
    },
    /// A whole-batch step (a SQL query) failed on this batch.
    #[error("step `{step}` failed: {reason}. The batch is not committed and is tried again at the next start")]
    Step {
        /// The operator name.
        step: String,
        /// What went wrong, in the step's words.
        reason: BoxError,
    },
    /// The initial state of an operator could not be loaded.
    #[error("operator `{op}` could not load its initial state: {reason}")]
    InitialState {
        /// Operator name.
        op: String,
        /// The loader's error.
        reason: BoxError,
    },
    /// Committed state of an operator has an unexpected type or layout.
    #[error(
        "state of operator `{op}` does not have the type or partitioning this pipeline expects"
    )]
    StateType {
        /// Operator name.
        op: String,
    },
    /// Committed state of an operator could not be decoded.
    #[error("cannot decode state of operator `{op}`: {source}")]
    StateDecode {
        /// Operator name.
        op: String,
        /// Codec error.
        source: CodecError,
    },
    /// State could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A queue refused a push (it is full).
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// A user function misused the state API (e.g. updated a timing-out state).
    #[error("operator `{op}`: {msg}")]
    StateMisuse {
        /// Operator name.
        op: String,
        /// What went wrong.
        msg: String,
    },
}

/// A typed, lazily evaluated stream of micro-batches.
pub struct DStream<T> {
    pub(crate) g: Arc<Graph>,
    pub(crate) id: NodeId,
    pub(crate) s: Arc<dyn Stream<T>>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            g: self.g.clone(),
            id: self.id,
            s: self.s.clone(),
        }
    }
}

impl<T> std::fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DStream").field("id", &self.id).finish()
    }
}

pub(crate) fn meta(
    kind: &'static str,
    inputs: Vec<NodeId>,
    slide_ms: u64,
    params: Vec<(&'static str, String)>,
) -> NodeMeta {
    NodeMeta {
        kind,
        name_inputs: inputs.clone(),
        inputs,
        owner: None,
        explicit: None,
        params,
        slide_ms,
        stateful: false,
    }
}

/// Where chunk `i` of `n` starts when `len` records are cut into `n`
/// contiguous chunks: `i * len / n`, Spark's `ParallelCollectionRDD.slice`
/// rule, so the chunks differ by at most one record and the larger ones
/// come last (5 records in 3: 1, 2, 2). Chunk `n` starts at `len`.
pub(crate) fn chunk_start(len: u64, n: u64, i: u64) -> u64 {
    (u128::from(i) * u128::from(len) / u128::from(n.max(1))) as u64
}

/// Splits `v` into `n` contiguous chunks of near-equal length, in order,
/// by [`chunk_start`].
pub(crate) fn split_even<T>(v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.max(1);
    let len = v.len() as u64;
    let mut out = Vec::with_capacity(n);
    let mut it = v.into_iter();
    for i in 0..n as u64 {
        let take = chunk_start(len, n as u64, i + 1) - chunk_start(len, n as u64, i);
        out.push(it.by_ref().take(take as usize).collect());
    }
    out
}

// ---------------------------------------------------------------- narrow

struct Narrow<T, U, F> {
    parent: Arc<dyn Stream<T>>,
    f: Arc<F>,
    _u: PhantomData<fn() -> U>,
}

struct NarrowPart<T, U, F> {
    parent: Arc<dyn PartFn<T>>,
    f: Arc<F>,
    _u: PhantomData<fn() -> U>,
}

impl<T, U, F> Stream<U> for Narrow<T, U, F>
where
    T: Data,
    U: Data,
    F: Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'static,
{
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<U>>, EngineError> {
        Ok(Arc::new(NarrowPart {
            parent: self.parent.prepare(ctx)?,
            f: self.f.clone(),
            _u: PhantomData,
        }))
    }
}

impl<T, U, F> PartFn<U> for NarrowPart<T, U, F>
where
    T: Data,
    U: Data,
    F: Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'static,
{
    fn parts(&self) -> usize {
        self.parent.parts()
    }
    #[inline]
    fn run(&self, p: usize, sink: &mut dyn FnMut(U)) {
        let f = &*self.f;
        self.parent.run(p, &mut |x| f(x, sink))
    }
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(U)) {
        let f = &*self.f;
        self.parent.run_while(p, more, &mut |x| f(x, sink))
    }
}

struct PerPartition<T, U, F> {
    parent: Arc<dyn Stream<T>>,
    f: Arc<F>,
    _u: PhantomData<fn() -> U>,
}

impl<T, U, F> Stream<U> for PerPartition<T, U, F>
where
    T: Data,
    U: Data,
    F: Fn(Vec<T>, &mut dyn FnMut(U)) + Send + Sync + 'static,
{
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<U>>, EngineError> {
        Ok(Arc::new(PerPartitionPart {
            parent: self.parent.prepare(ctx)?,
            f: self.f.clone(),
            _u: PhantomData,
        }))
    }
}

struct PerPartitionPart<T, U, F> {
    parent: Arc<dyn PartFn<T>>,
    f: Arc<F>,
    _u: PhantomData<fn() -> U>,
}

impl<T, U, F> PartFn<U> for PerPartitionPart<T, U, F>
where
    T: Data,
    U: Data,
    F: Fn(Vec<T>, &mut dyn FnMut(U)) + Send + Sync + 'static,
{
    fn parts(&self) -> usize {
        self.parent.parts()
    }
    fn run(&self, p: usize, sink: &mut dyn FnMut(U)) {
        let mut v = Vec::new();
        self.parent.run(p, &mut |x| v.push(x));
        (self.f)(v, sink)
    }
}

/// A stream computed once per batch by a function of the context.
pub(crate) struct Materialized<T, F> {
    pub id: NodeId,
    pub f: F,
    pub _t: PhantomData<fn() -> T>,
}

impl<T, F> Stream<T> for Materialized<T, F>
where
    T: Data,
    F: Fn(&BatchCtx) -> Result<Vec<Vec<T>>, EngineError> + Send + Sync + 'static,
{
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<T>>, EngineError> {
        let parts = ctx.memo(self.id, || Ok(Arc::new((self.f)(ctx)?)))?;
        Ok(Arc::new(MatParts((*parts).clone())))
    }
}

impl<T: Data> DStream<T> {
    /// Gives this operator a stable name (what checkpoints key its state
    /// by). Names must be unique in the pipeline.
    pub fn name(self, name: &str) -> Self {
        self.g.set_name(self.id, name);
        self
    }

    /// How often this stream produces a batch, in milliseconds.
    pub fn slide_ms(&self) -> u64 {
        self.g.slide_of(self.id)
    }

    pub(crate) fn new_node<U: Data>(
        &self,
        m: NodeMeta,
        make: impl FnOnce(NodeId) -> Arc<dyn Stream<U>>,
    ) -> DStream<U> {
        let id = self.g.add_node(m);
        DStream {
            g: self.g.clone(),
            id,
            s: make(id),
        }
    }

    /// A fused narrow step: `f` gets each record and an emitter.
    pub(crate) fn narrow<U: Data, F>(&self, kind: &'static str, f: F) -> DStream<U>
    where
        F: Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'static,
    {
        let parent = self.s.clone();
        self.new_node(
            meta(kind, vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                Arc::new(Narrow {
                    parent,
                    f: Arc::new(f),
                    _u: PhantomData,
                })
            },
        )
    }

    /// A stream computed once per batch by `f` (materialized).
    pub(crate) fn materialized<U: Data, F>(
        &self,
        m: NodeMeta,
        f: impl FnOnce(NodeId) -> F,
    ) -> DStream<U>
    where
        F: Fn(&BatchCtx) -> Result<Vec<Vec<U>>, EngineError> + Send + Sync + 'static,
    {
        self.new_node(m, move |id| {
            Arc::new(Materialized {
                id,
                f: f(id),
                _t: PhantomData,
            })
        })
    }

    /// Applies `f` to every record.
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> DStream<U> {
        self.narrow("map", move |x, out| out(f(x)))
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        self.narrow("filter", move |x, out| {
            if f(&x) {
                out(x)
            }
        })
    }

    /// Replaces every record by the records of the iterator `f` returns.
    pub fn flat_map<U: Data, I>(&self, f: impl Fn(T) -> I + Send + Sync + 'static) -> DStream<U>
    where
        I: IntoIterator<Item = U>,
    {
        self.narrow("flat_map", move |x, out| {
            for y in f(x) {
                out(y)
            }
        })
    }

    /// Like [`DStream::flat_map`], but `f` pushes its outputs into an
    /// emitter, so it can borrow from the input record while producing them
    /// (e.g. split a line into words without collecting an iterator).
    pub fn flat_map_with<U: Data>(
        &self,
        f: impl Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'static,
    ) -> DStream<U> {
        self.narrow("flat_map", f)
    }

    /// Applies `f` to each whole partition.
    pub fn map_partitions<U: Data, I>(
        &self,
        f: impl Fn(Vec<T>) -> I + Send + Sync + 'static,
    ) -> DStream<U>
    where
        I: IntoIterator<Item = U>,
    {
        let parent = self.s.clone();
        let f = move |v: Vec<T>, out: &mut dyn FnMut(U)| {
            for y in f(v) {
                out(y)
            }
        };
        self.new_node(
            meta("map_partitions", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                Arc::new(PerPartition {
                    parent,
                    f: Arc::new(f),
                    _u: PhantomData,
                })
            },
        )
    }

    /// Turns each partition into one record holding all its records.
    pub fn glom(&self) -> DStream<Vec<T>> {
        let parent = self.s.clone();
        self.new_node(
            meta("glom", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                Arc::new(PerPartition {
                    parent,
                    f: Arc::new(|v: Vec<T>, out: &mut dyn FnMut(Vec<T>)| out(v)),
                    _u: PhantomData,
                })
            },
        )
    }

    /// Redistributes the records into `partitions` partitions of
    /// near-equal size, keeping their order.
    pub fn repartition(&self, partitions: usize) -> DStream<T> {
        let parent = self.s.clone();
        let n = partitions.max(1);
        self.materialized(
            meta(
                "repartition",
                vec![self.id],
                self.slide_ms(),
                vec![("partitions", n.to_string())],
            ),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    let all: Vec<T> = ctx.collect(&*d)?.into_iter().flatten().collect();
                    Ok(split_even(all, n))
                }
            },
        )
    }

    /// The records of both streams (this one's first). Both must slide at
    /// the same interval.
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        let (a, b) = (self.s.clone(), other.s.clone());
        let d = self.new_node(
            meta("union", vec![self.id, other.id], self.slide_ms(), vec![]),
            move |_| Arc::new(multi::UnionStream { inputs: vec![a, b] }),
        );
        d.check_same_slide(other);
        d
    }

    pub(crate) fn check_same_slide<U>(&self, other: &DStream<U>) {
        let (a, b) = (self.slide_ms(), other.g.slide_of(other.id));
        if a != b {
            self.g.problem(
                self.id,
                format!("inputs slide at different intervals ({a} ms and {b} ms)"),
            );
        }
    }

    /// One record per batch: the number of records.
    pub fn count(&self) -> DStream<u64> {
        let parent = self.s.clone();
        self.materialized(
            meta("count", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    let counts = ctx.par_map(d.parts(), |p| {
                        let mut n = 0u64;
                        d.run(p, &mut |_| n += 1);
                        n
                    });
                    ctx.check_reads()?;
                    Ok(vec![vec![counts.iter().sum()]])
                }
            },
        )
    }

    /// One record per non-empty batch: all records combined with `f`
    /// (associative), in partition order.
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> DStream<T> {
        let parent = self.s.clone();
        self.materialized(
            meta("reduce", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    let partials = ctx.par_map(d.parts(), |p| {
                        let mut acc: Option<T> = None;
                        d.run(p, &mut |x| {
                            acc = Some(match acc.take() {
                                Some(a) => f(a, x),
                                None => x,
                            })
                        });
                        acc
                    });
                    ctx.check_reads()?;
                    let total = partials.into_iter().flatten().reduce(&f);
                    Ok(vec![total.into_iter().collect()])
                }
            },
        )
    }

    /// The whole batch, transformed by `f(batch_time_ms, records)`.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(u64, Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let parent = self.s.clone();
        self.materialized(
            meta("transform", vec![self.id], self.slide_ms(), vec![]),
            move |_| {
                move |ctx: &BatchCtx| {
                    let d = parent.prepare(ctx)?;
                    let all: Vec<T> = ctx.collect(&*d)?.into_iter().flatten().collect();
                    Ok(split_even(f(ctx.time_ms, all), ctx.partitions()))
                }
            },
        )
    }

    /// The batches of two streams, combined by `f(batch_time_ms, a, b)`.
    pub fn transform_with<U: Data, V: Data>(
        &self,
        other: &DStream<U>,
        f: impl Fn(u64, Vec<T>, Vec<U>) -> Vec<V> + Send + Sync + 'static,
    ) -> DStream<V> {
        let (a, b) = (self.s.clone(), other.s.clone());
        let d = self.materialized(
            meta(
                "transform_with",
                vec![self.id, other.id],
                self.slide_ms(),
                vec![],
            ),
            move |_| {
                move |ctx: &BatchCtx| {
                    let da = a.prepare(ctx)?;
                    let db = b.prepare(ctx)?;
                    let va: Vec<T> = ctx.collect(&*da)?.into_iter().flatten().collect();
                    let vb: Vec<U> = ctx.collect(&*db)?.into_iter().flatten().collect();
                    Ok(split_even(f(ctx.time_ms, va, vb), ctx.partitions()))
                }
            },
        );
        d.check_same_slide(other);
        d
    }

    /// Registers an output operation that needs only the first `limit`
    /// records: partitions run one after another on the calling thread and
    /// stop once `limit` records are in hand (Spark's `take`), so memory
    /// stays O(limit) whatever the batch size.
    pub(crate) fn add_output_take(
        &self,
        kind: &'static str,
        limit: usize,
        f: impl Fn(u64, Vec<T>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        let s = self.s.clone();
        let id = self.id;
        self.g.add_output(OutputEntry {
            node: id,
            kind,
            slide_ms: self.slide_ms(),
            run: Arc::new(move |ctx: &BatchCtx| {
                let d = s.prepare(ctx)?;
                let mut first = Vec::new();
                let taken = std::cell::Cell::new(0usize);
                for p in 0..d.parts() {
                    if taken.get() >= limit {
                        break;
                    }
                    d.run_while(p, &|| taken.get() < limit, &mut |x| {
                        if first.len() < limit {
                            first.push(x);
                            taken.set(first.len());
                        }
                    });
                }
                ctx.check_reads()?;
                f(ctx.time_ms, first).map_err(|e| EngineError::Output {
                    kind,
                    input: ctx.name(id).to_string(),
                    reason: e,
                })
            }),
        })
    }

    /// Registers an output operation: `f(batch_time_ms, partitions)` runs
    /// at every batch this stream produces, in declaration order with the
    /// other output operations.
    pub(crate) fn add_output(
        &self,
        kind: &'static str,
        f: impl Fn(u64, Vec<Vec<T>>) -> Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<(), EngineError> {
        let s = self.s.clone();
        let id = self.id;
        self.g.add_output(OutputEntry {
            node: id,
            kind,
            slide_ms: self.slide_ms(),
            run: Arc::new(move |ctx: &BatchCtx| {
                let d = s.prepare(ctx)?;
                let parts = ctx.collect(&*d)?;
                f(ctx.time_ms, parts).map_err(|e| EngineError::Output {
                    kind,
                    input: ctx.name(id).to_string(),
                    reason: e,
                })
            }),
        })
    }
}

impl<T: Data + std::hash::Hash + Eq> DStream<T> {
    /// Each distinct record with its number of occurrences in the batch.
    pub fn count_by_value(&self) -> DStream<(T, u64)> {
        let pairs = self.map(|x| (x, 1u64));
        let out = pairs.reduce_by_key_kind("count_by_value", |a, b| a + b);
        self.g.compose(
            out.id,
            "count_by_value",
            vec![],
            vec![self.id],
            &[(pairs.id, "pairs")],
        );
        out
    }
}
