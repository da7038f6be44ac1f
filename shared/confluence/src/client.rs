//! The Confluence REST client: one `reqwest` connection pool per warm instance, typed operations,
//! the same whether acting as the app (`Authorization: JWT`, minted per request) or as a user
//! (`Authorization: Bearer`, by impersonation).
//!
//! Every URL is the tenant's verified base URL with a path appended; a URL whose scheme, host or port
//! differs from the base is refused before anything is sent, and redirects are never followed, so the
//! tenant's own host is the only one ever called with its credentials.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use connect_auth::ExposeSecret;
use connect_auth::{Clock, SecretString, SystemClock, mint_app_token};
use moka::future::Cache;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use understudy_core::{
    Actor, Door, ForgeDoor, OperationRestriction, Page, PageUpdate, RestrictionOperation,
    Restrictions, TokenError,
};
use understudy_domain::{AccountId, ActedAs, ClientKey, PageId, TokenCache};
use url::Url;

use crate::config::{ClientConfig, ConfigError, Scopes, scheme_allowed};
use crate::error::{ConfluenceError, network_reason};
use crate::offline::OfflineTokens;
use crate::retry::{Attempt, AttemptLimits, Pause, Retried, Retrier, TokioPause, told_wait};
use crate::tokens::ImpersonationTokens;

/// The client. Cheap to clone; build it once per cold start.
#[derive(Clone)]
pub struct ConfluenceClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    tokens: ImpersonationTokens,
    offline: OfflineTokens,
    /// The app user's accountId per tenant (and base URL: a renamed site is asked again); see
    /// [`app_account_cache`] for its bound and expiry.
    app_accounts: Cache<(ClientKey, String), AppAccount>,
}

/// Tenants whose app user's accountId one warm instance keeps, at most.
const APP_ACCOUNTS_CAPACITY: u64 = 4_096;

/// How long an app user's accountId is kept before it is asked again: a day.
const APP_ACCOUNT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The app user's accountId, and until when (Unix seconds, on the injected clock) it is trusted.
#[derive(Debug, Clone)]
struct AppAccount {
    id: AccountId,
    until: i64,
}

/// The app users' accountIds: at most `capacity` tenants (least recently used out first), each
/// for [`APP_ACCOUNT_TTL`]. Moka counts that on the monotonic clock from when the id is stored;
/// [`ConfluenceClient::app_account_id`] also checks it against the injected clock on every read.
fn app_account_cache(capacity: u64) -> Cache<(ClientKey, String), AppAccount> {
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(APP_ACCOUNT_TTL)
        .build()
}

impl fmt::Debug for ConfluenceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluenceClient")
            .field("config", &self.inner.config)
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

/// The HTTP client for `config`: one per process and settings, shared by every [`ConfluenceClient`]
/// built with them (and by whoever else asks, e.g. the local app's install-key fetches).
///
/// Why shared: reqwest's client holds a connection pool meant to be reused, and building one
/// loads and parses the system's root certificates (about 2 ms here), which the local app did once
/// per client at start. A handful of distinct settings exist per process; past
/// [`SHARED_HTTP_CLIENTS`] a client is built on its own.
pub fn http_client(config: &ClientConfig) -> Result<reqwest::Client, ConfigError> {
    static SHARED: std::sync::Mutex<Vec<(String, Duration, reqwest::Client)>> =
        std::sync::Mutex::new(Vec::new());
    let mut shared = SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, _, client)) = shared.iter().find(|(agent, timeout, _)| {
        *agent == config.user_agent && *timeout == config.connect_timeout
    }) {
        return Ok(client.clone());
    }
    let client = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.connect_timeout)
        .build()
        .map_err(|_| ConfigError::HttpClient)?;
    if shared.len() < SHARED_HTTP_CLIENTS {
        shared.push((
            config.user_agent.clone(),
            config.connect_timeout,
            client.clone(),
        ));
    }
    Ok(client)
}

/// Distinct settings whose HTTP client [`http_client`] shares, at most.
pub const SHARED_HTTP_CLIENTS: usize = 8;

impl ConfluenceClient {
    /// A client on the system clock, sleeping for real between retries.
    pub fn new(
        config: ClientConfig,
        token_store: Arc<dyn TokenCache>,
    ) -> Result<Self, ConfigError> {
        Self::with_time(
            config,
            token_store,
            Arc::new(SystemClock),
            Arc::new(TokioPause),
        )
    }

