//! The reliable ingest server: producers connect over TCP, say who they
//! are, learn the next sequence number expected from them, send numbered
//! records, and get cumulative acknowledgements only after the records are
//! durable in the stream's WAL. Protocol: `docs/ingest-protocol.md`.
//!
//! Owns the listener and its connections (a tokio runtime inside
//! [`Receiver::run`], 2 worker threads), the producer table (producer id →
//! next expected sequence) with its snapshot file
//! `DATA_DIR/wal/<name>.producers`, and the stored-record header that lets
//! the table be rebuilt from the WAL after a crash.
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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

use super::ingest_proto::{
    decode_snapshot, decode_stored, encode_ack, encode_error, encode_snapshot, encode_stored,
    encode_welcome, stored_header_bytes, ClientDecoder, ClientFrame, ErrorCode, FrameBuffer,
    Limits, ProtoError,
};
use super::{Receiver, ReceiverContext, ReceiverError};
use crate::dstream::{BoxError, DStream};
use crate::wal::Wal;

/// How often the accept loop checks for a stop (the trait asks for 100 ms).
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long a closing connection may take to accept its ERROR frame.
const ERROR_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `stop` waits for connections to finish before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the ingest server (setup, recovery, snapshot).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("ingest stream `{stream}`: {what}")]
    Config { stream: String, what: String },
    #[error("ingest stream `{stream}`: could not listen on {addr}: {source}")]
    Listen {
        stream: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest stream `{stream}`: reading {}: {source}", path.display())]
    SnapshotIo {
        stream: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest stream `{stream}`: {}: {source}; move it aside only if you accept that producers' old records may be stored again", path.display())]
    SnapshotCorrupt {
        stream: String,
        path: PathBuf,
        #[source]
        source: ProtoError,
    },
    #[error("ingest stream `{stream}`: the WAL starts at record {first_lsn} but the producer table snapshot {} covers only records below {covered}: records were deleted without being reflected in it, so duplicates could not be recognised. Restore the snapshot from a backup, or move the WAL directory aside to start this stream afresh", path.display())]
    SnapshotBehind {
        stream: String,
        path: PathBuf,
        first_lsn: u64,
        covered: u64,
    },
    #[error("ingest stream `{stream}`: record {lsn} of its WAL is not an ingest record ({source}); is another stream using the name?")]
    NotIngest {
        stream: String,
        lsn: u64,
        #[source]
        source: ProtoError,
    },
    #[error("ingest stream `{stream}`: saving the producer table: {source}")]
    SnapshotWrite {
        stream: String,
        #[source]
        source: crate::sink::SinkError,
    },
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
}

/// Configuration of one ingest server.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Where to listen (bind port 0 for an ephemeral port; see
    /// [`IngestStream::local_addr`]).
    pub listen_addr: SocketAddr,
    pub limits: Limits,
    pub connections_max: usize,
    pub producers_max: usize,
    pub idle_timeout: Duration,
    pub read_timeout: Duration,
    /// Rate limit of this stream (records/s), or the context's default.
    pub records_per_second_max: Option<u64>,
}

impl IngestConfig {
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

/// What `ingest_stream_with` returns: the records and where it listens.
pub struct IngestStream<T> {
    pub stream: DStream<T>,
    pub local_addr: SocketAddr,
}

/// One producer's entry: the next sequence number expected and which
/// connection owns it (the newest HELLO wins).
struct Producer {
    /// Held while a connection checks and stores this producer's frames
    /// (possibly waiting on backpressure): the critical section that makes
    /// each sequence number stored at most once.
    next: Mutex<u64>,
    /// The value of `next`, readable without waiting for that section (for
    /// WELCOME and the snapshot; a stale value is safe, see `save_before_release`).
    published: AtomicU64,
    generation: AtomicU64,
}

impl Producer {
    fn new(next: u64) -> Arc<Producer> {
        Arc::new(Producer {
            next: Mutex::new(next),
            published: AtomicU64::new(next),
            generation: AtomicU64::new(0),
        })
    }

