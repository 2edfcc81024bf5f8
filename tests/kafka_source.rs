//! The Kafka source against a real Kafka-protocol broker (tansu, memory
//! storage; tests/kafka_common) and, for retention (which the broker
//! cannot simulate), against an in-memory model of a partition's log
//! behind the `PartitionLog` trait: every record exactly once across a
//! restart and across a crash at every step of the commit protocol (a
//! replayed batch gives the records of its first attempt); start
//! positions (earliest, latest, an offset given, an offset outside the
//! partition); a partition that ends below the committed offsets stops
//! the pipeline; offsets removed by retention fail the batch naming the
//! whole gap; bad records follow the bad-record policy; the record format;
//! `max_rate_per_partition` caps every batch. Records are produced several
//! to a record batch, so cuts fall inside record batches (a fetch from a
//! cut brings records below it, which the source must drop).
//!
//! The failpoint registry is process-global: the crash test holds
//! `SERIAL` for writing, every other test that runs a pipeline holds it
//! for reading, so no pipeline runs while a failpoint is armed. Waits are
//! bounded polls; nothing sleeps for correctness.

mod common;
mod kafka_common;
mod nats_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::{collect, Out};
use kafka_common::Broker;
use rskafka::record::{Record, RecordAndOffset};
use weir::context::KafkaStats;
use weir::dstream::OnError;
use weir::kafka::{Fetched, KafkaError};
use weir::source::{KafkaSource, PartitionLog, PartitionSpec};
use weir::{
    failpoint, KafkaFormat, KafkaRecord, KafkaSourceConfig, ManualClock, StartAt, StreamingContext,
};

static SERIAL: RwLock<()> = RwLock::new(());
const WAIT: Duration = Duration::from_secs(60);

/// For a test that runs a pipeline and arms no failpoint.
fn shared() -> RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

/// For a test that arms failpoints: nothing else runs meanwhile.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERIAL.write().unwrap_or_else(|e| e.into_inner())
}

/// `p<p>-<offset>` for `n` records of partition `p` from offset `from`.
fn values(p: i32, from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("p{p}-{i}")).collect()
}

fn source_config(b: &Broker, topic: &str) -> KafkaSourceConfig {
    let addr = b.addr();
    let mut cfg = KafkaSourceConfig::new(&[addr.as_str()], &[topic]);
    cfg.fetch_wait_ms = 100;
    cfg
}

/// A context on `data` (its checkpoint: a restart resumes) at a 1 s
/// interval on `clock`, reading `cfg` as the weir stream `in`, collecting
/// every batch.
fn context(
    data: &Path,
    clock: &Arc<ManualClock>,
    batch_records_max: u64,
    cfg: KafkaSourceConfig,
) -> (StreamingContext, Out<String>, Arc<KafkaStats>) {
    let mut got = None;
    let clock = clock.clone();
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .batch_records_max(batch_records_max)
            .batch_retries(1, Duration::from_millis(1))
            .build()?;
        let (s, stats) = ssc.kafka_stream("in", cfg)?;
        got = Some((collect(&s), stats));
        Ok(ssc)
    })
    .expect("context");
    let (out, stats) = got.expect("built");
    (ssc, out, stats)
}

fn total(out: &Out<String>) -> usize {
    out.lock().unwrap().iter().map(|(_, v)| v.len()).sum()
}

/// Runs batches until `count()` reaches `want` (bounded).
fn run_until(ssc: &StreamingContext, clock: &ManualClock, want: usize, count: &dyn Fn() -> usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = count();
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {want} records");
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).expect("batch");
    }
}

/// Runs `n` more batches (to show nothing more arrives).
fn run_batches(ssc: &StreamingContext, clock: &ManualClock, n: usize) {
    for _ in 0..n {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).expect("batch");
    }
}

fn counts<'a>(records: impl Iterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r.clone()).or_insert(0) += 1;
    }
    m
}

