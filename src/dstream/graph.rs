//! The operator graph: nodes with stable names, output operations, sources
//! and stateful operators; validation at build time; the pipeline
//! description a checkpoint fingerprint is computed from.
//!
//! Naming rule (stable across runs and unrelated code changes):
//! - an explicit `.name("counts")` wins;
//! - a node created inside a composite operator (e.g. the pane store of a
//!   windowed reduce) is `<owner name>.<role>`;
//! - otherwise `<input names joined by '+'>/<kind>`, or just `<kind>` for a
//!   source; the `k`-th (k ≥ 2) sibling with the same inputs and kind gets
//!   `#k` appended. Siblings are numbered in declaration order.
//!
//! Limits: names 1 to [`NAME_BYTES_MAX`] (200) bytes. Must never: derive a
//! name from a memory address or a global counter, or change once `build`
//! has frozen the graph into a [`Plan`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::eval::BatchCtx;
use super::state::StateDecoder;
use super::EngineError;

/// Index of a node in its graph.
pub type NodeId = usize;

/// Longest accepted operator name, in bytes.
pub const NAME_BYTES_MAX: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Building,
    Started,
    Stopped,
}

pub(crate) struct NodeMeta {
    pub kind: &'static str,
    pub inputs: Vec<NodeId>,
    pub name_inputs: Vec<NodeId>,
    pub owner: Option<(NodeId, &'static str)>,
    pub explicit: Option<String>,
    pub params: Vec<(&'static str, String)>,
    pub slide_ms: u64,
    pub stateful: bool,
}

pub(crate) type OutputFn = Arc<dyn Fn(&BatchCtx) -> Result<(), EngineError> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct OutputEntry {
    pub node: NodeId,
    pub kind: &'static str,
    pub slide_ms: u64,
    pub run: OutputFn,
}

/// Type-erased control of a source, used by the batch generator.
pub trait SourceControl: Send + Sync {
    /// End (exclusive) of the records available now.
    fn available_end(&self) -> u64;
    /// Where the batch starting at `start` ends (at most `max_end`).
    fn next_cut(&self, start: u64, max_end: u64) -> u64;
    /// Records before `end` will never be read again.
    fn release(&self, end: u64);
    /// Whether the source can go on: checked before every cut.
    fn check(&self) -> Result<(), super::BoxError> {
        Ok(())
    }
    /// Where the source starts when the checkpoint records nothing of it
    /// (`fresh`: nor of any source).
    fn first_position(&self, fresh: bool) -> Result<u64, super::BoxError> {
        let _ = fresh;
        Ok(0)
    }
}

#[derive(Clone)]
pub(crate) struct SourceEntry {
    pub node: NodeId,
    pub control: Arc<dyn SourceControl>,
}

#[derive(Clone)]
pub(crate) struct StatefulEntry {
    pub node: NodeId,
    pub input_slide_ms: u64,
    pub force: OutputFn,
    pub decoder: Arc<dyn StateDecoder>,
}

pub(crate) struct GraphInner {
    pub status: Status,
    pub interval_ms: u64,
    pub partitions: usize,
    pub nodes: Vec<NodeMeta>,
    pub outputs: Vec<OutputEntry>,
    pub sources: Vec<SourceEntry>,
    pub stateful: Vec<StatefulEntry>,
    /// Problems found while building, reported by `build()` with the
    /// operator's resolved name.
    pub problems: Vec<(NodeId, String)>,
    /// The data directory's identity as text (contexts built by
    /// `get_or_create`): external sinks derive idempotency keys from it.
    pub data_dir_id: Option<String>,
}

/// The shared, lazily built operator graph of one streaming context.
pub struct Graph {
    pub(crate) inner: Mutex<GraphInner>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").finish_non_exhaustive()
    }
}

impl Graph {
    /// An empty graph for batches of `interval_ms`, shuffling into
    /// `partitions` partitions.
    pub fn new(interval_ms: u64, partitions: usize) -> Arc<Graph> {
        Arc::new(Graph {
            inner: Mutex::new(GraphInner {
                status: Status::Building,
                interval_ms,
                partitions: partitions.max(1),
                nodes: Vec::new(),
                outputs: Vec::new(),
                sources: Vec::new(),
                stateful: Vec::new(),
                problems: Vec::new(),
                data_dir_id: None,
            }),
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, GraphInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the data directory's identity (the context's builder).
    pub(crate) fn set_data_dir_id(&self, id: Option<String>) {
        self.lock().data_dir_id = id;
    }

    /// The data directory's identity, when the context has one.
    pub(crate) fn data_dir_id(&self) -> Option<String> {
        self.lock().data_dir_id.clone()
    }

    /// The batch interval in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.lock().interval_ms
    }

    pub(crate) fn add_node(&self, meta: NodeMeta) -> NodeId {
        let mut g = self.lock();
        g.nodes.push(meta);
        g.nodes.len() - 1
    }

    pub(crate) fn slide_of(&self, id: NodeId) -> u64 {
        self.lock().nodes[id].slide_ms
    }

    pub(crate) fn problem(&self, id: NodeId, msg: String) {
        self.lock().problems.push((id, msg));
    }

    pub(crate) fn set_name(&self, id: NodeId, name: &str) {
        let mut g = self.lock();
        if name.is_empty() || name.len() > NAME_BYTES_MAX || name.chars().any(char::is_control) {
            g.problems.push((
                id,
                format!(
                    "invalid name {name:?}: must be 1 to {NAME_BYTES_MAX} bytes without control characters"
                ),
            ));
        }
        g.nodes[id].explicit = Some(name.to_string());
    }

    pub(crate) fn add_output(&self, e: OutputEntry) -> Result<(), EngineError> {
        let mut g = self.lock();
        match g.status {
            Status::Building => {
                g.outputs.push(e);
                Ok(())
            }
            Status::Started => Err(EngineError::AlreadyStarted),
            Status::Stopped => Err(EngineError::Stopped),
        }
    }

    pub(crate) fn add_source(&self, e: SourceEntry) {
        self.lock().sources.push(e);
    }

    pub(crate) fn add_stateful(&self, e: StatefulEntry) {
        self.lock().stateful.push(e);
    }

    /// Marks the graph stopped: no more output operations can be added.
    pub fn mark_stopped(&self) {
        self.lock().status = Status::Stopped;
    }

    /// The description of the graph as built so far (names resolved).
    pub fn describe(&self) -> PipelineDescription {
        let g = self.lock();
        let names = resolve_names(&g.nodes);
        describe(&g, &names)
    }

    /// Validates the graph and freezes it: checks window/slide problems,
    /// names (unique), and that there is at least one output operation.
    pub fn build(&self) -> Result<Arc<Plan>, EngineError> {
        let mut g = self.lock();
        match g.status {
            Status::Building => {}
            Status::Started => return Err(EngineError::AlreadyStarted),
            Status::Stopped => return Err(EngineError::Stopped),
        }
        let names = resolve_names(&g.nodes);
        if !g.problems.is_empty() {
            let problems = g
                .problems
                .iter()
                .map(|(id, m)| format!("operator `{}` ({}): {m}", names[*id], g.nodes[*id].kind))
                .collect();
            return Err(EngineError::InvalidGraph { problems });
        }
        let mut seen: HashMap<&str, NodeId> = HashMap::new();
        for (id, n) in names.iter().enumerate() {
            if let Some(prev) = seen.insert(n.as_str(), id) {
                return Err(EngineError::DuplicateName {
                    name: n.clone(),
                    kinds: (g.nodes[prev].kind, g.nodes[id].kind),
                });
            }
        }
        if g.outputs.is_empty() {
            return Err(EngineError::NoOutputs);
        }
        let description = describe(&g, &names);
        g.status = Status::Started;
        Ok(Arc::new(Plan {
            interval_ms: g.interval_ms,
            partitions: g.partitions,
            names,
            outputs: g.outputs.clone(),
            sources: g.sources.clone(),
            stateful: g.stateful.clone(),
            description,
        }))
    }
}

fn resolve_names(nodes: &[NodeMeta]) -> Vec<String> {
    fn go(id: NodeId, nodes: &[NodeMeta], memo: &mut Vec<Option<String>>) -> String {
        if let Some(n) = &memo[id] {
            return n.clone();
        }
        let m = &nodes[id];
        let name = if let Some(e) = &m.explicit {
            e.clone()
        } else if let Some((owner, role)) = m.owner {
            format!("{}.{}", go(owner, nodes, memo), role)
        } else {
            let base = if m.name_inputs.is_empty() {
                m.kind.to_string()
            } else {
                let ins: Vec<String> = m.name_inputs.iter().map(|&i| go(i, nodes, memo)).collect();
                format!("{}/{}", ins.join("+"), m.kind)
            };
            let rank = nodes[..id]
                .iter()
                .filter(|o| o.owner.is_none() && o.kind == m.kind && o.name_inputs == m.name_inputs)
                .count();
            if rank == 0 {
                base
            } else {
                format!("{base}#{}", rank + 1)
            }
        };
        memo[id] = Some(name.clone());
        name
    }
    let mut memo = vec![None; nodes.len()];
    (0..nodes.len()).map(|i| go(i, nodes, &mut memo)).collect()
}

fn describe(g: &GraphInner, names: &[String]) -> PipelineDescription {
    PipelineDescription {
        batch_interval_ms: g.interval_ms,
        partitions: g.partitions,
        operators: g
            .nodes
            .iter()
            .enumerate()
            .map(|(id, m)| OperatorDesc {
                name: names[id].clone(),
                kind: m.kind.to_string(),
                inputs: m.inputs.iter().map(|&i| names[i].clone()).collect(),
                params: m
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                slide_ms: m.slide_ms,
                stateful: m.stateful,
            })
            .collect(),
        outputs: g
            .outputs
            .iter()
            .map(|o| OutputDesc {
                kind: o.kind.to_string(),
                input: names[o.node].clone(),
            })
            .collect(),
    }
}

/// What a pipeline is, independent of code: enough to fingerprint it and to
/// name precisely what changed between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDescription {
    /// Batch interval in milliseconds.
    pub batch_interval_ms: u64,
    /// Number of shuffle partitions (fixes keyed output order).
    pub partitions: usize,
    /// Every operator, in declaration order.
    pub operators: Vec<OperatorDesc>,
    /// Output operations, in the order they run.
    pub outputs: Vec<OutputDesc>,
}

/// One operator of a [`PipelineDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDesc {
    /// Stable name.
    pub name: String,
    /// Operator kind, e.g. `reduce_by_key`, `window`.
    pub kind: String,
    /// Names of its inputs.
    pub inputs: Vec<String>,
    /// Parameters such as `window_ms`, `slide_ms`.
    pub params: BTreeMap<String, String>,
    /// How often it produces a batch, in milliseconds.
    pub slide_ms: u64,
    /// Whether it keeps state across batches (keyed by `name`).
    pub stateful: bool,
}

