//! The keys of `op = "sql"` and its checks: the query, the input tables
//! (every id of `from`, the first also as `batch`), the columns of JSON
//! records (declared, or `schema = "infer"`), static tables, a window.
//! With the `sql` feature the query is planned here, against the inputs'
//! columns and the static tables' (loaded for it), so `weir check` shows a
//! query's mistake at its line and column in the pipeline file.
//!
//! Limits: as `crate::sql` (query length, columns, static tables).
//! Must never: accept a query it could not at least parse, or a JSON
//! input without declared columns or an explicit `schema = "infer"`.

use std::path::PathBuf;

use super::error::ConfigError;
use super::keys::{KeySpec, KeyType};
use super::model::{Kind, Op, SqlStepDef};
use super::ops::{on_error, window, ON_ERROR, SLIDE, WINDOW};
use super::validate::StepIn;

pub(super) const QUERY: KeySpec = KeySpec::of(
    "query",
    KeyType::Text,
    "the query; its input is table `batch` (and its id); '''...''' strings keep line breaks and need no escaping",
);
pub(super) const SCHEMA: KeySpec = KeySpec::of(
    "schema",
    KeyType::Text,
    "schema = \"infer\": JSON records' columns come from the first batch (logged, saved under DATA_DIR/sql/)",
);
pub(super) const COLUMNS: KeySpec = KeySpec::of(
    "columns",
    KeyType::TextList,
    "JSON records' columns in order as \"name type\"; types: string, bigint, double, boolean, timestamp, json",
);
pub(super) const STATIC_TABLES: KeySpec = KeySpec::of(
    "static_tables",
    KeyType::TextTable,
    "name = \"file\": a CSV file with a header line, or JSON lines (.json, .jsonl, .ndjson), loaded at start",
);

/// The keys of `op = "sql"`.
pub(super) const KEYS: &[KeySpec] = &[
    QUERY,
    COLUMNS,
    SCHEMA,
    STATIC_TABLES,
    WINDOW,
    SLIDE,
    ON_ERROR,
];

/// Checks an `op = "sql"` step and builds its op.
pub(super) fn build(s: &StepIn<'_>) -> Result<Op, ConfigError> {
    let query = s
        .item
        .required(&QUERY, "a query", "add query = '''SELECT ... FROM batch'''")?;
    let (columns, infer) = columns(s)?;
    let (window, slide) = match s.item.raw.get(WINDOW.name) {
        Some(_) => window(s)?,
        None => (std::time::Duration::ZERO, std::time::Duration::ZERO),
    };
    let named = s.item.raw.get("id").or(s.item.raw.get("name")).is_some();
    if (!window.is_zero() || infer) && !named {
        let (what, why) = match infer {
            true => (
                "with schema = \"infer\"",
                "its inferred columns are kept in a file named after it",
            ),
            false => (
                "with a window",
                "the window's batches are kept under its name",
            ),
        };
        return Err(s.item.err(
            s.item.span(),
            "id",
            format!("an `id` (or `name`) on a sql step {what}"),
            Some("nothing".into()),
            format!("{why} across restarts; add id = \"...\" and keep it"),
        ));
    }
    let def = SqlStepDef {
        query: query.get_ref().to_string(),
        columns,
        infer,
        static_tables: static_tables(s)?,
        window,
        slide,
        on_error: on_error(s)?,
    };
    plan::check(s, &def, query.span())?;
    Ok(Op::Sql(Box::new(def)))
}

/// The input tables: (names, kind); the first is also `batch`.
pub(super) fn table_names(s: &StepIn<'_>) -> Vec<(Vec<String>, Kind)> {
    let first = (
        vec!["batch".to_string(), s.input.id.to_string()],
        s.input.kind,
    );
    let rest = s.also.iter().map(|i| (vec![i.id.to_string()], i.kind));
    std::iter::once(first).chain(rest).collect()
}

