//! The PostgreSQL sink against a real PostgreSQL 15 (tests/pg_common):
//! each row lands once; a crash before the sink's transaction, inside it
//! (after COPY, before COMMIT) and after its COMMIT but before weir's
//! checkpoint commit each leave the table as an uninterrupted run's (the
//! last one's replay is skipped by the progress row); upserts with keys
//! repeated inside a batch apply in order and are not doubled by a
//! replay; a second data directory is fenced; a constraint violation
//! fails the batch naming the row, or goes to the dead-letter table; the
//! server stopped and started mid-run loses and doubles nothing; the
//! real `weir run` binary SIGKILLed ten times leaves the table equal to
//! an uninterrupted run's. Over TLS (a server with `ssl = on`, certificates
//! from tests/tls_common): rows land once through a crash after COMMIT
//! (verify-full, the connection seen as TLS 1.3 by the server); a wrong
//! authority and a name the certificate does not hold are refused at the
//! connect, at once (verify-ca then accepts the name), and so is a server
//! without TLS (never used in clear); a client certificate
//! logs in where the server asks for one; `weir check` reads the files.
//! The pipeline file's rules (sslmode in the url, `require` without a CA,
//! a server off this machine without TLS or credentials) are checked
//! without a server.
//!
//! The failpoint registry is process-global: the tests here run one at a
//! time (`SERIAL`). Waits are bounded polls, never sleeps for
//! correctness.

mod pg_common;
mod service_common;
mod tls_common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg_common::{Pg, ServerTls};
use weir::sink::{PgMode, PgOnError, PgRow, PgTls, PgTlsMode, PgValue};
use weir::wal::Wal;
use weir::{failpoint, ManualClock, PostgresSinkConfig, PostgresSinkStats, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(120);
const T0: u64 = 1_700_000_000_000;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("line {i}")).collect()
}

/// `line N` → (line, N).
fn row_of(l: &str) -> (String, i64) {
    let n = l
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(-1);
    (l.to_string(), n)
}

fn row(l: String) -> (String, i64) {
    row_of(&l)
}

/// A context on `data`: WAL input `input` → `to_row` → the sink (output
/// 0), and a count (output 1, so `between_outputs` falls after the sink).
fn build<T: weir::dstream::Data + PgRow>(
    data: &Path,
    clock: Arc<ManualClock>,
    cfg: PostgresSinkConfig,
    batch_records_max: u64,
    to_row: fn(String) -> T,
) -> (StreamingContext, Arc<Wal>, Arc<PostgresSinkStats>) {
    let mut got = None;
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .batch_records_max(batch_records_max)
            .batch_retries(2, Duration::from_millis(10))
            .build()?;
        let (lines, wal) = ssc.wal_text_stream("input")?;
        let stats = lines.map(to_row).save_to_postgres(cfg)?;
        lines.count().foreach_batch(|_, _| Ok(()))?;
        got = Some((wal, stats));
        Ok(ssc)
    })
    .expect("build");
    let (wal, stats) = got.expect("built");
    (ssc, wal, stats)
}

fn lines_table(pg: &Pg, db: &str) {
    pg.create_db(db);
    pg.sql(
        db,
        "CREATE TABLE out (line text NOT NULL, n bigint NOT NULL)",
    );
}

/// The table `out` holds each of `want` exactly once.
fn assert_exactly_once(pg: &Pg, db: &str, want: &[String]) {
    let got = pg.sql(db, "SELECT line, n FROM out ORDER BY n, line");
    let mut want: Vec<(String, i64)> = want.iter().map(|l| row_of(l)).collect();
    want.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let got: Vec<(String, i64)> = got
        .into_iter()
        .map(|r| {
            let line = r[0].clone().expect("line");
            let n = r[1].as_deref().and_then(|x| x.parse().ok()).expect("n");
            (line, n)
        })
        .collect();
    assert_eq!(got.len(), want.len(), "rows in out");
    assert!(
        got == want,
        "the table does not hold each record exactly once"
    );
}

