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

/// The process's peak resident memory (VmHWM) in KiB, from /proc.
pub fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// The flood tests' slow consumer of numbered text records: it sleeps per
/// batch and tallies records, their sum and the largest batch.
pub struct SlowTally {
    count: Arc<std::sync::atomic::AtomicU64>,
    sum: Arc<std::sync::atomic::AtomicU64>,
    max_batch: Arc<std::sync::atomic::AtomicU64>,
}

impl SlowTally {
    /// Attaches the consumer to `s`, sleeping `sleep` per batch.
    pub fn attach(s: &DStream<String>, sleep: Duration) -> SlowTally {
        use std::sync::atomic::Ordering::SeqCst;
        let t = SlowTally {
            count: Arc::default(),
            sum: Arc::default(),
            max_batch: Arc::default(),
        };
        let (count, sum, max_batch) = (t.count.clone(), t.sum.clone(), t.max_batch.clone());
        s.foreach_batch(move |_, recs| {
            std::thread::sleep(sleep); // the slow consumer
            max_batch.fetch_max(recs.len() as u64, SeqCst);
            count.fetch_add(recs.len() as u64, SeqCst);
            let s: u64 = recs.iter().map(|r| r.parse::<u64>().unwrap()).sum();
            sum.fetch_add(s, SeqCst);
            Ok(())
        })
        .unwrap();
        t
    }

    /// Waits (at most 240 s from `t0`) until `n` records were consumed.
    pub fn wait_for(&self, n: u64, t0: std::time::Instant) -> Duration {
        use std::sync::atomic::Ordering::SeqCst;
        while self.count.load(SeqCst) < n {
            assert!(
                t0.elapsed() < Duration::from_secs(240),
                "only {} of {n} records in 240 s",
                self.count.load(SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    }

    /// Checks records `0..n` each arrived exactly once, no batch held more
    /// than `batch_bytes_max` of `record_bytes`-byte records, and the peak
    /// memory stayed under `peak_mib_max`; prints the figures.
    pub fn check(
        &self,
        n: u64,
        record_bytes: u64,
        batch_bytes_max: u64,
        peak_mib_max: u64,
        (before_kib, took): (u64, Duration),
    ) {
        use std::sync::atomic::Ordering::SeqCst;
        let peak_kib = vm_hwm_kib();
        let max_batch = self.max_batch.load(SeqCst);
        eprintln!(
            "{n} records in {took:?}; largest batch {max_batch} records; VmHWM {} MiB (before start {} MiB)",
            peak_kib / 1024,
            before_kib / 1024
        );
        assert_eq!(self.count.load(SeqCst), n);
        assert_eq!(
            self.sum.load(SeqCst),
            n * (n - 1) / 2,
            "every record exactly once"
        );
        assert!(
            max_batch * record_bytes <= batch_bytes_max,
            "a batch of {max_batch} records exceeds the backlog bound"
        );
        assert!(
            peak_kib < peak_mib_max * 1024,
            "peak memory {} MiB exceeds {peak_mib_max} MiB",
            peak_kib / 1024
        );
    }
}
