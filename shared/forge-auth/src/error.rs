//! One error type, one variant per reason a Forge Invocation Token is refused.
//!
//! Messages are fixed words, safe to return to the caller: they never contain the token, a claim
//! value chosen by the caller, or a key.

/// Why a FIT was refused, or why it could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    MissingHeader,
    /// An `Authorization` header that is not exactly `Bearer <token>`.
    #[error("Authorization header is not `Bearer <token>`")]
    GarbledHeader,
    /// Not three base64url parts, or a header or claims segment that is not the expected JSON.
    #[error("malformed FIT: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than RS256 (`none`, `HS256`, …). Checked before any key
    /// is chosen.
    #[error("FIT algorithm not accepted (expected RS256)")]
    WrongAlgorithm,
    /// The header has no `kid`, or one of a form no JWKS uses.
    #[error("FIT has no usable kid")]
    MissingKid,
    /// No key of the JWKS has this `kid` (and the JWKS was not re-fetched, or did not have it).
    #[error("no key for this kid")]
    UnknownKid,
    /// The signature does not verify with the key the `kid` names.
    #[error("FIT signature does not verify")]
    BadSignature,
    /// `iss` is not `forge/invocation-token`.
    #[error("FIT issuer is not Forge")]
    WrongIssuer,
    /// `aud` does not name this app.
    #[error("FIT audience is not this app")]
    WrongAudience,
    /// `exp` is in the past (beyond the leeway).
    #[error("FIT expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("FIT not yet valid")]
    NotYetValid,
    /// A claim the app requires is absent or of the wrong type (the claim's name, fixed by this
    /// crate).
    #[error("FIT claim `{0}` is missing or not of the expected type")]
    MissingClaim(&'static str),
    /// The JWKS could not be fetched and the `kid` is not cached: a dependency is down. The caller
    /// answers 503 (Forge retries), never 500.
    #[error("Forge JWKS unavailable")]
    JwksUnavailable,
}

impl FitError {
    /// True when the token could not be checked because the JWKS is unreachable (answer 503);
    /// false for every refusal of the token itself (answer 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::JwksUnavailable)
    }

    /// The HTTP status a route answers with: 503 when [`Self::is_unavailable`], else 401.
    pub fn http_status(&self) -> u16 {
        if self.is_unavailable() { 503 } else { 401 }
    }
}
