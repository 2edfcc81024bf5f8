//! Criterion benchmark of the engine alone: one batch of 82-byte, 13-word
//! lines per iteration through split, lowercase, reduce_by_key on a manual
//! clock (queue push outside the measured time). Throughput in lines.

mod support;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use support::timed_batches;
use weir::testdata::tweet_lines;
use weir::{ManualClock, Queue, StreamingContext, Text};

const LINES: usize = 200_000;

fn wordcount(c: &mut Criterion) {
    let lines: Vec<Text> = tweet_lines(LINES, 42)
        .iter()
        .map(|l| Text::new(l))
        .collect();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(LINES as u64));
    group.sample_size(20);
    for parallelism in [1usize, 2] {
        let clock = Arc::new(ManualClock::new(0));
        let ssc = StreamingContext::builder()
            .batch_interval(Duration::from_secs(1))
            .parallelism(parallelism)
            .partitions(4)
            .clock(clock.clone())
            .build()
            .expect("context");
        let q: Queue<Text> = Queue::new();
        ssc.queue_stream(&q)
            .flat_map_with(|line: Text, out| Text::for_each_lowercase_word(&line, &mut *out))
            .map(|w| (w, 1u64))
            .reduce_by_key(|a, b| a + b)
            .foreach_batch(|_, counts| {
                criterion::black_box(counts.len());
                Ok(())
            })
            .expect("output");
        ssc.start().expect("start");
        group.bench_function(format!("wordcount_p{parallelism}"), |b| {
            b.iter_custom(|iters| timed_batches(&ssc, &clock, &q, &lines, iters, || {}))
        });
        ssc.stop(false).expect("stop");
    }
    group.finish();
}

criterion_group!(benches, wordcount);
criterion_main!(benches);
