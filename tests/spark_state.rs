//! Spark's own state test cases that weir could not express before issue
//! 14: `updateStateByKey` with an initial state, with a function that sees
//! the batch time and the key, and in its partition-iterator form
//! (BasicOperationsSuite); `mapWithState` with a function that sees the
//! batch time and returns an `Option` (MapWithStateSuite). Expected outputs
//! are Spark's. Plus weir's own promise about the initial state: it is
//! applied at the first start only, also when the state it became is
//! empty by the time of a restart.

mod common;
use common::*;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::{ManualClock, State, StateSpec, StreamingContext, UpdateSpec};

type Batches = Vec<(u64, Vec<(String, i64)>)>;

/// Spark's six input batches: a / a b / a b c / a b / a / (none).
fn spark_input() -> weir::Queue<(String, i64)> {
    let batch = |ws: &[&str]| ws.iter().map(|w| (w.to_string(), 1i64)).collect();
    queue(vec![
        batch(&["a"]),
        batch(&["a", "b"]),
        batch(&["a", "b", "c"]),
        batch(&["a", "b"]),
        batch(&["a"]),
        vec![],
    ])
}

fn expect(v: Vec<(u64, Vec<(&str, i64)>)>) -> Batches {
    v.into_iter()
        .map(|(t, xs)| (t, xs.into_iter().map(|(k, x)| (k.to_string(), x)).collect()))
        .collect()
}

/// Spark's expected output of "with initial value RDD" (initial a=1, c=2,
/// a running sum).
fn running_sum_from_initial() -> Batches {
    expect(vec![
        (1000, vec![("a", 2), ("c", 2)]),
        (2000, vec![("a", 3), ("b", 1), ("c", 2)]),
        (3000, vec![("a", 4), ("b", 2), ("c", 3)]),
        (4000, vec![("a", 5), ("b", 3), ("c", 3)]),
        (5000, vec![("a", 6), ("b", 3), ("c", 3)]),
        (6000, vec![("a", 6), ("b", 3), ("c", 3)]),
    ])
}

fn initial() -> Vec<(String, i64)> {
    vec![("a".to_string(), 1), ("c".to_string(), 2)]
}

/// BasicOperationsSuite "updateStateByKey - simple with initial value RDD".
#[test]
fn spark_update_state_by_key_simple_with_initial_value() {
    let h = ctx(2);
    let spec = UpdateSpec::function(|new: &[i64], old: Option<&i64>| {
        Some(new.iter().sum::<i64>() + old.copied().unwrap_or(0))
    })
    .initial_state(initial());
    let out = collect(
        &h.ssc
            .queue_stream(&spark_input())
            .update_state_by_key_with(spec),
    );
    h.run(6);
    assert_eq!(sorted(&out), running_sum_from_initial());
}

/// BasicOperationsSuite "updateStateByKey - with initial value RDD": the
/// partition-iterator form.
#[test]
fn spark_update_state_by_key_partition_iterator_with_initial_value() {
    let h = ctx(2);
    let spec = UpdateSpec::partitions(
        |it: &mut dyn Iterator<Item = (String, Vec<i64>, Option<i64>)>| {
            it.map(|(k, new, old)| (k, new.iter().sum::<i64>() + old.unwrap_or(0)))
                .collect()
        },
    )
    .initial_state(initial());
    let out = collect(
        &h.ssc
            .queue_stream(&spark_input())
            .update_state_by_key_with(spec),
    );
    h.run(6);
    assert_eq!(sorted(&out), running_sum_from_initial());
}

