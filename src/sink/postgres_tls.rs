//! TLS of the PostgreSQL sink: [`PgTls`] (the mode, with libpq's
//! `sslmode` values, and the PEM files), checked against the connection
//! string, loaded into a rustls client configuration (the ring provider,
//! as the rest of weir), and tokio-postgres' `MakeTlsConnect` over
//! tokio-rustls, written here (about 100 lines) rather than taken from the
//! `tokio-postgres-rustls` crate: no new crate in the tree.
//!
//! [`check_url`] holds the connection string and [`PgTls`] to one way of
//! asking for TLS: the url's own `sslmode` is refused.
//!
//! Modes: `disable`, plain TCP; `require` and `verify-ca`, the server's
//! certificate chain must lead to an authority of `ca_file` (libpq's
//! `require` checks nothing: weir's checks the chain, and `require`
//! without a CA file is refused); `verify-full`, that and the url's host
//! name (or address) in the certificate's subjectAltName. A client
//! certificate (`cert_file` and `key_file`) is sent when the server asks.
//! A certificate the server refuses, a chain or name that does not match,
//! or a server without TLS fails the connect at once, never retried
//! ([`tls_failure`]). Channel binding: none (SCRAM without `-PLUS`; the
//! verified certificate is what authenticates the server).
//!
//! Limits: each PEM file at most 1 MiB (`crate::net::tls`); TLS 1.3 only
//! (the rustls features the tree builds); the files are read once, when
//! the sink is built (replaced files take effect at the next start).
//! Must never: send a byte of the session over TLS without verifying the
//! server's chain, fall back to plain TCP when TLS fails, or log key
//! material.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Connection, NoTls, Socket};

use super::postgres::PostgresSinkError;
use crate::net::tls::{client_auth, ring_provider, trust_roots, ClientIdentity, TlsError};

/// How the sink uses TLS; the values of libpq's `sslmode` (without
/// `allow` and `prefer`, which may fall back to plain TCP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PgTlsMode {
    /// Plain TCP (or a unix socket).
    #[default]
    Disable,
    /// TLS, the chain checked against the CA file (as `VerifyCa`).
    Require,
    /// TLS, the chain checked against the CA file.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

impl PgTlsMode {
    /// The mode of its libpq name.
    pub fn parse(s: &str) -> Option<PgTlsMode> {
        Some(match s {
            "disable" => PgTlsMode::Disable,
            "require" => PgTlsMode::Require,
            "verify-ca" => PgTlsMode::VerifyCa,
            "verify-full" => PgTlsMode::VerifyFull,
            _ => return None,
        })
    }

    /// Its libpq name.
    pub fn name(self) -> &'static str {
        match self {
            PgTlsMode::Disable => "disable",
            PgTlsMode::Require => "require",
            PgTlsMode::VerifyCa => "verify-ca",
            PgTlsMode::VerifyFull => "verify-full",
        }
    }
}

