//! The local AWS-compatible server (moto) that `bash tests/run.sh` starts for the DynamoDB, KMS
//! and SQS tests, and a client for it.

/// The server's URL, from `UNDERSTUDY_TEST_AWS_ENDPOINT`. Panics, saying how to start it, when it
/// is not set.
pub fn aws_endpoint() -> String {
    std::env::var("UNDERSTUDY_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "UNDERSTUDY_TEST_AWS_ENDPOINT is not set. These tests need a DynamoDB/KMS/SQS-compatible \
             server on 127.0.0.1: run the README's test command `bash tests/run.sh`, which starts \
             moto and exports it (e.g. http://127.0.0.1:5000)."
        )
    })
}

/// An SQS client for [`aws_endpoint`].
#[cfg(feature = "sqs")]
pub fn sqs_client() -> aws_sdk_sqs::Client {
    sqs_client_at(&aws_endpoint())
}

/// An SQS client for `endpoint`: static test credentials, us-east-1, so that nothing ever reaches
/// (or resolves) a real AWS host.
#[cfg(feature = "sqs")]
pub fn sqs_client_at(endpoint: &str) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Creates the FIFO queue `name` with `attributes` besides; returns its URL.
#[cfg(feature = "sqs")]
pub async fn create_fifo_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(aws_sdk_sqs::types::QueueAttributeName, String)],
) -> String {
    use aws_sdk_sqs::types::QueueAttributeName;
    let mut request = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true");
    for (attribute, value) in attributes {
        request = request.attributes(attribute.clone(), value);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating queue {name}: {e}"))
        .queue_url
        .unwrap_or_else(|| panic!("queue {name} has no URL"))
}

/// One receive, as Lambda's event source mapping polls: up to 10 messages, with every system
/// attribute.
#[cfg(feature = "sqs")]
pub async fn receive_batch(
    client: &aws_sdk_sqs::Client,
    url: &str,
) -> Vec<aws_sdk_sqs::types::Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap_or_else(|e| panic!("receiving from {url}: {e}"))
        .messages
        .unwrap_or_default()
}

/// The event Lambda's SQS event source mapping hands a function for these received messages, in
/// its JSON form (field names, attributes as strings): deserialize it as
/// `aws_lambda_events::event::sqs::SqsEvent`.
#[cfg(feature = "sqs")]
pub fn sqs_event_json(messages: &[aws_sdk_sqs::types::Message]) -> serde_json::Value {
    use serde_json::{Value, json};
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, Value> = m
                .attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), Value::String(v)))
                .collect();
            json!({
                "messageId": m.message_id,
                "receiptHandle": m.receipt_handle,
                "body": m.body,
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:edits.fifo",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records })
}
