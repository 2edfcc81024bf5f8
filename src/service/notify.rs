//! systemd's notification protocol (`sd_notify`): datagrams such as
//! `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...` sent to the unix
//! socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace), and the watchdog period from `$WATCHDOG_USEC`.
//!
//! Limits: one datagram per message, at most [`MESSAGE_BYTES_MAX`] bytes.
//! Must never: fail the service because systemd is absent or a send fails
//! (a failed send is logged once; the service keeps running).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

/// Longest message sent.
pub const MESSAGE_BYTES_MAX: usize = 4096;

/// Where notifications go.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    target: String,
    warned: std::sync::atomic::AtomicBool,
}

impl Notifier {
    #[cfg(any(test, feature = "testing"))]
    /// The notifier for `$NOTIFY_SOCKET`, if set (not under systemd: None).
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var("NOTIFY_SOCKET").ok()?;
        Notifier::to(&target)
    }

    /// A notifier sending to `target` (a socket path or `@abstract`).
    pub fn to(target: &str) -> Option<Notifier> {
        if target.is_empty() {
            return None;
        }
        match UnixDatagram::unbound() {
            Ok(sock) => Some(Notifier {
                sock,
                target: target.to_string(),
                warned: std::sync::atomic::AtomicBool::new(false),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a socket for systemd notifications; continuing without them");
                None
            }
        }
    }

    /// Sends one message (lines `KEY=value`).
    pub fn send(&self, msg: &str) {
        let msg = &msg.as_bytes()[..msg.len().min(MESSAGE_BYTES_MAX)];
        let r = if let Some(name) = self.target.strip_prefix('@') {
            abstract_send(&self.sock, name, msg)
        } else {
            self.sock.send_to(msg, PathBuf::from(&self.target))
        };
        if let Err(e) = r {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(socket = %self.target, error = %e, "cannot notify systemd; continuing (further failures are not logged)");
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_send(sock: &UnixDatagram, name: &str, msg: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn abstract_send(_: &UnixDatagram, _: &str, _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// The watchdog period systemd asked for (`$WATCHDOG_USEC`, only if
/// `$WATCHDOG_PID` is unset or this process).
pub fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier::to(&path.display().to_string()).expect("notifier");
        n.send("READY=1\nSTATUS=ok");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=ok");
        assert!(Notifier::to("").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("weir-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind");
        rx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        Notifier::to(&format!("@{name}"))
            .expect("notifier")
            .send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
