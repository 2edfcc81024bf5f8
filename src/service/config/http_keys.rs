//! The `[service]` keys of the status endpoint: where it listens
//! ([`HTTP_ADDRESS`]), its limits (head size, head time, connections,
//! keep-alive), TLS (certificate, key, client authorities) and bearer
//! tokens, read by one function ([`http`]) with one rule for relative
//! paths (from the pipeline file's directory) and one for an address off
//! this machine (TLS and tokens required, [`off_machine`]), and the
//! `[service]` table of `docs/pipeline.md` ([`service_markdown`]).
//!
//! Limits: head 8192 (the least hyper takes) to 1 MiB bytes, head
//! timeout 100 to 600,000 ms, 1 to 10,000 connections.
//! Must never: accept an address off this machine without TLS and
//! tokens, a key without its certificate, or client authorities without
//! TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use super::model::{HttpSettings, HTTP_ADDRESS_DEFAULT};

pub(super) const HTTP_ADDRESS: KeySpec = KeySpec::of(
    "http_address",
    KeyType::Text,
    "the status endpoint: \"IP:PORT\" or \"off\"; loopback (\"127.0.0.1:9464\", \"[::1]:PORT\") by default, any other address needs http_tls_cert_file, http_tls_key_file and http_tokens_file",
);
const HTTP_HEAD_BYTES_MAX: KeySpec = KeySpec::whole(
    "http_head_bytes_max",
    8192,
    1 << 20,
    "largest request head (request line and headers) in bytes; larger gets 431 (default 8192)",
);
const HTTP_HEAD_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "http_head_timeout_ms",
    100,
    600_000,
    "ms a client has for the TLS handshake and for each request head, and the longest an idle kept-alive connection stays open (default 5000)",
);
const HTTP_CONNECTIONS_MAX: KeySpec = KeySpec::whole(
    "http_connections_max",
    1,
    10_000,
    "connections served at once; more get 503 (default 64)",
);
const HTTP_KEEP_ALIVE: KeySpec = KeySpec::of(
    "http_keep_alive",
    KeyType::Bool,
    "false closes every connection after one response (default true)",
);
const HTTP_TLS_CERT_FILE: KeySpec = KeySpec::of(
    "http_tls_cert_file",
    KeyType::Text,
    "PEM certificate chain, leaf first: the endpoint then speaks only TLS 1.3 (https); reloaded on SIGHUP or when it changes; relative paths are from this file's directory",
);
const HTTP_TLS_KEY_FILE: KeySpec = KeySpec::of(
    "http_tls_key_file",
    KeyType::Text,
    "the certificate's PEM private key (required with http_tls_cert_file)",
);
const HTTP_TLS_CLIENT_CA_FILE: KeySpec = KeySpec::of(
    "http_tls_client_ca_file",
    KeyType::Text,
    "PEM authorities: clients must present a certificate one of them signed (mTLS)",
);
const HTTP_TOKENS_FILE: KeySpec = KeySpec::of(
    "http_tokens_file",
    KeyType::Text,
    "`name token` lines (mode 600); every request then needs `Authorization: Bearer TOKEN`, and the name shows in logs and metrics (docs/security.md)",
);

/// The keys of `[service]`.
pub(super) const SERVICE_KEYS: &[KeySpec] = &[
    HTTP_ADDRESS,
    HTTP_HEAD_BYTES_MAX,
    HTTP_HEAD_TIMEOUT_MS,
    HTTP_CONNECTIONS_MAX,
    HTTP_KEEP_ALIVE,
    HTTP_TLS_CERT_FILE,
    HTTP_TLS_KEY_FILE,
    HTTP_TLS_CLIENT_CA_FILE,
    HTTP_TOKENS_FILE,
];

/// The `[service]` table of `docs/pipeline.md`.
pub fn service_markdown() -> String {
    let mut out = String::from("| key | type | meaning |\n|---|---|---|\n");
    for k in SERVICE_KEYS {
        out.push_str(&format!("| `{}` | {} | {} |\n", k.name, k.ty.doc(), k.hint));
    }
    out
}

