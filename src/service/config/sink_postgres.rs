//! The `postgres` sink's keys and builder (its entry in `sinks::SINKS`):
//! the keys into a checked [`crate::sink::PostgresSinkConfig`] and the
//! column sources of a [`PostgresSinkDef`].
//!
//! Column sources by input kind: text lines `line`; pairs (`(key,
//! number)` or keyed records) `key`, `value`, and for keyed records
//! `value.<path>`; JSON records `.` (the whole record, as JSON) or a
//! dotted field path (`user.id`; a missing field is NULL).
//!
//! TLS: `tls_mode` (libpq's `sslmode` values; `verify-full` when
//! `tls_ca_file` is given without it) and the files `tls_ca_file`,
//! `tls_cert_file`, `tls_key_file`, from the pipeline file's directory;
//! the url's own `sslmode` is refused (one way to say it). A server off
//! this machine needs verified TLS and credentials ([`off_machine`]).
//!
//! Limits: those of `PostgresSinkConfig::validate` (identifiers 1 to 63
//! bytes, 1 to 256 columns, timeouts 1 to 3,600,000 ms, 1 to 1,000
//! tries). Must never: accept a password in the file (`url` with one is
//! refused: `password_file` or `password_env`), a column source its
//! input cannot give, or a server off this machine in clear or without
//! credentials.

use std::path::Path;

use super::error::ConfigError;
use super::keys::{KeySpec, KeyType};
use super::model::{Kind, PostgresSinkDef, SinkKind};
use super::validate::SinkIn;
use crate::sink::{
    pg_off_machine_host, PgMode, PgOnError, PgPassword, PgTls, PgTlsMode, PostgresSinkConfig,
    PostgresSinkError,
};

pub(super) const URL: KeySpec = KeySpec::of(
    "url",
    KeyType::Text,
    "a connection string without the password, such as \"host=127.0.0.1 port=5432 user=weir dbname=app\" or \"postgresql://weir@127.0.0.1:5432/app\"",
);
pub(super) const TLS_MODE: KeySpec = KeySpec::of(
    "tls_mode",
    KeyType::Text,
    "libpq's sslmode values: \"verify-full\" (the default with tls_ca_file: the authority and the host name), \"verify-ca\", \"require\" (as verify-ca: weir always checks the authority) or \"disable\" (the default without tls_ca_file; a server on this machine only)",
);
pub(super) const TLS_CA_FILE: KeySpec = KeySpec::of(
    "tls_ca_file",
    KeyType::Text,
    "a PEM file of the authorities that sign the server's certificate (TLS on; needed for a server off this machine); relative paths are from this file's directory",
);
pub(super) const TLS_CERT_FILE: KeySpec = KeySpec::of(
    "tls_cert_file",
    KeyType::Text,
    "a client certificate chain (PEM, with tls_key_file) for a server that asks for one; relative paths are from this file's directory",
);
pub(super) const TLS_KEY_FILE: KeySpec = KeySpec::of(
    "tls_key_file",
    KeyType::Text,
    "the client certificate's private key (PEM); relative paths are from this file's directory",
);
pub(super) const PASSWORD_FILE: KeySpec = KeySpec::of(
    "password_file",
    KeyType::Text,
    "a file whose first line is the password; relative paths start at the pipeline file's directory",
);
pub(super) const PASSWORD_ENV: KeySpec = KeySpec::of(
    "password_env",
    KeyType::Text,
    "an environment variable holding the password, such as \"PGPASSWORD\"",
);
pub(super) const PG_TABLE: KeySpec = KeySpec::of(
    "table",
    KeyType::Text,
    "the target table (`name` or `schema.name`, as created: names are quoted, so case matters)",
);
pub(super) const COLUMNS: KeySpec = KeySpec::of(
    "columns",
    KeyType::TextTable,
    "column = source: `line` (text lines), `key`/`value`/`value.<path>` (pairs), `.` or a field path (JSON records), such as { word = \"key\", n = \"value\" }",
);
pub(super) const MODE: KeySpec = KeySpec::of(
    "mode",
    KeyType::Text,
    "\"insert\" (default) or \"upsert\" (with key and, optionally, update)",
);
pub(super) const KEY: KeySpec = KeySpec::of(
    "key",
    KeyType::TextList,
    "upsert's conflict columns, such as [\"word\"]: a unique index must cover them",
);
pub(super) const UPDATE: KeySpec = KeySpec::of(
    "update",
    KeyType::Text,
    "upsert's SET list, such as \"n = counts.n + excluded.n\" (default: every other column from excluded)",
);
pub(super) const ON_ERROR: KeySpec = KeySpec::of(
    "on_error",
    KeyType::Text,
    "a row the table rejects: \"fail\" (default: the batch fails naming row, column and message) or \"dead_letter\" (the row goes to the dead-letter table)",
);
pub(super) const DEAD_LETTER_TABLE: KeySpec = KeySpec::of(
    "dead_letter_table",
    KeyType::Text,
    "where rejected rows go with on_error = \"dead_letter\" (default <table>_dead_letter; created if missing)",
);
pub(super) const PROGRESS_TABLE: KeySpec = KeySpec::of(
    "progress_table",
    KeyType::Text,
    "the table of the sink's progress rows (default weir_progress; created if missing)",
);
pub(super) const PIPELINE: KeySpec = KeySpec::of(
    "pipeline",
    KeyType::Text,
    "the pipeline's name in the progress row (default weir)",
);
pub(super) const PG_SINK_ID: KeySpec = KeySpec::of(
    "sink_id",
    KeyType::Text,
    "the sink's name in the progress row (default: the table); keep it when you edit the file, or replays are not recognised",
);
pub(super) const PARTITION: KeySpec = KeySpec::whole(
    "partition",
    0,
    i32::MAX as i64,
    "the partition in the progress row (default 0): instances writing one table from disjoint inputs take one each",
);
pub(super) const PG_CONNECT_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "connect_timeout_ms",
    1,
    crate::sink::PG_TIMEOUT_MS_MAX as i64,
    "how long connecting may take, in ms (default 5000)",
);
pub(super) const STATEMENT_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "statement_timeout_ms",
    1,
    crate::sink::PG_TIMEOUT_MS_MAX as i64,
    "how long one statement (and the wait for the progress row's lock) may take, in ms (default 60000)",
);
pub(super) const TRIES_MAX: KeySpec = KeySpec::whole(
    "tries_max",
    1,
    crate::sink::PG_TRIES_CEILING as i64,
    "tries of a batch's transaction when the server is down or restarting, before the batch fails (default 10)",
);

