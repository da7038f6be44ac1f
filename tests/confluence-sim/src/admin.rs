//! The admin API under `/_sim`, for driving a simulator started from the shell:
//!
//! | request | does |
//! |---|---|
//! | `GET /_sim/state` | users, spaces, pages (with restrictions and history), installations |
//! | `POST /_sim/install {"app": "<app base URL>"}` | installs the app from its descriptor |
//! | `POST /_sim/reinstall {"app_key", "new_secret": bool}` | re-installs (rotating the secret if asked) |
//! | `POST /_sim/enable` / `disable` / `uninstall` `{"app_key"}` | the lifecycle |
//! | `POST /_sim/edit {"user", "page", "body", "title"?}` | a person edits a page (fires `page_updated`) |
//! | `POST /_sim/restrict {"user", "page", "read": [..], "update": [..]}` | a person sets restrictions |
//! | `GET /_sim/deliveries` | webhooks sent so far |
//! | `POST /_sim/forge/install {"remote", "connect_app_key"?}` | installs the Forge app (linked to a Connect app if named) |
//! | `POST /_sim/forge/upgrade` / `POST /_sim/forge/scheduled` | `avi:forge:upgraded:app` / one scheduled trigger run |
//! | `GET /_sim/forge/calls` | every call Forge made to the remote |
//!
//! No answer holds a Forge OAuth token.
//!
//! Answers are JSON; errors are `{"error": "..."}` with 400 (bad input) or 409 (refused).

use std::sync::Arc;

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::Simulator;
use crate::confluence::json_response;
use crate::error::SimError;
use crate::state::Shared;

fn text<'a>(body: &'a Value, name: &str) -> Result<&'a str, SimError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| SimError::Invalid(format!("`{name}` (a string) is required")))
}

fn list(body: &Value, name: &str) -> Vec<String> {
    body.get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

async fn run(
    sim: &Simulator,
    method: &Method,
    path: &str,
    body: &Value,
) -> Result<Value, SimError> {
    match (method.as_str(), path) {
        ("GET", "/_sim/state") => Ok(sim.snapshot()),
        ("GET", "/_sim/deliveries") => Ok(to_json(&sim.deliveries())),
        ("POST", "/_sim/install") => Ok(to_json(&sim.install(text(body, "app")?).await?)),
        ("POST", "/_sim/reinstall") => {
            let key = text(body, "app_key")?;
            let installation = if body.get("new_secret").and_then(Value::as_bool) == Some(true) {
                sim.reinstall_with_new_secret(key).await?
            } else {
                sim.reinstall(key).await?
            };
            Ok(to_json(&installation))
        }
        ("POST", "/_sim/enable") => Ok(to_json(&sim.enable(text(body, "app_key")?).await?)),
        ("POST", "/_sim/disable") => Ok(to_json(&sim.disable(text(body, "app_key")?).await?)),
        ("POST", "/_sim/uninstall") => Ok(to_json(&sim.uninstall(text(body, "app_key")?).await?)),
        ("POST", "/_sim/edit") => {
            let user = text(body, "user")?;
            let page = text(body, "page")?;
            let new_body = text(body, "body")?;
            let deliveries = match body.get("title").and_then(Value::as_str) {
                Some(title) => sim.edit_page_titled_as(user, page, title, new_body).await?,
                None => sim.edit_page_as(user, page, new_body).await?,
            };
            Ok(json!({"page": to_json(&sim.page(page)), "deliveries": to_json(&deliveries)}))
        }
        ("POST", "/_sim/restrict") => {
            let user = text(body, "user")?;
            let page = text(body, "page")?;
            let deliveries = sim
                .set_restrictions_as(user, page, list(body, "read"), list(body, "update"))
                .await?;
            Ok(json!({"page": to_json(&sim.page(page)), "deliveries": to_json(&deliveries)}))
        }
        ("POST", "/_sim/forge/install") => {
            let remote = text(body, "remote")?;
            let installation = match body.get("connect_app_key").and_then(Value::as_str) {
                Some(key) => sim.forge_install_linked(key, remote).await?.0,
                None => sim.forge_install(remote).await?,
            };
            Ok(json!({"installation": to_json(&installation.installation),
                      "lifecycle": to_json(&installation.lifecycle)}))
        }
        ("POST", "/_sim/forge/upgrade") => Ok(to_json(&sim.forge_upgrade().await?)),
        ("POST", "/_sim/forge/scheduled") => Ok(to_json(&sim.forge_scheduled_tick().await?)),
        ("GET", "/_sim/forge/calls") => Ok(to_json(&sim.forge_calls())),
        _ => Err(SimError::Invalid(format!(
            "no admin route {method} {path} (see GET /_sim/state)"
        ))),
    }
}

/// Answers one admin request.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response {
    let parsed = if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(body)
    };
    let Ok(parsed) = parsed else {
        return json_response(400, &json!({"error": "the body is not JSON"}));
    };
    let sim = Simulator::handle(Arc::clone(shared));
    match run(&sim, method, path, &parsed).await {
        Ok(value) => json_response(200, &value),
        Err(error @ (SimError::Invalid(_) | SimError::NotLoopback(_))) => {
            json_response(400, &json!({"error": error.to_string()}))
        }
        Err(error) => json_response(409, &json!({"error": error.to_string()})),
    }
}
