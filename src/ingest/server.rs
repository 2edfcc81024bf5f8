//! The reliable ingest server: producers connect over TCP, say who they
//! are, learn the next sequence number expected from them, send numbered
//! records, and get cumulative acknowledgements only after the records are
//! durable in the stream's WAL. Protocol: `docs/ingest-protocol.md`.
//!
//! Owns the listener and its connections (a tokio runtime inside
//! [`Receiver::run`], 2 worker threads): [`IngestServer`], [`IngestConfig`],
//! the accept loop, one task per connection, and the store-then-ack step
//! under the producer's lock. The producer table is in
//! [`super::producers`], the bytes in [`super::proto`] and
//! [`super::records`].
//!
//! Limits ([`IngestConfig`]): `connections_max` (64) open connections,
//! `producers_max` (100 000) producers in the table (never pruned:
//! forgetting one would let its old records in again), `idle_timeout`
//! (60 s) between frames, `read_timeout` (10 s) to complete a started
//! frame or the handshake, one frame buffer of `8 + frame_bytes_max` bytes
//! per connection, and the codec's limits ([`Limits`]). One WAL append
//! carries at most the WAL's `append_records_max` / `append_bytes_max`.
//!
//! Must never: acknowledge a record before `ReceiverContext::store`
//! returned for it, store anything of a malformed frame, store a sequence
//! number of a producer twice, or read more from a connection while its
//! previous records are not stored (backpressure reaches the producer
//! through TCP flow control).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::producers::{lock, show_id, Producer, ProducerTable};
use super::proto::{
    encode_ack, encode_error, encode_welcome, ClientDecoder, ClientFrame, ErrorCode, FrameBuffer,
    Limits,
};
use super::records::{encode_stored, stored_header_bytes};
use super::IngestError;
#[cfg(doc)]
use super::IngestStream;
use crate::dstream::BoxError;
use crate::receiver::{Receiver, ReceiverContext, ReceiverError};
use crate::wal::Wal;

/// How often the accept loop checks for a stop (the trait asks for 100 ms).
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a closing connection may take to accept its ERROR frame.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for connections to finish before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Configuration of one ingest server.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Where to listen (bind port 0 for an ephemeral port; see
    /// [`IngestStream::local_addr`]).
    pub listen_addr: SocketAddr,
    /// The wire limits announced in WELCOME and enforced on every frame.
    pub limits: Limits,
    /// Most connections open at once (default 64); one more is refused
    /// with ERROR `busy`.
    pub connections_max: usize,
    /// Most distinct producers the table holds (default 100000; never
    /// pruned); a new one past it is refused with ERROR `producers_full`.
    pub producers_max: usize,
    /// Longest silence between frames, and longest wait for a producer to
    /// take its acknowledgements, before the connection is closed with
    /// ERROR `timeout` (default 60 s).
    pub idle_timeout: Duration,
    /// Longest time to complete a started frame, or the preamble and
    /// HELLO, before the connection is closed with ERROR `timeout`
    /// (default 10 s).
    pub read_timeout: Duration,
    /// Rate limit of this stream (records/s), or the context's default.
    pub records_per_second_max: Option<u64>,
}

impl IngestConfig {
    /// The defaults for a server on `listen_addr`: default [`Limits`], 64
    /// connections, 100000 producers, 60 s idle and 10 s read timeout, the
    /// context's rate limit.
    pub fn new(listen_addr: SocketAddr) -> Self {
        IngestConfig {
            listen_addr,
            limits: Limits::default(),
            connections_max: 64,
            producers_max: 100_000,
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(10),
            records_per_second_max: None,
        }
    }
}

/// The ingest server as a [`Receiver`]. Built by
/// [`crate::StreamingContext::ingest_stream_with`], which recovers its
/// producer table and registers the release hook before `start()`.
pub struct IngestServer {
    pub(super) cfg: IngestConfig,
    pub(super) listener: std::net::TcpListener,
    /// Filled in right after the stream is registered (recovery needs the
    /// stream's WAL, which registration opens), before `start()`.
    pub(super) table: Arc<OnceLock<Arc<ProducerTable>>>,
}

/// Why a connection is being closed by the server.
struct Close {
    code: ErrorCode,
    reason: String,
}

impl Close {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }
}

/// Shared by the connections of one server.
struct Server {
    cfg: IngestConfig,
    table: Arc<ProducerTable>,
    ctx: ReceiverContext,
    /// Set when a store failed for a reason other than stopping: the
    /// receiver returns it as its error.
    fatal: Mutex<Option<String>>,
    /// Per WAL append.
    append_records_max: usize,
    append_bytes_max: usize,
}

/// A DATA frame waiting to be stored: its first sequence and record count,
/// and where its stored records (header + payload) are in the batch buffer.
struct PendingFrame {
    first_seq: u64,
    records: Vec<std::ops::Range<usize>>,
}

