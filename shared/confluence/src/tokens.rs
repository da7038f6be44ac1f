//! User access tokens by the OAuth 2.0 JWT bearer grant (docs/protocol.md §6), cached two levels
//! deep: in this warm instance's memory and in the tenant store (through the domain's
//! [`TokenCache`] port, which encrypts and expires them). A token with less than the refresh margin
//! left is not used. Concurrent callers for one (tenant, user, scopes) share one exchange.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_auth::{
    Clock, ExposeSecret, ImpersonationRequest, SecretString, mint_impersonation_assertion,
};
use moka::Expiry;
use moka::future::Cache;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use understudy_domain::{AccountId, CachedToken, ClientKey, Tenant, TokenCache, TokenCacheKey};
use url::Url;

use crate::config::{ClientConfig, Scopes};
use crate::error::TokenError;
use crate::retry::{Attempt, Pause, Retried, Retrier, told_wait};
use crate::single_flight::fresh_or_load;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Where one token lives in memory. The secret's and base URL's fingerprint is part of it, so a
/// re-install with a rotated secret or a renamed site never reuses a token minted before.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MemoryKey {
    client_key: ClientKey,
    install_fingerprint: u64,
    token: TokenCacheKey,
}

/// How long a token may still be used at `now`: its own expiry less the refresh margin (zero when
/// it is past that).
fn usable_for(token: &CachedToken, now: i64, margin: Duration) -> Duration {
    let left = token.expires_at.saturating_sub(now);
    let left = Duration::from_secs(u64::try_from(left).unwrap_or(0));
    left.saturating_sub(margin)
}

/// Moka's per-entry expiry for a token in memory: [`usable_for`] as of when it is stored.
struct UsableFor {
    clock: Arc<dyn Clock>,
    margin: Duration,
}

impl Expiry<MemoryKey, CachedToken> for UsableFor {
    fn expire_after_create(
        &self,
        _key: &MemoryKey,
        token: &CachedToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(usable_for(token, self.clock.now_unix(), self.margin))
    }

    fn expire_after_update(
        &self,
        _key: &MemoryKey,
        token: &CachedToken,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(usable_for(token, self.clock.now_unix(), self.margin))
    }
}

/// The in-memory layer: at most `capacity` tokens (least recently used out first), each until its
/// own expiry less `margin`. Moka counts that expiry on the monotonic clock from when the token is
/// stored; every read also checks it against the injected `clock` ([`ImpersonationTokens`]), which
/// is what tests move.
fn memory_layer(
    capacity: u64,
    clock: Arc<dyn Clock>,
    margin: Duration,
) -> Cache<MemoryKey, CachedToken> {
    Cache::builder()
        .max_capacity(capacity)
        .expire_after(UsableFor { clock, margin })
        .support_invalidation_closures()
        .build()
}

/// Issues and caches user access tokens. One per warm instance (inside [`crate::ConfluenceClient`]).
///
/// Memory holds at most [`Self::MEMORY_CAPACITY`] tokens, each until its own expiry less the
/// configured refresh margin ([`ClientConfig::token_refresh_margin`]); one load (store, else
/// exchange) per (tenant, user, scopes) at a time.
pub struct ImpersonationTokens {
    http: reqwest::Client,
    config: ClientConfig,
    store: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    hasher: RandomState,
    memory: Cache<MemoryKey, CachedToken>,
}

impl fmt::Debug for ImpersonationTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpersonationTokens")
            .field("cached", &self.memory.entry_count())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<i64>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
}

impl ImpersonationTokens {
    /// Tokens kept in one warm instance's memory, at most: one per (tenant, install, user, scopes)
    /// recently acted as.
    pub const MEMORY_CAPACITY: u64 = 4_096;

    pub(crate) fn new(
        http: reqwest::Client,
        config: ClientConfig,
        store: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
        pause: Arc<dyn Pause>,
    ) -> Self {
        let memory = memory_layer(
            Self::MEMORY_CAPACITY,
            Arc::clone(&clock),
            config.token_refresh_margin,
        );
        Self {
            http,
            config,
            store,
            clock,
            pause,
            hasher: RandomState::new(),
            memory,
        }
    }

    fn memory_key(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
    ) -> MemoryKey {
        let fingerprint = self.hasher.hash_one((
            tenant.shared_secret.expose_secret(),
            tenant.base_url.as_str(),
            tenant.oauth_client_id.as_deref(),
        ));
        MemoryKey {
            client_key: tenant.client_key.clone(),
            install_fingerprint: fingerprint,
            token: TokenCacheKey::new(account, scopes.map_or("", Scopes::as_str)),
        }
    }

