//! Forge offline user impersonation (docs/protocol.md §17): a token to act as a user, asked of
//! Atlassian's GraphQL gateway with the installation's app system token
//! (`offlineUserAuthToken`), kept in this warm instance's memory per (installation, user) until its
//! `ttl` runs out less the refresh margin. Concurrent callers for one key share one exchange.
//!
//! The gateway allows 1 000 of these requests per minute per app; a 429 waits as told through the
//! shared retry executor. A refusal (`success: false`, or GraphQL errors) is
//! [`TokenError::ImpersonationRefused`] with what Atlassian said, cut short: the audit shows it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connect_auth::{Clock, ExposeSecret, SecretString};
use moka::Expiry;
use moka::future::Cache;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use understudy_core::confluence_site_ari;
use understudy_domain::{AccountId, ForgeInstallation, InstallationId};

use crate::config::ClientConfig;
use crate::error::TokenError;
use crate::retry::{Attempt, Pause, Retried, Retrier, told_wait};
use crate::single_flight::fresh_or_load;

/// The mutation, with its input as a variable so no caller text is ever spliced into the query.
const OFFLINE_TOKEN_MUTATION: &str = "mutation understudy_offlineUserAuthToken($input: OfflineUserAuthTokenInput!) { offlineUserAuthToken(input: $input) { success errors { message } authToken { token ttl } } }";

/// The most of Atlassian's refusal text that reaches an audit record.
const MAX_REASON_CHARS: usize = 200;

/// The most of a GraphQL answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct OfflineToken {
    token: SecretString,
    expires_at: i64,
}

/// How long a token may still be used at `now`: its expiry less `margin`.
fn usable_for(expires_at: i64, now: i64, margin: Duration) -> Duration {
    let left = u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0);
    Duration::from_secs(left).saturating_sub(margin)
}

struct UsableFor {
    clock: Arc<dyn Clock>,
    margin: Duration,
}

impl Expiry<(InstallationId, AccountId), OfflineToken> for UsableFor {
    fn expire_after_create(
        &self,
        _key: &(InstallationId, AccountId),
        token: &OfflineToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(usable_for(
            token.expires_at,
            self.clock.now_unix(),
            self.margin,
        ))
    }

    fn expire_after_update(
        &self,
        _key: &(InstallationId, AccountId),
        token: &OfflineToken,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(usable_for(
            token.expires_at,
            self.clock.now_unix(),
            self.margin,
        ))
    }
}

/// Issues and caches offline user-impersonation tokens. One per warm instance (inside
/// [`crate::ConfluenceClient`]).
pub struct OfflineTokens {
    http: reqwest::Client,
    config: ClientConfig,
    clock: Arc<dyn Clock>,
    pause: Arc<dyn Pause>,
    memory: Cache<(InstallationId, AccountId), OfflineToken>,
}

impl fmt::Debug for OfflineTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OfflineTokens")
            .field("cached", &self.memory.entry_count())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Answer {
    data: Option<Data>,
    #[serde(default)]
    errors: Option<Vec<Message>>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "offlineUserAuthToken")]
    offline_user_auth_token: Option<Payload>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    success: bool,
    #[serde(default)]
    errors: Option<Vec<Message>>,
    #[serde(rename = "authToken")]
    auth_token: Option<AuthToken>,
}

#[derive(Deserialize)]
struct Message {
    message: Option<String>,
}

#[derive(Deserialize)]
struct AuthToken {
    token: Option<String>,
    ttl: Option<i64>,
}

impl OfflineTokens {
    /// Tokens kept in one warm instance's memory, at most.
    pub const MEMORY_CAPACITY: u64 = 4_096;

    pub(crate) fn new(
        http: reqwest::Client,
        config: ClientConfig,
        clock: Arc<dyn Clock>,
        pause: Arc<dyn Pause>,
    ) -> Self {
        let memory = Cache::builder()
            .max_capacity(Self::MEMORY_CAPACITY)
            .expire_after(UsableFor {
                clock: Arc::clone(&clock),
                margin: config.token_refresh_margin,
            })
            .build();
        Self {
            http,
            config,
            clock,
            pause,
            memory,
        }
    }

    /// A token to act as `account` through `installation`, with `system_token` (fresh: the
    /// caller checked) to ask for it; `rejected` is one Confluence just refused, which is not
    /// handed out again.
    pub(crate) async fn token(
        &self,
        installation: &ForgeInstallation,
        system_token: &SecretString,
        account: &AccountId,
        rejected: Option<&SecretString>,
    ) -> Result<SecretString, TokenError> {
        let key = (installation.id.clone(), account.clone());
        let fresh = |held: &OfflineToken| {
            !usable_for(
                held.expires_at,
                self.clock.now_unix(),
                self.config.token_refresh_margin,
            )
            .is_zero()
                && rejected.is_none_or(|r| r.expose_secret() != held.token.expose_secret())
        };
        fresh_or_load(&self.memory, key, fresh, || {
            self.exchange(installation, system_token, account)
        })
        .await
        .map(|held| held.token)
    }

