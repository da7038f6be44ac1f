//! Accepting an event at most once: the idempotency mark and the queued job as one step.
//!
//! The webhook function must neither lose an accepted event nor queue one event twice. Both halves
//! are behind one port, [`JobIntake`], so each deployment can make them atomic in its own way:
//!
//! - on AWS, [`MarkedQueue`]: a conditional write of the mark in DynamoDB, then SQS; if SQS refuses
//!   the job, the mark is released, so a redelivery is not taken for a duplicate; and a
//!   redelivery that finds a mark younger than SQS FIFO's de-duplication interval sends the job
//!   again, which SQS drops if the first send landed (so a mark left without its job, by a process
//!   that died between the two or a release that failed, does not lose the event);
//! - locally, [`crate::LocalQueue`] keeps the marks in its own file and writes mark and job in one
//!   transaction, group-committed with the other events waiting at that moment (one fsync for all).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use understudy_domain::{IdempotencyKey, IdempotencyMarks, Marked, StoreError};

use crate::{EditJobMessage, EditQueue, QueueError};

/// What [`JobIntake::enqueue_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The job is queued durably.
    Queued,
    /// A job with the same tenant and id was accepted before, within the mark's lifetime. (Within
    /// the queue's de-duplication window the job is sent again, and the queue keeps it only if the
    /// first send never landed: see [`MarkedQueue`].)
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
///
/// The mark and the send are two writes to two services, so a mark can be left without its job:
/// the process dies between them, or the send fails and so does the release. A delivery that finds
/// a mark set less than [`MarkedQueue::RESEND_MARGIN`] short of the queue's
/// [`EditQueue::deduplication_window`] ago therefore sends the job again: the queue drops it if
/// the first send landed and keeps it if not. Forge retries an event up to four times about a
/// minute apart, so its retries fall in that window; an older mark is trusted as it is.
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

    /// Kept back from the queue's de-duplication window before a job is sent again for a mark
    /// found: the first send may have landed up to [`MarkedQueue::DEFAULT_TIME_LIMIT`] after its
    /// mark, and two instances' clocks may differ a little.
    pub const RESEND_MARGIN: Duration = Duration::from_secs(60);

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

impl<M: IdempotencyMarks + ?Sized, Q: EditQueue + ?Sized> MarkedQueue<M, Q> {
    /// Whether a job whose mark was set at `marked_at` may be sent again at `now`: the queue
    /// would drop it if the first send landed.
    fn resend_is_deduplicated(&self, marked_at: i64, now: i64) -> bool {
        let Some(window) = self.queue.deduplication_window() else {
            return false;
        };
        let safe = window.saturating_sub(Self::RESEND_MARGIN).as_secs();
        now < marked_at.saturating_add(i64::try_from(safe).unwrap_or(i64::MAX))
    }

    /// Releases the mark of a job that was not queued, so the event is not taken for a duplicate
    /// when it comes again, and gives back `failure`.
    async fn released(
        &self,
        job: &EditJobMessage,
        mark: &IdempotencyKey,
        failure: IntakeError,
    ) -> IntakeError {
        let release = self.marks.clear_mark(&job.client_key, mark);
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
        failure
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
        let deadline = tokio::time::Instant::now() + self.time_limit;
        let out_of_time = || {
            IntakeError::Queue(QueueError::Unavailable(format!(
                "the mark and the send took longer than {} ms",
                self.time_limit.as_millis()
            )))
        };
        let marking = self
            .marks
            .mark_once(&job.client_key, &mark, ttl_seconds, now);
        let marked = match tokio::time::timeout_at(deadline, marking).await {
            Ok(Ok(marked)) => marked,
            // A mark write that failed or timed out may still have landed: released too.
            Ok(Err(err)) => return Err(self.released(job, &mark, err.into()).await),
            Err(_) => return Err(self.released(job, &mark, out_of_time()).await),
        };
        match marked {
            Marked::First => match tokio::time::timeout_at(deadline, self.queue.enqueue(job)).await
            {
                Ok(Ok(())) => Ok(Enqueued::Queued),
                Ok(Err(err)) => Err(self.released(job, &mark, err.into()).await),
                // Given up half-way: the job may not be sent.
                Err(_) => Err(self.released(job, &mark, out_of_time()).await),
            },
            Marked::Already { marked_at } if self.resend_is_deduplicated(marked_at, now) => {
                // The mark is the first delivery's (which may still be sending): kept whatever
                // this send does.
                match tokio::time::timeout_at(deadline, self.queue.enqueue(job)).await {
                    Ok(Ok(())) => {
                        tracing::info!(
                            client_key = job.client_key.as_str(),
                            job_id = job.job_id,
                            marked_at,
                            "a delivery again within the queue's de-duplication window: the job \
                             was sent again, and the queue dropped it if the first send landed"
                        );
                        Ok(Enqueued::Duplicate)
                    }
                    Ok(Err(err)) => Err(err.into()),
                    Err(_) => Err(out_of_time()),
                }
            }
            Marked::Already { .. } => Ok(Enqueued::Duplicate),
        }
    }
}
