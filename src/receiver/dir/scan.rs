//! Listing the input directory: which files are new or unfinished, in
//! (mtime, name) order, and which names are ignored (temporary or hidden).
//!
//! Limits: at most `files_tracked_max` entries looked at per listing and
//! `files_per_scan_max` files returned; names of at most
//! [`NAME_BYTES_MAX`] bytes and valid UTF-8 (others are skipped).
//! Must never: return a file still being written under a temporary name,
//! or forget a file while a chunk of it is unreleased.

use std::collections::HashSet;
use std::path::PathBuf;

use super::known::lock;
use super::records::{FileIdentity, NAME_BYTES_MAX};
use super::DirReceiver;
use crate::receiver::ReceiverContext;

/// The partition (of `n`) that owns the file `file_name`: FNV-1a of its
/// bytes, modulo `n`.
pub fn file_partition(file_name: &str, n: usize) -> usize {
    let h = file_name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (h % n.max(1) as u64) as usize
}


/// One file to read, as listed.
pub(super) struct Candidate {
    pub(super) name: String,
    pub(super) path: PathBuf,
    mtime_ns: u64,
}

/// Whether a directory entry name is a temp or hidden file (ignored).
pub fn ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || name.ends_with(".tmp")
        || name.contains("_COPYING_")
}

impl DirReceiver {
    /// Lists the directory: new or unfinished files (at most
    /// `files_per_scan_max`, oldest first) and, when the listing was
    /// complete, forgets files that are gone.
    pub(super) fn scan(&self, ctx: &ReceiverContext) -> Result<Vec<Candidate>, std::io::Error> {
        let mut present = HashSet::new();
        let mut out = Vec::new();
        let mut truncated = false;
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue; // not UTF-8: cannot be recorded in a chunk header
            };
            if ignored_name(&name) || name.len() > NAME_BYTES_MAX {
                continue;
            }
            if self.share.1 > 1 && file_partition(&name, self.share.1) != self.share.0 {
                continue; // another partition's file
            }
            if present.len() >= self.config.files_tracked_max {
                truncated = true;
                break;
            }
            let m = match e.metadata() {
                Ok(m) if m.is_file() => m,
                _ => continue,
            };
            let id = FileIdentity::of(&m);
            let done = lock(&self.known)
                .current
                .get(&name)
                .is_some_and(|p| p.complete && p.identity == id);
            present.insert(name.clone());
            if !done {
                out.push(Candidate {
                    path: e.path(),
                    name,
                    mtime_ns: id.mtime_ns,
                });
            }
        }
        if truncated {
            tracing::warn!(
                stream = ctx.stream_name(),
                dir = %self.dir.display(),
                files_tracked_max = self.config.files_tracked_max,
                "the directory holds more files than files_tracked_max; only part of it is read. Move processed files elsewhere or raise files_tracked_max"
            );
        } else {
            lock(&self.known).prune(&present);
        }
        out.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        out.truncate(self.config.files_per_scan_max);
        Ok(out)
    }
}
