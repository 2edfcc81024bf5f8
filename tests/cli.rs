//! The `weir` command line as a user meets it: every command group's help,
//! usage mistakes (non-zero exit, a message in user words), no test
//! helpers in the shipped binary, and `weir status` on a directory without
//! a checkpoint, a fresh one, one after a run and one with a damaged log,
//! checked both as the library's `DataDirReport` and as the printed text.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use weir::service::report::{data_dir_report, DataDirReport};
use weir::wal::{Wal, WalConfig};
use weir::{ManualClock, StreamingContext};

const WAIT: Duration = Duration::from_secs(20);

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("WEIR_LOG")
        .env_remove("STATE_DIRECTORY")
        .output()
        .expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Nothing a user reads may be in Rust's `Debug` form.
fn assert_user_words(s: &str) {
    for debug in ["Os {", "Custom {", "kind: ", "Some(", "Error {"] {
        assert!(!s.contains(debug), "debug form `{debug}` in: {s}");
    }
}

#[test]
fn every_command_group_has_help_and_every_command_an_example() {
    let out = weir(&["--help"]);
    assert!(out.status.success());
    let top = text(&out.stdout);
    for group in [
        "run",
        "check",
        "chaos",
        "status",
        "wal",
        "checkpoint",
        "feed",
        "kv",
    ] {
        assert!(top.contains(&format!("  {group} ")), "{group} in\n{top}");
        let out = weir(&[group, "--help"]);
        assert!(out.status.success(), "weir {group} --help");
        let help = text(&out.stdout);
        assert!(help.contains(&format!("Usage: weir {group}")), "{help}");
    }
    for cmd in [
        &["run"][..],
        &["check"],
        &["chaos"],
        &["status"],
        &["feed"],
        &["wal", "inspect"],
        &["wal", "verify"],
        &["wal", "repair"],
        &["checkpoint", "show"],
        &["checkpoint", "reset-operator"],
        &["checkpoint", "adopt-logs"],
        &["kv", "get"],
        &["kv", "scan"],
    ] {
        let out = weir(&[cmd, &["--help"][..]].concat());
        assert!(out.status.success(), "weir {cmd:?} --help");
        let help = text(&out.stdout);
        assert!(help.contains("Example"), "weir {cmd:?} --help:\n{help}");
    }
}

#[test]
fn the_shipped_binary_has_no_test_helpers() {
    let top = text(&weir(&["--help"]).stdout);
    let wal = text(&weir(&["wal", "--help"]).stdout);
    for hidden in ["test-pipeline", "test-dir-pipeline", "test-ingest-pipeline"] {
        assert!(!top.contains(hidden), "{hidden} in\n{top}");
        let out = weir(&[hidden, "/tmp/x"]);
        assert_eq!(out.status.code(), Some(2), "weir {hidden} must not exist");
        assert!(text(&out.stderr).contains("unrecognized subcommand"));
    }
    assert!(!wal.contains("torture"), "{wal}");
    assert_eq!(weir(&["wal", "torture", "/tmp/x"]).status.code(), Some(2));
    // ... and the test-support binary has them.
    let kit = Command::new(env!("CARGO_BIN_EXE_weir-testkit"))
        .arg("--help")
        .output()
        .expect("run weir-testkit");
    assert!(kit.status.success());
    let kit = text(&kit.stdout);
    for cmd in [
        "wal",
        "test-pipeline",
        "test-dir-pipeline",
        "test-ingest-pipeline",
    ] {
        assert!(kit.contains(cmd), "{cmd} in\n{kit}");
    }
}

