//! Bearer tokens from a file: one `name token` pair a line, `#` starts a
//! comment; a request's `Authorization: Bearer <token>` (or the ingest
//! protocol's AUTH frame) is compared with every token in constant time
//! ([`Tokens::authorize`], [`Tokens::authorize_token`]) and answers with
//! the token's name, which logs and metrics show instead of the token.
//!
//! Limits: a token at least [`TOKEN_BYTES_MIN`] (16) and at most
//! [`TOKEN_BYTES_MAX`] (256) bytes of visible ASCII; a name 1 to
//! [`NAME_BYTES_MAX`] (64) bytes of `A-Z a-z 0-9 _ . -`, not
//! `anonymous`; at most [`TOKENS_MAX`] (1024) tokens; the file at most
//! [`TOKENS_FILE_BYTES_MAX`] (1 MiB), readable by its owner only.
//! Must never: log, print or return a token; compare one in time that
//! depends on where it differs; accept a file others may read.

use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

/// Shortest token, in bytes.
pub const TOKEN_BYTES_MIN: usize = 16;
/// Longest token, in bytes.
pub const TOKEN_BYTES_MAX: usize = 256;
/// Longest name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Most tokens in one file.
pub const TOKENS_MAX: usize = 1024;
/// Largest tokens file, in bytes.
pub const TOKENS_FILE_BYTES_MAX: u64 = 1 << 20;
/// The name requests without a token are counted under.
pub const ANONYMOUS: &str = "anonymous";

/// Why a tokens file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read the tokens file {}: {source}; check the path (relative paths are from the pipeline file's directory) and that weir's user may read it", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Others than its owner may read or write the file.
    #[error("the tokens file {} may be read or written by others than its owner (mode {mode:04o}); run `chmod 600 {}`", path.display(), path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is too large.
    #[error("the tokens file {} is larger than {TOKENS_FILE_BYTES_MAX} bytes; it holds `name token` lines only", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A line is wrong (the token itself is never quoted).
    #[error("{}:{line}: {why}; each line is `name token` (a name of A-Z a-z 0-9 _ . -, a token of {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} visible ASCII characters, e.g. from `openssl rand -hex 32`), `#` starts a comment", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line, 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The file holds no token.
    #[error("the tokens file {} holds no token; add a line `name token` (e.g. `prometheus $(openssl rand -hex 32)`)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A known token: its name.
    Named(String),
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not in the file (or a malformed header).
    Wrong,
}

/// The tokens of a file.
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: a token never reaches a log.
        f.debug_struct("Tokens")
            .field("names", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Tokens {
    /// Reads and checks the tokens file at `path`.
    pub fn load(path: &Path) -> Result<Tokens, TokenError> {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;
        let read = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read)?;
        let mode = f.metadata().map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let mut bytes = Vec::new();
        f.take(TOKENS_FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > TOKENS_FILE_BYTES_MAX {
            return Err(TokenError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Tokens::parse(path, &bytes)
    }

    /// Parses a tokens file's bytes (`path` for messages).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Tokens, TokenError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TokenError::Line {
            path: path.to_path_buf(),
            line: bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1,
            why: "not UTF-8 text".into(),
        })?;
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let bad = |why: String| TokenError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = parse_line(line).map_err(bad)?;
            if entries.iter().any(|(n, _)| n == name) {
                return Err(bad(format!("the name `{name}` is given twice")));
            }
            if entries.iter().any(|(_, t)| t == token.as_bytes()) {
                return Err(bad(format!(
                    "the token of `{name}` is also another name's; give each its own"
                )));
            }
            if entries.len() == TOKENS_MAX {
                return Err(bad(format!("more than {TOKENS_MAX} tokens")));
            }
            entries.push((name.to_string(), token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Tokens { entries })
    }

    /// The names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Checks an `Authorization` header's value: every token is compared
    /// (in constant time each), whatever matched.
    pub fn authorize(&self, header: Option<&[u8]>) -> Auth {
        let Some(value) = header else {
            return Auth::Missing;
        };
        match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                self.authorize_token(Some(value[7..].trim_ascii()))
            }
            _ => Auth::Wrong,
        }
    }

    /// Checks a bare token (the ingest protocol's AUTH frame; None: the
    /// client sent none): every token is compared (in constant time
    /// each), whatever matched.
    pub fn authorize_token(&self, presented: Option<&[u8]>) -> Auth {
        let Some(presented) = presented else {
            return Auth::Missing;
        };
        let mut found: Option<&str> = None;
        for (name, token) in &self.entries {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(name);
            }
        }
        found.map_or(Auth::Wrong, |n| Auth::Named(n.to_string()))
    }
}

