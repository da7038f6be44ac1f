//! The lifecycle function: what Confluence calls when an admin installs, upgrades, enables,
//! disables or removes the app, and the descriptor it reads first.
//!
//! Nobody but Atlassian may register or replace a tenant: `installed` and `uninstalled` carry an
//! RS256 token signed by Atlassian (signed install, docs/protocol.md §4), verified before
//! anything is read from the body or written. `enabled` and `disabled` carry an HS256 token signed
//! with the tenant's stored secret (docs/protocol.md §3). A genuine install must never fail: the path is short,
//! idempotent, and answers 503 (not 401) when a dependency is down.

pub mod descriptor;

use std::sync::Arc;

use bytes::Bytes;
use connect_auth::{Clock, InstallVerifier, KeyProvider, SystemClock, extract_token};
use http::{StatusCode, header};
use serde_json::Value;
use understudy_domain::{
    ClientKey, ForgeInstallations, InstallOutcome, InstallationId, Tenant, TenantState,
    TenantStore, TokenCache,
};
use understudy_web::request::empty;
use understudy_web::routes::{self, Function};
use understudy_web::{
    Accept, ApiError, ApiRequest, ApiResponse, AppConfig, Authenticator, ConnectAuthenticator,
    ForgeFrontDoor, Invocation, TenantCache,
};

/// The lifecycle function's settings on Lambda, read once at its cold start
/// ([`understudy_web::lambda::start`]): the shared [`AppConfig`] and the store's. What it reads is
/// what `tests/deployment` checks template.yaml against.
pub type LifecycleConfig = understudy_web::deployed::DeployedConfig;

/// Install payloads are a few KiB; anything much larger is not from Confluence.
pub const MAX_LIFECYCLE_BODY: usize = 64 * 1024;

/// The lifecycle callbacks, and the descriptor.
#[derive(Debug)]
pub struct Lifecycle<S: ?Sized, K, C = SystemClock> {
    config: AppConfig,
    store: Arc<S>,
    /// Atlassian's install keys (their cache shared by every install verified).
    keys: Arc<K>,
    requests: ConnectAuthenticator<S, C>,
    clock: C,
    descriptor: Descriptor,
    forge: Option<ForgeFrontDoor<S, C>>,
}

/// The descriptor as served.
#[derive(Debug)]
enum Descriptor {
    /// `APP_BASE_URL` is set: rendered once, at the cold start, the same for every request.
    Fixed(Bytes),
    /// `APP_BASE_URL` is unset: rendered for each request with its own base URL (the domain API
    /// Gateway routed it by), so the stack needs no second deploy to learn its URL.
    PerRequest,
}

/// The Forge lifecycle events a remote receives.
const FORGE_LIFECYCLE_EVENTS: [&str; 2] = ["avi:forge:installed:app", "avi:forge:upgraded:app"];

