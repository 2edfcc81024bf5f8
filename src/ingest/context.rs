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

use super::config::check_config;
use super::parts::{Part, PartitionReceiver};
use super::pressure::IngestStats;
use super::producers::ProducerTable;
use super::server::{IngestServer, RecordCheck};
use super::{payload, payload_utf8, IngestConfig, IngestError};
use crate::dstream::{BoxError, DStream};
use crate::receiver::{Receiver, ReceiverContext};
use crate::StreamingContext;

/// What `ingest_stream_with` returns: the records and where it listens.
pub struct IngestStream<T> {
    /// The records producers send, decoded by the given decoder.
    pub stream: DStream<T>,
    /// The address the server is bound to (the actual port when the
    /// configuration asked for port 0).
    pub local_addr: SocketAddr,
    /// The server's counters: records stored, refusals by reason, the
    /// producer table's size and expiries.
    pub stats: Arc<IngestStats>,
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

    /// [`StreamingContext::ingest_stream`] of UTF-8 records: a record that
    /// is not UTF-8 is refused before it is stored (ERROR
    /// `invalid_record` to its producer, nothing of it acknowledged).
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
    /// via [`payload`]). With `cfg.check_records` (the default) the server
    /// runs `decode` on every record before storing it and refuses one it
    /// fails on, so nothing acknowledged fails to decode in a batch. Binds
    /// the listener and recovers the producer table now, so errors show
    /// here and the bound address is known.
    pub fn ingest_stream_with<T: crate::dstream::Data>(
        &self,
        name: &str,
        cfg: IngestConfig,
        decode: fn(&[u8]) -> Result<T, BoxError>,
    ) -> crate::Result<IngestStream<T>> {
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
        self.check_partitions(name, cfg.partitions)?;
        let slot: Arc<OnceLock<Vec<Part>>> = Arc::default();
        let stats = Arc::new(IngestStats::default());
        let check: RecordCheck = Arc::new(move |stored: &[u8]| decode(stored).map(drop));
        let n = cfg.partitions;
        let mut server = Some(IngestServer {
            stream: name.to_string(),
            cfg: cfg.clone(),
            listener,
            parts: slot.clone(),
            stats: stats.clone(),
            check: Some(check),
        });
        let mut streams = Vec::with_capacity(n);
        let mut parts = Vec::with_capacity(n);
        for p in 0..n {
            let part_name = crate::context::partition_name(name, p, n);
            // The server runs as partition 0's receiver and stores into
            // every partition.
            let receiver: Box<dyn Receiver> = match server.take() {
                Some(s) => Box::new(s),
                None => Box::new(PartitionReceiver),
            };
            let (stream, shared) =
                self.receiver_stream_shared(&part_name, receiver, Arc::new(decode))?;
            parts.push(self.ingest_part(&part_name, &cfg, shared)?);
            streams.push(stream);
        }
        let _ = slot.set(parts);
        let stream = match n {
            1 => streams.remove(0),
            _ => self.union(&streams).name(name),
        };
        Ok(IngestStream {
            stream,
            local_addr,
            stats,
        })
    }

    /// One partition of an ingest stream, registered as `part_name`: its
    /// limits checked against its log, its producer table recovered and
    /// its release hook set (before `start()`: no segment is deleted
    /// before the table that covers it is saved).
    fn ingest_part(
        &self,
        part_name: &str,
        cfg: &IngestConfig,
        shared: Arc<crate::receiver::StreamShared>,
    ) -> crate::Result<Part> {
        let ctx = ReceiverContext::new(shared);
        check_config(part_name, cfg, ctx.wal())?;
        // The stream's log opened at registration, so the data directory is set.
        let snapshot = match self.data_dir() {
            Some(dir) => crate::layout::producers_snapshot(dir, part_name),
            None => {
                return Err(crate::context::ContextError::NoDataDir {
                    call: "ingest_stream",
                    stream: part_name.to_string(),
                }
                .into())
            }
        };
        let table = Arc::new(ProducerTable::recover(
            part_name,
            ctx.wal().clone(),
            snapshot,
            cfg.producers_max,
            cfg.producers_idle_max,
        )?);
        let hook_table = table.clone();
        ctx.set_release_hook(Box::new(move |end| {
            hook_table
                .save_before_release(end)
                .map_err(|e| -> BoxError { Box::new(e) })
        }));
        Ok(Part { ctx, table })
    }
}
