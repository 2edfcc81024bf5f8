//! weir's side of the side-by-side benchmark (`benches/side_by_side.py`):
//! the seed's pipeline on a socket text stream, every line durable in the
//! WAL (fsynced) before the batch that holds it is cut, lineage and state
//! in the sled checkpoint (`get_or_create`, so a restart recovers).
//!
//! Usage: `bench_socket_wordcount ADDR BATCH_MS DATA_DIR [BACKLOG_MIB]`
//! (`BACKLOG_MIB`: the stream's `backlog_bytes_max` in MiB; default: the
//! context's default).
//!
//! Prints, like the Spark program (`benches/spark/WeirBenchSpark.java`),
//! `WEIRBENCH started <wall_ms>` once running and one line per completed
//! batch: `WEIRBENCH batch <time_ms> <records> <scheduling_ms>
//! <processing_ms> <total_ms> <wall_ms_seen>` (statistics polled every
//! millisecond, so the completion time is late by at most about 1 ms).
//! Runs until killed.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir::{StreamingContext, Text};

fn wall_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn main() -> weir::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 && args.len() != 4 {
        eprintln!("usage: bench_socket_wordcount ADDR BATCH_MS DATA_DIR [BACKLOG_MIB]");
        std::process::exit(2);
    }
    let addr = args[0].clone();
    let batch_ms: u64 = args[1]
        .parse()
        .map_err(|e| weir::Error::Usage(format!("BATCH_MS `{}`: {e}", args[1])))?;
    let backlog_mib: Option<u64> = match args.get(3) {
        Some(a) => Some(
            a.parse()
                .map_err(|e| weir::Error::Usage(format!("BACKLOG_MIB `{a}`: {e}")))?,
        ),
        None => None,
    };
    let ssc = StreamingContext::get_or_create(&args[2], |b| {
        let mut b = b.batch_interval(Duration::from_millis(batch_ms));
        if let Some(m) = backlog_mib {
            b = b.backlog_bytes_max(m << 20);
        }
        let ssc = b.build()?;
        let lines = ssc.socket_text_stream("tweets", &addr)?;
        let tweets = lines
            .flat_map(|l: String| {
                l.split("__end")
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
            })
            .name("split");
        tweets.print(10)?;
        tweets
            .flat_map_with(|t: String, out| Text::for_each_lowercase_word(&t, out))
            .map(|w| (w, 1u64))
            .reduce_by_key(|a, b| a + b)
            .name("word_counts")
            .foreach_batch(|_, counts| {
                std::hint::black_box(counts.len());
                Ok(())
            })?;
        Ok(ssc)
    })?;
    ssc.start()?;
    let mut out = std::io::stdout();
    writeln!(out, "WEIRBENCH started {}", wall_ms()).ok();
    let mut last_seen = 0u64;
    loop {
        for s in ssc.statistics() {
            if s.batch_time_ms > last_seen {
                last_seen = s.batch_time_ms;
                writeln!(
                    out,
                    "WEIRBENCH batch {} {} {} {} {} {}",
                    s.batch_time_ms,
                    s.input_records,
                    s.scheduling_delay_ms,
                    s.processing_time_ms,
                    s.total_delay_ms,
                    wall_ms()
                )
                .ok();
                out.flush().ok();
            }
        }
        if ssc.await_termination_or_timeout(Duration::from_millis(1))? {
            return Ok(());
        }
    }
}
