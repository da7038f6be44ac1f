//! A durable local queue under the data directory: `queue.redb` (jobs, dead letters, idempotency
//! marks; the tables are in [`crate::tables`]) fed through `queue.journal` by one writer thread
//! ([`crate::writer`]).
//!
//! It behaves like the SQS FIFO queue where it matters to the worker: jobs of one page run in
//! order (a later job of a page waits while an earlier one is leased or waiting to retry), a leased
//! job that is not finished comes back, a job leased `max_receives` times goes to the dead-letter
//! table, and everything survives a restart or a crash. As on SQS, an accepted job becomes visible
//! to leases shortly after its answer (here once the applier's next commit ends, typically within
//! milliseconds; [`LocalQueue::flush`] waits for it).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tokio::sync::Notify;

use crate::file::{Opener, QueueFile};
use crate::tables::{
    DEAD, JOBS, MARKS_BY_ID, META, SEGMENTS, Stored, applied_through, mark_id, segment_records,
    unavailable, unpack_oldest_segment, unpacked_through,
};
use crate::writer::{
    JOURNAL_BYTES, MAX_PACKED_JOBS, PendingEnqueue, PendingMark, Request, Threads, recover, start,
};
use crate::{EditJobMessage, EditQueue, Enqueued, IntakeError, JobIntake, QueueError};

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
    /// The writer and applier. Before `db`: dropping the last handle joins the threads while the
    /// database is still open, so they can finish their work.
    threads: Arc<Threads>,
    db: Arc<QueueFile>,
    notify: Arc<Notify>,
    /// The last sequence number accepted (journaled), applied to the file or not.
    accepted_through: Arc<AtomicU64>,
    /// Every job up to this sequence number is unpacked from its segment
    /// ([`crate::tables::SEGMENTS`]), its mark in the marks tables. The writer drops its copy of
    /// such marks.
    unpacked_through: Arc<AtomicU64>,
    /// When one of the worker's commits last waited for the disk.
    worker_synced_at: Arc<Mutex<Instant>>,
}

/// The worker's own commits (lease, complete, retry, dead-letter) skip the fsync unless the last
/// one that waited for the disk is older than this.
///
/// Why that is safe: a job itself is always durable before the webhook answers (the writer's
/// journal, then its own durable commits); a worker commit lost in a crash only makes a job run again, which the queue allows
/// anyway (it is at-least-once, as SQS is) and which the engine turns into "nothing to change".
/// Why it matters: the worker shares the file's single write lock with the webhooks' commits, and
/// three fsyncs per job there would hold every webhook behind them.
const WORKER_SYNC_INTERVAL: Duration = Duration::from_millis(200);

/// Most segments one lease unpacks while it finds nothing to lease (every unpacked job's page
/// waiting for an earlier job): a bound on one transaction's work.
const UNPACK_PER_LEASE: usize = 4;

/// The queue file's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").finish_non_exhaustive()
    }
}

