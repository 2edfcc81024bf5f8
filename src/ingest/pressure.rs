//! Pressure on an ingest server, bounded and shown: the per-address
//! connection limits ([`AddrTable`]: open connections and connections that
//! have not said HELLO yet, per source IP address), the eviction of the
//! connection idle longest when a limit is reached (so idle connections
//! cannot lock producers out until their `idle_timeout`), the server's counters
//! ([`IngestStats`]: refusals by reason, the producer table's size,
//! expiries; read by the service's `/metrics`), and the logging of
//! refusals as one summary line a minute ([`Summary`]) plus a few detailed
//! lines ([`LogBudget`]).
//!
//! Limits: the address table holds at most one entry per open connection
//! (an entry goes with its last connection, so at most `connections_max`),
//! and one record per open connection; an eviction looks at every open
//! connection once (at most `connections_max`) and closes one that sent
//! nothing for [`EVICT_IDLE_MIN`] (1 s);
//! [`SUMMARY_INTERVAL`] (60 s) between two summary lines;
//! [`DETAILED_LINES_MAX`] (10) detailed refusal lines per interval.
//! Must never: log a line per refusal without bound, or leave a count
//! behind when a connection ends (its [`AddrSlot`] gives it back on drop,
//! also on a panic).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::producers::lock;
use super::proto::ErrorCode;

/// Least time between two summary lines of one server.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Least time without a byte from a connection before it may be evicted to
/// make room for a refused one.
pub const EVICT_IDLE_MIN: Duration = Duration::from_secs(1);
/// Detailed (per-connection) refusal lines at most per [`SUMMARY_INTERVAL`];
/// the rest are only counted.
pub const DETAILED_LINES_MAX: u32 = 10;

/// Why the server refused a connection, a producer or a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// `connections_max` connections were open.
    ConnectionsMax,
    /// `connections_per_address_max` connections from that address.
    ConnectionsPerAddress,
    /// `handshakes_per_address_max` connections from that address had not
    /// said HELLO.
    HandshakesPerAddress,
    /// No preamble and HELLO within `hello_timeout`.
    HelloTimeout,
    /// A new producer while the table held `producers_max`.
    ProducersMax,
    /// A record the stream's decoder refused (e.g. not UTF-8).
    InvalidRecord,
    /// A malformed, oversized or out-of-sequence frame.
    Protocol,
    /// Idle or read timeout after the HELLO.
    Timeout,
    /// Closed, idle, to make room when a connection limit was reached.
    IdleEvicted,
    /// No token, or one the tokens file does not hold (binary protocol;
    /// HTTP counts its `401`/`403` by request).
    Token,
}

impl Refusal {
    const ALL: [Refusal; 10] = [
        Refusal::ConnectionsMax,
        Refusal::ConnectionsPerAddress,
        Refusal::HandshakesPerAddress,
        Refusal::HelloTimeout,
        Refusal::ProducersMax,
        Refusal::InvalidRecord,
        Refusal::Protocol,
        Refusal::Timeout,
        Refusal::IdleEvicted,
        Refusal::Token,
    ];

    /// The metric label (`reason="..."`).
    pub(super) fn name(self) -> &'static str {
        match self {
            Refusal::ConnectionsMax => "connections_max",
            Refusal::ConnectionsPerAddress => "connections_per_address_max",
            Refusal::HandshakesPerAddress => "handshakes_per_address_max",
            Refusal::HelloTimeout => "hello_timeout",
            Refusal::ProducersMax => "producers_max",
            Refusal::InvalidRecord => "invalid_record",
            Refusal::Protocol => "protocol_error",
            Refusal::Timeout => "timeout",
            Refusal::IdleEvicted => "idle_evicted",
            Refusal::Token => "token",
        }
    }

    /// `n` refusals in words, for the summary line.
    fn words(self, n: u64) -> String {
        match self {
            Refusal::ConnectionsMax
            | Refusal::ConnectionsPerAddress
            | Refusal::HandshakesPerAddress => {
                format!("{n} connections refused ({})", self.name())
            }
            Refusal::HelloTimeout => {
                format!("{n} connections closed without HELLO (hello_timeout)")
            }
            Refusal::ProducersMax => format!("{n} new producers refused (producers_max)"),
            Refusal::InvalidRecord => format!("{n} records refused as invalid (invalid_record)"),
            Refusal::Protocol => format!("{n} connections closed for protocol errors"),
            Refusal::Timeout => {
                format!("{n} connections timed out (idle_timeout or read_timeout)")
            }
            Refusal::IdleEvicted => format!("{n} idle connections closed to make room"),
            Refusal::Token => {
                format!("{n} connections refused for a missing or wrong token (unauthorized, forbidden)")
            }
        }
    }
}

