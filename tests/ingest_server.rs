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
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collect, get, Out, WAIT};
use weir::ingest::proto::{
    decode_server_frame, encode_data, encode_hello, encode_preamble, ErrorCode, Limits, ServerFrame,
};
use weir::ingest::{feed, FeedConfig, IngestConfig, IngestStats};
use weir::wal::WalConfig;
use weir::{ManualClock, StreamingContext};

struct Server {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    addr: SocketAddr,
    out: Out<String>,
    stats: Arc<IngestStats>,
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
    let mut stats = None;
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
        stats = Some(s.stats.clone());
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
        stats: stats.unwrap(),
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
        Client::from_sock(TcpStream::connect(addr).unwrap())
    }
    fn from_sock(sock: TcpStream) -> Client {
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

// ---- Pressure: ghosts, expiry, per-address limits, the HELLO deadline ----

/// A connection to `addr` from the loopback address `from` (127.0.0.x:
/// Linux routes all of 127/8 to the loopback interface).
fn connect_from(addr: SocketAddr, from: [u8; 4]) -> Client {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sock = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from((from, 0))).unwrap();
        s.connect(addr).await.unwrap()
    });
    let sock = sock.into_std().unwrap();
    sock.set_nonblocking(false).unwrap();
    Client::from_sock(sock)
}

/// Preamble + HELLO on `c`; the WELCOME's expected sequence, or the ERROR.
fn say_hello(c: &mut Client, producer: &str) -> Result<u64, (ErrorCode, String)> {
    let mut b = Vec::new();
    encode_preamble(&mut b);
    encode_hello(&mut b, producer.as_bytes());
    c.send(&b);
    match c.frame() {
        Some(ServerFrame::Welcome { next_seq, .. }) => Ok(next_seq),
        Some(ServerFrame::Error { code, message, .. }) => Err((code.unwrap(), message)),
        other => panic!("expected WELCOME or ERROR, got {other:?}"),
    }
}