/// One crash at failpoint `point` while batch `t` (300 new lines) runs,
/// then a restart that replays it; the table holds `before` plus the new
/// lines once, and the replay was skipped iff `skipped`.
#[allow(clippy::too_many_arguments)]
fn crash_and_replay(
    pg: &Pg,
    dir: &Path,
    cfg: &PostgresSinkConfig,
    clock: &Arc<ManualClock>,
    before: &mut Vec<String>,
    t: u64,
    point: &str,
    skipped: bool,
) {
    let (ssc, wal, _) = build(dir, clock.clone(), cfg.clone(), 400, row);
    ssc.start().expect("start");
    failpoint::arm(point, 0);
    let new = lines(before.len(), 300);
    wal.append(&new).expect("append");
    clock.set(t);
    assert!(
        ssc.await_batch(t, WAIT).is_err(),
        "{point}: the batch must fail"
    );
    assert!(failpoint::fired().is_some());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    failpoint::reset();
    before.extend(new);
    let (ssc, _wal, stats) = build(dir, clock.clone(), cfg.clone(), 400, row);
    ssc.start().expect("restart");
    clock.set(t + 1000);
    ssc.await_batch(t + 1000, WAIT)
        .expect("the replay and one more");
    assert_eq!(
        stats.replays_skipped.load(Ordering::Relaxed),
        u64::from(skipped),
        "{point}"
    );
    assert_exactly_once(pg, "a", before);
    ssc.stop(false).expect("stop");
}

#[test]
fn each_row_once_through_crashes_before_inside_and_after_the_transaction() {
    let _g = serial();
    failpoint::reset();
    let pg = Pg::start();
    lines_table(&pg, "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = PostgresSinkConfig::new(&pg.url("a"), "out", &["line", "n"]);
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), cfg.clone(), 400, row);
    ssc.start().expect("start");
    let mut all = lines(0, 1000);
    wal.append(&all).expect("append");
    clock.set(T0 + 3000);
    ssc.await_batch(T0 + 3000, WAIT).expect("three batches");
    assert_eq!(stats.rows.load(Ordering::Relaxed), 1000);
    assert_eq!(stats.batches.load(Ordering::Relaxed), 3);
    assert_exactly_once(&pg, "a", &all);
    ssc.stop(false).expect("stop");
    drop((ssc, wal));
    let points = [
        ("postgres_before_transaction", false),
        ("postgres_before_commit", false),
        // PostgreSQL committed, weir did not: the replay is skipped.
        ("before_commit", true),
    ];
    let mut t = T0 + 5000;
    for (point, skipped) in points {
        crash_and_replay(&pg, dir.path(), &cfg, &clock, &mut all, t, point, skipped);
        t += 2000;
    }
    let progress = pg.sql(
        "a",
        "SELECT pipeline, sink, part, batch_time_ms FROM weir_progress",
    );
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0][1].as_deref(), Some("out"));
}

/// Words, one per line; the table keeps a count per word.
fn word(l: String) -> (String, i64) {
    (l, 1)
}

