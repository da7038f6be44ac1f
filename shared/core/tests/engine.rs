//! The engine's policy paths, in memory: Confluence is a small model of pages and restrictions behind
//! the core's port, so every path runs without HTTP and the assertions are about decisions, not
//! about the wire (which `shared/confluence/tests` and the e2e suite cover).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use connect_auth::{FixedClock, SecretString};
use serde_json::json;
use understudy_core::{
    Actor, BlockedCause, Confluence, ConfluenceError, Door, Edit, EditEngine, EditJob, EditMode,
    EditResult, EngineSettings, OperationRestriction, Page, PageUpdate, RestrictedPagePolicy,
    RestrictionOperation, Restrictions, TokenError, user_may_view_page,
};
use understudy_domain::{
    AccountId, ActedAs, AuditLog, ClientKey, EditOutcome, EditStrategy, MemoryStore, PageId,
    Tenant, TenantState,
};

const APP: &str = "557058:app-user";
const ALICE: &str = "5b10a2844c20165700ede21g";
const BOB: &str = "5b10ac8d82e05b22cc7d4ef5";

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

/// One page of the model: who may view (`read`) and edit (`update`); empty lists mean no
/// restriction. `app_blocked_otherwise` stands for what is not a page restriction (an inherited
/// restriction, space permissions, an app access rule): the app user may not even view.
#[derive(Debug, Clone, Default)]
struct ModelPage {
    title: String,
    body: String,
    version: u64,
    read: Vec<AccountId>,
    update: Vec<AccountId>,
    app_blocked_otherwise: bool,
    /// An app access rule covers the page's space: nobody may view it through the app, the app's
    /// own user or a user it acts as.
    app_access_rule: bool,
    /// Archived (not `current`): the app must never save it as current.
    archived: bool,
}

#[derive(Debug, Default)]
struct Model {
    pages: HashMap<String, ModelPage>,
    /// 409s still to answer to the next updates.
    conflicts: u32,
    /// Every call, as `<operation> <actor>`.
    calls: Vec<String>,
    /// Users the authorization server will not let the app act as (`invalid_grant`).
    invalid_grant: Vec<AccountId>,
}

#[derive(Debug, Default)]
struct FakeConfluence {
    model: Mutex<Model>,
}

fn who(actor: Actor<'_>) -> AccountId {
    match actor {
        Actor::App => account(APP),
        Actor::User(user) => user.clone(),
    }
}

fn label(actor: Actor<'_>) -> String {
    match actor {
        Actor::App => "app".into(),
        Actor::User(user) => user.as_str().into(),
    }
}

impl ModelPage {
    fn can_view(&self, account: &AccountId) -> bool {
        if self.app_access_rule || self.app_blocked_otherwise && account.as_str() == APP {
            return false;
        }
        self.read.is_empty() || self.read.contains(account)
    }

    fn can_edit(&self, account: &AccountId) -> bool {
        self.can_view(account) && (self.update.is_empty() || self.update.contains(account))
    }
}

impl FakeConfluence {
    fn with(pages: &[(&str, ModelPage)]) -> Arc<Self> {
        let fake = Self::default();
        {
            let mut model = fake.model.lock().unwrap();
            for (id, page) in pages {
                model.pages.insert((*id).to_owned(), page.clone());
            }
        }
        Arc::new(fake)
    }

    fn page(&self, id: &str) -> ModelPage {
        self.model.lock().unwrap().pages[id].clone()
    }

    fn calls(&self) -> Vec<String> {
        self.model.lock().unwrap().calls.clone()
    }

