//! Pipeline files: every sample validates (`weir check`), mistakes are
//! located exactly (file, line, column, key, expected, hint), and a TOML
//! pipeline computes exactly what a model of it computes, batch by batch,
//! on a manual clock.

mod service_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use weir::service::config::{parse, ConfigError};
use weir::service::generator::{GeneratorConfig, GeneratorSource};
use weir::ManualClock;

const WAIT: Duration = Duration::from_secs(20);

fn err(text: &str) -> ConfigError {
    match parse("p.toml", text, Path::new("/base")) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e,
    }
}

const HEAD: &str = "[[source]]\nid = \"in\"\nkind = \"generator\"\n";

#[test]
fn every_sample_pipeline_and_the_demo_pass_weir_check() {
    let bin = env!("CARGO_BIN_EXE_weir");
    let mut files: Vec<_> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/pipelines"))
            .expect("deploy/pipelines")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
    files.sort();
    assert!(files.len() >= 2, "sample pipelines: {files:?}");
    // Without the `sql` feature (CI's debug pass), SQL pipelines are
    // refused by design; `tests/service_sql.rs` checks that refusal's
    // opposite with the feature on.
    let sql = |text: &str| text.contains("op = \"sql\"");
    for f in &files {
        if cfg!(not(feature = "sql")) && sql(&std::fs::read_to_string(f).expect("read")) {
            continue;
        }
        let out = Command::new(bin)
            .arg("check")
            .arg(f)
            .output()
            .expect("run weir check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{}",
            f.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.ends_with("ok: the pipeline is valid\n"), "{stdout}");
    }
    let out = Command::new(bin)
        .args(["check", "--demo"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("step   hashtag_window   hashtags -> window_count window 4000 ms sliding 2000 ms -> (key, number) pairs  [state: `hashtag_window`]"), "{stdout}");
    // docs/pipeline.md's examples are checked too: each ```toml block that
    // is a whole pipeline.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pipeline.md"))
        .expect("docs/pipeline.md");
    let mut whole = 0;
    for block in doc.split("```toml\n").skip(1) {
        let block = block.split("```").next().unwrap_or("");
        if cfg!(not(feature = "sql")) && sql(block) {
            continue;
        }
        if block.contains("[[sink]]") && block.contains("[[source]]") {
            whole += 1;
            if let Err(e) = parse("docs/pipeline.md", block, Path::new(".")) {
                panic!("an example in docs/pipeline.md does not validate:\n{e}\n{block}");
            }
        }
    }
    assert!(whole >= 3, "docs/pipeline.md has {whole} whole examples");
}

/// `weir check FILE` with its exit code and stderr.
fn weir_check(file: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("check")
        .arg(file)
        .output()
        .expect("run weir check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A file that never ends, or is only just too long, is refused after
/// reading at most one byte more than the limit; one at the limit is read.
#[test]
fn weir_check_reads_at_most_the_file_limit() {
    use weir::service::config::CONFIG_BYTES_MAX;
    let (code, stderr) = weir_check(Path::new("/dev/zero"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("longer than {CONFIG_BYTES_MAX} bytes")),
        "{stderr}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    let body = format!("{HEAD}[[sink]]\nkind = \"print\"\n");
    let pad = |n: usize| format!("{body}{}\n", "#".repeat(n - body.len() - 1));
    std::fs::write(&f, pad(CONFIG_BYTES_MAX)).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(0), "a file of exactly the limit: {stderr}");
    std::fs::write(&f, pad(CONFIG_BYTES_MAX + 1)).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("longer than {CONFIG_BYTES_MAX} bytes")),
        "{stderr}"
    );

    let mut bytes = body.into_bytes();
    bytes.extend_from_slice(b"# \xff\n");
    std::fs::write(&f, &bytes).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("byte {} is not valid UTF-8", bytes.len() - 2)),
        "{stderr}"
    );
}

/// The limits `weir check` applies are the ones `run` applies: at the
/// maximum both accept, one past it both refuse (check with the line).
#[test]
fn check_and_run_agree_on_the_batch_interval_and_name_limits() {
    use weir::context::BATCH_INTERVAL_MAX;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    let with = |interval: &str, id: &str| {
        format!(
            "[pipeline]\nbatch_interval = \"{interval}\"\n[[source]]\nid = \"{id}\"\n\
             kind = \"generator\"\n[[sink]]\nkind = \"print\"\n"
        )
    };
    let max_ms = BATCH_INTERVAL_MAX.as_millis();
    let longest = "n".repeat(weir::STREAM_NAME_BYTES_MAX);
    std::fs::write(&f, with(&format!("{max_ms}ms"), &longest)).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(0), "{stderr}");
    let built = weir::StreamingContext::builder()
        .batch_interval(BATCH_INTERVAL_MAX)
        .build();
    assert!(built.is_ok(), "the engine refuses what check accepts");

    std::fs::write(&f, with(&format!("{}ms", max_ms + 1), "in")).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(":2:18: pipeline.batch_interval: expected a duration of at most 24 h"),
        "{stderr}"
    );
    let built = weir::StreamingContext::builder()
        .batch_interval(BATCH_INTERVAL_MAX + Duration::from_millis(1))
        .build();
    let e = match built {
        Ok(_) => panic!("the engine accepts what check refuses"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("batch_interval"), "{e}");

    std::fs::write(&f, with("1s", &format!("{longest}n"))).expect("write");
    let (code, stderr) = weir_check(&f);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("source[0].id"), "{stderr}");
    assert!(stderr.contains("at most 128 bytes"), "{stderr}");
}

