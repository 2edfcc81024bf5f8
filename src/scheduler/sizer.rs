//! Adaptive batch size: how many records a new batch may take so that it
//! is processed in about one batch interval (Spark's backpressure rate
//! estimator does the same job).
//!
//! Why: the generator cuts a batch at a tick from everything that is
//! durable. When input arrives faster than the pipeline processes it, the
//! backlog grows and, without a cap, every batch would take all of it: a
//! batch that takes seconds, a scheduling delay that grows up to what the
//! backlog limit allows, and after a crash a replay of that whole batch
//! before anything else happens. With the cap, each batch holds what the
//! pipeline processes in [`FILL`] of an interval, so the delay stays near
//! zero, the receivers' backlog limit pushes back on the producers, and a
//! replayed batch takes about one interval.
//!
//! The estimate changes after a batch that was capped (there was more input
//! than the cap) or that took longer than the interval: a batch that took
//! everything in time says nothing about the pipeline's limit. Limits: the
//! cap starts at [`INITIAL_RECORDS`] per second of batch interval (so the
//! first batch after a restart with a large backlog finishes quickly),
//! grows at most [`GROWTH_MAX`]× per batch, never goes below
//! [`FLOOR_RECORDS`] nor above `batch_records_max` per source.
//! Must never: decide what is in a batch beyond its size (the sources cut),
//! or change a pending batch's range (replays are exact).

/// Records the first batch may take per second of batch interval (all
/// sources together).
pub const INITIAL_RECORDS: u64 = 1_000_000;
/// The cap never goes below this many records.
pub const FLOOR_RECORDS: u64 = 10_000;
/// Most the cap grows from one batch to the next (a factor).
pub const GROWTH_MAX: u64 = 4;
/// Share of an interval a capped batch aims to take: below 1 so that noise
/// in processing times does not add up to a growing delay.
pub const FILL: f64 = 0.9;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct BatchSizer {
    interval_us: u64,
    ceiling: u64,
    cap: u64,
    /// Set once a batch at the floor still overran the interval: the time
    /// is not in the records (per-batch work such as visiting every key of
    /// a large state), so shrinking batches cannot help; the cap stays at
    /// the ceiling from then on.
    gave_up: bool,
}

impl BatchSizer {
    /// `ceiling`: the hard cap (all sources' `batch_records_max`).
    pub(crate) fn new(interval_ms: u64, ceiling: u64) -> Self {
        let ceiling = ceiling.max(1);
        let initial = (INITIAL_RECORDS as u128 * interval_ms as u128 / 1000) as u64;
        BatchSizer {
            interval_us: interval_ms.saturating_mul(1000).max(1),
            ceiling,
            cap: initial.clamp(FLOOR_RECORDS.min(ceiling), ceiling),
            gave_up: false,
        }
    }

    /// Records the next batch may take, all sources together.
    pub(crate) fn cap(&self) -> u64 {
        if self.gave_up {
            self.ceiling
        } else {
            self.cap
        }
    }

    /// Learns from a finished batch of `records` that took `elapsed_us`;
    /// `capped`: whether its cut was limited by [`BatchSizer::cap`].
    /// Returns true the one time it gives up (for the caller to log).
    pub(crate) fn observe(&mut self, records: u64, elapsed_us: u64, capped: bool) -> bool {
        let overran = elapsed_us > self.interval_us;
        if self.gave_up || records == 0 || !(capped || overran) {
            return false;
        }
        let fits = records as f64 * (self.interval_us as f64 * FILL) / elapsed_us.max(1) as f64;
        let floor = FLOOR_RECORDS.min(self.ceiling);
        if capped && overran && self.cap <= floor {
            self.gave_up = true;
            return true;
        }
        let grown = self.cap.saturating_mul(GROWTH_MAX);
        self.cap = (fits as u64).min(grown).clamp(floor, self.ceiling);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capped batches of a pipeline that takes `fixed_us + per_record_ns *
    /// n / 1000`: the cap after each, and whether the sizer gave up.
    fn run(
        sizer: &mut BatchSizer,
        fixed_us: u64,
        per_record_ns: u64,
        batches: usize,
    ) -> (Vec<u64>, bool) {
        let mut caps = Vec::new();
        let mut gave_up = false;
        for _ in 0..batches {
            let n = sizer.cap();
            gave_up |= sizer.observe(n, fixed_us + per_record_ns * n / 1000, true);
            caps.push(sizer.cap());
        }
        (caps, gave_up)
    }

    #[test]
    fn converges_to_what_fits_in_the_interval() {
        // 1 s batches, 300 ns per record: 3 M records per second.
        let mut s = BatchSizer::new(1000, 10_000_000);
        assert_eq!(s.cap(), INITIAL_RECORDS);
        let (caps, _) = run(&mut s, 0, 300, 4);
        // 1 M took 0.3 s: 3 M fit in 0.9 s (under the 4x growth limit).
        assert_eq!(caps, vec![3_000_000, 3_000_000, 3_000_000, 3_000_000]);
        // Growth is limited to 4x per batch.
        let mut s = BatchSizer::new(1000, 100_000_000);
        let (caps, _) = run(&mut s, 0, 10, 3);
        assert_eq!(caps, vec![4_000_000, 16_000_000, 64_000_000]);
    }

    #[test]
    fn shrinks_when_a_batch_overran_and_never_below_the_floor_or_above_the_ceiling() {
        let mut s = BatchSizer::new(1000, 500_000);
        assert_eq!(s.cap(), 500_000);
        // 500,000 records took 10 s: 45,000 fit in 0.9 s.
        s.observe(500_000, 10_000_000, true);
        assert_eq!(s.cap(), 45_000);
        s.observe(45_000, 100_000_000, true);
        assert_eq!(s.cap(), FLOOR_RECORDS);
        s.observe(1, 1, true);
        assert_eq!(s.cap(), 40_000);
    }

    #[test]
    fn batches_in_time_that_took_everything_or_empty_ones_teach_nothing() {
        let mut s = BatchSizer::new(1000, 10_000_000);
        s.observe(10, 999_000, false);
        s.observe(0, 5_000_000, true);
        assert_eq!(s.cap(), INITIAL_RECORDS);
    }

    #[test]
    fn an_uncapped_batch_that_overran_shrinks_the_cap() {
        // 100 ms batches start at 100,000 records; 80,000 took 200 ms.
        let mut s = BatchSizer::new(100, 10_000_000);
        assert_eq!(s.cap(), 100_000);
        s.observe(80_000, 200_000, false);
        assert_eq!(s.cap(), 36_000);
    }

    #[test]
    fn per_batch_work_longer_than_the_interval_stops_the_shrinking() {
        // 2 s of fixed work per batch: no batch size fits in 1 s.
        let mut s = BatchSizer::new(1000, 10_000_000);
        let (_, gave_up) = run(&mut s, 2_000_000, 1, 20);
        assert!(gave_up);
        assert_eq!(s.cap(), 10_000_000);
    }
}
