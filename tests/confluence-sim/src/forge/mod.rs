//! The simulated Forge platform: the second front door of the app, a Forge Remote
//! (shared/reference/forge-remote.md). It plays Atlassian's side, as the Connect half of the
//! simulator does, and is written from the protocol, not from the app's code:
//!
//! - Forge Invocation Tokens (FIT): RS256 JWTs signed with the simulator's own key, whose public half
//!   is served as a JWKS at `GET /.well-known/jwks.json` ([`fit`]);
//! - the install (`avi:forge:installed:app`), upgrades, the scheduled trigger and page events, POSTed
//!   to the remote with Forge's delivery rules: 5 s timeout, redirects are failures, up to 4 retries
//!   after a timeout, a 5xx or a 401, each with a fresh FIT and a `retryContext` ([`delivery`]);
//! - UI invocations (`invokeRemote`) with a user in session;
//! - the opaque app system, user and offline user tokens, and Confluence behind Atlassian's API
//!   gateway at `/ex/confluence/{cloudId}/wiki/...` ([`gateway`]);
//! - offline user impersonation through `POST /graphql` ([`graphql`]).
//!
//! The Forge app has its own app user (a new accountId, not the Connect app user's), to which
//! restrictions, space permissions and app access rules apply as to any app user.

pub(crate) mod delivery;
pub(crate) mod fit;
pub(crate) mod gateway;
pub(crate) mod graphql;
pub(crate) mod remote;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::auth::{random_text, random_uuid};
use crate::config::{ForgeConfig, ForgeKey};

pub use fit::{FitSigner, FitSpec};

/// The path of the remote's lifecycle endpoint (`avi:forge:installed:app`, `avi:forge:upgraded:app`).
pub const LIFECYCLE_PATH: &str = "/forge/lifecycle";
/// The path of the remote's page events endpoint.
pub const EVENTS_PATH: &str = "/forge/events";
/// The path of the remote's scheduled trigger endpoint.
pub const SCHEDULED_PATH: &str = "/forge/scheduled";

/// The manifest key of the `endpoint` module lifecycle events are delivered through
/// (`app.module.key` of their FITs).
pub const LIFECYCLE_ENDPOINT_KEY: &str = "forge-lifecycle-endpoint";
/// The manifest key of the `endpoint` module page events are delivered through.
pub const EVENTS_ENDPOINT_KEY: &str = "forge-events-endpoint";
/// The manifest key of the `endpoint` module the scheduled trigger calls.
pub const SCHEDULED_ENDPOINT_KEY: &str = "forge-scheduled-endpoint";
/// The manifest key of the `trigger` module subscribed to page events (`context.moduleKey` of
/// wrapped events).
pub const EVENTS_TRIGGER_KEY: &str = "forge-page-events";
/// The manifest key of the `scheduledTrigger` module (`context.moduleKey` of its body).
pub const SCHEDULED_TRIGGER_KEY: &str = "forge-hourly-trigger";
/// The manifest key of the UI module (a Confluence macro) whose frontend calls `invokeRemote`.
pub const UI_MODULE_KEY: &str = "forge-macro";
/// `app.module.type` of UI invocations (toolsplus: `xen:macro` for a macro's frontend; events and
/// triggers carry `core:endpoint`).
pub const UI_MODULE_TYPE: &str = "xen:macro";
/// `app.module.type` of events, lifecycle events and scheduled triggers.
pub const ENDPOINT_MODULE_TYPE: &str = "core:endpoint";
/// The accountId of the site admin who installs and upgrades the Forge app
/// (`installerAccountId`); the simulator adds this person on the first Forge install.
pub const SITE_ADMIN_ACCOUNT_ID: &str = "5c0d1e2f3a4b5c6d7e8f9a0b";

/// The Forge event that matches a Connect webhook, for the page events Forge sends to remotes.
pub(crate) fn forge_event_for(connect_event: &str) -> Option<&'static str> {
    match connect_event {
        "page_created" => Some("avi:confluence:created:page"),
        "page_updated" => Some("avi:confluence:updated:page"),
        "content_permissions_updated" => Some("avi:confluence:permissions_updated:page"),
        _ => None,
    }
}

