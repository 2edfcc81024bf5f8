//! The JetStream source on a real 3-node cluster (tests/nats_common): a
//! stream over three JetStream streams (partitions, fed through NATS's
//! `partition(3, ...)` subject mapping) gives every message exactly once;
//! ranges are intervals of sequences (gaps read the same on every replay);
//! a range retention removed is an error naming the gap; oversized and
//! non-UTF-8 messages follow the bad-record policy.

mod common;
mod nats_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{collect, Out};
use nats_common::{Cluster, ClusterOptions};
use weir::dstream::{OnError, Source};
use weir::source::{JetStreamConnection, JetStreamError, JetStreamSource};
use weir::{JetStreamConfig, JetStreamStats, ManualClock, StreamingContext};

/// Subjects `ev.<key>` land in `ev.<p>.<key>`, p = partition(3) of the key.
fn partitioned_cluster() -> Cluster {
    let mut c = Cluster::start_with(
        3,
        ClusterOptions {
            extra_config: "mappings = { \"ev.*\": \"ev.{{partition(3,1)}}.{{wildcard(1)}}\" }"
                .into(),
        },
    );
    for p in 0..3 {
        c.create_stream(&format!("EV{p}"), &[&format!("ev.{p}.*")]);
    }
    c
}

/// A request timeout for tests whose only allowed failure is the one they
/// provoke (one try per batch): the default 5 s was seen to run out for a
/// stream info request on a loaded 2-core machine running the whole suite.
const LOADED_REQUEST_TIMEOUT_MS: u64 = 30_000;

fn config(c: &Cluster, streams: &[&str]) -> JetStreamConfig {
    let urls = c.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    JetStreamConfig::new(&urls, streams)
}

/// A context on `data` with its checkpoint (a restart resumes), reading
/// `streams` of the cluster as the weir stream `in`.
fn context(
    data: &Path,
    clock: Arc<ManualClock>,
    cfg: JetStreamConfig,
) -> (StreamingContext, Out<String>, Arc<JetStreamStats>) {
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    let ssc = StreamingContext::get_or_create(data, move |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(3)
            .clock(clock.clone())
            .batch_records_max(500)
            .build()?;
        let (s, stats) = ssc.jetstream_stream("in", cfg.clone())?;
        *g.lock().unwrap() = Some((collect(&s), stats));
        Ok(ssc)
    })
    .expect("context");
    let (out, stats) = got.lock().unwrap().take().expect("built");
    (ssc, out, stats)
}

/// Runs batches until `out` holds `want` records (bounded).
fn run_until(ssc: &StreamingContext, clock: &ManualClock, out: &Out<String>, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: usize = out.lock().unwrap().iter().map(|(_, v)| v.len()).sum();
        if n >= want {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {want} records");
        let t = clock.advance(1000);
        ssc.await_batch(t, Duration::from_secs(30)).expect("batch");
    }
}

