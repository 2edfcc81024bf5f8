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
//! Limits: 1 to [`STREAMS_MAX`] streams, as [`JetStreamConfig::validate`]
//! checks; one connection (and its 2-thread runtime) per call.
//! Must never: write a WAL for a JetStream stream, or name two partitions
//! alike.

use std::sync::Arc;

use super::{ContextError, StreamingContext};
use crate::dstream::DStream;
use crate::source::{
    JetStreamConfig, JetStreamConnection, JetStreamSource, JetStreamStats, JsRecord, STREAMS_MAX,
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

    fn union_named<T: crate::dstream::Data>(
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
        let names: Vec<String> = config
            .streams
            .iter()
            .map(|s| jetstream_partition_name(name, s))
            .collect();
        for n in &names {
            crate::names::validate_stream_name(n).map_err(ContextError::from)?;
        }
        let conn = Arc::new(JetStreamConnection::connect(config)?);
        let mut stats = JetStreamStats::default();
        let mut parts = Vec::with_capacity(names.len());
        for (js_stream, part_name) in config.streams.iter().zip(names) {
            let src = JetStreamSource::open(
                conn.clone(),
                js_stream,
                &part_name,
                config.record_bytes_max,
            )?;
            stats.partitions.push(src.stats());
            let d = self
                .source_stream("jetstream", Arc::new(src))
                .name(&part_name);
            parts.push((part_name, d));
        }
        Ok((parts, Arc::new(stats)))
    }
}
