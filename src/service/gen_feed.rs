//! A durable generator (`kind = "generator"`, `durable = true`): the
//! generator's records stored through the stream's write-ahead log by a
//! receiver thread, so a demo shows what a real input shows (appends,
//! group-commit fsyncs, segments, backlog, commits) and replays come from
//! the log, not from the generator.
//!
//! Record `p` of the log is the generator's record `p` (the feed starts at
//! the log's end, so the text continues across restarts); records become
//! due at `records_per_second` from the receiver's start, up to `count`.
//! Limits: one store holds at most the WAL's `append_records_max` records
//! and about half its `append_bytes_max` bytes; the feed wakes every
//! [`FEED_TICK`] and notices a stop within it.
//! Must never: acknowledge anything itself (every record goes through
//! `ReceiverContext::store`, which returns after the fsync).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::dstream::BoxError;
use crate::receiver::{Receiver, ReceiverContext, ReceiverError};
use crate::source::generator::{GeneratorConfig, GeneratorSource};
use crate::{DStream, StreamingContext};

/// How often the feed stores what became due.
pub const FEED_TICK: Duration = Duration::from_millis(100);

/// The receiver of a durable generator.
pub struct GeneratorFeed {
    cfg: GeneratorConfig,
    text: GeneratorSource,
    stored: Arc<AtomicU64>,
}

impl GeneratorFeed {
    /// A feed of `cfg`'s records; `stored` counts what it stored.
    pub fn new(cfg: GeneratorConfig, clock: Arc<dyn Clock>, stored: Arc<AtomicU64>) -> Self {
        GeneratorFeed {
            text: GeneratorSource::new(cfg.clone(), clock),
            cfg,
            stored,
        }
    }

    /// Stores records `from..to` in stores within the WAL's limits;
    /// returns where it got to.
    fn store(&self, ctx: &ReceiverContext, from: u64, to: u64) -> Result<u64, ReceiverError> {
        let wal = ctx.wal().config();
        let bytes_max = (wal.append_bytes_max / 2).max(1);
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut end = from;
        while end < to && records.len() < wal.append_records_max && bytes < bytes_max {
            let r = self.text.record(end);
            bytes += r.len();
            records.push(r);
            end += 1;
        }
        let refs: Vec<&[u8]> = records.iter().map(|r| r.as_bytes()).collect();
        ctx.store(&refs)?;
        self.stored.fetch_add(refs.len() as u64, Ordering::Relaxed);
        Ok(end)
    }
}

impl Receiver for GeneratorFeed {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        let base = ctx.wal().end();
        let started = Instant::now();
        let mut next = base;
        while !ctx.is_stopping() {
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let n = (u128::from(elapsed_ms) * u128::from(self.cfg.records_per_second) / 1000) as u64;
            let due = base.saturating_add(n);
            let due = self.cfg.count.map_or(due, |c| due.min(c));
            if next < due {
                match self.store(&ctx, next, due) {
                    Ok(end) => next = end,
                    Err(ReceiverError::Stopping) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            if crate::receiver::sleep_unless_stopping(&ctx, FEED_TICK) {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The stream `id` of a durable generator `g` on `ssc` (its log
/// `DATA_DIR/wal/<id>`), and the count of records its feed stored.
pub fn stream(
    ssc: &StreamingContext,
    id: &str,
    g: &GeneratorConfig,
) -> crate::Result<(DStream<String>, Arc<AtomicU64>)> {
    let stored = Arc::new(AtomicU64::new(0));
    let feed = GeneratorFeed::new(g.clone(), ssc.clock(), stored.clone());
    Ok((ssc.receiver_stream(id, feed, crate::receiver::utf8)?, stored))
}
