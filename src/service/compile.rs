//! Compiles a validated [`Pipeline`] onto a [`StreamingContext`] with the
//! same DStream calls a library user writes by hand (one engine, two front
//! doors).
//!
//! Record kinds map to types: text lines → `DStream<Text>`, JSON records →
//! `DStream<serde_json::Value>`, keyed records → `DStream<(Text, Value)>`,
//! counts → `DStream<(Text, Num)>`. Every operator a step creates is named
//! after the step (`name`, helpers `name.in`), so stateful steps keep their
//! state under the name the file gives them whatever else changes.
//!
//! One function per op; `apply` matches every [`Op`] variant (no
//! catch-all), so an op added to `config/ops.rs` does not compile until
//! it is built here, and a stream of a kind an op does not take (only
//! possible for a pipeline built by hand, not by `config::parse`) is an
//! `InvalidGraph` error, not a panic.
//!
//! Limits: as the engine's (one batch partition in memory per operator).
//! Must never: contain engine logic, or panic on a record: a bad record
//! (a line that is not JSON, a summed field that is not a number) fails
//! its batch naming step, stream and record number (`on_error = "fail"`,
//! the default), goes to the dead-letter log (`"dead_letter"`), or is
//! dropped and counted (`"drop"`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::config::{Kind, Node, OnBadRecord, Op, Pipeline, Predicate, SinkKind, SourceDef, SourceKind};
use super::generator::GeneratorSource;
pub use super::compile_sources::ReceiverCounters;
use super::compile_sources::source;
use crate::dstream::{BoxError, DStream, Data, OnError, Text, UpdateSpec};
use crate::StreamingContext;
pub use super::values::{Num, ToJson};

