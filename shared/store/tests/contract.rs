//! One contract, three adapters: the same assertions run against `MemoryStore`, `EmbeddedStore`
//! (a redb file in a temp dir, local key file) and `DynamoStore` (a DynamoDB-compatible server with
//! KMS, e.g. moto, at `UNDERSTUDY_TEST_AWS_ENDPOINT`; `bash tests/run.sh` starts it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use test_support::aws::aws_endpoint;
use test_support::{closed_port, tenant};
use understudy_domain::{
    AccountId, AccountRegistry, AccountsPage, ActedAs, AuditCursor, AuditLog, AuditRecord,
    CachedToken, ClientKey, ClosedAccountKey, EditOutcome, EditStrategy,
    FORGE_INSTALLATION_RETENTION_SECONDS, ForgeInstallation, ForgeInstallations, IdempotencyKey,
    IdempotencyMarks, InstallOutcome, InstallationId, Marked, MemoryStore,
    PARKED_JOB_RETENTION_SECONDS, PageId, ParkedJob, ParkedJobs, ParkedPage, REPORT_SLOTS,
    RateDecision, RateLimits, RateWindow, ScheduledPage, SettingsStore, StoreError, StoredAccount,
    SystemToken, TenantSettings, TenantState, TenantStore, TokenCache, TokenCacheKey,
    UNINSTALLED_RETENTION_SECONDS, report_slot,
};
use understudy_store::testing::{local_dynamo_store, local_kms_key, local_sdk_config};
use understudy_store::{
    DynamoConfig, DynamoStore, EmbeddedStore, KmsCipher, KmsConfig, LocalKeyCipher,
};

const RET: i64 = UNINSTALLED_RETENTION_SECONDS;
const FORGE_RET: i64 = FORGE_INSTALLATION_RETENTION_SECONDS;
const PARKED_RET: i64 = PARKED_JOB_RETENTION_SECONDS;
const T0: i64 = 1_800_000_000;

/// Every port at once, so one value exercises them all.
trait AllPorts:
    TenantStore
    + TokenCache
    + IdempotencyMarks
    + AuditLog
    + SettingsStore
    + RateLimits
    + ForgeInstallations
    + ParkedJobs
    + AccountRegistry
{
}
impl<
    T: TenantStore
        + TokenCache
        + IdempotencyMarks
        + AuditLog
        + SettingsStore
        + RateLimits
        + ForgeInstallations
        + ParkedJobs
        + AccountRegistry,
> AllPorts for T
{
}

/// How to read what an adapter really wrote, bypassing it.
enum Raw {
    /// In memory by design: nothing persisted to inspect.
    Nothing,
    File(PathBuf),
    Table {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
}

struct Backend {
    store: Arc<dyn AllPorts>,
    raw: Raw,
    /// Keeps a temp dir alive for the test's duration.
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

// ---------------------------------------------------------------------------------------------
// Backends

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::new()),
        raw: Raw::Nothing,
        _guard: None,
    }
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
    let raw = Raw::File(store.path().to_owned());
    Backend {
        store: Arc::new(store),
        raw,
        _guard: Some(Box::new(dir)),
    }
}

async fn dynamo_with_key(
    key_id: Option<String>,
    table: Option<String>,
) -> (Backend, String, String) {
    let (store, client, key_id, table) = local_dynamo_store(&aws_endpoint(), key_id, table).await;
    let backend = Backend {
        store: Arc::new(store),
        raw: Raw::Table {
            client,
            table: table.clone(),
        },
        _guard: None,
    };
    (backend, key_id, table)
}

