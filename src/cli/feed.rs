//! `weir feed ADDR [FILE|-] --producer ID`: send lines to an ingest server
//! as one producer (a thin wrapper over `ingest::client`, which resumes,
//! reconnects and waits for every acknowledgement), over TLS with
//! `--tls-ca` (and a client certificate with `--tls-cert`/`--tls-key`),
//! with a bearer token from `--token-file` or the `WEIR_TOKEN` variable.
//!
//! Owns: the arguments, the choice of progress display, where the token
//! comes from, the TLS server name's default (the host of ADDR), the
//! final line.
//! Limits: defaults `--retry-secs 120`, `--window-records 65536` (at least
//! 1); the client's own limits are in `ingest::client`.
//! Must never: hold protocol logic, take a token on the command line, or
//! print one.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::ingest::{FeedConfig, FeedTls, FeedToken, Progress};

/// The variable a token is read from without `--token-file`.
pub const TOKEN_VARIABLE: &str = "WEIR_TOKEN";

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
    /// Connect with TLS, trusting the authorities in this PEM file (the
    /// one that signed the server's tls_cert_file).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM, leaf first) for a server that requires
    /// one (its tls_client_ca_file); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must hold (default: the host of
    /// ADDR, a name or an IP address).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// A file (mode 600) holding the bearer token to show the server;
    /// without it, the WEIR_TOKEN variable if set. Never given on the
    /// command line itself.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// The host of `host:port` (a name, an IPv4 address or a bracketed IPv6
/// address), for the TLS server name.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The token of `--token-file`, else of `WEIR_TOKEN` (None: neither).
fn token(a: &FeedArgs) -> crate::Result<Option<FeedToken>> {
    if let Some(p) = &a.token_file {
        return Ok(Some(FeedToken::from_file(p)?));
    }
    match std::env::var(TOKEN_VARIABLE) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(FeedToken::new(
            &v,
            &format!("the {TOKEN_VARIABLE} variable"),
        )?)),
        Err(std::env::VarError::NotUnicode(_)) => Err(crate::Error::Usage(format!(
            "the {TOKEN_VARIABLE} variable is not text; set it to the token alone"
        ))),
        _ => Ok(None),
    }
}

/// The TLS settings of the arguments (None: plain TCP).
fn tls(a: &FeedArgs) -> Option<FeedTls> {
    let ca = a.tls_ca.clone()?;
    Some(FeedTls {
        ca_file: ca,
        cert_file: a.tls_cert.clone(),
        key_file: a.tls_key.clone(),
        server_name: a
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host_of(&a.addr).to_string()),
    })
}

fn socket_addr(addr: &str) -> crate::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            crate::Error::Usage(format!(
                "`{addr}` is not an address: give host:port, e.g. 127.0.0.1:7070 or ingest.example:7070"
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
    let mut cfg = FeedConfig::new(a.producer.clone());
    cfg.retry_time_max = std::time::Duration::from_secs(a.retry_secs);
    cfg.window_records_max = a.window_records.max(1);
    cfg.progress = progress(&a.progress)?;
    cfg.tls = tls(&a);
    cfg.token = token(&a)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host() {
        for (addr, host) in [
            ("127.0.0.1:7070", "127.0.0.1"),
            ("ingest.example:7070", "ingest.example"),
            ("[::1]:7070", "::1"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(host_of(addr), host, "{addr}");
        }
    }
}
