//! Personal data, end to end on the local app against the simulator's reporting API: the accounts
//! the app stored are reported in batches, a closed account's data is erased everywhere the app
//! keeps it (and its next job skipped without naming it), nothing is reported twice within a
//! cycle, and a run stopped by the API's 429 or 500 is taken up by the next.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use confluence_sim::privacy::{ACTIVE_TEST_ACCOUNT_ID, CLOSED_TEST_ACCOUNT_ID};
use confluence_sim::{Endpoint, Fault};
use e2e_tests::{World, now, rules};
use understudy_domain::{
    AccountId, AccountRegistry, ActedAs, AuditLog, ClosedAccountKey, EditOutcome, ParkedJobs,
};

/// The accounts the app lists for the tenant.
async fn listed(w: &World) -> Vec<String> {
    w.app
        .store()
        .list_accounts(&w.client_key(), None, 1000)
        .await
        .unwrap()
        .accounts
        .into_iter()
        .map(|a| a.account.as_str().to_owned())
        .collect()
}

/// Every accountId the reporting API was sent, in order.
fn reported(w: &World) -> Vec<String> {
    w.sim
        .report_requests()
        .iter()
        .flat_map(|r| r.accounts.iter().map(|a| a.account_id.clone()))
        .collect()
}

/// Alice edits the view-restricted page: the app edits it as her (an audit record naming her).
async fn alice_edits(w: &World, text: &str) {
    w.sim
        .edit_page_as(&w.demo.alice, &w.demo.view_restricted_page, text)
        .await
        .unwrap();
    w.settle().await;
}

#[tokio::test]
async fn a_closed_accounts_data_is_erased_and_its_next_job_skipped() {
    let w = World::new(&rules("impersonate")).await;
    alice_edits(&w, "<p>Alice only</p>").await;
    let alice = AccountId::parse(&w.demo.alice).unwrap();
    assert!(listed(&w).await.contains(&w.demo.alice));
    let key = w.client_key();

    // The first run reports her, as the app of this Connect site; Atlassian says: open.
    let run = w.app.privacy_report().await;
    assert_eq!(
        (run.visited, run.accounts_reported, run.unfinished),
        (1, 1, 0),
        "{run:?}"
    );
    let requests = w.sim.report_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].status, 204);
    assert!(matches!(
        requests[0].auth,
        Some(confluence_sim::ReportAuth::Connect { .. })
    ));

    // Within the cycle, nothing is reported again.
    let run = w.app.privacy_report().await;
    assert_eq!(run.accounts_reported, 0, "{run:?}");
    assert_eq!(w.sim.report_requests().len(), 1);

    // Her account is closed; the app learns it on her next turn in the cycle (made due here by
    // moving her next report to the past, which is what a week later looks like).
    w.sim.close_account(&w.demo.alice);
    let records_before = w.audit(&w.demo.view_restricted_page).await.len();
    w.app
        .store()
        .mark_reported(&key, &alice, now() - 1, None)
        .await
        .unwrap();
    let run = w.app.privacy_report().await;
    assert_eq!(
        (run.accounts_reported, run.accounts_erased),
        (1, 1),
        "{run:?}"
    );

    let audit = w.audit(&w.demo.view_restricted_page).await;
    assert_eq!(audit.len(), records_before, "every edit stays on record");
    assert!(
        audit
            .iter()
            .all(|r| r.acted_as != ActedAs::User(alice.clone())),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r.acted_as == ActedAs::User(AccountId::erased()))
    );
    assert!(!listed(&w).await.contains(&w.demo.alice));
    assert!(
        w.app
            .store()
            .is_closed(&key, &ClosedAccountKey::new(&alice))
            .await
            .unwrap()
    );
    let parked = w
        .app
        .store()
        .list_parked(&key, None, 100, now())
        .await
        .unwrap();
    assert!(parked.jobs.iter().all(|j| !j.names(&alice)));

    // Her next edit fires a webhook naming her: the job is skipped, audited without her name,
    // and the page is not edited in her name.
    let versions = w
        .sim
        .page(&w.demo.view_restricted_page)
        .unwrap()
        .history
        .len();
    alice_edits(&w, "<p>Alice again</p>").await;
    let after = w
        .sim
        .page(&w.demo.view_restricted_page)
        .unwrap()
        .history
        .len();
    assert_eq!(after, versions + 1, "only her own edit, no edit by the app");
    let audit = w.audit(&w.demo.view_restricted_page).await;
    let skipped = audit
        .iter()
        .find(|r| r.outcome == EditOutcome::Skipped)
        .expect("the skipped job is audited");
    assert_eq!(skipped.acted_as, ActedAs::User(AccountId::erased()));
    assert!(
        !listed(&w).await.contains(&w.demo.alice),
        "never listed again"
    );

    // And never reported again.
    let reports = w.sim.report_requests().len();
    w.app.privacy_report().await;
    assert_eq!(w.sim.report_requests().len(), reports);
    assert_eq!(
        reported(&w).iter().filter(|a| **a == w.demo.alice).count(),
        2,
        "once open, once closed, never after"
    );
    let trail = w
        .app
        .store()
        .list_for_tenant(&key, None, 1000, now())
        .await
        .unwrap();
    assert!(
        !format!("{:?}", trail.records).contains(&w.demo.alice),
        "no record names her"
    );
}

