//! The SQS FIFO adapter against a real SQS-compatible server (moto, started by tests/run.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_sdk_sqs::types::MessageSystemAttributeName;
use test_support::aws::{create_fifo_queue, receive_batch, sqs_client, sqs_client_at};
use test_support::closed_port;
use test_support::queue::edit_job;
use understudy_core::RestrictedPagePolicy;
use understudy_queue::{EditJobMessage, EditQueue, QueueError, SqsQueue};

/// A job of the SQS tests' tenant, with values other than the defaults so that all of them are
/// seen to travel.
fn job(page: &str, id: &str) -> EditJobMessage {
    EditJobMessage {
        page_version: Some(3),
        policy: RestrictedPagePolicy::Grant,
        accepted_at: 1,
        forge_installation: None,
        ..edit_job("tenant-sqs", page, id)
    }
}

#[tokio::test]
async fn jobs_reach_the_fifo_queue_once_grouped_by_tenant_and_page() {
    let client = sqs_client();
    let name = format!("understudy-test-{}.fifo", std::process::id());
    let url = create_fifo_queue(&client, &name, &[]).await;
    let queue = SqsQueue::new(client.clone(), &url);
    let first = job("42", "page_updated:42:v3");
    queue.enqueue(&first).await.unwrap();
    queue.enqueue(&first).await.unwrap(); // the same job again: FIFO de-duplication drops it
    queue
        .enqueue(&job("42", "page_updated:42:v4"))
        .await
        .unwrap();

    let received = receive_batch(&client, &url).await;
    assert_eq!(received.len(), 2, "one message per job");
    let got = EditJobMessage::from_json(received[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(got, first);
    let attributes = received[0].attributes.as_ref().unwrap();
    assert_eq!(
        attributes[&MessageSystemAttributeName::MessageGroupId],
        first.group_id()
    );
    assert!(
        !received[0]
            .body
            .as_deref()
            .unwrap()
            .contains("sharedSecret")
    );
    client.delete_queue().queue_url(&url).send().await.unwrap();
}

#[tokio::test]
async fn a_queue_that_cannot_be_reached_is_unavailable() {
    let port = closed_port();
    let client = sqs_client_at(&format!("http://127.0.0.1:{port}"));
    let queue = SqsQueue::new(
        client,
        format!("http://127.0.0.1:{port}/123456789012/q.fifo"),
    );
    let err = queue.enqueue(&job("1", "x")).await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
}

/// A server that accepts connections and never answers: without timeouts the send would hang
/// until the Lambda timeout, with the event's mark written and no job sent.
#[tokio::test]
async fn a_queue_that_never_answers_is_unavailable_within_seconds() {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(format!("http://{addr}"))
        .to_owned();
    let queue = SqsQueue::new(
        understudy_queue::sqs_client(config),
        format!("http://{addr}/123456789012/q.fifo"),
    );
    let started = std::time::Instant::now();
    let err = queue.enqueue(&job("1", "x")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
    assert!(
        took < std::time::Duration::from_secs(6),
        "gave up after {took:?}"
    );
    held.abort();
}