/// Records a step dropped (`on_error = "drop"`), by step id.
#[derive(Debug, Default)]
pub struct Dropped {
    counters: std::sync::Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

impl Dropped {
    pub(super) fn counter(&self, step: &str) -> Arc<AtomicU64> {
        let c = Arc::new(AtomicU64::new(0));
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((step.to_string(), c.clone()));
        c
    }
    /// `(step, records dropped)` for every step that may drop.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(s, c)| (s.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What compiling left for the service: the generators (to stop them at
/// a graceful stop), receivers' counters and ingest addresses, and the
/// drop counters (for the metrics).
#[derive(Debug, Default)]
pub struct Compiled {
    /// Generator sources by id.
    pub generators: Vec<(String, Arc<GeneratorSource>)>,
    /// Receiver counters by source id.
    pub receivers: Vec<(String, ReceiverCounters)>,
    /// JetStream partitions (weir stream name, counters).
    pub jetstreams: Vec<(String, Arc<crate::PartitionStats>)>,
    /// Kafka partitions read: (weir stream name, counters).
    pub kafkas: Vec<(String, Arc<crate::KafkaPartitionStats>)>,
    /// Where each ingest source listens (port 0 resolved).
    pub ingest_addrs: Vec<(String, std::net::SocketAddr)>,
    /// The TLS and tokens of listening sources (reloaded on SIGHUP).
    pub securities: Vec<Arc<crate::net::Security>>,
    /// Per-step dropped records.
    pub dropped: Arc<Dropped>,
    /// Sinks that count what they did, by name (`jetstream:<sink id>`).
    pub sinks: Vec<(String, Arc<dyn crate::sink::SinkCounters>)>,
}

/// A stream of one record kind (the kinds of `config::Kind`).
#[derive(Clone)]
pub(super) enum S {
    Lines(DStream<Text>),
    Records(DStream<Value>),
    Keyed(DStream<(Text, Value)>),
    Counts(DStream<(Text, Num)>),
}

impl S {
    /// The record kind it carries.
    fn kind(&self) -> Kind {
        match self {
            S::Lines(_) => Kind::Lines,
            S::Records(_) => Kind::Records,
            S::Keyed(_) => Kind::Keyed,
            S::Counts(_) => Kind::Counts,
        }
    }
}

/// A step or sink given a stream its kind does not take: validation rules
/// it out, so only a pipeline built by hand (not by `config::parse`) can
/// get here.
pub(super) fn unvalidated(who: &str, what: &str, got: &S) -> crate::Error {
    crate::Error::Engine(crate::dstream::EngineError::InvalidGraph {
        problems: vec![format!(
            "{who} ({what}) cannot read {}; build pipelines with service::config::parse, which checks the record kinds",
            got.kind().label()
        )],
    })
}

/// Resolves a sink path: relative paths live under the data directory.
pub fn resolve(data_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data_dir.join(p)
    }
}

/// Builds `p`'s sources, steps and sinks on `ssc`.
pub fn compile(p: &Pipeline, ssc: &StreamingContext, data_dir: &Path) -> crate::Result<Compiled> {
    let sql_dir = crate::layout::sql_dir(data_dir);
    compile_with(p, ssc, data_dir, Some(&sql_dir), source)
}

/// Builds `p` on `ssc` with every source a stand-in of the same name that
/// opens, binds and starts nothing (an empty queue): the graph, and so the
/// description `start` compares with a checkpoint, is the one `run`
/// builds (`weir check --data-dir`).
///
/// `sql_dir`: where SQL steps' inferred columns were saved (read only, so
/// their queries are planned against them), if anywhere.
pub fn compile_offline(
    p: &Pipeline,
    ssc: &StreamingContext,
    sql_dir: Option<&Path>,
) -> crate::Result<()> {
    compile_with(p, ssc, Path::new("."), sql_dir, |src, ssc, _| {
        Ok(match &src.kind {
            SourceKind::Generator(_) => {
                S::Lines(ssc.queue_stream(&crate::Queue::new()).name(&src.id))
            }
            // Stand-ins named as the partitions are (`<id>-<STREAM>`).
        SourceKind::JetStream(cfg) => {
                let owned = cfg.scale_out.assignment.owned(cfg.streams.len());
                let parts: Vec<DStream<String>> = owned
                    .iter()
                    .map(|&k| {
                        let name =
                            crate::context::jetstream_partition_name(&src.id, &cfg.streams[k]);
                        ssc.queue_stream(&crate::Queue::new()).name(&name)
                    })
                    .collect();
                let d = match parts.len() {
                    1 => parts[0].clone(),
                    _ => ssc.union(&parts).name(&src.id),
                };
                lines(d, &src.id)
            }
            _ => lines(ssc.queue_stream(&crate::Queue::new()).name(&src.id), &src.id),
        })
    })?;
    Ok(())
}

type MakeSource = fn(&SourceDef, &StreamingContext, &mut Compiled) -> crate::Result<S>;

/// `data_dir`: where relative sink paths go; `sql_dir`: where SQL steps
/// keep inferred columns (`None` for `weir check` without a data dir).
fn compile_with(
    p: &Pipeline,
    ssc: &StreamingContext,
    data_dir: &Path,
    sql_dir: Option<&Path>,
    source: MakeSource,
) -> crate::Result<Compiled> {
    let mut compiled = Compiled::default();
    let mut streams: Vec<S> = Vec::with_capacity(p.nodes.len());
    let interval = Duration::from_millis(ssc.batch_interval_ms());
    #[cfg(feature = "sql")]
    let session = crate::sql::SqlSession::new();
    #[cfg(not(feature = "sql"))]
    let _ = sql_dir;
    for node in &p.nodes {
        let s = match node {
            Node::Source(src) => source(src, ssc, &mut compiled)?,
            #[cfg(feature = "sql")]
            Node::Step(step) if matches!(step.op, Op::Sql(_)) => {
                sql_step(p, step, &streams, interval, sql_dir, &session, &compiled.dropped)?
            }
            Node::Step(step) if matches!(step.op, Op::KMeans(_) | Op::Regression(_)) => {
                let cx = super::compile_ml::MlCtx {
                    name: &step.name,
                    id: &step.id,
                    data_dir,
                    dropped: &compiled.dropped,
                };
                super::compile_ml::build(&step.op, &cx, streams[step.input].clone())?
            }
            Node::Step(step) => {
                let st = StepCtx {
                    name: &step.name,
                    id: &step.id,
                    pre: format!("{}.in", step.name),
                    interval,
                    dropped: &compiled.dropped,
                };
                apply(&step.op, &st, streams[step.input].clone())?
            }
        };
        streams.push(s);
    }
    for sink in &p.sinks {
        if let Some(counted) = add_sink(&streams[sink.input], &sink.kind, data_dir)? {
            compiled.sinks.push(counted);
        }
    }
    Ok(compiled)
}

/// An `op = "sql"` step on its inputs (`compile_sql.rs`).
#[cfg(feature = "sql")]
fn sql_step(
    p: &Pipeline,
    step: &super::config::StepDef,
    streams: &[S],
    interval: Duration,
    sql_dir: Option<&Path>,
    session: &crate::sql::SqlSession,
    dropped: &Dropped,
) -> crate::Result<S> {
    let Op::Sql(def) = &step.op else {
        return Err(unvalidated(&format!("step `{}`", step.id), step.op.name(), &streams[step.input]));
    };
    let cx = super::compile_sql::SqlCtx {
        name: &step.name,
        interval,
        sql_dir,
        session,
        dropped: (def.on_error == OnBadRecord::Drop).then(|| dropped.counter(&step.id)),
    };
    let inputs = std::iter::once(step.input)
        .chain(step.also.iter().copied())
        .map(|i| (p.nodes[i].id().to_string(), streams[i].clone()))
        .collect();
    super::compile_sql::build(def, &cx, inputs)
}

/// A receiver's `String` lines as `Text` (named after the source).
pub(super) fn lines(d: DStream<String>, id: &str) -> S {
    S::Lines(d.map(Text::from).name(&format!("{id}.text")))
}

/// Runs `$body` with `$d` bound to the stream inside `$s`, whatever its
/// record kind (for sinks that take any records).
macro_rules! each_kind {
    ($s:expr, $d:ident => $body:expr) => {
        match $s {
            S::Lines($d) => $body,
            S::Records($d) => $body,
            S::Keyed($d) => $body,
            S::Counts($d) => $body,
        }
    };
}

/// A sink's name and counters, for the service's metrics.
type Counted = (String, Arc<dyn crate::sink::SinkCounters>);

/// Adds one sink on its input stream; its counters if it keeps any.
fn add_sink(input: &S, kind: &SinkKind, data_dir: &Path) -> crate::Result<Option<Counted>> {
    if let SinkKind::JetStream(c) = kind {
        // Its files were resolved from the pipeline file's directory.
        let c = (**c).clone();
        let name = crate::sink::jetstream_sink_op(&c.sink_id);
        let stats = each_kind!(input, d => d.save_to_jetstream(c))?;
        return Ok(Some((name, stats)));
    }
    if let SinkKind::Kafka(c) = kind {
        let c = (**c).clone();
        let name = crate::sink::kafka_sink_op(&c.sink_id);
        let stats = each_kind!(input, d => d.save_to_kafka(c))?;
        return Ok(Some((name, stats)));
    }
    if let SinkKind::Postgres(def) = kind {
        let name = crate::sink::postgres_sink_op(&def.config.sink_id);
        let stats = each_kind!(input, d => super::compile_pg::add_postgres(d, def))?;
        return Ok(Some((name, stats)));
    }
    add_plain_sink(input, kind, data_dir).map(|()| None)
}

/// Adds a sink that keeps no counters.
fn add_plain_sink(input: &S, kind: &SinkKind, data_dir: &Path) -> crate::Result<()> {
    match kind {
        SinkKind::Kv { table } => add_kv(input, table),
        SinkKind::Print { count, time_format } => {
            let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
            Ok(each_kind!(input, d => d.print_with(*count, *time_format, out))?)
        }
        SinkKind::TextFiles {
            prefix,
            suffix,
            skip_empty,
        } => {
            let prefix = resolve(data_dir, prefix).display().to_string();
            let o = crate::sink::FileOptions {
                skip_empty: *skip_empty,
            };
            Ok(each_kind!(input, d => d.save_as_text_files_with(&prefix, suffix, o))?)
        }
        SinkKind::JsonFiles {
            prefix,
            suffix,
            skip_empty,
        } => {
            let prefix = resolve(data_dir, prefix).display().to_string();
            each_kind!(input, d => json_files(d, &prefix, suffix, *skip_empty))
        }
        // Added with their counters by `add_sink`.
        SinkKind::JetStream(_) | SinkKind::Postgres(_) | SinkKind::Kafka(_) => Ok(()),
    }
}

/// Upserts pairs or keyed records into a key-value table. Values are
/// stored as text so `weir kv get|scan` shows them as they print (numbers
/// in decimal, JSON compact).
fn add_kv(input: &S, table: &str) -> crate::Result<()> {
    let pre = format!("kv.{table}.in");
    match input {
        S::Counts(d) => Ok(d
            .map(|(k, n)| (k, crate::sink::show(&n)))
            .name(&pre)
            .save_to_kv(table)?),
        S::Keyed(d) => Ok(d
            .map(|(k, v)| (k, v.to_string()))
            .name(&pre)
            .save_to_kv(table)?),
        other => Err(unvalidated(&format!("sink `{table}`"), "kind kv", other)),
    }
}

/// One JSON-lines file per batch, written atomically (none for an empty
/// batch with `skip_empty`).
pub(super) fn json_files<T: Data + ToJson>(
    d: &DStream<T>,
    prefix: &str,
    suffix: &str,
    skip_empty: bool,
) -> crate::Result<()> {
    let (prefix, suffix) = (prefix.to_string(), suffix.to_string());
    d.foreach_batch(move |t, recs| {
        if skip_empty && recs.is_empty() {
            return Ok(());
        }
        let mut s = String::new();
        for r in &recs {
            s.push_str(&r.to_json().to_string());
            s.push('\n');
        }
        crate::sink::write_batch_file(
            &crate::sink::batch_file_name(&prefix, &suffix, t),
            s.as_bytes(),
        )
        .map_err(|e| Box::new(e) as BoxError)
    })?;
    Ok(())
}

/// The value at a dotted path (`user.name`) of a JSON value.
pub fn field<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A JSON value as key text: strings without quotes, others as JSON.
fn key_text(v: Option<&Value>) -> Text {
    match v {
        Some(Value::String(s)) => Text::from(s.as_str()),
        Some(v) => Text::from(v.to_string()),
        None => Text::from("null"),
    }
}

/// The number at `path` of keyed record value `v`, or what is wrong.
fn num_of(v: &Value, path: &str) -> Result<Num, String> {
    match field(v, path) {
        Some(Value::Number(n)) => Ok(n
            .as_i64()
            .map(Num::Int)
            .unwrap_or_else(|| Num::Float(n.as_f64().unwrap_or(f64::NAN)))),
        other => Err(format!(
            "field `{path}` is not a number (found {})",
            other.map_or("nothing".to_string(), |v| truncate(&v.to_string()))
        )),
    }
}

pub(super) fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The engine's policy for a step's `on_error` (`Drop` is built apart).
pub(super) fn policy(p: OnBadRecord) -> OnError {
    match p {
        OnBadRecord::DeadLetter => OnError::DeadLetter,
        OnBadRecord::Fail | OnBadRecord::Drop => OnError::Fail,
    }
}

/// What a step's builder needs besides its op and input.
struct StepCtx<'a> {
    /// The operator name (state is kept under it).
    name: &'a str,
    /// The step id (named in record errors and drop counters).
    id: &'a str,
    /// `name.in`: the helper operator before a keyed one.
    pre: String,
    /// The batch interval (a window's slide when the file gives none).
    interval: Duration,
    dropped: &'a Dropped,
}

