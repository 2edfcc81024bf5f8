//! Calls into sled that never panic at the user: sled 0.34 panics on some
//! damaged files (a truncated database) instead of returning an error.
//! [`sled_call`] and [`guarded_scan`] catch such a panic and return
//! [`CheckpointError::Panicked`], naming the store; sled's own
//! `Corruption` errors become [`CheckpointError::Corrupt`] (see
//! `CheckpointError::io`).
//!
//! The default panic hook would still print "panicked at" and a backtrace
//! hint for the caught panic: a filter hook, installed once for the whole
//! process (`Once`), stays silent for panics raised on a thread while it is
//! inside a guarded call (a thread-local depth) and passes every other
//! panic to the hook that was there before. No hook is swapped per call, so
//! concurrent threads never race on it.
//!
//! Limits: one hook for the process lifetime; a guard costs a thread-local
//! increment and decrement per call.
//! Must never: hide a panic raised outside a guarded sled call, or let a
//! caught panic pass as success.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use super::error::CheckpointError;

thread_local! {
    /// How many guarded calls this thread is inside.
    static QUIET_DEPTH: Cell<u32> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET_DEPTH.with(|d| d.get()) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `f` (a sled call on the store in `path`) with panics caught and
/// kept quiet: a panic is [`CheckpointError::Panicked`], an error of sled
/// is `CheckpointError::io(op, ..)`.
pub(super) fn sled_call<T>(
    path: &Path,
    op: &'static str,
    f: impl FnOnce() -> sled::Result<T>,
) -> Result<T, CheckpointError> {
    match quietly(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CheckpointError::io(op, path, e)),
        Err(panic) => Err(CheckpointError::Panicked {
            store: path.to_path_buf(),
            op,
            panic,
        }),
    }
}

/// `f` with panics caught (and not printed); a panic's message.
pub(super) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    QUIET_DEPTH.with(|d| d.set(d.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    r.map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// The entries of a sled scan, each step guarded like [`sled_call`]; after
/// a failed step the scan ends.
pub(super) fn guarded_scan<'a>(
    path: &'a Path,
    op: &'static str,
    mut iter: sled::Iter,
) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec), CheckpointError>> + 'a {
    GuardedIter {
        path,
        op,
        next: Box::new(
            move |back| {
                if back {
                    iter.next_back()
                } else {
                    iter.next()
                }
            },
        ),
        done: false,
    }
}

type Step = Box<dyn FnMut(bool) -> Option<sled::Result<(sled::IVec, sled::IVec)>>>;

struct GuardedIter<'a> {
    path: &'a Path,
    op: &'static str,
    next: Step,
    done: bool,
}

impl GuardedIter<'_> {
    fn step(&mut self, back: bool) -> Option<Result<(sled::IVec, sled::IVec), CheckpointError>> {
        if self.done {
            return None;
        }
        let next = &mut self.next;
        let r = match quietly(|| next(back)) {
            Ok(None) => None,
            Ok(Some(Ok(kv))) => Some(Ok(kv)),
            Ok(Some(Err(e))) => Some(Err(CheckpointError::io(self.op, self.path, e))),
            Err(panic) => Some(Err(CheckpointError::Panicked {
                store: self.path.to_path_buf(),
                op: self.op,
                panic,
            })),
        };
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl Iterator for GuardedIter<'_> {
    type Item = Result<(sled::IVec, sled::IVec), CheckpointError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}

impl DoubleEndedIterator for GuardedIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_a_sled_call_is_an_error_naming_the_store() {
        let r: Result<(), _> = sled_call(Path::new("/d/checkpoint"), "open", || {
            panic!("index out of bounds in the page cache")
        });
        let m = r.expect_err("caught").to_string();
        assert!(m.contains("/d/checkpoint"), "{m}");
        assert!(m.contains("restore"), "{m}");
        assert!(!m.contains("panicked"), "{m}");
        // The guard is left: a later call works.
        assert_eq!(sled_call(Path::new("/d"), "open", || Ok(7)).ok(), Some(7));
    }

    #[test]
    fn sled_corruption_is_named_without_sleds_backtrace_text() {
        let r: Result<(), _> = sled_call(Path::new("/d/checkpoint"), "open", || {
            Err(sled::Error::Corruption { at: None, bt: () })
        });
        let m = r.expect_err("corrupt").to_string();
        assert!(m.contains("/d/checkpoint") && m.contains("restore"), "{m}");
        assert!(!m.contains("backtrace"), "{m}");
    }
}
