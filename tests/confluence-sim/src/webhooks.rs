//! Webhooks as Confluence sends them (docs/protocol.md §8): one URL per event from the
//! descriptor, `Authorization: JWT` HS256 with the tenant secret, `iss` = clientKey, `sub` = the
//! acting user, a `qsh` computed for `POST <webhook path>` relative to the app's base URL.
//!
//! The same change also makes the matching Forge event for an installed Forge app
//! ([`crate::forge::delivery`]), so every path that fires webhooks fires Forge events too.

use std::sync::Arc;

use connect_auth::RequestParts;
use serde_json::{Value, json};
use url::Url;

use crate::auth::sign_hs256;
use crate::forge::delivery::{self as forge_delivery, ForgeOutgoing};
use crate::model::{Page, Subject};
use crate::state::{Delivery, Installation, Shared, State};

/// How long webhook tokens live (Confluence: 3 minutes).
pub(crate) const WEBHOOK_TOKEN_TTL: i64 = 180;

/// A Connect webhook built under the lock, sent after it is released.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub event: String,
    pub app_key: String,
    pub url: String,
    pub token: String,
    pub body: Value,
}

/// A call built under the lock, made after it is released: a Connect webhook or a Forge event.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    Connect(Webhook),
    Forge(ForgeOutgoing),
}

/// Whether a change also reaches an installed Forge app as a Forge event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForgeEcho {
    /// Connect only (the Connect raw control [`crate::Simulator::fire_webhook`]).
    Skip,
    /// The Forge event too; `self_generated` when the change was made with a token the Forge app
    /// holds.
    Send { self_generated: bool },
}

/// The full URL of a descriptor path under the app's base URL.
pub(crate) fn app_url(app_base_url: &str, path: &str) -> Option<Url> {
    let joined = format!(
        "{}/{}",
        app_base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    Url::parse(&joined).ok()
}

/// The qsh of `POST url`, relative to the app's base URL (docs/protocol.md §2).
pub(crate) fn qsh_for_app(method: &str, url: &Url, app_base_url: &str) -> String {
    let base_path = Url::parse(app_base_url)
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    RequestParts::new(method, url.path(), url.query().unwrap_or(""))
        .with_base_path(&base_path)
        .qsh()
}

/// The page object of page webhooks (and `content` of `content_permissions_updated`).
pub(crate) fn page_object(site_base_url: &str, page: &Page) -> Value {
    json!({
        "idAsString": page.id_string(),
        "id": page.id,
        "title": page.title,
        "spaceKey": page.space_key,
        "spaceId": page.space_id,
        "contentType": "page",
        "version": page.version,
        "creatorAccountId": page.creator,
        "lastModifierAccountId": page.last_modifier,
        "creationDate": page.created_ms,
        "modificationDate": page.modified_ms,
        "self": format!("{site_base_url}/spaces/{}/pages/{}", page.space_key, page.id),
    })
}

/// The body of an event about a page, in the shape Confluence sends.
pub(crate) fn payload(
    state: &State,
    site_base_url: &str,
    event: &str,
    page: &Page,
    actor: &str,
    now_ms: i64,
) -> Value {
    let account_type = state
        .content
        .users
        .get(actor)
        .map_or("customer", |u| u.account_type.webhook_value());
    let object = page_object(site_base_url, page);
    if event.starts_with("page_") {
        let trigger = match event {
            "page_created" => "create_page",
            "page_updated" => "edit_page",
            "page_moved" => "move_page",
            "page_trashed" => "trash_page",
            "page_restored" => "restore_page",
            "page_removed" => "remove_page",
            _ => "edit_page",
        };
        json!({
            "userAccountId": actor,
            "accountType": account_type,
            "updateTrigger": trigger,
            "suppressNotifications": false,
            "page": object,
            "timestamp": now_ms,
        })
    } else {
        // content_permissions_updated and other content events: the page is under `content`.
        json!({
            "userAccountId": actor,
            "accountType": account_type,
            "content": object,
            "timestamp": now_ms,
        })
    }
}

/// The webhook JWT for one delivery.
pub(crate) fn webhook_token(
    installation: &Installation,
    url: &Url,
    actor: &str,
    now: i64,
) -> Option<String> {
    let claims = json!({
        "iss": installation.client_key,
        "sub": actor,
        "iat": now,
        "exp": now + WEBHOOK_TOKEN_TTL,
        "qsh": qsh_for_app("POST", url, &installation.app_base_url),
        "context": {"user": {"accountId": actor}, "license": {"active": false}},
    });
    sign_hs256(&claims, &installation.shared_secret)
}

/// What happened, for [`build`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event<'a> {
    /// `page_updated`, `content_permissions_updated`, ...
    pub name: &'a str,
    pub page_id: u64,
    /// Who did it (accountId).
    pub actor: &'a str,
    /// Only to this app (raw control).
    pub only_app: Option<&'a str>,
    /// Skip the app-may-view filter (raw control).
    pub force: bool,
    /// The Forge event too?
    pub forge: ForgeEcho,
}

