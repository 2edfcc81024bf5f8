//! Keys and their types: [`KeySpec`] (a key's name, its [`KeyType`] and
//! what it is for) is what the tables of `settings.rs`, `sources.rs`,
//! `ops.rs` and `sinks.rs` list, and [`Item`] reads one table of the file
//! through them: it refuses keys that do not apply, checks every value's
//! type against the spec before anything uses it, and hands builders typed
//! values with their spans.
//!
//! A wrong type is reported with the key path (`sink[0].count`), the type
//! in user words ("a whole number from 1 to 1000000", "a duration such as
//! \"2s\"...", "a boolean (true or false)") and the value found; the hint
//! is about quotes only when quotes are the fix (`count = "10"`,
//! `table = 5`), else the key's own hint.
//!
//! Limits: durations from 1 ms up to what fits `u64` milliseconds; whole
//! numbers are `i64`.
//! Must never: panic on a value of any type, or read a key its table does
//! not list (a builder asking for an unlisted key gets no value).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use toml::{Spanned, Value};

use super::error::{ConfigError, Src};
use super::raw::{describe, RawItem};

/// What a key's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// A whole number in `min..=max`.
    Whole {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// A duration: `"500ms"`, `"1s"`, `"2m"`, `"1h"` or whole milliseconds.
    Duration,
    /// `true` or `false`.
    Bool,
    /// A string.
    Text,
    /// A list of strings.
    TextList,
    /// A string, or a list of strings (`from` of a step that joins).
    Names,
    /// A list of whole numbers (ranges are checked by the builder).
    WholeList,
    /// A table of strings (`{ old = "new" }`).
    TextTable,
    /// A finite number (integer or decimal).
    Number,
    /// A list of numbers.
    NumberList,
    /// A list of lists of numbers (`[[0.0, 1.0], [5.0, 5.0]]`).
    NumberRows,
}

const DURATION_WORDS: &str =
    "a duration such as \"500ms\", \"1s\", \"2m\" or a whole number of milliseconds";

impl KeyType {
    /// What the value must be, in user words (the `expected` of errors).
    pub fn expected(self) -> String {
        match self {
            KeyType::Whole { min, max } if min == i64::MIN && max == i64::MAX => {
                "a whole number".to_string()
            }
            KeyType::Whole { min, max } => format!("a whole number from {min} to {max}"),
            KeyType::Duration => DURATION_WORDS.to_string(),
            KeyType::Bool => "a boolean (true or false)".to_string(),
            KeyType::Text => "text in quotes".to_string(),
            KeyType::TextList => "a list of strings such as [\"user\", \"text\"]".to_string(),
            KeyType::Names => {
                "text in quotes, or a list of them such as [\"a\", \"b\"]".to_string()
            }
            KeyType::WholeList => "a list of whole numbers such as [0, 3, 6]".to_string(),
            KeyType::TextTable => "a table of strings such as { old = \"new\" }".to_string(),
            KeyType::Number => "a number such as 0.5".to_string(),
            KeyType::NumberList => "a list of numbers such as [0.5, 1, -2]".to_string(),
            KeyType::NumberRows => {
                "a list of lists of numbers such as [[0.0, 1.0], [5.0, 5.0]]".to_string()
            }
        }
    }

    /// The type in a docs table cell.
    pub fn doc(self) -> String {
        match self {
            KeyType::Whole { min, max } if min == i64::MIN && max == i64::MAX => {
                "integer".to_string()
            }
            KeyType::Whole { min, max } if max == i64::MAX => format!("integer ≥ {min}"),
            KeyType::Whole { min, max } => format!("{min}..{max}"),
            KeyType::Duration => "duration".to_string(),
            KeyType::Bool => "boolean".to_string(),
            KeyType::Text => "string".to_string(),
            KeyType::TextList => "list of strings".to_string(),
            KeyType::Names => "string or list of strings".to_string(),
            KeyType::WholeList => "list of integers".to_string(),
            KeyType::TextTable => "table of strings".to_string(),
            KeyType::Number => "number".to_string(),
            KeyType::NumberList => "list of numbers".to_string(),
            KeyType::NumberRows => "list of lists of numbers".to_string(),
        }
    }

