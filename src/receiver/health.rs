//! A receiver's health as the status page shows it: its state (starting,
//! connected, retrying, listening, stopped, failed, ...) and its last
//! error in words, with the wall-clock time it happened.
//!
//! Owns: [`ReceiverHealth`] (one per receiver-fed stream, in its
//! `StreamShared`), [`ReceiverState`] and the snapshot [`HealthSnapshot`].
//! The receiver thread's runner sets `running` before `Receiver::run`,
//! `stopped` or `failed` after it; a built-in receiver refines it
//! (`ReceiverContext::set_state`): the socket receiver says `connected`,
//! `retrying` (with the connect or read error) and never `running` while
//! its server is down.
//! Limits: one state and one last error per stream (the error text is cut
//! at [`ERROR_BYTES_MAX`] bytes).
//! Must never: block a receiver (one short mutex for the error text).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Longest last-error text kept, in bytes.
pub const ERROR_BYTES_MAX: usize = 1024;

/// What a receiver is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReceiverState {
    /// Registered; its thread has not started (before `start()`).
    Starting,
    /// Running (a receiver that says nothing more about itself).
    Running,
    /// A client receiver: connecting for the first time.
    Connecting,
    /// A client receiver: connected to its server.
    Connected,
    /// A client receiver: its server is down or went away; reconnecting
    /// with backoff (the last error says why).
    Retrying,
    /// A server receiver: listening for producers.
    Listening,
    /// `run` returned: the context is stopping or the receiver ended.
    Stopped,
    /// `run` failed or panicked; the context stopped (the last error says
    /// why).
    Failed,
}

impl ReceiverState {
    fn from_u8(v: u8) -> ReceiverState {
        use ReceiverState::*;
        [
            Starting, Running, Connecting, Connected, Retrying, Listening, Stopped, Failed,
        ]
        .get(usize::from(v))
        .copied()
        .unwrap_or(Failed)
    }

    /// The state in words (`"retrying"`), as `/status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverState::Starting => "starting",
            ReceiverState::Running => "running",
            ReceiverState::Connecting => "connecting",
            ReceiverState::Connected => "connected",
            ReceiverState::Retrying => "retrying",
            ReceiverState::Listening => "listening",
            ReceiverState::Stopped => "stopped",
            ReceiverState::Failed => "failed",
        }
    }
}

/// A receiver's last error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// What happened, in words.
    pub message: String,
    /// When, in ms since the Unix epoch (wall clock).
    pub at_ms: u64,
}

/// One receiver's state and last error at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    /// The state.
    pub state: ReceiverState,
    /// The last error, if any since the stream was created.
    pub last_error: Option<LastError>,
    /// Records stored through the stream since it was created.
    pub records: u64,
}

/// A receiver's state and last error, shared with the status probe.
#[derive(Debug)]
pub struct ReceiverHealth {
    state: AtomicU8,
    last_error: Mutex<Option<LastError>>,
}

impl Default for ReceiverHealth {
    fn default() -> Self {
        ReceiverHealth {
            state: AtomicU8::new(ReceiverState::Starting as u8),
            last_error: Mutex::new(None),
        }
    }
}

impl ReceiverHealth {
    /// Sets the state, and the last error when `error` is given.
    pub fn set(&self, state: ReceiverState, error: Option<&str>) {
        self.state.store(state as u8, Ordering::Relaxed);
        if let Some(e) = error {
            let mut message = e.to_string();
            if message.len() > ERROR_BYTES_MAX {
                let mut cut = ERROR_BYTES_MAX;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(LastError { message, at_ms });
        }
    }

    /// The state now.
    pub fn state(&self) -> ReceiverState {
        ReceiverState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// State and last error now, with `records` stored.
    pub fn snapshot(&self, records: u64) -> HealthSnapshot {
        HealthSnapshot {
            state: self.state(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_and_error_round_trip_and_the_error_is_bounded() {
        let h = ReceiverHealth::default();
        assert_eq!(h.state(), ReceiverState::Starting);
        h.set(ReceiverState::Retrying, Some(&"é".repeat(ERROR_BYTES_MAX)));
        let s = h.snapshot(3);
        assert_eq!(s.state.as_str(), "retrying");
        let e = s.last_error.expect("error kept");
        assert!(e.message.len() <= ERROR_BYTES_MAX && e.at_ms > 0);
        h.set(ReceiverState::Connected, None);
        assert_eq!(h.snapshot(0).state, ReceiverState::Connected);
        assert!(h.snapshot(0).last_error.is_some(), "kept after recovery");
        for v in 0..=8u8 {
            let _ = ReceiverState::from_u8(v).as_str();
        }
    }
}
