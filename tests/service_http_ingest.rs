//! HTTP ingest with the real binary (#16): a producer posts numbered
//! requests of 50 records to `weir run` while it is killed with SIGKILL
//! three times (each at a random point of its quarter of the requests)
//! and restarted on the same port; the producer retries each unanswered request as it was,
//! and the output holds every number exactly once. Also: `weir check`
//! describes an `http` source and refuses one off this machine without
//! TLS and tokens, naming the key. Every wait is bounded.

mod service_common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use service_common::{
    free_port, line_with, number_counts, post_until_stored, spawn_logged, wait_for, wait_ready,
    weir, Gate, Guard,
};
use weir::testing_http::HttpClient;

const RECORDS: u64 = 20_000;
const PER_REQUEST: u64 = 50;
const KILLS: usize = 3;
/// Requests the producer may post past a kill point before the kill.
const SLACK: u64 = 8;

fn pipeline(dir: &Path, port: u16) -> std::path::PathBuf {
    let p = dir.join("p.toml");
    let text = format!(
        r#"
[pipeline]
batch_interval = "100ms"
[service]
http_address = "off"
[[source]]
id = "events"
kind = "http"
address = "127.0.0.1:{port}"
[[sink]]
kind = "text_files"
prefix = "out/records"
"#
    );
    std::fs::write(&p, text).expect("pipeline");
    p
}

fn start(p: &Path, data: &Path) -> (Guard, std::sync::mpsc::Receiver<String>) {
    let (mut g, rx) = spawn_logged(weir().arg("run").arg(p).arg("--data-dir").arg(data));
    line_with(&rx, "HTTP ingest listening");
    wait_ready(&mut g, &rx);
    (g, rx)
}

/// Posts request `k` (records `k*50+1 ..= k*50+50`, sequence `k*50`)
/// until it is stored.
fn post(addr: SocketAddr, k: u64, c: &mut Option<HttpClient>, give_up: Instant) {
    let body: String = (k * PER_REQUEST + 1..=(k + 1) * PER_REQUEST)
        .map(|i| format!("{i}\n"))
        .collect();
    post_until_stored(
        addr,
        "/v1/streams/events",
        ("p", k * PER_REQUEST),
        &body,
        c,
        give_up,
    );
}

#[test]
fn sigkill_while_posting_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let p = pipeline(dir.path(), port);
    let data = dir.path().join("data");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let requests = RECORDS / PER_REQUEST;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(port);
    let quarter = requests / (KILLS as u64 + 1);
    let targets: Vec<u64> = (0..KILLS as u64)
        .map(|kill| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            kill * quarter + 1 + seed % (quarter - SLACK)
        })
        .collect();
    let gate = Gate::new(targets[0] + SLACK);
    let producer = gate.clone();
    let poster = std::thread::spawn(move || {
        let mut c = None;
        let give_up = Instant::now() + Duration::from_secs(240);
        for k in 0..requests {
            producer.before(k);
            post(addr, k, &mut c, give_up);
            producer.stored(k);
        }
    });
    for (kill, &target) in targets.iter().enumerate() {
        let (mut g, _rx) = start(&p, &data);
        gate.wait_done(target);
        g.signal("KILL");
        g.wait_exit(Duration::from_secs(30));
        gate.allow(targets.get(kill + 1).map_or(requests, |t| t + SLACK));
    }
    let (mut g, _rx) = start(&p, &data);
    poster.join().expect("the producer");
    let out = data.join("out");
    wait_for("every record in the output", || {
        number_counts(&out).len() as u64 == RECORDS
    });
    g.signal("TERM");
    assert!(g.wait_exit(Duration::from_secs(30)).success());
    let counts = number_counts(&out);
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        doubled.is_empty(),
        "records stored more than once: {doubled:?}"
    );
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=RECORDS).collect::<Vec<_>>()
    );
}

#[test]
fn check_describes_an_http_source_and_refuses_one_off_this_machine_without_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = pipeline(dir.path(), 18080);
    let out = weir().arg("check").arg(&p).output().expect("check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("HTTP ingest of text lines on http://127.0.0.1:18080/v1/streams/events"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&p)
        .expect("read")
        .replace("127.0.0.1:18080", "0.0.0.0:18080");
    std::fs::write(&p, text).expect("write");
    let out = weir().arg("check").arg(&p).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("add tls_cert_file"), "{stderr}");
    // With the keys, check reads the files as run will.
    let text = std::fs::read_to_string(&p).expect("read").replace(
        "address = \"0.0.0.0:18080\"",
        "address = \"0.0.0.0:18080\"\ntls_cert_file = \"missing.pem\"\ntls_key_file = \"missing.key\"\ntokens_file = \"tokens\"",
    );
    std::fs::write(&p, text).expect("write");
    let out = weir().arg("check").arg(&p).output().expect("check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("source `events`") && stderr.contains("missing.pem"),
        "{stderr}"
    );
}
