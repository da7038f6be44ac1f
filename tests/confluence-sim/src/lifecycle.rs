//! Confluence's side of the Connect lifecycle (docs/protocol.md §4): fetch the descriptor,
//! generate the tenant's credentials, post `installed` signed with the install key (RS256, `kid`
//! served by the key server), then `enabled`; re-installs (upgrade, secret rotation), `disabled`,
//! `enabled`, `uninstalled`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use url::{Host, Url};

use crate::auth::{random_hex, random_text, sign_hs256, sign_rs256};
use crate::error::SimError;
use crate::model::{AccountType, User};
use crate::state::{InstallState, Installation, LifecycleCall, Shared, WebhookModule};
use crate::webhooks::{app_url, qsh_for_app};

/// Lifetime of lifecycle tokens.
const LIFECYCLE_TOKEN_TTL: i64 = 180;

/// Keep the tenant's secret on a re-install (upgrade), or generate a new one (rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretMode {
    KeepIfInstalled,
    New,
}

/// The URL, if it is on a loopback host.
pub(crate) fn loopback_url(text: &str) -> Result<Url, SimError> {
    let url = Url::parse(text.trim()).map_err(|_| SimError::NotLoopback(text.to_owned()))?;
    let loopback = match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if loopback && matches!(url.scheme(), "http" | "https") {
        Ok(url)
    } else {
        Err(SimError::NotLoopback(text.to_owned()))
    }
}

/// A Connect descriptor, as far as Confluence reads it here.
#[derive(Debug, Clone)]
struct Descriptor {
    key: String,
    name: String,
    base_url: String,
    scopes: Vec<String>,
    lifecycle: BTreeMap<String, String>,
    webhooks: Vec<WebhookModule>,
    signed_install: bool,
    raw: Value,
}