#[test]
fn a_bad_file_fails_weir_check_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    std::fs::write(
        &f,
        format!("{HEAD}\n[[step]]\nop = \"split\"\nsperator = \",\"\n"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("check")
        .arg(&f)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:7:1: sperator: expected one of", f.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: did you mean `separator`?"),
        "{stderr}"
    );
}

#[test]
fn mistakes_are_located_with_key_expected_and_hint() {
    // An unknown key (typo): the nearest key is suggested.
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"split\"\nsperator = \"__end\"\n"
    ));
    assert_eq!((e.line, e.column, e.key.as_str()), (6, 1, "sperator"));
    assert!(e.expected.starts_with("one of "), "{}", e.expected);
    assert_eq!(
        e.hint,
        "did you mean `separator`? see docs/pipeline.md for every key"
    );
    assert!(
        e.to_string()
            .starts_with("p.toml:6:1: sperator: expected one of"),
        "{e}"
    );
    assert!(
        e.excerpt
            .contains("   6 | sperator = \"__end\"\n       | ^"),
        "{}",
        e.excerpt
    );

    // An empty quoted key (found by the fuzzer): still named.
    let e = err("'' = ''");
    assert_eq!((e.line, e.column, e.key.as_str()), (1, 1, "''"));
    assert!(!e.expected.is_empty() && !e.hint.is_empty(), "{e}");

    // A key that exists, but not for this op.
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"lowercase\"\nregex = \"x\"\n"
    ));
    assert_eq!((e.line, e.column, e.key.as_str()), (6, 9, "step[0].regex"));
    assert_eq!(
        e.expected,
        "only keys that apply to op = \"lowercase\" (no further keys)"
    );

    // The wrong kind of records for an op.
    let e = err(&format!("{HEAD}[[step]]\nid = \"t\"\nop = \"top\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (6, 6, "step[0].op"));
    assert_eq!(
        e.expected,
        "an input of (key, number) pairs for op = \"top\""
    );
    assert_eq!(e.found.as_deref(), Some("text lines from `in`"));
    assert_eq!(e.hint, "top ranks (key, number) pairs; count or sum first");

    // A bad duration.
    let e = err(&format!("[pipeline]\nbatch_interval = \"1 sec\"\n{HEAD}"));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (2, 18, "pipeline.batch_interval")
    );
    assert_eq!(e.found.as_deref(), Some("\"1 sec\""));

    // A bad regular expression.
    let e = err(&format!("{HEAD}[[step]]\nop = \"filter\"\nregex = \"(\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (6, 9, "step[0].regex"));
    assert_eq!(e.expected, "a regular expression (Rust regex syntax)");

    // `from` names nothing declared above.
    let e = err(&format!("{HEAD}[[step]]\nfrom = \"inn\"\nop = \"trim\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (5, 8, "step[0].from"));
    assert_eq!(e.hint, "did you mean \"in\"?");

    // Receivers talk to this machine only.
    let e = err("[[source]]\nid = \"s\"\nkind = \"socket\"\naddress = \"10.0.0.1:9999\"\n");
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (4, 11, "source[0].address")
    );
    assert_eq!(e.found.as_deref(), Some("\"10.0.0.1:9999\""));
    // A socket source's delimiter: 1 to 64 bytes, kept exactly.
    let socket = |d: &str| {
        format!("[[source]]\nid = \"s\"\nkind = \"socket\"\naddress = \"127.0.0.1:9999\"\ndelimiter = \"{d}\"\n[[sink]]\nkind = \"print\"\n")
    };
    for (d, found) in [(String::new(), "0 bytes"), ("x".repeat(65), "65 bytes")] {
        let e = err(&socket(&d));
        assert_eq!((e.line, e.key.as_str()), (5, "source[0].delimiter"));
        assert_eq!(e.expected, "1 to 64 bytes of text that end each record");
        assert_eq!(e.found.as_deref(), Some(found));
        assert!(e.hint.contains("delimiter = \"__end\""), "{e}");
    }
    for d in ["__end", " __end", "\\r\\n", &"x".repeat(64)] {
        let p = parse("p.toml", &socket(d), Path::new("/base")).expect("a valid delimiter");
        assert!(format!("{p:?}").contains("delimiter: Some("), "{p:?}");
    }
    let e = err("[[source]]\nid = \"s\"\nkind = \"ingest\"\npath = \"x\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "source[0].path"));
    assert_eq!(
        e.expected,
        "only keys that apply to kind = \"ingest\" (address, rate_max, connections_max, connections_per_address_max, handshakes_per_address_max, hello_timeout_ms, producers_max, producers_idle_ms_max, partitions, tls_cert_file, tls_key_file, tls_client_ca_file, tokens_file)"
    );
    // The ingest limits: accepted at their ceiling, refused above it.
    let ingest = |kv: &str| {
        format!("[[source]]\nid = \"s\"\nkind = \"ingest\"\naddress = \"127.0.0.1:0\"\n{kv}\n[[sink]]\nkind = \"print\"\n")
    };
    for (key, max) in [
        ("connections_max", 65_536u64),
        ("connections_per_address_max", 65_536),
        ("handshakes_per_address_max", 65_536),
        ("hello_timeout_ms", 600_000),
        ("producers_max", 10_000_000),
        ("producers_idle_ms_max", 315_360_000_000),
    ] {
        parse("p.toml", &ingest(&format!("{key} = {max}")), Path::new("."))
            .unwrap_or_else(|e| panic!("{key} = {max} refused: {e}"));
        let e = err(&ingest(&format!("{key} = {}", max + 1)));
        assert_eq!(
            (e.key.clone(), e.found.clone()),
            (format!("source[0].{key}"), Some((max + 1).to_string()))
        );
        assert!(err(&ingest(&format!("{key} = 0"))).key.ends_with(key));
    }

    // A key-value table maps keys to values: not from text lines.
    let e = err(&format!("{HEAD}[[sink]]\nkind = \"kv\"\ntable = \"t\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (5, 8, "sink[0].kind"));
    assert_eq!(e.found.as_deref(), Some("text lines from `in`"));

    // The status endpoint stays on loopback unless it has TLS and tokens;
    // the error names the key to add.
    let e = err(&format!(
        "[service]\nhttp_address = \"0.0.0.0:9464\"\n{HEAD}"
    ));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (2, 16, "service.http_address")
    );
    assert_eq!(
        e.expected,
        "a loopback address (127.0.0.1 or [::1]), or TLS and tokens for an address off this machine"
    );
    assert!(e.hint.starts_with("add http_tls_cert_file"), "{}", e.hint);
    let e = err(&format!(
        "[service]\nhttp_address = \"0.0.0.0:9464\"\nhttp_tls_cert_file = \"c.pem\"\nhttp_tls_key_file = \"k.pem\"\n{HEAD}"
    ));
    assert!(e.hint.starts_with("add http_tokens_file"), "{}", e.hint);
    let e = err(&format!(
        "[service]\nhttp_tls_cert_file = \"c.pem\"\n{HEAD}"
    ));
    assert_eq!(e.key, "service.http_tls_key_file");

    // A stateful step needs a stable name.
    let e = err(&format!("{HEAD}[[step]]\nop = \"running_total\"\n"));
    assert_eq!((e.line, e.key.as_str()), (5, "step[0].id"));
    assert!(
        e.hint.contains("kept under this name across restarts"),
        "{}",
        e.hint
    );

    // Windows are whole batches.
    let e = err(&format!("[pipeline]\nbatch_interval = \"2s\"\n{HEAD}[[step]]\nid = \"w\"\nop = \"window_count\"\nwindow = \"3s\"\n"));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (9, 10, "step[0].window")
    );
    assert_eq!(e.expected, "a multiple of the batch interval (2000 ms)");

    // Ids are unique across sources, steps and names.
    let e = err(&format!("{HEAD}[[step]]\nid = \"in\"\nop = \"trim\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (5, 6, "step[0].id"));

    // No sink: nothing would run.
    let e = err(HEAD);
    assert_eq!(e.key, "sink");

    // Syntax errors keep toml's position.
    let e = err("[[source]\nid = 1\n");
    assert_eq!((e.line, e.key.as_str()), (1, "(syntax)"));
}

// ---- semantics: TOML pipeline vs a model, on a manual clock ----------

fn run_pipeline(toml: &str, batches: u64) -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let times = run_pipeline_in(&dir, toml, batches);
    (dir, times)
}

/// Runs `toml` in `dir` (its files, such as an initial state, already
/// there) for `batches` batches; the batch times.
fn run_pipeline_in(dir: &tempfile::TempDir, toml: &str, batches: u64) -> Vec<u64> {
    let p = parse("t.toml", toml, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, _c) = weir::service::build(&p, dir.path(), clock.clone()).expect("build");
    ssc.start().expect("start");
    let mut times = Vec::new();
    for _ in 0..batches {
        let t = clock.advance(1000);
        ssc.await_batch(t, WAIT).expect("batch");
        times.push(t);
    }
    ssc.stop(false).expect("stop");
    times
}

fn records(cfg: GeneratorConfig, range: std::ops::Range<u64>) -> Vec<String> {
    let g = GeneratorSource::new(cfg, Arc::new(ManualClock::new(0)));
    range.map(|p| g.record(p)).collect()
}

fn read_pairs(path: &Path) -> BTreeMap<String, i64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let l = l
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .expect("(k,v)");
            let (k, v) = l.rsplit_once(',').expect("k,v");
            (k.to_string(), v.parse().expect("number"))
        })
        .collect()
}

#[test]
fn running_totals_from_toml_match_a_model_batch_by_batch() {
    running_totals_match_a_model("", &[]);
}

/// `initial = "init.tsv"`: the totals start from the file's pairs (a key
/// the input has too, and one it never has).
#[test]
fn running_totals_start_from_the_initial_file() {
    running_totals_match_a_model("", &[("#only-initial", 7), ("FIRST", 100)]);
}

/// The largest `partitions` `weir check` accepts runs: memory and time per
/// batch grow linearly with partitions, not with their square (16,384 used
/// to run out of memory before the first batch).
#[test]
fn running_totals_at_the_partition_maximum_match_the_model() {
    let max = weir::context::PARTITIONS_MAX;
    running_totals_match_a_model(&format!("partitions = {max}"), &[]);
    let too_many = format!(
        "[pipeline]\npartitions = {}\n{HEAD}[[sink]]\nkind = \"print\"\n",
        max + 1
    );
    let e = err(&too_many);
    assert_eq!(e.key, "pipeline.partitions", "{e}");
}

/// `initial`: pairs for an initial-state file (`FIRST` stands for the
/// input's first hashtag); none: no `initial` key.
fn running_totals_match_a_model(pipeline_extra: &str, initial: &[(&str, i64)]) {
    let toml = r#"
[pipeline]
batch_interval = "1s"
EXTRA
[[source]]
id = "in"
kind = "generator"
rate = 10
count = 35
[[step]]
op = "split"
[[step]]
op = "lowercase"
[[step]]
op = "filter"
regex = '^[#@]'
[[step]]
id = "totals"
op = "running_total"
INITIAL
[[sink]]
kind = "text_files"
prefix = "out/totals"
"#
    .replace("EXTRA", pipeline_extra);
    let all = records(
        GeneratorConfig {
            records_per_second: 10,
            count: Some(35),
            ..Default::default()
        },
        0..35,
    );
    let first = all
        .iter()
        .flat_map(|r| r.split_whitespace())
        .map(|w| w.to_lowercase())
        .find(|w| w.starts_with('#'))
        .expect("a hashtag");
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = if initial.is_empty() {
        toml.replace("INITIAL", "")
    } else {
        let mut file = "\n".to_string();
        for (k, n) in initial {
            let k = if *k == "FIRST" { first.as_str() } else { k };
            file.push_str(&format!("{k}\t{n}\n"));
            model.insert(k.to_string(), *n);
        }
        std::fs::write(dir.path().join("init.tsv"), file).expect("write");
        toml.replace("INITIAL", "initial = \"init.tsv\"")
    };
    let times = run_pipeline_in(&dir, &toml, 5);
    for (i, t) in times.iter().enumerate() {
        // 10 records a second from the start, 35 in all.
        let end = ((i as u64 + 1) * 10).min(35);
        for r in &all[(i * 10).min(35)..end as usize] {
            for w in r.split_whitespace() {
                let w = w.to_lowercase();
                if w.starts_with('#') || w.starts_with('@') {
                    *model.entry(w).or_default() += 1;
                }
            }
        }
        let got = read_pairs(&dir.path().join(format!("out/totals-{t}.txt")));
        assert_eq!(got, model, "batch {t}");
    }
    assert!(
        model.len() > 20,
        "the model is not trivial: {}",
        model.len()
    );
}

#[test]
fn json_steps_from_toml_match_a_model() {
    let toml = r#"
[[source]]
id = "ev"
kind = "generator"
format = "json"
rate = 20
count = 60
[[step]]
op = "parse_json"
[[step]]
op = "select"
fields = ["user", "hashtags"]
[[step]]
op = "rename"
fields = { hashtags = "tags" }
[[step]]
op = "filter"
field = "user"
starts_with = "@"
[[step]]
id = "by_user"
op = "key_by"
field = "user"
[[step]]
id = "sums"
op = "sum_by_key"
field = "tags"
[[sink]]
kind = "json_files"
prefix = "out/sums"
[[step]]
id = "users"
from = "by_user"
op = "window_count"
window = "2s"
[[step]]
op = "top"
n = 3
[[sink]]
kind = "text_files"
prefix = "out/top_users"
"#;
    let (dir, times) = run_pipeline(toml, 3);
    let all = records(
        GeneratorConfig {
            records_per_second: 20,
            count: Some(60),
            json: true,
            ..Default::default()
        },
        0..60,
    );
    let parsed: Vec<serde_json::Value> = all
        .iter()
        .map(|r| serde_json::from_str(r).expect("json"))
        .collect();
    for (i, t) in times.iter().enumerate() {
        let batch = &parsed[i * 20..(i + 1) * 20];
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for v in batch
            .iter()
            .filter(|v| v["user"].as_str().is_some_and(|u| u.starts_with('@')))
        {
            *sums
                .entry(v["user"].as_str().unwrap_or_default().to_string())
                .or_default() += v["hashtags"].as_i64().expect("n");
        }
        let text =
            std::fs::read_to_string(dir.path().join(format!("out/sums-{t}.jsonl"))).expect("sums");
        let got: BTreeMap<String, i64> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("line");
                (
                    v["key"].as_str().expect("key").to_string(),
                    v["value"].as_i64().expect("value"),
                )
            })
            .collect();
        assert_eq!(got, sums, "batch {t}");
        // Window of 2 batches: counts over this batch and the one before.
        let lo = i.saturating_sub(1) * 20;
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for v in parsed[lo..(i + 1) * 20]
            .iter()
            .filter(|v| v["user"].as_str().is_some_and(|u| u.starts_with('@')))
        {
            *counts
                .entry(v["user"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        let mut top: Vec<(String, i64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(3);
        let want: String = top.iter().map(|(k, n)| format!("({k},{n})\n")).collect();
        let got = std::fs::read_to_string(dir.path().join(format!("out/top_users-{t}.txt")))
            .expect("top");
        assert_eq!(got, want, "batch {t}");
    }
}

#[test]
fn a_bad_json_line_fails_its_batch_unless_dropped() {
    // The generator's text lines are not JSON: with on_error = "drop" every
    // line is dropped and counted; without, the batch fails (and is never
    // committed), naming the step.
    let base = "[[source]]\nid = \"in\"\nkind = \"generator\"\nrate = 5\n[[step]]\nid = \"p\"\nop = \"parse_json\"\n";
    let sink = "[[sink]]\nkind = \"json_files\"\nprefix = \"out/p\"\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let p = parse(
        "t.toml",
        &format!("{base}on_error = \"drop\"\n{sink}"),
        dir.path(),
    )
    .expect("valid");
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, c) = weir::service::build(&p, dir.path(), clock.clone()).expect("build");
    ssc.start().expect("start");
    let t = clock.advance(1000);
    ssc.await_batch(t, WAIT).expect("batch");
    assert_eq!(c.dropped.snapshot(), vec![("p".to_string(), 5)]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(format!("out/p-{t}.jsonl"))).expect("file"),
        ""
    );
    ssc.stop(false).expect("stop");

    let dir = tempfile::tempdir().expect("tempdir");
    let p = parse("t.toml", &format!("{base}{sink}"), dir.path()).expect("valid");
    let clock = Arc::new(ManualClock::new(0));
    let (ssc, _) = weir::service::build(&p, dir.path(), clock.clone()).expect("build");
    ssc.start().expect("start");
    let t = clock.advance(1000);
    let e = ssc.await_batch(t, WAIT).expect_err("the batch fails");
    let msg = e.to_string();
    assert!(
        msg.contains("step `p` could not process record 0 of stream `in`: not JSON"),
        "{msg}"
    );
    assert!(!dir.path().join(format!("out/p-{t}.jsonl")).exists());
}

/// The fuzz target's property (fuzz/fuzz_targets/pipeline_config.rs) on
/// every prefix of the demo and on byte-flipped copies: no panic, errors
/// located inside the text, accepted files parse again identically.
#[test]
fn the_parser_never_panics_and_always_locates_inside_the_text() {
    let demo = weir::service::DEMO_TOML;
    let check = |text: &str| match parse("f.toml", text, Path::new(".")) {
        Err(e) => {
            let lines = text.split('\n').count().max(1);
            assert!(
                e.line >= 1 && e.line <= lines,
                "line {} of {lines}: {e}",
                e.line
            );
            let line = text.split('\n').nth(e.line - 1).unwrap_or("");
            assert!(e.column >= 1 && e.column <= line.chars().count() + 1, "{e}");
            assert!(!e.key.is_empty() && !e.expected.is_empty() && !e.hint.is_empty());
        }
        Ok(p) => {
            let _ = weir::service::describe(&p);
            assert_eq!(parse("f.toml", text, Path::new(".")).ok(), Some(p));
        }
    };
    for end in (0..=demo.len()).filter(|&i| demo.is_char_boundary(i)) {
        check(&demo[..end]);
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"=\"'[]{},.#\n x0_-1s";
    for _ in 0..2000 {
        let mut b = demo.as_bytes().to_vec();
        for _ in 0..1 + next() % 3 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = alphabet[(next() % alphabet.len() as u64) as usize];
        }
        if let Ok(t) = std::str::from_utf8(&b) {
            check(t);
        }
    }
}

#[test]
fn the_systemd_unit_has_what_operations_md_promises() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/weir.service"))
        .expect("unit");
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/local/bin/weir check --data-dir /var/lib/weir /etc/weir/pipeline.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/local/bin/weir run /etc/weir/pipeline.toml --log-format json",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "StateDirectory=weir",
        "TimeoutStopSec=60s",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "deploy/weir.service lacks {line}"
        );
    }
    // The stop budget: the default drain limit plus a batch fits the unit's
    // stop timeout, which is inside systemd's default 90 s.
    assert!(weir::service::config::STOP_TIMEOUT_DEFAULT < Duration::from_secs(60 / 2));
    // systemd's own check, where systemd is installed.
    if let Ok(out) = Command::new("systemd-analyze").arg("--version").output() {
        if out.status.success() {
            let dir = tempfile::tempdir().expect("tempdir");
            let f = dir.path().join("weir.service");
            std::fs::write(
                &f,
                unit.replace("/usr/local/bin/weir", env!("CARGO_BIN_EXE_weir")),
            )
            .expect("write");
            let v = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&f)
                .output()
                .expect("verify");
            let err = String::from_utf8_lossy(&v.stderr);
            assert!(
                v.status.success() && !err.contains("weir.service"),
                "systemd-analyze verify: {err}"
            );
        }
    }
}

