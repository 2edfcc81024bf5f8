//! Helpers of the service tests that run the real `weir` binary (and
//! `weir-testkit`): a clean command, a child that is killed if the test
//! fails, signals, bounded waits for exit and for log lines.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any wait in these tests may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// `weir` with no systemd variables inherited and info logs.
pub fn weir() -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_weir")))
}

/// `weir-testkit` (the test helpers `weir` does not ship), set up as
/// [`weir`].
pub fn testkit() -> Command {
    clean(Command::new(env!("CARGO_BIN_EXE_weir-testkit")))
}

fn clean(mut c: Command) -> Command {
    c.env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("STATE_DIRECTORY")
        .env("WEIR_LOG", "info");
    c
}

/// A child process, killed and reaped if the test ends early.
pub struct Guard(pub Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Guard {
    /// The running child.
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child was already reaped")
    }

    /// Sends `sig` (e.g. `TERM`) with kill(1).
    pub fn signal(&mut self, sig: &str) {
        let pid = self.child().id().to_string();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid)
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits (at most `within`) for the exit; the child is then reaped.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child().try_wait().expect("try_wait") {
                self.0 = None;
                return s;
            }
            assert!(start.elapsed() < within, "no exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Spawns `cmd` with stderr piped; a thread forwards its lines.
pub fn spawn_logged(cmd: &mut Command) -> (Guard, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Guard(Some(child)), rx)
}

/// Waits for a log line containing `needle`; returns it.
pub fn line_with(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(l) if l.contains(needle) => return l,
            Ok(l) => seen.push(l),
            Err(e) => panic!(
                "no log line with {needle:?}: {e}; the lines before:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Waits for weir's "ready" line (recovery done, batches running, the
/// stop signals handled); if the process exits first, fails with its exit
/// status and every line it wrote.
pub fn wait_ready(g: &mut Guard, rx: &mpsc::Receiver<String>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(l) if l.contains("ready") => return,
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = g.wait_exit(Duration::from_secs(30));
                panic!(
                    "weir exited before it was ready ({status:?}):\n{}",
                    seen.join("\n")
                );
            }
            Err(e) => panic!(
                "weir not ready within {DEADLINE:?} ({e}):\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Polls `f` until it holds (at most [`DEADLINE`]).
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every line left on `rx` until its process closed stderr (at most
/// [`DEADLINE`]), joined with newlines: call it after the exit.
pub fn all_lines(rx: &mpsc::Receiver<String>) -> String {
    let start = Instant::now();
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(l) => out.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => return out.join("\n"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("stderr still open after {DEADLINE:?}"),
        }
    }
}

/// A pipeline file: an ingest source `events` on a free loopback port,
/// 100 ms batches, every record to text files under `out/records`, no
/// status endpoint.
pub const INGEST_TO_FILES: &str = r#"
[pipeline]
batch_interval = "100ms"
[service]
http_address = "off"
[[source]]
id = "events"
kind = "ingest"
address = "127.0.0.1:0"
[[sink]]
kind = "text_files"
prefix = "out/records"
"#;

/// Starts `weir run PIPELINE --data-dir DATA` on a pipeline with an
/// ingest source; returns it, the ingest address it logged and its log.
pub fn start_ingest(pipeline: &Path, data: &Path) -> (Guard, String, mpsc::Receiver<String>) {
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

/// `weir feed ADDR FILE --producer PRODUCER` to the end; fails the test
/// with the feed's error if it does not exit 0.
pub fn feed_file(addr: &str, file: &Path, producer: &str) {
    let out = weir()
        .args(["feed", addr])
        .arg(file)
        .args(["--producer", producer])
        .args(["--progress", "none", "--retry-secs", "60"])
        .output()
        .expect("feed");
    assert!(
        out.status.success(),
        "feed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every number in the text files under `dir` (temporary files left
/// out), with its count.
pub fn number_counts(dir: &Path) -> BTreeMap<u64, u32> {
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

/// `GET path` from the status endpoint at `addr`: `(head, body)`.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The endpoint keeps connections alive: ask for the close that ends
    // the read.
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let (head, body) = resp.split_once("\r\n\r\n").expect("head/body");
    (head.to_string(), body.to_string())
}

/// The status endpoint's address from weir's "status page" log line.
pub fn status_address(rx: &mpsc::Receiver<String>) -> String {
    line_with(rx, "status page")
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("address in the log line")
        .to_string()
}

/// A loopback port free a moment ago (for a process that must be
/// restarted on the same port).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Posts `body` to `path` as `producer` from `seq` until it is answered
/// 200, retrying it as it was after any failure (a connection refused or
/// reset while weir restarts, `429`, `503`), as a producer that lost the
/// answer does; reconnects through `c`. Panics on any other answer, and
/// when `give_up` passes.
pub fn post_until_stored(
    addr: std::net::SocketAddr,
    path: &str,
    (producer, seq): (&str, u64),
    body: &str,
    c: &mut Option<weir::testing_http::HttpClient>,
    give_up: Instant,
) {
    while Instant::now() < give_up {
        if c.is_none() {
            *c = weir::testing_http::HttpClient::connect(addr).ok();
        }
        let Some(client) = c.as_mut() else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        match client.post(path, Some((producer, seq)), None, body.as_bytes()) {
            Ok(r) if r.code == 200 => return,
            Ok(r) => {
                assert!(
                    r.code == 429 || r.code == 503,
                    "{producer} from {seq}: {} {}",
                    r.code,
                    r.body
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => *c = None,
        }
    }
    panic!("{producer} from {seq}: never stored");
}

/// A producer thread's progress (requests stored) and how far it may go
/// before the test has done its next kill: the kill then lands while the
/// producer is posting (within `slack` requests of the kill point), and
/// the producer can never finish before the last kill, however fast.
pub struct Gate {
    done: std::sync::atomic::AtomicU64,
    allowed: std::sync::atomic::AtomicU64,
}

impl Gate {
    /// A gate letting the producer go up to request `allowed`.
    pub fn new(allowed: u64) -> std::sync::Arc<Gate> {
        std::sync::Arc::new(Gate {
            done: std::sync::atomic::AtomicU64::new(0),
            allowed: std::sync::atomic::AtomicU64::new(allowed),
        })
    }

    /// Producer: request `k` was stored.
    pub fn stored(&self, k: u64) {
        self.done.store(k + 1, std::sync::atomic::Ordering::Release);
    }

    /// Producer: waits (at most [`DEADLINE`]) until request `k` may go.
    pub fn before(&self, k: u64) {
        let start = Instant::now();
        while k >= self.allowed.load(std::sync::atomic::Ordering::Acquire) {
            assert!(
                start.elapsed() < DEADLINE,
                "the test never let request {k} go"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Test: waits (at most [`DEADLINE`]) until `n` requests are stored.
    pub fn wait_done(&self, n: u64) {
        let start = Instant::now();
        while self.done.load(std::sync::atomic::Ordering::Acquire) < n {
            assert!(
                start.elapsed() < DEADLINE,
                "the producer did not reach request {n}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Test: lets the producer go up to request `n`.
    pub fn allow(&self, n: u64) {
        self.allowed.store(n, std::sync::atomic::Ordering::Release);
    }
}
