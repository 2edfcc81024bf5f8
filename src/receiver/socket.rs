//! `socket_text_stream`: weir connects as a TCP client to a server that
//! writes newline-terminated text (Spark's `socketTextStream`), or records
//! ending at a delimiter of the user's (`SocketConfig::delimiter`, such as
//! the Spark tutorial's `__end`), and stores its lines in the stream's WAL.
//!
//! Guarantee (honest): a line is safe once `store` returned, i.e. once it is
//! fsynced in the WAL; from there it is processed exactly once. Lines the
//! server sent that weir had not yet logged when it died or stopped (at most
//! one store of `store_bytes_max`, plus what sat in the kernel's socket
//! buffers) are lost: a plain socket server cannot replay them. Use the
//! ingest server or a directory stream where that matters.
//!
//! Behaviour: the connection is retried with exponential backoff
//! (`backoff_initial` doubling to `backoff_max`) when the server refuses,
//! closes or breaks the connection; the backoff resets after a successful
//! connect. Line rules are those of `super::lines`: over-long lines are
//! dropped whole, counted and logged the moment they pass `line_bytes_max`
//! (a server that sends no delimiter at all shows at once, with a warning
//! naming the likely cause); invalid UTF-8 is replaced by U+FFFD. A server
//! that sends bytes but no delimiter for `unterminated_warn_after`
//! (default 10 s) is logged once per connection, and its receiver's last
//! error on the status page says so, long before a slow server's text
//! reaches `line_bytes_max`.
//! While the stream's backlog is full the receiver stops reading, so TCP
//! flow control pushes back on the server.
//!
//! TLS (`SocketConfig::tls`, `super::socket_tls`): the receiver connects
//! TCP, then does the TLS handshake within `connect_timeout`, verifying the
//! server's certificate (authority, dates, name), and reads lines over TLS
//! by the same rules. A TLS failure (an unknown authority, a wrong name,
//! a refused handshake, also an alert on the first read, as TLS 1.3
//! reports a refused client certificate) is a failed connect: counted,
//! retried with backoff, its reason the receiver's last error. A server
//! that ends TLS without its close (`close_notify`) broke the connection:
//! an unterminated last line is discarded, not stored cut short.
//!
//! Stores: the lines read so far are stored (one WAL append) when a read
//! comes back short (the socket had nothing more queued), when a store is
//! full, and when a read times out; so a line waits for at most one group
//! commit once the server stops writing for a moment.
//!
//! Limits: `line_bytes_max` (default 64 KiB, at most the WAL's
//! `record_bytes_max`), `delimiter` 1 to 64 bytes, one store holds at most `lines_per_store_max` lines
//! (default 16,384) and `store_bytes_max` bytes (default 1 MiB); reads are
//! 64 KiB; so the receiver holds at most about `store_bytes_max +
//! line_bytes_max + 64 KiB` of its own. A read waits at most 50 ms, so a stop
//! is noticed within about 100 ms.
//! Must never: grow a buffer past those limits, or read while the backlog is
//! full, or read a byte over TLS from a server whose certificate failed
//! verification. The context's constructors (`socket_text_stream[_with]`)
//! live in `crate::context`; this module never imports the context.

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lines::{log_nth, to_text, Line, LineSplitter};
pub use super::lines::DELIMITER_BYTES_MAX;
use super::socket_tls::{self, ConnectError, Connector, SocketTls};
use super::{
    sleep_unless_stopping, Receiver, ReceiverContext, ReceiverError, ReceiverState, STOP_POLL,
};
use crate::dstream::BoxError;

const READ_BYTES: usize = 64 << 10;
const READ_TIMEOUT: Duration = Duration::from_millis(50);