impl LocalQueue {
    /// Opens (or creates) `queue.redb` in `data_dir`. Jobs that were leased when the last process
    /// stopped are visible again at once: nobody else can be working on them.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<Self, QueueError> {
        Self::open_with(data_dir, JOURNAL_BYTES, MAX_PACKED_JOBS)
    }

    /// Opens the queue with `queue.redb` on `storage` instead of the file itself (the journal
    /// stays a file in `data_dir`): the seam through which tests make the queue file's writes
    /// fail (a full disk, an I/O error) and come back.
    pub fn open_on_storage<B: redb::StorageBackend>(
        data_dir: impl AsRef<Path>,
        storage: impl Fn() -> std::io::Result<B> + Send + Sync + 'static,
    ) -> Result<Self, QueueError> {
        std::fs::create_dir_all(data_dir.as_ref()).map_err(unavailable)?;
        let open: Opener = Box::new(move || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(storage().map_err(unavailable)?)
                .map_err(unavailable)
        });
        Self::open_database(open, data_dir.as_ref(), JOURNAL_BYTES, MAX_PACKED_JOBS)
    }

    /// Opens the queue with a journal of `journal_bytes` and at most `max_packed_jobs` jobs left
    /// in segments before the applier unpacks them itself (the defaults, or small ones in tests).
    fn open_with(
        data_dir: impl AsRef<Path>,
        journal_bytes: u64,
        max_packed_jobs: u64,
    ) -> Result<Self, QueueError> {
        std::fs::create_dir_all(data_dir.as_ref()).map_err(unavailable)?;
        let path = data_dir.as_ref().join("queue.redb");
        // redb's page cache defaults to 1 GiB: bounded here, as the queue is mostly appended to.
        let open: Opener = Box::new(move || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
                .map_err(unavailable)
        });
        Self::open_database(open, data_dir.as_ref(), journal_bytes, max_packed_jobs)
    }

    fn open_database(
        open: Opener,
        data_dir: &Path,
        journal_bytes: u64,
        max_packed_jobs: u64,
    ) -> Result<Self, QueueError> {
        let db = open()?;
        let recovered = recover(&db, &data_dir.join("queue.journal"), journal_bytes)?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
            txn.open_table(DEAD).map_err(unavailable)?;
            let mut stored = Vec::new();
            for item in jobs.iter().map_err(unavailable)? {
                let (seq, bytes) = item.map_err(unavailable)?;
                stored.push((seq.value(), Stored::decode(bytes.value())?));
            }
            for (seq, mut job) in stored {
                job.visible_at_ms = 0;
                jobs.insert(seq, job.encode()?.as_slice())
                    .map_err(unavailable)?;
            }
        }
        txn.commit().map_err(unavailable)?;
        let (db, notify) = (Arc::new(QueueFile::new(db, open)), Arc::new(Notify::new()));
        let accepted_through = Arc::new(AtomicU64::new(recovered.next_seq.saturating_sub(1)));
        let unpacked_through = Arc::new(AtomicU64::new(recovered.unpacked_through));
        let threads = start(
            Arc::downgrade(&db),
            notify.clone(),
            recovered,
            accepted_through.clone(),
            unpacked_through.clone(),
            max_packed_jobs,
        )?;
        Ok(Self {
            threads: Arc::new(threads),
            db,
            notify,
            accepted_through,
            unpacked_through,
            worker_synced_at: Arc::new(Mutex::new(Instant::now())),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        let db = self.db.get()?;
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
    /// `visibility_ms` milliseconds. Jobs accepted in the last few milliseconds may not be
    /// visible yet ([`LocalQueue::flush`]). When no unpacked job can be leased, the oldest segment
    /// is unpacked first ([`crate::tables::unpack_oldest_segment`]), up to [`UNPACK_PER_LEASE`] of
    /// them.
    pub async fn lease(
        &self,
        now_ms: i64,
        visibility_ms: i64,
    ) -> Result<Option<Lease>, QueueError> {
        let (lease, unpacked, more) = self
            .worker_write(move |txn| {
                let mut unpacked = None;
                for _ in 0..UNPACK_PER_LEASE {
                    if let Some(lease) = lease_unpacked(txn, now_ms, visibility_ms)? {
                        return Ok((Some(lease), unpacked, false));
                    }
                    match unpack_oldest_segment(txn)? {
                        Some(last) => unpacked = Some(last),
                        None => return Ok((None, unpacked, false)),
                    }
                }
                let lease = lease_unpacked(txn, now_ms, visibility_ms)?;
                Ok((lease, unpacked, true))
            })
            .await?;
        if let Some(last) = unpacked {
            self.unpacked_through.fetch_max(last, Ordering::AcqRel);
        }
        if lease.is_none() && more {
            // Segments are left that the bound kept this lease from unpacking: come back at once.
            self.notify.notify_one();
        }
        Ok(lease)
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
                .map(|b| Stored::decode(b.value()));
            if let Some(job) = current {
                let mut job = job?;
                job.visible_at_ms = visible_at_ms;
                jobs.insert(seq, job.encode()?.as_slice())
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
                .map(|b| Stored::decode(b.value()));
            if let Some(job) = current {
                let mut job = job?;
                job.reason = Some(reason);
                txn.open_table(DEAD)
                    .map_err(unavailable)?
                    .insert(seq, job.encode()?.as_slice())
                    .map_err(unavailable)?;
            }
            Ok(())
        })
        .await?;
        self.notify.notify_one();
        Ok(())
    }

    /// How many jobs wait or run, accepted ones not yet applied to the file included.
    pub async fn pending(&self) -> Result<u64, QueueError> {
        let accepted = self.accepted_through.clone();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let unpacked = txn
                .open_table(JOBS)
                .map_err(unavailable)?
                .len()
                .map_err(unavailable)?;
            let applied = applied_through(&txn.open_table(META).map_err(unavailable)?)?;
            let packed_from =
                unpacked_through(&txn.open_table(SEGMENTS).map_err(unavailable)?, applied)?;
            // Read after the snapshot, so every job the snapshot lacks is counted, none twice.
            // Sequence numbers of accepted jobs have no gaps: those above `packed_from` are in
            // segments (through `applied`) or still in the journal.
            let accepted = accepted.load(Ordering::Acquire);
            Ok(unpacked + accepted.saturating_sub(packed_from))
        })
        .await
    }

    fn send(&self, request: Request) -> Result<(), QueueError> {
        self.threads
            .sender()
            .ok_or_else(|| QueueError::Unavailable("local queue closed".into()))?
            .send(request)
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))
    }

    /// Waits until every job accepted so far is visible to [`LocalQueue::lease`] (the applier
    /// commits them on its own within milliseconds; this is for callers that must know).
    pub async fn flush(&self) -> Result<(), QueueError> {
        let (done, applied) = tokio::sync::oneshot::channel();
        self.send(Request::Flush(done))?;
        applied
            .await
            .map_err(|_| QueueError::Unavailable("local queue writer stopped".into()))?
    }

    /// How many idempotency marks the file keeps, in the marks tables or with their jobs in
    /// segments, each id once (an expired one counts until it is swept; one accepted but not applied yet counts
    /// once applied: [`LocalQueue::flush`]). Reads every segment: for tests and diagnostics.
    pub async fn marks(&self) -> Result<u64, QueueError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let by_id = txn.open_table(MARKS_BY_ID).map_err(unavailable)?;
            // A mark taken again after it expired is counted once.
            let mut packed = HashSet::new();
            for segment in txn
                .open_table(SEGMENTS)
                .map_err(unavailable)?
                .iter()
                .map_err(unavailable)?
            {
                let records = segment_records(segment.map_err(unavailable)?.1.value())?;
                packed.extend(records.iter().filter_map(|r| r.mark.map(|(id, _)| id)));
            }
            let mut marks = by_id.len().map_err(unavailable)?;
            for id in packed {
                if by_id.get(id).map_err(unavailable)?.is_none() {
                    marks += 1;
                }
            }
            Ok(marks)
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
                let job = Stored::decode(bytes.value())?;
                out.push((job.message, job.reason.unwrap_or_default()));
            }
            Ok(out)
        })
        .await
    }
}