#[test]
fn upserts_apply_repeated_keys_in_order_and_a_replay_does_not_double_them() {
    let _g = serial();
    failpoint::reset();
    let pg = Pg::start();
    pg.create_db("a");
    pg.sql(
        "a",
        "CREATE TABLE counts (word text PRIMARY KEY, n bigint NOT NULL)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = PostgresSinkConfig::new(&pg.url("a"), "counts", &["word", "n"]);
    cfg.mode = PgMode::Upsert {
        key: vec!["word".into()],
        update: Some("n = counts.n + excluded.n".into()),
    };
    let words: Vec<String> = (0..700).map(|i| format!("w{}", i % 7)).collect();
    let (ssc, wal, _) = build(dir.path(), clock.clone(), cfg.clone(), 10_000, word);
    ssc.start().expect("start");
    wal.append(&words[..350]).expect("append");
    clock.set(T0 + 1000);
    ssc.await_batch(T0 + 1000, WAIT).expect("batch 1");
    // Committed in PostgreSQL, not in weir: the replay must not add again.
    failpoint::arm("before_commit", 0);
    wal.append(&words[350..]).expect("append");
    clock.set(T0 + 2000);
    assert!(ssc.await_batch(T0 + 2000, WAIT).is_err());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    failpoint::reset();
    let (ssc, _wal, stats) = build(dir.path(), clock.clone(), cfg, 10_000, word);
    ssc.start().expect("restart");
    clock.set(T0 + 3000);
    ssc.await_batch(T0 + 3000, WAIT).expect("replay");
    assert_eq!(stats.replays_skipped.load(Ordering::Relaxed), 1);
    let got = pg.sql("a", "SELECT word, n FROM counts ORDER BY word");
    let want: Vec<Vec<Option<String>>> = (0..7)
        .map(|i| vec![Some(format!("w{i}")), Some("100".into())])
        .collect();
    assert_eq!(got, want);
    ssc.stop(false).expect("stop");
}

#[test]
fn a_second_data_directory_is_fenced_until_the_progress_row_is_handed_over() {
    let _g = serial();
    failpoint::reset();
    let pg = Pg::start();
    lines_table(&pg, "a");
    let clock = Arc::new(ManualClock::new(T0));
    let cfg = PostgresSinkConfig::new(&pg.url("a"), "out", &["line", "n"]);
    let first = tempfile::tempdir().expect("tempdir");
    let (ssc, wal, _) = build(first.path(), clock.clone(), cfg.clone(), 1000, row);
    ssc.start().expect("start");
    wal.append(&lines(0, 10)).expect("append");
    clock.set(T0 + 1000);
    ssc.await_batch(T0 + 1000, WAIT).expect("first writer");
    ssc.stop(false).expect("stop");
    drop((ssc, wal));
    let owner = pg.one("a", "SELECT writer FROM weir_progress");

    // The second directory's batches come after the first's (as with
    // the system clock): a handed-over row skips batches at or before
    // the one it records.
    clock.set(T0 + 2000);
    let second = tempfile::tempdir().expect("tempdir");
    let (ssc, wal, stats) = build(second.path(), clock.clone(), cfg.clone(), 1000, row);
    ssc.start().expect("start");
    wal.append(&lines(10, 10)).expect("append");
    clock.set(T0 + 3000);
    let err = ssc
        .await_batch(T0 + 3000, WAIT)
        .expect_err("fenced")
        .to_string();
    let _ = ssc.stop(false);
    drop((ssc, wal));
    eprintln!("fenced: {err}");
    for w in [
        "fenced",
        owner.as_str(),
        "UPDATE \"weir_progress\" SET writer",
    ] {
        assert!(err.contains(w), "{w} missing from: {err}");
    }
    assert_eq!(stats.rows.load(Ordering::Relaxed), 0);
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "10");
    // The way out the message gives: hand the row over, then restart.
    let mine = err
        .split("this one is ")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .expect("the second writer's id in the message");
    pg.sql("a", &format!("UPDATE weir_progress SET writer = '{mine}'"));
    let (ssc, _wal, _) = build(second.path(), clock.clone(), cfg, 1000, row);
    ssc.start().expect("restart");
    clock.set(T0 + 4000);
    ssc.await_batch(T0 + 4000, WAIT).expect("handed over");
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "20");
    ssc.stop(false).expect("stop");
}

/// `line N` with n = N, except n = "thirteen" for line 13 (not an
/// integer: refused before it is sent).
fn checked(l: String) -> Vec<PgValue> {
    let (line, n) = row_of(&l);
    let n = if n == 13 {
        PgValue::Text("thirteen".into())
    } else {
        PgValue::Int(n)
    };
    vec![PgValue::Text(line), n]
}

