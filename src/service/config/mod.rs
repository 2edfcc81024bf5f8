//! Pipeline files: TOML → a validated [`Pipeline`] (sources, steps, sinks
//! with their record kinds resolved), every mistake reported as a
//! [`ConfigError`] with file, line, column, key path, what was expected in
//! user words, what was found and a hint. The keys are documented in
//! `docs/pipeline.md`.
//!
//! The folder:
//! - `raw.rs`: the file as serde reads it (every key and value spanned,
//!   nothing typed);
//! - `keys.rs`: a key's name and type (`KeySpec`) and the typed reading
//!   of one table through them;
//! - `ops.rs`, `sinks.rs`, `sources.rs`: THE tables, one entry per op or
//!   kind (keys with types, input and output kinds, builder); `weir
//!   check`'s lists, "did you mean" and the docs tables come from them;
//! - `settings.rs`: `[pipeline]` and `[service]`; `http_keys.rs` the
//!   status endpoint's keys and the rule for an address off this machine;
//!   `listen_keys.rs`, `socket_keys.rs`, `nats_keys.rs` and
//!   `sink_postgres.rs` the keys of sources and sinks that face the
//!   network, each with its rule for a peer off this machine;
//! - `validate.rs`: the validator that walks the file through the tables;
//! - `model.rs`: the validated [`Pipeline`];
//! - `error.rs`: [`ConfigError`], its location, caret and suggestions.
//!
//! Limits: a pipeline file is at most [`CONFIG_BYTES_MAX`] bytes and
//! holds at most [`ITEMS_MAX`] sources + steps + sinks.
//! Must never: build streams or touch the disk beyond reading the file
//! (`compile.rs` turns a [`Pipeline`] into DStreams).

// A located error is several strings; it is built once, on the cold path
// of reading a file, so its size does not matter (ServiceError boxes it).
#![allow(clippy::result_large_err)]

mod error;
mod http_keys;
mod kafka_keys;
mod keys;
mod listen_keys;
mod ml_keys;
mod model;
mod nats_keys;
mod ops;
mod raw;
mod settings;
mod sink_postgres;
mod sinks;
mod socket_keys;
mod sources;
mod sql_keys;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use error::ConfigError;
pub use http_keys::service_markdown;
pub(crate) use kafka_keys::{kafka_sink_words, kafka_source_words};
pub use ml_keys::{ml_words, KMeansStepDef, RegressionStepDef, FEATURES_MAX};
pub use model::{
    HttpSettings, Kind, Node, OnBadRecord, Op, Pipeline, PostgresSinkDef, Predicate, Settings,
    SinkDef, SinkKind, SourceDef, SourceKind, SqlStepDef, StepDef, HTTP_ADDRESS_DEFAULT,
    HTTP_CONNECTIONS_DEFAULT, HTTP_HEAD_BYTES_DEFAULT, HTTP_HEAD_TIMEOUT_DEFAULT,
    STOP_TIMEOUT_DEFAULT,
};
pub use ops::{op_names, ops_markdown, TOP_N_MAX};
pub use raw::FOUND_CHARS_MAX;
pub use sinks::{sink_names, sinks_markdown, PRINT_COUNT_MAX};
pub use sources::{source_names, sources_markdown, GENERATOR_RATE_MAX, LINES_PER_RECORD_MAX};

/// Largest accepted pipeline file, in bytes.
pub const CONFIG_BYTES_MAX: usize = 1 << 20;
/// Most sources + steps + sinks in one pipeline.
pub const ITEMS_MAX: usize = 1000;

/// Reads and validates the pipeline file at `path`.
pub fn load(path: &Path) -> Result<Pipeline, super::ServiceError> {
    use std::io::Read as _;
    let read = |source| super::ServiceError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Capped by bytes read, not by the size the file claims: a device or
    // a pipe (`/dev/zero`, `<(yes)`) has none.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(CONFIG_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() > CONFIG_BYTES_MAX {
        return Err(super::ServiceError::TooLarge {
            path: path.to_path_buf(),
            limit_bytes: CONFIG_BYTES_MAX,
        });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        // The bytes before it are valid: count lines and characters there.
        let before = String::from_utf8_lossy(&e.as_bytes()[..offset]);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        super::ServiceError::NotText {
            path: path.to_path_buf(),
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(parse(&path.display().to_string(), &text, base)?)
}

/// Parses and validates pipeline text. `file` names it in errors; relative
/// paths in it (such as `data_dir`) are resolved against `base`.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Pipeline, ConfigError> {
    let src = error::Src { file, text };
    if text.len() > CONFIG_BYTES_MAX {
        return Err(src.err(
            0..0,
            "(file)",
            format!("at most {CONFIG_BYTES_MAX} bytes"),
            Some(format!("{} bytes", text.len())),
            "split the pipeline or shorten it",
        ));
    }
    validate::validate(&src, base)
}