#[test]
fn adaptive_batches_is_on_unless_the_file_turns_it_off() {
    let base = format!("{HEAD}[[sink]]\nkind = \"print\"\nfrom = \"in\"\n");
    let p = parse("p.toml", &base, Path::new("/base")).expect("parse");
    assert!(p.settings.adaptive_batches);
    let off = format!("[pipeline]\nadaptive_batches = false\n{base}");
    let p = parse("p.toml", &off, Path::new("/base")).expect("parse");
    assert!(!p.settings.adaptive_batches);
    let e = err(&format!("[pipeline]\nadaptive_batches = \"no\"\n{base}"));
    assert_eq!(e.line, 2, "{e}");
    assert!(e.to_string().contains("expected a boolean"), "{e}");
}

#[test]
fn a_wrong_type_names_the_key_path_the_type_and_what_was_found() {
    // The issue's example: a number written as a word.
    let e = err(&format!(
        "{HEAD}[[sink]]\nkind = \"print\"\ncount = \"ten\"\n"
    ));
    assert_eq!((e.line, e.column, e.key.as_str()), (6, 9, "sink[0].count"));
    assert_eq!(e.expected, "a whole number from 1 to 1000000");
    assert_eq!(e.found.as_deref(), Some("\"ten\""));
    assert_eq!(e.hint, "records printed per batch");
    let text = e.to_string();
    for rust_words in ["i64", "invalid type", "quotes"] {
        assert!(!text.contains(rust_words), "{text}");
    }
    // The same on a source, and on a step.
    let e = err("[[source]]\nid = \"in\"\nkind = \"generator\"\ncount = \"ten\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "source[0].count"));
    assert!(e.expected.starts_with("a whole number"), "{e}");
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"count_by_key\"\n[[step]]\nop = \"top\"\nn = 2.5\n"
    ));
    assert_eq!((e.line, e.column, e.key.as_str()), (8, 5, "step[1].n"));
    assert_eq!(e.found.as_deref(), Some("2.5"));

    // Quotes are named only where removing them is the fix.
    let e = err(&format!(
        "{HEAD}[[sink]]\nkind = \"print\"\ncount = \"10\"\n"
    ));
    assert_eq!(e.hint, "write it without quotes: count = 10");
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"split\"\nkeep_empty = \"true\"\n"
    ));
    assert_eq!(e.key, "step[0].keep_empty");
    assert_eq!(e.expected, "a boolean (true or false)");
    assert_eq!(e.hint, "write it without quotes: keep_empty = true");
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"count_by_key\"\n[[sink]]\nkind = \"kv\"\ntable = 5\n"
    ));
    assert_eq!(e.key, "sink[0].table");
    assert_eq!(e.hint, "put it in quotes: table = \"5\"");

    // A duration given as a boolean.
    let e = err(&format!("[pipeline]\nbatch_interval = true\n{HEAD}"));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (2, 18, "pipeline.batch_interval")
    );
    assert!(
        e.expected.starts_with("a duration such as \"500ms\""),
        "{e}"
    );
    assert_eq!(e.found.as_deref(), Some("true"));
    assert_eq!(
        e.hint,
        "every batch covers this much time (at most 24h); 1s is a good start"
    );

    // Lists and tables of the wrong shape.
    let e = err(&format!("{HEAD}[[step]]\nop = \"parse_json\"\n[[step]]\nop = \"select\"\nfields = {{ a = \"b\" }}\n"));
    assert_eq!(e.key, "step[1].fields");
    assert!(e.expected.starts_with("a list of strings"), "{e}");
    assert_eq!(e.found.as_deref(), Some("a table { a = \"b\" }"));

    // A section of the wrong shape.
    let e = err(&format!("step = 5\n{HEAD}"));
    assert_eq!((e.line, e.column, e.key.as_str()), (1, 8, "step"));
    assert_eq!(e.expected, "[[step]] tables");
    let e = err(&format!("[[pipeline]]\nbatch_interval = \"1s\"\n{HEAD}"));
    assert_eq!((e.line, e.key.as_str()), (1, "pipeline"));
    assert_eq!(e.expected, "a [pipeline] table");
}

