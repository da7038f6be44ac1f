//! Test helpers: the library's stub app (serves a descriptor, records lifecycle callbacks and
//! webhooks), a simulator with it installed, and calls to the simulator as the app or as a user.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    unused_imports
)]

use confluence_sim::{Installation, SimConfig, Simulator};
use connect_auth::{RequestParts, SecretString, mint_app_token};
use serde_json::{Value, json};
use url::Url;

pub use confluence_sim::stub_app::{Received, STUB_APP_KEY as APP_KEY, StubApp as FakeApp};

/// Checks on what the stub app received.
pub trait ReceivedExt {
    /// The JWT of `Authorization: JWT <token>`.
    fn jwt(&self) -> &str;
    /// The request, relative to the app's base path, for qsh checks.
    fn parts<'a>(&'a self, base_path: &'a str) -> RequestParts<'a>;
}

impl ReceivedExt for Received {
    fn jwt(&self) -> &str {
        self.token().expect("a JWT")
    }

    fn parts<'a>(&'a self, base_path: &'a str) -> RequestParts<'a> {
        RequestParts::new(&self.method, &self.path, &self.query).with_base_path(base_path)
    }
}

/// A stub app at `http://127.0.0.1:PORT<base_path>`.
pub async fn fake_app(base_path: &str, scopes: &[&str]) -> FakeApp {
    FakeApp::start(base_path, scopes).await.unwrap()
}

/// A simulator with the demo site and the fake app installed.
pub async fn installed(
    scopes: &[&str],
) -> (Simulator, confluence_sim::Demo, FakeApp, Installation) {
    installed_with(SimConfig::default(), scopes).await
}

pub async fn installed_with(
    config: SimConfig,
    scopes: &[&str],
) -> (Simulator, confluence_sim::Demo, FakeApp, Installation) {
    let sim = Simulator::start(config).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("", scopes).await;
    let installation = sim.install(&app.base_url()).await.unwrap();
    (sim, demo, app, installation)
}

pub const ALL_SCOPES: &[&str] = &["READ", "WRITE", "ACT_AS_USER"];

/// Calls the simulator as the app would, with a token minted by connect-auth.
pub async fn call_as_app(
    sim: &Simulator,
    installation: &Installation,
    method: &str,
    path_and_query: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let url = Url::parse(&format!("{}{path_and_query}", sim.site_base_url())).unwrap();
    let token = mint_app_token(
        &installation.app_key,
        &installation.client_key,
        &SecretString::from(installation.shared_secret.clone()),
        method,
        &url,
        &Url::parse(&sim.site_base_url()).unwrap(),
        sim.now(),
    )
    .unwrap();
    send(method, url, &format!("JWT {token}"), body).await
}

/// Calls the simulator with a bearer token.
pub async fn call_as_bearer(
    sim: &Simulator,
    token: &str,
    method: &str,
    path_and_query: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let url = Url::parse(&format!("{}{path_and_query}", sim.site_base_url())).unwrap();
    send(method, url, &format!("Bearer {token}"), body).await
}

pub async fn send(
    method: &str,
    url: Url,
    authorization: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .header("authorization", authorization);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// An impersonation assertion with claims overridden by `edit`.
pub fn assertion(
    sim: &Simulator,
    installation: &Installation,
    account_id: &str,
    edit: impl FnOnce(&mut Value),
) -> String {
    let now = sim.now();
    let mut claims = json!({
        "iss": format!("urn:atlassian:connect:clientid:{}", installation.oauth_client_id.as_deref().unwrap()),
        "sub": format!("urn:atlassian:connect:useraccountid:{account_id}"),
        "tnt": sim.site_base_url(),
        "aud": "https://oauth-2-authorization-server.services.atlassian.com",
        "iat": now,
        "exp": now + 60,
    });
    edit(&mut claims);
    connect_auth::sign_hs256(
        &claims,
        &SecretString::from(installation.shared_secret.clone()),
    )
    .unwrap()
}

/// Posts a JWT-bearer grant; returns status and body.
pub async fn exchange(sim: &Simulator, assertion: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sim.oauth_token_url())
        .header("accept", "application/json")
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A user access token for `account_id`.
pub async fn user_token(sim: &Simulator, installation: &Installation, account_id: &str) -> String {
    let (status, body) = exchange(sim, &assertion(sim, installation, account_id, |_| {})).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}