impl Receiver for IngestServer {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        let IngestServer {
            cfg,
            listener,
            table,
        } = *self;
        let table = table
            .get()
            .cloned()
            .ok_or("ingest server started before its producer table was recovered")?;
        if cfg.records_per_second_max.is_some() {
            ctx.set_records_per_second_max(cfg.records_per_second_max);
        }
        let wal_cfg = ctx.wal().config().clone();
        let server = Arc::new(Server {
            append_records_max: wal_cfg.append_records_max,
            append_bytes_max: wal_cfg.append_bytes_max,
            cfg,
            table,
            ctx,
            fatal: Mutex::new(None),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-ingest")
            .enable_all()
            .build()?;
        let result = rt.block_on(accept_loop(server.clone(), listener));
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
    let stream = server.ctx.stream_name().to_string();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let server = server.clone();
                        let stop = stop_rx.clone();
                        tasks.spawn(async move {
                            connection(server, sock, peer, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let max = server.cfg.connections_max;
                        tracing::warn!(stream = %stream, peer = %peer, connections_max = max, "refused a connection: connections_max connections are open");
                        let mut b = Vec::new();
                        encode_error(&mut b, ErrorCode::Busy, &format!("too many connections (connections_max = {max}); retry later"));
                        // Best effort, never waits: the socket is fresh, so
                        // its send buffer has room for one small frame.
                        let _ = sock.try_write(&b);
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
                if server.ctx.is_stopping() || lock(&server.fatal).is_some() {
                    break;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// One connection, start to close.
async fn connection(
    server: Arc<Server>,
    mut sock: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    let mut conn = Conn {
        peer,
        producer: None,
        generation: 0,
        buf: FrameBuffer::new(server.cfg.limits.buffer_bytes()),
        dec: ClientDecoder::new(server.cfg.limits),
        out: Vec::new(),
        acked: 0,
    };
    let result = conn.serve(&server, &mut sock, &mut stop).await;
    let stream = server.ctx.stream_name();
    let producer = conn
        .producer
        .as_ref()
        .map_or_else(|| "(before HELLO)".to_string(), |(id, _)| show_id(id));
    match result {
        Ok(()) => {
            tracing::debug!(stream, peer = %peer, producer = %producer, "producer closed the connection")
        }
        Err(close) => {
            match close.code {
                ErrorCode::Stopping | ErrorCode::Superseded => {
                    tracing::info!(stream, peer = %peer, producer = %producer, "closing the connection: {}", close.reason)
                }
                _ => {
                    tracing::warn!(stream, peer = %peer, producer = %producer, code = close.code.name(), "closing the connection: {}; nothing of the offending frame was stored", close.reason)
                }
            }
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

struct Conn {
    peer: SocketAddr,
    /// The producer's id and entry, once the HELLO was read.
    producer: Option<(Box<[u8]>, Arc<Producer>)>,
    /// This connection's claim on the producer (the newest HELLO wins).
    generation: u64,
    buf: FrameBuffer,
    dec: ClientDecoder,
    out: Vec<u8>,
    /// The last ACK value sent.
    acked: u64,
}

impl Conn {
    async fn serve(
        &mut self,
        server: &Server,
        sock: &mut TcpStream,
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
    async fn process_buffered(
        &mut self,
        server: &Server,
        sock: &mut TcpStream,
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
    async fn read_more(
        &mut self,
        server: &Server,
        sock: &mut TcpStream,
        stop: &mut watch::Receiver<bool>,
        partial_since: Option<Instant>,
    ) -> Result<bool, Close> {
        let cfg = &server.cfg;
        let deadline = match partial_since {
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
                Ok(true)
            }
            Ok(Err(e)) => {
                let stream = server.ctx.stream_name();
                tracing::info!(stream, peer = %self.peer, error = %e, "connection error; {} bytes of an incomplete frame dropped", self.buf.data().len());
                Ok(false)
            }
        }
    }

    /// Why a read timed out: `read_timeout` for an incomplete frame or
    /// handshake (`partial`), else `idle_timeout`.
    fn timed_out(&self, cfg: &IngestConfig, partial: bool) -> Close {
        let reason = if partial {
            let secs = cfg.read_timeout.as_secs_f64();
            let state = if self.dec.greeted() {
                "a frame"
            } else {
                "the handshake"
            };
            format!(
                "{state} was not complete within {secs:.1} s (read_timeout); {} bytes of it were received and dropped",
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
        let stream = server.ctx.stream_name();
        let producer = self
            .producer
            .as_ref()
            .map_or_else(|| "(before HELLO)".into(), |(id, _)| show_id(id));
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
                ClientFrame::Hello { producer } => {
                    let Some(p) = server.table.get_or_insert(producer) else {
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
                    // A store of an older connection may be in flight: its
                    // records are dropped as duplicates if re-sent.
                    let next = p.published.load(Ordering::Acquire);
                    self.acked = next;
                    self.out.clear();
                    encode_welcome(&mut self.out, next, &server.cfg.limits);
                    self.producer = Some((producer.into(), p));
                }
                ClientFrame::Data(d) => {
                    let id = self.producer.as_ref().map_or(&[][..], |(id, _)| &id[..]);
                    let mut records = Vec::with_capacity(d.count as usize);
                    for (i, r) in d.records().enumerate() {
                        let start = batch.len();
                        encode_stored(&mut batch, id, d.first_seq + i as u64, r);
                        records.push(start..batch.len());
                    }
                    frames.push(PendingFrame {
                        first_seq: d.first_seq,
                        records,
                    });
                }
            }
            self.buf.consume(n);
        }
    }

    /// Stores the new records of `frames` (duplicates dropped, a gap
    /// refused) and sends one cumulative ACK (plus a pending WELCOME).
    async fn store_and_ack(
        &mut self,
        server: &Server,
        sock: &mut TcpStream,
        frames: &[PendingFrame],
        batch: &[u8],
    ) -> Result<(), Close> {
        let (next, gap) = {
            let producer = self.producer.as_ref().map(|(_, p)| p.clone());
            let generation = self.generation;
            let Some(p) = producer else {
                return Err(Close::new(ErrorCode::OutOfOrder, "DATA before HELLO"));
            };
            tokio::task::block_in_place(|| store_frames(server, &p, generation, frames, batch))?
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
    async fn send(&mut self, sock: &mut TcpStream, server: &Server) -> Result<(), Close> {
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

/// Under the producer's lock: checks ownership, drops duplicates, refuses a
/// gap, stores the rest (in WAL-sized appends), and advances the table.
/// Returns the producer's next expected sequence and, for a gap, the
/// reason to close (frames before it are stored).
fn store_frames(
    server: &Server,
    p: &Producer,
    generation: u64,
    frames: &[PendingFrame],
    batch: &[u8],
) -> Result<(u64, Option<Close>), Close> {
    let mut next = lock(&p.next);
    if p.generation.load(Ordering::Acquire) != generation {
        return Err(Close::new(
            ErrorCode::Superseded,
            "this producer connected again; the newer connection is used",
        ));
    }
    let mut expected = *next;
    let mut slices: Vec<&[u8]> = Vec::new();
    let mut gap = None;
    for f in frames {
        if f.first_seq > expected {
            gap = Some(Close::new(
                ErrorCode::SequenceGap,
                format!(
                    "sequence gap: expected {expected}, the DATA frame starts at {} ({} records missing); nothing of it was stored",
                    f.first_seq,
                    f.first_seq - expected
                ),
            ));
            break;
        }
        let skip = (expected - f.first_seq) as usize;
        for r in f.records.iter().skip(skip) {
            slices.push(&batch[r.clone()]);
        }
        expected = expected.max(f.first_seq + f.records.len() as u64);
    }
    let mut stored = 0usize;
    while stored < slices.len() {
        let mut bytes = 0usize;
        let mut end = stored;
        while end < slices.len()
            && end - stored < server.append_records_max
            && (end == stored || bytes + slices[end].len() <= server.append_bytes_max)
        {
            bytes += slices[end].len();
            end += 1;
        }
        match server.ctx.store(&slices[stored..end]) {
            Ok(_) => {}
            Err(ReceiverError::Stopping) => {
                // What was stored so far stays; the table says so.
                p.advance(&mut next, expected - (slices.len() - stored) as u64);
                return Err(Close::new(
                    ErrorCode::Stopping,
                    "the server is stopping; reconnect later",
                ));
            }
            Err(e) => {
                p.advance(&mut next, expected - (slices.len() - stored) as u64);
                let msg = format!("storing records failed: {e}");
                *lock(&server.fatal) = Some(msg.clone());
                return Err(Close::new(ErrorCode::Storage, msg));
            }
        }
        stored = end;
        // Durable now: later frames' checks see it at once.
        p.advance(&mut next, expected - (slices.len() - stored) as u64);
    }
    p.advance(&mut next, expected);
    Ok((*next, gap))
}

/// Checks the limits against the WAL's.
pub(super) fn check_config(stream: &str, cfg: &IngestConfig, wal: &Wal) -> Result<(), IngestError> {
    let bad = |what: String| IngestError::Config {
        stream: stream.into(),
        what,
    };
    cfg.limits.validate().map_err(bad)?;
    if cfg.connections_max == 0 || cfg.producers_max == 0 {
        return Err(bad(
            "connections_max and producers_max must be at least 1".into()
        ));
    }
    if cfg.idle_timeout.is_zero() || cfg.read_timeout.is_zero() {
        return Err(bad("idle_timeout and read_timeout must be positive".into()));
    }
    let need = cfg.limits.record_bytes_max as usize
        + stored_header_bytes(cfg.limits.producer_id_bytes_max);
    let wal_max = wal.config().record_bytes_max as usize;
    if wal_max < need {
        return Err(bad(format!(
            "the WAL's record_bytes_max ({wal_max}) must hold record_bytes_max ({}) plus the {}-byte stored header: at least {need}",
            cfg.limits.record_bytes_max,
            need - cfg.limits.record_bytes_max as usize
        )));
    }
    Ok(())
}
