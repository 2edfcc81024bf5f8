//! WAL append throughput and ack latency, with a raw-file baseline.
//!
//! `cargo bench --bench wal_append` prints one table: durable appends
//! (group commit, fdatasync per group) of 100-byte records in batches of 100
//! per `append` call, from 1, 4 and 64 appender threads; the same with
//! `SyncPolicy::NoSyncUnsafe` as the ceiling; a baseline measured in the
//! same run that writes the same frame bytes to a plain file with
//! `write_all` (+ `sync_data` for the durable one) per group of
//! `threads * 100` records; the ratios; and read throughput of everything
//! written (`Wal::read(..).for_each_ref`).
//!
//! Criterion does not fit throughput-with-concurrency well, so this is a
//! plain `main` (harness = false). Environment:
//! - `WEIR_BENCH_QUICK=1`: a twentieth of the records (a few seconds).
//! - `WEIR_BENCH_DIR=PATH`: where the temporary logs go (default: cargo's
//!   target tmp dir, i.e. the real disk; do not point it at a tmpfs).
//!
//! Under `cargo test --all-targets` (no `--bench` argument) it runs a tiny
//! smoke version so the code keeps working without slowing the tests.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use weir::wal::format::encode_frame;
use weir::wal::{SyncPolicy, Wal, WalConfig};

const RECORD_BYTES: usize = 100;
const BATCH_RECORDS: usize = 100;
const THREADS: [usize; 3] = [1, 4, 64];

/// What one configuration did.
struct Measured {
    records: u64,
    elapsed: Duration,
    /// Nanoseconds of each append call (or each raw group write), sorted.
    latencies: Vec<u64>,
    fsyncs: u64,
    fsync_nanos: u64,
    read: Option<(u64, Duration)>,
}

impl Measured {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    fn payload_mb_per_sec(&self) -> f64 {
        self.records_per_sec() * RECORD_BYTES as f64 / 1e6
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i] as f64 / 1e6
    }

    fn records_per_fsync(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.records as f64 / self.fsyncs as f64
        }
    }

    fn fsync_avg_ms(&self) -> f64 {
        if self.fsyncs == 0 {
            0.0
        } else {
            self.fsync_nanos as f64 / self.fsyncs as f64 / 1e6
        }
    }
}

/// Records per configuration: durable runs with few appenders are bounded
/// by fsync latency, so they get fewer records to keep the run short.
fn record_count(durable: bool, threads: usize, scale: u64) -> u64 {
    let full: u64 = match (durable, threads) {
        (true, 1) => 200_000,
        (true, 4) => 1_000_000,
        _ => 2_000_000,
    };
    // Whole batches per thread.
    let per_thread = (full / scale / threads as u64).max(BATCH_RECORDS as u64);
    per_thread / BATCH_RECORDS as u64 * BATCH_RECORDS as u64 * threads as u64
}

fn batch(thread: usize) -> Vec<[u8; RECORD_BYTES]> {
    (0..BATCH_RECORDS)
        .map(|i| {
            let mut r = [0u8; RECORD_BYTES];
            for (j, b) in r.iter_mut().enumerate() {
                *b = (thread * 31 + i * 7 + j) as u8;
            }
            r
        })
        .collect()
}

