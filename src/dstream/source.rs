//! The interface input streams plug into, and the in-memory queue source.
//!
//! A source's records are addressed by dense `u64` positions starting at 0
//! (for a WAL-backed source: record numbers). A batch reads the range
//! `[previous cut, this cut)`; the same range must read back the same
//! records until it is released, so a batch can be replayed.
//!
//! Limits: a [`Queue`] holds at most `queue_records_max` records
//! (default [`QUEUE_RECORDS_MAX_DEFAULT`]); `push` past it returns an error
//! instead of growing.
//! Must never: decide batch boundaries on its own beyond `next_cut`, or do
//! I/O (a WAL-backed source lives in `crate::source`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::eval::{BatchCtx, PartFn, Stream};
use super::graph::{NodeId, SourceControl, SourceEntry};
use super::{bad, meta, DStream, Data, EngineError, Graph};

/// Boxed error type for source failures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A replayable input of records of type `T`.
pub trait Source<T>: Send + Sync {
    /// End (exclusive) of the records that are available (durable) now.
    fn available_end(&self) -> u64;
    /// Where the batch starting at `start` ends: at most `max_end` (the
    /// generator's cap) and at most [`Source::available_end`]. Called once
    /// per batch, when the batch is cut. Default: everything available.
    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        let _ = start;
        self.available_end().min(max_end)
    }
    /// The records of exactly `range`, re-readable until released. The
    /// engine reads a batch's range as `partitions` contiguous sub-ranges,
    /// concurrently from worker threads.
    fn read(&self, range: Range<u64>) -> Result<Vec<T>, BoxError>;
    /// Calls `f` with the records of exactly `range`, in order, until it
    /// returns false. The engine reads batches this way, so a source that
    /// can decode one record at a time (a WAL) should implement it and
    /// never hold the whole range decoded. Default: [`Source::read`].
    fn read_each(&self, range: Range<u64>, f: &mut dyn FnMut(T) -> bool) -> Result<(), BoxError> {
        for x in self.read(range)? {
            if !f(x) {
                break;
            }
        }
        Ok(())
    }
    /// Like [`Source::read_each`], with each record's position. A source
    /// whose positions have gaps (JetStream sequences of deleted messages)
    /// implements it, so that bad records and skipped ranges name real
    /// positions. Default: dense positions counted from `range.start`.
    fn read_each_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, T) -> bool,
    ) -> Result<(), BoxError> {
        let mut pos = range.start;
        self.read_each(range, &mut |x| {
            let p = pos;
            pos += 1;
            f(p, x)
        })
    }
    /// Like [`Source::read_each_at`], lending each record instead of
    /// handing it over, for consumers that only read it (a model's sums).
    /// A source that holds its records in memory (a [`Queue`]) implements
    /// it, so that such consumers copy nothing. Default:
    /// [`Source::read_each_at`], lending each record it hands over.
    fn read_each_ref_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, &T) -> bool,
    ) -> Result<(), BoxError> {
        self.read_each_at(range, &mut |pos, x| f(pos, &x))
    }
    /// Checked once per batch and consumer before the batch's `range` is
    /// read (skipped ranges left out): an error if the source can tell at
    /// once that it no longer holds the start of it (a JetStream range
    /// retention removed), so the error names the whole gap rather than a
    /// worker's share of it. Default: nothing to check.
    fn check_held(&self, range: Range<u64>) -> Result<(), BoxError> {
        let _ = range;
        Ok(())
    }
    /// Records before `end` will never be read again and may be dropped.
    fn release(&self, end: u64) {
        let _ = end;
    }
    /// Where this source's first batch starts when the checkpoint records
    /// nothing of it: asked once, at start; `fresh` when the checkpoint
    /// records no batch at all (a first start), false for a source new to
    /// a running pipeline (a Kafka partition added to a topic starts at
    /// its earliest offset then, whatever `start` says). Default: 0.
    fn first_position(&self, fresh: bool) -> Result<u64, BoxError> {
        let _ = fresh;
        Ok(0)
    }
    /// Called before every batch is cut (an error stops the pipeline
    /// before anything is allocated for the batch) and again just before
    /// a batch commits (an error leaves it uncommitted, to be replayed):
    /// a source that can no longer read, such as a JetStream partition
    /// whose lease was lost. Called twice a batch: keep it cheap (no
    /// network round trip). Default: always ready.
    fn check(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

pub(crate) struct Control<T>(pub Arc<dyn Source<T>>);

impl<T> SourceControl for Control<T> {
    fn available_end(&self) -> u64 {
        self.0.available_end()
    }
    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        self.0
            .next_cut(start, max_end)
            .min(self.0.available_end())
            .min(max_end)
            .max(start)
    }
    fn release(&self, end: u64) {
        self.0.release(end)
    }
    fn check(&self) -> Result<(), BoxError> {
        self.0.check()
    }
    fn first_position(&self, fresh: bool) -> Result<u64, BoxError> {
        self.0.first_position(fresh)
    }
}

