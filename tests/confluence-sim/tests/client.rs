//! The project's own Confluence client (understudy-confluence) against the simulator: what it sends
//! is what the simulated Confluence accepts, and what the simulator answers is what it understands.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use confluence_sim::{Endpoint, Fault, Installation, Simulator};
use serde_json::json;
use support::{ALL_SCOPES, installed};
use understudy_confluence::{
    ClientConfig, ConfluenceClient, ConfluenceError, TokenError, VirtualPause,
};
use understudy_core::{PageUpdate, RestrictionOperation};
use understudy_domain::{AccountId, MemoryStore, PageId, Tenant};

fn tenant(sim: &Simulator, installation: &Installation) -> Tenant {
    let mut payload = json!({
        "key": installation.app_key,
        "clientKey": installation.client_key,
        "sharedSecret": installation.shared_secret,
        "baseUrl": sim.site_base_url(),
        "productType": "confluence",
    });
    if let Some(id) = &installation.oauth_client_id {
        payload["oauthClientId"] = json!(id);
    }
    Tenant::from_install_payload(payload, sim.now()).unwrap()
}

fn client(sim: &Simulator) -> (ConfluenceClient, Arc<VirtualPause>) {
    let mut config = ClientConfig::from_lookup(|name| match name {
        "ATLASSIAN_OAUTH_URL" => Some(sim.oauth_url()),
        "CONFLUENCE_ALLOW_HTTP_LOOPBACK" => Some("true".to_owned()),
        _ => None,
    })
    .unwrap();
    config.retry.total_deadline = Duration::from_secs(120);
    let pause = Arc::new(VirtualPause::new());
    let client = ConfluenceClient::with_time(
        config,
        Arc::new(MemoryStore::new()),
        Arc::new(connect_auth::SystemClock),
        pause.clone(),
    )
    .unwrap();
    (client, pause)
}

#[tokio::test]
async fn the_client_reads_and_updates_pages_as_the_app_and_meets_confluences_answers() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let tenant = tenant(&sim, &installation);
    let (client, _) = client(&sim);
    let app = client.as_app(&tenant);

    let id = PageId::parse(demo.open_page.clone()).unwrap();
    let page = app.get_page(&id).await.unwrap();
    assert_eq!(page.version, 1);
    let version = app
        .update_page(&PageUpdate {
            id: &id,
            title: &page.title,
            body: "<p>app</p>",
            version: 2,
            message: "understudy",
        })
        .await
        .unwrap();
    assert_eq!(version, 2);
    let stale = app
        .update_page(&PageUpdate {
            id: &id,
            title: &page.title,
            body: "<p>again</p>",
            version: 2,
            message: "x",
        })
        .await;
    assert_eq!(stale, Err(ConfluenceError::Conflict));

    let edit_restricted = PageId::parse(demo.edit_restricted_page.clone()).unwrap();
    let page = app.get_page(&edit_restricted).await.unwrap();
    let refused = app
        .update_page(&PageUpdate {
            id: &edit_restricted,
            title: &page.title,
            body: "x",
            version: 2,
            message: "x",
        })
        .await;
    assert_eq!(refused, Err(ConfluenceError::Forbidden));
    let hidden = PageId::parse(demo.view_restricted_page.clone()).unwrap();
    assert_eq!(app.get_page(&hidden).await, Err(ConfluenceError::NotFound));

    let me = client.app_account_id(&tenant).await.unwrap();
    assert_eq!(me.as_str(), installation.app_account_id);
    let restrictions = app.get_restrictions(&edit_restricted).await.unwrap();
    assert!(
        restrictions
            .update
            .lists_user(&AccountId::parse(demo.alice.clone()).unwrap())
    );
    assert!(!restrictions.read.exists());
}

#[tokio::test]
async fn the_client_acts_as_a_user_grants_the_app_access_and_retries_through_faults() {
    let (sim, demo, _app, installation) = installed(ALL_SCOPES).await;
    let tenant = tenant(&sim, &installation);
    let (client, pause) = client(&sim);
    let alice = AccountId::parse(demo.alice.clone()).unwrap();
    let me = AccountId::parse(installation.app_account_id.clone()).unwrap();
    let page_id = PageId::parse(demo.edit_restricted_page.clone()).unwrap();

    sim.fail_next(
        Endpoint::OAuthToken,
        Fault::TooManyRequests {
            retry_after: Some(3),
        },
        1,
    );
    sim.fail_next(
        Endpoint::AddRestrictionUser,
        Fault::TooManyRequests { retry_after: None },
        1,
    );
    client
        .as_user(&tenant, &alice)
        .add_restriction_user(&page_id, RestrictionOperation::Update, &me)
        .await
        .unwrap();
    assert_eq!(pause.waits().first(), Some(&Duration::from_secs(3)));
    assert_eq!(pause.waits().len(), 2);
    assert!(
        sim.page(&demo.edit_restricted_page)
            .unwrap()
            .restrictions
            .update
            .users
            .contains(&installation.app_account_id)
    );

    // Now the app may edit it as itself.
    let app = client.as_app(&tenant);
    let page = app.get_page(&page_id).await.unwrap();
    app.update_page(&PageUpdate {
        id: &page_id,
        title: &page.title,
        body: "<p>granted</p>",
        version: page.version + 1,
        message: "m",
    })
    .await
    .unwrap();

    // A user token Confluence refuses is exchanged again once.
    sim.fail_next(Endpoint::GetPage, Fault::ExpiredToken, 1);
    client
        .as_user(&tenant, &alice)
        .get_page(&page_id)
        .await
        .unwrap();
    assert_eq!(sim.count(&Endpoint::OAuthToken), 3);

    sim.reject_grants_for(&demo.bob);
    let bob = AccountId::parse(demo.bob.clone()).unwrap();
    let refused = client.as_user(&tenant, &bob).get_page(&page_id).await;
    assert_eq!(
        refused,
        Err(ConfluenceError::Token(TokenError::InvalidGrant))
    );

    // Removing the grant again.
    client
        .as_user(&tenant, &alice)
        .remove_restriction_user(&page_id, RestrictionOperation::Update, &me)
        .await
        .unwrap();
    assert!(
        !sim.page(&demo.edit_restricted_page)
            .unwrap()
            .restrictions
            .update
            .users
            .contains(&installation.app_account_id)
    );
}
