//! What the scheduler tells about its batches: [`BatchStats`] of each
//! completed batch (times, records per source range, time per output) and
//! [`BatchQueue`], the batch in flight and the batch times already due.
//!
//! Limits: statistics of at most `stats_batches_max` batches (each holds one
//! range per source and one time per output operation that ran); a queue
//! lists at most [`QUEUED_SHOWN_MAX`] due batch times.
//! Must never: hold the progress lock longer than a copy.

use crate::checkpoint::StreamRange;

/// Most due batch times a [`BatchQueue`] lists (a scheduler far behind
/// says how many more with `queued_total`).
pub const QUEUED_SHOWN_MAX: usize = 100;

/// Time one output operation took in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTime {
    /// The output in words: its kind and the stream it writes
    /// (`"print of lower"`), numbered from 1 in declaration order.
    pub output: String,
    /// Microseconds it took (its whole chain, reads included).
    pub time_us: u64,
}

/// Statistics of one completed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// Batch time in milliseconds.
    pub batch_time_ms: u64,
    /// Input records over all sources.
    pub input_records: u64,
    /// Clock time from the batch time to the start of processing, ms.
    pub scheduling_delay_ms: u64,
    /// Real time spent processing and committing, ms.
    pub processing_time_ms: u64,
    /// `scheduling_delay_ms + processing_time_ms`.
    pub total_delay_ms: u64,
    /// Whether this was a replay of a batch pending at start.
    pub replayed: bool,
    /// The record range each source contributed.
    pub ranges: Vec<StreamRange>,
    /// Time per output operation that ran in this batch (an output of a
    /// windowed stream runs only at its slide).
    pub outputs: Vec<OutputTime>,
}

/// The batch being processed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBatch {
    /// Batch time, ms.
    pub time_ms: u64,
    /// Its input ranges.
    pub ranges: Vec<StreamRange>,
    /// When processing (this attempt) started, by the scheduler's clock, ms.
    pub started_ms: u64,
    /// Attempt number (1 for the first; retries after a failure count up).
    pub attempt: u32,
    /// A replay of a batch pending at start.
    pub replayed: bool,
}

/// The batch loop now: what runs and what waits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchQueue {
    /// The batch in flight (only one at a time).
    pub active: Option<ActiveBatch>,
    /// Batch times whose tick has passed and that wait for the batch in
    /// flight, oldest first (at most [`QUEUED_SHOWN_MAX`]).
    pub queued_ms: Vec<u64>,
    /// All batch times due and waiting (`queued_ms` may list fewer).
    pub queued_total: u64,
}

/// The batch times due at `now_ms` from `next_ms` on (every `interval_ms`),
/// leaving out the active one; at most [`QUEUED_SHOWN_MAX`] listed.
pub(super) fn due(next_ms: u64, interval_ms: u64, now_ms: u64, active: Option<u64>) -> (Vec<u64>, u64) {
    let interval_ms = interval_ms.max(1);
    if next_ms == 0 || now_ms < next_ms {
        return (Vec::new(), 0);
    }
    let mut total = (now_ms - next_ms) / interval_ms + 1;
    let mut first = next_ms;
    if active == Some(next_ms) {
        first += interval_ms;
        total -= 1;
    }
    let shown = (0..total.min(QUEUED_SHOWN_MAX as u64))
        .map(|k| first + k * interval_ms)
        .collect();
    (shown, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_batches_leave_out_the_active_one_and_are_bounded() {
        assert_eq!(due(2000, 1000, 1999, None), (vec![], 0));
        assert_eq!(due(2000, 1000, 2000, None), (vec![2000], 1));
        assert_eq!(due(2000, 1000, 2000, Some(2000)), (vec![], 0));
        assert_eq!(due(2000, 1000, 4500, Some(2000)), (vec![3000, 4000], 2));
        let (shown, total) = due(1000, 1000, 1_000_000, None);
        assert_eq!((shown.len(), total), (QUEUED_SHOWN_MAX, 1000));
    }
}
