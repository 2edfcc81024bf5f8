//! WAL behaviour on real files: round trips, segment rolling, reopen,
//! cleanup, limits, concurrency and async appends. Tiny segments make the
//! rare paths (rolling, sealing, index seeks) run on every test.

use std::sync::Arc;

use weir::wal::{SyncPolicy, Wal, WalConfig, WalError};

fn tiny() -> WalConfig {
    WalConfig {
        segment_bytes_max: 512,
        record_bytes_max: 200,
        index_interval_bytes: 64,
        read_chunk_bytes: 48,
        ..WalConfig::default()
    }
}

fn rec(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "y".repeat((i % 37) as usize)).into_bytes()
}

fn read_all(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.read(wal.first_lsn()..wal.end())
        .expect("range")
        .map(|r| {
            let r = r.expect("record");
            (r.lsn, r.payload)
        })
        .collect()
}

#[test]
fn append_read_round_trip_across_many_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, report) = Wal::open(dir.path(), tiny()).expect("open");
    assert!(report.created);
    let mut expected = Vec::new();
    for chunk in 0..40u64 {
        let recs: Vec<Vec<u8>> = (chunk * 5..chunk * 5 + 5).map(rec).collect();
        let range = wal.append(&recs).expect("append");
        assert_eq!(range, chunk * 5..chunk * 5 + 5);
        expected.extend(
            recs.into_iter()
                .enumerate()
                .map(|(i, r)| (chunk * 5 + i as u64, r)),
        );
    }
    assert!(wal.segments().len() > 10, "tiny segments must roll");
    assert_eq!(read_all(&wal), expected);
    // Reads starting mid-log, in every segment, use the index and agree.
    for start in [0u64, 1, 17, 63, 64, 150, 199] {
        let got: Vec<u64> = wal
            .read(start..200)
            .expect("range")
            .map(|r| r.expect("record").lsn)
            .collect();
        assert_eq!(got, (start..200).collect::<Vec<_>>());
    }
    let stats = wal.stats();
    assert_eq!(stats.records, 200);
    assert!(stats.fsyncs >= 40, "group commit syncs every append here");
    drop(wal);

    let (wal, report) = Wal::open(dir.path(), tiny()).expect("reopen");
    assert!(!report.created);
    assert_eq!(report.next_lsn, 200);
    assert_eq!(report.torn_tail, None);
    assert_eq!(read_all(&wal), expected);
    assert_eq!(
        wal.append(&[b"after".as_slice()]).expect("append"),
        200..201
    );
}

#[test]
fn every_segment_respects_its_size_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), tiny()).expect("open");
    for i in 0..100 {
        wal.append(&[rec(i)]).expect("append");
    }
    for (_, path, _) in wal.segments() {
        let len = std::fs::metadata(&path).expect("meta").len();
        assert!(len <= 512, "{} is {len} bytes", path.display());
    }
}

#[test]
fn cleanup_keeps_every_segment_at_or_above_the_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), tiny()).expect("open");
    for i in 0..100 {
        wal.append(&[rec(i)]).expect("append");
    }
    let before = wal.segments();
    let removed = wal.remove_segments_below(50).expect("cleanup");
    assert!(removed > 0);
    let after = wal.segments();
    assert_eq!(after.len() + removed, before.len());
    // The oldest kept segment holds record 49 or earlier... never past 50.
    assert!(wal.first_lsn() <= 50);
    for (_, _, sealed_end) in &before[..removed] {
        assert!(sealed_end.expect("removed segments are sealed") <= 50);
    }
    let got: Vec<u64> = wal
        .read(50..100)
        .expect("range")
        .map(|r| r.expect("record").lsn)
        .collect();
    assert_eq!(got, (50..100).collect::<Vec<_>>());
    let err = wal.read(0..10).expect_err("cleaned range");
    assert!(matches!(err, WalError::OutOfRange { .. }), "{err}");
    // Cleanup never removes the active segment, even for a cut past the end.
    wal.remove_segments_below(u64::MAX).expect("cleanup");
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.first_lsn(), wal.segments()[0].0);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), tiny()).expect("reopen after cleanup");
    assert_eq!(wal.end(), 100);
}

