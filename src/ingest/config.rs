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
use std::sync::Arc;
use std::time::Duration;

use super::proto::Limits;
use super::records::stored_header_bytes;
use super::IngestError;
#[cfg(doc)]
use super::IngestStream;
use crate::net::Security;
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
    /// Longest time from accepting a connection to its complete TLS
    /// handshake (with TLS), preamble, AUTH (with a token) and HELLO
    /// (default 5 s); then it is closed with ERROR `timeout` (a handshake
    /// not finished is closed without one).
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
    /// TLS and bearer tokens of the listener, for either protocol (None:
    /// plain TCP, no authentication: loopback only). A listener off this
    /// machine needs both ([`check_config`]). Binary protocol: the
    /// handshake first, the token in an AUTH frame before HELLO
    /// (`docs/ingest-protocol.md`).
    pub security: Option<Arc<Security>>,
    /// What the listener speaks: the binary ingest protocol (default) or
    /// HTTP (`docs/http-ingest.md`).
    pub protocol: Protocol,
}

/// The protocol of an ingest listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// The binary ingest protocol (`docs/ingest-protocol.md`), spoken by
    /// `weir feed`.
    Binary,
    /// `POST /v1/streams/<stream>` with newline-delimited records
    /// (`docs/http-ingest.md`).
    Http(HttpLimits),
}

/// The limits of an HTTP ingest listener (beside the connection and
/// producer limits of [`IngestConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body in bytes (default 4 MiB, at most
    /// [`HTTP_BODY_BYTES_CEILING`]); a larger one gets `413`.
    pub body_bytes_max: usize,
    /// Most records in one request (default 100 000); more gets `413`.
    pub records_per_request_max: usize,
    /// Largest request head in bytes (default 8192, hyper's least; at
    /// most 1 MiB); a larger one gets `431`.
    pub head_bytes_max: usize,
    /// Time for the TLS handshake, each request head, and the longest an
    /// idle kept-alive connection stays open (default 5 s).
    pub head_timeout: Duration,
    /// Time to receive a request's body once its head arrived (default
    /// 10 s); then `408`.
    pub body_timeout: Duration,
    /// How long a request waits for the stream's backlog to drain before
    /// it is answered `429` with `Retry-After` (default 1 s).
    pub pressure_wait: Duration,
    /// Whether connections are kept alive between requests (default true).
    pub keep_alive: bool,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            body_bytes_max: 4 << 20,
            records_per_request_max: 100_000,
            head_bytes_max: 8192,
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            pressure_wait: Duration::from_secs(1),
            keep_alive: true,
        }
    }
}

/// Largest `body_bytes_max` accepted (a body is held whole while it is
/// checked and stored).
pub const HTTP_BODY_BYTES_CEILING: usize = 256 << 20;
/// Largest `records_per_request_max` accepted.
pub const HTTP_RECORDS_PER_REQUEST_CEILING: usize = 10_000_000;

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
            security: None,
            protocol: Protocol::Binary,
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
    check_listener(cfg).map_err(bad)?;
    if let Protocol::Http(h) = &cfg.protocol {
        check_http(h).map_err(bad)?;
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

/// A listener off this machine needs TLS and tokens.
fn check_listener(cfg: &IngestConfig) -> Result<(), String> {
    let files = cfg
        .security
        .as_ref()
        .map(|s| s.files().clone())
        .unwrap_or_default();
    if cfg.listen_addr.ip().is_loopback() || (files.tls.is_some() && files.tokens.is_some()) {
        return Ok(());
    }
    let missing = if files.tls.is_none() {
        "TLS (a certificate and key)"
    } else {
        "tokens (a tokens file)"
    };
    Err(format!(
        "it would listen on {}, off this machine, without {missing}: a listener other hosts can reach needs TLS and tokens (docs/security.md); add them, or listen on 127.0.0.1",
        cfg.listen_addr
    ))
}

/// The HTTP limits: positive, under their ceilings.
fn check_http(h: &HttpLimits) -> Result<(), String> {
    let checks: [(&str, u128, u128, u128); 4] = [
        (
            "body_bytes_max",
            h.body_bytes_max as u128,
            1,
            HTTP_BODY_BYTES_CEILING as u128,
        ),
        (
            "records_per_request_max",
            h.records_per_request_max as u128,
            1,
            HTTP_RECORDS_PER_REQUEST_CEILING as u128,
        ),
        ("head_bytes_max", h.head_bytes_max as u128, 8192, 1 << 20),
        ("head_timeout (ms)", h.head_timeout.as_millis(), 1, 600_000),
    ];
    let more: [(&str, u128, u128, u128); 2] = [
        ("body_timeout (ms)", h.body_timeout.as_millis(), 1, 600_000),
        (
            "pressure_wait (ms)",
            h.pressure_wait.as_millis(),
            0,
            600_000,
        ),
    ];
    for (what, v, min, max) in checks.into_iter().chain(more) {
        if v < min || v > max {
            return Err(format!("{what} is {v}; {min} to {max} is accepted"));
        }
    }
    Ok(())
}
