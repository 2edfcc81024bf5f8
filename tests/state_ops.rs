//! Stateful operations: update_state_by_key and map_with_state, with keys
//! that disappear and come back, timeouts, initial state, failure and
//! replay against the last committed state.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weir::checkpoint::MemoryCheckpointStore;
use weir::{ManualClock, Queue, State, StateSpec, StreamingContext};

fn words(ws: &[&str]) -> Vec<(String, i64)> {
    ws.iter().map(|w| (w.to_string(), 1)).collect()
}

fn owned(v: Vec<(u64, Vec<(&str, i64)>)>) -> Vec<(u64, Vec<(String, i64)>)> {
    v.into_iter()
        .map(|(t, xs)| (t, xs.into_iter().map(|(k, x)| (k.to_string(), x)).collect()))
        .collect()
}

#[test]
fn update_state_by_key_updates_every_key_every_batch() {
    let h = ctx(2);
    let q = queue(vec![
        words(&["a", "b"]),
        words(&["a"]),
        vec![],
        words(&["b", "c"]),
    ]);
    let counts = h
        .ssc
        .queue_stream(&q)
        .update_state_by_key(|new: &[i64], old: Option<&i64>| {
            Some(old.copied().unwrap_or(0) + new.iter().sum::<i64>())
        });
    let out = collect(&counts);
    h.run(4);
    assert_eq!(
        sorted(&out),
        owned(vec![
            (1000, vec![("a", 1), ("b", 1)]),
            (2000, vec![("a", 2), ("b", 1)]),
            (3000, vec![("a", 2), ("b", 1)]),
            (4000, vec![("a", 2), ("b", 2), ("c", 1)]),
        ])
    );
}

#[test]
fn keys_that_disappear_and_come_back_start_fresh() {
    let h = ctx(2);
    let q = queue(vec![
        words(&["a", "b"]),
        words(&["a"]),
        vec![],
        words(&["b"]),
    ]);
    // Returning None for a key without new values removes it.
    let live = h
        .ssc
        .queue_stream(&q)
        .update_state_by_key(|new: &[i64], old: Option<&i64>| {
            if new.is_empty() {
                None
            } else {
                Some(old.copied().unwrap_or(0) + new.len() as i64)
            }
        });
    let out = collect(&live);
    h.run(4);
    assert_eq!(
        sorted(&out),
        owned(vec![
            (1000, vec![("a", 1), ("b", 1)]),
            (2000, vec![("a", 2)]),
            (3000, vec![]),
            (4000, vec![("b", 1)]),
        ])
    );
    // The live state size (the service's `weir_state_keys`): only "b".
    let keys = h.ssc.state_keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].1, 1, "{keys:?}");
}

fn running_sum(k: &String, v: Option<i64>, st: &mut State<i64>) -> String {
    match v {
        Some(v) => {
            let s = st.get().copied().unwrap_or(0) + v;
            st.update(s);
            format!("{k}={s}")
        }
        None => format!("{k} timed out with {:?}", st.get()),
    }
}

type RunningSum = StateSpec<String, i64, i64, String>;

/// Six batches (a and b, then a, two empty, b, empty) and a running sum
/// with a 2 s timeout.
fn running_sums_with_timeout() -> (Queue<(String, i64)>, RunningSum) {
    let q = queue(vec![
        vec![("a".to_string(), 1), ("b".to_string(), 2)],
        vec![("a".to_string(), 3)],
        vec![],
        vec![],
        vec![("b".to_string(), 5)],
        vec![],
    ]);
    let spec = StateSpec::function(running_sum).timeout(Duration::from_secs(2));
    (q, spec)
}

#[test]
fn map_with_state_touches_only_keys_with_data_and_times_out_every_batch() {
    let h = ctx(1);
    let (q, spec) = running_sums_with_timeout();
    let out = collect(&h.ssc.queue_stream(&q).map_with_state(spec));
    h.run(6);
    let s = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        get(&out),
        vec![
            (1000, s(&["a=1", "b=2"])),
            (2000, s(&["a=4"])),
            // b was last updated at 1000: it times out at the first batch t
            // with 1000 < t - 2000, i.e. 4000; a (2000) at 5000.
            (3000, vec![]),
            (4000, s(&["b timed out with Some(2)"])),
            (5000, s(&["b=5", "a timed out with Some(4)"])),
            (6000, vec![]),
        ]
    );
}

#[test]
fn map_with_state_starts_from_the_initial_state() {
    let h = ctx(2);
    let q = queue(vec![vec![("a".to_string(), 1)], vec![("z".to_string(), 1)]]);
    let spec = StateSpec::function(running_sum)
        .initial_state(vec![("a".to_string(), 10), ("z".to_string(), 100)]);
    let out = collect(&h.ssc.queue_stream(&q).map_with_state(spec));
    h.run(2);
    assert_eq!(
        get(&out),
        vec![
            (1000, vec!["a=11".to_string()]),
            (2000, vec!["z=101".to_string()])
        ]
    );
}

#[test]
fn map_with_state_removes_state_on_request() {
    let h = ctx(1);
    let q = queue(vec![
        vec![("a".to_string(), 1)],
        vec![("a".to_string(), -1)],
        vec![("a".to_string(), 7)],
    ]);
    let spec = StateSpec::function(|k: &String, v: Option<i64>, st: &mut State<i64>| {
        let v = v.unwrap_or(0);
        if v < 0 {
            st.remove();
            format!("{k} removed")
        } else {
            let s = st.get().copied().unwrap_or(0) + v;
            st.update(s);
            format!("{k}={s}")
        }
    });
    let out = collect(&h.ssc.queue_stream(&q).map_with_state(spec));
    h.run(3);
    assert_eq!(
        get(&out),
        vec![
            (1000, vec!["a=1".to_string()]),
            (2000, vec!["a removed".to_string()]),
            (3000, vec!["a=7".to_string()]),
        ]
    );
}

