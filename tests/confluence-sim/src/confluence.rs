//! Confluence's REST API, the part the app uses (docs/protocol.md §5, §7), with Confluence's
//! answers: cannot view → 404, can view but not edit → 403, stale version → 409, GET with a body →
//! 403, missing scope → 403, bad credentials → 401.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::{Caller, Incoming, authenticate};
use crate::faults::{Endpoint, Fault};
use crate::model::{EditSpec, EditVia, OpRestriction, Page, Subject, User};
use crate::state::{Shared, State};
use crate::webhooks::{self, Event, ForgeEcho, Outgoing};

/// What one request produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub response: Response,
    pub caller: Option<String>,
    pub webhooks: Vec<Outgoing>,
}

impl Outcome {
    pub(crate) fn plain(response: Response) -> Self {
        Self {
            response,
            caller: None,
            webhooks: Vec::new(),
        }
    }
}

/// A JSON answer.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body.clone())).into_response()
}

/// A v1-style error (`/rest/api/...`).
fn v1_error(status: u16, message: &str) -> Response {
    json_response(
        status,
        &json!({"statusCode": status, "message": message,
                "data": {"authorized": status != 401 && status != 403, "valid": true,
                         "errors": [], "successful": false}}),
    )
}

/// A v2-style error (`/api/v2/...`).
fn v2_error(status: u16, code: &str, title: &str) -> Response {
    json_response(
        status,
        &json!({"errors": [{"status": status, "code": code, "title": title, "detail": null}]}),
    )
}

