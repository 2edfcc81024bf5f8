//! `op = "sql"` with the real `weir` binary: `weir check` shows a query's
//! mistake at its line and column in the pipeline file and refuses keys
//! that cannot work; a pipeline with a SQL step (a filter, a projection
//! and a join with a static table) fed through the ingest server gives
//! the same rows across SIGKILLs as an uninterrupted run, each once.
//! Every wait polls a condition with a deadline.
#![cfg(feature = "sql")]

mod service_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use service_common::{all_lines, feed_file, start_ingest, wait_for, weir};

/// Writes `name` under `dir` with `text`.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).expect("write");
    f
}

/// `weir check FILE`: (success, stdout + stderr).
fn check(f: &Path) -> (bool, String) {
    let out = weir().arg("check").arg(f).output().expect("weir check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const HEAD: &str = "[[source]]\nid = \"events\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n";

#[test]
fn check_points_at_the_mistake_inside_the_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = file(
        dir.path(),
        "p.toml",
        &format!(
            "{HEAD}[[step]]\nop = \"parse_json\"\n[[step]]\nop = \"sql\"\ncolumns = [\"user string\", \"n bigint\"]\nquery = '''\nSELECT user,\n       sum(amount) AS total\nFROM batch GROUP BY user'''\n[[sink]]\nkind = \"print\"\n"
        ),
    );
    let (ok, text) = check(&f);
    assert!(!ok, "{text}");
    // Line 12 of the file is "       sum(amount) AS total"; `amount` is at
    // column 12.
    assert!(text.contains("p.toml:12:12: step[1].query"), "{text}");
    assert!(text.contains("amount"), "{text}");
    assert!(
        !text.contains("DataFusionError") && !text.contains("Diagnostic"),
        "{text}"
    );

    let f = file(
        dir.path(),
        "q.toml",
        &format!("{HEAD}[[step]]\nop = \"sql\"\nquery = \"SELECT value, count(*) FROM batch\"\n"),
    );
    let (ok, text) = check(&f);
    assert!(!ok, "{text}");
    assert!(text.contains("step[0].query"), "{text}");
    assert!(text.to_lowercase().contains("group by"), "{text}");

    // A type mismatch, in user words (no "file a bug" sentence, one line).
    let f = file(
        dir.path(),
        "t.toml",
        &format!("{HEAD}[[step]]\nop = \"parse_json\"\n[[step]]\nop = \"sql\"\ncolumns = [\"ok boolean\"]\nquery = \"SELECT sum(ok) FROM batch\"\n"),
    );
    let (ok, text) = check(&f);
    assert!(!ok, "{text}");
    assert!(text.contains("sum(Boolean)"), "{text}");
    assert!(!text.contains("bug"), "{text}");

    let good = file(
        dir.path(),
        "good.toml",
        &format!("{HEAD}[[step]]\nop = \"sql\"\nquery = \"SELECT upper(value) AS v FROM batch\"\n[[sink]]\nkind = \"print\"\n"),
    );
    let (ok, text) = check(&good);
    assert!(ok, "{text}");
    assert!(
        text.contains("sql \"SELECT upper(value) AS v FROM batch\""),
        "{text}"
    );
}

#[test]
fn check_refuses_sql_keys_that_cannot_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = "[[step]]\nid = \"j\"\nop = \"parse_json\"\n";
    for (step, want) in [
        // JSON records need declared columns or an explicit inference.
        (format!("{json}[[step]]\nop = \"sql\"\nquery = \"SELECT * FROM batch\"\n"), "step[1].columns"),
        (format!("{json}[[step]]\nop = \"sql\"\nschema = \"guess\"\nquery = \"SELECT * FROM batch\"\n"), "step[1].schema"),
        (format!("{json}[[step]]\nop = \"sql\"\ncolumns = [\"a integer\"]\nquery = \"SELECT * FROM batch\"\n"), "step[1].columns"),
        (format!("{json}[[step]]\nop = \"sql\"\ncolumns = [\"a bigint\", \"a string\"]\nquery = \"SELECT * FROM batch\"\n"), "step[1].columns"),
        // Text lines are one column.
        ("[[step]]\nop = \"sql\"\ncolumns = [\"a bigint\"]\nquery = \"SELECT * FROM batch\"\n".to_string(), "step[0].columns"),
        // A window keeps its batches under the step's name.
        ("[[step]]\nop = \"sql\"\nwindow = \"2s\"\nquery = \"SELECT * FROM batch\"\n".to_string(), "step[0].id"),
        // A list in `from` is for SQL only.
        (format!("{json}[[step]]\nop = \"lowercase\"\nfrom = [\"events\", \"j\"]\n"), "step[1].from"),
        ("[[step]]\nop = \"sql\"\nstatic_tables = { t = \"missing.csv\" }\nquery = \"SELECT * FROM batch\"\n".to_string(), "step[0].static_tables"),
        ("[[step]]\nop = \"sql\"\nquery = \"SELECT * FROM nowhere\"\n".to_string(), "step[0].query"),
        // Inferred columns are kept in a file named after the step.
        (format!("{json}[[step]]\nop = \"sql\"\nschema = \"infer\"\nquery = \"SELECT * FROM batch\"\n"), "step[1].id"),
        // Only a query runs, even when the columns are not known yet.
        (format!("{json}[[step]]\nid = \"q\"\nop = \"sql\"\nschema = \"infer\"\nquery = \"DROP TABLE batch\"\n"), "step[1].query"),
        // SQL folds unquoted names: ids that differ only in case are one table.
        ("[[source]]\nid = \"Events\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n[[step]]\nop = \"sql\"\nfrom = [\"events\", \"Events\"]\nquery = \"SELECT * FROM batch\"\n".to_string(), "step[0].from"),
    ] {
        let f = file(dir.path(), "p.toml", &format!("{HEAD}{step}"));
        let (ok, text) = check(&f);
        assert!(!ok, "accepted:\n{step}\n{text}");
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}

#[test]
fn check_plans_a_join_of_two_streams_and_a_static_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    file(dir.path(), "names.csv", "code,name\n1,one\n2,two\n");
    let f = file(
        dir.path(),
        "p.toml",
        &format!(
            "{HEAD}[[source]]\nid = \"more\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n\
             [[step]]\nid = \"both\"\nop = \"sql\"\nfrom = [\"events\", \"more\"]\n\
             static_tables = {{ names = \"names.csv\" }}\n\
             query = '''SELECT e.value, n.name FROM events e JOIN more m ON e.value = m.value\n\
             LEFT JOIN names n ON CAST(e.value AS BIGINT) = n.code'''\n[[sink]]\nkind = \"print\"\n"
        ),
    );
    let (ok, text) = check(&f);
    assert!(ok, "{text}");
    let bad = std::fs::read_to_string(&f)
        .expect("read")
        .replace("n.name", "n.nam");
    let f = file(dir.path(), "bad.toml", &bad);
    let (ok, text) = check(&f);
    assert!(!ok, "{text}");
    assert!(text.contains("n.nam"), "{text}");
}

