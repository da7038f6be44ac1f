//! The intake over marks and a queue, when the queue hangs: the answer comes within the time
//! limit, the mark is released, and the sender's retry is queued rather than taken for a
//! duplicate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use test_support::queue::{RecordingQueue, edit_job};
use understudy_domain::MemoryStore;
use understudy_queue::{EditJobMessage, EditQueue, Enqueued, JobIntake, MarkedQueue, QueueError};

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
