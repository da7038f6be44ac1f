//! HTTP plumbing shared by every function, so that each concern has one place:
//!
//! - [`request::ApiRequest`]: a request as it arrived (raw path and query, for the qsh);
//! - [`error::ApiError`]: the one mapping from failures to HTTP answers;
//! - [`json::parse_json`]: the one way a JSON body is read, with errors in fixed words;
//! - [`telemetry`]: the logs (levels capped for other crates, one line per record);
//! - [`config::AppConfig`]: the environment, read once;
//! - [`tenants::StoreTenants`]: connect-auth's tenant lookup over the tenant store;
//! - [`lambda`] (feature `lambda`): conversions for the Lambda entry points.

pub mod config;
pub mod error;
pub mod json;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod request;
pub mod telemetry;
pub mod tenants;

pub use config::{AppConfig, ConfigError};
pub use error::ApiError;
pub use json::parse_json;
pub use request::{ApiRequest, ApiResponse};
pub use tenants::{StoreTenants, TenantAuth};
pub use understudy_core::TenantHosts;