#[test]
fn unknown_ops_and_kinds_are_listed_from_the_tables() {
    let e = err(&format!("{HEAD}[[step]]\nop = \"windw_count\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (5, 6, "step[0].op"));
    assert_eq!(
        e.expected,
        format!("one of {}", weir::service::config::op_names().join(", "))
    );
    assert_eq!(e.hint, "did you mean \"window_count\"?");
    let e = err(&format!("{HEAD}[[sink]]\nkind = \"prnt\"\n"));
    assert_eq!(e.key, "sink[0].kind");
    assert!(e.expected.contains("json_files"), "{e}");
    assert_eq!(e.hint, "did you mean \"print\"?");
    let e = err("[[source]]\nid = \"s\"\nkind = \"sockt\"\n");
    assert_eq!(e.hint, "did you mean \"socket\"?");
}

/// The generated tables in docs/pipeline.md: between
/// `<!-- generated by weir::service::config::NAME() -->` and
/// `<!-- end generated -->`.
fn generated_block<'d>(doc: &'d str, name: &str) -> &'d str {
    let start = format!("<!-- generated by weir::service::config::{name}() -->\n");
    let at = doc
        .find(&start)
        .unwrap_or_else(|| panic!("docs/pipeline.md has no block {start}"));
    let rest = &doc[at + start.len()..];
    let end = rest
        .find("<!-- end generated -->")
        .unwrap_or_else(|| panic!("the block of {name} has no end"));
    &rest[..end]
}

