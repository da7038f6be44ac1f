//! The client, the token cache and the edit engine against a local double of Confluence and of
//! Atlassian's OAuth server (tests/support). Everything talks to 127.0.0.1 only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use connect_auth::Clock;
use support::{ALICE, APP_ACCOUNT, BOB, CLIENT_KEY, Sim, SimPage, Who};
use understudy_confluence::{
    ClientConfig, ConfluenceClient, ConfluenceError, RetryPolicy, Scopes, TokenError, VirtualPause,
};
use understudy_core::{
    BlockedCause, Edit, EditEngine, EditJob, EditMode, EditReport, EditResult, EngineSettings,
    RestrictedPagePolicy,
};
use understudy_domain::{
    AccountId, ActedAs, AuditLog, ClientKey, EditOutcome, EditStrategy, MemoryStore, PageId,
    Tenant, TokenCache,
};
use url::Url;

struct Harness {
    sim: Arc<Sim>,
    store: Arc<MemoryStore>,
    pause: Arc<VirtualPause>,
    client: ConfluenceClient,
    engine: EditEngine,
}

fn config(sim: &Sim) -> ClientConfig {
    ClientConfig {
        oauth_url: Some(Url::parse(&sim.oauth_url()).unwrap()),
        allow_http_loopback: true,
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            total_deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
        },
        ..ClientConfig::default()
    }
}

async fn harness() -> Harness {
    let sim = Sim::start().await;
    harness_on(sim, Arc::new(MemoryStore::new()), |c| c)
}

fn harness_on(
    sim: Arc<Sim>,
    store: Arc<MemoryStore>,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Harness {
    let pause = Arc::new(VirtualPause::new());
    let client = ConfluenceClient::with_time(
        adjust(config(&sim)),
        Arc::clone(&store) as Arc<dyn TokenCache>,
        Arc::clone(&sim.clock) as Arc<dyn Clock>,
        Arc::clone(&pause) as _,
    )
    .unwrap();
    let engine = EditEngine::new(
        Arc::new(client.clone()),
        Arc::clone(&store) as Arc<dyn AuditLog>,
        Arc::clone(&sim.clock) as Arc<dyn Clock>,
        EngineSettings {
            max_conflict_retries: 3,
            ..EngineSettings::default()
        },
    );
    Harness {
        sim,
        store,
        pause,
        client,
        engine,
    }
}

fn id(s: &str) -> PageId {
    PageId::parse(s).unwrap()
}

fn account(s: &str) -> AccountId {
    AccountId::parse(s).unwrap()
}

fn append(fragment: &str) -> Edit {
    Edit::from_json(&serde_json::json!([{ "append": fragment }]).to_string()).unwrap()
}

fn app_first(policy: RestrictedPagePolicy, user: Option<&str>) -> EditMode {
    EditMode::AppFirst {
        policy,
        user: user.map(account),
    }
}

impl Harness {
    async fn run(&self, tenant: &Tenant, page: &str, edit: &Edit, mode: &EditMode) -> EditReport {
        let page_id = id(page);
        self.engine
            .execute(EditJob {
                tenant,
                page_id: &page_id,
                edit,
                mode,
                job_id: "job-1",
            })
            .await
    }

    async fn audit(&self) -> Vec<understudy_domain::AuditRecord> {
        self.store
            .list_for_tenant(
                &ClientKey::parse(CLIENT_KEY).unwrap(),
                None,
                100,
                self.sim.clock.now_unix(),
            )
            .await
            .unwrap()
            .records
    }
}

// ---------------------------------------------------------------- as the app

#[tokio::test]
async fn the_app_edits_an_open_page_with_a_request_bound_jwt_and_a_named_version() {
    let h = harness().await;
    h.sim.add_page("100", SimPage::new("Plan", "<p>TODO</p>"));
    let tenant = h.sim.tenant();
    let edit = Edit::from_json(
        r#"[{"append": "<p>Reviewed</p>"}, {"replace": {"find": "TODO", "with": "DONE"}}]"#,
    )
    .unwrap();

    let report = h
        .run(
            &tenant,
            "100",
            &edit,
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;

    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(
        (report.version_before, report.version_after),
        (Some(1), Some(2))
    );
    assert_eq!(
        (report.acted_as.clone(), report.strategy),
        (ActedAs::App, EditStrategy::AsApp)
    );
    let page = h.sim.page("100");
    assert_eq!(page.body, "<p>DONE</p><p>Reviewed</p>");
    assert_eq!(page.version, 2);
    assert!(
        page.last_message.contains("Understudy"),
        "{}",
        page.last_message
    );
    // Every request was accepted as the app (the double checks signature, aud and qsh), carried a
    // User-Agent naming the app, and no GET had a body.
    let requests = h.sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.who, Who::App, "{} {}", r.method, r.path);
        assert!(r.user_agent.starts_with("understudy/"), "{}", r.user_agent);
        if r.method == Method::GET {
            assert!(r.body.is_empty());
            assert_eq!(r.query, "body-format=storage");
        } else {
            assert_eq!(r.content_type, "application/json");
        }
    }
    assert!(h.sim.token_requests().is_empty());
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, EditOutcome::Edited);
    assert_eq!(audit[0].strategy, EditStrategy::AsApp);
    assert_eq!(
        (audit[0].version_before, audit[0].version_after),
        (Some(1), Some(2))
    );
    assert_eq!(audit[0].job_id, "job-1");
    assert!(report.audited);
}

