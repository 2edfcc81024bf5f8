//! `weir wal inspect | verify | repair DIR`: one input stream's write-ahead
//! log, read-only except `repair` (which moves damage into DIR/quarantine/
//! and deletes nothing).
//!
//! Owns: these subcommands' arguments and their printed tables.
//! Limits: none of its own (the checks are `wal::verify_dir` and
//! `wal::repair_dir`).
//! Must never: open the log for writing (that would cut a torn tail) or
//! decide on its own what is damaged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::storage::RealFs;
use crate::wal;

#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// List segments, record ranges, record counts and bytes (read-only).
    ///
    /// Example: weir wal inspect /var/lib/weir/wal/tweets
    Inspect { dir: PathBuf },
    /// Check every frame of every segment (read-only). Exits 1 and names
    /// the file and byte offset of the first problem if the log is corrupt.
    ///
    /// Example: weir wal verify /var/lib/weir/wal/tweets
    Verify { dir: PathBuf },
    /// Cut the log at its first damaged byte and move everything after it
    /// into DIR/quarantine/ (never deleted). Stop weir first.
    ///
    /// Example: weir wal repair /var/lib/weir/wal/tweets
    Repair { dir: PathBuf },
}

/// Runs one `weir wal` subcommand.
pub fn run(cmd: WalCommand) -> crate::Result<ExitCode> {
    match cmd {
        WalCommand::Inspect { dir } => inspect(&dir),
        WalCommand::Verify { dir } => verify(&dir),
        WalCommand::Repair { dir } => repair(&dir),
    }
}

fn require_dir(dir: &Path) -> crate::Result<()> {
    if !dir.is_dir() {
        return Err(crate::Error::Usage(format!(
            "{} is not a directory: give the WAL directory of one input stream",
            dir.display()
        )));
    }
    Ok(())
}

fn print_segments(report: &wal::DirReport) {
    println!(
        "{:<28} {:>14} {:>14} {:>10} {:>12}  state",
        "segment", "first_lsn", "end_lsn", "records", "bytes"
    );
    for s in &report.segments {
        let name = s
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        println!(
            "{:<28} {:>14} {:>14} {:>10} {:>12}  {}",
            name,
            s.first_lsn,
            s.first_lsn + s.records,
            s.records,
            s.bytes,
            if s.sealed { "sealed" } else { "active" }
        );
    }
    println!(
        "total: {} segments, {} records ({}..{}), {} bytes",
        report.segments.len(),
        report.records(),
        report.first_lsn().unwrap_or(0),
        report.end_lsn().unwrap_or(0),
        report.bytes()
    );
    if let Some(t) = &report.torn_tail {
        println!(
            "torn tail: {} bytes at byte {} of {} ({}); never acknowledged, cut when weir opens the log",
            t.bytes_cut,
            t.offset,
            t.path.display(),
            t.reason
        );
    }
}

/// The line that names a log's first problem (also `weir status`'s).
pub fn problem_line(p: &wal::Problem) -> String {
    format!(
        "CORRUPT: {} at byte {}: {} (record {} onwards is affected)",
        p.path.display(),
        p.offset,
        p.detail,
        p.lsn
    )
}

fn inspect(dir: &Path) -> crate::Result<ExitCode> {
    require_dir(dir)?;
    let report = wal::verify_dir(&RealFs, dir)?;
    print_segments(&report);
    if let Some(p) = &report.problem {
        println!("{}", problem_line(p));
        println!("segments after the problem were not inspected; run `weir wal repair {}` to cut the log there", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path) -> crate::Result<ExitCode> {
    require_dir(dir)?;
    let report = wal::verify_dir(&RealFs, dir)?;
    print_segments(&report);
    match &report.problem {
        None => {
            println!("ok: every frame checked");
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            println!("{}", problem_line(p));
            println!(
                "to go on: stop weir, back up {}, then run `weir wal repair {}`; it moves the damaged part aside and reports what it held",
                dir.display(),
                dir.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn repair(dir: &Path) -> crate::Result<ExitCode> {
    require_dir(dir)?;
    let r = wal::repair_dir(&RealFs, dir)?;
    match (&r.problem, &r.quarantine) {
        (Some(p), Some(q)) => {
            println!("{}", problem_line(p));
            println!(
                "moved {} bytes holding {} intact records into {} ({} files); the log now continues at record {}",
                r.bytes_moved,
                r.records_moved,
                q.display(),
                r.files_moved.len(),
                r.next_lsn
            );
        }
        _ => println!("nothing to repair: every frame checked (a torn tail, if any, is cut when weir opens the log)"),
    }
    Ok(ExitCode::SUCCESS)
}
