//! The install payload, the tenant it makes, and installs signed with the test install key (as
//! Atlassian signs them, RS256 with the key named by `kid`).

use connect_auth::{InMemoryKeys, RequestParts};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use understudy_domain::Tenant;

use crate::{APP_BASE_URL, APP_KEY};

/// The test install key's id, as the key server serves it.
pub const INSTALL_KID: &str = "install-kid-1";

/// The test install key's private half (PKCS#8 PEM): what "Atlassian" signs installs with.
pub const INSTALL_PRIVATE_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.private.pem");

/// The test install key's public half (SPKI PEM): what the key server serves.
pub const INSTALL_PUBLIC_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.public.pem");

/// The OAuth client id of the fixtures' installs (present: the descriptor asks for `ACT_AS_USER`).
pub const OAUTH_CLIENT_ID: &str = "oauth-client-1";

/// The site the fixtures install from.
pub const SITE_BASE_URL: &str = "https://acme.atlassian.net/wiki";

/// The payload of `installed` as Confluence posts it, from [`SITE_BASE_URL`], with every field it
/// sends (and one it may add one day, which must be kept).
pub fn install_payload(client_key: &str, shared_secret: &str) -> Value {
    json!({
        "key": APP_KEY,
        "clientKey": client_key,
        "sharedSecret": shared_secret,
        "baseUrl": SITE_BASE_URL,
        "displayUrl": "https://docs.example.com/wiki",
        "productType": "confluence",
        "description": format!("Atlassian Confluence at {SITE_BASE_URL}"),
        "serviceEntitlementNumber": "SEN-1",
        "eventType": "installed",
        "oauthClientId": OAUTH_CLIENT_ID,
        "cloudId": "cloud-1",
        "futureField": {"kept": [1, 2, 3]}
    })
}

/// The tenant an install of [`install_payload`] from `base_url` makes, at `now`.
pub fn tenant(client_key: &str, shared_secret: &str, base_url: &str, now: i64) -> Tenant {
    let mut payload = install_payload(client_key, shared_secret);
    payload["baseUrl"] = json!(base_url);
    Tenant::from_install_payload(payload, now).unwrap_or_else(|e| panic!("tenant: {e}"))
}

/// The key provider of a deployment that knows the test install key as [`INSTALL_KID`].
pub fn install_keys() -> InMemoryKeys {
    let keys = InMemoryKeys::new();
    keys.insert_pem(INSTALL_KID, INSTALL_PUBLIC_PEM)
        .unwrap_or_else(|e| panic!("the test install key: {e}"));
    keys
}

/// The claims of a signed install from `client_key` for `POST path` of the app at
/// [`APP_BASE_URL`], at `now`.
pub fn install_claims(client_key: &str, path: &str, now: i64) -> Value {
    json!({"iss": client_key, "aud": [APP_BASE_URL], "iat": now, "exp": now + 180,
           "qsh": RequestParts::new("POST", path, "").qsh()})
}

/// `claims` signed RS256 with `private_pem`, naming `kid` in the header.
pub fn rs256(kid: Option<&str>, claims: &Value, private_pem: &[u8]) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_rsa_pem(private_pem).unwrap_or_else(|e| panic!("key: {e}"));
    jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| panic!("signing: {e}"))
}

/// The token of a signed install from `client_key` for `POST path`, as Atlassian signs it.
pub fn install_token(client_key: &str, path: &str, now: i64) -> String {
    rs256(
        Some(INSTALL_KID),
        &install_claims(client_key, path, now),
        INSTALL_PRIVATE_PEM,
    )
}
