//! The project's own Confluence client (understudy-confluence) against the simulator: what it sends
//! is what the simulated Confluence accepts, and what the simulator answers is what it understands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use confluence_sim::{Demo, Endpoint, Fault, Installation, SimConfig, Simulator};
use connect_auth::{Clock, ManualClock};
use serde_json::json;
use support::{ALL_SCOPES, APP_KEY, FakeApp, installed, installed_with};
use test_support::closed_port;
use test_support::confluence::{ClientHarness, test_retries};
use test_support::sim::{sim_client_config, sim_tenant as tenant};
use understudy_confluence::{
    ClientConfig, ConfluenceClient, ConfluenceError, Scopes, TokenError, VirtualPause,
};
use understudy_core::{
    Edit, EditMode, EditResult, PageUpdate, RestrictedPagePolicy, RestrictionOperation,
};
use understudy_domain::{
    AccountId, ActedAs, EditOutcome, EditStrategy, MemoryStore, PageId, Tenant, TokenCache,
    TokenCacheKey,
};

fn client(sim: &Simulator) -> (ConfluenceClient, Arc<VirtualPause>) {
    let mut config = sim_client_config(sim);
    config.retry.total_deadline = Duration::from_secs(120);
    let pause = Arc::new(VirtualPause::new());
    let client = ConfluenceClient::with_time(
        config,
        Arc::new(MemoryStore::new()),
        Arc::new(connect_auth::SystemClock),
        pause.clone(),
    )
    .unwrap();
    (client, pause)
}

/// Where the simulated clock of the protocol tests starts.
const START: i64 = 1_900_000_000;

/// A simulator on a clock the test moves by hand, with the demo site and the stub app installed.
struct Site {
    sim: Simulator,
    demo: Demo,
    installation: Installation,
    clock: Arc<ManualClock>,
    _app: FakeApp,
}

impl Site {
    async fn new(scopes: &[&str]) -> Self {
        let clock = ManualClock::at(START);
        let config = SimConfig::with_clock(Arc::clone(&clock) as Arc<dyn Clock>);
        let (sim, demo, app, installation) = installed_with(config, scopes).await;
        Self {
            sim,
            demo,
            installation,
            clock,
            _app: app,
        }
    }

    fn tenant(&self) -> Tenant {
        tenant(&self.sim, &self.installation)
    }

    /// The client on this site's clock, sharing `store`, retrying as in production but with
    /// virtual waits (recorded, not slept); `adjust` changes its configuration.
    fn harness_on(
        &self,
        store: Arc<MemoryStore>,
        adjust: impl FnOnce(ClientConfig) -> ClientConfig,
    ) -> Harness {
        let config = ClientConfig {
            retry: test_retries(),
            ..sim_client_config(&self.sim)
        };
        let clock = Arc::clone(&self.clock) as Arc<dyn Clock>;
        ClientHarness::new(adjust(config), store, clock)
    }

    fn harness(&self) -> Harness {
        self.harness_on(Arc::new(MemoryStore::new()), |c| c)
    }

    fn alice(&self) -> AccountId {
        account(&self.demo.alice)
    }

    /// Requests with `method` for the page.
    fn page_requests(&self, method: &str, page: &str) -> usize {
        self.sim
            .count(&path(Some(method), &format!("/api/v2/pages/{page}")))
    }
}

type Harness = ClientHarness;

