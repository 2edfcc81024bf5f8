//! The real `weir` binary on a `kind = "kafka"` pipeline over a real
//! Kafka-protocol broker (tansu, tests/kafka_common), writing numbered
//! records to `text_files` and to a `kafka` sink topic: SIGKILL of weir at
//! random moments (mid-batch, mid-commit, between batches) loses and
//! doubles nothing in either output; `weir check` reads the keys and
//! refuses a broker off this machine without TLS. Every wait polls with a
//! deadline; the kill moments come from a fixed seed.

mod common;
mod kafka_common;
mod nats_common;
mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kafka_common::Broker;
use service_common::{number_counts, spawn_logged, wait_for, weir, Guard};

const PARTITIONS: i32 = 3;

fn write_pipeline(dir: &Path, b: &Broker, records_max: u64) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nbatch_interval = \"100ms\"\nbatch_records_max = {records_max}\nadaptive_batches = false\n\
         [service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"events\"\nkind = \"kafka\"\nbrokers = [\"{addr}\"]\ntopics = [\"in\"]\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/n\"\nskip_empty = true\n\
         [[sink]]\nkind = \"kafka\"\nbrokers = [\"{addr}\"]\ntopic = \"out\"\nsink_id = \"copy\"\nproduce_bytes_max = 2000\n",
        addr = b.addr()
    );
    let p = dir.join("p.toml");
    std::fs::write(&p, text).expect("write the pipeline");
    p
}

/// Produces the numbers `range` spread over the partitions.
fn produce_numbers(b: &Broker, range: std::ops::Range<u64>) {
    for p in 0..PARTITIONS {
        let v: Vec<String> = range
            .clone()
            .filter(|i| i % PARTITIONS as u64 == p as u64)
            .map(|i| i.to_string())
            .collect();
        b.produce("in", p, &v, 97);
    }
}

fn total(counts: &BTreeMap<u64, u32>) -> u64 {
    counts.values().map(|&n| u64::from(n)).sum()
}

/// The numbers in the `out` topic, with how often each is there, and
/// whether every record carries the sink's headers.
fn topic_counts(b: &Broker) -> BTreeMap<u64, u32> {
    let mut m = BTreeMap::new();
    for p in 0..PARTITIONS {
        for (_, r) in b.read_all("out", p) {
            assert!(r.headers.contains_key("weir-sink") && r.headers.contains_key("weir-place"));
            let v = String::from_utf8(r.value.expect("a value")).expect("UTF-8");
            *m.entry(v.parse::<u64>().expect("a number")).or_insert(0) += 1;
        }
    }
    m
}

fn assert_exactly_once(counts: &BTreeMap<u64, u32>, n: u64, what: &str) {
    let doubled: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(doubled.is_empty(), "{what}: doubled: {doubled:?}");
    let missing: Vec<u64> = (0..n).filter(|i| !counts.contains_key(i)).take(5).collect();
    assert!(missing.is_empty(), "{what}: missing: {missing:?} of {n}");
    assert_eq!(counts.len() as u64, n, "{what}");
}

fn start(pipeline: &Path, data: &Path) -> (Guard, std::sync::mpsc::Receiver<String>) {
    spawn_logged(weir().arg("run").arg(pipeline).arg("--data-dir").arg(data))
}

