//! The local queue's writer thread: where accepted jobs and their idempotency marks are decided,
//! made durable and applied, one batch at a time.
//!
//! Every enqueue waiting when the writer is free forms one batch (group commit):
//!
//! 1. duplicates are decided against the marks in memory ([`MarkIndex`]);
//! 2. the new jobs and marks are appended to the intake [`Journal`] with one `fdatasync`;
//! 3. each waiter is answered: its job is durable.
//!
//! Accepted jobs reach `queue.redb` (where the worker leases them) in one transaction per
//! [`APPLY_INTERVAL`], or sooner when [`crate::LocalQueue::flush`] asks or the journal is full;
//! after each such commit the journal starts over. A redb commit costs a few hundred microseconds
//! (page writes, checksums, allocator state, its fsync): paid once per interval instead of once per
//! batch, it stays off the webhook's answer.
//!
//! A crash loses no answered job: the journal holds every job since the last apply, and
//! [`recover`] applies them when the queue opens again. The writer holds the
//! database weakly, so that dropping the last queue closes the file at once.

use std::collections::HashMap;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

use crate::journal::{Journal, MarkId, Record};
use crate::local::{DEAD, JOBS, unavailable};
use crate::{Enqueued, QueueError};

/// Idempotency marks, as (expiry in unix seconds, [`MarkId`]). Ordered by expiry, so that new
/// marks are appended at the end (a commit touches a few pages, not one per mark) and expired ones
/// are swept from the front. The writer looks marks up in memory ([`MarkIndex`]), loaded from here.
pub(crate) const MARKS: TableDefinition<'static, (i64, MarkId), ()> =
    TableDefinition::new("marks_by_expiry");

/// The queue's bookkeeping: [`APPLIED_THROUGH`].
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");

/// The highest job sequence number applied from the journal.
const APPLIED_THROUGH: &str = "journal_applied_through";

/// The journal file's size.
pub(crate) const JOURNAL_BYTES: u64 = 8 * 1024 * 1024;

/// A batch stops growing past this many journal bytes, so that it always fits in a fresh journal.
const BATCH_BYTES: usize = 2 * 1024 * 1024;

/// Most jobs one batch carries.
const MAX_BATCH: usize = 512;

/// How long an accepted job may wait in the journal before it is applied to redb (and visible to
/// the worker): one redb commit (with its fsync) per interval instead of one per batch.
const APPLY_INTERVAL: Duration = Duration::from_millis(20);

/// A backlog this long is applied at once, whatever its age.
const APPLY_RECORDS: usize = 1_024;

/// Most expired marks one commit removes, so that a backlog of them never delays an answer much.
const MARK_SWEEP_PER_COMMIT: usize = 64;

/// A mark's identity: the first 128 bits of SHA-256(clientKey NUL mark key). Fixed-size, so the
/// table and the index stay small; no client key is kept in the queue's files.
pub(crate) fn mark_id(client_key: &str, key: &str) -> MarkId {
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
pub(crate) type MarkIndex = HashMap<MarkId, i64>;

/// A job waiting for the writer, and who to tell when it is durable.
pub(crate) struct PendingEnqueue {
    pub bytes: Vec<u8>,
    /// The idempotency mark to take with it ([`crate::JobIntake::enqueue_once`]).
    pub mark: Option<PendingMark>,
    pub done: tokio::sync::oneshot::Sender<Result<Enqueued, QueueError>>,
}

pub(crate) struct PendingMark {
    pub id: MarkId,
    pub now: i64,
    pub expires_at: i64,
}

/// Opens the journal next to the queue file and applies what redb lost in a crash, durably.
/// Returns the journal (empty), the marks index and the next sequence number.
pub(crate) fn recover(
    db: &Database,
    journal_path: &std::path::Path,
) -> Result<(Journal, MarkIndex, u64), QueueError> {
    let (mut journal, records) = Journal::open(journal_path, JOURNAL_BYTES).map_err(unavailable)?;
    let txn = db.begin_write().map_err(unavailable)?;
    let next_seq = {
        let applied = txn
            .open_table(META)
            .map_err(unavailable)?
            .get(APPLIED_THROUGH)
            .map_err(unavailable)?
            .map_or(0, |v| v.value());
        let lost: Vec<Record> = records.into_iter().filter(|r| r.seq > applied).collect();
        if !lost.is_empty() {
            tracing::warn!(
                jobs = lost.len(),
                "local queue: applying jobs from the journal that the last run did not"
            );
        }
        apply_records(&txn, &lost, None)?;
        let last = |table: TableDefinition<'static, u64, &[u8]>| -> Result<u64, QueueError> {
            Ok(txn
                .open_table(table)
                .map_err(unavailable)?
                .last()
                .map_err(unavailable)?
                .map_or(0, |(seq, _)| seq.value()))
        };
        // A new job never takes the place of a dead or a finished one.
        let applied = lost.last().map_or(applied, |r| r.seq);
        last(JOBS)?.max(last(DEAD)?).max(applied) + 1
    };
    txn.commit().map_err(unavailable)?;
    journal.restart();

    let mut index = MarkIndex::new();
    let read = db.begin_read().map_err(unavailable)?;
    for entry in read
        .open_table(MARKS)
        .map_err(unavailable)?
        .iter()
        .map_err(unavailable)?
    {
        // In expiry order: a renewed mark's later entry wins.
        let (expires_at, id) = entry.map_err(unavailable)?.0.value();
        index.insert(id, expires_at);
    }
    Ok((journal, index, next_seq))
}

