//! Property test: random sequences of append / sync / crash (with torn
//! writes) / reopen / cleanup / read / injected I/O failures, run on the
//! simulated filesystem and checked after every step against a plain model.
//!
//! The model is the list of records ever handed to the log (`written`) and
//! how many of them are known durable (`durable`). After any crash the log
//! must hold a prefix of `written` that is at least `durable` long: nothing
//! acknowledged is lost, nothing never appended appears, order is kept.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use weir::storage::sim::{Fault, SimFs, Tear};
use weir::storage::Storage;
use weir::wal::{SyncPolicy, Wal, WalConfig};

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<usize>),
    Sync,
    Crash {
        sector: u64,
        seed: u64,
        zero_fill: bool,
        tear: bool,
    },
    Reopen,
    Cleanup(u8),
    Read(u8, u8),
    FailNextSync(u64),
    FailNextAppend {
        nth: u64,
        keep: usize,
    },
    FailNextCreate,
    FailNextDirSync,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop::collection::vec(0usize..120, 1..6).prop_map(Step::Append),
        2 => Just(Step::Sync),
        2 => (prop_oneof![Just(512u64), Just(4096u64), Just(1u64)], any::<u64>(), any::<bool>(), any::<bool>())
            .prop_map(|(sector, seed, zero_fill, tear)| Step::Crash { sector, seed, zero_fill, tear }),
        1 => Just(Step::Reopen),
        1 => any::<u8>().prop_map(Step::Cleanup),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Step::Read(a, b)),
        1 => (1u64..3).prop_map(Step::FailNextSync),
        1 => (1u64..3, 0usize..200).prop_map(|(nth, keep)| Step::FailNextAppend { nth, keep }),
        1 => Just(Step::FailNextCreate),
        1 => Just(Step::FailNextDirSync),
    ]
}

fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut p = id.to_le_bytes().to_vec();
    p.resize(len.max(8), (id % 251) as u8);
    p
}

struct Harness {
    fs: SimFs,
    config: WalConfig,
    wal: Option<Wal>,
    /// Every record handed to the log, in LSN order (from LSN 0).
    written: Vec<Vec<u8>>,
    /// How many records of `written` are known durable.
    durable: usize,
    /// Whether an injected failure stopped the log.
    failed: bool,
    next_id: u64,
}

const DIR: &str = "/data/wal";

impl Harness {
    fn open(&mut self) {
        let storage: Arc<dyn Storage> = Arc::new(self.fs.clone());
        let (wal, report) =
            Wal::open_with(storage, Path::new(DIR), self.config.clone()).expect("open after crash");
        let end = report.next_lsn as usize;
        // The log holds a prefix of what was written, at least as long as
        // what was durable.
        assert!(
            end >= self.durable,
            "lost acknowledged records: log ends at {end}, {} were durable",
            self.durable
        );
        assert!(
            end <= self.written.len(),
            "log ends at {end} but only {} were ever written",
            self.written.len()
        );
        self.written.truncate(end);
        self.durable = end;
        self.failed = false;
        self.wal = Some(wal);
        self.check_contents(None);
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("open")
    }

    fn check_contents(&self, range: Option<(u64, u64)>) {
        let wal = self.wal();
        let (start, end) = range.unwrap_or((wal.first_lsn(), wal.end()));
        let got: Vec<(u64, Vec<u8>)> = wal
            .read(start..end)
            .expect("range within the log")
            .map(|r| {
                let r = r.expect("every record reads back intact");
                (r.lsn, r.payload)
            })
            .collect();
        assert_eq!(got.len() as u64, end - start);
        for (lsn, p) in got {
            assert_eq!(
                &p, &self.written[lsn as usize],
                "record {lsn} differs from what was appended"
            );
        }
    }

