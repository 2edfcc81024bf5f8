//! Tests of the sled store: lineage, state, pruning, damage, migration.

use super::*;
use crate::checkpoint::records::{StoreMeta, META_FORMAT, STORE_FORMAT_VERSION};
use crate::checkpoint::{CheckpointError, Damage, StreamRange};
use crate::codec;
use crate::dstream::{EngineError, StateChange, StateStore};

/// A delta with fixed encoded changes.
struct Fixed {
    op: String,
    changes: Vec<StateChange>,
}

impl StateDelta for Fixed {
    fn op(&self) -> &str {
        &self.op
    }
    fn len(&self) -> usize {
        self.changes.len()
    }
    fn encode(&self) -> Result<Vec<StateChange>, codec::CodecError> {
        Ok(self.changes.clone())
    }
    fn apply(&self, _store: &mut StateStore) -> Result<(), EngineError> {
        Ok(())
    }
}

fn delta(op: &str, changes: &[(&str, Option<&str>)]) -> Box<dyn StateDelta> {
    Box::new(Fixed {
        op: op.into(),
        changes: changes
            .iter()
            .map(|(k, v)| StateChange {
                key: k.as_bytes().to_vec(),
                value: v.map(|v| v.as_bytes().to_vec()),
            })
            .collect(),
    })
}

fn spec(t: u64, start: u64, end: u64) -> BatchSpec {
    BatchSpec {
        time_ms: t,
        zero_ms: 0,
        ranges: vec![StreamRange {
            source: "in".into(),
            start,
            end,
        }],
    }
}

fn pairs(v: Option<Vec<(Vec<u8>, Vec<u8>)>>) -> Vec<(String, String)> {
    v.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).expect("k"),
                String::from_utf8(v).expect("v"),
            )
        })
        .collect()
}

#[test]
fn lineage_and_state_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        assert_eq!(s.last_allocated().expect("last"), None);
        s.allocate(&spec(1000, 0, 10)).expect("allocate");
        s.commit(
            1000,
            &[delta("counts", &[("a", Some("1")), ("b", Some("2"))])],
        )
        .expect("commit");
        s.allocate(&spec(2000, 10, 25)).expect("allocate");
    }
    let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("reopen");
    assert_eq!(s.pending().expect("pending"), vec![spec(2000, 10, 25)]);
    assert_eq!(s.last_allocated().expect("last"), Some(spec(2000, 10, 25)));
    assert_eq!(
        pairs(s.load_state("counts").expect("load")),
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    s.commit(2000, &[delta("counts", &[("a", None), ("c", Some("3"))])])
        .expect("commit");
    assert_eq!(
        pairs(s.load_state("counts").expect("load")),
        vec![("b".into(), "2".into()), ("c".into(), "3".into())]
    );
    assert!(s.pending().expect("pending").is_empty());
    assert_eq!(s.state_sizes().expect("sizes"), vec![("counts".into(), 2)]);
}

/// A fresh store with batch 1000 allocated.
fn with_batch_1000() -> (tempfile::TempDir, SledCheckpointStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
    s.allocate(&spec(1000, 0, 1)).expect("allocate");
    (dir, s)
}

#[test]
fn two_deltas_of_one_operator_in_a_batch_both_land() {
    let (_dir, mut s) = with_batch_1000();
    s.commit(
        1000,
        &[
            delta("c", &[("a", Some("1")), ("b", Some("1"))]),
            delta("c", &[("b", Some("2")), ("d", Some("3"))]),
        ],
    )
    .expect("commit");
    let mut got = pairs(s.load_state("c").expect("load"));
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("d".into(), "3".into())
        ]
    );
    assert_eq!(s.state_sizes().expect("sizes"), vec![("c".into(), 3)]);
}

#[test]
fn operators_do_not_see_each_others_state() {
    let (_dir, mut s) = with_batch_1000();
    // "ab" + key "c" must not collide with "a" + key "bc".
    s.commit(
        1000,
        &[
            delta("ab", &[("c", Some("1"))]),
            delta("a", &[("bc", Some("2"))]),
        ],
    )
    .expect("commit");
    assert_eq!(
        pairs(s.load_state("ab").expect("load")),
        vec![("c".into(), "1".into())]
    );
    assert_eq!(
        pairs(s.load_state("a").expect("load")),
        vec![("bc".into(), "2".into())]
    );
    assert_eq!(s.load_state("zz").expect("load"), None);
}

