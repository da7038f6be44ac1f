//! Bad input for every route (issue 18): generated requests, the credentials they carry, and the
//! doubles that tell what a function did with them.
//!
//! - [`Shot`]: one request as a caller could make API Gateway deliver it, or send it to the local
//!   app: a method, a path (a route of the table, or one twisted: odd encodings, dot segments,
//!   extra slashes, segments of every kind), a query, extra headers (repeated, oversized, not
//!   ASCII), a body of any shape (a route's own payload whole or mutated, truncated, not UTF-8,
//!   just over a size limit, nested too deep, any JSON, any bytes), and a [`Credential`];
//! - [`Credential`]: none, garbage, or a token signed as Connect, Atlassian (a signed install) or
//!   Forge would sign it, genuine or with one flaw under a valid signature (wrong secret, another
//!   tenant, an uninstalled tenant, expired, not yet valid, the qsh of another request, a context
//!   token without a user, wrong audience, another app, another key, no `jti`, a host that is not
//!   Forge's, ...). [`Shot::render`] signs it for the request and says which [`Proof`] it carries,
//!   if any: a request may write only when its route accepts that proof;
//! - [`Rendered::lambda_request`]: the API Gateway HTTP API (v2) event as lambda_http reads it
//!   (headers repeated joined with commas, cookies apart, bodies that are not text base64-encoded);
//! - [`CountingStore`]: every port over a [`MemoryStore`], noting each write and whose key it was
//!   under; [`StubConfluence`]: Confluence answering well, in memory; [`forge_jwks`]: a JWKS with
//!   the Forge test key.
//!
//! [`shot`] draws requests aimed at a function's routes ([`Target`]: what each takes as proof, its
//! own payloads, its body limit); [`config`] reads `PROPTEST_CASES` so that a long search can be
//! run by hand; [`note_case`] prints what a search reached (`FUZZ_STATS`).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use connect_auth::{FixedClock, RequestParts, SecretString, sign_hs256};
use forge_auth::{JwksSource, JwksUnavailable};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{Value, json};
use understudy_core::{
    Actor, Confluence, ConfluenceError, Door, Page, PageUpdate, RestrictionOperation, Restrictions,
};
use understudy_domain::{
    AccountId, AccountRegistry, AccountsPage, AuditCursor, AuditLog, AuditPage, AuditRecord,
    CachedToken, ClientKey, ClosedAccountKey, ForgeInstallation, ForgeInstallations,
    IdempotencyKey, IdempotencyMarks, InstallOutcome, InstallationId, Marked, MemoryStore, PageId,
    ParkedJob, ParkedJobs, ParkedPage, RateDecision, RateLimits, ScheduledPage, SettingsStore,
    StoreError, Tenant, TenantSettings, TenantState, TenantStore, TokenCache, TokenCacheKey,
};

use crate::install::{INSTALL_KID, INSTALL_PRIVATE_PEM, install_payload, rs256};
use crate::{APP_BASE_URL, NOW};

/// `PROPTEST_CASES` when set (a long search by hand), else `default_cases`: what every run of the
/// workspace's tests pays for.
pub fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // A failing case is saved beside the test (`<test>.proptest-regressions`), to be kept.
        ..ProptestConfig::default()
    }
}

