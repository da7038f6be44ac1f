//! The stand-in for Confluence's `all.js` and the iframe URLs the simulator builds: the script is
//! served, context tokens are given only for a page's genuine token, the iframe URL's token is
//! bound to that URL, and a real headless Chromium gets a context token through `AP`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::response::Html;
use confluence_sim::stub_app::{STUB_APP_KEY, stub_descriptor};
use confluence_sim::{Installation, SimClock, SimConfig, SimError, Simulator};
use connect_auth::{
    CONTEXT_QSH, Claims, FixedClock, Hs256Verifier, QshMode, RequestParts, SecretString, sign_hs256,
};
use serde_json::{Value, json};
use support::{ALL_SCOPES, fake_app};
use test_support::browser::{Browser, Locator};
use url::Url;

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

/// `GET /_sim/connect/context-token?jwt=<jwt>`: the status and the JSON answer.
async fn context_token(sim: &Simulator, jwt: &str) -> (u16, Value) {
    let mut url = Url::parse(&sim.context_token_url()).unwrap();
    url.query_pairs_mut().append_pair("jwt", jwt);
    let response = get(url.as_str()).await;
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `jwt` parameter of a URL.
fn jwt_of(url: &str) -> String {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "jwt")
        .map(|(_, value)| value.into_owned())
        .expect("a jwt parameter")
}

/// Verifies a context token as the app's own API does.
fn verify_context(sim: &Simulator, installation: &Installation, token: &str) -> Claims {
    Hs256Verifier::with_clock(FixedClock(sim.now()))
        .max_lifetime(connect_auth::CONTEXT_TOKEN_MAX_LIFETIME_SECONDS)
        .verify(
            token,
            &SecretString::from(installation.shared_secret.clone()),
            &RequestParts::new("POST", "/api/anything", ""),
            QshMode::Context,
        )
        .unwrap_or_else(|e| panic!("the context token does not verify: {e}"))
}

/// A simulator with the demo site and the stub app installed at `<loopback>/app`.
async fn installed_at_app() -> (Simulator, confluence_sim::Demo, Installation) {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("/app", ALL_SCOPES).await;
    let installation = sim.install(&app.base_url()).await.unwrap();
    (sim, demo, installation)
}

// ---- the script ----------------------------------------------------------------------------

#[tokio::test]
async fn all_js_is_served_as_javascript_with_cors_and_defines_ap() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    assert_eq!(
        sim.all_js_url(),
        format!("{}/_sim/connect/all.js", sim.origin())
    );
    let response = get(&sim.all_js_url()).await;
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/javascript"),
        "{content_type}"
    );
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let script = response.text().await.unwrap();
    for needle in [
        "window.AP",
        "AP.context.getToken",
        "AP.resize",
        "AP.sizeToParent",
        "AP.user.getCurrentUser",
        "/_sim/connect/context-token?jwt=",
        "location.search",
        &sim.origin(),
    ] {
        assert!(script.contains(needle), "the script lacks {needle}");
    }

    let missing = get(&format!("{}/_sim/connect/nothing-here", sim.origin())).await;
    assert_eq!(missing.status(), 404);
}

// ---- context tokens ------------------------------------------------------------------------

