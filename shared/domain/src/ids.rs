//! Parse-don't-validate identifiers: once a value has one of these types it is known to be well formed,
//! so stores can build keys from it without re-checking.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// The tenant's `clientKey` from the install payload (also the `iss` of its tokens).
///
/// Non-empty, at most 256 characters, no control characters: the stores use it inside keys and
/// separate it from the rest of a key with a control character.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientKey(String);

impl ClientKey {
    /// Longest accepted clientKey, in characters.
    pub const MAX_CHARS: usize = 256;

    /// Where the app's own partitions begin (the personal data report schedule): no clientKey
    /// starts with it, so no tenant's partition can be one of them.
    pub const RESERVED_PREFIX: char = '#';

    /// Parses a clientKey.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        let value = value.into();
        check_text("clientKey", &value, Self::MAX_CHARS)?;
        if value.starts_with(Self::RESERVED_PREFIX) {
            return Err(ParseError::new("clientKey", "starts with `#`"));
        }
        Ok(Self(value))
    }

    /// The clientKey as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key the deployment's own settings (its default edit rules) are kept under: `#DEPLOYMENT`,
    /// which no tenant can have (a clientKey never starts with [`Self::RESERVED_PREFIX`]), so the
    /// settings port keeps it like a tenant's without any tenant reaching it.
    pub fn deployment() -> Self {
        Self("#DEPLOYMENT".to_owned())
    }

    /// A value already known to pass [`Self::parse`] (an installation id's ARI).
    pub(crate) fn from_checked(value: String) -> Self {
        debug_assert!(check_text("clientKey", &value, Self::MAX_CHARS).is_ok());
        Self(value)
    }
}

/// An Atlassian accountId: non-empty, at most 128 characters of `[A-Za-z0-9:_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Longest accepted accountId, in characters.
    pub const MAX_CHARS: usize = 128;

    /// Parses an accountId.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ParseError::new("accountId", "is empty"));
        }
        if value.len() > Self::MAX_CHARS {
            return Err(ParseError::new("accountId", "is too long"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
        {
            return Err(ParseError::new(
                "accountId",
                "has a character outside [A-Za-z0-9:_-]",
            ));
        }
        Ok(Self(value))
    }

    /// The accountId as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What an audit record names in place of an account Atlassian reported closed. Not an
    /// accountId Atlassian issues (those are 24 hex digits, or `<digits>:<uuid>`), so it never
    /// stands for a real person.
    pub fn erased() -> Self {
        Self(Self::ERASED.to_owned())
    }

    /// The text of [`Self::erased`].
    pub const ERASED: &'static str = "erased-account";
}

/// A Confluence page id: 1 to 20 ASCII digits (a u64 in decimal, kept as text as Confluence sends it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PageId(String);

impl PageId {
    /// Parses a page id.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        let value = value.into();
        if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new("pageId", "is not 1 to 20 ASCII digits"));
        }
        Ok(Self(value))
    }

    /// The page id in decimal.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key of an idempotency mark (a webhook event or an edit job), unique within a tenant.
///
/// Non-empty, at most 256 characters, no control characters. Build it from ids, never from
/// personal data: it is stored in plain text inside a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Longest accepted key, in characters (DynamoDB sort keys stop at 1024 bytes).
    pub const MAX_CHARS: usize = 256;

    /// Parses an idempotency key.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        let value = value.into();
        check_text("idempotency key", &value, Self::MAX_CHARS)?;
        Ok(Self(value))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_text(what: &'static str, value: &str, max_chars: usize) -> Result<(), ParseError> {
    if value.is_empty() {
        return Err(ParseError::new(what, "is empty"));
    }
    if value.chars().count() > max_chars {
        return Err(ParseError::new(what, "is too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(ParseError::new(what, "contains a control character"));
    }
    Ok(())
}

macro_rules! string_newtype_impls {
    ($($name:ident),*) => {$(
        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    )*};
}

string_newtype_impls!(ClientKey, AccountId, PageId, IdempotencyKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_accepts_uuid_like_keys_and_rejects_bad_ones() {
        assert!(ClientKey::parse("8b1b2c3d-0000-4000-8000-123456789abc").is_ok());
        assert!(ClientKey::parse("").is_err());
        assert!(ClientKey::parse("a\u{0}b").is_err());
        assert!(ClientKey::parse("a\nb").is_err());
        assert!(ClientKey::parse("x".repeat(256)).is_ok());
        assert!(ClientKey::parse("x".repeat(257)).is_err());
        // The app's own partitions start with `#`.
        assert!(ClientKey::parse("#REPORT#01").is_err());
        assert!(ClientKey::parse(ClientKey::deployment().as_str()).is_err());
        assert!(ClientKey::parse("a#b").is_ok());
    }

    #[test]
    fn account_id_allows_only_its_alphabet() {
        assert!(AccountId::parse("557058:f5a1c2d3-aaaa-bbbb-cccc-0123456789ab").is_ok());
        assert!(AccountId::parse("5b10ac8d82e05b22cc7d4ef5").is_ok());
        assert!(AccountId::parse("").is_err());
        assert!(AccountId::parse("a b").is_err());
        assert!(AccountId::parse("a#b").is_err());
        assert!(AccountId::parse("a".repeat(129)).is_err());
    }

    #[test]
    fn page_id_is_one_to_twenty_digits() {
        assert!(PageId::parse("1").is_ok());
        assert!(PageId::parse("18446744073709551615").is_ok());
        assert!(PageId::parse("123456789012345678901").is_err());
        assert!(PageId::parse("").is_err());
        assert!(PageId::parse("12a").is_err());
        assert!(PageId::parse("-1").is_err());
    }

    #[test]
    fn serde_rejects_a_malformed_id() {
        let ok: PageId = serde_json::from_str("\"42\"").unwrap();
        assert_eq!(ok.as_str(), "42");
        assert!(serde_json::from_str::<PageId>("\"4x2\"").is_err());
        assert!(serde_json::from_str::<ClientKey>("\"\"").is_err());
    }
}