    fn visible(
        &self,
        model: &mut Model,
        door: Door<'_>,
        op: &str,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<ModelPage, ConfluenceError> {
        model.calls.push(format!("{op} {}", label(actor)));
        // Acting as a user needs a token first, as the HTTP client does.
        if let Actor::User(user) = actor {
            if !door.can_act_as_user() {
                return Err(ConfluenceError::Token(TokenError::NoActAsUser));
            }
            if model.invalid_grant.contains(user) {
                return Err(ConfluenceError::Token(TokenError::InvalidGrant));
            }
        }
        match model.pages.get(page.as_str()) {
            Some(p) if p.can_view(&who(actor)) => Ok(p.clone()),
            _ => Err(ConfluenceError::NotFound),
        }
    }
}

#[async_trait]
impl Confluence for FakeConfluence {
    async fn get_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Page, ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        let p = self.visible(&mut model, door, "get", actor, page)?;
        Ok(Page {
            id: page.clone(),
            status: if p.archived { "archived" } else { "current" }.into(),
            title: p.title,
            space_id: None,
            version: p.version,
            body: p.body,
        })
    }

    async fn update_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        update: &PageUpdate<'_>,
    ) -> Result<u64, ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        let p = self.visible(&mut model, door, "put", actor, update.id)?;
        if !p.can_edit(&who(actor)) {
            return Err(ConfluenceError::Forbidden);
        }
        if model.conflicts > 0 {
            model.conflicts -= 1;
            // Someone else saved meanwhile.
            let page = model.pages.get_mut(update.id.as_str()).unwrap();
            page.version += 1;
            page.body.push_str("<p>theirs</p>");
            return Err(ConfluenceError::Conflict);
        }
        if update.version != p.version + 1 {
            return Err(ConfluenceError::Conflict);
        }
        let page = model.pages.get_mut(update.id.as_str()).unwrap();
        page.title = update.title.to_owned();
        page.body = update.body.to_owned();
        page.version = update.version;
        Ok(update.version)
    }

    async fn get_restrictions(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<Restrictions, ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        let p = self.visible(&mut model, door, "restrictions", actor, page)?;
        let restriction = |users: &[AccountId]| OperationRestriction {
            users: users.to_vec(),
            groups: Vec::new(),
        };
        Ok(Restrictions {
            read: restriction(&p.read),
            update: restriction(&p.update),
        })
    }

    async fn add_restriction_user(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        operation: RestrictionOperation,
        added: &AccountId,
    ) -> Result<(), ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        let p = self.visible(&mut model, door, "grant", actor, page)?;
        // Changing restrictions needs edit permission on the page.
        if !p.can_edit(&who(actor)) {
            return Err(ConfluenceError::Forbidden);
        }
        let page = model.pages.get_mut(page.as_str()).unwrap();
        let list = match operation {
            RestrictionOperation::Read => &mut page.read,
            RestrictionOperation::Update => &mut page.update,
        };
        list.push(added.clone());
        Ok(())
    }

    async fn can_view_page(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
    ) -> Result<bool, ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        Ok(self.visible(&mut model, door, "view", actor, page).is_ok())
    }

    async fn permission_check(
        &self,
        door: Door<'_>,
        actor: Actor<'_>,
        page: &PageId,
        subject: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError> {
        let mut model = self.model.lock().unwrap();
        let Ok(p) = self.visible(&mut model, door, "check", actor, page) else {
            return Ok(false);
        };
        Ok(match operation {
            RestrictionOperation::Read => p.can_view(subject),
            RestrictionOperation::Update => p.can_edit(subject),
        })
    }

    async fn is_site_admin(
        &self,
        _door: Door<'_>,
        account: &AccountId,
    ) -> Result<bool, ConfluenceError> {
        Ok(account.as_str() == "site-admin")
    }

    async fn app_account_id(&self, _door: Door<'_>) -> Result<AccountId, ConfluenceError> {
        Ok(account(APP))
    }
}

fn tenant(act_as_user: bool) -> Tenant {
    Tenant {
        client_key: ClientKey::parse("tenant-1").unwrap(),
        app_key: "understudy".into(),
        shared_secret: SecretString::from("s".repeat(32)),
        base_url: "https://site.atlassian.net/wiki".into(),
        display_url: "https://site.atlassian.net/wiki".into(),
        product_type: "confluence".into(),
        oauth_client_id: act_as_user.then(|| "oauth-client".to_owned()),
        cloud_id: None,
        installation_id: None,
        install_payload: json!({}),
        state: TenantState::Enabled,
        created_at: 0,
        updated_at: 0,
    }
}

