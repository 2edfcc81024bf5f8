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

fn range(a: i32, b: i32) -> Vec<i32> {
    (a..=b).collect()
}

/// Spark's BasicOperationsSuite "StreamingContext.union": three streams
/// (`s`, `s + 4`, `s + 8`) over `1..4`, `101..104`, `201..204` give
/// `1..12`, `101..112`, `201..212`, in order.
#[test]
fn streaming_context_union_of_three_streams() {
    let h = ctx(2);
    let input = vec![range(1, 4), range(101, 104), range(201, 204)];
    let s = h.ssc.queue_stream(&queue(input));
    let u = h
        .ssc
        .union(&[s.clone(), s.map(|x| x + 4), s.map(|x| x + 8)]);
    let out = collect(&u);
    h.run(3);
    assert_eq!(
        get(&out),
        vec![
            (1000, range(1, 12)),
            (2000, range(101, 112)),
            (3000, range(201, 212))
        ]
    );
    let d = h.ssc.describe();
    let u = d.operators.last().expect("the union");
    assert_eq!(u.kind, "union");
    assert_eq!(u.inputs, ["queue", "queue/map", "queue/map#2"]);
    assert_eq!(u.name, "queue+queue/map+queue/map#2/union");
}

/// Spark's BasicOperationsSuite "StreamingContext.transform": the three
/// streams' batches handed to one function with the batch time, which
/// concatenates them (Spark's `union of RDDs`).
#[test]
fn streaming_context_transform_of_three_streams() {
    let h = ctx(2);
    let input = vec![range(1, 4), range(101, 104), range(201, 204)];
    let s = h.ssc.queue_stream(&queue(input));
    let streams = [s.clone(), s.map(|x| x + 4), s.map(|x| x + 8)];
    let concatenated = h.ssc.transform(&streams, |_, batches: Vec<Vec<i32>>| {
        batches.into_iter().flatten().collect::<Vec<i32>>()
    });
    let sizes = h.ssc.transform(&streams, |t, batches: Vec<Vec<i32>>| {
        vec![(t, batches.iter().map(Vec::len).collect::<Vec<_>>())]
    });
    let (o1, o2) = (collect(&concatenated), collect(&sizes));
    h.run(3);
    assert_eq!(
        get(&o1),
        vec![
            (1000, range(1, 12)),
            (2000, range(101, 112)),
            (3000, range(201, 212))
        ]
    );
    assert_eq!(get(&o2)[1], (2000, vec![(2000, vec![4, 4, 4])]));
}

/// A union or transform of nothing, of streams that slide differently or
/// of another context's stream is refused at `start()`, naming it.
#[test]
fn streaming_context_union_and_transform_refusals() {
    let h = ctx(1);
    let s = h.ssc.queue_stream(&queue::<i32>(vec![]));
    h.ssc.union::<i32>(&[]).print(1).unwrap();
    let w = s.window(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(2),
    );
    h.ssc
        .transform(&[s.clone(), w], |_, b: Vec<Vec<i32>>| b.concat())
        .print(1)
        .unwrap();
    let other = ctx(1);
    let foreign = other.ssc.queue_stream(&queue::<i32>(vec![]));
    h.ssc
        .union(&[s.clone(), foreign])
        .name("mixed")
        .print(1)
        .unwrap();
    let err = h.ssc.start().unwrap_err().to_string();
    assert!(
        err.contains(
            "operator `union` (union): a union of no streams: give it at least one stream"
        ),
        "{err}"
    );
    assert!(
        err.contains("operator `queue+queue/window/transform` (transform): inputs slide at different intervals (1000 ms and 2000 ms)"),
        "{err}"
    );
    assert!(
        err.contains("operator `mixed` (union): stream 2 of 2 belongs to another StreamingContext"),
        "{err}"
    );
}

/// A batch that does not split evenly over the partitions: the larger
/// chunks come last, Spark's `ParallelCollectionRDD.slice` rule (chunk
/// `i` starts at `i * len / n`), for the source's split, `repartition`
/// and `transform` alike.
#[test]
fn uneven_batches_put_the_larger_chunks_last_as_spark_does() {
    let h = ctx(3);
    let s = h.ssc.queue_stream(&queue(vec![range(1, 5), range(1, 7)]));
    let src = collect(&s.glom());
    let rep = collect(&s.repartition(4).glom());
    let tr = collect(&s.transform(|_, b: Vec<i32>| b).glom());
    h.run(2);
    let parts = |v: &[&[i32]]| v.iter().map(|p| p.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        get(&src),
        vec![
            (1000, parts(&[&[1], &[2, 3], &[4, 5]])),
            (2000, parts(&[&[1, 2], &[3, 4], &[5, 6, 7]])),
        ]
    );
    assert_eq!(
        get(&rep),
        vec![
            (1000, parts(&[&[1], &[2], &[3], &[4, 5]])),
            (2000, parts(&[&[1], &[2, 3], &[4, 5], &[6, 7]])),
        ]
    );
    assert_eq!(
        get(&tr),
        vec![
            (1000, parts(&[&[1], &[2, 3], &[4, 5]])),
            (2000, parts(&[&[1, 2], &[3, 4], &[5, 6, 7]])),
        ]
    );
}
