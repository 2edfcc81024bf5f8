//! `read_range`: the records of a record range of a log directory,
//! read-only (for `weir wal inspect --from --to`): it never cuts a torn
//! tail or writes anything, and it stops at the first byte it cannot
//! decode (what is damaged is `verify_dir`'s to say).
//!
//! Limits: one segment in memory at a time (segments are bounded by
//! `WalConfig::segment_bytes`).
//! Must never: open a segment for writing, or report a record whose frame
//! checksum failed.

use std::ops::Range;
use std::path::Path;

use super::format::{self, Decoded, Lsn};
use super::{list_segments, read_file, WalError};
use crate::storage::Storage;

/// Calls `f` with every record of `range` in `dir`, in order. Returns the
/// record number it reached: `range.end`, or less when the log ends (or
/// cannot be decoded) before it.
pub fn read_range(
    storage: &dyn Storage,
    dir: &Path,
    range: Range<Lsn>,
    mut f: impl FnMut(Lsn, &[u8]),
) -> Result<Lsn, WalError> {
    let segments = list_segments(storage, dir)?;
    let mut reached = range.start;
    for (i, (first, path)) in segments.iter().enumerate() {
        let next_first = segments.get(i + 1).map(|s| s.0);
        if next_first.is_some_and(|n| n <= range.start) || *first >= range.end {
            continue;
        }
        let buf = read_file(storage, path)?;
        let Ok(h) = format::decode_segment_header(&buf) else {
            return Ok(reached);
        };
        let mut at = format::SEGMENT_HEADER_BYTES;
        let mut lsn = h.first_lsn;
        while lsn < range.end {
            match format::decode_frame(&buf, at, lsn, &h) {
                Decoded::Record {
                    payload, frame_len, ..
                } => {
                    if lsn >= range.start {
                        f(lsn, &buf[payload]);
                        reached = lsn + 1;
                    }
                    at += frame_len;
                    lsn += 1;
                }
                Decoded::Seal { .. } => break,
                Decoded::Incomplete { .. } | Decoded::Bad(_) => return Ok(reached),
            }
        }
        if lsn >= range.end {
            break;
        }
    }
    Ok(reached)
}
