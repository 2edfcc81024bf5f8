//! TLS of a socket text stream: [`SocketTls`] (the CA file that verifies
//! the server, the name verified, an optional client certificate), read
//! once into a [`Connector`] when the receiver is built; the handshake
//! over a connected TCP stream, bounded by `connect_timeout`
//! ([`handshake`]); the stream that then reads plaintext with the plain
//! socket's read rules ([`TlsReader`]); and every way a connection can
//! fail, in user words ([`ConnectError`]), for the receiver's last error
//! and its log.
//!
//! Verified: the server's chain leads to an authority of `ca_file`, the
//! certificate is within its dates, and it holds the server name (the
//! `server_name` given, else the host part of the address: a DNS name or
//! an IP address in its subjectAltName), by webpki through rustls. TLS 1.3
//! only (the rustls features the tree builds). weir authenticates itself
//! only with a client certificate, sent when the server asks (mTLS).
//!
//! Limits: each PEM file at most 1 MiB (`crate::net::tls`), read once when
//! the receiver is built (replaced files take effect at the next start);
//! the handshake takes at most `connect_timeout` after the TCP connect.
//! Must never: read a byte of the server's text before its certificate is
//! verified, fall back to plain TCP when TLS fails, or log key material.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection, StreamOwned};

use super::ReceiverError;
use crate::net::tls::{client_config, ClientIdentity};

/// TLS to the text server (`SocketConfig::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketTls {
    /// PEM authorities the server's certificate chain must lead to.
    pub ca_file: PathBuf,
    /// The name the server's certificate must hold (a DNS name or an IP
    /// address); None: the host part of the stream's address.
    pub server_name: Option<String>,
    /// weir's own certificate, sent when the server asks for one (mTLS).
    pub client_cert: Option<ClientCert>,
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl SocketTls {
    /// TLS verified against the authorities of `ca_file`, the name taken
    /// from the address, no client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> SocketTls {
        SocketTls {
            ca_file: ca_file.into(),
            server_name: None,
            client_cert: None,
        }
    }

    /// The name verified: `server_name`, else the host of `addr`.
    pub fn name_for<'a>(&'a self, addr: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or_else(|| host_of(addr))
    }

    /// The TLS settings in words, for `weir check`.
    pub fn describe(&self, addr: &str) -> String {
        let mut s = format!(
            "TLS 1.3, verifying the authority ({}) and the name \"{}\"",
            self.ca_file.display(),
            self.name_for(addr)
        );
        if let Some(c) = &self.client_cert {
            s.push_str(&format!(
                ", client certificate {}",
                c.cert_file.display()
            ));
        }
        s
    }

    /// Reads the files as the receiver of stream `stream` reaching `addr`
    /// will when it is built (`weir check`).
    pub fn check_files(&self, stream: &str, addr: &str) -> Result<(), ReceiverError> {
        self.connector(stream, addr).map(|_| ())
    }

    /// Reads the files into the connector of a stream reaching `addr`.
    pub(super) fn connector(&self, stream: &str, addr: &str) -> Result<Connector, ReceiverError> {
        let shown = self.name_for(addr).to_string();
        let name = ServerName::try_from(shown.clone()).map_err(|e| ReceiverError::Config {
            stream: stream.to_string(),
            message: format!(
                "the TLS server name \"{shown}\" cannot be verified ({e}); set tls_server_name (SocketTls::server_name) to the DNS name or IP address the server's certificate holds"
            ),
        })?;
        let identity = self.client_cert.as_ref().map(|c| ClientIdentity {
            cert_what: "the socket source's client certificate (tls_cert_file)",
            cert: &c.cert_file,
            key_what: "the socket source's client key (tls_key_file)",
            key: &c.key_file,
        });
        let config = client_config(
            "the socket source's CA file (tls_ca_file)",
            &self.ca_file,
            identity,
        )
        .map_err(|e| ReceiverError::TlsFiles {
            stream: stream.to_string(),
            source: Box::new(e),
        })?;
        Ok(Connector {
            config: Arc::new(config),
            name,
            shown,
            ca_file: self.ca_file.clone(),
        })
    }
}

