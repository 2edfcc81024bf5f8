//! The data directory's identity, with the real binary: a log whose
//! checkpoint was deleted, or beside a checkpoint of another data
//! directory, is refused (exit 1, nothing written again), and the way out
//! (`weir checkpoint adopt-logs`) deliberately reprocesses what the logs
//! hold. Also in-process: adopted logs whose first segments were removed
//! start at their first retained record.

mod service_common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::wal::{Wal, WalConfig};
use weir::StreamingContext;

use service_common::{
    all_lines, feed_file, line_with, number_counts, spawn_logged, start_ingest, wait_for, weir,
};

const PIPELINE: &str = r#"
[pipeline]
batch_interval = "100ms"
[service]
http_address = "off"
[[source]]
id = "input"
kind = "ingest"
address = "127.0.0.1:0"
[[sink]]
kind = "text_files"
prefix = "out/records"
"#;

const RECORDS: u64 = 1000;

/// `weir run` expected to refuse at once (within 30 s): its exit code
/// and stderr.
fn run_refused(pipeline: &Path, data: &Path) -> (Option<i32>, String) {
    let (mut g, rx) = spawn_logged(weir().arg("run").arg(pipeline).arg("--data-dir").arg(data));
    let code = g.wait_exit(Duration::from_secs(30)).code();
    (code, all_lines(&rx))
}

fn lines(dir: &Path) -> u32 {
    number_counts(dir).values().sum()
}

/// A data directory that processed [`RECORDS`] records (fed through the
/// ingest server, drained by a graceful stop): the pipeline file and the
/// data directory.
fn processed(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let p = root.join(format!("{name}.toml"));
    std::fs::write(&p, PIPELINE).expect("write");
    let input = root.join(format!("{name}.txt"));
    let text: String = (1..=RECORDS).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, text).expect("write");
    let data = root.join(name);
    let (mut g, addr, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    feed_file(&addr, &input, "t");
    wait_for("every record written", || {
        lines(&data.join("out")) == RECORDS as u32
    });
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    (p, data)
}

#[test]
fn a_deleted_checkpoint_is_refused_and_adopting_the_logs_reprocesses_deliberately() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, data) = processed(dir.path(), "data");
    let out = data.join("out");
    std::fs::remove_dir_all(data.join("checkpoint")).expect("delete the checkpoint");

    let (code, err) = run_refused(&p, &data);
    assert_eq!(code, Some(1), "{err}");
    for needle in [
        "no checkpoint",
        data.join("checkpoint").to_str().expect("utf-8"),
        data.join("wal/input").to_str().expect("utf-8"),
        "restore",
        "weir checkpoint adopt-logs",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        lines(&out),
        RECORDS as u32,
        "the refused start wrote output"
    );
    assert!(
        !data.join("checkpoint").exists(),
        "the refused start created a checkpoint"
    );
    let st = weir().arg("status").arg(&data).output().expect("status");
    assert_eq!(st.status.code(), Some(1));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("weir checkpoint adopt-logs"), "{err}");
    // Refused again, the same way (nothing changed by the first refusal).
    let (code, err) = run_refused(&p, &data);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no checkpoint"), "{err}");

    // The way out: adopt the logs, accepting that what they hold is
    // processed again.
    let adopt = weir()
        .args(["checkpoint", "adopt-logs"])
        .arg(&data)
        .output()
        .expect("adopt-logs");
    let said = String::from_utf8_lossy(&adopt.stdout);
    assert!(
        adopt.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&adopt.stderr)
    );
    assert!(said.contains("input") && said.contains("again"), "{said}");
    let (mut g, _, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    wait_for("the records again", || lines(&out) == 2 * RECORDS as u32);
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let c = number_counts(&out);
    assert_eq!(c.len() as u64, RECORDS);
    assert!(c.values().all(|&n| n == 2));
}

