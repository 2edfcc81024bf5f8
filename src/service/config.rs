//! Pipeline files: TOML → a validated [`Pipeline`] (sources, steps, sinks
//! with their record kinds resolved), every mistake reported as a
//! [`ConfigError`] with file, line, column, key, what was expected and a
//! hint. The keys are documented in `docs/pipeline.md`.
//!
//! Limits: a pipeline file is at most [`CONFIG_BYTES_MAX`] bytes and
//! holds at most [`ITEMS_MAX`] sources + steps + sinks.
//! Must never: build streams or touch the disk beyond reading the file
//! (`compile.rs` turns a [`Pipeline`] into DStreams).

// A located error is several strings; it is built once, on the cold path
// of reading a file, so its size does not matter (ServiceError boxes it).
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// Largest accepted pipeline file, in bytes.
pub const CONFIG_BYTES_MAX: usize = 1 << 20;
/// Most sources + steps + sinks in one pipeline.
pub const ITEMS_MAX: usize = 1000;
/// Largest generator rate, in records per second.
pub const GENERATOR_RATE_MAX: u64 = 10_000_000;
/// Most tweet lines per generated record.
pub const LINES_PER_RECORD_MAX: u64 = 10_000;

/// A configuration mistake, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: expected {expected}{found}\n{excerpt}  hint: {hint}", found = found_part(.found))]
pub struct ConfigError {
    /// The pipeline file (or `<embedded demo>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The key (dotted path such as `step[2].window`) the mistake is in.
    pub key: String,
    /// What the key needs.
    pub expected: String,
    /// What was there instead, if that helps.
    pub found: Option<String>,
    /// What to do.
    pub hint: String,
    /// The offending line with a caret under the column.
    pub excerpt: String,
}

fn found_part(found: &Option<String>) -> String {
    found
        .as_ref()
        .map_or_else(String::new, |f| format!(", found {f}"))
}

/// Where errors are reported against: the file name and its text.
struct Src<'a> {
    file: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        expected: impl Into<String>,
        found: Option<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..start].chars().count() + 1;
        let line_text = self.text[line_start..]
            .split('\n')
            .next()
            .unwrap_or("")
            .trim_end_matches('\r');
        let excerpt = format!(
            "  {line:>4} | {line_text}\n       | {}^\n",
            " ".repeat(column - 1)
        );
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.into(),
            expected: expected.into(),
            found,
            hint: hint.into(),
            excerpt,
        }
    }
}

// ---- the raw file, as serde reads it ---------------------------------

/// The keys set in a raw table, with their spans (to refuse keys that do
/// not apply to the table's kind or op).
macro_rules! set_keys {
    ($s:expr; $($f:ident),*) => {{
        let mut v: Vec<(&'static str, Range<usize>)> = Vec::new();
        $( if let Some(x) = &$s.$f { v.push((stringify!($f), x.span())); } )*
        v
    }};
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pipeline: Option<RawPipeline>,
    service: Option<RawService>,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
    #[serde(default)]
    sink: Vec<Spanned<RawSink>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Ms(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    batch_interval: Option<Spanned<RawDuration>>,
    partitions: Option<Spanned<i64>>,
    parallelism: Option<Spanned<i64>>,
    batch_records_max: Option<Spanned<i64>>,
    adaptive_batches: Option<Spanned<bool>>,
    data_dir: Option<Spanned<String>>,
    stop_timeout: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    http_address: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    rate: Option<Spanned<i64>>,
    count: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    lines_per_record: Option<Spanned<i64>>,
    separator: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    rate_max: Option<Spanned<i64>>,
    address: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

impl RawSource {
    fn set_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        set_keys!(self; rate, count, seed, lines_per_record, separator, format, rate_max, address, path)
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFields {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    op: Option<Spanned<String>>,
    separator: Option<Spanned<String>>,
    keep_empty: Option<Spanned<bool>>,
    contains: Option<Spanned<String>>,
    starts_with: Option<Spanned<String>>,
    ends_with: Option<Spanned<String>>,
    regex: Option<Spanned<String>>,
    not_empty: Option<Spanned<bool>>,
    invert: Option<Spanned<bool>>,
    field: Option<Spanned<String>>,
    fields: Option<Spanned<RawFields>>,
    on_error: Option<Spanned<String>>,
    window: Option<Spanned<RawDuration>>,
    slide: Option<Spanned<RawDuration>>,
    n: Option<Spanned<i64>>,
}

impl RawStep {
    fn set_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        set_keys!(self; separator,
            keep_empty,
            contains,
            starts_with,
            ends_with,
            regex,
            not_empty,
            invert,
            field,
            fields,
            on_error,
            window,
            slide,
            n)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSink {
    from: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    count: Option<Spanned<i64>>,
    prefix: Option<Spanned<String>>,
    suffix: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
}

impl RawSink {
    fn set_keys(&self) -> Vec<(&'static str, Range<usize>)> {
        set_keys!(self; count, prefix, suffix, table)
    }
}

// ---- the validated pipeline -------------------------------------------

/// What records a stream carries. Steps are checked against these kinds
/// when the file is read, so a mismatch is a configuration error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text lines.
    Lines,
    /// JSON values (from `parse_json`).
    Records,
    /// `(key, JSON value)` pairs (from `key_by`).
    Keyed,
    /// `(key, number)` pairs (counts, sums, totals).
    Counts,
}

impl Kind {
    /// How the kind is named in messages and `weir check`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Lines => "text lines",
            Kind::Records => "JSON records",
            Kind::Keyed => "keyed JSON records",
            Kind::Counts => "(key, number) pairs",
        }
    }
}

/// Pipeline-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Batch interval (whole milliseconds).
    pub batch_interval: Duration,
    /// Shuffle partitions (None: the engine's default).
    pub partitions: Option<usize>,
    /// Worker threads (None: available cores).
    pub parallelism: Option<usize>,
    /// Cap of records per source per batch.
    pub batch_records_max: Option<u64>,
    /// Whether batches are sized to what fits in an interval (default on).
    pub adaptive_batches: bool,
    /// The data directory, resolved against the pipeline file's directory.
    pub data_dir: Option<PathBuf>,
    /// Longest a graceful stop keeps draining the backlog.
    pub stop_timeout: Duration,
    /// Address of the HTTP endpoint (`None`: off).
    pub http_address: Option<std::net::SocketAddr>,
}

/// Default HTTP address (loopback only).
pub const HTTP_ADDRESS_DEFAULT: &str = "127.0.0.1:9464";
/// Default for `stop_timeout`: well inside systemd's 90 s stop timeout.
pub const STOP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);

