//! Reading a token WITHOUT verifying it.
//!
//! Fenced off here so that every use is visible in review. The issuer is read unverified only to
//! find which secret to verify with; nothing read here may be trusted or acted on.

use crate::error::AuthError;
use crate::token::{self, JoseHeader};

/// The `iss` claim, read without checking the signature: use it only to look up the key.
pub fn unverified_issuer(token: &str) -> Result<String, AuthError> {
    #[derive(serde::Deserialize)]
    struct IssuerOnly {
        iss: Option<String>,
    }
    let segments = token::split(token)?;
    let bytes = token::decode_segment(segments.claims, "claims are not base64url")?;
    let claims: IssuerOnly = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("claims are not a JSON object"))?;
    claims
        .iss
        .filter(|iss| !iss.is_empty())
        .ok_or(AuthError::MissingClaim("iss"))
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
