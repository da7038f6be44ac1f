//! The edit worker on AWS, end to end but for Lambda itself: jobs go to an SQS FIFO queue on a real
//! SQS-compatible server (moto, started by tests/run.sh) through the project's SQS adapter, are
//! received as the Lambda event source mapping receives them, handed to [`handle_sqs_batch`] as the
//! JSON event Lambda delivers, and the batch response is applied as Lambda applies it (successes
//! deleted, failures left to come back). The edits run against the Confluence simulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use confluence_sim::stub_app::StubApp;
use confluence_sim::{Demo, Endpoint, Fault, Simulator};
use connect_auth::SystemClock;
use serde_json::json;
use test_support::aws::{create_fifo_queue, receive_batch, sqs_client};
use test_support::sim::{sim_client_config, sim_tenant};
use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{
    AuditLog, AuditRecord, ClientKey, EditOutcome, MemoryStore, PageId, TenantStore,
};
use understudy_edits::worker::{EditWorker, handle_sqs_batch};
use understudy_queue::{EditJobMessage, EditQueue, SqsQueue};

/// The worker's `EDIT_MAX_RECEIVES` and the queue's `maxReceiveCount` in these tests (as in
/// template.yaml, the two are the same).
const MAX_RECEIVES: u32 = 2;

/// Attempts per Confluence request in these tests: a fault armed for this many requests fails
/// one job with a passing error.
const ATTEMPTS: u32 = 2;

/// A FIFO edit queue with its dead-letter queue, as template.yaml declares them.
struct Queues {
    client: Client,
    url: String,
    dead_letter_url: String,
}

