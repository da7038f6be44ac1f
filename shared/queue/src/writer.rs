//! The local queue's intake: a writer thread that decides, journals and answers, and an applier
//! thread that moves accepted jobs into `queue.redb`.
//!
//! Every enqueue waiting when the writer is free forms one batch (group commit):
//!
//! 1. duplicates are decided against the marks in memory ([`MarkIndex`]);
//! 2. the new jobs and marks are appended to the intake [`Journal`] with one `fdatasync`;
//! 3. each waiter is answered: its job is durable;
//! 4. the batch is handed to the applier.
//!
//! The applier commits every batch waiting for it in one durable redb transaction, which makes
//! the jobs visible to the worker's leases. A redb commit costs a few hundred microseconds (page
//! writes, checksums, allocator state, its fsync); on its own thread it is shared by every batch
//! that arrived meanwhile and never delays an answer. The journal starts a new cycle whenever the
//! applier has caught up with it; a full journal waits for that.
//!
//! A crash loses no answered job: the journal holds every job the applier may not have committed,
//! and [`recover`] applies them when the queue opens again. Both threads hold the database weakly;
//! [`Threads`] ends and joins them when the last queue handle is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use crate::file::QueueFile;
use crate::journal::{Journal, MarkId, Record};
use crate::tables::{APPLIED_THROUGH, DEAD, JOBS, MARKS, META, applied_through, unavailable};
use crate::{Enqueued, QueueError};

/// The journal file's size.
pub(crate) const JOURNAL_BYTES: u64 = 8 * 1024 * 1024;

/// Most jobs one batch carries.
const MAX_BATCH: usize = 512;

/// The applier commits at most this often while jobs trickle in (a commit waits for the disk):
/// under load a commit takes longer than this and the next one follows at once.
const APPLY_INTERVAL: Duration = Duration::from_millis(10);

/// How long the applier waits before trying a failed commit again.
const RETRY_APPLY: Duration = Duration::from_secs(1);

/// How long a full journal waits for the applier to catch up before refusing jobs (503).
const FULL_JOURNAL_WAIT: Duration = Duration::from_secs(5);