/// The host part of `host:port` (`[v6]:port` without brackets).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

/// A loaded TLS client: its configuration and the name it verifies.
#[derive(Clone)]
pub(super) struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    shown: String,
    ca_file: PathBuf,
}

/// Why a connection to the text server failed; every one is retried with
/// backoff.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP: refused, unreachable, a name that does not resolve.
    #[error("cannot connect to {addr}: {source}; is the server running and listening there?")]
    Tcp {
        /// The server's address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificate's chain leads to no authority of the CA file.
    #[error("the TLS certificate of {addr} is not signed by an authority in {} (tls_ca_file), so weir refused it; give the CA file of the authority that signed the server's certificate", ca_file.display())]
    UnknownAuthority {
        /// The server's address.
        addr: String,
        /// The CA file.
        ca_file: PathBuf,
    },
    /// The certificate does not hold the name verified.
    #[error("the TLS certificate of {addr} is not for the name \"{name}\", so weir refused it; set tls_server_name to a name its certificate holds (the default is the address's host), or connect by that name")]
    WrongName {
        /// The server's address.
        addr: String,
        /// The name verified.
        name: String,
    },
    /// The certificate is expired or not yet valid.
    #[error("the TLS certificate of {addr} is {when}, so weir refused it; renew the server's certificate, or check this machine's clock")]
    Dates {
        /// The server's address.
        addr: String,
        /// "expired" or "not valid yet".
        when: &'static str,
    },
    /// The server sent an alert: it refused the handshake.
    #[error("the server {addr} refused the TLS handshake: {why}")]
    Refused {
        /// The server's address.
        addr: String,
        /// The alert, in words, with what to do.
        why: String,
    },
    /// The server closed the connection during the handshake.
    #[error("the server {addr} closed the connection during the TLS handshake; check that it speaks TLS on that port, and whether it requires a client certificate (tls_cert_file and tls_key_file)")]
    Closed {
        /// The server's address.
        addr: String,
    },
    /// The handshake did not finish in time.
    #[error("the TLS handshake with {addr} did not finish within {ms} ms (connect_timeout); check that the server speaks TLS on that port")]
    TimedOut {
        /// The server's address.
        addr: String,
        /// The limit.
        ms: u64,
    },
    /// The receiver is stopping; the handshake was abandoned.
    #[error("the TLS handshake with {addr} was abandoned: the stream is stopping")]
    Stopped {
        /// The server's address.
        addr: String,
    },
    /// Anything else: not TLS, not TLS 1.3, a broken certificate.
    #[error("the TLS handshake with {addr} failed: {why}; check that the server speaks TLS 1.3 on that port with a valid certificate")]
    Failed {
        /// The server's address.
        addr: String,
        /// rustls's or the OS's reason.
        why: String,
    },
}

impl ConnectError {
    /// Whether TLS, not TCP, failed.
    pub fn is_tls(&self) -> bool {
        !matches!(self, ConnectError::Tcp { .. })
    }

    /// The TLS failure behind `e`, if it is one; `addr` and `c` name the
    /// server and what was verified.
    pub(super) fn from_tls(e: &std::io::Error, addr: &str, c: &Connector) -> Option<ConnectError> {
        let addr = addr.to_string();
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())?;
        Some(match tls {
            rustls::Error::InvalidCertificate(ce) => match ce {
                CertificateError::UnknownIssuer => ConnectError::UnknownAuthority {
                    addr,
                    ca_file: c.ca_file.clone(),
                },
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => ConnectError::WrongName {
                    addr,
                    name: c.shown.clone(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    ConnectError::Dates {
                        addr,
                        when: "expired",
                    }
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    ConnectError::Dates {
                        addr,
                        when: "not valid yet",
                    }
                }
                other => ConnectError::Failed {
                    addr,
                    why: format!("its certificate was refused ({other})"),
                },
            },
            rustls::Error::AlertReceived(a) => ConnectError::Refused {
                addr,
                why: alert_words(*a),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                ConnectError::Failed {
                    addr,
                    why: "the server did not answer in TLS (a plain-text server?)".into(),
                }
            }
            rustls::Error::PeerIncompatible(_) => ConnectError::Failed {
                addr,
                why: "the server does not speak TLS 1.3".into(),
            },
            other => ConnectError::Failed {
                addr,
                why: other.to_string(),
            },
        })
    }
}

