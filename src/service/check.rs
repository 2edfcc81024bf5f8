//! `weir check --data-dir DIR PIPELINE`: a pipeline file against the
//! checkpoint of a data directory, by the rules `start` applies
//! (`checkpoint/compat.rs`: the batch interval, and every stateful step of
//! the checkpoint under the same name, kind and parameters), so that
//! systemd's `ExecStartPre` refuses a changed stateful step once, with the
//! way out, instead of restart-looping on it.
//!
//! Also [`check_initial_files`]: every step's initial-state file is read
//! and parsed as the first start would, unless the checkpoint already
//! keeps that step's state (then a start never reads it).
//!
//! Owns: [`check_data_dir`] and its verdict [`DataDirCheck`]. The
//! pipeline is built on a context without a data directory, its sources
//! stand-ins of the same names (`compile::compile_offline`), so the
//! description compared is the one `run` records.
//! The checkpoint is read from a private copy under `$TMPDIR` (sled
//! rewrites its snapshot and log tail whenever it opens a database, even
//! only to read), so the data directory is never written and a running
//! weir's lock is no bar: on a running service the copy is of the
//! checkpoint as it is then (the pipeline it records changes only at a
//! start).
//!
//! Limits: the copy takes as much temporary space and time as the
//! checkpoint's files (`du -sh DATA_DIR/checkpoint`), removed at the end,
//! and is refused beyond [`CHECK_COPY_BYTES_MAX`] (measured before a byte
//! is copied);
//! reads one 32-byte identity file per input log.
//! Must never: write in the data directory (no format record, no
//! migration, no identity, no directory created, not even sled's own
//! housekeeping), take `DATA_DIR/LOCK` or the checkpoint's lock (a
//! service starting beside it must not be refused), or open a log, bind a
//! port or start a receiver.

use std::path::{Path, PathBuf};

use super::{compile, Pipeline, ServiceError};
use crate::checkpoint::{CheckpointError, SledCheckpointStore};
use crate::dstream::PipelineDescription;
use crate::StreamingContext;

/// Largest checkpoint `weir check --data-dir` copies to read, in bytes
/// (8 GiB; a pipeline's checkpoint holds its operators' state, most are
/// far smaller).
pub const CHECK_COPY_BYTES_MAX: u64 = 8 << 30;

/// What `weir check --data-dir` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirCheck {
    /// No checkpoint to compare with (no data directory, no checkpoint in
    /// it, or one that records no pipeline yet): a start begins afresh.
    NothingToCompare {
        /// Why, in words ("the data directory does not exist").
        why: String,
    },
    /// The checkpoint's state fits the pipeline: a start uses it.
    Compatible {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// Its stateful operators, each kept by the pipeline.
        stateful: Vec<String>,
    },
}

/// Reads every step's initial-state file (`initial = "..."`) whose
/// operator is not in `kept` (state a checkpoint already holds); one line
/// in words per file, or the first file's error.
pub fn check_initial_files(p: &Pipeline, kept: &[String]) -> crate::Result<Vec<String>> {
    let mut lines = Vec::new();
    for node in &p.nodes {
        let super::config::Node::Step(step) = node else {
            continue;
        };
        let super::config::Op::RunningTotal {
            initial: Some(path),
            ..
        } = &step.op
        else {
            continue;
        };
        if kept.contains(&step.name) {
            lines.push(format!(
                "step `{}`: initial state {} not read: the checkpoint keeps its state",
                step.id,
                path.display()
            ));
            continue;
        }
        let pairs = super::initial::load_pairs(path).map_err(ServiceError::from)?;
        lines.push(format!(
            "step `{}`: initial state of {} keys from {}, read at the first start",
            step.id,
            pairs.len(),
            path.display()
        ));
    }
    Ok(lines)
}

/// The description `run` would record for `p`: built on a context with no
/// data directory (a stand-in identity), sources as stand-ins (nothing is
/// opened, no sink connects); SQL steps'
/// inferred columns read from `data_dir` when given (nothing written).
pub fn description(p: &Pipeline, data_dir: Option<&Path>) -> crate::Result<PipelineDescription> {
    // A stand-in identity: the exactly-once sinks (JetStream, PostgreSQL,
    // Kafka) refuse a context without one, and connect only at their first
    // batch, which never runs here.
    let b = super::configure(StreamingContext::builder(), &p.settings);
    let ssc = b.data_dir_id(crate::checkpoint::DataDirId::random()).build()?;
    let sql_dir = data_dir.map(crate::layout::sql_dir);
    compile::compile_offline(p, &ssc, sql_dir.as_deref())?;
    Ok(ssc.describe())
}