/// Every key of the `postgres` sink.
pub(super) const KEYS: &[KeySpec] = &[
    URL,
    PASSWORD_FILE,
    PASSWORD_ENV,
    TLS_MODE,
    TLS_CA_FILE,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
    PG_TABLE,
    COLUMNS,
    MODE,
    KEY,
    UPDATE,
    ON_ERROR,
    DEAD_LETTER_TABLE,
    PROGRESS_TABLE,
    PIPELINE,
    PG_SINK_ID,
    PARTITION,
    PG_CONNECT_TIMEOUT_MS,
    STATEMENT_TIMEOUT_MS,
    TRIES_MAX,
];

/// Whether `source` is a column source of input kind `kind`.
fn source_ok(kind: Kind, source: &str) -> bool {
    let path = |p: &str| !p.is_empty() && p.split('.').all(|s| !s.is_empty());
    match kind {
        Kind::Lines => source == "line",
        Kind::Counts => matches!(source, "key" | "value"),
        Kind::Keyed => {
            matches!(source, "key" | "value") || source.strip_prefix("value.").is_some_and(path)
        }
        Kind::Records => source == "." || path(source),
    }
}

fn sources_words(kind: Kind) -> &'static str {
    match kind {
        Kind::Lines => "\"line\"",
        Kind::Counts => "\"key\" or \"value\"",
        Kind::Keyed => "\"key\", \"value\" or \"value.<path>\"",
        Kind::Records => "\".\" (the whole record) or a field path such as \"user.id\"",
    }
}

