//! The simulator's shared state and the records it keeps for inspection.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;

use crate::config::{InstallKey, SimConfig};
use crate::faults::{ArmedFault, Endpoint, Fault};
use crate::forge::ForgeState;
use crate::model::Content;

/// Where an installed app stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallState {
    /// Installed and enabled: calls, token exchanges and webhooks work.
    Enabled,
    /// Disabled by an admin: its calls are refused and no webhooks are sent.
    Disabled,
    /// Removed: its calls are refused, its tokens revoked, its app user deactivated.
    Uninstalled,
}

/// A webhook module from the descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookModule {
    /// The event (`page_updated`).
    pub event: String,
    /// The URL, relative to the app's base URL (may carry a query).
    pub url: String,
}

/// An app installed on the site, as Confluence remembers it.
#[derive(Debug, Clone, Serialize)]
pub struct Installation {
    /// The app's key (`iss` of its JWTs).
    pub app_key: String,
    /// The app's name (its app user's display name).
    pub name: String,
    /// The site's clientKey (the same for every app on the site, stable across re-installs).
    pub client_key: String,
    /// The tenant shared secret (HS256 key both ways).
    pub shared_secret: String,
    /// Present when the descriptor has `ACT_AS_USER`.
    pub oauth_client_id: Option<String>,
    /// The descriptor's `baseUrl`, without a trailing slash.
    pub app_base_url: String,
    /// The app user's accountId.
    pub app_account_id: String,
    /// The descriptor's scopes, upper case.
    pub scopes: Vec<String>,
    /// Enabled, disabled or uninstalled.
    pub state: InstallState,
    /// Lifecycle event → path (`installed` → `/installed`).
    pub lifecycle: BTreeMap<String, String>,
    /// Webhook modules.
    pub webhooks: Vec<WebhookModule>,
    /// `apiMigrations.signed-install`.
    pub signed_install: bool,
    /// The site's base URL the app was given (`http://127.0.0.1:PORT/wiki`).
    pub base_url: String,
    /// The descriptor as fetched.
    pub descriptor: Value,
    /// Set once the app adopted Forge ("Connect on Forge",
    /// [`crate::Simulator::forge_install_linked`]): the Forge installation's ARI, sent as
    /// `installationId` in `installed`. From then on `enabled` and `disabled` are no longer sent.
    pub forge_installation_id: Option<String>,
}

impl Installation {
    /// Enabled: the app may call and is called.
    pub fn is_enabled(&self) -> bool {
        self.state == InstallState::Enabled
    }

    /// True when the descriptor grants `scope` (or a scope that implies it: READ < WRITE < DELETE
    /// < SPACE_ADMIN < ADMIN).
    pub fn has_scope(&self, scope: &str) -> bool {
        scope_granted(&self.scopes, scope)
    }
}

fn scope_rank(scope: &str) -> Option<u8> {
    match scope {
        "READ" => Some(1),
        "WRITE" => Some(2),
        "DELETE" => Some(3),
        "SPACE_ADMIN" => Some(4),
        "ADMIN" => Some(5),
        _ => None,
    }
}

/// Is `wanted` among `granted`, directly or implied by a higher level?
pub(crate) fn scope_granted(granted: &[String], wanted: &str) -> bool {
    match scope_rank(wanted) {
        Some(rank) => granted
            .iter()
            .filter_map(|s| scope_rank(s))
            .any(|r| r >= rank),
        None => granted.iter().any(|s| s == wanted),
    }
}

/// True for the scopes a user token may carry.
pub(crate) fn is_product_scope(scope: &str) -> bool {
    scope_rank(scope).is_some()
}

/// An access token the OAuth server issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub app_key: String,
    pub account_id: String,
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

/// One request the simulator answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The method.
    pub method: String,
    /// The raw path.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// What it was.
    pub endpoint: Endpoint,
    /// Who it authenticated as: `app:<key>`, `user:<accountId> via <key>`; `None` if it did not.
    pub caller: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// One exchange at the OAuth server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenExchange {
    /// The user asked for, when the assertion named one.
    pub account_id: Option<String>,
    /// The `scope` parameter, when sent.
    pub scope: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The OAuth error code, on failure.
    pub error: Option<String>,
    /// Why, on failure.
    pub description: Option<String>,
}