/// The partition form removes the keys it does not return, and refuses a
/// key that was not in its partition's iterator.
#[test]
fn partition_iterator_drops_keys_it_does_not_return_and_refuses_foreign_keys() {
    let h = ctx(4);
    let q = queue(vec![
        vec![("a".to_string(), 1i64), ("b".to_string(), 1)],
        vec![("a".to_string(), 1)],
    ]);
    // Keeps only the keys with new values this batch.
    let spec = UpdateSpec::partitions(
        |it: &mut dyn Iterator<Item = (String, Vec<i64>, Option<i64>)>| {
            it.filter(|(_, new, _)| !new.is_empty())
                .map(|(k, new, old)| (k, new.len() as i64 + old.unwrap_or(0)))
                .collect()
        },
    );
    let out = collect(&h.ssc.queue_stream(&q).update_state_by_key_with(spec));
    h.run(2);
    assert_eq!(
        sorted(&out),
        expect(vec![
            (1000, vec![("a", 1), ("b", 1)]),
            (2000, vec![("a", 2)])
        ])
    );

    // Every partition returns "x", which lives in one partition only.
    let h = ctx(4);
    let q = queue(vec![(0..16).map(|i| (format!("k{i}"), 1i64)).collect()]);
    let spec = UpdateSpec::partitions(
        |_: &mut dyn Iterator<Item = (String, Vec<i64>, Option<i64>)>| {
            vec![("x".to_string(), 1i64)]
        },
    );
    let _out = collect(&h.ssc.queue_stream(&q).update_state_by_key_with(spec));
    h.ssc.start().expect("start");
    let t = h.clock.advance(1000);
    let err = h
        .ssc
        .await_batch(t, WAIT)
        .expect_err("a foreign key fails the batch");
    let msg = err.to_string();
    assert!(msg.contains("another partition"), "{msg}");
    let _ = h.ssc.stop(false);
}

/// BasicOperationsSuite "updateStateByKey - testing time stamps as input":
/// the function sees the batch time and the key.
#[test]
fn spark_update_state_by_key_with_time_and_key() {
    let h = ctx(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let spec = UpdateSpec::with_key(move |t: u64, k: &String, new: &[i64], old: Option<&i64>| {
        s.lock().unwrap().push((t, k.clone()));
        if new.is_empty() {
            Some(old.copied().unwrap_or(0))
        } else {
            Some(t as i64 + old.copied().unwrap_or(0))
        }
    })
    .initial_state(vec![("a".to_string(), 0), ("c".to_string(), 0)]);
    let out = collect(
        &h.ssc
            .queue_stream(&spark_input())
            .update_state_by_key_with(spec),
    );
    h.run(6);
    assert_eq!(
        sorted(&out),
        expect(vec![
            (1000, vec![("a", 1000), ("c", 0)]),
            (2000, vec![("a", 3000), ("b", 2000), ("c", 0)]),
            (3000, vec![("a", 6000), ("b", 5000), ("c", 3000)]),
            (4000, vec![("a", 10000), ("b", 9000), ("c", 3000)]),
            (5000, vec![("a", 15000), ("b", 9000), ("c", 3000)]),
            (6000, vec![("a", 15000), ("b", 9000), ("c", 3000)]),
        ])
    );
    let seen = seen.lock().unwrap();
    assert!(seen.contains(&(1000, "c".to_string())), "{seen:?}");
    assert!(seen.contains(&(6000, "b".to_string())), "{seen:?}");
}

/// BasicOperationsSuite "updateStateByKey - object lifecycle": a state is
/// dropped after two batches in a row without new values.
#[test]
fn spark_update_state_by_key_object_lifecycle() {
    let h = ctx(2);
    let batch = |ws: &[&str]| ws.iter().map(|w| (w.to_string(), 1i64)).collect();
    let q = queue(vec![
        batch(&["a", "b"]),
        vec![],
        batch(&["a", "c", "a"]),
        batch(&["c"]),
        vec![],
        vec![],
    ]);
    // State: (counter, batches in a row without new values).
    let spec = UpdateSpec::function(|new: &[i64], old: Option<&(i64, u32)>| {
        let (mut counter, mut idle) = old.copied().unwrap_or((0, 0));
        match new.iter().sum::<i64>() {
            0 => idle += 1,
            n => {
                counter += n;
                idle = 0;
            }
        }
        (idle < 2).then_some((counter, idle))
    });
    let counters = h
        .ssc
        .queue_stream(&q)
        .update_state_by_key_with(spec)
        .map_values(|(counter, _)| counter);
    let out = collect(&counters);
    h.run(6);
    assert_eq!(
        sorted(&out),
        expect(vec![
            (1000, vec![("a", 1), ("b", 1)]),
            (2000, vec![("a", 1), ("b", 1)]),
            (3000, vec![("a", 3), ("c", 1)]),
            (4000, vec![("a", 3), ("c", 2)]),
            (5000, vec![("c", 2)]),
            (6000, vec![]),
        ])
    );
}

/// Spark's seven mapWithState input batches: - / a / a b / a b c / a b /
/// a / -.
fn spark_map_input() -> weir::Queue<(String, i64)> {
    let batch = |ws: &[&str]| ws.iter().map(|w| (w.to_string(), 1i64)).collect();
    queue(vec![
        vec![],
        batch(&["a"]),
        batch(&["a", "b"]),
        batch(&["a", "b", "c"]),
        batch(&["a", "b"]),
        batch(&["a"]),
        vec![],
    ])
}

/// MapWithStateSuite "mapWithState - basic operations with advanced API":
/// the function sees the batch time and returns an `Option`.
#[test]
fn spark_map_with_state_basic_operations_with_advanced_api() {
    let h = ctx(2);
    let spec = StateSpec::function_with_time(
        |_t: u64, k: &String, v: Option<i64>, st: &mut State<i64>| {
            let sum = v.unwrap_or(0) + st.get().copied().unwrap_or(0);
            st.update(sum);
            Some(format!("{k}{k}"))
        },
    );
    let mapped = h.ssc.queue_stream(&spark_map_input()).map_with_state(spec);
    let out = collect(&mapped);
    let states = collect(&mapped.state_snapshots());
    h.run(7);
    let s = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        sorted(&out),
        vec![
            (1000, s(&[])),
            (2000, s(&["aa"])),
            (3000, s(&["aa", "bb"])),
            (4000, s(&["aa", "bb", "cc"])),
            (5000, s(&["aa", "bb"])),
            (6000, s(&["aa"])),
            (7000, s(&[])),
        ]
    );
    assert_eq!(
        sorted(&states),
        expect(vec![
            (1000, vec![]),
            (2000, vec![("a", 1)]),
            (3000, vec![("a", 2), ("b", 1)]),
            (4000, vec![("a", 3), ("b", 2), ("c", 1)]),
            (5000, vec![("a", 4), ("b", 3), ("c", 1)]),
            (6000, vec![("a", 5), ("b", 3), ("c", 1)]),
            (7000, vec![("a", 5), ("b", 3), ("c", 1)]),
        ])
    );
}

