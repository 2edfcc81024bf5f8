//! `weir feed ADDR [FILE|-] --producer ID`: send lines to an ingest server
//! as one producer (a thin wrapper over `ingest::client`, which resumes,
//! reconnects and waits for every acknowledgement).
//!
//! Owns: the arguments, the choice of progress display, the final line.
//! Limits: defaults `--retry-secs 120`, `--window-records 65536` (at least
//! 1); the client's own limits are in `ingest::client`.
//! Must never: hold protocol logic.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::ingest::{FeedConfig, Progress};

/// Arguments of `weir feed`.
#[derive(Debug, clap::Args)]
pub struct FeedArgs {
    /// The ingest server's address (host:port).
    pub addr: String,
    /// The input file; `-` or nothing for standard input.
    pub file: Option<PathBuf>,
    /// This producer's id (1..=64 bytes by default); the server keeps
    /// its position per id.
    #[arg(long)]
    pub producer: String,
    /// Give up after this many seconds without a new acknowledgement.
    #[arg(long, default_value_t = 120)]
    pub retry_secs: u64,
    /// Most unacknowledged records held in memory.
    #[arg(long, default_value_t = 65_536)]
    pub window_records: usize,
    /// Progress display: auto (a bar on a terminal, plain lines
    /// otherwise), bar, lines or none.
    #[arg(long, default_value = "auto")]
    pub progress: String,
}

fn socket_addr(addr: &str) -> crate::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            crate::Error::Usage(format!(
                "`{addr}` is not an address: give host:port, e.g. 127.0.0.1:7070"
            ))
        })
}

fn progress(name: &str) -> crate::Result<Progress> {
    use std::io::IsTerminal;
    Ok(match name {
        "auto" if std::io::stderr().is_terminal() => Progress::Bar,
        "auto" | "lines" => Progress::Lines,
        "bar" => Progress::Bar,
        "none" => Progress::Quiet,
        other => {
            return Err(crate::Error::Usage(format!(
                "--progress {other}: use auto, bar, lines or none"
            )))
        }
    })
}

/// Runs `weir feed`.
pub fn run(a: FeedArgs) -> crate::Result<ExitCode> {
    use crate::ingest::feed;
    let sock = socket_addr(&a.addr)?;
    let mut cfg = FeedConfig::new(a.producer);
    cfg.retry_time_max = std::time::Duration::from_secs(a.retry_secs);
    cfg.window_records_max = a.window_records.max(1);
    cfg.progress = progress(&a.progress)?;
    let report = match a.file {
        None => feed(sock, std::io::stdin().lock(), cfg)?,
        Some(p) if p.as_os_str() == "-" => feed(sock, std::io::stdin().lock(), cfg)?,
        Some(p) => {
            let f = std::fs::File::open(&p)
                .map_err(|e| crate::Error::Usage(format!("cannot open {}: {e}", p.display())))?;
            cfg.input_bytes = f.metadata().ok().map(|m| m.len());
            feed(sock, f, cfg)?
        }
    };
    println!(
        "done: {} records acknowledged ({} sent now, {} the server already had), {} connections",
        report.records, report.records_sent, report.records_skipped, report.connections
    );
    Ok(ExitCode::SUCCESS)
}
