//! The receiver core: `store` is durable on return, backpressure blocks
//! `store` until a batch commits, the release hook runs before cleanup (and
//! a failing hook keeps the segments), a failing receiver stops the context
//! naming its stream, a graceful stop stops receivers then drains, and the
//! rate limit holds. Test receivers are defined here; batches are driven by
//! a manual clock; every wait is bounded.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{collect, get, wait_for, WAIT};
use weir::dstream::BoxError;
use weir::receiver::{Receiver, ReceiverContext, ReceiverError};
use weir::wal::WalConfig;
use weir::{ManualClock, StreamingContext};

fn ctx(dir: &std::path::Path, clock: Arc<ManualClock>, backlog: u64) -> StreamingContext {
    StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .partitions(2)
        .clock(clock)
        .data_dir(dir)
        .backlog_bytes_max(backlog)
        .wal_config(WalConfig {
            segment_bytes_max: 256,
            record_bytes_max: 128,
            ..WalConfig::default()
        })
        .build()
        .unwrap()
}

/// Stores the given records one `store` per entry, reporting each result,
/// then waits for the stop.
struct Scripted {
    records: Vec<String>,
    report: mpsc::Sender<(std::ops::Range<u64>, u64)>,
}

impl Receiver for Scripted {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        for r in &self.records {
            let range = ctx.store(&[r.as_bytes()])?;
            // Durability is checked at the moment `store` returned.
            let durable = ctx.wal().durable_end();
            let _ = self.report.send((range, durable));
        }
        while !ctx.is_stopping() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[test]
fn store_returns_after_fsync_and_records_reach_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 1 << 20);
    let (tx, rx) = mpsc::channel();
    let records: Vec<String> = (0..5).map(|i| format!("r{i}")).collect();
    let s = ssc
        .receiver_stream(
            "in",
            Scripted {
                records: records.clone(),
                report: tx,
            },
            weir::receiver::utf8,
        )
        .unwrap();
    let out = collect(&s);
    ssc.start().unwrap();
    for i in 0..5u64 {
        let (range, durable) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(range, i..i + 1);
        assert!(
            durable >= range.end,
            "store returned before fsync: durable {durable}, range {range:?}"
        );
    }
    clock.advance(1000);
    ssc.await_batch(1000, WAIT).unwrap();
    ssc.stop(false).unwrap();
    assert_eq!(get(&out), vec![(1000, records)]);
}

/// Stores one record per call, counting calls that returned.
struct Counter {
    stored: Arc<AtomicU64>,
    total: u64,
}

