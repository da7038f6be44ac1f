//! The lifecycle function: what Confluence calls when an admin installs, upgrades, enables,
//! disables or removes the app, and the descriptor it reads first.
//!
//! Nobody but Atlassian may register or replace a tenant: `installed` and `uninstalled` carry an
//! RS256 token signed by Atlassian (signed install, `connect-protocol.md` §4), verified before
//! anything is read from the body or written. `enabled` and `disabled` carry an HS256 token signed
//! with the tenant's stored secret (§3). A genuine install must never fail: the path is short,
//! idempotent, and answers 503 (not 401) when a dependency is down.

pub mod descriptor;

use std::sync::Arc;

use bytes::Bytes;
use connect_auth::{Clock, InstallVerifier, KeyProvider, QshMode, SystemClock, extract_token};
use http::{Method, StatusCode, header};
use serde_json::Value;
use understudy_domain::{ClientKey, InstallOutcome, Tenant, TenantState, TenantStore, TokenCache};
use understudy_web::request::empty;
use understudy_web::{ApiError, ApiRequest, ApiResponse, AppConfig, TenantAuth};

/// Every environment variable this function reads; template.yaml sets exactly these (checked by
/// `tests/deployment`).
///
/// - `understudy_web::AppConfig`: `APP_KEY`, `APP_BASE_URL`, `INSTALL_AUDIENCES` (optional),
///   `CONNECT_KEYS_URL` (optional), `ALLOWED_TENANT_HOSTS`;
/// - `understudy_store::deployed_store_from_env`: `TABLE_NAME`, `KMS_KEY_ID`;
/// - `understudy_web::telemetry`: `RUST_LOG`.
///
/// Variables that the AWS SDK and the Lambda runtime read (`AWS_REGION`, credentials,
/// `AWS_LAMBDA_RUNTIME_API`, …) are Lambda's own and not listed.
pub const ENV_VARS: &[&str] = &[
    "APP_KEY",
    "APP_BASE_URL",
    "INSTALL_AUDIENCES",
    "CONNECT_KEYS_URL",
    "ALLOWED_TENANT_HOSTS",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "RUST_LOG",
];

/// Install payloads are a few KiB; anything much larger is not from Confluence.
pub const MAX_LIFECYCLE_BODY: usize = 64 * 1024;

/// The lifecycle callbacks, and the descriptor.
#[derive(Debug)]
pub struct Lifecycle<S: ?Sized, K, C = SystemClock> {
    config: AppConfig,
    store: Arc<S>,
    installs: InstallVerifier<K, C>,
    requests: TenantAuth<C>,
    clock: C,
    descriptor: Bytes,
}

impl<S, K, C> Lifecycle<S, K, C>
where
    S: TenantStore + TokenCache + ?Sized,
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
        let descriptor = Bytes::from(descriptor::render(&config)?.to_string());
        let installs = InstallVerifier::with_clock(keys, &config.install_audiences, clock.clone());
        let requests = TenantAuth::new(clock.clone(), config.base_path());
        Ok(Self {
            config,
            store,
            installs,
            requests,
            clock,
            descriptor,
        })
    }

    /// The store (tests and the local app look into it).
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let result = match (
            request.method.clone(),
            request.relative_path(self.config.base_path()),
        ) {
            (Method::GET, "/atlassian-connect.json") => Ok(self.serve_descriptor()),
            (Method::POST, "/installed") => self.installed(&request).await,
            (Method::POST, "/uninstalled") => self.uninstalled(&request).await,
            (Method::POST, "/enabled") => self.set_state(&request, TenantState::Enabled).await,
            (Method::POST, "/disabled") => self.set_state(&request, TenantState::Disabled).await,
            (
                _,
                "/atlassian-connect.json"
                | "/installed"
                | "/uninstalled"
                | "/enabled"
                | "/disabled",
            ) => Err(ApiError::MethodNotAllowed),
            _ => Err(ApiError::NotFound),
        };
        understudy_web::error::respond(result, &self.config.app_key)
    }

    fn serve_descriptor(&self) -> ApiResponse {
        let mut response = http::Response::new(self.descriptor.clone());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }

    /// Verifies a signed install against this request; returns the verified issuer.
    async fn verify_signed(&self, request: &ApiRequest) -> Result<String, ApiError> {
        let token = extract_token(request.authorization(), &request.raw_query)?;
        let claims = self
            .installs
            .verify(token, &request.parts(self.config.base_path()))
            .await?;
        Ok(claims.iss)
    }

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

    async fn uninstalled(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        let issuer = self.verify_signed(request).await?;
        let payload = parse_payload(body, "the uninstall payload")?;
        let client_key = require_issuer_is_client_key(&issuer, &payload)?;
        let known = self
            .store
            .mark_uninstalled(&client_key, self.clock.now_unix())
            .await?;
        tracing::info!(client_key = %client_key.as_str(), known, "uninstalled");
        Ok(empty(StatusCode::NO_CONTENT))
    }

    async fn set_state(
        &self,
        request: &ApiRequest,
        state: TenantState,
    ) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_LIFECYCLE_BODY)?;
        // Lifecycle routes never accept context tokens (CVE-2021-26073).
        let verified = self
            .requests
            .verify(&*self.store, request, QshMode::Computed)
            .await?;
        let now = self.clock.now_unix();
        let payload = parse_payload(body, "the lifecycle payload")?;
        if payload.get("clientKey").is_some() {
            require_issuer_is_client_key(&verified.claims.iss, &payload)?;
        }
        let client_key = verified.tenant.client_key;
        if !self.store.set_state(&client_key, state, now).await? {
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
