//! The ingest server over loopback, with a raw protocol client: good
//! records are acknowledged and reach batches exactly once; garbage, an
//! oversized record, a truncated frame, a connection dropped mid-frame and
//! a sequence gap are refused (ERROR frame, connection closed) while the
//! good records before them stay and nothing of the bad frame is stored;
//! duplicates after a reconnect are dropped but acknowledged; the newest
//! connection of a producer wins; `connections_max`, the idle and the read
//! timeouts are enforced; the producer table survives a restart, from the
//! WAL and from its snapshot after segments were deleted; `weir feed`'s
//! library resumes from the server's expected sequence. Batches are driven
//! by a manual clock; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collect, get, Out, WAIT};
use weir::ingest::proto::{
    decode_server_frame, encode_data, encode_hello, encode_preamble, ErrorCode, Limits, ServerFrame,
};
use weir::ingest::{feed, FeedConfig, IngestConfig};
use weir::wal::WalConfig;
use weir::{ManualClock, StreamingContext};

struct Server {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    addr: SocketAddr,
    out: Out<String>,
}

fn limits() -> Limits {
    Limits {
        record_bytes_max: 32,
        records_per_frame_max: 8,
        frame_bytes_max: 1024,
        producer_id_bytes_max: 16,
    }
}

/// A context on `dir` whose manual clock starts at `t0` ms (a restarted
/// context continues after the batches already committed there).
fn start_with(dir: &Path, t0: u64, tune: impl FnOnce(&mut IngestConfig)) -> Server {
    start_backlog(dir, t0, 1 << 20, tune)
}

fn start_backlog(
    dir: &Path,
    t0: u64,
    backlog_bytes_max: u64,
    tune: impl FnOnce(&mut IngestConfig),
) -> Server {
    let clock = Arc::new(ManualClock::new(t0));
    let c = clock.clone();
    let mut cfg = IngestConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.limits = limits();
    tune(&mut cfg);
    let mut addr = None;
    let mut out = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(c)
            .backlog_bytes_max(backlog_bytes_max)
            .wal_config(WalConfig {
                segment_bytes_max: 512,
                record_bytes_max: 128,
                ..WalConfig::default()
            })
            .build()?;
        let s = ssc.ingest_stream_with("in", cfg, weir::ingest::payload_utf8)?;
        addr = Some(s.local_addr);
        out = Some(collect(&s.stream));
        Ok(ssc)
    })
    .unwrap();
    ssc.start().unwrap();
    Server {
        ssc,
        clock,
        addr: addr.unwrap(),
        out: out.unwrap(),
    }
}

fn start(dir: &Path) -> Server {
    start_with(dir, 0, |_| {})
}

impl Server {
    /// Runs one batch; returns the records of every batch so far.
    fn batch(&self) -> Vec<String> {
        let t = self.clock.advance(1000);
        self.ssc.await_batch(t, WAIT).unwrap();
        self.all()
    }
    fn all(&self) -> Vec<String> {
        get(&self.out).into_iter().flat_map(|(_, r)| r).collect()
    }
}

