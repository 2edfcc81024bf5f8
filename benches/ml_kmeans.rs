//! Streaming k-means training throughput (issue 19): batches of 1,000,000
//! ten-dimensional points, k = 10, decay 0.9 per batch, measured three
//! ways in the same run on the same points:
//! - `hand loop`: a hand-written single-threaded loop of the same update
//!   (plain squared distances to every center, first index on ties, sums
//!   and counts, then Spark's weighted-mean step); the baseline;
//! - `model.update`: `weir::ml::KMeansModel::update` on one thread
//!   (Spark's norm-bounded nearest-center search, Spark's exact order);
//! - `train_on`: the streaming operator in a `StreamingContext` (2
//!   partitions, 2 threads, manual clock): the batch reaches the operator
//!   through a queue (pushed outside the measured time), is summed
//!   partition by partition in parallel, and the model is committed as
//!   operator state (in memory: no data directory).
//!
//! - the engine's delivery alone: the same batches through the same queue
//!   into `count()`, to show what of `train_on`'s time is not training.
//!
//! Three rounds, each measuring every way in turn (a noisy stretch of the
//! machine hits all alike); prints points/s (median batch of the median
//! round) and each round's ratio to the hand loop.
//! `cargo bench --bench ml_kmeans` (about two minutes);
//! `WEIR_BENCH_QUICK=1` for 100,000-point batches.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::ml::{KMeansModel, StreamingKMeans, TimeUnit};
use weir::{ManualClock, Queue, StreamingContext};

const K: usize = 10;
const DIM: usize = 10;
const DECAY: f64 = 0.9;
const BATCHES: usize = 5;

/// A deterministic point cloud: ten blobs.
fn points(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let c = (i % K) as f64 * 3.0;
            (0..DIM)
                .map(|j| c + (j as f64) * 0.1 + next() - 0.5)
                .collect()
        })
        .collect()
}

fn initial() -> KMeansModel {
    let centers = (0..K)
        .map(|c| (0..DIM).map(|j| c as f64 * 2.5 + j as f64 * 0.1).collect())
        .collect();
    KMeansModel {
        centers,
        weights: vec![1.0; K],
    }
}

