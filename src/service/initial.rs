//! Initial-state files of pipeline steps (`initial = "counts.tsv"` on
//! `running_total`): one `(key, number)` pair per line, read when the
//! step's operator has no committed state yet (the first start).
//!
//! The format, line by line (UTF-8; `\n` or `\r\n` ends a line):
//! - an empty line is skipped (there are no comments: `#spark` is a key);
//! - any other line is `KEY<TAB>NUMBER`: the key is everything before the
//!   last tab (it may be empty, not contain a newline), the number an
//!   integer (`42`, `-7`) or a finite decimal (`2.5`, `1e3`).
//!
//! A key given twice is an error (which total would be meant is not
//! clear), naming both lines.
//!
//! Limits: a file is at most [`INITIAL_BYTES_MAX`] bytes (read with a cap,
//! so a device or pipe cannot make it larger).
//! Must never: accept a line it cannot read as a pair (every error names
//! the file and line), or read past the cap.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::values::Num;
use crate::dstream::Text;

/// Largest initial-state file, in bytes (64 MiB).
pub const INITIAL_BYTES_MAX: u64 = 64 << 20;

/// Why an initial-state file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InitialError {
    /// The file could not be opened or read.
    #[error("initial state file {}: {source}; the step's `initial` names it (relative paths are from the pipeline file's directory)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`INITIAL_BYTES_MAX`].
    #[error("initial state file {} is larger than {limit_bytes} bytes; load big states through the Rust API (UpdateSpec::initial_state_from)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit_bytes: u64,
    },
    /// A line is not UTF-8.
    #[error("initial state file {}:{line}: not UTF-8 text; save it as UTF-8", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// A line is not a pair.
    #[error("initial state file {}:{line}: expected {expected}, found {found}; each line is KEY, a tab, NUMBER (empty lines are skipped)", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What the line needs.
        expected: &'static str,
        /// What it has (clipped).
        found: String,
    },
    /// A key appears on two lines.
    #[error("initial state file {}:{line}: key \"{key}\" is already on line {first_line}; give each key once", path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The second line.
        line: usize,
        /// The key.
        key: String,
        /// Where it was first.
        first_line: usize,
    },
}

/// Characters of a bad line shown in an error.
const FOUND_CHARS_MAX: usize = 60;

/// Reads and parses the initial-state file at `path`.
pub fn load_pairs(path: &Path) -> Result<Vec<(Text, Num)>, InitialError> {
    let read = |source| InitialError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(INITIAL_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > INITIAL_BYTES_MAX {
        return Err(InitialError::TooLarge {
            path: path.to_path_buf(),
            limit_bytes: INITIAL_BYTES_MAX,
        });
    }
    parse_pairs(path, &bytes)
}

/// Parses the bytes of an initial-state file (`path` names it in errors).
pub fn parse_pairs(path: &Path, bytes: &[u8]) -> Result<Vec<(Text, Num)>, InitialError> {
    let mut pairs = Vec::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| InitialError::NotText {
            path: path.to_path_buf(),
            line,
        })?;
        if text.is_empty() {
            continue;
        }
        let bad = |expected| InitialError::Line {
            path: path.to_path_buf(),
            line,
            expected,
            found: clip(text),
        };
        let (key, number) = text.rsplit_once('\t').ok_or_else(|| bad("a tab"))?;
        let value = number_of(number).ok_or_else(|| bad("a number after the tab"))?;
        if let Some(&first_line) = first.get(key) {
            return Err(InitialError::Duplicate {
                path: path.to_path_buf(),
                line,
                key: key.to_string(),
                first_line,
            });
        }
        first.insert(key, line);
        pairs.push((Text::from(key), value));
    }
    debug_assert_eq!(pairs.len(), first.len());
    Ok(pairs)
}

/// `42` as an integer, `2.5` or `1e3` as a float; infinities and NaN are
/// not numbers here.
fn number_of(s: &str) -> Option<Num> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::Int(i));
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Num::Float)
}

/// The start of a bad line, quoted.
fn clip(text: &str) -> String {
    let mut shown: String = text.chars().take(FOUND_CHARS_MAX).collect();
    if shown.len() < text.len() {
        shown.push_str("...");
    }
    format!("\"{}\"", shown.escape_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(Text, Num)>, InitialError> {
        parse_pairs(Path::new("init.tsv"), s.as_bytes())
    }

    #[test]
    fn pairs_and_blank_lines() {
        let got = parse("#spark\t3\r\n\nweir\t-2\nrate\t2.5\n\t7\na\tb\t1\n").unwrap();
        let want = [
            ("#spark", Num::Int(3)),
            ("weir", Num::Int(-2)),
            ("rate", Num::Float(2.5)),
            ("", Num::Int(7)),
            ("a\tb", Num::Int(1)),
        ];
        assert_eq!(got.len(), want.len());
        for ((k, v), (wk, wv)) in got.iter().zip(want) {
            assert_eq!((k.as_str(), *v), (wk, wv));
        }
    }

    #[test]
    fn every_bad_line_is_named() {
        let e = parse("a\t1\nno tab here\n").unwrap_err().to_string();
        assert!(e.contains("init.tsv:2: expected a tab"), "{e}");
        let e = parse("a\tten\n").unwrap_err().to_string();
        assert!(e.contains("init.tsv:1: expected a number"), "{e}");
        for bad in ["inf", "NaN", "1e999", "infinity", ""] {
            let e = parse(&format!("a\t{bad}\n")).unwrap_err().to_string();
            assert!(e.contains("expected a number"), "{bad}: {e}");
        }
        let e = parse("a\t1\nb\t2\na\t3\n").unwrap_err().to_string();
        assert!(e.contains("init.tsv:3: key \"a\" is already on line 1"), "{e}");
        let e = parse_pairs(Path::new("x"), b"a\t1\n\xff\t2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x:2: not UTF-8"), "{e}");
    }

    #[test]
    fn a_file_past_the_limit_is_refused_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tsv");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: the limit plus one byte, of zeros.
        f.set_len(INITIAL_BYTES_MAX + 1).unwrap();
        assert!(matches!(
            load_pairs(&path),
            Err(InitialError::TooLarge { .. })
        ));
        // At the limit exactly: read, then refused for its content only.
        f.set_len(INITIAL_BYTES_MAX).unwrap();
        assert!(matches!(load_pairs(&path), Err(InitialError::Line { .. })));
        let e = load_pairs(&dir.path().join("missing.tsv")).unwrap_err();
        assert!(e.to_string().contains("missing.tsv"), "{e}");
    }
}
