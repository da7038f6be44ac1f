//! The HTTP side: one handler that records every request, applies injected faults, and routes to
//! Confluence (`/wiki`), the OAuth server (`/oauth2/token`), the install key server (`/keys`),
//! Forge's API gateway (`/ex/confluence/{cloudId}/wiki`), GraphQL gateway (`/graphql`) and JWKS
//! (`/.well-known/jwks.json`), Atlassian's personal data reporting API (`/app/report-accounts/`),
//! the stand-in for Connect's `all.js` (`/_sim/connect`), or the admin
//! API (`/_sim`). It never panics, whatever it is sent.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::{GrantInput, Incoming, token_grant};
use crate::confluence::{self, json_response};
use crate::faults::{Endpoint, Fault};
use crate::state::{RequestRecord, Shared};
use crate::webhooks::deliver_all;

/// The answer to an injected status fault.
fn fault_response(fault: &Fault, endpoint: &Endpoint, now: i64) -> Option<Response> {
    let oauth = *endpoint == Endpoint::OAuthToken;
    let body = |status: u16, message: &str| {
        if oauth {
            json!({"error": "temporarily_unavailable", "error_description": message})
        } else if *endpoint == Endpoint::ReportAccounts {
            crate::privacy::fault_body(status, message)
        } else {
            json!({"statusCode": status, "message": message})
        }
    };
    let with_wait = |mut response: Response, wait: Option<u64>| {
        if let Some(seconds) = wait {
            let reset = OffsetDateTime::from_unix_timestamp(
                now.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX)),
            )
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
            let headers = response.headers_mut();
            for (name, value) in [
                ("retry-after", seconds.to_string()),
                ("x-ratelimit-reset", reset),
                ("x-ratelimit-limit", "100".to_owned()),
                ("x-ratelimit-remaining", "0".to_owned()),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        response
    };
    match fault {
        Fault::TooManyRequests { retry_after } => Some(with_wait(
            json_response(429, &body(429, "Rate limit exceeded (simulated)")),
            *retry_after,
        )),
        Fault::ServiceUnavailable { retry_after } => Some(with_wait(
            json_response(503, &body(503, "Service unavailable (simulated)")),
            *retry_after,
        )),
        Fault::ServerError(status) => Some(json_response(
            *status,
            &body(*status, "Server error (simulated)"),
        )),
        Fault::RejectGrant if !oauth => None,
        Fault::Slow(_) | Fault::ExpiredToken | Fault::RejectGrant | Fault::ConcurrentEdit => None,
    }
}

/// The single handler.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    if path.starts_with(crate::connect_js::PREFIX) {
        return crate::connect_js::handle(&shared, &method, &path, &query);
    }
    let endpoint = Endpoint::classify(method.as_str(), &path);
    if endpoint == Endpoint::Admin {
        return crate::admin::handle(&shared, &method, &path, &body).await;
    }
    let mut fault = shared.lock().take_fault(&endpoint, method.as_str(), &path);
    if let Some(Fault::Slow(delay)) = fault {
        tokio::time::sleep(delay).await;
        fault = None;
    }
    let now = shared.now();
    let (response, caller, webhooks) = match fault
        .as_ref()
        .and_then(|f| fault_response(f, &endpoint, now))
    {
        Some(response) if endpoint == Endpoint::ReportAccounts => {
            let response = crate::privacy::faulted(
                &shared,
                &mut shared.lock(),
                Incoming {
                    method: method.as_str(),
                    raw_path: &path,
                    raw_query: &query,
                    headers: &headers,
                },
                &body,
                response,
            );
            (response, None, Vec::new())
        }
        Some(response) => (response, None, Vec::new()),
        None => {
            let mut state = shared.lock();
            match &endpoint {
                Endpoint::OAuthToken => {
                    let site = shared.site_base_url();
                    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
                    let answer = token_grant(
                        &mut state,
                        &GrantInput {
                            method: method.as_str(),
                            content_type,
                            body: &body,
                            now,
                            leeway: shared.config.leeway_seconds,
                            audience: &shared.config.oauth_audience,
                            tenant_base_url: &site,
                            forced_rejection: fault == Some(Fault::RejectGrant),
                        },
                    );
                    let mut response = json_response(answer.status, &answer.body);
                    response
                        .headers_mut()
                        .insert("cache-control", HeaderValue::from_static("no-store"));
                    (response, None, Vec::new())
                }
                Endpoint::InstallKey => {
                    let kid = path.strip_prefix("/keys/").unwrap_or_default();
                    let response = match state.keys.iter().find(|k| k.kid == kid) {
                        Some(key) if method == Method::GET => (
                            StatusCode::OK,
                            [("content-type", "application/x-pem-file")],
                            key.public_pem.clone(),
                        )
                            .into_response(),
                        _ => StatusCode::NOT_FOUND.into_response(),
                    };
                    (response, None, Vec::new())
                }
                Endpoint::Unknown => (StatusCode::NOT_FOUND.into_response(), None, Vec::new()),
                Endpoint::ForgeJwks => (
                    json_response(200, &crate::forge::fit::jwks(&state.forge.keys)),
                    None,
                    Vec::new(),
                ),
                Endpoint::ReportAccounts => {
                    let (response, caller) = crate::privacy::handle(
                        &shared,
                        &mut state,
                        Incoming {
                            method: method.as_str(),
                            raw_path: &path,
                            raw_query: &query,
                            headers: &headers,
                        },
                        &body,
                        fault.as_ref(),
                    );
                    (response, caller, Vec::new())
                }
                Endpoint::ForgeGraphql => {
                    let (response, caller) = crate::forge::graphql::handle(
                        &shared,
                        &mut state,
                        Incoming {
                            method: method.as_str(),
                            raw_path: &path,
                            raw_query: &query,
                            headers: &headers,
                        },
                        &body,
                        fault.as_ref(),
                    );
                    (response, caller, Vec::new())
                }
                Endpoint::ForgeRest(inner) => {
                    let outcome = crate::forge::gateway::handle(
                        &shared,
                        &mut state,
                        Incoming {
                            method: method.as_str(),
                            raw_path: &path,
                            raw_query: &query,
                            headers: &headers,
                        },
                        &body,
                        inner,
                        fault.as_ref(),
                    );
                    (outcome.response, outcome.caller, outcome.webhooks)
                }
                _ => {
                    let outcome = confluence::handle(
                        &shared,
                        &mut state,
                        Incoming {
                            method: method.as_str(),
                            raw_path: &path,
                            raw_query: &query,
                            headers: &headers,
                        },
                        &body,
                        &endpoint,
                        fault.as_ref(),
                    );
                    (outcome.response, outcome.caller, outcome.webhooks)
                }
            }
        }
    };
    shared.lock().requests.push(RequestRecord {
        method: method.as_str().to_owned(),
        path,
        query,
        endpoint,
        caller,
        status: response.status().as_u16(),
    });
    shared.changed.notify_waiters();
    if !webhooks.is_empty() {
        // Confluence sends webhooks after answering, on its own schedule.
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            deliver_all(&shared, webhooks).await;
        });
    }
    response
}
