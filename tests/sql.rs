//! SQL steps over known batches with exact expected rows: projection,
//! filter, group-by, joins of two streams and with a static table, a
//! window, NULLs and missing JSON fields, a user function, typed rows,
//! schema inference kept across a restart, records that do not fit, and
//! query errors found before anything runs.
#![cfg(feature = "sql")]

mod common;
use common::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use weir::dstream::{OnError, Text};
use weir::sql::datafusion::arrow::array::{ArrayRef, Int64Array};
use weir::sql::datafusion::arrow::datatypes::DataType;
use weir::sql::datafusion::common::cast::as_string_array;
use weir::sql::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use weir::sql::{
    sql_with, ColumnType, Columns, Misfits, SqlError, SqlSchema, SqlSession, SqlTable,
};

fn lines(xs: &[&str]) -> Vec<Text> {
    xs.iter().map(|s| Text::from(*s)).collect()
}

fn rows(out: &Out<Value>) -> Vec<(u64, Vec<Value>)> {
    get(out)
}

#[test]
fn projection_and_filter_over_text_lines() {
    let h = ctx(2);
    let q = queue(vec![
        lines(&["apple", "Banana", "avocado"]),
        vec![],
        lines(&["kiwi", "apricot"]),
    ]);
    let s = h.ssc.queue_stream(&q);
    let session = SqlSession::new();
    let out = collect(
        &s.sql(
            &session,
            "SELECT upper(value) AS fruit, length(value) AS n FROM batch WHERE value LIKE 'a%'",
        )
        .unwrap(),
    );
    h.run(3);
    assert_eq!(
        rows(&out),
        vec![
            (
                1000,
                vec![
                    json!({"fruit": "APPLE", "n": 5}),
                    json!({"fruit": "AVOCADO", "n": 7})
                ]
            ),
            (2000, vec![]),
            (3000, vec![json!({"fruit": "APRICOT", "n": 7})]),
        ]
    );
}

#[test]
fn word_count_group_by_as_in_the_tutorial() {
    let h = ctx(3);
    let q = queue(vec![lines(&["a b a", "c a", "b"]), lines(&["z"])]);
    let words = h
        .ssc
        .queue_stream(&q)
        .flat_map(|l: Text| l.split_whitespace().map(Text::from).collect::<Vec<_>>());
    let session = SqlSession::new();
    let out = collect(
        &words
            .sql(
                &session,
                "SELECT value AS word, count(*) AS total FROM batch GROUP BY value ORDER BY total DESC, word",
            )
            .unwrap(),
    );
    h.run(2);
    assert_eq!(
        rows(&out),
        vec![
            (
                1000,
                vec![
                    json!({"word": "a", "total": 3}),
                    json!({"word": "b", "total": 2}),
                    json!({"word": "c", "total": 1}),
                ]
            ),
            (2000, vec![json!({"word": "z", "total": 1})]),
        ]
    );
}

fn cols(c: &[(&str, ColumnType)]) -> Columns {
    Columns::new(c.iter().map(|(n, t)| (n.to_string(), *t)).collect()).unwrap()
}

#[test]
fn nulls_and_missing_fields_of_json_records() {
    let h = ctx(2);
    let q = queue(vec![vec![
        json!({"user": "ann", "amount": 3.5}),
        json!({"user": "bob"}),
        json!({"user": null, "amount": 2, "extra": [1]}),
    ]]);
    let s = h.ssc.queue_stream(&q);
    let schema = SqlSchema::Declared(cols(&[
        ("user", ColumnType::String),
        ("amount", ColumnType::Double),
    ]));
    let t = SqlTable::json("batch", &s, schema, Misfits::Policy(OnError::Fail)).unwrap();
    let session = SqlSession::new();
    let out = collect(
        &sql_with(
            &session,
            &[t],
            "SELECT coalesce(user, '?') AS who, amount, amount IS NULL AS missing FROM batch ORDER BY who",
        )
        .unwrap(),
    );
    h.run(1);
    assert_eq!(
        rows(&out),
        vec![(
            1000,
            vec![
                json!({"who": "?", "amount": 2.0, "missing": false}),
                json!({"who": "ann", "amount": 3.5, "missing": false}),
                json!({"who": "bob", "amount": null, "missing": true}),
            ]
        )]
    );
}

