//! Benchmark of the JetStream sink against a bare async-nats publisher, in
//! the same run, on a 3-node loopback cluster (tests/nats_common: R3 file
//! streams, `sync_interval: always`).
//!
//! Both publish the same records with a `Nats-Msg-Id` header each and at
//! most `IN_FLIGHT` acks awaited at once, to streams of their own. weir's
//! time runs from the moment its batches fall due to the commit of the
//! last (reading its input log, publishing, awaiting acks, committing);
//! the bare publisher's from its first publish to its last ack. Each has
//! its own client on the same server list and a 2-thread runtime. Rounds
//! alternate which goes first, so that neither always gets the warmer
//! cluster.
//!
//! Run: `cargo run --release --example bench_jetstream_sink [RECORDS] [ROUNDS]`.

#[path = "../tests/nats_common/mod.rs"]
mod nats_common;

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use nats_common::Cluster;
use weir::{JetStreamSinkConfig, ManualClock, StreamingContext};

const IN_FLIGHT: usize = 1024;
const BATCHES: u64 = 10;

fn record(i: usize) -> String {
    format!("record {i:08} of the benchmark, some forty bytes")
}

/// Records per second of a bare publisher of `n` records to `subject`:
/// its own client on the same server list and its own 2-thread runtime,
/// as weir's sink has.
fn bare(c: &Cluster, subject: &str, round: usize, n: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let urls = c.urls();
    let payloads: Vec<Bytes> = (0..n).map(|i| Bytes::from(record(i))).collect();
    rt.block_on(async move {
        let client = async_nats::ConnectOptions::new()
            .connect(urls)
            .await
            .expect("connect");
        let js = async_nats::jetstream::ContextBuilder::new()
            .max_ack_inflight(IN_FLIGHT)
            .build(client);
        let subject = async_nats::Subject::from(subject);
        let t = Instant::now();
        type AckFut = <PublishAckFuture as IntoFuture>::IntoFuture;
        let mut pending: VecDeque<AckFut> = VecDeque::with_capacity(IN_FLIGHT);
        for (i, p) in payloads.into_iter().enumerate() {
            if pending.len() >= IN_FLIGHT {
                if let Some(ack) = pending.pop_front() {
                    ack.await.expect("ack");
                }
            }
            let mut h = HeaderMap::new();
            h.insert(NATS_MESSAGE_ID, format!("bare/{round}/{i}"));
            let f = js
                .publish_with_headers(subject.clone(), h, p)
                .await
                .expect("publish");
            pending.push_back(f.into_future());
        }
        while let Some(ack) = pending.pop_front() {
            ack.await.expect("ack");
        }
        n as f64 / t.elapsed().as_secs_f64()
    })
}

/// Records per second of weir's sink publishing `n` records from its
/// input log in `BATCHES` batches.
fn weir_sink(c: &Cluster, subject: &str, n: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let t0 = now / 1000 * 1000;
    let clock = Arc::new(ManualClock::new(t0));
    let urls = c.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut cfg = JetStreamSinkConfig::new(&urls, subject);
    cfg.acks_in_flight_max = IN_FLIGHT;
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .batch_records_max(n as u64 / BATCHES)
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        lines.save_to_jetstream(cfg)?;
        wal = Some(w);
        Ok(ssc)
    })
    .expect("context");
    let wal = wal.expect("input log");
    let recs: Vec<String> = (0..n).map(record).collect();
    for chunk in recs.chunks(10_000) {
        wal.append(chunk).expect("append");
    }
    ssc.start().expect("start");
    // The first batch connects; let it run empty first.
    clock.set(t0 + 1000);
    ssc.await_batch(t0 + 1000, Duration::from_secs(60))
        .expect("first batch");
    let last = t0 + 1000 * (BATCHES + 2);
    let t = Instant::now();
    clock.set(last);
    ssc.await_batch(last, Duration::from_secs(600))
        .expect("every batch");
    let rate = n as f64 / t.elapsed().as_secs_f64();
    ssc.stop(false).expect("stop");
    rate
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut c = Cluster::start();
    c.create_stream("BARE", &["bare.>"]);
    c.create_stream("WEIR", &["weir.>"]);
    println!("records per round: {n}, acks in flight: {IN_FLIGHT}, 3-node R3 cluster, sync_interval always");
    let (mut b_all, mut w_all) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which goes first, so that neither always gets the
        // cluster right after the other's burst.
        let (b, w) = if r % 2 == 0 {
            let b = bare(&c, "bare.x", r, n);
            (b, weir_sink(&c, "weir.x", n))
        } else {
            let w = weir_sink(&c, "weir.x", n);
            (bare(&c, "bare.x", r, n), w)
        };
        println!(
            "round {r}: bare {b:.0} records/s, weir sink {w:.0} records/s, ratio {:.2}",
            w / b
        );
        b_all.push(b);
        w_all.push(w);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, w) = (med(&mut b_all), med(&mut w_all));
    println!(
        "median: bare {b:.0} records/s, weir sink {w:.0} records/s, ratio {:.2}",
        w / b
    );
}
