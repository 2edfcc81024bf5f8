//! Test support, compiled only with the cargo feature `testing` (the
//! crate's own tests turn it on through a dev-dependency on itself): what
//! the `weir-testkit` binary runs for the real-process kill tests, and the
//! parser of what it writes. None of it ships in the `weir` binary.
//!
//! Owns: the WAL torture appender and its record format
//! (`w{thread}:{seq}:{pad}`, at most 256 bytes), and the test pipelines
//! (the stateful word count, a directory stream, an ingest stream), each
//! running until killed or, with `drain`, until every logged record is
//! processed.
//! Limits: torture records hold 1 to 7 records per append and at most 89
//! bytes of padding; test pipelines use `parallelism(2)`.
//! Must never: be needed by production code, or hide a failure (every
//! error is returned; nothing panics on a damaged log).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::storage::RealFs;
use crate::wal::{Wal, WalConfig};
use crate::StreamingContext;

/// How `weir-testkit wal torture` appends.
#[derive(Debug, Clone, Copy)]
pub struct TortureConfig {
    /// Appending threads.
    pub threads: usize,
    /// The log's `segment_bytes_max` (small, so segments roll often).
    pub segment_bytes_max: u64,
    /// Appends per thread before it stops.
    pub appends_max: u64,
}

fn io_error(e: std::io::Error) -> crate::Error {
    crate::Error::Usage(e.to_string())
}

/// Appends `w{thread}:{seq}:` records to the log in `dir` from
/// `cfg.threads` threads (`cfg.appends_max` appends each), writing
/// `ack THREAD SEQ` to `out` after each acknowledged append. It first
/// reads the log to continue each thread's sequence after the highest one
/// present, so sequences stay gap-free across kills.
pub fn torture(dir: &Path, cfg: TortureConfig, out: impl Write + Send) -> crate::Result<()> {
    let config = WalConfig {
        segment_bytes_max: cfg.segment_bytes_max,
        record_bytes_max: 256,
        ..WalConfig::default()
    };
    let (wal, _) = Wal::open_with(Arc::new(RealFs), dir, config)?;
    let mut next = vec![0u64; cfg.threads];
    wal.read(wal.first_lsn()..wal.end())?.for_each_ref(|_, p| {
        if let Some((t, seq)) = parse_torture_record(p) {
            if t < cfg.threads {
                next[t] = next[t].max(seq + 1);
            }
        }
    })?;
    let out = Mutex::new(out);
    std::thread::scope(|s| {
        let handles: Vec<_> = next
            .into_iter()
            .enumerate()
            .map(|(t, start)| {
                let (wal, out) = (&wal, &out);
                s.spawn(move || append_numbered(wal, t, start, cfg.appends_max, out))
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| crate::Error::Usage("an appender thread panicked".into()))??;
        }
        Ok(())
    })
}

fn append_numbered(
    wal: &Wal,
    t: usize,
    mut seq: u64,
    appends_max: u64,
    out: &Mutex<impl Write>,
) -> crate::Result<()> {
    for _ in 0..appends_max {
        let n = 1 + (seq % 7) as usize;
        let recs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "w{t}:{}:{}",
                    seq + i as u64,
                    "x".repeat((seq as usize * 13 + i) % 90)
                )
            })
            .collect();
        wal.append(&recs)?;
        seq += n as u64;
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(o, "ack {t} {}", seq - 1).map_err(io_error)?;
        o.flush().map_err(io_error)?;
    }
    Ok(())
}

/// Parses a record written by [`torture`]: `w{thread}:{seq}:{pad}`.
pub fn parse_torture_record(p: &[u8]) -> Option<(usize, u64)> {
    let s = std::str::from_utf8(p).ok()?;
    let mut it = s.strip_prefix('w')?.splitn(3, ':');
    let t = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    Some((t, seq))
}

/// Starts a test pipeline; with `drain`, stops gracefully at once
/// (receivers first, then batches until every source is drained), else
/// runs until killed.
fn run_until_killed_or_drained(ssc: &StreamingContext, drain: bool) -> crate::Result<()> {
    ssc.start()?;
    if drain {
        ssc.stop(true)?;
    } else {
        ssc.await_termination()?;
    }
    Ok(())
}

/// The crash tests' stateful word count ([`crate::pipelines`]) on
/// `data_dir` (input log `DATA_DIR/wal/input`, outputs in `DATA_DIR/out`).
pub fn wordcount_pipeline(
    data_dir: &Path,
    interval_ms: u64,
    batch_records_max: u64,
    drain: bool,
) -> crate::Result<()> {
    let out = data_dir.join("out");
    let ssc = StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_millis(interval_ms))
            .batch_records_max(batch_records_max)
            .parallelism(2)
            .build()?;
        crate::pipelines::stateful_wordcount(&ssc, &out)?;
        Ok(ssc)
    })?;
    run_until_killed_or_drained(&ssc, drain)
}

