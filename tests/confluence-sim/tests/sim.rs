//! The simulator's own behaviour: lifecycle, Confluence's answers, its auth checks, the OAuth
//! server's claim checks, webhooks, and injected faults.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::time::Duration;

use confluence_sim::{
    AppAccessRule, EditVia, Endpoint, Fault, InstallKey, InstallState, SimClock, SimConfig,
    Simulator,
};
use connect_auth::{
    CachingKeyProvider, FixedClock, Hs256Verifier, HttpKeyProvider, InstallVerifier, QshMode,
    RequestParts, SecretString, sign_hs256,
};
use serde_json::{Value, json};
use support::{
    ALL_SCOPES, APP_KEY, FakeApp, ReceivedExt, assertion, call_as_app, call_as_bearer, exchange,
    fake_app, installed, installed_with, send, user_token,
};
use url::Url;

/// A change to a token's claims.
type ClaimEdit<'a> = Box<dyn Fn(&mut Value) + 'a>;

fn install_verifier(
    sim: &Simulator,
    app: &FakeApp,
) -> InstallVerifier<CachingKeyProvider<HttpKeyProvider>> {
    let keys = HttpKeyProvider::configured(reqwest::Client::new(), &sim.keys_url());
    InstallVerifier::new(CachingKeyProvider::new(keys, 4), [app.base_url()])
}

// ---- lifecycle ------------------------------------------------------------------------------

#[tokio::test]
async fn install_posts_an_rs256_signed_installed_that_verifies_with_the_served_key_then_enabled() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let app = fake_app("/app", ALL_SCOPES).await;
    let installation = sim.install(&app.base_url()).await.unwrap();

    let installed = app.received_at("/installed");
    assert_eq!(installed.len(), 1);
    let request = &installed[0];
    let claims = install_verifier(&sim, &app)
        .verify(request.jwt(), &request.parts("/app"))
        .await
        .unwrap();
    assert_eq!(claims.iss, sim.client_key());
    let payload = &request.body;
    assert_eq!(payload["eventType"], "installed");
    assert_eq!(payload["key"], APP_KEY);
    assert_eq!(payload["clientKey"], sim.client_key());
    assert_eq!(payload["baseUrl"], sim.site_base_url());
    assert_eq!(payload["productType"], "confluence");
    assert_eq!(payload["sharedSecret"], installation.shared_secret);
    assert_eq!(
        payload["oauthClientId"].as_str(),
        installation.oauth_client_id.as_deref()
    );
    assert!(installation.oauth_client_id.is_some());

    let enabled = app.received_at("/enabled");
    assert_eq!(enabled.len(), 1);
    let secret = SecretString::from(installation.shared_secret.clone());
    let claims = Hs256Verifier::default()
        .verify(
            enabled[0].jwt(),
            &secret,
            &enabled[0].parts("/app"),
            QshMode::Computed,
        )
        .unwrap();
    assert_eq!(claims.iss, sim.client_key());
    assert!(enabled[0].body.get("sharedSecret").is_none());

    let app_user = sim.user(&installation.app_account_id).unwrap();
    assert_eq!(app_user.account_type, confluence_sim::AccountType::App);
    assert_eq!(installation.state, InstallState::Enabled);
}

#[tokio::test]
async fn an_app_without_act_as_user_gets_no_oauth_client_id_and_no_tokens() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    sim.seed_demo().unwrap();
    let app = fake_app("", &["READ", "WRITE"]).await;
    let installation = sim.install(&app.base_url()).await.unwrap();
    assert!(installation.oauth_client_id.is_none());
    assert!(
        app.received_at("/installed")[0]
            .body
            .get("oauthClientId")
            .is_none()
    );
}

#[tokio::test]
async fn an_install_the_app_refuses_leaves_no_installation() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let app = fake_app("", ALL_SCOPES).await;
    app.answer("/installed", 401);
    let err = sim.install(&app.base_url()).await.unwrap_err();
    assert!(
        matches!(
            err,
            confluence_sim::SimError::CallbackRefused { status: 401, .. }
        ),
        "{err}"
    );
    assert!(sim.installation(APP_KEY).is_none());
}

#[tokio::test]
async fn apps_off_loopback_are_never_called() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let err = sim.install("https://example.com").await.unwrap_err();
    assert!(matches!(err, confluence_sim::SimError::NotLoopback(_)));
    let app = fake_app("", ALL_SCOPES).await;
    app.edit_descriptor(|d| d["baseUrl"] = json!("https://understudy.example.com"));
    let err = sim.install(&app.base_url()).await.unwrap_err();
    assert!(
        matches!(err, confluence_sim::SimError::NotLoopback(_)),
        "{err}"
    );
}

#[tokio::test]
async fn rotating_the_secret_reinstalls_signed_and_old_secret_tokens_stop_working() {
    let (sim, demo, app, first) = installed(ALL_SCOPES).await;
    let rotated = sim.reinstall_with_new_secret(APP_KEY).await.unwrap();
    assert_ne!(rotated.shared_secret, first.shared_secret);
    assert_eq!(rotated.client_key, first.client_key);
    assert_eq!(rotated.oauth_client_id, first.oauth_client_id);
    assert_eq!(rotated.app_account_id, first.app_account_id);
    let second = &app.received_at("/installed")[1];
    install_verifier(&sim, &app)
        .verify(second.jwt(), &second.parts(""))
        .await
        .unwrap();
    assert_eq!(second.body["sharedSecret"], rotated.shared_secret);

    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    assert_eq!(
        call_as_app(&sim, &first, "GET", &path, None).await.status(),
        401
    );
    assert_eq!(
        call_as_app(&sim, &rotated, "GET", &path, None)
            .await
            .status(),
        200
    );

    // An upgrade keeps the secret.
    let upgraded = sim.reinstall(APP_KEY).await.unwrap();
    assert_eq!(upgraded.shared_secret, rotated.shared_secret);
}

