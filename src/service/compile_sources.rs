//! The sources of a compiled pipeline: [`source`] starts each source's
//! receiver (or generator) with the DStream calls a library user writes,
//! loads a listening source's TLS and tokens, and records its counters
//! ([`ReceiverCounters`]) for the metrics and the status page.
//!
//! Limits: those of each source's configuration (`config/sources.rs`).
//! Must never: start a receiver `weir check` would refuse, or keep a
//! listening source's TLS or tokens that failed to load (it refuses to
//! start, naming the source).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::compile::{lines, Compiled, S};
use super::config::{SourceDef, SourceKind};
use super::generator::GeneratorSource;
use crate::StreamingContext;

/// A receiver's counters, for the metrics.
#[derive(Debug, Clone)]
pub enum ReceiverCounters {
    /// A socket source.
    Socket(Arc<crate::receiver::socket::SocketStats>),
    /// A directory source.
    Directory(Arc<crate::receiver::dir::DirStats>),
    /// An ingest source.
    Ingest(Arc<crate::ingest::IngestStats>),
    /// An HTTP ingest source.
    Http(Arc<crate::ingest::IngestStats>),
    /// A durable generator (`durable = true`): records it stored.
    Generator(Arc<AtomicU64>),
}

impl ReceiverCounters {
    /// `(records stored, [(rejection reason, count)])`.
    pub fn sample(&self) -> (u64, Vec<(&'static str, u64)>) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        match self {
            ReceiverCounters::Socket(s) => (
                l(&s.lines_stored),
                vec![
                    ("line_too_long", l(&s.lines_too_long)),
                    ("invalid_utf8_replaced", l(&s.lines_repaired)),
                    ("partial_line_discarded", l(&s.partial_lines_discarded)),
                    ("connect_failed", l(&s.connect_failures)),
                ],
            ),
            ReceiverCounters::Directory(d) => (
                l(&d.lines_stored),
                vec![
                    ("line_too_long", l(&d.lines_too_long)),
                    ("invalid_utf8_replaced", l(&d.lines_repaired)),
                ],
            ),
            ReceiverCounters::Ingest(s) | ReceiverCounters::Http(s) => {
                (l(&s.records_stored), s.refusals())
            }
            ReceiverCounters::Generator(n) => (l(n), Vec::new()),
        }
    }

    /// An ingest source's `(producers in the table, producers expired)`.
    pub fn producers(&self) -> Option<(u64, u64)> {
        match self {
            ReceiverCounters::Ingest(s) | ReceiverCounters::Http(s) => Some((
                s.producers.load(Ordering::Relaxed),
                s.producers_expired.load(Ordering::Relaxed),
            )),
            _ => None,
        }
    }