fn iso(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A page as `GET /api/v2/pages/{id}` returns it.
pub(crate) fn page_v2_json(site_base_url: &str, page: &Page, with_storage_body: bool) -> Value {
    let body = if with_storage_body {
        json!({"storage": {"representation": "storage", "value": page.body}})
    } else {
        json!({})
    };
    json!({
        "id": page.id_string(),
        "status": page.status,
        "title": page.title,
        "spaceId": page.space_id.to_string(),
        "parentId": page.parent_id.map(|p| p.to_string()),
        "parentType": page.parent_id.map(|_| "page"),
        "position": 0,
        "authorId": page.creator,
        "ownerId": page.creator,
        "lastOwnerId": null,
        "createdAt": iso(page.created_ms),
        "version": {
            "createdAt": iso(page.modified_ms),
            "message": page.message(),
            "number": page.version,
            "minorEdit": false,
            "authorId": page.last_modifier,
        },
        "body": body,
        "_links": {
            "webui": format!("/spaces/{}/pages/{}", page.space_key, page.id),
            "editui": format!("/pages/resumedraft.action?draftId={}", page.id),
            "base": site_base_url,
        },
    })
}

/// A user as the v1 API returns it.
pub(crate) fn user_json(site_base_url: &str, user: &User) -> Value {
    json!({
        "type": "known",
        "accountId": user.account_id,
        "accountType": user.account_type.rest_value(),
        "email": "",
        "publicName": user.display_name,
        "displayName": user.display_name,
        "isExternalCollaborator": false,
        "_links": {"self": format!("{site_base_url}/rest/api/user?accountId={}", user.account_id)},
    })
}

/// `GET /rest/api/user?accountId=…[&expand=operations]`: any user, as Confluence shows users to
/// apps; with `operations`, a site admin's include `administer` on `application`.
fn get_user(state: &State, site: &str, request: Incoming<'_>) -> Response {
    let Some(account_id) = query_param(request.raw_query, "accountId") else {
        return v1_error(400, "accountId is required");
    };
    let Some(user) = state.content.users.get(&account_id) else {
        return v1_error(404, "user not found");
    };
    let mut json = user_json(site, user);
    let expand = query_param(request.raw_query, "expand").unwrap_or_default();
    if expand.split(',').any(|e| e.trim() == "operations") {
        let mut operations =
            vec![serde_json::json!({"operation": "use", "targetType": "application"})];
        if user.active && state.content.site_admins.contains(&account_id) {
            operations
                .push(serde_json::json!({"operation": "administer", "targetType": "application"}));
        }
        if let Some(object) = json.as_object_mut() {
            object.insert("operations".to_owned(), Value::Array(operations));
        }
    }
    json_response(200, &json)
}

/// The segment at `index` of the raw path.
fn segment(path: &str, index: usize) -> Option<&str> {
    path.trim_start_matches('/').split('/').nth(index)
}

fn page_id_at(path: &str, index: usize) -> Option<u64> {
    segment(path, index)
        .filter(|s| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
}

fn query_param(raw_query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(raw_query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Answers a request under `/wiki`. `state` is locked by the caller.
pub(crate) fn handle(
    shared: &Shared,
    state: &mut State,
    request: Incoming<'_>,
    body: &[u8],
    endpoint: &Endpoint,
    fault: Option<&Fault>,
) -> Outcome {
    let now = shared.now();
    if fault == Some(&Fault::ExpiredToken) {
        if let Some(token) = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            && let Some(issued) = state.tokens.get_mut(token)
        {
            issued.expires_at = issued.expires_at.min(now);
        }
        return Outcome::plain(unauthorized("token expired"));
    }
    let caller = match authenticate(
        state,
        request,
        now,
        shared.config.leeway_seconds,
        shared.config.require_app_aud,
    ) {
        Ok(caller) => caller,
        Err(refused) => return Outcome::plain(unauthorized(&refused.0)),
    };
    serve(shared, state, &caller, request, body, endpoint, fault)
}

/// Answers an authenticated request; `request.raw_path` is under `/wiki` (the Forge gateway maps
/// its paths there). `state` is locked by the caller.
pub(crate) fn serve(
    shared: &Shared,
    state: &mut State,
    caller: &Caller,
    request: Incoming<'_>,
    body: &[u8],
    endpoint: &Endpoint,
    fault: Option<&Fault>,
) -> Outcome {
    let now = shared.now();
    let described = Some(caller.describe());
    // Confluence answers 403 to a GET with a body (docs/protocol.md §5).
    if request.method == "GET" && !body.is_empty() {
        return Outcome {
            response: v1_error(403, "GET requests must not have a body"),
            caller: described,
            webhooks: Vec::new(),
        };
    }
    let site = shared.site_base_url();
    let mut webhooks = Vec::new();
    let response = match endpoint {
        Endpoint::CurrentUser => match state.content.users.get(caller.account_id()) {
            Some(user) => json_response(200, &user_json(&site, user)),
            None => v1_error(404, "user not found"),
        },
        Endpoint::GetUser => get_user(state, &site, request),
        Endpoint::GetPage => get_page(state, &site, caller, request),
        Endpoint::UpdatePage => update_page(
            state,
            &site,
            now,
            caller,
            request,
            body,
            fault,
            &mut webhooks,
        ),
        Endpoint::GetRestrictions => get_restrictions(state, &site, caller, request),
        Endpoint::GetRestrictionUser
        | Endpoint::AddRestrictionUser
        | Endpoint::RemoveRestrictionUser => {
            restriction_user(state, &site, now, caller, request, &mut webhooks)
        }
        Endpoint::PermissionCheck => permission_check(state, caller, request, body),
        _ => v1_error(404, "No such REST resource in the simulator"),
    };
    Outcome {
        response,
        caller: described,
        webhooks,
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut response = v1_error(401, reason);
    response.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("JWT realm=\"Atlassian Connect\""),
    );
    response
}

fn get_page(state: &State, site: &str, caller: &Caller, request: Incoming<'_>) -> Response {
    let not_found = || v2_error(404, "NOT_FOUND", "Not Found");
    let Some(page) = page_id_at(request.raw_path, 4).and_then(|id| state.content.pages.get(&id))
    else {
        return not_found();
    };
    if !state.content.can_view(page, caller.subject()) {
        return not_found();
    }
    if !caller.has_scope(state, "READ") {
        return v2_error(403, "FORBIDDEN", "The app's scopes do not allow this");
    }
    match query_param(request.raw_query, "body-format").as_deref() {
        None => json_response(200, &page_v2_json(site, page, false)),
        Some("storage") => json_response(200, &page_v2_json(site, page, true)),
        Some(_) => v2_error(
            400,
            "INVALID_REQUEST_PARAMETER",
            "the simulator serves body-format=storage only",
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn update_page(
    state: &mut State,
    site: &str,
    now: i64,
    caller: &Caller,
    request: Incoming<'_>,
    body: &[u8],
    fault: Option<&Fault>,
    webhooks: &mut Vec<Outgoing>,
) -> Response {
    let not_found = || v2_error(404, "NOT_FOUND", "Not Found");
    let Some(id) = page_id_at(request.raw_path, 4) else {
        return not_found();
    };
    let Some(page) = state.content.pages.get(&id) else {
        return not_found();
    };
    if !state.content.can_view(page, caller.subject()) {
        return not_found();
    }
    if !caller.has_scope(state, "WRITE") {
        return v2_error(403, "FORBIDDEN", "The app's scopes do not allow this");
    }
    if !state.content.can_edit(page, caller.subject()) {
        return v2_error(
            403,
            "FORBIDDEN",
            "You do not have permission to edit this page",
        );
    }
    if fault == Some(&Fault::ConcurrentEdit) {
        // Someone else's edit lands first, as in a real race.
        let person = page.creator.clone();
        let current = page.body.clone();
        state.content.apply_edit(
            id,
            EditSpec {
                title: None,
                body: &current,
                by: &person,
                via: EditVia::Editor,
                message: "a concurrent edit (simulated)",
                now_ms: now.saturating_mul(1000),
            },
        );
        webhooks.extend(webhooks::build(
            state,
            site,
            now,
            Event {
                name: "page_updated",
                page_id: id,
                actor: &person,
                only_app: None,
                force: false,
                forge: ForgeEcho::Send {
                    self_generated: false,
                },
            },
        ));
    }
    let bad = |title: &str| v2_error(400, "INVALID_REQUEST_PARAMETER", title);
    let Ok(update) = serde_json::from_slice::<Value>(body) else {
        return bad("the body is not JSON");
    };
    let id_matches = match update.get("id") {
        Some(Value::String(s)) => *s == id.to_string(),
        Some(Value::Number(n)) => n.as_u64() == Some(id),
        _ => false,
    };
    if !id_matches {
        return bad("id must be the page's id");
    }
    if update.get("status").and_then(Value::as_str) != Some("current") {
        return bad("status must be current");
    }
    let Some(title) = update
        .get("title")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty() && t.chars().count() <= 255)
    else {
        return bad("title is required (1 to 255 characters)");
    };
    let storage = update
        .get("body")
        .filter(|b| b.get("representation").and_then(Value::as_str) == Some("storage"));
    let Some(new_body) = storage.and_then(|b| b.get("value")).and_then(Value::as_str) else {
        return bad("body must be {\"representation\": \"storage\", \"value\": ...}");
    };
    let Some(number) = update
        .get("version")
        .and_then(|v| v.get("number"))
        .and_then(Value::as_u64)
    else {
        return bad("version.number is required");
    };
    let message = update
        .get("version")
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(page) = state.content.pages.get(&id) else {
        return not_found();
    };
    if number != page.version + 1 {
        return v2_error(
            409,
            "CONFLICT",
            &format!(
                "Version must be incremented on update. Current version is: {}",
                page.version
            ),
        );
    }
    let space_key = page.space_key.clone();
    if state.content.title_taken(&space_key, title, id) {
        return bad("A page with this title already exists in this space");
    }
    state.content.apply_edit(
        id,
        EditSpec {
            title: Some(title),
            body: new_body,
            by: caller.account_id(),
            via: caller.via(),
            message,
            now_ms: now.saturating_mul(1000),
        },
    );
    // The app's own edit fires page_updated too, as the app user or the impersonated user.
    webhooks.extend(webhooks::build(
        state,
        site,
        now,
        Event {
            name: "page_updated",
            page_id: id,
            actor: caller.account_id(),
            only_app: None,
            force: false,
            forge: ForgeEcho::Send {
                self_generated: caller.is_forge(),
            },
        },
    ));
    match state.content.pages.get(&id) {
        Some(page) => json_response(200, &page_v2_json(site, page, true)),
        None => not_found(),
    }
}

fn restriction_json(
    state: &State,
    site: &str,
    page: &Page,
    operation: &str,
    restriction: &OpRestriction,
    expand_users: bool,
    expand_groups: bool,
) -> Value {
    let restrictions_path = format!("/rest/api/content/{}/restriction/byOperation", page.id);
    let users: Vec<Value> = restriction
        .users
        .iter()
        .filter_map(|u| state.content.users.get(u))
        .map(|u| user_json(site, u))
        .collect();
    let groups: Vec<Value> = restriction
        .groups
        .iter()
        .map(|g| json!({"type": "group", "name": g, "id": format!("group-{g}")}))
        .collect();
    let mut inner = serde_json::Map::new();
    let mut expandable = serde_json::Map::new();
    let list = |results: Vec<Value>| {
        let size = results.len();
        json!({"results": results, "start": 0, "limit": 200, "size": size})
    };
    if expand_users {
        inner.insert("user".into(), list(users));
    } else {
        expandable.insert(
            "user".into(),
            Value::from(format!("{restrictions_path}/{operation}/user")),
        );
    }
    if expand_groups {
        inner.insert("group".into(), list(groups));
    } else {
        expandable.insert(
            "group".into(),
            Value::from(format!("{restrictions_path}/{operation}/group")),
        );
    }
    if !expandable.is_empty() {
        inner.insert("_expandable".into(), Value::Object(expandable));
    }
    json!({
        "operation": operation,
        "restrictions": Value::Object(inner),
        "_expandable": {"content": format!("/rest/api/content/{}", page.id)},
        "_links": {"self": format!("{site}{restrictions_path}/{operation}")},
    })
}

fn get_restrictions(state: &State, site: &str, caller: &Caller, request: Incoming<'_>) -> Response {
    let Some(page) = page_id_at(request.raw_path, 4).and_then(|id| state.content.pages.get(&id))
    else {
        return v1_error(404, "No content found");
    };
    if !state.content.can_view(page, caller.subject()) {
        return v1_error(404, "No content found");
    }
    if !caller.has_scope(state, "READ") {
        return v1_error(403, "The app's scopes do not allow this");
    }
    // Users and groups are listed only when expanded, as in Confluence's v1 API.
    let expand = query_param(request.raw_query, "expand").unwrap_or_default();
    let expanded = |what: &str| expand.split(',').any(|e| e.trim() == what);
    let (users, groups) = (
        expanded("restrictions.user"),
        expanded("restrictions.group"),
    );
    json_response(
        200,
        &json!({
            "read": restriction_json(state, site, page, "read", &page.restrictions.read, users, groups),
            "update": restriction_json(state, site, page, "update", &page.restrictions.update, users, groups),
            "_links": {"base": site, "context": "/wiki"},
        }),
    )
}

fn restriction_user(
    state: &mut State,
    site: &str,
    now: i64,
    caller: &Caller,
    request: Incoming<'_>,
    webhooks: &mut Vec<Outgoing>,
) -> Response {
    let Some(id) = page_id_at(request.raw_path, 4) else {
        return v1_error(404, "No content found");
    };
    let Some(page) = state.content.pages.get(&id) else {
        return v1_error(404, "No content found");
    };
    if !state.content.can_view(page, caller.subject()) {
        return v1_error(404, "No content found");
    }
    let operation = match segment(request.raw_path, 7) {
        Some("read") => "read",
        Some("update") => "update",
        _ => return v1_error(400, "operation must be read or update"),
    };
    let Some(target) = query_param(request.raw_query, "accountId").filter(|a| !a.is_empty()) else {
        return v1_error(400, "accountId is required");
    };
    let list = |p: &Page| {
        if operation == "read" {
            p.restrictions.read.users.clone()
        } else {
            p.restrictions.update.users.clone()
        }
    };
    if request.method == "GET" {
        if !caller.has_scope(state, "READ") {
            return v1_error(403, "The app's scopes do not allow this");
        }
        return if list(page).contains(&target) {
            StatusCode::OK.into_response()
        } else {
            v1_error(404, "The user is not in this restriction")
        };
    }
    if !caller.has_scope(state, "WRITE") {
        return v1_error(403, "The app's scopes do not allow this");
    }
    // Changing restrictions needs edit permission on the page (docs/protocol.md §7).
    if !state.content.can_edit(page, caller.subject()) {
        return v1_error(
            403,
            "You do not have permission to edit the restrictions of this content",
        );
    }
    if !state.content.users.contains_key(&target) {
        return v1_error(400, "No user found with this accountId");
    }
    let adding = request.method == "PUT";
    let changed = {
        let Some(page) = state.content.pages.get_mut(&id) else {
            return v1_error(404, "No content found");
        };
        let users = if operation == "read" {
            &mut page.restrictions.read.users
        } else {
            &mut page.restrictions.update.users
        };
        let present = users.contains(&target);
        if adding && !present {
            // On an unrestricted operation this creates a restriction that lists only this user,
            // as Confluence does: everyone else loses that permission.
            users.push(target);
            true
        } else if !adding && present {
            users.retain(|u| *u != target);
            true
        } else {
            false
        }
    };
    if changed {
        webhooks.extend(webhooks::build(
            state,
            site,
            now,
            Event {
                name: "content_permissions_updated",
                page_id: id,
                actor: caller.account_id(),
                only_app: None,
                force: false,
                forge: ForgeEcho::Send {
                    self_generated: caller.is_forge(),
                },
            },
        ));
    }
    StatusCode::OK.into_response()
}

fn permission_check(
    state: &State,
    caller: &Caller,
    request: Incoming<'_>,
    body: &[u8],
) -> Response {
    let Some(page) = page_id_at(request.raw_path, 4).and_then(|id| state.content.pages.get(&id))
    else {
        return v1_error(404, "No content found");
    };
    if !state.content.can_view(page, caller.subject()) {
        return v1_error(404, "No content found");
    }
    let Ok(check) = serde_json::from_slice::<Value>(body) else {
        return v1_error(400, "the body is not JSON");
    };
    let subject_type = check
        .get("subject")
        .and_then(|s| s.get("type"))
        .and_then(Value::as_str);
    let Some(account_id) = check
        .get("subject")
        .and_then(|s| s.get("identifier"))
        .and_then(Value::as_str)
        .filter(|_| subject_type == Some("user"))
    else {
        return v1_error(
            400,
            "subject must be {\"type\": \"user\", \"identifier\": ...}",
        );
    };
    let Some(user) = state.content.users.get(account_id) else {
        return v1_error(400, "No user found with this accountId");
    };
    // An app user is judged as itself through its own app; a person as themselves.
    let app_key = state
        .installations
        .values()
        .find(|i| i.app_account_id == user.account_id)
        .map(|i| i.app_key.clone());
    let subject = Subject {
        account_id: &user.account_id,
        via_app: app_key.as_deref(),
    };
    let allowed = match check.get("operation").and_then(Value::as_str) {
        Some("read") => state.content.can_view(page, subject),
        Some("update") => state.content.can_edit(page, subject),
        _ => return v1_error(400, "operation must be read or update"),
    };
    json_response(200, &json!({"hasPermission": allowed, "errors": []}))
}
