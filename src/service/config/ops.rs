//! THE table of step ops ([`OPS`]): one [`OpSpec`] per op with its name,
//! its keys and their types, the record kinds it accepts, the kind it
//! makes, whether it keeps state, and the function that checks its keys
//! and builds the [`Op`]. Everything that lists ops reads this table: the
//! validator (unknown keys, keys that do not apply, types, input kinds,
//! "did you mean"), `weir check`'s "one of ..." and the ops table of
//! `docs/pipeline.md` ([`ops_markdown`], held equal by a test).
//!
//! Adding an op: one entry here, its builder below, its [`Op`] variant
//! (`Op::name` and `compile.rs` match every variant, so the compiler
//! points at both).
//!
//! Limits: `top` keeps 1 to [`TOP_N_MAX`] pairs; windows and slides are
//! whole batches, a slide at most its window.
//! Must never: build streams (`compile.rs` does), or accept a key its
//! entry does not list.

use std::time::Duration;

use super::error::ConfigError;
use super::keys::{entry_names, find, impl_entry, keys_cell, KeySpec, KeyType};
use super::model::{Kind, OnBadRecord, Op, Predicate};
use super::validate::StepIn;

/// Most pairs `top` keeps.
pub const TOP_N_MAX: i64 = 1_000_000;

/// The kind a step makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// The kind it reads.
    Same,
    /// Always this kind.
    Is(Kind),
}

impl Output {
    /// The kind made from an input of `input`.
    pub(super) fn of(self, input: Kind) -> Kind {
        match self {
            Output::Same => input,
            Output::Is(k) => k,
        }
    }
}

