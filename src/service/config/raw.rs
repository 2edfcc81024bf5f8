//! The pipeline file as serde reads it, before anything is checked: every
//! table is a list of `key = value` entries, each key and value with its
//! span, so that every later message can point at the key or the value
//! (toml's own type errors name neither the key nor the type in user
//! words, so no value is typed here).
//!
//! Two passes over the text: [`RawTop`] (the top-level keys, their values
//! untyped) lets the validator check the sections' shapes first; then
//! [`RawFile`], whose tables keep the span of every entry.
//!
//! Limits: a value is described in at most [`FOUND_CHARS_MAX`] characters.
//! Must never: reject a file for its types or keys (the validator does,
//! with the key path), or panic on any value.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::{Spanned, Value};

/// Longest description of a found value, in characters (then `...`).
pub const FOUND_CHARS_MAX: usize = 60;

/// A table as read: keys and values with their spans.
pub(super) type RawTable = BTreeMap<Spanned<String>, Spanned<Value>>;

/// The first pass: the top-level keys and their values, shapes unchecked.
pub(super) type RawTop = BTreeMap<Spanned<String>, Spanned<Value>>;

/// The second pass, once every section is known to have its shape.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawFile {
    pub(super) pipeline: Option<Spanned<RawTable>>,
    pub(super) service: Option<Spanned<RawTable>>,
    #[serde(default)]
    pub(super) source: Vec<Spanned<RawTable>>,
    #[serde(default)]
    pub(super) step: Vec<Spanned<RawTable>>,
    #[serde(default)]
    pub(super) sink: Vec<Spanned<RawTable>>,
}

/// One table (`[pipeline]`, or one `[[step]]`) with its entries in file
/// order.
#[derive(Debug)]
pub(super) struct RawItem {
    /// The whole table (errors about a missing key point here).
    pub(super) span: Range<usize>,
    /// `key = value`, in the order they appear.
    pub(super) entries: Vec<(Spanned<String>, Spanned<Value>)>,
}

impl RawItem {
    /// An empty table at the start of the file (a section left out).
    pub(super) fn empty() -> RawItem {
        RawItem {
            span: 0..0,
            entries: Vec::new(),
        }
    }

    /// The value of `key`, if set.
    pub(super) fn get(&self, key: &str) -> Option<&Spanned<Value>> {
        self.entries
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }
}

impl From<Spanned<RawTable>> for RawItem {
    fn from(t: Spanned<RawTable>) -> RawItem {
        let span = t.span();
        let mut entries: Vec<_> = t.into_inner().into_iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        RawItem { span, entries }
    }
}

/// A found value in user words: strings quoted, numbers and booleans as
/// written, lists and tables named (at most [`FOUND_CHARS_MAX`] chars).
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) => format!("a list {}", clip(&shown(v))),
        Value::Table(_) => format!("a table {}", clip(&shown(v))),
        Value::Datetime(d) => format!("the date-time {d}"),
        _ => clip(&shown(v)),
    }
}

/// `v` as it could be written in TOML (shallow for nested values).
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{f:.1}")
        }
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(shown).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| format!("{k} = {}", shown(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// At most [`FOUND_CHARS_MAX`] characters of `s`, `...` if cut.
fn clip(s: &str) -> String {
    match s.char_indices().nth(FOUND_CHARS_MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}
