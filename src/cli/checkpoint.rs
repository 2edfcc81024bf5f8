//! `weir checkpoint show | reset-operator | adopt-logs DATA_DIR`: the batch
//! lineage and operator state of a stopped data directory, and the
//! deliberate way out when its checkpoint is missing or foreign.
//!
//! Owns: these subcommands' arguments and printed lines.
//! Limits: none of its own (the store is `checkpoint::open_existing`).
//! Must never: change the checkpoint except through `reset-operator` and
//! `adopt-logs`, or
//! run while weir runs on the directory (sled's lock refuses it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// Show the pipeline a checkpoint belongs to, pending batches and the
    /// number of state keys per operator (read-only).
    ///
    /// Example: weir checkpoint show /var/lib/weir
    Show { data_dir: PathBuf },
    /// Drop one operator's committed state (and its internal parts) so
    /// that a changed pipeline can start; the operator starts empty. Stop
    /// weir first.
    ///
    /// Example: weir checkpoint reset-operator /var/lib/weir counts
    ResetOperator { data_dir: PathBuf, operator: String },
    /// When the checkpoint is missing (or was moved aside as foreign):
    /// give the input logs a new checkpoint, accepting that every record
    /// they hold is processed again (outputs already written are written
    /// again). Refused when the checkpoint already records batches. Stop
    /// weir first.
    ///
    /// Example: weir checkpoint adopt-logs /var/lib/weir
    AdoptLogs { data_dir: PathBuf },
}

/// Runs one `weir checkpoint` subcommand.
pub fn run(cmd: CheckpointCommand) -> crate::Result<ExitCode> {
    match cmd {
        CheckpointCommand::Show { data_dir } => show(&data_dir),
        CheckpointCommand::ResetOperator { data_dir, operator } => reset(&data_dir, &operator),
        CheckpointCommand::AdoptLogs { data_dir } => adopt(&data_dir),
    }
}

fn show(data_dir: &Path) -> crate::Result<ExitCode> {
    use crate::checkpoint::CheckpointStore;
    let store = crate::checkpoint::open_existing(data_dir)?;
    match store.data_dir_id()? {
        Some(id) => println!("data directory id: {id}"),
        None => println!(
            "data directory id: none (written before identities; adopted at the next start)"
        ),
    }
    match store.pipeline()? {
        None => println!("pipeline: none recorded yet"),
        Some(p) => {
            println!(
                "pipeline: batch interval {} ms, {} partitions",
                p.batch_interval_ms, p.partitions
            );
            for o in p.operators.iter().filter(|o| o.stateful) {
                let params: Vec<String> =
                    o.params.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                println!(
                    "  stateful operator `{}` ({}){}{}",
                    o.name,
                    o.kind,
                    if params.is_empty() { "" } else { ": " },
                    params.join(", ")
                );
            }
        }
    }
    match store.last_allocated()? {
        None => println!("batches: none yet"),
        Some(b) => println!(
            "last allocated batch: {}: {}",
            batch_time(b.time_ms),
            ranges_words(&b.ranges)
        ),
    }
    for b in store.pending()? {
        println!(
            "pending (re-run at next start): {}: {}",
            batch_time(b.time_ms),
            ranges_words(&b.ranges)
        );
    }
    for (op, n) in store.state_sizes()? {
        println!("state `{op}`: {n} keys");
    }
    for r in store.skips()? {
        println!("skipped (weir wal skip): {}", super::wal::skip_line(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// A batch time in words: `1764934802000 ms` (as output files name it).
pub(super) fn batch_time(time_ms: u64) -> String {
    format!("{time_ms} ms")
}

/// A batch's input in words: `` `a` records 0..10, `b` records 5..7 ``,
/// or `no input`.
pub(super) fn ranges_words(ranges: &[crate::checkpoint::StreamRange]) -> String {
    if ranges.is_empty() {
        return "no input".to_string();
    }
    let words: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    words.join(", ")
}

fn reset(data_dir: &Path, operator: &str) -> crate::Result<ExitCode> {
    let mut store = crate::checkpoint::open_existing(data_dir)?;
    let n = store.reset_operator(operator)?;
    println!(
        "reset operator `{operator}`: removed {n} state keys; it starts empty at the next start"
    );
    Ok(ExitCode::SUCCESS)
}

fn adopt(data_dir: &Path) -> crate::Result<ExitCode> {
    let a = crate::context::adopt_logs(data_dir)?;
    let how = if a.created { "created" } else { "took" };
    println!(
        "{how} the checkpoint {} (data directory id {}) for the input logs",
        a.checkpoint.display(),
        a.id
    );
    if a.logs.is_empty() {
        println!(
            "no input log found under {}",
            data_dir.join("wal").display()
        );
    }
    for (name, first, end) in &a.logs {
        println!(
            "log `{name}`: records {first}..{end} ({} records) are processed again at the next start",
            end - first
        );
    }
    Ok(ExitCode::SUCCESS)
}
