//! The end-to-end example `deploy/pipelines/http-to-postgres.toml` (#16)
//! with the real binary and a real PostgreSQL 15 (tests/pg_common): a
//! producer posts JSON readings over HTTP with its producer id and
//! sequence numbers, retrying every unanswered request, while `weir run`
//! is SIGKILLed twice (each at a random point of its share of the
//! requests); the per-sensor totals the tumbling window adds into
//! `sensor_totals` equal the sums of the readings sent, and the sliding
//! window's table holds one row per sensor. The example file is used as
//! it is, with its port, database, interval and windows scaled for a
//! test. Every wait is bounded.

mod pg_common;
mod service_common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pg_common::Pg;
use service_common::{free_port, post_until_stored, spawn_logged, wait_ready, weir, Gate, Guard};
use weir::testing_http::HttpClient;

const SENSORS: u64 = 5;
const READINGS: u64 = 30_000;
const PER_REQUEST: u64 = 50;
const KILLS: u64 = 2;
/// Requests the producer may post past a kill point before the kill.
const SLACK: u64 = 8;

fn reading(i: u64) -> (String, u64) {
    (format!("s{}", i % SENSORS), i % 7 + 1)
}

/// The example pipeline with a free port, the test database, 100 ms
/// batches and 1 s / 3 s windows.
fn pipeline(dir: &std::path::Path, port: u16, pg: &Pg) -> std::path::PathBuf {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/pipelines/http-to-postgres.toml"
    );
    let text = std::fs::read_to_string(example).expect("the example");
    let swaps = [
        (
            "address = \"127.0.0.1:8080\"",
            format!("address = \"127.0.0.1:{port}\""),
        ),
        (
            "host=127.0.0.1 port=5432 user=weir dbname=energy",
            pg.url("energy"),
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"100ms\"".to_string(),
        ),
        (
            "window = \"10s\"\nslide = \"10s\"",
            "window = \"1s\"\nslide = \"1s\"".to_string(),
        ),
        (
            "window = \"60s\"\nslide = \"10s\"",
            "window = \"3s\"\nslide = \"1s\"".to_string(),
        ),
    ];
    let mut text = text;
    for (from, to) in swaps {
        assert!(text.contains(from), "the example no longer has {from:?}");
        text = text.replace(from, &to);
    }
    let p = dir.join("p.toml");
    std::fs::write(&p, text).expect("pipeline");
    p
}

fn start(p: &std::path::Path, data: &std::path::Path) -> Guard {
    let (mut g, rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(p)
            .arg("--data-dir")
            .arg(data)
            .arg("--http-address")
            .arg("off")
            .env("WEIR_PG_PASSWORD", "unused"),
    );
    wait_ready(&mut g, &rx);
    // Keep the log flowing (a full pipe would block weir).
    std::thread::spawn(move || while rx.recv().is_ok() {});
    g
}

/// Posts request `k` (readings `k*50 ..`, sequence `k*50`) until it is
/// stored.
fn post(addr: SocketAddr, k: u64, c: &mut Option<HttpClient>, give_up: Instant) {
    let body: String = (k * PER_REQUEST..(k + 1) * PER_REQUEST)
        .map(|i| {
            let (s, kwh) = reading(i);
            format!("{{\"sensor\":\"{s}\",\"kwh\":{kwh}}}\n")
        })
        .collect();
    let seq = ("meter", k * PER_REQUEST);
    post_until_stored(addr, "/v1/streams/readings", seq, &body, c, give_up);
}

#[test]
fn http_to_postgres_through_sigkills_sums_every_reading_once() {
    let pg = Pg::start();
    pg.create_db("energy");
    pg.sql(
        "energy",
        "CREATE TABLE sensor_totals (sensor text PRIMARY KEY, kwh bigint NOT NULL);
         CREATE TABLE sensor_last_minute (sensor text PRIMARY KEY, kwh bigint NOT NULL)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let p = pipeline(dir.path(), port, &pg);
    let data = dir.path().join("data");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let requests = READINGS / PER_REQUEST;
    let share = requests / (KILLS + 1);
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(port);
    let targets: Vec<u64> = (0..KILLS)
        .map(|kill| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            kill * share + 1 + seed % (share - SLACK)
        })
        .collect();
    let gate = Gate::new(targets[0] + SLACK);
    let producer = gate.clone();
    let poster = std::thread::spawn(move || {
        let (mut c, give_up) = (None, Instant::now() + Duration::from_secs(240));
        for k in 0..requests {
            producer.before(k);
            post(addr, k, &mut c, give_up);
            producer.stored(k);
        }
    });
    for (kill, &target) in targets.iter().enumerate() {
        let mut g = start(&p, &data);
        gate.wait_done(target);
        g.signal("KILL");
        g.wait_exit(Duration::from_secs(30));
        gate.allow(targets.get(kill + 1).map_or(requests, |t| t + SLACK));
    }
    let mut g = start(&p, &data);
    poster.join().expect("the producer");
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..READINGS {
        let (s, kwh) = reading(i);
        *want.entry(s).or_default() += kwh;
    }
    let total: u64 = want.values().sum();
    let sum = || {
        pg.one("energy", "SELECT COALESCE(sum(kwh), 0) FROM sensor_totals")
            .parse::<u64>()
            .expect("a sum")
    };
    pg.wait("every reading summed", || sum() >= total);
    g.signal("TERM");
    assert!(g.wait_exit(Duration::from_secs(60)).success());
    let got: BTreeMap<String, u64> = pg
        .sql("energy", "SELECT sensor, kwh FROM sensor_totals")
        .into_iter()
        .map(|r| {
            let v = |i: usize| r[i].clone().expect("not NULL");
            (v(0), v(1).parse().expect("a number"))
        })
        .collect();
    assert_eq!(
        got, want,
        "per-sensor totals: a reading lost or summed twice"
    );
    let minute = pg.one("energy", "SELECT count(*) FROM sensor_last_minute");
    assert_eq!(minute, SENSORS.to_string());
}
