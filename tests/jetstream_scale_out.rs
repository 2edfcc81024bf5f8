//! Scale-out on a real 3-node JetStream cluster (tests/nats_common): two
//! weir instances (each its own data directory) share four JetStream
//! streams by `instance i of 2` and together read every message exactly
//! once; an instance given a partition another data directory owns is
//! refused naming the owner; a copy of a running instance's data
//! directory is refused while the lease lives; a restart of the same
//! directory takes its own lease over at once; a lease another process
//! writes is lost and the next batch fails instead of committing; an
//! instance with another lease TTL than the bucket's is refused. The
//! same through the real `weir run` with pipeline files: two instances
//! (`instance = i`, `instances = 2`) write disjoint outputs that together
//! hold every message once, and a third given a taken partition exits
//! non-zero naming the owner.

mod common;
mod nats_common;
mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{collect, Out};
use nats_common::Cluster;
use weir::{Assignment, JetStreamConfig, ManualClock, StreamingContext};

const STREAMS: [&str; 4] = ["EV0", "EV1", "EV2", "EV3"];
const PER_STREAM: usize = 200;

/// Four streams `EVp` on subjects `ev.p`, each holding PER_STREAM
/// messages `p<p>-<i>`.
fn filled_cluster() -> Cluster {
    let mut c = Cluster::start();
    for (p, s) in STREAMS.iter().enumerate() {
        c.create_stream(s, &[&format!("ev.{p}")]);
        let msgs: Vec<Bytes> = (0..PER_STREAM)
            .map(|i| Bytes::from(format!("p{p}-{i}")))
            .collect();
        c.publish(&format!("ev.{p}"), &format!("s{p}-"), &msgs);
    }
    c
}

fn config(c: &Cluster, assignment: Assignment, name: &str) -> JetStreamConfig {
    let urls = c.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut cfg = JetStreamConfig::new(&urls, &STREAMS);
    cfg.scale_out.assignment = assignment;
    cfg.scale_out.instance_name = Some(name.into());
    cfg.scale_out.lease_ttl_ms = LEASE_TTL_MS;
    cfg
}

/// The lease TTL of these tests: none waits for a lease to expire, and the
/// shortest TTL (3 s) was seen to pass without a renewal getting through
/// on a loaded 2-core machine running the whole suite.
const LEASE_TTL_MS: u64 = 15_000;

/// The request timeout of the `weir run` instances: the default 5 s ran
/// out once for the stream info a start asks for, with the whole suite
/// loading the machine (no test here waits for a request to time out).
const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// An instance on `data` (its checkpoint and claims) reading `cfg`.
fn instance(
    data: &Path,
    clock: Arc<ManualClock>,
    cfg: JetStreamConfig,
) -> weir::Result<(StreamingContext, Out<String>)> {
    let got = Arc::new(std::sync::Mutex::new(None));
    let g = got.clone();
    let ssc = StreamingContext::get_or_create(data, move |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .clock(clock.clone())
            .batch_retries(1, Duration::from_millis(1))
            .build()?;
        let (s, _) = ssc.jetstream_stream("in", cfg.clone())?;
        *g.lock().unwrap() = Some(collect(&s));
        Ok(ssc)
    })?;
    let out = got.lock().unwrap().take().expect("built");
    Ok((ssc, out))
}

fn total(out: &Out<String>) -> usize {
    out.lock().unwrap().iter().map(|(_, v)| v.len()).sum()
}

/// Runs batches until `out` holds `want` records (bounded).
fn run_until(ssc: &StreamingContext, clock: &ManualClock, out: &Out<String>, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(out) < want {
        assert!(Instant::now() < deadline, "only {} of {want}", total(out));
        let t = clock.advance(1000);
        ssc.await_batch(t, Duration::from_secs(30)).expect("batch");
    }
}

