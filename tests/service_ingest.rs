//! TOML pipelines on the ingest server with the real binary: `weir feed`
//! into a key-value table, exactly; the chaos kit (SIGKILLs while
//! feeding, nothing lost or doubled); a stop that leaves a durable
//! backlog after `stop_timeout` (exit 0, processed after the restart) and
//! a second signal that exits at once (recovered exactly once).

mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use service_common::{line_with, spawn_logged, wait_for, weir, Guard};

/// Starts `weir run PIPELINE --data-dir DATA`; returns it and the ingest
/// address it logged.
fn start(pipeline: &Path, data: &Path) -> (Guard, String, mpsc::Receiver<String>) {
    let (g, rx) = spawn_logged(weir().arg("run").arg(pipeline).arg("--data-dir").arg(data));
    let l = line_with(&rx, "ingest server listening");
    let addr = l
        .split("address=")
        .nth(1)
        .and_then(|a| a.split_whitespace().next())
        .expect("address")
        .to_string();
    (g, addr, rx)
}

fn feed(addr: &str, file: &Path) {
    let out = weir()
        .args(["feed", addr])
        .arg(file)
        .args([
            "--producer",
            "test",
            "--progress",
            "none",
            "--retry-secs",
            "60",
        ])
        .output()
        .expect("feed");
    assert!(
        out.status.success(),
        "feed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every number in the text files under `dir`, with its count.
fn counts(dir: &Path) -> BTreeMap<u64, u32> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            *m.entry(l.parse().expect("a number")).or_default() += 1;
        }
    }
    m
}

#[test]
fn feed_into_a_key_value_table_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        r#"
[pipeline]
batch_interval = "200ms"
[service]
http_address = "off"
[[source]]
id = "events"
kind = "ingest"
address = "127.0.0.1:0"
[[step]]
id = "parsed"
op = "parse_json"
on_error = "drop"
[[step]]
op = "key_by"
field = "user"
[[step]]
id = "user_totals"
op = "running_total"
field = "amount"
[[sink]]
kind = "kv"
table = "user_totals"
"#,
    )
    .expect("write");
    let input = dir.path().join("in.jsonl");
    let mut text = String::new();
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..500i64 {
        let user = format!("u{}", i % 7);
        *want.entry(user.clone()).or_default() += i;
        text.push_str(&format!("{{\"user\":\"{user}\",\"amount\":{i}}}\n"));
        if i == 250 {
            text.push_str("not json\n");
        }
    }
    std::fs::write(&input, text).expect("write");
    let data = dir.path().join("data");
    let (mut g, addr, rx) = start(&p, &data);
    line_with(&rx, "ready");
    feed(&addr, &input);
    // Acknowledged means durable; a graceful stop processes all of it.
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let out = weir()
        .args(["kv", "scan"])
        .arg(&data)
        .args(["user_totals", "--value-as", "string"])
        .output()
        .expect("kv scan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeMap<String, i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').expect("key<TAB>value");
            (
                k.to_string(),
                v.parse().unwrap_or_else(|_| panic!("value {v}")),
            )
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_chaos_kit_finds_nothing_lost_or_duplicated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = weir()
        .args([
            "chaos",
            "--kills",
            "3",
            "--records",
            "4000",
            "--pause-ms-max",
            "900",
            "--dir",
        ])
        .arg(dir.path().join("chaos"))
        .env("WEIR_LOG", "warn")
        .output()
        .expect("chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("kills: 3, records: 4000, lost: 0, duplicated: 0, unexpected lines: 0"),
        "{stdout}"
    );
    let c = counts(&dir.path().join("chaos/data/out"));
    assert_eq!(c.len(), 4000);
    assert!(c.values().all(|&n| n == 1));
}

const SLOW: &str = r#"
[pipeline]
batch_interval = "100ms"
batch_records_max = 40
stop_timeout = "1s"
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

fn numbers(dir: &Path, n: u64) -> std::path::PathBuf {
    let f = dir.join("numbers.txt");
    let text: String = (1..=n).map(|i| format!("{i}\n")).collect();
    std::fs::write(&f, text).expect("write");
    f
}

#[test]
fn a_stop_leaves_the_rest_of_the_backlog_for_the_next_start() {
    // 40 records per 100 ms batch: 6000 acknowledged records take 15 s to
    // process, far more than stop_timeout (1 s).
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, SLOW).expect("write");
    let input = numbers(dir.path(), 6000);
    let data = dir.path().join("data");
    let out = data.join("out");
    let (mut g, addr, rx) = start(&p, &data);
    line_with(&rx, "ready");
    feed(&addr, &input);
    let asked = Instant::now();
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stop took {took:?} with stop_timeout 1 s"
    );
    let done = counts(&out);
    assert!(
        !done.is_empty() && done.len() < 6000,
        "processed {}",
        done.len()
    );
    let st = weir().arg("status").arg(&data).output().expect("status");
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("pending batches: none"), "{text}");
    let backlog: u64 = text
        .lines()
        .find(|l| l.starts_with("log `input`"))
        .and_then(|l| l.split("backlog ").nth(1))
        .and_then(|b| b.split(' ').next())
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(backlog, 6000 - done.len() as u64, "{text}");

    // The next start processes the rest; a second signal exits at once
    // (exit 143) and the start after that recovers exactly once.
    let (mut g, _, rx) = start(&p, &data);
    line_with(&rx, "ready");
    g.signal("TERM");
    // Two signals sent back to back can reach the process as one (a
    // pending signal is not queued twice): send the second only once the
    // first has started the stop.
    line_with(&rx, "stopping");
    g.signal("TERM");
    let st = g.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(143), "{st:?}");
    let (mut g, _, _rx) = start(&p, &data);
    wait_for("every record", || counts(&out).len() == 6000);
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let c = counts(&out);
    assert_eq!(c.len(), 6000);
    assert!(c.values().all(|&n| n == 1), "duplicates");
    assert_eq!(c.keys().next(), Some(&1));
    assert_eq!(c.keys().last(), Some(&6000));
}
