//! The reliable ingest server: producers connect over TCP (or TLS, when
//! the listener has a certificate: `crate::net`), show a bearer token
//! when the listener has a tokens file, say who they are, learn the next
//! sequence number expected from them, send numbered records, and get
//! cumulative acknowledgements only after the records are durable in the
//! stream's WAL. Protocol: `docs/ingest-protocol.md`.
//!
//! Owns the listener and its connections (a tokio runtime inside
//! [`Receiver::run`], 2 worker threads): [`IngestServer`], the accept
//! loop, one task per connection (its TLS handshake, its token check),
//! the record check and the store-then-ack step under the producer's
//! lock. The configuration is in
//! [`super::config`], the producer table in [`super::producers`], the
//! per-address counts and counters in [`super::pressure`], the bytes in
//! [`super::proto`] and [`super::records`].
//!
//! Limits ([`IngestConfig`]): `connections_max` (64) open connections,
//! `connections_per_address_max` (32) of them and
//! `handshakes_per_address_max` (8) connections before HELLO per source IP
//! address, `hello_timeout` (5 s) from accept to a complete TLS
//! handshake, preamble, AUTH and HELLO, `producers_max` (100 000)
//! producers in the table (a producer that never stored a record leaves
//! with its connection; one idle for `producers_idle_max`, 7 days,
//! expires), `idle_timeout` (60 s) between frames, `read_timeout` (10 s)
//! to complete a started frame, one frame buffer of `8 + frame_bytes_max`
//! bytes per connection, and the codec's limits ([`super::Limits`]; an
//! AUTH token at most 4096 bytes). One WAL append carries at most the
//! WAL's `append_records_max` / `append_bytes_max`. A connection refused
//! at `connections_max` (or its address's limit) makes the connection
//! idle longest (at least 1 s, not storing) close; on a TLS listener the
//! refused connection is closed without an ERROR (no handshake was made).
//! Refusals are counted ([`IngestStats`]) and logged as one summary line
//! a minute ([`super::pressure`]).
//!
//! Must never: acknowledge a record before `ReceiverContext::store`
//! returned for it, take a HELLO without a valid token when the listener
//! has tokens, log a token (only its name), store anything of a
//! malformed frame, store a record
//! the stream's decoder refuses (with `check_records`, the default), store
//! a sequence number of a producer twice, or read more from a connection
//! while its previous records are not stored (backpressure reaches the
//! producer through TCP flow control).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::parts::{partition_of, Part};
use super::pressure::{AddrSlot, AddrTable, Close, IngestStats, LogBudget, Refusal};
use super::producers::{lock, show_id, Producer, ProducerTable};
use super::proto::{
    encode_ack, encode_error, encode_welcome, ClientDecoder, ClientFrame, ErrorCode, FrameBuffer,
};
use super::records::encode_stored;
use super::store::{check_record, store_frames, Housekeeping, PendingFrame, Server};
use super::{IngestConfig, Protocol};
use crate::dstream::BoxError;
use crate::net::tokens::ANONYMOUS;
use crate::net::Auth;
use crate::receiver::{Receiver, ReceiverContext};

/// How often the accept loop checks for a stop (the trait asks for 100 ms).
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a closing connection may take to accept its ERROR frame.
pub(super) const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for connections to finish before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A check of one stored record (header + payload) before it is stored:
/// the stream's decoder, its value dropped.
pub(super) type RecordCheck = Arc<dyn Fn(&[u8]) -> Result<(), BoxError> + Send + Sync>;

/// The ingest server as a [`Receiver`]. Built by
/// [`crate::StreamingContext::ingest_stream_with`], which recovers its
/// producer table and registers the release hook before `start()`.
pub struct IngestServer {
    /// The stream's name (its partitions' logs add `-p<p>`).
    pub(super) stream: String,
    pub(super) cfg: IngestConfig,
    pub(super) listener: std::net::TcpListener,
    /// Filled in right after the stream's partitions are registered
    /// (recovery needs their WALs, which registration opens), before
    /// `start()`.
    pub(super) parts: Arc<OnceLock<Vec<Part>>>,
    pub(super) stats: Arc<IngestStats>,
    /// The stream's decoder as a check (with `check_records`).
    pub(super) check: Option<RecordCheck>,
}

