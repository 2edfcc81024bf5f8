//! Torn tail versus damage, from outside (issue 13, item 3): the real
//! `weir` binary runs an ingest pipeline, `weir feed` sends 100 records
//! (acknowledged, so fsynced), the service stops; then the active segment
//! is damaged by hand. Bytes the synced-end marker covers must never be
//! cut as a torn tail: `weir wal verify` exits 1 naming the records and
//! `weir run` refuses to start naming the missing range. Bytes after the
//! marker (a genuine torn write) are still cut and logged.

mod service_common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use service_common::{feed_file, line_with, spawn_logged, start_ingest, weir};

const PIPELINE: &str = service_common::INGEST_TO_FILES;

/// A tempdir with the pipeline file; 100 records fed into its data
/// directory, processed, and the service stopped cleanly.
struct Fed {
    dir: tempfile::TempDir,
}

impl Fed {
    fn pipeline(&self) -> PathBuf {
        self.dir.path().join("p.toml")
    }
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn wal(&self) -> PathBuf {
        self.data().join("wal").join("events")
    }
    /// The active (here: only) segment.
    fn segment(&self) -> PathBuf {
        self.wal().join("00000000000000000000.wal")
    }
}

fn fed() -> Fed {
    let f = Fed {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    fs::write(f.pipeline(), PIPELINE).expect("write pipeline");
    let input = f.dir.path().join("numbers.txt");
    let text: String = (0..100).map(|i| format!("{i}\n")).collect();
    fs::write(&input, text).expect("write input");
    let (mut g, addr, rx) = start_ingest(&f.pipeline(), &f.data());
    line_with(&rx, "ready");
    feed_file(&addr, &input, "t");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let v = verify(&f.wal());
    let text = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(v.status.success(), "{text}");
    assert!(
        text.contains("synced end: records below 100 were fsynced"),
        "the marker covers every acknowledged record: {text}"
    );
    f
}

fn verify(wal: &Path) -> Output {
    weir()
        .args(["wal", "verify"])
        .arg(wal)
        .output()
        .expect("verify")
}

/// `weir run` on the damaged directory: it must refuse, exit non-zero,
/// and say `needle`; returns its stderr.
fn run_refused(f: &Fed, needle: &str) -> String {
    let out = weir()
        .arg("run")
        .arg(f.pipeline())
        .arg("--data-dir")
        .arg(f.data())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "weir run started on a damaged log: {err}"
    );
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(err.contains("weir wal repair"), "says what to do: {err}");
    err
}

/// Offsets where each frame of the segment image starts.
fn frame_starts(seg: &[u8]) -> Vec<usize> {
    let mut at = 32;
    let mut starts = Vec::new();
    while at + 16 <= seg.len() {
        starts.push(at);
        let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("len"));
        at += 16 + len as usize;
    }
    starts
}

#[test]
fn a_flipped_bit_in_the_last_acknowledged_record_is_damage_not_a_torn_tail() {
    let f = fed();
    let mut seg = fs::read(f.segment()).expect("read");
    let last = seg.len() - 1;
    seg[last] ^= 0x04;
    fs::write(f.segment(), &seg).expect("write");
    let v = verify(&f.wal());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(!v.status.success(), "verify called it healthy: {text}");
    assert!(
        text.contains("CORRUPT") && text.contains("records 99..100 are missing"),
        "{text}"
    );
    run_refused(&f, "records 99..100 are missing");
    // Nothing was cut: the damaged record is still there for a repair or
    // a restore.
    assert_eq!(fs::read(f.segment()).expect("read").len(), seg.len());
}

#[test]
fn a_segment_cut_at_a_record_boundary_or_deleted_is_refused_naming_the_range() {
    let f = fed();
    let seg = fs::read(f.segment()).expect("read");
    let starts = frame_starts(&seg);
    assert_eq!(starts.len(), 100);
    let file = OpenOptions::new()
        .write(true)
        .open(f.segment())
        .expect("open");
    file.set_len(starts[90] as u64).expect("truncate");
    drop(file);
    let v = verify(&f.wal());
    assert!(!v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("records 90..100 are missing"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    run_refused(&f, "records 90..100 are missing");

    fs::remove_file(f.segment()).expect("delete the active segment");
    let err = run_refused(&f, "records 0..100 are missing");
    assert!(err.contains("segment file is missing"), "{err}");
}

#[test]
fn bytes_after_the_synced_end_are_a_torn_tail_but_a_long_zero_run_is_damage() {
    let f = fed();
    let len = fs::metadata(f.segment()).expect("meta").len();
    // Zeros of one sector after the synced end: a torn write.
    let mut file = OpenOptions::new()
        .append(true)
        .open(f.segment())
        .expect("open");
    file.write_all(&[0u8; 512]).expect("zeros");
    drop(file);
    let v = verify(&f.wal());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && text.contains("torn tail: 512 bytes"),
        "{text}"
    );
    // One more zero byte: more than a torn sector leaves.
    let mut file = OpenOptions::new()
        .append(true)
        .open(f.segment())
        .expect("open");
    file.write_all(&[0u8; 1]).expect("zero");
    drop(file);
    let v = verify(&f.wal());
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(!v.status.success(), "{text}");
    assert!(text.contains("513 zero bytes"), "{text}");
    run_refused(&f, "513 zero bytes");

    // Garbage after the synced end instead: cut, logged, and the service
    // runs.
    let file = OpenOptions::new()
        .write(true)
        .open(f.segment())
        .expect("open");
    file.set_len(len).expect("truncate");
    drop(file);
    let mut file = OpenOptions::new()
        .append(true)
        .open(f.segment())
        .expect("open");
    file.write_all(&[0xAB; 40]).expect("garbage");
    drop(file);
    let (mut g, rx) = spawn_logged(
        weir()
            .arg("run")
            .arg(f.pipeline())
            .arg("--data-dir")
            .arg(f.data()),
    );
    let cut = line_with(&rx, "cut a torn tail");
    assert!(cut.contains("bytes_cut=40"), "{cut}");
    line_with(&rx, "ready");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(fs::metadata(f.segment()).expect("meta").len(), len);
}