#[tokio::test]
async fn many_accounts_go_in_batches_of_90_and_a_stopped_run_is_resumed() {
    let w = World::new(&rules("impersonate")).await;
    let key = w.client_key();
    // Atlassian's two documented test accounts among them: one active, one closed.
    let mut accounts: Vec<AccountId> = (0..198)
        .map(|n| AccountId::parse(format!("557058:listed-{n:03}")).unwrap())
        .collect();
    accounts.push(AccountId::parse(ACTIVE_TEST_ACCOUNT_ID).unwrap());
    accounts.push(AccountId::parse(CLOSED_TEST_ACCOUNT_ID).unwrap());
    for account in &accounts {
        assert!(
            w.app
                .store()
                .note_account(&key, account, now() - 60)
                .await
                .unwrap()
        );
    }
    // The first report meets a 429 asking for a second: waited out within the run.
    w.sim.fail_next(
        Endpoint::ReportAccounts,
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        1,
    );
    let run = w.app.privacy_report().await;
    // The 429 was waited out (Retry-After: 1 s) within the run.
    assert_eq!((run.accounts_reported, run.unfinished), (200, 0), "{run:?}");
    let requests = w.sim.report_requests();
    assert!(requests.iter().all(|r| r.accounts.len() <= 90));
    assert_eq!(requests.iter().filter(|r| r.status == 429).count(), 1);
    let sizes: Vec<usize> = requests
        .iter()
        .filter(|r| r.status != 429)
        .map(|r| r.accounts.len())
        .collect();
    assert_eq!(sizes, vec![90, 90, 20]);
    assert_eq!(run.accounts_erased, 1, "Atlassian's closed test account");
    let still = listed(&w).await;
    assert_eq!(still.len(), 199);
    assert!(still.contains(&ACTIVE_TEST_ACCOUNT_ID.to_owned()));
    assert!(!still.contains(&CLOSED_TEST_ACCOUNT_ID.to_owned()));

    // 500s until the retries (5 attempts) give up: the run stops with the rest due, and the
    // next run takes them up without reporting again what was answered.
    for n in 200..300 {
        let account = AccountId::parse(format!("557058:listed-{n:03}")).unwrap();
        w.app
            .store()
            .note_account(&key, &account, now() - 60)
            .await
            .unwrap();
    }
    w.sim
        .fail_next(Endpoint::ReportAccounts, Fault::ServerError(500), 5);
    let run = w.app.privacy_report().await;
    assert_eq!((run.accounts_reported, run.unfinished), (0, 1), "{run:?}");
    w.sim.clear_faults();
    let before = reported(&w).len();
    let run = w.app.privacy_report().await;
    assert_eq!((run.accounts_reported, run.unfinished), (100, 0), "{run:?}");
    let again: Vec<String> = reported(&w)[before..].to_vec();
    assert!(
        again.iter().all(|a| a.as_str() >= "557058:listed-200"),
        "{again:?}"
    );
}
