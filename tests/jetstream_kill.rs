//! The real `weir` binary on a `kind = "jetstream"` pipeline over a real
//! 3-node cluster (tests/nats_common), writing numbered messages to
//! `text_files` (exactly once: a replayed batch rewrites its file):
//! SIGKILL of weir at random moments, SIGKILL of a stream's leader node
//! mid-run, and a range purged while allocated but uncommitted. Every wait
//! polls with a deadline; the kill moments come from a fixed seed.

mod common;
mod nats_common;
mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nats_common::{Cluster, ClusterOptions};
use service_common::{all_lines, number_counts, spawn_logged, wait_for, weir, Guard};

const STREAMS: [&str; 3] = ["EV0", "EV1", "EV2"];

/// Subjects `ev.<key>` land in stream `EV<partition(3) of key>`.
fn cluster() -> Cluster {
    let mut c = Cluster::start_with(
        3,
        ClusterOptions {
            extra_config: "mappings = { \"ev.*\": \"ev.{{partition(3,1)}}.{{wildcard(1)}}\" }"
                .into(),
        },
    );
    for (p, s) in STREAMS.iter().enumerate() {
        c.create_stream(s, &[&format!("ev.{p}.*")]);
    }
    c
}

/// Publishes the numbers `range` as messages, spread over 30 keys.
fn publish_numbers(c: &mut Cluster, range: std::ops::Range<u64>) {
    let mut by_key: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
    for i in range.clone() {
        by_key
            .entry(i % 30)
            .or_default()
            .push(Bytes::from(i.to_string()));
    }
    for (k, msgs) in by_key {
        c.publish(
            &format!("ev.k{k}"),
            &format!("n{}-{k}-", range.start),
            &msgs,
        );
    }
}

fn write_pipeline(dir: &Path, c: &Cluster, interval: &str, records_max: u64) -> std::path::PathBuf {
    let servers: Vec<String> = c.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let text = format!(
        "[pipeline]\nbatch_interval = \"{interval}\"\nbatch_records_max = {records_max}\nadaptive_batches = false\n\
         [service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"events\"\nkind = \"jetstream\"\nservers = [{}]\nstreams = [\"EV0\", \"EV1\", \"EV2\"]\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/n\"\nskip_empty = true\n",
        servers.join(", ")
    );
    let p = dir.join("p.toml");
    std::fs::write(&p, text).expect("write the pipeline");
    p
}

fn start(pipeline: &Path, data: &Path) -> (Guard, std::sync::mpsc::Receiver<String>) {
    spawn_logged(weir().arg("run").arg(pipeline).arg("--data-dir").arg(data))
}

fn total(counts: &BTreeMap<u64, u32>) -> u64 {
    counts.values().map(|&n| u64::from(n)).sum()
}

/// Every number of `0..n` exactly once.
fn assert_exactly_once(counts: &BTreeMap<u64, u32>, n: u64) {
    let doubled: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(doubled.is_empty(), "doubled: {doubled:?}");
    let missing: Vec<u64> = (0..n).filter(|i| !counts.contains_key(i)).take(5).collect();
    assert!(missing.is_empty(), "missing: {missing:?} of {n}");
    assert_eq!(counts.len() as u64, n);
}

