//! The binary ingest protocol over TLS with bearer tokens (#16), through
//! the library over real loopback sockets: `feed` over TLS with a token
//! stores every line exactly once (a rerun resumes and adds nothing); a
//! HELLO without a token is refused `unauthorized`, a wrong token
//! `forbidden`, with nothing of the connection stored and both counted by
//! outcome; a reloaded tokens file takes effect for new connections; a
//! plain client to a TLS listener is told to use TLS; a server without
//! tokens ignores an AUTH; mTLS refuses a client without a certificate; a
//! wrong authority or server name fails at once; a token is never sent in
//! plain text off this machine. Certificates come from the `openssl`
//! command (`tls_common`); batches are driven by a manual clock; every wait
//! is bounded.

mod common;
mod tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{collect, get, Out, WAIT};
use weir::ingest::proto::{
    decode_server_frame, encode_auth, encode_data, encode_hello, encode_preamble, ErrorCode,
    ServerFrame,
};
use weir::ingest::{feed, FeedConfig, FeedError, FeedTls, FeedToken, IngestConfig, IngestStats};
use weir::net::{Security, SecurityFiles, TlsFiles};
use weir::{ManualClock, StreamingContext};

const TOKEN: &str = "feed-0123456789abcdef0123456789";

struct Server {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    addr: SocketAddr,
    out: Out<String>,
    stats: Arc<IngestStats>,
}

impl Server {
    fn batch(&self) -> Vec<String> {
        let t = self.clock.advance(1000);
        self.ssc.await_batch(t, WAIT).expect("batch");
        let mut all: Vec<String> = get(&self.out).into_iter().flat_map(|(_, r)| r).collect();
        all.sort();
        all
    }
}

/// Certificates (authority `ca`, `server` for 127.0.0.1 and localhost,
/// `client`) and a tokens file `tokens` (`ci TOKEN`, mode 600) in `dir`.
fn material(dir: &Path) {
    tls_common::make_ca(dir, "ca");
    tls_common::make_leaf(dir, "ca", "server", true);
    tls_common::make_leaf(dir, "ca", "client", false);
    write_tokens(dir, &format!("ci {TOKEN}\n"));
}

fn write_tokens(dir: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("tokens");
    std::fs::write(&p, text).expect("tokens");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn security(dir: &Path, tls: bool, mtls: bool, tokens: bool) -> Arc<Security> {
    let files = SecurityFiles {
        tls: tls.then(|| TlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: mtls.then(|| dir.join("ca.pem")),
        }),
        tokens: tokens.then(|| dir.join("tokens")),
    };
    Arc::new(Security::load(files).expect("security"))
}

fn start(dir: &Path, security: Option<Arc<Security>>) -> Server {
    let clock = Arc::new(ManualClock::new(0));
    let c = clock.clone();
    let mut cfg = IngestConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.security = security;
    let (mut addr, mut out, mut stats) = (None, None, None);
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b.batch_interval(Duration::from_secs(1)).clock(c).build()?;
        let s = ssc.ingest_stream_with("in", cfg, weir::ingest::payload_utf8)?;
        addr = Some(s.local_addr);
        stats = Some(s.stats.clone());
        out = Some(collect(&s.stream));
        Ok(ssc)
    })
    .expect("context");
    ssc.start().expect("start");
    Server {
        ssc,
        clock,
        addr: addr.expect("addr"),
        out: out.expect("out"),
        stats: stats.expect("stats"),
    }
}

/// A feed that gives up quickly (a test never waits long on a retry).
fn feed_cfg(producer: &str, tls: Option<FeedTls>, token: Option<&str>) -> FeedConfig {
    let mut cfg = FeedConfig::new(producer);
    cfg.retry_time_max = Duration::from_secs(5);
    cfg.io_timeout = Duration::from_secs(5);
    cfg.tls = tls;
    cfg.token = token.map(|t| FeedToken::new(t, "the test").expect("token"));
    cfg
}

fn tls_to(dir: &Path, name: &str, client_cert: bool) -> Option<FeedTls> {
    Some(FeedTls {
        ca_file: dir.join("ca.pem"),
        cert_file: client_cert.then(|| dir.join("client.pem")),
        key_file: client_cert.then(|| dir.join("client.key")),
        server_name: name.into(),
    })
}

