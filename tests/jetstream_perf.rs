//! Measurements behind `docs/performance.md` ("JetStream source"), run by
//! hand (ignored in the suite: it publishes 100,000 messages):
//!
//! ```sh
//! cargo test --release --test jetstream_perf -- --ignored --nocapture
//! ```
//!
//! One pre-filled R3 stream on the 3-node test cluster; in the same run:
//! a bare `async-nats` ordered consumer draining it, bare direct-get
//! batches (`$JS.API.DIRECT.GET`, 1,024 a request: the read path weir
//! measured against), weir's source (one thread, and two threads on
//! halves as the engine's workers read), and a weir pipeline counting the
//! records end to end.

mod nats_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use bytes::Bytes;
use futures_util::StreamExt;
use nats_common::Cluster;
use weir::dstream::Source;
use weir::source::{JetStreamConnection, JetStreamSource};
use weir::{JetStreamConfig, ManualClock, StreamingContext};

const N: u64 = 100_000;

fn rate(n: u64, t: Duration) -> String {
    format!(
        "{:>9.0} records/s ({n} in {t:.2?})",
        n as f64 / t.as_secs_f64()
    )
}

#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
fn jetstream_read_paths_side_by_side() {
    let mut c = Cluster::start();
    c.create_stream("PERF", &["perf"]);
    let line = "the quick brown fox jumps over the lazy dog #weir @nats and counts every word";
    let msgs: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("{i} {line}"))).collect();
    let t = Instant::now();
    c.publish("perf", "p-", &msgs);
    eprintln!("publish (acked, R3, sync always): {}", rate(N, t.elapsed()));
    let urls = c.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let cfg = JetStreamConfig::new(&urls, &["PERF"]);

    for round in 0..2 {
        eprintln!("-- round {round}");
        // A bare async-nats ordered consumer from sequence 1.
        let js = c.js();
        let t = Instant::now();
        let got = c.block_on(async {
            let stream = js.get_stream("PERF").await.expect("stream");
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut n = 0u64;
            while let Some(m) = messages.next().await {
                let m = m.expect("message");
                n += 1;
                if m.info().expect("info").stream_sequence >= N {
                    break;
                }
            }
            n
        });
        assert_eq!(got, N);
        eprintln!(
            "async-nats ordered consumer:       {}",
            rate(N, t.elapsed())
        );

        let client = c.client();
        let t = Instant::now();
        let got = c.block_on(direct_get_all(&client, "PERF"));
        assert_eq!(got, N);
        eprintln!(
            "bare direct-get batches of 1024:   {}",
            rate(N, t.elapsed())
        );

        let conn = Arc::new(JetStreamConnection::connect(&cfg).expect("connect"));
        let src = Arc::new(JetStreamSource::open(conn, "PERF", "p-PERF", 1 << 20).expect("open"));
        let t = Instant::now();
        let mut n = 0u64;
        src.read_each(1..N + 1, &mut |_| {
            n += 1;
            true
        })
        .expect("read");
        assert_eq!(n, N);
        eprintln!(
            "weir source (ordered consumer), 1 thread: {}",
            rate(N, t.elapsed())
        );

        let t = Instant::now();
        let count = Arc::new(AtomicU64::new(0));
        std::thread::scope(|s| {
            for half in [1..N / 2 + 1, N / 2 + 1..N + 1] {
                let (src, count) = (src.clone(), count.clone());
                s.spawn(move || {
                    src.read_each(half, &mut |_| {
                        count.fetch_add(1, Ordering::Relaxed);
                        true
                    })
                    .expect("read");
                });
            }
        });
        assert_eq!(count.load(Ordering::Relaxed), N);
        eprintln!(
            "weir source, 2 threads on halves:  {}",
            rate(N, t.elapsed())
        );

        // End to end: a pipeline counting every record in one batch.
        let clock = Arc::new(ManualClock::new(0));
        let ssc = StreamingContext::builder()
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock.clone())
            .adaptive_batches(false)
            .batch_records_max(N + 1)
            .build()
            .expect("context");
        let (s, _) = ssc.jetstream_stream("p", cfg.clone()).expect("stream");
        let seen = Arc::new(AtomicU64::new(0));
        let sn = seen.clone();
        s.foreach_batch(move |_, recs| {
            sn.fetch_add(recs.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .expect("output");
        ssc.start().expect("start");
        let t = Instant::now();
        let bt = clock.advance(1000);
        ssc.await_batch(bt, Duration::from_secs(120))
            .expect("batch");
        let took = t.elapsed();
        ssc.stop(false).expect("stop");
        assert_eq!(seen.load(Ordering::Relaxed), N);
        eprintln!("weir pipeline (one batch, collect): {}", rate(N, took));
    }
}

/// Reads all of `stream` with direct-get batch requests of 1,024.
async fn direct_get_all(client: &async_nats::Client, stream: &str) -> u64 {
    let mut from = 1u64;
    let mut n = 0u64;
    loop {
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await.expect("subscribe");
        let body = format!(r#"{{"seq":{from},"batch":1024}}"#);
        client
            .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into())
            .await
            .expect("request");
        let mut got = 0;
        while let Some(m) = sub.next().await {
            match m.status.map(|s| s.as_u16()) {
                None => {
                    let seq: u64 = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Sequence"))
                        .and_then(|v| v.as_str().parse().ok())
                        .expect("Nats-Sequence");
                    from = seq + 1;
                    got += 1;
                }
                Some(_) => break, // 204 end of batch, 404 nothing more
            }
        }
        n += got;
        if got == 0 {
            return n;
        }
    }
}
