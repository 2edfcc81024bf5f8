//! [`IngestConfig`]: every limit of one ingest server, its defaults, the
//! ceilings each count and time may reach, and [`check_config`], the one
//! validation (at build time, against the stream's WAL) that the Rust API
//! and the pipeline file's keys share. Protocol: `docs/ingest-protocol.md`;
//! operating the limits: `docs/operations.md` ("Ingest limits").
//!
//! Limits: the ceilings below ([`CONNECTIONS_CEILING`],
//! [`PRODUCERS_CEILING`], [`HELLO_TIMEOUT_CEILING_MS`],
//! [`PRODUCERS_IDLE_CEILING_MS`]); zero counts and times are refused.
//! Must never: accept a limit the server cannot honour (a record that does
//! not fit the WAL with its stored header, a zero count or timeout).

use std::net::SocketAddr;
use std::time::Duration;

use super::proto::Limits;
use super::records::stored_header_bytes;
use super::IngestError;
#[cfg(doc)]
use super::IngestStream;
use crate::wal::Wal;

/// Largest `connections_max`, `connections_per_address_max` and
/// `handshakes_per_address_max` accepted (each connection holds a file
/// descriptor and a frame buffer).
pub const CONNECTIONS_CEILING: usize = 65_536;
/// Largest `producers_max` accepted (about 100 bytes a producer in memory).
pub const PRODUCERS_CEILING: usize = 10_000_000;
/// Longest `hello_timeout` accepted, in ms (10 minutes).
pub const HELLO_TIMEOUT_CEILING_MS: u64 = 600_000;
/// Longest `producers_idle_max` accepted, in ms (3650 days).
pub const PRODUCERS_IDLE_CEILING_MS: u64 = 3650 * 86_400_000;

/// Configuration of one ingest server.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Where to listen (bind port 0 for an ephemeral port; see
    /// [`IngestStream::local_addr`]).
    pub listen_addr: SocketAddr,
    /// The wire limits announced in WELCOME and enforced on every frame.
    pub limits: Limits,
    /// Most connections open at once (default 64); one more is refused
    /// with ERROR `busy`.
    pub connections_max: usize,
    /// Most connections open at once from one source IP address (default
    /// 32; the smaller of this and `connections_max` applies); one more
    /// from that address is refused with ERROR `busy`.
    pub connections_per_address_max: usize,
    /// Most connections from one source IP address that have not said
    /// HELLO yet (default 8); one more is refused with ERROR `busy`.
    pub handshakes_per_address_max: usize,
    /// Longest time from accepting a connection to its complete preamble
    /// and HELLO (default 5 s); then it is closed with ERROR `timeout`.
    pub hello_timeout: Duration,
    /// Most producers the table holds (default 100000); a new one past it
    /// is refused with ERROR `producers_full`. A producer that never
    /// stored a record counts only while it is connected.
    pub producers_max: usize,
    /// How long a producer with stored records and no connection is kept
    /// (default 7 days), counted from its last connection's end or the
    /// server's start; then it expires, once all its records are in
    /// committed batches. A producer returning after that is new: its
    /// WELCOME says 0 (`docs/guarantees.md`, §8).
    pub producers_idle_max: Duration,
    /// Whether every record goes through the stream's decoder before it is
    /// stored (default true): a record it refuses (for a text stream: not
    /// UTF-8) is refused with ERROR `invalid_record`, never stored nor
    /// acknowledged.
    pub check_records: bool,
    /// Longest silence between frames, and longest wait for a producer to
    /// take its acknowledgements, before the connection is closed with
    /// ERROR `timeout` (default 60 s).
    pub idle_timeout: Duration,
    /// Longest time to complete a started frame after the HELLO before
    /// the connection is closed with ERROR `timeout` (default 10 s).
    pub read_timeout: Duration,
    /// Rate limit of each partition of this stream (records/s), or the
    /// context's default.
    pub records_per_second_max: Option<u64>,
    /// Local logs the stream is spread over (default 1; at most
    /// `crate::context::STREAM_PARTITIONS_MAX`): a producer's records go
    /// to one of them (`super::parts`), each log with its own writer.
    pub partitions: usize,
}

