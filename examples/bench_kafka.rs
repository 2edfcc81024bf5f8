//! Benchmark of the Kafka source against a bare rskafka consumer, in the
//! same run, on one loopback tansu broker (tests/kafka_common: memory
//! storage) holding a pre-filled topic of `PARTITIONS` partitions.
//!
//! The bare consumer reads every partition from offset 0 to its high
//! watermark with `fetch_records` (4 MiB fetches, one task per partition
//! on a 2-thread runtime, as weir's connection has), touching each
//! record's key and value. weir reads the same topic with
//! `kafka_records` into a count per batch (batches of `BATCH_RECORDS`
//! records per partition, cut and committed with their checkpoint),
//! timed from the first batch falling due to the commit of the last.
//! Rounds alternate which goes first.
//!
//! Run: `cargo run --release --example bench_kafka [RECORDS] [ROUNDS]`.

#[path = "../tests/kafka_common/mod.rs"]
mod kafka_common;
#[path = "../tests/nats_common/mod.rs"]
#[allow(unused)]
mod nats_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_common::Broker;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use weir::{KafkaSourceConfig, ManualClock, StreamingContext};

const PARTITIONS: i32 = 4;
const BATCH_RECORDS: u64 = 250_000;

fn fill(b: &Broker, n: usize) {
    b.create_topic("bench", PARTITIONS);
    let value = "x".repeat(100);
    for p in 0..PARTITIONS {
        let per = n / PARTITIONS as usize;
        let mut i = 0;
        while i < per {
            let k = (per - i).min(2000);
            let v: Vec<String> = (0..k).map(|j| format!("{:08}{value}", i + j)).collect();
            b.produce("bench", p, &v, 2000);
            i += k;
        }
    }
}

/// Records per second of the bare consumer.
fn bare(b: &Broker, ends: &[i64]) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = b.addr();
    let total: i64 = ends.iter().sum();
    let t0 = Instant::now();
    let got = rt.block_on(async move {
        let client = Arc::new(
            ClientBuilder::new(vec![addr])
                .build()
                .await
                .expect("connect"),
        );
        let mut tasks = Vec::new();
        for (p, &end) in ends.iter().enumerate() {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let c = client
                    .partition_client("bench", p as i32, UnknownTopicHandling::Retry)
                    .await
                    .expect("partition client");
                let (mut at, mut n, mut bytes) = (0i64, 0u64, 0u64);
                while at < end {
                    let (recs, _) = c.fetch_records(at, 1..(4 << 20), 500).await.expect("fetch");
                    for r in recs {
                        if r.offset < at || r.offset >= end {
                            continue;
                        }
                        at = r.offset + 1;
                        n += 1;
                        bytes += r.record.value.map_or(0, |v| v.len()) as u64
                            + r.record.key.map_or(0, |k| k.len()) as u64;
                    }
                }
                (n, bytes)
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.expect("task").0;
        }
        n
    });
    assert_eq!(got as i64, total, "the bare consumer read every record");
    got as f64 / t0.elapsed().as_secs_f64()
}

/// Records per second of weir's Kafka source.
fn weir_run(b: &Broker, total: i64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let counted = Arc::new(AtomicU64::new(0));
    let c2 = counted.clone();
    let addr = b.addr();
    let ssc = StreamingContext::get_or_create(dir.path(), |bld| {
        let ssc = bld
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock.clone())
            .batch_records_max(BATCH_RECORDS)
            .adaptive_batches(false)
            .build()?;
        let (s, _) = ssc.kafka_records("bench", KafkaSourceConfig::new(&[&addr], &["bench"]))?;
        s.map(|r| r.value.as_ref().map_or(0, |v| v.len()) + r.key.as_ref().map_or(0, |k| k.len()))
            .count()
            .foreach_batch(move |_, n| {
                c2.fetch_add(n.iter().sum::<u64>(), Ordering::Relaxed);
                Ok(())
            })?;
        Ok(ssc)
    })
    .expect("context");
    ssc.start().expect("start");
    let t0 = Instant::now();
    while (counted.load(Ordering::Relaxed) as i64) < total {
        let t = clock.advance(1000);
        ssc.await_batch(t, Duration::from_secs(120)).expect("batch");
    }
    let secs = t0.elapsed().as_secs_f64();
    ssc.stop(false).expect("stop");
    assert_eq!(
        counted.load(Ordering::Relaxed) as i64,
        total,
        "weir read every record once"
    );
    total as f64 / secs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let b = Broker::start();
    let t0 = Instant::now();
    fill(&b, n);
    let ends: Vec<i64> = (0..PARTITIONS).map(|p| b.latest("bench", p)).collect();
    let total: i64 = ends.iter().sum();
    println!(
        "filled {total} records of ~110 bytes in {PARTITIONS} partitions in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let (mut w, mut r) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            r.push(bare(&b, &ends));
            w.push(weir_run(&b, total));
        } else {
            w.push(weir_run(&b, total));
            r.push(bare(&b, &ends));
        }
        println!(
            "round {round}: bare rskafka {:.0} records/s, weir {:.0} records/s, ratio {:.2}",
            r[round],
            w[round],
            w[round] / r[round]
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mr, mw) = (med(&mut r), med(&mut w));
    println!(
        "median: bare {mr:.0} records/s, weir {mw:.0} records/s, ratio {:.2}",
        mw / mr
    );
}
