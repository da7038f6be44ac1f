//! What the Forge platform does to a remote on the site's behalf: install (with its app user and
//! a system token), upgrade, uninstall, the scheduled trigger, UI invocations, and raw requests for
//! attack tests.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::random_uuid;
use crate::error::SimError;
use crate::forge::delivery::{self, ForgeOutgoing, Request};
use crate::forge::fit::{self, Invocation};
use crate::forge::{
    ForgeCall, ForgeCallKind, ForgeInstall, ForgeInstallation, ForgeTokenKind,
    LIFECYCLE_ENDPOINT_KEY, LIFECYCLE_PATH, SCHEDULED_ENDPOINT_KEY, SCHEDULED_PATH,
    SCHEDULED_TRIGGER_KEY, SITE_ADMIN_ACCOUNT_ID, UI_MODULE_KEY, UI_MODULE_TYPE,
};
use crate::lifecycle::loopback_url;
use crate::model::{AccountType, Subject, User};
use crate::state::Shared;

/// The body of `avi:forge:installed:app` / `avi:forge:upgraded:app`. `id` is the installation's
/// ARI and the upgrade names its actor `upgraderAccountId` (both *unverified*).
fn lifecycle_body(event_type: &str, installation: &ForgeInstallation) -> Value {
    let actor_field = if event_type == "avi:forge:upgraded:app" {
        "upgraderAccountId"
    } else {
        "installerAccountId"
    };
    json!({
        "eventType": event_type,
        "id": installation.installation_id,
        actor_field: installation.installer_account_id,
        "app": {"id": installation.app_id, "version": installation.app_version},
        "environment": {"id": installation.environment_id},
        "context": {"cloudId": installation.cloud_id},
    })
}

fn not_installed() -> SimError {
    SimError::Invalid("no Forge app is installed".into())
}

/// Delivers a lifecycle event or a scheduled trigger through `module_key`.
async fn deliver(
    shared: &Arc<Shared>,
    kind: ForgeCallKind,
    event_type: Option<&str>,
    path: &str,
    module_key: &str,
    body: Value,
) -> Result<delivery::Delivered, SimError> {
    delivery::deliver(
        shared,
        ForgeOutgoing {
            kind,
            event_type: event_type.map(str::to_owned),
            path: path.to_owned(),
            module_key: module_key.to_owned(),
            body,
        },
    )
    .await
    .ok_or_else(not_installed)
}

/// Installs the Forge app whose remote is at `remote_base_url`: a new installation id, the Forge
/// app user (created once, a new accountId distinct from any Connect app user), then
/// `avi:forge:installed:app` with a system token. The install stands whatever the remote answers
/// (Forge does not roll an install back because a remote failed).
pub(crate) async fn install(
    shared: &Arc<Shared>,
    remote_base_url: &str,
    connect_app_key: Option<&str>,
) -> Result<ForgeInstall, SimError> {
    let remote = loopback_url(remote_base_url)?
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let installation = {
        let mut state = shared.lock();
        state
            .content
            .users
            .entry(SITE_ADMIN_ACCOUNT_ID.to_owned())
            .or_insert_with(|| User {
                account_id: SITE_ADMIN_ACCOUNT_ID.to_owned(),
                display_name: "Site Admin".to_owned(),
                account_type: AccountType::Customer,
                active: true,
            });
        let app_account_id = state
            .forge
            .app_account_id
            .clone()
            .unwrap_or_else(|| format!("712020:{}", random_uuid()));
        let app_user = state
            .content
            .users
            .entry(app_account_id.clone())
            .or_insert_with(|| User {
                account_id: app_account_id.clone(),
                display_name: "Understudy (Forge)".to_owned(),
                account_type: AccountType::App,
                active: true,
            });
        app_user.active = true;
        let cloud_id = state.cloud_id.clone();
        let forge = &mut state.forge;
        forge.app_account_id = Some(app_account_id.clone());
        // A new installation: whatever the old one held stops working.
        forge.tokens.clear();
        let installation = ForgeInstallation {
            app_id: forge.app_id.clone(),
            installation_id: format!("ari:cloud:ecosystem::installation/{}", random_uuid()),
            environment_id: forge.environment_id.clone(),
            environment_type: forge.environment_type.clone(),
            app_version: format!("{}.0.0", forge.major_version),
            api_base_url: format!("{}/ex/confluence/{cloud_id}", shared.origin()),
            cloud_id,
            site_url: shared.origin(),
            remote_base_url: remote,
            app_account_id,
            installer_account_id: SITE_ADMIN_ACCOUNT_ID.to_owned(),
            connect_app_key: connect_app_key.map(str::to_owned),
            installed: true,
        };
        forge.installation = Some(installation.clone());
        installation
    };
    let event = "avi:forge:installed:app";
    let delivered = deliver(
        shared,
        ForgeCallKind::Lifecycle,
        Some(event),
        LIFECYCLE_PATH,
        LIFECYCLE_ENDPOINT_KEY,
        lifecycle_body(event, &installation),
    )
    .await?;
    Ok(ForgeInstall {
        installation,
        system_token: delivered.system_token,
        lifecycle: delivered.call,
    })
}

