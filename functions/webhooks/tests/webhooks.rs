//! The webhook function driven with real API Gateway HTTP API (v2) events and Connect-signed
//! tokens, over an in-memory store and a recording queue.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::Duration;

use connect_auth::FixedClock;
use serde_json::{Value, json};
use test_support::lambda::api_gateway_request;
use test_support::queue::RecordingQueue;
use test_support::{ConnectToken, NOW, app_env, tenant};
use understudy_core::{RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{
    ClientKey, ForgeInstallation, ForgeInstallations, InstallOutcome, InstallationId, MemoryStore,
    SettingsStore, StoreError, Tenant, TenantSettings, TenantState, TenantStore,
};
use understudy_queue::{EditJobMessage, MarkedQueue};
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig, TenantCache};
use understudy_webhooks::{Rules, Webhooks};

const RULES: &str = r#"{"restricted_pages": "grant", "rules": [
    {"name": "footer", "events": ["page_created", "page_updated"], "spaces": ["DOCS"], "title": "^Release",
     "edit": [{"append": "<p>Reviewed</p>"}]},
    {"name": "perms", "events": ["content_permissions_updated"], "edit": [{"prepend": "<p>Restricted</p>"}]}]}"#;

struct Fixture {
    app: Webhooks<MemoryStore, MarkedQueue<MemoryStore, RecordingQueue>, FixedClock>,
    store: Arc<MemoryStore>,
    queue: Arc<RecordingQueue>,
    /// The function's cache of verified tenants and settings.
    tenants: Arc<TenantCache>,
}

impl Fixture {
    /// The tenant was just changed in the store, as the same process's lifecycle or admin handler
    /// does it: they drop it from the shared cache. (A change by another process is seen within
    /// the cache's expiry: `shared/web/tests/tenant_cache.rs`.)
    async fn changed(&self, client_key: &str) {
        self.tenants
            .forget(&ClientKey::parse(client_key).unwrap())
            .await;
    }
}

async fn install(store: &MemoryStore, client_key: &str, secret: &str) {
    let base_url = format!("https://{client_key}.atlassian.net/wiki");
    store
        .save_install(&tenant(client_key, secret, &base_url, NOW), NOW)
        .await
        .unwrap();
}

async fn fixture() -> Fixture {
    let config = AppConfig::from_lookup(app_env).unwrap();
    let store = Arc::new(MemoryStore::new());
    install(&store, "tenant-a", "secret-a").await;
    install(&store, "tenant-b", "secret-b").await;
    let queue = Arc::new(RecordingQueue::default());
    let tenants = Arc::new(TenantCache::default());
    let app = Webhooks::new(
        config,
        Rules::parse(RULES).unwrap(),
        store.clone(),
        Arc::new(MarkedQueue::new(store.clone(), queue.clone())),
        FixedClock(NOW),
    )
    .with_tenant_cache(tenants.clone());
    Fixture {
        app,
        store,
        queue,
        tenants,
    }
}

fn page_event(page_id: u64, title: &str, space: &str, version: u64) -> Value {
    json!({"userAccountId": "557058:alice", "accountType": "customer", "updateTrigger": "edit_page",
           "suppressNotifications": false,
           "page": {"idAsString": page_id.to_string(), "id": page_id, "title": title, "spaceKey": space,
                    "spaceId": 1149861892, "contentType": "page", "version": version,
                    "creatorAccountId": "557058:alice", "lastModifierAccountId": "557058:alice",
                    "creationDate": 1631605030794_i64, "modificationDate": 1631606188966_i64,
                    "self": format!("https://tenant-a.atlassian.net/wiki/spaces/{space}/pages/{page_id}")},
           "timestamp": 1631606188983_i64})
}

fn token(iss: &str, secret: &str, path: &str, qsh: Option<&str>) -> String {
    let token = match qsh {
        Some(qsh) => ConnectToken::with_qsh(iss, qsh, NOW),
        None => ConnectToken::for_post(iss, path, NOW),
    };
    token
        .user("557058:alice")
        .claim("context", json!({}))
        .sign(secret)
}

fn event(path: &str, authorization: Option<String>, body: &str) -> lambda_http::Request {
    api_gateway_request("POST", path, "", authorization.as_deref(), body)
}

