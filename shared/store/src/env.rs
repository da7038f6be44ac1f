//! The deployed store, configured from the environment that template.yaml sets on every function.

use std::sync::Arc;

use aws_config::{BehaviorVersion, SdkConfig};

use crate::{DynamoConfig, DynamoStore, KmsCipher, KmsConfig};

/// A required variable is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct MissingVariable(pub &'static str);

fn required(name: &'static str) -> Result<String, MissingVariable> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .ok_or(MissingVariable(name))
}

/// The AWS SDK configuration from the default chain (the Lambda role, `AWS_REGION`;
/// `AWS_ENDPOINT_URL` points every service at a local server in tests). Load it once per cold start
/// and share it between clients.
pub async fn load_aws_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}

/// DynamoDB table `TABLE_NAME`, secrets sealed under KMS key `KMS_KEY_ID`.
pub fn deployed_store_from_env(sdk: &SdkConfig) -> Result<DynamoStore, MissingVariable> {
    let table_name = required("TABLE_NAME")?;
    let key_id = required("KMS_KEY_ID")?;
    let kms = KmsConfig {
        key_id,
        endpoint_url: None,
        region: None,
    };
    let cipher = Arc::new(KmsCipher::from_config(sdk, &kms));
    let table = DynamoConfig {
        table_name,
        endpoint_url: None,
        region: None,
    };
    Ok(DynamoStore::from_config(sdk, &table, cipher))
}
