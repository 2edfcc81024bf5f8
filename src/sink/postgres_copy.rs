//! The PostgreSQL sink's rows and SQL: quoting identifiers, the column
//! encodings read from the table, one batch encoded as binary COPY data
//! ([`Encoded`]), and the statements of a sink ([`Plan`]).
//!
//! Owns: the binary COPY format (signature, flags, one tuple per row:
//! field count, then each field's length and bytes; -1 for NULL) and how a
//! [`PgValue`] becomes the bytes of a column's type. Types with a binary
//! encoding here: bool, smallint, integer, bigint, real, double precision,
//! text, varchar, char, name, json, jsonb, bytea. Any other type (numeric,
//! timestamptz, uuid, date, enums...) is staged as text and cast by
//! PostgreSQL, so its own parser decides (and a bad value is a bad row).
//! Upserts go through a staging table with a round number per row: the
//! k-th row of a batch with a given key is in round k, and rounds are
//! applied in order, so rows with the same key apply in batch order (one
//! `INSERT ... ON CONFLICT` may not touch a row twice).
//!
//! Limits: as the sink's (`super::postgres`); a value that does not fit
//! its column (text into an integer column that does not parse, an integer
//! out of a smallint's range) is a bad row found here, before any I/O.
//! Must never: put a value into SQL text, or an identifier unquoted.

use std::collections::HashMap;

use bytes::Bytes;

use super::postgres::{PgMode, PgRow, PgValue, PostgresSinkConfig, PG_IDENTIFIER_BYTES_MAX};

/// Whether `s` can be an identifier (it is always quoted).
pub(super) fn valid_ident(s: &str) -> bool {
    !s.is_empty() && s.len() <= PG_IDENTIFIER_BYTES_MAX && !s.chars().any(char::is_control)
}

/// `s` quoted as an identifier (`"` doubled).
pub(super) fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `name` or `schema.name` quoted, or `None` if a part is not valid.
pub(super) fn qualified(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| valid_ident(p)) {
        return None;
    }
    Some(parts.iter().map(|p| quote(p)).collect::<Vec<_>>().join("."))
}

/// How one column's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Enc {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Json,
    Jsonb,
    Bytea,
    /// Staged as text, cast by the server.
    AsText,
}

impl Enc {
    /// The encoding of type `oid`.
    pub(super) fn of(oid: u32) -> Enc {
        match oid {
            16 => Enc::Bool,
            17 => Enc::Bytea,
            21 => Enc::Int2,
            23 => Enc::Int4,
            20 => Enc::Int8,
            700 => Enc::Float4,
            701 => Enc::Float8,
            19 | 25 | 1042 | 1043 => Enc::Text,
            114 => Enc::Json,
            3802 => Enc::Jsonb,
            _ => Enc::AsText,
        }
    }
}

/// One target column: name, SQL type (as `format_type` writes it) and
/// encoding.
#[derive(Debug, Clone)]
pub(super) struct Column {
    pub(super) name: String,
    pub(super) sql_type: String,
    pub(super) enc: Enc,
}

impl Column {
    /// The type the column has in the staging table and in parameters.
    fn staged_type(&self) -> &str {
        if self.enc == Enc::AsText {
            "text"
        } else {
            &self.sql_type
        }
    }
}

/// The statements of one sink, built once from the table's columns.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) columns: Vec<Column>,
    /// COPY straight into the table (insert mode, every column binary).
    pub(super) direct: bool,
    /// Rows carry a round number (upsert).
    pub(super) rounds: bool,
    pub(super) create_stage: String,
    pub(super) copy: String,
    /// From the staging table (`$1`: the round, when `rounds`).
    pub(super) insert_staged: String,
    /// One row from parameters `$1..$n`.
    pub(super) insert_one: String,
}

const STAGE: &str = "pg_temp.weir_stage";