/// `columns` or `schema = "infer"`: exactly one when a JSON input is
/// read, neither for text lines only.
fn columns(s: &StepIn<'_>) -> Result<(Option<Vec<(String, String)>>, bool), ConfigError> {
    let json = std::iter::once(s.input)
        .chain(s.also)
        .any(|i| i.kind == Kind::Records);
    let cols = s.item.list(&COLUMNS)?;
    let schema = s.item.text(&SCHEMA)?;
    if let Some(v) = &schema {
        if *v.get_ref() != "infer" {
            return Err(s.item.err(
                v.span(),
                SCHEMA.name,
                "\"infer\"",
                Some(format!("\"{}\"", v.get_ref())),
                "declare the columns with columns = [\"name type\", ...] instead",
            ));
        }
    }
    let span = |k: &str| s.item.raw.get(k).map_or(s.item.span(), |v| v.span());
    match (json, &cols, &schema) {
        (true, Some(_), Some(_)) => Err(s.item.err(
            span(SCHEMA.name),
            SCHEMA.name,
            "either `columns` or schema = \"infer\"",
            Some("both".into()),
            "remove one: declared columns are checked on every record, inferred ones come from the first batch",
        )),
        (true, None, None) => Err(s.item.err(
            s.item.span(),
            COLUMNS.name,
            "the columns of the JSON records",
            Some("nothing".into()),
            "add columns = [\"user string\", \"amount double\"], or schema = \"infer\" to take them from the first batch",
        )),
        (false, Some(_), _) | (false, _, Some(_)) => Err(s.item.err(
            span(if cols.is_some() { COLUMNS.name } else { SCHEMA.name }),
            if cols.is_some() { COLUMNS.name } else { SCHEMA.name },
            "no columns: text lines are one column `value`",
            None,
            "remove it, or parse the lines with op = \"parse_json\" first",
        )),
        (true, Some(c), None) => Ok((Some(parse_columns(s, c)?), false)),
        (true, None, Some(_)) => Ok((None, true)),
        (false, None, None) => Ok((None, false)),
    }
}

/// `"name type"` entries.
fn parse_columns(
    s: &StepIn<'_>,
    c: &toml::Spanned<Vec<String>>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(c.get_ref().len());
    for entry in c.get_ref() {
        let mut words = entry.split_whitespace();
        let (Some(name), Some(ty), None) = (words.next(), words.next(), words.next()) else {
            return Err(s.item.err(
                c.span(),
                COLUMNS.name,
                "entries of a name and a type, such as \"amount double\"",
                Some(format!("\"{entry}\"")),
                COLUMNS.hint,
            ));
        };
        out.push((name.to_string(), ty.to_ascii_lowercase()));
    }
    if out.is_empty() {
        return Err(s.item.err(
            c.span(),
            COLUMNS.name,
            "at least one column",
            Some("[]".into()),
            COLUMNS.hint,
        ));
    }
    plan::check_columns(s, c.span(), &out)?;
    Ok(out)
}

/// Every table name of the step once, in lower case as the query sees
/// it (SQL folds unquoted names): `batch`, the inputs' ids, the static
/// tables.
fn static_tables(s: &StepIn<'_>) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let mut seen = std::collections::HashSet::from(["batch".to_string()]);
    for (i, (names, _)) in table_names(s).into_iter().enumerate() {
        // The first input's names are `batch` and its id; the others' their id.
        for n in names.iter().skip(usize::from(i == 0)) {
            let first_is_batch = i == 0 && n.eq_ignore_ascii_case("batch");
            if !first_is_batch && !seen.insert(n.to_lowercase()) {
                let span = s.item.raw.get("from").map_or(s.item.span(), |v| v.span());
                return Err(s.item.err(
                    span,
                    "from",
                    "inputs whose ids differ in more than letter case, none named `batch`",
                    Some(format!("\"{n}\"")),
                    "a query sees `Clicks` and `clicks` as one table, and `batch` is the first input",
                ));
            }
        }
    }
    let Some(t) = s.item.table(&STATIC_TABLES)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(t.get_ref().len());
    for (name, file) in t.get_ref() {
        if !seen.insert(name.to_lowercase()) {
            return Err(s.item.err(
                t.span(),
                STATIC_TABLES.name,
                "names other than the inputs' (`batch` and the ids in `from`), in any letter case",
                Some(format!("\"{name}\"")),
                "rename the static table",
            ));
        }
        out.push((name.clone(), s.base.join(file)));
    }
    Ok(out)
}

/// Where line `line`, column `column` (from 1, in characters) of the
/// query string at `span` is in the file: exact for literal strings
/// ('...' and '''...'''), approximate for quoted ones with escapes.
#[cfg_attr(not(feature = "sql"), allow(dead_code))]
pub(super) fn query_offset(
    text: &str,
    span: std::ops::Range<usize>,
    line: u64,
    column: u64,
) -> usize {
    let raw = text.get(span.clone()).unwrap_or("");
    let (skip, multi) = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
        (3, true)
    } else {
        (1, false)
    };
    let mut start = span.start + skip.min(raw.len());
    let rest = text.get(start..).unwrap_or("");
    if multi {
        if rest.starts_with("\r\n") {
            start += 2;
        } else if rest.starts_with('\n') {
            start += 1;
        }
    }
    let (mut l, mut c) = (1u64, 1u64);
    for (i, ch) in text.get(start..span.end).unwrap_or("").char_indices() {
        if l == line && c == column {
            return start + i;
        }
        if ch == '\n' {
            l += 1;
            c = 1;
        } else {
            c += 1;
        }
    }
    span.start
}

