//! The tutorial's word count as SQL against weir's own `reduce_by_key`,
//! in the same run on the same in-memory batches (82-byte, 13-word tweet
//! lines; 1 M lines per batch by default): split and lowercase in a
//! closure, then either `reduce_by_key` or `SELECT value AS word,
//! count(*) AS total FROM batch GROUP BY value`. Prints lines/s of batch
//! processing time for both, their ratio, and where the SQL step's time
//! goes (records to Arrow, the query, rows back to JSON records).
//!
//! Run: `cargo run --release --example bench_sql_wordcount -- [lines_per_batch] [batches] [parallelism]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weir::dstream::DStream;
use weir::sql::{timings, SqlSession};
use weir::testdata::tweet_lines;
use weir::{ManualClock, Queue, StreamingContext, Text};

/// Lowercased words of each line (the same closure for both runs).
fn words(lines: &DStream<Text>) -> DStream<Text> {
    lines.flat_map_with(|line: Text, out| Text::for_each_lowercase_word(&line, &mut *out))
}

/// Runs `build` on a fresh context over `batches` copies of `lines`;
/// returns (batch processing ms, distinct words of the last batch).
fn run(
    lines: &[Text],
    batches: usize,
    parallelism: usize,
    build: impl FnOnce(&DStream<Text>, Arc<AtomicU64>) -> weir::Result<()>,
) -> weir::Result<(u64, u64)> {
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(parallelism)
        .partitions(parallelism.max(1) * 2)
        .clock(clock.clone())
        .build()?;
    let q: Queue<Text> = Queue::new();
    let distinct = Arc::new(AtomicU64::new(0));
    build(&ssc.queue_stream(&q), distinct.clone())?;
    ssc.start()?;
    let mut ms = 0;
    for _ in 0..batches {
        q.push(lines.to_vec())?;
        let t = clock.advance(1000);
        ms += ssc
            .await_batch(t, Duration::from_secs(600))?
            .processing_time_ms;
    }
    ssc.stop(false)?;
    Ok((ms, distinct.load(Ordering::Relaxed)))
}

fn main() -> weir::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let per_batch = args.first().copied().unwrap_or(1_000_000);
    let batches = args.get(1).copied().unwrap_or(5);
    let parallelism = args.get(2).copied().unwrap_or(2);
    let lines: Vec<Text> = tweet_lines(per_batch, 42)
        .iter()
        .map(|l| Text::new(l))
        .collect();

    let (rbk_ms, rbk_words) = run(&lines, batches, parallelism, |s, d| {
        words(s)
            .map(|w| (w, 1u64))
            .reduce_by_key(|a, b| a + b)
            .name("counts")
            .foreach_batch(move |_, c| {
                d.store(c.len() as u64, Ordering::Relaxed);
                Ok(())
            })?;
        Ok(())
    })?;
    let session = SqlSession::new();
    let before = timings();
    let (sql_ms, sql_words) = run(&lines, batches, parallelism, |s, d| {
        words(s)
            .sql(
                &session,
                "SELECT value AS word, count(*) AS total FROM batch GROUP BY value",
            )?
            .foreach_batch(move |_, rows| {
                d.store(rows.len() as u64, Ordering::Relaxed);
                Ok(())
            })?;
        Ok(())
    })?;
    let after = timings();
    assert_eq!(rbk_words, sql_words, "both count the same distinct words");

    let rate = |ms: u64| (per_batch * batches) as f64 / (ms.max(1) as f64 / 1000.0);
    println!("lines/batch {per_batch}, batches {batches}, parallelism {parallelism}, distinct words {rbk_words}");
    println!(
        "reduce_by_key: {:.0} lines/s (batch processing time {rbk_ms} ms)",
        rate(rbk_ms)
    );
    println!(
        "SQL GROUP BY:  {:.0} lines/s (batch processing time {sql_ms} ms)",
        rate(sql_ms)
    );
    println!(
        "ratio SQL/reduce_by_key: {:.2}",
        rbk_ms as f64 / sql_ms.max(1) as f64
    );
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "SQL step: to Arrow {:.0} ms (summed over {parallelism} threads), query {:.0} ms, rows back {:.0} ms; the rest of {sql_ms} ms is split and lowercase, as for reduce_by_key",
        ms(after.to_arrow_ns - before.to_arrow_ns),
        ms(after.query_ns - before.query_ns),
        ms(after.to_rows_ns - before.to_rows_ns),
    );
    Ok(())
}
