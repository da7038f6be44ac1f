//! Atlassian's personal data reporting API (shared/reference/forge-remote.md §7), played at
//! `POST /app/report-accounts/` (and without the trailing slash) on the simulator's origin, which
//! stands in for `https://api.atlassian.com`.
//!
//! - Authentication: a Forge app system token (`Authorization: Bearer <token>`, checked as the
//!   Forge gateways check them: issued, not expired, of the current installation, and a *system*
//!   token, since the report is made as the app), or a Connect app JWT
//!   (`Authorization: JWT <token>`, HS256 with the app's shared secret). The JWT is checked as the
//!   simulator checks app JWTs on the REST API (auth.rs): `exp`/`iat` (and `nbf`) with the leeway,
//!   `aud` naming the clientKey (required when [`crate::SimConfig::require_app_aud`]), and a `qsh`
//!   that is not `context-qsh`. As `api.atlassian.com` has no context path, the qsh is of the
//!   request relative to the origin: `POST&/app/report-accounts&` (one trailing slash is dropped by
//!   the canonicaliser, so both spellings hash alike; a Connect client minting with the site's base
//!   URL `…/wiki` gets the same, since `/wiki` is not a prefix of the path). The claims Atlassian
//!   wants here are *unverified*: `iss` may be the app key (as on every other app JWT) or the
//!   site's clientKey; either way the signature must verify with that installation's shared
//!   secret. Only the `Authorization` header is read (no `?jwt=`). Anything else is 401.
//! - The body: a JSON object whose `accounts` is an array of 1 to 90 objects, each with a string
//!   `accountId` and an RFC 3339 `updatedAt`; otherwise 400 `{"errorType", "errorMessage"}`.
//!   Any other method than POST is 405.
//! - The answer: 200 `{"accounts": [{"accountId", "status"}]}` listing those sent that are closed
//!   (`closed`, which wins) or updated (`updated`), in the order sent, each once; otherwise 204
//!   with no body. Every answer (faults and refusals too) carries `Cycle-Period: <seconds>` when
//!   one is set.
//!
//! Injected faults (`Endpoint::ReportAccounts`) answer with `{"errorType", "errorMessage"}` bodies;
//! `Fault::ExpiredToken` is a 401 (and expires a presented Forge token); `Fault::Slow` delays the
//! normal answer.

use std::collections::{BTreeSet, HashSet};

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use connect_auth::{CONTEXT_QSH, RequestParts};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::{Caller, Incoming, hs256_claims};
use crate::confluence::json_response;
use crate::faults::Fault;
use crate::forge::ForgeTokenKind;
use crate::forge::gateway::{bearer, expire_presented_token, forge_caller, unauthorized};
use crate::state::{Shared, State};

/// The path of the reporting API (the simulator also answers it without the trailing slash).
pub const REPORT_ACCOUNTS_PATH: &str = "/app/report-accounts/";
/// At most this many accounts per request.
pub const MAX_REPORTED_ACCOUNTS: usize = 90;
/// Atlassian's test accountId of an active account (never closed nor updated unless a test says).
pub const ACTIVE_TEST_ACCOUNT_ID: &str = "5be24ad8b1653240376955d2";
/// Atlassian's test accountId of a closed account (always closed).
pub const CLOSED_TEST_ACCOUNT_ID: &str = "5be24ba3f91c106033269289";

/// How a report request authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportAuth {
    /// A Connect app JWT.
    Connect {
        /// The site's clientKey.
        client_key: String,
        /// The app's key.
        app_key: String,
    },
    /// A Forge app system token.
    Forge {
        /// The installation the token was issued to (`ari:cloud:ecosystem::installation/…`).
        installation_id: String,
        /// The Forge app's id.
        app_id: String,
    },
}

/// One account of a report, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportedAccount {
    /// `accountId`.
    pub account_id: String,
    /// `updatedAt`, as sent.
    pub updated_at: String,
}