/// With `FUZZ_STATS` set, one line per case on stderr: the route reached, the proof carried, the
/// status, and how many writes (and jobs) followed. `cargo test ... -- --nocapture 2>&1 | grep
/// '^fuzz' | sort | uniq -c` shows what a search covered.
pub fn note_case(route: Option<&str>, proof: Option<&Proof>, status: u16, writes: usize) {
    if std::env::var_os("FUZZ_STATS").is_some() {
        let proof = proof.map(|p| match p {
            Proof::ConnectRequest(_) => "connect-request",
            Proof::ConnectContext(_) => "connect-context",
            Proof::Install(_) => "install",
            Proof::ForgeApp(_) => "forge-app",
            Proof::ForgeUser(_) => "forge-user",
        });
        eprintln!(
            "fuzz {} {} {status} {}",
            route.unwrap_or("-"),
            proof.unwrap_or("-"),
            if writes > 0 { "wrote" } else { "-" }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The parties

/// The installed tenant and its shared secret.
pub const LIVE: (&str, &str) = ("tenant-a", "secret-a");
/// A tenant that disabled the app.
pub const DISABLED: (&str, &str) = ("tenant-d", "secret-d");
/// A tenant that uninstalled the app (still within its retention).
pub const UNINSTALLED: (&str, &str) = ("tenant-u", "secret-u");
/// A user, a site admin by [`StubConfluence`]'s word.
pub const ALICE: &str = "557058:alice";
/// A user who is no site admin.
pub const BOB: &str = "557058:bob";
/// The Forge app's id (`FORGE_APP_ID` of [`env`]).
pub const FORGE_APP_ID: &str = "ari:cloud:ecosystem::app/8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93";
/// The Forge installation genuine FITs name.
pub const FORGE_INSTALLATION: &str =
    "ari:cloud:ecosystem::installation/0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4";
/// The site (cloudId) of that installation.
pub const FORGE_CLOUD_ID: &str = "5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c";
/// The kid of the Forge test key [`forge_jwks`] serves.
pub const FORGE_KID: &str = "forge-test-key-1";
const FORGE_OTHER_KID: &str = "forge-test-key-2";
const FORGE_PRIVATE: &[u8] =
    include_bytes!("../../../shared/forge-auth/tests/fixtures/fit-test-key-1.private.pem");
const FORGE_PUBLIC: &str =
    include_str!("../../../shared/forge-auth/tests/fixtures/fit-test-key-1.public.pem");
const FORGE_OTHER_PRIVATE: &[u8] =
    include_bytes!("../../../shared/forge-auth/tests/fixtures/fit-test-key-2.private.pem");

/// The API base URL of [`FORGE_INSTALLATION`].
pub fn forge_api_base_url() -> String {
    format!("https://api.atlassian.com/ex/confluence/{FORGE_CLOUD_ID}")
}

/// The key the data of [`FORGE_INSTALLATION`] lives under (its own, no Connect link).
pub fn forge_tenant_key() -> String {
    InstallationId::parse(FORGE_INSTALLATION)
        .unwrap_or_else(|e| panic!("installation id: {e}"))
        .own_tenant_key()
        .as_str()
        .to_owned()
}

/// [`crate::app_env`] with the Forge front door open for [`FORGE_APP_ID`].
pub fn env(name: &str) -> Option<String> {
    match name {
        "FORGE_APP_ID" => Some(FORGE_APP_ID.to_owned()),
        _ => crate::app_env(name),
    }
}

/// The fixtures' clock.
pub fn clock() -> FixedClock {
    FixedClock(NOW)
}

/// A JWKS holding the Forge test key as [`FORGE_KID`].
#[derive(Debug)]
pub struct FixtureJwks(JwkSet);

#[async_trait]
impl JwksSource for FixtureJwks {
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
        Ok(self.0.clone())
    }
}

/// The Forge JWKS of the fixtures, for `ForgeFrontDoor::new`.
pub fn forge_jwks() -> Arc<dyn JwksSource> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPublicKey::from_public_key_pem(FORGE_PUBLIC)
        .unwrap_or_else(|e| panic!("the Forge test key: {e}"));
    let set = json!({"keys": [{
        "kty": "RSA", "kid": FORGE_KID, "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    }]});
    let set: JwkSet = serde_json::from_value(set).unwrap_or_else(|e| panic!("JWKS: {e}"));
    Arc::new(FixtureJwks(set))
}

// ---------------------------------------------------------------------------------------------
// The store that counts

/// One write to the store: the port method, and the tenant key it wrote under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The port method (`save_install`, `mark_once`, ...).
    pub op: &'static str,
    /// The key of the tenant written for.
    pub tenant: String,
}

/// Every port over a [`MemoryStore`]; each write is noted ([`CountingStore::writes`]) before it
/// is made. Reads are not noted.
#[derive(Debug, Default)]
pub struct CountingStore {
    inner: MemoryStore,
    writes: Mutex<Vec<Write>>,
}

impl CountingStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store itself, whose writes are not noted (fixtures).
    pub fn memory(&self) -> &MemoryStore {
        &self.inner
    }

    /// The writes noted so far.
    pub fn writes(&self) -> Vec<Write> {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the writes noted so far.
    pub fn forget_writes(&self) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn note(&self, op: &'static str, tenant: &str) {
        self.writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Write {
                op,
                tenant: tenant.to_owned(),
            });
    }
}

/// A store with [`LIVE`] installed, [`DISABLED`] disabled and [`UNINSTALLED`] uninstalled, from
/// the fixtures' site, its writes forgotten.
pub async fn seeded_store() -> Arc<CountingStore> {
    let store = Arc::new(CountingStore::new());
    let memory = store.memory();
    for (key, secret) in [LIVE, DISABLED, UNINSTALLED] {
        let tenant = crate::tenant(key, secret, crate::install::SITE_BASE_URL, NOW);
        memory
            .save_install(&tenant, NOW)
            .await
            .unwrap_or_else(|e| panic!("install: {e}"));
    }
    let key = |k: &str| ClientKey::parse(k).unwrap_or_else(|e| panic!("clientKey: {e}"));
    memory
        .set_state(&key(DISABLED.0), TenantState::Disabled, NOW)
        .await
        .unwrap_or_else(|e| panic!("disable: {e}"));
    memory
        .mark_uninstalled(&key(UNINSTALLED.0), NOW)
        .await
        .unwrap_or_else(|e| panic!("uninstall: {e}"));
    store
}

#[async_trait]
impl TenantStore for CountingStore {
    async fn get_tenant(&self, key: &ClientKey, now: i64) -> Result<Option<Tenant>, StoreError> {
        self.inner.get_tenant(key, now).await
    }
    async fn save_install(&self, tenant: &Tenant, now: i64) -> Result<InstallOutcome, StoreError> {
        self.note("save_install", tenant.client_key.as_str());
        self.inner.save_install(tenant, now).await
    }
    async fn set_state(
        &self,
        key: &ClientKey,
        state: TenantState,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.note("set_state", key.as_str());
        self.inner.set_state(key, state, now).await
    }
    async fn mark_uninstalled(&self, key: &ClientKey, now: i64) -> Result<bool, StoreError> {
        self.note("mark_uninstalled", key.as_str());
        self.inner.mark_uninstalled(key, now).await
    }
}

#[async_trait]
impl TokenCache for CountingStore {
    async fn get_token(
        &self,
        key: &ClientKey,
        token: &TokenCacheKey,
        now: i64,
    ) -> Result<Option<CachedToken>, StoreError> {
        self.inner.get_token(key, token, now).await
    }
    async fn put_token(
        &self,
        key: &ClientKey,
        cache_key: &TokenCacheKey,
        token: &CachedToken,
    ) -> Result<(), StoreError> {
        self.note("put_token", key.as_str());
        self.inner.put_token(key, cache_key, token).await
    }
    async fn drop_tokens_for_tenant(&self, key: &ClientKey) -> Result<(), StoreError> {
        self.note("drop_tokens_for_tenant", key.as_str());
        self.inner.drop_tokens_for_tenant(key).await
    }
    async fn drop_token(&self, key: &ClientKey, token: &TokenCacheKey) -> Result<(), StoreError> {
        self.note("drop_token", key.as_str());
        self.inner.drop_token(key, token).await
    }
}

#[async_trait]
impl IdempotencyMarks for CountingStore {
    async fn mark_once(
        &self,
        key: &ClientKey,
        mark: &IdempotencyKey,
        ttl_seconds: i64,
        now: i64,
    ) -> Result<Marked, StoreError> {
        self.note("mark_once", key.as_str());
        self.inner.mark_once(key, mark, ttl_seconds, now).await
    }
    async fn clear_mark(&self, key: &ClientKey, mark: &IdempotencyKey) -> Result<(), StoreError> {
        self.note("clear_mark", key.as_str());
        self.inner.clear_mark(key, mark).await
    }
}

#[async_trait]
impl AuditLog for CountingStore {
    async fn append(&self, record: &AuditRecord, retention_seconds: i64) -> Result<(), StoreError> {
        self.note("append", record.client_key.as_str());
        self.inner.append(record, retention_seconds).await
    }
    async fn list_for_tenant(
        &self,
        key: &ClientKey,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.inner.list_for_tenant(key, before, limit, now).await
    }
    async fn list_for_page(
        &self,
        key: &ClientKey,
        page: &PageId,
        before: Option<&AuditCursor>,
        limit: usize,
        now: i64,
    ) -> Result<AuditPage, StoreError> {
        self.inner
            .list_for_page(key, page, before, limit, now)
            .await
    }
    async fn erase_account(
        &self,
        key: &ClientKey,
        account: &AccountId,
    ) -> Result<usize, StoreError> {
        self.note("erase_account", key.as_str());
        self.inner.erase_account(key, account).await
    }
}

#[async_trait]
impl RateLimits for CountingStore {
    async fn take(
        &self,
        key: &ClientKey,
        subject: &str,
        limit: u32,
        window_seconds: i64,
        now: i64,
    ) -> Result<RateDecision, StoreError> {
        self.note("take", key.as_str());
        self.inner
            .take(key, subject, limit, window_seconds, now)
            .await
    }
}

#[async_trait]
impl SettingsStore for CountingStore {
    async fn get_settings(
        &self,
        key: &ClientKey,
        now: i64,
    ) -> Result<Option<TenantSettings>, StoreError> {
        self.inner.get_settings(key, now).await
    }
    async fn put_settings(
        &self,
        key: &ClientKey,
        settings: &TenantSettings,
        now: i64,
    ) -> Result<(), StoreError> {
        self.note("put_settings", key.as_str());
        self.inner.put_settings(key, settings, now).await
    }
}

#[async_trait]
impl ForgeInstallations for CountingStore {
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
        self.note("record_installation", seen.id.own_tenant_key().as_str());
        self.inner.record_installation(seen, now).await
    }
    async fn link_installation(
        &self,
        id: &InstallationId,
        key: &ClientKey,
        now: i64,
    ) -> Result<(), StoreError> {
        self.note("link_installation", key.as_str());
        self.inner.link_installation(id, key, now).await
    }
}

#[async_trait]
impl ParkedJobs for CountingStore {
    async fn park(&self, job: &ParkedJob) -> Result<(), StoreError> {
        self.note("park", job.client_key.as_str());
        self.inner.park(job).await
    }
    async fn unpark(&self, key: &ClientKey, page: &PageId) -> Result<(), StoreError> {
        self.note("unpark", key.as_str());
        self.inner.unpark(key, page).await
    }
    async fn parked(
        &self,
        key: &ClientKey,
        page: &PageId,
        now: i64,
    ) -> Result<Option<ParkedJob>, StoreError> {
        self.inner.parked(key, page, now).await
    }
    async fn list_parked(
        &self,
        key: &ClientKey,
        after: Option<&(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Result<ParkedPage, StoreError> {
        self.inner.list_parked(key, after, limit, now).await
    }
}

#[async_trait]
impl AccountRegistry for CountingStore {
    async fn note_account(
        &self,
        key: &ClientKey,
        account: &AccountId,
        retrieved_at: i64,
    ) -> Result<bool, StoreError> {
        self.note("note_account", key.as_str());
        self.inner.note_account(key, account, retrieved_at).await
    }
    async fn list_accounts(
        &self,
        key: &ClientKey,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<AccountsPage, StoreError> {
        self.inner.list_accounts(key, after, limit).await
    }
    async fn mark_reported(
        &self,
        key: &ClientKey,
        account: &AccountId,
        next_report_at: i64,
        refreshed_at: Option<i64>,
    ) -> Result<(), StoreError> {
        self.note("mark_reported", key.as_str());
        self.inner
            .mark_reported(key, account, next_report_at, refreshed_at)
            .await
    }
    async fn close_account(
        &self,
        key: &ClientKey,
        account: &AccountId,
        now: i64,
    ) -> Result<(), StoreError> {
        self.note("close_account", key.as_str());
        self.inner.close_account(key, account, now).await
    }
    async fn forget_account(&self, key: &ClientKey, account: &AccountId) -> Result<(), StoreError> {
        self.note("forget_account", key.as_str());
        self.inner.forget_account(key, account).await
    }
    async fn is_closed(
        &self,
        key: &ClientKey,
        closed: &ClosedAccountKey,
    ) -> Result<bool, StoreError> {
        self.inner.is_closed(key, closed).await
    }
    async fn scheduled_tenants(
        &self,
        slot: u32,
        after: Option<&ClientKey>,
        limit: usize,
    ) -> Result<ScheduledPage, StoreError> {
        self.inner.scheduled_tenants(slot, after, limit).await
    }
    async fn purge_tenant(&self, key: &ClientKey, max_items: usize) -> Result<bool, StoreError> {
        self.note("purge_tenant", key.as_str());
        self.inner.purge_tenant(key, max_items).await
    }
}

/// Parks a blocked job for page `42` of [`LIVE`] and a dead-lettered one for page `7` of the
/// Forge installation, for the admin API's listings and its "retry now" (writes not noted).
pub async fn park_jobs(store: &CountingStore) {
    let jobs = [
        (LIVE.0.to_owned(), "42", false),
        (forge_tenant_key(), "7", true),
    ];
    for (tenant, page, dead_lettered) in jobs {
        let job = crate::queue::edit_job(&tenant, page, "job-1");
        let parked = ParkedJob {
            client_key: job.client_key.clone(),
            page_id: job.page_id.clone(),
            at_ms: NOW * 1000,
            outcome: understudy_domain::EditOutcome::Blocked,
            reason: "the app may not edit this page".into(),
            dead_lettered,
            job: job.to_json().unwrap_or_else(|e| panic!("job: {e}")),
        };
        store
            .memory()
            .park(&parked)
            .await
            .unwrap_or_else(|e| panic!("park: {e}"));
    }
}

/// A queue depth that is always the same.
#[derive(Debug, Default)]
pub struct FixedDepth(pub u64);

#[async_trait]
impl understudy_queue::QueueDepth for FixedDepth {
    async fn waiting(&self) -> Result<u64, understudy_queue::QueueError> {
        Ok(self.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Confluence, answering well

/// Confluence in memory, answering as a healthy site does: every page exists (`<p>body</p>`,
/// version 1), except that a page id ending in `4` is not found and one ending in `3` may be
/// viewed but not edited; every restriction is empty; [`ALICE`] is a site admin and nobody else
/// is. No answer is an outage: a 5xx from a function on top of it is the function's own. Counts
/// the calls made to it ([`StubConfluence::calls`]).
#[derive(Debug, Default)]
pub struct StubConfluence {
    calls: std::sync::atomic::AtomicUsize,
}

impl StubConfluence {
    /// Calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn call(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn last_digit(page: &PageId) -> Option<char> {
    page.as_str().chars().last()
}

#[async_trait]
impl Confluence for StubConfluence {
    async fn get_page(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Page, ConfluenceError> {
        self.call();
        if last_digit(page) == Some('4') {
            return Err(ConfluenceError::NotFound);
        }
        Ok(Page {
            id: page.clone(),
            status: "current".into(),
            title: "A page".into(),
            space_id: Some("1".into()),
            version: 1,
            body: "<p>body</p>".into(),
        })
    }

    async fn update_page(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        update: &PageUpdate<'_>,
    ) -> Result<u64, ConfluenceError> {
        self.call();
        if last_digit(update.id) == Some('3') {
            return Err(ConfluenceError::Forbidden);
        }
        Ok(update.version)
    }

    async fn get_restrictions(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        _page: &PageId,
    ) -> Result<Restrictions, ConfluenceError> {
        self.call();
        Ok(Restrictions::default())
    }

    async fn add_restriction_user(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        _page: &PageId,
        _operation: RestrictionOperation,
        _account: &AccountId,
    ) -> Result<(), ConfluenceError> {
        self.call();
        Ok(())
    }

    async fn can_view_page(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        page: &PageId,
    ) -> Result<bool, ConfluenceError> {
        self.call();
        Ok(last_digit(page) != Some('4'))
    }

    async fn permission_check(
        &self,
        _door: Door<'_>,
        _actor: Actor<'_>,
        page: &PageId,
        _account: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError> {
        self.call();
        Ok(match operation {
            RestrictionOperation::Read => last_digit(page) != Some('4'),
            RestrictionOperation::Update => !matches!(last_digit(page), Some('3' | '4')),
        })
    }

    async fn is_site_admin(
        &self,
        _door: Door<'_>,
        account: &AccountId,
    ) -> Result<bool, ConfluenceError> {
        self.call();
        Ok(account.as_str() == ALICE)
    }

    async fn app_account_id(&self, _door: Door<'_>) -> Result<AccountId, ConfluenceError> {
        self.call();
        AccountId::parse("557058:app").map_err(|_| ConfluenceError::InvalidResponse {
            reason: "app account".into(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// Whom a verified credential speaks for, and how it was proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A Connect JWT bound to this very request (its qsh), from a live tenant.
    ConnectRequest(String),
    /// A Connect context JWT (`context-qsh`) naming a user, from a live tenant, in the header.
    ConnectContext(String),
    /// A signed install from Atlassian for this request, issued by this clientKey.
    Install(String),
    /// A Forge invocation of the app (no user, or a user without the user's token).
    ForgeApp(String),
    /// A Forge invocation by a user, with the user's token.
    ForgeUser(String),
}

impl Proof {
    /// The tenant key every write of a request with this proof must be under.
    pub fn tenant(&self) -> &str {
        match self {
            Self::ConnectRequest(t)
            | Self::ConnectContext(t)
            | Self::Install(t)
            | Self::ForgeApp(t)
            | Self::ForgeUser(t) => t,
        }
    }
}

/// Which of the fixtures' tenants a token claims to be from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantPick {
    /// [`Keyring::live`].
    Live,
    /// [`Keyring::disabled`] (the live tenant when there is none): verifies (the handler decides
    /// what a disabled tenant may do).
    Disabled,
}

/// Where a Connect token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `Authorization: <scheme><token>`.
    Header,
    /// `?jwt=<token>`.
    Query,
    /// Both (the same token).
    Both,
}

/// The `Authorization` scheme written before a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `JWT ` (Connect's).
    Jwt,
    /// `Bearer ` (Forge's).
    Bearer,
    /// `jwt `.
    JwtLower,
    /// `bearer `.
    BearerLower,
    /// `JWT  ` (two spaces).
    JwtTwoSpaces,
    /// The token alone.
    Bare,
}

impl Scheme {
    fn prefix(self) -> &'static str {
        match self {
            Self::Jwt => "JWT ",
            Self::Bearer => "Bearer ",
            Self::JwtLower => "jwt ",
            Self::BearerLower => "bearer ",
            Self::JwtTwoSpaces => "JWT  ",
            Self::Bare => "",
        }
    }
}

/// The qsh claim of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qsh {
    /// The hash of this request.
    ThisRequest,
    /// The hash of another request (which may hash the same: then it is this request's).
    Other {
        /// Its method.
        method: String,
        /// Its path.
        path: String,
        /// Its query.
        query: String,
    },
    /// `context-qsh`.
    Context,
    /// No qsh claim.
    Missing,
    /// Any text.
    Text(String),
}

/// One flaw of a Connect token that is otherwise genuine. Every one of them is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFlaw {
    /// Signed with a secret that is not the tenant's.
    WrongSecret,
    /// From a clientKey nobody installed (signed with the live tenant's secret).
    UnknownIssuer,
    /// Names the disabled tenant, signed with the live tenant's secret.
    OtherTenantsIssuer,
    /// From the uninstalled tenant, with its old secret.
    Uninstalled,
    /// Expired an hour ago.
    Expired,
    /// Issued an hour from now.
    NotYetValid,
    /// No `iss`, `iat` or `exp` (which one: 0, 1, 2).
    MissingClaim(u8),
    /// Signed with HS512, or `alg: none`, or an RS256 header over an HMAC.
    Algorithm(u8),
    /// The signature of other claims.
    Tampered,
    /// The signature cut short.
    Truncated,
}

/// A Connect token (HS256 with a tenant's shared secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSpec {
    /// Whose.
    pub tenant: TenantPick,
    /// Its qsh.
    pub qsh: Qsh,
    /// Its `sub`: 0 none, 1 the keyring's first user, 2 its second, 3 not an accountId.
    pub sub: u8,
    /// Lives an hour (`exp - iat`): refused on the API (context tokens), fine elsewhere.
    pub long_lived: bool,
    /// Its one flaw, if any.
    pub flaw: Option<ConnectFlaw>,
    /// The scheme before it.
    pub scheme: Scheme,
    /// Where it goes.
    pub place: Place,
}

/// One flaw of a signed install that is otherwise genuine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallFlaw {
    /// `aud` another app's URL.
    WrongAudience,
    /// No `aud`.
    NoAudience,
    /// Expired.
    Expired,
    /// Issued an hour from now.
    NotYetValid,
    /// A kid the key server does not know.
    UnknownKid,
    /// No kid.
    NoKid,
    /// Signed with another RSA key under the right kid.
    OtherKey,
    /// HS256 with the live tenant's secret (then, if it names that tenant, a request token).
    Hs256,
    /// The signature of other claims.
    Tampered,
}

/// A signed install (RS256 with the test install key, as Atlassian signs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSpec {
    /// The issuer (the clientKey it installs).
    pub iss: String,
    /// Its qsh.
    pub qsh: Qsh,
    /// Its one flaw, if any.
    pub flaw: Option<InstallFlaw>,
    /// The scheme before it.
    pub scheme: Scheme,
    /// Where it goes.
    pub place: Place,
}

/// One flaw of a Forge invocation token that is otherwise genuine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeFlaw {
    /// `aud` another app.
    WrongAudience,
    /// `app.id` another app (`aud` right).
    OtherApp,
    /// `iss` not Forge's.
    WrongIssuer,
    /// Expired.
    Expired,
    /// Not valid before an hour from now.
    NotYetValid,
    /// No `jti`.
    NoJti,
    /// Another key under a kid the JWKS does not have.
    UnknownKid,
    /// Another key under the right kid.
    OtherKey,
    /// HS256.
    Hs256,
    /// `app.installationId` not an installation ARI.
    NotAnInstallation,
    /// `app.apiBaseUrl` on a host that is not Forge's.
    HostNotAllowed,
    /// No site named anywhere (no contexts, an `apiBaseUrl` without a cloudId).
    NoSite,
    /// The signature of other claims.
    Tampered,
}

/// A Forge invocation token (RS256 with the Forge test key) and the token headers beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeSpec {
    /// Its one flaw, if any.
    pub flaw: Option<ForgeFlaw>,
    /// Names a user (`principal`: the keyring's first user, or its second by `user_is_bob`).
    pub principal: bool,
    /// The user is the keyring's second.
    pub user_is_bob: bool,
    /// `x-forge-oauth-system` is sent.
    pub system_token: bool,
    /// `x-forge-oauth-user` is sent.
    pub user_token: bool,
    /// A number for its `jti`.
    pub jti: u32,
    /// The scheme before it.
    pub scheme: Scheme,
}

/// What a request carries to say who sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing.
    None,
    /// Garbage after a scheme, in the header or the query.
    Garbage {
        /// The scheme.
        scheme: Scheme,
        /// The text.
        token: String,
        /// In the `jwt` query parameter rather than the header.
        in_query: bool,
    },
    /// A Connect token.
    Connect(ConnectSpec),
    /// A signed install.
    Install(InstallSpec),
    /// A Forge invocation.
    Forge(ForgeSpec),
}

/// What a [`Shot`] is rendered against: the tenants and keys the app under test knows.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// An installed tenant: clientKey and shared secret.
    pub live: (String, String),
    /// A tenant that disabled the app, when there is one.
    pub disabled: Option<(String, String)>,
    /// A tenant that uninstalled the app, when there is one.
    pub uninstalled: Option<(String, String)>,
    /// The app's base path (what the qsh is relative to).
    pub base_path: String,
    /// The audience of genuine signed installs.
    pub app_base_url: String,
    /// Whether the app trusts the test install key (then genuine installs carry a proof).
    pub installs_trusted: bool,
    /// Whether the app trusts [`forge_jwks`] and [`FORGE_APP_ID`].
    pub forge_trusted: bool,
    /// The users tokens name (`sub`, a FIT's `principal`): a site admin first, then a user who is
    /// not.
    pub users: [String; 2],
    /// The app's time.
    pub now: i64,
}

impl Keyring {
    /// The Lambda functions' fixtures: [`seeded_store`]'s tenants, at [`NOW`], the Forge door
    /// over [`forge_jwks`].
    pub fn fixtures() -> Self {
        let pair = |(k, s): (&str, &str)| (k.to_owned(), s.to_owned());
        Self {
            live: pair(LIVE),
            disabled: Some(pair(DISABLED)),
            uninstalled: Some(pair(UNINSTALLED)),
            base_path: String::new(),
            app_base_url: APP_BASE_URL.to_owned(),
            installs_trusted: true,
            forge_trusted: true,
            users: [ALICE.to_owned(), BOB.to_owned()],
            now: NOW,
        }
    }

    fn tenant(&self, pick: TenantPick) -> (String, String) {
        match pick {
            TenantPick::Live => self.live.clone(),
            TenantPick::Disabled => self.disabled.clone().unwrap_or_else(|| self.live.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests

/// A body as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// No body.
    None,
    /// Text; `base64`: API Gateway base64-encoded it (`isBase64Encoded`).
    Text {
        /// The text.
        text: String,
        /// Sent base64-encoded.
        base64: bool,
    },
    /// Bytes that need not be UTF-8 (always base64-encoded in an event).
    Bytes(Vec<u8>),
}

impl Payload {
    /// The bytes of the body.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Text { text, .. } => text.clone().into_bytes(),
            Self::Bytes(bytes) => bytes.clone(),
        }
    }
}

/// One generated request (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// The method.
    pub method: String,
    /// The raw path.
    pub path: String,
    /// The raw query, without `?`.
    pub query: String,
    /// `Content-Type`, when sent.
    pub content_type: Option<String>,
    /// More headers (lower-case names, possibly repeated or repeating the credential's).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Payload,
    /// Who it claims to come from.
    pub credential: Credential,
}

/// A [`Shot`] signed for its request: what is sent, and the proof its credential carries.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The method.
    pub method: String,
    /// The raw path.
    pub path: String,
    /// The raw query (with the token when it goes there).
    pub query: String,
    /// Every header but `Host`, in order, names lower-case, possibly repeated.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Payload,
    /// What the credential proves, if it is genuine. Whether that lets the request write
    /// depends on its route.
    pub proof: Option<Proof>,
}

