//! Where a pipeline-file mistake is and what to do about it: the one error
//! type of the config folder ([`ConfigError`]), its location (line and
//! column counted in characters, an excerpt with a caret), the "did you
//! mean" suggestion ([`nearest`]) and the translation of toml's syntax
//! errors.
//!
//! Limits: a suggestion is at most 2 edits away from what was written.
//! Must never: panic on any text or span (spans past the end are clamped,
//! spans inside a character move back to its start), or show Rust's
//! `Debug` form or a Rust type name to the user.

use std::ops::Range;

/// A configuration mistake, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: expected {expected}{found}\n{excerpt}  hint: {hint}", found = found_part(.found))]
pub struct ConfigError {
    /// The pipeline file (or `<embedded demo>`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The key (dotted path such as `step[2].window`) the mistake is in.
    pub key: String,
    /// What the key needs.
    pub expected: String,
    /// What was there instead, if that helps.
    pub found: Option<String>,
    /// What to do.
    pub hint: String,
    /// The offending line with a caret under the column.
    pub excerpt: String,
}

fn found_part(found: &Option<String>) -> String {
    found
        .as_ref()
        .map_or_else(String::new, |f| format!(", found {f}"))
}

/// Where errors are reported against: the file name and its text.
pub(super) struct Src<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl Src<'_> {
    /// The error at `span` (its start is what the caret points at).
    pub(super) fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        expected: impl Into<String>,
        found: Option<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..start].chars().count() + 1;
        let line_text = self.text[line_start..]
            .split('\n')
            .next()
            .unwrap_or("")
            .trim_end_matches('\r');
        let excerpt = format!(
            "  {line:>4} | {line_text}\n       | {}^\n",
            " ".repeat(column - 1)
        );
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key: key.into(),
            expected: expected.into(),
            found,
            hint: hint.into(),
            excerpt,
        }
    }

    /// A key that no table of its section knows: names the nearest known
    /// key. An empty quoted key (`'' = 1`, found by the fuzzer) is named
    /// `''` so the message shows something.
    pub(super) fn unknown_key(
        &self,
        span: Range<usize>,
        key: &str,
        allowed: &[&str],
    ) -> ConfigError {
        let key = if key.is_empty() { "''" } else { key };
        let hint = match nearest(key, allowed) {
            Some(n) => format!("did you mean `{n}`? see docs/pipeline.md for every key"),
            None => "remove it; docs/pipeline.md lists every key".to_string(),
        };
        self.err(
            span,
            key,
            format!("one of {}", allowed.join(", ")),
            Some(format!("unknown key `{key}`")),
            hint,
        )
    }

    /// A name (op, kind) that is not one of `names`: suggests the nearest.
    pub(super) fn unknown_name(
        &self,
        span: Range<usize>,
        key: String,
        name: &str,
        names: &[&str],
    ) -> ConfigError {
        self.err(
            span,
            key,
            format!("one of {}", names.join(", ")),
            Some(format!("\"{name}\"")),
            nearest(name, names).map_or("see docs/pipeline.md".into(), |n| {
                format!("did you mean \"{n}\"?")
            }),
        )
    }
}

/// Turns toml's syntax error into ours, keeping toml's position.
pub(super) fn toml_error(src: &Src, e: &toml::de::Error) -> ConfigError {
    src.err(
        e.span().unwrap_or(0..0),
        "(syntax)",
        "valid TOML with the keys of docs/pipeline.md",
        Some(e.message().trim().to_string()),
        "fix the TOML at this position (strings need quotes, tables [..], lists [[..]])",
    )
}

/// The allowed word closest to `word` (edit distance at most 2).
pub(super) fn nearest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    allowed
        .iter()
        .map(|a| (dist(word, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, a)| a)
}
