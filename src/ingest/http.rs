//! HTTP ingest: the ingest stream's second front (`Protocol::Http`) on
//! hyper's HTTP/1.1 server, over plain TCP or TLS (`crate::net`), with
//! bearer tokens when configured. `POST /v1/streams/<stream>` carries
//! newline-delimited records; `Weir-Producer` and `Weir-Sequence` make a
//! retry exactly once, as a HELLO and DATA frames do in the binary
//! protocol; `GET /v1/streams/<stream>/producers/<id>` tells a producer
//! where to resume. Protocol: `docs/http-ingest.md`.
//!
//! Answers: `200` only after every record of the request is durable
//! (the WAL's fsync returned), `400` naming the line of a record the
//! stream's decoder refuses (nothing of the request stored), `401`/`403`
//! for a missing or wrong token, `404`, `405`, `408` for a slow body,
//! `409` for a sequence gap (with `Weir-Next-Sequence`), `413` over
//! `body_bytes_max` or `records_per_request_max`, `429` with
//! `Retry-After` when the stream's backlog stays full for
//! `pressure_wait` or the connection limits are reached, `503` when the
//! producer table is full or the server stops, `500` when storing failed.
//!
//! Limits: [`crate::ingest::HttpLimits`] (body, records per request,
//! head bytes and time, body time, pressure wait) and the
//! [`crate::ingest::IngestConfig`] connection limits: `connections_max`
//! served at once (as many more get one `429` each, any beyond are
//! closed), per address as in the binary protocol; one request body in
//! memory per connection; a connection lives at most
//! [`CONNECTION_LIFETIME_MAX`].
//! Must never: answer `200` before the records are durable, store any
//! record of a request that has a refused record, store without a valid
//! token when tokens are configured, or log a token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::http_request::{
    check_span, origin, route, split_records, RequestError, Route, NEXT_SEQUENCE_HEADER,
    PRODUCER_HEADER, SEQUENCE_HEADER,
};
use super::parts::partition_of;
use super::pressure::{AddrSlot, Close};
use super::proto::ErrorCode;
use super::records::encode_stored;
use super::server::admit;
use super::store::{refusal, store_anonymous, store_frames, Housekeeping, PendingFrame, Server};
use super::HttpLimits;
use crate::dstream::BoxError;
use crate::net::Auth;

/// Longest a connection is kept (then closed after its response).
pub const CONNECTION_LIFETIME_MAX: Duration = Duration::from_secs(300);
/// Most header fields in one request.
const HEADERS_MAX: usize = 64;
/// How often the accept loop checks for a stop.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// `Retry-After` of a `429`, in seconds.
const RETRY_AFTER_S: &str = "1";
/// The token name of requests without one.
const ANONYMOUS: &str = crate::net::tokens::ANONYMOUS;

type Resp = Response<Full<Bytes>>;

/// Accepts connections until the stream stops (the binary front's loop,
/// for HTTP).
pub(super) async fn accept_loop(
    server: Arc<Server>,
    listener: std::net::TcpListener,
) -> Result<(), BoxError> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let permits = Arc::new(Semaphore::new(server.cfg.connections_max));
    // Connections over the limits get one 429 each, as many at once as
    // the limit; more are closed at once.
    let overflow = Arc::new(Semaphore::new(server.cfg.connections_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(STOP_POLL);
    let mut house = Housekeeping::new(&server.cfg);
    let rr = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    let admitted = match admit(&server, &permits, peer) {
                        Ok((permit, slot)) => Ok((permit, slot)),
                        Err(close) => {
                            if let Some(why) = close.refusal() {
                                server.stats.refuse(why);
                            }
                            match overflow.clone().try_acquire_owned() {
                                Ok(p) => Err((p, close.reason)),
                                Err(_) => continue,
                            }
                        }
                    };
                    let c = Conn { server: server.clone(), peer, rr: rr.clone() };
                    tasks.spawn(connection(c, sock, admitted, stop_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(stream = %server.name, error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(STOP_POLL).await;
                }
            },
            _ = tick.tick() => {
                while tasks.try_join_next().is_some() {}
                if house.tick(&server).await {
                    break;
                }
            }
        }
    }
    super::store::drain(tasks, stop_tx, DRAIN_TIMEOUT).await;
    Ok(())
}

