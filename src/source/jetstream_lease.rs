//! Partition ownership for scale-out: which weir instance reads which
//! JetStream stream (partition), kept in two JetStream key-value buckets so
//! that two instances never read one partition.
//!
//! - `weir_owners` (no expiry): key `<source id>.<stream>`, value a
//!   [`Claim`]. The first data directory to claim a partition owns it for
//!   good: its checkpoint holds the partition's positions, so another
//!   directory starting on it would read it again from the start. Another
//!   instance is refused ([`LeaseError::Owned`]) naming the owner. Moving
//!   a partition is deliberate: move the data directory, or delete the key
//!   (`nats kv del weir_owners KEY`) and accept that the new owner reads
//!   the stream again from sequence 1.
//! - `weir_leases` (entries expire `lease_ttl_ms` after their last
//!   update): the same key, held by the running process, renewed once
//!   right after every key is claimed (the TTL counts from there), then
//!   every third of the TTL with the revision it last wrote
//!   (compare-and-set). A
//!   second process with the same data directory identity (a copied
//!   directory on another host) is refused while the lease lives
//!   ([`LeaseError::Busy`]); the same directory on the same host and path
//!   takes its own lease over at once after a crash (its directory lock
//!   proves the old process is gone). A failed round of renewals is tried
//!   again every [`RENEW_RETRY_PAUSE`]. A renewal that finds another
//!   revision, or no successful renewal for a whole TTL, marks the lease
//!   lost: [`LeaseHealth::check`] fails every read after that, so the
//!   batch is not committed and the service stops, naming why.
//!
//! Limits: 1 to [`crate::source::jetstream::STREAMS_MAX`] keys per
//! instance; TTL [`LEASE_TTL_MS_MIN`] to [`LEASE_TTL_MS_MAX`]; a claim is
//! at most [`CLAIM_BYTES_MAX`] bytes; instance names at most
//! [`INSTANCE_NAME_BYTES_MAX`] bytes; at most [`CLAIM_TRIES_MAX`] tries
//! per key when a claim races an expiry.
//! Must never: read a partition without holding both keys, renew with a
//! revision it did not write, or delete an owner key on its own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;

use super::jetstream_claim::{lease_key, unknown_claim, Claim, CLAIM_BYTES_MAX};
use super::jetstream_conn::JetStreamConnection;