impl Plan {
    /// The plan for `cfg` over `columns` (in `cfg.columns` order).
    pub(super) fn new(cfg: &PostgresSinkConfig, table: &str, columns: Vec<Column>) -> Plan {
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let names = names.join(", ");
        let rounds = matches!(cfg.mode, PgMode::Upsert { .. });
        let direct = !rounds && columns.iter().all(|c| c.enc != Enc::AsText);
        let mut defs: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("c{i} {}", c.staged_type()))
            .collect();
        if rounds {
            defs.push("weir_round integer".into());
        }
        let create_stage = format!(
            "CREATE TEMP TABLE IF NOT EXISTS weir_stage ({}) ON COMMIT DELETE ROWS",
            defs.join(", ")
        );
        let stage_cols: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
        let copy = if direct {
            format!("COPY {table} ({names}) FROM STDIN (FORMAT binary)")
        } else {
            let mut c = stage_cols.clone();
            if rounds {
                c.push("weir_round".into());
            }
            format!("COPY {STAGE} ({}) FROM STDIN (FORMAT binary)", c.join(", "))
        };
        let select: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c.enc {
                Enc::AsText => format!("CAST(s.c{i} AS {})", c.sql_type),
                _ => format!("s.c{i}"),
            })
            .collect();
        let select = select.join(", ");
        let conflict = match &cfg.mode {
            PgMode::Insert => String::new(),
            PgMode::Upsert { key, update } => {
                let k: Vec<String> = key.iter().map(|k| quote(k)).collect();
                let set = update.clone().or_else(|| {
                    let rest: Vec<String> = cfg
                        .columns
                        .iter()
                        .filter(|c| !key.contains(c))
                        .map(|c| format!("{} = excluded.{}", quote(c), quote(c)))
                        .collect();
                    (!rest.is_empty()).then(|| rest.join(", "))
                });
                match set {
                    Some(set) => format!(" ON CONFLICT ({}) DO UPDATE SET {set}", k.join(", ")),
                    None => format!(" ON CONFLICT ({}) DO NOTHING", k.join(", ")),
                }
            }
        };
        let filter = if rounds {
            " WHERE s.weir_round = $1"
        } else {
            ""
        };
        let insert_staged = format!(
            "INSERT INTO {table} ({names}) SELECT {select} FROM {STAGE} s{filter}{conflict}"
        );
        let params: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{} AS c{i}", i + 1, c.staged_type()))
            .collect();
        let insert_one = format!(
            "INSERT INTO {table} ({names}) SELECT {select} FROM (SELECT {}) s{conflict}",
            params.join(", ")
        );
        Plan {
            columns,
            direct,
            rounds,
            create_stage,
            copy,
            insert_staged,
            insert_one,
        }
    }
}

/// A row that could not be encoded for its column.
#[derive(Debug, Clone)]
pub(super) struct EncodeError {
    pub(super) row: usize,
    pub(super) column: String,
    pub(super) message: String,
    pub(super) json: String,
}