#[test]
fn refuses_out_of_order_and_unknown_or_repeated_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
    s.allocate(&spec(2000, 0, 1)).expect("allocate");
    assert!(matches!(
        s.allocate(&spec(2000, 1, 2)),
        Err(CheckpointError::OutOfOrder { .. })
    ));
    assert!(matches!(
        s.commit(3000, &[]),
        Err(CheckpointError::NotPending { time_ms: 3000 })
    ));
    s.commit(2000, &[]).expect("commit");
    assert!(matches!(
        s.commit(2000, &[]),
        Err(CheckpointError::NotPending { time_ms: 2000 })
    ));
}

#[test]
fn completed_records_are_pruned_to_the_limit_but_the_last_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SledConfig {
        completed_batches_max: 3,
        ..SledConfig::default()
    };
    let mut s = SledCheckpointStore::open(dir.path(), config).expect("open");
    for i in 1..=10u64 {
        s.allocate(&spec(i * 1000, i, i + 1)).expect("allocate");
        s.commit(i * 1000, &[]).expect("commit");
    }
    let kept: Vec<u64> = s
        .completed()
        .expect("completed")
        .iter()
        .map(|b| b.time_ms)
        .collect();
    assert_eq!(kept, vec![8000, 9000, 10000]);
    assert_eq!(
        s.last_allocated().expect("last").map(|b| b.time_ms),
        Some(10000)
    );
}

#[test]
fn a_damaged_value_is_named_not_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        s.db.insert(batch_key(5000), &b"\xff\xff garbage"[..])
            .expect("insert");
        s.flush().expect("flush");
    }
    // Open reads the batch log, so the damage stops it there.
    let e = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect_err("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("does not decode") && msg.contains("b/"),
        "{msg}"
    );
}

/// A store whose operator `counts` has its bucket 0 cut short after the
/// entry count (a bucket of 5 bytes claiming 9 entries).
fn with_damaged_bucket() -> (tempfile::TempDir, SledCheckpointStore) {
    let (dir, mut s) = with_batch_1000();
    s.commit(1000, &[delta("counts", &[("a", Some("1"))])])
        .expect("commit");
    let k = state_key(&state_prefix("counts").expect("prefix"), 0);
    s.db.insert(&k, &[1u8, 9, 0, 0, 0][..]).expect("insert");
    (dir, s)
}

#[test]
fn a_damaged_bucket_is_named_not_skipped() {
    let (_dir, s) = with_damaged_bucket();
    let msg = s.load_state("counts").expect_err("must fail").to_string();
    assert!(
        msg.contains("s/") && msg.contains("at byte 5: key length needs 4 bytes, 0 left"),
        "{msg}"
    );
}

#[test]
fn a_version_1_store_is_migrated_and_a_newer_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A format 1 store: one value per key under `s/` + name + key.
        let mut s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        s.allocate(&spec(1000, 0, 5)).expect("allocate");
        s.commit(1000, &[]).expect("commit");
        s.allocate(&spec(2000, 5, 9)).expect("allocate");
        let v1 = codec::encode(&StoreMeta::V1 { format_version: 1 }).expect("encode");
        s.db.insert(META_FORMAT, v1).expect("insert");
        // "\0\0\0\0" under `c` has the very key of `c`'s bucket 0.
        for (op, k, v) in [
            ("counts", "a", "1"),
            ("counts", "b", "2"),
            ("c", "x", "9"),
            ("c", "\0\0\0\0", "0"),
        ] {
            let mut key = state_prefix(op).expect("prefix");
            key.extend_from_slice(k.as_bytes());
            s.db.insert(key, v.as_bytes()).expect("insert");
        }
        s.flush().expect("flush");
    }
    let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("migrates");
    let mut counts = pairs(s.load_state("counts").expect("load"));
    counts.sort();
    assert_eq!(
        counts,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(
        pairs(s.load_state("c").expect("load")),
        vec![("\0\0\0\0".into(), "0".into()), ("x".into(), "9".into())]
    );
    assert_eq!(
        s.state_sizes().expect("sizes"),
        vec![("c".into(), 2), ("counts".into(), 2)]
    );
    assert_eq!(s.pending().expect("pending"), vec![spec(2000, 5, 9)]);
    let meta: StoreMeta =
        codec::decode(&s.get(META_FORMAT).expect("get").expect("meta")).expect("decode");
    assert_eq!(meta, StoreMeta::V1 { format_version: 2 });
    let v3 = codec::encode(&StoreMeta::V1 { format_version: 3 }).expect("encode");
    s.db.insert(META_FORMAT, v3).expect("insert");
    s.flush().expect("flush");
    drop(s);
    let msg = SledCheckpointStore::open(dir.path(), SledConfig::default())
        .expect_err("refused")
        .to_string();
    assert!(
        msg.contains("format version 3; this build reads versions 1 and 2")
            && msg.contains("new data directory"),
        "{msg}"
    );
}