#[tokio::test]
async fn an_edit_that_would_make_the_page_too_large_is_audited_as_refused_with_no_put() {
    let h = harness().await;
    h.sim.add_page("190", SimPage::new("Plan", "<p>a</p>"));
    let tenant = h.sim.tenant();
    // Each replace multiplies every `a` by ten: 10^7 of them after seven.
    let mut ops = vec![serde_json::json!({"append": "a".repeat(10)})];
    ops.extend((0..7).map(|_| serde_json::json!({"replace": {"find": "a", "with": "aaaaaaaaaa"}})));
    let edit = Edit::from_value(serde_json::Value::Array(ops)).unwrap();
    let report = h
        .run(
            &tenant,
            "190",
            &edit,
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;
    assert!(
        matches!(report.result, EditResult::Refused(_)),
        "{}",
        report.reason()
    );
    assert!(!report.is_transient(), "the worker must not retry it");
    assert_eq!(h.sim.count(Method::PUT, "/pages/190"), 0);
    assert_eq!(h.sim.page("190").version, 1);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, EditOutcome::Refused);
    assert!(audit[0].reason.contains("more than"), "{}", audit[0].reason);
}

#[tokio::test]
async fn a_users_own_request_that_confluence_refuses_stays_out_of_the_audit_trail() {
    let h = harness().await;
    h.sim.add_page("191", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "191",
            &append("<p>spam</p>"),
            &EditMode::AsUserOnly(account(BOB)),
        )
        .await;
    assert!(
        matches!(report.result, EditResult::Blocked(_)),
        "{}",
        report.reason()
    );
    assert!(!report.audited);
    assert!(h.audit().await.is_empty());
    // Alice's own edit of it is audited as ever.
    let report = h
        .run(
            &tenant,
            "191",
            &append("<p>ok</p>"),
            &EditMode::AsUserOnly(account(ALICE)),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(h.audit().await.len(), 1);
}

#[tokio::test]
async fn an_edit_that_is_already_there_makes_no_put_so_the_own_webhook_does_not_loop() {
    let h = harness().await;
    h.sim.add_page("101", SimPage::new("Plan", "<p>x</p>"));
    let tenant = h.sim.tenant();
    let edit = append("<p>Reviewed</p>");
    let mode = app_first(RestrictedPagePolicy::Impersonate, Some(ALICE));

    assert_eq!(
        h.run(&tenant, "101", &edit, &mode).await.result,
        EditResult::Edited
    );
    h.sim.clock.advance(1);
    // The page_updated webhook of that edit brings the same rule back: nothing to do.
    let second = h.run(&tenant, "101", &edit, &mode).await;
    assert_eq!(second.result, EditResult::Unchanged);
    assert_eq!(second.version_before, Some(2));
    assert_eq!(h.sim.count(Method::PUT, "/pages/101"), 1);
    assert_eq!(h.sim.page("101").version, 2);
    let audit = h.audit().await;
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].outcome, EditOutcome::Unchanged);
}