async fn dynamo() -> Backend {
    dynamo_with_key(None, None).await.0
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn ck(s: &str) -> ClientKey {
    ClientKey::parse(s).unwrap()
}

fn token_key(account: &str) -> TokenCacheKey {
    TokenCacheKey::new(&AccountId::parse(account).unwrap(), "READ WRITE")
}

fn token(value: &str, expires_at: i64) -> CachedToken {
    CachedToken {
        access_token: SecretString::from(value),
        expires_at,
    }
}

fn mark(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

fn audit(client_key: &str, page: &str, at_ms: i64, job: &str) -> AuditRecord {
    AuditRecord {
        client_key: ck(client_key),
        page_id: PageId::parse(page).unwrap(),
        at_ms,
        version_before: Some(1),
        version_after: Some(2),
        acted_as: ActedAs::User(AccountId::parse("557058:user-1").unwrap()),
        strategy: EditStrategy::Impersonate,
        outcome: EditOutcome::Edited,
        reason: "restricted page, edited as an allowed user".into(),
        job_id: job.into(),
    }
}

fn jobs(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.job_id.as_str()).collect()
}

fn installation_id(id: &str) -> InstallationId {
    InstallationId::parse(format!("{}{id}", InstallationId::PREFIX)).unwrap()
}

/// An installation as a verified invocation at `at` shows it, carrying `token` issued at
/// `issued_at`. Its `tenant_key` is one no store may keep (stores resolve it themselves).
fn installation(id: &str, token: &str, issued_at: i64, at: i64) -> ForgeInstallation {
    ForgeInstallation {
        id: installation_id(id),
        tenant_key: ck("not-the-tenant-key"),
        app_id: "ari:cloud:ecosystem::app/00000000-aaaa-bbbb-cccc-000000000001".into(),
        cloud_id: "cloud-1".into(),
        api_base_url: "https://api.atlassian.com/ex/confluence/cloud-1".into(),
        system_token: SystemToken::received(SecretString::from(token), issued_at),
        created_at: at,
        updated_at: at,
    }
}

fn page(id: &str) -> PageId {
    PageId::parse(id).unwrap()
}

/// The job the queue would park for the tenant's page at `at_ms`: its JSON names an accountId.
fn parked_job(client_key: &str, page_id: &str, at_ms: i64, reason: &str) -> ParkedJob {
    ParkedJob {
        client_key: ck(client_key),
        page_id: page(page_id),
        at_ms,
        outcome: EditOutcome::Blocked,
        reason: reason.into(),
        dead_lettered: false,
        job: json!({
            "clientKey": client_key,
            "pageId": page_id,
            "user": "557058:parked-user",
            "attempt": 3
        })
        .to_string(),
    }
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn stored(id: &str, retrieved_at: i64, next_report_at: Option<i64>) -> StoredAccount {
    StoredAccount {
        account: account(id),
        retrieved_at,
        next_report_at,
        closed: false,
    }
}

/// A listing flagged closed (its erasure under way).
fn closed(id: &str, retrieved_at: i64, next_report_at: Option<i64>) -> StoredAccount {
    StoredAccount {
        closed: true,
        ..stored(id, retrieved_at, next_report_at)
    }
}

fn parked_pages(jobs: &[ParkedJob]) -> Vec<&str> {
    jobs.iter().map(|j| j.page_id.as_str()).collect()
}

/// Every field of two installations, the token's text included.
fn assert_same(a: &ForgeInstallation, b: &ForgeInstallation) {
    assert_eq!(a.id, b.id);
    assert_eq!(a.tenant_key, b.tenant_key);
    assert_eq!(
        (&a.app_id, &a.cloud_id, &a.api_base_url),
        (&b.app_id, &b.cloud_id, &b.api_base_url)
    );
    assert_eq!(
        (
            a.system_token.token.expose_secret(),
            a.system_token.issued_at,
            a.system_token.expires_at
        ),
        (
            b.system_token.token.expose_secret(),
            b.system_token.issued_at,
            b.system_token.expires_at
        )
    );
    assert_eq!((a.created_at, a.updated_at), (b.created_at, b.updated_at));
}

// ---------------------------------------------------------------------------------------------
// The contract

mod cases {
    use super::*;

    pub async fn an_unknown_tenant_is_none(b: Backend) {
        assert!(
            b.store
                .get_tenant(&ck("nobody"), T0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.store
                .get_settings(&ck("nobody"), T0)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn first_install_is_new_and_a_reinstall_replaces_secret_but_keeps_created_at(
        b: Backend,
    ) {
        let first = tenant("ck-a", "secret-one", "https://a.atlassian.net/wiki", T0);
        assert_eq!(
            b.store.save_install(&first, T0).await.unwrap(),
            InstallOutcome::New
        );

        let got = b.store.get_tenant(&ck("ck-a"), T0).await.unwrap().unwrap();
        assert_eq!(got.shared_secret.expose_secret(), "secret-one");
        assert_eq!(got.app_key, "understudy");
        assert_eq!(got.base_url, "https://a.atlassian.net/wiki");
        assert_eq!(got.display_url, "https://docs.example.com/wiki");
        assert_eq!(got.product_type, "confluence");
        assert_eq!(got.oauth_client_id.as_deref(), Some("oauth-client-1"));
        assert_eq!(got.cloud_id.as_deref(), Some("cloud-1"));
        assert_eq!(got.installation_id, None);
        assert_eq!(got.install_payload["futureField"]["kept"], json!([1, 2, 3]));
        assert_eq!(got.state, TenantState::Installed);
        assert_eq!((got.created_at, got.updated_at), (T0, T0));

        // Secret rotation and site rename arrive as a re-install.
        let mut again = tenant(
            "ck-a",
            "secret-two",
            "https://renamed.atlassian.net/wiki",
            T0 + 50,
        );
        again.oauth_client_id = None;
        assert_eq!(
            b.store.save_install(&again, T0 + 50).await.unwrap(),
            InstallOutcome::Updated
        );
        let got = b
            .store
            .get_tenant(&ck("ck-a"), T0 + 50)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.shared_secret.expose_secret(), "secret-two");
        assert_eq!(got.base_url, "https://renamed.atlassian.net/wiki");
        assert_eq!(got.oauth_client_id, None);
        assert_eq!((got.created_at, got.updated_at), (T0, T0 + 50));
    }

    pub async fn the_stored_install_payload_never_holds_the_shared_secret(b: Backend) {
        // Even a hand-built tenant whose payload still has the secret is stored without it.
        let mut t = tenant("ck-p", "payload-secret", "https://p.atlassian.net/wiki", T0);
        t.install_payload["sharedSecret"] = json!("payload-secret");
        b.store.save_install(&t, T0).await.unwrap();
        let got = b.store.get_tenant(&ck("ck-p"), T0).await.unwrap().unwrap();
        assert!(got.install_payload.get("sharedSecret").is_none());
        assert_eq!(got.install_payload["clientKey"], "ck-p");
        assert_eq!(got.shared_secret.expose_secret(), "payload-secret");
    }

    pub async fn of_concurrent_first_installs_exactly_one_is_new(b: Backend) {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = Arc::clone(&b.store);
            tasks.push(tokio::spawn(async move {
                let t = tenant(
                    "ck-race",
                    &format!("secret-{i}"),
                    "https://r.atlassian.net/wiki",
                    T0,
                );
                store.save_install(&t, T0).await.unwrap()
            }));
        }
        let outcomes = futures::future::join_all(tasks).await;
        let new = outcomes
            .iter()
            .filter(|o| *o.as_ref().unwrap() == InstallOutcome::New)
            .count();
        assert_eq!(new, 1, "{outcomes:?}");
        let got = b
            .store
            .get_tenant(&ck("ck-race"), T0)
            .await
            .unwrap()
            .unwrap();
        assert!(got.shared_secret.expose_secret().starts_with("secret-"));
    }

    pub async fn set_state_changes_a_live_tenant_only(b: Backend) {
        b.store
            .save_install(&tenant("ck-s", "s", "https://s.example/wiki", T0), T0)
            .await
            .unwrap();
        assert!(
            b.store
                .set_state(&ck("ck-s"), TenantState::Enabled, T0 + 1)
                .await
                .unwrap()
        );
        let got = b
            .store
            .get_tenant(&ck("ck-s"), T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.state, got.updated_at, got.created_at),
            (TenantState::Enabled, T0 + 1, T0)
        );
        assert!(
            b.store
                .set_state(&ck("ck-s"), TenantState::Disabled, T0 + 2)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .get_tenant(&ck("ck-s"), T0 + 2)
                .await
                .unwrap()
                .unwrap()
                .state,
            TenantState::Disabled
        );
        assert!(
            !b.store
                .set_state(&ck("unknown"), TenantState::Enabled, T0)
                .await
                .unwrap()
        );
        // `enabled` for an uninstalled tenant is out of order: refused until it re-installs.
        assert!(
            b.store
                .set_state(&ck("ck-s"), TenantState::Uninstalled, T0 + 3)
                .await
                .unwrap()
        );
        assert!(
            !b.store
                .set_state(&ck("ck-s"), TenantState::Enabled, T0 + 4)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .get_tenant(&ck("ck-s"), T0 + 4)
                .await
                .unwrap()
                .unwrap()
                .state,
            TenantState::Uninstalled
        );
        assert!(
            b.store
                .get_tenant(&ck("unknown"), T0)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn an_uninstalled_tenant_is_kept_30_days_from_the_first_uninstall(b: Backend) {
        b.store
            .save_install(&tenant("ck-u", "s", "https://u.example/wiki", T0), T0)
            .await
            .unwrap();
        b.store
            .put_settings(
                &ck("ck-u"),
                &TenantSettings {
                    document: json!({"policy": "x"}),
                },
                T0,
            )
            .await
            .unwrap();
        assert!(!b.store.mark_uninstalled(&ck("unknown"), T0).await.unwrap());
        assert!(
            b.store
                .mark_uninstalled(&ck("ck-u"), T0 + 10)
                .await
                .unwrap()
        );
        // A retried callback does not extend the retention.
        assert!(
            b.store
                .mark_uninstalled(&ck("ck-u"), T0 + 1000)
                .await
                .unwrap()
        );

        let kept = b
            .store
            .get_tenant(&ck("ck-u"), T0 + 10 + RET - 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.state, TenantState::Uninstalled);
        assert_eq!(kept.shared_secret.expose_secret(), "s");
        assert!(
            b.store
                .get_settings(&ck("ck-u"), T0 + 10 + RET - 1)
                .await
                .unwrap()
                .is_some()
        );
        // Expired: hidden even though no database has deleted it.
        assert!(
            b.store
                .get_tenant(&ck("ck-u"), T0 + 10 + RET)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.store
                .get_settings(&ck("ck-u"), T0 + 10 + RET)
                .await
                .unwrap()
                .is_none()
        );
        // Settings written after the uninstall still expire with the tenant.
        b.store
            .put_settings(
                &ck("ck-u"),
                &TenantSettings {
                    document: json!({"policy": "y"}),
                },
                T0 + 20,
            )
            .await
            .unwrap();
        assert!(
            b.store
                .get_settings(&ck("ck-u"), T0 + 10 + RET)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            !b.store
                .mark_uninstalled(&ck("ck-u"), T0 + 10 + RET)
                .await
                .unwrap()
        );
    }

    pub async fn uninstall_drops_the_tenants_cached_tokens_only(b: Backend) {
        b.store
            .save_install(&tenant("ck-t", "s", "https://t.example/wiki", T0), T0)
            .await
            .unwrap();
        for account in ["user-1", "user-2"] {
            b.store
                .put_token(&ck("ck-t"), &token_key(account), &token("at", T0 + 3600))
                .await
                .unwrap();
            b.store
                .put_token(
                    &ck("ck-other"),
                    &token_key(account),
                    &token("at", T0 + 3600),
                )
                .await
                .unwrap();
        }
        assert!(b.store.mark_uninstalled(&ck("ck-t"), T0).await.unwrap());
        for account in ["user-1", "user-2"] {
            assert!(
                b.store
                    .get_token(&ck("ck-t"), &token_key(account), T0)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert!(
                b.store
                    .get_token(&ck("ck-other"), &token_key(account), T0)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
    }

    pub async fn a_reinstall_within_retention_is_an_update_that_cancels_expiry(b: Backend) {
        b.store
            .save_install(&tenant("ck-r", "old", "https://r.example/wiki", T0), T0)
            .await
            .unwrap();
        b.store
            .put_settings(
                &ck("ck-r"),
                &TenantSettings {
                    document: json!({"keep": true}),
                },
                T0,
            )
            .await
            .unwrap();
        b.store.mark_uninstalled(&ck("ck-r"), T0 + 1).await.unwrap();
        let back = tenant("ck-r", "new", "https://r.example/wiki", T0 + 5);
        assert_eq!(
            b.store.save_install(&back, T0 + 5).await.unwrap(),
            InstallOutcome::Updated
        );
        let later = T0 + 10 * RET;
        let got = b
            .store
            .get_tenant(&ck("ck-r"), later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.state, got.created_at), (TenantState::Installed, T0));
        assert_eq!(got.shared_secret.expose_secret(), "new");
        let settings = b
            .store
            .get_settings(&ck("ck-r"), later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(settings.document, json!({"keep": true}));
    }

    pub async fn a_reinstall_keeps_a_disabled_tenant_disabled_and_only_enabled_enables(b: Backend) {
        let c = ck("ck-dis");
        let first = tenant("ck-dis", "secret-1", "https://d.example/wiki", T0);
        assert_eq!(
            b.store.save_install(&first, T0).await.unwrap(),
            InstallOutcome::New
        );
        assert!(
            b.store
                .set_state(&c, TenantState::Disabled, T0 + 1)
                .await
                .unwrap()
        );
        // Upgrade or secret rotation: Atlassian sends `installed` again, with state Installed.
        let again = tenant("ck-dis", "secret-2", "https://d2.example/wiki", T0 + 2);
        assert_eq!(again.state, TenantState::Installed);
        assert_eq!(
            b.store.save_install(&again, T0 + 2).await.unwrap(),
            InstallOutcome::Updated
        );
        let got = b.store.get_tenant(&c, T0 + 2).await.unwrap().unwrap();
        assert_eq!(
            got.state,
            TenantState::Disabled,
            "a re-install never enables"
        );
        assert_eq!(got.shared_secret.expose_secret(), "secret-2");
        assert_eq!(got.base_url, "https://d2.example/wiki");
        assert_eq!((got.created_at, got.updated_at), (T0, T0 + 2));

        // Only `enabled` enables, and a later re-install keeps that too.
        assert!(
            b.store
                .set_state(&c, TenantState::Enabled, T0 + 3)
                .await
                .unwrap()
        );
        let third = tenant("ck-dis", "secret-3", "https://d2.example/wiki", T0 + 4);
        b.store.save_install(&third, T0 + 4).await.unwrap();
        let got = b.store.get_tenant(&c, T0 + 4).await.unwrap().unwrap();
        assert_eq!(got.state, TenantState::Enabled);
        assert_eq!(got.shared_secret.expose_secret(), "secret-3");

        // After `uninstalled`, a re-install makes the tenant live again with the given state.
        assert!(
            b.store
                .set_state(&c, TenantState::Disabled, T0 + 5)
                .await
                .unwrap()
        );
        assert!(b.store.mark_uninstalled(&c, T0 + 6).await.unwrap());
        let back = tenant("ck-dis", "secret-4", "https://d2.example/wiki", T0 + 7);
        assert_eq!(
            b.store.save_install(&back, T0 + 7).await.unwrap(),
            InstallOutcome::Updated
        );
        let got = b.store.get_tenant(&c, T0 + 7).await.unwrap().unwrap();
        assert_eq!(got.state, TenantState::Installed);
        assert_eq!(got.shared_secret.expose_secret(), "secret-4");
    }

    pub async fn a_disable_racing_reinstalls_is_never_undone(b: Backend) {
        let c = ck("ck-dr");
        b.store
            .save_install(&tenant("ck-dr", "s-0", "https://dr.example/wiki", T0), T0)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 1..=6 {
            let store = Arc::clone(&b.store);
            tasks.push(tokio::spawn(async move {
                let t = tenant(
                    "ck-dr",
                    &format!("s-{i}"),
                    "https://dr.example/wiki",
                    T0 + 1,
                );
                store.save_install(&t, T0 + 1).await.unwrap()
            }));
        }
        let store = Arc::clone(&b.store);
        let disable = tokio::spawn(async move {
            store
                .set_state(&ck("ck-dr"), TenantState::Disabled, T0 + 1)
                .await
                .unwrap()
        });
        assert!(disable.await.unwrap());
        for outcome in futures::future::join_all(tasks).await {
            assert_eq!(outcome.unwrap(), InstallOutcome::Updated);
        }
        let got = b.store.get_tenant(&c, T0 + 1).await.unwrap().unwrap();
        assert_eq!(got.state, TenantState::Disabled);
        assert!(got.shared_secret.expose_secret().starts_with("s-"));
    }

    pub async fn an_install_after_retention_ran_out_is_new(b: Backend) {
        b.store
            .save_install(&tenant("ck-n", "old", "https://n.example/wiki", T0), T0)
            .await
            .unwrap();
        b.store.mark_uninstalled(&ck("ck-n"), T0).await.unwrap();
        let later = T0 + RET + 1;
        let back = tenant("ck-n", "new", "https://n.example/wiki", later);
        assert_eq!(
            b.store.save_install(&back, later).await.unwrap(),
            InstallOutcome::New
        );
        let got = b
            .store
            .get_tenant(&ck("ck-n"), later + 10 * RET)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.created_at, got.state), (later, TenantState::Installed));
        assert_eq!(got.shared_secret.expose_secret(), "new");
    }

    pub async fn a_cached_token_round_trips_until_it_expires(b: Backend) {
        let (a, k) = (ck("ck-tok"), token_key("user-1"));
        b.store
            .put_token(&a, &k, &token("access-1", T0 + 100))
            .await
            .unwrap();
        let got = b.store.get_token(&a, &k, T0 + 99).await.unwrap().unwrap();
        assert_eq!(
            (got.access_token.expose_secret(), got.expires_at),
            ("access-1", T0 + 100)
        );
        assert!(b.store.get_token(&a, &k, T0 + 100).await.unwrap().is_none());
        assert!(
            b.store
                .get_token(&a, &token_key("user-2"), T0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.store
                .get_token(&ck("ck-elsewhere"), &k, T0)
                .await
                .unwrap()
                .is_none()
        );
        b.store
            .put_token(&a, &k, &token("access-2", T0 + 500))
            .await
            .unwrap();
        let got = b.store.get_token(&a, &k, T0 + 200).await.unwrap().unwrap();
        assert_eq!(got.access_token.expose_secret(), "access-2");
        b.store.drop_tokens_for_tenant(&a).await.unwrap();
        assert!(b.store.get_token(&a, &k, T0).await.unwrap().is_none());
    }

    pub async fn a_mark_is_granted_once_until_it_expires(b: Backend) {
        let (a, m) = (ck("ck-m"), mark("webhook:page_updated:42:7"));
        let at = |marked_at| Marked::Already { marked_at };
        assert_eq!(
            b.store.mark_once(&a, &m, 60, T0).await.unwrap(),
            Marked::First
        );
        // A later delivery learns when the mark was set.
        assert_eq!(b.store.mark_once(&a, &m, 60, T0).await.unwrap(), at(T0));
        assert_eq!(
            b.store.mark_once(&a, &m, 60, T0 + 59).await.unwrap(),
            at(T0)
        );
        assert!(
            b.store
                .mark_once(&ck("ck-m2"), &m, 60, T0)
                .await
                .unwrap()
                .is_first()
        );
        assert!(
            b.store
                .mark_once(&a, &mark("job:1"), 60, T0)
                .await
                .unwrap()
                .is_first()
        );
        // Expired marks count as absent, and the new mark gets a new TTL.
        assert!(
            b.store
                .mark_once(&a, &m, 60, T0 + 60)
                .await
                .unwrap()
                .is_first()
        );
        assert_eq!(
            b.store.mark_once(&a, &m, 60, T0 + 119).await.unwrap(),
            at(T0 + 60)
        );

        // A cleared mark can be taken again at once; clearing an absent mark is fine.
        b.store.clear_mark(&a, &m).await.unwrap();
        assert!(
            b.store
                .mark_once(&a, &m, 60, T0 + 61)
                .await
                .unwrap()
                .is_first()
        );
        b.store.clear_mark(&a, &mark("never-set")).await.unwrap();
        assert_eq!(
            b.store
                .mark_once(&ck("ck-m2"), &m, 60, T0 + 1)
                .await
                .unwrap(),
            at(T0),
            "clearing is per tenant"
        );
    }

    pub async fn of_concurrent_marks_exactly_one_wins(b: Backend) {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = Arc::clone(&b.store);
            tasks.push(tokio::spawn(async move {
                store
                    .mark_once(&ck("ck-cm"), &mark("event-1"), 300, T0)
                    .await
                    .unwrap()
            }));
        }
        let wins = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|r| r.as_ref().unwrap().is_first())
            .count();
        assert_eq!(wins, 1);
    }

    pub async fn audit_lists_newest_first_per_tenant_and_per_page(b: Backend) {
        let ms = T0 * 1000;
        for (page, offset, job) in [
            ("1", 1, "j1"),
            ("12", 2, "j2"),
            ("1", 3, "j3"),
            ("2", 4, "j4"),
            ("1", 5, "j5"),
        ] {
            b.store
                .append(&audit("ck-au", page, ms + offset, job), 3600)
                .await
                .unwrap();
        }
        b.store
            .append(&audit("ck-other", "1", ms + 9, "x"), 3600)
            .await
            .unwrap();

        let all = b
            .store
            .list_for_tenant(&ck("ck-au"), None, 10, T0)
            .await
            .unwrap();
        assert_eq!(jobs(&all.records), ["j5", "j4", "j3", "j2", "j1"]);
        assert_eq!(all.records[0], audit("ck-au", "1", ms + 5, "j5"));
        assert_eq!(all.next, None, "nothing more to list");
        let newest = b
            .store
            .list_for_tenant(&ck("ck-au"), None, 2, T0)
            .await
            .unwrap();
        assert_eq!(jobs(&newest.records), ["j5", "j4"]);
        let rest = b
            .store
            .list_for_tenant(&ck("ck-au"), newest.next.as_ref(), 10, T0)
            .await
            .unwrap();
        assert_eq!(jobs(&rest.records), ["j3", "j2", "j1"]);
        // Page 1 must not pick up page 12.
        let page = b
            .store
            .list_for_page(&ck("ck-au"), &PageId::parse("1").unwrap(), None, 10, T0)
            .await
            .unwrap();
        assert_eq!(jobs(&page.records), ["j5", "j3", "j1"]);
        let page = b
            .store
            .list_for_page(&ck("ck-au"), &PageId::parse("1").unwrap(), None, 1, T0)
            .await
            .unwrap();
        assert_eq!(jobs(&page.records), ["j5"]);
        assert!(page.next.is_some());
        let empty = b
            .store
            .list_for_tenant(&ck("ck-none"), None, 10, T0)
            .await
            .unwrap();
        assert!(empty.records.is_empty() && empty.next.is_none());
        let none = b
            .store
            .list_for_tenant(&ck("ck-au"), None, 0, T0)
            .await
            .unwrap();
        assert!(none.records.is_empty() && none.next.is_none());
    }

    /// Follows `next` from the first page to the last, checking each page's size on the way.
    async fn follow(
        b: &Backend,
        page: Option<&PageId>,
        client_key: &str,
        limit: usize,
        now: i64,
    ) -> Vec<AuditRecord> {
        let mut out = Vec::new();
        let mut before: Option<AuditCursor> = None;
        for _ in 0..1000 {
            let listed = match page {
                Some(p) => b
                    .store
                    .list_for_page(&ck(client_key), p, before.as_ref(), limit, now)
                    .await
                    .unwrap(),
                None => b
                    .store
                    .list_for_tenant(&ck(client_key), before.as_ref(), limit, now)
                    .await
                    .unwrap(),
            };
            assert!(listed.records.len() <= limit);
            out.extend(listed.records.iter().cloned());
            match listed.next {
                Some(next) => {
                    assert_eq!(listed.records.len(), limit, "only the last page is short");
                    // The token survives a round trip through a query string.
                    before = Some(AuditCursor::parse(next.as_str()).unwrap());
                }
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    pub async fn audit_pages_back_through_every_record_exactly_once(b: Backend) {
        let ms = T0 * 1000;
        let page = PageId::parse("5").unwrap();
        // 120 records of page 5, three per millisecond; among them, records of page 50 and of
        // another tenant's page 5 at the same times, and page-5 records that expire by `now`.
        for i in 0..120_i64 {
            let at = ms + i / 3;
            b.store
                .append(&audit("ck-pg", "5", at, &format!("p{i}")), 3600)
                .await
                .unwrap();
            if i % 10 == 0 {
                b.store
                    .append(&audit("ck-pg", "50", at, &format!("q{i}")), 3600)
                    .await
                    .unwrap();
                b.store
                    .append(&audit("ck-pg-2", "5", at, &format!("o{i}")), 3600)
                    .await
                    .unwrap();
                b.store
                    .append(&audit("ck-pg", "5", at, &format!("gone{i}")), 60)
                    .await
                    .unwrap();
            }
        }
        let now = T0 + 60;
        let expected: std::collections::BTreeSet<String> =
            (0..120).map(|i| format!("p{i}")).collect();
        for limit in [7, 12, 200] {
            let listed = follow(&b, Some(&page), "ck-pg", limit, now).await;
            let got: Vec<&str> = jobs(&listed);
            let unique: std::collections::BTreeSet<String> =
                got.iter().map(|j| (*j).to_owned()).collect();
            assert_eq!(got.len(), 120, "limit {limit}: {got:?}");
            assert_eq!(
                unique, expected,
                "limit {limit}: no gap, no duplicate, nothing foreign"
            );
            assert!(
                listed.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
                "limit {limit}: newest first"
            );
            assert!(
                listed
                    .iter()
                    .all(|r| r.client_key == ck("ck-pg") && r.page_id == page)
            );
        }
        // The tenant's listing pages the same way and holds page 50 too.
        let tenant = follow(&b, None, "ck-pg", 9, now).await;
        assert_eq!(tenant.len(), 132);
        assert!(tenant.windows(2).all(|w| w[0].at_ms >= w[1].at_ms));
        assert!(tenant.iter().all(|r| r.client_key == ck("ck-pg")));
        let unique: std::collections::BTreeSet<&str> = jobs(&tenant).into_iter().collect();
        assert_eq!(unique.len(), 132);
        // Before the short records expire, they are listed too.
        assert_eq!(
            follow(&b, Some(&page), "ck-pg", 50, T0 + 59).await.len(),
            132
        );

        // A cursor is a position in time and id: one made up for a millisecond that holds
        // records lists those of that millisecond (ids below all-f) or only older ones (all-0).
        let at = ms + 20; // p60, p61, p62
        let high = AuditCursor::new(at, &"f".repeat(32)).unwrap();
        let low = AuditCursor::new(at, &"0".repeat(32)).unwrap();
        let from_high = b
            .store
            .list_for_page(&ck("ck-pg"), &page, Some(&high), 5, now)
            .await
            .unwrap();
        let mut first: Vec<&str> = jobs(&from_high.records)[..3].to_vec();
        first.sort_unstable();
        assert_eq!(first, ["p60", "p61", "p62"]);
        let from_low = b
            .store
            .list_for_page(&ck("ck-pg"), &page, Some(&low), 5, now)
            .await
            .unwrap();
        assert!(from_low.records.iter().all(|r| r.at_ms < at));
        assert_eq!(from_low.records.len(), 5);
        // Another tenant's cursor or one from before every record: nothing foreign, nothing more.
        let oldest = AuditCursor::new(ms, &"0".repeat(32)).unwrap();
        let past = b
            .store
            .list_for_page(&ck("ck-pg"), &page, Some(&oldest), 5, now)
            .await
            .unwrap();
        assert!(past.records.is_empty() && past.next.is_none());
        let other = b
            .store
            .list_for_page(&ck("ck-pg-2"), &page, Some(&high), 100, now)
            .await
            .unwrap();
        assert!(other.records.iter().all(|r| r.job_id.starts_with('o')));
        assert_eq!(
            other.records.len(),
            7,
            "o0, o10, ..., o60 are at or before the cursor"
        );
    }

    pub async fn a_malformed_audit_cursor_is_refused(_b: Backend) {
        let good = AuditCursor::new(T0 * 1000, &"a".repeat(32)).unwrap();
        assert_eq!(AuditCursor::parse(good.as_str()).unwrap(), good);
        for bad in [
            "",
            "0",
            "latest",
            "00000001800000000000-",
            "00000001800000000000#aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "00000001800000000000-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "00000001800000000000-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "00000001800000000000-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "99999999999999999999-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "0000000180000000000x-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "00000001800000000000-aaaaaaaaaaaaaaa%00aaaaaaaaaaaaaa",
            "PAGE#5#00000001800000000000#aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(AuditCursor::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    pub async fn expired_audit_records_are_left_out_even_when_newest(b: Backend) {
        let ms = T0 * 1000;
        // Two old records kept a long time, then three newer ones with a short retention.
        b.store
            .append(&audit("ck-ax", "7", ms, "long-1"), 10 * 3600)
            .await
            .unwrap();
        b.store
            .append(&audit("ck-ax", "7", ms + 1, "long-2"), 10 * 3600)
            .await
            .unwrap();
        for i in 0..3 {
            b.store
                .append(&audit("ck-ax", "7", ms + 10 + i, "short"), 60)
                .await
                .unwrap();
        }
        let now = T0 + 60;
        let listed = b
            .store
            .list_for_tenant(&ck("ck-ax"), None, 2, now)
            .await
            .unwrap();
        assert_eq!(jobs(&listed.records), ["long-2", "long-1"]);
        assert_eq!(listed.next, None);
        let listed = b
            .store
            .list_for_page(&ck("ck-ax"), &PageId::parse("7").unwrap(), None, 2, now)
            .await
            .unwrap();
        assert_eq!(jobs(&listed.records), ["long-2", "long-1"]);
        assert_eq!(listed.next, None);
        assert_eq!(
            b.store
                .list_for_tenant(&ck("ck-ax"), None, 10, T0 + 59)
                .await
                .unwrap()
                .records
                .len(),
            5
        );
    }

    pub async fn rate_limits_count_fixed_windows_per_tenant_and_subject(b: Backend) {
        let (a, user) = (ck("ck-rl"), "557058:rate-user-1");
        // T0 is a multiple of 60 and of 3600: windows start there.
        let now = T0 + 10;
        for remaining in [2, 1, 0] {
            assert_eq!(
                b.store.take(&a, user, 3, 60, now).await.unwrap(),
                RateDecision::Allowed { remaining }
            );
        }
        assert_eq!(
            b.store.take(&a, user, 3, 60, now).await.unwrap(),
            RateDecision::Limited {
                retry_after_seconds: 50
            }
        );
        match b.store.take(&a, user, 3, 60, T0 + 59).await.unwrap() {
            RateDecision::Limited {
                retry_after_seconds,
            } => assert!((1..=60).contains(&retry_after_seconds)),
            other => panic!("still the same window: {other:?}"),
        }
        // A new window allows again.
        assert_eq!(
            b.store.take(&a, user, 3, 60, T0 + 60).await.unwrap(),
            RateDecision::Allowed { remaining: 2 }
        );
        // Other subjects, other tenants and other window lengths count on their own.
        assert_eq!(
            b.store
                .take(&a, "557058:rate-user-2", 3, 60, now)
                .await
                .unwrap(),
            RateDecision::Allowed { remaining: 2 }
        );
        assert_eq!(
            b.store
                .take(&ck("ck-rl-2"), user, 3, 60, now)
                .await
                .unwrap(),
            RateDecision::Allowed { remaining: 2 }
        );
        assert_eq!(
            b.store.take(&a, user, 3, 3600, now).await.unwrap(),
            RateDecision::Allowed { remaining: 2 }
        );
        // A limit of 0 allows nothing; a retry-after is never beyond the window.
        match b.store.take(&a, "557058:nobody", 0, 30, now).await.unwrap() {
            RateDecision::Limited {
                retry_after_seconds,
            } => assert_eq!(retry_after_seconds, 20),
            other => panic!("limit 0 allowed: {other:?}"),
        }
    }

    pub async fn of_concurrent_rate_takes_at_most_the_limit_are_allowed(b: Backend) {
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let store = Arc::clone(&b.store);
            tasks.push(tokio::spawn(async move {
                store
                    .take(&ck("ck-rc"), "557058:burst", 10, 60, T0 + 1)
                    .await
                    .unwrap()
            }));
        }
        let decisions = futures::future::join_all(tasks).await;
        let allowed = decisions
            .iter()
            .filter(|d| d.as_ref().unwrap().is_allowed())
            .count();
        assert_eq!(allowed, 10, "{decisions:?}");
        let mut remaining: Vec<u32> = decisions
            .iter()
            .filter_map(|d| match d.as_ref().unwrap() {
                RateDecision::Allowed { remaining } => Some(*remaining),
                RateDecision::Limited { .. } => None,
            })
            .collect();
        remaining.sort_unstable();
        assert_eq!(remaining, (0..10).collect::<Vec<u32>>(), "each count once");
    }

    pub async fn settings_round_trip_and_replace(b: Backend) {
        let doc =
            json!({"restrictedPages": {"mode": "impersonate", "fallback": ["grant"]}, "n": 1.5});
        b.store
            .put_settings(
                &ck("ck-set"),
                &TenantSettings {
                    document: doc.clone(),
                },
                T0,
            )
            .await
            .unwrap();
        assert_eq!(
            b.store
                .get_settings(&ck("ck-set"), T0)
                .await
                .unwrap()
                .unwrap()
                .document,
            doc
        );
        b.store
            .put_settings(
                &ck("ck-set"),
                &TenantSettings {
                    document: json!({}),
                },
                T0,
            )
            .await
            .unwrap();
        assert_eq!(
            b.store
                .get_settings(&ck("ck-set"), T0)
                .await
                .unwrap()
                .unwrap()
                .document,
            json!({})
        );
        assert!(
            b.store
                .get_settings(&ck("ck-set-2"), T0)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn an_unknown_installation_is_none_and_a_record_creates_it(b: Backend) {
        let id = installation_id("11111111-0000-0000-0000-000000000001");
        assert!(b.store.get_installation(&id, T0).await.unwrap().is_none());

        let seen = installation(
            "11111111-0000-0000-0000-000000000001",
            "system-token-one",
            T0 - 2,
            T0,
        );
        let recorded = b.store.record_installation(&seen, T0).await.unwrap();
        let got = b.store.get_installation(&id, T0).await.unwrap().unwrap();
        assert_same(&recorded, &got);
        assert_eq!(got.id, id);
        // Unlinked: the installation's own key, whatever the caller passed.
        assert_eq!(got.tenant_key, id.own_tenant_key());
        assert_eq!(got.app_id, seen.app_id);
        assert_eq!(got.cloud_id, "cloud-1");
        assert_eq!(
            got.confluence_base_url(),
            "https://api.atlassian.com/ex/confluence/cloud-1/wiki"
        );
        assert_eq!(got.system_token.token.expose_secret(), "system-token-one");
        assert_eq!(
            (got.system_token.issued_at, got.system_token.expires_at),
            (seen.system_token.issued_at, seen.system_token.expires_at)
        );
        assert_eq!((got.created_at, got.updated_at), (T0, T0));
        assert!(!format!("{got:?}").contains("system-token-one"));
        assert!(!format!("{recorded:?}").contains("system-token-one"));

        let other = installation_id("11111111-0000-0000-0000-000000000002");
        assert!(
            b.store
                .get_installation(&other, T0)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn a_second_record_keeps_created_at_replaces_the_rest_and_renews_retention(
        b: Backend,
    ) {
        let raw_id = "22222222-0000-0000-0000-000000000001";
        let id = installation_id(raw_id);
        b.store
            .record_installation(&installation(raw_id, "token-1", T0, T0), T0)
            .await
            .unwrap();
        let later = T0 + 3600;
        let mut again = installation(raw_id, "token-2", later, later);
        again.app_id = "ari:cloud:ecosystem::app/00000000-aaaa-bbbb-cccc-000000000002".into();
        again.cloud_id = "cloud-2".into();
        again.api_base_url = "https://api.atlassian.com/ex/confluence/cloud-2".into();
        let recorded = b.store.record_installation(&again, later).await.unwrap();
        let got = b.store.get_installation(&id, later).await.unwrap().unwrap();
        assert_same(&recorded, &got);
        assert_eq!((got.created_at, got.updated_at), (T0, later));
        assert_eq!(
            (got.app_id.as_str(), got.cloud_id.as_str()),
            (again.app_id.as_str(), "cloud-2")
        );
        assert_eq!(
            got.api_base_url,
            "https://api.atlassian.com/ex/confluence/cloud-2"
        );
        assert_eq!(got.system_token.token.expose_secret(), "token-2");
        // Retention counts from the last record.
        assert!(
            b.store
                .get_installation(&id, T0 + FORGE_RET + 10)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.store
                .get_installation(&id, later + FORGE_RET - 1)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.store
                .get_installation(&id, later + FORGE_RET)
                .await
                .unwrap()
                .is_none()
        );
    }

    pub async fn a_system_token_is_replaced_only_by_one_issued_later(b: Backend) {
        let raw_id = "33333333-0000-0000-0000-000000000001";
        let id = installation_id(raw_id);
        b.store
            .record_installation(
                &installation(raw_id, "token-at-10", T0 + 10, T0 + 10),
                T0 + 10,
            )
            .await
            .unwrap();
        // A delayed delivery: recorded later, but its token is older. Everything else is replaced.
        let mut delayed = installation(raw_id, "token-at-5", T0 + 5, T0 + 20);
        delayed.cloud_id = "cloud-delayed".into();
        let recorded = b
            .store
            .record_installation(&delayed, T0 + 20)
            .await
            .unwrap();
        assert_eq!(recorded.system_token.token.expose_secret(), "token-at-10");
        assert_eq!(recorded.system_token.issued_at, T0 + 10);
        assert_eq!(
            recorded.system_token.expires_at,
            SystemToken::received(SecretString::from("x"), T0 + 10).expires_at
        );
        assert_eq!(
            (recorded.cloud_id.as_str(), recorded.updated_at),
            ("cloud-delayed", T0 + 20)
        );
        let got = b
            .store
            .get_installation(&id, T0 + 20)
            .await
            .unwrap()
            .unwrap();
        assert_same(&recorded, &got);
        // One issued at the same second does not replace it either.
        let same = installation(raw_id, "token-also-at-10", T0 + 10, T0 + 21);
        let recorded = b.store.record_installation(&same, T0 + 21).await.unwrap();
        assert_eq!(recorded.system_token.token.expose_secret(), "token-at-10");
        // A later one does, and retention still counts from the delayed record onwards.
        let newer = installation(raw_id, "token-at-30", T0 + 30, T0 + 30);
        let recorded = b.store.record_installation(&newer, T0 + 30).await.unwrap();
        assert_eq!(recorded.system_token.token.expose_secret(), "token-at-30");
        assert_eq!(recorded.created_at, T0 + 10);
        let got = b
            .store
            .get_installation(&id, T0 + 30)
            .await
            .unwrap()
            .unwrap();
        assert_same(&recorded, &got);
    }

    pub async fn of_concurrent_records_the_latest_token_wins(b: Backend) {
        let raw_id = "44444444-0000-0000-0000-000000000001";
        let id = installation_id(raw_id);
        // Twice: racing to create the installation, then racing on the existing one.
        for (round, base) in [(0, T0), (1, T0 + 100)] {
            let mut tasks = Vec::new();
            for i in [3_i64, 7, 0, 5, 1, 6, 2, 4] {
                let store = Arc::clone(&b.store);
                tasks.push(tokio::spawn(async move {
                    let seen = installation(raw_id, &format!("token-{round}-{i}"), base + i, base);
                    let recorded = store.record_installation(&seen, base).await.unwrap();
                    (i, recorded)
                }));
            }
            for done in futures::future::join_all(tasks).await {
                let (i, recorded) = done.unwrap();
                // What a record returns holds its own token or a later one, never an older one.
                assert!(recorded.system_token.issued_at >= base + i, "{recorded:?}");
                assert_eq!(
                    recorded.system_token.token.expose_secret(),
                    format!("token-{round}-{}", recorded.system_token.issued_at - base)
                );
            }
            let got = b.store.get_installation(&id, base).await.unwrap().unwrap();
            assert_eq!(
                got.system_token.token.expose_secret(),
                format!("token-{round}-7")
            );
            assert_eq!(got.system_token.issued_at, base + 7);
            assert_eq!(got.created_at, T0, "created once");
        }
    }

    pub async fn the_tenant_key_is_the_installations_own_until_it_is_linked(b: Backend) {
        let (early, late, alone) = (
            "55555555-0000-0000-0000-000000000001",
            "55555555-0000-0000-0000-000000000002",
            "55555555-0000-0000-0000-000000000003",
        );
        // Linked before it was ever recorded: no installation yet, and the link makes none.
        b.store
            .link_installation(&installation_id(early), &ck("ck-connect-early"), T0)
            .await
            .unwrap();
        assert!(
            b.store
                .get_installation(&installation_id(early), T0)
                .await
                .unwrap()
                .is_none()
        );
        let recorded = b
            .store
            .record_installation(&installation(early, "t-early", T0, T0 + 1), T0 + 1)
            .await
            .unwrap();
        assert_eq!(recorded.tenant_key, ck("ck-connect-early"));
        let got = b
            .store
            .get_installation(&installation_id(early), T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_same(&recorded, &got);

        // Recorded first, linked afterwards; a later link replaces an earlier one.
        let recorded = b
            .store
            .record_installation(&installation(late, "t-late", T0, T0), T0)
            .await
            .unwrap();
        assert_eq!(recorded.tenant_key, installation_id(late).own_tenant_key());
        for (at, client_key) in [(T0 + 1, "ck-connect-1"), (T0 + 2, "ck-connect-2")] {
            b.store
                .link_installation(&installation_id(late), &ck(client_key), at)
                .await
                .unwrap();
            let got = b
                .store
                .get_installation(&installation_id(late), at)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.tenant_key, ck(client_key));
            assert_eq!(got.system_token.token.expose_secret(), "t-late");
        }
        let recorded = b
            .store
            .record_installation(&installation(late, "t-late-2", T0 + 3, T0 + 3), T0 + 3)
            .await
            .unwrap();
        assert_eq!(recorded.tenant_key, ck("ck-connect-2"));

        // An unlinked installation keeps its settings and audit under its own key; they live
        // beside the installation's own records without disturbing them.
        let own = installation_id(alone).own_tenant_key();
        b.store
            .record_installation(&installation(alone, "t-alone", T0, T0), T0)
            .await
            .unwrap();
        b.store
            .put_settings(
                &own,
                &TenantSettings {
                    document: json!({"forge": true}),
                },
                T0,
            )
            .await
            .unwrap();
        let mut record = audit("ck-placeholder", "9", T0 * 1000, "forge-job");
        record.client_key = own.clone();
        b.store.append(&record, 3600).await.unwrap();
        let got = b
            .store
            .get_installation(&installation_id(alone), T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.tenant_key, own);
        assert_eq!(got.system_token.token.expose_secret(), "t-alone");
        assert_eq!(
            b.store
                .get_settings(&own, T0)
                .await
                .unwrap()
                .unwrap()
                .document,
            json!({"forge": true})
        );
        let listed = b.store.list_for_tenant(&own, None, 10, T0).await.unwrap();
        assert_eq!(jobs(&listed.records), ["forge-job"]);
    }

    pub async fn an_installation_silent_for_the_retention_is_gone_and_comes_back_fresh(b: Backend) {
        let raw_id = "66666666-0000-0000-0000-000000000001";
        let id = installation_id(raw_id);
        b.store
            .record_installation(&installation(raw_id, "token-old", T0 + 100, T0), T0)
            .await
            .unwrap();
        assert!(
            b.store
                .get_installation(&id, T0 + FORGE_RET - 1)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            b.store
                .get_installation(&id, T0 + FORGE_RET)
                .await
                .unwrap()
                .is_none()
        );
        // Back after the retention ran out: a new installation in every respect, even its token
        // (the expired record's does not count, however recent).
        let back = T0 + FORGE_RET + 5;
        let recorded = b
            .store
            .record_installation(&installation(raw_id, "token-new", T0 + 50, back), back)
            .await
            .unwrap();
        assert_eq!((recorded.created_at, recorded.updated_at), (back, back));
        assert_eq!(recorded.system_token.token.expose_secret(), "token-new");
        let got = b
            .store
            .get_installation(&id, back + FORGE_RET - 1)
            .await
            .unwrap()
            .unwrap();
        assert_same(&recorded, &got);
    }

    pub async fn a_parked_job_is_replaced_by_the_next_and_unparked_per_tenant(b: Backend) {
        let ms = T0 * 1000;
        let (tenant, seven) = (ck("ck-pk"), page("7"));
        assert_eq!(b.store.parked(&tenant, &seven, T0).await.unwrap(), None);
        let first = parked_job("ck-pk", "7", ms, "blocked: restricted page");
        b.store.park(&first).await.unwrap();
        assert_eq!(
            b.store.parked(&tenant, &seven, T0).await.unwrap(),
            Some(first.clone())
        );

        // A second park of the page replaces the first, every field of it.
        let second = ParkedJob {
            at_ms: ms + 5,
            outcome: EditOutcome::Failed,
            reason: "failed: Confluence answered 500".into(),
            dead_lettered: true,
            job: json!({"clientKey": "ck-pk", "pageId": "7", "user": "557058:other"}).to_string(),
            ..first.clone()
        };
        b.store.park(&second).await.unwrap();
        assert_eq!(
            b.store.parked(&tenant, &seven, T0).await.unwrap(),
            Some(second.clone())
        );
        let listed = b.store.list_parked(&tenant, None, 10, T0).await.unwrap();
        assert_eq!(
            listed.jobs,
            std::slice::from_ref(&second),
            "one job per page"
        );
        assert_eq!(listed.next, None);

        // Another tenant's job for the same page id is its own, and never shows here.
        let foreign = parked_job("ck-pk-2", "7", ms + 9, "foreign");
        b.store.park(&foreign).await.unwrap();
        assert_eq!(
            b.store.parked(&tenant, &seven, T0).await.unwrap(),
            Some(second.clone())
        );
        assert_eq!(
            b.store.parked(&ck("ck-pk-2"), &seven, T0).await.unwrap(),
            Some(foreign.clone())
        );
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0)
                .await
                .unwrap()
                .jobs,
            std::slice::from_ref(&second)
        );
        assert_eq!(
            b.store.parked(&ck("ck-pk-3"), &seven, T0).await.unwrap(),
            None
        );
        assert_eq!(
            b.store
                .list_parked(&ck("ck-pk-3"), None, 10, T0)
                .await
                .unwrap(),
            ParkedPage::default()
        );

        // The last park wins even when it is the older one, and it takes the older place.
        let older = parked_job("ck-pk", "7", ms - 10, "parked late");
        b.store.park(&older).await.unwrap();
        assert_eq!(
            b.store.parked(&tenant, &seven, T0).await.unwrap(),
            Some(older.clone())
        );
        let eight = parked_job("ck-pk", "8", ms, "eight");
        b.store.park(&eight).await.unwrap();
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0)
                .await
                .unwrap()
                .jobs,
            [eight.clone(), older.clone()]
        );

        // Unpark takes it away, here only; again, or for a page never parked, is no error.
        b.store.unpark(&tenant, &seven).await.unwrap();
        assert_eq!(b.store.parked(&tenant, &seven, T0).await.unwrap(), None);
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0)
                .await
                .unwrap()
                .jobs,
            std::slice::from_ref(&eight)
        );
        assert_eq!(
            b.store.parked(&ck("ck-pk-2"), &seven, T0).await.unwrap(),
            Some(foreign)
        );
        b.store.unpark(&tenant, &seven).await.unwrap();
        b.store.unpark(&tenant, &page("99")).await.unwrap();
        b.store.unpark(&ck("ck-pk-none"), &seven).await.unwrap();

        // Parked again after an unpark, it is back.
        b.store.park(&first).await.unwrap();
        assert_eq!(
            b.store.parked(&tenant, &seven, T0).await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0)
                .await
                .unwrap()
                .jobs,
            [eight, first],
            "one millisecond: page 8 before page 7"
        );
    }

    /// Follows `next` from `after` to the last page, checking each page on the way.
    async fn follow_parked(
        b: &Backend,
        client_key: &str,
        after: Option<(i64, PageId)>,
        limit: usize,
        now: i64,
    ) -> Vec<ParkedJob> {
        let mut out = Vec::new();
        let mut after = after;
        for _ in 0..1000 {
            let listed = b
                .store
                .list_parked(&ck(client_key), after.as_ref(), limit, now)
                .await
                .unwrap();
            assert!(listed.jobs.len() <= limit);
            out.extend(listed.jobs.iter().cloned());
            match listed.next {
                Some(next) => {
                    assert_eq!(listed.jobs.len(), limit, "only the last page is short");
                    let last = listed.jobs.last().unwrap();
                    assert_eq!(
                        next,
                        (last.at_ms, last.page_id.clone()),
                        "next is the last one"
                    );
                    after = Some(next);
                }
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    /// `jobs` in listing order: (at_ms, page id) descending, page ids compared as `PageId`s.
    fn newest_first(mut jobs: Vec<ParkedJob>) -> Vec<ParkedJob> {
        jobs.sort_by(|a, b| (b.at_ms, &b.page_id).cmp(&(a.at_ms, &a.page_id)));
        jobs
    }

    pub async fn parked_jobs_list_newest_first_and_page_through_each_once(b: Backend) {
        let ms = T0 * 1000;
        // One millisecond's jobs order by page id as text: 9, 12, 100 (newest first).
        for p in ["12", "100", "9"] {
            b.store.park(&parked_job("ck-po", p, ms, p)).await.unwrap();
        }
        b.store
            .park(&parked_job("ck-po", "5", ms - 1, "older"))
            .await
            .unwrap();
        b.store
            .park(&parked_job("ck-po", "3", ms + 1, "newer"))
            .await
            .unwrap();
        let listed = b
            .store
            .list_parked(&ck("ck-po"), None, 10, T0)
            .await
            .unwrap();
        assert_eq!(parked_pages(&listed.jobs), ["3", "9", "12", "100", "5"]);
        assert_eq!(listed.next, None);
        let first = b
            .store
            .list_parked(&ck("ck-po"), None, 2, T0)
            .await
            .unwrap();
        assert_eq!(parked_pages(&first.jobs), ["3", "9"]);
        assert_eq!(first.next, Some((ms, page("9"))));
        let rest = b
            .store
            .list_parked(&ck("ck-po"), first.next.as_ref(), 2, T0)
            .await
            .unwrap();
        assert_eq!(parked_pages(&rest.jobs), ["12", "100"]);
        assert_eq!(rest.next, Some((ms, page("100"))));
        let last = b
            .store
            .list_parked(&ck("ck-po"), rest.next.as_ref(), 2, T0)
            .await
            .unwrap();
        assert_eq!(parked_pages(&last.jobs), ["5"]);
        assert_eq!(last.next, None, "nothing more remains");
        // Exactly `limit` remain: no next either.
        let exact = b
            .store
            .list_parked(&ck("ck-po"), Some(&(ms, page("12"))), 2, T0)
            .await
            .unwrap();
        assert_eq!(parked_pages(&exact.jobs), ["100", "5"]);
        assert_eq!(exact.next, None);
        // Limit 0: an empty page without next, with or without a position.
        for after in [None, Some((ms, page("9")))] {
            let none = b
                .store
                .list_parked(&ck("ck-po"), after.as_ref(), 0, T0)
                .await
                .unwrap();
            assert_eq!(none, ParkedPage::default());
        }

        // 60 jobs, four per millisecond, pages with ids of 1 to 4 digits; among them, another
        // tenant's jobs at the same times and pages, and jobs that have expired by `now`.
        let now = T0 + 10;
        let mut live = Vec::new();
        for i in 0..60_i64 {
            let id = (i * 37 % 1000 + 1) * if i % 3 == 0 { 1 } else { 7 };
            let job = parked_job("ck-pl", &id.to_string(), ms + i / 4, &format!("j{i}"));
            b.store.park(&job).await.unwrap();
            live.push(job);
            if i % 6 == 0 {
                b.store
                    .park(&parked_job(
                        "ck-pl-2",
                        &id.to_string(),
                        ms + i / 4,
                        "foreign",
                    ))
                    .await
                    .unwrap();
            }
        }
        // Expired: parked exactly the retention before `now` (at_ms / 1000 + retention <= now).
        for (i, p) in ["70001", "70002", "70003"].into_iter().enumerate() {
            let at = (now - PARKED_RET) * 1000 + 999 - i as i64;
            b.store
                .park(&parked_job("ck-pl", p, at, "expired"))
                .await
                .unwrap();
        }
        // One second later it is still kept.
        let kept = parked_job("ck-pl", "70004", (now - PARKED_RET + 1) * 1000, "kept");
        b.store.park(&kept).await.unwrap();
        live.push(kept);
        let expected = newest_first(live);
        assert_eq!(expected.len(), 61);
        for limit in [1, 4, 7, 60, 61, 62, 500] {
            let listed = follow_parked(&b, "ck-pl", None, limit, now).await;
            assert_eq!(listed, expected, "limit {limit}: each once, newest first");
        }
        // From a listed job's position: what follows it.
        let position = (expected[10].at_ms, expected[10].page_id.clone());
        let after = follow_parked(&b, "ck-pl", Some(position), 5, now).await;
        assert_eq!(after, expected[11..]);
        // From positions no job has: below every page id of a millisecond ("0"), or above every
        // one (twenty 9s), or newer than all.
        let at = ms + 7;
        for (position, from) in [
            (
                (at, page("0")),
                expected.iter().position(|j| j.at_ms < at).unwrap(),
            ),
            (
                (at, page(&"9".repeat(20))),
                expected.iter().position(|j| j.at_ms <= at).unwrap(),
            ),
            ((ms + 100, page("1")), 0),
        ] {
            let after = follow_parked(&b, "ck-pl", Some(position.clone()), 6, now).await;
            assert_eq!(after, expected[from..], "after {position:?}");
        }
        // The other tenant sees its own only.
        let foreign = follow_parked(&b, "ck-pl-2", None, 3, now).await;
        assert_eq!(foreign.len(), 10);
        assert!(foreign.iter().all(|j| j.client_key == ck("ck-pl-2")));
        // A second earlier, the expired ones are listed too, oldest last.
        let before = follow_parked(&b, "ck-pl", None, 9, now - 1).await;
        assert_eq!(before.len(), 64);
        assert_eq!(
            before[60..]
                .iter()
                .map(|j| j.reason.as_str())
                .collect::<Vec<_>>(),
            ["kept", "expired", "expired", "expired"]
        );

        // A position stays valid when its job is unparked or parked again meanwhile: the rest
        // is listed once, and a job parked again moves to its new place.
        let first = b
            .store
            .list_parked(&ck("ck-pl"), None, 3, now)
            .await
            .unwrap();
        let cursor = first.next.clone().unwrap();
        b.store.unpark(&ck("ck-pl"), &cursor.1).await.unwrap();
        let moved = expected[20].clone();
        let moved_again = ParkedJob {
            at_ms: ms + 1_000,
            ..moved.clone()
        };
        b.store.park(&moved_again).await.unwrap();
        let rest = follow_parked(&b, "ck-pl", Some(cursor), 4, now).await;
        let want: Vec<ParkedJob> = expected[3..]
            .iter()
            .filter(|j| j.page_id != moved.page_id)
            .cloned()
            .collect();
        assert_eq!(rest, want);
        let all = follow_parked(&b, "ck-pl", None, 8, now).await;
        assert_eq!(all.len(), 60, "one unparked, one moved");
        assert_eq!(all[0], moved_again);
    }

    pub async fn parked_jobs_expire_after_the_retention(b: Backend) {
        let ms = T0 * 1000;
        let job = parked_job("ck-px", "42", ms + 999, "blocked");
        b.store.park(&job).await.unwrap();
        let (tenant, page_id) = (ck("ck-px"), page("42"));
        let last_second = T0 + PARKED_RET - 1;
        assert_eq!(
            b.store
                .parked(&tenant, &page_id, last_second)
                .await
                .unwrap(),
            Some(job.clone())
        );
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, last_second)
                .await
                .unwrap()
                .jobs,
            std::slice::from_ref(&job)
        );
        assert_eq!(
            b.store
                .parked(&tenant, &page_id, T0 + PARKED_RET)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0 + PARKED_RET)
                .await
                .unwrap(),
            ParkedPage::default()
        );
        // A newer job is listed alone, without a next: the older ones left have all expired.
        let newer = parked_job("ck-px", "43", ms + 5_000, "newer");
        b.store.park(&newer).await.unwrap();
        let listed = b
            .store
            .list_parked(&tenant, None, 1, T0 + PARKED_RET)
            .await
            .unwrap();
        assert_eq!(listed.jobs, std::slice::from_ref(&newer));
        assert_eq!(listed.next, None);
        // Parked again, the page's job is kept from its new time.
        let again = ParkedJob {
            at_ms: ms + 10_000,
            ..job
        };
        b.store.park(&again).await.unwrap();
        assert_eq!(
            b.store
                .parked(&tenant, &page_id, T0 + PARKED_RET)
                .await
                .unwrap(),
            Some(again.clone())
        );
        assert_eq!(
            b.store
                .list_parked(&tenant, None, 10, T0 + PARKED_RET)
                .await
                .unwrap()
                .jobs,
            [again, newer]
        );
    }

    /// Everything listed for the tenant, one page of `limit` at a time, checking each page.
    async fn follow_accounts(b: &Backend, client_key: &str, limit: usize) -> Vec<StoredAccount> {
        let mut out: Vec<StoredAccount> = Vec::new();
        let mut after: Option<AccountId> = None;
        for _ in 0..1000 {
            let listed = b
                .store
                .list_accounts(&ck(client_key), after.as_ref(), limit)
                .await
                .unwrap();
            assert!(listed.accounts.len() <= limit);
            out.extend(listed.accounts.iter().cloned());
            match listed.next {
                Some(next) => {
                    assert_eq!(listed.accounts.len(), limit, "only the last page is short");
                    assert_eq!(
                        Some(&next),
                        listed.accounts.last().map(|a| &a.account),
                        "next is the last one"
                    );
                    after = Some(next);
                }
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    pub async fn a_noted_account_is_listed_and_keeps_the_older_retrieval_time(b: Backend) {
        let tenant = ck("ck-acc");
        let one = account("557058:acc-1");
        assert_eq!(
            b.store.list_accounts(&tenant, None, 10).await.unwrap(),
            AccountsPage::default()
        );
        assert!(b.store.note_account(&tenant, &one, T0 + 100).await.unwrap());
        let listed = b.store.list_accounts(&tenant, None, 10).await.unwrap();
        assert_eq!(listed.accounts, [stored("557058:acc-1", T0 + 100, None)]);
        assert_eq!(listed.next, None);

        // Noted again later: the older time stays. Noted with an earlier time: that one is kept.
        assert!(b.store.note_account(&tenant, &one, T0 + 500).await.unwrap());
        assert!(b.store.note_account(&tenant, &one, T0 + 100).await.unwrap());
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:acc-1", T0 + 100, None)]
        );
        assert!(b.store.note_account(&tenant, &one, T0 + 40).await.unwrap());
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:acc-1", T0 + 40, None)]
        );
        // A report mark survives later notes.
        b.store
            .mark_reported(&tenant, &one, T0 + 600, None)
            .await
            .unwrap();
        assert!(b.store.note_account(&tenant, &one, T0 + 700).await.unwrap());
        assert!(b.store.note_account(&tenant, &one, T0 + 10).await.unwrap());
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:acc-1", T0 + 10, Some(T0 + 600))]
        );

        // Another tenant's note of the same account is its own.
        assert!(
            b.store
                .note_account(&ck("ck-acc-2"), &one, T0 + 900)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .list_accounts(&ck("ck-acc-2"), None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:acc-1", T0 + 900, None)]
        );
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:acc-1", T0 + 10, Some(T0 + 600))]
        );
        assert!(
            !b.store
                .is_closed(&tenant, &ClosedAccountKey::new(&one))
                .await
                .unwrap()
        );
    }

    pub async fn accounts_list_in_account_id_order_and_page_through_each_once(b: Backend) {
        // Byte order of accountIds: digits < ':' < upper case < '_' < lower case.
        let mut ids: Vec<String> = (0..23)
            .map(|i| format!("557058:{:08x}-{}", i * 7919 % 23, i % 3))
            .collect();
        ids.extend(
            [
                "5b10ac8d82e05b22cc7d4ef5",
                "5b10ac8d82e05b22cc7d4ef5:x",
                "Z_1",
                "a-b",
                "a_b",
                "ab",
            ]
            .map(String::from),
        );
        for (i, id) in ids.iter().enumerate() {
            assert!(
                b.store
                    .note_account(&ck("ck-al"), &account(id), T0 + i as i64)
                    .await
                    .unwrap()
            );
            // Another tenant holds every other one, and one of its own.
            if i % 2 == 0 {
                b.store
                    .note_account(&ck("ck-al-2"), &account(id), T0)
                    .await
                    .unwrap();
            }
        }
        b.store
            .note_account(&ck("ck-al-2"), &account("557058:only-there"), T0)
            .await
            .unwrap();
        let mut expected: Vec<StoredAccount> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| stored(id, T0 + i as i64, None))
            .collect();
        expected.sort_by(|a, b| a.account.cmp(&b.account));
        assert_eq!(expected.len(), 29);

        let all = b
            .store
            .list_accounts(&ck("ck-al"), None, 100)
            .await
            .unwrap();
        assert_eq!(all.accounts, expected);
        assert_eq!(all.next, None);
        for limit in [1, 2, 5, 28, 29, 30, 1000] {
            let listed = follow_accounts(&b, "ck-al", limit).await;
            assert_eq!(
                listed, expected,
                "limit {limit}: each once, in accountId order"
            );
        }
        // Exactly `limit` remain after `after`: no next.
        let exact = b
            .store
            .list_accounts(&ck("ck-al"), Some(&expected[26].account), 2)
            .await
            .unwrap();
        assert_eq!(exact.accounts, expected[27..]);
        assert_eq!(exact.next, None);
        let first = b.store.list_accounts(&ck("ck-al"), None, 3).await.unwrap();
        assert_eq!(first.accounts, expected[..3]);
        assert_eq!(first.next, Some(expected[2].account.clone()));
        // Limit 0: an empty page without next, with or without `after`.
        for after in [None, Some(expected[3].account.clone())] {
            assert_eq!(
                b.store
                    .list_accounts(&ck("ck-al"), after.as_ref(), 0)
                    .await
                    .unwrap(),
                AccountsPage::default()
            );
        }
        // After the last one, or past every id: nothing.
        for after in [expected[28].account.clone(), account("zzz")] {
            assert_eq!(
                b.store
                    .list_accounts(&ck("ck-al"), Some(&after), 5)
                    .await
                    .unwrap(),
                AccountsPage::default()
            );
        }
        // From a position no account has: what follows it.
        let listed = b
            .store
            .list_accounts(&ck("ck-al"), Some(&account("557058:0000000a")), 100)
            .await
            .unwrap();
        let from = expected
            .iter()
            .position(|a| a.account.as_str() > "557058:0000000a")
            .unwrap();
        assert!(from > 0);
        assert_eq!(listed.accounts, expected[from..]);
        // The other tenant sees its own only; a third, none.
        let foreign = follow_accounts(&b, "ck-al-2", 4).await;
        assert_eq!(foreign.len(), 16);
        assert!(
            foreign
                .iter()
                .any(|a| a.account.as_str() == "557058:only-there")
        );
        assert!(foreign.iter().all(|a| a.retrieved_at == T0));
        assert_eq!(
            b.store
                .list_accounts(&ck("ck-al-3"), None, 10)
                .await
                .unwrap(),
            AccountsPage::default()
        );
        // A position stays valid when its account is closed and forgotten meanwhile.
        let page = b.store.list_accounts(&ck("ck-al"), None, 4).await.unwrap();
        let cursor = page.next.clone().unwrap();
        b.store
            .close_account(&ck("ck-al"), &cursor, T0)
            .await
            .unwrap();
        b.store.forget_account(&ck("ck-al"), &cursor).await.unwrap();
        let rest = b
            .store
            .list_accounts(&ck("ck-al"), Some(&cursor), 100)
            .await
            .unwrap();
        assert_eq!(rest.accounts, expected[4..]);
    }

    pub async fn a_report_mark_sets_next_report_at_and_only_on_a_listed_account(b: Backend) {
        let tenant = ck("ck-ar");
        let (one, two) = (account("557058:ar-1"), account("557058:ar-2"));
        b.store.note_account(&tenant, &one, T0).await.unwrap();
        b.store.note_account(&tenant, &two, T0 + 1).await.unwrap();
        // Reported, not refreshed: the retrieval time stays.
        b.store
            .mark_reported(&tenant, &one, T0 + 50, None)
            .await
            .unwrap();
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [
                stored("557058:ar-1", T0, Some(T0 + 50)),
                stored("557058:ar-2", T0 + 1, None)
            ]
        );
        // Refreshed (Atlassian answered `updated`): the retrieval time is the report's.
        b.store
            .mark_reported(&tenant, &two, T0 + 60, Some(T0 + 60))
            .await
            .unwrap();
        b.store
            .mark_reported(&tenant, &one, T0 + 70, None)
            .await
            .unwrap();
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [
                stored("557058:ar-1", T0, Some(T0 + 70)),
                stored("557058:ar-2", T0 + 60, Some(T0 + 60))
            ]
        );
        // An account not listed here (never noted, another tenant's, or closed and forgotten) is
        // left alone: nothing is written, so nothing is listed.
        let stranger = account("557058:ar-never");
        b.store
            .mark_reported(&tenant, &stranger, T0 + 80, Some(T0 + 80))
            .await
            .unwrap();
        b.store
            .mark_reported(&ck("ck-ar-2"), &one, T0 + 80, None)
            .await
            .unwrap();
        b.store.close_account(&tenant, &two, T0 + 90).await.unwrap();
        b.store.forget_account(&tenant, &two).await.unwrap();
        b.store
            .mark_reported(&tenant, &two, T0 + 95, Some(T0 + 95))
            .await
            .unwrap();
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:ar-1", T0, Some(T0 + 70))]
        );
        assert_eq!(
            b.store
                .list_accounts(&ck("ck-ar-2"), None, 10)
                .await
                .unwrap(),
            AccountsPage::default()
        );
        // A later note of the never-noted account lists it fresh, never reported.
        assert!(
            b.store
                .note_account(&tenant, &stranger, T0 + 99)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [
                stored("557058:ar-1", T0, Some(T0 + 70)),
                stored("557058:ar-never", T0 + 99, None)
            ]
        );
    }

    pub async fn a_closed_account_stays_listed_flagged_until_forgotten_and_is_never_noted_again(
        b: Backend,
    ) {
        let tenant = ck("ck-ac");
        let (gone, kept) = (account("557058:ac-gone"), account("557058:ac-kept"));
        b.store.note_account(&tenant, &gone, T0).await.unwrap();
        b.store.note_account(&tenant, &kept, T0).await.unwrap();
        b.store
            .mark_reported(&tenant, &gone, T0 + 5, None)
            .await
            .unwrap();
        b.store
            .note_account(&ck("ck-ac-2"), &gone, T0)
            .await
            .unwrap();
        let key = ClosedAccountKey::new(&gone);
        assert!(!b.store.is_closed(&tenant, &key).await.unwrap());

        // Closed: the listing stays, flagged, with what it held; it is never due again.
        b.store
            .close_account(&tenant, &gone, T0 + 10)
            .await
            .unwrap();
        assert!(b.store.is_closed(&tenant, &key).await.unwrap());
        let listed = b.store.list_accounts(&tenant, None, 10).await.unwrap();
        assert_eq!(
            listed.accounts,
            [
                closed("557058:ac-gone", T0, Some(T0 + 5)),
                stored("557058:ac-kept", T0, None)
            ]
        );
        assert!(!listed.accounts[0].due(i64::MAX));
        assert!(listed.accounts[1].due(T0));
        // Noting it again is refused and changes nothing, not even an earlier retrieval time.
        assert!(!b.store.note_account(&tenant, &gone, T0 + 20).await.unwrap());
        assert!(!b.store.note_account(&tenant, &gone, T0 - 20).await.unwrap());
        // Closed again (Atlassian reports it again): no error, still flagged, nothing else changed.
        b.store
            .close_account(&tenant, &gone, T0 + 30)
            .await
            .unwrap();
        assert!(b.store.is_closed(&tenant, &key).await.unwrap());
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [
                closed("557058:ac-gone", T0, Some(T0 + 5)),
                stored("557058:ac-kept", T0, None)
            ]
        );
        // Closed never having been listed: a flagged listing, retrieved at the close, for the
        // erasure to find.
        let unseen = account("557058:ac-unseen");
        b.store
            .close_account(&tenant, &unseen, T0 + 30)
            .await
            .unwrap();
        assert!(
            b.store
                .is_closed(&tenant, &ClosedAccountKey::new(&unseen))
                .await
                .unwrap()
        );
        assert!(
            !b.store
                .note_account(&tenant, &unseen, T0 + 40)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [
                closed("557058:ac-gone", T0, Some(T0 + 5)),
                stored("557058:ac-kept", T0, None),
                closed("557058:ac-unseen", T0 + 30, None)
            ]
        );
        // Forgotten once erased: the listing goes, the closed key stays; twice is no error.
        b.store.forget_account(&tenant, &gone).await.unwrap();
        b.store.forget_account(&tenant, &gone).await.unwrap();
        b.store.forget_account(&tenant, &unseen).await.unwrap();
        assert!(b.store.is_closed(&tenant, &key).await.unwrap());
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:ac-kept", T0, None)]
        );
        assert!(!b.store.note_account(&tenant, &gone, T0 + 50).await.unwrap());
        b.store
            .mark_reported(&tenant, &gone, T0 + 55, Some(T0 + 55))
            .await
            .unwrap();
        assert_eq!(
            b.store
                .list_accounts(&tenant, None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:ac-kept", T0, None)]
        );
        // Forgetting an account never listed, or another tenant's, is no error and lists nothing.
        b.store
            .forget_account(&tenant, &account("557058:ac-never"))
            .await
            .unwrap();
        // Per tenant: the other tenant still lists it and may still note it.
        assert!(!b.store.is_closed(&ck("ck-ac-2"), &key).await.unwrap());
        assert!(
            b.store
                .note_account(&ck("ck-ac-2"), &gone, T0 + 50)
                .await
                .unwrap()
        );
        assert_eq!(
            b.store
                .list_accounts(&ck("ck-ac-2"), None, 10)
                .await
                .unwrap()
                .accounts,
            [stored("557058:ac-gone", T0, None)]
        );
        // Other accounts are not closed by it.
        assert!(
            !b.store
                .is_closed(&tenant, &ClosedAccountKey::new(&kept))
                .await
                .unwrap()
        );
    }

    pub async fn of_concurrent_notes_and_a_close_the_closed_account_stays_flagged(b: Backend) {
        let tenant = ck("ck-acr");
        let racing = account("557058:acr-1");
        let store = Arc::clone(&b.store);
        let notes = (0..8_i64).map(|i| {
            let store = Arc::clone(&store);
            let (tenant, racing) = (tenant.clone(), racing.clone());
            tokio::spawn(async move { store.note_account(&tenant, &racing, T0 + i).await })
        });
        let notes: Vec<_> = notes.collect();
        b.store.close_account(&tenant, &racing, T0).await.unwrap();
        for note in futures::future::join_all(notes).await {
            note.unwrap().unwrap();
        }
        assert!(
            b.store
                .is_closed(&tenant, &ClosedAccountKey::new(&racing))
                .await
                .unwrap()
        );
        // Whatever the order, a note before the close was flagged by it, and one after it refused:
        // one listing, flagged closed, with the earliest time a note or the close wrote.
        let listed = b.store.list_accounts(&tenant, None, 10).await.unwrap();
        assert_eq!(listed.accounts.len(), 1, "{listed:?}");
        assert_eq!(listed.next, None);
        let flagged = &listed.accounts[0];
        assert_eq!(
            (&flagged.account, flagged.closed, flagged.next_report_at),
            (&racing, true, None)
        );
        assert!((T0..T0 + 8).contains(&flagged.retrieved_at));
        b.store.forget_account(&tenant, &racing).await.unwrap();
        assert_eq!(
            b.store.list_accounts(&tenant, None, 10).await.unwrap(),
            AccountsPage::default()
        );
    }

    pub async fn a_dropped_token_is_that_one_only(b: Backend) {
        let (one, two) = (token_key("557058:tok-1"), token_key("557058:tok-2"));
        for tenant in ["ck-dt", "ck-dt-2"] {
            for key in [&one, &two] {
                b.store
                    .put_token(&ck(tenant), key, &token("at", T0 + 3600))
                    .await
                    .unwrap();
            }
        }
        b.store.drop_token(&ck("ck-dt"), &one).await.unwrap();
        assert!(
            b.store
                .get_token(&ck("ck-dt"), &one, T0)
                .await
                .unwrap()
                .is_none()
        );
        let kept = b
            .store
            .get_token(&ck("ck-dt"), &two, T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.access_token.expose_secret(), "at");
        for key in [&one, &two] {
            assert!(
                b.store
                    .get_token(&ck("ck-dt-2"), key, T0)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        // Dropping an absent token, again or never cached, is no error.
        b.store.drop_token(&ck("ck-dt"), &one).await.unwrap();
        b.store
            .drop_token(&ck("ck-dt-3"), &token_key("557058:tok-9"))
            .await
            .unwrap();
        assert!(
            b.store
                .get_token(&ck("ck-dt"), &two, T0)
                .await
                .unwrap()
                .is_some()
        );
    }

    /// Every record of the tenant (or of one page), newest first, with the cursor of each page of
    /// `limit`: what a listing shows, positions included.
    async fn audit_listing(
        b: &Backend,
        client_key: &str,
        page: Option<&PageId>,
        limit: usize,
        now: i64,
    ) -> Vec<(Vec<AuditRecord>, Option<String>)> {
        let mut out = Vec::new();
        let mut before: Option<AuditCursor> = None;
        for _ in 0..1000 {
            let listed = match page {
                Some(p) => b
                    .store
                    .list_for_page(&ck(client_key), p, before.as_ref(), limit, now)
                    .await
                    .unwrap(),
                None => b
                    .store
                    .list_for_tenant(&ck(client_key), before.as_ref(), limit, now)
                    .await
                    .unwrap(),
            };
            out.push((
                listed.records.clone(),
                listed.next.as_ref().map(|c| c.as_str().to_owned()),
            ));
            match listed.next {
                Some(next) => before = Some(next),
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    pub async fn erasing_an_account_rewrites_only_its_records_of_only_that_tenant(b: Backend) {
        let ms = T0 * 1000;
        let gone = account("557058:erase-gone");
        let kept = account("557058:erase-kept");
        let as_user = |mut r: AuditRecord, a: &AccountId| {
            r.acted_as = ActedAs::User(a.clone());
            r
        };
        let as_app = |mut r: AuditRecord| {
            r.acted_as = ActedAs::App;
            r
        };
        let records = [
            as_user(audit("ck-er", "1", ms + 1, "j1"), &gone),
            as_user(audit("ck-er", "2", ms + 2, "j2"), &kept),
            as_app(audit("ck-er", "1", ms + 3, "j3")),
            as_user(audit("ck-er", "12", ms + 4, "j4"), &gone),
            as_user(audit("ck-er", "1", ms + 5, "j5"), &gone),
            // The same instant as j5: the id in the key keeps them apart.
            as_user(audit("ck-er", "2", ms + 5, "j6"), &kept),
        ];
        for record in &records {
            b.store.append(record, 3600).await.unwrap();
        }
        let foreign = as_user(audit("ck-er-2", "1", ms + 3, "x1"), &gone);
        b.store.append(&foreign, 3600).await.unwrap();
        let pages = [None, Some(page("1")), Some(page("2")), Some(page("12"))];
        let mut before = Vec::new();
        for p in &pages {
            before.push(audit_listing(&b, "ck-er", p.as_ref(), 2, T0).await);
        }

        assert_eq!(b.store.erase_account(&ck("ck-er"), &gone).await.unwrap(), 3);

        // The same listings, page for page and cursor for cursor, with the account erased from
        // its records and nothing else changed.
        let erase = |r: &AuditRecord| {
            if r.acted_as == ActedAs::User(gone.clone()) {
                as_user(r.clone(), &AccountId::erased())
            } else {
                r.clone()
            }
        };
        for (p, listed) in pages.iter().zip(&before) {
            let expected: Vec<_> = listed
                .iter()
                .map(|(records, next)| {
                    (records.iter().map(erase).collect::<Vec<_>>(), next.clone())
                })
                .collect();
            assert_eq!(
                audit_listing(&b, "ck-er", p.as_ref(), 2, T0).await,
                expected,
                "page {p:?}"
            );
        }
        let all = audit_listing(&b, "ck-er", None, 100, T0).await;
        let all: Vec<AuditRecord> = all.into_iter().flat_map(|(r, _)| r).collect();
        assert_eq!(all.len(), 6);
        assert_eq!(
            all.iter()
                .filter(|r| r.acted_as == ActedAs::User(AccountId::erased()))
                .count(),
            3
        );
        assert!(
            all.iter()
                .all(|r| r.acted_as != ActedAs::User(gone.clone()))
        );
        for original in &records {
            assert!(all.contains(&erase(original)), "{original:?}");
        }
        // The expiry stays: still listed just before it, gone at it.
        assert_eq!(
            audit_listing(&b, "ck-er", None, 100, T0 + 3599).await[0]
                .0
                .len(),
            6
        );
        assert!(
            audit_listing(&b, "ck-er", None, 100, T0 + 3600).await[0]
                .0
                .is_empty()
        );
        // The other tenant's record of the same account is untouched.
        assert_eq!(
            b.store
                .list_for_tenant(&ck("ck-er-2"), None, 10, T0)
                .await
                .unwrap()
                .records,
            std::slice::from_ref(&foreign)
        );
        // Again: nothing left to erase. An account no record names, or a tenant with no audit:
        // nothing either.
        assert_eq!(b.store.erase_account(&ck("ck-er"), &gone).await.unwrap(), 0);
        assert_eq!(
            b.store
                .erase_account(&ck("ck-er"), &account("557058:erase-none"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            b.store
                .erase_account(&ck("ck-er-none"), &gone)
                .await
                .unwrap(),
            0
        );
        // An account whose id is the start of another's: only its own records.
        assert_eq!(
            b.store
                .erase_account(&ck("ck-er"), &account("557058:erase-kep"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(b.store.erase_account(&ck("ck-er"), &kept).await.unwrap(), 2);
        let all = audit_listing(&b, "ck-er", None, 100, T0).await;
        assert!(all[0].0.iter().all(|r| matches!(&r.acted_as, ActedAs::App)
            || r.acted_as == ActedAs::User(AccountId::erased())));
        assert_eq!(
            b.store
                .list_for_tenant(&ck("ck-er-2"), None, 10, T0)
                .await
                .unwrap()
                .records,
            [foreign]
        );
    }

    /// Every tenant of the slot, one page of `limit` at a time, checking each page.
    async fn follow_slot(b: &Backend, slot: u32, limit: usize) -> Vec<ClientKey> {
        let mut out: Vec<ClientKey> = Vec::new();
        let mut after: Option<ClientKey> = None;
        for _ in 0..1000 {
            let listed = b
                .store
                .scheduled_tenants(slot, after.as_ref(), limit)
                .await
                .unwrap();
            assert!(listed.tenants.len() <= limit);
            out.extend(listed.tenants.iter().cloned());
            match listed.next {
                Some(next) => {
                    assert_eq!(listed.tenants.len(), limit, "only the last page is short");
                    assert_eq!(Some(&next), listed.tenants.last(), "next is the last one");
                    after = Some(next);
                }
                None => return out,
            }
        }
        panic!("the listing never ended");
    }

    pub async fn installs_and_forge_installations_are_scheduled_in_their_slot(b: Backend) {
        let connect = ck("ck-sched-connect");
        let forge_raw = "88888888-0000-0000-0000-000000000001";
        let forge = installation_id(forge_raw).own_tenant_key();
        for slot in 0..REPORT_SLOTS {
            assert_eq!(
                b.store.scheduled_tenants(slot, None, 10).await.unwrap(),
                ScheduledPage::default()
            );
        }
        b.store
            .save_install(
                &tenant(connect.as_str(), "s", "https://s.example/wiki", T0),
                T0,
            )
            .await
            .unwrap();
        b.store
            .record_installation(&installation(forge_raw, "tok", T0, T0), T0)
            .await
            .unwrap();
        // Again (a re-install, the next invocation): still one entry each.
        b.store
            .save_install(
                &tenant(connect.as_str(), "s2", "https://s.example/wiki", T0 + 1),
                T0 + 1,
            )
            .await
            .unwrap();
        b.store
            .record_installation(&installation(forge_raw, "tok", T0, T0 + 1), T0 + 1)
            .await
            .unwrap();
        // A Forge installation linked to a Connect tenant is still scheduled under its own key
        // (its items stay there).
        b.store
            .link_installation(&installation_id(forge_raw), &connect, T0 + 2)
            .await
            .unwrap();
        for slot in 0..REPORT_SLOTS {
            let mut expected: Vec<ClientKey> = [&connect, &forge]
                .into_iter()
                .filter(|t| report_slot(t) == slot)
                .cloned()
                .collect();
            expected.sort();
            let listed = b.store.scheduled_tenants(slot, None, 10).await.unwrap();
            assert_eq!(listed.tenants, expected, "slot {slot}");
            assert_eq!(listed.next, None);
        }
        // A slot that does not exist has nobody.
        assert_eq!(
            b.store
                .scheduled_tenants(REPORT_SLOTS, None, 10)
                .await
                .unwrap(),
            ScheduledPage::default()
        );
        // Settings and audit records do not enter a tenant in the schedule; the first account its
        // data holds does (so a tenant installed before the schedule existed is entered too).
        let quiet = ck("ck-sched-quiet");
        b.store
            .put_settings(
                &quiet,
                &TenantSettings {
                    document: json!({}),
                },
                T0,
            )
            .await
            .unwrap();
        b.store
            .append(&audit(quiet.as_str(), "1", T0 * 1000, "q"), 3600)
            .await
            .unwrap();
        let in_slot = || async {
            b.store
                .scheduled_tenants(report_slot(&quiet), None, 1000)
                .await
                .unwrap()
                .tenants
                .contains(&quiet)
        };
        assert!(!in_slot().await);
        b.store
            .note_account(&quiet, &account("557058:sched"), T0)
            .await
            .unwrap();
        assert!(in_slot().await, "noting an account schedules its tenant");
    }

    pub async fn a_slot_pages_through_each_tenant_exactly_once(b: Backend) {
        // Twelve tenants that share a slot, and a few in others.
        let slot = report_slot(&ck("ck-slot-0"));
        let (mut same, mut others) = (Vec::new(), Vec::new());
        for i in 0.. {
            let key = ck(&format!("ck-slot-{i}"));
            if report_slot(&key) == slot {
                same.push(key);
            } else if others.len() < 4 {
                others.push(key);
            }
            if same.len() == 12 && others.len() == 4 {
                break;
            }
        }
        for (i, key) in same.iter().chain(&others).enumerate() {
            b.store
                .save_install(
                    &tenant(key.as_str(), "s", "https://s.example/wiki", T0 + i as i64),
                    T0 + i as i64,
                )
                .await
                .unwrap();
        }
        let mut expected = same.clone();
        expected.sort();
        for limit in [1, 2, 5, 11, 12, 13, 1000] {
            assert_eq!(
                follow_slot(&b, slot, limit).await,
                expected,
                "limit {limit}: each once, in key order"
            );
        }
        let first = b.store.scheduled_tenants(slot, None, 3).await.unwrap();
        assert_eq!(first.tenants, expected[..3]);
        assert_eq!(first.next, Some(expected[2].clone()));
        // Exactly `limit` remain after `after`: no next.
        let exact = b
            .store
            .scheduled_tenants(slot, Some(&expected[9]), 2)
            .await
            .unwrap();
        assert_eq!(exact.tenants, expected[10..]);
        assert_eq!(exact.next, None);
        // After the last, or a position no tenant has: what follows it.
        assert_eq!(
            b.store
                .scheduled_tenants(slot, Some(&expected[11]), 5)
                .await
                .unwrap(),
            ScheduledPage::default()
        );
        let between = ck(&format!("{}-", expected[4].as_str()));
        let listed = b
            .store
            .scheduled_tenants(slot, Some(&between), 100)
            .await
            .unwrap();
        let from = expected
            .iter()
            .position(|t| t.as_str() > between.as_str())
            .unwrap();
        assert_eq!(listed.tenants, expected[from..]);
        // Limit 0: an empty page without next.
        assert_eq!(
            b.store
                .scheduled_tenants(slot, Some(&expected[0]), 0)
                .await
                .unwrap(),
            ScheduledPage::default()
        );
        // The others are in theirs.
        for other in &others {
            let theirs = follow_slot(&b, report_slot(other), 2).await;
            assert!(theirs.contains(other));
            assert!(!follow_slot(&b, slot, 100).await.contains(other));
        }
    }

    /// Fills a tenant's partition with one of everything a tenant keeps.
    async fn populate(b: &Backend, client_key: &str, forge_raw: &str) {
        let tenant_key = ck(client_key);
        b.store
            .save_install(&tenant(client_key, "s", "https://p.example/wiki", T0), T0)
            .await
            .unwrap();
        b.store
            .put_settings(
                &tenant_key,
                &TenantSettings {
                    document: json!({"n": 1}),
                },
                T0,
            )
            .await
            .unwrap();
        for user in ["557058:p-1", "557058:p-2"] {
            b.store
                .put_token(&tenant_key, &token_key(user), &token("at", T0 + 3600))
                .await
                .unwrap();
            b.store
                .note_account(&tenant_key, &account(user), T0)
                .await
                .unwrap();
        }
        b.store
            .close_account(&tenant_key, &account("557058:p-2"), T0)
            .await
            .unwrap();
        assert!(
            b.store
                .mark_once(&tenant_key, &mark("event-1"), 3600, T0)
                .await
                .unwrap()
                .is_first()
        );
        for i in 0..3 {
            b.store
                .append(
                    &audit(client_key, "7", T0 * 1000 + i, &format!("j{i}")),
                    3600,
                )
                .await
                .unwrap();
        }
        b.store
            .park(&parked_job(client_key, "7", T0 * 1000, "blocked"))
            .await
            .unwrap();
        b.store
            .take(&tenant_key, "557058:p-1", 5, 60, T0)
            .await
            .unwrap();
        // A Forge installation of the tenant's site, linked to it, with a tenant of its own too.
        let id = installation_id(forge_raw);
        b.store
            .record_installation(&installation(forge_raw, "tok", T0, T0), T0)
            .await
            .unwrap();
        b.store
            .put_settings(
                &id.own_tenant_key(),
                &TenantSettings {
                    document: json!({"forge": true}),
                },
                T0,
            )
            .await
            .unwrap();
        b.store
            .append(
                &audit(id.own_tenant_key().as_str(), "8", T0 * 1000, "f"),
                3600,
            )
            .await
            .unwrap();
        b.store
            .link_installation(&id, &tenant_key, T0)
            .await
            .unwrap();
        b.store.mark_uninstalled(&tenant_key, T0).await.unwrap();
    }

    /// Whether anything of the tenant is readable through a port.
    async fn anything_of(b: &Backend, client_key: &str) -> Vec<&'static str> {
        let tenant_key = ck(client_key);
        let mut found = Vec::new();
        if b.store.get_tenant(&tenant_key, T0).await.unwrap().is_some() {
            found.push("tenant");
        }
        if b.store
            .get_settings(&tenant_key, T0)
            .await
            .unwrap()
            .is_some()
        {
            found.push("settings");
        }
        for user in ["557058:p-1", "557058:p-2"] {
            if b.store
                .get_token(&tenant_key, &token_key(user), T0)
                .await
                .unwrap()
                .is_some()
            {
                found.push("token");
            }
        }
        if !b
            .store
            .list_for_tenant(&tenant_key, None, 10, T0)
            .await
            .unwrap()
            .records
            .is_empty()
        {
            found.push("audit");
        }
        if !b
            .store
            .list_for_page(&tenant_key, &page("7"), None, 10, T0)
            .await
            .unwrap()
            .records
            .is_empty()
        {
            found.push("audit of a page");
        }
        if b.store.list_accounts(&tenant_key, None, 10).await.unwrap() != AccountsPage::default() {
            found.push("accounts");
        }
        if b.store
            .is_closed(&tenant_key, &ClosedAccountKey::new(&account("557058:p-2")))
            .await
            .unwrap()
        {
            found.push("closed account");
        }
        if b.store
            .parked(&tenant_key, &page("7"), T0)
            .await
            .unwrap()
            .is_some()
        {
            found.push("parked job");
        }
        if b.store
            .list_parked(&tenant_key, None, 10, T0)
            .await
            .unwrap()
            != ParkedPage::default()
        {
            found.push("parked listing");
        }
        if follow_slot(b, report_slot(&tenant_key), 100)
            .await
            .contains(&tenant_key)
        {
            found.push("schedule");
        }
        found
    }

    pub async fn a_purge_takes_everything_of_the_tenant_and_nothing_else_in_bounded_steps(
        b: Backend,
    ) {
        let forge_a = "99999999-0000-0000-0000-00000000000a";
        let forge_b = "99999999-0000-0000-0000-00000000000b";
        populate(&b, "ck-purge-a", forge_a).await;
        populate(&b, "ck-purge-b", forge_b).await;
        let everything = [
            "tenant",
            "settings",
            "token",
            "token",
            "audit",
            "audit of a page",
            "accounts",
            "closed account",
            "parked job",
            "parked listing",
            "schedule",
        ];
        // Uninstalled: tokens dropped already.
        let kept: Vec<_> = everything
            .iter()
            .filter(|w| **w != "token")
            .copied()
            .collect();
        assert_eq!(anything_of(&b, "ck-purge-a").await, kept);
        let b_before = anything_of(&b, "ck-purge-b").await;
        assert_eq!(b_before, kept);
        // Tokens cached after the uninstall (a late job) go too.
        b.store
            .put_token(
                &ck("ck-purge-a"),
                &token_key("557058:p-1"),
                &token("late", T0 + 3600),
            )
            .await
            .unwrap();

        // Two items a call: several calls that leave some, then one that finishes.
        let mut unfinished = 0;
        while !b.store.purge_tenant(&ck("ck-purge-a"), 2).await.unwrap() {
            unfinished += 1;
            assert!(unfinished < 100, "the purge never ended");
        }
        if !matches!(b.raw, Raw::Nothing) {
            // 1 tenant, 1 settings, 1 token, 1 mark, 3 audit, 1 parked job, 2 accounts, 1 closed
            // key, (DynamoDB: 1 rate counter), and the schedule entry: more than two calls' worth.
            assert!(unfinished >= 5, "{unfinished}");
        }
        assert_eq!(anything_of(&b, "ck-purge-a").await, Vec::<&str>::new());
        // A purge of a purged tenant has nothing to do.
        assert!(b.store.purge_tenant(&ck("ck-purge-a"), 2).await.unwrap());
        assert!(b.store.purge_tenant(&ck("ck-purge-a"), 0).await.unwrap());
        // Its mark is gone: the event counts as new.
        assert!(
            b.store
                .mark_once(&ck("ck-purge-a"), &mark("event-1"), 3600, T0)
                .await
                .unwrap()
                .is_first()
        );
        // The other tenant keeps everything, and so do both Forge installations' own partitions
        // (a purge is per tenant key).
        assert_eq!(anything_of(&b, "ck-purge-b").await, b_before);
        assert!(
            !b.store
                .mark_once(&ck("ck-purge-b"), &mark("event-1"), 3600, T0)
                .await
                .unwrap()
                .is_first()
        );
        for forge in [forge_a, forge_b] {
            let id = installation_id(forge);
            assert!(b.store.get_installation(&id, T0).await.unwrap().is_some());
        }

        // The Forge installation's own tenant key: installation, link, settings, audit, schedule.
        let id = installation_id(forge_a);
        let own = id.own_tenant_key();
        assert!(follow_slot(&b, report_slot(&own), 100).await.contains(&own));
        let mut calls = 0;
        while !b.store.purge_tenant(&own, 1).await.unwrap() {
            calls += 1;
            assert!(calls < 100, "the purge never ended");
        }
        assert!(b.store.get_installation(&id, T0).await.unwrap().is_none());
        assert!(b.store.get_settings(&own, T0).await.unwrap().is_none());
        assert!(
            b.store
                .list_for_tenant(&own, None, 10, T0)
                .await
                .unwrap()
                .records
                .is_empty()
        );
        assert!(!follow_slot(&b, report_slot(&own), 100).await.contains(&own));
        let other = installation_id(forge_b);
        let got = b.store.get_installation(&other, T0).await.unwrap().unwrap();
        assert_eq!(got.tenant_key, ck("ck-purge-b"));
        assert!(
            follow_slot(&b, report_slot(&other.own_tenant_key()), 100)
                .await
                .contains(&other.own_tenant_key())
        );
    }

    /// What an operator reading the raw table or file would see.
    async fn raw_bytes(raw: &Raw) -> Vec<u8> {
        match raw {
            Raw::Nothing => unreachable!("only persistent adapters are checked"),
            Raw::File(path) => std::fs::read(path).unwrap(),
            Raw::Table { client, table } => {
                // Scan is fine here: this is the test looking at the table, not a request path.
                let items = client
                    .scan()
                    .table_name(table)
                    .send()
                    .await
                    .unwrap()
                    .items
                    .unwrap();
                let mut out = Vec::new();
                for item in items {
                    for (name, value) in item {
                        out.extend_from_slice(name.as_bytes());
                        match value {
                            AttributeValue::S(s) | AttributeValue::N(s) => {
                                out.extend_from_slice(s.as_bytes())
                            }
                            AttributeValue::B(b) => out.extend_from_slice(b.as_ref()),
                            other => out.extend_from_slice(format!("{other:?}").as_bytes()),
                        }
                        out.push(b'\n');
                    }
                }
                out
            }
        }
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    pub async fn the_raw_data_shows_no_secret_in_plain_text(b: Backend) {
        let secret = "PLAINTEXT-SHARED-SECRET-7f3a";
        let access = "PLAINTEXT-ACCESS-TOKEN-91bc";
        b.store
            .save_install(
                &tenant("ck-raw", secret, "https://raw.example/wiki", T0),
                T0,
            )
            .await
            .unwrap();
        b.store
            .put_token(&ck("ck-raw"), &token_key("user-1"), &token(access, T0 + 60))
            .await
            .unwrap();
        let rate_subject = "557058:rate-limited-user";
        assert!(
            b.store
                .take(&ck("ck-raw"), rate_subject, 5, 60, T0)
                .await
                .unwrap()
                .is_allowed()
        );
        let raw = raw_bytes(&b.raw).await;
        // The dump is real: it holds the tenant's non-secret fields...
        assert!(contains(&raw, "https://raw.example/wiki"));
        assert!(contains(&raw, "ck-raw"));
        // ...and no secret, neither as text nor base64-encoded, nor the accountId behind the token key.
        let b64 = base64::engine::general_purpose::STANDARD;
        for plain in [secret, access] {
            assert!(
                !contains(&raw, plain),
                "{plain} is readable in the raw data"
            );
            assert!(
                !contains(&raw, &b64.encode(plain)),
                "{plain} is in the raw data as base64"
            );
        }
        assert!(!contains(&raw, "user-1"));
        // A rate-limit counter is keyed by a hash of the accountId, never the accountId. (The
        // embedded store counts in the process: nothing of it reaches the file.)
        assert!(!contains(&raw, rate_subject));
        assert!(!contains(&raw, "rate-limited-user"));
        if let Raw::Table { .. } = b.raw {
            let hash = RateWindow::new(rate_subject, 60, T0);
            assert!(
                contains(&raw, hash.subject_hash()),
                "the counter item is in the dump"
            );
        }
        // And the secrets still open through the store.
        let got = b
            .store
            .get_tenant(&ck("ck-raw"), T0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.shared_secret.expose_secret(), secret);
    }
    pub async fn the_raw_data_shows_no_system_token_in_plain_text(b: Backend) {
        let token = "PLAINTEXT-SYSTEM-TOKEN-5d2e";
        let raw_id = "77777777-0000-0000-0000-000000000001";
        let id = installation_id(raw_id);
        b.store
            .link_installation(&id, &ck("ck-raw-connect"), T0)
            .await
            .unwrap();
        b.store
            .record_installation(&installation(raw_id, token, T0, T0), T0)
            .await
            .unwrap();
        let raw = raw_bytes(&b.raw).await;
        // The dump is real: the installation's id, its non-secret fields and its link...
        assert!(contains(&raw, id.as_str()));
        assert!(contains(
            &raw,
            "https://api.atlassian.com/ex/confluence/cloud-1"
        ));
        assert!(contains(&raw, "ck-raw-connect"));
        // ...and no token, neither as text nor base64-encoded.
        let b64 = base64::engine::general_purpose::STANDARD;
        assert!(
            !contains(&raw, token),
            "the token is readable in the raw data"
        );
        assert!(
            !contains(&raw, &b64.encode(token)),
            "the token is in the raw data as base64"
        );
        let got = b.store.get_installation(&id, T0).await.unwrap().unwrap();
        assert_eq!(got.system_token.token.expose_secret(), token);
        assert!(!format!("{got:?}").contains(token));
    }
    pub async fn the_raw_data_keeps_only_the_hash_of_a_closed_account(b: Backend) {
        let tenant = ck("ck-raw-acc");
        let gone = account("557058:closed-account-4e1f");
        let kept = account("557058:kept-account-9a0c");
        b.store.note_account(&tenant, &gone, T0).await.unwrap();
        b.store.note_account(&tenant, &kept, T0).await.unwrap();
        b.store
            .mark_reported(&tenant, &gone, T0 + 5, Some(T0 + 5))
            .await
            .unwrap();
        for (who, page_id) in [(&gone, "1"), (&kept, "2"), (&gone, "3")] {
            let mut record = audit(tenant.as_str(), page_id, T0 * 1000, "job");
            record.acted_as = ActedAs::User(who.clone());
            b.store.append(&record, 3600).await.unwrap();
        }
        let raw = raw_bytes(&b.raw).await;
        // The dump is real: both listings and the audit records are in it, by accountId.
        assert!(contains(&raw, gone.as_str()));
        assert!(contains(&raw, kept.as_str()));

        // Closed: the flagged listing and the records still name it until they are erased.
        b.store
            .close_account(&tenant, &gone, T0 + 10)
            .await
            .unwrap();
        assert!(contains(&raw_bytes(&b.raw).await, gone.as_str()));
        assert_eq!(b.store.erase_account(&tenant, &gone).await.unwrap(), 2);
        b.store.forget_account(&tenant, &gone).await.unwrap();
        let raw = raw_bytes(&b.raw).await;
        assert!(
            !contains(&raw, gone.as_str()),
            "the closed accountId is still in the raw data"
        );
        assert!(!contains(&raw, "closed-account-4e1f"));
        assert!(contains(&raw, ClosedAccountKey::new(&gone).as_str()));
        assert!(contains(&raw, kept.as_str()));
        assert!(contains(&raw, AccountId::ERASED));
        assert!(
            b.store
                .is_closed(&tenant, &ClosedAccountKey::new(&gone))
                .await
                .unwrap()
        );
    }

    pub async fn the_raw_data_keeps_nothing_of_a_purged_tenant(b: Backend) {
        populate(&b, "ck-raw-purged", "99999999-0000-0000-0000-0000000000c1").await;
        populate(&b, "ck-raw-kept", "99999999-0000-0000-0000-0000000000c2").await;
        let raw = raw_bytes(&b.raw).await;
        // The dump is real: the tenant is in it, as partition, index partition and schedule entry.
        assert!(contains(&raw, "ck-raw-purged"));
        while !b.store.purge_tenant(&ck("ck-raw-purged"), 3).await.unwrap() {}
        let raw = raw_bytes(&b.raw).await;
        // Only the Forge installation's link names it: that is the installation's, under its ARI.
        let id = installation_id("99999999-0000-0000-0000-0000000000c1");
        let mut left = raw.clone();
        // (`raw_bytes` writes each attribute as its name, then its value, then a newline.)
        let link = "client_keyck-raw-purged\n";
        while let Some(at) = left.windows(link.len()).position(|w| w == link.as_bytes()) {
            left.drain(at..at + link.len());
        }
        assert!(
            !contains(&left, "ck-raw-purged"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        assert!(b.store.get_installation(&id, T0).await.unwrap().is_some());
        assert!(contains(&raw, "ck-raw-kept"));
    }
}

macro_rules! contract {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::cases::$case(crate::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! full_contract {
    ($($backend:ident),*) => {$(
        contract!($backend:
            an_unknown_tenant_is_none,
            first_install_is_new_and_a_reinstall_replaces_secret_but_keeps_created_at,
            the_stored_install_payload_never_holds_the_shared_secret,
            of_concurrent_first_installs_exactly_one_is_new,
            set_state_changes_a_live_tenant_only,
            an_uninstalled_tenant_is_kept_30_days_from_the_first_uninstall,
            uninstall_drops_the_tenants_cached_tokens_only,
            a_reinstall_within_retention_is_an_update_that_cancels_expiry,
            a_reinstall_keeps_a_disabled_tenant_disabled_and_only_enabled_enables,
            a_disable_racing_reinstalls_is_never_undone,
            an_install_after_retention_ran_out_is_new,
            a_cached_token_round_trips_until_it_expires,
            a_mark_is_granted_once_until_it_expires,
            of_concurrent_marks_exactly_one_wins,
            audit_lists_newest_first_per_tenant_and_per_page,
            audit_pages_back_through_every_record_exactly_once,
            a_malformed_audit_cursor_is_refused,
            expired_audit_records_are_left_out_even_when_newest,
            rate_limits_count_fixed_windows_per_tenant_and_subject,
            of_concurrent_rate_takes_at_most_the_limit_are_allowed,
            settings_round_trip_and_replace,
            an_unknown_installation_is_none_and_a_record_creates_it,
            a_second_record_keeps_created_at_replaces_the_rest_and_renews_retention,
            a_system_token_is_replaced_only_by_one_issued_later,
            of_concurrent_records_the_latest_token_wins,
            the_tenant_key_is_the_installations_own_until_it_is_linked,
            an_installation_silent_for_the_retention_is_gone_and_comes_back_fresh,
            a_parked_job_is_replaced_by_the_next_and_unparked_per_tenant,
            parked_jobs_list_newest_first_and_page_through_each_once,
            parked_jobs_expire_after_the_retention,
            a_noted_account_is_listed_and_keeps_the_older_retrieval_time,
            accounts_list_in_account_id_order_and_page_through_each_once,
            a_report_mark_sets_next_report_at_and_only_on_a_listed_account,
            a_closed_account_stays_listed_flagged_until_forgotten_and_is_never_noted_again,
            of_concurrent_notes_and_a_close_the_closed_account_stays_flagged,
            a_dropped_token_is_that_one_only,
            erasing_an_account_rewrites_only_its_records_of_only_that_tenant,
            installs_and_forge_installations_are_scheduled_in_their_slot,
            a_slot_pages_through_each_tenant_exactly_once,
            a_purge_takes_everything_of_the_tenant_and_nothing_else_in_bounded_steps,
        );
    )*};
}

full_contract!(memory, embedded, dynamo);

// Persistent adapters only: memory keeps secrets in memory by design.
mod raw {
    // Not the embedded file: redb is copy-on-write and does not scrub freed pages, so the bytes of
    // a deleted listing stay in the file until the page is reused (see the embedded store's docs;
    // its own tests check that no live row names a closed account).
    contract!(embedded: the_raw_data_shows_no_secret_in_plain_text, the_raw_data_shows_no_system_token_in_plain_text);
    contract!(dynamo: the_raw_data_shows_no_secret_in_plain_text, the_raw_data_shows_no_system_token_in_plain_text, the_raw_data_keeps_only_the_hash_of_a_closed_account, the_raw_data_keeps_nothing_of_a_purged_tenant);
}

// ---------------------------------------------------------------------------------------------
// Adapter-specific behaviour

#[tokio::test]
async fn embedded_secrets_stay_readable_after_the_local_key_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        store
            .save_install(
                &tenant("ck-old", "sealed-under-key-1", "https://o.example/wiki", T0),
                T0,
            )
            .await
            .unwrap();
    }
    let key_file = dir.path().join(EmbeddedStore::KEY_FILE_NAME);
    LocalKeyCipher::rotate(&key_file).unwrap();
    let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
    store
        .save_install(
            &tenant("ck-new", "sealed-under-key-2", "https://n.example/wiki", T0),
            T0,
        )
        .await
        .unwrap();
    let old = store.get_tenant(&ck("ck-old"), T0).await.unwrap().unwrap();
    assert_eq!(old.shared_secret.expose_secret(), "sealed-under-key-1");
    let new = store.get_tenant(&ck("ck-new"), T0).await.unwrap().unwrap();
    assert_eq!(new.shared_secret.expose_secret(), "sealed-under-key-2");
}

#[tokio::test]
async fn embedded_store_with_another_key_file_cannot_open_secrets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_with_local_key(dir.path()).unwrap();
        store
            .save_install(&tenant("ck", "s", "https://o.example/wiki", T0), T0)
            .await
            .unwrap();
    }
    let other_key = tempfile::tempdir().unwrap();
    let cipher = LocalKeyCipher::open_or_create(other_key.path().join("k.json")).unwrap();
    let store = EmbeddedStore::open(dir.path(), Arc::new(cipher)).unwrap();
    let err = store.get_tenant(&ck("ck"), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto { .. }), "{err:?}");
}

#[tokio::test]
async fn dynamo_secrets_stay_readable_after_the_kms_key_changes() {
    let (old, old_key, table) = dynamo_with_key(None, None).await;
    old.store
        .save_install(
            &tenant("ck-k", "under-old-kms-key", "https://k.example/wiki", T0),
            T0,
        )
        .await
        .unwrap();
    old.store
        .put_token(&ck("ck-k"), &token_key("u"), &token("old-token", T0 + 60))
        .await
        .unwrap();

    // A new process configured with a new KMS key: no cached data keys, a different key id.
    let sdk = local_sdk_config(&aws_endpoint()).await;
    let new_key = local_kms_key(&sdk).await;
    assert_ne!(new_key, old_key);
    let (new, _, _) = dynamo_with_key(Some(new_key), Some(table)).await;
    let got = new
        .store
        .get_tenant(&ck("ck-k"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.shared_secret.expose_secret(), "under-old-kms-key");
    let got = new
        .store
        .get_token(&ck("ck-k"), &token_key("u"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.access_token.expose_secret(), "old-token");
    new.store
        .save_install(
            &tenant("ck-k2", "under-new-kms-key", "https://k.example/wiki", T0),
            T0,
        )
        .await
        .unwrap();
    let got = old
        .store
        .get_tenant(&ck("ck-k2"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.shared_secret.expose_secret(), "under-new-kms-key");
}

#[tokio::test]
async fn a_corrupt_dynamo_item_is_a_corrupt_error_not_a_panic() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let put = |sk: &str, extra: Vec<(&str, AttributeValue)>| {
        let mut req = client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("ck-bad".into()))
            .item("sk", AttributeValue::S(sk.into()));
        for (k, v) in extra {
            req = req.item(k, v);
        }
        req.send()
    };
    put("TENANT", vec![("state", AttributeValue::S("bogus".into()))])
        .await
        .unwrap();
    let err = b.store.get_tenant(&ck("ck-bad"), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    put(
        "SETTINGS",
        vec![("document", AttributeValue::S("{not json".into()))],
    )
    .await
    .unwrap();
    let err = b.store.get_settings(&ck("ck-bad"), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let k = token_key("u");
    put(
        &format!("TOKEN#{}", k.as_str()),
        vec![("expires_at", AttributeValue::S("soon".into()))],
    )
    .await
    .unwrap();
    let err = b.store.get_token(&ck("ck-bad"), &k, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    // A secret that is not a valid ciphertext for this tenant.
    put(
        &format!("TOKEN#{}", k.as_str()),
        vec![
            ("expires_at", AttributeValue::N((T0 + 60).to_string())),
            (
                "access_token",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                    1, 2, 0, 1, b'x',
                ])),
            ),
        ],
    )
    .await
    .unwrap();
    let err = b.store.get_token(&ck("ck-bad"), &k, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto { .. }), "{err:?}");
}

/// The installation and link items, as the table holds them.
async fn forge_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &InstallationId,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(id.as_str().into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap()
}

#[tokio::test]
async fn dynamo_forge_items_are_keyed_by_the_installation_and_carry_the_retention_ttl() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let raw_id = "88888888-0000-0000-0000-000000000001";
    let id = installation_id(raw_id);
    b.store
        .record_installation(&installation(raw_id, "tok", T0, T0), T0)
        .await
        .unwrap();
    b.store
        .link_installation(&id, &ck("ck-linked"), T0)
        .await
        .unwrap();
    let ttl = |items: &[std::collections::HashMap<String, AttributeValue>], sk: &str| {
        let item = items
            .iter()
            .find(|i| i["sk"] == AttributeValue::S(sk.into()))
            .unwrap_or_else(|| panic!("no {sk} item in {items:?}"));
        item.get("expires_at").cloned()
    };
    let items = forge_items(client, &table, &id).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        ttl(&items, "FORGE#INSTALLATION"),
        Some(AttributeValue::N((T0 + FORGE_RET).to_string()))
    );
    assert_eq!(ttl(&items, "FORGE#LINK"), None, "a link has no TTL");
    let link = items
        .iter()
        .find(|i| i["sk"] == AttributeValue::S("FORGE#LINK".into()))
        .unwrap();
    assert_eq!(link["client_key"], AttributeValue::S("ck-linked".into()));
    // Another record renews the TTL, also when its token is not the newer one.
    b.store
        .record_installation(&installation(raw_id, "older", T0 - 1, T0 + 60), T0 + 60)
        .await
        .unwrap();
    let items = forge_items(client, &table, &id).await;
    assert_eq!(
        ttl(&items, "FORGE#INSTALLATION"),
        Some(AttributeValue::N((T0 + 60 + FORGE_RET).to_string()))
    );
}

#[tokio::test]
async fn a_corrupt_dynamo_forge_item_is_a_corrupt_error_and_a_record_or_link_repairs_it() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let raw_id = "99999999-0000-0000-0000-000000000001";
    let id = installation_id(raw_id);
    let put = |sk: &str, extra: Vec<(&str, AttributeValue)>| {
        let mut req = client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S(id.as_str().into()))
            .item("sk", AttributeValue::S(sk.into()));
        for (k, v) in extra {
            req = req.item(k, v);
        }
        req.send()
    };
    let num = |v: i64| AttributeValue::N(v.to_string());
    let text = |v: &str| AttributeValue::S(v.into());
    // Each way an installation item can be broken: a TTL that is no number, an issued_at that is
    // no number, a field missing.
    let broken: Vec<Vec<(&str, AttributeValue)>> = vec![
        vec![("expires_at", text("soon"))],
        vec![
            ("expires_at", num(T0 + 100)),
            ("token_issued_at", text("later")),
            ("created_at", num(T0)),
        ],
        vec![
            ("expires_at", num(T0 + 100)),
            ("token_issued_at", num(T0)),
            ("created_at", num(T0)),
        ],
    ];
    for (i, attrs) in broken.into_iter().enumerate() {
        put("FORGE#INSTALLATION", attrs).await.unwrap();
        let err = b.store.get_installation(&id, T0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{i}: {err:?}");
        let at = T0 + 1 + i64::try_from(i).unwrap();
        let recorded = b
            .store
            .record_installation(&installation(raw_id, "repaired", at, at), at)
            .await
            .unwrap();
        let got = b.store.get_installation(&id, at).await.unwrap().unwrap();
        assert_same(&recorded, &got);
        assert_eq!(got.system_token.token.expose_secret(), "repaired", "{i}");
    }
    // A token that is not a ciphertext for this installation.
    put(
        "FORGE#INSTALLATION",
        vec![
            ("expires_at", num(T0 + 100)),
            ("token_issued_at", num(T0)),
            ("token_expires_at", num(T0 + 60)),
            ("created_at", num(T0)),
            ("updated_at", num(T0)),
            ("app_id", text("a")),
            ("cloud_id", text("c")),
            (
                "api_base_url",
                text("https://api.atlassian.com/ex/confluence/c"),
            ),
            (
                "system_token",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                    1, 2, 0, 1, b'x',
                ])),
            ),
        ],
    )
    .await
    .unwrap();
    let err = b.store.get_installation(&id, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Crypto { .. }), "{err:?}");
    b.store
        .record_installation(&installation(raw_id, "fixed", T0 + 1, T0 + 1), T0 + 1)
        .await
        .unwrap();
    // A link naming no valid clientKey; linking again repairs it.
    put("FORGE#LINK", vec![("client_key", num(7))])
        .await
        .unwrap();
    let err = b.store.get_installation(&id, T0 + 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    b.store
        .link_installation(&id, &ck("ck-good"), T0 + 2)
        .await
        .unwrap();
    let got = b
        .store
        .get_installation(&id, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.tenant_key, ck("ck-good"));
    assert_eq!(got.system_token.token.expose_secret(), "fixed");
}

/// The tenant's parked items, as the table holds them (a strongly consistent Query of its
/// partition for `PARKED#`).
async fn parked_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    client_key: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", AttributeValue::S(client_key.into()))
        .expression_attribute_values(":prefix", AttributeValue::S("PARKED#".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap()
}

#[tokio::test]
async fn dynamo_parked_items_are_one_per_page_with_the_ttl_and_the_time_index() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let ms = T0 * 1000;
    b.store
        .park(&parked_job("ck-pi", "7", ms + 1_500, "first"))
        .await
        .unwrap();
    let replaced = ParkedJob {
        outcome: EditOutcome::Failed,
        dead_lettered: true,
        ..parked_job("ck-pi", "7", ms + 2_500, "second")
    };
    b.store.park(&replaced).await.unwrap();
    // Audit records share the index partition: they are never listed as parked jobs.
    b.store
        .append(&audit("ck-pi", "7", ms + 3_000, "audit"), 3600)
        .await
        .unwrap();
    let items = parked_items(client, &table, "ck-pi").await;
    assert_eq!(items.len(), 1, "one item per page: {items:?}");
    let item = &items[0];
    let text = |s: &str| AttributeValue::S(s.into());
    assert_eq!(item["sk"], text("PARKED#7"));
    assert_eq!(item["gsi1pk"], text("ck-pi"));
    assert_eq!(
        item["gsi1sk"],
        text(&format!("PARKEDAT#{:020}#7", ms + 2_500))
    );
    assert_eq!(
        item["expires_at"],
        AttributeValue::N((T0 + 2 + PARKED_RET).to_string())
    );
    assert_eq!(item["at_ms"], AttributeValue::N((ms + 2_500).to_string()));
    assert_eq!(item["outcome"], text("failed"));
    assert_eq!(item["dead_lettered"], AttributeValue::Bool(true));
    assert_eq!(item["job"], text(&replaced.job));
    // The job's accountId is in no key: only in the job's text, which expires.
    for key in ["pk", "sk", "gsi1pk", "gsi1sk"] {
        let AttributeValue::S(value) = &item[key] else {
            panic!("{key} is no string")
        };
        assert!(!value.contains("parked-user"), "{key}: {value}");
    }
    let listed = b
        .store
        .list_parked(&ck("ck-pi"), None, 10, T0)
        .await
        .unwrap();
    assert_eq!(listed.jobs, [replaced]);
    b.store.unpark(&ck("ck-pi"), &page("7")).await.unwrap();
    assert!(parked_items(client, &table, "ck-pi").await.is_empty());
    assert_eq!(
        b.store
            .list_parked(&ck("ck-pi"), None, 10, T0)
            .await
            .unwrap(),
        ParkedPage::default()
    );
}

#[tokio::test]
async fn a_corrupt_dynamo_parked_item_is_a_corrupt_error_not_a_panic() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let ms = T0 * 1000;
    // A sound item, as the store writes it, with some attributes replaced or left out.
    let put = |client_key: &str, sk: &str, changes: Vec<(&str, Option<AttributeValue>)>| {
        let mut item = std::collections::HashMap::from([
            ("pk".to_owned(), AttributeValue::S(client_key.into())),
            ("sk".to_owned(), AttributeValue::S(sk.into())),
            ("gsi1pk".to_owned(), AttributeValue::S(client_key.into())),
            (
                "gsi1sk".to_owned(),
                AttributeValue::S(format!("PARKEDAT#{ms:020}#7")),
            ),
            ("at_ms".to_owned(), AttributeValue::N(ms.to_string())),
            ("outcome".to_owned(), AttributeValue::S("blocked".into())),
            ("reason".to_owned(), AttributeValue::S("why".into())),
            ("dead_lettered".to_owned(), AttributeValue::Bool(false)),
            ("job".to_owned(), AttributeValue::S("{}".into())),
            (
                "expires_at".to_owned(),
                AttributeValue::N((T0 + PARKED_RET).to_string()),
            ),
        ]);
        for (name, value) in changes {
            match value {
                Some(v) => item.insert(name.to_owned(), v),
                None => item.remove(name),
            };
        }
        client
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
    };
    // The sound item reads back: the corruptions below are what fails.
    put("ck-pc-0", "PARKED#7", vec![]).await.unwrap();
    let good = b
        .store
        .parked(&ck("ck-pc-0"), &page("7"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((good.at_ms, good.reason.as_str()), (ms, "why"));
    assert_eq!(
        b.store
            .list_parked(&ck("ck-pc-0"), None, 10, T0)
            .await
            .unwrap()
            .jobs,
        [good]
    );
    /// Attributes to replace (`Some`) or leave out (`None`).
    type Changes = Vec<(&'static str, Option<AttributeValue>)>;
    let cases: Vec<(&str, Changes, bool)> = vec![
        // (sort key, changes, whether `parked` of page 7 fails too; else only the listing)
        (
            "PARKED#7",
            vec![("outcome", Some(AttributeValue::S("bogus".into())))],
            true,
        ),
        ("PARKED#7", vec![("reason", None)], true),
        (
            "PARKED#7",
            vec![("dead_lettered", Some(AttributeValue::S("no".into())))],
            true,
        ),
        (
            "PARKED#7",
            vec![("at_ms", Some(AttributeValue::S("soon".into())))],
            true,
        ),
        (
            "PARKED#7",
            vec![("expires_at", Some(AttributeValue::S("later".into())))],
            true,
        ),
        // Without a TTL it would never expire: listed, it fails rather than hides.
        ("PARKED#7", vec![("expires_at", None)], true),
        (
            "PARKED#7",
            vec![("job", Some(AttributeValue::N("1".into())))],
            true,
        ),
        // Listed at another time than it was parked: the order and the cursor would be wrong.
        (
            "PARKED#7",
            vec![("at_ms", Some(AttributeValue::N((ms + 1).to_string())))],
            false,
        ),
        // A sort key that names no page.
        ("PARKED#seven", vec![], false),
    ];
    for (i, (sk, changes, read_fails)) in cases.into_iter().enumerate() {
        let tenant = format!("ck-pc-{}", i + 1);
        put(&tenant, sk, changes).await.unwrap();
        let err = b
            .store
            .list_parked(&ck(&tenant), None, 10, T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{i}: {err:?}");
        if read_fails {
            let err = b
                .store
                .parked(&ck(&tenant), &page("7"), T0)
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{i}: {err:?}");
        }
        // A park of the page repairs it (sound sort key only).
        if sk == "PARKED#7" {
            let job = parked_job(&tenant, "7", ms, "repaired");
            b.store.park(&job).await.unwrap();
            assert_eq!(
                b.store.parked(&ck(&tenant), &page("7"), T0).await.unwrap(),
                Some(job.clone())
            );
            assert_eq!(
                b.store
                    .list_parked(&ck(&tenant), None, 10, T0)
                    .await
                    .unwrap()
                    .jobs,
                [job]
            );
        }
    }
}

/// No server needed: a closed port stands for DynamoDB and KMS being down.
#[tokio::test]
async fn an_unreachable_dynamodb_or_kms_is_unavailable_not_a_panic() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let sdk = local_sdk_config(&endpoint).await;
    let cipher = KmsCipher::from_config(
        &sdk,
        &KmsConfig {
            key_id: "alias/none".into(),
            endpoint_url: Some(endpoint.clone()),
            region: None,
        },
    );
    let config = DynamoConfig {
        table_name: "t".into(),
        endpoint_url: Some(endpoint),
        region: None,
    };
    let store = DynamoStore::from_config(&sdk, &config, Arc::new(cipher));
    let err = store.get_tenant(&ck("ck"), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store
        .mark_once(&ck("ck"), &mark("m"), 60, T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let id = installation_id("00000000-0000-0000-0000-000000000000");
    let err = store.get_installation(&id, T0).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let err = store
        .link_installation(&id, &ck("ck"), T0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    // Sealing needs KMS first: that is unavailable too, and says which service failed.
    let err = store
        .save_install(&tenant("ck", "s", "https://x.example/wiki", T0), T0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { ref reason } if reason.contains("KMS")),
        "{err:?}"
    );
    assert!(!err.to_string().contains("\"s\""));
}

async fn partition_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap()
}

#[tokio::test]
async fn dynamo_schedule_entries_flagged_listings_and_erased_audit_items_are_as_documented() {
    let (b, _, table) = dynamo_with_key(None, None).await;
    let Raw::Table { client, .. } = &b.raw else {
        unreachable!()
    };
    let s = |v: &str| AttributeValue::S(v.into());
    // A schedule entry: `#REPORT#<two digits>`, the tenant key, and nothing else (no TTL).
    let tenant_key = ck("ck-layout");
    b.store
        .save_install(&tenant("ck-layout", "s", "https://l.example/wiki", T0), T0)
        .await
        .unwrap();
    let slot_pk = format!("#REPORT#{:02}", report_slot(&tenant_key));
    assert_eq!(slot_pk.len(), "#REPORT#00".len());
    let entries = partition_items(client, &table, &slot_pk).await;
    assert_eq!(
        entries,
        [std::collections::HashMap::from([
            ("pk".to_owned(), s(&slot_pk)),
            ("sk".to_owned(), s("ck-layout")),
        ])]
    );

    // A close of an account never listed: a flagged listing, retrieved at the close.
    let gone = account("557058:layout-gone");
    b.store
        .close_account(&tenant_key, &gone, T0 + 5)
        .await
        .unwrap();
    let items = partition_items(client, &table, "ck-layout").await;
    let listing = items
        .iter()
        .find(|i| i["sk"] == s("ACCOUNT#557058:layout-gone"))
        .unwrap();
    let n = |v: i64| AttributeValue::N(v.to_string());
    assert_eq!(listing.get("closed_at"), Some(&n(T0 + 5)));
    assert_eq!(listing.get("retrieved_at"), Some(&n(T0 + 5)));
    assert_eq!(listing.len(), 4, "{listing:?}");

    // An erased audit item: the same item but for its record.
    let mut record = audit("ck-layout", "4", T0 * 1000, "job-layout");
    record.acted_as = ActedAs::User(gone.clone());
    b.store.append(&record, 3600).await.unwrap();
    let audit_item = |items: Vec<std::collections::HashMap<String, AttributeValue>>| {
        items
            .into_iter()
            .find(|i| matches!(&i["sk"], AttributeValue::S(sk) if sk.starts_with("AUDIT#")))
            .unwrap()
    };
    let before = audit_item(partition_items(client, &table, "ck-layout").await);
    assert_eq!(b.store.erase_account(&tenant_key, &gone).await.unwrap(), 1);
    let after = audit_item(partition_items(client, &table, "ck-layout").await);
    let mut unchanged = after.clone();
    unchanged.insert("record".into(), before["record"].clone());
    assert_eq!(unchanged, before, "only the record changes");
    let AttributeValue::S(text) = &after["record"] else {
        panic!("{after:?}")
    };
    assert!(!text.contains(gone.as_str()) && text.contains(AccountId::ERASED));
    b.store.forget_account(&tenant_key, &gone).await.unwrap();
    let items = partition_items(client, &table, "ck-layout").await;
    assert!(!format!("{items:?}").contains(gone.as_str()), "{items:?}");
}
