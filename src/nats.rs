//! NATS client plumbing shared by the JetStream source (`source::jetstream*`,
//! the scale-out lease) and the JetStream sink (`sink::jetstream*`): how a
//! client logs in ([`NatsAuth`]), how it connects ([`ClientSpec`],
//! [`connect`]), the limits both check ([`check_client`]), and the small
//! tokio runtime each connection runs on ([`NatsRuntime`]).
//!
//! Limits: 1 to [`SERVERS_MAX`] server URLs; connect and request timeouts
//! 1 to [`TIMEOUT_MS_MAX`] ms; [`RUNTIME_THREADS`] runtime threads per
//! connection.
//! Must never: block inside an async runtime (callers block on their own
//! [`NatsRuntime`]), or shut a runtime down in place (a pipeline is
//! dropped inside the service's runtime, where that would panic).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most server URLs of one source or sink.
pub const SERVERS_MAX: usize = 64;
/// Largest connect or request timeout, in ms.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
/// Threads of a connection's runtime.
pub const RUNTIME_THREADS: usize = 2;

/// How the client logs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A `.creds` file (user JWT and NKEY seed).
    CredentialsFile(PathBuf),
    /// A token.
    Token(String),
    /// A user name and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
}

/// Errors of connecting a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The credentials file could not be read or parsed.
    #[error("credentials file {}: {detail}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The client's error.
        detail: String,
    },
    /// No server of the list answered (or the login was refused).
    #[error("{detail}")]
    Connect {
        /// The client's error.
        detail: String,
    },
    /// The connection's runtime could not start.
    #[error("could not start a runtime for the NATS client: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Where the servers are and how to reach them: what a source's and a
/// sink's configurations share, borrowed from them.
#[derive(Debug, Clone, Copy)]
pub struct ClientSpec<'a> {
    /// The client's name, as the server lists it (`weir`, `weir-sink`).
    pub name: &'a str,
    /// Server URLs.
    pub servers: &'a [String],
    /// How to log in.
    pub auth: &'a NatsAuth,
    /// A PEM file of certificate authorities to trust.
    pub tls_ca_file: Option<&'a Path>,
    /// Refuse servers that do not speak TLS.
    pub tls_required: bool,
    /// How long connecting may take, in ms.
    pub connect_timeout_ms: u64,
    /// How long one request may take, in ms.
    pub request_timeout_ms: u64,
}

/// The first setting of `spec` outside its limits, as (setting, found,
/// expected); `None` when all are within them.
pub fn check_client(spec: &ClientSpec<'_>) -> Option<(&'static str, String, String)> {
    let n = spec.servers.len();
    if n == 0 || n > SERVERS_MAX {
        return Some(("servers", n.to_string(), format!("1 to {SERVERS_MAX} URLs")));
    }
    if let Some(u) = spec.servers.iter().find(|u| u.trim().is_empty()) {
        return Some(("servers", format!("{u:?}"), "non-empty URLs".into()));
    }
    let ms = spec.connect_timeout_ms;
    if ms == 0 || ms > TIMEOUT_MS_MAX {
        let expected = format!("1 to {TIMEOUT_MS_MAX}");
        return Some(("connect_timeout_ms", ms.to_string(), expected));
    }
    let ms = spec.request_timeout_ms;
    if ms == 0 || ms > TIMEOUT_MS_MAX {
        // The sink calls its request timeout the ack timeout.
        let setting = if spec.name == SINK_CLIENT_NAME {
            "ack_timeout_ms"
        } else {
            "request_timeout_ms"
        };
        return Some((setting, ms.to_string(), format!("1 to {TIMEOUT_MS_MAX}")));
    }
    None
}

/// The sink's client name.
pub const SINK_CLIENT_NAME: &str = "weir-sink";
/// The source's client name.
pub const SOURCE_CLIENT_NAME: &str = "weir";