#[tokio::test]
async fn a_refused_rotation_keeps_the_old_secret() {
    let (sim, demo, app, first) = installed(ALL_SCOPES).await;
    app.answer("/installed", 500);
    assert!(sim.reinstall_with_new_secret(APP_KEY).await.is_err());
    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    assert_eq!(
        call_as_app(&sim, &first, "GET", &path, None).await.status(),
        200
    );
}

#[tokio::test]
async fn a_rotated_install_key_signs_with_its_new_kid_and_both_keys_are_served() {
    let (sim, _demo, app, _) = installed(ALL_SCOPES).await;
    sim.rotate_install_key(InstallKey::builtin_second());
    sim.reinstall(APP_KEY).await.unwrap();
    let second = &app.received_at("/installed")[1];
    let header = jsonwebtoken::decode_header(second.jwt()).unwrap();
    assert_eq!(header.kid.as_deref(), Some("confluence-sim/install-key-b"));
    install_verifier(&sim, &app)
        .verify(second.jwt(), &second.parts(""))
        .await
        .unwrap();
    for kid in [
        "confluence-sim/install-key-a",
        "confluence-sim/install-key-b",
    ] {
        let r = reqwest::get(format!("{}/{kid}", sim.keys_url()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.text()
                .await
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }
    let r = reqwest::get(format!("{}/nope", sim.keys_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn disabled_apps_are_refused_and_uninstall_is_signed_and_revokes_everything() {
    let (sim, demo, app, installation) = installed(ALL_SCOPES).await;
    let token = user_token(&sim, &installation, &demo.alice).await;
    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);

    let call = sim.disable(APP_KEY).await.unwrap().unwrap();
    assert_eq!(call.status, Some(204));
    let disabled = &app.received_at("/disabled")[0];
    Hs256Verifier::default()
        .verify(
            disabled.jwt(),
            &SecretString::from(installation.shared_secret.clone()),
            &disabled.parts(""),
            QshMode::Computed,
        )
        .unwrap();
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &path, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &path, None)
            .await
            .status(),
        401
    );
    assert!(
        sim.edit_page_as(&demo.alice, &demo.open_page, "x")
            .await
            .unwrap()
            .is_empty()
    );

    sim.enable(APP_KEY).await.unwrap();
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &path, None)
            .await
            .status(),
        200
    );

    sim.uninstall(APP_KEY).await.unwrap();
    let uninstalled = &app.received_at("/uninstalled")[0];
    install_verifier(&sim, &app)
        .verify(uninstalled.jwt(), &uninstalled.parts(""))
        .await
        .unwrap();
    assert!(uninstalled.body.get("sharedSecret").is_none());
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &path, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &path, None)
            .await
            .status(),
        401
    );
    let (status, body) = exchange(&sim, &assertion(&sim, &installation, &demo.alice, |_| {})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(!sim.user(&installation.app_account_id).unwrap().active);

    // Installing again: same clientKey, a new secret.
    let again = sim.install(&app.base_url()).await.unwrap();
    assert_eq!(again.client_key, installation.client_key);
    assert_ne!(again.shared_secret, installation.shared_secret);
}

// ---- Confluence's answers ----------------------------------------------------------------------

#[tokio::test]
async fn confluence_answers_404_403_409_and_200_as_production_does() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let get = |id: &str| format!("/api/v2/pages/{id}?body-format=storage");

    // Cannot view → 404; can view → 200 with the storage body.
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &get(&demo.view_restricted_page),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &get(&demo.edit_restricted_page),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["id"], demo.edit_restricted_page.as_str());
    assert_eq!(page["version"]["number"], 1);
    assert_eq!(page["body"]["storage"]["representation"], "storage");
    assert!(page["spaceId"].is_string());
    // Without body-format, no body (as v2 does).
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &format!("/api/v2/pages/{}", demo.open_page),
        None,
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["body"], json!({}));

    let update = |id: &str, version: u64| {
        json!({"id": id, "status": "current", "title": "New title",
               "body": {"representation": "storage", "value": "<p>by the app</p>"},
               "version": {"number": version, "message": "understudy"}})
    };
    let put = |id: &str| format!("/api/v2/pages/{id}");
    // Can view, cannot edit → 403.
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &put(&demo.edit_restricted_page),
        Some(update(&demo.edit_restricted_page, 2)),
    )
    .await;
    assert_eq!(r.status(), 403);
    // Cannot view → 404 even for an update.
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &put(&demo.view_restricted_page),
        Some(update(&demo.view_restricted_page, 2)),
    )
    .await;
    assert_eq!(r.status(), 404);
    // Stale version → 409 with Confluence's message.
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &put(&demo.open_page),
        Some(update(&demo.open_page, 1)),
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("Current version is: 1"));
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &put(&demo.open_page),
        Some(update(&demo.open_page, 3)),
    )
    .await;
    assert_eq!(r.status(), 409);
    // The next version → 200; title and body replaced; history says the app user did it.
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &put(&demo.open_page),
        Some(update(&demo.open_page, 2)),
    )
    .await;
    assert_eq!(r.status(), 200);
    let page = sim.page(&demo.open_page).unwrap();
    assert_eq!(
        (page.version, page.title.as_str(), page.body.as_str()),
        (2, "New title", "<p>by the app</p>")
    );
    let last = page.history.last().unwrap();
    assert_eq!(last.by, installation.app_account_id);
    assert_eq!(
        last.via,
        EditVia::AppUser {
            app_key: APP_KEY.into()
        }
    );
    assert_eq!(last.message, "understudy");

    // Malformed updates → 400, never a 500.
    for bad in [
        json!({"id": demo.open_page, "status": "draft", "title": "t", "body": {"representation": "storage", "value": ""}, "version": {"number": 3}}),
        json!({"id": "1", "status": "current", "title": "t", "body": {"representation": "storage", "value": ""}, "version": {"number": 3}}),
        json!({"id": demo.open_page, "status": "current", "title": "t", "body": {"representation": "wiki", "value": ""}, "version": {"number": 3}}),
        json!({"id": demo.open_page, "status": "current", "title": "", "body": {"representation": "storage", "value": ""}, "version": {"number": 3}}),
        json!({"id": demo.open_page, "status": "current", "title": "t", "body": {"representation": "storage", "value": ""}}),
        json!({"id": demo.open_page, "status": "current", "title": "Edit-restricted page", "body": {"representation": "storage", "value": ""}, "version": {"number": 3}}),
        json!([1, 2]),
    ] {
        let r = call_as_app(
            &sim,
            &installation,
            "PUT",
            &put(&demo.open_page),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(r.status(), 400, "{bad}");
    }
    assert_eq!(sim.page(&demo.open_page).unwrap().version, 2);
}