/// An ingest server's counters (all since start).
#[derive(Debug, Default)]
pub struct IngestStats {
    /// Records stored durably (and acknowledged).
    pub records_stored: AtomicU64,
    /// Producers in the table now.
    pub producers: AtomicU64,
    /// Producers forgotten after `producers_idle_max`.
    pub producers_expired: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// HTTP requests by token name and status code (at most
    /// [`REQUEST_SERIES_MAX`] series; beyond, under the token `other`).
    requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    /// Binary-protocol connections by token name and outcome (at most
    /// [`REQUEST_SERIES_MAX`] series; beyond, under the token `other`).
    connections: Mutex<std::collections::BTreeMap<(String, &'static str), u64>>,
}

/// Most `(token, code)` series an HTTP ingest listener counts.
pub const REQUEST_SERIES_MAX: usize = 4096;

impl IngestStats {
    /// Counts an HTTP request answered `code` for token `token`.
    pub(super) fn count_request(&self, token: &str, code: u16) {
        let mut m = lock(&self.requests);
        let mut key = (token.to_string(), code);
        if !m.contains_key(&key) && m.len() >= REQUEST_SERIES_MAX {
            key.0 = "other".into();
        }
        *m.entry(key).or_insert(0) += 1;
    }

    /// HTTP requests so far: `(token name, status code, count)`, sorted.
    pub fn requests(&self) -> Vec<(String, u16, u64)> {
        lock(&self.requests)
            .iter()
            .map(|((t, c), n)| (t.clone(), *c, *n))
            .collect()
    }

    /// Counts a binary-protocol connection's HELLO (`"accepted"`) or its
    /// refusal (`"unauthorized"`, `"forbidden"`) for token `token`.
    pub(super) fn count_connection(&self, token: &str, outcome: &'static str) {
        let mut m = lock(&self.connections);
        let mut key = (token.to_string(), outcome);
        if !m.contains_key(&key) && m.len() >= REQUEST_SERIES_MAX {
            key.0 = "other".into();
        }
        *m.entry(key).or_insert(0) += 1;
    }

    /// Binary-protocol connections so far: `(token name, outcome,
    /// count)`, sorted.
    pub fn connections(&self) -> Vec<(String, &'static str, u64)> {
        lock(&self.connections)
            .iter()
            .map(|((t, o), n)| (t.clone(), *o, *n))
            .collect()
    }

