//! What both adapter families share about the records that hold secrets: the row each becomes, and
//! the one way a domain value is sealed into that row and opened back.
//!
//! A [`TenantRow`] is a tenant at rest: the clientKey is in the row's key, not in the row; the shared
//! secret is sealed by a [`SecretCipher`] under the tenant's own context; the install payload has no
//! `sharedSecret`. A [`TokenRow`] is a cached access token at rest, sealed under its tenant and sort
//! key. Each family then has one codec for a row: the embedded store keeps it as JSON (the serde form
//! here, which is the file format), DynamoDB as item attributes (`dynamo/tenants.rs`,
//! `dynamo/tokens.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use understudy_domain::{
    CachedToken, ClientKey, StoreError, Tenant, TenantState, TokenCacheKey, redact_install_payload,
};

use crate::crypto::{SecretCipher, secret_context};
use crate::keys::{TENANT_SK, token_sk};

/// The tenant record as stored (field names are the embedded file's JSON and DynamoDB's
/// attribute names).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TenantRow {
    pub(crate) app_key: String,
    pub(crate) base_url: String,
    pub(crate) display_url: String,
    pub(crate) product_type: String,
    pub(crate) oauth_client_id: Option<String>,
    pub(crate) cloud_id: Option<String>,
    pub(crate) installation_id: Option<String>,
    pub(crate) install_payload: Value,
    pub(crate) state: TenantState,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// Ciphertext of the shared secret, bound to the tenant ([`secret_context`] with `TENANT`).
    #[serde(with = "b64")]
    pub(crate) shared_secret: Vec<u8>,
    /// The retention TTL, set once the tenant is uninstalled.
    pub(crate) expires_at: Option<i64>,
}

impl TenantRow {
    /// The row of a tenant as it is saved on install: secret sealed, payload redacted, no TTL.
    pub(crate) async fn seal(
        tenant: &Tenant,
        cipher: &dyn SecretCipher,
    ) -> Result<Self, StoreError> {
        let context = secret_context(&tenant.client_key, TENANT_SK);
        let shared_secret = cipher.seal(&tenant.shared_secret, &context).await?;
        let mut install_payload = tenant.install_payload.clone();
        redact_install_payload(&mut install_payload);
        Ok(Self {
            app_key: tenant.app_key.clone(),
            base_url: tenant.base_url.clone(),
            display_url: tenant.display_url.clone(),
            product_type: tenant.product_type.clone(),
            oauth_client_id: tenant.oauth_client_id.clone(),
            cloud_id: tenant.cloud_id.clone(),
            installation_id: tenant.installation_id.clone(),
            install_payload,
            state: tenant.state,
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
            shared_secret,
            expires_at: None,
        })
    }

    /// The tenant `client_key` that this row stores, its secret opened. A secret sealed for another
    /// tenant or record does not open ([`StoreError::Crypto`]).
    pub(crate) async fn open(
        self,
        client_key: &ClientKey,
        cipher: &dyn SecretCipher,
    ) -> Result<Tenant, StoreError> {
        let context = secret_context(client_key, TENANT_SK);
        let shared_secret = cipher.open(&self.shared_secret, &context).await?;
        Ok(Tenant {
            client_key: client_key.clone(),
            app_key: self.app_key,
            shared_secret,
            base_url: self.base_url,
            display_url: self.display_url,
            product_type: self.product_type,
            oauth_client_id: self.oauth_client_id,
            cloud_id: self.cloud_id,
            installation_id: self.installation_id,
            install_payload: self.install_payload,
            state: self.state,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A cached access token as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct TokenRow {
    /// Ciphertext of the token, bound to the tenant and the token's sort key.
    #[serde(with = "b64")]
    pub(crate) access_token: Vec<u8>,
    /// When the token expires (unix seconds); also the record's TTL.
    pub(crate) expires_at: i64,
}

impl TokenRow {
    /// The row of `token`, cached for the tenant under `key`.
    pub(crate) async fn seal(
        client_key: &ClientKey,
        key: &TokenCacheKey,
        token: &CachedToken,
        cipher: &dyn SecretCipher,
    ) -> Result<Self, StoreError> {
        let context = secret_context(client_key, &token_sk(key));
        Ok(Self {
            access_token: cipher.seal(&token.access_token, &context).await?,
            expires_at: token.expires_at,
        })
    }

    /// The token this row holds for the tenant under `key`, opened.
    pub(crate) async fn open(
        self,
        client_key: &ClientKey,
        key: &TokenCacheKey,
        cipher: &dyn SecretCipher,
    ) -> Result<CachedToken, StoreError> {
        let context = secret_context(client_key, &token_sk(key));
        Ok(CachedToken {
            access_token: cipher.open(&self.access_token, &context).await?,
            expires_at: self.expires_at,
        })
    }
}

/// Sealed bytes as standard base64 in JSON.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}