    /// Whether `v` has this type (ranges and formats are checked later).
    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (KeyType::Whole { .. }, Value::Integer(_))
            | (KeyType::Duration, Value::Integer(_) | Value::String(_))
            | (KeyType::Bool, Value::Boolean(_))
            | (KeyType::Text, Value::String(_)) => true,
            (KeyType::TextList | KeyType::Names, Value::Array(a)) => a.iter().all(Value::is_str),
            (KeyType::Names, Value::String(_)) => true,
            (KeyType::WholeList, Value::Array(a)) => a.iter().all(Value::is_integer),
            (KeyType::TextTable, Value::Table(t)) => t.values().all(Value::is_str),
            (KeyType::Number, v) => number(v).is_some(),
            (KeyType::NumberList, Value::Array(a)) => a.iter().all(|x| number(x).is_some()),
            (KeyType::NumberRows, Value::Array(a)) => a.iter().all(|r| match r {
                Value::Array(r) => r.iter().all(|x| number(x).is_some()),
                _ => false,
            }),
            _ => false,
        }
    }

    /// `s` (a quoted value) read as this type without its quotes, if that
    /// would be valid: then removing the quotes is the fix.
    fn unquoted(self, s: &str) -> Option<String> {
        let t = s.trim();
        let ok = match self {
            KeyType::Whole { min, max } => t.parse::<i64>().is_ok_and(|n| n >= min && n <= max),
            KeyType::Bool => t == "true" || t == "false",
            KeyType::Number => t.parse::<f64>().is_ok_and(f64::is_finite),
            _ => false,
        };
        ok.then(|| t.to_string())
    }
}

/// A key a table lists: name, type, and what it is for (the hint of its
/// errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub ty: KeyType,
    /// What it is for, in a sentence (shown as the hint).
    pub hint: &'static str,
}

impl KeySpec {
    /// A whole number in `min..=max`.
    pub const fn whole(name: &'static str, min: i64, max: i64, hint: &'static str) -> KeySpec {
        KeySpec {
            name,
            ty: KeyType::Whole { min, max },
            hint,
        }
    }
    /// A key of another type.
    pub const fn of(name: &'static str, ty: KeyType, hint: &'static str) -> KeySpec {
        KeySpec { name, ty, hint }
    }
}

/// An entry of one of the tables: an op (`ops.rs`), a sink kind
/// (`sinks.rs`) or a source kind (`sources.rs`).
pub(super) trait Entry: Sync + 'static {
    /// Its name in files (`op = "..."`, `kind = "..."`).
    fn name(&self) -> &'static str;
    /// The keys it takes besides the common ones.
    fn keys(&self) -> &'static [KeySpec];
}

/// Implements [`Entry`] for a table's entry type from its `name` and
/// `keys` fields.
macro_rules! impl_entry {
    ($t:ty) => {
        impl super::keys::Entry for $t {
            fn name(&self) -> &'static str {
                self.name
            }
            fn keys(&self) -> &'static [super::keys::KeySpec] {
                self.keys
            }
        }
    };
}
pub(super) use impl_entry;

/// The entry of `table` named `name`.
pub(super) fn find<E: Entry>(table: &'static [E], name: &str) -> Option<&'static E> {
    table.iter().find(|e| e.name() == name)
}

/// The names of `table`'s entries, in table order.
pub(super) fn entry_names<E: Entry>(table: &[E]) -> Vec<&'static str> {
    table.iter().map(Entry::name).collect()
}

/// The names of `specs`, in order.
pub(super) fn names(specs: &[KeySpec]) -> Vec<&'static str> {
    specs.iter().map(|k| k.name).collect()
}

/// The keys of a docs table cell: "`n` (1..1000000), ..." or "none".
pub(super) fn keys_cell(keys: &[KeySpec]) -> String {
    if keys.is_empty() {
        return "none".to_string();
    }
    let cells: Vec<String> = keys
        .iter()
        .map(|k| format!("`{}` ({})", k.name, k.ty.doc()))
        .collect();
    cells.join(", ")
}

/// One table of the file, read through key specs.
pub(super) struct Item<'a> {
    pub(super) src: &'a Src<'a>,
    /// `pipeline`, `source[0]`, `step[2]`...: prefixes the key in errors.
    pub(super) path: &'a str,
    pub(super) raw: &'a RawItem,
}

