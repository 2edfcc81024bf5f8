//! Memory stays bounded under a producer faster than processing, for the
//! ingest server: the `weir feed` client library floods 1,000,000 records
//! of 99 bytes (about 100 MB, generated on the fly) over loopback into an
//! `ingest_text_stream` pipeline whose consumer is slow (it sleeps 30 ms
//! per batch). With `backlog_bytes_max` = 16 MiB the server withholds acks
//! and stops reading at the maximum, so no batch holds more than the
//! backlog plus one store, and the process's peak resident memory (VmHWM:
//! server, pipeline and client together) stays under 200 MiB. Every record
//! arrives exactly once. Alone in its file so the peak is this test's.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{vm_hwm_kib, SlowTally};
use weir::ingest::{feed, payload_utf8, FeedConfig, IngestConfig};
use weir::StreamingContext;

const RECORDS: u64 = 1_000_000;
const BACKLOG: u64 = 16 << 20;
const PEAK_MIB_MAX: u64 = 200;

/// Lines `{i:0>99}\n` for i in 0..RECORDS, produced as they are read.
struct Numbers {
    next: u64,
    pending: Vec<u8>,
}

impl Read for Numbers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.len() < buf.len() && self.next < RECORDS {
            self.pending
                .extend_from_slice(format!("{:0>99}\n", self.next).as_bytes());
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_loopback_flood_into_a_slow_pipeline_stays_under_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_millis(50))
        .parallelism(2)
        .data_dir(dir.path())
        .backlog_bytes_max(BACKLOG)
        .build()
        .unwrap();
    let s = ssc
        .ingest_stream_with(
            "flood",
            IngestConfig::new("127.0.0.1:0".parse().unwrap()),
            payload_utf8,
        )
        .unwrap();
    let tally = SlowTally::attach(&s.stream, Duration::from_millis(30));
    let before_kib = vm_hwm_kib();
    let t0 = Instant::now();
    ssc.start().unwrap();
    let addr = s.local_addr;
    let producer = std::thread::spawn(move || {
        let input = Numbers {
            next: 0,
            pending: Vec::new(),
        };
        feed(addr, input, FeedConfig::new("flood"))
    });
    let took = tally.wait_for(RECORDS, t0);
    let report = producer
        .join()
        .unwrap()
        .expect("feed acknowledged everything");
    ssc.stop(false).unwrap();
    assert_eq!(report.records, RECORDS);
    // Backpressure: a batch is at most the backlog plus one store (one
    // frame buffer of records, about 1.1 MiB, with their headers).
    let stored_bytes = 99 + 2 + "flood".len() as u64 + 8;
    tally.check(
        RECORDS,
        stored_bytes,
        BACKLOG + (2 << 20),
        PEAK_MIB_MAX,
        (before_kib, took),
    );
}
