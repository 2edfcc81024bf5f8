//! Clocks that drive batch generation.
//!
//! Owns: the [`Clock`] trait, [`SystemClock`] (wall time) and
//! [`ManualClock`] (tests: time moves only when the test says so, so batch
//! boundaries are exact).
//! Limits: one `wait_until` call blocks at most its `max_wait` of real time,
//! so a caller can notice a stop request at least that often.
//! Must never: generate batches or know about them; it only tells time.

use std::fmt::Debug;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of time in milliseconds.
pub trait Clock: Send + Sync + Debug {
    /// Current time in milliseconds.
    fn now_ms(&self) -> u64;
    /// Blocks until `now_ms() >= target_ms` or `max_wait` of real time has
    /// passed, whichever is first; returns `now_ms()`.
    fn wait_until(&self, target_ms: u64, max_wait: Duration) -> u64;
}

/// Wall-clock time (milliseconds since the Unix epoch).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn wait_until(&self, target_ms: u64, max_wait: Duration) -> u64 {
        let now = self.now_ms();
        if now < target_ms {
            let wait = Duration::from_millis(target_ms - now).min(max_wait);
            std::thread::sleep(wait);
        }
        self.now_ms()
    }
}

/// A clock that only moves when told to. Advancing it past batch times makes
/// the scheduler generate exactly those batches.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<u64>,
    moved: Condvar,
}

impl ManualClock {
    /// A manual clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now: Mutex::new(start_ms),
            moved: Condvar::new(),
        }
    }

    /// Moves the clock forward by `ms`; returns the new time.
    pub fn advance(&self, ms: u64) -> u64 {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += ms;
        self.moved.notify_all();
        *now
    }

    /// Sets the clock to `ms` (never backwards: an earlier time is ignored).
    pub fn set(&self, ms: u64) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = (*now).max(ms);
        self.moved.notify_all();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_until(&self, target_ms: u64, max_wait: Duration) -> u64 {
        let now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        let (now, _) = self
            .moved
            .wait_timeout_while(now, max_wait, |n| *n < target_ms)
            .unwrap_or_else(|e| e.into_inner());
        *now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn manual_clock_wakes_waiter() {
        let c = Arc::new(ManualClock::new(0));
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.wait_until(1000, Duration::from_secs(10)));
        c.advance(400);
        c.advance(600);
        assert_eq!(h.join().unwrap(), 1000);
        assert_eq!(c.wait_until(5000, Duration::from_millis(1)), 1000);
        c.set(10);
        assert_eq!(c.now_ms(), 1000);
    }
}