/// Writes `records` (jobs, marks and the applied-through number) into `txn`; sweeps a few expired
/// marks when `sweep` gives the time and the index to keep in step.
fn apply_records(
    txn: &WriteTransaction,
    records: &[Record],
    sweep: Option<(i64, &mut MarkIndex)>,
) -> Result<(), QueueError> {
    let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
    let mut marks = txn.open_table(MARKS).map_err(unavailable)?;
    for record in records {
        jobs.insert(record.seq, record.job.as_slice())
            .map_err(unavailable)?;
        if let Some((id, expires_at)) = record.mark {
            marks.insert((expires_at, id), ()).map_err(unavailable)?;
        }
    }
    if let Some(last) = records.last() {
        txn.open_table(META)
            .map_err(unavailable)?
            .insert(APPLIED_THROUGH, last.seq)
            .map_err(unavailable)?;
    }
    if let Some((now, index)) = sweep {
        sweep_expired_marks(&mut marks, index, now)?;
    }
    Ok(())
}

/// Removes a few marks that expired by `now`, oldest first, from the table and the index.
fn sweep_expired_marks(
    marks: &mut Table<'_, (i64, MarkId), ()>,
    index: &mut MarkIndex,
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
            index.remove(&id);
        }
    }
    Ok(())
}

/// What the writer is asked to do.
pub(crate) enum Request {
    /// Accept a job.
    Enqueue(PendingEnqueue),
    /// Apply every accepted job to redb now, and say when done.
    Flush(tokio::sync::oneshot::Sender<Result<(), QueueError>>),
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub db: Weak<Database>,
    pub notify: std::sync::Arc<tokio::sync::Notify>,
    pub journal: Journal,
    pub index: MarkIndex,
    pub next_seq: u64,
    /// Accepted (journaled) jobs not yet in redb, in order, and since when the oldest waits.
    pub backlog: Vec<Record>,
    pub backlog_since: Option<Instant>,
    /// The backlog's length, for [`crate::LocalQueue::pending`].
    pub unapplied: std::sync::Arc<AtomicU64>,
    /// The latest time a mark was taken at, for sweeping expired ones.
    pub now: Option<i64>,
}

