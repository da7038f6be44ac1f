//! A durable local queue in one redb file (`queue.redb` under the data directory).
//!
//! It behaves like the SQS FIFO queue where it matters to the worker: jobs of one page run in
//! order (a later job of a page waits while an earlier one is leased or waiting to retry), a leased
//! job that is not finished comes back, a job leased `max_receives` times goes to the dead-letter
//! table, and everything survives a restart.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::{EditJobMessage, EditQueue, Enqueued, IntakeError, JobIntake, QueueError};

const JOBS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("jobs");
const DEAD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("dead");
/// Idempotency marks, as (expiry in unix seconds, [`MarkId`]). Ordered by expiry, so that new
/// marks are appended at the end (a commit touches a few pages, not one per mark) and expired ones
/// are swept from the front. The writer looks marks up in memory ([`MarkIndex`]), loaded from here.
const MARKS: TableDefinition<'static, (i64, MarkId), ()> = TableDefinition::new("marks_by_expiry");

/// A mark's identity: the first 128 bits of SHA-256(clientKey NUL mark key). Fixed-size, so the
/// table and the index stay small; no client key is kept in the queue's file.
type MarkId = [u8; 16];

fn mark_id(client_key: &str, key: &str) -> MarkId {
    let digest = Sha256::new()
        .chain_update(client_key.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = [0; 16];
    id.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    id
}

/// The marks' expiries by id, owned by the writer thread (the only one that reads or changes
/// marks, so it needs no lock).
type MarkIndex = HashMap<MarkId, i64>;

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    message: EditJobMessage,
    /// How many times it was leased.
    receives: u32,
    /// Unix milliseconds from which it may be leased again.
    visible_at_ms: i64,
    /// Why it was dead-lettered (dead table only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A job handed to the worker; finish it with [`LocalQueue::complete`], [`LocalQueue::retry_later`]
/// or [`LocalQueue::dead_letter`]. Until then it is invisible to other leases.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Position in the queue.
    pub seq: u64,
    /// The job.
    pub message: EditJobMessage,
    /// How many times it has been leased, this time included (SQS's ApproximateReceiveCount).
    pub receives: u32,
}

/// The local queue. Cheap to clone.
#[derive(Clone)]
pub struct LocalQueue {
    db: Arc<Database>,
    notify: Arc<Notify>,
    enqueues: std::sync::mpsc::Sender<PendingEnqueue>,
    /// When one of the worker's commits last waited for the disk.
    worker_synced_at: Arc<Mutex<Instant>>,
}

/// The worker's own commits (lease, complete, retry, dead-letter) skip the fsync unless the last
/// one that waited for the disk is older than this.
///
/// Why that is safe: a job itself is always committed durably (by the writer, before the webhook
/// answers); a worker commit lost in a crash only makes a job run again, which the queue allows
/// anyway (it is at-least-once, as SQS is) and which the engine turns into "nothing to change".
/// Why it matters: the worker shares the file's single write lock with the webhooks' commits, and
/// three fsyncs per job there would hold every webhook behind them.
const WORKER_SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// A job waiting for the writer's next commit, and who to tell when it is durable.
struct PendingEnqueue {
    bytes: Vec<u8>,
    /// The idempotency mark to take in the same transaction ([`JobIntake::enqueue_once`]).
    mark: Option<PendingMark>,
    done: tokio::sync::oneshot::Sender<Result<Enqueued, QueueError>>,
}

struct PendingMark {
    id: MarkId,
    now: i64,
    expires_at: i64,
}

/// The queue file's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Most jobs one commit carries.
const MAX_BATCH: usize = 512;

/// Most expired marks one commit removes, so that a backlog of them never delays an answer much.
const MARK_SWEEP_PER_COMMIT: usize = 64;

