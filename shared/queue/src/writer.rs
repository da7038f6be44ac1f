//! The local queue's intake: a writer thread that decides, journals and answers, and an applier
//! thread that moves accepted jobs into `queue.redb`, as segments.
//!
//! Every enqueue waiting when the writer is free forms one batch (group commit):
//!
//! 1. duplicates are decided against the marks: in memory those whose jobs are not unpacked yet
//!    ([`UnindexedMarks`]), in `queue.redb`'s marks tables the others;
//! 2. the new jobs and marks are appended to the intake [`Journal`] with one `fdatasync`;
//! 3. each waiter is answered: its job is durable;
//! 4. the batch is handed to the applier.
//!
//! The applier commits every batch waiting for it in one durable redb transaction, as one segment:
//! a single value holding the journal's bytes, compressed ([`crate::tables::SEGMENTS`]). The worker's lease
//! unpacks the oldest segment into the jobs and marks tables when it finds nothing else to lease,
//! so the B-tree writes per job and per mark happen at the pace jobs run, not at the pace
//! webhooks arrive, where they held the answers back (tests/load/RESULTS.md, issue 19). The
//! journal starts over whenever the applier has caught up with it, and otherwise writes its two
//! halves in turn ([`crate::journal`]): a half is reused once the applier has applied it.
//!
//! A crash loses no answered job: the journal holds every job the applier may not have committed,
//! and [`recover`] applies them when the queue opens again.
//!
//! Memory stays bounded however long the queue runs: the writer keeps in memory only the marks
//! of jobs not unpacked yet, at most a journal cycle's plus [`MAX_PACKED_JOBS`] (past that bound
//! the applier unpacks segments itself), and looks every other mark up in the file, one read
//! transaction per batch. Marks live for days; holding them all in memory grew without limit
//! under sustained load (the soak in `tests/load` showed it). Both threads hold the database
//! weakly; [`Threads`] ends and joins them when the last queue handle is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadOnlyTable, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::Notify;

use crate::file::QueueFile;
use crate::journal::{Encoded, Journal, MarkId, Record};
use crate::tables::{
    APPLIED_THROUGH, DEAD, JOBS, MARKS_BY_EXPIRY, MARKS_BY_ID, MARKS_BY_ID_BUILT, META, SEGMENTS,
    applied_through, segment_records, segment_value, unavailable, unpack_oldest_segment,
    unpacked_through,
};
use crate::{Enqueued, QueueError};

/// The journal file's size.
pub(crate) const JOURNAL_BYTES: u64 = 8 * 1024 * 1024;

/// Most jobs one batch carries.
const MAX_BATCH: usize = 512;

/// Under a steady stream of jobs the applier commits at most this often; a job that arrives after
/// a quiet spell is committed at once. Each commit rewrites the B-tree pages its jobs and marks
/// touch and waits for the disk, so fewer, larger commits leave more of the two cores to the
/// answers: at 50 connections 50 ms gave 33 000 queued events a second where 10 ms gave 26 000
/// (tests/load/RESULTS.md). The cost: under load a job becomes visible to the worker up to this
/// much later. (The journal's two halves keep this from ever holding up an answer.)
pub(crate) const APPLY_INTERVAL: Duration = Duration::from_millis(50);

/// How long the writer keeps polling for the next request after a batch before it sleeps. With
/// one sender (one connection) the next event comes about 80 µs after the last answer, and a
/// writer asleep by then costs that event a wake-up between threads: at one connection the
/// durable path answered 4 900–5 900 events a second sleeping at once, 6 200–6 800 polling
/// first (tests/load/RESULTS.md, issue 19). It yields the core between polls, so the answers'
/// threads run first; under load the next request is there already and it never polls.
const WRITER_POLL: Duration = Duration::from_micros(100);

/// How long the applier waits before trying a failed commit again.
const RETRY_APPLY: Duration = Duration::from_secs(1);

/// How long a full journal waits for the applier to catch up before refusing jobs (503).
const FULL_JOURNAL_WAIT: Duration = Duration::from_secs(5);

/// Most expired marks one commit removes, so that a backlog of them never delays an answer much.
const MARK_SWEEP_PER_COMMIT: usize = 64;

