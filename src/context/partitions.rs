//! Partitioned receiver streams: one input stream spread over N local
//! logs, each with its own receiver (its own thread and WAL writer), so
//! that ingest of one stream scales with cores. The stream the pipeline
//! sees is the union of the partitions ([`StreamingContext::union`]); a
//! batch's lineage records one range per partition, allocated before the
//! batch runs, exactly as for separate streams.
//!
//! Names and files: with one partition a stream is exactly an unpartitioned
//! one (`DATA_DIR/wal/<name>`); with N > 1, partition `p` is the stream
//! `<name>-p<p>` (its log `DATA_DIR/wal/<name>-p<p>`, its progress file
//! for a directory stream), and the union is named `<name>`.
//!
//! Who takes what: a socket stream opens one connection per partition to
//! its server (each connection's records stay in its partition); a
//! directory stream gives each file to one partition by a hash of its name
//! (FNV-1a, stable across runs and machines).
//!
//! Changing the count: more partitions is safe (new ones start empty);
//! fewer, or going between one and several, would leave records of logs
//! the pipeline no longer reads, so it is refused at build time naming the
//! logs, with the way out (keep the count, or drain and remove them).
//!
//! Limits: 1 to [`STREAM_PARTITIONS_MAX`] partitions per stream.
//! Must never: start a partitioned stream beside a log of the same stream
//! that its partitions do not cover.

use std::path::Path;
use std::sync::Arc;

use super::{ContextError, StreamingContext};
use crate::dstream::{DStream, Data};
use crate::layout;
use crate::receiver::dir::{self, DirConfig, DirStats};
use crate::receiver::socket::{self, SocketConfig, SocketStats};
use crate::receiver::{Receiver, ReceiverContext, ReceiverError, ReleaseHook};
use crate::source::Decoder;
use crate::Result;

/// Most partitions of one input stream (each is a log, a receiver thread
/// and a writer).
pub const STREAM_PARTITIONS_MAX: usize = 64;

/// The stream name of partition `p` of `n` of the stream `name`.
pub fn partition_name(name: &str, p: usize, n: usize) -> String {
    if n == 1 {
        name.to_string()
    } else {
        format!("{name}-p{p}")
    }
}

/// One partition's receiver and, for a stream with progress to save, the
/// hook to register before `start()`.
type Part = (Box<dyn Receiver>, Option<ReleaseHook>);

impl StreamingContext {
    /// [`StreamingContext::socket_text_stream_with`] over `partitions`
    /// connections to the server at `addr`, each storing into its own
    /// log (see the module docs for names). The counters are shared.
    pub fn socket_text_stream_partitioned(
        &self,
        name: &str,
        addr: &str,
        partitions: usize,
        config: SocketConfig,
    ) -> Result<(DStream<String>, Arc<SocketStats>)> {
        config.validate(name, self.wal_config())?;
        let stats = Arc::new(SocketStats::default());
        let parts = socket::receivers_with_stats(name, addr, config, stats.clone(), partitions)?
            .into_iter()
            .map(|r| (r, None))
            .collect();
        let stream = self.partitioned(name, partitions, parts, Arc::new(crate::receiver::utf8))?;
        Ok((stream, stats))
    }