    /// A client with injected time: `clock` for token lifetimes and dated headers, `pause` for the
    /// waits between retries and the deadline.
    pub fn with_time(
        config: ClientConfig,
        token_store: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
        pause: Arc<dyn Pause>,
    ) -> Result<Self, ConfigError> {
        let http = http_client(&config)?;
        let tokens = ImpersonationTokens::new(
            http.clone(),
            config.clone(),
            token_store,
            Arc::clone(&clock),
            Arc::clone(&pause),
        );
        let offline = OfflineTokens::new(
            http.clone(),
            config.clone(),
            Arc::clone(&clock),
            Arc::clone(&pause),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                clock,
                pause,
                tokens,
                offline,
                app_accounts: app_account_cache(APP_ACCOUNTS_CAPACITY),
            }),
        })
    }

    /// Operations as the app user, through `door` (a Connect tenant is a door:
    /// `client.as_app(&tenant)`).
    pub fn as_app<'a>(&'a self, door: impl Into<Door<'a>>) -> Session<'a> {
        Session {
            client: self,
            door: door.into(),
            actor: Actor::App,
        }
    }

    /// Operations as `account`, by impersonation (Connect's JWT-bearer grant, Forge's offline
    /// token or the invoking user's own token).
    pub fn as_user<'a>(&'a self, door: impl Into<Door<'a>>, account: &'a AccountId) -> Session<'a> {
        Session {
            client: self,
            door: door.into(),
            actor: Actor::User(account),
        }
    }

    /// The user-token issuer (for callers that want to warm or drop tokens).
    pub fn tokens(&self) -> &ImpersonationTokens {
        &self.inner.tokens
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn now_unix(&self) -> i64 {
        self.inner.clock.now_unix()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn pause(&self) -> &dyn Pause {
        &*self.inner.pause
    }

    /// The app user's own accountId on this tenant (`GET /rest/api/user/current` as the app),
    /// asked once per tenant and door, warm instance and [`APP_ACCOUNT_TTL`]; concurrent callers
    /// share one request. The Forge app's account is not the Connect app user's: the base URLs of
    /// the two doors differ, and so do their cache keys.
    pub async fn app_account_id<'a>(
        &self,
        door: impl Into<Door<'a>>,
    ) -> Result<AccountId, ConfluenceError> {
        let door = door.into();
        let key = (door.tenant_key().clone(), door_base_url(door));
        let cache = &self.inner.app_accounts;
        if let Some(known) = cache.get(&key).await {
            if known.until > self.now_unix() {
                return Ok(known.id);
            }
            cache.invalidate(&key).await;
        }
        cache
            .try_get_with(key, self.ask_app_account_id(door))
            .await
            .map(|known| known.id)
            .map_err(|error| (*error).clone())
    }

    async fn ask_app_account_id(&self, door: Door<'_>) -> Result<AppAccount, ConfluenceError> {
        let user = self.as_app(door).current_user().await?;
        if user.account_type.as_deref().is_some_and(|t| t != "app") {
            tracing::warn!(
                client_key = %door.tenant_key(),
                door = door.name(),
                account_type = ?user.account_type,
                "the app's current user is not of accountType app"
            );
        }
        let ttl = i64::try_from(APP_ACCOUNT_TTL.as_secs()).unwrap_or(i64::MAX);
        Ok(AppAccount {
            id: user.account_id,
            until: self.now_unix().saturating_add(ttl),
        })
    }
}

/// The base URL Confluence's REST API is under, through a door: the site's (Connect) or
/// `<apiBaseUrl>/wiki` (Forge).
fn door_base_url(door: Door<'_>) -> String {
    match door {
        Door::Connect(tenant) => tenant.base_url.clone(),
        Door::Forge(forge) => forge.installation.confluence_base_url(),
    }
}

/// The typed operations, bound to one tenant's door and one actor.
#[derive(Debug, Clone, Copy)]
pub struct Session<'a> {
    client: &'a ConfluenceClient,
    door: Door<'a>,
    actor: Actor<'a>,
}

/// Who the request ran as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentUser {
    /// The accountId.
    pub account_id: AccountId,
    /// `app` for the app user, `atlassian` for people.
    pub account_type: Option<String>,
}

#[derive(Deserialize)]
struct RawPage {
    id: Value,
    status: Option<String>,
    title: Option<String>,
    #[serde(rename = "spaceId")]
    space_id: Option<Value>,
    version: Option<RawVersion>,
    body: Option<RawBody>,
}

#[derive(Deserialize)]
struct RawVersion {
    number: u64,
}

