//! The real `weir` binary training models exactly once: a pipeline reads
//! 3,000 JSON points from one Kafka-protocol partition (tansu,
//! tests/kafka_common) in batches of exactly 200 (`batch_records_max`,
//! `adaptive_batches = false`, all input there before the start), trains
//! `op = "kmeans"` and `op = "linear_regression"`, writes every record
//! with its prediction and the models after every batch (`model_to`).
//! Uninterrupted, and SIGKILLed five times at random moments (mid-batch,
//! mid-commit, between batches), the final models are bit for bit the
//! models `weir::ml` computes in-process over the same 15 batches, and
//! every record is predicted exactly once. The kill moments come from a
//! fixed seed; every wait polls with a deadline.

mod common;
mod kafka_common;
mod nats_common;
mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kafka_common::Broker;
use serde_json::{json, Value};
use service_common::{spawn_logged, wait_for, weir, Guard};
use weir::ml::{KMeansModel, LinearModel, Loss, SgdParams, TimeUnit};

const POINTS: u64 = 3000;
const BATCH: usize = 200;

/// Point `i`: around one of three centers, label `2x + 1` plus noise.
fn point(i: u64, seed: &mut u64) -> Value {
    let centers = [(0.0, 0.0), (8.0, 8.0), (-8.0, 6.0)];
    let (cx, cy) = centers[(i % 3) as usize];
    let mut noise = || (common::next_rand(seed) % 2000) as f64 / 1000.0 - 1.0;
    let (x, y) = (cx + noise(), cy + noise());
    json!({"id": i, "x": x, "y": y, "label": 2.0 * x + 1.0 + noise() / 10.0})
}

fn write_pipeline(dir: &Path, b: &Broker) -> std::path::PathBuf {
    let text = format!(
        "[pipeline]\nbatch_interval = \"100ms\"\npartitions = 1\nbatch_records_max = {BATCH}\nadaptive_batches = false\n\
         [service]\nhttp_address = \"off\"\n\
         [[source]]\nid = \"points\"\nkind = \"kafka\"\nbrokers = [\"{}\"]\ntopics = [\"pts\"]\n\
         [[step]]\nid = \"json\"\nfrom = \"points\"\nop = \"parse_json\"\n\
         [[step]]\nid = \"clusters\"\nfrom = \"json\"\nop = \"kmeans\"\nfeatures = [\"x\", \"y\"]\nk = 3\n\
         initial_centers = [[1, 1], [5, 5], [-5, 5]]\ninitial_weights = [1, 1, 1]\n\
         decay_factor = 0.999\ntime_unit = \"points\"\nmodel_to = \"models/km\"\n\
         [[sink]]\nfrom = \"clusters\"\nkind = \"json_files\"\nprefix = \"out/km\"\nskip_empty = true\n\
         [[step]]\nid = \"fit\"\nfrom = \"json\"\nop = \"linear_regression\"\nfeatures = [\"x\"]\nlabel = \"label\"\n\
         step_size = 0.01\nmodel_to = \"models/lr\"\n\
         [[sink]]\nfrom = \"fit\"\nkind = \"json_files\"\nprefix = \"out/lr\"\nskip_empty = true\n",
        b.addr()
    );
    let p = dir.join("ml.toml");
    std::fs::write(&p, text).expect("write the pipeline");
    p
}

/// The models `weir::ml` computes over the same batches, in-process.
fn expected(points: &[Value]) -> (KMeansModel, LinearModel) {
    let mut km = KMeansModel {
        centers: vec![vec![1.0, 1.0], vec![5.0, 5.0], vec![-5.0, 5.0]],
        weights: vec![1.0; 3],
    };
    let mut lr = LinearModel {
        weights: vec![0.0],
        intercept: 0.0,
    };
    let params = SgdParams {
        step_size: 0.01,
        ..SgdParams::default()
    };
    let num = |v: &Value, k: &str| v[k].as_f64().expect("a number");
    for chunk in points.chunks(BATCH) {
        let xs: Vec<Vec<f64>> = chunk
            .iter()
            .map(|v| vec![num(v, "x"), num(v, "y")])
            .collect();
        km.update(&xs, 0.999, TimeUnit::Points).expect("k-means");
        let ls: Vec<(f64, Vec<f64>)> = chunk
            .iter()
            .map(|v| (num(v, "label"), vec![num(v, "x")]))
            .collect();
        weir::ml::sgd::train_batch(&mut lr, &ls, &params, Loss::Squared, 0).expect("sgd");
    }
    (km, lr)
}

