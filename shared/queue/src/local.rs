//! A durable local queue in one redb file (`queue.redb` under the data directory).
//!
//! It behaves like the SQS FIFO queue where it matters to the worker: jobs of one page run in
//! order (a later job of a page waits while an earlier one is leased or waiting to retry), a leased
//! job that is not finished comes back, a job leased `max_receives` times goes to the dead-letter
//! table, and everything survives a restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::{EditJobMessage, EditQueue, QueueError};

const JOBS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("jobs");
const DEAD: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("dead");

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
}

/// A job waiting for the writer's next commit, and who to tell when it is durable.
struct PendingEnqueue {
    bytes: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<(), QueueError>>,
}

/// Most jobs one commit carries.
const MAX_BATCH: usize = 512;

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
            Some(db) => commit_batch(&db, &batch),
            None => Err(QueueError::Unavailable("local queue closed".into())),
        };
        for job in batch {
            let _ = job.done.send(result.clone());
        }
        notify.notify_one();
    }
}

fn commit_batch(db: &Database, batch: &[PendingEnqueue]) -> Result<(), QueueError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
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
        for (seq, job) in (next.max(dead_next)..).zip(batch) {
            jobs.insert(seq, job.bytes.as_slice())
                .map_err(unavailable)?;
        }
    }
    txn.commit().map_err(unavailable)
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
        let db = Database::create(data_dir.as_ref().join("queue.redb")).map_err(unavailable)?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
            txn.open_table(DEAD).map_err(unavailable)?;
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
            .spawn(move || run_writer(writer_db, writer_notify, pending))
            .map_err(unavailable)?;
        Ok(Self {
            db,
            notify,
            enqueues,
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
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
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
            txn.commit().map_err(unavailable)?;
            Ok(lease)
        })
        .await
    }

    /// The job is done: remove it.
    pub async fn complete(&self, seq: u64) -> Result<(), QueueError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            txn.open_table(JOBS)
                .map_err(unavailable)?
                .remove(seq)
                .map_err(unavailable)?;
            txn.commit().map_err(unavailable)
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    /// The job failed for a passing reason: make it visible again at `visible_at_ms`.
    pub async fn retry_later(&self, seq: u64, visible_at_ms: i64) -> Result<(), QueueError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
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
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    /// The job kept failing: move it to the dead-letter table with the reason.
    pub async fn dead_letter(&self, seq: u64, reason: &str) -> Result<(), QueueError> {
        let reason = reason.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
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
            }
            txn.commit().map_err(unavailable)
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

#[async_trait]
impl EditQueue for LocalQueue {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
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
                done,
            })
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))?;
        durable
            .await
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))?
    }
}
