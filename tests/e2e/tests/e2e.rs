//! The whole mission, end to end: Confluence (the simulator) installs the app, people edit pages,
//! webhooks become queued jobs, and the worker edits as the app, as the user, or grants itself
//! access, leaving an audit trail. The app is the local app: the same handlers as on Lambda.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use confluence_sim::{EditVia, Endpoint, Fault, SimConfig, Simulator};
use connect_auth::CONTEXT_QSH;
use e2e_tests::{REVIEWED, World, now, rules, start_app, start_app_with};
use serde_json::json;
use test_support::ConnectToken;
use understudy_domain::{ActedAs, AuditLog, EditOutcome, EditStrategy};

fn last_via(world: &World, page: &str) -> EditVia {
    world
        .sim
        .page(page)
        .unwrap()
        .history
        .last()
        .unwrap()
        .via
        .clone()
}

fn app_revisions(world: &World, page: &str) -> usize {
    world
        .sim
        .page(page)
        .unwrap()
        .history
        .iter()
        .filter(|r| {
            matches!(
                r.via,
                EditVia::AppUser { .. } | EditVia::Impersonation { .. }
            )
        })
        .count()
}

#[tokio::test]
async fn an_open_page_is_edited_as_the_app() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.open_page.clone();
    let deliveries = w
        .sim
        .edit_page_as(&w.demo.bob, &page, "<p>Bob's draft</p>")
        .await
        .unwrap();
    assert!(
        deliveries.iter().all(|d| d.acknowledged()),
        "{deliveries:?}"
    );
    w.settle().await;

    let p = w.sim.page(&page).unwrap();
    assert!(p.body.ends_with(REVIEWED), "{}", p.body);
    assert!(matches!(last_via(&w, &page), EditVia::AppUser { .. }));
    let audit = w.audit(&page).await;
    let edited: Vec<_> = audit
        .iter()
        .filter(|r| r.outcome == EditOutcome::Edited)
        .collect();
    assert_eq!(edited.len(), 1, "{audit:?}");
    assert_eq!(edited[0].acted_as, ActedAs::App);
    assert_eq!(edited[0].strategy, EditStrategy::AsApp);
    assert_eq!(edited[0].version_after, Some(p.version));
}

#[tokio::test]
async fn a_view_restricted_page_is_edited_as_the_user_by_impersonation() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.view_restricted_page.clone();
    w.sim
        .edit_page_as(&w.demo.alice, &page, "<p>Alice only</p>")
        .await
        .unwrap();
    w.settle().await;

    assert_eq!(w.count_in_page(&page, REVIEWED), 1);
    let last = w.sim.page(&page).unwrap().history.last().unwrap().clone();
    assert!(
        matches!(last.via, EditVia::Impersonation { .. }),
        "{last:?}"
    );
    assert_eq!(last.by, w.demo.alice);
    let audit = w.audit(&page).await;
    let edited = audit
        .iter()
        .find(|r| r.outcome == EditOutcome::Edited)
        .unwrap();
    assert_eq!(edited.strategy, EditStrategy::Impersonate);
    assert_eq!(
        edited.acted_as,
        ActedAs::User(understudy_domain::AccountId::parse(&w.demo.alice).unwrap())
    );
    // The audit record names Alice: she is listed for personal data reporting.
    let listed = understudy_domain::AccountRegistry::list_accounts(
        &**w.app.store(),
        &w.client_key(),
        None,
        10,
    )
    .await
    .unwrap();
    assert!(
        listed
            .accounts
            .iter()
            .any(|a| a.account.as_str() == w.demo.alice),
        "{listed:?}"
    );
}

#[tokio::test]
async fn an_edit_restricted_page_is_edited_as_the_user_by_impersonation() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.edit_restricted_page.clone();
    w.sim
        .edit_page_as(&w.demo.alice, &page, "<p>Alice's text</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 1);
    assert!(matches!(last_via(&w, &page), EditVia::Impersonation { .. }));
    // The restriction is as it was: nobody was added.
    let p = w.sim.page(&page).unwrap();
    assert_eq!(p.restrictions.update.users, vec![w.demo.alice.clone()]);
}

