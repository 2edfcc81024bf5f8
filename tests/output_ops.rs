//! Output operations: print (Spark's format), save_as_text_files (atomic,
//! named by batch time), foreach_batch, declaration order, failures.

mod common;
use common::*;

use std::sync::{Arc, Mutex};

use weir::sink::SharedWriter;

#[test]
fn print_uses_sparks_format() {
    let h = ctx(2);
    let q = queue(vec![vec![1, 2, 3], vec![], vec![7, 8]]);
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let w: SharedWriter = buf.clone();
    h.ssc.queue_stream(&q).print_to(2, w).unwrap();
    h.run(3);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    let rule = "-------------------------------------------";
    let expected = format!(
        "{rule}\nTime: 1000 ms\n{rule}\n1\n2\n...\n\n\
         {rule}\nTime: 2000 ms\n{rule}\n\n\
         {rule}\nTime: 3000 ms\n{rule}\n7\n8\n\n"
    );
    assert_eq!(text, expected);
}

#[test]
fn print_renders_pairs_like_scala_tuples() {
    let h = ctx(1);
    let q = queue(vec![vec![(weir::Text::new("word"), 3u64)]]);
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    h.ssc.queue_stream(&q).print_to(10, buf.clone()).unwrap();
    h.run(1);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert!(text.contains("\n(word,3)\n\n"), "{text}");
}

#[test]
fn save_as_text_files_writes_one_file_per_batch_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let h = ctx(2);
    let q = queue(vec![vec!["x".to_string(), "y".into()], vec![]]);
    let s = h.ssc.queue_stream(&q);
    let prefix = dir.path().join("out/words");
    s.save_as_text_files(prefix.to_str().unwrap(), "txt")
        .unwrap();
    s.count()
        .save_as_text_files(dir.path().join("n").to_str().unwrap(), "")
        .unwrap();
    h.run(2);
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
    assert_eq!(read("out/words-1000.txt"), "x\ny\n");
    assert_eq!(read("out/words-2000.txt"), "");
    assert_eq!(read("n-1000"), "2\n");
    assert_eq!(read("n-2000"), "0\n");
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["words-1000.txt", "words-2000.txt"],
        "no temp files left"
    );
}

#[test]
fn output_operations_run_in_declaration_order() {
    let h = ctx(2);
    let q = queue(vec![vec![1], vec![2]]);
    let s = h.ssc.queue_stream(&q);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    for name in ["first", "second", "third"] {
        let log = log.clone();
        s.map(|x| x * 10)
            .foreach_batch(move |t, xs| {
                log.lock().unwrap().push(format!("{t} {name} {xs:?}"));
                Ok(())
            })
            .unwrap();
    }
    h.run(2);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            "1000 first [10]",
            "1000 second [10]",
            "1000 third [10]",
            "2000 first [20]",
            "2000 second [20]",
            "2000 third [20]",
        ]
    );
}

#[test]
fn a_failing_output_stops_the_context_with_a_named_error() {
    let h = ctx(1);
    let q = queue(vec![vec![1]]);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    h.ssc
        .queue_stream(&q)
        .name("numbers")
        .foreach_batch(move |_, _| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err("disk full".into())
        })
        .unwrap();
    h.ssc.start().unwrap();
    h.clock.advance(1000);
    let err = h.ssc.await_termination().unwrap_err().to_string();
    // Retried (default: 3 attempts with backoff), then stopped, naming the
    // batch, the operator and the cause.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(
        err.starts_with("batch 1000 ms failed 3 times and was not committed"),
        "{err}"
    );
    assert!(
        err.ends_with("Last error: output operation foreach_batch on `numbers` failed: disk full"),
        "{err}"
    );
}

/// A source of `0..len` that counts the records it hands out and fails
/// (after handing out the records before it) when a read reaches `fail_at`.
struct Counting {
    len: u64,
    fail_at: Option<u64>,
    delivered: std::sync::atomic::AtomicU64,
}

