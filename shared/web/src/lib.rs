//! HTTP plumbing shared by every function, so that each concern has one place:
//!
//! - [`request::ApiRequest`]: a request as it arrived (raw path and query, for the qsh);
//! - [`response::ApiResponse`]: what every handler answers ([`response::empty`], [`response::json`]);
//! - [`error::ApiError`]: the one mapping from failures to HTTP answers;
//! - [`routes`]: the one route table (every route, and the function that serves it);
//! - [`json::parse_json`]: the one way a JSON body is read, with errors in fixed words;
//! - [`telemetry`]: the logs (levels capped for other crates, one line per record);
//! - [`config::AppConfig`]: the settings every function shares, read once ([`env`]: how settings
//!   are read, and the list of the variables each function reads, from the same code);
//! - [`auth::Authenticator`]: the one way a route learns who calls ([`auth::Caller`]);
//! - [`forge::ForgeFrontDoor`]: the Forge front door's caller (a verified invocation token, its
//!   installation recorded);
//! - [`user::api_user`]: the person calling the app's own API, through either door;
//! - [`tenants::StoreTenants`]: connect-auth's tenant lookup over the tenant store;
//! - [`tenant_cache::TenantCache`]: verified tenants and their settings, kept a short while per
//!   process;
//! - [`time`]: time limits that cost nothing when the work is ready at once;
//! - [`lambda`] (feature `lambda`): the kit of the Lambda entry points (settings read once, logs,
//!   the deployed store, an HTTP function served in one call).

pub mod auth;
pub mod config;
pub mod deployed;
pub mod env;
pub mod error;
pub mod forge;
pub mod json;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod request;
pub mod response;
pub mod routes;
pub mod telemetry;
pub mod tenant_cache;
pub mod tenants;
pub mod time;
pub mod user;

pub use auth::{Accept, Authenticator, Caller, ConnectAuthenticator, Credential};
pub use config::{AppConfig, ConfigError, ForgeSettings};
pub use env::FromEnv;
pub use error::ApiError;
pub use forge::{ForgeCaller, ForgeFrontDoor, Invocation};
pub use json::parse_json;
pub use request::ApiRequest;
pub use response::ApiResponse;
pub use tenant_cache::{CachedSettings, TenantCache};
pub use tenants::{StoreTenants, TenantAuth};
pub use understudy_core::TenantHosts;
pub use user::{UserSite, api_user};