#[tokio::test]
async fn context_token_answers_a_context_jwt_of_the_pages_user() {
    let (sim, demo, installation) = installed_at_app().await;
    let iframe = sim
        .iframe_url(STUB_APP_KEY, "/ui/admin?space=DEMO", &demo.alice)
        .unwrap();

    let (status, body) = context_token(&sim, &jwt_of(&iframe)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let claims = verify_context(&sim, &installation, token);
    assert_eq!(claims.iss, sim.client_key());
    assert_eq!(claims.sub.as_deref(), Some(demo.alice.as_str()));
    assert_eq!(claims.qsh.as_deref(), Some(CONTEXT_QSH));
    assert_eq!(claims.iat, sim.now());
    assert_eq!(claims.exp, sim.now() + 180);
    assert_eq!(claims.context, Some(json!({})));
}

#[tokio::test]
async fn context_token_refuses_a_token_that_does_not_verify() {
    let clock = SimClock::at(1_780_000_000);
    let sim = Simulator::start(SimConfig::with_clock(clock.clone()))
        .await
        .unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = fake_app("", ALL_SCOPES).await;
    let installation = sim.install(&app.base_url()).await.unwrap();
    let now = sim.now();
    let secret = SecretString::from(installation.shared_secret.clone());
    let genuine = jwt_of(
        &sim.iframe_url(STUB_APP_KEY, "/ui/admin", &demo.bob)
            .unwrap(),
    );
    let signed = |claims: Value| sign_hs256(&claims, &secret).unwrap();
    let good_claims = json!({"iss": sim.client_key(), "sub": demo.bob, "iat": now,
                             "exp": now + 180, "qsh": "0".repeat(64)});

    let mut wrong_issuer = good_claims.clone();
    wrong_issuer["iss"] = json!("another-site");
    let mut context = good_claims.clone();
    context["qsh"] = json!(CONTEXT_QSH);
    let mut no_qsh = good_claims.clone();
    no_qsh.as_object_mut().unwrap().remove("qsh");
    let mut expired = good_claims.clone();
    expired["iat"] = json!(now - 400);
    expired["exp"] = json!(now - 200);
    let other_secret =
        sign_hs256(&good_claims, &SecretString::from("not-the-shared-secret")).unwrap();
    let mut tampered = genuine.clone();
    tampered.push('x');

    for (why, jwt) in [
        ("garbage", "not-a-jwt".to_owned()),
        ("empty", String::new()),
        ("another secret", other_secret),
        ("a tampered signature", tampered),
        ("another issuer", signed(wrong_issuer)),
        ("a context token", signed(context)),
        ("no qsh", signed(no_qsh)),
        ("expired", signed(expired)),
    ] {
        let (status, body) = context_token(&sim, &jwt).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert!(body.get("token").is_none(), "{why}: {body}");
    }
    let no_parameter = get(&sim.context_token_url()).await;
    assert_eq!(no_parameter.status(), 401);

    // The genuine one works until it expires on the sim's clock (with the 30 s leeway)...
    let (status, body) = context_token(&sim, &genuine).await;
    assert_eq!(status, 200, "{body}");
    clock.advance(180 + 30);
    let (status, body) = context_token(&sim, &genuine).await;
    assert_eq!(status, 401, "{body}");

    // ...and not once the app is disabled.
    clock.set(now);
    sim.disable(STUB_APP_KEY).await.unwrap();
    let (status, body) = context_token(&sim, &genuine).await;
    assert_eq!(status, 401, "{body}");
}

// ---- iframe URLs ---------------------------------------------------------------------------

#[tokio::test]
async fn iframe_url_carries_confluences_parameters_and_a_token_bound_to_the_url() {
    let (sim, demo, installation) = installed_at_app().await;
    let iframe = sim
        .iframe_url(STUB_APP_KEY, "/ui/admin?space=DEMO&note=a%20b", &demo.carol)
        .unwrap();

    let url = Url::parse(&iframe).unwrap();
    let base = Url::parse(&installation.app_base_url).unwrap();
    assert_eq!(url.origin(), base.origin());
    assert_eq!(url.path(), "/app/ui/admin");
    let query = url.query().unwrap();
    assert!(query.starts_with("space=DEMO&note=a%20b&xdm_e="), "{query}");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["space", "note", "xdm_e", "cp", "lic", "cv", "jwt"],
        "{iframe}"
    );
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value("xdm_e"), Some(sim.origin()));
    assert_eq!(value("cp").as_deref(), Some("/wiki"));
    assert_eq!(value("lic").as_deref(), Some("none"));
    assert_eq!(value("cv").as_deref(), Some("1.0"));
    assert_eq!(value("note").as_deref(), Some("a b"));

    // The app checks it as it checks any iframe load: qsh of the request as received, relative to
    // its base URL.
    let claims = Hs256Verifier::with_clock(FixedClock(sim.now()))
        .verify(
            &jwt_of(&iframe),
            &SecretString::from(installation.shared_secret.clone()),
            &RequestParts::new("GET", url.path(), query).with_base_path("/app"),
            QshMode::Computed,
        )
        .unwrap_or_else(|e| panic!("the iframe token does not verify: {e}"));
    assert_eq!(claims.iss, sim.client_key());
    assert_eq!(claims.sub.as_deref(), Some(demo.carol.as_str()));
    assert_eq!(claims.iat, sim.now());
    assert_eq!(claims.exp, sim.now() + 180);
    assert_eq!(
        claims.qsh,
        Some(
            RequestParts::new("GET", "/ui/admin", query)
                .with_base_path("")
                .qsh()
        )
    );

    // Bound to this URL: another query does not verify.
    let other_query = query.replace("space=DEMO", "space=OTHER");
    let refused = Hs256Verifier::with_clock(FixedClock(sim.now())).verify(
        &jwt_of(&iframe),
        &SecretString::from(installation.shared_secret.clone()),
        &RequestParts::new("GET", url.path(), &other_query).with_base_path("/app"),
        QshMode::Computed,
    );
    assert!(refused.is_err());

    // A path without a query, and without a leading slash.
    let plain = sim
        .iframe_url(STUB_APP_KEY, "ui/admin", &demo.alice)
        .unwrap();
    let plain = Url::parse(&plain).unwrap();
    assert_eq!(plain.path(), "/app/ui/admin");
    assert!(plain.query().unwrap().starts_with("xdm_e="));
}

