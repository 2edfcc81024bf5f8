//! [`Text`]: the string record type of the engine.
//!
//! An immutable string that stores up to [`INLINE_BYTES_MAX`] (22) bytes
//! inline (no heap allocation, cloning is a 24-byte copy) and longer strings
//! in a shared `Arc<str>` (cloning is a reference-count increment). Words
//! split out of a line and lowercased therefore cost no allocation per word
//! unless a word is longer than 22 bytes. It compares and orders exactly
//! like `str`; it hashes inline strings as three words.
//!
//! Limits: inline up to [`INLINE_BYTES_MAX`] (22) bytes; the bitmask word
//! splitter handles lines up to 256 bytes (longer lines use
//! `str::split_whitespace`). Must never: hold a string of at most 22 bytes
//! in shared form (hash and equality rely on one representation per
//! string); requires 64-bit pointers.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest string stored inline, in bytes.
pub const INLINE_BYTES_MAX: usize = 22;

/// Byte 23 of a shared text; an inline text keeps its length there.
const SHARED: u8 = 0xFF;

/// An immutable, cheaply clonable string (see the module docs).
///
/// Layout (24 bytes, 8-aligned, little-endian): inline, bytes `0..22`
/// hold the string zero-padded and byte 23 its length; shared, bytes `0..8`
/// hold the `Arc<str>` data pointer, `8..16` its length, byte 23 is `0xFF`.
/// Every string of at most 22 bytes is inline and every longer one shared,
/// so equal strings always have the same representation. Inline texts are
/// built with three 8-byte stores and read back with three 8-byte loads
/// (hash, equality), which keeps store-to-load forwarding cheap.
///
/// The first word is a pointer field so that a shared text keeps the
/// provenance of its `Arc` (no integer-to-pointer cast); an inline text
/// stores its first 8 bytes there as an address without provenance.
///
/// Miri checks it: the "Miri" step of `.ci/run` runs this module's unit
/// tests (and those of `dstream::pair`) under `cargo +nightly miri test`
/// with `-Zmiri-strict-provenance`, covering every `unsafe` block here:
/// inline and shared reads, clone and drop across threads, `emit_inline`
/// at every inline length and the SSE2 whitespace scan.
#[repr(C, align(8))]
pub struct Text {
    /// Inline: bytes `0..8` as an address. Shared: the `Arc<str>` data.
    p: *const u8,
    /// Inline: bytes `8..16`. Shared: the string's length.
    m: u64,
    /// Inline: bytes `16..22`, a zero, the length. Shared: `0xFF << 56`.
    t: u64,
}

const _: () = assert!(std::mem::size_of::<Text>() == 24);
const _: () = assert!(
    std::mem::size_of::<usize>() == 8,
    "Text needs 64-bit pointers"
);
const _: () = assert!(
    cfg!(target_endian = "little"),
    "Text's inline bytes are its words in little-endian order"
);

// SAFETY: a `Text` is either plain bytes or an owned strong reference to an
// `Arc<str>`, which is `Send + Sync`.
unsafe impl Send for Text {}
unsafe impl Sync for Text {}

