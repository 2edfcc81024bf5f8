//! The service commands: `weir run [PIPELINE]`, `weir check PIPELINE`,
//! `weir status DATA_DIR` and `weir chaos` (all backed by `src/service/`).
//!
//! Owns: their arguments, the choice of the embedded demo, and the printed
//! text of `check`, `status` and `chaos`.
//! Limits: none of its own (the service's limits are in `src/service/`).
//! Must never: decide anything the library decides (what is clean, what
//! is damaged, what was lost): it renders the library's reports.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use crate::service::report::DataDirReport;

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
    /// Status endpoint address, or `off`. Default: the file's
    /// service.http_address, else 127.0.0.1:9464. Off loopback it needs
    /// the file's service.http_tls_cert_file, http_tls_key_file and
    /// http_tokens_file.
    #[arg(long, value_name = "ADDR")]
    pub http_address: Option<String>,
}

/// Arguments of `weir check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The pipeline file (TOML); with --demo, the embedded demo.
    #[arg(required_unless_present = "demo")]
    pub pipeline: Option<PathBuf>,
    /// Check the embedded demo pipeline.
    #[arg(long)]
    pub demo: bool,
    /// Also check the pipeline against the checkpoint of this data
    /// directory, by the rules a start applies (a changed stateful step
    /// fails here, naming it). Reads a copy of the checkpoint under
    /// $TMPDIR, so it writes nothing there and works while weir runs
    /// (systemd runs it as ExecStartPre). A missing or new directory
    /// passes: nothing to compare.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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

