//! Pair (keyed) operations over several batches: per-key combines, joins
//! with missing keys on either side, cogroup, empty batches.

mod common;
use common::*;

fn kv(xs: &[(&'static str, i32)]) -> Vec<(&'static str, i32)> {
    xs.to_vec()
}

#[test]
fn reduce_group_combine_by_key() {
    let h = ctx(3);
    let q = queue(vec![
        kv(&[("a", 1), ("b", 2), ("a", 3)]),
        vec![],
        kv(&[("b", 5), ("c", 1), ("b", 1)]),
    ]);
    let s = h.ssc.queue_stream(&q);
    let reduced = collect(&s.reduce_by_key(|x, y| x + y));
    let grouped = collect(&s.group_by_key());
    // Average per key via combine_by_key: (sum, count).
    let avg = collect(
        &s.combine_by_key(
            |v| (v, 1),
            |c: &mut (i32, i32), v| {
                c.0 += v;
                c.1 += 1
            },
            |c, o| {
                c.0 += o.0;
                c.1 += o.1
            },
        )
        .map_values(|(s, n)| s / n),
    );
    h.run(3);
    assert_eq!(
        sorted(&reduced),
        vec![
            (1000, kv(&[("a", 4), ("b", 2)])),
            (2000, vec![]),
            (3000, kv(&[("b", 6), ("c", 1)])),
        ]
    );
    assert_eq!(
        sorted(&grouped),
        vec![
            (1000, vec![("a", vec![1, 3]), ("b", vec![2])]),
            (2000, vec![]),
            (3000, vec![("b", vec![5, 1]), ("c", vec![1])]),
        ]
    );
    assert_eq!(
        sorted(&avg),
        vec![
            (1000, kv(&[("a", 2), ("b", 2)])),
            (2000, vec![]),
            (3000, kv(&[("b", 3), ("c", 1)])),
        ]
    );
}

#[test]
fn map_values_and_flat_map_values_keep_keys() {
    let h = ctx(2);
    let q = queue(vec![kv(&[("a", 2), ("b", 0)])]);
    let s = h.ssc.queue_stream(&q);
    let mv = collect(&s.map_values(|v| v * 10));
    let fmv = collect(&s.flat_map_values(|v| 0..v));
    h.run(1);
    assert_eq!(get(&mv), vec![(1000, kv(&[("a", 20), ("b", 0)]))]);
    assert_eq!(get(&fmv), vec![(1000, kv(&[("a", 0), ("a", 1)]))]);
}

#[test]
fn joins_with_missing_keys_on_either_side() {
    let h = ctx(2);
    let left = h.ssc.queue_stream(&queue(vec![
        kv(&[("a", 1), ("b", 2), ("a", 3)]),
        kv(&[("x", 9)]),
        vec![],
    ]));
    let right = h.ssc.queue_stream(&queue(vec![
        vec![("a", "A"), ("c", "C")],
        vec![],
        vec![("y", "Y")],
    ]));
    let inner = collect(&left.join(&right));
    let lo = collect(&left.left_outer_join(&right));
    let ro = collect(&left.right_outer_join(&right));
    let fo = collect(&left.full_outer_join(&right));
    let cg = collect(&left.cogroup(&right));
    h.run(3);
    assert_eq!(
        sorted(&inner),
        vec![
            (1000, vec![("a", (1, "A")), ("a", (3, "A"))]),
            (2000, vec![]),
            (3000, vec![]),
        ]
    );
    assert_eq!(
        sorted(&lo),
        vec![
            (
                1000,
                vec![
                    ("a", (1, Some("A"))),
                    ("a", (3, Some("A"))),
                    ("b", (2, None))
                ]
            ),
            (2000, vec![("x", (9, None))]),
            (3000, vec![]),
        ]
    );
    assert_eq!(
        sorted(&ro),
        vec![
            (
                1000,
                vec![
                    ("a", (Some(1), "A")),
                    ("a", (Some(3), "A")),
                    ("c", (None, "C"))
                ]
            ),
            (2000, vec![]),
            (3000, vec![("y", (None, "Y"))]),
        ]
    );
    assert_eq!(
        sorted(&fo),
        vec![
            (
                1000,
                vec![
                    ("a", (Some(1), Some("A"))),
                    ("a", (Some(3), Some("A"))),
                    ("b", (Some(2), None)),
                    ("c", (None, Some("C"))),
                ]
            ),
            (2000, vec![("x", (Some(9), None))]),
            (3000, vec![("y", (None, Some("Y")))]),
        ]
    );
    assert_eq!(
        sorted(&cg),
        vec![
            (
                1000,
                vec![
                    ("a", (vec![1, 3], vec!["A"])),
                    ("b", (vec![2], vec![])),
                    ("c", (vec![], vec!["C"])),
                ]
            ),
            (2000, vec![("x", (vec![9], vec![]))]),
            (3000, vec![("y", (vec![], vec!["Y"]))]),
        ]
    );
}

#[test]
fn keyed_output_order_is_first_appearance_within_a_partition() {
    // One partition: the order is exactly the order keys first appear.
    let h = ctx(1);
    let q = queue(vec![kv(&[
        ("z", 1),
        ("a", 1),
        ("m", 1),
        ("a", 1),
        ("z", 1),
    ])]);
    let out = collect(&h.ssc.queue_stream(&q).reduce_by_key(|x, y| x + y));
    h.run(1);
    assert_eq!(get(&out), vec![(1000, kv(&[("z", 2), ("a", 2), ("m", 1)]))]);
}

#[test]
fn keyed_output_is_identical_across_runs_and_thread_counts() {
    let run = |threads: usize| {
        let clock = std::sync::Arc::new(weir::ManualClock::new(0));
        let ssc = weir::StreamingContext::builder()
            .batch_interval(std::time::Duration::from_secs(1))
            .parallelism(threads)
            .partitions(4)
            .clock(clock.clone())
            .build()
            .unwrap();
        let lines = weir::testdata::tweet_lines(2000, 3);
        let q = queue(vec![lines]);
        let out = collect(
            &ssc.queue_stream(&q)
                .flat_map_with(|l: String, out| weir::Text::for_each_lowercase_word(&l, &mut *out))
                .count_by_value(),
        );
        ssc.start().unwrap();
        clock.advance(1000);
        ssc.await_batch(1000, WAIT).unwrap();
        ssc.stop(false).unwrap();
        get(&out)
    };
    let a = run(1);
    assert!(!a[0].1.is_empty());
    assert_eq!(a, run(2));
    assert_eq!(a, run(3));
}

/// Text keys on both sides of the inline limit (22 bytes inline, 23 shared)
/// through the map-side combine, with plain-data values (combined in place)
/// and owned values (combined through an `Option`).
#[test]
fn reduce_by_key_over_inline_and_shared_text_keys() {
    use weir::Text;
    let k22 = "k".repeat(22);
    let k23 = "k".repeat(23);
    let long = "a fairly long key that is stored in shared form".to_string();
    let keys = [k22.as_str(), k23.as_str(), long.as_str(), "s", k22.as_str()];
    let batch = |n: usize| -> Vec<Text> {
        (0..n)
            .flat_map(|_| keys.iter().map(|k| Text::new(k)))
            .collect()
    };
    let h = ctx(3);
    let q = queue(vec![batch(50), vec![], batch(7)]);
    let s = h.ssc.queue_stream(&q);
    let counts = collect(&s.map(|k| (k, 1u64)).reduce_by_key(|a, b| a + b));
    let strings = collect(
        &s.map(|k: Text| (k.clone(), k.as_str()[..1].to_string()))
            .reduce_by_key(|a, b| a + &b),
    );
    h.run(3);
    let want = |n: u64| {
        let mut v = vec![
            (Text::new(&k22), 2 * n),
            (Text::new(&k23), n),
            (Text::new(&long), n),
            (Text::new("s"), n),
        ];
        v.sort();
        v
    };
    assert_eq!(
        sorted(&counts),
        vec![(1000, want(50)), (2000, vec![]), (3000, want(7))]
    );
    let got = sorted(&strings);
    assert_eq!(got[0].1.len(), 4);
    for (k, v) in &got[2].1 {
        let n = if *k == Text::new(&k22) { 14 } else { 7 };
        assert_eq!(*v, k.as_str()[..1].repeat(n), "{k}");
    }
}

/// A reduce function that panics fails the batch (the in-place combine of
/// plain-data values leaves every slot valid); nothing is committed.
#[test]
fn a_panicking_reduce_function_fails_the_batch() {
    let h = ctx(2);
    let q = queue(vec![kv(&[("a", 1), ("a", 2), ("b", 1)])]);
    let out = collect(&h.ssc.queue_stream(&q).reduce_by_key(|x, y| {
        if x + y > 2 {
            panic!("injected reduce failure");
        }
        x + y
    }));
    h.ssc.start().unwrap();
    let t = h.clock.advance(1000);
    let err = h.ssc.await_batch(t, WAIT).unwrap_err().to_string();
    assert!(err.contains("injected reduce failure"), "{err}");
    assert!(h.ssc.stop(false).is_err());
    assert!(get(&out).is_empty());
}