/// One output operation of a [`PipelineDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDesc {
    /// Kind, e.g. `print`, `save_as_text_files`.
    pub kind: String,
    /// Name of the stream it outputs.
    pub input: String,
}

/// A frozen graph, ready to run batches.
pub struct Plan {
    pub(crate) interval_ms: u64,
    pub(crate) partitions: usize,
    pub(crate) names: Vec<String>,
    pub(crate) outputs: Vec<OutputEntry>,
    pub(crate) sources: Vec<SourceEntry>,
    pub(crate) stateful: Vec<StatefulEntry>,
    description: PipelineDescription,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Batch interval in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// The pipeline description.
    pub fn description(&self) -> &PipelineDescription {
        &self.description
    }

    /// Stable names of the sources, in the order batch ranges are given.
    pub fn source_names(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| self.names[s.node].clone())
            .collect()
    }

    /// Control handles of the sources, in [`Plan::source_names`] order.
    pub fn source_controls(&self) -> Vec<Arc<dyn SourceControl>> {
        self.sources.iter().map(|s| s.control.clone()).collect()
    }

    /// Stateful operators: (stable name, decoder that rebuilds its state).
    pub fn stateful_operators(&self) -> Vec<(String, Arc<dyn StateDecoder>)> {
        self.stateful
            .iter()
            .map(|s| (self.names[s.node].clone(), s.decoder.clone()))
            .collect()
    }

    /// Evaluates one batch: runs the output operations in declaration order
    /// (each only at times its stream produces a batch), then makes sure
    /// every stateful operator has advanced. State changes are left in
    /// `ctx` ([`BatchCtx::take_deltas`]); committed state is not touched.
    /// Adds `(output index, time it took)` to `times` for each output
    /// that ran (at most one per output).
    pub fn run_batch(
        &self,
        ctx: &BatchCtx,
        times: &mut Vec<(usize, std::time::Duration)>,
    ) -> Result<(), EngineError> {
        for (i, o) in self.outputs.iter().enumerate() {
            if ctx.valid(o.slide_ms) {
                if i > 0 {
                    crate::failpoint::hit("between_outputs").map_err(|c| EngineError::Output {
                        kind: "failpoint",
                        input: String::new(),
                        reason: Box::new(c),
                    })?;
                }
                let started = std::time::Instant::now();
                (o.run)(ctx)?;
                times.push((i, started.elapsed()));
            }
        }
        for s in &self.stateful {
            if ctx.valid(s.input_slide_ms) {
                (s.force)(ctx)?;
            }
        }
        // Every consumer checked its reads; this is the last line before
        // the commit, so a failed read can never be committed.
        ctx.check_reads()
    }
}

impl Graph {
    /// Folds the nodes of a composite operator into `outer`: `outer` takes
    /// `kind`, `params` and is named from `name_inputs`; each `(id, role)`
    /// in `inner` is named `<outer name>.<role>`.
    pub(crate) fn compose(
        &self,
        outer: NodeId,
        kind: &'static str,
        params: Vec<(&'static str, String)>,
        name_inputs: Vec<NodeId>,
        inner: &[(NodeId, &'static str)],
    ) {
        let mut g = self.lock();
        let m = &mut g.nodes[outer];
        m.kind = kind;
        m.params = params;
        m.name_inputs = name_inputs;
        for &(id, role) in inner {
            g.nodes[id].owner = Some((outer, role));
        }
    }

    pub(crate) fn set_stateful(&self, id: NodeId) {
        self.lock().nodes[id].stateful = true;
    }
}
