//! A library program's own binary under `run_service`: without any
//! logging set-up of its own it shows weir's lines on stderr (the status
//! page's address, a line per committed batch), as `weir run` does; a
//! program that installed its own `tracing` subscriber keeps it, and
//! `default_logging: false` leaves logging to the program.
//!
//! Each case runs in a process of its own (this test binary again, with
//! only `program` selected and the case in `WEIR_TEST_PROGRAM`), since a
//! global subscriber is once per process and its output goes to the real
//! stderr.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir::service::{run_service, ServiceOptions};
use weir::{Queue, StreamingContext};

const CASE: &str = "WEIR_TEST_PROGRAM";
const DEADLINE: Duration = Duration::from_secs(60);

/// The program a newcomer writes: a pipeline and `run_service`. Runs only
/// when the parent test selected it.
#[test]
fn program() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    if case == "own" {
        tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stdout)
            .init();
    }
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(100))
        .parallelism(1)
        .build()
        .expect("context");
    let q: Queue<String> = Queue::new();
    q.push(vec!["hello weir".to_string()]).expect("push");
    ssc.queue_stream(&q).count().print(1).expect("print");
    let opts = ServiceOptions {
        http_address: "127.0.0.1:0".parse().ok(),
        batches_max: Some(3),
        notify_socket: None,
        watchdog: None,
        default_logging: case != "off",
        ..ServiceOptions::default()
    };
    run_service(ssc, opts).expect("service");
}

/// Runs `program` as its own process for `case`; (stdout, stderr).
fn run_program(case: &str) -> (String, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args(["program", "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the program");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the program ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (o, e) = (o.join().expect("stdout"), e.join().expect("stderr"));
    assert!(
        status.success(),
        "{case}: {status}\nstdout:\n{o}\nstderr:\n{e}"
    );
    (o, e)
}

#[test]
fn run_service_logs_to_stderr_by_default() {
    let (out, err) = run_program("default");
    assert!(err.contains("status page"), "stderr:\n{err}");
    assert!(err.contains("http://127.0.0.1:"), "stderr:\n{err}");
    assert!(err.contains("batch committed"), "stderr:\n{err}");
    assert!(err.contains("stopped cleanly"), "stderr:\n{err}");
    // The pipeline's own print goes to stdout, as before.
    assert!(out.contains("Time: "), "stdout:\n{out}");
}

#[test]
fn a_program_with_its_own_subscriber_keeps_it() {
    let (out, err) = run_program("own");
    assert!(!err.contains("batch committed"), "stderr:\n{err}");
    let json_batch = out
        .lines()
        .any(|l| l.starts_with('{') && l.contains("batch committed"));
    assert!(json_batch, "stdout:\n{out}");
}

#[test]
fn default_logging_off_leaves_logging_to_the_program() {
    let (_, err) = run_program("off");
    assert!(!err.contains("batch committed"), "stderr:\n{err}");
    assert!(!err.contains("status page"), "stderr:\n{err}");
}
