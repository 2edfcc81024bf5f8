//! Bad records with the real binary (issue 13, item 1): a line a JSON step
//! cannot parse fails the batch naming step, stream and record number
//! (`on_error = "fail"`), or goes to the dead-letter log and the run goes
//! on (`"dead_letter"`): every good record is output exactly once, `weir
//! dead-letter list` shows the bad one with its position and error, the
//! metrics count it, and a SIGKILL mid-run never duplicates an entry.

mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use service_common::{
    feed_file, http_get, line_with, spawn_logged, wait_for, weir, Guard, DEADLINE,
};

fn pipeline(dir: &Path, on_error: &str, extra: &str) -> std::path::PathBuf {
    let p = dir.join(format!("p-{on_error}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"
[pipeline]
batch_interval = "100ms"
{extra}
[service]
http_address = "127.0.0.1:0"
[[source]]
id = "events"
kind = "ingest"
address = "127.0.0.1:0"
[[step]]
id = "parsed"
op = "parse_json"
on_error = "{on_error}"
[[sink]]
kind = "text_files"
prefix = "out/recs"
"#
        ),
    )
    .expect("write pipeline");
    p
}

/// Starts `weir run`; returns it, the ingest address and the status address.
fn start(p: &Path, data: &Path) -> (Guard, String, String, mpsc::Receiver<String>) {
    let (g, rx) = spawn_logged(weir().arg("run").arg(p).arg("--data-dir").arg(data));
    let addr_after = |l: &str, key: &str| {
        l.split(key)
            .nth(1)
            .and_then(|a| a.split(['/', ' ']).next())
            .expect("address")
            .to_string()
    };
    let ingest = addr_after(&line_with(&rx, "ingest server listening"), "address=");
    let http = addr_after(&line_with(&rx, "status page"), "http://");
    (g, ingest, http, rx)
}

/// `n` JSON lines `{"i":k}`; the lines at `bad` are not JSON.
fn input(dir: &Path, n: u64, bad: &[u64]) -> std::path::PathBuf {
    let f = dir.join("in.jsonl");
    let text: String = (0..n)
        .map(|i| {
            if bad.contains(&i) {
                format!("oops {i} not json\n")
            } else {
                format!("{{\"i\":{i}}}\n")
            }
        })
        .collect();
    std::fs::write(&f, text).expect("write input");
    f
}

/// Every `i` in the output files, with its count.
fn outputs(data: &Path) -> BTreeMap<u64, u32> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(data.join("out"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            *m.entry(v["i"].as_u64().expect("i")).or_default() += 1;
        }
    }
    m
}

fn dead_letter_list(data: &Path) -> String {
    let out = weir()
        .args(["dead-letter", "list", "--data-dir"])
        .arg(data)
        .output()
        .expect("dead-letter list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_malformed_line_under_fail_stops_the_run_naming_step_stream_and_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), "fail", "");
    let data = dir.path().join("data");
    let (mut g, ingest, _, rx) = start(&p, &data);
    feed_file(&ingest, &input(dir.path(), 10, &[4]), "t");
    let status = g.wait_exit(DEADLINE);
    assert!(!status.success(), "the run must fail on the bad record");
    let mut log = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(5)) {
        log.push_str(&l);
        log.push('\n');
    }
    for want in [
        "step `parsed`",
        "record 4 of stream `events`",
        "not JSON",
        "oops 4 not json",
        "on_error = \\\"dead_letter\\\"",
        "weir wal skip --stream events --from 4 --to 5",
    ] {
        assert!(
            log.contains(want) || log.contains(&want.replace("\\\"", "\"")),
            "no {want:?} in\n{log}"
        );
    }
    // Nothing of the failed batch was committed or written.
    assert!(!outputs(&data).contains_key(&4));

    // The record, as the log holds it.
    let inspect = weir()
        .args(["wal", "inspect"])
        .arg(data.join("wal/events"))
        .args(["--from", "4", "--to", "5"])
        .output()
        .expect("wal inspect");
    let shown = String::from_utf8_lossy(&inspect.stdout);
    assert!(shown.contains("4\t\"oops 4 not json\""), "{shown}");

    // The way out: skip record 4 deliberately, with an audit line.
    let skip = |from: &str, to: &str| {
        weir()
            .args(["wal", "skip", "--data-dir"])
            .arg(&data)
            .args(["--stream", "events", "--from", from, "--to", to])
            .args(["--reason", "malformed line, ticket 12"])
            .output()
            .expect("wal skip")
    };
    let past_end = skip("4", "11");
    assert!(!past_end.status.success());
    assert!(String::from_utf8_lossy(&past_end.stderr).contains("the log ends at record 10"));
    let ok = skip("4", "5");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let show = weir()
        .args(["checkpoint", "show"])
        .arg(&data)
        .output()
        .expect("checkpoint show");
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.contains("skipped (weir wal skip): stream `events` records 4..5")
            && show.contains("malformed line, ticket 12"),
        "{show}"
    );
    // The next run processes everything else, exactly once.
    let (mut g, _, http, _rx) = start(&p, &data);
    wait_for("the other records processed", || outputs(&data).len() == 9);
    let _ = http_get(&http, "/status").1;
    g.signal("TERM");
    assert_eq!(g.wait_exit(DEADLINE).code(), Some(0));
    let want: BTreeMap<u64, u32> = (0..10).filter(|&i| i != 4).map(|i| (i, 1)).collect();
    assert_eq!(outputs(&data), want);
    // Committed records cannot be skipped.
    let committed = skip("0", "1");
    assert!(!committed.status.success());
    assert!(String::from_utf8_lossy(&committed.stderr).contains("already committed"));
}

