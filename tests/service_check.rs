//! Before a deploy and while running, with the real `weir` binary:
//! `weir check --data-dir` refuses a changed stateful step as a start does
//! (and writes nothing, and says why it cannot check a running service);
//! SIGHUP is logged and never stops the service; file sinks can skip
//! empty batches; `print` can show the batch time as a UTC date and time;
//! `weir check` prints steps in words, never Rust's `Debug` form.
//! Every wait polls a condition with a deadline.

mod service_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use std::sync::mpsc::Receiver;

use service_common::{all_lines, line_with, spawn_logged, weir, Guard};

/// A generator pipeline of 20 records, 100 a second, 200 ms batches; its
/// stateful step `totals` is `op`, its output text files under `out/`.
fn pipeline(dir: &Path, name: &str, op: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(
        &f,
        format!(
            "[pipeline]\nbatch_interval = \"200ms\"\n\
             [[source]]\nid = \"in\"\nkind = \"generator\"\nrate = 100\ncount = 20\n\
             [[step]]\nop = \"split\"\n\
             [[step]]\nid = \"totals\"\n{op}\n\
             [[sink]]\nkind = \"text_files\"\nprefix = \"out/totals\"\n"
        ),
    )
    .expect("write the pipeline");
    f
}

fn run(args: &[&Path]) -> Output {
    let mut c = weir();
    for a in args {
        c.arg(a);
    }
    c.output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `weir check --data-dir DATA FILE`.
fn check(data: &Path, file: &Path) -> Output {
    run(&[Path::new("check"), Path::new("--data-dir"), data, file])
}

/// Every file under `dir` with its length and an FNV-1a hash of its bytes
/// (what "nothing was written" compares).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (usize, u64)> {
    let mut m = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let b = std::fs::read(&p).expect("read");
                let h = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
                    (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)
                });
                m.insert(p.clone(), (b.len(), h));
            }
        }
    }
    m
}

/// `weir run FILE --data-dir DATA --batches N` until it exits by itself.
fn run_batches(file: &Path, data: &Path, n: &str) -> Output {
    let out = weir()
        .arg("run")
        .arg(file)
        .arg("--data-dir")
        .arg(data)
        .args(["--batches", n, "--http-address", "off"])
        .output()
        .expect("weir run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

#[test]
fn check_with_a_data_dir_refuses_a_changed_stateful_step_as_start_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let totals = pipeline(dir.path(), "a.toml", "op = \"running_total\"");
    let changed = pipeline(
        dir.path(),
        "b.toml",
        "op = \"window_count\"\nwindow = \"1s\"",
    );

    // A data directory that does not exist yet: nothing to compare, and
    // nothing created.
    let out = check(&data, &changed);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no checkpoint yet: nothing to compare"),
        "{}",
        text(&out.stdout)
    );
    assert!(!data.exists(), "check created the data directory");

    run_batches(&totals, &data, "2");
    let before = snapshot(&data);

    // The same pipeline fits its checkpoint.
    let out = check(&data, &totals);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the pipeline fits it (its state is kept: `totals`)"),
        "{stdout}"
    );
    assert!(stdout.ends_with("ok: the pipeline is valid\n"), "{stdout}");

    // A changed stateful step is refused, with the sentence a start gives.
    let out = check(&data, &changed);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let refused = text(&out.stderr);
    let change = "operator `totals` changed from update_state_by_key to ";
    assert!(refused.contains(change), "{refused}");
    assert!(
        refused.contains("weir checkpoint reset-operator"),
        "{refused}"
    );
    let after = snapshot(&data);
    let touched: Vec<_> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(v))
        .map(|(p, _)| p)
        .chain(before.keys().filter(|p| !after.contains_key(*p)))
        .collect();
    assert!(touched.is_empty(), "weir check changed {touched:?}");

    let started = weir()
        .arg("run")
        .arg(&changed)
        .arg("--data-dir")
        .arg(&data)
        .args(["--http-address", "off"])
        .output()
        .expect("weir run");
    assert_eq!(started.status.code(), Some(1));
    let at_start = text(&started.stderr);
    assert!(at_start.contains(change), "{at_start}");
    let sentence = |s: &str| {
        s.lines()
            .find(|l| l.contains("no longer matches"))
            .and_then(|l| l.split_once("no longer matches"))
            .map(|(_, rest)| rest.to_string())
    };
    assert_eq!(
        sentence(&refused),
        sentence(&at_start),
        "check and start disagree"
    );

    // `weir checkpoint show` says ranges and parameters in words.
    let shown = run(&[Path::new("checkpoint"), Path::new("show"), &data]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("last allocated batch: "), "{shown}");
    assert!(shown.contains(" ms: `in` records "), "{shown}");
    assert!(
        shown.contains("stateful operator `totals` (update_state_by_key)"),
        "{shown}"
    );
    for debug in ["StreamRange", "{", "}", "["] {
        assert!(
            !shown.contains(debug),
            "Rust's Debug form {debug:?} in\n{shown}"
        );
    }
}

