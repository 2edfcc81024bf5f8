//! The producer table of one ingest stream: producer id -> next expected
//! sequence number, which connection owns the producer, and the table's
//! snapshot file `DATA_DIR/wal/<name>.producers` (bytes: [`super::records`]).
//!
//! Recovery = the snapshot (if any) + a scan of the WAL records after the
//! LSN it covers (each record's stored header names its producer and
//! sequence). Before WAL segments are deleted the release hook saves the
//! table merged with a scan of the records since the last snapshot,
//! atomically ([`write_atomic`]: temp, fsync, rename, directory fsync)
//! through the WAL's own [`crate::storage::Storage`].
//!
//! What the table keeps: a producer that never stored a record (next
//! expected sequence 0) lives only while a connection holds it and is
//! never written to the snapshot (nor loaded from an older one); a producer
//! with records and no connection is forgotten ("expires") once it was
//! idle for `producers_idle_max` (default 7 days) and every one of its
//! records is below the last released (committed) position. Idle time
//! counts from its last connection's end or the table's recovery,
//! whichever is later (the snapshot keeps no times).
//!
//! Limits: `producers_max` producers (a new one past it is refused); a
//! snapshot holding more than twice that is refused as damaged; one
//! snapshot (about 24 bytes a producer) in memory while it is saved or
//! loaded; an expiry sweep is one pass over the table under its lock.
//! Must never: let a WAL segment be deleted before a snapshot covering its
//! records is durable, wait for a producer's lock in the release hook,
//! start from a WAL that begins above what the snapshot covers, or forget a
//! producer that has a connection or a record not yet released.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::records::{decode_snapshot, decode_stored, encode_snapshot};
use super::IngestError;
use crate::storage::{write_atomic, Storage};
use crate::wal::Wal;

/// One producer's entry: the next sequence number expected and which
/// connection owns it (the newest HELLO wins).
pub(super) struct Producer {
    /// Held while a connection checks and stores this producer's frames
    /// (possibly waiting on backpressure): the critical section that makes
    /// each sequence number stored at most once.
    pub(super) next: Mutex<u64>,
    /// The value of `next`, readable without waiting for that section (for
    /// WELCOME and the snapshot; a stale value is safe, see `save_before_release`).
    pub(super) published: AtomicU64,
    /// Bumped by every HELLO: the newest connection owns the producer.
    pub(super) generation: AtomicU64,
    /// Connections holding this entry; changed only under the table's map
    /// lock, so it is exact there.
    connections: AtomicUsize,
    /// When the last connection ended (or the table was recovered), in ms
    /// since the table's epoch.
    idle_since_ms: AtomicU64,
    /// One past the LSN of its newest stored record that the table saw (0:
    /// none since the snapshot it was loaded from).
    lsn_end: AtomicU64,
}

impl Producer {
    fn new(next: u64, now_ms: u64) -> Arc<Producer> {
        Arc::new(Producer {
            next: Mutex::new(next),
            published: AtomicU64::new(next),
            generation: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(now_ms),
            lsn_end: AtomicU64::new(0),
        })
    }

    /// Notes that its records up to LSN `end` (exclusive) are stored.
    pub(super) fn stored_below(&self, end: u64) {
        self.lsn_end.fetch_max(end, Ordering::AcqRel);
    }

    /// Raises `next` (held by the caller) to `v` and publishes it.
    pub(super) fn advance(&self, next: &mut u64, v: u64) {
        *next = (*next).max(v);
        self.published.store(*next, Ordering::Release);
    }
}

/// Why a HELLO got no entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TableFull;