#[tokio::test]
async fn a_draft_or_archived_page_is_never_saved_as_current() {
    let h = harness().await;
    h.sim.add_page(
        "102",
        SimPage {
            status: "archived".into(),
            ..SimPage::new("Old", "<p>x</p>")
        },
    );
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "102",
            &append("<p>y</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::PageNotCurrent)
    );
    assert_eq!(h.sim.count(Method::PUT, "/pages/102"), 0);
}

// ------------------------------------------------------------- restricted pages

fn view_restricted_to(users: &[&str]) -> SimPage {
    SimPage {
        read_users: users.iter().map(|u| (*u).to_owned()).collect(),
        update_users: users.iter().map(|u| (*u).to_owned()).collect(),
        ..SimPage::new("Secret", "<p>s</p>")
    }
}

#[tokio::test]
async fn impersonate_edits_a_page_the_app_cannot_see_as_the_triggering_user() {
    let h = harness().await;
    h.sim.add_page("200", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();

    let report = h
        .run(
            &tenant,
            "200",
            &append("<p>ok</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;

    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(report.acted_as, ActedAs::User(account(ALICE)));
    assert_eq!(report.strategy, EditStrategy::Impersonate);
    assert_eq!(h.sim.page("200").body, "<p>s</p><p>ok</p>");
    let requests = h.sim.requests();
    assert_eq!(requests[0].who, Who::App);
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.who == Who::User(ALICE.into()))
    );
    // One exchange, with the assertion exactly as §6 says (the double checked the claims).
    let tokens = h.sim.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].accept, "application/json");
    assert_eq!(
        tokens[0].claims["sub"],
        format!("urn:atlassian:connect:useraccountid:{ALICE}")
    );
    assert!(tokens[0].claims["aud"].is_string());
    assert!(!tokens[0].form.contains_key("scope"));
    let audit = h.audit().await;
    assert_eq!(audit[0].acted_as, ActedAs::User(account(ALICE)));
    assert_eq!(audit[0].strategy, EditStrategy::Impersonate);
    assert_eq!(audit[0].outcome, EditOutcome::Edited);
}

#[tokio::test]
async fn grant_adds_the_app_user_only_to_restrictions_that_exist_then_edits_as_the_app() {
    let h = harness().await;
    // Everyone may view; only Alice may edit.
    h.sim.add_page(
        "201",
        SimPage {
            update_users: vec![ALICE.into()],
            ..SimPage::new("Locked", "<p>l</p>")
        },
    );
    let tenant = h.sim.tenant();

    let report = h
        .run(
            &tenant,
            "201",
            &append("<p>ok</p>"),
            &app_first(RestrictedPagePolicy::Grant, Some(ALICE)),
        )
        .await;

    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(
        (report.acted_as.clone(), report.strategy),
        (ActedAs::App, EditStrategy::Grant)
    );
    let page = h.sim.page("201");
    assert_eq!(
        page.update_users,
        vec![ALICE.to_owned(), APP_ACCOUNT.to_owned()]
    );
    // No view restriction existed, so none was created (that would lock everyone else out).
    assert!(page.read_users.is_empty());
    assert_eq!(h.sim.count(Method::PUT, "/byOperation/read/user"), 0);
    assert_eq!(h.sim.count(Method::PUT, "/byOperation/update/user"), 1);
    // The grant was made as Alice, the edit as the app.
    let requests = h.sim.requests();
    let grant = requests
        .iter()
        .find(|r| r.path.ends_with("/update/user"))
        .unwrap();
    assert_eq!(grant.who, Who::User(ALICE.into()));
    assert!(grant.query.contains("accountId=app-account-1"));
    let put = requests
        .iter()
        .find(|r| r.method == Method::PUT && r.path.contains("/pages/"))
        .unwrap();
    assert_eq!(put.who, Who::App);
    assert_eq!(page.body, "<p>l</p><p>ok</p>");
}