#[test]
fn a_rejected_row_fails_the_batch_or_goes_to_the_dead_letter_table() {
    let _g = serial();
    failpoint::reset();
    let pg = Pg::start();
    pg.create_db("a");
    pg.sql(
        "a",
        "CREATE TABLE out (line text NOT NULL, n bigint NOT NULL CONSTRAINT not_seven CHECK (n % 100 <> 7))",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = PostgresSinkConfig::new(&pg.url("a"), "out", &["line", "n"]);
    let recs = lines(0, 1000);
    let (ssc, wal, _) = build(dir.path(), clock.clone(), cfg.clone(), 10_000, checked);
    ssc.start().expect("start");
    wal.append(&recs).expect("append");
    clock.set(T0 + 1000);
    let err = ssc
        .await_batch(T0 + 1000, WAIT)
        .expect_err("a bad row fails the batch")
        .to_string();
    let _ = ssc.stop(false);
    drop((ssc, wal));
    eprintln!("failed: {err}");
    for w in [
        "rejects row",
        "of 1000 of batch",
        "column `n`",
        "on_error = \"dead_letter\"",
    ] {
        assert!(err.contains(w), "{w} missing from: {err}");
    }
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "0");

    // The same batch again, checked on the server only (no client-side
    // bad row): the constraint's name and SQLSTATE are in the message.
    let only_server = |l: String| {
        let (line, n) = row_of(&l);
        vec![PgValue::Text(line), PgValue::Int(n)]
    };
    let (ssc, wal, _) = build(dir.path(), clock.clone(), cfg.clone(), 10_000, only_server);
    ssc.start().expect("restart");
    let err = ssc
        .await_batch(T0 + 1000, WAIT)
        .expect_err("a constraint fails the batch")
        .to_string();
    let _ = ssc.stop(false);
    drop((ssc, wal));
    eprintln!("failed: {err}");
    for w in ["not_seven", "SQLSTATE 23514"] {
        assert!(err.contains(w), "{w} missing from: {err}");
    }
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "0");

    cfg.on_error = PgOnError::DeadLetter;
    let (ssc, _wal, stats) = build(dir.path(), clock.clone(), cfg, 10_000, checked);
    ssc.start().expect("restart");
    ssc.await_batch(T0 + 1000, WAIT).expect("dead letters");
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 11);
    assert_eq!(stats.row_by_row.load(Ordering::Relaxed), 1);
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "989");
    let dead = pg.sql(
        "a",
        "SELECT row_json, error, sqlstate FROM out_dead_letter ORDER BY row_index",
    );
    assert_eq!(dead.len(), 11);
    let all: String = dead.iter().map(|r| format!("{:?}\n", r)).collect();
    assert!(
        all.contains("thirteen") && all.contains("not an integer"),
        "{all}"
    );
    assert!(
        all.contains("line 507") && all.contains("not_seven") && all.contains("23514"),
        "{all}"
    );
    ssc.stop(false).expect("stop");
}

#[test]
fn the_server_stopped_and_started_mid_run_loses_and_doubles_nothing() {
    let _g = serial();
    failpoint::reset();
    let pg = Pg::start();
    lines_table(&pg, "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg = PostgresSinkConfig::new(&pg.url("a"), "out", &["line", "n"]);
    cfg.tries_max = 1000;
    cfg.connect_timeout_ms = 1000;
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), cfg, 2000, row);
    ssc.start().expect("start");
    let recs = lines(0, 40_000);
    for chunk in recs.chunks(2000) {
        wal.append(chunk).expect("append");
    }
    // Twenty batches due at once; the server stops while they run.
    clock.set(T0 + 20_000);
    pg.wait("the first batches", || {
        stats.batches.load(Ordering::Relaxed) >= 3
    });
    pg.stop_server();
    pg.wait("a failed try", || {
        stats.retries.load(Ordering::Relaxed) >= 1
    });
    pg.start_server();
    ssc.await_batch(T0 + 20_000, WAIT).expect("every batch");
    eprintln!(
        "server restart: batches {} retries {}",
        stats.batches.load(Ordering::Relaxed),
        stats.retries.load(Ordering::Relaxed)
    );
    assert_exactly_once(&pg, "a", &recs);
    ssc.stop(false).expect("stop");
}