fn path(method: Option<&str>, contains: &str) -> Endpoint {
    Endpoint::Path {
        method: method.map(str::to_owned),
        contains: contains.to_owned(),
    }
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

fn id(page: &str) -> PageId {
    PageId::parse(page).unwrap()
}

fn append(fragment: &str) -> Edit {
    Edit::from_json(&json!([{ "append": fragment }]).to_string()).unwrap()
}

fn app_first(policy: RestrictedPagePolicy, user: Option<&AccountId>) -> EditMode {
    EditMode::AppFirst {
        policy,
        user: user.cloned(),
    }
}

/// The caller the simulator recorded, for a user acting through the app.
fn as_user(account: &str) -> String {
    format!("user:{account} via {APP_KEY}")
}

#[tokio::test]
async fn the_client_reads_and_updates_pages_as_the_app_and_meets_confluences_answers() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let tenant = tenant(&sim, &installation);
    let (client, _) = client(&sim);
    let app = client.as_app(&tenant);

    let id = PageId::parse(demo.open_page.clone()).unwrap();
    let page = app.get_page(&id).await.unwrap();
    assert_eq!(page.version, 1);
    let version = app
        .update_page(&PageUpdate {
            id: &id,
            title: &page.title,
            body: "<p>app</p>",
            version: 2,
            message: "understudy",
        })
        .await
        .unwrap();
    assert_eq!(version, 2);
    let stale = app
        .update_page(&PageUpdate {
            id: &id,
            title: &page.title,
            body: "<p>again</p>",
            version: 2,
            message: "x",
        })
        .await;
    assert_eq!(stale, Err(ConfluenceError::Conflict));

    let edit_restricted = PageId::parse(demo.edit_restricted_page.clone()).unwrap();
    let page = app.get_page(&edit_restricted).await.unwrap();
    let refused = app
        .update_page(&PageUpdate {
            id: &edit_restricted,
            title: &page.title,
            body: "x",
            version: 2,
            message: "x",
        })
        .await;
    assert_eq!(refused, Err(ConfluenceError::Forbidden));
    let hidden = PageId::parse(demo.view_restricted_page.clone()).unwrap();
    assert_eq!(app.get_page(&hidden).await, Err(ConfluenceError::NotFound));

    let me = client.app_account_id(&tenant).await.unwrap();
    assert_eq!(me.as_str(), installation.app_account_id);
    let restrictions = app.get_restrictions(&edit_restricted).await.unwrap();
    assert!(
        restrictions
            .update
            .lists_user(&AccountId::parse(demo.alice.clone()).unwrap())
    );
    assert!(!restrictions.read.exists());
}

#[tokio::test]
async fn the_client_acts_as_a_user_grants_the_app_access_and_retries_through_faults() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let tenant = tenant(&sim, &installation);
    let (client, pause) = client(&sim);
    let alice = AccountId::parse(demo.alice.clone()).unwrap();
    let me = AccountId::parse(installation.app_account_id.clone()).unwrap();
    let page_id = PageId::parse(demo.edit_restricted_page.clone()).unwrap();

    sim.fail_next(
        Endpoint::OAuthToken,
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        1,
    );
    sim.fail_next(
        Endpoint::AddRestrictionUser,
        Fault::TooManyRequests { retry_after: None },
        1,
    );
    client
        .as_user(&tenant, &alice)
        .add_restriction_user(&page_id, RestrictionOperation::Update, &me)
        .await
        .unwrap();
    assert_eq!(pause.waits().first(), Some(&Duration::from_secs(3)));
    assert_eq!(pause.waits().len(), 2);
    assert!(
        sim.page(&demo.edit_restricted_page)
            .unwrap()
            .restrictions
            .update
            .users
            .contains(&installation.app_account_id)
    );

    // Now the app may edit it as itself.
    let app = client.as_app(&tenant);
    let page = app.get_page(&page_id).await.unwrap();
    app.update_page(&PageUpdate {
        id: &page_id,
        title: &page.title,
        body: "<p>granted</p>",
        version: page.version + 1,
        message: "m",
    })
    .await
    .unwrap();

    // A user token Confluence refuses is exchanged again once.
    sim.fail_next(Endpoint::GetPage, Fault::ExpiredToken, 1);
    client
        .as_user(&tenant, &alice)
        .get_page(&page_id)
        .await
        .unwrap();
    assert_eq!(sim.count(&Endpoint::OAuthToken), 3);

    sim.reject_grants_for(&demo.bob);
    let bob = AccountId::parse(demo.bob.clone()).unwrap();
    let refused = client.as_user(&tenant, &bob).get_page(&page_id).await;
    assert_eq!(
        refused,
        Err(ConfluenceError::Token(TokenError::InvalidGrant))
    );
    assert!(!refused.unwrap_err().is_transient(), "permanent");

    // Removing the grant again.
    client
        .as_user(&tenant, &alice)
        .remove_restriction_user(&page_id, RestrictionOperation::Update, &me)
        .await
        .unwrap();
    assert!(
        !sim.page(&demo.edit_restricted_page)
            .unwrap()
            .restrictions
            .update
            .users
            .contains(&installation.app_account_id)
    );
}

