//! Installs on the AWS path when DynamoDB and KMS misbehave: the lifecycle function over its
//! DynamoDB store (secrets sealed under KMS data keys), with the store's clients pointed at a fault
//! proxy in front of the local AWS-compatible server (moto, started by `bash tests/run.sh`). An
//! install whose write fails must answer 503 (Confluence shows the admin a failure, and the admin
//! or Confluence tries again) and leave nothing the next try cannot complete. What is stored is
//! read at moto directly, past the proxy.
//!
//! The SDK retries throttling and 5xx itself (4 attempts for DynamoDB and KMS in this app): a
//! fault meant to reach the function is armed for every attempt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use connect_auth::{ExposeSecret, FixedClock, InMemoryKeys};
use serde_json::json;
use test_support::aws::aws_endpoint;
use test_support::fault_proxy::{AwsError, Fault, FaultProxy, Match};
use test_support::install::{install_keys, install_token};
use test_support::lambda::api_gateway_request;
use test_support::{NOW, app_env, install_payload};
use understudy_domain::{ClientKey, SettingsStore, TenantSettings, TenantState, TenantStore};
use understudy_lifecycle::Lifecycle;
use understudy_store::DynamoStore;
use understudy_store::testing::local_dynamo_store;
use understudy_web::lambda::to_api_request;
use understudy_web::{ApiResponse, AppConfig};

const CLIENT: &str = "3f1e2d4c-5b6a-4798-8a9b-0c1d2e3f4a5b";

/// DynamoDB and KMS attempts per call (the store's standard retry).
const ATTEMPTS: usize = 4;

