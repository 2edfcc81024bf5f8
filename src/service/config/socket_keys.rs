//! The `socket` source (`socket_text_stream`): its keys
//! ([`SOCKET_KEYS`]) and their reading ([`socket_source`]): the server's
//! address, the record delimiter, and TLS (`tls_ca_file`,
//! `tls_server_name`, `tls_cert_file` with `tls_key_file`), with one rule
//! for relative paths (from the pipeline file's directory) and one for a
//! server off this machine: TLS with the server verified, or refused.
//!
//! Limits: a port 1 to 65535, a host name of at most 253 bytes (a DNS
//! name or an IP address; names resolve when weir connects, not here), a
//! delimiter of 1 to `DELIMITER_BYTES_MAX` (64) bytes.
//! Must never: accept a server off this machine without `tls_ca_file`, a
//! client certificate without its key, or TLS settings without the CA
//! file that verifies the server; resolve a name or read a file (the
//! receiver reads the TLS files when it is built).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use rustls::pki_types::ServerName;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use super::model::SourceKind;
use super::sources::{partitions, PARTITIONS, RATE_MAX};
use crate::receiver::{ClientCert, SocketTls};

/// Longest host name in `address` or `tls_server_name`, in bytes.
pub const HOST_BYTES_MAX: usize = 253;

const ADDRESS: KeySpec = KeySpec::of(
    "address",
    KeyType::Text,
    "the server's host:port: on this machine (\"127.0.0.1:9999\", \"localhost:9999\"), or off it with tls_ca_file (\"feed.example.com:9999\", resolved at each connect)",
);
const DELIMITER: KeySpec = KeySpec::of(
    "delimiter",
    KeyType::Text,
    "what ends a record, 1 to 64 bytes, such as \"__end\" (default: a newline; bytes between delimiters are kept exactly)",
);
const TLS_CA_FILE: KeySpec = KeySpec::of(
    "tls_ca_file",
    KeyType::Text,
    "PEM authorities the server's certificate must lead to: weir then connects over TLS 1.3 and verifies the server (required for a server off this machine); relative paths are from this file's directory",
);
const TLS_SERVER_NAME: KeySpec = KeySpec::of(
    "tls_server_name",
    KeyType::Text,
    "the name the server's certificate must hold, a DNS name or an IP address (default: the address's host)",
);
const TLS_CERT_FILE: KeySpec = KeySpec::of(
    "tls_cert_file",
    KeyType::Text,
    "weir's client certificate chain (PEM, leaf first), sent when the server asks for one (mTLS); with tls_key_file",
);
const TLS_KEY_FILE: KeySpec = KeySpec::of(
    "tls_key_file",
    KeyType::Text,
    "the client certificate's PEM private key (required with tls_cert_file)",
);

/// The keys of a `socket` source besides `id` and `kind`.
pub(super) const SOCKET_KEYS: &[KeySpec] = &[
    ADDRESS,
    RATE_MAX,
    DELIMITER,
    PARTITIONS,
    TLS_CA_FILE,
    TLS_SERVER_NAME,
    TLS_CERT_FILE,
    TLS_KEY_FILE,
];

/// The server of `address`: where to connect, the host as written (the
/// name TLS verifies by default), and whether it is this machine.
struct Server {
    address: String,
    host: String,
    loopback: bool,
    /// Where `address` is in the file, and its text, for errors.
    span: std::ops::Range<usize>,
    written: String,
}

/// A `socket` source; relative paths resolve from `base`.
pub(super) fn socket_source(item: &Item<'_>, base: &Path) -> Result<SourceKind, ConfigError> {
    let rate_max = item.positive(&RATE_MAX)?;
    let server = server(item)?;
    let tls = tls(item, base, &server)?;
    Ok(SourceKind::Socket {
        address: server.address,
        rate_max,
        delimiter: delimiter(item)?,
        partitions: partitions(item)?,
        tls,
    })
}

