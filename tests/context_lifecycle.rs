//! StreamingContext life cycle, naming, statistics, batch caps and stops.

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use weir::{ManualClock, Queue, StreamingContext};

#[test]
fn nothing_runs_before_start_and_first_batch_is_zero_plus_interval() {
    let h = ctx(1);
    let q = queue(vec![vec![1], vec![2]]);
    let out = collect(&h.ssc.queue_stream(&q));
    h.clock.advance(5000);
    assert!(get(&out).is_empty());
    h.ssc.start().unwrap();
    // Zero time is 5000 (the clock at start): first batch at 6000.
    h.clock.advance(1000);
    h.ssc.await_batch(6000, WAIT).unwrap();
    h.ssc.stop(false).unwrap();
    assert_eq!(get(&out), vec![(6000, vec![1])]);
}

#[test]
fn adding_outputs_after_start_is_an_error_and_stopped_cannot_restart() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue(vec![vec![1]]));
    s.print(1).unwrap();
    h.ssc.start().unwrap();
    let err = s.map(|x: i32| x + 1).print(1).unwrap_err().to_string();
    assert!(
        err.contains("after the streaming context has started"),
        "{err}"
    );
    assert!(h
        .ssc
        .start()
        .unwrap_err()
        .to_string()
        .contains("already been started"));
    h.ssc.stop(false).unwrap();
    h.ssc.stop(false).unwrap(); // idempotent
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(err.contains("cannot be restarted"), "{err}");
    assert!(s.print(1).unwrap_err().to_string().contains("stopped"));
}

#[test]
fn start_without_outputs_is_refused() {
    let h = ctx(1);
    let _ = h.ssc.queue_stream(&queue::<i32>(vec![])).map(|x| x);
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(err.contains("no output operations"), "{err}");
}

#[test]
fn auto_names_are_stable_and_duplicates_are_refused() {
    let h = ctx(1);
    let a = h.ssc.queue_stream(&queue::<(String, i64)>(vec![]));
    let b = h.ssc.queue_stream(&queue::<(String, i64)>(vec![]));
    let counts = a.map(|x| x).reduce_by_key(|x, y| x + y);
    let _second_map = a.map(|x| x);
    let _cbv = a.count_by_value();
    let totals = a
        .union(&b)
        .update_state_by_key(|v: &[i64], s: Option<&i64>| {
            Some(s.copied().unwrap_or(0) + v.len() as i64)
        })
        .name("totals");
    let w =
        a.reduce_by_key_and_window(|x, y| x + y, Duration::from_secs(2), Duration::from_secs(1));
    counts.print(1).unwrap();
    totals.print(1).unwrap();
    w.print(1).unwrap();
    let names: Vec<String> = h
        .ssc
        .describe()
        .operators
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(
        names,
        vec![
            "queue",
            "queue#2",
            "queue/map",
            "queue/map/reduce_by_key",
            "queue/map#2",
            "queue/count_by_value.pairs",
            "queue/count_by_value",
            "queue+queue#2/union",
            "totals",
            "queue/reduce_by_key_and_window.batch",
            "queue/reduce_by_key_and_window.window.panes",
            "queue/reduce_by_key_and_window.window",
            "queue/reduce_by_key_and_window",
        ]
    );
    let d = h.ssc.describe();
    let w = d
        .operators
        .iter()
        .find(|o| o.name == "queue/reduce_by_key_and_window")
        .unwrap();
    assert_eq!(w.kind, "reduce_by_key_and_window");
    assert_eq!(w.params.get("window_ms").map(String::as_str), Some("2000"));
    assert!(
        d.operators
            .iter()
            .find(|o| o.name == "totals")
            .unwrap()
            .stateful
    );
    assert_eq!(d.batch_interval_ms, 1000);

    let h2 = ctx(1);
    let s = h2.ssc.queue_stream(&queue::<i32>(vec![]));
    s.map(|x| x).name("dup").print(1).unwrap();
    s.filter(|_| true).name("dup").print(1).unwrap();
    let err = h2.ssc.start().unwrap_err().to_string();
    assert!(
        err.contains("duplicate operator name `dup` (used by a map and a filter)"),
        "{err}"
    );
}