/// A `None` from the function emits nothing for that record; the batch
/// time is the one of the batch the record is in, also for a timeout.
#[test]
fn map_with_state_none_emits_nothing_and_the_function_sees_the_batch_time() {
    let h = ctx(2);
    // Emits "<key>@<time>" the first time a key is seen, and its timeout.
    let spec =
        StateSpec::function_with_time(|t: u64, k: &String, v: Option<i64>, st: &mut State<i64>| {
            match v {
                None => Some(format!("{k} timed out @{t}")),
                Some(v) => {
                    let first = !st.exists();
                    st.update(st.get().copied().unwrap_or(0) + v);
                    first.then(|| format!("{k}@{t}"))
                }
            }
        })
        .timeout(Duration::from_secs(2));
    let out = collect(&h.ssc.queue_stream(&spark_map_input()).map_with_state(spec));
    h.run(7);
    let s = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        sorted(&out),
        vec![
            (1000, s(&[])),
            (2000, s(&["a@2000"])),
            (3000, s(&["b@3000"])),
            (4000, s(&["c@4000"])),
            (5000, s(&[])),
            (6000, s(&[])),
            // c was last updated at 4000 < 7000 - 2000; b (5000) and a
            // (6000) are not idle long enough.
            (7000, s(&["c timed out @7000"])),
        ]
    );
}

type Seen = Arc<Mutex<Batches>>;

/// A pipeline on `dir`: words from the log `input`, a state per word
/// starting from `a=10`; a word without new values in a batch is dropped.
fn restartable(
    dir: &Path,
    clock: Arc<ManualClock>,
) -> (StreamingContext, Arc<weir::wal::Wal>, Seen) {
    restartable_from(dir, clock, |spec| {
        spec.initial_state(vec![("a".to_string(), 10)])
    })
}

type Spec = UpdateSpec<String, i64, i64>;

/// [`restartable`] with the initial state `initial` gives the spec.
fn restartable_from(
    dir: &Path,
    clock: Arc<ManualClock>,
    initial: impl FnOnce(Spec) -> Spec,
) -> (StreamingContext, Arc<weir::wal::Wal>, Seen) {
    let mut wal = None;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(2)
            .clock(clock)
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        wal = Some(w);
        let spec = initial(UpdateSpec::function(|new: &[i64], old: Option<&i64>| {
            (!new.is_empty()).then(|| new.iter().sum::<i64>() + old.copied().unwrap_or(0))
        }));
        lines
            .map(|l: String| (l, 1i64))
            .update_state_by_key_with(spec)
            .name("words")
            .foreach_batch(move |t, mut recs| {
                recs.sort();
                s.lock().unwrap().push((t, recs));
                Ok(())
            })?;
        Ok(ssc)
    })
    .expect("build");
    (ssc, wal.expect("input log"), seen)
}

