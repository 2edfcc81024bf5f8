//! The real `weir` binary as a service: a SIGTERM drains, commits and
//! exits 0 with `weir status` clean; systemd's READY=1 / WATCHDOG=1 /
//! STOPPING=1 arrive on $NOTIFY_SOCKET; the HTTP endpoint serves the
//! status page, /status and /metrics with live (increasing) figures.
//! Every wait polls a condition with a deadline.

mod service_common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use service_common::{http_get, line_with, spawn_logged, testkit, wait_for, weir, Guard, DEADLINE};

/// Spawns `weir ARGS` with extra environment; stderr lines come through
/// the receiver.
fn spawn(args: &[&str], envs: &[(&str, &str)]) -> (Guard, std::sync::mpsc::Receiver<String>) {
    let mut cmd = weir();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    spawn_logged(&mut cmd)
}

fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name} in\n{body}"))
        .parse()
        .expect("number")
}

fn out_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn sigterm_drains_commits_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let (mut g, rx) = spawn(
        &[
            "run",
            "--demo",
            "--data-dir",
            &data_s,
            "--http-address",
            "off",
        ],
        &[],
    );
    let out = data.join("out");
    // Windowed output every 2 s: wait for two files.
    wait_for("two output files", || out_files(&out).len() >= 2);
    line_with(&rx, "ready");
    let asked = Instant::now();
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(30));
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    let stopped = line_with(&rx, "stopped cleanly");
    assert!(stopped.contains("batches="), "{stopped}");
    // The last committed batch is on disk, and nothing is pending.
    let st = weir()
        .arg("status")
        .arg(&data)
        .output()
        .expect("weir status");
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(text.contains("pending batches: none"), "{text}");
    assert!(
        text.contains("clean: every allocated batch is committed"),
        "{text}"
    );
    let last: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("last committed batch: "))
        .and_then(|l| l.strip_suffix(" ms"))
        .expect("last committed batch line")
        .parse()
        .expect("ms");
    let files = out_files(&out);
    let newest: u64 = files
        .iter()
        .filter_map(|f| {
            f.strip_prefix("top_hashtags-")?
                .strip_suffix(".txt")?
                .parse()
                .ok()
        })
        .max()
        .expect("an output file");
    // The window slides every 2 batches: the newest file is the last
    // committed batch or the one before it.
    assert!(
        last == newest || last == newest + 1000,
        "last {last}, files {files:?}"
    );
    assert!(text.contains("state `hashtag_window`: "), "{text}");
}

#[test]
fn systemd_gets_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let data = dir.path().join("data").display().to_string();
    let (mut g, _rx) = spawn(
        &[
            "run",
            "--demo",
            "--batches",
            "4",
            "--data-dir",
            &data,
            "--http-address",
            "off",
        ],
        &[
            ("NOTIFY_SOCKET", &sock_path.display().to_string()),
            ("WATCHDOG_USEC", "3000000"),
        ],
    );
    let mut msgs: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let child = g.0.as_mut().expect("child");
    let status = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        if let Some(s) = child.try_wait().expect("try_wait") {
            while let Ok(n) = sock.recv(&mut buf) {
                msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "no exit; got {msgs:?}");
    };
    g.0 = None;
    assert!(status.success(), "{status:?}");
    let pos = |m: &str| msgs.iter().position(|x| x.lines().any(|l| l == m));
    let ready = pos("READY=1").unwrap_or_else(|| panic!("no READY=1 in {msgs:?}"));
    let dog = pos("WATCHDOG=1").unwrap_or_else(|| panic!("no WATCHDOG=1 in {msgs:?}"));
    let stopping = pos("STOPPING=1").unwrap_or_else(|| panic!("no STOPPING=1 in {msgs:?}"));
    assert!(
        pos("STATUS=recovering").is_some_and(|r| r < ready),
        "{msgs:?}"
    );
    assert!(ready < dog && dog < stopping, "order: {msgs:?}");
    assert_eq!(
        msgs.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "{msgs:?}"
    );
}