#[cfg(feature = "sql")]
mod plan {
    //! Planning at check time (the `sql` feature).

    use std::ops::Range;

    use super::{table_names, ConfigError, Kind, SqlStepDef, StepIn, COLUMNS, QUERY};
    use crate::sql::{check_query, ColumnType, Columns, SqlError, SqlSession, TYPE_NAMES};

    /// Each column's type is one weir knows, and names are not repeated.
    pub(super) fn check_columns(
        s: &StepIn<'_>,
        span: Range<usize>,
        cols: &[(String, String)],
    ) -> Result<(), ConfigError> {
        columns_of(cols).map(|_| ()).map_err(|(found, hint)| {
            s.item.err(
                span,
                COLUMNS.name,
                "columns as \"name type\" with known types, each name once",
                Some(found),
                hint,
            )
        })
    }

    fn columns_of(cols: &[(String, String)]) -> Result<Columns, (String, String)> {
        let mut out = Vec::with_capacity(cols.len());
        for (name, ty) in cols {
            let t = ColumnType::parse(ty).ok_or_else(|| {
                (
                    format!("type \"{ty}\" of `{name}`"),
                    format!(
                        "the types are {}",
                        TYPE_NAMES
                            .iter()
                            .map(|t| t.0)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            out.push((name.clone(), t));
        }
        Columns::new(out).map_err(|e| (e.to_string(), "name each column once".to_string()))
    }

    /// Loads the static tables and plans the query against the inputs.
    pub(super) fn check(
        s: &StepIn<'_>,
        def: &SqlStepDef,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        let session = SqlSession::new();
        for (name, file) in &def.static_tables {
            session.register_file(name, file).map_err(|e| {
                let at = s
                    .item
                    .raw
                    .get(super::STATIC_TABLES.name)
                    .map_or(span.clone(), |v| v.span());
                s.item.err(
                    at,
                    super::STATIC_TABLES.name,
                    "a readable CSV or JSON-lines file",
                    Some(e.to_string()),
                    "check the path (relative paths start at the pipeline file's directory)",
                )
            })?;
        }
        let declared = match &def.columns {
            Some(c) => Some(columns_of(c).map_err(|(f, h)| {
                s.item
                    .err(span.clone(), COLUMNS.name, "known column types", Some(f), h)
            })?),
            None => None,
        };
        let tables: Vec<(Vec<String>, Option<Columns>)> = table_names(s)
            .into_iter()
            .map(|(names, kind)| {
                let cols = match kind {
                    Kind::Lines => Some(Columns(vec![("value".to_string(), ColumnType::String)])),
                    _ => declared.clone(),
                };
                (names, cols)
            })
            .collect();
        check_query(&session, "sql", &tables, &def.query).map_err(|e| query_error(s, span, &e))
    }

    fn query_error(s: &StepIn<'_>, span: Range<usize>, e: &SqlError) -> ConfigError {
        let (message, at) = match e {
            SqlError::Plan {
                message,
                line: Some(l),
                column: Some(c),
                ..
            } => (
                message.clone(),
                super::query_offset(s.item.src.text, span.clone(), *l, *c),
            ),
            SqlError::Plan { message, .. } => (message.clone(), span.start),
            other => (other.to_string(), span.start),
        };
        s.item.err(
            at..at + 1,
            QUERY.name,
            "a query that plans against its inputs",
            Some(message),
            "the inputs are `batch` (and the ids in `from`); text lines have one column `value`; JSON records have the columns declared",
        )
    }
}

#[cfg(not(feature = "sql"))]
mod plan {
    //! Without the `sql` feature: every SQL step is refused.

    use std::ops::Range;

    use super::{ConfigError, SqlStepDef, StepIn};

    pub(super) fn check_columns(
        _: &StepIn<'_>,
        _: Range<usize>,
        _: &[(String, String)],
    ) -> Result<(), ConfigError> {
        Ok(())
    }

    pub(super) fn check(
        s: &StepIn<'_>,
        _: &SqlStepDef,
        span: Range<usize>,
    ) -> Result<(), ConfigError> {
        Err(s.item.err(
            span,
            "op",
            "an op this weir was built with",
            Some("\"sql\"".into()),
            "this weir was built without the `sql` feature; build it with default features",
        ))
    }
}
