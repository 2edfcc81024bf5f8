//! Basic (non-keyed) transformations over several batches on a manual clock.

mod common;
use common::*;

use weir::dstream::Data;

fn v<T: Data>(x: &[T]) -> Vec<T> {
    x.to_vec()
}

#[test]
fn map_filter_flat_map_over_batches_with_an_empty_one() {
    let h = ctx(2);
    let q = queue(vec![v(&["a b", "c"]), vec![], v(&["d e f"])]);
    let words = h
        .ssc
        .queue_stream(&q)
        .flat_map(|l: &str| l.split(' ').map(String::from).collect::<Vec<_>>())
        .filter(|w| w != "e")
        .map(|w| w.to_uppercase());
    let out = collect(&words);
    h.run(4);
    assert_eq!(
        get(&out),
        vec![
            (1000, v(&["A".to_string(), "B".into(), "C".into()])),
            (2000, vec![]),
            (3000, v(&["D".to_string(), "F".into()])),
            (4000, vec![]),
        ]
    );
}

#[test]
fn flat_map_with_emitter_and_map_partitions_and_glom() {
    let h = ctx(2);
    let q = queue(vec![v(&[1, 2, 3, 4])]);
    let s = h.ssc.queue_stream(&q);
    let doubled = s.flat_map_with(|x: i32, out| {
        out(x);
        out(x * 10)
    });
    let sums = s.map_partitions(|p: Vec<i32>| vec![p.iter().sum::<i32>()]);
    let globs = s.glom();
    let (o1, o2, o3) = (collect(&doubled), collect(&sums), collect(&globs));
    h.run(1);
    assert_eq!(get(&o1), vec![(1000, v(&[1, 10, 2, 20, 3, 30, 4, 40]))]);
    // The source splits a batch into `partitions` contiguous chunks.
    assert_eq!(get(&o2), vec![(1000, v(&[3, 7]))]);
    assert_eq!(get(&o3), vec![(1000, vec![v(&[1, 2]), v(&[3, 4])])]);
}

#[test]
fn union_count_reduce_repartition() {
    let h = ctx(3);
    let a = h
        .ssc
        .queue_stream(&queue(vec![v(&[1, 2]), vec![], v(&[5])]));
    let b = h.ssc.queue_stream(&queue(vec![v(&[10]), vec![], vec![]]));
    let u = a.union(&b);
    let (ou, oc, or) = (
        collect(&u),
        collect(&u.count()),
        collect(&u.reduce(|x, y| x + y)),
    );
    let rp = collect(&u.repartition(1).glom());
    h.run(3);
    assert_eq!(
        get(&ou),
        vec![(1000, v(&[1, 2, 10])), (2000, vec![]), (3000, v(&[5]))]
    );
    assert_eq!(
        get(&oc),
        vec![(1000, v(&[3])), (2000, v(&[0])), (3000, v(&[1]))]
    );
    assert_eq!(
        get(&or),
        vec![(1000, v(&[13])), (2000, vec![]), (3000, v(&[5]))]
    );
    assert_eq!(
        get(&rp),
        vec![
            (1000, vec![v(&[1, 2, 10])]),
            (2000, vec![vec![]]),
            (3000, vec![v(&[5])])
        ]
    );
}

#[test]
fn count_by_value_counts_each_distinct_record() {
    let h = ctx(2);
    let q = queue(vec![v(&["x", "y", "x"]), vec![], v(&["y"])]);
    let out = collect(&h.ssc.queue_stream(&q).count_by_value());
    h.run(3);
    assert_eq!(
        sorted(&out),
        vec![
            (1000, v(&[("x", 2), ("y", 1)])),
            (2000, vec![]),
            (3000, v(&[("y", 1)]))
        ]
    );
}

#[test]
fn transform_sees_the_whole_batch_and_its_time() {
    let h = ctx(2);
    let a = h.ssc.queue_stream(&queue(vec![v(&[3, 1, 2]), v(&[9])]));
    let b = h.ssc.queue_stream(&queue(vec![v(&[100]), vec![]]));
    let sorted_with_time = a.transform(|t, mut xs: Vec<i32>| {
        xs.sort();
        xs.into_iter().map(|x| (t, x)).collect()
    });
    let joined = a.transform_with(&b, |_, xs: Vec<i32>, ys: Vec<i32>| {
        vec![xs.len() as i32 * 1000 + ys.iter().sum::<i32>()]
    });
    let (o1, o2) = (collect(&sorted_with_time), collect(&joined));
    h.run(2);
    assert_eq!(
        get(&o1),
        vec![
            (1000, v(&[(1000, 1), (1000, 2), (1000, 3)])),
            (2000, v(&[(2000, 9)]))
        ]
    );
    assert_eq!(get(&o2), vec![(1000, v(&[3100])), (2000, v(&[1000]))]);
}

#[test]
fn queue_mode_all_takes_everything_queued() {
    let h = ctx(1);
    let q = weir::Queue::with_mode(weir::QueueMode::All);
    q.push(vec![1, 2]).unwrap();
    q.push(vec![3]).unwrap();
    let out = collect(&h.ssc.queue_stream(&q));
    h.ssc.start().unwrap();
    h.advance(1);
    q.push(vec![4]).unwrap();
    h.advance(2);
    h.ssc.stop(false).unwrap();
    assert_eq!(
        get(&out),
        vec![(1000, v(&[1, 2, 3])), (2000, v(&[4])), (3000, vec![])]
    );
}
