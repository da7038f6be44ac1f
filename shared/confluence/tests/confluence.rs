//! What the client puts on the wire, seen by a small double of Confluence and of Atlassian's OAuth
//! server (tests/support): the app's request-bound JWT, the token exchange, and the answers only a
//! scripted server gives. Everything talks to 127.0.0.1 only. The client's other behaviour runs
//! against the Confluence simulator (tests/confluence-sim/tests/client.rs), the edit engine's
//! policy in memory (shared/core/tests/engine.rs).
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
use support::{ALICE, CLIENT_KEY, Double, DoublePage, Who};
use test_support::confluence::{ClientHarness, test_retries};
use understudy_confluence::{ClientConfig, ConfluenceError};
use understudy_core::{Edit, EditMode, EditResult, RestrictedPagePolicy};
use understudy_domain::{
    AccountId, ActedAs, ClientKey, EditOutcome, EditStrategy, MemoryStore, PageId,
};
use url::Url;

/// The client and the engine against the double, on the double's clock.
struct Harness {
    double: Arc<Double>,
    inner: ClientHarness,
}

impl std::ops::Deref for Harness {
    type Target = ClientHarness;

    fn deref(&self) -> &ClientHarness {
        &self.inner
    }
}

async fn harness() -> Harness {
    let double = Double::start().await;
    let config = ClientConfig {
        oauth_url: Some(Url::parse(&double.oauth_url()).unwrap()),
        allow_http_loopback: true,
        retry: test_retries(),
        ..ClientConfig::default()
    };
    let clock = Arc::clone(&double.clock) as Arc<dyn Clock>;
    let inner = ClientHarness::new(config, Arc::new(MemoryStore::new()), clock);
    Harness { double, inner }
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
    async fn audit(&self) -> Vec<understudy_domain::AuditRecord> {
        let client_key = ClientKey::parse(CLIENT_KEY).unwrap();
        self.inner
            .audit(&client_key, self.double.clock.now_unix())
            .await
    }
}

// ------------------------------------------------------------- the app's JWT

#[tokio::test]
async fn the_app_edits_an_open_page_with_a_request_bound_jwt_and_a_named_version() {
    let h = harness().await;
    h.double
        .add_page("100", DoublePage::new("Plan", "<p>TODO</p>"));
    let tenant = h.double.tenant();
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
    let page = h.double.page("100");
    assert_eq!(page.body, "<p>DONE</p><p>Reviewed</p>");
    assert_eq!(page.version, 2);
    assert!(
        page.last_message.contains("Understudy"),
        "{}",
        page.last_message
    );
    // Every request was accepted as the app (the double checks signature, aud and qsh), carried a
    // User-Agent naming the app, and no GET had a body.
    let requests = h.double.requests();
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
    assert!(h.double.token_requests().is_empty());
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

// ------------------------------------------------------------- acting as a user

#[tokio::test]
async fn impersonate_edits_a_page_the_app_cannot_see_as_the_triggering_user() {
    let h = harness().await;
    h.double.add_page(
        "200",
        DoublePage {
            viewers: vec![ALICE.into()],
            ..DoublePage::new("Secret", "<p>s</p>")
        },
    );
    let tenant = h.double.tenant();

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
    assert_eq!(h.double.page("200").body, "<p>s</p><p>ok</p>");
    let requests = h.double.requests();
    assert_eq!(requests[0].who, Who::App);
    assert!(
        requests[1..]
            .iter()
            .all(|r| r.who == Who::User(ALICE.into()))
    );
    // One exchange, with the assertion exactly as docs/protocol.md §6 says (the double checked the claims).
    let tokens = h.double.token_requests();
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

// ------------------------------------------------------------- answers only a script gives

#[tokio::test]
async fn a_429_without_retry_after_uses_the_reset_header_or_jittered_backoff() {
    let h = harness().await;
    h.double.add_page("401", DoublePage::new("R", "<p>r</p>"));
    // X-RateLimit-Reset 7 s after the test clock's now.
    let reset = time::OffsetDateTime::from_unix_timestamp(support::START + 7)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    h.double.script(
        Method::GET,
        "/pages/401",
        429,
        &[("x-ratelimit-reset", &reset)],
    );
    h.double.script(Method::GET, "/pages/401", 429, &[]);
    h.double.script(Method::GET, "/pages/401", 429, &[]);
    let tenant = h.double.tenant();
    h.client.as_app(&tenant).get_page(&id("401")).await.unwrap();
    let waits = h.pause.waits();
    assert_eq!(waits.len(), 3);
    assert_eq!(waits[0], Duration::from_secs(7));
    // Retries 2 and 3: full jitter under 200 ms * 2^(n-1).
    assert!(waits[1] <= Duration::from_millis(400), "{waits:?}");
    assert!(waits[2] <= Duration::from_millis(800), "{waits:?}");
}

#[tokio::test]
async fn only_the_tenant_base_url_is_called_and_redirects_are_not_followed() {
    let h = harness().await;
    let mut tenant = h.double.tenant();
    h.double.script(
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
    assert_eq!(h.double.requests().len(), 1);
}