impl Item<'_> {
    /// The whole table's span (for keys that are missing).
    pub(super) fn span(&self) -> Range<usize> {
        self.raw.span.clone()
    }

    /// `path.key`.
    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The error at `span` about `key` of this item.
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: &str,
        expected: impl Into<String>,
        found: Option<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        self.src.err(span, self.key(key), expected, found, hint)
    }

    /// Refuses a set key that is neither in `common` nor in `allowed`
    /// (those that apply to `what`, e.g. `op = "top"`).
    pub(super) fn only_keys(
        &self,
        what: &str,
        common: &[&str],
        allowed: &[KeySpec],
    ) -> Result<(), ConfigError> {
        for (k, _) in &self.raw.entries {
            let k = k.get_ref().as_str();
            if common.contains(&k) || allowed.iter().any(|a| a.name == k) {
                continue;
            }
            let takes = if allowed.is_empty() {
                "no further keys".to_string()
            } else {
                names(allowed).join(", ")
            };
            let span = self.value_span(k);
            return Err(self.err(
                span,
                k,
                format!("only keys that apply to {what} ({takes})"),
                Some(format!("`{k}`")),
                format!("remove `{k}`, or change the kind; docs/pipeline.md says what each takes"),
            ));
        }
        Ok(())
    }

    /// Where the value of key `k` is (the item's span if it is not set).
    pub(super) fn value_span(&self, k: &str) -> Range<usize> {
        self.raw.get(k).map_or(self.span(), |v| v.span())
    }

    /// Checks the type of every set key that `specs` lists, in file order.
    pub(super) fn check_types(&self, specs: &[KeySpec]) -> Result<(), ConfigError> {
        for (k, _) in &self.raw.entries {
            if let Some(spec) = specs.iter().find(|s| s.name == k.get_ref()) {
                self.typed(spec)?;
            }
        }
        Ok(())
    }

    /// The value of `spec`'s key if set, after checking its type.
    fn typed(&self, spec: &KeySpec) -> Result<Option<&Spanned<Value>>, ConfigError> {
        let Some(v) = self.raw.get(spec.name) else {
            return Ok(None);
        };
        if spec.ty.accepts(v.get_ref()) {
            return Ok(Some(v));
        }
        let hint = match v.get_ref() {
            Value::String(s) => spec.ty.unquoted(s).map_or_else(
                || spec.hint.to_string(),
                |bare| format!("write it without quotes: {} = {bare}", spec.name),
            ),
            Value::Integer(_) | Value::Float(_) | Value::Boolean(_) if spec.ty == KeyType::Text => {
                format!(
                    "put it in quotes: {} = \"{}\"",
                    spec.name,
                    describe(v.get_ref())
                )
            }
            _ => spec.hint.to_string(),
        };
        Err(self.err(
            v.span(),
            spec.name,
            spec.ty.expected(),
            Some(describe(v.get_ref())),
            hint,
        ))
    }

    /// A text key's value.
    pub(super) fn text(&self, spec: &KeySpec) -> Result<Option<Spanned<&str>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::String(s) => Some(Spanned::new(v.span(), s.as_str())),
            _ => None,
        }))
    }

    /// A text key's value, owned.
    pub(super) fn string(&self, spec: &KeySpec) -> Result<Option<String>, ConfigError> {
        Ok(self.text(spec)?.map(|s| s.get_ref().to_string()))
    }

    /// A text key that must be set: `expected` and `hint` say what to add.
    pub(super) fn required(
        &self,
        spec: &KeySpec,
        expected: &str,
        hint: &str,
    ) -> Result<Spanned<&str>, ConfigError> {
        self.text(spec)?.ok_or_else(|| {
            self.err(
                self.span(),
                spec.name,
                expected,
                Some("nothing".into()),
                hint,
            )
        })
    }

    /// A boolean key's value.
    pub(super) fn flag(&self, spec: &KeySpec) -> Result<Option<Spanned<bool>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            _ => None,
        }))
    }

    /// A whole-number key's value, inside its spec's range.
    pub(super) fn whole(&self, spec: &KeySpec) -> Result<Option<i64>, ConfigError> {
        let Some(v) = self.typed(spec)? else {
            return Ok(None);
        };
        let (Value::Integer(n), KeyType::Whole { min, max }) = (v.get_ref(), spec.ty) else {
            return Ok(None);
        };
        if *n < min || *n > max {
            return Err(self.err(
                v.span(),
                spec.name,
                spec.ty.expected(),
                Some(n.to_string()),
                spec.hint,
            ));
        }
        Ok(Some(*n))
    }

    /// A whole-number key's value whose spec's range starts at 0 or
    /// above, as `u64`.
    pub(super) fn positive(&self, spec: &KeySpec) -> Result<Option<u64>, ConfigError> {
        Ok(self.whole(spec)?.map(|n| n.unsigned_abs()))
    }

    /// A list-of-strings key's value.
    pub(super) fn list(&self, spec: &KeySpec) -> Result<Option<Spanned<Vec<String>>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Array(a) => Some(Spanned::new(
                v.span(),
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            )),
            _ => None,
        }))
    }

    /// A `Names` key's value: one string, or each of a list (with the
    /// span of the whole value).
    pub(super) fn names(
        &self,
        spec: &KeySpec,
    ) -> Result<Option<Spanned<Vec<String>>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::String(s) => Some(Spanned::new(v.span(), vec![s.clone()])),
            Value::Array(a) => Some(Spanned::new(
                v.span(),
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
            )),
            _ => None,
        }))
    }

    /// A list-of-whole-numbers key's value.
    pub(super) fn whole_list(
        &self,
        spec: &KeySpec,
    ) -> Result<Option<Spanned<Vec<i64>>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Array(a) => Some(Spanned::new(
                v.span(),
                a.iter().filter_map(Value::as_integer).collect(),
            )),
            _ => None,
        }))
    }

    /// A table-of-strings key's value.
    pub(super) fn table(
        &self,
        spec: &KeySpec,
    ) -> Result<Option<Spanned<BTreeMap<String, String>>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Table(t) => Some(Spanned::new(
                v.span(),
                t.iter()
                    .filter_map(|(k, x)| x.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect(),
            )),
            _ => None,
        }))
    }

    /// A number key's value.
    pub(super) fn number(&self, spec: &KeySpec) -> Result<Option<Spanned<f64>>, ConfigError> {
        Ok(self
            .typed(spec)?
            .and_then(|v| number(v.get_ref()).map(|n| Spanned::new(v.span(), n))))
    }

    /// A list-of-numbers key's value.
    pub(super) fn numbers(&self, spec: &KeySpec) -> Result<Option<Spanned<Vec<f64>>>, ConfigError> {
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Array(a) => Some(Spanned::new(
                v.span(),
                a.iter().filter_map(number).collect(),
            )),
            _ => None,
        }))
    }

    /// A list-of-lists-of-numbers key's value.
    pub(super) fn number_rows(
        &self,
        spec: &KeySpec,
    ) -> Result<Option<Spanned<Vec<Vec<f64>>>>, ConfigError> {
        let row = |r: &Value| match r {
            Value::Array(r) => Some(r.iter().filter_map(number).collect()),
            _ => None,
        };
        Ok(self.typed(spec)?.and_then(|v| match v.get_ref() {
            Value::Array(a) => Some(Spanned::new(v.span(), a.iter().filter_map(row).collect())),
            _ => None,
        }))
    }

    /// A duration key's value (at least 1 ms); `hint` says what it is for.
    pub(super) fn duration(
        &self,
        spec: &KeySpec,
    ) -> Result<Option<Spanned<Duration>>, ConfigError> {
        let Some(v) = self.typed(spec)? else {
            return Ok(None);
        };
        let found = describe(v.get_ref());
        let ms = match v.get_ref() {
            Value::Integer(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
            Value::String(s) => duration_ms(s),
            _ => None,
        };
        let ms = ms
            .ok_or_else(|| self.err(v.span(), spec.name, DURATION_WORDS, Some(found), spec.hint))?;
        Ok(Some(Spanned::new(v.span(), Duration::from_millis(ms))))
    }
}

/// A TOML integer or finite float as `f64`.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(n) => Some(*n as f64),
        Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

/// `"500ms"`, `"1s"`, `"2m"` / `"2min"`, `"1h"` in milliseconds; `None`
/// for anything else, zero or an overflow.
fn duration_ms(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    if n == 0 {
        return None;
    }
    n.checked_mul(mult)
}
