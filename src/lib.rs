//! weir: a crash-safe micro-batch stream processor with Spark Streaming's
//! DStream model in one binary.

// Spark-shaped signatures (`DStream<(K, (Option<V>, Option<W>))>`) are the
// API; naming every such type would hide it.
#![allow(clippy::type_complexity)]

pub mod checkpoint;
pub mod clock;
pub mod codec;
pub mod context;
pub mod dstream;
pub mod error;
pub mod scheduler;
pub mod sink;
pub mod testdata;
pub mod wal;

pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{StreamingContext, StreamingContextBuilder};
pub use dstream::{DStream, Queue, QueueMode, State, StateSpec, Text};
pub use error::{Error, Result};
