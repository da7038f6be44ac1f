//! A Forge event's job in the worker, without Confluence: which installation it edits through,
//! and what happens when that installation's system token has run out (nothing is sent; the job
//! waits for a fresh token, then is dead-lettered with that reason).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{Clock, FixedClock, SecretString};
use understudy_confluence::ClientConfig;
use understudy_domain::{
    AuditLog, ClientKey, EditOutcome, ForgeInstallation, ForgeInstallations, InstallationId,
    MemoryStore, PageId, ParkedJobs, SYSTEM_TOKEN_TRUSTED_SECONDS, SystemToken, TenantStore,
};
use understudy_edits::worker::{EditWorker, JobOutcome};

const ISSUED: i64 = 1_900_000_000;
const PAGE: &str = "42";

fn installation_id() -> InstallationId {
    InstallationId::parse("ari:cloud:ecosystem::installation/inst-1").unwrap()
}

async fn store_with_installation() -> Arc<MemoryStore> {
    let store = Arc::new(MemoryStore::new());
    let id = installation_id();
    let installation = ForgeInstallation {
        tenant_key: id.own_tenant_key(),
        id,
        app_id: "ari:cloud:ecosystem::app/app-1".into(),
        cloud_id: "cloud-1".into(),
        // Nothing may be called: a port nobody listens on.
        api_base_url: "http://127.0.0.1:9/ex/confluence/cloud-1".into(),
        system_token: SystemToken::received(SecretString::from("system"), ISSUED),
        created_at: ISSUED,
        updated_at: ISSUED,
    };
    store
        .record_installation(&installation, ISSUED)
        .await
        .unwrap();
    store
}

fn worker(store: Arc<MemoryStore>, now: i64) -> EditWorker<MemoryStore, FixedClock> {
    let engine =
        understudy_edits::engine(ClientConfig::default(), store.clone(), "understudy").unwrap();
    EditWorker::new(store, engine, FixedClock(now), 5)
}

fn job(tenant_key: &ClientKey) -> understudy_queue::EditJobMessage {
    let mut job = test_support::queue::edit_job(tenant_key.as_str(), PAGE, "job-1");
    job.forge_installation = Some(installation_id());
    job
}

#[tokio::test]
async fn a_job_whose_system_token_ran_out_waits_then_is_dead_lettered_with_that_reason() {
    let store = store_with_installation().await;
    let key = installation_id().own_tenant_key();
    let stale = ISSUED + SYSTEM_TOKEN_TRUSTED_SECONDS;
    let w = worker(store.clone(), stale);
    // The worker counts the failed attempts itself: four waits, then the fifth gives up.
    for receive in 1..5 {
        match w.run(&job(&key), receive).await {
            JobOutcome::RetryLater { reason, .. } => {
                assert!(reason.contains("system token has expired"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    match w.run(&job(&key), 5).await {
        JobOutcome::DeadLetter { reason } => {
            assert!(reason.contains("gave up after 5 attempts"), "{reason}");
            assert!(reason.contains("system token has expired"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let audit = store
        .list_for_page(&key, &PageId::parse(PAGE).unwrap(), None, 10, stale)
        .await
        .unwrap()
        .records;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, EditOutcome::Failed);
    // Kept for the admin page's dead letters, with the reason and the job to retry.
    let parked = store
        .parked(&key, &PageId::parse(PAGE).unwrap(), stale)
        .await
        .unwrap()
        .expect("the dead-lettered job is parked");
    assert!(parked.dead_lettered);
    assert!(
        parked.reason.contains("system token has expired"),
        "{}",
        parked.reason
    );
    assert!(
        parked.job.contains("\"job_id\":\"job-1\""),
        "{}",
        parked.job
    );
}

/// Saves a Connect tenant `client_key` of the site `cloud_id`, as its install would.
async fn connect_tenant(store: &MemoryStore, client_key: &str, cloud_id: &str) -> ClientKey {
    let mut tenant = test_support::tenant(
        client_key,
        "a-shared-secret-a-shared-secret-0001",
        "https://site.atlassian.net/wiki",
        ISSUED,
    );
    tenant.cloud_id = Some(cloud_id.to_owned());
    store.save_install(&tenant, ISSUED).await.unwrap();
    tenant.client_key
}

#[tokio::test]
async fn a_job_of_a_gone_or_relinked_installation_is_dropped() {
    let store = store_with_installation().await;
    let key = installation_id().own_tenant_key();
    // The same site's Connect tenant now owns the installation (its install linked it): the
    // job, queued under the old key, is not run under the new one.
    let connect = connect_tenant(&store, "connect-tenant", "cloud-1").await;
    store
        .link_installation(&installation_id(), &connect, ISSUED)
        .await
        .unwrap();
    assert_eq!(
        worker(store.clone(), ISSUED + 1).run(&job(&key), 1).await,
        JobOutcome::Done
    );
    // Gone: silent for longer than the retention.
    let later = ISSUED + understudy_domain::FORGE_INSTALLATION_RETENTION_SECONDS;
    assert_eq!(
        worker(store.clone(), later).run(&job(&connect), 1).await,
        JobOutcome::Done
    );
    // Nothing was run: no record (the engine would date one by the system clock).
    for at in [ISSUED + 1, connect_auth::SystemClock.now_unix()] {
        let records = store.list_for_tenant(&key, None, 10, at).await.unwrap();
        assert!(records.records.is_empty(), "{records:?}");
    }
}

#[tokio::test]
async fn a_link_to_another_sites_tenant_is_not_followed() {
    let store = store_with_installation().await;
    let key = installation_id().own_tenant_key();
    let elsewhere = connect_tenant(&store, "other-site", "another-cloud").await;
    store
        .link_installation(&installation_id(), &elsewhere, ISSUED)
        .await
        .unwrap();
    // The job stays the installation's own: it is run and audited there (it fails: this
    // client refuses the plain-http API base URL), never dropped or moved to the other site.
    worker(store.clone(), ISSUED + 1).run(&job(&key), 1).await;
    // The engine dates its records by the system clock.
    let listed_at = connect_auth::SystemClock.now_unix();
    let page = PageId::parse(PAGE).unwrap();
    let own = store
        .list_for_page(&key, &page, None, 10, listed_at)
        .await
        .unwrap()
        .records;
    assert_eq!(own.len(), 1, "{own:?}");
    assert!(own[0].reason.contains("base URL refused"), "{own:?}");
    assert_eq!(
        worker(store.clone(), ISSUED + 1)
            .run(&job(&elsewhere), 1)
            .await,
        JobOutcome::Done,
        "a job queued under the other site's key is not run"
    );
    let theirs = store
        .list_for_tenant(&elsewhere, None, 10, listed_at)
        .await
        .unwrap()
        .records;
    assert!(theirs.is_empty(), "{theirs:?}");
}