/// Connects a client with `spec`'s options (on the caller's runtime).
pub async fn connect(spec: &ClientSpec<'_>) -> Result<async_nats::Client, NatsError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(spec.name)
        .connection_timeout(Duration::from_millis(spec.connect_timeout_ms))
        .request_timeout(Some(Duration::from_millis(spec.request_timeout_ms)))
        .require_tls(spec.tls_required);
    if let Some(ca) = spec.tls_ca_file {
        o = o.add_root_certificates(ca.to_path_buf());
    }
    o = match spec.auth {
        NatsAuth::None => o,
        NatsAuth::Token(t) => o.token(t.clone()),
        NatsAuth::UserPassword { user, password } => {
            o.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::CredentialsFile(p) => {
            o.credentials_file(p)
                .await
                .map_err(|e| NatsError::Credentials {
                    path: p.clone(),
                    detail: e.to_string(),
                })?
        }
    };
    o.connect(spec.servers.to_vec())
        .await
        .map_err(|e| NatsError::Connect {
            detail: e.to_string(),
        })
}

/// A connection's runtime: [`RUNTIME_THREADS`] threads, shut down in the
/// background when dropped, so a context holding it may be dropped inside
/// another runtime (the service's), where dropping a runtime in place
/// would panic.
pub struct NatsRuntime(Option<tokio::runtime::Runtime>);

impl NatsRuntime {
    /// Starts a runtime whose threads are named `thread_name`.
    pub fn new(thread_name: &str) -> Result<Self, NatsError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(NatsError::Runtime)?;
        Ok(NatsRuntime(Some(rt)))
    }

    /// The runtime (present until drop).
    pub fn get(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the runtime is present until drop")
    }
}

impl Drop for NatsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for NatsRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsRuntime")
    }
}

/// Whether a server URL (`nats://host:port`, `host:port`, `tls://...`)
/// names this machine.
pub fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        for u in [
            "nats://127.0.0.1:4222",
            "localhost:4222",
            "tls://[::1]:4222",
            "nats://u:p@127.0.0.2:1",
        ] {
            assert!(loopback_url(u), "{u}");
        }
        for u in [
            "nats://10.0.0.1:4222",
            "nats://nats.example.com:4222",
            "demo.nats.io",
        ] {
            assert!(!loopback_url(u), "{u}");
        }
    }

    fn spec<'a>(servers: &'a [String], auth: &'a NatsAuth) -> ClientSpec<'a> {
        ClientSpec {
            name: SOURCE_CLIENT_NAME,
            servers,
            auth,
            tls_ca_file: None,
            tls_required: false,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
        }
    }

    #[test]
    fn limits_are_checked_at_their_edges() {
        let auth = NatsAuth::None;
        let max: Vec<String> = (0..SERVERS_MAX).map(|i| format!("h{i}:4222")).collect();
        assert!(check_client(&spec(&max, &auth)).is_none());
        let over: Vec<String> = (0..=SERVERS_MAX).map(|i| format!("h{i}:4222")).collect();
        assert_eq!(check_client(&spec(&over, &auth)).map(|e| e.0), Some("servers"));
        assert_eq!(check_client(&spec(&[], &auth)).map(|e| e.0), Some("servers"));
        let one = ["h:1".to_string()];
        let mut s = spec(&one, &auth);
        s.connect_timeout_ms = TIMEOUT_MS_MAX;
        s.request_timeout_ms = TIMEOUT_MS_MAX;
        assert!(check_client(&s).is_none());
        s.request_timeout_ms = TIMEOUT_MS_MAX + 1;
        assert_eq!(check_client(&s).map(|e| e.0), Some("request_timeout_ms"));
        s.name = SINK_CLIENT_NAME;
        assert_eq!(check_client(&s).map(|e| e.0), Some("ack_timeout_ms"));
        s.connect_timeout_ms = 0;
        assert_eq!(check_client(&s).map(|e| e.0), Some("connect_timeout_ms"));
    }
}
