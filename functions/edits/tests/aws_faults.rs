//! The edit worker on the AWS path when DynamoDB and KMS misbehave: its store (DynamoDB, secrets
//! under KMS) at a fault proxy in front of the local AWS-compatible server (moto, started by
//! `bash tests/run.sh`), its jobs in an SQS FIFO queue on moto, received and handed to
//! [`handle_sqs_batch`] as Lambda's event source mapping does (successes deleted, failures left
//! to come back), the edits made on the Confluence simulator. What is stored is read at moto
//! directly, past the proxy.
//!
//! The SDK retries throttling itself (4 attempts for DynamoDB and KMS in this app): a fault meant
//! to reach the worker is armed for every attempt; fewer are absorbed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, QueueAttributeName};
use confluence_sim::stub_app::StubApp;
use confluence_sim::{Demo, Endpoint, Simulator};
use connect_auth::SystemClock;
use serde_json::json;
use test_support::aws::{aws_endpoint, create_fifo_queue, receive_batch, sqs_client_at};
use test_support::fault_proxy::{AwsError, Fault, FaultProxy, Match};
use test_support::sim::{sim_client_config, sim_tenant};
use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{AuditLog, AuditRecord, ClientKey, EditOutcome, PageId, TenantStore};
use understudy_edits::worker::{EditWorker, handle_sqs_batch};
use understudy_queue::{EditJobMessage, EditQueue, SqsQueue};
use understudy_store::DynamoStore;
use understudy_store::testing::local_dynamo_store;

/// Failed attempts before a job is dead-lettered: more than these tests cause.
const MAX_RECEIVES: u32 = 5;

/// DynamoDB and KMS attempts per call (the store's standard retry).
const ATTEMPTS: usize = 4;

/// A simulated site with the app installed; the worker over a DynamoDB store at the proxy; the
/// edit queue on moto.
struct World {
    sim: Simulator,
    demo: Demo,
    proxy: FaultProxy,
    worker: EditWorker<DynamoStore, SystemClock>,
    observer: DynamoStore,
    client_key: ClientKey,
    sqs: Client,
    url: String,
    _app: StubApp,
}

impl World {
    async fn new(test: &str) -> Self {
        let sim = Simulator::start(confluence_sim::SimConfig::default())
            .await
            .unwrap();
        let demo = sim.seed_demo().unwrap();
        let app = StubApp::start("", &["READ", "WRITE", "ACT_AS_USER"])
            .await
            .unwrap();
        let installation = sim.install(&app.base_url()).await.unwrap();
        let moto = aws_endpoint();
        let proxy = FaultProxy::start(&moto).await;
        let (observer, _, key, table) = local_dynamo_store(&moto, None, None).await;
        let tenant = sim_tenant(&sim, &installation);
        observer.save_install(&tenant, sim.now()).await.unwrap();
        // The worker's store: a cold instance at the proxy (its first tenant read opens the secret
        // with KMS Decrypt).
        let (store, _, _, _) =
            local_dynamo_store(proxy.url(), Some(key), Some(table.clone())).await;
        let store = Arc::new(store);
        let mut config = sim_client_config(&sim);
        config.retry.max_attempts = 2;
        config.retry.base_delay = Duration::from_millis(1);
        config.retry.max_delay = Duration::from_millis(5);
        let engine =
            understudy_edits::engine(config, store.clone(), &installation.app_key).unwrap();
        let worker = EditWorker::new(store, engine, SystemClock, MAX_RECEIVES);
        let sqs = sqs_client_at(&moto);
        let name = format!("edits-faults-{}-{test}.fifo", std::process::id());
        let url = create_fifo_queue(
            &sqs,
            &name,
            &[(QueueAttributeName::VisibilityTimeout, "60".to_owned())],
        )
        .await;
        Self {
            client_key: tenant.client_key.clone(),
            sim,
            demo,
            proxy,
            worker,
            observer,
            sqs,
            url,
            _app: app,
        }
    }