/// One webhook POST to an app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// A sequence number (a re-delivery gets its own).
    pub id: u64,
    /// The event.
    pub event: String,
    /// The app.
    pub app_key: String,
    /// The full URL posted to.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// The JWT sent in `Authorization: JWT …`.
    pub token: String,
    /// The status the app answered, if it answered.
    pub status: Option<u16>,
    /// The transport error, if it did not.
    pub error: Option<String>,
}

impl Delivery {
    /// True when the app answered 2xx.
    pub fn acknowledged(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One lifecycle callback to an app.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleCall {
    /// `installed`, `enabled`, `disabled`, `uninstalled`.
    pub event: String,
    /// The app.
    pub app_key: String,
    /// The full URL posted to.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// The JWT sent, if any (legacy unsigned installs send none).
    pub token: Option<String>,
    /// The status the app answered, if it answered.
    pub status: Option<u16>,
    /// The transport error, if it did not.
    pub error: Option<String>,
}

/// Everything mutable, behind one lock that is never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub content: Content,
    pub client_key: String,
    pub cloud_id: String,
    pub installations: BTreeMap<String, Installation>,
    pub tokens: HashMap<String, IssuedToken>,
    pub rejected_grants: BTreeSet<String>,
    pub token_lifetime: i64,
    pub faults: Vec<ArmedFault>,
    pub requests: Vec<RequestRecord>,
    pub exchanges: Vec<TokenExchange>,
    pub deliveries: Vec<Delivery>,
    pub lifecycle: Vec<LifecycleCall>,
    pub keys: Vec<InstallKey>,
    pub signing_key: usize,
    pub next_delivery: u64,
    pub webhooks_require_app_view: bool,
    pub forge: ForgeState,
    pub privacy: crate::privacy::PrivacyState,
}

impl State {
    pub fn new(config: &SimConfig, client_key: String, cloud_id: String) -> Self {
        Self {
            content: Content::new(),
            client_key,
            cloud_id,
            installations: BTreeMap::new(),
            tokens: HashMap::new(),
            rejected_grants: BTreeSet::new(),
            token_lifetime: config.token_lifetime_seconds,
            faults: Vec::new(),
            requests: Vec::new(),
            exchanges: Vec::new(),
            deliveries: Vec::new(),
            lifecycle: Vec::new(),
            keys: vec![config.install_key.clone()],
            signing_key: 0,
            next_delivery: 1,
            webhooks_require_app_view: config.webhooks_require_app_view,
            forge: ForgeState::new(&config.forge),
            privacy: crate::privacy::PrivacyState::default(),
        }
    }

    /// Takes one use of the first fault aimed at this request.
    pub fn take_fault(&mut self, concrete: &Endpoint, method: &str, path: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|f| f.remaining > 0 && f.target.matches(concrete, method, path))?;
        let armed = self.faults.get_mut(index)?;
        armed.remaining -= 1;
        let fault = armed.fault.clone();
        if armed.remaining == 0 {
            self.faults.remove(index);
        }
        Some(fault)
    }

    pub fn installation_by_oauth_client(&self, oauth_client_id: &str) -> Option<&Installation> {
        self.installations
            .values()
            .find(|i| i.oauth_client_id.as_deref() == Some(oauth_client_id))
    }

    pub fn signing_key(&self) -> Option<&InstallKey> {
        self.keys.get(self.signing_key)
    }
}

/// Everything the HTTP handlers and the API share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    pub addr: SocketAddr,
    pub state: Mutex<State>,
    pub http: reqwest::Client,
    pub changed: tokio::sync::Notify,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn now(&self) -> i64 {
        self.config.clock.now_unix()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn site_base_url(&self) -> String {
        format!("{}/wiki", self.origin())
    }
}