#[tokio::test]
async fn grant_extends_both_view_and_edit_restrictions_when_both_exist() {
    let h = harness().await;
    h.sim.add_page(
        "202",
        SimPage {
            read_groups: vec!["team".into()],
            ..view_restricted_to(&[ALICE])
        },
    );
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "202",
            &append("<p>ok</p>"),
            &app_first(RestrictedPagePolicy::Grant, Some(ALICE)),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    let page = h.sim.page("202");
    assert!(page.read_users.contains(&APP_ACCOUNT.to_owned()));
    assert!(page.update_users.contains(&APP_ACCOUNT.to_owned()));
}

#[tokio::test]
async fn skip_leaves_a_restricted_page_alone_without_asking_for_a_token() {
    let h = harness().await;
    h.sim.add_page("203", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "203",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Skip, Some(ALICE)),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::SkippedByPolicy)
    );
    assert_eq!(report.strategy, EditStrategy::Skip);
    assert!(!report.is_transient());
    assert!(h.sim.token_requests().is_empty());
    assert_eq!(h.sim.requests().len(), 1);
    let audit = h.audit().await;
    assert_eq!(audit[0].outcome, EditOutcome::Blocked);
    assert!(
        audit[0].reason.contains("policy is skip"),
        "{}",
        audit[0].reason
    );
}

#[tokio::test]
async fn a_tenant_installed_without_act_as_user_gets_a_plain_outcome_not_an_http_error() {
    let h = harness().await;
    h.sim.add_page("204", view_restricted_to(&[ALICE]));
    let mut tenant = h.sim.tenant();
    tenant.oauth_client_id = None;

    let report = h
        .run(
            &tenant,
            "204",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::NoActAsUser)
    );
    assert!(
        report.reason().contains("installed without ACT_AS_USER"),
        "{}",
        report.reason()
    );

    // The client says the same when asked directly.
    let alice = account(ALICE);
    let err = h
        .client
        .as_user(&tenant, &alice)
        .get_page(&id("204"))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Token(TokenError::NoActAsUser));
    assert!(h.sim.token_requests().is_empty());
    // As-user-only mode reports it too.
    let report = h
        .run(
            &tenant,
            "204",
            &append("<p>x</p>"),
            &EditMode::AsUserOnly(account(ALICE)),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::NoActAsUser)
    );
}

#[tokio::test]
async fn invalid_grant_is_its_own_permanent_outcome() {
    let h = harness().await;
    h.sim.add_page("205", view_restricted_to(&[ALICE]));
    h.sim.lock().invalid_grant_users.insert(ALICE.into());
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "205",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::InvalidGrant)
    );
    assert!(!report.is_transient());
    let alice = account(ALICE);
    let err = h
        .client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Token(TokenError::InvalidGrant));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_user_who_may_not_edit_either_stops_with_a_cause_and_an_admin_hint() {
    let h = harness().await;
    // Bob may view (no view restriction) but only Alice may edit.
    h.sim.add_page(
        "206",
        SimPage {
            update_users: vec![ALICE.into()],
            ..SimPage::new("T", "<p>b</p>")
        },
    );
    // Only Alice may view.
    h.sim.add_page("207", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();
    let mode = app_first(RestrictedPagePolicy::Impersonate, Some(BOB));

    let cannot_edit = h.run(&tenant, "206", &append("<p>x</p>"), &mode).await;
    assert_eq!(
        cannot_edit.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    assert_eq!(cannot_edit.acted_as, ActedAs::User(account(BOB)));
    assert!(
        cannot_edit.reason().contains("an admin can:"),
        "{}",
        cannot_edit.reason()
    );

    let cannot_view = h.run(&tenant, "207", &append("<p>x</p>"), &mode).await;
    assert_eq!(
        cannot_view.result,
        EditResult::Blocked(BlockedCause::UserCannotView)
    );

    // Grant through Bob fails the same way, and changes no restriction.
    let grant = h
        .run(
            &tenant,
            "206",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Grant, Some(BOB)),
        )
        .await;
    assert_eq!(
        grant.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    assert_eq!(h.sim.page("206").update_users, vec![ALICE.to_owned()]);
    assert_eq!(h.sim.page("206").version, 1);
}

#[tokio::test]
async fn an_app_access_rule_blocks_even_the_user_and_grant_creates_no_restriction() {
    let h = harness().await;
    h.sim.add_page(
        "208",
        SimPage {
            app_access_rule: true,
            ..SimPage::new("Rule", "<p>r</p>")
        },
    );
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "208",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::UserCannotView)
    );
    assert!(
        report.reason().contains("app access rule"),
        "{}",
        report.reason()
    );

    // A page the app cannot edit although no restriction on it names anyone (space permissions):
    // grant finds nothing to extend and creates nothing.
    h.sim.add_page(
        "209",
        SimPage {
            update_users: vec![],
            ..SimPage::new("Space", "<p>s</p>")
        },
    );
    h.sim.script(Method::PUT, "/pages/209", 403, &[]);
    let grant = h
        .run(
            &tenant,
            "209",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Grant, Some(ALICE)),
        )
        .await;
    assert_eq!(
        grant.result,
        EditResult::Blocked(BlockedCause::NotARestriction)
    );
    assert_eq!(h.sim.count(Method::PUT, "/restriction/"), 0);
    assert!(h.sim.page("209").read_users.is_empty() && h.sim.page("209").update_users.is_empty());
}

