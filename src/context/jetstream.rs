//! JetStream input streams: [`StreamingContext::jetstream_stream`] makes
//! one partition per named JetStream stream (NATS's pattern for spreading
//! Raft leaders: a subject mapping `partition(n, ...)` into streams
//! `EV0..EVn-1`) and returns their union. Partition `EV0` of weir stream
//! `events` is the weir stream `events-EV0`; with several, the union is
//! named `events`.
//!
//! Lineage is the engine's, as for every source: each partition's range
//! of sequences is recorded in the checkpoint before the batch runs and
//! replayed exactly after a crash. No local log is written.
//!
//! Bad records: a message that is not UTF-8 or larger than
//! `record_bytes_max` follows `on_error` (fail the batch, or the
//! dead-letter log with its stream and sequence), in the partition's own
//! step `<partition>.decode`.
//!
//! Scale-out: `config.scale_out` picks the streams this instance reads
//! (partition names stay `<name>-<STREAM>` whatever the assignment) and,
//! in a context with a data directory, claims them in the owner and
//! lease buckets before any is read (`crate::source::Leases`,
//! `docs/scale-out.md`); each partition's reads then check the lease.
//!
//! Limits: 1 to [`STREAMS_MAX`] streams, as [`JetStreamConfig::validate`]
//! checks; one connection (and its 2-thread runtime) per call.
//! Must never: write a WAL for a JetStream stream, or name two partitions
//! alike.

use std::sync::Arc;

use super::{ContextError, StreamingContext};
use crate::dstream::{DStream, Source};
use crate::source::{
    Claim, JetStreamConfig, JetStreamConnection, JetStreamSource, JetStreamStats, JsRecord,
    LeasedSource, Leases, STREAMS_MAX,
};
use crate::Result;

/// The weir stream name of JetStream stream `js_stream` read by weir
/// stream `name`.
pub fn jetstream_partition_name(name: &str, js_stream: &str) -> String {
    format!("{name}-{js_stream}")
}

impl StreamingContext {
    /// A text stream over `config.streams`, one partition each; see the
    /// module docs. Returns the stream (named `name`) and the partitions'
    /// counters (last sequence, committed end, lag, reads).
    pub fn jetstream_stream(
        &self,
        name: &str,
        config: JetStreamConfig,
    ) -> Result<(DStream<String>, Arc<JetStreamStats>)> {
        let max = config.record_bytes_max;
        let on_error = config.on_error;
        let (parts, stats) = self.jetstream_partitions(name, &config)?;
        let texts: Vec<DStream<String>> = parts
            .into_iter()
            .map(|(part_name, d)| {
                d.try_map(on_error, move |r: &JsRecord| r.text(max))
                    .name(&format!("{part_name}.decode"))
            })
            .collect();
        Ok((self.union_named(name, texts), stats))
    }

    /// The messages of `config.streams` as [`JsRecord`]s (sequence and
    /// payload bytes), one partition each, unchecked: for binary payloads.
    pub fn jetstream_records(
        &self,
        name: &str,
        config: JetStreamConfig,
    ) -> Result<(DStream<JsRecord>, Arc<JetStreamStats>)> {
        let (parts, stats) = self.jetstream_partitions(name, &config)?;
        let streams = parts.into_iter().map(|(_, d)| d).collect();
        Ok((self.union_named(name, streams), stats))
    }

    pub(super) fn union_named<T: crate::dstream::Data>(
        &self,
        name: &str,
        mut v: Vec<DStream<T>>,
    ) -> DStream<T> {
        if v.len() == 1 {
            return v.remove(0);
        }
        self.union(&v).name(name)
    }

    /// Connects and opens one source per stream: (partition name, stream).
    fn jetstream_partitions(
        &self,
        name: &str,
        config: &JetStreamConfig,
    ) -> Result<(Vec<(String, DStream<JsRecord>)>, Arc<JetStreamStats>)> {
        config.validate()?;
        debug_assert!(config.streams.len() <= STREAMS_MAX);
        crate::names::validate_stream_name(name).map_err(ContextError::from)?;
        // This instance's streams (all of them unless scaled out).
        let owned = config.scale_out.assignment.owned(config.streams.len());
        let names: Vec<String> = owned
            .iter()
            .map(|&k| jetstream_partition_name(name, &config.streams[k]))
            .collect();
        for n in &names {
            crate::names::validate_stream_name(n).map_err(ContextError::from)?;
        }
        let conn = Arc::new(JetStreamConnection::connect(config)?);
        let leases = self.claim_partitions(&conn, name, config, &owned)?;
        let mut stats = JetStreamStats::default();
        let mut parts = Vec::with_capacity(names.len());
        for (&k, part_name) in owned.iter().zip(names) {
            let src = JetStreamSource::open(
                conn.clone(),
                &config.streams[k],
                &part_name,
                config.record_bytes_max,
            )?;
            stats.partitions.push(src.stats());
            let src: Arc<dyn Source<JsRecord>> = match &leases {
                Some(l) => Arc::new(LeasedSource::new(Arc::new(src), l.clone())),
                None => Arc::new(src),
            };
            let d = self.source_stream("jetstream", src).name(&part_name);
            parts.push((part_name, d));
        }
        Ok((parts, Arc::new(stats)))
    }

    /// Claims this instance's streams (`owned`, indexes into
    /// `config.streams`) for its data directory, when leases are on and
    /// the context has a data directory; `None` otherwise.
    fn claim_partitions(
        &self,
        conn: &Arc<JetStreamConnection>,
        name: &str,
        config: &JetStreamConfig,
        owned: &[usize],
    ) -> Result<Option<Arc<Leases>>> {
        let (Some(dir), Some(id)) = (self.data_dir.as_ref(), self.data_dir_id) else {
            return Ok(None);
        };
        if !config.scale_out.leases {
            return Ok(None);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        let me = Claim {
            data_dir_id: id.to_string(),
            name: config
                .scale_out
                .instance_name
                .clone()
                .unwrap_or_else(|| host.clone()),
            host,
            place: Claim::place_of(&dir),
            dir: dir.display().to_string(),
            session: Claim::new_session(),
        };
        let streams: Vec<String> = owned.iter().map(|&k| config.streams[k].clone()).collect();
        let ttl = config.scale_out.lease_ttl_ms;
        let leases = Leases::acquire(conn.clone(), name, &streams, &me, ttl)
            .map_err(crate::source::JetStreamError::from)?;
        tracing::info!(
            source = name,
            streams = streams.join(","),
            instance = me.name,
            "claimed the JetStream streams this instance reads (owner and lease keys)"
        );
        Ok(Some(Arc::new(leases)))
    }
}