/// Asserts that `got` holds each of `want` exactly once and nothing else.
fn assert_exactly_once<'a>(got: impl Iterator<Item = &'a String>, want: &[String]) {
    let got = counts(got);
    let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(twice.is_empty(), "records given more than once: {twice:?}");
    let want: BTreeSet<&String> = want.iter().collect();
    let got_keys: BTreeSet<&String> = got.keys().collect();
    let missing: Vec<_> = want.difference(&got_keys).take(5).collect();
    let extra: Vec<_> = got_keys.difference(&want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?} ({} of {})",
        got.len(),
        want.len()
    );
}

/// Records of each partition (`p<p>-...`) in one batch.
fn per_partition(batch: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in batch {
        let p = r.split('-').next().unwrap_or_default().to_string();
        *m.entry(p).or_insert(0) += 1;
    }
    m
}

#[test]
fn three_partitions_give_every_record_exactly_once_across_a_restart() {
    let _g = shared();
    let b = Broker::start();
    b.create_topic("events", 3);
    // Uneven on purpose: 1200, 1000 and 800 records.
    let mut produced = [1200usize, 1000, 800];
    let mut want = Vec::new();
    for (p, &n) in produced.iter().enumerate() {
        let v = values(p as i32, 0, n);
        let offsets = b.produce("events", p as i32, &v, 70);
        assert_eq!(offsets, (0..n as i64).collect::<Vec<_>>());
        assert_eq!(b.latest("events", p as i32), n as i64);
        want.extend(v);
    }

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = source_config(&b, "events");
    let (ssc, out1, stats1) = context(dir.path(), &clock, 200, cfg.clone());
    ssc.start().expect("start");
    run_until(&ssc, &clock, 1500, &|| total(&out1));
    ssc.stop(false).expect("stop");
    drop(ssc);
    let first = total(&out1);
    assert!(first < 3000, "stopped half way, not after {first} records");
    let batches1 = out1
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .count();
    assert!(batches1 >= 3, "several batches ({batches1})");
    let names: Vec<&str> = stats1.partitions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["in-events-0", "in-events-1", "in-events-2"]);

    // More records while weir is down; the second run on the same data
    // directory goes on from the committed offsets.
    for (p, n) in produced.iter_mut().enumerate() {
        let v = values(p as i32, *n, 300);
        b.produce("events", p as i32, &v, 70);
        want.extend(v);
        *n += 300;
    }
    let (ssc, out2, stats2) = context(dir.path(), &clock, 200, cfg);
    ssc.start().expect("restart");
    run_until(&ssc, &clock, want.len() - first, &|| total(&out2));
    run_batches(&ssc, &clock, 2);
    ssc.stop(false).expect("stop");

    let o1 = out1.lock().unwrap();
    let o2 = out2.lock().unwrap();
    assert_exactly_once(
        o1.iter().chain(o2.iter()).flat_map(|(_, v)| v.iter()),
        &want,
    );
    for (t, batch) in o1.iter().chain(o2.iter()) {
        for (p, n) in per_partition(batch) {
            assert!(
                n <= 200,
                "batch {t}: {n} records of {p}, over batch_records_max"
            );
        }
    }
    // The harness reads a partition back whole, as weir read it.
    let back: Vec<String> = b
        .read_all("events", 2)
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.value.unwrap_or_default()).unwrap())
        .collect();
    assert_eq!(back, values(2, 0, produced[2]));
    let names: Vec<&str> = stats2.partitions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["in-events-0", "in-events-1", "in-events-2"]);
    for (p, &n) in produced.iter().enumerate() {
        let (s1, s2) = (&stats1.partitions[p].1, &stats2.partitions[p].1);
        assert_eq!((s2.topic.as_str(), s2.partition), ("events", p as i32));
        let read = s1.records_read.load(std::sync::atomic::Ordering::Relaxed)
            + s2.records_read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(read >= n as u64, "partition {p}: read {read} of {n}");
        assert_eq!(
            s2.high_watermark.load(std::sync::atomic::Ordering::Relaxed),
            n as u64,
            "partition {p}"
        );
        assert_eq!(
            s2.committed_end.load(std::sync::atomic::Ordering::Relaxed),
            n as u64,
            "partition {p}"
        );
        assert_eq!(s2.lag(), 0, "partition {p}");
    }
}