/// The Forge app installed on the site, as the platform remembers it. Holds no token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForgeInstallation {
    /// The app's id, `ari:cloud:ecosystem::app/<uuid>` (`aud` and `app.id` of every FIT).
    pub app_id: String,
    /// `ari:cloud:ecosystem::installation/<uuid>`: new on every install, kept on upgrades.
    pub installation_id: String,
    /// `ari:cloud:ecosystem::environment/<app uuid>/<environment uuid>`.
    pub environment_id: String,
    /// `DEVELOPMENT`, `STAGING` or `PRODUCTION`.
    pub environment_type: String,
    /// The deployed version (`1.0.0`, a major step on each upgrade).
    pub app_version: String,
    /// The site's cloudId.
    pub cloud_id: String,
    /// `<simulator origin>/ex/confluence/<cloudId>`: where the remote calls Confluence.
    pub api_base_url: String,
    /// The site's URL as Forge names it in `context.siteUrl` (the simulator's origin).
    pub site_url: String,
    /// The remote's base URL (the manifest's `remotes[].baseUrl`), without a trailing slash.
    pub remote_base_url: String,
    /// The Forge app user's accountId (never the Connect app user's).
    pub app_account_id: String,
    /// Who installed it (`installerAccountId`).
    pub installer_account_id: String,
    /// The Connect app this Forge app adopted ("Connect on Forge"), if any.
    pub connect_app_key: Option<String>,
    /// False once uninstalled: its tokens are revoked, nothing is delivered to it.
    pub installed: bool,
}

/// What [`crate::Simulator::forge_install`] did.
#[derive(Clone)]
pub struct ForgeInstall {
    /// The installation.
    pub installation: ForgeInstallation,
    /// The app system token sent with `avi:forge:installed:app` (`x-forge-oauth-system`).
    pub system_token: String,
    /// The first delivery of `avi:forge:installed:app` (retries, if any, follow in the background).
    pub lifecycle: ForgeCall,
}

impl fmt::Debug for ForgeInstall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForgeInstall")
            .field("installation", &self.installation)
            .field("system_token", &"<redacted>")
            .field("lifecycle", &self.lifecycle)
            .finish()
    }
}

/// What a call from Forge to the remote was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeCallKind {
    /// `avi:forge:installed:app` / `avi:forge:upgraded:app` to [`LIFECYCLE_PATH`].
    Lifecycle,
    /// A page event to [`EVENTS_PATH`].
    Event,
    /// The scheduled trigger, to [`SCHEDULED_PATH`].
    Scheduled,
    /// A UI invocation (`invokeRemote`), with a user in session.
    Invocation,
    /// A raw request a test built ([`crate::Simulator::forge_post`]).
    Raw,
}

/// One HTTP request the Forge platform sent to the remote (each retry is a call of its own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgeCall {
    /// A sequence number, unique per call.
    pub id: u64,
    /// The delivery this attempt belongs to: the retries of one event share it.
    pub delivery_id: u64,
    /// 1 for the first attempt, 2 to 5 for the retries.
    pub attempt: u32,
    /// What it was.
    pub kind: ForgeCallKind,
    /// `eventType` of lifecycle and page events.
    pub event_type: Option<String>,
    /// The method.
    pub method: String,
    /// The full URL.
    pub url: String,
    /// The URL's path.
    pub path: String,
    /// The headers sent, without `authorization` and the `x-forge-oauth-*` tokens (lower-case
    /// names).
    pub headers: BTreeMap<String, String>,
    /// The JSON body sent (`Null` for none).
    pub body: Value,
    /// The FIT sent as `Authorization: Bearer …`, if any (short-lived; kept to check it).
    pub fit: Option<String>,
    /// That FIT's `jti`.
    pub jti: Option<String>,
    /// An `x-forge-oauth-system` token was sent.
    pub sent_system_token: bool,
    /// An `x-forge-oauth-user` token was sent.
    pub sent_user_token: bool,
    /// The status the remote answered, if it answered.
    pub status: Option<u16>,
    /// The transport error (`timeout`, a refused connection), if it did not.
    pub error: Option<String>,
    /// The answer's body as JSON (`Null` when empty or not JSON).
    pub response: Value,
}

impl ForgeCall {
    /// True when the remote answered 2xx.
    pub fn acknowledged(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// The `retryContext` of a retried delivery's body.
    pub fn retry_context(&self) -> Option<&Value> {
        self.body.get("retryContext")
    }
}

/// Which kind of Forge OAuth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgeTokenKind {
    /// The app system token: acts as the Forge app user.
    System,
    /// A user's token, sent with a UI invocation: acts as that user through the app.
    User,
    /// An offline user token from `offlineUserAuthToken`: acts as that user through the app.
    Offline,
}

