//! A stand-in for Confluence's iframe host script (`https://connect-cdn.atl-paas.net/all.js`) and
//! the iframe URLs Confluence renders, so that a real browser can drive the app's pages.
//!
//! | request | answers |
//! |---|---|
//! | `GET /_sim/connect/all.js` | a script defining `window.AP` (`application/javascript`) |
//! | `GET /_sim/connect/context-token?jwt=<the page's token>` | `{"token": "<context JWT>"}`, or 401 |
//!
//! In production an iframe page asks the host frame for a context JWT over `postMessage`;
//! Confluence knows the user and the app that own the frame. Here the page has no host frame, so
//! `AP.context.getToken()` shows the sim the request-bound token the page was loaded with (the
//! `jwt` parameter of its own URL, as [`crate::Simulator::iframe_url`] builds it): the app whose
//! shared secret verifies it owns the frame, and its `sub` is the user. The context JWT is signed
//! with that app's secret: `iss` = clientKey, `sub` = the user, `qsh` = `context-qsh`, three
//! minutes on the sim's clock, `context` `{}`.
//!
//! Both answers carry `Access-Control-Allow-Origin: *`: the page is on the app's origin.

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use connect_auth::CONTEXT_QSH;
use serde_json::{Value, json};

use crate::auth::{hs256_claims, sign_hs256};
use crate::confluence::json_response;
use crate::error::SimError;
use crate::state::Shared;
use crate::webhooks::{app_url, qsh_for_app};

/// Where the script is served, under the sim's origin.
pub(crate) const ALL_JS_PATH: &str = "/_sim/connect/all.js";
/// Where the script gets context tokens, under the sim's origin.
pub(crate) const CONTEXT_TOKEN_PATH: &str = "/_sim/connect/context-token";
/// The prefix of both.
pub(crate) const PREFIX: &str = "/_sim/connect/";

/// How long iframe and context tokens live (Confluence: 3 minutes).
pub(crate) const TOKEN_TTL: i64 = 180;

/// The script. `__SIM_ORIGIN__` is replaced with the sim's origin (used when the script cannot
/// tell where it was loaded from).
const ALL_JS: &str = r#"/* confluence-sim: a stand-in for Confluence's all.js (tests only). */
(function () {
  "use strict";
  var fallbackOrigin = "__SIM_ORIGIN__";
  var script = document.currentScript;
  var simOrigin = fallbackOrigin;
  try {
    if (script && script.src) { simOrigin = new URL(script.src).origin; }
  } catch (e) { simOrigin = fallbackOrigin; }

  function pageJwt() {
    return new URLSearchParams(window.location.search).get("jwt");
  }

  function getToken(callback) {
    var jwt = pageJwt();
    var promise;
    if (!jwt) {
      promise = Promise.reject(new Error("AP.context.getToken: the page's URL has no jwt parameter"));
    } else {
      promise = fetch(simOrigin + "/_sim/connect/context-token?jwt=" + encodeURIComponent(jwt), {
        method: "GET",
        credentials: "omit",
        cache: "no-store"
      }).then(function (response) {
        if (!response.ok) {
          throw new Error("AP.context.getToken: the simulator answered " + response.status);
        }
        return response.json();
      }).then(function (body) {
        return body.token;
      });
    }
    if (typeof callback === "function") {
      promise.then(function (token) { callback(token); }, function (error) {
        if (window.console) { console.error(String(error)); }
      });
    }
    return promise;
  }

  function currentUser(callback) {
    var promise = getToken().then(function (token) {
      var payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      while (payload.length % 4) { payload += "="; }
      var claims = JSON.parse(atob(payload));
      return { atlassianAccountId: claims.sub, accountId: claims.sub };
    });
    if (typeof callback === "function") {
      promise.then(function (user) { callback(user); }, function (error) {
        if (window.console) { console.error(String(error)); }
      });
    }
    return promise;
  }

  function noop() {}

  var AP = window.AP || {};
  AP._sim = { origin: simOrigin };
  AP.context = AP.context || {};
  AP.context.getToken = getToken;
  AP.context.getContext = function (callback) {
    var context = {};
    if (typeof callback === "function") { callback(context); }
    return Promise.resolve(context);
  };
  AP.user = AP.user || {};
  AP.user.getCurrentUser = currentUser;
  AP.resize = noop;
  AP.sizeToParent = noop;
  AP.require = function (names, callback) {
    var list = Array.isArray(names) ? names : [names];
    var modules = list.map(function (name) { return AP[name]; });
    if (typeof callback === "function") { callback.apply(null, modules); }
  };
  window.AP = AP;
})();
"#;

/// Answers a request under [`PREFIX`].
pub(crate) fn handle(shared: &Arc<Shared>, method: &Method, path: &str, query: &str) -> Response {
    let response = match (method, path) {
        (&Method::OPTIONS, _) => StatusCode::NO_CONTENT.into_response(),
        (&Method::GET | &Method::HEAD, ALL_JS_PATH) => (
            StatusCode::OK,
            [
                ("content-type", "application/javascript; charset=utf-8"),
                ("cache-control", "no-store"),
            ],
            ALL_JS.replace("__SIM_ORIGIN__", &shared.origin()),
        )
            .into_response(),
        (&Method::GET, CONTEXT_TOKEN_PATH) => context_token(shared, query),
        _ => json_response(
            404,
            &json!({"error": format!("no route {method} {path} (see {ALL_JS_PATH})")}),
        ),
    };
    with_cors(response)
}

fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("*"),
    );
    response
}

fn refused(reason: &str) -> Response {
    json_response(401, &json!({"error": reason}))
}

/// `GET /_sim/connect/context-token?jwt=...`.
fn context_token(shared: &Arc<Shared>, query: &str) -> Response {
    let Some(page_token) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "jwt")
        .map(|(_, value)| value.into_owned())
    else {
        return refused("the jwt parameter (the page's own token) is required");
    };
    let now = shared.now();
    let leeway = shared.config.leeway_seconds;
    let signed = {
        let state = shared.lock();
        // Every app on the site shares the clientKey; the secret that verifies names the app.
        let found = state.installations.values().find_map(|installation| {
            let claims = hs256_claims(&page_token, &installation.shared_secret)?;
            Some((installation.clone(), claims))
        });
        let Some((installation, claims)) = found else {
            return refused("the token does not verify with the secret of any installed app");
        };
        if !installation.is_enabled() {
            return refused("the token's app is not enabled");
        }
        if let Err(reason) = check_page_token(&claims, &installation.client_key, now, leeway) {
            return refused(reason);
        }
        let mut context = json!({
            "iss": installation.client_key,
            "iat": now,
            "exp": now.saturating_add(TOKEN_TTL),
            "qsh": CONTEXT_QSH,
            "context": {},
        });
        if let (Some(sub), Some(fields)) = (
            claims.get("sub").and_then(Value::as_str),
            context.as_object_mut(),
        ) {
            fields.insert("sub".to_owned(), json!(sub));
        }
        sign_hs256(&context, &installation.shared_secret)
    };
    match signed {
        Some(token) => {
            let mut response = json_response(200, &json!({"token": token}));
            response
                .headers_mut()
                .insert("cache-control", HeaderValue::from_static("no-store"));
            response
        }
        None => json_response(
            500,
            &json!({"error": "the context token could not be signed"}),
        ),
    }
}

/// The page's token must be one Confluence issued for an iframe of this site, still valid: `iss`
/// the clientKey, `exp` and `iat` on the sim's clock (with the leeway), a request-bound `qsh`.
fn check_page_token(
    claims: &Value,
    client_key: &str,
    now: i64,
    leeway: i64,
) -> Result<(), &'static str> {
    if claims.get("iss").and_then(Value::as_str) != Some(client_key) {
        return Err("the token's iss is not this site's clientKey");
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("the token has no numeric exp")?;
    let iat = claims
        .get("iat")
        .and_then(Value::as_i64)
        .ok_or("the token has no numeric iat")?;
    if now >= exp.saturating_add(leeway) {
        return Err("the token expired");
    }
    if iat > now.saturating_add(leeway) {
        return Err("the token is not valid yet");
    }
    match claims.get("qsh").and_then(Value::as_str) {
        None => Err("the token has no qsh"),
        Some(CONTEXT_QSH) => Err("a context token is not a page's token"),
        Some(_) => Ok(()),
    }
}

/// The URL Confluence puts in an iframe's `src` for `app_key`'s page at `path_and_query`
/// (relative to the app's base URL), as seen by `user`: the page's query, then Confluence's own
/// parameters, then a request-bound `jwt` for `GET <path>?<all of that>`.
pub(crate) fn iframe_url(
    shared: &Arc<Shared>,
    app_key: &str,
    path_and_query: &str,
    user: &str,
) -> Result<String, SimError> {
    let now = shared.now();
    let origin = shared.origin();
    let state = shared.lock();
    let installation = state
        .installations
        .get(app_key)
        .ok_or_else(|| SimError::UnknownApp(app_key.to_owned()))?;
    if !installation.is_enabled() {
        return Err(SimError::Invalid(format!(
            "{app_key} is not enabled: Confluence renders none of its iframes"
        )));
    }
    if !state.content.users.get(user).is_some_and(|u| u.active) {
        return Err(SimError::UnknownUser(user.to_owned()));
    }
    let without_fragment = path_and_query.split('#').next().unwrap_or_default();
    let (path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    let confluence_params = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("xdm_e", &origin)
        .append_pair("cp", "/wiki")
        .append_pair("lic", "none")
        .append_pair("cv", "1.0")
        .finish();
    let query = if query.is_empty() {
        confluence_params
    } else {
        format!("{query}&{confluence_params}")
    };
    let mut url = app_url(&installation.app_base_url, path).ok_or_else(|| {
        SimError::Invalid(format!(
            "{path:?} is not a path under {}",
            installation.app_base_url
        ))
    })?;
    url.set_query(Some(&query));
    let claims = json!({
        "iss": installation.client_key,
        "sub": user,
        "iat": now,
        "exp": now.saturating_add(TOKEN_TTL),
        "qsh": qsh_for_app("GET", &url, &installation.app_base_url),
        "context": {"license": {"active": false}},
    });
    let token = sign_hs256(&claims, &installation.shared_secret)
        .ok_or(SimError::Signing("the tenant's shared secret"))?;
    let query = format!(
        "{query}&{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("jwt", &token)
            .finish()
    );
    url.set_query(Some(&query));
    Ok(url.to_string())
}