fn counts(out: &Out<String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, v) in out.lock().unwrap().iter() {
        for r in v {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn three_partitions_give_every_message_exactly_once_across_a_restart() {
    let mut c = partitioned_cluster();
    let msgs: Vec<Bytes> = (0..3000).map(|i| Bytes::from(format!("m{i}"))).collect();
    // Keys spread over the partitions by the server's mapping.
    for (k, chunk) in msgs.chunks(100).enumerate() {
        c.publish(&format!("ev.key{k}"), &format!("a{k}-"), chunk);
    }
    let per: Vec<u64> = (0..3)
        .map(|p| c.stream_info(&format!("EV{p}")).state.messages)
        .collect();
    assert_eq!(per.iter().sum::<u64>(), 3000);
    assert!(per.iter().all(|&n| n > 0), "{per:?}");

    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = config(&c, &["EV0", "EV1", "EV2"]);
    let (ssc, out, stats) = context(dir.path(), clock.clone(), cfg.clone());
    ssc.start().unwrap();
    run_until(&ssc, &clock, &out, 1500);
    ssc.stop(false).unwrap();
    drop(ssc);
    assert_eq!(stats.partitions.len(), 3);

    // More messages while weir is down, then a second run on the same
    // data directory goes on from the committed sequences.
    let more: Vec<Bytes> = (3000..4000).map(|i| Bytes::from(format!("m{i}"))).collect();
    c.publish("ev.late", "b-", &more);
    let (ssc, out2, stats) = context(dir.path(), clock.clone(), cfg);
    ssc.start().unwrap();
    let first: usize = out.lock().unwrap().iter().map(|(_, v)| v.len()).sum();
    run_until(&ssc, &clock, &out2, 4000 - first);
    ssc.stop(false).unwrap();

    let mut all = counts(&out);
    for (k, n) in counts(&out2) {
        *all.entry(k).or_insert(0) += n;
    }
    assert_eq!(all.len(), 4000, "every message");
    assert!(all.values().all(|&n| n == 1), "each once");
    let lag: u64 = stats.partitions.iter().map(|p| p.lag()).sum();
    assert_eq!(lag, 0, "all committed");
}

#[test]
fn a_range_is_an_interval_of_sequences_and_reads_the_same_every_time() {
    let mut c = Cluster::start();
    c.create_stream("G", &["g"]);
    let msgs: Vec<Bytes> = (1..=50).map(|i| Bytes::from(format!("r{i}"))).collect();
    c.publish("g", "g-", &msgs);
    let js = c.js();
    for seq in [7u64, 8, 9, 30, 50] {
        let ok = c.block_on(async {
            let s = js.get_stream("G").await?;
            Ok::<_, async_nats::Error>(s.delete_message(seq).await?)
        });
        assert!(ok.expect("delete"), "deleted {seq}");
    }
    let conn = Arc::new(JetStreamConnection::connect(&config(&c, &["G"])).expect("connect"));
    let src = JetStreamSource::open(conn, "G", "in-G", 1 << 20).expect("open");
    assert_eq!(src.available_end(), 51);
    assert_eq!(src.next_cut(0, 20), 20, "capped in sequences");
    assert_eq!(src.next_cut(10, 1000), 51);
    // A stream that ends below the committed position (deleted and made
    // again): nothing is cut, and it is logged once.
    assert_eq!(src.next_cut(60, 1000), 60);
    let seqs = |r: std::ops::Range<u64>| -> Vec<u64> {
        let mut v = Vec::new();
        src.read_each_at(r, &mut |s, rec| {
            assert_eq!(s, rec.seq);
            assert_eq!(rec.payload, format!("r{s}").as_bytes());
            v.push(s);
            true
        })
        .expect("read");
        v
    };
    let want: Vec<u64> = (1..=49).filter(|s| ![7, 8, 9, 30].contains(s)).collect();
    assert_eq!(seqs(0..51), want);
    assert_eq!(seqs(0..51), want, "a replay reads the same records");
    assert_eq!(
        seqs(7..10),
        Vec::<u64>::new(),
        "an interval of deleted messages"
    );
    assert_eq!(seqs(5..12), vec![5, 6, 10, 11]);
    // Sub-ranges read apart give the whole.
    let mut parts = seqs(0..20);
    parts.extend(seqs(20..51));
    assert_eq!(parts, want);
}

#[test]
fn a_range_removed_by_retention_is_an_error_naming_the_gap() {
    let mut c = Cluster::start();
    c.create_stream("P", &["p"]);
    let msgs: Vec<Bytes> = (0..20).map(|i| Bytes::from(format!("x{i}"))).collect();
    c.publish("p", "p-", &msgs);
    let conn = Arc::new(JetStreamConnection::connect(&config(&c, &["P"])).expect("connect"));
    let src = JetStreamSource::open(conn, "P", "in-P", 1 << 20).expect("open");
    assert_eq!(src.read(5..15).expect("read").len(), 10);
    c.purge("P");
    let e = src.read(5..15).expect_err("purged");
    let je = e
        .downcast_ref::<JetStreamError>()
        .expect("a JetStreamError");
    match je {
        JetStreamError::Removed {
            stream,
            from,
            until,
            first,
            ..
        } => assert_eq!((stream.as_str(), *from, *until, *first), ("P", 5, 21, 21)),
        other => panic!("{other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("weir wal skip") && text.contains("--from 5 --to 21"),
        "{text}"
    );
}

#[test]
fn oversized_and_non_utf8_messages_follow_the_bad_record_policy() {
    let mut c = Cluster::start();
    c.create_stream("B", &["b"]);
    let msgs = vec![
        Bytes::from("good one"),
        Bytes::from(vec![b'x'; 300]),
        Bytes::from(vec![0xff, 0xfe, b'a']),
        Bytes::from("good two"),
    ];
    c.publish("b", "b-", &msgs);

    // dead_letter: the good ones go on, the bad ones are kept with their
    // stream and sequence.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .build()?;
        let mut cfg = config(&c, &["B"]);
        cfg.record_bytes_max = 100;
        cfg.on_error = OnError::DeadLetter;
        cfg.request_timeout_ms = LOADED_REQUEST_TIMEOUT_MS;
        let (s, _) = ssc.jetstream_stream("in", cfg)?;
        s.foreach_batch(|_, _| Ok(()))?;
        Ok(ssc)
    })
    .expect("context");
    ssc.start().unwrap();
    let t = clock.advance(1000);
    ssc.await_batch(t, Duration::from_secs(30)).expect("batch");
    ssc.stop(false).unwrap();
    drop(ssc);
    let dead = weir::sink::read_dead_letters(dir.path()).expect("dead letters");
    let got: Vec<(Option<String>, Option<u64>)> =
        dead.iter().map(|r| (r.stream.clone(), r.lsn)).collect();
    assert_eq!(
        got,
        vec![
            (Some("in-B".into()), Some(2)),
            (Some("in-B".into()), Some(3))
        ]
    );

    // fail: the batch fails naming the stream and the sequence.
    let clock = Arc::new(ManualClock::new(0));
    let dir2 = tempfile::tempdir().unwrap();
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .clock(clock.clone())
        .data_dir(dir2.path())
        .batch_retries(1, Duration::from_millis(1))
        .build()
        .unwrap();
    let mut cfg = config(&c, &["B"]);
    cfg.record_bytes_max = 100;
    cfg.request_timeout_ms = LOADED_REQUEST_TIMEOUT_MS;
    let (s, _) = ssc.jetstream_stream("in", cfg).expect("stream");
    let out = collect(&s);
    ssc.start().unwrap();
    let t = clock.advance(1000);
    let e = ssc
        .await_batch(t, Duration::from_secs(30))
        .expect_err("the batch fails")
        .to_string();
    assert!(e.contains("record 2 of stream `in-B`"), "{e}");
    assert!(e.contains("larger than record_bytes_max"), "{e}");
    let _ = ssc.stop(false);
    assert!(out.lock().unwrap().is_empty());
}