/// What a connection's requests share.
#[derive(Clone)]
struct Conn {
    server: Arc<Server>,
    peer: SocketAddr,
    /// Round robin of anonymous requests over the partitions.
    rr: Arc<AtomicUsize>,
}

impl Conn {
    fn limits(&self) -> &HttpLimits {
        match &self.server.cfg.protocol {
            super::Protocol::Http(h) => h,
            // The binary front never serves HTTP connections.
            super::Protocol::Binary => &HTTP_DEFAULTS,
        }
    }
}

static HTTP_DEFAULTS: std::sync::LazyLock<HttpLimits> =
    std::sync::LazyLock::new(HttpLimits::default);

type Admitted = Result<(OwnedSemaphorePermit, AddrSlot), (OwnedSemaphorePermit, String)>;

/// One connection: the TLS handshake if configured, then HTTP.
async fn connection(c: Conn, tcp: TcpStream, admitted: Admitted, stop: watch::Receiver<bool>) {
    let _ = tcp.set_nodelay(true);
    let Some(config) = c.server.cfg.security.as_ref().and_then(|s| s.tls()) else {
        return serve(c, tcp, admitted, stop).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let peer = c.peer;
    match tokio::time::timeout(c.limits().head_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve(c, tls, admitted, stop).await,
        Ok(Err(e)) => handshake_failed(&c.server, peer, &e.to_string()),
        Err(_) => handshake_failed(&c.server, peer, "timed out"),
    }
}

/// A failed TLS handshake: counted, logged at info while the budget of
/// detailed lines lasts (scanners must not flood the log), else at debug.
fn handshake_failed(server: &Server, peer: SocketAddr, why: &str) {
    server.stats.refuse(super::pressure::Refusal::Protocol);
    let stream = server.name.as_str();
    if server.budget.take() {
        tracing::info!(stream, peer = %peer, "HTTP ingest: TLS handshake failed: {why}");
    } else {
        tracing::debug!(stream, peer = %peer, "HTTP ingest: TLS handshake failed: {why}");
    }
}

/// HTTP/1.1 on `io` with the listener's limits, until the client closes,
/// the stream stops, the connection is evicted or its lifetime ends.
async fn serve<I>(c: Conn, io: I, admitted: Admitted, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // A refused connection holds its overflow permit until it closes, so
    // at most `connections_max` of them are answered at once.
    let (slot, busy, _overflow) = match admitted {
        Ok((permit, mut slot)) => {
            slot.greeted();
            (Some(Arc::new((permit, slot))), None, None)
        }
        Err((permit, why)) => (None, Some(why), Some(permit)),
    };
    let h = c.limits().clone();
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(h.head_timeout)
        .max_buf_size(h.head_bytes_max)
        .max_headers(HEADERS_MAX)
        .keep_alive(h.keep_alive && busy.is_none());
    let (svc_c, svc_slot) = (c.clone(), slot.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (c, slot, busy) = (svc_c.clone(), svc_slot.clone(), busy.clone());
        async move { Ok::<_, Infallible>(c.answer(req, slot.as_ref().map(|s| &s.1), busy).await) }
    });
    let conn = b.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let evicted = async {
        match &slot {
            Some(s) => s.1.evicted().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(stream = %c.server.name, peer = %c.peer, error = %e, "HTTP ingest: connection ended");
            }
            return;
        }
        _ = stop.changed() => {}
        _ = evicted => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME_MAX) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(h.head_timeout + h.body_timeout, conn).await;
}

