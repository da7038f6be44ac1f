//! A stateful double of Confluence Cloud and Atlassian's OAuth server on 127.0.0.1.
//!
//! It checks what the real ones check: the app's HS256 JWT (signature, iss, aud, qsh of the exact
//! request relative to `/wiki`, expiry on the test clock), bearer tokens it issued (expiry on the test
//! clock), the impersonation assertion's claims, page versions (409), and view / edit restrictions
//! (404 / 403). Scripted answers inject 429, 5xx and redirects.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use connect_auth::{Clock, RequestParts};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use understudy_domain::Tenant;

pub const APP_KEY: &str = "understudy-test";
pub const CLIENT_KEY: &str = "client-key-1";
pub const OAUTH_CLIENT_ID: &str = "oauth-client-1";
pub const APP_ACCOUNT: &str = "app-account-1";
pub const ALICE: &str = "557058:alice";
pub const BOB: &str = "557058:bob";

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn new(now: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now)))
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    App,
    User(String),
    Nobody,
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub who: Who,
    pub body: Vec<u8>,
    pub user_agent: String,
    pub content_type: String,
}

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub form: HashMap<String, String>,
    pub accept: String,
    pub claims: Value,
}

#[derive(Debug, Clone, Default)]
pub struct SimPage {
    pub title: String,
    pub body: String,
    pub version: u64,
    pub status: String,
    pub read_users: Vec<String>,
    pub read_groups: Vec<String>,
    pub update_users: Vec<String>,
    /// An app access rule covers this page's space: the app is refused, as itself or as anyone.
    pub app_access_rule: bool,
    pub last_message: String,
}

impl SimPage {
    pub fn new(title: &str, body: &str) -> Self {
        Self {
            title: title.into(),
            body: body.into(),
            version: 1,
            status: "current".into(),
            ..Self::default()
        }
    }
}

pub struct Scripted {
    pub method: Method,
    pub path_contains: String,
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

pub struct SimState {
    pub secret: String,
    pub expires_in: i64,
    pub pages: HashMap<String, SimPage>,
    pub tokens: HashMap<String, (String, i64)>,
    pub token_requests: Vec<TokenRequest>,
    pub invalid_grant_users: HashSet<String>,
    pub requests: Vec<Recorded>,
    pub script: VecDeque<Scripted>,
    /// Each PUT first sees this many concurrent edits by someone else (version bumps).
    pub concurrent_edits: u32,
    pub token_delay: Duration,
    next_token: u32,
}

pub struct Sim {
    pub clock: Arc<TestClock>,
    pub state: Mutex<SimState>,
    pub addr: SocketAddr,
}

pub const START: i64 = 1_900_000_000;

impl Sim {
    pub async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sim = Arc::new(Self {
            clock: TestClock::new(START),
            addr,
            state: Mutex::new(SimState {
                secret: "shared-secret-one-0123456789abcdef".into(),
                expires_in: 900,
                pages: HashMap::new(),
                tokens: HashMap::new(),
                token_requests: Vec::new(),
                invalid_grant_users: HashSet::new(),
                requests: Vec::new(),
                script: VecDeque::new(),
                concurrent_edits: 0,
                token_delay: Duration::ZERO,
                next_token: 0,
            }),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&sim));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        sim
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/wiki", self.addr)
    }

