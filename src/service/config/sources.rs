//! The table of source kinds ([`SOURCES`]): one [`SourceSpec`] per kind
//! with its name, its keys and their types, and the function that checks
//! its keys and builds the [`SourceKind`]. Every source makes text lines.
//! The validator, `weir check`'s "one of ..." and the sources table of
//! `docs/pipeline.md` ([`sources_markdown`], held equal by a test) read it.
//!
//! Limits: generator rates up to [`GENERATOR_RATE_MAX`] records per
//! second, [`LINES_PER_RECORD_MAX`] lines per record; receivers listen on
//! or connect to loopback addresses, except an `ingest` or `http` source
//! with TLS and tokens (`listen_keys.rs`) and a `socket` source with TLS
//! that verifies the server (`socket_keys.rs`); a JetStream source
//! reaches a server off this machine only with `tls_required = true` and
//! credentials; a Kafka source (`kafka_keys.rs`) one off this machine only
//! with TLS.
//! Must never: open a socket or a directory (`compile.rs` starts the
//! receivers), or accept a non-loopback address for a listener without
//! TLS and tokens, or for a client without TLS.

use std::net::SocketAddr;

use super::error::ConfigError;
use super::keys::{entry_names, impl_entry, keys_cell, Item, KeySpec, KeyType};
use super::listen_keys::{
    http_source, listener, BODY_BYTES_MAX, RECORDS_PER_REQUEST_MAX, RECORD_FORMAT, TLS_CERT_FILE,
    TLS_CLIENT_CA_FILE, TLS_KEY_FILE, TOKENS_FILE,
};
use super::model::{IngestLimits, SourceKind};
use super::nats_keys::{
    nats_client, CONNECT_TIMEOUT_MS, CREDENTIALS_FILE, PASSWORD, SERVERS, TLS_CA_FILE,
    TLS_REQUIRED, TOKEN, USER,
};
use super::socket_keys::{socket_source, SOCKET_KEYS};
use crate::ingest::{
    CONNECTIONS_CEILING, HELLO_TIMEOUT_CEILING_MS, PRODUCERS_CEILING, PRODUCERS_IDLE_CEILING_MS,
};
use crate::service::generator::GeneratorConfig;

/// Largest generator rate, in records per second.
pub const GENERATOR_RATE_MAX: u64 = 10_000_000;
/// Most tweet lines per generated record.
pub const LINES_PER_RECORD_MAX: u64 = 10_000;