/// The endpoint's address (None: off) and settings; relative paths
/// resolve from `base`; off this machine, TLS and tokens are required.
pub(super) fn http(
    svc: &Item<'_>,
    base: &Path,
) -> Result<(Option<SocketAddr>, HttpSettings), ConfigError> {
    let d = HttpSettings::default();
    let path = |k: &KeySpec| -> Result<_, ConfigError> { Ok(svc.string(k)?.map(|p| base.join(p))) };
    let s = HttpSettings {
        head_bytes_max: svc
            .positive(&HTTP_HEAD_BYTES_MAX)?
            .map_or(d.head_bytes_max, |n| n as usize),
        head_timeout: svc
            .positive(&HTTP_HEAD_TIMEOUT_MS)?
            .map_or(d.head_timeout, Duration::from_millis),
        connections_max: svc
            .positive(&HTTP_CONNECTIONS_MAX)?
            .map_or(d.connections_max, |n| n as usize),
        keep_alive: svc.flag(&HTTP_KEEP_ALIVE)?.is_none_or(|b| *b.get_ref()),
        tls_cert_file: path(&HTTP_TLS_CERT_FILE)?,
        tls_key_file: path(&HTTP_TLS_KEY_FILE)?,
        tls_client_ca_file: path(&HTTP_TLS_CLIENT_CA_FILE)?,
        tokens_file: path(&HTTP_TOKENS_FILE)?,
    };
    tls_pairs(svc, &s)?;
    let addr = http_address(svc)?;
    if let Some(a) = addr {
        off_machine(svc, a, &s)?;
    }
    Ok((addr, s))
}

/// A certificate with its key, and client authorities only with both.
fn tls_pairs(svc: &Item<'_>, s: &HttpSettings) -> Result<(), ConfigError> {
    let (key, found, hint) = match (&s.tls_cert_file, &s.tls_key_file, &s.tls_client_ca_file) {
        (Some(_), None, _) => (
            HTTP_TLS_KEY_FILE.name,
            "http_tls_cert_file alone",
            "add http_tls_key_file, the certificate's private key (PEM)",
        ),
        (None, Some(_), _) => (
            HTTP_TLS_CERT_FILE.name,
            "http_tls_key_file alone",
            "add http_tls_cert_file, the certificate chain (PEM)",
        ),
        (None, None, Some(_)) => (
            HTTP_TLS_CERT_FILE.name,
            "http_tls_client_ca_file without TLS",
            "client certificates need TLS: add http_tls_cert_file and http_tls_key_file",
        ),
        _ => return Ok(()),
    };
    Err(svc.err(
        svc.span(),
        key,
        "http_tls_cert_file and http_tls_key_file together",
        Some(found.into()),
        hint,
    ))
}

/// `http_address`: an IP address and port, `"off"` (None), or the
/// default.
fn http_address(svc: &Item<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(a) = svc.text(&HTTP_ADDRESS)? else {
        return Ok(HTTP_ADDRESS_DEFAULT.parse().ok());
    };
    let text = a.get_ref().trim();
    if text == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = text.parse().map_err(|_| {
        svc.err(
            a.span(),
            HTTP_ADDRESS.name,
            "an address such as \"127.0.0.1:9464\", or \"off\"",
            Some(format!("\"{text}\"")),
            "give an IP address and port (no host names)",
        )
    })?;
    Ok(Some(addr))
}

/// An endpoint off this machine only with TLS and tokens: the status
/// and metrics of a pipeline must not travel in clear nor be read by
/// anyone who can reach the port.
fn off_machine(svc: &Item<'_>, addr: SocketAddr, s: &HttpSettings) -> Result<(), ConfigError> {
    let Some(missing) = s.missing_for(addr) else {
        return Ok(());
    };
    let span = svc.text(&HTTP_ADDRESS)?.map_or(svc.span(), |v| v.span());
    Err(svc.err(
        span,
        HTTP_ADDRESS.name,
        "a loopback address (127.0.0.1 or [::1]), or TLS and tokens for an address off this machine",
        Some(format!("\"{addr}\" without {missing}")),
        format!("add {missing} (an address off this machine needs http_tls_cert_file, http_tls_key_file and http_tokens_file; docs/security.md), or listen on 127.0.0.1"),
    ))
}
