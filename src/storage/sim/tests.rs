use super::*;
use std::collections::BTreeSet;

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A filesystem holding the durable, empty directory `/d`.
fn fs_with_dir() -> SimFs {
    let fs = SimFs::new();
    fs.create_dir_all(p("/d")).expect("create /d");
    fs
}

/// Creates `path` with `data`, syncs its data and its directory.
fn durable_file(fs: &SimFs, path: &str, data: &[u8]) -> Box<dyn StorageFile> {
    let mut f = fs.create_new(p(path)).expect("create");
    f.append(data).expect("append");
    f.sync_data().expect("sync_data");
    let parent = p(path).parent().expect("parent");
    fs.sync_dir(parent).expect("sync_dir");
    f
}

fn read_all(f: &dyn StorageFile) -> Vec<u8> {
    let len = usize::try_from(f.len().expect("len")).expect("len fits");
    let mut buf = vec![0; len];
    f.read_exact_at(&mut buf, 0).expect("read");
    buf
}

fn reopen(fs: &SimFs, path: &str) -> Vec<u8> {
    read_all(&*fs.open(p(path)).expect("open"))
}

/// Bytes that are never zero, so zero-filled sectors are recognisable.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_add(salt) % 251 + 1)
        .collect()
}

fn tear(sector_bytes: u64, seed: u64, zero_fill: bool) -> Tear {
    Tear::Sectors {
        sector_bytes,
        seed,
        zero_fill,
    }
}

fn assert_fault(err: io::Error, name: &str) {
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(err.to_string().contains(name), "{err} should name {name}");
}

#[test]
fn is_clone_debug_send_sync_and_clones_share_state() {
    fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
    assert_send_sync::<SimFs>();
    let fs = fs_with_dir();
    let other = fs.clone();
    durable_file(&other, "/d/a", b"x");
    assert_eq!(fs.live_bytes(p("/d/a")), Some(b"x".to_vec()));
    let f = fs.open(p("/d/a")).expect("open");
    assert!(format!("{fs:?} {f:?}").contains("SimFs"));
}

#[test]
fn unsynced_data_vanishes_on_crash() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    f.append(b"abc").expect("append");
    assert_eq!(fs.live_bytes(p("/d/a")), Some(b"abc".to_vec()));
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(vec![]));
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"");
}

#[test]
fn synced_data_survives_and_later_appends_do_not() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"hello");
    f.append(b" world").expect("append");
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"hello");
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"hello".to_vec()));
}

#[test]
fn unsynced_dir_entry_vanishes_even_if_data_synced() {
    let fs = fs_with_dir();
    let mut f = fs.create_new(p("/d/a")).expect("create");
    f.append(b"data").expect("append");
    f.sync_data().expect("sync");
    assert!(fs.exists(p("/d/a")).expect("exists"));
    assert_eq!(fs.durable_bytes(p("/d/a")), None);
    assert!(fs.list_durable(p("/d")).expect("list").is_empty());
    fs.crash(Tear::None);
    assert!(!fs.exists(p("/d/a")).expect("exists"));
    assert!(fs.list(p("/d")).expect("list").is_empty());
    let err = fs.open(p("/d/a")).expect_err("must be gone");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    // The name is free again.
    fs.create_new(p("/d/a")).expect("create again");
}

#[test]
fn removal_not_dir_synced_comes_back_after_crash() {
    let fs = fs_with_dir();
    drop(durable_file(&fs, "/d/a", b"keep"));
    fs.remove(p("/d/a")).expect("remove");
    assert!(!fs.exists(p("/d/a")).expect("exists"));
    assert_eq!(fs.list_durable(p("/d")).expect("list"), vec!["a"]);
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"keep");

    fs.remove(p("/d/a")).expect("remove");
    fs.sync_dir(p("/d")).expect("sync_dir");
    fs.crash(Tear::None);
    assert!(!fs.exists(p("/d/a")).expect("exists"));
    assert_eq!(fs.durable_bytes(p("/d/a")), None);
}

#[test]
fn removed_file_stays_readable_through_an_open_handle() {
    let fs = fs_with_dir();
    let f = durable_file(&fs, "/d/a", b"still here");
    fs.remove(p("/d/a")).expect("remove");
    fs.sync_dir(p("/d")).expect("sync_dir");
    assert_eq!(read_all(&*f), b"still here");
}