/// What the idempotent sink of the crash test saw: per batch time, the
/// records of the last write (a replay replaces them), the first write's,
/// and how many writes.
#[derive(Default)]
struct Replacing {
    last: BTreeMap<u64, Vec<String>>,
    first: BTreeMap<u64, Vec<String>>,
    writes: BTreeMap<u64, u32>,
}

fn crash_context(
    data: &Path,
    clock: &Arc<ManualClock>,
    cfg: KafkaSourceConfig,
    sink: &Arc<Mutex<Replacing>>,
) -> StreamingContext {
    let clock = clock.clone();
    let sink = sink.clone();
    StreamingContext::get_or_create(data, move |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .batch_records_max(50)
            .build()?;
        let (s, _) = ssc.kafka_stream("in", cfg)?;
        // Output 0: the idempotent sink; output 1: a count, so that
        // `between_outputs` falls after the sink wrote.
        s.foreach_batch(move |t, recs| {
            let mut g = sink.lock().unwrap();
            g.first.entry(t).or_insert_with(|| recs.clone());
            *g.writes.entry(t).or_insert(0) += 1;
            g.last.insert(t, recs);
            Ok(())
        })?;
        s.count().foreach_batch(|_, _| Ok(()))?;
        Ok(ssc)
    })
    .expect("context")
}

#[test]
fn a_crash_at_every_commit_step_replays_the_same_records_and_loses_none() {
    let _g = exclusive();
    failpoint::reset();
    let b = Broker::start();
    for (k, point) in [
        "after_allocate",
        "between_outputs",
        "before_commit",
        "after_commit",
    ]
    .into_iter()
    .enumerate()
    {
        let topic = format!("crash{k}");
        b.create_topic(&topic, 2);
        let mut want = Vec::new();
        for p in 0..2 {
            let v = values(p, 0, 300);
            b.produce(&topic, p, &v, 70);
            want.extend(v);
        }
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let sink = Arc::new(Mutex::new(Replacing::default()));
        let cfg = source_config(&b, &topic);
        let ssc = crash_context(dir.path(), &clock, cfg.clone(), &sink);
        ssc.start().expect("start");
        run_batches(&ssc, &clock, 2);
        // The third batch "dies" at `point`.
        failpoint::arm(point, 0);
        let t = clock.advance(1000);
        assert_eq!(t, 3000);
        let e = ssc
            .await_batch(t, WAIT)
            .expect_err("the crash fails the batch");
        assert_eq!(failpoint::fired().as_deref(), Some(point), "{point}: {e}");
        let _ = ssc.stop(false);
        drop(ssc);
        failpoint::reset();
        let wrote_before = sink.lock().unwrap().writes.get(&3000).copied().unwrap_or(0);
        let want_before = match point {
            "after_allocate" => 0,
            _ => 1,
        };
        assert_eq!(
            wrote_before, want_before,
            "{point}: writes of batch 3000 before the crash"
        );

        let ssc = crash_context(dir.path(), &clock, cfg, &sink);
        ssc.start().expect("restart");
        let count = || {
            sink.lock()
                .unwrap()
                .last
                .values()
                .map(Vec::len)
                .sum::<usize>()
        };
        run_until(&ssc, &clock, want.len(), &count);
        run_batches(&ssc, &clock, 1);
        ssc.stop(false).expect("stop");

        let g = sink.lock().unwrap();
        for (t, recs) in &g.last {
            assert_eq!(
                recs, &g.first[t],
                "{point}: batch {t} replayed other records than its first attempt"
            );
        }
        let replayed: Vec<u64> = g
            .writes
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(&t, _)| t)
            .collect();
        let want_replayed: Vec<u64> = match point {
            "between_outputs" | "before_commit" => vec![3000],
            _ => vec![],
        };
        assert_eq!(replayed, want_replayed, "{point}: batches written twice");
        assert!(
            g.writes.values().all(|&n| n <= 2),
            "{point}: {:?}",
            g.writes
        );
        // The batch allocated before the crash runs at its own time.
        assert!(
            g.last.get(&3000).is_some_and(|v| !v.is_empty()),
            "{point}: batch 3000 after the restart: {:?}",
            g.last.get(&3000).map(Vec::len)
        );
        assert_exactly_once(g.last.values().flatten(), &want);
        eprintln!(
            "{point}: {} batches, {} written twice",
            g.writes.len(),
            replayed.len()
        );
    }
}

