//! The JetStream sink on a real 3-node cluster (tests/nats_common): every
//! record lands in the target stream exactly once; a crash after the sink
//! published but before the commit (failpoint `between_outputs`) replays
//! the batch and the server drops the copies; a replay older than the
//! stream's dedup window is refused (and published only with the explicit
//! option); the stream leader killed mid-run loses nothing and doubles
//! nothing; the real `weir run` binary SIGKILLed while it publishes, then
//! restarted, leaves each record in the stream once.
//!
//! The failpoint registry is process-global: the tests here run one at a
//! time (`SERIAL`). Correctness never depends on timing: waits are bounded
//! polls of a condition.

mod common;
mod nats_common;
mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::stream;
use nats_common::Cluster;
use weir::sink::ReplayOlderThanWindow;
use weir::wal::Wal;
use weir::{failpoint, JetStreamSinkConfig, JetStreamSinkStats, ManualClock, StreamingContext};

static SERIAL: Mutex<()> = Mutex::new(());
const WAIT: Duration = Duration::from_secs(120);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_s_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    ms / 1000 * 1000
}

fn sink_config(c: &Cluster) -> JetStreamSinkConfig {
    let urls = c.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    JetStreamSinkConfig::new(&urls, "out.lines")
}

/// A stream `OUT` over `out.>` with dedup window `window`.
fn out_stream(c: &mut Cluster, window: Duration) {
    c.create_stream_with(stream::Config {
        name: "OUT".into(),
        subjects: vec!["out.>".into()],
        num_replicas: 3,
        storage: stream::StorageType::File,
        allow_direct: true,
        duplicate_window: window,
        ..Default::default()
    });
}

/// A context on `data`: WAL input `input` → upper case → the sink (output
/// 0), and a count (output 1, so `between_outputs` falls after the sink).
fn build(
    data: &Path,
    clock: Arc<ManualClock>,
    cfg: JetStreamSinkConfig,
    batch_records_max: u64,
) -> (StreamingContext, Arc<Wal>, Arc<JetStreamSinkStats>) {
    let mut got = None;
    let ssc = StreamingContext::get_or_create(data, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(clock)
            .batch_records_max(batch_records_max)
            .batch_retries(2, Duration::from_millis(10))
            .build()?;
        let (lines, wal) = ssc.wal_text_stream("input")?;
        let stats = lines.map(|l| l.to_uppercase()).save_to_jetstream(cfg)?;
        lines.count().foreach_batch(|_, _| Ok(()))?;
        got = Some((wal, stats));
        Ok(ssc)
    })
    .expect("build");
    let (wal, stats) = got.expect("built");
    (ssc, wal, stats)
}

/// Every message of stream `OUT`: (Nats-Msg-Id, payload), in stream
/// order, read by an ephemeral pull consumer. Right after a node was
/// killed the cluster may answer a read with an error: the whole read is
/// retried on a new consumer, bounded.
fn messages(c: &mut Cluster) -> Vec<(String, String)> {
    let total = c.stream_info("OUT").state.messages as usize;
    let js = c.js();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match c.block_on(read_all(&js, total)) {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("reading the stream: {e}; reading again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("reading the stream: {e}"),
        }
    }
}

async fn read_all(
    js: &async_nats::jetstream::Context,
    total: usize,
) -> Result<Vec<(String, String)>, String> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use futures_util::StreamExt;
    let s = js
        .get_stream_no_info("OUT")
        .await
        .map_err(|e| e.to_string())?;
    let consumer = s
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
            .await
            .map_err(|_| "no message within 30 s".to_string())?
            .ok_or("the consumer ended")?
            .map_err(|e| format!("message: {e}"))?;
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((id, String::from_utf8_lossy(&m.payload).into_owned()));
    }
    Ok(out)
}

