//! Exactly-once across crashes at every step of the commit protocol.
//!
//! A stateful pipeline (word counts per batch, running totals with
//! update_state_by_key, a sliding window) reads its input from a WAL and
//! saves every output as text files. A reference run goes uninterrupted; a
//! crash run arms one failpoint, "dies" there, restarts with
//! `get_or_create` on the same data directory, and finishes. Output files
//! and final state must be byte-identical.
//!
//! The failpoint registry is process-global, so the tests in this file take
//! a lock and run one at a time.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use weir::checkpoint::{SledCheckpointStore, SledConfig};
use weir::scheduler::CheckpointStore;
use weir::wal::Wal;
use weir::{failpoint, ManualClock, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(20);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipeline under test; the same code on every (re)start.
fn build(dir: &Path, clock: Arc<ManualClock>) -> weir::Result<(StreamingContext, Arc<Wal>)> {
    let out = dir.join("out");
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(3)
            .clock(clock)
            .batch_retries(1, Duration::from_millis(1))
            .build()?;
        wal = Some(weir::pipelines::stateful_wordcount(&ssc, &out)?);
        Ok(ssc)
    })?;
    let wal = wal.expect("the build function opened the input log");
    Ok((ssc, wal))
}

fn input(batch: u64) -> Vec<String> {
    (0..(batch % 4) * 3 + 1)
        .map(|i| format!("w{} w{} x{}", (batch + i) % 5, i % 3, batch % 2))
        .collect()
}

/// Every output file (name → bytes), ignoring temp files.
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let out = dir.join("out");
    if let Ok(rd) = std::fs::read_dir(&out) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                m.insert(name, std::fs::read(e.path()).expect("read output"));
            }
        }
    }
    m
}

type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

/// The running totals' state and the key-value table `totals`, sorted.
fn final_state(dir: &Path) -> (Encoded, Vec<(String, u64)>) {
    let mut state = {
        let store = SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default())
            .expect("open checkpoint");
        store
            .load_state("totals")
            .expect("load")
            .unwrap_or_default()
    };
    state.sort();
    let table = weir::sink::KvTable::<String, u64>::open(dir, "totals")
        .expect("open table")
        .scan()
        .expect("scan");
    (state, table)
}

const BATCHES: u64 = 7;

/// Runs batches 1..=BATCHES; with `crash = Some((point, skip))`, dies at that
/// failpoint once, restarts, and finishes. Returns how many restarts.
fn run(dir: &Path, crash: Option<(&str, u64)>) -> usize {
    failpoint::reset();
    if let Some((point, skip)) = crash {
        failpoint::arm(point, skip);
    }
    let clock = Arc::new(ManualClock::new(0));
    let (mut ssc, mut wal) = build(dir, clock.clone()).expect("build");
    ssc.start().expect("start");
    let mut restarts = 0;
    let mut batch = 1;
    let mut appended = 0;
    while batch <= BATCHES {
        if appended < batch {
            wal.append(&input(batch)).expect("append");
            appended = batch;
        }
        clock.set(batch * 1000);
        match ssc.await_batch(batch * 1000, WAIT) {
            Ok(_) => batch += 1,
            Err(e) => {
                assert!(
                    failpoint::fired().is_some(),
                    "batch {batch} failed without a crash: {e}"
                );
                assert!(restarts == 0, "crashed twice");
                let _ = ssc.stop(false);
                drop(ssc);
                drop(wal);
                // The process "restarts": a fresh context on the same data.
                failpoint::reset();
                // A crash after the commit leaves the batch done: the
                // restarted context continues with the next one.
                let store =
                    SledCheckpointStore::open(dir.join("checkpoint"), SledConfig::default())
                        .expect("open checkpoint");
                let committed = store
                    .completed()
                    .expect("completed")
                    .iter()
                    .any(|b| b.time_ms == batch * 1000);
                // At the crash, the table shows exactly the last committed
                // batch: the running totals' committed state, no more.
                let sorted = |op: &str| {
                    let mut v = store.load_state(op).expect("load").unwrap_or_default();
                    v.sort();
                    v
                };
                assert_eq!(
                    sorted("kv:totals"),
                    sorted("totals"),
                    "table and state disagree after a crash at {crash:?}"
                );
                drop(store);
                if committed {
                    batch += 1;
                }
                let (s, w) = build(dir, clock.clone()).expect("rebuild after crash");
                s.start().expect("restart");
                ssc = s;
                wal = w;
                restarts += 1;
            }
        }
    }
    ssc.stop(false).expect("stop");
    restarts
}

