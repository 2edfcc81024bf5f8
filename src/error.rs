//! The crate's top-level error: one variant per module error.
//!
//! Owns: [`Error`] and [`Result`]. Must never: hold logic; each module
//! defines (and documents) its own error enum.

/// Any weir error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Graph building or batch evaluation.
    #[error(transparent)]
    Engine(#[from] crate::dstream::EngineError),
    /// Batch scheduling.
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    /// The checkpoint store, used outside a running scheduler (the offline
    /// tools); the scheduler wraps its own checkpoint errors.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Output sinks.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// Encoding or decoding persisted values.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// Streaming context life cycle and configuration.
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    /// A data directory whose checkpoint and input logs do not go
    /// together (missing or foreign checkpoint).
    #[error(transparent)]
    Identity(#[from] crate::context::IdentityError),
    /// The write-ahead log.
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    /// The service: pipeline files, the daemon, the status endpoint.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// Receivers (socket, directory, ingest, custom).
    #[error(transparent)]
    Receiver(#[from] crate::receiver::ReceiverError),
    /// The JetStream source (configuration, connection, reads).
    #[error(transparent)]
    JetStream(#[from] crate::source::JetStreamError),
    /// The Kafka source (configuration, connection, reads).
    #[error(transparent)]
    Kafka(#[from] crate::source::KafkaSourceError),
    /// The ingest server (setup, producer table recovery and snapshot).
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    /// A SQL step (`sql`).
    #[cfg(feature = "sql")]
    #[error(transparent)]
    Sql(#[from] crate::sql::SqlError),
    /// The `weir feed` client.
    #[error(transparent)]
    Feed(#[from] crate::ingest::FeedError),
    /// A whole-file atomic write (temp, fsync, rename, directory fsync).
    #[error(transparent)]
    Storage(#[from] crate::storage::AtomicWriteError),
    /// A command-line or configuration mistake, with what to do instead.
    #[error("{0}")]
    Usage(String),
}

impl From<crate::dstream::QueueFull> for Error {
    fn from(e: crate::dstream::QueueFull) -> Self {
        Error::Engine(e.into())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