    /// An ingest source's connections: `(token name, outcome, count)`.
    pub fn connections(&self) -> Vec<(String, String, u64)> {
        match self {
            ReceiverCounters::Ingest(s) => s
                .connections()
                .into_iter()
                .map(|(t, o, n)| (t, o.to_string(), n))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// An HTTP ingest source's requests: `(token name, code, count)`.
    pub fn requests(&self) -> Vec<(String, u16, u64)> {
        match self {
            ReceiverCounters::Http(s) => s.requests(),
            _ => Vec::new(),
        }
    }
}

/// Starts a source's receiver (or generator) and records its counters.
pub(super) fn source(src: &SourceDef, ssc: &StreamingContext, compiled: &mut Compiled) -> crate::Result<S> {
    Ok(match &src.kind {
        SourceKind::Generator(g) if g.durable => {
            let (d, stored) = super::gen_feed::stream(ssc, &src.id, g)?;
            let counters = ReceiverCounters::Generator(stored);
            compiled.receivers.push((src.id.clone(), counters));
            lines(d, &src.id)
        }
        SourceKind::Generator(g) => {
            let gen = Arc::new(GeneratorSource::new(g.clone(), ssc.clock()));
            compiled.generators.push((src.id.clone(), gen.clone()));
            S::Lines(ssc.source_stream("generator", gen).name(&src.id))
        }
        SourceKind::Socket {
            address,
            rate_max,
            delimiter,
            partitions,
            tls,
        } => {
            let mut cfg = crate::receiver::socket::SocketConfig {
                records_per_second_max: *rate_max,
                tls: tls.clone(),
                ..Default::default()
            };
            if let Some(d) = delimiter {
                cfg.delimiter = d.as_bytes().to_vec();
            }
            let (d, stats) =
                ssc.socket_text_stream_partitioned(&src.id, address, *partitions, cfg)?;
            compiled
                .receivers
                .push((src.id.clone(), ReceiverCounters::Socket(stats)));
            lines(d, &src.id)
        }
        SourceKind::Ingest {
            address,
            rate_max,
            limits,
            security,
        } => {
            let mut cfg = crate::ingest::IngestConfig::new(*address);
            cfg.records_per_second_max = *rate_max;
            limits.apply(&mut cfg);
            cfg.security = load_security(security, &src.id)?;
            if let Some(s) = &cfg.security {
                compiled.securities.push(s.clone());
            }
            // A text source: a record that is not UTF-8 is refused at
            // ingest (check_records), never stored.
            let s = ssc.ingest_stream_with(&src.id, cfg, crate::ingest::payload_utf8)?;
            let (tls, tokens) = (security.tls.is_some(), security.tokens.is_some());
            tracing::info!(source = %src.id, address = %s.local_addr, tls, tokens, "ingest server listening");
            compiled.ingest_addrs.push((src.id.clone(), s.local_addr));
            compiled
                .receivers
                .push((src.id.clone(), ReceiverCounters::Ingest(s.stats.clone())));
            lines(s.stream, &src.id)
        }
        SourceKind::Http {
            address,
            rate_max,
            limits,
            http,
            json,
            security,
        } => {
            let mut cfg = crate::ingest::IngestConfig::new(*address);
            cfg.records_per_second_max = *rate_max;
            limits.apply(&mut cfg);
            cfg.protocol = crate::ingest::Protocol::Http(http.clone());
            cfg.security = load_security(security, &src.id)?;
            if let Some(s) = &cfg.security {
                compiled.securities.push(s.clone());
            }
            let decode = if *json {
                crate::ingest::payload_json
            } else {
                crate::ingest::payload_utf8
            };
            let s = ssc.ingest_stream_with(&src.id, cfg, decode)?;
            let scheme = if security.tls.is_some() { "https" } else { "http" };
            tracing::info!(source = %src.id, address = %format!("{scheme}://{}/v1/streams/{}", s.local_addr, src.id), "HTTP ingest listening");
            compiled.ingest_addrs.push((src.id.clone(), s.local_addr));
            compiled
                .receivers
                .push((src.id.clone(), ReceiverCounters::Http(s.stats.clone())));
            lines(s.stream, &src.id)
        }
        SourceKind::JetStream(cfg) => {
            let (d, stats) = ssc.jetstream_stream(&src.id, cfg.clone())?;
            for p in &stats.partitions {
                let name = crate::context::jetstream_partition_name(&src.id, &p.stream);
                compiled.jetstreams.push((name, p.clone()));
            }
            lines(d, &src.id)
        }
        SourceKind::Kafka(cfg) => {
            let (d, stats) = ssc.kafka_stream(&src.id, (**cfg).clone())?;
            compiled.kafkas.extend(stats.partitions.iter().cloned());
            lines(d, &src.id)
        }
        SourceKind::Directory { path, partitions } => {
            let (d, stats) = ssc.text_file_stream_partitioned(
                &src.id,
                path,
                *partitions,
                crate::receiver::dir::DirConfig::default(),
            )?;
            compiled
                .receivers
                .push((src.id.clone(), ReceiverCounters::Directory(stats)));
            lines(d, &src.id)
        }
    })
}

/// A listening source's TLS and tokens, loaded now (None: neither).
fn load_security(
    files: &crate::net::SecurityFiles,
    source: &str,
) -> crate::Result<Option<Arc<crate::net::Security>>> {
    if files.tls.is_none() && files.tokens.is_none() {
        return Ok(None);
    }
    let sec = crate::net::Security::load(files.clone()).map_err(|e| {
        super::ServiceError::SourceSecurity {
            source_id: source.to_string(),
            error: Box::new(e),
        }
    })?;
    Ok(Some(Arc::new(sec)))
}