impl Text {
    /// A text holding `s`.
    #[inline]
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE_BYTES_MAX {
            let mut b = [0u8; 24];
            b[..s.len()].copy_from_slice(s.as_bytes());
            b[23] = s.len() as u8;
            Text::from_words(words_of(&b))
        } else {
            Text::shared(Arc::from(s))
        }
    }

    /// An inline text from its three words (`w[2] >> 56` is the length,
    /// at most 22; the bytes past it are zero).
    #[inline]
    fn from_words(w: [u64; 3]) -> Text {
        Text {
            p: std::ptr::null::<u8>().wrapping_add(w[0] as usize),
            m: w[1],
            t: w[2],
        }
    }

    /// The three words (inline: the bytes; shared: address, length, tag).
    #[inline]
    fn words(&self) -> [u64; 3] {
        [self.p as usize as u64, self.m, self.t]
    }

    fn shared(a: Arc<str>) -> Text {
        debug_assert!(a.len() > INLINE_BYTES_MAX);
        let len = a.len() as u64;
        Text {
            p: Arc::into_raw(a) as *const u8,
            m: len,
            t: (SHARED as u64) << 56,
        }
    }

    #[inline]
    fn is_inline(&self) -> bool {
        (self.t >> 56) as u8 != SHARED
    }

    /// The `Arc<str>` pointer of a shared text.
    #[inline]
    fn shared_ptr(&self) -> *const str {
        std::ptr::slice_from_raw_parts(self.p, self.m as usize) as *const str
    }

    /// `s` in lowercase (Unicode rules, like `str::to_lowercase`); ASCII
    /// words up to 22 bytes are lowercased without allocating.
    #[inline]
    pub fn lowercase(s: &str) -> Text {
        if s.len() <= INLINE_BYTES_MAX && s.is_ascii() {
            let mut buf = [0u8; INLINE_BYTES_MAX];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            buf[..s.len()].make_ascii_lowercase();
            let mut b = [0u8; 24];
            b[..22].copy_from_slice(&buf);
            b[23] = s.len() as u8;
            Text::from_words(words_of(&b))
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
        let b = s.as_bytes();
        let n = b.len();
        // One bit per byte, set for whitespace and for every position past
        // the end, so each word is a run of zero bits: finding word bounds
        // costs a few bit operations per word, not a branch per byte. The
        // same pass checks that the line is ASCII.
        let mut masks = [u64::MAX; MASK_WORDS];
        if n > MASK_BYTES_MAX || !whitespace_masks(b, &mut masks) {
            for w in s.split_whitespace() {
                f(Text::lowercase(w))
            }
            return;
        }
        // Word starts are the non-whitespace bits whose previous bit is
        // whitespace (position -1 counts as whitespace); each word ends at
        // the next whitespace bit, almost always in the same mask word.
        let mut carry = 1u64;
        for (wi, &m) in masks.iter().enumerate().take(n.div_ceil(64)) {
            let mut starts = !m & ((m << 1) | carry);
            carry = m >> 63;
            while starts != 0 {
                let bit = starts.trailing_zeros() as usize;
                starts &= starts - 1;
                let start = wi * 64 + bit;
                let rest = m & (u64::MAX << bit);
                let end = if rest != 0 {
                    wi * 64 + rest.trailing_zeros() as usize
                } else {
                    next_bit(&masks, (wi + 1) * 64, true).unwrap_or(n)
                }
                .min(n);
                let len = end - start;
                if len <= INLINE_BYTES_MAX {
                    emit_inline(inline_lower(b, start, len), &mut f)
                } else {
                    f(Text::lowercase(&s[start..end]))
                }
            }
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
        if self.is_inline() {
            let len = (self.t >> 56) as usize;
            // SAFETY: `Text` is `repr(C)`, 24 initialized bytes, and on
            // little-endian targets its bytes `..len` (`len <= 22`) are the
            // inline string; they were copied from a `&str` (or
            // ASCII-lowercased, which keeps UTF-8 valid) and never change
            // while `self` is borrowed.
            unsafe {
                let bytes = std::slice::from_raw_parts((self as *const Text).cast::<u8>(), len);
                std::str::from_utf8_unchecked(bytes)
            }
        } else {
            // SAFETY: a shared text owns one strong count of this Arc.
            unsafe { &*self.shared_ptr() }
        }
    }
}

#[inline]
fn words_of(b: &[u8; 24]) -> [u64; 3] {
    let w = |k: usize| {
        let mut c = [0u8; 8];
        c.copy_from_slice(&b[8 * k..8 * k + 8]);
        u64::from_le_bytes(c)
    };
    [w(0), w(1), w(2)]
}

impl Clone for Text {
    #[inline]
    fn clone(&self) -> Text {
        if !self.is_inline() {
            // SAFETY: `self` owns a strong count, so the Arc is alive.
            unsafe { Arc::increment_strong_count(self.shared_ptr()) }
        }
        Text {
            p: self.p,
            m: self.m,
            t: self.t,
        }
    }
}

impl Drop for Text {
    #[inline]
    fn drop(&mut self) {
        if !self.is_inline() {
            // SAFETY: gives back the strong count this text owns.
            unsafe { drop(Arc::from_raw(self.shared_ptr())) }
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
        // Inline texts are zero-padded: equal strings, equal words. An
        // inline text never equals a shared one (different lengths).
        if self.is_inline() {
            // Word by word in registers (an array compare goes through
            // the stack and stalls store-to-load forwarding).
            let (a, b) = (self.words(), o.words());
            ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2])) == 0
        } else {
            !o.is_inline() && self.as_str() == o.as_str()
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

/// Longest line (in bytes) split with whitespace bitmasks; longer lines
/// use `str::split_whitespace`.
const MASK_BYTES_MAX: usize = 256;
const MASK_WORDS: usize = MASK_BYTES_MAX / 64;

/// Sets bit `i % 64` of `masks[i / 64]` to whether `b[i]` is ASCII
/// whitespace (`char::is_whitespace`: space and `\t`..=`\r`); bits past
/// `b.len()` keep their value. `b.len() <= MASK_BYTES_MAX`.
///
/// Returns whether `b` is ASCII (when not, the masks are meaningless).
#[inline]
fn whitespace_masks(b: &[u8], masks: &mut [u64; MASK_WORDS]) -> bool {
    let n = b.len();
    let mut high = 0u32;
    // Sets the `take` bits at `i` (a multiple of 16, so one word holds them).
    let mut put = |i: usize, take: usize, bits: u64| {
        let (w, sh) = (i / 64, i % 64);
        let keep = (1u64 << take) - 1;
        masks[w] = (masks[w] & !(keep << sh)) | ((bits & keep) << sh);
    };
    if n < 16 {
        let mut chunk = [0u8; 16];
        chunk[..n].copy_from_slice(b);
        let (ws, hi) = whitespace16(&chunk);
        put(0, n, ws as u64);
        return hi == 0;
    }
    // Whole chunks are loaded in place; the tail re-reads the line's last
    // 16 bytes and keeps the bits of the bytes not covered yet, so no
    // chunk is copied (a variable-length copy is a `memcpy` call).
    let mut i = 0;
    while let Some(chunk) = b[i..].first_chunk::<16>() {
        let (ws, hi) = whitespace16(chunk);
        put(i, 16, ws as u64);
        high |= hi;
        i += 16;
    }
    if let (true, Some(last)) = (i < n, b.last_chunk::<16>()) {
        let take = n - i;
        let (ws, hi) = whitespace16(last);
        put(i, take, (ws >> (16 - take)) as u64);
        high |= hi;
    }
    high == 0
}

/// Bit `j` of `.0`: whether `chunk[j]` is ASCII whitespace; of `.1`:
/// whether it is not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline]
fn whitespace16(chunk: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline; the load reads exactly
    // the 16 bytes of `chunk` (unaligned load).
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr() as *const __m128i);
        let space = _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8));
        // `\t`..=`\r` is 9..=13: (v - 9) <= 4 as unsigned bytes.
        let t = _mm_sub_epi8(v, _mm_set1_epi8(9));
        let ctrl = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(4)), t);
        (
            _mm_movemask_epi8(_mm_or_si128(space, ctrl)) as u32,
            _mm_movemask_epi8(v) as u32,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn whitespace16(chunk: &[u8; 16]) -> (u32, u32) {
    let (mut m, mut high) = (0u32, 0u32);
    for (j, &c) in chunk.iter().enumerate() {
        m |= ((c == b' ' || (b'\t'..=b'\r').contains(&c)) as u32) << j;
        high |= ((c >= 0x80) as u32) << j;
    }
    (m, high)
}

/// Position of the first bit at or after `from` that is set (`set`) or
/// clear (`!set`), if any.
#[inline]
fn next_bit(masks: &[u64; MASK_WORDS], from: usize, set: bool) -> Option<usize> {
    let mut w = from / 64;
    if w >= MASK_WORDS {
        return None;
    }
    let flip = if set { 0 } else { u64::MAX };
    let mut m = (masks[w] ^ flip) & (u64::MAX << (from % 64));
    loop {
        if m != 0 {
            return Some(w * 64 + m.trailing_zeros() as usize);
        }
        w += 1;
        if w >= MASK_WORDS {
            return None;
        }
        m = masks[w] ^ flip;
    }
}

/// The ASCII word `b[start..start + len]` (`len <= 22`), lowercased, as an
/// inline text: loaded as three words (straight from the line when 24 bytes
/// are readable from `start`, else shifted out of the line's last 24 bytes,
/// else — lines under 24 bytes — via a copy), bytes past its end zeroed,
/// lowercased 8 bytes at a time.
#[inline(always)]
fn inline_lower(b: &[u8], start: usize, len: usize) -> [u64; 3] {
    let word = |c: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&c[..8]);
        u64::from_le_bytes(w)
    };
    let ws = if let Some(c) = b[start..].first_chunk::<24>() {
        [word(&c[..]), word(&c[8..]), word(&c[16..])]
    } else if let Some(c) = b.last_chunk::<24>() {
        // Near the end of the line: take its last 24 bytes and shift them
        // down by `d` bytes (a variable-length copy would be a `memcpy`
        // call for each of the line's last few words).
        let (w0, w1, w2) = (word(&c[..]), word(&c[8..]), word(&c[16..]));
        let d = start + 24 - b.len(); // 1..=23; the word fits in 24 - d
        let funnel = |lo: u64, hi: u64, bytes: usize| {
            ((lo as u128 | (hi as u128) << 64) >> (8 * bytes)) as u64
        };
        if d >= 16 {
            [w2 >> (8 * (d - 16)), 0, 0]
        } else if d >= 8 {
            [funnel(w1, w2, d - 8), w2 >> (8 * (d - 8)), 0]
        } else {
            [funnel(w0, w1, d), funnel(w1, w2, d), w2 >> (8 * d)]
        }
    } else {
        let mut tmp = [0u8; 24];
        tmp[..len].copy_from_slice(&b[start..start + len]);
        [word(&tmp[..]), word(&tmp[8..]), word(&tmp[16..])]
    };
    let m = &LEN_MASKS[len.min(INLINE_BYTES_MAX)];
    [
        ascii_lower_word(ws[0] & m[0]),
        ascii_lower_word(ws[1] & m[1]),
        ascii_lower_word(ws[2] & m[2]) | (len as u64) << 56,
    ]
}

