//! The write-ahead log (placeholder: being written).
pub mod sim;
pub mod storage;
