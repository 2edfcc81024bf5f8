//! What the criterion benchmarks of the engine share (a module, not a
//! bench target: cargo only builds `benches/*.rs` and `benches/*/main.rs`).

use std::time::{Duration, Instant};

use weir::{ManualClock, Queue, StreamingContext};

/// Runs `iters` batches of `ssc` on `clock` (1 s batches) and returns the
/// time they took: each batch gets a clone of `batch` through `q`, pushed
/// before the measured time; `after_batch` runs after each, outside it.
pub fn timed_batches<T: Clone>(
    ssc: &StreamingContext,
    clock: &ManualClock,
    q: &Queue<T>,
    batch: &[T],
    iters: u64,
    mut after_batch: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        q.push(batch.to_vec()).expect("queue");
        let start = Instant::now();
        let t = clock.advance(1000);
        ssc.await_batch(t, Duration::from_secs(60)).expect("batch");
        total += start.elapsed();
        after_batch();
    }
    total
}
