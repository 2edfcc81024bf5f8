//! [`Text`]: the string record type of the engine.
//!
//! An immutable string that stores up to [`INLINE_BYTES_MAX`] (22) bytes
//! inline (no heap allocation, cloning is a 24-byte copy) and longer strings
//! in a shared `Arc<str>` (cloning is a reference-count increment). Words
//! split out of a line and lowercased therefore cost no allocation per word
//! unless a word is longer than 22 bytes. It hashes, compares and orders
//! exactly like `str`, so it can be looked up by `&str`.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest string stored inline, in bytes.
pub const INLINE_BYTES_MAX: usize = 22;

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        buf: [u8; INLINE_BYTES_MAX],
    },
    Shared(Arc<str>),
}

/// An immutable, cheaply clonable string (see the module docs).
#[derive(Clone)]
pub struct Text(Repr);

const _: () = assert!(std::mem::size_of::<Text>() == 24);

impl Text {
    /// A text holding `s`.
    #[inline]
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE_BYTES_MAX {
            let mut buf = [0u8; INLINE_BYTES_MAX];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Text(Repr::Inline {
                len: s.len() as u8,
                buf,
            })
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }

    /// `s` in lowercase (Unicode rules, like `str::to_lowercase`); ASCII
    /// words up to 22 bytes are lowercased without allocating.
    #[inline]
    pub fn lowercase(s: &str) -> Text {
        if s.len() <= INLINE_BYTES_MAX && s.is_ascii() {
            let mut buf = [0u8; INLINE_BYTES_MAX];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            buf[..s.len()].make_ascii_lowercase();
            Text(Repr::Inline {
                len: s.len() as u8,
                buf,
            })
        } else {
            Text::from(s.to_lowercase())
        }
    }

    /// Calls `f` with every word of `s` (split on Unicode whitespace, like
    /// `str::split_whitespace`), lowercased (like [`Text::lowercase`]).
    /// ASCII lines take a single fused pass over the bytes: no allocation
    /// for words up to 22 bytes.
    #[inline]
    pub fn for_each_lowercase_word(s: &str, mut f: impl FnMut(Text)) {
        if !s.is_ascii() {
            for w in s.split_whitespace() {
                f(Text::lowercase(w))
            }
            return;
        }
        let b = s.as_bytes();
        let n = b.len();
        let mut i = 0;
        // ASCII whitespace as `char::is_whitespace` defines it.
        let ws = |c: u8| c == b' ' || (b'\t'..=b'\r').contains(&c);
        while i < n {
            while i < n && ws(b[i]) {
                i += 1;
            }
            let start = i;
            while i < n && !ws(b[i]) {
                i += 1;
            }
            let w = &b[start..i];
            if w.is_empty() {
                break;
            }
            let len = w.len();
            if len <= INLINE_BYTES_MAX {
                // Load the word as three little-endian words (straight from
                // the line when 24 bytes are readable, else via a copy),
                // zero the bytes past its end, lowercase 8 bytes at a time.
                let mut ws = [0u64; 3];
                if start + 24 <= n {
                    for (k, x) in ws.iter_mut().enumerate() {
                        let mut c = [0u8; 8];
                        c.copy_from_slice(&b[start + 8 * k..start + 8 * k + 8]);
                        *x = u64::from_le_bytes(c);
                    }
                } else {
                    let mut tmp = [0u8; 24];
                    tmp[..len].copy_from_slice(w);
                    for (k, x) in ws.iter_mut().enumerate() {
                        let mut c = [0u8; 8];
                        c.copy_from_slice(&tmp[8 * k..8 * k + 8]);
                        *x = u64::from_le_bytes(c);
                    }
                }
                for (k, x) in ws.iter_mut().enumerate() {
                    let keep = len.saturating_sub(8 * k).min(8);
                    let mask = if keep == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (8 * keep)) - 1
                    };
                    *x = ascii_lower_word(*x & mask);
                }
                let mut buf = [0u8; INLINE_BYTES_MAX];
                buf[0..8].copy_from_slice(&ws[0].to_le_bytes());
                buf[8..16].copy_from_slice(&ws[1].to_le_bytes());
                buf[16..22].copy_from_slice(&ws[2].to_le_bytes()[..6]);
                f(Text(Repr::Inline {
                    len: len as u8,
                    buf,
                }))
            } else {
                f(Text::lowercase(&s[start..i]))
            }
        }
    }

    /// This text in lowercase.
    #[inline]
    pub fn to_lowercase(&self) -> Text {
        Text::lowercase(self.as_str())
    }

    /// The 24 bytes of an inline text as three words. Two inline texts
    /// holding the same string have the same bytes: same tag, same length,
    /// zero-padded buffer.
    #[inline]
    fn raw_words(&self) -> [u64; 3] {
        debug_assert!(matches!(self.0, Repr::Inline { .. }));
        // SAFETY: `Text` is 24 bytes (asserted at compile time below) and
        // its inline variant is a tag byte, a length byte and a fully
        // initialized 22-byte buffer: 24 initialized bytes, no padding.
        unsafe { std::ptr::read_unaligned(self as *const Text as *const [u64; 3]) }
    }

    /// The string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // SAFETY: `buf[..len]` was copied from a `&str` (or ASCII-
            // lowercased, which keeps UTF-8 valid) and is never mutated.
            Repr::Inline { len, buf } => unsafe {
                std::str::from_utf8_unchecked(&buf[..*len as usize])
            },
            Repr::Shared(s) => s,
        }
    }
}