    /// Raises `next` (held by the caller) to `v` and publishes it.
    fn advance(&self, next: &mut u64, v: u64) {
        *next = (*next).max(v);
        self.published.store(*next, Ordering::Release);
    }
}

/// The producer table and its snapshot.
struct ProducerTable {
    stream: String,
    map: Mutex<HashMap<Box<[u8]>, Arc<Producer>>>,
    producers_max: usize,
    snapshot_path: PathBuf,
    /// WAL records below this are reflected in the saved snapshot; the lock
    /// also serialises snapshot writes.
    covered: Mutex<u64>,
    wal: Arc<Wal>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves consistent data (every update is one
    // assignment), so poisoning is not fatal.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A producer id for logs and messages: lossy UTF-8, quoted and escaped.
fn show_id(id: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(id))
}

impl ProducerTable {
    /// Loads the snapshot (if any) and scans the retained WAL after it.
    fn recover(
        stream: &str,
        wal: Arc<Wal>,
        snapshot_path: PathBuf,
        producers_max: usize,
    ) -> Result<ProducerTable, IngestError> {
        let mut map: HashMap<Box<[u8]>, u64> = HashMap::new();
        let covered = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snap = decode_snapshot(&bytes, producers_max.max(1) * 2).map_err(|source| {
                    IngestError::SnapshotCorrupt {
                        stream: stream.into(),
                        path: snapshot_path.clone(),
                        source,
                    }
                })?;
                for (id, next) in snap.entries {
                    map.insert(bytes[id].into(), next);
                }
                snap.covered_lsn
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(IngestError::SnapshotIo {
                    stream: stream.into(),
                    path: snapshot_path,
                    source,
                })
            }
        };
        let first = wal.first_lsn();
        if covered < first {
            return Err(IngestError::SnapshotBehind {
                stream: stream.into(),
                path: snapshot_path,
                first_lsn: first,
                covered,
            });
        }
        let scan_from = covered.min(wal.end());
        scan_into(stream, &wal, scan_from..wal.end(), &mut map)?;
        if map.len() > producers_max {
            tracing::warn!(stream, producers = map.len(), producers_max, "the recovered producer table holds more producers than producers_max; new producers are refused until it is raised");
        }
        tracing::info!(
            stream,
            producers = map.len(),
            scanned_from = scan_from,
            end = wal.end(),
            "recovered the ingest producer table"
        );
        let map = map
            .into_iter()
            .map(|(k, next)| (k, Producer::new(next)))
            .collect();
        Ok(ProducerTable {
            stream: stream.into(),
            map: Mutex::new(map),
            producers_max,
            snapshot_path,
            covered: Mutex::new(covered),
            wal,
        })
    }

    /// The producer's entry, created if new and there is room.
    fn get_or_insert(&self, id: &[u8]) -> Option<Arc<Producer>> {
        let mut map = lock(&self.map);
        if let Some(p) = map.get(id) {
            return Some(p.clone());
        }
        if map.len() >= self.producers_max {
            return None;
        }
        let p = Producer::new(0);
        map.insert(id.into(), p.clone());
        Some(p)
    }