async fn deliver(f: &Fixture, path: &str, iss: &str, secret: &str, body: &Value) -> ApiResponse {
    let auth = format!("JWT {}", token(iss, secret, path, None));
    f.app
        .handle(to_api_request(event(path, Some(auth), &body.to_string())))
        .await
}

fn jobs(f: &Fixture) -> Vec<EditJobMessage> {
    f.queue.jobs()
}

fn error_of(r: &ApiResponse) -> String {
    serde_json::from_slice::<Value>(r.body()).unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_matching_event_becomes_one_queued_job_with_everything_the_worker_needs() {
    let f = fixture().await;
    let r = deliver(
        &f,
        "/webhooks/page_updated",
        "tenant-a",
        "secret-a",
        &page_event(42, "Release 1.0", "DOCS", 3),
    )
    .await;
    assert_eq!(r.status(), 204);
    let jobs = jobs(&f);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.client_key.as_str(), "tenant-a");
    assert_eq!(job.page_id.as_str(), "42");
    assert_eq!(job.event, WebhookEvent::PageUpdated);
    assert_eq!(job.page_version, Some(3));
    assert_eq!(job.user.as_ref().unwrap().as_str(), "557058:alice");
    assert_eq!(job.policy, RestrictedPagePolicy::Grant);
    assert_eq!(job.rules, ["footer"]);
    assert_eq!(job.job_id, "page_updated:42:v3");
}

#[tokio::test]
async fn duplicate_deliveries_make_one_job_even_when_concurrent() {
    let f = Arc::new(fixture().await);
    let body = page_event(42, "Release 1.0", "DOCS", 3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (f, body) = (f.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            deliver(&f, "/webhooks/page_updated", "tenant-a", "secret-a", &body)
                .await
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 204);
    }
    assert_eq!(jobs(&f).len(), 1);
    // A new version is a new job.
    deliver(
        &f,
        "/webhooks/page_updated",
        "tenant-a",
        "secret-a",
        &page_event(42, "Release 1.0", "DOCS", 4),
    )
    .await;
    assert_eq!(jobs(&f).len(), 2);
}

#[tokio::test]
async fn events_no_rule_matches_are_acknowledged_and_not_queued() {
    let f = fixture().await;
    for body in [
        page_event(42, "Notes", "DOCS", 1),
        page_event(42, "Release 2", "HR", 1),
    ] {
        assert_eq!(
            deliver(&f, "/webhooks/page_created", "tenant-a", "secret-a", &body)
                .await
                .status(),
            204
        );
    }
    assert!(jobs(&f).is_empty());
}

#[tokio::test]
async fn restriction_changes_are_read_from_the_content_object() {
    let f = fixture().await;
    let body = json!({"userAccountId": "557058:bob", "content": {"id": 77, "title": "Secret plans"},
                      "timestamp": 1_700_000_000_000_i64});
    let r = deliver(
        &f,
        "/webhooks/content_permissions_updated",
        "tenant-a",
        "secret-a",
        &body,
    )
    .await;
    assert_eq!(r.status(), 204);
    let job = &jobs(&f)[0];
    assert_eq!(
        (job.page_id.as_str(), job.rules[0].as_str()),
        ("77", "perms")
    );
    assert_eq!(job.job_id, "content_permissions_updated:77:t1700000000000");
}

