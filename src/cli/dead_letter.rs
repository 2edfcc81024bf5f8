//! `weir dead-letter list | replay`: the records a pipeline's steps
//! dead-lettered (`on_error = "dead_letter"`), read from
//! `DATA_DIR/dead-letter/` (read-only; safe while the service runs).
//!
//! Owns: these subcommands' arguments and what they print.
//! Limits: reads at most `sink::DEAD_LETTER_READ_BYTES_MAX` per file.
//! Must never: change or remove an entry (the operator removes files
//! once handled).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::sink::{read_dead_letters, DeadLetter};

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Print every dead-lettered record: batch time, stream and record
    /// number, step, error, and the record (escaped as a JSON string).
    ///
    /// Example: weir dead-letter list --data-dir /var/lib/weir
    List {
        /// The data directory (default: $STATE_DIRECTORY, else ./weir-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only the records of this step.
        #[arg(long)]
        step: Option<String>,
    },
    /// Print the dead-lettered records themselves, one per line, as the
    /// step saw them (a text line as it was, JSON compact), ready to be
    /// sent again once the pipeline handles them:
    ///   weir dead-letter replay --data-dir D | weir feed ADDR - --producer replay-1
    #[command(verbatim_doc_comment)]
    Replay {
        /// The data directory (default: $STATE_DIRECTORY, else ./weir-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Only the records of this step.
        #[arg(long)]
        step: Option<String>,
    },
}

/// Runs one `weir dead-letter` subcommand.
pub fn run(cmd: DeadLetterCommand) -> crate::Result<ExitCode> {
    let (dir, step, replay) = match cmd {
        DeadLetterCommand::List { data_dir, step } => (data_dir, step, false),
        DeadLetterCommand::Replay { data_dir, step } => (data_dir, step, true),
    };
    let dir = dir.unwrap_or_else(crate::service::default_data_dir);
    let entries: Vec<DeadLetter> = read_dead_letters(&dir)?
        .into_iter()
        .filter(|e| step.as_ref().is_none_or(|s| *s == e.step))
        .collect();
    let mut out = std::io::stdout().lock();
    let io =
        |e: std::io::Error| crate::Error::Usage(format!("cannot write to standard output: {e}"));
    if replay {
        for e in &entries {
            writeln!(out, "{}", e.record).map_err(io)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let pos = match (&e.stream, e.lsn) {
            (Some(s), Some(l)) => format!("stream {s} record {l}"),
            _ => "position unknown (after a shuffle)".to_string(),
        };
        let record = serde_json::to_string(&e.record).unwrap_or_default();
        writeln!(
            out,
            "batch {} ms, {pos}, step {}: {}\n  record: {record}",
            e.batch_time_ms, e.step, e.error
        )
        .map_err(io)?;
    }
    writeln!(
        out,
        "{} dead-lettered records in {}",
        entries.len(),
        crate::layout::dead_letter_dir(&dir).display()
    )
    .map_err(io)?;
    Ok(ExitCode::SUCCESS)
}
