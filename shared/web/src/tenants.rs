//! connect-auth's tenant lookup, over the tenant store.

use async_trait::async_trait;
use connect_auth::{
    AuthError, Clock, Hs256Verifier, QshMode, SecretString, TenantSecrets, Verified, extract_token,
};
use understudy_domain::{ClientKey, Tenant, TenantState, TenantStore};

use crate::{ApiError, ApiRequest};

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

/// Verifies requests that tenants sign with their shared secret (HS256): the token from the
/// request, the tenant from the store, the qsh per `mode`. One place for what the lifecycle, webhook
/// and edit API routes all do first.
#[derive(Debug, Clone)]
pub struct TenantAuth<C> {
    verifier: Hs256Verifier<C>,
    clock: C,
    base_path: String,
}

impl<C: Clock + Clone> TenantAuth<C> {
    /// Verifies against `clock`, for an app whose base URL has the path `base_path`.
    pub fn new(clock: C, base_path: &str) -> Self {
        Self {
            verifier: Hs256Verifier::with_clock(clock.clone()),
            clock,
            base_path: base_path.to_owned(),
        }
    }

    /// The verified tenant and claims of `request`, or why not (401, or 503 when the store is down).
    pub async fn verify<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        request: &ApiRequest,
        mode: QshMode,
    ) -> Result<Verified<Tenant>, ApiError> {
        let token = extract_token(request.authorization(), &request.raw_query)?;
        let tenants = StoreTenants::new(store, self.clock.now_unix());
        let parts = request.parts(&self.base_path);
        Ok(self
            .verifier
            .verify_request(&tenants, token, &parts, mode)
            .await?)
    }
}
