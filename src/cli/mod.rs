//! The `weir` command line: parses arguments and calls into the library.
//! It holds no engine logic; every subcommand is a thin wrapper.

use std::net::SocketAddr;
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
    /// Log format on stderr: `text` (human-readable) or `json` (one object
    /// per line, for journald or a log shipper). Level: $WEIR_LOG (e.g.
    /// `info`, `weir=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// JSON objects, one per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline as a service until stopped (SIGTERM / SIGINT: drain,
    /// commit, exit 0). Without PIPELINE (or with --demo) it runs the
    /// embedded demo: the tweet pipeline on the bundled generator, data in
    /// ./weir-data, each batch printed.
    ///
    /// Examples:
    ///   weir run                                  # the demo, until Ctrl-C
    ///   weir run --batches 5                      # the demo, five batches
    ///   weir run /etc/weir/pipeline.toml --data-dir /var/lib/weir
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Validate a pipeline file and print its graph (sources, steps with
    /// the kind of records they make, stateful names, sinks). Exit 1 with
    /// file:line:column, the key and a hint if it is wrong.
    ///
    /// Example: weir check /etc/weir/pipeline.toml
    Check {
        /// The pipeline file (TOML); with --demo, the embedded demo.
        #[arg(required_unless_present = "demo")]
        pipeline: Option<PathBuf>,
        /// Check the embedded demo pipeline.
        #[arg(long)]
        demo: bool,
    },
    /// Crash-test a pipeline yourself: run one (ingest server -> one text
    /// file per batch), feed numbered records with `weir feed`, SIGKILL the
    /// service at random moments N times (or `systemctl kill` a unit),
    /// restart it, and check every record is in the output exactly once.
    /// Prints `kills: K, records: R, lost: L, duplicated: D, ...`; exit 1
    /// unless nothing was lost or duplicated.
    ///
    /// Examples:
    ///   weir chaos --kills 10 --records 100000
    ///   weir chaos --systemd weir --ingest 127.0.0.1:7070 --out /var/lib/weir/out
    #[command(verbatim_doc_comment)]
    Chaos(ChaosArgs),
    /// Show a stopped service's data directory: last committed batch,
    /// pending batches, state keys per operator, each input log's size,
    /// segments and backlog. Exit 1 if a log is damaged. (A running
    /// service holds the checkpoint lock: read its /status instead.)
    ///
    /// Example: weir status /var/lib/weir
    Status { data_dir: PathBuf },
    /// Inspect, verify or repair a write-ahead log directory.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Inspect or repair the checkpoint (batch lineage and operator state)
    /// of a data directory.
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Send the lines of FILE (or standard input) to an ingest server as one
    /// producer. Line N (from 0) is record N, so running it again with the
    /// same input and producer resumes where the server is. Reconnects after
    /// failures; exits 0 only when every line is acknowledged (durable).
    ///
    /// Example: weir feed 127.0.0.1:7070 events.log --producer host-a
    Feed {
        /// The ingest server's address (host:port).
        addr: String,
        /// The input file; `-` or nothing for standard input.
        file: Option<PathBuf>,
        /// This producer's id (1..=64 bytes by default); the server keeps
        /// its position per id.
        #[arg(long)]
        producer: String,
        /// Give up after this many seconds without a new acknowledgement.
        #[arg(long, default_value_t = 120)]
        retry_secs: u64,
        /// Most unacknowledged records held in memory.
        #[arg(long, default_value_t = 65_536)]
        window_records: usize,
        /// Progress display: auto (a bar on a terminal, plain lines
        /// otherwise), bar, lines or none.
        #[arg(long, default_value = "auto")]
        progress: String,
    },
    /// Test helper: an ingest stream `input` listening on LISTEN_ADDR, each
    /// batch's records saved as OUT_DIR/records-<ms>.txt, run on DATA_DIR
    /// until killed, or with --drain until every logged record is processed
    /// (receiving stops at once). Writes the bound address to
    /// DATA_DIR/ingest.addr.
    #[command(hide = true)]
    TestIngestPipeline {
        data_dir: PathBuf,
        listen_addr: SocketAddr,
        out_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 97)]
        batch_records_max: u64,
        /// The stream's rate limit (records/s).
        #[arg(long)]
        records_per_second: Option<u64>,
        #[arg(long)]
        drain: bool,
    },
    /// Read a key-value table (written by `save_to_kv`) of a stopped data
    /// directory.
    #[command(subcommand)]
    Kv(KvCommand),
    /// Test helper: runs the crash tests' stateful word count on DATA_DIR
    /// (input log `DATA_DIR/wal/input`, outputs in `DATA_DIR/out`) until
    /// killed, or with --drain until every logged record is processed.
    #[command(hide = true)]
    TestPipeline {
        data_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 37)]
        batch_records_max: u64,
        #[arg(long)]
        drain: bool,
    },
    /// Test helper: text_file_stream("files", IN_DIR) → save_as_text_files
    /// (OUT_DIR/lines-<ms>.txt) on DATA_DIR, until killed (the crash test
    /// of directory streams).
    #[command(hide = true)]
    TestDirPipeline {
        data_dir: PathBuf,
        in_dir: PathBuf,
        out_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 100)]
        lines_per_chunk: usize,
        #[arg(long, default_value_t = 20)]
        scan_interval_ms: u64,
    },
}

