//! Pipeline files: every sample validates (`weir check`), mistakes are
//! located exactly (file, line, column, key, expected, hint), and a TOML
//! pipeline computes exactly what a model of it computes, batch by batch,
//! on a manual clock.

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
    for f in &files {
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
        if block.contains("[[sink]]") && block.contains("[[source]]") {
            whole += 1;
            if let Err(e) = parse("docs/pipeline.md", block, Path::new(".")) {
                panic!("an example in docs/pipeline.md does not validate:\n{e}\n{block}");
            }
        }
    }
    assert!(whole >= 3, "docs/pipeline.md has {whole} whole examples");
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
    let e = err("[[source]]\nid = \"s\"\nkind = \"ingest\"\npath = \"x\"\n");
    assert_eq!((e.line, e.key.as_str()), (4, "source[0].path"));
    assert_eq!(
        e.expected,
        "only keys that apply to kind = \"ingest\" (address, rate_max)"
    );

    // A key-value table maps keys to values: not from text lines.
    let e = err(&format!("{HEAD}[[sink]]\nkind = \"kv\"\ntable = \"t\"\n"));
    assert_eq!((e.line, e.column, e.key.as_str()), (5, 8, "sink[0].kind"));
    assert_eq!(e.found.as_deref(), Some("text lines from `in`"));

    // The status endpoint stays on loopback.
    let e = err(&format!(
        "[service]\nhttp_address = \"0.0.0.0:9464\"\n{HEAD}"
    ));
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (2, 16, "service.http_address")
    );
    assert_eq!(e.expected, "a loopback address (127.0.0.1 or [::1])");

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
    (dir, times)
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
    let toml = r#"
[pipeline]
batch_interval = "1s"
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
[[sink]]
kind = "text_files"
prefix = "out/totals"
"#;
    let (dir, times) = run_pipeline(toml, 5);
    let all = records(
        GeneratorConfig {
            records_per_second: 10,
            count: Some(35),
            ..Default::default()
        },
        0..35,
    );
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
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
    assert!(msg.contains("step `p`: a line is not JSON"), "{msg}");
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
        "ExecStartPre=/usr/local/bin/weir check /etc/weir/pipeline.toml",
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
        "every batch covers this much time; 1s is a good start"
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
    use weir::service::config::{ops_markdown, sinks_markdown, sources_markdown};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pipeline.md"))
        .expect("docs/pipeline.md");
    for (name, table) in [
        ("ops_markdown", ops_markdown()),
        ("sinks_markdown", sinks_markdown()),
        ("sources_markdown", sources_markdown()),
    ] {
        assert_eq!(
            generated_block(&doc, name),
            table,
            "docs/pipeline.md is behind the code: paste {name}() between its markers"
        );
    }
}
