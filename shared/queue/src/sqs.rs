//! SQS FIFO.

use std::time::Duration;

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

    /// A queue at `queue_url` with a client of the deployment's SDK settings (`config`, e.g.
    /// `aws_sdk_sqs::config::Builder::from(&sdk_config)`), bounded in time ([`sqs_client`]).
    pub fn from_sdk(config: aws_sdk_sqs::config::Builder, queue_url: impl Into<String>) -> Self {
        Self::new(sqs_client(config), queue_url)
    }
}

impl SqsQueue {
    /// Sends `body` as it is (a message received from another queue, e.g. moved to the
    /// dead-letter queue), in message group `group`, de-duplicated by `deduplication_id`.
    pub async fn send_body(
        &self,
        body: &str,
        group: &str,
        deduplication_id: &str,
    ) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(deduplication_id)
            .send()
            .await
            .map_err(|err| {
                tracing::warn!(error = %DisplayErrorContext(&err), "SQS SendMessage failed");
                QueueError::Unavailable(err.code().unwrap_or("SendMessage failed").to_owned())
            })?;
        Ok(())
    }

    /// The message received with `receipt_handle` becomes visible again after `seconds` (at most
    /// SQS's 12 hours).
    pub async fn change_visibility(
        &self,
        receipt_handle: &str,
        seconds: u64,
    ) -> Result<(), QueueError> {
        let seconds = i32::try_from(seconds.min(12 * 60 * 60)).unwrap_or(12 * 60 * 60);
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|err| {
                tracing::warn!(error = %DisplayErrorContext(&err), "SQS ChangeMessageVisibility failed");
                QueueError::Unavailable(format!(
                    "SQS ChangeMessageVisibility: {}",
                    err.code().unwrap_or("no answer")
                ))
            })?;
        Ok(())
    }
}

/// An SQS client whose every call ends in time: 1 s to connect, 2 s an attempt, 4 s in all
/// (three attempts, the SDK's standard retry). SQS answers in tens of milliseconds; a call that
/// takes seconds is an outage, and the webhook function must still answer its sender (Forge gives
/// up after 5 s, and the function's own timeout is 10 s) with a 503 that lets it retry, rather than
/// be killed half-way with a mark written and no job sent.
pub fn sqs_client(config: aws_sdk_sqs::config::Builder) -> Client {
    use aws_sdk_sqs::config::retry::RetryConfig;
    use aws_sdk_sqs::config::timeout::TimeoutConfig;
    let config = config
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(50))
                .with_max_backoff(Duration::from_millis(500)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(4))
                .build(),
        )
        .build();
    Client::from_conf(config)
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

    /// SQS FIFO's de-duplication interval: a message whose de-duplication id was sent in the last
    /// 5 minutes is accepted and not delivered
    /// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-exactly-once-processing.html>).
    fn deduplication_window(&self) -> Option<Duration> {
        Some(Duration::from_secs(5 * 60))
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