/// The `postgres` sink: the keys into a checked config and its column
/// sources.
pub(super) fn postgres(s: &SinkIn<'_>) -> Result<SinkKind, ConfigError> {
    let url = s.item.required(&URL, "a connection string", URL.hint)?;
    let table = s.item.required(&PG_TABLE, "a table name", PG_TABLE.hint)?;
    let cols = s.item.table(&COLUMNS)?.ok_or_else(|| {
        s.item.err(
            s.item.span(),
            COLUMNS.name,
            "a table of column = source",
            Some("nothing".into()),
            COLUMNS.hint,
        )
    })?;
    for (c, src) in cols.get_ref() {
        if !source_ok(s.input, src) {
            return Err(s.item.err(
                cols.span(),
                COLUMNS.name,
                format!("for {}: {}", s.input.label(), sources_words(s.input)),
                Some(format!("{c} = \"{src}\"")),
                COLUMNS.hint,
            ));
        }
    }
    let names: Vec<&str> = cols.get_ref().keys().map(String::as_str).collect();
    let mut c = PostgresSinkConfig::new(url.get_ref(), table.get_ref(), &names);
    if url
        .get_ref()
        .parse::<tokio_postgres::Config>()
        .is_ok_and(|p| p.get_password().is_some())
    {
        return Err(s.item.err(
            url.span(),
            URL.name,
            "a connection string without a password",
            Some("a password in it".into()),
            "keep secrets out of pipeline files: put the password in a file (password_file) or an environment variable (password_env)",
        ));
    }
    c.password = password(s, s.base)?;
    c.tls = tls(s)?;
    c.mode = mode(s)?;
    if let Some(v) = s.item.text(&ON_ERROR)? {
        c.on_error = match *v.get_ref() {
            "fail" => PgOnError::Fail,
            "dead_letter" => PgOnError::DeadLetter,
            other => {
                return Err(s.item.err(
                    v.span(),
                    ON_ERROR.name,
                    "\"fail\" or \"dead_letter\"",
                    Some(format!("\"{other}\"")),
                    ON_ERROR.hint,
                ))
            }
        };
    }
    c.dead_letter_table = s.item.string(&DEAD_LETTER_TABLE)?;
    if let Some(t) = s.item.string(&PROGRESS_TABLE)? {
        c.progress_table = t;
    }
    if let Some(p) = s.item.string(&PIPELINE)? {
        c.pipeline = p;
    }
    if let Some(id) = s.item.string(&PG_SINK_ID)? {
        c.sink_id = id;
    }
    if let Some(n) = s.item.whole(&PARTITION)? {
        c.partition = i32::try_from(n).unwrap_or(i32::MAX);
    }
    if let Some(n) = s.item.positive(&PG_CONNECT_TIMEOUT_MS)? {
        c.connect_timeout_ms = n;
    }
    if let Some(n) = s.item.positive(&STATEMENT_TIMEOUT_MS)? {
        c.statement_timeout_ms = n;
    }
    if let Some(n) = s.item.positive(&TRIES_MAX)? {
        c.tries_max = u32::try_from(n).unwrap_or(u32::MAX);
    }
    validated(s, &c)?;
    off_machine(s, &c)?;
    let sources = cols.get_ref().values().cloned().collect();
    Ok(SinkKind::Postgres(Box::new(PostgresSinkDef {
        config: c,
        sources,
    })))
}

/// `c.validate()`, its mistake pointed at the key.
fn validated(s: &SinkIn<'_>, c: &PostgresSinkConfig) -> Result<(), ConfigError> {
    if let Err(PostgresSinkError::Config {
        setting,
        found,
        expected,
    }) = c.validate()
    {
        let span = s.item.raw.get(setting).map_or(s.item.span(), |v| v.span());
        let hint = if setting.starts_with("tls_") || found.contains("sslmode") {
            "docs/security.md, `PostgreSQL`, says what each TLS key takes"
        } else {
            "docs/pipeline.md, `postgres`, says what each key takes"
        };
        return Err(s.item.err(span, setting, expected, Some(found), hint));
    }
    Ok(())
}

/// `password_file` or `password_env` (at most one).
fn password(s: &SinkIn<'_>, base: &Path) -> Result<PgPassword, ConfigError> {
    let file = s.item.string(&PASSWORD_FILE)?;
    let env = s.item.string(&PASSWORD_ENV)?;
    Ok(match (file, env) {
        (Some(_), Some(_)) => {
            return Err(s.item.err(
                s.item.span(),
                "password",
                "one of password_file and password_env",
                Some("both".into()),
                "keep one of them",
            ))
        }
        (Some(f), None) => PgPassword::File(base.join(f)),
        (None, Some(v)) => PgPassword::Env(v),
        (None, None) => PgPassword::None,
    })
}