/// Calls `f` with the inline text of words `w` (as [`Text::from_words`]),
/// built in memory with one 16-byte store for bytes `0..16` and one 8-byte
/// store for `16..24`. Why: the next stage moves a `Text` with a 16-byte
/// load; built from three 8-byte stores, that load cannot be forwarded
/// from the store buffer and stalls (~12 cycles per word, measured as
/// ~25 % of the word count's `map` stage).
#[inline(always)]
fn emit_inline(w: [u64; 3], f: &mut impl FnMut(Text)) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_set_epi64x, _mm_storeu_si128};
        let mut t = std::mem::MaybeUninit::<Text>::uninit();
        let p = t.as_mut_ptr().cast::<u8>();
        // SAFETY: `t` is 24 writable bytes, 8-aligned; the two stores
        // initialize all of them (0..16, then 16..24). The bytes are those
        // of `Text::from_words(w)` on this little-endian target: `p` gets
        // `w[0]` as an address without provenance (as `from_words` makes
        // it; an inline text never dereferences it), `m` = `w[1]`, `t` =
        // `w[2]`, whose top byte (the length, <= 22) marks it inline, so
        // dropping it frees nothing. SSE2 is part of the x86_64 baseline.
        // Checked by `emitted_texts_equal_built_texts`, under Miri in CI
        // (`.ci/run`) and once under valgrind memcheck: no uninitialized
        // byte is read.
        unsafe {
            _mm_storeu_si128(
                p.cast::<__m128i>(),
                _mm_set_epi64x(w[1] as i64, w[0] as i64),
            );
            p.add(16).cast::<u64>().write(w[2]);
            f(t.assume_init())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    f(Text::from_words(w))
}

