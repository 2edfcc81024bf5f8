//! The ingest client behind `weir feed`: sends lines of a reader (a file or
//! standard input) to an ingest server as one producer, resumes after
//! disconnects and server restarts, and finishes only when every record is
//! acknowledged.
//!
//! Record `i` is line `i` of the input (from 0, the trailing `\n` or `\r\n`
//! removed), with sequence number `i`: so restarting `weir feed` with the
//! same input and producer id resumes where the server is (its WELCOME
//! says which line comes next; earlier lines are read and skipped).
//!
//! Limits: at most `window_records_max` (default 65536) records and
//! `window_bytes_max` (default 16 MiB) of record bytes are held unacknowledged
//! in memory, the only copy kept (a reconnect re-sends them from there, so
//! standard input works too); a line is at most `line_bytes_max` (default
//! 64 KiB, lowered to the server's `record_bytes_max`), read with a bounded
//! buffer; a longer line fails the feed once the lines before it are
//! acknowledged. After a failure it reconnects with doubling backoff
//! (`backoff_initial` 50 ms to `backoff_max` 2 s) and gives up when
//! `retry_time_max` (default 120 s) passes with no new acknowledgement.
//!
//! With [`FeedConfig::tls`] every connection is TLS and with
//! [`FeedConfig::token`] it shows the token before its HELLO
//! (`client_conn.rs`); a refused certificate or token ends the feed at
//! once (a retry would fail the same way).
//!
//! Must never: report success before the server acknowledged every record,
//! hold unbounded input, connect anywhere the caller did not name, or send
//! the token in plain text to an address off this machine.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::client_conn::{connect, ended_by, Conn, Ended, FromServer, ServerLimits, Session};
pub use super::client_conn::{FeedTls, FeedToken};
use super::proto::{
    encode_data, ErrorCode, ServerFrame, FRAME_HEADER_BYTES, PRODUCER_ID_WIRE_MAX,
};

/// The input's read buffer.
const INPUT_BUFFER_BYTES: usize = 64 << 10;

