//! Memory stays bounded under a producer faster than processing: a server
//! floods 1,000,000 lines of 100 bytes (100 MB) over loopback into a
//! socket_text_stream pipeline whose consumer is slow (it sleeps 30 ms per
//! batch). With `backlog_bytes_max` = 16 MiB the receiver stops reading at
//! the maximum, so no batch holds more than the backlog plus one store, and
//! the process's peak resident memory (VmHWM) stays under 200 MiB. Every
//! line arrives exactly once. Alone in its file so the peak is this test's.

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::receiver::SocketConfig;
use weir::StreamingContext;

const LINES: u64 = 1_000_000;
const LINE_BYTES: u64 = 100; // with its newline
const BACKLOG: u64 = 16 << 20;
const STORE: u64 = 1 << 20;
const PEAK_MIB_MAX: u64 = 200;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

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
    let (count, sum, max_batch) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    {
        let (count, sum, max_batch) = (count.clone(), sum.clone(), max_batch.clone());
        lines
            .foreach_batch(move |_, recs| {
                std::thread::sleep(Duration::from_millis(30)); // the slow consumer
                max_batch.fetch_max(recs.len() as u64, Ordering::SeqCst);
                count.fetch_add(recs.len() as u64, Ordering::SeqCst);
                let s: u64 = recs.iter().map(|r| r.parse::<u64>().unwrap()).sum();
                sum.fetch_add(s, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
    }
    let before_kib = vm_hwm_kib();
    let t0 = Instant::now();
    ssc.start().unwrap();
    while count.load(Ordering::SeqCst) < LINES {
        assert!(
            t0.elapsed() < Duration::from_secs(240),
            "only {} of {LINES} lines in 240 s",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    ssc.stop(false).unwrap();
    server.join().unwrap();
    let peak_kib = vm_hwm_kib();
    let max_batch = max_batch.load(Ordering::SeqCst);
    eprintln!(
        "{LINES} lines in {took:?}; largest batch {max_batch} lines; VmHWM {} MiB (before start {} MiB)",
        peak_kib / 1024,
        before_kib / 1024
    );
    assert_eq!(count.load(Ordering::SeqCst), LINES);
    assert_eq!(
        sum.load(Ordering::SeqCst),
        LINES * (LINES - 1) / 2,
        "every line exactly once"
    );
    // Backpressure: a batch is at most the backlog plus one store.
    assert!(
        max_batch * (LINE_BYTES - 1) <= BACKLOG + STORE,
        "a batch of {max_batch} lines exceeds the backlog bound"
    );
    assert!(
        peak_kib < PEAK_MIB_MAX * 1024,
        "peak memory {} MiB exceeds {PEAK_MIB_MAX} MiB",
        peak_kib / 1024
    );
}