#[test]
fn truncate_then_crash_without_sync_restores_durable() {
    for t in [Tear::None, tear(512, 7, false), tear(1, 9, true)] {
        let fs = fs_with_dir();
        let data = pattern(3000, 1);
        let mut f = durable_file(&fs, "/d/a", &data);
        f.truncate(10).expect("truncate");
        assert_eq!(f.len().expect("len"), 10);
        assert_eq!(fs.durable_bytes(p("/d/a")), Some(data.clone()));
        fs.crash(t);
        assert_eq!(reopen(&fs, "/d/a"), data, "{t:?}");
    }
}

#[test]
fn truncate_then_sync_is_durable() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"0123456789");
    f.truncate(4).expect("truncate");
    f.sync_data().expect("sync");
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"0123");
}

#[test]
fn truncate_beyond_the_end_zero_extends() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"ab");
    f.truncate(4).expect("truncate");
    assert_eq!(read_all(&*f), b"ab\0\0");
}

#[test]
fn rewrite_after_truncate_is_never_torn() {
    for seed in 0..200 {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", &pattern(1000, 1));
        f.truncate(100).expect("truncate");
        f.append(&pattern(5000, 2)).expect("append");
        fs.crash(tear(512, seed, seed % 2 == 0));
        assert_eq!(reopen(&fs, "/d/a"), pattern(1000, 1), "seed {seed}");
    }
}

/// Durable length 700 (not sector-aligned), 10_000 unsynced bytes.
fn torn_outcome(sector: u64, seed: u64, zero_fill: bool) -> (Vec<u8>, Vec<u8>) {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", &pattern(700, 3));
    f.append(&pattern(10_000, 4)).expect("append");
    let live = fs.live_bytes(p("/d/a")).expect("live");
    fs.crash(tear(sector, seed, zero_fill));
    let after = reopen(&fs, "/d/a");
    // Whatever survived is durable now: a second crash changes nothing.
    fs.crash(tear(sector, seed ^ 1, zero_fill));
    assert_eq!(reopen(&fs, "/d/a"), after);
    (live, after)
}

#[test]
fn torn_crash_keeps_a_sector_aligned_prefix_never_less_than_durable() {
    for sector in [512u64, 4096] {
        let mut lengths = BTreeSet::new();
        for seed in 0..300 {
            let (live, after) = torn_outcome(sector, seed, false);
            let len = after.len();
            assert!(len >= 700, "sector {sector} seed {seed}: lost durable data");
            assert_eq!(after, live[..len], "sector {sector} seed {seed}");
            assert!(
                len == 700 || len == live.len() || (len as u64).is_multiple_of(sector),
                "sector {sector} seed {seed}: cut {len} not aligned"
            );
            lengths.insert(len);
        }
        assert!(
            lengths.contains(&700),
            "sector {sector}: never kept nothing"
        );
        assert!(lengths.contains(&10_700), "sector {sector}: never kept all");
        assert!(lengths.len() >= 4, "sector {sector}: {lengths:?}");
    }
}

#[test]
fn torn_crash_with_zero_fill_zeroes_the_torn_sector() {
    for sector in [512u64, 4096] {
        let mut saw_zeros = false;
        for seed in 0..300 {
            let (live, after) = torn_outcome(sector, seed, true);
            // pattern() never yields 0, so the data ends at the first 0.
            let cut = after.iter().position(|&b| b == 0).unwrap_or(after.len());
            assert!(cut >= 700, "sector {sector} seed {seed}");
            assert_eq!(after[..cut], live[..cut], "sector {sector} seed {seed}");
            assert!(after[cut..].iter().all(|&b| b == 0));
            assert!(cut == 700 || cut == live.len() || (cut as u64).is_multiple_of(sector));
            let boundary = (cut as u64 / sector + 1) * sector;
            // At most one 512-byte sector of zeros survives.
            let expected_len = if cut == live.len() {
                cut
            } else {
                (boundary.min(live.len() as u64) as usize).min(cut + super::ZERO_TAIL_BYTES_MAX)
            };
            assert_eq!(after.len(), expected_len, "sector {sector} seed {seed}");
            saw_zeros |= after.len() > cut;
        }
        assert!(saw_zeros, "sector {sector}: zero fill never happened");
    }
}