/// Checks `p` against the checkpoint of `data_dir` as `start` would; an
/// incompatible change is the same error `start` gives
/// ([`CheckpointError::Incompatible`]), a running weir a usage error
/// saying so.
pub fn check_data_dir(p: &Pipeline, data_dir: &Path) -> crate::Result<DataDirCheck> {
    let nothing = |why: String| Ok(DataDirCheck::NothingToCompare { why });
    if !data_dir.is_dir() {
        return nothing(format!("{} does not exist yet", data_dir.display()));
    }
    let dir = crate::layout::checkpoint_dir(data_dir);
    if !SledCheckpointStore::exists(&dir) {
        // As at start: input logs written beside a checkpoint that is
        // gone are refused, not started afresh.
        crate::context::check_offline_missing(data_dir)?;
        return nothing(format!("{} holds no checkpoint yet", data_dir.display()));
    }
    let new = description(p, Some(data_dir))?;
    // sled rewrites its own files whenever it opens a database (its
    // snapshot, its log's tail): read a private copy, so the data
    // directory is never written, and a running weir's lock is no bar.
    let copy = Copy::of(&dir, CHECK_COPY_BYTES_MAX)?;
    let old = match crate::checkpoint::recorded_pipeline(&copy.0) {
        Ok(Some(old)) => old,
        Ok(None) => return nothing(format!("{} records no pipeline yet", dir.display())),
        Err(e @ (CheckpointError::Corrupt { .. } | CheckpointError::Panicked { .. })) => {
            return Err(changed_while_copied(data_dir, &e).into())
        }
        Err(e) => return Err(e.into()),
    };
    drop(copy);
    let changes = crate::checkpoint::compat::incompatibilities(&old, &new);
    if !changes.is_empty() {
        return Err(CheckpointError::Incompatible {
            store: dir.display().to_string(),
            changes,
        }
        .into());
    }
    Ok(DataDirCheck::Compatible {
        checkpoint: dir,
        stateful: old
            .operators
            .into_iter()
            .filter(|o| o.stateful)
            .map(|o| o.name)
            .collect(),
    })
}

/// A private copy of a checkpoint directory, under the system's temporary
/// directory (`$TMPDIR`), removed when dropped.
struct Copy(PathBuf);

impl Copy {
    /// Copies `dir` unless its files pass `bytes_max` in all.
    fn of(dir: &Path, bytes_max: u64) -> crate::Result<Copy> {
        let bytes = tree_bytes(dir)?;
        if bytes > bytes_max {
            return Err(ServiceError::CheckTooLarge {
                path: dir.to_path_buf(),
                bytes,
                limit_bytes: bytes_max,
            }
            .into());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let to = std::env::temp_dir().join(format!(
            "weir-check-{}-{nanos}",
            std::process::id()
        ));
        let copy = Copy(to.clone());
        let io = |path: &Path, source| ServiceError::CheckCopy {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir(&to).map_err(|e| io(&to, e))?;
        let mut todo = vec![(dir.to_path_buf(), to)];
        while let Some((from, to)) = todo.pop() {
            for e in std::fs::read_dir(&from).map_err(|e| io(&from, e))? {
                let e = e.map_err(|e| io(&from, e))?;
                let (src, dst) = (e.path(), to.join(e.file_name()));
                let ty = e.file_type().map_err(|e| io(&src, e))?;
                if ty.is_dir() {
                    std::fs::create_dir(&dst).map_err(|e| io(&dst, e))?;
                    todo.push((src, dst));
                } else if ty.is_file() {
                    std::fs::copy(&src, &dst).map_err(|e| io(&src, e))?;
                }
            }
        }
        Ok(copy)
    }
}

/// The bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> crate::Result<u64> {
    let io = |path: &Path, source| ServiceError::CheckCopy {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let e = e.map_err(|e| io(&d, e))?;
            let ty = e.file_type().map_err(|err| io(&e.path(), err))?;
            if ty.is_dir() {
                todo.push(e.path());
            } else if ty.is_file() {
                let len = e.metadata().map_err(|err| io(&e.path(), err))?.len();
                bytes = bytes.saturating_add(len);
            }
        }
    }
    Ok(bytes)
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The copy of a running weir's checkpoint caught it mid-write.
fn changed_while_copied(data_dir: &Path, e: &CheckpointError) -> ServiceError {
    ServiceError::Usage(format!(
        "cannot check against {}: the copy of its checkpoint does not open ({e}). If weir is \
         running there, it was writing while the copy was taken: try again, or stop weir first \
         (systemd runs this check as ExecStartPre, after the old process has stopped). If weir \
         is stopped, the checkpoint itself is damaged: see docs/operations.md, Repair",
        data_dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_past_the_copy_limit_is_refused_before_copying() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("a"), [0u8; 600]).expect("write");
        std::fs::write(dir.path().join("sub/b"), [0u8; 400]).expect("write");
        // At the limit: copied, the same bytes.
        let copy = Copy::of(dir.path(), 1000).expect("at the limit");
        assert_eq!(tree_bytes(&copy.0).expect("size"), 1000);
        let at = copy.0.clone();
        drop(copy);
        assert!(!at.exists(), "the copy is removed");
        // One byte past it: refused, naming both numbers.
        let e = Copy::of(dir.path(), 999).err().expect("past the limit");
        let e = e.to_string();
        assert!(e.contains("1000 bytes") && e.contains("999"), "{e}");
    }
}
