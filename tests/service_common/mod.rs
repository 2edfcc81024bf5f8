//! Helpers of the service tests that run the real `weir` binary (and
//! `weir-testkit`): a clean command, a child that is killed if the test
//! fails, signals, bounded waits for exit and for log lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
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
    loop {
        match rx.recv_timeout(DEADLINE.saturating_sub(start.elapsed())) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
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
