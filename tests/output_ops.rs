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