/// A raw protocol client.
struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Client {
            sock,
            buf: Vec::new(),
        }
    }
    /// Connects and says HELLO; returns the client and the WELCOME's
    /// expected sequence.
    fn hello(addr: SocketAddr, producer: &str) -> (Client, u64) {
        let mut c = Client::connect(addr);
        let mut b = Vec::new();
        encode_preamble(&mut b);
        encode_hello(&mut b, producer.as_bytes());
        c.send(&b);
        match c.frame() {
            Some(ServerFrame::Welcome { next_seq, .. }) => (c, next_seq),
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }
    fn send(&mut self, b: &[u8]) {
        self.sock.write_all(b).unwrap();
    }
    fn data(&mut self, first: u64, recs: &[&str]) {
        let mut b = Vec::new();
        encode_data(&mut b, first, recs);
        self.send(&b);
    }
    /// The next server frame, or `None` at end of stream (bounded wait).
    fn frame(&mut self) -> Option<ServerFrame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((f, n)) = decode_server_frame(&self.buf).expect("server frames decode") {
                self.buf.drain(..n);
                return Some(f);
            }
            assert!(Instant::now() < deadline, "no frame from the server");
            let mut b = [0u8; 4096];
            match self.sock.read(&mut b) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return None,
            }
        }
    }
    /// A frame if one arrives within 100 ms.
    fn try_frame(&mut self) -> Option<ServerFrame> {
        if let Some((f, n)) = decode_server_frame(&self.buf).expect("server frames decode") {
            self.buf.drain(..n);
            return Some(f);
        }
        let mut b = [0u8; 4096];
        if let Ok(n) = self.sock.read(&mut b) {
            self.buf.extend_from_slice(&b[..n]);
        }
        decode_server_frame(&self.buf)
            .expect("server frames decode")
            .map(|(f, n)| {
                self.buf.drain(..n);
                f
            })
    }
    /// Reads ACKs until one says `next`; panics on anything else.
    fn ack_until(&mut self, next: u64) {
        loop {
            match self.frame() {
                Some(ServerFrame::Ack { next_seq }) if next_seq == next => return,
                Some(ServerFrame::Ack { next_seq }) if next_seq < next => {}
                other => panic!("expected ACK {next}, got {other:?}"),
            }
        }
    }
    /// The ERROR frame the server closes with, then the end of stream.
    fn error(&mut self) -> (ErrorCode, String) {
        loop {
            match self.frame() {
                Some(ServerFrame::Error { code, message, .. }) => {
                    assert_eq!(self.frame(), None, "the server closes after ERROR");
                    return (code.expect("known code"), message);
                }
                Some(ServerFrame::Ack { .. }) => {}
                other => panic!("expected ERROR, got {other:?}"),
            }
        }
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn good_records_are_acknowledged_and_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (mut c, next) = Client::hello(s.addr, "p1");
    assert_eq!(next, 0);
    c.data(0, &["a", "b", "c"]);
    c.data(3, &["d"]);
    c.data(4, &["", "f"]);
    c.ack_until(6);
    assert_eq!(s.batch(), strs(&["a", "b", "c", "d", "", "f"]));
    c.data(6, &["g"]);
    c.ack_until(7);
    assert_eq!(s.batch(), strs(&["a", "b", "c", "d", "", "f", "g"]));
    let batches = get(&s.out);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].1, strs(&["g"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn a_pipelined_handshake_and_data_in_one_write_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let mut c = Client::connect(s.addr);
    let mut b = Vec::new();
    encode_preamble(&mut b);
    encode_hello(&mut b, b"p");
    encode_data(&mut b, 0, &["a", "b"]);
    c.send(&b);
    assert!(matches!(
        c.frame(),
        Some(ServerFrame::Welcome { next_seq: 0, .. })
    ));
    assert_eq!(c.frame(), Some(ServerFrame::Ack { next_seq: 2 }));
    assert_eq!(s.batch(), strs(&["a", "b"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn under_backpressure_acks_are_withheld_until_a_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_backlog(dir.path(), 0, 100, |_| {});
    let (mut c, _) = Client::hello(s.addr, "p");
    // The backlog limit (set below, 100 bytes) is reached by the first
    // frame; the second waits in `store` for a batch.
    let big = "x".repeat(30);
    c.data(0, &[&big, &big, &big, &big]);
    c.ack_until(4);
    c.data(4, &["after"]);
    let t = Instant::now();
    let mut got = None;
    while t.elapsed() < Duration::from_millis(300) {
        if let Some(f) = c.try_frame() {
            got = Some(f);
            break;
        }
    }
    assert_eq!(got, None, "acknowledged while the backlog is full");
    let all = s.batch();
    assert_eq!(all.len(), 4);
    c.ack_until(5);
    assert_eq!(s.batch()[4], "after");
    s.ssc.stop(false).unwrap();
}

#[test]
fn garbage_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let mut c = Client::connect(s.addr);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::BadPreamble);
    assert!(msg.contains("not a weir ingest connection"), "{msg}");
    // Garbage after a good handshake: a bad CRC.
    let (mut c, _) = Client::hello(s.addr, "p");
    c.data(0, &["ok"]);
    c.ack_until(1);
    c.send(&[5, 0, 0, 0, 1, 2, 3, 4, 2, 9, 9, 9, 9]);
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::Malformed);
    assert!(msg.contains("checksum"), "{msg}");
    assert_eq!(s.batch(), strs(&["ok"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn an_oversized_record_closes_after_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (mut c, _) = Client::hello(s.addr, "p");
    c.data(0, &["x", "y"]);
    c.data(2, &["z", &"L".repeat(33)]);
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::TooLarge);
    assert!(
        msg.contains("record 1 of the DATA frame is 33 bytes"),
        "{msg}"
    );
    // An oversized frame is refused from its length field alone.
    let (mut c2, next) = Client::hello(s.addr, "q");
    assert_eq!(next, 0);
    c2.send(&2000u32.to_le_bytes());
    assert_eq!(c2.error().0, ErrorCode::TooLarge);
    assert_eq!(s.batch(), strs(&["x", "y"]));
    // The producer resumes after the good records.
    assert_eq!(Client::hello(s.addr, "p").1, 2);
    s.ssc.stop(false).unwrap();
}

#[test]
fn a_truncated_frame_and_a_mid_frame_drop_store_nothing_of_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    // Truncated: a well-checksummed DATA frame that claims 3 records and
    // holds 2.
    let (mut c, _) = Client::hello(s.addr, "p");
    c.data(0, &["a"]);
    c.ack_until(1);
    let mut f = Vec::new();
    encode_data(&mut f, 1, &["b", "c"]);
    f[8 + 1 + 8] = 3; // count
    let crc = crc32fast::hash(&f[8..]);
    f[4..8].copy_from_slice(&crc.to_le_bytes());
    c.send(&f);
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::Malformed);
    assert!(msg.contains("truncated inside record 2"), "{msg}");
    // Dropped mid-frame: half a frame, then the producer goes away.
    let (mut c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 1);
    c.data(1, &["b"]);
    c.ack_until(2);
    let mut f = Vec::new();
    encode_data(&mut f, 2, &["c", "d"]);
    c.send(&f[..f.len() / 2]);
    drop(c);
    // Whether or not the server saw the drop yet, the half frame is never
    // stored: the producer resumes after "b".
    let (_c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 2, "nothing of the dropped frame was stored");
    assert_eq!(s.batch(), strs(&["a", "b"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn a_sequence_gap_is_refused_and_duplicates_are_dropped_but_acked() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (mut c, _) = Client::hello(s.addr, "p");
    c.data(0, &["0", "1", "2"]);
    c.data(5, &["5"]);
    c.ack_until(3);
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::SequenceGap);
    assert!(
        msg.contains("expected 3, the DATA frame starts at 5"),
        "{msg}"
    );
    // Reconnect: resume at 3, re-send an overlapping frame and a pure
    // duplicate.
    let (mut c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 3);
    c.data(1, &["1", "2", "3", "4"]);
    c.ack_until(5);
    c.data(0, &["0"]);
    c.ack_until(5);
    assert_eq!(s.batch(), strs(&["0", "1", "2", "3", "4"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn the_newest_connection_of_a_producer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (mut old, _) = Client::hello(s.addr, "p");
    old.data(0, &["a"]);
    old.ack_until(1);
    let (mut new, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 1);
    old.data(1, &["stale"]);
    assert_eq!(old.error().0, ErrorCode::Superseded);
    new.data(1, &["b"]);
    new.ack_until(2);
    assert_eq!(s.batch(), strs(&["a", "b"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn connections_max_and_timeouts_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| {
        c.connections_max = 2;
        c.idle_timeout = Duration::from_millis(400);
        c.read_timeout = Duration::from_millis(300);
    });
    let (mut a, _) = Client::hello(s.addr, "a");
    let (mut b, _) = Client::hello(s.addr, "b");
    let mut third = Client::connect(s.addr);
    let (code, msg) = third.error();
    assert_eq!(code, ErrorCode::Busy);
    assert!(msg.contains("connections_max = 2"), "{msg}");
    // Read timeout: `b` dribbles half a frame (and then nothing).
    let mut f = Vec::new();
    encode_data(&mut f, 0, &["abc"]);
    b.send(&f[..5]);
    // Idle: `a` sends nothing and is closed.
    let t = Instant::now();
    let (code, msg) = a.error();
    assert_eq!(code, ErrorCode::Timeout);
    assert!(msg.contains("idle_timeout"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (code, msg) = b.error();
    assert_eq!(code, ErrorCode::Timeout);
    assert!(msg.contains("read_timeout"), "{msg}");
    // The freed slots take new connections.
    let (mut c, _) = Client::hello(s.addr, "c");
    c.data(0, &["ok"]);
    c.ack_until(1);
    assert_eq!(s.batch(), strs(&["ok"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn the_producer_table_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let recs: Vec<String> = (0..40).map(|i| format!("record-{i:02}")).collect();
    let refs: Vec<&str> = recs.iter().map(String::as_str).collect();
    {
        let s = start(dir.path());
        let (mut c, _) = Client::hello(s.addr, "p");
        for (i, chunk) in refs[..20].chunks(4).enumerate() {
            c.data(i as u64 * 4, chunk);
        }
        c.ack_until(20);
        s.batch();
        s.ssc.stop(false).unwrap();
    }
    // From the WAL (records still there) ...
    let s = start_with(dir.path(), 100_000, |_| {});
    let (mut c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 20);
    c.data(16, &refs[16..24]);
    c.ack_until(24);
    assert_eq!(s.batch(), recs[20..24].to_vec());
    // ... and once old segments are gone, from the snapshot.
    for (i, chunk) in refs[24..40].chunks(4).enumerate() {
        c.data(24 + i as u64 * 4, chunk);
    }
    c.ack_until(40);
    s.batch();
    s.batch();
    drop(c);
    let wal = dir.path().join("wal").join("in");
    let first = std::fs::read_dir(&wal)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".wal")
                .map(|n| n.parse::<u64>().unwrap())
        })
        .min()
        .unwrap();
    assert!(first > 0, "tiny segments: the first ones were deleted");
    assert!(dir.path().join("wal").join("in.producers").is_file());
    s.ssc.stop(false).unwrap();
    drop(s);
    let s = start_with(dir.path(), 200_000, |_| {});
    let (mut c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 40);
    c.data(0, &refs[0..8]);
    c.ack_until(40);
    c.data(40, &["new"]);
    c.ack_until(41);
    assert_eq!(s.batch(), strs(&["new"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn feed_sends_every_line_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let lines: Vec<String> = (0..300).map(|i| format!("line {i}")).collect();
    let text = lines.join("\n") + "\n";
    let mut cfg = FeedConfig::new("feeder");
    cfg.window_records_max = 16;
    cfg.frame_records_max = 5;
    let r = feed(s.addr, text.as_bytes(), cfg.clone()).unwrap();
    assert_eq!(
        (r.records, r.records_sent, r.records_skipped, r.connections),
        (300, 300, 0, 1)
    );
    // Again with 50 more lines: the first 300 are skipped.
    let more = text.clone() + "line 300\nline 301\n";
    let r = feed(s.addr, more.as_bytes(), cfg).unwrap();
    assert_eq!(
        (r.records, r.records_sent, r.records_skipped),
        (302, 2, 300)
    );
    let mut all = s.batch();
    all.sort();
    let mut want: Vec<String> = (0..302).map(|i| format!("line {i}")).collect();
    want.sort();
    assert_eq!(all, want);
    s.ssc.stop(false).unwrap();
}

#[test]
fn producers_max_refuses_a_new_producer_but_not_a_known_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| c.producers_max = 1);
    let (mut a, _) = Client::hello(s.addr, "a");
    a.data(0, &["x"]);
    a.ack_until(1);
    let mut b = Client::connect(s.addr);
    let mut hello = Vec::new();
    encode_preamble(&mut hello);
    encode_hello(&mut hello, b"b");
    b.send(&hello);
    let (code, msg) = b.error();
    assert_eq!(code, ErrorCode::ProducersFull);
    assert!(msg.contains("producers_max = 1"), "{msg}");
    assert_eq!(Client::hello(s.addr, "a").1, 1);
    s.ssc.stop(false).unwrap();
}

#[test]
fn feed_refuses_a_line_over_the_record_limit_and_gives_up_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let input = format!("short\n{}\nnever sent\n", "y".repeat(33));
    let e = feed(s.addr, input.as_bytes(), FeedConfig::new("f")).unwrap_err();
    assert!(
        matches!(e, weir::ingest::FeedError::LineTooLong { line: 1, max: 32 }),
        "{e}"
    );
    assert_eq!(
        s.batch(),
        strs(&["short"]),
        "lines before it were acknowledged"
    );
    s.ssc.stop(false).unwrap();
    // Nothing listens on the port any more: bounded retrying, then an error.
    let mut cfg = FeedConfig::new("f");
    cfg.retry_time_max = Duration::from_millis(300);
    let t = Instant::now();
    let e = feed(s.addr, "a\n".as_bytes(), cfg).unwrap_err();
    assert!(
        matches!(e, weir::ingest::FeedError::GaveUp { acked: 0, .. }),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}
