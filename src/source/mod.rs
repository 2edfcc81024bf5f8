//! Engine-facing sources that read real inputs: the [`Source`]
//! implementations the context builds streams on. The pure trait (and the
//! in-memory queue) stay in `crate::dstream`; the sources here hold the
//! handles their reads go through.
//!
//! Owns: [`WalSource`] (`wal.rs`), the bridge from a write-ahead log to
//! the engine, with `OnRelease`, the hook a receiver-fed stream plugs
//! into it; [`generator`], the built-in tweet-like source of the service.
//! [`JetStreamSource`] (`jetstream.rs`, its connection and configuration
//! in `jetstream_conn.rs`): one NATS JetStream stream per partition, read
//! by sequence interval; [`Leases`] (`jetstream_lease.rs`): which
//! instance owns which of those partitions, fenced in key-value buckets. [`KafkaSource`] (`kafka.rs`, its settings in
//! `kafka_config.rs`): one Kafka topic partition per weir partition, read
//! by offset interval, through the connection of `crate::kafka`.
//!
//! Limits: a source holds no records of its own beyond one read (a
//! `WalSource` decodes one record at a time; the generator caches
//! [`generator::CHUNKS_CACHED_MAX`] chunks of text).
//! Must never: decide batch boundaries beyond `next_cut`, import the
//! receivers, the context or the service (they build on sources, never the
//! reverse), or give a position two different records before it is
//! released.
//!
//! [`Source`]: crate::dstream::Source

pub mod generator;
mod jetstream;
mod jetstream_conn;
mod jetstream_claim;
mod jetstream_lease;
mod kafka;
mod kafka_config;
mod scale_out;
mod wal;

pub use jetstream::{
    JetStreamError, JetStreamSource, JetStreamStats, JsRecord, PartitionStats, STREAMS_MAX,
};
pub use jetstream_conn::{
    JetStreamConfig, JetStreamConnection, RECORD_BYTES_CEILING,
};

pub use jetstream_claim::Claim;
pub use jetstream_lease::{
    LeaseError, Leases, LostWhy, PartitionRef, INSTANCE_NAME_BYTES_MAX, LEASES_BUCKET,
    LEASE_TTL_MS_DEFAULT, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, OWNERS_BUCKET,
};
// The model-log seam (`PartitionLog`, `KafkaSource::open`) is for tests.
#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub use kafka::{
    ConnPartition, KafkaPartitionStats, KafkaRecord, KafkaSource, KafkaSourceError, PartitionLog,
    PartitionSpec, READ_TRIES_MAX as KAFKA_READ_TRIES_MAX,
};
#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub use crate::kafka::topic_name_ok;
pub use kafka_config::{
    KafkaFormat, KafkaSourceConfig, StartAt, FETCH_WAIT_MS_MAX,
    RATE_PER_PARTITION_CEILING, RECORD_BYTES_CEILING as KAFKA_RECORD_BYTES_CEILING,
};
pub use scale_out::{Assignment, LeasedSource, ScaleOut};
pub(crate) use wal::OnRelease;
pub use wal::{Decoder, WalSource};