/// Arguments of `weir chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// SIGKILLs to deliver.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Numbered records to feed.
    #[arg(long, default_value_t = 20_000)]
    pub records: u64,
    /// Seed of the kill moments (the same seed, the same pauses).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest pause between kills, ms.
    #[arg(long, default_value_t = 1500)]
    pub pause_ms_max: u64,
    /// Working directory (default: a new one under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Torment this systemd unit instead (`systemctl kill --signal=SIGKILL`);
    /// needs --ingest and --out.
    #[arg(long, value_name = "UNIT")]
    pub systemd: Option<String>,
    /// The unit's ingest source address (with --systemd).
    #[arg(long, value_name = "ADDR")]
    pub ingest: Option<String>,
    /// Where the unit's text files go (with --systemd).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Arguments of `weir run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (TOML). Leave out for the embedded demo.
    pub pipeline: Option<PathBuf>,
    /// Run the embedded demo pipeline (also the default without a file).
    #[arg(long, conflicts_with = "pipeline")]
    pub demo: bool,
    /// Data directory (WAL, checkpoint, relative sink paths). Default:
    /// pipeline.data_dir, else $STATE_DIRECTORY, else ./weir-data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Stop gracefully after N new batches (for tests and CI).
    #[arg(long, value_name = "N")]
    pub batches: Option<u64>,
    /// Status endpoint address (loopback), or `off`. Default: the file's
    /// service.http_address, else 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub http_address: Option<String>,
}

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

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the value of KEY in TABLE (exit 1 if absent).
    ///
    /// Example: weir kv get /var/lib/weir totals hello
    Get {
        data_dir: PathBuf,
        table: String,
        key: String,
        /// How KEY is typed: string, u64, i64, f64 or hex (encoded bytes).
        #[arg(long, default_value = "string")]
        key_as: crate::sink::kv::Shape,
        /// How values are shown: auto, string, u64, i64, f64 or hex.
        #[arg(long, default_value = "auto")]
        value_as: crate::sink::kv::Shape,
    },
    /// Print every entry of TABLE, one `key<TAB>value` line each, sorted.
    ///
    /// Example: weir kv scan /var/lib/weir totals --value-as u64
    Scan {
        data_dir: PathBuf,
        table: String,
        /// How keys are shown: string, u64, i64, f64 or hex.
        #[arg(long, default_value = "string")]
        key_as: crate::sink::kv::Shape,
        /// How values are shown: auto, string, u64, i64, f64 or hex.
        #[arg(long, default_value = "auto")]
        value_as: crate::sink::kv::Shape,
    },
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
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    init_tracing(cli.log_format, default_level);
    let result = match cli.command {
        Command::Run(args) => service_run(args),
        Command::Check { pipeline, demo } => service_check(pipeline.as_deref(), demo),
        Command::Status { data_dir } => service_status(&data_dir),
        Command::Chaos(args) => service_chaos(args),
        Command::Wal(WalCommand::Inspect { dir }) => inspect(&dir),
        Command::Wal(WalCommand::Verify { dir }) => verify(&dir),
        Command::Wal(WalCommand::Repair { dir }) => repair(&dir),
        Command::TestPipeline {
            data_dir,
            interval_ms,
            batch_records_max,
            drain,
        } => test_pipeline(&data_dir, interval_ms, batch_records_max, drain),
        Command::Feed {
            addr,
            file,
            producer,
            retry_secs,
            window_records,
            progress,
        } => feed(
            &addr,
            file.as_deref(),
            producer,
            retry_secs,
            window_records,
            &progress,
        ),
        Command::TestIngestPipeline {
            data_dir,
            listen_addr,
            out_dir,
            interval_ms,
            batch_records_max,
            records_per_second,
            drain,
        } => test_ingest_pipeline(
            &data_dir,
            listen_addr,
            &out_dir,
            (interval_ms, batch_records_max, records_per_second),
            drain,
        ),
        Command::TestDirPipeline {
            data_dir,
            in_dir,
            out_dir,
            interval_ms,
            lines_per_chunk,
            scan_interval_ms,
        } => test_dir_pipeline(
            &data_dir,
            &in_dir,
            &out_dir,
            interval_ms,
            lines_per_chunk,
            scan_interval_ms,
        ),
        Command::Checkpoint(CheckpointCommand::Show { data_dir }) => checkpoint_show(&data_dir),
        Command::Checkpoint(CheckpointCommand::ResetOperator { data_dir, operator }) => {
            checkpoint_reset(&data_dir, &operator)
        }
        Command::Kv(KvCommand::Get {
            data_dir,
            table,
            key,
            key_as,
            value_as,
        }) => kv_get(&data_dir, &table, &key, key_as, value_as),
        Command::Kv(KvCommand::Scan {
            data_dir,
            table,
            key_as,
            value_as,
        }) => kv_scan(&data_dir, &table, key_as, value_as),
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

fn init_tracing(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
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

fn test_dir_pipeline(
    data_dir: &Path,
    in_dir: &Path,
    out_dir: &Path,
    interval_ms: u64,
    lines_per_chunk: usize,
    scan_interval_ms: u64,
) -> Result<ExitCode, crate::Error> {
    let ssc = crate::StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(std::time::Duration::from_millis(interval_ms))
            .parallelism(2)
            .build()?;
        let config = crate::receiver::DirConfig {
            lines_per_chunk_max: lines_per_chunk,
            scan_interval: std::time::Duration::from_millis(scan_interval_ms),
            ..crate::receiver::DirConfig::default()
        };
        let (lines, _) = ssc.text_file_stream_with("files", in_dir, config)?;
        lines.save_as_text_files(&out_dir.join("lines").display().to_string(), "txt")?;
        Ok(ssc)
    })?;
    ssc.start()?;
    ssc.await_termination()?;
    Ok(ExitCode::SUCCESS)
}

