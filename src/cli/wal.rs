//! `weir wal inspect | verify | repair DIR`: one input stream's write-ahead
//! log, read-only except `repair` (which moves damage into DIR/quarantine/
//! and deletes nothing); `weir wal skip`, which leaves the log as it is and
//! records a skipped range (with its audit line) in the checkpoint.
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
    /// List segments, record ranges, record counts and bytes (read-only);
    /// with --from/--to, print the records of that range instead, one per
    /// line: record number, then the bytes as a JSON string (or, if not
    /// UTF-8, as escaped bytes b"..."); an ingest stream's record shows its
    /// payload, then its producer and sequence number.
    ///
    /// Examples:
    ///   weir wal inspect /var/lib/weir/wal/tweets
    ///   weir wal inspect /var/lib/weir/wal/tweets --from 4 --to 5
    #[command(verbatim_doc_comment)]
    Inspect {
        dir: PathBuf,
        /// First record to print.
        #[arg(long, requires = "to")]
        from: Option<u64>,
        /// End of the range to print (exclusive).
        #[arg(long, requires = "from")]
        to: Option<u64>,
    },
    /// Check every frame of every segment (read-only, without the
    /// directory's lock: safe beside a running weir). Exits 1 and names
    /// the file and byte offset of the first problem if the log is corrupt,
    /// including records the synced-end marker proves durable that are
    /// missing or damaged.
    ///
    /// Example: weir wal verify /var/lib/weir/wal/tweets
    Verify { dir: PathBuf },
    /// Cut the log at its first damaged byte and move everything after it
    /// into DIR/quarantine/ (never deleted). Takes the directory's lock:
    /// refused while weir runs on the log; stop weir first.
    ///
    /// Example: weir wal repair /var/lib/weir/wal/tweets
    Repair { dir: PathBuf },
    /// Mark records FROM..TO (TO exclusive) of one input stream as never
    /// to be processed: the way past a record a step cannot process when
    /// dead-lettering is not wanted. Writes an audit record (range,
    /// reason, time, user, host) into the checkpoint, shown by `weir
    /// checkpoint show`. Refused while weir runs (the checkpoint is
    /// locked), for records already committed, and past the log's end
    /// (for a JetStream partition: past what batches allocated).
    ///
    /// Example: weir wal skip --data-dir /var/lib/weir --stream events --from 4 --to 5 --reason "malformed, ticket 12"
    #[command(verbatim_doc_comment)]
    Skip(SkipArgs),
}

/// `weir wal skip`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SkipArgs {
    /// The data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The input stream (its log is DATA_DIR/wal/STREAM; a JetStream
    /// partition, `<source id>-<JS STREAM>`, has none: then only
    /// positions a batch allocated can be skipped).
    #[arg(long)]
    stream: String,
    /// First record to skip.
    #[arg(long)]
    from: u64,
    /// End of the range (exclusive): --from 4 --to 5 skips record 4.
    #[arg(long)]
    to: u64,
    /// Why (kept in the audit record).
    #[arg(long)]
    reason: String,
}