/// What went wrong feeding an ingest server.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Reading the input failed; the lines before it were still sent and
    /// acknowledged.
    #[error("reading the input failed at line {line}: {source}")]
    Input {
        /// The line being read (from 0; also its sequence number).
        line: u64,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A line is longer than the record limit; the lines before it were
    /// still sent and acknowledged.
    #[error("line {line} is longer than {max} bytes (the record limit); split it or raise the server's record_bytes_max")]
    LineTooLong {
        /// The line (from 0; also its sequence number).
        line: u64,
        /// The limit in bytes: the smaller of `line_bytes_max` and the
        /// server's `record_bytes_max`.
        max: usize,
    },
    /// The server refused a record its stream cannot process (for a text
    /// stream: a line that is not valid UTF-8); the lines before it were
    /// acknowledged, nothing of it or after it.
    #[error("the server refused line {} of the input (record {line}): {message}. The lines before it are acknowledged; fix or remove that line and run the feed again: it resumes there", line + 1)]
    InvalidRecord {
        /// The refused line (from 0; also its sequence number).
        line: u64,
        /// The server's reason.
        message: String,
    },
    /// The server answered with an ERROR whose code is not worth retrying
    /// (or unknown to this version).
    #[error("the server refused producer `{producer}` with {name} (code {code}): {message}")]
    Refused {
        /// The producer id this feed sent.
        producer: String,
        /// The ERROR frame's code byte.
        code: u8,
        /// The code's name (`"sequence_gap"`, ...), `"unknown"` if this
        /// version does not know it.
        name: &'static str,
        /// The server's reason.
        message: String,
    },
    /// No new acknowledgement arrived for `retry_time_max` while
    /// reconnecting; running the feed again resumes.
    #[error("gave up after {secs} s without a new acknowledgement (retry_time_max); last problem: {last}. {acked} records were acknowledged; run again to resume")]
    GaveUp {
        /// Seconds since the last new acknowledgement.
        secs: u64,
        /// Records acknowledged: every sequence number below this is
        /// durable on the server.
        acked: u64,
        /// Why the last connection ended.
        last: String,
    },
    /// The server expects a sequence number below one it already
    /// acknowledged: it lost acknowledged records (e.g. another data
    /// directory).
    #[error("the server expects sequence {expected} from producer `{producer}` but already acknowledged up to {acked}: it lost acknowledged records (a different data directory?)")]
    Regressed {
        /// The producer id this feed sent.
        producer: String,
        /// The next sequence number the server asked for (WELCOME or ACK).
        expected: u64,
        /// The sequence number below which the server had acknowledged
        /// every record.
        acked: u64,
    },
    /// The producer id is empty or longer than 255 bytes (the message says
    /// which).
    #[error("bad producer id: {0}")]
    Producer(String),
    /// The TLS handshake failed in a way a retry cannot fix (a certificate,
    /// a name, a client certificate the server refused, no TLS there).
    #[error("TLS with {addr} failed ({why}): {hint}")]
    Tls {
        /// The server's address.
        addr: SocketAddr,
        /// rustls's reason.
        why: String,
        /// What to look at, in words.
        hint: &'static str,
    },
    /// A TLS file (authority, client certificate or key) cannot be read.
    #[error("cannot read {what} {}: {source}; check the path and that this user may read it", path.display())]
    File {
        /// Which file (e.g. "the TLS authority file (--tls-ca)").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS file holds no usable certificate or key, or they do not match.
    #[error(transparent)]
    TlsFiles(Box<crate::net::TlsError>),
    /// A client certificate without its key, or the other way round.
    #[error("a client certificate needs its key: give --tls-cert and --tls-key together")]
    ClientCertificate,
    /// The server name is neither a DNS name nor an IP address.
    #[error("`{name}` is not a server name TLS can check: give a DNS name or an IP address (--tls-server-name)")]
    ServerName {
        /// The name given.
        name: String,
    },
    /// The token cannot be used (its text is never shown).
    #[error("the token from {from} cannot be used: {why}")]
    Token {
        /// Where it came from ("the file ...", "WEIR_TOKEN").
        from: String,
        /// What is wrong with it.
        why: String,
    },
    /// A token would travel in plain text to a server off this machine.
    #[error("refusing to send the token in plain text to {addr}, off this machine: connect with TLS (--tls-ca FILE)")]
    Plaintext {
        /// The server's address.
        addr: SocketAddr,
    },
    /// The server requires a token and this feed sent none.
    #[error("the server at {addr} requires a token and this feed sent none: give --token-file FILE or set WEIR_TOKEN (a token of the server's tokens_file)")]
    TokenMissing {
        /// The server's address.
        addr: SocketAddr,
    },
    /// The server does not accept the token this feed sent.
    #[error("the server at {addr} does not accept this feed's token (forbidden): it is not in the server's tokens_file; check --token-file or WEIR_TOKEN")]
    TokenRefused {
        /// The server's address.
        addr: SocketAddr,
    },
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing.
    Quiet,
    /// A bar redrawn in place (for a terminal).
    Bar,
    /// One plain line per `progress_interval` (for logs and pipes).
    Lines,
}

/// Settings of one feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The producer id sent in HELLO (1 to 255 bytes of UTF-8); the server
    /// tracks sequence numbers per id, so a rerun must use the same one.
    pub producer: String,
    /// Most records held unacknowledged (default 65536).
    pub window_records_max: usize,
    /// Most record bytes held unacknowledged (default 16 MiB); reading
    /// stops once the window holds this many.
    pub window_bytes_max: usize,
    /// Longest line in bytes, without its line ending (default 64 KiB;
    /// lowered to the server's `record_bytes_max`).
    pub line_bytes_max: usize,
    /// Records per DATA frame at most (also capped by the server's limit).
    pub frame_records_max: usize,
    /// Wait before the first reconnect (default 50 ms); doubles after
    /// each failed one and starts over once a connection got new acks.
    pub backoff_initial: Duration,
    /// Longest wait between reconnects (default 2 s).
    pub backoff_max: Duration,
    /// How long reconnecting may go on without a new acknowledgement
    /// before the feed gives up (default 120 s).
    pub retry_time_max: Duration,
    /// Connect, handshake and blocked-write timeout.
    pub io_timeout: Duration,
    /// How progress is shown on standard error (default quiet).
    pub progress: Progress,
    /// Least time between two progress lines (default 1 s); the bar uses
    /// this or 200 ms, whichever is shorter.
    pub progress_interval: Duration,
    /// Input size in bytes if known (a file), for the bar's percentage.
    pub input_bytes: Option<u64>,
    /// TLS to the server (None: plain TCP).
    pub tls: Option<FeedTls>,
    /// The bearer token sent in an AUTH frame before the HELLO (None:
    /// none). Without TLS only to an address on this machine.
    pub token: Option<FeedToken>,
}