    /// Queues a job appending `fragment` to `page`, as the webhook function queues it.
    async fn enqueue(&self, page: &str, id: &str, fragment: &str) {
        let job = EditJobMessage {
            job_id: id.to_owned(),
            client_key: self.client_key.clone(),
            page_id: PageId::parse(page).unwrap(),
            event: WebhookEvent::PageUpdated,
            page_version: Some(1),
            user: None,
            policy: RestrictedPagePolicy::Skip,
            edit: Edit::from_json(&json!([{ "append": fragment }]).to_string()).unwrap(),
            rules: vec!["stamp".into()],
            accepted_at: self.sim.now(),
            forge_installation: None,
        };
        SqsQueue::new(self.sqs.clone(), &self.url)
            .enqueue(&job)
            .await
            .unwrap();
    }

    fn page(&self, page: &str) -> (String, u64) {
        let page = self.sim.page(page).unwrap();
        (page.body, page.version)
    }

    /// PUTs of this page that reached the site: its edits.
    fn page_writes(&self, page: &str) -> usize {
        self.sim.count(&Endpoint::Path {
            method: Some("PUT".into()),
            contains: format!("/api/v2/pages/{page}"),
        })
    }

    /// The page's audit records, read at moto.
    async fn audit(&self, page: &str) -> Vec<AuditRecord> {
        self.observer
            .list_for_page(
                &self.client_key,
                &PageId::parse(page).unwrap(),
                None,
                100,
                self.sim.now(),
            )
            .await
            .unwrap()
            .records
    }