impl Rendered {
    /// The raw API Gateway HTTP API (v2) event of this request to `understudy.example.com`:
    /// header names lower-case and repeated ones joined with commas, cookies in `cookies`, a body
    /// that is not text (or that API Gateway chose to encode) base64-encoded.
    pub fn api_gateway_event(&self) -> String {
        let mut headers = serde_json::Map::new();
        // What API Gateway sets itself, whatever the client sent.
        headers.insert("host".into(), json!("understudy.example.com"));
        headers.insert("x-forwarded-proto".into(), json!("https"));
        headers.insert("x-forwarded-port".into(), json!("443"));
        let mut cookies = Vec::new();
        for (name, value) in &self.headers {
            let name = name.to_ascii_lowercase();
            if matches!(
                name.as_str(),
                "host" | "x-forwarded-proto" | "x-forwarded-port"
            ) {
                continue;
            }
            if name == "cookie" {
                cookies.extend(value.split(';').map(|c| json!(c.trim())));
                continue;
            }
            match headers.get_mut(&name) {
                Some(Value::String(seen)) => {
                    seen.push(',');
                    seen.push_str(value);
                }
                _ => {
                    headers.insert(name, json!(value));
                }
            }
        }
        let mut event = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": self.path,
            "rawQueryString": self.query, "headers": headers,
            "requestContext": {
                "accountId": "123456789012", "apiId": "api1",
                "domainName": "understudy.example.com", "domainPrefix": "understudy",
                "http": {"method": self.method, "path": self.path, "protocol": "HTTP/1.1",
                         "sourceIp": "192.0.2.1", "userAgent": "fuzz"},
                "requestId": "req-fuzz", "routeKey": "$default", "stage": "$default",
                "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1_780_000_000_000_i64
            },
            "isBase64Encoded": false
        });
        if !cookies.is_empty() {
            event["cookies"] = Value::Array(cookies);
        }
        match &self.payload {
            Payload::None => {}
            Payload::Text {
                text,
                base64: false,
            } => event["body"] = json!(text),
            Payload::Text { text, base64: true } => {
                event["body"] = json!(STANDARD.encode(text));
                event["isBase64Encoded"] = json!(true);
            }
            Payload::Bytes(bytes) => {
                event["body"] = json!(STANDARD.encode(bytes));
                event["isBase64Encoded"] = json!(true);
            }
        }
        event.to_string()
    }

    /// [`Self::api_gateway_event`] as lambda_http reads it. Panics (a generator bug) when
    /// lambda_http cannot read it: such an event would never reach the function's code.
    pub fn lambda_request(&self) -> lambda_http::Request {
        let event = self.api_gateway_event();
        lambda_http::request::from_str(&event).unwrap_or_else(|e| {
            panic!("lambda_http cannot read the generated event ({e}): {event}")
        })
    }
}