#[test]
fn a_malformed_line_under_dead_letter_is_kept_listed_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), "dead_letter", "");
    let data = dir.path().join("data");
    let (mut g, ingest, http, rx) = start(&p, &data);
    feed_file(&ingest, &input(dir.path(), 10, &[4]), "t");
    line_with(&rx, "records dead-lettered");
    wait_for("the dead letter in the metrics", || {
        http_get(&http, "/metrics")
            .1
            .contains("weir_records_dead_lettered_total{step=\"parsed\"} 1")
    });
    // A skip is refused while the service runs (it holds the checkpoint).
    let running = weir()
        .args(["wal", "skip", "--data-dir"])
        .arg(&data)
        .args([
            "--stream", "events", "--from", "9", "--to", "10", "--reason", "x",
        ])
        .output()
        .expect("wal skip");
    assert!(!running.status.success());
    let why = String::from_utf8_lossy(&running.stderr);
    assert!(why.contains("lock"), "{why}");
    g.signal("TERM");
    assert_eq!(g.wait_exit(DEADLINE).code(), Some(0));
    let got = outputs(&data);
    let want: BTreeMap<u64, u32> = (0..10).filter(|&i| i != 4).map(|i| (i, 1)).collect();
    assert_eq!(got, want, "every good record exactly once");
    let list = dead_letter_list(&data);
    assert!(list.contains("stream events record 4"), "{list}");
    assert!(list.contains("step parsed: not JSON"), "{list}");
    assert!(list.contains("\"oops 4 not json\""), "{list}");
    assert!(list.contains("1 dead-lettered records"), "{list}");
    let out = weir()
        .args(["dead-letter", "replay", "--data-dir"])
        .arg(&data)
        .output()
        .expect("replay");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "oops 4 not json\n");
}

#[test]
fn a_kill_mid_run_with_dead_letters_duplicates_no_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small batches, so the kill lands while batches still dead-letter.
    let p = pipeline(
        dir.path(),
        "dead_letter",
        "batch_records_max = 100\nadaptive_batches = false",
    );
    let data = dir.path().join("data");
    let n = 3000;
    let bad: Vec<u64> = (0..n).filter(|i| i % 50 == 7).collect();
    let file = input(dir.path(), n, &bad);
    let (mut g, ingest, _, rx) = start(&p, &data);
    feed_file(&ingest, &file, "t");
    line_with(&rx, "records dead-lettered");
    g.signal("KILL");
    g.wait_exit(DEADLINE);
    let (mut g, _, http, _rx) = start(&p, &data);
    wait_for("every record processed", || {
        let m = http_get(&http, "/status").1;
        m.contains("\"backlog_records\":0")
    });
    g.signal("TERM");
    assert_eq!(g.wait_exit(DEADLINE).code(), Some(0));
    let got = outputs(&data);
    assert_eq!(got.len() as u64, n - bad.len() as u64);
    assert!(got.values().all(|&c| c == 1), "a good record doubled");
    let list = dead_letter_list(&data);
    let lsns: Vec<u64> = list
        .lines()
        .filter_map(|l| l.split("stream events record ").nth(1))
        .map(|r| r.split(',').next().expect("lsn").parse().expect("a number"))
        .collect();
    let mut sorted = lsns.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), lsns.len(), "an entry was duplicated:\n{list}");
    assert_eq!(sorted, bad, "every bad record exactly once");
}