/// Group commit: every enqueue waiting when the writer is free goes into one transaction with one
/// fsync, and each waiter is answered only once that commit is durable. Under concurrent webhooks
/// the cost of durability is shared instead of paid per event; a lone enqueue is committed at once.
///
/// The writer holds the database weakly, so that dropping the last queue closes the file at once
/// (a restart in the same process can open it again).
fn run_writer(
    db: Weak<Database>,
    notify: Arc<Notify>,
    pending: std::sync::mpsc::Receiver<PendingEnqueue>,
    mut marks: MarkIndex,
) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let result = match db.upgrade() {
            Some(db) => commit_batch(&db, &batch, &mut marks),
            None => Err(QueueError::Unavailable("local queue closed".into())),
        };
        match result {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.done.send(Ok(outcome));
                }
            }
            Err(err) => {
                for job in batch {
                    let _ = job.done.send(Err(err.clone()));
                }
            }
        }
        notify.notify_one();
    }
}

/// One transaction for the whole batch: every job and its mark, or nothing at all. The in-memory
/// index follows the file: its changes are undone if the commit fails.
fn commit_batch(
    db: &Database,
    batch: &[PendingEnqueue],
    index: &mut MarkIndex,
) -> Result<Vec<Enqueued>, QueueError> {
    let mut undo = Vec::new();
    let result = write_batch(db, batch, index, &mut undo);
    if result.is_err() {
        for (id, before) in undo.into_iter().rev() {
            match before {
                Some(expires_at) => index.insert(id, expires_at),
                None => index.remove(&id),
            };
        }
    }
    result
}

fn write_batch(
    db: &Database,
    batch: &[PendingEnqueue],
    index: &mut MarkIndex,
    undo: &mut Vec<(MarkId, Option<i64>)>,
) -> Result<Vec<Enqueued>, QueueError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
        let mut marks = txn.open_table(MARKS).map_err(unavailable)?;
        let next = jobs
            .last()
            .map_err(unavailable)?
            .map_or(1, |(seq, _)| seq.value() + 1);
        let dead_next = txn
            .open_table(DEAD)
            .map_err(unavailable)?
            .last()
            .map_err(unavailable)?
            .map_or(1, |(seq, _)| seq.value() + 1);
        // A new job never takes the place of a dead one.
        let mut seq = next.max(dead_next);
        for job in batch {
            if let Some(mark) = &job.mark {
                let before = index.get(&mark.id).copied();
                if let Some(expires_at) = before {
                    if expires_at > mark.now {
                        outcomes.push(Enqueued::Duplicate);
                        continue;
                    }
                    marks.remove((expires_at, mark.id)).map_err(unavailable)?;
                }
                marks
                    .insert((mark.expires_at, mark.id), ())
                    .map_err(unavailable)?;
                undo.push((mark.id, before));
                index.insert(mark.id, mark.expires_at);
            }
            jobs.insert(seq, job.bytes.as_slice())
                .map_err(unavailable)?;
            seq += 1;
            outcomes.push(Enqueued::Queued);
        }
        if let Some(now) = batch
            .iter()
            .filter_map(|job| job.mark.as_ref())
            .map(|m| m.now)
            .max()
        {
            sweep_expired_marks(&mut marks, index, undo, now)?;
        }
    }
    txn.commit().map_err(unavailable)?;
    Ok(outcomes)
}

/// Removes a few marks that expired by `now`, oldest first.
fn sweep_expired_marks(
    marks: &mut Table<'_, (i64, MarkId), ()>,
    index: &mut MarkIndex,
    undo: &mut Vec<(MarkId, Option<i64>)>,
    now: i64,
) -> Result<(), QueueError> {
    let mut expired = Vec::new();
    for entry in marks
        .range(..(now.saturating_add(1), [0; 16]))
        .map_err(unavailable)?
        .take(MARK_SWEEP_PER_COMMIT)
    {
        expired.push(entry.map_err(unavailable)?.0.value());
    }
    for (expires_at, id) in expired {
        marks.remove((expires_at, id)).map_err(unavailable)?;
        if index.get(&id) == Some(&expires_at) {
            undo.push((id, index.remove(&id)));
        }
    }
    Ok(())
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").finish_non_exhaustive()
    }
}