#[test]
fn start_positions_latest_an_offset_given_and_one_outside_the_partition() {
    let _g = shared();
    let b = Broker::start();

    // latest: only what is produced after the first start.
    b.create_topic("late", 2);
    for p in 0..2 {
        b.produce("late", p, &values(p, 0, 50), 50);
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut cfg = source_config(&b, "late");
    cfg.start = StartAt::Latest;
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg);
    ssc.start().expect("start");
    run_batches(&ssc, &clock, 1);
    let mut want = Vec::new();
    for p in 0..2 {
        let v = values(p, 50, 25);
        b.produce("late", p, &v, 25);
        want.extend(v);
    }
    run_until(&ssc, &clock, 50, &|| total(&out));
    run_batches(&ssc, &clock, 2);
    ssc.stop(false).expect("stop");
    assert_exactly_once(
        out.lock().unwrap().iter().flat_map(|(_, v)| v.iter()),
        &want,
    );

    // An offset given for partition 0: 10.. of it, all of the others.
    b.create_topic("so", 3);
    let mut want = Vec::new();
    for p in 0..3 {
        let v = values(p, 0, 30);
        b.produce("so", p, &v, 30);
        let from = if p == 0 { 10 } else { 0 };
        want.extend(v[from..].iter().cloned());
    }
    assert_eq!(want.len(), 80);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut cfg = source_config(&b, "so");
    cfg.start_offsets.insert(("so".into(), 0), 10);
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg.clone());
    ssc.start().expect("start");
    run_until(&ssc, &clock, 80, &|| total(&out));
    run_batches(&ssc, &clock, 1);
    ssc.stop(false).expect("stop");
    assert_exactly_once(
        out.lock().unwrap().iter().flat_map(|(_, v)| v.iter()),
        &want,
    );

    // An offset past the high watermark (30): the start fails, naming it.
    let dir = tempfile::tempdir().unwrap();
    let mut bad = cfg;
    bad.start_offsets.insert(("so".into(), 1), 31);
    let (ssc, out, _) = context(dir.path(), &clock, 1000, bad);
    let e = ssc
        .start()
        .expect_err("a start offset outside the partition")
        .to_string();
    eprintln!("start offset outside: {e}");
    for word in [
        "`so`",
        "partition 1",
        "start offset 31",
        "outside",
        "(0..30)",
        "in-so-1",
    ] {
        assert!(e.contains(word), "{word} missing from: {e}");
    }
    assert!(out.lock().unwrap().is_empty());
}

