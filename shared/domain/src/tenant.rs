//! A tenant: one Confluence site that installed the app, with the shared secret it sent.

use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ParseError;
use crate::ids::ClientKey;

/// How long an uninstalled tenant's data is kept before it expires by itself (30 days).
///
/// A site import creates a new tenant with a new clientKey, and a re-install within this window must
/// find the old settings again (docs/protocol.md §4).
pub const UNINSTALLED_RETENTION_SECONDS: i64 = 30 * 24 * 60 * 60;

/// Lifecycle state of a tenant, following the Connect lifecycle callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// `installed` was received (and no `enabled` yet).
    Installed,
    /// `enabled` was received.
    Enabled,
    /// `disabled` was received.
    Disabled,
    /// `uninstalled` was received; the record expires after [`UNINSTALLED_RETENTION_SECONDS`].
    Uninstalled,
}

impl TenantState {
    /// The stored spelling: `installed`, `enabled`, `disabled`, `uninstalled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installed => "installed",
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
            Self::Uninstalled => "uninstalled",
        }
    }

    /// The state an install leaves, given the live record's state (`None` for a new tenant): the
    /// installing caller's `given` state for a new tenant or a re-install after `uninstalled`,
    /// else the stored state. A re-install never enables (or disables) a tenant: only the
    /// `enabled` and `disabled` callbacks do.
    pub fn after_install(stored: Option<Self>, given: Self) -> Self {
        match stored {
            None | Some(Self::Uninstalled) => given,
            Some(kept) => kept,
        }
    }
}

impl FromStr for TenantState {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "installed" => Ok(Self::Installed),
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            "uninstalled" => Ok(Self::Uninstalled),
            _ => Err(ParseError::new("tenant state", "is not a known state")),
        }
    }
}

/// Whether [`crate::TenantStore::save_install`] created a tenant or replaced a known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// No live record existed for this clientKey (never seen, or its retention ran out).
    New,
    /// A record existed (possibly uninstalled within its retention): secret and URLs were replaced,
    /// `created_at` was kept.
    Updated,
}

/// A tenant record.
///
/// `Debug` shows neither the shared secret nor the install payload (never log a
/// shared secret or a full install body). The type is deliberately not `Serialize`: stores map it to
/// their own rows, with the secret sealed.
#[derive(Clone)]
pub struct Tenant {
    /// The tenant's clientKey: the partition key of everything it owns.
    pub client_key: ClientKey,
    /// The app's own key (`key` in the payload).
    pub app_key: String,
    /// Secret for HS256 tokens in both directions. Stored only as ciphertext.
    pub shared_secret: SecretString,
    /// Confluence base URL, e.g. `https://site.atlassian.net/wiki`.
    pub base_url: String,
    /// The URL users see (differs from `base_url` with a custom domain).
    pub display_url: String,
    /// `confluence` for this app.
    pub product_type: String,
    /// Present when the descriptor asks for `ACT_AS_USER`: needed for impersonation.
    pub oauth_client_id: Option<String>,
    /// Sent by some sites.
    pub cloud_id: Option<String>,
    /// Sent for apps on Forge.
    pub installation_id: Option<String>,
    /// The whole install payload as received, with `sharedSecret` removed
    /// (see [`redact_install_payload`]); unknown fields are kept.
    pub install_payload: Value,
    /// Lifecycle state.
    pub state: TenantState,
    /// First install, unix seconds. Kept across re-installs.
    pub created_at: i64,
    /// Last change, unix seconds.
    pub updated_at: i64,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("client_key", &self.client_key)
            .field("app_key", &self.app_key)
            .field("shared_secret", &"[REDACTED]")
            .field("base_url", &self.base_url)
            .field("display_url", &self.display_url)
            .field("product_type", &self.product_type)
            .field("oauth_client_id", &self.oauth_client_id)
            .field("cloud_id", &self.cloud_id)
            .field("installation_id", &self.installation_id)
            .field("install_payload", &"[OMITTED]")
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// An install payload that lacks a required field or has one of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("install payload: {reason}")]
pub struct InvalidInstall {
    reason: String,
}

impl Tenant {
    /// Builds a freshly installed tenant from an `installed` payload (after its signature was
    /// verified), keeping the payload minus `sharedSecret`.
    ///
    /// Required: `clientKey`, `key`, `sharedSecret`, `baseUrl`. `displayUrl` defaults to `baseUrl`,
    /// `productType` to `confluence`.
    pub fn from_install_payload(mut payload: Value, now: i64) -> Result<Self, InvalidInstall> {
        let text = |name: &str| -> Result<Option<String>, InvalidInstall> {
            match payload.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(InvalidInstall {
                    reason: format!("{name} is not a string"),
                }),
            }
        };
        let required = |name: &str| -> Result<String, InvalidInstall> {
            text(name)?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| InvalidInstall {
                    reason: format!("{name} is missing"),
                })
        };
        let client_key = ClientKey::parse(required("clientKey")?).map_err(|e| InvalidInstall {
            reason: e.to_string(),
        })?;
        let shared_secret = SecretString::from(required("sharedSecret")?);
        let base_url = required("baseUrl")?;
        let tenant = Self {
            client_key,
            app_key: required("key")?,
            shared_secret,
            display_url: text("displayUrl")?.unwrap_or_else(|| base_url.clone()),
            base_url,
            product_type: text("productType")?.unwrap_or_else(|| "confluence".to_owned()),
            oauth_client_id: text("oauthClientId")?,
            cloud_id: text("cloudId")?,
            installation_id: text("installationId")?,
            install_payload: Value::Null,
            state: TenantState::Installed,
            created_at: now,
            updated_at: now,
        };
        redact_install_payload(&mut payload);
        Ok(Self {
            install_payload: payload,
            ..tenant
        })
    }
}