#[tokio::test]
async fn a_get_with_a_body_is_refused_with_403() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &format!("/api/v2/pages/{}?body-format=storage", demo.open_page),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn app_access_rules_and_space_permissions_decide_for_pages_without_restrictions() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    sim.set_app_access(&demo.space, AppAccessRule::BlockAppUser)
        .unwrap();
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &path, None)
            .await
            .status(),
        404
    );
    let token = user_token(&sim, &installation, &demo.alice).await;
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &path, None)
            .await
            .status(),
        200
    );
    sim.set_app_access(&demo.space, AppAccessRule::BlockAllApps)
        .unwrap();
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &path, None)
            .await
            .status(),
        404
    );
    sim.set_app_access(&demo.space, AppAccessRule::Allowed)
        .unwrap();

    // Carol may view the space but not edit it: 403 on update.
    let carol = user_token(&sim, &installation, &demo.carol).await;
    let r = call_as_bearer(
        &sim,
        &carol,
        "PUT",
        &format!("/api/v2/pages/{}", demo.open_page),
        Some(
            json!({"id": demo.open_page, "status": "current", "title": "t",
                    "body": {"representation": "storage", "value": "x"}, "version": {"number": 2}}),
        ),
    )
    .await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn view_restrictions_are_inherited_by_child_pages() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let child = sim
        .create_child_page(&demo.view_restricted_page, "Child", "<p>c</p>", &demo.alice)
        .unwrap();
    assert!(sim.page(&child).unwrap().restrictions.read.users.is_empty());
    let path = format!("/api/v2/pages/{child}?body-format=storage");
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &path, None)
            .await
            .status(),
        404
    );
    let alice = user_token(&sim, &installation, &demo.alice).await;
    assert_eq!(
        call_as_bearer(&sim, &alice, "GET", &path, None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn current_user_tells_the_app_user_from_people() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let me: Value = call_as_app(&sim, &installation, "GET", "/rest/api/user/current", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["accountId"], installation.app_account_id);
    assert_eq!(me["accountType"], "app");
    let token = user_token(&sim, &installation, &demo.alice).await;
    let me: Value = call_as_bearer(&sim, &token, "GET", "/rest/api/user/current", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["accountId"], demo.alice);
    assert_eq!(me["accountType"], "atlassian");
}

#[tokio::test]
async fn restrictions_are_listed_in_confluences_shape_only_when_expanded() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let path = format!(
        "/rest/api/content/{}/restriction/byOperation",
        demo.edit_restricted_page
    );
    let expanded: Value = call_as_app(
        &sim,
        &installation,
        "GET",
        &format!("{path}?expand=restrictions.user,restrictions.group"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(expanded["update"]["operation"], "update");
    assert_eq!(
        expanded["update"]["restrictions"]["user"]["results"][0]["accountId"],
        demo.alice
    );
    assert_eq!(expanded["update"]["restrictions"]["user"]["size"], 1);
    assert_eq!(
        expanded["read"]["restrictions"]["user"]["results"],
        json!([])
    );
    assert_eq!(
        expanded["read"]["restrictions"]["group"]["results"],
        json!([])
    );
    let bare: Value = call_as_app(&sim, &installation, "GET", &path, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(bare["update"]["restrictions"].get("user").is_none());
    assert!(bare["update"]["restrictions"]["_expandable"]["user"].is_string());
    // Not viewable → 404.
    let hidden = format!(
        "/rest/api/content/{}/restriction/byOperation",
        demo.view_restricted_page
    );
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &hidden, None)
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn changing_restrictions_needs_edit_permission_and_fires_content_permissions_updated() {
    let (sim, demo, app, installation) = installed(ALL_SCOPES).await;
    let user_path = |page: &str, op: &str, account: &str| {
        format!("/rest/api/content/{page}/restriction/byOperation/{op}/user?accountId={account}")
    };
    let me = &installation.app_account_id;
    // The app user may view but not edit: 403.
    let r = call_as_app(
        &sim,
        &installation,
        "PUT",
        &user_path(&demo.edit_restricted_page, "update", me),
        None,
    )
    .await;
    assert_eq!(r.status(), 403);
    // As Alice, who may edit, the app grants itself edit access.
    let alice = user_token(&sim, &installation, &demo.alice).await;
    let r = call_as_bearer(
        &sim,
        &alice,
        "PUT",
        &user_path(&demo.edit_restricted_page, "update", me),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        sim.page(&demo.edit_restricted_page)
            .unwrap()
            .restrictions
            .update
            .users,
        vec![demo.alice.clone(), me.clone()]
    );
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &user_path(&demo.edit_restricted_page, "update", me),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = call_as_app(
        &sim,
        &installation,
        "GET",
        &user_path(&demo.edit_restricted_page, "read", me),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let deliveries = sim.wait_for_deliveries(1, Duration::from_secs(5)).await;
    assert_eq!(deliveries[0].event, "content_permissions_updated");
    assert_eq!(deliveries[0].body["userAccountId"], demo.alice);
    assert_eq!(
        deliveries[0].body["content"]["id"]
            .as_u64()
            .unwrap()
            .to_string(),
        demo.edit_restricted_page
    );
    assert_eq!(
        app.received_at("/webhooks/content_permissions_updated")
            .len(),
        1
    );

    // Adding a user to an unrestricted operation creates a restriction: Bob loses view access.
    let r = call_as_bearer(
        &sim,
        &alice,
        "PUT",
        &user_path(&demo.open_page, "read", &demo.alice),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        sim.permissions(&demo.open_page, &demo.bob, None),
        (false, false)
    );
    assert_eq!(
        sim.permissions(&demo.open_page, me, Some(APP_KEY)),
        (false, false)
    );
    let r = call_as_bearer(
        &sim,
        &alice,
        "DELETE",
        &user_path(&demo.open_page, "read", &demo.alice),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        sim.permissions(&demo.open_page, &demo.bob, None),
        (true, true)
    );
}

// ---- Confluence's auth checks ----------------------------------------------------------------

fn app_claims(
    sim: &Simulator,
    installation: &confluence_sim::Installation,
    method: &str,
    path_and_query: &str,
) -> Value {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let now = sim.now();
    json!({"iss": installation.app_key, "iat": now, "exp": now + 180, "aud": [installation.client_key],
           "qsh": RequestParts::new(method, &format!("/wiki{path}"), query).with_base_path("/wiki").qsh()})
}

async fn get_with_token(sim: &Simulator, path_and_query: &str, token: &str) -> u16 {
    let url = Url::parse(&format!("{}{path_and_query}", sim.site_base_url())).unwrap();
    send("GET", url, &format!("JWT {token}"), None)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn app_jwts_are_checked_for_signature_expiry_qsh_issuer_and_audience() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    let secret = SecretString::from(installation.shared_secret.clone());
    let sign = |claims: &Value| sign_hs256(claims, &secret).unwrap();
    let good = app_claims(&sim, &installation, "GET", &path);
    assert_eq!(get_with_token(&sim, &path, &sign(&good)).await, 200);
    // The jwt query parameter works too (and is not part of the qsh).
    let url = Url::parse(&format!(
        "{}{path}&jwt={}",
        sim.site_base_url(),
        sign(&good)
    ))
    .unwrap();
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);

    let now = sim.now();
    let cases: Vec<(&str, ClaimEdit<'_>)> = vec![
        (
            "qsh of another path",
            Box::new(|c| {
                c["qsh"] =
                    json!(RequestParts::new("GET", "/api/v2/pages/1", "body-format=storage").qsh())
            }),
        ),
        (
            "qsh not relative to /wiki",
            Box::new(|c| {
                let (p, q) = path.split_once('?').unwrap();
                c["qsh"] = json!(RequestParts::new("GET", &format!("/wiki{p}"), q).qsh());
            }),
        ),
        (
            "qsh of another method",
            Box::new(|c| {
                let (p, q) = path.split_once('?').unwrap();
                c["qsh"] = json!(
                    RequestParts::new("PUT", &format!("/wiki{p}"), q)
                        .with_base_path("/wiki")
                        .qsh()
                );
            }),
        ),
        ("context-qsh", Box::new(|c| c["qsh"] = json!("context-qsh"))),
        (
            "no qsh",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("qsh");
            }),
        ),
        (
            "expired",
            Box::new(move |c| {
                c["iat"] = json!(now - 400);
                c["exp"] = json!(now - 31);
            }),
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "issued in the future",
            Box::new(move |c| {
                c["iat"] = json!(now + 120);
                c["exp"] = json!(now + 300);
            }),
        ),
        (
            "another issuer",
            Box::new(|c| c["iss"] = json!("another-app")),
        ),
        (
            "another audience",
            Box::new(|c| c["aud"] = json!(["another-client"])),
        ),
        (
            "no audience",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
    ];
    for (name, edit) in cases {
        let mut claims = good.clone();
        edit(&mut claims);
        assert_eq!(
            get_with_token(&sim, &path, &sign(&claims)).await,
            401,
            "{name}"
        );
    }
    // A wrong secret, a tampered payload, another algorithm, garbage.
    let other = sign_hs256(&good, &SecretString::from("not-the-secret".to_owned())).unwrap();
    assert_eq!(get_with_token(&sim, &path, &other).await, 401);
    let token = sign(&good);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut tampered = good.clone();
    tampered["exp"] = json!(now + 100_000);
    parts[1] = base64_url(&tampered.to_string());
    assert_eq!(get_with_token(&sim, &path, &parts.join(".")).await, 401);
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(installation.shared_secret.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(get_with_token(&sim, &path, &hs512).await, 401);
    for junk in ["", "a.b", "a.b.c", "....", "JWT"] {
        assert_eq!(get_with_token(&sim, &path, junk).await, 401, "{junk}");
    }
    let url = Url::parse(&format!("{}{path}", sim.site_base_url())).unwrap();
    assert_eq!(
        send("GET", url.clone(), "Basic dXNlcjpwYXNz", None)
            .await
            .status(),
        401
    );
    assert_eq!(reqwest::get(url).await.unwrap().status(), 401);
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn a_lenient_site_accepts_app_jwts_without_aud() {
    let config = SimConfig {
        require_app_aud: false,
        ..SimConfig::default()
    };
    let (sim, demo, _app, installation) = installed_with(config, ALL_SCOPES).await;
    let path = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    let mut claims = app_claims(&sim, &installation, "GET", &path);
    claims.as_object_mut().unwrap().remove("aud");
    let token = sign_hs256(
        &claims,
        &SecretString::from(installation.shared_secret.clone()),
    )
    .unwrap();
    assert_eq!(get_with_token(&sim, &path, &token).await, 200);
}

#[tokio::test]
async fn scopes_limit_the_app_and_its_user_tokens() {
    let (sim, demo, _app, installation) = installed(&["READ", "ACT_AS_USER"]).await;
    let put = format!("/api/v2/pages/{}", demo.open_page);
    let body = json!({"id": demo.open_page, "status": "current", "title": "t",
                      "body": {"representation": "storage", "value": "x"}, "version": {"number": 2}});
    assert_eq!(
        call_as_app(&sim, &installation, "PUT", &put, Some(body.clone()))
            .await
            .status(),
        403
    );
    let token = user_token(&sim, &installation, &demo.alice).await;
    assert_eq!(
        call_as_bearer(&sim, &token, "PUT", &put, Some(body))
            .await
            .status(),
        403
    );
    // Asking for a scope the app lacks is invalid_scope.
    let response = reqwest::Client::new()
        .post(sim.oauth_token_url())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            (
                "assertion",
                &assertion(&sim, &installation, &demo.alice, |_| {}),
            ),
            ("scope", "READ WRITE"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
}

// ---- the OAuth server ------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_assertion_gets_an_expiring_bearer_token_that_acts_as_the_user() {
    let clock = SimClock::at(1_900_000_000);
    let config = SimConfig::with_clock(clock.clone());
    let (sim, demo, _app, installation) = installed_with(config, ALL_SCOPES).await;
    let (status, body) = exchange(&sim, &assertion(&sim, &installation, &demo.alice, |_| {})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap();

    // Alice may edit the edit-restricted page: as her, the app can.
    let put = format!("/api/v2/pages/{}", demo.edit_restricted_page);
    let update = json!({"id": demo.edit_restricted_page, "status": "current", "title": "Edit-restricted page",
                        "body": {"representation": "storage", "value": "<p>as Alice</p>"},
                        "version": {"number": 2, "message": "via understudy"}});
    assert_eq!(
        call_as_bearer(&sim, token, "PUT", &put, Some(update))
            .await
            .status(),
        200
    );
    let last = sim
        .page(&demo.edit_restricted_page)
        .unwrap()
        .history
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last.by, demo.alice);
    assert_eq!(
        last.via,
        EditVia::Impersonation {
            app_key: APP_KEY.into()
        }
    );

    let get = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    clock.advance(899);
    assert_eq!(
        call_as_bearer(&sim, token, "GET", &get, None)
            .await
            .status(),
        200
    );
    clock.advance(1);
    assert_eq!(
        call_as_bearer(&sim, token, "GET", &get, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        call_as_bearer(&sim, "made-up", "GET", &get, None)
            .await
            .status(),
        401
    );
    assert_eq!(sim.count(&Endpoint::OAuthToken), 1);
}

#[tokio::test]
async fn every_assertion_claim_is_checked() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let now = sim.now();
    let alice = demo.alice.clone();
    let cases: Vec<(&str, ClaimEdit<'_>, u16, &str)> = vec![
        (
            "iss of another client",
            Box::new(|c| c["iss"] = json!("urn:atlassian:connect:clientid:other")),
            401,
            "invalid_client",
        ),
        (
            "iss without the urn",
            Box::new(|c| c["iss"] = json!(installation.oauth_client_id.clone().unwrap())),
            401,
            "invalid_client",
        ),
        (
            "no iss",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            401,
            "invalid_client",
        ),
        (
            "sub without the urn",
            Box::new(move |c| c["sub"] = json!(alice.clone())),
            400,
            "invalid_grant",
        ),
        (
            "sub of an unknown user",
            Box::new(|c| c["sub"] = json!("urn:atlassian:connect:useraccountid:nobody")),
            400,
            "invalid_grant",
        ),
        (
            "sub of the app user",
            Box::new(|c| {
                c["sub"] = json!(format!(
                    "urn:atlassian:connect:useraccountid:{}",
                    installation.app_account_id
                ))
            }),
            400,
            "invalid_grant",
        ),
        (
            "no sub",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            400,
            "invalid_grant",
        ),
        (
            "tnt without /wiki",
            Box::new(|c| c["tnt"] = json!(sim.origin())),
            400,
            "invalid_grant",
        ),
        (
            "tnt of another site",
            Box::new(|c| c["tnt"] = json!("https://other.atlassian.net/wiki")),
            400,
            "invalid_grant",
        ),
        (
            "no tnt",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("tnt");
            }),
            400,
            "invalid_grant",
        ),
        (
            "aud as an array",
            Box::new(|c| {
                c["aud"] = json!(["https://oauth-2-authorization-server.services.atlassian.com"])
            }),
            400,
            "invalid_grant",
        ),
        (
            "aud of another server",
            Box::new(|c| {
                c["aud"] = json!("https://oauth-2-authorization-server.stg.services.atlassian.com")
            }),
            400,
            "invalid_grant",
        ),
        (
            "no aud",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            400,
            "invalid_grant",
        ),
        (
            "61 s between iat and exp",
            Box::new(|c| c["exp"] = json!(c["iat"].as_i64().unwrap() + 61)),
            400,
            "invalid_grant",
        ),
        (
            "exp before iat",
            Box::new(|c| c["exp"] = json!(c["iat"].as_i64().unwrap() - 1)),
            400,
            "invalid_grant",
        ),
        (
            "expired",
            Box::new(move |c| {
                c["iat"] = json!(now - 120);
                c["exp"] = json!(now - 60);
            }),
            400,
            "invalid_grant",
        ),
        (
            "issued in the future",
            Box::new(move |c| {
                c["iat"] = json!(now + 100);
                c["exp"] = json!(now + 160);
            }),
            400,
            "invalid_grant",
        ),
        (
            "no iat",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            400,
            "invalid_grant",
        ),
        (
            "no exp",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            400,
            "invalid_grant",
        ),
    ];
    for (name, edit, status, error) in cases {
        let (got, body) = exchange(&sim, &assertion(&sim, &installation, &demo.alice, edit)).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{name}: {body}"
        );
    }
    // Signed with another secret, or another algorithm.
    let mut claims = json!({});
    let _ = assertion(&sim, &installation, &demo.alice, |c| claims = c.clone());
    let wrong = sign_hs256(&claims, &SecretString::from("wrong".to_owned())).unwrap();
    assert_eq!(exchange(&sim, &wrong).await.1["error"], "invalid_grant");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(installation.shared_secret.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(exchange(&sim, &hs512).await.1["error"], "invalid_grant");
    // The exact claims work; 60 s apart is the limit.
    let (status, _) = exchange(&sim, &assertion(&sim, &installation, &demo.alice, |_| {})).await;
    assert_eq!(status, 200);
    // The wrong grant type or body encoding.
    let client = reqwest::Client::new();
    let r = client
        .post(sim.oauth_token_url())
        .form(&[("grant_type", "client_credentials"), ("assertion", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unsupported_grant_type"
    );
    let r = client.post(sim.oauth_token_url())
        .json(&json!({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": wrong}))
        .send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    // Only successful exchanges issue tokens; every one is recorded with its reason.
    let exchanges = sim.token_exchanges();
    assert!(exchanges.iter().filter(|e| e.status == 200).count() == 1);
    assert!(exchanges.iter().any(|e| {
        e.description
            .as_deref()
            .is_some_and(|d| d.contains("60 seconds"))
    }));
}

#[tokio::test]
async fn grants_can_be_rejected_for_a_user_or_once() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let fresh = || assertion(&sim, &installation, &demo.alice, |_| {});
    sim.reject_grants_for(&demo.alice);
    assert_eq!(exchange(&sim, &fresh()).await.1["error"], "invalid_grant");
    sim.allow_grants_for(&demo.alice);
    sim.fail_next(Endpoint::OAuthToken, Fault::RejectGrant, 1);
    assert_eq!(exchange(&sim, &fresh()).await.1["error"], "invalid_grant");
    assert_eq!(exchange(&sim, &fresh()).await.0, 200);
    sim.set_user_active(&demo.alice, false).unwrap();
    assert_eq!(exchange(&sim, &fresh()).await.1["error"], "invalid_grant");
}

#[tokio::test]
async fn tokens_can_be_expired_or_revoked_early() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let get = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    let token = user_token(&sim, &installation, &demo.alice).await;
    sim.expire_tokens();
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &get, None)
            .await
            .status(),
        401
    );
    let token = user_token(&sim, &installation, &demo.alice).await;
    sim.revoke_tokens_for(&demo.alice);
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &get, None)
            .await
            .status(),
        401
    );
    let token = user_token(&sim, &installation, &demo.alice).await;
    sim.fail_next(Endpoint::GetPage, Fault::ExpiredToken, 1);
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &get, None)
            .await
            .status(),
        401
    );
    assert_eq!(
        call_as_bearer(&sim, &token, "GET", &get, None)
            .await
            .status(),
        401,
        "expired for good"
    );
}