/// Checks that the stream holds exactly `want` (as a multiset), each
/// under its own message id.
fn assert_exactly_once(c: &mut Cluster, want: &[String]) {
    let got = messages(c);
    let ids: std::collections::BTreeSet<&String> = got.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), got.len(), "a message id appears twice");
    let count = |v: &mut dyn Iterator<Item = String>| {
        let mut m = BTreeMap::new();
        for x in v {
            *m.entry(x).or_insert(0u32) += 1;
        }
        m
    };
    let got_m = count(&mut got.into_iter().map(|(_, p)| p));
    let want_m = count(&mut want.iter().map(|s| s.to_uppercase()));
    assert_eq!(got_m.len(), want_m.len(), "distinct records differ");
    assert!(
        got_m == want_m,
        "the stream does not hold each record exactly once"
    );
}

fn lines(from: usize, n: usize) -> Vec<String> {
    (from..from + n).map(|i| format!("line {i}")).collect()
}

#[test]
fn each_record_once_and_a_replay_after_a_crash_is_deduplicated() {
    let _g = serial();
    failpoint::reset();
    let mut c = Cluster::start();
    out_stream(&mut c, Duration::from_secs(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = now_s_ms();
    let clock = Arc::new(ManualClock::new(t0));
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), sink_config(&c), 400);
    ssc.start().expect("start");
    let first = lines(0, 1000);
    wal.append(&first).expect("append");
    clock.set(t0 + 3000);
    ssc.await_batch(t0 + 3000, WAIT).expect("three batches");
    assert_eq!(stats.acked.load(Ordering::Relaxed), 1000);
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 0);
    assert_exactly_once(&mut c, &first);

    // The sink publishes batch 4, then the process "dies" before the count
    // and the commit.
    failpoint::arm("between_outputs", 0);
    let second = lines(1000, 300);
    wal.append(&second).expect("append");
    clock.set(t0 + 4000);
    assert!(ssc.await_batch(t0 + 4000, WAIT).is_err());
    assert!(failpoint::fired().is_some());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    failpoint::reset();
    let all: Vec<String> = first.iter().chain(&second).cloned().collect();
    assert_exactly_once(&mut c, &all);

    // The restart replays batch 4: the server drops every copy.
    let (ssc, _wal, stats) = build(dir.path(), clock.clone(), sink_config(&c), 400);
    ssc.start().expect("restart");
    clock.set(t0 + 5000);
    ssc.await_batch(t0 + 5000, WAIT)
        .expect("batch after the replay");
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 300);
    assert_exactly_once(&mut c, &all);
    ssc.stop(false).expect("stop");
}