/// One source kind: everything the validator, `weir check` and the docs
/// know of it.
pub(super) struct SourceSpec {
    /// `kind = "..."`.
    pub(super) name: &'static str,
    /// The keys it takes besides `id` and `kind`.
    pub(super) keys: &'static [KeySpec],
    /// Checks its keys (types are already checked) and builds it; the
    /// path resolves relative paths.
    pub(super) build: fn(&Item<'_>, &std::path::Path) -> Result<SourceKind, ConfigError>,
}

const RATE: KeySpec = KeySpec::whole(
    "rate",
    1,
    GENERATOR_RATE_MAX as i64,
    "records per second the generator makes available",
);
const COUNT: KeySpec = KeySpec::whole(
    "count",
    1,
    i64::MAX,
    "the generator stops after this many records; leave it out for no end",
);
const SEED: KeySpec = KeySpec::whole(
    "seed",
    i64::MIN,
    i64::MAX,
    "which text: a seed always makes the same records",
);
const LINES_PER_RECORD: KeySpec = KeySpec::whole(
    "lines_per_record",
    1,
    LINES_PER_RECORD_MAX as i64,
    "tweet lines joined into one record",
);
const SEPARATOR: KeySpec = KeySpec::of(
    "separator",
    KeyType::Text,
    "appended after every line of a record",
);
const FORMAT: KeySpec = KeySpec::of(
    "format",
    KeyType::Text,
    "\"json\" makes one JSON object per record (id, user, text, hashtags)",
);
const DURABLE: KeySpec = KeySpec::of(
    "durable",
    KeyType::Bool,
    "true feeds the records through the stream's write-ahead log (fsynced, replayed from the log), like a receiver",
);
const ADDRESS: KeySpec = KeySpec::of(
    "address",
    KeyType::Text,
    "IP:PORT to listen on, such as \"127.0.0.1:7070\" (loopback); another address needs tls_cert_file, tls_key_file and tokens_file",
);
pub(super) const RATE_MAX: KeySpec = KeySpec::whole(
    "rate_max",
    1,
    GENERATOR_RATE_MAX as i64,
    "the most records per second stored; producers are slowed beyond it",
);
const PATH: KeySpec = KeySpec::of(
    "path",
    KeyType::Text,
    "the directory new files appear in (relative paths are from this file's directory)",
);

pub(super) const PARTITIONS: KeySpec = KeySpec::whole(
    "partitions",
    1,
    crate::context::STREAM_PARTITIONS_MAX as i64,
    "local logs the stream is spread over, each with its own receiver (default 1); more only raises throughput on more cores",
);
const CONNECTIONS_MAX: KeySpec = KeySpec::whole(
    "connections_max",
    1,
    CONNECTIONS_CEILING as i64,
    "most producer connections open at once (default 64); one more is refused as busy",
);
const CONNECTIONS_PER_ADDRESS_MAX: KeySpec = KeySpec::whole(
    "connections_per_address_max",
    1,
    CONNECTIONS_CEILING as i64,
    "most connections open at once from one IP address (default 32)",
);
const HANDSHAKES_PER_ADDRESS_MAX: KeySpec = KeySpec::whole(
    "handshakes_per_address_max",
    1,
    CONNECTIONS_CEILING as i64,
    "most connections from one IP address that have not said HELLO yet (default 8)",
);
const HELLO_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "hello_timeout_ms",
    1,
    HELLO_TIMEOUT_CEILING_MS as i64,
    "ms from connecting to a complete HELLO before the connection is closed (default 5000)",
);
const PRODUCERS_MAX: KeySpec = KeySpec::whole(
    "producers_max",
    1,
    PRODUCERS_CEILING as i64,
    "most producers remembered (default 100000); a new one past it is refused",
);
const PRODUCERS_IDLE_MS_MAX: KeySpec = KeySpec::whole(
    "producers_idle_ms_max",
    1000,
    PRODUCERS_IDLE_CEILING_MS as i64,
    "ms a producer with no connection is remembered (default 604800000, 7 days); after it, it starts anew",
);

const STREAMS: KeySpec = KeySpec::of(
    "streams",
    KeyType::TextList,
    "JetStream stream names, one partition each (weir stream `<id>-<NAME>`), such as [\"EV0\", \"EV1\", \"EV2\"]; the streams need limits retention",
);
const REQUEST_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "request_timeout_ms",
    1,
    crate::nats::TIMEOUT_MS_MAX as i64,
    "ms one request (stream info, a read's next message) may take before it is retried (default 5000)",
);
const RECORD_BYTES_MAX: KeySpec = KeySpec::whole(
    "record_bytes_max",
    1,
    crate::source::RECORD_BYTES_CEILING as i64,
    "largest message in bytes (default 1048576); a larger one follows on_error",
);
const ON_ERROR: KeySpec = KeySpec::of(
    "on_error",
    KeyType::Text,
    "what a message larger than record_bytes_max or not UTF-8 does: \"fail\" (default) stops the batch naming the stream and sequence; \"dead_letter\" writes it to DATA_DIR/dead-letter/ and goes on",
);
const INSTANCE: KeySpec = KeySpec::whole(
    "instance",
    0,
    crate::source::STREAMS_MAX as i64 - 1,
    "this instance's number, 0 to instances - 1: it reads the streams whose index k has k % instances == instance (docs/scale-out.md)",
);
const INSTANCES: KeySpec = KeySpec::whole(
    "instances",
    1,
    crate::source::STREAMS_MAX as i64,
    "how many weir instances share the streams (with instance)",
);
const JS_PARTITIONS: KeySpec = KeySpec::of(
    "partitions",
    KeyType::WholeList,
    "the indexes into streams this instance reads, such as [0, 3, 6] (instead of instance/instances; docs/scale-out.md)",
);
const LEASES: KeySpec = KeySpec::of(
    "leases",
    KeyType::Bool,
    "false skips claiming the streams in the weir_owners and weir_leases key-value buckets (default true; docs/scale-out.md)",
);
const LEASE_TTL_MS: KeySpec = KeySpec::whole(
    "lease_ttl_ms",
    crate::source::LEASE_TTL_MS_MIN as i64,
    crate::source::LEASE_TTL_MS_MAX as i64,
    "ms a lease lives without renewal (default 30000); renewed every third of it",
);
const INSTANCE_NAME: KeySpec = KeySpec::of(
    "instance_name",
    KeyType::Text,
    "the name other instances' errors show for this one (default: the host name)",
);

