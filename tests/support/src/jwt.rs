//! HS256 tokens as Confluence signs them with a tenant's shared secret: request-bound (a qsh of
//! the request) for lifecycle callbacks, webhooks and iframes, or context tokens
//! (`AP.context.getToken()`, qsh `context-qsh`) for the app's own API.

use connect_auth::{CONTEXT_QSH, RequestParts, SecretString, sign_hs256};
use serde_json::{Value, json};

/// The claims of one token, built up and then signed.
#[derive(Debug, Clone)]
pub struct ConnectToken {
    claims: Value,
}

impl ConnectToken {
    /// A token from `iss` (the tenant's clientKey) bound to `method path?query`, issued at `now`
    /// for three minutes.
    pub fn for_request(iss: &str, method: &str, path: &str, query: &str, now: i64) -> Self {
        Self::with_qsh(iss, &RequestParts::new(method, path, query).qsh(), now)
    }

    /// A token from `iss` bound to `POST path` (a lifecycle callback or a webhook).
    pub fn for_post(iss: &str, path: &str, now: i64) -> Self {
        Self::for_request(iss, "POST", path, "", now)
    }

    /// A context token from `iss`, as the page's iframe gets it from `AP.context.getToken()`.
    pub fn context(iss: &str, now: i64) -> Self {
        Self::with_qsh(iss, CONTEXT_QSH, now).claim("context", json!({}))
    }

    /// A token from `iss` with `qsh` as given.
    pub fn with_qsh(iss: &str, qsh: &str, now: i64) -> Self {
        Self {
            claims: json!({"iss": iss, "iat": now, "exp": now + 180, "qsh": qsh}),
        }
    }

    /// The user the token speaks for (`sub`).
    pub fn user(self, account_id: &str) -> Self {
        self.claim("sub", json!(account_id))
    }

    /// Sets (or replaces) a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims[name] = value;
        self
    }

    /// The claims as they stand.
    pub fn claims(&self) -> &Value {
        &self.claims
    }

    /// The token, signed HS256 with `shared_secret`.
    pub fn sign(&self, shared_secret: &str) -> String {
        sign_hs256(&self.claims, &SecretString::from(shared_secret))
            .unwrap_or_else(|e| panic!("signing: {e}"))
    }

    /// `JWT <token>`, the `Authorization` header Confluence sends.
    pub fn header(&self, shared_secret: &str) -> String {
        format!("JWT {}", self.sign(shared_secret))
    }
}