/// The last `model_to` file by batch time: (batch ms, its one line).
/// Compared as text: serde_json's float parsing is not exact, its
/// printing is.
fn last_model(dir: &Path, prefix: &str) -> (u64, String) {
    let mut files: BTreeMap<u64, std::path::PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(ms) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".json"))
        {
            files.insert(ms.parse().expect("batch ms"), e.path());
        }
    }
    let (ms, last) = files.last_key_value().expect("a model file");
    let text = std::fs::read_to_string(last).expect("read the model");
    assert_eq!(text.lines().count(), 1, "one model line per batch");
    (*ms, text.trim().to_string())
}

/// How often each id was predicted in `out/<prefix>*`.
fn predicted(out: &Path, prefix: &str) -> BTreeMap<u64, u32> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        for line in std::fs::read_to_string(e.path())
            .unwrap_or_default()
            .lines()
        {
            let v: Value = serde_json::from_str(line).expect("a JSON record");
            *m.entry(v["id"].as_u64().expect("an id")).or_insert(0) += 1;
        }
    }
    m
}

fn start(pipeline: &Path, data: &Path) -> (Guard, std::sync::mpsc::Receiver<String>) {
    spawn_logged(weir().arg("run").arg(pipeline).arg("--data-dir").arg(data))
}

/// Runs the pipeline to the end over a fresh data directory, killing it
/// `kills` times first; checks the models and predictions.
fn run_and_check(b: &Broker, points: &[Value], kills: u32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = data.join("out");
    let pipeline = write_pipeline(dir.path(), b);
    let done = |prefix: &str| predicted(&out, prefix).len() as u64 >= POINTS;
    let mut seed = 0x5eed_0019_u64;
    for round in 0..kills {
        let (mut g, _rx) = start(&pipeline, &data);
        let before = predicted(&out, "km").len();
        wait_for("output of this run", || {
            predicted(&out, "km").len() > before || done("km")
        });
        let ms = 5 + common::next_rand(&mut seed) % 150;
        std::thread::sleep(Duration::from_millis(ms));
        g.signal("KILL");
        let _ = g.wait_exit(Duration::from_secs(30));
        eprintln!("round {round}: killed after {ms} ms");
    }
    let (mut g, rx) = start(&pipeline, &data);
    let t0 = std::time::Instant::now();
    while !(done("km") && done("lr")) {
        if t0.elapsed() > Duration::from_secs(60) {
            g.signal("KILL");
            let (km, lr) = (predicted(&out, "km").len(), predicted(&out, "lr").len());
            panic!(
                "{km} and {lr} of {POINTS} predicted; log:\n{}",
                service_common::all_lines(&rx)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        service_common::all_lines(&rx)
    );
    for prefix in ["km", "lr"] {
        let counts = predicted(&out, prefix);
        let doubled: Vec<_> = counts.iter().filter(|(_, &c)| c != 1).take(5).collect();
        assert!(
            doubled.is_empty(),
            "{prefix}: predicted more than once: {doubled:?}"
        );
        assert_eq!(counts.len() as u64, POINTS, "{prefix}");
    }
    let (km, lr) = expected(points);
    let models = data.join("models");
    let (t, got) = last_model(&models, "km-");
    let want = json!({"batch_time": t, "centers": km.centers, "weights": km.weights});
    assert_eq!(
        got,
        want.to_string(),
        "the k-means model after {kills} kills"
    );
    let (t, got) = last_model(&models, "lr-");
    let want = json!({"batch_time": t, "weights": lr.weights, "intercept": lr.intercept});
    assert_eq!(
        got,
        want.to_string(),
        "the regression model after {kills} kills"
    );
}

#[test]
fn models_trained_through_sigkills_equal_the_uninterrupted_ones() {
    let b = Broker::start();
    b.create_topic("pts", 1);
    let mut seed = 0x0019_u64;
    let values: Vec<String> = (0..POINTS)
        .map(|i| point(i, &mut seed).to_string())
        .collect();
    // As weir reads them: serde_json's float parsing can differ from the
    // printed value's by an ulp.
    let points: Vec<Value> = values
        .iter()
        .map(|v| serde_json::from_str(v).expect("JSON"))
        .collect();
    b.produce("pts", 0, &values, 97);
    run_and_check(&b, &points, 0);
    run_and_check(&b, &points, 5);
}

/// The example `deploy/pipelines/anomaly.toml` as it is (its port and
/// interval scaled for a test): 300 normal readings around the three
/// operating points, then two far ones and one without numbers; exactly
/// the far ones land in `anomalies/`, the one without numbers in the
/// dead-letter log, and the model is written after every batch.
#[test]
#[cfg(feature = "sql")]
fn the_anomaly_example_flags_exactly_the_far_readings() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/pipelines/anomaly.toml");
    let port = service_common::free_port();
    let mut text = std::fs::read_to_string(example).expect("the example");
    for (from, to) in [
        (
            "address = \"127.0.0.1:8080\"",
            format!("address = \"127.0.0.1:{port}\""),
        ),
        (
            "batch_interval = \"1s\"",
            "batch_interval = \"100ms\"".to_string(),
        ),
    ] {
        assert!(text.contains(from), "the example no longer has {from:?}");
        text = text.replace(from, &to);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (p, data) = (dir.path().join("anomaly.toml"), dir.path().join("data"));
    std::fs::write(&p, text).expect("pipeline");
    let (mut g, rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(&p)
            .arg("--data-dir")
            .arg(&data)
            .arg("--http-address")
            .arg("off"),
    );
    service_common::wait_ready(&mut g, &rx);
    std::thread::spawn(move || while rx.recv().is_ok() {});
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    let mut c = None;
    let mut seed = 7u64;
    for k in 0..3u64 {
        let body: String = (0..100)
            .map(|i| {
                let (t, v) = [(20.0, 0.0), (60.0, 0.3), (90.0, 0.8)][i % 3];
                let jitter = (common::next_rand(&mut seed) % 400) as f64 / 100.0 - 2.0;
                format!(
                    "{{\"machine\":\"m{i}\",\"temperature\":{},\"vibration\":{v}}}\n",
                    t + jitter
                )
            })
            .collect();
        service_common::post_until_stored(
            addr,
            "/v1/streams/readings",
            ("fleet", k * 100),
            &body,
            &mut c,
            give_up,
        );
    }
    let odd = "{\"machine\":\"hot\",\"temperature\":140.0,\"vibration\":0.8}\n\
               {\"machine\":\"between\",\"temperature\":40.0,\"vibration\":0.3}\n\
               {\"machine\":\"broken\",\"temperature\":\"n/a\"}\n";
    service_common::post_until_stored(
        addr,
        "/v1/streams/readings",
        ("fleet", 300),
        odd,
        &mut c,
        give_up,
    );
    let anomalies = |data: &Path| -> Vec<String> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(data.join("anomalies"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for line in std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
            {
                let r: Value = serde_json::from_str(line).expect("JSON");
                v.push(r["machine"].as_str().expect("machine").to_string());
            }
        }
        v.sort();
        v
    };
    wait_for("the two far readings flagged", || {
        anomalies(&data).len() >= 2
    });
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
    assert_eq!(
        anomalies(&data),
        vec!["between".to_string(), "hot".to_string()]
    );
    let dead = weir::sink::read_dead_letters(&data).expect("dead letters");
    assert_eq!(dead.len(), 1, "the reading without numbers is kept aside");
    assert!(
        dead[0]
            .error
            .contains("field `temperature` is not a number"),
        "{}",
        dead[0].error
    );
    let models = std::fs::read_dir(data.join("models"))
        .expect("models")
        .count();
    assert!(models >= 1, "a model file per batch");
}
