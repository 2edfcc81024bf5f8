//! HTTP ingest (#16) through the library, over real loopback sockets:
//! records posted are answered `200` after they are durable and reach
//! batches exactly once; a retry of the same producer and sequence is
//! acknowledged as duplicates, an overlapping one stores only the new
//! tail, a gap is `409` naming the next sequence; a record the decoder
//! refuses is `400` naming its line with nothing of the request stored;
//! `413` over the body and record limits (declared or chunked), `429` with
//! `Retry-After` while the backlog is full and at the connection limit,
//! `401`/`403` for tokens (counted by token name), `404`/`405`; TLS with
//! a token; the producer table across a restart; anonymous requests;
//! partitions; a listener off this machine refused without TLS and
//! tokens. Batches are driven by a manual clock; every wait is bounded.

mod common;
mod tls_common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{collect, get, Out, WAIT};
use weir::ingest::proto::Limits;
use weir::ingest::{HttpLimits, IngestConfig, IngestStats, Protocol};
use weir::net::{Security, SecurityFiles, TlsFiles};
use weir::testing_http::{HttpClient, Reply};
use weir::wal::WalConfig;
use weir::{ManualClock, StreamingContext};

const PATH: &str = "/v1/streams/in";

struct Server {
    ssc: StreamingContext,
    clock: Arc<ManualClock>,
    addr: SocketAddr,
    out: Out<String>,
    stats: Arc<IngestStats>,
}

fn http_cfg(tune: impl FnOnce(&mut IngestConfig, &mut HttpLimits)) -> IngestConfig {
    let mut cfg = IngestConfig::new("127.0.0.1:0".parse().expect("addr"));
    cfg.limits = Limits {
        record_bytes_max: 32,
        records_per_frame_max: 8,
        frame_bytes_max: 1024,
        producer_id_bytes_max: 16,
    };
    let mut h = HttpLimits {
        body_bytes_max: 512,
        records_per_request_max: 16,
        ..HttpLimits::default()
    };
    tune(&mut cfg, &mut h);
    cfg.protocol = Protocol::Http(h);
    cfg
}

struct Opts {
    t0: u64,
    backlog_bytes_max: u64,
    json: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            t0: 0,
            backlog_bytes_max: 1 << 20,
            json: false,
        }
    }
}

fn start(dir: &Path, o: Opts, cfg: IngestConfig) -> Server {
    let clock = Arc::new(ManualClock::new(o.t0));
    let c = clock.clone();
    let (mut addr, mut out, mut stats) = (None, None, None);
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .parallelism(2)
            .partitions(2)
            .clock(c)
            .backlog_bytes_max(o.backlog_bytes_max)
            .wal_config(WalConfig {
                segment_bytes_max: 512,
                record_bytes_max: 128,
                ..WalConfig::default()
            })
            .build()?;
        let decode = if o.json {
            weir::ingest::payload_json
        } else {
            weir::ingest::payload_utf8
        };
        let s = ssc.ingest_stream_with("in", cfg, decode)?;
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

impl Server {
    fn batch(&self) -> Vec<String> {
        let t = self.clock.advance(1000);
        self.ssc.await_batch(t, WAIT).expect("batch");
        get(&self.out).into_iter().flat_map(|(_, r)| r).collect()
    }
    fn client(&self) -> HttpClient {
        HttpClient::connect(self.addr).expect("connect")
    }
}

fn lines(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("r{i}\n")).collect()
}

fn n(r: &Reply, key: &str) -> u64 {
    r.json()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {}", r.body))
}

