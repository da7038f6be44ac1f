//! Typed outcomes of talking to Confluence and to the OAuth server.
//!
//! Messages never contain a token, a shared secret, an assertion or page content: they are safe to log
//! and to put into an audit record. Each error says whether it is transient (try the job again later)
//! or permanent (retrying will not help until someone changes something).

use std::time::Duration;

/// A request to Confluence that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfluenceError {
    /// 404: the page does not exist, or whoever acted may not view it (a view restriction, no space
    /// access, an app access rule): Confluence does not tell these apart.
    #[error("not found, or not viewable by the acting user (404)")]
    NotFound,
    /// 403: whoever acted may view but not do this (an edit restriction, space permissions).
    #[error("forbidden for the acting user (403)")]
    Forbidden,
    /// 409: the page changed since it was read (stale version).
    #[error("version conflict (409)")]
    Conflict,
    /// 429 (or 503 with a told wait) that did not clear within the retry deadline.
    #[error("rate limited by Confluence (429){}", wait_text(*retry_after))]
    RateLimited {
        /// How long Confluence asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// 401: the token was refused (for a user token, even after one fresh exchange).
    #[error("unauthorized (401): Confluence refused the app's or user's token")]
    Unauthorized,
    /// 5xx after retries.
    #[error("Confluence server error ({status})")]
    Server {
        /// The last status seen.
        status: u16,
    },
    /// The connection failed or timed out, after retries.
    #[error("network error talking to Confluence: {reason}")]
    Network {
        /// What failed (no URL, no header).
        reason: String,
    },
    /// A status this client does not expect (3xx, other 4xx).
    #[error("unexpected status {status} from Confluence")]
    UnexpectedStatus {
        /// The status.
        status: u16,
    },
    /// A 2xx whose body is not what the API documents.
    #[error("unexpected response body from Confluence: {reason}")]
    InvalidResponse {
        /// What was missing or malformed.
        reason: String,
    },
    /// The tenant's base URL cannot be called (not https, not parseable, a URL that would leave it).
    #[error("tenant base URL refused: {reason}")]
    BaseUrl {
        /// Why.
        reason: &'static str,
    },
    /// The app token could not be signed (an unusable shared secret).
    #[error("could not sign the app token")]
    Signing,
    /// No user access token could be had for acting as a user.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl ConfluenceError {
    /// True when trying the same job again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Network { .. }
            | Self::Conflict => true,
            Self::Token(token) => token.is_transient(),
            Self::NotFound
            | Self::Forbidden
            | Self::Unauthorized
            | Self::UnexpectedStatus { .. }
            | Self::InvalidResponse { .. }
            | Self::BaseUrl { .. }
            | Self::Signing => false,
        }
    }

    /// True for the two answers a page or space restriction produces (404 cannot view, 403 cannot
    /// edit); the edit engine decides by acting as a user (docs/protocol.md §7).
    pub fn is_access_denied(&self) -> bool {
        matches!(self, Self::NotFound | Self::Forbidden)
    }

    /// The wait Confluence asked for, if this is a rate limit that said so: a queue can delay the job
    /// by this much.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            Self::Token(TokenError::RateLimited { retry_after }) => *retry_after,
            _ => None,
        }
    }
}

/// Why no access token could be had for a user (docs/protocol.md §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The install payload has no `oauthClientId`: the descriptor lacked the `ACT_AS_USER` scope
    /// when this site installed the app.
    #[error(
        "the app was installed without ACT_AS_USER (no oauthClientId): it cannot act as a user on \
         this site until the app is updated with that scope and re-installed"
    )]
    NoActAsUser,
    /// `invalid_grant`: the user does not exist any more, is deactivated, or the app may not act as
    /// them.
    #[error("the authorization server refused to let the app act as this user (invalid_grant)")]
    InvalidGrant,
    /// Another OAuth error (`invalid_client`, `unauthorized_client`, ...), e.g. after a secret
    /// rotation the server has not seen, or a wrong authorization server.
    #[error("the authorization server refused the token request ({status}{})", code_text(error.as_deref()))]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code, if the body had one (a short token from a fixed vocabulary).
        error: Option<String>,
    },
    /// 429 from the OAuth server that did not clear within the deadline.
    #[error("rate limited by the authorization server{}", wait_text(*retry_after))]
    RateLimited {
        /// The told wait, if any.
        retry_after: Option<Duration>,
    },
    /// 5xx from the OAuth server after retries.
    #[error("authorization server error ({status})")]
    Server {
        /// The last status.
        status: u16,
    },
    /// The OAuth server could not be reached, after retries.
    #[error("network error talking to the authorization server: {reason}")]
    Network {
        /// What failed.
        reason: String,
    },
    /// A 2xx without a usable `access_token` / `expires_in`.
    #[error("unexpected token response: {reason}")]
    InvalidResponse {
        /// What was wrong.
        reason: &'static str,
    },
    /// The assertion could not be signed (an unusable shared secret).
    #[error("could not sign the impersonation assertion")]
    Signing,
    /// The configured or derived token endpoint cannot be used.
    #[error("authorization server URL refused: {reason}")]
    Endpoint {
        /// Why.
        reason: &'static str,
    },
    /// Forge: Atlassian would not issue an offline user-impersonation token for this user
    /// (`offlineUserAuthToken` answered `success: false` or with errors): a deactivated user, an
    /// app or anonymous user, a user without access to the app.
    #[error("Atlassian refused to let the app act as this user: {reason}")]
    ImpersonationRefused {
        /// What Atlassian said, cut to one short line of printable text.
        reason: String,
    },
    /// Forge: the installation's latest system token is past its trusted lifetime. The job waits
    /// for a fresh one (every invocation, and the hourly scheduled trigger, brings one); nothing is
    /// sent with a stale token.
    #[error(
        "the Forge app system token has expired and no fresh one has arrived yet (the hourly \
         scheduled trigger brings one)"
    )]
    SystemTokenExpired,
}

impl TokenError {
    /// True when asking again later may work without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Network { .. }
                | Self::SystemTokenExpired
        )
    }
}

fn wait_text(wait: Option<Duration>) -> String {
    wait.map(|d| format!(", asked to wait {} s", d.as_secs()))
        .unwrap_or_default()
}

fn code_text(code: Option<&str>) -> String {
    code.map(|c| format!(", {c}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_and_permanent_outcomes_are_told_apart() {
        assert!(ConfluenceError::RateLimited { retry_after: None }.is_transient());
        assert!(ConfluenceError::Server { status: 502 }.is_transient());
        assert!(ConfluenceError::Network { reason: "x".into() }.is_transient());
        assert!(ConfluenceError::Token(TokenError::Server { status: 500 }).is_transient());
        assert!(!ConfluenceError::NotFound.is_transient());
        assert!(!ConfluenceError::Forbidden.is_transient());
        assert!(!ConfluenceError::Token(TokenError::InvalidGrant).is_transient());
        assert!(!ConfluenceError::Token(TokenError::NoActAsUser).is_transient());
    }

    #[test]
    fn messages_say_what_happened_and_how_long_to_wait() {
        let e = ConfluenceError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            e.to_string(),
            "rate limited by Confluence (429), asked to wait 30 s"
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
        assert!(
            TokenError::NoActAsUser
                .to_string()
                .contains("installed without ACT_AS_USER")
        );
        let r = TokenError::Rejected {
            status: 401,
            error: Some("invalid_client".into()),
        };
        assert_eq!(
            r.to_string(),
            "the authorization server refused the token request (401, invalid_client)"
        );
    }
}