#[tokio::test]
async fn iframe_url_refuses_unknown_apps_and_users_and_disabled_apps() {
    let (sim, demo, _installation) = installed_at_app().await;
    assert!(matches!(
        sim.iframe_url("no-such-app", "/ui/admin", &demo.alice),
        Err(SimError::UnknownApp(_))
    ));
    assert!(matches!(
        sim.iframe_url(STUB_APP_KEY, "/ui/admin", "no-such-user"),
        Err(SimError::UnknownUser(_))
    ));
    sim.set_user_active(&demo.bob, false).unwrap();
    assert!(matches!(
        sim.iframe_url(STUB_APP_KEY, "/ui/admin", &demo.bob),
        Err(SimError::UnknownUser(_))
    ));
    sim.disable(STUB_APP_KEY).await.unwrap();
    assert!(matches!(
        sim.iframe_url(STUB_APP_KEY, "/ui/admin", &demo.alice),
        Err(SimError::Invalid(_))
    ));
}

// ---- in a real browser ---------------------------------------------------------------------

/// An iframe page as the app serves one: it loads `all.js` from the simulator and asks `AP` for a
/// context token and the user.
fn iframe_page(all_js_url: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>iframe page</title>
<script src="{all_js_url}"></script></head>
<body>
<p id="token"></p><p id="error"></p><p id="callback"></p><p id="user"></p>
<script>
  AP.resize(); AP.sizeToParent();
  AP.context.getToken().then(function (token) {{
    document.getElementById("token").textContent = token;
  }}, function (error) {{
    document.getElementById("error").textContent = String(error);
  }}).finally(function () {{ document.body.setAttribute("data-done", "token"); }});
  AP.context.getToken(function (token) {{
    document.getElementById("callback").textContent = token ? "called" : "empty";
  }});
  AP.user.getCurrentUser(function (user) {{
    document.getElementById("user").textContent = user.atlassianAccountId;
  }});
</script>
</body></html>"#
    )
}

/// A Connect app on 127.0.0.1 with the stub's descriptor that serves [`iframe_page`] at
/// `/ui/page` and answers every lifecycle callback 204. Returns its base URL.
async fn page_app(all_js_url: String) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let descriptor = Arc::new(stub_descriptor(&base_url, &["READ"]));
    let page = Arc::new(iframe_page(&all_js_url));
    let router = axum::Router::new()
        .route(
            "/atlassian-connect.json",
            axum::routing::get(move || {
                let descriptor = Arc::clone(&descriptor);
                async move { axum::Json((*descriptor).clone()) }
            }),
        )
        .route(
            "/ui/page",
            axum::routing::get(move || {
                let page = Arc::clone(&page);
                async move { Html((*page).clone()) }
            }),
        )
        .fallback(|| async { axum::http::StatusCode::NO_CONTENT });
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    base_url
}

#[tokio::test]
async fn a_page_in_chromium_gets_a_context_token_for_its_user_through_ap() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let demo = sim.seed_demo().unwrap();
    let app = page_app(sim.all_js_url()).await;
    let installation = sim.install(&app).await.unwrap();
    let iframe = sim
        .iframe_url(STUB_APP_KEY, "/ui/page?space=DEMO", &demo.alice)
        .unwrap();
    let mut forged = Url::parse(&iframe).unwrap();
    let query: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .map(|(n, v)| {
            if n == "jwt" {
                (n, format!("{v}x"))
            } else {
                (n, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(query);
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    let (token, callback, user) = browser
        .run("sim_connect_js_get_token", |client| async move {
            client.goto(&iframe).await?;
            client
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css("body[data-done]"))
                .await?;
            let error = client.find(Locator::Css("#error")).await?.text().await?;
            assert_eq!(error, "");
            let token = client.find(Locator::Css("#token")).await?.text().await?;
            client
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::XPath(
                    "//p[@id='user' and normalize-space(text())!='']",
                ))
                .await?;
            let callback = client.find(Locator::Css("#callback")).await?.text().await?;
            let user = client.find(Locator::Css("#user")).await?.text().await?;
            Ok::<_, test_support::browser::CmdError>((token, callback, user))
        })
        .await;
    let claims = verify_context(&sim, &installation, &token);
    assert_eq!(claims.sub.as_deref(), Some(demo.alice.as_str()));
    assert_eq!(claims.iss, sim.client_key());
    assert_eq!(callback, "called");
    assert_eq!(user, demo.alice);

    // A page whose own token was tampered with gets no context token.
    let error = browser
        .run("sim_connect_js_forged_page_token", |client| async move {
            client.goto(forged.as_str()).await?;
            client
                .wait()
                .at_most(Duration::from_secs(15))
                .for_element(Locator::Css("body[data-done]"))
                .await?;
            assert_eq!(client.find(Locator::Css("#token")).await?.text().await?, "");
            client.find(Locator::Css("#error")).await?.text().await
        })
        .await;
    assert!(error.contains("401"), "{error}");
    browser.close().await.unwrap();
}