fn open(body: &str) -> ModelPage {
    ModelPage {
        title: "Plan".into(),
        body: body.into(),
        version: 1,
        ..ModelPage::default()
    }
}

/// Alice may view and edit; others may view but not edit.
fn edit_restricted() -> ModelPage {
    ModelPage {
        update: vec![account(ALICE)],
        ..open("<p>x</p>")
    }
}

/// Only Alice may view (and edit).
fn view_restricted() -> ModelPage {
    ModelPage {
        read: vec![account(ALICE)],
        update: vec![account(ALICE)],
        ..open("<p>x</p>")
    }
}

struct World {
    confluence: Arc<FakeConfluence>,
    store: Arc<MemoryStore>,
    engine: EditEngine,
}

fn world(pages: &[(&str, ModelPage)]) -> World {
    let confluence = FakeConfluence::with(pages);
    let store = Arc::new(MemoryStore::new());
    let engine = EditEngine::new(
        Arc::clone(&confluence) as Arc<dyn Confluence>,
        Arc::clone(&store) as Arc<dyn AuditLog>,
        Arc::new(FixedClock(1_800_000_000)),
        EngineSettings::default(),
    );
    World {
        confluence,
        store,
        engine,
    }
}

fn stamp() -> Edit {
    Edit::from_json(r#"[{"append": "<p>Reviewed</p>"}]"#).unwrap()
}

fn app_first(policy: RestrictedPagePolicy, user: Option<&str>) -> EditMode {
    EditMode::AppFirst {
        policy,
        user: user.map(account),
    }
}

impl World {
    async fn run(
        &self,
        tenant: &Tenant,
        page: &str,
        mode: EditMode,
    ) -> understudy_core::EditReport {
        self.run_edit(tenant, page, &stamp(), mode).await
    }

    async fn run_edit(
        &self,
        tenant: &Tenant,
        page: &str,
        edit: &Edit,
        mode: EditMode,
    ) -> understudy_core::EditReport {
        let page_id = PageId::parse(page).unwrap();
        self.engine
            .execute(EditJob {
                door: tenant.into(),
                page_id: &page_id,
                edit,
                mode: &mode,
                job_id: "job",
            })
            .await
    }

    /// The stamp on page 1 of a tenant with `ACT_AS_USER`, the app first, then `policy` for `user`.
    async fn on_page_1(
        &self,
        policy: RestrictedPagePolicy,
        user: Option<&str>,
    ) -> understudy_core::EditReport {
        self.run(&tenant(true), "1", app_first(policy, user)).await
    }

    /// How many calls were `<operation> <actor>`.
    fn calls_of(&self, call: &str) -> usize {
        self.confluence
            .calls()
            .iter()
            .filter(|c| c.as_str() == call)
            .count()
    }

    async fn audit(&self) -> Vec<understudy_domain::AuditRecord> {
        self.store
            .list_for_tenant(&ClientKey::parse("tenant-1").unwrap(), None, 100, 0)
            .await
            .unwrap()
            .records
    }
}

#[tokio::test]
async fn an_open_page_is_edited_as_the_app_and_audited() {
    let w = world(&[("1", open("<p>a</p>"))]);
    let report = w
        .on_page_1(RestrictedPagePolicy::Impersonate, Some(BOB))
        .await;
    assert_eq!(report.result, EditResult::Edited);
    assert_eq!(report.acted_as, ActedAs::App);
    assert_eq!(w.confluence.page("1").body, "<p>a</p><p>Reviewed</p>");
    assert_eq!(w.confluence.calls(), ["get app", "put app"]);
    let audit = w.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, EditOutcome::Edited);
    assert_eq!(audit[0].at_ms, 1_800_000_000_000);
}

