//! TOML pipelines on the ingest server with the real binary: `weir feed`
//! into a key-value table, exactly; the chaos kit (SIGKILLs while
//! feeding, nothing lost or doubled); a stop that leaves a durable
//! backlog after `stop_timeout` (exit 0, processed after the restart) and
//! a second signal that exits at once (recovered exactly once); `weir
//! feed` of a line that is not UTF-8 fails naming it while the service
//! runs on, processes the valid lines and restarts.

mod service_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use service_common::{feed_file, line_with, number_counts, start_ingest, wait_for, weir};

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
    let (mut g, addr, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    feed_file(&addr, &input, "test");
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
    let c = number_counts(&dir.path().join("chaos/data/out"));
    assert_eq!(c.len(), 4000);
    assert!(c.values().all(|&n| n == 1));
}

const SLOW: &str = r#"
[pipeline]
batch_interval = "100ms"
batch_records_max = 40
stop_timeout = "4s"
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
    // process, far more than stop_timeout (4 s).
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, SLOW).expect("write");
    let input = numbers(dir.path(), 6000);
    let data = dir.path().join("data");
    let out = data.join("out");
    let (mut g, addr, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    feed_file(&addr, &input, "test");
    let asked = Instant::now();
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(12),
        "the stop took {took:?} with stop_timeout 4 s"
    );
    let done = number_counts(&out);
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
    // The stop said how many records wait for the next start.
    let stopped = line_with(&rx, "stopped cleanly");
    assert!(
        stopped.contains(&format!("{backlog} records past the last batch wait"))
            && stopped.contains(&format!("`input`: {backlog}")),
        "{stopped}"
    );

    second_signals_during_a_stop(&p, &data);
    // The start after that recovers exactly once.
    let (mut g, _, rx) = start_ingest(&p, &data);
    wait_for("every record", || number_counts(&out).len() == 6000);
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let stopped = line_with(&rx, "stopped cleanly");
    assert!(stopped.contains("no input waits"), "{stopped}");
    let c = number_counts(&out);
    assert_eq!(c.len(), 6000);
    assert!(c.values().all(|&n| n == 1), "duplicates");
    assert_eq!(c.keys().next(), Some(&1));
    assert_eq!(c.keys().last(), Some(&6000));
}

/// The next start drains a backlog of thousands of records for
/// stop_timeout (4 s): a signal repeated at once (as `timeout` sends one
/// to the child and one to its group) is the same stop; one sent after
/// the grace window exits at once (143).
fn second_signals_during_a_stop(p: &Path, data: &Path) {
    let grace = Duration::from_millis(weir::service::SIGNAL_GRACE_MS);
    let (mut g, _, rx) = start_ingest(p, data);
    line_with(&rx, "ready");
    let first = Instant::now();
    g.signal("TERM");
    line_with(&rx, "stopping");
    let seen = Instant::now();
    g.signal("TERM");
    // The repeat was sent well inside the grace window (unless this
    // machine stalled for half of it, when it proves nothing either way).
    if first.elapsed() < grace / 2 {
        line_with(&rx, "counted once");
    }
    // `seen` is after the first signal was handled, so this one arrives
    // more than the grace window after it.
    std::thread::sleep(
        (seen + grace + Duration::from_millis(200)).saturating_duration_since(Instant::now()),
    );
    g.signal("TERM");
    let st = g.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(143), "{st:?}");
}

// ---- A line that is not UTF-8 is refused before it is acknowledged ----

fn feed_as(addr: &str, file: &Path, producer: &str) -> std::process::Output {
    weir()
        .args(["feed", addr])
        .arg(file)
        .args([
            "--producer",
            producer,
            "--progress",
            "none",
            "--retry-secs",
            "30",
        ])
        .output()
        .expect("feed")
}

/// Every line of the output files.
fn output_lines(data: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(data.join("out"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).expect("output is UTF-8");
        v.extend(text.lines().map(str::to_string));
    }
    v
}

#[test]
fn feed_of_a_line_that_is_not_utf8_fails_naming_it_and_the_service_keeps_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.toml");
    std::fs::write(&p, SLOW).expect("write");
    let data = dir.path().join("data");
    let bad = dir.path().join("bad.txt");
    let mut input = b"1\n2\n3\n4\n5\n".to_vec();
    input.extend_from_slice(b"caf\xe9 au lait\n7\n8\n");
    std::fs::write(&bad, input).expect("write");
    let good = dir.path().join("good.txt");
    std::fs::write(&good, "10\n11\n").expect("write");

    let (mut g, addr, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    let out = feed_as(&addr, &bad, "bad");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the feed succeeded: {stderr}");
    assert!(
        stderr.contains("line 6 of the input") && stderr.contains("UTF-8"),
        "{stderr}"
    );
    // The service runs on: another producer is served.
    let out = feed_as(&addr, &good, "good");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: BTreeSet<String> = ["1", "2", "3", "4", "5", "10", "11"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    wait_for("the valid lines in the output", || {
        output_lines(&data).into_iter().collect::<BTreeSet<_>>() == want
    });
    line_with(&rx, "invalid_record");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));

    // A restart has nothing unprocessable to replay.
    let (mut g, _addr, rx) = start_ingest(&p, &data);
    line_with(&rx, "ready");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let mut got = output_lines(&data);
    got.sort();
    let mut want: Vec<String> = want.into_iter().collect();
    want.sort();
    assert_eq!(got, want, "every valid line once, nothing else");
}