#[test]
fn a_failed_segment_deletion_is_counted_kept_listed_and_retried() {
    use weir::storage::sim::{Fault, SimFs};
    let fs = Arc::new(SimFs::new());
    let dir = std::path::Path::new("/wal");
    let (wal, _) = Wal::open_with(fs.clone(), dir, tiny()).expect("open");
    for i in 0..100 {
        wal.append(&[rec(i)]).expect("append");
    }
    let before = wal.segments();
    assert!(before.len() > 3, "{} segments", before.len());
    fs.set_fault(Fault::FailRemoveFrom(2));
    let err = wal
        .remove_segments_below(80)
        .expect_err("the second deletion fails");
    assert!(err.to_string().contains("delete segment"), "{err}");
    let st = wal.stats();
    assert_eq!(st.segment_removals_failed, 1);
    assert_eq!(st.segments_removed, 1);
    // The segment that failed, and every one after it, are still listed:
    // the next call retries them, and their bytes are reported as kept.
    assert_eq!(wal.segments()[..], before[1..]);
    let kept = wal.kept_bytes_below(80);
    assert!(kept > 0);
    assert_eq!(wal.stats().kept_bytes, kept);
    let err = wal.remove_segments_below(80).expect_err("still failing");
    assert!(err.to_string().contains("delete segment"), "{err}");
    assert_eq!(wal.stats().segment_removals_failed, 2);
    fs.clear_faults();
    let removed = wal.remove_segments_below(80).expect("retried");
    assert!(removed > 0);
    assert_eq!(wal.kept_bytes_below(80), 0);
    assert!(wal.first_lsn() <= 80 && wal.first_lsn() > 0);
    let got = wal.read(wal.first_lsn()..100).expect("range").count() as u64;
    assert_eq!(got, 100 - wal.first_lsn());
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        append_records_max: 3,
        ..tiny()
    };
    let (wal, _) = Wal::open(dir.path(), config).expect("open");
    let err = wal.append(&[vec![0u8; 201]]).expect_err("too large");
    assert!(err.to_string().contains("record_bytes_max = 200"), "{err}");
    let err = wal.append(&[b"a", b"b", b"c", b"d"]).expect_err("too many");
    assert!(matches!(err, WalError::AppendTooLarge { .. }), "{err}");
    assert_eq!(wal.end(), 0, "a refused append writes nothing");
    assert_eq!(wal.append(&[vec![7u8; 200]]).expect("max size fits"), 0..1);
    let err = wal.read(0..2).expect_err("past the end");
    assert!(err.to_string().contains("requested"), "{err}");
}

#[test]
fn concurrent_appenders_get_dense_disjoint_ranges_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        segment_bytes_max: 4096,
        pending_appends_max: 4,
        ..tiny()
    };
    let (wal, _) = Wal::open(dir.path(), config).expect("open");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut ranges = Vec::new();
                for i in 0..50u64 {
                    let recs: Vec<Vec<u8>> = (0..3)
                        .map(|j| format!("t{t}-{i}-{j}").into_bytes())
                        .collect();
                    ranges.push(wal.append(&recs).expect("append"));
                }
                ranges
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    all.sort_by_key(|r| r.start);
    let mut next = 0;
    for r in &all {
        assert_eq!(r.start, next, "ranges are dense and disjoint");
        assert_eq!(r.end - r.start, 3);
        next = r.end;
    }
    assert_eq!(wal.end(), 8 * 50 * 3);
    let stats = wal.stats();
    assert!(
        stats.fsyncs <= stats.appends,
        "one fsync may cover several appends"
    );
    // Within a thread, records keep their order.
    let records = read_all(&wal);
    for t in 0..8 {
        let seq: Vec<String> = records
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).expect("utf8"))
            .filter(|s| s.starts_with(&format!("t{t}-")))
            .collect();
        let expected: Vec<String> = (0..50)
            .flat_map(|i| (0..3).map(move |j| format!("t{t}-{i}-{j}")))
            .collect();
        assert_eq!(seq, expected);
    }
}

#[test]
fn async_appends_from_a_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), tiny()).expect("open");
    let wal = Arc::new(wal);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let total: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..16 {
            let wal = Arc::clone(&wal);
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                for i in 0..20 {
                    let r = wal
                        .append_async(&[format!("a{t}-{i}")])
                        .await
                        .expect("append");
                    n += r.end - r.start;
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        total
    });
    assert_eq!(total, 320);
    assert_eq!(wal.end(), 320);
}

#[test]
fn no_sync_policy_acknowledges_without_fsync_and_sync_makes_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        sync: SyncPolicy::NoSyncUnsafe,
        segment_bytes_max: 1 << 20,
        ..tiny()
    };
    let (wal, _) = Wal::open(dir.path(), config).expect("open");
    for i in 0..10 {
        wal.append(&[rec(i)]).expect("append");
    }
    assert_eq!(wal.end(), 10);
    assert_eq!(wal.stats().fsyncs, 0);
    assert_eq!(wal.durable_end(), 0);
    assert_eq!(wal.sync().expect("sync"), 10);
    assert_eq!(wal.durable_end(), 10);
    assert_eq!(wal.stats().fsyncs, 1);
}

#[test]
fn empty_append_returns_an_empty_range_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), tiny()).expect("open");
    wal.append(&[b"x"]).expect("append");
    let none: [&[u8]; 0] = [];
    assert_eq!(wal.append(&none).expect("empty"), 1..1);
}
