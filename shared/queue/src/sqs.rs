//! SQS FIFO.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};

use aws_sdk_sqs::types::QueueAttributeName;

use crate::{EditJobMessage, EditQueue, QueueDepth, QueueError};

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

#[async_trait]
impl QueueDepth for SqsQueue {
    /// `ApproximateNumberOfMessages` plus `ApproximateNumberOfMessagesNotVisible` (in flight).
    async fn waiting(&self) -> Result<u64, QueueError> {
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|err| {
                tracing::warn!(error = %DisplayErrorContext(&err), "SQS GetQueueAttributes failed");
                QueueError::Unavailable(
                    err.code().unwrap_or("GetQueueAttributes failed").to_owned(),
                )
            })?;
        let attributes = answer.attributes();
        let count = |name: QueueAttributeName| -> u64 {
            attributes
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(
            count(QueueAttributeName::ApproximateNumberOfMessages).saturating_add(count(
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )),
        )
    }
}