// ---- user tokens -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_callers_share_one_token_exchange() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let alice = site.alice();
    // A slow authorization server: every caller arrives while the first exchange is under way.
    site.sim.fail_next(
        Endpoint::OAuthToken,
        Fault::Slow(Duration::from_millis(150)),
        1,
    );
    let before = site.sim.count(&Endpoint::CurrentUser);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (client, tenant, alice) = (h.client.clone(), tenant.clone(), alice.clone());
            tokio::spawn(async move { client.as_user(&tenant, &alice).current_user().await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().account_id, alice);
    }
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 1);
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 32);
}

#[tokio::test]
async fn a_token_near_expiry_is_refreshed_and_one_revoked_midway_is_exchanged_again() {
    let site = Site::new(ALL_SCOPES).await;
    site.sim.set_token_lifetime(120);
    let h = site.harness();
    let tenant = site.tenant();
    let alice = site.alice();
    let me = h.client.as_user(&tenant, &alice);
    me.current_user().await.unwrap();
    me.current_user().await.unwrap();
    assert_eq!(
        site.sim.count(&Endpoint::OAuthToken),
        1,
        "a fresh token is reused"
    );

    // 70 s later 50 s remain: less than the 60 s margin, so it is refreshed before use.
    site.clock.advance(70);
    me.current_user().await.unwrap();
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 2);

    // Confluence stops honouring the token in the middle of a run (revoked): one 401, one new
    // exchange, and the request goes through.
    site.sim.revoke_tokens_for(&site.demo.alice);
    assert_eq!(me.current_user().await.unwrap().account_id, alice);
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 3);
    let last: Vec<_> = site
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::CurrentUser)
        .rev()
        .take(2)
        .collect();
    assert_eq!((last[1].status, last[1].caller.as_deref()), (401, None));
    assert_eq!(last[0].caller, Some(as_user(&site.demo.alice)));

    // A token that keeps being refused ends as Unauthorized after one refresh, not a loop.
    site.sim
        .fail_next(Endpoint::CurrentUser, Fault::ExpiredToken, 2);
    assert_eq!(
        me.current_user().await.unwrap_err(),
        ConfluenceError::Unauthorized
    );
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 4);
}

#[tokio::test]
async fn tokens_are_shared_through_the_store_with_a_new_warm_instance_and_scopes_are_sent() {
    let site = Site::new(ALL_SCOPES).await;
    site.sim.set_token_lifetime(900);
    let store = Arc::new(MemoryStore::new());
    let scoped = |c: ClientConfig| ClientConfig {
        user_scopes: Scopes::new(["write", "read"]),
        ..c
    };
    let tenant = site.tenant();
    let alice = site.alice();
    let first = site.harness_on(Arc::clone(&store), scoped);
    first
        .client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap();
    let second = site.harness_on(Arc::clone(&store), scoped);
    second
        .client
        .as_user(&tenant, &alice)
        .current_user()
        .await
        .unwrap();
    let exchanges = site.sim.token_exchanges();
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].scope.as_deref(), Some("READ WRITE"));
    // The store holds it under a key without the accountId, until its expiry.
    let key = TokenCacheKey::new(&alice, "READ WRITE");
    let cached = store
        .get_token(&tenant.client_key, &key, site.clock.now_unix())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cached.expires_at, START + 900);
}

