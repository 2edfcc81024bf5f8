//! Dead letters across a crash between their write and the batch's commit
//! (failpoint `before_commit`, the widest window): the restart replays the
//! batch, rewrites the same dead-letter file with the same bytes, and no
//! entry is lost or doubled; a crash before the write (`after_allocate`)
//! leaves no file until the replay writes it.
//!
//! The failpoint registry is process-global: this file holds these tests
//! alone, one at a time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dstream::OnError;
use weir::{failpoint, ManualClock, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(20);

fn build(dir: &Path, clock: Arc<ManualClock>) -> (StreamingContext, Arc<weir::wal::Wal>) {
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(3)
            .clock(clock)
            .batch_retries(1, Duration::from_millis(1))
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        lines
            .try_map(OnError::DeadLetter, |l: &String| l.parse::<i64>())
            .name("parse")
            .save_as_text_files(&dir.join("out/n").display().to_string(), "txt")?;
        wal = Some(w);
        Ok(ssc)
    })
    .expect("build");
    (ssc, wal.expect("wal"))
}

/// `(file name, contents)` of each dead-letter file, by name.
type Files = Vec<(String, String)>;

fn dead_letter_files(dir: &Path) -> Files {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir.join("dead-letter"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).expect("read"))
        })
        .collect();
    v.sort();
    v
}

fn crash_at(point: &str) -> (Files, Files) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    failpoint::reset();
    failpoint::arm(point, 0);
    let (ssc, wal) = build(dir.path(), clock.clone());
    ssc.start().expect("start");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            if i % 7 == 3 {
                format!("bad{i}")
            } else {
                i.to_string()
            }
        })
        .collect();
    wal.append(&lines).expect("append");
    clock.set(1000);
    assert!(
        ssc.await_batch(1000, WAIT).is_err(),
        "the crash fails the batch"
    );
    assert!(failpoint::fired().is_some());
    let _ = ssc.stop(false);
    drop(ssc);
    drop(wal);
    let at_crash = dead_letter_files(dir.path());
    failpoint::reset();
    let (ssc, _wal) = build(dir.path(), clock.clone());
    ssc.start().expect("restart");
    clock.set(2000);
    ssc.await_batch(2000, WAIT).expect("batch after the replay");
    ssc.stop(false).expect("stop");
    let after = dead_letter_files(dir.path());
    let entries = weir::sink::read_dead_letters(dir.path()).expect("read");
    let lsns: Vec<u64> = entries.iter().filter_map(|e| e.lsn).collect();
    let want: Vec<u64> = (0..40).filter(|i| i % 7 == 3).collect();
    assert_eq!(lsns, want, "each bad record once, in order");
    assert!(entries.iter().all(|e| e.batch_time_ms == 1000));
    (at_crash, after)
}

#[test]
fn a_crash_after_the_dead_letters_are_written_rewrites_the_same_file() {
    let (at_crash, after) = crash_at("before_commit");
    assert_eq!(at_crash.len(), 1, "written before the commit: {at_crash:?}");
    assert_eq!(
        at_crash, after,
        "the replay wrote the same bytes under the same name"
    );
}

#[test]
fn a_crash_before_the_batch_ran_leaves_no_file_until_the_replay() {
    let (at_crash, after) = crash_at("after_allocate");
    assert!(at_crash.is_empty(), "{at_crash:?}");
    assert_eq!(after.len(), 1);
}