/// Deploys the next major version: `avi:forge:upgraded:app` (Forge sends it for major versions
/// only). The installation id stays.
pub(crate) async fn upgrade(shared: &Arc<Shared>) -> Result<ForgeCall, SimError> {
    let installation = {
        let mut state = shared.lock();
        let forge = &mut state.forge;
        if forge.current().is_none() {
            return Err(not_installed());
        }
        forge.major_version = forge.major_version.saturating_add(1);
        let version = format!("{}.0.0", forge.major_version);
        let installation = forge.installation.as_mut().ok_or_else(not_installed)?;
        installation.app_version = version;
        installation.clone()
    };
    let event = "avi:forge:upgraded:app";
    Ok(deliver(
        shared,
        ForgeCallKind::Lifecycle,
        Some(event),
        LIFECYCLE_PATH,
        LIFECYCLE_ENDPOINT_KEY,
        lifecycle_body(event, &installation),
    )
    .await?
    .call)
}

/// One run of the scheduled trigger: a fresh FIT and system token, body
/// `{"context": {"cloudId", "moduleKey"}}`.
pub(crate) async fn scheduled_tick(shared: &Arc<Shared>) -> Result<ForgeCall, SimError> {
    let cloud_id = shared
        .lock()
        .forge
        .current()
        .map(|i| i.cloud_id.clone())
        .ok_or_else(not_installed)?;
    Ok(deliver(
        shared,
        ForgeCallKind::Scheduled,
        None,
        SCHEDULED_PATH,
        SCHEDULED_ENDPOINT_KEY,
        json!({"context": {"cloudId": cloud_id, "moduleKey": SCHEDULED_TRIGGER_KEY}}),
    )
    .await?
    .call)
}

/// Uninstalls: tokens revoked, the Forge app user deactivated. No event reaches the remote.
pub(crate) fn uninstall(shared: &Shared) -> Result<(), SimError> {
    let mut state = shared.lock();
    let account = {
        let forge = &mut state.forge;
        let installation = forge
            .installation
            .as_mut()
            .filter(|i| i.installed)
            .ok_or_else(not_installed)?;
        installation.installed = false;
        let account = installation.app_account_id.clone();
        forge.tokens.clear();
        account
    };
    if let Some(user) = state.content.users.get_mut(&account) {
        user.active = false;
    }
    Ok(())
}

