//! Memory stays bounded under a producer faster than processing: a server
//! floods 1,000,000 lines of 100 bytes (100 MB) over loopback into a
//! socket_text_stream pipeline whose consumer is slow (it sleeps 30 ms per
//! batch). With `backlog_bytes_max` = 16 MiB the receiver stops reading at
//! the maximum, so no batch holds more than the backlog plus one store, and
//! the process's peak resident memory (VmHWM) stays under 200 MiB. Every
//! line arrives exactly once. Alone in its file so the peak is this test's.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{vm_hwm_kib, SlowTally};
use weir::receiver::SocketConfig;
use weir::StreamingContext;

const LINES: u64 = 1_000_000;
const LINE_BYTES: u64 = 100; // with its newline
const BACKLOG: u64 = 16 << 20;
const STORE: u64 = 1 << 20;
const PEAK_MIB_MAX: u64 = 200;

#[test]
fn a_loopback_flood_into_a_slow_pipeline_stays_under_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // 64 KiB blocks of numbered 100-byte lines.
        let mut block = Vec::with_capacity(64 << 10);
        let mut i = 0u64;
        while i < LINES {
            block.clear();
            while i < LINES && block.len() < (64 << 10) - 100 {
                writeln!(block, "{i:0>99}").unwrap();
                i += 1;
            }
            s.write_all(&block).unwrap();
        }
    });
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(50))
        .parallelism(2)
        .data_dir(dir.path())
        .backlog_bytes_max(BACKLOG)
        .build()
        .unwrap();
    let (lines, _) = ssc
        .socket_text_stream_with(
            "flood",
            &addr,
            SocketConfig {
                store_bytes_max: STORE as usize,
                ..SocketConfig::default()
            },
        )
        .unwrap();
    let tally = SlowTally::attach(&lines, Duration::from_millis(30));
    let before_kib = vm_hwm_kib();
    let t0 = Instant::now();
    ssc.start().unwrap();
    let took = tally.wait_for(LINES, t0);
    ssc.stop(false).unwrap();
    server.join().unwrap();
    // Backpressure: a batch is at most the backlog plus one store.
    tally.check(
        LINES,
        LINE_BYTES - 1,
        BACKLOG + STORE,
        PEAK_MIB_MAX,
        (before_kib, took),
    );
}
