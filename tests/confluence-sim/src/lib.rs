//! A Confluence Cloud site on 127.0.0.1, for tests and local runs: Confluence's REST API with
//! spaces, pages, versions and restrictions; Atlassian's OAuth server (JWT-bearer grant for user
//! impersonation) and install key server; the Connect lifecycle; webhooks; injected faults.
//!
//! It behaves as production does (docs/protocol.md), not as the app expects: app JWTs are checked
//! for signature, expiry and a qsh relative to `/wiki`; assertions for every claim; a page the caller
//! cannot view is 404, one it can view but not edit 403, a stale version 409.
//!
//! ```no_run
//! # async fn demo() -> Result<(), confluence_sim::SimError> {
//! use confluence_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! let demo = sim.seed_demo()?;
//! // Point the app at sim.keys_url() (CONNECT_KEYS_URL) and sim.oauth_url() (ATLASSIAN_OAUTH_URL),
//! // start it, then:
//! let installation = sim.install("http://127.0.0.1:3000").await?;
//! sim.edit_page_as(&demo.alice, &demo.edit_restricted_page, "<p>new</p>").await?;
//! # let _ = installation; Ok(()) }
//! ```
//!
//! Everything binds and calls 127.0.0.1 (or another loopback address) only: the simulator refuses
//! to install an app whose URLs are not on a loopback host.
//!
//! # The app's iframe pages in a browser
//!
//! [`Simulator::iframe_url`] is the `src` Confluence gives an app's iframe (a request-bound JWT
//! for the user), and [`Simulator::all_js_url`] serves a stand-in for Connect's `all.js` (the app's
//! `CONNECT_ALL_JS_URL` in tests) whose `AP.context.getToken()` answers a context JWT for that
//! user. A page opened at the first, loading the second, runs in a real browser as in Confluence.
//!
//! # Forge mode
//!
//! The same site is also a Forge platform ([`forge`], shared/reference/forge-remote.md) for the
//! app's second front door, a Forge Remote:
//!
//! ```no_run
//! # async fn demo() -> Result<(), confluence_sim::SimError> {
//! use confluence_sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::default()).await?;
//! let demo = sim.seed_demo()?;
//! // Point the app at sim.forge_jwks_url() and tell it its app id, sim.forge_app_id(), then:
//! let forge = sim.forge_install("http://127.0.0.1:3000").await?; // avi:forge:installed:app
//! sim.edit_page_as(&demo.alice, &demo.open_page, "<p>new</p>").await?; // avi:confluence:updated:page
//! let (status, answer) = sim
//!     .forge_invoke_remote(&demo.alice, "POST", "/forge/ui/stamp", None)
//!     .await?;
//! # let _ = (forge, status, answer); Ok(()) }
//! ```

mod admin;
mod auth;
mod config;
mod confluence;
mod connect_js;
mod error;
mod faults;
pub mod forge;
mod lifecycle;
mod model;
pub mod privacy;
mod server;
mod state;
pub mod stub_app;
mod webhooks;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use config::{ForgeConfig, ForgeKey, InstallKey, SimClock, SimConfig};
pub use connect_auth::Clock;
pub use error::SimError;
pub use faults::{Endpoint, Fault};
pub use forge::{
    FitSigner, FitSpec, ForgeCall, ForgeCallKind, ForgeInstall, ForgeInstallation, ForgeTokenKind,
    OfflineTokenExchange,
};
pub use model::{
    AccountType, AppAccessRule, EditVia, OpRestriction, Page, PageRestrictions, Revision, Space,
    SpaceAccess, SpaceSpec, User,
};
pub use privacy::{ReportAuth, ReportRequest, ReportedAccount};
pub use state::{
    Delivery, InstallState, Installation, LifecycleCall, RequestRecord, TokenExchange,
    WebhookModule,
};

use crate::auth::random_uuid;
use crate::faults::ArmedFault;
use crate::lifecycle::SecretMode;
use crate::model::{EditSpec, Subject};
use crate::state::{Shared, State};
use crate::webhooks::{Event, ForgeEcho, deliver, deliver_all};

/// Stops the server when the last [`Simulator`] started by [`Simulator::start`] is dropped.
struct ServerGuard {
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let sender = self
            .shutdown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }
}

/// A running simulated site. Cheap to clone; the server stops when the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    shared: Arc<Shared>,
    _guard: Option<Arc<ServerGuard>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field("site_base_url", &self.site_base_url())
            .finish_non_exhaustive()
    }
}

/// What [`Simulator::seed_demo`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demo {
    /// A space editor, listed on every restriction.
    pub alice: String,
    /// A space editor who is in no restriction.
    pub bob: String,
    /// A reader: may view the space, not edit it.
    pub carol: String,
    /// The space key (`DEMO`).
    pub space: String,
    /// A page anyone in the space may edit (the app user too).
    pub open_page: String,
    /// A page everyone may view but only Alice may edit: the app user gets 403.
    pub edit_restricted_page: String,
    /// A page only Alice may view and edit: the app user gets 404.
    pub view_restricted_page: String,
}