impl Receiver for Counter {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        for i in 0..self.total {
            let rec = format!("{i:04}");
            match ctx.store(&[rec.as_bytes()]) {
                Ok(_) => {
                    self.stored.fetch_add(1, Ordering::SeqCst);
                }
                Err(ReceiverError::Stopping) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        while !ctx.is_stopping() {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

/// A stream `in` fed by a [`Counter`] of `total` records, collected.
fn counting(ssc: &StreamingContext, total: u64) -> (Arc<AtomicU64>, common::Out<String>) {
    let stored = Arc::new(AtomicU64::new(0));
    let s = ssc
        .receiver_stream(
            "in",
            Counter {
                stored: stored.clone(),
                total,
            },
            weir::receiver::utf8,
        )
        .unwrap();
    (stored, collect(&s))
}

#[test]
fn backpressure_blocks_store_until_a_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    // 4-byte records, at most 8 bytes of backlog: two stores, then a wait.
    let ssc = ctx(dir.path(), clock.clone(), 8);
    let (stored, out) = counting(&ssc, 6);
    ssc.start().unwrap();
    wait_for("two stores", || stored.load(Ordering::SeqCst) == 2);
    // Blocked: nothing more gets stored while no batch commits (a bounded
    // look; a wrong implementation stores the rest within microseconds).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        stored.load(Ordering::SeqCst),
        2,
        "store did not wait for the backlog"
    );
    for (i, t) in [1000u64, 2000, 3000].into_iter().enumerate() {
        clock.advance(1000);
        ssc.await_batch(t, WAIT).unwrap();
        let want = 2 * (i as u64 + 2);
        wait_for("the next two stores", || {
            stored.load(Ordering::SeqCst) >= want.min(6)
        });
    }
    clock.advance(1000);
    ssc.await_batch(4000, WAIT).unwrap();
    ssc.stop(false).unwrap();
    let got: Vec<String> = get(&out).into_iter().flat_map(|(_, r)| r).collect();
    let want: Vec<String> = (0..6).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, want);
    let sizes: Vec<usize> = get(&out).iter().map(|(_, r)| r.len()).collect();
    assert_eq!(sizes, vec![2, 2, 2, 0]);
}

/// Waits in `wait_backlog_below` and reports `backlog_full`.
struct Prober {
    seen: Arc<Mutex<Vec<(bool, bool)>>>,
}

impl Receiver for Prober {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        ctx.store(&[b"0123456789"])?;
        // Storing nothing returns at once, even with the backlog full.
        if ctx.store(&[])? != (1..1) {
            return Err("an empty store must return the empty range at the end".into());
        }
        let full = ctx.backlog_full();
        let below = ctx.wait_backlog_below(Duration::from_millis(50));
        self.seen.lock().unwrap().push((full, below));
        let below = ctx.wait_backlog_below(WAIT);
        self.seen.lock().unwrap().push((ctx.backlog_full(), below));
        Ok(())
    }
}

#[test]
fn backlog_full_and_wait_backlog_below_follow_commits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 10);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = ssc
        .receiver_stream("in", Prober { seen: seen.clone() }, weir::receiver::utf8)
        .unwrap();
    let _out = collect(&s);
    ssc.start().unwrap();
    wait_for("the first probe", || seen.lock().unwrap().len() == 1);
    assert_eq!(seen.lock().unwrap()[0], (true, false));
    clock.advance(1000);
    ssc.await_batch(1000, WAIT).unwrap();
    wait_for("the second probe", || seen.lock().unwrap().len() == 2);
    assert_eq!(seen.lock().unwrap()[1], (false, true));
    ssc.stop(false).unwrap();
}

#[test]
fn a_blocked_store_returns_stopping_when_the_context_stops() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 4);
    let (stored, _out) = counting(&ssc, 100);
    ssc.start().unwrap();
    wait_for("one store", || stored.load(Ordering::SeqCst) == 1);
    let t0 = Instant::now();
    ssc.stop(false).unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t0.elapsed()
    );
    assert_eq!(stored.load(Ordering::SeqCst), 1);
}

/// Stores records until stopped, counting them.
struct Endless {
    stored: Arc<AtomicU64>,
}

