//! The run's choices per tenant, with the clock moved by hand, on every store (memory, the local
//! app's redb file, DynamoDB on moto): installed tenants and Forge installations with a fresh
//! system token report, an uninstalled tenant is left alone for its retention and then deleted
//! whole, and a run visits only its hour's slot.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use connect_auth::{Clock, ManualClock, SecretString};
use serde_json::json;
use test_support::aws::aws_endpoint;
use understudy_core::{
    AccountReport, AccountReporting, AccountStatus, Door, ReportAnswer, ReportError, ReportSettings,
};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, AuditRecord, ClientKey, EditOutcome,
    EditStrategy, ForgeInstallation, ForgeInstallations, InstallationId, MemoryStore, PageId,
    ParkedJobs, SettingsStore, SystemToken, Tenant, TenantSettings, TenantStore, TokenCache,
    UNINSTALLED_RETENTION_SECONDS, report_slot, report_slot_at,
};
use understudy_privacy::{PrivacyRunner, Visit};
use understudy_store::EmbeddedStore;
use understudy_store::testing::local_dynamo_store;

const T0: i64 = 1_900_000_000;

/// Records who reported what; names `closed` accounts closed.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<(ClientKey, &'static str, Vec<AccountId>)>>,
    closed: Vec<AccountId>,
}

#[async_trait]
impl AccountReporting for Recorder {
    async fn report_accounts(
        &self,
        door: Door<'_>,
        accounts: &[AccountReport],
    ) -> Result<ReportAnswer, ReportError> {
        self.calls.lock().unwrap().push((
            door.tenant_key().clone(),
            door.name(),
            accounts.iter().map(|a| a.account.clone()).collect(),
        ));
        Ok(ReportAnswer {
            statuses: accounts
                .iter()
                .filter(|a| self.closed.contains(&a.account))
                .map(|a| (a.account.clone(), AccountStatus::Closed))
                .collect(),
            cycle_period: None,
        })
    }
}

fn tenant(client_key: &str) -> Tenant {
    Tenant::from_install_payload(
        json!({"key": "understudy", "clientKey": client_key, "sharedSecret": "s",
               "baseUrl": "https://site.atlassian.net/wiki"}),
        T0,
    )
    .unwrap()
}

fn user(n: u32) -> AccountId {
    AccountId::parse(format!("557058:user-{n}")).unwrap()
}

fn record(client_key: &ClientKey, account: &AccountId) -> AuditRecord {
    AuditRecord {
        client_key: client_key.clone(),
        page_id: PageId::parse("42").unwrap(),
        at_ms: T0 * 1000,
        version_before: Some(1),
        version_after: Some(2),
        acted_as: ActedAs::User(account.clone()),
        strategy: EditStrategy::Impersonate,
        outcome: EditOutcome::Edited,
        reason: "edited".into(),
        job_id: "job-1".into(),
    }
}

/// Every port the run and these tests use.
trait Store:
    AccountRegistry
    + AuditLog
    + ParkedJobs
    + TokenCache
    + TenantStore
    + ForgeInstallations
    + SettingsStore
    + 'static
{
}
impl<T> Store for T where
    T: AccountRegistry
        + AuditLog
        + ParkedJobs
        + TokenCache
        + TenantStore
        + ForgeInstallations
        + SettingsStore
        + 'static
{
}

