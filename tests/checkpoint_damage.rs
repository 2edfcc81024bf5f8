//! A damaged checkpoint, with the real binary: the sled files of a real
//! checkpoint truncated at several offsets. `weir run`, `weir checkpoint
//! show`, `weir status` and `weir kv scan` each exit 1 (never 101, never
//! a panic or a backtrace) with a message that names the checkpoint
//! directory and the ways out.

mod service_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use service_common::{all_lines, line_with, spawn_logged, weir};

const PIPELINE: &str = r#"
[pipeline]
batch_interval = "100ms"
[service]
http_address = "off"
[[source]]
id = "tweets_in"
kind = "generator"
rate = 50
lines_per_record = 20
separator = " __end "
[[step]]
id = "tweets"
op = "split"
separator = "__end"
[[step]]
id = "words"
op = "split"
[[step]]
id = "word_counts"
op = "count_by_key"
[[sink]]
kind = "kv"
table = "word_counts"
"#;

/// A data directory whose checkpoint holds committed state (a few
/// batches of word counts), stopped gracefully or killed.
fn checkpointed(root: &Path, kill: bool) -> (PathBuf, PathBuf) {
    let p = root.join("p.toml");
    std::fs::write(&p, PIPELINE).expect("write");
    let data = root.join(if kill { "killed" } else { "stopped" });
    let (mut g, rx) = spawn_logged(weir().arg("run").arg(&p).arg("--data-dir").arg(&data));
    // READY comes after the first new batch committed.
    line_with(&rx, "ready");
    g.signal(if kill { "KILL" } else { "TERM" });
    g.wait_exit(Duration::from_secs(30));
    let kv = weir()
        .args(["kv", "scan"])
        .arg(&data)
        .arg("word_counts")
        .output()
        .expect("kv scan");
    assert!(
        kv.status.success() && !kv.stdout.is_empty(),
        "no state committed"
    );
    (p, data)
}

/// Copies `from` to `to` (a fresh directory).
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp")
        .success();
    assert!(ok);
}

/// Every command on `data`: exit 1 with a message naming the checkpoint
/// and the ways out, no panic.
fn all_refuse(p: &Path, data: &Path, what: &str) {
    let ckpt = data.join("checkpoint");
    let ckpt = ckpt.to_str().expect("utf-8");
    let offline: [&[&str]; 3] = [
        &["checkpoint", "show"],
        &["status"],
        &["kv", "scan", "@", "word_counts"],
    ];
    for args in offline {
        let mut c = weir();
        for a in args.iter().filter(|a| **a != "@") {
            c.arg(a);
        }
        if args.contains(&"@") {
            // `kv scan DATA TABLE`: the directory before the table.
            c = weir();
            c.args(["kv", "scan"]).arg(data).arg("word_counts");
        } else {
            c.arg(data);
        }
        let out = c.output().expect("weir");
        check(
            what,
            &format!("{args:?}"),
            out.status.code(),
            &String::from_utf8_lossy(&out.stderr),
            ckpt,
        );
    }
    let (mut g, rx) = spawn_logged(weir().arg("run").arg(p).arg("--data-dir").arg(data));
    let code = g.wait_exit(Duration::from_secs(30)).code();
    let err = all_lines(&rx);
    check(what, "run", code, &err, ckpt);
}

fn check(what: &str, cmd: &str, code: Option<i32>, err: &str, ckpt: &str) {
    assert_eq!(code, Some(1), "{what}: weir {cmd} exited {code:?}: {err}");
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(
            !err.contains(bad),
            "{what}: weir {cmd} printed {bad:?}: {err}"
        );
    }
    for needle in [ckpt, "restore", "new data directory"] {
        assert!(
            err.contains(needle),
            "{what}: weir {cmd}: no {needle:?} in: {err}"
        );
    }
}

#[test]
fn a_truncated_checkpoint_is_refused_by_every_command_without_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kill in [false, true] {
        let (p, data) = checkpointed(dir.path(), kill);
        // sled preallocates: the bytes in use end at the last non-zero
        // byte. `kv scan` above closed the store cleanly, so sled wrote
        // a snapshot: a cut below what it covers is damage sled sees
        // (with a killed store it panicked inside sled).
        let bytes = std::fs::read(data.join("checkpoint/db")).expect("db");
        let used = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i as u64 + 1);
        assert!(used > 1000, "sled wrote {used} bytes");
        let t = dir.path().join("t");
        // Seven points: the empty file, inside sled's first segment
        // header, inside the first page, an eighth, a quarter, a half and
        // three quarters of the bytes in use.
        let points = [0, 1, 100, used / 8, used / 4, used / 2, used / 4 * 3];
        for at in points {
            copy_dir(&data, &t);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(t.join("checkpoint/db"))
                .expect("open db");
            f.set_len(at).expect("truncate");
            drop(f);
            all_refuse(
                &p,
                &t,
                &format!("db cut at {at} of {used} (killed: {kill})"),
            );
        }
    }
}
