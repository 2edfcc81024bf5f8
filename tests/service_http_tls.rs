//! The status endpoint's network rules (#16), from outside: the real
//! `weir` binary over real sockets. TLS with bearer tokens (200, 401 with
//! `WWW-Authenticate: Bearer`, 403, 405, the token's name in the log and
//! in `weir_http_requests_total`, never the token); a certificate
//! reloaded on SIGHUP and on a file change, a broken one keeping the old;
//! mTLS refusing a client without a certificate; an address off this
//! machine refused without TLS and tokens, naming the key; the limits
//! (connections → 503, head size → 431, slow head → closed).
//!
//! Certificates are made for each test with the `openssl` command (a
//! throwaway authority, server and client certificates). Every wait polls
//! with a deadline.

mod service_common;
mod tls_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use service_common::{all_lines, line_with, spawn_logged, status_address, wait_for, weir, Guard};
use tls_common::{make_ca, make_leaf};

const TOKEN: &str = "prom-0123456789abcdef0123456789abcdef";

fn cert_der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).expect("certificate")
}

/// A TLS client trusting `ca`, with a client certificate if given.
fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(ca)).expect("root");
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        None => b.with_no_client_auth(),
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![cert_der(cert)],
                PrivateKeyDer::from_pem_file(key).expect("key"),
            )
            .expect("client cert"),
    })
}

/// One HTTPS request (`Connection: close`): the response (head and
/// body) and the server's certificate, or the error.
fn https(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
    request: &str,
) -> Result<(String, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // A server that closes without close_notify after its response.
        Err(e) if !out.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let peer = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?
        .clone()
        .into_owned();
    Ok((String::from_utf8_lossy(&out).into_owned(), peer))
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// An authority, a server certificate, a client certificate and a
    /// tokens file (mode 600) in a new directory.
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        make_ca(dir.path(), "ca");
        make_leaf(dir.path(), "ca", "server", true);
        make_leaf(dir.path(), "ca", "client", false);
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!("# who scrapes\nprom {TOKEN}\nops fedcba9876543210fedcba98\n"),
        )
        .expect("tokens");
        chmod(&tokens, 0o600);
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A pipeline file whose `[service]` table holds `service`.
    fn pipeline(&self, service: &str) -> PathBuf {
        let p = self.path("p.toml");
        std::fs::write(
            &p,
            format!(
                "[pipeline]\nbatch_interval = \"1s\"\n[service]\n{service}\n\
                 [[source]]\nid = \"g\"\nkind = \"generator\"\nrate = 10\n\
                 [[sink]]\nfrom = \"g\"\nkind = \"print\"\ncount = 1\n"
            ),
        )
        .expect("pipeline");
        p
    }

    /// `weir run` on `service`: the child, the endpoint's address, its log.
    fn run(&self, service: &str) -> (Guard, String, mpsc::Receiver<String>) {
        let p = self.pipeline(service);
        let (g, rx) = spawn_logged(
            weir()
                .arg("run")
                .arg(&p)
                .arg("--data-dir")
                .arg(self.path("data")),
        );
        let addr = status_address(&rx);
        (g, addr, rx)
    }
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

const TLS_KEYS: &str = "http_address = \"127.0.0.1:0\"\nhttp_tls_cert_file = \"server.pem\"\nhttp_tls_key_file = \"server.key\"\nhttp_tokens_file = \"tokens\"\n";

#[test]
fn tls_with_tokens_answers_only_a_known_token_and_names_it() {
    let s = Setup::new();
    let (mut g, addr, rx) = s.run(TLS_KEYS);
    let c = client_config(&s.path("ca.pem"), None);

    let (r, peer) = https(&addr, &c, &get("/status", Some(TOKEN))).expect("https");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.contains("\"phase\""), "{r}");
    assert_eq!(peer, cert_der(&s.path("server.pem")));

    let (r, _) = https(&addr, &c, &get("/status", None)).expect("https");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("Www-Authenticate: Bearer"), "{r}");
    let (r, _) = https(
        &addr,
        &c,
        &get("/metrics", Some("prom-0123456789abcdef0123456789abcdeX")),
    )
    .expect("https");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let post = format!("POST /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let (r, _) = https(&addr, &c, &post).expect("https");
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    assert!(r.contains("Allow: GET, HEAD"), "{r}");

    let (m, _) = https(&addr, &c, &get("/metrics", Some(TOKEN))).expect("https");
    for series in [
        "weir_http_requests_total{token=\"prom\",route=\"/status\",code=\"200\"} 1",
        "weir_http_requests_total{token=\"anonymous\",route=\"/status\",code=\"401\"} 1",
        "weir_http_requests_total{token=\"anonymous\",route=\"/metrics\",code=\"403\"} 1",
        "weir_http_requests_total{token=\"prom\",route=\"/status\",code=\"405\"} 1",
    ] {
        assert!(m.contains(series), "no {series} in\n{m}");
    }

    // Plain HTTP on the TLS port gets no page.
    let mut t = TcpStream::connect(&addr).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    t.write_all(get("/status", Some(TOKEN)).as_bytes())
        .expect("write");
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out);
    assert!(!String::from_utf8_lossy(&out).contains("200 OK"));

    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
    let log = all_lines(&rx);
    assert!(log.contains("token=prom"), "the name is logged:\n{log}");
    assert!(
        !log.contains(TOKEN) && !log.contains("fedcba9876543210"),
        "a token was logged:\n{log}"
    );
}