impl Receiver for IngestServer {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        let IngestServer {
            stream,
            cfg,
            listener,
            parts,
            stats,
            check,
        } = *self;
        let parts = Arc::into_inner(parts)
            .and_then(OnceLock::into_inner)
            .ok_or("ingest server started before its producer tables were recovered")?;
        for part in &parts {
            if cfg.records_per_second_max.is_some() {
                part.ctx
                    .set_records_per_second_max(cfg.records_per_second_max);
            }
            part.ctx
                .set_state(crate::receiver::ReceiverState::Listening, None);
        }
        let wal_cfg = ctx.wal().config().clone();
        let server = Arc::new(Server {
            append_records_max: wal_cfg.append_records_max,
            append_bytes_max: wal_cfg.append_bytes_max,
            addrs: AddrTable::new(
                cfg.connections_per_address_max,
                cfg.handshakes_per_address_max,
            ),
            budget: LogBudget::new(),
            check: if cfg.check_records { check } else { None },
            stats,
            cfg,
            name: ctx.stream_name().to_string(),
            stream,
            parts,
            fatal: Mutex::new(None),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-ingest")
            .enable_all()
            .build()?;
        let result = match server.cfg.protocol {
            Protocol::Binary => rt.block_on(accept_loop(server.clone(), listener)),
            Protocol::Http(_) => rt.block_on(super::http::accept_loop(server.clone(), listener)),
        };
        rt.shutdown_timeout(Duration::from_millis(200));
        result?;
        let fatal = lock(&server.fatal).take();
        match fatal {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

async fn accept_loop(server: Arc<Server>, listener: std::net::TcpListener) -> Result<(), BoxError> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let permits = Arc::new(Semaphore::new(server.cfg.connections_max));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(STOP_POLL);
    let stream = server.name.clone();
    let mut house = Housekeeping::new(&server.cfg);
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => match admit(&server, &permits, peer) {
                    Ok((permit, slot)) => {
                        let server = server.clone();
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            connection(server, sock, peer, slot, stop).await;
                            drop(permit);
                        });
                    }
                    Err(close) => {
                        // Counted; the summary line reports it (no line
                        // per refusal).
                        let why = close.refusal();
                        if let Some(why) = why {
                            server.stats.refuse(why);
                        }
                        // Make room for the producer's retry: the
                        // connection idle longest (in the limit's scope)
                        // is asked to close.
                        match why {
                            Some(Refusal::ConnectionsMax) => server.addrs.evict_idlest(None),
                            Some(Refusal::ConnectionsPerAddress) => server.addrs.evict_idlest(Some(peer.ip())),
                            _ => false,
                        };
                        tracing::debug!(stream = %stream, peer = %peer, "refused a connection: {}", close.reason);
                        // Best effort, never waits: the socket is fresh, so
                        // its send buffer has room for one small frame. A
                        // TLS listener sends nothing in clear: the
                        // connection is just closed (docs/ingest-protocol.md).
                        if server.cfg.security.as_ref().and_then(|s| s.tls()).is_none() {
                            let mut b = Vec::new();
                            encode_error(&mut b, close.code, &close.reason);
                            let _ = sock.try_write(&b);
                        }
                    }
                },
                Err(e) => {
                    // E.g. out of file descriptors: log and keep serving.
                    tracing::warn!(stream = %stream, error = %e, "accepting a connection failed");
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

/// A global permit and a per-address slot for a new connection from
/// `peer`, or the ERROR that refuses it.
pub(super) fn admit(
    server: &Server,
    permits: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Result<(tokio::sync::OwnedSemaphorePermit, AddrSlot), Close> {
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        let max = server.cfg.connections_max;
        return Err(Close::new(
            ErrorCode::Busy,
            format!("too many connections (connections_max = {max}); retry later"),
        ));
    };
    match server.addrs.admit(peer.ip()) {
        Ok(slot) => Ok((permit, slot)),
        Err((why, max)) => {
            let what = match why {
                Refusal::HandshakesPerAddress => "connections that have not said HELLO",
                _ => "connections",
            };
            Err(Close::new(
                ErrorCode::Busy,
                format!(
                    "too many {what} from {} ({} = {max}); retry later",
                    peer.ip(),
                    why.name()
                ),
            )
            .counted(why))
        }
    }
}

/// One connection, start to close: the TLS handshake first when the
/// listener has TLS (within `hello_timeout` of the accept), then the
/// protocol.
async fn connection(
    server: Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    slot: AddrSlot,
    stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    let accepted = Instant::now();
    let Some(tls) = server.cfg.security.as_ref().and_then(|s| s.tls()) else {
        return serve_connection(server, sock, peer, slot, stop, accepted).await;
    };
    if let Some(s) = super::server_tls::handshake(&server, tls, sock, peer, accepted).await {
        serve_connection(server, s, peer, slot, stop, accepted).await;
    }
}

/// The protocol on `sock` (TCP or TLS), until either side closes.
async fn serve_connection<S>(
    server: Arc<Server>,
    mut sock: S,
    peer: SocketAddr,
    slot: AddrSlot,
    mut stop: watch::Receiver<bool>,
    accepted: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        peer,
        accepted,
        slot,
        token: None,
        producer: None,
        part: 0,
        table: None,
        generation: 0,
        buf: FrameBuffer::new(server.cfg.limits.buffer_bytes()),
        dec: ClientDecoder::new(server.cfg.limits),
        out: Vec::new(),
        acked: 0,
    };
    let result = conn.serve(&server, &mut sock, &mut stop).await;
    let producer = conn.producer_name();
    // The producer's claim goes now (also on a panic or an abort: `Drop`).
    drop(conn);
    let stream = server.name.as_str();
    match result {
        Ok(()) => {
            tracing::debug!(stream, peer = %peer, producer = %producer, "producer closed the connection")
        }
        Err(close) => {
            log_close(&server, &close, peer, &producer);
            let mut b = Vec::new();
            encode_error(&mut b, close.code, &close.reason);
            let _ = tokio::time::timeout(ERROR_SEND_TIMEOUT, async {
                let _ = sock.write_all(&b).await;
                let _ = sock.shutdown().await;
            })
            .await;
        }
    }
}

/// Counts a close and logs it: stops and takeovers at info; refusals at
/// warn while the interval's budget of detailed lines lasts, else at
/// debug (the summary line counts them).
fn log_close(server: &Server, close: &Close, peer: SocketAddr, producer: &str) {
    let stream = server.name.as_str();
    let Some(why) = close.refusal() else {
        tracing::info!(stream, peer = %peer, producer = %producer, "closing the connection: {}", close.reason);
        return;
    };
    server.stats.refuse(why);
    let stored = match why {
        Refusal::InvalidRecord => {
            "; the records before it were stored and acknowledged, nothing of it"
        }
        Refusal::Protocol => "; nothing of the offending frame was stored",
        _ => "",
    };
    if server.budget.take() {
        tracing::warn!(stream, peer = %peer, producer = %producer, code = close.code.name(), "closing the connection: {}{stored}", close.reason);
    } else {
        tracing::debug!(stream, peer = %peer, producer = %producer, code = close.code.name(), "closing the connection: {}{stored}", close.reason);
    }
}

struct Conn {
    peer: SocketAddr,
    /// When the connection was accepted (the HELLO deadline counts from it).
    accepted: Instant,
    /// Its place in the per-address counts.
    slot: AddrSlot,
    /// The name of the token its AUTH showed (None: no AUTH, or a
    /// listener without tokens).
    token: Option<String>,
    /// The producer's id and entry, once the HELLO was read.
    producer: Option<(Box<[u8]>, Arc<Producer>)>,
    /// The producer's partition (set by its HELLO).
    part: usize,
    /// Where the producer's claim is given back when the connection ends
    /// (its partition's table, once the HELLO was read).
    table: Option<Arc<ProducerTable>>,
    /// This connection's claim on the producer (the newest HELLO wins).
    generation: u64,
    buf: FrameBuffer,
    dec: ClientDecoder,
    out: Vec<u8>,
    /// The last ACK value sent.
    acked: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let (Some((id, p)), Some(table)) = (self.producer.take(), &self.table) {
            table.release(&id, &p);
        }
    }
}

impl Conn {
    /// Gives back the claim of the producer this connection said HELLO
    /// as, if any (before a second HELLO takes another).
    fn release_producer(&mut self) {
        if let (Some((id, p)), Some(table)) = (self.producer.take(), self.table.take()) {
            table.release(&id, &p);
        }
    }

