//! connect-auth's tenant lookup, over the tenant store.

use async_trait::async_trait;
use connect_auth::{AuthError, SecretString, TenantSecrets};
use understudy_domain::{ClientKey, Tenant, TenantState, TenantStore};

/// Finds the tenant that signed a request. Unknown and uninstalled tenants are both "no tenant":
/// once uninstalled, requests signed with the old secret are refused (401).
#[derive(Debug)]
pub struct StoreTenants<'a, S: ?Sized> {
    store: &'a S,
    now: i64,
}

impl<'a, S: ?Sized> StoreTenants<'a, S> {
    /// A lookup at time `now` (unix seconds).
    pub fn new(store: &'a S, now: i64) -> Self {
        Self { store, now }
    }
}

#[async_trait]
impl<S: TenantStore + ?Sized> TenantSecrets for StoreTenants<'_, S> {
    type Tenant = Tenant;

    async fn find_tenant(&self, client_key: &str) -> Result<Option<Tenant>, AuthError> {
        let Ok(key) = ClientKey::parse(client_key) else {
            return Ok(None);
        };
        match self.store.get_tenant(&key, self.now).await {
            Ok(Some(tenant)) if tenant.state != TenantState::Uninstalled => Ok(Some(tenant)),
            Ok(_) => Ok(None),
            Err(err) => {
                tracing::warn!(client_key = %client_key, error = %err, "tenant lookup failed");
                Err(AuthError::LookupUnavailable)
            }
        }
    }

    fn shared_secret<'t>(&self, tenant: &'t Tenant) -> &'t SecretString {
        &tenant.shared_secret
    }
}
