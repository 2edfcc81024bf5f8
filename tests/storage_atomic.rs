//! The durable-file helper (`weir::storage::write_atomic`) has its own
//! failpoint, `atomic_file_rename`: arming the sinks' `sink_write` fails a
//! sink's batch file but never a receiver's file (the directory receiver's
//! progress file, the ingest producer-table snapshot), so a sink crash test
//! keeps its meaning and receivers keep working around it.
//!
//! Failpoints are process-global: this binary holds only these tests, and
//! they take turns (one lock).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{collect, get, wait_for, WAIT};
use weir::failpoint;
use weir::ingest::{feed, payload_utf8, FeedConfig, IngestConfig};
use weir::receiver::DirConfig;
use weir::sink::write_batch_file;
use weir::storage::{write_atomic, AtomicWriteError, RealFs, ATOMIC_FILE_RENAME};
use weir::wal::WalConfig;
use weir::{ManualClock, StreamingContext};

static TURN: Mutex<()> = Mutex::new(());

/// Holds the turn with `point` armed to fire at its first hit; disarms on
/// drop.
struct Armed(#[allow(dead_code)] MutexGuard<'static, ()>);

fn arm(point: &str) -> Armed {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    failpoint::reset();
    failpoint::arm(point, 0);
    Armed(turn)
}

impl Drop for Armed {
    fn drop(&mut self) {
        failpoint::reset();
    }
}

/// A context on `data` with a manual clock and small WAL segments, so a
/// committed batch lets cleanup (and the release hooks before it) run.
fn context(
    data: &Path,
    clock: Arc<ManualClock>,
    wal: WalConfig,
    build: impl FnOnce(&StreamingContext),
) -> StreamingContext {
    StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock)
            .wal_config(wal)
            .build()?;
        build(&ssc);
        Ok(ssc)
    })
    .unwrap()
}

fn batches(ssc: &StreamingContext, clock: &ManualClock, n: usize) {
    for _ in 0..n {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).unwrap();
    }
}

#[test]
fn sink_write_fails_a_sink_file_but_not_a_plain_atomic_write() {
    let _armed = arm("sink_write");
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("progress");
    write_atomic(&RealFs, &plain, b"kept\n").unwrap();
    assert_eq!(std::fs::read(&plain).unwrap(), b"kept\n");
    let out = dir.path().join("out-1000.txt");
    let e = write_batch_file(&out, b"lost\n").unwrap_err();
    assert!(e.to_string().contains("`sink_write`"), "{e}");
    assert!(!out.exists(), "a crash before the rename leaves no file");
    assert_eq!(failpoint::fired().as_deref(), Some("sink_write"));
}

#[test]
fn atomic_file_rename_fails_every_atomic_write_before_the_rename() {
    let _armed = arm(ATOMIC_FILE_RENAME);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file");
    std::fs::write(&path, b"old\n").unwrap();
    let e = write_atomic(&RealFs, &path, b"new\n").unwrap_err();
    assert!(matches!(e, AtomicWriteError::Crashed(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old\n");
    assert!(write_batch_file(&dir.path().join("out-1"), b"x").is_err());
}

#[test]
fn arming_sink_write_leaves_the_directory_progress_file_alone() {
    let _armed = arm("sink_write");
    let dir = tempfile::tempdir().unwrap();
    let (data, input) = (dir.path().join("data"), dir.path().join("in"));
    std::fs::create_dir(&input).unwrap();
    let lines: Vec<String> = (0..60).map(|i| format!("line {i:03}")).collect();
    std::fs::write(dir.path().join(".a.part"), lines.join("\n") + "\n").unwrap();
    std::fs::rename(dir.path().join(".a.part"), input.join("a.txt")).unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let mut out = None;
    let wal = WalConfig {
        segment_bytes_max: 16 << 10,
        record_bytes_max: 8 << 10,
        ..WalConfig::default()
    };
    let ssc = context(&data, clock.clone(), wal, |ssc| {
        let config = DirConfig {
            line_bytes_max: 64,
            lines_per_chunk_max: 7,
            chunk_bytes_max: 1 << 10,
            scan_interval: Duration::from_millis(5),
            ..DirConfig::default()
        };
        let (s, _) = ssc.text_file_stream_with("files", &input, config).unwrap();
        out = Some(collect(&s));
    });
    let out = out.unwrap();
    ssc.start().unwrap();
    wait_for("every line logged", || {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).unwrap();
        get(&out).iter().map(|(_, r)| r.len()).sum::<usize>() == 60
    });
    batches(&ssc, &clock, 2);
    let progress = data.join("receivers/files.progress");
    wait_for("the progress file", || progress.exists());
    assert_eq!(failpoint::fired(), None);
    ssc.stop(false).unwrap();
}

#[test]
fn arming_sink_write_leaves_the_ingest_snapshot_alone() {
    let _armed = arm("sink_write");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = Arc::new(ManualClock::new(0));
    let mut server = None;
    let wal = WalConfig {
        segment_bytes_max: 512,
        record_bytes_max: 128,
        ..WalConfig::default()
    };
    let ssc = context(&data, clock.clone(), wal, |ssc| {
        let mut cfg = IngestConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.limits.record_bytes_max = 32;
        let s = ssc.ingest_stream_with("in", cfg, payload_utf8).unwrap();
        server = Some((s.local_addr, collect(&s.stream)));
    });
    let (addr, out) = server.unwrap();
    ssc.start().unwrap();
    let lines: String = (0..40).map(|i| format!("record-{i:02}\n")).collect();
    let report = feed(addr, lines.as_bytes(), FeedConfig::new("p")).unwrap();
    assert_eq!(report.records, 40);
    batches(&ssc, &clock, 2);
    assert_eq!(get(&out).iter().map(|(_, r)| r.len()).sum::<usize>(), 40);
    let snapshot = data.join("wal/in.producers");
    wait_for("the producer snapshot", || snapshot.exists());
    assert_eq!(failpoint::fired(), None);
    ssc.stop(false).unwrap();
}
