//! `weir-testkit`: the test helpers the real-process kill tests spawn (the
//! commands `weir` once hid). Built only with the feature `testing`
//! (`cargo test` turns it on; `cargo build` leaves this binary out), and
//! never installed: tests reach it as `env!("CARGO_BIN_EXE_weir-testkit")`.
//!
//! Owns: the arguments of the helpers; the work is in `weir::testing`.
//! Limits: those of `weir::testing`.
//! Must never: be needed by a user, or grow commands a user would want
//! (those belong in `weir`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weir::cli::LogFormat;
use weir::testing::{self, DirPipelineConfig, IngestPipelineConfig, TortureConfig};

#[derive(Debug, Parser)]
#[command(
    name = "weir-testkit",
    about = "Test helpers of weir's real-process kill tests (not for users)"
)]
struct Cli {
    /// Log format on stderr: `text` or `json`. Level: $WEIR_LOG (default
    /// `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write-ahead log helpers.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Runs the crash tests' stateful word count on DATA_DIR (input log
    /// `DATA_DIR/wal/input`, outputs in `DATA_DIR/out`) until killed, or
    /// with --drain until every logged record is processed.
    TestPipeline {
        data_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 37)]
        batch_records_max: u64,
        #[arg(long)]
        drain: bool,
    },
    /// text_file_stream("files", IN_DIR) → save_as_text_files
    /// (OUT_DIR/lines-<ms>.txt) on DATA_DIR, until killed (the crash test
    /// of directory streams).
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
    /// An ingest stream `input` listening on LISTEN_ADDR, each batch's
    /// records saved as OUT_DIR/records-<ms>.txt, run on DATA_DIR until
    /// killed, or with --drain until every logged record is processed
    /// (receiving stops at once). Writes the bound address to
    /// DATA_DIR/ingest.addr.
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
        /// Local partitions of the stream.
        #[arg(long, default_value_t = 1)]
        partitions: usize,
        #[arg(long)]
        drain: bool,
    },
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Append numbered records from THREADS threads until killed, printing
    /// `ack THREAD SEQ` after each acknowledged append.
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

fn run(command: Command) -> weir::Result<()> {
    match command {
        Command::Wal(WalCommand::Torture {
            dir,
            threads,
            segment_bytes_max,
            appends_max,
        }) => {
            let cfg = TortureConfig {
                threads,
                segment_bytes_max,
                appends_max,
            };
            testing::torture(&dir, cfg, std::io::stdout())
        }
        Command::TestPipeline {
            data_dir,
            interval_ms,
            batch_records_max,
            drain,
        } => testing::wordcount_pipeline(&data_dir, interval_ms, batch_records_max, drain),
        Command::TestDirPipeline {
            data_dir,
            in_dir,
            out_dir,
            interval_ms,
            lines_per_chunk,
            scan_interval_ms,
        } => {
            let cfg = DirPipelineConfig {
                interval_ms,
                lines_per_chunk,
                scan_interval_ms,
            };
            testing::dir_pipeline(&data_dir, &in_dir, &out_dir, cfg)
        }
        Command::TestIngestPipeline {
            data_dir,
            listen_addr,
            out_dir,
            interval_ms,
            batch_records_max,
            records_per_second,
            partitions,
            drain,
        } => {
            let cfg = IngestPipelineConfig {
                interval_ms,
                batch_records_max,
                records_per_second,
                partitions,
                drain,
            };
            testing::ingest_pipeline(&data_dir, listen_addr, &out_dir, cfg)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weir::cli::init_tracing(cli.log_format, "warn");
    weir::cli::exit_code(run(cli.command).map(|()| ExitCode::SUCCESS))
}
