//! The one rule for stream names. A stream's name is a path component
//! under the data directory (`wal/<name>/`, `wal/<name>.producers`,
//! `receivers/<name>.progress`, `docs/data-dir.md`), a label in metrics and
//! a key in the checkpoint's batch ranges, so it is a whitelist: ASCII
//! letters, digits, `_` and `-`, starting with a letter or a digit.
//!
//! Why a whitelist: every file weir keeps beside a stream's log directory
//! is `<name>.<suffix>`, and every temporary file starts with `.`. A name
//! without `.` can therefore never be another stream's sidecar file (a
//! stream `a.producers` would be stream `a`'s producer table) or a
//! temporary file, and a name without `/`, `\` or a leading `.` never
//! leaves its directory.
//!
//! Limits: a name is 1 to [`STREAM_NAME_BYTES_MAX`] bytes.
//! Must never: accept a name that is not a single safe path component, or
//! describe a refused name in Rust's debug form (messages say which
//! character, at which position, in words).

/// Longest accepted stream name, in bytes. File names are at most 255
/// bytes on common Linux file systems; the longest file derived from a
/// stream name is the producer table's temporary file
/// `.<name>.producers.tmp` (15 bytes more), and a short name keeps logs
/// and metric labels readable.
pub const STREAM_NAME_BYTES_MAX: usize = 128;

/// Why a stream name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("a stream name cannot be empty; use ASCII letters, digits, `_` or `-`")]
    Empty,
    /// The name is longer than `STREAM_NAME_BYTES_MAX`.
    #[error(
        "the stream name `{}` is {bytes} bytes long; at most {max} bytes are allowed",
        shown(name)
    )]
    TooLong {
        /// The refused name.
        name: String,
        /// Its length in bytes.
        bytes: usize,
        /// The limit (`STREAM_NAME_BYTES_MAX`).
        max: usize,
    },
    /// The first character is not a letter or a digit.
    #[error(
        "the stream name `{}` starts with {}; it must start with an ASCII letter or digit",
        shown(name),
        describe(*found)
    )]
    BadStart {
        /// The refused name.
        name: String,
        /// Its first character.
        found: char,
    },
    /// A character outside the whitelist.
    #[error(
        "the stream name `{}` has {} at character {position}; a stream name may hold only \
         ASCII letters, digits, `_` and `-` (it names its log directory and the files beside \
         it in the data directory)",
        shown(name),
        describe(*found)
    )]
    BadChar {
        /// The refused name.
        name: String,
        /// 1-based position of the character, counted in characters.
        position: usize,
        /// The character.
        found: char,
    },
}

/// Checks a stream name against the whitelist (see the module docs).
pub fn validate_stream_name(name: &str) -> Result<(), NameError> {
    let Some(first) = name.chars().next() else {
        return Err(NameError::Empty);
    };
    if name.len() > STREAM_NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            name: name.to_string(),
            bytes: name.len(),
            max: STREAM_NAME_BYTES_MAX,
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart {
            name: name.to_string(),
            found: first,
        });
    }
    match name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        Some((i, found)) => Err(NameError::BadChar {
            name: name.to_string(),
            position: i + 1,
            found,
        }),
        None => Ok(()),
    }
}

/// A character in words: `` `.` ``, "a space", or its code point when it
/// is invisible.
fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        c if c.is_control() || c.is_whitespace() => {
            format!("the invisible character U+{:04X}", u32::from(c))
        }
        c => format!("`{c}`"),
    }
}

/// The name as shown in a message: at most 40 characters, invisible
/// characters escaped.
fn shown(name: &str) -> String {
    let cut: String = name.chars().take(40).collect();
    let more = if cut.len() < name.len() { "…" } else { "" };
    format!("{}{more}", cut.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted() {
        for n in ["a", "in", "tweets_in", "clicks-2024", "A9_-z", "0day"] {
            assert_eq!(validate_stream_name(n), Ok(()), "{n}");
        }
        let longest = "x".repeat(STREAM_NAME_BYTES_MAX);
        assert_eq!(validate_stream_name(&longest), Ok(()));
    }

    #[test]
    fn a_sidecar_name_is_refused_naming_the_dot_and_its_position() {
        let e = validate_stream_name("a.producers").unwrap_err();
        assert_eq!(
            e,
            NameError::BadChar {
                name: "a.producers".into(),
                position: 2,
                found: '.'
            }
        );
        let m = e.to_string();
        assert!(
            m.contains("`a.producers` has `.` at character 2")
                && m.contains("ASCII letters, digits, `_` and `-`"),
            "{m}"
        );
    }

    #[test]
    fn other_bad_names_are_refused_in_words() {
        let cases = [
            ("", "cannot be empty"),
            ("../etc", "starts with `.`"),
            (".hidden", "starts with `.`"),
            ("-x", "starts with `-`"),
            ("_x", "starts with `_`"),
            ("a/b", "has `/` at character 2"),
            ("a\\b", "has `\\` at character 2"),
            ("my stream", "has a space at character 3"),
            (
                "tab\there",
                "`tab\\there` has the invisible character U+0009 at character 4",
            ),
            ("café", "has `é` at character 4"),
            ("a.progress", "has `.` at character 2"),
        ];
        for (name, want) in cases {
            let m = validate_stream_name(name).unwrap_err().to_string();
            assert!(m.contains(want), "{name:?}: {m}");
            assert!(!m.contains("BadChar") && !m.contains('"'), "{m}");
        }
        let long = "y".repeat(STREAM_NAME_BYTES_MAX + 1);
        let m = validate_stream_name(&long).unwrap_err().to_string();
        assert!(
            m.contains("129 bytes long; at most 128 bytes are allowed") && m.len() < 200,
            "{m}"
        );
    }
}
