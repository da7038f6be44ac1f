//! What the DynamoDB and KMS adapters share: retry and timeout settings, and the mapping of SDK errors
//! to [`StoreError::Unavailable`].

use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use understudy_domain::StoreError;

/// The SDK's standard retry mode: throttling and transient errors (5xx, timeouts, connection
/// resets) are retried with jittered exponential backoff. Four attempts with a short first backoff
/// fit inside a webhook's or an install callback's time budget; what still fails is reported as
/// unavailable (503) so Confluence or SQS redelivers later.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(2))
}

/// Bounds each attempt and the whole call, so a hung connection becomes a 503 well before the Lambda
/// timeout instead of a timeout of the whole function.
pub(crate) fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}

/// Maps an SDK error (after the SDK's own retries) to [`StoreError::Unavailable`], naming the
/// operation and the service's error code. Requests never carry a plaintext secret, so neither can
/// the service's error; the full error goes to the log for operators.
pub(crate) fn unavailable<E, R>(operation: &'static str, err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let what = match err {
        SdkError::ConstructionFailure(_) => "request could not be built",
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(_) => "could not connect",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ServiceError(_) => "refused",
        _ => "failed",
    };
    tracing::warn!(operation, error = %DisplayErrorContext(err), "AWS call failed");
    match err.code() {
        Some(code) => StoreError::unavailable(format!("{operation} {what}: {code}")),
        None => StoreError::unavailable(format!("{operation} {what}")),
    }
}