/// The sink's TLS: the mode and its PEM files (paths as given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// The mode (default `Disable`).
    pub mode: PgTlsMode,
    /// The authorities the server's certificate must lead to (needed by
    /// every mode but `Disable`).
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain, leaf first (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl PgTls {
    /// `verify-full` against the authorities in `ca_file`.
    pub fn verify_full(ca_file: impl Into<PathBuf>) -> PgTls {
        PgTls {
            mode: PgTlsMode::VerifyFull,
            ca_file: Some(ca_file.into()),
            ..PgTls::default()
        }
    }

    /// Checks the mode and files against each other and the hosts of
    /// `pc`: the first mistake.
    pub(super) fn check(&self, pc: &tokio_postgres::Config) -> Option<Mistake> {
        let on = self.mode != PgTlsMode::Disable;
        if !on && (self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()) {
            return Some(("tls_mode", "\"disable\" with TLS files".into(), "\"verify-full\", \"verify-ca\" or \"require\" when tls_ca_file, tls_cert_file or tls_key_file is given (or remove the files)".into()));
        }
        if on && self.ca_file.is_none() {
            let found = format!("nothing, with tls_mode = \"{}\"", self.mode.name());
            return Some(("tls_ca_file", found, "the PEM file of the authority that signed the server's certificate: weir checks the server in every TLS mode (libpq's require does not). Give the CA file (require then checks it as verify-ca does), or use tls_mode = \"verify-full\" with it, which also checks the host name".into()));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            let (setting, other) = match self.cert_file {
                Some(_) => ("tls_key_file", "tls_cert_file"),
                None => ("tls_cert_file", "tls_key_file"),
            };
            return Some((
                setting,
                format!("nothing, with {other}"),
                "given together with it: a client certificate needs its key".into(),
            ));
        }
        let tcp =
            !pc.get_hosts().is_empty() && pc.get_hosts().iter().all(|h| matches!(h, Host::Tcp(_)));
        if on && !tcp {
            return Some(("url", "a unix socket or no host".into(), "host names or addresses (host=...) with TLS: TLS verifies the server by the name it is reached by; a unix socket is on this machine, use it without TLS".into()));
        }
        None
    }

    /// The TLS settings in words, for `weir check`.
    pub fn describe(&self) -> String {
        let file = |p: &Option<PathBuf>| {
            p.as_deref()
                .map_or(String::new(), |p| p.display().to_string())
        };
        match self.mode {
            PgTlsMode::Disable => "no TLS".into(),
            m => {
                let what = if m == PgTlsMode::VerifyFull {
                    "the authority and the host name"
                } else {
                    "the authority"
                };
                let mut s = format!("TLS {} ({what}: {})", m.name(), file(&self.ca_file));
                if self.cert_file.is_some() {
                    s.push_str(&format!(", client certificate {}", file(&self.cert_file)));
                }
                s
            }
        }
    }

    /// The rustls configuration, or None without TLS. Reads the files.
    pub fn load(&self) -> Result<Option<Arc<ClientConfig>>, PostgresSinkError> {
        let Some(ca) = self
            .ca_file
            .as_deref()
            .filter(|_| self.mode != PgTlsMode::Disable)
        else {
            return Ok(None);
        };
        let files = |e: TlsError| PostgresSinkError::TlsFiles(Box::new(e));
        const CA: &str = "the PostgreSQL CA file (tls_ca_file)";
        let refused = |why: String| {
            files(TlsError::Pem {
                what: CA,
                path: ca.to_path_buf(),
                expected: "usable certificate authority",
                why,
            })
        };
        let roots = Arc::new(trust_roots(CA, ca).map_err(files)?);
        let provider = ring_provider();
        let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| refused(e.to_string()))?;
        let algs = provider.signature_verification_algorithms;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| refused(e.to_string()))?;
        let builder = match self.mode {
            PgTlsMode::VerifyFull => builder.with_webpki_verifier(webpki),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly {
                    roots,
                    webpki,
                    algs,
                })),
        };
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity {
                cert_what: "the PostgreSQL client certificate (tls_cert_file)",
                cert,
                key_what: "the PostgreSQL client key (tls_key_file)",
                key,
            }),
            _ => None,
        };
        let mut config = client_auth(builder, identity).map_err(files)?;
        // As libpq 17 (needed by servers that take direct TLS).
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// A setting's mistake: (setting, found, expected).
pub(super) type Mistake = (&'static str, String, String);

/// Checks connection string `url` and `tls` together: the url parses,
/// leaves TLS to `tls` (no `sslmode`, no channel binding required), and
/// `tls` fits its hosts.
pub(super) fn check_url(url: &str, tls: &PgTls) -> Option<Mistake> {
    let pc = match url.parse::<tokio_postgres::Config>() {
        Err(e) => return Some(("url", "(not shown)".into(), format!("a connection string such as \"host=127.0.0.1 port=5432 user=weir dbname=app\" or \"postgresql://weir@127.0.0.1:5432/app\" ({e})"))),
        Ok(pc) => pc,
    };
    if url.contains("sslmode") || pc.get_ssl_mode() != SslMode::Prefer {
        return Some(("url", "with sslmode".into(), "a connection string without sslmode: TLS is set by tls_mode and tls_ca_file (PostgresSinkConfig::tls), which weir verifies (docs/security.md, PostgreSQL)".into()));
    }
    if pc.get_channel_binding() == tokio_postgres::config::ChannelBinding::Require {
        return Some(("url", "with channel_binding=require".into(), "a connection string without it: weir's TLS does no channel binding (it verifies the server's certificate instead)".into()));
    }
    tls.check(&pc)
}

/// Whether `host` (a name, an address, `[v6]`) is this machine.
fn loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The first server of connection string `url` off this machine (not a
/// unix socket, `localhost` or a loopback address; `hostaddr` where given
/// is where the connection goes), if any.
pub fn pg_off_machine_host(url: &str) -> Option<String> {
    let pc: tokio_postgres::Config = url.parse().ok()?;
    let (hosts, addrs) = (pc.get_hosts(), pc.get_hostaddrs());
    (0..hosts.len().max(addrs.len())).find_map(|i| match (addrs.get(i), hosts.get(i)) {
        (Some(a), _) => (!a.is_loopback()).then(|| a.to_string()),
        (None, Some(Host::Tcp(h))) => (!loopback(h)).then(|| h.clone()),
        _ => None,
    })
}

/// `verify-ca` (and weir's `require`): the chain, not the name.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    webpki: Arc<WebPkiServerVerifier>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// tokio-postgres' TLS maker over one rustls configuration.
#[derive(Clone)]
struct Rustls(Arc<ClientConfig>);

/// One handshake's connector and the name it verifies.
struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// A TLS session to the server.
struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl MakeTlsConnect<Socket> for Rustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Self::Error> {
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.0.clone()),
            name: ServerName::try_from(domain.to_string())?,
        })
    }
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let s = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(s))
        })
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Runs a connection's I/O until it ends.
fn spawn<T>(conn: Connection<Socket, T>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "PostgreSQL sink connection ended");
        }
    });
}

