//! The HS256 signature check of incoming tokens, done directly with `hmac` and `sha2`: the header
//! and the claims are each decoded once, and nothing is allocated for the signature.
//!
//! It accepts and refuses exactly what this crate did through `jsonwebtoken::decode` (with
//! `signature_only(Algorithm::HS256)`), with the same [`AuthError`] for each refusal, checked in
//! the same order (tests/hs256_differential.rs compares the two):
//!
//! 1. three dot-separated segments within [`crate::MAX_TOKEN_LEN`]; the header base64url, a JSON
//!    object naming `alg` exactly `HS256` ([`token::require_alg`]);
//! 2. an empty secret is a bad signature (jsonwebtoken refuses an empty HMAC key);
//! 3. the header as jsonwebtoken reads it: its `Header` type, and its `b64` and `crit` rules;
//! 4. the signature base64url, then the HMAC over `header.claims`, compared in constant time;
//! 5. the claims base64url, then JSON ([`RawClaims::from_json`]).
//!
//! Base64url is always `URL_SAFE_NO_PAD`, as in jsonwebtoken: no padding, no non-zero trailing bits.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeSliceError, Engine};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, Header};
use sha2::Sha256;

use crate::claims::RawClaims;
use crate::error::AuthError;
use crate::token;

/// The headers Atlassian's libraries and this crate write, base64url-encoded: Confluence's (Java)
/// `{"alg":"HS256","typ":"JWT"}`, atlassian-jwt's (Node) and jsonwebtoken's
/// `{"typ":"JWT","alg":"HS256"}`, and the bare `{"alg":"HS256"}`. Each passes every header rule
/// (unit test below), so a token carrying one of them byte for byte skips reading its header.
const PLAIN_HS256_HEADERS: [&str; 3] = [
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
    "eyJhbGciOiJIUzI1NiJ9",
];

/// [`token::require_alg`] for `HS256`, without reading the header when it is one of
/// [`PLAIN_HS256_HEADERS`] byte for byte (each passes it: unit test below).
pub(crate) fn require_hs256(token: &str) -> Result<(), AuthError> {
    let segments = token::split(token)?;
    if !PLAIN_HS256_HEADERS.contains(&segments.header) {
        token::require_alg_in(segments.header, "HS256")?;
    }
    Ok(())
}

/// An HMAC-SHA256 tag is 32 bytes.
const TAG_LEN: usize = 32;

/// Checks `token`'s header and HS256 signature with `secret`, and returns its claims as sent.
pub(crate) fn verify_signature(token: &str, secret: &[u8]) -> Result<RawClaims, AuthError> {
    check_signature(token, secret)?;
    let segments = token::split(token)?;
    let claims = URL_SAFE_NO_PAD
        .decode(segments.claims)
        .map_err(|_| not_base64url())?;
    RawClaims::from_json(&claims)
}

/// Steps 1 to 4 of [`verify_signature`]: `token`'s header and HS256 signature with `secret`, for a
/// caller that has read the claims already (the claims rules are still checked after this, in
/// the same order, by the caller).
pub(crate) fn check_signature(token: &str, secret: &[u8]) -> Result<(), AuthError> {
    let segments = token::split(token)?;
    let plain_header = PLAIN_HS256_HEADERS.contains(&segments.header);
    let header_json = if plain_header {
        None
    } else {
        Some(token::require_alg_in(segments.header, "HS256")?)
    };
    if secret.is_empty() {
        return Err(AuthError::BadSignature);
    }
    if let Some(json) = header_json {
        jsonwebtoken_header_rules(&json)?;
    }

    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| AuthError::BadSignature)?;
    // `split` found exactly three segments, so the signed message is everything before the last dot.
    let (message, _) = token
        .rsplit_once('.')
        .ok_or(AuthError::Malformed("not three dot-separated parts"))?;
    mac.update(message.as_bytes());
    let mut tag = [0_u8; TAG_LEN];
    match URL_SAFE_NO_PAD.decode_slice(segments.signature, &mut tag) {
        Ok(len) => mac
            .verify_slice(tag.get(..len).unwrap_or_default())
            .map_err(|_| AuthError::BadSignature)?,
        Err(DecodeSliceError::DecodeError(_)) => return Err(not_base64url()),
        // Longer than any HMAC-SHA256 tag: refused as a bad signature if it is base64url at all.
        Err(DecodeSliceError::OutputSliceTooSmall) => {
            URL_SAFE_NO_PAD
                .decode(segments.signature)
                .map_err(|_| not_base64url())?;
            return Err(AuthError::BadSignature);
        }
    }
    Ok(())
}

fn not_base64url() -> AuthError {
    AuthError::Malformed("a segment is not base64url")
}

/// The header rules jsonwebtoken applies on top of [`token::require_alg`]: the header must read as
/// its `Header` type (which types more fields and refuses an array), `b64` must be a boolean and
/// not `false`, and `crit` may only be `["b64"]` alongside a `b64`.
fn jsonwebtoken_header_rules(json: &[u8]) -> Result<(), AuthError> {
    let header: Header =
        serde_json::from_slice(json).map_err(|_| AuthError::Malformed("a segment is not JSON"))?;
    let undecodable = || AuthError::Malformed("token could not be decoded");
    let b64 = header
        .extras
        .get::<bool>("b64")
        .map_err(|_| undecodable())?;
    if b64 == Some(false) {
        return Err(undecodable());
    }
    if let Some(crit) = &header.crit
        && (crit.len() != 1 || crit.iter().any(|param| param != "b64") || b64.is_none())
    {
        return Err(undecodable());
    }
    // `require_alg` already required the same `alg`; jsonwebtoken checked it again.
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::WrongAlgorithm {
            expected: "the route's algorithm",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_plain_headers_pass_every_header_rule() {
        for header in PLAIN_HS256_HEADERS {
            let json = token::require_alg_in(header, "HS256").unwrap();
            jsonwebtoken_header_rules(&json).unwrap();
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["alg"], "HS256", "{header}");
            let fields = value.as_object().unwrap();
            assert!(fields.keys().all(|k| k == "alg" || k == "typ"), "{header}");
        }
    }
}
