//! The `postgres` sink of pipeline files: each record becomes the cells of
//! one row by the sink's column sources (`config::PostgresSinkDef`), in a
//! step named `postgres.<sink_id>.in`, then `save_to_postgres`.
//!
//! Sources: text lines `line`; pairs `key`, `value` and (keyed records)
//! `value.<path>`; JSON records `.` (the whole record as a JSON document)
//! or a dotted field path. A missing field is NULL; a JSON string is
//! text, a number an integer or float, an object or array a JSON document.
//! Limits: none of its own (the sink's). Must never: fail on a record
//! (a value that does not fit its column is the sink's bad row, under
//! its `on_error`).

use serde_json::Value;

use super::compile::field;
use super::config::PostgresSinkDef;
use super::values::Num;
use crate::dstream::{DStream, Data, Text};
use crate::sink::{PgCell, PgValue};

/// A record whose parts a column source names.
pub trait ColumnSource {
    /// The value of `source` in this record.
    fn cell(&self, source: &str) -> PgValue;
}

fn num(n: &Num) -> PgValue {
    match n {
        Num::Int(i) => PgValue::Int(*i),
        Num::Float(f) => PgValue::Float(*f),
    }
}

fn json_at(v: &Value, path: &str) -> PgValue {
    field(v, path).map_or(PgValue::Null, PgCell::pg_value)
}

impl ColumnSource for Text {
    fn cell(&self, _source: &str) -> PgValue {
        self.pg_value()
    }
}

impl ColumnSource for Value {
    fn cell(&self, source: &str) -> PgValue {
        match source {
            "." => PgValue::Json(self.to_string()),
            path => json_at(self, path),
        }
    }
}

impl ColumnSource for (Text, Value) {
    fn cell(&self, source: &str) -> PgValue {
        match source {
            "key" => self.0.pg_value(),
            "value" => self.1.pg_value(),
            other => json_at(&self.1, other.strip_prefix("value.").unwrap_or(other)),
        }
    }
}

impl ColumnSource for (Text, Num) {
    fn cell(&self, source: &str) -> PgValue {
        match source {
            "key" => self.0.pg_value(),
            _ => num(&self.1),
        }
    }
}

/// Adds the sink on `d`.
pub fn add_postgres<T: Data + ColumnSource>(
    d: &DStream<T>,
    def: &PostgresSinkDef,
) -> crate::Result<std::sync::Arc<dyn crate::sink::SinkCounters>> {
    let sources = def.sources.clone();
    let stats = d
        .map(move |r| sources.iter().map(|s| r.cell(s)).collect::<Vec<PgValue>>())
        .name(&format!("postgres.{}.in", def.config.sink_id))
        .save_to_postgres(def.config.clone())?;
    Ok(stats)
}
