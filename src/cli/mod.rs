//! The `weir` command line: the clap definitions of the top level and the
//! dispatch to one file per command group (`service.rs`: run, check,
//! status, chaos; `wal.rs`; `checkpoint.rs`; `kv.rs`; `feed.rs`;
//! `dead_letter.rs`).
//!
//! Owns: argument parsing, log setup, printing and exit codes (0 ok, 1 a
//! failed check or any error, 2 a usage mistake clap reports).
//! Limits: none of its own; every figure it prints comes from the library.
//! Must never: hold engine logic (each command parses, calls one library
//! function and prints what it returns), or carry hidden test helpers
//! (those live in the `weir-testkit` binary, feature `testing`).

mod checkpoint;
mod dead_letter;
mod feed;
mod kv;
mod service;
mod wal;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use checkpoint::CheckpointCommand;
use dead_letter::DeadLetterCommand;
use feed::FeedArgs;
use kv::KvCommand;
use service::{ChaosArgs, CheckArgs, RunArgs};
use wal::WalCommand;

#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    about = "A crash-safe micro-batch stream processor"
)]
pub(crate) struct Cli {
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
pub(crate) enum Command {
    /// Run a pipeline as a service until stopped (SIGTERM / SIGINT: drain,
    /// commit, exit 0; SIGHUP is logged, nothing is reloaded). Without PIPELINE (or with --demo) it runs the
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
    /// file:line:column, the key and a hint if it is wrong. With
    /// --data-dir, also check it against that directory's checkpoint as a
    /// start would (exit 1 naming a changed stateful step); it reads a
    /// copy of the checkpoint and writes nothing there.
    ///
    /// Examples:
    ///   weir check /etc/weir/pipeline.toml
    ///   weir check --data-dir /var/lib/weir /etc/weir/pipeline.toml
    #[command(verbatim_doc_comment)]
    Check(CheckArgs),
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
    ///
    /// Over TLS with a token (a server off this machine):
    /// weir feed ingest.example:7070 events.log --producer host-a
    /// --tls-ca ca.pem --token-file ~/.weir-token
    Feed(FeedArgs),
    /// Read a key-value table (written by `save_to_kv`) of a stopped data
    /// directory.
    #[command(subcommand)]
    Kv(KvCommand),
    /// List the records steps dead-lettered (on_error = "dead_letter"),
    /// or print them for `weir feed` to send again.
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
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
        Command::Run(args) => service::run(args),
        Command::Check(args) => service::check(&args),
        Command::Status { data_dir } => service::status(&data_dir),
        Command::Chaos(args) => service::chaos(args),
        Command::Wal(cmd) => wal::run(cmd),
        Command::Checkpoint(cmd) => checkpoint::run(cmd),
        Command::Feed(args) => feed::run(args),
        Command::Kv(cmd) => kv::run(cmd),
        Command::DeadLetter(cmd) => dead_letter::run(cmd),
    };
    exit_code(result)
}

/// The exit code of a command's result; an error is printed as
/// `error: MESSAGE` on stderr.
pub fn exit_code(result: crate::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends logs to stderr in `format`, at `$WEIR_LOG` or else
/// `default_level`. A second call does nothing.
pub fn init_tracing(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let b = crate::service::log_format(default_level);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}