#[test]
fn many_keys_spread_over_buckets_and_read_back_one_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SledConfig {
        bucket_keys_target: 4,
        ..SledConfig::default()
    };
    let mut s = SledCheckpointStore::open(dir.path(), config.clone()).expect("open");
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    s.allocate(&spec(1000, 0, 1)).expect("allocate");
    let changes: Vec<(&str, Option<&str>)> = keys.iter().map(|k| (k.as_str(), Some("v"))).collect();
    s.commit(1000, &[delta("big", &changes)]).expect("commit");
    s.allocate(&spec(2000, 1, 2)).expect("allocate");
    s.commit(2000, &[delta("big", &[("k7", None), ("k8", Some("w"))])])
        .expect("commit");
    drop(s);
    let s = SledCheckpointStore::open(dir.path(), config).expect("reopen");
    assert_eq!(s.state_sizes().expect("sizes"), vec![("big".into(), 299)]);
    let buckets = s.db.scan_prefix(state_prefix("big").expect("p")).count();
    // 299 keys at 4 a bucket: 75 buckets addressed, a few may be empty.
    assert!((60..=75).contains(&buckets), "{buckets} buckets");
    let r = s.state_reader();
    assert_eq!(r.get("big", b"k8").expect("get"), Some(b"w".to_vec()));
    assert_eq!(r.get("big", b"k7").expect("get"), None);
    assert_eq!(r.get("big", b"k299").expect("get"), Some(b"v".to_vec()));
    assert_eq!(r.get("other", b"k1").expect("get"), None);
    let mut all = pairs(s.load_state("big").expect("load"));
    all.sort();
    let mut want: Vec<(String, String)> = keys
        .iter()
        .filter(|k| *k != "k7")
        .map(|k| (k.clone(), if k == "k8" { "w" } else { "v" }.to_string()))
        .collect();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn each_kind_of_damage_has_its_own_variant() {
    // A bucket cut short: the offset is where decoding stopped.
    let (dir, s) = with_damaged_bucket();
    match s.load_state("counts") {
        Err(CheckpointError::Damaged { key, detail, .. }) => {
            assert!(key.starts_with("`s/"), "{key}");
            assert_eq!(detail.offset(), Some(5));
            assert!(matches!(detail, Damage::Bucket(_)));
        }
        other => panic!("not a damaged bucket: {other:?}"),
    }
    // A sound batch record under another batch's key.
    let moved = s.db.get(batch_key(1000)).expect("get").expect("record");
    s.db.insert(batch_key(7000), moved).expect("insert");
    s.flush().expect("flush");
    drop(s);
    match SledCheckpointStore::open(dir.path(), SledConfig::default()) {
        Err(CheckpointError::Damaged {
            detail:
                Damage::Field {
                    field,
                    found,
                    expected,
                },
            ..
        }) => {
            assert_eq!(field, "batch time");
            assert_eq!(found, "1000 ms");
            assert!(expected.starts_with("7000 ms"), "{expected}");
        }
        other => panic!("not a damaged batch record: {other:?}"),
    }
}