/// Polls (bounded) until `producer` is welcomed from `from`; returns the
/// client and its expected sequence.
fn hello_eventually(addr: SocketAddr, from: [u8; 4], producer: &str) -> (Client, u64) {
    let t = Instant::now();
    loop {
        let mut c = connect_from(addr, from);
        match say_hello(&mut c, producer) {
            Ok(next) => return (c, next),
            Err(e) => assert!(t.elapsed() < WAIT, "{producer} never welcomed: {e:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refusals(s: &Server, reason: &str) -> u64 {
    s.stats
        .refusals()
        .into_iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

/// The producer ids in the stream's snapshot file.
fn snapshot_ids(dir: &Path) -> Vec<String> {
    let b = std::fs::read(dir.join("wal").join("in.producers")).expect("snapshot");
    let snap = weir::ingest::records::decode_snapshot(&b, 100).expect("decodes");
    snap.entries
        .iter()
        .map(|(r, _)| String::from_utf8_lossy(&b[r.clone()]).into_owned())
        .collect()
}

/// Sends records `from..to` (`r-<i>`) as producer `c` and waits for the ACK.
fn send_numbered(c: &mut Client, from: u64, to: u64) {
    let recs: Vec<String> = (from..to).map(|i| format!("r-{i:02}")).collect();
    for (k, chunk) in recs.chunks(4).enumerate() {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        c.data(from + 4 * k as u64, &refs);
    }
    c.ack_until(to);
}

#[test]
fn hello_only_producers_leave_no_trace_and_never_lock_out_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| c.producers_max = 3);
    // 20 producers that only say HELLO, one after the other: each leaves
    // with its connection, so the table (3) never fills.
    for i in 0..20 {
        let (c, _) = hello_eventually(s.addr, [127, 0, 0, 1], &format!("ghost-{i}"));
        drop(c);
    }
    let (mut p, next) = hello_eventually(s.addr, [127, 0, 0, 1], "p");
    assert_eq!(next, 0);
    // Two HELLO-only producers stay connected while the table is saved.
    let (g1, _) = hello_eventually(s.addr, [127, 0, 0, 1], "held-1");
    let (g2, _) = hello_eventually(s.addr, [127, 0, 0, 1], "held-2");
    send_numbered(&mut p, 0, 40);
    s.batch();
    s.batch();
    assert_eq!(s.all().len(), 40);
    assert_eq!(
        snapshot_ids(dir.path()),
        vec!["p".to_string()],
        "only producers with records are saved"
    );
    drop((p, g1, g2));
    s.ssc.stop(false).unwrap();
    drop(s);
    // After a restart with room for 2: `p` plus one new producer.
    let s = start_with(dir.path(), 100_000, |c| c.producers_max = 2);
    let (_q, next) = hello_eventually(s.addr, [127, 0, 0, 1], "q");
    assert_eq!(next, 0, "a new producer is served after the restart");
    // `p` resumes exactly once: a re-send overlapping what it stored is
    // dropped, the rest stored.
    let (mut p, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 40);
    p.data(36, &["r-36", "r-37", "r-38", "r-39", "new-40"]);
    p.ack_until(41);
    assert_eq!(s.batch(), strs(&["new-40"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn idle_producers_expire_only_after_retention_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| {
        c.producers_max = 1;
        c.producers_idle_max = Duration::from_millis(200);
    });
    let (mut a, _) = Client::hello(s.addr, "a");
    a.data(0, &["a0", "a1"]);
    a.ack_until(2);
    drop(a);
    // Its records are not in a committed batch yet: it is kept however
    // long it is idle (the sweep runs every 50 ms here).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.stats.producers_expired.load(Ordering::Relaxed), 0);
    let mut b = Client::connect(s.addr);
    assert_eq!(
        say_hello(&mut b, "b").unwrap_err().0,
        ErrorCode::ProducersFull
    );
    assert_eq!(s.batch(), strs(&["a0", "a1"]));
    // Committed and idle for 200 ms: it expires and `b` gets the room.
    let (mut b, next) = hello_eventually(s.addr, [127, 0, 0, 1], "b");
    assert_eq!(next, 0);
    assert_eq!(s.stats.producers_expired.load(Ordering::Relaxed), 1);
    // A connected producer never expires, however idle.
    b.data(0, &["b0"]);
    b.ack_until(1);
    s.batch();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(s.stats.producers_expired.load(Ordering::Relaxed), 1);
    b.data(1, &["b1"]);
    b.ack_until(2);
    assert_eq!(s.batch(), strs(&["a0", "a1", "b0", "b1"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn per_address_limits_refuse_a_flood_and_serve_others_at_their_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| {
        c.connections_max = 10;
        c.connections_per_address_max = 3;
        c.handshakes_per_address_max = 2;
    });
    let flood = [127, 0, 0, 2];
    // Two connections from one address that do not say HELLO: the third
    // is refused (handshakes_per_address_max = 2) ...
    let mut p1 = connect_from(s.addr, flood);
    let mut p2 = connect_from(s.addr, flood);
    let mut p3 = connect_from(s.addr, flood);
    let (code, msg) = p3.error();
    assert_eq!(code, ErrorCode::Busy);
    assert!(msg.contains("handshakes_per_address_max = 2"), "{msg}");
    // ... while a producer from elsewhere is served.
    let (mut other, _) = Client::hello(s.addr, "other");
    other.data(0, &["served"]);
    other.ack_until(1);
    // Once they said HELLO, one more connection fits: 3 per address.
    assert_eq!(say_hello(&mut p1, "f1"), Ok(0));
    assert_eq!(say_hello(&mut p2, "f2"), Ok(0));
    let mut f3 = connect_from(s.addr, flood);
    assert_eq!(say_hello(&mut f3, "f3"), Ok(0));
    let mut f4 = connect_from(s.addr, flood);
    let (code, msg) = f4.error();
    assert_eq!(code, ErrorCode::Busy);
    assert!(msg.contains("connections_per_address_max = 3"), "{msg}");
    // After one of them closes, that address is served again.
    drop(p1);
    let (_f5, next) = hello_eventually(s.addr, flood, "f5");
    assert_eq!(next, 0);
    assert_eq!(refusals(&s, "handshakes_per_address_max"), 1);
    assert!(refusals(&s, "connections_per_address_max") >= 1);
    assert_eq!(s.batch(), strs(&["served"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn a_connection_that_never_says_hello_is_closed_after_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| {
        c.hello_timeout = Duration::from_millis(300);
        c.read_timeout = Duration::from_secs(30);
        c.idle_timeout = Duration::from_secs(30);
    });
    let t = Instant::now();
    let mut silent = Client::connect(s.addr);
    let mut half = Client::connect(s.addr);
    let mut b = Vec::new();
    encode_preamble(&mut b);
    half.send(&b); // the preamble, never the HELLO
    for c in [&mut silent, &mut half] {
        let (code, msg) = c.error();
        assert_eq!(code, ErrorCode::Timeout);
        assert!(msg.contains("hello_timeout"), "{msg}");
    }
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(refusals(&s, "hello_timeout"), 2);
    // A producer that greets in time is served past the deadline.
    let (mut c, _) = Client::hello(s.addr, "p");
    std::thread::sleep(Duration::from_millis(400));
    c.data(0, &["late but greeted"]);
    c.ack_until(1);
    s.ssc.stop(false).unwrap();
}

#[test]
fn the_limits_are_accepted_at_their_ceiling_and_refused_above() {
    use weir::ingest::{CONNECTIONS_CEILING, PRODUCERS_CEILING};
    type Tune = fn(&mut IngestConfig, usize);
    let cases: [(&str, Tune, usize); 4] = [
        (
            "connections_max",
            |c, v| c.connections_max = v,
            CONNECTIONS_CEILING,
        ),
        (
            "connections_per_address_max",
            |c, v| c.connections_per_address_max = v,
            CONNECTIONS_CEILING,
        ),
        (
            "handshakes_per_address_max",
            |c, v| c.handshakes_per_address_max = v,
            CONNECTIONS_CEILING,
        ),
        (
            "producers_max",
            |c, v| c.producers_max = v,
            PRODUCERS_CEILING,
        ),
    ];
    for (name, tune, max) in cases {
        for (v, ok) in [(max, true), (max + 1, false), (0, false)] {
            let dir = tempfile::tempdir().unwrap();
            let r = StreamingContext::get_or_create(dir.path(), |b| {
                let ssc = b.batch_interval(Duration::from_secs(1)).build()?;
                let mut cfg = IngestConfig::new("127.0.0.1:0".parse().unwrap());
                tune(&mut cfg, v);
                ssc.ingest_stream_with("in", cfg, weir::ingest::payload_utf8)?;
                Ok(ssc)
            });
            match r {
                Ok(_) => assert!(ok, "{name} = {v} was accepted"),
                Err(e) => {
                    assert!(!ok, "{name} = {v} was refused: {e}");
                    assert!(e.to_string().contains(name), "{e}");
                }
            }
        }
    }
}

// ---- Records the stream cannot process are refused before storing ----

#[test]
fn a_record_that_is_not_utf8_is_refused_and_nothing_of_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    let (mut c, _) = Client::hello(s.addr, "p");
    let bad: &[u8] = b"caf\xe9";
    let mut f = Vec::new();
    encode_data(&mut f, 0, &[&b"ok"[..], bad, &b"after"[..]]);
    c.send(&f);
    c.ack_until(1);
    let (code, msg) = c.error();
    assert_eq!(code, ErrorCode::InvalidRecord);
    assert!(msg.contains("record 1 ") && msg.contains("UTF-8"), "{msg}");
    assert_eq!(refusals(&s, "invalid_record"), 1);
    // The producer resumes at the refused record; nothing after it was
    // stored either.
    let (mut c, next) = Client::hello(s.addr, "p");
    assert_eq!(next, 1);
    c.data(1, &["fixed", "after"]);
    c.ack_until(3);
    assert_eq!(s.batch(), strs(&["ok", "fixed", "after"]));
    // The feed library names the line (from 1) and fails.
    let input: &[u8] = b"l0\nl1\nbad \xff line\nl3\n";
    let e = feed(s.addr, input, FeedConfig::new("feeder")).unwrap_err();
    assert!(
        matches!(e, weir::ingest::FeedError::InvalidRecord { line: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("line 3 of the input"), "{e}");
    assert_eq!(s.batch()[3..], strs(&["l0", "l1"]));
    s.ssc.stop(false).unwrap();
}

#[test]
fn idle_connections_make_room_for_a_producer_at_the_connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), 0, |c| {
        c.connections_max = 4;
        c.connections_per_address_max = 4;
    });
    // Four connections that said HELLO and then nothing fill the server
    // (idle_timeout is a minute by default).
    let mut idle: Vec<Client> = (0..4)
        .map(|i| Client::hello(s.addr, &format!("idle-{i}")).0)
        .collect();
    // A producer with data is refused at first (busy), and each refusal
    // closes the connection idle longest (idle at least 1 s): a retry
    // gets in well before the idle timeout.
    let t = Instant::now();
    let (mut p, _) = hello_eventually(s.addr, [127, 0, 0, 1], "p");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    p.data(0, &["served"]);
    p.ack_until(1);
    // One of the idle ones was told why.
    let t = Instant::now();
    let msg = 'found: loop {
        for c in idle.iter_mut() {
            if let Some(ServerFrame::Error { code, message, .. }) = c.try_frame() {
                assert_eq!(code, Some(ErrorCode::Timeout));
                break 'found message;
            }
        }
        assert!(t.elapsed() < WAIT, "no idle connection was closed");
    };
    assert!(msg.contains("closed to make room"), "{msg}");
    assert!(refusals(&s, "idle_evicted") >= 1);
    assert!(refusals(&s, "connections_max") >= 1);
    // An active producer is never the one closed: it still stores.
    let mut q = Client::connect(s.addr);
    let _ = q.error(); // busy while the slot frees
    p.data(1, &["still served"]);
    p.ack_until(2);
    assert_eq!(s.batch(), strs(&["served", "still served"]));
    drop(idle.drain(..));
    s.ssc.stop(false).unwrap();
}