impl StepCtx<'_> {
    /// The error for an input kind validation rules out.
    fn wrong(&self, op: &Op, got: &S) -> crate::Error {
        unvalidated(&format!("step `{}`", self.id), op.name(), got)
    }
}

/// Builds one step on its input. The match is exhaustive over [`Op`]: a
/// new op in `config/ops.rs` does not compile until it is built here.
fn apply(op: &Op, st: &StepCtx<'_>, input: S) -> crate::Result<S> {
    let add = |a: Num, b: Num| a.add(b);
    Ok(match op {
        Op::Split {
            separator,
            keep_empty,
        } => split(st, op, input, separator.clone(), *keep_empty)?,
        Op::Lowercase => map_text(st, op, input, Text::lowercase)?,
        Op::Uppercase => map_text(st, op, input, |s| Text::from(s.to_uppercase()))?,
        Op::Trim => map_text(st, op, input, |s| Text::from(s.trim()))?,
        Op::Filter {
            predicate,
            field,
            invert,
        } => filter(st, op, input, matcher(predicate), field.clone(), *invert)?,
        Op::ParseJson { on_error } => parse_json(st, op, input, *on_error)?,
        Op::Select { fields } => select(st, op, input, fields.clone())?,
        Op::Rename { fields } => rename(st, op, input, fields.clone())?,
        Op::KeyBy { field: f } => match input {
            S::Records(d) => {
                let f = f.clone();
                S::Keyed(d.map(move |v| (key_text(field(&v, &f)), v)).name(st.name))
            }
            other => return Err(st.wrong(op, &other)),
        },
        Op::CountByKey => S::Counts(ones(st, op, input)?.reduce_by_key(add).name(st.name)),
        Op::SumByKey { field: f, on_error } => S::Counts(
            numbers(st, op, input, f.clone(), *on_error)?
                .reduce_by_key(add)
                .name(st.name),
        ),
        Op::WindowCount { window, slide } => {
            let slide = if slide.is_zero() { st.interval } else { *slide };
            S::Counts(
                ones(st, op, input)?
                    .reduce_by_key_and_window_inv(
                        add,
                        |a: Num, b: Num| a.sub(b),
                        *window,
                        slide,
                        Some(|kv: &(Text, Num)| kv.1 != Num::Int(0)),
                    )
                    .name(st.name),
            )
        }
        Op::WindowSum {
            window,
            slide,
            field: f,
            on_error,
        } => {
            let slide = if slide.is_zero() { st.interval } else { *slide };
            S::Counts(
                numbers(st, op, input, f.clone(), *on_error)?
                    .reduce_by_key_and_window(add, *window, slide)
                    .name(st.name),
            )
        }
        Op::RunningTotal {
            field: f,
            on_error,
            initial,
        } => running_total(st, op, input, f.clone(), *on_error, initial.clone())?,
        Op::Top { n } => top(st, op, input, *n)?,
        // Built by `sql_step` (it reads several inputs); without the `sql`
        // feature the validator refuses it.
        Op::Sql(_) => return Err(st.wrong(op, &input)),
        // Built by `compile_ml::build` (they need the data directory).
        Op::KMeans(_) | Op::Regression(_) => return Err(st.wrong(op, &input)),
    })
}

