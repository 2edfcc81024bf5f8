//! The Kafka sink on a real Kafka-protocol broker (tansu,
//! tests/kafka_common): every record once in the topic, with its
//! `weir-sink` and `weir-place` headers and the batch time as timestamp,
//! across a crash after the sink wrote a whole batch (`between_outputs`)
//! and one in the middle of a batch (`kafka_between_requests`): the replay
//! reads back what is there and sends only the rest. Also: a sink without
//! a data directory is refused. The failpoint registry is process-global:
//! the tests here run one at a time (a lock).

mod common;
mod kafka_common;
mod nats_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_common::Broker;
use weir::{failpoint, KafkaSinkConfig, KafkaSinkStats, ManualClock, Queue, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(60);

/// A context on `data`: WAL input `input` → the Kafka sink on topic
/// `out` (output 0), and a count (output 1, so `between_outputs` falls
/// after the sink). Batches of at most 300 records.
fn context(
    data: &Path,
    clock: Arc<ManualClock>,
    broker: &Broker,
    produce_bytes_max: usize,
) -> (StreamingContext, Arc<weir::wal::Wal>, Arc<KafkaSinkStats>) {
    let mut got = None;
    let mut cfg = KafkaSinkConfig::new(&[&broker.addr()], "out");
    cfg.produce_bytes_max = produce_bytes_max;
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(3)
            .clock(clock)
            .batch_records_max(300)
            .batch_retries(2, Duration::from_millis(10))
            .build()?;
        let (lines, wal) = ssc.wal_text_stream("input")?;
        let stats = lines.save_to_kafka(cfg)?;
        lines.count().foreach_batch(|_, _| Ok(()))?;
        got = Some((wal, stats));
        Ok(ssc)
    })
    .expect("context");
    let (wal, stats) = got.expect("built");
    (ssc, wal, stats)
}

fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| i.to_string()).collect()
}

/// Every value in topic `out` with how often it is there; checks headers.
fn topic_counts(b: &Broker) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in 0..3 {
        for (_, r) in b.read_all("out", p) {
            let place = String::from_utf8(r.headers["weir-place"].clone()).unwrap();
            let batch_ms: i64 = place.split('/').next().unwrap().parse().unwrap();
            assert_eq!(
                r.timestamp.timestamp_millis(),
                batch_ms,
                "timestamp = batch time"
            );
            assert!(String::from_utf8_lossy(&r.headers["weir-sink"]).ends_with("/kafka"));
            *m.entry(String::from_utf8(r.value.unwrap()).unwrap())
                .or_insert(0) += 1;
        }
    }
    m
}

fn assert_once(m: &BTreeMap<String, usize>, n: usize) {
    let doubled: Vec<_> = m.iter().filter(|(_, &c)| c != 1).take(5).collect();
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    assert_eq!(m.len(), n, "every record");
}

fn crash_then_replay(point: &str, skip: u64, produce_bytes_max: usize) -> Arc<KafkaSinkStats> {
    let b = Broker::start();
    b.create_topic("out", 3);
    let dir = tempfile::tempdir().unwrap();
    failpoint::reset();
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, wal, _) = context(dir.path(), clock.clone(), &b, produce_bytes_max);
    ssc.start().unwrap();
    wal.append(&lines(0, 300)).unwrap();
    clock.set(1000);
    ssc.await_batch(1000, WAIT).expect("the first batch");
    failpoint::arm(point, skip);
    wal.append(&lines(300, 300)).unwrap();
    clock.set(2000);
    assert!(ssc.await_batch(2000, WAIT).is_err(), "the failpoint fires");
    assert!(failpoint::fired().is_some());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    failpoint::reset();
    let (ssc, wal, stats) = context(dir.path(), clock.clone(), &b, produce_bytes_max);
    ssc.start().unwrap();
    wal.append(&lines(600, 300)).unwrap();
    clock.set(4000);
    ssc.await_batch(4000, WAIT)
        .expect("the replay and the rest");
    ssc.stop(false).unwrap();
    assert_once(&topic_counts(&b), 900);
    stats
}

#[test]
fn a_batch_written_whole_before_the_crash_is_not_sent_again() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let stats = crash_then_replay("between_outputs", 0, 1 << 20);
    let found = stats
        .found_on_replay
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(found, 300, "the replayed batch was found whole");
}

#[test]
fn a_batch_cut_between_produce_requests_sends_only_the_rest() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // About 10 records a request: the crash leaves part of a batch.
    let stats = crash_then_replay(weir::sink::KAFKA_BETWEEN_REQUESTS_FAILPOINT, 3, 1000);
    let found = stats
        .found_on_replay
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        found > 0 && found < 300,
        "part of the batch was there: {found}"
    );
}

#[test]
fn a_sink_without_a_data_directory_is_refused() {
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let s = ssc.queue_stream(&Queue::<String>::new());
    let e = s
        .save_to_kafka(KafkaSinkConfig::new(&["127.0.0.1:9"], "out"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("data directory"), "{e}");
}
