//! Window operations over more batches than a window spans, with slides
//! of several batches, empty batches, and refusal of bad lengths.

mod common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use weir::checkpoint::MemoryCheckpointStore;
use weir::{ManualClock, StreamingContext};

const S: fn(u64) -> Duration = Duration::from_secs;

/// A context on `store` (partitions 2) whose manual clock starts at
/// `start_ms`, as a restarted process would build it.
fn on_store(store: &MemoryCheckpointStore, start_ms: u64) -> (StreamingContext, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(start_ms));
    let ssc = StreamingContext::builder()
        .batch_interval(S(1))
        .parallelism(2)
        .partitions(2)
        .clock(clock.clone())
        .checkpoint_store(Box::new(store.clone()))
        .build()
        .unwrap();
    (ssc, clock)
}

/// Starts `ssc`, runs `n` batches one by one, stops.
fn run_batches(ssc: &StreamingContext, clock: &ManualClock, n: u64) {
    ssc.start().unwrap();
    for _ in 0..n {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).unwrap();
    }
    ssc.stop(false).unwrap();
}

fn one(xs: &[i32]) -> Vec<i32> {
    xs.to_vec()
}

#[test]
fn window_slides_over_more_batches_than_it_spans() {
    let h = ctx(2);
    let q = queue(vec![one(&[1]), one(&[2]), one(&[3]), one(&[4]), vec![]]);
    let s = h.ssc.queue_stream(&q);
    let w31 = collect(&s.window(S(3), S(1)));
    let w22 = collect(&s.window(S(2), S(2)));
    let w13 = collect(&s.window(S(1), S(3)));
    h.run(7);
    let sorted31: Vec<(u64, Vec<i32>)> = sorted(&w31);
    assert_eq!(
        sorted31,
        vec![
            (1000, one(&[1])),
            (2000, one(&[1, 2])),
            (3000, one(&[1, 2, 3])),
            (4000, one(&[2, 3, 4])),
            (5000, one(&[3, 4])),
            (6000, one(&[4])),
            (7000, vec![]),
        ]
    );
    // Slide of two batches: output only at 2000, 4000, 6000.
    assert_eq!(
        sorted(&w22),
        vec![(2000, one(&[1, 2])), (4000, one(&[3, 4])), (6000, vec![])]
    );
    // Slide longer than the window: batches in between are skipped.
    assert_eq!(sorted(&w13), vec![(3000, one(&[3])), (6000, vec![])]);
}

#[test]
fn count_and_reduce_by_window() {
    let h = ctx(2);
    let q = queue(vec![one(&[1, 1]), one(&[5]), vec![], one(&[2])]);
    let s = h.ssc.queue_stream(&q);
    let c = collect(&s.count_by_window(S(2), S(1)));
    let r = collect(&s.reduce_by_window(|a, b| a + b, S(3), S(2)));
    h.run(5);
    assert_eq!(
        get(&c),
        vec![
            (1000, vec![2]),
            (2000, vec![3]),
            (3000, vec![1]),
            (4000, vec![1]),
            (5000, vec![1]),
        ]
    );
    // Windows (t-3s, t] at t = 2000 and 4000.
    assert_eq!(get(&r), vec![(2000, vec![7]), (4000, vec![7])]);
}

