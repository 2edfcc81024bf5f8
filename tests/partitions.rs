//! Partitioned receiver streams (issue 15): a socket stream over N
//! connections and a directory stream over N receivers, each partition its
//! own log; every record lands in exactly one batch, a partition's log
//! holds only its connection's lines or its files, a restart reads nothing
//! twice, and a count that would leave a log unread is refused at build
//! time naming the logs. Batches run on a manual clock; every wait is
//! bounded.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{collect, get, wait_for, Out, WAIT};
use weir::context::{file_partition, partition_name, STREAM_PARTITIONS_MAX};
use weir::receiver::{DirConfig, SocketConfig, SocketStats};
use weir::{ManualClock, StreamingContext};

fn context(data: &Path, clock: Arc<ManualClock>) -> StreamingContext {
    StreamingContext::get_or_create(data, |b| {
        b.batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock)
            .build()
    })
    .expect("context")
}

/// Every record of `out`, counted.
fn counts(out: &Out<String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for (_, batch) in get(out) {
        for r in batch {
            *m.entry(r).or_insert(0) += 1;
        }
    }
    m
}

/// The records in the log `DATA/wal/<stream>`, in order.
fn log_records(ssc: &StreamingContext, stream: &str) -> Vec<Vec<u8>> {
    let (_, wal) = ssc
        .input_logs()
        .into_iter()
        .find(|(n, _)| n == stream)
        .unwrap_or_else(|| panic!("no log {stream}"));
    let range = wal.first_lsn()..wal.durable_end();
    wal.read(range)
        .expect("read the log")
        .map(|r| r.expect("a record").payload)
        .collect()
}

#[test]
fn a_socket_stream_over_four_connections_gets_each_line_once() {
    let n = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let ssc = context(dir.path(), clock.clone());
    let config = SocketConfig {
        backoff_initial: Duration::from_millis(5),
        ..SocketConfig::default()
    };
    let (lines, stats) = ssc
        .socket_text_stream_partitioned("tweets", &addr, n, config)
        .expect("stream");
    let out = collect(&lines);
    ssc.start().expect("start");
    // Each connection sends lines naming itself.
    let mut conns: Vec<_> = (0..n)
        .map(|_| listener.accept().expect("accept").0)
        .collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        for i in 0..250 {
            writeln!(conn, "conn{c} line{i}").expect("send");
        }
    }
    wait_for("every line stored", || {
        SocketStats::get(&stats.lines_stored) == 1000
    });
    let t = clock.advance(1000);
    let batch = ssc.await_batch(t, WAIT).expect("batch");
    // The batch's lineage has one range per partition.
    assert_eq!(batch.ranges.len(), n, "{:?}", batch.ranges);
    let got = counts(&out);
    assert_eq!(got.len(), 1000);
    assert!(got.values().all(|&k| k == 1), "a line twice");
    // One connection per partition: a partition's log holds the lines of
    // exactly one connection, in the order sent.
    let mut owners = Vec::new();
    for p in 0..n {
        let records = log_records(&ssc, &partition_name("tweets", p, n));
        assert_eq!(records.len(), 250, "partition {p}");
        let first = String::from_utf8(records[0].clone()).expect("utf-8");
        let conn = first.split(' ').next().expect("conn").to_string();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r, format!("{conn} line{i}").as_bytes(), "partition {p}");
        }
        owners.push(conn);
    }
    owners.sort();
    owners.dedup();
    assert_eq!(owners.len(), n, "each connection in its own partition");
    ssc.stop(false).expect("stop");
}

fn move_in(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.part"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn fast_dir() -> DirConfig {
    DirConfig {
        scan_interval: Duration::from_millis(5),
        ..DirConfig::default()
    }
}

/// Runs batches until `want` records are out (bounded).
fn batches_until(ssc: &StreamingContext, clock: &ManualClock, out: &Out<String>, want: usize) {
    wait_for("every record in a batch", || {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).expect("batch");
        counts(out).values().sum::<usize>() >= want
    });
}

#[test]
fn a_directory_stream_over_partitions_reads_each_file_once_across_a_restart() {
    let n = 3;
    let data = tempfile::tempdir().expect("tempdir");
    let input = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let file = |i: usize| format!("f{i:03}.txt");
    let text = |i: usize| {
        (0..5)
            .map(|k| format!("file{i} line{k}\n"))
            .collect::<String>()
    };
    {
        let ssc = context(data.path(), clock.clone());
        let (lines, _) = ssc
            .text_file_stream_partitioned("files", input.path(), n, fast_dir())
            .expect("stream");
        let out = collect(&lines);
        ssc.start().expect("start");
        for i in 0..30 {
            move_in(input.path(), &file(i), &text(i));
        }
        batches_until(&ssc, &clock, &out, 150);
        let got = counts(&out);
        assert_eq!(got.len(), 150);
        assert!(got.values().all(|&k| k == 1), "a line twice");
        // Each file went to the partition its name hashes to.
        for p in 0..n {
            let records = log_records(&ssc, &partition_name("files", p, n));
            let text: String = records
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
            for i in 0..30 {
                let here = text.contains(&format!("file{i} line0"));
                assert_eq!(
                    here,
                    file_partition(&file(i), n) == p,
                    "file {i} in partition {p}"
                );
            }
        }
        ssc.stop(false).expect("stop");
    }
    // A restart reads only the new files.
    let ssc = context(data.path(), clock.clone());
    let (lines, _) = ssc
        .text_file_stream_partitioned("files", input.path(), n, fast_dir())
        .expect("stream");
    let out = collect(&lines);
    ssc.start().expect("restart");
    for i in 30..40 {
        move_in(input.path(), &file(i), &text(i));
    }
    batches_until(&ssc, &clock, &out, 50);
    let got = counts(&out);
    assert_eq!(got.len(), 50, "only the ten new files");
    assert!(
        got.keys().all(|l| l.starts_with("file3") && l.len() == 12),
        "{got:?}"
    );
    ssc.stop(false).expect("stop");
}