fn batch_at(ssc: &StreamingContext, clock: &ManualClock, t: u64) {
    clock.set(t);
    ssc.await_batch(t, WAIT).expect("batch");
}

/// The initial state is committed with the first batch and not applied
/// again at a restart: neither when the state still holds its keys nor
/// when it has become empty.
#[test]
fn initial_state_is_applied_at_the_first_start_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    {
        let (ssc, wal, seen) = restartable(dir.path(), clock.clone());
        ssc.start().expect("start");
        wal.append(&["a", "b"]).expect("append");
        batch_at(&ssc, &clock, 1000);
        ssc.stop(false).expect("stop");
        assert_eq!(
            *seen.lock().unwrap(),
            expect(vec![(1000, vec![("a", 11), ("b", 1)])])
        );
    }
    {
        // Restart with keys in the state: a goes on from 11, not from 10.
        let (ssc, wal, seen) = restartable(dir.path(), clock.clone());
        ssc.start().expect("restart");
        wal.append(&["a"]).expect("append");
        batch_at(&ssc, &clock, 2000);
        // No new values: every key is dropped; the state is empty.
        batch_at(&ssc, &clock, 3000);
        ssc.stop(false).expect("stop");
        assert_eq!(
            *seen.lock().unwrap(),
            expect(vec![(2000, vec![("a", 12)]), (3000, vec![])])
        );
    }
    {
        // Restart with an empty committed state: a starts from nothing.
        let (ssc, wal, seen) = restartable(dir.path(), clock.clone());
        ssc.start().expect("restart");
        wal.append(&["a"]).expect("append");
        batch_at(&ssc, &clock, 4000);
        ssc.stop(false).expect("stop");
        assert_eq!(*seen.lock().unwrap(), expect(vec![(4000, vec![("a", 1)])]));
    }
}

/// A loaded initial state is loaded while the operator has no committed
/// state only: a loader that fails fails the first batch (nothing
/// committed, the loader's error named), one that works is committed with
/// the first batch, and after a restart no loader is called again.
#[test]
fn initial_state_from_a_loader_is_loaded_at_the_first_start_only() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    {
        let (ssc, wal, seen) = restartable_from(dir.path(), clock.clone(), |spec| {
            spec.initial_state_from(|| Err("counts.tsv is missing".into()))
        });
        ssc.start().expect("start");
        wal.append(&["a", "b"]).expect("append");
        clock.set(1000);
        let e = ssc.await_batch(1000, WAIT).expect_err("no initial state");
        let e = e.to_string();
        assert!(
            e.contains("operator `words` could not load its initial state: counts.tsv is missing"),
            "{e}"
        );
        assert!(ssc.stop(false).is_err());
        assert!(seen.lock().unwrap().is_empty());
    }
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let c = calls.clone();
        let (ssc, _wal, seen) = restartable_from(dir.path(), clock.clone(), move |spec| {
            spec.initial_state_from(move || {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(vec![("a".to_string(), 10)])
            })
        });
        ssc.start().expect("restart");
        assert!(ssc.await_batch(1000, WAIT).expect("replay").replayed);
        ssc.stop(false).expect("stop");
        assert_eq!(
            *seen.lock().unwrap(),
            expect(vec![(1000, vec![("a", 11), ("b", 1)])])
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "loaded for the first batch"
        );
    }
    {
        let c = calls.clone();
        let (ssc, wal, seen) = restartable_from(dir.path(), clock.clone(), move |spec| {
            spec.initial_state_from(move || {
                c.fetch_add(1, Ordering::SeqCst);
                Err("must not be called".into())
            })
        });
        ssc.start().expect("restart");
        wal.append(&["a"]).expect("append");
        batch_at(&ssc, &clock, 2000);
        ssc.stop(false).expect("stop");
        assert_eq!(*seen.lock().unwrap(), expect(vec![(2000, vec![("a", 12)])]));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not loaded after the commit"
        );
    }
}