    /// True when `token` has more than the refresh margin left on the injected clock and is not the
    /// one Confluence refused.
    fn fresh(&self, token: &CachedToken, rejected: Option<&SecretString>) -> bool {
        let now = self.clock.now_unix();
        !usable_for(token, now, self.config.token_refresh_margin).is_zero()
            && !same(&token.access_token, rejected)
    }

    /// An access token to act as `account` on `tenant`: from memory, else from the store, else by a
    /// fresh exchange (shared with concurrent callers for the same key).
    pub async fn access_token(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
    ) -> Result<SecretString, TokenError> {
        self.get(tenant, account, scopes, None).await
    }

    /// As [`Self::access_token`], after Confluence refused `rejected` (revoked, or expired early):
    /// that token is dropped, and a new one exchanged unless a concurrent caller already did.
    pub async fn refresh_after_rejection(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
        rejected: &SecretString,
    ) -> Result<SecretString, TokenError> {
        self.get(tenant, account, scopes, Some(rejected)).await
    }

    async fn get(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, TokenError> {
        let oauth_client_id = tenant
            .oauth_client_id
            .as_deref()
            .filter(|id| !id.trim().is_empty())
            .ok_or(TokenError::NoActAsUser)?;
        let key = self.memory_key(tenant, account, scopes);
        let load_key = key.clone();
        fresh_or_load(
            &self.memory,
            key,
            |held| self.fresh(held, rejected),
            || async move {
                self.load(
                    tenant,
                    account,
                    scopes,
                    rejected,
                    oauth_client_id,
                    &load_key,
                )
                .await
            },
        )
        .await
        .map(|token| token.access_token)
    }

    /// The token from the store when it is fresh, else from a new exchange (then stored).
    async fn load(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
        rejected: Option<&SecretString>,
        oauth_client_id: &str,
        key: &MemoryKey,
    ) -> Result<CachedToken, TokenError> {
        let now = self.clock.now_unix();
        match self
            .store
            .get_token(&tenant.client_key, &key.token, now)
            .await
        {
            Ok(Some(token)) if self.fresh(&token, rejected) => return Ok(token),
            Ok(_) => {}
            // The store is a cache: when it is down, exchanging a token is still correct.
            Err(error) => tracing::warn!(
                client_key = %tenant.client_key,
                error = %error,
                "token store read failed; exchanging a new user token"
            ),
        }
        let token = self
            .exchange(tenant, account, scopes, oauth_client_id)
            .await?;
        if let Err(error) = self
            .store
            .put_token(&tenant.client_key, &key.token, &token)
            .await
        {
            tracing::warn!(client_key = %tenant.client_key, error = %error, "token store write failed");
        }
        Ok(token)
    }

    /// One exchange of an assertion for an access token, through the retry executor ([`Retrier`]):
    /// 429 and 5xx (waiting as told, else backoff) and network errors are retried (the grant has
    /// no side effect, so a retry is always safe). A fresh assertion is minted for every attempt:
    /// each lives 60 s at most.
    async fn exchange(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
        oauth_client_id: &str,
    ) -> Result<CachedToken, TokenError> {
        let base = Url::parse(&tenant.base_url).map_err(|_| TokenError::Endpoint {
            reason: "tenant base URL is not a URL",
        })?;
        let (endpoint, audience) = self
            .config
            .oauth_endpoint(&base)
            .map_err(|reason| TokenError::Endpoint { reason })?;
        let retried = Retried {
            client_key: tenant.client_key.as_str(),
            method: "POST",
            path: endpoint.path(),
        };
        let endpoint = &endpoint;
        Retrier::new(self.config.retry, &*self.pause)
            .run(retried, |limits| async move {
                let now = self.clock.now_unix();
                let request = ImpersonationRequest {
                    oauth_client_id,
                    tenant_base_url: &tenant.base_url,
                    account_id: account.as_str(),
                    audience,
                };
                let Ok(assertion) =
                    mint_impersonation_assertion(&request, &tenant.shared_secret, now)
                else {
                    return Attempt::Done(Err(TokenError::Signing));
                };
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", GRANT_TYPE),
                    ("assertion", assertion.as_str()),
                ];
                if let Some(scopes) = scopes {
                    form.push(("scope", scopes.as_str()));
                }
                let request = self
                    .http
                    .post(endpoint.clone())
                    .header(ACCEPT, "application/json")
                    .form(&form);
                let network = |reason| TokenError::Network { reason };
                match limits.send(request, network).await {
                    Ok(response) => judge(response, now).await,
                    Err(retry) => retry,
                }
            })
            .await
    }

