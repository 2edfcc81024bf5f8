//! weir: a crash-safe micro-batch stream processor with Spark Streaming's
//! DStream model in one binary. `docs/ARCHITECTURE.md` maps the parts and
//! their invariants; `docs/dstream.md` describes the engine's API.
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
pub mod receiver;
pub mod service;
pub mod sink;
pub mod wal;

// Internals.
internal! {
    mod clock;
    mod codec;
    mod error;
    mod failpoint;
    mod layout;
    mod names;
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

pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::CodecError;
pub use context::{StreamingContext, StreamingContextBuilder};
pub use dstream::{DStream, MapWithStateDStream, Queue, QueueMode, State, StateSpec, Text};
pub use error::{Error, Result};
pub use names::NameError;
pub use scheduler::{BatchStats, SchedulerError};
pub use storage::AtomicWriteError;
