//! Efficiency end to end (issue 15): the tutorial's word count written the
//! way a beginner writes it, against the engine's fast form and a
//! hand-written single-threaded loop, over the same bytes in one run.
//!
//! The lines are those of the side-by-side feeder
//! (`examples/bench_feeder.rs`): 82-byte tweet-like lines from
//! `weir::testdata`, each followed by ` __end`. Four ways to count words:
//! - **beginner**: `socket_text_stream` (every line fsynced in the WAL
//!   before its batch is cut), then the closures of
//!   `examples/bench_socket_wordcount.rs` (the measurement):
//!   `flat_map(|l: String| l.split("__end")… .map(str::to_lowercase)
//!   .collect::<Vec<_>>())`, words with `flat_map_with` +
//!   `Text::for_each_lowercase_word`, `map(|w| (w, 1))`, `reduce_by_key`;
//! - **plain-std**: the same, words split with
//!   `flat_map(|t: String| t.split_whitespace().map(String::from)
//!   .collect::<Vec<_>>())` (nothing from weir but the engine);
//! - **fast**: the same socket stream, one `flat_map_with` that hands
//!   `Text::for_each_lowercase_word` the line and drops `__end`;
//! - **loop**: one thread over the same bytes in memory: lines by newline,
//!   UTF-8 check, words lowercased by `Text::for_each_lowercase_word`
//!   (`__end` dropped, as in **fast**) into a foldhash `HashMap<Text, u64>`
//!   (no socket, no log, no durability, no threads): the machine's limit
//!   for this work.
//!
//! A loopback server thread serves the lines (256 KiB writes); a run ends
//! when every line is in a committed batch (200 ms batches). Lines per
//! CPU-second count the process's user + system CPU (`getrusage`) less the
//! server thread's own (`RUSAGE_THREAD`), as the side-by-side script
//! leaves the feeder out. Every way reports its total word count, which
//! must agree.
//!
//! Run: `cargo run --release --example bench_beginner [LINES] [ROUNDS]
//! [WAYS...]` (default 4000000 lines, 2 rounds, ways `beginner plain-std
//! fast loop`, run alternately round by round).

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::{DStream, StreamingContext, Text};

const CHUNK_BYTES: usize = 256 << 10;
const DISTINCT_LINES: usize = 250_000;

/// CPU seconds (user + system) of this process (`RUSAGE_SELF`) or of the
/// calling thread (`RUSAGE_THREAD`) so far.
fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid
    // initial value for it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` with a valid pointer.
    let rc = unsafe { libc::getrusage(who, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `n` feeder lines (` __end` and a newline after each), cycled over
/// [`DISTINCT_LINES`] distinct ones.
fn feed(n: usize) -> Vec<u8> {
    let distinct = weir::testdata::tweet_lines(DISTINCT_LINES.min(n), 42);
    let mut out = Vec::with_capacity(n * 90);
    for i in 0..n {
        out.extend_from_slice(distinct[i % distinct.len()].as_bytes());
        out.extend_from_slice(b" __end\n");
    }
    out
}

/// The hand-written loop; (wall s, CPU s, words).
fn hand_loop(data: &[u8]) -> (f64, f64, u64) {
    let (cpu0, t0) = (cpu_seconds(libc::RUSAGE_THREAD), Instant::now());
    let mut counts: HashMap<Text, u64, foldhash::fast::RandomState> = HashMap::default();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        Text::for_each_lowercase_word(line, |w| {
            if w != "__end" {
                *counts.entry(w).or_insert(0) += 1
            }
        });
    }
    let words = counts.values().sum();
    let (wall, cpu) = (t0.elapsed(), cpu_seconds(libc::RUSAGE_THREAD) - cpu0);
    (wall.as_secs_f64(), cpu, words)
}

/// Counts the words of `pairs` per batch into `total`.
fn count_words<K: Clone + Send + Sync + std::hash::Hash + Eq + 'static>(
    pairs: DStream<(K, u64)>,
    total: Arc<AtomicU64>,
) -> weir::Result<()> {
    pairs
        .reduce_by_key(|a, b| a + b)
        .foreach_batch(move |_, counts| {
            total.fetch_add(
                counts.iter().map(|(_, c)| c).sum::<u64>(),
                Ordering::Relaxed,
            );
            Ok(())
        })?;
    Ok(())
}