#[test]
fn a_replay_older_than_the_dedup_window_is_refused_unless_asked() {
    let _g = serial();
    failpoint::reset();
    let mut c = Cluster::start();
    out_stream(&mut c, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    // Batch times ten minutes in the past: a replay of them is older than
    // the 60 s window (a first run is not a replay and publishes).
    let t0 = now_s_ms() - 600_000;
    let clock = Arc::new(ManualClock::new(t0));
    let (ssc, wal, _) = build(dir.path(), clock.clone(), sink_config(&c), 1000);
    failpoint::arm("between_outputs", 0);
    ssc.start().expect("start");
    let recs = lines(0, 50);
    wal.append(&recs).expect("append");
    clock.set(t0 + 1000);
    assert!(ssc.await_batch(t0 + 1000, WAIT).is_err());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    failpoint::reset();
    assert_exactly_once(&mut c, &recs);

    let (ssc, wal, stats) = build(dir.path(), clock.clone(), sink_config(&c), 1000);
    ssc.start().expect("restart");
    let err = ssc
        .await_batch(t0 + 1000, WAIT)
        .expect_err("the replay is refused")
        .to_string();
    let _ = ssc.stop(false);
    drop((ssc, wal));
    for word in [
        "`OUT`",
        "duplicate_window (60000 ms)",
        "replay_older_than_window",
    ] {
        assert!(err.contains(word), "{word} missing from: {err}");
    }
    eprintln!("refused: {err}");
    assert!(stats.refused_replays.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.acked.load(Ordering::Relaxed), 0, "nothing published");

    let mut cfg = sink_config(&c);
    cfg.replay_older_than_window = ReplayOlderThanWindow::Publish;
    let (ssc, _wal, stats) = build(dir.path(), clock.clone(), cfg, 1000);
    ssc.start().expect("restart with the option");
    clock.set(t0 + 2000);
    ssc.await_batch(t0 + 2000, WAIT)
        .expect("batch after the replay");
    assert_eq!(stats.late_replays_published.load(Ordering::Relaxed), 1);
    // Published well inside the server's window after all: deduplicated.
    assert_eq!(stats.duplicates.load(Ordering::Relaxed), 50);
    assert_exactly_once(&mut c, &recs);
    ssc.stop(false).expect("stop");
}

#[test]
fn the_stream_leader_killed_mid_run_loses_and_doubles_nothing() {
    let _g = serial();
    failpoint::reset();
    let mut c = Cluster::start();
    out_stream(&mut c, Duration::from_secs(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = now_s_ms();
    let clock = Arc::new(ManualClock::new(t0));
    let mut cfg = sink_config(&c);
    cfg.ack_timeout_ms = 2_000;
    let (ssc, wal, stats) = build(dir.path(), clock.clone(), cfg, 2000);
    ssc.start().expect("start");
    let recs = lines(0, 20_000);
    for chunk in recs.chunks(1000) {
        wal.append(chunk).expect("append");
    }
    let leader = c.stream_leader("OUT");
    // Ten batches due at once; the leader dies while they publish.
    clock.set(t0 + 10_000);
    common::wait_for("the first acks", || {
        stats.acked.load(Ordering::Relaxed) >= 3000
    });
    c.kill(leader);
    ssc.await_batch(t0 + 10_000, WAIT).expect("every batch");
    eprintln!(
        "leader kill: acked {} duplicates {} retried {}",
        stats.acked.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.retried.load(Ordering::Relaxed)
    );
    assert_exactly_once(&mut c, &recs);
    ssc.stop(false).expect("stop");
}

#[test]
fn a_context_without_a_data_directory_is_refused() {
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .build()
        .expect("context");
    let q = weir::Queue::<String>::new();
    let e = ssc
        .queue_stream(&q)
        .save_to_jetstream(JetStreamSinkConfig::new(&["nats://127.0.0.1:1"], "out.x"))
        .expect_err("no data directory")
        .to_string();
    assert!(e.contains("get_or_create"), "{e}");
}

/// The pipeline-file sink: its keys are checked where they are written,
/// and a valid one validates without a server (nothing connects before
/// the first batch).
#[test]
fn the_pipeline_file_sink_is_checked_key_by_key() {
    use std::path::Path;
    use weir::service::config::parse;
    const HEAD: &str =
        "[[source]]\nid = \"in\"\nkind = \"generator\"\n\n[[sink]]\nkind = \"jetstream\"\n";
    let ok = format!("{HEAD}servers = [\"nats://127.0.0.1:4222\"]\nsubject = \"out.x\"\n");
    parse("p.toml", &ok, Path::new("/base")).expect("a valid jetstream sink");
    let err = |extra: &str| {
        parse("p.toml", &format!("{ok}{extra}"), Path::new("/base")).expect_err("refused")
    };
    let e = err("acks_in_flight_max = 5000\n");
    assert_eq!(e.key, "sink[0].acks_in_flight_max", "{e}");
    assert!(e.expected.contains("4096"), "{e}");
    let e = err("replay_older_than_window = \"maybe\"\n");
    assert_eq!(e.key, "sink[0].replay_older_than_window", "{e}");
    let e = err("token = \"t\"\nuser = \"u\"\npassword = \"p\"\n");
    assert!(e.expected.contains("one way to log in"), "{e}");
    let e = parse(
        "p.toml",
        &format!("{HEAD}servers = [\"nats://127.0.0.1:4222\"]\nsubject = \"out.*\"\n"),
        Path::new("/base"),
    )
    .expect_err("a wildcard subject");
    assert_eq!(e.key, "sink[0].subject", "{e}");
    let e = parse(
        "p.toml",
        &format!("{HEAD}subject = \"out.x\"\n"),
        Path::new("/base"),
    )
    .expect_err("no servers");
    assert_eq!(e.key, "sink[0].servers", "{e}");
}

/// Polls the stream until it holds at least `n` messages (bounded).
fn wait_messages(c: &mut Cluster, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while c.stream_info("OUT").state.messages < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream did not reach {n} messages within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `weir run` on a directory of 30,000 lines: batches of 5,000 every
/// 100 ms keep the sink publishing nearly all the time, so each SIGKILL
/// (at 3,000, 11,000 and 19,000 messages in the stream) most likely lands
/// mid-output; the correctness check does not depend on where it lands.
#[test]
fn weir_run_killed_while_publishing_then_restarted_publishes_each_record_once() {
    let _g = serial();
    let mut c = Cluster::start();
    out_stream(&mut c, Duration::from_secs(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("input dir");
    let recs = lines(0, 30_000);
    let staged = dir.path().join("staged.txt");
    std::fs::write(&staged, recs.join("\n") + "\n").expect("write input");
    std::fs::rename(&staged, input.join("part-0.txt")).expect("rename in");
    let servers: Vec<String> = c.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let file = dir.path().join("p.toml");
    let toml = format!(
        "[pipeline]\nbatch_interval = \"100ms\"\nbatch_records_max = 5000\nadaptive_batches = false\n\n\
         [[source]]\nid = \"in\"\nkind = \"directory\"\npath = \"{}\"\n\n\
         [[step]]\nop = \"uppercase\"\n\n\
         [[sink]]\nkind = \"jetstream\"\nservers = [{}]\nsubject = \"out.lines\"\n",
        input.display(),
        servers.join(", ")
    );
    std::fs::write(&file, toml).expect("write pipeline");
    let check = service_common::weir()
        .arg("check")
        .arg(&file)
        .output()
        .expect("weir check");
    let words = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{words}");
    assert!(
        words.contains("NATS JetStream subject `out.lines` (sink id `out.lines`, at most 1024 acks in flight; a replay older than the stream's duplicate_window is refused)"),
        "{words}"
    );
    let data = dir.path().join("data");
    let run = |http: &str| {
        service_common::spawn_logged(
            service_common::weir()
                .arg("run")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data)
                .arg("--http-address")
                .arg(http),
        )
    };
    for at in [3_000, 11_000, 19_000] {
        let (mut g, _log) = run("off");
        wait_messages(&mut c, at);
        g.signal("KILL");
        g.wait_exit(Duration::from_secs(30));
    }
    let (mut g, log) = run("127.0.0.1:0");
    let addr = service_common::status_address(&log);
    // Up (its SIGTERM handler installed) before it is stopped below.
    service_common::wait_ready(&mut g, &log);
    wait_messages(&mut c, 30_000);
    // The sink's counters on /metrics: every record of the last run
    // acknowledged once it committed.
    let acked = |m: &str| -> u64 {
        let name =
            "weir_sink_records_acked_total{sink=\"jetstream:out.lines\",kind=\"jetstream\"} ";
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    service_common::wait_for("the sink's counter on /metrics", || {
        acked(&service_common::http_get(&addr, "/metrics").1) > 0
    });
    let m = service_common::http_get(&addr, "/metrics").1;
    assert!(
        m.contains("# TYPE weir_sink_duplicates_total counter"),
        "{m}"
    );
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    if status.code() != Some(0) {
        panic!(
            "exit status {status:?}:\n{}",
            service_common::all_lines(&log)
        );
    }
    assert_exactly_once(&mut c, &recs);
}
