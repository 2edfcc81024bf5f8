//! `socket_text_stream` over TLS (#16): a TLS text server in the test
//! (std `TcpListener`, rustls `ServerConnection` through `StreamOwned`)
//! writes lines; the stream stores each exactly once. A server whose
//! certificate another authority signed, or that is for another name, is
//! refused: connect failures counted, nothing stored, the last error
//! naming the TLS failure. A server that asks for a client certificate
//! gets weir's (mTLS) and refuses a receiver without one as a failed
//! connect. The receiver reconnects after the TLS server restarts; a TLS
//! close keeps an unterminated last line, a TCP close without it discards
//! it. A server that does not speak TLS fails the connect in words, within
//! `connect_timeout`. Missing files fail the constructor, naming the
//! stream, and `weir check` (the real binary), which reads them as `run`
//! does and says what is verified.
//!
//! Certificates are made for each test with the `openssl` command
//! (`tls_common`). Batches run on a manual clock; every wait is bounded.

mod common;
mod service_common;
mod tls_common;

use std::io::{ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{collect, get, wait_for, Out, WAIT};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tls_common::{make_ca, make_leaf};
use weir::receiver::{ClientCert, SocketConfig, SocketStats, SocketTls};
use weir::{ManualClock, StreamingContext};

type TlsStream = StreamOwned<ServerConnection, TcpStream>;

/// A throwaway authority `ca` with a server certificate (127.0.0.1 and
/// localhost) and a client certificate, and an unrelated authority
/// `other`.
fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_leaf(dir.path(), "ca", "server", true);
    make_leaf(dir.path(), "ca", "client", false);
    make_ca(dir.path(), "other");
    dir
}

/// The server's configuration; with `mtls`, clients need a certificate
/// `ca` signed.
fn server_config(dir: &Path, mtls: bool) -> Arc<ServerConfig> {
    weir::net::tls::server_config(&weir::net::TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: mtls.then(|| dir.join("ca.pem")),
    })
    .expect("the test server's TLS files")
}

/// What the server does with its `n`th connection after the handshake;
/// true keeps the connection open until the server stops.
type Script = Box<dyn Fn(usize, &mut TlsStream) -> bool + Send>;

/// A TLS text server on its own thread, until stopped.
struct TlsServer {
    addr: String,
    stop: Arc<AtomicBool>,
    handshakes_failed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    fn start(listener: TcpListener, config: Arc<ServerConfig>, script: Script) -> TlsServer {
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, f) = (stop.clone(), failed.clone());
        let thread = std::thread::spawn(move || serve(listener, config, script, &s, &f));
        TlsServer {
            addr,
            stop,
            handshakes_failed: failed,
            thread: Some(thread),
        }
    }

    /// Stops accepting, closes every connection (no TLS close), and
    /// closes the listener.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    script: Script,
    stop: &AtomicBool,
    failed: &AtomicU64,
) {
    listener.set_nonblocking(true).unwrap();
    let mut open = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let tcp = match listener.accept() {
            Ok((tcp, _)) => tcp,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => panic!("accept: {e}"),
        };
        tcp.set_nonblocking(false).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(config.clone()).unwrap(), tcp);
        let mut handshake = Ok(());
        while handshake.is_ok() && tls.conn.is_handshaking() {
            handshake = tls.conn.complete_io(&mut tls.sock).map(|_| ());
        }
        if handshake.is_err() {
            failed.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        if script(n, &mut tls) {
            open.push(tls);
        }
        n += 1;
    }
}

/// Writes `text` and flushes it to the socket.
fn send(tls: &mut TlsStream, text: &str) {
    tls.write_all(text.as_bytes()).unwrap();
    tls.flush().unwrap();
}

struct Pipe {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    stats: Arc<SocketStats>,
    out: Out<String>,
    _dir: tempfile::TempDir,
}

impl Pipe {
    /// A started pipeline reading `addr` with `tls`, retrying fast.
    fn start(addr: &str, tls: SocketTls) -> Pipe {
        Pipe::start_with(
            addr,
            SocketConfig {
                backoff_initial: Duration::from_millis(5),
                backoff_max: Duration::from_millis(50),
                tls: Some(tls),
                ..SocketConfig::default()
            },
        )
    }

