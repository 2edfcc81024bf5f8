//! Exactly-once ingest across real SIGKILLs: the test-support binary runs
//! an ingest stream whose batches are saved as text files (`weir-testkit
//! test-ingest-pipeline`, rate-limited so the feed lasts), while a `weir
//! feed` process sends numbered records as one producer. The server is
//! killed with SIGKILL at random moments, ten times, and restarted on the
//! same port each time; the feed reconnects and resumes (and is itself
//! killed and restarted three times, resuming from the server's expected
//! sequence, which is a line number of the same file). Then the feed
//! must exit 0 (every record acknowledged), a draining run processes what
//! was logged, and every record must be in the output exactly once.
//!
//! Kill moments are random (seeded); correctness never depends on timing:
//! every wait polls for a condition with a deadline.

mod common;
use common::next_rand;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RECORDS: u64 = 20_000;
const KILLS: usize = 10;

fn record(i: u64) -> String {
    format!("rec-{i:06}")
}

fn server(bin: &str, dir: &std::path::Path, addr: &str, drain: bool) -> Child {
    let mut c = Command::new(bin);
    c.arg("test-ingest-pipeline")
        .arg(dir.join("data"))
        .arg(addr)
        .arg(dir.join("out"))
        .args(["--records-per-second", "3000"])
        .stdout(Stdio::null());
    if drain {
        c.arg("--drain");
    }
    c.spawn().expect("spawn weir-testkit test-ingest-pipeline")
}

/// Waits for `child` to exit, at most `secs`.
fn wait(child: &mut Child, secs: u64, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_fed_record_is_in_the_output_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let text: String = (0..RECORDS).map(|i| record(i) + "\n").collect();
    std::fs::write(&input, text).expect("write input");
    // A free loopback port, reused by every restart.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let bin = env!("CARGO_BIN_EXE_weir");
    let kit = env!("CARGO_BIN_EXE_weir-testkit");
    let mut srv = server(kit, dir.path(), &addr, false);
    let start_feed = || {
        Command::new(bin)
            .arg("feed")
            .arg(&addr)
            .arg(&input)
            .args([
                "--producer",
                "numbers",
                "--retry-secs",
                "60",
                "--progress",
                "none",
            ])
            .args(["--window-records", "500"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn weir feed")
    };
    let mut feed = start_feed();
    let mut rng = 0x1DE57 ^ u64::from(std::process::id());
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(100 + next_rand(&mut rng) % 300));
        if let Some(s) = srv.try_wait().expect("server status") {
            panic!("the server exited on its own before kill {}: {s}", k + 1);
        }
        srv.kill().expect("SIGKILL");
        srv.wait().expect("reap");
        assert!(
            feed.try_wait().expect("feed status").is_none() || k + 1 == KILLS,
            "the feed finished before kill {}: the test would not test resuming",
            k + 1
        );
        srv = server(kit, dir.path(), &addr, false);
        if k % 4 == 1 {
            // The producer dies too; a new `weir feed` on the same file
            // resumes at the server's expected sequence (line numbers).
            feed.kill().expect("SIGKILL feed");
            feed.wait().expect("reap feed");
            feed = start_feed();
        }
    }
    let status = wait(&mut feed, 180, "weir feed");
    assert!(status.success(), "weir feed failed: {status}");
    srv.kill().expect("SIGKILL");
    srv.wait().expect("reap");
    let mut last = server(kit, dir.path(), &addr, true);
    let status = wait(&mut last, 120, "the draining run");
    assert!(status.success(), "the draining run failed: {status}");

    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut files = 0;
    for e in std::fs::read_dir(dir.path().join("out"))
        .expect("outputs")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file of a write a kill interrupted
        }
        assert!(
            name.starts_with("records-") && name.ends_with(".txt"),
            "{name}"
        );
        files += 1;
        let text = std::fs::read_to_string(e.path()).expect("read output");
        assert!(text.is_empty() || text.ends_with('\n'), "{name} is partial");
        for l in text.lines() {
            *seen.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    assert!(files > KILLS, "only {files} batch files");
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(
        dups.is_empty(),
        "records in the output more than once: {dups:?}"
    );
    let want: BTreeMap<String, u32> = (0..RECORDS).map(|i| (record(i), 1)).collect();
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "records missing from the output: {missing:?}"
    );
    assert_eq!(seen, want);
    // Segments were deleted along the way, so the producer table was also
    // recovered from its snapshot, not only from the WAL.
    assert!(dir.path().join("data/wal/input.producers").is_file());
}