#[tokio::test]
async fn impersonate_edits_edit_and_view_restricted_pages_as_the_user() {
    let w = world(&[("1", edit_restricted()), ("2", view_restricted())]);
    for page in ["1", "2"] {
        let report = w
            .run(
                &tenant(true),
                page,
                app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
            )
            .await;
        assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
        assert_eq!(report.acted_as, ActedAs::User(account(ALICE)));
        assert_eq!(report.strategy, EditStrategy::Impersonate);
        assert!(w.confluence.page(page).body.ends_with("<p>Reviewed</p>"));
    }
}

#[tokio::test]
async fn a_user_who_may_not_edit_either_is_blocked_with_the_cause() {
    let w = world(&[("1", edit_restricted()), ("2", view_restricted())]);
    let t = tenant(true);
    let mode = || app_first(RestrictedPagePolicy::Impersonate, Some(BOB));
    assert_eq!(
        w.run(&t, "1", mode()).await.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    assert_eq!(
        w.run(&t, "2", mode()).await.result,
        EditResult::Blocked(BlockedCause::UserCannotView)
    );
    assert_eq!(w.confluence.page("1").version, 1);
    // Triggered by an event, these are audited: they are the page's own history.
    assert_eq!(w.audit().await.len(), 2);
}

#[tokio::test]
async fn skip_no_user_and_no_act_as_user_each_block_with_their_own_cause() {
    let w = world(&[("1", edit_restricted())]);
    let cases = [
        (
            tenant(true),
            app_first(RestrictedPagePolicy::Skip, Some(ALICE)),
            BlockedCause::SkippedByPolicy,
        ),
        (
            tenant(true),
            app_first(RestrictedPagePolicy::Impersonate, None),
            BlockedCause::NoUserToActAs,
        ),
        (
            tenant(false),
            app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
            BlockedCause::NoActAsUser,
        ),
        (
            tenant(false),
            app_first(RestrictedPagePolicy::Grant, Some(ALICE)),
            BlockedCause::NoActAsUser,
        ),
    ];
    for (t, mode, cause) in cases {
        let report = w.run(&t, "1", mode).await;
        assert_eq!(report.result, EditResult::Blocked(cause));
        assert!(
            report.reason().contains("an admin can"),
            "{}",
            report.reason()
        );
    }
    // Only the app's own attempts reached Confluence.
    assert!(w.confluence.calls().iter().all(|c| c.ends_with(" app")));
    assert_eq!(w.confluence.page("1").version, 1);
}

#[tokio::test]
async fn grant_adds_the_app_to_the_restrictions_that_exist_and_never_creates_one() {
    let w = world(&[
        ("1", edit_restricted()),
        (
            "2",
            ModelPage {
                app_blocked_otherwise: true,
                ..open("<p>x</p>")
            },
        ),
    ]);
    let t = tenant(true);
    let report = w
        .run(&t, "1", app_first(RestrictedPagePolicy::Grant, Some(ALICE)))
        .await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(report.acted_as, ActedAs::App);
    let page = w.confluence.page("1");
    assert_eq!(page.update, [account(ALICE), account(APP)]);
    assert!(page.read.is_empty(), "no view restriction was created");
    // Blocked by something that is not a restriction on the page: nothing to extend.
    let report = w
        .run(&t, "2", app_first(RestrictedPagePolicy::Grant, Some(ALICE)))
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::NotARestriction)
    );
    let page = w.confluence.page("2");
    assert!(page.read.is_empty() && page.update.is_empty());
}

#[tokio::test]
async fn a_stale_version_is_read_again_and_the_edit_applied_to_the_new_text() {
    let w = world(&[("1", open("<p>a</p>"))]);
    w.confluence.model.lock().unwrap().conflicts = 2;
    let report = w.on_page_1(RestrictedPagePolicy::Impersonate, None).await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    let page = w.confluence.page("1");
    assert_eq!(
        page.body,
        "<p>a</p><p>theirs</p><p>theirs</p><p>Reviewed</p>"
    );
    assert_eq!(page.version, 4);
}

