//! The webhook function on the AWS path: the calls a warm webhook makes, and what happens when
//! DynamoDB, SQS and KMS misbehave. Built as its Lambda
//! binary builds it (marks in DynamoDB, jobs in SQS FIFO, secrets under KMS), but with every AWS
//! client pointed at a fault proxy in front of the local AWS-compatible server (moto, started by
//! `bash tests/run.sh`). The proxy answers with the errors AWS sends, delays, drops, resets, or
//! lets a request land and loses its answer. What is stored and queued is read from moto
//! directly, past the proxy.
//!
//! The SDK retries throttling, 5xx and broken connections itself (4 attempts for DynamoDB and
//! KMS, 3 for SQS in this app): a fault meant to reach the function is armed for every attempt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use connect_auth::FixedClock;
use serde_json::{Value, json};
use test_support::aws::{aws_endpoint, create_fifo_queue, sqs_client_at};
use test_support::fault_proxy::{AwsError, Fault, FaultProxy, Match};
use test_support::lambda::api_gateway_request;
use test_support::{ConnectToken, NOW, app_env, tenant};
use understudy_domain::TenantStore;
use understudy_queue::{EditJobMessage, MarkedQueue, SqsQueue};
use understudy_store::DynamoStore;
use understudy_store::testing::{local_dynamo_store, local_sdk_config};
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};
use understudy_webhooks::{Rules, Webhooks};

const RULES: &str = r#"{"restricted_pages": "grant", "rules": [
    {"name": "footer", "events": ["page_updated"], "spaces": ["DOCS"], "title": "^Release",
     "edit": [{"append": "<p>Reviewed</p>"}]}]}"#;

const TENANT: &str = "tenant-a";
const SECRET: &str = "secret-a";
const PATH: &str = "/webhooks/page_updated";
/// The job the test event makes, and the sort key of its idempotency mark.
const JOB_ID: &str = "page_updated:42:v3";
const MARK_SK: &str = "MARK#webhook:page_updated:42:v3";

/// DynamoDB and KMS attempts per call (the store's standard retry), and SQS's (the queue's).
const DYNAMO_ATTEMPTS: usize = 4;
const SQS_ATTEMPTS: usize = 3;

type App = Webhooks<DynamoStore, MarkedQueue<DynamoStore, SqsQueue>, FixedClock>;