impl Conn {
    /// The answer to one request, counted and logged.
    async fn answer(
        &self,
        req: Request<Incoming>,
        slot: Option<&AddrSlot>,
        busy: Option<String>,
    ) -> Resp {
        let method = req.method().clone();
        let (resp, token) = match busy {
            Some(why) => (
                retry_later(StatusCode::TOO_MANY_REQUESTS, why),
                ANONYMOUS.to_string(),
            ),
            None => self.respond(req, slot).await,
        };
        let code = resp.status().as_u16();
        self.server.stats.count_request(&token, code);
        let stream = self.server.name.as_str();
        if code >= 400 && code != 429 && self.server.budget.take() {
            tracing::warn!(stream, peer = %self.peer, token = %token, %method, code, "HTTP ingest request refused");
        } else {
            tracing::debug!(stream, peer = %self.peer, token = %token, %method, code, "HTTP ingest request");
        }
        resp
    }

    /// The response and the token name it came with.
    async fn respond(&self, req: Request<Incoming>, slot: Option<&AddrSlot>) -> (Resp, String) {
        let token = match self.server.cfg.security.as_ref().and_then(|s| s.tokens()) {
            None => ANONYMOUS.to_string(),
            Some(tokens) => {
                match tokens.authorize(req.headers().get(AUTHORIZATION).map(|v| v.as_bytes())) {
                    Auth::Named(n) => n,
                    Auth::Missing => {
                        let mut r = error(
                            StatusCode::UNAUTHORIZED,
                            "a token is needed: send `Authorization: Bearer TOKEN`",
                        );
                        r.headers_mut().insert(
                            WWW_AUTHENTICATE,
                            HeaderValue::from_static("Bearer realm=\"weir\""),
                        );
                        return (r, ANONYMOUS.to_string());
                    }
                    Auth::Wrong => {
                        return (
                            error(StatusCode::FORBIDDEN, "the token is not accepted"),
                            ANONYMOUS.to_string(),
                        )
                    }
                }
            }
        };
        let name = &self.server.stream;
        let r = match route(req.uri().path()) {
            Route::Stream(s) if &s == name && req.method() == Method::POST => {
                self.ingest(req, slot).await
            }
            Route::Producer(s, id) if &s == name && req.method() == Method::GET => {
                self.producer(&id)
            }
            Route::Stream(s) if &s == name => not_allowed("POST"),
            Route::Producer(s, _) if &s == name => not_allowed("GET"),
            Route::Stream(s) | Route::Producer(s, _) => error(
                StatusCode::NOT_FOUND,
                &format!(
                    "this listener serves stream {name:?}, not {s:?}: POST to /v1/streams/{name}"
                ),
            ),
            Route::Unknown => error(
                StatusCode::NOT_FOUND,
                &format!("not found: POST records to /v1/streams/{name}"),
            ),
        };
        (r, token)
    }

    /// `GET /v1/streams/<stream>/producers/<id>`: where the producer
    /// resumes (0 for one the server does not know).
    fn producer(&self, id: &[u8]) -> Resp {
        if let Err(e) =
            super::http_request::check_producer(id, self.server.cfg.limits.producer_id_bytes_max)
        {
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
        let parts = &self.server.parts;
        let next = parts[partition_of(parts, id)].table.next_of(id);
        let mut r = json(StatusCode::OK, serde_json::json!({ "next_sequence": next }));
        r.headers_mut()
            .insert(NEXT_SEQUENCE_HEADER, HeaderValue::from(next));
        r
    }
}

/// Why a request was refused before anything was stored.
struct Refused(Resp);

impl From<RequestError> for Refused {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::TooManyRecords { .. } | RequestError::RecordTooLong { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let mut body = serde_json::json!({ "error": e.to_string() });
        if let RequestError::RecordTooLong { line, .. } = e {
            body["line"] = line.into();
        }
        Refused(json(code, body))
    }
}

impl Conn {
    /// `POST /v1/streams/<stream>`: the records checked, then stored once
    /// each, answered after they are durable.
    async fn ingest(&self, req: Request<Incoming>, slot: Option<&AddrSlot>) -> Resp {
        match self.ingest_checked(req, slot).await {
            Ok(r) | Err(Refused(r)) => r,
        }
    }

