//! The Forge OAuth tokens (`x-forge-oauth-system`, `x-forge-oauth-user`): opaque, never parsed,
//! never logged.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// An opaque bearer token from a Forge header.
///
/// Only its length (1 to [`OpaqueToken::MAX_LEN`] bytes) and its characters (visible ASCII, no
/// space) are checked; its content is never parsed. `Debug` is redacted and there is no `Display`.
#[derive(Clone)]
pub struct OpaqueToken(SecretString);

impl OpaqueToken {
    /// The longest token accepted: 8 KiB.
    pub const MAX_LEN: usize = 8 * 1024;

    /// The token in a header's value, or `None` when the header is absent, empty, too long or not
    /// visible ASCII.
    pub fn from_header(value: Option<&str>) -> Option<Self> {
        let value = value?;
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(SecretString::from(value.to_owned())))
    }

    /// The token itself, to send as `Authorization: Bearer …` or to seal for storage.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueToken(<redacted>)")
    }
}
