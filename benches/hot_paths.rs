//! Criterion micro-benchmarks of the hot paths, to keep regressions
//! visible (issue 7). `cargo bench --bench hot_paths` runs four groups,
//! about 45 s in all; every figure is per record (criterion's
//! "thrpt" is records, frames, lines or words per second):
//! - `frame`: `encode_frame` and `decode_frame` (checksum and record number
//!   checked) of 1000 frames of 88- and 1000-byte payloads, in memory;
//! - `wal`: `Wal::append` of 1000 x 88-byte records per call with
//!   `SyncPolicy::NoSyncUnsafe` (the CPU cost of the append path without
//!   the fdatasync) and with `GroupCommit` (one fdatasync per call, one
//!   appender); `Wal::read(..).for_each_ref` of 100,000 records from a
//!   log in the page cache;
//! - `text`: `Text::for_each_lowercase_word` and `Text::lowercase` over
//!   82-byte, 13-word tweet-like lines;
//! - `operators`: `map(|w| (w, 1)).reduce_by_key` and `count_by_value`
//!   alone, on 260,000 pre-split words per batch (one engine thread, a
//!   manual clock; the queue push is outside the measured time). The whole
//!   split-and-count pipeline is `benches/dstream_wordcount.rs`.
//!
//! Logs go to cargo's target tmp dir (the real disk, never a tmpfs); the
//! append benchmarks delete finished segments between measurements so the
//! disk holds at most a few segments. Under `cargo test --benches` criterion
//! runs each benchmark once.

mod support;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use support::timed_batches;
use weir::testdata::tweet_lines;
use weir::wal::format::{
    decode_frame, decode_segment_header, encode_frame, encode_segment_header, frame_bytes,
    new_salt, Decoded,
};
use weir::wal::{SyncPolicy, Wal, WalConfig};
use weir::{DStream, ManualClock, Queue, StreamingContext, Text};

/// Frames encoded or decoded per iteration.
const FRAMES: usize = 1000;
/// Records per `Wal::append` call.
const APPEND_RECORDS: usize = 1000;
/// The WAL record size: an 82-byte line with a small header.
const RECORD_BYTES: usize = 88;
/// Records read back per iteration.
const READ_RECORDS: usize = 100_000;
/// Lines of the text benchmarks; lines split into the operators' words.
const TEXT_LINES: usize = 10_000;
const OPERATOR_LINES: usize = 20_000;
/// Append calls between deletions of finished segments (outside the
/// measured time): about 100 MB of 88-byte records.
const APPENDS_PER_CLEANUP: u64 = 1000;

/// `count` payloads of `bytes` bytes, deterministic and not all alike.
fn payloads(count: usize, bytes: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| (0..bytes).map(|j| (i * 31 + j * 7) as u8).collect())
        .collect()
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.sample_size(50);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    let header_bytes = encode_segment_header(0, 1 << 20, new_salt());
    let header = decode_segment_header(&header_bytes).expect("a header just encoded");
    for bytes in [RECORD_BYTES, 1000] {
        let records = payloads(FRAMES, bytes);
        let mut out = Vec::with_capacity(FRAMES * frame_bytes(bytes));
        group.bench_function(BenchmarkId::new("encode", bytes), |b| {
            b.iter(|| {
                out.clear();
                for (lsn, p) in records.iter().enumerate() {
                    encode_frame(&mut out, header.salt, lsn as u64, p);
                }
                black_box(out.len())
            })
        });
        let encoded = out.clone();
        assert_eq!(encoded.len(), FRAMES * frame_bytes(bytes));
        group.bench_function(BenchmarkId::new("decode", bytes), |b| {
            b.iter(|| {
                let (mut at, mut payload_bytes) = (0, 0);
                for lsn in 0..FRAMES as u64 {
                    match decode_frame(black_box(&encoded), at, lsn, &header) {
                        Decoded::Record {
                            payload, frame_len, ..
                        } => {
                            payload_bytes += payload.len();
                            at += frame_len;
                        }
                        other => panic!("frame {lsn} at offset {at}: {other:?}"),
                    }
                }
                assert_eq!(payload_bytes, FRAMES * bytes);
                payload_bytes
            })
        });
    }
    group.finish();
}

fn open_wal(dir: &Path, sync: SyncPolicy) -> Wal {
    let config = WalConfig {
        sync,
        ..WalConfig::default()
    };
    Wal::open(dir, config).expect("open the WAL").0
}

/// Times `iters` appends of `batch`; deletes finished segments now and
/// then, outside the measured time.
fn timed_appends(wal: &Wal, batch: &[Vec<u8>], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for n in 0..iters {
        let start = Instant::now();
        let lsns = wal.append(batch).expect("append");
        total += start.elapsed();
        assert_eq!(lsns.end - lsns.start, batch.len() as u64);
        if n % APPENDS_PER_CLEANUP == APPENDS_PER_CLEANUP - 1 {
            wal.remove_segments_below(wal.end())
                .expect("remove finished segments");
        }
    }
    wal.remove_segments_below(wal.end())
        .expect("remove finished segments");
    total
}