// ---- webhooks --------------------------------------------------------------------------------

#[tokio::test]
async fn a_persons_edit_fires_page_updated_with_a_verifiable_token_and_the_real_payload_shape() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("/base", ALL_SCOPES).await;
    let installation = sim.install(&app.base_url()).await.unwrap();
    let deliveries = sim
        .edit_page_as(&demo.bob, &demo.open_page, "<p>Bob was here</p>")
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert!(deliveries[0].acknowledged());
    let received = &app.received_at("/webhooks/page_updated")[0];
    let claims = Hs256Verifier::with_clock(FixedClock(sim.now()))
        .verify(
            received.jwt(),
            &SecretString::from(installation.shared_secret.clone()),
            &received.parts("/base"),
            QshMode::Computed,
        )
        .unwrap();
    assert_eq!(claims.iss, installation.client_key);
    assert_eq!(claims.sub.as_deref(), Some(demo.bob.as_str()));
    assert_eq!(claims.exp - claims.iat, 180);
    assert!(claims.aud.is_none());
    assert!(claims.context.is_some());
    let body = &received.body;
    assert_eq!(body["userAccountId"], demo.bob);
    assert_eq!(body["accountType"], "customer");
    assert_eq!(body["updateTrigger"], "edit_page");
    assert_eq!(body["suppressNotifications"], false);
    assert!(body["timestamp"].is_i64());
    let page = &body["page"];
    assert_eq!(page["idAsString"], demo.open_page);
    assert_eq!(page["id"].as_u64().unwrap().to_string(), demo.open_page);
    assert_eq!(page["version"], 2);
    assert_eq!(page["spaceKey"], "DEMO");
    assert!(page["spaceId"].is_u64());
    assert_eq!(page["contentType"], "page");
    assert_eq!(page["creatorAccountId"], demo.alice);
    assert_eq!(page["lastModifierAccountId"], demo.bob);
    assert!(page["creationDate"].is_i64() && page["modificationDate"].is_i64());
    assert!(
        page["self"]
            .as_str()
            .unwrap()
            .starts_with(&sim.site_base_url())
    );
    assert!(page["title"].is_string());

    // A webhook URL with a query hashes it too.
    sim.set_restrictions_as(
        &demo.alice,
        &demo.open_page,
        vec![],
        vec![demo.alice.clone()],
    )
    .await
    .unwrap();
    let received = &app.received_at("/webhooks/content_permissions_updated")[0];
    assert_eq!(received.query, "v=1");
    Hs256Verifier::with_clock(FixedClock(sim.now()))
        .verify(
            received.jwt(),
            &SecretString::from(installation.shared_secret.clone()),
            &received.parts("/base"),
            QshMode::Computed,
        )
        .unwrap();
    assert_eq!(received.body["content"]["idAsString"], demo.open_page);
    // Bob may no longer edit it.
    assert!(
        sim.edit_page_as(&demo.bob, &demo.open_page, "x")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_apps_own_edits_fire_page_updated_as_the_app_user_or_the_impersonated_user() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let update = |version: u64| {
        json!({"id": demo.open_page, "status": "current", "title": "Open page",
        "body": {"representation": "storage", "value": format!("<p>v{version}</p>")}, "version": {"number": version}})
    };
    let put = format!("/api/v2/pages/{}", demo.open_page);
    assert_eq!(
        call_as_app(&sim, &installation, "PUT", &put, Some(update(2)))
            .await
            .status(),
        200
    );
    let token = user_token(&sim, &installation, &demo.alice).await;
    assert_eq!(
        call_as_bearer(&sim, &token, "PUT", &put, Some(update(3)))
            .await
            .status(),
        200
    );
    let deliveries = sim.wait_for_deliveries(2, Duration::from_secs(5)).await;
    assert_eq!(deliveries.len(), 2);
    let by_version = |v: u64| {
        deliveries
            .iter()
            .find(|d| d.body["page"]["version"] == v)
            .unwrap()
    };
    assert_eq!(
        by_version(2).body["userAccountId"],
        installation.app_account_id
    );
    assert_eq!(by_version(2).body["accountType"], "app");
    assert_eq!(by_version(3).body["userAccountId"], demo.alice);
    assert_eq!(by_version(3).body["accountType"], "customer");
}