/// The pipeline: JSON events, a SQL step joining a static table, rows to
/// JSON files.
fn pipeline(dir: &Path) -> PathBuf {
    file(dir, "kinds.csv", "k,kind\n0,zero\n1,one\n2,two\n");
    file(
        dir,
        "p.toml",
        "[pipeline]\nbatch_interval = \"50ms\"\nbatch_records_max = 150\n[service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"events\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n\
         [[step]]\nop = \"parse_json\"\n\
         [[step]]\nid = \"enrich\"\nop = \"sql\"\ncolumns = [\"n bigint\", \"word string\"]\n\
         static_tables = { kinds = \"kinds.csv\" }\n\
         query = '''\nSELECT b.n, upper(b.word) AS w, b.n * 2 AS twice, k.kind\nFROM batch b JOIN kinds k ON b.n % 3 = k.k\nWHERE b.n % 5 <> 0'''\n\
         [[sink]]\nkind = \"json_files\"\nprefix = \"out/rows\"\n",
    )
}

const EVENTS: u64 = 3000;

fn events(dir: &Path) -> PathBuf {
    let text: String = (1..=EVENTS)
        .map(|i| format!("{{\"n\": {i}, \"word\": \"w{}\"}}\n", i % 7))
        .collect();
    file(dir, "events.jsonl", &text)
}

/// Every output row (as its JSON text) with its count.
fn rows(data: &Path) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(data.join("out"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON row");
            *m.entry(v.to_string()).or_default() += 1;
        }
    }
    m
}

fn expected_rows() -> usize {
    (1..=EVENTS).filter(|n| n % 5 != 0).count()
}