#[tokio::test]
async fn token_server_faults_are_retried_then_classified() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    site.sim
        .fail_next(Endpoint::OAuthToken, Fault::ServerError(503), 1);
    h.client
        .as_user(&tenant, &site.alice())
        .current_user()
        .await
        .unwrap();
    // The retry minted a new assertion, which the server accepted.
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 2);
    assert_eq!(site.sim.token_exchanges().len(), 1);

    site.sim
        .fail_next(Endpoint::OAuthToken, Fault::ServerError(500), 5);
    let err = h
        .client
        .as_user(&tenant, &account(&site.demo.bob))
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
async fn a_site_installed_without_act_as_user_is_told_so_without_a_token_request() {
    let site = Site::new(&["READ", "WRITE"]).await;
    let h = site.harness();
    let tenant = site.tenant();
    assert!(tenant.oauth_client_id.is_none());
    let err = h
        .client
        .as_user(&tenant, &site.alice())
        .get_page(&id(&site.demo.view_restricted_page))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Token(TokenError::NoActAsUser));
    assert!(!err.is_transient());
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 0);
}

#[tokio::test]
async fn after_a_secret_rotation_the_new_secret_signs_and_old_tokens_are_not_trusted() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let page = site.demo.view_restricted_page.clone();
    let old_tenant = site.tenant();
    let alice = site.alice();
    let mode = app_first(RestrictedPagePolicy::Impersonate, Some(&alice));
    let report = h.run(&old_tenant, &page, &append("<p>1</p>"), &mode).await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 1);

    // Re-install with a new secret; tokens issued before are no longer honoured. The store still
    // has the old token (the lifecycle handler's drop did not reach it).
    let rotated = site.sim.reinstall_with_new_secret(APP_KEY).await.unwrap();
    site.sim.revoke_tokens_for(&site.demo.alice);
    let new_tenant = tenant(&site.sim, &rotated);
    let report = h.run(&new_tenant, &page, &append("<p>2</p>"), &mode).await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    // The app JWT and the new assertion were signed with the new secret (the simulator checks).
    assert_eq!(site.sim.count(&Endpoint::OAuthToken), 2);
    assert!(site.sim.token_exchanges().iter().all(|e| e.status == 200));
    assert!(
        site.sim
            .page(&page)
            .unwrap()
            .body
            .ends_with("<p>1</p><p>2</p>")
    );

    // The old secret no longer works at all.
    let err = h
        .client
        .as_app(&old_tenant)
        .get_page(&id(&site.demo.open_page))
        .await
        .unwrap_err();
    assert_eq!(err, ConfluenceError::Unauthorized);
}

#[tokio::test]
async fn the_app_users_account_id_is_asked_once_per_tenant() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let me = account(&site.installation.app_account_id);
    let before = site.sim.count(&Endpoint::CurrentUser);
    assert_eq!(h.client.app_account_id(&tenant).await.unwrap(), me);
    assert_eq!(h.client.app_account_id(&tenant).await.unwrap(), me);
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 1);
    let asked = site
        .sim
        .requests()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::CurrentUser)
        .unwrap();
    assert_eq!(asked.caller, Some(format!("app:{APP_KEY}")));
    // After a site rename (a re-install with a new base URL) it is asked again.
    let mut renamed = tenant.clone();
    renamed.base_url = format!("http://localhost:{}/wiki", site.sim.addr().port());
    h.client.app_account_id(&renamed).await.unwrap();
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 2);
}

