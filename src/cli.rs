//! The `weir` command line: parses arguments and calls into the library.
//! It holds no engine logic; every subcommand is a thin wrapper.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::wal::{self, RealFs, Wal, WalConfig};

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A crash-safe micro-batch stream processor"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, verify or repair a write-ahead log directory.
    #[command(subcommand)]
    Wal(WalCommand),
}

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
    /// Test helper: append numbered records from THREADS threads until
    /// killed, printing `ack THREAD SEQ` after each acknowledged append.
    #[command(hide = true)]
    Torture {
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 4096)]
        segment_bytes_max: u64,
        #[arg(long, default_value_t = 1000)]
        appends_max: u64,
    },
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Wal(WalCommand::Inspect { dir }) => inspect(&dir),
        Command::Wal(WalCommand::Verify { dir }) => verify(&dir),
        Command::Wal(WalCommand::Repair { dir }) => repair(&dir),
        Command::Wal(WalCommand::Torture {
            dir,
            threads,
            segment_bytes_max,
            appends_max,
        }) => torture(&dir, threads, segment_bytes_max, appends_max),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn require_dir(dir: &Path) -> Result<(), crate::Error> {
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

fn print_problem(p: &wal::Problem) {
    println!(
        "CORRUPT: {} at byte {}: {} (record {} onwards is affected)",
        p.path.display(),
        p.offset,
        p.detail,
        p.lsn
    );
}

fn inspect(dir: &Path) -> Result<ExitCode, crate::Error> {
    require_dir(dir)?;
    let report = wal::verify_dir(&RealFs, dir)?;
    print_segments(&report);
    if let Some(p) = &report.problem {
        print_problem(p);
        println!("segments after the problem were not inspected; run `weir wal repair {}` to cut the log there", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path) -> Result<ExitCode, crate::Error> {
    require_dir(dir)?;
    let report = wal::verify_dir(&RealFs, dir)?;
    print_segments(&report);
    match &report.problem {
        None => {
            println!("ok: every frame checked");
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            print_problem(p);
            println!(
                "to go on: stop weir, back up {}, then run `weir wal repair {}`; it moves the damaged part aside and reports what it held",
                dir.display(),
                dir.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn repair(dir: &Path) -> Result<ExitCode, crate::Error> {
    require_dir(dir)?;
    let r = wal::repair_dir(&RealFs, dir)?;
    match (&r.problem, &r.quarantine) {
        (Some(p), Some(q)) => {
            print_problem(p);
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

/// Appends `w{thread}:{seq}:` records forever (or `appends_max` per thread).
/// On start it scans the log to continue each thread's sequence after the
/// highest one present, so sequences stay gap-free across kills.
fn torture(
    dir: &Path,
    threads: usize,
    segment_bytes_max: u64,
    appends_max: u64,
) -> Result<ExitCode, crate::Error> {
    use std::io::Write;
    let config = WalConfig {
        segment_bytes_max,
        record_bytes_max: 256,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open_with(Arc::new(RealFs), dir, config)?;
    let mut next = vec![0u64; threads];
    wal.read(wal.first_lsn()..wal.end())?.for_each_ref(|_, p| {
        if let Some((t, seq)) = parse_torture_record(p) {
            if t < threads {
                next[t] = next[t].max(seq + 1);
            }
        }
    })?;
    let wal = Arc::new(wal);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut handles = Vec::new();
    for (t, start) in next.into_iter().enumerate() {
        let wal = Arc::clone(&wal);
        let out = Arc::clone(&out);
        handles.push(std::thread::spawn(move || -> Result<(), crate::Error> {
            let mut seq = start;
            for _ in 0..appends_max {
                let n = 1 + (seq % 7) as usize;
                let recs: Vec<String> = (0..n)
                    .map(|i| {
                        format!(
                            "w{t}:{}:{}",
                            seq + i as u64,
                            "x".repeat((seq as usize * 13 + i) % 90)
                        )
                    })
                    .collect();
                wal.append(&recs)?;
                seq += n as u64;
                let mut o = out.lock().expect("stdout lock poisoned");
                writeln!(o, "ack {t} {}", seq - 1)
                    .map_err(|e| crate::Error::Usage(e.to_string()))?;
                o.flush().map_err(|e| crate::Error::Usage(e.to_string()))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| crate::Error::Usage("an appender thread panicked".into()))??;
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a record written by `weir wal torture`: `w{thread}:{seq}:{pad}`.
pub fn parse_torture_record(p: &[u8]) -> Option<(usize, u64)> {
    let s = std::str::from_utf8(p).ok()?;
    let mut it = s.strip_prefix('w')?.splitn(3, ':');
    let t = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((t, seq))
}
