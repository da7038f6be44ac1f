//! The simulator's Forge mode: FITs that the app's own verifier (forge-auth) accepts through the
//! served JWKS, and forgeries it refuses; Forge's delivery rules for events; the tokens at the API
//! and GraphQL gateways and the restrictions they meet; Connect on Forge.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confluence_sim::forge::{
    EVENTS_ENDPOINT_KEY, SCHEDULED_ENDPOINT_KEY, SITE_ADMIN_ACCOUNT_ID, UI_MODULE_KEY,
};
use confluence_sim::{
    AccountType, AppAccessRule, Demo, EditVia, Endpoint, Fault, FitSigner, FitSpec, ForgeCallKind,
    ForgeConfig, ForgeInstall, ForgeKey, Page, SimConfig, Simulator,
};
use connect_auth::{Clock, ManualClock};
use forge_auth::{AppId, FitError, FitVerifier, HttpJwksSource};
use serde_json::{Value, json};
use support::{ALL_SCOPES, APP_KEY, FakeApp, call_as_app, fake_app};

/// Long enough for anything that should happen; the waits return as soon as it did.
const WAIT: Duration = Duration::from_secs(10);

/// Where the tests on a hand-moved clock start.
const START: i64 = 1_900_000_000;

/// Forge's defaults, with retries a few milliseconds apart.
fn fast() -> ForgeConfig {
    ForgeConfig {
        retry_delay: Duration::from_millis(20),
        ..ForgeConfig::default()
    }
}

fn config_with(forge: ForgeConfig) -> SimConfig {
    SimConfig {
        forge,
        ..SimConfig::default()
    }
}

/// A demo site with the Forge app installed; its remote is a stub app at `/remote`.
struct Site {
    sim: Simulator,
    demo: Demo,
    remote: FakeApp,
    forge: ForgeInstall,
}

async fn forge_site(config: SimConfig) -> Site {
    let sim = Simulator::start(config).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let remote = fake_app("/remote", &[]).await;
    let forge = sim.forge_install(&remote.base_url()).await.unwrap();
    Site {
        sim,
        demo,
        remote,
        forge,
    }
}

/// The app's verifier for this simulator's app id and JWKS, on the system clock.
fn verifier(sim: &Simulator) -> FitVerifier<HttpJwksSource> {
    FitVerifier::new(
        AppId::parse(&sim.forge_app_id()).unwrap(),
        HttpJwksSource::new(sim.forge_jwks_url()).unwrap(),
    )
}