fn split(st: &StepCtx<'_>, op: &Op, input: S, sep: Option<String>, keep: bool) -> crate::Result<S> {
    let S::Lines(d) = input else {
        return Err(st.wrong(op, &input));
    };
    Ok(S::Lines(
        d.flat_map_with(move |line: Text, out| match &sep {
            Some(sep) => {
                for piece in line.split(sep.as_str()) {
                    let t = piece.trim();
                    if keep || !t.is_empty() {
                        out(Text::from(t))
                    }
                }
            }
            None => line.split_whitespace().for_each(|w| out(Text::from(w))),
        })
        .name(st.name),
    ))
}

/// `lowercase`, `uppercase`, `trim`: lines, or the keys of pairs.
fn map_text(st: &StepCtx<'_>, op: &Op, input: S, f: fn(&str) -> Text) -> crate::Result<S> {
    let name = st.name;
    Ok(match input {
        S::Lines(d) => S::Lines(d.map(move |t| f(&t)).name(name)),
        S::Keyed(d) => S::Keyed(d.map(move |(k, v)| (f(&k), v)).name(name)),
        S::Counts(d) => S::Counts(d.map(move |(k, v)| (f(&k), v)).name(name)),
        other @ S::Records(_) => return Err(st.wrong(op, &other)),
    })
}