fn wal(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(root).expect("create the benchmark directory");
    let batch = payloads(APPEND_RECORDS, RECORD_BYTES);
    let mut group = c.benchmark_group("wal");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(APPEND_RECORDS as u64));

    for (name, sync, samples) in [
        ("append_nosync_unsafe", SyncPolicy::NoSyncUnsafe, 30),
        ("append_durable", SyncPolicy::GroupCommit, 10),
    ] {
        let tmp = tempfile::TempDir::new_in(root).expect("create a temporary directory");
        let wal = open_wal(tmp.path(), sync);
        group.sample_size(samples);
        group.bench_function(BenchmarkId::new(name, RECORD_BYTES), |b| {
            b.iter_custom(|iters| timed_appends(&wal, &batch, iters))
        });
    }

    let tmp = tempfile::TempDir::new_in(root).expect("create a temporary directory");
    let wal = open_wal(tmp.path(), SyncPolicy::NoSyncUnsafe);
    for _ in 0..READ_RECORDS / APPEND_RECORDS {
        wal.append(&batch).expect("append");
    }
    wal.sync().expect("sync");
    let read_all = || {
        let (mut n, mut bytes) = (0usize, 0usize);
        wal.read(wal.first_lsn()..wal.end())
            .expect("read range")
            .for_each_ref(|_, p| {
                n += 1;
                bytes += black_box(p).len();
            })
            .expect("read back");
        assert_eq!((n, bytes), (READ_RECORDS, READ_RECORDS * RECORD_BYTES));
        n
    };
    // Warm: the page cache holds the log before the first measurement.
    read_all();
    group.throughput(Throughput::Elements(READ_RECORDS as u64));
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("read", RECORD_BYTES), |b| b.iter(read_all));
    group.finish();
}

fn text(c: &mut Criterion) {
    let lines = tweet_lines(TEXT_LINES, 42);
    let mut group = c.benchmark_group("text");
    group.throughput(Throughput::Elements(TEXT_LINES as u64));
    group.sample_size(30);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(2));
    group.bench_function("for_each_lowercase_word", |b| {
        b.iter(|| {
            let mut words = 0usize;
            for line in &lines {
                Text::for_each_lowercase_word(line, |w| {
                    black_box(w);
                    words += 1;
                });
            }
            assert_eq!(words, TEXT_LINES * 13);
            words
        })
    });
    group.bench_function("lowercase_line", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(Text::lowercase(line));
            }
        })
    });
    group.finish();
}

/// The operators under test: words in, counts out.
type Counting = fn(DStream<Text>) -> DStream<(Text, u64)>;

/// A one-thread context on `clock` reading `q` through `operators`; its
/// output adds the batch's counts to `counted`.
fn counting_context(
    q: &Queue<Text>,
    clock: Arc<ManualClock>,
    counted: Arc<AtomicU64>,
    operators: Counting,
) -> StreamingContext {
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(1)
        .clock(clock)
        .build()
        .expect("context");
    operators(ssc.queue_stream(q))
        .foreach_batch(move |_, counts| {
            let sum: u64 = counts.iter().map(|(_, n)| n).sum();
            counted.fetch_add(sum, Ordering::Relaxed);
            Ok(())
        })
        .expect("output");
    ssc
}

fn operators(c: &mut Criterion) {
    let mut words = Vec::new();
    for line in tweet_lines(OPERATOR_LINES, 42) {
        Text::for_each_lowercase_word(&line, |w| words.push(w));
    }
    let mut group = c.benchmark_group("operators");
    group.throughput(Throughput::Elements(words.len() as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let pipelines: [(&str, Counting); 2] = [
        ("map_reduce_by_key", |s| {
            s.map(|w| (w, 1u64)).reduce_by_key(|a, b| a + b)
        }),
        ("count_by_value", |s| s.count_by_value()),
    ];
    for (name, pipeline) in pipelines {
        let clock = Arc::new(ManualClock::new(0));
        let counted = Arc::new(AtomicU64::new(0));
        let q: Queue<Text> = Queue::new();
        let ssc = counting_context(&q, clock.clone(), counted.clone(), pipeline);
        ssc.start().expect("start");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_batches(&ssc, &clock, &q, &words, iters, || {
                    assert_eq!(counted.swap(0, Ordering::Relaxed), words.len() as u64)
                })
            })
        });
        ssc.stop(false).expect("stop");
    }
    group.finish();
}

criterion_group!(benches, frame, wal, text, operators);
criterion_main!(benches);