/// Most accepted jobs left in segments before the applier unpacks the oldest itself. The writer
/// keeps the mark of every job not unpacked yet in memory (about 90 bytes each, so some 90 MiB at
/// this bound); the worker normally unpacks long before, as it leases. Past the bound (a worker
/// that is off or far behind) each applier commit unpacks up to [`UNPACK_PER_COMMIT`] segments,
/// and the answers pay for the marks' B-tree writes again.
pub(crate) const MAX_PACKED_JOBS: u64 = 1 << 20;

/// Most segments one applier commit unpacks when more than [`MAX_PACKED_JOBS`] wait.
const UNPACK_PER_COMMIT: usize = 4;

/// The marks the writer has journaled whose jobs are not unpacked yet (so the marks tables may
/// not have them): their expiry and the sequence number of the job that took them, by id. Owned
/// by the writer thread (the only one that decides on marks, so it needs no lock).
///
/// Kept in generations of at most [`GENERATION_MARKS`], each a map sized for that many up front:
/// one map of a million marks doubled its table now and then, and each doubling held the writer,
/// and every answer waiting on it, for milliseconds. A lookup tries the newest generation first
/// (a mark taken again after it expired is found with its latest job). A generation is dropped
/// once every job in it is unpacked ([`crate::tables::unpack_oldest_segment`]), so this holds at
/// most a journal cycle's marks plus [`MAX_PACKED_JOBS`], and a generation more.
pub(crate) struct UnindexedMarks {
    /// Oldest first; the batch being decided takes marks in the last.
    generations: VecDeque<Generation>,
    /// How many marks a generation's map has room for.
    capacity: usize,
    /// How many make it full: room is left for one more batch.
    full_at: usize,
}

struct Generation {
    by_id: HashMap<MarkId, (i64, u64)>,
    /// The highest sequence number that took a mark here.
    last_seq: u64,
}

/// Room for marks in an [`UnindexedMarks`] generation: 7/8 of a power of two, the most a map of
/// that many slots holds without growing (about 38 bytes a mark). A generation is full once a
/// batch might not fit in what is left.
const GENERATION_MARKS: usize = 14_336;

impl Default for UnindexedMarks {
    fn default() -> Self {
        Self::with_generations_of(GENERATION_MARKS, GENERATION_MARKS - MAX_BATCH)
    }
}

impl UnindexedMarks {
    fn with_generations_of(capacity: usize, full_at: usize) -> Self {
        Self {
            generations: VecDeque::new(),
            capacity,
            full_at,
        }
    }

    /// The mark's expiry, if it is here.
    fn expiry(&self, id: &MarkId) -> Option<i64> {
        self.generations
            .iter()
            .rev()
            .find_map(|generation| generation.by_id.get(id))
            .map(|(expires_at, _)| *expires_at)
    }

    /// Takes a mark for the job `seq`; returns what it replaced in the newest generation, for
    /// [`UnindexedMarks::undo`].
    fn take(&mut self, id: MarkId, expires_at: i64, seq: u64) -> Option<(i64, u64)> {
        if self.generations.is_empty() {
            self.generations.push_back(Generation {
                by_id: HashMap::with_capacity(self.capacity),
                last_seq: seq,
            });
        }
        let newest = self.generations.back_mut()?;
        newest.last_seq = newest.last_seq.max(seq);
        newest.by_id.insert(id, (expires_at, seq))
    }

    /// Puts back what [`UnindexedMarks::take`] replaced (newest first): the batch was not kept.
    fn undo(&mut self, taken: Vec<(MarkId, Option<(i64, u64)>)>) {
        let Some(newest) = self.generations.back_mut() else {
            return;
        };
        for (id, before) in taken.into_iter().rev() {
            match before {
                Some(entry) => newest.by_id.insert(id, entry),
                None => newest.by_id.remove(&id),
            };
        }
    }

    /// The batch is journaled: the next one starts a new generation if this one is full. (A batch
    /// never spans two, so that [`UnindexedMarks::undo`] has only the newest to undo.)
    fn journaled(&mut self) {
        if self
            .generations
            .back()
            .is_some_and(|newest| newest.by_id.len() >= self.full_at)
        {
            self.generations.push_back(Generation {
                by_id: HashMap::with_capacity(self.capacity),
                last_seq: 0,
            });
        }
    }

