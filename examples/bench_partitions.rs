//! Local partitions, end to end: the tutorial's socket word count (split
//! each tweet on whitespace, lower-case, count words per batch) over a
//! socket stream with 1, 2 and 4 partitions, every line fsynced in its
//! partition's WAL before its batch is cut.
//!
//! A loopback server thread serves each connection its share of the lines
//! (pre-rendered, written in 256 KiB chunks); the pipeline counts the
//! lines it processed, and the run ends when all are in committed
//! batches. Reported per partition count: lines per wall second, lines
//! per CPU-second of the whole process (user + system, `getrusage`), and
//! both as ratios to one partition measured in the same run.
//!
//! Run: `cargo run --release --example bench_partitions [LINES] [PARTITIONS...]`
//! (default 4000000 lines; partitions 1 2 4).

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::receiver::SocketConfig;
use weir::{StreamingContext, Text};

const CHUNK_BYTES: usize = 256 << 10;

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid
    // initial value for it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage failed");
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `n` tweet-like lines, newline-terminated.
fn lines(n: u64, seed: u64) -> Vec<u8> {
    let words = [
        "Spark",
        "streaming",
        "is",
        "FUN",
        "#weir",
        "@user",
        "batch",
        "window",
        "state",
        "kafka",
        "durable",
        "log",
        "exactly",
        "once",
    ];
    let mut out = Vec::with_capacity(n as usize * 48);
    let mut x = seed | 1;
    for _ in 0..n {
        for k in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if k > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// One run: `total` lines over `partitions` connections; (wall s, CPU s).
fn run(total: u64, partitions: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let share = total / partitions as u64;
    let data: Vec<Arc<Vec<u8>>> = (0..partitions)
        .map(|p| Arc::new(lines(share, 7 + p as u64)))
        .collect();
    let dir = tempfile::tempdir()?;
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(200))
        .data_dir(dir.path())
        .build()?;
    let (stream, _) =
        ssc.socket_text_stream_partitioned("tweets", &addr, partitions, SocketConfig::default())?;
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let lines_seen = stream.count();
    lines_seen.foreach_batch(move |_, c| {
        s.fetch_add(c.iter().sum::<u64>(), Ordering::Relaxed);
        Ok(())
    })?;
    stream
        .flat_map_with(|t: String, out| Text::for_each_lowercase_word(&t, out))
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b)
        .foreach_batch(|_, counts| {
            std::hint::black_box(counts.len());
            Ok(())
        })?;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    ssc.start()?;
    let server = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for d in data {
            let (mut c, _) = listener.accept().expect("weir connects");
            conns.push(std::thread::spawn(move || {
                for chunk in d.chunks(CHUNK_BYTES) {
                    c.write_all(chunk).expect("send");
                }
                c
            }));
        }
        // Keep the connections open until every line was sent.
        conns
            .into_iter()
            .map(|h| h.join().expect("sender"))
            .collect::<Vec<_>>()
    });
    let want = share * partitions as u64;
    while seen.load(Ordering::Relaxed) < want {
        std::thread::sleep(Duration::from_millis(5));
        if t0.elapsed() > Duration::from_secs(600) {
            panic!(
                "only {} of {want} lines in 600 s",
                seen.load(Ordering::Relaxed)
            );
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    ssc.stop(false)?;
    drop(server.join());
    Ok((wall, cpu))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000_000);
    let counts: Vec<usize> = if args.len() > 1 {
        args[1..].iter().filter_map(|a| a.parse().ok()).collect()
    } else {
        vec![1, 2, 4]
    };
    println!(
        "{total} lines, cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| partitions | lines/s | lines per CPU-second | vs 1 (wall) | vs 1 (CPU) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut base = None;
    for n in counts {
        let (wall, cpu) = run(total, n)?;
        let (rate, per_cpu) = (total as f64 / wall, total as f64 / cpu);
        let (b_rate, b_cpu) = *base.get_or_insert((rate, per_cpu));
        println!(
            "| {n} | {:.2} M | {:.2} M | {:.2} | {:.2} |",
            rate / 1e6,
            per_cpu / 1e6,
            rate / b_rate,
            per_cpu / b_cpu
        );
    }
    Ok(())
}