/// Spark's WindowOperationsSuite "countByWindow" (window 2 s, slide 1 s,
/// input `[1] [1] [1,2] [0] [] []`, expected `1 2 3 3 1 0`), and Spark's
/// rule behind it: `countByWindow` is `map(_ => 1L).reduceByWindow(_ + _,
/// _ - _)`, so a window before the stream's first record is an empty
/// batch (weir emitted `[0]`), and a window that became empty after it is
/// `[0]`.
#[test]
fn count_by_window_follows_spark() {
    let h = ctx(2);
    let spark_in = vec![
        one(&[1]),
        one(&[1]),
        one(&[1, 2]),
        one(&[0]),
        vec![],
        vec![],
    ];
    let spark = h.ssc.queue_stream(&queue(spark_in));
    let late_in = vec![vec![], vec![], one(&[7]), vec![], vec![], vec![]];
    let late = h.ssc.queue_stream(&queue(late_in));
    let c = collect(&spark.count_by_window(S(2), S(1)));
    let l21 = collect(&late.count_by_window(S(2), S(1)));
    let l42 = collect(&late.count_by_window(S(4), S(2)));
    h.run(6);
    let values: Vec<Vec<u64>> = get(&c).into_iter().map(|(_, v)| v).collect();
    assert_eq!(
        values,
        vec![vec![1], vec![2], vec![3], vec![3], vec![1], vec![0]]
    );
    assert_eq!(
        get(&l21),
        vec![
            (1000, vec![]),
            (2000, vec![]),
            (3000, vec![1]),
            (4000, vec![1]),
            (5000, vec![0]),
            (6000, vec![0]),
        ]
    );
    assert_eq!(
        get(&l42),
        vec![(2000, vec![]), (4000, vec![1]), (6000, vec![1])]
    );
    // Its state is one count per batch (Spark's reduced windowed stream),
    // under the operator's own name.
    let d = h.ssc.describe();
    let op = |name: &str| d.operators.iter().find(|o| o.name == name).cloned();
    let w = op("queue/count_by_window").expect("count_by_window");
    assert_eq!(w.kind, "count_by_window");
    assert_eq!(w.params.get("window_ms").map(String::as_str), Some("2000"));
    assert!(op("queue/count_by_window.reduced").is_some_and(|o| o.stateful));
    assert!(op("queue#2/count_by_window#2.reduced.panes").is_some_and(|o| o.stateful));
}

/// Spark's `reduceByWindow(reduce, invReduce, w, s)`: the same values as
/// the plain reduce while the window holds records, then the "zero" the
/// inverse leaves (the plain reduce emits nothing for an empty window);
/// nothing before the first record.
#[test]
fn reduce_by_window_with_inverse() {
    let h = ctx(2);
    let q = queue(vec![vec![], one(&[1, 1]), one(&[5]), vec![], one(&[2])]);
    let s = h.ssc.queue_stream(&q);
    let inv31 = collect(&s.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, S(3), S(1)));
    let plain31 = collect(&s.reduce_by_window(|a, b| a + b, S(3), S(1)));
    let inv42 = collect(&s.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, S(4), S(2)));
    h.run(10);
    assert_eq!(
        get(&inv31),
        vec![
            (1000, vec![]),
            (2000, vec![2]),
            (3000, vec![7]),
            (4000, vec![7]),
            (5000, vec![7]),
            (6000, vec![2]),
            (7000, vec![2]),
            (8000, vec![0]),
            (9000, vec![0]),
            (10000, vec![0]),
        ]
    );
    assert_eq!(
        get(&plain31),
        vec![
            (1000, vec![]),
            (2000, vec![2]),
            (3000, vec![7]),
            (4000, vec![7]),
            (5000, vec![7]),
            (6000, vec![2]),
            (7000, vec![2]),
            (8000, vec![]),
            (9000, vec![]),
            (10000, vec![]),
        ]
    );
    // Slide of two batches: at 4000 the batches 3000 and 4000 enter; at
    // 6000 1000..2000 leave (7 - 2) and 5000..6000 enter (+ 2); at 8000
    // 3000..4000 leave (7 - 5); at 10000 5000..6000 leave (2 - 2).
    assert_eq!(
        get(&inv42),
        vec![
            (2000, vec![2]),
            (4000, vec![7]),
            (6000, vec![7]),
            (8000, vec![2]),
            (10000, vec![0]),
        ]
    );
    let d = h.ssc.describe();
    let op = |name: &str| {
        d.operators
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no operator {name}"))
            .clone()
    };
    let w = op("queue/reduce_by_window");
    assert_eq!(w.kind, "reduce_by_window");
    assert_eq!(w.params.get("window_ms").map(String::as_str), Some("3000"));
    assert_eq!(w.params.get("slide_ms").map(String::as_str), Some("1000"));
    assert_eq!(w.params.get("inverse").map(String::as_str), Some("true"));
    assert_eq!(w.params.get("filter"), None);
    assert!(!w.stateful);
    assert!(op("queue/reduce_by_window.reduced").stateful);
    assert!(op("queue/reduce_by_window.reduced.panes").stateful);
    assert_eq!(op("queue/reduce_by_window#2").params.get("inverse"), None);
    assert_eq!(
        op("queue/reduce_by_window#3")
            .params
            .get("window_ms")
            .map(String::as_str),
        Some("4000")
    );
}

