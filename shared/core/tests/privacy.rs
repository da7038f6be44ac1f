//! One tenant's personal data report run against the in-memory registry and a scripted
//! reporting API: batches of at most 90, answers applied batch by batch, nothing reported twice
//! within a cycle, an interrupted run resumed by the next.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Mutex;

use async_trait::async_trait;
use connect_auth::SecretString;
use understudy_core::{
    AccountReport, AccountReporting, AccountStatus, Door, MAX_ACCOUNTS_PER_REPORT, ReportAnswer,
    ReportError, ReportSettings, report_tenant,
};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, AuditRecord, CachedToken, ClosedAccountKey,
    DEFAULT_REPORT_CYCLE_SECONDS, EditOutcome, EditStrategy, MemoryStore, PageId, ParkedJob,
    ParkedJobs, Tenant, TokenCache, TokenCacheKey,
};

const NOW: i64 = 1_900_000_000;

#[derive(Default)]
struct Scripted {
    batches: Mutex<Vec<Vec<AccountReport>>>,
    /// Answer the n-th call (0-based) with this error.
    fail_at: Option<(usize, ReportError)>,
    closed: Vec<String>,
    updated: Vec<String>,
    /// `Cycle-Period` of every answer.
    cycle_period: Option<i64>,
}

#[async_trait]
impl AccountReporting for Scripted {
    async fn report_accounts(
        &self,
        _door: Door<'_>,
        accounts: &[AccountReport],
    ) -> Result<ReportAnswer, ReportError> {
        let mut batches = self.batches.lock().unwrap();
        if let Some((n, error)) = &self.fail_at
            && batches.len() == *n
        {
            batches.push(Vec::new());
            return Err(error.clone());
        }
        assert!(accounts.len() <= MAX_ACCOUNTS_PER_REPORT);
        batches.push(accounts.to_vec());
        let statuses = accounts
            .iter()
            .filter_map(|a| {
                if self.closed.contains(&a.account.as_str().to_owned()) {
                    Some((a.account.clone(), AccountStatus::Closed))
                } else if self.updated.contains(&a.account.as_str().to_owned()) {
                    Some((a.account.clone(), AccountStatus::Updated))
                } else {
                    None
                }
            })
            .collect();
        Ok(ReportAnswer {
            statuses,
            cycle_period: self.cycle_period,
        })
    }
}

fn tenant() -> Tenant {
    Tenant::from_install_payload(
        serde_json::json!({"key": "understudy", "clientKey": "tenant-1", "sharedSecret": "s",
                           "baseUrl": "https://site.atlassian.net/wiki"}),
        NOW,
    )
    .unwrap()
}

fn settings(max_accounts: usize) -> ReportSettings {
    ReportSettings {
        cycle_seconds: DEFAULT_REPORT_CYCLE_SECONDS,
        max_accounts,
        token_scopes: vec![String::new(), "READ WRITE".into()],
    }
}

fn account(n: usize) -> AccountId {
    AccountId::parse(format!("user-{n:04}")).unwrap()
}

async fn store_with(accounts: usize) -> MemoryStore {
    let store = MemoryStore::new();
    let key = tenant().client_key;
    for n in 0..accounts {
        store
            .note_account(&key, &account(n), NOW - 1_000)
            .await
            .unwrap();
    }
    store
}

#[tokio::test]
async fn accounts_go_in_batches_of_90_and_closed_ones_are_unlisted() {
    let store = store_with(200).await;
    let api = Scripted {
        closed: vec!["user-0005".into()],
        updated: vec!["user-0150".into()],
        cycle_period: Some(86_400),
        ..Scripted::default()
    };
    let t = tenant();
    let run = report_tenant(&store, &api, Door::Connect(&t), NOW, &settings(10_000))
        .await
        .unwrap();
    let sizes: Vec<usize> = api.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![90, 90, 20]);
    assert_eq!((run.reported, run.batches, run.updated), (200, 3, 1));
    assert_eq!((run.closed, run.erased), (1, 1));
    assert_eq!(run.cycle_period, Some(86_400));
    assert!(run.stopped.is_none());
    assert!(
        store
            .is_closed(&t.client_key, &ClosedAccountKey::new(&account(5)))
            .await
            .unwrap()
    );
    let listed = store.list_accounts(&t.client_key, None, 500).await.unwrap();
    assert_eq!(listed.accounts.len(), 199);
    let updated = listed
        .accounts
        .iter()
        .find(|a| a.account == account(150))
        .unwrap();
    assert_eq!(updated.retrieved_at, NOW);

    // Within the cycle nothing is reported again; after it, everything still listed is.
    let again = Scripted::default();
    let run = report_tenant(
        &store,
        &again,
        Door::Connect(&t),
        NOW + 60,
        &settings(10_000),
    )
    .await
    .unwrap();
    assert_eq!((run.reported, run.batches), (0, 0));
    let later = NOW + DEFAULT_REPORT_CYCLE_SECONDS;
    let run = report_tenant(&store, &again, Door::Connect(&t), later, &settings(10_000))
        .await
        .unwrap();
    assert_eq!(run.reported, 199);
}