/// Stops weir with SIGTERM and waits for a clean exit.
fn stop(mut g: Guard) {
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[test]
fn sigkill_of_weir_at_random_moments_loses_and_doubles_nothing() {
    let mut c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = data.join("out");
    let pipeline = write_pipeline(dir.path(), &c, "100ms", 400);
    let mut seed = 0x005e_ed15_u64;
    let mut published = 0u64;
    for round in 0..5 {
        publish_numbers(&mut c, published..published + 1500);
        published += 1500;
        let (mut g, _rx) = start(&pipeline, &data);
        // Kill once some of this round's output is there, at a random
        // moment after it: mid-batch, mid-commit or between batches.
        let before = total(&number_counts(&out));
        wait_for("output of this run", || {
            total(&number_counts(&out)) > before
        });
        let ms = 20 + common::next_rand(&mut seed) % 400;
        std::thread::sleep(Duration::from_millis(ms));
        g.signal("KILL");
        let _ = g.wait_exit(Duration::from_secs(30));
        eprintln!("round {round}: killed after {ms} ms");
    }
    // A last run to the end.
    let (g, rx) = start(&pipeline, &data);
    service_common::line_with(&rx, "ready");
    wait_for("every message", || total(&number_counts(&out)) >= published);
    stop(g);
    assert_exactly_once(&number_counts(&out), published);
}

#[test]
fn sigkill_of_a_streams_leader_mid_run_stalls_then_completes_exactly_once() {
    let mut c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = data.join("out");
    let pipeline = write_pipeline(dir.path(), &c, "100ms", 500);
    publish_numbers(&mut c, 0..1000);
    let (g, rx) = start(&pipeline, &data);
    wait_for("first output", || total(&number_counts(&out)) > 0);
    // Kill the leader of every stream's Raft group in turn while weir
    // reads and the publishes go on (they stall, then continue).
    let mut published = 1000;
    for s in STREAMS {
        let leader = c.stream_leader(s);
        c.kill(leader);
        let t = Instant::now();
        publish_numbers(&mut c, published..published + 1000);
        published += 1000;
        eprintln!(
            "{s}: leader n{leader} killed; 1000 publishes took {:?}",
            t.elapsed()
        );
        let new_leader = c.stream_leader(s);
        assert_ne!(new_leader, leader);
        c.restart(leader);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while total(&number_counts(&out)) < published {
        if Instant::now() > deadline {
            let log: Vec<String> = rx.try_iter().collect();
            panic!(
                "{} of {published} after 90 s; weir's log:\n{}",
                total(&number_counts(&out)),
                log.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(g);
    let log = all_lines(&rx);
    eprintln!(
        "{} retried batches while leaders changed",
        log.matches("will retry").count()
    );
    assert_exactly_once(&number_counts(&out), published);
}

#[test]
fn a_range_purged_before_its_batch_committed_stops_weir_naming_the_gap() {
    let mut c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = data.join("out");
    let pipeline = write_pipeline(dir.path(), &c, "100ms", 300);
    publish_numbers(&mut c, 0..600);
    let (mut g, _rx) = start(&pipeline, &data);
    wait_for("first output", || total(&number_counts(&out)) > 0);
    g.signal("KILL");
    let _ = g.wait_exit(Duration::from_secs(30));
    // Published while weir is down, then removed before weir read them.
    publish_numbers(&mut c, 600..1200);
    for s in STREAMS {
        c.purge(s);
    }
    let (mut g, rx) = start(&pipeline, &data);
    let status = g.wait_exit(Duration::from_secs(120));
    assert_ne!(status.code(), Some(0));
    let log = all_lines(&rx);
    assert!(
        log.contains("are gone: the stream now starts at sequence"),
        "{log}"
    );
    assert!(log.contains("weir wal skip --data-dir"), "{log}");
    assert!(log.contains("--stream events-EV"), "{log}");
    // Nothing of the purged messages was output, nothing twice.
    let counts = number_counts(&out);
    assert!(counts.values().all(|&n| n == 1));
    assert!(
        counts.keys().all(|&k| k < 600),
        "only messages read before the purge"
    );

    // The way out the error names: skip each gap deliberately (one
    // stream's per failed start), then weir goes on with what the streams
    // still hold.
    publish_numbers(&mut c, 1200..1500);
    let mut log = log;
    for _ in 0..STREAMS.len() {
        skip_named_gap(&data, &log);
        let (mut g, rx) = start(&pipeline, &data);
        service_common::line_with(&rx, "starting");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if (1200..1500).all(|k| number_counts(&out).contains_key(&k)) {
                stop(g);
                let counts = number_counts(&out);
                assert!(counts.values().all(|&n| n == 1));
                assert!(counts.keys().all(|&k| !(600..1200).contains(&k)));
                return;
            }
            if let Some(st) = g.child().try_wait().expect("try_wait") {
                g.0 = None;
                assert_ne!(st.code(), Some(0));
                log = all_lines(&rx);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "weir neither finished nor stopped"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("weir still stops after every gap was skipped:\n{log}");
}

/// Runs the `weir wal skip` the first gap error in `log` names.
fn skip_named_gap(data: &Path, log: &str) {
    let line = log
        .lines()
        .find(|l| l.contains("with the service stopped: weir wal skip"))
        .unwrap_or_else(|| panic!("no gap named in\n{log}"));
    let cmd = line
        .split("with the service stopped: ")
        .nth(1)
        .expect("the command");
    let args: Vec<&str> = cmd
        .split(" --reason")
        .next()
        .expect("args")
        .split_whitespace()
        .collect();
    let get = |flag: &str| {
        let i = args.iter().position(|a| *a == flag).expect(flag);
        args[i + 1].trim_end_matches(',').to_string()
    };
    let done = weir()
        .args(["wal", "skip", "--data-dir"])
        .arg(data)
        .args(["--stream", &get("--stream"), "--from", &get("--from")])
        .args(["--to", &get("--to"), "--reason", "purged in a test"])
        .output()
        .expect("weir wal skip");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
}
