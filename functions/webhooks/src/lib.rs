//! The webhook function: Confluence's page events in, edit jobs out.
//!
//! Confluence does not retry Connect webhooks, so an accepted event must never be lost and the
//! answer must come fast: verify (HS256, computed qsh, never `context-qsh`), match the tenant's
//! rules, queue the job under the event's idempotency mark, answer 204. The edit itself runs in the
//! edit worker. The mark and the job are one step ([`JobIntake`]): if either cannot be kept the
//! answer is 503 and nothing is left half-done.

pub mod payload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use connect_auth::{Clock, QshMode, SystemClock};
use http::{Method, StatusCode};
use sha2::{Digest, Sha256};
use understudy_domain::{SettingsStore, Tenant, TenantState, TenantStore};
use understudy_queue::{EditJobMessage, Enqueued, IntakeError, JobIntake};
use understudy_web::request::empty;
use understudy_web::{ApiError, ApiRequest, ApiResponse, AppConfig, TenantAuth};

pub use payload::PageEvent;
pub use understudy_core::{Decision, Rules, RulesError, Subject, WebhookEvent};

/// Every environment variable this function reads (template.yaml sets exactly these).
pub const ENV_VARS: &[&str] = &[
    "APP_KEY",
    "APP_BASE_URL",
    "INSTALL_AUDIENCES",
    "CONNECT_KEYS_URL",
    "ALLOWED_TENANT_HOSTS",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "EDIT_QUEUE_URL",
    "EDIT_RULES",
    "RUST_LOG",
];

/// Page event bodies are a few KiB.
pub const MAX_WEBHOOK_BODY: usize = 256 * 1024;

/// How long an event's idempotency mark is kept: longer than any redelivery of one event.
pub const MARK_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// Compiled tenant rules, by a hash of the stored document, so a regular expression is compiled
/// once per document and warm instance, not once per event.
#[derive(Debug, Default)]
struct RuleCache {
    by_document: Mutex<HashMap<[u8; 32], Arc<Rules>>>,
}

const RULE_CACHE_ENTRIES: usize = 1_024;

impl RuleCache {
    fn get_or_parse(&self, document: &serde_json::Value) -> Result<Arc<Rules>, RulesError> {
        let text = document.to_string();
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if let Some(rules) = self
            .by_document
            .lock()
            .ok()
            .and_then(|c| c.get(&digest).cloned())
        {
            return Ok(rules);
        }
        let rules = Arc::new(Rules::parse(&text)?);
        if let Ok(mut cache) = self.by_document.lock() {
            if cache.len() >= RULE_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(digest, rules.clone());
        }
        Ok(rules)
    }
}

/// What happened to an event, for the log (and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A job was queued.
    Queued,
    /// No rule matched.
    NoRule,
    /// The same delivery was already accepted.
    Duplicate,
    /// The tenant disabled the app: acknowledged and ignored.
    TenantDisabled,
    /// The tenant's stored rules are invalid: nothing is applied until they are fixed.
    InvalidTenantRules,
}

/// The webhook function.
#[derive(Debug)]
pub struct Webhooks<S: ?Sized, I: ?Sized, C = SystemClock> {
    config: AppConfig,
    default_rules: Arc<Rules>,
    store: Arc<S>,
    intake: Arc<I>,
    auth: TenantAuth<C>,
    clock: C,
    tenant_rules: RuleCache,
}