fn parse_descriptor(raw: Value) -> Result<Descriptor, SimError> {
    let bad = |why: &str| SimError::Descriptor(why.to_owned());
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let key = text(&raw, "key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| bad("`key` is missing"))?;
    let base_url = text(&raw, "baseUrl").ok_or_else(|| bad("`baseUrl` is missing"))?;
    loopback_url(&base_url)?;
    let auth_type = raw
        .get("authentication")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    if !auth_type.is_some_and(|t| t.eq_ignore_ascii_case("jwt")) {
        return Err(bad("`authentication.type` must be jwt"));
    }
    let scopes = match raw.get("scopes") {
        None => vec!["READ".to_owned()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| s.as_str().map(str::to_ascii_uppercase))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`scopes` must be strings"))?,
        Some(_) => return Err(bad("`scopes` must be an array")),
    };
    let lifecycle = raw
        .get("lifecycle")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| v.as_str().map(|p| (k.clone(), p.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let webhooks = raw
        .get("modules")
        .and_then(|m| m.get("webhooks"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|w| {
                    Some(WebhookModule {
                        event: text(w, "event")?,
                        url: text(w, "url")?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let signed_install = raw
        .get("apiMigrations")
        .and_then(|m| m.get("signed-install"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let name = text(&raw, "name").unwrap_or_else(|| key.clone());
    Ok(Descriptor {
        key,
        name,
        base_url: base_url.trim_end_matches('/').to_owned(),
        scopes,
        lifecycle,
        webhooks,
        signed_install,
        raw,
    })
}

async fn fetch_descriptor(shared: &Shared, app_base_url: &str) -> Result<Descriptor, SimError> {
    let base = loopback_url(app_base_url)?;
    let url = app_url(base.as_str(), "atlassian-connect.json")
        .ok_or_else(|| SimError::Descriptor("cannot build the descriptor URL".into()))?;
    let response = shared
        .http
        .get(url.clone())
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| SimError::AppUnreachable {
            url: url.to_string(),
            reason: e.without_url().to_string(),
        })?;
    if response.status().as_u16() != 200 {
        return Err(SimError::Descriptor(format!(
            "GET {url} answered {}",
            response.status().as_u16()
        )));
    }
    let raw: Value = response
        .json()
        .await
        .map_err(|_| SimError::Descriptor(format!("GET {url} did not answer JSON")))?;
    parse_descriptor(raw)
}

/// The install payload Confluence posts (docs/protocol.md §4); `sharedSecret` only on `installed`.
fn lifecycle_payload(shared: &Shared, installation: &Installation, event: &str) -> Value {
    let (cloud_id, public_key) = {
        let state = shared.lock();
        let public_key = state.signing_key().map_or(String::new(), |k| {
            k.public_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>()
        });
        (state.cloud_id.clone(), public_key)
    };
    let mut payload = json!({
        "key": installation.app_key,
        "clientKey": installation.client_key,
        "publicKey": public_key,
        "baseUrl": installation.base_url,
        "displayUrl": installation.base_url,
        "productType": "confluence",
        "description": format!("Atlassian Confluence at {}", installation.base_url),
        "serviceEntitlementNumber": "SEN-SIM-1",
        "serverVersion": "6452",
        "pluginsVersion": "1000.0.0-confluence-sim",
        "eventType": event,
        "cloudId": cloud_id,
    });
    if let Some(object) = payload.as_object_mut() {
        if event == "installed" {
            object.insert(
                "sharedSecret".into(),
                Value::from(installation.shared_secret.as_str()),
            );
        }
        if let Some(id) = &installation.oauth_client_id {
            object.insert("oauthClientId".into(), Value::from(id.as_str()));
        }
        // Connect on Forge: the link from this Connect tenant to its Forge installation.
        if let Some(id) = &installation.forge_installation_id {
            object.insert("installationId".into(), Value::from(id.as_str()));
        }
    }
    payload
}

/// How a lifecycle callback is authenticated.
enum Signing<'a> {
    /// RS256 with the install key (signed install).
    Install,
    /// HS256 with a shared secret.
    Secret(&'a str),
    /// Nothing (a legacy first install).
    None,
}

fn lifecycle_token(
    shared: &Shared,
    installation: &Installation,
    url: &Url,
    signing: &Signing<'_>,
) -> Result<Option<String>, SimError> {
    let now = shared.now();
    let qsh = qsh_for_app("POST", url, &installation.app_base_url);
    match signing {
        Signing::None => Ok(None),
        Signing::Secret(secret) => {
            let claims = json!({"iss": installation.client_key, "iat": now,
                                "exp": now + LIFECYCLE_TOKEN_TTL, "qsh": qsh});
            sign_hs256(&claims, secret)
                .map(Some)
                .ok_or(SimError::Signing("HS256"))
        }
        Signing::Install => {
            let aud = if shared.config.install_aud_as_array {
                json!([installation.app_base_url])
            } else {
                json!(installation.app_base_url)
            };
            let claims = json!({"iss": installation.client_key, "aud": aud, "iat": now,
                                "exp": now + LIFECYCLE_TOKEN_TTL, "qsh": qsh});
            let key = shared
                .lock()
                .signing_key()
                .cloned()
                .ok_or(SimError::Signing("no install key"))?;
            sign_rs256(&claims, &key.private_pem, &key.kid)
                .map(Some)
                .ok_or(SimError::Signing(
                    "RS256 (is the install key a PKCS#8 RSA PEM?)",
                ))
        }
    }
}

/// Posts one lifecycle callback, if the descriptor declares it; records it.
async fn post_lifecycle(
    shared: &Shared,
    installation: &Installation,
    event: &str,
    signing: Signing<'_>,
) -> Result<Option<LifecycleCall>, SimError> {
    let Some(path) = installation.lifecycle.get(event) else {
        return Ok(None);
    };
    let url = app_url(&installation.app_base_url, path)
        .ok_or_else(|| SimError::Descriptor(format!("lifecycle.{event} is not a usable path")))?;
    let token = lifecycle_token(shared, installation, &url, &signing)?;
    let body = lifecycle_payload(shared, installation, event);
    let mut request = shared
        .http
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = &token {
        request = request.header("authorization", format!("JWT {token}"));
    }
    let (status, error, text) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            (Some(status), None, text)
        }
        Err(e) => (None, Some(e.without_url().to_string()), String::new()),
    };
    let call = LifecycleCall {
        event: event.to_owned(),
        app_key: installation.app_key.clone(),
        url: url.to_string(),
        body,
        token,
        status,
        error,
    };
    shared.lock().lifecycle.push(call.clone());
    if let Some(error) = &call.error {
        return Err(SimError::AppUnreachable {
            url: call.url.clone(),
            reason: error.clone(),
        });
    }
    if let Some(status) = call.status
        && !(200..300).contains(&status)
    {
        return Err(SimError::CallbackRefused {
            event: event.to_owned(),
            status,
            body: text.chars().take(300).collect(),
        });
    }
    Ok(Some(call))
}

/// Installs (or re-installs) the app served at `app_base_url`.
pub(crate) async fn install(
    shared: &Shared,
    app_base_url: &str,
    mode: SecretMode,
) -> Result<Installation, SimError> {
    let descriptor = fetch_descriptor(shared, app_base_url).await?;
    let act_as_user = descriptor.scopes.iter().any(|s| s == "ACT_AS_USER");
    let (installation, previous_secret) = {
        let state = shared.lock();
        let existing = state.installations.get(&descriptor.key);
        let active = existing.filter(|i| i.state != InstallState::Uninstalled);
        let secret = match (mode, active) {
            (SecretMode::KeepIfInstalled, Some(i)) => i.shared_secret.clone(),
            _ => random_text(64),
        };
        let oauth_client_id = act_as_user.then(|| {
            existing
                .and_then(|i| i.oauth_client_id.clone())
                .unwrap_or_else(|| random_text(32))
        });
        let app_account_id = existing.map_or_else(|| random_hex(24), |i| i.app_account_id.clone());
        let installation = Installation {
            app_key: descriptor.key.clone(),
            name: descriptor.name.clone(),
            client_key: state.client_key.clone(),
            shared_secret: secret,
            oauth_client_id,
            app_base_url: descriptor.base_url.clone(),
            app_account_id,
            scopes: descriptor.scopes.clone(),
            state: InstallState::Enabled,
            lifecycle: descriptor.lifecycle.clone(),
            webhooks: descriptor.webhooks.clone(),
            signed_install: descriptor.signed_install,
            base_url: shared.site_base_url(),
            descriptor: descriptor.raw.clone(),
            forge_installation_id: active.and_then(|i| i.forge_installation_id.clone()),
        };
        (installation, active.map(|i| i.shared_secret.clone()))
    };
    let signing = match (&installation.signed_install, &previous_secret) {
        (true, _) => Signing::Install,
        (false, Some(old)) => Signing::Secret(old),
        (false, None) => Signing::None,
    };
    post_lifecycle(shared, &installation, "installed", signing).await?;
    {
        let mut state = shared.lock();
        let user = state
            .content
            .users
            .entry(installation.app_account_id.clone())
            .or_insert_with(|| User {
                account_id: installation.app_account_id.clone(),
                display_name: installation.name.clone(),
                account_type: AccountType::App,
                active: true,
            });
        user.active = true;
        state
            .installations
            .insert(installation.app_key.clone(), installation.clone());
    }
    // An app registered with Forge gets no `enabled` (docs: forge-remote.md §6).
    if shared.config.send_enabled_after_install && installation.forge_installation_id.is_none() {
        // Confluence sends `enabled` after `installed`; the install stands whatever the app answers.
        let _ = post_lifecycle(
            shared,
            &installation,
            "enabled",
            Signing::Secret(&installation.shared_secret),
        )
        .await;
    }
    Ok(installation)
}

/// The stored installation of `app_key`.
pub(crate) fn installation(shared: &Shared, app_key: &str) -> Result<Installation, SimError> {
    shared
        .lock()
        .installations
        .get(app_key)
        .cloned()
        .ok_or_else(|| SimError::UnknownApp(app_key.to_owned()))
}

/// Re-installs from the stored base URL.
pub(crate) async fn reinstall(
    shared: &Shared,
    app_key: &str,
    mode: SecretMode,
) -> Result<Installation, SimError> {
    let current = installation(shared, app_key)?;
    if current.state == InstallState::Uninstalled {
        return Err(SimError::Invalid(format!(
            "{app_key} is uninstalled: install it again instead"
        )));
    }
    install(shared, &current.app_base_url, mode).await
}

/// Enables or disables an app. The state changes whatever the app answers.
pub(crate) async fn set_enabled(
    shared: &Shared,
    app_key: &str,
    enabled: bool,
) -> Result<Option<LifecycleCall>, SimError> {
    let current = installation(shared, app_key)?;
    if current.state == InstallState::Uninstalled {
        return Err(SimError::Invalid(format!("{app_key} is uninstalled")));
    }
    let target = if enabled {
        InstallState::Enabled
    } else {
        InstallState::Disabled
    };
    if let Some(i) = shared.lock().installations.get_mut(app_key) {
        i.state = target;
    }
    // Once registered with Forge, `enabled` and `disabled` are no longer sent.
    if current.forge_installation_id.is_some() {
        return Ok(None);
    }
    let event = if enabled { "enabled" } else { "disabled" };
    match post_lifecycle(
        shared,
        &current,
        event,
        Signing::Secret(&current.shared_secret),
    )
    .await
    {
        Ok(call) => Ok(call),
        Err(SimError::CallbackRefused { .. } | SimError::AppUnreachable { .. }) => {
            Ok(shared.lock().lifecycle.last().cloned())
        }
        Err(other) => Err(other),
    }
}

/// Uninstalls an app: its tokens are revoked and its app user deactivated, whatever it answers.
pub(crate) async fn uninstall(
    shared: &Shared,
    app_key: &str,
) -> Result<Option<LifecycleCall>, SimError> {
    let current = installation(shared, app_key)?;
    if current.state == InstallState::Uninstalled {
        return Err(SimError::Invalid(format!(
            "{app_key} is already uninstalled"
        )));
    }
    {
        let mut state = shared.lock();
        if let Some(i) = state.installations.get_mut(app_key) {
            i.state = InstallState::Uninstalled;
        }
        state.tokens.retain(|_, t| t.app_key != app_key);
        if let Some(user) = state.content.users.get_mut(&current.app_account_id) {
            user.active = false;
        }
    }
    let signing = if current.signed_install {
        Signing::Install
    } else {
        Signing::Secret(&current.shared_secret)
    };
    match post_lifecycle(shared, &current, "uninstalled", signing).await {
        Ok(call) => Ok(call),
        Err(SimError::CallbackRefused { .. } | SimError::AppUnreachable { .. }) => {
            Ok(shared.lock().lifecycle.last().cloned())
        }
        Err(other) => Err(other),
    }
}
