//! The top-level error: one variant per module's own error enum, so callers
//! can match on the part that failed while `?` still works across parts.

use crate::wal::WalError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Wal(#[from] WalError),

    /// A command-line or configuration mistake, with what to do instead.
    #[error("{0}")]
    Usage(String),
}
