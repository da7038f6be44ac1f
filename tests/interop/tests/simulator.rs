//! The Confluence simulator's token checks against Atlassian's own atlassian-jwt, in the same run,
//! so that a mistake shared by the app and the simulator cannot hide:
//! - tokens minted by atlassian-jwt the way a Connect app mints them (HS256, qsh from
//!   `createQueryStringHash` relative to the site's base URL) are accepted by the simulated
//!   Confluence, and tampered or wrongly hashed ones are refused;
//! - an impersonation assertion minted by atlassian-jwt is accepted by the simulated OAuth server;
//! - the webhook and lifecycle tokens the simulator sends verify in atlassian-jwt, and their qsh is
//!   atlassian-jwt's hash of the request as sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use confluence_sim::stub_app::StubApp;
use confluence_sim::{Delivery, InstallKey, Installation, SimConfig, Simulator};
use interop_tests::Oracle;
use serde_json::{Value, json};

const SCOPES: &[&str] = &["READ", "WRITE", "ACT_AS_USER"];

struct Site {
    sim: Simulator,
    demo: confluence_sim::Demo,
    app: StubApp,
    installation: Installation,
}

async fn site(app_base_path: &str) -> Site {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = StubApp::start(app_base_path, SCOPES).await.unwrap();
    let installation = sim.install(&app.base_url()).await.unwrap();
    Site {
        sim,
        demo,
        app,
        installation,
    }
}

fn qsh(oracle: &mut Oracle, method: &str, url: &str, base_url: &str) -> String {
    let answer = oracle
        .call(&json!({"op": "qsh", "method": method, "url": url, "baseUrl": base_url}))
        .unwrap();
    answer["qsh"].as_str().unwrap().to_owned()
}

fn encode(oracle: &mut Oracle, payload: &Value, secret: &str) -> String {
    let answer = oracle
        .call(&json!({"op": "encodeSymmetric", "payload": payload, "secret": secret}))
        .unwrap();
    answer["token"].as_str().unwrap().to_owned()
}

/// An app token minted by atlassian-jwt for `method path_and_query` (relative to `/wiki`).
fn app_token(oracle: &mut Oracle, site: &Site, method: &str, path_and_query: &str) -> String {
    let base = site.sim.site_base_url();
    let hash = qsh(oracle, method, &format!("{base}{path_and_query}"), &base);
    let now = site.sim.now();
    let payload = json!({"iss": site.installation.app_key, "iat": now, "exp": now + 180,
                         "qsh": hash, "aud": [site.installation.client_key]});
    encode(oracle, &payload, &site.installation.shared_secret)
}

