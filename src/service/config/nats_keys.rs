//! The keys a `jetstream` source and a `jetstream` sink share: where the
//! NATS servers are and how to log in ([`SERVERS`], credentials, TLS,
//! [`CONNECT_TIMEOUT_MS`]), read by one function ([`nats_client`]) for
//! both, with one rule for relative paths (from the pipeline file's
//! directory) and one for servers off this machine (TLS required and
//! credentials, [`off_machine`]).
//!
//! Limits: those of `crate::nats` (1 to 64 servers, timeouts 1 to 600,000
//! ms).
//! Must never: accept two ways to log in at once, or a server off this
//! machine reached in clear or without credentials.

use std::path::Path;

use super::error::ConfigError;
use super::keys::{Item, KeySpec, KeyType};
use crate::nats::{loopback_url, NatsAuth, TIMEOUT_MS_MAX};

pub(super) const SERVERS: KeySpec = KeySpec::of(
    "servers",
    KeyType::TextList,
    "NATS server URLs such as [\"nats://127.0.0.1:4222\"]; one off this machine needs tls_required = true and credentials",
);
pub(super) const CREDENTIALS_FILE: KeySpec = KeySpec::of(
    "credentials_file",
    KeyType::Text,
    "a NATS .creds file (user JWT and NKEY seed); relative paths are from this file's directory",
);
pub(super) const TOKEN: KeySpec = KeySpec::of(
    "token",
    KeyType::Text,
    "a NATS authentication token (prefer credentials_file: this file then holds a secret)",
);
pub(super) const USER: KeySpec =
    KeySpec::of("user", KeyType::Text, "a NATS user name (with password)");
pub(super) const PASSWORD: KeySpec = KeySpec::of(
    "password",
    KeyType::Text,
    "the NATS user's password (prefer credentials_file: this file then holds a secret)",
);
pub(super) const TLS_CA_FILE: KeySpec = KeySpec::of(
    "tls_ca_file",
    KeyType::Text,
    "a PEM file of the certificate authorities to trust; relative paths are from this file's directory",
);
pub(super) const TLS_REQUIRED: KeySpec = KeySpec::of(
    "tls_required",
    KeyType::Bool,
    "true refuses servers that do not speak TLS (required for a server off this machine)",
);
pub(super) const CONNECT_TIMEOUT_MS: KeySpec = KeySpec::whole(
    "connect_timeout_ms",
    1,
    TIMEOUT_MS_MAX as i64,
    "ms connecting may take at start (default 5000)",
);

/// The client keys of a source or sink, read.
#[derive(Debug)]
pub(super) struct NatsClient {
    pub(super) servers: Vec<String>,
    pub(super) auth: NatsAuth,
    pub(super) tls_ca_file: Option<std::path::PathBuf>,
    pub(super) tls_required: bool,
    pub(super) connect_timeout_ms: Option<u64>,
}

/// Reads the client keys of `item`; relative paths resolve from `base`
/// (the pipeline file's directory); a server off this machine needs TLS
/// and credentials.
pub(super) fn nats_client(item: &Item<'_>, base: &Path) -> Result<NatsClient, ConfigError> {
    let servers = match item.list(&SERVERS)? {
        Some(v) if !v.get_ref().is_empty() => v.into_inner(),
        found => {
            return Err(item.err(
                found.as_ref().map_or(item.span(), |v| v.span()),
                SERVERS.name,
                "a non-empty list of server URLs",
                Some(if found.is_some() { "[]" } else { "nothing" }.into()),
                "add servers = [\"nats://127.0.0.1:4222\"]",
            ))
        }
    };
    let c = NatsClient {
        servers,
        auth: nats_auth(item, base)?,
        tls_ca_file: item.string(&TLS_CA_FILE)?.map(|p| base.join(p)),
        tls_required: item.flag(&TLS_REQUIRED)?.is_some_and(|b| *b.get_ref()),
        connect_timeout_ms: item.positive(&CONNECT_TIMEOUT_MS)?,
    };
    off_machine(item, &c)?;
    Ok(c)
}

/// At most one way to log in: a credentials file, a token, or a user
/// with a password.
fn nats_auth(item: &Item<'_>, base: &Path) -> Result<NatsAuth, ConfigError> {
    let creds = item.string(&CREDENTIALS_FILE)?;
    let token = item.string(&TOKEN)?;
    let user = item.string(&USER)?;
    let password = item.string(&PASSWORD)?;
    let ways = [
        creds.is_some(),
        token.is_some(),
        user.is_some() || password.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() > 1 {
        return Err(item.err(
            item.span(),
            CREDENTIALS_FILE.name,
            "one way to log in",
            Some("several".into()),
            "set credentials_file, or token, or user and password; not more than one",
        ));
    }
    Ok(match (creds, token, user, password) {
        (Some(p), _, _, _) => NatsAuth::CredentialsFile(base.join(p)),
        (_, Some(t), _, _) => NatsAuth::Token(t),
        (_, _, Some(user), Some(password)) => NatsAuth::UserPassword { user, password },
        (_, _, None, None) => NatsAuth::None,
        _ => {
            return Err(item.err(
                item.span(),
                PASSWORD.name,
                "user and password together",
                Some("only one of them".into()),
                "set both user and password",
            ))
        }
    })
}

/// A server off this machine only with TLS required and credentials: a
/// pipeline's records must not travel in clear or unauthenticated.
fn off_machine(item: &Item<'_>, c: &NatsClient) -> Result<(), ConfigError> {
    let Some(url) = c.servers.iter().find(|u| !loopback_url(u)) else {
        return Ok(());
    };
    if c.tls_required && c.auth != NatsAuth::None {
        return Ok(());
    }
    Err(item.err(
        item.span(),
        SERVERS.name,
        "loopback servers, or tls_required = true and credentials for a server off this machine",
        Some(format!("\"{url}\"")),
        "add tls_required = true (and tls_ca_file for a private authority) and credentials_file (or token, or user and password)",
    ))
}