fn wal_run(dir: &Path, sync: SyncPolicy, threads: usize, records: u64) -> Measured {
    let tmp = tempfile::TempDir::new_in(dir).expect("create a temporary directory");
    let config = WalConfig {
        sync,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open(tmp.path(), config).expect("open the WAL");
    let wal = Arc::new(wal);
    let appends_per_thread = records / threads as u64 / BATCH_RECORDS as u64;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut batch = batch(t);
                let mut latencies = Vec::with_capacity(appends_per_thread as usize);
                barrier.wait();
                for n in 0..appends_per_thread {
                    batch[0][..8].copy_from_slice(&n.to_le_bytes());
                    let t0 = Instant::now();
                    let lsns = wal.append(&batch).expect("append");
                    latencies.push(t0.elapsed().as_nanos() as u64);
                    debug_assert_eq!(lsns.end - lsns.start, BATCH_RECORDS as u64);
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies = Vec::with_capacity((records / BATCH_RECORDS as u64) as usize);
    for h in handles {
        latencies.extend(h.join().expect("appender thread"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let stats = wal.stats();
    assert_eq!(stats.records, records, "the WAL counted other records");

    let t0 = Instant::now();
    let (mut n, mut bytes) = (0u64, 0usize);
    wal.read(wal.first_lsn()..wal.end())
        .expect("read range")
        .for_each_ref(|_, p| {
            n += 1;
            bytes += p.len();
        })
        .expect("read back");
    let read_elapsed = t0.elapsed();
    assert_eq!(n, records, "read back a different number of records");
    assert_eq!(bytes as u64, records * RECORD_BYTES as u64);

    Measured {
        records,
        elapsed,
        latencies,
        fsyncs: stats.fsyncs,
        fsync_nanos: stats.fsync_nanos_total,
        read: Some((n, read_elapsed)),
    }
}

/// The same frame bytes written to a plain file, one `write_all` (and one
/// `sync_data` if `durable`) per group of `group_records`.
fn raw_run(dir: &Path, durable: bool, group_records: usize, records: u64) -> Measured {
    let tmp = tempfile::TempDir::new_in(dir).expect("create a temporary directory");
    let mut file = File::create(tmp.path().join("raw.log")).expect("create the raw file");
    let payloads = batch(0);
    let mut group = Vec::new();
    for i in 0..group_records {
        encode_frame(&mut group, 0x5A17, i as u64, &payloads[i % BATCH_RECORDS]);
    }
    let groups = records.div_ceil(group_records as u64);
    let mut latencies = Vec::with_capacity(groups as usize);
    let (mut fsyncs, mut fsync_nanos) = (0u64, 0u64);
    let start = Instant::now();
    for _ in 0..groups {
        let t0 = Instant::now();
        file.write_all(&group).expect("raw write");
        if durable {
            let s0 = Instant::now();
            file.sync_data().expect("raw fdatasync");
            fsync_nanos += s0.elapsed().as_nanos() as u64;
            fsyncs += 1;
        }
        latencies.push(t0.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Measured {
        records: groups * group_records as u64,
        elapsed,
        latencies,
        fsyncs,
        fsync_nanos,
        read: None,
    }
}

fn row(kind: &str, threads: usize, m: &Measured) {
    println!(
        "{kind:<14} {threads:>7} {:>10} {:>7.2} {:>12.0} {:>8.1} {:>8.2} {:>8.2} {:>7} {:>9.0} {:>9.3}",
        m.records,
        m.elapsed.as_secs_f64(),
        m.records_per_sec(),
        m.payload_mb_per_sec(),
        m.percentile_ms(0.50),
        m.percentile_ms(0.99),
        m.fsyncs,
        m.records_per_fsync(),
        m.fsync_avg_ms(),
    );
}

fn bench_dir() -> PathBuf {
    std::env::var_os("WEIR_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not.
    let benching = std::env::args().any(|a| a == "--bench");
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some_and(|v| v == "1");
    let (scale, mode) = match (benching, quick) {
        (false, _) => (1000, "smoke (run through `cargo bench` to measure)"),
        (true, true) => (20, "quick (WEIR_BENCH_QUICK=1)"),
        (true, false) => (1, "full"),
    };
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).expect("create the benchmark directory");
    let started = Instant::now();
    println!(
        "weir WAL append benchmark, {mode}: {RECORD_BYTES}-byte records, {BATCH_RECORDS} per append call, logs in {}",
        dir.display()
    );
    println!(
        "{:<14} {:>7} {:>10} {:>7} {:>12} {:>8} {:>8} {:>8} {:>7} {:>9} {:>9}",
        "mode",
        "threads",
        "records",
        "secs",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "fsyncs",
        "rec/fsync",
        "fsync ms"
    );

    let mut results = Vec::new();
    for (kind, durable) in [("durable", true), ("nosync-unsafe", false)] {
        for threads in THREADS {
            let records = record_count(durable, threads, scale);
            let sync = if durable {
                SyncPolicy::GroupCommit
            } else {
                SyncPolicy::NoSyncUnsafe
            };
            let wal = wal_run(&dir, sync, threads, records);
            row(kind, threads, &wal);
            let raw = raw_run(&dir, durable, threads * BATCH_RECORDS, records);
            row(
                if durable {
                    "  raw+fdatasync"
                } else {
                    "  raw write"
                },
                threads,
                &raw,
            );
            results.push((kind, durable, threads, wal, raw));
        }
    }
    println!("(raw rows: the same frame bytes to one plain file, one write_all [+ sync_data] per group of threads x {BATCH_RECORDS} records; latency per group)");
    println!("(MB/s counts payload bytes, 1 MB = 10^6 bytes; fsync ms = mean fdatasync time)");

    println!();
    println!("ratios (records/s)");
    for threads in THREADS {
        let find = |durable: bool| {
            results
                .iter()
                .find(|r| r.1 == durable && r.2 == threads)
                .expect("measured")
        };
        let d = find(true);
        let n = find(false);
        println!(
            "  {threads:>2} threads: durable WAL / raw+fdatasync = {:.2}   nosync WAL / raw write = {:.2}   durable / nosync WAL = {:.3}",
            d.3.records_per_sec() / d.4.records_per_sec(),
            n.3.records_per_sec() / n.4.records_per_sec(),
            d.3.records_per_sec() / n.3.records_per_sec(),
        );
    }

    println!();
    println!("reads of everything written (Wal::read(first..end).for_each_ref, page cache warm)");
    for (kind, _, threads, wal, _) in &results {
        if let Some((n, elapsed)) = wal.read {
            let rps = n as f64 / elapsed.as_secs_f64();
            println!(
                "  {kind:<14} {threads:>2} threads: {n:>9} records in {:.3} s = {rps:>11.0} records/s, {:>7.1} MB/s",
                elapsed.as_secs_f64(),
                rps * RECORD_BYTES as f64 / 1e6
            );
        }
    }
    println!();
    println!("total {:.1} s", started.elapsed().as_secs_f64());
}