/// The bucket of owners (no expiry).
pub const OWNERS_BUCKET: &str = "weir_owners";
/// The bucket of live leases (entries expire).
pub const LEASES_BUCKET: &str = "weir_leases";
/// Default lease TTL.
pub const LEASE_TTL_MS_DEFAULT: u64 = 30_000;
/// Shortest lease TTL.
pub const LEASE_TTL_MS_MIN: u64 = 3_000;
/// Longest lease TTL.
pub const LEASE_TTL_MS_MAX: u64 = 600_000;
/// Longest instance name.
pub const INSTANCE_NAME_BYTES_MAX: usize = 128;
/// Pause before trying again after a round of renewals failed.
pub const RENEW_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Tries per key when a claim races an expiry or a release, and tries of
/// a claim whose requests fail (about 25 s in all with the pauses).
pub const CLAIM_TRIES_MAX: u32 = 8;
/// First pause before a failed claim is tried again (doubling).
pub const CLAIM_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why partitions could not be claimed, or a lease was lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another data directory owns the partition.
    #[error("JetStream stream `{}` of source `{}` is owned by instance `{}` (host {}, data directory {} with id {}); this instance's data directory has id {mine}. Give this instance other partitions (`partitions` or `instance`/`instances`), or, to move the partition here deliberately, stop that instance and delete its claim: nats kv del {OWNERS_BUCKET} {} (this instance then reads the stream again from sequence 1)", .partition.stream, .partition.source_id, .owner.name, .owner.host, .owner.dir, .owner.data_dir_id, .partition.key)]
    Owned {
        /// The partition.
        partition: Box<PartitionRef>,
        /// The owner's claim.
        owner: Box<Claim>,
        /// This instance's data directory id.
        mine: String,
    },
    /// A live process with this data directory's identity holds the lease.
    #[error("JetStream stream `{}` of source `{}` is being read by instance `{}` on host {} (data directory {}), which has this data directory's identity: is it a copy? Stop the other process, or wait {ttl_ms} ms for its lease to expire if it is gone", .partition.stream, .partition.source_id, .holder.name, .holder.host, .holder.dir)]
    Busy {
        /// The partition.
        partition: Box<PartitionRef>,
        /// The holder's claim.
        holder: Box<Claim>,
        /// The lease TTL.
        ttl_ms: u64,
    },
    /// Another data directory (the partition's previous owner, whose
    /// owner claim was deleted) still holds a live lease.
    #[error("JetStream stream `{}` of source `{}` is still leased by instance `{}` on host {} (data directory {}), its previous owner. Stop that instance, or wait {ttl_ms} ms for its lease to expire if it is gone", .partition.stream, .partition.source_id, .holder.name, .holder.host, .holder.dir)]
    Previous {
        /// The partition.
        partition: Box<PartitionRef>,
        /// The holder's claim.
        holder: Box<Claim>,
        /// The lease TTL.
        ttl_ms: u64,
    },
    /// The lease was lost while running.
    #[error("lost the lease on JetStream stream `{stream}` of source `{source_id}`: {why}. The batch is not committed; start again once the NATS servers are reachable (and no other process uses this data directory)")]
    Lost {
        /// The source.
        source_id: String,
        /// The JetStream stream.
        stream: String,
        /// What happened.
        why: LostWhy,
    },
    /// The renewal right after the claims failed: a key expired while
    /// the claims went on, was taken, or the requests kept failing.
    #[error("could not renew the lease on JetStream stream `{stream}` of source `{source_id}` right after claiming it: {detail}. weir did not start reading. The claims took longer than lease_ttl_ms, or the NATS servers did not answer: check their load and reachability (or raise lease_ttl_ms) and start again")]
    StartRenewal {
        /// The source.
        source_id: String,
        /// The JetStream stream.
        stream: String,
        /// What happened.
        detail: String,
    },
    /// The key-value bucket could not be opened or created.
    #[error("could not open or create the JetStream key-value bucket `{bucket}`: {detail}. The account needs JetStream and permission to create streams KV_{bucket}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// The client's error.
        detail: String,
    },
    /// A key-value request failed.
    #[error("JetStream key-value request on `{bucket}` key `{key}` failed: {detail}")]
    Request {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The client's error.
        detail: String,
    },
    /// The leases bucket expires entries after another TTL than this
    /// instance's `lease_ttl_ms`.
    #[error("the key-value bucket `{LEASES_BUCKET}` expires leases {bucket_ms} ms after their last renewal, but this instance's lease_ttl_ms is {ttl_ms}: every instance must use the TTL the bucket was created with. Set lease_ttl_ms = {bucket_ms}, or, to change the TTL, stop every instance, delete the bucket (nats kv del {LEASES_BUCKET}) and start them with the new lease_ttl_ms")]
    TtlMismatch {
        /// The bucket's TTL.
        bucket_ms: u64,
        /// This instance's `lease_ttl_ms`.
        ttl_ms: u64,
    },
    /// A setting is out of its range.
    #[error("invalid scale-out setting: {setting} {found} must be {expected}")]
    Config {
        /// The setting.
        setting: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: String,
    },
}

/// A partition named in an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    /// The weir source.
    pub source_id: String,
    /// The JetStream stream.
    pub stream: String,
    /// Its key in the owner and lease buckets.
    pub key: String,
}

/// Why a held lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostWhy {
    /// A renewal found another revision: another process wrote the key.
    Taken,
    /// No renewal succeeded for a whole TTL.
    Expired {
        /// The TTL.
        ttl_ms: u64,
        /// The last renewal's error.
        detail: String,
    },
}

impl std::fmt::Display for LostWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostWhy::Taken => write!(f, "another process wrote the lease key"),
            LostWhy::Expired { ttl_ms, detail } => {
                write!(f, "no renewal succeeded for {ttl_ms} ms (last error: {detail})")
            }

        }
    }
}

/// The health of an instance's leases, checked before every read.
#[derive(Debug)]
pub struct LeaseHealth {
    source_id: String,
    ttl: Duration,
    inner: Mutex<HealthState>,
}

#[derive(Debug)]
struct HealthState {
    /// When the last full round of renewals was sent (each succeeded), on
    /// the [`boot_clock`].
    renewed: Duration,
    /// The last renewal error since then.
    last_error: Option<String>,
    /// A lease found taken: `(stream, why)`.
    lost: Option<(String, LostWhy)>,
}

