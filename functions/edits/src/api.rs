//! The edit API for the app's own UI, authenticated with context JWTs (`AP.context.getToken()`,
//! `qsh = context-qsh`), and the UI page itself (an iframe loaded with a request-bound token).
//!
//! - `POST /api/pages/{pageId}/edits` with `{"edit": [operations]}`: runs the edit **as the calling
//!   user** (the token's `sub`), never as the app, and answers with the audit record.
//! - `GET /api/pages/{pageId}/audit`: that page's audit records for the caller's tenant, newest first.
//! - `GET /ui/page?pageId=…`: the page-byline panel that calls the two routes above.
//!
//! Every read and write is keyed by the clientKey the token verified with: a token of one tenant
//! can never reach another tenant's data.
//!
//! The same two API routes accept a Forge UI invocation (`invokeRemote`, docs/protocol.md §17):
//! `Authorization: Bearer <FIT>` with the user as `principal`, and the user's own token in
//! `x-forge-oauth-user`. The edit then runs as that user with that token, exactly as the context
//! JWT path runs it as the token's `sub`; records are keyed by the installation's tenant key.

use std::sync::Arc;
use std::time::Duration;

use understudy_confluence::within_job_deadline;

use bytes::Bytes;
use connect_auth::{Clock, SystemClock};
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use understudy_core::{Edit, EditEngine, EditJob, EditMode, user_may_view_page};
use understudy_domain::{
    AccountId, AuditCursor, AuditLog, ForgeInstallations, PageId, RateDecision, RateLimits,
    TenantState, TenantStore,
};
use understudy_web::json::parse_json;
use understudy_web::request::json as json_response;
use understudy_web::{
    Accept, ApiError, ApiRequest, ApiResponse, AppConfig, Authenticator, Caller,
    ConnectAuthenticator, ForgeFrontDoor, TenantCache, UserSite, api_user,
};

/// An edit request is a short list of operations.
pub const MAX_EDIT_BODY: usize = 64 * 1024;
/// Audit records listed per request; `?before=` pages back through the rest.
pub const AUDIT_PAGE_SIZE: usize = 50;
/// API calls one user may make per minute on one site (edits and listings together). A person
/// using the page's panel makes a few; more is a script, and each call may cost Confluence calls.
pub const USER_CALLS_PER_MINUTE: u32 = 30;

/// The edit API.
pub struct EditApi<S: ?Sized, C = SystemClock> {
    config: AppConfig,
    store: Arc<S>,
    engine: EditEngine,
    auth: ConnectAuthenticator<S, C>,
    clock: C,
    /// The iframe's `Content-Security-Policy`: framed only by the hosts that may install the app.
    ui_policy: HeaderValue,
    forge: Option<ForgeFrontDoor<S, C>>,
    /// How long one edit's Confluence calls may take in all ([`DEFAULT_EDIT_BUDGET`]).
    edit_budget: Duration,
}

/// How long one edit through the API may spend on Confluence (token exchange, reads, writes,
/// retries) in all: 15 s, which leaves the store's reads and the audit record's write (each
/// bounded by the store's own timeouts) room within API Gateway's 29 s. Past it, the calls still
/// running give up, and the engine audits the edit as failed for that reason.
pub const DEFAULT_EDIT_BUDGET: Duration = Duration::from_secs(15);

impl<S: ?Sized, C> std::fmt::Debug for EditApi<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditApi").finish_non_exhaustive()
    }
}

enum Route {
    Edit(PageId),
    Audit(PageId),
    Ui,
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    use understudy_web::routes::{self, Function};
    let found = routes::resolve(Function::EditApi, method, path)?;
    let page = || {
        let page = found.param(path, "pageId").ok_or(ApiError::NotFound)?;
        PageId::parse(page).map_err(|e| ApiError::BadRequest(e.to_string()))
    };
    match found {
        routes::PAGE_EDITS => Ok(Route::Edit(page()?)),
        routes::PAGE_AUDIT => Ok(Route::Audit(page()?)),
        routes::PAGE_PANEL => Ok(Route::Ui),
        _ => Err(ApiError::NotFound),
    }
}