#[test]
fn a_partition_that_ends_below_the_committed_offsets_stops_the_pipeline() {
    let _g = shared();
    let mut b = Broker::start();
    b.create_topic("trunc", 1);
    let v = values(0, 0, 100);
    b.produce("trunc", 0, &v, 50);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = source_config(&b, "trunc");
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg.clone());
    ssc.start().expect("start");
    run_until(&ssc, &clock, 100, &|| total(&out));
    ssc.stop(false).expect("stop");
    drop(ssc);
    assert_exactly_once(out.lock().unwrap().iter().flat_map(|(_, v)| v.iter()), &v);

    // The broker loses everything; the topic is made again, shorter.
    b.restart();
    b.create_topic("trunc", 1);
    b.produce("trunc", 0, &values(0, 0, 30), 30);
    assert_eq!(b.latest("trunc", 0), 30);

    // The first batch after the restart fails (Source::check before its
    // commit: the cut saw the partition end below 100).
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg.clone());
    ssc.start().expect("restart");
    let t = clock.advance(1000);
    let e = ssc
        .await_batch(t, WAIT)
        .expect_err("the partition ends below the committed offsets")
        .to_string();
    let _ = ssc.stop(false);
    drop(ssc);
    eprintln!("truncated: {e}");
    for word in [
        "`trunc`",
        "partition 0",
        "in-trunc-0",
        "ends at offset 30",
        "30..100",
    ] {
        assert!(e.contains(word), "{word} missing from: {e}");
    }
    assert_eq!(total(&out), 0, "nothing of the new topic was read");

    // Started again, it stops again (within two batches: the first replays
    // the empty batch left allocated), reading nothing.
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg);
    ssc.start().expect("restart");
    let mut failed = None;
    for _ in 0..2 {
        let t = clock.advance(1000);
        if let Err(e) = ssc.await_batch(t, WAIT) {
            failed = Some(e.to_string());
            break;
        }
    }
    let _ = ssc.stop(false);
    let e = failed.expect("the pipeline stops again");
    assert!(e.contains("ends at offset 30"), "{e}");
    assert_eq!(total(&out), 0, "nothing of the new topic was read");
}

/// One partition's log in memory: offsets `earliest..records.len()` are
/// held, the prefix below `earliest` was removed (retention). A fetch
/// below the earliest offset, or past the high watermark, is out of range
/// as Apache Kafka answers; a fetch gives at most `per_fetch` records.
/// `slow_below`: an out-of-range answer to a fetch below that offset
/// comes that much later (a slow leader), so that a worker reading a later
/// share of the range fails first.
struct ModelLog {
    records: Vec<Record>,
    earliest: Mutex<i64>,
    per_fetch: usize,
    slow_below: Option<(i64, Duration)>,
    fetches: Mutex<Vec<i64>>,
}

impl ModelLog {
    fn new(values: &[String], per_fetch: usize, slow_below: Option<(i64, Duration)>) -> ModelLog {
        let records = values
            .iter()
            .map(|v| Record {
                key: None,
                value: Some(v.clone().into_bytes()),
                headers: Default::default(),
                timestamp: rskafka::chrono::Utc::now(),
            })
            .collect();
        ModelLog {
            records,
            earliest: Mutex::new(0),
            per_fetch,
            slow_below,
            fetches: Mutex::new(Vec::new()),
        }
    }

    fn remove_below(&self, offset: i64) {
        *self.earliest.lock().unwrap() = offset;
    }
}

impl PartitionLog for ModelLog {
    fn earliest(&self) -> Result<i64, KafkaError> {
        Ok(*self.earliest.lock().unwrap())
    }
    fn latest(&self) -> Result<i64, KafkaError> {
        Ok(self.records.len() as i64)
    }
    fn fetch(&self, offset: i64, _bytes_max: usize, _wait_ms: i32) -> Result<Fetched, KafkaError> {
        self.fetches.lock().unwrap().push(offset);
        let hw = self.records.len() as i64;
        let earliest = *self.earliest.lock().unwrap();
        if offset < earliest || offset > hw {
            if let Some((below, pause)) = self.slow_below {
                if offset < below {
                    std::thread::sleep(pause);
                }
            }
            return Ok(Fetched::OutOfRange);
        }
        let from = offset as usize;
        let to = (from + self.per_fetch).min(self.records.len());
        let got = (from..to)
            .map(|i| RecordAndOffset {
                record: self.records[i].clone(),
                offset: i as i64,
            })
            .collect();
        Ok(Fetched::Records(got, hw))
    }
}