/// `address`: `HOST:PORT` with a DNS name, an IP address (`[v6]` in
/// brackets) or `localhost` (kept as 127.0.0.1, as before TLS), port not 0.
fn server(item: &Item<'_>) -> Result<Server, ConfigError> {
    let a = item.required(
        &ADDRESS,
        "the server's address, e.g. \"127.0.0.1:9999\"",
        "add address = \"127.0.0.1:PORT\"",
    )?;
    let text = a.get_ref().trim();
    let bad = |expected: &str, hint: &str| {
        item.err(
            a.span(),
            ADDRESS.name,
            expected,
            Some(format!("\"{text}\"")),
            hint,
        )
    };
    let split = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:"),
        None => text.rsplit_once(':').filter(|(h, _)| !h.contains(':')),
    };
    let Some((host, port)) = split.filter(|(h, _)| !h.is_empty()) else {
        return Err(bad(
            "HOST:PORT, such as \"127.0.0.1:9999\", \"[::1]:9999\" or \"feed.example.com:9999\"",
            "give the server's host and port (an IPv6 address in brackets)",
        ));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(bad(
                "the server's port, 1 to 65535",
                "a socket source connects to a server that listens on that port",
            ))
        }
    };
    let (address, loopback) = if host.eq_ignore_ascii_case("localhost") {
        (SocketAddr::from(([127, 0, 0, 1], port)).to_string(), true)
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        (SocketAddr::new(ip, port).to_string(), ip.is_loopback())
    } else if host.len() <= HOST_BYTES_MAX && ServerName::try_from(host).is_ok() {
        (format!("{host}:{port}"), false)
    } else {
        return Err(bad(
            "a host name (letters, digits, '-' and '.'), an IP address or localhost",
            "such as \"feed.example.com:9999\" or \"127.0.0.1:9999\"",
        ));
    };
    Ok(Server {
        address,
        host: host.to_string(),
        loopback,
        span: a.span(),
        written: text.to_string(),
    })
}

/// The TLS keys: None without `tls_ca_file` (then only a server on this
/// machine); the other keys need it, the certificate and key go together.
fn tls(item: &Item<'_>, base: &Path, server: &Server) -> Result<Option<SocketTls>, ConfigError> {
    let path =
        |k: &KeySpec| -> Result<_, ConfigError> { Ok(item.string(k)?.map(|p| base.join(p))) };
    let (ca, cert, key) = (
        path(&TLS_CA_FILE)?,
        path(&TLS_CERT_FILE)?,
        path(&TLS_KEY_FILE)?,
    );
    let name = item.text(&TLS_SERVER_NAME)?;
    let pair = |k: &str, found: &str, hint: &str| {
        let expected = "tls_cert_file and tls_key_file together";
        Err(item.err(item.span(), k, expected, Some(found.into()), hint))
    };
    let client_cert = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (Some(_), None) => {
            return pair(
                TLS_KEY_FILE.name,
                "tls_cert_file alone",
                "add tls_key_file, the client certificate's private key (PEM)",
            )
        }
        (None, Some(_)) => {
            return pair(
                TLS_CERT_FILE.name,
                "tls_key_file alone",
                "add tls_cert_file, the client certificate chain (PEM)",
            )
        }
        (None, None) => None,
    };
    let Some(ca_file) = ca else {
        if name.is_some() || client_cert.is_some() {
            return Err(item.err(
                item.span(),
                TLS_CA_FILE.name,
                "tls_ca_file with the other TLS keys",
                Some("TLS keys without tls_ca_file".into()),
                "add tls_ca_file, the PEM file of the authority that signed the server's certificate: weir verifies every TLS server",
            ));
        }
        if !server.loopback {
            return Err(item.err(
                server.span.clone(),
                ADDRESS.name,
                "a server on this machine, or tls_ca_file for a server off it",
                Some(format!("\"{}\"", server.written)),
                "add tls_ca_file (the PEM file of the authority that signed the server's certificate: weir then connects over TLS 1.3 and verifies the server; docs/security.md), or connect to a server on this machine (127.0.0.1, [::1] or localhost)",
            ));
        }
        return Ok(None);
    };
    let server_name = match name {
        None => server.host.clone(),
        Some(n) => {
            let n_text = n.get_ref().trim();
            if n_text.len() > HOST_BYTES_MAX || ServerName::try_from(n_text).is_err() {
                return Err(item.err(
                    n.span(),
                    TLS_SERVER_NAME.name,
                    "a DNS name or an IP address",
                    Some(format!("\"{n_text}\"")),
                    "give a name the server's certificate holds, such as \"feed.example.com\"; leave it out to verify the address's host",
                ));
            }
            n_text.to_string()
        }
    };
    Ok(Some(SocketTls {
        ca_file,
        server_name: Some(server_name),
        client_cert,
    }))
}

/// A socket source's `delimiter`: 1 to `DELIMITER_BYTES_MAX` bytes.
fn delimiter(item: &Item<'_>) -> Result<Option<String>, ConfigError> {
    let Some(d) = item.text(&DELIMITER)? else {
        return Ok(None);
    };
    let max = crate::receiver::DELIMITER_BYTES_MAX;
    let n = d.get_ref().len();
    if n == 0 || n > max {
        return Err(item.err(
            d.span(),
            DELIMITER.name,
            format!("1 to {max} bytes of text that end each record"),
            Some(format!("{n} bytes")),
            "the Spark tutorial's server ends each tweet with \"__end\": delimiter = \"__end\"; leave the key out for newline-terminated lines",
        ));
    }
    Ok(Some(d.get_ref().to_string()))
}
