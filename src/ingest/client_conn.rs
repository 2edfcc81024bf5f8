//! One connection of `weir feed` (`super::client`): plain TCP or TLS
//! (rustls, TLS 1.3, the ring provider, the server's certificate checked
//! against the feed's authorities and server name, a client certificate
//! when given), the bearer token in an AUTH frame, the HELLO and its
//! WELCOME, and a reader thread that turns the server's bytes into frames.
//! Also the feed's TLS and token settings ([`FeedTls`], [`FeedToken`]).
//!
//! Limits: one server frame buffered (`8 + 2048` bytes) and, with TLS,
//! [`TLS_READ_BYTES`] (16 KiB) of ciphertext; the TLS handshake, every
//! write and the wait for WELCOME each within the feed's `io_timeout`; a
//! token 1 to 4096 bytes of visible ASCII, its file at most
//! [`TOKEN_FILE_BYTES_MAX`] (64 KiB).
//! Must never: send the token before the server's certificate was
//! verified (with TLS), show it in a message, a log or `Debug` output,
//! accept a token file others may read, or retry a TLS failure that a
//! retry cannot fix (a certificate or a name that does not match).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::client::FeedError;
use super::producers::lock;
use super::proto::{
    decode_server_frame, encode_auth, encode_hello, encode_preamble, ErrorCode, FrameBuffer,
    ServerFrame, FRAME_HEADER_BYTES, SERVER_FRAME_BYTES_MAX, TOKEN_WIRE_MAX,
};
use crate::net::tls::{certificates, private_key, TlsError};

/// Ciphertext read from the socket at once (a TLS record is at most 16 KiB
/// of plaintext).
pub const TLS_READ_BYTES: usize = 16 << 10;
/// Largest token file read, in bytes.
pub const TOKEN_FILE_BYTES_MAX: u64 = 64 << 10;

/// TLS settings of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedTls {
    /// The authorities the server's certificate must lead to (PEM).
    pub ca_file: PathBuf,
    /// A client certificate chain, leaf first (PEM), for a server that
    /// requires one (its `tls_client_ca_file`); with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must hold: a DNS name or an IP
    /// address (`weir feed` defaults it to the host it connects to).
    pub server_name: String,
}

/// A bearer token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedToken(String);

impl std::fmt::Debug for FeedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedToken(not shown)")
    }
}

impl FeedToken {
    /// A token from text (`from` says where it came from, for messages):
    /// surrounding white space removed, then 1 to 4096 bytes of visible
    /// ASCII.
    pub fn new(text: &str, from: &str) -> Result<FeedToken, FeedError> {
        let t = text.trim();
        let bad = |why: String| FeedError::Token {
            from: from.to_string(),
            why,
        };
        if t.is_empty() || t.len() > TOKEN_WIRE_MAX {
            return Err(bad(format!(
                "it has {} characters, not 1 to {TOKEN_WIRE_MAX}",
                t.len()
            )));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(
                "it holds spaces or characters other than visible ASCII; give the token alone".into(),
            ));
        }
        Ok(FeedToken(t.to_string()))
    }

    /// The token in the file at `path`: its whole text, trimmed. The file
    /// must be readable by its owner only (`chmod 600`).
    pub fn from_file(path: &Path) -> Result<FeedToken, FeedError> {
        use std::os::unix::fs::PermissionsExt;
        let from = format!("the file {}", path.display());
        let bad = |why: String| FeedError::Token {
            from: from.clone(),
            why,
        };
        let f = std::fs::File::open(path)
            .map_err(|e| bad(format!("it cannot be opened ({e}); check the path")))?;
        let mode = f
            .metadata()
            .map_err(|e| bad(format!("its permissions cannot be read ({e})")))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "others than its owner may read or write it (mode {:04o}); run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            )));
        }
        let mut bytes = Vec::new();
        f.take(TOKEN_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("it cannot be read ({e})")))?;
        if bytes.len() as u64 > TOKEN_FILE_BYTES_MAX {
            return Err(bad(format!(
                "it is larger than {TOKEN_FILE_BYTES_MAX} bytes; it holds the token alone"
            )));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not text".into()))?;
        FeedToken::new(text, &from)
    }
}

/// What every connection of one feed uses: the TLS configuration and the
/// name the server's certificate must hold, and the token.
pub(super) struct Session {
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    token: Option<FeedToken>,
}