#[tokio::test]
async fn with_nobody_to_act_as_a_restricted_page_is_blocked() {
    let h = harness().await;
    h.sim.add_page("210", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "210",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::NoUserToActAs)
    );
}

#[tokio::test]
async fn as_user_only_never_acts_as_the_app() {
    let h = harness().await;
    h.sim.add_page("211", SimPage::new("Open", "<p>o</p>"));
    h.sim.add_page(
        "212",
        SimPage {
            update_users: vec![ALICE.into()],
            ..SimPage::new("T", "<p>t</p>")
        },
    );
    let tenant = h.sim.tenant();

    let ok = h
        .run(
            &tenant,
            "211",
            &append("<p>x</p>"),
            &EditMode::AsUserOnly(account(BOB)),
        )
        .await;
    assert_eq!(ok.result, EditResult::Edited);
    assert_eq!(ok.acted_as, ActedAs::User(account(BOB)));
    let refused = h
        .run(
            &tenant,
            "212",
            &append("<p>x</p>"),
            &EditMode::AsUserOnly(account(BOB)),
        )
        .await;
    assert_eq!(
        refused.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    // Not a single request as the app, even though the app could have edited page 212.
    assert!(
        h.sim
            .requests()
            .iter()
            .all(|r| r.who == Who::User(BOB.into()))
    );
    assert_eq!(h.sim.page("212").version, 1);
}

// ------------------------------------------------------------------ conflicts

#[tokio::test]
async fn a_409_is_answered_by_re_reading_and_re_applying() {
    let h = harness().await;
    h.sim.add_page("300", SimPage::new("C", "<p>c</p>"));
    h.sim.lock().concurrent_edits = 2;
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "300",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(h.sim.count(Method::PUT, "/pages/300"), 3);
    assert_eq!(h.sim.count(Method::GET, "/pages/300"), 3);
    // Read at 1, two edits by someone else, saved as 4.
    assert_eq!(
        (report.version_before, report.version_after),
        (Some(1), Some(4))
    );
    assert_eq!(h.sim.page("300").body, "<p>c</p><p>x</p>");
}

#[tokio::test]
async fn a_409_storm_gives_up_after_the_bound_as_a_transient_failure() {
    let h = harness().await;
    h.sim.add_page("301", SimPage::new("C", "<p>c</p>"));
    h.sim.lock().concurrent_edits = 1_000;
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "301",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(report.result, EditResult::Failed(ConfluenceError::Conflict));
    assert!(report.is_transient());
    // The first try and three re-tries (max_conflict_retries = 3).
    assert_eq!(h.sim.count(Method::PUT, "/pages/301"), 4);
    assert_eq!(h.audit().await[0].outcome, EditOutcome::Failed);
}

// ---------------------------------------------------------------- rate limits

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_as_told() {
    let h = harness().await;
    h.sim.add_page("400", SimPage::new("R", "<p>r</p>"));
    h.sim
        .script(Method::GET, "/pages/400", 429, &[("retry-after", "3")]);
    h.sim
        .script(Method::GET, "/pages/400", 503, &[("retry-after", "2")]);
    let tenant = h.sim.tenant();
    let page = h.client.as_app(&tenant).get_page(&id("400")).await.unwrap();
    assert_eq!(page.title, "R");
    assert_eq!(
        h.pause.waits(),
        vec![Duration::from_secs(3), Duration::from_secs(2)]
    );
    assert_eq!(h.sim.count(Method::GET, "/pages/400"), 3);
}

#[tokio::test]
async fn a_429_without_retry_after_uses_the_reset_header_or_jittered_backoff() {
    let h = harness().await;
    h.sim.add_page("401", SimPage::new("R", "<p>r</p>"));
    // X-RateLimit-Reset 7 s after the test clock's now.
    let reset = time::OffsetDateTime::from_unix_timestamp(support::START + 7)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    h.sim.script(
        Method::GET,
        "/pages/401",
        429,
        &[("x-ratelimit-reset", &reset)],
    );
    h.sim.script(Method::GET, "/pages/401", 429, &[]);
    h.sim.script(Method::GET, "/pages/401", 429, &[]);
    let tenant = h.sim.tenant();
    h.client.as_app(&tenant).get_page(&id("401")).await.unwrap();
    let waits = h.pause.waits();
    assert_eq!(waits.len(), 3);
    assert_eq!(waits[0], Duration::from_secs(7));
    // Retries 2 and 3: full jitter under 200 ms * 2^(n-1).
    assert!(waits[1] <= Duration::from_millis(400), "{waits:?}");
    assert!(waits[2] <= Duration::from_millis(800), "{waits:?}");
}

#[tokio::test]
async fn a_told_wait_past_the_deadline_is_returned_to_the_caller_not_slept() {
    let h = harness().await;
    h.sim.add_page("402", SimPage::new("R", "<p>r</p>"));
    h.sim
        .script(Method::GET, "/pages/402", 429, &[("retry-after", "120")]);
    let tenant = h.sim.tenant();
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id("402"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ConfluenceError::RateLimited {
            retry_after: Some(Duration::from_secs(120))
        }
    );
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert!(h.pause.waits().is_empty());
    // And an engine run reports it as a transient failure for the queue.
    h.sim
        .script(Method::GET, "/pages/402", 429, &[("retry-after", "120")]);
    let report = h
        .run(
            &tenant,
            "402",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert!(report.is_transient());
}

#[tokio::test]
async fn server_errors_are_retried_and_then_reported_and_4xx_are_not_retried() {
    let h = harness().await;
    h.sim.add_page("403", SimPage::new("S", "<p>s</p>"));
    h.sim.script(Method::GET, "/pages/403", 500, &[]);
    h.sim.script(Method::GET, "/pages/403", 502, &[]);
    let tenant = h.sim.tenant();
    assert!(h.client.as_app(&tenant).get_page(&id("403")).await.is_ok());
    assert_eq!(h.sim.count(Method::GET, "/pages/403"), 3);

    for _ in 0..5 {
        h.sim.script(Method::GET, "/pages/403", 500, &[]);
    }
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id("403"))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Server { status: 500 });
    assert!(err.is_transient());
    assert_eq!(h.sim.count(Method::GET, "/pages/403"), 8);

    assert_eq!(
        h.client
            .as_app(&tenant)
            .get_page(&id("999"))
            .await
            .unwrap_err(),
        ConfluenceError::NotFound
    );
    assert_eq!(h.sim.count(Method::GET, "/pages/999"), 1);
}