/// Removes `sharedSecret` from an install payload, so the payload can be stored and shown as it was
/// received while the secret lives only encrypted in its own field. Stores call it again on save, so a
/// hand-built [`Tenant`] cannot leak the secret into the payload column either.
pub fn redact_install_payload(payload: &mut Value) {
    if let Value::Object(map) = payload {
        map.remove("sharedSecret");
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn payload() -> Value {
        json!({
            "key": "understudy",
            "clientKey": "ck-1",
            "sharedSecret": "s3cr3t-value-that-must-not-leak",
            "baseUrl": "https://site.atlassian.net/wiki",
            "productType": "confluence",
            "oauthClientId": "oauth-1",
            "eventType": "installed",
            "someFutureField": {"nested": true}
        })
    }

    #[test]
    fn install_payload_is_kept_without_its_shared_secret() {
        let tenant = Tenant::from_install_payload(payload(), 100).unwrap();
        assert_eq!(
            tenant.shared_secret.expose_secret(),
            "s3cr3t-value-that-must-not-leak"
        );
        assert!(tenant.install_payload.get("sharedSecret").is_none());
        assert_eq!(tenant.install_payload["someFutureField"]["nested"], true);
        assert_eq!(tenant.display_url, "https://site.atlassian.net/wiki");
        assert_eq!(tenant.oauth_client_id.as_deref(), Some("oauth-1"));
        assert_eq!(tenant.state, TenantState::Installed);
        assert_eq!((tenant.created_at, tenant.updated_at), (100, 100));
    }

    #[test]
    fn debug_of_a_tenant_shows_no_secret_and_no_payload() {
        let tenant = Tenant::from_install_payload(payload(), 1).unwrap();
        let shown = format!("{tenant:?}");
        assert!(!shown.contains("s3cr3t"));
        assert!(!shown.contains("someFutureField"));
        assert!(shown.contains("ck-1"));
    }

    #[test]
    fn install_without_a_secret_or_with_a_bad_field_is_rejected() {
        let mut p = payload();
        p.as_object_mut().unwrap().remove("sharedSecret");
        assert!(Tenant::from_install_payload(p, 1).is_err());
        let mut p = payload();
        p["baseUrl"] = json!(42);
        let err = Tenant::from_install_payload(p, 1).unwrap_err();
        assert!(err.to_string().contains("baseUrl"));
    }

    #[test]
    fn tenant_state_round_trips_through_its_spelling() {
        for s in [
            TenantState::Installed,
            TenantState::Enabled,
            TenantState::Disabled,
            TenantState::Uninstalled,
        ] {
            assert_eq!(s.as_str().parse::<TenantState>().unwrap(), s);
        }
        assert!("gone".parse::<TenantState>().is_err());
    }

    #[test]
    fn a_reinstall_keeps_a_live_state_and_revives_an_uninstalled_one() {
        use TenantState::{Disabled, Enabled, Installed, Uninstalled};
        assert_eq!(TenantState::after_install(None, Installed), Installed);
        assert_eq!(
            TenantState::after_install(Some(Uninstalled), Installed),
            Installed
        );
        for kept in [Installed, Enabled, Disabled] {
            assert_eq!(TenantState::after_install(Some(kept), Installed), kept);
        }
    }
}
