//! A small double of Confluence Cloud and Atlassian's OAuth server on 127.0.0.1, for what only a
//! test that sees the wire can check: the app JWT's claims and its qsh of the exact request
//! relative to `/wiki` (checked here, expiry on the test clock), the `User-Agent` and content type,
//! no body on a GET, the token exchange's form, `Accept` header and assertion claims, bearer
//! tokens it issued, and scripted answers the simulator does not give (`X-RateLimit-Reset` alone,
//! redirects).
//!
//! Everything else the client does (retries, token caching and refresh, restrictions, conflicts,
//! rotated secrets) runs against the Confluence simulator in tests/confluence-sim/tests/client.rs,
//! and the edit engine's policy in memory in shared/core/tests/engine.rs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use connect_auth::{Clock, ManualClock, RequestParts};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use test_support::APP_KEY;
use test_support::install::OAUTH_CLIENT_ID;
use understudy_domain::Tenant;

pub const CLIENT_KEY: &str = "client-key-1";
pub const ALICE: &str = "557058:alice";
/// The test clock's start.
pub const START: i64 = 1_900_000_000;
const SECRET: &str = "shared-secret-one-0123456789abcdef";

/// Who a request was accepted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    App,
    User(String),
    Nobody,
}

/// A request to Confluence, as it arrived.
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

/// A request to the OAuth server's token endpoint, as it arrived.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub form: HashMap<String, String>,
    pub accept: String,
    pub claims: Value,
}

/// A page: who may view it (nobody listed: everyone), and what the last save said.
#[derive(Debug, Clone, Default)]
pub struct DoublePage {
    pub title: String,
    pub body: String,
    pub version: u64,
    pub viewers: Vec<String>,
    pub last_message: String,
}

impl DoublePage {
    pub fn new(title: &str, body: &str) -> Self {
        Self {
            title: title.into(),
            body: body.into(),
            version: 1,
            ..Self::default()
        }
    }
}

struct Scripted {
    method: Method,
    path_contains: String,
    status: u16,
    headers: Vec<(&'static str, String)>,
}

#[derive(Default)]
struct DoubleState {
    pages: HashMap<String, DoublePage>,
    /// Access token → accountId.
    tokens: HashMap<String, String>,
    token_requests: Vec<TokenRequest>,
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
}

pub struct Double {
    pub clock: Arc<ManualClock>,
    state: Mutex<DoubleState>,
    addr: SocketAddr,
}

impl Double {
    pub async fn start() -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let double = Arc::new(Self {
            clock: ManualClock::at(START),
            addr: listener.local_addr().unwrap(),
            state: Mutex::new(DoubleState::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&double));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        double
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/wiki", self.addr)
    }

    pub fn oauth_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DoubleState> {
        self.state.lock().unwrap()
    }

    /// The tenant this site installed the app as.
    pub fn tenant(&self) -> Tenant {
        test_support::tenant(CLIENT_KEY, SECRET, &self.base_url(), START)
    }

    pub fn add_page(&self, id: &str, page: DoublePage) {
        self.lock().pages.insert(id.into(), page);
    }

    pub fn page(&self, id: &str) -> DoublePage {
        self.lock().pages.get(id).cloned().unwrap()
    }

    /// Answers the next request to `method` on a path containing `path_contains` with `status`
    /// and `headers`, whoever sends it.
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

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.lock().token_requests.clone()
    }
}

fn reply(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn decode(token: &str) -> Option<Value> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let key = DecodingKey::from_secret(SECRET.as_bytes()).ok()?;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .ok()
        .map(|d| d.claims)
}

fn authenticate(
    double: &Double,
    state: &DoubleState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Who {
    let now = double.clock.now_unix();
    let auth = header(headers, "authorization");
    if let Some(token) = auth.strip_prefix("JWT ") {
        let Some(claims) = decode(token) else {
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
        return state
            .tokens
            .get(token)
            .map_or(Who::Nobody, |account| Who::User(account.clone()));
    }
    Who::Nobody
}

async fn handle(
    State(double): State<Arc<Double>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path() == "/oauth2/token" {
        return token_endpoint(&double, &method, &headers, &body);
    }
    let mut state = double.lock();
    let who = authenticate(&double, &state, &method, &uri, &headers);
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
    let actor = match &who {
        Who::App => "app".to_owned(),
        Who::User(account) => account.clone(),
        Who::Nobody => return reply(401, json!({"message": "unauthorized"})),
    };
    // Confluence answers 403 to a GET with a body (docs/protocol.md §5).
    if method == Method::GET && !body.is_empty() {
        return reply(403, json!({"message": "GET with a body"}));
    }
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let ["wiki", "api", "v2", "pages", id] = segments.as_slice() else {
        return reply(404, json!({"message": "no such route"}));
    };
    let Some(page) = state.pages.get_mut(*id) else {
        return reply(404, json!({}));
    };
    if !page.viewers.is_empty() && !page.viewers.contains(&actor) {
        return reply(404, json!({"message": "not found"}));
    }
    if method == Method::GET {
        if uri.query() != Some("body-format=storage") {
            return reply(400, json!({"message": "body-format"}));
        }
        return reply(200, page_json(id, page));
    }
    if method != Method::PUT {
        return reply(405, json!({}));
    }
    let update: Value = serde_json::from_slice(&body).unwrap();
    let asked = update["version"]["number"].as_u64().unwrap();
    if asked != page.version + 1 {
        return reply(409, json!({"message": "stale version"}));
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

fn page_json(id: &str, page: &DoublePage) -> Value {
    json!({
        "id": id,
        "status": "current",
        "title": page.title,
        "spaceId": "98765",
        "version": {"number": page.version, "message": page.last_message, "authorId": "x"},
        "body": {"storage": {"value": page.body, "representation": "storage"}},
    })
}

/// The JWT-bearer grant, with every claim of the assertion checked (docs/protocol.md §6).
fn token_endpoint(double: &Double, method: &Method, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut state = double.lock();
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let claims = form
        .get("assertion")
        .and_then(|a| decode(a))
        .unwrap_or(Value::Null);
    state.token_requests.push(TokenRequest {
        form: form.clone(),
        accept: header(headers, "accept"),
        claims: claims.clone(),
    });
    let now = double.clock.now_unix();
    let valid = *method == Method::POST
        && header(headers, "content-type") == "application/x-www-form-urlencoded"
        && form.get("grant_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && claims["iss"] == format!("urn:atlassian:connect:clientid:{OAUTH_CLIENT_ID}")
        && claims["aud"] == "https://oauth-2-authorization-server.services.atlassian.com"
        && claims["tnt"] == double.base_url().as_str()
        && claims["iat"].as_i64() == Some(now)
        && claims["exp"].as_i64() == Some(now + 60);
    let account = claims["sub"]
        .as_str()
        .and_then(|s| s.strip_prefix("urn:atlassian:connect:useraccountid:"));
    let (true, Some(account)) = (valid, account) else {
        return reply(401, json!({"error": "invalid_client"}));
    };
    let token = format!("access-token-{}", state.tokens.len() + 1);
    state.tokens.insert(token.clone(), account.to_owned());
    reply(
        200,
        json!({"access_token": token, "expires_in": 900, "token_type": "Bearer"}),
    )
}