#[test]
fn a_count_that_leaves_a_log_unread_is_refused_and_more_is_accepted() {
    let data = tempfile::tempdir().expect("tempdir");
    let input = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let build = |n: usize| {
        let ssc = context(data.path(), clock.clone());
        let r = ssc
            .text_file_stream_partitioned("files", input.path(), n, fast_dir())
            .map(|_| ());
        (ssc, r)
    };
    let (ssc, r) = build(2);
    r.expect("two partitions");
    drop(ssc);
    let (ssc, r) = build(4);
    r.expect("growing is safe");
    drop(ssc);
    for (n, logs) in [
        (3, "files-p3"),
        (1, "files-p0, files-p1, files-p2, files-p3"),
    ] {
        let (ssc, r) = build(n);
        let e = r.expect_err("shrinking is refused").to_string();
        assert!(
            e.contains(&format!("stream `files` would have {n} partition(s)")),
            "{e}"
        );
        assert!(
            e.contains(&format!("logs they do not read: {logs}.")),
            "{e}"
        );
        assert!(e.contains("Keep the partition count"), "{e}");
        drop(ssc);
    }
}

#[test]
fn partition_counts_are_bounded_and_the_maximum_runs() {
    let data = tempfile::tempdir().expect("tempdir");
    let input = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let ssc = context(data.path(), clock.clone());
    for bad in [0, STREAM_PARTITIONS_MAX + 1] {
        let e = ssc
            .text_file_stream_partitioned("files", input.path(), bad, fast_dir())
            .expect_err("out of range")
            .to_string();
        assert!(
            e.contains(&format!("partitions of a stream {bad} must be 1 to 64")),
            "{e}"
        );
    }
    let (lines, _) = ssc
        .text_file_stream_partitioned("files", input.path(), STREAM_PARTITIONS_MAX, fast_dir())
        .expect("the maximum");
    let out = collect(&lines);
    ssc.start().expect("start");
    for i in 0..200 {
        move_in(input.path(), &format!("m{i}"), &format!("max {i}\n"));
    }
    batches_until(&ssc, &clock, &out, 200);
    assert_eq!(counts(&out).len(), 200);
    assert_eq!(ssc.input_logs().len(), STREAM_PARTITIONS_MAX);
    ssc.stop(false).expect("stop");
}

/// An ingest stream over partitions: each producer's records all go to one
/// partition; after a restart with more partitions a producer resumes in
/// the partition that knows it (the server skips what it has), so nothing
/// is stored twice.
#[test]
fn ingest_producers_stick_to_one_partition_across_a_restart_with_more() {
    use weir::ingest::{feed, FeedConfig, IngestConfig};
    let data = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let text = |p: usize, k: usize| {
        (0..k)
            .map(|i| format!("prod{p} rec{i}\n"))
            .collect::<String>()
    };
    let run = |n: usize, records: usize| {
        let ssc = context(data.path(), clock.clone());
        let mut cfg = IngestConfig::new(([127, 0, 0, 1], 0).into());
        cfg.partitions = n;
        let s = ssc
            .ingest_stream_with("events", cfg, weir::ingest::payload_utf8)
            .expect("stream");
        let out = collect(&s.stream);
        ssc.start().expect("start");
        let mut sent = Vec::new();
        for p in 0..8 {
            let r = feed(
                s.local_addr,
                text(p, records).as_bytes(),
                FeedConfig::new(format!("prod{p}")),
            )
            .expect("feed");
            sent.push(r.records_sent);
        }
        let want = sent.iter().sum::<u64>() as usize;
        batches_until(&ssc, &clock, &out, want);
        let mut owner = BTreeMap::new();
        for part in 0..n {
            let name = partition_name("events", part, n);
            for r in log_records(&ssc, &name) {
                let text = String::from_utf8_lossy(&r).into_owned();
                let producer = (0..8)
                    .find(|p| text.contains(&format!("prod{p} rec")))
                    .expect("a producer's record");
                let prev = owner.insert(producer, part);
                assert!(
                    prev.is_none_or(|q| q == part),
                    "producer {producer} in two partitions"
                );
            }
        }
        ssc.stop(false).expect("stop");
        (counts(&out), sent, owner)
    };
    let (first, sent, owner) = run(4, 50);
    assert_eq!(sent, vec![50; 8]);
    assert_eq!(first.len(), 400);
    assert!(first.values().all(|&k| k == 1));
    assert!(
        owner
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "spread: {owner:?}"
    );
    // Six partitions now; every producer resends its 50 and adds 20.
    let (second, sent, owner2) = run(6, 70);
    assert_eq!(sent, vec![20; 8], "the first 50 of each were known");
    assert_eq!(second.len(), 160);
    assert!(second
        .keys()
        .all(|r| r.split(" rec").nth(1).and_then(|i| i.parse::<usize>().ok()) >= Some(50)));
    for (p, part) in owner {
        assert_eq!(owner2.get(&p), Some(&part), "producer {p} moved");
    }
}
