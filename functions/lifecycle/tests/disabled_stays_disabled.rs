//! A disabled app stays disabled: a signed re-install (as Atlassian sends on upgrades and secret
//! rotations) stores the new secret but never enables the tenant; only `enabled` does. Driven with
//! real API Gateway HTTP API (v2) events against the in-memory and the embedded store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{
    ExposeSecret, FixedClock, InMemoryKeys, RequestParts, SecretString, sign_hs256,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use understudy_domain::{ClientKey, MemoryStore, TenantState, TenantStore, TokenCache};
use understudy_lifecycle::Lifecycle;
use understudy_store::EmbeddedStore;
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};

const NOW: i64 = 1_780_000_000;
const APP: &str = "https://understudy.example.com";
const PRIVATE_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.private.pem");
const PUBLIC_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.public.pem");
const CLIENT: &str = "0d5e2a8c-6f3b-4c1d-9e7a-2b3c4d5e6f70";

fn app<S: TenantStore + TokenCache>(store: Arc<S>) -> Lifecycle<S, InMemoryKeys, FixedClock> {
    let config = AppConfig::from_lookup(|name| match name {
        "APP_BASE_URL" => Some(APP.to_owned()),
        "APP_KEY" => Some("understudy".to_owned()),
        _ => None,
    })
    .unwrap();
    let keys = InMemoryKeys::new();
    keys.insert_pem("install-kid-1", PUBLIC_PEM).unwrap();
    Lifecycle::new(config, store, keys, FixedClock(NOW)).unwrap()
}

/// An API Gateway HTTP API v2 event, as Lambda delivers it.
fn event(path: &str, authorization: &str, body: &str) -> lambda_http::Request {
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"host": "understudy.example.com", "content-type": "application/json",
                    "user-agent": "Atlassian Connect/1.0", "authorization": authorization},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api1", "domainName": "understudy.example.com",
            "domainPrefix": "understudy",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "Atlassian Connect/1.0"},
            "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1_780_000_000_000_i64
        },
        "body": body, "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// `installed` signed RS256 by "Atlassian" (the test key), carrying `secret`.
async fn install<S: TenantStore + TokenCache>(
    app: &Lifecycle<S, InMemoryKeys, FixedClock>,
    secret: &str,
) -> ApiResponse {
    let claims = json!({"iss": CLIENT, "aud": [APP], "iat": NOW, "exp": NOW + 180,
                        "qsh": RequestParts::new("POST", "/installed", "").qsh()});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("install-kid-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap();
    let body = json!({
        "key": "understudy", "clientKey": CLIENT, "sharedSecret": secret,
        "baseUrl": "https://acme.atlassian.net/wiki", "productType": "confluence",
        "eventType": "installed", "oauthClientId": "oauth-client-1"
    });
    app.handle(to_api_request(event(
        "/installed",
        &format!("JWT {token}"),
        &body.to_string(),
    )))
    .await
}

/// `enabled` or `disabled`, signed HS256 with the tenant's shared secret as Confluence signs it.
async fn lifecycle_event<S: TenantStore + TokenCache>(
    app: &Lifecycle<S, InMemoryKeys, FixedClock>,
    event_type: &str,
    secret: &str,
) -> ApiResponse {
    let path = format!("/{event_type}");
    let claims = json!({"iss": CLIENT, "iat": NOW, "exp": NOW + 180,
                        "qsh": RequestParts::new("POST", &path, "").qsh()});
    let token = sign_hs256(&claims, &SecretString::from(secret)).unwrap();
    let body = json!({"clientKey": CLIENT, "key": "understudy", "eventType": event_type});
    app.handle(to_api_request(event(
        &path,
        &format!("JWT {token}"),
        &body.to_string(),
    )))
    .await
}

fn error(response: &ApiResponse) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

async fn state_and_secret<S: TenantStore>(store: &S) -> (TenantState, String) {
    let tenant = store
        .get_tenant(&ClientKey::parse(CLIENT).unwrap(), NOW)
        .await
        .unwrap()
        .unwrap();
    (
        tenant.state,
        tenant.shared_secret.expose_secret().to_owned(),
    )
}

async fn a_reinstall_keeps_the_tenant_disabled_until_enabled<S: TenantStore + TokenCache>(
    store: Arc<S>,
) {
    let app = app(Arc::clone(&store));
    assert_eq!(install(&app, "secret-1").await.status(), 204);
    let r = lifecycle_event(&app, "disabled", "secret-1").await;
    assert_eq!(r.status(), 204, "{:?}", error(&r));
    assert_eq!(
        state_and_secret(&*store).await,
        (TenantState::Disabled, "secret-1".to_owned())
    );

    // Atlassian re-installs (upgrade, secret rotation): the secret rotates, the app stays off.
    assert_eq!(install(&app, "secret-2").await.status(), 204);
    assert_eq!(
        state_and_secret(&*store).await,
        (TenantState::Disabled, "secret-2".to_owned())
    );

    // The old secret is gone; `enabled` signed with the new one enables.
    let r = lifecycle_event(&app, "enabled", "secret-1").await;
    assert_eq!(r.status(), 401, "{:?}", error(&r));
    assert_eq!(state_and_secret(&*store).await.0, TenantState::Disabled);
    let r = lifecycle_event(&app, "enabled", "secret-2").await;
    assert_eq!(r.status(), 204, "{:?}", error(&r));
    assert_eq!(
        state_and_secret(&*store).await,
        (TenantState::Enabled, "secret-2".to_owned())
    );
}

#[tokio::test]
async fn a_signed_reinstall_does_not_enable_a_disabled_tenant_in_memory() {
    a_reinstall_keeps_the_tenant_disabled_until_enabled(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_signed_reinstall_does_not_enable_a_disabled_tenant_on_the_embedded_store() {
    let dir = std::env::temp_dir().join(format!(
        "understudy-disabled-stays-disabled-{}",
        std::process::id()
    ));
    std::fs::remove_dir_all(&dir).ok();
    let store = Arc::new(EmbeddedStore::open_with_local_key(&dir).unwrap());
    a_reinstall_keeps_the_tenant_disabled_until_enabled(store).await;
    std::fs::remove_dir_all(&dir).ok();
}