/// A model partition of 100 records `r<offset>` read 40 offsets a batch
/// on 2 engine partitions, `attempts` tries a batch: the first batch
/// reads 0..40 and commits, then retention removes 0..70 and the next
/// batch (range 40..80, read as 40..60 and 60..80) fails. Returns its
/// error.
fn batch_after_retention(attempts: u32, slow_below: Option<(i64, Duration)>) -> String {
    let v: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
    let log = Arc::new(ModelLog::new(&v, 7, slow_below));
    let spec = PartitionSpec {
        topic: "model".into(),
        partition: 0,
        stream: "in".into(),
        start: StartAt::Earliest,
        start_offset: None,
        records_per_batch_max: Some(40),
        fetch_bytes_max: 1 << 20,
        fetch_wait_ms: 10,
        record_bytes_max: 1 << 20,
    };
    let src = KafkaSource::open(log.clone(), spec).expect("open");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let c = clock.clone();
    let mut out = None;
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(c)
            .batch_retries(attempts, Duration::from_millis(1))
            .build()?;
        let s = ssc
            .source_stream("kafka", Arc::new(src))
            .name("in")
            .map(|r: KafkaRecord| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            });
        out = Some(collect(&s));
        Ok(ssc)
    })
    .expect("context");
    let out = out.expect("built");
    ssc.start().expect("start");
    run_batches(&ssc, &clock, 1);
    assert_eq!(
        out.lock().unwrap().clone(),
        vec![(1000, v[..40].to_vec())],
        "the first batch reads 0..40"
    );

    log.remove_below(70);
    let t = clock.advance(1000);
    let e = ssc
        .await_batch(t, WAIT)
        .expect_err("offsets 40..70 are gone")
        .to_string();
    let _ = ssc.stop(false);
    assert_eq!(
        out.lock().unwrap().len(),
        1,
        "the failed batch gave nothing"
    );
    let fetches = log.fetches.lock().unwrap();
    assert!(
        fetches.iter().all(|&o| o < 80),
        "nothing read past the range: {fetches:?}"
    );
    e
}

fn assert_names_the_whole_gap(e: &str) {
    for word in [
        "offsets 40..70 of Kafka topic `model` partition 0",
        "weir stream `in`",
        "now starts at offset 70",
        "weir wal skip",
        "--stream in --from 40 --to 70",
    ] {
        assert!(e.contains(word), "{word} missing from: {e}");
    }
}

/// The first (and only) attempt of the batch names the whole gap, 40..70,
/// even when the worker reading 60..80 fails before the one reading
/// 40..60 (`Source::check_held` runs before either reads).
#[test]
fn offsets_removed_by_retention_fail_the_batch_naming_the_whole_gap() {
    let _g = shared();
    let e = batch_after_retention(1, Some((50, Duration::from_millis(300))));
    assert_names_the_whole_gap(&e);
    assert!(e.contains("failed 1 times"), "{e}");
}

/// A retry after a read found the offsets gone names the whole gap: the
/// source has seen the new earliest offset, so `check_held` fails the
/// batch before either worker reads (the slow answer below 50 does not
/// matter then).
#[test]
fn a_retry_after_retention_removed_offsets_names_the_whole_gap() {
    let _g = shared();
    let e = batch_after_retention(3, Some((50, Duration::from_millis(300))));
    assert_names_the_whole_gap(&e);
    assert!(e.contains("failed 3 times"), "{e}");
}

fn raw(key: Option<&str>, value: Option<Vec<u8>>) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value,
        headers: Default::default(),
        timestamp: rskafka::chrono::Utc::now(),
    }
}