// ------------------------------------------------- source streams in a graph

struct SourceStream<T> {
    id: NodeId,
    index: usize,
    src: Arc<dyn Source<T>>,
}

/// A source batch for one consumer: partition `p` reads its sub-range of
/// the batch's range while it runs, record by record, straight into the
/// fused chain. Nothing of the batch is held decoded beyond what the chain
/// keeps, and a consumer that stops early (`print`) reads only what it
/// shows.
struct SourceParts<T> {
    src: Arc<dyn Source<T>>,
    index: usize,
    /// Ranges of this source never fed to the pipeline.
    skipped: Vec<Range<u64>>,
    source_name: String,
    ranges: Vec<std::ops::Range<u64>>,
    failure: Arc<super::eval::ReadFailure>,
}

impl<T: Data> PartFn<T> for SourceParts<T> {
    fn parts(&self) -> usize {
        self.ranges.len()
    }
    fn run(&self, p: usize, sink: &mut dyn FnMut(T)) {
        self.run_while(p, &|| true, sink)
    }
    fn run_while(&self, p: usize, more: &dyn Fn() -> bool, sink: &mut dyn FnMut(T)) {
        self.each_piece(p, &mut |piece, stopped| {
            self.src.read_each_at(piece, &mut |pos, x| {
                bad::set_position(Some((self.index, pos)));
                sink(x);
                *stopped = !more();
                !*stopped
            })
        })
    }
    fn run_ref(&self, p: usize, sink: &mut dyn FnMut(&T)) {
        self.each_piece(p, &mut |piece, _| {
            self.src.read_each_ref_at(piece, &mut |pos, x| {
                bad::set_position(Some((self.index, pos)));
                sink(x);
                true
            })
        })
    }
}

impl<T: Data> SourceParts<T> {
    /// Reads partition `p`'s sub-range with `read(piece, stopped)`, piece
    /// by piece, until a read fails or sets `stopped`; a failure is
    /// recorded for the batch.
    fn each_piece(
        &self,
        p: usize,
        read: &mut dyn FnMut(Range<u64>, &mut bool) -> Result<(), BoxError>,
    ) {
        if self.failure.is_set() {
            // The batch fails anyway; do not read more of it.
            return;
        }
        let sub = self.ranges[p].clone();
        // Skipped ranges are never read: their records may be gone from
        // the log (a JetStream range removed by retention, then skipped).
        let mut stopped = false;
        let mut result = Ok(());
        for piece in unskipped(sub.clone(), &self.skipped) {
            result = read(piece, &mut stopped);
            if result.is_err() || stopped {
                break;
            }
        }
        bad::set_position(None);
        if let Err(reason) = result {
            self.failure.set(&self.source_name, sub, &reason);
        }
    }
}

