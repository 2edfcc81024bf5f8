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
//! The same with the stream over three local partitions and three
//! producers (each sticking to one partition), killed and resumed alike.
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

fn record(producer: usize, i: u64) -> String {
    format!("p{producer}-rec-{i:06}")
}

fn server(bin: &str, dir: &std::path::Path, addr: &str, partitions: usize, drain: bool) -> Child {
    let mut c = Command::new(bin);
    c.arg("test-ingest-pipeline")
        .arg(dir.join("data"))
        .arg(addr)
        .arg(dir.join("out"))
        // The limit is per partition: the same total rate in both runs.
        .args(["--records-per-second", &(3000 / partitions).to_string()])
        .args(["--partitions", &partitions.to_string()])
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
    killed_and_resumed(1, 1);
}

#[test]
fn every_fed_record_is_in_the_output_exactly_once_across_sigkills_with_partitions() {
    killed_and_resumed(3, 3);
}

/// The kill-and-resume run with the stream over `partitions` logs and
/// `producers` feeds, each sending its share of `RECORDS`.
fn killed_and_resumed(partitions: usize, producers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let share = RECORDS / producers as u64;
    let inputs: Vec<_> = (0..producers)
        .map(|p| {
            let input = dir.path().join(format!("input{p}.txt"));
            let text: String = (0..share).map(|i| record(p, i) + "\n").collect();
            std::fs::write(&input, text).expect("write input");
            input
        })
        .collect();
    // A free loopback port, reused by every restart.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let bin = env!("CARGO_BIN_EXE_weir");
    let kit = env!("CARGO_BIN_EXE_weir-testkit");
    let mut srv = server(kit, dir.path(), &addr, partitions, false);
    let start_feed = |p: usize| {
        Command::new(bin)
            .arg("feed")
            .arg(&addr)
            .arg(&inputs[p])
            .args(["--producer", &format!("numbers{p}")])
            .args(["--retry-secs", "60", "--progress", "none"])
            .args(["--window-records", "500"])
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn weir feed")
    };
    let mut feeds: Vec<Child> = (0..producers).map(start_feed).collect();
    let mut rng = 0x1DE57 ^ u64::from(std::process::id());
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(100 + next_rand(&mut rng) % 300));
        if let Some(s) = srv.try_wait().expect("server status") {
            panic!("the server exited on its own before kill {}: {s}", k + 1);
        }
        srv.kill().expect("SIGKILL");
        srv.wait().expect("reap");
        assert!(
            feeds[0].try_wait().expect("feed status").is_none() || k + 1 == KILLS,
            "the feed finished before kill {}: the test would not test resuming",
            k + 1
        );
        srv = server(kit, dir.path(), &addr, partitions, false);
        if k % 4 == 1 {
            // A producer dies too; a new `weir feed` on the same file
            // resumes at the server's expected sequence (line numbers).
            let p = k % producers;
            feeds[p].kill().expect("SIGKILL feed");
            feeds[p].wait().expect("reap feed");
            feeds[p] = start_feed(p);
        }
    }
    for feed in &mut feeds {
        let status = wait(feed, 180, "weir feed");
        assert!(status.success(), "weir feed failed: {status}");
    }
    srv.kill().expect("SIGKILL");
    srv.wait().expect("reap");
    let mut last = server(kit, dir.path(), &addr, partitions, true);
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
    let want: BTreeMap<String, u32> = (0..producers)
        .flat_map(|p| (0..share).map(move |i| (record(p, i), 1)))
        .collect();
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
    // (With partitions: in the logs whose segments were deleted; a
    // partition no producer hashed to, or one that stayed small, has none.)
    let snapshots = (0..partitions)
        .map(|p| match partitions {
            1 => "input".to_string(),
            _ => format!("input-p{p}"),
        })
        .filter(|log| {
            dir.path()
                .join(format!("data/wal/{log}.producers"))
                .is_file()
        })
        .count();
    assert!(snapshots >= 1, "no producer table snapshot");
}