    /// A started pipeline reading `addr` with `config`.
    fn start_with(addr: &str, config: SocketConfig) -> Pipe {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(0));
        let ssc = StreamingContext::builder()
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .clock(clock.clone())
            .data_dir(dir.path())
            .build()
            .unwrap();
        let (s, stats) = ssc.socket_text_stream_with("lines", addr, config).unwrap();
        let out = collect(&s);
        ssc.start().unwrap();
        Pipe {
            ssc,
            clock,
            stats,
            out,
            _dir: dir,
        }
    }

    fn count(&self, c: fn(&SocketStats) -> &AtomicU64) -> u64 {
        SocketStats::get(c(&self.stats))
    }

    /// Runs one batch and returns every line output so far.
    fn batch(&self) -> Vec<String> {
        let t = self.clock.advance(1000);
        self.ssc.await_batch(t, WAIT).unwrap();
        get(&self.out).into_iter().flat_map(|(_, r)| r).collect()
    }

    /// The receiver's last error on the status page.
    fn last_error(&self) -> String {
        let (_, h) = self
            .ssc
            .receiver_health()
            .into_iter()
            .find(|(n, _)| n == "lines")
            .expect("the receiver");
        h.last_error.map(|e| e.message).unwrap_or_default()
    }
}

fn stored(s: &SocketStats) -> &AtomicU64 {
    &s.lines_stored
}
fn failures(s: &SocketStats) -> &AtomicU64 {
    &s.connect_failures
}

/// A server whose first connection gets `text`, kept open.
fn writes_once(text: String) -> Script {
    Box::new(move |n, tls| {
        if n == 0 {
            send(tls, &text);
        }
        true
    })
}

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

#[test]
fn lines_over_tls_are_stored_exactly_once() {
    let certs = certs();
    // Many TLS records (16 KiB each at most), several writes.
    let want: Vec<String> = (0..3000).map(|i| format!("line {i} over TLS")).collect();
    let text: String = want.iter().map(|l| format!("{l}\n")).collect();
    let server = TlsServer::start(
        listener(),
        server_config(certs.path(), false),
        writes_once(text),
    );
    let p = Pipe::start(&server.addr, SocketTls::new(certs.path().join("ca.pem")));
    wait_for("3000 lines", || p.count(stored) == 3000);
    assert_eq!(p.batch(), want);
    assert_eq!(p.count(|s| &s.connects), 1);
    assert_eq!(p.count(failures), 0);
    assert_eq!(p.last_error(), "");
    p.ssc.stop(false).unwrap();
    server.stop();
}

#[test]
fn a_server_signed_by_another_authority_is_refused_and_nothing_is_stored() {
    let certs = certs();
    let server = TlsServer::start(
        listener(),
        server_config(certs.path(), false),
        writes_once("secret\n".into()),
    );
    let other = certs.path().join("other.pem");
    let p = Pipe::start(&server.addr, SocketTls::new(&other));
    wait_for("three refused handshakes", || {
        p.count(failures) >= 3 && server.handshakes_failed.load(Ordering::SeqCst) >= 3
    });
    let err = p.last_error();
    assert!(err.contains("is not signed by an authority in"), "{err}");
    assert!(err.contains(&other.display().to_string()), "{err}");
    assert_eq!(p.count(|s| &s.connects), 0);
    assert_eq!(p.count(|s| &s.bytes_read), 0);
    assert_eq!(p.count(stored), 0);
    assert!(p.batch().is_empty());
    p.ssc.stop(false).unwrap();
    server.stop();
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let certs = certs();
    let server = TlsServer::start(
        listener(),
        server_config(certs.path(), false),
        writes_once("secret\n".into()),
    );
    let tls = SocketTls {
        server_name: Some("feed.example.com".into()),
        ..SocketTls::new(certs.path().join("ca.pem"))
    };
    let p = Pipe::start(&server.addr, tls);
    wait_for("three refused handshakes", || p.count(failures) >= 3);
    let err = p.last_error();
    assert!(
        err.contains("is not for the name \"feed.example.com\""),
        "{err}"
    );
    assert!(err.contains("tls_server_name"), "{err}");
    assert_eq!((p.count(|s| &s.connects), p.count(stored)), (0, 0));
    p.ssc.stop(false).unwrap();
    server.stop();
}

