//! Accepting an event at most once: the idempotency mark and the queued job as one step.
//!
//! The webhook function must neither lose an accepted event nor queue one event twice. Both halves
//! are behind one port, [`JobIntake`], so each deployment can make them atomic in its own way:
//!
//! - on AWS, [`MarkedQueue`]: a conditional write of the mark in DynamoDB, then SQS; if SQS refuses
//!   the job, the mark is released, so a redelivery is not taken for a duplicate;
//! - locally, [`crate::LocalQueue`] keeps the marks in its own file and writes mark and job in one
//!   transaction, group-committed with the other events waiting at that moment (one fsync for all).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use understudy_domain::{IdempotencyKey, IdempotencyMarks, StoreError};

use crate::{EditJobMessage, EditQueue, QueueError};

/// What [`JobIntake::enqueue_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job is queued durably.
    Queued,
    /// A job with the same tenant and id was queued within the mark's lifetime: nothing was done.
    Duplicate,
}

/// Why a job could not be accepted. Either way nothing was kept: the event may be delivered again.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The idempotency marks could not be read or written.
    #[error(transparent)]
    Marks(#[from] StoreError),
    /// The queue refused the job.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Where accepted events become edit jobs, at most once per (tenant, job id).
#[async_trait]
pub trait JobIntake: Send + Sync {
    /// Queues `job` unless the same tenant's job with the same id was queued in the last
    /// `ttl_seconds` (`now` in unix seconds). Of two concurrent calls for one job exactly one gets
    /// [`Enqueued::Queued`]. On error neither the job nor its mark is kept.
    async fn enqueue_once(
        &self,
        job: &EditJobMessage,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Enqueued, IntakeError>;
}

impl EditJobMessage {
    /// The idempotency mark that guards this job (the job id, in the webhook's namespace).
    pub fn mark_key(&self) -> Result<IdempotencyKey, QueueError> {
        IdempotencyKey::parse(format!("webhook:{}", self.job_id))
            .map_err(|e| QueueError::Malformed(e.to_string()))
    }
}

/// The intake over two separate services: marks in a store, jobs in a queue (AWS: DynamoDB + SQS).
///
/// Bounded in time ([`MarkedQueue::DEFAULT_TIME_LIMIT`]): a mark and a send that have not both
/// finished by then are given up, and the mark released, so the sender's retry is accepted
/// rather than taken for a duplicate. A send that landed after all is caught on the retry by SQS
/// FIFO's de-duplication (the same de-duplication id within 5 minutes).
#[derive(Debug)]
pub struct MarkedQueue<M: ?Sized, Q: ?Sized> {
    marks: Arc<M>,
    queue: Arc<Q>,
    time_limit: Duration,
}

impl<M: ?Sized, Q: ?Sized> MarkedQueue<M, Q> {
    /// How long a mark and a send may take together: well within the 5 s Forge waits for an
    /// event's answer, with the webhook function's own reads before it.
    pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_millis(2500);

    /// How long releasing a mark after a failure may take.
    const RELEASE_LIMIT: Duration = Duration::from_millis(500);

    /// Marks in `marks`, jobs in `queue`.
    pub fn new(marks: Arc<M>, queue: Arc<Q>) -> Self {
        Self {
            marks,
            queue,
            time_limit: Self::DEFAULT_TIME_LIMIT,
        }
    }

    /// Another time limit for a mark and a send together.
    #[must_use]
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }
}

#[async_trait]
impl<M, Q> JobIntake for MarkedQueue<M, Q>
where
    M: IdempotencyMarks + ?Sized,
    Q: EditQueue + ?Sized,
{
    async fn enqueue_once(
        &self,
        job: &EditJobMessage,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Enqueued, IntakeError> {
        let mark = job.mark_key()?;
        let attempt = async {
            if !self
                .marks
                .mark_once(&job.client_key, &mark, ttl_seconds, now)
                .await?
            {
                return Ok(Enqueued::Duplicate);
            }
            self.queue.enqueue(job).await?;
            Ok(Enqueued::Queued)
        };
        let failure = match tokio::time::timeout(self.time_limit, attempt).await {
            Ok(Ok(enqueued)) => return Ok(enqueued),
            // A mark write that failed may still have landed (a timeout): released too.
            Ok(Err(err)) => err,
            // Given up half-way: the mark may be written (even a write that timed out may have
            // landed), the job may not be sent.
            Err(_) => IntakeError::Queue(QueueError::Unavailable(format!(
                "the mark and the send took longer than {} ms",
                self.time_limit.as_millis()
            ))),
        };
        // Release the mark so the event is not taken for a duplicate when it comes again.
        let release = self.marks.clear_mark(&job.client_key, &mark);
        match tokio::time::timeout(Self::RELEASE_LIMIT, release).await {
            Ok(Ok(())) => {}
            Ok(Err(clear)) => {
                tracing::error!(client_key = job.client_key.as_str(), job_id = job.job_id,
                    error = %clear, "could not release the mark of an event that was not queued");
            }
            Err(_) => {
                tracing::error!(
                    client_key = job.client_key.as_str(),
                    job_id = job.job_id,
                    "could not release the mark of an event that was not queued: timed out"
                );
            }
        }
        Err(failure)
    }
}