async fn call(site: &Site, method: &str, path_and_query: &str, token: &str) -> (u16, Value) {
    let body = (method == "PUT").then(|| {
        let page = site.sim.page(&site.demo.open_page).unwrap();
        json!({"id": site.demo.open_page, "status": "current", "title": page.title,
               "body": {"representation": "storage", "value": "<p>from atlassian-jwt</p>"},
               "version": {"number": page.version + 1, "message": "interop"}})
    });
    site.sim
        .request(
            method,
            &format!("/wiki{path_and_query}"),
            Some(&format!("JWT {token}")),
            body.as_ref(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn app_tokens_minted_by_atlassian_jwt_are_accepted_by_the_simulated_confluence() {
    let mut oracle = Oracle::start().unwrap();
    let site = site("").await;
    let demo = &site.demo;
    let requests = [
        (
            "GET",
            format!("/api/v2/pages/{}?body-format=storage", demo.open_page),
        ),
        (
            "GET",
            format!(
                "/rest/api/content/{}/restriction/byOperation?expand=restrictions.user,restrictions.group",
                demo.edit_restricted_page
            ),
        ),
        ("GET", "/rest/api/user/current".to_owned()),
        ("PUT", format!("/api/v2/pages/{}", demo.open_page)),
        // An accountId with a colon: percent-encoded on the wire, hashed decoded-then-encoded.
        // Last: it view-restricts the page to Carol, so the app user loses it (as in Confluence).
        (
            "PUT",
            format!(
                "/rest/api/content/{}/restriction/byOperation/read/user?accountId={}",
                demo.open_page,
                demo.carol.replace(':', "%3A")
            ),
        ),
    ];
    for (method, path) in &requests {
        let token = app_token(&mut oracle, &site, method, path);
        let (status, body) = call(&site, method, path, &token).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    assert_eq!(site.sim.page(&demo.open_page).unwrap().version, 2);
    assert!(
        site.sim
            .page(&demo.open_page)
            .unwrap()
            .restrictions
            .read
            .users
            .contains(&demo.carol)
    );
}

#[tokio::test]
async fn tampered_and_wrongly_hashed_atlassian_jwt_tokens_are_refused() {
    let mut oracle = Oracle::start().unwrap();
    let site = site("").await;
    let path = format!("/api/v2/pages/{}?body-format=storage", site.demo.open_page);
    let base = site.sim.site_base_url();
    let now = site.sim.now();
    let secret = site.installation.shared_secret.clone();
    let claims = |qsh: String| {
        json!({"iss": site.installation.app_key, "iat": now, "exp": now + 180, "qsh": qsh,
               "aud": [site.installation.client_key]})
    };
    let good = app_token(&mut oracle, &site, "GET", &path);
    assert_eq!(call(&site, "GET", &path, &good).await.0, 200);

    // A qsh not relative to the site's base URL (the `/wiki` left in), for another path or method.
    let full_path = qsh(&mut oracle, "GET", &format!("{base}{path}"), "");
    let other_path = qsh(&mut oracle, "GET", &format!("{base}/api/v2/pages/1"), &base);
    let other_method = qsh(&mut oracle, "DELETE", &format!("{base}{path}"), &base);
    let without_query = qsh(
        &mut oracle,
        "GET",
        &format!("{base}{}", path.split('?').next().unwrap()),
        &base,
    );
    for (name, hash) in [
        ("with /wiki", full_path),
        ("other path", other_path),
        ("other method", other_method),
        ("query dropped", without_query),
    ] {
        let token = encode(&mut oracle, &claims(hash), &secret);
        assert_eq!(call(&site, "GET", &path, &token).await.0, 401, "{name}");
    }
    // Another secret; a changed signature; claims changed under the old signature.
    let right = qsh(&mut oracle, "GET", &format!("{base}{path}"), &base);
    let other_secret = encode(&mut oracle, &claims(right.clone()), "not-the-secret");
    assert_eq!(call(&site, "GET", &path, &other_secret).await.0, 401);
    let mut flipped = good.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(call(&site, "GET", &path, &flipped).await.0, 401);
    let other_claims = encode(
        &mut oracle,
        &json!({"iss": site.installation.app_key, "iat": now, "exp": now + 100_000, "qsh": right,
                "aud": [site.installation.client_key]}),
        &secret,
    );
    let spliced: Vec<&str> = good.split('.').collect();
    let spliced_claims: Vec<&str> = other_claims.split('.').collect();
    let spliced = format!("{}.{}.{}", spliced[0], spliced_claims[1], spliced[2]);
    assert_eq!(call(&site, "GET", &path, &spliced).await.0, 401);
    // Expired.
    let hash = qsh(&mut oracle, "GET", &format!("{base}{path}"), &base);
    let expired = encode(
        &mut oracle,
        &json!({"iss": site.installation.app_key, "iat": now - 400, "exp": now - 200,
                "qsh": hash, "aud": [site.installation.client_key]}),
        &secret,
    );
    assert_eq!(call(&site, "GET", &path, &expired).await.0, 401);
}

#[tokio::test]
async fn an_impersonation_assertion_minted_by_atlassian_jwt_gets_a_user_token() {
    let mut oracle = Oracle::start().unwrap();
    let site = site("").await;
    let now = site.sim.now();
    let assertion = encode(
        &mut oracle,
        &json!({
            "iss": format!("urn:atlassian:connect:clientid:{}", site.installation.oauth_client_id.as_deref().unwrap()),
            "sub": format!("urn:atlassian:connect:useraccountid:{}", site.demo.alice),
            "tnt": site.sim.site_base_url(),
            "aud": "https://oauth-2-authorization-server.services.atlassian.com",
            "iat": now, "exp": now + 60,
        }),
        &site.installation.shared_secret,
    );
    let (status, body) = site
        .sim
        .oauth_token_request(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let (status, me) = site
        .sim
        .request(
            "GET",
            "/wiki/rest/api/user/current",
            Some(&format!("Bearer {token}")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, me["accountId"].as_str()),
        (200, Some(site.demo.alice.as_str()))
    );
}

/// atlassian-jwt verifies the delivery's signature, and its own hash of the request as sent equals
/// the delivery's qsh.
fn check_in_atlassian_jwt(oracle: &mut Oracle, site: &Site, delivery: &Delivery) -> Value {
    let answer = oracle
        .call(&json!({"op": "decodeSymmetric", "token": delivery.token,
                      "secret": site.installation.shared_secret}))
        .unwrap();
    let claims = answer["claims"].clone();
    let expected = qsh(oracle, "POST", &delivery.url, &site.app.base_url());
    assert_eq!(claims["qsh"], expected, "{}", delivery.url);
    assert_eq!(claims["iss"], site.installation.client_key);
    // A token signed with another secret does not verify there.
    let refused = oracle.call(&json!({"op": "decodeSymmetric", "token": delivery.token,
                                      "secret": "another-secret"}));
    assert!(refused.is_err());
    claims
}

#[tokio::test]
async fn webhook_tokens_verify_in_atlassian_jwt_and_carry_its_qsh() {
    let mut oracle = Oracle::start().unwrap();
    let site = site("/app").await;
    let demo = &site.demo;
    let edits = site
        .sim
        .edit_page_as(&demo.bob, &demo.open_page, "<p>Bob</p>")
        .await
        .unwrap();
    let restrictions = site
        .sim
        .set_restrictions_as(
            &demo.alice,
            &demo.open_page,
            vec![],
            vec![demo.alice.clone()],
        )
        .await
        .unwrap();
    assert_eq!((edits.len(), restrictions.len()), (1, 1));
    let claims = check_in_atlassian_jwt(&mut oracle, &site, &edits[0]);
    assert_eq!(claims["sub"], demo.bob);
    // This URL has a query (`?v=1`): it is part of the hash.
    assert!(
        restrictions[0]
            .url
            .ends_with("/app/webhooks/content_permissions_updated?v=1")
    );
    let claims = check_in_atlassian_jwt(&mut oracle, &site, &restrictions[0]);
    assert_eq!(claims["sub"], demo.alice);
    // The delivery the app received is the one recorded.
    let received = site.app.received_at("/webhooks/page_updated");
    assert_eq!(received[0].token(), Some(edits[0].token.as_str()));
}

#[tokio::test]
async fn signed_installs_verify_in_atlassian_jwt_with_the_served_key() {
    let mut oracle = Oracle::start().unwrap();
    let site = site("/app").await;
    site.sim
        .uninstall(&site.installation.app_key)
        .await
        .unwrap();
    for event in ["installed", "uninstalled"] {
        let call = site
            .sim
            .lifecycle_calls()
            .into_iter()
            .find(|c| c.event == event)
            .unwrap();
        let token = call.token.unwrap();
        let answer = oracle
            .call(&json!({"op": "decodeAsymmetric", "token": token,
                          "publicKey": InstallKey::builtin().public_pem}))
            .unwrap();
        let claims = &answer["claims"];
        assert_eq!(
            claims["qsh"],
            qsh(&mut oracle, "POST", &call.url, &site.app.base_url()),
            "{event}"
        );
        assert_eq!(claims["iss"], site.installation.client_key);
        assert_eq!(claims["aud"], json!([site.app.base_url()]));
        let other = oracle.call(&json!({"op": "decodeAsymmetric", "token": token,
                                        "publicKey": InstallKey::builtin_second().public_pem}));
        assert!(other.is_err(), "{event} verified with another key");
    }
}
