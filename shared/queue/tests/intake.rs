//! The intake over marks and a queue: when the queue hangs, the answer comes within the time
//! limit, the mark is released, and the sender's retry is queued rather than taken for a
//! duplicate; and a mark left without its job (a process that died between the two) is healed by
//! a redelivery within the queue's de-duplication window.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use test_support::queue::{RecordingQueue, edit_job};
use understudy_domain::{IdempotencyMarks, Marked, MemoryStore};
use understudy_queue::{
    EditJobMessage, EditQueue, Enqueued, IntakeError, JobIntake, MarkedQueue, QueueError,
};

/// A queue that never answers while `hanging`, and records jobs otherwise.
#[derive(Default)]
struct Hanging {
    hanging: AtomicBool,
    inner: RecordingQueue,
}

#[async_trait]
impl EditQueue for Hanging {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        if self.hanging.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.enqueue(job).await
    }
}

#[tokio::test]
async fn a_queue_that_hangs_costs_the_time_limit_and_leaves_no_mark() {
    let queue = Arc::new(Hanging::default());
    queue.hanging.store(true, Ordering::SeqCst);
    let intake = MarkedQueue::new(Arc::new(MemoryStore::new()), queue.clone())
        .with_time_limit(Duration::from_millis(200));
    let job = edit_job("tenant-hang", "42", "page_updated:42:v2");
    let started = Instant::now();
    let err = intake.enqueue_once(&job, 3600, 1_000).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("longer than 200 ms"), "{err}");
    // The retry, once the queue answers, is queued: no mark was left behind.
    queue.hanging.store(false, Ordering::SeqCst);
    assert_eq!(
        intake.enqueue_once(&job, 3600, 1_001).await.unwrap(),
        Enqueued::Queued
    );
    assert_eq!(queue.inner.jobs().len(), 1);
    assert_eq!(
        intake.enqueue_once(&job, 3600, 1_002).await.unwrap(),
        Enqueued::Duplicate
    );
}

/// A queue that drops a job whose de-duplication id it has taken before, as SQS FIFO does within
/// its 5 minutes (every test here stays within them), and can be down.
#[derive(Default)]
struct Fifo {
    seen: Mutex<HashSet<String>>,
    inner: RecordingQueue,
}

#[async_trait]
impl EditQueue for Fifo {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        if self.seen.lock().unwrap().contains(&job.deduplication_id()) {
            return Ok(());
        }
        self.inner.enqueue(job).await?;
        self.seen.lock().unwrap().insert(job.deduplication_id());
        Ok(())
    }

    fn deduplication_window(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

const T: i64 = 1_700_000_000;

/// The state a webhook function leaves when it dies right after its mark, before its send: a
/// mark set at `T` for `job`, and no job in `queue`.
struct Orphan<Q> {
    store: Arc<MemoryStore>,
    queue: Arc<Q>,
    intake: MarkedQueue<MemoryStore, Q>,
    job: EditJobMessage,
}

impl<Q: EditQueue + Default> Orphan<Q> {
    async fn new(tenant: &str) -> Self {
        let store = Arc::new(MemoryStore::new());
        let queue = Arc::new(Q::default());
        let intake = MarkedQueue::new(store.clone(), queue.clone());
        let job = edit_job(tenant, "42", "page_updated:42:v2");
        let mark = job.mark_key().unwrap();
        let marked = store.mark_once(&job.client_key, &mark, 3600, T).await;
        assert_eq!(marked.unwrap(), Marked::First);
        Self {
            store,
            queue,
            intake,
            job,
        }
    }

    /// The event delivered again at `at`.
    async fn redeliver(&self, at: i64) -> Result<Enqueued, IntakeError> {
        self.intake.enqueue_once(&self.job, 3600, at).await
    }
}

#[tokio::test]
async fn a_mark_left_without_its_job_is_healed_by_a_redelivery_within_the_window() {
    let o = Orphan::<Fifo>::new("tenant-heal").await;
    // Forge's first retry, a minute later: sent again, and this time it lands.
    assert_eq!(o.redeliver(T + 60).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(o.queue.inner.jobs(), vec![o.job.clone()]);
    // Its next retry is sent again too, and the queue drops it: still one job.
    assert_eq!(o.redeliver(T + 120).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(o.queue.inner.jobs().len(), 1);
}

#[tokio::test]
async fn a_delivery_again_of_a_queued_job_stays_one_job() {
    let queue = Arc::new(Fifo::default());
    let intake = MarkedQueue::new(Arc::new(MemoryStore::new()), queue.clone());
    let job = edit_job("tenant-twice", "42", "page_updated:42:v2");
    assert_eq!(
        intake.enqueue_once(&job, 3600, T).await.unwrap(),
        Enqueued::Queued
    );
    for later in [0, 1, 239] {
        assert_eq!(
            intake.enqueue_once(&job, 3600, T + later).await.unwrap(),
            Enqueued::Duplicate
        );
    }
    assert_eq!(queue.inner.jobs().len(), 1);
}

#[tokio::test]
async fn a_mark_near_the_end_of_the_window_is_trusted_as_it_is() {
    let o = Orphan::<Fifo>::new("tenant-late").await;
    // The queue would no longer drop a resend of a job sent at T (its 300 s less the 60 s kept
    // back for a late first send and clocks): nothing is sent.
    let edge = T + 300 - 60;
    assert_eq!(o.redeliver(edge).await.unwrap(), Enqueued::Duplicate);
    assert!(o.queue.inner.jobs().is_empty());
    // A second earlier it is sent.
    assert_eq!(o.redeliver(edge - 1).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(o.queue.inner.jobs().len(), 1);
}

#[tokio::test]
async fn a_queue_that_does_not_deduplicate_never_gets_a_job_again() {
    let o = Orphan::<RecordingQueue>::new("tenant-plain").await;
    assert_eq!(o.redeliver(T + 1).await.unwrap(), Enqueued::Duplicate);
    assert!(o.queue.jobs().is_empty());
}

#[tokio::test]
async fn a_failed_resend_keeps_the_first_deliverys_mark() {
    let o = Orphan::<Fifo>::new("tenant-down").await;
    o.queue.inner.set_down(true);
    let err = o.redeliver(T + 60).await.unwrap_err();
    assert!(err.to_string().contains("down"), "{err}");
    // The mark is still the one set at T (a release would let a later delivery in as new, after
    // the window, when the queue no longer drops it).
    let mark = o.job.mark_key().unwrap();
    let again = o
        .store
        .mark_once(&o.job.client_key, &mark, 3600, T + 61)
        .await;
    assert_eq!(again.unwrap(), Marked::Already { marked_at: T });
    // The next retry, with the queue back, heals it.
    o.queue.inner.set_down(false);
    assert_eq!(o.redeliver(T + 120).await.unwrap(), Enqueued::Duplicate);
    assert_eq!(o.queue.inner.jobs().len(), 1);
}
