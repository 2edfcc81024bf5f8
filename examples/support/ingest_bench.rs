//! What the ingest benchmarks share (`bench_ingest`,
//! `bench_http_ingest`): the binary-protocol producer (HELLO, then DATA
//! frames of `records_per_frame` records of [`RECORD_BYTES`] bytes, at
//! most `frames_in_flight` unacknowledged, until `n` records are
//! acknowledged) and the server behind both (an ingest stream whose
//! pipeline counts its records, 200 ms batches).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::ingest::{payload, IngestConfig};
use weir::StreamingContext;

use weir::ingest::proto::{
    decode_server_frame, encode_data, encode_hello, encode_preamble, ServerFrame,
};

/// Bytes of each record.
pub const RECORD_BYTES: usize = 100;

/// One producer: sends `n` records, returns per-frame ack latencies.
pub fn produce(
    addr: SocketAddr,
    id: String,
    n: u64,
    records_per_frame: usize,
    frames_in_flight: usize,
) -> Vec<Duration> {
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
    let recs: Vec<&[u8]> = vec![&record[..]; records_per_frame];
    let end = start + n;
    let mut sent = start;
    let mut acked = start;
    let mut in_flight: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut lat = Vec::new();
    let mut frame = Vec::new();
    while acked < end {
        while sent < end && in_flight.len() < frames_in_flight {
            let k = (end - sent).min(records_per_frame as u64) as usize;
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

/// A context with a counting pipeline on a stream of `cfg`; returns it,
/// the address and the counter.
pub fn counting_server(
    dir: &std::path::Path,
    cfg: IngestConfig,
) -> (StreamingContext, SocketAddr, Arc<AtomicU64>) {
    let ssc = StreamingContext::builder()
        .data_dir(dir)
        .batch_interval(Duration::from_millis(200))
        .batch_records_max(2_000_000)
        .parallelism(2)
        .build()
        .expect("context");
    let s = ssc
        .ingest_stream_with("bench", cfg, payload)
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
    (ssc, s.local_addr, counted)
}