impl Simulator {
    /// Starts a site on `127.0.0.1:<config.port>` (0: any free port).
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let port = config.port;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .map_err(|source| SimError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { port, source })?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.app_call_timeout)
            .no_proxy()
            .build()
            .map_err(|e| SimError::HttpClient(e.to_string()))?;
        let client_key = config.client_key.clone().unwrap_or_else(random_uuid);
        let state = State::new(&config, client_key, random_uuid());
        let shared = Arc::new(Shared {
            config,
            addr,
            state: Mutex::new(state),
            http,
            changed: tokio::sync::Notify::new(),
        });
        let router = axum::Router::new()
            .fallback(server::handle)
            .with_state(Arc::clone(&shared));
        let (sender, receiver) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = receiver.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "confluence-sim server stopped");
            }
        });
        Ok(Self {
            shared,
            _guard: Some(Arc::new(ServerGuard {
                shutdown: Mutex::new(Some(sender)),
            })),
        })
    }

    /// A handle that does not keep the server alive (the admin API's).
    pub(crate) fn handle(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            _guard: None,
        }
    }

    // ---- addresses -------------------------------------------------------------------------

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        self.shared.origin()
    }

    /// The site's base URL, `http://127.0.0.1:PORT/wiki` (the install payload's `baseUrl`).
    pub fn site_base_url(&self) -> String {
        self.shared.site_base_url()
    }

    /// The install key server's base URL (the app's `CONNECT_KEYS_URL`); keys are at `<it>/<kid>`.
    pub fn keys_url(&self) -> String {
        format!("{}/keys", self.origin())
    }

    /// The OAuth server's base URL, without a path (the app's `ATLASSIAN_OAUTH_URL`; the client
    /// appends `/oauth2/token`).
    pub fn oauth_url(&self) -> String {
        self.origin()
    }

    /// The token endpoint, `http://127.0.0.1:PORT/oauth2/token`.
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth2/token", self.origin())
    }

    /// The stand-in for Confluence's iframe host script, `http://127.0.0.1:PORT/_sim/connect/all.js`
    /// (the app's `CONNECT_ALL_JS_URL` in tests). It defines `window.AP`:
    /// `AP.context.getToken(callback?)` (a Promise of a context JWT for the page's user, signed with
    /// the app's shared secret), `AP.user.getCurrentUser(callback?)`, `AP.resize()` and
    /// `AP.sizeToParent()` (no-ops). The page must have been loaded at a URL from
    /// [`Self::iframe_url`]: `getToken` shows the sim the page's own `jwt` parameter.
    pub fn all_js_url(&self) -> String {
        format!("{}{}", self.origin(), connect_js::ALL_JS_PATH)
    }

    /// Where the script gets context tokens: `GET <it>?jwt=<the page's token>` answers
    /// `{"token": "<context JWT>"}`, or 401 when the page's token does not verify.
    pub fn context_token_url(&self) -> String {
        format!("{}{}", self.origin(), connect_js::CONTEXT_TOKEN_PATH)
    }

    /// The URL Confluence puts in the `src` of an iframe of the installed, enabled app `app_key`
    /// for `user` (an active user of the site): `<app base URL><path>?<query>&xdm_e=<sim
    /// origin>&cp=%2Fwiki&lic=none&cv=1.0&jwt=<token>`, `path_and_query` being relative to the app's
    /// base URL (`/ui/admin?space=DEMO`). The token is HS256 with the app's shared secret:
    /// `iss` = clientKey, `sub` = `user`, `qsh` of `GET` that URL (relative to the app's base URL,
    /// `jwt` left out), three minutes on the sim's clock.
    pub fn iframe_url(
        &self,
        app_key: &str,
        path_and_query: &str,
        user: &str,
    ) -> Result<String, SimError> {
        connect_js::iframe_url(&self.shared, app_key, path_and_query, user)
    }

    /// The site's clientKey.
    pub fn client_key(&self) -> String {
        self.shared.lock().client_key.clone()
    }

    /// The simulator's clock, now.
    pub fn now(&self) -> i64 {
        self.shared.now()
    }

    fn now_ms(&self) -> i64 {
        self.shared.now().saturating_mul(1000)
    }

    /// Sends one request to this simulator as any HTTP client would (for tests that have no HTTP
    /// client of their own): `path_and_query` from the origin (`/wiki/api/v2/pages/1?...`), an
    /// optional `Authorization` value and JSON body. Returns the status and the body as JSON
    /// (`Null` when it is not JSON).
    pub async fn request(
        &self,
        method: &str,
        path_and_query: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SimError> {
        let url = format!("{}{path_and_query}", self.origin());
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| SimError::Invalid(format!("{method} is not an HTTP method")))?;
        let mut request = self.shared.http.request(method, &url);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| SimError::AppUnreachable {
            url: url.clone(),
            reason: e.without_url().to_string(),
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Posts a form to this simulator's OAuth token endpoint as an app would
    /// (`application/x-www-form-urlencoded`, `accept: application/json`).
    pub async fn oauth_token_request(
        &self,
        form: &[(&str, &str)],
    ) -> Result<(u16, Value), SimError> {
        let url = self.oauth_token_url();
        let response = self
            .shared
            .http
            .post(&url)
            .header("accept", "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| SimError::AppUnreachable {
                url: url.clone(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    // ---- seeding (no webhooks) ----------------------------------------------------------------

    /// Adds (or replaces) a person; returns the accountId.
    pub fn add_user(&self, account_id: &str, display_name: &str) -> String {
        self.shared.lock().content.users.insert(
            account_id.to_owned(),
            User {
                account_id: account_id.to_owned(),
                display_name: display_name.to_owned(),
                account_type: AccountType::Customer,
                active: true,
            },
        );
        account_id.to_owned()
    }

    /// Deactivates (or reactivates) a user: deactivated users can do nothing and cannot be
    /// impersonated; their tokens stop working.
    pub fn set_user_active(&self, account_id: &str, active: bool) -> Result<(), SimError> {
        let mut state = self.shared.lock();
        let user = state
            .content
            .users
            .get_mut(account_id)
            .ok_or_else(|| SimError::UnknownUser(account_id.to_owned()))?;
        user.active = active;
        Ok(())
    }

    /// Makes a user a site admin (a Confluence administrator), or not: their REST user's
    /// `operations` then include `administer` on `application`.
    pub fn set_site_admin(&self, account_id: &str, admin: bool) {
        let mut state = self.shared.lock();
        if admin {
            state.content.site_admins.insert(account_id.to_owned());
        } else {
            state.content.site_admins.remove(account_id);
        }
    }

    /// Adds (or replaces) a group with its members.
    pub fn add_group(&self, name: &str, members: &[&str]) {
        self.shared.lock().content.groups.insert(
            name.to_owned(),
            members.iter().map(|m| (*m).to_owned()).collect(),
        );
    }

    /// Adds a space.
    pub fn add_space(&self, spec: SpaceSpec) -> Space {
        let mut state = self.shared.lock();
        let id = state.content.next_space_id;
        state.content.next_space_id += 1;
        let space = Space {
            id,
            key: spec.key.clone(),
            name: spec.name,
            everyone: spec.everyone,
            users: spec.users,
            app_access: spec.app_access,
        };
        state.content.spaces.insert(spec.key, space.clone());
        space
    }

    /// Sets one user's permission in a space (an app user's too: `None` excludes it).
    pub fn set_space_access(
        &self,
        space_key: &str,
        account_id: &str,
        access: SpaceAccess,
    ) -> Result<(), SimError> {
        let mut state = self.shared.lock();
        let space = state
            .content
            .spaces
            .get_mut(space_key)
            .ok_or_else(|| SimError::UnknownSpace(space_key.to_owned()))?;
        space.users.insert(account_id.to_owned(), access);
        Ok(())
    }

    /// Sets the app access rule of a space.
    pub fn set_app_access(&self, space_key: &str, rule: AppAccessRule) -> Result<(), SimError> {
        let mut state = self.shared.lock();
        let space = state
            .content
            .spaces
            .get_mut(space_key)
            .ok_or_else(|| SimError::UnknownSpace(space_key.to_owned()))?;
        space.app_access = rule;
        Ok(())
    }

    fn insert_page(
        &self,
        space_key: &str,
        parent: Option<u64>,
        title: &str,
        body: &str,
        as_user: &str,
    ) -> Result<u64, SimError> {
        let now_ms = self.now_ms();
        let mut state = self.shared.lock();
        if !state.content.users.contains_key(as_user) {
            return Err(SimError::UnknownUser(as_user.to_owned()));
        }
        let space_id = state
            .content
            .spaces
            .get(space_key)
            .map(|s| s.id)
            .ok_or_else(|| SimError::UnknownSpace(space_key.to_owned()))?;
        if state.content.title_taken(space_key, title, 0) {
            return Err(SimError::Invalid(format!(
                "a page titled {title:?} already exists in {space_key}"
            )));
        }
        let id = state.content.next_page_id;
        state.content.next_page_id += 1;
        state.content.pages.insert(
            id,
            Page {
                id,
                space_key: space_key.to_owned(),
                space_id,
                parent_id: parent,
                status: "current".into(),
                title: title.to_owned(),
                body: body.to_owned(),
                version: 1,
                creator: as_user.to_owned(),
                created_ms: now_ms,
                last_modifier: as_user.to_owned(),
                modified_ms: now_ms,
                restrictions: PageRestrictions::default(),
                history: vec![Revision {
                    number: 1,
                    title: title.to_owned(),
                    body: body.to_owned(),
                    by: as_user.to_owned(),
                    via: EditVia::Seed,
                    message: String::new(),
                    at_ms: now_ms,
                }],
            },
        );
        Ok(id)
    }

    /// Creates a page at version 1 (seeding: no webhook). Returns its id.
    pub fn create_page(
        &self,
        space_key: &str,
        title: &str,
        body: &str,
        as_user: &str,
    ) -> Result<String, SimError> {
        self.insert_page(space_key, None, title, body, as_user)
            .map(|id| id.to_string())
    }

    /// Creates a child page (its parent's view restrictions apply to it too). Returns its id.
    pub fn create_child_page(
        &self,
        parent: &str,
        title: &str,
        body: &str,
        as_user: &str,
    ) -> Result<String, SimError> {
        let parent_id = parse_page_id(parent)?;
        let space_key = self
            .shared
            .lock()
            .content
            .pages
            .get(&parent_id)
            .map(|p| p.space_key.clone())
            .ok_or_else(|| SimError::UnknownPage(parent.to_owned()))?;
        self.insert_page(&space_key, Some(parent_id), title, body, as_user)
            .map(|id| id.to_string())
    }

    fn with_page<T>(&self, page: &str, f: impl FnOnce(&mut Page) -> T) -> Result<T, SimError> {
        let id = parse_page_id(page)?;
        let mut state = self.shared.lock();
        let page = state
            .content
            .pages
            .get_mut(&id)
            .ok_or_else(|| SimError::UnknownPage(page.to_owned()))?;
        Ok(f(page))
    }

    /// Sets a page's user restrictions (seeding: no webhook). An empty list lifts that restriction.
    pub fn restrict(&self, page: &str, read: &[&str], update: &[&str]) -> Result<(), SimError> {
        self.with_page(page, |p| {
            p.restrictions.read.users = read.iter().map(|s| (*s).to_owned()).collect();
            p.restrictions.update.users = update.iter().map(|s| (*s).to_owned()).collect();
        })
    }

    /// Sets a page's group restrictions (seeding: no webhook).
    pub fn restrict_groups(
        &self,
        page: &str,
        read: &[&str],
        update: &[&str],
    ) -> Result<(), SimError> {
        self.with_page(page, |p| {
            p.restrictions.read.groups = read.iter().map(|s| (*s).to_owned()).collect();
            p.restrictions.update.groups = update.iter().map(|s| (*s).to_owned()).collect();
        })
    }

    /// Seeds a small site: Alice and Bob (editors), Carol (reader), space `DEMO` with an open page,
    /// a page only Alice may edit, and a page only Alice may view.
    pub fn seed_demo(&self) -> Result<Demo, SimError> {
        let alice = self.add_user("5b10a2844c20165700ede21g", "Alice Example");
        let bob = self.add_user("5b10ac8d82e05b22cc7d4ef5", "Bob Example");
        let carol = self.add_user(
            "557058:f5a1c2d3-aaaa-bbbb-cccc-0123456789ab",
            "Carol Reader",
        );
        let space = self
            .add_space(
                SpaceSpec::new("DEMO")
                    .name("Demo space")
                    .everyone(SpaceAccess::Edit)
                    .user(&carol, SpaceAccess::View),
            )
            .key;
        let open_page =
            self.create_page(&space, "Open page", "<p>Anyone may edit this.</p>", &alice)?;
        let edit_restricted_page = self.create_page(
            &space,
            "Edit-restricted page",
            "<p>Everyone may read this; only Alice may edit it.</p>",
            &alice,
        )?;
        self.restrict(&edit_restricted_page, &[], &[&alice])?;
        let view_restricted_page = self.create_page(
            &space,
            "View-restricted page",
            "<p>Only Alice may read or edit this.</p>",
            &alice,
        )?;
        self.restrict(&view_restricted_page, &[&alice], &[&alice])?;
        Ok(Demo {
            alice,
            bob,
            carol,
            space,
            open_page,
            edit_restricted_page,
            view_restricted_page,
        })
    }

    // ---- people acting (webhooks fire, and are awaited) ---------------------------------------

    fn person_edit(
        &self,
        user: &str,
        page: &str,
        title: Option<&str>,
        body: &str,
    ) -> Result<Vec<webhooks::Outgoing>, SimError> {
        let id = parse_page_id(page)?;
        let now = self.now();
        let site = self.site_base_url();
        let mut state = self.shared.lock();
        let current = state
            .content
            .pages
            .get(&id)
            .ok_or_else(|| SimError::UnknownPage(page.to_owned()))?;
        if !state.content.can_edit(current, Subject::person(user)) {
            return Err(SimError::NotPermitted(format!(
                "{user} may not edit page {page}"
            )));
        }
        if let Some(title) = title
            && state
                .content
                .title_taken(&current.space_key.clone(), title, id)
        {
            return Err(SimError::Invalid(format!("title {title:?} is taken")));
        }
        state.content.apply_edit(
            id,
            EditSpec {
                title,
                body,
                by: user,
                via: EditVia::Editor,
                message: "",
                now_ms: now.saturating_mul(1000),
            },
        );
        Ok(webhooks::build(
            &state,
            &site,
            now,
            Event {
                name: "page_updated",
                page_id: id,
                actor: user,
                only_app: None,
                force: false,
                forge: ForgeEcho::Send {
                    self_generated: false,
                },
            },
        ))
    }

    /// A person edits a page in the editor (needs edit permission): the next version, then
    /// `page_updated` to every subscribed app (awaited; the deliveries are returned).
    pub async fn edit_page_as(
        &self,
        user: &str,
        page: &str,
        new_body: &str,
    ) -> Result<Vec<Delivery>, SimError> {
        let outgoing = self.person_edit(user, page, None, new_body)?;
        Ok(deliver_all(&self.shared, outgoing).await)
    }

    /// As [`Self::edit_page_as`], changing the title too.
    pub async fn edit_page_titled_as(
        &self,
        user: &str,
        page: &str,
        title: &str,
        new_body: &str,
    ) -> Result<Vec<Delivery>, SimError> {
        let outgoing = self.person_edit(user, page, Some(title), new_body)?;
        Ok(deliver_all(&self.shared, outgoing).await)
    }

    /// A person sets a page's user restrictions (needs edit permission):
    /// `content_permissions_updated` to every subscribed app.
    pub async fn set_restrictions_as(
        &self,
        user: &str,
        page: &str,
        read: Vec<String>,
        update: Vec<String>,
    ) -> Result<Vec<Delivery>, SimError> {
        let id = parse_page_id(page)?;
        let now = self.now();
        let site = self.site_base_url();
        let outgoing = {
            let mut state = self.shared.lock();
            let current = state
                .content
                .pages
                .get(&id)
                .ok_or_else(|| SimError::UnknownPage(page.to_owned()))?;
            if !state.content.can_edit(current, Subject::person(user)) {
                return Err(SimError::NotPermitted(format!(
                    "{user} may not change the restrictions of page {page}"
                )));
            }
            if let Some(p) = state.content.pages.get_mut(&id) {
                p.restrictions.read.users = read;
                p.restrictions.update.users = update;
            }
            webhooks::build(
                &state,
                &site,
                now,
                Event {
                    name: "content_permissions_updated",
                    page_id: id,
                    actor: user,
                    only_app: None,
                    force: false,
                    forge: ForgeEcho::Send {
                        self_generated: false,
                    },
                },
            )
        };
        Ok(deliver_all(&self.shared, outgoing).await)
    }

    /// A person creates a page (needs edit permission in the space): `page_created`.
    pub async fn create_page_as(
        &self,
        user: &str,
        space_key: &str,
        title: &str,
        body: &str,
    ) -> Result<(String, Vec<Delivery>), SimError> {
        {
            let state = self.shared.lock();
            let space = state
                .content
                .spaces
                .get(space_key)
                .ok_or_else(|| SimError::UnknownSpace(space_key.to_owned()))?;
            if state.content.space_access(space, Subject::person(user)) < SpaceAccess::Edit {
                return Err(SimError::NotPermitted(format!(
                    "{user} may not create pages in {space_key}"
                )));
            }
        }
        let id = self.insert_page(space_key, None, title, body, user)?;
        if let Some(revision) = self
            .shared
            .lock()
            .content
            .pages
            .get_mut(&id)
            .and_then(|p| p.history.last_mut())
        {
            revision.via = EditVia::Editor;
        }
        let deliveries = self.fire(Event {
            name: "page_created",
            page_id: id,
            actor: user,
            only_app: None,
            force: false,
            forge: ForgeEcho::Send {
                self_generated: false,
            },
        });
        Ok((id.to_string(), deliver_all(&self.shared, deliveries).await))
    }

    fn fire(&self, event: Event<'_>) -> Vec<webhooks::Outgoing> {
        let site = self.site_base_url();
        let now = self.now();
        let state = self.shared.lock();
        webhooks::build(&state, &site, now, event)
    }

    /// Raw control: sends `event` about `page`, done by `actor`, to every enabled app subscribed to
    /// it (whether or not its app user may view the page), freshly signed. Nothing changes on the
    /// page. Connect only: [`Self::fire_forge_event`] is the Forge counterpart.
    pub async fn fire_webhook(
        &self,
        event: &str,
        page: &str,
        actor: &str,
    ) -> Result<Vec<Delivery>, SimError> {
        let id = parse_page_id(page)?;
        if !self.shared.lock().content.pages.contains_key(&id) {
            return Err(SimError::UnknownPage(page.to_owned()));
        }
        let outgoing = self.fire(Event {
            name: event,
            page_id: id,
            actor,
            only_app: None,
            force: true,
            forge: ForgeEcho::Skip,
        });
        Ok(deliver_all(&self.shared, outgoing).await)
    }

    /// Sends a delivery again, byte for byte (same body, same token): a duplicate delivery.
    pub async fn redeliver(&self, delivery: &Delivery) -> Delivery {
        deliver(
            &self.shared,
            webhooks::Webhook {
                event: delivery.event.clone(),
                app_key: delivery.app_key.clone(),
                url: delivery.url.clone(),
                token: delivery.token.clone(),
                body: delivery.body.clone(),
            },
        )
        .await
    }

    // ---- lifecycle -----------------------------------------------------------------------------

    /// Installs the app whose descriptor is at `<app_base_url>/atlassian-connect.json`: generates
    /// the shared secret (and an oauthClientId with `ACT_AS_USER`), creates the app user, posts
    /// `installed` (RS256 with the install key when the descriptor opts into signed installs), then
    /// `enabled`. Installing an installed app again is an upgrade: same secret.
    pub async fn install(&self, app_base_url: &str) -> Result<Installation, SimError> {
        lifecycle::install(&self.shared, app_base_url, SecretMode::KeepIfInstalled).await
    }

    /// Re-installs (an upgrade: the descriptor is fetched again, the secret kept).
    pub async fn reinstall(&self, app_key: &str) -> Result<Installation, SimError> {
        lifecycle::reinstall(&self.shared, app_key, SecretMode::KeepIfInstalled).await
    }

    /// Re-installs with a new shared secret (rotation). The new secret is used from the moment the
    /// app accepts `installed`; if it refuses, the old one stays.
    pub async fn reinstall_with_new_secret(&self, app_key: &str) -> Result<Installation, SimError> {
        lifecycle::reinstall(&self.shared, app_key, SecretMode::New).await
    }

    /// Enables an app (`enabled`, HS256). Returns the callback, if the descriptor has one.
    pub async fn enable(&self, app_key: &str) -> Result<Option<LifecycleCall>, SimError> {
        lifecycle::set_enabled(&self.shared, app_key, true).await
    }

    /// Disables an app (`disabled`, HS256): its calls are refused, no webhooks are sent to it.
    pub async fn disable(&self, app_key: &str) -> Result<Option<LifecycleCall>, SimError> {
        lifecycle::set_enabled(&self.shared, app_key, false).await
    }

    /// Uninstalls an app (`uninstalled`, RS256): tokens revoked, app user deactivated.
    pub async fn uninstall(&self, app_key: &str) -> Result<Option<LifecycleCall>, SimError> {
        lifecycle::uninstall(&self.shared, app_key).await
    }

    /// The installation of an app.
    pub fn installation(&self, app_key: &str) -> Option<Installation> {
        self.shared.lock().installations.get(app_key).cloned()
    }

    /// Signs future installs with `key`; earlier keys stay served (as Atlassian's key server does).
    pub fn rotate_install_key(&self, key: InstallKey) {
        let mut state = self.shared.lock();
        state.keys.retain(|k| k.kid != key.kid);
        state.keys.push(key);
        state.signing_key = state.keys.len().saturating_sub(1);
    }

    // ---- inspection --------------------------------------------------------------------------

    /// A page: version, title, body, restrictions, history.
    pub fn page(&self, id: &str) -> Option<Page> {
        let id = parse_page_id(id).ok()?;
        self.shared.lock().content.pages.get(&id).cloned()
    }

    /// A user.
    pub fn user(&self, account_id: &str) -> Option<User> {
        self.shared.lock().content.users.get(account_id).cloned()
    }

    /// A space.
    pub fn space(&self, key: &str) -> Option<Space> {
        self.shared.lock().content.spaces.get(key).cloned()
    }

    /// May `account_id`, acting through `app_key` (or directly, with `None`), view / edit the page?
    pub fn permissions(&self, page: &str, account_id: &str, app_key: Option<&str>) -> (bool, bool) {
        let Ok(id) = parse_page_id(page) else {
            return (false, false);
        };
        let state = self.shared.lock();
        let subject = Subject {
            account_id,
            via_app: app_key,
        };
        state.content.pages.get(&id).map_or((false, false), |p| {
            (
                state.content.can_view(p, subject),
                state.content.can_edit(p, subject),
            )
        })
    }

    /// Every request answered so far (admin requests excepted).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// How many requests went to an endpoint (a concrete one, or a target such as
    /// [`Endpoint::AnyConfluence`]).
    pub fn count(&self, endpoint: &Endpoint) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| endpoint.matches(&r.endpoint, &r.method, &r.path))
            .count()
    }

    /// Every exchange at the OAuth server.
    pub fn token_exchanges(&self) -> Vec<TokenExchange> {
        self.shared.lock().exchanges.clone()
    }

    /// Every webhook sent so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Every lifecycle callback sent so far.
    pub fn lifecycle_calls(&self) -> Vec<LifecycleCall> {
        self.shared.lock().lifecycle.clone()
    }

    /// Waits until at least `count` webhooks were sent (those fired by the app's own requests go
    /// out after the answer), or `timeout` passes; returns them all.
    pub async fn wait_for_deliveries(&self, count: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.deliveries.len() >= count {
                    return state.deliveries.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.deliveries();
            }
        }
    }

    /// The whole site as JSON (the admin API's `GET /_sim/state`). Secrets are left out.
    pub fn snapshot(&self) -> Value {
        let state = self.shared.lock();
        let installations: Vec<Value> = state
            .installations
            .values()
            .map(|i| {
                json!({"app_key": i.app_key, "state": i.state, "app_base_url": i.app_base_url,
                       "app_account_id": i.app_account_id, "scopes": i.scopes,
                       "act_as_user": i.oauth_client_id.is_some(),
                       "webhooks": i.webhooks})
            })
            .collect();
        json!({
            "site_base_url": self.site_base_url(),
            "keys_url": self.keys_url(),
            "oauth_url": self.oauth_url(),
            "client_key": state.client_key,
            "users": state.content.users.values().collect::<Vec<_>>(),
            "groups": state.content.groups,
            "spaces": state.content.spaces.values().collect::<Vec<_>>(),
            "pages": state.content.pages.values().collect::<Vec<_>>(),
            "installations": installations,
            "requests": state.requests.len(),
            "deliveries": state.deliveries.len(),
            "forge": {
                "app_id": state.forge.app_id,
                "environment_id": state.forge.environment_id,
                "jwks_url": self.forge_jwks_url(),
                "cloud_id": state.cloud_id,
                "installation": state.forge.installation,
                "calls": state.forge.calls.len(),
                "offline_token_exchanges": state.forge.exchanges.len(),
            },
        })
    }

    // ---- Forge -------------------------------------------------------------------------------

    /// The Forge app's id, `ari:cloud:ecosystem::app/<uuid>` (the `aud` of every FIT; the app's
    /// configured app id). Stable for the simulator's life ([`ForgeConfig::app_id`] sets it).
    pub fn forge_app_id(&self) -> String {
        self.shared.lock().forge.app_id.clone()
    }

    /// The Forge JWKS, `http://127.0.0.1:PORT/.well-known/jwks.json` (the app's `FORGE_JWKS_URL`).
    pub fn forge_jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.origin())
    }

    /// The site's cloudId (stable for the simulator's life; also in Connect's install payload).
    pub fn cloud_id(&self) -> String {
        self.shared.lock().cloud_id.clone()
    }

    /// Where a remote calls Confluence, `http://127.0.0.1:PORT/ex/confluence/<cloudId>` (the FIT's
    /// `app.apiBaseUrl`).
    pub fn forge_api_base_url(&self) -> String {
        format!("{}/ex/confluence/{}", self.origin(), self.cloud_id())
    }

    /// The GraphQL gateway, `http://127.0.0.1:PORT/graphql`.
    pub fn forge_graphql_url(&self) -> String {
        format!("{}/graphql", self.origin())
    }

    /// The site's context ARI for `offlineUserAuthToken`'s `contextIds`,
    /// `ari:cloud:confluence::site/<cloudId>` (*unverified* for Confluence).
    pub fn forge_context_ari(&self) -> String {
        forge::site_context_ari(&self.cloud_id())
    }

    /// Installs the Forge app whose remote is at `remote_base_url` (loopback only): a new
    /// installation id, the Forge app user (accountType `app`, a new accountId distinct from every
    /// Connect app user: restrictions naming the Connect app user do not name it), then
    /// `avi:forge:installed:app` to `<remote>/forge/lifecycle` with a FIT and a system token.
    /// Installing again is a re-install: a new installation id, the old tokens revoked.
    pub async fn forge_install(&self, remote_base_url: &str) -> Result<ForgeInstall, SimError> {
        forge::remote::install(&self.shared, remote_base_url, None).await
    }

    /// "Connect on Forge": the Connect app `connect_app_key` (installed already) adopts Forge.
    /// Installs the Forge app as [`Self::forge_install`] does, then sends the Connect `installed`
    /// callback again (a re-install, same secret) with `installationId` = the Forge installation's
    /// ARI. From then on the Connect app gets no `enabled` / `disabled`.
    pub async fn forge_install_linked(
        &self,
        connect_app_key: &str,
        remote_base_url: &str,
    ) -> Result<(ForgeInstall, Installation), SimError> {
        let connect = lifecycle::installation(&self.shared, connect_app_key)?;
        if connect.state == InstallState::Uninstalled {
            return Err(SimError::Invalid(format!(
                "{connect_app_key} is uninstalled"
            )));
        }
        let forge =
            forge::remote::install(&self.shared, remote_base_url, Some(connect_app_key)).await?;
        let link = |id: Option<String>| {
            if let Some(i) = self.shared.lock().installations.get_mut(connect_app_key) {
                i.forge_installation_id = id;
            }
        };
        link(Some(forge.installation.installation_id.clone()));
        match lifecycle::reinstall(&self.shared, connect_app_key, SecretMode::KeepIfInstalled).await
        {
            Ok(installation) => Ok((forge, installation)),
            Err(error) => {
                // The Connect app refused: its tenant stays unlinked.
                link(connect.forge_installation_id.clone());
                Err(error)
            }
        }
    }

    /// Deploys the next major version: `avi:forge:upgraded:app` (same installation id).
    pub async fn forge_upgrade(&self) -> Result<ForgeCall, SimError> {
        forge::remote::upgrade(&self.shared).await
    }

    /// Uninstalls the Forge app: its tokens are revoked and its app user deactivated. Nothing is
    /// sent (no uninstall event reaches a remote).
    pub fn forge_uninstall(&self) -> Result<(), SimError> {
        forge::remote::uninstall(&self.shared)
    }

    /// The Forge installation (also after an uninstall, with `installed: false`).
    pub fn forge_installation(&self) -> Option<ForgeInstallation> {
        self.shared.lock().forge.installation.clone()
    }

    /// One run of the scheduled trigger: POST `<remote>/forge/scheduled` with a fresh FIT and a
    /// fresh system token, body `{"context": {"cloudId", "moduleKey"}}`, with the delivery rules of
    /// events.
    pub async fn forge_scheduled_tick(&self) -> Result<ForgeCall, SimError> {
        forge::remote::scheduled_tick(&self.shared).await
    }

    /// Raw control: sends the Forge event `event_type` (`avi:confluence:updated:page`, ...) about
    /// `page`, done by `actor`, to the installed Forge app whether or not its app user may view the
    /// page (`selfGenerated: false`). Nothing changes on the page. Returns the first attempt;
    /// retries follow Forge's rules in the background.
    pub async fn fire_forge_event(
        &self,
        event_type: &str,
        page: &str,
        actor: &str,
    ) -> Result<ForgeCall, SimError> {
        let id = parse_page_id(page)?;
        let outgoing = {
            let state = self.shared.lock();
            let found = state
                .content
                .pages
                .get(&id)
                .ok_or_else(|| SimError::UnknownPage(page.to_owned()))?;
            let event = forge::delivery::page_event_body(event_type, found, actor, false);
            forge::delivery::event_outgoing(&state, event_type, event)
                .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))?
        };
        forge::delivery::deliver(&self.shared, outgoing)
            .await
            .map(|d| d.call)
            .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))
    }

    /// Sends a Forge delivery again, as a new delivery with the same body (a duplicate, as Forge's
    /// at-least-once delivery may make): a fresh FIT and system token, the same delivery rules.
    /// Replaying the very same FIT is [`Self::forge_post`] with `call.fit`.
    pub async fn forge_redeliver(&self, call: &ForgeCall) -> Result<ForgeCall, SimError> {
        let module_key = match call.kind {
            ForgeCallKind::Lifecycle => forge::LIFECYCLE_ENDPOINT_KEY,
            ForgeCallKind::Scheduled => forge::SCHEDULED_ENDPOINT_KEY,
            _ => forge::EVENTS_ENDPOINT_KEY,
        };
        // The path under the remote's base URL (the recorded path includes the base's own path).
        let path = self
            .forge_installation()
            .and_then(|i| call.url.strip_prefix(&i.remote_base_url).map(str::to_owned))
            .unwrap_or_else(|| call.path.clone());
        let outgoing = forge::delivery::ForgeOutgoing {
            kind: call.kind,
            event_type: call.event_type.clone(),
            path,
            module_key: module_key.to_owned(),
            body: call.body.clone(),
        };
        forge::delivery::deliver(&self.shared, outgoing)
            .await
            .map(|d| d.call)
            .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))
    }

    /// A UI invocation (`invokeRemote` from the Forge macro's frontend) by `account_id`:
    /// `<method> <remote><path>` with a FIT whose `principal` is the user, `x-forge-oauth-user` (a
    /// fresh user token) and `x-forge-oauth-system`. Returns the status and the JSON answer
    /// (`Null` when not JSON). `context` names no page; see [`Self::forge_invoke_remote_on_page`].
    pub async fn forge_invoke_remote(
        &self,
        account_id: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SimError> {
        forge::remote::invoke(&self.shared, account_id, None, method, path, body).await
    }

    /// As [`Self::forge_invoke_remote`], from the macro on `page`: `context.extension.content.id`
    /// names it. The user must be able to view the page (the macro is not rendered otherwise).
    pub async fn forge_invoke_remote_on_page(
        &self,
        account_id: &str,
        page: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), SimError> {
        forge::remote::invoke(&self.shared, account_id, Some(page), method, path, body).await
    }

    /// Builds a FIT for the installed Forge app from `spec`: genuine claims (iat = now), then any
    /// claim or header changed or removed, signed as the spec says (a forgery, `alg: none`, HS256).
    pub fn forge_fit(&self, spec: &FitSpec) -> Result<String, SimError> {
        let now = self.now();
        forge::fit::from_spec(&self.shared.lock(), now, spec)
    }

    /// Raw sender: POSTs `body` to `url_or_path` (a loopback URL, or a path under the remote's base
    /// URL) with `x-b3-*` headers and exactly the credentials given: `Authorization: Bearer <fit>`,
    /// `x-forge-oauth-system`, `x-forge-oauth-user`. Returns the status and the JSON answer.
    pub async fn forge_post(
        &self,
        url_or_path: &str,
        fit: Option<&str>,
        system_token: Option<&str>,
        user_token: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), SimError> {
        forge::remote::post(
            &self.shared,
            url_or_path,
            fit,
            system_token,
            user_token,
            body,
        )
        .await
    }

    /// Issues an app system token for the installed Forge app now (as one that came with an
    /// invocation), valid for [`ForgeConfig::system_token_lifetime_seconds`].
    pub fn forge_system_token(&self) -> Result<String, SimError> {
        let now = self.now();
        let lifetime = self.shared.config.forge.system_token_lifetime_seconds;
        let mut state = self.shared.lock();
        let account = state
            .forge
            .current()
            .map(|i| i.app_account_id.clone())
            .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))?;
        state
            .forge
            .mint(ForgeTokenKind::System, &account, now, lifetime)
            .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))
    }

    /// Issues a user token for `account_id` now (as one that came with a UI invocation), valid for
    /// [`ForgeConfig::user_token_lifetime_seconds`].
    pub fn forge_user_token(&self, account_id: &str) -> Result<String, SimError> {
        let now = self.now();
        let lifetime = self.shared.config.forge.user_token_lifetime_seconds;
        let mut state = self.shared.lock();
        let ok = state
            .content
            .users
            .get(account_id)
            .is_some_and(|u| u.active && u.account_type == AccountType::Customer);
        if !ok {
            return Err(SimError::UnknownUser(account_id.to_owned()));
        }
        state
            .forge
            .mint(ForgeTokenKind::User, account_id, now, lifetime)
            .ok_or_else(|| SimError::Invalid("no Forge app is installed".into()))
    }

    /// Every app system token issued so far expires now (the gateways answer 401 to them).
    pub fn forge_expire_system_tokens(&self) {
        self.expire_forge_tokens(|kind| kind == ForgeTokenKind::System);
    }

    /// Every user and offline user token issued so far expires now.
    pub fn forge_expire_user_tokens(&self) {
        self.expire_forge_tokens(|kind| kind != ForgeTokenKind::System);
    }

    fn expire_forge_tokens(&self, which: impl Fn(ForgeTokenKind) -> bool) {
        let now = self.now();
        for token in self.shared.lock().forge.tokens.values_mut() {
            if which(token.kind) {
                token.expires_at = token.expires_at.min(now);
            }
        }
    }

    /// `offlineUserAuthToken` refuses this user (success: false) until allowed again.
    pub fn forge_reject_offline_for(&self, account_id: &str) {
        self.shared
            .lock()
            .forge
            .rejected_offline
            .insert(account_id.to_owned());
    }

    /// Undoes [`Self::forge_reject_offline_for`].
    pub fn forge_allow_offline_for(&self, account_id: &str) {
        self.shared.lock().forge.rejected_offline.remove(account_id);
    }

    /// Every `offlineUserAuthToken` request answered 200 so far (successes and refusals).
    pub fn offline_token_exchanges(&self) -> Vec<OfflineTokenExchange> {
        self.shared.lock().forge.exchanges.clone()
    }

    /// Signs future FITs with `key`; earlier keys stay in the JWKS (as a key rotation would).
    pub fn forge_rotate_key(&self, key: ForgeKey) {
        let mut state = self.shared.lock();
        let forge = &mut state.forge;
        forge.keys.retain(|k| k.kid != key.kid);
        forge.keys.push(key);
        forge.signing_key = forge.keys.len().saturating_sub(1);
    }

    /// Every call Forge made to the remote so far (each retry is one), oldest first.
    pub fn forge_calls(&self) -> Vec<ForgeCall> {
        self.shared.lock().forge.calls.clone()
    }

    /// The page event calls so far (each retry is one).
    pub fn forge_events(&self) -> Vec<ForgeCall> {
        self.forge_calls()
            .into_iter()
            .filter(|c| c.kind == ForgeCallKind::Event)
            .collect()
    }

    /// Waits until at least `count` Forge calls were made (retries come late), or `timeout`
    /// passes; returns them all.
    pub async fn wait_for_forge_calls(&self, count: usize, timeout: Duration) -> Vec<ForgeCall> {
        self.wait_until(timeout, |state| state.forge.calls.len() >= count)
            .await;
        self.forge_calls()
    }

    /// Waits until at least `count` page event calls were made, or `timeout` passes; returns them.
    pub async fn wait_for_forge_events(&self, count: usize, timeout: Duration) -> Vec<ForgeCall> {
        self.wait_until(timeout, |state| {
            state
                .forge
                .calls
                .iter()
                .filter(|c| c.kind == ForgeCallKind::Event)
                .count()
                >= count
        })
        .await;
        self.forge_events()
    }

    /// Waits until `done` holds for the state, or `timeout` passes.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.shared.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    // ---- personal data reporting -------------------------------------------------------------

    /// Atlassian's personal data reporting API on this simulator (standing in for
    /// `https://api.atlassian.com/app/report-accounts/`): `http://127.0.0.1:PORT/app/report-accounts/`.
    /// See [`privacy`] for what it checks and answers.
    pub fn report_accounts_url(&self) -> String {
        format!("{}{}", self.origin(), privacy::REPORT_ACCOUNTS_PATH)
    }

    /// The reporting API answers `closed` for this account from now on (it always does for
    /// [`privacy::CLOSED_TEST_ACCOUNT_ID`]).
    pub fn close_account(&self, account_id: &str) {
        self.shared
            .lock()
            .privacy
            .closed
            .insert(account_id.to_owned());
    }

    /// The reporting API answers `updated` for this account (unless it is closed) until
    /// [`Self::clear_account_updated`].
    pub fn mark_account_updated(&self, account_id: &str) {
        self.shared
            .lock()
            .privacy
            .updated
            .insert(account_id.to_owned());
    }

    /// Undoes [`Self::mark_account_updated`].
    pub fn clear_account_updated(&self, account_id: &str) {
        self.shared.lock().privacy.updated.remove(account_id);
    }

    /// Every answer of the reporting API carries `Cycle-Period: <seconds>` (`None`, the default:
    /// no header, the app uses the default cycle of 7 days).
    pub fn set_report_cycle_period(&self, seconds: Option<u64>) {
        self.shared.lock().privacy.cycle_period = seconds;
    }

    /// Every request to the reporting API so far (refused and faulted ones too), oldest first.
    pub fn report_requests(&self) -> Vec<ReportRequest> {
        self.shared.lock().privacy.requests.clone()
    }

    // ---- faults ------------------------------------------------------------------------------

    /// Injects `fault` into the next `count` requests matching `target`.
    pub fn fail_next(&self, target: Endpoint, fault: Fault, count: usize) {
        if count > 0 {
            self.shared.lock().faults.push(ArmedFault {
                target,
                fault,
                remaining: count,
            });
        }
    }

    /// Drops every injected fault not used yet.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The OAuth server refuses (`invalid_grant`) every exchange for this user until allowed again.
    pub fn reject_grants_for(&self, account_id: &str) {
        self.shared
            .lock()
            .rejected_grants
            .insert(account_id.to_owned());
    }

    /// Undoes [`Self::reject_grants_for`].
    pub fn allow_grants_for(&self, account_id: &str) {
        self.shared.lock().rejected_grants.remove(account_id);
    }

    /// Every access token issued so far expires now (Confluence answers 401 to them).
    pub fn expire_tokens(&self) {
        let now = self.now();
        for token in self.shared.lock().tokens.values_mut() {
            token.expires_at = token.expires_at.min(now);
        }
    }

    /// Revokes every access token of one user.
    pub fn revoke_tokens_for(&self, account_id: &str) {
        self.shared
            .lock()
            .tokens
            .retain(|_, t| t.account_id != account_id);
    }

    /// `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: i64) {
        self.shared.lock().token_lifetime = seconds;
    }
}

fn parse_page_id(id: &str) -> Result<u64, SimError> {
    id.parse().map_err(|_| SimError::UnknownPage(id.to_owned()))
}
