//! The edit-job queue between the webhook function and the edit worker. Features `sqs` and `local`
//! (both on by default) choose which queues are built.
//!
//! - [`EditJobMessage`]: what a webhook decided to do, with everything the worker needs except
//!   secrets (the worker loads the tenant itself).
//! - [`EditQueue`]: the port jobs are sent through.
//! - [`JobIntake`]: the port the webhook function accepts events through: the job and its
//!   idempotency mark as one step. [`MarkedQueue`] composes a mark store and a queue (AWS);
//!   [`LocalQueue`] keeps both in one transaction.
//! - [`SqsQueue`]: SQS FIFO on AWS. The message group is tenant + page, so edits of one page run in
//!   order while other pages and tenants run in parallel; the de-duplication id is the job id.
//! - [`LocalQueue`]: a durable queue in one redb file, for the local app: jobs survive a restart,
//!   a leased job that is not finished becomes visible again, and a job that keeps failing moves to
//!   a dead-letter table, as on SQS. It also keeps the webhook's idempotency marks.

#[cfg(feature = "local")]
mod file;
mod intake;
mod job;
#[cfg(feature = "local")]
mod journal;
#[cfg(feature = "local")]
mod local;
#[cfg(feature = "sqs")]
mod sqs;
#[cfg(feature = "local")]
mod tables;
#[cfg(feature = "local")]
mod writer;

pub use intake::{Enqueued, IntakeError, JobIntake, MarkedQueue};
pub use job::{EditJobMessage, QueueError};
#[cfg(feature = "local")]
pub use local::{Lease, LocalQueue};
#[cfg(feature = "sqs")]
pub use sqs::{SqsQueue, sqs_client};

use std::time::Duration;

use async_trait::async_trait;

/// How many edit jobs wait, for the admin page's queue health. The queue is shared by every
/// tenant, so this is the whole queue's depth (on SQS, approximate, as SQS reports it).
#[async_trait]
pub trait QueueDepth: Send + Sync {
    /// Jobs waiting or running.
    async fn waiting(&self) -> Result<u64, QueueError>;
}

/// Where accepted edit jobs go.
#[async_trait]
pub trait EditQueue: Send + Sync {
    /// Queues the job durably, or fails without having queued it.
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError>;

    /// How long after a job was queued the queue itself drops the same job sent again (by its
    /// [`EditJobMessage::deduplication_id`]); `None` when it does not.
    fn deduplication_window(&self) -> Option<Duration> {
        None
    }
}
