//! One error type, one variant per reason a token is refused.
//!
//! Messages are short and safe to return to the caller: they never contain a token, a claim value
//! chosen by the caller, or a secret.

/// What [`AuthError::UnknownIssuer`] and [`AuthError::BadSignature`] both say.
pub const UNVERIFIABLE_MESSAGE: &str = "JWT could not be verified";

/// Why a token was refused, or why it could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: JWT …` header and no `jwt` query parameter.
    #[error("no JWT in the Authorization header or the jwt query parameter")]
    MissingToken,
    /// A `jwt` query parameter on a route that takes its token from the `Authorization` header
    /// only (the app's API): tokens in URLs end up in logs and `Referer` headers.
    #[error("token must be in the Authorization header")]
    TokenInQuery,
    /// The header and the query parameter carry two different tokens.
    #[error("two different JWTs on one request")]
    ConflictingTokens,
    /// Not three base64url parts, or a header or claims segment that is not the expected JSON.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than the one this check accepts (`none`, `HS512`, …).
    #[error("JWT algorithm not accepted here (expected {expected})")]
    WrongAlgorithm {
        /// The algorithm this check requires.
        expected: &'static str,
    },
    /// `iss` names no installed tenant.
    ///
    /// Displays exactly as [`AuthError::BadSignature`] does: a caller must not learn from a refusal
    /// which clientKeys are installed. The variant stays distinct for logs and tests.
    #[error("{}", UNVERIFIABLE_MESSAGE)]
    UnknownIssuer,
    /// The signature does not verify with the key of the claimed issuer.
    ///
    /// Displays exactly as [`AuthError::UnknownIssuer`] does (see there).
    #[error("{}", UNVERIFIABLE_MESSAGE)]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("JWT expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("JWT not yet valid")]
    NotYetValid,
    /// `exp - iat` exceeds the longest lifetime the route accepts (context JWTs on the app's API).
    #[error("JWT lifetime is longer than this route accepts")]
    LifetimeTooLong,
    /// `iat` lies further in the past than the longest lifetime (plus the leeway) the route accepts.
    #[error("JWT was issued too long ago")]
    IssuedTooLongAgo,
    /// A claim the protocol requires is absent or of the wrong type.
    #[error("JWT claim `{0}` is missing or not of the expected type")]
    MissingClaim(&'static str),
    /// The `qsh` claim is absent.
    #[error("JWT has no qsh claim")]
    MissingQsh,
    /// The `qsh` claim does not match the request as received.
    #[error("qsh does not match the request")]
    QshMismatch,
    /// A context token (`qsh = context-qsh`) on a route that requires a request-bound token.
    #[error("context JWT not accepted on this route")]
    ContextQshNotAllowed,
    /// `aud` does not name this app.
    #[error("JWT audience is not this app")]
    WrongAudience,
    /// The `kid` header is absent or not of a form a key URL may be built from.
    #[error("invalid or missing kid")]
    BadKid,
    /// The key server does not know the `kid`.
    #[error("no public key for this kid")]
    UnknownKey,
    /// The key server could not be reached or answered with an error: a dependency is down (503).
    #[error("install key server unavailable: {0}")]
    KeyUnavailable(String),
    /// The tenant lookup failed: a dependency is down (503).
    #[error("tenant lookup unavailable")]
    LookupUnavailable,
    /// Signing failed (a malformed key); never caused by a caller's input.
    #[error("could not sign the JWT: {0}")]
    Signing(&'static str),
}

impl AuthError {
    /// True when the token was not judged because a dependency is down: answer 503, not 401.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeyUnavailable(_) | Self::LookupUnavailable)
    }
}