/// `running_total`'s `initial` file: `weir check` reads it and names a
/// bad line; the first start's totals start from it; once the checkpoint
/// keeps the state, the file is not needed (neither by `weir check
/// --data-dir` nor by a start).
#[test]
fn an_initial_state_file_is_checked_and_needed_at_the_first_start_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let init = dir.path().join("init.tsv");
    let file = pipeline(
        dir.path(),
        "a.toml",
        "op = \"running_total\"\ninitial = \"init.tsv\"",
    );
    let check_alone = || run(&[Path::new("check"), &file]);

    let out = check_alone();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let why = text(&out.stderr);
    assert!(
        why.contains("initial state file ") && why.contains("init.tsv"),
        "{why}"
    );

    std::fs::write(&init, "#weir\t5\nnot a pair\n").expect("write");
    let out = check_alone();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let why = text(&out.stderr);
    assert!(
        why.contains("init.tsv:2: expected a tab, found \"not a pair\""),
        "{why}"
    );

    std::fs::write(&init, "#weir\t5\nearly-key\t3\n").expect("write");
    let out = check_alone();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("step `totals`: initial state of 2 keys from "),
        "{said}"
    );
    assert!(
        said.contains("running_total from the initial state in "),
        "{said}"
    );

    run_batches(&file, &data, "2");
    let totals = files(&data.join("out"), "totals");
    let first = totals.values().next().expect("an output file");
    assert!(
        first.contains("(early-key,3)") && first.contains("(#weir,5)"),
        "{first}"
    );

    std::fs::remove_file(&init).expect("remove");
    let out = check(&data, &file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("not read: the checkpoint keeps its state"),
        "{said}"
    );
    run_batches(&file, &data, "1");
    let more = files(&data.join("out"), "totals");
    let last = more.values().last().expect("an output file");
    assert!(more.len() > totals.len(), "{more:?}");
    assert!(last.contains("(early-key,3)"), "{last}");
}

/// `weir run FILE --data-dir DATA` as a service, once it is ready.
fn start(file: &Path, data: &Path) -> (Guard, Receiver<String>) {
    let (g, rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(file)
            .arg("--data-dir")
            .arg(data)
            .args(["--http-address", "off"]),
    );
    line_with(&rx, "ready");
    (g, rx)
}

/// Two more batches commit, then SIGTERM stops the service cleanly.
fn stop_after_two_batches(g: &mut Guard, rx: &Receiver<String>) {
    line_with(rx, "batch committed");
    line_with(rx, "batch committed");
    g.signal("TERM");
    let status = g.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(all_lines(rx).contains("stopped cleanly"));
}

