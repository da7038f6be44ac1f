//! Forge's HTTP calls to the remote, recorded, and its delivery rules for events, lifecycle events
//! and scheduled triggers (shared/reference/forge-remote.md §5): POST, 5 s timeout, a redirect is a
//! failure (redirects are never followed), and after a timeout, a 5xx, a 401 or a failed connection
//! up to 4 retries, each after a delay, with a fresh FIT and system token and the body plus
//! `retryContext: {attempt, retryReason, retryData}`. A 2xx or any other 4xx ends a delivery.
//!
//! The first attempt is awaited by whoever causes it (so a test sees it when the call returns);
//! retries run in the background, as Forge's queue would.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use crate::auth::random_hex;
use crate::forge::fit::{self, Invocation};
use crate::forge::{
    EVENTS_ENDPOINT_KEY, EVENTS_PATH, EVENTS_TRIGGER_KEY, ForgeCall, ForgeCallKind, ForgeTokenKind,
    forge_event_for,
};
use crate::model::{Page, Subject};
use crate::state::{Shared, State};

/// A delivery to make through one of the remote's `endpoint` modules.
#[derive(Debug, Clone)]
pub(crate) struct ForgeOutgoing {
    pub kind: ForgeCallKind,
    pub event_type: Option<String>,
    /// The path under the remote's base URL.
    pub path: String,
    /// The `endpoint` module's key (`app.module.key` of the FIT).
    pub module_key: String,
    pub body: Value,
}

/// One HTTP request from Forge to a remote.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub kind: ForgeCallKind,
    pub event_type: Option<&'a str>,
    pub delivery_id: u64,
    pub attempt: u32,
    pub method: &'a str,
    pub url: &'a str,
    pub fit: Option<&'a str>,
    pub system_token: Option<&'a str>,
    pub user_token: Option<&'a str>,
    pub body: Option<&'a Value>,
    pub timeout: Duration,
}

/// Sends one request and records it. Returns the record, and whether it timed out.
pub(crate) async fn send(shared: &Shared, request: Request<'_>) -> (ForgeCall, bool) {
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut headers = BTreeMap::new();
    // Forge sends both on every call (toolsplus refuses requests without them).
    headers.insert("x-b3-traceid".to_owned(), random_hex(32));
    headers.insert("x-b3-spanid".to_owned(), random_hex(16));
    headers.insert("user-agent".to_owned(), "Forge (confluence-sim)".to_owned());
    if request.body.is_some() {
        headers.insert("content-type".to_owned(), "application/json".to_owned());
    }
    let mut builder = shared
        .http
        .request(method.clone(), request.url)
        .timeout(request.timeout);
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    if let Some(fit) = request.fit {
        builder = builder.header("authorization", format!("Bearer {fit}"));
    }
    if let Some(token) = request.system_token {
        builder = builder.header("x-forge-oauth-system", token);
    }
    if let Some(token) = request.user_token {
        builder = builder.header("x-forge-oauth-user", token);
    }
    if let Some(body) = request.body {
        builder = builder.body(body.to_string());
    }
    let (status, error, timed_out, response) = match builder.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let bytes = answer.bytes().await.unwrap_or_default();
            (
                Some(status),
                None,
                false,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        }
        Err(e) if e.is_timeout() => (None, Some("timeout".to_owned()), true, Value::Null),
        Err(e) => (None, Some(e.without_url().to_string()), false, Value::Null),
    };
    let call = ForgeCall {
        id: 0,
        delivery_id: request.delivery_id,
        attempt: request.attempt,
        kind: request.kind,
        event_type: request.event_type.map(str::to_owned),
        method: method.to_string(),
        url: request.url.to_owned(),
        path: Url::parse(request.url)
            .map(|u| u.path().to_owned())
            .unwrap_or_default(),
        headers,
        body: request.body.cloned().unwrap_or(Value::Null),
        fit: request.fit.map(str::to_owned),
        jti: request.fit.and_then(fit::peek_jti),
        sent_system_token: request.system_token.is_some(),
        sent_user_token: request.user_token.is_some(),
        status,
        error,
        response,
    };
    let call = shared.lock().forge.record(call);
    shared.changed.notify_waiters();
    (call, timed_out)
}

/// Why a delivery attempt failed in a way Forge retries, as `(retryReason, retryData)`; `None` when
/// the delivery is over (2xx, or a 4xx other than 401). The reason names are the simulator's own
/// (*unverified*: a remote should not depend on them).
fn retry_reason(call: &ForgeCall, timed_out: bool) -> Option<(&'static str, Value)> {
    match call.status {
        None if timed_out => Some(("TIMEOUT", json!({ "error": "timeout" }))),
        None => Some((
            "CONNECTION_FAILED",
            json!({ "error": call.error.clone().unwrap_or_default() }),
        )),
        Some(status @ 300..=399) => Some(("REDIRECT", json!({ "statusCode": status }))),
        Some(status @ 500..=599) => Some(("SERVER_ERROR", json!({ "statusCode": status }))),
        Some(401) => Some((
            "INVALID_FORGE_INVOCATION_TOKEN",
            json!({ "statusCode": 401 }),
        )),
        Some(_) => None,
    }
}

/// The body of a retry: the original body plus `retryContext`. `attempt` counts deliveries, so the
/// first retry says 2 and the last 5.
fn with_retry_context(body: &Value, attempt: u32, reason: &(&str, Value)) -> Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert(
            "retryContext".into(),
            json!({ "attempt": attempt, "retryReason": reason.0, "retryData": reason.1 }),
        );
    }
    body
}