/// TLS 1.3 tells a client its certificate was refused only after the
/// handshake, on the first read: still a failed connect.
#[test]
fn a_server_that_asks_for_a_client_certificate_gets_weirs() {
    let certs = certs();
    let dir = certs.path();
    let server = TlsServer::start(
        listener(),
        server_config(dir, true),
        Box::new(|_, tls| {
            send(tls, "m1\nm2\n");
            true
        }),
    );
    let without = Pipe::start(&server.addr, SocketTls::new(dir.join("ca.pem")));
    wait_for("refusals without a client certificate", || {
        without.count(failures) >= 2
    });
    let err = without.last_error();
    assert!(err.contains("requires a client certificate"), "{err}");
    assert!(err.contains("tls_cert_file"), "{err}");
    assert_eq!(without.count(stored), 0);
    without.ssc.stop(false).unwrap();
    // By name: the name verified defaults to the address's host.
    let port = server.addr.rsplit_once(':').unwrap().1;
    let tls = SocketTls {
        client_cert: Some(ClientCert {
            cert_file: dir.join("client.pem"),
            key_file: dir.join("client.key"),
        }),
        ..SocketTls::new(dir.join("ca.pem"))
    };
    let with = Pipe::start(&format!("localhost:{port}"), tls);
    wait_for("two lines", || with.count(stored) == 2);
    assert_eq!(with.batch(), vec!["m1".to_string(), "m2".into()]);
    with.ssc.stop(false).unwrap();
    server.stop();
}

/// Restarts: a TLS close (close_notify) keeps an unterminated last line;
/// a TCP close without it discards it (it may be cut short); refused
/// connects in between are retried.
#[test]
fn the_receiver_reconnects_after_the_tls_server_restarts() {
    let certs = certs();
    let config = server_config(certs.path(), false);
    let first = TlsServer::start(
        listener(),
        config.clone(),
        Box::new(|n, tls| {
            if n > 0 {
                return true;
            }
            send(tls, "a1\na2\na3");
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            false
        }),
    );
    let addr = first.addr.clone();
    let p = Pipe::start(&addr, SocketTls::new(certs.path().join("ca.pem")));
    wait_for("the first server's lines", || p.count(stored) == 3);
    first.stop();
    wait_for("a refused reconnect", || p.count(failures) >= 1);
    let second = TlsServer::start(
        TcpListener::bind(&addr).unwrap(),
        config,
        Box::new(|n, tls| {
            if n > 0 {
                return true;
            }
            send(tls, "b1\nb2\npartial");
            false
        }),
    );
    wait_for("the cut line discarded", || {
        p.count(|s| &s.partial_lines_discarded) == 1
    });
    assert_eq!(p.count(stored), 5);
    let err = p.last_error();
    assert!(err.contains("without ending TLS"), "{err}");
    assert_eq!(p.batch(), vec!["a1", "a2", "a3", "b1", "b2"]);
    assert!(p.count(|s| &s.connects) >= 2);
    p.ssc.stop(false).unwrap();
    second.stop();
}

