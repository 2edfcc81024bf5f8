//! The built-in generator source: tweet-like lines (`crate::testdata`) at
//! a configured rate, for demos and benchmarks.
//!
//! Record `p` is always the same text (lines `p*L .. p*L+L` of a fixed
//! sequence of 1024-line chunks, each chunk from its own seed), so a batch
//! replayed after a crash reads exactly what it read before, without a
//! log. Records become available at `records_per_second` from the moment
//! the source was created, up to `count` if set; [`GeneratorSource::
//! stop_accepting`] freezes the end at the last cut, so a graceful stop
//! has nothing left to drain.
//!
//! Limits: at most [`CHUNKS_CACHED_MAX`] chunks of [`CHUNK_LINES`] lines
//! cached; a read holds one batch partition's records.
//! Must never: do I/O, or give a position two different texts.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::dstream::{BoxError, Source, Text};
use crate::testdata::TweetGenerator;

/// Lines generated together (one seed each).
pub const CHUNK_LINES: u64 = 1024;
/// Chunks kept in the cache.
pub const CHUNKS_CACHED_MAX: usize = 64;

/// The generator's settings (keys of a `kind = "generator"` source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Records made available per second.
    pub records_per_second: u64,
    /// Total records, then nothing more (None: no end).
    pub count: Option<u64>,
    /// Seed of the text.
    pub seed: u64,
    /// Tweet lines per record.
    pub lines_per_record: u64,
    /// Appended after every line of a record (e.g. `" __end "`).
    pub separator: String,
    /// Records as JSON objects instead of text (see [`GeneratorSource::record`]).
    pub json: bool,
    /// Feed the records through the stream's write-ahead log, like a
    /// receiver (the service's `durable = true`), instead of reading them
    /// straight from the generator.
    pub durable: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            records_per_second: 100,
            count: None,
            seed: 1,
            lines_per_record: 1,
            separator: String::new(),
            json: false,
            durable: false,
        }
    }
}

#[derive(Debug, Default)]
struct Cut {
    /// Position at the first cut (where this process started).
    base: Option<u64>,
    /// End of the last cut.
    last: u64,
    /// Set by `stop_accepting`: nothing beyond it becomes available.
    frozen: Option<u64>,
}

/// The generator; see the module docs.
pub struct GeneratorSource {
    cfg: GeneratorConfig,
    clock: Arc<dyn Clock>,
    created_ms: u64,
    words: TweetGenerator,
    cut: Mutex<Cut>,
    cache: Mutex<VecDeque<(u64, Arc<Vec<String>>)>>,
}

impl std::fmt::Debug for GeneratorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl GeneratorSource {
    /// A generator whose records start flowing now (by `clock`).
    pub fn new(cfg: GeneratorConfig, clock: Arc<dyn Clock>) -> Self {
        GeneratorSource {
            created_ms: clock.now_ms(),
            cfg,
            clock,
            words: TweetGenerator::new(),
            cut: Mutex::new(Cut::default()),
            cache: Mutex::new(VecDeque::new()),
        }
    }

    /// Stops making records available beyond the last cut (a graceful stop
    /// then finds nothing to drain).
    pub fn stop_accepting(&self) {
        let mut c = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        c.frozen = Some(c.last);
    }