/// What the first attempt of a delivery did.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    pub call: ForgeCall,
    /// The system token it carried.
    pub system_token: String,
}

struct Attempt {
    delivered: Delivered,
    retry: Option<(&'static str, Value)>,
}

/// One attempt: a fresh FIT and system token for the current installation, then the POST.
/// `None` when no Forge app is installed (nothing is sent).
async fn attempt(
    shared: &Shared,
    outgoing: &ForgeOutgoing,
    delivery_id: u64,
    number: u32,
    body: &Value,
) -> Option<Attempt> {
    let (url, fit, system_token) = {
        let now = shared.now();
        let mut state = shared.lock();
        let installation = state.forge.current()?.clone();
        let system_token = state.forge.mint(
            ForgeTokenKind::System,
            &installation.app_account_id,
            now,
            shared.config.forge.system_token_lifetime_seconds,
        )?;
        let claims = fit::claims(
            &state.forge,
            &installation,
            now,
            &Invocation::endpoint(&outgoing.module_key),
        );
        let fit = match fit::sign(&state.forge, &claims) {
            Ok(fit) => fit,
            Err(error) => {
                tracing::error!(%error, "confluence-sim could not sign a FIT");
                return None;
            }
        };
        (
            format!("{}{}", installation.remote_base_url, outgoing.path),
            fit,
            system_token,
        )
    };
    let (call, timed_out) = send(
        shared,
        Request {
            kind: outgoing.kind,
            event_type: outgoing.event_type.as_deref(),
            delivery_id,
            attempt: number,
            method: "POST",
            url: &url,
            fit: Some(&fit),
            system_token: Some(&system_token),
            user_token: None,
            body: Some(body),
            timeout: shared.config.forge.event_timeout,
        },
    )
    .await;
    let retry = retry_reason(&call, timed_out);
    Some(Attempt {
        delivered: Delivered { call, system_token },
        retry,
    })
}

/// Delivers with Forge's rules: the first attempt now, the retries in the background.
pub(crate) async fn deliver(shared: &Arc<Shared>, outgoing: ForgeOutgoing) -> Option<Delivered> {
    let delivery_id = {
        let mut state = shared.lock();
        let id = state.forge.next_delivery;
        state.forge.next_delivery += 1;
        id
    };
    let first = attempt(shared, &outgoing, delivery_id, 1, &outgoing.body).await?;
    if let Some(reason) = first.retry
        && shared.config.forge.max_retries > 0
    {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let mut reason = reason;
            let last = shared.config.forge.max_retries.saturating_add(1);
            for number in 2..=last {
                tokio::time::sleep(shared.config.forge.retry_delay).await;
                let body = with_retry_context(&outgoing.body, number, &reason);
                let Some(next) = attempt(&shared, &outgoing, delivery_id, number, &body).await
                else {
                    return;
                };
                match next.retry {
                    Some(again) => reason = again,
                    None => return,
                }
            }
        });
    }
    Some(first.delivered)
}

/// The event Forge sends about a page (`avi:confluence:*:page`).
pub(crate) fn page_event_body(
    event_type: &str,
    page: &Page,
    actor: &str,
    self_generated: bool,
) -> Value {
    let mut event = json!({
        "eventType": event_type,
        "atlassianId": actor,
        "content": {
            "id": page.id_string(),
            "type": "page",
            "status": page.status,
            "title": page.title,
            "space": {"id": page.space_id, "key": page.space_key},
            "version": {"number": page.version},
        },
        "selfGenerated": self_generated,
    });
    if event_type == "avi:confluence:updated:page"
        && let Some(object) = event.as_object_mut()
    {
        object.insert("updateTrigger".into(), Value::from("edit_page"));
    }
    event
}

/// The delivery of a page event to the installed Forge app, bare or wrapped as configured.
pub(crate) fn event_outgoing(
    state: &State,
    event_type: &str,
    event: Value,
) -> Option<ForgeOutgoing> {
    let installation = state.forge.current()?;
    let body = if state.forge.wrap_events {
        json!({
            "payload": event,
            "context": {"cloudId": installation.cloud_id, "moduleKey": EVENTS_TRIGGER_KEY},
        })
    } else {
        event
    };
    Some(ForgeOutgoing {
        kind: ForgeCallKind::Event,
        event_type: Some(event_type.to_owned()),
        path: EVENTS_PATH.to_owned(),
        module_key: EVENTS_ENDPOINT_KEY.to_owned(),
        body,
    })
}

/// The Forge event that goes with a Connect webhook about a page, if a Forge app is installed.
///
/// Pages the Forge app user may not view get no event unless `force`, exactly as the simulator
/// treats Connect webhooks (`SimConfig::webhooks_require_app_view`): ECO-961 reports that Forge may
/// send no events for such pages, and whether Connect behaves the same is *unverified*; one switch
/// decides both.
pub(crate) fn page_event(
    state: &State,
    connect_event: &str,
    page: &Page,
    actor: &str,
    self_generated: bool,
    force: bool,
) -> Option<ForgeOutgoing> {
    let event_type = forge_event_for(connect_event)?;
    let installation = state.forge.current()?;
    if state.webhooks_require_app_view && !force {
        let app_sees = state.content.can_view(
            page,
            Subject {
                account_id: &installation.app_account_id,
                via_app: Some(&installation.app_id),
            },
        );
        if !app_sees {
            return None;
        }
    }
    event_outgoing(
        state,
        event_type,
        page_event_body(event_type, page, actor, self_generated),
    )
}
