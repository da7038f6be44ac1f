//! What both adapter families share about the records that hold secrets: the row each becomes, and
//! the one way a domain value is sealed into that row and opened back.
//!
//! A [`TenantRow`] is a tenant at rest: the clientKey is in the row's key, not in the row; the shared
//! secret is sealed by a [`SecretCipher`] under the tenant's own context; the install payload has no
//! `sharedSecret`. A [`TokenRow`] is a cached access token at rest, sealed under its tenant and sort
//! key. An [`InstallationRow`] is a Forge installation at rest: its id is in the row's key, its
//! system token sealed under the installation's ARI and sort key, its `tenant_key` not stored at all
//! (it is resolved through the link on every read). Each family then has one codec for a row: the
//! embedded store keeps it as JSON (the serde form here, which is the file format), DynamoDB as item
//! attributes (`dynamo/tenants.rs`, `dynamo/tokens.rs`, `dynamo/forge.rs`).
//!
//! A [`ParkedRow`] is a parked job at rest, likewise shared. It holds no secret, so nothing in it is
//! sealed: like an audit record it may name an accountId (the queued job's `user`), and like one it
//! is kept in plain text under a retention TTL and never in a key. Its tenant and page are in the
//! row's key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use understudy_domain::{
    CachedToken, ClientKey, EditOutcome, FORGE_INSTALLATION_RETENTION_SECONDS, ForgeInstallation,
    InstallationId, PageId, ParkedJob, ParkedPage, StoreError, SystemToken, Tenant, TenantState,
    TokenCacheKey, redact_install_payload,
};

use crate::crypto::{SecretCipher, secret_context};
use crate::keys::{FORGE_INSTALLATION_SK, TENANT_SK, parked_expiry, token_sk};

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

/// A Forge installation as stored (field names are the embedded file's JSON and DynamoDB's
/// attribute names).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct InstallationRow {
    pub(crate) app_id: String,
    pub(crate) cloud_id: String,
    pub(crate) api_base_url: String,
    /// Ciphertext of the system token, bound to the installation ([`secret_context`] with its ARI
    /// and [`FORGE_INSTALLATION_SK`]).
    #[serde(with = "b64")]
    pub(crate) system_token: Vec<u8>,
    /// The stored token's `issued_at`: a token replaces it only when issued later.
    pub(crate) token_issued_at: i64,
    /// The stored token's `expires_at` (when the app stops using it, not the record's TTL).
    pub(crate) token_expires_at: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    /// The retention TTL: [`FORGE_INSTALLATION_RETENTION_SECONDS`] after the last record.
    pub(crate) expires_at: i64,
}

/// The context a Forge installation's system token is sealed under.
fn installation_context(id: &InstallationId) -> Vec<u8> {
    secret_context(&id.own_tenant_key(), FORGE_INSTALLATION_SK)
}

impl InstallationRow {
    /// The row of an installation recorded at `now`: token sealed, retention from `now`.
    /// (`seen.tenant_key` is not stored.)
    pub(crate) async fn seal(
        seen: &ForgeInstallation,
        now: i64,
        cipher: &dyn SecretCipher,
    ) -> Result<Self, StoreError> {
        let context = installation_context(&seen.id);
        Ok(Self {
            app_id: seen.app_id.clone(),
            cloud_id: seen.cloud_id.clone(),
            api_base_url: seen.api_base_url.clone(),
            system_token: cipher.seal(&seen.system_token.token, &context).await?,
            token_issued_at: seen.system_token.issued_at,
            token_expires_at: seen.system_token.expires_at,
            created_at: seen.created_at,
            updated_at: seen.updated_at,
            expires_at: now.saturating_add(FORGE_INSTALLATION_RETENTION_SECONDS),
        })
    }

    /// Whether the row is still within its retention at `now`.
    pub(crate) fn is_live(&self, now: i64) -> bool {
        self.expires_at > now
    }

    /// What recording `self` over `old` (the stored row, if live) stores: `old`'s `created_at`,
    /// and `old`'s token unless `self`'s was issued later. (The embedded store's rule; DynamoDB
    /// applies the same one in the database, `dynamo/forge.rs`.)
    #[cfg(feature = "embedded")]
    pub(crate) fn over(mut self, old: Option<Self>) -> Self {
        if let Some(old) = old {
            self.created_at = old.created_at;
            if old.token_issued_at >= self.token_issued_at {
                self.system_token = old.system_token;
                self.token_issued_at = old.token_issued_at;
                self.token_expires_at = old.token_expires_at;
            }
        }
        self
    }

    /// The installation `id` this row stores, its token opened, its tenant key the linked Connect
    /// tenant's (`link`) or else its own. A token sealed for another installation does not open
    /// ([`StoreError::Crypto`]).
    pub(crate) async fn open(
        self,
        id: &InstallationId,
        link: Option<ClientKey>,
        cipher: &dyn SecretCipher,
    ) -> Result<ForgeInstallation, StoreError> {
        let token = cipher
            .open(&self.system_token, &installation_context(id))
            .await?;
        Ok(ForgeInstallation {
            id: id.clone(),
            tenant_key: link.unwrap_or_else(|| id.own_tenant_key()),
            app_id: self.app_id,
            cloud_id: self.cloud_id,
            api_base_url: self.api_base_url,
            system_token: SystemToken {
                token,
                issued_at: self.token_issued_at,
                expires_at: self.token_expires_at,
            },
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A parked job as stored (field names are the embedded file's JSON and DynamoDB's attribute
/// names); its tenant and page are the row's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ParkedRow {
    pub(crate) at_ms: i64,
    pub(crate) outcome: EditOutcome,
    pub(crate) reason: String,
    pub(crate) dead_lettered: bool,
    /// The queued job's JSON, as the queue wrote it (not read by the store).
    pub(crate) job: String,
    /// The retention TTL: [`understudy_domain::PARKED_JOB_RETENTION_SECONDS`] after `at_ms`.
    pub(crate) expires_at: i64,
}

impl ParkedRow {
    /// The row of `job`, its retention from `job.at_ms`.
    pub(crate) fn of(job: &ParkedJob) -> Self {
        Self {
            at_ms: job.at_ms,
            outcome: job.outcome,
            reason: job.reason.clone(),
            dead_lettered: job.dead_lettered,
            job: job.job.clone(),
            expires_at: parked_expiry(job.at_ms),
        }
    }

    /// Whether the row is still within its retention at `now`.
    pub(crate) fn is_live(&self, now: i64) -> bool {
        self.expires_at > now
    }

    /// The parked job this row stores for the tenant's page.
    pub(crate) fn into_job(self, client_key: ClientKey, page_id: PageId) -> ParkedJob {
        ParkedJob {
            client_key,
            page_id,
            at_ms: self.at_ms,
            outcome: self.outcome,
            reason: self.reason,
            dead_lettered: self.dead_lettered,
            job: self.job,
        }
    }
}

/// The page of a listing that read up to `limit + 1` live jobs, newest first: at most `limit`,
/// with `next` (the last one's position) only when one more was there.
pub(crate) fn parked_page(mut jobs: Vec<ParkedJob>, limit: usize) -> ParkedPage {
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    let next = match jobs.last() {
        Some(last) if more => Some((last.at_ms, last.page_id.clone())),
        _ => None,
    };
    ParkedPage { jobs, next }
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