#[tokio::test]
async fn tokens_that_do_not_verify_and_tenants_that_left_get_401() {
    let f = fixture().await;
    let body = page_event(42, "Release 1.0", "DOCS", 3);
    let path = "/webhooks/page_updated";
    let cases = [
        (
            format!("JWT {}", token("tenant-a", "wrong", path, None)),
            connect_auth::UNVERIFIABLE_MESSAGE,
        ),
        (
            format!("JWT {}", token("tenant-z", "secret-a", path, None)),
            connect_auth::UNVERIFIABLE_MESSAGE,
        ),
        (
            format!(
                "JWT {}",
                token("tenant-a", "secret-a", path, Some("context-qsh"))
            ),
            "context",
        ),
        (
            format!(
                "JWT {}",
                token("tenant-a", "secret-a", "/webhooks/page_created", None)
            ),
            "qsh",
        ),
        // Tenant B's secret cannot speak for tenant A: no cross-tenant access.
        (
            format!("JWT {}", token("tenant-a", "secret-b", path, None)),
            connect_auth::UNVERIFIABLE_MESSAGE,
        ),
    ];
    for (auth, reason) in cases {
        let r = f
            .app
            .handle(to_api_request(event(path, Some(auth), &body.to_string())))
            .await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "JWT realm=\"understudy\"");
        assert!(error_of(&r).contains(reason), "{reason}: {}", error_of(&r));
    }
    let r = f
        .app
        .handle(to_api_request(event(path, None, &body.to_string())))
        .await;
    assert_eq!(r.status(), 401);

    f.store
        .mark_uninstalled(&ClientKey::parse("tenant-a").unwrap(), NOW)
        .await
        .unwrap();
    f.changed("tenant-a").await;
    let r = deliver(&f, path, "tenant-a", "secret-a", &body).await;
    assert_eq!(r.status(), 401, "a stale webhook after uninstall");
    assert!(jobs(&f).is_empty());
}

#[tokio::test]
async fn a_disabled_tenant_is_verified_acknowledged_and_ignored() {
    let f = fixture().await;
    f.store
        .set_state(
            &ClientKey::parse("tenant-a").unwrap(),
            TenantState::Disabled,
            NOW,
        )
        .await
        .unwrap();
    let body = page_event(42, "Release 1.0", "DOCS", 3);
    assert_eq!(
        deliver(&f, "/webhooks/page_updated", "tenant-a", "secret-a", &body)
            .await
            .status(),
        204
    );
    assert_eq!(
        deliver(&f, "/webhooks/page_updated", "tenant-a", "wrong", &body)
            .await
            .status(),
        401
    );
    assert!(jobs(&f).is_empty());
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_400_and_413() {
    let f = fixture().await;
    let path = "/webhooks/page_updated";
    for body in [
        json!({}),
        json!({"page": {"title": "no id"}}),
        json!({"page": {"id": "abc"}}),
    ] {
        let r = deliver(&f, path, "tenant-a", "secret-a", &body).await;
        assert_eq!(r.status(), 400, "{body}");
    }
    let auth = format!("JWT {}", token("tenant-a", "secret-a", path, None));
    let r = f
        .app
        .handle(to_api_request(event(path, Some(auth.clone()), "not json")))
        .await;
    assert_eq!(r.status(), 400);
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(300 * 1024));
    let r = f
        .app
        .handle(to_api_request(event(path, Some(auth), &big)))
        .await;
    assert_eq!(r.status(), 413);
    assert!(jobs(&f).is_empty());
}

#[tokio::test]
async fn when_the_queue_is_down_the_answer_is_503_and_a_redelivery_is_not_a_duplicate() {
    let f = fixture().await;
    let body = page_event(42, "Release 1.0", "DOCS", 3);
    f.queue.set_down(true);
    let r = deliver(&f, "/webhooks/page_updated", "tenant-a", "secret-a", &body).await;
    assert_eq!(r.status(), 503);
    assert!(jobs(&f).is_empty());
    f.queue.set_down(false);
    assert_eq!(
        deliver(&f, "/webhooks/page_updated", "tenant-a", "secret-a", &body)
            .await
            .status(),
        204
    );
    assert_eq!(jobs(&f).len(), 1);
}

