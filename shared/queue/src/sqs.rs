//! SQS FIFO.

use async_trait::async_trait;
use aws_config::SdkConfig;
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

    /// The queue of `EDIT_QUEUE_URL`, with the function's shared SDK configuration.
    pub fn from_env(sdk: &SdkConfig) -> Result<Self, QueueError> {
        let queue_url = std::env::var("EDIT_QUEUE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                QueueError::Unavailable("environment variable EDIT_QUEUE_URL is not set".into())
            })?;
        Ok(Self::new(Client::new(sdk), queue_url))
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
