//! A stack deployed without `PublicBaseUrl` or `DomainName` sets no `APP_BASE_URL`: the lifecycle
//! function takes the app's base URL from each request, the domain API Gateway routed it by
//! (`requestContext.domainName`), never from the `Host` header. The descriptor names that URL, and
//! a signed install must be for it (or for one of `INSTALL_AUDIENCES`); one signed for any other
//! URL, e.g. another app's, is refused and nothing is stored. With `APP_BASE_URL` set, the
//! request's domain changes nothing. Driven with real API Gateway HTTP API (v2) events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{FixedClock, InMemoryKeys};
use serde_json::{Value, json};
use test_support::install::{
    INSTALL_KID, INSTALL_PRIVATE_PEM, install_claims, install_keys, rs256,
};
use test_support::lambda::api_gateway_event;
use test_support::{APP_BASE_URL, NOW, app_env, install_payload};
use understudy_domain::{ClientKey, MemoryStore, TenantStore};
use understudy_lifecycle::Lifecycle;
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};

const CLIENT: &str = "3e9b1c2d-7a4f-4b6e-8c1d-2f3a4b5c6d70";

/// The stack's own execute-api domain, as API Gateway reports it.
const API_DOMAIN: &str = "abc.execute-api.us-east-1.amazonaws.com";
const API_URL: &str = "https://abc.execute-api.us-east-1.amazonaws.com";

type App = Lifecycle<MemoryStore, InMemoryKeys, FixedClock>;

/// The lifecycle function with the test environment, less `APP_BASE_URL`, plus `extra`.
fn app_without_base_url(extra: &[(&str, &str)]) -> (App, Arc<MemoryStore>) {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let config = AppConfig::from_lookup(|name| match name {
        "APP_BASE_URL" => None,
        _ => extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| app_env(name)),
    })
    .unwrap();
    assert!(config.app_base_url.is_none());
    app_with(config)
}

fn app_with(config: AppConfig) -> (App, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let app = Lifecycle::new(config, store.clone(), install_keys(), FixedClock(NOW)).unwrap();
    (app, store)
}