/// One op: everything the validator, `weir check` and the docs know of it.
pub(super) struct OpSpec {
    /// `op = "..."`.
    pub(super) name: &'static str,
    /// The keys it takes besides `id`, `name`, `from` and `op`.
    pub(super) keys: &'static [KeySpec],
    /// The record kinds it reads.
    pub(super) inputs: &'static [Kind],
    /// What to do when the input is of another kind.
    pub(super) input_hint: &'static str,
    /// The kind it makes.
    pub(super) output: Output,
    /// Whether it keeps state across batches (then it needs a stable name).
    pub(super) stateful: bool,
    /// Checks its keys (types are already checked) and builds the op.
    pub(super) build: fn(&StepIn<'_>) -> Result<Op, ConfigError>,
}

const SEPARATOR: KeySpec = KeySpec::of(
    "separator",
    KeyType::Text,
    "split on this string; leave it out to split on whitespace",
);
const INITIAL: KeySpec = KeySpec::of(
    "initial",
    KeyType::Text,
    "a file of KEY<TAB>NUMBER lines the totals start from at the first start (relative paths are from this file's directory)",
);
const KEEP_EMPTY: KeySpec = KeySpec::of("keep_empty", KeyType::Bool, "keep empty pieces");
const CONTAINS: KeySpec = KeySpec::of("contains", KeyType::Text, "keep records containing it");
const STARTS_WITH: KeySpec = KeySpec::of(
    "starts_with",
    KeyType::Text,
    "keep records starting with it",
);
const ENDS_WITH: KeySpec = KeySpec::of("ends_with", KeyType::Text, "keep records ending with it");
const REGEX: KeySpec = KeySpec::of(
    "regex",
    KeyType::Text,
    "keep records matching it; in TOML, '...' strings need no backslash doubling",
);
const NOT_EMPTY: KeySpec = KeySpec::of(
    "not_empty",
    KeyType::Bool,
    "not_empty = true keeps non-empty records",
);
const INVERT: KeySpec = KeySpec::of(
    "invert",
    KeyType::Bool,
    "invert = true keeps the records that do not match",
);
const FIELD: KeySpec = KeySpec::of(
    "field",
    KeyType::Text,
    "a field of JSON records; dotted paths such as \"user.name\" reach into nested objects",
);
pub(super) const ON_ERROR: KeySpec = KeySpec::of(
    "on_error",
    KeyType::Text,
    "what a record the step cannot process does: \"fail\" (default) stops the batch naming the step, stream and record number (nothing is skipped); \"dead_letter\" writes it with its position and error to DATA_DIR/dead-letter/ and goes on (counted; `weir dead-letter list`); \"drop\" skips it (counted only)",
);
const FIELDS_LIST: KeySpec = KeySpec::of(
    "fields",
    KeyType::TextList,
    "dotted paths such as \"user.name\" reach into nested objects",
);
const FIELDS_TABLE: KeySpec = KeySpec::of(
    "fields",
    KeyType::TextTable,
    "old = \"new\" renames the top-level key old",
);
pub(super) const WINDOW: KeySpec = KeySpec::of(
    "window",
    KeyType::Duration,
    "a multiple of the batch interval",
);
pub(super) const SLIDE: KeySpec = KeySpec::of(
    "slide",
    KeyType::Duration,
    "a multiple of the batch interval",
);
const N: KeySpec = KeySpec::whole("n", 1, TOP_N_MAX, "how many pairs to keep");

const TEXTS: &[Kind] = &[Kind::Lines, Kind::Keyed, Kind::Counts];
const TEXT_HINT: &str = "it changes text lines, or the keys of pairs";
const JSON_HINT: &str = "parse the lines with op = \"parse_json\" first";
const SUM_INPUTS: &[Kind] = &[Kind::Keyed, Kind::Counts];
const SUM_HINT: &str = "sums keyed records' field or (key, number) pairs";
const COUNTED: &[Kind] = &[Kind::Lines, Kind::Keyed];

/// Every op, in the order `weir check` and the docs list them.
pub(super) const OPS: &[OpSpec] = &[
    OpSpec {
        name: "split",
        keys: &[SEPARATOR, KEEP_EMPTY],
        inputs: &[Kind::Lines],
        input_hint: "split works on text lines",
        output: Output::Is(Kind::Lines),
        stateful: false,
        build: split,
    },
    OpSpec {
        name: "lowercase",
        keys: &[],
        inputs: TEXTS,
        input_hint: TEXT_HINT,
        output: Output::Same,
        stateful: false,
        build: |_| Ok(Op::Lowercase),
    },
    OpSpec {
        name: "uppercase",
        keys: &[],
        inputs: TEXTS,
        input_hint: TEXT_HINT,
        output: Output::Same,
        stateful: false,
        build: |_| Ok(Op::Uppercase),
    },
    OpSpec {
        name: "trim",
        keys: &[],
        inputs: TEXTS,
        input_hint: TEXT_HINT,
        output: Output::Same,
        stateful: false,
        build: |_| Ok(Op::Trim),
    },
    OpSpec {
        name: "filter",
        keys: &[
            CONTAINS,
            STARTS_WITH,
            ENDS_WITH,
            REGEX,
            NOT_EMPTY,
            FIELD,
            INVERT,
        ],
        inputs: &[Kind::Lines, Kind::Records, Kind::Keyed, Kind::Counts],
        input_hint: "give `field` to test a field of JSON records",
        output: Output::Same,
        stateful: false,
        build: filter,
    },
    OpSpec {
        name: "parse_json",
        keys: &[ON_ERROR],
        inputs: &[Kind::Lines],
        input_hint: "parse_json reads text lines",
        output: Output::Is(Kind::Records),
        stateful: false,
        build: parse_json,
    },
    OpSpec {
        name: "select",
        keys: &[FIELDS_LIST],
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Records),
        stateful: false,
        build: select,
    },
    OpSpec {
        name: "rename",
        keys: &[FIELDS_TABLE],
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Records),
        stateful: false,
        build: rename,
    },
    OpSpec {
        name: "key_by",
        keys: &[FIELD],
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Keyed),
        stateful: false,
        build: key_by,
    },
    OpSpec {
        name: "count_by_key",
        keys: &[],
        inputs: COUNTED,
        input_hint: "counts lines (each line is its key) or keyed records",
        output: Output::Is(Kind::Counts),
        stateful: false,
        build: |_| Ok(Op::CountByKey),
    },
    OpSpec {
        name: "sum_by_key",
        keys: &[FIELD, ON_ERROR],
        inputs: SUM_INPUTS,
        input_hint: SUM_HINT,
        output: Output::Is(Kind::Counts),
        stateful: false,
        build: |s| {
            Ok(Op::SumByKey {
                field: sum_field(s, false)?,
                on_error: on_error(s)?,
            })
        },
    },
    OpSpec {
        name: "window_count",
        keys: &[WINDOW, SLIDE],
        inputs: COUNTED,
        input_hint: "counts lines or keyed records",
        output: Output::Is(Kind::Counts),
        stateful: true,
        build: |s| {
            let (window, slide) = window(s)?;
            Ok(Op::WindowCount { window, slide })
        },
    },
    OpSpec {
        name: "window_sum",
        keys: &[FIELD, WINDOW, SLIDE, ON_ERROR],
        inputs: SUM_INPUTS,
        input_hint: SUM_HINT,
        output: Output::Is(Kind::Counts),
        stateful: true,
        build: |s| {
            let field = sum_field(s, false)?;
            let (window, slide) = window(s)?;
            Ok(Op::WindowSum {
                window,
                slide,
                field,
                on_error: on_error(s)?,
            })
        },
    },
    OpSpec {
        name: "running_total",
        keys: &[FIELD, ON_ERROR, INITIAL],
        inputs: &[Kind::Lines, Kind::Keyed, Kind::Counts],
        input_hint:
            "counts lines or keyed records, or sums keyed records' field or (key, number) pairs",
        output: Output::Is(Kind::Counts),
        stateful: true,
        build: |s| {
            Ok(Op::RunningTotal {
                field: sum_field(s, true)?,
                on_error: on_error(s)?,
                initial: initial(s)?,
            })
        },
    },
    OpSpec {
        name: "top",
        keys: &[N],
        inputs: &[Kind::Counts],
        input_hint: "top ranks (key, number) pairs; count or sum first",
        output: Output::Is(Kind::Counts),
        stateful: false,
        build: |s| {
            Ok(Op::Top {
                n: s.item.positive(&N)?.map_or(10, |n| n as usize),
            })
        },
    },
    OpSpec {
        name: "kmeans",
        keys: super::ml_keys::KMEANS_KEYS,
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Records),
        stateful: true,
        build: super::ml_keys::kmeans,
    },
    OpSpec {
        name: "linear_regression",
        keys: super::ml_keys::REGRESSION_KEYS,
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Records),
        stateful: true,
        build: |s| super::ml_keys::regression(s, false),
    },
    OpSpec {
        name: "logistic_regression",
        keys: super::ml_keys::REGRESSION_KEYS,
        inputs: &[Kind::Records],
        input_hint: JSON_HINT,
        output: Output::Is(Kind::Records),
        stateful: true,
        build: |s| super::ml_keys::regression(s, true),
    },
    OpSpec {
        name: "sql",
        keys: super::sql_keys::KEYS,
        inputs: &[Kind::Lines, Kind::Records],
        input_hint: "a SQL step reads text lines (one column `value`) or JSON records",
        output: Output::Is(Kind::Records),
        stateful: false,
        build: super::sql_keys::build,
    },
];