#[test]
fn records_are_stored_once_and_retries_are_duplicates() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), Opts::default(), http_cfg(|_, _| {}));
    let mut c = s.client();
    let r = c
        .post(PATH, Some(("p1", 0)), None, lines(0..5).as_bytes())
        .expect("post");
    assert_eq!(
        (r.code, n(&r, "stored"), n(&r, "next_sequence")),
        (200, 5, 5),
        "{}",
        r.body
    );
    assert_eq!(r.header("weir-next-sequence"), Some("5"));
    // The same request again (a retry after a lost response): duplicates.
    let r = c
        .post(PATH, Some(("p1", 0)), None, lines(0..5).as_bytes())
        .expect("retry");
    assert_eq!(
        (r.code, n(&r, "stored"), n(&r, "duplicates")),
        (200, 0, 5),
        "{}",
        r.body
    );
    // Overlapping: 3..8 stores only 5..8.
    let r = c
        .post(PATH, Some(("p1", 3)), None, lines(3..8).as_bytes())
        .expect("overlap");
    assert_eq!(
        (r.code, n(&r, "stored"), n(&r, "duplicates")),
        (200, 3, 2),
        "{}",
        r.body
    );
    // A gap: nothing stored, 409 names the next sequence.
    let r = c.post(PATH, Some(("p1", 10)), None, b"r10\n").expect("gap");
    assert_eq!((r.code, n(&r, "next_sequence")), (409, 8), "{}", r.body);
    assert_eq!(r.header("weir-next-sequence"), Some("8"));
    let r = c
        .request("GET", "/v1/streams/in/producers/p1", &[], b"")
        .expect("get");
    assert_eq!((r.code, n(&r, "next_sequence")), (200, 8), "{}", r.body);
    let r = c
        .request("GET", "/v1/streams/in/producers/nobody", &[], b"")
        .expect("get");
    assert_eq!((r.code, n(&r, "next_sequence")), (200, 0));
    let mut got = s.batch();
    got.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        s.stats
            .records_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    s.ssc.stop(false).expect("stop");
}

#[test]
fn the_producer_table_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let s = start(dir.path(), Opts::default(), http_cfg(|_, _| {}));
        let r = s
            .client()
            .post(PATH, Some(("p1", 0)), None, lines(0..4).as_bytes())
            .expect("post");
        assert_eq!(r.code, 200);
        // Not committed: the restart replays the records and must still
        // know the producer.
        s.ssc.stop(false).expect("stop");
    }
    let s = start(
        dir.path(),
        Opts {
            t0: 0,
            ..Opts::default()
        },
        http_cfg(|_, _| {}),
    );
    let r = s
        .client()
        .post(PATH, Some(("p1", 2)), None, lines(2..6).as_bytes())
        .expect("post");
    assert_eq!(
        (r.code, n(&r, "stored"), n(&r, "duplicates")),
        (200, 2, 2),
        "{}",
        r.body
    );
    let mut got = s.batch();
    got.sort();
    let mut want: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn a_refused_record_names_its_line_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let o = Opts {
        json: true,
        ..Opts::default()
    };
    let s = start(dir.path(), o, http_cfg(|_, _| {}));
    let mut c = s.client();
    let r = c
        .post(PATH, Some(("j", 0)), None, b"{\"a\":1}\n[2]\n{oops\n3\n")
        .expect("post");
    assert_eq!((r.code, n(&r, "line")), (400, 3), "{}", r.body);
    assert!(r.body.contains("not JSON"), "{}", r.body);
    let r = c
        .post(PATH, None, None, b"{\"a\":1}\r\n\"s\"\n")
        .expect("post");
    assert_eq!((r.code, n(&r, "stored")), (200, 2), "{}", r.body);
    // Not UTF-8.
    let r = c.post(PATH, None, None, b"1\n\xff\n").expect("post");
    assert_eq!((r.code, n(&r, "line")), (400, 2), "{}", r.body);
    for (h, v) in [("Weir-Producer", "p"), ("Weir-Sequence", "1")] {
        let r = c.request("POST", PATH, &[(h, v)], b"1\n").expect("half");
        assert_eq!(r.code, 400, "{}", r.body);
    }
    let r = c
        .request(
            "POST",
            PATH,
            &[("Weir-Producer", "p"), ("Weir-Sequence", "x")],
            b"1\n",
        )
        .expect("bad seq");
    assert_eq!(r.code, 400, "{}", r.body);
    let mut got = s.batch();
    got.sort();
    assert_eq!(got, vec!["\"s\"".to_string(), "{\"a\":1}".to_string()]);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn limits_answer_413_at_their_maximum_plus_one() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), Opts::default(), http_cfg(|_, _| {}));
    let mut c = s.client();
    // 16 records of 32 bytes = 528 bytes with newlines: over 512.
    let rec = "x".repeat(32);
    let sixteen: String = (0..16).map(|_| format!("{rec}\n")).collect();
    let r = c.post(PATH, None, None, sixteen.as_bytes()).expect("post");
    assert_eq!(r.code, 413, "{}", r.body);
    // At the body maximum exactly: accepted.
    let at_max = format!("{}\n", "y".repeat(31)).repeat(16);
    assert_eq!(at_max.len(), 512);
    let r = c.post(PATH, None, None, at_max.as_bytes()).expect("post");
    assert_eq!(r.code, 200, "{}", r.body);
    // 17 short records: over records_per_request_max (16); 16 pass.
    let r = c
        .post(PATH, None, None, lines(0..17).as_bytes())
        .expect("post");
    assert_eq!(r.code, 413, "{}", r.body);
    let r = c
        .post(PATH, None, None, lines(0..16).as_bytes())
        .expect("post");
    assert_eq!((r.code, n(&r, "stored")), (200, 16), "{}", r.body);
    // A 33-byte record: over record_bytes_max (32), naming the line.
    let r = c
        .post(
            PATH,
            None,
            None,
            format!("a\n{}\n", "z".repeat(33)).as_bytes(),
        )
        .expect("post");
    assert_eq!((r.code, n(&r, "line")), (413, 2), "{}", r.body);
    // A chunked body over the maximum (no Content-Length to refuse on).
    let r = chunked(&mut c, &"q\n".repeat(300));
    assert_eq!(r.code, 413, "{}", r.body);
    assert_eq!(s.batch().len(), 16 + 16);
    s.ssc.stop(false).expect("stop");
}

