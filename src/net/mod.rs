//! What a network listener needs to face more than this machine: TLS with
//! certificates from files ([`tls`]), bearer tokens from a file
//! ([`tokens`]), and [`Security`], which holds both and reloads them (on
//! SIGHUP through its owner, and when a file's modification time or size
//! changes, polled every [`RELOAD_POLL`]). Used by the status endpoint
//! (`service/http.rs`) and both fronts of the ingest listener
//! (`ingest/server.rs`, `ingest/http.rs`).
//!
//! Limits: those of [`tls`] and [`tokens`]; a change is seen within
//! [`RELOAD_POLL`] (2 s).
//! Must never: drop a working certificate or token set for one that
//! fails to load (a failed reload keeps the old and logs why), or log a
//! token.

pub mod tls;
pub mod tokens;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

pub use tls::{TlsError, TlsFiles};
pub use tokens::{Auth, TokenError, Tokens};

/// How often [`Security::reload_if_changed`] should be called.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// Why a listener's TLS or tokens cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The tokens file.
    #[error(transparent)]
    Tokens(#[from] TokenError),
}

/// The files a listener's security comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFiles {
    /// TLS (None: plain TCP).
    pub tls: Option<TlsFiles>,
    /// Bearer tokens (None: no authentication).
    pub tokens: Option<PathBuf>,
}

impl SecurityFiles {
    /// In words, for `weir check`: "TLS, tokens required", "no TLS,
    /// tokens not required", "TLS with client certificates, ...".
    pub fn describe(&self) -> String {
        let tls = match &self.tls {
            None => "no TLS",
            Some(t) if t.client_ca.is_some() => "TLS with client certificates",
            Some(_) => "TLS",
        };
        let tokens = match self.tokens {
            Some(_) => "required",
            None => "not required",
        };
        format!("{tls}, tokens {tokens}")
    }
}

/// A file's modification time and length, to notice a change.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(p: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The live TLS configuration and tokens of a listener, reloadable.
pub struct Security {
    files: SecurityFiles,
    tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    tokens: RwLock<Option<Arc<Tokens>>>,
    stamps: Mutex<Vec<Stamp>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Security {
    /// Loads every file; any error refuses (at start nothing is kept).
    pub fn load(files: SecurityFiles) -> Result<Security, SecurityError> {
        let stamps = Mutex::new(stamps_of(&files));
        let tls = files.tls.as_ref().map(tls::server_config).transpose()?;
        let tokens = files
            .tokens
            .as_deref()
            .map(Tokens::load)
            .transpose()?
            .map(Arc::new);
        Ok(Security {
            files,
            tls: RwLock::new(tls),
            tokens: RwLock::new(tokens),
            stamps,
        })
    }

    /// The files.
    pub fn files(&self) -> &SecurityFiles {
        &self.files
    }

    /// The TLS configuration now (None: plain TCP).
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        // A poisoned lock still holds a whole value (every write is one
        // assignment): never read it as "no TLS".
        self.tls.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The tokens now (None: no authentication).
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        // Never read a poisoned lock as "no tokens" (that would fail open).
        self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads every file again; what fails keeps its old value and is
    /// logged with the reason. Returns whether everything loaded.
    pub fn reload(&self, why: &str) -> bool {
        if self.files.tls.is_none() && self.files.tokens.is_none() {
            return true;
        }
        if let Ok(mut s) = self.stamps.lock() {
            *s = stamps_of(&self.files);
        }
        let mut ok = true;
        if let Some(files) = &self.files.tls {
            match tls::server_config(files) {
                Ok(c) => {
                    if let Ok(mut g) = self.tls.write() {
                        *g = Some(c);
                    }
                    tracing::info!(reason = why, cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(reason = why, error = %e, "TLS reload failed: the previous certificate stays in use");
                }
            }
        }
        if let Some(path) = &self.files.tokens {
            match Tokens::load(path) {
                Ok(t) => {
                    let names: Vec<&str> = t.names().collect();
                    tracing::info!(reason = why, file = %path.display(), names = %names.join(","), "tokens reloaded");
                    if let Ok(mut g) = self.tokens.write() {
                        *g = Some(Arc::new(t));
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(reason = why, error = %e, "tokens reload failed: the previous tokens stay in use");
                }
            }
        }
        ok
    }

    /// Reloads if any file's modification time or size changed since
    /// the last load (call it every [`RELOAD_POLL`]).
    pub fn reload_if_changed(&self) {
        let now = stamps_of(&self.files);
        let changed = self.stamps.lock().is_ok_and(|s| *s != now);
        if changed {
            self.reload("a file changed");
        }
    }
}

fn stamps_of(files: &SecurityFiles) -> Vec<Stamp> {
    let mut paths = files.tls.as_ref().map(TlsFiles::paths).unwrap_or_default();
    paths.extend(files.tokens.clone());
    paths.iter().map(|p| stamp(p)).collect()
}