impl FeedConfig {
    /// The defaults for producer id `producer`: a window of 65536 records
    /// or 16 MiB, 1024 records a frame, backoff 50 ms to 2 s, give up
    /// after 120 s without progress, 30 s I/O timeout, no progress output.
    pub fn new(producer: impl Into<String>) -> Self {
        FeedConfig {
            producer: producer.into(),
            window_records_max: 65_536,
            window_bytes_max: 16 << 20,
            line_bytes_max: 64 << 10,
            frame_records_max: 1024,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            retry_time_max: Duration::from_secs(120),
            io_timeout: Duration::from_secs(30),
            progress: Progress::Quiet,
            progress_interval: Duration::from_secs(1),
            input_bytes: None,
            tls: None,
            token: None,
        }
    }
}

/// What a finished feed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedReport {
    /// Lines in the input (= the sequence number after the last).
    pub records: u64,
    /// Records this run sent and got acknowledged (lines the server
    /// already had when it started are not counted).
    pub records_sent: u64,
    /// Lines skipped because the server already had them.
    pub records_skipped: u64,
    /// Connections made (1 without failures).
    pub connections: u64,
}

/// An unacknowledged record: its sequence, bytes, and the input offset
/// just after its line (for progress).
struct Pending {
    seq: u64,
    bytes: Vec<u8>,
    end_offset: u64,
}

/// The input, line by line with a bounded buffer.
struct Lines<R> {
    r: BufReader<R>,
    next_seq: u64,
    offset: u64,
    eof: bool,
}

impl<R: Read> Lines<R> {
    /// Whether a line can be started without waiting for the input.
    fn has_buffered(&self) -> bool {
        !self.r.buffer().is_empty()
    }

    /// The next line (without its line ending) into `out`, or `false` at
    /// the end. A line longer than `max` is an error, found without
    /// buffering more than `max + 2` bytes of it.
    fn next_line(&mut self, out: &mut Vec<u8>, max: usize) -> Result<bool, FeedError> {
        out.clear();
        if self.eof {
            return Ok(false);
        }
        let line = self.next_seq;
        let io = |source| FeedError::Input { line, source };
        loop {
            let buf = self.r.fill_buf().map_err(io)?;
            if buf.is_empty() {
                self.eof = true;
                if out.is_empty() {
                    return Ok(false);
                }
                break;
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            // +2: room for the "\r\n" a line of exactly `max` bytes ends in.
            if out.len() + take > max + 2 {
                return Err(FeedError::LineTooLong { line, max });
            }
            out.extend_from_slice(&buf[..take]);
            self.r.consume(take);
            self.offset += take as u64;
            if done {
                break;
            }
        }
        if out.last() == Some(&b'\n') {
            out.pop();
            if out.last() == Some(&b'\r') {
                out.pop();
            }
        }
        if out.len() > max {
            return Err(FeedError::LineTooLong { line, max });
        }
        self.next_seq += 1;
        Ok(true)
    }
}

/// The feed's state across connections.
struct Feed<R> {
    /// The server's address.
    addr: SocketAddr,
    cfg: FeedConfig,
    input: Lines<R>,
    window: VecDeque<Pending>,
    window_bytes: usize,
    /// Every record below this is acknowledged.
    acked: u64,
    /// Bytes of input up to the last acknowledged line (progress).
    acked_offset: u64,
    report: FeedReport,
    /// The first sequence this run had to send (after skipping).
    first_sent: Option<u64>,
    last_progress: Instant,
    started: Instant,
    last_drawn: Option<Instant>,
    /// The input's failure, reported once the lines before it are
    /// acknowledged.
    input_error: Option<FeedError>,
}

impl<R: Read> Feed<R> {
    fn producer(&self) -> &[u8] {
        self.cfg.producer.as_bytes()
    }