/// Runs one `weir wal` subcommand.
pub fn run(cmd: WalCommand) -> crate::Result<ExitCode> {
    match cmd {
        WalCommand::Inspect {
            dir,
            from: Some(from),
            to: Some(to),
        } => inspect_range(&dir, from..to),
        WalCommand::Inspect { dir, .. } => inspect(&dir),
        WalCommand::Verify { dir } => verify(&dir),
        WalCommand::Repair { dir } => repair(&dir),
        WalCommand::Skip(args) => skip(&args),
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
    match &report.synced_end {
        Some(m) => println!(
            "synced end: records below {} were fsynced (segment {}, byte {}); the log must hold them",
            m.end_lsn,
            m.segment_first,
            m.offset
        ),
        None => println!("synced end: no marker (written when weir next opens the log)"),
    }
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

/// A record's bytes for a terminal: a JSON string if UTF-8, else b"...".
fn escaped(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(s) => serde_json::to_string(s).unwrap_or_default(),
        Err(_) => format!("b\"{}\"", payload.escape_ascii()),
    }
}

fn inspect_range(dir: &Path, range: std::ops::Range<u64>) -> crate::Result<ExitCode> {
    require_dir(dir)?;
    let reached = wal::read_range(&RealFs, dir, range.clone(), |lsn, bytes| {
        // An ingest stream's record: its (producer, sequence) header, then
        // the payload the producer sent.
        match crate::ingest::records::decode_stored(bytes) {
            Ok(r) => println!(
                "{lsn}\t{}\tproducer {} seq {}",
                escaped(r.payload),
                escaped(r.producer),
                r.seq
            ),
            Err(_) => println!("{lsn}\t{}", escaped(bytes)),
        }
    })?;
    if reached < range.end {
        println!(
            "the log holds no records from {reached} on in this range (it ends there, or was cut: `weir wal verify {}` tells which)",
            dir.display()
        );
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

/// Who runs this and where, as far as cheaply known.
fn who() -> (String, String) {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    (user, host)
}

fn skip(a: &SkipArgs) -> crate::Result<ExitCode> {
    let usage = |m: String| Err(crate::Error::Usage(m));
    if a.from >= a.to {
        return usage(format!(
            "--from {} --to {} is an empty range: --to is exclusive (--from 4 --to 5 skips record 4)",
            a.from, a.to
        ));
    }
    crate::names::validate_stream_name(&a.stream)
        .map_err(|e| crate::Error::Usage(format!("--stream: {e}")))?;
    let dir = crate::layout::wal_dir(&a.data_dir, &a.stream);
    // Locked while weir runs: refused with the lock's error.
    let mut store = crate::checkpoint::open_existing(&a.data_dir)?;
    let committed = store
        .completed()?
        .iter()
        .flat_map(|b| b.ranges.iter())
        .filter(|r| r.source == a.stream)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    if a.from < committed {
        return usage(format!(
            "records {}..{} of stream `{}`: records below {committed} are already committed (processed), there is nothing to skip there; skip only records from {committed} on",
            a.from, a.to, a.stream
        ));
    }
    if dir.is_dir() {
        let end = wal::verify_dir(&RealFs, &dir)?.end_lsn().unwrap_or(0);
        if a.to > end {
            return usage(format!(
                "records {}..{} of stream `{}`: the log ends at record {end}; a range past the end would skip records not yet received",
                a.from, a.to, a.stream
            ));
        }
    } else {
        // A stream without a local log (a JetStream partition): only
        // positions some batch already allocated can be skipped.
        use crate::checkpoint::CheckpointStore;
        let allocated = store
            .pending()?
            .iter()
            .chain(store.completed()?.iter())
            .flat_map(|b| b.ranges.iter())
            .filter(|r| r.source == a.stream)
            .map(|r| r.end)
            .max();
        let Some(end) = allocated else {
            return usage(format!(
                "stream `{}` has no log in {} and no batch of it in the checkpoint: check the name (`weir checkpoint show` lists the streams)",
                a.stream,
                dir.display()
            ));
        };
        if a.from > end {
            return usage(format!(
                "records {}..{} of stream `{}`: batches were allocated up to {end} only; skip from a position a batch allocated",
                a.from, a.to, a.stream
            ));
        }
        if a.to > end {
            // A JetStream gap: sequences retention removed, past what
            // batches allocated so far; later batches skip them too.
            println!(
                "note: records {end}..{} of stream `{}` are past what batches allocated so far; later batches will not read them either",
                a.to, a.stream
            );
        }
    }
    let (user, host) = who();
    let r = crate::checkpoint::SkipRecordV1 {
        stream: a.stream.clone(),
        from: a.from,
        to: a.to,
        reason: a.reason.clone(),
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        user,
        host,
    };
    store.add_skip(&r)?;
    println!(
        "skipped records {}..{} of stream `{}` ({} records): they are never fed to the pipeline; audit: {}",
        a.from,
        a.to,
        a.stream,
        a.to - a.from,
        skip_line(&r)
    );
    Ok(ExitCode::SUCCESS)
}

/// One skip record as `weir checkpoint show` prints it.
pub fn skip_line(r: &crate::checkpoint::SkipRecordV1) -> String {
    format!(
        "stream `{}` records {}..{} skipped at {} ms since the epoch by {}@{}: {}",
        r.stream, r.from, r.to, r.time_ms, r.user, r.host, r.reason
    )
}
