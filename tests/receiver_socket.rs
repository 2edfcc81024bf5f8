//! `socket_text_stream` over loopback: lines arrive in batches exactly as
//! sent; the receiver reconnects after the server closes or refuses;
//! over-long lines are dropped and counted (the moment they pass the limit,
//! before any newline), records split on a delimiter of one's own (the
//! Spark tutorial's `__end`), invalid UTF-8 is replaced, CRLF
//! and NUL bytes handled by the stated rules; a full backlog stops reading
//! (the server's writes block) until batches commit; stop is prompt. Batches
//! run on a manual clock; every wait is bounded.

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};

/// Closes `s` with a reset (SO_LINGER 0) instead of a clean FIN.
#[allow(deprecated)] // SO_LINGER blocks on drop only for a non-zero time
fn reset(s: TcpStream) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _g = rt.enter();
    // tokio requires a non-blocking socket (debug builds assert it).
    s.set_nonblocking(true).unwrap();
    let t = tokio::net::TcpStream::from_std(s).unwrap();
    t.set_linger(Some(Duration::ZERO)).unwrap();
    drop(t);
}
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collect, get, wait_for, Out, WAIT};
use weir::receiver::{SocketConfig, SocketStats};
use weir::{ManualClock, StreamingContext};

struct Pipe {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    stats: Arc<SocketStats>,
    out: Out<String>,
    _dir: tempfile::TempDir,
}

fn pipe(addr: &str, backlog: u64, config: SocketConfig) -> Pipe {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .parallelism(2)
        .clock(clock.clone())
        .data_dir(dir.path())
        .backlog_bytes_max(backlog)
        .build()
        .unwrap();
    let (s, stats) = ssc.socket_text_stream_with("lines", addr, config).unwrap();
    let out = collect(&s);
    Pipe {
        ssc,
        clock,
        stats,
        out,
        _dir: dir,
    }
}

/// A listening loopback server and a started pipeline connecting to it.
fn started(backlog: u64, config: SocketConfig) -> (Pipe, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = pipe(&listener.local_addr().unwrap().to_string(), backlog, config);
    p.ssc.start().unwrap();
    (p, listener)
}

fn fast() -> SocketConfig {
    SocketConfig {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..SocketConfig::default()
    }
}

fn stored(p: &Pipe) -> u64 {
    SocketStats::get(&p.stats.lines_stored)
}

impl Pipe {
    /// Runs one batch and returns every line output so far.
    fn batch(&self) -> Vec<String> {
        let t = self.clock.advance(1000);
        self.ssc.await_batch(t, WAIT).unwrap();
        get(&self.out).into_iter().flat_map(|(_, r)| r).collect()
    }
}

#[test]
fn lines_arrive_in_order_and_reconnects_follow_a_closing_server() {
    let (p, listener) = started(1 << 20, fast());
    let server = std::thread::spawn(move || {
        for conn in 0..3 {
            let (mut s, _) = listener.accept().unwrap();
            for i in 0..100 {
                writeln!(s, "c{conn} l{i}").unwrap();
            }
            // Closing ends the connection; the receiver reconnects.
        }
        listener
    });
    wait_for("300 lines", || stored(&p) == 300);
    let _listener = server.join().unwrap();
    let got = p.batch();
    let want: Vec<String> = (0..3)
        .flat_map(|c| (0..100).map(move |i| format!("c{c} l{i}")))
        .collect();
    assert_eq!(got, want);
    assert!(SocketStats::get(&p.stats.connects) >= 3);
    p.ssc.stop(false).unwrap();
}

#[test]
fn the_receiver_retries_a_refusing_server_until_it_listens() {
    // Find a free port, then leave it closed: connections are refused.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let p = pipe(&addr, 1 << 20, fast());
    p.ssc.start().unwrap();
    wait_for("refused attempts", || {
        SocketStats::get(&p.stats.connect_failures) >= 3
    });
    let listener = TcpListener::bind(&addr).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"late\nbut here\n").unwrap();
    wait_for("two lines", || stored(&p) == 2);
    assert_eq!(p.batch(), vec!["late".to_string(), "but here".into()]);
    p.ssc.stop(false).unwrap();
}