/// A raw protocol client over TLS (rustls, trusting `ca`).
struct TlsClient {
    s: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, ca: &Path) -> TlsClient {
        use rustls_pki_types::pem::PemObject;
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_file(ca).expect("ca"))
            .expect("root");
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        TlsClient {
            s: rustls::StreamOwned::new(conn, tcp),
            buf: Vec::new(),
        }
    }

    /// Preamble, AUTH (with `token`), HELLO and one DATA frame in one
    /// write; the server's first frame.
    fn greet_and_send(&mut self, token: Option<&str>, producer: &str, rec: &str) -> ServerFrame {
        let mut b = Vec::new();
        encode_preamble(&mut b);
        if let Some(t) = token {
            encode_auth(&mut b, t.as_bytes());
        }
        encode_hello(&mut b, producer.as_bytes());
        encode_data(&mut b, 0, &[rec]);
        self.s.write_all(&b).expect("send");
        self.frame().expect("a frame")
    }

    /// The next frame, or None at the end of the connection.
    fn frame(&mut self) -> Option<ServerFrame> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some((f, n)) = decode_server_frame(&self.buf).expect("frames decode") {
                self.buf.drain(..n);
                return Some(f);
            }
            assert!(Instant::now() < deadline, "no frame from the server");
            let mut b = [0u8; 4096];
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
            }
        }
    }
}