    /// Applies a cumulative ack.
    fn ack(&mut self, next: u64) {
        while self.window.front().is_some_and(|p| p.seq < next) {
            if let Some(p) = self.window.pop_front() {
                self.window_bytes -= p.bytes.len();
                self.acked_offset = p.end_offset;
            }
        }
        if next > self.acked {
            self.acked = next;
            self.last_progress = Instant::now();
        }
        self.show_progress(false);
    }

    /// Reconciles the window with the server's expected sequence after a
    /// (re)connect.
    fn resume_at(&mut self, expected: u64, limits: &ServerLimits) -> Result<(), FeedError> {
        if expected < self.acked {
            return Err(FeedError::Regressed {
                producer: self.cfg.producer.clone(),
                expected,
                acked: self.acked,
            });
        }
        self.ack(expected);
        // The server has lines this run has not read yet: skip them.
        let mut line = Vec::new();
        while self.input.next_seq < expected {
            let max = self.cfg.line_bytes_max.min(limits.record_bytes_max);
            if !self.input.next_line(&mut line, max)? {
                break;
            }
            self.report.records_skipped += 1;
            self.acked_offset = self.input.offset;
        }
        self.acked = self.acked.max(expected.min(self.input.next_seq));
        Ok(())
    }

    fn window_full(&self) -> bool {
        self.window.len() >= self.cfg.window_records_max
            || self.window_bytes >= self.cfg.window_bytes_max
    }

    fn done(&self) -> bool {
        self.input.eof && self.window.is_empty()
    }

