//! The HTTP endpoint: a small HTTP/1.1 responder over tokio serving
//! `GET /metrics`, `GET /status`, `GET /` (and `HEAD` of each).
//!
//! Hand-written rather than axum/hyper: three read-only GET routes with
//! `Connection: close` need a request-line parser and a response writer
//! (about 100 lines, tested below), against some 40 more crates to build on
//! this 2-core machine. Every connection is bounded (size, time, count).
//!
//! Limits: a request head is at most [`REQUEST_BYTES_MAX`] bytes and must
//! arrive within [`REQUEST_TIMEOUT`]; at most [`CONNECTIONS_MAX`]
//! connections at once (more get `503`).
//! Must never: bind anything but the configured (loopback) address, or
//! block the batch loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::metrics_text;
use super::status::{status_json, Live, PAGE_HTML};

/// Largest request head, in bytes.
pub const REQUEST_BYTES_MAX: usize = 8192;
/// Longest wait for a request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 64;

/// A parsed request line.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, ...
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
}

/// Parses the head of a request (the bytes up to the blank line). None:
/// not a well-formed HTTP/1.x request line.
pub fn parse_request(head: &[u8]) -> Option<Request<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    if !target.starts_with('/') {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some(Request { method, path })
}

/// The response to a request: status line, content type, body.
pub fn respond(req: Option<&Request<'_>>, live: &Live) -> (&'static str, &'static str, String) {
    let Some(req) = req else {
        return (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".into(),
        );
    };
    if req.method != "GET" && req.method != "HEAD" {
        return (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".into(),
        );
    }
    match req.path {
        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", PAGE_HTML.to_string()),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&live.status()),
        ),
        "/status" => ("200 OK", "application/json", status_json(&live.status())),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /, /status or /metrics\n".into(),
        ),
    }
}

/// Binds `addr` (the caller checked it is loopback).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: TcpListener, live: Arc<Live>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (mut conn, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %e, "status endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = write_response(
                    &mut conn,
                    "503 Service Unavailable",
                    "text/plain",
                    "busy\n",
                    false,
                )
                .await;
            });
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, handle(conn, &live)).await;
        });
    }
}

async fn handle(mut conn: TcpStream, live: &Live) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if buf.len() >= REQUEST_BYTES_MAX {
            break None;
        }
        let n = match tokio::time::timeout(REQUEST_TIMEOUT, conn.read(&mut chunk)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Some(end) = head_end else {
        return write_response(
            &mut conn,
            "431 Request Header Fields Too Large",
            "text/plain",
            "request head too large\n",
            false,
        )
        .await;
    };
    let req = parse_request(&buf[..end]);
    let head_only = req.as_ref().is_some_and(|r| r.method == "HEAD");
    let (status, ctype, body) = respond(req.as_ref(), live);
    write_response(&mut conn, status, ctype, &body, head_only).await
}

async fn write_response(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    if !head_only {
        conn.write_all(body.as_bytes()).await?;
    }
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_strictly() {
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a"),
            Some(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.0"),
            Some(Request {
                method: "GET",
                path: "/"
            })
        );
        assert_eq!(parse_request(b"GET /  HTTP/1.1"), None, "two spaces");
        assert_eq!(
            parse_request(b"GET http://x/ HTTP/1.1"),
            None,
            "absolute form is refused"
        );
        assert_eq!(parse_request(b"GET / SPDY/3"), None);
        assert_eq!(parse_request(b"\xff\xfe"), None);
        assert_eq!(parse_request(b""), None);
    }
}
