//! Confluence Cloud for understudy: the REST client, user impersonation tokens, and the edit engine.
//!
//! - [`ConfluenceClient`]: one connection pool per warm instance; [`ConfluenceClient::as_app`] and
//!   [`ConfluenceClient::as_user`] give the same typed operations ([`Session`]): read and update a
//!   page, read and change its restrictions, ask who the current user is. Typed outcomes
//!   ([`ConfluenceError`]), retries with told waits or jittered backoff inside a deadline
//!   ([`RetryPolicy`]).
//! - [`ImpersonationTokens`]: the JWT bearer grant (connect-protocol.md §6), cached in memory and in
//!   the tenant store, refreshed ahead of expiry, one exchange per (tenant, user, scopes) at a time.
//! - [`Edit`]: operations on a page's title and storage body, pure and idempotent.
//! - [`EditEngine`]: runs an edit as the app, then per the restricted-page policy; audits each run.
//! - [`user_may_view_page`]: the one rule for who may see a page's audit records.
//!
//! Only the tenant's base URL and the authorization server are ever called. Tokens and secrets stay
//! in [`connect_auth::SecretString`] and never reach a log or an error message.

mod access;
mod client;
mod config;
mod edit;
mod engine;
mod error;
mod retry;
mod tokens;

pub use access::user_may_view_page;
pub use client::{
    ConfluenceClient, CurrentUser, OperationRestriction, Page, PageUpdate, RestrictionOperation,
    Restrictions, Session,
};
pub use config::{
    ClientConfig, ConfigError, ENV_ALLOW_HTTP_LOOPBACK, ENV_OAUTH_URL, ENV_RETRY_DEADLINE_SECONDS,
    OAUTH_SERVER_FEDRAMP, OAUTH_SERVER_FEDRAMP_STAGING, OAUTH_SERVER_PRODUCTION,
    OAUTH_SERVER_STAGING, Scopes, authorization_server_for,
};
pub use edit::{
    Applied, Edit, EditOp, EditParseError, EditTooLarge, MAX_BODY_BYTES, MAX_OPERATIONS,
    MAX_TITLE_CHARS, Replace, json_len,
};
pub use engine::{
    BlockedCause, EditEngine, EditJob, EditMode, EditReport, EditResult, EngineSettings,
    RestrictedPagePolicy,
};
pub use error::{ConfluenceError, TokenError};
pub use retry::{Pause, RetryPolicy, TokioPause, VirtualPause, told_wait};
pub use tokens::ImpersonationTokens;
