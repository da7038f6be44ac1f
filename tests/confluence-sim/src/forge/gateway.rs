//! Atlassian's API gateway in front of Confluence, for Forge's tokens:
//! `/ex/confluence/{cloudId}/wiki/...` answers as `/wiki/...` does, with the same handlers and the
//! same permission rules, for `Authorization: Bearer <token>` where the token is one the Forge
//! platform issued:
//!
//! - an app system token acts as the Forge app user (restrictions, space permissions and app access
//!   rules apply to it as to any app user);
//! - a user token or an offline user token acts as its user, through the Forge app (an app access
//!   rule that blocks all apps applies, as for Connect impersonation).
//!
//! Unknown, expired or revoked tokens, tokens of an uninstalled app and Connect JWTs get 401; a
//! cloudId that is not the site's gets 404.

use axum::http::HeaderValue;
use axum::response::Response;
use serde_json::json;

use crate::auth::{Caller, Incoming};
use crate::confluence::{self, Outcome, json_response};
use crate::faults::{Endpoint, Fault, gateway_inner_path};
use crate::forge::ForgeTokenKind;
use crate::model::AccountType;
use crate::state::{Shared, State};

/// The token of `Authorization: Bearer <token>`.
pub(crate) fn bearer(request: &Incoming<'_>) -> Option<String> {
    request
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// Who a Forge token acts as, or why it is refused.
pub(crate) fn forge_caller(state: &State, token: &str, now: i64) -> Result<Caller, &'static str> {
    let issued = state
        .forge
        .tokens
        .get(token)
        .ok_or("unknown or revoked token")?;
    if now >= issued.expires_at {
        return Err("token expired");
    }
    let installation = state
        .forge
        .current()
        .filter(|i| i.installation_id == issued.installation_id)
        .ok_or("the installation this token was issued to is gone")?;
    let user = state
        .content
        .users
        .get(&issued.account_id)
        .filter(|u| u.active)
        .ok_or("the token's user is deactivated")?;
    let expected = match issued.kind {
        ForgeTokenKind::System => AccountType::App,
        ForgeTokenKind::User | ForgeTokenKind::Offline => AccountType::Customer,
    };
    if user.account_type != expected {
        return Err("the token's user cannot act here");
    }
    Ok(Caller::Forge {
        app_id: installation.app_id.clone(),
        account_id: issued.account_id.clone(),
        kind: issued.kind,
    })
}

/// Expires the bearer token of a request now (the `ExpiredToken` fault).
pub(crate) fn expire_presented_token(state: &mut State, request: &Incoming<'_>, now: i64) {
    if let Some(token) = bearer(request)
        && let Some(issued) = state.forge.tokens.get_mut(&token)
    {
        issued.expires_at = issued.expires_at.min(now);
    }
}

/// The gateway's 401.
pub(crate) fn unauthorized(reason: &str) -> Response {
    let mut response = json_response(
        401,
        &json!({"code": 401, "message": format!("Unauthorized: {reason}")}),
    );
    response.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer realm=\"api.atlassian.com\""),
    );
    response
}

fn not_found(message: &str) -> Response {
    json_response(404, &json!({"code": 404, "message": message}))
}

/// Answers a request under `/ex/confluence/`. `state` is locked by the caller.
pub(crate) fn handle(
    shared: &Shared,
    state: &mut State,
    request: Incoming<'_>,
    body: &[u8],
    inner: &Endpoint,
    fault: Option<&Fault>,
) -> Outcome {
    let now = shared.now();
    let cloud_id = request
        .raw_path
        .trim_start_matches('/')
        .split('/')
        .nth(2)
        .unwrap_or_default();
    if cloud_id != state.cloud_id {
        return Outcome::plain(not_found("No site with this cloudId"));
    }
    let inner_path = gateway_inner_path(request.raw_path);
    if inner_path != "/wiki" && !inner_path.starts_with("/wiki/") {
        return Outcome::plain(not_found("No such product API"));
    }
    if fault == Some(&Fault::ExpiredToken) {
        expire_presented_token(state, &request, now);
        return Outcome::plain(unauthorized("token expired"));
    }
    let caller = match bearer(&request) {
        // Connect JWTs (`Authorization: JWT …`) and anything else are not accepted here.
        None => return Outcome::plain(unauthorized("a Bearer token is required")),
        Some(token) => match forge_caller(state, &token, now) {
            Ok(caller) => caller,
            Err(reason) => return Outcome::plain(unauthorized(reason)),
        },
    };
    confluence::serve(
        shared,
        state,
        &caller,
        Incoming {
            raw_path: inner_path,
            ..request
        },
        body,
        inner,
        fault,
    )
}
