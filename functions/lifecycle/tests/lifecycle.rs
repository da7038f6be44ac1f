//! The lifecycle function driven with real API Gateway HTTP API (v2) events, signed installs from a
//! test key, and an in-memory store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{
    CachingKeyProvider, FixedClock, HttpKeyProvider, InMemoryKeys, KeyProvider, SecretString,
    sign_hs256,
};
use serde_json::{Value, json};
use test_support::install::{
    INSTALL_KID, INSTALL_PRIVATE_PEM, install_claims, install_keys, install_token, rs256,
};
use test_support::lambda::api_gateway_request;
use test_support::{APP_BASE_URL as APP, ConnectToken, NOW, app_env, closed_port, install_payload};
use understudy_domain::{
    AccountId, CachedToken, ClientKey, MemoryStore, TenantState, TenantStore, TokenCache,
    TokenCacheKey,
};
use understudy_lifecycle::Lifecycle;
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};

const CLIENT: &str = "7c3a1a66-4b1d-4f5e-9a57-1b2c3d4e5f60";

fn config() -> AppConfig {
    AppConfig::from_lookup(app_env).unwrap()
}

type App<K> = Lifecycle<MemoryStore, K, FixedClock>;

fn app() -> (App<InMemoryKeys>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (
        Lifecycle::new(config(), store.clone(), install_keys(), FixedClock(NOW)).unwrap(),
        store,
    )
}

/// `installed` signed by "Atlassian" (the test install key) for `path`.
fn signed(path: &str) -> String {
    format!("JWT {}", install_token(CLIENT, path, NOW))
}

