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
use understudy_domain::{AccountRegistry, AuditLog, TokenCache};
use understudy_web::deployed::DeployedConfig;
use understudy_web::env::{Env, FromEnv};

/// The edit worker's settings on Lambda, read once at its cold start
/// ([`understudy_web::lambda::start`]). What it reads is what `tests/deployment` checks
/// template.yaml against.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The shared settings and the store's.
    pub deployed: DeployedConfig,
    /// The Confluence client's (`ATLASSIAN_OAUTH_URL`, `CONFLUENCE_RETRY_DEADLINE_SECONDS`).
    pub client: ClientConfig,
    /// `EDIT_MAX_RECEIVES` (default [`worker::DEFAULT_MAX_RECEIVES`]): failed attempts before a
    /// job is audited as failed and dead-lettered.
    pub max_receives: u32,
    /// `EDIT_TENANT_JOBS_PER_MINUTE` (default [`worker::DEFAULT_TENANT_JOBS_PER_MINUTE`]; 0: no
    /// limit): jobs one tenant may start a minute across all workers.
    pub tenant_jobs_per_minute: u32,
    /// `EDIT_QUEUE_URL`: the queue whose messages' next delivery the worker sets (a Confluence
    /// 429's wait, a tenant over its share).
    pub edit_queue_url: String,
    /// `EDIT_DEAD_LETTER_QUEUE_URL`: where the worker moves a job it gave up on (after auditing
    /// it), at once rather than after SQS's backstop of receives.
    pub dead_letter_queue_url: String,
}

impl FromEnv for WorkerConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let deployed = DeployedConfig::read(env);
        let client = env.check(ClientConfig::from_lookup(env.lookup()));
        let max_receives = env.or("EDIT_MAX_RECEIVES", worker::DEFAULT_MAX_RECEIVES, |v| {
            v.parse().map_err(|_| "must be a whole number".into())
        });
        let tenant_jobs_per_minute = env.or(
            "EDIT_TENANT_JOBS_PER_MINUTE",
            worker::DEFAULT_TENANT_JOBS_PER_MINUTE,
            |v| v.parse().map_err(|_| "must be a whole number".into()),
        );
        let edit_queue_url = env.required("EDIT_QUEUE_URL", |v| Ok(v.to_owned()));
        let dead_letter_queue_url =
            env.required("EDIT_DEAD_LETTER_QUEUE_URL", |v| Ok(v.to_owned()));
        Some(Self {
            deployed: deployed?,
            client: client?,
            max_receives,
            tenant_jobs_per_minute,
            edit_queue_url: edit_queue_url?,
            dead_letter_queue_url: dead_letter_queue_url?,
        })
    }
}

/// The edit API's settings on Lambda, read once at its cold start
/// ([`understudy_web::lambda::start`]).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The shared settings and the store's.
    pub deployed: DeployedConfig,
    /// The Confluence client's (`ATLASSIAN_OAUTH_URL`, `CONFLUENCE_RETRY_DEADLINE_SECONDS`).
    pub client: ClientConfig,
}

impl FromEnv for ApiConfig {
    fn read(env: &Env<'_>) -> Option<Self> {
        let deployed = DeployedConfig::read(env);
        let client = env.check(ClientConfig::from_lookup(env.lookup()));
        Some(Self {
            deployed: deployed?,
            client: client?,
        })
    }
}

/// The edit engine over `store` with this client configuration.
pub fn engine<S>(
    config: ClientConfig,
    store: Arc<S>,
    app_key: &str,
) -> Result<EditEngine, ConfigError>
where
    S: TokenCache + AuditLog + AccountRegistry + 'static,
{
    let client = ConfluenceClient::new(config, store.clone())?;
    let settings = EngineSettings {
        version_message: format!("Edited by {app_key} (Confluence app)"),
        ..EngineSettings::default()
    };
    Ok(EditEngine::new(
        Arc::new(client),
        store.clone(),
        Arc::new(SystemClock),
        settings,
    )
    .noting_accounts(store))
}
