//! The HTTP endpoint: `GET /metrics`, `GET /status`, `GET /` (and `HEAD`
//! of each) on hyper's HTTP/1.1 server, over plain TCP on loopback or
//! over TLS (`crate::net`), with bearer tokens when configured.
//!
//! Every connection is bounded: its request head is at most
//! `http_head_bytes_max` bytes (hyper's read buffer; more gets `431`) and
//! must arrive within `http_head_timeout_ms` (hyper's header timer: it
//! also closes an idle kept-alive connection; the TLS handshake has the
//! same time), a connection lives at most [`CONNECTION_LIFETIME_MAX`]
//! (then it is closed after its response), and at most
//! `http_connections_max` are served at once: as many more get `503`,
//! any beyond are closed at once. Defaults 8192 bytes, 5 s, 64.
//! Every request is counted in `weir_http_requests_total{token,route,code}`
//! (the token's name from the file, or `anonymous`; routes `/`,
//! `/status`, `/metrics`, `other`) and logged with the same fields.
//! Must never: change state (GET and HEAD only, others `405`), answer
//! `/status` or `/metrics` without a valid token when tokens are
//! configured (the page at `/` holds no data and is served to anyone who
//! reaches the endpoint, so a browser can load it and ask for the token),
//! log a token, or listen off loopback without TLS and tokens (`daemon.rs`
//! checks).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::HttpSettings;
use super::metrics::{label, metrics_text};
use super::status::{status_json, Live, PAGE_HTML};
use crate::net::{Auth, Security, SecurityFiles, TlsFiles, RELOAD_POLL};

/// Longest a connection is kept (then closed after its response).
pub const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(300);
/// Most header fields in one request.
pub const HEADERS_MAX: usize = 64;
/// Most `(token, route, code)` series counted; beyond, requests are
/// counted under the token name `other`.
pub const SERIES_MAX: usize = 4096;

/// The token name of requests without one.
const ANONYMOUS: &str = crate::net::tokens::ANONYMOUS;

/// The security files `s` names (TLS when both certificate and key are
/// set).
pub fn security_files(s: &HttpSettings) -> SecurityFiles {
    let tls = match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: s.tls_client_ca_file.clone(),
        }),
        _ => None,
    };
    SecurityFiles {
        tls,
        tokens: s.tokens_file.clone(),
    }
}

/// What the endpoint serves and with what: the live status, the limits,
/// TLS and tokens, the request counts.
pub struct Endpoint {
    live: Arc<Live>,
    settings: HttpSettings,
    /// TLS and tokens, reloadable (SIGHUP, file changes).
    pub security: Arc<Security>,
    counts: Mutex<BTreeMap<(String, &'static str, u16), u64>>,
}

impl Endpoint {
    /// An endpoint serving `live` with `settings`; `security` loaded.
    pub fn new(live: Arc<Live>, settings: HttpSettings, security: Arc<Security>) -> Endpoint {
        Endpoint {
            live,
            settings,
            security,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.security.files().tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn count(&self, token: &str, route: &'static str, code: u16) {
        let Ok(mut m) = self.counts.lock() else {
            return;
        };
        let mut key = (token.to_string(), route, code);
        if !m.contains_key(&key) && m.len() >= SERIES_MAX {
            key.0 = "other".into();
        }
        *m.entry(key).or_insert(0) += 1;
    }

    /// `weir_http_requests_total` in Prometheus text.
    fn requests_metric(&self) -> String {
        let mut out = String::from(
            "# HELP weir_http_requests_total Requests to the status endpoint by token name (anonymous: none), route and status code.\n# TYPE weir_http_requests_total counter\n",
        );
        if let Ok(m) = self.counts.lock() {
            for ((token, route, code), n) in m.iter() {
                out.push_str(&format!(
                    "weir_http_requests_total{{token=\"{}\",route=\"{route}\",code=\"{code}\"}} {n}\n",
                    label(token)
                ));
            }
        }
        out
    }
}

/// `weir check`'s line about the endpoint when it has TLS or tokens:
/// their files loaded as `weir run` would (an error refuses).
pub fn check_http(s: &super::config::Settings) -> crate::Result<Option<String>> {
    let files = security_files(&s.http);
    let Some(addr) = s.http_address else {
        return Ok(None);
    };
    if files.tls.is_none() && files.tokens.is_none() {
        return Ok(None);
    }
    let sec = Security::load(files).map_err(|e| super::ServiceError::Security(Box::new(e)))?;
    let scheme = if sec.files().tls.is_some() { "https" } else { "http" };
    let tokens = sec
        .tokens()
        .map_or("none".to_string(), |t| t.names().collect::<Vec<_>>().join(", "));
    let mtls = sec.files().tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    Ok(Some(format!(
        "status endpoint {scheme}://{addr}/: tokens {tokens}; client certificates {}",
        if mtls { "required" } else { "not required" }
    )))
}

/// Binds `addr` (the caller checked the rule for addresses off loopback).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The route label of a path.
fn route(path: &str) -> &'static str {
    match path {
        "/" | "/index.html" => "/",
        "/status" => "/status",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

fn text(code: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    reply(code, "text/plain; charset=utf-8", body.into())
}

fn reply(code: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The response to one request and the token name it came with.
fn respond(ep: &Endpoint, req: &Request<Incoming>, busy: bool) -> (Response<Full<Bytes>>, String) {
    if busy {
        let name = ANONYMOUS.to_string();
        return (text(StatusCode::SERVICE_UNAVAILABLE, "busy: too many connections\n"), name);
    }
    // The page itself holds no pipeline data (it reads /status with the
    // token the user types in): a browser, which cannot send a bearer
    // header when it navigates, can load it.
    let page = route(req.uri().path()) == "/" && (req.method() == Method::GET || req.method() == Method::HEAD);
    let name = match ep.security.tokens() {
        None => ANONYMOUS.to_string(),
        Some(_) if page => ANONYMOUS.to_string(),
        Some(tokens) => match tokens.authorize(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())) {
            Auth::Named(n) => n,
            Auth::Missing => {
                let mut r = text(StatusCode::UNAUTHORIZED, "a token is needed: send `Authorization: Bearer TOKEN`\n");
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"weir\""));
                return (r, ANONYMOUS.to_string());
            }
            Auth::Wrong => {
                return (text(StatusCode::FORBIDDEN, "the token is not accepted\n"), ANONYMOUS.to_string());
            }
        },
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (r, name);
    }
    let r = match route(req.uri().path()) {
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE_HTML.to_string()),
        "/metrics" => {
            let mut body = metrics_text(&ep.live.status());
            body.push_str(&ep.requests_metric());
            reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/status" => reply(StatusCode::OK, "application/json", status_json(&ep.live.status())),
        _ => text(StatusCode::NOT_FOUND, "not found: try /, /status or /metrics\n"),
    };
    (r, name)
}

/// Serves connections until the task is dropped; looks for changed TLS
/// or token files every [`RELOAD_POLL`].
pub async fn serve(listener: TcpListener, ep: Arc<Endpoint>) {
    let n = ep.settings.connections_max;
    let (serving, overflow) = (Arc::new(Semaphore::new(n)), Arc::new(Semaphore::new(n)));
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %e, "status endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = poll.tick() => {
                let sec = ep.security.clone();
                // Reading files blocks: off the runtime's threads.
                let _ = tokio::task::spawn_blocking(move || sec.reload_if_changed()).await;
                continue;
            }
        };
        let (permit, busy) = match serving.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match overflow.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => continue, // dropped: closed at once
            },
        };
        tokio::spawn(connection(conn, peer, permit, busy, ep.clone()));
    }
}