impl<S, I, C> Webhooks<S, I, C>
where
    S: TenantStore + SettingsStore + ?Sized,
    I: JobIntake + ?Sized,
    C: Clock + Clone,
{
    /// Builds the function's state once per cold start. `default_rules` apply to tenants without
    /// rules of their own; jobs go to `intake`.
    pub fn new(
        config: AppConfig,
        default_rules: Rules,
        store: Arc<S>,
        intake: Arc<I>,
        clock: C,
    ) -> Self {
        let auth = TenantAuth::new(clock.clone(), config.base_path());
        Self {
            config,
            default_rules: Arc::new(default_rules),
            store,
            intake,
            auth,
            clock,
            tenant_rules: RuleCache::default(),
        }
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let path = request.relative_path(self.config.base_path());
        let result = match (WebhookEvent::from_path(path), &request.method) {
            (Some(event), &Method::POST) => self.accept(event, &request).await.map(|accepted| {
                tracing::debug!(?accepted, "webhook answered");
                empty(StatusCode::NO_CONTENT)
            }),
            (Some(_), _) => Err(ApiError::MethodNotAllowed),
            (None, _) => Err(ApiError::NotFound),
        };
        understudy_web::error::respond(result, &self.config.app_key)
    }

    /// Verifies, decides and queues one event.
    pub async fn accept(
        &self,
        event: WebhookEvent,
        request: &ApiRequest,
    ) -> Result<Accepted, ApiError> {
        let body = request.json_body(MAX_WEBHOOK_BODY)?;
        // Webhooks are request-bound: a context token is never accepted here.
        let verified = self
            .auth
            .verify(&*self.store, request, QshMode::Computed)
            .await?;
        let now = self.clock.now_unix();
        let tenant = verified.tenant;
        let client_key = tenant.client_key.as_str();
        if tenant.state == TenantState::Disabled {
            tracing::info!(client_key, event = %event, "tenant disabled the app: event ignored");
            return Ok(Accepted::TenantDisabled);
        }
        let page = payload::parse(event, body)?;
        let page_id = page.page_id.as_str();
        let rules = match self.rules_for(&tenant, now).await? {
            Some(rules) => rules,
            None => return Ok(Accepted::InvalidTenantRules),
        };
        let subject = Subject {
            space_key: page.space_key.as_deref(),
            title: page.title.as_deref(),
        };
        let Some(decision) = rules.decide(event, subject) else {
            tracing::debug!(client_key, event = %event, page_id, "no rule matches");
            return Ok(Accepted::NoRule);
        };

        let job = EditJobMessage {
            job_id: job_id(event, &page, body),
            client_key: tenant.client_key.clone(),
            page_id: page.page_id.clone(),
            event,
            page_version: page.version,
            user: page.user.clone(),
            policy: decision.policy,
            edit: decision.edit,
            rules: decision.rules,
            accepted_at: now,
        };
        let job_id = job.job_id.as_str();
        match self.intake.enqueue_once(&job, MARK_TTL_SECONDS, now).await {
            Ok(Enqueued::Queued) => {
                tracing::info!(client_key, job_id, rules = ?job.rules, "edit queued");
                Ok(Accepted::Queued)
            }
            Ok(Enqueued::Duplicate) => {
                tracing::info!(client_key, job_id, "duplicate delivery: already accepted");
                Ok(Accepted::Duplicate)
            }
            Err(IntakeError::Marks(err)) => Err(err.into()),
            Err(IntakeError::Queue(err)) => Err(ApiError::Unavailable(err.to_string())),
        }
    }

    /// The tenant's own rules, else the deployment's. `None` when the tenant's are invalid.
    async fn rules_for(&self, tenant: &Tenant, now: i64) -> Result<Option<Arc<Rules>>, ApiError> {
        let Some(settings) = self.store.get_settings(&tenant.client_key, now).await? else {
            return Ok(Some(self.default_rules.clone()));
        };
        match self.tenant_rules.get_or_parse(&settings.document) {
            Ok(rules) => Ok(Some(rules)),
            Err(err) => {
                tracing::error!(client_key = tenant.client_key.as_str(), error = %err,
                    "the tenant's stored edit rules are invalid: none applied");
                Ok(None)
            }
        }
    }
}

/// One job per (page, version, event); the tenant is the key's partition. Events without a version
/// (restriction changes) are told apart by Confluence's timestamp, or else by their body.
fn job_id(event: WebhookEvent, page: &PageEvent, body: &[u8]) -> String {
    let when = match (page.version, page.timestamp) {
        (Some(version), _) => format!("v{version}"),
        (None, Some(timestamp)) => format!("t{timestamp}"),
        (None, None) => format!(
            "b{}",
            hex::encode(Sha256::digest(body).get(..12).unwrap_or_default())
        ),
    };
    format!("{event}:{}:{when}", page.page_id.as_str())
}