impl Session {
    /// Reads the TLS files; refuses a token that would travel in plain
    /// text to an address off this machine.
    pub(super) fn new(
        tls: Option<&FeedTls>,
        token: Option<FeedToken>,
        addr: SocketAddr,
    ) -> Result<Session, FeedError> {
        if token.is_some() && tls.is_none() && !addr.ip().is_loopback() {
            return Err(FeedError::Plaintext { addr });
        }
        let tls = match tls {
            None => None,
            Some(t) => {
                let name = ServerName::try_from(t.server_name.clone()).map_err(|_| {
                    FeedError::ServerName {
                        name: t.server_name.clone(),
                    }
                })?;
                Some((client_config(t)?, name))
            }
        };
        Ok(Session { tls, token })
    }
}

/// A TLS file's error in the feed's words.
fn file_error(e: TlsError) -> FeedError {
    match e {
        TlsError::Read { what, path, source } => FeedError::File { what, path, source },
        other => FeedError::TlsFiles(Box::new(other)),
    }
}

/// The rustls client configuration of `t` (reads the files).
fn client_config(t: &FeedTls) -> Result<Arc<ClientConfig>, FeedError> {
    const CA: &str = "the TLS authority file (--tls-ca)";
    let refused = |why: String| {
        file_error(TlsError::Pem {
            what: CA,
            path: t.ca_file.clone(),
            expected: "usable certificate authority",
            why,
        })
    };
    let mut roots = RootCertStore::empty();
    for c in certificates(CA, &t.ca_file).map_err(file_error)? {
        roots.add(c).map_err(|e| refused(e.to_string()))?;
    }
    // ring, as the rest of weir (`crate::net::tls`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| refused(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&t.cert_file, &t.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain =
                certificates("the client certificate file (--tls-cert)", cert).map_err(file_error)?;
            let k = private_key("the client key file (--tls-key)", key).map_err(file_error)?;
            builder.with_client_auth_cert(chain, k).map_err(|e| {
                file_error(TlsError::Refused {
                    cert: cert.clone(),
                    key: key.clone(),
                    why: e.to_string(),
                })
            })?
        }
        _ => return Err(FeedError::ClientCertificate),
    };
    Ok(Arc::new(config))
}

/// Messages from a connection's reader thread.
pub(super) enum FromServer {
    Frame(ServerFrame),
    Closed(String),
    /// TLS failed after the handshake (e.g. the server refused the client
    /// certificate): not worth a retry.
    Tls(rustls::Error),
}

/// Where a connection's bytes go: the socket, or through TLS to it.
enum Out {
    Plain(TcpStream),
    Tls {
        sock: TcpStream,
        tls: Arc<Mutex<ClientConnection>>,
    },
}

impl Out {
    fn sock(&self) -> &TcpStream {
        match self {
            Out::Plain(s) | Out::Tls { sock: s, .. } => s,
        }
    }

    /// Writes `b` whole (within the socket's write timeout). With TLS the
    /// records are made under the lock and sent after it, so the reader
    /// thread is never kept waiting on a blocked write.
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(s) => s.write_all(b),
            Out::Tls { sock, tls } => {
                let records = {
                    let mut c = lock(tls);
                    c.writer().write_all(b)?;
                    let mut v = Vec::with_capacity(b.len() + 64);
                    while c.wants_write() {
                        c.write_tls(&mut v)?;
                    }
                    v
                };
                sock.write_all(&records)
            }
        }
    }
}

/// A live connection: writes go out, acks come from the reader thread.
pub(super) struct Conn {
    out: Out,
    pub(super) rx: mpsc::Receiver<FromServer>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Conn {
    pub(super) fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Out::Tls { tls, .. } = &self.out {
            // Best effort: a TLS close, so the server sees an orderly end.
            let mut c = lock(tls);
            c.send_close_notify();
            let mut v = Vec::new();
            while c.wants_write() && c.write_tls(&mut v).is_ok_and(|n| n > 0) {}
            drop(c);
            let mut sock = self.out.sock();
            let _ = sock.write_all(&v);
        }
        let _ = self.out.sock().shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// The plaintext side of a TLS connection, for the reader thread: reads
/// ciphertext from the socket without holding the lock.
struct TlsReader {
    sock: TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    raw: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Read for TlsReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            {
                let mut c = lock(&self.tls);
                match c.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    let n = c.read_tls(&mut &self.raw[self.start..self.end])?;
                    self.start += n;
                    c.process_new_packets()
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                    continue;
                }
                if self.eof {
                    return Ok(0);
                }
            }
            let n = self.sock.read(&mut self.raw)?;
            (self.start, self.end) = (0, n);
            if n == 0 {
                // The peer closed: rustls then says whether it was orderly.
                self.eof = true;
                lock(&self.tls).read_tls(&mut &[][..])?;
            }
        }
    }
}