#[tokio::test]
async fn a_tenants_own_rules_replace_the_default_and_invalid_ones_apply_nothing() {
    let f = fixture().await;
    let a = ClientKey::parse("tenant-a").unwrap();
    let own = json!({"restricted_pages": "skip", "rules": [
        {"name": "everything", "events": ["page_created"], "edit": [{"append": "<p>A</p>"}]}]});
    f.store
        .put_settings(&a, &TenantSettings { document: own }, NOW)
        .await
        .unwrap();
    f.changed("tenant-a").await;
    deliver(
        &f,
        "/webhooks/page_created",
        "tenant-a",
        "secret-a",
        &page_event(1, "Anything", "HR", 1),
    )
    .await;
    let job = &jobs(&f)[0];
    assert_eq!(
        (job.rules[0].as_str(), job.policy),
        ("everything", RestrictedPagePolicy::Skip)
    );
    // Tenant B still has the deployment's rules.
    deliver(
        &f,
        "/webhooks/page_created",
        "tenant-b",
        "secret-b",
        &page_event(1, "Anything", "HR", 1),
    )
    .await;
    assert_eq!(jobs(&f).len(), 1);

    let broken = json!({"rules": [{"name": "x", "events": ["page_created"], "title": "(", "edit": [{"append": "a"}]}]});
    f.store
        .put_settings(&a, &TenantSettings { document: broken }, NOW)
        .await
        .unwrap();
    f.changed("tenant-a").await;
    let r = deliver(
        &f,
        "/webhooks/page_created",
        "tenant-a",
        "secret-a",
        &page_event(2, "Release", "DOCS", 1),
    )
    .await;
    assert_eq!(r.status(), 204);
    assert_eq!(jobs(&f).len(), 1, "nothing half-applied");
}

#[tokio::test]
async fn only_the_descriptor_webhook_routes_exist() {
    let f = fixture().await;
    let body = page_event(42, "Release 1.0", "DOCS", 3).to_string();
    assert_eq!(
        f.app
            .handle(to_api_request(event("/webhooks/page_moved", None, &body)))
            .await
            .status(),
        404
    );
    assert_eq!(
        f.app
            .handle(to_api_request(event("/installed", None, &body)))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn refusals_say_what_was_wrong_without_repeating_the_body() {
    let f = fixture().await;
    let path = "/webhooks/page_updated";
    let evil = "evil\nINFO forged line";
    let with = |page: Value| {
        let mut body = page_event(42, "Release 1.0", "DOCS", 3);
        body[evil] = json!("MARKER-0");
        body["page"] = page;
        body.to_string()
    };
    for body in [
        with(json!({"id": 42, "version": "MARKER-1"})),
        with(json!({"id": 42, "title": ["MARKER-2"]})),
        with(json!({"id": "MARKER-3"})),
        with(json!({"id": ["MARKER-4"]})),
        with(json!("MARKER-5")),
        json!({"page": {"id": 42}, "userAccountId": "MARKER 6", evil: 1}).to_string(),
        json!({"page": {"id": 42}, "timestamp": "MARKER-7", evil: 1}).to_string(),
        "{\"evil\\nINFO forged line\": MARKER-8}".to_owned(),
    ] {
        let auth = format!("JWT {}", token("tenant-a", "secret-a", path, None));
        let r = f
            .app
            .handle(to_api_request(event(path, Some(auth), &body)))
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let said = error_of(&r);
        for caller_text in ["MARKER", "evil", "forged"] {
            assert!(
                !said.contains(caller_text),
                "the answer repeats the caller's text: {said} (sent {body})"
            );
        }
    }
    assert_eq!(
        error_of(
            &deliver(
                &f,
                path,
                "tenant-a",
                "secret-a",
                &json!({"page": {"id": 1, "version": "x"}})
            )
            .await
        ),
        "the page event has a value of the wrong type (line 1, column 29)"
    );
    assert!(jobs(&f).is_empty());
}

#[tokio::test]
async fn forge_events_are_not_there_without_a_forge_app_id() {
    let f = fixture().await;
    let r = f
        .app
        .handle(to_api_request(event(
            "/forge/events",
            Some("Bearer a.b.c".to_owned()),
            "{}",
        )))
        .await;
    assert_eq!(r.status(), 404);
    assert!(jobs(&f).is_empty());
}

/// The deployment's rules on Lambda live in the table (the environment holds 4 KB in all): a
/// document near the 64 KiB a document may have, stored under the deployment's key, replaces
/// `EDIT_RULES` for every tenant without rules of its own.
#[tokio::test]
async fn the_deployments_stored_rules_apply_to_tenants_without_their_own_up_to_64_kib() {
    let f = fixture().await;
    let rules: Vec<Value> = (0..50)
        .map(|n| {
            json!({"name": format!("stored-{n}"), "events": ["page_created"],
                   "spaces": [format!("S{n}")],
                   "edit": [{"append": format!("<p>{}</p>", "x".repeat(1200))}]})
        })
        .collect();
    let document = json!({"restricted_pages": "skip", "rules": rules});
    let size = serde_json::to_vec(&document).unwrap().len();
    assert!(
        size > 60 * 1024 && size <= Rules::MAX_DOCUMENT_BYTES,
        "{size} bytes"
    );
    f.store
        .put_settings(&ClientKey::deployment(), &TenantSettings { document }, NOW)
        .await
        .unwrap();
    deliver(
        &f,
        "/webhooks/page_created",
        "tenant-b",
        "secret-b",
        &page_event(7, "Anything", "S7", 1),
    )
    .await;
    let queued = jobs(&f);
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].rules[0].as_str(), queued[0].policy),
        ("stored-7", RestrictedPagePolicy::Skip)
    );
    // EDIT_RULES's own rule no longer applies to that tenant.
    deliver(
        &f,
        "/webhooks/page_created",
        "tenant-b",
        "secret-b",
        &page_event(8, "Release 2", "DOCS", 1),
    )
    .await;
    assert_eq!(jobs(&f).len(), 1);
}

