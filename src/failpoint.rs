//! Failpoints: named places in the commit protocol where a crash test can
//! make the process "die". Once a point fires, every later point fails too
//! (a dead process writes nothing more), until [`reset`].
//!
//! Points (in protocol order): `after_allocate`, `between_outputs`,
//! `sink_write` (inside a sink's atomic file write, after the temp file is
//! durable, before the rename), `postgres_before_transaction` and
//! `postgres_before_commit` (the PostgreSQL sink: before it connects or
//! begins, and after its rows and progress row, before PostgreSQL's
//! COMMIT), `kafka_between_requests` (the Kafka sink, between two produce
//! requests of a batch), `before_commit`, `after_commit` (before WAL cleanup). Outside the commit protocol: `atomic_file_rename`
//! (`crate::storage::ATOMIC_FILE_RENAME`: the same step of every atomic
//! file write, receivers' files included, right after `sink_write` in a
//! sink's).
//!
//! The registry is process-global so it can reach inside sinks without
//! threading a handle through every output. Tests that arm it must not run
//! concurrently with other pipelines in the same process (keep them in
//! their own test binary, serialised). When nothing is armed, [`hit`] costs
//! one relaxed atomic load.
//!
//! Must never: be armed in production (nothing outside tests calls [`arm`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ARMED: AtomicBool = AtomicBool::new(false);
static STATE: Mutex<State> = Mutex::new(State {
    points: Vec::new(),
    fired: None,
});

struct State {
    /// `(name, hits left before it fires)`.
    points: Vec<(String, u64)>,
    fired: Option<String>,
}

/// A failpoint fired: the simulated process is dead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("simulated crash at failpoint `{point}`")]
pub struct Crash {
    pub point: String,
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(any(test, feature = "testing"))]
/// Arms `name` to fire on its `skip + 1`-th hit.
pub fn arm(name: &str, skip: u64) {
    let mut s = lock();
    s.points.push((name.to_string(), skip));
    ARMED.store(true, Ordering::Release);
}

#[cfg(any(test, feature = "testing"))]
/// Disarms everything and forgets a fired crash (the "restart").
pub fn reset() {
    let mut s = lock();
    s.points.clear();
    s.fired = None;
    ARMED.store(false, Ordering::Release);
}

/// The point that fired, if any.
pub fn fired() -> Option<String> {
    if !ARMED.load(Ordering::Acquire) {
        return None;
    }
    lock().fired.clone()
}

/// Passes `name`: `Err` if it fires now or a crash already happened.
pub fn hit(name: &str) -> Result<(), Crash> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut s = lock();
    if let Some(point) = &s.fired {
        return Err(Crash {
            point: point.clone(),
        });
    }
    let mut fire = false;
    for (n, left) in s.points.iter_mut() {
        if n == name {
            if *left == 0 {
                fire = true;
            } else {
                *left -= 1;
            }
        }
    }
    if fire {
        tracing::warn!(point = name, "failpoint fired: simulating a crash");
        s.fired = Some(name.to_string());
        return Err(Crash {
            point: name.to_string(),
        });
    }
    Ok(())
}