#[tokio::test]
async fn the_app_users_account_id_is_asked_again_after_a_day() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let me = account(&site.installation.app_account_id);
    let before = site.sim.count(&Endpoint::CurrentUser);
    h.client.app_account_id(&tenant).await.unwrap();
    site.clock.advance(24 * 60 * 60 - 1);
    h.client.app_account_id(&tenant).await.unwrap();
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 1);
    site.clock.advance(1);
    assert_eq!(h.client.app_account_id(&tenant).await.unwrap(), me);
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 2);
    h.client.app_account_id(&tenant).await.unwrap();
    assert_eq!(site.sim.count(&Endpoint::CurrentUser) - before, 2);
}

// ---- restrictions ----------------------------------------------------------------------------

#[tokio::test]
async fn restrictions_can_be_read_added_to_and_removed_from() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let page = site.demo.view_restricted_page.clone();
    let alice = site.alice();
    let me = h.client.as_user(&tenant, &alice);
    let r = me.get_restrictions(&id(&page)).await.unwrap();
    assert!(r.read.lists_user(&alice) && r.update.lists_user(&alice));
    let bob = account(&site.demo.bob);
    me.add_restriction_user(&id(&page), RestrictionOperation::Read, &bob)
        .await
        .unwrap();
    let readers = |site: &Site| site.sim.page(&page).unwrap().restrictions.read.users;
    assert!(readers(&site).contains(&site.demo.bob));
    me.remove_restriction_user(&id(&page), RestrictionOperation::Read, &bob)
        .await
        .unwrap();
    assert!(!readers(&site).contains(&site.demo.bob));
    // The app cannot see them.
    assert_eq!(
        h.client
            .as_app(&tenant)
            .get_restrictions(&id(&page))
            .await
            .unwrap_err(),
        ConfluenceError::NotFound
    );
}

#[tokio::test]
async fn grant_adds_the_app_user_only_to_restrictions_that_exist_as_the_user_then_edits_as_the_app()
{
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    // Everyone may view; only Alice may edit.
    let page = site.demo.edit_restricted_page.clone();
    let alice = site.alice();
    let report = h
        .run(
            &tenant,
            &page,
            &append("<p>ok</p>"),
            &app_first(RestrictedPagePolicy::Grant, Some(&alice)),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(
        (report.acted_as.clone(), report.strategy),
        (ActedAs::App, EditStrategy::Grant)
    );
    let app_user = site.installation.app_account_id.clone();
    let now = site.sim.page(&page).unwrap();
    assert_eq!(
        now.restrictions.update.users,
        vec![site.demo.alice.clone(), app_user.clone()]
    );
    // No view restriction existed, so none was created (that would lock everyone else out).
    assert!(now.restrictions.read.users.is_empty());
    assert_eq!(
        site.sim.count(&path(Some("PUT"), "/byOperation/read/user")),
        0
    );
    assert_eq!(
        site.sim
            .count(&path(Some("PUT"), "/byOperation/update/user")),
        1
    );
    // The grant was made as Alice, the edit as the app.
    let requests = site.sim.requests();
    let grant = requests
        .iter()
        .find(|r| r.endpoint == Endpoint::AddRestrictionUser)
        .unwrap();
    assert_eq!(grant.caller, Some(as_user(&site.demo.alice)));
    assert!(
        grant.query.contains(&format!("accountId={app_user}")),
        "{}",
        grant.query
    );
    let put = requests
        .iter()
        .rfind(|r| r.endpoint == Endpoint::UpdatePage)
        .unwrap();
    assert_eq!(put.caller, Some(format!("app:{APP_KEY}")));
    assert!(now.body.ends_with("<p>ok</p>"));
}

// ---- rate limits, server errors, deadlines ---------------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_as_told() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let page = site.demo.open_page.clone();
    let get = path(Some("GET"), &format!("/api/v2/pages/{page}"));
    site.sim.fail_next(
        get.clone(),
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        1,
    );
    site.sim.fail_next(
        get,
        Fault::ServiceUnavailable {
            retry_after: Some(2),
        },
        1,
    );
    let read = h
        .client
        .as_app(&site.tenant())
        .get_page(&id(&page))
        .await
        .unwrap();
    assert_eq!(read.title, "Open page");
    assert_eq!(
        h.pause.waits(),
        vec![Duration::from_secs(3), Duration::from_secs(2)]
    );
    assert_eq!(site.page_requests("GET", &page), 3);
}

