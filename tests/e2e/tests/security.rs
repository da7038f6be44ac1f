//! The edit API as an attacker with an ordinary user's context token would use it: an edit that
//! would grow a page without bound, reading the audit trail of a page one may not view, burying a
//! page's history under refusals, and the iframe framed by someone else's site.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

use e2e_tests::{World, now, rules};
use serde_json::{Value, json};
use test_support::ConnectToken;
use understudy_domain::{
    AccountId, ActedAs, AuditLog, AuditRecord, EditOutcome, EditStrategy, PageId,
};

#[tokio::test]
async fn an_edit_that_would_grow_the_page_without_bound_is_refused_before_any_put() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.open_page.clone();
    let before = w.sim.page(&page).unwrap();
    // 1.3 KB that would grow the page ten-fold seven times: gigabytes if it ran.
    let mut ops = vec![json!({"append": "a".repeat(1000)})];
    ops.extend((0..7).map(|_| json!({"replace": {"find": "a", "with": "aaaaaaaaaa"}})));
    let started = Instant::now();
    let r = w
        .post_edit(&w.demo.bob, &page, &json!({ "edit": ops }))
        .await;
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["audit"]["outcome"], "refused", "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Nothing was sent: the page is as it was.
    let after = w.sim.page(&page).unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.body, before.body);

    // More operations than an edit may have: refused as it is read.
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"append": format!("<p>{i}</p>")}))
        .collect();
    let r = w
        .post_edit(&w.demo.bob, &page, &json!({ "edit": many }))
        .await;
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("at most 50"),
        "{answer}"
    );

    // The app is still there for everyone.
    let r = w
        .post_edit(
            &w.demo.bob,
            &page,
            &json!({"edit": [{"append": "<p>still here</p>"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_pages_audit_trail_shows_only_to_those_who_may_view_the_page() {
    let w = World::new(&rules("impersonate")).await;
    // Alice edits the page only she may view; the app follows as her, and audits it.
    let page = w.demo.view_restricted_page.clone();
    w.sim
        .edit_page_as(&w.demo.alice, &page, "<p>Alice's plans</p>")
        .await
        .unwrap();
    w.settle().await;
    assert!(!w.audit(&page).await.is_empty());

    let r = w.get_audit(&w.demo.alice, &page, "").await;
    assert_eq!(r.status(), 200);
    let listing: Value = r.json().await.unwrap();
    assert!(!listing["records"].as_array().unwrap().is_empty());

    // Bob and Carol cannot view it: to them there is nothing here, and nothing says who edited it.
    for user in [&w.demo.bob, &w.demo.carol] {
        let r = w.get_audit(user, &page, "").await;
        assert_eq!(r.status(), 404);
        let text = r.text().await.unwrap();
        assert!(!text.contains(w.demo.alice.as_str()), "{text}");
    }
    // A page that does not exist answers the same.
    let r = w.get_audit(&w.demo.carol, "999999", "").await;
    assert_eq!(r.status(), 404);
    // A site admin sees every page's records, the ones they cannot view included.
    w.sim.set_site_admin(&w.demo.carol, true);
    let r = w.get_audit(&w.demo.carol, &page, "").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn without_act_as_user_confluence_is_asked_through_its_permission_check() {
    let w = World::new(&rules("impersonate")).await;
    w.drop_act_as_user().await;

    // The open page: the app may ask, and Carol may view it.
    let open = w.demo.open_page.clone();
    let r = w.get_audit(&w.demo.carol, &open, "").await;
    assert_eq!(r.status(), 200);
    // The view-restricted page: the app itself cannot see it, so nobody can vouch for anyone.
    let closed = w.demo.view_restricted_page.clone();
    let r = w.get_audit(&w.demo.alice, &closed, "").await;
    assert_eq!(r.status(), 404);
    assert!(
        w.sim
            .requests()
            .iter()
            .any(|r| r.path.contains("/permission/check")),
        "the permission check was asked"
    );
}

#[tokio::test]
async fn refusals_do_not_bury_the_history_and_every_record_can_be_paged_to() {
    let w = World::new(&rules("impersonate")).await;
    let page = w.demo.edit_restricted_page.clone();
    let page_id = PageId::parse(&page).unwrap();
    // A long real history: 120 records, some in the same millisecond.
    let at = now() * 1000;
    for i in 0..120_i64 {
        let record = AuditRecord {
            client_key: w.client_key(),
            page_id: page_id.clone(),
            at_ms: at - 60_000 + i / 3,
            version_before: Some(u64::try_from(i).unwrap()),
            version_after: Some(u64::try_from(i + 1).unwrap()),
            acted_as: ActedAs::User(AccountId::parse(&w.demo.alice).unwrap()),
            strategy: EditStrategy::Impersonate,
            outcome: EditOutcome::Edited,
            reason: "edited as the user".into(),
            job_id: format!("history-{i}"),
        };
        w.app.store().append(&record, 3600).await.unwrap();
    }

    // Carol (a reader) tries to edit it again and again: each refused by Confluence, none audited,
    // and past the per-user limit she is told to wait.
    let body = json!({"edit": [{"append": "<p>spam</p>"}]});
    let mut limited = None;
    for _ in 0..40 {
        let r = w.post_edit(&w.demo.carol, &page, &body).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 403);
    }
    let limited = limited.expect("the per-user limit answers 429");
    let wait: i64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // Alice follows `next` through the whole history, newest first, each record once.
    let mut seen = Vec::new();
    let mut query = String::new();
    loop {
        let r = w.get_audit(&w.demo.alice, &page, &query).await;
        assert_eq!(r.status(), 200);
        let listing: Value = r.json().await.unwrap();
        let records = listing["records"].as_array().unwrap();
        assert!(records.len() <= 50);
        seen.extend(
            records
                .iter()
                .map(|r| r["job_id"].as_str().unwrap().to_owned()),
        );
        match listing["next"].as_str() {
            Some(next) => query = format!("?before={next}"),
            None => break,
        }
    }
    // Newest first (records of one millisecond in the store's own order), each exactly once.
    let order: Vec<i64> = seen
        .iter()
        .map(|id| id.strip_prefix("history-").unwrap().parse::<i64>().unwrap() / 3)
        .collect();
    assert!(order.windows(2).all(|w| w[0] >= w[1]), "{seen:?}");
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 120, "{seen:?}");

    // A cursor that no answer gave is refused, in fixed words.
    let r = w
        .get_audit(&w.demo.alice, &page, "?before=%3Cscript%3E")
        .await;
    assert_eq!(r.status(), 400);
    assert!(!r.text().await.unwrap().contains("script"));
}

#[tokio::test]
async fn the_panel_may_be_framed_only_by_the_sites_that_may_install_the_app() {
    let w = World::new(&rules("impersonate")).await;
    let secret = w.sim.installation("understudy").unwrap().shared_secret;
    let path = "/ui/page";
    let query = format!("pageId={}", w.demo.open_page);
    let token = ConnectToken::for_request(&w.sim.client_key(), "GET", path, &query, now())
        .user(&w.demo.bob)
        .sign(&secret);
    let r = reqwest::Client::new()
        .get(format!("http://{}{path}?{query}&jwt={token}", w.app.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let policy = r.headers()["content-security-policy"].to_str().unwrap();
    // The test app allows the simulator's loopback host only.
    assert!(policy.starts_with("frame-ancestors "), "{policy}");
    assert!(policy.contains("127.0.0.1"), "{policy}");
    assert!(
        !policy.contains('*') || policy.contains("127.0.0.1:*"),
        "{policy}"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}