    /// The producer's id for logs, or "(before HELLO)".
    fn producer_name(&self) -> String {
        self.producer
            .as_ref()
            .map_or_else(|| "(before HELLO)".to_string(), |(id, _)| show_id(id))
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        server: &Server,
        sock: &mut S,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Close> {
        // Since when the frame (or handshake) being read is incomplete.
        let mut partial_since = Some(Instant::now());
        loop {
            self.process_buffered(server, sock).await?;
            if self.buf.is_empty() && self.dec.greeted() {
                partial_since = None;
            } else if partial_since.is_none() {
                partial_since = Some(Instant::now());
            }
            if !self.read_more(server, sock, stop, partial_since).await? {
                return Ok(());
            }
        }
    }

    /// Handles every complete frame in the buffer: a pending WELCOME is
    /// sent, DATA frames are stored and acknowledged, then a bad frame or a
    /// newer connection of the producer closes this one.
    async fn process_buffered<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        server: &Server,
        sock: &mut S,
    ) -> Result<(), Close> {
        let (frames, batch, problem) = self.decode_ready(server)?;
        // A WELCOME (HELLO comes before any DATA, so it goes first).
        self.send(sock, server).await?;
        if !frames.is_empty() {
            self.store_and_ack(server, sock, &frames, &batch).await?;
        }
        if let Some(close) = problem {
            return Err(close);
        }
        if self.superseded() {
            return Err(Close::new(
                ErrorCode::Superseded,
                "this producer connected again; the newer connection is used",
            ));
        }
        Ok(())
    }