/// A chunked POST (no Content-Length).
fn chunked(c: &mut HttpClient, body: &str) -> Reply {
    let mut out =
        format!("POST {PATH} HTTP/1.1\r\nHost: weir\r\nTransfer-Encoding: chunked\r\n\r\n");
    for part in body.as_bytes().chunks(100) {
        out.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            String::from_utf8_lossy(part)
        ));
    }
    out.push_str("0\r\n\r\n");
    c.raw(out.as_bytes()).expect("chunked")
}

#[test]
fn a_full_backlog_answers_429_with_retry_after_until_a_batch_drains_it() {
    let dir = tempfile::tempdir().expect("dir");
    let o = Opts {
        backlog_bytes_max: 200,
        ..Opts::default()
    };
    let s = start(
        dir.path(),
        o,
        http_cfg(|_, h| h.pressure_wait = Duration::from_millis(50)),
    );
    let mut c = s.client();
    let mut seq = 0u64;
    let mut refused = None;
    for _ in 0..50 {
        let r = c
            .post(PATH, Some(("p", seq)), None, lines(0..8).as_bytes())
            .expect("post");
        if r.code == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.code, 200, "{}", r.body);
        seq += 8;
    }
    let r = refused.expect("the backlog filled up");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.body.contains("backlog"), "{}", r.body);
    let before = s.batch().len() as u64;
    assert_eq!(
        before, seq,
        "everything acknowledged is in the batch, nothing refused"
    );
    let r = c
        .post(PATH, Some(("p", seq)), None, lines(0..8).as_bytes())
        .expect("post");
    assert_eq!(r.code, 200, "room after the batch: {}", r.body);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn over_connections_max_a_connection_gets_one_429() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(
        dir.path(),
        Opts::default(),
        http_cfg(|c, _| c.connections_max = 1),
    );
    let mut first = s.client();
    assert_eq!(
        first.post(PATH, None, None, b"a\n").expect("first").code,
        200
    );
    let mut second = s.client();
    let r = second.post(PATH, None, None, b"b\n").expect("second");
    assert_eq!(
        (r.code, r.header("retry-after")),
        (429, Some("1")),
        "{}",
        r.body
    );
    drop(first);
    let r = common_retry(|| {
        HttpClient::connect(s.addr).and_then(|mut c| c.post(PATH, None, None, b"c\n"))
    });
    assert_eq!(r.code, 200, "{}", r.body);
    let mut got = s.batch();
    got.sort();
    assert_eq!(got, vec!["a", "c"]);
    s.ssc.stop(false).expect("stop");
}

