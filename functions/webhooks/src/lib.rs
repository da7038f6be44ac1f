//! The webhook function: Confluence's page events in, edit jobs out.
//!
//! Confluence does not retry Connect webhooks, so an accepted event must never be lost and the
//! answer must come fast: verify (HS256, computed qsh, never `context-qsh`), match the tenant's
//! rules, queue the job under the event's idempotency mark, answer 204. The edit itself runs in the
//! edit worker. The mark and the job are one step ([`JobIntake`]): if either cannot be kept the
//! answer is 503 and nothing is left half-done.
//!
//! Forge's product events (`POST /forge/events`, docs/protocol.md §17) take the same path after
//! the Forge front door: the invocation token verified and the installation recorded, the event
//! matched against the same rules (a rule's `events` accept both names), the job marked and
//! queued under the installation's tenant key. Forge retries a delivery up to four times; the
//! mark makes every retry a duplicate. Events the app caused itself (`selfGenerated`) are
//! acknowledged and dropped.

pub mod payload;

use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_auth::{Clock, SystemClock};
use futures::FutureExt as _;
use http::StatusCode;
use sha2::{Digest, Sha256};
use understudy_domain::{
    ClientKey, ForgeInstallations, InstallationId, SettingsStore, TenantState, TenantStore,
};
use understudy_queue::{EditJobMessage, Enqueued, IntakeError, JobIntake};
use understudy_web::deployed::DeployedConfig;
use understudy_web::env::{Env, FromEnv};
use understudy_web::request::empty;
use understudy_web::routes::{self, Function};
use understudy_web::{
    Accept, ApiError, ApiRequest, ApiResponse, AppConfig, Authenticator, ConnectAuthenticator,
    ForgeFrontDoor, Invocation, TenantCache,
};

pub use payload::{ForgeEvent, PageEvent};
pub use understudy_core::{Decision, Rules, RulesError, Subject, WebhookEvent};

/// The webhook function's settings on Lambda, read once at its cold start
/// ([`understudy_web::lambda::start`]). What it reads is what `tests/deployment` checks
/// template.yaml against.
#[derive(Debug, Clone)]
pub struct WebhooksConfig {
    /// The shared settings and the store's.
    pub deployed: DeployedConfig,
    /// `EDIT_QUEUE_URL`: the SQS FIFO edit queue.
    pub edit_queue_url: String,
    /// `EDIT_RULES`: the deployment's edit rules, inline JSON or a file path (none when unset). An
    /// invalid document stops the cold start with its reason: rules are never half-applied.
    pub rules: Rules,
}

impl FromEnv for WebhooksConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let deployed = DeployedConfig::read(env);
        let edit_queue_url = env.required("EDIT_QUEUE_URL", |v| Ok(v.to_owned()));
        let rules = env.check(Rules::from_env_value(env.get("EDIT_RULES").as_deref()));
        Some(Self {
            deployed: deployed?,
            edit_queue_url: edit_queue_url?,
            rules: rules?,
        })
    }
}

/// Page event bodies are a few KiB.
pub const MAX_WEBHOOK_BODY: usize = 256 * 1024;

/// How long the reads before an event is queued (the tenant or the Forge installation, the rules)
/// may take. With the intake's own limit ([`understudy_queue::MarkedQueue::DEFAULT_TIME_LIMIT`], 2.5 s) and the
/// release of a mark, an answer leaves within 5 s, which is what Forge waits for an event (and
/// half the function's 10 s timeout): a slow store is a 503 the sender may retry, never a
/// function killed between a mark and its job.
pub const PREPARE_BUDGET: Duration = Duration::from_millis(1500);

/// When an event arrived (unix seconds) and by when its reads must be done ([`PREPARE_BUDGET`]).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    now: i64,
    deadline: Instant,
}