impl Shot {
    /// Signs the credential for this request against `keys`, and says what it proves.
    pub fn render(&self, keys: &Keyring) -> Rendered {
        let mut headers = Vec::new();
        if let Some(content_type) = &self.content_type {
            headers.push(("content-type".to_owned(), content_type.clone()));
        }
        let mut query = self.query.clone();
        let this_qsh = qsh(keys, &self.method, &self.path, &self.query);
        let extra = |name: &str| {
            self.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && !v.trim().is_empty())
        };
        let mut authorization = None;
        let mut in_query = None;
        let proof = match &self.credential {
            Credential::None => None,
            Credential::Garbage {
                scheme,
                token,
                in_query: q,
            } => {
                if *q {
                    in_query = Some(token.clone());
                } else {
                    authorization = Some(format!("{}{token}", scheme.prefix()));
                }
                None
            }
            Credential::Connect(spec) => {
                let (token, proof) = connect_token(spec, keys, &this_qsh);
                place(
                    spec.place,
                    spec.scheme,
                    token,
                    &mut authorization,
                    &mut in_query,
                );
                proof
            }
            Credential::Install(spec) => {
                let (token, proof) = install_token(spec, keys, &this_qsh);
                place(
                    spec.place,
                    spec.scheme,
                    token,
                    &mut authorization,
                    &mut in_query,
                );
                proof
            }
            Credential::Forge(spec) => {
                let token = forge_token(spec, keys);
                authorization = Some(format!("{}{token}", spec.scheme.prefix()));
                if spec.system_token {
                    headers.push(("x-forge-oauth-system".into(), "system-token-1".into()));
                }
                if spec.user_token {
                    headers.push(("x-forge-oauth-user".into(), "user-token-1".into()));
                }
                let genuine = spec.flaw.is_none() && keys.forge_trusted;
                let system = spec.system_token || extra("x-forge-oauth-system");
                let user = spec.user_token || extra("x-forge-oauth-user");
                match (genuine && system, spec.principal && user) {
                    (false, _) => None,
                    (true, true) => Some(Proof::ForgeUser(forge_tenant_key())),
                    (true, false) => Some(Proof::ForgeApp(forge_tenant_key())),
                }
            }
        };
        if let Some(authorization) = authorization {
            headers.push(("authorization".to_owned(), authorization));
        }
        if let Some(token) = in_query {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("jwt=");
            query.push_str(&token);
        }
        headers.extend(self.headers.iter().cloned());
        Rendered {
            method: self.method.clone(),
            path: self.path.clone(),
            query,
            headers,
            payload: self.payload.clone(),
            proof,
        }
    }
}

fn place(
    place: Place,
    scheme: Scheme,
    token: String,
    authorization: &mut Option<String>,
    in_query: &mut Option<String>,
) {
    if matches!(place, Place::Header | Place::Both) {
        *authorization = Some(format!("{}{token}", scheme.prefix()));
    }
    if matches!(place, Place::Query | Place::Both) {
        *in_query = Some(token);
    }
}

fn qsh(keys: &Keyring, method: &str, path: &str, query: &str) -> String {
    RequestParts::new(method, path, query)
        .with_base_path(&keys.base_path)
        .qsh()
}

fn qsh_claim(q: &Qsh, keys: &Keyring, this: &str) -> (Option<String>, bool) {
    match q {
        Qsh::ThisRequest => (Some(this.to_owned()), true),
        Qsh::Other {
            method,
            path,
            query,
        } => {
            let other = qsh(keys, method, path, query);
            let same = other == this;
            (Some(other), same)
        }
        Qsh::Context => (Some(connect_auth::CONTEXT_QSH.to_owned()), false),
        Qsh::Missing => (None, false),
        Qsh::Text(text) => (Some(text.clone()), text == this),
    }
}

fn hs256(claims: &Value, secret: &str) -> String {
    sign_hs256(claims, &SecretString::from(secret)).unwrap_or_else(|e| panic!("signing: {e}"))
}

/// Another token's claims under this token's signature.
fn tampered(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let _ = parts.next();
    let signature = parts.next().unwrap_or_default();
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{claims}.{signature}")
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn connect_token(spec: &ConnectSpec, keys: &Keyring, this_qsh: &str) -> (String, Option<Proof>) {
    let (mut iss, mut secret) = keys.tenant(spec.tenant);
    let verified_tenant = iss.clone();
    let now = keys.now;
    let mut claims =
        json!({"iss": iss, "iat": now, "exp": now + if spec.long_lived { 3600 } else { 180 }});
    let (qsh, qsh_is_this) = qsh_claim(&spec.qsh, keys, this_qsh);
    if let Some(qsh) = qsh {
        claims["qsh"] = json!(qsh);
    }
    match spec.sub {
        1 => claims["sub"] = json!(keys.users[0]),
        2 => claims["sub"] = json!(keys.users[1]),
        3 => claims["sub"] = json!("not an account"),
        _ => {}
    }
    if spec.qsh == Qsh::Context {
        claims["context"] = json!({});
    }
    let mut token = None;
    match &spec.flaw {
        None => {}
        Some(ConnectFlaw::WrongSecret) => secret = "not-the-secret".into(),
        Some(ConnectFlaw::UnknownIssuer) => iss = "tenant-nobody".into(),
        Some(ConnectFlaw::OtherTenantsIssuer) => {
            iss = keys
                .disabled
                .as_ref()
                .map_or_else(|| "tenant-other".to_owned(), |(k, _)| k.clone());
            if iss == keys.live.0 {
                iss = "tenant-other".into();
            }
            secret = keys.live.1.clone();
        }
        Some(ConnectFlaw::Uninstalled) => {
            let (k, s) = keys
                .uninstalled
                .clone()
                .unwrap_or_else(|| ("tenant-gone".into(), "secret-gone".into()));
            iss = k;
            secret = s;
        }
        Some(ConnectFlaw::Expired) => {
            claims["iat"] = json!(now - 4000);
            claims["exp"] = json!(now - 3600);
        }
        Some(ConnectFlaw::NotYetValid) => {
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 3780);
        }
        Some(ConnectFlaw::MissingClaim(which)) => {
            let name = ["iss", "iat", "exp"][usize::from(*which % 3)];
            if let Some(map) = claims.as_object_mut() {
                map.remove(name);
            }
        }
        Some(ConnectFlaw::Algorithm(kind)) => {
            claims["iss"] = json!(iss);
            token = Some(match kind % 3 {
                0 => jsonwebtoken::encode(
                    &Header::new(Algorithm::HS512),
                    &claims,
                    &EncodingKey::from_secret(secret.as_bytes())
                        .unwrap_or_else(|e| panic!("HS512 key: {e}")),
                )
                .unwrap_or_else(|e| panic!("HS512: {e}")),
                1 => unsigned(&claims),
                _ => {
                    let good = hs256(&claims, &secret);
                    let header =
                        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
                    let rest = good.split_once('.').map_or("", |(_, rest)| rest);
                    format!("{header}.{rest}")
                }
            });
        }
        Some(ConnectFlaw::Tampered) => {
            claims["iss"] = json!(iss);
            let good = hs256(&claims, &secret);
            let mut other = claims.clone();
            other["exp"] = json!(now + 100_000);
            token = Some(tampered(&good, &other));
        }
        Some(ConnectFlaw::Truncated) => {
            claims["iss"] = json!(iss);
            let good = hs256(&claims, &secret);
            token = Some(
                good.get(..good.len().saturating_sub(5))
                    .unwrap_or("")
                    .to_owned(),
            );
        }
    }
    if claims.get("iss").is_some() {
        claims["iss"] = json!(iss);
    }
    let token = token.unwrap_or_else(|| hs256(&claims, &secret));
    let proof = match (&spec.flaw, &spec.qsh) {
        (Some(_), _) => None,
        (None, Qsh::Context) if !spec.long_lived && matches!(spec.sub, 1 | 2) => {
            Some(Proof::ConnectContext(verified_tenant))
        }
        (None, Qsh::Context) => None,
        (None, _) if qsh_is_this => Some(Proof::ConnectRequest(verified_tenant)),
        (None, _) => None,
    };
    (token, proof)
}