#[tokio::test]
async fn an_interrupted_run_leaves_the_rest_due_for_the_next() {
    let store = store_with(200).await;
    let t = tenant();
    let limited = Scripted {
        fail_at: Some((1, ReportError::RateLimited { retry_after: None })),
        ..Scripted::default()
    };
    let run = report_tenant(&store, &limited, Door::Connect(&t), NOW, &settings(10_000))
        .await
        .unwrap();
    assert_eq!(run.reported, 90);
    assert!(matches!(run.stopped, Some(ReportError::RateLimited { .. })));
    let next = Scripted::default();
    let run = report_tenant(
        &store,
        &next,
        Door::Connect(&t),
        NOW + 120,
        &settings(10_000),
    )
    .await
    .unwrap();
    assert_eq!(
        run.reported, 110,
        "the 110 not reported, and none of the 90"
    );
    let reported: Vec<AccountId> = next
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|a| a.account.clone())
        .collect();
    assert!(!reported.contains(&account(0)));
}

#[tokio::test]
async fn a_run_reports_at_most_its_share() {
    let store = store_with(200).await;
    let t = tenant();
    let api = Scripted::default();
    let run = report_tenant(&store, &api, Door::Connect(&t), NOW, &settings(100))
        .await
        .unwrap();
    assert_eq!(run.reported, 100);
    let sizes: Vec<usize> = api.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![90, 10]);
}

fn record(user: Option<&AccountId>, page: &str, at_ms: i64) -> AuditRecord {
    AuditRecord {
        client_key: tenant().client_key,
        page_id: PageId::parse(page).unwrap(),
        at_ms,
        version_before: Some(1),
        version_after: Some(2),
        acted_as: user.map_or(ActedAs::App, |u| ActedAs::User(u.clone())),
        strategy: EditStrategy::Impersonate,
        outcome: EditOutcome::Edited,
        reason: "edited as the user".into(),
        job_id: format!("job-{page}-{at_ms}"),
    }
}

fn parked(user: &AccountId, page: &str) -> ParkedJob {
    ParkedJob {
        client_key: tenant().client_key,
        page_id: PageId::parse(page).unwrap(),
        at_ms: NOW * 1000,
        outcome: EditOutcome::Blocked,
        reason: "restricted".into(),
        dead_lettered: false,
        job: serde_json::json!({"page_id": page, "user": user.as_str()}).to_string(),
    }
}

