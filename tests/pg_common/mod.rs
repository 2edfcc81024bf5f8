//! Test harness for the PostgreSQL sink: a private PostgreSQL 15 server
//! per test, started with `initdb` and `pg_ctl` from
//! `/usr/lib/postgresql/15/bin` (or `WEIR_PG_BIN`) in a temporary
//! directory, on a free loopback port, its unix socket in that directory.
//!
//! `initdb` refuses to run as root: as root, the directory is handed to
//! the `postgres` user and every server command runs as
//! `runuser -u postgres -- ...`. The cluster trusts local connections
//! (user `weir`), runs with `fsync = off` (a test server: the tests stop
//! and kill weir, and stop and start the server cleanly, never the
//! machine). Missing binaries fail the test with how to install them
//! (`apt-get install postgresql-15`), never skip it.
//!
//! [`Pg::start_with`] turns TLS on ([`ServerTls`]: `ssl = on` with a
//! certificate and key copied into the server's directory, the key owned
//! by the server's user with mode 0600, optionally `ssl_ca_file` for
//! client certificates) and puts lines at the top of `pg_hba.conf`, both
//! before the server first starts.
//!
//! Every wait polls with a deadline ([`PG_DEADLINE`]); dropping a [`Pg`]
//! stops the server (`pg_ctl stop -m immediate`) and removes its
//! directory, also after a failed test.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The longest any wait of the harness may take.
pub const PG_DEADLINE: Duration = Duration::from_secs(60);

/// The server binaries' directory.
pub fn pg_bin() -> PathBuf {
    let dir = std::env::var_os("WEIR_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    for b in ["initdb", "pg_ctl", "postgres"] {
        assert!(
            dir.join(b).exists(),
            "PostgreSQL 15 is not installed: {} is missing. Install it with `apt-get install postgresql-15` \
             (Debian/Ubuntu), or point WEIR_PG_BIN at a directory holding initdb, pg_ctl and postgres \
             (docs/DEVELOPERS.md)",
            dir.join(b).display()
        );
    }
    dir
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The server's TLS files (copied into its directory at start).
pub struct ServerTls {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The authority of client certificates (`ssl_ca_file`), if any.
    pub client_ca: Option<PathBuf>,
}

/// One private server.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Pg {
    /// Creates a cluster and starts it.
    pub fn start() -> Pg {
        Pg::start_with(None, &[])
    }

    /// Creates a cluster, with TLS by `tls` and `hba_first` above the
    /// rules of `pg_hba.conf`, and starts it.
    pub fn start_with(tls: Option<&ServerTls>, hba_first: &[&str]) -> Pg {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let ok = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status()
                .expect("run chown");
            assert!(ok.success(), "chown the server directory to postgres (is there a postgres user? apt-get install postgresql-15 makes one)");
        }
        let pg = Pg {
            dir,
            bin,
            port: free_port(),
        };
        let data = pg.data_dir();
        pg.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "weir",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ],
        );
        if let Some(t) = tls {
            pg.enable_tls(t);
        }
        if !hba_first.is_empty() {
            let hba = data.join("pg_hba.conf");
            let rest = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let text = format!("{}\n{rest}", hba_first.join("\n"));
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        pg.start_server();
        pg
    }

    /// Copies `t`'s files into the server's directory (owned by the
    /// server's user, the key 0600) and sets `ssl = on` with them.
    fn enable_tls(&self, t: &ServerTls) {
        use std::os::unix::fs::PermissionsExt;
        let mut conf = String::from("\nssl = on\n");
        let mut files = vec![
            ("server.crt", &t.cert, "ssl_cert_file"),
            ("server.key", &t.key, "ssl_key_file"),
        ];
        if let Some(ca) = &t.client_ca {
            files.push(("client-ca.crt", ca, "ssl_ca_file"));
        }
        for (name, from, setting) in files {
            let to = self.dir.path().join(name);
            std::fs::copy(from, &to).expect("copy a TLS file");
            let mode = if name == "server.key" { 0o600 } else { 0o644 };
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
                .expect("chmod a TLS file");
            if is_root() {
                let ok = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&to)
                    .status()
                    .expect("run chown");
                assert!(ok.success(), "chown {} to postgres", to.display());
            }
            conf.push_str(&format!("{setting} = '{}'\n", path(&to)));
        }
        let pc = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&pc).expect("read postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&pc, text).expect("write postgresql.conf");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs server binary `name` (as `postgres` when root); panics with
    /// its output on failure.
    fn run(&self, name: &str, args: &[&str]) {
        let exe = self.bin.join(name);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let opts = format!(
            "-p {} -k {} -h 127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data_dir()),
                "-o",
                &opts,
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let deadline = Instant::now() + PG_DEADLINE;
        while self.try_sql("postgres", "SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "the server did not accept connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (`fast`: clients disconnected, clean shutdown).
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data_dir()),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// The connection string of database `db` (no password: trust).
    pub fn url(&self, db: &str) -> String {
        format!("host=127.0.0.1 port={} user=weir dbname={db}", self.port)
    }

    /// A fresh database `name`.
    pub fn create_db(&self, name: &str) {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Runs `sql` (one or more statements) on `db`; the rows of the last
    /// one, every value as text (`None`: NULL).
    pub fn sql(&self, db: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        self.try_sql(db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`Pg::sql`], the error as text.
    pub fn try_sql(&self, db: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = self.url(db);
        rt.block_on(async move {
            let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
            cfg.connect_timeout(Duration::from_secs(5));
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let h = tokio::spawn(conn);
            let msgs = client
                .simple_query(sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(d) => d.message().to_string(),
                    None => e.to_string(),
                })?;
            drop(client);
            let _ = h.await;
            let mut rows = Vec::new();
            for m in msgs {
                match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                    }
                    tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {}
                    _ => {}
                }
            }
            Ok(rows)
        })
    }

    /// One value (first row, first column) of `sql`.
    pub fn one(&self, db: &str, sql: &str) -> String {
        self.sql(db, sql)
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_else(|| panic!("{sql}: no value"))
    }

    /// Polls `cond` until it holds; panics after [`PG_DEADLINE`].
    pub fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + PG_DEADLINE;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.data_dir();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // Immediate: the directory goes next; nothing to keep.
        let _ = cmd
            .args([
                "-D",
                path(&data),
                "-m",
                "immediate",
                "-w",
                "-t",
                "30",
                "stop",
            ])
            .output();
    }
}
