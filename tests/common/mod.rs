//! Shared test harness: a context on a manual clock (interval 1000 ms,
//! first batch at 1000), queue inputs, and per-batch collectors.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dstream::Data;
use weir::{DStream, ManualClock, Queue, StreamingContext};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct H {
    pub ssc: StreamingContext,
    pub clock: Arc<ManualClock>,
}

pub fn ctx(partitions: usize) -> H {
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .partitions(partitions)
        .clock(clock.clone())
        .build()
        .unwrap();
    H { ssc, clock }
}

pub type Out<T> = Arc<Mutex<Vec<(u64, Vec<T>)>>>;

/// Collects every batch the stream produces, as (time, records).
pub fn collect<T: Data>(s: &DStream<T>) -> Out<T> {
    let out: Out<T> = Arc::default();
    let o = out.clone();
    s.foreach_batch(move |t, recs| {
        o.lock().unwrap().push((t, recs));
        Ok(())
    })
    .unwrap();
    out
}

/// A queue pre-filled with one batch per element of `batches`.
pub fn queue<T: Clone + Send + Sync + 'static>(batches: Vec<Vec<T>>) -> Queue<T> {
    let q = Queue::new();
    for b in batches {
        q.push(b).unwrap();
    }
    q
}

impl H {
    /// Starts, runs `n` batches (1000 .. n*1000), stops.
    pub fn run(&self, n: u64) {
        self.ssc.start().unwrap();
        self.advance(n);
        self.ssc.stop(false).unwrap();
    }

    /// Advances the clock batch by batch, waiting for each.
    pub fn advance(&self, n: u64) {
        for _ in 0..n {
            let t = self.clock.advance(1000);
            self.ssc.await_batch(t, WAIT).unwrap();
        }
    }
}

/// The output with each batch sorted (for keyed outputs whose order
/// depends on partitioning).
pub fn sorted<T: Ord + Clone>(out: &Out<T>) -> Vec<(u64, Vec<T>)> {
    out.lock()
        .unwrap()
        .iter()
        .map(|(t, v)| {
            let mut v = v.clone();
            v.sort();
            (*t, v)
        })
        .collect()
}

pub fn get<T: Clone>(out: &Out<T>) -> Vec<(u64, Vec<T>)> {
    out.lock().unwrap().clone()
}

/// splitmix64: a deterministic pseudo-random sequence (kill moments in the
/// real-process tests), with no dependency.
pub fn next_rand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Polls `cond` every 2 ms until it holds; panics after [`WAIT`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