/// The baseline: the same update, written plainly.
fn hand_update(m: &mut KMeansModel, batch: &[Vec<f64>]) {
    let mut sums = vec![vec![0.0; DIM]; K];
    let mut counts = [0u64; K];
    for p in batch {
        let mut best = (0, f64::INFINITY);
        for (i, c) in m.centers.iter().enumerate() {
            let d: f64 = c.iter().zip(p).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.1 {
                best = (i, d);
            }
        }
        for (s, x) in sums[best.0].iter_mut().zip(p) {
            *s += x;
        }
        counts[best.0] += 1;
    }
    for w in &mut m.weights {
        *w *= DECAY;
    }
    for c in 0..K {
        if counts[c] == 0 {
            continue;
        }
        let n = counts[c] as f64;
        m.weights[c] += n;
        let lambda = n / m.weights[c].max(1e-16);
        for (x, s) in m.centers[c].iter_mut().zip(&sums[c]) {
            *x = *x * (1.0 - lambda) + (lambda / n) * s;
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Points/s of each batch of `f` over `batches`.
fn rates(batches: &[Vec<Vec<f64>>], mut f: impl FnMut(&[Vec<f64>])) -> Vec<f64> {
    batches
        .iter()
        .map(|b| {
            let t = Instant::now();
            f(b);
            b.len() as f64 / t.elapsed().as_secs_f64()
        })
        .collect()
}

/// A 2-partition, 2-thread context on a manual clock.
fn context() -> (StreamingContext, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .partitions(2)
        .clock(clock.clone())
        .build()
        .expect("context");
    (ssc, clock)
}

/// Points/s of each batch through `train_on`, and the final model.
fn operator_rates(batches: &[Vec<Vec<f64>>]) -> (Vec<f64>, KMeansModel) {
    let (ssc, clock) = context();
    let q = Queue::new();
    let trained = StreamingKMeans::new(K)
        .decay_factor(DECAY)
        .time_unit(TimeUnit::Batches)
        .initial_centers(initial().centers, initial().weights)
        .expect("centers")
        .train_on(&ssc.queue_stream(&q))
        .expect("train_on");
    trained
        .models()
        .foreach_batch(|_, _| Ok(()))
        .expect("output");
    ssc.start().expect("start");
    let mut out = Vec::new();
    for b in batches {
        let n = b.len() as f64;
        let t = support::timed_batches(&ssc, &clock, &q, b, 1, || {});
        out.push(n / t.as_secs_f64());
    }
    ssc.stop(false).expect("stop");
    (out, trained.latest_model())
}

/// Points/s of the engine's delivery alone: the same queue batches into
/// a `count()` (each point cloned out of the queue, as for `train_on`).
fn delivery_rates(batches: &[Vec<Vec<f64>>]) -> Vec<f64> {
    let (ssc, clock) = context();
    let q = Queue::new();
    ssc.queue_stream(&q)
        .count()
        .foreach_batch(|_, _| Ok(()))
        .expect("output");
    ssc.start().expect("start");
    let out = batches
        .iter()
        .map(|b| {
            b.len() as f64 / support::timed_batches(&ssc, &clock, &q, b, 1, || {}).as_secs_f64()
        })
        .collect();
    ssc.stop(false).expect("stop");
    out
}

/// Rounds of the four measurements, interleaved so that a noisy stretch
/// of the machine hits every way alike.
const ROUNDS: usize = 3;

/// One round: the median points/s of each way (asserting that the three
/// trainers ended with the same model).
fn round(batches: &[Vec<Vec<f64>>]) -> [f64; 4] {
    let mut hand = initial();
    let hand_rates = rates(batches, |b| hand_update(&mut hand, b));
    let mut model = initial();
    let model_rates = rates(batches, |b| {
        model.update(b, DECAY, TimeUnit::Batches).expect("update");
    });
    let (op_rates, op_model) = operator_rates(batches);
    let delivery = delivery_rates(batches);
    let close = |a: &KMeansModel, b: &KMeansModel| {
        a.centers
            .iter()
            .flatten()
            .zip(b.centers.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= 1e-9 * y.abs().max(1.0))
    };
    assert!(
        close(&model, &hand) && close(&op_model, &hand),
        "the three computed the same model"
    );
    [
        median(hand_rates),
        median(model_rates),
        median(op_rates),
        median(delivery),
    ]
}

fn main() {
    let n = if std::env::var_os("WEIR_BENCH_QUICK").is_some() {
        100_000
    } else {
        1_000_000
    };
    let batches: Vec<Vec<Vec<f64>>> = (0..BATCHES).map(|b| points(n, b as u64 + 1)).collect();
    let rounds: Vec<[f64; 4]> = (0..ROUNDS).map(|_| round(&batches)).collect();
    println!("k-means training, {BATCHES} batches of {n} points, {DIM} dimensions, k = {K}, {ROUNDS} rounds");
    println!("| way | points/s (median batch, median round) | ratio to the hand loop (median; rounds) |\n|---|---:|---:|");
    let names = [
        "hand-written loop, 1 thread",
        "KMeansModel::update, 1 thread",
        "train_on operator, 2 partitions",
        "(engine delivery alone: queue to count(), 2 partitions)",
    ];
    for (i, name) in names.iter().enumerate() {
        let ratios: Vec<f64> = rounds.iter().map(|r| r[i] / r[0]).collect();
        let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let rate = median(rounds.iter().map(|r| r[i]).collect());
        println!(
            "| {name} | {rate:.0} | {:.2} ({}) |",
            median(ratios),
            shown.join(", ")
        );
    }
}