/// An API Gateway event for `method path`, routed by `domain` (`None`: no `domainName`), whose
/// `Host` header says something else: the app must never read it.
async fn send(
    app: &App,
    domain: Option<&str>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> ApiResponse {
    let mut event: Value =
        serde_json::from_str(&api_gateway_event(method, path, "", auth, body)).unwrap();
    event["headers"]["host"] = json!("evil.example");
    let context = event["requestContext"].as_object_mut().unwrap();
    match domain {
        Some(domain) => {
            context.insert("domainName".into(), json!(domain));
            context.insert(
                "domainPrefix".into(),
                json!(domain.split('.').next().unwrap()),
            );
        }
        None => {
            context.remove("domainName");
            context.remove("domainPrefix");
        }
    }
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    app.handle(to_api_request(request)).await
}

fn body(response: &ApiResponse) -> Value {
    serde_json::from_slice(response.body()).unwrap_or(Value::Null)
}

async fn descriptor(app: &App, domain: Option<&str>) -> ApiResponse {
    send(app, domain, "GET", "/atlassian-connect.json", None, "").await
}

/// `POST /installed` routed by `domain`, signed by "Atlassian" for the audience `aud`.
async fn install_for(app: &App, domain: &str, aud: &str) -> ApiResponse {
    let mut claims = install_claims(CLIENT, "/installed", NOW);
    claims["aud"] = json!([aud]);
    let token = rs256(Some(INSTALL_KID), &claims, INSTALL_PRIVATE_PEM);
    let payload = install_payload(CLIENT, "s3cret-s3cret-s3cret-s3cret-0001");
    send(
        app,
        Some(domain),
        "POST",
        "/installed",
        Some(&format!("JWT {token}")),
        &payload.to_string(),
    )
    .await
}

async fn installed(store: &MemoryStore) -> bool {
    let client = ClientKey::parse(CLIENT).unwrap();
    store.get_tenant(&client, NOW).await.unwrap().is_some()
}

fn assert_refused_for_audience(response: &ApiResponse) {
    assert_eq!(response.status(), 401, "{:?}", body(response));
    let said = body(response)["error"].as_str().unwrap().to_owned();
    assert!(said.contains("audience"), "{said}");
}

#[tokio::test]
async fn the_descriptor_names_the_domain_the_request_was_routed_by() {
    let (app, _) = app_without_base_url(&[]);
    let r = descriptor(&app, Some(API_DOMAIN)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let d = body(&r);
    assert_eq!(d["baseUrl"], API_URL);
    assert_eq!(d["vendor"]["url"], API_URL);
    assert_eq!(d["key"], "understudy");
    assert!(
        !String::from_utf8_lossy(r.body()).contains("evil.example"),
        "the Host header was used"
    );

    // A custom domain mapped to the API outside the stack serves its own base URL.
    let d = body(&descriptor(&app, Some("understudy.example.com")).await);
    assert_eq!(d["baseUrl"], "https://understudy.example.com");
}

#[tokio::test]
async fn a_signed_install_for_the_requests_own_base_url_is_accepted() {
    let (app, store) = app_without_base_url(&[]);
    let r = install_for(&app, API_DOMAIN, API_URL).await;
    assert_eq!(r.status(), 204, "{:?}", body(&r));
    assert!(installed(&store).await);
    // With a trailing slash, as some signers write it.
    let (app, store) = app_without_base_url(&[]);
    let r = install_for(&app, API_DOMAIN, &format!("{API_URL}/")).await;
    assert_eq!(r.status(), 204, "{:?}", body(&r));
    assert!(installed(&store).await);
}

#[tokio::test]
async fn a_signed_install_for_any_other_base_url_is_refused_and_nothing_is_stored() {
    let (app, store) = app_without_base_url(&[]);
    for aud in [
        // Another app's URL: a genuine Atlassian signature, replayed here.
        "https://someone-else.example.com",
        // What the Host header said.
        "https://evil.example",
        // This app, but by another domain than the one the request came by.
        APP_BASE_URL,
        "https://xyz.execute-api.us-east-1.amazonaws.com",
        // Same host over http.
        "http://abc.execute-api.us-east-1.amazonaws.com",
    ] {
        assert_refused_for_audience(&install_for(&app, API_DOMAIN, aud).await);
    }
    assert!(!installed(&store).await);
}

#[tokio::test]
async fn install_audiences_still_widen_what_is_accepted() {
    let (app, store) = app_without_base_url(&[("INSTALL_AUDIENCES", "https://old.example.com")]);
    let r = install_for(&app, API_DOMAIN, "https://old.example.com").await;
    assert_eq!(r.status(), 204, "{:?}", body(&r));
    assert!(installed(&store).await);
}

#[tokio::test]
async fn without_a_routed_domain_there_is_no_descriptor_and_no_install() {
    // Not something API Gateway sends; the function must still not make a URL up.
    let (app, store) = app_without_base_url(&[]);
    let r = descriptor(&app, None).await;
    assert_eq!(r.status(), 500);
    assert_eq!(body(&r)["error"], "internal error");
    let mut claims = install_claims(CLIENT, "/installed", NOW);
    claims["aud"] = json!([API_URL]);
    let token = rs256(Some(INSTALL_KID), &claims, INSTALL_PRIVATE_PEM);
    let r = send(
        &app,
        None,
        "POST",
        "/installed",
        Some(&format!("JWT {token}")),
        &install_payload(CLIENT, "s").to_string(),
    )
    .await;
    assert_refused_for_audience(&r);
    assert!(!installed(&store).await);
}

#[tokio::test]
async fn with_app_base_url_set_the_requests_domain_changes_nothing() {
    let (app, store) = app_with(AppConfig::from_lookup(app_env).unwrap());
    let d = body(&descriptor(&app, Some(API_DOMAIN)).await);
    assert_eq!(d["baseUrl"], APP_BASE_URL);
    assert_refused_for_audience(&install_for(&app, API_DOMAIN, API_URL).await);
    assert!(!installed(&store).await);
    let r = install_for(&app, API_DOMAIN, APP_BASE_URL).await;
    assert_eq!(r.status(), 204, "{:?}", body(&r));
    assert!(installed(&store).await);
}