fn check_point(point: &str, skip: u64) {
    let _g = serial();
    let reference = tempfile::tempdir().expect("tempdir");
    assert_eq!(run(reference.path(), None), 0);
    let crashed = tempfile::tempdir().expect("tempdir");
    let restarts = run(crashed.path(), Some((point, skip)));
    assert_eq!(restarts, 1, "failpoint {point} (skip {skip}) never fired");
    let (a, b) = (outputs(reference.path()), outputs(crashed.path()));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{point}: output files differ"
    );
    assert_eq!(a, b, "{point}: output contents differ");
    assert_eq!(
        a.len() as u64,
        BATCHES * 2 + BATCHES / 2,
        "one file per batch per output"
    );
    let (state, table) = final_state(reference.path());
    assert_eq!(
        (state.clone(), table.clone()),
        final_state(crashed.path()),
        "{point}: state or key-value table differs"
    );
    // The table holds the running totals: every word of the input, counted.
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    for b in 1..=BATCHES {
        for l in input(b) {
            for w in l.split_whitespace() {
                *truth.entry(w.to_string()).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(
        table,
        truth.into_iter().collect::<Vec<_>>(),
        "{point}: table"
    );
    assert_eq!(state.len(), table.len());
    failpoint::reset();
}

#[test]
fn crash_after_allocate() {
    check_point("after_allocate", 2);
}

#[test]
fn crash_between_outputs() {
    check_point("between_outputs", 5);
}

#[test]
fn crash_inside_a_sink_atomic_write() {
    check_point("sink_write", 7);
}

#[test]
fn crash_after_outputs_before_commit() {
    check_point("before_commit", 3);
}

#[test]
fn crash_after_commit_before_cleanup() {
    check_point("after_commit", 4);
}

#[test]
fn an_incompatible_change_is_refused_and_a_compatible_one_recovers() {
    let _g = serial();
    failpoint::reset();
    let dir = tempfile::tempdir().expect("tempdir");
    run(dir.path(), None);
    let clock = Arc::new(ManualClock::new(BATCHES * 1000));
    // Compatible: a stateless filter and an extra output added; the
    // stateful operators keep their names, kinds and parameters.
    {
        let ssc = StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .partitions(3)
                .clock(clock.clone())
                .build()?;
            let (lines, _wal) = ssc.wal_text_stream("input")?;
            let words = lines
                .filter(|l: &String| !l.is_empty())
                .flat_map(|l: String| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                .map(|w| (w, 1u64));
            let totals = words
                .update_state_by_key(|new: &[u64], old: Option<&u64>| {
                    Some(old.copied().unwrap_or(0) + new.iter().sum::<u64>())
                })
                .name("totals");
            totals.foreach_batch(|_, _| Ok(()))?;
            totals.save_to_kv("totals")?;
            words
                .reduce_by_key_and_window(
                    |a, b| a + b,
                    Duration::from_secs(3),
                    Duration::from_secs(2),
                )
                .name("window")
                .foreach_batch(|_, _| Ok(()))?;
            Ok(ssc)
        })
        .expect("build");
        ssc.start().expect("a compatible change recovers");
        ssc.stop(false).expect("stop");
    }
    // Incompatible: the window's length changed.
    let ssc = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(3)
            .clock(clock.clone())
            .build()?;
        let (lines, _wal) = ssc.wal_text_stream("input")?;
        lines
            .map(|l: String| (l, 1u64))
            .reduce_by_key_and_window(|a, b| a + b, Duration::from_secs(4), Duration::from_secs(2))
            .name("window")
            .foreach_batch(|_, _| Ok(()))?;
        Ok(ssc)
    })
    .expect("build");
    let err = ssc
        .start()
        .expect_err("an incompatible change is refused")
        .to_string();
    assert!(
        err.contains(
            "operator `window.window.panes` parameter retain_ms changed from 3000 to 4000"
        ),
        "{err}"
    );
    assert!(
        err.contains("`totals`") && err.contains("orphaned"),
        "{err}"
    );
    assert!(
        err.contains("`kv:totals` (kv_table) is gone"),
        "a dropped table is named: {err}"
    );
    assert!(err.contains("reset-operator"), "names the way out: {err}");
    drop(ssc);
    // The explicit way out: reset the changed operators' state.
    let mut store = SledCheckpointStore::open(dir.path().join("checkpoint"), SledConfig::default())
        .expect("open");
    assert!(store.reset_operator("window").expect("reset") > 0);
    store.reset_operator("totals").expect("reset");
    assert!(store.reset_operator("kv:totals").expect("reset") > 0);
    assert!(store.pending().expect("pending").is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]

    /// Random crash points and moments: outputs and state always equal the
    /// uninterrupted run's.
    #[test]
    fn random_crashes_are_invisible(
        point in prop::sample::select(vec!["after_allocate", "between_outputs", "sink_write", "before_commit", "after_commit"]),
        skip in 0u64..12,
    ) {
        let _g = serial();
        let reference = tempfile::tempdir().expect("tempdir");
        run(reference.path(), None);
        let crashed = tempfile::tempdir().expect("tempdir");
        run(crashed.path(), Some((point, skip)));
        prop_assert_eq!(outputs(reference.path()), outputs(crashed.path()));
        prop_assert_eq!(final_state(reference.path()), final_state(crashed.path()));
        failpoint::reset();
    }
}