/// The first batch's result, what it gave, and its dead-letter counts.
type FirstBatch = (
    Result<weir::BatchStats, weir::Error>,
    Out<String>,
    Vec<(String, u64)>,
);

/// One batch (one attempt) of a fresh context on `data` reading `cfg`:
/// its result, what it gave, and the dead-letter counts.
fn run_one_batch(data: &Path, cfg: KafkaSourceConfig) -> FirstBatch {
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, out, _) = context(data, &clock, 1000, cfg);
    ssc.start().expect("start");
    let t = clock.advance(1000);
    let r = ssc.await_batch(t, WAIT);
    let counts = ssc.dead_letter_counts();
    let _ = ssc.stop(false);
    (r, out, counts)
}

#[test]
fn bad_records_follow_the_policy_and_the_record_format_gives_every_field() {
    let _g = shared();
    let b = Broker::start();
    b.create_topic("bad", 1);
    let offsets = b.produce_records(
        "bad",
        0,
        vec![
            raw(Some("a"), Some(b"good one".to_vec())),
            raw(Some("b"), Some(vec![0xff, 0xfe, b'a'])),
            raw(Some("c"), None),
            raw(Some("d"), Some(b"good two".to_vec())),
        ],
    );
    assert_eq!(offsets, vec![0, 1, 2, 3]);

    // fail: the batch fails naming the first bad record's offset...
    let dir = tempfile::tempdir().unwrap();
    let (r, out, _) = run_one_batch(dir.path(), source_config(&b, "bad"));
    let e = r.expect_err("a value that is not UTF-8").to_string();
    for word in ["record 1 of stream `in-bad-0`", "not UTF-8"] {
        assert!(e.contains(word), "{word} missing from: {e}");
    }
    assert!(out.lock().unwrap().is_empty());
    // ... and a tombstone the same way (read from offset 2).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = source_config(&b, "bad");
    cfg.start_offsets.insert(("bad".into(), 0), 2);
    let (r, out, _) = run_one_batch(dir.path(), cfg);
    let e = r.expect_err("a tombstone").to_string();
    for word in ["record 2 of stream `in-bad-0`", "tombstone"] {
        assert!(e.contains(word), "{word} missing from: {e}");
    }
    assert!(out.lock().unwrap().is_empty());

    // dead_letter: the good ones go on, the bad ones are kept with their
    // stream and offset, and counted.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = source_config(&b, "bad");
    cfg.on_error = OnError::DeadLetter;
    let (r, out, counts) = run_one_batch(dir.path(), cfg);
    r.expect("the batch commits");
    assert_eq!(
        out.lock().unwrap().clone(),
        vec![(1000, vec!["good one".to_string(), "good two".to_string()])]
    );
    assert_eq!(counts, vec![("in-bad-0.decode".to_string(), 2)]);
    let dead = weir::sink::read_dead_letters(dir.path()).expect("dead letters");
    let got: Vec<(Option<String>, Option<u64>, String)> = dead
        .iter()
        .map(|d| (d.stream.clone(), d.lsn, d.step.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("in-bad-0".into()), Some(1), "in-bad-0.decode".into()),
            (Some("in-bad-0".into()), Some(2), "in-bad-0.decode".into()),
        ]
    );
    assert!(dead[0].error.contains("not UTF-8"), "{}", dead[0].error);
    assert!(dead[1].error.contains("tombstone"), "{}", dead[1].error);

    // format = record: one JSON object per record, every field.
    b.create_topic("rec", 1);
    let vals: Vec<String> = (0..3).map(|i| format!("v{i}")).collect();
    b.produce("rec", 0, &vals, 10);
    b.produce_records("rec", 0, vec![raw(Some("kt"), None)]);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = source_config(&b, "rec");
    cfg.format = KafkaFormat::Record;
    let (r, out, _) = run_one_batch(dir.path(), cfg);
    r.expect("the batch commits");
    let out = out.lock().unwrap().clone();
    assert_eq!(out.len(), 1);
    let objs: Vec<serde_json::Value> = out[0]
        .1
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(objs.len(), 4);
    for (i, o) in objs.iter().enumerate() {
        assert_eq!(o["topic"], "rec", "{o}");
        assert_eq!(o["partition"], 0, "{o}");
        assert_eq!(o["offset"], i as i64, "{o}");
        assert!(o["timestamp_ms"].as_i64().is_some_and(|t| t > 0), "{o}");
        let keys: BTreeSet<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "topic",
                "partition",
                "offset",
                "timestamp_ms",
                "key",
                "value",
                "headers"
            ]),
            "{o}"
        );
        if i < 3 {
            let v = &vals[i];
            assert_eq!(o["key"], format!("k{v}"), "{o}");
            assert_eq!(o["value"], v.as_str(), "{o}");
            assert_eq!(o["headers"], serde_json::json!({ "n": v }), "{o}");
        } else {
            assert_eq!(o["key"], "kt", "{o}");
            assert!(o["value"].is_null(), "a tombstone's value is null: {o}");
            assert_eq!(o["headers"], serde_json::json!({}), "{o}");
        }
    }
}