impl_entry!(OpSpec);

/// The entry of op `name`.
pub(super) fn op_spec(name: &str) -> Option<&'static OpSpec> {
    find(OPS, name)
}

/// Every op's name, in table order.
pub fn op_names() -> Vec<&'static str> {
    entry_names(OPS)
}

/// The ops table of `docs/pipeline.md` (Markdown), from `OPS`.
pub fn ops_markdown() -> String {
    let mut out = String::from("| op | takes | makes | keys | state |\n|---|---|---|---|---|\n");
    for o in OPS {
        let makes = match o.output {
            Output::Same => "what it takes".to_string(),
            Output::Is(k) => k.label().to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {makes} | {} | {} |\n",
            o.name,
            Kind::labels(o.inputs, ", "),
            keys_cell(o.keys),
            match (o.stateful, o.name) {
                (true, _) => "kept under its name",
                // Its window's batches are state; without one it has none.
                (false, "sql") => "with `window`: kept under its name",
                (false, _) => "none",
            },
        ));
    }
    out
}

fn split(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let separator = s.item.text(&SEPARATOR)?;
    if let Some(sep) = &separator {
        if sep.get_ref().is_empty() {
            return Err(s.item.err(
                sep.span(),
                SEPARATOR.name,
                "a non-empty separator",
                Some("\"\"".into()),
                "leave `separator` out to split on whitespace",
            ));
        }
    }
    Ok(Op::Split {
        separator: separator.map(|x| x.get_ref().to_string()),
        keep_empty: s.item.flag(&KEEP_EMPTY)?.is_some_and(|b| *b.get_ref()),
    })
}

