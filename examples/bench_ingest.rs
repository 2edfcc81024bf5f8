//! Durable ingest over loopback: records/s acknowledged after fsync, with 1
//! and 8 producers sending 100-byte records, and the ack latency (from
//! sending a DATA frame to the ACK that covers it) p50 / p99.
//!
//! Each producer pipelines up to `FRAMES_IN_FLIGHT` frames of
//! `RECORDS_PER_FRAME` records. The pipeline behind the server counts
//! records per batch (so batches commit and the backlog drains); the data
//! directory is a temp dir on the machine's disk (real fdatasync).
//!
//! Run: `cargo run --release --example bench_ingest [RECORDS_PER_PRODUCER_RUN]`
//! (default 2000000 records in total per run, split between producers).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::ingest::proto::{
    decode_server_frame, encode_data, encode_hello, encode_preamble, ServerFrame,
};
use weir::ingest::{payload, IngestConfig};
use weir::StreamingContext;

const RECORD_BYTES: usize = 100;
const RECORDS_PER_FRAME: usize = 2000;
const FRAMES_IN_FLIGHT: usize = 8;

/// One producer: sends `n` records, returns per-frame ack latencies.
fn produce(addr: SocketAddr, id: String, n: u64) -> Vec<Duration> {
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_nodelay(true).expect("nodelay");
    let mut b = Vec::new();
    encode_preamble(&mut b);
    encode_hello(&mut b, id.as_bytes());
    sock.write_all(&b).expect("hello");
    let mut rbuf = Vec::new();
    let next_frame = |sock: &mut TcpStream, rbuf: &mut Vec<u8>| -> ServerFrame {
        loop {
            if let Some((f, used)) = decode_server_frame(rbuf).expect("server frame") {
                rbuf.drain(..used);
                return f;
            }
            let mut chunk = [0u8; 4096];
            let got = sock.read(&mut chunk).expect("read");
            assert!(got > 0, "server closed");
            rbuf.extend_from_slice(&chunk[..got]);
        }
    };
    let start = match next_frame(&mut sock, &mut rbuf) {
        ServerFrame::Welcome { next_seq, .. } => next_seq,
        f => panic!("expected WELCOME, got {f:?}"),
    };
    let record = [b'x'; RECORD_BYTES];
    let recs: Vec<&[u8]> = vec![&record[..]; RECORDS_PER_FRAME];
    let end = start + n;
    let mut sent = start;
    let mut acked = start;
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut lat = Vec::new();
    let mut frame = Vec::new();
    while acked < end {
        while sent < end && in_flight.len() < FRAMES_IN_FLIGHT {
            let k = (end - sent).min(RECORDS_PER_FRAME as u64) as usize;
            frame.clear();
            encode_data(&mut frame, sent, &recs[..k]);
            sock.write_all(&frame).expect("send");
            sent += k as u64;
            in_flight.push_back((sent, Instant::now()));
        }
        match next_frame(&mut sock, &mut rbuf) {
            ServerFrame::Ack { next_seq } => {
                acked = next_seq;
                while in_flight.front().is_some_and(|(e, _)| *e <= acked) {
                    let (_, t) = in_flight.pop_front().expect("front");
                    lat.push(t.elapsed());
                }
            }
            f => panic!("expected ACK, got {f:?}"),
        }
    }
    lat
}

fn run(producers: usize, total: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ssc = StreamingContext::builder()
        .data_dir(dir.path())
        .batch_interval(Duration::from_millis(200))
        .batch_records_max(2_000_000)
        .parallelism(2)
        .build()
        .expect("context");
    let s = ssc
        .ingest_stream_with(
            "bench",
            IngestConfig::new("127.0.0.1:0".parse().expect("addr")),
            payload,
        )
        .expect("ingest stream");
    let counted = Arc::new(AtomicU64::new(0));
    let c = counted.clone();
    s.stream
        .count()
        .foreach_batch(move |_, n| {
            c.fetch_add(n.iter().sum::<u64>(), Ordering::Relaxed);
            Ok(())
        })
        .expect("sink");
    ssc.start().expect("start");
    let per = total / producers as u64;
    let t = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|i| {
            let addr = s.local_addr;
            std::thread::spawn(move || produce(addr, format!("p{i}"), per))
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer"))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let records = per * producers as u64;
    println!(
        "{producers} producer(s): {records} records of {RECORD_BYTES} bytes acknowledged in {secs:.2} s = {:.0} records/s; ack latency per {RECORDS_PER_FRAME}-record frame p50 {:.2} ms, p99 {:.2} ms",
        records as f64 / secs,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    ssc.stop(true).expect("stop");
    assert_eq!(
        counted.load(Ordering::Relaxed),
        records,
        "every record counted once"
    );
}

fn main() {
    let total: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    run(1, total);
    run(8, total);
}