/// Retries `f` until it answers other than 429 (the server notices a
/// closed connection asynchronously), within the wait bound.
fn common_retry(mut f: impl FnMut() -> std::io::Result<Reply>) -> Reply {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match f() {
            Ok(r) if r.code != 429 => return r,
            _ if std::time::Instant::now() > deadline => panic!("still refused after {WAIT:?}"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tokens");
    std::fs::write(&p, "loader tok-0123456789abcdef0123456789\n").expect("tokens");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

#[test]
fn tokens_are_required_and_counted_by_name() {
    let dir = tempfile::tempdir().expect("dir");
    let files = SecurityFiles {
        tls: None,
        tokens: Some(tokens_file(dir.path())),
    };
    let sec = Arc::new(Security::load(files).expect("security"));
    let s = start(
        &dir.path().join("d"),
        Opts::default(),
        http_cfg(|c, _| c.security = Some(sec)),
    );
    let mut c = s.client();
    let r = c.post(PATH, None, None, b"a\n").expect("post");
    assert_eq!(r.code, 401, "{}", r.body);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    let r = c.post(PATH, None, Some("nope"), b"a\n").expect("post");
    assert_eq!(r.code, 403, "{}", r.body);
    let r = c
        .post(PATH, None, Some("tok-0123456789abcdef0123456789"), b"a\n")
        .expect("post");
    assert_eq!(r.code, 200, "{}", r.body);
    let reqs = s.stats.requests();
    assert!(reqs.contains(&("loader".into(), 200, 1)), "{reqs:?}");
    assert!(reqs.contains(&("anonymous".into(), 401, 1)), "{reqs:?}");
    assert!(reqs.contains(&("anonymous".into(), 403, 1)), "{reqs:?}");
    assert_eq!(s.batch(), vec!["a"]);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn wrong_routes_and_methods_are_404_and_405() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(dir.path(), Opts::default(), http_cfg(|_, _| {}));
    let mut c = s.client();
    let r = c
        .post("/v1/streams/other", None, None, b"a\n")
        .expect("post");
    assert_eq!(r.code, 404, "{}", r.body);
    assert!(r.body.contains("/v1/streams/in"), "{}", r.body);
    let r = c.request("GET", PATH, &[], b"").expect("get");
    assert_eq!((r.code, r.header("allow")), (405, Some("POST")));
    let r = c.request("POST", "/metrics", &[], b"").expect("post");
    assert_eq!(r.code, 404);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn tls_with_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    tls_common::make_ca(dir.path(), "ca");
    tls_common::make_leaf(dir.path(), "ca", "server", true);
    let files = SecurityFiles {
        tls: Some(TlsFiles {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            client_ca: None,
        }),
        tokens: Some(tokens_file(dir.path())),
    };
    let sec = Arc::new(Security::load(files).expect("security"));
    let s = start(
        &dir.path().join("d"),
        Opts::default(),
        http_cfg(|c, _| c.security = Some(sec)),
    );
    let mut c = HttpClient::over(tls_stream(&dir.path().join("ca.pem"), s.addr));
    let r = c
        .post(
            PATH,
            Some(("t", 0)),
            Some("tok-0123456789abcdef0123456789"),
            b"secret\n",
        )
        .expect("post");
    assert_eq!(r.code, 200, "{}", r.body);
    // Plain HTTP to a TLS listener gets no answer.
    assert!(s.client().post(PATH, None, None, b"x\n").is_err());
    assert_eq!(s.batch(), vec!["secret"]);
    s.ssc.stop(false).expect("stop");
}

fn tls_stream(
    ca: &Path,
    addr: SocketAddr,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
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
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn partitions_keep_each_producer_in_order_and_anonymous_requests_spread() {
    let dir = tempfile::tempdir().expect("dir");
    let s = start(
        dir.path(),
        Opts::default(),
        http_cfg(|c, _| c.partitions = 3),
    );
    let mut c = s.client();
    for p in 0..6u32 {
        let id = format!("p{p}");
        for k in 0..3u64 {
            let body = format!("{id}-{k}\n");
            let r = c
                .post(PATH, Some((&id, k)), None, body.as_bytes())
                .expect("post");
            assert_eq!(r.code, 200, "{}", r.body);
        }
    }
    for _ in 0..6 {
        assert_eq!(c.post(PATH, None, None, b"anon\n").expect("post").code, 200);
    }
    let got = s.batch();
    assert_eq!(got.len(), 24);
    assert_eq!(got.iter().filter(|r| *r == "anon").count(), 6);
    s.ssc.stop(false).expect("stop");
}

#[test]
fn a_listener_off_this_machine_needs_tls_and_tokens() {
    let dir = tempfile::tempdir().expect("dir");
    let mut cfg = http_cfg(|_, _| {});
    cfg.listen_addr = "0.0.0.0:0".parse().expect("addr");
    let err = StreamingContext::get_or_create(dir.path(), |b| {
        let ssc = b.batch_interval(Duration::from_secs(1)).build()?;
        ssc.ingest_stream_with("in", cfg, weir::ingest::payload_utf8)?;
        Ok(ssc)
    })
    .map(|_| ())
    .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("off this machine") && msg.contains("TLS"),
        "{msg}"
    );
}