#[test]
fn overlong_lines_garbage_and_invalid_utf8_follow_the_rules() {
    let (p, listener) = started(
        1 << 20,
        SocketConfig {
            line_bytes_max: 8,
            store_bytes_max: 64,
            ..fast()
        },
    );
    let (mut s, _) = listener.accept().unwrap();
    let mut input = Vec::new();
    input.extend_from_slice(b"short\r\n");
    input.extend_from_slice(&[b'x'; 10_000]); // over-long, spread over reads
    input.extend_from_slice(b"\n");
    input.extend_from_slice(b"12345678\n"); // exactly the limit
    input.extend_from_slice(b"123456789\n"); // one over
    input.extend_from_slice(b"a\xff\xfeb\n"); // invalid UTF-8
    input.extend_from_slice(b"\0\x01\n"); // control bytes are text
    input.extend_from_slice(b"\n"); // an empty line is a line
    input.extend_from_slice(b"tail"); // unterminated, then EOF
    s.write_all(&input).unwrap();
    drop(s);
    wait_for("six lines", || stored(&p) == 6);
    assert_eq!(
        p.batch(),
        vec![
            "short".to_string(),
            "12345678".into(),
            "a\u{fffd}\u{fffd}b".into(),
            "\0\u{1}".into(),
            "".into(),
            "tail".into(),
        ]
    );
    assert_eq!(SocketStats::get(&p.stats.lines_too_long), 2);
    assert_eq!(SocketStats::get(&p.stats.lines_repaired), 1);
    p.ssc.stop(false).unwrap();
}

/// Issue 14: a server that never sends a newline (the Spark tutorial's
/// sends `text + " __end"`) is seen at once: the line is counted too long
/// the moment it passes `line_bytes_max`, before any newline arrives, and
/// only once however many more bytes follow; the newline then ends it and
/// the next line is kept. (Before, nothing moved until a newline came.)
#[test]
fn a_server_without_newlines_counts_a_line_too_long_before_any_newline() {
    let (p, listener) = started(
        1 << 20,
        SocketConfig {
            line_bytes_max: 1024,
            ..fast()
        },
    );
    let (mut s, _) = listener.accept().unwrap();
    let tweet = b"Spark streaming is fun #spark __end";
    let mut sent = 0u64;
    while sent <= 1024 {
        s.write_all(tweet).unwrap();
        sent += tweet.len() as u64;
    }
    wait_for("the line counted too long", || {
        SocketStats::get(&p.stats.lines_too_long) == 1
    });
    for _ in 0..200 {
        s.write_all(tweet).unwrap();
        sent += tweet.len() as u64;
    }
    wait_for("every byte read", || {
        SocketStats::get(&p.stats.bytes_read) == sent
    });
    assert_eq!(
        SocketStats::get(&p.stats.lines_too_long),
        1,
        "once per line"
    );
    assert_eq!(stored(&p), 0);
    s.write_all(b"\nafter the newline\n").unwrap();
    wait_for("the next line", || stored(&p) == 1);
    assert_eq!(p.batch(), vec!["after the newline".to_string()]);
    assert_eq!(SocketStats::get(&p.stats.lines_too_long), 1);
    p.ssc.stop(false).unwrap();
}

