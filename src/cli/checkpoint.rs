//! `weir checkpoint show | reset-operator DATA_DIR`: the batch lineage and
//! operator state of a stopped data directory.
//!
//! Owns: these subcommands' arguments and printed lines.
//! Limits: none of its own (the store is `checkpoint::open_existing`).
//! Must never: change the checkpoint except through `reset-operator`, or
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
}

/// Runs one `weir checkpoint` subcommand.
pub fn run(cmd: CheckpointCommand) -> crate::Result<ExitCode> {
    match cmd {
        CheckpointCommand::Show { data_dir } => show(&data_dir),
        CheckpointCommand::ResetOperator { data_dir, operator } => reset(&data_dir, &operator),
    }
}

fn show(data_dir: &Path) -> crate::Result<ExitCode> {
    use crate::checkpoint::CheckpointStore;
    let store = crate::checkpoint::open_existing(data_dir)?;
    match store.pipeline()? {
        None => println!("pipeline: none recorded yet"),
        Some(p) => {
            println!(
                "pipeline: batch interval {} ms, {} partitions",
                p.batch_interval_ms, p.partitions
            );
            for o in p.operators.iter().filter(|o| o.stateful) {
                println!(
                    "  stateful operator `{}` ({}) {:?}",
                    o.name, o.kind, o.params
                );
            }
        }
    }
    match store.last_allocated()? {
        None => println!("batches: none yet"),
        Some(b) => println!("last allocated batch: {} ms {:?}", b.time_ms, b.ranges),
    }
    for b in store.pending()? {
        println!(
            "pending (re-run at next start): {} ms {:?}",
            b.time_ms, b.ranges
        );
    }
    for (op, n) in store.state_sizes()? {
        println!("state `{op}`: {n} keys");
    }
    Ok(ExitCode::SUCCESS)
}

fn reset(data_dir: &Path, operator: &str) -> crate::Result<ExitCode> {
    let mut store = crate::checkpoint::open_existing(data_dir)?;
    let n = store.reset_operator(operator)?;
    println!(
        "reset operator `{operator}`: removed {n} state keys; it starts empty at the next start"
    );
    Ok(ExitCode::SUCCESS)
}
