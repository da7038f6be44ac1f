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
use understudy_core::{
    AccountReport, AccountReporting, AccountStatus, Door, MAX_ACCOUNTS_PER_REPORT, ReportAnswer,
    ReportError, report_tenant,
};
use understudy_domain::{
    AccountId, AccountRegistry, ClosedAccountKey, DEFAULT_REPORT_CYCLE_SECONDS, MemoryStore, Tenant,
};

const NOW: i64 = 1_900_000_000;

#[derive(Default)]
struct Scripted {
    batches: Mutex<Vec<Vec<AccountReport>>>,
    /// Answer the n-th call (0-based) with this error.
    fail_at: Option<(usize, ReportError)>,
    closed: Vec<String>,
    updated: Vec<String>,
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
            cycle_period: Some(86_400),
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
        ..Scripted::default()
    };
    let t = tenant();
    let run = report_tenant(
        &store,
        &api,
        Door::Connect(&t),
        NOW,
        DEFAULT_REPORT_CYCLE_SECONDS,
        10_000,
    )
    .await
    .unwrap();
    let sizes: Vec<usize> = api.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![90, 90, 20]);
    assert_eq!((run.reported, run.batches, run.updated), (200, 3, 1));
    assert_eq!(run.closed, vec![account(5)]);
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
        DEFAULT_REPORT_CYCLE_SECONDS,
        10_000,
    )
    .await
    .unwrap();
    assert_eq!((run.reported, run.batches), (0, 0));
    let later = NOW + DEFAULT_REPORT_CYCLE_SECONDS;
    let run = report_tenant(
        &store,
        &again,
        Door::Connect(&t),
        later,
        DEFAULT_REPORT_CYCLE_SECONDS,
        10_000,
    )
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
    let run = report_tenant(
        &store,
        &limited,
        Door::Connect(&t),
        NOW,
        DEFAULT_REPORT_CYCLE_SECONDS,
        10_000,
    )
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
        DEFAULT_REPORT_CYCLE_SECONDS,
        10_000,
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
    let run = report_tenant(
        &store,
        &api,
        Door::Connect(&t),
        NOW,
        DEFAULT_REPORT_CYCLE_SECONDS,
        100,
    )
    .await
    .unwrap();
    assert_eq!(run.reported, 100);
    let sizes: Vec<usize> = api.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![90, 10]);
}
