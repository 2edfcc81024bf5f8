//! Scale-out settings of a JetStream input: which of its streams
//! (partitions) this instance reads ([`Assignment`]), whether it fences
//! them with leases ([`ScaleOut`]), and [`LeasedSource`], the wrapper that
//! fails every read once a lease is lost.
//!
//! Limits: an assignment names 1 to [`crate::source::STREAMS_MAX`]
//! partitions; `instances` 1 to [`crate::source::STREAMS_MAX`]; lease
//! TTL as `jetstream_lease` bounds it.
//! Must never: give a partition to two instances of one assignment
//! (`instance i of n` partitions are disjoint by construction), or let a
//! read through after its lease was lost.

use std::ops::Range;
use std::sync::Arc;

use super::jetstream::STREAMS_MAX;
use super::jetstream_lease::{
    LeaseError, LeaseHealth, Leases, LEASE_TTL_MS_DEFAULT, LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN,
};
use crate::dstream::{BoxError, Source};

/// Which partitions (indexes into the input's `streams`) this instance
/// reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Assignment {
    /// Every stream.
    #[default]
    All,
    /// Instance `index` of `count`: the streams whose index `k` has
    /// `k % count == index`.
    Instance {
        /// This instance, `0..count`.
        index: usize,
        /// How many instances share the streams.
        count: usize,
    },
    /// The streams at these indexes.
    Partitions(Vec<usize>),
}

impl Assignment {
    /// The indexes this instance reads, ascending, of `n` streams (after
    /// [`Assignment::validate`]).
    pub fn owned(&self, n: usize) -> Vec<usize> {
        match self {
            Assignment::All => (0..n).collect(),
            Assignment::Instance { index, count } => {
                (0..n).filter(|k| k % count.max(&1) == *index).collect()
            }
            Assignment::Partitions(p) => {
                let mut v = p.clone();
                v.sort_unstable();
                v
            }
        }
    }

    /// Checks the assignment against `n` streams: it must name at least one
    /// partition, each once, each below `n`.
    pub fn validate(&self, n: usize) -> Result<(), LeaseError> {
        let bad = |setting, found: String, expected: String| {
            Err(LeaseError::Config {
                setting,
                found,
                expected,
            })
        };
        match self {
            Assignment::All => Ok(()),
            Assignment::Instance { index, count } => {
                if *count == 0 || *count > STREAMS_MAX {
                    return bad("instances", count.to_string(), format!("1 to {STREAMS_MAX}"));
                }
                if index >= count {
                    return bad("instance", index.to_string(), format!("0 to {}", count - 1));
                }
                if *index >= n {
                    let expected = format!("below the number of streams ({n}), or it reads none");
                    return bad("instance", index.to_string(), expected);
                }
                Ok(())
            }
            Assignment::Partitions(p) => {
                if p.is_empty() || p.len() > STREAMS_MAX {
                    let expected = format!("1 to {STREAMS_MAX} stream indexes");
                    return bad("partitions", p.len().to_string(), expected);
                }
                let mut seen = std::collections::BTreeSet::new();
                for &k in p {
                    if k >= n {
                        let expected = format!("an index into `streams` (0 to {})", n - 1);
                        return bad("partitions", k.to_string(), expected);
                    }
                    if !seen.insert(k) {
                        return bad("partitions", format!("{k} twice"), "each index once".into());
                    }
                }
                Ok(())
            }
        }
    }
}

/// How an instance shares a JetStream input with others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOut {
    /// Which streams it reads.
    pub assignment: Assignment,
    /// Claim each read stream in the owner and lease buckets
    /// (`docs/scale-out.md`); on by default. Only contexts with a data
    /// directory claim (without one nothing is durable to protect).
    pub leases: bool,
    /// How long a lease lives without renewal, in ms.
    pub lease_ttl_ms: u64,
    /// The name the claims show (default: the host name).
    pub instance_name: Option<String>,
}

impl Default for ScaleOut {
    fn default() -> Self {
        ScaleOut {
            assignment: Assignment::All,
            leases: true,
            lease_ttl_ms: LEASE_TTL_MS_DEFAULT,
            instance_name: None,
        }
    }
}