#[test]
fn torn_crash_is_deterministic_for_a_seed() {
    let run = |seed: u64| {
        let fs = fs_with_dir();
        let mut files = Vec::new();
        for name in ["/d/a", "/d/b", "/d/c"] {
            let mut f = durable_file(&fs, name, &pattern(100, 5));
            f.append(&pattern(20_000, 6)).expect("append");
            files.push(f);
        }
        fs.crash(tear(512, seed, false));
        ["/d/a", "/d/b", "/d/c"].map(|name| reopen(&fs, name))
    };
    let mut distinct = BTreeSet::new();
    for seed in 0..20 {
        let first = run(seed);
        assert_eq!(first, run(seed), "seed {seed}");
        distinct.insert(first);
    }
    assert!(distinct.len() > 1, "seeds make no difference");
}

#[test]
fn tear_none_keeps_nothing_unsynced() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"x");
    f.append(&pattern(9000, 0)).expect("append");
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"x");
}

#[test]
fn old_handles_fail_after_crash() {
    let fs = fs_with_dir();
    let mut old = durable_file(&fs, "/d/a", b"abc");
    fs.crash(Tear::None);
    assert_eq!(fs.crash_count(), 1);
    assert!(old.len().is_err());
    assert!(old.read_at(&mut [0; 3], 0).is_err());
    assert!(old.append(b"x").is_err());
    assert!(old.sync_data().is_err());
    assert!(old.truncate(0).is_err());
    let syncs = fs.sync_count();
    let mut new = fs.open(p("/d/a")).expect("open");
    drop(old);
    new.append(b"d").expect("append");
    new.sync_data().expect("sync");
    assert_eq!(fs.sync_count(), syncs + 1, "dead handles do not count");
    assert_eq!(read_all(&*new), b"abcd");
    fs.crash(Tear::None);
    assert!(new.len().is_err());
    assert_eq!(fs.crash_count(), 2);
}

#[test]
fn fail_sync_fires_once_at_the_nth_sync() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    let mut g = durable_file(&fs, "/d/b", b"");
    fs.set_fault(Fault::FailSync(2));
    f.sync_data().expect("first sync");
    assert_fault(g.sync_data().expect_err("second sync"), "FailSync");
    f.sync_data().expect("third sync");
    g.sync_data().expect("fourth sync");
    assert_eq!(fs.faults_fired(), 1);
}

#[test]
fn faults_count_independently_and_failed_ops_count() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    fs.set_fault(Fault::FailSync(1));
    fs.set_fault(Fault::FailSync(3));
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_ok());
    assert!(f.sync_data().is_err());
    assert!(f.sync_data().is_ok());
    assert_eq!(fs.faults_fired(), 2);
}

#[test]
fn fail_sync_from_keeps_failing_until_cleared() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    fs.set_fault(Fault::FailSyncFrom(2));
    f.sync_data().expect("first sync");
    for _ in 0..5 {
        assert_fault(f.sync_data().expect_err("failing"), "FailSyncFrom");
    }
    fs.clear_faults();
    f.sync_data().expect("after clear");
    assert_eq!(fs.faults_fired(), 5);
}

#[test]
fn failed_sync_makes_nothing_durable_and_forgets_the_dirty_bytes() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"abc");
    f.append(b"def").expect("append");
    fs.set_fault(Fault::FailSync(1));
    assert!(f.sync_data().is_err());
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"abc".to_vec()));
    // The page cache still shows the data...
    assert_eq!(read_all(&*f), b"abcdef");
    // ...but a retry "succeeds" without writing it.
    f.append(b"gh").expect("append");
    f.sync_data().expect("retry");
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"abc\0\0\0gh".to_vec()));
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"abc\0\0\0gh");
}

#[test]
fn torn_crash_after_failed_sync_never_shows_forgotten_bytes() {
    for seed in 0..100 {
        let fs = fs_with_dir();
        let mut f = durable_file(&fs, "/d/a", b"");
        f.append(&pattern(2048, 1)).expect("append");
        fs.set_fault(Fault::FailSync(1));
        assert!(f.sync_data().is_err());
        fs.crash(tear(512, seed, false));
        let after = reopen(&fs, "/d/a");
        assert!(after.iter().all(|&b| b == 0), "seed {seed}");
    }
}

#[test]
fn fail_append_writes_a_prefix_then_fails() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    fs.set_fault(Fault::FailAppend { nth: 2, keep: 3 });
    f.append(b"aaaa").expect("first append");
    assert_fault(f.append(b"bbbbbb").expect_err("second"), "FailAppend");
    f.append(b"c").expect("third append");
    assert_eq!(read_all(&*f), b"aaaabbbc");
}