#[tokio::test]
async fn a_users_own_request_runs_only_as_that_user_and_a_refusal_is_not_audited() {
    let w = world(&[("1", edit_restricted())]);
    let t = tenant(true);
    let refused = w.run(&t, "1", EditMode::AsUserOnly(account(BOB))).await;
    assert_eq!(
        refused.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    assert!(!refused.audited);
    assert!(w.audit().await.is_empty());
    assert!(
        w.confluence.calls().iter().all(|c| !c.ends_with(" app")),
        "never as the app: {:?}",
        w.confluence.calls()
    );
    let done = w.run(&t, "1", EditMode::AsUserOnly(account(ALICE))).await;
    assert_eq!(done.result, EditResult::Edited);
    assert!(done.audited);
}

#[tokio::test]
async fn who_may_view_a_page_is_asked_as_the_user_or_through_the_permission_check() {
    let w = world(&[("1", view_restricted()), ("2", open("<p>o</p>"))]);
    let c = w.confluence.as_ref();
    let page = |id: &str| PageId::parse(id).unwrap();
    // With ACT_AS_USER: as the user.
    assert!(
        user_may_view_page(c, Door::Connect(&tenant(true)), &account(ALICE), &page("1"))
            .await
            .unwrap()
    );
    assert!(
        !user_may_view_page(c, Door::Connect(&tenant(true)), &account(BOB), &page("1"))
            .await
            .unwrap()
    );
    assert!(c.calls().iter().all(|call| call.starts_with("view ")));
    // Without: the permission check, which the app cannot ask about a page it cannot see.
    assert!(
        !user_may_view_page(
            c,
            Door::Connect(&tenant(false)),
            &account(ALICE),
            &page("1")
        )
        .await
        .unwrap()
    );
    assert!(
        user_may_view_page(c, Door::Connect(&tenant(false)), &account(BOB), &page("2"))
            .await
            .unwrap()
    );
    assert!(c.calls().iter().any(|call| call == "check app"));
}

#[tokio::test]
async fn an_edit_that_would_make_the_page_too_large_is_refused_and_audited_with_no_put() {
    let w = world(&[("1", open("<p>a</p>"))]);
    // Each replace multiplies every `a` by ten: 10^7 of them after seven.
    let mut ops = vec![json!({"append": "a".repeat(10)})];
    ops.extend((0..7).map(|_| json!({"replace": {"find": "a", "with": "aaaaaaaaaa"}})));
    let edit = Edit::from_value(serde_json::Value::Array(ops)).unwrap();
    let report = w
        .run_edit(
            &tenant(true),
            "1",
            &edit,
            app_first(RestrictedPagePolicy::Impersonate, Some(ALICE)),
        )
        .await;
    assert!(
        matches!(report.result, EditResult::Refused(_)),
        "{}",
        report.reason()
    );
    assert!(!report.is_transient(), "the worker must not retry it");
    assert_eq!(w.calls_of("put app"), 0);
    assert_eq!(w.confluence.page("1").version, 1);
    let audit = w.audit().await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, EditOutcome::Refused);
    assert!(audit[0].reason.contains("more than"), "{}", audit[0].reason);
}

#[tokio::test]
async fn an_edit_that_is_already_there_makes_no_put_so_the_own_webhook_does_not_loop() {
    let w = world(&[("1", open("<p>x</p>"))]);
    let t = tenant(true);
    let mode = || app_first(RestrictedPagePolicy::Impersonate, Some(ALICE));
    assert_eq!(w.run(&t, "1", mode()).await.result, EditResult::Edited);
    // The page_updated webhook of that edit brings the same rule back: nothing to do.
    let second = w.run(&t, "1", mode()).await;
    assert_eq!(second.result, EditResult::Unchanged);
    assert_eq!(second.version_before, Some(2));
    assert_eq!(w.calls_of("put app"), 1);
    assert_eq!(w.confluence.page("1").version, 2);
    let outcomes: Vec<EditOutcome> = w.audit().await.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.contains(&EditOutcome::Unchanged), "{outcomes:?}");
}

