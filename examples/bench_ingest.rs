//! Durable ingest over loopback: records/s acknowledged after fsync, with 1
//! and 8 producers sending 100-byte records, and the ack latency (from
//! sending a DATA frame to the ACK that covers it) p50 / p99.
//!
//! Each producer pipelines up to `FRAMES_IN_FLIGHT` frames of
//! `RECORDS_PER_FRAME` records. The pipeline behind the server counts
//! records per batch (so batches commit and the backlog drains); the data
//! directory is a temp dir on the machine's disk (real fdatasync).
//!
//! Run: `cargo run --release --example bench_ingest [RECORDS_PER_PRODUCER_RUN]`
//! (default 2000000 records in total per run, split between producers).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir::ingest::IngestConfig;

#[path = "support/ingest_bench.rs"]
mod ingest_bench;
use ingest_bench::{counting_server, produce, RECORD_BYTES};

const RECORDS_PER_FRAME: usize = 2000;
const FRAMES_IN_FLIGHT: usize = 8;

fn run(producers: usize, total: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = IngestConfig::new("127.0.0.1:0".parse().expect("addr"));
    let (ssc, addr, counted) = counting_server(dir.path(), cfg);
    let per = total / producers as u64;
    let t = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|i| {
            std::thread::spawn(move || {
                produce(
                    addr,
                    format!("p{i}"),
                    per,
                    RECORDS_PER_FRAME,
                    FRAMES_IN_FLIGHT,
                )
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer"))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let records = per * producers as u64;
    println!(
        "{producers} producer(s): {records} records of {RECORD_BYTES} bytes acknowledged in {secs:.2} s = {:.0} records/s; ack latency per {RECORDS_PER_FRAME}-record frame p50 {:.2} ms, p99 {:.2} ms",
        records as f64 / secs,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    ssc.stop(true).expect("stop");
    assert_eq!(
        counted.load(Ordering::Relaxed),
        records,
        "every record counted once"
    );
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    run(1, total);
    run(8, total);
}
