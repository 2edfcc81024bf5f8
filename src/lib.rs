//! weir: a crash-safe micro-batch stream processor with Spark Streaming's
//! DStream model in one binary.
//!
//! A stream is cut into micro-batches at a fixed interval; each batch is
//! transformed by DStream operators (`map`, `flat_map`, `filter`,
//! `reduce_by_key`, windows, `update_state_by_key`, `map_with_state`, joins)
//! and pushed to outputs (`print`, text files, `foreach_batch`, a
//! transactional key-value table). Underneath, every input stream of a data
//! directory has a write-ahead log: a record is acknowledged to its producer
//! only once it is fsynced there, and each batch's lineage, operator state
//! and sink markers are committed to a sled checkpoint, so every
//! acknowledged record is processed exactly once across crashes
//! (`docs/guarantees.md` says precisely what is exactly once).
//!
//! # The tutorial, in weir
//!
//! Spark Streaming's first example: a socket server sends tweets, each ending
//! in `__end`; the client splits them, lowercases them and prints the first
//! ten of every one-second batch. `get_or_create` attaches the checkpoint in
//! `weir-data/checkpoint`; the socket's lines are logged in
//! `weir-data/wal/tweets` before a batch reads them.
//!
//! ```no_run
//! use std::time::Duration;
//! use weir::StreamingContext;
//!
//! # fn main() -> weir::Result<()> {
//! let ssc = StreamingContext::get_or_create("weir-data", |b| {
//!     let ssc = b.batch_interval(Duration::from_secs(1)).build()?;
//!     ssc.socket_text_stream("tweets", "127.0.0.1:9009")?
//!         .flat_map(|line: String| {
//!             line.split("__end")
//!                 .map(|t| t.trim().to_lowercase())
//!                 .filter(|t| !t.is_empty())
//!                 .collect::<Vec<_>>()
//!         })
//!         .print(10)?;
//!     Ok(ssc)
//! })?;
//! ssc.start()?;
//! ssc.await_termination()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where things are
//!
//! - [`StreamingContext`] (module [`context`]): build a pipeline, its input
//!   streams (queues, logs, sockets, directories, the ingest server of
//!   module [`ingest`]), then `start`, `stop`, await batches.
//! - [`DStream`] (module [`dstream`]): the operators; pair operators on
//!   `DStream<(K, V)>`; [`Text`], a small string for hot paths.
//! - Module [`sink`]: outputs; [`sink::KvTable`] reads a key-value table.
//! - Module [`receiver`]: write your own receiver ([`receiver::Receiver`]);
//!   socket and directory settings.
//! - Module [`service`]: run a pipeline as a service (signals, systemd,
//!   status page) with [`service::run_service`], or from a TOML file
//!   ([`service::config`]).
//! - Module [`wal`]: the write-ahead log and its offline tools (verify,
//!   repair); module [`checkpoint`]: the checkpoint store.
//! - Errors: [`Error`], one variant per part.
//!
//! Testing a pipeline without the wall clock: a [`ManualClock`] advances
//! time exactly, and a [`Queue`] feeds batches:
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use weir::{ManualClock, Queue, StreamingContext, Text};
//!
//! # fn main() -> weir::Result<()> {
//! let clock = Arc::new(ManualClock::new(0));
//! let ssc = StreamingContext::builder()
//!     .batch_interval(Duration::from_secs(1))
//!     .parallelism(2)
//!     .clock(clock.clone())
//!     .build()?;
//! let q: Queue<String> = Queue::new();
//! let counts = ssc
//!     .queue_stream(&q)
//!     .flat_map_with(|line: String, out| Text::for_each_lowercase_word(&line, out))
//!     .map(|w| (w, 1u64))
//!     .reduce_by_key(|a, b| a + b)
//!     .name("counts");
//! counts.print(10)?;
//! ssc.start()?;
//! q.push(vec!["Hello world".into(), "hello".into()])?;
//! clock.advance(1000); // batch 1000 ms runs
//! ssc.await_batch(1000, Duration::from_secs(5))?;
//! ssc.stop(false)?;
//! # Ok(())
//! # }
//! ```

// Spark-shaped signatures (`DStream<(K, (Option<V>, Option<W>))>`) are the
// API; naming every such type would hide it.
#![allow(clippy::type_complexity)]
#![warn(missing_docs)]

/// Declares modules that are crate-private in a normal build and public, hidden
/// from the docs, with the cargo feature `testing`: the crate's own tests,
/// fuzz targets and benchmarks reach the internals they check through them
/// (the dev-dependency on the crate itself turns the feature on). They are
/// never an API: a library user sees only what this file re-exports and the
/// public modules below.
macro_rules! internal {
    ($($(#[$attr:meta])* mod $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "testing")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "testing"))]
        pub(crate) mod $name;
    )*};
}

// The public API (see "API boundaries" in docs/ARCHITECTURE.md).
pub mod checkpoint;
pub mod cli;
pub mod context;
pub mod dstream;
pub mod ingest;
pub mod ml;
pub mod receiver;
pub mod service;
pub mod sink;
#[cfg(feature = "sql")]
pub mod sql;
pub mod wal;

// Internals.
internal! {
    mod clock;
    mod codec;
    mod error;
    mod failpoint;
    mod kafka;
    mod layout;
    mod names;
    mod nats;
    mod net;
    mod scheduler;
    mod source;
    mod storage;
    mod testdata;
}
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod pipelines;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing_http;

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::CodecError;
pub use context::{StreamingContext, StreamingContextBuilder};
pub use dstream::{
    DStream, MapWithStateDStream, Queue, QueueMode, State, StateSpec, Text, UpdateSpec,
};
pub use error::{Error, Result};
pub use kafka::{KafkaClientConfig, KafkaError, KafkaSasl, KafkaTls};
pub use names::{NameError, STREAM_NAME_BYTES_MAX};
pub use nats::NatsAuth;
pub use scheduler::{BatchStats, SchedulerError};
pub use sink::{JetStreamSinkConfig, JetStreamSinkError, JetStreamSinkStats};
pub use sink::{KafkaSinkConfig, KafkaSinkError, KafkaSinkStats};
pub use sink::{PostgresSinkConfig, PostgresSinkError, PostgresSinkStats};
pub use source::{
    Assignment, Claim, JetStreamConfig, JetStreamError, JetStreamStats, JsRecord, LeaseError,
    LostWhy, PartitionRef, PartitionStats, ScaleOut, INSTANCE_NAME_BYTES_MAX, LEASES_BUCKET,
    LEASE_TTL_MS_DEFAULT, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN, OWNERS_BUCKET,
};
pub use source::{
    KafkaFormat, KafkaPartitionStats, KafkaRecord, KafkaSourceConfig, KafkaSourceError, StartAt,
};
pub use storage::AtomicWriteError;
