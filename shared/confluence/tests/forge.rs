//! The client through the Forge door, against a small double of Atlassian's API gateway on
//! 127.0.0.1: which token each call carries, where it goes, and the offline user-impersonation
//! exchange (one per installation and user, refusals with Atlassian's words, a refused token
//! exchanged again once, nothing sent with a stale system token). The whole Forge story (FITs,
//! events, restrictions) runs against the Confluence simulator in tests/e2e.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use connect_auth::{ManualClock, SecretString};
use serde_json::{Value, json};
use understudy_confluence::{ClientConfig, ConfluenceClient, VirtualPause};
use understudy_core::{ConfluenceError, Door, ForgeDoor, Invoker, TokenError};
use understudy_domain::{
    AccountId, ClientKey, ForgeInstallation, InstallationId, MemoryStore, PageId, SystemToken,
};

const START: i64 = 1_900_000_000;
const CLOUD: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SYSTEM: &str = "system-token-1";

/// What the double saw and how it answers.
#[derive(Default)]
struct Gateway {
    /// `(path, authorization)` of every Confluence call.
    calls: Vec<(String, String)>,
    /// Bodies and authorizations of every GraphQL request.
    exchanges: Vec<(Value, String)>,
    /// Users Atlassian will not issue tokens for.
    refused: Vec<String>,
    /// Offline tokens issued so far, and those Confluence now refuses.
    issued: u32,
    revoked: Vec<String>,
}

type Shared = Arc<Mutex<Gateway>>;

fn auth(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn confluence(State(gw): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let authorization = auth(&headers);
    let mut gw = gw.lock().unwrap();
    gw.calls
        .push((uri.path().to_owned(), authorization.clone()));
    let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
    if token.is_empty() || gw.revoked.iter().any(|r| r == token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let prefix = format!("/ex/confluence/{CLOUD}/wiki/api/v2/pages/");
    let Some(id) = uri.path().strip_prefix(&prefix) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Page 2 is view-restricted: the app's system token cannot see it, users can.
    if id == "2" && token == SYSTEM {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(json!({
        "id": id, "status": "current", "title": "T", "spaceId": "7",
        "version": {"number": 1}, "body": {"storage": {"value": "<p>b</p>"}}
    }))
    .into_response()
}

async fn graphql(State(gw): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    // Slow enough that concurrent callers overlap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    let mut gw = gw.lock().unwrap();
    gw.exchanges.push((body.clone(), auth(&headers)));
    let user = body["variables"]["input"]["userId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if gw.refused.contains(&user) {
        return axum::Json(json!({"data": {"offlineUserAuthToken": {
            "success": false, "errors": [{"message": "User is deactivated"}], "authToken": null}}}))
        .into_response();
    }
    gw.issued += 1;
    let token = format!("offline-{user}-{}", gw.issued);
    axum::Json(json!({"data": {"offlineUserAuthToken": {
        "success": true, "errors": null, "authToken": {"token": token, "ttl": 900}}}}))
    .into_response()
}

struct Harness {
    gw: Shared,
    addr: SocketAddr,
    clock: Arc<ManualClock>,
    client: ConfluenceClient,
}

async fn harness(graphql_override: bool) -> Harness {
    let gw: Shared = Arc::default();
    let app = Router::new()
        .route("/graphql", axum::routing::post(graphql))
        .route("/other/graphql", axum::routing::post(graphql))
        .fallback(confluence)
        .with_state(gw.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let clock = ManualClock::at(START);
    let mut config = ClientConfig::from_lookup(|name| {
        (name == "CONFLUENCE_ALLOW_HTTP_LOOPBACK").then(|| "true".to_owned())
    })
    .unwrap();
    if graphql_override {
        config.forge_graphql_url = Some(format!("http://{addr}/other/graphql").parse().unwrap());
    }
    let client = ConfluenceClient::with_time(
        config,
        Arc::new(MemoryStore::new()),
        clock.clone(),
        Arc::new(VirtualPause::new()),
    )
    .unwrap();
    Harness {
        gw,
        addr,
        clock,
        client,
    }
}

fn installation(addr: SocketAddr, issued_at: i64) -> ForgeInstallation {
    let id = InstallationId::parse("ari:cloud:ecosystem::installation/inst-1").unwrap();
    ForgeInstallation {
        tenant_key: id.own_tenant_key(),
        id,
        app_id: "ari:cloud:ecosystem::app/app-1".into(),
        cloud_id: CLOUD.into(),
        api_base_url: format!("http://{addr}/ex/confluence/{CLOUD}"),
        system_token: SystemToken::received(SecretString::from(SYSTEM), issued_at),
        created_at: issued_at,
        updated_at: issued_at,
    }
}

fn page(id: &str) -> PageId {
    PageId::parse(id).unwrap()
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

#[tokio::test]
async fn as_the_app_the_system_token_goes_to_the_api_gateways_wiki() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    let read = h
        .client
        .as_app(Door::forge(&inst))
        .get_page(&page("1"))
        .await
        .unwrap();
    assert_eq!(read.title, "T");
    let calls = h.gw.lock().unwrap().calls.clone();
    assert_eq!(
        calls,
        vec![(
            format!("/ex/confluence/{CLOUD}/wiki/api/v2/pages/1"),
            format!("Bearer {SYSTEM}")
        )]
    );
    assert_eq!(
        h.client
            .as_app(Door::forge(&inst))
            .get_page(&page("2"))
            .await,
        Err(ConfluenceError::NotFound)
    );
}

#[tokio::test]
async fn a_stale_system_token_is_never_sent() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    h.clock.advance(2 * 60 * 60);
    let alice = account("alice");
    for session in [
        h.client.as_app(Door::forge(&inst)),
        h.client.as_user(Door::forge(&inst), &alice),
    ] {
        let error = session.get_page(&page("1")).await.unwrap_err();
        assert_eq!(
            error,
            ConfluenceError::Token(TokenError::SystemTokenExpired)
        );
        assert!(error.is_transient(), "the job waits for a fresh token");
    }
    let gw = h.gw.lock().unwrap();
    assert!(gw.calls.is_empty() && gw.exchanges.is_empty());
}

#[tokio::test]
async fn concurrent_callers_share_one_offline_token_exchange() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    let alice = account("alice");
    let reads = futures::future::join_all((0..8).map(|_| {
        let (client, inst, alice) = (&h.client, &inst, &alice);
        async move {
            client
                .as_user(Door::forge(inst), alice)
                .get_page(&page("2"))
                .await
        }
    }))
    .await;
    assert!(reads.iter().all(Result::is_ok), "{reads:?}");
    let gw = h.gw.lock().unwrap();
    assert_eq!(gw.exchanges.len(), 1, "one exchange for one user");
    let (body, authorization) = &gw.exchanges[0];
    assert_eq!(authorization, &format!("Bearer {SYSTEM}"));
    assert_eq!(
        body["variables"]["input"],
        json!({"contextIds": [format!("ari:cloud:confluence::site/{CLOUD}")], "userId": "alice"})
    );
    assert!(
        body["query"]
            .as_str()
            .unwrap()
            .contains("offlineUserAuthToken(input: $input)")
    );
    assert!(
        gw.calls
            .iter()
            .all(|(_, auth)| auth == "Bearer offline-alice-1")
    );
}

#[tokio::test]
async fn an_offline_token_lasts_its_ttl_and_a_refused_one_is_exchanged_again_once() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    let alice = account("alice");
    let read = || async {
        h.client
            .as_user(Door::forge(&inst), &alice)
            .get_page(&page("1"))
            .await
    };
    read().await.unwrap();
    h.clock.advance(900 - 61);
    read().await.unwrap();
    assert_eq!(h.gw.lock().unwrap().exchanges.len(), 1, "still fresh");
    h.clock.advance(1);
    read().await.unwrap();
    assert_eq!(
        h.gw.lock().unwrap().exchanges.len(),
        2,
        "within the margin: renewed"
    );

    h.gw.lock()
        .unwrap()
        .revoked
        .push("offline-alice-2".to_owned());
    read().await.unwrap();
    let gw = h.gw.lock().unwrap();
    assert_eq!(gw.exchanges.len(), 3, "one more exchange after the 401");
    assert_eq!(gw.calls.last().unwrap().1, "Bearer offline-alice-3");
}

#[tokio::test]
async fn a_refused_impersonation_carries_what_atlassian_said() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    h.gw.lock().unwrap().refused.push("gone".to_owned());
    let gone = account("gone");
    let error = h
        .client
        .as_user(Door::forge(&inst), &gone)
        .get_page(&page("1"))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        ConfluenceError::Token(TokenError::ImpersonationRefused {
            reason: "User is deactivated".into()
        })
    );
    assert!(!error.is_transient());
    assert!(h.gw.lock().unwrap().calls.is_empty());
}