#[tokio::test]
async fn pages_the_app_cannot_view_send_it_no_webhooks_unless_fired_by_hand() {
    let (sim, demo, app, _installation) = installed(ALL_SCOPES).await;
    let sent = sim
        .edit_page_as(&demo.alice, &demo.view_restricted_page, "<p>secret</p>")
        .await
        .unwrap();
    assert!(sent.is_empty());
    let sent = sim
        .fire_webhook("page_updated", &demo.view_restricted_page, &demo.alice)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    // The same delivery twice: same body, same token.
    let again = sim.redeliver(&sent[0]).await;
    assert_eq!(again.body, sent[0].body);
    assert_eq!(again.token, sent[0].token);
    assert_ne!(again.id, sent[0].id);
    let received = app.received_at("/webhooks/page_updated");
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].body, received[1].body);
    // An app that answers 500 is recorded, not retried (Connect webhooks are not retried).
    app.answer("/webhooks/page_updated", 500);
    let sent = sim
        .edit_page_as(&demo.alice, &demo.open_page, "<p>x</p>")
        .await
        .unwrap();
    assert_eq!(sent[0].status, Some(500));
    assert_eq!(app.received_at("/webhooks/page_updated").len(), 3);
}

// ---- faults ----------------------------------------------------------------------------------