/// Spark's `stateSnapshots()`: every (key, state) after each batch's
/// update, including keys without new data, without timed-out keys.
#[test]
fn state_snapshots_hold_every_key_after_each_batch() {
    let h = ctx(2);
    let (q, spec) = running_sums_with_timeout();
    let mapped = h.ssc.queue_stream(&q).map_with_state(spec).name("sums");
    let out = collect(&mapped);
    let snaps = collect(&mapped.state_snapshots());
    h.run(6);
    assert_eq!(
        sorted(&snaps),
        owned(vec![
            (1000, vec![("a", 1), ("b", 2)]),
            (2000, vec![("a", 4), ("b", 2)]),
            (3000, vec![("a", 4), ("b", 2)]),
            // b times out at 4000, a at 5000; b comes back fresh at 5000.
            (4000, vec![("a", 4)]),
            (5000, vec![("b", 5)]),
            (6000, vec![("b", 5)]),
        ])
    );
    assert_eq!(out.lock().unwrap().len(), 6);
    let d = h.ssc.describe();
    let names: Vec<&str> = d.operators.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["queue", "sums", "sums/state_snapshots"]);
}

#[test]
fn state_snapshots_alone_start_from_the_initial_state_and_drop_removed_keys() {
    let h = ctx(2);
    let q = queue(vec![
        vec![("a".to_string(), 1)],
        vec![("z".to_string(), -1)],
        vec![("z".to_string(), 7)],
        vec![],
    ]);
    let spec = StateSpec::function(|_: &String, v: Option<i64>, st: &mut State<i64>| {
        let v = v.unwrap_or(0);
        if v < 0 {
            st.remove();
        } else {
            st.update(st.get().copied().unwrap_or(0) + v);
        }
    })
    .initial_state(vec![("a".to_string(), 10), ("z".to_string(), 100)]);
    // Only the snapshots are output: the operator still advances.
    let snaps = collect(
        &h.ssc
            .queue_stream(&q)
            .map_with_state(spec)
            .state_snapshots(),
    );
    h.run(4);
    assert_eq!(
        sorted(&snaps),
        owned(vec![
            (1000, vec![("a", 11), ("z", 100)]),
            (2000, vec![("a", 11)]),
            (3000, vec![("a", 11), ("z", 7)]),
            (4000, vec![("a", 11), ("z", 7)]),
        ])
    );
}

#[test]
fn updating_a_timing_out_state_fails_the_batch() {
    let h = ctx(1);
    let q = queue(vec![vec![("a".to_string(), 1)]]);
    let spec = StateSpec::function(|_: &String, _: Option<i64>, st: &mut State<i64>| st.update(1))
        .timeout(Duration::from_secs(1));
    let _ = collect(&h.ssc.queue_stream(&q).map_with_state(spec));
    h.ssc.start().unwrap();
    h.advance(2);
    h.clock.advance(1000);
    let err = h.ssc.await_batch(3000, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("cannot update the state of a key that is timing out"),
        "{err}"
    );
    let err = h.ssc.stop(false).unwrap_err().to_string();
    assert!(err.contains("operator `queue/map_with_state`"), "{err}");
}

/// A failed batch leaves the committed state untouched; a new context on
/// the same checkpoint store replays it with the same input and continues.
#[test]
fn failed_batch_is_replayed_against_the_last_committed_state() {
    let store = MemoryCheckpointStore::new();
    let q = queue(vec![words(&["a"]), words(&["a", "b"]), words(&["b"])]);
    let fail = Arc::new(AtomicBool::new(true));
    let build = |clock: Arc<ManualClock>, fail: Arc<AtomicBool>| {
        let ssc = StreamingContext::builder()
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .checkpoint_store(Box::new(store.clone()))
            .build()
            .unwrap();
        let counts = ssc
            .queue_stream(&q)
            .map(move |kv: (String, i64)| {
                if kv.0 == "b" && fail.load(Ordering::SeqCst) {
                    panic!("injected failure");
                }
                kv
            })
            .update_state_by_key(|new: &[i64], old: Option<&i64>| {
                Some(old.copied().unwrap_or(0) + new.iter().sum::<i64>())
            })
            .name("counts");
        let out = collect(&counts);
        (ssc, out)
    };

    let clock1 = Arc::new(ManualClock::new(0));
    let (ssc1, out1) = build(clock1.clone(), fail.clone());
    ssc1.start().unwrap();
    clock1.advance(1000);
    ssc1.await_batch(1000, WAIT).unwrap();
    clock1.advance(1000);
    let err = ssc1.await_batch(2000, WAIT).unwrap_err().to_string();
    assert!(
        err.contains("batch 2000 ms failed") && err.contains("injected failure"),
        "{err}"
    );
    assert!(ssc1.stop(false).is_err());
    assert_eq!(sorted(&out1), owned(vec![(1000, vec![("a", 1)])]));

    // Restart on the same store: batch 2000 is pending with its ranges.
    fail.store(false, Ordering::SeqCst);
    let clock2 = Arc::new(ManualClock::new(2000));
    let (ssc2, out2) = build(clock2.clone(), fail.clone());
    ssc2.start().unwrap();
    let replay = ssc2.await_batch(2000, WAIT).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.input_records, 2);
    clock2.advance(1000);
    ssc2.await_batch(3000, WAIT).unwrap();
    ssc2.stop(false).unwrap();
    assert_eq!(
        sorted(&out2),
        owned(vec![
            (2000, vec![("a", 2), ("b", 1)]),
            (3000, vec![("a", 2), ("b", 2)])
        ])
    );
    assert!(store.operators().contains(&"counts".to_string()));
}
