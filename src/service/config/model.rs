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
    /// Bound of the dead-letter log, bytes (None: the engine's 1 GiB).
    pub dead_letter_bytes_max: Option<u64>,
    /// Whether batches are sized to what fits in an interval (default on).
    pub adaptive_batches: bool,
    /// The data directory, resolved against the pipeline file's directory.
    pub data_dir: Option<PathBuf>,
    /// Longest a graceful stop keeps draining the backlog.
    pub stop_timeout: Duration,
    /// Address of the HTTP endpoint (`None`: off).
    pub http_address: Option<std::net::SocketAddr>,
    /// The HTTP endpoint's limits, TLS and tokens.
    pub http: HttpSettings,
}

/// The status endpoint's limits, TLS files and tokens file (paths
/// resolved against the pipeline file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Largest request head (request line and headers), bytes.
    pub head_bytes_max: usize,
    /// Longest wait for a request head (and for the TLS handshake).
    pub head_timeout: Duration,
    /// Connections served at once; more get `503`.
    pub connections_max: usize,
    /// Whether a connection may carry several requests.
    pub keep_alive: bool,
    /// The certificate chain (PEM); with `tls_key_file`, the endpoint
    /// speaks only TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// Authorities whose client certificates are required (mTLS).
    pub tls_client_ca_file: Option<PathBuf>,
    /// `name token` lines; when set, every request needs a token.
    pub tokens_file: Option<PathBuf>,
}

/// Default of [`HttpSettings::head_bytes_max`] (and the least hyper takes).
pub const HTTP_HEAD_BYTES_DEFAULT: usize = 8192;
/// Default of [`HttpSettings::head_timeout`].
pub const HTTP_HEAD_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default of [`HttpSettings::connections_max`].
pub const HTTP_CONNECTIONS_DEFAULT: usize = 64;

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            head_bytes_max: HTTP_HEAD_BYTES_DEFAULT,
            head_timeout: HTTP_HEAD_TIMEOUT_DEFAULT,
            connections_max: HTTP_CONNECTIONS_DEFAULT,
            keep_alive: true,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            tokens_file: None,
        }
    }
}

impl HttpSettings {
    /// The key an endpoint on `addr` still needs: off loopback, TLS
    /// (`http_tls_cert_file`) and tokens (`http_tokens_file`) are
    /// required. None: nothing is missing.
    pub fn missing_for(&self, addr: std::net::SocketAddr) -> Option<&'static str> {
        if addr.ip().is_loopback() {
            None
        } else if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
            Some("http_tls_cert_file")
        } else if self.tokens_file.is_none() {
            Some("http_tokens_file")
        } else {
            None
        }
    }
}

/// Default HTTP address (loopback: plain HTTP needs no TLS or tokens there).
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

/// The limits of an ingest source (`IngestConfig`'s, from the file's keys;
/// the defaults are `IngestConfig::new`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestLimits {
    /// `connections_max`.
    pub connections_max: usize,
    /// `connections_per_address_max`.
    pub connections_per_address_max: usize,
    /// `handshakes_per_address_max`.
    pub handshakes_per_address_max: usize,
    /// `hello_timeout_ms`.
    pub hello_timeout_ms: u64,
    /// `producers_max`.
    pub producers_max: usize,
    /// `producers_idle_ms_max`.
    pub producers_idle_ms_max: u64,
    /// `partitions`.
    pub partitions: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        let c = crate::ingest::IngestConfig::new(([127, 0, 0, 1], 0).into());
        IngestLimits {
            connections_max: c.connections_max,
            connections_per_address_max: c.connections_per_address_max,
            handshakes_per_address_max: c.handshakes_per_address_max,
            hello_timeout_ms: c.hello_timeout.as_millis() as u64,
            producers_max: c.producers_max,
            producers_idle_ms_max: c.producers_idle_max.as_millis() as u64,
            partitions: c.partitions,
        }
    }
}

impl IngestLimits {
    /// Sets these limits on `cfg`.
    pub fn apply(&self, cfg: &mut crate::ingest::IngestConfig) {
        cfg.connections_max = self.connections_max;
        cfg.connections_per_address_max = self.connections_per_address_max;
        cfg.handshakes_per_address_max = self.handshakes_per_address_max;
        cfg.hello_timeout = std::time::Duration::from_millis(self.hello_timeout_ms);
        cfg.producers_max = self.producers_max;
        cfg.producers_idle_max = std::time::Duration::from_millis(self.producers_idle_ms_max);
        cfg.partitions = self.partitions;
    }
}