/// Settings of a socket text stream.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// Longest accepted line in bytes, without its delimiter.
    pub line_bytes_max: usize,
    /// What ends a record: 1 to [`DELIMITER_BYTES_MAX`] bytes. The default
    /// `b"\n"` also removes one `\r` before it (CRLF); any other
    /// delimiter is taken exactly, and the bytes between two delimiters are
    /// the record, nothing trimmed (the Spark tutorial's server ends each
    /// tweet with `" __end"`: `b"__end".to_vec()`).
    pub delimiter: Vec<u8>,
    /// Most lines in one WAL append.
    pub lines_per_store_max: usize,
    /// Most line bytes in one WAL append (at least 3 x `line_bytes_max`:
    /// invalid UTF-8 can triple a line).
    pub store_bytes_max: usize,
    /// First wait before reconnecting.
    pub backoff_initial: Duration,
    /// Longest wait between reconnects.
    pub backoff_max: Duration,
    /// Longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// This receiver's rate limit (lines/s), overriding the context's; a
    /// store then holds at most a tenth of a second's worth of lines.
    pub records_per_second_max: Option<u64>,
    /// How long the server may send bytes without a delimiter before the
    /// receiver warns (once per connection; the likely cause is a server
    /// that ends records otherwise).
    pub unterminated_warn_after: Duration,
    /// TLS to the server (None: plain TCP, fit only for a server on this
    /// machine; pipeline files refuse a server off it without TLS).
    pub tls: Option<SocketTls>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            line_bytes_max: 64 << 10,
            delimiter: b"\n".to_vec(),
            lines_per_store_max: 16_384,
            store_bytes_max: 1 << 20,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            records_per_second_max: None,
            unterminated_warn_after: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// Counters of a socket stream (monotonic).
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Successful connections.
    pub connects: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Lines durably stored.
    pub lines_stored: AtomicU64,
    /// Lines dropped for exceeding `line_bytes_max`, counted the moment
    /// their bytes pass it (before their delimiter arrives, if ever).
    pub lines_too_long: AtomicU64,
    /// Lines kept with invalid UTF-8 replaced by U+FFFD.
    pub lines_repaired: AtomicU64,
    /// Partial lines discarded because the connection broke.
    pub partial_lines_discarded: AtomicU64,
    /// Bytes read from the server.
    pub bytes_read: AtomicU64,
    /// Times a connection sent bytes but no delimiter for
    /// `unterminated_warn_after` (at most once per connection).
    pub unterminated_warnings: AtomicU64,
}