#[test]
fn the_docs_tables_of_ops_sinks_and_sources_are_the_tables_of_the_code() {
    use weir::service::config::{ops_markdown, service_markdown, sinks_markdown, sources_markdown};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pipeline.md"))
        .expect("docs/pipeline.md");
    for (name, table) in [
        ("ops_markdown", ops_markdown()),
        ("sinks_markdown", sinks_markdown()),
        ("sources_markdown", sources_markdown()),
        ("service_markdown", service_markdown()),
    ] {
        assert_eq!(
            generated_block(&doc, name),
            table,
            "docs/pipeline.md is behind the code: paste {name}() between its markers"
        );
    }
}

// ---- issue 14: each `weir check` message, through the real binary -----

/// `weir check` on a file holding `bytes`: (exit code, stderr, file).
fn check_bytes(bytes: &[u8]) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    std::fs::write(&f, bytes).expect("write");
    let (code, stderr) = weir_check(&f);
    (
        code,
        stderr.replace(&f.display().to_string(), "p.toml"),
        dir,
    )
}

#[test]
fn weir_check_names_the_key_of_a_word_given_for_a_number() {
    let (code, stderr, _d) =
        check_bytes(format!("{HEAD}[[sink]]\nkind = \"print\"\ncount = \"ten\"\n").as_bytes());
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("error: p.toml:6:9: sink[0].count: expected a whole number from 1 to 1000000, found \"ten\"\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: records printed per batch"),
        "{stderr}"
    );
}

