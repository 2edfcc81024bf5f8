//! The `[pipeline]` and `[service]` tables: their keys with types
//! ([`PIPELINE_KEYS`], [`SERVICE_KEYS`]) and the [`Settings`] they make.
//!
//! Limits: `batch_interval` at most [`crate::context::BATCH_INTERVAL_MAX`],
//! `partitions` 1 to [`crate::context::PARTITIONS_MAX`],
//! `parallelism` 1 to [`crate::context::PARALLELISM_MAX`]; the status
//! endpoint's keys are in `http_keys.rs`.
//! Must never: accept a value outside its key's range.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use super::model::{Settings, STOP_TIMEOUT_DEFAULT};

const BATCH_INTERVAL: KeySpec = KeySpec::of(
    "batch_interval",
    KeyType::Duration,
    "every batch covers this much time (at most 24h); 1s is a good start",
);
const PARTITIONS: KeySpec = KeySpec::whole(
    "partitions",
    1,
    crate::context::PARTITIONS_MAX as i64,
    "shuffle partitions of keyed steps; the default is 4",
);
const PARALLELISM: KeySpec = KeySpec::whole(
    "parallelism",
    1,
    crate::context::PARALLELISM_MAX as i64,
    "worker threads; leave it out to use every core",
);
const BATCH_RECORDS_MAX: KeySpec = KeySpec::whole(
    "batch_records_max",
    1,
    i64::MAX,
    "caps the records per source in one batch (bounds memory after downtime)",
);
const DEAD_LETTER_BYTES_MAX: KeySpec = KeySpec::whole(
    "dead_letter_bytes_max",
    1,
    i64::MAX,
    "bounds DATA_DIR/dead-letter/ (default 1 GiB); a batch whose dead letters would pass it fails, nothing is dropped",
);
const ADAPTIVE_BATCHES: KeySpec = KeySpec::of(
    "adaptive_batches",
    KeyType::Bool,
    "true sizes batches to what fits in an interval; false takes all durable input up to batch_records_max",
);
const DATA_DIR: KeySpec = KeySpec::of(
    "data_dir",
    KeyType::Text,
    "the data directory, relative to this file's directory",
);
const STOP_TIMEOUT: KeySpec = KeySpec::of(
    "stop_timeout",
    KeyType::Duration,
    "how long a stop may keep draining the backlog; keep it well under systemd's 90 s",
);
/// The keys of `[pipeline]`.
pub(super) const PIPELINE_KEYS: &[KeySpec] = &[
    BATCH_INTERVAL,
    PARTITIONS,
    PARALLELISM,
    BATCH_RECORDS_MAX,
    ADAPTIVE_BATCHES,
    DEAD_LETTER_BYTES_MAX,
    DATA_DIR,
    STOP_TIMEOUT,
];

/// The keys of `[service]` (those of the status endpoint).
pub(super) use super::http_keys::SERVICE_KEYS;

/// The settings of `[pipeline]` and `[service]` (defaults for what is
/// left out); relative paths are resolved against `base`.
pub(super) fn settings(p: &Item<'_>, svc: &Item<'_>, base: &Path) -> Result<Settings, ConfigError> {
    p.check_types(PIPELINE_KEYS)?;
    svc.check_types(SERVICE_KEYS)?;
    let duration = |k: &KeySpec, default: Duration| -> Result<Duration, ConfigError> {
        Ok(p.duration(k)?.map_or(default, |d| *d.get_ref()))
    };
    let (http_address, http) = super::http_keys::http(svc, base)?;
    Ok(Settings {
        batch_interval: batch_interval(p)?,
        partitions: p.positive(&PARTITIONS)?.map(|n| n as usize),
        parallelism: p.positive(&PARALLELISM)?.map(|n| n as usize),
        batch_records_max: p.positive(&BATCH_RECORDS_MAX)?,
        dead_letter_bytes_max: p.positive(&DEAD_LETTER_BYTES_MAX)?,
        adaptive_batches: p.flag(&ADAPTIVE_BATCHES)?.is_none_or(|b| *b.get_ref()),
        data_dir: data_dir(p, base)?,
        stop_timeout: duration(&STOP_TIMEOUT, STOP_TIMEOUT_DEFAULT)?,
        http_address,
        http,
    })
}

/// `batch_interval` (default 1 s), at most the engine's
/// [`crate::context::BATCH_INTERVAL_MAX`]: the limit `run` enforces.
fn batch_interval(p: &Item<'_>) -> Result<Duration, ConfigError> {
    let max = crate::context::BATCH_INTERVAL_MAX;
    match p.duration(&BATCH_INTERVAL)? {
        None => Ok(Duration::from_secs(1)),
        Some(d) if *d.get_ref() <= max => Ok(*d.get_ref()),
        Some(d) => Err(p.err(
            d.span(),
            BATCH_INTERVAL.name,
            format!("a duration of at most {} h", max.as_secs() / 3600),
            Some(format!("{} ms", d.get_ref().as_millis())),
            "a batch covers one interval; for a daily job use \"24h\" or an external timer",
        )),
    }
}

/// `data_dir`, resolved against `base` (not empty).
fn data_dir(p: &Item<'_>, base: &Path) -> Result<Option<PathBuf>, ConfigError> {
    match p.text(&DATA_DIR)? {
        Some(v) if v.get_ref().trim().is_empty() => Err(p.err(
            v.span(),
            DATA_DIR.name,
            "a directory path",
            Some("\"\"".into()),
            "leave the key out to use ./weir-data or --data-dir",
        )),
        v => Ok(v.map(|v| base.join(v.get_ref()))),
    }
}