/// The filter's one test: exactly one of its test keys.
fn predicate(s: &StepIn<'_>) -> Result<Predicate, ConfigError> {
    let item = s.item;
    let mut preds = Vec::new();
    for (spec, make) in [
        (&CONTAINS, Predicate::Contains as fn(String) -> Predicate),
        (&STARTS_WITH, Predicate::StartsWith),
        (&ENDS_WITH, Predicate::EndsWith),
    ] {
        if let Some(v) = item.text(spec)? {
            preds.push((v.span(), make(v.get_ref().to_string())));
        }
    }
    if let Some(v) = item.text(&REGEX)? {
        let re = regex::Regex::new(v.get_ref()).map_err(|e| {
            let why = e.to_string();
            item.err(
                v.span(),
                REGEX.name,
                "a regular expression (Rust regex syntax)",
                Some(why.lines().last().unwrap_or("invalid").trim().to_string()),
                "check brackets and escapes; in TOML, '...' strings need no backslash doubling",
            )
        })?;
        preds.push((v.span(), Predicate::Regex(re)));
    }
    if let Some(v) = item.flag(&NOT_EMPTY)? {
        if !*v.get_ref() {
            return Err(item.err(
                v.span(),
                NOT_EMPTY.name,
                "true",
                Some("false".into()),
                "leave the step out to keep everything",
            ));
        }
        preds.push((v.span(), Predicate::NotEmpty));
    }
    if preds.len() != 1 {
        let span = preds.get(1).map_or(item.span(), |p| p.0.clone());
        return Err(item.src.err(
            span,
            item.path,
            "exactly one of contains, starts_with, ends_with, regex, not_empty",
            Some(format!("{}", preds.len())),
            "chain two filter steps to combine tests",
        ));
    }
    Ok(preds.pop().map_or(Predicate::NotEmpty, |p| p.1))
}

fn filter(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let predicate = predicate(s)?;
    let field = s.item.string(&FIELD)?;
    if field.is_some() {
        s.input.needs(
            &[Kind::Records, Kind::Keyed],
            "`field` picks a field of JSON records; without it lines or keys are tested",
        )?;
    } else {
        s.input
            .needs(TEXTS, "give `field` to test a field of JSON records")?;
    }
    Ok(Op::Filter {
        predicate,
        field,
        invert: s.item.flag(&INVERT)?.is_some_and(|b| *b.get_ref()),
    })
}

fn parse_json(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    Ok(Op::ParseJson {
        on_error: on_error(s)?,
    })
}

/// `on_error`: "fail" (the default), "drop" or "dead_letter".
/// `initial`, resolved against the pipeline file's directory.
fn initial(s: &StepIn<'_>) -> Result<Option<std::path::PathBuf>, ConfigError> {
    let Some(p) = s.item.text(&INITIAL)? else {
        return Ok(None);
    };
    if p.get_ref().trim().is_empty() {
        return Err(s.item.err(
            p.span(),
            INITIAL.name,
            "a file path",
            Some("\"\"".into()),
            "name the file of KEY<TAB>NUMBER lines, or leave `initial` out",
        ));
    }
    Ok(Some(s.base.join(p.get_ref())))
}

pub(super) fn on_error(s: &StepIn<'_>) -> Result<OnBadRecord, ConfigError> {
    let Some(v) = s.item.text(&ON_ERROR)? else {
        return Ok(OnBadRecord::Fail);
    };
    Ok(match *v.get_ref() {
        "fail" => OnBadRecord::Fail,
        "drop" => OnBadRecord::Drop,
        "dead_letter" => OnBadRecord::DeadLetter,
        other => {
            return Err(s.item.err(
                v.span(),
                ON_ERROR.name,
                "\"fail\", \"dead_letter\" or \"drop\"",
                Some(format!("\"{other}\"")),
                ON_ERROR.hint,
            ))
        }
    })
}

/// `fields` left out of `select` or `rename`.
fn no_fields(s: &StepIn<'_>, expected: &str) -> ConfigError {
    s.item.err(
        s.item.span(),
        "fields",
        expected,
        Some("nothing".into()),
        "add `fields`",
    )
}

