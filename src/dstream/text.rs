//! [`Text`]: the string record type of the engine.
//!
//! An immutable string that stores up to [`INLINE_BYTES_MAX`] (22) bytes
//! inline (no heap allocation, cloning is a 24-byte copy) and longer strings
//! in a shared `Arc<str>` (cloning is a reference-count increment). Words
//! split out of a line and lowercased therefore cost no allocation per word
//! unless a word is longer than 22 bytes. It hashes, compares and orders
//! exactly like `str`, so it can be looked up by `&str`.

use std::borrow::Borrow;
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

    /// This text in lowercase.
    #[inline]
    pub fn to_lowercase(&self) -> Text {
        Text::lowercase(self.as_str())
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

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
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
        self.as_str() == o.as_str()
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

impl Hash for Text {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
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
        let mut m = std::collections::HashMap::new();
        m.insert(Text::new("k"), 1);
        assert_eq!(m.get("k"), Some(&1));
        let bytes = crate::codec::encode(&long).unwrap();
        assert_eq!(crate::codec::decode::<Text>(&bytes).unwrap(), long);
    }
}