/// A FIT's claims, read without verifying (for the fields forge-auth does not type).
fn raw_claims(fit: &str) -> Value {
    let segment = fit.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn raw_header(fit: &str) -> Value {
    let segment = fit.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// A request through Forge's API gateway: `path` is under `/wiki`.
async fn gateway(
    sim: &Simulator,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let path = format!("/ex/confluence/{}/wiki{path}", sim.cloud_id());
    sim.request(
        method,
        &path,
        Some(&format!("Bearer {token}")),
        body.as_ref(),
    )
    .await
    .unwrap()
}

/// The body of a page update to the next version.
fn update(page: &Page, new_body: &str) -> Value {
    json!({
        "id": page.id_string(),
        "status": "current",
        "title": page.title,
        "body": {"representation": "storage", "value": new_body},
        "version": {"number": page.version + 1, "message": "by Forge"},
    })
}

async fn put_page(sim: &Simulator, token: &str, page: &str, new_body: &str) -> u16 {
    let current = sim.page(page).unwrap();
    gateway(
        sim,
        token,
        "PUT",
        &format!("/api/v2/pages/{page}"),
        Some(update(&current, new_body)),
    )
    .await
    .0
}

async fn get_page(sim: &Simulator, token: &str, page: &str) -> u16 {
    gateway(sim, token, "GET", &format!("/api/v2/pages/{page}"), None)
        .await
        .0
}

const OFFLINE_MUTATION: &str = "mutation offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }";

/// `offlineUserAuthToken` with `authorization` (a full header value, if any).
async fn offline_exchange(
    sim: &Simulator,
    authorization: Option<&str>,
    context_ids: Value,
    user_id: &str,
) -> (u16, Value) {
    let body = json!({
        "query": OFFLINE_MUTATION,
        "variables": {"input": {"contextIds": context_ids, "userId": user_id}},
    });
    sim.request("POST", "/graphql", authorization, Some(&body))
        .await
        .unwrap()
}

/// An offline token for `user_id`, which must be issued.
async fn offline_token(sim: &Simulator, system_token: &str, user_id: &str) -> String {
    let (status, body) = offline_exchange(
        sim,
        Some(&format!("Bearer {system_token}")),
        json!([sim.forge_context_ari()]),
        user_id,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = &body["data"]["offlineUserAuthToken"];
    assert_eq!(answer["success"], true, "{body}");
    answer["authToken"]["token"].as_str().unwrap().to_owned()
}

/// The event without its `retryContext`.
fn without_retry_context(body: &Value) -> Value {
    let mut body = body.clone();
    body.as_object_mut().unwrap().remove("retryContext");
    body
}

// ---- FITs and the JWKS ----------------------------------------------------------------------

#[tokio::test]
async fn install_posts_the_installed_event_with_a_fit_the_apps_verifier_accepts() {
    let site = forge_site(config_with(fast())).await;
    let sim = &site.sim;
    let installation = &site.forge.installation;

    let received = site.remote.received_at("/forge/lifecycle");
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    let claims = verifier(sim)
        .verify(request.authorization.as_deref())
        .await
        .unwrap();
    assert_eq!(claims.app.id, sim.forge_app_id());
    assert!(claims.app.id.starts_with("ari:cloud:ecosystem::app/"));
    assert_eq!(claims.app.installation_id, installation.installation_id);
    assert!(
        claims
            .app
            .installation_id
            .starts_with("ari:cloud:ecosystem::installation/")
    );
    assert_eq!(claims.app.api_base_url, sim.forge_api_base_url());
    assert_eq!(
        sim.forge_api_base_url(),
        format!("{}/ex/confluence/{}", sim.origin(), sim.cloud_id())
    );
    assert_eq!(claims.app.contexts.len(), 1);
    let context = &claims.app.contexts[0];
    assert_eq!(context.name.as_deref(), Some("confluence"));
    assert_eq!(context.cloud_id.as_deref(), Some(sim.cloud_id().as_str()));
    assert_eq!(
        context.api_base_url.as_deref(),
        Some(sim.forge_api_base_url().as_str())
    );
    let environment = claims.app.environment.as_ref().unwrap();
    assert_eq!(environment.kind.as_deref(), Some("DEVELOPMENT"));
    assert_eq!(
        environment.id.as_deref(),
        Some(installation.environment_id.as_str())
    );
    let module = claims.app.module.as_ref().unwrap();
    assert_eq!(module.kind.as_deref(), Some("core:endpoint"));
    assert_eq!(module.key.as_deref(), Some("forge-lifecycle-endpoint"));
    assert_eq!(claims.exp - claims.iat, 25);
    assert!(claims.principal.is_none() && claims.context.is_none());

    // What forge-auth does not type: the header, iss, nbf, appVersion, license.
    let fit = request.bearer().unwrap();
    assert_eq!(
        raw_header(fit),
        json!({"alg": "RS256", "kid": "confluence-sim/forge-fit-key-a", "typ": "JWT"})
    );
    let raw = raw_claims(fit);
    assert_eq!(raw["iss"], "forge/invocation-token");
    assert_eq!(raw["aud"], sim.forge_app_id());
    assert_eq!(raw["nbf"], raw["iat"]);
    assert_eq!(raw["app"]["appVersion"], "1.0.0");
    assert_eq!(raw["app"]["license"], json!({"isActive": true}));

    // Headers: the system token, the trace ids, no user token.
    assert_eq!(
        request.header("x-forge-oauth-system"),
        Some(site.forge.system_token.as_str())
    );
    assert_eq!(request.header("x-b3-traceid").unwrap().len(), 32);
    assert_eq!(request.header("x-b3-spanid").unwrap().len(), 16);
    assert!(request.header("x-forge-oauth-user").is_none());

    assert_eq!(
        request.body,
        json!({
            "eventType": "avi:forge:installed:app",
            "id": installation.installation_id,
            "installerAccountId": SITE_ADMIN_ACCOUNT_ID,
            "app": {"id": sim.forge_app_id(), "version": "1.0.0"},
            "environment": {"id": installation.environment_id},
            "context": {"cloudId": sim.cloud_id()},
        })
    );

    // The Forge app user is an app user of its own.
    let app_user = sim.user(&installation.app_account_id).unwrap();
    assert_eq!(app_user.account_type, AccountType::App);
    assert!(app_user.active);

    // The call is recorded without its secrets.
    let calls = sim.forge_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.kind, ForgeCallKind::Lifecycle);
    assert_eq!(call.event_type.as_deref(), Some("avi:forge:installed:app"));
    assert_eq!(call.attempt, 1);
    assert_eq!(call.status, Some(204));
    assert!(call.sent_system_token && !call.sent_user_token);
    assert_eq!(call.jti.as_deref(), Some(claims.jti.as_str()));
    assert!(call.headers.contains_key("x-b3-traceid"));
    for secret in [
        "authorization",
        "x-forge-oauth-system",
        "x-forge-oauth-user",
    ] {
        assert!(!call.headers.contains_key(secret), "{secret}");
    }
    assert_eq!(site.forge.lifecycle, *call);

    // Another app's verifier refuses the token.
    let other = FitVerifier::new(
        AppId::parse("ari:cloud:ecosystem::app/00000000-0000-4000-a000-000000000000").unwrap(),
        HttpJwksSource::new(sim.forge_jwks_url()).unwrap(),
    );
    assert_eq!(
        other.verify(request.authorization.as_deref()).await,
        Err(FitError::WrongAudience)
    );
}

#[tokio::test]
async fn the_jwks_serves_the_signing_key_and_keeps_rotated_ones() {
    let site = forge_site(config_with(fast())).await;
    let sim = &site.sim;
    let (status, jwks) = sim
        .request("GET", "/.well-known/jwks.json", None, None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], "confluence-sim/forge-fit-key-a");
    assert_eq!(keys[0]["kty"], "RSA");
    assert_eq!(keys[0]["alg"], "RS256");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["e"], "AQAB");
    assert!(keys[0]["n"].as_str().unwrap().len() > 300);
    assert_eq!(sim.count(&Endpoint::ForgeJwks), 1);

    sim.forge_rotate_key(ForgeKey::builtin_second());
    let (_, jwks) = sim
        .request("GET", "/.well-known/jwks.json", None, None)
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let fit = sim.forge_fit(&FitSpec::new()).unwrap();
    assert_eq!(raw_header(&fit)["kid"], "confluence-sim/forge-fit-key-b");
    let verifier = verifier(sim).key_cache(8, 0);
    verifier
        .verify(Some(&format!("Bearer {fit}")))
        .await
        .unwrap();
}