    /// Drops the generations whose jobs are all unpacked by `unpacked_through`: the marks tables
    /// have their marks now. (What is left of an older generation answers as the tables would.)
    fn forget_unpacked(&mut self, unpacked_through: u64) {
        while self
            .generations
            .front()
            .is_some_and(|oldest| oldest.last_seq <= unpacked_through)
        {
            self.generations.pop_front();
        }
    }
}

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

/// What [`recover`] found: the journal (empty), the next sequence number, the marks of jobs not
/// unpacked yet, and the number through which jobs are unpacked.
pub(crate) struct Recovered {
    pub(crate) journal: Journal,
    pub(crate) next_seq: u64,
    pub(crate) marks: UnindexedMarks,
    pub(crate) unpacked_through: u64,
}

/// Opens the journal next to the queue file and applies what redb lost in a crash, durably; then
/// reads the marks of the segments not unpacked yet, which the writer keeps in memory.
pub(crate) fn recover(
    db: &Database,
    journal_path: &std::path::Path,
    journal_bytes: u64,
) -> Result<Recovered, QueueError> {
    let (mut journal, records) = Journal::open(journal_path, journal_bytes).map_err(unavailable)?;
    let txn = db.begin_write().map_err(unavailable)?;
    let (next_seq, marks, unpacked) = {
        build_marks_by_id(&txn)?;
        let applied = applied_through(&txn.open_table(META).map_err(unavailable)?)?;
        let lost: Vec<Record> = records.into_iter().filter(|r| r.seq > applied).collect();
        if !lost.is_empty() {
            tracing::warn!(
                jobs = lost.len(),
                "local queue: applying jobs from the journal that the last run did not"
            );
        }
        apply_records(&txn, &Encoded::new(&lost), None)?;
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
        let segments = txn.open_table(SEGMENTS).map_err(unavailable)?;
        let mut marks = UnindexedMarks::default();
        for segment in segments.iter().map_err(unavailable)? {
            let records = segment_records(segment.map_err(unavailable)?.1.value())?;
            for record in &records {
                if let Some((id, expires_at)) = record.mark {
                    marks.take(id, expires_at, record.seq);
                }
            }
            marks.journaled();
        }
        (through + 1, marks, unpacked_through(&segments, through)?)
    };
    txn.commit().map_err(unavailable)?;
    journal.restart();
    Ok(Recovered {
        journal,
        next_seq,
        marks,
        unpacked_through: unpacked,
    })
}

/// Fills [`MARKS_BY_ID`] from [`MARKS_BY_EXPIRY`] once, in a queue file written before the by-id
/// table existed (a new file has nothing to copy).
fn build_marks_by_id(txn: &WriteTransaction) -> Result<(), QueueError> {
    let mut meta = txn.open_table(META).map_err(unavailable)?;
    if meta.get(MARKS_BY_ID_BUILT).map_err(unavailable)?.is_some() {
        return Ok(());
    }
    let mut by_id = txn.open_table(MARKS_BY_ID).map_err(unavailable)?;
    // In expiry order: a renewed mark's later entry wins.
    for entry in txn
        .open_table(MARKS_BY_EXPIRY)
        .map_err(unavailable)?
        .iter()
        .map_err(unavailable)?
    {
        let (expires_at, id) = entry.map_err(unavailable)?.0.value();
        by_id.insert(id, expires_at).map_err(unavailable)?;
    }
    meta.insert(MARKS_BY_ID_BUILT, 1).map_err(unavailable)?;
    Ok(())
}

/// Writes `records` into `txn` as one segment with the applied-through number, and sweeps a few
/// marks that expired by `now`.
fn apply_records(
    txn: &WriteTransaction,
    records: &Encoded,
    now: Option<i64>,
) -> Result<(), QueueError> {
    if let (Some(first), Some(last)) = (records.first_seq, records.last_seq) {
        txn.open_table(SEGMENTS)
            .map_err(unavailable)?
            .insert(first, segment_value(records).as_slice())
            .map_err(unavailable)?;
        txn.open_table(META)
            .map_err(unavailable)?
            .insert(APPLIED_THROUGH, last)
            .map_err(unavailable)?;
    }
    if let Some(now) = now {
        let mut by_id = txn.open_table(MARKS_BY_ID).map_err(unavailable)?;
        let mut by_expiry = txn.open_table(MARKS_BY_EXPIRY).map_err(unavailable)?;
        sweep_expired_marks(&mut by_id, &mut by_expiry, now)?;
    }
    Ok(())
}