#[test]
fn weir_check_names_the_key_of_a_boolean_batch_interval() {
    let (code, stderr, _d) = check_bytes(
        format!("[pipeline]\nbatch_interval = true\n{HEAD}[[sink]]\nkind = \"print\"\n").as_bytes(),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("error: p.toml:2:18: pipeline.batch_interval: expected a duration such as \"500ms\", \"1s\", \"2m\" or a whole number of milliseconds, found true\n"),
        "{stderr}"
    );
    assert!(
        stderr
            .contains("hint: every batch covers this much time (at most 24h); 1s is a good start"),
        "{stderr}"
    );
}

#[test]
fn weir_check_blames_a_slide_longer_than_its_window_on_the_window_not_the_interval() {
    let (code, stderr, _d) = check_bytes(
        format!(
            "{HEAD}[[step]]\nid = \"w\"\nop = \"window_count\"\nwindow = \"2s\"\nslide = \"4s\"\n[[sink]]\nkind = \"print\"\n"
        )
        .as_bytes(),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("error: p.toml:8:9: step[0].slide: expected a slide of at most the window (2000 ms), found 4000 ms\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: a window is computed every slide over the last `window`: lengthen the window or shorten the slide"),
        "{stderr}"
    );
    assert!(!stderr.contains("batch interval"), "{stderr}");
    // A slide that is not whole batches still names the interval.
    let e = err(&format!(
        "{HEAD}[[step]]\nid = \"w\"\nop = \"window_count\"\nwindow = \"2s\"\nslide = \"1500ms\"\n"
    ));
    assert_eq!((e.line, e.column, e.key.as_str()), (8, 9, "step[0].slide"));
    assert_eq!(e.expected, "a multiple of the batch interval (1000 ms)");
}

