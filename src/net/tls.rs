//! TLS for a listener: a rustls server configuration (TLS 1.3, the ring
//! provider) built from a certificate chain and a private key in PEM
//! files, optionally requiring client certificates signed by an authority
//! (mTLS), read again on demand ([`server_config`]); the PEM readers
//! ([`certificates`], [`private_key`]) also load the PostgreSQL sink's
//! client files (`sink/postgres_tls.rs`).
//!
//! Limits: each PEM file at most [`PEM_BYTES_MAX`] (1 MiB); TLS 1.3 only
//! (the rustls features the tree already builds).
//! Must never: log key material, or start without a certificate and key
//! that match.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
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

/// Reads `files` into a server configuration (HTTP/1.1 by ALPN).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("the TLS certificate file", &files.cert)?;
    let key = private_key("the TLS key file", &files.key)?;
    let refused = |why: String| TlsError::Refused {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why,
    };
    // ring, as async-nats builds it (no second crypto library); rustls
    // 0.23.48 deprecates it for lacking post-quantum key exchange, which
    // aws-lc-rs (a C build) would bring.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates("the TLS client CA file", ca)? {
                roots.add(c).map_err(|e| TlsError::Pem {
                    what: "the TLS client CA file",
                    path: ca.clone(),
                    expected: "usable certificate authority",
                    why: e.to_string(),
                })?;
            }
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