/// A source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDef {
    /// Its id (the stream's name: batch ranges are recorded under it).
    pub id: String,
    /// What it is.
    pub kind: SourceKind,
}

/// The kinds of source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Built-in tweet-like lines (see `generator.rs`).
    Generator(super::generator::GeneratorConfig),
    /// Lines read from a TCP server (`socket_text_stream`).
    Socket {
        /// `host:port` of the server (loopback).
        address: String,
        /// Most lines per second stored.
        rate_max: Option<u64>,
    },
    /// The ingest server (`ingest_stream`, fed by `weir feed`).
    Ingest {
        /// Where it listens (loopback; port 0: any free port).
        address: std::net::SocketAddr,
        /// Most records per second stored.
        rate_max: Option<u64>,
    },
    /// Lines of the files appearing in a directory (`text_file_stream`).
    Directory {
        /// The directory (resolved against the pipeline file's directory).
        path: PathBuf,
    },
}

/// A transformation step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDef {
    /// Its id (unique; other steps refer to it in `from`).
    pub id: String,
    /// The operator name (`name`, else the id): stateful steps keep
    /// their state under it.
    pub name: String,
    /// Index of its input in [`Pipeline::nodes`].
    pub input: usize,
    /// What it does.
    pub op: Op,
    /// The kind it produces.
    pub kind: Kind,
}

/// How `filter` tests a record.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// Contains the substring.
    Contains(String),
    /// Starts with.
    StartsWith(String),
    /// Ends with.
    EndsWith(String),
    /// Matches the regular expression.
    Regex(regex::Regex),
    /// Not empty (after nothing: an all-space line is not empty).
    NotEmpty,
}

impl PartialEq for Predicate {
    fn eq(&self, other: &Self) -> bool {
        use Predicate::*;
        match (self, other) {
            (Contains(a), Contains(b)) | (StartsWith(a), StartsWith(b)) => a == b,
            (EndsWith(a), EndsWith(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            (NotEmpty, NotEmpty) => true,
            _ => false,
        }
    }
}

/// A step's operation, with its parameters checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Split lines on a separator (None: whitespace); pieces trimmed,
    /// empty pieces dropped unless `keep_empty`.
    Split {
        /// The separator.
        separator: Option<String>,
        /// Keep empty pieces.
        keep_empty: bool,
    },
    /// Lowercase lines (or keys).
    Lowercase,
    /// Uppercase lines (or keys).
    Uppercase,
    /// Trim surrounding whitespace.
    Trim,
    /// Keep matching records.
    Filter {
        /// The test.
        predicate: Predicate,
        /// Which field of a JSON record is tested (None: the line or key).
        field: Option<String>,
        /// Keep the records that do *not* match.
        invert: bool,
    },
    /// Parse each line as JSON.
    ParseJson {
        /// Drop lines that are not JSON (counted in the metrics) instead
        /// of failing the batch.
        drop_invalid: bool,
    },
    /// Keep only these fields (dotted paths allowed).
    Select {
        /// The fields.
        fields: Vec<String>,
    },
    /// Rename fields (old → new).
    Rename {
        /// The renames.
        fields: BTreeMap<String, String>,
    },
    /// Key records by a field's value.
    KeyBy {
        /// The field (dotted path).
        field: String,
    },
    /// Count records per key in each batch.
    CountByKey,
    /// Sum a field (or the pair's number) per key in each batch.
    SumByKey {
        /// The field of a keyed record (None for counts).
        field: Option<String>,
    },
    /// Count per key over a sliding window (stateful).
    WindowCount {
        /// Window length.
        window: Duration,
        /// Slide.
        slide: Duration,
    },
    /// Sum per key over a sliding window (stateful).
    WindowSum {
        /// Window length.
        window: Duration,
        /// Slide.
        slide: Duration,
        /// The field of a keyed record (None for counts).
        field: Option<String>,
    },
    /// Running count or sum per key since the start (stateful).
    RunningTotal {
        /// The field of a keyed record to sum (None: count, or sum counts).
        field: Option<String>,
    },
    /// The `n` largest pairs of each batch (by number, then key).
    Top {
        /// How many.
        n: usize,
    },
}

impl Op {
    /// Whether the step keeps state across batches.
    pub fn stateful(&self) -> bool {
        matches!(
            self,
            Op::WindowCount { .. } | Op::WindowSum { .. } | Op::RunningTotal { .. }
        )
    }
}

/// A sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkDef {
    /// Index of its input in [`Pipeline::nodes`].
    pub input: usize,
    /// What it writes.
    pub kind: SinkKind,
}

/// The kinds of sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// Print the first `count` records of each batch.
    Print {
        /// How many.
        count: usize,
    },
    /// One text file per batch, `prefix-<ms>.suffix`.
    TextFiles {
        /// Path prefix (resolved against the data directory).
        prefix: PathBuf,
        /// File suffix.
        suffix: String,
    },
    /// Upserts `(key, value)` into a transactional key-value table
    /// (values stored as text: numbers in decimal, JSON compact).
    Kv {
        /// The table's name.
        table: String,
    },
    /// One JSON-lines file per batch.
    JsonFiles {
        /// Path prefix (resolved against the data directory).
        prefix: PathBuf,
        /// File suffix.
        suffix: String,
    },
}

/// A node of the pipeline graph: a source or a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A source.
    Source(SourceDef),
    /// A step.
    Step(StepDef),
}

impl Node {
    /// Its id.
    pub fn id(&self) -> &str {
        match self {
            Node::Source(s) => &s.id,
            Node::Step(s) => &s.id,
        }
    }
    /// The kind of records it produces.
    pub fn kind(&self) -> Kind {
        match self {
            Node::Source(_) => Kind::Lines,
            Node::Step(s) => s.kind,
        }
    }
}