type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

fn matcher(p: &Predicate) -> Matcher {
    match p.clone() {
        Predicate::Contains(s) => Arc::new(move |x| x.contains(s.as_str())),
        Predicate::StartsWith(s) => Arc::new(move |x| x.starts_with(s.as_str())),
        Predicate::EndsWith(s) => Arc::new(move |x| x.ends_with(s.as_str())),
        Predicate::Regex(r) => Arc::new(move |x| r.is_match(x)),
        Predicate::NotEmpty => Arc::new(|x| !x.is_empty()),
    }
}

/// Keeps the records whose line, key or `field` matches (`inv`: does not).
fn filter(
    st: &StepCtx<'_>,
    op: &Op,
    input: S,
    m: Matcher,
    fname: Option<String>,
    inv: bool,
) -> crate::Result<S> {
    let name = st.name;
    Ok(match (input, fname) {
        (S::Lines(d), None) => S::Lines(d.filter(move |t| m(t) != inv).name(name)),
        (S::Keyed(d), None) => S::Keyed(d.filter(move |kv| m(&kv.0) != inv).name(name)),
        (S::Counts(d), None) => S::Counts(d.filter(move |kv| m(&kv.0) != inv).name(name)),
        (S::Records(d), Some(f)) => S::Records(
            d.filter(move |v| field(v, &f).is_some_and(|x| m(&key_text(Some(x)))) != inv)
                .name(name),
        ),
        (S::Keyed(d), Some(f)) => S::Keyed(
            d.filter(move |kv| field(&kv.1, &f).is_some_and(|x| m(&key_text(Some(x)))) != inv)
                .name(name),
        ),
        (other, _) => return Err(st.wrong(op, &other)),
    })
}

