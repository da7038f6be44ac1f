//! A DynamoDB store on the local DynamoDB/KMS-compatible server the test command starts (moto),
//! for tests in this crate and others (feature `test-util`). Never for production: the
//! credentials are static test ones and the region is fixed.
#![allow(
    clippy::panic,
    reason = "a test helper: a test whose local server does not answer cannot run, and says why"
)]

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

use crate::{DynamoConfig, DynamoStore, KmsCipher, KmsConfig};

/// SDK config for `endpoint` only: static credentials, us-east-1, so that nothing ever reaches (or
/// resolves) a real AWS host.
pub async fn local_sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A new KMS key on the local server `sdk` points at; its id.
///
/// # Panics
/// When the server does not answer.
pub async fn local_kms_key(sdk: &SdkConfig) -> String {
    aws_sdk_kms::Client::new(sdk)
        .create_key()
        .description("understudy test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("KMS CreateKey: {e}"))
        .key_metadata
        .map(|m| m.key_id)
        .unwrap_or_else(|| panic!("KMS CreateKey: no key"))
}

/// A store at `endpoint` with a table of its own, created now (`table`, or a random name so that
/// tests run in parallel without seeing each other), sealing under KMS key `key_id` (or a new
/// one). Returns the store, a raw client of the same server and the table's name, for tests
/// that read what is really stored.
///
/// # Panics
/// When the server does not answer: a test without its server cannot run.
pub async fn local_dynamo_store(
    endpoint: &str,
    key_id: Option<String>,
    table: Option<String>,
) -> (DynamoStore, aws_sdk_dynamodb::Client, String, String) {
    let sdk = local_sdk_config(endpoint).await;
    let key_id = match key_id {
        Some(key) => key,
        None => local_kms_key(&sdk).await,
    };
    let cipher = KmsCipher::from_config(
        &sdk,
        &KmsConfig {
            key_id: key_id.clone(),
            endpoint_url: Some(endpoint.to_owned()),
            region: None,
        },
    );
    let table =
        table.unwrap_or_else(|| format!("understudy-test-{}", uuid::Uuid::new_v4().simple()));
    let config = DynamoConfig {
        table_name: table.clone(),
        endpoint_url: Some(endpoint.to_owned()),
        region: Some("us-east-1".into()),
    };
    let store = DynamoStore::from_config(&sdk, &config, Arc::new(cipher));
    store
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {table} at {endpoint}: {e}"));
    (store, aws_sdk_dynamodb::Client::new(&sdk), key_id, table)
}