impl Queues {
    async fn create(test: &str) -> Self {
        let client = sqs_client();
        let suffix = format!("{}-{}", std::process::id(), test.replace('_', "-"));
        let dead_letter_url =
            create_fifo_queue(&client, &format!("edits-dlq-{suffix}.fifo"), &[]).await;
        let dead_letter_arn = client
            .get_queue_attributes()
            .queue_url(&dead_letter_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let redrive =
            json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": MAX_RECEIVES});
        let url = create_fifo_queue(
            &client,
            &format!("edits-{suffix}.fifo"),
            &[
                (QueueAttributeName::VisibilityTimeout, "60".to_owned()),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ],
        )
        .await;
        Self {
            client,
            url,
            dead_letter_url,
        }
    }

    /// The project's SQS adapter on this queue (what the webhook function sends through).
    fn adapter(&self) -> SqsQueue {
        SqsQueue::new(self.client.clone(), &self.url)
    }

    /// Sends a message that is not a job, in its own message group.
    async fn send_raw(&self, body: &str, group: &str) {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(format!("raw-{group}"))
            .send()
            .await
            .unwrap();
    }

    /// One receive, as the event source mapping polls.
    async fn receive(&self, url: &str) -> Vec<Message> {
        receive_batch(&self.client, url).await
    }

    /// The bodies of the messages still in a queue, in queue order (received and made visible
    /// again, so that the look changes nothing but their receive counts).
    async fn held(&self, url: &str) -> Vec<String> {
        let messages = self.receive(url).await;
        for message in &messages {
            self.make_visible(url, message).await;
        }
        messages.into_iter().filter_map(|m| m.body).collect()
    }

    /// How many messages a queue holds, visible or in flight.
    async fn count(&self, url: &str) -> usize {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        [
            QueueAttributeName::ApproximateNumberOfMessages,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| {
            attributes
                .get(name)
                .map_or(0, |n| n.parse::<usize>().unwrap())
        })
        .sum()
    }

    async fn make_visible(&self, url: &str, message: &Message) {
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(message.receipt_handle.clone().unwrap())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }

    /// One Lambda invocation: receives a batch, runs it, deletes what succeeded; the failures
    /// become visible again at once (their visibility timeout running out, without the wait).
    /// Returns the batch response and the received messages.
    async fn deliver(&self, world: &World) -> (SqsBatchResponse, Vec<Message>) {
        let messages = self.receive(&self.url).await;
        assert!(!messages.is_empty(), "nothing to deliver");
        let response = handle_sqs_batch(&world.worker, lambda_event(&messages), None).await;
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        for message in &messages {
            if failed.contains(message.message_id.as_deref().unwrap()) {
                self.make_visible(&self.url, message).await;
            } else {
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(message.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        (response, messages)
    }
}

/// The event Lambda hands the function for these messages, in its JSON form (field names,
/// attributes as strings), read the way the runtime reads it.
fn lambda_event(messages: &[Message]) -> SqsEvent {
    serde_json::from_value(test_support::aws::sqs_event_json(messages)).unwrap()
}

/// The message ids a batch response asks to have delivered again.
fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn message_ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect()
}

fn job_id(message: &Message) -> String {
    EditJobMessage::from_json(message.body.as_deref().unwrap())
        .unwrap()
        .job_id
}

fn receive_count(message: &Message) -> String {
    message.attributes.as_ref().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount]
        .clone()
}

/// A simulated site with the app installed, its tenant in the worker's store, and the worker.
struct World {
    sim: Simulator,
    demo: Demo,
    store: Arc<MemoryStore>,
    worker: EditWorker<MemoryStore, SystemClock>,
    client_key: ClientKey,
    _app: StubApp,
}

impl World {
    async fn new() -> Self {
        let sim = Simulator::start(confluence_sim::SimConfig::default())
            .await
            .unwrap();
        let demo = sim.seed_demo().unwrap();
        let app = StubApp::start("", &["READ", "WRITE", "ACT_AS_USER"])
            .await
            .unwrap();
        let installation = sim.install(&app.base_url()).await.unwrap();
        let store = Arc::new(MemoryStore::new());
        let tenant = sim_tenant(&sim, &installation);
        store.save_install(&tenant, sim.now()).await.unwrap();
        let mut config = sim_client_config(&sim);
        config.retry.max_attempts = ATTEMPTS;
        config.retry.base_delay = Duration::from_millis(1);
        config.retry.max_delay = Duration::from_millis(5);
        let engine =
            understudy_edits::engine(config, store.clone(), &installation.app_key).unwrap();
        let worker = EditWorker::new(store.clone(), engine, SystemClock, MAX_RECEIVES);
        Self {
            client_key: tenant.client_key.clone(),
            sim,
            demo,
            store,
            worker,
            _app: app,
        }
    }

    /// A job appending `fragment` to `page`, as the webhook function queues it.
    fn job(&self, page: &str, id: &str, fragment: &str) -> EditJobMessage {
        EditJobMessage {
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
        }
    }

    fn body(&self, page: &str) -> String {
        self.sim.page(page).unwrap().body
    }

    /// GET requests for this page that reached the site.
    fn page_reads(&self, page: &str) -> usize {
        self.sim.count(&page_get(page))
    }

    /// Fails the next `count` reads of the page with a 503.
    fn fail_reads(&self, page: &str, count: usize) {
        self.sim
            .fail_next(page_get(page), Fault::ServerError(503), count);
    }

    async fn audit(&self, page: &str) -> Vec<AuditRecord> {
        self.store
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
}

fn page_get(page: &str) -> Endpoint {
    Endpoint::Path {
        method: Some("GET".into()),
        contains: format!("/api/v2/pages/{page}"),
    }
}

#[tokio::test]
async fn a_failed_job_holds_back_the_later_jobs_of_its_page_only_and_they_run_in_order_after() {
    let world = World::new().await;
    let queues = Queues::create("order").await;
    let page = world.demo.open_page.clone();
    let other = world
        .sim
        .create_page("DEMO", "Another page", "<p>other</p>", &world.demo.alice)
        .unwrap();
    let adapter = queues.adapter();
    adapter
        .enqueue(&world.job(&page, "first", "<p>first</p>"))
        .await
        .unwrap();
    adapter
        .enqueue(&world.job(&page, "second", "<p>second</p>"))
        .await
        .unwrap();
    adapter
        .enqueue(&world.job(&other, "other", "<p>stamped</p>"))
        .await
        .unwrap();
    let before = world.body(&page);
    // The first job's read fails on both attempts (a passing 503); the second job of the page
    // would succeed if it ran.
    world.fail_reads(&page, ATTEMPTS as usize);

    let (response, batch) = queues.deliver(&world).await;
    assert_eq!(batch.len(), 3, "one batch with the three jobs");
    let of_page: Vec<String> = batch
        .iter()
        .filter(|m| ["first", "second"].contains(&job_id(m).as_str()))
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(of_page.len(), 2);
    assert_eq!(
        failed_ids(&response),
        of_page,
        "the failed job and the later job of its page go back; the other page's job does not"
    );
    assert_eq!(
        world.page_reads(&page),
        ATTEMPTS as usize,
        "only the first job read the page: the second was not run"
    );
    assert_eq!(world.body(&page), before, "the page is untouched");
    assert!(world.body(&other).ends_with("<p>stamped</p>"));
    assert_eq!(
        queues.count(&queues.url).await,
        2,
        "moto still holds the two jobs of the page"
    );

    // Redelivered, the two come back in their order, run in it, and are deleted.
    let (response, batch) = queues.deliver(&world).await;
    let redelivered: Vec<(String, String)> = batch
        .iter()
        .map(|m| (job_id(m), receive_count(m)))
        .collect();
    assert_eq!(
        redelivered,
        [("first".into(), "2".into()), ("second".into(), "2".into())]
    );
    assert!(failed_ids(&response).is_empty(), "{response:?}");
    let body = world.body(&page);
    let first = body
        .find("<p>first</p>")
        .expect("the first edit is on the page");
    let second = body
        .find("<p>second</p>")
        .expect("the second edit is on the page");
    assert!(first < second, "edits of one page ran in order: {body}");
    assert!(
        queues.held(&queues.url).await.is_empty(),
        "the queue is empty"
    );
}

#[tokio::test]
async fn a_message_that_is_not_a_job_fails_every_time_and_is_parked_in_the_dead_letter_queue() {
    let world = World::new().await;
    let queues = Queues::create("unreadable").await;
    let page = world.demo.open_page.clone();
    queues.send_raw("{not a job", "garbage").await;
    queues
        .adapter()
        .enqueue(&world.job(&page, "good", "<p>good</p>"))
        .await
        .unwrap();

    let (response, batch) = queues.deliver(&world).await;
    assert_eq!(batch.len(), 2);
    assert_eq!(
        failed_ids(&response),
        vec![batch[0].message_id.clone().unwrap()],
        "only the unreadable message goes back; the job after it (another group) ran"
    );
    assert!(world.body(&page).ends_with("<p>good</p>"));

    for _ in 1..MAX_RECEIVES {
        let (response, batch) = queues.deliver(&world).await;
        assert_eq!(message_ids(&batch), failed_ids(&response));
    }
    assert!(
        queues.held(&queues.url).await.is_empty(),
        "after maxReceiveCount failures the queue gives it up"
    );
    assert_eq!(
        queues.held(&queues.dead_letter_url).await,
        vec!["{not a job".to_owned()],
        "the unreadable message is in the dead-letter queue"
    );
}

#[tokio::test]
async fn a_job_for_an_uninstalled_or_unknown_tenant_is_dropped_without_calling_confluence() {
    let world = World::new().await;
    let queues = Queues::create("uninstalled").await;
    let page = world.demo.open_page.clone();
    let before = world.body(&page);
    world
        .store
        .mark_uninstalled(&world.client_key, world.sim.now())
        .await
        .unwrap();
    let mut stranger = world.job(&page, "stranger", "<p>stranger</p>");
    stranger.client_key = ClientKey::parse("a-tenant-never-installed").unwrap();
    let adapter = queues.adapter();
    adapter
        .enqueue(&world.job(&page, "uninstalled", "<p>uninstalled</p>"))
        .await
        .unwrap();
    adapter.enqueue(&stranger).await.unwrap();
    let calls = world.sim.count(&Endpoint::AnyConfluence);

    let (response, batch) = queues.deliver(&world).await;
    assert_eq!(batch.len(), 2);
    assert!(
        failed_ids(&response).is_empty(),
        "both are done for good: {response:?}"
    );
    assert_eq!(
        world.sim.count(&Endpoint::AnyConfluence),
        calls,
        "Confluence was not called"
    );
    assert_eq!(world.body(&page), before);
    assert!(world.audit(&page).await.is_empty(), "nothing to audit");
    assert!(queues.held(&queues.url).await.is_empty(), "both deleted");
    assert!(queues.held(&queues.dead_letter_url).await.is_empty());
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_audited_on_its_last_receive_and_dead_lettered() {
    let world = World::new().await;
    let queues = Queues::create("dead-letter").await;
    let page = world.demo.open_page.clone();
    let job = world.job(&page, "doomed", "<p>doomed</p>");
    queues.adapter().enqueue(&job).await.unwrap();
    world.fail_reads(&page, 1000);

    let (response, batch) = queues.deliver(&world).await;
    assert_eq!(receive_count(&batch[0]), "1");
    assert_eq!(failed_ids(&response), message_ids(&batch));
    assert!(
        !world
            .audit(&page)
            .await
            .iter()
            .any(|r| r.reason.contains("dead-letter")),
        "a passing failure is not yet a dead letter"
    );

    let (response, batch) = queues.deliver(&world).await;
    assert_eq!(
        receive_count(&batch[0]),
        MAX_RECEIVES.to_string(),
        "the last receive SQS allows"
    );
    assert_eq!(
        failed_ids(&response),
        message_ids(&batch),
        "still a failure, so that SQS moves it"
    );
    let audit = world.audit(&page).await;
    let dead = audit
        .iter()
        .find(|r| r.reason.contains("dead-letter"))
        .unwrap_or_else(|| panic!("no dead-letter audit record in {audit:?}"));
    assert_eq!(dead.job_id, "doomed");
    assert_eq!(dead.outcome, EditOutcome::Failed);
    assert!(
        dead.reason
            .starts_with(&format!("gave up after {MAX_RECEIVES} attempts")),
        "{}",
        dead.reason
    );

    assert!(queues.held(&queues.url).await.is_empty());
    assert_eq!(
        queues.held(&queues.dead_letter_url).await,
        vec![job.to_json().unwrap()],
        "the job is in the dead-letter queue"
    );
    world.sim.clear_faults();
    assert!(!world.body(&page).contains("doomed"));
}

/// The worker's SQS adapter on the test's queues, recording the waits it sets.
struct Recorded {
    sqs: understudy_edits::worker::SqsRedelivery,
    waits: std::sync::Mutex<Vec<Duration>>,
}

impl Recorded {
    fn on(queues: &Queues) -> Self {
        Self {
            sqs: understudy_edits::worker::SqsRedelivery {
                edits: queues.adapter(),
                dead_letters: SqsQueue::new(queues.client.clone(), &queues.dead_letter_url),
            },
            waits: std::sync::Mutex::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl understudy_edits::worker::Redelivery for Recorded {
    async fn redeliver_after(&self, receipt_handle: &str, after: Duration) -> Result<(), String> {
        self.waits.lock().unwrap().push(after);
        self.sqs.redeliver_after(receipt_handle, after).await
    }

    async fn dead_letter(
        &self,
        body: &str,
        group: &str,
        deduplication_id: &str,
    ) -> Result<(), String> {
        self.sqs.dead_letter(body, group, deduplication_id).await
    }
}

#[tokio::test]
async fn a_429_asking_for_2_seconds_brings_the_job_back_in_2_seconds_not_the_visibility_timeout() {
    let queues = Queues::create("retry_after").await;
    let world = World::new().await;
    let page = world.demo.open_page.clone();
    queues
        .adapter()
        .enqueue(&world.job(&page, "job-429", "<p>later</p>"))
        .await
        .unwrap();
    world.sim.fail_next(
        page_get(&page),
        Fault::TooManyRequests {
            retry_after: Some(2),
        },
        ATTEMPTS as usize,
    );
    let messages = queues.receive(&queues.url).await;
    let redelivery = Recorded::on(&queues);
    let response =
        handle_sqs_batch(&world.worker, lambda_event(&messages), Some(&redelivery)).await;
    assert_eq!(failed_ids(&response), message_ids(&messages));
    assert_eq!(
        *redelivery.waits.lock().unwrap(),
        vec![Duration::from_secs(2)],
        "Confluence's Retry-After"
    );
    // Back after the 2 s asked for, though the queue's visibility timeout is 60 s; and this time
    // it is edited.
    let started = std::time::Instant::now();
    let again = loop {
        let got = queues.receive(&queues.url).await;
        if !got.is_empty() {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not back within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(job_id(&again[0]), "job-429");
    let response = handle_sqs_batch(&world.worker, lambda_event(&again), Some(&redelivery)).await;
    assert!(failed_ids(&response).is_empty());
    assert!(world.body(&page).ends_with("<p>later</p>"));
}

#[tokio::test]
async fn a_job_the_worker_gives_up_on_is_moved_to_the_dead_letter_queue_at_once() {
    let world = World::new().await;
    let queues = Queues::create("moved").await;
    let page = world.demo.open_page.clone();
    let job = world.job(&page, "moved-doomed", "<p>doomed</p>");
    queues.adapter().enqueue(&job).await.unwrap();
    world.fail_reads(&page, 1000);
    let redelivery = Recorded::on(&queues);
    // The first failure: handed back (the worker's own wait set on the message).
    let batch = queues.receive(&queues.url).await;
    let response = handle_sqs_batch(&world.worker, lambda_event(&batch), Some(&redelivery)).await;
    assert_eq!(failed_ids(&response), message_ids(&batch));
    queues.make_visible(&queues.url, &batch[0]).await;
    // The last: audited, moved by the worker, and deleted (no batch failure), so SQS's
    // backstop of receives never has to.
    let batch = queues.receive(&queues.url).await;
    let response = handle_sqs_batch(&world.worker, lambda_event(&batch), Some(&redelivery)).await;
    assert!(failed_ids(&response).is_empty(), "moved, so deleted");
    for message in &batch {
        queues
            .client
            .delete_message()
            .queue_url(&queues.url)
            .receipt_handle(message.receipt_handle.clone().unwrap())
            .send()
            .await
            .unwrap();
    }
    assert!(queues.held(&queues.url).await.is_empty());
    assert_eq!(
        queues.held(&queues.dead_letter_url).await,
        vec![job.to_json().unwrap()]
    );
    assert!(
        world
            .audit(&page)
            .await
            .iter()
            .any(|r| r.job_id == "moved-doomed" && r.reason.contains("dead-letter"))
    );
}
