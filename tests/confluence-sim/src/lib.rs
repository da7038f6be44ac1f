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

mod admin;
mod auth;
mod config;
mod confluence;
mod error;
mod faults;
mod lifecycle;
mod model;
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

pub use config::{InstallKey, SimClock, SimConfig};
pub use connect_auth::Clock;
pub use error::SimError;
pub use faults::{Endpoint, Fault};
pub use model::{
    AccountType, AppAccessRule, EditVia, OpRestriction, Page, PageRestrictions, Revision, Space,
    SpaceAccess, SpaceSpec, User,
};
pub use state::{
    Delivery, InstallState, Installation, LifecycleCall, RequestRecord, TokenExchange,
    WebhookModule,
};

use crate::auth::random_uuid;
use crate::faults::ArmedFault;
use crate::lifecycle::SecretMode;
use crate::model::{EditSpec, Subject};
use crate::state::{Shared, State};
use crate::webhooks::{Event, deliver, deliver_all};

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
    /// page.
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
        });
        Ok(deliver_all(&self.shared, outgoing).await)
    }

    /// Sends a delivery again, byte for byte (same body, same token): a duplicate delivery.
    pub async fn redeliver(&self, delivery: &Delivery) -> Delivery {
        deliver(
            &self.shared,
            webhooks::Outgoing {
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
        })
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
