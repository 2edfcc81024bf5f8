//! Test support (cargo feature `testing`): a small blocking HTTP/1.1
//! client for HTTP ingest's tests and benchmark, over any byte stream
//! (plain TCP, or a rustls stream for TLS), with keep-alive.
//!
//! Limits: a response head of at most [`HEAD_BYTES_MAX`] bytes and a
//! body of at most [`BODY_BYTES_MAX`]; every read has the socket's
//! timeout (set by the caller, or [`READ_TIMEOUT`] for `connect`).
//! Must never: be used by production code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest response head read.
pub const HEAD_BYTES_MAX: usize = 64 << 10;
/// Largest response body read.
pub const BODY_BYTES_MAX: usize = 16 << 20;
/// Read timeout of a connection made by [`HttpClient::connect`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Something to speak HTTP over.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One connection.
pub struct HttpClient {
    io: Box<dyn Stream>,
    buf: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub code: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (Null if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn bad(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

impl HttpClient {
    /// A plain TCP connection to `addr`.
    pub fn connect(addr: SocketAddr) -> std::io::Result<HttpClient> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(HttpClient::over(s))
    }

    /// A connection over `io` (e.g. a `rustls::StreamOwned`).
    pub fn over(io: impl Stream + 'static) -> HttpClient {
        HttpClient {
            io: Box::new(io),
            buf: Vec::new(),
        }
    }

    /// Sends one request (with `Host` and `Content-Length`) and reads
    /// its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: weir\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.io.write_all(&bytes)?;
        self.io.flush()?;
        self.read_reply()
    }

    /// Writes `bytes` as they are (a request made by hand) and reads the
    /// response.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<Reply> {
        self.io.write_all(bytes)?;
        self.io.flush()?;
        self.read_reply()
    }

    /// `POST path` of `body`, as `producer` from `seq` if given, with a
    /// bearer token if given.
    pub fn post(
        &mut self,
        path: &str,
        producer: Option<(&str, u64)>,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let seq = producer.map(|(_, s)| s.to_string());
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let (Some((p, _)), Some(s)) = (producer, seq.as_deref()) {
            h.push(("Weir-Producer", p));
            h.push(("Weir-Sequence", s));
        }
        if let Some(a) = auth.as_deref() {
            h.push(("Authorization", a));
        }
        self.request("POST", path, &h, body)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        let n = self.io.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_reply(&mut self) -> std::io::Result<Reply> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > HEAD_BYTES_MAX {
                return Err(bad("response head too large"));
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        let code = status
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad(format!("bad status line {status:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if len > BODY_BYTES_MAX {
            return Err(bad("response body too large"));
        }
        while self.buf.len() < head_end + len {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + len]).into_owned();
        self.buf.drain(..head_end + len);
        Ok(Reply {
            code,
            headers,
            body,
        })
    }
}
