//! Engine-only throughput: in-memory batches of 82-byte, 13-word lines;
//! split on whitespace, lowercase, reduce_by_key word count. Prints lines/s
//! for the engine and for a plain single-threaded HashMap word count.
//!
//! Run: `cargo run --release --example bench_wordcount -- [lines_per_batch] [batches] [parallelism]`

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::testdata::tweet_lines;
use weir::{ManualClock, Queue, StreamingContext, Text};

/// User + system CPU time of this process (all threads), from
/// `/proc/self/stat`, in seconds (Linux only).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() -> weir::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let per_batch = args.first().copied().unwrap_or(1_000_000);
    let batches = args.get(1).copied().unwrap_or(10);
    let parallelism = args.get(2).copied().unwrap_or(2);

    let raw = tweet_lines(per_batch, 42);
    let lines: Vec<Text> = raw.iter().map(|l| Text::new(l)).collect();

    // Baseline: plain single-threaded HashMap word count.
    let t0 = Instant::now();
    let mut base: HashMap<String, u64> = HashMap::new();
    let base_batches = if std::env::var_os("WEIR_NO_BASELINE").is_some() {
        0
    } else {
        batches
    };
    for _ in 0..base_batches {
        for l in &raw {
            for w in l.split_whitespace() {
                *base.entry(w.to_lowercase()).or_insert(0) += 1;
            }
        }
    }
    let base_secs = t0.elapsed().as_secs_f64();
    let base_rate = (per_batch * base_batches) as f64 / base_secs;

    // Calibration: the same per-word work as the engine's fused stage
    // (split, inline lowercase, FxHash map), single-threaded, no engine.
    let t0 = Instant::now();
    let mut fused: HashMap<Text, u64, weir::dstream::hash::FxBuild> = HashMap::default();
    for _ in 0..base_batches {
        for l in &lines {
            Text::for_each_lowercase_word(l, |w| *fused.entry(w).or_insert(0) += 1);
        }
    }
    let fused_rate = (per_batch * base_batches) as f64 / t0.elapsed().as_secs_f64();
    println!(
        "calibration: same fused loop, 1 thread, no engine: {fused_rate:.0} lines/s ({} distinct)",
        fused.len()
    );

    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(parallelism)
        .partitions(parallelism.max(1) * 2)
        .clock(clock.clone())
        .build()?;
    let q: Queue<Text> = Queue::new();
    let distinct = Arc::new(AtomicU64::new(0));
    let d2 = distinct.clone();
    let lines_stream = ssc.queue_stream(&q);
    // WEIR_ONE_STAGE=1: emit (word, 1) straight from flat_map_with (one
    // closure stage instead of flat_map_with + map), to measure the cost
    // of a stage boundary.
    let pairs = if std::env::var_os("WEIR_ONE_STAGE").is_some() {
        lines_stream.flat_map_with(|line: Text, out| {
            Text::for_each_lowercase_word(&line, |w| out((w, 1u64)))
        })
    } else {
        lines_stream
            .flat_map_with(|line: Text, out| Text::for_each_lowercase_word(&line, &mut *out))
            .map(|w| (w, 1u64))
    };
    pairs
        .reduce_by_key(|a, b| a + b)
        .name("counts")
        .foreach_batch(move |_, counts| {
            d2.store(counts.len() as u64, Ordering::Relaxed);
            Ok(())
        })?;
    ssc.start()?;
    let cpu0 = process_cpu_secs();
    let mut engine_ms = 0u64;
    let wall = Instant::now();
    for _ in 0..batches {
        q.push(lines.clone())?;
        let t = clock.advance(1000);
        let st = ssc.await_batch(t, Duration::from_secs(600))?;
        engine_ms += st.processing_time_ms;
    }
    let wall_secs = wall.elapsed().as_secs_f64();
    let cpu_secs = process_cpu_secs().zip(cpu0).map(|(b, a)| b - a);
    ssc.stop(false)?;
    let engine_rate = (per_batch * batches) as f64 / (engine_ms as f64 / 1000.0);
    println!(
        "lines/batch {per_batch}, batches {batches}, parallelism {parallelism}, distinct words {}",
        distinct.load(Ordering::Relaxed)
    );
    println!("engine: {:.0} lines/s (batch processing time {engine_ms} ms; wall incl. queue pushes {:.2} s)", engine_rate, wall_secs);
    println!(
        "baseline single-threaded HashMap<String,u64>: {:.0} lines/s ({} distinct)",
        base_rate,
        base.len()
    );
    println!("ratio engine/baseline: {:.2}", engine_rate / base_rate);
    if let Some(cpu) = cpu_secs {
        // Contention-independent view: lines per CPU-second the process
        // used (queue pushes included), times the parallelism asked for.
        let per_cpu = (per_batch * batches) as f64 / cpu;
        println!(
            "cpu: {cpu:.2} s process CPU time, {per_cpu:.0} lines per CPU-second, x{parallelism} = {:.0} lines/s if {parallelism} cores were ours",
            per_cpu * parallelism as f64
        );
    }
    Ok(())
}
