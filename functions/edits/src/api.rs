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

use std::sync::Arc;

use bytes::Bytes;
use connect_auth::{Claims, Clock, QshMode, SystemClock};
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use understudy_confluence::{Edit, EditEngine, EditJob, EditMode, EditResult};
use understudy_domain::{
    AccountId, AuditLog, AuditRecord, EditOutcome, PageId, Tenant, TenantState, TenantStore,
};
use understudy_web::request::json as json_response;
use understudy_web::{ApiError, ApiRequest, ApiResponse, AppConfig, TenantAuth};

/// An edit request is a short list of operations.
pub const MAX_EDIT_BODY: usize = 64 * 1024;
/// Audit records listed per request.
pub const AUDIT_PAGE_SIZE: usize = 50;

/// The edit API.
pub struct EditApi<S: ?Sized, C = SystemClock> {
    config: AppConfig,
    store: Arc<S>,
    engine: EditEngine,
    auth: TenantAuth<C>,
    clock: C,
}

impl<S: ?Sized, C> std::fmt::Debug for EditApi<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EditApi").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditRequest {
    edit: Value,
}

enum Route {
    Edit(PageId),
    Audit(PageId),
    Ui,
}

fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    if path == "/ui/page" {
        return if method == Method::GET {
            Ok(Route::Ui)
        } else {
            Err(ApiError::MethodNotAllowed)
        };
    }
    let rest = path.strip_prefix("/api/pages/").ok_or(ApiError::NotFound)?;
    let (page, action) = rest.split_once('/').ok_or(ApiError::NotFound)?;
    let wrap: fn(PageId) -> Route = match (action, method) {
        ("edits", &Method::POST) => Route::Edit,
        ("audit", &Method::GET) => Route::Audit,
        ("edits" | "audit", _) => return Err(ApiError::MethodNotAllowed),
        _ => return Err(ApiError::NotFound),
    };
    let page = PageId::parse(page).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(wrap(page))
}

impl<S, C> EditApi<S, C>
where
    S: TenantStore + AuditLog + ?Sized,
    C: Clock + Clone,
{
    /// Builds the API's state once per cold start.
    pub fn new(config: AppConfig, store: Arc<S>, engine: EditEngine, clock: C) -> Self {
        let auth = TenantAuth::new(clock.clone(), config.base_path());
        Self {
            config,
            store,
            engine,
            auth,
            clock,
        }
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

    /// Verifies the caller: a token of an installed, enabled tenant.
    async fn caller(
        &self,
        request: &ApiRequest,
        mode: QshMode,
    ) -> Result<(Tenant, Claims), ApiError> {
        let verified = self.auth.verify(&*self.store, request, mode).await?;
        if verified.tenant.state == TenantState::Disabled {
            return Err(ApiError::Forbidden(
                "the app is disabled on this site".into(),
            ));
        }
        Ok((verified.tenant, verified.claims))
    }

    async fn edit(&self, request: &ApiRequest, page: PageId) -> Result<ApiResponse, ApiError> {
        let body = request.json_body(MAX_EDIT_BODY)?;
        let (tenant, claims) = self.caller(request, QshMode::Context).await?;
        // The edit runs as the person asking, never as the app.
        let user = claims
            .sub
            .as_deref()
            .ok_or_else(|| ApiError::Unauthorized("the context token names no user".into()))
            .and_then(|sub| {
                AccountId::parse(sub).map_err(|_| {
                    ApiError::Unauthorized("the token's user is not an accountId".into())
                })
            })?;
        let parsed: EditRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!("body must be {{\"edit\": [operations]}}: {e}"))
        })?;
        let edit =
            Edit::from_value(parsed.edit).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let now_ms = self.clock.now_unix().saturating_mul(1000);
        let job_id = format!("api:{}:{now_ms}", page.as_str());
        let mode = EditMode::AsUserOnly(user);
        let report = self
            .engine
            .execute(EditJob {
                tenant: &tenant,
                page_id: &page,
                edit: &edit,
                mode: &mode,
                job_id: &job_id,
            })
            .await;
        let outcome = match &report.result {
            EditResult::Edited => EditOutcome::Edited,
            EditResult::Unchanged => EditOutcome::Unchanged,
            EditResult::Blocked(_) => EditOutcome::Blocked,
            EditResult::Failed(_) => EditOutcome::Failed,
        };
        let status = match &report.result {
            EditResult::Edited | EditResult::Unchanged => StatusCode::OK,
            EditResult::Blocked(_) => StatusCode::FORBIDDEN,
            EditResult::Failed(_) if report.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            EditResult::Failed(_) => StatusCode::BAD_GATEWAY,
        };
        let record = AuditRecord {
            client_key: tenant.client_key.clone(),
            page_id: page,
            at_ms: now_ms,
            version_before: report.version_before,
            version_after: report.version_after,
            acted_as: report.acted_as.clone(),
            strategy: report.strategy,
            outcome,
            reason: report.reason(),
            job_id,
        };
        let body = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json_response(
            status,
            &json!({ "audit": body, "audited": report.audited }),
        ))
    }

    async fn audit(&self, request: &ApiRequest, page: PageId) -> Result<ApiResponse, ApiError> {
        let (tenant, _) = self.caller(request, QshMode::Context).await?;
        let records = self
            .store
            .list_for_page(
                &tenant.client_key,
                &page,
                AUDIT_PAGE_SIZE,
                self.clock.now_unix(),
            )
            .await?;
        let records =
            serde_json::to_value(&records).map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({ "pageId": page.as_str(), "records": records }),
        ))
    }

    /// The iframe: loaded by Confluence with a request-bound token in the query (computed qsh).
    async fn ui(&self, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
        self.caller(request, QshMode::Computed).await?;
        let mut response = http::Response::new(Bytes::from_static(UI_PAGE.as_bytes()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
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
<script>
const pageId = new URLSearchParams(location.search).get('pageId');
const api = (path, init) => AP.context.getToken().then(token =>
  fetch(path, Object.assign({}, init, {headers: {'Authorization': 'JWT ' + token, 'Content-Type': 'application/json'}})));
function show(records) {
  const list = document.getElementById('audit');
  list.replaceChildren();
  for (const r of records) {
    const item = document.createElement('li');
    const who = r.acted_as.kind === 'app' ? 'the app' : 'a user (' + r.acted_as.account_id + ')';
    item.textContent = new Date(r.at_ms).toLocaleString() + ': ' + r.outcome + ' by ' + who + ' (' + r.strategy + '): ' + r.reason;
    list.appendChild(item);
  }
}
function refresh() {
  api('../api/pages/' + pageId + '/audit').then(r => r.json()).then(body => show(body.records || []));
}
document.getElementById('note').addEventListener('submit', event => {
  event.preventDefault();
  const p = document.createElement('p');
  p.textContent = document.getElementById('text').value;
  api('../api/pages/' + pageId + '/edits', {method: 'POST', body: JSON.stringify({edit: [{append: p.outerHTML}]})})
    .then(r => r.json().then(body => {
      document.getElementById('status').textContent = body.audit ? body.audit.reason : body.error;
      refresh();
    }));
});
refresh();
</script></body></html>
"#;
