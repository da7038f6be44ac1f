//! Verifying signed installs: RS256 tokens on `installed` and `uninstalled` (docs/protocol.md §4).

use jsonwebtoken::Algorithm;
use jsonwebtoken::Validation;

use crate::claims::{Claims, RawClaims};
use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;
use crate::keys::{KeyProvider, Kid};
use crate::qsh::RequestParts;
use crate::token::require_alg;
use crate::verify::{
    DEFAULT_LEEWAY_SECONDS, QshMode, check_qsh, check_times, map_jwt_error, signature_only,
};

/// Checks signed-install tokens against Atlassian's public keys and this app's base URLs.
#[derive(Debug)]
pub struct InstallVerifier<K, C = SystemClock> {
    keys: K,
    audiences: Vec<String>,
    leeway_seconds: i64,
    clock: C,
    validation: Validation,
}

fn normalise_audience(url: &str) -> &str {
    url.trim_end_matches('/')
}

impl<K: KeyProvider> InstallVerifier<K, SystemClock> {
    /// A verifier for an app served at any of `app_base_urls` (several for several stages).
    pub fn new<S: AsRef<str>>(keys: K, app_base_urls: impl IntoIterator<Item = S>) -> Self {
        Self::with_clock(keys, app_base_urls, SystemClock)
    }
}

impl<K: KeyProvider, C: Clock> InstallVerifier<K, C> {
    /// The same, with an injected clock.
    pub fn with_clock<S: AsRef<str>>(
        keys: K,
        app_base_urls: impl IntoIterator<Item = S>,
        clock: C,
    ) -> Self {
        Self {
            keys,
            audiences: app_base_urls
                .into_iter()
                .map(|u| normalise_audience(u.as_ref()).to_owned())
                .collect(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            clock,
            validation: signature_only(Algorithm::RS256),
        }
    }

    /// The same verifier with another clock-skew leeway.
    pub fn leeway(mut self, seconds: i64) -> Self {
        self.leeway_seconds = seconds.max(0);
        self
    }

    /// The key provider (to share its cache).
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Verifies a signed install. On success the caller must still check that `claims.iss` equals
    /// the body's `clientKey`.
    pub async fn verify(
        &self,
        token: &str,
        request: &RequestParts<'_>,
    ) -> Result<Claims, AuthError> {
        let header = require_alg(token, "RS256")?;
        // The kid is validated before any URL is built from it.
        let kid = Kid::parse(header.kid.as_deref().ok_or(AuthError::BadKid)?)?;
        let key = self.keys.public_key(&kid).await?;
        let raw = jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation)
            .map_err(|e| map_jwt_error(&e))?
            .claims;
        let claims = raw.into_claims()?;
        let aud_ok = claims.aud.as_ref().is_some_and(|aud| {
            aud.iter().any(|a| {
                self.audiences
                    .iter()
                    .any(|ours| ours == normalise_audience(a))
            })
        });
        if !aud_ok {
            return Err(AuthError::WrongAudience);
        }
        check_times(&claims, self.clock.now_unix(), self.leeway_seconds)?;
        check_qsh(claims.qsh.as_deref(), QshMode::Computed, request)?;
        Ok(claims)
    }
}
