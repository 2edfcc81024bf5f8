//! The validated pipeline: what `validate.rs` makes of a file and
//! `compile.rs` turns into DStreams ([`Pipeline`], its [`Node`]s, each
//! [`SourceDef`], [`StepDef`] with its [`Op`], each [`SinkDef`], the record
//! [`Kind`] every stream carries, and the [`Settings`]). Plain data: every
//! value here has been checked.
//!
//! Limits: as the keys' (`docs/pipeline.md`); defaults
//! [`HTTP_ADDRESS_DEFAULT`] and [`STOP_TIMEOUT_DEFAULT`].
//! Must never: hold anything unchecked, or repeat what an op's entry in
//! `ops.rs` says ([`Op::stateful`] asks the table; [`Op::name`] is the
//! one bridge from a variant to its entry, held to it by a unit test).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

    /// The labels of `kinds` joined by `sep` (" or " in errors, ", " in
    /// docs).
    pub fn labels(kinds: &[Kind], sep: &str) -> String {
        let labels: Vec<&str> = kinds.iter().map(|k| k.label()).collect();
        labels.join(sep)
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
    Generator(crate::service::generator::GeneratorConfig),
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
    /// The op's name in files, `weir check` and `docs/pipeline.md` (its
    /// entry in `super::ops::OPS`).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Split { .. } => "split",
            Op::Lowercase => "lowercase",
            Op::Uppercase => "uppercase",
            Op::Trim => "trim",
            Op::Filter { .. } => "filter",
            Op::ParseJson { .. } => "parse_json",
            Op::Select { .. } => "select",
            Op::Rename { .. } => "rename",
            Op::KeyBy { .. } => "key_by",
            Op::CountByKey => "count_by_key",
            Op::SumByKey { .. } => "sum_by_key",
            Op::WindowCount { .. } => "window_count",
            Op::WindowSum { .. } => "window_sum",
            Op::RunningTotal { .. } => "running_total",
            Op::Top { .. } => "top",
        }
    }

    /// Whether the step keeps state across batches (its table entry says).
    pub fn stateful(&self) -> bool {
        super::ops::op_spec(self.name()).is_some_and(|s| s.stateful)
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