    /// Forgets every token of a tenant held in this instance (the store's copies are dropped by the
    /// lifecycle handler through [`TokenCache::drop_tokens_for_tenant`]).
    pub fn forget_tenant(&self, client_key: &ClientKey) {
        let client_key = client_key.clone();
        if self
            .memory
            .invalidate_entries_if(move |k, _| k.client_key == client_key)
            .is_err()
        {
            self.memory.invalidate_all();
        }
    }
}

fn same(token: &SecretString, rejected: Option<&SecretString>) -> bool {
    rejected.is_some_and(|r| r.expose_secret() == token.expose_secret())
}

/// What the authorization server's answer to one attempt of an exchange comes to: 429 and 5xx are
/// retried (waiting as told, else backoff), other refusals are final.
async fn judge(response: reqwest::Response, now: i64) -> Attempt<CachedToken, TokenError> {
    let status = response.status();
    if status.is_success() {
        return Attempt::Done(parse_token(response, now).await);
    }
    let told = told_wait(response.headers(), now);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            error: TokenError::RateLimited { retry_after: told },
            told,
        };
    }
    if status.is_server_error() {
        return Attempt::Retry {
            error: TokenError::Server {
                status: status.as_u16(),
            },
            told,
        };
    }
    Attempt::Done(Err(oauth_refusal(status, response).await))
}

async fn oauth_refusal(status: StatusCode, response: reqwest::Response) -> TokenError {
    let code = response
        .json::<OAuthErrorBody>()
        .await
        .ok()
        .and_then(|b| b.error)
        // Keep only a short code from OAuth's vocabulary, never free text from the server.
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    if code.as_deref() == Some("invalid_grant") {
        return TokenError::InvalidGrant;
    }
    TokenError::Rejected {
        status: status.as_u16(),
        error: code,
    }
}

async fn parse_token(response: reqwest::Response, now: i64) -> Result<CachedToken, TokenError> {
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|_| TokenError::InvalidResponse {
            reason: "body is not the token JSON",
        })?;
    if body
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(TokenError::InvalidResponse {
            reason: "token_type is not Bearer",
        });
    }
    let access_token =
        body.access_token
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::InvalidResponse {
                reason: "no access_token",
            })?;
    let expires_in = body
        .expires_in
        .filter(|s| *s > 0)
        .ok_or(TokenError::InvalidResponse {
            reason: "no positive expires_in",
        })?;
    Ok(CachedToken {
        access_token: SecretString::from(access_token),
        expires_at: now.saturating_add(expires_in),
    })
}

#[cfg(test)]
mod tests {
    use connect_auth::FixedClock;

    use super::*;

    const NOW: i64 = 1_750_000_000;
    const MARGIN: Duration = Duration::from_secs(60);

    fn key(n: u32) -> MemoryKey {
        MemoryKey {
            client_key: ClientKey::parse("tenant").unwrap(),
            install_fingerprint: 1,
            token: TokenCacheKey::new(&AccountId::parse(format!("user-{n}")).unwrap(), ""),
        }
    }

    fn token(expires_at: i64) -> CachedToken {
        CachedToken {
            access_token: SecretString::from("t"),
            expires_at,
        }
    }

    #[tokio::test]
    async fn the_memory_layer_stays_within_its_bound() {
        let memory = memory_layer(3, Arc::new(FixedClock(NOW)), MARGIN);
        for n in 0..20 {
            memory.insert(key(n), token(NOW + 3600)).await;
        }
        memory.run_pending_tasks().await;
        assert_eq!(memory.entry_count(), 3);
        assert_eq!(ImpersonationTokens::MEMORY_CAPACITY, 4_096);
    }

    #[tokio::test]
    async fn a_token_lives_in_memory_until_its_expiry_less_the_margin() {
        let memory = memory_layer(8, Arc::new(FixedClock(NOW)), MARGIN);
        // Exactly the margin left: expired as it is stored.
        memory.insert(key(1), token(NOW + 60)).await;
        assert!(memory.get(&key(1)).await.is_none());
        memory.insert(key(2), token(NOW + 61)).await;
        assert!(memory.get(&key(2)).await.is_some());
        assert_eq!(
            usable_for(&token(NOW + 900), NOW, MARGIN),
            Duration::from_secs(840)
        );
        assert_eq!(usable_for(&token(NOW - 5), NOW, MARGIN), Duration::ZERO);
    }
}
