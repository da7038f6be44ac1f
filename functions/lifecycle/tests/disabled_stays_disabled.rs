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

use connect_auth::{ExposeSecret, FixedClock, InMemoryKeys};
use serde_json::{Value, json};
use test_support::install::{install_keys, install_token};
use test_support::lambda::api_gateway_request;
use test_support::{ConnectToken, NOW, app_env, install_payload};
use understudy_domain::{
    ClientKey, ForgeInstallations, MemoryStore, TenantState, TenantStore, TokenCache,
};
use understudy_lifecycle::Lifecycle;
use understudy_store::EmbeddedStore;
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};

const CLIENT: &str = "0d5e2a8c-6f3b-4c1d-9e7a-2b3c4d5e6f70";

fn app<S: TenantStore + TokenCache + ForgeInstallations>(
    store: Arc<S>,
) -> Lifecycle<S, InMemoryKeys, FixedClock> {
    let config = AppConfig::from_lookup(app_env).unwrap();
    Lifecycle::new(config, store, install_keys(), FixedClock(NOW)).unwrap()
}

/// `installed` signed RS256 by "Atlassian" (the test key), carrying `secret`.
async fn install<S: TenantStore + TokenCache + ForgeInstallations>(
    app: &Lifecycle<S, InMemoryKeys, FixedClock>,
    secret: &str,
) -> ApiResponse {
    let token = install_token(CLIENT, "/installed", NOW);
    app.handle(to_api_request(api_gateway_request(
        "POST",
        "/installed",
        "",
        Some(&format!("JWT {token}")),
        &install_payload(CLIENT, secret).to_string(),
    )))
    .await
}

/// `enabled` or `disabled`, signed HS256 with the tenant's shared secret as Confluence signs it.
async fn lifecycle_event<S: TenantStore + TokenCache + ForgeInstallations>(
    app: &Lifecycle<S, InMemoryKeys, FixedClock>,
    event_type: &str,
    secret: &str,
) -> ApiResponse {
    let path = format!("/{event_type}");
    let auth = ConnectToken::for_post(CLIENT, &path, NOW).header(secret);
    let body = json!({"clientKey": CLIENT, "key": "understudy", "eventType": event_type});
    app.handle(to_api_request(api_gateway_request(
        "POST",
        &path,
        "",
        Some(&auth),
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

async fn a_reinstall_keeps_the_tenant_disabled_until_enabled<
    S: TenantStore + TokenCache + ForgeInstallations,
>(
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