#[test]
fn check_with_the_data_dir_of_a_running_service_works_and_blocks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = pipeline(dir.path(), "a.toml", "op = \"running_total\"");
    let changed = pipeline(dir.path(), "b.toml", "op = \"count_by_key\"");
    let (mut g, rx) = start(&file, &data);
    let out = check(&data, &file);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the pipeline fits it (its state is kept: `totals`)"),
        "{}",
        text(&out.stdout)
    );
    let out = check(&data, &changed);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let why = text(&out.stderr);
    assert!(
        why.contains("operator `totals` changed from update_state_by_key to reduce_by_key"),
        "{why}"
    );
    // The service went on committing, and stops cleanly.
    stop_after_two_batches(&mut g, &rx);
}

#[test]
fn sighup_is_logged_and_the_service_keeps_committing_until_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = pipeline(dir.path(), "a.toml", "op = \"running_total\"");
    let (mut g, rx) = start(&file, &data);
    g.signal("HUP");
    let l = line_with(&rx, "reload requested (SIGHUP)");
    assert!(l.contains("a pipeline change needs a restart"), "{l}");
    // Still running: batches commit after the reload.
    stop_after_two_batches(&mut g, &rx);
}

/// `name -> contents` of the files under `dir` whose name starts with
/// `prefix` (temporary files left out).
fn files(dir: &Path, prefix: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .map(|n| {
            let body = std::fs::read_to_string(dir.join(&n)).expect("read");
            (n, body)
        })
        .collect()
}

/// The batch time in an output file's name (`prefix-<ms>.suffix`).
fn time_of(name: &str) -> String {
    name.rsplit_once('-')
        .and_then(|(_, t)| t.split('.').next())
        .expect("prefix-<ms>.suffix")
        .to_string()
}

/// `ms` as `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, by date(1): an oracle
/// independent of weir's own conversion.
fn utc_by_date(ms: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", ms / 1000), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    let s = text(&out.stdout).trim().to_string();
    if ms.is_multiple_of(1000) {
        s
    } else {
        format!("{s}.{:06}", ms % 1000 * 1000)
    }
}

#[test]
fn file_sinks_skip_empty_batches_when_asked_and_print_shows_a_utc_date_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let file = dir.path().join("p.toml");
    // 3 records at 10 a second, 200 ms batches: two batches with records,
    // then empty ones.
    std::fs::write(
        &file,
        "[pipeline]\nbatch_interval = \"200ms\"\n\
         [[source]]\nid = \"in\"\nkind = \"generator\"\nrate = 10\ncount = 3\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/all\"\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/some\"\nskip_empty = true\n\
         [[sink]]\nkind = \"json_files\"\nprefix = \"out/json\"\nskip_empty = true\n\
         [[sink]]\nkind = \"print\"\ntime_format = \"datetime\"\n",
    )
    .expect("write");
    let out = run_batches(&file, &data, "12");
    let out_dir = data.join("out");
    let all = files(&out_dir, "all-");
    let some = files(&out_dir, "some-");
    let json = files(&out_dir, "json-");
    assert!(
        all.values().any(String::is_empty),
        "no empty batch: {all:?}"
    );
    let with_records: BTreeMap<String, String> = all
        .iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(n, b)| (time_of(n), b.clone()))
        .collect();
    assert!(!with_records.is_empty(), "{all:?}");
    let skipped: BTreeMap<String, String> =
        some.iter().map(|(n, b)| (time_of(n), b.clone())).collect();
    assert_eq!(
        skipped, with_records,
        "skip_empty keeps exactly the batches with records"
    );
    let json_times: Vec<String> = json.keys().map(|n| time_of(n)).collect();
    let times: Vec<String> = with_records.keys().cloned().collect();
    assert_eq!(json_times, times);
    assert_eq!(json.values().map(|b| b.lines().count()).sum::<usize>(), 3);

    // print: `Time: YYYY-MM-DD HH:MM:SS`, the UTC date and time of each
    // batch (its file names carry the milliseconds).
    let stdout = text(&out.stdout);
    let printed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .collect();
    assert!(printed.len() >= all.len(), "{stdout}");
    for t in all.keys().map(|n| time_of(n)) {
        let ms: u64 = t.parse().expect("ms");
        let want = utc_by_date(ms);
        assert!(
            printed.contains(&want.as_str()),
            "{want} not in {printed:?}"
        );
    }
    for p in printed {
        // `2026-12-05 11:40:02`, and `.400000` (as pyspark) for 200 ms
        // batches that do not fall on a whole second.
        let b = p.as_bytes();
        let fraction = p.len() == 26 && b[19] == b'.';
        assert!(
            (p.len() == 19 || fraction) && b[4] == b'-' && b[10] == b' ' && b[13] == b':',
            "{p}"
        );
    }
}