#[tokio::test]
async fn with_the_grant_policy_the_app_is_added_to_the_existing_restriction_and_edits_as_itself() {
    let w = World::new(&rules("grant")).await;
    let page = w.demo.edit_restricted_page.clone();
    w.sim
        .edit_page_as(&w.demo.alice, &page, "<p>Alice's text</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 1);
    assert!(matches!(last_via(&w, &page), EditVia::AppUser { .. }));
    let app_user = w.sim.installation("understudy").unwrap().app_account_id;
    let p = w.sim.page(&page).unwrap();
    assert!(
        p.restrictions.update.users.contains(&app_user),
        "{:?}",
        p.restrictions
    );
    assert!(p.restrictions.update.users.contains(&w.demo.alice));
    assert!(
        p.restrictions.read.users.is_empty(),
        "no read restriction was created"
    );
    let audit = w.audit(&page).await;
    assert!(
        audit
            .iter()
            .any(|r| r.strategy == EditStrategy::Grant && r.outcome == EditOutcome::Edited),
        "{audit:?}"
    );
}

#[tokio::test]
async fn without_act_as_user_a_restricted_page_is_blocked_and_the_audit_says_why() {
    let w = World::new(&rules("impersonate")).await;
    // An install from before the descriptor asked for ACT_AS_USER carries no oauthClientId.
    w.drop_act_as_user().await;

    let page = w.demo.edit_restricted_page.clone();
    let before = w.sim.page(&page).unwrap().version;
    w.sim
        .edit_page_as(&w.demo.alice, &page, "<p>Alice's text</p>")
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(
        w.sim.page(&page).unwrap().version,
        before + 1,
        "only Alice's edit"
    );
    let audit = w.audit(&page).await;
    let blocked = audit
        .iter()
        .find(|r| r.outcome == EditOutcome::Blocked)
        .unwrap();
    assert!(blocked.reason.contains("ACT_AS_USER"), "{}", blocked.reason);
}

#[tokio::test]
async fn a_secret_rotated_mid_run_is_used_from_then_on() {
    let w = World::new(&rules("impersonate")).await;
    let old = w.sim.installation("understudy").unwrap().shared_secret;
    w.sim
        .edit_page_as(&w.demo.bob, &w.demo.open_page, "<p>one</p>")
        .await
        .unwrap();
    w.settle().await;
    w.sim.reinstall_with_new_secret("understudy").await.unwrap();
    let new = w.sim.installation("understudy").unwrap().shared_secret;
    assert_ne!(old, new);
    // Both the app-user path and the impersonation path work with the new secret.
    w.sim
        .edit_page_as(&w.demo.bob, &w.demo.open_page, "<p>two</p>")
        .await
        .unwrap();
    w.sim
        .edit_page_as(&w.demo.alice, &w.demo.edit_restricted_page, "<p>three</p>")
        .await
        .unwrap();
    w.settle().await;
    assert!(
        w.sim
            .page(&w.demo.open_page)
            .unwrap()
            .body
            .ends_with(REVIEWED)
    );
    assert!(
        w.sim
            .page(&w.demo.edit_restricted_page)
            .unwrap()
            .body
            .ends_with(REVIEWED)
    );
    assert!(matches!(
        last_via(&w, &w.demo.edit_restricted_page),
        EditVia::Impersonation { .. }
    ));
}

#[tokio::test]
async fn after_uninstall_a_stale_webhook_is_refused() {
    let w = World::new(&rules("impersonate")).await;
    let deliveries = w
        .sim
        .edit_page_as(&w.demo.bob, &w.demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    w.settle().await;
    w.sim.uninstall("understudy").await.unwrap();
    let stale = w.sim.redeliver(&deliveries[0]).await;
    assert_eq!(stale.status, Some(401), "{stale:?}");
    w.settle().await;
}

#[tokio::test]
async fn duplicate_deliveries_make_one_edit() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.open_page.clone();
    let deliveries = w
        .sim
        .edit_page_as(&w.demo.bob, &page, "<p>x</p>")
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(w.sim.redeliver(&deliveries[0]).await.acknowledged());
    }
    w.settle().await;
    assert_eq!(w.count_in_page(&page, REVIEWED), 1);
    assert_eq!(app_revisions(&w, &page), 1);
}

#[tokio::test]
async fn the_apps_own_edit_triggers_a_webhook_but_no_second_edit() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.open_page.clone();
    let before = w.sim.deliveries().len();
    w.sim
        .edit_page_as(&w.demo.bob, &page, "<p>x</p>")
        .await
        .unwrap();
    w.settle().await;
    let deliveries = w.sim.deliveries();
    assert!(
        deliveries.len() >= before + 2,
        "the app's own edit fired page_updated too"
    );
    let version = w.sim.page(&page).unwrap().version;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.settle().await;
    assert_eq!(w.sim.page(&page).unwrap().version, version, "no loop");
    assert_eq!(app_revisions(&w, &page), 1);
    let audit = w.audit(&page).await;
    assert!(
        audit.iter().any(|r| r.outcome == EditOutcome::Unchanged),
        "the follow-up was audited as unchanged"
    );
}

