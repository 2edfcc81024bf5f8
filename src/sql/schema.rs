//! The columns of a SQL table made from JSON records: the six column
//! types a pipeline file can declare, a declared schema, inference from a
//! batch, the fit test a record passes before it becomes a row, and the
//! schema file an inferred schema is kept in.
//!
//! Limits: at most [`COLUMNS_MAX`] columns; a schema file at most
//! [`SCHEMA_FILE_BYTES_MAX`] bytes.
//! Must never: guess a type for a record after the schema is fixed (a
//! record that does not fit is a bad record), or let an inferred schema
//! change once it is saved.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use super::SqlError;

/// Most columns a declared or inferred schema may have.
pub const COLUMNS_MAX: usize = 1_000;
/// Largest schema file read back.
pub const SCHEMA_FILE_BYTES_MAX: u64 = 1 << 20;

/// A column's type, as a pipeline file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `string`: UTF-8 text (Arrow `Utf8`).
    String,
    /// `bigint`: a signed 64-bit integer.
    Bigint,
    /// `double`: a 64-bit float; integers fit too.
    Double,
    /// `boolean`.
    Boolean,
    /// `timestamp`: milliseconds since the epoch (UTC), from an integer
    /// or an RFC 3339 string.
    Timestamp,
    /// `json`: any value, kept as its JSON text.
    Json,
}

/// Every type name a pipeline file may use, and its type.
pub const TYPE_NAMES: &[(&str, ColumnType)] = &[
    ("string", ColumnType::String),
    ("bigint", ColumnType::Bigint),
    ("double", ColumnType::Double),
    ("boolean", ColumnType::Boolean),
    ("timestamp", ColumnType::Timestamp),
    ("json", ColumnType::Json),
];

impl ColumnType {
    /// The type named `name` (one of [`TYPE_NAMES`]).
    pub fn parse(name: &str) -> Option<ColumnType> {
        TYPE_NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// Its name in a pipeline file.
    pub fn name(self) -> &'static str {
        TYPE_NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("json", |(n, _)| n)
    }

    /// The Arrow type of its column.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Bigint => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }

    /// Whether `v` (not null) fits a column of this type.
    pub fn fits(self, v: &Value) -> bool {
        match self {
            ColumnType::String => v.is_string(),
            ColumnType::Bigint => v.as_i64().is_some(),
            ColumnType::Double => v.is_number(),
            ColumnType::Boolean => v.is_boolean(),
            ColumnType::Timestamp => timestamp_ms(v).is_some(),
            ColumnType::Json => true,
        }
    }

    /// The type inference gives a single value.
    fn of(v: &Value) -> Option<ColumnType> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(_) => ColumnType::Boolean,
            Value::Number(n) if n.as_i64().is_some() => ColumnType::Bigint,
            Value::Number(_) => ColumnType::Double,
            Value::String(_) => ColumnType::String,
            Value::Array(_) | Value::Object(_) => ColumnType::Json,
        })
    }

    /// The type of a column holding values of both types.
    fn merge(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Bigint, Double) | (Double, Bigint) => Double,
            _ => Json,
        }
    }
}

/// Milliseconds since the epoch of a `timestamp` value: an integer, or an
/// RFC 3339 string.
pub fn timestamp_ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
            Some(t.timestamp_millis())
        }
        _ => None,
    }
}

/// The columns of a table of JSON records, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns(pub Vec<(String, ColumnType)>);

impl Columns {
    /// Checks the limits and that no name repeats.
    pub fn new(columns: Vec<(String, ColumnType)>) -> Result<Columns, SqlError> {
        if columns.len() > COLUMNS_MAX {
            return Err(SqlError::TooManyColumns {
                count: columns.len(),
                max: COLUMNS_MAX,
            });
        }
        for (i, (name, _)) in columns.iter().enumerate() {
            if columns[..i].iter().any(|(n, _)| n == name) {
                return Err(SqlError::DuplicateColumn { name: name.clone() });
            }
        }
        Ok(Columns(columns))
    }

    /// The Arrow schema: every column nullable (a missing field is NULL).
    pub fn arrow(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .0
            .iter()
            .map(|(n, t)| Field::new(n, t.arrow(), true))
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The first column `record` does not fit: `(column, expected type,
    /// what was found)`. Fields the schema does not name are ignored; a
    /// missing field or `null` fits any column.
    pub fn misfit(&self, record: &Value) -> Option<(String, &'static str, String)> {
        let Value::Object(map) = record else {
            return Some(("(record)".into(), "a JSON object", kind_of(record)));
        };
        for (name, ty) in &self.0 {
            match map.get(name) {
                None | Some(Value::Null) => {}
                Some(v) if ty.fits(v) => {}
                Some(v) => return Some((name.clone(), ty.name(), kind_of(v))),
            }
        }
        None
    }

    /// Infers the columns of `records` (objects; other values are
    /// skipped): every top-level field, in the order first seen, with the
    /// merged type of its values (integers and floats make `double`, any
    /// other mix `json`; a field only ever `null` is `string`).
    pub fn infer<'a>(records: impl IntoIterator<Item = &'a Value>) -> Result<Columns, SqlError> {
        let mut cols: Vec<(String, Option<ColumnType>)> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for r in records {
            let Value::Object(map) = r else { continue };
            for (k, v) in map {
                let t = ColumnType::of(v);
                match index.get(k) {
                    Some(&i) => cols[i].1 = merge_opt(cols[i].1, t),
                    // One past the limit is enough for `new` to refuse.
                    None if cols.len() > COLUMNS_MAX => {}
                    None => {
                        index.insert(k.clone(), cols.len());
                        cols.push((k.clone(), t));
                    }
                }
            }
        }
        let cols = cols
            .into_iter()
            .map(|(n, t)| (n, t.unwrap_or(ColumnType::String)))
            .collect();
        Columns::new(cols)
    }