impl ForgeTokenKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Offline => "offline",
        }
    }
}

/// One `offlineUserAuthToken` request at the GraphQL gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineTokenExchange {
    /// The installation whose system token asked. (A request without a valid system token gets 401
    /// and is not an exchange.)
    pub installation_id: String,
    /// `input.userId`, if given.
    pub account_id: Option<String>,
    /// `input.contextIds`, as given.
    pub context_ids: Vec<String>,
    /// Whether a token was issued.
    pub success: bool,
    /// The refusal's message.
    pub error: Option<String>,
    /// The `ttl` of the token issued.
    pub ttl: Option<i64>,
    /// When (simulator clock).
    pub at: i64,
}

/// A Forge OAuth token the platform issued.
#[derive(Debug, Clone)]
pub(crate) struct ForgeToken {
    pub kind: ForgeTokenKind,
    /// The Forge app user for system tokens, the user otherwise.
    pub account_id: String,
    pub installation_id: String,
    pub expires_at: i64,
}

/// Everything the Forge platform keeps, inside the simulator's one lock.
#[derive(Debug)]
pub(crate) struct ForgeState {
    pub app_id: String,
    pub environment_id: String,
    pub environment_type: String,
    pub license_active: Option<bool>,
    pub fit_lifetime: i64,
    pub wrap_events: bool,
    /// The deployed major version.
    pub major_version: u32,
    pub keys: Vec<ForgeKey>,
    pub signing_key: usize,
    pub installation: Option<ForgeInstallation>,
    /// The Forge app user, kept across re-installs.
    pub app_account_id: Option<String>,
    pub tokens: HashMap<String, ForgeToken>,
    pub rejected_offline: BTreeSet<String>,
    pub exchanges: Vec<OfflineTokenExchange>,
    pub calls: Vec<ForgeCall>,
    pub next_call: u64,
    pub next_delivery: u64,
}

impl ForgeState {
    pub fn new(config: &ForgeConfig) -> Self {
        let app_id = config
            .app_id
            .clone()
            .unwrap_or_else(|| format!("ari:cloud:ecosystem::app/{}", random_uuid()));
        let app_uuid = app_id.rsplit('/').next().unwrap_or_default().to_owned();
        Self {
            environment_id: format!(
                "ari:cloud:ecosystem::environment/{app_uuid}/{}",
                random_uuid()
            ),
            app_id,
            environment_type: config.environment_type.clone(),
            license_active: config.license_active,
            fit_lifetime: config.fit_lifetime_seconds,
            wrap_events: config.wrap_events,
            major_version: 1,
            keys: vec![config.key.clone()],
            signing_key: 0,
            installation: None,
            app_account_id: None,
            tokens: HashMap::new(),
            rejected_offline: BTreeSet::new(),
            exchanges: Vec::new(),
            calls: Vec::new(),
            next_call: 1,
            next_delivery: 1,
        }
    }

    /// The installation, while installed.
    pub fn current(&self) -> Option<&ForgeInstallation> {
        self.installation.as_ref().filter(|i| i.installed)
    }

    pub fn signing_key(&self) -> Option<&ForgeKey> {
        self.keys.get(self.signing_key)
    }

    /// Issues an opaque token for the current installation.
    pub fn mint(
        &mut self,
        kind: ForgeTokenKind,
        account_id: &str,
        now: i64,
        lifetime: i64,
    ) -> Option<String> {
        let installation_id = self.current()?.installation_id.clone();
        // Opaque on purpose: nothing in it may be read by the remote.
        let token = format!("sim-forge-{}", random_text(48));
        self.tokens.insert(
            token.clone(),
            ForgeToken {
                kind,
                account_id: account_id.to_owned(),
                installation_id,
                expires_at: now.saturating_add(lifetime),
            },
        );
        Some(token)
    }

    /// Records a call and gives it its id.
    pub fn record(&mut self, mut call: ForgeCall) -> ForgeCall {
        call.id = self.next_call;
        self.next_call += 1;
        self.calls.push(call.clone());
        call
    }
}

/// The ARI of the site as a context of `offlineUserAuthToken` (`contextIds`). For Confluence this
/// is *unverified* (seen for Jira: `ari:cloud:jira::site/<cloudId>`), so it is made in this one
/// place.
pub(crate) fn site_context_ari(cloud_id: &str) -> String {
    format!("ari:cloud:confluence::site/{cloud_id}")
}
