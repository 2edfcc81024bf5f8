//! The write-ahead log (placeholder: being written).
pub mod storage;