    async fn ingest_checked(
        &self,
        req: Request<Incoming>,
        slot: Option<&AddrSlot>,
    ) -> Result<Resp, Refused> {
        let h = self.limits();
        let max_id = self.server.cfg.limits.producer_id_bytes_max;
        let header = |n: &str| req.headers().get(n).map(|v| v.as_bytes().to_vec());
        let (producer, sequence) = (header(PRODUCER_HEADER), header(SEQUENCE_HEADER));
        let origin = origin(producer.as_deref(), sequence.as_deref(), max_id)?
            .map(|(id, s)| (id.to_vec(), s));
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > h.body_bytes_max as u64) {
            return Err(Refused(too_large(h.body_bytes_max)));
        }
        let body = self.read_body(req.into_body(), h).await?;
        // Splitting and decoding a large body is CPU work: off the
        // runtime's two threads' async duty, as the store is.
        let (batch, records) =
            tokio::task::block_in_place(|| self.checked(&body, h, origin.as_ref()))?;
        drop(body);
        let parts = &self.server.parts;
        let part = match &origin {
            Some((id, _)) => partition_of(parts, id),
            None => self.rr.fetch_add(1, Ordering::Relaxed) % parts.len(),
        };
        self.wait_for_room(part, h)?;
        if let Some(s) = slot {
            s.busy();
        }
        let r = match origin {
            Some((id, first)) => self.store_producer(part, &id, first, &batch, records),
            None => self.store_anonymous(part, &batch, &records),
        };
        if let Some(s) = slot {
            s.touch();
        }
        Ok(r)
    }