#[test]
fn join_of_two_streams_in_the_same_batch() {
    let h = ctx(2);
    let clicks = h.ssc.queue_stream(&queue(vec![
        vec![
            json!({"user": "ann", "url": "/a"}),
            json!({"user": "bob", "url": "/b"}),
            json!({"user": "ann", "url": "/c"}),
        ],
        vec![json!({"user": "cat", "url": "/d"})],
    ]));
    let users = h.ssc.queue_stream(&queue(vec![
        vec![
            json!({"user": "ann", "country": "fr"}),
            json!({"user": "bob", "country": "de"}),
        ],
        vec![],
    ]));
    let session = SqlSession::new();
    let c = SqlTable::json(
        "clicks",
        &clicks,
        SqlSchema::Declared(cols(&[
            ("user", ColumnType::String),
            ("url", ColumnType::String),
        ])),
        Misfits::Policy(OnError::Fail),
    )
    .unwrap();
    let u = SqlTable::json(
        "users",
        &users,
        SqlSchema::Declared(cols(&[
            ("user", ColumnType::String),
            ("country", ColumnType::String),
        ])),
        Misfits::Policy(OnError::Fail),
    )
    .unwrap();
    let out = collect(
        &sql_with(
            &session,
            &[c, u],
            "SELECT u.country, count(*) AS clicks FROM clicks c JOIN users u ON c.user = u.user \
             GROUP BY u.country ORDER BY u.country",
        )
        .unwrap(),
    );
    h.run(2);
    assert_eq!(
        rows(&out),
        vec![
            (
                1000,
                vec![
                    json!({"country": "de", "clicks": 1}),
                    json!({"country": "fr", "clicks": 2})
                ]
            ),
            (2000, vec![]),
        ]
    );
}

#[test]
fn join_with_a_static_table_enriches_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("cities.csv");
    std::fs::write(
        &csv,
        "code,city,population\nPAR,Paris,2100000\nBER,Berlin,3600000\n",
    )
    .unwrap();
    let session = SqlSession::new();
    session.register_file("cities", &csv).unwrap();
    let h = ctx(2);
    let s = h
        .ssc
        .queue_stream(&queue(vec![lines(&["BER", "PAR", "XXX", "BER"])]));
    let out = collect(
        &s.sql(
            &session,
            "SELECT b.value AS code, c.city FROM batch b LEFT JOIN cities c ON b.value = c.code ORDER BY code, city",
        )
        .unwrap(),
    );
    h.run(1);
    assert_eq!(
        rows(&out),
        vec![(
            1000,
            vec![
                json!({"code": "BER", "city": "Berlin"}),
                json!({"code": "BER", "city": "Berlin"}),
                json!({"code": "PAR", "city": "Paris"}),
                json!({"code": "XXX", "city": null}),
            ]
        )]
    );
    assert_eq!(session.table_names(), vec!["cities".to_string()]);
}

#[test]
fn a_window_of_batches_is_one_table() {
    let h = ctx(2);
    let s = h.ssc.queue_stream(&queue(vec![
        lines(&["a"]),
        lines(&["b", "a"]),
        lines(&["c"]),
        vec![],
    ]));
    let w = s.window(Duration::from_secs(2), Duration::from_secs(1));
    let session = SqlSession::new();
    let out = collect(
        &w.sql(
            &session,
            "SELECT value, count(*) AS n FROM batch GROUP BY value ORDER BY value",
        )
        .unwrap(),
    );
    h.run(4);
    assert_eq!(
        rows(&out),
        vec![
            (1000, vec![json!({"value": "a", "n": 1})]),
            (
                2000,
                vec![json!({"value": "a", "n": 2}), json!({"value": "b", "n": 1})]
            ),
            (
                3000,
                vec![
                    json!({"value": "a", "n": 1}),
                    json!({"value": "b", "n": 1}),
                    json!({"value": "c", "n": 1})
                ]
            ),
            (4000, vec![json!({"value": "c", "n": 1})]),
        ]
    );
}

#[test]
fn a_rust_scalar_function_in_a_query() {
    let session = SqlSession::new();
    let vowels = Arc::new(|args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let text = as_string_array(&arrays[0])?;
        let n: Int64Array = text
            .iter()
            .map(|s| s.map(|s| s.chars().filter(|c| "aeiou".contains(*c)).count() as i64))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(n) as ArrayRef))
    });
    session
        .register_udf(create_udf(
            "vowels",
            vec![DataType::Utf8],
            DataType::Int64,
            Volatility::Immutable,
            vowels,
        ))
        .unwrap();
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![lines(&["banana", "sky"])]));
    let out = collect(
        &s.sql(&session, "SELECT value, vowels(value) AS v FROM batch")
            .unwrap(),
    );
    h.run(1);
    assert_eq!(
        rows(&out),
        vec![(
            1000,
            vec![
                json!({"value": "banana", "v": 3}),
                json!({"value": "sky", "v": 0})
            ]
        )]
    );
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct WordTotal {
    word: String,
    total: i64,
}