/// The producer table and its snapshot.
pub(super) struct ProducerTable {
    stream: String,
    map: Mutex<HashMap<Box<[u8]>, Arc<Producer>>>,
    producers_max: usize,
    /// How long a producer without connection keeps its entry.
    idle_max: Duration,
    /// The table's clock origin (idle times are ms since it).
    epoch: Instant,
    /// WAL records below this are in committed batches (the last release).
    released: AtomicU64,
    snapshot_path: PathBuf,
    /// WAL records below this are reflected in the saved snapshot; the lock
    /// also serialises snapshot writes.
    covered: Mutex<u64>,
    wal: Arc<Wal>,
    /// The WAL's storage: the snapshot lives beside the log.
    storage: Arc<dyn Storage>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked holder leaves consistent data (every update is one
    // assignment), so poisoning is not fatal.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A producer id for logs and messages: lossy UTF-8, quoted and escaped.
pub(super) fn show_id(id: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(id))
}

impl ProducerTable {
    /// Loads the snapshot (if any) and scans the retained WAL after it.
    pub(super) fn recover(
        stream: &str,
        wal: Arc<Wal>,
        snapshot_path: PathBuf,
        producers_max: usize,
        idle_max: Duration,
    ) -> Result<ProducerTable, IngestError> {
        let storage = wal.storage().clone();
        let mut map: HashMap<Box<[u8]>, u64> = HashMap::new();
        let covered = match storage.read_all(&snapshot_path) {
            Ok(bytes) => {
                let snap = decode_snapshot(&bytes, producers_max.max(1) * 2).map_err(|source| {
                    IngestError::SnapshotCorrupt {
                        stream: stream.into(),
                        path: snapshot_path.clone(),
                        source,
                    }
                })?;
                // Entries at 0 (producers that never stored a record, from
                // snapshots of older versions) carry nothing: dropped.
                for (id, next) in snap.entries.into_iter().filter(|e| e.1 > 0) {
                    map.insert(bytes[id].into(), next);
                }
                snap.covered_lsn
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(IngestError::SnapshotIo {
                    stream: stream.into(),
                    path: snapshot_path,
                    source,
                })
            }
        };
        let first = wal.first_lsn();
        if covered < first {
            return Err(IngestError::SnapshotBehind {
                stream: stream.into(),
                path: snapshot_path,
                first_lsn: first,
                covered,
            });
        }
        let scan_from = covered.min(wal.end());
        let mut ends = HashMap::new();
        scan_into(
            stream,
            &wal,
            scan_from..wal.end(),
            &mut map,
            Some(&mut ends),
        )?;
        if map.len() > producers_max {
            tracing::warn!(stream, producers = map.len(), producers_max, "the recovered producer table holds more producers than producers_max; new producers are refused until it is raised");
        }
        tracing::info!(
            stream,
            producers = map.len(),
            scanned_from = scan_from,
            end = wal.end(),
            "recovered the ingest producer table"
        );
        let map = map
            .into_iter()
            .map(|(k, next)| {
                let p = Producer::new(next, 0);
                if let Some(&end) = ends.get(&k) {
                    p.stored_below(end);
                }
                (k, p)
            })
            .collect();
        Ok(ProducerTable {
            stream: stream.into(),
            map: Mutex::new(map),
            producers_max,
            idle_max,
            epoch: Instant::now(),
            released: AtomicU64::new(covered),

            snapshot_path,
            covered: Mutex::new(covered),
            wal,
            storage,
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether producer `id` is in the table.
    pub(super) fn contains(&self, id: &[u8]) -> bool {
        lock(&self.map).contains_key(id)
    }

    /// The next sequence number expected from producer `id` (0: unknown).
    pub(super) fn next_of(&self, id: &[u8]) -> u64 {
        lock(&self.map)
            .get(id)
            .map_or(0, |p| p.published.load(Ordering::Acquire))
    }

    /// Producers in the table now.
    pub(super) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// The producer's entry for a new connection (created if new and there
    /// is room); the connection gives it back with [`Self::release`].
    pub(super) fn connect(&self, id: &[u8]) -> Result<Arc<Producer>, TableFull> {
        let mut map = lock(&self.map);
        let p = match map.get(id) {
            Some(p) => p.clone(),
            None if map.len() >= self.producers_max => return Err(TableFull),
            None => {
                let p = Producer::new(0, self.now_ms());
                map.insert(id.into(), p.clone());
                p
            }
        };
        p.connections.fetch_add(1, Ordering::AcqRel);
        Ok(p)
    }

    /// A connection of producer `id` ended: its idle time starts, and an
    /// entry that never stored a record and has no other connection goes.
    pub(super) fn release(&self, id: &[u8], p: &Producer) {
        let mut map = lock(&self.map);
        let left = p
            .connections
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        p.idle_since_ms.store(self.now_ms(), Ordering::Release);
        // `published` is raised only after a store returned, by the
        // connection that stored, which still holds its claim then.
        if left == 0 && p.published.load(Ordering::Acquire) == 0 {
            map.remove(id);
        }
    }

    /// Forgets producers idle for `idle_max` with no connection whose
    /// records are all released; returns the ids forgotten (up to
    /// `shown_max` of them) and how many.
    pub(super) fn expire_idle(&self, shown_max: usize) -> (Vec<String>, u64) {
        let now = self.now_ms();
        let idle_ms = self.idle_max.as_millis().min(u128::from(u64::MAX)) as u64;
        let released = self.released.load(Ordering::Acquire);
        let mut shown = Vec::new();
        let mut n = 0u64;
        lock(&self.map).retain(|id, p| {
            let expired = p.connections.load(Ordering::Acquire) == 0
                && now.saturating_sub(p.idle_since_ms.load(Ordering::Acquire)) >= idle_ms
                && p.lsn_end.load(Ordering::Acquire) <= released;
            if expired {
                n += 1;
                if shown.len() < shown_max {
                    shown.push(show_id(id));
                }
            }
            !expired
        });
        (shown, n)
    }

    /// The release hook: before WAL segments below `end` are deleted, saves
    /// the table merged with a scan of the records since the last snapshot.
    /// The scan covers appends whose table update had not run yet (and
    /// published values that are stale), so every record below `end` is
    /// reflected. It never waits for a producer's lock: a store holding it
    /// may be waiting for this very release (backpressure).
    ///
    /// Returns how far segments may be deleted: the position the saved
    /// snapshot covers. When no segment is deletable now the snapshot is
    /// not rewritten (an fsync saved per batch) and the older bound is
    /// returned, so a segment sealed after this look is not deleted before
    /// a snapshot covers it.
    pub(super) fn save_before_release(&self, end: u64) -> Result<u64, IngestError> {
        // Every record below `end` is in a committed batch.
        self.released.fetch_max(end, Ordering::AcqRel);
        let mut covered = lock(&self.covered);
        if end <= *covered {
            return Ok(end);
        }
        let segs = self.wal.segments();
        let deletes = segs.len() > 1 && segs[0].2.is_some_and(|e| e <= end);
        if !deletes {
            return Ok(*covered);
        }
        // Producers that never stored a record leave no trace.
        let mut map: HashMap<Box<[u8]>, u64> = lock(&self.map)
            .iter()
            .map(|(k, p)| (k.clone(), p.published.load(Ordering::Acquire)))
            .filter(|(_, next)| *next > 0)
            .collect();
        let from = (*covered).max(self.wal.first_lsn());
        let to = end.min(self.wal.end());
        if from < to {
            scan_into(&self.stream, &self.wal, from..to, &mut map, None)?;
        }
        let bytes = encode_snapshot(
            end,
            map.iter()
                .map(|(k, v)| (&k[..], *v))
                .collect::<Vec<_>>()
                .into_iter(),
        );
        write_atomic(&*self.storage, &self.snapshot_path, &bytes).map_err(|source| {
            IngestError::SnapshotWrite {
                stream: self.stream.clone(),
                source,
            }
        })?;
        *covered = end;
        Ok(end)
    }
}

/// Takes, per producer, the largest `seq + 1` among WAL records `range`
/// (and, into `ends`, one past the LSN of its last record there).
fn scan_into(
    stream: &str,
    wal: &Wal,
    range: std::ops::Range<u64>,
    map: &mut HashMap<Box<[u8]>, u64>,
    mut ends: Option<&mut HashMap<Box<[u8]>, u64>>,
) -> Result<(), IngestError> {
    let mut bad = None;
    wal.read(range)?.for_each_ref(|lsn, rec| {
        if bad.is_some() {
            return;
        }
        match decode_stored(rec) {
            // Anonymous (HTTP without a producer id): no sequence to keep.
            Ok(s) if s.producer.is_empty() => {}
            Ok(s) => {
                if let Some(ends) = ends.as_deref_mut() {
                    match ends.get_mut(s.producer) {
                        Some(e) => *e = lsn + 1,
                        None => {
                            ends.insert(s.producer.into(), lsn + 1);
                        }
                    }
                }
                let next = s.seq.saturating_add(1);
                match map.get_mut(s.producer) {
                    Some(v) => *v = (*v).max(next),
                    None => {
                        map.insert(s.producer.into(), next);
                    }
                }
            }
            Err(source) => bad = Some((lsn, source)),
        }
    })?;
    match bad {
        None => Ok(()),
        Some((lsn, source)) => Err(IngestError::NotIngest {
            stream: stream.into(),
            lsn,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot file beside a bare log directory (tests; the context uses
    /// `layout::producers_snapshot`).
    fn snapshot_path(wal_dir: &std::path::Path) -> PathBuf {
        let mut name = wal_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".producers");
        wal_dir.with_file_name(name)
    }
    use crate::wal::WalConfig;

    const DAY: Duration = Duration::from_secs(86_400);

    fn stored(seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        super::super::records::encode_stored(&mut v, b"p", seq, &[b'x'; 600]);
        v
    }

    /// The race the hook's returned bound closes: the hook sees one active
    /// segment (nothing deletable, so no snapshot), then an append seals
    /// that segment exactly at the released position. Deleting below the
    /// released position would drop records no snapshot covers, and the
    /// next start would refuse with `SnapshotBehind`.
    #[test]
    fn a_segment_sealed_after_the_hook_looked_waits_for_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = WalConfig {
            segment_bytes_max: 4096,
            record_bytes_max: 1024,
            append_bytes_max: 1024,
            ..WalConfig::default()
        };
        let (wal, _) = Wal::open(dir.path().join("wal"), cfg).expect("open wal");
        let wal = Arc::new(wal);
        let snap = snapshot_path(wal.dir());
        let table =
            ProducerTable::recover("s", wal.clone(), snap.clone(), 10, DAY).expect("recover");
        let mut seq = 0;
        let raced = loop {
            assert!(seq < 100, "no segment roll after 100 records");
            let end = wal.end();
            let safe = table.save_before_release(end).expect("hook");
            wal.append(&[stored(seq)]).expect("append");
            seq += 1;
            let segs = wal.segments();
            if segs.len() == 2 && segs[0].2 == Some(end) {
                break (end, safe);
            }
        };
        let (end, safe) = raced;
        assert_eq!(
            safe, 0,
            "no snapshot was written, so nothing may be deleted"
        );
        assert_eq!(wal.remove_segments_below(safe).expect("cleanup"), 0);
        assert!(ProducerTable::recover("s", wal.clone(), snap.clone(), 10, DAY).is_ok());
        // The next release sees the sealed segment, saves, and lets it go.
        assert_eq!(table.save_before_release(end).expect("hook"), end);
        assert_eq!(wal.remove_segments_below(end).expect("cleanup"), 1);
        let again =
            ProducerTable::recover("s", wal.clone(), snap, 10, DAY).expect("recover from snapshot");
        let next = lock(&again.map)
            .get(&b"p"[..])
            .map(|p| p.published.load(Ordering::Acquire));
        assert_eq!(next, Some(seq));
    }
}