/// One request to the reporting API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRequest {
    /// The method.
    pub method: String,
    /// The raw path (with or without the trailing slash).
    pub path: String,
    /// Who it authenticated as; `None` when it did not (a refusal, or a fault answered first).
    pub auth: Option<ReportAuth>,
    /// The accounts sent, as far as the body could be read (empty when it could not).
    pub accounts: Vec<ReportedAccount>,
    /// The status answered.
    pub status: u16,
    /// The JSON answered: the 200's `{"accounts": [...]}` or a 400's / 405's error; `Null` for
    /// 204, 401 and injected faults.
    pub answer: Value,
    /// When (simulator clock).
    pub at: i64,
    /// An injected fault answered it.
    pub faulted: bool,
}

/// What the reporting API keeps, inside the simulator's one lock.
#[derive(Debug, Clone)]
pub(crate) struct PrivacyState {
    pub closed: BTreeSet<String>,
    pub updated: BTreeSet<String>,
    pub cycle_period: Option<u64>,
    pub requests: Vec<ReportRequest>,
}

impl Default for PrivacyState {
    fn default() -> Self {
        Self {
            closed: BTreeSet::from([CLOSED_TEST_ACCOUNT_ID.to_owned()]),
            updated: BTreeSet::new(),
            cycle_period: None,
            requests: Vec::new(),
        }
    }
}

/// An error in Atlassian's shape for this API.
fn error(status: u16, error_type: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"errorType": error_type, "errorMessage": message}),
    )
}

/// The `{errorType, errorMessage}` body of an injected status fault.
pub(crate) fn fault_body(status: u16, message: &str) -> Value {
    let error_type = match status {
        429 => "RATE_LIMITED",
        503 => "SERVICE_UNAVAILABLE",
        400 => "BAD_REQUEST",
        _ => "INTERNAL_SERVER_ERROR",
    };
    json!({"errorType": error_type, "errorMessage": message})
}

/// Reads the accounts of a body, best effort (for the record).
fn accounts_sent(body: &[u8]) -> Vec<ReportedAccount> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    value
        .get("accounts")
        .and_then(Value::as_array)
        .map(|accounts| {
            accounts
                .iter()
                .map(|a| ReportedAccount {
                    account_id: a
                        .get("accountId")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    updated_at: a
                        .get("updatedAt")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Validates a body: the accounts, or the reason for a 400.
fn validate(body: &[u8]) -> Result<Vec<ReportedAccount>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let accounts = value
        .as_object()
        .ok_or("the body must be a JSON object")?
        .get("accounts")
        .ok_or("`accounts` is required")?
        .as_array()
        .ok_or("`accounts` must be an array")?;
    if accounts.is_empty() {
        return Err("`accounts` must not be empty".into());
    }
    if accounts.len() > MAX_REPORTED_ACCOUNTS {
        return Err(format!(
            "`accounts` holds {} entries; at most {MAX_REPORTED_ACCOUNTS} are allowed",
            accounts.len()
        ));
    }
    accounts
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let account_id = entry
                .get("accountId")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| format!("accounts[{i}].accountId must be a non-empty string"))?;
            let updated_at = entry
                .get("updatedAt")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("accounts[{i}].updatedAt must be a string"))?;
            OffsetDateTime::parse(updated_at, &Rfc3339).map_err(|_| {
                format!("accounts[{i}].updatedAt must be an RFC 3339 date-time: {updated_at:?}")
            })?;
            Ok(ReportedAccount {
                account_id: account_id.to_owned(),
                updated_at: updated_at.to_owned(),
            })
        })
        .collect()
}

/// `exp` and `iat` required, `nbf` honoured, all with the leeway (as auth.rs does).
fn check_times(claims: &Value, now: i64, leeway: i64) -> Result<(), &'static str> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("JWT has no numeric exp")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("JWT has no numeric iat")?;
    if now >= exp.saturating_add(leeway) {
        return Err("JWT expired");
    }
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(iat);
    if iat.max(nbf) > now.saturating_add(leeway) {
        return Err("JWT not yet valid");
    }
    Ok(())
}

