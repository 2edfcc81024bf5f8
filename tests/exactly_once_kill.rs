//! Exactly-once across real SIGKILLs: the test-support binary runs the
//! stateful word count (`weir-testkit test-pipeline`) on input that is already durable in
//! its WAL; the test kills it with SIGKILL at random moments, ten times,
//! restarts it each time, lets a last run drain the input, and checks that
//! every record was counted exactly once: per-batch counts sum to the
//! truth, the final running totals and the key-value table `totals` equal
//! it, and no output file is partial.
//!
//! Kill moments are random (seeded); correctness never depends on timing.

mod common;
use common::next_rand;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use weir::wal::{Wal, WalConfig};

/// Fewer lines in the debug profile: there a batch costs ~300 ms (the
/// reader zero-fills a `read_chunk_bytes` buffer per partition read, a slow
/// loop unoptimized), so draining 4000 lines in 37-line batches takes ~30 s,
/// the limit of a graceful stop, and the drain would end short.
const LINES: u64 = if cfg!(debug_assertions) { 1000 } else { 4000 };
const KILLS: usize = 10;

fn line(i: u64) -> String {
    format!("a{} b{} c{}", i % 50, i % 7, i % 3)
}

fn truth() -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for i in 0..LINES {
        for w in line(i).split_whitespace() {
            *m.entry(w.to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// Parses a file of `(word,count)` lines; panics on anything partial.
fn parse(path: &Path) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(path).expect("read output");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} is partial",
        path.display()
    );
    text.lines()
        .map(|l| {
            let inner = l
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{}: bad line {l:?}", path.display()));
            let (w, n) = inner.rsplit_once(',').expect("pair");
            (w.to_string(), n.parse().expect("count"))
        })
        .collect()
}

#[test]
fn every_record_is_counted_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (wal, _) =
            Wal::open(dir.path().join("wal").join("input"), WalConfig::default()).expect("open");
        let lines: Vec<String> = (0..LINES).map(line).collect();
        for chunk in lines.chunks(500) {
            wal.append(chunk).expect("append");
        }
    }
    // Logs filled before the data directory's first start hold records
    // without a checkpoint: weir refuses them until they are adopted.
    let adopted = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["checkpoint", "adopt-logs"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .expect("adopt-logs");
    assert!(adopted.success());
    let bin = env!("CARGO_BIN_EXE_weir-testkit");
    let mut rng = 0xC0FFEE ^ u64::from(std::process::id());
    for _ in 0..KILLS {
        let mut child = Command::new(bin)
            .arg("test-pipeline")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn weir");
        // Random moment: anywhere from opening the stores to mid-batch.
        std::thread::sleep(Duration::from_millis(30 + next_rand(&mut rng) % 400));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let status = Command::new(bin)
        .arg("test-pipeline")
        .arg(dir.path())
        .arg("--drain")
        .stdout(Stdio::null())
        .status()
        .expect("run to the end");
    assert!(status.success(), "the draining run failed: {status}");

    let truth = truth();
    let out = dir.path().join("out");
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals_files = Vec::new();
    for e in std::fs::read_dir(&out).expect("outputs").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file of a write that a kill interrupted
        }
        if let Some(t) = name
            .strip_prefix("counts-")
            .and_then(|r| r.strip_suffix(".txt"))
        {
            t.parse::<u64>().expect("batch time");
            for (w, n) in parse(&e.path()) {
                *summed.entry(w).or_insert(0) += n;
            }
        } else if let Some(t) = name
            .strip_prefix("totals-")
            .and_then(|r| r.strip_suffix(".txt"))
        {
            totals_files.push((t.parse::<u64>().expect("batch time"), e.path()));
        }
    }
    assert_eq!(
        summed, truth,
        "per-batch counts must add up to every record exactly once"
    );
    totals_files.sort();
    let (_, last) = totals_files.last().expect("a totals file");
    assert_eq!(
        parse(last),
        truth,
        "the final running totals count every record exactly once"
    );
    let table: BTreeMap<String, u64> = weir::sink::KvTable::open(dir.path(), "totals")
        .expect("open the key-value table")
        .scan()
        .expect("scan")
        .into_iter()
        .collect();
    assert_eq!(
        table, truth,
        "the key-value table counts every record exactly once"
    );
}