/// One batch as binary COPY tuples, with each tuple's place.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    /// The tuples, back to back (no header or trailer).
    pub(super) data: Bytes,
    /// Start of each tuple in `data`, and the end.
    pub(super) starts: Vec<usize>,
    /// Each tuple's row in the batch.
    pub(super) rows: Vec<usize>,
    /// Rounds (1 without keys).
    pub(super) round_count: u32,
    /// Rows that could not be encoded.
    pub(super) bad: Vec<EncodeError>,
    /// Rows in the batch.
    pub(super) total: usize,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl Encoded {
    /// Encodes `rows` for `plan`; `key` are the indices of the key
    /// columns (upsert).
    pub(super) fn new<T: PgRow>(plan: &Plan, key: &[usize], rows: &[&T]) -> Encoded {
        let mut e = Encoded {
            round_count: 1,
            ..Encoded::default()
        };
        let mut data = Vec::with_capacity(rows.len() * (2 + 12 * plan.columns.len()));
        let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
        let fields = plan.columns.len() + usize::from(plan.rounds);
        let fields = i16::try_from(fields).unwrap_or(i16::MAX);
        let mut cells = Vec::with_capacity(plan.columns.len());
        for (r, rec) in rows.iter().enumerate() {
            cells.clear();
            rec.pg_row(&mut cells);
            e.total += 1;
            let start = data.len();
            data.extend_from_slice(&fields.to_be_bytes());
            let mut failed = None;
            for (c, col) in plan.columns.iter().enumerate() {
                let v = cells.get(c).unwrap_or(&PgValue::Null);
                if let Err(message) = encode(&mut data, col.enc, v) {
                    failed = Some((col.name.clone(), message));
                    break;
                }
            }
            if failed.is_none() && cells.len() != plan.columns.len() {
                let n = cells.len();
                let message = format!(
                    "the record has {n} cells for {} columns",
                    plan.columns.len()
                );
                failed = Some((String::new(), message));
            }
            if let Some((column, message)) = failed {
                data.truncate(start);
                let json = row_json(plan, &cells);
                e.bad.push(EncodeError {
                    row: r,
                    column,
                    message,
                    json,
                });
                continue;
            }
            if plan.rounds {
                let mut k = Vec::new();
                for &i in key {
                    field(&data[start..], i, &mut k);
                }
                let round = seen.entry(k).or_insert(0);
                data.extend_from_slice(&4i32.to_be_bytes());
                data.extend_from_slice(&(*round as i32).to_be_bytes());
                *round += 1;
                e.round_count = e.round_count.max(*round);
            }
            e.starts.push(start);
            e.rows.push(r);
        }
        e.starts.push(data.len());
        e.data = Bytes::from(data);
        e
    }

    /// Tuples to send.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The COPY stream in chunks of at most `chunk` bytes (plus header
    /// and trailer).
    pub(super) fn chunks(&self, chunk: usize) -> Vec<Bytes> {
        let mut head = Vec::with_capacity(SIGNATURE.len() + 8);
        head.extend_from_slice(SIGNATURE);
        head.extend_from_slice(&0i32.to_be_bytes());
        head.extend_from_slice(&0i32.to_be_bytes());
        let mut out = vec![Bytes::from(head)];
        let all = &self.data;
        let mut at = 0;
        while at < all.len() {
            let end = (at + chunk).min(all.len());
            out.push(all.slice(at..end));
            at = end;
        }
        out.push(Bytes::from_static(&[0xff, 0xff]));
        out
    }

    /// The cells of tuple `t` (without the round), each `None` for NULL.
    pub(super) fn cells(&self, t: usize, columns: usize) -> Vec<Option<&[u8]>> {
        let tuple = &self.data[self.starts[t]..self.starts[t + 1]];
        let mut at = 2;
        let mut out = Vec::with_capacity(columns);
        for _ in 0..columns {
            let len = i32::from_be_bytes([tuple[at], tuple[at + 1], tuple[at + 2], tuple[at + 3]]);
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let n = len as usize;
                out.push(Some(&tuple[at..at + n]));
                at += n;
            }
        }
        out
    }
}

/// Appends field `i` (length and bytes) of `tuple` to `out`.
fn field(tuple: &[u8], i: usize, out: &mut Vec<u8>) {
    let mut at = 2;
    for j in 0..=i {
        let len = i32::from_be_bytes([tuple[at], tuple[at + 1], tuple[at + 2], tuple[at + 3]]);
        let n = len.max(0) as usize;
        if j == i {
            out.extend_from_slice(&tuple[at..at + 4 + n]);
        }
        at += 4 + n;
    }
}

