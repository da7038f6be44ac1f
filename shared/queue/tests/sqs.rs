//! The SQS FIFO adapter against a real SQS-compatible server (moto, started by tests/run.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{ClientKey, PageId};
use understudy_queue::{EditJobMessage, EditQueue, QueueError, SqsQueue};

fn endpoint() -> String {
    std::env::var("UNDERSTUDY_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!("UNDERSTUDY_TEST_AWS_ENDPOINT is not set: run the README's test command (bash tests/run.sh), which starts a local SQS-compatible server")
    })
}

async fn client(endpoint: &str) -> Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    Client::from_conf(config)
}

fn job(page: &str, id: &str) -> EditJobMessage {
    EditJobMessage {
        job_id: id.to_owned(),
        client_key: ClientKey::parse("tenant-sqs").unwrap(),
        page_id: PageId::parse(page).unwrap(),
        event: WebhookEvent::PageUpdated,
        page_version: Some(3),
        user: None,
        policy: RestrictedPagePolicy::Grant,
        edit: Edit::from_json(r#"[{"append": "<p>x</p>"}]"#).unwrap(),
        rules: vec!["r".into()],
        accepted_at: 1,
    }
}

#[tokio::test]
async fn jobs_reach_the_fifo_queue_once_grouped_by_tenant_and_page() {
    let client = client(&endpoint()).await;
    let name = format!("understudy-test-{}.fifo", std::process::id());
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue = SqsQueue::new(client.clone(), &url);
    let first = job("42", "page_updated:42:v3");
    queue.enqueue(&first).await.unwrap();
    queue.enqueue(&first).await.unwrap(); // the same job again: FIFO de-duplication drops it
    queue
        .enqueue(&job("42", "page_updated:42:v4"))
        .await
        .unwrap();

    let received = client
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(&format!("http://127.0.0.1:{port}")).await;
    let queue = SqsQueue::new(
        client,
        format!("http://127.0.0.1:{port}/123456789012/q.fifo"),
    );
    let err = queue.enqueue(&job("1", "x")).await.unwrap_err();
    assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
}