#[test]
fn typed_rows_out() {
    let h = ctx(2);
    let s = h.ssc.queue_stream(&queue(vec![lines(&["x", "y", "x"])]));
    let session = SqlSession::new();
    let out = collect(
        &s.sql_as::<WordTotal>(
            &session,
            "SELECT value AS word, count(*) AS total FROM batch GROUP BY value ORDER BY word",
        )
        .unwrap(),
    );
    h.run(1);
    assert_eq!(
        get(&out),
        vec![(
            1000,
            vec![
                WordTotal {
                    word: "x".into(),
                    total: 2
                },
                WordTotal {
                    word: "y".into(),
                    total: 1
                },
            ]
        )]
    );
}

#[test]
fn records_that_do_not_fit_are_dropped_and_counted() {
    let h = ctx(2);
    let s = h.ssc.queue_stream(&queue(vec![vec![
        json!({"n": 1}),
        json!({"n": "two"}),
        json!({"n": 3.5}),
        json!({"n": 4}),
    ]]));
    let dropped = Arc::new(AtomicU64::new(0));
    let t = SqlTable::json(
        "batch",
        &s,
        SqlSchema::Declared(cols(&[("n", ColumnType::Bigint)])),
        Misfits::Drop(dropped.clone()),
    )
    .unwrap();
    let out =
        collect(&sql_with(&SqlSession::new(), &[t], "SELECT sum(n) AS s FROM batch").unwrap());
    h.run(1);
    assert_eq!(rows(&out), vec![(1000, vec![json!({"s": 5})])]);
    assert_eq!(dropped.load(Ordering::Relaxed), 2);
}

#[test]
fn a_record_that_does_not_fit_fails_its_batch_by_default() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![vec![json!({"n": "x"})]]));
    let t = SqlTable::json(
        "batch",
        &s,
        SqlSchema::Declared(cols(&[("n", ColumnType::Bigint)])),
        Misfits::Policy(OnError::Fail),
    )
    .unwrap();
    let _out = collect(&sql_with(&SqlSession::new(), &[t], "SELECT n FROM batch").unwrap());
    h.ssc.start().unwrap();
    let t = h.clock.advance(1000);
    let err = h.ssc.await_batch(t, WAIT).unwrap_err().to_string();
    assert!(err.contains("does not fit column `n`"), "{err}");
    assert!(err.contains("expected bigint"), "{err}");
    let _ = h.ssc.stop(false);
}

#[test]
fn an_inferred_schema_is_saved_and_read_back_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sql").join("step.batch.schema.json");
    let infer = || SqlSchema::Infer(Some(file.clone()));
    {
        let h = ctx(2);
        let s = h.ssc.queue_stream(&queue(vec![vec![
            json!({"a": 1, "b": "x"}),
            json!({"a": 2.5, "c": true}),
        ]]));
        let t = SqlTable::json("batch", &s, infer(), Misfits::Policy(OnError::Fail)).unwrap();
        assert!(t.columns().is_none());
        let out = collect(
            &sql_with(
                &SqlSession::new(),
                &[t],
                "SELECT a, b, c FROM batch ORDER BY a",
            )
            .unwrap(),
        );
        h.run(1);
        assert_eq!(
            rows(&out),
            vec![(
                1000,
                vec![
                    json!({"a": 1.0, "b": "x", "c": null}),
                    json!({"a": 2.5, "b": null, "c": true})
                ]
            )]
        );
    }
    let saved = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        saved.trim(),
        r#"{"columns":[["a","double"],["b","string"],["c","boolean"]]}"#
    );
    // The next start plans against the saved columns before any batch:
    // a column the first batch did not have is an error now.
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(Vec::<Vec<Value>>::new()));
    let t = SqlTable::json("batch", &s, infer(), Misfits::Policy(OnError::Fail)).unwrap();
    assert_eq!(
        t.columns().unwrap().describe(),
        "a: double, b: string, c: boolean"
    );
    let err = sql_with(&SqlSession::new(), &[t], "SELECT d FROM batch").unwrap_err();
    assert!(matches!(err, SqlError::Plan { .. }), "{err}");
}

#[test]
fn query_errors_name_the_place_in_the_query() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![lines(&["a"])]));
    let session = SqlSession::new();
    let err = s
        .sql(&session, "SELECT value,\n       wrd FROM batch")
        .unwrap_err();
    match &err {
        SqlError::Plan {
            message,
            line,
            column,
            ..
        } => {
            assert!(message.contains("wrd"), "{message}");
            assert_eq!((*line, *column), (Some(2), Some(8)), "{err}");
        }
        other => panic!("expected a plan error, got {other}"),
    }
    let err = s
        .sql(&session, "SELECT value, count(*) FROM batch")
        .unwrap_err();
    assert!(
        err.to_string().contains("GROUP BY") || err.to_string().contains("group"),
        "{err}"
    );
    let err = s
        .sql(&session, "SELEC value FROM batch")
        .unwrap_err()
        .to_string();
    assert!(err.contains("SELEC"), "{err}");
    let err = s.sql(&session, "DROP TABLE batch").unwrap_err().to_string();
    assert!(err.contains("not valid"), "{err}");
    let long = format!(
        "SELECT value FROM batch WHERE value = '{}'",
        "x".repeat(weir::sql::QUERY_BYTES_MAX)
    );
    assert!(matches!(
        s.sql(&session, &long).unwrap_err(),
        SqlError::QueryTooLong { .. }
    ));
}

