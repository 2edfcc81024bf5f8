//! The values of compiled pipelines: [`Num`], the number in a `(key,
//! number)` pair, and [`ToJson`], how a record becomes one JSON value (the
//! `json_files` sink), with `Show` for `print` and text files.
//!
//! Limits: none (pure conversions).
//! Must never: lose an integer's exactness (an overflowing integer sum
//! becomes a float, never wraps).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dstream::Text;
use crate::sink::Show;

/// The number in a `(key, number)` pair: exact integers, floats when a
/// summed field has a fraction (or an integer sum would overflow).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Num {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
}

impl Num {
    pub(super) fn add(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Float(a as f64 + b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }
    pub(super) fn sub(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_sub(b)
                .map_or(Num::Float(a as f64 - b as f64), Num::Int),
            (a, b) => Num::Float(a.as_f64() - b.as_f64()),
        }
    }
    /// As a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    pub(super) fn to_json(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

impl Show for Num {
    fn show(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _ = match self {
            Num::Int(i) => write!(out, "{i}"),
            Num::Float(f) => write!(out, "{f}"),
        };
    }
}

impl Show for Value {
    fn show(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

/// Renders a record as one JSON value (the `json_files` sink).
pub trait ToJson {
    /// The record as JSON.
    fn to_json(&self) -> Value;
}
impl ToJson for Text {
    fn to_json(&self) -> Value {
        Value::String(self.as_str().to_string())
    }
}
impl ToJson for Value {
    fn to_json(&self) -> Value {
        self.clone()
    }
}
impl ToJson for (Text, Value) {
    fn to_json(&self) -> Value {
        serde_json::json!({"key": self.0.as_str(), "value": self.1})
    }
}
impl ToJson for (Text, Num) {
    fn to_json(&self) -> Value {
        serde_json::json!({"key": self.0.as_str(), "value": self.1.to_json()})
    }
}
