//! weir: a crash-safe micro-batch stream processor. See
//! `docs/ARCHITECTURE.md` for the map of the parts and their invariants.

pub mod cli;
pub mod error;
pub mod wal;

pub use error::Error;
