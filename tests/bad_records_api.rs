//! The bad-record policy from the Rust API: `try_map` with `OnError::Fail`
//! fails the batch naming the step, stream and record number (no panic,
//! no retry); with `OnError::DeadLetter` the record goes to
//! `DATA_DIR/dead-letter/` and the good records go on; without a data
//! directory a dead letter fails the batch saying so.

mod common;
use common::*;

use std::time::Duration;

use weir::dstream::OnError;
use weir::StreamingContext;

fn lines() -> weir::Queue<String> {
    queue(vec![vec![
        "1".to_string(),
        "x".into(),
        "3".into(),
        "y".into(),
    ]])
}

#[test]
fn try_map_under_fail_names_the_first_bad_record() {
    let h = ctx(2);
    let nums = h
        .ssc
        .queue_stream(&lines())
        .try_map(OnError::Fail, |l: &String| l.parse::<i64>())
        .name("parse");
    let _out = collect(&nums);
    h.ssc.start().expect("start");
    let t = h.clock.advance(1000);
    let e = h.ssc.await_batch(t, WAIT).expect_err("the batch fails");
    let msg = e.to_string();
    assert!(
        msg.contains("step `parse` could not process record 1 of stream"),
        "{msg}"
    );
    assert!(msg.contains("invalid digit"), "{msg}");
    assert!(
        msg.contains("failed 1 times"),
        "a bad record is not retried: {msg}"
    );
}

#[test]
fn try_map_under_dead_letter_keeps_the_bad_records_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = std::sync::Arc::new(weir::ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .partitions(2)
        .clock(clock.clone())
        .data_dir(dir.path())
        .build()
        .expect("build");
    let nums = ssc
        .queue_stream(&lines())
        .try_map(OnError::DeadLetter, |l: &String| l.parse::<i64>())
        .name("parse");
    let out = collect(&nums);
    ssc.start().expect("start");
    let t = clock.advance(1000);
    ssc.await_batch(t, WAIT).expect("the batch commits");
    ssc.stop(false).expect("stop");
    assert_eq!(get(&out), vec![(1000, vec![1, 3])]);
    let dead = weir::sink::read_dead_letters(dir.path()).expect("read");
    let got: Vec<(Option<u64>, &str, &str)> = dead
        .iter()
        .map(|d| (d.lsn, d.record.as_str(), d.step.as_str()))
        .collect();
    assert_eq!(got, vec![(Some(1), "x", "parse"), (Some(3), "y", "parse")]);
    assert!(dead
        .iter()
        .all(|d| d.batch_time_ms == 1000 && d.error.contains("invalid digit")));
    assert_eq!(ssc.dead_letter_counts(), vec![("parse".to_string(), 2)]);
}

#[test]
fn a_dead_letter_without_a_data_directory_fails_the_batch_saying_so() {
    let h = ctx(1);
    let nums = h
        .ssc
        .queue_stream(&lines())
        .try_map(OnError::DeadLetter, |l: &String| l.parse::<i64>());
    let _out = collect(&nums);
    h.ssc.start().expect("start");
    let t = h.clock.advance(1000);
    let msg = h.ssc.await_batch(t, WAIT).expect_err("fails").to_string();
    assert!(
        msg.contains("no data directory for a dead-letter log"),
        "{msg}"
    );
}
