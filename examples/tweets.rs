//! The seed's pipeline in weir's API, on a queue stream.
//!
//! Input records are chunks of tweet-like text in which every tweet ends
//! in `__end` (what the seed read from its socket). The pipeline splits the
//! chunks into tweets, lowercases them, prints the first ten tweets of each
//! batch, counts words with `reduce_by_key`, and keeps the top hashtags over
//! a 4-second window sliding every 2 seconds (an incremental windowed
//! reduce with an inverse function).
//!
//! Run: `cargo run --release --example tweets`

use std::sync::Arc;
use std::time::Duration;

use weir::testdata::{tweet_lines, with_end_markers};
use weir::{ManualClock, Queue, StreamingContext, Text};

const BATCHES: u64 = 6;
const TWEETS_PER_BATCH: usize = 200;
const TWEETS_PER_CHUNK: usize = 20;

fn main() -> weir::Result<()> {
    // A manual clock makes the demo instant and deterministic; with
    // `weir::SystemClock` batches follow wall time.
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .clock(clock.clone())
        .build()?;

    let queue: Queue<String> = Queue::new();
    let chunks = ssc.queue_stream(&queue).name("tweets_in");

    let tweets = chunks
        // The tutorial's first step: split on `__end`, trim, drop the
        // empty pieces, lowercase.
        .flat_map(|chunk: String| {
            chunk
                .split("__end")
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<String>>()
        })
        .name("tweets");
    tweets.print(10)?;

    let words = tweets
        .flat_map_with(|tweet: String, out| Text::for_each_lowercase_word(&tweet, out))
        .name("words");
    let counts = words
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b)
        .name("word_counts");
    counts
        .transform(|_, mut v: Vec<(Text, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        })
        .print(10)?;

    let hashtags = words
        .filter(|w| w.starts_with('#'))
        .map(|w| (w, 1i64))
        .reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            Duration::from_secs(4),
            Duration::from_secs(2),
            Some(|kv: &(Text, i64)| kv.1 > 0),
        )
        .name("hashtag_window");
    hashtags
        .transform(|_, mut v: Vec<(Text, i64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(5);
            v
        })
        .name("top_hashtags")
        .print(5)?;

    ssc.start()?;
    for b in 0..BATCHES {
        let tweets = tweet_lines(TWEETS_PER_BATCH, 1000 + b);
        let batch: Vec<String> = tweets
            .chunks(TWEETS_PER_CHUNK)
            .map(with_end_markers)
            .collect();
        queue.push(batch)?;
        let t = clock.advance(1000);
        let stats = ssc.await_batch(t, Duration::from_secs(60))?;
        eprintln!(
            "batch {t} ms: {} records, processed in {} ms",
            stats.input_records, stats.processing_time_ms
        );
    }
    ssc.stop(false)?;
    Ok(())
}