fn unavailable(err: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("local queue: {err}"))
}

fn encode(stored: &Stored) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(stored).map_err(|e| QueueError::Malformed(e.to_string()))
}

fn decode(bytes: &[u8]) -> Result<Stored, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Malformed(e.to_string()))
}

impl LocalQueue {
    /// Opens (or creates) `queue.redb` in `data_dir`. Jobs that were leased when the last process
    /// stopped are visible again at once: nobody else can be working on them.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, QueueError> {
        std::fs::create_dir_all(data_dir.as_ref()).map_err(unavailable)?;
        // redb's page cache defaults to 1 GiB: bounded here, as the queue is mostly appended to.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(data_dir.as_ref().join("queue.redb"))
            .map_err(unavailable)?;
        let mut marks = MarkIndex::new();
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
            txn.open_table(DEAD).map_err(unavailable)?;
            for entry in txn
                .open_table(MARKS)
                .map_err(unavailable)?
                .iter()
                .map_err(unavailable)?
            {
                let (expires_at, id) = entry.map_err(unavailable)?.0.value();
                marks.insert(id, expires_at);
            }
            let mut stored = Vec::new();
            for item in jobs.iter().map_err(unavailable)? {
                let (seq, bytes) = item.map_err(unavailable)?;
                stored.push((seq.value(), decode(bytes.value())?));
            }
            for (seq, mut job) in stored {
                job.visible_at_ms = 0;
                jobs.insert(seq, encode(&job)?.as_slice())
                    .map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        let (db, notify) = (Arc::new(db), Arc::new(Notify::new()));
        let (enqueues, pending) = std::sync::mpsc::channel();
        let (writer_db, writer_notify) = (Arc::downgrade(&db), notify.clone());
        // The writer ends when the last clone of the queue (and so of its sender) is dropped.
        std::thread::Builder::new()
            .name("local-queue-writer".into())
            .spawn(move || run_writer(writer_db, writer_notify, pending, marks))
            .map_err(unavailable)?;
        Ok(Self {
            db,
            notify,
            enqueues,
            worker_synced_at: Arc::new(Mutex::new(Instant::now())),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(unavailable)?
    }

    /// Runs one of the worker's changes in a write transaction, durable only every
    /// [`WORKER_SYNC_INTERVAL`].
    async fn worker_write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let synced_at = self.worker_synced_at.clone();
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(unavailable)?;
            let sync = synced_at
                .lock()
                .map_or(true, |at| at.elapsed() >= WORKER_SYNC_INTERVAL);
            if !sync {
                txn.set_durability(Durability::None);
            }
            let out = work(&txn)?;
            txn.commit().map_err(unavailable)?;
            if sync && let Ok(mut at) = synced_at.lock() {
                *at = Instant::now();
            }
            Ok(out)
        })
        .await
    }

    /// Waits until a job may have arrived (or `timeout` passed).
    pub async fn wait(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.notify.notified()).await;
    }

    /// Leases the first visible job whose page has no earlier job leased or waiting, for
    /// `visibility_ms` milliseconds.
    pub async fn lease(
        &self,
        now_ms: i64,
        visibility_ms: i64,
    ) -> Result<Option<Lease>, QueueError> {
        self.worker_write(move |txn| {
            let lease = {
                let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
                let mut blocked_groups = HashSet::new();
                let mut found = None;
                for item in jobs.iter().map_err(unavailable)? {
                    let (seq, bytes) = item.map_err(unavailable)?;
                    let job = decode(bytes.value())?;
                    let group = job.message.group_id();
                    if job.visible_at_ms > now_ms || blocked_groups.contains(&group) {
                        blocked_groups.insert(group);
                        continue;
                    }
                    found = Some((seq.value(), job));
                    break;
                }
                match found {
                    Some((seq, mut job)) => {
                        job.receives = job.receives.saturating_add(1);
                        job.visible_at_ms = now_ms.saturating_add(visibility_ms);
                        jobs.insert(seq, encode(&job)?.as_slice())
                            .map_err(unavailable)?;
                        Some(Lease {
                            seq,
                            message: job.message,
                            receives: job.receives,
                        })
                    }
                    None => None,
                }
            };
            Ok(lease)
        })
        .await
    }

    /// The job is done: remove it.
    pub async fn complete(&self, seq: u64) -> Result<(), QueueError> {
        self.worker_write(move |txn| {
            txn.open_table(JOBS)
                .map_err(unavailable)?
                .remove(seq)
                .map_err(unavailable)?;
            Ok(())
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    /// The job failed for a passing reason: make it visible again at `visible_at_ms`.
    pub async fn retry_later(&self, seq: u64, visible_at_ms: i64) -> Result<(), QueueError> {
        self.worker_write(move |txn| {
            let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
            let current = jobs
                .get(seq)
                .map_err(unavailable)?
                .map(|b| decode(b.value()));
            if let Some(job) = current {
                let mut job = job?;
                job.visible_at_ms = visible_at_ms;
                jobs.insert(seq, encode(&job)?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    /// The job kept failing: move it to the dead-letter table with the reason.
    pub async fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), QueueError> {
        let reason = reason.to_owned();
        self.worker_write(move |txn| {
            let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
            let current = jobs
                .remove(seq)
                .map_err(unavailable)?
                .map(|b| decode(b.value()));
            if let Some(job) = current {
                let mut job = job?;
                job.reason = Some(reason);
                txn.open_table(DEAD)
                    .map_err(unavailable)?
                    .insert(seq, encode(&job)?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    /// How many jobs wait or run.
    pub async fn pending(&self) -> Result<u64, QueueError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(JOBS)
                .map_err(unavailable)?
                .len()
                .map_err(unavailable)
        })
        .await
    }

    /// How many idempotency marks are kept (an expired one counts until it is swept).
    pub async fn marks(&self) -> Result<u64, QueueError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            txn.open_table(MARKS)
                .map_err(unavailable)?
                .len()
                .map_err(unavailable)
        })
        .await
    }

    /// The dead-lettered jobs with their reasons, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<(EditJobMessage, String)>, QueueError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let dead = txn.open_table(DEAD).map_err(unavailable)?;
            let mut out = Vec::new();
            for item in dead.iter().map_err(unavailable)? {
                let (_, bytes) = item.map_err(unavailable)?;
                let job = decode(bytes.value())?;
                out.push((job.message, job.reason.unwrap_or_default()));
            }
            Ok(out)
        })
        .await
    }
}

impl LocalQueue {
    /// Hands a job (and its mark) to the writer and waits until its commit is durable.
    async fn submit(
        &self,
        job: &EditJobMessage,
        mark: Option<PendingMark>,
    ) -> Result<Enqueued, QueueError> {
        let stored = Stored {
            message: job.clone(),
            receives: 0,
            visible_at_ms: 0,
            reason: None,
        };
        let (done, durable) = tokio::sync::oneshot::channel();
        self.enqueues
            .send(PendingEnqueue {
                bytes: encode(&stored)?,
                mark,
                done,
            })
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))?;
        durable
            .await
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))?
    }
}

#[async_trait]
impl EditQueue for LocalQueue {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        self.submit(job, None).await.map(|_| ())
    }
}

/// The mark and the job in one transaction of the queue's own file: atomic without a second store.
#[async_trait]
impl JobIntake for LocalQueue {
    async fn enqueue_once(
        &self,
        job: &EditJobMessage,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Enqueued, IntakeError> {
        let mark = PendingMark {
            id: mark_id(job.client_key.as_str(), job.mark_key()?.as_str()),
            now,
            expires_at: now.saturating_add(ttl_seconds),
        };
        Ok(self.submit(job, Some(mark)).await?)
    }
}