#[test]
fn a_pipeline_file_sink_is_checked_key_by_key() {
    let base = Path::new("/etc/weir");
    let head = "[[source]]\nid = \"in\"\nkind = \"generator\"\n[[step]]\nop = \"count_by_key\"\n[[sink]]\nkind = \"postgres\"\n";
    let parse = |keys: &str| {
        weir::service::config::parse("p.toml", &format!("{head}{keys}\n"), base).map_err(Box::new)
    };
    let ok = parse("url = \"host=db user=weir dbname=app\"\ntable = \"counts\"\ncolumns = { word = \"key\", n = \"value\" }\npassword_file = \"pg.pass\"\ntls_ca_file = \"pg-ca.pem\"")
        .expect("valid");
    let weir::service::config::SinkKind::Postgres(d) = &ok.sinks[0].kind else {
        panic!("not a postgres sink");
    };
    assert_eq!(d.config.columns, vec!["n".to_string(), "word".to_string()]);
    assert_eq!(d.sources, vec!["value".to_string(), "key".to_string()]);
    assert_eq!(
        d.config.password,
        weir::sink::PgPassword::File(base.join("pg.pass"))
    );
    assert_eq!(d.config.tls, PgTls::verify_full(base.join("pg-ca.pem")));
    let local = "table = \"t\"\ncolumns = { a = \"key\" }\nurl = \"host=127.0.0.1 user=weir\"";
    let remote = "table = \"t\"\ncolumns = { a = \"key\" }\nurl = \"host=db.example user=weir\"";
    for (keys, words) in [
        // One way to ask for TLS: the keys, not the url.
        (
            "table = \"t\"\ncolumns = { a = \"key\" }\nurl = \"host=127.0.0.1 sslmode=require\""
                .to_string(),
            vec!["without sslmode", "tls_mode"],
        ),
        // libpq's require checks nothing; weir's needs the authority.
        (
            format!("{local}\ntls_mode = \"require\""),
            vec!["tls_ca_file", "verify-full", "require does not"],
        ),
        (
            format!("{local}\ntls_mode = \"prefer\""),
            vec!["\"verify-full\", \"verify-ca\""],
        ),
        (
            format!("{local}\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\""),
            vec!["tls_key_file"],
        ),
        // Off this machine: verified TLS, then credentials.
        (
            format!("{remote}\npassword_file = \"pg.pass\""),
            vec!["host db.example without tls_ca_file", "add tls_ca_file"],
        ),
        (
            format!("{remote}\npassword_file = \"pg.pass\"\ntls_mode = \"disable\""),
            vec!["add tls_ca_file"],
        ),
        (
            format!("{remote}\ntls_ca_file = \"ca.pem\""),
            vec!["without credentials", "password_file"],
        ),
    ] {
        let e = parse(&keys).expect_err(&keys).to_string();
        for w in words {
            assert!(e.contains(w), "{w} missing from: {e}");
        }
    }
    let p = parse(&format!(
        "{remote}\ntls_mode = \"verify-ca\"\ntls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"c.key\""
    ))
    .expect("a client certificate is a credential");
    let weir::service::config::SinkKind::Postgres(d) = &p.sinks[0].kind else {
        panic!("not a postgres sink");
    };
    assert_eq!(d.config.tls.mode, PgTlsMode::VerifyCa);
    assert_eq!(d.config.tls.key_file, Some(base.join("c.key")));
    let e = parse(
        "url = \"postgresql://weir:secret@db/app\"\ntable = \"t\"\ncolumns = { a = \"key\" }",
    )
    .expect_err("a password in the url");
    assert!(e.to_string().contains("password_file"), "{e}");
    let e = parse("url = \"host=db\"\ntable = \"t\"\ncolumns = { a = \"line\" }")
        .expect_err("pairs have no line");
    assert!(e.to_string().contains("\"key\" or \"value\""), "{e}");
    let e = parse("url = \"host=db\"\ntable = \"t\"\ncolumns = { a = \"key\" }\nmode = \"upsert\"")
        .expect_err("upsert without key");
    assert!(e.to_string().contains("key"), "{e}");
    let e = parse("url = \"host=db\"\ntable = \"t\"\ncolumns = { a = \"key\" }\nmod = \"insert\"")
        .expect_err("a misspelt key");
    assert!(e.to_string().contains("mode"), "{e}");
}

