//! The site admins' page and its API: each site's own administration, inside Confluence, through
//! either front door.
//!
//! - `GET /ui/admin`: the page (Connect `adminPages`, an iframe loaded with a request-bound token,
//!   computed qsh). It calls the routes below with a context token (`AP.context.getToken()`,
//!   `context-qsh`), or, from the Forge app's global settings page, through `invokeRemote`.
//! - `GET`/`PUT /api/admin/settings`: the tenant's restricted-page policy and rules document next
//!   to the deployment's; checked on save (the refusal names the rule and the field), stored as
//!   the tenant's settings, in effect for the next event. An emptied document falls back to the
//!   deployment's.
//! - `GET /api/admin/blocked`: each page whose last attempt was blocked or failed, newest first,
//!   with the reason and what an admin can do; `POST /api/admin/retry` queues one again.
//! - `GET /api/admin/audit`: every record of the tenant (a query on its own records, never a
//!   scan), filtered by page, outcome and who acted, paged, or as CSV (`format=csv`).
//! - `GET /api/admin/queue`: jobs waiting, and the tenant's dead letters with their reasons.
//!
//! **Admins only**, decided on the server for every API call: Confluence is asked, as the app,
//! whether the caller is a site admin (docs/protocol.md §18); the answer is kept a minute per
//! tenant and user. Anyone else gets 403. The descriptor's conditions that hide the page secure
//! nothing and are not relied on.

mod csv;
mod page;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connect_auth::{Clock, SystemClock};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use understudy_core::{Confluence, Rules};
use understudy_domain::{
    AccountId, ActedAs, AuditCursor, AuditLog, AuditRecord, ClientKey, EditOutcome,
    ForgeInstallations, PageId, ParkedJobs, RateDecision, RateLimits, SettingsStore,
    TenantSettings, TenantStore,
};
use understudy_queue::{EditJobMessage, Enqueued, IntakeError, JobIntake, QueueDepth};
use understudy_web::deployed::DeployedConfig;
use understudy_web::env::{Env, FromEnv};
use understudy_web::json::parse_json;
use understudy_web::request::json as json_response;
use understudy_web::routes::{self, Function};
use understudy_web::{
    Accept, ApiError, ApiRequest, ApiResponse, AppConfig, Authenticator, ConnectAuthenticator,
    ForgeFrontDoor, TenantCache, UserSite, api_user,
};

/// The admin function's settings on Lambda, read once at its cold start.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The shared settings and the store's.
    pub deployed: DeployedConfig,
    /// The Confluence client's (the site-admin check is a Confluence call).
    pub client: understudy_confluence::ClientConfig,
    /// `EDIT_QUEUE_URL`: where "retry now" queues a job.
    pub edit_queue_url: String,
    /// `EDIT_RULES`: the deployment's rules, shown next to the tenant's.
    pub default_rules: Option<Value>,
}

impl FromEnv for AdminConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let deployed = DeployedConfig::read(env);
        let client = env.check(understudy_confluence::ClientConfig::from_lookup(
            env.lookup(),
        ));
        let edit_queue_url = env.required("EDIT_QUEUE_URL", |v| Ok(v.to_owned()));
        let default_rules = default_rules(env);
        Some(Self {
            deployed: deployed?,
            client: client?,
            edit_queue_url: edit_queue_url?,
            default_rules: default_rules?,
        })
    }
}

/// `EDIT_RULES` as a document to show, checked as the webhook function checks it.
pub fn default_rules(env: &Env<'_>) -> Option<Option<Value>> {
    let value = env.get("EDIT_RULES");
    let document = env.check(Rules::document_from_env_value(value.as_deref()))?;
    if let Some(document) = &document {
        env.check(Rules::from_value(document.clone()))?;
    }
    Some(document)
}

