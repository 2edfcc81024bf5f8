//! What both fronts of an ingest stream (the binary protocol in
//! `server.rs`, HTTP in `http.rs`) share once records are framed: the
//! server's shared state ([`Server`]), the decoder check of a record
//! ([`check_record`]), the store of a producer's records under its lock
//! ([`store_frames`]: duplicates dropped, a gap refused, WAL-sized
//! appends) and the once-a-tick housekeeping ([`Housekeeping`]: producer
//! expiry, the summary line, the stop check, TLS and token reloads).
//!
//! Limits: one store is at most `append_records_max` records and
//! `append_bytes_max` bytes per WAL append (the WAL's); expired producer
//! ids named in a summary line: [`EXPIRED_SHOWN_MAX`].
//! Must never: store a sequence number of a producer twice, advance a
//! producer past what the WAL returned for, or call the decoder check
//! without catching its panic.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::parts::Part;
use super::pressure::{AddrTable, Close, IngestStats, LogBudget, Summary};
use super::producers::{lock, Producer};
use super::proto::ErrorCode;
use super::server::RecordCheck;
use super::IngestConfig;
use crate::receiver::ReceiverError;

/// Longest time between two sweeps for expired producers.
const EXPIRY_SWEEP_MAX: Duration = Duration::from_secs(1);
/// Expired producer ids a summary line names at most.
pub(super) const EXPIRED_SHOWN_MAX: usize = 5;

/// Shared by the connections of one server.
pub(super) struct Server {
    pub(super) cfg: IngestConfig,
    /// The stream's name (its partitions' logs add `-p<p>`).
    pub(super) name: String,
    /// The stream as producers name it (HTTP's `/v1/streams/<stream>`).
    pub(super) stream: String,
    /// Every partition, in order (one for an unpartitioned stream).
    pub(super) parts: Vec<Part>,
    /// Set when a store failed for a reason other than stopping: the
    /// receiver returns it as its error.
    pub(super) fatal: Mutex<Option<String>>,
    /// Per WAL append.
    pub(super) append_records_max: usize,
    pub(super) append_bytes_max: usize,
    pub(super) stats: Arc<IngestStats>,
    pub(super) addrs: Arc<AddrTable>,
    pub(super) budget: LogBudget,
    pub(super) check: Option<RecordCheck>,
}

/// A DATA frame waiting to be stored: its first sequence and record count,
/// and where its stored records (header + payload) are in the batch buffer.
pub(super) struct PendingFrame {
    pub(super) first_seq: u64,
    pub(super) records: Vec<std::ops::Range<usize>>,
}

/// Runs the stream's decoder (if `check_records`) on a stored record
/// (record `index` of its DATA frame, sequence `seq`); a refusal or a
/// panic is an `invalid_record` ERROR naming the sequence and the reason.
pub(super) fn check_record(
    server: &Server,
    stored: &[u8],
    seq: u64,
    index: usize,
) -> Result<(), Close> {
    let Some(why) = refusal(server, stored) else {
        return Ok(());
    };
    Err(Close::new(
        ErrorCode::InvalidRecord,
        format!(
            "record {seq} (record {index} of its DATA frame) cannot be processed by this stream: {why}; it was not stored, nor anything after it: fix or remove it and send again from {seq}"
        ),
    ))
}

/// Why the stream's decoder (if `check_records`) refuses a stored record
/// (None: it takes it); a panic is caught and is a refusal.
pub(super) fn refusal(server: &Server, stored: &[u8]) -> Option<String> {
    let check = server.check.as_ref()?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(stored))) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the stream's decoder panicked on it".to_string()),
    }
}

/// Under the producer's lock: checks ownership, drops duplicates, refuses a
/// gap, stores the rest (in WAL-sized appends), and advances the table.
/// Returns the producer's next expected sequence and, for a gap, the
/// reason to close (frames before it are stored).
pub(super) fn store_frames(
    server: &Server,
    part: &Part,
    p: &Producer,
    generation: u64,
    frames: &[PendingFrame],
    batch: &[u8],
) -> Result<StoreOutcome, Close> {
    let mut next = lock(&p.next);
    if p.generation.load(Ordering::Acquire) != generation {
        return Err(Close::new(
            ErrorCode::Superseded,
            "this producer connected again; the newer connection is used",
        ));
    }
    let mut expected = *next;
    let mut slices: Vec<&[u8]> = Vec::new();
    let mut gap = None;
    for f in frames {
        if f.first_seq > expected {
            gap = Some(Close::new(
                ErrorCode::SequenceGap,
                format!(
                    "sequence gap: expected {expected}, the DATA frame starts at {} ({} records missing); nothing of it was stored",
                    f.first_seq,
                    f.first_seq - expected
                ),
            ));
            break;
        }
        let skip = (expected - f.first_seq) as usize;
        for r in f.records.iter().skip(skip) {
            slices.push(&batch[r.clone()]);
        }
        expected = expected.max(f.first_seq + f.records.len() as u64);
    }
    let total = slices.len();
    let appended = append(server, part, &slices, |lsns, left| {
        p.stored_below(lsns.end);
        // Durable now: later frames' checks see it at once.
        p.advance(&mut next, expected - left as u64);
    });
    if let Err((close, left)) = appended {
        // What was stored so far stays; the table says so.
        p.advance(&mut next, expected - left as u64);
        return Err(close);
    }
    p.advance(&mut next, expected);
    Ok(StoreOutcome {
        next: *next,
        gap,
        stored: total,
    })
}

