//! THE table of sink kinds ([`SINKS`]): one [`SinkSpec`] per kind with
//! its name, its keys and their types, the record kinds it accepts and the
//! function that checks its keys and builds the [`SinkKind`]. The
//! validator, `weir check`'s "one of ..." and the sinks table of
//! `docs/pipeline.md` ([`sinks_markdown`], held equal by a test) read it.
//!
//! Adding a sink: one entry here, its builder below, its [`SinkKind`]
//! variant (`compile.rs` matches every variant).
//!
//! Limits: `print` shows 1 to [`PRINT_COUNT_MAX`] records a batch; a
//! `kv` table name is letters, digits, `_` and `-`; `jetstream` takes the
//! limits of `crate::sink::JetStreamSinkConfig::validate` (1 to 4,096 acks
//! in flight, 1 to 100 publish rounds, timeouts 1 to 600,000 ms);
//! `postgres` (its keys and builder in `sink_postgres.rs`) those of
//! `crate::sink::PostgresSinkConfig::validate`.
//! Must never: write anything (`compile.rs` adds the outputs), or accept a
//! key its entry does not list.

use std::path::PathBuf;

use super::error::ConfigError;
use super::keys::{entry_names, impl_entry, keys_cell, KeySpec, KeyType};
use super::model::{Kind, SinkKind};
use super::nats_keys::{
    nats_client, CONNECT_TIMEOUT_MS, CREDENTIALS_FILE, PASSWORD, SERVERS, TLS_CA_FILE,
    TLS_REQUIRED, TOKEN, USER,
};
use super::validate::SinkIn;

/// Most records `print` shows per batch.
pub const PRINT_COUNT_MAX: i64 = 1_000_000;

/// One sink kind: everything the validator, `weir check` and the docs
/// know of it.
pub(super) struct SinkSpec {
    /// `kind = "..."`.
    pub(super) name: &'static str,
    /// The keys it takes besides `kind` and `from`.
    pub(super) keys: &'static [KeySpec],
    /// The record kinds it writes.
    pub(super) inputs: &'static [Kind],
    /// What to do when the input is of another kind.
    pub(super) input_hint: &'static str,
    /// Checks its keys (types are already checked) and builds it.
    pub(super) build: fn(&SinkIn<'_>) -> Result<SinkKind, ConfigError>,
}

const COUNT: KeySpec = KeySpec::whole("count", 1, PRINT_COUNT_MAX, "records printed per batch");
const TIME_FORMAT: KeySpec = KeySpec::of(
    "time_format",
    KeyType::Text,
    "how the batch time is shown: \"millis\" (default, `Time: 1764934802000 ms` as Spark's Scala print) or \"datetime\" (`Time: 2025-12-05 11:40:02` in UTC, as Spark's Python pprint)",
);
const SKIP_EMPTY: KeySpec = KeySpec::of(
    "skip_empty",
    KeyType::Bool,
    "skip_empty = true writes no file for a batch without records (a replay decides the same way; docs/operations.md: output retention)",
);
const PREFIX: KeySpec = KeySpec::of(
    "prefix",
    KeyType::Text,
    "files are named <prefix>-<batch ms>.<suffix>; relative prefixes are under the data directory",
);
const SUFFIX: KeySpec = KeySpec::of(
    "suffix",
    KeyType::Text,
    "the files' ending after the dot (txt for text_files, jsonl for json_files)",
);
const TABLE: KeySpec = KeySpec::of(
    "table",
    KeyType::Text,
    "the table is kept in the checkpoint under this name; read it with `weir kv get|scan DATA_DIR TABLE`",
);

const SUBJECT: KeySpec = KeySpec::of(
    "subject",
    KeyType::Text,
    "every record is published to this subject; a JetStream stream must capture it",
);
const SINK_ID: KeySpec = KeySpec::of(
    "sink_id",
    KeyType::Text,
    "the sink's part of each message id (default: the subject); keep it when you edit the file, or replays are not recognised",
);
const ACK_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "ack_timeout_ms",
    1,
    crate::nats::TIMEOUT_MS_MAX as i64,
    "how long one publish acknowledgement may take, in ms (default 5000)",
);
const ACKS_IN_FLIGHT_MAX: KeySpec = KeySpec::whole(
    "acks_in_flight_max",
    1,
    crate::sink::ACKS_IN_FLIGHT_CEILING as i64,
    "acknowledgements awaited at once (default 1024)",
);
const PUBLISH_TRIES_MAX: KeySpec = KeySpec::whole(
    "publish_tries_max",
    1,
    crate::sink::PUBLISH_TRIES_CEILING as i64,
    "rounds of publishing a batch's unacknowledged records before the batch fails (default 10)",
);
const REPLAY_OLDER_THAN_WINDOW: KeySpec = KeySpec::of(
    "replay_older_than_window",
    KeyType::Text,
    "\"refuse\" (default): a replay older than the stream's duplicate_window stops the pipeline; \"publish\": publish it anyway, accepting duplicates",
);