    /// The release hook: before WAL segments below `end` are deleted, saves
    /// the table merged with a scan of the records since the last snapshot.
    /// The scan covers appends whose table update had not run yet (and
    /// published values that are stale), so every record below `end` is
    /// reflected. It never waits for a producer's lock: a store holding it
    /// may be waiting for this very release (backpressure).
    ///
    /// Returns how far segments may be deleted: the position the saved
    /// snapshot covers. When no segment is deletable now the snapshot is
    /// not rewritten (an fsync saved per batch) and the older bound is
    /// returned, so a segment sealed after this look is not deleted before
    /// a snapshot covers it.
    fn save_before_release(&self, end: u64) -> Result<u64, IngestError> {
        let mut covered = lock(&self.covered);
        if end <= *covered {
            return Ok(end);
        }
        let segs = self.wal.segments();
        let deletes = segs.len() > 1 && segs[0].2.is_some_and(|e| e <= end);
        if !deletes {
            return Ok(*covered);
        }
        let mut map: HashMap<Box<[u8]>, u64> = lock(&self.map)
            .iter()
            .map(|(k, p)| (k.clone(), p.published.load(Ordering::Acquire)))
            .collect();
        let from = (*covered).max(self.wal.first_lsn());
        let to = end.min(self.wal.end());
        if from < to {
            scan_into(&self.stream, &self.wal, from..to, &mut map)?;
        }
        let bytes = encode_snapshot(
            end,
            map.iter()
                .map(|(k, v)| (&k[..], *v))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        crate::sink::write_atomic(&self.snapshot_path, &bytes).map_err(|source| {
            IngestError::SnapshotWrite {
                stream: self.stream.clone(),
                source,
            }
        })?;
        *covered = end;
        Ok(end)
    }
}

/// Takes, per producer, the largest `seq + 1` among WAL records `range`.
fn scan_into(
    stream: &str,
    wal: &Wal,
    range: std::ops::Range<u64>,
    map: &mut HashMap<Box<[u8]>, u64>,
) -> Result<(), IngestError> {
    let mut bad = None;
    wal.read(range)?.for_each_ref(|lsn, rec| {
        if bad.is_some() {
            return;
        }
        match decode_stored(rec) {
            Ok(s) => {
                let next = s.seq.saturating_add(1);
                match map.get_mut(s.producer) {
                    Some(v) => *v = (*v).max(next),
                    None => {
                        map.insert(s.producer.into(), next);
                    }
                }
            }
            Err(source) => bad = Some((lsn, source)),
        }
    })?;
    match bad {
        None => Ok(()),
        Some((lsn, source)) => Err(IngestError::NotIngest {
            stream: stream.into(),
            lsn,
            source,
        }),
    }
}

/// The ingest server as a [`Receiver`]. Built by
/// [`crate::StreamingContext::ingest_stream_with`], which recovers its
/// producer table and registers the release hook before `start()`.
pub struct IngestServer {
    cfg: IngestConfig,
    listener: std::net::TcpListener,
    /// Filled in right after the stream is registered (recovery needs the
    /// stream's WAL, which registration opens), before `start()`.
    table: Arc<OnceLock<Arc<ProducerTable>>>,
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
        let cfg = &server.cfg;
        // Deadline of the frame (or handshake) being read.
        let mut partial_since = Some(Instant::now());
        loop {
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
            if self.buf.is_empty() && self.dec.greeted() {
                partial_since = None;
            } else if partial_since.is_none() {
                partial_since = Some(Instant::now());
            }
            let (deadline, what) = match partial_since {
                Some(t) => (t + cfg.read_timeout, "read_timeout"),
                None => (Instant::now() + cfg.idle_timeout, "idle_timeout"),
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
                Err(_) => {
                    let secs = match what {
                        "read_timeout" => cfg.read_timeout,
                        _ => cfg.idle_timeout,
                    }
                    .as_secs_f64();
                    let state = if self.dec.greeted() {
                        "a frame"
                    } else {
                        "the handshake"
                    };
                    return Err(Close::new(
                        ErrorCode::Timeout,
                        if what == "read_timeout" {
                            format!("{state} was not complete within {secs:.1} s ({what}); {} bytes of it were received and dropped", self.buf.data().len())
                        } else {
                            format!("no data for {secs:.1} s ({what})")
                        },
                    ));
                }
                Ok(Ok(0)) => {
                    if self.buf.is_empty() && self.dec.greeted() {
                        return Ok(());
                    }
                    // Nobody to send an ERROR to, but the log says it.
                    let n = self.buf.data().len();
                    let stream = server.ctx.stream_name();
                    let producer = self
                        .producer
                        .as_ref()
                        .map_or_else(|| "(before HELLO)".into(), |(id, _)| show_id(id));
                    tracing::warn!(stream, peer = %self.peer, producer = %producer, "the producer closed the connection in the middle of a frame; its {n} bytes were dropped, nothing of it was stored");
                    return Ok(());
                }
                Ok(Ok(n)) => self.buf.filled(n),
                Ok(Err(e)) => {
                    let stream = server.ctx.stream_name();
                    tracing::info!(stream, peer = %self.peer, error = %e, "connection error; {} bytes of an incomplete frame dropped", self.buf.data().len());
                    return Ok(());
                }
            }
        }
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
fn check_config(stream: &str, cfg: &IngestConfig, wal: &Wal) -> Result<(), IngestError> {
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

/// The snapshot file of stream `name`'s producer table.
fn snapshot_path(wal_dir: &Path) -> PathBuf {
    let mut name = wal_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".producers");
    wal_dir.with_file_name(name)
}

/// The stored record's payload (the DStream's view of an ingest record).
pub fn payload(bytes: &[u8]) -> Result<Vec<u8>, BoxError> {
    Ok(decode_stored(bytes)?.payload.to_vec())
}

/// The stored record's payload as UTF-8 text.
pub fn payload_utf8(bytes: &[u8]) -> Result<String, BoxError> {
    super::utf8(decode_stored(bytes)?.payload)
}

impl crate::StreamingContext {
    /// A stream of the records producers send to an ingest server listening
    /// on `listen_addr` (protocol: `docs/ingest-protocol.md`), with default
    /// limits. Each record is acknowledged to its producer after it is
    /// durable in `DATA_DIR/wal/<name>`, and is in exactly one batch.
    pub fn ingest_stream(
        &self,
        name: &str,
        listen_addr: SocketAddr,
    ) -> crate::Result<DStream<Vec<u8>>> {
        Ok(self
            .ingest_stream_with(name, IngestConfig::new(listen_addr), payload)?
            .stream)
    }