#[test]
fn weir_check_locates_invalid_utf8_by_line_and_column_without_a_permissions_hint() {
    let mut bytes = format!("{HEAD}[[sink]]\nkind = \"print\"\n# café ").into_bytes();
    let offset = bytes.len();
    bytes.extend_from_slice(b"\xff\n");
    let (code, stderr, _d) = check_bytes(&bytes);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!("error: p.toml:6:8: the pipeline file is not UTF-8 text: byte {offset} is not valid UTF-8; save it as UTF-8 (for example `iconv -f latin1 -t utf-8`)\n")
    );
    assert!(!stderr.contains("permission"), "{stderr}");
}

#[test]
fn a_dropped_long_line_is_not_blamed_on_a_key_pipeline_files_lack() {
    // The directory source's warning for a line over its 64 KiB limit: it
    // used to say "raise line_bytes_max", which no pipeline file can set.
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).expect("spool");
    let f = dir.path().join("p.toml");
    std::fs::write(
        &f,
        format!(
            "[pipeline]\nbatch_interval = \"200ms\"\n[[source]]\nid = \"in\"\nkind = \"directory\"\npath = \"{}\"\n[[sink]]\nkind = \"print\"\n",
            spool.display()
        ),
    )
    .expect("write");
    std::fs::write(
        spool.join("a.log"),
        format!("{}\nshort\n", "x".repeat(70_000)),
    )
    .expect("write a long line");
    let (mut g, rx) = service_common::spawn_logged(
        service_common::weir()
            .arg("run")
            .arg(&f)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http-address", "off"]),
    );
    let l = service_common::line_with(&rx, "dropped a line longer than line_bytes_max");
    assert!(!l.contains("raise line_bytes_max"), "{l}");
    assert!(l.contains("pipeline files use the 64 KiB default"), "{l}");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
}