#[test]
fn sigkill_of_weir_at_random_moments_loses_and_doubles_nothing() {
    let b = Broker::start();
    b.create_topic("in", PARTITIONS);
    b.create_topic("out", PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = data.join("out");
    let pipeline = write_pipeline(dir.path(), &b, 300);
    let mut seed = 0x00ca_fe15_u64;
    let mut produced = 0u64;
    for round in 0..5 {
        produce_numbers(&b, produced..produced + 1500);
        produced += 1500;
        let (mut g, _rx) = start(&pipeline, &data);
        let before = total(&number_counts(&out));
        wait_for("output of this run", || {
            total(&number_counts(&out)) > before
        });
        let ms = 10 + common::next_rand(&mut seed) % 300;
        std::thread::sleep(Duration::from_millis(ms));
        g.signal("KILL");
        let _ = g.wait_exit(Duration::from_secs(30));
        eprintln!("round {round}: killed after {ms} ms");
    }
    let (mut g, rx) = start(&pipeline, &data);
    service_common::line_with(&rx, "ready");
    let t0 = std::time::Instant::now();
    while total(&number_counts(&out)) < produced {
        if t0.elapsed() > Duration::from_secs(60) {
            let c = number_counts(&out);
            g.signal("KILL");
            panic!(
                "files hold {} of {produced}; log:\n{}",
                total(&c),
                service_common::all_lines(&rx)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("every record in the topic", || {
        total(&topic_counts(&b)) >= produced
    });
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    if status.code() != Some(0) {
        panic!(
            "exit status {status:?}; log:\n{}",
            service_common::all_lines(&rx)
        );
    }
    assert_exactly_once(&number_counts(&out), produced, "text files");
    assert_exactly_once(&topic_counts(&b), produced, "the out topic");
}

#[test]
fn check_reads_a_kafka_pipeline_and_refuses_a_far_broker_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.toml");
    std::fs::write(
        &ok,
        "[[source]]\nid = \"events\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\ntopics = [\"orders\", \"returns\"]\n\
         start = \"latest\"\nstart_offsets = [\"orders:0:42\"]\nmax_rate_per_partition = 1000\nformat = \"record\"\n\
         [[sink]]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\ntopic = \"copies\"\n",
    )
    .unwrap();
    let out = weir().arg("check").arg(&ok).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Kafka topics `orders`, `returns`"), "{text}");
    assert!(text.contains("Kafka topic `copies`"), "{text}");

    let far = dir.path().join("far.toml");
    std::fs::write(
        &far,
        "[[source]]\nid = \"events\"\nkind = \"kafka\"\nbrokers = [\"kafka.example.com:9092\"]\ntopics = [\"orders\"]\n\
         [[sink]]\nkind = \"print\"\n",
    )
    .unwrap();
    let out = weir().arg("check").arg(&far).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("brokers") && text.contains("tls_ca_file"),
        "{text}"
    );
    assert!(
        text.contains("far.toml:4"),
        "points at the brokers line: {text}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[source]]\nid = \"events\"\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\ntopics = [\"orders\"]\nstart = \"middle\"\n\
         [[sink]]\nkind = \"print\"\n",
    )
    .unwrap();
    let out = weir().arg("check").arg(&bad).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("\"earliest\" or \"latest\"") && text.contains("middle"),
        "{text}"
    );
}

/// systemd's `ExecStartPre` runs `weir check --data-dir`: a pipeline with
/// the exactly-once sinks (Kafka, JetStream, PostgreSQL) must pass it
/// against an existing checkpoint, though nothing connects offline.
#[test]
fn check_with_a_data_dir_accepts_the_exactly_once_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = "[pipeline]\nbatch_interval = \"100ms\"\n[service]\nhttp_address = \"off\"\n\
                [[source]]\nid = \"events\"\nkind = \"generator\"\nrate = 50\n";
    let first = dir.path().join("first.toml");
    std::fs::write(&first, format!("{head}[[sink]]\nkind = \"print\"\n")).unwrap();
    let out = weir()
        .arg("run")
        .arg(&first)
        .args(["--batches", "2", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sinks = dir.path().join("sinks.toml");
    std::fs::write(
        &sinks,
        format!(
            "{head}[[sink]]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9\"]\ntopic = \"out\"\n\
             [[sink]]\nkind = \"jetstream\"\nservers = [\"nats://127.0.0.1:9\"]\nsubject = \"out.x\"\n"
        ),
    )
    .unwrap();
    let out = weir()
        .arg("check")
        .arg("--data-dir")
        .arg(&data)
        .arg(&sinks)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("needs a data directory") && !text.contains("needs a context"),
        "{text}"
    );
}
