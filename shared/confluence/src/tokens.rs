//! User access tokens by the OAuth 2.0 JWT bearer grant (connect-protocol.md §6), cached two levels
//! deep: in this warm instance's memory and in the tenant store (through the domain's
//! [`TokenCache`] port, which encrypts and expires them). A token with less than the refresh margin
//! left is not used. Concurrent callers for one (tenant, user, scopes) share one exchange.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use connect_auth::{
    Clock, ExposeSecret, ImpersonationRequest, SecretString, mint_impersonation_assertion,
};
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde::Deserialize;
use understudy_domain::{AccountId, CachedToken, ClientKey, Tenant, TokenCache, TokenCacheKey};
use url::Url;

use crate::config::{ClientConfig, Scopes};
use crate::error::{TokenError, network_reason};
use crate::retry::{Pause, told_wait};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Where one token lives in memory. The secret's and base URL's fingerprint is part of it, so a
/// re-install with a rotated secret or a renamed site never reuses a token minted before.
#[derive(Clone, PartialEq, Eq, Hash)]
struct MemoryKey {
    client_key: ClientKey,
    install_fingerprint: u64,
    token: TokenCacheKey,
}

/// Issues and caches user access tokens. One per warm instance (inside [`crate::ConfluenceClient`]).
pub struct ImpersonationTokens {
    http: reqwest::Client,
    config: ClientConfig,
    store: Arc<dyn TokenCache>,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    hasher: RandomState,
    memory: Mutex<HashMap<MemoryKey, CachedToken>>,
    flights: Mutex<HashMap<MemoryKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for ImpersonationTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImpersonationTokens")
            .field("cached", &lock(&self.memory).len())
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ImpersonationTokens {
    pub(crate) fn new(
        http: reqwest::Client,
        config: ClientConfig,
        store: Arc<dyn TokenCache>,
        clock: Arc<dyn Clock>,
        pause: Arc<dyn Pause>,
    ) -> Self {
        Self {
            http,
            config,
            store,
            clock,
            pause,
            hasher: RandomState::new(),
            memory: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
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

    fn usable(&self, token: &CachedToken, now: i64) -> bool {
        let margin = i64::try_from(self.config.token_refresh_margin.as_secs()).unwrap_or(i64::MAX);
        token.expires_at.saturating_sub(now) > margin
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
        if let Some(token) = self.memory_hit(&key, rejected) {
            return Ok(token);
        }

        // Single flight: one exchange per key at a time; whoever waited finds the token in memory.
        let flight = Arc::clone(lock(&self.flights).entry(key.clone()).or_default());
        let result = {
            let _turn = flight.lock().await;
            self.get_in_flight(tenant, account, scopes, rejected, oauth_client_id, &key)
                .await
        };
        drop(flight);
        // The map's entry is the last reference once nobody waits: forget it.
        let mut flights = lock(&self.flights);
        if flights.get(&key).is_some_and(|f| Arc::strong_count(f) == 1) {
            flights.remove(&key);
        }
        result
    }

    fn memory_hit(&self, key: &MemoryKey, rejected: Option<&SecretString>) -> Option<SecretString> {
        let now = self.clock.now_unix();
        let mut memory = lock(&self.memory);
        match memory.get(key) {
            Some(token) if self.usable(token, now) && !same(&token.access_token, rejected) => {
                Some(token.access_token.clone())
            }
            Some(_) => {
                memory.remove(key);
                None
            }
            None => None,
        }
    }

    async fn get_in_flight(
        &self,
        tenant: &Tenant,
        account: &AccountId,
        scopes: Option<&Scopes>,
        rejected: Option<&SecretString>,
        oauth_client_id: &str,
        key: &MemoryKey,
    ) -> Result<SecretString, TokenError> {
        if let Some(token) = self.memory_hit(key, rejected) {
            return Ok(token);
        }
        let now = self.clock.now_unix();
        match self
            .store
            .get_token(&tenant.client_key, &key.token, now)
            .await
        {
            Ok(Some(token)) if self.usable(&token, now) && !same(&token.access_token, rejected) => {
                let secret = token.access_token.clone();
                lock(&self.memory).insert(key.clone(), token);
                return Ok(secret);
            }
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
        let secret = token.access_token.clone();
        lock(&self.memory).insert(key.clone(), token);
        Ok(secret)
    }

    /// One exchange of an assertion for an access token, with retries on 429, 5xx and network
    /// errors (the grant has no side effect, so a retry is always safe). A fresh assertion is minted
    /// for every attempt: each lives 60 s at most.
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
        let policy = self.config.retry;
        let deadline = self.pause.now() + policy.total_deadline;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let now = self.clock.now_unix();
            let request = ImpersonationRequest {
                oauth_client_id,
                tenant_base_url: &tenant.base_url,
                account_id: account.as_str(),
                audience,
            };
            let assertion = mint_impersonation_assertion(&request, &tenant.shared_secret, now)
                .map_err(|_| TokenError::Signing)?;
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ];
            if let Some(scopes) = scopes {
                form.push(("scope", scopes.as_str()));
            }
            let remaining = deadline.saturating_duration_since(self.pause.now());
            let sent = self
                .http
                .post(endpoint.clone())
                .header(ACCEPT, "application/json")
                .form(&form)
                .timeout(
                    policy
                        .attempt_timeout
                        .min(remaining)
                        .max(Duration::from_millis(1)),
                )
                .send()
                .await;
            let (error, wait) = match sent {
                Ok(response) if response.status().is_success() => {
                    return parse_token(response, now).await;
                }
                Ok(response) => {
                    let status = response.status();
                    let told = told_wait(response.headers(), now);
                    match classify(status, told) {
                        Some((error, wait)) => (error, wait),
                        None => return Err(oauth_refusal(status, response).await),
                    }
                }
                Err(e) => (
                    TokenError::Network {
                        reason: network_reason(&e),
                    },
                    None,
                ),
            };
            let wait = wait.unwrap_or_else(|| policy.backoff(attempt));
            if attempt >= policy.max_attempts || self.pause.now() + wait >= deadline {
                return Err(error);
            }
            tracing::warn!(
                client_key = %tenant.client_key,
                attempt,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason = %error,
                "retrying the user token request"
            );
            self.pause.sleep(wait).await;
        }
    }

    /// Forgets every token of a tenant held in this instance (the store's copies are dropped by the
    /// lifecycle handler through [`TokenCache::drop_tokens_for_tenant`]).
    pub fn forget_tenant(&self, client_key: &ClientKey) {
        lock(&self.memory).retain(|k, _| &k.client_key != client_key);
    }
}

fn same(token: &SecretString, rejected: Option<&SecretString>) -> bool {
    rejected.is_some_and(|r| r.expose_secret() == token.expose_secret())
}

/// Retryable answers: the error to report if retries run out, and the told wait.
fn classify(status: StatusCode, told: Option<Duration>) -> Option<(TokenError, Option<Duration>)> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Some((TokenError::RateLimited { retry_after: told }, told));
    }
    if status.is_server_error() {
        return Some((
            TokenError::Server {
                status: status.as_u16(),
            },
            told,
        ));
    }
    None
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