    /// [`StreamingContext::text_file_stream_with`] over `partitions`
    /// receivers, each reading the files of `dir` whose name hashes to it
    /// ([`file_partition`]) into its own log. The counters are shared.
    pub fn text_file_stream_partitioned(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        partitions: usize,
        config: DirConfig,
    ) -> Result<(DStream<String>, Arc<DirStats>)> {
        config.validate(name, self.wal_config())?;
        let data_dir = self.data_dir().ok_or_else(|| ContextError::NoDataDir {
            call: "text_file_stream",
            stream: name.to_string(),
        })?;
        self.check_partitions(name, partitions)?;
        let receivers = layout::receivers_dir(data_dir);
        std::fs::create_dir_all(&receivers).map_err(|e| ReceiverError::Io {
            stream: name.to_string(),
            action: "create the directory",
            path: receivers.display().to_string(),
            source: e,
        })?;
        let stats = Arc::new(DirStats::default());
        let mut parts: Vec<Part> = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let part_name = partition_name(name, p, partitions);
            crate::names::validate_stream_name(&part_name).map_err(ContextError::from)?;
            let d = dir::receiver_part(
                dir.as_ref().to_path_buf(),
                layout::dir_progress(data_dir, &part_name),
                config.clone(),
                (p, partitions),
                stats.clone(),
            );
            parts.push((d.receiver, Some(d.release_hook)));
        }
        let chunks = self.partitioned(name, partitions, parts, Arc::new(dir::decode_lines))?;
        Ok((chunks.flat_map(|lines: Vec<String>| lines), stats))
    }

    /// Registers one receiver stream per part and returns their union,
    /// named `name` (a single part: the stream itself).
    fn partitioned<T: Data>(
        &self,
        name: &str,
        n: usize,
        parts: Vec<Part>,
        decode: Decoder<T>,
    ) -> Result<DStream<T>> {
        self.check_partitions(name, n)?;
        debug_assert_eq!(parts.len(), n);
        let mut streams = Vec::with_capacity(n);
        for (p, (receiver, hook)) in parts.into_iter().enumerate() {
            let part_name = partition_name(name, p, n);
            let (stream, shared) =
                self.receiver_stream_shared(&part_name, receiver, decode.clone())?;
            if let Some(hook) = hook {
                // Before start: a batch may be released before the
                // receiver thread runs.
                ReceiverContext::new(shared).set_release_hook(hook);
            }
            streams.push(stream);
        }
        if n == 1 {
            return Ok(streams.remove(0));
        }
        Ok(self.union(&streams).name(name))
    }

    /// The count is in range, and no log of `name` exists that `n`
    /// partitions would not read.
    pub(crate) fn check_partitions(&self, name: &str, n: usize) -> Result<()> {
        if n == 0 || n > STREAM_PARTITIONS_MAX {
            return Err(ContextError::OutOfRange {
                setting: "partitions of a stream",
                found: n.to_string(),
                expected: format!("1 to {STREAM_PARTITIONS_MAX}"),
            }
            .into());
        }
        let Some(dir) = self.data_dir() else {
            return Ok(());
        };
        let orphans = orphan_logs(&layout::wal_root(dir), name, n);
        if orphans.is_empty() {
            return Ok(());
        }
        Err(ContextError::PartitionsShrunk {
            stream: name.to_string(),
            partitions: n,
            logs: orphans,
        }
        .into())
    }
}

/// Logs of stream `name` under `wal_root` that `n` partitions do not
/// cover: `<name>` when `n > 1`, `<name>-p<k>` for `k >= n` (or any when
/// `n == 1`). Sorted.
fn orphan_logs(wal_root: &Path, name: &str, n: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(wal_root) else {
        return Vec::new();
    };
    let prefix = format!("{name}-p");
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|f| {
            if f == name {
                return n > 1;
            }
            let Some(k) = f.strip_prefix(&prefix) else {
                return false;
            };
            // Only `<name>-p<digits>`: another stream may be `<name>-pool`.
            let canonical = k
                .parse::<usize>()
                .ok()
                .filter(|k| k.to_string() == f[prefix.len()..]);
            canonical.is_some_and(|k| n == 1 || k >= n)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::dir::file_partition;

    #[test]
    fn names_and_file_assignment_are_stable() {
        assert_eq!(partition_name("in", 0, 1), "in");
        assert_eq!(partition_name("in", 3, 4), "in-p3");
        // FNV-1a of "a.txt", fixed forever: files must not move between
        // partitions across versions.
        assert_eq!(file_partition("a.txt", 1), 0);
        let counts = (0..1000).fold([0usize; 4], |mut c, i| {
            c[file_partition(&format!("part-{i:05}.txt"), 4)] += 1;
            c
        });
        assert!(counts.iter().all(|&c| c > 200), "{counts:?}");
    }

    #[test]
    fn orphan_logs_are_the_ones_the_count_does_not_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in [
            "in", "in-p0", "in-p1", "in-p2", "in-pool", "in-p01", "other",
        ] {
            std::fs::create_dir(dir.path().join(d)).expect("mkdir");
        }
        let o = |n| orphan_logs(dir.path(), "in", n);
        assert_eq!(o(1), vec!["in-p0", "in-p1", "in-p2"]);
        assert_eq!(o(2), vec!["in", "in-p2"]);
        assert_eq!(o(3), vec!["in"]);
        assert_eq!(
            orphan_logs(&dir.path().join("absent"), "in", 2),
            Vec::<String>::new()
        );
    }
}