impl Deref for Text {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    #[inline]
    fn eq(&self, o: &Text) -> bool {
        match (&self.0, &o.0) {
            // Inline buffers are zero-padded: equal strings, equal bytes.
            (Repr::Inline { .. }, Repr::Inline { .. }) => self.raw_words() == o.raw_words(),
            _ => self.as_str() == o.as_str(),
        }
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, o: &Text) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Text {
    fn cmp(&self, o: &Text) -> Ordering {
        self.as_str().cmp(o.as_str())
    }
}

/// Lowercases the ASCII letters of 8 ASCII bytes at once.
#[inline]
fn ascii_lower_word(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // For ASCII bytes (< 0x80) these additions never carry across bytes.
    let ge_a = x + ONES * (0x80 - b'A' as u64);
    let gt_z = x + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = ge_a & !gt_z & HIGH;
    x | (upper >> 2)
}

/// Hashes by words for inline texts (every string of at most 22 bytes is
/// inline, so equal texts always hash equally). Not the same hash as
/// `str`'s, which is why `Text` does not implement `Borrow<str>`.
impl Hash for Text {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match &self.0 {
            Repr::Inline { .. } => {
                let [a, b, c] = self.raw_words();
                h.write_u64(a);
                h.write_u64(b);
                h.write_u64(c);
            }
            Repr::Shared(s) => s.hash(h),
        }
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}
impl From<String> for Text {
    fn from(s: String) -> Text {
        if s.len() <= INLINE_BYTES_MAX {
            Text::new(&s)
        } else {
            Text(Repr::Shared(Arc::from(s)))
        }
    }
}
impl From<Text> for String {
    fn from(t: Text) -> String {
        t.as_str().to_string()
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_shared_behave_like_str() {
        assert_eq!(std::mem::size_of::<Text>(), 24);
        let short = Text::new("Hello");
        let long = Text::new("a string that is longer than twenty-two bytes");
        assert_eq!(short, "Hello");
        assert_eq!(
            long.as_str(),
            "a string that is longer than twenty-two bytes"
        );
        assert_eq!(Text::lowercase("HeLLo"), "hello");
        assert_eq!(Text::lowercase("ÉCOLE"), "école");
        assert_eq!(long.to_lowercase(), long);
        assert!(Text::new("a") < Text::new("b"));
        for line in [
            "  A bC\tdé\u{3000}x ",
            "one\x0btwo  THREE\n",
            "",
            "   ",
            "aVeryLongWordThatExceedsTheInlineLimit x",
        ] {
            let mut got = Vec::new();
            Text::for_each_lowercase_word(line, |t| got.push(t));
            let want: Vec<Text> = line.split_whitespace().map(Text::lowercase).collect();
            assert_eq!(got, want, "{line:?}");
        }
        let mut m = std::collections::HashMap::new();
        m.insert(Text::new("k"), 1);
        assert_eq!(m.get(&Text::from(String::from("k"))), Some(&1));
        assert_eq!(
            Text::from("x".repeat(30)).to_lowercase(),
            Text::new(&"x".repeat(30))
        );
        let bytes = crate::codec::encode(&long).unwrap();
        assert_eq!(crate::codec::decode::<Text>(&bytes).unwrap(), long);
    }
}
