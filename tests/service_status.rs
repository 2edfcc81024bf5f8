//! The status page against Spark's Streaming tab (#14), from outside: the
//! real `weir` binary, a real socket server, `/status`, `/metrics` and `/`
//! over HTTP. A socket source whose server goes away shows `retrying` with
//! the last error in words (never `running`); a batch's detail carries its
//! records per source range and its time per output; the demo feeds its
//! generator through a write-ahead log (appends, fsyncs); the page holds
//! the receivers table, histograms, the queue and the batch detail. Every
//! wait polls with a deadline.

mod service_common;

use std::io::Write;
use std::net::TcpListener;

use service_common::{http_get, spawn_logged, status_address, wait_for, weir, Guard};

fn status(addr: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, "/status").1).expect("status json")
}

fn receiver<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["receivers"]
        .as_array()
        .expect("receivers")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no receiver {name} in {v}"))
}

fn run(args: &[&str]) -> (Guard, String) {
    let (g, rx) = spawn_logged(weir().args(args));
    let addr = status_address(&rx);
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (g, addr)
}

#[test]
fn a_socket_source_whose_server_stops_shows_retrying_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        format!(
            "[pipeline]\nbatch_interval = \"1s\"\n[service]\nhttp_address = \"127.0.0.1:0\"\n\
             [[source]]\nid = \"lines\"\nkind = \"socket\"\naddress = \"127.0.0.1:{port}\"\n\
             [[sink]]\nfrom = \"lines\"\nkind = \"print\"\ncount = 1\n"
        ),
    )
    .expect("write pipeline");
    let data = dir.path().join("data").display().to_string();
    let (_g, addr) = run(&[
        "run",
        pipeline.to_str().expect("utf-8"),
        "--data-dir",
        &data,
    ]);

    let (mut conn, _) = server.accept().expect("weir connects");
    conn.write_all(b"one\ntwo\nthree\n").expect("send");
    wait_for("the receiver connected with its lines stored", || {
        let v = status(&addr);
        let r = receiver(&v, "lines");
        r["state"] == "connected" && r["records"].as_u64() >= Some(3)
    });
    let v = status(&addr);
    let r = receiver(&v, "lines");
    assert_eq!(r["kind"], "socket");
    assert!(r["last_error"].is_null(), "{r}");
    assert!(r["records_per_second"].as_f64().is_some(), "{r}");
    assert!(r["rejected"].is_array(), "the counters map: {r}");

    // The server goes away: connection closed, then nothing listens.
    drop(server);
    drop(conn);
    wait_for("retrying with the connect error", || {
        let v = status(&addr);
        let r = receiver(&v, "lines");
        r["state"] == "retrying"
            && r["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")))
    });
    let v = status(&addr);
    let r = receiver(&v, "lines");
    let err = r["last_error"].as_str().expect("error");
    assert!(
        !err.contains("Os {") && !err.contains("kind:"),
        "words, not Debug: {err}"
    );
    assert!(
        r["last_error_ms"]
            .as_u64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{r}"
    );
    wait_for("the rate falls to 0", || {
        receiver(&status(&addr), "lines")["records_per_second"].as_f64() == Some(0.0)
    });
    let (_, m) = http_get(&addr, "/metrics");
    assert!(
        m.lines()
            .any(|l| l == "weir_receiver_state{source=\"lines\",state=\"retrying\"} 1"),
        "{m}"
    );
}

#[test]
fn the_demo_is_durable_and_a_batch_has_its_detail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let (_g, addr) = run(&["run", "--data-dir", &data, "--http-address", "127.0.0.1:0"]);
    // A batch with input and every output of the demo that runs at it.
    wait_for("a batch with records and its outputs", || {
        status(&addr)["batches"]
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["records"].as_u64() > Some(0)))
    });
    let v = status(&addr);
    let b = v["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .find(|b| b["records"].as_u64() > Some(0))
        .expect("a batch with records");
    let range = &b["ranges"][0];
    assert_eq!(range["source"], "tweets_in", "{b}");
    assert_eq!(
        range["records"].as_u64(),
        Some(range["end"].as_u64().expect("end") - range["start"].as_u64().expect("start"))
    );
    assert_eq!(range["records"], b["records"]);
    let outputs = b["outputs"].as_array().expect("outputs");
    assert!(
        outputs
            .iter()
            .any(|o| o["output"] == "1: print of lower" && o["time_ms"].as_f64() >= Some(0.0)),
        "{b}"
    );
    // Durable: the generator's records went through the log, fsynced.
    let wal = v["wal"].as_array().expect("wal");
    let w = wal
        .iter()
        .find(|w| w["name"] == "tweets_in")
        .expect("the demo's input log");
    assert!(
        w["fsyncs"].as_u64() > Some(0) && w["records_appended"].as_u64() > Some(0),
        "{w}"
    );
    wait_for("the generator's rate (about 10 records/s)", || {
        receiver(&status(&addr), "tweets_in")["records_per_second"].as_f64() > Some(5.0)
    });
    let r = receiver(&v, "tweets_in");
    assert_eq!(
        (r["kind"].as_str(), r["state"].as_str()),
        (Some("generator"), Some("running"))
    );
    // The queue and the state per operator are there (the queue may be empty).
    assert!(
        v["queued_batches"].is_array() && v.get("active_batch").is_some(),
        "{v}"
    );
    assert!(v["queued_total"].as_u64().is_some(), "{v}");
    assert!(
        v["state_keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{v}"
    );

    let (_, page) = http_get(&addr, "/");
    for part in [
        "<table id=\"receivers\"",
        "<svg id=\"h-proc\"",
        "<svg id=\"h-sched\"",
        "<svg id=\"h-recs\"",
        "<table id=\"queue\"",
        "<table id=\"state\"",
        "<table id=\"wal\"",
        "id=\"detail\"",
        "function scaleMax",
    ] {
        assert!(page.contains(part), "the page lacks {part}");
    }
}