#[test]
fn a_server_that_does_not_speak_tls_fails_the_connect_in_words() {
    let certs = certs();
    let ca = certs.path().join("ca.pem");
    // Silent: it never answers the handshake (the kernel accepts).
    let silent = listener();
    let config = SocketConfig {
        connect_timeout: Duration::from_millis(200),
        backoff_initial: Duration::from_millis(5),
        tls: Some(SocketTls::new(&ca)),
        ..SocketConfig::default()
    };
    let t0 = Instant::now();
    let p = Pipe::start_with(&silent.local_addr().unwrap().to_string(), config);
    wait_for("a timed-out handshake", || p.count(failures) >= 1);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let err = p.last_error();
    assert!(err.contains("did not finish within 200 ms"), "{err}");
    p.ssc.stop(false).unwrap();
    // A stop during a handshake is noticed at once, not after
    // connect_timeout: the server has the connection (the ClientHello
    // sent) and never answers.
    let config = SocketConfig {
        connect_timeout: Duration::from_secs(30),
        tls: Some(SocketTls::new(&ca)),
        ..SocketConfig::default()
    };
    let silent = listener();
    let p = Pipe::start_with(&silent.local_addr().unwrap().to_string(), config);
    silent.set_nonblocking(true).unwrap();
    let mut held = Vec::new();
    wait_for("the receiver's connection", || {
        silent.accept().map(|(s, _)| held.push(s)).is_ok()
    });
    let t0 = Instant::now();
    p.ssc.stop(false).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // Plain text where TLS was expected.
    let plain = listener();
    let addr = plain.local_addr().unwrap().to_string();
    let talker = std::thread::spawn(move || {
        let (mut s, _) = plain.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nplain text\n");
        s
    });
    let p = Pipe::start(&addr, SocketTls::new(&ca));
    wait_for("a refused plain server", || p.count(failures) >= 1);
    let err = p.last_error();
    assert!(err.contains("did not answer in TLS"), "{err}");
    assert_eq!(p.count(stored), 0);
    p.ssc.stop(false).unwrap();
    drop(talker.join().unwrap());
}

#[test]
fn unusable_tls_files_fail_the_constructor_naming_the_stream() {
    let certs = certs();
    let dir = certs.path();
    let ssc = StreamingContext::builder()
        .batch_interval(Duration::from_secs(1))
        .data_dir(dir.join("data"))
        .build()
        .unwrap();
    let try_tls = |tls: SocketTls| {
        let config = SocketConfig {
            tls: Some(tls),
            ..SocketConfig::default()
        };
        match ssc.socket_text_stream_with("feed", "127.0.0.1:9", config) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let e = try_tls(SocketTls::new(dir.join("missing.pem")));
    assert!(e.contains("stream `feed`"), "{e}");
    assert!(
        e.contains("cannot read the socket source's CA file (tls_ca_file)"),
        "{e}"
    );
    // A client key that does not belong to its certificate.
    let e = try_tls(SocketTls {
        client_cert: Some(ClientCert {
            cert_file: dir.join("client.pem"),
            key_file: dir.join("server.key"),
        }),
        ..SocketTls::new(dir.join("ca.pem"))
    });
    assert!(e.contains("cannot be used"), "{e}");
    let e = try_tls(SocketTls {
        server_name: Some("not a name".into()),
        ..SocketTls::new(dir.join("ca.pem"))
    });
    assert!(e.contains("tls_server_name"), "{e}");
}

/// `weir check` reads a socket source's TLS files as `run` will and says
/// what is verified; a missing file fails it, naming the source and file.
#[test]
fn weir_check_reads_the_tls_files_and_says_what_is_verified() {
    let certs = certs();
    let check = |ca: &str| {
        let file = certs.path().join("p.toml");
        std::fs::write(
            &file,
            format!(
                "[[source]]\nid = \"feed\"\nkind = \"socket\"\naddress = \"feed.example.com:9999\"\n\
                 tls_ca_file = \"{ca}\"\ntls_cert_file = \"client.pem\"\ntls_key_file = \"client.key\"\n\
                 [[sink]]\nkind = \"print\"\n"
            ),
        )
        .unwrap();
        service_common::weir()
            .arg("check")
            .arg(&file)
            .output()
            .expect("weir check")
    };
    let out = check("ca.pem");
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{words}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = format!(
        "TLS 1.3, verifying the authority ({}) and the name \"feed.example.com\", client certificate {}",
        certs.path().join("ca.pem").display(),
        certs.path().join("client.pem").display()
    );
    assert!(
        words.contains(&format!(
            "socket client of feed.example.com:9999 over {verified}"
        )),
        "{words}"
    );
    assert!(
        words.contains(&format!("source `feed`: {verified}; files read")),
        "{words}"
    );
    let out = check("missing.pem");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("stream `feed`"), "{err}");
    assert!(
        err.contains("cannot read the socket source's CA file (tls_ca_file)"),
        "{err}"
    );
    assert!(err.contains("missing.pem"), "{err}");
}