#[derive(Deserialize)]
struct RawBody {
    storage: Option<RawStorage>,
}

#[derive(Deserialize)]
struct RawStorage {
    value: String,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(rename = "accountId")]
    account_id: Option<String>,
    #[serde(rename = "accountType")]
    account_type: Option<String>,
}

fn invalid(reason: &str) -> ConfluenceError {
    ConfluenceError::InvalidResponse {
        reason: reason.to_owned(),
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl<'a> Session<'a> {
    /// Who this session acts as, for audit records.
    pub fn acted_as(&self) -> ActedAs {
        match self.actor {
            Actor::App => ActedAs::App,
            Actor::User(account) => ActedAs::User(account.clone()),
        }
    }

    /// The door this session talks through.
    pub fn door(&self) -> Door<'a> {
        self.door
    }

    /// `GET /api/v2/pages/{id}?body-format=storage`.
    pub async fn get_page(&self, id: &PageId) -> Result<Page, ConfluenceError> {
        let url = self.url(
            &format!("/api/v2/pages/{id}"),
            &[("body-format", "storage")],
        )?;
        let bytes = self.send(Method::GET, url, None).await?;
        let raw: RawPage =
            serde_json::from_slice(&bytes).map_err(|_| invalid("page is not the v2 page JSON"))?;
        let page_id = id_text(&raw.id)
            .and_then(|s| PageId::parse(s).ok())
            .ok_or_else(|| invalid("page id missing or malformed"))?;
        if &page_id != id {
            return Err(invalid("page id differs from the one asked for"));
        }
        Ok(Page {
            id: page_id,
            status: raw.status.unwrap_or_else(|| "current".to_owned()),
            title: raw.title.ok_or_else(|| invalid("page has no title"))?,
            space_id: raw.space_id.as_ref().and_then(id_text),
            version: raw
                .version
                .ok_or_else(|| invalid("page has no version"))?
                .number,
            body: raw
                .body
                .and_then(|b| b.storage)
                .ok_or_else(|| invalid("page has no storage body"))?
                .value,
        })
    }

    /// `GET /api/v2/pages/{id}` without its body: whether this session may view the page. `false`
    /// on Confluence's refusals (404: cannot view; 403: blocked otherwise); other failures are errors.
    pub async fn can_view_page(&self, id: &PageId) -> Result<bool, ConfluenceError> {
        let url = self.url(&format!("/api/v2/pages/{id}"), &[])?;
        match self.send(Method::GET, url, None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_access_denied() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /rest/api/content/{id}/permission/check`: whether `account` may `read` or `update` the
    /// page, as Confluence judges it. The session itself must be able to see the page: a 404 or 403
    /// to the session is `false` (nobody here can say yes).
    pub async fn permission_check(
        &self,
        id: &PageId,
        account: &AccountId,
        operation: RestrictionOperation,
    ) -> Result<bool, ConfluenceError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(rename = "hasPermission")]
            has_permission: bool,
        }
        let url = self.url(&format!("/rest/api/content/{id}/permission/check"), &[])?;
        let body = json!({
            "subject": {"type": "user", "identifier": account.as_str()},
            "operation": operation.as_str(),
        });
        match self.send(Method::POST, url, Some(body)).await {
            Ok(bytes) => serde_json::from_slice::<Answer>(&bytes)
                .map(|a| a.has_permission)
                .map_err(|_| invalid("permission check answer is not JSON with hasPermission")),
            Err(e) if e.is_access_denied() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT /api/v2/pages/{id}` replacing title and body; returns the new version number.
    pub async fn update_page(&self, update: &PageUpdate<'_>) -> Result<u64, ConfluenceError> {
        let url = self.url(&format!("/api/v2/pages/{}", update.id), &[])?;
        let body = json!({
            "id": update.id.as_str(),
            "status": "current",
            "title": update.title,
            "body": {"representation": "storage", "value": update.body},
            "version": {"number": update.version, "message": update.message},
        });
        let bytes = self.send(Method::PUT, url, Some(body)).await?;
        let raw: RawPage = serde_json::from_slice(&bytes)
            .map_err(|_| invalid("update answer is not the v2 page JSON"))?;
        Ok(raw.version.map_or(update.version, |v| v.number))
    }

    /// `GET /rest/api/content/{id}/restriction/byOperation` with users and groups expanded.
    pub async fn get_restrictions(&self, id: &PageId) -> Result<Restrictions, ConfluenceError> {
        let url = self.url(
            &format!("/rest/api/content/{id}/restriction/byOperation"),
            &[("expand", "restrictions.user,restrictions.group")],
        )?;
        let bytes = self.send(Method::GET, url, None).await?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| invalid("restrictions are not JSON"))?;
        parse_restrictions(&value)
    }

    /// `PUT /rest/api/content/{id}/restriction/byOperation/{op}/user?accountId=…`: adds a user to an
    /// operation's restriction (creating the restriction if there was none: callers check first).
    pub async fn add_restriction_user(
        &self,
        id: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<(), ConfluenceError> {
        let url = self.restriction_user_url(id, operation, account)?;
        self.send(Method::PUT, url, None).await.map(drop)
    }

    /// `DELETE` of the same resource: removes a user from an operation's restriction.
    pub async fn remove_restriction_user(
        &self,
        id: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<(), ConfluenceError> {
        let url = self.restriction_user_url(id, operation, account)?;
        self.send(Method::DELETE, url, None).await.map(drop)
    }

    /// `GET /rest/api/user?accountId=…&expand=operations`: whether the user is a site admin
    /// (`administer` on `application`). An unknown user (404) is not.
    pub async fn is_site_admin(&self, account: &AccountId) -> Result<bool, ConfluenceError> {
        #[derive(Deserialize)]
        struct Operation {
            operation: Option<String>,
            #[serde(rename = "targetType")]
            target_type: Option<String>,
        }
        #[derive(Deserialize)]
        struct User {
            #[serde(default)]
            operations: Vec<Operation>,
        }
        let url = self.url(
            "/rest/api/user",
            &[("accountId", account.as_str()), ("expand", "operations")],
        )?;
        match self.send(Method::GET, url, None).await {
            Ok(bytes) => {
                let user: User = serde_json::from_slice(&bytes)
                    .map_err(|_| invalid("user is not JSON with operations"))?;
                Ok(user.operations.iter().any(|op| {
                    op.operation.as_deref() == Some("administer")
                        && op.target_type.as_deref() == Some("application")
                }))
            }
            Err(ConfluenceError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /rest/api/user/current`.
    pub async fn current_user(&self) -> Result<CurrentUser, ConfluenceError> {
        let url = self.url("/rest/api/user/current", &[])?;
        let bytes = self.send(Method::GET, url, None).await?;
        let raw: RawUser =
            serde_json::from_slice(&bytes).map_err(|_| invalid("current user is not JSON"))?;
        let account_id = raw
            .account_id
            .and_then(|a| AccountId::parse(a).ok())
            .ok_or_else(|| invalid("current user has no valid accountId"))?;
        Ok(CurrentUser {
            account_id,
            account_type: raw.account_type,
        })
    }

    fn restriction_user_url(
        &self,
        id: &PageId,
        operation: RestrictionOperation,
        account: &AccountId,
    ) -> Result<Url, ConfluenceError> {
        self.url(
            &format!(
                "/rest/api/content/{id}/restriction/byOperation/{}/user",
                operation.as_str()
            ),
            &[("accountId", account.as_str())],
        )
    }

    fn base_url(&self) -> Result<Url, ConfluenceError> {
        let base = Url::parse(&door_base_url(self.door)).map_err(|_| ConfluenceError::BaseUrl {
            reason: "not an absolute URL",
        })?;
        if !scheme_allowed(&base, self.client.inner.config.allow_http_loopback) {
            return Err(ConfluenceError::BaseUrl {
                reason: "not https",
            });
        }
        if base.query().is_some()
            || base.fragment().is_some()
            || !base.username().is_empty()
            || base.password().is_some()
        {
            return Err(ConfluenceError::BaseUrl {
                reason: "has a query, fragment or credentials",
            });
        }
        Ok(base)
    }

    /// The tenant base URL with `path` appended (after its own path, e.g. `/wiki`) and `query` set.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ConfluenceError> {
        let base = self.base_url()?;
        let mut url = base.clone();
        url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
            || !url.path().starts_with(base.path().trim_end_matches('/'))
        {
            return Err(ConfluenceError::BaseUrl {
                reason: "a built URL would leave the tenant",
            });
        }
        Ok(url)
    }

    async fn authorization(
        &self,
        method: &Method,
        url: &Url,
        rejected: Option<&SecretString>,
    ) -> Result<(HeaderValue, Option<SecretString>), ConfluenceError> {
        let (text, user_token) = match (self.door, self.actor) {
            (Door::Connect(tenant), Actor::App) => {
                let base = self.base_url()?;
                let token = mint_app_token(
                    &tenant.app_key,
                    tenant.client_key.as_str(),
                    &tenant.shared_secret,
                    method.as_str(),
                    url,
                    &base,
                    self.client.now_unix(),
                )
                .map_err(|_| ConfluenceError::Signing)?;
                (format!("JWT {token}"), None)
            }
            (Door::Connect(tenant), Actor::User(account)) => {
                let tokens = &self.client.inner.tokens;
                let scopes: Option<&Scopes> = self.client.inner.config.user_scopes.as_ref();
                let token = match rejected {
                    None => tokens.access_token(tenant, account, scopes).await?,
                    Some(old) => {
                        tokens
                            .refresh_after_rejection(tenant, account, scopes, old)
                            .await?
                    }
                };
                (format!("Bearer {}", token.expose_secret()), Some(token))
            }
            (Door::Forge(forge), Actor::App) => {
                let system = self.fresh_system_token(forge)?;
                (format!("Bearer {}", system.expose_secret()), None)
            }
            (Door::Forge(forge), Actor::User(account)) => match forge.invoker {
                // The user who invoked the app: their own token, exactly as Forge gave it.
                Some(invoker) if invoker.account == account => {
                    (format!("Bearer {}", invoker.token.expose_secret()), None)
                }
                _ => {
                    let system = self.fresh_system_token(forge)?;
                    let token = self
                        .client
                        .inner
                        .offline
                        .token(forge.installation, system, account, rejected)
                        .await?;
                    (format!("Bearer {}", token.expose_secret()), Some(token))
                }
            },
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| ConfluenceError::Signing)?;
        value.set_sensitive(true);
        Ok((value, user_token))
    }

    /// The installation's system token, unless it is past its trusted lifetime: then nothing is
    /// sent, and the job waits for the fresh one the next invocation brings.
    fn fresh_system_token(
        &self,
        forge: ForgeDoor<'a>,
    ) -> Result<&'a SecretString, ConfluenceError> {
        let system = &forge.installation.system_token;
        if system.is_fresh(self.client.now_unix()) {
            Ok(&system.token)
        } else {
            Err(ConfluenceError::Token(TokenError::SystemTokenExpired))
        }
    }

    /// Sends one logical request through the retry executor ([`Retrier`]); returns the 2xx body.
    ///
    /// Retried: 429 and 503-with-a-told-wait (waiting as told, else backoff), other 5xx and network
    /// errors (backoff). All our requests are safe to repeat: GETs; restriction PUT/DELETE, which set
    /// a state; and the page PUT, which carries the next version number, so a repeat of one that
    /// already landed gets 409 and never a second edit. A user token refused with 401 is exchanged
    /// again once (it may have been revoked or expired early): [`Attempt::Again`].
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Vec<u8>, ConfluenceError> {
        let inner = &self.client.inner;
        let retried = Retried {
            client_key: self.door.tenant_key().as_str(),
            method: method.as_str(),
            path: url.path(),
        };
        // The user token Confluence refused, once set: later attempts exchange a new one.
        let rejected: OnceLock<SecretString> = OnceLock::new();
        let (method, url, body, rejected) = (&method, &url, &body, &rejected);
        Retrier::new(inner.config.retry, &*inner.pause)
            .run(retried, |limits| async move {
                let (authorization, user_token) =
                    match self.authorization(method, url, rejected.get()).await {
                        Ok(pair) => pair,
                        Err(error) => return Attempt::Done(Err(error)),
                    };
                let mut request = inner
                    .http
                    .request(method.clone(), url.clone())
                    .header(AUTHORIZATION, authorization)
                    .header(ACCEPT, "application/json");
                // Never a body on GET: Confluence answers 403 to it (docs/protocol.md §5).
                if let Some(body) = body
                    && method != Method::GET
                {
                    request = request.json(body);
                }
                let network = |reason| ConfluenceError::Network { reason };
                match limits.send(request, network).await {
                    Ok(response) => self.judge(response, user_token, rejected, limits).await,
                    Err(retry) => retry,
                }
            })
            .await
    }

    /// What Confluence's answer to one attempt of [`Self::send`] comes to.
    async fn judge(
        &self,
        response: reqwest::Response,
        user_token: Option<SecretString>,
        rejected: &OnceLock<SecretString>,
        limits: AttemptLimits<'_>,
    ) -> Attempt<Vec<u8>, ConfluenceError> {
        let status = response.status();
        if status.is_success() {
            return Attempt::Done(response.bytes().await.map(|b| b.to_vec()).map_err(|e| {
                ConfluenceError::Network {
                    reason: network_reason(&e),
                }
            }));
        }
        if status == StatusCode::UNAUTHORIZED
            && let Some(token) = user_token
            && rejected.set(token).is_ok()
        {
            tracing::warn!(
                client_key = %self.door.tenant_key(),
                attempt = limits.number(),
                reason = "401 to a user token",
                "retrying Confluence request with a fresh user token"
            );
            return Attempt::Again {
                error: ConfluenceError::Unauthorized,
            };
        }
        let told = told_wait(response.headers(), self.client.now_unix());
        match status {
            StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                error: ConfluenceError::RateLimited { retry_after: told },
                told,
            },
            StatusCode::SERVICE_UNAVAILABLE if told.is_some() => Attempt::Retry {
                error: ConfluenceError::RateLimited { retry_after: told },
                told,
            },
            s if s.is_server_error() => Attempt::Retry {
                error: ConfluenceError::Server { status: s.as_u16() },
                told: None,
            },
            s => Attempt::Done(Err(final_error(s))),
        }
    }
}

fn final_error(status: StatusCode) -> ConfluenceError {
    match status {
        StatusCode::NOT_FOUND => ConfluenceError::NotFound,
        StatusCode::FORBIDDEN => ConfluenceError::Forbidden,
        StatusCode::CONFLICT => ConfluenceError::Conflict,
        StatusCode::UNAUTHORIZED => ConfluenceError::Unauthorized,
        s => ConfluenceError::UnexpectedStatus { status: s.as_u16() },
    }
}

/// Reads both shapes seen in the wild: `{"read": {...}, "update": {...}}` and the same wrapped in
/// `{"restrictions": {...}}`.
fn parse_restrictions(value: &Value) -> Result<Restrictions, ConfluenceError> {
    let map = match value.get("restrictions") {
        Some(inner) if inner.get("read").is_some() || inner.get("update").is_some() => inner,
        _ => value,
    };
    if !map.is_object() {
        return Err(invalid("restrictions are not an object"));
    }
    let operation = |name: &str| -> Result<OperationRestriction, ConfluenceError> {
        let Some(op) = map.get(name).and_then(|o| o.get("restrictions")) else {
            return Ok(OperationRestriction::default());
        };
        let list = |kind: &str| -> Vec<Value> {
            op.get(kind)
                .and_then(|k| k.get("results"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let users = list("user")
            .iter()
            .map(|u| {
                u.get("accountId")
                    .and_then(Value::as_str)
                    .and_then(|a| AccountId::parse(a).ok())
                    .ok_or_else(|| invalid("restriction user without a valid accountId"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let groups = list("group")
            .iter()
            .map(|g| {
                g.get("name")
                    .or_else(|| g.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("restriction group without a name or id"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OperationRestriction { users, groups })
    };
    Ok(Restrictions {
        read: operation("read")?,
        update: operation("update")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_app_accounts_stay_within_their_bound() {
        let cache = app_account_cache(3);
        for n in 0..20 {
            let key = (
                ClientKey::parse(format!("tenant-{n}")).unwrap(),
                String::new(),
            );
            let known = AppAccount {
                id: AccountId::parse("app").unwrap(),
                until: i64::MAX,
            };
            cache.insert(key, known).await;
        }
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 3);
        assert_eq!(APP_ACCOUNTS_CAPACITY, 4_096);
    }

    #[test]
    fn restrictions_parse_in_both_shapes() {
        let op = json!({
            "read": {"operation": "read", "restrictions": {
                "user": {"results": [{"accountId": "u-1"}], "size": 1},
                "group": {"results": [{"name": "team", "id": "g-1"}], "size": 1}}},
            "update": {"operation": "update", "restrictions": {
                "user": {"results": [], "size": 0}, "group": {"results": [], "size": 0}}}
        });
        let direct = parse_restrictions(&op).unwrap();
        let wrapped = parse_restrictions(&json!({"restrictions": op})).unwrap();
        assert_eq!(direct, wrapped);
        assert!(direct.read.exists());
        assert!(direct.read.lists_user(&AccountId::parse("u-1").unwrap()));
        assert_eq!(direct.read.groups, vec!["team".to_owned()]);
        assert!(!direct.update.exists());
        assert!(parse_restrictions(&json!([1])).is_err());
        assert!(
            parse_restrictions(&json!({"read": {"restrictions": {"user": {"results": [{}]}}}}))
                .is_err()
        );
    }
}