fn test_pipeline(
    data_dir: &Path,
    interval_ms: u64,
    batch_records_max: u64,
    drain: bool,
) -> Result<ExitCode, crate::Error> {
    let out = data_dir.join("out");
    let ssc = crate::StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(std::time::Duration::from_millis(interval_ms))
            .batch_records_max(batch_records_max)
            .parallelism(2)
            .build()?;
        crate::pipelines::stateful_wordcount(&ssc, &out)?;
        Ok(ssc)
    })?;
    run_until_killed_or_drained(&ssc, drain)
}

/// Starts a test pipeline; with `drain`, stops gracefully at once (receivers
/// first, then batches until every source is drained), else runs until
/// killed.
fn run_until_killed_or_drained(
    ssc: &crate::StreamingContext,
    drain: bool,
) -> Result<ExitCode, crate::Error> {
    ssc.start()?;
    if drain {
        ssc.stop(true)?;
    } else {
        ssc.await_termination()?;
    }
    Ok(ExitCode::SUCCESS)
}

fn feed(
    addr: &str,
    file: Option<&Path>,
    producer: String,
    retry_secs: u64,
    window_records: usize,
    progress: &str,
) -> Result<ExitCode, crate::Error> {
    use crate::receiver::feed::{FeedConfig, Progress};
    use std::io::IsTerminal;
    use std::net::ToSocketAddrs;
    let sock = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            crate::Error::Usage(format!(
                "`{addr}` is not an address: give host:port, e.g. 127.0.0.1:7070"
            ))
        })?;
    let mut cfg = FeedConfig::new(producer);
    cfg.retry_time_max = std::time::Duration::from_secs(retry_secs);
    cfg.window_records_max = window_records.max(1);
    cfg.progress = match progress {
        "auto" if std::io::stderr().is_terminal() => Progress::Bar,
        "auto" | "lines" => Progress::Lines,
        "bar" => Progress::Bar,
        "none" => Progress::Quiet,
        other => {
            return Err(crate::Error::Usage(format!(
                "--progress {other}: use auto, bar, lines or none"
            )))
        }
    };
    let report = match file {
        None => crate::receiver::feed::feed(sock, std::io::stdin().lock(), cfg)?,
        Some(p) if p.as_os_str() == "-" => {
            crate::receiver::feed::feed(sock, std::io::stdin().lock(), cfg)?
        }
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| crate::Error::Usage(format!("cannot open {}: {e}", p.display())))?;
            cfg.input_bytes = f.metadata().ok().map(|m| m.len());
            crate::receiver::feed::feed(sock, f, cfg)?
        }
    };
    println!(
        "done: {} records acknowledged ({} sent now, {} the server already had), {} connections",
        report.records, report.records_sent, report.records_skipped, report.connections
    );
    Ok(ExitCode::SUCCESS)
}