/// Most expired marks one commit removes, so that a backlog of them never delays an answer much.
const MARK_SWEEP_PER_COMMIT: usize = 64;

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
    journal_bytes: u64,
) -> Result<(Journal, MarkIndex, u64), QueueError> {
    let (mut journal, records) = Journal::open(journal_path, journal_bytes).map_err(unavailable)?;
    let txn = db.begin_write().map_err(unavailable)?;
    let next_seq = {
        let applied = applied_through(&txn.open_table(META).map_err(unavailable)?)?;
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
        let through = last(JOBS)?.max(last(DEAD)?).max(applied);
        txn.open_table(META)
            .map_err(unavailable)?
            .insert(APPLIED_THROUGH, through)
            .map_err(unavailable)?;
        through + 1
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

/// Writes `records` (jobs, marks and the applied-through number) into `txn`, and sweeps a few
/// marks that expired by `now`.
fn apply_records(
    txn: &WriteTransaction,
    records: &[Record],
    now: Option<i64>,
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
    if let Some(now) = now {
        sweep_expired_marks(&mut marks, now)?;
    }
    Ok(())
}

/// Removes a few marks that expired by `now`, oldest first. (The writer's index drops them on its
/// own: an expired mark counts as absent there already.)
fn sweep_expired_marks(
    marks: &mut Table<'_, (i64, MarkId), ()>,
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
    for key in expired {
        marks.remove(key).map_err(unavailable)?;
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

/// What the applier is handed: journaled jobs, or a flush to answer once all before it are applied.
enum ToApply {
    Records {
        records: Vec<Record>,
        now: Option<i64>,
    },
    Flush(tokio::sync::oneshot::Sender<Result<(), QueueError>>),
}

/// How far the applier has come: every job up to this sequence number is durable in redb.
struct Applied {
    through: Mutex<u64>,
    changed: Condvar,
}

/// Starts the writer and its applier; the returned handle ends both (after they finish their
/// work) when dropped.
pub(crate) fn start(
    db: Weak<QueueFile>,
    notify: Arc<Notify>,
    recovered: (Journal, MarkIndex, u64),
    accepted_through: Arc<AtomicU64>,
) -> Result<Threads, QueueError> {
    let (journal, index, next_seq) = recovered;
    // A batch stops growing past a quarter of the journal, so that it always fits in a fresh one.
    let batch_bytes = usize::try_from(journal.capacity() / 4).unwrap_or(usize::MAX);
    let applied = Arc::new(Applied {
        through: Mutex::new(next_seq.saturating_sub(1)),
        changed: Condvar::new(),
    });
    let (to_apply, apply_rx) = std::sync::mpsc::channel();
    let applier = Applier {
        db,
        notify,
        applied: applied.clone(),
    };
    let applier = std::thread::Builder::new()
        .name("local-queue-applier".into())
        .spawn(move || applier.run(&apply_rx))
        .map_err(unavailable)?;
    let writer = Writer {
        journal,
        index,
        next_seq,
        cycle_last: None,
        batch_bytes,
        to_apply,
        applied,
        accepted_through,
        pruned_at: None,
    };
    let (requests, received) = std::sync::mpsc::channel();
    let writer = std::thread::Builder::new()
        .name("local-queue-writer".into())
        .spawn(move || writer.run(&received))
        .map_err(unavailable)?;
    Ok(Threads {
        requests: Some(requests),
        writer: Some(writer),
        applier: Some(applier),
    })
}

/// Owns the writer and applier threads: dropping the last queue handle drops this, which lets
/// them finish what they hold and joins them, so that once the handle is gone nothing holds the
/// files (a restart in the same process can open them again at once).
pub(crate) struct Threads {
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    applier: Option<JoinHandle<()>>,
}

impl Threads {
    /// Where requests go (until the threads are ended).
    pub(crate) fn sender(&self) -> Option<&Sender<Request>> {
        self.requests.as_ref()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.requests.take();
        for thread in [self.writer.take(), self.applier.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// The writer thread: decides, journals and answers.
struct Writer {
    journal: Journal,
    index: MarkIndex,
    next_seq: u64,
    /// The last sequence number written in the journal's current cycle.
    cycle_last: Option<u64>,
    /// Where a batch stops growing (journal bytes).
    batch_bytes: usize,
    to_apply: Sender<ToApply>,
    applied: Arc<Applied>,
    /// The last sequence number journaled (shared with [`crate::LocalQueue::pending`]).
    accepted_through: Arc<AtomicU64>,
    /// When (in marks' time) expired marks were last dropped from the index.
    pruned_at: Option<i64>,
}

impl Writer {
    fn run(mut self, requests: &Receiver<Request>) {
        while let Ok(request) = requests.recv() {
            let first = match request {
                Request::Flush(done) => {
                    self.forward_flush(done);
                    continue;
                }
                Request::Enqueue(first) => first,
            };
            let mut batch = vec![first];
            let mut bytes = batch.iter().map(|p| p.bytes.len()).sum::<usize>();
            let mut flush = None;
            while batch.len() < MAX_BATCH && bytes < self.batch_bytes && flush.is_none() {
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
                self.forward_flush(done);
            }
        }
        // Dropping `to_apply` lets the applier finish what it was handed, then end.
    }

    fn forward_flush(&self, done: tokio::sync::oneshot::Sender<Result<(), QueueError>>) {
        if let Err(std::sync::mpsc::SendError(ToApply::Flush(done))) =
            self.to_apply.send(ToApply::Flush(done))
        {
            let _ = done.send(Err(QueueError::Unavailable(
                "local queue applier stopped".into(),
            )));
        }
    }

    fn accept(&mut self, batch: Vec<PendingEnqueue>) {
        // 1. Decide, against the marks in memory (undone if the batch cannot be made durable).
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut undo = Vec::new();
        let mut waiters = Vec::with_capacity(batch.len());
        let mut now = None;
        for job in batch {
            waiters.push(job.done);
            if let Some(mark) = &job.mark {
                now = now.max(Some(mark.now));
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
        // 2. Durable: the journal.
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
                if let Some(last) = records.last() {
                    self.next_seq = last.seq + 1;
                    self.cycle_last = Some(last.seq);
                    self.accepted_through.store(last.seq, Ordering::Release);
                    // 3. To the applier, which makes them visible in redb. If it has stopped,
                    // they stay journaled and are applied when the queue opens next.
                    let _ = self.to_apply.send(ToApply::Records { records, now });
                }
                Ok(())
            }
        };
        // 4. Answer: each accepted job is durable.
        for (done, outcome) in waiters.into_iter().zip(outcomes) {
            let _ = done.send(result.clone().map(|()| outcome));
        }
        if let Some(now) = now {
            self.prune_index(now);
        }
    }

    /// Appends to the journal, starting a new cycle first when everything in it is applied.
    fn journal_append(&mut self, records: &[Record]) -> Result<(), QueueError> {
        if records.is_empty() {
            return Ok(());
        }
        if self.applied_through() >= self.cycle_last.unwrap_or(0) {
            self.restart();
        }
        if self.journal.append(records).map_err(unavailable)? {
            return Ok(());
        }
        // Full: wait until the applier has caught up with this cycle, then start over.
        self.wait_applied(self.cycle_last.unwrap_or(0))?;
        self.restart();
        if self.journal.append(records).map_err(unavailable)? {
            Ok(())
        } else {
            Err(QueueError::Malformed(
                "a batch larger than the local queue's journal".into(),
            ))
        }
    }

    fn restart(&mut self) {
        self.journal.restart();
        self.cycle_last = None;
    }

    fn applied_through(&self) -> u64 {
        self.applied.through.lock().map_or(0, |through| *through)
    }

    fn wait_applied(&self, seq: u64) -> Result<(), QueueError> {
        let timeout = || {
            QueueError::Unavailable(
                "local queue: the journal is full and jobs are not being applied".into(),
            )
        };
        let mut through = self.applied.through.lock().map_err(|_| timeout())?;
        let deadline = Instant::now() + FULL_JOURNAL_WAIT;
        while *through < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timeout());
            }
            through = self
                .applied
                .changed
                .wait_timeout(through, left)
                .map_err(|_| timeout())?
                .0;
        }
        Ok(())
    }

    /// Drops expired marks from the index once a minute (they already count as absent).
    fn prune_index(&mut self, now: i64) {
        if self.pruned_at.is_none_or(|at| now >= at + 60) {
            self.index.retain(|_, expires_at| *expires_at > now);
            self.pruned_at = Some(now);
        }
    }
}

/// The applier thread: takes journaled jobs in order and commits them to redb, all that are
/// waiting in one durable transaction.
struct Applier {
    db: Weak<QueueFile>,
    notify: Arc<Notify>,
    applied: Arc<Applied>,
}

/// What the applier holds between commits.
#[derive(Default)]
struct Work {
    records: Vec<Record>,
    now: Option<i64>,
    flushes: Vec<tokio::sync::oneshot::Sender<Result<(), QueueError>>>,
}

impl Work {
    fn take(&mut self, message: ToApply) {
        match message {
            ToApply::Records { records, now } => {
                self.records.extend(records);
                self.now = self.now.max(now);
            }
            ToApply::Flush(done) => self.flushes.push(done),
        }
    }
}

impl Applier {
    fn run(self, received: &Receiver<ToApply>) {
        let mut work = Work::default();
        let mut open = true;
        let mut last_commit: Option<Instant> = None;
        loop {
            // Wait for work: without limit when idle, a while when a failed commit waits.
            let waited = if work.records.is_empty() {
                received.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                received.recv_timeout(RETRY_APPLY)
            };
            match waited {
                Ok(message) => work.take(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            // Gather what else comes until APPLY_INTERVAL has passed since the last commit, so that
            // a trickle of jobs shares commits too (unless a flush is waiting, or the end came).
            while open && work.flushes.is_empty() {
                let due = last_commit.map_or_else(Instant::now, |at| at + APPLY_INTERVAL);
                let left = due.saturating_duration_since(Instant::now());
                match received.recv_timeout(left) {
                    Ok(message) => work.take(message),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => open = false,
                }
            }
            while let Ok(message) = received.try_recv() {
                work.take(message);
            }
            if work.records.is_empty() && work.flushes.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            last_commit = Some(Instant::now());
            let result = self.commit(&work.records, work.now);
            match &result {
                Ok(()) => work.records.clear(),
                Err(err) => {
                    tracing::error!(error = %err, jobs = work.records.len(),
                        "local queue: accepted jobs not applied yet (kept in the journal, retried)");
                    if !open {
                        return; // applied from the journal when the queue opens next
                    }
                }
            }
            for done in work.flushes.drain(..) {
                let _ = done.send(result.clone());
            }
        }
    }

    fn commit(&self, records: &[Record], now: Option<i64>) -> Result<(), QueueError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let file = self
            .db
            .upgrade()
            .ok_or_else(|| QueueError::Unavailable("local queue closed".into()))?;
        let committed = file.get().and_then(|db| {
            let txn = db.begin_write().map_err(unavailable)?;
            apply_records(&txn, records, now)?;
            txn.commit().map_err(unavailable)
        });
        if let Err(err) = committed {
            // redb refuses every transaction after an I/O error until the file is opened again:
            // done now, so that the next try (in RETRY_APPLY) can succeed once the fault clears.
            if let Err(reopen) = file.reopen() {
                tracing::warn!(error = %reopen, "local queue: the queue file could not be opened again yet");
            }
            return Err(err);
        }
        if let Ok(mut through) = self.applied.through.lock() {
            *through = last.seq;
        }
        self.applied.changed.notify_all();
        self.notify.notify_one();
        Ok(())
    }
}