/// `name token` of one non-comment line (the token never in the error).
fn parse_line(line: &str) -> Result<(&str, &str), String> {
    let mut parts = line.split_ascii_whitespace();
    let (Some(name), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected two fields, a name and a token".into());
    };
    let name_ok = name.len() <= NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !name_ok {
        return Err(format!(
            "the name {name:?} is not 1 to {NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ . -"
        ));
    }
    if name == ANONYMOUS {
        return Err(format!(
            "`{ANONYMOUS}` is reserved for requests without a token"
        ));
    }
    if token.len() < TOKEN_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
        return Err(format!(
            "the token of `{name}` has {} characters, not {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX}",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the token of `{name}` holds characters other than visible ASCII"
        ));
    }
    Ok((name, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Tokens, TokenError> {
        Tokens::parse(Path::new("t"), text.as_bytes())
    }

    #[test]
    fn a_file_of_names_and_tokens_reads_and_authorizes() {
        let t = parse("# scrapers\nprometheus 0123456789abcdef0123\n\n ops   fedcba9876543210fedc # no\n")
            .err()
            .map(|e| e.to_string());
        assert!(t.is_some_and(|e| e.contains(":4:")), "three fields on line 4");
        let t = parse("# scrapers\nprometheus 0123456789abcdef0123\n\n ops   fedcba9876543210fedc\n")
            .expect("valid");
        assert_eq!(t.names().collect::<Vec<_>>(), ["prometheus", "ops"]);
        let auth = |h: &str| t.authorize(Some(h.as_bytes()));
        assert_eq!(
            auth("Bearer 0123456789abcdef0123"),
            Auth::Named("prometheus".into())
        );
        assert_eq!(
            auth("bearer  fedcba9876543210fedc "),
            Auth::Named("ops".into())
        );
        assert_eq!(auth("Bearer 0123456789abcdef012"), Auth::Wrong);
        assert_eq!(auth("Basic 0123456789abcdef0123"), Auth::Wrong);
        assert_eq!(auth("Bearer"), Auth::Wrong);
        assert_eq!(t.authorize(None), Auth::Missing);
        assert_eq!(
            t.authorize_token(Some(b"fedcba9876543210fedc")),
            Auth::Named("ops".into())
        );
        assert_eq!(t.authorize_token(Some(b"fedcba9876543210fed")), Auth::Wrong);
        assert_eq!(t.authorize_token(None), Auth::Missing);
        assert!(!format!("{t:?}").contains("0123"), "no token in Debug");
    }

    #[test]
    fn bad_files_are_refused_without_showing_the_token() {
        for (text, words) in [
            ("a short\n", "has 5 characters"),
            ("a 0123456789abcdef\na 0123456789abcdeX\n", "given twice"),
            ("a 0123456789abcdef\nb 0123456789abcdef\n", "also another"),
            ("anonymous 0123456789abcdef\n", "reserved"),
            ("a/b 0123456789abcdef\n", "is not 1 to 64"),
            ("lonely\n", "two fields"),
            ("# nothing\n\n", "holds no token"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(words), "{text:?}: {e}");
            assert!(!e.contains("0123456789abcdef"), "{e}");
        }
    }

    #[test]
    fn a_file_others_may_read_is_refused_naming_the_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tokens");
        std::fs::write(&p, "a 0123456789abcdef\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = Tokens::load(&p).expect_err("refused").to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(Tokens::load(&p).is_ok());
    }
}
