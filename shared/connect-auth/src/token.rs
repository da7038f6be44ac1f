//! Finding the token on a request, and the parts of a JWT read before its signature is checked.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::AuthError;

/// Longest token accepted. Atlassian's tokens are well under 2 KiB; a bound keeps parsing cheap.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Where a route accepts its token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: JWT <token>` or the `jwt` query parameter: lifecycle callbacks, webhooks and
    /// iframe loads (Confluence puts the token in the iframe's URL).
    HeaderOrQuery,
    /// `Authorization: JWT <token>` only: the app's own API, called with `AP.context.getToken()`.
    /// Any `jwt` query parameter is refused ([`AuthError::TokenInQuery`]), even one equal to the
    /// header's token, so that no caller gets used to putting API tokens in URLs (logs, `Referer`).
    HeaderOnly,
}

/// Finds the token: `Authorization: JWT <token>` (exact prefix, one space) or the `jwt` query
/// parameter (iframe loads). Both present and different: refused, so a proxy cannot smuggle a second
/// identity past the one it checked. The same as [`extract_token_from`] with
/// [`TokenSource::HeaderOrQuery`].
pub fn extract_token<'a>(
    authorization: Option<&'a str>,
    raw_query: &'a str,
) -> Result<&'a str, AuthError> {
    extract_token_from(TokenSource::HeaderOrQuery, authorization, raw_query)
}

/// Finds the token where `source` allows it.
pub fn extract_token_from<'a>(
    source: TokenSource,
    authorization: Option<&'a str>,
    raw_query: &'a str,
) -> Result<&'a str, AuthError> {
    let from_header = match authorization {
        Some(value) => Some(value.strip_prefix("JWT ").ok_or(AuthError::Malformed(
            "Authorization header is not `JWT <token>`",
        ))?),
        None => None,
    };
    let from_query = match source {
        TokenSource::HeaderOrQuery => query_token(raw_query)?,
        TokenSource::HeaderOnly if has_jwt_parameter(raw_query) => {
            return Err(AuthError::TokenInQuery);
        }
        TokenSource::HeaderOnly => None,
    };
    let token = match (from_header, from_query) {
        (Some(h), Some(q)) if h != q => return Err(AuthError::ConflictingTokens),
        (Some(h), _) => h,
        (None, Some(q)) => q,
        (None, None) => return Err(AuthError::MissingToken),
    };
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("token too long"));
    }
    Ok(token)
}

/// The `jwt` query parameter; two different ones are refused.
fn query_token(raw_query: &str) -> Result<Option<&str>, AuthError> {
    let mut from_query = None;
    for pair in raw_query.split('&') {
        if let Some(value) = pair.strip_prefix("jwt=") {
            if from_query.is_some_and(|seen| seen != value) {
                return Err(AuthError::ConflictingTokens);
            }
            from_query = Some(value);
        }
    }
    Ok(from_query)
}

/// Whether any parameter is named `jwt`, with or without a value, in any case, percent-encoded or
/// not: on a header-only route none may be.
fn has_jwt_parameter(raw_query: &str) -> bool {
    raw_query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        decoded.eq_ignore_ascii_case("jwt")
    })
}

/// The three segments of a compact JWS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segments<'a> {
    pub header: &'a str,
    pub claims: &'a str,
    pub signature: &'a str,
}

pub(crate) fn split(token: &str) -> Result<Segments<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(signature), None) => Ok(Segments {
            header,
            claims,
            signature,
        }),
        _ => Err(AuthError::Malformed("not three dot-separated parts")),
    }
}

pub(crate) fn decode_segment(segment: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed(what))
}

/// The JOSE header fields this crate looks at. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct JoseHeader {
    /// The signing algorithm as written (`HS256`, `RS256`, `none`, …).
    pub alg: String,
    /// The key id (signed installs only).
    #[serde(default)]
    pub kid: Option<String>,
    /// The token type, usually `JWT`.
    #[serde(default)]
    pub typ: Option<String>,
}

pub(crate) fn header(token: &str) -> Result<JoseHeader, AuthError> {
    let bytes = decode_segment(split(token)?.header, "header is not base64url")?;
    parse_header(&bytes)
}

fn parse_header(json: &[u8]) -> Result<JoseHeader, AuthError> {
    serde_json::from_slice(json).map_err(|_| AuthError::Malformed("header is not a JSON object"))
}

fn check_alg(header: &JoseHeader, expected: &'static str) -> Result<(), AuthError> {
    if header.alg != expected {
        return Err(AuthError::WrongAlgorithm { expected });
    }
    Ok(())
}

/// Requires the header to name exactly `expected`, before any key is chosen: an attacker never
/// gets to pick the algorithm (`none`, or HS256 keyed with a public key).
pub(crate) fn require_alg(token: &str, expected: &'static str) -> Result<JoseHeader, AuthError> {
    let header = header(token)?;
    check_alg(&header, expected)?;
    Ok(header)
}

/// [`require_alg`] on a header segment already split off the token; returns the header's JSON.
pub(crate) fn require_alg_in(segment: &str, expected: &'static str) -> Result<Vec<u8>, AuthError> {
    let json = decode_segment(segment, "header is not base64url")?;
    check_alg(&parse_header(&json)?, expected)?;
    Ok(json)
}