#[tokio::test]
async fn in_a_429_storm_every_edit_lands_once() {
    let w = World::new(&rules("impersonate")).await;
    let pages = [
        w.demo.open_page.clone(),
        w.demo.edit_restricted_page.clone(),
        w.demo.view_restricted_page.clone(),
    ];
    w.sim.fail_next(
        Endpoint::AnyConfluence,
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        4,
    );
    w.sim.fail_next(
        Endpoint::UpdatePage,
        Fault::TooManyRequests { retry_after: None },
        3,
    );
    w.sim.fail_next(
        Endpoint::OAuthToken,
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        2,
    );
    for page in &pages {
        w.sim
            .edit_page_as(&w.demo.alice, page, "<p>storm</p>")
            .await
            .unwrap();
    }
    w.settle().await;
    for page in &pages {
        assert_eq!(w.count_in_page(page, REVIEWED), 1, "page {page}");
        assert_eq!(app_revisions(&w, page), 1, "page {page}");
    }
    let rate_limited = w.sim.requests().iter().filter(|r| r.status == 429).count();
    assert!(
        rate_limited >= 9,
        "the storm happened: {rate_limited} answers were 429"
    );
    assert!(w.app.queue().dead_letters().await.unwrap().is_empty());
}

#[tokio::test]
async fn two_tenants_at_once_do_not_cross_talk() {
    let a = World::new(&rules("impersonate")).await;
    let b = Simulator::start(SimConfig {
        webhooks_require_app_view: false,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let b_demo = b.seed_demo().unwrap();
    b.install(a.app.base_url()).await.unwrap();
    assert_ne!(a.sim.client_key(), b.client_key());

    let (ra, rb) = tokio::join!(
        a.sim
            .edit_page_as(&a.demo.alice, &a.demo.edit_restricted_page, "<p>A</p>"),
        b.edit_page_as(&b_demo.bob, &b_demo.open_page, "<p>B</p>"),
    );
    ra.unwrap();
    rb.unwrap();
    a.settle().await;
    assert!(
        a.sim
            .page(&a.demo.edit_restricted_page)
            .unwrap()
            .body
            .ends_with(REVIEWED)
    );
    assert!(b.page(&b_demo.open_page).unwrap().body.ends_with(REVIEWED));
    // Each site saw only its own tenant's traffic, and each tenant's audit only its own pages.
    assert_eq!(a.sim.page(&a.demo.open_page).unwrap().version, 1);
    let b_key = understudy_domain::ClientKey::parse(b.client_key()).unwrap();
    let b_audit = a
        .app
        .store()
        .list_for_tenant(&b_key, None, 100, now())
        .await
        .unwrap()
        .records;
    assert!(b_audit.iter().all(|r| r.client_key == b_key));
    assert!(
        b_audit
            .iter()
            .any(|r| r.page_id.as_str() == b_demo.open_page)
    );
    // Through the edit API, tenant A's token reads only tenant A's records, even for a page id that
    // also exists on B's site, where B's records for it are stored in the same app.
    assert_eq!(
        a.demo.open_page, b_demo.open_page,
        "both sites number their pages alike"
    );
    a.sim
        .edit_page_as(&a.demo.bob, &a.demo.open_page, "<p>A too</p>")
        .await
        .unwrap();
    a.settle().await;
    let audit: serde_json::Value = a
        .get_audit(&a.demo.bob, &b_demo.open_page, "")
        .await
        .json()
        .await
        .unwrap();
    let records = audit["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r["client_key"] == a.sim.client_key().as_str()),
        "{audit}"
    );
    // And B's secret cannot be used to speak for A.
    let forged = ConnectToken::with_qsh(&a.sim.client_key(), CONTEXT_QSH, now())
        .user(&a.demo.bob)
        .sign(&b.installation("understudy").unwrap().shared_secret);
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/api/pages/{}/audit",
            a.app.addr(),
            a.demo.open_page
        ))
        .header("authorization", format!("JWT {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_edit_api_acts_as_the_calling_user_and_never_as_the_app() {
    let w = World::new(&rules("impersonate")).await;
    let http = reqwest::Client::new();
    let page = w.demo.open_page.clone();
    let url = format!("http://{}/api/pages/{page}/edits", w.app.addr());
    let body = json!({"edit": [{"append": "<p>Carol was here</p>"}]});

    // Carol may view the open page but not edit it (a reader in the space): Confluence refuses,
    // and the app does not step in. Her refusal stays out of the page's audit trail (anyone could
    // bury a page's history under refusals otherwise).
    let before = w.sim.page(&page).unwrap().version;
    let r = w.post_edit(&w.demo.carol, &page, &body).await;
    assert_eq!(r.status(), 403);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["audit"]["outcome"], "blocked");
    assert_eq!(answer["audited"], false);
    assert_eq!(
        w.sim.page(&page).unwrap().version,
        before,
        "no edit as the app"
    );

    // Bob may edit: the edit lands as Bob, by impersonation.
    let r = w.post_edit(&w.demo.bob, &page, &body).await;
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["audit"]["outcome"], "edited");
    assert_eq!(
        answer["audit"]["acted_as"]["account_id"],
        w.demo.bob.as_str()
    );
    // Bob's version (the webhook his edit fires may already have the app stamp the page after
    // it, so it is looked up by number, not taken as the last one).
    let saved = answer["audit"]["version_after"].as_u64().unwrap();
    let bobs = w
        .sim
        .page(&page)
        .unwrap()
        .history
        .into_iter()
        .find(|r| r.number == saved)
        .unwrap();
    assert_eq!(bobs.by, w.demo.bob);
    assert!(matches!(bobs.via, EditVia::Impersonation { .. }));
    w.settle().await;

    // The audit route lists Bob's edit, and not Carol's refusal.
    let audit: serde_json::Value = w
        .get_audit(&w.demo.bob, &page, "")
        .await
        .json()
        .await
        .unwrap();
    let records = audit["records"].as_array().unwrap();
    assert!(
        records.iter().all(|r| r["outcome"] != "blocked"),
        "{records:?}"
    );
    assert!(records.iter().any(|r| r["outcome"] == "edited"));

    // A request-bound (non-context) token, or none, is refused.
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn queued_jobs_survive_a_restart_of_the_local_app() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let data = tempfile::tempdir().unwrap();
    let app = start_app(&sim, &rules("impersonate"), data.path()).await;
    sim.install(app.base_url()).await.unwrap();
    // Confluence answers 503 for a while: the job is accepted but cannot finish yet.
    sim.fail_next(Endpoint::GetPage, Fault::ServerError(503), 1_000);
    sim.edit_page_as(&demo.bob, &demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base_url = app.base_url().to_owned();
    app.shutdown().await;
    sim.clear_faults();

    let app = start_app(&sim, &rules("impersonate"), data.path()).await;
    assert_ne!(
        app.base_url(),
        base_url,
        "a new port; the job needs no callback to the app"
    );
    assert!(app.wait_idle(Duration::from_secs(60)).await);
    assert!(sim.page(&demo.open_page).unwrap().body.ends_with(REVIEWED));
    app.shutdown().await;
}

#[tokio::test]
async fn with_the_worker_off_events_wait_in_the_queue_and_no_page_is_touched() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let data = tempfile::tempdir().unwrap();
    let off = [("LOCAL_WORKER", "off")];
    let app = start_app_with(&sim, &rules("impersonate"), data.path(), &off).await;
    sim.install(app.base_url()).await.unwrap();
    sim.edit_page_as(&demo.bob, &demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    let deliveries = sim.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(sim.redeliver(&deliveries[0]).await.acknowledged());
    // Long enough for a running worker to have made the edit (the other scenarios take less).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.queue().pending().await.unwrap(), 1, "queued once");
    assert!(!sim.page(&demo.open_page).unwrap().body.contains(REVIEWED));
    app.shutdown().await;

    let app = start_app(&sim, &rules("impersonate"), data.path()).await;
    assert!(app.wait_idle(Duration::from_secs(60)).await);
    assert!(sim.page(&demo.open_page).unwrap().body.ends_with(REVIEWED));
    app.shutdown().await;
}

#[tokio::test]
async fn an_edit_through_the_api_answers_within_its_budget_and_is_audited_when_confluence_is_slow()
{
    let w = World::with_env(&rules("impersonate"), &[("LOCAL_EDIT_BUDGET_MS", "1500")]).await;
    let page = w.demo.open_page.clone();
    // Every read of the page takes 6 s: far past the edit's 1.5 s for all its calls.
    w.sim.fail_next(
        confluence_sim::Endpoint::Path {
            method: Some("GET".into()),
            contains: format!("/api/v2/pages/{page}"),
        },
        confluence_sim::Fault::Slow(Duration::from_secs(6)),
        20,
    );
    let started = std::time::Instant::now();
    let r = w
        .post_edit(
            &w.demo.bob,
            &page,
            &json!({"edit": [{"append": "<p>late</p>"}]}),
        )
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert_eq!(r.status(), 503);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["audit"]["outcome"], "failed", "{answer}");
    assert_eq!(answer["audited"], true);
    let audit = w.audit(&page).await;
    assert!(
        audit
            .iter()
            .any(|r| r.outcome == EditOutcome::Failed && r.job_id.starts_with("api:")),
        "{audit:?}"
    );
    w.sim.clear_faults();
}
