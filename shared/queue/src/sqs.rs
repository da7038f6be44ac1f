//! SQS FIFO.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};

use crate::{EditJobMessage, EditQueue, QueueError};

/// The FIFO edit queue named by `EDIT_QUEUE_URL`.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    /// A queue at `queue_url` through `client`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl EditQueue for SqsQueue {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(job.to_json()?)
            .message_group_id(job.group_id())
            .message_deduplication_id(job.deduplication_id())
            .send()
            .await
            .map_err(|err| {
                tracing::warn!(error = %DisplayErrorContext(&err), "SQS SendMessage failed");
                QueueError::Unavailable(err.code().unwrap_or("SendMessage failed").to_owned())
            })?;
        Ok(())
    }
}