/// `map_with_state`'s initial state, likewise, is not applied again after
/// its keys were all removed and the context restarted.
#[test]
fn map_with_state_initial_state_is_not_applied_again_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let build = |clock: Arc<ManualClock>| {
        let mut wal = None;
        let seen: Out<String> = Arc::default();
        let s = seen.clone();
        let ssc = StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .partitions(2)
                .clock(clock)
                .build()?;
            let (lines, w) = ssc.wal_text_stream("input")?;
            wal = Some(w);
            // "-a" removes a's state; "a" adds one to it.
            let spec = StateSpec::function(|k: &String, v: Option<bool>, st: &mut State<i64>| {
                if v == Some(false) {
                    st.remove();
                    format!("{k} removed")
                } else {
                    let n = st.get().copied().unwrap_or(0) + 1;
                    st.update(n);
                    format!("{k}={n}")
                }
            })
            .initial_state(vec![("a".to_string(), 10)]);
            lines
                .map(|l: String| match l.strip_prefix('-') {
                    Some(k) => (k.to_string(), false),
                    None => (l, true),
                })
                .map_with_state(spec)
                .name("counts")
                .foreach_batch(move |t, recs| {
                    s.lock().unwrap().push((t, recs));
                    Ok(())
                })?;
            Ok(ssc)
        })
        .expect("build");
        (ssc, wal.expect("input log"), seen)
    };
    {
        let (ssc, wal, seen) = build(clock.clone());
        ssc.start().expect("start");
        wal.append(&["-a"]).expect("append");
        batch_at(&ssc, &clock, 1000);
        ssc.stop(false).expect("stop");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(1000, vec!["a removed".to_string()])]
        );
    }
    {
        let (ssc, wal, seen) = build(clock.clone());
        ssc.start().expect("restart");
        wal.append(&["a"]).expect("append");
        batch_at(&ssc, &clock, 2000);
        ssc.stop(false).expect("stop");
        assert_eq!(*seen.lock().unwrap(), vec![(2000, vec!["a=1".to_string()])]);
    }
}

/// A first batch that fails before its commit is replayed against the
/// initial state again, and the partition form gives the state an
/// uninterrupted run gives.
#[test]
fn failed_first_batch_is_replayed_against_the_initial_state() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let store = weir::checkpoint::MemoryCheckpointStore::new();
    let batch = |ws: &[&str]| ws.iter().map(|w| (w.to_string(), 1i64)).collect();
    let q = queue(vec![batch(&["a", "b"]), batch(&["b"])]);
    let fail = Arc::new(AtomicBool::new(true));
    let build = |clock: Arc<ManualClock>| {
        let ssc = StreamingContext::builder()
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .checkpoint_store(Box::new(store.clone()))
            .build()
            .expect("build");
        let fail = fail.clone();
        let spec = UpdateSpec::partitions(
            |it: &mut dyn Iterator<Item = (String, Vec<i64>, Option<i64>)>| {
                it.map(|(k, new, old)| (k, new.iter().sum::<i64>() + old.unwrap_or(0)))
                    .collect()
            },
        )
        .initial_state(vec![("a".to_string(), 10)]);
        let totals = ssc
            .queue_stream(&q)
            .map(move |kv: (String, i64)| {
                if kv.0 == "b" && fail.load(Ordering::SeqCst) {
                    panic!("injected failure");
                }
                kv
            })
            .update_state_by_key_with(spec)
            .name("totals");
        let out = collect(&totals);
        (ssc, out)
    };
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, out) = build(clock.clone());
    ssc.start().expect("start");
    clock.advance(1000);
    let err = ssc
        .await_batch(1000, WAIT)
        .expect_err("injected")
        .to_string();
    assert!(err.contains("injected failure"), "{err}");
    assert!(ssc.stop(false).is_err());
    assert!(out.lock().unwrap().is_empty());
    assert!(store.operators().is_empty(), "nothing committed");

    fail.store(false, Ordering::SeqCst);
    let clock = Arc::new(ManualClock::new(1000));
    let (ssc, out) = build(clock.clone());
    ssc.start().expect("restart");
    assert!(ssc.await_batch(1000, WAIT).expect("replay").replayed);
    clock.advance(1000);
    ssc.await_batch(2000, WAIT).expect("batch");
    ssc.stop(false).expect("stop");
    assert_eq!(
        sorted(&out),
        expect(vec![
            (1000, vec![("a", 11), ("b", 1)]),
            (2000, vec![("a", 11), ("b", 2)]),
        ])
    );
}
