//! The scheduler's error: [`SchedulerError`], one variant per way a batch
//! or the scheduler itself can fail, each saying what stays safe.
//!
//! Must never: carry a bare `String` where a structured cause exists.

use std::time::Duration;

use crate::checkpoint::CheckpointError;
use crate::Error;

/// Errors of the scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A user function panicked while the batch ran; committed state is
    /// unchanged and the batch stays pending.
    #[error("batch {time_ms} ms failed: a user function panicked: {message}")]
    Panicked {
        /// Batch time.
        time_ms: u64,
        /// The panic message.
        message: String,
    },
    /// Batch bookkeeping failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The worker pool could not be built.
    #[error("cannot build worker pool: {0}")]
    Pool(String),
    /// The scheduler thread could not be started.
    #[error("cannot start scheduler thread: {0}")]
    Thread(std::io::Error),
    /// A crash test's failpoint fired: the simulated process died here.
    #[error(transparent)]
    Crashed(#[from] crate::failpoint::Crash),
    /// A batch kept failing; its records stay in the WAL for the next start.
    #[error(
        "batch {time_ms} ms failed {attempts} times and was not committed; its input stays in the log \
         for the next start, nothing was skipped. Last error: {cause}"
    )]
    BatchFailed {
        /// Batch time.
        time_ms: u64,
        /// How often it was tried.
        attempts: u32,
        /// The last attempt's error.
        cause: Box<Error>,
    },
    /// A batch dead-lettered records and they could not be stored, so it
    /// was not committed.
    #[error("batch {time_ms} ms dead-lettered {records} records (first: step `{step}`) but they could not be stored: {reason}")]
    DeadLetters {
        /// Batch time.
        time_ms: u64,
        /// Records dead-lettered by the batch.
        records: usize,
        /// The step of the first one.
        step: String,
        /// Why they could not be stored.
        reason: String,
    },
    /// A source new to the checkpoint could not say where it starts
    /// (`Source::first_position`): nothing was allocated.
    #[error("source `{source_name}` could not find where to start reading (nothing of it is in the checkpoint yet, and nothing was allocated): {cause}")]
    SourceStart {
        /// The source's stream name.
        source_name: String,
        /// Why.
        cause: crate::dstream::BoxError,
    },
    /// A source cannot go on (`Source::check`); nothing was allocated for
    /// the batch.
    #[error("source `{source_name}` cannot go on, so batch {time_ms} ms was not started (nothing allocated, every committed batch stays committed): {cause}")]
    SourceRefused {
        /// Batch time.
        time_ms: u64,
        /// The source's stream.
        source_name: String,
        /// Why.
        cause: crate::dstream::BoxError,
    },
    /// A source found, after its batch ran, that it cannot go on (a lease
    /// lost while the batch ran): the batch is not committed.
    #[error("source `{source_name}` cannot go on, so batch {time_ms} ms, which ran, was not committed (its input stays allocated and is replayed with the same ranges at the next start): {cause}")]
    SourceLost {
        /// Batch time.
        time_ms: u64,
        /// The source's stream.
        source_name: String,
        /// Why.
        cause: crate::dstream::BoxError,
    },
    /// A batch allocated before the stop, not committed, holds records of
    /// a source the pipeline no longer has.
    #[error("batch {time_ms} ms was allocated before the last stop with records {start}..{end} of stream `{source_name}`, which this pipeline no longer reads, and it has not committed: replaying it without them would lose those records. Put the stream back as it was until that batch commits (start once with it, then stop gracefully), then remove it")]
    PendingSourceGone {
        /// The pending batch.
        time_ms: u64,
        /// The stream that is gone.
        source_name: String,
        /// First record of its range.
        start: u64,
        /// End of its range.
        end: u64,
    },
    /// The scheduler stopped with an error reported earlier.
    #[error("streaming stopped after an error: {0}")]
    Failed(String),
    /// Waiting for a batch timed out.
    #[error("timed out after {waited:?} waiting for batch {time_ms} ms")]
    Timeout {
        /// Batch time awaited.
        time_ms: u64,
        /// How long we waited.
        waited: Duration,
    },
    /// The scheduler stopped before the awaited batch completed.
    #[error("scheduler stopped before batch {time_ms} ms completed")]
    StoppedBefore {
        /// Batch time awaited.
        time_ms: u64,
    },
}
