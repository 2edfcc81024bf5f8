//! Synthetic tweet-like lines for examples, tests and benchmarks.
//!
//! Owns: a deterministic generator (xorshift, fixed seed) of lines of
//! exactly [`LINE_BYTES`] (82) bytes and [`LINE_WORDS`] (13) words drawn
//! with Zipf's law (s = 1, like natural language) from a 20 000-word
//! vocabulary of mixed-case words, `@mentions` and `#hashtags`.
//! Must never: do I/O.

/// Bytes per generated line.
pub const LINE_BYTES: usize = 82;
/// Words per generated line.
pub const LINE_WORDS: usize = 13;

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "qu", "da", "fe", "gi", "ho", "ju",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A vocabulary of `n` distinct words, most frequent first.
fn vocabulary(n: usize) -> Vec<String> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let syl = 1 + (rng.next() % 3) as usize;
        let mut w = String::new();
        for _ in 0..syl {
            w.push_str(SYLLABLES[(rng.next() % SYLLABLES.len() as u64) as usize]);
        }
        match rng.next() % 10 {
            0 => w.insert(0, '#'),
            1 => w.insert(0, '@'),
            2 => w = w.to_uppercase(),
            3 => {
                let mut c = w.chars();
                let f = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or('X');
                w = std::iter::once(f).chain(c).collect();
            }
            _ => {}
        }
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

#[cfg(any(test, feature = "testing"))]
/// `count` lines, each exactly 82 bytes and 13 words, deterministic for
/// a given `seed`.
pub fn tweet_lines(count: usize, seed: u64) -> Vec<String> {
    TweetGenerator::new().lines(count, seed)
}

/// The vocabulary behind [`tweet_lines`], built once (about 20 000 words)
/// so that callers generating many chunks do not rebuild it each time.
pub struct TweetGenerator {
    vocab: Vec<String>,
    by_len: Vec<Vec<String>>,
}

impl Default for TweetGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl TweetGenerator {
    /// Builds the vocabulary.
    pub fn new() -> Self {
        let vocab = vocabulary(20_000);
        let mut by_len: Vec<Vec<String>> = vec![Vec::new(); LINE_BYTES];
        for w in vocab.iter().take(2_000) {
            if w.len() < LINE_BYTES {
                by_len[w.len()].push(w.clone());
            }
        }
        TweetGenerator { vocab, by_len }
    }

    /// The same lines as `tweet_lines(count, seed)`.
    pub fn lines(&self, count: usize, seed: u64) -> Vec<String> {
        let (vocab, by_len) = (&self.vocab, &self.by_len);
        // SplitMix64 of the seed: nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut rng = Rng((z ^ (z >> 31)) | 1);
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let mut words: Vec<String> = (0..LINE_WORDS)
                .map(|_| {
                    // Zipf's law (s = 1, as in natural language): rank
                    // N^u - 1 for uniform u has P(rank < r) = ln(r + 1) / ln(N).
                    let u = (rng.next() % 1_000_000) as f64 / 1_000_000.0;
                    let rank = (vocab.len() as f64).powf(u) as usize - 1;
                    vocab[rank.min(vocab.len() - 1)].clone()
                })
                .collect();
            let len: usize = words.iter().map(String::len).sum::<usize>() + LINE_WORDS - 1;
            if len > LINE_BYTES || len + 12 < LINE_BYTES {
                continue;
            }
            // Replace the last word by a vocabulary word of the length that
            // makes the line exactly LINE_BYTES long (retry if there is none).
            let need = LINE_BYTES - (len - words[LINE_WORDS - 1].len());
            let Some(fit) = by_len.get(need).and_then(|ws| {
                (!ws.is_empty()).then(|| ws[(rng.next() % ws.len() as u64) as usize].clone())
            }) else {
                continue;
            };
            words[LINE_WORDS - 1] = fit;
            out.push(words.join(" "));
        }
        out
    }
}

#[cfg(any(test, feature = "testing"))]
/// The seed's wire shape: each tweet followed by ` __end `.
pub fn with_end_markers(tweets: &[String]) -> String {
    tweets.iter().map(|t| format!("{t} __end ")).collect()
}

#[cfg(any(test, feature = "testing"))]
/// The seed's first step: split text on `__end`, trim, drop empty pieces,
/// lowercase.
pub fn split_tweets(text: &str) -> Vec<String> {
    text.split("__end")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn end_markers_round_trip() {
        let t = vec!["Hello World".to_string(), "#Rust".into()];
        let wire = super::with_end_markers(&t);
        assert_eq!(wire, "Hello World __end #Rust __end ");
        assert_eq!(super::split_tweets(&wire), vec!["hello world", "#rust"]);
    }

    #[test]
    fn lines_have_the_promised_shape() {
        for l in super::tweet_lines(100, 7) {
            assert_eq!(l.len(), super::LINE_BYTES);
            assert_eq!(l.split_whitespace().count(), super::LINE_WORDS);
        }
        assert_eq!(super::tweet_lines(3, 1), super::tweet_lines(3, 1));
        assert_ne!(super::tweet_lines(3, 1000), super::tweet_lines(3, 1001));
    }
}
