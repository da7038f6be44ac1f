//! The claims of a Connect JWT.

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Every audience named.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice = match self {
            Self::One(one) => std::slice::from_ref(one),
            Self::Many(many) => many.as_slice(),
        };
        slice.iter().map(String::as_str)
    }
}

/// The verified claims of a token. `iss`, `iat` and `exp` are always present once verified. `qsh`
/// is a Connect rule, not every token's: the Connect verifiers require and check it
/// ([`crate::QshMode`]), so a verified Connect token always has one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer: the tenant's clientKey on tokens from Confluence.
    pub iss: String,
    /// The acting user's accountId, when a user is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The audience; absent on tokens from Confluence, present on signed installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// The query-string hash, or `context-qsh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qsh: Option<String>,
    /// Confluence's `context` claim (user, license, …), kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
}

/// The claims as sent, before the required ones are known to be there.
#[derive(Debug, Deserialize)]
pub(crate) struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    qsh: Option<String>,
    context: Option<serde_json::Value>,
}

impl RawClaims {
    /// Reads the claims segment's JSON, which must be an object. serde would also fill this struct
    /// from an eight-element array; jsonwebtoken's own claim reading refused every array, and the
    /// HS256 verifier, which no longer goes through jsonwebtoken, refuses them the same way.
    pub(crate) fn from_json(json: &[u8]) -> Result<Self, AuthError> {
        let not_json = || AuthError::Malformed("a segment is not JSON");
        // JSON whitespace, as serde_json skips it.
        let first = json
            .iter()
            .find(|b| !matches!(b, b' ' | b'\n' | b'\t' | b'\r'));
        if first == Some(&b'[') {
            return Err(not_json());
        }
        serde_json::from_slice(json).map_err(|_| not_json())
    }

    /// The `iss` claim as sent, when it is a non-empty string.
    pub(crate) fn issuer(&self) -> Option<&str> {
        self.iss.as_deref().filter(|iss| !iss.is_empty())
    }

    /// Requires `iss`, `iat` and `exp` (Atlassian's Java reader requires `exp` and `iat`;
    /// the Node one does not, and so accepts tokens that never expire).
    pub(crate) fn into_claims(self) -> Result<Claims, AuthError> {
        Ok(Claims {
            iss: self
                .iss
                .filter(|s| !s.is_empty())
                .ok_or(AuthError::MissingClaim("iss"))?,
            iat: self.iat.ok_or(AuthError::MissingClaim("iat"))?,
            exp: self.exp.ok_or(AuthError::MissingClaim("exp"))?,
            qsh: self.qsh,
            sub: self.sub,
            aud: self.aud,
            nbf: self.nbf,
            context: self.context,
        })
    }
}