/// `partitions` on a socket or directory source: 1 to 64, said in
/// `weir check`'s words with the logs it writes; compiled into one stream
/// the steps read (a build on a data directory registers one log per
/// partition).
#[test]
fn source_partitions_are_checked_described_and_built() {
    let file = |kind: &str, n: &str| {
        format!(
            "[[source]]\nid = \"in\"\nkind = \"{kind}\"\n{}\npartitions = {n}\n\
             [[step]]\nop = \"split\"\n[[sink]]\nkind = \"print\"\n",
            if kind == "socket" {
                "address = \"127.0.0.1:9\""
            } else {
                "path = \"spool\""
            }
        )
    };
    for bad in ["0", "65", "\"4\""] {
        let e = err(&file("socket", bad));
        assert_eq!((e.line, e.key.as_str()), (5, "source[0].partitions"), "{e}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("spool")).expect("mkdir");
    let p = parse("p.toml", &file("directory", "64"), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let words = weir::service::describe(&p);
    assert!(
        words.contains("(64 receivers, logs wal/in-p0 to wal/in-p63)"),
        "{words}"
    );
    let p = parse("p.toml", &file("socket", "3"), dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let words = weir::service::describe(&p);
    assert!(
        words.contains("(3 connections, logs wal/in-p0 to wal/in-p2)"),
        "{words}"
    );
    let data = dir.path().join("data");
    let (ssc, _) = weir::service::build(&p, &data, Arc::new(ManualClock::new(0))).expect("build");
    let mut logs: Vec<String> = ssc.input_logs().into_iter().map(|(n, _)| n).collect();
    logs.sort();
    assert_eq!(logs, vec!["in-p0", "in-p1", "in-p2"]);
}

/// The ML steps' mistakes are located at their key: missing features,
/// centers that do not fit k or the features, both decay keys, weights of
/// the wrong count, an SGD setting outside Spark's range, a non-JSON input.
#[test]
fn ml_step_mistakes_name_their_key() {
    let json = format!("{HEAD}[[step]]\nop = \"parse_json\"\n[[step]]\nid = \"m\"\n");
    let cases: [(&str, &str, &str); 10] = [
        ("op = \"kmeans\"\nk = 2\n", "features", "the feature fields"),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 3\ninitial_centers = [[0], [1]]\n",
            "initial_centers",
            "3 centers (k) of 1 numbers",
        ),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 1\ndecay_factor = 0.5\nhalf_life = 3\n",
            "half_life",
            "either decay_factor or half_life",
        ),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 1\ntime_unit = \"days\"\n",
            "time_unit",
            "\"batches\" or \"points\"",
        ),
        (
            "op = \"linear_regression\"\nfeatures = [\"x\", \"y\"]\nlabel = \"z\"\ninitial_weights = [1]\n",
            "initial_weights",
            "2 weights, one per feature",
        ),
        (
            "op = \"logistic_regression\"\nfeatures = [\"x\"]\nlabel = \"z\"\nmini_batch_fraction = 1.5\n",
            "mini_batch_fraction",
            "above 0 and at most 1",
        ),
        ("op = \"linear_regression\"\nfeatures = [\"x\"]\n", "label", "the field to learn"),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 1\ninitial_centers = [[0]]\nseed = 4\n",
            "seed",
            "nothing here",
        ),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 1\ninitial_weights = [2]\n",
            "initial_weights",
            "nothing here",
        ),
        (
            "op = \"kmeans\"\nfeatures = [\"x\"]\nk = 2\ninitial_centers = [[0], [1]]\ninitial_weights = [1]\n",
            "initial_weights",
            "list of numbers",
        ),
    ];
    for (step, key, expected) in cases {
        let e = err(&format!("{json}{step}"));
        assert_eq!(e.key, format!("step[1].{key}"), "{e}");
        assert!(e.expected.contains(expected), "{e}");
    }
    let e = err(&format!(
        "{HEAD}[[step]]\nop = \"kmeans\"\nfeatures = [\"x\"]\nk = 1\n"
    ));
    assert!(e.hint.contains("parse_json"), "text lines are refused: {e}");
}