    /// Reads lines into the window (while there is room); the next frame is
    /// window entries `from..` the returned index.
    fn fill(&mut self, from: usize, limits: &ServerLimits) -> Result<usize, FeedError> {
        let frame_records = self
            .cfg
            .frame_records_max
            .min(limits.records_per_frame_max)
            .max(1);
        let max = self.cfg.line_bytes_max.min(limits.record_bytes_max);
        // Frame overhead: header, type, seq + count, then 4 bytes a record.
        let mut frame_bytes = FRAME_HEADER_BYTES + 13;
        let mut to = from;
        while to < self.window.len() && to - from < frame_records {
            let b = 4 + self.window[to].bytes.len();
            if frame_bytes + b > limits.frame_bytes_max + FRAME_HEADER_BYTES && to > from {
                return Ok(to);
            }
            frame_bytes += b;
            to += 1;
        }
        let mut line = Vec::new();
        while to - from < frame_records && !self.window_full() {
            // Send what is ready rather than wait for a slow input (a pipe
            // or terminal) to fill the frame.
            if to > from && !self.input.has_buffered() {
                break;
            }
            match self.input.next_line(&mut line, max) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    // Bad input: what was read before it is still sent and
                    // acknowledged, then the feed fails with this.
                    self.input_error = Some(e);
                    self.input.eof = true;
                    break;
                }
            }
            let b = 4 + line.len();
            let seq = self.input.next_seq - 1;
            if self.first_sent.is_none() {
                self.first_sent = Some(seq);
            }
            self.window_bytes += line.len();
            self.window.push_back(Pending {
                seq,
                bytes: std::mem::take(&mut line),
                end_offset: self.input.offset,
            });
            if frame_bytes + b > limits.frame_bytes_max + FRAME_HEADER_BYTES && to > from {
                break; // this record starts the next frame
            }
            frame_bytes += b;
            to += 1;
        }
        Ok(to)
    }

    /// One connection's life: send everything unacknowledged, process acks.
    fn run_conn(&mut self, addr: SocketAddr, session: &Session) -> Result<(), Ended> {
        let producer = self.producer().to_vec();
        let (mut conn, expected, limits) =
            connect(addr, &producer, self.cfg.io_timeout, session)?;
        self.report.connections += 1;
        self.resume_at(expected, &limits)?;
        let mut sent = 0usize; // window entries already sent on this connection
        let mut frame = Vec::new();
        loop {
            // Acks that have arrived.
            loop {
                match conn.rx.try_recv() {
                    Ok(m) => {
                        let before = self.window.len();
                        self.handle(m, &producer)?;
                        sent = sent.saturating_sub(before - self.window.len());
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(Ended::Retry("the connection's reader stopped".into()))
                    }
                }
            }
            if self.done() {
                return Ok(());
            }
            let to = self.fill(sent, &limits)?;
            if to > sent {
                frame.clear();
                let first = self.window[sent].seq;
                let recs: Vec<&[u8]> = self.window.range(sent..to).map(|p| &p.bytes[..]).collect();
                encode_data(&mut frame, first, &recs);
                if let Err(e) = conn.write_all(&frame) {
                    // The server may have closed with an ERROR that says why.
                    self.take_last_words(&conn, &producer)?;
                    return Err(Ended::Retry(format!("sending to {addr}: {e}")));
                }
                sent = to;
                continue;
            }
            if self.done() {
                return Ok(());
            }
            // Nothing to send (window full or input at its end): wait for acks.
            match conn.rx.recv_timeout(self.cfg.io_timeout) {
                Ok(m) => {
                    let before = self.window.len();
                    self.handle(m, &producer)?;
                    sent = sent.saturating_sub(before - self.window.len());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Ended::Retry(format!(
                        "no acknowledgement from {addr} within {} ms",
                        self.cfg.io_timeout.as_millis()
                    )))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Ended::Retry("the connection's reader stopped".into()))
                }
            }
        }
    }

    /// After a failed write: handles what the server sent before it closed
    /// (its ACKs and ERROR), waiting at most a second for the reader.
    fn take_last_words(&mut self, conn: &Conn, producer: &[u8]) -> Result<(), Ended> {
        let deadline = Instant::now() + self.cfg.io_timeout.min(Duration::from_secs(1));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match conn.rx.recv_timeout(left) {
                Ok(FromServer::Closed(_)) | Err(_) => return Ok(()),
                Ok(m) => self.handle(m, producer)?,
            }
        }
    }

    fn handle(&mut self, m: FromServer, producer: &[u8]) -> Result<(), Ended> {
        match m {
            FromServer::Frame(ServerFrame::Ack { next_seq }) => {
                if next_seq < self.acked {
                    return Err(Ended::Fatal(FeedError::Regressed {
                        producer: self.cfg.producer.clone(),
                        expected: next_seq,
                        acked: self.acked,
                    }));
                }
                self.ack(next_seq);
                Ok(())
            }
            // Records before the refused one were acknowledged first
            // (ACK then ERROR, in order), so it is the first unacknowledged.
            FromServer::Frame(ServerFrame::Error {
                code: Some(ErrorCode::InvalidRecord),
                message,
                ..
            }) => Err(Ended::Fatal(FeedError::InvalidRecord {
                line: self.acked,
                message,
            })),
            m => Err(ended_by(m, producer, self.addr, self.cfg.token.is_some())),
        }
    }

    /// Draws progress at most once per interval (and at the end).
    fn show_progress(&mut self, last: bool) {
        if self.cfg.progress == Progress::Quiet {
            return;
        }
        let now = Instant::now();
        let interval = match self.cfg.progress {
            Progress::Bar => self.cfg.progress_interval.min(Duration::from_millis(200)),
            _ => self.cfg.progress_interval,
        };
        if !last
            && self
                .last_drawn
                .is_some_and(|t| now.duration_since(t) < interval)
        {
            return;
        }
        self.last_drawn = Some(now);
        draw_progress(self, now, last);
    }
}

