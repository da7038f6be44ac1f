//! A Forge installation: the Forge front door's tenant record (docs/protocol.md §17).
//!
//! A site that installs the Forge app is one installation, keyed by the `app.installationId` of
//! the Forge Invocation Tokens (an ARI that changes on a re-install, not on an upgrade). Its rules,
//! settings and audit live under a [`ClientKey`] like a Connect tenant's: the clientKey of the
//! Connect tenant it is linked to (a Connect `installed` payload that names the installation), or
//! else the installation id itself ([`InstallationId::own_tenant_key`]). So a site that moves from
//! Connect to Forge keeps its settings, rules and audit trail.

use std::fmt;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::error::ParseError;
use crate::ids::ClientKey;

/// How long the app trusts a Forge app system token after the invocation that carried it was
/// issued: Atlassian gives them "at least" two hours and sends no expiry the app may read (the
/// token is opaque). Five minutes are kept back for calls under way and for clock skew.
pub const SYSTEM_TOKEN_TRUSTED_SECONDS: i64 = 2 * 60 * 60 - 5 * 60;

/// How long an installation that sends nothing is kept: the hourly scheduled trigger renews it, and
/// no uninstall event reaches a Forge Remote, so one silent for this long is taken as gone.
pub const FORGE_INSTALLATION_RETENTION_SECONDS: i64 = 30 * 24 * 60 * 60;

/// A Forge installation id: `ari:cloud:ecosystem::installation/<id>`, `<id>` 1 to 64 characters
/// of `[A-Za-z0-9-]` (a UUID in practice). Parsed from a verified FIT only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstallationId(String);

impl InstallationId {
    /// The ARI prefix every installation id has.
    pub const PREFIX: &'static str = "ari:cloud:ecosystem::installation/";

    /// Parses an installation ARI.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        let value = value.into();
        let Some(id) = value.strip_prefix(Self::PREFIX) else {
            return Err(ParseError::new(
                "installationId",
                "is not an ari:cloud:ecosystem::installation/ ARI",
            ));
        };
        if id.is_empty()
            || id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ParseError::new(
                "installationId",
                "must end in 1 to 64 letters, digits or '-'",
            ));
        }
        Ok(Self(value))
    }

    /// The ARI as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant key of an installation that no Connect tenant is linked to: the ARI itself
    /// (it cannot collide with a Connect clientKey, which is never an ARI).
    pub fn own_tenant_key(&self) -> ClientKey {
        // At most 98 printable ASCII characters: always a valid clientKey.
        ClientKey::from_checked(self.0.clone())
    }
}

impl TryFrom<String> for InstallationId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl From<InstallationId> for String {
    fn from(id: InstallationId) -> Self {
        id.0
    }
}

impl fmt::Debug for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Forge app system token of an installation: sent with every invocation
/// (`x-forge-oauth-system`), opaque, stored only sealed.
#[derive(Clone)]
pub struct SystemToken {
    /// The token. Never parsed, never logged.
    pub token: SecretString,
    /// When the invocation that carried it was issued (the FIT's `iat`, unix seconds): of two
    /// tokens the later one wins.
    pub issued_at: i64,
    /// Until when it is used (unix seconds): `issued_at + SYSTEM_TOKEN_TRUSTED_SECONDS`.
    pub expires_at: i64,
}

impl SystemToken {
    /// A token carried by an invocation issued at `issued_at`.
    pub fn received(token: SecretString, issued_at: i64) -> Self {
        Self {
            token,
            issued_at,
            expires_at: issued_at.saturating_add(SYSTEM_TOKEN_TRUSTED_SECONDS),
        }
    }

    /// True when it may still be used at `now`.
    pub fn is_fresh(&self, now: i64) -> bool {
        self.expires_at > now
    }
}

impl fmt::Debug for SystemToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemToken")
            .field("token", &"[REDACTED]")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A Forge installation as stored. `Debug` shows no token; not `Serialize`: stores map it to
/// their own rows with the token sealed.
#[derive(Debug, Clone)]
pub struct ForgeInstallation {
    /// `app.installationId`.
    pub id: InstallationId,
    /// Where the installation's settings, rules and audit live: the linked Connect tenant's
    /// clientKey, else [`InstallationId::own_tenant_key`]. Stores resolve it on every read; a
    /// value given to a write is ignored.
    pub tenant_key: ClientKey,
    /// `app.id`: the app's ARI (the configured `FORGE_APP_ID`, which the FIT's `aud` matched).
    pub app_id: String,
    /// The site's cloudId (from `app.installation.contexts[]` or `apiBaseUrl`).
    pub cloud_id: String,
    /// `app.apiBaseUrl`, checked against `FORGE_API_HOSTS` before it was stored, e.g.
    /// `https://api.atlassian.com/ex/confluence/<cloudId>`. Confluence's REST API is under
    /// `<api_base_url>/wiki`.
    pub api_base_url: String,
    /// The latest system token received.
    pub system_token: SystemToken,
    /// First seen, unix seconds.
    pub created_at: i64,
    /// Last invocation, unix seconds.
    pub updated_at: i64,
}

impl ForgeInstallation {
    /// Confluence's base URL through Atlassian's API gateway: `<api_base_url>/wiki`.
    pub fn confluence_base_url(&self) -> String {
        format!("{}/wiki", self.api_base_url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_ids_are_installation_aris_only() {
        let id = InstallationId::parse(
            "ari:cloud:ecosystem::installation/0a1b2c3d-1111-2222-3333-444455556666",
        )
        .unwrap();
        assert_eq!(id.own_tenant_key().as_str(), id.as_str());
        for bad in [
            "",
            "0a1b2c3d",
            "ari:cloud:ecosystem::app/0a1b",
            "ari:cloud:ecosystem::installation/",
            "ari:cloud:ecosystem::installation/a/b",
            "ari:cloud:ecosystem::installation/a\u{1}",
        ] {
            assert!(InstallationId::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}{}", InstallationId::PREFIX, "a".repeat(65));
        assert!(InstallationId::parse(long).is_err());
    }

    #[test]
    fn a_system_token_is_trusted_for_less_than_two_hours_and_never_shown() {
        let token = SystemToken::received(SecretString::from("opaque-system-token"), 1_000);
        assert!(token.is_fresh(1_000 + SYSTEM_TOKEN_TRUSTED_SECONDS - 1));
        assert!(!token.is_fresh(1_000 + SYSTEM_TOKEN_TRUSTED_SECONDS));
        assert!(!format!("{token:?}").contains("opaque"));
    }
}