    pub(super) fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(reason, count)` of every refusal reason, in a fixed order:
    /// `connections_max`, `connections_per_address_max`,
    /// `handshakes_per_address_max`, `hello_timeout`, `producers_max`,
    /// `invalid_record`, `protocol_error`, `timeout`, `idle_evicted`,
    /// `token`.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.name(), self.refused[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

#[derive(Debug, Default)]
struct PerAddr {
    connections: usize,
    handshakes: usize,
}

/// What the table knows of one open connection, for eviction.
#[derive(Debug)]
pub(super) struct Activity {
    ip: IpAddr,
    /// When it last sent bytes, ms since the table's epoch.
    active_ms: AtomicU64,
    /// Set when it was chosen for eviction (chosen once).
    evicted: AtomicBool,
    /// Wakes the connection to close itself.
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Tables {
    per_addr: HashMap<IpAddr, PerAddr>,
    conns: HashMap<u64, Arc<Activity>>,
    next_id: u64,
}

/// Open connections and pending handshakes per source IP address, and
/// each open connection's last activity.
#[derive(Debug)]
pub(super) struct AddrTable {
    map: Mutex<Tables>,
    connections_max: usize,
    handshakes_max: usize,
    epoch: Instant,
}

/// One connection's place in the [`AddrTable`], given back on drop.
#[derive(Debug)]
pub(super) struct AddrSlot {
    table: Arc<AddrTable>,
    ip: IpAddr,
    id: u64,
    activity: Arc<Activity>,
    handshaking: bool,
}

impl AddrTable {
    pub(super) fn new(connections_max: usize, handshakes_max: usize) -> Arc<AddrTable> {
        Arc::new(AddrTable {
            map: Mutex::new(Tables::default()),
            connections_max,
            handshakes_max,
            epoch: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Asks the open connection (from `ip`, or from anywhere) that sent
    /// nothing for longest, and for at least [`EVICT_IDLE_MIN`], to close;
    /// whether there was one.
    pub(super) fn evict_idlest(&self, ip: Option<IpAddr>) -> bool {
        let now = self.now_ms();
        let min = EVICT_IDLE_MIN.as_millis() as u64;
        let map = lock(&self.map);
        let idlest = map
            .conns
            .values()
            .filter(|a| ip.is_none_or(|ip| a.ip == ip) && !a.evicted.load(Ordering::Acquire))
            .filter(|a| now.saturating_sub(a.active_ms.load(Ordering::Acquire)) >= min)
            .min_by_key(|a| a.active_ms.load(Ordering::Acquire));
        match idlest {
            Some(a) => {
                a.evicted.store(true, Ordering::Release);
                a.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// A slot for a new connection from `ip`, counted as handshaking until
    /// [`AddrSlot::greeted`]; or why not.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<AddrSlot, (Refusal, usize)> {
        let now = self.now_ms();
        let mut map = lock(&self.map);
        let e = map.per_addr.entry(ip).or_default();
        if e.connections >= self.connections_max {
            return Err((Refusal::ConnectionsPerAddress, self.connections_max));
        }
        if e.handshakes >= self.handshakes_max {
            return Err((Refusal::HandshakesPerAddress, self.handshakes_max));
        }
        e.connections += 1;
        e.handshakes += 1;
        let id = map.next_id;
        map.next_id += 1;
        let activity = Arc::new(Activity {
            ip,
            active_ms: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        });
        map.conns.insert(id, activity.clone());
        Ok(AddrSlot {
            table: self.clone(),
            ip,
            id,
            activity,
            handshaking: true,
        })
    }

    /// Addresses and connections in the table (tests).
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let map = lock(&self.map);
        (map.per_addr.len(), map.conns.len())
    }
}

impl AddrSlot {
    /// The connection said HELLO: no longer a pending handshake.
    pub(super) fn greeted(&mut self) {
        if self.handshaking {
            self.handshaking = false;
            if let Some(e) = lock(&self.table.map).per_addr.get_mut(&self.ip) {
                e.handshakes = e.handshakes.saturating_sub(1);
            }
        }
    }

    /// The connection received bytes now.
    pub(super) fn touch(&self) {
        self.activity
            .active_ms
            .store(self.table.now_ms(), Ordering::Release);
    }

    /// The connection is storing (maybe waiting on backpressure): not
    /// idle, whatever its last bytes, until the next [`Self::touch`].
    pub(super) fn busy(&self) {
        self.activity.active_ms.store(u64::MAX, Ordering::Release);
    }

    /// Completes when the connection was chosen for eviction.
    pub(super) async fn evicted(&self) {
        self.activity.wake.notified().await;
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut map = lock(&self.table.map);
        map.conns.remove(&self.id);
        if let Some(e) = map.per_addr.get_mut(&self.ip) {
            e.connections = e.connections.saturating_sub(1);
            if self.handshaking {
                e.handshakes = e.handshakes.saturating_sub(1);
            }
            if e.connections == 0 {
                map.per_addr.remove(&self.ip);
            }
        }
    }
}

/// The summary line: what was refused and expired since the last one.
#[derive(Debug)]
pub(super) struct Summary {
    last: Option<Instant>,
    /// Refusal counts and expiries at the last line.
    seen: Vec<u64>,
    seen_expired: u64,
}

impl Summary {
    pub(super) fn new() -> Summary {
        Summary {
            last: None,
            seen: vec![0; Refusal::ALL.len()],
            seen_expired: 0,
        }
    }

    /// Logs one line if something was refused or expired since the last
    /// line and the last line is [`SUMMARY_INTERVAL`] old (the first one
    /// at once). Returns whether it logged.
    pub(super) fn maybe_log(
        &mut self,
        stream: &str,
        stats: &IngestStats,
        expired_ids: &[String],
    ) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < SUMMARY_INTERVAL)
        {
            return false;
        }
        let counts = stats.refusals();
        let expired = stats.producers_expired.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        for ((why, (_, n)), seen) in Refusal::ALL.iter().zip(&counts).zip(self.seen.iter_mut()) {
            if *n > *seen {
                parts.push(why.words(n - *seen));
                *seen = *n;
            }
        }
        if expired > self.seen_expired {
            let shown = if expired_ids.is_empty() {
                String::new()
            } else {
                format!(" (among them {})", expired_ids.join(", "))
            };
            parts.push(format!(
                "{} idle producers forgotten (producers_idle_ms_max){shown}",
                expired - self.seen_expired
            ));
            self.seen_expired = expired;
        }
        if parts.is_empty() {
            return false;
        }
        let since = match self.last {
            Some(t) => format!("in the last {} s", now.duration_since(t).as_secs()),
            None => "since start".to_string(),
        };
        self.last = Some(now);
        let producers = stats.producers.load(Ordering::Relaxed);
        tracing::warn!(stream, producers, "ingest pressure {since}: {}; counts by reason on /metrics (weir_receiver_rejected_total), the limits in docs/operations.md (ingest limits)", parts.join(", "));
        true
    }
}

/// How many detailed refusal lines may still be logged this interval.
#[derive(Debug)]
pub(super) struct LogBudget {
    window: Mutex<(Instant, u32)>,
}

impl LogBudget {
    pub(super) fn new() -> LogBudget {
        LogBudget {
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Whether one more detailed line may be logged now.
    pub(super) fn take(&self) -> bool {
        let mut w = lock(&self.window);
        if w.0.elapsed() >= SUMMARY_INTERVAL {
            *w = (Instant::now(), 0);
        }
        if w.1 < DETAILED_LINES_MAX {
            w.1 += 1;
            true
        } else {
            false
        }
    }
}

/// Why a connection is being closed by the server.
pub(super) struct Close {
    pub(super) code: ErrorCode,
    pub(super) reason: String,
    /// The refusal it counts as, if not the code's own.
    why: Option<Refusal>,
}

impl Close {
    pub(super) fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
            why: None,
        }
    }

    pub(super) fn counted(mut self, why: Refusal) -> Self {
        self.why = Some(why);
        self
    }

    /// The refusal this close counts as (`None`: not a refusal).
    pub(super) fn refusal(&self) -> Option<Refusal> {
        self.why.or(match self.code {
            ErrorCode::Stopping | ErrorCode::Superseded | ErrorCode::Storage => None,
            ErrorCode::Busy => Some(Refusal::ConnectionsMax),
            ErrorCode::ProducersFull => Some(Refusal::ProducersMax),
            ErrorCode::Timeout => Some(Refusal::Timeout),
            ErrorCode::InvalidRecord => Some(Refusal::InvalidRecord),
            ErrorCode::Unauthorized | ErrorCode::Forbidden => Some(Refusal::Token),
            _ => Some(Refusal::Protocol),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_slots_count_at_their_maximum_and_give_back_on_drop() {
        let t = AddrTable::new(2, 1);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let mut s1 = t.admit(a).expect("first");
        assert_eq!(t.admit(a).unwrap_err(), (Refusal::HandshakesPerAddress, 1));
        s1.greeted();
        let s2 = t.admit(a).expect("second, after the first said HELLO");
        assert_eq!(t.admit(a).unwrap_err(), (Refusal::ConnectionsPerAddress, 2));
        let s3 = t.admit(b).expect("another address");
        drop(s2);
        let s4 = t.admit(a).expect("a slot came back");
        drop((s1, s3, s4));
        assert_eq!(t.len(), (0, 0), "no entry outlives its connections");
    }

    #[test]
    fn the_log_budget_allows_a_few_lines_per_interval() {
        let b = LogBudget::new();
        let n = (0..100).filter(|_| b.take()).count();
        assert_eq!(n, DETAILED_LINES_MAX as usize);
    }
}