#[tokio::test]
async fn the_invoking_user_acts_with_their_own_token_and_others_by_impersonation() {
    let h = harness(true).await;
    let inst = installation(h.addr, START);
    let (alice, bob) = (account("alice"), account("bob"));
    let token = SecretString::from("users-own-token");
    let door = Door::Forge(ForgeDoor {
        installation: &inst,
        invoker: Some(Invoker {
            account: &alice,
            token: &token,
        }),
    });
    h.client
        .as_user(door, &alice)
        .get_page(&page("1"))
        .await
        .unwrap();
    assert!(h.gw.lock().unwrap().exchanges.is_empty());
    assert_eq!(
        h.gw.lock().unwrap().calls[0].1,
        "Bearer users-own-token".to_owned()
    );
    // Anyone else (never the case on the edit API, which acts only as the invoker) is
    // impersonated, at the configured GraphQL endpoint.
    h.client
        .as_user(door, &bob)
        .get_page(&page("1"))
        .await
        .unwrap();
    assert_eq!(h.gw.lock().unwrap().exchanges.len(), 1);
}

#[tokio::test]
async fn the_forge_app_account_is_asked_apart_from_the_connect_app_users() {
    let h = harness(false).await;
    let inst = installation(h.addr, START);
    let key = ClientKey::parse("shared-tenant").unwrap();
    let linked = ForgeInstallation {
        tenant_key: key,
        ..inst.clone()
    };
    // No /rest/api/user/current on the double: each door asks, and fails, on its own.
    for door in [Door::forge(&inst), Door::forge(&linked)] {
        assert!(h.client.app_account_id(door).await.is_err());
    }
    let asked =
        h.gw.lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(path, _)| path.ends_with("/wiki/rest/api/user/current"))
            .count();
    assert_eq!(asked, 2);
}