/// `weir run` on a directory of 30,000 lines, SIGKILLed ten times while it
/// writes (each kill when the table grew past a threshold), then run to
/// the end: the table equals an uninterrupted run's.
#[test]
fn weir_run_killed_ten_times_leaves_the_table_as_an_uninterrupted_run() {
    let _g = serial();
    let pg = Pg::start();
    lines_table(&pg, "a");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("input dir");
    let recs = lines(0, 30_000);
    let staged = dir.path().join("staged.txt");
    std::fs::write(dir.path().join("pg.pass"), "unused\n").expect("password file");
    let file = dir.path().join("p.toml");
    let toml = format!(
        "[pipeline]\nbatch_interval = \"100ms\"\nbatch_records_max = 1000\nadaptive_batches = false\n\n\
         [[source]]\nid = \"in\"\nkind = \"directory\"\npath = \"{}\"\n\n\
         [[step]]\nop = \"parse_json\"\non_error = \"drop\"\n\n\
         [[sink]]\nkind = \"postgres\"\nurl = \"{}\"\npassword_file = \"pg.pass\"\ntable = \"out\"\ncolumns = {{ line = \".\", n = \"n\" }}\n",
        input.display(),
        pg.url("a"),
    );
    // Lines as JSON records: {"line": ..., "n": N}.
    let json: Vec<String> = recs
        .iter()
        .map(|l| {
            let (line, n) = row_of(l);
            format!("{{\"l\":\"{line}\",\"n\":{n}}}")
        })
        .collect();
    std::fs::write(&staged, json.join("\n") + "\n").expect("write input");
    std::fs::rename(&staged, input.join("part-0.txt")).expect("rename in");
    std::fs::write(&file, toml).expect("write pipeline");
    let check = service_common::weir()
        .arg("check")
        .arg(&file)
        .output()
        .expect("weir check");
    let words = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{words}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(words.contains("PostgreSQL table out"), "{words}");
    let data = dir.path().join("data");
    let run = || {
        service_common::spawn_logged(
            service_common::weir()
                .arg("run")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data)
                .arg("--http-address")
                .arg("off"),
        )
    };
    let count = || {
        pg.one("a", "SELECT count(*) FROM out")
            .parse::<u64>()
            .expect("a count")
    };
    for k in 1..=10u64 {
        let (mut g, _log) = run();
        let at = k * 2500;
        pg.wait("the table to grow", || count() >= at);
        g.signal("KILL");
        g.wait_exit(Duration::from_secs(30));
    }
    let (mut g, log) = run();
    // A run killed late may have written every row already: wait until
    // this one is up (its SIGTERM handler installed) before stopping it.
    service_common::wait_ready(&mut g, &log);
    pg.wait("every row", || count() >= 30_000);
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    if status.code() != Some(0) {
        panic!(
            "exit status {status:?}:\n{}",
            service_common::all_lines(&log)
        );
    }
    let got = pg.sql(
        "a",
        "SELECT count(*), count(DISTINCT n), min(n), max(n), sum(n) FROM out",
    );
    let want = vec![
        Some("30000".to_string()),
        Some("30000".to_string()),
        Some("0".to_string()),
        Some("29999".to_string()),
        Some((0..30_000u64).sum::<u64>().to_string()),
    ];
    assert_eq!(got, vec![want]);
    let whole = pg.one("a", "SELECT line FROM out WHERE n = 42");
    assert_eq!(whole, "{\"l\":\"line 42\",\"n\":42}");
}

