//! Confluence Cloud over HTTP for understudy: the REST client and user impersonation tokens. It
//! implements the core's [`understudy_core::Confluence`] port, which is how the edit engine talks to
//! Confluence.
//!
//! - [`ConfluenceClient`]: one connection pool per warm instance; [`ConfluenceClient::as_app`] and
//!   [`ConfluenceClient::as_user`] give the same typed operations ([`Session`]): read and update a
//!   page, read and change its restrictions, ask who the current user is. Typed outcomes
//!   ([`ConfluenceError`]), retries with told waits or jittered backoff inside a deadline
//!   ([`RetryPolicy`]).
//! - [`ImpersonationTokens`]: the JWT bearer grant (docs/protocol.md §6), cached
//!   in memory and in the tenant store, refreshed ahead of expiry, one exchange per (tenant, user,
//!   scopes) at a time.
//!
//! - [`OfflineTokens`]: Forge's offline user impersonation (docs/protocol.md §17), one exchange per
//!   (installation, user) at a time, kept until its `ttl`.
//!
//! Only the tenant's base URL (Connect) or the installation's API base URL (Forge), the
//! authorization server and the Forge GraphQL gateway are ever called. Tokens and secrets stay
//! in [`connect_auth::SecretString`] and never reach a log or an error message.

mod client;
mod config;
mod error;
mod offline;
mod port;
mod report;
mod retry;
mod single_flight;
mod tokens;

pub use client::{ConfluenceClient, CurrentUser, SHARED_HTTP_CLIENTS, Session, http_client};
pub use config::{
    ClientConfig, ConfigError, ENV_ALLOW_HTTP_LOOPBACK, ENV_FORGE_GRAPHQL_URL, ENV_OAUTH_URL,
    ENV_REPORT_ACCOUNTS_URL, ENV_RETRY_DEADLINE_SECONDS, OAUTH_SERVER_FEDRAMP,
    OAUTH_SERVER_FEDRAMP_STAGING, OAUTH_SERVER_PRODUCTION, OAUTH_SERVER_STAGING,
    REPORT_ACCOUNTS_URL, Scopes, authorization_server_for,
};
pub use error::{ConfluenceError, TokenError};
pub use offline::OfflineTokens;
pub use report::connect_report_token;
pub use retry::{Pause, RetryPolicy, TokioPause, VirtualPause, told_wait, within_job_deadline};
pub use tokens::ImpersonationTokens;