#[tokio::test]
async fn a_closed_accounts_data_is_erased_everywhere_and_only_its_own() {
    let store = store_with(3).await;
    let t = tenant();
    let key = &t.client_key;
    let (gone, kept) = (account(1), account(2));
    for (n, user) in [&gone, &kept, &gone].into_iter().enumerate() {
        store
            .append(
                &record(Some(user), "100", NOW * 1000 + n as i64),
                86_400 * 90,
            )
            .await
            .unwrap();
    }
    store
        .append(&record(None, "100", NOW * 1000 + 9), 86_400 * 90)
        .await
        .unwrap();
    store.park(&parked(&gone, "100")).await.unwrap();
    store.park(&parked(&kept, "200")).await.unwrap();
    let token = CachedToken {
        access_token: SecretString::from("at-1"),
        expires_at: NOW + 600,
    };
    for user in [&gone, &kept] {
        store
            .put_token(key, &TokenCacheKey::new(user, "READ WRITE"), &token)
            .await
            .unwrap();
    }

    let api = Scripted {
        closed: vec![gone.as_str().to_owned()],
        ..Scripted::default()
    };
    let run = report_tenant(&store, &api, Door::Connect(&t), NOW, &settings(1000))
        .await
        .unwrap();
    assert_eq!((run.closed, run.erased), (1, 1));
    assert_eq!((run.audit_records_erased, run.parked_jobs_erased), (2, 1));

    let trail = store.list_for_tenant(key, None, 10, NOW).await.unwrap();
    let actors: Vec<ActedAs> = trail.records.iter().map(|r| r.acted_as.clone()).collect();
    assert_eq!(actors.len(), 4, "every edit is still on record");
    assert!(!actors.contains(&ActedAs::User(gone.clone())));
    assert_eq!(
        actors
            .iter()
            .filter(|a| **a == ActedAs::User(AccountId::erased()))
            .count(),
        2
    );
    assert!(actors.contains(&ActedAs::User(kept.clone())));
    let page = |p: &str| PageId::parse(p).unwrap();
    assert!(
        store
            .parked(key, &page("100"), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .parked(key, &page("200"), NOW)
            .await
            .unwrap()
            .is_some()
    );
    let cached = |user: &AccountId| TokenCacheKey::new(user, "READ WRITE");
    assert!(
        store
            .get_token(key, &cached(&gone), NOW)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_token(key, &cached(&kept), NOW)
            .await
            .unwrap()
            .is_some()
    );
    let listed = store.list_accounts(key, None, 10).await.unwrap();
    assert!(listed.accounts.iter().all(|a| a.account != gone));
    assert!(
        store
            .is_closed(key, &ClosedAccountKey::new(&gone))
            .await
            .unwrap()
    );
    // Closed is closed: never listed again, never reported again.
    assert!(!store.note_account(key, &gone, NOW + 1).await.unwrap());
    let later = Scripted::default();
    report_tenant(
        &store,
        &later,
        Door::Connect(&t),
        NOW + DEFAULT_REPORT_CYCLE_SECONDS,
        &settings(1000),
    )
    .await
    .unwrap();
    let reported: Vec<AccountId> = later
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|a| a.account.clone())
        .collect();
    assert_eq!(reported.len(), 2);
    assert!(!reported.contains(&gone));
}

#[tokio::test]
async fn an_erasure_a_run_left_half_way_is_finished_without_reporting_again() {
    let store = store_with(2).await;
    let t = tenant();
    let key = &t.client_key;
    let gone = account(0);
    store
        .append(&record(Some(&gone), "100", NOW * 1000), 86_400 * 90)
        .await
        .unwrap();
    // A run that stopped right after Atlassian's answer was recorded.
    store.close_account(key, &gone, NOW).await.unwrap();
    let api = Scripted::default();
    let run = report_tenant(&store, &api, Door::Connect(&t), NOW + 5, &settings(1000))
        .await
        .unwrap();
    assert_eq!(
        (run.erased, run.audit_records_erased, run.reported),
        (1, 1, 1)
    );
    let reported: Vec<AccountId> = api
        .batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .map(|a| a.account.clone())
        .collect();
    assert_eq!(reported, vec![account(1)]);
    let trail = store.list_for_tenant(key, None, 10, NOW + 5).await.unwrap();
    assert_eq!(
        trail.records[0].acted_as,
        ActedAs::User(AccountId::erased())
    );
    assert!(
        store
            .list_accounts(key, None, 10)
            .await
            .unwrap()
            .accounts
            .iter()
            .all(|a| a.account != gone)
    );
}

#[tokio::test]
async fn each_account_waits_the_cycle_its_answer_asked_for() {
    let t = tenant();
    let day = 86_400;
    for (asked, not_yet, due) in [
        (None, 7 * day - 1, 7 * day),
        (Some(3 * day), 3 * day - 1, 3 * day),
        (Some(14 * day), 13 * day, 14 * day),
    ] {
        let store = store_with(3).await;
        let first = Scripted {
            cycle_period: asked,
            ..Scripted::default()
        };
        let run = report_tenant(&store, &first, Door::Connect(&t), NOW, &settings(1000))
            .await
            .unwrap();
        assert_eq!(run.reported, 3);
        let again = Scripted::default();
        let run = report_tenant(
            &store,
            &again,
            Door::Connect(&t),
            NOW + not_yet,
            &settings(1000),
        )
        .await
        .unwrap();
        assert_eq!(run.reported, 0, "{asked:?}: not before the cycle is over");
        let run = report_tenant(
            &store,
            &again,
            Door::Connect(&t),
            NOW + due,
            &settings(1000),
        )
        .await
        .unwrap();
        assert_eq!(run.reported, 3, "{asked:?}: due once it is");
    }
}