#[test]
fn a_static_table_file_that_is_missing_or_of_unknown_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let session = SqlSession::new();
    let err = session
        .register_file("t", &dir.path().join("none.csv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("static table `t`"), "{err}");
    std::fs::write(dir.path().join("t.txt"), "x").unwrap();
    let err = session
        .register_file("t", &dir.path().join("t.txt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(".csv"), "{err}");
}

#[test]
fn batches_before_the_first_record_give_no_rows_then_inference_happens() {
    let h = ctx(2);
    let s = h.ssc.queue_stream(&queue(vec![
        vec![],
        vec![json!({})],
        vec![json!({"k": "a"}), json!({"k": "b"})],
        vec![],
    ]));
    let t = SqlTable::json(
        "batch",
        &s,
        SqlSchema::Infer(None),
        Misfits::Policy(OnError::Fail),
    )
    .unwrap();
    let out =
        collect(&sql_with(&SqlSession::new(), &[t], "SELECT count(*) AS n FROM batch").unwrap());
    h.run(4);
    assert_eq!(
        rows(&out),
        vec![
            (1000, vec![]),
            (2000, vec![]),
            (3000, vec![json!({"n": 2})]),
            (4000, vec![json!({"n": 0})]),
        ]
    );
}

#[test]
fn array_functions_give_json_lists() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![lines(&["a b", "c"])]));
    let out = collect(
        &s.sql(
            &SqlSession::new(),
            "SELECT string_to_array(value, ' ') AS words, array_length(string_to_array(value, ' ')) AS n FROM batch",
        )
        .unwrap(),
    );
    h.run(1);
    assert_eq!(
        rows(&out),
        vec![(
            1000,
            vec![
                json!({"words": ["a", "b"], "n": 2}),
                json!({"words": ["c"], "n": 1})
            ]
        )]
    );
}

#[test]
fn json_records_that_are_not_objects_fail_their_batch() {
    let h = ctx(1);
    let s = h
        .ssc
        .queue_stream(&queue(vec![vec![json!({"a": 1}), json!([1, 2])]]));
    let _out = collect(&s.sql(&SqlSession::new(), "SELECT a FROM batch").unwrap());
    h.ssc.start().unwrap();
    let t = h.clock.advance(1000);
    let err = h.ssc.await_batch(t, WAIT).unwrap_err().to_string();
    assert!(err.contains("not a JSON object"), "{err}");
    let _ = h.ssc.stop(false);
}

#[test]
fn results_that_a_row_object_cannot_hold_and_explain_are_refused() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![lines(&["a"])]));
    let session = SqlSession::new();
    let err = s
        .sql(
            &session,
            "SELECT * FROM batch b1 JOIN batch b2 ON b1.value = b2.value",
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("two columns named `value`"), "{err}");
    let err = s
        .sql(&session, "EXPLAIN ANALYZE SELECT value FROM batch")
        .unwrap_err()
        .to_string();
    assert!(err.contains("EXPLAIN"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("t.csv");
    std::fs::create_dir(&sub).unwrap();
    let err = session.register_file("t", &sub).unwrap_err().to_string();
    assert!(err.contains("not a plain file"), "{err}");
}

/// What a fresh context makes of one batch of `records` inferred into
/// `file` (which may already hold the columns of an earlier run).
fn infer_once(file: &std::path::Path, records: Vec<Value>) -> Vec<(u64, Vec<Value>)> {
    let h = ctx(2);
    let s = h.ssc.queue_stream(&queue(vec![records]));
    let t = SqlTable::json(
        "batch",
        &s,
        SqlSchema::Infer(Some(file.to_path_buf())),
        Misfits::Drop(Arc::default()),
    )
    .unwrap();
    let out = collect(&sql_with(&SqlSession::new(), &[t], "SELECT * FROM batch").unwrap());
    h.run(1);
    rows(&out)
}

#[test]
fn the_batch_a_schema_was_inferred_from_replays_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.schema.json");
    let batch = vec![json!({"a": 1, "b": "x"}), json!(7), json!({"a": 2.5})];
    let first = infer_once(&file, batch.clone());
    assert!(file.exists());
    // A crash after the schema file was saved and before the commit: the
    // replay reads the saved columns, and gives the same rows.
    let replay = infer_once(&file, batch);
    assert_eq!(first, replay);
    assert_eq!(
        first,
        vec![(
            1000,
            vec![json!({"a": 1.0, "b": "x"}), json!({"a": 2.5, "b": null})]
        )]
    );
}