/// Connects with TLS by `tls` (None: plain TCP or a unix socket), its I/O
/// on the current runtime.
pub(super) async fn connect(
    pc: &mut tokio_postgres::Config,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Client, tokio_postgres::Error> {
    match tls {
        None => {
            pc.ssl_mode(SslMode::Disable);
            let (client, conn) = pc.connect(NoTls).await?;
            spawn(conn);
            Ok(client)
        }
        Some(config) => {
            // Require: a server without TLS is refused, never used plain.
            pc.ssl_mode(SslMode::Require);
            let (client, conn) = pc.connect(Rustls(config.clone())).await?;
            spawn(conn);
            Ok(client)
        }
    }
}

/// What to do about `e`, if it is a TLS failure that a retry does not
/// cure: a certificate refused either way, no common TLS version, a
/// server without TLS.
pub(super) fn tls_failure(e: &tokio_postgres::Error) -> Option<&'static str> {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let inner = s
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|i| i.downcast_ref::<rustls::Error>());
        if let Some(r) = s.downcast_ref::<rustls::Error>().or(inner) {
            return Some(hint(r));
        }
        // tokio-postgres' words (pinned) for a server that answered the
        // TLS request with "no".
        if s.to_string() == "server does not support TLS" {
            return Some("the server does not accept TLS: set ssl = on, ssl_cert_file and ssl_key_file in its postgresql.conf and reload it");
        }
        src = s.source();
    }
    None
}

fn hint(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => "the server's certificate is not signed by an authority in tls_ca_file: give the authority that signed the server's ssl_cert_file",
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => "the server's certificate does not name the host of url: connect by a name or address in its subjectAltName, or set tls_mode = \"verify-ca\" to check the authority only",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. }) => "the server's certificate is out of its validity dates: renew it, or check this machine's clock",
        E::InvalidCertificate(_) => "the server's certificate is refused: check it and tls_ca_file",
        E::AlertReceived(A::ProtocolVersion) | E::PeerIncompatible(_) => "the server and weir share no TLS version: weir speaks TLS 1.3 only (the server needs OpenSSL 1.1.1 or later and ssl_max_protocol_version unset or TLSv1.3)",
        E::AlertReceived(A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::CertificateUnknown | A::AccessDenied | A::DecryptError) => "the server refused weir's client certificate: give tls_cert_file and tls_key_file, signed by an authority in the server's ssl_ca_file",
        _ => "check tls_mode, tls_ca_file and the server's ssl settings",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_off_this_machine_are_found() {
        for url in [
            "host=127.0.0.1 user=weir",
            "host=localhost",
            "host=/var/run/postgresql",
            "postgresql://weir@[::1]:5432/app",
            "host=db.example hostaddr=127.0.0.1",
            "user=weir",
        ] {
            assert_eq!(pg_off_machine_host(url), None, "{url}");
        }
        for (url, host) in [
            ("host=db.example", "db.example"),
            ("host=127.0.0.1,10.0.0.5", "10.0.0.5"),
            ("postgresql://weir@10.1.2.3/app", "10.1.2.3"),
            ("host=localhost hostaddr=10.0.0.7", "10.0.0.7"),
        ] {
            assert_eq!(pg_off_machine_host(url).as_deref(), Some(host), "{url}");
        }
    }

    #[test]
    fn modes_and_files_go_together() {
        let pc: tokio_postgres::Config = "host=db".parse().expect("url");
        let ok = PgTls::verify_full("ca.pem");
        assert_eq!(ok.check(&pc), None);
        let mut t = ok.clone();
        t.mode = PgTlsMode::Require;
        t.ca_file = None;
        let (setting, _, expected) = t.check(&pc).expect("require without a CA");
        assert_eq!(setting, "tls_ca_file");
        assert!(expected.contains("verify-full"), "{expected}");
        let mut t = ok.clone();
        t.cert_file = Some("c.pem".into());
        assert_eq!(t.check(&pc).map(|e| e.0), Some("tls_key_file"));
        let mut t = ok.clone();
        t.mode = PgTlsMode::Disable;
        assert_eq!(t.check(&pc).map(|e| e.0), Some("tls_mode"));
        let unix: tokio_postgres::Config = "host=/run/postgresql".parse().expect("url");
        assert_eq!(ok.check(&unix).map(|e| e.0), Some("url"));
        assert_eq!(PgTls::default().check(&unix), None);
        assert_eq!(PgTlsMode::parse("verify-ca"), Some(PgTlsMode::VerifyCa));
        assert_eq!(PgTlsMode::parse("prefer"), None);
    }
}