impl LeaseHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ok while every lease is held: none was taken, and a round of
    /// renewals succeeded within the last TTL (measured from when it was
    /// sent, so the server's expiry is never earlier).
    pub fn check(&self) -> Result<(), LeaseError> {
        let s = self.lock();
        if let Some((stream, why)) = &s.lost {
            return Err(self.lost(stream, why.clone()));
        }
        if boot_clock().saturating_sub(s.renewed) >= self.ttl {
            let why = LostWhy::Expired {
                ttl_ms: self.ttl.as_millis() as u64,
                detail: s.last_error.clone().unwrap_or_else(|| "none answered".into()),
            };
            return Err(self.lost("(every stream of this instance)", why));
        }
        Ok(())
    }

    fn lost(&self, stream: &str, why: LostWhy) -> LeaseError {
        LeaseError::Lost {
            source_id: self.source_id.clone(),
            stream: stream.to_string(),
            why,
        }
    }
}

/// One held lease key.
#[derive(Debug, Clone)]
struct Held {
    stream: String,
    key: String,
    revision: u64,
}

/// The partitions an instance holds, renewed in the background until
/// dropped (which releases the leases, never the ownership).
pub struct Leases {
    conn: Arc<JetStreamConnection>,
    health: Arc<LeaseHealth>,
    held: Arc<Mutex<Vec<Held>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl Leases {
    /// Claims `streams` of source `source_id` for `me` (owner key, then
    /// lease key, each stream in order) and starts renewing.
    pub fn acquire(
        conn: Arc<JetStreamConnection>,
        source_id: &str,
        streams: &[String],
        me: &Claim,
        ttl_ms: u64,
    ) -> Result<Leases, LeaseError> {
        check_settings(me, ttl_ms)?;
        let ttl = Duration::from_millis(ttl_ms);
        let (held, leases) = conn.runtime().block_on(async {
            let owners = open_bucket(&conn, OWNERS_BUCKET, None).await?;
            let leases = open_bucket(&conn, LEASES_BUCKET, Some(ttl)).await?;
            check_bucket_ttl(&leases, ttl_ms).await?;
            // Every owner first, read only: a refused instance leaves no
            // claim on the streams before the one that refused it.
            for stream in streams {
                let key = lease_key(source_id, stream);
                let p = Partition { source_id, stream, key: &key };
                check_owner(&owners, &p, me).await?;
            }
            let mut held = Vec::with_capacity(streams.len());
            for stream in streams {
                let key = lease_key(source_id, stream);
                let p = Partition { source_id, stream, key: &key };
                let revision = claim_retrying(&owners, &leases, &p, me, ttl_ms).await?;
                held.push(Held { stream: stream.clone(), key, revision });
            }
            Ok::<_, LeaseError>((held, leases))
        })?;
        let held = Arc::new(Mutex::new(held));
        let sent = renew_after_claim(&conn, &leases, me, &held, source_id)?;
        let health = Arc::new(LeaseHealth {
            source_id: source_id.to_string(),
            ttl,
            inner: Mutex::new(HealthState {
                renewed: sent,
                last_error: None,
                lost: None,
            }),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = conn.runtime().spawn(renew_loop(
            leases,
            me.encode(),
            held.clone(),
            health.clone(),
            stopped,
        ));
        Ok(Leases {
            conn,
            health,
            held,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The health every read checks.
    pub fn health(&self) -> Arc<LeaseHealth> {
        self.health.clone()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take();
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|e| e.into_inner()));
        let conn = self.conn.clone();
        // Release: delete each lease key at the revision this process
        // wrote (a key someone else wrote since stays). On a thread of its
        // own: a context may be dropped inside another async runtime,
        // where blocking on this one is not allowed. Best effort: an
        // unreleased lease expires after its TTL.
        let release = std::thread::Builder::new()
            .name("weir-lease-release".into())
            .spawn(move || {
                conn.runtime().block_on(async {
                    if let Some(t) = task {
                        let _ = t.await;
                    }
                    let Ok(leases) = conn.context().get_key_value(LEASES_BUCKET).await else {
                        return;
                    };
                    for h in held {
                        let _ = leases.delete_expect_revision(&h.key, Some(h.revision)).await;
                    }
                })
            });
        if let Ok(t) = release {
            let _ = t.join();
        }
    }
}

fn check_settings(me: &Claim, ttl_ms: u64) -> Result<(), LeaseError> {
    if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(&ttl_ms) {
        return Err(LeaseError::Config {
            setting: "lease_ttl_ms",
            found: ttl_ms.to_string(),
            expected: format!("{LEASE_TTL_MS_MIN} to {LEASE_TTL_MS_MAX}"),
        });
    }
    if me.name.is_empty() || me.name.len() > INSTANCE_NAME_BYTES_MAX {
        return Err(LeaseError::Config {
            setting: "instance_name",
            found: format!("{:?}", me.name),
            expected: format!("1 to {INSTANCE_NAME_BYTES_MAX} bytes"),
        });
    }
    if me.encode().len() > CLAIM_BYTES_MAX {
        return Err(LeaseError::Config {
            setting: "the data directory's path",
            found: me.dir.clone(),
            expected: format!("short enough for a claim of {CLAIM_BYTES_MAX} bytes"),
        });
    }
    Ok(())
}

/// One partition being claimed.
struct Partition<'a> {
    source_id: &'a str,
    stream: &'a str,
    key: &'a str,
}

impl Partition<'_> {
    fn boxed(&self) -> Box<PartitionRef> {
        Box::new(PartitionRef {
            source_id: self.source_id.to_string(),
            stream: self.stream.to_string(),
            key: self.key.to_string(),
        })
    }
}

/// Opens bucket `name`, creating it (three replicas, else one: a single
/// server cannot hold three) if it does not exist. `ttl`: entries expire
/// that long after their last update.
async fn open_bucket(
    conn: &JetStreamConnection,
    name: &str,
    ttl: Option<Duration>,
) -> Result<kv::Store, LeaseError> {
    let js = conn.context();
    if let Ok(s) = js.get_key_value(name).await {
        return Ok(s);
    }
    let mut first_error = None;
    for replicas in [3, 1] {
        let config = kv::Config {
            bucket: name.to_string(),
            history: 1,
            max_age: ttl.unwrap_or_default(),
            num_replicas: replicas,
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(s) => {
                if replicas == 1 {
                    tracing::warn!(
                        bucket = name,
                        "created the key-value bucket with one replica: the cluster cannot hold three"
                    );
                }
                return Ok(s);
            }
            Err(e) => {
                // Another instance may have created it meanwhile.
                if let Ok(s) = js.get_key_value(name).await {
                    return Ok(s);
                }
                let text = e.to_string();
                // One replica only where three cannot be placed.
                let too_few = text.contains("insufficient resources")
                    || text.contains("non-clustered")
                    || text.contains("replicas");
                first_error.get_or_insert(text);
                if !too_few {
                    break;
                }
            }
        }
    }
    Err(LeaseError::Bucket {
        bucket: name.to_string(),
        detail: first_error.unwrap_or_default(),
    })
}

fn request_error(bucket: &str, key: &str, e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Request {
        bucket: bucket.to_string(),
        key: key.to_string(),
        detail: e.to_string(),
    }
}

/// The live entry of `key` (`None`: absent, deleted or purged).
async fn live_entry(
    store: &kv::Store,
    bucket: &str,
    key: &str,
) -> Result<Option<kv::Entry>, LeaseError> {
    let e = store
        .entry(key)
        .await
        .map_err(|e| request_error(bucket, key, e))?;
    Ok(e.filter(|e| e.operation == Operation::Put))
}

/// Claims the partition (owner, then lease), trying again with a pause
/// doubling from [`CLAIM_RETRY_PAUSE`] while a request fails (a bucket
/// another instance just created may not answer yet: "no responders"),
/// at most [`CLAIM_TRIES_MAX`] times. An owner or holder found is final.
async fn claim_retrying(
    owners: &kv::Store,
    leases: &kv::Store,
    p: &Partition<'_>,
    me: &Claim,
    ttl_ms: u64,
) -> Result<u64, LeaseError> {
    let mut pause = CLAIM_RETRY_PAUSE;
    let mut tries = 1;
    loop {
        let got = match claim_owner(owners, p, me).await {
            Ok(()) => take_lease(leases, p, me, ttl_ms).await,
            Err(e) => Err(e),
        };
        match got {
            Err(LeaseError::Request { .. }) if tries < CLAIM_TRIES_MAX => {
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Fails if another data directory owns the partition (absent, or ours:
/// fine). Requests that fail are left to the claim, which retries them.
async fn check_owner(store: &kv::Store, p: &Partition<'_>, me: &Claim) -> Result<(), LeaseError> {
    let Ok(Some(entry)) = live_entry(store, OWNERS_BUCKET, p.key).await else {
        return Ok(());
    };
    let owner = Claim::decode(&entry.value).unwrap_or_else(|| unknown_claim(&entry.value));
    if owner.data_dir_id == me.data_dir_id {
        return Ok(());
    }
    Err(LeaseError::Owned {
        partition: p.boxed(),
        owner: Box::new(owner),
        mine: me.data_dir_id.clone(),
    })
}

/// Makes `me` the owner of the partition, or finds it already is.
async fn claim_owner(store: &kv::Store, p: &Partition<'_>, me: &Claim) -> Result<(), LeaseError> {
    for _ in 0..CLAIM_TRIES_MAX {
        match store.create(p.key, me.encode()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(request_error(OWNERS_BUCKET, p.key, e)),
        }
        let Some(entry) = live_entry(store, OWNERS_BUCKET, p.key).await? else {
            continue; // deleted meanwhile: claim again
        };
        let owner = Claim::decode(&entry.value).unwrap_or_else(|| unknown_claim(&entry.value));
        if owner.data_dir_id == me.data_dir_id {
            return Ok(());
        }
        return Err(LeaseError::Owned {
            partition: p.boxed(),
            owner: Box::new(owner),
            mine: me.data_dir_id.clone(),
        });
    }
    Err(request_error(OWNERS_BUCKET, p.key, "the key changed on every try"))
}

/// Takes the partition's lease: creates the key, or takes over one this
/// data directory held at the same host and path (a crashed run).
async fn take_lease(
    store: &kv::Store,
    p: &Partition<'_>,
    me: &Claim,
    ttl_ms: u64,
) -> Result<u64, LeaseError> {
    for _ in 0..CLAIM_TRIES_MAX {
        match store.create(p.key, me.encode()).await {
            Ok(rev) => return Ok(rev),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(request_error(LEASES_BUCKET, p.key, e)),
        }
        let Some(entry) = live_entry(store, LEASES_BUCKET, p.key).await? else {
            continue; // expired or released meanwhile
        };
        let holder = Claim::decode(&entry.value).unwrap_or_else(|| unknown_claim(&entry.value));
        if holder.data_dir_id != me.data_dir_id {
            return Err(LeaseError::Previous {
                partition: p.boxed(),
                holder: Box::new(holder),
                ttl_ms,
            });
        }
        if !holder.same_place(me) {
            return Err(LeaseError::Busy {
                partition: p.boxed(),
                holder: Box::new(holder),
                ttl_ms,
            });
        }
        match store.update(p.key, me.encode(), entry.revision).await {
            Ok(rev) => return Ok(rev),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(request_error(LEASES_BUCKET, p.key, e)),
        }
    }
    Err(request_error(LEASES_BUCKET, p.key, "the key changed on every try"))
}

/// Time since boot with the time suspended included (`CLOCK_BOOTTIME`):
/// the server's expiry of a lease goes on while this machine sleeps, so
/// the check of the last renewal must count that time too (`Instant`
/// does not).
fn boot_clock() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer,
    // which points to a live, writable `timespec` for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        // Not on this kernel (before Linux 2.6.39): CLOCK_MONOTONIC.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Fails unless the leases bucket expires entries after `ttl_ms`: every
/// instance must renew within the TTL the bucket enforces, which the
/// first instance set when it created the bucket.
async fn check_bucket_ttl(store: &kv::Store, ttl_ms: u64) -> Result<(), LeaseError> {
    let status = store
        .status()
        .await
        .map_err(|e| LeaseError::Bucket {
            bucket: LEASES_BUCKET.to_string(),
            detail: e.to_string(),
        })?;
    let bucket_ms = status.max_age().as_millis() as u64;
    if bucket_ms == ttl_ms {
        return Ok(());
    }
    Err(LeaseError::TtlMismatch { bucket_ms, ttl_ms })
}

/// A round of renewals right after the claims, returning when the round
/// that succeeded was sent: the lease window starts there, not before the
/// first claim (a claim whose request was answered late or tried again can
/// take longer than the TTL). A failed request is tried again, up to
/// [`CLAIM_TRIES_MAX`] rounds; a key found expired or taken fails at once.
/// On failure the keys claimed are released (best effort).
fn renew_after_claim(
    conn: &JetStreamConnection,
    leases: &kv::Store,
    me: &Claim,
    held: &Mutex<Vec<Held>>,
    source_id: &str,
) -> Result<Duration, LeaseError> {
    let value = me.encode();
    let mut failure = RenewFailure::Error("no round was sent".into());
    for _ in 0..CLAIM_TRIES_MAX {
        let sent = boot_clock();
        match conn.runtime().block_on(renew_once(leases, &value, held)) {
            Ok(()) => return Ok(sent),
            Err(RenewFailure::Error(detail)) => {
                failure = RenewFailure::Error(detail);
                std::thread::sleep(RENEW_RETRY_PAUSE);
            }
            Err(f) => {
                failure = f;
                break;
            }
        }
    }
    let keys = std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner()));
    conn.runtime().block_on(async {
        for h in keys {
            let _ = leases.delete_expect_revision(&h.key, Some(h.revision)).await;
        }
    });
    let every = || "(every stream of this instance)".to_string();
    let (stream, detail) = match failure {
        RenewFailure::Taken(stream) => (stream, "another process wrote the lease key".into()),
        RenewFailure::Expired(stream) => (stream, "the lease key expired".into()),
        RenewFailure::Error(detail) => (every(), detail),
    };
    Err(LeaseError::StartRenewal {
        source_id: source_id.to_string(),
        stream,
        detail,
    })
}

/// Renews every held lease each third of the TTL until `stopped`.
async fn renew_loop(
    leases: kv::Store,
    value: Bytes,
    held: Arc<Mutex<Vec<Held>>>,
    health: Arc<LeaseHealth>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut pause = health.ttl / 3;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let sent = boot_clock();
        // After a failed round (a leader election, a server restarting),
        // try again soon: the lease lives until a whole TTL has passed
        // since the last round that succeeded.
        pause = RENEW_RETRY_PAUSE;
        match renew_once(&leases, &value, &held).await {
            Ok(()) => {
                let mut s = health.lock();
                s.renewed = sent;
                s.last_error = None;
                pause = health.ttl / 3;
            }
            Err(RenewFailure::Taken(stream)) => {
                tracing::error!(
                    source = health.source_id,
                    stream,
                    "lost the lease: another process wrote its key; this instance reads no more"
                );
                health.lock().lost = Some((stream, LostWhy::Taken));
                return;
            }
            Err(RenewFailure::Expired(stream)) => {
                health.lock().last_error = Some(format!("the lease key of stream `{stream}` expired"));
            }
            Err(RenewFailure::Error(e)) => health.lock().last_error = Some(e),
        }
    }
}

/// Why a round of renewals failed.
enum RenewFailure {
    /// The stream's key holds another process's value.
    Taken(String),
    /// The stream's key is gone (expired).
    Expired(String),
    /// A request failed.
    Error(String),
}

/// One round: each held key updated at the revision this process last
/// wrote. A key found at another revision holding this process's own
/// value (an update stored whose acknowledgement was lost) is adopted and
/// written again at that revision (so every key is written in this
/// round); holding another value, it was taken.
async fn renew_once(
    leases: &kv::Store,
    value: &Bytes,
    held: &Mutex<Vec<Held>>,
) -> Result<(), RenewFailure> {
    let keys: Vec<Held> = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (i, h) in keys.iter().enumerate() {
        let rev = match leases.update(&h.key, value.clone(), h.revision).await {
            Ok(rev) => rev,
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                let entry = live_entry(leases, LEASES_BUCKET, &h.key)
                    .await
                    .map_err(|e| RenewFailure::Error(e.to_string()))?;
                match entry {
                    Some(e) if e.value == *value => leases
                        .update(&h.key, value.clone(), e.revision)
                        .await
                        .map_err(|e| RenewFailure::Error(e.to_string()))?,
                    Some(_) => return Err(RenewFailure::Taken(h.stream.clone())),
                    None => return Err(RenewFailure::Expired(h.stream.clone())),
                }
            }
            Err(e) => return Err(RenewFailure::Error(e.to_string())),
        };
        if let Some(slot) = held.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            slot.revision = rev;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str) -> Claim {
        super::super::jetstream_claim::tests::claim(id)
    }

    #[test]
    fn settings_are_checked() {
        assert!(check_settings(&claim("1"), LEASE_TTL_MS_MIN - 1).is_err());
        assert!(check_settings(&claim("1"), LEASE_TTL_MS_MAX + 1).is_err());
        assert!(check_settings(&claim("1"), LEASE_TTL_MS_DEFAULT).is_ok());
        let mut long = claim("1");
        long.name = "n".repeat(INSTANCE_NAME_BYTES_MAX + 1);
        assert!(check_settings(&long, LEASE_TTL_MS_DEFAULT).is_err());
    }
}
