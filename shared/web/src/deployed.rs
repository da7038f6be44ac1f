//! What every deployed function reads, without the Lambda runtime or the AWS SDK: the function
//! crates' settings types build on it whether or not their `lambda` feature is on, and the
//! deployment test asks it which variables each function reads ([`variables`]).

use crate::config::AppConfig;
use crate::env::{Env, FromEnv, Variables};

/// The log filter every function reads (`RUST_LOG`'s syntax; on AWS the `LogLevel` parameter).
const LOG_VARIABLE: &str = "RUST_LOG";

/// What a function reads at its start (`understudy_web::lambda::start`): the log filter, then its
/// own settings.
pub(crate) fn read_function<C: FromEnv>(env: &Env<'_>) -> (Option<String>, Option<C>) {
    let log = env.get(LOG_VARIABLE);
    (log, C::read(env))
}

/// Every variable a function whose settings are `C` reads at its start, and those it cannot
/// start without.
pub fn variables<C: FromEnv>() -> Variables {
    crate::env::variables(|env| {
        let _ = read_function::<C>(env);
    })
}

/// The deployed store: the DynamoDB table `TABLE_NAME`, its secrets sealed under the KMS key
/// `KMS_KEY_ID` (both set by template.yaml on every function).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// `TABLE_NAME`.
    pub table_name: String,
    /// `KMS_KEY_ID`: the key's id or ARN.
    pub kms_key_id: String,
}

impl FromEnv for StoreSettings {
    fn read(env: &Env<'_>) -> Option<Self> {
        let table_name = env.required("TABLE_NAME", |v| Ok(v.to_owned()));
        let kms_key_id = env.required("KMS_KEY_ID", |v| Ok(v.to_owned()));
        Some(Self {
            table_name: table_name?,
            kms_key_id: kms_key_id?,
        })
    }
}

/// What every deployed function reads: the shared settings and the store's.
#[derive(Debug, Clone)]
pub struct DeployedConfig {
    /// `APP_KEY`, `APP_BASE_URL`, … ([`AppConfig`]).
    pub app: AppConfig,
    /// `TABLE_NAME`, `KMS_KEY_ID`.
    pub store: StoreSettings,
}

impl FromEnv for DeployedConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let app = AppConfig::read(env);
        let store = StoreSettings::read(env);
        Some(Self {
            app: app?,
            store: store?,
        })
    }
}