/// The claims of a JWT without verifying anything.
fn peek_claims(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let segment = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn header_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let segment = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

/// A Connect app JWT: see the module's documentation.
fn connect_jwt(
    shared: &Shared,
    state: &State,
    token: &str,
    request: &Incoming<'_>,
    now: i64,
) -> Result<ReportAuth, &'static str> {
    if header_alg(token).as_deref() != Some("HS256") {
        return Err("JWT algorithm must be HS256");
    }
    let unverified = peek_claims(token).ok_or("malformed JWT")?;
    let issuer = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or("JWT has no iss")?;
    // `iss` = the app key, or (unverified for this API) the site's clientKey.
    let (installation, claims) = state
        .installations
        .values()
        .filter(|i| i.is_enabled() && (i.app_key == issuer || i.client_key == issuer))
        .find_map(|i| hs256_claims(token, &i.shared_secret).map(|claims| (i, claims)))
        .ok_or("JWT issuer is not an enabled app, or the signature does not verify")?;
    check_times(&claims, now, shared.config.leeway_seconds)?;
    let qsh = claims
        .get("qsh")
        .and_then(Value::as_str)
        .ok_or("JWT has no qsh")?;
    if qsh == CONTEXT_QSH {
        return Err("context JWTs are not accepted here");
    }
    // api.atlassian.com has no context path: the qsh is relative to the origin.
    if qsh != RequestParts::new(request.method, request.raw_path, request.raw_query).qsh() {
        return Err("qsh does not match the request");
    }
    match claims.get("aud") {
        Some(Value::String(aud)) if *aud == installation.client_key => {}
        Some(Value::Array(auds)) if auds.iter().any(|a| *a == *installation.client_key) => {}
        Some(_) => return Err("JWT aud does not name the site's clientKey"),
        None if shared.config.require_app_aud => return Err("JWT has no aud"),
        None => {}
    }
    Ok(ReportAuth::Connect {
        client_key: installation.client_key.clone(),
        app_key: installation.app_key.clone(),
    })
}

/// A Forge app system token.
fn forge_token(state: &State, token: &str, now: i64) -> Result<ReportAuth, &'static str> {
    match forge_caller(state, token, now)? {
        Caller::Forge {
            app_id,
            kind: ForgeTokenKind::System,
            ..
        } => {
            let installation_id = state
                .forge
                .tokens
                .get(token)
                .map(|t| t.installation_id.clone())
                .unwrap_or_default();
            Ok(ReportAuth::Forge {
                installation_id,
                app_id,
            })
        }
        _ => Err("only the app system token may report accounts"),
    }
}

fn authenticate(
    shared: &Shared,
    state: &State,
    request: &Incoming<'_>,
    now: i64,
) -> Result<ReportAuth, &'static str> {
    let authorization = request
        .headers
        .get("authorization")
        .ok_or("an Authorization header is required")?
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    if let Some(token) = authorization.strip_prefix("JWT ") {
        connect_jwt(shared, state, token, request, now)
    } else if let Some(token) = bearer(request) {
        forge_token(state, &token, now)
    } else {
        Err("unsupported Authorization scheme")
    }
}

/// The `caller` of the request record.
fn describe(auth: &ReportAuth) -> String {
    match auth {
        ReportAuth::Connect { app_key, .. } => format!("app:{app_key}"),
        ReportAuth::Forge { app_id, .. } => format!("forge-system via {app_id}"),
    }
}

/// Adds `Cycle-Period` and records the request.
fn finish(
    state: &mut State,
    request: &Incoming<'_>,
    now: i64,
    record: (Option<ReportAuth>, Vec<ReportedAccount>, Value, bool),
    mut response: Response,
) -> Response {
    let (auth, accounts, answer, faulted) = record;
    if let Some(seconds) = state.privacy.cycle_period
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert("cycle-period", value);
    }
    state.privacy.requests.push(ReportRequest {
        method: request.method.to_owned(),
        path: request.raw_path.to_owned(),
        auth,
        accounts,
        status: response.status().as_u16(),
        answer,
        at: now,
        faulted,
    });
    response
}