impl Writer {
    /// Runs until the last queue handle is dropped, then applies what is left.
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        loop {
            let request = match self.backlog_since {
                None => requests.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => {
                    requests.recv_timeout(APPLY_INTERVAL.saturating_sub(since.elapsed()))
                }
            };
            match request {
                Ok(Request::Flush(done)) => {
                    let _ = done.send(self.apply());
                }
                Ok(Request::Enqueue(first)) => {
                    let mut batch = vec![first];
                    let mut bytes = batch.iter().map(|p| p.bytes.len()).sum::<usize>();
                    let mut flush = None;
                    while batch.len() < MAX_BATCH && bytes < BATCH_BYTES && flush.is_none() {
                        match requests.try_recv() {
                            Ok(Request::Enqueue(next)) => {
                                bytes += next.bytes.len();
                                batch.push(next);
                            }
                            Ok(Request::Flush(done)) => flush = Some(done),
                            Err(_) => break,
                        }
                    }
                    self.accept(batch);
                    if let Some(done) = flush {
                        let _ = done.send(self.apply());
                    } else if self.backlog.len() >= APPLY_RECORDS {
                        self.apply_or_log();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.apply_or_log(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.apply_or_log();
                    return;
                }
            }
        }
    }

    fn accept(&mut self, batch: Vec<PendingEnqueue>) {
        // 1. Decide, against the marks in memory (undone if the batch cannot be made durable).
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut undo = Vec::new();
        let mut waiters = Vec::with_capacity(batch.len());
        for job in batch {
            waiters.push(job.done);
            if let Some(mark) = &job.mark {
                self.now = self.now.max(Some(mark.now));
                let before = self.index.get(&mark.id).copied();
                if before.is_some_and(|expires_at| expires_at > mark.now) {
                    outcomes.push(Enqueued::Duplicate);
                    continue;
                }
                undo.push((mark.id, before));
                self.index.insert(mark.id, mark.expires_at);
            }
            records.push(Record {
                seq: self.next_seq + records.len() as u64,
                mark: job.mark.as_ref().map(|m| (m.id, m.expires_at)),
                job: job.bytes,
            });
            outcomes.push(Enqueued::Queued);
        }
        // 2. Durable: the journal (when it is full, the backlog is applied and it starts over).
        let result = match self.journal_append(&records) {
            Err(err) => {
                // Nothing was kept: undo the marks, so that a redelivery is not a duplicate.
                for (id, before) in undo.into_iter().rev() {
                    match before {
                        Some(expires_at) => self.index.insert(id, expires_at),
                        None => self.index.remove(&id),
                    };
                }
                Err(err)
            }
            Ok(()) => {
                self.next_seq += records.len() as u64;
                if !records.is_empty() {
                    self.backlog_since.get_or_insert_with(Instant::now);
                }
                self.backlog.extend(records);
                self.unapplied
                    .store(self.backlog.len() as u64, Ordering::Release);
                Ok(())
            }
        };
        // 3. Answer: each accepted job is durable; redb gets it with the next apply.
        for (done, outcome) in waiters.into_iter().zip(outcomes) {
            let _ = done.send(result.clone().map(|()| outcome));
        }
    }

    fn journal_append(&mut self, records: &[Record]) -> Result<(), QueueError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.journal.append(records).map_err(unavailable)? {
            return Ok(());
        }
        // Full: make everything journaled so far durable in redb, which starts the journal over.
        self.apply()?;
        if self.journal.append(records).map_err(unavailable)? {
            Ok(())
        } else {
            Err(QueueError::Malformed(
                "a batch larger than the local queue's journal".into(),
            ))
        }
    }

    fn apply_or_log(&mut self) {
        if let Err(err) = self.apply() {
            tracing::error!(error = %err, "local queue: accepted jobs not applied yet (kept in the journal, retried)");
        }
    }

    /// Applies the backlog to redb in one transaction that waits for the disk; then the journal
    /// starts over. On failure the backlog stays (journaled) and is retried after the interval.
    fn apply(&mut self) -> Result<(), QueueError> {
        if self.backlog.is_empty() {
            return Ok(());
        }
        let result = self.db.upgrade().map_or_else(
            || Err(QueueError::Unavailable("local queue closed".into())),
            |db| {
                let txn = db.begin_write().map_err(unavailable)?;
                let sweep = self.now.map(|now| (now, &mut self.index));
                apply_records(&txn, &self.backlog, sweep)?;
                txn.commit().map_err(unavailable)
            },
        );
        match result {
            Ok(()) => {
                self.backlog.clear();
                self.backlog_since = None;
                self.unapplied.store(0, Ordering::Release);
                self.journal.restart();
                self.notify.notify_one();
                Ok(())
            }
            Err(err) => {
                self.backlog_since = Some(Instant::now());
                Err(err)
            }
        }
    }
}