/// Removes a few marks that expired by `now`, oldest first (an expired mark counts as absent
/// already; this only gives the space back). A renewed mark keeps its by-id entry.
fn sweep_expired_marks(
    by_id: &mut Table<'_, MarkId, i64>,
    by_expiry: &mut Table<'_, (i64, MarkId), ()>,
    now: i64,
) -> Result<(), QueueError> {
    let mut expired = Vec::new();
    for entry in by_expiry
        .range(..(now.saturating_add(1), [0; 16]))
        .map_err(unavailable)?
        .take(MARK_SWEEP_PER_COMMIT)
    {
        expired.push(entry.map_err(unavailable)?.0.value());
    }
    for (expires_at, id) in expired {
        by_expiry.remove((expires_at, id)).map_err(unavailable)?;
        let latest = by_id.get(id).map_err(unavailable)?.map(|e| e.value());
        if latest == Some(expires_at) {
            by_id.remove(id).map_err(unavailable)?;
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

/// What the applier is handed: journaled jobs, or a flush to answer once all before it are applied.
enum ToApply {
    Records { records: Encoded, now: Option<i64> },
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
    recovered: Recovered,
    accepted_through: Arc<AtomicU64>,
    unpacked_through: Arc<AtomicU64>,
    max_packed_jobs: u64,
) -> Result<Threads, QueueError> {
    let Recovered {
        journal,
        next_seq,
        marks,
        ..
    } = recovered;
    // A batch stops growing past a quarter of the journal, so that it always fits in an empty half.
    let batch_bytes = usize::try_from(journal.capacity() / 4).unwrap_or(usize::MAX);
    let applied = Arc::new(Applied {
        through: Mutex::new(next_seq.saturating_sub(1)),
        changed: Condvar::new(),
    });
    let (to_apply, apply_rx) = std::sync::mpsc::channel();
    let applier = Applier {
        db: db.clone(),
        notify,
        applied: applied.clone(),
        unpacked_through: unpacked_through.clone(),
        max_packed_jobs,
    };
    let applier = std::thread::Builder::new()
        .name("local-queue-applier".into())
        .spawn(move || applier.run(&apply_rx))
        .map_err(unavailable)?;
    let writer = Writer {
        db,
        journal,
        applier_thread: applier.thread().clone(),
        marks,
        unpacked_through,
        next_seq,
        cycle_last: None,
        batch_bytes,
        to_apply,
        applied,
        accepted_through,
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
    /// Where committed marks are looked up.
    db: Weak<QueueFile>,
    journal: Journal,
    /// The applier, to wake when it must not wait out [`APPLY_INTERVAL`]: a flush, the end.
    applier_thread: std::thread::Thread,
    marks: UnindexedMarks,
    /// Every job up to this sequence number is unpacked, its mark in the marks tables (shared
    /// with the worker's leases and the applier, which unpack).
    unpacked_through: Arc<AtomicU64>,
    next_seq: u64,
    /// The last sequence number written in the journal since it last started over.
    cycle_last: Option<u64>,
    /// Where a batch stops growing (journal bytes).
    batch_bytes: usize,
    to_apply: Sender<ToApply>,
    applied: Arc<Applied>,
    /// The last sequence number journaled (shared with [`crate::LocalQueue::pending`]).
    accepted_through: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, requests: &Receiver<Request>) {
        while let Some(request) = next_request(requests) {
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
        // A clean stop: once the applier has everything, the next open has nothing to read.
        if self.wait_applied(self.cycle_last.unwrap_or(0)).is_ok()
            && let Err(err) = self.journal.clear()
        {
            tracing::warn!(error = %err, "local queue: the journal could not be cleared (read again at the next open)");
        }
        // Dropping `to_apply` lets the applier finish what it was handed, then end; it may be
        // parked until the end of its interval.
        drop(self.to_apply);
        self.applier_thread.unpark();
    }

    fn forward_flush(&self, done: tokio::sync::oneshot::Sender<Result<(), QueueError>>) {
        if let Err(std::sync::mpsc::SendError(ToApply::Flush(done))) =
            self.to_apply.send(ToApply::Flush(done))
        {
            let _ = done.send(Err(QueueError::Unavailable(
                "local queue applier stopped".into(),
            )));
        }
        // The applier may be waiting out APPLY_INTERVAL, where batches do not wake it.
        self.applier_thread.unpark();
    }

    fn accept(&mut self, batch: Vec<PendingEnqueue>) {
        let mut waiters = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch {
            waiters.push(job.done);
            jobs.push((job.mark, job.bytes));
        }
        let now = jobs
            .iter()
            .filter_map(|(mark, _)| mark.as_ref().map(|m| m.now))
            .max();
        // 1. Decide (undone if the batch cannot be made durable), then 2. make it durable.
        let mut taken = Vec::new();
        let decided = self
            .decide(jobs, &mut taken)
            .and_then(|(outcomes, records)| {
                let encoded = Encoded::new(&records);
                self.journal_append(&encoded)?;
                self.marks.journaled();
                Ok((outcomes, encoded))
            });
        let answer = match decided {
            Err(err) => {
                // Nothing was kept: undo the marks, so that a redelivery is not a duplicate.
                self.marks.undo(taken);
                Err(err)
            }
            Ok((outcomes, records)) => {
                if let Some(last) = records.last_seq {
                    self.next_seq = last + 1;
                    self.cycle_last = Some(last);
                    self.accepted_through.store(last, Ordering::Release);
                    // 3. To the applier, which makes them visible in redb. If it has stopped,
                    // they stay journaled and are applied when the queue opens next.
                    let _ = self.to_apply.send(ToApply::Records { records, now });
                }
                Ok(outcomes)
            }
        };
        // 4. Answer: each accepted job is durable.
        match answer {
            Ok(outcomes) => {
                for (done, outcome) in waiters.into_iter().zip(outcomes) {
                    let _ = done.send(Ok(outcome));
                }
            }
            Err(err) => {
                for done in waiters {
                    let _ = done.send(Err(err.clone()));
                }
            }
        }
    }

    /// Decides each job: a duplicate if its mark is held (unexpired), else a record to journal,
    /// its mark taken (noted in `taken`, to undo).
    fn decide(
        &mut self,
        jobs: Vec<(Option<PendingMark>, Vec<u8>)>,
        taken: &mut Vec<(MarkId, Option<(i64, u64)>)>,
    ) -> Result<(Vec<Enqueued>, Vec<Record>), QueueError> {
        // Read before the file is: every mark dropped here is in what the file shows next.
        self.marks
            .forget_unpacked(self.unpacked_through.load(Ordering::Acquire));
        let mut committed = CommittedMarks::new(&self.db);
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut records: Vec<Record> = Vec::with_capacity(jobs.len());
        for (mark, job) in jobs {
            let seq = self.next_seq + records.len() as u64;
            if let Some(mark) = &mark {
                let expires_at = match self.marks.expiry(&mark.id) {
                    Some(expires_at) => Some(expires_at),
                    None => committed.expiry(&mark.id)?,
                };
                if expires_at.is_some_and(|expires_at| expires_at > mark.now) {
                    outcomes.push(Enqueued::Duplicate);
                    continue;
                }
                taken.push((mark.id, self.marks.take(mark.id, mark.expires_at, seq)));
            }
            records.push(Record {
                seq,
                mark: mark.as_ref().map(|m| (m.id, m.expires_at)),
                job,
            });
            outcomes.push(Enqueued::Queued);
        }
        Ok((outcomes, records))
    }

    /// Appends to the journal: from its start again when everything in it is applied, in the
    /// other half when this one is full (waiting, if ever, for the other half's records to be
    /// applied first).
    fn journal_append(&mut self, records: &Encoded) -> Result<(), QueueError> {
        if records.last_seq.is_none() {
            return Ok(());
        }
        if self.applied_through() >= self.cycle_last.unwrap_or(0) {
            self.restart();
        }
        if self.journal.append(records).map_err(unavailable)? {
            return Ok(());
        }
        if let Some(other) = self.journal.other_half_last() {
            self.wait_applied(other)?;
        }
        self.journal.switch();
        if self.journal.append(records).map_err(unavailable)? {
            Ok(())
        } else {
            Err(QueueError::Malformed(
                "a batch larger than half the local queue's journal".into(),
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
        if *through < seq {
            // Have the applier commit now rather than at the end of its interval. Nobody waits
            // for the flush's own answer: this waits for the number instead.
            self.forward_flush(tokio::sync::oneshot::channel().0);
        }
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
}

/// The next request: polled for up to [`WRITER_POLL`] (yielding the core between polls), then
/// waited for. `None` once every sender is gone.
fn next_request(requests: &Receiver<Request>) -> Option<Request> {
    let until = Instant::now() + WRITER_POLL;
    loop {
        match requests.try_recv() {
            Ok(request) => return Some(request),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if Instant::now() < until => std::thread::yield_now(),
            Err(TryRecvError::Empty) => return requests.recv().ok(),
        }
    }
}

/// The marks the applier has committed, read from the file in one read transaction opened at the
/// first lookup (a batch whose marks are all in memory, or that has none, reads nothing).
struct CommittedMarks<'a> {
    db: &'a Weak<QueueFile>,
    table: Option<ReadOnlyTable<MarkId, i64>>,
}

impl<'a> CommittedMarks<'a> {
    fn new(db: &'a Weak<QueueFile>) -> Self {
        Self { db, table: None }
    }

    fn expiry(&mut self, id: &MarkId) -> Result<Option<i64>, QueueError> {
        let table = match &mut self.table {
            Some(table) => table,
            None => {
                let file = self
                    .db
                    .upgrade()
                    .ok_or_else(|| QueueError::Unavailable("local queue closed".into()))?;
                let read = file.get()?.begin_read().map_err(unavailable)?;
                self.table
                    .insert(read.open_table(MARKS_BY_ID).map_err(unavailable)?)
            }
        };
        Ok(table.get(id).map_err(unavailable)?.map(|e| e.value()))
    }
}

/// The applier thread: takes journaled jobs in order and commits them to redb, all that are
/// waiting in one durable transaction.
struct Applier {
    db: Weak<QueueFile>,
    notify: Arc<Notify>,
    applied: Arc<Applied>,
    unpacked_through: Arc<AtomicU64>,
    /// [`MAX_PACKED_JOBS`], or a smaller bound in tests.
    max_packed_jobs: u64,
}

/// What the applier holds between commits.
#[derive(Default)]
struct Work {
    records: Encoded,
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

/// Takes every message waiting in `received`; false once the writer has gone.
fn drain(received: &Receiver<ToApply>, work: &mut Work) -> bool {
    loop {
        match received.try_recv() {
            Ok(message) => work.take(message),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
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
            let waited = if work.records.last_seq.is_none() {
                received.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                received.recv_timeout(RETRY_APPLY)
            };
            match waited {
                Ok(message) => work.take(message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            // Wait out APPLY_INTERVAL since the last commit, so that a stream of jobs shares
            // commits too, unless a flush is waiting or the end came. Parked, not blocked on the
            // channel: a batch sent meanwhile does not wake this thread (under load that was a
            // wake-up and two context switches per batch, on a machine whose cores the answers
            // need); the writer unparks it for a flush and at the end.
            if let Some(at) = last_commit {
                let due = at + APPLY_INTERVAL;
                while open && work.flushes.is_empty() {
                    let left = due.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::park_timeout(left);
                    open = drain(received, &mut work);
                }
            }
            open = drain(received, &mut work) && open;
            if work.records.last_seq.is_none() && work.flushes.is_empty() {
                if open {
                    continue;
                }
                return;
            }
            last_commit = Some(Instant::now());
            let result = self.commit(&work.records, work.now);
            match &result {
                Ok(()) => work.records = Encoded::default(),
                Err(err) => {
                    tracing::error!(error = %err, jobs = work.records.last_seq.zip(work.records.first_seq).map_or(0, |(last, first)| last + 1 - first),
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

    fn commit(&self, records: &Encoded, now: Option<i64>) -> Result<(), QueueError> {
        let Some(last) = records.last_seq else {
            return Ok(());
        };
        let file = self
            .db
            .upgrade()
            .ok_or_else(|| QueueError::Unavailable("local queue closed".into()))?;
        let committed = file.get().and_then(|db| {
            let txn = db.begin_write().map_err(unavailable)?;
            apply_records(&txn, records, now)?;
            let unpacked = self.unpack_past_the_bound(&txn, last)?;
            txn.commit().map_err(unavailable)?;
            Ok(unpacked)
        });
        match committed {
            Err(err) => {
                // redb refuses every transaction after an I/O error until the file is opened
                // again: done now, so that the next try (in RETRY_APPLY) can succeed once the
                // fault clears.
                if let Err(reopen) = file.reopen() {
                    tracing::warn!(error = %reopen, "local queue: the queue file could not be opened again yet");
                }
                return Err(err);
            }
            Ok(Some(unpacked)) => {
                self.unpacked_through.fetch_max(unpacked, Ordering::AcqRel);
            }
            Ok(None) => {}
        }
        if let Ok(mut through) = self.applied.through.lock() {
            *through = last;
        }
        self.applied.changed.notify_all();
        self.notify.notify_one();
        Ok(())
    }
}

impl Applier {
    /// Unpacks the oldest segments in `txn` while more than `max_packed_jobs` jobs through
    /// `applied` are packed (at most [`UNPACK_PER_COMMIT`]); returns the last sequence number
    /// unpacked, if any.
    fn unpack_past_the_bound(
        &self,
        txn: &WriteTransaction,
        applied: u64,
    ) -> Result<Option<u64>, QueueError> {
        let mut unpacked = None;
        for _ in 0..UNPACK_PER_COMMIT {
            let through = unpacked.unwrap_or_else(|| self.unpacked_through.load(Ordering::Acquire));
            if applied.saturating_sub(through) <= self.max_packed_jobs {
                break;
            }
            match unpack_oldest_segment(txn)? {
                Some(last) => unpacked = Some(last),
                None => break,
            }
        }
        Ok(unpacked)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unindexed_marks_go_a_generation_at_a_time_and_a_renewal_stays_with_its_job() {
        let mut marks = UnindexedMarks::with_generations_of(2, 2);
        assert_eq!(marks.take([1; 16], 100, 1), None);
        assert_eq!(marks.take([2; 16], 100, 2), None);
        marks.journaled();
        // Mark 1 expired and was taken again by job 3, in the next generation.
        assert_eq!(marks.take([1; 16], 200, 3), None);
        marks.journaled();
        assert_eq!(marks.expiry(&[1; 16]), Some(200));
        assert_eq!(marks.generations.len(), 2);

        // Job 1 alone unpacked: its generation stays (and answers as the tables would).
        marks.forget_unpacked(1);
        assert_eq!(marks.expiry(&[2; 16]), Some(100));
        marks.forget_unpacked(2);
        assert_eq!(marks.expiry(&[1; 16]), Some(200));
        assert_eq!(marks.expiry(&[2; 16]), None);
        marks.forget_unpacked(3);
        assert!(marks.generations.is_empty());
        assert_eq!(marks.expiry(&[1; 16]), None);
    }

    #[test]
    fn an_undone_batch_puts_back_what_its_marks_replaced() {
        let mut marks = UnindexedMarks::with_generations_of(4, 4);
        marks.take([1; 16], 100, 1);
        marks.journaled();
        let taken = vec![
            ([1; 16], marks.take([1; 16], 300, 2)),
            ([2; 16], marks.take([2; 16], 300, 3)),
        ];
        marks.undo(taken);
        assert_eq!(marks.expiry(&[1; 16]), Some(100));
        assert_eq!(marks.expiry(&[2; 16]), None);
    }

    /// A queue file from before the by-id table: its marks are found by id after the first open.
    #[test]
    fn marks_of_an_older_queue_file_are_indexed_by_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("queue.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut by_expiry = txn.open_table(MARKS_BY_EXPIRY).unwrap();
            by_expiry.insert((100, [1; 16]), ()).unwrap();
            by_expiry.insert((300, [1; 16]), ()).unwrap(); // renewed
            by_expiry.insert((200, [2; 16]), ()).unwrap();
        }
        txn.commit().unwrap();

        recover(&db, &dir.path().join("queue.journal"), 4096).unwrap();
        let read = db.begin_read().unwrap();
        let by_id = read.open_table(MARKS_BY_ID).unwrap();
        assert_eq!(by_id.get([1; 16]).unwrap().unwrap().value(), 300);
        assert_eq!(by_id.get([2; 16]).unwrap().unwrap().value(), 200);
        let meta = read.open_table(META).unwrap();
        assert!(meta.get(MARKS_BY_ID_BUILT).unwrap().is_some());
    }
}