#[test]
fn max_rate_per_partition_caps_every_batch() {
    let _g = shared();
    let b = Broker::start();
    b.create_topic("rate", 1);
    let v = values(0, 0, 450);
    b.produce("rate", 0, &v, 150);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut cfg = source_config(&b, "rate");
    cfg.max_rate_per_partition = Some(100);
    let (ssc, out, _) = context(dir.path(), &clock, 100_000, cfg);
    ssc.start().expect("start");
    run_until(&ssc, &clock, 450, &|| total(&out));
    run_batches(&ssc, &clock, 1);
    ssc.stop(false).expect("stop");
    let o = out.lock().unwrap();
    let sizes: Vec<usize> = o.iter().map(|(_, v)| v.len()).filter(|&n| n > 0).collect();
    assert_eq!(sizes, vec![100, 100, 100, 100, 50]);
    assert_exactly_once(o.iter().flat_map(|(_, v)| v.iter()), &v);
}

/// A topic added to a source that started at `latest` is read from its
/// earliest offset (as Spark reads new partitions): nothing produced into
/// it before weir saw it is missed. Partitions named `topic:partition`
/// are the only ones read.
#[test]
fn a_topic_added_later_starts_at_earliest_and_named_partitions_are_the_only_ones() {
    let _g = shared();
    let b = Broker::start();
    b.create_topic("first", 1);
    b.create_topic("second", 2);
    b.produce("first", 0, &values(0, 0, 10), 10);
    for p in 0..2 {
        b.produce("second", p, &values(p, 100, 20), 20);
    }
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut cfg = source_config(&b, "first");
    cfg.start = StartAt::Latest;
    let (ssc, out, _) = context(dir.path(), &clock, 1000, cfg.clone());
    ssc.start().expect("start");
    run_batches(&ssc, &clock, 2);
    ssc.stop(false).expect("stop");
    drop(ssc);
    assert_eq!(total(&out), 0, "latest: nothing produced before the start");

    // Restart with `second`'s partition 1 added: read from its start.
    cfg.topics.push("second".into());
    cfg.partitions = Some(vec![("first".into(), 0), ("second".into(), 1)]);
    let (ssc, out, stats) = context(dir.path(), &clock, 1000, cfg);
    let names: Vec<&str> = stats.partitions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["in-first-0", "in-second-1"]);
    ssc.start().expect("restart");
    run_until(&ssc, &clock, 20, &|| total(&out));
    run_batches(&ssc, &clock, 2);
    ssc.stop(false).expect("stop");
    assert_exactly_once(
        out.lock().unwrap().iter().flat_map(|(_, v)| v.iter()),
        &values(1, 100, 20),
    );
}