#[test]
fn a_checkpoint_from_another_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, a) = processed(dir.path(), "a");
    let (_, b) = processed(dir.path(), "b");
    std::fs::remove_dir_all(a.join("checkpoint")).expect("delete");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(b.join("checkpoint"))
        .arg(a.join("checkpoint"))
        .status()
        .expect("cp");
    assert!(copied.success());

    let (code, err) = run_refused(&p, &a);
    assert_eq!(code, Some(1), "{err}");
    for needle in [
        "another data directory",
        a.join("checkpoint").to_str().expect("utf-8"),
        a.join("wal/input").to_str().expect("utf-8"),
        "restore",
    ] {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
    assert_eq!(lines(&a.join("out")), RECORDS as u32);
    // `weir status` says so too, and fails.
    let st = weir().arg("status").arg(&a).output().expect("status");
    assert_eq!(st.status.code(), Some(1));
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("another data directory"), "{err}");

    // adopt-logs will not read the logs at the foreign checkpoint's
    // positions; with it moved aside, it adopts them.
    let adopt = || {
        weir()
            .args(["checkpoint", "adopt-logs"])
            .arg(&a)
            .output()
            .expect("adopt-logs")
    };
    let refused = adopt();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("already records batches"), "{err}");
    std::fs::rename(a.join("checkpoint"), dir.path().join("foreign")).expect("move aside");
    assert!(adopt().status.success());
    let (mut g, _, rx) = start_ingest(&p, &a);
    line_with(&rx, "ready");
    wait_for("the records again", || {
        lines(&a.join("out")) == 2 * RECORDS as u32
    });
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

type Seen = Arc<Mutex<Vec<String>>>;

/// `get_or_create` on `data` with the text log `in` (small segments) and
/// every record it processes pushed to `seen`.
fn open_in_process(data: &Path, seen: &Seen) -> weir::Result<(StreamingContext, Arc<Wal>)> {
    let mut wal = None;
    let seen = seen.clone();
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_millis(20))
            .wal_config(WalConfig {
                segment_bytes_max: 4096,
                record_bytes_max: 256,
                ..WalConfig::default()
            })
            .build()?;
        let (s, w) = ssc.wal_text_stream("in")?;
        s.foreach_batch(move |_, recs| {
            seen.lock().unwrap_or_else(|e| e.into_inner()).extend(recs);
            Ok(())
        })?;
        wal = Some(w);
        Ok(ssc)
    })?;
    Ok((ssc, wal.expect("the log")))
}

fn seen_len(seen: &Seen) -> usize {
    seen.lock().unwrap_or_else(|e| e.into_inner()).len()
}

#[test]
fn adopted_logs_start_at_their_first_retained_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    let seen: Seen = Arc::default();
    let records: Vec<String> = (0..500)
        .map(|i| format!("record {i:04} {}", "x".repeat(40)))
        .collect();
    let (ssc, wal) = open_in_process(&data, &seen).expect("open");
    wal.append(&records).expect("append");
    ssc.start().expect("start");
    wait_for("every record", || seen_len(&seen) == records.len());
    // Segments are removed once their records are committed.
    wait_for("segments removed", || wal.first_lsn() > 0);
    ssc.stop(true).expect("stop");
    drop((ssc, wal));

    std::fs::remove_dir_all(data.join("checkpoint")).expect("delete the checkpoint");
    let e = open_in_process(&data, &seen)
        .map(drop)
        .expect_err("refused");
    assert!(e.to_string().contains("no checkpoint"), "{e}");

    let adopted = weir::context::adopt_logs(&data).expect("adopt");
    let [(name, first, end)] = adopted.logs.as_slice() else {
        panic!("{adopted:?}");
    };
    assert_eq!((name.as_str(), *end), ("in", records.len() as u64));
    assert!(*first > 0, "{adopted:?}");
    seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let (ssc, _wal) = open_in_process(&data, &seen).expect("open after adopt-logs");
    ssc.start().expect("start");
    let want = &records[*first as usize..];
    wait_for("the retained records again", || {
        seen_len(&seen) == want.len()
    });
    ssc.stop(true).expect("stop");
    assert_eq!(*seen.lock().unwrap_or_else(|e| e.into_inner()), want);
}
