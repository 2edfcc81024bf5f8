//! Real processes, real kill -9: a child (`weir-testkit wal torture`)
//! appends from several threads and prints `ack THREAD SEQ` after each
//! acknowledged append; the parent kills it with SIGKILL at random moments,
//! restarts it on the same directory, and finally checks that every
//! acknowledged record is in the log, intact, in order, without gaps or
//! duplicates.
//!
//! The kill moments are random (a seeded generator picks how many acks to
//! wait for); correctness never depends on timing.

mod common;
use common::next_rand;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use weir::testing::parse_torture_record;
use weir::wal::{Wal, WalConfig};

const THREADS: usize = 3;
const ROUNDS: usize = 8;

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_weir-testkit");
    let mut rng = 0x5eed_u64 ^ u64::from(std::process::id());
    // Highest acknowledged sequence per thread across all rounds.
    let mut acked: HashMap<usize, u64> = HashMap::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(bin)
            .args(["wal", "torture"])
            .arg(dir.path())
            .args([
                "--threads",
                &THREADS.to_string(),
                "--segment-bytes-max",
                "2048",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir-testkit");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wait_for = 1 + next_rand(&mut rng) % 400;
        let mut seen = 0;
        while seen < wait_for {
            let Some(line) = lines.next() else { break };
            let line = line.expect("read child output");
            let mut parts = line.split_whitespace();
            assert_eq!(parts.next(), Some("ack"), "unexpected output: {line}");
            let t: usize = parts.next().and_then(|x| x.parse().ok()).expect("thread");
            let seq: u64 = parts.next().and_then(|x| x.parse().ok()).expect("seq");
            let e = acked.entry(t).or_insert(0);
            *e = (*e).max(seq);
            seen += 1;
        }
        assert!(seen > 0, "round {round}: the child acknowledged nothing");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    let config = WalConfig {
        segment_bytes_max: 2048,
        record_bytes_max: 256,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(dir.path(), config).expect("reopen after kills");
    let mut next: HashMap<usize, u64> = HashMap::new();
    let mut count = 0u64;
    wal.read(wal.first_lsn()..wal.end())
        .expect("range")
        .for_each_ref(|lsn, p| {
            let (t, seq) = parse_torture_record(p)
                .unwrap_or_else(|| panic!("record {lsn} is not a torture record: {p:?}"));
            let want = next.entry(t).or_insert(0);
            assert_eq!(seq, *want, "thread {t}: gap or duplicate at record {lsn}");
            *want += 1;
            count += 1;
        })
        .expect("every record reads back intact");
    for (t, max) in &acked {
        let have = next.get(t).copied().unwrap_or(0);
        assert!(
            have > *max,
            "thread {t}: acknowledged up to {max} but the log holds only 0..{have}"
        );
    }
    assert!(
        wal.segments().len() > 2,
        "the test must cross segment boundaries"
    );
    assert!(count > 0);
}