    /// `name: type, ...` for logs and messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(n, t)| format!("{n}: {}", t.name()))
            .collect();
        parts.join(", ")
    }

    /// The schema file's text: one JSON object `{"columns": [[name,
    /// type], ...]}`.
    pub fn to_file(&self) -> String {
        let cols: Vec<Value> = self
            .0
            .iter()
            .map(|(n, t)| Value::from(vec![Value::from(n.as_str()), Value::from(t.name())]))
            .collect();
        let mut s = serde_json::json!({ "columns": cols }).to_string();
        s.push('\n');
        s
    }

    /// Reads a schema file's text back.
    pub fn from_file(text: &str) -> Result<Columns, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let cols = v
            .get("columns")
            .and_then(Value::as_array)
            .ok_or("no \"columns\" list")?;
        let mut out = Vec::with_capacity(cols.len());
        for c in cols {
            let pair = c.as_array().filter(|p| p.len() == 2);
            let (n, t) = match pair.map(|p| (p[0].as_str(), p[1].as_str())) {
                Some((Some(n), Some(t))) => (n, t),
                _ => return Err(format!("a column is not [name, type]: {c}")),
            };
            let t = ColumnType::parse(t).ok_or_else(|| format!("unknown column type \"{t}\""))?;
            out.push((n.to_string(), t));
        }
        Columns::new(out).map_err(|e| e.to_string())
    }
}

fn merge_opt(a: Option<ColumnType>, b: Option<ColumnType>) -> Option<ColumnType> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge(b)),
        (a, b) => a.or(b),
    }
}

/// A value's JSON kind, in words.
pub fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string \"{}\"", crate::dstream::cut_text(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn column_type() -> impl Strategy<Value = ColumnType> {
        (0..TYPE_NAMES.len()).prop_map(|i| TYPE_NAMES[i].1)
    }

    proptest! {
        /// A schema file round-trips, and damage to its text (cut short,
        /// a byte changed) is an error or a valid schema, never a panic.
        #[test]
        fn schema_files_round_trip_and_damage_is_an_error(
            cols in prop::collection::btree_map("[a-z_\\\"é ]{1,8}", column_type(), 1..12),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            junk in any::<u8>(),
        ) {
            let c = Columns::new(cols.into_iter().collect()).unwrap();
            let text = c.to_file();
            prop_assert_eq!(&Columns::from_file(&text).unwrap(), &c);
            let bytes = text.as_bytes();
            let _ = Columns::from_file(&String::from_utf8_lossy(&bytes[..cut.index(bytes.len())]));
            let mut damaged = bytes.to_vec();
            let i = flip.index(damaged.len());
            damaged[i] = junk;
            if let Ok(read) = Columns::from_file(&String::from_utf8_lossy(&damaged)) {
                // What reads back is a valid schema, whatever it is.
                prop_assert!(Columns::new(read.0.clone()).is_ok());
            }
        }
    }

    #[test]
    fn inference_merges_types_in_first_seen_order() {
        let rows = [
            json!({"a": 1, "b": "x", "n": null}),
            json!({"a": 2.5, "c": true, "b": 3}),
            json!("not an object"),
        ];
        let c = Columns::infer(rows.iter()).unwrap();
        assert_eq!(c.describe(), "a: double, b: json, n: string, c: boolean");
    }

    #[test]
    fn misfit_names_column_expected_and_found() {
        let c = Columns::new(vec![
            ("n".into(), ColumnType::Bigint),
            ("t".into(), ColumnType::Timestamp),
        ])
        .unwrap();
        assert_eq!(
            c.misfit(&json!({"n": 1, "t": "2026-12-06T10:00:00Z"})),
            None
        );
        assert_eq!(c.misfit(&json!({"x": "ignored"})), None);
        let (col, want, got) = c.misfit(&json!({"n": 1.5})).unwrap();
        assert_eq!((col.as_str(), want), ("n", "bigint"));
        assert_eq!(got, "the number 1.5");
        assert!(c.misfit(&json!([1])).is_some());
        assert!(c.misfit(&json!({"t": "yesterday"})).is_some());
    }

    #[test]
    fn schema_file_round_trips_and_refuses_damage() {
        let c = Columns::new(vec![
            ("word".into(), ColumnType::String),
            ("n".into(), ColumnType::Double),
        ])
        .unwrap();
        assert_eq!(Columns::from_file(&c.to_file()).unwrap(), c);
        assert!(Columns::from_file("{").is_err());
        assert!(Columns::from_file(r#"{"columns": [["a", "float128"]]}"#).is_err());
        assert!(Columns::from_file(r#"{"columns": [["a", "string"], ["a", "bigint"]]}"#).is_err());
    }

    #[test]
    fn too_many_columns_refused_at_the_limit() {
        let at: Vec<_> = (0..COLUMNS_MAX)
            .map(|i| (format!("c{i}"), ColumnType::String))
            .collect();
        assert!(Columns::new(at.clone()).is_ok());
        let mut over = at;
        over.push(("x".into(), ColumnType::String));
        assert!(matches!(
            Columns::new(over),
            Err(SqlError::TooManyColumns { .. })
        ));
    }
}
