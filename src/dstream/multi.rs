//! Operators over any number of streams: the union (Spark's `ssc.union`,
//! and `DStream::union` for two) and the transform of several streams'
//! batches together (Spark's `ssc.transform`).
//!
//! Owns: [`union_all`], [`transform_all`] (and its fallible form
//! [`try_transform_all`], which the SQL operator runs on) and the n-ary union stream.
//! Limits: at least one input stream; every input slides at the same
//! interval and belongs to the same context. A violation is a graph
//! problem, refused at `start()` naming the operator, like a bad window.
//! Must never: reorder records (a union is its inputs' partitions
//! concatenated in the order given), or index a node of another graph.

use std::marker::PhantomData;
use std::sync::Arc;

use super::eval::{BatchCtx, PartFn, Stream};
use super::graph::{Graph, NodeId};
use super::{meta, split_even, BoxError, DStream, Data, EngineError, Materialized};

/// The records of every input, input by input.
pub(crate) struct UnionStream<T> {
    pub inputs: Vec<Arc<dyn Stream<T>>>,
}

struct UnionPart<T> {
    inputs: Vec<Arc<dyn PartFn<T>>>,
}

impl<T: Data> Stream<T> for UnionStream<T> {
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<T>>, EngineError> {
        let inputs = self
            .inputs
            .iter()
            .map(|s| s.prepare(ctx))
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(UnionPart { inputs }))
    }
}

impl<T: Data> PartFn<T> for UnionPart<T> {
    fn parts(&self) -> usize {
        self.inputs.iter().map(|i| i.parts()).sum()
    }
    fn run(&self, p: usize, sink: &mut dyn FnMut(T)) {
        self.run_while(p, &|| true, sink)
    }
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(T)) {
        let mut p = p;
        for input in &self.inputs {
            let n = input.parts();
            if p < n {
                return input.run_while(p, more, sink);
            }
            p -= n;
        }
    }
}

/// The inputs of a multi-input operator that belong to `g`, with the
/// problems of the others (another context, another slide, none at all)
/// recorded on the new node `id` once it exists.
struct Checked<'a, T> {
    inputs: Vec<&'a DStream<T>>,
    problems: Vec<String>,
    slide_ms: u64,
}

fn check_inputs<'a, T: Data>(
    g: &Arc<Graph>,
    what: &str,
    streams: &'a [DStream<T>],
) -> Checked<'a, T> {
    let mut inputs = Vec::new();
    let mut problems = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        if Arc::ptr_eq(&s.g, g) {
            inputs.push(s);
        } else {
            problems.push(format!(
                "stream {} of {} belongs to another StreamingContext; build every input on this context",
                i + 1,
                streams.len()
            ));
        }
    }
    let slide_ms = inputs.first().map_or(g.interval_ms(), |s| s.slide_ms());
    for s in &inputs {
        let b = s.slide_ms();
        if b != slide_ms {
            problems.push(format!(
                "inputs slide at different intervals ({slide_ms} ms and {b} ms)"
            ));
        }
    }
    if streams.is_empty() {
        problems.push(format!("{what} of no streams: give it at least one stream"));
    }
    Checked {
        inputs,
        problems,
        slide_ms,
    }
}

fn report(g: &Graph, id: NodeId, problems: Vec<String>) {
    for p in problems {
        g.problem(id, p);
    }
}

/// Spark's `ssc.union(streams)`: the records of every stream at each
/// batch, the first stream's partitions first.
pub(crate) fn union_all<T: Data>(g: &Arc<Graph>, streams: &[DStream<T>]) -> DStream<T> {
    let c = check_inputs(g, "a union", streams);
    let ids: Vec<NodeId> = c.inputs.iter().map(|s| s.id).collect();
    let inputs = c.inputs.iter().map(|s| s.s.clone()).collect();
    let id = g.add_node(meta("union", ids, c.slide_ms, vec![]));
    report(g, id, c.problems);
    DStream {
        g: g.clone(),
        id,
        s: Arc::new(UnionStream { inputs }),
    }
}

/// Spark's `ssc.transform(streams, f)`: at each batch, `f(batch_time_ms,
/// batches)` gets one `Vec` per stream (in the order given) and returns
/// the batch of the new stream, split evenly over the partitions.
pub(crate) fn transform_all<T: Data, U: Data>(
    g: &Arc<Graph>,
    streams: &[DStream<T>],
    f: impl Fn(u64, Vec<Vec<T>>) -> Vec<U> + Send + Sync + 'static,
) -> DStream<U> {
    try_transform_all(g, streams, "transform", move |t, b| Ok(f(t, b)))
}

/// Like [`transform_all`] for an `f` that can fail: its error fails the
/// batch as [`EngineError::Step`], naming the operator (of kind `kind`).
pub(crate) fn try_transform_all<T: Data, U: Data>(
    g: &Arc<Graph>,
    streams: &[DStream<T>],
    kind: &'static str,
    f: impl Fn(u64, Vec<Vec<T>>) -> Result<Vec<U>, BoxError> + Send + Sync + 'static,
) -> DStream<U> {
    let c = check_inputs(g, kind, streams);
    let ids: Vec<NodeId> = c.inputs.iter().map(|s| s.id).collect();
    let inputs: Vec<Arc<dyn Stream<T>>> = c.inputs.iter().map(|s| s.s.clone()).collect();
    let id = g.add_node(meta(kind, ids, c.slide_ms, vec![]));
    report(g, id, c.problems);
    let run = move |ctx: &BatchCtx| -> Result<Vec<Vec<U>>, EngineError> {
        let mut batches = Vec::with_capacity(inputs.len());
        for s in &inputs {
            let d = s.prepare(ctx)?;
            batches.push(ctx.collect(&*d)?.into_iter().flatten().collect());
        }
        let out = f(ctx.time_ms, batches).map_err(|reason| EngineError::Step {
            step: ctx.name(id).to_string(),
            reason,
        })?;
        Ok(split_even(out, ctx.partitions()))
    };
    DStream {
        g: g.clone(),
        id,
        s: Arc::new(Materialized {
            id,
            f: run,
            _t: PhantomData,
        }),
    }
}