/// `LEN_MASKS[n]`: the three words that keep the first `n` bytes of 24.
static LEN_MASKS: [[u64; 3]; INLINE_BYTES_MAX + 1] = {
    let mut t = [[0u64; 3]; INLINE_BYTES_MAX + 1];
    let mut n = 0;
    while n <= INLINE_BYTES_MAX {
        let mut k = 0;
        while k < 3 {
            let keep = n.saturating_sub(8 * k);
            t[n][k] = if keep >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * keep)) - 1
            };
            k += 1;
        }
        n += 1;
    }
    t
};

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
        if self.is_inline() {
            // Three independent multiplies (no dependency chain).
            let [a, b, c] = self.words();
            h.write_u64(
                a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                    ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
                    ^ c.wrapping_mul(0x1656_67b1_9e37_79f9),
            );
        } else {
            self.as_str().hash(h)
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
            Text::shared(Arc::from(s))
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
    fn shared_texts_own_exactly_one_reference_count() {
        let arc: Arc<str> = Arc::from("a string that is longer than twenty-two bytes");
        let t = Text::shared(arc.clone());
        assert_eq!(Arc::strong_count(&arc), 2);
        let copies: Vec<Text> = (0..10).map(|_| t.clone()).collect();
        assert_eq!(Arc::strong_count(&arc), 12);
        assert!(copies.iter().all(|c| *c == t && c.as_str() == &*arc));
        drop(copies);
        drop(t);
        assert_eq!(Arc::strong_count(&arc), 1);
        // Moving through a thread and a Vec keeps the count right.
        let t = Text::shared(arc.clone());
        let back = std::thread::spawn(move || vec![t.clone(), t])
            .join()
            .unwrap();
        assert_eq!(Arc::strong_count(&arc), 3);
        drop(back);
        assert_eq!(Arc::strong_count(&arc), 1);
    }

    /// Every way of building a text, for the boundary tests below.
    fn built_ways(s: &str) -> Vec<Text> {
        let mut v = vec![
            Text::new(s),
            Text::from(s),
            Text::from(s.to_string()),
            Text::new(s).clone(),
            crate::codec::decode(&crate::codec::encode(&Text::new(s)).unwrap()).unwrap(),
        ];
        if s == s.to_lowercase() {
            v.push(Text::lowercase(s));
            v.push(Text::new(s).to_lowercase());
            if !s.is_empty() && !s.contains(char::is_whitespace) {
                // At the start, in the middle and at the end of a line
                // (the last takes the copy path of `inline_lower`).
                for line in [
                    format!("{s} tail words here to pad the line out"),
                    format!("x {s} y"),
                    format!("head {s}"),
                ] {
                    let mut got = Vec::new();
                    Text::for_each_lowercase_word(&line, |t| got.push(t));
                    v.push(got.into_iter().find(|t| t.as_str() == s).unwrap());
                }
            }
        }
        v
    }

    fn hash_with<H: Hasher + Default>(t: &Text) -> u64 {
        let mut h = H::default();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn hash_and_eq_agree_across_constructors_at_the_inline_boundary() {
        use std::collections::hash_map::DefaultHasher;
        let mut all: Vec<(String, Text)> = Vec::new();
        for n in [
            0, 1, 7, 8, 9, 15, 16, 17, 21, 22, 23, 24, 25, 31, 32, 33, 64,
        ] {
            for s in ["a".repeat(n), "ab".repeat(n).chars().take(n).collect()] {
                let ways = built_ways(&s);
                assert!(ways.len() >= 7, "{n}");
                for t in &ways {
                    assert_eq!(t.as_str(), s);
                    assert_eq!(t.len(), n);
                    assert_eq!(t.is_inline(), n <= INLINE_BYTES_MAX, "{n}");
                    assert_eq!(*t, ways[0]);
                    assert_eq!(t.cmp(&ways[0]), Ordering::Equal);
                    assert_eq!(
                        hash_with::<crate::dstream::hash::WeirHasher>(t),
                        hash_with::<crate::dstream::hash::WeirHasher>(&ways[0])
                    );
                    assert_eq!(
                        hash_with::<DefaultHasher>(t),
                        hash_with::<DefaultHasher>(&ways[0])
                    );
                }
                all.push((s, ways[0].clone()));
            }
        }
        // Equality and order of texts are those of their strings, across
        // inline and shared forms (22 vs 23 bytes, prefixes).
        for (a, ta) in &all {
            for (b, tb) in &all {
                assert_eq!(ta == tb, a == b, "{a:?} {b:?}");
                assert_eq!(ta.cmp(tb), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn lowercasing_that_changes_length_keeps_the_representation_canonical() {
        // 'İ' (2 bytes) lowercases to 3 bytes: 11 of them = 22 bytes inline
        // become 33 bytes shared. 'ẞ' (3 bytes) lowercases to 'ß' (2 bytes):
        // 8 of them = 24 bytes shared become 16 bytes inline.
        let up = "İ".repeat(11);
        assert!(Text::new(&up).is_inline());
        let low = Text::lowercase(&up);
        assert!(!low.is_inline());
        assert_eq!(low, Text::new(&up.to_lowercase()));
        let up = "ẞ".repeat(8);
        assert!(!Text::new(&up).is_inline());
        let low = Text::new(&up).to_lowercase();
        assert!(low.is_inline());
        assert_eq!(low, Text::new(&"ß".repeat(8)));
        let mut got = Vec::new();
        Text::for_each_lowercase_word(&format!("{up} İİ"), |t| got.push(t));
        assert_eq!(got, vec![low, Text::new("i\u{307}i\u{307}")]);
    }

    #[test]
    fn shared_texts_survive_many_clones_across_threads_and_any_drop_order() {
        let arc: Arc<str> = Arc::from("x".repeat(100).as_str());
        let t = Text::shared(arc.clone());
        // Miri interprets ~1000x slower: fewer threads and clones.
        let (threads, clones) = if cfg!(miri) { (3, 100) } else { (8, 1000) };
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut v: Vec<Text> = (0..clones).map(|_| t.clone()).collect();
                    // Drop in an order that depends on the thread.
                    if i % 2 == 0 {
                        v.reverse();
                    }
                    let kept: Vec<Text> = v.drain(..).step_by(clones / 10).collect();
                    assert!(kept.iter().all(|k| k.as_str() == t.as_str()));
                    kept
                })
            })
            .collect();
        // The original goes first; the clones stay valid.
        drop(t);
        let kept: Vec<Text> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(Arc::strong_count(&arc), 1 + kept.len());
        assert!(kept.iter().all(|k| k.as_str() == &*arc));
        // Shared texts as map keys, cloned and replaced.
        let mut m = std::collections::HashMap::new();
        for k in &kept {
            *m.entry(k.clone()).or_insert(0) += 1;
        }
        assert_eq!(m.len(), 1);
        assert_eq!(m[&kept[0]], kept.len());
        m.insert(kept[0].clone(), 0);
        drop(kept);
        assert_eq!(Arc::strong_count(&arc), 2);
        drop(m);
        assert_eq!(Arc::strong_count(&arc), 1);
    }

    #[test]
    fn serde_round_trips_shared_texts_without_leaking_or_sharing() {
        let long = Text::new(&"long text! ".repeat(5));
        let short = Text::new("short");
        let v = vec![long.clone(), short.clone(), long.clone()];
        let bytes = crate::codec::encode(&v).unwrap();
        let back: Vec<Text> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, v);
        // Decoded texts own their own allocation.
        assert_ne!(back[0].as_ptr(), long.as_ptr());
        let clones: Vec<Text> = back.iter().cycle().take(30).cloned().collect();
        drop(back);
        drop(v);
        assert!(clones.iter().step_by(3).all(|t| *t == long));
        let s: String = clones[0].clone().into();
        assert_eq!(s, long.as_str());
        // A broken encoding is an error, not a text.
        assert!(crate::codec::decode::<Vec<Text>>(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn representation_is_canonical() {
        let short = "x".repeat(22);
        let long = "x".repeat(23);
        assert!(Text::new(&short).is_inline());
        assert!(Text::from(short.clone()).is_inline());
        assert!(!Text::new(&long).is_inline());
        assert!(Text::lowercase(&"X".repeat(22)).is_inline());
        assert_eq!(Text::lowercase(&"X".repeat(22)), Text::new(&short));
        assert_ne!(Text::new(&short), Text::new(&long));
        let de: Text =
            crate::codec::decode(&crate::codec::encode(&Text::new(&short)).unwrap()).unwrap();
        assert!(de.is_inline());
    }

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

    #[test]
    fn emitted_texts_equal_built_texts() {
        for len in 0..=INLINE_BYTES_MAX {
            let word: String = "AbCdEfGhIjKlMnOpQrStUvWx"[..len].to_string();
            let mut b = [0u8; 24];
            b[..len].copy_from_slice(word.to_lowercase().as_bytes());
            b[23] = len as u8;
            let mut got = Vec::new();
            emit_inline(words_of(&b), &mut |t| got.push(t));
            let want = Text::new(&word.to_lowercase());
            assert_eq!(got[0].words(), want.words(), "{len}");
            assert!(got[0].is_inline());
            assert_eq!(got[0].as_str(), want.as_str());
            assert_eq!(got[0].clone(), want);
        }
    }

    /// The deterministic twin of the proptests below, small enough for
    /// Miri: every line length from 0 to 50 bytes (SIMD chunk and tail
    /// loads, the three load paths of `inline_lower`, every `emit_inline`
    /// length), one line past the bitmask limit, and a non-ASCII line.
    #[test]
    fn splitter_matches_model_at_every_length() {
        let pattern = "Ab cD\tefGHIJ klmnopqrstuvwxyzABCDEFGH x\nY  Zz0123456789";
        for n in 0..=50 {
            let line: String = pattern.chars().cycle().take(n).collect();
            check_splitter(&line).unwrap_or_else(|e| panic!("{n} bytes: {e}"));
        }
        check_splitter(&"Word ".repeat(60)).expect("a line past the bitmask limit");
        check_splitter("ÉCOLE a\u{3000}B").expect("a non-ASCII line");
    }

    fn check_splitter(line: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut got = Vec::new();
        Text::for_each_lowercase_word(line, |t| got.push(t));
        let want: Vec<Text> = line.split_whitespace().map(Text::lowercase).collect();
        proptest::prop_assert_eq!(got, want);
        Ok(())
    }

    proptest::proptest! {
        /// The bitmask splitter against the model: whitespace splitting
        /// and lowercasing, at every line length up to past the bitmask
        /// limit and every word position (short lines, tails, long words).
        /// Too slow for Miri, which runs `splitter_matches_model_at_every_length`.
        #[test]
        #[cfg_attr(miri, ignore)]
        fn splitter_matches_split_whitespace(
            line in "[a-zA-Z0-9#@ \t\n\x0b\x0c\r]{0,300}",
        ) {
            check_splitter(&line)?;
        }

        /// Lines with a non-ASCII character anywhere (the ASCII check is
        /// part of the bitmask pass) take the `str` path and agree too.
        #[test]
        #[cfg_attr(miri, ignore)]
        fn splitter_matches_split_whitespace_on_non_ascii_lines(
            head in "[a-zA-Z #]{0,150}",
            c in "[\u{e9}\u{3000}\u{c9}]",
            tail in "[a-zA-Z #]{0,150}",
        ) {
            check_splitter(&format!("{head}{c}{tail}"))?;
        }
    }
}