async fn send<K: KeyProvider>(
    app: &App<K>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> ApiResponse {
    app.handle(to_api_request(api_gateway_request(
        method, path, "", auth, body,
    )))
    .await
}

fn body(response: &ApiResponse) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

fn client() -> ClientKey {
    ClientKey::parse(CLIENT).unwrap()
}

async fn state(store: &MemoryStore) -> TenantState {
    store
        .get_tenant(&client(), NOW)
        .await
        .unwrap()
        .unwrap()
        .state
}

/// A lifecycle callback to `path` signed by the tenant with `secret`, as Confluence signs it.
async fn callback<K: KeyProvider>(
    app: &App<K>,
    path: &str,
    secret: &str,
    body: &str,
) -> ApiResponse {
    let auth = ConnectToken::for_post(CLIENT, path, NOW).header(secret);
    send(app, "POST", path, Some(&auth), body).await
}

/// `POST /installed` of `body` with `Authorization: JWT <token>`.
async fn post_installed<K: KeyProvider>(app: &App<K>, token: &str, body: &str) -> ApiResponse {
    send(
        app,
        "POST",
        "/installed",
        Some(&format!("JWT {token}")),
        body,
    )
    .await
}

/// `installed` of `payload`, signed by "Atlassian".
async fn signed_install<K: KeyProvider>(app: &App<K>, payload: &Value) -> ApiResponse {
    send(
        app,
        "POST",
        "/installed",
        Some(&signed("/installed")),
        &payload.to_string(),
    )
    .await
}

async fn install<K: KeyProvider>(app: &App<K>, secret: &str) -> ApiResponse {
    signed_install(app, &install_payload(CLIENT, secret)).await
}

fn assert_refused(response: &ApiResponse, status: u16) {
    assert_eq!(response.status(), status, "{:?}", body(response));
    assert!(body(response)["error"].is_string(), "a refusal says why");
    if status == 401 {
        assert_eq!(
            response.headers()["www-authenticate"],
            "JWT realm=\"understudy\""
        );
    }
}

#[tokio::test]
async fn the_descriptor_is_served_with_this_deployments_key_and_base_url() {
    let (app, _) = app();
    let r = send(&app, "GET", "/atlassian-connect.json", None, "").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let d = body(&r);
    assert_eq!(d["baseUrl"], APP);
    assert_eq!(d["key"], "understudy");
    assert_eq!(d["authentication"]["type"], "jwt");
    assert_eq!(
        d["apiMigrations"],
        json!({"signed-install": true, "context-qsh": true, "gdpr": true})
    );
    assert_eq!(d["scopes"], json!(["READ", "WRITE", "ACT_AS_USER"]));
    assert!(
        !r.body().windows(7).any(|w| w == b"invalid"),
        "a placeholder was served"
    );
}

#[tokio::test]
async fn a_signed_install_stores_the_tenant_with_its_whole_payload_but_not_the_secret_in_it() {
    let (app, store) = app();
    assert_eq!(install(&app, "secret-1").await.status(), 204);
    let tenant = store.get_tenant(&client(), NOW).await.unwrap().unwrap();
    assert_eq!(tenant.base_url, "https://acme.atlassian.net/wiki");
    assert_eq!(tenant.oauth_client_id.as_deref(), Some("oauth-client-1"));
    assert_eq!(tenant.state, TenantState::Installed);
    assert_eq!(
        tenant.install_payload["futureField"],
        json!({"kept": [1, 2, 3]})
    );
    assert!(!tenant.install_payload.to_string().contains("secret-1"));
    assert_eq!(
        connect_auth::ExposeSecret::expose_secret(&tenant.shared_secret),
        "secret-1"
    );
}

#[tokio::test]
async fn the_same_install_twice_is_one_tenant() {
    let (app, store) = app();
    assert_eq!(install(&app, "secret-1").await.status(), 204);
    assert_eq!(install(&app, "secret-1").await.status(), 204);
    let tenant = store.get_tenant(&client(), NOW).await.unwrap().unwrap();
    assert_eq!(tenant.created_at, NOW);
}

#[tokio::test]
async fn a_reinstall_by_atlassian_rotates_the_secret_and_drops_cached_tokens() {
    let (app, store) = app();
    install(&app, "secret-1").await;
    let user = AccountId::parse("557058:user-1").unwrap();
    let key = TokenCacheKey::new(&user, "");
    let token = CachedToken {
        access_token: SecretString::from("access-1"),
        expires_at: NOW + 900,
    };
    store.put_token(&client(), &key, &token).await.unwrap();

    let mut payload = install_payload(CLIENT, "secret-2");
    payload["baseUrl"] = json!("https://acme-renamed.atlassian.net/wiki");
    let r = signed_install(&app, &payload).await;
    assert_eq!(r.status(), 204);
    let tenant = store.get_tenant(&client(), NOW).await.unwrap().unwrap();
    assert_eq!(
        connect_auth::ExposeSecret::expose_secret(&tenant.shared_secret),
        "secret-2"
    );
    assert_eq!(tenant.base_url, "https://acme-renamed.atlassian.net/wiki");
    assert!(
        store
            .get_token(&client(), &key, NOW)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn installs_that_atlassian_did_not_sign_are_refused_and_nothing_is_stored() {
    let (app, store) = app();
    let body = install_payload(CLIENT, "evil").to_string();

    // Another key, with Atlassian's kid: a forged signature, e.g. a reinstall attempt for an
    // existing clientKey by someone else.
    let forged_key = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .unwrap()
        .stdout;
    let forged = rs256(
        Some(INSTALL_KID),
        &install_claims(CLIENT, "/installed", NOW),
        &forged_key,
    );
    let r = post_installed(&app, &forged, &body).await;
    assert_refused_because(&r, 401, connect_auth::UNVERIFIABLE_MESSAGE);

    // HS256 with the secret the body itself carries.
    let hs = sign_hs256(
        &install_claims(CLIENT, "/installed", NOW),
        &SecretString::from("evil"),
    )
    .unwrap();
    let r = post_installed(&app, &hs, &body).await;
    assert_refused_because(&r, 401, "algorithm");

    // alg none.
    let none = format!(
        "{}.{}.",
        base64_url(&json!({"alg": "none", "kid": "install-kid-1"})),
        base64_url(&install_claims(CLIENT, "/installed", NOW))
    );
    let r = post_installed(&app, &none, &body).await;
    assert_refused_because(&r, 401, "algorithm");

    // Unknown kid, and kids that try to leave the key server's path.
    for (kid, reason) in [
        ("install-kid-2", "no public key"),
        ("../install-kid-1", "kid"),
        ("https://evil.example/key", "kid"),
        ("a/../../b", "kid"),
    ] {
        let token = rs256(
            Some(kid),
            &install_claims(CLIENT, "/installed", NOW),
            INSTALL_PRIVATE_PEM,
        );
        let r = post_installed(&app, &token, &body).await;
        assert_refused_because(&r, 401, reason);
    }

    // Wrong audience, expired, qsh of another route.
    let mut c = install_claims(CLIENT, "/installed", NOW);
    c["aud"] = json!(["https://someone-else.example.com"]);
    let t = rs256(Some(INSTALL_KID), &c, INSTALL_PRIVATE_PEM);
    let r = post_installed(&app, &t, &body).await;
    assert_refused_because(&r, 401, "audience");
    let mut c = install_claims(CLIENT, "/installed", NOW);
    c["exp"] = json!(NOW - 100);
    let t = rs256(Some(INSTALL_KID), &c, INSTALL_PRIVATE_PEM);
    let r = post_installed(&app, &t, &body).await;
    assert_refused_because(&r, 401, "expired");
    let t = signed("/uninstalled");
    assert_refused_because(
        &send(&app, "POST", "/installed", Some(&t), &body).await,
        401,
        "qsh",
    );

    // Signed for another clientKey than the body's.
    let mut c = install_claims(CLIENT, "/installed", NOW);
    c["iss"] = json!("another-client");
    let t = rs256(Some(INSTALL_KID), &c, INSTALL_PRIVATE_PEM);
    let r = post_installed(&app, &t, &body).await;
    assert_refused_because(&r, 401, "issuer");

    // No token at all.
    assert_refused_because(
        &send(&app, "POST", "/installed", None, &body).await,
        401,
        "no JWT",
    );

    assert!(store.get_tenant(&client(), NOW).await.unwrap().is_none());
}

fn assert_refused_because(response: &ApiResponse, status: u16, reason: &str) {
    assert_refused(response, status);
    let said = body(response)["error"].as_str().unwrap().to_owned();
    assert!(
        said.contains(reason),
        "expected a reason with `{reason}`, got `{said}`"
    );
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn a_site_outside_the_allowed_hosts_cannot_install() {
    let (app, store) = app();
    for base in [
        "https://acme.example.com/wiki",
        "http://acme.atlassian.net/wiki",
        "https://127.0.0.1/wiki",
    ] {
        let mut payload = install_payload(CLIENT, "s");
        payload["baseUrl"] = json!(base);
        let r = signed_install(&app, &payload).await;
        assert_refused_because(&r, 403, "install refused");
    }
    assert!(store.get_tenant(&client(), NOW).await.unwrap().is_none());
}

#[tokio::test]
async fn bad_install_bodies_get_a_clear_400_or_413() {
    let (app, store) = app();
    let auth = signed("/installed");
    let r = send(&app, "POST", "/installed", Some(&auth), "{not json").await;
    assert_refused(&r, 400);
    assert!(body(&r)["error"].as_str().unwrap().contains("JSON"));
    let mut p = install_payload(CLIENT, "s");
    p.as_object_mut().unwrap().remove("sharedSecret");
    let r = send(&app, "POST", "/installed", Some(&auth), &p.to_string()).await;
    assert_refused(&r, 400);
    assert!(body(&r)["error"].as_str().unwrap().contains("sharedSecret"));
    let mut p = install_payload(CLIENT, "s");
    p["productType"] = json!("jira");
    assert_refused(
        &send(&app, "POST", "/installed", Some(&auth), &p.to_string()).await,
        400,
    );
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    assert_refused(
        &send(&app, "POST", "/installed", Some(&auth), &big).await,
        413,
    );
    assert!(store.get_tenant(&client(), NOW).await.unwrap().is_none());
}

#[tokio::test]
async fn a_key_server_that_is_down_gives_503_and_stores_nothing() {
    let port = closed_port();
    let keys = CachingKeyProvider::new(
        HttpKeyProvider::configured(
            HttpKeyProvider::default_client().unwrap(),
            &format!("http://127.0.0.1:{port}"),
        ),
        8,
    );
    let store = Arc::new(MemoryStore::new());
    let app = Lifecycle::new(config(), store.clone(), keys, FixedClock(NOW)).unwrap();
    let r = install(&app, "secret-1").await;
    assert_refused(&r, 503);
    assert!(store.get_tenant(&client(), NOW).await.unwrap().is_none());
}

#[tokio::test]
async fn enabled_and_disabled_flip_the_state_with_the_stored_secret_only() {
    let (app, store) = app();
    install(&app, "secret-1").await;
    let body =
        json!({"clientKey": CLIENT, "key": "understudy", "eventType": "disabled"}).to_string();

    let r = callback(&app, "/disabled", "secret-1", &body).await;
    assert_eq!(r.status(), 204);
    assert_eq!(state(&store).await, TenantState::Disabled);
    let r = callback(&app, "/enabled", "secret-1", &body).await;
    assert_eq!(r.status(), 204);
    assert_eq!(state(&store).await, TenantState::Enabled);

    assert_refused(&callback(&app, "/disabled", "wrong", &body).await, 401);
    // A context token is never accepted on a lifecycle route.
    let context = ConnectToken::with_qsh(CLIENT, "context-qsh", NOW).header("secret-1");
    assert_refused_because(
        &send(&app, "POST", "/disabled", Some(&context), &body).await,
        401,
        "context",
    );
    // Signed by the tenant, but speaking for another.
    let other = json!({"clientKey": "someone-else"}).to_string();
    assert_refused(&callback(&app, "/disabled", "secret-1", &other).await, 401);
    assert_eq!(state(&store).await, TenantState::Enabled);
}

#[tokio::test]
async fn after_uninstall_requests_signed_with_the_old_secret_are_refused() {
    let (app, store) = app();
    install(&app, "secret-1").await;
    let body =
        json!({"clientKey": CLIENT, "key": "understudy", "eventType": "uninstalled"}).to_string();
    let r = send(
        &app,
        "POST",
        "/uninstalled",
        Some(&signed("/uninstalled")),
        &body,
    )
    .await;
    assert_eq!(r.status(), 204);
    let tenant = store.get_tenant(&client(), NOW).await.unwrap().unwrap();
    assert_eq!(
        tenant.state,
        TenantState::Uninstalled,
        "kept for site imports"
    );
    let r = callback(&app, "/enabled", "secret-1", &body).await;
    assert_refused_because(&r, 401, connect_auth::UNVERIFIABLE_MESSAGE);

    // A later install by Atlassian brings it back.
    assert_eq!(install(&app, "secret-3").await.status(), 204);
    assert_eq!(state(&store).await, TenantState::Installed);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_404_and_405() {
    let (app, _) = app();
    assert_eq!(
        send(&app, "GET", "/nothing-here", None, "").await.status(),
        404
    );
    assert_eq!(
        send(&app, "GET", "/installed", None, "").await.status(),
        405
    );
    assert_eq!(
        send(&app, "POST", "/atlassian-connect.json", None, "")
            .await
            .status(),
        405
    );
}

/// Fails unless `response` is a refusal with `status` whose body repeats nothing the caller sent.
fn assert_refused_in_own_words(response: &ApiResponse, status: u16, sent: &str) {
    assert_refused(response, status);
    let said = String::from_utf8_lossy(response.body()).to_lowercase();
    for caller_text in ["marker", "evil", "forged"] {
        assert!(
            !said.contains(caller_text),
            "the answer repeats the caller's text: {said} (sent {sent})"
        );
    }
}

#[tokio::test]
async fn refusals_say_what_was_wrong_without_repeating_the_body() {
    let (app, store) = app();
    let auth = signed("/installed");
    let evil = "evil\nINFO forged line";
    let with = |name: &str, value: Value| {
        let mut p = install_payload(CLIENT, "s");
        p[evil] = json!("MARKER-1");
        p[name] = value;
        p.to_string()
    };
    for (body, status) in [
        ("{\"evil\\nINFO forged line\": MARKER-2}".to_owned(), 400),
        ("\"MARKER-3\"".to_owned(), 400),
        (with("clientKey", json!(["MARKER-4"])), 400),
        (with("sharedSecret", json!({"MARKER-5": 1})), 400),
        (with("oauthClientId", json!({"x": "MARKER-6"})), 400),
        (with("productType", json!("MARKER-7")), 400),
        (with("key", json!("MARKER-8")), 400),
        (
            with("baseUrl", json!("https://marker-9.example.com/wiki")),
            403,
        ),
        (with("baseUrl", json!("MARKER-10 is no URL")), 403),
    ] {
        let r = send(&app, "POST", "/installed", Some(&auth), &body).await;
        assert_refused_in_own_words(&r, status, &body);
    }
    assert!(store.get_tenant(&client(), NOW).await.unwrap().is_none());
    let r = send(
        &app,
        "POST",
        "/installed",
        Some(&auth),
        &format!("{{\"clientKey\": \"{CLIENT}\", \"evil\\nINFO forged line\": [MARKER]}}"),
    )
    .await;
    assert_refused(&r, 400);
    assert_eq!(
        body(&r)["error"],
        "the install payload is not valid JSON (line 1, column 82)"
    );

    // The tenant's own callbacks, too.
    install(&app, "secret-1").await;
    for body in [
        "{\"evil\\nINFO forged line\": MARKER}".to_owned(),
        json!({"clientKey": ["MARKER"], "evil\nINFO forged line": 1}).to_string(),
    ] {
        let r = callback(&app, "/disabled", "secret-1", &body).await;
        assert_refused_in_own_words(&r, 400, &body);
    }
}

#[tokio::test]
async fn an_install_naming_a_forge_installation_links_it_and_a_malformed_one_is_left_alone() {
    use understudy_domain::{ForgeInstallation, ForgeInstallations, InstallationId, SystemToken};
    let (app, store) = app();
    let id = InstallationId::parse(
        "ari:cloud:ecosystem::installation/5a6b7c8d-0000-4000-8000-000000000001",
    )
    .unwrap();
    let mut payload = install_payload(CLIENT, "s3cret-s3cret-s3cret-s3cret-0001");
    payload["installationId"] = json!(id.as_str());
    assert_eq!(signed_install(&app, &payload).await.status(), 204);
    let seen = ForgeInstallation {
        tenant_key: id.own_tenant_key(),
        id: id.clone(),
        app_id: "ari:cloud:ecosystem::app/app-1".into(),
        cloud_id: "cloud-1".into(),
        api_base_url: "https://api.atlassian.com/ex/confluence/cloud-1".into(),
        system_token: SystemToken::received(SecretString::from("t"), NOW),
        created_at: NOW,
        updated_at: NOW,
    };
    let stored = store.record_installation(&seen, NOW).await.unwrap();
    assert_eq!(
        stored.tenant_key,
        client(),
        "the Forge door shares the Connect tenant"
    );

    // Not an installation ARI: the install stands, nothing is linked.
    let (app, store) = self::app();
    let mut payload = install_payload(CLIENT, "s3cret-s3cret-s3cret-s3cret-0001");
    payload["installationId"] = json!("not-an-ari");
    assert_eq!(signed_install(&app, &payload).await.status(), 204);
    let stored = store.record_installation(&seen, NOW).await.unwrap();
    assert_eq!(stored.tenant_key, id.own_tenant_key());
}

#[tokio::test]
async fn the_forge_routes_are_not_there_without_a_forge_app_id() {
    let (app, _) = app();
    for path in ["/forge/lifecycle", "/forge/scheduled"] {
        assert_eq!(
            send(&app, "POST", path, None, "{}").await.status(),
            404,
            "{path}"
        );
    }
}