/// A rules document is a few KiB; 64 KiB leaves room for a large one.
pub const MAX_SETTINGS_BODY: usize = 64 * 1024;
/// Records (or parked jobs) per answer.
pub const PAGE_SIZE: usize = 50;
/// Records read at most to fill one filtered answer: a filter that matches little answers with
/// fewer records and a `next` to go on from, instead of reading the whole trail.
pub const MAX_SCANNED_PER_ANSWER: usize = 1_000;
/// Records in one CSV download at most (the newest).
pub const MAX_CSV_RECORDS: usize = 10_000;
/// Admin API calls one user may make per minute on one site.
pub const ADMIN_CALLS_PER_MINUTE: u32 = 120;
/// How long Confluence's answer to "is this user a site admin?" is kept.
pub const ADMIN_CHECK_TTL: Duration = Duration::from_secs(60);
/// How long a retried job's idempotency mark is kept.
const RETRY_MARK_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// The admin page and API.
pub struct AdminApi<S: ?Sized, C = SystemClock> {
    config: AppConfig,
    default_rules: Option<Value>,
    store: Arc<S>,
    intake: Arc<dyn JobIntake>,
    depth: Arc<dyn QueueDepth>,
    confluence: Arc<dyn Confluence>,
    auth: ConnectAuthenticator<S, C>,
    forge: Option<ForgeFrontDoor<S, C>>,
    admins: moka::future::Cache<(ClientKey, AccountId), bool>,
    clock: C,
    frame_policy: HeaderValue,
}

impl<S: ?Sized, C> std::fmt::Debug for AdminApi<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi").finish_non_exhaustive()
    }
}

/// A verified site admin and where they came from.
struct Admin {
    site: UserSite,
    user: AccountId,
}