#[test]
fn two_instances_share_the_streams_and_overlaps_or_copies_are_refused() {
    let c = filled_cluster();
    let root = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    let clock = Arc::new(ManualClock::new(0));
    let half = |i| Assignment::Instance { index: i, count: 2 };
    let (a, out_a) = instance(&dir_a, clock.clone(), config(&c, half(0), "node-a")).unwrap();
    let (b, out_b) = instance(&dir_b, clock.clone(), config(&c, half(1), "node-b")).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    run_until(&a, &clock, &out_a, 2 * PER_STREAM);
    run_until(&b, &clock, &out_b, 2 * PER_STREAM);

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (who, out, mine) in [("a", &out_a, ["p0-", "p2-"]), ("b", &out_b, ["p1-", "p3-"])] {
        for (_, v) in out.lock().unwrap().iter() {
            for r in v {
                assert!(mine.iter().any(|m| r.starts_with(m)), "{who} read {r}");
                *seen.entry(r.clone()).or_insert(0) += 1;
            }
        }
    }
    assert_eq!(seen.len(), STREAMS.len() * PER_STREAM, "every message");
    assert!(seen.values().all(|&n| n == 1), "each once");

    // A third data directory given EV2 (owned by node-a): refused.
    let dir_c = root.path().join("c");
    let Err(e) = instance(
        &dir_c,
        clock.clone(),
        config(&c, Assignment::Partitions(vec![2]), "node-c"),
    ) else {
        panic!("an overlapping instance is refused");
    };
    let e = e.to_string();
    assert!(
        e.contains("`EV2`") && e.contains("owned by instance `node-a`"),
        "{e}"
    );
    assert!(
        e.contains(&dir_a.canonicalize().unwrap().display().to_string()),
        "{e}"
    );

    // A copy of node-a's data directory (same identity, other path) while
    // node-a runs: refused while the lease lives.
    let copy = root.path().join("a-copy");
    copy_dir(&dir_a, &copy);
    let Err(e) = instance(&copy, clock.clone(), config(&c, half(0), "node-a2")) else {
        panic!("a copy is refused");
    };
    let e = e.to_string();
    assert!(e.contains("is being read by instance `node-a`"), "{e}");

    // node-a stops and starts again on its own directory: its claims are
    // its own, and it reads only what arrived since.
    a.stop(false).unwrap();
    drop(a);
    let mut c = c;
    let more: Vec<Bytes> = (0..10).map(|i| Bytes::from(format!("late{i}"))).collect();
    c.publish("ev.0", "late-", &more);
    let (a, out_a2) = instance(&dir_a, clock.clone(), config(&c, half(0), "node-a")).unwrap();
    a.start().unwrap();
    run_until(&a, &clock, &out_a2, 10);
    let got: Vec<String> = out_a2
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, v)| v.clone())
        .collect();
    assert_eq!(got.len(), 10, "{got:?}");
    assert!(got.iter().all(|r| r.starts_with("late")), "{got:?}");
    a.stop(false).unwrap();
    b.stop(false).unwrap();
}

