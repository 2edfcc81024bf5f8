//! The chaos kit (`weir chaos`): runs a pipeline as a real process, feeds
//! numbered records through the ingest server (`weir feed`, which resumes
//! after every crash), kills the service with SIGKILL at random moments
//! (directly, or with `systemctl kill` for a systemd unit), restarts it,
//! and at the end checks that every record is in the output exactly once.
//!
//! Limits: at most [`KILLS_MAX`] kills and [`RECORDS_MAX`] records; every
//! wait has a deadline ([`STEP_TIMEOUT`]).
//! Must never: judge by anything but the output files (each record's
//! number counted across all of them), or leave a process it started
//! running.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Most kills in one run.
pub const KILLS_MAX: u32 = 1000;
/// Most records in one run.
pub const RECORDS_MAX: u64 = 10_000_000;
/// Longest wait for one step (a restart, the feed, the final drain).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// What to torment.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// SIGKILLs to deliver.
    pub kills: u32,
    /// Numbered records to feed (`1..=records`).
    pub records: u64,
    /// Seed of the kill moments.
    pub seed: u64,
    /// Working directory (pipeline, data, input file).
    pub dir: PathBuf,
    /// Kill a systemd unit with `systemctl kill` instead of a child
    /// process; its pipeline must be an ingest source on `ingest_addr`
    /// writing one text file per batch into `out_dir`.
    pub systemd_unit: Option<String>,
    /// The ingest address (systemd mode; else a free loopback port).
    pub ingest_addr: Option<String>,
    /// Where the output files are (systemd mode; else under `dir`).
    pub out_dir: Option<PathBuf>,
    /// Longest pause between kills, ms (kill moments are uniform in
    /// `[pause_ms_max / 10, pause_ms_max]`).
    pub pause_ms_max: u64,
}

/// What a run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosReport {
    /// SIGKILLs delivered.
    pub kills: u32,
    /// Records fed (and acknowledged).
    pub records: u64,
    /// Records missing from the output.
    pub lost: u64,
    /// Records present more than once (counted once each).
    pub duplicated: u64,
    /// Output lines that are not a fed record number.
    pub foreign: u64,
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kills: {}, records: {}, lost: {}, duplicated: {}, unexpected lines: {}",
            self.kills, self.records, self.lost, self.duplicated, self.foreign
        )
    }
}

