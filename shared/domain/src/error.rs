//! Errors of the domain layer. Messages name what went wrong, never a value that could be a secret.

/// A value from outside did not have the shape its type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {reason}")]
pub struct ParseError {
    what: &'static str,
    reason: &'static str,
}

impl ParseError {
    pub(crate) const fn new(what: &'static str, reason: &'static str) -> Self {
        Self { what, reason }
    }

    /// Which kind of value was rejected (`"clientKey"`, `"pageId"`, ...).
    pub fn what(&self) -> &'static str {
        self.what
    }
}

/// Why a store operation failed.
///
/// Messages never contain a secret, a token or a record's content: they are safe to log.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store (or the key service) could not be reached or refused the request after the SDK's
    /// retries. The functions answer 503: the caller may try again later.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What failed, e.g. the SDK's error code.
        reason: String,
    },
    /// A stored record could not be read back (missing attribute, bad JSON, bad id).
    #[error("corrupt {what} record")]
    Corrupt {
        /// Which kind of record, and which part of it, e.g. `"tenant (state)"`.
        what: String,
    },
    /// A secret could not be sealed or opened: wrong or unknown key, or a tampered ciphertext.
    #[error("secret could not be sealed or opened: {reason}")]
    Crypto {
        /// What failed, without key material or plaintext.
        reason: String,
    },
}

impl StoreError {
    /// Shorthand for [`StoreError::Unavailable`].
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
        }
    }

    /// Shorthand for [`StoreError::Corrupt`].
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into() }
    }

    /// Shorthand for [`StoreError::Crypto`].
    pub fn crypto(reason: impl Into<String>) -> Self {
        Self::Crypto {
            reason: reason.into(),
        }
    }
}
