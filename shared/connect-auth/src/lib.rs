//! Atlassian Connect authentication, as Confluence Cloud does it, and nothing else.
//!
//! - [`qsh`]: the canonical request and its query-string hash, byte for byte as Atlassian's Java
//!   canonicaliser computes it.
//! - [`verify`]: incoming HS256 tokens (webhooks, `enabled`/`disabled`, context JWTs).
//! - [`install`] and [`keys`]: signed installs (RS256) and the keys that sign them.
//! - [`mint`]: tokens for requests to Confluence and impersonation assertions.
//! - [`dangerous`]: reading a token without verifying it, fenced off.
//!
//! No AWS, no Lambda, no web framework; the only I/O is behind [`keys::KeyProvider`] and
//! [`verify::TenantSecrets`]. Protocol references: docs/protocol.md §2–§6.

pub mod claims;
pub mod clock;
pub mod dangerous;
pub mod error;
mod hs256;
pub mod install;
pub mod keys;
pub mod mint;
pub mod qsh;
pub mod token;
pub mod verify;

pub use claims::{Audience, Claims};
pub use clock::{Clock, FixedClock, ManualClock, SystemClock};
pub use error::{AuthError, UNVERIFIABLE_MESSAGE};
pub use install::InstallVerifier;
#[cfg(feature = "http-keys")]
pub use keys::HttpKeyProvider;
pub use keys::{CachingKeyProvider, InMemoryKeys, KeyError, KeyProvider, Kid};
pub use mint::{
    APP_TOKEN_TTL_SECONDS, ASSERTION_TTL_SECONDS, ATLASSIAN_OAUTH_AUDIENCE, ImpersonationRequest,
    mint_app_token, mint_impersonation_assertion, qsh_for_url, sign_hs256,
};
pub use qsh::{CONTEXT_QSH, RequestParts, canonical_request, query_string_hash};
pub use secrecy::{ExposeSecret, SecretString};
pub use token::{MAX_TOKEN_LEN, TokenSource, extract_token, extract_token_from};
pub use verify::{
    CONTEXT_TOKEN_MAX_LIFETIME_SECONDS, DEFAULT_LEEWAY_SECONDS, Hs256Verifier, QshMode,
    TenantSecrets, Verified,
};