impl weir::dstream::Source<u64> for Counting {
    fn available_end(&self) -> u64 {
        self.len
    }
    fn read(&self, range: std::ops::Range<u64>) -> Result<Vec<u64>, weir::dstream::BoxError> {
        let mut v = Vec::new();
        self.read_each(range, &mut |x| {
            v.push(x);
            true
        })?;
        Ok(v)
    }
    fn read_each(
        &self,
        range: std::ops::Range<u64>,
        f: &mut dyn FnMut(u64) -> bool,
    ) -> Result<(), weir::dstream::BoxError> {
        for i in range {
            if Some(i) == self.fail_at {
                return Err(format!("record {i} is unreadable").into());
            }
            self.delivered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if !f(i) {
                break;
            }
        }
        Ok(())
    }
}

#[test]
fn print_reads_only_the_records_it_shows() {
    let h = ctx(2);
    let src = Arc::new(Counting {
        len: 1_000_000,
        fail_at: None,
        delivered: Default::default(),
    });
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    h.ssc
        .source_stream("counting", src.clone())
        .map(|x| x * 2)
        .print_to(3, buf.clone())
        .unwrap();
    h.run(1);
    let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert!(text.ends_with("\n0\n2\n4\n...\n\n"), "{text}");
    // Three shown and one to know there is more: the read stopped there,
    // not at the end of a 500,000-record partition.
    assert_eq!(src.delivered.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[test]
fn a_failed_read_fails_the_batch_before_any_output_acts() {
    let h = ctx(2);
    let src = Arc::new(Counting {
        len: 100,
        fail_at: Some(70),
        delivered: Default::default(),
    });
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    fn counted<T: weir::dstream::Data>(
        s: &weir::DStream<T>,
        calls: &Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let c = calls.clone();
        s.foreach_batch(move |_, _| {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
    }
    let s = h.ssc.source_stream("counting", src).name("numbers");
    counted(&s.map(|x| x + 1), &calls);
    counted(&s.filter(|x| x % 2 == 0), &calls);
    counted(
        &s.map(|x| (x % 3, 1u64)).reduce_by_key(|a, b| a + b),
        &calls,
    );
    h.ssc.start().unwrap();
    h.clock.advance(1000);
    let err = h.ssc.await_termination().unwrap_err().to_string();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        err.ends_with(
            "Last error: source `numbers` failed to read records 50..100: record 70 is unreadable"
        ),
        "{err}"
    );
}

#[test]
fn adaptive_batches_cap_the_first_batch_and_can_be_turned_off() {
    for adaptive in [true, false] {
        let clock = Arc::new(weir::ManualClock::new(0));
        let ssc = weir::StreamingContext::builder()
            .batch_interval(std::time::Duration::from_secs(1))
            .clock(clock.clone())
            .adaptive_batches(adaptive)
            .build()
            .unwrap();
        let q = weir::Queue::with_mode(weir::QueueMode::All);
        q.push((0..1_500_000u32).collect()).unwrap();
        let out = collect(&ssc.queue_stream(&q).count());
        ssc.start().unwrap();
        let total = |o: &Out<u64>| o.lock().unwrap().iter().map(|(_, c)| c[0]).sum::<u64>();
        // Bounded: the floor of 10,000 records per batch drains the queue
        // within 150 batches whatever the machine's speed.
        for _ in 0..150 {
            let t = clock.advance(1000);
            ssc.await_batch(t, WAIT).unwrap();
            if total(&out) == 1_500_000 {
                break;
            }
        }
        ssc.stop(false).unwrap();
        let counts: Vec<u64> = out.lock().unwrap().iter().map(|(_, c)| c[0]).collect();
        // On: the first batch after a start takes at most 1,000,000
        // records per second of interval; later ones what fits.
        let first = if adaptive { 1_000_000 } else { 1_500_000 };
        assert_eq!(counts[0], first, "adaptive_batches({adaptive}): {counts:?}");
        assert_eq!(total(&out), 1_500_000, "{counts:?}");
    }
}