/// The test authority `ca` (server certificate `server` for 127.0.0.1 and
/// localhost, client certificate `certuser`) and a second one, `other`,
/// that signed nothing of this server.
fn certificates(dir: &Path) {
    tls_common::make_ca(dir, "ca");
    tls_common::make_leaf(dir, "ca", "server", true);
    tls_common::make_leaf(dir, "ca", "certuser", false);
    tls_common::make_ca(dir, "other");
}

/// A server with `ssl = on` that asks for client certificates by `ca`, and
/// logs `certuser` in by its certificate only.
fn tls_server(certs: &Path) -> Pg {
    let tls = ServerTls {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_ca: Some(certs.join("ca.pem")),
    };
    let pg = Pg::start_with(
        Some(&tls),
        &[
            "hostssl all certuser 127.0.0.1/32 cert",
            "host all certuser 127.0.0.1/32 reject",
        ],
    );
    lines_table(&pg, "a");
    pg
}

/// The batch at `t` of a fresh data directory with `cfg` fails; its error.
fn fails_at_connect(cfg: &PostgresSinkConfig, clock: &Arc<ManualClock>, t: u64) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), cfg.clone(), 1000, row);
    ssc.start().expect("start");
    wal.append(&lines(0, 5)).expect("append");
    clock.set(t);
    let err = ssc.await_batch(t, WAIT).expect_err("refused").to_string();
    let _ = ssc.stop(false);
    eprintln!("refused: {err}");
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0, "retried: {err}");
    assert_eq!(stats.rows.load(Ordering::Relaxed), 0);
    err
}