fn install_token(spec: &InstallSpec, keys: &Keyring, this_qsh: &str) -> (String, Option<Proof>) {
    let now = keys.now;
    let mut claims =
        json!({"iss": spec.iss, "aud": [keys.app_base_url], "iat": now, "exp": now + 180});
    let (qsh, qsh_is_this) = qsh_claim(&spec.qsh, keys, this_qsh);
    if let Some(qsh) = qsh {
        claims["qsh"] = json!(qsh);
    }
    let mut kid = Some(INSTALL_KID);
    let mut pem = INSTALL_PRIVATE_PEM;
    let mut token = None;
    match spec.flaw {
        None => {}
        Some(InstallFlaw::WrongAudience) => {
            claims["aud"] = json!(["https://other-app.example.com"])
        }
        Some(InstallFlaw::NoAudience) => {
            if let Some(map) = claims.as_object_mut() {
                map.remove("aud");
            }
        }
        Some(InstallFlaw::Expired) => {
            claims["iat"] = json!(now - 4000);
            claims["exp"] = json!(now - 3600);
        }
        Some(InstallFlaw::NotYetValid) => {
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 3780);
        }
        Some(InstallFlaw::UnknownKid) => kid = Some("no-such-kid"),
        Some(InstallFlaw::NoKid) => kid = None,
        Some(InstallFlaw::OtherKey) => pem = FORGE_PRIVATE,
        Some(InstallFlaw::Hs256) => token = Some(hs256(&claims, &keys.live.1)),
        Some(InstallFlaw::Tampered) => {
            let good = rs256(kid, &claims, pem);
            let mut other = claims.clone();
            other["iss"] = json!(format!("{}-x", spec.iss));
            token = Some(tampered(&good, &other));
        }
    }
    let token = token.unwrap_or_else(|| rs256(kid, &claims, pem));
    let proof = match spec.flaw {
        None => (qsh_is_this && keys.installs_trusted).then(|| Proof::Install(spec.iss.clone())),
        // Refused as an install, but these claims signed HS256 with the live tenant's secret are
        // that tenant's genuine request token where one is taken.
        Some(InstallFlaw::Hs256) => (qsh_is_this && spec.iss == keys.live.0)
            .then(|| Proof::ConnectRequest(keys.live.0.clone())),
        Some(_) => None,
    };
    (token, proof)
}

fn forge_token(spec: &ForgeSpec, keys: &Keyring) -> String {
    let now = keys.now;
    let api = forge_api_base_url();
    let mut claims = json!({
        "iss": "forge/invocation-token",
        "aud": FORGE_APP_ID,
        "iat": now - 5, "nbf": now - 5, "exp": now + 55,
        "jti": format!("jti-{}", spec.jti),
        "app": {
            "id": FORGE_APP_ID, "version": "12",
            "installationId": FORGE_INSTALLATION,
            "apiBaseUrl": api,
            "environment": {"type": "DEVELOPMENT", "id": "c5d6e7f8-0000-4000-8000-000000000001"},
            "module": {"type": "core:endpoint", "key": "remote"},
            "installation": {"contexts": [{"name": "confluence", "apiBaseUrl": api,
                                           "cloudId": FORGE_CLOUD_ID}]}
        },
        "context": {"cloudId": FORGE_CLOUD_ID}
    });
    if spec.principal {
        claims["principal"] = json!(keys.users[usize::from(spec.user_is_bob)]);
    }
    let mut kid = FORGE_KID;
    let mut pem = FORGE_PRIVATE;
    let mut hs = false;
    let mut tamper = false;
    match spec.flaw {
        None => {}
        Some(ForgeFlaw::WrongAudience) => {
            claims["aud"] = json!("ari:cloud:ecosystem::app/11111111-2222-3333-4444-555555555555")
        }
        Some(ForgeFlaw::OtherApp) => {
            claims["app"]["id"] =
                json!("ari:cloud:ecosystem::app/11111111-2222-3333-4444-555555555555")
        }
        Some(ForgeFlaw::WrongIssuer) => claims["iss"] = json!("forge/other"),
        Some(ForgeFlaw::Expired) => {
            claims["iat"] = json!(now - 4000);
            claims["nbf"] = json!(now - 4000);
            claims["exp"] = json!(now - 3600);
        }
        Some(ForgeFlaw::NotYetValid) => {
            claims["nbf"] = json!(now + 3600);
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 3700);
        }
        Some(ForgeFlaw::NoJti) => {
            if let Some(map) = claims.as_object_mut() {
                map.remove("jti");
            }
        }
        Some(ForgeFlaw::UnknownKid) => {
            kid = FORGE_OTHER_KID;
            pem = FORGE_OTHER_PRIVATE;
        }
        Some(ForgeFlaw::OtherKey) => pem = FORGE_OTHER_PRIVATE,
        Some(ForgeFlaw::Hs256) => hs = true,
        Some(ForgeFlaw::NotAnInstallation) => {
            claims["app"]["installationId"] = json!("0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4")
        }
        Some(ForgeFlaw::HostNotAllowed) => {
            let evil = format!("https://api.evil.example/ex/confluence/{FORGE_CLOUD_ID}");
            claims["app"]["apiBaseUrl"] = json!(evil);
            claims["app"]["installation"]["contexts"][0]["apiBaseUrl"] = json!(evil);
        }
        Some(ForgeFlaw::NoSite) => {
            claims["app"]["apiBaseUrl"] = json!("https://api.atlassian.com/somewhere");
            claims["app"]["installation"] = json!({"contexts": []});
        }
        Some(ForgeFlaw::Tampered) => tamper = true,
    }
    if hs {
        return hs256(&claims, "forge-secret");
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(pem).unwrap_or_else(|e| panic!("Forge key: {e}"));
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap_or_else(|e| panic!("FIT: {e}"));
    if tamper {
        let mut other = claims.clone();
        other["app"]["installationId"] =
            json!("ari:cloud:ecosystem::installation/11111111-2222-3333-4444-555555555555");
        return tampered(&token, &other);
    }
    token
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Keeps what lambda_http can turn into a URI: a character `http::Uri` refuses in a query is
/// percent-encoded (on AWS the query stays as the client encoded it; lambda_http panics on such a
/// character before any of the app's code runs, see the README's "Bad input").
pub fn uri_safe_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for c in query.chars() {
        let ok = c != '#' && http::Uri::try_from(format!("/?a{c}")).is_ok();
        if ok {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Text that is a valid header value (visible ASCII, tabs, and non-ASCII as UTF-8).
pub fn header_safe(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\t' || (*c >= ' ' && *c != '\u{7f}'))
        .collect()
}

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &[T]) -> prop::sample::Select<T> {
    prop::sample::select(items.to_vec())
}

fn owned(items: &[&str]) -> prop::sample::Select<String> {
    prop::sample::select(items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
}

/// A method: mostly `own`, else another standard one, a lower-case one or an extension.
pub fn method(own: &'static str) -> BoxedStrategy<String> {
    method_unboxed(own).boxed()
}

fn method_unboxed(own: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        12 => Just(own.to_owned()),
        2 => owned(&["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]),
        1 => owned(&["post", "get", "put", "FOO", "M-SEARCH", "PROPFIND"]),
    ]
}

/// A path segment where a route has a parameter (a page id): mostly a plausible id, else
/// anything.
pub fn segment() -> BoxedStrategy<String> {
    segment_unboxed().boxed()
}

fn segment_unboxed() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => "[1-9][0-9]{0,9}",
        3 => owned(&[
            "", "0", "00042", "-1", "18446744073709551616", "%34%32", "42%00", "4%2F2", "..", ".",
            "abc", "%zz", "%", "42 ", "é", "\u{202e}42", "42;x", "42.json", "0x2a", "+42", "4e2",
        ]),
        1 => "[0-9]{200,400}",
        1 => ".{0,20}",
    ]
}

/// Ways a route's path is twisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Twist {
    /// Left alone.
    None,
    /// `/` at the end.
    TrailingSlash,
    /// `//` instead of the `n`-th `/`.
    DoubleSlash(usize),
    /// `/.` or `/..` segments inserted.
    DotSegment(bool),
    /// Upper case.
    Upper,
    /// The `n`-th character percent-encoded (upper or lower hex).
    Encode(usize, bool),
    /// A segment appended.
    Append(String),
    /// A prefix (a stage name, a base path).
    Prefix(String),
    /// `%2F` instead of every `/` but the first.
    EncodedSlashes,
    /// Repeated to a long path.
    Long(usize),
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        40 => Just(Twist::None),
        1 => Just(Twist::TrailingSlash),
        1 => (0usize..6).prop_map(Twist::DoubleSlash),
        1 => any::<bool>().prop_map(Twist::DotSegment),
        1 => Just(Twist::Upper),
        1 => (0usize..40, any::<bool>()).prop_map(|(i, u)| Twist::Encode(i, u)),
        1 => prop_oneof![segment(), Just("..".to_owned())].prop_map(Twist::Append),
        1 => owned(&["/prod", "/$default", "/understudy", "/wiki", "/.", "/%2e"]).prop_map(Twist::Prefix),
        1 => Just(Twist::EncodedSlashes),
        1 => (50usize..400).prop_map(Twist::Long),
    ]
}