/// Every source kind, in the order `weir check` and the docs list them.
pub(super) const SOURCES: &[SourceSpec] = &[
    SourceSpec {
        name: "generator",
        keys: &[
            RATE,
            COUNT,
            SEED,
            LINES_PER_RECORD,
            SEPARATOR,
            FORMAT,
            DURABLE,
        ],
        build: |item, _| generator(item),
    },
    SourceSpec {
        name: "socket",
        keys: SOCKET_KEYS,
        build: socket_source,
    },
    SourceSpec {
        name: "ingest",
        keys: &[
            ADDRESS,
            RATE_MAX,
            CONNECTIONS_MAX,
            CONNECTIONS_PER_ADDRESS_MAX,
            HANDSHAKES_PER_ADDRESS_MAX,
            HELLO_TIMEOUT_MS,
            PRODUCERS_MAX,
            PRODUCERS_IDLE_MS_MAX,
            PARTITIONS,
            TLS_CERT_FILE,
            TLS_KEY_FILE,
            TLS_CLIENT_CA_FILE,
            TOKENS_FILE,
        ],
        build: |item, base| {
            let (address, rate_max) = receiver(item, true)?;
            let security = listener(item, base, address)?;
            Ok(SourceKind::Ingest {
                address,
                rate_max,
                limits: ingest_limits(item)?,
                security,
            })
        },
    },
    SourceSpec {
        name: "http",
        keys: &[
            ADDRESS,
            RATE_MAX,
            RECORD_FORMAT,
            BODY_BYTES_MAX,
            RECORDS_PER_REQUEST_MAX,
            CONNECTIONS_MAX,
            CONNECTIONS_PER_ADDRESS_MAX,
            HANDSHAKES_PER_ADDRESS_MAX,
            PRODUCERS_MAX,
            PRODUCERS_IDLE_MS_MAX,
            PARTITIONS,
            TLS_CERT_FILE,
            TLS_KEY_FILE,
            TLS_CLIENT_CA_FILE,
            TOKENS_FILE,
        ],
        build: http_source,
    },
    SourceSpec {
        name: "directory",
        keys: &[PATH, PARTITIONS],
        build: directory,
    },
    SourceSpec {
        name: "jetstream",
        keys: &[
            SERVERS,
            STREAMS,
            CREDENTIALS_FILE,
            TOKEN,
            USER,
            PASSWORD,
            TLS_CA_FILE,
            TLS_REQUIRED,
            CONNECT_TIMEOUT_MS,
            REQUEST_TIMEOUT_MS,
            RECORD_BYTES_MAX,
            ON_ERROR,
            INSTANCE,
            INSTANCES,
            JS_PARTITIONS,
            LEASES,
            LEASE_TTL_MS,
            INSTANCE_NAME,
        ],
        build: jetstream,
    },
    SourceSpec {
        name: "kafka",
        keys: super::kafka_keys::SOURCE_KEYS,
        build: super::kafka_keys::kafka_source,
    },
];

impl_entry!(SourceSpec);

/// Every source kind's name, in table order.
pub fn source_names() -> Vec<&'static str> {
    entry_names(SOURCES)
}

/// The sources table of `docs/pipeline.md` (Markdown), from `SOURCES`.
pub fn sources_markdown() -> String {
    let mut out = String::from("| kind | keys |\n|---|---|\n");
    for s in SOURCES {
        out.push_str(&format!("| `{}` | {} |\n", s.name, keys_cell(s.keys)));
    }
    out
}