#[test]
fn a_certificate_is_reloaded_on_sighup_and_on_change_and_a_broken_one_keeps_the_old() {
    let s = Setup::new();
    let (mut g, addr, rx) = s.run(TLS_KEYS);
    let c = client_config(&s.path("ca.pem"), None);
    let peer =
        |c: &Arc<rustls::ClientConfig>| https(&addr, c, &get("/", Some(TOKEN))).map(|(_, p)| p);
    assert_eq!(peer(&c).expect("https"), cert_der(&s.path("server.pem")));

    // SIGHUP: a new certificate from the same authority is served.
    make_leaf(s.dir.path(), "ca", "server2", true);
    std::fs::copy(s.path("server2.pem"), s.path("server.pem")).expect("copy");
    std::fs::copy(s.path("server2.key"), s.path("server.key")).expect("copy");
    g.signal("HUP");
    // SIGHUP reloads whether or not the change was seen first.
    line_with(&rx, "TLS certificate reloaded reason=\"SIGHUP\"");
    let new = cert_der(&s.path("server2.pem"));
    wait_for("the new certificate served", || {
        peer(&c).ok().as_ref() == Some(&new)
    });

    // A file change alone: another certificate, no signal.
    make_leaf(s.dir.path(), "ca", "server3", true);
    std::fs::copy(s.path("server3.key"), s.path("server.key")).expect("copy");
    std::fs::copy(s.path("server3.pem"), s.path("server.pem")).expect("copy");
    let third = cert_der(&s.path("server3.pem"));
    wait_for("the changed certificate served", || {
        peer(&c).ok().as_ref() == Some(&third)
    });

    // A broken certificate: the reload fails, the last good one stays.
    std::fs::write(s.path("server.pem"), "not a certificate\n").expect("write");
    g.signal("HUP");
    let l = line_with(&rx, "TLS reload failed");
    assert!(l.contains("server.pem"), "{l}");
    assert_eq!(peer(&c).expect("still served"), third);

    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

#[test]
fn mtls_refuses_a_client_without_a_certificate() {
    let s = Setup::new();
    let keys = format!("{TLS_KEYS}http_tls_client_ca_file = \"ca.pem\"\n");
    let (mut g, addr, _rx) = s.run(&keys);
    let without = client_config(&s.path("ca.pem"), None);
    let e = https(&addr, &without, &get("/status", Some(TOKEN)));
    assert!(e.is_err(), "served without a client certificate: {e:?}");
    let with = client_config(
        &s.path("ca.pem"),
        Some((&s.path("client.pem"), &s.path("client.key"))),
    );
    let (r, _) =
        https(&addr, &with, &get("/status", Some(TOKEN))).expect("https with a client certificate");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    // A client certificate is no token.
    let (r, _) = https(&addr, &with, &get("/status", None)).expect("https");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

fn check(p: &Path) -> (Option<i32>, String, String) {
    let out = weir().arg("check").arg(p).output().expect("weir check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_address_off_this_machine_needs_tls_and_tokens_naming_the_key() {
    let s = Setup::new();
    let (code, _, err) = check(&s.pipeline("http_address = \"0.0.0.0:9464\"\n"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("add http_tls_cert_file"), "{err}");
    let tls_only = "http_address = \"0.0.0.0:9464\"\nhttp_tls_cert_file = \"server.pem\"\nhttp_tls_key_file = \"server.key\"\n";
    let (code, _, err) = check(&s.pipeline(tls_only));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("add http_tokens_file"), "{err}");
    let full = format!("{tls_only}http_tokens_file = \"tokens\"\n");
    let (code, out, err) = check(&s.pipeline(&full));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("status endpoint https://0.0.0.0:9464/: tokens prom, ops"),
        "{out}"
    );

    // `weir run --http-address` off loopback with a loopback file: refused.
    let p = s.pipeline("http_address = \"127.0.0.1:0\"\n");
    let out = weir()
        .args(["run", "--http-address", "0.0.0.0:0", "--data-dir"])
        .arg(s.path("data"))
        .arg(&p)
        .output()
        .expect("weir run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("service.http_tls_cert_file"), "{err}");

    // A tokens file others may read: refused, naming the chmod.
    chmod(&s.path("tokens"), 0o644);
    let (code, _, err) = check(&s.pipeline(&full));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}

/// Reads until the server closes (or answers); the bytes and how long.
fn read_until_closed(t: &mut TcpStream) -> (String, Duration) {
    let start = Instant::now();
    t.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out);
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

#[test]
fn the_limits_hold_connections_head_size_and_head_time() {
    let s = Setup::new();
    let (mut g, addr, _rx) = s.run(
        "http_address = \"127.0.0.1:0\"\nhttp_connections_max = 2\nhttp_head_timeout_ms = 1000\n",
    );
    // Slow head: half a request line, then nothing: closed in time.
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /status HT").expect("write");
    let (_, took) = read_until_closed(&mut slow);
    assert!(took < Duration::from_secs(10), "closed after {took:?}");

    // Two idle connections hold both places: a third gets 503 (the idle
    // ones are closed after the head timeout, so each try opens new ones).
    let mut busy = String::new();
    wait_for("503 while both places are taken", || {
        let _idle: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(&addr).expect("connect"))
            .collect();
        let mut t = TcpStream::connect(&addr).expect("connect");
        let _ = t.write_all(get("/status", None).as_bytes());
        busy = read_until_closed(&mut t).0;
        busy.starts_with("HTTP/1.1 503")
    });

    // A head of 8192 bytes without its end: 431 (exactly the limit, so
    // the server reads every byte and its answer is not lost to a reset).
    let mut big = String::from("GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    big.push_str(&"a".repeat(8192 - big.len()));
    let mut answer = String::new();
    wait_for("an answer to a large head once places are free", || {
        let mut t = TcpStream::connect(&addr).expect("connect");
        let _ = t.write_all(big.as_bytes());
        answer = read_until_closed(&mut t).0;
        !answer.starts_with("HTTP/1.1 503")
    });
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Keep-alive: two requests on one connection.
    let mut t = TcpStream::connect(&addr).expect("connect");
    let two = format!(
        "{}{}",
        "GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
        get("/metrics", None)
    );
    t.write_all(two.as_bytes()).expect("write");
    let (both, _) = read_until_closed(&mut t);
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

/// One plain HTTP request on loopback (`Connection: close`): the response.
fn plain(addr: &str, request: &str) -> String {
    let mut t = TcpStream::connect(addr).expect("connect");
    t.write_all(request.as_bytes()).expect("write");
    read_until_closed(&mut t).0
}

#[test]
fn tokens_on_loopback_are_enforced_everywhere_and_reloaded() {
    let s = Setup::new();
    let (mut g, addr, rx) =
        s.run("http_address = \"127.0.0.1:0\"\nhttp_tokens_file = \"tokens\"\n");
    for path in ["/status", "/metrics", "/nope"] {
        let r = plain(&addr, &get(path, None));
        assert!(r.starts_with("HTTP/1.1 401"), "{path}: {r}");
    }
    // The page holds no data: a browser loads it and asks for the token.
    let r = plain(&addr, &get("/", None));
    assert!(
        r.starts_with("HTTP/1.1 200 OK") && r.contains("id=\"login\""),
        "{r}"
    );
    assert!(
        r.contains("Authorization") && r.contains("sessionStorage"),
        "{r}"
    );
    let r = plain(&addr, &get("/metrics", Some(TOKEN)));
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    let head = plain(
        &addr,
        &format!("HEAD /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
    );
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
        "no body: {head}"
    );

    // The file changes: `prom` gets a new token, the old one is refused.
    let fresh = "prom-fresh-aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let tokens = s.path("tokens");
    std::fs::write(&tokens, format!("prom {fresh}\n# ops left\n")).expect("tokens");
    chmod(&tokens, 0o600);
    wait_for("the new token accepted", || {
        plain(&addr, &get("/status", Some(fresh))).starts_with("HTTP/1.1 200")
    });
    let r = plain(&addr, &get("/status", Some(TOKEN)));
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let l = line_with(&rx, "tokens reloaded");
    assert!(l.contains("prom") && !l.contains(fresh), "{l}");

    // A file others may read is not loaded: the tokens in use stay.
    chmod(&tokens, 0o644);
    g.signal("HUP");
    let l = line_with(&rx, "tokens reload failed");
    assert!(l.contains("chmod 600"), "{l}");
    let r = plain(&addr, &get("/status", Some(fresh)));
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    g.signal("TERM");
    assert_eq!(g.wait_exit(Duration::from_secs(60)).code(), Some(0));
}
