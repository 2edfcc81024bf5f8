//! The transactional key-value sink: per-batch upsert semantics (last write
//! per key wins, other keys keep their value), reads through a running
//! context, offline reads of a stopped data directory, the `weir kv`
//! command, and the refusal of an unknown table. Crashes at every commit
//! step are covered by `tests/exactly_once.rs` (its pipeline writes the
//! table `totals`) and real SIGKILLs by `tests/exactly_once_kill.rs`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use weir::{ManualClock, StreamingContext, Text};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn last_write_per_key_wins_and_untouched_keys_keep_their_value() {
    let h = common::ctx(3);
    let q = common::queue(vec![
        vec![("a", 1u64), ("b", 2), ("a", 3)],
        vec![("b", 20), ("c", 30), ("b", 21)],
        vec![],
    ]);
    h.ssc
        .queue_stream(&q)
        .map(|(k, v): (&str, u64)| (Text::new(k), v))
        .save_to_kv("t")
        .expect("sink");
    h.ssc.start().expect("start");
    h.advance(1);
    assert_eq!(
        h.ssc.kv_scan::<Text, u64>("t").expect("scan"),
        vec![(Text::new("a"), 3)]
            .into_iter()
            .chain([(Text::new("b"), 2)])
            .collect::<Vec<_>>()
    );
    h.advance(2);
    assert_eq!(
        h.ssc.kv_scan::<Text, u64>("t").expect("scan"),
        vec![
            (Text::new("a"), 3),
            (Text::new("b"), 21),
            (Text::new("c"), 30)
        ]
    );
    assert_eq!(
        h.ssc
            .kv_get::<Text, u64>("t", &Text::new("b"))
            .expect("get"),
        Some(21)
    );
    assert_eq!(
        h.ssc
            .kv_get::<Text, u64>("t", &Text::new("zz"))
            .expect("get"),
        None
    );
    h.ssc.stop(false).expect("stop");
}

fn build(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
) -> (StreamingContext, Arc<weir::wal::Wal>) {
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(2)
            .clock(clock)
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        wal = Some(w);
        // `user=score` lines; the table keeps each user's latest score.
        lines
            .map(|l: String| {
                let (u, s) = l.split_once('=').unwrap_or((&l, "0"));
                (u.to_string(), s.parse::<u64>().unwrap_or(0))
            })
            .save_to_kv("scores")?;
        Ok(ssc)
    })
    .expect("build");
    (ssc, wal.expect("input log"))
}

#[test]
fn a_table_survives_restarts_and_reads_offline_and_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    {
        let (ssc, wal) = build(dir.path(), clock.clone());
        ssc.start().expect("start");
        wal.append(&["ann=1", "bob=2", "ann=5"]).expect("append");
        clock.set(1000);
        ssc.await_batch(1000, WAIT).expect("batch");
        assert_eq!(
            ssc.kv_get::<String, u64>("scores", &"ann".to_string())
                .expect("get"),
            Some(5)
        );
        let busy = weir::sink::KvTable::<String, u64>::open(dir.path(), "scores")
            .expect_err("sled lets one opener at a time")
            .to_string();
        assert!(busy.contains("stop it first"), "{busy}");
        ssc.stop(false).expect("stop");
    }
    {
        let (ssc, wal) = build(dir.path(), clock.clone());
        ssc.start().expect("restart");
        wal.append(&["bob=7", "cid=3"]).expect("append");
        clock.set(2000);
        ssc.await_batch(2000, WAIT).expect("batch");
        ssc.stop(false).expect("stop");
    }
    let t = weir::sink::KvTable::<String, u64>::open(dir.path(), "scores").expect("open");
    assert_eq!(
        t.scan().expect("scan"),
        vec![("ann".into(), 5), ("bob".into(), 7), ("cid".into(), 3)]
    );
    drop(t);
    let bin = env!("CARGO_BIN_EXE_weir");
    let out = Command::new(bin)
        .args(["kv", "get"])
        .arg(dir.path())
        .args(["scores", "bob"])
        .output()
        .expect("run weir kv get");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "7\n");
    let out = Command::new(bin)
        .args(["kv", "get"])
        .arg(dir.path())
        .args(["scores", "dan"])
        .output()
        .expect("run weir kv get");
    assert_eq!(out.status.code(), Some(1), "an absent key exits 1");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key `dan` in table `scores`"));
    let out = Command::new(bin)
        .args(["kv", "scan"])
        .arg(dir.path())
        .args(["scores", "--value-as", "u64"])
        .output()
        .expect("run weir kv scan");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ann\t5\nbob\t7\ncid\t3\n"
    );
    let out = Command::new(bin)
        .args(["kv", "scan"])
        .arg(dir.path())
        .arg("nosuch")
        .output()
        .expect("run weir kv scan");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no key-value table `nosuch`; its tables: scores"),
        "{err}"
    );
}

#[test]
fn a_removed_table_is_a_refused_change_until_reset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    {
        let (ssc, wal) = build(dir.path(), clock.clone());
        ssc.start().expect("start");
        wal.append(&["ann=1"]).expect("append");
        clock.set(1000);
        ssc.await_batch(1000, WAIT).expect("batch");
        ssc.stop(false).expect("stop");
    }
    let without = || {
        StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .partitions(2)
                .clock(clock.clone())
                .build()?;
            let (lines, _w) = ssc.wal_text_stream("input")?;
            lines.foreach_batch(|_, _| Ok(()))?;
            Ok(ssc)
        })
        .expect("build")
    };
    let err = without().start().expect_err("refused").to_string();
    assert!(err.contains("`kv:scores` (kv_table) is gone"), "{err}");
    {
        let mut store = weir::checkpoint::SledCheckpointStore::open(
            dir.path().join("checkpoint"),
            weir::checkpoint::SledConfig::default(),
        )
        .expect("open");
        assert_eq!(store.reset_operator("kv:scores").expect("reset"), 1);
    }
    let ssc = without();
    ssc.start().expect("starts once the table is dropped");
    ssc.stop(false).expect("stop");
}