    /// The whole body, within `body_bytes_max` and `body_timeout`.
    async fn read_body(&self, body: Incoming, h: &HttpLimits) -> Result<Bytes, Refused> {
        let limited = Limited::new(body, h.body_bytes_max);
        match tokio::time::timeout(h.body_timeout, limited.collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(Refused(too_large(h.body_bytes_max)))
            }
            Ok(Err(e)) => Err(Refused(error(
                StatusCode::BAD_REQUEST,
                &format!("the request body could not be read: {e}"),
            ))),
            Err(_) => {
                let ms = h.body_timeout.as_millis();
                Err(Refused(error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the request body did not arrive within {ms} ms (body_timeout)"),
                )))
            }
        }
    }

    /// The body's records, within the request's limits and the sequence
    /// space, framed and checked ([`Self::framed`]).
    fn checked(
        &self,
        body: &[u8],
        h: &HttpLimits,
        origin: Option<&(Vec<u8>, u64)>,
    ) -> Result<(Vec<u8>, Vec<std::ops::Range<usize>>), Refused> {
        let record_max = self.server.cfg.limits.record_bytes_max as usize;
        let lines = split_records(body, h.records_per_request_max, record_max)?;
        if let Some((_, first)) = origin {
            check_span(*first, lines.len())?;
        }
        self.framed(body, &lines, origin)
    }

    /// The records with their stored headers in one buffer, each checked
    /// by the stream's decoder (a refusal names its line).
    fn framed(
        &self,
        body: &[u8],
        lines: &[std::ops::Range<usize>],
        origin: Option<&(Vec<u8>, u64)>,
    ) -> Result<(Vec<u8>, Vec<std::ops::Range<usize>>), Refused> {
        let (id, first) = origin.map_or((&[][..], 0), |(id, s)| (&id[..], *s));
        let header = super::records::stored_header_bytes(id.len());
        let mut batch = Vec::with_capacity(body.len() + lines.len() * header);
        let mut records = Vec::with_capacity(lines.len());
        for (i, r) in lines.iter().enumerate() {
            let start = batch.len();
            let seq = first.wrapping_add(i as u64);
            encode_stored(&mut batch, id, seq, &body[r.clone()]);
            if let Some(why) = refusal(&self.server, &batch[start..]) {
                self.server
                    .stats
                    .refuse(super::pressure::Refusal::InvalidRecord);
                let msg = format!("line {} cannot be processed by stream {:?}: {why}; nothing of this request was stored", i + 1, self.server.name);
                return Err(Refused(json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": msg, "line": i + 1 }),
                )));
            }
            records.push(start..batch.len());
        }
        Ok((batch, records))
    }

    /// Waits up to `pressure_wait` for room in the backlog of partition
    /// `part` (where the request goes); `429` if there is none.
    fn wait_for_room(&self, part: usize, h: &HttpLimits) -> Result<(), Refused> {
        let ctx = &self.server.parts[part].ctx;
        if !ctx.backlog_full() {
            return Ok(());
        }
        if tokio::task::block_in_place(|| ctx.wait_backlog_below(h.pressure_wait)) {
            return Ok(());
        }
        Err(Refused(retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "stream {:?} is behind: its backlog is full; retry after {RETRY_AFTER_S} s",
                self.server.stream
            ),
        )))
    }

    /// Stores a producer's request: duplicates acknowledged, a gap `409`.
    fn store_producer(
        &self,
        part: usize,
        id: &[u8],
        first: u64,
        batch: &[u8],
        records: Vec<std::ops::Range<usize>>,
    ) -> Resp {
        let server = &self.server;
        let part = &server.parts[part];
        let Ok(p) = part.table.connect(id) else {
            let max = server.cfg.producers_max;
            server.stats.refuse(super::pressure::Refusal::ProducersMax);
            return retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the producer table is full (producers_max = {max}); this producer is new"),
            );
        };
        let count = records.len();
        let frame = [PendingFrame {
            first_seq: first,
            records,
        }];
        // The claim goes back however the store ends (a panic too).
        let claim = Claim {
            table: &part.table,
            id,
            p: &p,
        };
        let generation = p.generation.load(Ordering::Acquire);
        let outcome = tokio::task::block_in_place(|| {
            store_frames(server, part, &p, generation, &frame, batch)
        });
        drop(claim);
        let o = match outcome {
            Ok(o) => o,
            Err(close) => return store_failed(close),
        };
        let next = HeaderValue::from(o.next);
        let mut r = match o.gap {
            Some(gap) => json(
                StatusCode::CONFLICT,
                serde_json::json!({ "error": gap.reason.replace("DATA frame", "request"), "next_sequence": o.next }),
            ),
            None => json(
                StatusCode::OK,
                serde_json::json!({ "stored": o.stored, "duplicates": count - o.stored, "next_sequence": o.next }),
            ),
        };
        r.headers_mut().insert(NEXT_SEQUENCE_HEADER, next);
        r
    }

    /// Stores an anonymous request (at least once: a retry stores again).
    fn store_anonymous(
        &self,
        part: usize,
        batch: &[u8],
        records: &[std::ops::Range<usize>],
    ) -> Resp {
        let part = &self.server.parts[part];
        let slices: Vec<&[u8]> = records.iter().map(|r| &batch[r.clone()]).collect();
        match tokio::task::block_in_place(|| store_anonymous(&self.server, part, &slices)) {
            Ok(n) => json(
                StatusCode::OK,
                serde_json::json!({ "stored": n, "duplicates": 0 }),
            ),
            Err(close) => store_failed(close),
        }
    }
}

/// A request's hold on its producer's entry, given back on drop.
struct Claim<'a> {
    table: &'a super::producers::ProducerTable,
    id: &'a [u8],
    p: &'a super::producers::Producer,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.table.release(self.id, self.p);
    }
}

fn store_failed(close: Close) -> Resp {
    match close.code {
        ErrorCode::Stopping | ErrorCode::Superseded => {
            retry_later(StatusCode::SERVICE_UNAVAILABLE, close.reason)
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, &close.reason),
    }
}

fn json(code: StatusCode, body: serde_json::Value) -> Resp {
    let mut text = body.to_string();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error(code: StatusCode, msg: &str) -> Resp {
    json(code, serde_json::json!({ "error": msg }))
}

fn retry_later(code: StatusCode, msg: String) -> Resp {
    let mut r = error(code, &msg);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
    r
}

fn too_large(max: usize) -> Resp {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "the request body is over {max} bytes (body_bytes_max); send fewer records per request"
        ),
    )
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("only {allow} here"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
