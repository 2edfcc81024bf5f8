//! The [`StreamingContext`] constructors of ingest streams:
//! `ingest_stream`, `ingest_text_stream` and `ingest_stream_with`. They bind
//! the listener, register the stream (which opens its WAL), check the
//! limits against the WAL's, recover the producer table and register its
//! release hook, all before `start()`, so errors show at build time.
//!
//! Limits: those of [`IngestConfig`]. Must never: let the receiver start
//! before its producer table is recovered, or leave a WAL segment
//! deletable before the release hook that saves the table is registered.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use super::producers::ProducerTable;
use super::server::{check_config, IngestServer};
use super::{payload, payload_utf8, IngestConfig, IngestError};
use crate::dstream::{BoxError, DStream};
use crate::receiver::ReceiverContext;
use crate::StreamingContext;

/// What `ingest_stream_with` returns: the records and where it listens.
pub struct IngestStream<T> {
    /// The records producers send, decoded by the given decoder.
    pub stream: DStream<T>,
    /// The address the server is bound to (the actual port when the
    /// configuration asked for port 0).
    pub local_addr: SocketAddr,
}

impl StreamingContext {
    /// A stream of the records producers send to an ingest server listening
    /// on `listen_addr` (protocol: `docs/ingest-protocol.md`), with default
    /// limits. Each record is acknowledged to its producer after it is
    /// durable in `DATA_DIR/wal/<name>`, and is in exactly one batch.
    pub fn ingest_stream(
        &self,
        name: &str,
        listen_addr: SocketAddr,
    ) -> crate::Result<DStream<Vec<u8>>> {
        Ok(self
            .ingest_stream_with(name, IngestConfig::new(listen_addr), payload)?
            .stream)
    }

    /// [`StreamingContext::ingest_stream`] of UTF-8 records (a record that
    /// is not UTF-8 fails its batch, naming the WAL record).
    pub fn ingest_text_stream(
        &self,
        name: &str,
        listen_addr: SocketAddr,
    ) -> crate::Result<DStream<String>> {
        Ok(self
            .ingest_stream_with(name, IngestConfig::new(listen_addr), payload_utf8)?
            .stream)
    }

    /// The ingest server with its configuration and a decoder of payloads
    /// ([`payload`], [`payload_utf8`] or your own over the payload's bytes
    /// via [`payload`]). Binds the listener and recovers the producer table
    /// now, so errors show here and the bound address is known.
    pub fn ingest_stream_with<T: crate::dstream::Data>(
        &self,
        name: &str,
        cfg: IngestConfig,
        decode: fn(&[u8]) -> Result<T, BoxError>,
    ) -> crate::Result<IngestStream<T>> {
        if !cfg.listen_addr.ip().is_loopback() {
            tracing::warn!(stream = name, addr = %cfg.listen_addr, "the ingest server listens on a non-loopback address; it has no authentication");
        }
        let listener =
            std::net::TcpListener::bind(cfg.listen_addr).map_err(|source| IngestError::Listen {
                stream: name.into(),
                addr: cfg.listen_addr,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| IngestError::Listen {
                stream: name.into(),
                addr: cfg.listen_addr,
                source,
            })?;
        let slot: Arc<OnceLock<Arc<ProducerTable>>> = Arc::default();
        let server = IngestServer {
            cfg: cfg.clone(),
            listener,
            table: slot.clone(),
        };
        let (stream, shared) =
            self.receiver_stream_shared(name, Box::new(server), Arc::new(decode))?;
        let ctx = ReceiverContext::new(shared);
        check_config(name, &cfg, ctx.wal())?;
        // The stream's log opened above, so the data directory is set.
        let snapshot = match self.data_dir() {
            Some(dir) => crate::layout::producers_snapshot(dir, name),
            None => {
                return Err(crate::context::ContextError::NoDataDir {
                    call: "ingest_stream",
                    stream: name.to_string(),
                }
                .into())
            }
        };
        let table = Arc::new(ProducerTable::recover(
            name,
            ctx.wal().clone(),
            snapshot,
            cfg.producers_max,
        )?);
        let _ = slot.set(table.clone());
        // Registered before start(): no segment can be deleted before the
        // table that covers it is saved.
        let hook_table = table;
        ctx.set_release_hook(Box::new(move |end| {
            hook_table
                .save_before_release(end)
                .map_err(|e| -> BoxError { Box::new(e) })
        }));
        Ok(IngestStream { stream, local_addr })
    }
}