#[test]
fn weir_check_prints_steps_in_words_not_rust_debug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("p.toml");
    std::fs::write(
        &f,
        "[[source]]\nid = \"in\"\nkind = \"generator\"\nformat = \"json\"\n\
         [[step]]\nop = \"parse_json\"\non_error = \"drop\"\n\
         [[step]]\nop = \"filter\"\nfield = \"user\"\nstarts_with = \"@\"\n\
         [[step]]\nid = \"by_user\"\nop = \"key_by\"\nfield = \"user\"\n\
         [[step]]\nid = \"sums\"\nop = \"sum_by_key\"\nfield = \"hashtags\"\n\
         [[step]]\nop = \"top\"\nn = 3\n\
         [[sink]]\nkind = \"print\"\n\
         [[sink]]\nkind = \"text_files\"\nprefix = \"out/top\"\nskip_empty = true\n",
    )
    .expect("write");
    let out = run(&[Path::new("check"), &f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for words in [
        "-> parse_json, drop bad records ->",
        "-> filter on field user: starts with \"@\" ->",
        "-> key_by field user ->",
        "-> sum_by_key of field hashtags ->",
        "-> top 3 ->",
        "print the first 10 of each batch, time in ms",
        "out/top-<batch ms>.txt, none for an empty batch",
    ] {
        assert!(stdout.contains(words), "{words:?} not in\n{stdout}");
    }
    for debug in ["{", "}", "Some(", "StartsWith", "Drop", "Top"] {
        assert!(
            !stdout.contains(debug),
            "Rust's Debug form {debug:?} in\n{stdout}"
        );
    }
}

/// A batch allocated but not committed (a crash at the failpoint
/// `after_allocate`, in this process: no other test here runs a pipeline
/// in-process): `weir status` and `weir checkpoint show` name its input in
/// words, as they name everything else.
#[test]
fn a_pending_batch_is_shown_in_words_by_status_and_checkpoint_show() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(weir::ManualClock::new(0));
    let build = || {
        weir::StreamingContext::get_or_create(dir.path(), |b| {
            let ssc = b
                .batch_interval(Duration::from_secs(1))
                .clock(clock.clone())
                .batch_retries(1, Duration::from_millis(1))
                .build()?;
            let (lines, _) = ssc.wal_text_stream("input")?;
            lines.count().print(1)?;
            Ok(ssc)
        })
        .expect("build")
    };
    let ssc = build();
    let (_, wal) = ssc.input_logs().pop().expect("the input log");
    weir::failpoint::reset();
    weir::failpoint::arm("after_allocate", 0);
    ssc.start().expect("start");
    wal.append(&["a".to_string(), "b".to_string()])
        .expect("append");
    clock.set(1000);
    assert!(ssc.await_batch(1000, Duration::from_secs(20)).is_err());
    let _ = ssc.stop(false);
    drop((ssc, wal));
    weir::failpoint::reset();

    let status = run(&[Path::new("status"), dir.path()]);
    let status = text(&status.stdout);
    assert!(
        status.contains("pending batch (re-run at next start): 1000 ms: `input` records 0..2\n"),
        "{status}"
    );
    let shown = run(&[Path::new("checkpoint"), Path::new("show"), dir.path()]);
    let shown = text(&shown.stdout);
    assert!(
        shown.contains("pending (re-run at next start): 1000 ms: `input` records 0..2\n"),
        "{shown}"
    );
    for out in [&status, &shown] {
        assert!(!out.contains("StreamRange") && !out.contains('{'), "{out}");
    }
}