/// `fields` set but empty.
fn empty_fields(s: &StepIn<'_>, span: std::ops::Range<usize>, expected: &str) -> ConfigError {
    s.item.err(span, "fields", expected, None, FIELDS_LIST.hint)
}

fn select(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let f = s
        .item
        .list(&FIELDS_LIST)?
        .ok_or_else(|| no_fields(s, "fields = [\"a\", \"b.c\"]"))?;
    if f.get_ref().is_empty() {
        let want = "a non-empty list of field names, e.g. [\"user\", \"text\"]";
        return Err(empty_fields(s, f.span(), want));
    }
    Ok(Op::Select {
        fields: f.into_inner(),
    })
}

fn rename(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let f = s
        .item
        .table(&FIELDS_TABLE)?
        .ok_or_else(|| no_fields(s, "fields = { old = \"new\" }"))?;
    if f.get_ref().is_empty() {
        let want = "a non-empty table old = \"new\", e.g. { usr = \"user\" }";
        return Err(empty_fields(s, f.span(), want));
    }
    Ok(Op::Rename {
        fields: f.into_inner(),
    })
}

fn key_by(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let f = s
        .item
        .required(&FIELD, "the field to key by", "add field = \"user\"")?;
    Ok(Op::KeyBy {
        field: f.get_ref().to_string(),
    })
}

/// The summed field of `sum_by_key`, `window_sum` and `running_total`:
/// keyed records need one, pairs have none; `counts` (running_total)
/// counts lines and keyed records without one.
fn sum_field(s: &StepIn<'_>, counts: bool) -> Result<Option<String>, ConfigError> {
    let field = s.item.text(&FIELD)?;
    match (s.input.kind, &field) {
        (Kind::Keyed, Some(_)) | (Kind::Counts, None) => {}
        (Kind::Lines | Kind::Keyed, None) if counts => {}
        (Kind::Keyed, None) => {
            return Err(s.item.err(
                s.item.span(),
                FIELD.name,
                "the numeric field to sum",
                Some("nothing".into()),
                "add field = \"amount\"",
            ))
        }
        (Kind::Counts, Some(f)) => {
            return Err(s.item.err(
                f.span(),
                FIELD.name,
                "no field: the pairs' numbers are summed",
                Some(format!("\"{}\"", f.get_ref())),
                "remove `field`",
            ))
        }
        _ => s.input.needs(SUM_INPUTS, SUM_HINT)?,
    }
    Ok(field.map(|f| f.get_ref().to_string()))
}

/// `window` (required) and `slide` (zero: every batch), both whole
/// batches, the slide at most the window.
pub(super) fn window(s: &StepIn<'_>) -> Result<(Duration, Duration), ConfigError> {
    let w = s.item.duration(&WINDOW)?.ok_or_else(|| {
        s.item.err(
            s.item.span(),
            WINDOW.name,
            "a window length such as \"30s\"",
            Some("nothing".into()),
            "add window = \"...\" (a multiple of the batch interval)",
        )
    })?;
    let slide = s.item.duration(&SLIDE)?;
    let iv = s.interval_ms;
    let bad = |key: &str, d: &Duration, span| {
        s.item.err(
            span,
            key,
            format!("a multiple of the batch interval ({iv} ms)"),
            Some(format!("{} ms", d.as_millis())),
            "windows and slides are whole numbers of batches",
        )
    };
    let window = *w.get_ref();
    if window.as_millis() % u128::from(iv) != 0 {
        return Err(bad(WINDOW.name, &window, w.span()));
    }
    let Some(slide) = slide else {
        return Ok((window, Duration::ZERO));
    };
    let d = *slide.get_ref();
    if d.as_millis() % u128::from(iv) != 0 {
        return Err(bad(SLIDE.name, &d, slide.span()));
    }
    if d > window {
        return Err(s.item.err(
            slide.span(),
            SLIDE.name,
            format!("a slide of at most the window ({} ms)", window.as_millis()),
            Some(format!("{} ms", d.as_millis())),
            "a window is computed every slide over the last `window`: lengthen the window or shorten the slide",
        ));
    }
    Ok((window, d))
}