/// The parts of `sub` outside every range of `skipped`, in order.
fn unskipped(sub: Range<u64>, skipped: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut cuts: Vec<&Range<u64>> = skipped.iter().filter(|r| r.start < r.end).collect();
    cuts.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    let mut at = sub.start;
    for r in cuts {
        if r.start > at {
            out.push(at..r.start.min(sub.end));
        }
        at = at.max(r.end);
        if at >= sub.end {
            break;
        }
    }
    if at < sub.end {
        out.push(at..sub.end);
    }
    out.retain(|r| r.start < r.end);
    out
}

impl<T: Data> Stream<T> for SourceStream<T> {
    /// Not memoized: every consumer reads the batch's range again (the
    /// range is fixed, so it reads the same records) and owns what it
    /// read, so no record is cloned twice and nothing is dropped serially
    /// at the end of the batch.
    fn prepare(&self, ctx: &BatchCtx) -> Result<Arc<dyn PartFn<T>>, EngineError> {
        let r = ctx.ranges.get(self.index).cloned().unwrap_or(0..0);
        // `partitions` contiguous sub-ranges, read in parallel by the
        // partitions' tasks; uneven ones larger last, as Spark slices.
        let n = ctx.partitions() as u64;
        let len = r.end - r.start;
        let bound = |i: u64| r.start + super::chunk_start(len, n, i);
        let skipped: Vec<Range<u64>> = ctx
            .skipped
            .get(self.index)
            .map(|v| v.iter().filter(|s| s.start < r.end && r.start < s.end).cloned().collect())
            .unwrap_or_default();
        let source_name = ctx.name(self.id).to_string();
        if let Some(first) = unskipped(r.clone(), &skipped).first() {
            if let Err(reason) = self.src.check_held(first.clone()) {
                ctx.read_failure.set(&source_name, r.clone(), &reason);
            }
        }
        Ok(Arc::new(SourceParts {
            src: self.src.clone(),
            index: self.index,
            skipped,
            source_name,
            ranges: (0..n).map(|i| bound(i)..bound(i + 1)).collect(),
            failure: ctx.read_failure.clone(),
        }))
    }
}

impl<T: Data> DStream<T> {
    /// A stream reading from `src`; `kind` names it (e.g. `queue`).
    pub(crate) fn from_source(g: &Arc<Graph>, kind: &'static str, src: Arc<dyn Source<T>>) -> Self {
        let interval = g.interval_ms();
        let id = g.add_node(meta(kind, vec![], interval, vec![]));
        let index = {
            let inner = g.lock();
            inner.sources.len()
        };
        g.add_source(SourceEntry {
            node: id,
            control: Arc::new(Control(src.clone())),
        });
        DStream {
            g: g.clone(),
            id,
            s: Arc::new(SourceStream { id, index, src }),
        }
    }
}

/// Default bound of a [`Queue`], in records.
pub const QUEUE_RECORDS_MAX_DEFAULT: usize = 10_000_000;

/// How a queue stream cuts batches (Spark's `oneAtATime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueMode {
    /// Each pushed `Vec` is exactly one batch (an empty push is an empty
    /// batch); a tick with nothing queued gives an empty batch.
    #[default]
    OneAtATime,
    /// A batch takes everything queued at its tick.
    All,
}

#[derive(Debug)]
struct QueueInner<T> {
    /// One segment per non-empty push: (position of its first record,
    /// records), ascending. Shared so reads clone outside the lock.
    segments: VecDeque<(u64, Arc<Vec<T>>)>,
    /// Positions below this were released and can no longer be read.
    released: u64,
    /// End (exclusive) of all pushed records.
    end: u64,
    /// End positions of pushes not yet fully cut, ascending.
    push_ends: VecDeque<u64>,
}

impl<T> QueueInner<T> {
    /// Records held in memory (whole segments, released or not).
    fn held(&self) -> usize {
        self.segments.iter().map(|(_, s)| s.len()).sum()
    }
}

