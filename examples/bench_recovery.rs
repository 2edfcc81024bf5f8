//! Recovery time: from "process start" (opening the data directory) to the
//! first new batch completed, with a large WAL backlog and a large state.
//!
//! Setup (not timed): a data directory whose checkpoint holds `KEYS` keys of
//! running-total state (one batch of `KEYS` distinct words, committed), then
//! `BACKLOG_BYTES` of 100-byte records appended to the input log and never
//! processed (the process was down while they arrived).
//!
//! Timed: `get_or_create` + `start` + the first batch completed. The first
//! batch is capped by `batch_records_max`, so a backlog never makes it slow
//! (no downtime storm).
//!
//! Then, the price of bucketed state: the time of one checkpoint commit
//! changing K scattered keys of a `KEYS`-key operator, for K from 1 to
//! 100,000 (the store alone, no pipeline).
//!
//! Run: `cargo run --release --example bench_recovery [BACKLOG_MIB] [KEYS]`
//! (defaults 1024 and 1000000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::checkpoint::{BatchSpec, CheckpointStore, SledCheckpointStore, SledConfig};
use weir::dstream::{EngineError, StateChange, StateDelta, StateStore};
use weir::wal::{SyncPolicy, Wal, WalConfig};
use weir::{ManualClock, StreamingContext};

fn build(
    dir: &std::path::Path,
    clock: Arc<ManualClock>,
) -> weir::Result<(StreamingContext, Arc<Wal>)> {
    let mut wal = None;
    let ssc = StreamingContext::get_or_create(dir, |b| {
        let ssc = b
            .batch_interval(Duration::from_secs(1))
            .batch_records_max(100_000)
            .parallelism(2)
            .clock(clock)
            .build()?;
        let (lines, w) = ssc.wal_text_stream("input")?;
        wal = Some(w);
        lines
            .map(|l: String| (l.split(' ').next().unwrap_or("").to_string(), 1u64))
            .update_state_by_key(|new: &[u64], old: Option<&u64>| {
                Some(old.copied().unwrap_or(0) + new.iter().sum::<u64>())
            })
            .name("totals")
            .foreach_batch(|_, _| Ok(()))?;
        Ok(ssc)
    })?;
    Ok((ssc, wal.expect("input log")))
}

/// A batch's encoded changes, as an operator would hand them over.
struct Changes(Vec<StateChange>);

impl StateDelta for Changes {
    fn op(&self) -> &str {
        "totals"
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self) -> Result<Vec<StateChange>, weir::codec::CodecError> {
        Ok(self.0.clone())
    }
    fn apply(&self, _: &mut StateStore) -> Result<(), EngineError> {
        Ok(())
    }
}

fn commit_cost(keys: u64) -> weir::Result<()> {
    let tmp = tempfile::tempdir().map_err(|e| weir::Error::Usage(e.to_string()))?;
    let mut store = SledCheckpointStore::open(tmp.path(), SledConfig::default())
        .map_err(weir::scheduler::SchedulerError::from)?;
    let change = |i: u64, v: u64| -> weir::Result<StateChange> {
        Ok(StateChange {
            key: weir::codec::encode(&format!("key{i:09}"))?,
            value: Some(weir::codec::encode(&v)?),
        })
    };
    let mut t_ms = 0;
    let mut commit = |changes: Vec<StateChange>| -> weir::Result<Duration> {
        t_ms += 1000;
        let spec = BatchSpec {
            time_ms: t_ms,
            zero_ms: 0,
            ranges: vec![],
        };
        store
            .allocate(&spec)
            .map_err(weir::scheduler::SchedulerError::from)?;
        let t = Instant::now();
        store
            .commit(t_ms, &[Box::new(Changes(changes)) as Box<dyn StateDelta>])
            .map_err(weir::scheduler::SchedulerError::from)?;
        Ok(t.elapsed())
    };
    let all = (0..keys)
        .map(|i| change(i, 1))
        .collect::<weir::Result<Vec<_>>>()?;
    let first = commit(all)?;
    println!(
        "commit of {keys} new keys into an empty operator: {:.3} s",
        first.as_secs_f64()
    );
    for k in [1u64, 100, 10_000, 100_000] {
        // Scattered: every (keys / k)-th key, so each falls in its own bucket
        // as long as k is below the bucket count.
        let step = (keys / k).max(1);
        let changes = (0..k.min(keys))
            .map(|j| change(j * step, 2))
            .collect::<weir::Result<Vec<_>>>()?;
        let d = commit(changes)?;
        println!(
            "commit of {k} scattered changed keys (of {keys}): {:.1} ms",
            d.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

fn main() -> weir::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let backlog_mib: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let keys: u64 = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().map_err(|e| weir::Error::Usage(e.to_string()))?;
    let dir = tmp.path();
    let clock = Arc::new(ManualClock::new(0));

    // 1. State: one batch of `keys` distinct words, committed.
    let t = Instant::now();
    {
        let (ssc, wal) = build(dir, clock.clone())?;
        let recs: Vec<String> = (0..keys).map(|i| format!("key{i:09} x")).collect();
        for chunk in recs.chunks(50_000) {
            wal.append(chunk)?;
        }
        ssc.start()?;
        let mut t_ms = 1000;
        while ssc
            .statistics()
            .iter()
            .map(|s| s.input_records)
            .sum::<u64>()
            < keys
        {
            clock.set(t_ms);
            ssc.await_batch(t_ms, Duration::from_secs(600))?;
            t_ms += 1000;
        }
        ssc.stop(false)?;
    }
    println!(
        "setup: {keys} keys of state committed in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. Backlog: records that arrived while weir was down.
    let t = Instant::now();
    {
        let config = WalConfig {
            sync: SyncPolicy::NoSyncUnsafe,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.join("wal").join("input"), config)?;
        let rec = format!("key{:09} {}", 7, "p".repeat(87));
        assert_eq!(rec.len(), 100);
        let batch: Vec<&str> = vec![rec.as_str(); 10_000];
        let n = backlog_mib * (1 << 20) / 116;
        let mut done = 0;
        while done < n {
            wal.append(&batch)?;
            done += batch.len() as u64;
        }
        wal.sync()?;
    }
    println!(
        "setup: {backlog_mib} MiB of WAL backlog written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 3. Timed: restart to the first new batch.
    let clock = Arc::new(ManualClock::new(3_600_000));
    let t = Instant::now();
    let (ssc, _wal) = build(dir, clock.clone())?;
    let opened = t.elapsed();
    ssc.start()?;
    let started = t.elapsed();
    let first = 3_600_000;
    let stats = ssc.await_batch(first, Duration::from_secs(600))?;
    let total = t.elapsed();
    ssc.stop(false)?;
    println!(
        "restart with {backlog_mib} MiB backlog and {keys} keys: open {:.3} s, state loaded and scheduler started {:.3} s, first batch ({} records) done {:.3} s",
        opened.as_secs_f64(),
        started.as_secs_f64(),
        stats.input_records,
        total.as_secs_f64()
    );
    drop((ssc, _wal, tmp));
    commit_cost(keys)
}
