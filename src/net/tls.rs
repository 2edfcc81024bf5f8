//! TLS for a listener: a rustls server configuration (TLS 1.3, the ring
//! provider) built from a certificate chain and a private key in PEM
//! files, optionally requiring client certificates signed by an authority
//! (mTLS), read again on demand ([`server_config`]). And for a client:
//! the trust store of a CA file ([`trust_roots`]), an optional client
//! certificate ([`client_auth`]) and the whole configuration that verifies
//! the server's chain and name ([`client_config`]), used by the socket
//! source (`receiver/socket_tls.rs`) and, piece by piece, by the
//! PostgreSQL sink (`sink/postgres_tls.rs`), whose `verify-ca` mode checks
//! the chain alone.
//!
//! Limits: each PEM file at most [`PEM_BYTES_MAX`] (1 MiB); TLS 1.3 only
//! (the rustls features the tree already builds).
//! Must never: log key material, or start without a certificate and key
//! that match.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::{WantsClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ConfigBuilder, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;

/// Largest PEM file read, in bytes.
pub const PEM_BYTES_MAX: u64 = 1 << 20;

/// The files of a TLS listener (paths already resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Authorities whose client certificates are required (mTLS), PEM.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_ca.clone());
        v
    }
}

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {what} {}: {source}; check the path (relative paths are from the pipeline file's directory) and that weir's user may read it", path.display())]
    Read {
        /// Which file (e.g. "the TLS certificate file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is larger than a PEM file may be.
    #[error("{what} {} is larger than {PEM_BYTES_MAX} bytes; give the PEM file itself", path.display())]
    TooLarge {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A file holds no usable PEM section of the kind needed.
    #[error("{what} {} holds no {expected}: {why}; give a PEM file (`-----BEGIN ...-----`), such as `openssl` writes", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for ("certificate", "private key").
        expected: &'static str,
        /// What was found instead.
        why: String,
    },
    /// rustls refused the certificate, key or authorities.
    #[error("the TLS files ({}, {}) cannot be used: {why}; check that the key belongs to the certificate and that the files are not damaged", cert.display(), key.display())]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        why: String,
    },
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    f.take(PEM_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > PEM_BYTES_MAX {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The certificates of a PEM file (at least one).
pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(what, path)?;
    let pem_err = |why: String| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        expected: "certificate",
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        expected: "private key",
        why: e.to_string(),
    })
}

/// The crypto provider of every TLS configuration in weir: ring, as
/// async-nats builds it (no second crypto library); rustls 0.23.48
/// deprecates it for lacking post-quantum key exchange, which aws-lc-rs
/// (a C build) would bring.
pub fn ring_provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The authorities of PEM file `path` (`what` names it in errors) as a
/// trust store.
pub fn trust_roots(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certificates(what, path)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            expected: "usable certificate authority",
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client's own certificate (mTLS): the chain and key files, and the
/// words errors name them by.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentity<'a> {
    /// Which file the chain is (e.g. "the PostgreSQL client certificate
    /// (tls_cert_file)").
    pub cert_what: &'static str,
    /// The certificate chain, leaf first (PEM).
    pub cert: &'a Path,
    /// Which file the key is.
    pub key_what: &'static str,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: &'a Path,
}

/// Finishes a client configuration with `identity`'s certificate, sent
/// when the server asks for one (mTLS), or with none.
pub fn client_auth(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Option<ClientIdentity<'_>>,
) -> Result<ClientConfig, TlsError> {
    let Some(id) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(id.cert_what, id.cert)?;
    let key = private_key(id.key_what, id.key)?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Refused {
            cert: id.cert.to_path_buf(),
            key: id.key.to_path_buf(),
            why: e.to_string(),
        })
}

/// A client configuration (TLS 1.3, ring) that verifies the server's
/// chain against the authorities of `ca` (`ca_what` names it) and its
/// name (webpki: the DNS name or IP address in the subjectAltName), with
/// `identity`'s certificate if given.
pub fn client_config(
    ca_what: &'static str,
    ca: &Path,
    identity: Option<ClientIdentity<'_>>,
) -> Result<ClientConfig, TlsError> {
    let roots = Arc::new(trust_roots(ca_what, ca)?);
    let refused = |why: String| TlsError::Pem {
        what: ca_what,
        path: ca.to_path_buf(),
        expected: "usable certificate authority",
        why,
    };
    let provider = ring_provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| refused(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| refused(e.to_string()))?
        .with_webpki_verifier(verifier);
    client_auth(builder, identity)
}

/// Reads `files` into a server configuration (HTTP/1.1 by ALPN).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("the TLS certificate file", &files.cert)?;
    let key = private_key("the TLS key file", &files.key)?;
    let refused = |why: String| TlsError::Refused {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why,
    };
    let provider = ring_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| refused(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = trust_roots("the TLS client CA file", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| refused(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| refused(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