/// Appends `v` as a field of encoding `enc`, or says why it cannot be.
fn encode(out: &mut Vec<u8>, enc: Enc, v: &PgValue) -> Result<(), String> {
    fn put(out: &mut Vec<u8>, b: &[u8]) -> Result<(), String> {
        let n = i32::try_from(b.len()).map_err(|_| "a value over 2 GiB".to_string())?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(b);
        Ok(())
    }
    let kind = |v: &PgValue| match v {
        PgValue::Null => "null",
        PgValue::Bool(_) => "a boolean",
        PgValue::Int(_) => "an integer",
        PgValue::Float(_) => "a float",
        PgValue::Text(_) => "text",
        PgValue::Json(_) => "a JSON document",
        PgValue::Bytes(_) => "bytes",
    };
    let wrong = |what: &str| Err(format!("{} does not fit a {what} column", kind(v)));
    let int = |v: &PgValue| -> Result<i64, String> {
        match v {
            PgValue::Int(i) => Ok(*i),
            PgValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(*f as i64),
            PgValue::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("text {:?} is not an integer", short(s))),
            _ => Err(format!("{} is not an integer", kind(v))),
        }
    };
    let float = |v: &PgValue| -> Result<f64, String> {
        match v {
            PgValue::Int(i) => Ok(*i as f64),
            PgValue::Float(f) => Ok(*f),
            PgValue::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("text {:?} is not a number", short(s))),
            _ => Err(format!("{} is not a number", kind(v))),
        }
    };
    if let PgValue::Null = v {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    match enc {
        Enc::Bool => match v {
            PgValue::Bool(b) => put(out, &[u8::from(*b)]),
            PgValue::Text(s) if s == "true" || s == "false" => put(out, &[u8::from(s == "true")]),
            _ => wrong("boolean"),
        },
        Enc::Int2 => {
            let i = int(v)?;
            let n = i16::try_from(i).map_err(|_| format!("{i} is out of range for smallint"))?;
            put(out, &n.to_be_bytes())
        }
        Enc::Int4 => {
            let i = int(v)?;
            let n = i32::try_from(i).map_err(|_| format!("{i} is out of range for integer"))?;
            put(out, &n.to_be_bytes())
        }
        Enc::Int8 => put(out, &int(v)?.to_be_bytes()),
        Enc::Float4 => put(out, &(float(v)? as f32).to_be_bytes()),
        Enc::Float8 => put(out, &float(v)?.to_be_bytes()),
        Enc::Text | Enc::AsText => match text(v) {
            Some(s) => put(out, s.as_bytes()),
            None => wrong("text"),
        },
        Enc::Json | Enc::Jsonb => {
            let doc = match v {
                PgValue::Json(s) => s.clone(),
                PgValue::Text(s) => serde_json::Value::from(s.as_str()).to_string(),
                PgValue::Bool(b) => b.to_string(),
                PgValue::Int(i) => i.to_string(),
                PgValue::Float(f) if f.is_finite() => f.to_string(),
                _ => return wrong("JSON"),
            };
            if enc == Enc::Jsonb {
                out.extend_from_slice(&(doc.len() as i32 + 1).to_be_bytes());
                out.push(1);
                out.extend_from_slice(doc.as_bytes());
                Ok(())
            } else {
                put(out, doc.as_bytes())
            }
        }
        Enc::Bytea => match v {
            PgValue::Bytes(b) => put(out, b),
            PgValue::Text(s) => put(out, s.as_bytes()),
            _ => wrong("bytea"),
        },
    }
}

/// `v` as text (what a text column, or the cast of a staged one, gets).
fn text(v: &PgValue) -> Option<String> {
    Some(match v {
        PgValue::Null => return None,
        PgValue::Bool(b) => b.to_string(),
        PgValue::Int(i) => i.to_string(),
        PgValue::Float(f) => f.to_string(),
        PgValue::Text(s) | PgValue::Json(s) => s.clone(),
        PgValue::Bytes(_) => return None,
    })
}

