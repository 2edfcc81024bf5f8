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
//! Limits: as the engine's (one batch partition in memory per operator).
//! Must never: contain engine logic; a bad record either fails its batch
//! (retried, then the service stops naming it) or, where the file says
//! `on_error = "drop"`, is dropped and counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{Node, Op, Pipeline, Predicate, SinkKind, SourceKind};
use super::generator::GeneratorSource;
use crate::dstream::{BoxError, DStream, Data, Text};
use crate::sink::Show;
use crate::StreamingContext;

/// The number in a `(key, number)` pair: exact integers, floats when a
/// summed field has a fraction (or an integer sum would overflow).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Num {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

impl Num {
    fn add(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }
    fn sub(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_sub(b)
                .map_or(Num::Float(a as f64 - b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() - b.as_f64()),
        }
    }
    /// As a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn to_json(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

impl Show for Num {
    fn show(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match self {
            Num::Int(i) => write!(out, "{i}"),
            Num::Float(f) => write!(out, "{f}"),
        };
    }
}

impl Show for Value {
    fn show(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

/// Renders a record as one JSON value (the `json_files` sink).
pub trait ToJson {
    /// The record as JSON.
    fn to_json(&self) -> Value;
}
impl ToJson for Text {
    fn to_json(&self) -> Value {
        Value::String(self.as_str().to_string())
    }
}
impl ToJson for Value {
    fn to_json(&self) -> Value {
        self.clone()
    }
}
impl ToJson for (Text, Value) {
    fn to_json(&self) -> Value {
        serde_json::json!({"key": self.0.as_str(), "value": self.1})
    }
}
impl ToJson for (Text, Num) {
    fn to_json(&self) -> Value {
        serde_json::json!({"key": self.0.as_str(), "value": self.1.to_json()})
    }
}

/// Records a step dropped (`on_error = "drop"`), by step id.
#[derive(Debug, Default)]
pub struct Dropped {
    counters: std::sync::Mutex<Vec<(String, Arc<AtomicU64>)>>,
}

impl Dropped {
    fn counter(&self, step: &str) -> Arc<AtomicU64> {
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

/// A receiver's counters, for the metrics.
#[derive(Debug, Clone)]
pub enum ReceiverCounters {
    /// A socket source.
    Socket(Arc<crate::receiver::socket::SocketStats>),
    /// A directory source.
    Directory(Arc<crate::receiver::dir::DirStats>),
}

impl ReceiverCounters {
    /// `(records stored, [(rejection reason, count)])`.
    pub fn sample(&self) -> (u64, Vec<(&'static str, u64)>) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        match self {
            ReceiverCounters::Socket(s) => (
                l(&s.lines_stored),
                vec![
                    ("line_too_long", l(&s.lines_too_long)),
                    ("partial_line_discarded", l(&s.partial_lines_discarded)),
                    ("connect_failed", l(&s.connect_failures)),
                ],
            ),
            ReceiverCounters::Directory(d) => (
                l(&d.lines_stored),
                vec![("line_too_long", l(&d.lines_too_long))],
            ),
        }
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
    /// Where each ingest source listens (port 0 resolved).
    pub ingest_addrs: Vec<(String, std::net::SocketAddr)>,
    /// Per-step dropped records.
    pub dropped: Arc<Dropped>,
}

#[derive(Clone)]
enum S {
    Lines(DStream<Text>),
    Records(DStream<Value>),
    Keyed(DStream<(Text, Value)>),
    Counts(DStream<(Text, Num)>),
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
    let mut compiled = Compiled::default();
    let mut streams: Vec<S> = Vec::with_capacity(p.nodes.len());
    for node in &p.nodes {
        let s = match node {
            Node::Source(src) => match &src.kind {
                SourceKind::Generator(g) => {
                    let gen = Arc::new(GeneratorSource::new(g.clone(), ssc.clock()));
                    compiled.generators.push((src.id.clone(), gen.clone()));
                    S::Lines(ssc.source_stream("generator", gen).name(&src.id))
                }
                SourceKind::Socket { address, rate_max } => {
                    let cfg = crate::receiver::socket::SocketConfig {
                        records_per_second_max: *rate_max,
                        ..Default::default()
                    };
                    let (d, stats) = ssc.socket_text_stream_with(&src.id, address, cfg)?;
                    compiled
                        .receivers
                        .push((src.id.clone(), ReceiverCounters::Socket(stats)));
                    lines(d, &src.id)
                }
                SourceKind::Ingest { address, rate_max } => {
                    let mut cfg = crate::ingest::IngestConfig::new(*address);
                    cfg.records_per_second_max = *rate_max;
                    let s = ssc.ingest_stream_with(&src.id, cfg, crate::ingest::payload_utf8)?;
                    tracing::info!(source = %src.id, address = %s.local_addr, "ingest server listening");
                    compiled.ingest_addrs.push((src.id.clone(), s.local_addr));
                    lines(s.stream, &src.id)
                }
                SourceKind::Directory { path } => {
                    let (d, stats) = ssc.text_file_stream_with(
                        &src.id,
                        path,
                        crate::receiver::dir::DirConfig::default(),
                    )?;
                    compiled
                        .receivers
                        .push((src.id.clone(), ReceiverCounters::Directory(stats)));
                    lines(d, &src.id)
                }
            },
            Node::Step(step) => {
                let input = streams[step.input].clone();
                apply(
                    &step.op,
                    &step.name,
                    &step.id,
                    input,
                    ssc,
                    &compiled.dropped,
                )?
            }
        };
        streams.push(s);
    }
    for sink in &p.sinks {
        if let SinkKind::Kv { table } = &sink.kind {
            // Values are stored as text so `weir kv get|scan` shows them as
            // they print (numbers in decimal, JSON compact).
            let pre = format!("kv.{table}.in");
            match &streams[sink.input] {
                S::Counts(d) => d
                    .map(|(k, n)| (k, crate::sink::show(&n)))
                    .name(&pre)
                    .save_to_kv(table)?,
                S::Keyed(d) => d
                    .map(|(k, v)| (k, v.to_string()))
                    .name(&pre)
                    .save_to_kv(table)?,
                _ => unreachable!("validated: a kv sink reads pairs or keyed records"),
            }
            continue;
        }
        match &streams[sink.input] {
            S::Lines(d) => add_sink(d, &sink.kind, data_dir)?,
            S::Records(d) => add_sink(d, &sink.kind, data_dir)?,
            S::Keyed(d) => add_sink(d, &sink.kind, data_dir)?,
            S::Counts(d) => add_sink(d, &sink.kind, data_dir)?,
        }
    }
    Ok(compiled)
}

/// A receiver's `String` lines as `Text` (named after the source).
fn lines(d: DStream<String>, id: &str) -> S {
    S::Lines(d.map(Text::from).name(&format!("{id}.text")))
}

fn add_sink<T: Data + Show + ToJson>(
    d: &DStream<T>,
    kind: &SinkKind,
    data_dir: &Path,
) -> crate::Result<()> {
    match kind {
        SinkKind::Kv { .. } => unreachable!("kv sinks are added by compile"),
        SinkKind::Print { count } => d.print(*count)?,
        SinkKind::TextFiles { prefix, suffix } => {
            let prefix = resolve(data_dir, prefix);
            d.save_as_text_files(&prefix.display().to_string(), suffix)?
        }
        SinkKind::JsonFiles { prefix, suffix } => {
            let prefix = resolve(data_dir, prefix).display().to_string();
            let suffix = suffix.clone();
            d.foreach_batch(move |t, recs| {
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
            })?
        }
    }
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

fn num_of(v: &Value, path: &str, step: &str) -> Num {
    match field(v, path) {
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Num::Int)
            .unwrap_or_else(|| Num::Float(n.as_f64().unwrap_or(f64::NAN))),
        other => panic!(
            "step `{step}`: field `{path}` is not a number (found {}) in record {}; \
             fix the input or filter such records out before this step",
            other.map_or("nothing".to_string(), |v| v.to_string()),
            truncate(&v.to_string())
        ),
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn matcher(p: &Predicate) -> Arc<dyn Fn(&str) -> bool + Send + Sync> {
    match p.clone() {
        Predicate::Contains(s) => Arc::new(move |x| x.contains(s.as_str())),
        Predicate::StartsWith(s) => Arc::new(move |x| x.starts_with(s.as_str())),
        Predicate::EndsWith(s) => Arc::new(move |x| x.ends_with(s.as_str())),
        Predicate::Regex(r) => Arc::new(move |x| r.is_match(x)),
        Predicate::NotEmpty => Arc::new(|x| !x.is_empty()),
    }
}

fn text_map(op: &Op) -> fn(&str) -> Text {
    match op {
        Op::Lowercase => |s| Text::lowercase(s),
        Op::Uppercase => |s| Text::from(s.to_uppercase()),
        _ => |s| Text::from(s.trim()),
    }
}

fn apply(
    op: &Op,
    name: &str,
    id: &str,
    input: S,
    ssc: &StreamingContext,
    dropped: &Dropped,
) -> crate::Result<S> {
    let pre = format!("{name}.in");
    let step = id.to_string();
    let interval = Duration::from_millis(ssc.batch_interval_ms());
    let add = |a: Num, b: Num| a.add(b);
    Ok(match (op, input) {
        (
            Op::Split {
                separator,
                keep_empty,
            },
            S::Lines(d),
        ) => {
            let (sep, keep) = (separator.clone(), *keep_empty);
            S::Lines(
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
                .name(name),
            )
        }
        (Op::Lowercase | Op::Uppercase | Op::Trim, s) => {
            let f = text_map(op);
            match s {
                S::Lines(d) => S::Lines(d.map(move |t| f(&t)).name(name)),
                S::Keyed(d) => S::Keyed(d.map(move |(k, v)| (f(&k), v)).name(name)),
                S::Counts(d) => S::Counts(d.map(move |(k, v)| (f(&k), v)).name(name)),
                S::Records(_) => unreachable!("validated: no text op on JSON records"),
            }
        }
        (
            Op::Filter {
                predicate,
                field: fname,
                invert,
            },
            s,
        ) => {
            let m = matcher(predicate);
            let inv = *invert;
            match (s, fname.clone()) {
                (S::Lines(d), None) => S::Lines(d.filter(move |t| m(t) != inv).name(name)),
                (S::Keyed(d), None) => S::Keyed(d.filter(move |kv| m(&kv.0) != inv).name(name)),
                (S::Counts(d), None) => S::Counts(d.filter(move |kv| m(&kv.0) != inv).name(name)),
                (S::Records(d), Some(f)) => S::Records(
                    d.filter(move |v| field(v, &f).is_some_and(|x| m(&key_text(Some(x)))) != inv)
                        .name(name),
                ),
                (S::Keyed(d), Some(f)) => S::Keyed(
                    d.filter(move |kv| {
                        field(&kv.1, &f).is_some_and(|x| m(&key_text(Some(x)))) != inv
                    })
                    .name(name),
                ),
                _ => unreachable!("validated: filter's field matches its input"),
            }
        }
        (Op::ParseJson { drop_invalid }, S::Lines(d)) => {
            let drop = *drop_invalid;
            let counter = dropped.counter(id);
            S::Records(
                d.flat_map_with(move |line: Text, out| {
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => out(v),
                        Err(_) if drop => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!(
                            "step `{step}`: a line is not JSON ({e}): {}; fix the input, or set \
                         on_error = \"drop\" on this step to skip such lines (they are counted)",
                            truncate(&line)
                        ),
                    }
                })
                .name(name),
            )
        }
        (Op::Select { fields }, S::Records(d)) => {
            let fields = fields.clone();
            S::Records(
                d.map(move |v| {
                    let mut m = serde_json::Map::new();
                    for f in &fields {
                        m.insert(f.clone(), field(&v, f).cloned().unwrap_or(Value::Null));
                    }
                    Value::Object(m)
                })
                .name(name),
            )
        }
        (Op::Rename { fields }, S::Records(d)) => {
            let fields = fields.clone();
            S::Records(
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
                .name(name),
            )
        }
        (Op::KeyBy { field: f }, S::Records(d)) => {
            let f = f.clone();
            S::Keyed(d.map(move |v| (key_text(field(&v, &f)), v)).name(name))
        }
        (Op::CountByKey, s) => S::Counts(ones(s, &pre).reduce_by_key(add).name(name)),
        (Op::SumByKey { field: f }, s) => S::Counts(
            numbers(s, f.clone(), &step, &pre)
                .reduce_by_key(add)
                .name(name),
        ),
        (Op::WindowCount { window, slide }, s) => {
            let slide = if slide.is_zero() { interval } else { *slide };
            S::Counts(
                ones(s, &pre)
                    .reduce_by_key_and_window_inv(
                        add,
                        |a: Num, b: Num| a.sub(b),
                        *window,
                        slide,
                        Some(|kv: &(Text, Num)| kv.1 != Num::Int(0)),
                    )
                    .name(name),
            )
        }
        (
            Op::WindowSum {
                window,
                slide,
                field: f,
            },
            s,
        ) => {
            let slide = if slide.is_zero() { interval } else { *slide };
            S::Counts(
                numbers(s, f.clone(), &step, &pre)
                    .reduce_by_key_and_window(add, *window, slide)
                    .name(name),
            )
        }
        (Op::RunningTotal { field: f }, s) => {
            let pairs = match (&s, f) {
                (S::Lines(_), _) | (S::Keyed(_), None) => ones(s, &pre),
                _ => numbers(s, f.clone(), &step, &pre),
            };
            S::Counts(
                pairs
                    .update_state_by_key(|new: &[Num], old: Option<&Num>| {
                        Some(
                            new.iter()
                                .fold(old.copied().unwrap_or(Num::Int(0)), |a, b| a.add(*b)),
                        )
                    })
                    .name(name),
            )
        }
        (Op::Top { n }, S::Counts(d)) => {
            let n = *n;
            S::Counts(
                d.transform(move |_, mut v: Vec<(Text, Num)>| {
                    v.sort_by(|a, b| {
                        b.1.as_f64()
                            .total_cmp(&a.1.as_f64())
                            .then_with(|| a.0.cmp(&b.0))
                    });
                    v.truncate(n);
                    v
                })
                .name(name),
            )
        }
        _ => unreachable!("validated: every op gets an input kind it accepts"),
    })
}

/// `(key, 1)` for each line or keyed record.
fn ones(s: S, pre: &str) -> DStream<(Text, Num)> {
    match s {
        S::Lines(d) => d.map(|t| (t, Num::Int(1))).name(pre),
        S::Keyed(d) => d.map(|(k, _)| (k, Num::Int(1))).name(pre),
        _ => unreachable!("validated: counted streams are lines or keyed"),
    }
}

/// `(key, number)` from keyed records' field, or counts as they are.
fn numbers(s: S, f: Option<String>, step: &str, pre: &str) -> DStream<(Text, Num)> {
    match (s, f) {
        (S::Keyed(d), Some(f)) => {
            let step = step.to_string();
            d.map(move |(k, v)| {
                let n = num_of(&v, &f, &step);
                (k, n)
            })
            .name(pre)
        }
        (S::Counts(d), None) => d,
        _ => unreachable!("validated: summed streams are keyed with a field, or counts"),
    }
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