/// The kinds of source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Built-in tweet-like lines (see `generator.rs`).
    Generator(crate::service::generator::GeneratorConfig),
    /// Lines read from a TCP server (`socket_text_stream`).
    Socket {
        /// `host:port` of the server (off this machine only with `tls`).
        address: String,
        /// Most lines per second stored.
        rate_max: Option<u64>,
        /// What ends a record (`None`: a newline, CRLF accepted).
        delimiter: Option<String>,
        /// Connections (each into its own log), 1 to
        /// `STREAM_PARTITIONS_MAX`.
        partitions: usize,
        /// TLS to the server, its paths resolved and its name set.
        tls: Option<crate::receiver::SocketTls>,
    },
    /// The ingest server (`ingest_stream`, fed by `weir feed`).
    Ingest {
        /// Where it listens (port 0: any free port; off this machine only
        /// with TLS and tokens).
        address: std::net::SocketAddr,
        /// Most records per second stored.
        rate_max: Option<u64>,
        /// Connection and producer-table limits.
        limits: IngestLimits,
        /// TLS and tokens.
        security: crate::net::SecurityFiles,
    },
    /// HTTP ingest (`POST /v1/streams/<id>`, `IngestConfig` with
    /// `Protocol::Http`).
    Http {
        /// Where it listens (off this machine only with TLS and tokens).
        address: std::net::SocketAddr,
        /// Most records per second stored.
        rate_max: Option<u64>,
        /// Connection and producer-table limits.
        limits: IngestLimits,
        /// Body and request limits.
        http: crate::ingest::HttpLimits,
        /// Whether each record must be one JSON value (else UTF-8 text).
        json: bool,
        /// TLS and tokens.
        security: crate::net::SecurityFiles,
    },
    /// Messages of NATS JetStream streams, one partition each
    /// (`jetstream_stream`).
    JetStream(crate::JetStreamConfig),
    /// Records of Kafka topics, one partition each (`kafka_stream`).
    Kafka(Box<crate::KafkaSourceConfig>),
    /// Lines of the files appearing in a directory (`text_file_stream`).
    Directory {
        /// The directory (resolved against the pipeline file's directory).
        path: PathBuf,
        /// Receivers (each reading its share of the files into its own
        /// log), 1 to `STREAM_PARTITIONS_MAX`.
        partitions: usize,
    },
}

impl SourceKind {
    /// The TLS and tokens files of a source that listens for other
    /// hosts (None: the source does not listen).
    pub fn listener_security(&self) -> Option<&crate::net::SecurityFiles> {
        match self {
            SourceKind::Http { security, .. } | SourceKind::Ingest { security, .. } => {
                Some(security)
            }
            _ => None,
        }
    }
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
    /// Indexes of its other inputs (`from` lists of `op = "sql"`).
    pub also: Vec<usize>,
    /// What it does.
    pub op: Op,
    /// The kind it produces.
    pub kind: Kind,
}

impl SqlStepDef {
    /// What the step does in `weir check`'s words (`quote` quotes text).
    pub fn words(&self, interval: Duration, quote: &dyn Fn(&str) -> String) -> String {
        let mut out = format!("sql {}", quote(self.query.trim()));
        if !self.window.is_zero() {
            let slide = if self.slide.is_zero() {
                interval
            } else {
                self.slide
            };
            out.push_str(&format!(
                " over a window of {} ms sliding {} ms",
                self.window.as_millis(),
                slide.as_millis()
            ));
        }
        match (&self.columns, self.infer) {
            (Some(c), _) => {
                let c: Vec<String> = c.iter().map(|(n, t)| format!("{n} {t}")).collect();
                out.push_str(&format!(", columns {}", c.join(", ")));
            }
            (None, true) => out.push_str(", columns inferred from the first batch"),
            (None, false) => {}
        }
        for (name, file) in &self.static_tables {
            out.push_str(&format!(", static table {name} from {}", file.display()));
        }
        out
    }
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

/// A step's bad-record policy (`on_error`): what a record the step cannot
/// process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadRecord {
    /// `"fail"` (the default): the batch fails, naming the step, stream,
    /// record number and error; nothing is skipped.
    #[default]
    Fail,
    /// `"drop"`: skipped and counted in the metrics, not kept.
    Drop,
    /// `"dead_letter"`: written to `DATA_DIR/dead-letter/` with its
    /// position and error before the batch commits, and counted.
    DeadLetter,
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
        /// What a line that is not JSON does.
        on_error: OnBadRecord,
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
        /// What a record whose field is not a number does.
        on_error: OnBadRecord,
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
        /// What a record whose field is not a number does.
        on_error: OnBadRecord,
    },
    /// Running count or sum per key since the start (stateful).
    RunningTotal {
        /// The field of a keyed record to sum (None: count, or sum counts).
        field: Option<String>,
        /// What a record whose field is not a number does.
        on_error: OnBadRecord,
        /// A file of `(key, number)` pairs the totals start from at the
        /// first start (`service/initial.rs` reads it).
        initial: Option<std::path::PathBuf>,
    },
    /// The `n` largest pairs of each batch (by number, then key).
    Top {
        /// How many.
        n: usize,
    },
    /// A SQL query over each batch (or window) of its inputs.
    Sql(Box<SqlStepDef>),
    /// Streaming k-means: trains on every batch, adds each record's
    /// cluster and distance (stateful: the model).
    KMeans(Box<super::ml_keys::KMeansStepDef>),
    /// Streaming linear or logistic regression with SGD: trains on every
    /// batch's labelled records, adds each record's prediction (stateful).
    Regression(Box<super::ml_keys::RegressionStepDef>),
}