#[test]
fn a_newer_format_and_a_held_lock_are_told_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
        let busy = SledCheckpointStore::open(dir.path(), SledConfig::default())
            .expect_err("sled lets one opener at a time");
        assert!(
            matches!(&busy, CheckpointError::LockHeld { dir: d, .. } if d == dir.path()),
            "{busy}"
        );
        let v3 = codec::encode(&StoreMeta::V1 { format_version: 3 }).expect("encode");
        s.db.insert(META_FORMAT, v3).expect("insert");
        s.flush().expect("flush");
    }
    match SledCheckpointStore::open(dir.path(), SledConfig::default()) {
        Err(CheckpointError::NewerFormat {
            found, supported, ..
        }) => assert_eq!((found, supported), (3, STORE_FORMAT_VERSION)),
        other => panic!("not refused as newer: {other:?}"),
    }
}

#[test]
fn a_new_store_has_a_data_dir_id_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("open");
    let id = s.data_dir_id().expect("read").expect("an id at birth");
    drop(s);
    let s = SledCheckpointStore::open(dir.path(), SledConfig::default()).expect("reopen");
    assert_eq!(s.data_dir_id().expect("read"), Some(id));
}

#[test]
fn a_store_whose_files_lost_everything_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = dir.path().join("checkpoint");
    {
        let mut s = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect("open");
        s.allocate(&spec(1000, 0, 5)).expect("allocate");
        s.commit(1000, &[]).expect("commit");
    }
    // The database file cut to nothing, no snapshot: sled opens it empty.
    for e in std::fs::read_dir(&ckpt).expect("list").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") {
            std::fs::remove_file(e.path()).expect("remove");
        }
    }
    std::fs::write(ckpt.join("db"), b"").expect("truncate");
    let e = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect_err("refused");
    assert!(matches!(e, CheckpointError::Emptied { .. }), "{e}");
    let m = e.to_string();
    assert!(
        m.contains(ckpt.to_str().expect("utf-8")) && m.contains("restore"),
        "{m}"
    );
}

/// A committed store, closed, beside a snapshot file `name` sled left
/// unfinished (a SIGKILL inside its snapshot write) holding `contents`.
fn store_with_unfinished_snapshot(name: &str, contents: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = dir.path().join("checkpoint");
    {
        let mut s = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect("open");
        s.allocate(&spec(1000, 0, 5)).expect("allocate");
        s.commit(1000, &[]).expect("commit");
    }
    std::fs::write(ckpt.join(name), contents).expect("write");
    dir
}

#[test]
fn a_snapshot_sled_never_finished_is_removed_and_the_store_opens() {
    let cases: [(&str, &[u8]); 3] = [
        ("snap.FFFFFFFFFFFFFFFE.generating", b""),
        ("snap.FFFFFFFFFFFFFFFF.generating", b""),
        ("snap.FFFFFFFFFFFFFFFF.generating", &[0xAB; 100]),
    ];
    for (name, contents) in cases {
        let dir = store_with_unfinished_snapshot(name, contents);
        let ckpt = dir.path().join("checkpoint");
        // sled alone refuses it: the state a kill leaves is reproduced.
        // (sled lets go of its file lock a moment after the store above
        // closed: a held lock is waited for, as `open_db` does.)
        let deadline = Instant::now() + LOCK_WAIT_MAX;
        let raw = loop {
            let raw = sled::Config::new().path(&ckpt).flush_every_ms(None).open();
            match &raw {
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(LOCK_POLL)
                }
                _ => break raw,
            }
        };
        assert!(
            matches!(raw, Err(sled::Error::Corruption { .. })),
            "{raw:?}"
        );
        drop(raw);
        let s = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect("opens");
        let batches: Vec<_> = s.batches().collect::<Result<_, _>>().expect("read");
        assert_eq!(batches.len(), 1);
        assert!(batches[0].completed && batches[0].time_ms == 1000);
        let left = std::fs::read_dir(&ckpt).expect("list").flatten();
        assert!(left
            .into_iter()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".generating")));
    }
}

#[test]
fn a_damaged_finished_snapshot_is_still_refused() {
    let dir = store_with_unfinished_snapshot("snap.FFFFFFFFFFFFFFFF", &[0xAB; 100]);
    let ckpt = dir.path().join("checkpoint");
    let e = SledCheckpointStore::open(&ckpt, SledConfig::default()).expect_err("refused");
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    assert!(ckpt.join("snap.FFFFFFFFFFFFFFFF").exists(), "never removed");
}