#[tokio::test]
async fn a_put_that_failed_with_a_5xx_is_retried_safely_thanks_to_the_version() {
    let h = harness().await;
    h.sim.add_page("404", SimPage::new("P", "<p>p</p>"));
    h.sim.script(Method::PUT, "/pages/404", 503, &[]);
    let tenant = h.sim.tenant();
    let report = h
        .run(
            &tenant,
            "404",
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited);
    assert_eq!(h.sim.page("404").version, 2);
    assert_eq!(h.sim.page("404").body, "<p>p</p><p>x</p>");
}

#[tokio::test]
async fn network_errors_are_retried_and_reported_as_transient() {
    // A port nobody listens on (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sim = Sim::start().await;
    let h = harness_on(sim, Arc::new(MemoryStore::new()), |c| c);
    let mut tenant = h.sim.tenant();
    tenant.base_url = format!("http://{closed}/wiki");
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id("1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConfluenceError::Network { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(h.pause.waits().len(), 4);
}

#[tokio::test]
async fn only_the_tenant_base_url_is_called_and_redirects_are_not_followed() {
    let h = harness().await;
    let mut tenant = h.sim.tenant();
    h.sim.script(
        Method::GET,
        "/pages/500",
        302,
        &[("location", "http://127.0.0.2:1/steal")],
    );
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id("500"))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::UnexpectedStatus { status: 302 });

    tenant.base_url = "http://confluence.example.com/wiki".into();
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id("500"))
        .await
        .unwrap_err();
    assert!(matches!(err, ConfluenceError::BaseUrl { .. }), "{err:?}");
    tenant.base_url = "https://user:pw@127.0.0.1/wiki".into();
    assert!(matches!(
        h.client.as_app(&tenant).current_user().await.unwrap_err(),
        ConfluenceError::BaseUrl { .. }
    ));
    assert_eq!(h.sim.requests().len(), 1);
}