#[test]
fn fail_append_keep_is_capped_and_zero_writes_nothing() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"");
    fs.set_fault(Fault::FailAppend { nth: 1, keep: 0 });
    fs.set_fault(Fault::FailAppend { nth: 2, keep: 100 });
    assert!(f.append(b"xx").is_err());
    assert!(f.append(b"yy").is_err());
    assert_eq!(read_all(&*f), b"yy");
}

#[test]
fn fail_sync_dir_leaves_entries_undurable() {
    let fs = fs_with_dir();
    drop(fs.create_new(p("/d/a")).expect("create"));
    fs.set_fault(Fault::FailSyncDir(1));
    assert_fault(fs.sync_dir(p("/d")).expect_err("fails"), "FailSyncDir");
    assert!(fs.list_durable(p("/d")).expect("list").is_empty());
    fs.sync_dir(p("/d")).expect("second sync_dir");
    assert_eq!(fs.list_durable(p("/d")).expect("list"), vec!["a"]);
    assert_eq!(fs.dir_sync_count(), 2);
}

#[test]
fn fail_create_new_creates_nothing() {
    let fs = fs_with_dir();
    fs.set_fault(Fault::FailCreateNew(2));
    drop(fs.create_new(p("/d/a")).expect("first"));
    // Invalid calls do not count.
    let err = fs.create_new(p("/d/a")).expect_err("exists");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_fault(
        fs.create_new(p("/d/b")).expect_err("second"),
        "FailCreateNew",
    );
    assert!(!fs.exists(p("/d/b")).expect("exists"));
    drop(fs.create_new(p("/d/c")).expect("third"));
    assert_eq!(fs.list(p("/d")).expect("list"), vec!["a", "c"]);
}

#[test]
fn crash_clears_faults() {
    let fs = fs_with_dir();
    fs.set_fault(Fault::FailSyncFrom(1));
    fs.crash(Tear::None);
    let mut f = durable_file(&fs, "/d/a", b"ok");
    f.sync_data().expect("sync");
    assert_eq!(fs.faults_fired(), 0);
}

#[test]
fn sync_counters_count_calls() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"x");
    assert_eq!((fs.sync_count(), fs.dir_sync_count()), (1, 1));
    fs.set_fault(Fault::FailSync(1));
    assert!(f.sync_data().is_err());
    assert_eq!(fs.sync_count(), 2, "failed syncs count");
    assert!(fs.sync_dir(p("/nope")).is_err());
    assert_eq!(fs.dir_sync_count(), 1, "invalid calls do not count");
}

#[test]
fn rename_within_a_directory_needs_sync_dir() {
    let fs = fs_with_dir();
    drop(durable_file(&fs, "/d/tmp", b"new"));
    drop(durable_file(&fs, "/d/cur", b"old"));
    fs.rename(p("/d/tmp"), p("/d/cur")).expect("rename");
    assert_eq!(fs.live_bytes(p("/d/cur")), Some(b"new".to_vec()));
    assert_eq!(fs.live_bytes(p("/d/tmp")), None);
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/cur"), b"old");
    assert_eq!(reopen(&fs, "/d/tmp"), b"new");

    fs.rename(p("/d/tmp"), p("/d/cur")).expect("rename");
    fs.sync_dir(p("/d")).expect("sync_dir");
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/cur"), b"new");
    assert_eq!(fs.list(p("/d")).expect("list"), vec!["cur"]);
    // Onto itself: nothing happens.
    fs.rename(p("/d/cur"), p("/d/cur")).expect("self rename");
    assert_eq!(fs.list(p("/d")).expect("list"), vec!["cur"]);
}

#[test]
fn rename_across_directories_is_durable_per_side() {
    let setup = || {
        let fs = fs_with_dir();
        fs.create_dir_all(p("/e")).expect("mkdir");
        drop(durable_file(&fs, "/d/a", b"x"));
        fs.rename(p("/d/a"), p("/e/a")).expect("rename");
        fs
    };
    let fs = setup();
    fs.sync_dir(p("/e")).expect("sync");
    fs.crash(Tear::None);
    assert!(fs.exists(p("/d/a")).expect("exists"));
    assert!(fs.exists(p("/e/a")).expect("exists"));

    let fs = setup();
    fs.sync_dir(p("/d")).expect("sync");
    fs.crash(Tear::None);
    assert!(!fs.exists(p("/d/a")).expect("exists"));
    assert!(!fs.exists(p("/e/a")).expect("exists"));

    let fs = setup();
    fs.sync_dir(p("/d")).expect("sync");
    fs.sync_dir(p("/e")).expect("sync");
    fs.crash(Tear::None);
    assert!(!fs.exists(p("/d/a")).expect("exists"));
    assert_eq!(reopen(&fs, "/e/a"), b"x");
}

