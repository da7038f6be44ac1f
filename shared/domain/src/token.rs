//! Cached impersonation (OAuth 2.0 JWT bearer) access tokens.

use std::fmt;

use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::ids::AccountId;

/// Key of a cached access token within a tenant: `hex(SHA-256(accountId + "\n" + scopes))`.
///
/// Hashing keeps personal data (the accountId) out of the store's keys, which show up in consoles,
/// metrics and logs; the newline cannot occur in an accountId, so no two inputs share a preimage.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenCacheKey(String);

impl TokenCacheKey {
    /// The key for tokens of `account_id` with exactly these `scopes` (as sent to the OAuth server,
    /// e.g. `"READ WRITE"`).
    pub fn new(account_id: &AccountId, scopes: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(account_id.as_str().as_bytes());
        hasher.update(b"\n");
        hasher.update(scopes.as_bytes());
        Self(hex::encode(hasher.finalize()))
    }

    /// Rebuilds a key read back from a store: 64 lower-case hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(hex.to_owned()))
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenCacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenCacheKey({})", self.0)
    }
}

/// An access token from the OAuth server and when it stops working.
///
/// `Debug` redacts the token (via [`SecretString`]).
#[derive(Debug, Clone)]
pub struct CachedToken {
    /// The bearer token. Stored only as ciphertext.
    pub access_token: SecretString,
    /// Unix seconds after which the token must not be used; also the record's TTL.
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn token_key_is_a_sha256_hex_without_the_account_id() {
        let account = AccountId::parse("557058:abcdef").unwrap();
        let key = TokenCacheKey::new(&account, "READ WRITE");
        assert_eq!(key.as_str().len(), 64);
        assert!(!key.as_str().contains("557058"));
        assert_eq!(TokenCacheKey::from_hex(key.as_str()), Some(key.clone()));
        // Known answer: sha256("a\nb").
        let ab = TokenCacheKey::new(&AccountId::parse("a").unwrap(), "b");
        assert_eq!(
            ab.as_str(),
            "7e18f737311b2dc3b2f269dd78396b0351f14fb66efa879f768cb23181883c78"
        );
        assert_ne!(key, TokenCacheKey::new(&account, "READ"));
    }

    #[test]
    fn cached_token_debug_redacts_the_token() {
        let token = CachedToken {
            access_token: SecretString::from("at-123"),
            expires_at: 5,
        };
        assert!(!format!("{token:?}").contains("at-123"));
        assert_eq!(token.access_token.expose_secret(), "at-123");
    }
}