    pub fn oauth_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap()
    }

    pub fn tenant(&self) -> Tenant {
        let secret = self.lock().secret.clone();
        Tenant::from_install_payload(
            json!({
                "key": APP_KEY,
                "clientKey": CLIENT_KEY,
                "sharedSecret": secret,
                "baseUrl": self.base_url(),
                "productType": "confluence",
                "oauthClientId": OAUTH_CLIENT_ID,
            }),
            START,
        )
        .unwrap()
    }

    pub fn add_page(&self, id: &str, page: SimPage) {
        self.lock().pages.insert(id.into(), page);
    }

    pub fn page(&self, id: &str) -> SimPage {
        self.lock().pages.get(id).cloned().unwrap()
    }

    pub fn script(
        &self,
        method: Method,
        path_contains: &str,
        status: u16,
        headers: &[(&'static str, &str)],
    ) {
        self.lock().script.push_back(Scripted {
            method,
            path_contains: path_contains.into(),
            status,
            headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn count(&self, method: Method, path_contains: &str) -> usize {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }

    /// A re-install with a new secret: tokens issued before are no longer honoured.
    pub fn rotate_secret(&self, secret: &str) {
        let mut state = self.lock();
        state.secret = secret.into();
        state.tokens.clear();
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn decode(token: &str, secret: &str) -> Option<Value> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()).ok()?,
        &validation,
    )
    .ok()
    .map(|d| d.claims)
}

fn authenticate(
    sim: &Sim,
    state: &SimState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Who {
    let now = sim.clock.now_unix();
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Who::Nobody;
    };
    if let Some(token) = auth.strip_prefix("JWT ") {
        let Some(claims) = decode(token, &state.secret) else {
            return Who::Nobody;
        };
        let qsh = RequestParts::new(method.as_str(), uri.path(), uri.query().unwrap_or(""))
            .with_base_path("/wiki")
            .qsh();
        let ok = claims["iss"] == APP_KEY
            && claims["aud"] == json!([CLIENT_KEY])
            && claims["qsh"] == qsh.as_str()
            && claims["exp"].as_i64().is_some_and(|e| e > now)
            && claims["iat"].as_i64().is_some_and(|i| i <= now);
        return if ok { Who::App } else { Who::Nobody };
    }
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return match state.tokens.get(token) {
            Some((account, expires)) if *expires > now => Who::User(account.clone()),
            _ => Who::Nobody,
        };
    }
    Who::Nobody
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/oauth2/token" {
        return token_endpoint(&sim, &method, &headers, &body).await;
    }
    let mut state = sim.lock();
    let who = authenticate(&sim, &state, &method, &uri, &headers);
    state.requests.push(Recorded {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        who: who.clone(),
        body: body.to_vec(),
        user_agent: header(&headers, "user-agent"),
        content_type: header(&headers, "content-type"),
    });
    if let Some(pos) = state
        .script
        .iter()
        .position(|s| s.method == method && uri.path().contains(&s.path_contains))
    {
        let scripted = state.script.remove(pos).unwrap();
        let mut response = reply(scripted.status, json!({"message": "scripted"}));
        for (name, value) in scripted.headers {
            response.headers_mut().insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        return response;
    }
    if who == Who::Nobody {
        return reply(401, json!({"message": "unauthorized"}));
    }
    // Confluence answers 403 to a GET with a body (connect-protocol.md §5).
    if method == Method::GET && !body.is_empty() {
        return reply(403, json!({"message": "GET with a body"}));
    }
    let actor = match &who {
        Who::App => APP_ACCOUNT.to_owned(),
        Who::User(a) => a.clone(),
        Who::Nobody => unreachable!(),
    };
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["wiki", "rest", "api", "user", "current"]) => {
            let kind = if who == Who::App { "app" } else { "atlassian" };
            reply(
                200,
                json!({"accountId": actor, "accountType": kind, "displayName": "x"}),
            )
        }
        (m, ["wiki", "api", "v2", "pages", id]) => {
            let state = &mut *state;
            let Some(page) = state.pages.get_mut(*id) else {
                return reply(404, json!({}));
            };
            if !can_view(page, &actor) {
                return reply(404, json!({"message": "not found"}));
            }
            if m == Method::GET {
                if query.get("body-format").map(String::as_str) != Some("storage") {
                    return reply(400, json!({"message": "body-format"}));
                }
                return reply(200, page_json(id, page));
            }
            if m != Method::PUT {
                return reply(405, json!({}));
            }
            if !can_edit(page, &actor) {
                return reply(403, json!({"message": "cannot edit"}));
            }
            if state.concurrent_edits > 0 {
                state.concurrent_edits -= 1;
                page.version += 1;
            }
            let update: Value = serde_json::from_slice(&body).unwrap();
            let asked = update["version"]["number"].as_u64().unwrap();
            if asked != page.version + 1 {
                return reply(
                    409,
                    json!({"message": format!("Version must be incremented on update. Current version is: {}", page.version)}),
                );
            }
            assert_eq!(update["id"], *id);
            assert_eq!(update["status"], "current");
            assert_eq!(update["body"]["representation"], "storage");
            page.title = update["title"].as_str().unwrap().to_owned();
            page.body = update["body"]["value"].as_str().unwrap().to_owned();
            page.version = asked;
            page.last_message = update["version"]["message"].as_str().unwrap().to_owned();
            reply(200, page_json(id, page))
        }
        (
            Method::GET,
            [
                "wiki",
                "rest",
                "api",
                "content",
                id,
                "restriction",
                "byOperation",
            ],
        ) => {
            let Some(page) = state.pages.get(*id) else {
                return reply(404, json!({}));
            };
            if !can_view(page, &actor) {
                return reply(404, json!({}));
            }
            let list = |users: &[String], groups: &[String]| {
                json!({
                    "user": {"results": users.iter().map(|u| json!({"accountId": u, "type": "known"})).collect::<Vec<_>>(), "size": users.len()},
                    "group": {"results": groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(), "size": groups.len()},
                })
            };
            reply(
                200,
                json!({
                    "read": {"operation": "read", "restrictions": list(&page.read_users, &page.read_groups)},
                    "update": {"operation": "update", "restrictions": list(&page.update_users, &[])},
                }),
            )
        }
        (
            m,
            [
                "wiki",
                "rest",
                "api",
                "content",
                id,
                "restriction",
                "byOperation",
                op,
                "user",
            ],
        ) => {
            let Some(page) = state.pages.get_mut(*id) else {
                return reply(404, json!({}));
            };
            if !can_view(page, &actor) {
                return reply(404, json!({}));
            }
            // Changing restrictions needs edit permission on the page.
            if !can_edit(page, &actor) {
                return reply(403, json!({}));
            }
            let Some(target) = query.get("accountId").cloned() else {
                return reply(400, json!({}));
            };
            let list = match *op {
                "read" => &mut page.read_users,
                "update" => &mut page.update_users,
                _ => return reply(400, json!({})),
            };
            if m == Method::PUT {
                if !list.contains(&target) {
                    list.push(target);
                }
            } else if m == Method::DELETE {
                list.retain(|u| u != &target);
            }
            StatusCode::OK.into_response()
        }
        _ => reply(404, json!({"message": "no such route"})),
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn can_view(page: &SimPage, actor: &str) -> bool {
    !page.app_access_rule
        && (page.read_users.is_empty() && page.read_groups.is_empty()
            || page.read_users.iter().any(|u| u == actor))
}

fn can_edit(page: &SimPage, actor: &str) -> bool {
    page.update_users.is_empty() || page.update_users.iter().any(|u| u == actor)
}

fn page_json(id: &str, page: &SimPage) -> Value {
    json!({
        "id": id,
        "status": page.status,
        "title": page.title,
        "spaceId": "98765",
        "version": {"number": page.version, "message": page.last_message, "authorId": "x"},
        "body": {"storage": {"value": page.body, "representation": "storage"}},
    })
}

async fn token_endpoint(sim: &Sim, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    let delay = sim.lock().token_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut state = sim.lock();
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let claims = form
        .get("assertion")
        .and_then(|a| decode(a, &state.secret))
        .unwrap_or(Value::Null);
    state.token_requests.push(TokenRequest {
        form: form.clone(),
        accept: header(headers, "accept"),
        claims: claims.clone(),
    });
    if let Some(pos) = state
        .script
        .iter()
        .position(|s| s.method == Method::POST && s.path_contains == "/oauth2/token")
    {
        let scripted = state.script.remove(pos).unwrap();
        return reply(scripted.status, json!({"error": "temporarily_unavailable"}));
    }
    let now = sim.clock.now_unix();
    let base_url = sim.base_url();
    let valid = *method == Method::POST
        && header(headers, "content-type") == "application/x-www-form-urlencoded"
        && form.get("grant_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && claims["iss"] == format!("urn:atlassian:connect:clientid:{OAUTH_CLIENT_ID}")
        && claims["aud"] == "https://oauth-2-authorization-server.services.atlassian.com"
        && claims["tnt"] == base_url.as_str()
        && claims["iat"].as_i64() == Some(now)
        && claims["exp"].as_i64() == Some(now + 60);
    if !valid {
        return reply(401, json!({"error": "invalid_client"}));
    }
    let account = claims["sub"]
        .as_str()
        .and_then(|s| s.strip_prefix("urn:atlassian:connect:useraccountid:"))
        .unwrap()
        .to_owned();
    if state.invalid_grant_users.contains(&account) {
        return reply(
            400,
            json!({"error": "invalid_grant", "error_description": "user gone"}),
        );
    }
    state.next_token += 1;
    let token = format!("access-token-{}", state.next_token);
    let expires_in = state.expires_in;
    state
        .tokens
        .insert(token.clone(), (account, now + expires_in));
    reply(
        200,
        json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}),
    )
}