/// A validated pipeline: nodes in declaration order (sources first, then
/// steps; every input precedes its user), then the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Where it was read from.
    pub file: String,
    /// Settings.
    pub settings: Settings,
    /// Sources, then steps.
    pub nodes: Vec<Node>,
    /// Sinks, in declaration order (the order outputs run).
    pub sinks: Vec<SinkDef>,
}

/// Kinds of source this build knows, and the ones it refuses.
const SOURCE_KINDS: &[&str] = &["generator", "socket", "ingest", "directory"];
const OPS: &[&str] = &[
    "split",
    "lowercase",
    "uppercase",
    "trim",
    "filter",
    "parse_json",
    "select",
    "rename",
    "key_by",
    "count_by_key",
    "sum_by_key",
    "window_count",
    "window_sum",
    "running_total",
    "top",
];
const SINK_KINDS: &[&str] = &["print", "text_files", "json_files", "kv"];

/// Reads and validates the pipeline file at `path`.
pub fn load(path: &Path) -> Result<Pipeline, super::ServiceError> {
    let meta = std::fs::metadata(path).map_err(|e| super::ServiceError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.len() > CONFIG_BYTES_MAX as u64 {
        return Err(super::ServiceError::Usage(format!(
            "{} is {} bytes; a pipeline file may be at most {CONFIG_BYTES_MAX} bytes",
            path.display(),
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| super::ServiceError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(parse(&path.display().to_string(), &text, base)?)
}

/// Parses and validates pipeline text. `file` names it in errors; relative
/// paths in it (such as `data_dir`) are resolved against `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Pipeline, ConfigError> {
    let src = Src { file, text };
    if text.len() > CONFIG_BYTES_MAX {
        return Err(src.err(
            0..0,
            "(file)",
            format!("at most {CONFIG_BYTES_MAX} bytes"),
            Some(format!("{} bytes", text.len())),
            "split the pipeline or shorten it",
        ));
    }
    let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(&src, &e))?;
    Validator {
        src: &src,
        base,
        interval_ms: std::cell::Cell::new(1000),
    }
    .validate(raw)
}

/// Turns toml's error into ours, suggesting the nearest key for a typo.
fn toml_error(src: &Src, e: &toml::de::Error) -> ConfigError {
    let span = e.span().unwrap_or(0..0);
    let msg = e.message().trim().to_string();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let allowed: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        // TOML allows an empty quoted key (`'' = 1`); name it visibly (the
        // fuzzer found the empty name).
        let key = if key.is_empty() { "''" } else { key };
        let hint = match nearest(key, &allowed) {
            Some(n) => format!("did you mean `{n}`? see docs/pipeline.md for every key"),
            None => "remove it; docs/pipeline.md lists every key".to_string(),
        };
        return src.err(
            span,
            key,
            format!("one of {}", allowed.join(", ")),
            Some(format!("unknown key `{key}`")),
            hint,
        );
    }
    src.err(
        span,
        "(syntax)",
        "valid TOML with the keys of docs/pipeline.md",
        Some(msg),
        "fix the TOML at this position (strings need quotes, tables [..], lists [[..]])",
    )
}

/// The allowed word closest to `word` (edit distance at most 2).
fn nearest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    allowed
        .iter()
        .map(|a| (dist(word, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, a)| a)
}

struct Validator<'a> {
    src: &'a Src<'a>,
    base: &'a Path,
    /// The batch interval, set once the settings are read (windows are
    /// checked against it).
    interval_ms: std::cell::Cell<u64>,
}

impl Validator<'_> {
    fn duration(
        &self,
        key: &str,
        v: &Spanned<RawDuration>,
        hint: &str,
    ) -> Result<Duration, ConfigError> {
        let bad = |found: String| {
            self.src.err(
                v.span(),
                key,
                "a duration such as \"500ms\", \"1s\", \"2m\" or a whole number of milliseconds",
                Some(found),
                hint,
            )
        };
        let ms = match v.get_ref() {
            RawDuration::Ms(n) if *n > 0 => *n as u64,
            RawDuration::Ms(n) => return Err(bad(n.to_string())),
            RawDuration::Text(s) => {
                let t = s.trim();
                let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
                let (num, unit) = t.split_at(split);
                let n: u64 = num.parse().map_err(|_| bad(format!("\"{s}\"")))?;
                let mult = match unit.trim() {
                    "ms" => 1,
                    "s" => 1000,
                    "m" | "min" => 60_000,
                    "h" => 3_600_000,
                    _ => return Err(bad(format!("\"{s}\""))),
                };
                if n == 0 {
                    return Err(bad(format!("\"{s}\"")));
                }
                n.checked_mul(mult).ok_or_else(|| bad(format!("\"{s}\"")))?
            }
        };
        Ok(Duration::from_millis(ms))
    }

    fn positive(
        &self,
        key: &str,
        v: &Spanned<i64>,
        max: u64,
        hint: &str,
    ) -> Result<u64, ConfigError> {
        let n = *v.get_ref();
        if n < 1 || n as u64 > max {
            return Err(self.src.err(
                v.span(),
                key,
                format!("a whole number from 1 to {max}"),
                Some(n.to_string()),
                hint,
            ));
        }
        Ok(n as u64)
    }

    /// Refuses keys that do not apply to `what` (a kind or an op).
    fn only_keys(
        &self,
        item: &str,
        what: &str,
        set: &[(&'static str, Range<usize>)],
        allowed: &[&str],
    ) -> Result<(), ConfigError> {
        for (k, span) in set {
            if !allowed.contains(k) {
                let takes = if allowed.is_empty() {
                    "no further keys".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(self.src.err(
                    span.clone(),
                    format!("{item}.{k}"),
                    format!("only keys that apply to {what} ({takes})"),
                    Some(format!("`{k}`")),
                    format!(
                        "remove `{k}`, or change the kind; docs/pipeline.md says what each takes"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self, raw: RawFile) -> Result<Pipeline, ConfigError> {
        let settings = self.settings(raw.pipeline.as_ref(), raw.service.as_ref())?;
        self.interval_ms
            .set(settings.batch_interval.as_millis() as u64);
        let total = raw.source.len() + raw.step.len() + raw.sink.len();
        if total > ITEMS_MAX {
            return Err(self.src.err(
                0..0,
                "(file)",
                format!("at most {ITEMS_MAX} sources, steps and sinks"),
                Some(total.to_string()),
                "split the pipeline into several services",
            ));
        }
        if raw.source.is_empty() {
            return Err(self.src.err(
                0..0,
                "source",
                "at least one [[source]] table",
                None,
                "add e.g. [[source]] id = \"tweets\" kind = \"generator\"",
            ));
        }
        let mut nodes: Vec<Node> = Vec::new();
        let mut ids: HashSet<String> = HashSet::new();
        for (i, s) in raw.source.iter().enumerate() {
            let item = format!("source[{i}]");
            let src = self.source(&item, s)?;
            self.unique_id(&mut ids, &item, &src.id, s.get_ref().id.as_ref(), s.span())?;
            nodes.push(Node::Source(src));
        }
        let step_starts: Vec<usize> = raw.step.iter().map(|s| s.span().start).collect();
        for (i, s) in raw.step.iter().enumerate() {
            let item = format!("step[{i}]");
            let step = self.step(&item, i, s, &nodes)?;
            self.unique_id(&mut ids, &item, &step.id, s.get_ref().id.as_ref(), s.span())?;
            if step.name != step.id {
                let span = s.get_ref().name.as_ref().map_or(s.span(), |n| n.span());
                self.unique_id(&mut ids, &item, &step.name, None, span)?;
            }
            nodes.push(Node::Step(step));
        }
        if raw.sink.is_empty() {
            return Err(self.src.err(
                0..0,
                "sink",
                "at least one [[sink]] table",
                None,
                "nothing runs without an output: add e.g. [[sink]] kind = \"print\"",
            ));
        }
        let mut sinks = Vec::new();
        for (i, s) in raw.sink.iter().enumerate() {
            sinks.push(self.sink(
                &format!("sink[{i}]"),
                s,
                &nodes,
                raw.source.len(),
                &step_starts,
            )?);
        }
        Ok(Pipeline {
            file: self.src.file.to_string(),
            settings,
            nodes,
            sinks,
        })
    }

    fn unique_id(
        &self,
        ids: &mut HashSet<String>,
        item: &str,
        id: &str,
        at: Option<&Spanned<String>>,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        let span = at.map_or(span, |s| s.span());
        if id.is_empty() || id.contains(['/', '\\', '.', '#', ' ']) || id.starts_with('-') {
            return Err(self.src.err(
                span,
                format!("{item}.id"),
                "a plain name: letters, digits, `_` or `-`, not starting with `-`",
                Some(format!("\"{id}\"")),
                "it names the operator's state and, for a source, its log directory",
            ));
        }
        if !ids.insert(id.to_string()) {
            return Err(self.src.err(
                span,
                format!("{item}.id"),
                "an id used by no other source, step or step name",
                Some(format!("\"{id}\" a second time")),
                "give this one another id",
            ));
        }
        Ok(())
    }

    fn settings(
        &self,
        p: Option<&RawPipeline>,
        svc: Option<&RawService>,
    ) -> Result<Settings, ConfigError> {
        let mut s = Settings {
            batch_interval: Duration::from_secs(1),
            partitions: None,
            parallelism: None,
            batch_records_max: None,
            adaptive_batches: true,
            data_dir: None,
            stop_timeout: STOP_TIMEOUT_DEFAULT,
            http_address: HTTP_ADDRESS_DEFAULT.parse().ok(),
        };
        if let Some(p) = p {
            if let Some(v) = &p.batch_interval {
                s.batch_interval = self.duration(
                    "pipeline.batch_interval",
                    v,
                    "every batch covers this much time; 1s is a good start",
                )?;
            }
            if let Some(v) = &p.partitions {
                s.partitions = Some(self.positive(
                    "pipeline.partitions",
                    v,
                    crate::context::PARTITIONS_MAX as u64,
                    "shuffle partitions of keyed steps; the default is 4",
                )? as usize);
            }
            if let Some(v) = &p.parallelism {
                s.parallelism = Some(self.positive(
                    "pipeline.parallelism",
                    v,
                    crate::context::PARALLELISM_MAX as u64,
                    "worker threads; leave it out to use every core",
                )? as usize);
            }
            if let Some(v) = &p.batch_records_max {
                s.batch_records_max = Some(self.positive(
                    "pipeline.batch_records_max",
                    v,
                    u64::MAX >> 1,
                    "caps the records per source in one batch (bounds memory after downtime)",
                )?);
            }
            if let Some(v) = &p.adaptive_batches {
                s.adaptive_batches = *v.get_ref();
            }
            if let Some(v) = &p.data_dir {
                if v.get_ref().trim().is_empty() {
                    return Err(self.src.err(
                        v.span(),
                        "pipeline.data_dir",
                        "a directory path",
                        Some("\"\"".into()),
                        "leave the key out to use ./weir-data or --data-dir",
                    ));
                }
                s.data_dir = Some(self.base.join(v.get_ref()));
            }
            if let Some(v) = &p.stop_timeout {
                s.stop_timeout = self.duration(
                    "pipeline.stop_timeout",
                    v,
                    "how long a stop may keep draining the backlog; keep it well under systemd's 90 s",
                )?;
            }
        }
        if let Some(a) = svc.and_then(|svc| svc.http_address.as_ref()) {
            let text = a.get_ref().trim();
            if text == "off" {
                s.http_address = None;
            } else {
                let addr: std::net::SocketAddr = text.parse().map_err(|_| {
                    self.src.err(
                        a.span(),
                        "service.http_address",
                        "an address such as \"127.0.0.1:9464\", or \"off\"",
                        Some(format!("\"{text}\"")),
                        "give an IP address and port (no host names)",
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(self.src.err(
                        a.span(),
                        "service.http_address",
                        "a loopback address (127.0.0.1 or [::1])",
                        Some(format!("\"{text}\"")),
                        "the endpoint has no authentication; put a reverse proxy in front to expose it",
                    ));
                }
                s.http_address = Some(addr);
            }
        }
        Ok(s)
    }

    fn required<'s>(
        &self,
        v: &'s Option<Spanned<String>>,
        item: &str,
        key: &str,
        whole: Range<usize>,
        expected: &str,
        hint: &str,
    ) -> Result<&'s Spanned<String>, ConfigError> {
        v.as_ref().ok_or_else(|| {
            self.src.err(
                whole,
                format!("{item}.{key}"),
                expected.to_string(),
                Some("nothing".into()),
                hint.to_string(),
            )
        })
    }

    fn source(&self, item: &str, s: &Spanned<RawSource>) -> Result<SourceDef, ConfigError> {
        let r = s.get_ref();
        let id = self.required(
            &r.id,
            item,
            "id",
            s.span(),
            "an `id`",
            "add id = \"...\"; batches record their input under it, so keep it stable",
        )?;
        let kind = self.required(
            &r.kind,
            item,
            "kind",
            s.span(),
            "a `kind`",
            "add kind = \"generator\"",
        )?;
        let set = r.set_keys();
        match kind.get_ref().as_str() {
            "generator" => {
                self.only_keys(
                    item,
                    "kind = \"generator\"",
                    &set,
                    &[
                        "rate",
                        "count",
                        "seed",
                        "lines_per_record",
                        "separator",
                        "format",
                    ],
                )?;
                let mut g = super::generator::GeneratorConfig::default();
                if let Some(v) = &r.rate {
                    g.records_per_second = self.positive(
                        &format!("{item}.rate"),
                        v,
                        GENERATOR_RATE_MAX,
                        "records per second the generator makes available",
                    )?;
                }
                if let Some(v) = &r.count {
                    g.count = Some(self.positive(
                        &format!("{item}.count"),
                        v,
                        u64::MAX >> 1,
                        "the generator stops after this many records; leave it out for no end",
                    )?);
                }
                if let Some(v) = &r.seed {
                    g.seed = *v.get_ref() as u64;
                }
                if let Some(v) = &r.lines_per_record {
                    g.lines_per_record = self.positive(
                        &format!("{item}.lines_per_record"),
                        v,
                        LINES_PER_RECORD_MAX,
                        "tweet lines joined into one record",
                    )?;
                }
                if let Some(v) = &r.separator {
                    g.separator = v.get_ref().clone();
                }
                if let Some(v) = &r.format {
                    g.json = match v.get_ref().as_str() {
                        "text" => false,
                        "json" => true,
                        other => return Err(self.src.err(
                            v.span(),
                            format!("{item}.format"),
                            "\"text\" or \"json\"",
                            Some(format!("\"{other}\"")),
                            "\"json\" makes one JSON object per record (id, user, text, hashtags)",
                        )),
                    };
                }
                Ok(SourceDef {
                    id: id.get_ref().clone(),
                    kind: SourceKind::Generator(g),
                })
            }
            k @ ("socket" | "ingest") => {
                self.only_keys(
                    item,
                    &format!("kind = \"{k}\""),
                    &set,
                    &["address", "rate_max"],
                )?;
                let rate_max = match &r.rate_max {
                    Some(v) => Some(self.positive(
                        &format!("{item}.rate_max"),
                        v,
                        GENERATOR_RATE_MAX,
                        "the most records per second stored; producers are slowed beyond it",
                    )?),
                    None => None,
                };
                let a = self.required(
                    &r.address,
                    item,
                    "address",
                    s.span(),
                    if k == "socket" {
                        "the server's address, e.g. \"127.0.0.1:9999\""
                    } else {
                        "where to listen, e.g. \"127.0.0.1:7070\""
                    },
                    "add address = \"127.0.0.1:PORT\"",
                )?;
                let text = a.get_ref().trim();
                let addr = text
                    .strip_prefix("localhost:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
                    .or_else(|| text.parse::<std::net::SocketAddr>().ok());
                let addr = match addr {
                    Some(x) if x.ip().is_loopback() => x,
                    other => {
                        return Err(self.src.err(
                            a.span(),
                            format!("{item}.address"),
                            "a loopback address with a port: \"127.0.0.1:PORT\", \"[::1]:PORT\" or \"localhost:PORT\"",
                            Some(format!("\"{text}\"")),
                            if other.is_some() {
                                "weir talks only to this machine; reach others through a local relay"
                            } else {
                                "give an IP address (or localhost) and a port"
                            },
                        ))
                    }
                };
                if k == "socket" && addr.port() == 0 {
                    return Err(self.src.err(
                        a.span(),
                        format!("{item}.address"),
                        "the server's port (not 0)",
                        Some(format!("\"{text}\"")),
                        "a socket source connects to a server that listens on that port",
                    ));
                }
                let kind = if k == "socket" {
                    SourceKind::Socket {
                        address: addr.to_string(),
                        rate_max,
                    }
                } else {
                    SourceKind::Ingest {
                        address: addr,
                        rate_max,
                    }
                };
                Ok(SourceDef {
                    id: id.get_ref().clone(),
                    kind,
                })
            }
            "directory" => {
                self.only_keys(item, "kind = \"directory\"", &set, &["path"])?;
                let p = self.required(
                    &r.path,
                    item,
                    "path",
                    s.span(),
                    "the directory to watch",
                    "add path = \"/var/spool/weir/in\" (relative paths are from this file's directory)",
                )?;
                if p.get_ref().trim().is_empty() {
                    return Err(self.src.err(
                        p.span(),
                        format!("{item}.path"),
                        "a directory path",
                        Some("\"\"".into()),
                        "give the directory new files appear in",
                    ));
                }
                Ok(SourceDef {
                    id: id.get_ref().clone(),
                    kind: SourceKind::Directory {
                        path: self.base.join(p.get_ref()),
                    },
                })
            }
            k => Err(self.src.err(
                kind.span(),
                format!("{item}.kind"),
                format!("one of {}", SOURCE_KINDS.join(", ")),
                Some(format!("\"{k}\"")),
                nearest(k, SOURCE_KINDS).map_or("see docs/pipeline.md".into(), |n| {
                    format!("did you mean \"{n}\"?")
                }),
            )),
        }
    }

    fn input_of(
        &self,
        item: &str,
        from: Option<&Spanned<String>>,
        whole: Range<usize>,
        nodes: &[Node],
        default: Option<usize>,
    ) -> Result<usize, ConfigError> {
        match from {
            Some(f) => nodes
                .iter()
                .position(|n| n.id() == f.get_ref())
                .ok_or_else(|| {
                    let ids: Vec<&str> = nodes.iter().map(Node::id).collect();
                    self.src.err(
                        f.span(),
                        format!("{item}.from"),
                        format!("the id of a source or an earlier step ({})", ids.join(", ")),
                        Some(format!("\"{}\"", f.get_ref())),
                        nearest(f.get_ref(), &ids).map_or_else(
                            || "steps can only read what is declared above them".to_string(),
                            |n| format!("did you mean \"{n}\"?"),
                        ),
                    )
                }),
            None if default.is_some() => Ok(default.unwrap_or(0)),
            None => Err(self.src.err(
                whole,
                format!("{item}.from"),
                "`from`, the id of the stream it reads",
                Some("nothing".into()),
                "add from = \"<id>\" (it defaults to the [[step]] just above, or to the only source)",
            )),
        }
    }

    fn step(
        &self,
        item: &str,
        index: usize,
        s: &Spanned<RawStep>,
        nodes: &[Node],
    ) -> Result<StepDef, ConfigError> {
        let r = s.get_ref();
        let op_s = self.required(
            &r.op,
            item,
            "op",
            s.span(),
            "an `op`",
            &format!("add op = \"...\", one of {}", OPS.join(", ")),
        )?;
        let default = match nodes.last() {
            Some(Node::Step(_)) => Some(nodes.len() - 1),
            _ if nodes.len() == 1 => Some(0),
            _ => None,
        };
        let input = self.input_of(item, r.from.as_ref(), s.span(), nodes, default)?;
        let in_kind = nodes[input].kind();
        let set = r.set_keys();
        let op_name = op_s.get_ref().as_str();
        let what = format!("op = \"{op_name}\"");
        let needs = |kinds: &[Kind], hint: &str| -> Result<(), ConfigError> {
            if kinds.contains(&in_kind) {
                return Ok(());
            }
            let labels: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
            Err(self.src.err(
                op_s.span(),
                format!("{item}.op"),
                format!("an input of {} for {what}", labels.join(" or ")),
                Some(format!("{} from `{}`", in_kind.label(), nodes[input].id())),
                hint.to_string(),
            ))
        };
        let str_of = |v: &Option<Spanned<String>>| v.as_ref().map(|x| x.get_ref().clone());
        let window = |this: &Self| -> Result<(Duration, Duration), ConfigError> {
            let w = r.window.as_ref().ok_or_else(|| {
                this.src.err(
                    s.span(),
                    format!("{item}.window"),
                    "a window length such as \"30s\"",
                    Some("nothing".into()),
                    "add window = \"...\" (a multiple of the batch interval)",
                )
            })?;
            let wd = this.duration(
                &format!("{item}.window"),
                w,
                "a multiple of the batch interval",
            )?;
            let sd = match &r.slide {
                Some(v) => this.duration(
                    &format!("{item}.slide"),
                    v,
                    "a multiple of the batch interval",
                )?,
                None => Duration::ZERO,
            };
            Ok((wd, sd))
        };
        let (op, kind) = match op_name {
            "split" => {
                self.only_keys(item, &what, &set, &["separator", "keep_empty"])?;
                needs(&[Kind::Lines], "split works on text lines")?;
                if let Some(sep) = &r.separator {
                    if sep.get_ref().is_empty() {
                        return Err(self.src.err(
                            sep.span(),
                            format!("{item}.separator"),
                            "a non-empty separator",
                            Some("\"\"".into()),
                            "leave `separator` out to split on whitespace",
                        ));
                    }
                }
                (
                    Op::Split {
                        separator: str_of(&r.separator),
                        keep_empty: r.keep_empty.as_ref().is_some_and(|b| *b.get_ref()),
                    },
                    Kind::Lines,
                )
            }
            "lowercase" | "uppercase" | "trim" => {
                self.only_keys(item, &what, &set, &[])?;
                needs(
                    &[Kind::Lines, Kind::Keyed, Kind::Counts],
                    "it changes text lines, or the keys of pairs",
                )?;
                let op = match op_name {
                    "lowercase" => Op::Lowercase,
                    "uppercase" => Op::Uppercase,
                    _ => Op::Trim,
                };
                (op, in_kind)
            }
            "filter" => {
                self.only_keys(
                    item,
                    &what,
                    &set,
                    &[
                        "contains",
                        "starts_with",
                        "ends_with",
                        "regex",
                        "not_empty",
                        "field",
                        "invert",
                    ],
                )?;
                let mut preds = Vec::new();
                if let Some(v) = &r.contains {
                    preds.push((v.span(), Predicate::Contains(v.get_ref().clone())));
                }
                if let Some(v) = &r.starts_with {
                    preds.push((v.span(), Predicate::StartsWith(v.get_ref().clone())));
                }
                if let Some(v) = &r.ends_with {
                    preds.push((v.span(), Predicate::EndsWith(v.get_ref().clone())));
                }
                if let Some(v) = &r.regex {
                    let re = regex::Regex::new(v.get_ref()).map_err(|e| {
                        self.src.err(
                            v.span(),
                            format!("{item}.regex"),
                            "a regular expression (Rust regex syntax)",
                            Some(e.to_string().lines().last().unwrap_or("invalid").trim().to_string()),
                            "check brackets and escapes; in TOML, '...' strings need no backslash doubling",
                        )
                    })?;
                    preds.push((v.span(), Predicate::Regex(re)));
                }
                if let Some(v) = &r.not_empty {
                    if !*v.get_ref() {
                        return Err(self.src.err(
                            v.span(),
                            format!("{item}.not_empty"),
                            "true",
                            Some("false".into()),
                            "leave the step out to keep everything",
                        ));
                    }
                    preds.push((v.span(), Predicate::NotEmpty));
                }
                if preds.len() != 1 {
                    let span = preds.get(1).map_or(s.span(), |p| p.0.clone());
                    return Err(self.src.err(
                        span,
                        item.to_string(),
                        "exactly one of contains, starts_with, ends_with, regex, not_empty",
                        Some(format!("{}", preds.len())),
                        "chain two filter steps to combine tests",
                    ));
                }
                if r.field.is_some() {
                    needs(&[Kind::Records, Kind::Keyed], "`field` picks a field of JSON records; without it lines or keys are tested")?;
                } else {
                    needs(
                        &[Kind::Lines, Kind::Keyed, Kind::Counts],
                        "give `field` to test a field of JSON records",
                    )?;
                }
                let predicate = preds.pop().map(|p| p.1).unwrap_or(Predicate::NotEmpty);
                (
                    Op::Filter {
                        predicate,
                        field: str_of(&r.field),
                        invert: r.invert.as_ref().is_some_and(|b| *b.get_ref()),
                    },
                    in_kind,
                )
            }
            "parse_json" => {
                self.only_keys(item, &what, &set, &["on_error"])?;
                needs(&[Kind::Lines], "parse_json reads text lines")?;
                let drop_invalid = match &r.on_error {
                    None => false,
                    Some(v) => match v.get_ref().as_str() {
                        "fail" => false,
                        "drop" => true,
                        other => {
                            return Err(self.src.err(
                                v.span(),
                                format!("{item}.on_error"),
                                "\"fail\" or \"drop\"",
                                Some(format!("\"{other}\"")),
                                "\"fail\" stops the batch (it is retried, nothing is skipped); \"drop\" skips and counts bad lines",
                            ))
                        }
                    },
                };
                (Op::ParseJson { drop_invalid }, Kind::Records)
            }
            "select" | "rename" => {
                self.only_keys(item, &what, &set, &["fields"])?;
                needs(
                    &[Kind::Records],
                    "parse the lines with op = \"parse_json\" first",
                )?;
                let f = r.fields.as_ref().ok_or_else(|| {
                    self.src.err(
                        s.span(),
                        format!("{item}.fields"),
                        if op_name == "select" {
                            "fields = [\"a\", \"b.c\"]"
                        } else {
                            "fields = { old = \"new\" }"
                        },
                        Some("nothing".into()),
                        "add `fields`",
                    )
                })?;
                match (op_name, f.get_ref()) {
                    ("select", RawFields::List(l)) if !l.is_empty() => {
                        (Op::Select { fields: l.clone() }, Kind::Records)
                    }
                    ("rename", RawFields::Map(m)) if !m.is_empty() => {
                        (Op::Rename { fields: m.clone() }, Kind::Records)
                    }
                    _ => {
                        return Err(self.src.err(
                            f.span(),
                            format!("{item}.fields"),
                            if op_name == "select" {
                                "a non-empty list of field names, e.g. [\"user\", \"text\"]"
                            } else {
                                "a non-empty table old = \"new\", e.g. { usr = \"user\" }"
                            },
                            None,
                            "dotted paths such as \"user.name\" reach into nested objects",
                        ))
                    }
                }
            }
            "key_by" => {
                self.only_keys(item, &what, &set, &["field"])?;
                needs(
                    &[Kind::Records],
                    "parse the lines with op = \"parse_json\" first",
                )?;
                let f = self.required(
                    &r.field,
                    item,
                    "field",
                    s.span(),
                    "the field to key by",
                    "add field = \"user\"",
                )?;
                (
                    Op::KeyBy {
                        field: f.get_ref().clone(),
                    },
                    Kind::Keyed,
                )
            }
            "count_by_key" => {
                self.only_keys(item, &what, &set, &[])?;
                needs(
                    &[Kind::Lines, Kind::Keyed],
                    "counts lines (each line is its key) or keyed records",
                )?;
                (Op::CountByKey, Kind::Counts)
            }
            "sum_by_key" | "running_total" | "window_sum" | "window_count" => {
                let mut keys = vec!["field"];
                if op_name.starts_with("window") {
                    keys.extend(["window", "slide"]);
                }
                if op_name == "window_count" {
                    keys.retain(|k| *k != "field");
                }
                self.only_keys(item, &what, &set, &keys)?;
                let field = str_of(&r.field);
                match (op_name, in_kind, &field) {
                    ("window_count", _, _) => {
                        needs(&[Kind::Lines, Kind::Keyed], "counts lines or keyed records")?
                    }
                    ("running_total", Kind::Lines, None) => {}
                    (_, Kind::Keyed, Some(_)) | (_, Kind::Counts, None) => {}
                    ("running_total", Kind::Keyed, None) => {}
                    (_, Kind::Keyed, None) => {
                        return Err(self.src.err(
                            s.span(),
                            format!("{item}.field"),
                            "the numeric field to sum",
                            Some("nothing".into()),
                            "add field = \"amount\"",
                        ))
                    }
                    (_, Kind::Counts, Some(f)) => {
                        return Err(self.src.err(
                            r.field.as_ref().map_or(s.span(), |x| x.span()),
                            format!("{item}.field"),
                            "no field: the pairs' numbers are summed",
                            Some(format!("\"{f}\"")),
                            "remove `field`",
                        ))
                    }
                    _ => needs(
                        &[Kind::Keyed, Kind::Counts],
                        "sums keyed records' field or (key, number) pairs",
                    )?,
                }
                let op = match op_name {
                    "sum_by_key" => Op::SumByKey { field },
                    "running_total" => Op::RunningTotal { field },
                    "window_sum" => {
                        let (window, slide) = window(self)?;
                        Op::WindowSum {
                            window,
                            slide,
                            field,
                        }
                    }
                    _ => {
                        let (window, slide) = window(self)?;
                        Op::WindowCount { window, slide }
                    }
                };
                (op, Kind::Counts)
            }
            "top" => {
                self.only_keys(item, &what, &set, &["n"])?;
                needs(
                    &[Kind::Counts],
                    "top ranks (key, number) pairs; count or sum first",
                )?;
                let n = match &r.n {
                    Some(v) => {
                        self.positive(&format!("{item}.n"), v, 1_000_000, "how many pairs to keep")?
                            as usize
                    }
                    None => 10,
                };
                (Op::Top { n }, Kind::Counts)
            }
            other => {
                return Err(self.src.err(
                    op_s.span(),
                    format!("{item}.op"),
                    format!("one of {}", OPS.join(", ")),
                    Some(format!("\"{other}\"")),
                    nearest(other, OPS).map_or("see docs/pipeline.md".into(), |n| {
                        format!("did you mean \"{n}\"?")
                    }),
                ))
            }
        };
        if let Op::WindowCount { window, slide } | Op::WindowSum { window, slide, .. } = &op {
            let iv = self.batch_interval_ms();
            let bad = |key: &str, d: &Duration, span: Option<Range<usize>>| {
                self.src.err(
                    span.unwrap_or(s.span()),
                    format!("{item}.{key}"),
                    format!("a multiple of the batch interval ({iv} ms)"),
                    Some(format!("{} ms", d.as_millis())),
                    "windows and slides are whole numbers of batches",
                )
            };
            if window.as_millis() as u64 % iv != 0 {
                return Err(bad("window", window, r.window.as_ref().map(|w| w.span())));
            }
            if !slide.is_zero() && (slide.as_millis() as u64 % iv != 0 || slide > window) {
                return Err(bad("slide", slide, r.slide.as_ref().map(|w| w.span())));
            }
        }
        let id = match &r.id {
            Some(id) => id.get_ref().clone(),
            None if op.stateful() && r.name.is_none() => return Err(self.src.err(
                op_s.span(),
                format!("{item}.id"),
                "an `id` (or `name`) on a stateful step",
                Some("nothing".into()),
                "its state is kept under this name across restarts; add id = \"...\" and keep it",
            )),
            None => format!("step{index}"),
        };
        let name = r
            .name
            .as_ref()
            .map_or_else(|| id.clone(), |n| n.get_ref().clone());
        Ok(StepDef {
            id,
            name,
            input,
            op,
            kind,
        })
    }

    fn batch_interval_ms(&self) -> u64 {
        self.interval_ms.get()
    }

    fn sink(
        &self,
        item: &str,
        s: &Spanned<RawSink>,
        nodes: &[Node],
        sources: usize,
        step_starts: &[usize],
    ) -> Result<SinkDef, ConfigError> {
        let r = s.get_ref();
        let kind = self.required(
            &r.kind,
            item,
            "kind",
            s.span(),
            "a `kind`",
            &format!("add kind = \"...\", one of {}", SINK_KINDS.join(", ")),
        )?;
        // The step just above in the file (steps and sinks are separate
        // arrays in TOML; their positions tell the order).
        let above = step_starts
            .iter()
            .rposition(|&start| start < s.span().start)
            .map(|i| sources + i);
        let default = above.or((sources == 1).then_some(0));
        let input = self.input_of(item, r.from.as_ref(), s.span(), nodes, default)?;
        let set = r.set_keys();
        let k = kind.get_ref().as_str();
        let what = format!("kind = \"{k}\"");
        let kind = match k {
            "print" => {
                self.only_keys(item, &what, &set, &["count"])?;
                let count = match &r.count {
                    Some(v) => self.positive(
                        &format!("{item}.count"),
                        v,
                        1_000_000,
                        "records printed per batch",
                    )? as usize,
                    None => 10,
                };
                SinkKind::Print { count }
            }
            "text_files" | "json_files" => {
                self.only_keys(item, &what, &set, &["prefix", "suffix"])?;
                let p = self.required(&r.prefix, item, "prefix", s.span(), "a path prefix such as \"out/counts\"", "files are named <prefix>-<batch ms>.<suffix>; relative prefixes are under the data directory")?;
                if p.get_ref().trim().is_empty() || p.get_ref().ends_with('/') {
                    return Err(self.src.err(
                        p.span(),
                        format!("{item}.prefix"),
                        "a path prefix ending in a file name part, such as \"out/counts\"",
                        Some(format!("\"{}\"", p.get_ref())),
                        "files are named <prefix>-<batch ms>.<suffix>",
                    ));
                }
                let suffix = r.suffix.as_ref().map_or_else(
                    || {
                        if k == "text_files" {
                            "txt".to_string()
                        } else {
                            "jsonl".to_string()
                        }
                    },
                    |x| x.get_ref().clone(),
                );
                let prefix = PathBuf::from(p.get_ref());
                if k == "text_files" {
                    SinkKind::TextFiles { prefix, suffix }
                } else {
                    SinkKind::JsonFiles { prefix, suffix }
                }
            }
            "kv" => {
                self.only_keys(item, &what, &set, &["table"])?;
                let t = self.required(
                    &r.table,
                    item,
                    "table",
                    s.span(),
                    "the table's name",
                    "add table = \"totals\"; read it with `weir kv get|scan DATA_DIR TABLE`",
                )?;
                let name = t.get_ref();
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(self.src.err(
                        t.span(),
                        format!("{item}.table"),
                        "a plain name: letters, digits, `_` or `-`",
                        Some(format!("\"{name}\"")),
                        "the table is kept in the checkpoint under this name",
                    ));
                }
                let k = nodes[input].kind();
                if !matches!(k, Kind::Counts | Kind::Keyed) {
                    return Err(self.src.err(
                        kind.span(),
                        format!("{item}.kind"),
                        "an input of (key, number) pairs or keyed JSON records for kind = \"kv\"",
                        Some(format!("{} from `{}`", k.label(), nodes[input].id())),
                        "a table maps keys to values: count, sum or key_by first",
                    ));
                }
                SinkKind::Kv {
                    table: name.clone(),
                }
            }
            other => {
                return Err(self.src.err(
                    kind.span(),
                    format!("{item}.kind"),
                    format!("one of {}", SINK_KINDS.join(", ")),
                    Some(format!("\"{other}\"")),
                    nearest(other, SINK_KINDS).map_or("see docs/pipeline.md".into(), |n| {
                        format!("did you mean \"{n}\"?")
                    }),
                ))
            }
        };
        Ok(SinkDef { input, kind })
    }
}