/// `mode`, with `key` and `update` for upserts.
fn mode(s: &SinkIn<'_>) -> Result<PgMode, ConfigError> {
    let key = s.item.list(&KEY)?;
    let update = s.item.string(&UPDATE)?;
    let m = s.item.text(&MODE)?;
    match m.as_ref().map(|v| *v.get_ref()) {
        None | Some("insert") => {
            if key.is_some() || update.is_some() {
                return Err(s.item.err(
                    s.item.span(),
                    MODE.name,
                    "mode = \"upsert\" where key or update is given",
                    Some("insert".into()),
                    "add mode = \"upsert\", or remove key and update",
                ));
            }
            Ok(PgMode::Insert)
        }
        Some("upsert") => {
            let key = key.ok_or_else(|| {
                s.item.err(
                    s.item.span(),
                    KEY.name,
                    "the conflict columns of the upsert",
                    Some("nothing".into()),
                    KEY.hint,
                )
            })?;
            Ok(PgMode::Upsert {
                key: key.get_ref().clone(),
                update,
            })
        }
        Some(other) => Err(s.item.err(
            m.map_or(s.item.span(), |v| v.span()),
            MODE.name,
            "\"insert\" or \"upsert\"",
            Some(format!("\"{other}\"")),
            MODE.hint,
        )),
    }
}

/// `tls_mode` and the TLS files (from `s.base`); `verify-full` where
/// `tls_ca_file` is given without a mode.
fn tls(s: &SinkIn<'_>) -> Result<PgTls, ConfigError> {
    let file =
        |k: &KeySpec| -> Result<_, ConfigError> { Ok(s.item.string(k)?.map(|p| s.base.join(p))) };
    let mut t = PgTls {
        ca_file: file(&TLS_CA_FILE)?,
        cert_file: file(&TLS_CERT_FILE)?,
        key_file: file(&TLS_KEY_FILE)?,
        ..PgTls::default()
    };
    t.mode = match s.item.text(&TLS_MODE)? {
        None if t.ca_file.is_some() => PgTlsMode::VerifyFull,
        None => PgTlsMode::Disable,
        Some(v) => PgTlsMode::parse(v.get_ref()).ok_or_else(|| {
            s.item.err(
                v.span(),
                TLS_MODE.name,
                "\"verify-full\", \"verify-ca\", \"require\" or \"disable\"",
                Some(format!("\"{}\"", v.get_ref())),
                "libpq's allow and prefer may fall back to plain TCP: weir does not; docs/security.md, `PostgreSQL`",
            )
        })?,
    };
    Ok(t)
}

/// A server off this machine only over verified TLS and with credentials
/// (a password or a client certificate): a pipeline's rows must not
/// travel in clear or to an unchecked server.
fn off_machine(s: &SinkIn<'_>, c: &PostgresSinkConfig) -> Result<(), ConfigError> {
    let Some(host) = pg_off_machine_host(&c.url) else {
        return Ok(());
    };
    let (missing, how) = if c.tls.mode == PgTlsMode::Disable {
        let how = match s.item.raw.get(TLS_MODE.name) {
            Some(_) => "tls_ca_file, the authority that signed the server's certificate, and remove tls_mode = \"disable\" (it then defaults to verify-full)",
            None => "tls_ca_file, the authority that signed the server's certificate (tls_mode then defaults to verify-full)",
        };
        ("tls_ca_file", how)
    } else if c.password == PgPassword::None && c.tls.cert_file.is_none() {
        (
            "credentials",
            "password_file (or password_env, or tls_cert_file and tls_key_file)",
        )
    } else {
        return Ok(());
    };
    let span = s.item.raw.get(URL.name).map_or(s.item.span(), |v| v.span());
    Err(s.item.err(
        span,
        URL.name,
        "a server on this machine (localhost, a loopback address, a unix socket), or verified TLS and credentials for one off it",
        Some(format!("host {host} without {missing}")),
        format!("add {how}; docs/security.md, `PostgreSQL`"),
    ))
}