/// Builds the deliveries of an event to every enabled app subscribed to it.
pub(crate) fn build(state: &State, site_base_url: &str, now: i64, e: Event<'_>) -> Vec<Outgoing> {
    let (event, actor, only_app, force) = (e.name, e.actor, e.only_app, e.force);
    let Some(page) = state.content.pages.get(&e.page_id) else {
        return Vec::new();
    };
    let body = payload(
        state,
        site_base_url,
        event,
        page,
        actor,
        now.saturating_mul(1000),
    );
    let mut out = Vec::new();
    for installation in state.installations.values() {
        if !installation.is_enabled() || only_app.is_some_and(|k| k != installation.app_key) {
            continue;
        }
        let app_sees = state.content.can_view(
            page,
            Subject {
                account_id: &installation.app_account_id,
                via_app: Some(&installation.app_key),
            },
        );
        if state.webhooks_require_app_view && !force && !app_sees {
            continue;
        }
        for module in installation.webhooks.iter().filter(|m| m.event == event) {
            let Some(url) = app_url(&installation.app_base_url, &module.url) else {
                continue;
            };
            let Some(token) = webhook_token(installation, &url, actor, now) else {
                continue;
            };
            out.push(Outgoing::Connect(Webhook {
                event: event.to_owned(),
                app_key: installation.app_key.clone(),
                url: url.to_string(),
                token,
                body: body.clone(),
            }));
        }
    }
    if let ForgeEcho::Send { self_generated } = e.forge
        && let Some(forge) =
            forge_delivery::page_event(state, event, page, actor, self_generated, force)
    {
        out.push(Outgoing::Forge(forge));
    }
    out
}

/// Sends one webhook and records the delivery.
pub(crate) async fn deliver(shared: &Shared, outgoing: Webhook) -> Delivery {
    let sent = shared
        .http
        .post(&outgoing.url)
        .header("authorization", format!("JWT {}", outgoing.token))
        .header("content-type", "application/json")
        .header("user-agent", "Atlassian Connect (confluence-sim)")
        .body(outgoing.body.to_string())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(response) => (Some(response.status().as_u16()), None),
        Err(e) => (None, Some(e.without_url().to_string())),
    };
    let delivery = {
        let mut state = shared.lock();
        let delivery = Delivery {
            id: state.next_delivery,
            event: outgoing.event,
            app_key: outgoing.app_key,
            url: outgoing.url,
            body: outgoing.body,
            token: outgoing.token,
            status,
            error,
        };
        state.next_delivery += 1;
        state.deliveries.push(delivery.clone());
        delivery
    };
    shared.changed.notify_waiters();
    delivery
}

/// Sends several calls one after the other; returns the Connect deliveries. The first attempt of
/// each Forge event is awaited too; its retries follow in the background (see
/// [`crate::Simulator::forge_calls`]).
pub(crate) async fn deliver_all(shared: &Arc<Shared>, outgoing: Vec<Outgoing>) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(outgoing.len());
    for one in outgoing {
        match one {
            Outgoing::Connect(webhook) => out.push(deliver(shared, webhook).await),
            Outgoing::Forge(event) => {
                forge_delivery::deliver(shared, event).await;
            }
        }
    }
    out
}