/// What [`store_frames`] did.
pub(super) struct StoreOutcome {
    /// The producer's next expected sequence number now.
    pub(super) next: u64,
    /// A sequence gap that stopped it (frames before it are stored).
    pub(super) gap: Option<Close>,
    /// Records stored (duplicates not counted).
    pub(super) stored: usize,
}

/// Stores records without a producer (an anonymous HTTP request) in
/// WAL-sized appends; how many were stored.
pub(super) fn store_anonymous(
    server: &Server,
    part: &Part,
    slices: &[&[u8]],
) -> Result<usize, Close> {
    append(server, part, slices, |_, _| {}).map_err(|(close, _)| close)?;
    Ok(slices.len())
}

/// Appends `slices` to the partition's log in appends of at most
/// `append_records_max` records and `append_bytes_max` bytes (one record
/// may pass the bytes alone), calling `durable(lsns, left)` after each
/// with the records still to store. On failure: why, and the records not
/// stored; a failure other than stopping is fatal to the server.
fn append(
    server: &Server,
    part: &Part,
    slices: &[&[u8]],
    mut durable: impl FnMut(std::ops::Range<u64>, usize),
) -> Result<(), (Close, usize)> {
    let mut stored = 0usize;
    while stored < slices.len() {
        let mut bytes = 0usize;
        let mut end = stored;
        while end < slices.len()
            && end - stored < server.append_records_max
            && (end == stored || bytes + slices[end].len() <= server.append_bytes_max)
        {
            bytes += slices[end].len();
            end += 1;
        }
        debug_assert!(end > stored, "every append takes at least one record");
        match part.ctx.store(&slices[stored..end]) {
            Ok(lsns) => {
                server
                    .stats
                    .records_stored
                    .fetch_add((end - stored) as u64, Ordering::Relaxed);
                stored = end;
                durable(lsns, slices.len() - stored);
            }
            Err(ReceiverError::Stopping) => {
                let close = Close::new(
                    ErrorCode::Stopping,
                    "the server is stopping; reconnect later",
                );
                return Err((close, slices.len() - stored));
            }
            Err(e) => {
                let msg = format!("storing records failed: {e}");
                *lock(&server.fatal) = Some(msg.clone());
                return Err((Close::new(ErrorCode::Storage, msg), slices.len() - stored));
            }
        }
    }
    Ok(())
}

/// The accept loop's periodic work, shared by both fronts.
pub(super) struct Housekeeping {
    sweep_every: Duration,
    last_sweep: Instant,
    last_reload: Instant,
    summary: Summary,
    expired_ids: Vec<String>,
}

impl Housekeeping {
    pub(super) fn new(cfg: &IngestConfig) -> Housekeeping {
        Housekeeping {
            sweep_every: (cfg.producers_idle_max / 4).min(EXPIRY_SWEEP_MAX),
            last_sweep: Instant::now(),
            last_reload: Instant::now(),
            summary: Summary::new(),
            expired_ids: Vec::new(),
        }
    }

    /// Expires idle producers and logs the summary line when due, looks
    /// for changed TLS and token files every `crate::net::RELOAD_POLL`;
    /// true when the server must stop (a stop was asked for, or a store
    /// failed).
    pub(super) async fn tick(&mut self, server: &Server) -> bool {
        if self.last_sweep.elapsed() >= self.sweep_every {
            self.last_sweep = Instant::now();
            for part in &server.parts {
                let (ids, n) = part.table.expire_idle(EXPIRED_SHOWN_MAX);
                if n > 0 {
                    server
                        .stats
                        .producers_expired
                        .fetch_add(n, Ordering::Relaxed);
                    self.expired_ids.extend(ids);
                    self.expired_ids.truncate(EXPIRED_SHOWN_MAX);
                }
            }
            let producers: usize = server.parts.iter().map(|p| p.table.len()).sum();
            server
                .stats
                .producers
                .store(producers as u64, Ordering::Relaxed);
            if self
                .summary
                .maybe_log(&server.name, &server.stats, &self.expired_ids)
            {
                self.expired_ids.clear();
            }
        }
        if let Some(sec) = &server.cfg.security {
            if self.last_reload.elapsed() >= crate::net::RELOAD_POLL {
                self.last_reload = Instant::now();
                let sec = sec.clone();
                // Reading files blocks: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || sec.reload_if_changed()).await;
            }
        }
        server.parts[0].ctx.is_stopping() || lock(&server.fatal).is_some()
    }
}

/// Ends the accept loop's connections: tells them to stop, waits up to
/// `drain` for them to finish their requests, then drops the rest.
pub(super) async fn drain(
    mut tasks: tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Sender<bool>,
    drain: Duration,
) {
    let _ = stop.send(true);
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}