/// A store whose settings reads take `delay` (a DynamoDB that hangs), the rest in memory.
struct SlowSettings {
    inner: MemoryStore,
    delay: std::sync::Mutex<Duration>,
}

#[async_trait::async_trait]
impl TenantStore for SlowSettings {
    async fn get_tenant(&self, key: &ClientKey, now: i64) -> Result<Option<Tenant>, StoreError> {
        self.inner.get_tenant(key, now).await
    }
    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        self.inner.save_install(tenant, now).await
    }
    async fn set_state(
        &self,
        key: &ClientKey,
        s: TenantState,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner.set_state(key, s, now).await
    }
    async fn mark_uninstalled(&self, key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        self.inner.mark_uninstalled(key, now).await
    }
}

#[async_trait::async_trait]
impl SettingsStore for SlowSettings {
    async fn get_settings(
        &self,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        self.inner.get_settings(key, now).await
    }
    async fn put_settings(
        &self,
        key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner.put_settings(key, settings, now).await
    }
}

#[async_trait::async_trait]
impl ForgeInstallations for SlowSettings {
    async fn get_installation(
        &self,
        id: &InstallationId,
        now: i64,
    ) -> Result<Option<ForgeInstallation>, StoreError> {
        self.inner.get_installation(id, now).await
    }
    async fn record_installation(
        &self,
        seen: &ForgeInstallation,
        now: i64,
    ) -> Result<ForgeInstallation, StoreError> {
        self.inner.record_installation(seen, now).await
    }
    async fn link_installation(
        &self,
        id: &InstallationId,
        key: &ClientKey,
        now: i64,
    ) -> Result<(), StoreError> {
        self.inner.link_installation(id, key, now).await
    }
}

#[tokio::test]
async fn a_store_that_hangs_before_the_event_is_queued_is_a_503_in_time_and_leaves_nothing() {
    let store = Arc::new(SlowSettings {
        inner: MemoryStore::new(),
        delay: std::sync::Mutex::new(Duration::from_secs(30)),
    });
    install(&store.inner, "tenant-a", "secret-a").await;
    let marks = Arc::new(MemoryStore::new());
    let queue = Arc::new(RecordingQueue::default());
    let app = Webhooks::new(
        AppConfig::from_lookup(app_env).unwrap(),
        Rules::parse(RULES).unwrap(),
        store.clone(),
        Arc::new(MarkedQueue::new(marks, queue.clone())),
        FixedClock(NOW),
    );
    let path = "/webhooks/page_updated";
    let body = page_event(42, "Release 1.0", "DOCS", 3).to_string();
    let auth = format!("JWT {}", token("tenant-a", "secret-a", path, None));
    let started = std::time::Instant::now();
    let r = app
        .handle(to_api_request(event(path, Some(auth.clone()), &body)))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 503);
    assert!(queue.jobs().is_empty());
    // Nothing was marked: the retry, once the store answers, is queued.
    *store.delay.lock().unwrap() = Duration::ZERO;
    let r = app
        .handle(to_api_request(event(path, Some(auth), &body)))
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(queue.jobs().len(), 1);
}