/// A slow server that never sends the delimiter is reported long before
/// its text reaches `line_bytes_max`: once per connection, in the log and
/// as the receiver's last error; a server that does send it, split across
/// writes with pauses, is not.
#[test]
fn a_server_that_sends_no_delimiter_for_a_while_is_reported_once() {
    let warn_after = Duration::from_secs(1);
    let (p, listener) = started(
        1 << 20,
        SocketConfig {
            unterminated_warn_after: warn_after,
            ..fast()
        },
    );
    let health = || {
        p.ssc
            .receiver_health()
            .into_iter()
            .find(|(n, _)| n == "lines")
            .expect("the receiver")
            .1
    };
    let (mut s, _) = listener.accept().unwrap();
    // Records split across writes, a pause shorter than the limit inside
    // each: no warning.
    for _ in 0..3 {
        s.write_all(b"half a ").unwrap();
        std::thread::sleep(warn_after / 50);
        s.write_all(b"line\n").unwrap();
    }
    wait_for("three lines", || stored(&p) == 3);
    let t0 = Instant::now();
    s.write_all(b"Spark streaming is fun #spark __end").unwrap();
    wait_for("the warning", || {
        SocketStats::get(&p.stats.unterminated_warnings) == 1
    });
    assert!(t0.elapsed() >= warn_after, "warned too early");
    let err = health().last_error.expect("a last error").message;
    assert!(err.contains("without the delimiter \"\\n\""), "{err}");
    assert!(err.contains("delimiter = \"...\""), "{err}");
    // More of the same: still one warning on this connection.
    s.write_all(b"Another tweet __end").unwrap();
    wait_for("every byte read", || {
        SocketStats::get(&p.stats.bytes_read) == 3 * 12 + 35 + 19
    });
    std::thread::sleep(warn_after);
    assert_eq!(SocketStats::get(&p.stats.unterminated_warnings), 1);
    assert_eq!(SocketStats::get(&p.stats.lines_too_long), 0);
    assert_eq!(stored(&p), 3);
    // A new connection may warn again.
    drop(s);
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(b"no end").unwrap();
    wait_for("the second connection's warning", || {
        SocketStats::get(&p.stats.unterminated_warnings) == 2
    });
    p.ssc.stop(false).unwrap();
}

/// The Spark tutorial's tweet server: `text + " __end"` per tweet, no
/// newline, several tweets per write, one tweet split across two writes,
/// then the delimiter itself sent one byte per read. With `delimiter =
/// "__end"` the records are exactly the tweets, bytes kept as sent (the
/// space before `__end` stays).
#[test]
fn the_tutorials_server_with_delimiter_end_gives_exactly_the_tweets() {
    let (p, listener) = started(
        1 << 20,
        SocketConfig {
            delimiter: b"__end".to_vec(),
            line_bytes_max: 256,
            ..fast()
        },
    );
    let tweets: Vec<String> = (0..40)
        .map(|i| format!("Tweet {i} about #Spark and @weir"))
        .collect();
    let sent: Vec<String> = tweets.iter().map(|t| format!("{t} __end")).collect();
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    // Several tweets per write.
    s.write_all(sent[..10].concat().as_bytes()).unwrap();
    // One tweet split across two writes, inside its delimiter.
    let mut read = (sent[..10].concat().len()) as u64;
    wait_for("the first writes read", || {
        SocketStats::get(&p.stats.bytes_read) == read
    });
    let (a, b) = sent[10].split_at(sent[10].len() - 3);
    for part in [a, b] {
        s.write_all(part.as_bytes()).unwrap();
        read += part.len() as u64;
        wait_for("one write read", || {
            SocketStats::get(&p.stats.bytes_read) == read
        });
    }
    // One tweet one byte per read.
    for byte in sent[11].as_bytes() {
        s.write_all(&[*byte]).unwrap();
        read += 1;
        wait_for("one byte read", || {
            SocketStats::get(&p.stats.bytes_read) == read
        });
    }
    // The rest in one write; the connection stays open (no newline, no
    // close: only the delimiter ends a record).
    s.write_all(sent[12..].concat().as_bytes()).unwrap();
    wait_for("every tweet", || stored(&p) == tweets.len() as u64);
    let want: Vec<String> = tweets.iter().map(|t| format!("{t} ")).collect();
    assert_eq!(p.batch(), want);
    assert_eq!(SocketStats::get(&p.stats.lines_too_long), 0);
    p.ssc.stop(false).unwrap();
}

