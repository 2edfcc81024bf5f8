//! The binary ingest front's TLS (`super::server`): the handshake of a
//! connection within `hello_timeout` of its accept, after a look at its
//! first byte (a client that starts in plain text is told, in a plain
//! ERROR frame, that the listener speaks TLS only), logged and counted
//! when it fails; and the gentle close that lets a last frame or alert
//! reach the client.
//!
//! Limits: the handshake within `IngestConfig::hello_timeout` (5 s) of
//! the accept; a closing connection at most `ERROR_SEND_TIMEOUT` (1 s)
//! to take its last bytes, reading at most 512 bytes at a time of what
//! the client still sends; detailed failure lines within the server's
//! log budget (10 a minute).
//! Must never: speak the protocol in plain text on a TLS listener, or
//! keep a connection whose handshake failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::pressure::Refusal;
use super::proto::{encode_error, ErrorCode};
use super::server::ERROR_SEND_TIMEOUT;
use super::store::Server;

/// The first byte of a TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS handshake of `sock`, accepted at `accepted`; None when it
/// failed or did not finish within `hello_timeout` (logged, counted).
pub(super) async fn handshake(
    server: &Server,
    tls: Arc<rustls::ServerConfig>,
    sock: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
) -> Option<TlsStream<TcpStream>> {
    let deadline = accepted + server.cfg.hello_timeout;
    let why = match tokio::time::timeout_at(deadline.into(), tls_accept(tls, sock)).await {
        Ok(Ok(s)) => return Some(s),
        Ok(Err(why)) => {
            server.stats.refuse(Refusal::Protocol);
            why
        }
        Err(_) => {
            server.stats.refuse(Refusal::HelloTimeout);
            let secs = server.cfg.hello_timeout.as_secs_f64();
            format!("the TLS handshake did not finish within {secs:.1} s (hello_timeout)")
        }
    };
    let stream = server.name.as_str();
    if server.budget.take() {
        tracing::info!(stream, peer = %peer, "ingest: TLS handshake failed: {why}");
    } else {
        tracing::debug!(stream, peer = %peer, "ingest: TLS handshake failed: {why}");
    }
    None
}

/// The server side of the TLS handshake, after a look at the first byte:
/// a client that starts in plain text (the preamble, `WING`) gets a plain
/// ERROR `bad_preamble` saying that this listener speaks TLS. A failed
/// handshake's alert (a client certificate missing, say) is given time
/// to reach the client.
async fn tls_accept(
    config: Arc<rustls::ServerConfig>,
    sock: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    let mut first = [0u8; 1];
    match sock.peek(&mut first).await {
        Ok(0) => return Err("the client closed the connection before the handshake".into()),
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
            let mut b = Vec::new();
            encode_error(
                &mut b,
                ErrorCode::BadPreamble,
                "this ingest server speaks TLS only: connect with TLS (weir feed: --tls-ca FILE)",
            );
            close_gently(sock, &b).await;
            return Err(
                "the client spoke plain text to a TLS listener; it was told to use TLS".into(),
            );
        }
        Ok(_) => {}
        Err(e) => return Err(format!("reading from the client: {e}")),
    }
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(sock);
    match accept.into_fallible().await {
        Ok(s) => Ok(s),
        Err((e, sock)) => {
            close_gently(sock, &[]).await;
            Err(e.to_string())
        }
    }
}

/// Sends `last` (if any), closes the sending side and reads what the
/// client still sends until it closes (at most [`ERROR_SEND_TIMEOUT`]),
/// so that the close is a FIN and not a reset that could drop what was
/// sent last.
async fn close_gently(mut sock: TcpStream, last: &[u8]) {
    let _ = tokio::time::timeout(ERROR_SEND_TIMEOUT, async {
        let _ = sock.write_all(last).await;
        let _ = sock.shutdown().await;
        let mut rest = [0u8; 512];
        while matches!(sock.read(&mut rest).await, Ok(n) if n > 0) {}
    })
    .await;
}