    /// End of the last batch cut so far.
    pub fn last_cut(&self) -> u64 {
        self.cut.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    fn available(&self, c: &Cut) -> u64 {
        if let Some(f) = c.frozen {
            return f;
        }
        let Some(base) = c.base else {
            return c.last;
        };
        let elapsed = self.clock.now_ms().saturating_sub(self.created_ms);
        let n = (elapsed as u128 * self.cfg.records_per_second as u128 / 1000) as u64;
        let end = base.saturating_add(n);
        self.cfg.count.map_or(end, |c| end.min(c)).max(c.last)
    }

    fn chunk(&self, index: u64) -> Arc<Vec<String>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, c)) = cache.iter().find(|(i, _)| *i == index) {
                return c.clone();
            }
        }
        let seed = self.cfg.seed.rotate_left(32) ^ index;
        let lines = Arc::new(self.words.lines(CHUNK_LINES as usize, seed));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.push_back((index, lines.clone()));
        while cache.len() > CHUNKS_CACHED_MAX {
            cache.pop_front();
        }
        lines
    }

    /// The text of record `pos`: its lines, each followed by the
    /// separator; with `json`, one object per record
    /// `{"id": pos, "user": <first @mention or "anonymous">, "text": <line>,
    /// "hashtags": <number of #words>}` (of its first line).
    pub fn record(&self, pos: u64) -> String {
        if self.cfg.json {
            let line = self.line(pos.saturating_mul(self.cfg.lines_per_record.max(1)));
            let user = line
                .split(' ')
                .find(|w| w.starts_with('@'))
                .unwrap_or("anonymous");
            let tags = line.split(' ').filter(|w| w.starts_with('#')).count();
            return serde_json::json!({"id": pos, "user": user, "text": line, "hashtags": tags})
                .to_string();
        }
        let per = self.cfg.lines_per_record.max(1);
        let mut s = String::with_capacity((per as usize) * (83 + self.cfg.separator.len()));
        for line in pos.saturating_mul(per)..pos.saturating_mul(per).saturating_add(per) {
            s.push_str(&self.line(line));
            s.push_str(&self.cfg.separator);
        }
        s
    }

    fn line(&self, line: u64) -> String {
        self.chunk(line / CHUNK_LINES)[(line % CHUNK_LINES) as usize].clone()
    }
}

impl Source<Text> for GeneratorSource {
    fn available_end(&self) -> u64 {
        let c = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        self.available(&c)
    }

    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        let mut c = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        if c.base.is_none() {
            c.base = Some(start);
            c.last = start;
        }
        let end = self.available(&c).min(max_end).max(start);
        c.last = end;
        end
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<Text>, BoxError> {
        Ok(range.map(|p| Text::from(self.record(p))).collect())
    }

    /// Generates record by record, so `print` makes only what it shows.
    fn read_each(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(Text) -> bool,
    ) -> Result<(), BoxError> {
        for p in range {
            if !f(Text::from(self.record(p))) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn records_are_deterministic_and_flow_at_the_rate() {
        let clock = Arc::new(ManualClock::new(0));
        let cfg = GeneratorConfig {
            records_per_second: 100,
            count: Some(250),
            lines_per_record: 2,
            separator: " __end ".into(),
            ..GeneratorConfig::default()
        };
        let g = GeneratorSource::new(cfg.clone(), clock.clone());
        let g2 = GeneratorSource::new(cfg, clock.clone());
        assert_eq!(g.record(1500), g2.record(1500));
        // Record by record, stopping when asked: the same records as `read`.
        let mut seen = Vec::new();
        g.read_each(10..1000, &mut |t| {
            seen.push(t);
            seen.len() < 3
        })
        .unwrap();
        assert_eq!(seen, g.read(10..13).unwrap());
        assert_ne!(g.record(1), g.record(2));
        assert_eq!(g.record(3).matches(" __end ").count(), 2);
        assert_eq!(g.record(3).len(), 2 * (82 + 7));
        clock.advance(1000);
        assert_eq!(g.next_cut(0, u64::MAX), 100);
        clock.advance(500);
        assert_eq!(g.next_cut(100, 120), 120, "capped by max_end");
        clock.advance(10_000);
        assert_eq!(g.next_cut(120, u64::MAX), 250, "capped by count");
        let r = g.read(10..12).expect("read");
        assert_eq!(r[1].as_str(), g2.record(11));
        let j = GeneratorSource::new(
            GeneratorConfig {
                json: true,
                ..GeneratorConfig::default()
            },
            clock,
        );
        let v: serde_json::Value = serde_json::from_str(&j.record(5)).expect("json");
        assert_eq!(v["id"], 5);
        assert_eq!(v["text"].as_str().map(str::len), Some(82));
    }

    #[test]
    fn stop_accepting_freezes_at_the_last_cut() {
        let clock = Arc::new(ManualClock::new(0));
        let g = GeneratorSource::new(GeneratorConfig::default(), clock.clone());
        clock.advance(1000);
        assert_eq!(
            g.next_cut(40, u64::MAX),
            140,
            "resumes at the recovered position"
        );
        g.stop_accepting();
        clock.advance(5000);
        assert_eq!(g.available_end(), 140);
        assert_eq!(g.next_cut(140, u64::MAX), 140);
    }
}
