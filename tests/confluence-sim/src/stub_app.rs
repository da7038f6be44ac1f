//! A stand-in Connect app for tests that need something to install: it serves a descriptor like the
//! project's (lifecycle routes, one webhook URL per event), answers every POST with a scripted status
//! (204 by default), and records what it receives. It verifies nothing: tests check the recorded
//! tokens themselves (with connect-auth, or with atlassian-jwt in the interop suite).
//!
//! It doubles as a Forge Remote: the Forge platform posts to `/forge/lifecycle`, `/forge/events`
//! and `/forge/scheduled` under its base URL, and UI invocations to any path. Answers can be
//! scripted per path: a status, a sequence of statuses (500 then 204), a JSON body, a delay (to
//! make Forge time out); a 3xx answer carries a `Location`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::SimError;

/// The stub's app key.
pub const STUB_APP_KEY: &str = "understudy-test";

/// One request the stub received.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The raw path (with the app's base path).
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// Every header, by lower-case name (the last value of a repeated one).
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` if it was not JSON).
    pub body: Value,
}

impl Received {
    /// The token of `Authorization: JWT <token>`.
    pub fn token(&self) -> Option<&str> {
        self.authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("JWT "))
    }

    /// The token of `Authorization: Bearer <token>` (a Forge Invocation Token).
    pub fn bearer(&self) -> Option<&str> {
        self.authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
    }

    /// A header by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// How the stub answers at one path.
#[derive(Debug, Clone, Default)]
struct Script {
    /// Statuses used one per request before `status`.
    queue: VecDeque<u16>,
    status: Option<u16>,
    body: Option<Value>,
    delay: Option<Duration>,
}

#[derive(Debug, Default)]
struct StubState {
    descriptor: Value,
    received: Vec<Received>,
    scripts: HashMap<String, Script>,
}

/// A running stub app. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StubApp {
    addr: SocketAddr,
    base_path: String,
    state: Arc<Mutex<StubState>>,
}

/// A descriptor shaped like the project's, for an app at `base_url` with `scopes`.
pub fn stub_descriptor(base_url: &str, scopes: &[&str]) -> Value {
    json!({
        "key": STUB_APP_KEY,
        "name": "Understudy (stub)",
        "baseUrl": base_url,
        "authentication": {"type": "jwt"},
        "apiVersion": 1,
        "apiMigrations": {"signed-install": true, "context-qsh": true, "gdpr": true},
        "scopes": scopes,
        "lifecycle": {"installed": "/installed", "uninstalled": "/uninstalled",
                      "enabled": "/enabled", "disabled": "/disabled"},
        "modules": {"webhooks": [
            {"event": "page_created", "url": "/webhooks/page_created"},
            {"event": "page_updated", "url": "/webhooks/page_updated"},
            {"event": "content_permissions_updated",
             "url": "/webhooks/content_permissions_updated?v=1"}
        ]}
    })
}

async fn handle(
    State(app): State<StubApp>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, answer, delay) = {
        let mut state = app.lock();
        let relative = uri
            .path()
            .strip_prefix(app.base_path.as_str())
            .unwrap_or(uri.path())
            .to_owned();
        if method == Method::GET && relative == "/atlassian-connect.json" {
            return axum::Json(state.descriptor.clone()).into_response();
        }
        state.received.push(Received {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers: headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        let script = state.scripts.entry(relative).or_default();
        let status = script.queue.pop_front().or(script.status).unwrap_or(204);
        (status, script.body.clone(), script.delay)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match answer {
        Some(body) if status != StatusCode::NO_CONTENT => {
            (status, axum::Json(body)).into_response()
        }
        _ => status.into_response(),
    };
    if status.is_redirection() {
        let location = format!("{}/moved", app.base_url());
        if let Ok(value) = axum::http::HeaderValue::from_str(&location) {
            response.headers_mut().insert("location", value);
        }
    }
    response
}

impl StubApp {
    /// Starts a stub at `http://127.0.0.1:PORT<base_path>` (`base_path` empty or like `/app`).
    pub async fn start(base_path: &str, scopes: &[&str]) -> Result<Self, SimError> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|source| SimError::Bind { port: 0, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { port: 0, source })?;
        let app = Self {
            addr,
            base_path: base_path.trim_end_matches('/').to_owned(),
            state: Arc::new(Mutex::new(StubState::default())),
        };
        app.lock().descriptor = stub_descriptor(&app.base_url(), scopes);
        let router = axum::Router::new().fallback(handle).with_state(app.clone());
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "stub app stopped");
            }
        });
        Ok(app)
    }

    fn lock(&self) -> MutexGuard<'_, StubState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT<base_path>`.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.base_path)
    }

    /// The base path (`""` or `/app`), to strip for qsh checks.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Changes the descriptor it serves.
    pub fn edit_descriptor(&self, edit: impl FnOnce(&mut Value)) {
        edit(&mut self.lock().descriptor);
    }

    /// Everything received so far (the descriptor GETs excepted).
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// What was received at a path relative to the base path (`/installed`).
    pub fn received_at(&self, relative: &str) -> Vec<Received> {
        let path = format!("{}{relative}", self.base_path);
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn script(&self, relative: &str, edit: impl FnOnce(&mut Script)) {
        edit(self.lock().scripts.entry(relative.to_owned()).or_default());
    }

    /// Answers `status` to requests at a relative path from now on.
    pub fn answer(&self, relative: &str, status: u16) {
        self.script(relative, |s| s.status = Some(status));
    }

    /// Answers the next requests at a relative path with these statuses, one each, then as before
    /// (`&[500, 204]`: a failure, then success).
    pub fn answer_sequence(&self, relative: &str, statuses: &[u16]) {
        self.script(relative, |s| s.queue.extend(statuses.iter().copied()));
    }

    /// Answers `status` with a JSON body at a relative path from now on (for UI invocations).
    pub fn answer_json(&self, relative: &str, status: u16, body: Value) {
        self.script(relative, |s| {
            s.status = Some(status);
            s.body = Some(body);
        });
    }

    /// Waits `delay` before answering at a relative path from now on (`None`: answer at once).
    pub fn answer_after(&self, relative: &str, delay: Option<Duration>) {
        self.script(relative, |s| s.delay = delay);
    }
}