fn test_ingest_pipeline(
    data_dir: &Path,
    listen_addr: SocketAddr,
    out_dir: &Path,
    (interval_ms, batch_records_max, records_per_second): (u64, u64, Option<u64>),
    drain: bool,
) -> Result<ExitCode, crate::Error> {
    let mut addr = None;
    let ssc = crate::StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(std::time::Duration::from_millis(interval_ms))
            .batch_records_max(batch_records_max)
            .parallelism(2)
            // Small segments, so cleanup (and the producer table
            // snapshot before it) runs often; records fit the ingest limit
            // plus its stored header.
            .wal_config(WalConfig {
                segment_bytes_max: 128 << 10,
                record_bytes_max: 70_000,
                ..WalConfig::default()
            })
            .build()?;
        let mut cfg = crate::receiver::ingest::IngestConfig::new(listen_addr);
        cfg.records_per_second_max = records_per_second;
        let s = ssc.ingest_stream_with("input", cfg, crate::receiver::ingest::payload_utf8)?;
        addr = Some(s.local_addr);
        s.stream
            .save_as_text_files(&out_dir.join("records").display().to_string(), "txt")?;
        Ok(ssc)
    })?;
    if let Some(a) = addr {
        crate::sink::write_atomic(&data_dir.join("ingest.addr"), format!("{a}\n").as_bytes())?;
    }
    run_until_killed_or_drained(&ssc, drain)
}