const ANY: &[Kind] = &[Kind::Lines, Kind::Records, Kind::Keyed, Kind::Counts];

/// Every sink kind, in the order `weir check` and the docs list them.
pub(super) const SINKS: &[SinkSpec] = &[
    SinkSpec {
        name: "print",
        keys: &[COUNT, TIME_FORMAT],
        inputs: ANY,
        input_hint: "print shows any records",
        build: print,
    },
    SinkSpec {
        name: "text_files",
        keys: &[PREFIX, SUFFIX, SKIP_EMPTY],
        inputs: ANY,
        input_hint: "text files take any records",
        build: |s| {
            let (prefix, suffix) = files(s, "txt")?;
            Ok(SinkKind::TextFiles {
                prefix,
                suffix,
                skip_empty: skip_empty(s)?,
            })
        },
    },
    SinkSpec {
        name: "json_files",
        keys: &[PREFIX, SUFFIX, SKIP_EMPTY],
        inputs: ANY,
        input_hint: "JSON-lines files take any records",
        build: |s| {
            let (prefix, suffix) = files(s, "jsonl")?;
            Ok(SinkKind::JsonFiles {
                prefix,
                suffix,
                skip_empty: skip_empty(s)?,
            })
        },
    },
    SinkSpec {
        name: "kv",
        keys: &[TABLE],
        inputs: &[Kind::Counts, Kind::Keyed],
        input_hint: "a table maps keys to values: count, sum or key_by first",
        build: kv,
    },
    SinkSpec {
        name: "jetstream",
        keys: &[
            SERVERS,
            SUBJECT,
            SINK_ID,
            CREDENTIALS_FILE,
            TOKEN,
            USER,
            PASSWORD,
            TLS_CA_FILE,
            TLS_REQUIRED,
            CONNECT_TIMEOUT_MS,
            ACK_TIMEOUT_MS,
            ACKS_IN_FLIGHT_MAX,
            PUBLISH_TRIES_MAX,
            REPLAY_OLDER_THAN_WINDOW,
        ],
        inputs: ANY,
        input_hint: "JetStream takes any records (each published as print shows it)",
        build: jetstream,
    },
    SinkSpec {
        name: "kafka",
        keys: super::kafka_keys::SINK_KEYS,
        inputs: ANY,
        input_hint: "Kafka takes any records (each produced as print shows it)",
        build: super::kafka_keys::kafka_sink,
    },
    SinkSpec {
        name: "postgres",
        keys: super::sink_postgres::KEYS,
        inputs: ANY,
        input_hint:
            "PostgreSQL takes any records; `columns` says where each column's value comes from",
        build: super::sink_postgres::postgres,
    },
];

impl_entry!(SinkSpec);

/// Every sink kind's name, in table order.
pub fn sink_names() -> Vec<&'static str> {
    entry_names(SINKS)
}

/// The sinks table of `docs/pipeline.md` (Markdown), from `SINKS`.
pub fn sinks_markdown() -> String {
    let mut out = String::from("| kind | takes | keys |\n|---|---|---|\n");
    for s in SINKS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            s.name,
            if s.inputs == ANY {
                "any records".to_string()
            } else {
                Kind::labels(s.inputs, ", ")
            },
            keys_cell(s.keys),
        ));
    }
    out
}

fn print(s: &SinkIn<'_>) -> Result<SinkKind, ConfigError> {
    use crate::sink::TimeFormat;
    let count = s.item.positive(&COUNT)?.map_or(10, |n| n as usize);
    let time_format = match s.item.text(&TIME_FORMAT)? {
        None => TimeFormat::Millis,
        Some(v) => match *v.get_ref() {
            "millis" => TimeFormat::Millis,
            "datetime" => TimeFormat::DateTime,
            other => {
                return Err(s.item.err(
                    v.span(),
                    TIME_FORMAT.name,
                    "\"millis\" or \"datetime\"",
                    Some(format!("\"{other}\"")),
                    TIME_FORMAT.hint,
                ))
            }
        },
    };
    Ok(SinkKind::Print { count, time_format })
}