/// An in-memory queue of batches, for tests and examples (like Spark's
/// `queueStream`). Cloning shares the queue.
#[derive(Debug)]
pub struct Queue<T> {
    inner: Arc<Mutex<QueueInner<T>>>,
    mode: QueueMode,
    records_max: usize,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
            mode: self.mode,
            records_max: self.records_max,
        }
    }
}

/// Returned when a push would exceed the queue's bound.
#[derive(Debug, thiserror::Error)]
#[error("queue full: {held} records held, push of {pushed} would exceed queue_records_max {max}")]
pub struct QueueFull {
    /// Records held now.
    pub held: usize,
    /// Records in the refused push.
    pub pushed: usize,
    /// The bound.
    pub max: usize,
}

impl<T> Queue<T> {
    /// An empty queue, one batch per push.
    pub fn new() -> Self {
        Self::with_mode(QueueMode::OneAtATime)
    }

    /// An empty queue with the given mode.
    pub fn with_mode(mode: QueueMode) -> Self {
        Queue {
            inner: Arc::new(Mutex::new(QueueInner {
                segments: VecDeque::new(),
                released: 0,
                end: 0,
                push_ends: VecDeque::new(),
            })),
            mode,
            records_max: QUEUE_RECORDS_MAX_DEFAULT,
        }
    }

