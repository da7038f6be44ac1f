//! The AWS SDK configuration every deployed function loads once. Which table and key the store
//! uses is read with the functions' own settings (`understudy_web::deployed::StoreSettings`).

use aws_config::{BehaviorVersion, SdkConfig};

/// The AWS SDK configuration from the default chain (the Lambda role, `AWS_REGION`;
/// `AWS_ENDPOINT_URL` points every service at a local server in tests). Load it once per cold start
/// and share it between clients.
pub async fn load_aws_config() -> SdkConfig {
    aws_config::load_defaults(BehaviorVersion::latest()).await
}