fn checkpoint_show(data_dir: &Path) -> Result<ExitCode, crate::Error> {
    use crate::scheduler::CheckpointStore;
    let store = crate::checkpoint::open_existing(data_dir)?;
    let ck = |e| crate::Error::from(crate::scheduler::SchedulerError::from(e));
    match store.pipeline().map_err(ck)? {
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
    match store.last_allocated().map_err(ck)? {
        None => println!("batches: none yet"),
        Some(b) => println!("last allocated batch: {} ms {:?}", b.time_ms, b.ranges),
    }
    for b in store.pending().map_err(ck)? {
        println!(
            "pending (re-run at next start): {} ms {:?}",
            b.time_ms, b.ranges
        );
    }
    for (op, n) in store.state_sizes().map_err(ck)? {
        println!("state `{op}`: {n} keys");
    }
    Ok(ExitCode::SUCCESS)
}

fn checkpoint_reset(data_dir: &Path, operator: &str) -> Result<ExitCode, crate::Error> {
    let mut store = crate::checkpoint::open_existing(data_dir)?;
    let n = store
        .reset_operator(operator)
        .map_err(|e| crate::Error::from(crate::scheduler::SchedulerError::from(e)))?;
    println!(
        "reset operator `{operator}`: removed {n} state keys; it starts empty at the next start"
    );
    Ok(ExitCode::SUCCESS)
}

fn kv_get(
    data_dir: &Path,
    table: &str,
    key: &str,
    key_as: crate::sink::kv::Shape,
    value_as: crate::sink::kv::Shape,
) -> Result<ExitCode, crate::Error> {
    use crate::sink::kv;
    let t = kv::RawTable::open(data_dir, table)?;
    match t.get(&kv::encode_key(key, key_as)?)? {
        Some(v) => {
            println!("{}", kv::show_bytes(&v, value_as));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no key `{key}` in table `{table}`");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn kv_scan(
    data_dir: &Path,
    table: &str,
    key_as: crate::sink::kv::Shape,
    value_as: crate::sink::kv::Shape,
) -> Result<ExitCode, crate::Error> {
    use crate::sink::kv;
    let t = kv::RawTable::open(data_dir, table)?;
    for (k, v) in kv::show_sorted(t.scan()?, key_as, value_as) {
        println!("{k}\t{v}");
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

// ---- service subcommands: run, check, status (src/service/) ----------

fn load_pipeline(
    file: Option<&Path>,
    demo: bool,
) -> Result<crate::service::Pipeline, crate::Error> {
    match file {
        Some(f) if !demo => Ok(crate::service::config::load(f)?),
        _ => Ok(crate::service::config::parse(
            "<embedded demo>",
            crate::service::DEMO_TOML,
            Path::new("."),
        )
        .map_err(crate::service::ServiceError::from)?),
    }
}

fn service_check(file: Option<&Path>, demo: bool) -> Result<ExitCode, crate::Error> {
    let p = load_pipeline(file, demo)?;
    print!("{}", crate::service::describe(&p));
    println!("ok: the pipeline is valid");
    Ok(ExitCode::SUCCESS)
}

fn service_run(args: RunArgs) -> Result<ExitCode, crate::Error> {
    use crate::service::{self, ServiceOptions};
    let p = load_pipeline(args.pipeline.as_deref(), args.demo)?;
    let data_dir = service::data_dir_for(&p, args.data_dir.as_deref());
    let http_address = match args.http_address.as_deref() {
        None => p.settings.http_address,
        Some("off") => None,
        Some(a) => Some(a.parse().map_err(|_| {
            crate::Error::Usage(format!(
                "--http-address {a}: expected an address such as 127.0.0.1:9464, or off"
            ))
        })?),
    };
    tracing::info!(pipeline = %p.file, data_dir = %data_dir.display(), "starting");
    // Signals are caught before the (possibly slow) build, so a stop that
    // arrives meanwhile is a clean stop.
    let svc = service::Service::new()?;
    let (ssc, compiled) = service::build(&p, &data_dir, Arc::new(crate::SystemClock))?;
    let report = svc.run(
        ssc,
        ServiceOptions {
            http_address,
            batches_max: args.batches,
            compiled: Some(compiled),
            ..ServiceOptions::default()
        },
    )?;
    tracing::info!(
        batches = report.batches,
        records = report.records,
        signal = report.signal.unwrap_or("none"),
        "exiting"
    );
    Ok(ExitCode::SUCCESS)
}

fn service_chaos(a: ChaosArgs) -> Result<ExitCode, crate::Error> {
    let dir = match a.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("weir-chaos-{}", std::process::id())),
    };
    println!("chaos: working in {}", dir.display());
    let report = crate::service::chaos::run(&crate::service::chaos::ChaosConfig {
        kills: a.kills,
        records: a.records,
        seed: a.seed,
        dir,
        systemd_unit: a.systemd,
        ingest_addr: a.ingest,
        out_dir: a.out,
        pause_ms_max: a.pause_ms_max,
    })?;
    println!("{report}");
    if report.lost == 0 && report.duplicated == 0 && report.foreign == 0 {
        println!("ok: every record exactly once");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAILED: records lost or duplicated; keep the working directory for a bug report");
        Ok(ExitCode::FAILURE)
    }
}

fn service_status(data_dir: &Path) -> Result<ExitCode, crate::Error> {
    use crate::scheduler::CheckpointStore;
    let store = crate::checkpoint::open_existing(data_dir).map_err(|e| {
        crate::Error::Usage(format!(
            "{e}\n(if weir is running on {}, it holds the checkpoint lock: read its status endpoint, GET /status or /metrics)",
            data_dir.display()
        ))
    })?;
    let ck = |e| crate::Error::from(crate::scheduler::SchedulerError::from(e));
    let completed = store.completed().map_err(ck)?;
    let last = completed.last();
    match last {
        None => println!("last committed batch: none"),
        Some(b) => println!("last committed batch: {} ms", b.time_ms),
    }
    let pending = store.pending().map_err(ck)?;
    if pending.is_empty() {
        println!("pending batches: none");
    }
    for b in &pending {
        println!(
            "pending batch (re-run at next start): {} ms {:?}",
            b.time_ms, b.ranges
        );
    }
    for (op, n) in store.state_sizes().map_err(ck)? {
        println!("state `{op}`: {n} keys");
    }
    let mut damaged = false;
    let wal_root = data_dir.join("wal");
    let mut streams: Vec<PathBuf> = match std::fs::read_dir(&wal_root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    streams.sort();
    if streams.is_empty() {
        println!("input logs: none (generator sources need none)");
    }
    for dir in streams {
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let report = wal::verify_dir(&RealFs, &dir)?;
        let committed = last
            .and_then(|b| b.ranges.iter().find(|r| r.source == name))
            .map_or(report.first_lsn().unwrap_or(0), |r| r.end);
        let end = report.end_lsn().unwrap_or(0);
        println!(
            "log `{name}`: {} segments, {} bytes, records {}..{}, backlog {} records",
            report.segments.len(),
            report.bytes(),
            report.first_lsn().unwrap_or(0),
            end,
            end.saturating_sub(committed)
        );
        if let Some(p) = &report.problem {
            print_problem(p);
            damaged = true;
        }
    }
    if damaged {
        println!("a log is damaged: see `weir wal verify` and docs/operations.md (repair)");
        return Ok(ExitCode::FAILURE);
    }
    if pending.is_empty() {
        println!("clean: every allocated batch is committed");
    }
    Ok(ExitCode::SUCCESS)
}
