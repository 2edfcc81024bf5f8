//! HTTP ingest against the binary ingest protocol, in the same run, on
//! the same kind of stream: records/s acknowledged after fsync, 100-byte
//! records. HTTP: `CONNECTIONS` keep-alive connections, each a producer
//! posting requests of `RECORDS_PER_REQUEST` (100) records one after the
//! other (HTTP/1.1: one request in flight per connection), with the
//! request latency p50 / p99. Binary: as many producers, each with
//! 100-record frames (`FRAMES_IN_FLIGHT` unacknowledged), and with
//! `weir feed`'s default 2000-record frames. Target (#16): at least
//! 300,000 records/s over HTTP on 2 cores.
//!
//! The pipeline behind each server counts records per batch (so batches
//! commit and the backlog drains); the data directory is a temp dir on
//! the machine's disk (real fdatasync).
//!
//! Run: `cargo run --release --example bench_http_ingest [RECORDS]`
//! (default 1000000 records per run, split between the connections).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir::ingest::{HttpLimits, IngestConfig, Protocol};
use weir::testing_http::HttpClient;

#[path = "support/ingest_bench.rs"]
mod ingest_bench;
use ingest_bench::{counting_server, produce, RECORD_BYTES};

const RECORDS_PER_REQUEST: u64 = 100;
const CONNECTIONS: usize = 8;
const FRAMES_IN_FLIGHT: usize = 8;

/// One HTTP producer: posts `n` records in requests of 100; returns the
/// request latencies.
fn post(addr: SocketAddr, id: String, n: u64) -> Vec<Duration> {
    let mut c = HttpClient::connect(addr).expect("connect");
    let line = format!("{}\n", "x".repeat(RECORD_BYTES));
    let body = line.repeat(RECORDS_PER_REQUEST as usize);
    let mut lat = Vec::with_capacity((n / RECORDS_PER_REQUEST) as usize);
    let mut seq = 0;
    while seq < n {
        let t = Instant::now();
        let r = c
            .post("/v1/streams/bench", Some((&id, seq)), None, body.as_bytes())
            .expect("post");
        assert_eq!(r.code, 200, "{}", r.body);
        lat.push(t.elapsed());
        seq += RECORDS_PER_REQUEST;
    }
    lat
}

/// Runs `producers` producer threads of `per` records each against a
/// fresh server; prints and returns records/s.
fn run(what: &str, http: bool, frame: usize, total: u64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = IngestConfig::new("127.0.0.1:0".parse().expect("addr"));
    if http {
        cfg.protocol = Protocol::Http(HttpLimits::default());
    }
    let (ssc, addr, counted) = counting_server(dir.path(), cfg);
    let per = total / CONNECTIONS as u64 / RECORDS_PER_REQUEST * RECORDS_PER_REQUEST;
    let t = Instant::now();
    let handles: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            std::thread::spawn(move || match http {
                true => post(addr, format!("p{i}"), per),
                false => produce(addr, format!("p{i}"), per, frame, FRAMES_IN_FLIGHT),
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer"))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    let records = per * CONNECTIONS as u64;
    let rate = records as f64 / secs;
    println!(
        "{what}: {records} records of {RECORD_BYTES} bytes acknowledged in {secs:.2} s = {rate:.0} records/s; latency per {frame}-record request/frame p50 {:.2} ms, p99 {:.2} ms",
        pct(0.50),
        pct(0.99)
    );
    ssc.stop(true).expect("stop");
    assert_eq!(
        counted.load(Ordering::Relaxed),
        records,
        "every record counted once"
    );
    rate
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let n = CONNECTIONS;
    let http = run(
        &format!("HTTP, {n} keep-alive connections, 100-record requests"),
        true,
        100,
        total,
    );
    let bin100 = run(
        &format!("binary, {n} producers, 100-record frames"),
        false,
        100,
        total,
    );
    let bin2000 = run(
        &format!("binary, {n} producers, 2000-record frames"),
        false,
        2000,
        total,
    );
    println!(
        "HTTP / binary (100-record frames) = {:.2}; HTTP / binary (2000-record frames) = {:.2}; target 300000 records/s over HTTP: {}",
        http / bin100,
        http / bin2000,
        if http >= 300_000.0 { "met" } else { "NOT met" }
    );
}