// ------------------------------------------------------------- user tokens

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_callers_share_one_token_exchange() {
    let h = harness().await;
    h.sim.lock().token_delay = Duration::from_millis(150);
    let tenant = h.sim.tenant();
    let alice = account(ALICE);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, tenant, alice) = (h.client.clone(), tenant.clone(), alice.clone());
            tokio::spawn(async move { client.as_user(&tenant, &alice).current_user().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().account_id, alice);
    }
    assert_eq!(h.sim.token_requests().len(), 1);
    assert_eq!(h.sim.count(Method::GET, "/user/current"), 32);
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_and_one_refused_midway_is_exchanged_again() {
    let h = harness().await;
    h.sim.lock().expires_in = 120;
    let tenant = h.sim.tenant();
    let alice = account(ALICE);
    let me = h.client.as_user(&tenant, &alice);
    me.current_user().await.unwrap();
    me.current_user().await.unwrap();
    assert_eq!(h.sim.token_requests().len(), 1, "a fresh token is reused");

    // 70 s later 50 s remain: less than the 60 s margin, so it is refreshed before use.
    h.sim.clock.advance(70);
    me.current_user().await.unwrap();
    assert_eq!(h.sim.token_requests().len(), 2);

    // Confluence stops honouring the token in the middle of a run (revoked): one 401, one new
    // exchange, and the request goes through.
    h.sim.lock().tokens.clear();
    assert_eq!(me.current_user().await.unwrap().account_id, alice);
    assert_eq!(h.sim.token_requests().len(), 3);
    let last = h
        .sim
        .requests()
        .into_iter()
        .rev()
        .take(2)
        .collect::<Vec<_>>();
    assert_eq!(last[1].who, Who::Nobody);
    assert_eq!(last[0].who, Who::User(ALICE.into()));

    // A token that keeps being refused ends as Unauthorized after one refresh, not a loop.
    h.sim.script(Method::GET, "/user/current", 401, &[]);
    h.sim.script(Method::GET, "/user/current", 401, &[]);
    assert_eq!(
        me.current_user().await.unwrap_err(),
        ConfluenceError::Unauthorized
    );
}

#[tokio::test]
async fn tokens_are_shared_through_the_store_with_a_new_warm_instance_and_scopes_are_sent() {
    let sim = Sim::start().await;
    let store = Arc::new(MemoryStore::new());
    let scoped = |c: ClientConfig| ClientConfig {
        user_scopes: Scopes::new(["write", "read"]),
        ..c
    };
    let first = harness_on(Arc::clone(&sim), Arc::clone(&store), scoped);
    let tenant = sim.tenant();
    let alice = account(ALICE);
    first
        .client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap();
    let second = harness_on(Arc::clone(&sim), Arc::clone(&store), scoped);
    second
        .client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap();
    let tokens = sim.token_requests();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].form["scope"], "READ WRITE");
    // The store holds it under a key without the accountId, until its expiry.
    let key = understudy_domain::TokenCacheKey::new(&alice, "READ WRITE");
    let cached = store
        .get_token(&tenant.client_key, &key, sim.clock.now_unix())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.expires_at, support::START + 900);
}

