//! The keys of a source that listens for other hosts: TLS (certificate,
//! key, client authorities) and bearer tokens, read by one function
//! ([`listener`]) with one rule for relative paths (from the pipeline
//! file's directory) and one for an address off this machine (TLS and
//! tokens required), used by the `ingest` and `http` sources; and the
//! `http` source ([`http_source`]), HTTP ingest with its body and request
//! limits and its record format.
//!
//! Limits: a request body of 1 byte to `HTTP_BODY_BYTES_CEILING`
//! (256 MiB), 1 to `HTTP_RECORDS_PER_REQUEST_CEILING` (10 M) records per
//! request.
//! Must never: accept an address off this machine without TLS and
//! tokens, a key without its certificate, or client authorities without
//! TLS.

use std::net::SocketAddr;
use std::path::Path;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use super::model::SourceKind;
use crate::ingest::{HttpLimits, HTTP_BODY_BYTES_CEILING, HTTP_RECORDS_PER_REQUEST_CEILING};
use crate::net::{SecurityFiles, TlsFiles};

pub(super) const TLS_CERT_FILE: KeySpec = KeySpec::of(
    "tls_cert_file",
    KeyType::Text,
    "PEM certificate chain, leaf first: the listener then speaks only TLS 1.3; reloaded on SIGHUP or when it changes; relative paths are from this file's directory",
);
pub(super) const TLS_KEY_FILE: KeySpec = KeySpec::of(
    "tls_key_file",
    KeyType::Text,
    "the certificate's PEM private key (required with tls_cert_file)",
);
pub(super) const TLS_CLIENT_CA_FILE: KeySpec = KeySpec::of(
    "tls_client_ca_file",
    KeyType::Text,
    "PEM authorities: clients must present a certificate one of them signed (mTLS)",
);
pub(super) const TOKENS_FILE: KeySpec = KeySpec::of(
    "tokens_file",
    KeyType::Text,
    "`name token` lines (mode 600); every client then needs a token, and its name shows in logs and metrics (docs/security.md)",
);
pub(super) const BODY_BYTES_MAX: KeySpec = KeySpec::whole(
    "body_bytes_max",
    1,
    HTTP_BODY_BYTES_CEILING as i64,
    "largest request body in bytes; larger gets 413 (default 4194304)",
);
pub(super) const RECORDS_PER_REQUEST_MAX: KeySpec = KeySpec::whole(
    "records_per_request_max",
    1,
    HTTP_RECORDS_PER_REQUEST_CEILING as i64,
    "most records (lines) in one request; more gets 413 (default 100000)",
);
pub(super) const RECORD_FORMAT: KeySpec = KeySpec::of(
    "format",
    KeyType::Text,
    "\"text\" (default: any UTF-8 line) or \"json\" (each line one JSON value; a line that is not gets 400 naming it)",
);

/// The security files of a listening source; relative paths resolve
/// from `base`; off this machine TLS and tokens are required.
pub(super) fn listener(
    item: &Item<'_>,
    base: &Path,
    addr: SocketAddr,
) -> Result<SecurityFiles, ConfigError> {
    let path =
        |k: &KeySpec| -> Result<_, ConfigError> { Ok(item.string(k)?.map(|p| base.join(p))) };
    let (cert, key, client_ca) = (
        path(&TLS_CERT_FILE)?,
        path(&TLS_KEY_FILE)?,
        path(&TLS_CLIENT_CA_FILE)?,
    );
    let tokens = path(&TOKENS_FILE)?;
    let pair_error = match (&cert, &key, &client_ca) {
        (Some(_), None, _) => Some((
            TLS_KEY_FILE.name,
            "tls_cert_file alone",
            "add tls_key_file, the certificate's private key (PEM)",
        )),
        (None, Some(_), _) => Some((
            TLS_CERT_FILE.name,
            "tls_key_file alone",
            "add tls_cert_file, the certificate chain (PEM)",
        )),
        (None, None, Some(_)) => Some((
            TLS_CERT_FILE.name,
            "tls_client_ca_file without TLS",
            "client certificates need TLS: add tls_cert_file and tls_key_file",
        )),
        _ => None,
    };
    if let Some((k, found, hint)) = pair_error {
        return Err(item.err(
            item.span(),
            k,
            "tls_cert_file and tls_key_file together",
            Some(found.into()),
            hint,
        ));
    }
    let files = SecurityFiles {
        tls: match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca,
            }),
            _ => None,
        },
        tokens,
    };
    if let Some(missing) = missing_for(&files, addr) {
        return Err(item.err(
            item.span(),
            "address",
            "a loopback address, or TLS and tokens for an address off this machine",
            Some(format!("\"{addr}\" without {missing}")),
            format!("add {missing} (a listener off this machine needs tls_cert_file, tls_key_file and tokens_file; docs/security.md), or listen on 127.0.0.1"),
        ));
    }
    Ok(files)
}

/// The key a listener on `addr` with `files` still needs (None: none).
pub(super) fn missing_for(files: &SecurityFiles, addr: SocketAddr) -> Option<&'static str> {
    if addr.ip().is_loopback() {
        None
    } else if files.tls.is_none() {
        Some(TLS_CERT_FILE.name)
    } else if files.tokens.is_none() {
        Some(TOKENS_FILE.name)
    } else {
        None
    }
}

/// An `http` source: where it listens, its TLS and tokens, its limits and
/// format.
pub(super) fn http_source(item: &Item<'_>, base: &Path) -> Result<SourceKind, ConfigError> {
    let (address, rate_max) = super::sources::receiver(item, true)?;
    let security = listener(item, base, address)?;
    let mut http = HttpLimits::default();
    if let Some(n) = item.positive(&BODY_BYTES_MAX)? {
        http.body_bytes_max = n as usize;
    }
    if let Some(n) = item.positive(&RECORDS_PER_REQUEST_MAX)? {
        http.records_per_request_max = n as usize;
    }
    let json = match item.text(&RECORD_FORMAT)? {
        None => false,
        Some(f) => match f.get_ref().trim() {
            "text" => false,
            "json" => true,
            other => {
                return Err(item.err(
                    f.span(),
                    RECORD_FORMAT.name,
                    "\"text\" or \"json\"",
                    Some(format!("\"{other}\"")),
                    "leave it out for text lines",
                ))
            }
        },
    };
    Ok(SourceKind::Http {
        address,
        rate_max,
        limits: super::sources::ingest_limits(item)?,
        http,
        json,
        security,
    })
}