#[tokio::test]
async fn a_told_wait_past_the_deadline_is_returned_to_the_caller_not_slept() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let page = site.demo.open_page.clone();
    let too_long = Fault::TooManyRequests {
        retry_after: Some(120),
    };
    site.sim.fail_next(Endpoint::GetPage, too_long.clone(), 1);
    let err = h
        .client
        .as_app(&tenant)
        .get_page(&id(&page))
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
    site.sim.fail_next(Endpoint::GetPage, too_long, 1);
    let report = h
        .run(
            &tenant,
            &page,
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert!(report.is_transient());
}

#[tokio::test]
async fn server_errors_are_retried_and_then_reported_and_4xx_are_not_retried() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let tenant = site.tenant();
    let app = h.client.as_app(&tenant);
    let page = site.demo.open_page.clone();
    site.sim
        .fail_next(Endpoint::GetPage, Fault::ServerError(500), 1);
    site.sim
        .fail_next(Endpoint::GetPage, Fault::ServerError(502), 1);
    assert!(app.get_page(&id(&page)).await.is_ok());
    assert_eq!(site.page_requests("GET", &page), 3);

    site.sim
        .fail_next(Endpoint::GetPage, Fault::ServerError(500), 5);
    let err = app.get_page(&id(&page)).await.unwrap_err();
    assert_eq!(err, ConfluenceError::Server { status: 500 });
    assert!(err.is_transient());
    assert_eq!(site.page_requests("GET", &page), 8);

    assert_eq!(
        app.get_page(&id("999999")).await.unwrap_err(),
        ConfluenceError::NotFound
    );
    assert_eq!(site.page_requests("GET", "999999"), 1);
}

#[tokio::test]
async fn a_put_that_failed_with_a_5xx_is_retried_safely_thanks_to_the_version() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let page = site.demo.open_page.clone();
    site.sim
        .fail_next(Endpoint::UpdatePage, Fault::ServerError(503), 1);
    let report = h
        .run(
            &site.tenant(),
            &page,
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(site.page_requests("PUT", &page), 2);
    let now = site.sim.page(&page).unwrap();
    assert_eq!(now.version, 2);
    assert!(now.body.ends_with("<p>x</p>"), "{}", now.body);
}

#[tokio::test]
async fn network_errors_are_retried_and_reported_as_transient() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let mut tenant = site.tenant();
    tenant.base_url = format!("http://127.0.0.1:{}/wiki", closed_port());
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

// ---- conflicts -------------------------------------------------------------------------------

#[tokio::test]
async fn a_409_is_answered_by_re_reading_and_re_applying() {
    let site = Site::new(ALL_SCOPES).await;
    let h = site.harness();
    let page = site.demo.open_page.clone();
    let tenant = site.tenant();
    // Someone else saves just before each of the first two PUTs.
    site.sim
        .fail_next(Endpoint::UpdatePage, Fault::ConcurrentEdit, 2);
    let report = h
        .run(
            &tenant,
            &page,
            &append("<p>x</p>"),
            &app_first(RestrictedPagePolicy::Impersonate, None),
        )
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(site.page_requests("PUT", &page), 3);
    assert_eq!(site.page_requests("GET", &page), 3);
    // Read at 1, two edits by someone else, saved as 4.
    assert_eq!(
        (report.version_before, report.version_after),
        (Some(1), Some(4))
    );
    assert!(site.sim.page(&page).unwrap().body.ends_with("<p>x</p>"));
    let audit = h.audit(&tenant.client_key, site.clock.now_unix()).await;
    assert_eq!(audit[0].outcome, EditOutcome::Edited);
}