/// The inverse window's value survives a restart (a new context on the
/// same checkpoint store) and keeps being updated incrementally.
#[test]
fn reduce_by_window_with_inverse_survives_a_restart() {
    let store = MemoryCheckpointStore::new();
    let q = queue(vec![one(&[1]), one(&[2]), one(&[4]), one(&[8])]);
    let sum2 = |ssc: &StreamingContext| {
        collect(
            &ssc.queue_stream(&q)
                .reduce_by_window_inv(|a, b| a + b, |a, b| a - b, S(2), S(1))
                .name("sum2"),
        )
    };
    let (ssc, clock) = on_store(&store, 0);
    let out = sum2(&ssc);
    run_batches(&ssc, &clock, 2);
    assert_eq!(get(&out), vec![(1000, vec![1]), (2000, vec![3])]);
    let ops = store.operators();
    assert!(ops.contains(&"sum2.reduced".to_string()), "{ops:?}");
    assert!(ops.contains(&"sum2.reduced.panes".to_string()), "{ops:?}");
    let (ssc, clock) = on_store(&store, 2000);
    let out = sum2(&ssc);
    run_batches(&ssc, &clock, 3);
    // 3000: 2 + 4; 4000: 4 + 8; 5000: 8 + nothing.
    assert_eq!(
        get(&out),
        vec![(3000, vec![6]), (4000, vec![12]), (5000, vec![8])]
    );
}

fn pairs(words: &[&str]) -> Vec<(String, i64)> {
    words.iter().map(|w| (w.to_string(), 1)).collect()
}

/// Window state must be persistable, so keys are owned `String`s; this
/// turns hand-written `&str` expectations into owned ones.
fn owned<V: Clone>(v: Vec<(u64, Vec<(&str, V)>)>) -> Vec<(u64, Vec<(String, V)>)> {
    v.into_iter()
        .map(|(t, xs)| (t, xs.into_iter().map(|(k, x)| (k.to_string(), x)).collect()))
        .collect()
}

#[test]
fn reduce_by_key_and_window_with_and_without_inverse() {
    let h = ctx(2);
    let q = queue(vec![
        pairs(&["a", "a", "b"]),
        pairs(&["b"]),
        vec![],
        pairs(&["a"]),
        vec![],
    ]);
    let s = h.ssc.queue_stream(&q);
    let plain = collect(&s.reduce_by_key_and_window(|a, b| a + b, S(3), S(1)));
    let inv = collect(
        &s.reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            S(3),
            S(1),
            None::<fn(&(String, i64)) -> bool>,
        )
        .name("inv"),
    );
    let filtered = collect(
        &s.reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            S(3),
            S(1),
            Some(|kv: &(String, i64)| kv.1 > 0),
        )
        .name("inv_filtered"),
    );
    let words = h.ssc.queue_stream(&queue(vec![
        vec!["a".to_string(), "a".into(), "b".into()],
        vec!["b".into()],
        vec![],
        vec!["a".into()],
        vec![],
    ]));
    let cbv = collect(&words.count_by_value_and_window(S(3), S(1)));
    h.run(7);
    let expected_plain = vec![
        (1000, vec![("a", 2), ("b", 1)]),
        (2000, vec![("a", 2), ("b", 2)]),
        (3000, vec![("a", 2), ("b", 2)]),
        (4000, vec![("a", 1), ("b", 1)]),
        (5000, vec![("a", 1)]),
        (6000, vec![("a", 1)]),
        (7000, vec![]),
    ];
    let expected_plain = owned(expected_plain);
    assert_eq!(sorted(&plain), expected_plain);
    // With an inverse and no filter, keys stay with value 0 (as in Spark).
    assert_eq!(
        sorted(&inv),
        owned(vec![
            (1000, vec![("a", 2), ("b", 1)]),
            (2000, vec![("a", 2), ("b", 2)]),
            (3000, vec![("a", 2), ("b", 2)]),
            (4000, vec![("a", 1), ("b", 1)]),
            (5000, vec![("a", 1), ("b", 0)]),
            (6000, vec![("a", 1), ("b", 0)]),
            (7000, vec![("a", 0), ("b", 0)]),
        ])
    );
    assert_eq!(sorted(&filtered), expected_plain);
    let cbv: Vec<(u64, Vec<(String, u64)>)> = sorted(&cbv);
    let want: Vec<(u64, Vec<(String, u64)>)> = expected_plain
        .iter()
        .map(|(t, v)| (*t, v.iter().map(|(k, c)| (k.clone(), *c as u64)).collect()))
        .collect();
    assert_eq!(cbv, want);
}