impl Receiver for Endless {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        let mut i = 0u64;
        loop {
            let rec = i.to_string();
            match ctx.store(&[rec.as_bytes()]) {
                Ok(_) => {
                    self.stored.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                Err(ReceiverError::Stopping) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[test]
fn graceful_stop_stops_the_receiver_then_drains_everything_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 1 << 30);
    let stored = Arc::new(AtomicU64::new(0));
    let s = ssc
        .receiver_stream(
            "in",
            Endless {
                stored: stored.clone(),
            },
            weir::receiver::utf8,
        )
        .unwrap();
    let out = collect(&s);
    ssc.start().unwrap();
    wait_for("some stores", || stored.load(Ordering::SeqCst) >= 20);
    // Drive the clock from another thread while the graceful stop drains.
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (clock, done) = (clock.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                clock.advance(1000);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    ssc.stop(true).unwrap();
    done.store(true, Ordering::SeqCst);
    ticker.join().unwrap();
    let got: Vec<u64> = get(&out)
        .into_iter()
        .flat_map(|(_, r)| r)
        .map(|s| s.parse().unwrap())
        .collect();
    let n = stored.load(Ordering::SeqCst);
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

/// Fails after storing one record.
struct Failing;

impl Receiver for Failing {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        ctx.store(&[b"kept"])?;
        Err("upstream said no".into())
    }
}

/// Panics at once.
struct Panicking;

impl Receiver for Panicking {
    fn run(self: Box<Self>, _ctx: ReceiverContext) -> Result<(), BoxError> {
        panic!("receiver bug")
    }
}

#[test]
fn a_failing_receiver_stops_the_context_naming_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 1 << 20);
    let s = ssc
        .receiver_stream("orders", Failing, weir::receiver::utf8)
        .unwrap();
    let _out = collect(&s);
    ssc.start().unwrap();
    assert!(ssc.await_termination_or_timeout(WAIT).is_err_and(|e| {
        let m = e.to_string();
        m.contains("stream `orders`") && m.contains("upstream said no")
    }));
    let err = ssc.stop(false).unwrap_err().to_string();
    assert!(err.contains("orders"), "{err}");
    drop(ssc);
    // The record stored before the failure is in the log. Read without
    // opening it: after a failed receiver the dropped context still holds
    // its log open (and so its lock) in this process.
    let report =
        weir::wal::verify_dir(&weir::storage::RealFs, &dir.path().join("wal/orders")).unwrap();
    assert!(report.problem.is_none());
    assert_eq!(report.end_lsn(), Some(1));
}

#[test]
fn a_panicking_receiver_stops_the_context_naming_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock, 1 << 20);
    let s = ssc
        .receiver_stream("clicks", Panicking, weir::receiver::utf8)
        .unwrap();
    let _out = collect(&s);
    ssc.start().unwrap();
    let done = ssc.await_termination_or_timeout(WAIT);
    let err = done.unwrap_err().to_string();
    assert!(
        err.contains("stream `clicks`") && err.contains("receiver bug"),
        "{err}"
    );
}

/// Installs a release hook that records its calls and the segment count at
/// the time, failing while `fail` is set; stores records on demand.
struct Hooked {
    calls: Arc<Mutex<Vec<(u64, usize)>>>,
    fail: Arc<AtomicBool>,
    go: mpsc::Receiver<u64>,
    stored: mpsc::Sender<u64>,
    backlog: Arc<AtomicU64>,
}

impl Receiver for Hooked {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        let (calls, fail, wal) = (self.calls.clone(), self.fail.clone(), ctx.wal().clone());
        ctx.set_release_hook(Box::new(move |end| {
            calls.lock().unwrap().push((end, wal.segments().len()));
            if fail.load(Ordering::SeqCst) {
                Err("progress file not writable".into())
            } else {
                Ok(end)
            }
        }));
        while !ctx.is_stopping() {
            self.backlog.store(ctx.backlog_bytes(), Ordering::SeqCst);
            if let Ok(n) = self.go.recv_timeout(Duration::from_millis(20)) {
                let rec = [b'x'; 100];
                for _ in 0..n {
                    ctx.store(&[&rec[..]])?;
                }
                let _ = self.stored.send(ctx.wal().end());
            }
        }
        Ok(())
    }
}

