//! The Forge front door's authentication: Forge Invocation Tokens (FIT) and the opaque Forge OAuth
//! tokens.
//!
//! - [`FitVerifier`] checks `Authorization: Bearer <FIT>`: RS256 only (the algorithm is checked
//!   before any key is chosen), the key by `kid` from Forge's JWKS, `iss` =
//!   `forge/invocation-token`, `aud` = the configured app ARI (never a value from the token),
//!   `exp`/`iat` required and `nbf` honoured with a 30 s leeway on an injected clock, `jti`
//!   required. Each refusal is one [`FitError`] variant (401); a JWKS that cannot be fetched is
//!   [`FitError::JwksUnavailable`] (503).
//! - Keys come from a [`JwksSource`] (`HttpJwksSource` behind the `http` feature) through a
//!   bounded cache by kid, refreshed on an unknown kid at most once per minute per verifier.
//! - [`OpaqueToken`] holds `x-forge-oauth-system` / `x-forge-oauth-user` values: never parsed,
//!   never displayed.
//!
//! No AWS, no Lambda, no runtime: time comes from `connect_auth::Clock`.

pub mod claims;
pub mod error;
pub mod jwks;
pub mod opaque;
pub mod verify;

pub use claims::{App, Context, Environment, InstallationContext, InvocationClaims, Module};
pub use connect_auth::{Clock, ManualClock, SystemClock};
pub use error::FitError;
#[cfg(feature = "http")]
pub use jwks::HttpJwksSource;
pub use jwks::{
    FORGE_JWKS_URL, FORGE_JWKS_URL_VAR, JwksSource, JwksUnavailable, KeyCache, parse_jwks,
};
pub use opaque::OpaqueToken;
pub use verify::{
    AppId, DEFAULT_LEEWAY_SECONDS, FIT_ISSUER, FitVerifier, InvalidAppId, MAX_KID_LEN,
    MAX_TOKEN_LEN,
};