#[test]
fn inverse_window_with_a_slide_of_two_batches() {
    let h = ctx(1);
    let q = queue(vec![
        pairs(&["a"]),
        pairs(&["a", "b"]),
        pairs(&["b"]),
        vec![],
        pairs(&["c"]),
        vec![],
    ]);
    let s = h.ssc.queue_stream(&q);
    let out = collect(&s.reduce_by_key_and_window_inv(
        |a, b| a + b,
        |a, b| a - b,
        S(4),
        S(2),
        Some(|kv: &(String, i64)| kv.1 != 0),
    ));
    h.run(8);
    assert_eq!(
        get(&out),
        owned(vec![
            (2000, vec![("a", 2), ("b", 1)]),
            (4000, vec![("a", 2), ("b", 2)]),
            (6000, vec![("b", 1), ("c", 1)]),
            (8000, vec![("c", 1)]),
        ])
    );
}

#[test]
fn group_by_key_and_window_keeps_values_in_order() {
    let h = ctx(1);
    let q = queue(vec![
        vec![("k".to_string(), 1)],
        vec![("k".to_string(), 2)],
        vec![("j".to_string(), 3)],
    ]);
    let out = collect(&h.ssc.queue_stream(&q).group_by_key_and_window(S(2), S(1)));
    h.run(3);
    assert_eq!(
        get(&out),
        owned(vec![
            (1000, vec![("k", vec![1])]),
            (2000, vec![("k", vec![1, 2])]),
            (3000, vec![("k", vec![2]), ("j", vec![3])]),
        ])
    );
}

#[test]
fn bad_window_and_slide_lengths_are_refused_at_start() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue::<i32>(vec![]));
    s.window(Duration::from_millis(1500), S(1))
        .print(1)
        .unwrap();
    s.map(|x| x)
        .window(S(2), Duration::from_millis(500))
        .name("halfslide")
        .print(1)
        .unwrap();
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(
        err.contains("operator `queue/window` (window): window length 1500 ms is not a multiple of the batch interval 1000 ms"),
        "{err}"
    );
    assert!(
        err.contains("operator `halfslide` (window): slide length 500 ms is not a multiple of the batch interval 1000 ms"),
        "{err}"
    );
}

#[test]
fn window_of_a_windowed_stream_must_align_with_its_slide() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue::<i32>(vec![]));
    s.window(S(2), S(2)).window(S(3), S(2)).print(1).unwrap();
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(
        err.contains("window length 3000 ms is not a multiple of its input's slide 2000 ms"),
        "{err}"
    );
}

#[test]
fn union_of_streams_with_different_slides_is_refused() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue::<i32>(vec![]));
    s.union(&s.window(S(2), S(2))).print(1).unwrap();
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(
        err.contains("inputs slide at different intervals (1000 ms and 2000 ms)"),
        "{err}"
    );
}

/// A window rebuilt after a restart: its panes come back from the
/// checkpoint store (the source is not re-read for past batches).
#[test]
fn window_contents_survive_a_restart_through_their_panes() {
    let store = MemoryCheckpointStore::new();
    let q = queue(vec![one(&[1]), one(&[2]), one(&[3]), one(&[4])]);
    let last3 =
        |ssc: &StreamingContext| collect(&ssc.queue_stream(&q).window(S(3), S(1)).name("last3"));
    let (ssc, clock) = on_store(&store, 0);
    let out = last3(&ssc);
    run_batches(&ssc, &clock, 2);
    assert_eq!(get(&out), vec![(1000, one(&[1])), (2000, one(&[1, 2]))]);
    assert!(store.operators().contains(&"last3.panes".to_string()));

    let (ssc, clock) = on_store(&store, 2000);
    let out = last3(&ssc);
    run_batches(&ssc, &clock, 2);
    assert_eq!(
        sorted(&out),
        vec![(3000, one(&[1, 2, 3])), (4000, one(&[2, 3, 4]))]
    );
}
