//! The edit function: where edits actually happen.
//!
//! - [`worker::EditWorker`] runs queued jobs through the edit engine: as the app first, then per
//!   the tenant's restricted-page policy. Passing failures go back to the queue; a job that keeps
//!   failing is audited and dead-lettered.
//! - [`api::EditApi`] serves the app's own UI: an edit always runs **as the calling user** (the
//!   context token's `sub`), never as the app, so nobody can use the app to edit a page they may
//!   not edit themselves.

pub mod api;
pub mod worker;

use std::sync::Arc;

use connect_auth::SystemClock;
use understudy_confluence::{ClientConfig, ConfigError, ConfluenceClient};
use understudy_core::{EditEngine, EngineSettings};
use understudy_domain::{AuditLog, TokenCache};

/// Every environment variable the edit worker reads.
pub const WORKER_ENV_VARS: &[&str] = &[
    "APP_KEY",
    "APP_BASE_URL",
    "INSTALL_AUDIENCES",
    "CONNECT_KEYS_URL",
    "ALLOWED_TENANT_HOSTS",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "ATLASSIAN_OAUTH_URL",
    "CONFLUENCE_RETRY_DEADLINE_SECONDS",
    "EDIT_MAX_RECEIVES",
    "RUST_LOG",
];

/// Every environment variable the edit API reads.
pub const API_ENV_VARS: &[&str] = &[
    "APP_KEY",
    "APP_BASE_URL",
    "INSTALL_AUDIENCES",
    "CONNECT_KEYS_URL",
    "ALLOWED_TENANT_HOSTS",
    "TABLE_NAME",
    "KMS_KEY_ID",
    "ATLASSIAN_OAUTH_URL",
    "CONFLUENCE_RETRY_DEADLINE_SECONDS",
    "RUST_LOG",
];

/// The edit engine over `store`, with the Confluence client configured from the environment
/// (`ATLASSIAN_OAUTH_URL`, `CONFLUENCE_RETRY_DEADLINE_SECONDS`).
pub fn engine_from_env<S>(store: Arc<S>, app_key: &str) -> Result<EditEngine, ConfigError>
where
    S: TokenCache + AuditLog + 'static,
{
    engine(ClientConfig::from_env()?, store, app_key)
}

/// The edit engine over `store` with this client configuration.
pub fn engine<S>(
    config: ClientConfig,
    store: Arc<S>,
    app_key: &str,
) -> Result<EditEngine, ConfigError>
where
    S: TokenCache + AuditLog + 'static,
{
    let client = ConfluenceClient::new(config, store.clone())?;
    let settings = EngineSettings {
        version_message: format!("Edited by {app_key} (Confluence app)"),
        ..EngineSettings::default()
    };
    Ok(EditEngine::new(
        Arc::new(client),
        store,
        Arc::new(SystemClock),
        settings,
    ))
}