impl<S, K, C> Lifecycle<S, K, C>
where
    S: TenantStore + TokenCache + ForgeInstallations + ?Sized,
    K: KeyProvider,
    C: Clock + Clone,
{
    /// Builds the function's state once per cold start.
    pub fn new(
        config: AppConfig,
        store: Arc<S>,
        keys: K,
        clock: C,
    ) -> Result<Self, serde_json::Error> {
        let descriptor = match config.app_base_url.as_ref() {
            Some(base_url) => Descriptor::Fixed(Bytes::from(
                descriptor::render(&config, base_url.as_str())?.to_string(),
            )),
            None => {
                // The template is checked now, not at the first request.
                descriptor::render(&config, "https://check.invalid")?;
                Descriptor::PerRequest
            }
        };
        let requests = ConnectAuthenticator::new(store.clone(), clock.clone(), config.base_path());
        Ok(Self {
            config,
            store,
            keys: Arc::new(keys),
            requests,
            clock,
            descriptor,
            forge: None,
        })
    }

    /// Opens the Forge front door (`None` keeps the Forge routes at 404).
    pub fn with_forge(mut self, forge: Option<ForgeFrontDoor<S, C>>) -> Self {
        self.forge = forge;
        self
    }

    /// Reads tenants through the process's shared `cache`, and drops a tenant from it after every
    /// change this function makes (install, state, uninstall), so the process's other handlers see
    /// the change at once.
    pub fn with_tenant_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.requests = self.requests.with_tenant_cache(cache);
        self
    }

    /// Drops the tenant from the process's cache: it has just changed.
    async fn forget(&self, client_key: &ClientKey) {
        self.requests.tenant_cache().forget(client_key).await;
    }

    /// The store (tests and the local app look into it).
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let path = request.relative_path(self.config.base_path());
        let result = match routes::resolve(Function::Lifecycle, &request.method, path) {
            Ok(routes::DESCRIPTOR) => self.serve_descriptor(&request),
            Ok(routes::INSTALLED) => self.installed(&request).await,
            Ok(routes::UNINSTALLED) => self.uninstalled(&request).await,
            Ok(routes::ENABLED) => self.set_state(&request, TenantState::Enabled).await,
            Ok(routes::DISABLED) => self.set_state(&request, TenantState::Disabled).await,
            Ok(routes::FORGE_LIFECYCLE) => self.forge_lifecycle(&request).await,
            Ok(routes::FORGE_SCHEDULED) => self.forge_scheduled(&request).await,
            Ok(_) => Err(ApiError::NotFound),
            Err(err) => Err(err),
        };
        understudy_web::error::respond(result, &self.config.app_key)
    }

    fn serve_descriptor(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = match &self.descriptor {
            Descriptor::Fixed(body) => body.clone(),
            Descriptor::PerRequest => {
                let base_url = self.config.base_url_for(request).ok_or_else(|| {
                    ApiError::Internal(
                        "no base URL: APP_BASE_URL is unset and the request did not come through \
                         API Gateway"
                            .into(),
                    )
                })?;
                let descriptor = descriptor::render(&self.config, &base_url)
                    .map_err(|e| ApiError::Internal(format!("the descriptor template: {e}")))?;
                Bytes::from(descriptor.to_string())
            }
        };
        let mut response = http::Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(response)
    }

    /// Verifies a signed install against this request; returns the verified issuer. Its audience
    /// must be the app's base URL as this request reached it (`APP_BASE_URL`, or without it the
    /// domain API Gateway routed the request by) or one of `INSTALL_AUDIENCES`: a token Atlassian
    /// signed for another app's URL is refused.
    async fn verify_signed(&self, request: &ApiRequest) -> Result<String, ApiError> {
        let token = extract_token(request.authorization(), &request.raw_query)?;
        let installs = InstallVerifier::with_clock(
            self.keys.clone(),
            self.config.install_audiences_for(request),
            self.clock.clone(),
        );
        let claims = installs
            .verify(token, &request.parts(self.config.base_path()))
            .await?;
        Ok(claims.iss)
    }

    #[tracing::instrument(skip_all, fields(callback = "installed"))]
    async fn installed(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        let issuer = self.verify_signed(request).await?;
        let payload = parse_payload(body, "the install payload")?;
        require_issuer_is_client_key(&issuer, &payload)?;
        self.check_install(&payload)?;
        let now = self.clock.now_unix();
        let tenant = Tenant::from_install_payload(payload, now)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        // The reason may name the payload's host: it goes to the log (escaped), not to the answer.
        self.config
            .tenant_hosts
            .allows(&tenant.base_url)
            .map_err(|reason| {
                tracing::info!(client_key = %tenant.client_key.as_str(), reason = %reason,
                    "install from a site that may not install");
                ApiError::Forbidden(
                    "install refused: baseUrl is not an https URL of a Confluence site allowed \
                     to install this app"
                        .into(),
                )
            })?;
        let outcome = self.store.save_install(&tenant, now).await?;
        self.forget(&tenant.client_key).await;
        self.link_forge_installation(&tenant, now).await?;
        if outcome == InstallOutcome::Updated {
            // A re-install may carry a new secret (rotation): tokens got under the old one go.
            if let Err(err) = self.store.drop_tokens_for_tenant(&tenant.client_key).await {
                tracing::warn!(client_key = %tenant.client_key.as_str(), error = %err,
                    "re-install saved but cached tokens could not be dropped; they expire by themselves");
            }
        }
        tracing::info!(
            client_key = %tenant.client_key.as_str(),
            outcome = if outcome == InstallOutcome::New { "new" } else { "updated" },
            act_as_user = tenant.oauth_client_id.is_some(),
            "installed"
        );
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// Links the Forge installation an install payload names (Connect on Forge) to this tenant. A
    /// value that is not an installation ARI is logged and left alone: it must not fail an install.
    async fn link_forge_installation(&self, tenant: &Tenant, now: i64) -> Result<(), ApiError> {
        let Some(given) = tenant.installation_id.as_deref() else {
            return Ok(());
        };
        match InstallationId::parse(given) {
            Ok(id) => {
                self.store
                    .link_installation(&id, &tenant.client_key, now)
                    .await?;
                tracing::info!(client_key = %tenant.client_key.as_str(), installation_id = %id,
                    "linked to its Forge installation");
            }
            Err(reason) => {
                tracing::warn!(client_key = %tenant.client_key.as_str(), reason = %reason,
                "the install payload's installationId is not a Forge installation ARI; not linked")
            }
        }
        Ok(())
    }

    fn forge(&self) -> Result<&ForgeFrontDoor<S, C>, ApiError> {
        self.forge.as_ref().ok_or(ApiError::NotFound)
    }

    /// `avi:forge:installed:app` / `avi:forge:upgraded:app`: the installation is recorded by the
    /// front door; the event itself only says which.
    #[tracing::instrument(skip_all, fields(callback = "forge-lifecycle", installation_id = tracing::field::Empty))]
    async fn forge_lifecycle(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let forge = self.forge()?;
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        let caller = forge.authenticate(request, Invocation::App).await?;
        tracing::Span::current().record("installation_id", caller.installation.id.as_str());
        let payload = parse_payload(body, "the Forge lifecycle event")?;
        let event = payload
            .get("payload")
            .filter(|inner| inner.get("eventType").is_some())
            .unwrap_or(&payload)
            .get("eventType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !FORGE_LIFECYCLE_EVENTS.contains(&event) {
            return Err(ApiError::BadRequest(
                "not a Forge lifecycle event this app subscribes to".into(),
            ));
        }
        tracing::info!(
            event,
            tenant_key = %caller.installation.tenant_key.as_str(),
            linked = caller.installation.tenant_key != caller.installation.id.own_tenant_key(),
            "Forge installation recorded"
        );
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// The hourly scheduled trigger: its only work is the fresh system token the front door keeps.
    #[tracing::instrument(skip_all, fields(callback = "forge-scheduled"))]
    async fn forge_scheduled(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let forge = self.forge()?;
        // The body (the trigger's context) is not needed: the token is in the headers.
        let caller = forge.authenticate(request, Invocation::App).await?;
        tracing::info!(installation_id = %caller.installation.id, "Forge system token refreshed");
        Ok(empty(StatusCode::NO_CONTENT))
    }

    /// What a verified install must also be: for this app, from Confluence.
    fn check_install(&self, payload: &Value) -> Result<(), ApiError> {
        let text = |name: &str| payload.get(name).and_then(Value::as_str);
        match text("productType") {
            Some("confluence") => {}
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "productType must be confluence".into(),
                ));
            }
            None => {
                return Err(ApiError::BadRequest(
                    "install payload: productType is missing".into(),
                ));
            }
        }
        if text("key").is_some_and(|key| key != self.config.app_key) {
            return Err(ApiError::BadRequest(
                "install payload names another app key".into(),
            ));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(callback = "uninstalled"))]
    async fn uninstalled(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        let issuer = self.verify_signed(request).await?;
        let payload = parse_payload(body, "the uninstall payload")?;
        let client_key = require_issuer_is_client_key(&issuer, &payload)?;
        let known = self
            .store
            .mark_uninstalled(&client_key, self.clock.now_unix())
            .await?;
        self.forget(&client_key).await;
        tracing::info!(client_key = %client_key.as_str(), known, "uninstalled");
        Ok(empty(StatusCode::NO_CONTENT))
    }

    #[tracing::instrument(skip_all, fields(state = state.as_str(), client_key = tracing::field::Empty))]
    async fn set_state(
        &self,
        request: &ApiRequest,
        state: TenantState,
    ) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        // Lifecycle routes never accept context tokens (CVE-2021-26073).
        let caller = self
            .requests
            .authenticate(request, Accept::RequestToken)
            .await?;
        let now = self.clock.now_unix();
        let payload = parse_payload(body, "the lifecycle payload")?;
        if payload.get("clientKey").is_some() {
            // The token's issuer is the tenant it verified with.
            require_issuer_is_client_key(caller.tenant.client_key.as_str(), &payload)?;
        }
        let client_key = caller.tenant.client_key.clone();
        tracing::Span::current().record("client_key", client_key.as_str());
        let changed = self.store.set_state(&client_key, state, now).await?;
        self.forget(&client_key).await;
        if !changed {
            // Uninstalled between the lookup and now.
            return Err(ApiError::Unauthorized("tenant is not installed".into()));
        }
        tracing::info!(client_key = %client_key.as_str(), state = state.as_str(), "state changed");
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

/// The payload as a JSON object, kept whole (the stored install payload keeps fields this app does
/// not know). Errors are in fixed words: never the caller's text.
fn parse_payload(body: &[u8], what: &'static str) -> Result<Value, ApiError> {
    let payload: Value = understudy_web::parse_json(body, what)?;
    if payload.is_object() {
        Ok(payload)
    } else {
        Err(ApiError::BadRequest(format!("{what} is not a JSON object")))
    }
}

/// The verified issuer must be the tenant the body speaks for.
fn require_issuer_is_client_key(issuer: &str, payload: &Value) -> Result<ClientKey, ApiError> {
    let client_key = payload
        .get("clientKey")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::BadRequest("the payload lacks the field `clientKey` (a string)".into())
        })?;
    if client_key != issuer {
        return Err(ApiError::Unauthorized(
            "token issuer is not the payload's clientKey".into(),
        ));
    }
    ClientKey::parse(client_key).map_err(|e| ApiError::BadRequest(e.to_string()))
}