    /// One `offlineUserAuthToken` request through the retry executor: 429 and 5xx wait as told
    /// (else back off), network errors are retried; asking again has no side effect.
    async fn exchange(
        &self,
        installation: &ForgeInstallation,
        system_token: &SecretString,
        account: &AccountId,
    ) -> Result<OfflineToken, TokenError> {
        let endpoint = self
            .config
            .forge_graphql_endpoint(&installation.api_base_url)
            .map_err(|reason| TokenError::Endpoint { reason })?;
        let context = confluence_site_ari(&installation.cloud_id).ok_or(TokenError::Endpoint {
            reason: "the installation's cloudId cannot name a site",
        })?;
        let body = json!({
            "query": OFFLINE_TOKEN_MUTATION,
            "variables": {"input": {"contextIds": [context], "userId": account.as_str()}},
        });
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {}", system_token.expose_secret()))
                .map_err(|_| TokenError::Signing)?;
        authorization.set_sensitive(true);
        let retried = Retried {
            client_key: installation.tenant_key.as_str(),
            method: "POST",
            path: endpoint.path(),
        };
        let (endpoint, body, authorization) = (&endpoint, &body, &authorization);
        Retrier::new(self.config.retry, &*self.pause)
            .run(retried, |limits| async move {
                let request = self
                    .http
                    .post(endpoint.clone())
                    .header(AUTHORIZATION, authorization.clone())
                    .header(ACCEPT, "application/json")
                    .json(body);
                let network = |reason| TokenError::Network { reason };
                match limits.send(request, network).await {
                    Ok(response) => self.judge(response).await,
                    Err(retry) => retry,
                }
            })
            .await
    }

    async fn judge(&self, response: reqwest::Response) -> Attempt<OfflineToken, TokenError> {
        let now = self.clock.now_unix();
        let status = response.status();
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
        if !status.is_success() {
            // 401/403: the system token itself was refused (revoked, or the scope is missing).
            return Attempt::Done(Err(TokenError::Rejected {
                status: status.as_u16(),
                error: None,
            }));
        }
        let bytes = match read_bounded(response).await {
            Ok(bytes) => bytes,
            Err(error) => return Attempt::Done(Err(error)),
        };
        Attempt::Done(parse_answer(&bytes, now))
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, TokenError> {
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len().saturating_add(chunk.len()) > MAX_ANSWER_BYTES {
                    return Err(TokenError::InvalidResponse {
                        reason: "the GraphQL answer is too large",
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(_) => {
                return Err(TokenError::Network {
                    reason: "the GraphQL answer was cut off".to_owned(),
                });
            }
        }
    }
}

/// What a 2xx GraphQL answer comes to: a token, or Atlassian's refusal.
fn parse_answer(bytes: &[u8], now: i64) -> Result<OfflineToken, TokenError> {
    let answer: Answer =
        serde_json::from_slice(bytes).map_err(|_| TokenError::InvalidResponse {
            reason: "the GraphQL answer is not JSON",
        })?;
    let top_errors = answer.errors.unwrap_or_default();
    let (success, own_errors, auth_token) =
        match answer.data.and_then(|d| d.offline_user_auth_token) {
            Some(payload) => (
                payload.success,
                payload.errors.unwrap_or_default(),
                payload.auth_token,
            ),
            None => (false, Vec::new(), None),
        };
    if !success || !own_errors.is_empty() {
        return Err(TokenError::ImpersonationRefused {
            reason: refusal_text(own_errors.into_iter().chain(top_errors)),
        });
    }
    let auth = auth_token.ok_or(TokenError::InvalidResponse {
        reason: "success without an authToken",
    })?;
    let token = auth
        .token
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::InvalidResponse {
            reason: "authToken without a token",
        })?;
    let ttl = auth
        .ttl
        .filter(|t| *t > 0)
        .ok_or(TokenError::InvalidResponse {
            reason: "authToken without a positive ttl",
        })?;
    Ok(OfflineToken {
        token: SecretString::from(token),
        expires_at: now.saturating_add(ttl),
    })
}

/// Atlassian's messages as one short line of printable text (they reach the audit trail).
fn refusal_text(messages: impl Iterator<Item = Message>) -> String {
    let joined = messages
        .filter_map(|m| m.message)
        .collect::<Vec<_>>()
        .join("; ");
    let clean: String = joined
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    if clean.trim().is_empty() {
        "no reason given".to_owned()
    } else {
        clean.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_answer_gives_the_token_until_its_ttl() {
        let answer = br#"{"data":{"offlineUserAuthToken":{"success":true,"errors":null,"authToken":{"token":"tok","ttl":900}}}}"#;
        let token = parse_answer(answer, 100).unwrap();
        assert_eq!(token.token.expose_secret(), "tok");
        assert_eq!(token.expires_at, 1_000);
    }

    #[test]
    fn refusals_carry_what_atlassian_said_cut_short() {
        let refused = br#"{"data":{"offlineUserAuthToken":{"success":false,"errors":[{"message":"User is deactivated"}],"authToken":null}}}"#;
        assert_eq!(
            parse_answer(refused, 0).err(),
            Some(TokenError::ImpersonationRefused {
                reason: "User is deactivated".into()
            })
        );
        let graphql_error = format!(
            r#"{{"data":null,"errors":[{{"message":"{}\nnext"}}]}}"#,
            "x".repeat(500)
        );
        match parse_answer(graphql_error.as_bytes(), 0) {
            Err(TokenError::ImpersonationRefused { reason }) => {
                assert_eq!(reason.chars().count(), MAX_REASON_CHARS);
                assert!(!reason.contains('\n'));
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(
            parse_answer(b"{\"data\":{\"offlineUserAuthToken\":{\"success\":true,\"authToken\":{\"token\":\"t\",\"ttl\":0}}}}", 0),
            Err(TokenError::InvalidResponse { .. })
        ));
        assert!(matches!(
            parse_answer(b"not json", 0),
            Err(TokenError::InvalidResponse { .. })
        ));
        assert_eq!(
            refusal_text(std::iter::empty()),
            "no reason given".to_owned()
        );
    }
}