#[tokio::test]
async fn token_server_faults_are_retried_then_classified() {
    let h = harness().await;
    h.sim.script(Method::POST, "/oauth2/token", 503, &[]);
    let tenant = h.sim.tenant();
    let alice = account(ALICE);
    h.client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap();
    assert_eq!(h.sim.token_requests().len(), 2);
    // Both assertions were valid: a new one is minted for each attempt.
    for _ in 0..5 {
        h.sim.script(Method::POST, "/oauth2/token", 500, &[]);
    }
    let bob = account(BOB);
    let err = h
        .client
        .as_user(&tenant, &bob)
        .current_user()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ConfluenceError::Token(TokenError::Server { status: 500 })
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn after_a_secret_rotation_the_new_secret_signs_and_old_tokens_are_not_trusted() {
    let h = harness().await;
    h.sim.add_page("600", view_restricted_to(&[ALICE]));
    let old_tenant = h.sim.tenant();
    let mode = app_first(RestrictedPagePolicy::Impersonate, Some(ALICE));
    assert_eq!(
        h.run(&old_tenant, "600", &append("<p>1</p>"), &mode)
            .await
            .result,
        EditResult::Edited
    );
    assert_eq!(h.sim.token_requests().len(), 1);

    // Re-install with a new secret. The store still has the old token (the lifecycle handler's
    // drop did not reach it); this instance's memory has it too.
    h.sim.rotate_secret("shared-secret-two-fedcba9876543210");
    let new_tenant = h.sim.tenant();
    let report = h.run(&new_tenant, "600", &append("<p>2</p>"), &mode).await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    // The app JWT and the new assertion were signed with the new secret (the double checks).
    assert_eq!(h.sim.token_requests().len(), 2);
    assert!(!h.sim.token_requests()[1].claims.is_null());
    assert_eq!(h.sim.page("600").body, "<p>s</p><p>1</p><p>2</p>");

    // The old secret no longer works at all.
    let err = h
        .client
        .as_app(&old_tenant)
        .get_page(&id("600"))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Unauthorized);
}

#[tokio::test]
async fn the_app_users_account_id_is_asked_once_per_tenant() {
    let h = harness().await;
    let tenant = h.sim.tenant();
    assert_eq!(
        h.client.app_account_id(&tenant).await.unwrap(),
        account(APP_ACCOUNT)
    );
    assert_eq!(
        h.client.app_account_id(&tenant).await.unwrap(),
        account(APP_ACCOUNT)
    );
    assert_eq!(h.sim.count(Method::GET, "/user/current"), 1);
    assert_eq!(h.sim.requests()[0].who, Who::App);
    // After a site rename (a re-install with a new base URL) it is asked again.
    let mut renamed = tenant.clone();
    renamed.base_url = format!("http://localhost:{}/wiki", h.sim.addr.port());
    h.client.app_account_id(&renamed).await.unwrap();
    assert_eq!(h.sim.count(Method::GET, "/user/current"), 2);
}

#[tokio::test]
async fn restrictions_can_be_read_added_to_and_removed_from() {
    let h = harness().await;
    h.sim.add_page("700", view_restricted_to(&[ALICE]));
    let tenant = h.sim.tenant();
    let alice = account(ALICE);
    let me = h.client.as_user(&tenant, &alice);
    let r = me.get_restrictions(&id("700")).await.unwrap();
    assert!(r.read.lists_user(&alice) && r.update.lists_user(&alice));
    let bob = account(BOB);
    me.add_restriction_user(
        &id("700"),
        understudy_core::RestrictionOperation::Read,
        &bob,
    )
    .await
    .unwrap();
    assert!(h.sim.page("700").read_users.contains(&BOB.to_owned()));
    me.remove_restriction_user(
        &id("700"),
        understudy_core::RestrictionOperation::Read,
        &bob,
    )
    .await
    .unwrap();
    assert!(!h.sim.page("700").read_users.contains(&BOB.to_owned()));
    // The app cannot see them.
    assert_eq!(
        h.client
            .as_app(&tenant)
            .get_restrictions(&id("700"))
            .await
            .unwrap_err(),
        ConfluenceError::NotFound
    );
}