/// A TLS alert in words, with what to do.
fn alert_words(a: AlertDescription) -> String {
    match a {
        AlertDescription::CertificateRequired => "it requires a client certificate: give tls_cert_file and tls_key_file, signed by an authority it trusts".into(),
        AlertDescription::BadCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::AccessDenied => "it does not accept weir's client certificate (tls_cert_file): check that an authority it trusts signed it, and its dates".into(),
        AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity => {
            "it shares no TLS 1.3 settings with weir; it must offer TLS 1.3".into()
        }
        AlertDescription::UnrecognisedName => "it has no certificate for the name weir asked for: set tls_server_name to one of its names".into(),
        other => format!("TLS alert number {}", u8::from(other)),
    }
}

/// A TLS stream to the text server that reads like the plain socket: a
/// read waits at most the socket's read timeout (then `WouldBlock` or
/// `TimedOut`), and fills the buffer with what has already arrived, so it
/// comes back short only when nothing more is queued (TLS records are at
/// most 16 KiB; the receiver stores on a short read).
pub(super) struct TlsReader {
    tls: StreamOwned<ClientConnection, TcpStream>,
    /// The socket could not be made blocking again: the next read fails
    /// with this (and the receiver reconnects).
    broken: Option<std::io::Error>,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        let mut n = self.tls.read(buf)?;
        if n == 0 || n == buf.len() || self.tls.sock.set_nonblocking(true).is_err() {
            return Ok(n);
        }
        // What is already here, without waiting; an error or the end
        // recurs on the next read, after these bytes are handled.
        while n < buf.len() {
            match self.tls.read(&mut buf[n..]) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        self.broken = self.tls.sock.set_nonblocking(false).err();
        Ok(n)
    }
}

/// The TLS handshake with the server over `tcp`, within `timeout`,
/// abandoned within `read_timeout` once `stopping()`; the stream then
/// reads with `read_timeout`.
pub(super) fn handshake(
    c: &Connector,
    mut tcp: TcpStream,
    addr: &str,
    (timeout, read_timeout): (Duration, Duration),
    stopping: &dyn Fn() -> bool,
) -> Result<TlsReader, ConnectError> {
    let failed = |e: std::io::Error| match ConnectError::from_tls(&e, addr, c) {
        Some(t) => t,
        None if e.kind() == ErrorKind::UnexpectedEof => ConnectError::Closed {
            addr: addr.to_string(),
        },
        None => ConnectError::Failed {
            addr: addr.to_string(),
            why: e.to_string(),
        },
    };
    let mut conn = ClientConnection::new(c.config.clone(), c.name.clone()).map_err(|e| {
        ConnectError::Failed {
            addr: addr.to_string(),
            why: e.to_string(),
        }
    })?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ConnectError::TimedOut {
                addr: addr.to_string(),
                ms: timeout.as_millis() as u64,
            });
        }
        if stopping() {
            return Err(ConnectError::Stopped {
                addr: addr.to_string(),
            });
        }
        let wait = Some(left.min(read_timeout));
        tcp.set_read_timeout(wait).map_err(failed)?;
        tcp.set_write_timeout(wait).map_err(failed)?;
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    tcp.set_read_timeout(Some(read_timeout)).map_err(failed)?;
    // A write (a key update's answer) waits at most as long as a
    // handshake may.
    tcp.set_write_timeout(Some(timeout)).map_err(failed)?;
    Ok(TlsReader {
        tls: StreamOwned::new(conn, tcp),
        broken: None,
    })
}

/// A timed-out or interrupted wait, not a failure.
fn is_wait(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