/// One connection: the TLS handshake if configured, then HTTP.
async fn connection(tcp: TcpStream, peer: SocketAddr, _permit: OwnedSemaphorePermit, busy: bool, ep: Arc<Endpoint>) {
    let Some(config) = ep.security.tls() else {
        return serve_http(tcp, peer, busy, ep).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(ep.settings.head_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_http(tls, peer, busy, ep).await,
        Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "status endpoint: TLS handshake failed"),
        Err(_) => tracing::info!(peer = %peer, "status endpoint: TLS handshake timed out"),
    }
}

/// HTTP/1.1 on `io` with the limits of the settings.
async fn serve_http<I>(io: I, peer: SocketAddr, busy: bool, ep: Arc<Endpoint>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = &ep.settings;
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(s.head_timeout)
        .max_buf_size(s.head_bytes_max)
        .max_headers(HEADERS_MAX)
        .keep_alive(s.keep_alive && !busy)
        .title_case_headers(true);
    let svc_ep = ep.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let ep = svc_ep.clone();
        async move {
            let (resp, token) = respond(&ep, &req, busy);
            let (route, code) = (route(req.uri().path()), resp.status().as_u16());
            ep.count(&token, route, code);
            tracing::info!(peer = %peer, token = %token, method = %req.method(), route, code, "status endpoint request");
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = b.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "status endpoint: connection ended");
            }
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME_MAX) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(s.head_timeout, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_closed_set() {
        assert_eq!(route("/"), "/");
        assert_eq!(route("/index.html"), "/");
        assert_eq!(route("/metrics"), "/metrics");
        assert_eq!(route("/status"), "/status");
        assert_eq!(route("/../etc/passwd"), "other");
    }

    #[test]
    fn only_loopback_goes_without_tls_and_tokens() {
        let mut s = HttpSettings::default();
        let out: SocketAddr = "0.0.0.0:9464".parse().expect("addr");
        assert_eq!(s.missing_for("127.0.0.1:1".parse().expect("addr")), None);
        assert_eq!(s.missing_for("[::1]:1".parse().expect("addr")), None);
        assert_eq!(s.missing_for(out), Some("http_tls_cert_file"));
        s.tls_cert_file = Some("c".into());
        s.tls_key_file = Some("k".into());
        assert_eq!(s.missing_for(out), Some("http_tokens_file"));
        s.tokens_file = Some("t".into());
        assert_eq!(s.missing_for(out), None);
        assert!(security_files(&s).tls.is_some());
    }
}