    /// How many messages the queue holds, visible or in flight.
    async fn depth(&self) -> usize {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
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

    async fn make_visible(&self, message: &Message) {
        self.sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(message.receipt_handle.clone().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }

    /// One Lambda invocation: receives a batch, runs it, and applies the batch response as
    /// Lambda does. Before a message is deleted, its job's edit is on the page and audited.
    /// Failures become visible at once (their visibility timeout running out, without the wait).
    async fn deliver(&self, fragments: &[(&str, &str, &str)]) -> (SqsBatchResponse, usize) {
        let messages = receive_batch(&self.sqs, &self.url).await;
        let response = handle_sqs_batch(&self.worker, lambda_event(&messages), None).await;
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for message in &messages {
            if failed.contains(message.message_id.as_deref().unwrap()) {
                self.make_visible(message).await;
                continue;
            }
            let job = EditJobMessage::from_json(message.body.as_deref().unwrap()).unwrap();
            let (page, _, fragment) = fragments
                .iter()
                .find(|(_, id, _)| *id == job.job_id)
                .unwrap();
            assert!(
                self.page(page).0.ends_with(fragment),
                "{} deleted before its edit",
                job.job_id
            );
            assert!(
                self.audit(page)
                    .await
                    .iter()
                    .any(|r| r.job_id == job.job_id),
                "{} deleted before its audit record was written",
                job.job_id
            );
            self.sqs
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(message.receipt_handle.clone().unwrap())
                .send()
                .await
                .unwrap();
        }
        (response, messages.len())
    }
}

/// The event Lambda hands the function for these messages, in its JSON form.
fn lambda_event(messages: &[Message]) -> SqsEvent {
    serde_json::from_value(test_support::aws::sqs_event_json(messages)).unwrap()
}

fn audit_put() -> Match {
    Match::dynamodb("PutItem").body_contains("AUDIT#")
}

#[tokio::test]
async fn under_throttling_every_job_is_edited_once_and_deleted_only_once_done_and_audited() {
    let w = World::new("throttled").await;
    let pages = [
        w.demo.open_page.clone(),
        w.sim
            .create_page("DEMO", "Second page", "<p>two</p>", &w.demo.alice)
            .unwrap(),
        w.sim
            .create_page("DEMO", "Third page", "<p>three</p>", &w.demo.alice)
            .unwrap(),
    ];
    let jobs = [
        (pages[0].as_str(), "job-1", "<p>one</p>"),
        (pages[1].as_str(), "job-2", "<p>two stamped</p>"),
        (pages[2].as_str(), "job-3", "<p>three stamped</p>"),
    ];
    let before: Vec<u64> = pages.iter().map(|p| w.page(p).1).collect();
    for (page, id, fragment) in jobs {
        w.enqueue(page, id, fragment).await;
    }
    // The first tenant read is throttled on every attempt (the job fails before any edit); the
    // first audit write too (the edit is made, its record is not); a second audit write, a KMS
    // Decrypt and a failure count are throttled fewer times than the SDK tries.
    w.proxy.arm(
        Match::dynamodb("GetItem"),
        Fault::Error(AwsError::dynamodb_throttling()),
        ATTEMPTS,
    );
    w.proxy.arm(
        audit_put(),
        Fault::Error(AwsError::dynamodb_throttling()),
        ATTEMPTS + 1,
    );
    w.proxy.arm(
        Match::kms("Decrypt"),
        Fault::Error(AwsError::kms_throttling()),
        2,
    );
    w.proxy.arm(
        Match::dynamodb("UpdateItem"),
        Fault::Error(AwsError::dynamodb_throughput_exceeded()),
        1,
    );

    let (response, received) = w.deliver(&jobs).await;
    assert_eq!(received, 3, "one batch with the three jobs");
    assert_eq!(
        response.batch_item_failures.len(),
        2,
        "the job whose tenant could not be read and the job whose audit could not be written \
         come back: {response:?}"
    );
    let mut rounds = 1;
    while w.depth().await > 0 {
        rounds += 1;
        assert!(rounds <= 4, "the jobs did not finish");
        w.deliver(&jobs).await;
    }
    assert_eq!(w.proxy.unfired(), 0, "every armed fault was used");
    for ((page, id, fragment), version) in jobs.iter().zip(before) {
        let (body, now) = w.page(page);
        assert_eq!(
            body.matches(fragment).count(),
            1,
            "{id}: edited once: {body}"
        );
        assert_eq!(now, version + 1, "{id}: one new version");
        assert_eq!(w.page_writes(page), 1, "{id}: one page write");
        let audit = w.audit(page).await;
        assert!(
            audit.iter().any(|r| r.job_id == *id
                && matches!(r.outcome, EditOutcome::Edited | EditOutcome::Unchanged)),
            "{id}: audited: {audit:?}"
        );
    }
}

#[tokio::test]
async fn a_worker_killed_after_the_page_write_leaves_the_job_to_sqs_and_the_page_is_edited_once() {
    let w = World::new("killed").await;
    let page = w.demo.open_page.clone();
    let jobs = [(page.as_str(), "job-killed", "<p>once</p>")];
    let (_, before) = w.page(&page);
    w.enqueue(&page, "job-killed", "<p>once</p>").await;
    // The audit write after the edit takes 2 s to reach DynamoDB. Lambda's timeout ends the
    // invocation while it is on its way: after the page write, before the audit record and any
    // deletion.
    w.proxy
        .arm(audit_put(), Fault::Delay(Duration::from_secs(2)), 1);
    let messages = receive_batch(&w.sqs, &w.url).await;
    assert_eq!(messages.len(), 1);
    let invocation = handle_sqs_batch(&w.worker, lambda_event(&messages), None);
    let audit_on_its_way = async {
        while w.proxy.count(&audit_put()) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        response = invocation => panic!("the invocation was to be cut short: {response:?}"),
        () = audit_on_its_way => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => panic!("no audit write"),
    }
    assert_eq!(w.page_writes(&page), 1, "the edit reached the page");
    assert_eq!(w.page(&page).1, before + 1);
    assert_eq!(w.depth().await, 1, "the job is still SQS's");

    // Its visibility timeout runs out; SQS delivers it again.
    w.make_visible(&messages[0]).await;
    let (response, received) = w.deliver(&jobs).await;
    assert_eq!(received, 1);
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(w.depth().await, 0, "done and deleted");
    let (body, version) = w.page(&page);
    assert_eq!(
        w.page_writes(&page),
        1,
        "the redelivery found nothing to change"
    );
    assert_eq!(version, before + 1, "one new version");
    assert_eq!(body.matches("<p>once</p>").count(), 1, "{body}");

    // The killed invocation's audit write was on its way: it lands too. The page's trail has the
    // edit, and the redelivery that found nothing to change.
    let started = Instant::now();
    let outcomes = loop {
        let mut outcomes: Vec<EditOutcome> =
            w.audit(&page).await.iter().map(|r| r.outcome).collect();
        if outcomes.len() >= 2 || started.elapsed() > Duration::from_secs(5) {
            outcomes.sort_by_key(|o| format!("{o:?}"));
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(outcomes, [EditOutcome::Edited, EditOutcome::Unchanged]);
}