#[test]
fn a_lease_written_by_another_process_is_lost_and_the_batch_fails() {
    let mut c = filled_cluster();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let cfg = config(&c, Assignment::Partitions(vec![1]), "node-a");
    let (a, out) = instance(dir.path(), clock.clone(), cfg).unwrap();
    a.start().unwrap();
    run_until(&a, &clock, &out, PER_STREAM);

    // An instance whose lease_ttl_ms differs from the TTL the bucket was
    // created with is refused, naming both.
    let other = tempfile::tempdir().unwrap();
    let mut cfg = config(&c, Assignment::Partitions(vec![2]), "node-b");
    cfg.scale_out.lease_ttl_ms = LEASE_TTL_MS + 1000;
    let e = instance(other.path(), clock.clone(), cfg)
        .expect_err("another TTL is refused")
        .to_string();
    let bucket_ms = LEASE_TTL_MS;
    assert!(
        e.contains(&format!("Set lease_ttl_ms = {bucket_ms}"))
            && e.contains(&format!("lease_ttl_ms is {}", LEASE_TTL_MS + 1000)),
        "{e}"
    );

    // Another process overwrites the lease key (as one that found it
    // expired would): the next renewal fails its compare-and-set.
    let js = c.js();
    c.block_on(async {
        let kv = js.get_key_value(weir::source::LEASES_BUCKET).await?;
        kv.put("in.EV1", Bytes::from_static(b"someone else"))
            .await?;
        Ok::<_, async_nats::Error>(())
    })
    .expect("overwrite the lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    let e = loop {
        assert!(
            Instant::now() < deadline,
            "the lost lease was never noticed"
        );
        let t = clock.advance(1000);
        match a.await_batch(t, Duration::from_secs(30)) {
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        e.contains("lost the lease on JetStream stream `EV1`"),
        "{e}"
    );
    assert_eq!(total(&out), PER_STREAM, "nothing more was committed");
    let _ = a.stop(false);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A pipeline file for one instance: `assign` is its scale-out keys.
fn pipeline_file(dir: &Path, c: &Cluster, name: &str, assign: &str) -> std::path::PathBuf {
    let servers: Vec<String> = c.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let streams: Vec<String> = STREAMS.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[pipeline]\nbatch_interval = \"100ms\"\n[service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"events\"\nkind = \"jetstream\"\nservers = [{}]\nstreams = [{}]\n\
         instance_name = \"{name}\"\nrequest_timeout_ms = {REQUEST_TIMEOUT_MS}\n{assign}\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/n\"\nskip_empty = true\n",
        servers.join(", "),
        streams.join(", ")
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).expect("write the pipeline");
    p
}

/// Every output line under `data/out`, with its count.
fn output_lines(data: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(data.join("out"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        for l in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            *m.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn weir_run_instances_split_the_streams_and_an_overlap_exits_naming_the_owner() {
    use service_common::{all_lines, spawn_logged, wait_for, weir};
    let c = filled_cluster();
    let root = tempfile::tempdir().unwrap();
    let run = |name: &str, assign: &str| {
        let p = pipeline_file(root.path(), &c, name, assign);
        let data = root.path().join(name);
        let (g, rx) = spawn_logged(weir().arg("run").arg(&p).arg("--data-dir").arg(&data));
        (g, rx, data)
    };
    let ((mut a, rx_a, data_a), (mut b, rx_b, data_b)) = (
        run("node-a", "instance = 0\ninstances = 2"),
        run("node-b", "instance = 1\ninstances = 2"),
    );
    let half = 2 * PER_STREAM;
    for (g, rx, data) in [(&mut a, &rx_a, &data_a), (&mut b, &rx_b, &data_b)] {
        wait_for("an instance's streams", || {
            if let Ok(Some(st)) = g.child().try_wait() {
                panic!("an instance exited ({st}):\n{}", all_lines(rx));
            }
            output_lines(data).len() >= half
        });
    }

    let (mut c3, rx3, _) = run("node-c", "partitions = [3]");
    let status = c3.wait_exit(Duration::from_secs(60));
    assert_ne!(
        status.code(),
        Some(0),
        "an overlapping instance must not run"
    );
    let log = all_lines(&rx3);
    assert!(
        log.contains("`EV3`") && log.contains("owned by instance `node-b`"),
        "{log}"
    );

    for g in [&mut a, &mut b] {
        g.signal("TERM");
        assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
    }
    let (la, lb) = (output_lines(&data_a), output_lines(&data_b));
    assert!(
        la.keys()
            .all(|l| l.starts_with("p0-") || l.starts_with("p2-")),
        "{la:?}"
    );
    assert!(
        lb.keys()
            .all(|l| l.starts_with("p1-") || l.starts_with("p3-")),
        "{lb:?}"
    );
    assert_eq!(la.len() + lb.len(), STREAMS.len() * PER_STREAM);
    assert!(la.values().chain(lb.values()).all(|&n| n == 1), "each once");
}