#[tokio::test]
async fn faults_answer_429_with_and_without_hints_5xx_and_slowly_then_stop() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let get = format!("/api/v2/pages/{}?body-format=storage", demo.open_page);
    sim.fail_next(
        Endpoint::GetPage,
        Fault::TooManyRequests {
            retry_after: Some(7),
        },
        1,
    );
    sim.fail_next(
        Endpoint::GetPage,
        Fault::TooManyRequests { retry_after: None },
        1,
    );
    sim.fail_next(Endpoint::AnyConfluence, Fault::ServerError(502), 1);
    sim.fail_next(
        Endpoint::GetPage,
        Fault::ServiceUnavailable {
            retry_after: Some(2),
        },
        1,
    );
    let r = call_as_app(&sim, &installation, "GET", &get, None).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.headers().contains_key("x-ratelimit-reset"));
    let r = call_as_app(&sim, &installation, "GET", &get, None).await;
    assert_eq!(r.status(), 429);
    assert!(!r.headers().contains_key("retry-after"));
    assert!(!r.headers().contains_key("x-ratelimit-reset"));
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &get, None)
            .await
            .status(),
        502
    );
    let r = call_as_app(&sim, &installation, "GET", &get, None).await;
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["retry-after"].to_str().unwrap()
        ),
        (503, "2")
    );
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &get, None)
            .await
            .status(),
        200
    );

    sim.fail_next(
        Endpoint::GetPage,
        Fault::Slow(Duration::from_millis(300)),
        1,
    );
    let started = std::time::Instant::now();
    assert_eq!(
        call_as_app(&sim, &installation, "GET", &get, None)
            .await
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    sim.fail_next(
        Endpoint::OAuthToken,
        Fault::TooManyRequests {
            retry_after: Some(1),
        },
        2,
    );
    let fresh = || assertion(&sim, &installation, &demo.alice, |_| {});
    assert_eq!(exchange(&sim, &fresh()).await.0, 429);
    assert_eq!(exchange(&sim, &fresh()).await.0, 429);
    assert_eq!(exchange(&sim, &fresh()).await.0, 200);
    assert_eq!(sim.count(&Endpoint::GetPage), 6);
    assert_eq!(sim.count(&Endpoint::OAuthToken), 3);
}

