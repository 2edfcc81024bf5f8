//! Reliable ingest: a protocol with two ends. Producers send numbered
//! records over TCP; the server stores them in the stream's WAL and
//! acknowledges them only once they are durable, and recognises re-sent
//! records by `(producer, sequence)` across reconnects, restarts and
//! crashes. Protocol and file bytes: `docs/ingest-protocol.md`.
//!
//! Map:
//! - `proto.rs` — the wire: preamble, HELLO, DATA, WELCOME, ACK, ERROR
//!   frames (length + CRC-32), the decoder's [`Limits`], and
//!   `proto::FrameBuffer` (fixed capacity: one frame). Pure; fuzzed
//!   (`fuzz/fuzz_targets/ingest_decode.rs`).
//! - `records.rs` — the at-rest formats: the stored-record header
//!   `(producer, seq)` in front of each WAL record and the producer-table
//!   snapshot bytes. Pure; fuzzed with the wire.
//! - `producers.rs` — the producer table, its recovery (snapshot + WAL
//!   scan) and its snapshot `DATA_DIR/wal/<name>.producers`, saved by the
//!   release hook before WAL segments are deleted.
//! - `server.rs` — [`IngestServer`] (a `Receiver` running a 2-thread tokio
//!   runtime) and [`IngestConfig`]: accept loop, connections, store then
//!   ack; `server_tls.rs` — its TLS handshake (a plain-text client told to
//!   use TLS).
//! - `config.rs` — [`IngestConfig`], its ceilings and its validation.
//! - `parts.rs` — the partitions of a stream (a log and a producer table
//!   each) and which one a producer sticks to.
//! - `context.rs` — `StreamingContext::ingest_stream`,
//!   `ingest_text_stream` and `ingest_stream_with`.
//! - `pressure.rs` — per-address connection limits, [`IngestStats`]
//!   (refusals by reason, table size, expiries) and the once-a-minute
//!   summary line.
//! - `client.rs` — [`feed`], the client behind `weir feed`; its
//!   connections (TCP or TLS, the token, HELLO, the reader thread) in
//!   `client_conn.rs`.
//! - `error.rs` — [`IngestError`] (the client's is [`FeedError`]).
//!
//! Limits: those of [`IngestConfig`] (server), [`Limits`] (wire) and
//! [`FeedConfig`] (client); every buffer is bounded by them.
//! Must never: acknowledge a record before the WAL's fsync covered it,
//! store a producer's sequence number twice, store anything of a
//! malformed frame or a record the stream's decoder refuses, or keep a
//! producer that never stored a record after its connection ended.

internal! {
    mod client;
    mod client_conn;
    mod http_request;
    mod proto;
    mod records;
}
mod config;
mod context;
mod error;
mod http;
mod parts;
mod pressure;
mod producers;
mod server;
mod server_tls;
mod store;

pub use client::{feed, FeedConfig, FeedError, FeedReport, FeedTls, FeedToken, Progress};
pub use config::{
    HttpLimits, IngestConfig, Protocol, CONNECTIONS_CEILING, HELLO_TIMEOUT_CEILING_MS,
    HTTP_BODY_BYTES_CEILING, HTTP_RECORDS_PER_REQUEST_CEILING, PRODUCERS_CEILING,
    PRODUCERS_IDLE_CEILING_MS,
};
pub use context::IngestStream;
pub use error::IngestError;
pub use pressure::IngestStats;
pub use proto::{Limits, ProtoError};
pub use records::RecordError;
pub use server::IngestServer;

use crate::dstream::BoxError;

/// The stored record's payload (the DStream's view of an ingest record).
pub fn payload(bytes: &[u8]) -> Result<Vec<u8>, BoxError> {
    Ok(records::decode_stored(bytes)?.payload.to_vec())
}

/// The stored record's payload as UTF-8 text that is one JSON value
/// (an HTTP source with `format = "json"`).
pub fn payload_json(bytes: &[u8]) -> Result<String, BoxError> {
    let text = payload_utf8(bytes)?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| format!("not JSON ({e})"))?;
    Ok(text)
}

/// The stored record's payload as UTF-8 text.
pub fn payload_utf8(bytes: &[u8]) -> Result<String, BoxError> {
    crate::receiver::utf8(records::decode_stored(bytes)?.payload)
}