fn parse_json(st: &StepCtx<'_>, op: &Op, input: S, on_error: OnBadRecord) -> crate::Result<S> {
    let S::Lines(d) = input else {
        return Err(st.wrong(op, &input));
    };
    if on_error != OnBadRecord::Drop {
        return Ok(S::Records(
            d.try_map(policy(on_error), |line: &Text| {
                serde_json::from_str::<Value>(line).map_err(|e| format!("not JSON: {e}"))
            })
            .name(st.name),
        ));
    }
    let counter = st.dropped.counter(st.id);
    Ok(S::Records(
        d.flat_map_with(
            move |line: Text, out| match serde_json::from_str::<Value>(&line) {
                Ok(v) => out(v),
                Err(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            },
        )
        .name(st.name),
    ))
}

fn select(st: &StepCtx<'_>, op: &Op, input: S, fields: Vec<String>) -> crate::Result<S> {
    let S::Records(d) = input else {
        return Err(st.wrong(op, &input));
    };
    Ok(S::Records(
        d.map(move |v| {
            let mut m = serde_json::Map::new();
            for f in &fields {
                m.insert(f.clone(), field(&v, f).cloned().unwrap_or(Value::Null));
            }
            Value::Object(m)
        })
        .name(st.name),
    ))
}

fn rename(
    st: &StepCtx<'_>,
    op: &Op,
    input: S,
    fields: BTreeMap<String, String>,
) -> crate::Result<S> {
    let S::Records(d) = input else {
        return Err(st.wrong(op, &input));
    };
    Ok(S::Records(
        d.map(move |mut v| {
            if let Value::Object(m) = &mut v {
                for (old, new) in &fields {
                    if let Some(x) = m.remove(old) {
                        m.insert(new.clone(), x);
                    }
                }
            }
            v
        })
        .name(st.name),
    ))
}

/// Totals per key since the first batch: counts of lines or keyed
/// records, else sums of a field or of pairs; from the pairs of `initial`
/// at the first start.
fn running_total(
    st: &StepCtx<'_>,
    op: &Op,
    input: S,
    f: Option<String>,
    on_error: OnBadRecord,
    initial: Option<PathBuf>,
) -> crate::Result<S> {
    let pairs = match (&input, &f) {
        (S::Lines(_), _) | (S::Keyed(_), None) => ones(st, op, input)?,
        _ => numbers(st, op, input, f, on_error)?,
    };
    let mut spec = UpdateSpec::function(|new: &[Num], old: Option<&Num>| {
        Some(
            new.iter()
                .fold(old.copied().unwrap_or(Num::Int(0)), |a, b| a.add(*b)),
        )
    });
    if let Some(path) = initial {
        // Read when the operator has no committed state only: the file
        // is needed at the first start, not after.
        spec = spec.initial_state_from(move || Ok(super::initial::load_pairs(&path)?));
    }
    Ok(S::Counts(pairs.update_state_by_key_with(spec).name(st.name)))
}

/// The `n` pairs with the largest numbers of each batch (ties by key).
fn top(st: &StepCtx<'_>, op: &Op, input: S, n: usize) -> crate::Result<S> {
    let S::Counts(d) = input else {
        return Err(st.wrong(op, &input));
    };
    Ok(S::Counts(
        d.transform(move |_, mut v: Vec<(Text, Num)>| {
            v.sort_by(|a, b| {
                b.1.as_f64()
                    .total_cmp(&a.1.as_f64())
                    .then_with(|| a.0.cmp(&b.0))
            });
            v.truncate(n);
            v
        })
        .name(st.name),
    ))
}

/// `(key, 1)` for each line or keyed record.
fn ones(st: &StepCtx<'_>, op: &Op, s: S) -> crate::Result<DStream<(Text, Num)>> {
    Ok(match s {
        S::Lines(d) => d.map(|t| (t, Num::Int(1))).name(&st.pre),
        S::Keyed(d) => d.map(|(k, _)| (k, Num::Int(1))).name(&st.pre),
        other => return Err(st.wrong(op, &other)),
    })
}

/// `(key, number)` from keyed records' field, or counts as they are.
fn numbers(
    st: &StepCtx<'_>,
    op: &Op,
    s: S,
    f: Option<String>,
    on_error: OnBadRecord,
) -> crate::Result<DStream<(Text, Num)>> {
    Ok(match (s, f) {
        (S::Keyed(d), Some(f)) if on_error == OnBadRecord::Drop => {
            let counter = st.dropped.counter(st.id);
            d.flat_map_with(move |(k, v): (Text, Value), out| match num_of(&v, &f) {
                Ok(n) => out((k, n)),
                Err(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .name(&st.pre)
        }
        (S::Keyed(d), Some(f)) => d
            .try_map(policy(on_error), move |(k, v): &(Text, Value)| {
                num_of(v, &f).map(|n| (k.clone(), n))
            })
            .name(&st.pre),
        (S::Counts(d), None) => d,
        (other, _) => return Err(st.wrong(op, &other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_add_exactly_and_fall_back_to_float() {
        assert_eq!(Num::Int(2).add(Num::Int(3)), Num::Int(5));
        assert_eq!(Num::Int(2).add(Num::Float(0.5)), Num::Float(2.5));
        assert_eq!(
            Num::Int(i64::MAX).add(Num::Int(1)),
            Num::Float(i64::MAX as f64 + 1.0)
        );
        assert_eq!(Num::Int(5).sub(Num::Int(7)), Num::Int(-2));
        assert_eq!(crate::sink::show(&(Text::from("a"), Num::Int(3))), "(a,3)");
        let v: Value = serde_json::json!({"u": {"n": "x"}, "k": 7});
        assert_eq!(field(&v, "u.n"), Some(&Value::from("x")));
        assert_eq!(key_text(field(&v, "k")).as_str(), "7");
        assert_eq!(key_text(field(&v, "missing")).as_str(), "null");
        assert_eq!(
            (Text::from("k"), Num::Float(1.5)).to_json().to_string(),
            r#"{"key":"k","value":1.5}"#
        );
    }
}