#[test]
fn a_reset_connection_discards_only_the_unterminated_line() {
    let (p, listener) = started(1 << 20, fast());
    let (mut s, _) = listener.accept().unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"one\ntwo\nhalf").unwrap();
    wait_for("two lines", || stored(&p) == 2);
    wait_for("the partial line read", || {
        SocketStats::get(&p.stats.bytes_read) == 12
    });
    reset(s);
    let (mut t, _) = listener.accept().unwrap();
    t.write_all(b"three\n").unwrap();
    wait_for("three lines", || stored(&p) == 3);
    assert_eq!(p.batch(), vec!["one", "two", "three"]);
    assert_eq!(SocketStats::get(&p.stats.partial_lines_discarded), 1);
    p.ssc.stop(false).unwrap();
}

#[test]
fn a_full_backlog_stops_reading_until_batches_commit() {
    let backlog = 64 << 10;
    let (p, listener) = started(
        backlog,
        SocketConfig {
            store_bytes_max: 16 << 10,
            line_bytes_max: 1 << 10,
            ..fast()
        },
    );
    const LINES: u64 = 200_000; // 20 MB: far more than backlog + socket buffers
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let line = [b'y'; 99];
        for _ in 0..LINES {
            s.write_all(&line).unwrap();
            s.write_all(b"\n").unwrap();
            w.fetch_add(1, Ordering::SeqCst);
        }
    });
    // With no batch committing, the receiver stops at the backlog maximum
    // (plus one store), and the server's writes block once the kernel
    // buffers are full.
    wait_for("the backlog to fill", || stored(&p) * 99 >= backlog);
    let settle = Instant::now();
    let mut last = (stored(&p), written.load(Ordering::SeqCst));
    // Wait until both counters stop moving for 300 ms (bounded).
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_millis(300) {
        assert!(settle.elapsed() < WAIT, "never settled");
        std::thread::sleep(Duration::from_millis(20));
        let now = (stored(&p), written.load(Ordering::SeqCst));
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let (s_lines, w_lines) = last;
    assert!(
        s_lines * 99 < backlog + (16 << 10),
        "stored {s_lines} lines past the backlog"
    );
    eprintln!("pushed back: {s_lines} lines stored, {w_lines} of {LINES} written");
    assert!(
        w_lines < LINES / 2,
        "the server was never pushed back ({w_lines} lines written)"
    );
    // Batches commit: reading resumes until everything is through.
    let deadline = Instant::now() + Duration::from_secs(120);
    while (get(&p.out).iter().map(|(_, r)| r.len() as u64).sum::<u64>()) < LINES {
        assert!(Instant::now() < deadline, "the flood did not drain");
        let t = p.clock.advance(1000);
        p.ssc.await_batch(t, WAIT).unwrap();
        let max_batch = p
            .ssc
            .statistics()
            .iter()
            .map(|s| s.input_records)
            .max()
            .unwrap_or(0);
        assert!(
            max_batch * 99 < backlog + (16 << 10),
            "a batch of {max_batch} lines"
        );
    }
    server.join().unwrap();
    p.ssc.stop(false).unwrap();
}

#[test]
fn the_receivers_own_rate_limit_spaces_lines() {
    let (p, listener) = started(
        1 << 20,
        SocketConfig {
            records_per_second_max: Some(1000),
            ..fast()
        },
    );
    let (mut s, _) = listener.accept().unwrap();
    let text: String = (0..1000).map(|i| format!("{i}\n")).collect();
    let t0 = Instant::now();
    s.write_all(text.as_bytes()).unwrap();
    wait_for("1000 lines", || stored(&p) == 1000);
    let took = t0.elapsed();
    // A burst of 100 is free; the other 900 take at least 0.9 s at 1000/s.
    assert!(
        took >= Duration::from_millis(850),
        "1000 lines at 1000/s took only {took:?}"
    );
    let got = p.batch();
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999], "999");
    p.ssc.stop(false).unwrap();
}

