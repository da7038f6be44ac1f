//! The verified-tenant cache through the authenticator, as a webhook uses it: how many store reads
//! warm requests, rotations, uninstalls, disables and forged tokens cost, with the clock moved by
//! hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use connect_auth::{ManualClock, RequestParts, SecretString, sign_hs256};
use serde_json::json;
use understudy_domain::{
    ClientKey, InstallOutcome, MemoryStore, SettingsStore, StoreError, Tenant, TenantSettings,
    TenantState, TenantStore,
};
use understudy_web::{
    Accept, ApiError, ApiRequest, Authenticator, Caller, ConnectAuthenticator, TenantCache,
};

const NOW: i64 = 1_750_000_000;
const PATH: &str = "/webhooks/page_updated";

/// The memory store, counting the reads that reach it.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    tenant_reads: AtomicUsize,
    settings_reads: AtomicUsize,
}

impl Counting {
    fn tenant_reads(&self) -> usize {
        self.tenant_reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TenantStore for Counting {
    async fn get_tenant(&self, key: &ClientKey, now: i64) -> Result<Option<Tenant>, StoreError> {
        self.tenant_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_tenant(key, now).await
    }
    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        self.inner.save_install(tenant, now).await
    }
    async fn set_state(
        &self,
        key: &ClientKey,
        state: TenantState,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner.set_state(key, state, now).await
    }
    async fn mark_uninstalled(&self, key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        self.inner.mark_uninstalled(key, now).await
    }
}

#[async_trait]
impl SettingsStore for Counting {
    async fn get_settings(
        &self,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        self.settings_reads.fetch_add(1, Ordering::SeqCst);
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

fn tenant(client: &str, secret: &str) -> Tenant {
    Tenant::from_install_payload(
        json!({"clientKey": client, "key": "understudy", "sharedSecret": secret,
               "baseUrl": "https://site.atlassian.net/wiki"}),
        NOW,
    )
    .unwrap()
}

struct Fixture {
    store: Arc<Counting>,
    clock: Arc<ManualClock>,
    auth: ConnectAuthenticator<Counting, Arc<ManualClock>>,
}

async fn fixture() -> Fixture {
    let store = Arc::new(Counting::default());
    store
        .save_install(&tenant("client-1", "secret-one"), NOW)
        .await
        .unwrap();
    let clock = ManualClock::at(NOW);
    let auth = ConnectAuthenticator::new(store.clone(), clock.clone(), "");
    Fixture { store, clock, auth }
}

fn webhook(client: &str, secret: &str, now: i64) -> ApiRequest {
    let claims = json!({"iss": client, "iat": now, "exp": now + 180,
                        "qsh": RequestParts::new("POST", PATH, "").qsh()});
    let token = sign_hs256(&claims, &SecretString::from(secret)).unwrap();
    ApiRequest::from_http(
        http::Request::builder()
            .method("POST")
            .uri(PATH)
            .header("authorization", format!("JWT {token}"))
            .body(Bytes::new())
            .unwrap(),
    )
}

impl Fixture {
    fn now(&self) -> i64 {
        connect_auth::Clock::now_unix(&self.clock)
    }

    async fn send(&self, client: &str, secret: &str) -> Result<Caller, ApiError> {
        self.auth
            .authenticate(&webhook(client, secret, self.now()), Accept::RequestToken)
            .await
    }
}

#[tokio::test]
async fn warm_webhooks_read_the_tenant_once_per_expiry() {
    let f = fixture().await;
    for _ in 0..200 {
        f.send("client-1", "secret-one").await.unwrap();
    }
    assert_eq!(f.store.tenant_reads(), 1);
    f.clock.advance(TenantCache::DEFAULT_TTL_SECONDS - 1);
    f.send("client-1", "secret-one").await.unwrap();
    assert_eq!(f.store.tenant_reads(), 1);
    f.clock.advance(1);
    f.send("client-1", "secret-one").await.unwrap();
    assert_eq!(
        f.store.tenant_reads(),
        2,
        "read again once its expiry is reached"
    );
}

#[tokio::test]
async fn concurrent_requests_for_a_cold_tenant_share_one_read() {
    let f = Arc::new(fixture().await);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            f.send("client-1", "secret-one").await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(f.store.tenant_reads(), 1);
}

/// Atlassian rotates a secret with a new `installed`, which another process (the lifecycle
/// function) stores: the first token signed with the new secret is checked against a fresh read.
#[tokio::test]
async fn a_rotated_secret_works_at_once() {
    let f = fixture().await;
    f.send("client-1", "secret-one").await.unwrap();
    f.clock.advance(2);
    f.store
        .save_install(&tenant("client-1", "secret-two"), f.now())
        .await
        .unwrap();
    let caller = f.send("client-1", "secret-two").await.unwrap();
    assert_eq!(caller.tenant.client_key.as_str(), "client-1");
    assert_eq!(f.store.tenant_reads(), 2);
    // The old secret is refused from now on, without another read within the second.
    assert!(matches!(
        f.send("client-1", "secret-one").await,
        Err(ApiError::Unauthorized(_))
    ));
    assert_eq!(f.store.tenant_reads(), 2);
    f.send("client-1", "secret-two").await.unwrap();
    assert_eq!(f.store.tenant_reads(), 2);
}

/// Another process uninstalls or disables the tenant: this one serves it at most until its read
/// expires. A write through this process's own handlers (the local app) is seen at once.
#[tokio::test]
async fn an_uninstall_or_a_disable_elsewhere_is_seen_within_the_expiry() {
    let f = fixture().await;
    f.send("client-1", "secret-one").await.unwrap();
    let key = ClientKey::parse("client-1").unwrap();
    f.store
        .set_state(&key, TenantState::Disabled, f.now())
        .await
        .unwrap();
    let cached = f.send("client-1", "secret-one").await.unwrap();
    assert_ne!(
        cached.tenant.state,
        TenantState::Disabled,
        "still the cached read"
    );
    f.clock.advance(TenantCache::DEFAULT_TTL_SECONDS);
    let fresh = f.send("client-1", "secret-one").await.unwrap();
    assert_eq!(fresh.tenant.state, TenantState::Disabled);

    f.store.mark_uninstalled(&key, f.now()).await.unwrap();
    assert!(f.send("client-1", "secret-one").await.is_ok(), "cached");
    f.clock.advance(TenantCache::DEFAULT_TTL_SECONDS);
    assert!(matches!(
        f.send("client-1", "secret-one").await,
        Err(ApiError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn a_write_in_this_process_is_seen_at_once() {
    let f = fixture().await;
    f.send("client-1", "secret-one").await.unwrap();
    let key = ClientKey::parse("client-1").unwrap();
    f.store.mark_uninstalled(&key, f.now()).await.unwrap();
    f.auth.tenant_cache().forget(&key).await;
    assert!(matches!(
        f.send("client-1", "secret-one").await,
        Err(ApiError::Unauthorized(_))
    ));
}

/// Forged tokens (a known client key, a wrong secret) cost at most one store read per tenant per
/// second; unknown client keys are remembered and their reads limited per second.
#[tokio::test]
async fn forged_tokens_cannot_force_a_read_per_request() {
    let f = fixture().await;
    f.send("client-1", "secret-one").await.unwrap();
    for second in 1..=5 {
        f.clock.advance(1);
        for _ in 0..500 {
            assert!(matches!(
                f.send("client-1", "forged").await,
                Err(ApiError::Unauthorized(_))
            ));
        }
        assert_eq!(
            f.store.tenant_reads(),
            1 + second,
            "one read per second at most"
        );
    }
    // The genuine secret still works all along, from the cache.
    let before = f.store.tenant_reads();
    f.send("client-1", "secret-one").await.unwrap();
    assert_eq!(f.store.tenant_reads(), before);

    // One unknown key: read once, then remembered for the expiry.
    for _ in 0..100 {
        assert!(matches!(
            f.send("stranger", "x").await,
            Err(ApiError::Unauthorized(_))
        ));
    }
    assert_eq!(f.store.tenant_reads(), before + 1);

    // Many unknown keys in one second: the reads stop at the budget, the rest answer 503.
    f.clock.advance(1);
    let (mut refused, mut unavailable) = (0, 0);
    for n in 0..1_000 {
        match f.send(&format!("stranger-{n}"), "x").await {
            Err(ApiError::Unauthorized(_)) => refused += 1,
            Err(ApiError::Unavailable(_)) => unavailable += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let limit = TenantCache::DEFAULT_COLD_READS_PER_SECOND as usize;
    assert_eq!(refused, limit);
    assert_eq!(unavailable, 1_000 - limit);
    assert_eq!(f.store.tenant_reads(), before + 1 + limit);
    // A cached tenant is still served meanwhile.
    f.send("client-1", "secret-one").await.unwrap();
}

#[tokio::test]
async fn settings_are_read_once_per_expiry_and_again_after_a_forget() {
    let store = Counting::default();
    let key = ClientKey::parse("client-1").unwrap();
    let cache = TenantCache::default();
    assert!(cache.settings(&store, &key, NOW).await.unwrap().is_none());
    let document = json!({"rules": []});
    store
        .put_settings(
            &key,
            &TenantSettings {
                document: document.clone(),
            },
            NOW,
        )
        .await
        .unwrap();
    assert!(
        cache
            .settings(&store, &key, NOW + 1)
            .await
            .unwrap()
            .is_none(),
        "cached"
    );
    cache.forget(&key).await;
    let read = cache
        .settings(&store, &key, NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.settings.document, document);
    assert_eq!(store.settings_reads.load(Ordering::SeqCst), 2);
}

/// The cache holds at most its capacity of tenants.
#[tokio::test]
async fn the_cache_is_bounded() {
    let store = Counting::default();
    let cache = TenantCache::new(16, 30, 10_000);
    for n in 0..500 {
        let key = ClientKey::parse(format!("client-{n}")).unwrap();
        let _ = cache.tenant(&store, &key, NOW).await.unwrap();
    }
    assert!(cache.held().await <= 16);
}