#[test]
fn release_hook_runs_before_cleanup_and_a_failing_hook_keeps_segments() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock.clone(), 1 << 20);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let fail = Arc::new(AtomicBool::new(true));
    let (go_tx, go) = mpsc::channel();
    let (stored, stored_rx) = mpsc::channel();
    let backlog = Arc::new(AtomicU64::new(0));
    let s = ssc
        .receiver_stream(
            "in",
            Hooked {
                calls: calls.clone(),
                fail: fail.clone(),
                go,
                stored,
                backlog: backlog.clone(),
            },
            weir::receiver::utf8,
        )
        .unwrap();
    let _out = collect(&s);
    ssc.start().unwrap();
    let wal_dir = dir.path().join("wal/in");
    // Segments only: the log's directory also holds its lock and its
    // synced-end marker.
    let segment_files = || {
        std::fs::read_dir(&wal_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".wal"))
            })
            .count()
    };
    // 100-byte records in 256-byte segments: one record per segment.
    go_tx.send(5).unwrap();
    assert_eq!(stored_rx.recv_timeout(WAIT).unwrap(), 5);
    let before = segment_files();
    assert!(before >= 5, "{before} segments");
    clock.advance(1000);
    ssc.await_batch(1000, WAIT).unwrap();
    assert_eq!(calls.lock().unwrap().as_slice(), &[(5, before)]);
    assert_eq!(
        segment_files(),
        before,
        "a failing hook must keep the segments"
    );
    // The batch committed every record, but the kept segments still hold
    // disk: the backlog (what backpressure sees) counts their bytes.
    wait_for("the kept segments in the backlog", || {
        backlog.load(Ordering::SeqCst) >= 4 * 100
    });
    fail.store(false, Ordering::SeqCst);
    go_tx.send(1).unwrap();
    assert_eq!(stored_rx.recv_timeout(WAIT).unwrap(), 6);
    let before = segment_files();
    clock.advance(1000);
    ssc.await_batch(2000, WAIT).unwrap();
    // The hook saw every segment still there; cleanup came after it.
    assert_eq!(calls.lock().unwrap()[1], (6, before));
    assert!(segment_files() < before, "cleanup after a good hook");
    wait_for("an empty backlog after cleanup", || {
        backlog.load(Ordering::SeqCst) == 0
    });
    ssc.stop(false).unwrap();
}

#[test]
fn the_rate_limit_spaces_stores() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .clock(clock)
        .data_dir(dir.path())
        .records_per_second_max(Some(200))
        .build()
        .unwrap();
    let (stored, _out) = counting(&ssc, 100);
    let t0 = Instant::now();
    ssc.start().unwrap();
    wait_for("100 stores", || stored.load(Ordering::SeqCst) == 100);
    let took = t0.elapsed();
    // A burst of 20 is free; the other 80 take at least 80 / 200 s.
    assert!(
        took >= Duration::from_millis(390),
        "100 records at 200/s took only {took:?}"
    );
    ssc.stop(false).unwrap();
}

#[test]
fn config_errors_are_refused() {
    let e = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .backlog_bytes_max(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("backlog_bytes_max"), "{e}");
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let e = ssc
        .receiver_stream("in", Failing, weir::receiver::utf8)
        .unwrap_err();
    assert!(e.to_string().contains("needs a data directory"), "{e}");
}

/// Ignores `is_stopping` (a buggy custom receiver) until `release` is set;
/// its stores fail with `Stopping` once the context stops.
struct Stubborn {
    release: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Receiver for Stubborn {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        while !self.release.load(Ordering::SeqCst) {
            if let Err(ReceiverError::Stopping) = ctx.store(&[&b"x"[..]]) {
                self.refused.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[test]
fn stop_does_not_wait_forever_for_a_receiver_that_ignores_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = ctx(dir.path(), clock, 1 << 20);
    let release = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let s = ssc
        .receiver_stream(
            "stubborn",
            Stubborn {
                release: release.clone(),
                refused: refused.clone(),
            },
            weir::receiver::utf8,
        )
        .unwrap();
    let _out = collect(&s);
    ssc.start().unwrap();
    let began = Instant::now();
    ssc.stop(false).unwrap();
    // Bounded by RECEIVER_STOP_WAIT_MAX, not by the receiver.
    assert!(
        began.elapsed() < weir::context::RECEIVER_STOP_WAIT_MAX + WAIT,
        "stop took {:?}",
        began.elapsed()
    );
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "stores after stop must fail"
    );
    release.store(true, Ordering::SeqCst);
}
