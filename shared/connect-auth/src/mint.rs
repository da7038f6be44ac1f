//! Minting tokens: the app user's token for requests to Confluence (docs/protocol.md §5) and the assertion of the
//! user-impersonation grant (docs/protocol.md §6).

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use crate::error::AuthError;
use crate::qsh::RequestParts;

/// Lifetime of the app user's tokens, as Atlassian's frameworks mint them.
pub const APP_TOKEN_TTL_SECONDS: i64 = 180;
/// An impersonation assertion must not live longer than 60 s (docs/protocol.md §6).
pub const ASSERTION_TTL_SECONDS: i64 = 60;
/// The `aud` of impersonation assertions for production sites.
pub const ATLASSIAN_OAUTH_AUDIENCE: &str =
    "https://oauth-2-authorization-server.services.atlassian.com";

/// Signs any claims with HS256 and the given shared secret.
pub fn sign_hs256<T: Serialize>(claims: &T, secret: &SecretString) -> Result<String, AuthError> {
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes())
        .map_err(|_| AuthError::Signing("unusable shared secret"))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map_err(|_| AuthError::Signing("HS256 signing failed"))
}

/// The request a token is minted for, relative to the tenant's base URL (`https://x.atlassian.net/wiki`).
///
/// The qsh is computed from `url` exactly as the HTTP client will send it (its parsed path and query).
pub fn qsh_for_url(method: &str, url: &Url, tenant_base_url: &Url) -> String {
    RequestParts::new(method, url.path(), url.query().unwrap_or(""))
        .with_base_path(tenant_base_url.path())
        .qsh()
}

#[derive(Serialize)]
struct AppClaims<'a> {
    iss: &'a str,
    iat: i64,
    exp: i64,
    qsh: String,
    aud: [&'a str; 1],
}

/// The app user's token for one request to a tenant: `iss` = app key, `aud` = [clientKey],
/// `exp` = `iat` + 180, `qsh` of `method url` relative to the tenant base URL.
pub fn mint_app_token(
    app_key: &str,
    client_key: &str,
    secret: &SecretString,
    method: &str,
    url: &Url,
    tenant_base_url: &Url,
    now: i64,
) -> Result<String, AuthError> {
    let claims = AppClaims {
        iss: app_key,
        iat: now,
        exp: now.saturating_add(APP_TOKEN_TTL_SECONDS),
        qsh: qsh_for_url(method, url, tenant_base_url),
        aud: [client_key],
    };
    sign_hs256(&claims, secret)
}

/// What an impersonation assertion says (docs/protocol.md §6).
#[derive(Debug, Clone, Copy)]
pub struct ImpersonationRequest<'a> {
    /// `oauthClientId` from the install payload.
    pub oauth_client_id: &'a str,
    /// The tenant's base URL, with `/wiki`, as installed.
    pub tenant_base_url: &'a str,
    /// The user to act as.
    pub account_id: &'a str,
    /// The authorization server's audience: [`ATLASSIAN_OAUTH_AUDIENCE`] for production sites.
    pub audience: &'a str,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: String,
    sub: String,
    tnt: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The JWT-bearer assertion exchanged for a user's access token. `aud` is a plain string and the
/// assertion lives exactly [`ASSERTION_TTL_SECONDS`].
pub fn mint_impersonation_assertion(
    request: &ImpersonationRequest<'_>,
    secret: &SecretString,
    now: i64,
) -> Result<String, AuthError> {
    let claims = AssertionClaims {
        iss: format!("urn:atlassian:connect:clientid:{}", request.oauth_client_id),
        sub: format!("urn:atlassian:connect:useraccountid:{}", request.account_id),
        tnt: request.tenant_base_url,
        aud: request.audience,
        iat: now,
        exp: now.saturating_add(ASSERTION_TTL_SECONDS),
    };
    sign_hs256(&claims, secret)
}