/// Registers `way`'s word count over the socket's lines.
fn pipeline(way: &str, lines: &DStream<String>, total: Arc<AtomicU64>) -> weir::Result<()> {
    let tweets = || {
        lines.flat_map(|l: String| {
            l.split("__end")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
    };
    match way {
        "beginner" => count_words(
            tweets()
                .flat_map_with(|t: String, out| Text::for_each_lowercase_word(&t, out))
                .map(|w| (w, 1u64)),
            total,
        ),
        "plain-std" => count_words(
            tweets()
                .flat_map(|t: String| t.split_whitespace().map(String::from).collect::<Vec<_>>())
                .map(|w| (w, 1u64)),
            total,
        ),
        _ => count_words(
            lines
                .flat_map_with(|l: String, out| {
                    Text::for_each_lowercase_word(&l, |w| {
                        if w != "__end" {
                            out(w)
                        }
                    })
                })
                .map(|w| (w, 1u64)),
            total,
        ),
    }
}

/// One engine run of `way` over `data` (`lines` lines); (wall s, CPU s
/// less the server thread's, words counted).
fn engine(
    way: &str,
    data: Arc<Vec<u8>>,
    lines: u64,
) -> Result<(f64, f64, u64), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let dir = tempfile::tempdir()?;
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(200))
        .data_dir(dir.path())
        .build()?;
    let stream = ssc.socket_text_stream("tweets", &addr)?;
    let word_total = Arc::new(AtomicU64::new(0));
    pipeline(way, &stream, word_total.clone())?;
    let (cpu0, t0) = (cpu_seconds(libc::RUSAGE_SELF), Instant::now());
    ssc.start()?;
    let server = std::thread::spawn(move || {
        let cpu0 = cpu_seconds(libc::RUSAGE_THREAD);
        let (mut c, _) = listener.accept().expect("weir connects");
        for chunk in data.chunks(CHUNK_BYTES) {
            c.write_all(chunk).expect("send");
        }
        (c, cpu_seconds(libc::RUSAGE_THREAD) - cpu0)
    });
    // The committed position is the number of lines in committed batches
    // (a second output counting lines would read every batch back again).
    let committed = || -> u64 { ssc.committed_positions().iter().map(|(_, p)| *p).sum() };
    while committed() < lines {
        std::thread::sleep(Duration::from_millis(2));
        if t0.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {} of {lines} lines in 600 s", committed()).into());
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0;
    let (_conn, server_cpu) = server.join().map_err(|_| "server thread panicked")?;
    ssc.stop(false)?;
    Ok((wall, cpu - server_cpu, word_total.load(Ordering::Relaxed)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let mut ways: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    if ways.is_empty() {
        ways = vec!["beginner", "plain-std", "fast", "loop"];
    }
    let data = Arc::new(feed(n));
    println!(
        "{n} lines ({} MB), {rounds} rounds, cores: {}",
        data.len() / 1_000_000,
        std::thread::available_parallelism().map_or(0, |c| c.get())
    );
    println!("| round | way | lines/s | lines per CPU-second | CPU s | words |");
    println!("|---:|---|---:|---:|---:|---:|");
    for round in 1..=rounds {
        for way in &ways {
            let (wall, cpu, words) = match *way {
                "loop" => hand_loop(&data),
                w => engine(w, data.clone(), n as u64)?,
            };
            println!(
                "| {round} | {way} | {:.2} M | {:.2} M | {cpu:.2} | {words} |",
                n as f64 / wall / 1e6,
                n as f64 / cpu / 1e6
            );
        }
    }
    Ok(())
}
