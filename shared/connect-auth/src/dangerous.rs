//! Reading a token WITHOUT verifying it.
//!
//! Fenced off here so that every use is visible in review. The issuer is read unverified only to
//! find which secret to verify with; nothing read here may be trusted or acted on.

use crate::claims::RawClaims;
use crate::error::AuthError;
use crate::token::{self, JoseHeader};

/// The `iss` claim, read without checking the signature: use it only to look up the key.
pub fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    let segments = token::split(token)?;
    let bytes = token::decode_segment(segments.claims, "claims are not base64url")?;
    issuer_from_json(&bytes)
}

fn issuer_from_json(claims: &[u8]) -> Result<String, AuthError> {
    #[derive(serde::Deserialize)]
    struct IssuerOnly {
        iss: Option<String>,
    }
    let claims: IssuerOnly = serde_json::from_slice(claims)
        .map_err(|_| AuthError::Malformed("claims are not a JSON object"))?;
    claims
        .iss
        .filter(|iss| !iss.is_empty())
        .ok_or(AuthError::MissingClaim("iss"))
}

/// A token's claims segment, decoded and read once, unverified: the issuer to find the key by, and
/// the claims for the verifier to check once the signature holds (and only then).
pub(crate) struct UnverifiedClaims {
    /// The claims as the verifier reads them, or why they do not read: that error is given only
    /// once the signature holds, as when the claims were read after it.
    claims: Result<RawClaims, AuthError>,
    /// The issuer as [`unverified_issuer`] reads it, kept when `claims` did not read.
    issuer: Option<String>,
}

impl UnverifiedClaims {
    /// Fails where [`unverified_issuer`] fails, with the same error.
    pub(crate) fn read(token: &str) -> Result<Self, AuthError> {
        let segments = token::split(token)?;
        let bytes = token::decode_segment(segments.claims, "claims are not base64url")?;
        let claims = RawClaims::from_json(&bytes);
        let issuer = match &claims {
            // Claims that read as the verifier's are a JSON object whose `iss` is a string or
            // null: `unverified_issuer` reads the same `iss` from them.
            Ok(raw) => {
                raw.issuer().ok_or(AuthError::MissingClaim("iss"))?;
                None
            }
            Err(_) => Some(issuer_from_json(&bytes)?),
        };
        Ok(Self { claims, issuer })
    }

    /// The issuer, unverified: only to find the key by.
    pub(crate) fn issuer(&self) -> &str {
        match (&self.issuer, &self.claims) {
            (Some(issuer), _) => issuer,
            (None, Ok(raw)) => raw.issuer().unwrap_or_default(),
            (None, Err(_)) => "",
        }
    }

    /// The claims, to check once the signature holds.
    pub(crate) fn into_raw(self) -> Result<RawClaims, AuthError> {
        self.claims
    }
}

/// Header and claims, unverified, for diagnostics (`connect-jwt decode`).
pub fn decode_unverified(token: &str) -> Result<(JoseHeader, serde_json::Value), AuthError> {
    let header = token::header(token)?;
    let segments = token::split(token)?;
    let bytes = token::decode_segment(segments.claims, "claims are not base64url")?;
    let claims =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed("claims are not JSON"))?;
    Ok((header, claims))
}