/// The webhook function at the proxy, and moto's own view of its table and queue.
struct World {
    proxy: FaultProxy,
    app: App,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl World {
    async fn new(test: &str) -> Self {
        let moto = aws_endpoint();
        let proxy = FaultProxy::start(&moto).await;
        // The table, the KMS key and the installed tenant, made at moto directly.
        let (setup, dynamo, key, table) = local_dynamo_store(&moto, None, None).await;
        let base_url = format!("https://{TENANT}.atlassian.net/wiki");
        setup
            .save_install(&tenant(TENANT, SECRET, &base_url, NOW), NOW)
            .await
            .unwrap();
        // The function's store, a cold instance at the proxy: its first read of the tenant
        // opens the shared secret with KMS Decrypt.
        let (store, _, _, _) =
            local_dynamo_store(proxy.url(), Some(key), Some(table.clone())).await;
        let store = Arc::new(store);
        let sqs = sqs_client_at(&moto);
        let name = format!("webhooks-{}-{test}.fifo", std::process::id());
        let queue_url = create_fifo_queue(&sqs, &name, &[]).await;
        // As functions/webhooks/src/main.rs builds the intake, at the proxy.
        let sdk = local_sdk_config(proxy.url()).await;
        let queue = SqsQueue::from_sdk((&sdk).into(), queue_url.clone());
        let intake = Arc::new(MarkedQueue::new(store.clone(), Arc::new(queue)));
        let app = Webhooks::new(
            AppConfig::from_lookup(app_env).unwrap(),
            Rules::parse(RULES).unwrap(),
            store,
            intake,
            FixedClock(NOW),
        );
        Self {
            proxy,
            app,
            dynamo,
            table,
            sqs,
            queue_url,
        }
    }

    /// Confluence delivers the page event (page 42, version 3, a matching title).
    async fn deliver(&self) -> ApiResponse {
        self.deliver_page(3, "Release 1.0").await
    }

    /// Confluence delivers an update of page 42 to `version`, titled `title`.
    async fn deliver_page(&self, version: u64, title: &str) -> ApiResponse {
        let body = json!({"userAccountId": "557058:alice", "accountType": "customer",
            "updateTrigger": "edit_page", "suppressNotifications": false,
            "page": {"idAsString": "42", "id": 42, "title": title, "spaceKey": "DOCS",
                     "version": version, "contentType": "page", "creatorAccountId": "557058:alice",
                     "lastModifierAccountId": "557058:alice"},
            "timestamp": 1631606188983_i64});
        let token = ConnectToken::for_post(TENANT, PATH, NOW)
            .user("557058:alice")
            .claim("context", json!({}))
            .sign(SECRET);
        let auth = format!("JWT {token}");
        self.app
            .handle(to_api_request(api_gateway_request(
                "POST",
                PATH,
                "",
                Some(&auth),
                &body.to_string(),
            )))
            .await
    }

    /// Whether the event's idempotency mark is in the table (read at moto, consistently).
    async fn marked(&self) -> bool {
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(TENANT.into()))
            .key("sk", AttributeValue::S(MARK_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .is_some()
    }

    /// The job ids of the messages in the queue (received and made visible again).
    async fn queued(&self) -> Vec<String> {
        let messages = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        for message in &messages {
            self.sqs
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(message.receipt_handle.clone().unwrap())
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
        }
        messages
            .iter()
            .map(|m| {
                EditJobMessage::from_json(m.body.as_deref().unwrap())
                    .unwrap()
                    .job_id
            })
            .collect()
    }

    /// How many messages the queue holds, visible or not.
    async fn depth(&self) -> usize {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        attributes
            .values()
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    }

    /// The retry after a failure, with the fault gone: queued exactly once, and a further
    /// delivery is a duplicate.
    async fn retry_is_queued_once(&self) {
        assert_eq!(self.proxy.unfired(), 0, "every armed fault was used");
        self.proxy.clear();
        let r = self.deliver().await;
        assert_eq!(r.status(), 204, "the retry: {}", text(&r));
        assert!(self.marked().await);
        assert_eq!(self.queued().await, [JOB_ID], "one job");
        let r = self.deliver().await;
        assert_eq!(r.status(), 204, "a redelivery: {}", text(&r));
        assert_eq!(self.queued().await, [JOB_ID], "still one job");
    }
}

/// What a webhook costs on AWS, counted at the proxy. Cold (a new instance): the tenant (GetItem,
/// its secret opened with KMS Decrypt), its settings and the deployment's (GetItem each), then the
/// event's conditional mark (PutItem) and its job (SendMessage). Warm, the tenant cache holds the
/// tenant, its secret and settings, and the deployment's rules are read once a minute: an event
/// that is queued makes the mark and the send only, and one that matches no rule makes no call.
#[tokio::test]
async fn a_warm_webhook_makes_one_conditional_put_and_one_send() {
    let world = World::new("calls").await;
    let r = world.deliver_page(3, "Release 1.0").await;
    assert_eq!(r.status(), 204, "{}", text(&r));
    // (The table is made through the proxy when the function's store is built: not the event's.)
    let cold: Vec<String> = world
        .proxy
        .seen()
        .into_iter()
        .map(|s| s.target)
        .filter(|t| t != "DynamoDB_20120810.CreateTable")
        .collect();
    assert_eq!(
        cold,
        [
            "DynamoDB_20120810.GetItem", // the tenant
            "TrentService.Decrypt",      // its data key, once per instance
            "DynamoDB_20120810.GetItem", // its settings
            "DynamoDB_20120810.GetItem", // the deployment's rules
            "DynamoDB_20120810.PutItem", // the event's mark, conditional
            "AmazonSQS.SendMessage",     // the job
        ]
    );

    for version in 4..24 {
        let before = world.proxy.seen().len();
        let r = world.deliver_page(version, "Release 1.0").await;
        assert_eq!(r.status(), 204, "{}", text(&r));
        let calls: Vec<String> = world.proxy.seen()[before..]
            .iter()
            .map(|s| s.target.clone())
            .collect();
        assert_eq!(
            calls,
            ["DynamoDB_20120810.PutItem", "AmazonSQS.SendMessage"],
            "version {version}"
        );
        let before = world.proxy.seen().len();
        let r = world.deliver_page(version, "Draft").await;
        assert_eq!(r.status(), 204, "{}", text(&r));
        assert_eq!(world.proxy.seen().len(), before, "no rule matches: no call");
    }
    assert_eq!(world.depth().await, 21);
}

fn text(r: &ApiResponse) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

fn error_of(r: &ApiResponse) -> String {
    serde_json::from_slice::<Value>(r.body()).unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn mark_put() -> Match {
    Match::dynamodb("PutItem").body_contains(MARK_SK)
}

#[tokio::test]
async fn a_mark_dynamodb_will_not_write_is_a_503_that_leaves_nothing_and_the_retry_is_queued_once()
{
    let w = World::new("mark").await;
    // Every attempt of the mark's conditional PutItem is refused: twice for the table's
    // throughput, twice with a 500.
    w.proxy.arm(
        mark_put(),
        Fault::Error(AwsError::dynamodb_throughput_exceeded()),
        2,
    );
    w.proxy.arm(
        mark_put(),
        Fault::Error(AwsError::dynamodb_internal_server_error()),
        DYNAMO_ATTEMPTS - 2,
    );
    let r = w.deliver().await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert!(!error_of(&r).is_empty(), "a 503 that says why");
    assert_eq!(w.proxy.faulted(&mark_put()), DYNAMO_ATTEMPTS);
    assert_eq!(
        w.proxy.count(&Match::sqs("SendMessage")),
        0,
        "nothing was sent"
    );
    assert!(!w.marked().await, "no mark");
    assert_eq!(w.depth().await, 0, "no job");
    w.retry_is_queued_once().await;
}

#[tokio::test]
async fn a_mark_throttled_or_reset_fewer_times_than_the_sdk_tries_is_queued_once() {
    let w = World::new("absorbed").await;
    w.proxy
        .arm(mark_put(), Fault::Error(AwsError::dynamodb_throttling()), 1);
    w.proxy.arm(mark_put(), Fault::Reset, 1);
    w.proxy.arm(mark_put(), Fault::Drop, 1);
    let r = w.deliver().await;
    assert_eq!(r.status(), 204, "{}", text(&r));
    assert_eq!(
        w.proxy.count(&mark_put()),
        DYNAMO_ATTEMPTS,
        "the SDK's retries"
    );
    assert_eq!(w.queued().await, [JOB_ID]);
    assert_eq!(w.proxy.unfired(), 0);
}

/// The worst case of two writes to two services: the send fails, and so does the release of the
/// mark (the same as a function that dies between its mark and its send). The retry finds a mark
/// set within SQS FIFO's de-duplication interval and sends the job again: queued once.
#[tokio::test]
async fn a_mark_left_without_its_job_is_queued_once_by_the_retry() {
    let w = World::new("orphan").await;
    let send = Match::sqs("SendMessage");
    w.proxy.arm(
        send.clone(),
        Fault::Error(AwsError::sqs_service_unavailable()),
        SQS_ATTEMPTS,
    );
    let release = Match::dynamodb("DeleteItem").body_contains(MARK_SK);
    w.proxy.arm(
        release.clone(),
        Fault::Error(AwsError::dynamodb_internal_server_error()),
        DYNAMO_ATTEMPTS,
    );
    let r = w.deliver().await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(w.proxy.faulted(&release), DYNAMO_ATTEMPTS);
    assert!(w.marked().await, "the mark is left");
    assert_eq!(w.depth().await, 0, "no job");
    w.retry_is_queued_once().await;
}

#[tokio::test]
async fn a_send_sqs_refuses_is_a_503_that_releases_the_mark_and_the_retry_is_queued_once() {
    let w = World::new("send").await;
    let send = Match::sqs("SendMessage");
    w.proxy.arm(
        send.clone(),
        Fault::Error(AwsError::sqs_service_unavailable()),
        2,
    );
    w.proxy.arm(
        send.clone(),
        Fault::Error(AwsError::sqs_request_throttled()),
        SQS_ATTEMPTS - 2,
    );
    let r = w.deliver().await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(w.proxy.faulted(&send), SQS_ATTEMPTS);
    assert_eq!(
        w.proxy
            .count(&Match::dynamodb("DeleteItem").body_contains(MARK_SK)),
        1,
        "the mark was released"
    );
    assert!(!w.marked().await, "no mark");
    assert_eq!(w.depth().await, 0, "no job");
    w.retry_is_queued_once().await;
}

#[tokio::test]
async fn a_send_that_times_out_but_lands_late_is_a_503_and_the_retry_is_not_a_second_job() {
    let w = World::new("late-send").await;
    let send = Match::sqs("SendMessage");
    // The first attempt reaches SQS after the client's 2 s attempt timeout; the second hangs
    // until the intake's 2.5 s limit gives up, and never lands.
    w.proxy
        .arm(send.clone(), Fault::Delay(Duration::from_millis(2200)), 1);
    w.proxy
        .arm(send.clone(), Fault::Hold(Duration::from_secs(3)), 1);
    let started = Instant::now();
    let r = w.deliver().await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered in time: {:?}",
        started.elapsed()
    );
    assert!(!w.marked().await, "the mark was released");
    // The late send landed: SQS holds the job although the answer was 503.
    let landed = Instant::now();
    while w.depth().await == 0 {
        assert!(landed.elapsed() < Duration::from_secs(3), "never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The retry marks and sends again; SQS FIFO drops the send as a duplicate of the late one
    // (same de-duplication id within 5 minutes): one job.
    w.retry_is_queued_once().await;
}

#[tokio::test]
async fn a_mark_that_landed_but_whose_answer_was_lost_is_not_taken_for_a_duplicate() {
    let w = World::new("lost-mark").await;
    // DynamoDB writes the mark, the answer never comes back; the SDK sends the same
    // conditional PutItem again, which now finds the mark.
    w.proxy.arm(mark_put(), Fault::LoseAnswer, 1);
    let r = w.deliver().await;
    assert_eq!(r.status(), 204, "{}", text(&r));
    assert_eq!(w.proxy.count(&mark_put()), 2, "the SDK's retry");
    assert_eq!(
        w.queued().await,
        [JOB_ID],
        "the event is queued, not dropped as a duplicate of itself"
    );
}

#[tokio::test]
async fn a_cold_function_whose_kms_decrypt_is_throttled_is_a_503_and_the_retry_is_queued_once() {
    let w = World::new("kms").await;
    let decrypt = Match::kms("Decrypt");
    w.proxy.arm(
        decrypt.clone(),
        Fault::Error(AwsError::kms_throttling()),
        DYNAMO_ATTEMPTS,
    );
    let r = w.deliver().await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(w.proxy.faulted(&decrypt), DYNAMO_ATTEMPTS);
    assert_eq!(w.proxy.count(&mark_put()), 0, "nothing was marked");
    assert!(!w.marked().await);
    assert_eq!(w.depth().await, 0);
    w.retry_is_queued_once().await;
}