/// A UI invocation (`invokeRemote` from a macro's frontend) by `account_id`, on `page` if given:
/// a FIT with `principal` and `context`, the user's token and the system token. No retries.
pub(crate) async fn invoke(
    shared: &Shared,
    account_id: &str,
    page: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), SimError> {
    if !path.starts_with('/') {
        return Err(SimError::Invalid(format!("{path} must start with /")));
    }
    let now = shared.now();
    let (url, fit, user_token, system_token, delivery_id) = {
        let mut state = shared.lock();
        let installation = state.forge.current().cloned().ok_or_else(not_installed)?;
        let user_ok = state
            .content
            .users
            .get(account_id)
            .is_some_and(|u| u.active && u.account_type == AccountType::Customer);
        if !user_ok {
            return Err(SimError::UnknownUser(account_id.to_owned()));
        }
        let page = match page {
            Some(id) => {
                let found = id
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| state.content.pages.get(&n))
                    .ok_or_else(|| SimError::UnknownPage(id.to_owned()))?;
                // The macro is only rendered for people who can see the page.
                if !state.content.can_view(found, Subject::person(account_id)) {
                    return Err(SimError::NotPermitted(format!(
                        "{account_id} may not view page {id}"
                    )));
                }
                Some(found)
            }
            None => None,
        };
        let context = fit::ui_context(&state, &installation, page);
        let claims = fit::claims(
            &state.forge,
            &installation,
            now,
            &Invocation {
                module_type: UI_MODULE_TYPE,
                module_key: UI_MODULE_KEY,
                principal: Some(account_id),
                context: Some(context),
            },
        );
        let fit = fit::sign(&state.forge, &claims)?;
        let lifetimes = &shared.config.forge;
        let user_token = state
            .forge
            .mint(
                ForgeTokenKind::User,
                account_id,
                now,
                lifetimes.user_token_lifetime_seconds,
            )
            .ok_or_else(not_installed)?;
        let system_token = state
            .forge
            .mint(
                ForgeTokenKind::System,
                &installation.app_account_id,
                now,
                lifetimes.system_token_lifetime_seconds,
            )
            .ok_or_else(not_installed)?;
        let delivery_id = state.forge.next_delivery;
        state.forge.next_delivery += 1;
        (
            format!("{}{path}", installation.remote_base_url),
            fit,
            user_token,
            system_token,
            delivery_id,
        )
    };
    let (call, _) = delivery::send(
        shared,
        Request {
            kind: ForgeCallKind::Invocation,
            event_type: None,
            delivery_id,
            attempt: 1,
            method,
            url: &url,
            fit: Some(&fit),
            system_token: Some(&system_token),
            user_token: Some(&user_token),
            body,
            timeout: shared.config.forge.invocation_timeout,
        },
    )
    .await;
    answered(call)
}

fn answered(call: ForgeCall) -> Result<(u16, Value), SimError> {
    match call.status {
        Some(status) => Ok((status, call.response)),
        None => Err(SimError::AppUnreachable {
            url: call.url,
            reason: call.error.unwrap_or_default(),
        }),
    }
}

/// A raw POST as Forge would send it (`x-b3-*` headers, JSON body), with exactly the FIT and
/// tokens given (any of them may be left out). `url_or_path` is a full loopback URL or a path under
/// the remote's base URL.
pub(crate) async fn post(
    shared: &Shared,
    url_or_path: &str,
    fit: Option<&str>,
    system_token: Option<&str>,
    user_token: Option<&str>,
    body: &Value,
) -> Result<(u16, Value), SimError> {
    let (url, delivery_id) = {
        let mut state = shared.lock();
        let url = if url_or_path.starts_with('/') {
            let base = state
                .forge
                .installation
                .as_ref()
                .map(|i| i.remote_base_url.clone())
                .ok_or_else(not_installed)?;
            format!("{base}{url_or_path}")
        } else {
            loopback_url(url_or_path)?.to_string()
        };
        let delivery_id = state.forge.next_delivery;
        state.forge.next_delivery += 1;
        (url, delivery_id)
    };
    let (call, _) = delivery::send(
        shared,
        Request {
            kind: ForgeCallKind::Raw,
            event_type: body.get("eventType").and_then(Value::as_str),
            delivery_id,
            attempt: 1,
            method: "POST",
            url: &url,
            fit,
            system_token,
            user_token,
            body: Some(body),
            timeout: shared.config.forge.event_timeout,
        },
    )
    .await;
    answered(call)
}