    /// Reads more bytes into the buffer, within `read_timeout` of
    /// `partial_since` (an incomplete frame or handshake) or else
    /// `idle_timeout`. `Ok(false)`: the connection ended (closed by the
    /// producer, or broken), with nobody left to tell.
    async fn read_more<S: AsyncRead + Unpin>(
        &mut self,
        server: &Server,
        sock: &mut S,
        stop: &mut watch::Receiver<bool>,
        partial_since: Option<Instant>,
    ) -> Result<bool, Close> {
        let cfg = &server.cfg;
        let deadline = match partial_since {
            _ if !self.dec.greeted() => self.accepted + cfg.hello_timeout,
            Some(t) => t + cfg.read_timeout,
            None => Instant::now() + cfg.idle_timeout,
        };
        let spare = self.buf.spare();
        if spare.is_empty() {
            // Cannot happen: the buffer holds one whole frame and
            // complete frames were consumed above.
            return Err(Close::new(ErrorCode::Malformed, "frame buffer full"));
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline.into(), sock.read(spare)) => r,
            _ = stop.changed() => {
                return Err(Close::new(ErrorCode::Stopping, "the server is stopping; reconnect later"));
            }
            _ = self.slot.evicted() => {
                return Err(Close::new(
                    ErrorCode::Timeout,
                    "closed to make room for a new connection: the connection limit was reached and this one had been idle longest; reconnect when there is data to send",
                )
                .counted(Refusal::IdleEvicted));
            }
        };
        match read {
            Err(_) => Err(self.timed_out(cfg, partial_since.is_some())),
            Ok(Ok(0)) => {
                if !(self.buf.is_empty() && self.dec.greeted()) {
                    self.log_closed_mid_frame(server);
                }
                Ok(false)
            }
            Ok(Ok(n)) => {
                self.buf.filled(n);
                self.slot.touch();
                Ok(true)
            }
            Ok(Err(e)) => {
                let stream = server.name.as_str();
                tracing::info!(stream, peer = %self.peer, error = %e, "connection error; {} bytes of an incomplete frame dropped", self.buf.data().len());
                Ok(false)
            }
        }
    }

