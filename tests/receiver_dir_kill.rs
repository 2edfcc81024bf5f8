//! Exactly-once of `text_file_stream` across real SIGKILLs: before each
//! run the test moves five more files (one large, so kills land mid-file)
//! into the input directory; the test-support binary (`weir-testkit test-dir-pipeline`,
//! text_file_stream → save_as_text_files) is killed with SIGKILL at random
//! moments, once it has logged a few chunks of lines, at least twelve times and restarted; a last run finishes. Every line of
//! every moved file must be in the output exactly once, no temp file's line
//! may appear, and no output file may be partial.
//!
//! Kill moments are random (seeded); correctness never depends on timing.

mod common;
use common::next_rand;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FILES: u64 = 40;
const KILLS: usize = 12;
/// Files moved into the input directory before each run; files 5k..5k+4
/// hold one large file, so each of the first eight runs has one.
const FILES_PER_RUN: u64 = 5;

fn lines_of(f: u64) -> u64 {
    if f.is_multiple_of(5) {
        12_000 // large: a few hundred chunks of 100 lines
    } else {
        f * 37 % 400
    }
}

fn line(f: u64, i: u64) -> String {
    format!("file{f:03} line{i:06} {}", "x".repeat((i % 17) as usize))
}

/// Writes file `f` in `staging` and renames it into `input` (atomic, as
/// a producer should).
fn move_in(staging: &Path, input: &Path, f: u64) {
    let mut text = String::new();
    for i in 0..lines_of(f) {
        text.push_str(&line(f, i));
        text.push('\n');
    }
    let tmp = staging.join(format!("f{f}"));
    std::fs::write(&tmp, text).expect("write staged file");
    std::fs::rename(&tmp, input.join(format!("f{f:03}.txt"))).expect("move file in");
}

/// Starts a run; its log goes to `root/log-<run>` (info level).
fn spawn(bin: &str, root: &Path, run: usize) -> Child {
    let log = std::fs::File::create(root.join(format!("log-{run}"))).expect("log file");
    Command::new(bin)
        .env("WEIR_LOG", "info")
        .stderr(log)
        .arg("test-dir-pipeline")
        .arg(root.join("data"))
        .arg(root.join("in"))
        .arg(root.join("out"))
        .args(["--interval-ms", "50", "--lines-per-chunk", "4"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn weir")
}

/// Records the size of every log segment (`*.wal`) below `dir` in
/// `seen` (the largest size each had), and returns the bytes logged in
/// all segments ever seen: it only grows, also when the cleaner removes
/// committed segments. The identity, lock and synced-end files, which a
/// start writes before reading anything, do not count.
fn logged_bytes(dir: &Path, seen: &mut HashMap<std::path::PathBuf, u64>) -> u64 {
    fn walk(dir: &Path, seen: &mut HashMap<std::path::PathBuf, u64>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path(), seen),
                Ok(_) if e.file_name().to_string_lossy().ends_with(".wal") => {
                    let len = e.metadata().map_or(0, |m| m.len());
                    let slot = seen.entry(e.path()).or_insert(0);
                    *slot = (*slot).max(len);
                }
                _ => {}
            }
        }
    }
    walk(dir, seen);
    seen.values().sum()
}

/// Bytes of records a run must have logged before it is killed: a few
/// chunks of lines, far from the end of the large file (about 400 KiB).
const LOGGED_BYTES_MIN: u64 = 4096;

/// Every output line with its count; panics on a partial file.
fn outputs(out: &Path) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue; // the temp file of a write a kill interrupted
        }
        let text = std::fs::read_to_string(e.path()).expect("read output");
        assert!(text.is_empty() || text.ends_with('\n'), "{name} is partial");
        for l in text.lines() {
            *m.entry(l.to_string()).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn every_line_of_every_file_is_output_exactly_once_across_sigkills() {
    let root = tempfile::tempdir().expect("tempdir");
    let (input, staging) = (root.path().join("in"), root.path().join("staging"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    // Temp names in the input directory: never read.
    for n in [".hidden", "part.tmp", "big._COPYING_", "_SUCCESS"] {
        std::fs::write(input.join(n), "TEMP LINE\n").unwrap();
    }
    let bin = env!("CARGO_BIN_EXE_weir-testkit");
    let mut rng = 0xF11E5 ^ u64::from(std::process::id());
    let resumed = |runs: usize| {
        (0..runs)
            .map(|r| {
                std::fs::read_to_string(root.path().join(format!("log-{r}"))).unwrap_or_default()
            })
            .filter(|log| log.contains("continuing a partly logged file"))
            .count()
    };
    let wal = root.path().join("data").join("wal");
    // Each run is given the next FILES_PER_RUN files (one of them large)
    // before it starts, so every run has a file to be killed in, however
    // fast or slow the build. At least KILLS runs, and more while files
    // remain until two kills are known to have landed mid-file.
    let (mut runs, mut moved) = (0, 0);
    let mut seen = HashMap::new();
    while runs < KILLS || (resumed(runs) < 2 && moved < FILES) {
        let until = (moved + FILES_PER_RUN).min(FILES);
        for f in moved..until {
            move_in(&staging, &input, f);
        }
        let got_files = until > moved;
        moved = until;
        let before = logged_bytes(&wal, &mut seen);
        let mut child = spawn(bin, root.path(), runs);
        // Kill once this run has logged records (so the kill lands while
        // its large file is being read, not during start-up, however slow
        // the machine), at a random moment after that. A run given no
        // files has nothing to log: it is killed after a short wait.
        let started = Instant::now();
        let wait_max = Duration::from_secs(if got_files { 120 } else { 2 });
        while logged_bytes(&wal, &mut seen) < before + LOGGED_BYTES_MIN
            && started.elapsed() < wait_max
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("run {runs} exited before it was killed: {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(next_rand(&mut rng) % 20));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        runs += 1;
    }
    for f in moved..FILES {
        move_in(&staging, &input, f);
    }

    let total: u64 = (0..FILES).map(lines_of).sum();
    let out = root.path().join("out");
    let mut child = spawn(bin, root.path(), runs);
    let deadline = Instant::now() + Duration::from_secs(180);
    let count = |m: &HashMap<String, u64>| m.values().sum::<u64>();
    while count(&outputs(&out)) < total {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("only {} of {total} lines arrived", count(&outputs(&out)));
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the last run exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a few more batches run: a late duplicate would show up in them.
    let files_now = std::fs::read_dir(&out).unwrap().count();
    let settle = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&out).unwrap().count() < files_now + 10 {
        assert!(Instant::now() < settle, "batches stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let got = outputs(&out);
    let dups: Vec<_> = got.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(dups.is_empty(), "lines output more than once: {dups:?}");
    assert!(!got.contains_key("TEMP LINE"), "a temp file was read");
    for f in 0..FILES {
        for i in 0..lines_of(f) {
            assert_eq!(got.get(&line(f, i)), Some(&1), "file {f} line {i}");
        }
    }
    assert_eq!(count(&got), total);
    // The kills did land in the middle of files: later runs continued them.
    let resumed = resumed(runs + 1);
    assert!(resumed >= 1, "no run continued a partly logged file");
    eprintln!(
        "{runs} kills; {resumed} of {} runs continued a partly logged file",
        runs + 1
    );
}