impl Admin {
    fn tenant_key(&self) -> &ClientKey {
        self.site.tenant_key()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    /// The whole rules document; `null` (or `{}`) goes back to the deployment's.
    document: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    #[serde(rename = "pageId")]
    page_id: String,
}

impl<S, C> AdminApi<S, C>
where
    S: TenantStore
        + ForgeInstallations
        + SettingsStore
        + AuditLog
        + ParkedJobs
        + RateLimits
        + ?Sized,
    C: Clock + Clone,
{
    /// Builds the function's state once per cold start.
    pub fn new(
        config: AppConfig,
        default_rules: Option<Value>,
        store: Arc<S>,
        intake: Arc<dyn JobIntake>,
        depth: Arc<dyn QueueDepth>,
        confluence: Arc<dyn Confluence>,
        clock: C,
    ) -> Self {
        let auth = ConnectAuthenticator::new(store.clone(), clock.clone(), config.base_path());
        let frame_policy = HeaderValue::from_str(&format!(
            "frame-ancestors {}",
            config.tenant_hosts.frame_ancestors()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'"));
        Self {
            config,
            default_rules,
            store,
            intake,
            depth,
            confluence,
            auth,
            forge: None,
            admins: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ADMIN_CHECK_TTL)
                .build(),
            clock,
            frame_policy,
        }
    }

    /// Reads tenants through the process's shared `cache`, and drops a tenant's settings from it when they are saved (so the process's webhooks use them at once).
    pub fn with_tenant_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.auth = self.auth.with_tenant_cache(cache);
        self
    }

    /// Opens the Forge front door (`None`: Connect context tokens only).
    pub fn with_forge(mut self, forge: Option<ForgeFrontDoor<S, C>>) -> Self {
        self.forge = forge;
        self
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let path = request.relative_path(self.config.base_path());
        let result = match routes::resolve(Function::Admin, &request.method, path) {
            Ok(routes::ADMIN_PAGE) => self.page(&request).await,
            Ok(routes::ADMIN_SETTINGS) => self.settings(&request).await,
            Ok(routes::ADMIN_SETTINGS_SAVE) => self.save_settings(&request).await,
            Ok(routes::ADMIN_BLOCKED) => self.blocked(&request).await,
            Ok(routes::ADMIN_RETRY) => self.retry(&request).await,
            Ok(routes::ADMIN_AUDIT) => self.audit(&request).await,
            Ok(routes::ADMIN_QUEUE) => self.queue(&request).await,
            Ok(_) => Err(ApiError::NotFound),
            Err(err) => Err(err),
        };
        understudy_web::error::respond(result, &self.config.app_key)
    }

    /// The page: any user of the site may load it (it holds no data); every call it makes is
    /// checked.
    async fn page(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.auth
            .authenticate(request, Accept::RequestToken)
            .await?;
        let html = page::render(&self.config.connect_js_url);
        let mut response = http::Response::new(Bytes::from(html));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_SECURITY_POLICY, self.frame_policy.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Ok(response)
    }

    /// The caller, verified, within their call limit, and a site admin by Confluence's word.
    async fn admin(&self, request: &ApiRequest) -> Result<Admin, ApiError> {
        let (site, user) = api_user(&self.auth, self.forge.as_ref(), request).await?;
        let tenant_key = site.tenant_key().clone();
        tracing::Span::current().record("client_key", tenant_key.as_str());
        let now = self.clock.now_unix();
        if let RateDecision::Limited {
            retry_after_seconds,
        } = self
            .store
            .take(&tenant_key, user.as_str(), ADMIN_CALLS_PER_MINUTE, 60, now)
            .await?
        {
            return Err(ApiError::TooManyRequests {
                retry_after_seconds,
            });
        }
        let key = (tenant_key, user.clone());
        let is_admin = match self.admins.get(&key).await {
            Some(known) => known,
            None => {
                let answer = self
                    .confluence
                    .is_site_admin(site.door(&user), &user)
                    .await
                    .map_err(|e| {
                        if e.is_transient() {
                            ApiError::Unavailable(format!(
                                "asking Confluence whether you are a site admin: {e}"
                            ))
                        } else {
                            tracing::warn!(error = %e, "Confluence could not say who is a site admin");
                            ApiError::Forbidden(
                                "Confluence could not confirm that you are a site admin".into(),
                            )
                        }
                    })?;
                self.admins.insert(key, answer).await;
                answer
            }
        };
        if !is_admin {
            tracing::info!("a user who is not a site admin called the admin API");
            return Err(ApiError::Forbidden(
                "only site admins may use this page".into(),
            ));
        }
        Ok(Admin { site, user })
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn settings(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let admin = self.admin(request).await?;
        let own = self
            .store
            .get_settings(admin.tenant_key(), self.clock.now_unix())
            .await?
            .map(|s| s.document)
            .filter(|d| !d.is_null());
        let default = self.deployment_document(self.clock.now_unix()).await?;
        let effective = own.as_ref().or(default.as_ref());
        let policy = effective
            .and_then(|d| d.get("restricted_pages"))
            .cloned()
            .unwrap_or_else(|| json!("impersonate"));
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "tenant": own,
                "default": default,
                "effective": if own.is_some() { "tenant" } else { "default" },
                "policy": policy,
            }),
        ))
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn save_settings(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_SETTINGS_BODY)?;
        let admin = self.admin(request).await?;
        let request: SettingsRequest = parse_json(body, "the settings")?;
        let empty = request.document.is_null()
            || request.document.as_object().is_some_and(|o| o.is_empty());
        let document = if empty {
            Value::Null
        } else {
            // The same check the webhook function applies: what is saved is what runs.
            Rules::from_value(request.document.clone())
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            request.document
        };
        self.store
            .put_settings(
                admin.tenant_key(),
                &TenantSettings { document },
                self.clock.now_unix(),
            )
            .await?;
        self.auth.tenant_cache().forget(admin.tenant_key()).await;
        tracing::info!(admin = %admin.user, back_to_default = empty, "tenant rules saved");
        Ok(json_response(
            StatusCode::OK,
            &json!({"saved": true, "effective": if empty { "default" } else { "tenant" }}),
        ))
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn blocked(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let admin = self.admin(request).await?;
        let after = parked_position(&request.raw_query)?;
        let listing = self
            .store
            .list_parked(
                admin.tenant_key(),
                after.as_ref(),
                PAGE_SIZE,
                self.clock.now_unix(),
            )
            .await?;
        let pages: Vec<Value> = listing.jobs.iter().map(parked_json).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "pages": pages,
                "next": listing.next.map(|(at, page)| format!("{at}:{}", page.as_str())),
            }),
        ))
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn retry(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_SETTINGS_BODY)?;
        let admin = self.admin(request).await?;
        let retry: RetryRequest = parse_json(body, "the retry request")?;
        let page = PageId::parse(retry.page_id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let now = self.clock.now_unix();
        let parked = self
            .store
            .parked(admin.tenant_key(), &page, now)
            .await?
            .ok_or(ApiError::NotFound)?;
        let mut job = EditJobMessage::from_json(&parked.job)
            .map_err(|e| ApiError::Internal(format!("a parked job is unreadable: {e}")))?;
        if &job.client_key != admin.tenant_key() || job.page_id != page {
            return Err(ApiError::Internal(
                "a parked job names another tenant or page".into(),
            ));
        }
        // The same edit, under the site's policy as it is now: an admin who changed the policy
        // (or added the app to the page) retries to have it applied.
        if let Some(policy) = self.current_policy(admin.tenant_key(), now).await? {
            job.policy = policy;
        }
        let now_ms = now.saturating_mul(1000);
        job.job_id = format!("retry:{now_ms}:{}", job.job_id)
            .chars()
            .take(200)
            .collect();
        job.accepted_at = now;
        match self
            .intake
            .enqueue_once(&job, RETRY_MARK_TTL_SECONDS, now)
            .await
        {
            Ok(Enqueued::Queued | Enqueued::Duplicate) => {}
            Err(IntakeError::Marks(err)) => return Err(err.into()),
            Err(IntakeError::Queue(err)) => return Err(ApiError::Unavailable(err.to_string())),
        }
        self.store.unpark(admin.tenant_key(), &page).await?;
        tracing::info!(admin = %admin.user, page_id = %page, job_id = %job.job_id, "parked job queued again");
        Ok(json_response(
            StatusCode::ACCEPTED,
            &json!({"queued": true, "jobId": job.job_id}),
        ))
    }

    /// The restricted-page policy of the tenant's rules now (its own, else the deployment's).
    async fn current_policy(
        &self,
        tenant_key: &ClientKey,
        now: i64,
    ) -> Result<Option<understudy_core::RestrictedPagePolicy>, ApiError> {
        let own = self
            .store
            .get_settings(tenant_key, now)
            .await?
            .map(|s| s.document)
            .filter(|d| !d.is_null());
        let document = match own {
            Some(own) => Some(own),
            None => self.deployment_document(now).await?,
        };
        Ok(document
            .and_then(|document| Rules::from_value(document).ok())
            .map(|rules| rules.restricted_pages))
    }

    /// The deployment's rules document: the one stored under [`ClientKey::deployment`] (on AWS,
    /// written with `understudy-rules set`), else `EDIT_RULES` (the local app).
    async fn deployment_document(&self, now: i64) -> Result<Option<Value>, ApiError> {
        let stored = self
            .store
            .get_settings(&ClientKey::deployment(), now)
            .await?
            .map(|s| s.document)
            .filter(|d| !d.is_null());
        Ok(stored.or_else(|| self.default_rules.clone()))
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn audit(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let admin = self.admin(request).await?;
        let query = AuditQuery::parse(&request.raw_query)?;
        let now = self.clock.now_unix();
        let (limit, scan_cap) = if query.csv {
            (MAX_CSV_RECORDS, MAX_CSV_RECORDS.saturating_mul(2))
        } else {
            (PAGE_SIZE, MAX_SCANNED_PER_ANSWER)
        };
        // Whole store pages are read, and every match in them answered: the `next` of the last
        // page read is where the following answer starts, so no record is skipped or repeated.
        let mut records = Vec::new();
        let mut cursor = query.before.clone();
        let mut scanned = 0usize;
        // A download reads bigger pages: fewer round trips for up to MAX_CSV_RECORDS.
        let batch = if query.csv { 500 } else { PAGE_SIZE };
        let next = loop {
            let listing = match &query.page {
                Some(page) => {
                    self.store
                        .list_for_page(admin.tenant_key(), page, cursor.as_ref(), batch, now)
                        .await?
                }
                None => {
                    self.store
                        .list_for_tenant(admin.tenant_key(), cursor.as_ref(), batch, now)
                        .await?
                }
            };
            scanned = scanned.saturating_add(listing.records.len());
            records.extend(listing.records.into_iter().filter(|r| query.matches(r)));
            if records.len() >= limit || scanned >= scan_cap || listing.next.is_none() {
                break listing.next;
            }
            cursor = listing.next;
        };
        if query.csv {
            // The newest MAX_CSV_RECORDS: a download has no `next`.
            records.truncate(MAX_CSV_RECORDS);
            return Ok(csv::response(&records));
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "records": records,
                "next": next.as_ref().map(AuditCursor::as_str),
            }),
        ))
    }

    #[tracing::instrument(skip_all, fields(client_key = tracing::field::Empty))]
    async fn queue(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        let admin = self.admin(request).await?;
        let waiting = self
            .depth
            .waiting()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let now = self.clock.now_unix();
        let mut dead = Vec::new();
        let mut after = None;
        // The tenant's dead letters are among its parked jobs: read a bounded number of pages.
        for _ in 0..4 {
            let listing = self
                .store
                .list_parked(admin.tenant_key(), after.as_ref(), PAGE_SIZE, now)
                .await?;
            dead.extend(
                listing
                    .jobs
                    .iter()
                    .filter(|j| j.dead_lettered)
                    .map(parked_json),
            );
            match listing.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"waiting": waiting, "deadLetters": dead}),
        ))
    }
}