#[tokio::test]
async fn forged_fits_are_refused_by_the_apps_verifier() {
    let site = forge_site(config_with(fast())).await;
    let sim = &site.sim;
    let verifier = verifier(sim);
    let check = |spec: FitSpec| {
        let fit = sim.forge_fit(&spec).unwrap();
        let verifier = &verifier;
        async move { verifier.verify(Some(&format!("Bearer {fit}"))).await }
    };

    let genuine = check(FitSpec::new()).await.unwrap();
    assert_eq!(
        genuine.app.installation_id,
        site.forge.installation.installation_id
    );
    let now = sim.now();
    let public_pem = ForgeKey::builtin().public_pem;
    let cases: Vec<(FitSpec, FitError)> = vec![
        (
            FitSpec::new().signed_by(FitSigner::Unsigned),
            FitError::WrongAlgorithm,
        ),
        (
            FitSpec::new().signed_by(FitSigner::Hs256 {
                secret: public_pem.clone(),
            }),
            FitError::WrongAlgorithm,
        ),
        (
            // The header lies about the algorithm.
            FitSpec::new()
                .signed_by(FitSigner::Hs256 { secret: public_pem })
                .header(json!({"alg": "RS256"})),
            FitError::BadSignature,
        ),
        (
            FitSpec::new().signed_by(FitSigner::Rsa {
                private_pem: ForgeKey::builtin_second().private_pem,
            }),
            FitError::BadSignature,
        ),
        (FitSpec::new().kid("no-such-key"), FitError::UnknownKid),
        (
            FitSpec::new().header(json!({"kid": null})),
            FitError::MissingKid,
        ),
        (
            FitSpec::new().patch(json!({"aud": "ari:cloud:ecosystem::app/someone-else"})),
            FitError::WrongAudience,
        ),
        (
            FitSpec::new().patch(json!({"iss": "someone"})),
            FitError::WrongIssuer,
        ),
        (
            FitSpec::new().patch(json!({"jti": null})),
            FitError::MissingClaim("jti"),
        ),
        (
            FitSpec::new().patch(json!({"iat": now - 600, "nbf": now - 600, "exp": now - 575})),
            FitError::Expired,
        ),
        (
            FitSpec::new().patch(json!({"app": {"installationId": null}})),
            FitError::MissingClaim("app.installationId"),
        ),
    ];
    for (spec, expected) in cases {
        let described = format!("{spec:?}");
        assert_eq!(check(spec).await, Err(expected), "{described}");
    }

    // A UI FIT names the user and the page.
    let ui = sim
        .forge_fit(&FitSpec::ui(&site.demo.alice, Some(&site.demo.open_page)))
        .unwrap();
    let claims = verifier
        .verify(Some(&format!("Bearer {ui}")))
        .await
        .unwrap();
    assert_eq!(claims.principal.as_deref(), Some(site.demo.alice.as_str()));
    let raw = raw_claims(&ui);
    assert_eq!(
        raw["context"]["extension"]["content"]["id"],
        site.demo.open_page
    );
    assert_eq!(raw["app"]["module"]["key"], UI_MODULE_KEY);

    // The raw sender posts exactly what it is given.
    let forged = sim
        .forge_fit(&FitSpec::new().signed_by(FitSigner::Unsigned))
        .unwrap();
    let (status, _) = sim
        .forge_post(
            "/forge/events",
            Some(&forged),
            None,
            None,
            &json!({"eventType": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let got = site.remote.received_at("/forge/events");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bearer(), Some(forged.as_str()));
    assert!(got[0].header("x-forge-oauth-system").is_none());
    assert!(got[0].header("x-b3-traceid").is_some());
    assert_eq!(sim.forge_calls().last().unwrap().kind, ForgeCallKind::Raw);
}

// ---- UI invocations ---------------------------------------------------------------------------

#[tokio::test]
async fn a_ui_invocation_names_the_user_and_page_and_its_user_token_acts_as_the_user() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    site.remote
        .answer_json("/forge/ui/stamp", 200, json!({"stamped": true}));
    let (status, answer) = sim
        .forge_invoke_remote_on_page(
            &demo.alice,
            &demo.edit_restricted_page,
            "POST",
            "/forge/ui/stamp",
            Some(&json!({"mode": "now"})),
        )
        .await
        .unwrap();
    assert_eq!((status, answer), (200, json!({"stamped": true})));

    let request = site.remote.received_at("/forge/ui/stamp").pop().unwrap();
    assert_eq!(request.body, json!({"mode": "now"}));
    let claims = verifier(sim)
        .verify(request.authorization.as_deref())
        .await
        .unwrap();
    assert_eq!(claims.principal.as_deref(), Some(demo.alice.as_str()));
    let context = claims.context.as_ref().unwrap();
    assert_eq!(context.cloud_id.as_deref(), Some(sim.cloud_id().as_str()));
    assert_eq!(context.site_url.as_deref(), Some(sim.origin().as_str()));
    let raw = raw_claims(request.bearer().unwrap());
    assert_eq!(
        raw["context"]["extension"]["content"],
        json!({"id": demo.edit_restricted_page, "type": "page"})
    );
    assert_eq!(raw["context"]["extension"]["type"], "macro");
    assert_eq!(raw["app"]["module"]["type"], "xen:macro");

    // The user token acts as Alice (who may edit the page); the system token as the app user.
    let user_token = request.header("x-forge-oauth-user").unwrap().to_owned();
    let system_token = request.header("x-forge-oauth-system").unwrap().to_owned();
    assert_ne!(user_token, system_token);
    let (status, me) = gateway(sim, &user_token, "GET", "/rest/api/user/current", None).await;
    assert_eq!(
        (status, me["accountId"].as_str()),
        (200, Some(demo.alice.as_str()))
    );
    assert_eq!(
        put_page(sim, &system_token, &demo.edit_restricted_page, "<p>app</p>").await,
        403
    );
    assert_eq!(
        put_page(
            sim,
            &user_token,
            &demo.edit_restricted_page,
            "<p>Alice via Forge</p>"
        )
        .await,
        200
    );
    let last = sim
        .page(&demo.edit_restricted_page)
        .unwrap()
        .history
        .pop()
        .unwrap();
    assert_eq!(last.by, demo.alice);
    assert_eq!(
        last.via,
        EditVia::Impersonation {
            app_key: sim.forge_app_id()
        }
    );

    // No page: a context without content. A page the user cannot view: no macro to invoke.
    let (status, _) = sim
        .forge_invoke_remote(&demo.bob, "GET", "/forge/ui/state", None)
        .await
        .unwrap();
    assert_eq!(status, 204);
    let request = site.remote.received_at("/forge/ui/state").pop().unwrap();
    assert_eq!(request.method, "GET");
    let raw = raw_claims(request.bearer().unwrap());
    assert_eq!(raw["principal"], demo.bob);
    assert!(raw["context"]["extension"].get("content").is_none());
    assert!(
        sim.forge_invoke_remote_on_page(
            &demo.bob,
            &demo.view_restricted_page,
            "GET",
            "/forge/ui/state",
            None
        )
        .await
        .is_err()
    );
    let invocations: Vec<_> = sim
        .forge_calls()
        .into_iter()
        .filter(|c| c.kind == ForgeCallKind::Invocation)
        .collect();
    assert_eq!(invocations.len(), 2);
    assert!(
        invocations
            .iter()
            .all(|c| c.sent_user_token && c.sent_system_token)
    );
}

// ---- the API gateway ----------------------------------------------------------------------------

#[tokio::test]
async fn system_offline_and_user_tokens_meet_restrictions_as_their_users() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    let forge_user = site.forge.installation.app_account_id.clone();
    let system = sim.forge_system_token().unwrap();

    // The Forge app user: 404 where it cannot view, 403 where it cannot edit.
    assert_eq!(
        get_page(sim, &system, &demo.view_restricted_page).await,
        404
    );
    assert_eq!(
        get_page(sim, &system, &demo.edit_restricted_page).await,
        200
    );
    assert_eq!(
        put_page(sim, &system, &demo.edit_restricted_page, "<p>x</p>").await,
        403
    );
    let (status, _) = gateway(
        sim,
        &system,
        "GET",
        &format!(
            "/rest/api/content/{}/restriction/byOperation",
            demo.view_restricted_page
        ),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        put_page(sim, &system, &demo.open_page, "<p>by the app</p>").await,
        200
    );
    let last = sim.page(&demo.open_page).unwrap().history.pop().unwrap();
    assert_eq!(last.by, forge_user);
    assert_eq!(
        last.via,
        EditVia::AppUser {
            app_key: sim.forge_app_id()
        }
    );
    let (status, me) = gateway(sim, &system, "GET", "/rest/api/user/current", None).await;
    assert_eq!(status, 200);
    assert_eq!(me["accountId"], forge_user);
    assert_eq!(me["accountType"], "app");

    // Alice's offline token may do what Alice may.
    let offline = offline_token(sim, &system, &demo.alice).await;
    assert_eq!(
        get_page(sim, &offline, &demo.view_restricted_page).await,
        200
    );
    assert_eq!(
        put_page(sim, &offline, &demo.edit_restricted_page, "<p>Alice</p>").await,
        200
    );
    let (status, check) = gateway(
        sim,
        &offline,
        "POST",
        &format!("/rest/api/content/{}/permission/check", demo.open_page),
        Some(json!({"subject": {"type": "user", "identifier": forge_user}, "operation": "update"})),
    )
    .await;
    assert_eq!((status, &check["hasPermission"]), (200, &json!(true)));
    // Bob's offline token may not edit the edit-restricted page.
    let bob = offline_token(sim, &system, &demo.bob).await;
    assert_eq!(
        put_page(sim, &bob, &demo.edit_restricted_page, "<p>Bob</p>").await,
        403
    );

    // App access rules: blocking app users stops the system token only; blocking all apps stops
    // the user's token through the app too.
    sim.set_app_access(&demo.space, AppAccessRule::BlockAppUser)
        .unwrap();
    assert_eq!(get_page(sim, &system, &demo.open_page).await, 404);
    assert_eq!(get_page(sim, &offline, &demo.open_page).await, 200);
    sim.set_app_access(&demo.space, AppAccessRule::BlockAllApps)
        .unwrap();
    assert_eq!(get_page(sim, &offline, &demo.open_page).await, 404);
    let user = sim.forge_user_token(&demo.alice).unwrap();
    assert_eq!(get_page(sim, &user, &demo.open_page).await, 404);
    sim.set_app_access(&demo.space, AppAccessRule::Allowed)
        .unwrap();
    assert_eq!(get_page(sim, &user, &demo.open_page).await, 200);
}