fn apply(path: &str, twist: &Twist) -> String {
    match twist {
        Twist::None => path.to_owned(),
        Twist::TrailingSlash => format!("{path}/"),
        Twist::DoubleSlash(n) => {
            let mut seen = 0;
            let mut out = String::new();
            for c in path.chars() {
                out.push(c);
                if c == '/' {
                    if seen == *n {
                        out.push('/');
                    }
                    seen += 1;
                }
            }
            out
        }
        Twist::DotSegment(dots) => {
            let dot = if *dots { "/../x" } else { "/." };
            match path.rfind('/') {
                Some(i) => format!("{}{dot}{}", &path[..i], &path[i..]),
                None => format!("{dot}{path}"),
            }
        }
        Twist::Upper => path.to_ascii_uppercase(),
        Twist::Encode(n, upper) => {
            let chars: Vec<char> = path.chars().collect();
            if chars.is_empty() {
                return path.to_owned();
            }
            // Never the leading `/`.
            let at = 1 + n % chars.len().saturating_sub(1).max(1);
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == at {
                        let mut buf = [0u8; 4];
                        c.encode_utf8(&mut buf)
                            .bytes()
                            .map(|b| {
                                if *upper {
                                    format!("%{b:02X}")
                                } else {
                                    format!("%{b:02x}")
                                }
                            })
                            .collect()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }
        Twist::Append(segment) => format!("{path}/{segment}"),
        Twist::Prefix(prefix) => format!("{prefix}{path}"),
        Twist::EncodedSlashes => match path.strip_prefix('/') {
            Some(rest) => format!("/{}", rest.replace('/', "%2F")),
            None => path.replace('/', "%2F"),
        },
        Twist::Long(n) => format!("{path}{}", "/a".repeat(*n)),
    }
}

fn fill(pattern: &str, value: &str) -> String {
    pattern
        .split('/')
        .map(|part| {
            if part.starts_with('{') && part.ends_with('}') {
                value
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A query: mostly none, else parameters the routes read (and `jwt`) with plausible and odd
/// values, or any text; always something lambda_http can read ([`uri_safe_query`]).
pub fn query() -> BoxedStrategy<String> {
    query_unboxed().boxed()
}

fn query_unboxed() -> impl Strategy<Value = String> {
    let name = owned(&[
        "a", "pageId", "page", "before", "after", "outcome", "actor", "format", "xdm_e", "cp",
        "lic", "jwt", "JWT", "j%77t", "", "a[]", "%zz", "é", "+",
    ]);
    let value = prop_oneof![
        owned(&[
            "",
            "42",
            "csv",
            "json",
            "xml",
            "app",
            "557058:alice",
            "edited",
            "1:42",
            "x:1",
            "%",
            "%zz",
            "+",
            "a%20b",
            "%00",
            "-1",
            "1780000000000:42",
        ]),
        "[ -~]{0,20}",
        "x{2000,4000}",
    ];
    let pairs =
        prop::collection::vec((name, proptest::option::of(value)), 1..5).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k,
                })
                .collect::<Vec<_>>()
                .join("&")
        });
    prop_oneof![
        5 => Just(String::new()),
        4 => pairs,
        1 => ".{0,80}",
    ]
    .prop_map(|q| uri_safe_query(&q))
}

/// `Content-Type`: mostly JSON, else none, JSON with parameters, odd spellings, or another type.
pub fn content_type() -> BoxedStrategy<Option<String>> {
    content_type_unboxed().boxed()
}

fn content_type_unboxed() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        6 => Just(Some("application/json".to_owned())),
        2 => Just(None),
        2 => owned(&[
            "application/json; charset=utf-8", "APPLICATION/JSON", "application/json;", "",
            "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
            "application/jsonx", " application/json", "application/json, text/plain",
            "application/problem+json",
        ]).prop_map(Some),
    ]
}

/// Extra headers: repeated names (`authorization`, `content-type`, Forge's token headers), odd
/// values, not ASCII, and oversized ones (near API Gateway's 10 KB).
pub fn headers() -> BoxedStrategy<Vec<(String, String)>> {
    headers_unboxed().boxed()
}

fn headers_unboxed() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        owned(&[
            "authorization",
            "content-type",
            "x-forge-oauth-system",
            "x-forge-oauth-user",
            "content-length",
            "transfer-encoding",
            "x-forwarded-for",
            "x-forwarded-proto",
            "cookie",
            "accept",
            "user-agent",
            "x-amzn-trace-id",
            "origin",
            "content-encoding",
        ]),
        "x-[a-z0-9-]{1,12}",
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        owned(&[
            "application/json",
            "text/plain",
            "JWT",
            "JWT ",
            "Bearer",
            "Bearer a.b.c",
            "JWT a.b.c",
            "gzip",
            "chunked",
            "0",
            "99999999999",
            "-1",
            "https",
            "é",
            "\u{fffd}",
        ]),
        "[a-z]{8000,9500}",
        "[\u{a0}-\u{2fff}]{0,20}",
    ];
    prop_oneof![
        1 => Just(Vec::new()),
        1 => prop::collection::vec((name, value.prop_map(|v| header_safe(&v))), 1..4),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,24}".prop_map(Value::String),
        owned(&[
            "42",
            "0",
            "",
            "tenant-a",
            "tenant-d",
            "557058:alice",
            "<p>x</p>",
            "page",
            "blogpost",
            "confluence",
            "jira",
            "understudy",
            "installed",
            "https://acme.atlassian.net/wiki",
            FORGE_INSTALLATION,
            "avi:confluence:updated:page",
            "avi:confluence:created:page",
            "avi:forge:installed:app",
            "impersonate",
            "grant",
            "skip",
            "page_updated",
            "\u{0}",
            "\u{202e}",
        ])
        .prop_map(Value::String),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        owned(&[
            "clientKey",
            "sharedSecret",
            "baseUrl",
            "productType",
            "key",
            "page",
            "content",
            "id",
            "idAsString",
            "version",
            "number",
            "title",
            "spaceKey",
            "space",
            "edit",
            "append",
            "prepend",
            "replace",
            "find",
            "with",
            "set_title",
            "document",
            "rules",
            "pageId",
            "eventType",
            "payload",
            "atlassianId",
            "selfGenerated",
            "restricted_pages",
            "events",
            "userAccountId",
            "installationId",
            "type",
            "timestamp",
            "",
        ]),
        ".{0,8}",
    ]
}

/// Any JSON value: scalars of every kind, arrays and objects a few levels deep with the field
/// names the routes read.
pub fn json_value() -> BoxedStrategy<Value> {
    json_value_unboxed().boxed()
}

fn json_value_unboxed() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// A change to a route's own payload.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// The value at one of its paths replaced.
    Set(usize, Value),
    /// The field at one of its paths removed.
    Remove(usize),
    /// A field added at the top.
    Add(String, Value),
    /// Wrapped in an array.
    WrapArray,
    /// Wrapped as `{"payload": ...}`.
    Nest,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), json_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => (json_key(), json_value()).prop_map(|(k, v)| Mutation::Add(k, v)),
        1 => Just(Mutation::WrapArray),
        1 => Just(Mutation::Nest),
    ]
}

fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                out.push(here.clone());
                pointers(child, here, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let here = format!("{at}/{i}");
                out.push(here.clone());
                pointers(child, here, out);
            }
        }
        _ => {}
    }
}