fn load_pipeline(file: Option<&Path>, demo: bool) -> crate::Result<crate::service::Pipeline> {
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

/// `weir check`: validate and print the graph; with `--data-dir`, check
/// it against that directory's checkpoint too.
pub fn check(a: &CheckArgs) -> crate::Result<ExitCode> {
    use crate::service::check::{check_data_dir, check_initial_files, DataDirCheck};
    let p = load_pipeline(a.pipeline.as_deref(), a.demo)?;
    print!("{}", crate::service::describe(&p));
    let mut kept = Vec::new();
    if let Some(dir) = &a.data_dir {
        match check_data_dir(&p, dir)? {
            DataDirCheck::NothingToCompare { why } => {
                println!("no checkpoint yet: nothing to compare ({why})")
            }
            DataDirCheck::Compatible {
                checkpoint,
                stateful,
            } => {
                let words = if stateful.is_empty() {
                    "it holds no operator state".to_string()
                } else {
                    format!("its state is kept: `{}`", stateful.join("`, `"))
                };
                println!(
                    "checkpoint {}: the pipeline fits it ({words})",
                    checkpoint.display()
                );
                kept = stateful;
            }
        }
    }
    for line in check_initial_files(&p, &kept)? {
        println!("{line}");
    }
    for line in postgres_tls(&p)? {
        println!("{line}");
    }
    for line in listener_security(&p)? {
        println!("{line}");
    }
    for line in socket_tls(&p)? {
        println!("{line}");
    }
    if let Some(line) = crate::service::http::check_http(&p.settings)? {
        println!("{line}");
    }
    println!("ok: the pipeline is valid");
    Ok(ExitCode::SUCCESS)
}

/// Reads every `postgres` sink's TLS files as `run` will: a wrong path or
/// a key that does not belong to its certificate fails the check.
fn postgres_tls(p: &crate::service::Pipeline) -> crate::Result<Vec<String>> {
    let mut lines = Vec::new();
    for s in &p.sinks {
        if let crate::service::config::SinkKind::Postgres(d) = &s.kind {
            let c = &d.config;
            if c.tls
                .load()
                .map_err(|e| crate::Error::Usage(e.to_string()))?
                .is_some()
            {
                lines.push(format!(
                    "PostgreSQL sink `{}`: {}, files read",
                    c.sink_id,
                    c.tls.describe()
                ));
            }
        }
    }
    Ok(lines)
}

/// Reads every socket source's TLS files as `run` will: a missing file or
/// a client key that does not fit its certificate fails the check.
fn socket_tls(p: &crate::service::Pipeline) -> crate::Result<Vec<String>> {
    let mut lines = Vec::new();
    for n in &p.nodes {
        let crate::service::config::Node::Source(src) = n else {
            continue;
        };
        let crate::service::config::SourceKind::Socket {
            address,
            tls: Some(tls),
            ..
        } = &src.kind
        else {
            continue;
        };
        tls.check_files(&src.id, address)?;
        lines.push(format!(
            "source `{}`: {}; files read",
            src.id,
            tls.describe(address)
        ));
    }
    Ok(lines)
}

/// Reads every listening source's TLS and tokens files as `run` will: a
/// missing file, a key that does not fit its certificate or a tokens file
/// others can read fails the check.
fn listener_security(p: &crate::service::Pipeline) -> crate::Result<Vec<String>> {
    let mut lines = Vec::new();
    for n in &p.nodes {
        let crate::service::config::Node::Source(src) = n else {
            continue;
        };
        let Some(files) = src.kind.listener_security() else {
            continue;
        };
        if files.tls.is_none() && files.tokens.is_none() {
            continue;
        }
        let sec = crate::net::Security::load(files.clone())
            .map_err(|e| crate::Error::Usage(format!("source `{}`: {e}", src.id)))?;
        let tokens = sec.tokens().map_or("none".to_string(), |t| {
            t.names().collect::<Vec<_>>().join(", ")
        });
        let mtls = files.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        lines.push(format!(
            "source `{}`: TLS {}, tokens {tokens}, client certificates {}; files read",
            src.id,
            if files.tls.is_some() { "on" } else { "off" },
            if mtls { "required" } else { "not required" }
        ));
    }
    Ok(lines)
}

fn http_address(
    flag: Option<&str>,
    from_file: Option<std::net::SocketAddr>,
) -> crate::Result<Option<std::net::SocketAddr>> {
    match flag {
        None => Ok(from_file),
        Some("off") => Ok(None),
        Some(a) => Ok(Some(a.parse().map_err(|_| {
            crate::Error::Usage(format!(
                "--http-address {a}: expected an address such as 127.0.0.1:9464, or off"
            ))
        })?)),
    }
}

/// `weir run`: the pipeline as a service until stopped.
pub fn run(args: RunArgs) -> crate::Result<ExitCode> {
    use crate::service::{self, ServiceOptions};
    let p = load_pipeline(args.pipeline.as_deref(), args.demo)?;
    let data_dir = service::data_dir_for(&p, args.data_dir.as_deref());
    let http_address = http_address(args.http_address.as_deref(), p.settings.http_address)?;
    tracing::info!(pipeline = %p.file, data_dir = %data_dir.display(), "starting");
    // Signals are caught before the (possibly slow) build, so a stop that
    // arrives meanwhile is a clean stop.
    let svc = service::Service::new()?;
    let (ssc, compiled) = service::build(&p, &data_dir, Arc::new(crate::SystemClock))?;
    let report = svc.run(
        ssc,
        ServiceOptions {
            http_address,
            http: p.settings.http.clone(),
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

/// `weir chaos`: the crash test, then its verdict.
pub fn chaos(a: ChaosArgs) -> crate::Result<ExitCode> {
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

/// `weir status`: print the data directory's report; exit 1 if a log is
/// damaged.
pub fn status(data_dir: &Path) -> crate::Result<ExitCode> {
    let report = crate::service::report::data_dir_report(data_dir).map_err(|e| {
        crate::Error::Usage(format!(
            "{e}\n(if weir is running on {}, it holds the checkpoint lock: read its status endpoint, GET /status or /metrics)",
            data_dir.display()
        ))
    })?;
    print!("{}", status_text(&report));
    Ok(if report.damaged() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The text `weir status` prints for `r`.
pub fn status_text(r: &DataDirReport) -> String {
    let mut o = String::new();
    match &r.last_committed {
        None => o.push_str("last committed batch: none\n"),
        Some(b) => {
            let _ = writeln!(
                o,
                "last committed batch: {}",
                super::checkpoint::batch_time(b.time_ms)
            );
        }
    }
    if r.pending.is_empty() {
        o.push_str("pending batches: none\n");
    }
    for b in &r.pending {
        let _ = writeln!(
            o,
            "pending batch (re-run at next start): {}: {}",
            super::checkpoint::batch_time(b.time_ms),
            super::checkpoint::ranges_words(&b.ranges)
        );
    }
    for (op, n) in &r.state_keys {
        let _ = writeln!(o, "state `{op}`: {n} keys");
    }
    if r.logs.is_empty() {
        o.push_str("input logs: none (generator sources need none)\n");
    }
    for l in &r.logs {
        let _ = writeln!(
            o,
            "log `{}`: {} segments, {} bytes, records {}..{}, backlog {} records",
            l.name, l.segments, l.bytes, l.first_lsn, l.end_lsn, l.backlog_records
        );
        if let Some(p) = &l.problem {
            let _ = writeln!(o, "{}", super::wal::problem_line(p));
        }
    }
    if r.damaged() {
        o.push_str("a log is damaged: see `weir wal verify` and docs/operations.md (repair)\n");
    } else if r.clean() {
        o.push_str("clean: every allocated batch is committed\n");
    }
    o
}