#[tokio::test]
async fn the_gateway_refuses_other_sites_connect_jwts_and_unknown_tokens() {
    let sim = Simulator::start(config_with(fast())).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("", ALL_SCOPES).await;
    let connect = sim.install(&app.base_url()).await.unwrap();
    sim.forge_install(&app.base_url()).await.unwrap();
    let system = sim.forge_system_token().unwrap();
    let page = format!("/api/v2/pages/{}", demo.open_page);

    assert_eq!(get_page(&sim, &system, &demo.open_page).await, 200);
    // Another cloudId: 404, whatever the token.
    let (status, _) = sim
        .request(
            "GET",
            &format!("/ex/confluence/00000000-0000-4000-a000-000000000000/wiki{page}"),
            Some(&format!("Bearer {system}")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    // Not a product API: 404.
    let (status, _) = gateway(&sim, &system, "GET", "/../graphql", None).await;
    assert_eq!(status, 404);
    // Unknown tokens, Connect's bearer tokens, no token: 401.
    assert_eq!(
        get_page(&sim, "sim-forge-made-up", &demo.open_page).await,
        401
    );
    let connect_token = support::user_token(&sim, &connect, &demo.alice).await;
    assert_eq!(get_page(&sim, &connect_token, &demo.open_page).await, 401);
    let (status, _) = sim
        .request(
            "GET",
            &format!("/ex/confluence/{}/wiki{page}", sim.cloud_id()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    // A Connect JWT is not accepted there, though it works at /wiki.
    let jwt_response = call_as_app(&sim, &connect, "GET", &page, None).await;
    assert_eq!(jwt_response.status().as_u16(), 200);
    let token = connect_auth::mint_app_token(
        &connect.app_key,
        &connect.client_key,
        &connect_auth::SecretString::from(connect.shared_secret.clone()),
        "GET",
        &url::Url::parse(&format!("{}{page}", sim.site_base_url())).unwrap(),
        &url::Url::parse(&sim.site_base_url()).unwrap(),
        sim.now(),
    )
    .unwrap();
    let (status, _) = sim
        .request(
            "GET",
            &format!("/ex/confluence/{}/wiki{page}", sim.cloud_id()),
            Some(&format!("JWT {token}")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    // Forge tokens are not accepted at /wiki either.
    let response = support::call_as_bearer(&sim, &system, "GET", &page, None).await;
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn gateway_requests_are_counted_apart_and_can_be_faulted() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    let system = sim.forge_system_token().unwrap();
    sim.fail_next(
        Endpoint::AnyForgeRest,
        Fault::TooManyRequests {
            retry_after: Some(7),
        },
        1,
    );
    let path = format!(
        "/ex/confluence/{}/wiki/api/v2/pages/{}",
        sim.cloud_id(),
        demo.open_page
    );
    let response = reqwest::Client::new()
        .get(format!("{}{path}", sim.origin()))
        .header("authorization", format!("Bearer {system}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(get_page(sim, &system, &demo.open_page).await, 200);
    sim.fail_next(
        Endpoint::ForgeRest(Box::new(Endpoint::UpdatePage)),
        Fault::ServerError(503),
        1,
    );
    assert_eq!(get_page(sim, &system, &demo.open_page).await, 200);
    assert_eq!(
        put_page(sim, &system, &demo.open_page, "<p>1</p>").await,
        503
    );
    assert_eq!(
        put_page(sim, &system, &demo.open_page, "<p>2</p>").await,
        200
    );

    assert_eq!(sim.count(&Endpoint::AnyForgeRest), 5);
    assert_eq!(
        sim.count(&Endpoint::ForgeRest(Box::new(Endpoint::GetPage))),
        3
    );
    assert_eq!(
        sim.count(&Endpoint::ForgeRest(Box::new(Endpoint::AnyConfluence))),
        5
    );
    assert_eq!(sim.count(&Endpoint::GetPage), 0);
    assert_eq!(sim.count(&Endpoint::AnyConfluence), 0);
    let recorded = sim.requests();
    let last = recorded.last().unwrap();
    assert_eq!(
        last.caller.as_deref(),
        Some(
            format!(
                "forge-system:{} via {}",
                site.forge.installation.app_account_id,
                sim.forge_app_id()
            )
            .as_str()
        )
    );

    // An ExpiredToken fault expires the presented token for good.
    sim.fail_next(Endpoint::AnyForgeRest, Fault::ExpiredToken, 1);
    assert_eq!(get_page(sim, &system, &demo.open_page).await, 401);
    assert_eq!(get_page(sim, &system, &demo.open_page).await, 401);

    // GraphQL is counted apart and can be rate limited too.
    let system = sim.forge_system_token().unwrap();
    sim.fail_next(
        Endpoint::ForgeGraphql,
        Fault::TooManyRequests {
            retry_after: Some(2),
        },
        1,
    );
    let (status, _) = offline_exchange(
        sim,
        Some(&format!("Bearer {system}")),
        json!([sim.forge_context_ari()]),
        &demo.alice,
    )
    .await;
    assert_eq!(status, 429);
    offline_token(sim, &system, &demo.alice).await;
    assert_eq!(sim.count(&Endpoint::ForgeGraphql), 2);
    assert_eq!(sim.offline_token_exchanges().len(), 1);
}

// ---- offline user impersonation --------------------------------------------------------------

#[tokio::test]
async fn offline_tokens_are_issued_for_people_and_refused_for_the_rest() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    let system = sim.forge_system_token().unwrap();
    let bearer = format!("Bearer {system}");
    let site_ari = json!([sim.forge_context_ari()]);
    assert_eq!(
        sim.forge_context_ari(),
        format!("ari:cloud:confluence::site/{}", sim.cloud_id())
    );

    let (status, body) = offline_exchange(sim, Some(&bearer), site_ari.clone(), &demo.alice).await;
    assert_eq!(status, 200);
    let answer = &body["data"]["offlineUserAuthToken"];
    assert_eq!(answer["success"], true);
    assert_eq!(answer["errors"], Value::Null);
    assert_eq!(answer["authToken"]["ttl"], 900);
    assert!(answer["authToken"]["token"].as_str().unwrap().len() > 20);

    // The input written inline in the query works too.
    let inline = json!({"query": format!(
        "mutation {{ offlineUserAuthToken(input: {{contextIds: [\"{}\"], userId: \"{}\"}}) {{ success authToken {{ token ttl }} }} }}",
        sim.forge_context_ari(), demo.bob)});
    let (status, body) = sim
        .request("POST", "/graphql", Some(&bearer), Some(&inline))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["offlineUserAuthToken"]["success"], true,
        "{body}"
    );

    // Refusals: success false, a message, no token.
    sim.set_user_active(&demo.carol, false).unwrap();
    sim.forge_reject_offline_for(&demo.bob);
    let forge_user = site.forge.installation.app_account_id.clone();
    let refusals = [
        (site_ari.clone(), "5b10a2844c20165700e00000".to_owned()),
        (site_ari.clone(), demo.carol.clone()),
        (site_ari.clone(), forge_user),
        (site_ari.clone(), demo.bob.clone()),
        (
            json!([format!("ari:cloud:jira::site/{}", sim.cloud_id())]),
            demo.alice.clone(),
        ),
        (
            json!([sim.forge_context_ari(), sim.forge_context_ari()]),
            demo.alice.clone(),
        ),
        (json!([]), demo.alice.clone()),
    ];
    for (contexts, user) in refusals {
        let (status, body) = offline_exchange(sim, Some(&bearer), contexts.clone(), &user).await;
        assert_eq!(status, 200, "{contexts} {user}");
        let answer = &body["data"]["offlineUserAuthToken"];
        assert_eq!(answer["success"], false, "{contexts} {user}: {body}");
        assert_eq!(answer["authToken"], Value::Null);
        assert!(answer["errors"][0]["message"].as_str().unwrap().len() > 5);
    }
    sim.forge_allow_offline_for(&demo.bob);
    offline_token(sim, &system, &demo.bob).await;

    // Without a valid system token: 401.
    let user_token = sim.forge_user_token(&demo.alice).unwrap();
    let offline = offline_token(sim, &system, &demo.alice).await;
    for authorization in [
        None,
        Some("Bearer sim-forge-made-up".to_owned()),
        Some(format!("Bearer {user_token}")),
        Some(format!("Bearer {offline}")),
    ] {
        let (status, _) =
            offline_exchange(sim, authorization.as_deref(), site_ari.clone(), &demo.alice).await;
        assert_eq!(status, 401, "{authorization:?}");
    }
    sim.forge_expire_system_tokens();
    let (status, _) = offline_exchange(sim, Some(&bearer), site_ari.clone(), &demo.alice).await;
    assert_eq!(status, 401);

    // Every answered exchange is listed, with who asked for whom.
    let exchanges = sim.offline_token_exchanges();
    assert_eq!(exchanges.len(), 11);
    assert_eq!(exchanges.iter().filter(|e| e.success).count(), 4);
    assert!(
        exchanges
            .iter()
            .all(|e| e.installation_id == site.forge.installation.installation_id)
    );
    let first = &exchanges[0];
    assert_eq!(first.account_id.as_deref(), Some(demo.alice.as_str()));
    assert_eq!(first.ttl, Some(900));
    assert_eq!(first.context_ids, vec![sim.forge_context_ari()]);
}

#[tokio::test]
async fn tokens_expire_on_the_simulators_clock() {
    let clock = ManualClock::at(START);
    let config = SimConfig {
        forge: fast(),
        ..SimConfig::with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
    };
    let site = forge_site(config).await;
    let (sim, demo) = (&site.sim, &site.demo);
    let system = site.forge.system_token.clone();
    let user = sim.forge_user_token(&demo.alice).unwrap();
    let offline = offline_token(sim, &system, &demo.alice).await;
    let page = &demo.open_page;

    // FITs are stamped with the simulator's time.
    let fit = site.remote.received_at("/forge/lifecycle")[0]
        .bearer()
        .unwrap()
        .to_owned();
    let on_clock = FitVerifier::with_clock(
        AppId::parse(&sim.forge_app_id()).unwrap(),
        HttpJwksSource::new(sim.forge_jwks_url()).unwrap(),
        Arc::clone(&clock),
    );
    let claims = on_clock
        .verify(Some(&format!("Bearer {fit}")))
        .await
        .unwrap();
    assert_eq!((claims.iat, claims.exp), (START, START + 25));
    clock.advance(60);
    assert_eq!(
        on_clock.verify(Some(&format!("Bearer {fit}"))).await,
        Err(FitError::Expired)
    );

    clock.set(START + 899);
    assert_eq!(get_page(sim, &offline, page).await, 200);
    clock.set(START + 900);
    assert_eq!(get_page(sim, &offline, page).await, 401);
    assert_eq!(get_page(sim, &system, page).await, 200);
    assert_eq!(get_page(sim, &user, page).await, 200);

    clock.set(START + 2 * 3600 + 299);
    assert_eq!(get_page(sim, &system, page).await, 200);
    clock.set(START + 2 * 3600 + 300);
    assert_eq!(get_page(sim, &system, page).await, 401);
    assert_eq!(get_page(sim, &user, page).await, 200);
    clock.set(START + 4 * 3600);
    assert_eq!(get_page(sim, &user, page).await, 401);

    // Expired early by hand.
    let system = sim.forge_system_token().unwrap();
    let user = sim.forge_user_token(&demo.alice).unwrap();
    sim.forge_expire_user_tokens();
    assert_eq!(get_page(sim, &user, page).await, 401);
    assert_eq!(get_page(sim, &system, page).await, 200);
    sim.forge_expire_system_tokens();
    assert_eq!(get_page(sim, &system, page).await, 401);
}

// ---- events ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_event_is_retried_with_a_fresh_fit_and_a_retry_context() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    site.remote.answer_sequence("/forge/events", &[500, 204]);
    let connect = sim
        .edit_page_as(&demo.alice, &demo.open_page, "<p>new</p>")
        .await
        .unwrap();
    assert!(connect.is_empty());

    let events = sim.wait_for_forge_events(2, WAIT).await;
    assert_eq!(events.len(), 2);
    let (first, retry) = (&events[0], &events[1]);
    assert_eq!((first.attempt, first.status), (1, Some(500)));
    assert_eq!((retry.attempt, retry.status), (2, Some(204)));
    assert_eq!(first.delivery_id, retry.delivery_id);
    assert!(first.retry_context().is_none());
    assert_eq!(
        retry.retry_context(),
        Some(&json!({"attempt": 2, "retryReason": "SERVER_ERROR",
                     "retryData": {"statusCode": 500}}))
    );
    assert_eq!(without_retry_context(&retry.body), first.body);
    assert_ne!(first.jti, retry.jti);

    let page = sim.page(&demo.open_page).unwrap();
    assert_eq!(
        first.body,
        json!({
            "eventType": "avi:confluence:updated:page",
            "atlassianId": demo.alice,
            "content": {
                "id": demo.open_page,
                "type": "page",
                "status": "current",
                "title": page.title,
                "space": {"id": page.space_id, "key": demo.space},
                "version": {"number": page.version},
            },
            "selfGenerated": false,
            "updateTrigger": "edit_page",
        })
    );

    // The remote saw both, each with a FIT that verifies, with its own jti and system token.
    let received = site.remote.received_at("/forge/events");
    assert_eq!(received.len(), 2);
    let verifier = verifier(sim);
    let mut jtis = Vec::new();
    for request in &received {
        let claims = verifier
            .verify(request.authorization.as_deref())
            .await
            .unwrap();
        assert_eq!(
            claims.app.module.unwrap().key.as_deref(),
            Some(EVENTS_ENDPOINT_KEY)
        );
        assert!(request.header("x-forge-oauth-system").is_some());
        assert!(request.header("x-forge-oauth-user").is_none());
        jtis.push(claims.jti);
    }
    assert_ne!(jtis[0], jtis[1]);
    assert_ne!(
        received[0].header("x-forge-oauth-system"),
        received[1].header("x-forge-oauth-system")
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sim.forge_events().len(), 2);
}

#[tokio::test]
async fn redirects_401s_and_5xx_are_retried_four_times_and_other_4xx_are_not() {
    for (status, reason, attempts) in [
        (302, Some("REDIRECT"), 5),
        (401, Some("INVALID_FORGE_INVOCATION_TOKEN"), 5),
        (503, Some("SERVER_ERROR"), 5),
        (400, None, 1),
        (404, None, 1),
        (200, None, 1),
    ] {
        let site = forge_site(config_with(fast())).await;
        let (sim, demo) = (&site.sim, &site.demo);
        site.remote.answer("/forge/events", status);
        sim.edit_page_as(&demo.alice, &demo.open_page, "<p>x</p>")
            .await
            .unwrap();
        sim.wait_for_forge_events(attempts, WAIT).await;
        // Enough time for a sixth attempt, were there one.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events = sim.forge_events();
        assert_eq!(events.len(), attempts, "{status}");
        assert_eq!(site.remote.received_at("/forge/events").len(), attempts);
        for (n, event) in events.iter().enumerate() {
            assert_eq!(event.attempt as usize, n + 1);
            assert_eq!(event.status, Some(status));
            if n > 0 {
                let context = event.retry_context().unwrap();
                assert_eq!(context["attempt"], n + 1);
                assert_eq!(context["retryReason"].as_str(), reason);
            }
        }
        if status == 302 {
            // The redirect was not followed.
            assert!(site.remote.received_at("/moved").is_empty());
        }
    }
}

#[tokio::test]
async fn a_timeout_is_a_failure_and_is_retried() {
    let site = forge_site(config_with(ForgeConfig {
        event_timeout: Duration::from_millis(400),
        ..fast()
    }))
    .await;
    let (sim, demo) = (&site.sim, &site.demo);
    site.remote
        .answer_after("/forge/events", Some(Duration::from_millis(1500)));
    sim.edit_page_as(&demo.alice, &demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    // The first attempt is over (timed out) when the edit returns; the remote is fast again.
    site.remote.answer_after("/forge/events", None);
    let events = sim.wait_for_forge_events(2, WAIT).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].status, None);
    assert_eq!(events[0].error.as_deref(), Some("timeout"));
    assert_eq!(events[1].status, Some(204));
    assert_eq!(events[1].retry_context().unwrap()["retryReason"], "TIMEOUT");
}

#[tokio::test]
async fn page_changes_send_created_updated_and_permission_events_and_self_marks_the_apps_own() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);

    let (created, _) = sim
        .create_page_as(&demo.bob, &demo.space, "Fresh page", "<p>hi</p>")
        .await
        .unwrap();
    sim.set_restrictions_as(
        &demo.alice,
        &demo.open_page,
        vec![],
        vec![demo.alice.clone()],
    )
    .await
    .unwrap();
    let events = sim.forge_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].body["eventType"], "avi:confluence:created:page");
    assert_eq!(events[0].body["content"]["id"], created);
    assert_eq!(events[0].body["atlassianId"], demo.bob);
    assert!(events[0].body.get("updateTrigger").is_none());
    assert_eq!(
        events[1].body["eventType"],
        "avi:confluence:permissions_updated:page"
    );

    // The app's own changes, with any of its tokens, are selfGenerated.
    let system = sim.forge_system_token().unwrap();
    let offline = offline_token(sim, &system, &demo.alice).await;
    assert_eq!(put_page(sim, &system, &created, "<p>app</p>").await, 200);
    assert_eq!(put_page(sim, &offline, &created, "<p>alice</p>").await, 200);
    let (status, _) = gateway(
        sim,
        &offline,
        "PUT",
        &format!(
            "/rest/api/content/{created}/restriction/byOperation/update/user?accountId={}",
            demo.alice
        ),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let events = sim.wait_for_forge_events(5, WAIT).await;
    assert_eq!(events.len(), 5);
    // The app's requests fire their events after answering, so their order may vary.
    let mut own: Vec<_> = events[2..]
        .iter()
        .map(|e| {
            (
                e.body["eventType"].as_str().unwrap().to_owned(),
                e.body["atlassianId"].as_str().unwrap().to_owned(),
                e.body["selfGenerated"].as_bool(),
            )
        })
        .collect();
    own.sort();
    let app_user = site.forge.installation.app_account_id.clone();
    let mut expected = vec![
        (
            "avi:confluence:updated:page".to_owned(),
            app_user,
            Some(true),
        ),
        (
            "avi:confluence:updated:page".to_owned(),
            demo.alice.clone(),
            Some(true),
        ),
        (
            "avi:confluence:permissions_updated:page".to_owned(),
            demo.alice.clone(),
            Some(true),
        ),
    ];
    expected.sort();
    assert_eq!(own, expected);

    // A duplicate: the same body again, as a new delivery.
    let duplicate = sim.forge_redeliver(&events[0]).await.unwrap();
    assert_eq!(duplicate.body, events[0].body);
    assert_eq!(duplicate.url, events[0].url);
    assert_ne!(duplicate.delivery_id, events[0].delivery_id);
    assert_ne!(duplicate.jti, events[0].jti);
}

#[tokio::test]
async fn pages_the_forge_app_cannot_view_send_it_no_events_unless_fired_by_hand() {
    let site = forge_site(config_with(fast())).await;
    let (sim, demo) = (&site.sim, &site.demo);
    sim.edit_page_as(&demo.alice, &demo.view_restricted_page, "<p>secret</p>")
        .await
        .unwrap();
    sim.set_restrictions_as(
        &demo.alice,
        &demo.view_restricted_page,
        vec![demo.alice.clone()],
        vec![],
    )
    .await
    .unwrap();
    assert!(sim.forge_events().is_empty());

    let call = sim
        .fire_forge_event(
            "avi:confluence:updated:page",
            &demo.view_restricted_page,
            &demo.alice,
        )
        .await
        .unwrap();
    assert_eq!(call.status, Some(204));
    assert_eq!(call.body["content"]["id"], demo.view_restricted_page);
    assert_eq!(call.body["selfGenerated"], false);
    assert_eq!(site.remote.received_at("/forge/events").len(), 1);

    // A switch sends events whatever the app may view, as it does for Connect webhooks.
    let lenient = forge_site(SimConfig {
        webhooks_require_app_view: false,
        ..config_with(fast())
    })
    .await;
    lenient
        .sim
        .edit_page_as(
            &lenient.demo.alice,
            &lenient.demo.view_restricted_page,
            "<p>secret</p>",
        )
        .await
        .unwrap();
    assert_eq!(lenient.sim.forge_events().len(), 1);
}

#[tokio::test]
async fn events_can_be_delivered_wrapped_with_their_context() {
    let site = forge_site(config_with(ForgeConfig {
        wrap_events: true,
        ..fast()
    }))
    .await;
    let (sim, demo) = (&site.sim, &site.demo);
    site.remote.answer_sequence("/forge/events", &[503]);
    sim.edit_page_as(&demo.alice, &demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    let events = sim.wait_for_forge_events(2, WAIT).await;
    let body = &events[0].body;
    assert_eq!(body["payload"]["eventType"], "avi:confluence:updated:page");
    assert_eq!(
        body["context"],
        json!({"cloudId": sim.cloud_id(), "moduleKey": "forge-page-events"})
    );
    assert_eq!(events[1].body["payload"], body["payload"]);
    assert_eq!(events[1].retry_context().unwrap()["attempt"], 2);
}

// ---- lifecycle, scheduled trigger, Connect on Forge ------------------------------------------

#[tokio::test]
async fn upgrades_keep_the_installation_and_reinstalls_replace_it() {
    let site = forge_site(config_with(fast())).await;
    let sim = &site.sim;
    let first = site.forge.installation.clone();

    let upgraded = sim.forge_upgrade().await.unwrap();
    assert_eq!(
        upgraded.event_type.as_deref(),
        Some("avi:forge:upgraded:app")
    );
    assert_eq!(upgraded.body["id"], first.installation_id);
    assert_eq!(upgraded.body["app"]["version"], "2.0.0");
    assert_eq!(upgraded.body["upgraderAccountId"], SITE_ADMIN_ACCOUNT_ID);
    let fit = upgraded.fit.as_deref().unwrap();
    assert_eq!(raw_claims(fit)["app"]["appVersion"], "2.0.0");
    assert_eq!(
        raw_claims(fit)["app"]["installationId"],
        first.installation_id
    );
    assert_eq!(sim.forge_installation().unwrap().app_version, "2.0.0");

    // The scheduled trigger hands over a fresh system token.
    let tick = sim.forge_scheduled_tick().await.unwrap();
    assert_eq!(tick.kind, ForgeCallKind::Scheduled);
    assert_eq!(tick.path, "/remote/forge/scheduled");
    assert_eq!(
        tick.body,
        json!({"context": {"cloudId": sim.cloud_id(), "moduleKey": "forge-hourly-trigger"}})
    );
    let request = site.remote.received_at("/forge/scheduled").pop().unwrap();
    let fresh = request.header("x-forge-oauth-system").unwrap().to_owned();
    assert_ne!(fresh, site.forge.system_token);
    let claims = verifier(sim)
        .verify(request.authorization.as_deref())
        .await
        .unwrap();
    assert_eq!(
        claims.app.module.unwrap().key.as_deref(),
        Some(SCHEDULED_ENDPOINT_KEY)
    );
    assert_eq!(get_page(sim, &fresh, &site.demo.open_page).await, 200);

    // A re-install is a new installation: the old tokens stop working; the app user stays.
    let again = sim.forge_install(&site.remote.base_url()).await.unwrap();
    assert_ne!(again.installation.installation_id, first.installation_id);
    assert_eq!(again.installation.app_account_id, first.app_account_id);
    assert_eq!(get_page(sim, &fresh, &site.demo.open_page).await, 401);
    assert_eq!(
        get_page(sim, &again.system_token, &site.demo.open_page).await,
        200
    );

    // Uninstalled: nothing works and nothing is sent.
    sim.forge_uninstall().unwrap();
    assert_eq!(
        get_page(sim, &again.system_token, &site.demo.open_page).await,
        401
    );
    assert!(!sim.user(&first.app_account_id).unwrap().active);
    let before = sim.forge_calls().len();
    sim.edit_page_as(&site.demo.alice, &site.demo.open_page, "<p>y</p>")
        .await
        .unwrap();
    assert_eq!(sim.forge_calls().len(), before);
    assert!(sim.forge_scheduled_tick().await.is_err());
    assert!(!sim.forge_installation().unwrap().installed);
}

#[tokio::test]
async fn the_snapshot_shows_the_forge_installation_without_tokens() {
    let site = forge_site(config_with(fast())).await;
    let sim = &site.sim;
    let system = sim.forge_system_token().unwrap();
    let offline = offline_token(sim, &system, &site.demo.alice).await;
    let snapshot = sim.snapshot();
    let forge = &snapshot["forge"];
    assert_eq!(forge["app_id"], sim.forge_app_id());
    assert_eq!(forge["jwks_url"], sim.forge_jwks_url());
    assert_eq!(
        forge["installation"]["installation_id"],
        site.forge.installation.installation_id
    );
    assert_eq!(forge["installation"]["installed"], true);
    let text = snapshot.to_string();
    for token in [&site.forge.system_token, &system, &offline] {
        assert!(!text.contains(token.as_str()));
    }
    assert!(!format!("{:?}", site.forge).contains(&site.forge.system_token));

    let (status, state) = sim.request("GET", "/_sim/state", None, None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(state["forge"]["installation"], forge["installation"]);
}

#[tokio::test]
async fn a_connect_app_adopting_forge_gets_installed_again_with_the_installation_id() {
    let sim = Simulator::start(config_with(fast())).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    // One backend, both front doors.
    let app = fake_app("", ALL_SCOPES).await;
    let connect = sim.install(&app.base_url()).await.unwrap();
    let (forge, relinked) = sim
        .forge_install_linked(APP_KEY, &app.base_url())
        .await
        .unwrap();
    assert_eq!(forge.installation.connect_app_key.as_deref(), Some(APP_KEY));

    let installed = app.received_at("/installed");
    assert_eq!(installed.len(), 2);
    assert!(installed[0].body.get("installationId").is_none());
    assert_eq!(
        installed[1].body["installationId"],
        forge.installation.installation_id
    );
    assert_eq!(installed[1].body["sharedSecret"], connect.shared_secret);
    assert_eq!(installed[1].body["clientKey"], connect.client_key);
    assert_eq!(
        relinked.forge_installation_id.as_deref(),
        Some(forge.installation.installation_id.as_str())
    );
    // The Forge lifecycle event came first.
    let order: Vec<String> = app
        .received()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p != "/enabled")
        .collect();
    assert_eq!(order, vec!["/installed", "/forge/lifecycle", "/installed"]);
    // Registered with Forge: no more enabled / disabled.
    assert_eq!(app.received_at("/enabled").len(), 1);
    assert!(sim.disable(APP_KEY).await.unwrap().is_none());
    assert!(app.received_at("/disabled").is_empty());
    sim.enable(APP_KEY).await.unwrap();

    // A new app account: restrictions naming the Connect app user do not name it.
    assert_ne!(forge.installation.app_account_id, connect.app_account_id);
    sim.restrict(
        &demo.open_page,
        &[&demo.alice, &connect.app_account_id],
        &[&demo.alice, &connect.app_account_id],
    )
    .unwrap();
    let page = format!("/api/v2/pages/{}", demo.open_page);
    let response = call_as_app(&sim, &connect, "GET", &page, None).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        get_page(&sim, &forge.system_token, &demo.open_page).await,
        404
    );

    // The Forge app's edits reach the Connect app as webhooks, and the Forge app as events.
    assert_eq!(
        put_page(
            &sim,
            &forge.system_token,
            &demo.edit_restricted_page,
            "<p>x</p>"
        )
        .await,
        403
    );
    let offline = offline_token(&sim, &forge.system_token, &demo.alice).await;
    assert_eq!(
        put_page(&sim, &offline, &demo.edit_restricted_page, "<p>x</p>").await,
        200
    );
    let deliveries = sim.wait_for_deliveries(1, WAIT).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].body["userAccountId"], demo.alice);
    let events = sim.wait_for_forge_events(1, WAIT).await;
    assert_eq!(events[0].body["selfGenerated"], true);
}

#[tokio::test]
async fn forge_installs_call_only_loopback_remotes() {
    let sim = Simulator::start(config_with(fast())).await.unwrap();
    assert!(matches!(
        sim.forge_install("https://example.com").await,
        Err(confluence_sim::SimError::NotLoopback(_))
    ));
    assert!(sim.forge_installation().is_none());
    assert!(sim.forge_system_token().is_err());
    assert!(sim.forge_fit(&FitSpec::new()).is_err());
}