/// Runs one of the reads before an event is queued within what is left of [`PREPARE_BUDGET`].
/// Nothing has been written for the event yet, so giving up leaves nothing behind. A read the
/// process's caches answer is done at once and sets no timer. (A combinator, not an `async fn`:
/// an `async fn` would hold `work` twice; see [`understudy_web::time::UnlessReady`].)
fn within<T>(
    deadline: Instant,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> impl std::future::Future<Output = Result<T, ApiError>> {
    understudy_web::time::timeout_at_unless_ready(deadline.into(), work).map(|done| {
        done.unwrap_or_else(|_| {
            Err(ApiError::Unavailable(
                "the store did not answer in time".into(),
            ))
        })
    })
}

/// How long an event's idempotency mark is kept: longer than any redelivery of one event.
pub const MARK_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// Compiled tenant rules, by a hash of the stored document, so a regular expression is compiled
/// once per document and warm instance, not once per event: at most [`RULE_CACHE_ENTRIES`]
/// documents, each for [`RULE_CACHE_TTL_SECONDS`] from its parse; concurrent events with one
/// document share one parse. Moka counts the expiry on the monotonic clock from when the rules are
/// stored; every read also checks it against the function's injected clock (`now`).
#[derive(Debug)]
struct RuleCache {
    by_document: moka::future::Cache<[u8; 32], ParsedRules>,
}

/// Rules documents one warm instance keeps compiled, at most.
const RULE_CACHE_ENTRIES: u64 = 1_024;

/// How long compiled rules are kept from their parse: an hour.
const RULE_CACHE_TTL_SECONDS: i64 = 60 * 60;

/// Compiled rules and until when (Unix seconds) they are kept.
#[derive(Debug, Clone)]
struct ParsedRules {
    rules: Arc<Rules>,
    until: i64,
}

impl Default for RuleCache {
    fn default() -> Self {
        Self::with_capacity(RULE_CACHE_ENTRIES)
    }
}

impl RuleCache {
    fn with_capacity(capacity: u64) -> Self {
        let ttl = std::time::Duration::from_secs(RULE_CACHE_TTL_SECONDS.unsigned_abs());
        Self {
            by_document: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    async fn get_or_parse(
        &self,
        document: &serde_json::Value,
        now: i64,
    ) -> Result<Arc<Rules>, RulesError> {
        let digest: [u8; 32] = Sha256::digest(document.to_string().as_bytes()).into();
        self.get_or_parse_digest(document, digest, now).await
    }

    /// The same, for a document whose digest (SHA-256 of its JSON text) is known already.
    async fn get_or_parse_digest(
        &self,
        document: &serde_json::Value,
        digest: [u8; 32],
        now: i64,
    ) -> Result<Arc<Rules>, RulesError> {
        if let Some(parsed) = self.by_document.get(&digest).await {
            if parsed.until > now {
                return Ok(parsed.rules);
            }
            self.by_document.invalidate(&digest).await;
        }
        let parse = async {
            Rules::parse(&document.to_string()).map(|rules| ParsedRules {
                rules: Arc::new(rules),
                until: now.saturating_add(RULE_CACHE_TTL_SECONDS),
            })
        };
        self.by_document
            .try_get_with(digest, parse)
            .await
            .map(|parsed| parsed.rules)
            .map_err(|err| (*err).clone())
    }
}

#[cfg(test)]
mod rule_cache_tests {
    use super::*;

    fn document(n: usize) -> serde_json::Value {
        serde_json::json!({"rules": [{
            "name": format!("rule {n}"),
            "events": ["page_created"],
            "edit": [{"append": "<p>x</p>"}],
        }]})
    }

    #[tokio::test]
    async fn compiled_rules_stay_within_their_bound_and_are_parsed_again_after_an_hour() {
        let cache = RuleCache::with_capacity(3);
        for n in 0..20 {
            cache.get_or_parse(&document(n), 0).await.unwrap();
        }
        cache.by_document.run_pending_tasks().await;
        assert_eq!(cache.by_document.entry_count(), 3);

        let first = cache.get_or_parse(&document(99), 0).await.unwrap();
        let again = cache.get_or_parse(&document(99), 3_599).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again), "kept within the hour");
        let later = cache.get_or_parse(&document(99), 3_600).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &later), "parsed again after it");
        assert!(
            cache
                .get_or_parse(&serde_json::json!([1]), 0)
                .await
                .is_err()
        );
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
    /// A Forge event the app caused itself (`selfGenerated`): acknowledged and ignored.
    SelfGenerated,
}