    /// Why a read timed out: `hello_timeout` before the HELLO,
    /// `read_timeout` for an incomplete frame (`partial`), else
    /// `idle_timeout`.
    fn timed_out(&self, cfg: &IngestConfig, partial: bool) -> Close {
        let reason = if !self.dec.greeted() {
            let secs = cfg.hello_timeout.as_secs_f64();
            return Close::new(
                ErrorCode::Timeout,
                format!(
                    "no preamble and HELLO within {secs:.1} s of connecting (hello_timeout); {} bytes of it were received and dropped",
                    self.buf.data().len()
                ),
            )
            .counted(Refusal::HelloTimeout);
        } else if partial {
            let secs = cfg.read_timeout.as_secs_f64();
            format!(
                "a frame was not complete within {secs:.1} s (read_timeout); {} bytes of it were received and dropped",
                self.buf.data().len()
            )
        } else {
            let secs = cfg.idle_timeout.as_secs_f64();
            format!("no data for {secs:.1} s (idle_timeout)")
        };
        Close::new(ErrorCode::Timeout, reason)
    }

    /// The producer closed the connection inside a frame: nobody to send an
    /// ERROR to, but the log says it.
    fn log_closed_mid_frame(&self, server: &Server) {
        let n = self.buf.data().len();
        let stream = server.name.as_str();
        let producer = self.producer_name();
        if !self.dec.greeted() {
            // A connection that never said HELLO: nothing to say at warn.
            tracing::debug!(stream, peer = %self.peer, "a connection closed before its HELLO was complete ({n} bytes)");
            return;
        }
        tracing::warn!(stream, peer = %self.peer, producer = %producer, "the producer closed the connection in the middle of a frame; its {n} bytes were dropped, nothing of it was stored");
    }

    fn superseded(&self) -> bool {
        self.producer
            .as_ref()
            .is_some_and(|(_, p)| p.generation.load(Ordering::Acquire) != self.generation)
    }