#[test]
fn stop_is_prompt_while_connected_or_refused() {
    let (p, listener) = started(1 << 20, SocketConfig::default());
    let (_s, _) = listener.accept().unwrap();
    let t0 = Instant::now();
    p.ssc.stop(false).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let p = pipe(&addr, 1 << 20, SocketConfig::default());
    p.ssc.start().unwrap();
    wait_for("a refusal", || {
        SocketStats::get(&p.stats.connect_failures) >= 1
    });
    let t0 = Instant::now();
    p.ssc.stop(false).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

#[test]
fn invalid_settings_are_refused_with_the_stream_name() {
    let dir = tempfile::tempdir().unwrap();
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .data_dir(dir.path())
        .build()
        .unwrap();
    let e = ssc
        .socket_text_stream_with(
            "s",
            "127.0.0.1:1",
            SocketConfig {
                line_bytes_max: 2 << 20,
                ..SocketConfig::default()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stream `s`") && e.contains("line_bytes_max"),
        "{e}"
    );
    for delimiter in [
        Vec::new(),
        vec![b'x'; weir::receiver::DELIMITER_BYTES_MAX + 1],
    ] {
        let e = ssc
            .socket_text_stream_with(
                "d",
                "127.0.0.1:1",
                SocketConfig {
                    delimiter,
                    ..SocketConfig::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream `d`") && e.contains("delimiter"), "{e}");
    }
}

/// Invalid UTF-8 triples a line (U+FFFD is 3 bytes), so limits are checked
/// against the repaired size: lines of nothing but bad bytes, at the line
/// limit after a short line, with a WAL whose append limit is exactly 3 x
/// the line limit, are all kept (before, the raw size let both into one
/// append the WAL refused, which stopped the stream); a line limit the WAL could not hold once repaired is
/// refused up front.
#[test]
fn lines_of_invalid_utf8_at_the_limit_fit_the_wal_after_repair() {
    let wal = weir::wal::WalConfig {
        record_bytes_max: 3 << 10,
        append_bytes_max: 3 << 10,
        ..weir::wal::WalConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(0));
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .clock(clock.clone())
        .data_dir(dir.path())
        .wal_config(wal.clone())
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let too_long = ssc
        .socket_text_stream_with(
            "refused",
            &addr,
            SocketConfig {
                line_bytes_max: (1 << 10) + 1,
                store_bytes_max: 3 << 10,
                ..fast()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(too_long.contains("line_bytes_max"), "{too_long}");
    let (s, stats) = ssc
        .socket_text_stream_with(
            "bad",
            &addr,
            SocketConfig {
                line_bytes_max: 1 << 10,
                store_bytes_max: 3 << 10,
                ..fast()
            },
        )
        .unwrap();
    let out = collect(&s);
    ssc.start().unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut input = Vec::new();
    // A short line first leaves room (by the raw size) for a bad line.
    for _ in 0..4 {
        input.extend_from_slice(b"a\n");
        input.extend_from_slice(&[0xff; 1 << 10]);
        input.push(b'\n');
    }
    conn.write_all(&input).unwrap();
    wait_for("eight lines", || SocketStats::get(&stats.lines_stored) == 8);
    let t = clock.advance(1000);
    ssc.await_batch(t, WAIT).unwrap();
    let got: Vec<String> = get(&out).into_iter().flat_map(|(_, r)| r).collect();
    let want: Vec<String> = (0..4)
        .flat_map(|_| ["a".to_string(), "\u{fffd}".repeat(1 << 10)])
        .collect();
    assert_eq!(got, want);
    assert_eq!(SocketStats::get(&stats.lines_repaired), 4);
    ssc.stop(false).unwrap();
}
