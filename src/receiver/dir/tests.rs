//! Unit tests of the directory stream: the record codecs, the release
//! hook, ignored names and the known-files bookkeeping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::known::{lock, persist, Known, KnownCell};
use super::records::*;
use super::scan::ignored_name;

fn progress(name: &str, lsn: u64) -> FileProgress {
    FileProgress {
        name: name.into(),
        identity: FileIdentity {
            inode: 7,
            size: 100,
            mtime_ns: 123_456_789,
        },
        first_line: 3,
        lines: 5,
        offset: 40,
        complete: false,
        lsn,
    }
}

#[test]
fn chunks_round_trip_and_reject_damage() {
    let p = progress("a.txt", 0);
    let rec = encode_chunk(&p, &["x", "", "héllo"]);
    let (q, lines) = decode_chunk(&rec).unwrap();
    assert_eq!(q, p);
    assert_eq!(lines, vec!["x", "", "héllo"]);
    for cut in 0..rec.len() {
        assert!(decode_chunk(&rec[..cut]).is_err(), "cut at {cut}");
    }
    let mut extra = rec.clone();
    extra.push(0);
    assert!(decode_chunk(&extra)
        .unwrap_err()
        .to_string()
        .contains("1 trailing bytes"));
    let mut bad = rec.clone();
    bad[0] = b'X';
    assert!(matches!(
        decode_chunk(&bad),
        Err(DirFormatError::Magic { .. })
    ));
}

#[test]
fn progress_round_trips_and_checks_its_crc() {
    let (a, b) = (progress("a", 9), progress("b", 12));
    let bytes = encode_progress(&[&a, &b]);
    assert_eq!(decode_progress(&bytes).unwrap(), vec![a, b]);
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    assert!(matches!(
        decode_progress(&bad),
        Err(DirFormatError::Checksum { .. })
    ));
    assert!(decode_progress(&bytes[..bytes.len() - 1]).is_err());
}

// The fuzz target's property, on mutated valid images.
proptest::proptest! {
    #[test]
    fn damaged_records_never_panic_and_decode_canonically(
        lines in proptest::collection::vec("[a-zé]{0,6}", 0..5),
        flips in proptest::collection::vec((0usize..400, 0u8..=255), 0..4),
        cut in 0usize..400,
        progress_file in proptest::bool::ANY,
    ) {
        let p = progress("n.txt", 4);
        let mut img = if progress_file {
            encode_progress(&[&p, &progress("m", 9)])
        } else {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            encode_chunk(&p, &refs)
        };
        check_canonical(&img);
        for (at, b) in flips {
            if !img.is_empty() {
                let i = at % img.len();
                img[i] = b;
            }
        }
        check_canonical(&img);
        check_canonical(&img[..cut.min(img.len())]);
    }
}

#[test]
fn the_release_hook_persists_released_chunks_and_refuses_cleanup_past_unrecorded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.progress");
    let cell = Arc::new(KnownCell::default());
    lock(&cell).learn(progress("a", 3));
    persist(&cell, &path, 3).unwrap();
    let on_disk = decode_progress(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, vec![progress("a", 3)]);
    // Record 3 is consumed but not recorded yet: a receiver records it
    // while the hook waits, and the hook succeeds.
    let c = cell.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        lock(&c).learn(progress("b", 4));
        c.learned.notify_all();
    });
    persist(&cell, &path, 4).unwrap();
    t.join().unwrap();
    let on_disk = decode_progress(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, vec![progress("a", 3), progress("b", 4)]);
    // Never recorded: cleanup is refused, the file stays as it was.
    let e = persist(&cell, &path, 9).unwrap_err().to_string();
    assert!(e.contains("not all recorded"), "{e}");
    assert_eq!(
        decode_progress(&std::fs::read(&path).unwrap())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn temp_and_hidden_names_are_ignored() {
    for n in [".x", "_SUCCESS", "a.tmp", "b._COPYING_", "c_COPYING_d"] {
        assert!(ignored_name(n), "{n}");
    }
    for n in ["a.txt", "tmp", "x.tmp.txt"] {
        assert!(!ignored_name(n), "{n}");
    }
}

#[test]
fn release_moves_only_released_chunks_and_prune_keeps_pinned_files() {
    let mut k = Known::default();
    k.learn(progress("a", 3));
    k.learn(progress("b", 5));
    k.release(4);
    assert_eq!(k.released.keys().collect::<Vec<_>>(), vec!["a"]);
    assert!(k.dirty);
    k.prune(&HashSet::new());
    // "b" has an unreleased chunk: kept; "a" is gone from the directory.
    assert!(k.current.contains_key("b") && !k.current.contains_key("a"));
    assert!(k.released.is_empty());
}