impl ScaleOut {
    /// Checks the assignment against `n` streams and the lease TTL.
    pub fn validate(&self, n: usize) -> Result<(), LeaseError> {
        self.assignment.validate(n)?;
        let ttl = self.lease_ttl_ms;
        if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(&ttl) {
            return Err(LeaseError::Config {
                setting: "lease_ttl_ms",
                found: ttl.to_string(),
                expected: format!("{LEASE_TTL_MS_MIN} to {LEASE_TTL_MS_MAX}"),
            });
        }
        Ok(())
    }
}

/// A partition's source behind its lease: every read first checks that
/// the instance still holds its leases. It forwards every method of
/// [`Source`] (a method left to its default would hide the inner
/// source's own, such as real positions in `read_each_at`). Holds the [`Leases`] (shared by
/// the instance's partitions), so they are released when the last
/// partition's source is dropped.
pub struct LeasedSource<T> {
    inner: Arc<dyn Source<T>>,
    health: Arc<LeaseHealth>,
    _leases: Arc<Leases>,
}

impl<T> LeasedSource<T> {
    /// `inner`, read only while `leases` hold.
    pub fn new(inner: Arc<dyn Source<T>>, leases: Arc<Leases>) -> Self {
        LeasedSource {
            inner,
            health: leases.health(),
            _leases: leases,
        }
    }
}

impl<T> Source<T> for LeasedSource<T> {
    fn available_end(&self) -> u64 {
        self.inner.available_end()
    }
    fn next_cut(&self, start: u64, max_end: u64) -> u64 {
        self.inner.next_cut(start, max_end)
    }
    fn read(&self, range: Range<u64>) -> Result<Vec<T>, BoxError> {
        self.health.check()?;
        self.inner.read(range)
    }
    fn read_each(&self, range: Range<u64>, f: &mut dyn FnMut(T) -> bool) -> Result<(), BoxError> {
        self.health.check()?;
        self.inner.read_each(range, f)
    }
    fn read_each_at(
        &self,
        range: Range<u64>,
        f: &mut dyn FnMut(u64, T) -> bool,
    ) -> Result<(), BoxError> {
        self.health.check()?;
        self.inner.read_each_at(range, f)
    }
    fn check_held(&self, range: Range<u64>) -> Result<(), BoxError> {
        self.inner.check_held(range)
    }
    fn release(&self, end: u64) {
        self.inner.release(end)
    }
    fn check(&self) -> Result<(), BoxError> {
        self.health.check()?;
        self.inner.check()
    }
    fn first_position(&self, fresh: bool) -> Result<u64, BoxError> {
        self.inner.first_position(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_share_streams_disjointly_and_completely() {
        for n in 1..=12 {
            for count in 1..=n {
                let mut all: Vec<usize> = (0..count)
                    .flat_map(|index| Assignment::Instance { index, count }.owned(n))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} count {count}");
            }
        }
        assert_eq!(Assignment::Instance { index: 1, count: 3 }.owned(8), vec![1, 4, 7]);
        assert_eq!(Assignment::Partitions(vec![6, 0, 3]).owned(8), vec![0, 3, 6]);
    }

    #[test]
    fn assignments_are_checked_against_the_streams() {
        let ok = |a: Assignment, n| a.validate(n).is_ok();
        assert!(ok(Assignment::All, 1));
        assert!(ok(Assignment::Instance { index: 2, count: 3 }, 8));
        assert!(!ok(Assignment::Instance { index: 3, count: 3 }, 8));
        assert!(!ok(Assignment::Instance { index: 0, count: 0 }, 8));
        assert!(!ok(Assignment::Instance { index: 0, count: STREAMS_MAX + 1 }, 8));
        assert!(!ok(Assignment::Instance { index: 4, count: 5 }, 4), "reads nothing");
        assert!(ok(Assignment::Partitions(vec![0, 3, 6]), 8));
        assert!(!ok(Assignment::Partitions(vec![]), 8));
        assert!(!ok(Assignment::Partitions(vec![8]), 8));
        assert!(!ok(Assignment::Partitions(vec![1, 1]), 8));
        let e = Assignment::Partitions(vec![9]).validate(8).unwrap_err().to_string();
        assert!(e.contains("partitions") && e.contains("0 to 7"), "{e}");
    }
}