#[test]
fn usage_mistakes_exit_non_zero_in_user_words() {
    // Found by clap: exit 2 and the usage line.
    let out = weir(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage: weir"), "{out:?}");
    let out = weir(&["feed", "127.0.0.1:7070"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--producer"), "{out:?}");
    // Found by weir: exit 1, `error: ` and what to do instead.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("utf-8 path");
    for (args, says) in [
        (
            vec!["wal", "verify", missing],
            "is not a directory: give the WAL directory of one input stream",
        ),
        (
            vec!["feed", "no-port-here", "--producer", "p"],
            "is not an address: give host:port, e.g. 127.0.0.1:7070",
        ),
        (
            vec![
                "feed",
                "127.0.0.1:1",
                "--producer",
                "p",
                "--progress",
                "loud",
            ],
            "--progress loud: use auto, bar, lines or none",
        ),
        (
            vec!["run", "--demo", "--http-address", "nowhere"],
            "--http-address nowhere: expected an address such as 127.0.0.1:9464, or off",
        ),
        (vec!["status", missing], "has no checkpoint"),
    ] {
        let out = weir(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "weir {args:?}: {err}");
        assert!(err.starts_with("error: "), "weir {args:?}: {err}");
        assert!(err.contains(says), "weir {args:?}: {err}");
        assert_user_words(&err);
    }
}

/// The crash tests' word count on `dir` with a manual clock (interval 1 s).
fn wordcount(dir: &Path, clock: Arc<ManualClock>) -> (StreamingContext, Arc<Wal>) {
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .partitions(2)
            .clock(clock)
            .build()?;
        wal = Some(weir::pipelines::stateful_wordcount(&ssc, &dir.join("out"))?);
        Ok(ssc)
    })
    .expect("context");
    (ssc, wal.expect("the input log"))
}

/// `weir status DIR`: exit code and standard output.
fn status(dir: &Path) -> (Option<i32>, String) {
    let out = weir(&["status", dir.to_str().expect("utf-8 path")]);
    assert_user_words(&text(&out.stderr));
    (out.status.code(), text(&out.stdout))
}

/// What `weir status` must print for `r` (no pending batch).
fn expected_text(r: &DataDirReport) -> String {
    let mut t = match &r.last_committed {
        None => "last committed batch: none\n".to_string(),
        Some(b) => format!("last committed batch: {} ms\n", b.time_ms),
    };
    t += "pending batches: none\n";
    for (op, n) in &r.state_keys {
        t += &format!("state `{op}`: {n} keys\n");
    }
    for l in &r.logs {
        t += &format!(
            "log `{}`: {} segments, {} bytes, records {}..{}, backlog {} records\n",
            l.name, l.segments, l.bytes, l.first_lsn, l.end_lsn, l.backlog_records
        );
    }
    t + "clean: every allocated batch is committed\n"
}

#[test]
fn status_of_a_directory_without_a_checkpoint_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = data_dir_report(dir.path()).expect_err("no checkpoint");
    assert!(e.to_string().contains("has no checkpoint"), "{e}");
    let out = weir(&["status", dir.path().to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("has no checkpoint"), "{err}");
    assert!(err.contains("it holds the checkpoint lock"), "{err}");
}

#[test]
fn status_of_a_fresh_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ssc, wal) = wordcount(dir.path(), Arc::new(ManualClock::new(0)));
    ssc.start().expect("start");
    ssc.stop(false).expect("stop");
    drop((ssc, wal));
    let r = data_dir_report(dir.path()).expect("report");
    assert_eq!(r.batches_completed, 0);
    assert_eq!(r.last_committed, None);
    assert!(r.pending.is_empty());
    assert!(r.state_keys.is_empty(), "{r:?}");
    assert_eq!(r.logs.len(), 1, "{r:?}");
    let log = &r.logs[0];
    assert_eq!(log.name, "input");
    assert_eq!((log.first_lsn, log.end_lsn), (0, 0));
    assert_eq!((log.committed, log.backlog_records), (0, 0));
    assert!(log.segments >= 1 && log.problem.is_none(), "{log:?}");
    assert!(r.clean() && !r.damaged());
    let (code, out) = status(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, expected_text(&r));
    assert!(out.contains("records 0..0, backlog 0 records"), "{out}");
}

/// A data dir after one committed batch of 3 records, then 2 more logged
/// but not processed.
fn data_dir_after_a_run() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, wal) = wordcount(dir.path(), clock.clone());
    ssc.start().expect("start");
    wal.append(&["alpha beta", "beta gamma", "gamma"])
        .expect("append");
    clock.set(1000);
    ssc.await_batch(1000, WAIT).expect("batch 1000");
    ssc.stop(false).expect("stop");
    drop((ssc, wal));
    let log = dir.path().join("wal").join("input");
    let (wal, _) = Wal::open(&log, WalConfig::default()).expect("reopen the log");
    wal.append(&["delta", "epsilon"]).expect("append");
    drop(wal);
    (dir, log)
}

#[test]
fn status_after_a_run_shows_positions_state_and_backlog() {
    let (dir, _) = data_dir_after_a_run();
    let r = data_dir_report(dir.path()).expect("report");
    assert_eq!(r.last_committed.as_ref().map(|b| b.time_ms), Some(1000));
    assert!(r.batches_completed >= 1, "{r:?}");
    assert!(r.pending.is_empty(), "{r:?}");
    let totals = r.state_keys.iter().find(|(op, _)| op == "totals");
    assert_eq!(totals, Some(&("totals".to_string(), 3)), "{r:?}");
    assert_eq!(r.logs.len(), 1, "{r:?}");
    let log = &r.logs[0];
    assert_eq!((log.first_lsn, log.end_lsn), (0, 5), "{log:?}");
    assert_eq!(log.committed, 3, "{log:?}");
    assert_eq!(log.backlog_records, 2, "{log:?}");
    assert!(log.bytes > 0 && log.problem.is_none(), "{log:?}");
    assert!(r.clean());
    let (code, out) = status(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, expected_text(&r));
    assert!(out.contains("records 0..5, backlog 2 records"), "{out}");
}

#[test]
fn status_of_a_damaged_log_names_the_place_and_exits_1() {
    let (dir, log) = data_dir_after_a_run();
    // Flip a byte of the first record: the frames after it prove damage
    // (not a torn tail).
    let seg = std::fs::read_dir(&log)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .find(|p| std::fs::read(p).is_ok_and(|b| b.windows(5).any(|w| w == b"alpha")))
        .expect("the segment holding record 0");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let at = bytes
        .windows(5)
        .position(|w| w == b"alpha")
        .expect("record 0");
    bytes[at] = b'A';
    std::fs::write(&seg, bytes).expect("write segment");
    let r = data_dir_report(dir.path()).expect("report");
    assert!(r.damaged() && !r.clean(), "{r:?}");
    let problem = r.logs[0].problem.as_ref().expect("a problem");
    assert_eq!(problem.path, seg);
    assert_eq!(problem.lsn, 0);
    let (code, out) = status(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("CORRUPT: {} at byte ", seg.display())),
        "{out}"
    );
    assert!(
        out.ends_with("a log is damaged: see `weir wal verify` and docs/operations.md (repair)\n"),
        "{out}"
    );
    assert!(!out.contains("clean:"), "{out}");
}