/// `skip_empty` (default false).
fn skip_empty(s: &SinkIn<'_>) -> Result<bool, ConfigError> {
    Ok(s.item.flag(&SKIP_EMPTY)?.is_some_and(|b| *b.get_ref()))
}

/// `prefix` (required, ending in a file-name part) and `suffix`.
fn files(s: &SinkIn<'_>, suffix_default: &str) -> Result<(PathBuf, String), ConfigError> {
    let p = s
        .item
        .required(&PREFIX, "a path prefix such as \"out/counts\"", PREFIX.hint)?;
    if p.get_ref().trim().is_empty() || p.get_ref().ends_with('/') {
        return Err(s.item.err(
            p.span(),
            PREFIX.name,
            "a path prefix ending in a file name part, such as \"out/counts\"",
            Some(format!("\"{}\"", p.get_ref())),
            "files are named <prefix>-<batch ms>.<suffix>",
        ));
    }
    if let Some(reserved) = crate::layout::inside_reserved(std::path::Path::new(p.get_ref())) {
        return Err(s.item.err(
            p.span(),
            PREFIX.name,
            "a path prefix outside weir's own directories",
            Some(format!("\"{}\"", p.get_ref())),
            format!(
                "`{reserved}/` in the data directory holds weir's own files (docs/data-dir.md); write outputs elsewhere, such as \"out/counts\""
            ),
        ));
    }
    let suffix = s
        .item
        .string(&SUFFIX)?
        .unwrap_or_else(|| suffix_default.to_string());
    Ok((PathBuf::from(p.get_ref()), suffix))
}

fn kv(s: &SinkIn<'_>) -> Result<SinkKind, ConfigError> {
    let t = s.item.required(
        &TABLE,
        "the table's name",
        "add table = \"totals\"; read it with `weir kv get|scan DATA_DIR TABLE`",
    )?;
    let name = *t.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(s.item.err(
            t.span(),
            TABLE.name,
            "a plain name: letters, digits, `_` or `-`",
            Some(format!("\"{name}\"")),
            "the table is kept in the checkpoint under this name",
        ));
    }
    Ok(SinkKind::Kv {
        table: name.to_string(),
    })
}

/// The `jetstream` sink: the keys into a checked
/// [`crate::sink::JetStreamSinkConfig`].
fn jetstream(s: &SinkIn<'_>) -> Result<SinkKind, ConfigError> {
    use crate::sink::{JetStreamSinkConfig, JetStreamSinkError, ReplayOlderThanWindow};
    let client = nats_client(s.item, s.base)?;
    let subject = s
        .item
        .required(&SUBJECT, "a subject such as \"out.counts\"", SUBJECT.hint)?;
    let mut c = JetStreamSinkConfig::new(&[], subject.get_ref());
    c.servers = client.servers;
    if let Some(id) = s.item.string(&SINK_ID)? {
        c.sink_id = id;
    }
    c.auth = client.auth;
    c.tls_ca_file = client.tls_ca_file;
    c.tls_required = client.tls_required;
    if let Some(n) = client.connect_timeout_ms {
        c.connect_timeout_ms = n;
    }
    if let Some(n) = s.item.positive(&ACK_TIMEOUT_MS)? {
        c.ack_timeout_ms = n;
    }
    if let Some(n) = s.item.positive(&ACKS_IN_FLIGHT_MAX)? {
        c.acks_in_flight_max = n as usize;
    }
    if let Some(n) = s.item.positive(&PUBLISH_TRIES_MAX)? {
        c.publish_tries_max = n as u32;
    }
    if let Some(v) = s.item.text(&REPLAY_OLDER_THAN_WINDOW)? {
        c.replay_older_than_window = match *v.get_ref() {
            "refuse" => ReplayOlderThanWindow::Refuse,
            "publish" => ReplayOlderThanWindow::Publish,
            other => {
                return Err(s.item.err(
                    v.span(),
                    REPLAY_OLDER_THAN_WINDOW.name,
                    "\"refuse\" or \"publish\"",
                    Some(format!("\"{other}\"")),
                    REPLAY_OLDER_THAN_WINDOW.hint,
                ))
            }
        };
    }
    if let Err(JetStreamSinkError::Config {
        setting,
        found,
        expected,
    }) = c.validate()
    {
        let span = s.item.raw.get(setting).map_or(s.item.span(), |v| v.span());
        let hint = "docs/pipeline.md, `jetstream`, says what each key takes";
        return Err(s.item.err(span, setting, expected, Some(found), hint));
    }
    Ok(SinkKind::JetStream(Box::new(c)))
}
