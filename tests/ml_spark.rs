//! Conformance with Spark: every pyspark 4.0.1 reference fixture in
//! `tests/fixtures/spark_ml/` (made by `make_fixtures.py` there) replayed
//! through weir's streaming operators, one fixture batch per weir batch,
//! chaining weir's own model from batch to batch (never resetting to
//! Spark's). Every model after every batch, every split, every SGD
//! iteration count and every prediction is checked: values to a relative
//! 1e-9 (the bound the issue sets), and with one partition per batch
//! (Spark's `local[1]` runs) bit for bit for k-means and least squares.
//! Also: the JDK 17 `Math` values weir's libm must reproduce.

mod common;
use common::*;

use serde_json::Value;
use std::path::{Path, PathBuf};
use weir::ml::{
    kmeans, KMeansModel, LinearModel, StreamingKMeans, StreamingLinearRegressionWithSGD,
    StreamingLogisticRegressionWithSGD, TimeUnit,
};

const REL_TOL: f64 = 1e-9;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spark_ml")
}

/// A fixture with every number kept as its text (serde_json's own float
/// parsing is not correctly rounded without a feature weir does not
/// build; Rust's `str::parse` is, so the doubles Spark saw are read back
/// exactly).
fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).expect("read fixture");
    serde_json::from_str(&quote_numbers(&text)).expect("parse fixture")
}

fn quote_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let (mut in_string, mut escaped, mut in_number) = (false, false, false);
    for c in text.chars() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
            out.push(c);
            continue;
        }
        let number_char = c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E');
        if in_number && !number_char {
            out.push('"');
            in_number = false;
        }
        if !in_number && (c.is_ascii_digit() || c == '-') {
            out.push('"');
            in_number = true;
        }
        in_string = c == '"';
        out.push(c);
    }
    if in_number {
        out.push('"');
    }
    out
}

fn n(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .expect("whole number")
}

fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()).expect("fixture dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(prefix) && name.ends_with(".json") {
            out.push((name.clone(), load(&name)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn f(v: &Value) -> f64 {
    v.as_str().and_then(|s| s.parse().ok()).expect("number")
}

fn vecf(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(vecf).collect()
}

fn ulps(a: f64, b: f64) -> u64 {
    let key = |x: f64| -> i64 {
        let i = x.to_bits() as i64;
        if i < 0 {
            i64::MIN - i
        } else {
            i
        }
    };
    key(a).abs_diff(key(b))
}

/// Largest ulp distance seen; every value within [`REL_TOL`].
#[derive(Default)]
struct Stats {
    max_ulp: u64,
}

impl Stats {
    fn check(&mut self, got: f64, want: f64, what: &str) {
        let rel = if got == want {
            0.0
        } else {
            (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
        };
        assert!(
            rel <= REL_TOL,
            "{what}: weir {got:e}, Spark {want:e} (relative error {rel:e})"
        );
        self.max_ulp = self.max_ulp.max(ulps(got, want));
    }

    fn check_all(&mut self, got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (g, w) in got.iter().zip(want) {
            self.check(*g, *w, what);
        }
    }
}

fn time_unit(v: &Value) -> TimeUnit {
    match v.as_str() {
        Some("batches") => TimeUnit::Batches,
        Some("points") => TimeUnit::Points,
        other => panic!("unknown time unit {other:?}"),
    }
}

/// Runs a k-means fixture through `train_on` / `predict_on` on a context
/// of `partitions` partitions; returns the largest ulp distance.
fn replay_kmeans(name: &str, d: &Value, partitions: usize) -> u64 {
    let p = &d["params"];
    let batches: Vec<Vec<Vec<f64>>> = d["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(matrix)
        .collect();
    let tests: Vec<Vec<f64>> = d["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|t| vecf(&t["point"]))
        .collect();
    let h = ctx(partitions);
    let points = h.ssc.queue_stream(&queue(batches.clone()));
    // The test points arrive with the last batch.
    let mut probe = vec![Vec::new(); batches.len()];
    *probe.last_mut().expect("a batch") = tests.clone();
    let probe = h.ssc.queue_stream(&queue(probe));
    let km = StreamingKMeans::new(n(&p["k"]) as usize)
        .decay_factor(f(&p["decayFactor"]))
        .time_unit(time_unit(&p["timeUnit"]))
        .initial_centers(
            matrix(&d["initialModel"]["clusterCenters"]),
            vecf(&d["initialModel"]["clusterWeights"]),
        )
        .expect("initial centers");
    let trained = km.train_on(&points).expect("train_on").name("km");
    let models = collect(trained.models());
    let predicted = collect(&trained.predict_on(&probe));
    h.run(batches.len() as u64);

    let mut stats = Stats::default();
    let want = d["modelAfterBatch"].as_array().expect("records");
    let models = get(&models);
    assert_eq!(models.len(), want.len(), "{name}: one model per batch");
    for (i, (_, got)) in models.iter().enumerate() {
        assert_eq!(got.len(), 1, "{name}: one model in batch {}", i + 1);
        check_kmeans(
            &mut stats,
            &got[0],
            &want[i]["model"],
            &format!("{name} batch {}", i + 1),
        );
    }
    let last = &models.last().expect("models").1[0];
    check_kmeans(&mut stats, last, &d["finalModel"], &format!("{name} final"));
    assert_eq!(
        &trained.latest_model(),
        last,
        "{name}: latest_model is the last batch's"
    );
    let got: Vec<usize> = get(&predicted).into_iter().flat_map(|(_, v)| v).collect();
    let want: Vec<usize> = d["predictions"]
        .as_array()
        .expect("p")
        .iter()
        .map(|t| n(&t["cluster"]) as usize)
        .collect();
    // A queue batch's partitions are chunks in input order.
    assert_eq!(got, want, "{name}: predictions");
    stats.max_ulp
}

fn check_kmeans(stats: &mut Stats, got: &KMeansModel, want: &Value, what: &str) {
    let centers = matrix(&want["clusterCenters"]);
    assert_eq!(got.centers.len(), centers.len(), "{what}: k");
    for (c, wc) in got.centers.iter().zip(&centers) {
        stats.check_all(c, wc, &format!("{what} center"));
    }
    stats.check_all(
        &got.weights,
        &vecf(&want["clusterWeights"]),
        &format!("{what} weights"),
    );
}

/// Runs a regression fixture through `train_on` / `predict_on`.
fn replay_sgd(name: &str, d: &Value, logistic: bool, partitions: usize) -> u64 {
    let p = &d["params"];
    let batches: Vec<Vec<(f64, Vec<f64>)>> = d["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| {
            b.as_array()
                .expect("batch")
                .iter()
                .map(|lp| (f(&lp[0]), vecf(&lp[1])))
                .collect()
        })
        .collect();
    let tests: Vec<Vec<f64>> = d["predictions"]
        .as_array()
        .expect("p")
        .iter()
        .map(|t| vecf(&t["features"]))
        .collect();
    let h = ctx(partitions);
    let points = h.ssc.queue_stream(&queue(batches.clone()));
    let mut probe = vec![Vec::new(); batches.len()];
    *probe.last_mut().expect("a batch") = tests;
    let probe = h.ssc.queue_stream(&queue(probe));
    let w0 = vecf(&d["initialModel"]["weights"]);
    let (step, iters) = (f(&p["stepSize"]), n(&p["numIterations"]) as usize);
    let (frac, tol) = (f(&p["miniBatchFraction"]), f(&p["convergenceTol"]));
    let trained = if logistic {
        StreamingLogisticRegressionWithSGD::new()
            .step_size(step)
            .num_iterations(iters)
            .mini_batch_fraction(frac)
            .convergence_tol(tol)
            .initial_weights(w0)
            .train_on(&points)
    } else {
        StreamingLinearRegressionWithSGD::new()
            .step_size(step)
            .num_iterations(iters)
            .mini_batch_fraction(frac)
            .convergence_tol(tol)
            .initial_weights(w0)
            .train_on(&points)
    }
    .expect("train_on")
    .name("reg");
    let models = collect(trained.models());
    let predicted = collect(&trained.predict_on(&probe));
    h.run(batches.len() as u64);

    let mut stats = Stats::default();
    let want = d["modelAfterBatch"].as_array().expect("records");
    let models = get(&models);
    assert_eq!(models.len(), want.len(), "{name}: one model per batch");
    for (i, (_, got)) in models.iter().enumerate() {
        check_linear(
            &mut stats,
            &got[0],
            &want[i]["model"],
            &format!("{name} batch {}", i + 1),
        );
    }
    let last: &LinearModel = &models.last().expect("models").1[0];
    check_linear(&mut stats, last, &d["finalModel"], &format!("{name} final"));
    assert_eq!(&trained.latest_model(), last);
    let got: Vec<f64> = get(&predicted).into_iter().flat_map(|(_, v)| v).collect();
    let want: Vec<f64> = d["predictions"]
        .as_array()
        .expect("p")
        .iter()
        .map(|t| f(&t["prediction"]))
        .collect();
    stats.check_all(&got, &want, &format!("{name} predictions"));
    stats.max_ulp
}

fn check_linear(stats: &mut Stats, got: &LinearModel, want: &Value, what: &str) {
    stats.check_all(
        &got.weights,
        &vecf(&want["weights"]),
        &format!("{what} weights"),
    );
    assert_eq!(got.intercept, f(&want["intercept"]), "{what}: intercept");
}

#[test]
fn every_kmeans_fixture_matches_spark_through_the_stream_operators() {
    let all = fixtures("kmeans_");
    assert_eq!(all.len(), 7, "the seven pyspark k-means fixtures");
    for (name, d) in &all {
        let one = replay_kmeans(name, d, 1);
        assert_eq!(one, 0, "{name}: one partition per batch gives Spark's bits");
        let three = replay_kmeans(name, d, 3);
        println!("{name:45} 1 partition: 0 ulp; 3 partitions: {three} ulp at most");
    }
}

#[test]
fn every_regression_fixture_matches_spark_through_the_stream_operators() {
    let all: Vec<_> = fixtures("linreg_")
        .into_iter()
        .chain(fixtures("logreg_"))
        .collect();
    assert_eq!(all.len(), 4, "the four pyspark regression fixtures");
    for (name, d) in &all {
        let logistic = name.starts_with("logreg_");
        let ulp = replay_sgd(name, d, logistic, 1);
        if !logistic {
            assert_eq!(ulp, 0, "{name}: least squares gives Spark's bits");
        }
        let three = replay_sgd(name, d, logistic, 3);
        assert_eq!(
            three, ulp,
            "{name}: SGD reads a batch in partition order, as one partition"
        );
        println!("{name:45} {ulp} ulp at most");
    }
}

#[test]
fn splits_and_iteration_counts_are_spark_s() {
    for (name, d) in fixtures("kmeans_") {
        let p = &d["params"];
        let mut m = KMeansModel {
            centers: matrix(&d["initialModel"]["clusterCenters"]),
            weights: vecf(&d["initialModel"]["clusterWeights"]),
        };
        let derived = d["derived"]["perBatch"].as_array().expect("derived");
        for (i, b) in d["batches"].as_array().expect("b").iter().enumerate() {
            let info = m
                .update(&matrix(b), f(&p["decayFactor"]), time_unit(&p["timeUnit"]))
                .expect("update");
            let split = &derived[i]["split"];
            match info.split {
                None => assert!(
                    split.is_null(),
                    "{name} batch {}: Spark split, weir did not",
                    i + 1
                ),
                Some(s) => {
                    assert_eq!(
                        split["dying"].as_str().and_then(|x| x.parse().ok()),
                        Some(s.dying as u64),
                        "{name}"
                    );
                    assert_eq!(
                        split["splitFrom"].as_str().and_then(|x| x.parse().ok()),
                        Some(s.split_from as u64),
                        "{name}"
                    );
                }
            }
        }
    }
    for (name, d) in fixtures("linreg_").into_iter().chain(fixtures("logreg_")) {
        let p = &d["params"];
        let loss = if name.starts_with("logreg_") {
            weir::ml::Loss::Logistic
        } else {
            weir::ml::Loss::Squared
        };
        let params = weir::ml::SgdParams {
            step_size: f(&p["stepSize"]),
            num_iterations: n(&p["numIterations"]) as usize,
            mini_batch_fraction: f(&p["miniBatchFraction"]),
            convergence_tol: f(&p["convergenceTol"]),
        };
        let mut m = LinearModel {
            weights: vecf(&d["initialModel"]["weights"]),
            intercept: 0.0,
        };
        let derived = d["derived"]["perBatch"].as_array().expect("derived");
        for (i, b) in d["batches"].as_array().expect("b").iter().enumerate() {
            let pts: Vec<(f64, Vec<f64>)> = b
                .as_array()
                .expect("b")
                .iter()
                .map(|lp| (f(&lp[0]), vecf(&lp[1])))
                .collect();
            let info = weir::ml::sgd::train_batch(&mut m, &pts, &params, loss, 0).expect("train");
            assert_eq!(
                Some(info.iterations as u64),
                derived[i]["sgdIterations"]
                    .as_str()
                    .and_then(|x| x.parse().ok()),
                "{name} batch {}",
                i + 1
            );
            assert_eq!(
                Some(info.converged),
                derived[i]["stoppedByConvergence"].as_bool(),
                "{name} batch {}",
                i + 1
            );
        }
    }
}

fn hex(v: &Value) -> f64 {
    f64::from_bits(u64::from_str_radix(v.as_str().expect("hex"), 16).expect("hex"))
}

/// `exp`, `pow` and `setHalfLife` against values recorded from OpenJDK
/// 17's `Math` (`java_math_jdk17.json`).
#[test]
fn libm_matches_recorded_jdk_math() {
    let d = load("java_math_jdk17.json");
    let mut mismatches = [0usize; 3];
    for r in d["exp"].as_array().expect("exp") {
        mismatches[0] += usize::from(hex(&r[0]).exp().to_bits() != hex(&r[1]).to_bits());
    }
    for r in d["pow"].as_array().expect("pow") {
        mismatches[1] += usize::from(hex(&r[0]).powf(hex(&r[1])).to_bits() != hex(&r[2]).to_bits());
    }
    for r in d["halfLife"].as_array().expect("halfLife") {
        let got = kmeans::decay_for_half_life(hex(&r[0]));
        mismatches[2] += usize::from(got.to_bits() != hex(&r[1]).to_bits());
    }
    // The JDK's x86-64 exp is not correctly rounded; it differed by 1 ulp
    // on 5 of these 3,000 arguments when recorded. pow agreed everywhere.
    assert!(
        mismatches[0] <= 15,
        "exp mismatches grew: {}",
        mismatches[0]
    );
    assert_eq!(mismatches[1], 0, "pow");
    assert!(
        mismatches[2] <= 5,
        "half-life mismatches grew: {}",
        mismatches[2]
    );
}
