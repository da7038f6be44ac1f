//! A durable local queue in one redb file (`queue.redb` under the data directory).
//!
//! It behaves like the SQS FIFO queue where it matters to the worker: jobs of one page run in
//! order (a later job of a page waits while an earlier one is leased or waiting to retry), a leased
//! job that is not finished comes back, a job leased `max_receives` times goes to the dead-letter
//! table, and everything survives a restart.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

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
        Ok(Self {
            db: Arc::new(db),
            notify: Arc::new(Notify::new()),
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
        let bytes = encode(&stored)?;
        self.blocking(move |db| {
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
                jobs.insert(next.max(dead_next), bytes.as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }
}