fn usage(m: String) -> crate::Error {
    crate::Error::Usage(m)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Kills and reaps a child on drop (a failed run leaves nothing behind).
struct Reaped(Option<Child>);
impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pipeline `weir chaos` runs: ingest → one text file per batch. The
/// ingest source is limited to `rate_max` records/s so the feed lasts
/// about as long as the kills and every kill lands mid-stream.
pub fn pipeline_toml(ingest_addr: &str, rate_max: u64) -> String {
    format!(
        "# Written by `weir chaos`: every fed record is saved as is.\n\
         [pipeline]\nbatch_interval = \"100ms\"\nbatch_records_max = 2000\nstop_timeout = \"20s\"\n\n\
         [service]\nhttp_address = \"off\"\n\n\
         [[source]]\nid = \"input\"\nkind = \"ingest\"\naddress = \"{ingest_addr}\"\nrate_max = {rate_max}\n\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/records\"\n"
    )
}

fn wait_exit(c: &mut Child, what: &str) -> crate::Result<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = c
            .try_wait()
            .map_err(|e| usage(format!("waiting for {what}: {e}")))?
        {
            return Ok(s);
        }
        if start.elapsed() > STEP_TIMEOUT {
            return Err(usage(format!(
                "{what} did not finish within {STEP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(cmd: &mut Command, what: &str) -> crate::Result<()> {
    let st = cmd.status().map_err(|e| usage(format!("{what}: {e}")))?;
    if !st.success() {
        return Err(usage(format!("{what} failed: {st}")));
    }
    Ok(())
}

/// Runs the chaos test; the report says what was lost or duplicated.
pub fn run(cfg: &ChaosConfig) -> crate::Result<ChaosReport> {
    if cfg.kills > KILLS_MAX || cfg.records == 0 || cfg.records > RECORDS_MAX {
        return Err(usage(format!(
            "--kills must be at most {KILLS_MAX} and --records 1..={RECORDS_MAX}"
        )));
    }
    let exe =
        std::env::current_exe().map_err(|e| usage(format!("cannot find the weir binary: {e}")))?;
    std::fs::create_dir_all(&cfg.dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", cfg.dir.display())))?;
    let input = cfg.dir.join("records.txt");
    write_numbered(&input, cfg.records)?;
    let data = cfg.dir.join("data");
    let (addr, out_dir) = target(cfg, &data)?;
    let kit = Kit::new(cfg, exe, data)?;
    let mut service = Reaped(kit.start_service()?);
    let mut feed = Reaped(Some(kit.spawn_feed(&addr, &input)?));
    let kills = kit.kill_repeatedly(&mut service)?;
    // Every record must be acknowledged: the feed resumes until done.
    let mut f = feed.0.take().ok_or_else(|| usage("feed lost".into()))?;
    let st = wait_exit(&mut f, "weir feed")?;
    if !st.success() {
        return Err(usage(format!(
            "weir feed failed ({st}); the service may not have come back"
        )));
    }
    // Graceful stop: drain the backlog, commit.
    kit.final_stop(&mut service)?;
    let mut report = count(&out_dir, cfg.records)?;
    report.kills = kills;
    Ok(report)
}

/// Writes the lines `1..=records` to `path`.
fn write_numbered(path: &Path, records: u64) -> crate::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?,
    );
    for n in 1..=records {
        writeln!(f, "{n}").map_err(|e| usage(format!("writing {}: {e}", path.display())))?;
    }
    f.flush()
        .map_err(|e| usage(format!("writing {}: {e}", path.display())))
}

/// The ingest address to feed and the directory of the output files: the
/// unit's (systemd mode), or a free loopback port and `data/out` with the
/// pipeline written to `dir/pipeline.toml`.
fn target(cfg: &ChaosConfig, data: &Path) -> crate::Result<(String, PathBuf)> {
    if let Some(unit) = &cfg.systemd_unit {
        let addr = cfg.ingest_addr.clone().ok_or_else(|| {
            usage(format!(
                "--systemd {unit} needs --ingest ADDR (its ingest source's address)"
            ))
        })?;
        let out = cfg.out_dir.clone().ok_or_else(|| {
            usage(format!(
                "--systemd {unit} needs --out DIR (where its text files go)"
            ))
        })?;
        return Ok((addr, out));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| usage(format!("cannot find a free loopback port: {e}")))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    if data.exists() {
        return Err(usage(format!(
            "{} exists: give an empty --dir (the check counts every output file)",
            data.display()
        )));
    }
    // Feed for about as long as the kills take (mean pause ~0.55 of
    // the longest).
    let span_ms = (u64::from(cfg.kills.max(1)) * cfg.pause_ms_max.max(10) * 11 / 20).max(1);
    let rate_max = (cfg.records.saturating_mul(1000) / span_ms).max(100);
    std::fs::write(
        cfg.dir.join("pipeline.toml"),
        pipeline_toml(&addr, rate_max),
    )
    .map_err(|e| usage(format!("cannot write the pipeline: {e}")))?;
    Ok((addr, data.join("out")))
}

/// One run's processes: the service (a child, or a systemd unit) and the
/// notification socket it reports READY=1 on.
struct Kit<'a> {
    cfg: &'a ChaosConfig,
    exe: PathBuf,
    data: PathBuf,
    notify_path: PathBuf,
    notify: std::os::unix::net::UnixDatagram,
}

impl<'a> Kit<'a> {
    fn new(cfg: &'a ChaosConfig, exe: PathBuf, data: PathBuf) -> crate::Result<Kit<'a>> {
        // The service reports READY=1 here (systemd's protocol), so the final
        // graceful stop waits until the last restart has recovered.
        let notify_path = cfg.dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)
            .map_err(|e| usage(format!("cannot bind {}: {e}", notify_path.display())))?;
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| usage(format!("notify socket: {e}")))?;
        Ok(Kit {
            cfg,
            exe,
            data,
            notify_path,
            notify,
        })
    }

    /// Drops what the service said so far (stale after a kill).
    fn drain_notify(&self) {
        let mut buf = [0u8; 512];
        let _ = self.notify.set_nonblocking(true);
        while self.notify.recv(&mut buf).is_ok() {}
        let _ = self.notify.set_nonblocking(false);
    }

    /// Starts the service: the unit (None), or `weir run` as a child.
    fn start_service(&self) -> crate::Result<Option<Child>> {
        match &self.cfg.systemd_unit {
            Some(unit) => {
                sh(
                    Command::new("systemctl").args(["start", unit]),
                    "systemctl start",
                )?;
                Ok(None)
            }
            None => Command::new(&self.exe)
                .arg("run")
                .arg(self.cfg.dir.join("pipeline.toml"))
                .arg("--data-dir")
                .arg(&self.data)
                .env("WEIR_LOG", "warn")
                .env("NOTIFY_SOCKET", &self.notify_path)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map(Some)
                .map_err(|e| usage(format!("cannot start weir run: {e}"))),
        }
    }

    fn spawn_feed(&self, addr: &str, input: &Path) -> crate::Result<Child> {
        Command::new(&self.exe)
            .arg("feed")
            .arg(addr)
            .arg(input)
            .args([
                "--producer",
                "chaos",
                "--retry-secs",
                "60",
                "--progress",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| usage(format!("cannot start weir feed: {e}")))
    }

    /// SIGKILLs the service `cfg.kills` times at seeded random moments,
    /// restarting it each time; returns the kills delivered.
    fn kill_repeatedly(&self, service: &mut Reaped) -> crate::Result<u32> {
        let cfg = self.cfg;
        let mut rng = Rng(cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let lo = (cfg.pause_ms_max / 10).max(1);
        let mut kills = 0;
        while kills < cfg.kills {
            let pause = lo + rng.next() % (cfg.pause_ms_max.max(lo) - lo + 1);
            std::thread::sleep(Duration::from_millis(pause));
            match &cfg.systemd_unit {
                Some(unit) => {
                    sh(
                        Command::new("systemctl").args(["kill", "--signal=SIGKILL", unit]),
                        "systemctl kill",
                    )?;
                    // Restart=on-failure brings it back; start it if not.
                    let _ = Command::new("systemctl").args(["start", unit]).status();
                }
                None => {
                    if let Some(c) = &mut service.0 {
                        let _ = c.kill(); // SIGKILL
                        let _ = c.wait();
                    }
                    self.drain_notify(); // what the killed process said is stale
                    service.0 = self.start_service()?;
                }
            }
            kills += 1;
            eprintln!("chaos: kill {kills}/{} after {pause} ms", cfg.kills);
        }
        Ok(kills)
    }

    /// Stops the service gracefully (it drains its backlog and commits):
    /// `systemctl stop`, or SIGTERM once the child reported READY=1.
    fn final_stop(&self, service: &mut Reaped) -> crate::Result<()> {
        if let Some(unit) = &self.cfg.systemd_unit {
            return sh(
                Command::new("systemctl").args(["stop", unit]),
                "systemctl stop",
            );
        }
        // The child stays in `service` until it has exited, so a failed
        // wait leaves it to `Reaped` to kill.
        let Some(c) = service.0.as_mut() else {
            return Ok(());
        };
        self.wait_ready(c)?;
        let term = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        if !term.is_ok_and(|s| s.success()) {
            let _ = c.kill();
        }
        let st = wait_exit(c, "the final graceful stop")?;
        service.0 = None;
        if !st.success() {
            return Err(usage(format!("the final graceful stop exited with {st}")));
        }
        Ok(())
    }

    /// Waits (at most [`STEP_TIMEOUT`]) for READY=1 from the child.
    fn wait_ready(&self, c: &mut Child) -> crate::Result<()> {
        let start = Instant::now();
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = self.notify.recv(&mut buf) {
                if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                    return Ok(());
                }
            }
            if let Some(st) = c.try_wait().map_err(|e| usage(format!("waiting: {e}")))? {
                return Err(usage(format!(
                    "the service exited ({st}) before the final stop"
                )));
            }
            if start.elapsed() > STEP_TIMEOUT {
                return Err(usage(format!(
                    "the service was not ready within {STEP_TIMEOUT:?}"
                )));
            }
        }
    }
}

/// Counts every record number in the output files of `dir`.
pub fn count(dir: &Path, records: u64) -> crate::Result<ChaosReport> {
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut foreign = 0;
    let rd = std::fs::read_dir(dir).map_err(|e| {
        usage(format!(
            "cannot read the output directory {}: {e}",
            dir.display()
        ))
    })?;
    for e in rd {
        let e = e.map_err(|e| usage(format!("reading {}: {e}", dir.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // a temp file of an interrupted atomic write
        }
        let text = std::fs::read_to_string(e.path())
            .map_err(|err| usage(format!("reading {}: {err}", e.path().display())))?;
        for line in text.lines() {
            match line.trim().parse::<u64>() {
                Ok(n) if (1..=records).contains(&n) => *seen.entry(n).or_default() += 1,
                _ => foreign += 1,
            }
        }
    }
    Ok(ChaosReport {
        kills: 0,
        records,
        lost: records - seen.len() as u64,
        duplicated: seen.values().filter(|&&c| c > 1).count() as u64,
        foreign,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_finds_lost_duplicated_and_foreign_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("records-100.txt"), "1\n2\n").expect("write");
        std::fs::write(dir.path().join("records-200.txt"), "2\n4\nx\n").expect("write");
        std::fs::write(dir.path().join(".records-300.txt.tmp"), "3\n").expect("write");
        let r = count(dir.path(), 4).expect("count");
        assert_eq!(
            r,
            ChaosReport {
                kills: 0,
                records: 4,
                lost: 1,
                duplicated: 1,
                foreign: 1
            }
        );
        assert_eq!(
            r.to_string(),
            "kills: 0, records: 4, lost: 1, duplicated: 1, unexpected lines: 1"
        );
    }
}