#[tokio::test]
async fn a_concurrent_edit_makes_the_update_stale() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    sim.fail_next(Endpoint::UpdatePage, Fault::ConcurrentEdit, 1);
    let put = format!("/api/v2/pages/{}", demo.open_page);
    let update = |v: u64| {
        json!({"id": demo.open_page, "status": "current", "title": "Open page",
        "body": {"representation": "storage", "value": "<p>app</p>"}, "version": {"number": v}})
    };
    assert_eq!(
        call_as_app(&sim, &installation, "PUT", &put, Some(update(2)))
            .await
            .status(),
        409
    );
    assert_eq!(
        call_as_app(&sim, &installation, "PUT", &put, Some(update(3)))
            .await
            .status(),
        200
    );
    let page = sim.page(&demo.open_page).unwrap();
    assert_eq!(page.history.len(), 3);
    assert_eq!(page.history[1].by, demo.alice);
}

// ---- robustness and the admin API ------------------------------------------------------------

#[tokio::test]
async fn nonsense_gets_4xx_never_5xx() {
    let (sim, _demo, _app, installation) = installed(ALL_SCOPES).await;
    let client = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/wiki/api/v2/pages/abc"),
        ("GET", "/wiki/api/v2/pages/99999999999999999999999"),
        ("GET", "/wiki/api/v2/pages/1?body-format=storage"),
        ("PUT", "/wiki/api/v2/pages/"),
        (
            "POST",
            "/wiki/rest/api/content/1/restriction/byOperation/read/user",
        ),
        (
            "GET",
            "/wiki/rest/api/content/%2e%2e/restriction/byOperation",
        ),
        ("GET", "/nothing/here"),
        ("GET", "/keys/../../etc/passwd"),
        ("DELETE", "/oauth2/token"),
        ("POST", "/_sim/install"),
        ("POST", "/_sim/nope"),
    ] {
        let url = format!("{}{path}", sim.origin());
        let r = client
            .request(method.parse().unwrap(), &url)
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_client_error(),
            "{method} {path}: {}",
            r.status()
        );
        let r = call_as_app(
            &sim,
            &installation,
            method,
            path.trim_start_matches("/wiki"),
            None,
        )
        .await;
        assert!(
            r.status().is_client_error(),
            "{method} {path} as the app: {}",
            r.status()
        );
    }
    let r = client
        .get(sim.site_base_url() + "/rest/api/user/current")
        .header("authorization", "JWT \u{7f}")
        .send()
        .await;
    assert!(r.map(|r| r.status().is_client_error()).unwrap_or(true));
}

#[tokio::test]
async fn the_admin_api_installs_edits_and_shows_the_site() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("", ALL_SCOPES).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/_sim/install", sim.origin()))
        .json(&json!({"app": app.base_url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["app_key"], APP_KEY);
    let r = client
        .post(format!("{}/_sim/edit", sim.origin()))
        .json(&json!({"user": demo.bob, "page": demo.open_page, "body": "<p>admin</p>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["deliveries"][0]["status"],
        204
    );
    let r = client
        .post(format!("{}/_sim/edit", sim.origin()))
        .json(&json!({"user": demo.carol, "page": demo.open_page, "body": "<p>no</p>"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let state: Value = client
        .get(format!("{}/_sim/state", sim.origin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["installations"][0]["state"], "enabled");
    assert!(
        state
            .to_string()
            .find(&sim.installation(APP_KEY).unwrap().shared_secret)
            .is_none()
    );
    assert_eq!(state["pages"].as_array().unwrap().len(), 3);
}