#[test]
fn errors_for_missing_and_existing_paths() {
    let fs = fs_with_dir();
    let kind = |r: io::Result<Box<dyn StorageFile>>| r.expect_err("must fail").kind();
    assert_eq!(kind(fs.open(p("/d/x"))), io::ErrorKind::NotFound);
    assert_eq!(kind(fs.create_new(p("/nope/x"))), io::ErrorKind::NotFound);
    drop(fs.create_new(p("/d/x")).expect("create"));
    assert_eq!(kind(fs.create_new(p("/d/x"))), io::ErrorKind::AlreadyExists);
    assert_eq!(kind(fs.create_new(p("/d"))), io::ErrorKind::AlreadyExists);
    assert!(fs.open(p("/d")).is_err());
    assert!(fs.open(p("/")).is_err());
    let err = fs.list(p("/nope")).expect_err("no dir");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(fs.list(p("/d/x")).is_err());
    let err = fs.remove(p("/d/y")).expect_err("no file");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(fs.remove(p("/d")).is_err());
    let err = fs.rename(p("/d/y"), p("/d/z")).expect_err("no file");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(fs.rename(p("/d/x"), p("/nope/x")).is_err());
    assert!(fs.rename(p("/d/x"), p("/d")).is_err());
    assert!(fs.sync_dir(p("/nope")).is_err());
    assert!(fs.create_dir_all(p("/d/x/sub")).is_err());
}

#[test]
fn directories_are_listed_durable_and_nest() {
    let fs = SimFs::new();
    fs.create_dir_all(p("/data/wal/segments")).expect("mkdir");
    fs.create_dir_all(p("/data/wal")).expect("again");
    drop(fs.create_new(p("/data/wal/x")).expect("create"));
    assert_eq!(
        fs.list(p("/data/wal")).expect("list"),
        vec!["segments", "x"]
    );
    fs.crash(Tear::None);
    assert_eq!(fs.list(p("/data/wal")).expect("list"), vec!["segments"]);
    assert!(fs.exists(p("/data/wal/segments")).expect("exists"));
    // Relative paths hang off the root "".
    fs.create_dir_all(p("rel")).expect("mkdir");
    drop(durable_file(&fs, "rel/f", b"r"));
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "rel/f"), b"r");
}

#[test]
fn read_at_past_the_end_and_short_reads() {
    let fs = fs_with_dir();
    let f = durable_file(&fs, "/d/a", b"abcdef");
    let mut buf = [0u8; 4];
    assert_eq!(f.read_at(&mut buf, 4).expect("read"), 2);
    assert_eq!(&buf[..2], b"ef");
    assert_eq!(f.read_at(&mut buf, 6).expect("read"), 0);
    assert_eq!(f.read_at(&mut buf, u64::MAX).expect("read"), 0);
    let err = f.read_exact_at(&mut buf, 4).expect_err("eof");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn flip_bit_changes_both_images() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"\x00\x00");
    f.append(b"\x00").expect("append");
    fs.flip_bit(p("/d/a"), 1, 3).expect("flip durable byte");
    fs.flip_bit(p("/d/a"), 2, 0).expect("flip live-only byte");
    assert_eq!(fs.live_bytes(p("/d/a")), Some(vec![0, 8, 1]));
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(vec![0, 8]));
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), vec![0, 8]);
    assert!(fs.flip_bit(p("/d/a"), 2, 0).is_err());
    assert!(fs.flip_bit(p("/d/a"), 0, 8).is_err());
    assert!(fs.flip_bit(p("/d/zz"), 0, 0).is_err());
}

#[test]
fn write_live_bytes_overwrites_both_images() {
    let fs = fs_with_dir();
    let mut f = durable_file(&fs, "/d/a", b"0123");
    f.append(b"45").expect("append");
    fs.write_live_bytes(p("/d/a"), 2, b"xyz").expect("write");
    assert_eq!(fs.live_bytes(p("/d/a")), Some(b"01xyz5".to_vec()));
    assert_eq!(fs.durable_bytes(p("/d/a")), Some(b"01xy".to_vec()));
    assert!(fs.write_live_bytes(p("/d/a"), 5, b"ab").is_err());
    assert!(fs.write_live_bytes(p("/d/a"), u64::MAX, b"a").is_err());
    fs.crash(Tear::None);
    assert_eq!(reopen(&fs, "/d/a"), b"01xy");
}