fn error_of(f: ServerFrame) -> (ErrorCode, String) {
    match f {
        ServerFrame::Error { code, message, .. } => (code.expect("a known code"), message),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn lines(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("in.txt");
    let text: String = (0..n).map(|i| format!("line-{i:03}\n")).collect();
    std::fs::write(&p, text).expect("input");
    p
}

#[test]
fn feed_over_tls_with_a_token_stores_every_line_exactly_once() {
    let dir = tempfile::tempdir().expect("dir");
    material(dir.path());
    let s = start(
        &dir.path().join("d"),
        Some(security(dir.path(), true, false, true)),
    );
    let input = lines(dir.path(), 200);
    let run = || {
        let f = std::fs::File::open(&input).expect("open");
        let tls = tls_to(dir.path(), "localhost", false);
        feed(s.addr, f, feed_cfg("host-a", tls, Some(TOKEN))).expect("feed")
    };
    let first = run();
    assert_eq!((first.records, first.records_sent), (200, 200));
    let again = run();
    assert_eq!((again.records_sent, again.records_skipped), (0, 200));
    let want: Vec<String> = (0..200).map(|i| format!("line-{i:03}")).collect();
    assert_eq!(s.batch(), want);
    let accepted: Vec<_> = s.stats.connections();
    assert_eq!(accepted, vec![("ci".to_string(), "accepted", 2)]);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn a_missing_or_wrong_token_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    material(dir.path());
    let sec = security(dir.path(), true, false, true);
    let s = start(&dir.path().join("d"), Some(sec.clone()));
    let ca = dir.path().join("ca.pem");
    let f = TlsClient::connect(s.addr, &ca).greet_and_send(None, "p", "no-token");
    let (code, msg) = error_of(f);
    assert_eq!(code, ErrorCode::Unauthorized, "{msg}");
    assert!(msg.contains("requires a token"), "{msg}");
    let wrong = "feed-wrong-0123456789abcdef01234";
    let f = TlsClient::connect(s.addr, &ca).greet_and_send(Some(wrong), "p", "wrong-token");
    let (code, msg) = error_of(f);
    assert_eq!(code, ErrorCode::Forbidden, "{msg}");
    assert!(!msg.contains(wrong), "the token is never echoed: {msg}");
    // The library client says what to do.
    let tls = || tls_to(dir.path(), "127.0.0.1", false);
    let e = feed(s.addr, &b"x\n"[..], feed_cfg("p", tls(), None)).expect_err("no token");
    assert!(matches!(e, FeedError::TokenMissing { .. }), "{e}");
    assert!(e.to_string().contains("--token-file"), "{e}");
    let e = feed(s.addr, &b"x\n"[..], feed_cfg("p", tls(), Some(wrong))).expect_err("wrong");
    assert!(matches!(e, FeedError::TokenRefused { .. }), "{e}");
    assert!(!e.to_string().contains(wrong), "{e}");
    // The right token is taken, and nothing of the refused ones was stored.
    let mut c = TlsClient::connect(s.addr, &ca);
    let f = c.greet_and_send(Some(TOKEN), "p", "good");
    assert!(
        matches!(f, ServerFrame::Welcome { next_seq: 0, .. }),
        "{f:?}"
    );
    assert_eq!(c.frame(), Some(ServerFrame::Ack { next_seq: 1 }));
    assert_eq!(s.batch(), vec!["good"]);
    let n = |token: &str, outcome: &str| {
        s.stats
            .connections()
            .into_iter()
            .find(|(t, o, _)| t == token && *o == outcome)
            .map_or(0, |(_, _, n)| n)
    };
    assert_eq!(
        (
            n("anonymous", "unauthorized"),
            n("anonymous", "forbidden"),
            n("ci", "accepted")
        ),
        (2, 2, 1)
    );
    let token_refusals = s.stats.refusals().into_iter().find(|(r, _)| *r == "token");
    assert_eq!(token_refusals, Some(("token", 4)));
    // A reloaded tokens file counts from the next connection on.
    let next = "feed-next-0123456789abcdef012345";
    write_tokens(dir.path(), &format!("ops {next}\n"));
    assert!(sec.reload("test"));
    let f = TlsClient::connect(s.addr, &ca).greet_and_send(Some(TOKEN), "q", "old");
    assert_eq!(error_of(f).0, ErrorCode::Forbidden);
    let f = TlsClient::connect(s.addr, &ca).greet_and_send(Some(next), "q", "new");
    assert!(matches!(f, ServerFrame::Welcome { .. }), "{f:?}");
    assert_eq!(n("ops", "accepted"), 1);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn a_plain_client_is_told_to_use_tls_and_a_server_without_tokens_ignores_auth() {
    let dir = tempfile::tempdir().expect("dir");
    material(dir.path());
    let s = start(
        &dir.path().join("d"),
        Some(security(dir.path(), true, false, false)),
    );
    let e = feed(s.addr, &b"plain\n"[..], feed_cfg("p", None, None)).expect_err("plain");
    let FeedError::Refused { name, message, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(*name, "bad_preamble");
    assert!(message.contains("speaks TLS only"), "{message}");
    // TLS without tokens: an AUTH is ignored, the records stored.
    let tls = tls_to(dir.path(), "localhost", false);
    let r = feed(s.addr, &b"a\nb\n"[..], feed_cfg("p", tls, Some(TOKEN))).expect("feed");
    assert_eq!(r.records_sent, 2);
    assert_eq!(s.batch(), vec!["a", "b"]);
    assert_eq!(
        s.stats.connections(),
        vec![("anonymous".to_string(), "accepted", 1)]
    );
    s.ssc.stop(false).expect("stop");
}

#[test]
fn mtls_needs_a_client_certificate_and_bad_server_names_fail_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    material(dir.path());
    let s = start(
        &dir.path().join("d"),
        Some(security(dir.path(), true, true, true)),
    );
    let quick = |tls: Option<FeedTls>| {
        let started = Instant::now();
        let e = feed(s.addr, &b"x\n"[..], feed_cfg("p", tls, Some(TOKEN))).expect_err("refused");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "not retried: {e}"
        );
        e
    };
    let e = quick(tls_to(dir.path(), "127.0.0.1", false));
    assert!(
        e.to_string().contains("requires a client certificate"),
        "{e}"
    );
    let e = quick(tls_to(dir.path(), "ingest.example", true));
    assert!(e.to_string().contains("does not hold the name"), "{e}");
    // Another authority.
    tls_common::make_ca(dir.path(), "other");
    let mut other = tls_to(dir.path(), "127.0.0.1", true).expect("tls");
    other.ca_file = dir.path().join("other.pem");
    let e = quick(Some(other));
    assert!(e.to_string().contains("not signed by an authority"), "{e}");
    let tls = tls_to(dir.path(), "127.0.0.1", true);
    let r = feed(s.addr, &b"m\n"[..], feed_cfg("p", tls, Some(TOKEN))).expect("mtls feed");
    assert_eq!(r.records_sent, 1);
    assert_eq!(s.batch(), vec!["m"]);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn a_token_never_travels_in_plain_text_off_this_machine() {
    let addr: SocketAddr = "192.0.2.1:7070".parse().expect("addr");
    let e = feed(addr, &b"x\n"[..], feed_cfg("p", None, Some(TOKEN))).expect_err("refused");
    assert!(matches!(e, FeedError::Plaintext { .. }), "{e}");
    assert!(!e.to_string().contains(TOKEN));
    // Bad tokens are refused without showing them.
    for bad in ["", "two words", "t".repeat(5000).as_str()] {
        let e = FeedToken::new(bad, "the test").expect_err("bad token");
        assert!(bad.is_empty() || !e.to_string().contains(bad), "{e}");
    }
    assert_eq!(
        format!("{:?}", FeedToken::new(TOKEN, "t").expect("token")),
        "FeedToken(not shown)"
    );
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = FeedToken::from_file(&p).expect_err("others may read it");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let t = FeedToken::from_file(&p).expect("token file");
    assert_eq!(t, FeedToken::new(TOKEN, "x").expect("same"));
}