fn draw_progress<R>(f: &Feed<R>, now: Instant, last: bool) {
    let secs = now.duration_since(f.started).as_secs_f64().max(1e-3);
    let sent = f.acked.saturating_sub(f.first_sent.unwrap_or(f.acked));
    let rate = sent as f64 / secs;
    let mut err = std::io::stderr().lock();
    match (f.cfg.progress, f.cfg.input_bytes) {
        (Progress::Bar, total) => {
            const WIDTH: usize = 30;
            let frac = total.map_or(0.0, |t| {
                if t == 0 {
                    1.0
                } else {
                    (f.acked_offset as f64 / t as f64).min(1.0)
                }
            });
            let fill = (frac * WIDTH as f64) as usize;
            let pct = total.map_or(String::new(), |_| format!(" {:>3.0}%", frac * 100.0));
            let _ = write!(
                err,
                "\r[{}{}]{pct} {} records acknowledged, {:.0} records/s ",
                "#".repeat(fill),
                " ".repeat(WIDTH - fill),
                f.acked,
                rate
            );
            if last {
                let _ = writeln!(err);
            }
        }
        (_, total) => {
            let of = total.map_or(String::new(), |t| format!(" of {t}"));
            let _ = writeln!(
                err,
                "feed: {} records acknowledged ({} bytes{of} of input), {:.0} records/s, {} connections",
                f.acked, f.acked_offset, rate, f.report.connections
            );
        }
    }
    let _ = err.flush();
}

/// Sends every line of `input` to the ingest server at `addr` as producer
/// `cfg.producer`; returns when all are acknowledged.
pub fn feed<R: Read>(addr: SocketAddr, input: R, cfg: FeedConfig) -> Result<FeedReport, FeedError> {
    let id = cfg.producer.as_bytes();
    if id.is_empty() || id.len() > PRODUCER_ID_WIRE_MAX {
        return Err(FeedError::Producer(format!(
            "`{}` is {} bytes; a producer id is 1..={PRODUCER_ID_WIRE_MAX} bytes",
            cfg.producer,
            id.len()
        )));
    }
    let session = Session::new(cfg.tls.as_ref(), cfg.token.clone(), addr)?;
    let now = Instant::now();
    let mut f = Feed {
        addr,
        cfg,
        input: Lines {
            r: BufReader::with_capacity(INPUT_BUFFER_BYTES, input),
            next_seq: 0,
            offset: 0,
            eof: false,
        },
        window: VecDeque::new(),
        window_bytes: 0,
        acked: 0,
        acked_offset: 0,
        report: FeedReport::default(),
        first_sent: None,
        last_progress: now,
        started: now,
        last_drawn: None,
        input_error: None,
    };
    let mut backoff = f.cfg.backoff_initial;
    loop {
        let acked_before = f.acked;
        match f.run_conn(addr, &session) {
            Ok(()) => break,
            Err(Ended::Fatal(e)) => return Err(e),
            Err(Ended::Retry(why)) => {
                if f.acked > acked_before {
                    backoff = f.cfg.backoff_initial;
                }
                let waited = f.last_progress.elapsed();
                if waited >= f.cfg.retry_time_max {
                    return Err(FeedError::GaveUp {
                        secs: waited.as_secs(),
                        acked: f.acked,
                        last: why,
                    });
                }
                tracing::info!(addr = %addr, producer = %f.cfg.producer, acked = f.acked, "connection ended ({why}); reconnecting in {} ms", backoff.as_millis());
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(f.cfg.backoff_max);
            }
        }
    }
    f.show_progress(true);
    if let Some(e) = f.input_error.take() {
        return Err(e);
    }
    f.report.records = f.input.next_seq;
    f.report.records_sent = f.acked - f.first_sent.unwrap_or(f.acked).min(f.acked);
    Ok(f.report)
}