impl SocketStats {
    fn add(c: &AtomicU64, n: u64) -> u64 {
        c.fetch_add(n, Ordering::Relaxed) + n
    }
    /// A counter's current value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl SocketConfig {
    /// Checks the settings against each other and the stream's WAL limits.
    pub(crate) fn validate(
        &self,
        stream: &str,
        wal: &crate::wal::WalConfig,
    ) -> Result<(), ReceiverError> {
        let bad = |m: String| {
            Err(ReceiverError::Config {
                stream: stream.to_string(),
                message: m,
            })
        };
        let repaired = super::lines::repaired_bytes_max(self.line_bytes_max);
        if self.line_bytes_max == 0 || repaired > wal.record_bytes_max as usize {
            return bad(format!(
                "line_bytes_max {} must be 1..={} (a third of the WAL's record_bytes_max {}: invalid UTF-8 can triple a line)",
                self.line_bytes_max,
                wal.record_bytes_max / 3,
                wal.record_bytes_max
            ));
        }
        if self.delimiter.is_empty() || self.delimiter.len() > DELIMITER_BYTES_MAX {
            return bad(format!(
                "delimiter has {} bytes; it must have 1 to {DELIMITER_BYTES_MAX} (the default is a newline)",
                self.delimiter.len()
            ));
        }
        if self.lines_per_store_max == 0 || self.lines_per_store_max > wal.append_records_max {
            return bad(format!(
                "lines_per_store_max {} must be 1..={} (the WAL's append_records_max)",
                self.lines_per_store_max, wal.append_records_max
            ));
        }
        if self.store_bytes_max < repaired || self.store_bytes_max > wal.append_bytes_max {
            return bad(format!(
                "store_bytes_max {} must be between 3 x line_bytes_max ({repaired}: invalid UTF-8 can triple a line) and the WAL's append_bytes_max ({})",
                self.store_bytes_max, wal.append_bytes_max
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("backoff_initial must be positive and at most backoff_max".into());
        }
        if self.records_per_second_max == Some(0) {
            return bad("records_per_second_max must be positive (None for no limit)".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be positive: it bounds the TCP connect and the TLS handshake".into());
        }
        Ok(())
    }
}

struct SocketReceiver {
    addr: String,
    config: SocketConfig,
    stats: Arc<SocketStats>,
    /// The TLS client (None: plain TCP).
    tls: Option<Connector>,
}

/// Complete lines waiting for one store.
struct Pending {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Pending {
    fn push(&mut self, line: &[u8]) {
        self.data.extend_from_slice(line);
        self.ends.push(self.data.len());
    }

    /// Stores the pending lines as one append.
    fn flush(&mut self, ctx: &ReceiverContext, stats: &SocketStats) -> Result<(), ReceiverError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        let records: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&e| {
                let r = &self.data[start..e];
                start = e;
                r
            })
            .collect();
        ctx.store(&records)?;
        SocketStats::add(&stats.lines_stored, records.len() as u64);
        self.data.clear();
        self.ends.clear();
        Ok(())
    }
}

/// Since when the bytes held have waited for a delimiter (None: nothing
/// held, or a record completed since the last look), and whether this
/// connection reported a wait already.
struct Unterminated {
    since: Option<Instant>,
    warned: bool,
}

enum Ended {
    /// The server closed or broke the connection: reconnect.
    Reconnect,
    /// The server refused TLS after the handshake, before any text (TLS
    /// 1.3 reports a refused client certificate so): a failed connect.
    Refused(ConnectError),
    /// The context is stopping.
    Stop,
}

impl SocketReceiver {
    /// Handles one line event; false when the pending store is full.
    fn on_line(&self, ctx: &ReceiverContext, pending: &mut Pending, line: Line<'_>) -> bool {
        match line {
            Line::TooLong => self.too_long(ctx),
            Line::Text(t) => {
                let text = to_text(t);
                if let std::borrow::Cow::Owned(_) = text {
                    let n = SocketStats::add(&self.stats.lines_repaired, 1);
                    if log_nth(n) {
                        tracing::warn!(
                            stream = ctx.stream_name(),
                            server = %self.addr,
                            repaired_total = n,
                            "a line was not valid UTF-8; invalid bytes were replaced by U+FFFD and the line kept"
                        );
                    }
                }
                pending.push(text.as_bytes());
            }
        }
        self.has_room(pending)
    }

    /// Counts a line that passed `line_bytes_max` and logs it (the first
    /// ten, then every thousandth) with the likely cause.
    fn too_long(&self, ctx: &ReceiverContext) {
        let n = SocketStats::add(&self.stats.lines_too_long, 1);
        if !log_nth(n) {
            return;
        }
        let delimiter = delimiter_text(&self.config.delimiter);
        let cause = if self.config.delimiter == b"\n" {
            "no newline: the server may send records without a delimiter; set delimiter = \"...\" on the source (SocketConfig::delimiter in Rust) to what ends its records, such as \"__end\" for the Spark tutorial's server".to_string()
        } else {
            format!("no delimiter {delimiter}: check that the server ends every record with exactly these bytes")
        };
        tracing::warn!(
            source = %ctx.stream_name(),
            server = %self.addr,
            line_bytes_max = self.config.line_bytes_max,
            delimiter = %delimiter,
            dropped_total = n,
            "a line passed line_bytes_max without a delimiter; it is dropped, and the rest of it skipped up to the next delimiter. Likely cause: {cause}. (Longer lines need SocketConfig::line_bytes_max in Rust; pipeline files keep 64 KiB.)"
        );
    }

    /// Reads `conn` (its reads wait at most `READ_TIMEOUT`) until the
    /// server ends it or the context stops.
    fn serve(
        &self,
        mut conn: Box<dyn Read + Send>,
        ctx: &ReceiverContext,
    ) -> Result<Ended, ReceiverError> {
        let stream = ctx.stream_name().to_string();
        let mut got_bytes = false;
        let mut splitter =
            LineSplitter::with_delimiter(self.config.line_bytes_max, &self.config.delimiter);
        let mut pending = Pending {
            data: Vec::with_capacity(self.config.store_bytes_max),
            ends: Vec::new(),
        };
        let mut buf = vec![0u8; READ_BYTES];
        let mut unterminated = Unterminated {
            since: None,
            warned: false,
        };
        let stopping = |r: Result<(), ReceiverError>| match r {
            Err(ReceiverError::Stopping) => Ok(true),
            Err(e) => Err(e),
            Ok(()) => Ok(false),
        };
        loop {
            if ctx.is_stopping() {
                return Ok(Ended::Stop);
            }
            if ctx.backlog_full() {
                // Stop reading: the kernel buffers fill and TCP flow control
                // stops the server.
                if stopping(pending.flush(ctx, &self.stats))? {
                    return Ok(Ended::Stop);
                }
                ctx.wait_backlog_below(STOP_POLL);
                continue;
            }
            let n = match conn.read(&mut buf) {
                Ok(0) => {
                    splitter.finish(|l| {
                        self.on_line(ctx, &mut pending, l);
                        true
                    });
                    if stopping(pending.flush(ctx, &self.stats))? {
                        return Ok(Ended::Stop);
                    }
                    let why = format!("the server {} closed the connection", self.addr);
                    ctx.set_state(ReceiverState::Retrying, Some(&why));
                    tracing::info!(stream = %stream, server = %self.addr, "the server closed the connection; reconnecting");
                    return Ok(Ended::Reconnect);
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    // Nothing more right now: log what is complete.
                    if stopping(pending.flush(ctx, &self.stats))? {
                        return Ok(Ended::Stop);
                    }
                    self.check_unterminated(ctx, &splitter, &mut unterminated);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    if let Some(refused) = self.tls_refusal(&e, got_bytes) {
                        return Ok(Ended::Refused(refused));
                    }
                    if splitter.reset() {
                        SocketStats::add(&self.stats.partial_lines_discarded, 1);
                    }
                    if stopping(pending.flush(ctx, &self.stats))? {
                        return Ok(Ended::Stop);
                    }
                    let why = self.broke_words(&e);
                    ctx.set_state(ReceiverState::Retrying, Some(&why));
                    tracing::warn!(stream = %stream, server = %self.addr, "{why}; an unterminated last line was discarded; reconnecting");
                    return Ok(Ended::Reconnect);
                }
            };
            SocketStats::add(&self.stats.bytes_read, n as u64);
            got_bytes = true;
            let mut data = &buf[..n];
            while !data.is_empty() {
                let used = splitter.feed(data, |l| {
                    unterminated.since = None;
                    self.on_line(ctx, &mut pending, l)
                });
                data = &data[used..];
                if (!data.is_empty() || !self.has_room(&pending))
                    && stopping(pending.flush(ctx, &self.stats))?
                {
                    return Ok(Ended::Stop);
                }
            }
            // A short read means the socket had nothing more queued: store
            // what is complete now rather than wait to fill a store, so at a
            // moderate rate a line waits one group commit, not the time it
            // takes to fill 16,384 lines. At full speed reads come back full
            // and stores stay large.
            if n < buf.len() && stopping(pending.flush(ctx, &self.stats))? {
                return Ok(Ended::Stop);
            }
            self.check_unterminated(ctx, &splitter, &mut unterminated);
        }
    }

    /// Warns (once per connection) when bytes have waited for a delimiter
    /// longer than `unterminated_warn_after`.
    fn check_unterminated(&self, ctx: &ReceiverContext, splitter: &LineSplitter, u: &mut Unterminated) {
        if !splitter.holds_partial() {
            u.since = None;
            return;
        }
        let waited = u.since.get_or_insert_with(Instant::now).elapsed();
        if u.warned {
            return;
        }
        if waited < self.config.unterminated_warn_after {
            return;
        }
        u.warned = true;
        SocketStats::add(&self.stats.unterminated_warnings, 1);
        let delimiter = delimiter_text(&self.config.delimiter);
        let why = format!(
            "{} has sent bytes for {} s without the delimiter {delimiter}: nothing is stored until it comes. If the server ends records otherwise, set delimiter = \"...\" on the source (\"__end\" for the Spark tutorial's server)",
            self.addr,
            waited.as_secs()
        );
        ctx.set_state(ReceiverState::Connected, Some(&why));
        tracing::warn!(stream = ctx.stream_name(), server = %self.addr, delimiter = %delimiter, "{why}");
    }

    fn has_room(&self, p: &Pending) -> bool {
        p.ends.len() < self.config.lines_per_store_max
            && p.data.len() + super::lines::repaired_bytes_max(self.config.line_bytes_max)
                <= self.config.store_bytes_max
    }

    /// A TLS failure on a connection that has sent nothing yet: the
    /// server refused after the handshake (TLS 1.3 reports a refused
    /// client certificate on the first read).
    fn tls_refusal(&self, e: &std::io::Error, got_bytes: bool) -> Option<ConnectError> {
        let c = self.tls.as_ref().filter(|_| !got_bytes)?;
        ConnectError::from_tls(e, &self.addr, c)
    }

    /// Why the connection broke, in words.
    fn broke_words(&self, e: &std::io::Error) -> String {
        if self.tls.is_some() && e.kind() == ErrorKind::UnexpectedEof {
            return format!(
                "the server {} closed the connection without ending TLS (no close_notify)",
                self.addr
            );
        }
        format!("the connection to {} broke: {e}", self.addr)
    }

    /// Connects (TCP, then TLS where configured); reads then wait at most
    /// `READ_TIMEOUT`.
    fn connect(&self, ctx: &ReceiverContext) -> Result<Box<dyn Read + Send>, ConnectError> {
        let tcp_failed = |source| ConnectError::Tcp {
            addr: self.addr.clone(),
            source,
        };
        let tcp = self.connect_tcp().map_err(tcp_failed)?;
        match &self.tls {
            None => {
                tcp.set_read_timeout(Some(READ_TIMEOUT))
                    .map_err(tcp_failed)?;
                Ok(Box::new(tcp))
            }
            Some(c) => {
                let times = (self.config.connect_timeout, READ_TIMEOUT);
                let stopping = || ctx.is_stopping();
                let tls = socket_tls::handshake(c, tcp, &self.addr, times, &stopping)?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Counts and reports a failed connect, then waits `backoff`; true
    /// when the context stopped meanwhile.
    fn failed(&self, ctx: &ReceiverContext, e: &ConnectError, backoff: Duration) -> bool {
        let n = SocketStats::add(&self.stats.connect_failures, 1);
        let why = e.to_string();
        ctx.set_state(ReceiverState::Retrying, Some(&why));
        if log_nth(n) {
            let what = if e.is_tls() {
                "the TLS handshake with the text server failed; retrying"
            } else {
                "cannot connect to the text server; retrying"
            };
            tracing::warn!(
                stream = ctx.stream_name(),
                server = %self.addr,
                retry_in_ms = backoff.as_millis() as u64,
                failures_total = n,
                "{what}: {why}"
            );
        }
        sleep_unless_stopping(ctx, backoff)
    }

    fn connect_tcp(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for a in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, self.config.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(ErrorKind::NotFound, "the address resolved to nothing")
        }))
    }
}

impl Receiver for SocketReceiver {
    fn run(self: Box<Self>, ctx: ReceiverContext) -> Result<(), BoxError> {
        if self.config.records_per_second_max.is_some() {
            ctx.set_records_per_second_max(self.config.records_per_second_max);
        }
        let mut backoff = self.config.backoff_initial;
        ctx.set_state(ReceiverState::Connecting, None);
        while !ctx.is_stopping() {
            let refused = match self.connect(&ctx) {
                Ok(conn) => {
                    SocketStats::add(&self.stats.connects, 1);
                    ctx.set_state(ReceiverState::Connected, None);
                    tracing::info!(stream = ctx.stream_name(), server = %self.addr, tls = self.tls.is_some(), "connected");
                    match self.serve(conn, &ctx)? {
                        Ended::Stop => return Ok(()),
                        Ended::Reconnect => {
                            backoff = self.config.backoff_initial;
                            continue;
                        }
                        Ended::Refused(e) => e,
                    }
                }
                Err(ConnectError::Stopped { .. }) => return Ok(()),
                Err(e) => e,
            };
            if self.failed(&ctx, &refused, backoff) {
                return Ok(());
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        Ok(())
    }
}

/// A delimiter as the user writes it in quotes (`"__end"`, `"\\n"`).
fn delimiter_text(d: &[u8]) -> String {
    format!("\"{}\"", d.escape_ascii())
}

/// The receiver of a socket text stream reading from `addr`, and its
/// counters; `StreamingContext::socket_text_stream_with` (in
/// `crate::context`) registers it after [`SocketConfig::validate`]. Reads
/// the TLS files, if any: a missing or unusable file is an error naming
/// the stream.
pub(crate) fn receiver(
    stream: &str,
    addr: &str,
    config: SocketConfig,
) -> Result<(Box<dyn Receiver>, Arc<SocketStats>), ReceiverError> {
    let stats = Arc::new(SocketStats::default());
    let mut parts = receivers_with_stats(stream, addr, config, stats.clone(), 1)?;
    let r = parts.pop().ok_or_else(|| ReceiverError::Config {
        stream: stream.to_string(),
        message: "no receiver was built".into(),
    })?;
    Ok((r, stats))
}

/// `count` socket receivers counting into `stats` (the partitions of one
/// stream share theirs, and one TLS client: the files are read once).
pub(crate) fn receivers_with_stats(
    stream: &str,
    addr: &str,
    config: SocketConfig,
    stats: Arc<SocketStats>,
    count: usize,
) -> Result<Vec<Box<dyn Receiver>>, ReceiverError> {
    let mut config = config;
    if let Some(r) = config.records_per_second_max {
        // Stores no larger than the rate limit's burst, so the limit
        // spaces lines evenly instead of admitting one huge store.
        let burst = usize::try_from((r / 10).max(1)).unwrap_or(usize::MAX);
        config.lines_per_store_max = config.lines_per_store_max.min(burst);
    }
    let tls = match &config.tls {
        Some(t) => Some(t.connector(stream, addr)?),
        None => None,
    };
    Ok((0..count)
        .map(|_| {
            Box::new(SocketReceiver {
                addr: addr.to_string(),
                config: config.clone(),
                stats: stats.clone(),
                tls: tls.clone(),
            }) as Box<dyn Receiver>
        })
        .collect())
}