/// `template` changed by `mutations`, in order.
pub fn mutate(template: &Value, mutations: &[Mutation]) -> Value {
    let mut value = template.clone();
    for m in mutations {
        let mut paths = Vec::new();
        pointers(&value, String::new(), &mut paths);
        match m {
            Mutation::Set(i, new) => {
                if let Some(path) = paths.get(i % paths.len().max(1))
                    && let Some(slot) = value.pointer_mut(path)
                {
                    *slot = new.clone();
                }
            }
            Mutation::Remove(i) => {
                if let Some(path) = paths.get(i % paths.len().max(1))
                    && let Some((parent, last)) = path.rsplit_once('/')
                {
                    let last = last.replace("~1", "/").replace("~0", "~");
                    match value.pointer_mut(parent) {
                        Some(Value::Object(map)) => {
                            map.remove(&last);
                        }
                        Some(Value::Array(items)) => {
                            if let Ok(i) = last.parse::<usize>()
                                && i < items.len()
                            {
                                items.remove(i);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Mutation::Add(key, new) => {
                if let Value::Object(map) = &mut value {
                    map.insert(key.clone(), new.clone());
                }
            }
            Mutation::WrapArray => value = json!([value]),
            Mutation::Nest => value = json!({"payload": value, "context": {}}),
        }
    }
    value
}

fn text(text: String) -> Payload {
    Payload::Text {
        text,
        base64: false,
    }
}

/// Bodies of every shape, around `templates` (the routes' own payloads, valid for the fixtures):
/// a template whole or mutated, cut short, with bytes that are not UTF-8, padded to just over each
/// of `limits` (the routes' body limits), any JSON, any text, any bytes, JSON nested too deep,
/// numbers out of range, lone surrogates, duplicate fields, a byte-order mark; sometimes sent
/// base64-encoded.
pub fn payload(templates: Vec<Value>, limits: Vec<usize>) -> BoxedStrategy<Payload> {
    payload_unboxed(templates, limits).boxed()
}

fn payload_unboxed(templates: Vec<Value>, limits: Vec<usize>) -> impl Strategy<Value = Payload> {
    let templates = if templates.is_empty() {
        vec![json!({})]
    } else {
        templates
    };
    let limits = if limits.is_empty() {
        vec![1024]
    } else {
        limits
    };
    let template = pick(&templates);
    let whole = template.clone().prop_map(|t| text(t.to_string()));
    let mutated = (template.clone(), prop::collection::vec(mutation(), 1..3))
        .prop_map(|(t, m)| text(mutate(&t, &m).to_string()));
    let truncated = (template.clone(), any::<prop::sample::Index>()).prop_map(|(t, at)| {
        let bytes = t.to_string().into_bytes();
        let cut = at.index(bytes.len().max(1));
        Payload::Bytes(bytes.get(..cut).unwrap_or_default().to_vec())
    });
    let not_utf8 = (
        template.clone(),
        any::<prop::sample::Index>(),
        pick(&[
            vec![0xff],
            vec![0xc3],
            vec![0xed, 0xa0, 0x80],
            vec![0xf4, 0x90, 0x80, 0x80],
            vec![0x80, 0x80],
            vec![0xfe, 0xff],
            vec![0x00],
        ]),
    )
        .prop_map(|(t, at, bad)| {
            let mut bytes = t.to_string().into_bytes();
            let i = at.index(bytes.len().max(1)).min(bytes.len());
            bytes.splice(i..i, bad);
            Payload::Bytes(bytes)
        });
    let oversized = (template, pick(&limits), -1i64..=1).prop_map(|(t, limit, delta)| {
        let mut body = t.to_string();
        let want = i64::try_from(limit)
            .unwrap_or(i64::MAX)
            .saturating_add(delta)
            .max(0);
        let want = usize::try_from(want).unwrap_or(limit);
        if body.len() < want {
            body.push_str(&" ".repeat(want - body.len()));
        }
        text(body)
    });
    let odd = owned(&[
        "1e400",
        "-0",
        "[",
        "{",
        "}",
        "{\"a\":1,\"a\":2}",
        "\"\\ud800\"",
        "\"\\udc00\\ud800\"",
        "null",
        "true",
        "[]",
        "{}",
        "\u{feff}{}",
        "{\"a\":\"\\u0000\"}",
        "0",
        "\"\"",
        "18446744073709551616",
        "-9223372036854775809",
        "1.7976931348623157e309",
        "NaN",
        "Infinity",
        "{\"a\":1}{\"b\":2}",
        "{\"a\":1} x",
        "[1,]",
        "{\"a\":1,}",
        "'a'",
        "{a:1}",
        "\"\\x41\"",
        " ",
        "\n\n",
        "{\"__proto__\":{}}",
    ])
    .prop_map(text);
    let deep = (1usize..3000, any::<bool>()).prop_map(|(depth, objects)| {
        if objects {
            text(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)))
        } else {
            text(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
        }
    });
    let body = prop_oneof![
        2 => Just(Payload::None),
        1 => Just(text(String::new())),
        8 => whole,
        8 => mutated,
        3 => truncated,
        2 => not_utf8,
        2 => oversized,
        3 => json_value().prop_map(|v| text(v.to_string())),
        2 => odd,
        1 => deep,
        1 => ".{0,200}".prop_map(text),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Bytes),
    ];
    (body, prop::bool::weighted(0.1)).prop_map(|(body, base64)| match body {
        Payload::Text { text, .. } => Payload::Text { text, base64 },
        other => other,
    })
}

fn scheme(connect: bool) -> impl Strategy<Value = Scheme> {
    let usual = if connect { Scheme::Jwt } else { Scheme::Bearer };
    prop_oneof![
        12 => Just(usual),
        1 => pick(&[
            Scheme::Jwt, Scheme::Bearer, Scheme::JwtLower, Scheme::BearerLower,
            Scheme::JwtTwoSpaces, Scheme::Bare,
        ]),
    ]
}

fn qsh_pick() -> impl Strategy<Value = Qsh> {
    prop_oneof![
        12 => Just(Qsh::ThisRequest),
        2 => (method("POST"), prop_oneof![segment().prop_map(|s| format!("/{s}")), owned(&[
            "/installed", "/enabled", "/webhooks/page_updated", "/api/pages/42/edits",
            "/api/admin/settings", "/ui/page", "/ui/admin",
        ])], query()).prop_map(|(method, path, query)| Qsh::Other { method, path, query }),
        1 => Just(Qsh::Missing),
        1 => "[0-9a-f]{0,64}".prop_map(Qsh::Text),
    ]
}

fn connect_flaw() -> impl Strategy<Value = ConnectFlaw> {
    prop_oneof![
        Just(ConnectFlaw::WrongSecret),
        Just(ConnectFlaw::UnknownIssuer),
        Just(ConnectFlaw::OtherTenantsIssuer),
        Just(ConnectFlaw::Uninstalled),
        Just(ConnectFlaw::Expired),
        Just(ConnectFlaw::NotYetValid),
        (0u8..3).prop_map(ConnectFlaw::MissingClaim),
        (0u8..3).prop_map(ConnectFlaw::Algorithm),
        Just(ConnectFlaw::Tampered),
        Just(ConnectFlaw::Truncated),
    ]
}

/// A Connect token from the live or the disabled tenant, genuine more often than not, else with
/// one flaw; in the header mostly. `context`: mostly a context token (`context-qsh`), else mostly
/// one bound to a request.
pub fn connect_spec(context: bool) -> BoxedStrategy<ConnectSpec> {
    connect_spec_unboxed(context).boxed()
}

fn connect_spec_unboxed(context: bool) -> impl Strategy<Value = ConnectSpec> {
    let (request, ctx) = if context { (1, 6) } else { (6, 1) };
    (
        prop_oneof![4 => Just(TenantPick::Live), 1 => Just(TenantPick::Disabled)],
        prop_oneof![request => qsh_pick(), ctx => Just(Qsh::Context)],
        prop_oneof![6 => Just(1u8), 2 => Just(2u8), 1 => Just(0u8), 1 => Just(3u8)],
        prop::bool::weighted(0.1),
        proptest::option::weighted(0.4, connect_flaw()),
        scheme(true),
        prop_oneof![8 => Just(Place::Header), 2 => Just(Place::Query), 1 => Just(Place::Both)],
    )
        .prop_map(
            |(tenant, qsh, sub, long_lived, flaw, scheme, place)| ConnectSpec {
                tenant,
                qsh,
                sub,
                long_lived,
                flaw,
                scheme,
                place,
            },
        )
}

/// A signed install from the live tenant's clientKey (or another), genuine about half the time.
pub fn install_spec() -> BoxedStrategy<InstallSpec> {
    install_spec_unboxed().boxed()
}

fn install_spec_unboxed() -> impl Strategy<Value = InstallSpec> {
    let flaw = prop_oneof![
        Just(InstallFlaw::WrongAudience),
        Just(InstallFlaw::NoAudience),
        Just(InstallFlaw::Expired),
        Just(InstallFlaw::NotYetValid),
        Just(InstallFlaw::UnknownKid),
        Just(InstallFlaw::NoKid),
        Just(InstallFlaw::OtherKey),
        Just(InstallFlaw::Hs256),
        Just(InstallFlaw::Tampered),
    ];
    (
        prop_oneof![
            6 => Just(LIVE.0.to_owned()),
            2 => Just("tenant-new".to_owned()),
            1 => Just(DISABLED.0.to_owned()),
            1 => "[ -~]{0,12}",
        ],
        qsh_pick(),
        proptest::option::weighted(0.4, flaw),
        scheme(true),
        prop_oneof![8 => Just(Place::Header), 1 => Just(Place::Query), 1 => Just(Place::Both)],
    )
        .prop_map(|(iss, qsh, flaw, scheme, place)| InstallSpec {
            iss,
            qsh,
            flaw,
            scheme,
            place,
        })
}

/// A Forge invocation, genuine about half the time, by a user or by the app.
pub fn forge_spec() -> BoxedStrategy<ForgeSpec> {
    forge_spec_unboxed().boxed()
}

fn forge_spec_unboxed() -> impl Strategy<Value = ForgeSpec> {
    let flaw = prop_oneof![
        Just(ForgeFlaw::WrongAudience),
        Just(ForgeFlaw::OtherApp),
        Just(ForgeFlaw::WrongIssuer),
        Just(ForgeFlaw::Expired),
        Just(ForgeFlaw::NotYetValid),
        Just(ForgeFlaw::NoJti),
        Just(ForgeFlaw::UnknownKid),
        Just(ForgeFlaw::OtherKey),
        Just(ForgeFlaw::Hs256),
        Just(ForgeFlaw::NotAnInstallation),
        Just(ForgeFlaw::HostNotAllowed),
        Just(ForgeFlaw::NoSite),
        Just(ForgeFlaw::Tampered),
    ];
    (
        proptest::option::weighted(0.4, flaw),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.85),
        prop::bool::weighted(0.85),
        any::<u32>(),
        scheme(false),
    )
        .prop_map(
            |(flaw, principal, user_is_bob, system_token, user_token, jti, scheme)| ForgeSpec {
                flaw,
                principal,
                user_is_bob,
                system_token,
                user_token,
                jti,
                scheme,
            },
        )
}

/// Any credential; `weights` are those of none, garbage, Connect, signed install and Forge.
pub fn credential(weights: [u32; 5]) -> BoxedStrategy<Credential> {
    credential_unboxed(weights).boxed()
}

fn credential_unboxed(weights: [u32; 5]) -> impl Strategy<Value = Credential> {
    let garbage = (
        scheme(true),
        prop_oneof![
            "[ -~]{0,120}",
            "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,60}",
            "[A-Za-z0-9_.-]{8000,9000}",
            ".{0,40}",
        ],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(scheme, token, in_query)| Credential::Garbage {
            scheme,
            token: if in_query {
                uri_safe_query(&token).replace('&', "%26")
            } else {
                header_safe(&token)
            },
            in_query,
        });
    let [none, junk, connect, install, forge] = weights;
    prop_oneof![
        none => Just(Credential::None),
        junk => garbage,
        connect => prop_oneof![connect_spec(false), connect_spec(true)].prop_map(Credential::Connect),
        install => install_spec().prop_map(Credential::Install),
        forge => forge_spec().prop_map(Credential::Forge),
    ]
}

/// What a route takes as proof of who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    /// Nothing (the descriptor) or a proof it does not write with.
    Nothing,
    /// A signed install.
    Install,
    /// A Connect token bound to the request.
    RequestToken,
    /// A Connect context token.
    ContextToken,
    /// A Forge invocation.
    Forge,
    /// A Connect context token or a Forge invocation by a user (the app's own API).
    ContextOrForge,
}

/// The kind of credential `takes` names, genuine or flawed.
pub fn credential_for(takes: Takes) -> BoxedStrategy<Credential> {
    credential_for_unboxed(takes).boxed()
}

fn credential_for_unboxed(takes: Takes) -> impl Strategy<Value = Credential> {
    let context = || connect_spec(true).prop_map(Credential::Connect);
    let forge = || forge_spec().prop_map(Credential::Forge);
    match takes {
        Takes::Nothing => credential([1, 1, 2, 1, 1]).boxed(),
        Takes::Install => install_spec().prop_map(Credential::Install).boxed(),
        Takes::RequestToken => connect_spec(false).prop_map(Credential::Connect).boxed(),
        Takes::ContextToken => context().boxed(),
        Takes::Forge => forge().boxed(),
        Takes::ContextOrForge => prop_oneof![3 => context(), 2 => forge()].boxed(),
    }
}

/// A route to aim at: its method and path pattern (`{name}` is one segment), what it takes as
/// proof, its own payloads (valid for the fixtures) and its body limit.
#[derive(Debug, Clone)]
pub struct Target {
    /// The method.
    pub method: &'static str,
    /// The path pattern.
    pub path: &'static str,
    /// What the route takes as proof.
    pub takes: Takes,
    /// The route's own payloads.
    pub templates: Vec<Value>,
    /// The route's body limit.
    pub limit: usize,
}

/// A whole request. Mostly aimed at one of `targets`: its method (else another), its path with a
/// [`segment`] for a parameter (twisted now and then), a [`query`], a [`content_type`], extra
/// [`headers`], a [`payload`] around its templates (sometimes another route's), and mostly the
/// kind of credential it takes ([`credential_for`], genuine or flawed), else any. Now and then a
/// stray request to any path.
pub fn shot(targets: Vec<Target>) -> BoxedStrategy<Shot> {
    shot_unboxed(targets).boxed()
}

fn shot_unboxed(targets: Vec<Target>) -> impl Strategy<Value = Shot> {
    let everything: Vec<Value> = targets.iter().flat_map(|t| t.templates.clone()).collect();
    let limits: Vec<usize> = targets.iter().map(|t| t.limit).collect();
    let n = targets.len().max(1);
    let (all, all_limits) = (everything.clone(), limits.clone());
    let aimed = (0..n).prop_flat_map(move |i| {
        let target = targets[i].clone();
        let own = if target.templates.is_empty() {
            all.clone()
        } else {
            target.templates.clone()
        };
        let pattern = target.path;
        (
            method(target.method),
            segment(),
            twist(),
            query(),
            content_type(),
            headers(),
            prop_oneof![
                5 => payload(own, vec![target.limit]),
                1 => payload(all.clone(), all_limits.clone()),
            ],
            prop_oneof![
                3 => credential_for(target.takes),
                2 => credential([1, 1, 3, 2, 2]),
            ],
        )
            .prop_map(
                move |(method, value, twist, query, content_type, headers, payload, credential)| {
                    Shot {
                        method,
                        path: apply(&fill(pattern, &value), &twist),
                        query,
                        content_type,
                        headers,
                        payload,
                        credential,
                    }
                },
            )
    });
    // API Gateway's rawPath always starts with `/` (lambda_http panics on one that does not: it
    // would read it as part of the host).
    let stray = (
        method("GET"),
        prop_oneof!["/[a-z_/{}.%-]{0,40}", "/.{0,40}"],
        query(),
        content_type(),
        headers(),
        payload(everything, limits),
        credential([1, 1, 3, 2, 2]),
    )
        .prop_map(
            |(method, path, query, content_type, headers, payload, credential)| Shot {
                method,
                path,
                query,
                content_type,
                headers,
                payload,
                credential,
            },
        );
    prop_oneof![12 => aimed, 1 => stray]
}

// ---------------------------------------------------------------------------------------------
// The routes' own payloads

/// Signed installs' payloads: the live tenant's (a new secret, once with a Forge installation to
/// link), a new tenant's.
pub fn install_payloads() -> Vec<Value> {
    let mut with_forge = install_payload(LIVE.0, "secret-new");
    with_forge["installationId"] = json!(FORGE_INSTALLATION);
    vec![
        install_payload(LIVE.0, "secret-new"),
        install_payload("tenant-new", "secret-new"),
        with_forge,
    ]
}

/// `enabled` and `disabled` payloads.
pub fn lifecycle_payloads() -> Vec<Value> {
    vec![
        json!({"key": "understudy", "clientKey": LIVE.0, "eventType": "enabled",
               "baseUrl": crate::install::SITE_BASE_URL, "productType": "confluence"}),
        json!({"key": "understudy", "clientKey": DISABLED.0, "eventType": "disabled"}),
        json!({}),
    ]
}

/// Forge's lifecycle events and scheduled trigger.
pub fn forge_lifecycle_events() -> Vec<Value> {
    vec![
        json!({"eventType": "avi:forge:installed:app", "context": {"cloudId": FORGE_CLOUD_ID}}),
        json!({"payload": {"eventType": "avi:forge:upgraded:app"}, "context": {}}),
        json!({"context": {"cloudId": FORGE_CLOUD_ID}, "contextToken": "x"}),
    ]
}

/// Page events as Confluence sends them.
pub fn page_events() -> Vec<Value> {
    vec![
        json!({"userAccountId": ALICE, "accountType": "customer", "updateTrigger": "edit_page",
               "suppressNotifications": false,
               "page": {"idAsString": "42", "id": 42, "title": "Release 1.0", "spaceKey": "DOCS",
                        "spaceId": 1149861892, "contentType": "page", "version": 3,
                        "creatorAccountId": ALICE, "lastModifierAccountId": ALICE,
                        "creationDate": 1631605030794_i64, "modificationDate": 1631606188966_i64,
                        "self": "https://acme.atlassian.net/wiki/spaces/DOCS/pages/42"},
               "timestamp": 1631606188983_i64}),
        json!({"userAccountId": ALICE, "timestamp": 1631606188983_i64,
               "content": {"idAsString": "7", "id": "7", "title": "x", "spaceKey": "DOCS"}}),
    ]
}

/// Forge's page events, bare and wrapped.
pub fn forge_page_events() -> Vec<Value> {
    vec![
        json!({"eventType": "avi:confluence:updated:page", "atlassianId": ALICE,
               "selfGenerated": false,
               "content": {"id": "42", "type": "page", "title": "Release 1.0",
                           "space": {"key": "DOCS"}, "version": {"number": 3}}}),
        json!({"payload": {"eventType": "avi:confluence:created:page",
                           "content": {"id": 43, "type": "page"}},
               "context": {"cloudId": FORGE_CLOUD_ID},
               "retryContext": {"retryCount": 1}}),
    ]
}

/// Edit requests.
pub fn edit_requests() -> Vec<Value> {
    vec![
        json!({"edit": [{"append": "<p>Reviewed</p>"}]}),
        json!({"edit": [{"prepend": "<p>x</p>"}, {"set_title": "New"},
                        {"replace": {"find": "body", "with": "text"}}]}),
        json!({"edit": []}),
    ]
}

/// Settings documents to save.
pub fn settings_requests() -> Vec<Value> {
    vec![
        json!({"document": {"restricted_pages": "grant", "rules": [
            {"name": "footer", "events": ["page_created", "page_updated"], "spaces": ["DOCS"],
             "title": "^Release", "edit": [{"append": "<p>Reviewed</p>"}]}]}}),
        json!({"document": null}),
        json!({"document": {}}),
    ]
}

/// Retries of a parked page.
pub fn retry_requests() -> Vec<Value> {
    vec![json!({"pageId": "42"}), json!({"pageId": "7"})]
}

/// Every route of `function` in the route table is aimed at by one of `targets`.
///
/// # Panics
/// When a route is missed: a new route must get its fuzz target.
pub fn assert_every_route_is_aimed_at(
    function: understudy_web::routes::Function,
    targets: &[Target],
) {
    for route in understudy_web::routes::ROUTES
        .iter()
        .filter(|r| r.function == function)
    {
        assert!(
            targets
                .iter()
                .any(|t| t.path == route.path && t.method == route.method),
            "no fuzz target for {} {}",
            route.method,
            route.path
        );
    }
}

/// What every answer must be, whatever was asked: no 5xx (nothing is down on purpose); a
/// refusal a JSON object that `refusal_says` accepts (its `error`, say); a 401 naming the realm
/// (`WWW-Authenticate`); none of `secrets` in the body. Returns the status and the body.
pub fn check_answer(
    response: &understudy_web::ApiResponse,
    rendered: &Rendered,
    secrets: &[&str],
    refusal_says: impl Fn(&Value) -> bool,
) -> Result<(u16, String), TestCaseError> {
    let status = response.status().as_u16();
    let body = String::from_utf8_lossy(response.body()).into_owned();
    prop_assert!(status < 500, "{status} {body} for {rendered:?}");
    if status >= 400 {
        let json: Value = serde_json::from_str(&body).map_err(|e| {
            TestCaseError::fail(format!("a {status} that is not JSON ({e}): {body}"))
        })?;
        prop_assert!(refusal_says(&json), "{status} {body}");
    }
    if status == 401 {
        prop_assert!(response.headers().contains_key("www-authenticate"));
    }
    for secret in secrets {
        prop_assert!(!body.contains(secret), "{secret} in {body}");
    }
    Ok((status, body))
}

/// A runtime for one case: proptest runs its cases synchronously.
///
/// # Panics
/// When the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("a runtime for the case: {e}"))
}

/// A request with a genuine Connect token of the live tenant (no flaw, in the `Authorization`
/// header, `qsh` as given) carrying `body` as JSON: what each function's fuzz test sends once to
/// show that its harness lets a verified request through (the property is not vacuous).
pub fn genuine_connect_shot(method: &str, path: &str, body: &Value, qsh: Qsh) -> Shot {
    Shot {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        payload: Payload::Text {
            text: body.to_string(),
            base64: false,
        },
        credential: Credential::Connect(ConnectSpec {
            tenant: TenantPick::Live,
            qsh,
            sub: 1,
            long_lived: false,
            flaw: None,
            scheme: Scheme::Jwt,
            place: Place::Header,
        }),
    }
}