/// An `op = "sql"` step (`config/sql_keys.rs` checks it, `compile.rs`
/// builds it on `crate::sql`).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlStepDef {
    /// The query.
    pub query: String,
    /// Declared columns of JSON-record inputs as (name, type name), in
    /// order; `None`: text lines (one `value` column) or inferred.
    pub columns: Option<Vec<(String, String)>>,
    /// `schema = "infer"`: JSON-record inputs' columns come from the
    /// first batch (logged, saved under DATA_DIR/sql/).
    pub infer: bool,
    /// Static tables: (name, file), loaded at start.
    pub static_tables: Vec<(String, std::path::PathBuf)>,
    /// Window length (zero: each batch alone).
    pub window: Duration,
    /// Slide (zero: every batch).
    pub slide: Duration,
    /// What a JSON record that does not fit the columns does.
    pub on_error: OnBadRecord,
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
            Op::Sql(_) => "sql",
            Op::KMeans(_) => "kmeans",
            Op::Regression(r) if r.logistic => "logistic_regression",
            Op::Regression(_) => "linear_regression",
        }
    }

    /// Whether the step keeps state across batches (its table entry says).
    pub fn stateful(&self) -> bool {
        if let Op::Sql(s) = self {
            return !s.window.is_zero();
        }
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
        /// How the batch time is shown.
        time_format: crate::sink::TimeFormat,
    },
    /// One text file per batch, `prefix-<ms>.suffix`.
    TextFiles {
        /// Path prefix (resolved against the data directory).
        prefix: PathBuf,
        /// File suffix.
        suffix: String,
        /// No file for a batch without records.
        skip_empty: bool,
    },
    /// Upserts `(key, value)` into a transactional key-value table
    /// (values stored as text: numbers in decimal, JSON compact).
    Kv {
        /// The table's name.
        table: String,
    },
    /// Publishes every record to a NATS JetStream subject, deduplicated by
    /// message id (`crate::sink::JetStreamSinkConfig`).
    JetStream(Box<crate::sink::JetStreamSinkConfig>),
    /// Produces every record to a Kafka topic; a replay reads back what it
    /// already wrote (`crate::sink::KafkaSinkConfig`).
    Kafka(Box<crate::sink::KafkaSinkConfig>),
    /// Writes every record as one row of a PostgreSQL table, exactly once
    /// (`crate::sink::PostgresSinkConfig`); `columns` say where each
    /// column's value comes from.
    Postgres(Box<PostgresSinkDef>),
    /// One JSON-lines file per batch.
    JsonFiles {
        /// Path prefix (resolved against the data directory).
        prefix: PathBuf,
        /// File suffix.
        suffix: String,
        /// No file for a batch without records.
        skip_empty: bool,
    },
}

/// A `postgres` sink: the sink's config (its `columns` in the order of
/// `sources`) and where each column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresSinkDef {
    /// The sink (password file resolved against the pipeline file's
    /// directory).
    pub config: crate::sink::PostgresSinkConfig,
    /// Per column: `line`; `key`, `value` or `value.<path>` (pairs);
    /// `.` (the whole record) or a dotted field path (JSON records).
    pub sources: Vec<String>,
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