/// Runs the pipeline in `data` until every row is out, with `kills`
/// SIGKILLs while the feed is under way.
fn run_with_kills(dir: &Path, data: &Path, kills: usize) -> BTreeMap<String, u32> {
    let p = pipeline(dir);
    let ev = events(dir);
    let want = expected_rows();
    let (mut g, addr, mut rx) = start_ingest(&p, data);
    let feeder = {
        let (addr, ev) = (addr.clone(), ev.clone());
        std::thread::spawn(move || feed_file(&addr, &ev, "p1"))
    };
    for k in 1..=kills {
        let at = want * k / (kills + 1);
        wait_for("rows before a kill", || {
            rows(data).values().sum::<u32>() as usize >= at
        });
        g.signal("KILL");
        g.wait_exit(Duration::from_secs(30));
        // The feed retries against the same address: restart on it.
        let fixed = std::fs::read_to_string(&p)
            .expect("read")
            .replace("127.0.0.1:0", &addr);
        std::fs::write(&p, fixed).expect("write");
        // Its log is read to the end (a closed pipe would fail its writes).
        let (g2, _, rx2) = start_ingest(&p, data);
        (g, rx) = (g2, rx2);
    }
    feeder.join().expect("the feed");
    wait_for("every row", || {
        rows(data).values().sum::<u32>() as usize >= want
    });
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}:\n{}", all_lines(&rx));
    rows(data)
}

#[test]
fn a_sql_step_across_sigkills_equals_an_uninterrupted_run() {
    let calm = tempfile::tempdir().expect("tempdir");
    let reference = run_with_kills(calm.path(), &calm.path().join("data"), 0);
    assert_eq!(reference.len(), expected_rows());
    assert!(reference.values().all(|&c| c == 1));
    assert!(
        reference.contains_key(r#"{"kind":"one","n":1,"twice":2,"w":"W1"}"#),
        "{:?}",
        reference.keys().next()
    );
    let chaos = tempfile::tempdir().expect("tempdir");
    let killed = run_with_kills(chaos.path(), &chaos.path().join("data"), 3);
    assert_eq!(
        killed, reference,
        "rows lost, doubled or changed across SIGKILLs"
    );
}

#[test]
fn inferred_columns_are_saved_logged_and_checked_against_with_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let text = "[pipeline]\nbatch_interval = \"50ms\"\n[service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"events\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n\
         [[step]]\nid = \"parsed\"\nop = \"parse_json\"\n\
         [[step]]\nid = \"q\"\nop = \"sql\"\nschema = \"infer\"\n\
         query = \"SELECT user, amount * 2 AS double FROM batch\"\n\
         [[sink]]\nkind = \"json_files\"\nprefix = \"out/rows\"\n";
    let p = file(dir.path(), "p.toml", text);
    let ev = file(
        dir.path(),
        "ev.jsonl",
        "{\"user\": \"ann\", \"amount\": 2}\n{\"user\": \"bob\", \"amount\": 1.5}\n",
    );
    let (mut g, addr, rx) = start_ingest(&p, &data);
    feed_file(&addr, &ev, "p1");
    wait_for("both rows", || rows(&data).len() == 2);
    g.signal("TERM");
    assert!(g.wait_exit(Duration::from_secs(60)).success());
    let log = all_lines(&rx);
    assert!(log.contains("inferred the table's schema"), "{log}");
    // JSON objects are read with their keys in name order.
    assert!(
        log.contains("columns=amount: double, user: string"),
        "{log}"
    );
    let saved = data.join("sql").join("q.parsed.schema.json");
    let columns = std::fs::read_to_string(&saved).expect("the schema file");
    assert_eq!(
        columns.trim(),
        r#"{"columns":[["amount","double"],["user","string"]]}"#
    );
    let mut got: Vec<String> = rows(&data).into_keys().collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            r#"{"double":3.0,"user":"bob"}"#,
            r#"{"double":4.0,"user":"ann"}"#
        ]
    );

    let check_dir = |f: &Path| {
        let out = weir()
            .arg("check")
            .arg("--data-dir")
            .arg(&data)
            .arg(f)
            .output()
            .expect("check");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text_out) = check_dir(&p);
    assert!(ok, "{text_out}");
    let bad = file(
        dir.path(),
        "bad.toml",
        &text.replace("amount * 2", "price * 2"),
    );
    let (ok, text_out) = check_dir(&bad);
    assert!(!ok, "{text_out}");
    assert!(text_out.contains("price"), "{text_out}");
}