fn parked_json(job: &understudy_domain::ParkedJob) -> Value {
    json!({
        "pageId": job.page_id.as_str(),
        "at_ms": job.at_ms,
        "outcome": job.outcome,
        "reason": job.reason,
        "deadLettered": job.dead_lettered,
    })
}

/// `after=<at_ms>:<pageId>` of a parked-jobs listing.
fn parked_position(raw_query: &str) -> Result<Option<(i64, PageId)>, ApiError> {
    let bad = || ApiError::BadRequest("`after` is not a position from an earlier answer".into());
    match single(raw_query, "after")? {
        None => Ok(None),
        Some(value) => {
            let (at, page) = value.split_once(':').ok_or_else(bad)?;
            let at: i64 = at.parse().map_err(|_| bad())?;
            let page = PageId::parse(page).map_err(|_| bad())?;
            Ok(Some((at, page)))
        }
    }
}

/// A query parameter given at most once.
fn single(raw_query: &str, name: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for (key, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(ApiError::BadRequest(format!("`{name}` is given twice")));
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// The audit listing's filters.
struct AuditQuery {
    page: Option<PageId>,
    outcome: Option<EditOutcome>,
    /// `app`, or an accountId.
    actor: Option<String>,
    before: Option<AuditCursor>,
    csv: bool,
}

impl AuditQuery {
    fn parse(raw_query: &str) -> Result<Self, ApiError> {
        let text = |name| single(raw_query, name).map(|v| v.filter(|v| !v.is_empty()));
        let page = text("page")?
            .map(|p| PageId::parse(p).map_err(|e| ApiError::BadRequest(e.to_string())))
            .transpose()?;
        let outcome = text("outcome")?
            .map(|o| {
                serde_json::from_value::<EditOutcome>(Value::String(o)).map_err(|_| {
                    ApiError::BadRequest(
                        "`outcome` is one of edited, unchanged, blocked, failed, refused, skipped"
                            .into(),
                    )
                })
            })
            .transpose()?;
        let actor = text("actor")?
            .map(|a| {
                if a == "app" || AccountId::parse(a.as_str()).is_ok() {
                    Ok(a)
                } else {
                    Err(ApiError::BadRequest(
                        "`actor` is `app` or an accountId".into(),
                    ))
                }
            })
            .transpose()?;
        let before = text("before")?
            .map(|b| {
                AuditCursor::parse(&b).map_err(|_| {
                    ApiError::BadRequest("`before` is not a cursor from an earlier answer".into())
                })
            })
            .transpose()?;
        let csv = match text("format")?.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err(ApiError::BadRequest("`format` is json or csv".into())),
        };
        Ok(Self {
            page,
            outcome,
            actor,
            before,
            csv,
        })
    }

    fn matches(&self, record: &AuditRecord) -> bool {
        self.outcome.is_none_or(|o| record.outcome == o)
            && self
                .actor
                .as_deref()
                .is_none_or(|actor| match &record.acted_as {
                    ActedAs::App => actor == "app",
                    ActedAs::User(user) => user.as_str() == actor,
                })
    }
}