fn generator(item: &Item<'_>) -> Result<SourceKind, ConfigError> {
    let mut g = GeneratorConfig::default();
    if let Some(n) = item.positive(&RATE)? {
        g.records_per_second = n;
    }
    g.count = item.positive(&COUNT)?;
    if let Some(n) = item.whole(&SEED)? {
        g.seed = n as u64;
    }
    if let Some(n) = item.positive(&LINES_PER_RECORD)? {
        g.lines_per_record = n;
    }
    if let Some(s) = item.string(&SEPARATOR)? {
        g.separator = s;
    }
    g.durable = item.flag(&DURABLE)?.is_some_and(|b| *b.get_ref());
    if let Some(v) = item.text(&FORMAT)? {
        g.json = match *v.get_ref() {
            "text" => false,
            "json" => true,
            other => {
                return Err(item.err(
                    v.span(),
                    FORMAT.name,
                    "\"text\" or \"json\"",
                    Some(format!("\"{other}\"")),
                    FORMAT.hint,
                ))
            }
        };
    }
    Ok(SourceKind::Generator(g))
}

/// A listening receiver's `address` (loopback unless `any_ip`) and
/// `rate_max`.
pub(super) fn receiver(
    item: &Item<'_>,
    any_ip: bool,
) -> Result<(SocketAddr, Option<u64>), ConfigError> {
    let rate_max = item.positive(&RATE_MAX)?;
    let a = item.required(
        &ADDRESS,
        "where to listen, e.g. \"127.0.0.1:7070\"",
        "add address = \"127.0.0.1:PORT\"",
    )?;
    let text = a.get_ref().trim();
    let addr = text
        .strip_prefix("localhost:")
        .and_then(|p| p.parse::<u16>().ok())
        .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
        .or_else(|| text.parse::<SocketAddr>().ok());
    match addr {
        Some(x) if any_ip || x.ip().is_loopback() => Ok((x, rate_max)),
        other => Err(item.err(
            a.span(),
            ADDRESS.name,
            "a loopback address with a port: \"127.0.0.1:PORT\", \"[::1]:PORT\" or \"localhost:PORT\"",
            Some(format!("\"{text}\"")),
            if other.is_some() {
                "weir talks only to this machine; reach others through a local relay"
            } else {
                "give an IP address (or localhost) and a port"
            },
        )),
    }
}

/// An ingest source's limits: its keys over `IngestConfig`'s defaults.
pub(super) fn ingest_limits(item: &Item<'_>) -> Result<IngestLimits, ConfigError> {
    let mut l = IngestLimits::default();
    let count = |spec: &KeySpec, v: &mut usize| -> Result<(), ConfigError> {
        if let Some(n) = item.positive(spec)? {
            *v = n as usize;
        }
        Ok(())
    };
    count(&CONNECTIONS_MAX, &mut l.connections_max)?;
    count(
        &CONNECTIONS_PER_ADDRESS_MAX,
        &mut l.connections_per_address_max,
    )?;
    count(
        &HANDSHAKES_PER_ADDRESS_MAX,
        &mut l.handshakes_per_address_max,
    )?;
    count(&PRODUCERS_MAX, &mut l.producers_max)?;
    count(&PARTITIONS, &mut l.partitions)?;
    if let Some(n) = item.positive(&HELLO_TIMEOUT_MS)? {
        l.hello_timeout_ms = n;
    }
    if let Some(n) = item.positive(&PRODUCERS_IDLE_MS_MAX)? {
        l.producers_idle_ms_max = n;
    }
    Ok(l)
}

fn directory(item: &Item<'_>, base: &std::path::Path) -> Result<SourceKind, ConfigError> {
    let p = item.required(
        &PATH,
        "the directory to watch",
        "add path = \"/var/spool/weir/in\" (relative paths are from this file's directory)",
    )?;
    if p.get_ref().trim().is_empty() {
        return Err(item.err(
            p.span(),
            PATH.name,
            "a directory path",
            Some("\"\"".into()),
            "give the directory new files appear in",
        ));
    }
    Ok(SourceKind::Directory {
        path: base.join(p.get_ref()),
        partitions: partitions(item)?,
    })
}

/// `partitions` (default 1).
pub(super) fn partitions(item: &Item<'_>) -> Result<usize, ConfigError> {
    Ok(item.positive(&PARTITIONS)?.map_or(1, |n| n as usize))
}