#[test]
fn the_status_page_metrics_and_status_show_live_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let (mut g, rx) = spawn(
        &[
            "run",
            "--demo",
            "--data-dir",
            &data,
            "--http-address",
            "127.0.0.1:0",
        ],
        &[],
    );
    let l = line_with(&rx, "status page");
    let addr = l
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("address in the log line")
        .to_string();
    let (head, page) = http_get(&addr, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    for part in [
        "<svg id=\"c-rate\"",
        "Scheduling delay",
        "Processing time",
        "Total delay",
        "fetch(\"/status\"",
    ] {
        assert!(page.contains(part), "page lacks {part}");
    }
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    let batches = |addr: &str| -> u64 {
        let (_, body) = http_get(addr, "/status");
        let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
        v["batches_completed"].as_u64().expect("batches_completed")
    };
    wait_for("a first batch", || batches(&addr) >= 1);
    let first = batches(&addr);
    wait_for("more batches", || batches(&addr) > first);
    let (_, body) = http_get(&addr, "/status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["phase"], "running");
    assert_eq!(v["batch_interval_ms"], 1000);
    let rows = v["batches"].as_array().expect("batches");
    assert!(
        rows.iter().any(|r| r["records"].as_u64() > Some(0)),
        "{body}"
    );
    assert_eq!(v["sources"][0]["name"], "tweets_in");
    assert_eq!(
        v["stateful_operators"],
        serde_json::json!(["hashtag_window.panes", "hashtag_window"])
    );

    let (head, m1) = http_get(&addr, "/metrics");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let n1 = metric(&m1, "weir_batches_completed_total");
    assert!(metric(&m1, "weir_input_records_total") > 0.0);
    assert!(
        m1.contains("# TYPE weir_last_batch_processing_seconds gauge"),
        "{m1}"
    );
    assert!(
        m1.contains("weir_source_backlog_records{source=\"tweets_in\"} "),
        "{m1}"
    );
    // The window's panes hold state once a batch with hashtags committed.
    wait_for("live state sizes", || {
        http_get(&addr, "/metrics")
            .1
            .lines()
            .find_map(|l| l.strip_prefix("weir_state_keys{operator=\"hashtag_window.panes\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|n| n > 0.0)
    });
    wait_for("the counter to grow", || {
        metric(
            &http_get(&addr, "/metrics").1,
            "weir_batches_completed_total",
        ) > n1
    });
    let (head, _) = http_get(&addr, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    g.signal("INT");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

#[test]
fn help_has_an_example_for_every_service_subcommand() {
    for sub in ["run", "check", "status", "chaos"] {
        let out = weir().args([sub, "--help"]).output().expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            text.contains("Example"),
            "weir {sub} --help has no example:\n{text}"
        );
    }
    let out = weir()
        .args([
            "run",
            "--log-format",
            "json",
            "--batches",
            "1",
            "--http-address",
            "off",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().expect("t").path().join("d"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO");
}

/// `weir status` on a data directory with an input log: segments, bytes,
/// record range and backlog (records logged but not in a committed batch).
#[test]
fn status_reports_logs_and_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let wal = data.join("wal").join("input");
    let torture = |n: &str| {
        let out = testkit()
            .args(["wal", "torture"])
            .arg(&wal)
            .args(["--threads", "1", "--appends-max", n])
            .output()
            .expect("torture");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let status = || {
        let out = weir().arg("status").arg(&data).output().expect("status");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    torture("10");
    let (code, _, err) = status();
    assert_eq!(code, Some(1));
    assert!(err.contains("has no checkpoint"), "{err}");
    // A log filled before the first start: adopted deliberately.
    let adopted = weir()
        .args(["checkpoint", "adopt-logs"])
        .arg(&data)
        .output()
        .expect("adopt-logs");
    assert!(adopted.status.success());
    let out = testkit()
        .arg("test-pipeline")
        .arg(&data)
        .arg("--drain")
        .output()
        .expect("drain");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, text, _) = status();
    assert_eq!(code, Some(0), "{text}");
    let log_line = |text: &str| -> (u64, u64) {
        let l = text
            .lines()
            .find(|l| l.starts_with("log `input`: "))
            .unwrap_or_else(|| panic!("{text}"));
        let range = l
            .split("records ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .expect("range");
        let end: u64 = range
            .split("..")
            .nth(1)
            .and_then(|e| e.parse().ok())
            .expect("end");
        let backlog: u64 = l
            .split("backlog ")
            .nth(1)
            .and_then(|b| b.split(' ').next())
            .and_then(|b| b.parse().ok())
            .expect("backlog");
        (end, backlog)
    };
    let (end1, backlog1) = log_line(&text);
    assert!(end1 > 10, "{text}");
    assert_eq!(backlog1, 0, "{text}");
    assert!(text.contains("state `totals`: "), "{text}");
    assert!(
        text.contains("clean: every allocated batch is committed"),
        "{text}"
    );
    torture("5");
    let (_, text, _) = status();
    let (end2, backlog2) = log_line(&text);
    assert!(end2 > end1);
    assert_eq!(backlog2, end2 - end1, "{text}");
}