/// Leases the first visible unpacked job whose page has no earlier job leased or waiting.
fn lease_unpacked(
    txn: &WriteTransaction,
    now_ms: i64,
    visibility_ms: i64,
) -> Result<Option<Lease>, QueueError> {
    let mut jobs = txn.open_table(JOBS).map_err(unavailable)?;
    let mut blocked_groups = HashSet::new();
    let mut found = None;
    for item in jobs.iter().map_err(unavailable)? {
        let (seq, bytes) = item.map_err(unavailable)?;
        let job = Stored::decode(bytes.value())?;
        let group = job.message.group_id();
        if job.visible_at_ms > now_ms || blocked_groups.contains(&group) {
            blocked_groups.insert(group);
            continue;
        }
        found = Some((seq.value(), job));
        break;
    }
    let Some((seq, mut job)) = found else {
        return Ok(None);
    };
    job.receives = job.receives.saturating_add(1);
    job.visible_at_ms = now_ms.saturating_add(visibility_ms);
    jobs.insert(seq, job.encode()?.as_slice())
        .map_err(unavailable)?;
    Ok(Some(Lease {
        seq,
        message: job.message,
        receives: job.receives,
    }))
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
        self.send(Request::Enqueue(PendingEnqueue {
            bytes: stored.encode()?,
            mark,
            done,
        }))?;
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

/// The mark and the job in one journal append of the queue's own: atomic without a second store.
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

#[async_trait::async_trait]
impl crate::QueueDepth for LocalQueue {
    async fn waiting(&self) -> Result<u64, QueueError> {
        self.pending().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
    use understudy_domain::{ClientKey, PageId};

    fn job(page: u64) -> EditJobMessage {
        EditJobMessage {
            job_id: format!("page_updated:{page}:v1"),
            client_key: ClientKey::parse("t1").unwrap(),
            page_id: PageId::parse(page.to_string()).unwrap(),
            event: WebhookEvent::PageUpdated,
            page_version: Some(1),
            user: None,
            policy: RestrictedPagePolicy::Impersonate,
            edit: Edit::from_json(r#"[{"append": "<p>x</p>"}]"#).unwrap(),
            rules: vec!["r".into()],
            accepted_at: 0,
            forge_installation: None,
        }
    }

    /// The applier waits out its commit interval without waking for each batch; a flush or the
    /// end must not wait for it. Each flush or close here comes right after a commit, when the
    /// whole interval is still ahead: waiting it out would add about `APPLY_INTERVAL`. (The
    /// fastest of five counts, so that one slow disk sync on a busy machine does not fail it.)
    #[tokio::test]
    async fn a_flush_and_the_end_do_not_wait_out_the_applier_s_interval() {
        use crate::writer::APPLY_INTERVAL;
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open(dir.path()).unwrap();
        q.enqueue_once(&job(1), 3_600, 100).await.unwrap();
        q.flush().await.unwrap();
        let mut fastest = Duration::MAX;
        for page in 2..=6 {
            q.enqueue_once(&job(page), 3_600, 100).await.unwrap();
            let started = Instant::now();
            q.flush().await.unwrap();
            fastest = fastest.min(started.elapsed());
        }
        assert!(
            fastest < APPLY_INTERVAL / 2,
            "a flush took {fastest:?}: it waited for the interval"
        );
        assert_eq!(q.pending().await.unwrap(), 6);

        // Closing costs the same whether the applier has just committed or has long been idle.
        let close_fastest = |idle: bool| async move {
            let mut fastest = Duration::MAX;
            for page in 1..=5 {
                let dir = tempfile::tempdir().unwrap();
                let q = LocalQueue::open(dir.path()).unwrap();
                q.enqueue_once(&job(page), 3_600, 100).await.unwrap();
                q.flush().await.unwrap();
                q.enqueue_once(&job(page + 100), 3_600, 100).await.unwrap();
                if idle {
                    tokio::time::sleep(APPLY_INTERVAL * 2).await;
                }
                let started = Instant::now();
                tokio::task::spawn_blocking(move || drop(q)).await.unwrap();
                fastest = fastest.min(started.elapsed());
            }
            fastest
        };
        let (busy, idle) = (close_fastest(false).await, close_fastest(true).await);
        assert!(
            busy.saturating_sub(idle) < APPLY_INTERVAL / 2,
            "closing took {busy:?} right after a commit, {idle:?} once idle: it waited for the interval"
        );
    }

    /// Segments and unpacked jobs in the file: (segments, jobs in them, unpacked jobs).
    fn file_counts(q: &LocalQueue) -> (usize, usize, u64) {
        let db = q.db.get().unwrap();
        let read = db.begin_read().unwrap();
        let (mut segments, mut packed) = (0, 0);
        for segment in read.open_table(SEGMENTS).unwrap().iter().unwrap() {
            segments += 1;
            packed += segment_records(segment.unwrap().1.value()).unwrap().len();
        }
        let unpacked = read.open_table(JOBS).unwrap().len().unwrap();
        (segments, packed, unpacked)
    }

    /// With the worker away, jobs stay packed up to the bound; past it the applier unpacks the
    /// oldest segments itself, and every mark is still found, packed or not.
    #[tokio::test]
    async fn past_the_bound_the_applier_unpacks_the_oldest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open_with(dir.path(), JOURNAL_BYTES, 10).unwrap();
        for page in 1..=10 {
            q.enqueue_once(&job(page), 3_600, 100).await.unwrap();
            q.flush().await.unwrap(); // a segment each
        }
        assert_eq!(file_counts(&q), (10, 10, 0));
        for page in 11..=14 {
            q.enqueue_once(&job(page), 3_600, 100).await.unwrap();
            q.flush().await.unwrap();
        }
        // Each commit past the bound unpacked the oldest segment: 10 packed, 4 unpacked.
        assert_eq!(file_counts(&q), (10, 10, 4));
        assert_eq!(q.unpacked_through.load(Ordering::Acquire), 4);
        assert_eq!(q.pending().await.unwrap(), 14);
        for page in [1, 4, 5, 14] {
            assert_eq!(
                q.enqueue_once(&job(page), 3_600, 101).await.unwrap(),
                Enqueued::Duplicate,
                "page {page}"
            );
        }
        // The worker's first lease finds the unpacked ones first, in order.
        assert_eq!(q.lease(0, 60_000).await.unwrap().unwrap().seq, 1);
        assert_eq!(q.marks().await.unwrap(), 14);
    }

    /// A journal with room for a few jobs fills again and again: each time the writer waits for
    /// the applier to catch up, starts a new cycle, and loses nothing, concurrent callers included.
    #[tokio::test]
    async fn a_full_journal_waits_for_the_applier_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let q = LocalQueue::open_with(dir.path(), 4 * 1024, MAX_PACKED_JOBS).unwrap();
        let mut tasks = Vec::new();
        for page in 1..=300 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                q.enqueue_once(&job(page), 3_600, 100).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Enqueued::Queued);
        }
        assert_eq!(q.pending().await.unwrap(), 300);
        drop(q);
        let q = LocalQueue::open_with(dir.path(), 4 * 1024, MAX_PACKED_JOBS).unwrap();
        assert_eq!(q.pending().await.unwrap(), 300);
        assert_eq!(q.marks().await.unwrap(), 300);
        assert_eq!(
            q.enqueue_once(&job(7), 3_600, 101).await.unwrap(),
            Enqueued::Duplicate
        );
    }
}