fn short(s: &str) -> String {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The row as a JSON object of column → value (the dead-letter table's
/// `row_json`).
pub(super) fn row_json(plan: &Plan, cells: &[PgValue]) -> String {
    use serde_json::Value as V;
    let mut m = serde_json::Map::new();
    for (i, v) in cells.iter().enumerate() {
        let name = plan
            .columns
            .get(i)
            .map_or_else(|| format!("#{i}"), |c| c.name.clone());
        let j = match v {
            PgValue::Null => V::Null,
            PgValue::Bool(b) => V::Bool(*b),
            PgValue::Int(n) => V::from(*n),
            PgValue::Float(f) => serde_json::Number::from_f64(*f).map_or(V::Null, V::Number),
            PgValue::Text(s) => V::from(s.as_str()),
            PgValue::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| V::from(s.as_str())),
            PgValue::Bytes(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                V::from(format!("\\x{hex}"))
            }
        };
        m.insert(name, j);
    }
    V::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: PgMode) -> Plan {
        let mut cfg = PostgresSinkConfig::new("host=x", "s.t", &["k", "n", "at"]);
        cfg.mode = mode;
        let cols = vec![
            Column {
                name: "k".into(),
                sql_type: "text".into(),
                enc: Enc::Text,
            },
            Column {
                name: "n".into(),
                sql_type: "bigint".into(),
                enc: Enc::Int8,
            },
            Column {
                name: "at".into(),
                sql_type: "timestamp with time zone".into(),
                enc: Enc::AsText,
            },
        ];
        Plan::new(&cfg, &qualified("s.t").expect("valid"), cols)
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(qualified("a\"b").as_deref(), Some("\"a\"\"b\""));
        assert_eq!(qualified("s.t").as_deref(), Some("\"s\".\"t\""));
        assert!(qualified("a.b.c").is_none());
        assert!(qualified("").is_none());
    }

    #[test]
    fn statements_quote_and_cast() {
        let p = plan(PgMode::Upsert {
            key: vec!["k".into()],
            update: Some("n = \"t\".n + excluded.n".into()),
        });
        assert!(!p.direct && p.rounds);
        assert_eq!(
            p.insert_staged,
            "INSERT INTO \"s\".\"t\" (\"k\", \"n\", \"at\") SELECT s.c0, s.c1, CAST(s.c2 AS timestamp with time zone) FROM pg_temp.weir_stage s WHERE s.weir_round = $1 ON CONFLICT (\"k\") DO UPDATE SET n = \"t\".n + excluded.n"
        );
        assert!(p
            .insert_one
            .contains("SELECT $1::text AS c0, $2::bigint AS c1, $3::text AS c2"));
        let p = plan(PgMode::Insert);
        assert!(!p.direct, "a timestamptz column is staged");
    }

    #[test]
    fn rows_encode_with_rounds_and_bad_rows_apart() {
        let p = plan(PgMode::Upsert {
            key: vec!["k".into()],
            update: None,
        });
        let rows = [
            vec![PgValue::Text("a".into()), PgValue::Int(1), PgValue::Null],
            vec![
                PgValue::Text("b".into()),
                PgValue::Text("x".into()),
                PgValue::Null,
            ],
            vec![
                PgValue::Text("a".into()),
                PgValue::Int(2),
                PgValue::Text("now".into()),
            ],
        ];
        let refs: Vec<&Vec<PgValue>> = rows.iter().collect();
        let e = Encoded::new(&p, &[0], &refs);
        assert_eq!(e.len(), 2);
        assert_eq!(e.rows, vec![0, 2]);
        assert_eq!(e.round_count, 2);
        assert_eq!(e.bad.len(), 1);
        assert_eq!(e.bad[0].row, 1);
        assert_eq!(e.bad[0].column, "n");
        assert!(
            e.bad[0].message.contains("not an integer"),
            "{:?}",
            e.bad[0]
        );
        let cells = e.cells(1, 3);
        assert_eq!(cells[0], Some(&b"a"[..]));
        assert_eq!(cells[1], Some(&2i64.to_be_bytes()[..]));
        assert_eq!(cells[2], Some(&b"now"[..]));
        let chunks = e.chunks(7);
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(all.starts_with(SIGNATURE) && all.ends_with(&[0xff, 0xff]));
    }
}
