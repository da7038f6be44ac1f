//! The deployed store, configured from the environment that template.yaml sets on every function.

use std::sync::Arc;

use aws_config::BehaviorVersion;

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

/// DynamoDB table `TABLE_NAME`, secrets sealed under KMS key `KMS_KEY_ID`. Region and credentials
/// come from the SDK's default chain (the Lambda role); `AWS_ENDPOINT_URL`, read by the SDK itself,
/// points both services at a local server in tests.
pub async fn deployed_store_from_env() -> Result<DynamoStore, MissingVariable> {
    let table_name = required("TABLE_NAME")?;
    let key_id = required("KMS_KEY_ID")?;
    let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let kms = KmsConfig {
        key_id,
        endpoint_url: None,
        region: None,
    };
    let cipher = Arc::new(KmsCipher::from_config(&sdk, &kms));
    let table = DynamoConfig {
        table_name,
        endpoint_url: None,
        region: None,
    };
    Ok(DynamoStore::from_config(&sdk, &table, cipher))
}