/// The reader thread: frames from `r` until an ERROR, a bad frame or the
/// end of the connection.
fn read_frames(mut r: impl Read, tx: mpsc::Sender<FromServer>) {
    let mut buf = FrameBuffer::new(FRAME_HEADER_BYTES + SERVER_FRAME_BYTES_MAX as usize);
    loop {
        loop {
            match decode_server_frame(buf.data()) {
                Ok(None) => break,
                Ok(Some((f, n))) => {
                    buf.consume(n);
                    let last = matches!(f, ServerFrame::Error { .. });
                    if tx.send(FromServer::Frame(f)).is_err() || last {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(FromServer::Closed(format!(
                        "bad frame from the server: {e}"
                    )));
                    return;
                }
            }
        }
        match r.read(buf.spare()) {
            Ok(0) => {
                let _ = tx.send(FromServer::Closed(
                    "the server closed the connection".into(),
                ));
                return;
            }
            Ok(n) => buf.filled(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let m = match rustls_error(&e) {
                    Some(t) => FromServer::Tls(t.clone()),
                    None => FromServer::Closed(format!("reading from the server: {e}")),
                };
                let _ = tx.send(m);
                return;
            }
        }
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Limits the server announced.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServerLimits {
    pub(super) record_bytes_max: usize,
    pub(super) records_per_frame_max: usize,
    pub(super) frame_bytes_max: usize,
}

/// Why a connection ended (the feed decides whether to retry).
pub(super) enum Ended {
    Retry(String),
    Fatal(FeedError),
}

impl From<FeedError> for Ended {
    fn from(e: FeedError) -> Self {
        Ended::Fatal(e)
    }
}

/// Connects (TLS first when the session has it), sends the preamble, the
/// token and the HELLO, and waits for the WELCOME.
pub(super) fn connect(
    addr: SocketAddr,
    producer: &[u8],
    timeout: Duration,
    session: &Session,
) -> Result<(Conn, u64, ServerLimits), Ended> {
    let retry = |what: &str, e: std::io::Error| Ended::Retry(format!("{what} {addr}: {e}"));
    let sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| retry("connecting to", e))?;
    let _ = sock.set_nodelay(true);
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| retry("configuring", e))?;
    let reader_sock = sock
        .try_clone()
        .map_err(|e| retry("cloning the socket to", e))?;
    let (mut out, reader): (Out, Box<dyn Read + Send>) = match &session.tls {
        None => (Out::Plain(sock), Box::new(reader_sock)),
        Some((config, name)) => {
            let c = handshake(&sock, config, name, timeout, addr)?;
            let tls = Arc::new(Mutex::new(c));
            let r = TlsReader {
                sock: reader_sock,
                tls: tls.clone(),
                raw: vec![0u8; TLS_READ_BYTES].into_boxed_slice(),
                start: 0,
                end: 0,
                eof: false,
            };
            (Out::Tls { sock, tls }, Box::new(r))
        }
    };
    let mut hello = Vec::new();
    encode_preamble(&mut hello);
    if let Some(t) = &session.token {
        encode_auth(&mut hello, t.0.as_bytes());
    }
    encode_hello(&mut hello, producer);
    out.write_all(&hello).map_err(|e| retry("greeting", e))?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::Builder::new()
        .name("weir-feed-reader".into())
        .spawn(move || read_frames(reader, tx))
        .map_err(|e| retry("starting a reader thread for", e))?;
    let conn = Conn {
        out,
        rx,
        reader: Some(reader),
    };
    let welcome = conn.rx.recv_timeout(timeout);
    match welcome {
        Ok(FromServer::Frame(ServerFrame::Welcome {
            next_seq,
            record_bytes_max,
            records_per_frame_max,
            frame_bytes_max,
        })) => Ok((
            conn,
            next_seq,
            ServerLimits {
                record_bytes_max: record_bytes_max as usize,
                records_per_frame_max: (records_per_frame_max as usize).max(1),
                frame_bytes_max: frame_bytes_max as usize,
            },
        )),
        Ok(m) => Err(ended_by(m, producer, addr, session.token.is_some())),
        Err(_) => Err(Ended::Retry(format!(
            "no WELCOME from {addr} within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// The TLS handshake on `sock`, within `timeout`: a certificate, name or
/// protocol failure is fatal, a network one is retried.
fn handshake(
    sock: &TcpStream,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    timeout: Duration,
    addr: SocketAddr,
) -> Result<ClientConnection, Ended> {
    let fatal = |e: &rustls::Error| Ended::Fatal(tls_failure(addr, e));
    let mut c = ClientConnection::new(config.clone(), name.clone()).map_err(|e| fatal(&e))?;
    // Frames are handed over whole (the writer drains at once).
    c.set_buffer_limit(None);
    let io_err = |e: std::io::Error| Ended::Retry(format!("TLS handshake with {addr}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut io = sock;
    while c.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Ended::Retry(format!(
                "the TLS handshake with {addr} did not finish within {} ms",
                timeout.as_millis()
            )));
        }
        sock.set_read_timeout(Some(left)).map_err(io_err)?;
        if let Err(e) = c.complete_io(&mut io) {
            return Err(match rustls_error(&e) {
                Some(r) => fatal(r),
                None => io_err(e),
            });
        }
    }
    sock.set_read_timeout(None).map_err(io_err)?;
    Ok(c)
}

/// How a connection ended by a message other than the expected one.
pub(super) fn ended_by(m: FromServer, producer: &[u8], addr: SocketAddr, sent_token: bool) -> Ended {
    match m {
        FromServer::Frame(f) => server_said(f, producer, addr, sent_token),
        FromServer::Closed(why) => Ended::Retry(why),
        FromServer::Tls(e) => Ended::Fatal(tls_failure(addr, &e)),
    }
}

/// An unexpected frame or an ERROR from the server.
fn server_said(f: ServerFrame, producer: &[u8], addr: SocketAddr, sent_token: bool) -> Ended {
    let ServerFrame::Error {
        code,
        raw_code,
        message,
    } = f
    else {
        let what = match f {
            ServerFrame::Welcome { .. } => "a second WELCOME",
            ServerFrame::Ack { .. } => "an ACK",
            ServerFrame::Error { .. } => "an ERROR",
        };
        return Ended::Retry(format!("the server sent {what} where this feed expected an ERROR; reconnecting"));
    };
    match code {
        Some(c) if c.retryable() => Ended::Retry(format!("server: {} ({message})", c.name())),
        Some(ErrorCode::Unauthorized) if !sent_token => {
            Ended::Fatal(FeedError::TokenMissing { addr })
        }
        Some(ErrorCode::Forbidden) => Ended::Fatal(FeedError::TokenRefused { addr }),
        c => Ended::Fatal(FeedError::Refused {
            producer: String::from_utf8_lossy(producer).into_owned(),
            code: raw_code,
            name: c.map_or("unknown", ErrorCode::name),
            message,
        }),
    }
}

/// A TLS failure in words, with what to look at.
fn tls_failure(addr: SocketAddr, e: &rustls::Error) -> FeedError {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "the server's certificate is not signed by an authority in --tls-ca: give the authority that signed the server's tls_cert_file",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => "the server's certificate does not hold the name this feed checks: connect by a name or address in its subjectAltName, or give that name with --tls-server-name",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. }) => "the server's certificate is out of its validity dates: renew it, or check this machine's clock",
        E::InvalidCertificate(_) => "the server's certificate is refused: check it and --tls-ca",
        E::AlertReceived(A::CertificateRequired) => "the server requires a client certificate: give --tls-cert and --tls-key, signed by an authority in the server's tls_client_ca_file",
        E::AlertReceived(A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::AccessDenied | A::DecryptError) => "the server refused this feed's client certificate: it must be signed by an authority in the server's tls_client_ca_file",
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => "the server does not speak TLS: leave out --tls-ca for a listener without tls_cert_file, or check the address",
        E::AlertReceived(A::ProtocolVersion) | E::PeerIncompatible(_) => "the server and weir share no TLS version: weir speaks TLS 1.3 only",
        _ => "check --tls-ca, --tls-server-name and the server's TLS keys",
    };
    FeedError::Tls {
        addr,
        why: e.to_string(),
        hint,
    }
}