    /// Sets the bound (`queue_records_max`), in records.
    pub fn with_records_max(mut self, queue_records_max: usize) -> Self {
        self.records_max = queue_records_max;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The held segments overlapping `range` (shared, not copied), or an
    /// error if the queue no longer (or not yet) holds all of it.
    fn segments_of(&self, range: &Range<u64>) -> Result<Vec<(u64, Arc<Vec<T>>)>, BoxError> {
        let q = self.lock();
        if range.start < q.released || range.end > q.end || range.start > range.end {
            return Err(format!(
                "queue range {}..{} not held (held {}..{})",
                range.start, range.end, q.released, q.end
            )
            .into());
        }
        Ok(q.segments
            .iter()
            .filter(|(s, seg)| *s < range.end && s + seg.len() as u64 > range.start)
            .cloned()
            .collect())
    }

    /// Queues one batch of records.
    pub fn push(&self, batch: Vec<T>) -> Result<(), QueueFull> {
        let mut q = self.lock();
        let held = q.held();
        if held + batch.len() > self.records_max {
            return Err(QueueFull {
                held,
                pushed: batch.len(),
                max: self.records_max,
            });
        }
        let start = q.end;
        q.end += batch.len() as u64;
        if !batch.is_empty() {
            q.segments.push_back((start, Arc::new(batch)));
        }
        let end = q.end;
        q.push_ends.push_back(end);
        Ok(())
    }

    /// Records held in memory (a push is freed once wholly released).
    pub fn len(&self) -> usize {
        self.lock().held()
    }

    /// Whether no records are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync> Source<T> for Queue<T> {
    fn available_end(&self) -> u64 {
        self.lock().end
    }

    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        let mut q = self.lock();
        let end = q.end;
        match self.mode {
            QueueMode::All => {
                while q.push_ends.front().is_some_and(|&e| e <= max_end) {
                    q.push_ends.pop_front();
                }
                end.min(max_end)
            }
            QueueMode::OneAtATime => {
                // Drop push boundaries already passed (`<= start` except an
                // empty push exactly at `start`, which is its own batch).
                while let Some(&e) = q.push_ends.front() {
                    if e < start {
                        q.push_ends.pop_front();
                    } else {
                        break;
                    }
                }
                match q.push_ends.front().copied() {
                    Some(e) if e <= max_end => {
                        q.push_ends.pop_front();
                        e
                    }
                    // The cap splits this push; the rest comes next batch.
                    Some(_) => max_end,
                    None => start,
                }
            }
        }
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<T>, BoxError> {
        // Cloned outside the queue's lock (`read_each_ref_at` takes it only
        // to share the segments), so parallel reads of sub-ranges scale.
        // Not sized from the range: it is checked only inside the read.
        let mut out = Vec::new();
        self.read_each_ref_at(range, &mut |_, x| {
            out.push(x.clone());
            true
        })?;
        Ok(out)
    }

    fn read_each_ref_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, &T) -> bool,
    ) -> Result<(), BoxError> {
        for (s, seg) in self.segments_of(&range)? {
            let a = range.start.saturating_sub(s) as usize;
            let b = ((range.end - s) as usize).min(seg.len());
            for (i, x) in seg[a..b].iter().enumerate() {
                if !f(s + (a + i) as u64, x) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn release(&self, end: u64) {
        let mut q = self.lock();
        q.released = q.released.max(end.min(q.end));
        while let Some((s, seg)) = q.segments.front() {
            if s + seg.len() as u64 <= q.released {
                q.segments.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_lends_exactly_what_it_reads_with_positions() {
        let q: Queue<u32> = Queue::new();
        q.push(vec![1, 2, 3]).unwrap();
        q.push(vec![4, 5]).unwrap();
        for range in [0..5, 1..4, 2..3, 3..5, 4..4] {
            let mut lent = Vec::new();
            q.read_each_ref_at(range.clone(), &mut |pos, x| {
                lent.push((pos, *x));
                true
            })
            .unwrap();
            let read: Vec<(u64, u32)> = range.clone().zip(q.read(range.clone()).unwrap()).collect();
            assert_eq!(lent, read, "{range:?}");
        }
        let mut first = Vec::new();
        q.read_each_ref_at(0..5, &mut |_, x| {
            first.push(*x);
            first.len() < 2
        })
        .unwrap();
        assert_eq!(first, vec![1, 2], "stops when told");
        q.release(3);
        assert!(q.read_each_ref_at(2..4, &mut |_, _| true).is_err(), "released");
        assert!(q.read_each_ref_at(4..6, &mut |_, _| true).is_err(), "not yet held");
    }

    #[test]
    fn one_at_a_time_cuts_at_push_boundaries_and_respects_the_cap() {
        let q: Queue<u32> = Queue::new();
        q.push(vec![1, 2, 3]).unwrap();
        q.push(vec![]).unwrap();
        q.push(vec![4]).unwrap();
        assert_eq!(q.next_cut(0, 2), 2); // capped inside the first push
        assert_eq!(q.next_cut(2, 100), 3); // rest of the first push
        assert_eq!(q.next_cut(3, 100), 3); // the empty push
        assert_eq!(q.next_cut(3, 100), 4);
        assert_eq!(q.next_cut(4, 100), 4); // nothing queued: empty batch
        assert_eq!(q.read(1..4).unwrap(), vec![2, 3, 4]);
        q.release(3);
        assert!(q.read(0..2).is_err());
        assert_eq!(q.read(3..4).unwrap(), vec![4]);
        assert_eq!(q.len(), 1);
        q.release(2); // never goes back
        assert!(q.read(2..3).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // ranges are the point here
    fn unskipped_leaves_out_every_skipped_range() {
        assert_eq!(unskipped(0..10, &[]), vec![0..10]);
        assert_eq!(unskipped(0..10, &[3..5, 1..2]), vec![0..1, 2..3, 5..10]);
        assert_eq!(unskipped(0..10, &[0..4, 2..10]), Vec::<Range<u64>>::new());
        assert_eq!(unskipped(5..10, &[0..6, 8..20]), vec![6..8]);
        assert_eq!(
            unskipped(5..10, &[Range { start: 7, end: 7 }]),
            vec![5..10]
        );
    }

    #[test]
    fn queue_is_bounded() {
        let q: Queue<u8> = Queue::new().with_records_max(3);
        q.push(vec![1, 2]).unwrap();
        let e = q.push(vec![3, 4]).unwrap_err();
        assert_eq!(e.max, 3);
        assert_eq!(q.len(), 2);
    }
}