/// How [`dir_pipeline`] reads its directory.
#[derive(Debug, Clone, Copy)]
pub struct DirPipelineConfig {
    /// Batch interval, ms.
    pub interval_ms: u64,
    /// The directory stream's `lines_per_chunk_max`.
    pub lines_per_chunk: usize,
    /// The directory stream's scan interval, ms.
    pub scan_interval_ms: u64,
}

/// `text_file_stream("files", in_dir)` → `save_as_text_files`
/// (`OUT_DIR/lines-<ms>.txt`) on `data_dir`, until killed.
pub fn dir_pipeline(
    data_dir: &Path,
    in_dir: &Path,
    out_dir: &Path,
    cfg: DirPipelineConfig,
) -> crate::Result<()> {
    let ssc = StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_millis(cfg.interval_ms))
            .parallelism(2)
            .build()?;
        let config = crate::receiver::DirConfig {
            lines_per_chunk_max: cfg.lines_per_chunk,
            scan_interval: Duration::from_millis(cfg.scan_interval_ms),
            ..crate::receiver::DirConfig::default()
        };
        let (lines, _) = ssc.text_file_stream_with("files", in_dir, config)?;
        lines.save_as_text_files(&out_dir.join("lines").display().to_string(), "txt")?;
        Ok(ssc)
    })?;
    run_until_killed_or_drained(&ssc, false)
}

/// How [`ingest_pipeline`] runs.
#[derive(Debug, Clone, Copy)]
pub struct IngestPipelineConfig {
    /// Batch interval, ms.
    pub interval_ms: u64,
    /// Records per source per batch at most.
    pub batch_records_max: u64,
    /// The stream's rate limit (records/s, per partition).
    pub records_per_second: Option<u64>,
    /// Local partitions of the stream.
    pub partitions: usize,
    /// Stop at once and process every logged record (receiving stops).
    pub drain: bool,
}

/// An ingest stream `input` listening on `listen_addr`, each batch's
/// records saved as `OUT_DIR/records-<ms>.txt`, on `data_dir`; the bound
/// address is written to `DATA_DIR/ingest.addr`.
pub fn ingest_pipeline(
    data_dir: &Path,
    listen_addr: SocketAddr,
    out_dir: &Path,
    cfg: IngestPipelineConfig,
) -> crate::Result<()> {
    let mut addr = None;
    let ssc = StreamingContext::get_or_create(data_dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_millis(cfg.interval_ms))
            .batch_records_max(cfg.batch_records_max)
            .parallelism(2)
            // Small segments, so cleanup (and the producer table
            // snapshot before it) runs often; records fit the ingest limit
            // plus its stored header.
            .wal_config(WalConfig {
                segment_bytes_max: 128 << 10,
                record_bytes_max: 70_000,
                ..WalConfig::default()
            })
            .build()?;
        let mut icfg = crate::ingest::IngestConfig::new(listen_addr);
        icfg.records_per_second_max = cfg.records_per_second;
        icfg.partitions = cfg.partitions;
        let s = ssc.ingest_stream_with("input", icfg, crate::ingest::payload_utf8)?;
        addr = Some(s.local_addr);
        s.stream
            .save_as_text_files(&out_dir.join("records").display().to_string(), "txt")?;
        Ok(ssc)
    })?;
    if let Some(a) = addr {
        crate::storage::write_atomic(
            &RealFs,
            &data_dir.join("ingest.addr"),
            format!("{a}\n").as_bytes(),
        )?;
    }
    run_until_killed_or_drained(&ssc, cfg.drain)
}

#[cfg(test)]
mod tests {
    #[test]
    fn torture_records_parse_back() {
        assert_eq!(super::parse_torture_record(b"w2:17:xxx"), Some((2, 17)));
        assert_eq!(super::parse_torture_record(b"w0:0:"), Some((0, 0)));
        assert_eq!(super::parse_torture_record(b"x2:17:"), None);
        assert_eq!(super::parse_torture_record(b"w2:seven:"), None);
        assert_eq!(super::parse_torture_record(&[0xff, b'w']), None);
    }

    #[test]
    fn torture_appends_and_continues_each_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = super::TortureConfig {
            threads: 2,
            segment_bytes_max: 4096,
            appends_max: 3,
        };
        let mut first = Vec::new();
        super::torture(dir.path(), cfg, &mut first).expect("torture");
        let mut second = Vec::new();
        super::torture(dir.path(), cfg, &mut second).expect("torture again");
        let acks = |out: &[u8]| -> Vec<String> {
            let mut v: Vec<String> = String::from_utf8_lossy(out)
                .lines()
                .map(str::to_string)
                .collect();
            v.sort();
            v
        };
        // Appends of 1 + seq % 7 records: seq 0 (1 record), 1 (2), 3 (4)
        // -> acks 0, 2, 6; the second run continues at 7: 7 (1), 8 (2),
        // 10 (4) -> acks 7, 9, 13.
        assert_eq!(
            acks(&first),
            ["ack 0 0", "ack 0 2", "ack 0 6", "ack 1 0", "ack 1 2", "ack 1 6"]
        );
        assert_eq!(
            acks(&second),
            ["ack 0 13", "ack 0 7", "ack 0 9", "ack 1 13", "ack 1 7", "ack 1 9"]
        );
    }
}