    fn run(&mut self, s: &Step) {
        match s {
            Step::Append(lens) => {
                let recs: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|&l| {
                        self.next_id += 1;
                        payload(self.next_id, l)
                    })
                    .collect();
                let before = self.written.len();
                match self.wal().append(&recs) {
                    Ok(range) => {
                        assert!(!self.failed, "a failed log must refuse appends");
                        assert_eq!(range, before as u64..(before + recs.len()) as u64);
                        self.written.extend(recs);
                        if self.config.sync == SyncPolicy::GroupCommit {
                            self.durable = self.written.len();
                        }
                        assert_eq!(self.wal().end(), self.written.len() as u64);
                    }
                    Err(_) => {
                        // Whatever part of it reached the files may survive
                        // as a prefix; none of it was acknowledged.
                        self.written.extend(recs);
                        self.failed = true;
                    }
                }
            }
            Step::Sync => match self.wal().sync() {
                Ok(end) => {
                    assert!(!self.failed);
                    assert_eq!(end, self.written.len() as u64);
                    self.durable = self.written.len();
                }
                Err(_) => self.failed = true,
            },
            Step::Crash {
                sector,
                seed,
                zero_fill,
                tear,
            } => {
                let t = if *tear {
                    Tear::Sectors {
                        sector_bytes: *sector,
                        seed: *seed,
                        zero_fill: *zero_fill,
                    }
                } else {
                    Tear::None
                };
                self.fs.crash(t);
                self.wal = None;
                self.open();
            }
            Step::Reopen => {
                self.wal = None;
                self.fs.clear_faults();
                self.open();
            }
            Step::Cleanup(frac) => {
                if self.failed {
                    return;
                }
                let wal = self.wal();
                let cut = wal.first_lsn() + (wal.end() - wal.first_lsn()) * u64::from(*frac) / 255;
                // An injected fault may fail the deletion or the directory
                // fsync; the log must stay readable either way.
                let _ = wal.remove_segments_below(cut);
                assert!(
                    wal.first_lsn() <= cut,
                    "cleanup removed a record at or above the cut"
                );
                assert!(!wal.segments().is_empty());
                self.check_contents(None);
            }
            Step::Read(a, b) => {
                let wal = self.wal();
                let (first, end) = (wal.first_lsn(), wal.end());
                let span = end - first;
                let x = first + span * u64::from(*a) / 255;
                let y = first + span * u64::from(*b) / 255;
                self.check_contents(Some((x.min(y), x.max(y))));
            }
            Step::FailNextSync(n) => self.fs.set_fault(Fault::FailSync(*n)),
            Step::FailNextAppend { nth, keep } => self.fs.set_fault(Fault::FailAppend {
                nth: *nth,
                keep: *keep,
            }),
            Step::FailNextCreate => self.fs.set_fault(Fault::FailCreateNew(1)),
            Step::FailNextDirSync => self.fs.set_fault(Fault::FailSyncDir(1)),
        }
    }
}

fn run_case(steps: &[Step], group_commit: bool, segment_bytes_max: u64) {
    let config = WalConfig {
        segment_bytes_max,
        record_bytes_max: 128,
        index_interval_bytes: 100,
        read_chunk_bytes: 64,
        sync: if group_commit {
            SyncPolicy::GroupCommit
        } else {
            SyncPolicy::NoSyncUnsafe
        },
        ..WalConfig::default()
    };
    let mut h = Harness {
        fs: SimFs::new(),
        config,
        wal: None,
        written: Vec::new(),
        durable: 0,
        failed: false,
        next_id: 0,
    };
    h.open();
    for s in steps {
        h.run(s);
    }
    // A final crash must keep everything durable.
    h.fs.crash(Tear::Sectors {
        sector_bytes: 512,
        seed: 7,
        zero_fill: true,
    });
    h.wal = None;
    h.open();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model(
        steps in prop::collection::vec(step(), 1..60),
        group_commit in any::<bool>(),
        segment_bytes_max in 200u64..700,
    ) {
        run_case(&steps, group_commit, segment_bytes_max);
    }
}

/// A regression anchor: a torn write across a segment roll.
#[test]
fn crash_during_roll_keeps_the_sealed_prefix() {
    let steps = vec![
        Step::Append(vec![100, 100]),
        Step::Append(vec![100, 100, 100]),
        Step::FailNextCreate,
        Step::Append(vec![100, 100, 100]),
        Step::Crash {
            sector: 512,
            seed: 1,
            zero_fill: false,
            tear: true,
        },
        Step::Append(vec![5]),
    ];
    run_case(&steps, true, 300);
}