/// A `jetstream` source: servers, streams, credentials, TLS and limits,
/// checked by `JetStreamConfig::validate` and the off-machine rule
/// (`nats_keys`).
fn jetstream(item: &Item<'_>, base: &std::path::Path) -> Result<SourceKind, ConfigError> {
    let client = nats_client(item, base)?;
    let streams = match item.list(&STREAMS)? {
        Some(v) if !v.get_ref().is_empty() => v.into_inner(),
        found => {
            return Err(item.err(
                found.as_ref().map_or(item.span(), |v| v.span()),
                STREAMS.name,
                "a non-empty list of strings",
                Some(if found.is_some() { "[]" } else { "nothing" }.into()),
                "add streams = [\"EV0\", \"EV1\"]",
            ))
        }
    };
    let mut cfg = crate::JetStreamConfig::new(&[], &[]);
    cfg.servers = client.servers;
    cfg.streams = streams;
    cfg.auth = client.auth;
    cfg.tls_ca_file = client.tls_ca_file;
    cfg.tls_required = client.tls_required;
    if let Some(n) = client.connect_timeout_ms {
        cfg.connect_timeout_ms = n;
    }
    if let Some(n) = item.positive(&REQUEST_TIMEOUT_MS)? {
        cfg.request_timeout_ms = n;
    }
    if let Some(n) = item.positive(&RECORD_BYTES_MAX)? {
        cfg.record_bytes_max = n as usize;
    }
    if let Some(v) = item.text(&ON_ERROR)? {
        cfg.on_error = match *v.get_ref() {
            "fail" => crate::dstream::OnError::Fail,
            "dead_letter" => crate::dstream::OnError::DeadLetter,
            other => {
                return Err(item.err(
                    v.span(),
                    ON_ERROR.name,
                    "\"fail\" or \"dead_letter\"",
                    Some(format!("\"{other}\"")),
                    ON_ERROR.hint,
                ))
            }
        };
    }
    cfg.scale_out = jetstream_scale_out(item)?;
    if let Err(e) = cfg.validate() {
        return Err(item.err(
            item.span(),
            "jetstream",
            "settings within their limits",
            None,
            e.to_string(),
        ));
    }
    Ok(SourceKind::JetStream(cfg))
}

/// Which streams this instance reads (`instance` of `instances`, or
/// `partitions`, never both) and its lease settings; ranges against the
/// streams are checked by `JetStreamConfig::validate`.
fn jetstream_scale_out(item: &Item<'_>) -> Result<crate::ScaleOut, ConfigError> {
    use crate::Assignment;
    let mut so = crate::ScaleOut::default();
    let (instance, instances) = (item.positive(&INSTANCE)?, item.positive(&INSTANCES)?);
    let parts = item.whole_list(&JS_PARTITIONS)?;
    let conflict = |key: &'static str, hint: &str| {
        Err(item.err(
            item.span(),
            key,
            "one way to assign streams",
            None,
            hint.to_string(),
        ))
    };
    so.assignment = match (instance, instances, parts) {
        (None, None, None) => Assignment::All,
        (Some(i), Some(n), None) => Assignment::Instance {
            index: i as usize,
            count: n as usize,
        },
        (Some(_), None, _) | (None, Some(_), None) => {
            return conflict(
                "instance",
                "set both instance and instances (instance i of n), or neither",
            )
        }
        (None, None, Some(p)) => {
            let mut v = Vec::with_capacity(p.get_ref().len());
            for &k in p.get_ref() {
                let Ok(k) = usize::try_from(k) else {
                    let found = Some(k.to_string());
                    let hint = "list indexes into streams, from 0";
                    return Err(item.err(p.span(), "partitions", "indexes from 0", found, hint));
                };
                v.push(k);
            }
            Assignment::Partitions(v)
        }
        (_, _, Some(_)) => {
            return conflict(
                "partitions",
                "use partitions or instance/instances, not both",
            )
        }
    };
    so.leases = item.flag(&LEASES)?.is_none_or(|b| *b.get_ref());
    if let Some(ms) = item.positive(&LEASE_TTL_MS)? {
        so.lease_ttl_ms = ms;
    }
    so.instance_name = item.string(&INSTANCE_NAME)?;
    Ok(so)
}