impl<S, C> EditApi<S, C>
where
    S: TenantStore + ForgeInstallations + AuditLog + RateLimits + ?Sized,
    C: Clock + Clone,
{
    /// Builds the API's state once per cold start.
    pub fn new(config: AppConfig, store: Arc<S>, engine: EditEngine, clock: C) -> Self {
        let auth = ConnectAuthenticator::new(store.clone(), clock.clone(), config.base_path());
        let ui_policy = HeaderValue::from_str(&format!(
            "frame-ancestors {}",
            config.tenant_hosts.frame_ancestors()
        ))
        // Host patterns are checked DNS names; if one ever were not header text, frame nowhere.
        .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'none'"));
        Self {
            config,
            store,
            engine,
            auth,
            clock,
            ui_policy,
            forge: None,
            edit_budget: DEFAULT_EDIT_BUDGET,
        }
    }

    /// Reads tenants through the process's shared `cache`.
    pub fn with_tenant_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.auth = self.auth.with_tenant_cache(cache);
        self
    }

    /// Opens the Forge front door (`None`: the API accepts Connect context JWTs only).
    pub fn with_forge(mut self, forge: Option<ForgeFrontDoor<S, C>>) -> Self {
        self.forge = forge;
        self
    }

    /// Another budget for one edit's Confluence calls.
    #[must_use]
    pub fn with_edit_budget(mut self, budget: Duration) -> Self {
        self.edit_budget = budget;
        self
    }

    /// Answers one request; never panics, whatever the caller sends.
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        let result = match route(
            &request.method,
            request.relative_path(self.config.base_path()),
        ) {
            Ok(Route::Edit(page)) => self.edit(&request, page).await,
            Ok(Route::Audit(page)) => self.audit(&request, page).await,
            Ok(Route::Ui) => self.ui(&request).await,
            Err(err) => Err(err),
        };
        understudy_web::error::respond(result, &self.config.app_key)
    }

    /// The verified caller, of a tenant that has not disabled the app.
    async fn caller(&self, request: &ApiRequest, accept: Accept) -> Result<Caller, ApiError> {
        let caller = self.auth.authenticate(request, accept).await?;
        if caller.tenant.state == TenantState::Disabled {
            return Err(ApiError::Forbidden(
                "the app is disabled on this site".into(),
            ));
        }
        Ok(caller)
    }

    /// The caller of an API route: a Connect context token naming a user, or a Forge UI
    /// invocation (a `Bearer` FIT, when the Forge door is open); within that user's call limit.
    async fn api_user(&self, request: &ApiRequest) -> Result<(UserSite, AccountId), ApiError> {
        let (caller, user) = api_user(&self.auth, self.forge.as_ref(), request).await?;
        let tenant_key = caller.tenant_key();
        tracing::Span::current().record("client_key", tenant_key.as_str());
        let decision = self
            .store
            .take(
                tenant_key,
                user.as_str(),
                USER_CALLS_PER_MINUTE,
                60,
                self.clock.now_unix(),
            )
            .await?;
        if let RateDecision::Limited {
            retry_after_seconds,
        } = decision
        {
            tracing::warn!(client_key = %tenant_key, "a user's API calls are over the limit");
            return Err(ApiError::TooManyRequests {
                retry_after_seconds,
            });
        }
        Ok((caller, user))
    }

    #[tracing::instrument(skip_all, fields(page_id = %page, client_key = tracing::field::Empty, job_id = tracing::field::Empty))]
    async fn edit(&self, request: &ApiRequest, page: PageId) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_EDIT_BODY)?;
        let (caller, user) = self.api_user(request).await?;
        let edit = parse_edit_request(body)?;
        let now_ms = self.clock.now_unix().saturating_mul(1000);
        let job_id = format!("api:{}:{now_ms}", page.as_str());
        tracing::Span::current().record("job_id", job_id.as_str());
        // The edit runs as the person asking, never as the app.
        let mode = EditMode::AsUserOnly(user.clone());
        let job = EditJob {
            door: caller.door(&user),
            page_id: &page,
            edit: &edit,
            mode: &mode,
            job_id: &job_id,
        };
        // One deadline for every call the edit makes, so that it answers in time and what
        // happened is audited even when Confluence is slow.
        let deadline = std::time::Instant::now() + self.edit_budget;
        let report = within_job_deadline(deadline, self.engine.execute(job)).await;
        let status = understudy_web::error::edit_status(&report.result);
        // The record as the trail has it (or would, for a refusal that stays out of it).
        let record = report.audit_record(&job, now_ms);
        let body = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json_response(
            status,
            &json!({ "audit": body, "audited": report.audited }),
        ))
    }

    /// A page's audit records, newest first, `AUDIT_PAGE_SIZE` at a time (`?before=<next>` for the
    /// next ones), shown only to a user Confluence says may view the page, or to a site admin: to
    /// anyone else the page has no records here (404, as Confluence itself answers).
    #[tracing::instrument(skip_all, fields(page_id = %page, client_key = tracing::field::Empty))]
    async fn audit(&self, request: &ApiRequest, page: PageId) -> Result<ApiResponse, ApiError> {
        let (caller, user) = self.api_user(request).await?;
        let before = before_cursor(&request.raw_query)?;
        let may_view = user_may_view_page(
            self.engine.confluence(),
            caller.door(&user),
            &user,
            &page,
        )
        .await
        .map_err(|e| {
            if e.is_transient() {
                ApiError::Unavailable(format!("asking Confluence who may view the page: {e}"))
            } else {
                tracing::warn!(error = %e, "Confluence could not say who may view the page");
                ApiError::NotFound
            }
        })?;
        // A site admin sees every page's records (docs/protocol.md §18), as on the admin page.
        if !may_view
            && !self
                .engine
                .confluence()
                .is_site_admin(caller.door(&user), &user)
                .await
                .map_err(|e| {
                    if e.is_transient() {
                        ApiError::Unavailable(format!("asking Confluence who is a site admin: {e}"))
                    } else {
                        ApiError::NotFound
                    }
                })?
        {
            return Err(ApiError::NotFound);
        }
        let listing = self
            .store
            .list_for_page(
                caller.tenant_key(),
                &page,
                before.as_ref(),
                AUDIT_PAGE_SIZE,
                self.clock.now_unix(),
            )
            .await?;
        let records = serde_json::to_value(&listing.records)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "pageId": page.as_str(),
                "records": records,
                "next": listing.next.as_ref().map(AuditCursor::as_str),
            }),
        ))
    }

    /// The iframe: loaded by Confluence with a request-bound token in the query (computed qsh).
    async fn ui(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.caller(request, Accept::RequestToken).await?;
        let page = UI_PAGE.replace(
            understudy_web::config::CONNECT_ALL_JS,
            &self.config.connect_js_url,
        );
        let mut response = http::Response::new(Bytes::from(page));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_SECURITY_POLICY, self.ui_policy.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Ok(response)
    }
}