/// Runs `case` on every store the run works on: in memory, the local app's redb file, and
/// DynamoDB (on the test command's moto server).
async fn each_store<F, Fut>(case: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    case(Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    case(Arc::new(
        EmbeddedStore::open_with_local_key(dir.path()).unwrap(),
    ))
    .await;
    let (dynamo, _, _, _) = local_dynamo_store(&aws_endpoint(), None, None).await;
    case(Arc::new(dynamo)).await;
}

fn runner<S: Store + ?Sized>(
    store: &Arc<S>,
    api: &Arc<Recorder>,
    clock: &Arc<ManualClock>,
) -> PrivacyRunner<S> {
    PrivacyRunner::new(
        store.clone(),
        api.clone(),
        ReportSettings::default(),
        clock.clone(),
    )
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test]
async fn an_installed_tenant_reports_and_an_uninstalled_one_is_deleted_after_its_retention() {
    each_store(retention).await;
}

async fn retention(store: Arc<dyn Store>) {
    let clock = ManualClock::at(T0);
    let api = Arc::new(Recorder::default());
    let t = tenant("tenant-a");
    let key = t.client_key.clone();
    store.save_install(&t, T0).await.unwrap();
    store.note_account(&key, &user(1), T0).await.unwrap();
    store
        .append(&record(&key, &user(1)), 90 * 86_400)
        .await
        .unwrap();
    store
        .put_settings(
            &key,
            &TenantSettings {
                document: json!({"policy": "skip"}),
            },
            T0,
        )
        .await
        .unwrap();
    let run = runner(&store, &api, &clock);

    match run.visit(&key, soon()).await.unwrap() {
        Visit::Reported(report) => assert_eq!(report.reported, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(api.calls.lock().unwrap()[0].1, "connect");

    store.mark_uninstalled(&key, T0 + 10).await.unwrap();
    assert!(matches!(
        run.visit(&key, soon()).await.unwrap(),
        Visit::Skipped(_)
    ));
    // Retained: the audit trail is still there the day before the retention ends.
    clock.set(T0 + 10 + UNINSTALLED_RETENTION_SECONDS - 86_400);
    assert!(matches!(
        run.visit(&key, soon()).await.unwrap(),
        Visit::Skipped(_)
    ));
    let now = clock.now_unix();
    assert_eq!(
        store
            .list_for_tenant(&key, None, 10, now)
            .await
            .unwrap()
            .records
            .len(),
        1
    );

    clock.set(T0 + 10 + UNINSTALLED_RETENTION_SECONDS + 1);
    assert_eq!(
        run.visit(&key, soon()).await.unwrap(),
        Visit::Purged { done: true }
    );
    let now = clock.now_unix();
    assert!(
        store
            .list_for_tenant(&key, None, 10, now)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert!(
        store
            .list_accounts(&key, None, 10)
            .await
            .unwrap()
            .accounts
            .is_empty()
    );
    assert!(store.get_settings(&key, now).await.unwrap().is_none());
    let slot = store
        .scheduled_tenants(report_slot(&key), None, 100)
        .await
        .unwrap();
    assert!(!slot.tenants.contains(&key), "taken off the schedule");
}

fn installation(raw: &str, issued_at: i64) -> ForgeInstallation {
    let id = InstallationId::parse(format!("ari:cloud:ecosystem::installation/{raw}")).unwrap();
    ForgeInstallation {
        tenant_key: id.own_tenant_key(),
        id,
        app_id: "ari:cloud:ecosystem::app/00000000-0000-0000-0000-000000000001".into(),
        cloud_id: "cloud-1".into(),
        api_base_url: "https://api.atlassian.com/ex/confluence/cloud-1".into(),
        system_token: SystemToken::received(SecretString::from("system-token"), issued_at),
        created_at: issued_at,
        updated_at: issued_at,
    }
}

#[tokio::test]
async fn a_forge_installation_reports_with_a_fresh_system_token_only() {
    each_store(forge_installation).await;
}

async fn forge_installation(store: Arc<dyn Store>) {
    let clock = ManualClock::at(T0);
    let api = Arc::new(Recorder {
        closed: vec![user(2)],
        ..Recorder::default()
    });
    let seen = installation("11111111-0000-0000-0000-000000000001", T0);
    let key = seen.tenant_key.clone();
    store.record_installation(&seen, T0).await.unwrap();
    store.note_account(&key, &user(2), T0).await.unwrap();
    store
        .append(&record(&key, &user(2)), 90 * 86_400)
        .await
        .unwrap();
    let run = runner(&store, &api, &clock);

    clock.set(T0 + 3 * 3600);
    assert!(matches!(
        run.visit(&key, soon()).await.unwrap(),
        Visit::Skipped(_)
    ));
    assert!(api.calls.lock().unwrap().is_empty());

    store
        .record_installation(
            &installation("11111111-0000-0000-0000-000000000001", T0 + 3 * 3600),
            T0 + 3 * 3600,
        )
        .await
        .unwrap();
    match run.visit(&key, soon()).await.unwrap() {
        Visit::Reported(report) => assert_eq!((report.closed, report.erased), (1, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(api.calls.lock().unwrap()[0].1, "forge");
    let records = store
        .list_for_tenant(&key, None, 10, clock.now_unix())
        .await
        .unwrap()
        .records;
    assert_eq!(records[0].acted_as, ActedAs::User(AccountId::erased()));
}

#[tokio::test]
async fn a_run_visits_the_tenants_of_its_hour_only() {
    let store = Arc::new(MemoryStore::new());
    let api = Arc::new(Recorder::default());
    let mut by_slot: std::collections::BTreeMap<u32, Vec<ClientKey>> = Default::default();
    for i in 0..60 {
        let t = tenant(&format!("tenant-{i}"));
        store.save_install(&t, T0).await.unwrap();
        store
            .note_account(&t.client_key, &user(i), T0)
            .await
            .unwrap();
        by_slot
            .entry(report_slot(&t.client_key))
            .or_default()
            .push(t.client_key);
    }
    let (&slot, expected) = by_slot.iter().max_by_key(|(_, v)| v.len()).unwrap();
    // The first second of the hour whose slot that is.
    let clock = ManualClock::at((T0 / 86_400) * 86_400 + i64::from(slot) * 3600);
    assert_eq!(report_slot_at(clock.now_unix()), slot);
    let run = runner(&store, &api, &clock).run_this_hour(soon()).await;
    assert_eq!(run.visited, expected.len());
    assert_eq!(run.accounts_reported, expected.len());
    let reported: Vec<ClientKey> = api
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    let mut want = expected.clone();
    want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(reported, want);

    // By hand, every slot: the other tenants too, and nobody twice within the cycle.
    let all = runner(&store, &api, &clock).run_every_slot(soon()).await;
    assert_eq!(all.visited, 60);
    assert_eq!(all.accounts_reported, 60 - expected.len());
}