#[tokio::test]
async fn an_archived_page_is_never_saved_as_current() {
    let archived = ModelPage {
        archived: true,
        ..open("<p>x</p>")
    };
    let w = world(&[("1", archived)]);
    let report = w.on_page_1(RestrictedPagePolicy::Impersonate, None).await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::PageNotCurrent)
    );
    assert_eq!(w.calls_of("put app"), 0);
}

#[tokio::test]
async fn grant_extends_both_the_view_and_the_edit_restriction_when_both_exist() {
    let w = world(&[("1", view_restricted())]);
    let report = w.on_page_1(RestrictedPagePolicy::Grant, Some(ALICE)).await;
    assert_eq!(report.result, EditResult::Edited, "{}", report.reason());
    assert_eq!(report.strategy, EditStrategy::Grant);
    let page = w.confluence.page("1");
    assert!(page.read.contains(&account(APP)), "{page:?}");
    assert!(page.update.contains(&account(APP)), "{page:?}");
    // The grants were made as Alice, the edit as the app.
    assert_eq!(w.calls_of(&format!("grant {ALICE}")), 2);
    assert_eq!(w.calls_of("put app"), 1);
}

#[tokio::test]
async fn grant_through_a_user_who_may_not_edit_either_changes_no_restriction() {
    let w = world(&[("1", edit_restricted())]);
    let report = w.on_page_1(RestrictedPagePolicy::Grant, Some(BOB)).await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::UserCannotEdit)
    );
    let page = w.confluence.page("1");
    assert_eq!(page.update, [account(ALICE)]);
    assert_eq!(page.version, 1);
}

#[tokio::test]
async fn skip_leaves_a_restricted_page_alone_for_good_without_acting_as_anyone() {
    let w = world(&[("1", view_restricted())]);
    let report = w.on_page_1(RestrictedPagePolicy::Skip, Some(ALICE)).await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::SkippedByPolicy)
    );
    assert_eq!(report.strategy, EditStrategy::Skip);
    assert!(!report.is_transient());
    assert_eq!(w.confluence.calls(), ["get app"]);
    let audit = w.audit().await;
    assert_eq!(audit[0].outcome, EditOutcome::Blocked);
    assert!(
        audit[0].reason.contains("policy is skip"),
        "{}",
        audit[0].reason
    );
}

#[tokio::test]
async fn an_app_access_rule_blocks_even_the_user_and_says_so() {
    let ruled = ModelPage {
        app_access_rule: true,
        ..open("<p>r</p>")
    };
    let w = world(&[("1", ruled)]);
    let report = w
        .on_page_1(RestrictedPagePolicy::Impersonate, Some(ALICE))
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
}

#[tokio::test]
async fn a_user_the_app_may_not_act_as_is_a_permanent_cause_of_its_own() {
    let w = world(&[("1", view_restricted())]);
    w.confluence
        .model
        .lock()
        .unwrap()
        .invalid_grant
        .push(account(ALICE));
    let report = w
        .on_page_1(RestrictedPagePolicy::Impersonate, Some(ALICE))
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::InvalidGrant)
    );
    assert!(!report.is_transient());
    // A user's own request on a site installed without ACT_AS_USER says so too.
    let report = w
        .run(&tenant(false), "1", EditMode::AsUserOnly(account(ALICE)))
        .await;
    assert_eq!(
        report.result,
        EditResult::Blocked(BlockedCause::NoActAsUser)
    );
}

#[tokio::test]
async fn a_409_storm_gives_up_after_the_bound_as_a_transient_failure() {
    let w = world(&[("1", open("<p>c</p>"))]);
    w.confluence.model.lock().unwrap().conflicts = 1_000;
    let report = w.on_page_1(RestrictedPagePolicy::Impersonate, None).await;
    assert_eq!(report.result, EditResult::Failed(ConfluenceError::Conflict));
    assert!(report.is_transient());
    // The first try and one per allowed re-try.
    let bound = EngineSettings::default().max_conflict_retries as usize;
    assert_eq!(w.calls_of("put app"), 1 + bound);
    assert_eq!(w.audit().await[0].outcome, EditOutcome::Failed);
}