#[test]
fn statistics_and_batch_records_cap() {
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(500))
        .parallelism(1)
        .batch_records_max(3)
        .clock(clock.clone())
        .build()
        .unwrap();
    let q = Queue::new();
    q.push((0..5).collect::<Vec<i32>>()).unwrap();
    let out = collect(&ssc.queue_stream(&q));
    ssc.start().unwrap();
    clock.advance(1000);
    ssc.await_batch(1000, WAIT).unwrap();
    ssc.stop(false).unwrap();
    // The 5-record push is split by the cap: 3, then the rest.
    assert_eq!(get(&out), vec![(500, vec![0, 1, 2]), (1000, vec![3, 4])]);
    let st = ssc.statistics();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].batch_time_ms, 500);
    assert_eq!(st[0].input_records, 3);
    assert_eq!(st[1].input_records, 2);
    // Both batches were cut after the clock jumped to 1000.
    assert_eq!(st[0].scheduling_delay_ms, 500);
    assert_eq!(
        st[0].total_delay_ms,
        st[0].scheduling_delay_ms + st[0].processing_time_ms
    );
}

#[test]
fn await_termination_or_timeout_and_graceful_stop_drains_the_queue() {
    let h = ctx(1);
    let q = queue(vec![vec![1], vec![2], vec![3]]);
    let out = collect(&h.ssc.queue_stream(&q));
    h.ssc.start().unwrap();
    assert!(!h
        .ssc
        .await_termination_or_timeout(Duration::from_millis(10))
        .unwrap());
    let clock = h.clock.clone();
    let ticker = std::thread::spawn(move || {
        for _ in 0..100 {
            clock.advance(1000);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    h.ssc.stop(true).unwrap();
    assert!(h
        .ssc
        .await_termination_or_timeout(Duration::from_millis(10))
        .unwrap());
    let got: Vec<i32> = get(&out).into_iter().flat_map(|(_, v)| v).collect();
    assert_eq!(got, vec![1, 2, 3]);
    ticker.join().unwrap();
}

#[test]
fn builder_rejects_bad_settings() {
    let e = |b: weir::StreamingContextBuilder| b.build().unwrap_err().to_string();
    assert!(e(StreamingContext::builder()).contains("batch_interval is required"));
    assert!(
        e(StreamingContext::builder().batch_interval(Duration::from_micros(1500)))
            .contains("whole number")
    );
    assert!(e(StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(0))
    .contains("parallelism 0"));
}

/// Every stream-creating constructor refuses a name outside the whitelist
/// (`weir::names`) before it creates a file, and says which character.
#[test]
fn stream_names_outside_the_whitelist_are_refused_before_any_file_is_made() {
    let data = tempfile::tempdir().unwrap();
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .clock(Arc::new(ManualClock::new(0)))
        .data_dir(data.path())
        .build()
        .unwrap();
    let refused = |r: weir::Result<()>, want: &str| {
        let m = r.unwrap_err().to_string();
        assert!(m.contains(want), "{m}");
    };
    // Stream `a`'s producer table is `wal/a.producers`: a stream of that
    // name would have been that file.
    let m = ssc.wal_text_stream("a.producers").unwrap_err().to_string();
    assert!(
        m.contains("`a.producers` has `.` at character 2")
            && m.contains("ASCII letters, digits, `_` and `-`"),
        "{m}"
    );
    refused(ssc.wal_text_stream("../up").map(drop), "starts with `.`");
    refused(ssc.wal_text_stream("").map(drop), "cannot be empty");
    refused(ssc.wal_text_stream("_x").map(drop), "starts with `_`");
    refused(
        ssc.wal_text_stream("my stream").map(drop),
        "has a space at character 3",
    );
    refused(
        ssc.receiver_stream("in/x", Idle, weir::receiver::utf8)
            .map(drop),
        "has `/` at character 3",
    );
    refused(
        ssc.socket_text_stream("s.1", "127.0.0.1:9").map(drop),
        "has `.` at character 2",
    );
    let in_dir = tempfile::tempdir().unwrap();
    refused(
        ssc.text_file_stream("a.progress", in_dir.path()).map(drop),
        "has `.` at character 2",
    );
    refused(
        ssc.ingest_text_stream("a.producers", "127.0.0.1:0".parse().unwrap())
            .map(drop),
        "has `.` at character 2",
    );
    // Nothing was created for a refused name.
    let made: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(made.is_empty(), "{made:?}");
    // A plain name is accepted, at the path existing data directories use.
    ssc.wal_text_stream("tweets_in-2").unwrap();
    assert!(data.path().join("wal").join("tweets_in-2").is_dir());
}

/// A receiver that stores nothing and returns when asked to stop.
struct Idle;

impl weir::receiver::Receiver for Idle {
    fn run(
        self: Box<Self>,
        ctx: weir::receiver::ReceiverContext,
    ) -> Result<(), weir::dstream::BoxError> {
        while !ctx.is_stopping() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// The status page's queue, end to end: while a slow output holds the
/// first batch, `batch_queue` shows it in flight (with its input range)
/// and the batch times due behind it, oldest first; as they run the queue
/// drains to nothing.
#[test]
fn the_batch_queue_shows_the_batch_in_flight_and_those_due_behind_it() {
    use std::sync::mpsc;
    let h = ctx(1);
    let q = queue(vec![vec![1, 2, 3], vec![4], vec![5], vec![6]]);
    let (entered_tx, entered) = mpsc::sync_channel::<u64>(8);
    let (gate, gate_rx) = mpsc::sync_channel::<()>(8);
    let gate_rx = std::sync::Mutex::new(gate_rx);
    h.ssc
        .queue_stream(&q)
        .foreach_batch(move |t, _: Vec<i32>| {
            entered_tx.send(t).expect("the test listens");
            gate_rx
                .lock()
                .expect("gate")
                .recv_timeout(WAIT)
                .expect("the test opens the gate");
            Ok(())
        })
        .unwrap();
    assert!(h.ssc.batch_queue().is_none(), "nothing before start");
    h.ssc.start().unwrap();
    let idle = h.ssc.batch_queue().expect("started");
    assert!(idle.active.is_none() && idle.queued_total == 0, "{idle:?}");

    h.clock.advance(1000);
    assert_eq!(entered.recv_timeout(WAIT), Ok(1000));
    // Three more ticks pass while batch 1000 is held.
    h.clock.advance(3000);
    wait_for("three batches due behind the active one", || {
        h.ssc.batch_queue().is_some_and(|q| q.queued_total == 3)
    });
    let now = h.ssc.batch_queue().expect("started");
    let active = now.active.as_ref().expect("a batch in flight");
    assert_eq!((active.time_ms, active.attempt), (1000, 1));
    assert_eq!(active.ranges.len(), 1, "{active:?}");
    assert_eq!(now.queued_ms, vec![2000, 3000, 4000]);

    for t in [2000, 3000, 4000] {
        gate.send(()).unwrap();
        assert_eq!(entered.recv_timeout(WAIT), Ok(t));
        let q = h.ssc.batch_queue().expect("started");
        assert_eq!(q.active.as_ref().map(|a| a.time_ms), Some(t), "{q:?}");
        assert_eq!(
            q.queued_ms,
            ((t + 1000)..=4000).step_by(1000).collect::<Vec<_>>()
        );
    }
    gate.send(()).unwrap();
    h.ssc.await_batch(4000, WAIT).unwrap();
    wait_for("an empty queue", || {
        h.ssc
            .batch_queue()
            .is_some_and(|q| q.active.is_none() && q.queued_total == 0)
    });
    h.ssc.stop(false).unwrap();
}