    /// [`StreamingContext::ingest_stream`] of UTF-8 records (a record that
    /// is not UTF-8 fails its batch, naming the WAL record).
    pub fn ingest_text_stream(
        &self,
        name: &str,
        listen_addr: SocketAddr,
    ) -> crate::Result<DStream<String>> {
        Ok(self
            .ingest_stream_with(name, IngestConfig::new(listen_addr), payload_utf8)?
            .stream)
    }

    /// The ingest server with its configuration and a decoder of payloads
    /// ([`payload`], [`payload_utf8`] or your own over the payload's bytes
    /// via [`payload`]). Binds the listener and recovers the producer table
    /// now, so errors show here and the bound address is known.
    pub fn ingest_stream_with<T: crate::dstream::Data>(
        &self,
        name: &str,
        cfg: IngestConfig,
        decode: fn(&[u8]) -> Result<T, BoxError>,
    ) -> crate::Result<IngestStream<T>> {
        if !cfg.listen_addr.ip().is_loopback() {
            tracing::warn!(stream = name, addr = %cfg.listen_addr, "the ingest server listens on a non-loopback address; it has no authentication");
        }
        let listener =
            std::net::TcpListener::bind(cfg.listen_addr).map_err(|source| IngestError::Listen {
                stream: name.into(),
                addr: cfg.listen_addr,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| IngestError::Listen {
                stream: name.into(),
                addr: cfg.listen_addr,
                source,
            })?;
        let slot: Arc<OnceLock<Arc<ProducerTable>>> = Arc::default();
        let server = IngestServer {
            cfg: cfg.clone(),
            listener,
            table: slot.clone(),
        };
        let (stream, shared) =
            self.receiver_stream_shared(name, Box::new(server), Arc::new(decode))?;
        let ctx = ReceiverContext::new(shared);
        check_config(name, &cfg, ctx.wal())?;
        let table = Arc::new(ProducerTable::recover(
            name,
            ctx.wal().clone(),
            snapshot_path(ctx.wal().dir()),
            cfg.producers_max,
        )?);
        let _ = slot.set(table.clone());
        // Registered before start(): no segment can be deleted before the
        // table that covers it is saved.
        let hook_table = table;
        ctx.set_release_hook(Box::new(move |end| {
            hook_table
                .save_before_release(end)
                .map_err(|e| -> BoxError { Box::new(e) })
        }));
        Ok(IngestStream { stream, local_addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalConfig;

    fn stored(seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        super::super::ingest_proto::encode_stored(&mut v, b"p", seq, &[b'x'; 600]);
        v
    }

    /// The race the hook's returned bound closes: the hook sees one active
    /// segment (nothing deletable, so no snapshot), then an append seals
    /// that segment exactly at the released position. Deleting below the
    /// released position would drop records no snapshot covers, and the
    /// next start would refuse with `SnapshotBehind`.
    #[test]
    fn a_segment_sealed_after_the_hook_looked_waits_for_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = WalConfig {
            segment_bytes_max: 4096,
            record_bytes_max: 1024,
            append_bytes_max: 1024,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.path().join("wal"), cfg).expect("open wal");
        let wal = Arc::new(wal);
        let snap = snapshot_path(wal.dir());
        let table = ProducerTable::recover("s", wal.clone(), snap.clone(), 10).expect("recover");
        let mut seq = 0;
        let raced = loop {
            assert!(seq < 100, "no segment roll after 100 records");
            let end = wal.end();
            let safe = table.save_before_release(end).expect("hook");
            wal.append(&[stored(seq)]).expect("append");
            seq += 1;
            let segs = wal.segments();
            if segs.len() == 2 && segs[0].2 == Some(end) {
                break (end, safe);
            }
        };
        let (end, safe) = raced;
        assert_eq!(
            safe, 0,
            "no snapshot was written, so nothing may be deleted"
        );
        assert_eq!(wal.remove_segments_below(safe).expect("cleanup"), 0);
        assert!(ProducerTable::recover("s", wal.clone(), snap.clone(), 10).is_ok());
        // The next release sees the sealed segment, saves, and lets it go.
        assert_eq!(table.save_before_release(end).expect("hook"), end);
        assert_eq!(wal.remove_segments_below(end).expect("cleanup"), 1);
        let again =
            ProducerTable::recover("s", wal.clone(), snap, 10).expect("recover from snapshot");
        let next = lock(&again.map)
            .get(&b"p"[..])
            .map(|p| p.published.load(Ordering::Acquire));
        assert_eq!(next, Some(seq));
    }
}
