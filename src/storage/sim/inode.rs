//! The simulated filesystem's objects: directories with live and durable
//! entries, inodes with live and durable images, and what a crash (torn or
//! not) or a failed sync does to an inode. Pure data; [`super::SimFs`]
//! holds them behind its lock.
//!
//! Limits: a torn crash keeps at most the unsynced tail of one append
//! (a prefix ending at a sector boundary), never reordered writes.
//! Must never: touch a real disk.

use std::collections::BTreeMap;

use super::Tear;

/// An inode number.
pub(super) type Ino = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    File(Ino),
    Dir,
}

#[derive(Debug, Default)]
pub(super) struct Dir {
    pub(super) live: BTreeMap<String, Entry>,
    pub(super) durable: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
pub(super) struct Inode {
    pub(super) live: Vec<u8>,
    pub(super) durable: Vec<u8>,
    /// Truncated (or extended by truncate) since the last sync: the change
    /// is not a pure append.
    pub(super) rewritten: bool,
    /// Live byte range `[start, end)` whose dirty pages were dropped by a
    /// failed sync: it never reaches the durable image.
    pub(super) lost: Option<(usize, usize)>,
    /// Handles of the current generation referencing this inode.
    pub(super) open_handles: usize,
}

impl Inode {
    pub(super) fn is_pure_extension(&self) -> bool {
        !self.rewritten
            && self.live.len() > self.durable.len()
            && self.live.starts_with(&self.durable)
    }

    /// A sync failed: the dirty bytes are forgotten.
    pub(super) fn drop_dirty(&mut self) {
        if !self.rewritten && self.live == self.durable {
            return;
        }
        let start = if !self.rewritten && self.live.starts_with(&self.durable) {
            self.durable.len()
        } else {
            0
        };
        let end = self.live.len();
        let (start, end) = match self.lost {
            Some((s, e)) => (s.min(start), e.max(end)),
            None => (start, end),
        };
        self.lost = (start < end).then_some((start, end));
    }

    /// A sync succeeded: durable := live, except forgotten bytes.
    pub(super) fn commit(&mut self) {
        let mut image = self.live.clone();
        if let Some((start, end)) = self.lost.take() {
            let end = end.min(image.len());
            for (i, byte) in image.iter_mut().enumerate().take(end).skip(start) {
                *byte = self.durable.get(i).copied().unwrap_or(0);
            }
        }
        self.durable = image;
        self.rewritten = false;
    }

    pub(super) fn clip_lost(&mut self) {
        let len = self.live.len();
        self.lost = self
            .lost
            .map(|(s, e)| (s, e.min(len)))
            .filter(|&(s, e)| s < e);
    }

    /// Power loss: what is on disk afterwards becomes both images.
    pub(super) fn crash(&mut self, tear: Tear, ino: Ino) {
        let survived = match tear {
            Tear::Sectors {
                sector_bytes,
                seed,
                zero_fill,
            } if self.is_pure_extension() => {
                let mut rng = SplitMix64::new(seed ^ ino.wrapping_mul(0xA24B_AED4_963E_E407));
                let durable_len = self.durable.len() as u64;
                let live_len = self.live.len() as u64;
                let sector = sector_bytes.max(1);
                let cut = choose_cut(durable_len, live_len, sector, &mut rng);
                let end = if zero_fill {
                    (cut / sector + 1).saturating_mul(sector).min(live_len)
                } else {
                    cut
                };
                // cut <= end <= live_len, which is a usize.
                let (cut, end) = (cut as usize, end as usize);
                let mut image = self.live[..cut].to_vec();
                if let Some((s, e)) = self.lost {
                    let from = s.max(self.durable.len());
                    for byte in image.iter_mut().take(e).skip(from) {
                        *byte = 0;
                    }
                }
                image.resize(end, 0);
                trim_zero_tail(&mut image, self.durable.len());
                image
            }
            _ => self.durable.clone(),
        };
        self.durable = survived;
        self.live = self.durable.clone();
        self.rewritten = false;
        self.lost = None;
        self.open_handles = 0;
    }
}

/// Keeps at most [`super::ZERO_TAIL_BYTES_MAX`] zero bytes at the end of
/// the unsynced part of a torn image (from `durable_len` on): the fault
/// model is that a crash leaves at most one sector of zeros, so a longer
/// zero run survives as its first sector only (a shorter prefix, which a
/// crash may always leave).
fn trim_zero_tail(image: &mut Vec<u8>, durable_len: usize) {
    let unsynced = image.get(durable_len..).unwrap_or(&[]);
    let zeros = unsynced.iter().rev().take_while(|&&b| b == 0).count();
    if zeros > super::ZERO_TAIL_BYTES_MAX {
        image.truncate(image.len() - zeros + super::ZERO_TAIL_BYTES_MAX);
    }
}

/// Picks the end of the surviving prefix of an unsynced append from
/// `durable_len` to `live_len` (`durable_len < live_len`): the durable
/// length, a sector boundary in between, or the live length, uniformly.
fn choose_cut(durable_len: u64, live_len: u64, sector: u64, rng: &mut SplitMix64) -> u64 {
    let first_boundary = (durable_len / sector + 1).saturating_mul(sector);
    let inner = if first_boundary < live_len {
        (live_len - 1 - first_boundary) / sector + 1
    } else {
        0
    };
    let choices = inner + 2;
    match rng.next_u64() % choices {
        0 => durable_len,
        i if i == choices - 1 => live_len,
        i => first_boundary + (i - 1) * sector,
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, deterministic, good enough.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