/// The tenant item's PutItem, the settings item's UpdateItem, the report schedule's PutItem.
fn tenant_put() -> Match {
    Match::dynamodb("PutItem").body_contains(r#"{"S":"TENANT"}"#)
}

fn settings_update() -> Match {
    Match::dynamodb("UpdateItem").body_contains(r#"{"S":"SETTINGS"}"#)
}

fn schedule_put() -> Match {
    Match::dynamodb("PutItem").body_contains("#REPORT#")
}

/// The lifecycle function at the proxy, a store of the same table at moto to look with, and moto's
/// raw client.
struct World {
    proxy: FaultProxy,
    app: Lifecycle<DynamoStore, InMemoryKeys, FixedClock>,
    observer: DynamoStore,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
}

impl World {
    async fn new() -> Self {
        let moto = aws_endpoint();
        let proxy = FaultProxy::start(&moto).await;
        let (observer, dynamo, key, table) = local_dynamo_store(&moto, None, None).await;
        let (store, _, _, _) =
            local_dynamo_store(proxy.url(), Some(key), Some(table.clone())).await;
        let config = AppConfig::from_lookup(app_env).unwrap();
        let app = Lifecycle::new(config, Arc::new(store), install_keys(), FixedClock(NOW)).unwrap();
        Self {
            proxy,
            app,
            observer,
            dynamo,
            table,
        }
    }

    /// A signed lifecycle callback (`installed`, `uninstalled`) carrying `secret`.
    async fn signed(&self, event: &str, secret: &str) -> ApiResponse {
        let path = format!("/{event}");
        let mut payload = install_payload(CLIENT, secret);
        payload["eventType"] = json!(event);
        let token = install_token(CLIENT, &path, NOW);
        self.app
            .handle(to_api_request(api_gateway_request(
                "POST",
                &path,
                "",
                Some(&format!("JWT {token}")),
                &payload.to_string(),
            )))
            .await
    }

    async fn install(&self, secret: &str) -> ApiResponse {
        self.signed("installed", secret).await
    }

    /// The stored tenant's state and secret, opened at moto.
    async fn stored(&self) -> Option<(TenantState, String, i64)> {
        self.observer
            .get_tenant(&client(), NOW)
            .await
            .unwrap()
            .map(|t| {
                (
                    t.state,
                    t.shared_secret.expose_secret().to_owned(),
                    t.created_at,
                )
            })
    }

    /// Whether the tenant is entered in the report schedule.
    async fn scheduled(&self) -> bool {
        let items = self
            .dynamo
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .items
            .unwrap_or_default();
        items.iter().any(|item| {
            matches!(item.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with("#REPORT#"))
                && item.get("sk") == Some(&AttributeValue::S(CLIENT.into()))
        })
    }

    /// The settings item's raw attributes.
    async fn settings_item(&self) -> std::collections::HashMap<String, AttributeValue> {
        self.dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(CLIENT.into()))
            .key("sk", AttributeValue::S("SETTINGS".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .expect("the settings item")
    }

    fn clear(&self) {
        assert_eq!(self.proxy.unfired(), 0, "every armed fault was used");
        self.proxy.clear();
    }
}

fn client() -> ClientKey {
    ClientKey::parse(CLIENT).unwrap()
}

fn text(r: &ApiResponse) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

#[tokio::test]
async fn an_install_whose_tenant_write_is_throttled_is_a_503_that_stores_nothing() {
    let w = World::new().await;
    w.proxy.arm(
        tenant_put(),
        Fault::Error(AwsError::dynamodb_throttling()),
        ATTEMPTS,
    );
    let r = w.install("secret-1").await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(w.proxy.faulted(&tenant_put()), ATTEMPTS);
    assert_eq!(w.stored().await, None, "no tenant");
    assert!(!w.scheduled().await, "not scheduled");
    w.clear();
    let r = w.install("secret-1").await;
    assert_eq!(r.status(), 204, "the next try: {}", text(&r));
    assert_eq!(
        w.stored().await,
        Some((TenantState::Installed, "secret-1".into(), NOW))
    );
    assert!(w.scheduled().await);
}

#[tokio::test]
async fn an_install_whose_data_key_kms_throttles_is_a_503_that_stores_nothing() {
    let w = World::new().await;
    let data_key = Match::kms("GenerateDataKey");
    w.proxy.arm(
        data_key.clone(),
        Fault::Error(AwsError::kms_throttling()),
        ATTEMPTS,
    );
    let r = w.install("secret-1").await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(w.proxy.faulted(&data_key), ATTEMPTS);
    assert_eq!(
        w.proxy.count(&Match::dynamodb("PutItem")),
        0,
        "nothing written"
    );
    assert_eq!(w.stored().await, None);
    w.clear();
    assert_eq!(w.install("secret-1").await.status(), 204);
    assert_eq!(
        w.stored().await,
        Some((TenantState::Installed, "secret-1".into(), NOW))
    );
    assert!(w.scheduled().await);
}

#[tokio::test]
async fn a_reinstall_whose_write_fails_keeps_the_old_tenant_whole_and_the_next_try_rotates_it() {
    let w = World::new().await;
    assert_eq!(w.install("secret-1").await.status(), 204);
    // The re-install's first put (create if absent) is refused by its condition; the replace
    // after it fails on every attempt, with a 500 and a dropped connection.
    w.proxy.arm_after(
        tenant_put(),
        1,
        Fault::Error(AwsError::dynamodb_internal_server_error()),
        ATTEMPTS - 1,
    );
    w.proxy.arm(tenant_put(), Fault::Drop, 1);
    let r = w.install("secret-2").await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert_eq!(
        w.stored().await,
        Some((TenantState::Installed, "secret-1".into(), NOW)),
        "the old tenant, whole"
    );
    w.clear();
    assert_eq!(w.install("secret-2").await.status(), 204);
    assert_eq!(
        w.stored().await,
        Some((TenantState::Installed, "secret-2".into(), NOW))
    );
}

#[tokio::test]
async fn an_install_whose_schedule_write_fails_is_a_503_and_the_next_try_completes_it() {
    let w = World::new().await;
    w.proxy.arm(
        schedule_put(),
        Fault::Error(AwsError::dynamodb_internal_server_error()),
        ATTEMPTS,
    );
    let r = w.install("secret-1").await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    assert!(!w.scheduled().await);
    // The tenant item is written before the schedule entry; the next try replaces it and
    // enters it, keeping its first creation time.
    w.clear();
    assert_eq!(w.install("secret-1").await.status(), 204);
    assert_eq!(
        w.stored().await,
        Some((TenantState::Installed, "secret-1".into(), NOW))
    );
    assert!(w.scheduled().await);
}

#[tokio::test]
async fn a_reinstall_after_uninstall_whose_settings_write_fails_keeps_the_settings_on_the_next_try()
{
    let w = World::new().await;
    assert_eq!(w.install("secret-1").await.status(), 204);
    let document = json!({"rules": []});
    w.observer
        .put_settings(
            &client(),
            &TenantSettings {
                document: document.clone(),
            },
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(w.signed("uninstalled", "secret-1").await.status(), 204);
    assert!(
        w.settings_item().await.contains_key("expires_at"),
        "an uninstall sets the settings' retention"
    );
    // The re-install replaces the tenant, then cannot take the retention off the settings.
    w.proxy.arm(
        settings_update(),
        Fault::Error(AwsError::dynamodb_throttling()),
        ATTEMPTS,
    );
    let r = w.install("secret-1").await;
    assert_eq!(r.status(), 503, "{}", text(&r));
    w.clear();
    assert_eq!(w.install("secret-1").await.status(), 204);
    assert_eq!(w.stored().await.unwrap().0, TenantState::Installed);
    assert!(
        !w.settings_item().await.contains_key("expires_at"),
        "the settings of an installed tenant do not expire"
    );
    assert_eq!(
        w.observer
            .get_settings(&client(), NOW)
            .await
            .unwrap()
            .unwrap()
            .document,
        document
    );
}