/// Records a request an injected fault answered (`response` is the fault's answer, with an
/// `{errorType, errorMessage}` body).
pub(crate) fn faulted(
    shared: &Shared,
    state: &mut State,
    request: Incoming<'_>,
    body: &[u8],
    response: Response,
) -> Response {
    let now = shared.now();
    finish(
        state,
        &request,
        now,
        (None, accounts_sent(body), Value::Null, true),
        response,
    )
}

/// Answers a request to the reporting API. `state` is locked by the caller. Returns the answer and
/// the caller to record.
pub(crate) fn handle(
    shared: &Shared,
    state: &mut State,
    request: Incoming<'_>,
    body: &[u8],
    fault: Option<&Fault>,
) -> (Response, Option<String>) {
    let now = shared.now();
    let sent = accounts_sent(body);
    let done = |state: &mut State,
                auth: Option<ReportAuth>,
                sent: Vec<ReportedAccount>,
                answer: Value,
                response: Response| {
        let caller = auth.as_ref().map(describe);
        let response = finish(
            state,
            &request,
            now,
            (auth, sent, answer, fault == Some(&Fault::ExpiredToken)),
            response,
        );
        (response, caller)
    };
    if request.method != "POST" {
        let answer = json!({"errorType": "METHOD_NOT_ALLOWED",
                            "errorMessage": "the reporting API takes POST"});
        let mut response = json_response(405, &answer);
        response
            .headers_mut()
            .insert("allow", HeaderValue::from_static("POST"));
        return done(state, None, sent, answer, response);
    }
    if fault == Some(&Fault::ExpiredToken) {
        expire_presented_token(state, &request, now);
        return done(
            state,
            None,
            sent,
            Value::Null,
            unauthorized("token expired"),
        );
    }
    let auth = match authenticate(shared, state, &request, now) {
        Ok(auth) => auth,
        Err(reason) => return done(state, None, sent, Value::Null, unauthorized(reason)),
    };
    let accounts = match validate(body) {
        Ok(accounts) => accounts,
        Err(message) => {
            let answer = json!({"errorType": "BAD_REQUEST", "errorMessage": message});
            let response = error(400, "BAD_REQUEST", &message);
            return done(state, Some(auth), sent, answer, response);
        }
    };
    let mut seen = HashSet::new();
    let statuses: Vec<Value> = accounts
        .iter()
        .filter(|a| seen.insert(a.account_id.as_str()))
        .filter_map(|a| {
            let status = if state.privacy.closed.contains(&a.account_id) {
                "closed"
            } else if state.privacy.updated.contains(&a.account_id) {
                "updated"
            } else {
                return None;
            };
            Some(json!({"accountId": a.account_id, "status": status}))
        })
        .collect();
    if statuses.is_empty() {
        return done(
            state,
            Some(auth),
            accounts,
            Value::Null,
            StatusCode::NO_CONTENT.into_response(),
        );
    }
    let answer = json!({ "accounts": statuses });
    let response = json_response(200, &answer);
    done(state, Some(auth), accounts, answer, response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_validated() {
        let ok = br#"{"accounts":[{"accountId":"a","updatedAt":"2024-01-02T03:04:05.678Z"}]}"#;
        assert_eq!(validate(ok).map(|a| a.len()), Ok(1));
        for bad in [
            &b"[]"[..],
            br#"{"accounts":[]}"#,
            br#"{"accounts":{}}"#,
            br#"{"accounts":[{"accountId":"a"}]}"#,
            br#"{"accounts":[{"accountId":1,"updatedAt":"2024-01-02T03:04:05Z"}]}"#,
            br#"{"accounts":[{"accountId":"a","updatedAt":"2024-01-02"}]}"#,
            b"not json",
        ] {
            assert!(validate(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