impl IngestConfig {
    /// The defaults for a server on `listen_addr`: default [`Limits`], 64
    /// connections (32 per address, 8 of them before HELLO), a 5 s HELLO
    /// deadline, 100000 producers kept 7 days idle, 60 s idle and 10 s
    /// read timeout, records checked, the context's rate limit.
    pub fn new(listen_addr: SocketAddr) -> Self {
        IngestConfig {
            listen_addr,
            limits: Limits::default(),
            connections_max: 64,
            connections_per_address_max: 32,
            handshakes_per_address_max: 8,
            hello_timeout: Duration::from_secs(5),
            producers_max: 100_000,
            producers_idle_max: Duration::from_secs(7 * 24 * 3600),
            check_records: true,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            records_per_second_max: None,
            partitions: 1,
        }
    }
}

/// Checks the limits against the WAL's.
pub(super) fn check_config(stream: &str, cfg: &IngestConfig, wal: &Wal) -> Result<(), IngestError> {
    let bad = |what: String| IngestError::Config {
        stream: stream.into(),
        what,
    };
    cfg.limits.validate().map_err(bad)?;
    if cfg.connections_max == 0
        || cfg.producers_max == 0
        || cfg.connections_per_address_max == 0
        || cfg.handshakes_per_address_max == 0
    {
        return Err(bad(
            "connections_max, connections_per_address_max, handshakes_per_address_max and producers_max must be at least 1".into()
        ));
    }
    let over =
        |what: &str, v: u128, max: u128| bad(format!("{what} is {v}; at most {max} is accepted"));
    for (what, v) in [
        ("connections_max", cfg.connections_max),
        (
            "connections_per_address_max",
            cfg.connections_per_address_max,
        ),
        ("handshakes_per_address_max", cfg.handshakes_per_address_max),
    ] {
        if v > CONNECTIONS_CEILING {
            return Err(over(what, v as u128, CONNECTIONS_CEILING as u128));
        }
    }
    if cfg.producers_max > PRODUCERS_CEILING {
        return Err(over(
            "producers_max",
            cfg.producers_max as u128,
            PRODUCERS_CEILING as u128,
        ));
    }
    if cfg.hello_timeout.as_millis() > u128::from(HELLO_TIMEOUT_CEILING_MS) {
        let ms = cfg.hello_timeout.as_millis();
        return Err(over(
            "hello_timeout (ms)",
            ms,
            HELLO_TIMEOUT_CEILING_MS.into(),
        ));
    }
    if cfg.producers_idle_max.as_millis() > u128::from(PRODUCERS_IDLE_CEILING_MS) {
        let ms = cfg.producers_idle_max.as_millis();
        return Err(over(
            "producers_idle_max (ms)",
            ms,
            PRODUCERS_IDLE_CEILING_MS.into(),
        ));
    }
    if cfg.idle_timeout.is_zero()
        || cfg.read_timeout.is_zero()
        || cfg.hello_timeout.is_zero()
        || cfg.producers_idle_max.is_zero()
    {
        return Err(bad(
            "idle_timeout, read_timeout, hello_timeout and producers_idle_max must be positive"
                .into(),
        ));
    }
    let need = cfg.limits.record_bytes_max as usize
        + stored_header_bytes(cfg.limits.producer_id_bytes_max);
    let wal_max = wal.config().record_bytes_max as usize;
    if wal_max < need {
        return Err(bad(format!(
            "the WAL's record_bytes_max ({wal_max}) must hold record_bytes_max ({}) plus the {}-byte stored header: at least {need}",
            cfg.limits.record_bytes_max,
            need - cfg.limits.record_bytes_max as usize
        )));
    }
    Ok(())
}