#[test]
fn rows_land_once_over_verified_tls_and_a_wrong_certificate_is_refused_at_connect() {
    let _g = serial();
    failpoint::reset();
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let pg = tls_server(certs.path());
    let url = |host: &str, user: &str, db: &str| {
        format!("{host} port={} user={user} dbname={db}", pg.port)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0));
    let mut cfg =
        PostgresSinkConfig::new(&url("host=localhost", "weir", "a"), "out", &["line", "n"]);
    cfg.tls = PgTls::verify_full(certs.path().join("ca.pem"));
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), cfg.clone(), 400, row);
    ssc.start().expect("start");
    let mut all = lines(0, 1000);
    wal.append(&all).expect("append");
    clock.set(T0 + 3000);
    ssc.await_batch(T0 + 3000, WAIT)
        .expect("three batches over TLS");
    assert_eq!(stats.batches.load(Ordering::Relaxed), 3);
    assert_exactly_once(&pg, "a", &all);
    // The server sees the sink's session (still open) as TLS 1.3.
    let seen = pg.sql(
        "a",
        "SELECT s.ssl::text, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'weir out'",
    );
    assert_eq!(
        seen,
        vec![vec![Some("true".to_string()), Some("TLSv1.3".to_string())]]
    );
    ssc.stop(false).expect("stop");
    drop((ssc, wal));
    // PostgreSQL committed, weir did not: the replay over TLS is skipped.
    crash_and_replay(
        &pg,
        dir.path(),
        &cfg,
        &clock,
        &mut all,
        T0 + 5000,
        "before_commit",
        true,
    );

    // Another authority: refused at the connect, not retried.
    let mut wrong = cfg.clone();
    wrong.tls = PgTls::verify_full(certs.path().join("other.pem"));
    let err = fails_at_connect(&wrong, &clock, T0 + 8000);
    for w in [
        "TLS failed",
        "not signed by an authority in tls_ca_file",
        "Nothing was written",
    ] {
        assert!(err.contains(w), "{w} missing from: {err}");
    }
    // A name the certificate does not hold (reached at 127.0.0.1):
    // refused under verify-full, accepted under verify-ca.
    let mut named = cfg.clone();
    named.url = url("host=db.invalid hostaddr=127.0.0.1", "weir", "a");
    let err = fails_at_connect(&named, &clock, T0 + 9000);
    assert!(err.contains("does not name the host"), "{err}");
    named.tls.mode = PgTlsMode::VerifyCa;
    let (ssc, wal, _) = build(dir.path(), clock.clone(), named, 400, row);
    ssc.start().expect("restart");
    let more = lines(all.len(), 100);
    wal.append(&more).expect("append");
    all.extend(more);
    clock.set(T0 + 10_000);
    ssc.await_batch(T0 + 10_000, WAIT).expect("verify-ca");
    assert_exactly_once(&pg, "a", &all);
    ssc.stop(false).expect("stop");
    drop((ssc, wal));

    // `certuser` logs in by a client certificate only.
    pg.sql("postgres", "CREATE ROLE certuser LOGIN SUPERUSER");
    lines_table(&pg, "m");
    let mut client = cfg.clone();
    client.url = url("host=127.0.0.1", "certuser", "m");
    client.tries_max = 1;
    let err = fails_at_connect(&client, &clock, T0 + 11_000);
    assert!(err.contains("requires a valid client certificate"), "{err}");
    client.tls.cert_file = Some(certs.path().join("certuser.pem"));
    client.tls.key_file = Some(certs.path().join("certuser.key"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (ssc, wal, _) = build(dir.path(), clock.clone(), client, 400, row);
    ssc.start().expect("start");
    wal.append(&lines(0, 50)).expect("append");
    clock.set(T0 + 12_000);
    ssc.await_batch(T0 + 12_000, WAIT)
        .expect("a client certificate");
    assert_exactly_once(&pg, "m", &lines(0, 50));
    ssc.stop(false).expect("stop");
}

#[test]
fn a_server_without_tls_is_refused_never_used_in_clear() {
    let _g = serial();
    failpoint::reset();
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let pg = Pg::start();
    lines_table(&pg, "a");
    let mut cfg = PostgresSinkConfig::new(&pg.url("a"), "out", &["line", "n"]);
    cfg.tls = PgTls::verify_full(certs.path().join("ca.pem"));
    let clock = Arc::new(ManualClock::new(T0));
    let err = fails_at_connect(&cfg, &clock, T0 + 1000);
    assert!(
        err.contains("the server does not accept TLS: set ssl = on"),
        "{err}"
    );
    assert_eq!(pg.one("a", "SELECT count(*) FROM out"), "0");
}

/// `weir check` reads a `postgres` sink's TLS files as `weir run` would.
#[test]
fn weir_check_reads_the_tls_files() {
    let certs = tempfile::tempdir().expect("tempdir");
    certificates(certs.path());
    let pipeline = |ca: &str| {
        let file = certs.path().join("p.toml");
        let toml = format!(
            "[[source]]\nid = \"in\"\nkind = \"generator\"\n[[step]]\nop = \"count_by_key\"\n\
             [[sink]]\nkind = \"postgres\"\nurl = \"host=localhost user=weir dbname=app\"\n\
             table = \"counts\"\ncolumns = {{ word = \"key\", n = \"value\" }}\ntls_ca_file = \"{ca}\"\n"
        );
        std::fs::write(&file, toml).expect("write pipeline");
        service_common::weir()
            .arg("check")
            .arg(&file)
            .output()
            .expect("weir check")
    };
    let out = pipeline("ca.pem");
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{words}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        words.contains("TLS verify-full (the authority and the host name: "),
        "{words}"
    );
    assert!(words.contains("files read"), "{words}");
    let out = pipeline("missing.pem");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot read the PostgreSQL CA file (tls_ca_file)"),
        "{err}"
    );
    assert!(err.contains("missing.pem"), "{err}");
}