/// The body of an edit request: `{"edit": [operations]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditRequest {
    edit: Value,
}

/// The edit a request asks for; every error in fixed words, never the caller's text.
fn parse_edit_request(body: &[u8]) -> Result<Edit, ApiError> {
    let request: EditRequest = parse_json(body, "the edit request")?;
    Edit::from_value(request.edit).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// The `before` query parameter: a cursor from an earlier answer's `next`, or none.
fn before_cursor(raw_query: &str) -> Result<Option<AuditCursor>, ApiError> {
    let mut found = None;
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        if name == "before" {
            if found.is_some() {
                return Err(ApiError::BadRequest("`before` is given twice".into()));
            }
            found = Some(AuditCursor::parse(&value).map_err(|_| {
                ApiError::BadRequest("`before` is not a cursor from an earlier answer".into())
            })?);
        }
    }
    Ok(found)
}

/// The byline panel. Everything dynamic is set with `textContent`, never as HTML.
const UI_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Understudy</title>
<script src="https://connect-cdn.atl-paas.net/all.js" data-options="sizeToParent:true"></script>
<style>body{font:14px -apple-system,sans-serif;margin:8px}li{margin:4px 0}.muted{color:#6b778c}</style>
</head><body>
<h3>Understudy on this page</h3>
<form id="note"><input id="text" placeholder="Append a note as yourself" size="40"> <button>Append</button></form>
<p id="status" class="muted"></p>
<ol id="audit"></ol>
<button id="older" hidden>Older records</button>
<script>
const pageId = new URLSearchParams(location.search).get('pageId');
const api = (path, init) => AP.context.getToken().then(token =>
  fetch(path, Object.assign({}, init, {headers: {'Authorization': 'JWT ' + token, 'Content-Type': 'application/json'}})));
function show(records, append) {
  const list = document.getElementById('audit');
  if (!append) list.replaceChildren();
  for (const r of records) {
    const item = document.createElement('li');
    const who = r.acted_as.kind === 'app' ? 'the app' : 'a user (' + r.acted_as.account_id + ')';
    item.textContent = new Date(r.at_ms).toLocaleString() + ': ' + r.outcome + ' by ' + who + ' (' + r.strategy + '): ' + r.reason;
    list.appendChild(item);
  }
}
let next = null;
function load(append) {
  const query = append && next ? '?before=' + encodeURIComponent(next) : '';
  api('../api/pages/' + encodeURIComponent(pageId) + '/audit' + query).then(r => r.json().then(body => {
    if (!r.ok) {
      document.getElementById('status').textContent = body.error || 'The audit trail could not be read.';
      return;
    }
    show(body.records || [], append);
    next = body.next || null;
    document.getElementById('older').hidden = !next;
  }));
}
function refresh() { load(false); }
document.getElementById('older').addEventListener('click', () => load(true));
document.getElementById('note').addEventListener('submit', event => {
  event.preventDefault();
  const p = document.createElement('p');
  p.textContent = document.getElementById('text').value;
  api('../api/pages/' + encodeURIComponent(pageId) + '/edits', {method: 'POST', body: JSON.stringify({edit: [{append: p.outerHTML}]})})
    .then(r => r.json().then(body => {
      document.getElementById('status').textContent = body.audit ? body.audit.reason : body.error;
      refresh();
    }));
});
refresh();
</script></body></html>
"#;