    /// Decodes every complete frame in the buffer: DATA frames become
    /// pending frames (their records copied, with the stored header, into
    /// one batch buffer); a HELLO's WELCOME is put in `self.out` (sent
    /// before the batch is stored). Stops at the first bad frame and
    /// returns it as the problem, after the good frames.
    #[allow(clippy::type_complexity)]
    fn decode_ready(
        &mut self,
        server: &Server,
    ) -> Result<(Vec<PendingFrame>, Vec<u8>, Option<Close>), Close> {
        let mut frames = Vec::new();
        let mut batch = Vec::new();
        loop {
            let (frame, n) = match self.dec.decode(self.buf.data()) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok((frames, batch, None)),
                Err(e) => return Ok((frames, batch, Some(Close::new(e.code(), e.to_string())))),
            };
            match frame {
                ClientFrame::Preamble => {}
                // Copied (at most 4096 and 255 bytes, once a connection):
                // the frame borrows the buffer, `auth` and `hello` the rest.
                ClientFrame::Auth { token } => {
                    let token = token.to_vec();
                    self.auth(server, &token)?;
                }
                ClientFrame::Hello { producer } => {
                    let producer = producer.to_vec();
                    self.hello(server, &producer)?;
                }
                ClientFrame::Data(d) => {
                    let id = self.producer.as_ref().map_or(&[][..], |(id, _)| &id[..]);
                    let mut records = Vec::with_capacity(d.count as usize);
                    let mut invalid = None;
                    for (i, r) in d.records().enumerate() {
                        let start = batch.len();
                        let seq = d.first_seq + i as u64;
                        encode_stored(&mut batch, id, seq, r);
                        if let Err(close) = check_record(server, &batch[start..], seq, i) {
                            batch.truncate(start);
                            invalid = Some(close);
                            break;
                        }
                        records.push(start..batch.len());
                    }
                    if !records.is_empty() {
                        frames.push(PendingFrame {
                            first_seq: d.first_seq,
                            records,
                        });
                    }
                    if invalid.is_some() {
                        return Ok((frames, batch, invalid));
                    }
                }
            }
            self.buf.consume(n);
        }
    }

    /// An AUTH frame: on a listener with tokens, the token's name is kept
    /// for the HELLO, or the connection is refused as `forbidden`; on one
    /// without, the token is ignored.
    fn auth(&mut self, server: &Server, token: &[u8]) -> Result<(), Close> {
        let Some(tokens) = server.cfg.security.as_ref().and_then(|s| s.tokens()) else {
            return Ok(());
        };
        match tokens.authorize_token(Some(token)) {
            Auth::Named(name) => {
                self.token = Some(name);
                Ok(())
            }
            Auth::Missing | Auth::Wrong => {
                server.stats.count_connection(ANONYMOUS, "forbidden");
                Err(Close::new(
                    ErrorCode::Forbidden,
                    "the token is not accepted: it is not in this server's tokens file",
                ))
            }
        }
    }

    /// A HELLO: the token is checked (a listener with tokens needs an
    /// AUTH first), the producer claimed in its partition's table, and
    /// its WELCOME put in `self.out`.
    fn hello(&mut self, server: &Server, producer: &[u8]) -> Result<(), Close> {
        let tokens = server
            .cfg
            .security
            .as_ref()
            .is_some_and(|s| s.tokens().is_some());
        if tokens && self.token.is_none() {
            server.stats.count_connection(ANONYMOUS, "unauthorized");
            return Err(Close::new(
                ErrorCode::Unauthorized,
                "this server requires a token: send it in an AUTH frame before HELLO (weir feed: --token-file FILE or the WEIR_TOKEN variable)",
            ));
        }
        let part = partition_of(&server.parts, producer);
        let table = server.parts[part].table.clone();
        let Ok(p) = table.connect(producer) else {
            return Err(Close::new(
                ErrorCode::ProducersFull,
                format!(
                    "the producer table is full (producers_max = {}); producer {} is new",
                    server.cfg.producers_max,
                    show_id(producer)
                ),
            ));
        };
        self.generation = p.generation.fetch_add(1, Ordering::AcqRel) + 1;
        // A store of an older connection may be in flight: its records
        // are dropped as duplicates if re-sent.
        let next = p.published.load(Ordering::Acquire);
        self.acked = next;
        self.out.clear();
        encode_welcome(&mut self.out, next, &server.cfg.limits);
        let id: Box<[u8]> = producer.into();
        self.release_producer();
        self.producer = Some((id, p));
        (self.part, self.table) = (part, Some(table));
        self.slot.greeted();
        let token = self.token.as_deref().unwrap_or(ANONYMOUS);
        server.stats.count_connection(token, "accepted");
        let (stream, id) = (server.name.as_str(), show_id(producer));
        if tokens {
            tracing::info!(stream, peer = %self.peer, producer = %id, token, next, "producer connected");
        } else {
            tracing::debug!(stream, peer = %self.peer, producer = %id, next, "producer connected");
        }
        Ok(())
    }

    /// Stores the new records of `frames` (duplicates dropped, a gap
    /// refused) and sends one cumulative ACK (plus a pending WELCOME).
    async fn store_and_ack<S: AsyncWrite + Unpin>(
        &mut self,
        server: &Server,
        sock: &mut S,
        frames: &[PendingFrame],
        batch: &[u8],
    ) -> Result<(), Close> {
        let (next, gap) = {
            let producer = self.producer.as_ref().map(|(_, p)| p.clone());
            let generation = self.generation;
            let Some(p) = producer else {
                return Err(Close::new(ErrorCode::OutOfOrder, "DATA before HELLO"));
            };
            self.slot.busy();
            let part = &server.parts[self.part];
            let stored = tokio::task::block_in_place(|| {
                store_frames(server, part, &p, generation, frames, batch)
            });
            self.slot.touch();
            let o = stored?;
            (o.next, o.gap)
        };
        self.out.clear();
        if next > self.acked || gap.is_none() {
            encode_ack(&mut self.out, next);
            self.acked = next;
        }
        self.send(sock, server).await?;
        match gap {
            Some(close) => Err(close),
            None => Ok(()),
        }
    }

    /// Sends `self.out` (bounded by the idle timeout: a producer that does
    /// not read its acks is dropped).
    async fn send<S: AsyncWrite + Unpin>(
        &mut self,
        sock: &mut S,
        server: &Server,
    ) -> Result<(), Close> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(server.cfg.idle_timeout, sock.write_all(&self.out)).await;
        self.out.clear();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Close::new(
                ErrorCode::Timeout,
                format!("sending to the producer failed: {e}"),
            )),
            Err(_) => Err(Close::new(
                ErrorCode::Timeout,
                "the producer did not read its acknowledgements (idle_timeout)",
            )),
        }
    }
}