/// The webhook function.
#[derive(Debug)]
pub struct Webhooks<S: ?Sized, I: ?Sized, C = SystemClock> {
    config: AppConfig,
    default_rules: Arc<Rules>,
    store: Arc<S>,
    intake: Arc<I>,
    auth: ConnectAuthenticator<S, C>,
    clock: C,
    tenant_rules: RuleCache,
    /// The deployment's rules as last read (at most once a minute), shared by every event without
    /// a lock held across an await: events only read it.
    deployment: std::sync::RwLock<Option<DeploymentRules>>,
    /// Held by the one event that reads the deployment's rules again when they are due.
    deployment_refresh: tokio::sync::Mutex<()>,
    forge: Option<ForgeFrontDoor<S, C>>,
}

/// The deployment's rules and when they were read. `rules` is `None` when the stored document is
/// invalid (nothing is applied until it is fixed).
#[derive(Debug)]
struct DeploymentRules {
    read_at: i64,
    rules: Option<Arc<Rules>>,
}

/// How long the deployment's stored rules document is used before it is read again: a change
/// with `understudy-rules set` reaches every warm function within this.
pub const DEPLOYMENT_RULES_REFRESH_SECONDS: i64 = 60;

impl<S, I, C> Webhooks<S, I, C>
where
    S: TenantStore + SettingsStore + ForgeInstallations + ?Sized,
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
        let auth = ConnectAuthenticator::new(store.clone(), clock.clone(), config.base_path());
        Self {
            config,
            default_rules: Arc::new(default_rules),
            store,
            intake,
            auth,
            clock,
            tenant_rules: RuleCache::default(),
            deployment: std::sync::RwLock::new(None),
            deployment_refresh: tokio::sync::Mutex::new(()),
            forge: None,
        }
    }

    /// Reads tenants and their settings through the process's shared `cache`.
    pub fn with_tenant_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.auth = self.auth.with_tenant_cache(cache);
        self
    }

    /// Opens the Forge front door (`None` keeps `/forge/events` at 404).
    pub fn with_forge(mut self, forge: Option<ForgeFrontDoor<S, C>>) -> Self {
        self.forge = forge;
        self
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let path = request.relative_path(self.config.base_path());
        let route = routes::resolve(Function::Webhooks, &request.method, path);
        // The route table names the webhook paths; the event is the path's own.
        let accepted = match route {
            Ok(routes::FORGE_EVENTS) => self.accept_forge(&request).await,
            Ok(route) => match WebhookEvent::from_path(route.path) {
                Some(event) => self.accept(event, &request).await,
                None => Err(ApiError::NotFound),
            },
            Err(err) => Err(err),
        };
        let result = accepted.map(|accepted| {
            tracing::debug!(?accepted, "webhook answered");
            empty(StatusCode::NO_CONTENT)
        });
        understudy_web::error::respond(result, &self.config.app_key)
    }

    /// Verifies, decides and queues one event.
    ///
    /// Its span is at `debug`: at `info` the span alone (made, its fields formatted and recorded,
    /// closed) cost 8 % of the acknowledgement path's throughput under load. Every line this path
    /// logs at `info` or above names its `client_key` (and `job_id`, which holds the event and the
    /// page) in its own fields.
    #[tracing::instrument(level = "debug", skip_all, fields(event = %event, client_key = tracing::field::Empty, page_id = tracing::field::Empty))]
    pub async fn accept(
        &self,
        event: WebhookEvent,
        request: &ApiRequest,
    ) -> Result<Accepted, ApiError> {
        let body = request.json_body(MAX_WEBHOOK_BODY)?;
        let deadline = Instant::now() + PREPARE_BUDGET;
        // Webhooks are request-bound: a context token is never accepted here.
        let caller = within(
            deadline,
            self.auth.authenticate(request, Accept::RequestToken),
        )
        .await?;
        let now = self.clock.now_unix();
        let tenant = caller.tenant;
        tracing::Span::current().record("client_key", tenant.client_key.as_str());
        let client_key = tenant.client_key.as_str();
        if tenant.state == TenantState::Disabled {
            tracing::info!(client_key, event = %event, "tenant disabled the app: event ignored");
            return Ok(Accepted::TenantDisabled);
        }
        let page = payload::parse(event, body)?;
        let page_id = page.page_id.as_str();
        tracing::Span::current().record("page_id", page_id);
        let arrival = Arrival { now, deadline };
        let job_id = || job_id(event, &page, body);
        self.queue(&tenant.client_key, event, &page, job_id, None, arrival)
            .await
    }

    /// Verifies, decides and queues one Forge product event (its span at `debug`, as
    /// [`Webhooks::accept`]'s).
    #[tracing::instrument(level = "debug", skip_all, fields(event = tracing::field::Empty, client_key = tracing::field::Empty, page_id = tracing::field::Empty))]
    pub async fn accept_forge(&self, request: &ApiRequest) -> Result<Accepted, ApiError> {
        let forge = self.forge.as_ref().ok_or(ApiError::NotFound)?;
        let body = request.json_body(MAX_WEBHOOK_BODY)?;
        let deadline = Instant::now() + PREPARE_BUDGET;
        let caller = within(deadline, forge.authenticate(request, Invocation::App)).await?;
        let installation = caller.installation;
        let span = tracing::Span::current();
        span.record("client_key", installation.tenant_key.as_str());
        let forge_event = payload::parse_forge(body)?;
        span.record("event", forge_event.event.as_str());
        span.record("page_id", forge_event.page.page_id.as_str());
        if forge_event.self_generated {
            tracing::debug!("an event the app caused itself: ignored");
            return Ok(Accepted::SelfGenerated);
        }
        self.queue(
            &installation.tenant_key,
            forge_event.event,
            &forge_event.page,
            || forge_job_id(&forge_event),
            Some(installation.id),
            Arrival {
                now: self.clock.now_unix(),
                deadline,
            },
        )
        .await
    }

    /// Matches the tenant's rules and queues the job under its idempotency mark: the part both
    /// doors share. The job's id is only made for an event a rule matches.
    async fn queue(
        &self,
        tenant_key: &ClientKey,
        event: WebhookEvent,
        page: &PageEvent,
        job_id: impl FnOnce() -> String,
        forge_installation: Option<InstallationId>,
        arrival: Arrival,
    ) -> Result<Accepted, ApiError> {
        let Arrival { now, deadline } = arrival;
        let client_key = tenant_key.as_str();
        let page_id = page.page_id.as_str();
        let rules = match within(deadline, self.rules_for(tenant_key, now)).await? {
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
            job_id: job_id(),
            client_key: tenant_key.clone(),
            page_id: page.page_id.clone(),
            event,
            page_version: page.version,
            user: page.user.clone(),
            policy: decision.policy,
            edit: decision.edit,
            rules: decision.rules,
            accepted_at: now,
            forge_installation,
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

    /// The tenant's own rules, else the deployment's. `None` when the tenant's are invalid. The
    /// settings come through the process's tenant cache: a change made with the admin page
    /// reaches a warm function within [`TenantCache::DEFAULT_TTL_SECONDS`].
    async fn rules_for(
        &self,
        tenant_key: &ClientKey,
        now: i64,
    ) -> Result<Option<Arc<Rules>>, ApiError> {
        let Some(cached) = self
            .auth
            .tenant_cache()
            .settings(&*self.store, tenant_key, now)
            .await?
            .filter(|cached| !cached.settings.document.is_null())
        else {
            // No document of the tenant's own (or an emptied one): the deployment's.
            return self.deployment_rules(now).await;
        };
        match self
            .tenant_rules
            .get_or_parse_digest(&cached.settings.document, cached.digest, now)
            .await
        {
            Ok(rules) => Ok(Some(rules)),
            Err(err) => {
                tracing::error!(client_key = tenant_key.as_str(), error = %err,
                    "the tenant's stored edit rules are invalid: none applied");
                Ok(None)
            }
        }
    }

    /// The deployment's rules: the document stored under [`ClientKey::deployment`] (written by
    /// `understudy-rules set`; on Lambda the only place, since the environment holds 4 KB in
    /// all), else `EDIT_RULES` (the local app). Read at most once a
    /// [`DEPLOYMENT_RULES_REFRESH_SECONDS`]; `None` when the stored document is invalid.
    async fn deployment_rules(&self, now: i64) -> Result<Option<Arc<Rules>>, ApiError> {
        if let Some(rules) = self.fresh_deployment_rules(now) {
            return Ok(rules);
        }
        let _refreshing = self.deployment_refresh.lock().await;
        // Another event may have read them while this one waited.
        if let Some(rules) = self.fresh_deployment_rules(now) {
            return Ok(rules);
        }
        let document = self
            .store
            .get_settings(&ClientKey::deployment(), now)
            .await?
            .map(|settings| settings.document)
            .filter(|document| !document.is_null());
        let rules = match document {
            None => Some(self.default_rules.clone()),
            Some(document) => match self.tenant_rules.get_or_parse(&document, now).await {
                Ok(rules) => Some(rules),
                Err(err) => {
                    tracing::error!(error = %err,
                        "the deployment's stored edit rules are invalid: none applied");
                    None
                }
            },
        };
        if let Ok(mut held) = self.deployment.write() {
            *held = Some(DeploymentRules {
                read_at: now,
                rules: rules.clone(),
            });
        }
        Ok(rules)
    }

    /// The deployment's rules as held, unless they are due to be read again.
    fn fresh_deployment_rules(&self, now: i64) -> Option<Option<Arc<Rules>>> {
        let held = self.deployment.read().ok()?;
        held.as_ref()
            .filter(|held| now.saturating_sub(held.read_at) < DEPLOYMENT_RULES_REFRESH_SECONDS)
            .map(|held| held.rules.clone())
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

/// A Forge event's job id: as a Connect event's when the page's version is known, so that on a
/// site where both doors deliver one change, it is edited once; else the event's own content
/// (without `retryContext`), which every retry of one delivery shares.
fn forge_job_id(forge_event: &ForgeEvent) -> String {
    match forge_event.page.version {
        Some(_) => job_id(forge_event.event, &forge_event.page, &[]),
        None => {
            let digest = Sha256::digest(forge_event.identity.to_string().as_bytes());
            format!(
                "{}:{}:f{}",
                forge_event.event,
                forge_event.page.page_id.as_str(),
                hex::encode(digest.get(..12).unwrap_or_default())
            )
        }
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn the_route_table_names_one_route_per_event_and_no_other() {
        let mut events: Vec<WebhookEvent> = routes::ROUTES
            .iter()
            .filter(|route| route.function == Function::Webhooks && **route != routes::FORGE_EVENTS)
            .map(|route| {
                assert_eq!(route.method, "POST", "{route:?}");
                WebhookEvent::from_path(route.path)
                    .unwrap_or_else(|| panic!("{route:?} names no webhook event"))
            })
            .collect();
        events.dedup();
        assert_eq!(events, WebhookEvent::ALL);
    }
}
