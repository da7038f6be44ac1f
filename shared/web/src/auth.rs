//! Authentication as a port: each route asks one [`Authenticator`] for the [`Caller`] of a request,
//! saying only what kind of proof the route accepts ([`Accept`]). The handler never sees a token,
//! a qsh or a secret; it gets the verified tenant, the user if there is one, and the credential the
//! caller came with.
//!
//! Today the one implementation is [`ConnectAuthenticator`]: Connect JWTs signed with the tenant's
//! shared secret (HS256), the qsh checked as the route requires. A second front door (a Forge
//! invocation token: RS256 from a JWKS, no qsh, the tenant named by an installation id) is a second
//! credential kind here and a second tenant lookup, and no handler changes.

use std::sync::Arc;

use async_trait::async_trait;
use connect_auth::{Clock, QshMode};
use understudy_domain::{AccountId, Tenant, TenantStore};

use crate::tenant_cache::TenantCache;
use crate::tenants::TenantAuth;
use crate::{ApiError, ApiRequest};

/// What proof of identity a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// A token signed for this one request (lifecycle callbacks, webhooks, iframe page loads): a
    /// Connect JWT whose qsh is the hash of the request, in the `Authorization` header or the `jwt`
    /// query parameter. Never a context token (CVE-2021-26073).
    RequestToken,
    /// A token from the app's own UI for its API: a Connect context JWT (`context-qsh`), in the
    /// `Authorization` header only, short-lived, naming a user.
    UserContextToken,
}

/// The credential a caller was verified by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A Connect JWT bound to the request by its qsh.
    ConnectRequestJwt,
    /// A Connect context JWT (`qsh = context-qsh`).
    ConnectContextJwt,
}

/// A verified caller.
#[derive(Debug)]
pub struct Caller {
    /// The tenant whose secret verified the request. Every read and write is keyed by it. Shared
    /// with the process's [`crate::TenantCache`].
    pub tenant: Arc<Tenant>,
    /// The user the request is made for, when the credential names one (`sub`). Always present for
    /// [`Accept::UserContextToken`].
    pub user: Option<AccountId>,
    /// How the caller proved who it is.
    pub credential: Credential,
}

/// Verifies who is calling.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The caller of `request`, or why not: 401 for a credential that does not verify (in fixed
    /// words that say nothing about which tenants exist), 503 when a dependency is down.
    async fn authenticate(&self, request: &ApiRequest, accept: Accept) -> Result<Caller, ApiError>;
}

/// Connect JWTs over the tenant store.
pub struct ConnectAuthenticator<S: ?Sized, C> {
    store: Arc<S>,
    tokens: TenantAuth<C>,
}

impl<S: ?Sized, C> std::fmt::Debug for ConnectAuthenticator<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectAuthenticator")
            .finish_non_exhaustive()
    }
}

impl<S: TenantStore + ?Sized, C: Clock + Clone> ConnectAuthenticator<S, C> {
    /// Verifies against `store`'s tenants and `clock`, for an app whose base URL has the path
    /// `base_path` (what the qsh is computed relative to).
    pub fn new(store: Arc<S>, clock: C, base_path: &str) -> Self {
        Self {
            store,
            tokens: TenantAuth::new(clock, base_path),
        }
    }

    /// The same, reading tenants through the process's shared `cache` (the local app shares one
    /// between its handlers, so that a lifecycle or settings write reaches every one at once).
    pub fn with_tenant_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.tokens = self.tokens.with_cache(cache);
        self
    }

    /// The cache tenants are read through: drop a tenant from it after changing it.
    pub fn tenant_cache(&self) -> &Arc<TenantCache> {
        self.tokens.cache()
    }
}

#[async_trait]
impl<S, C> Authenticator for ConnectAuthenticator<S, C>
where
    S: TenantStore + ?Sized,
    C: Clock + Clone,
{
    async fn authenticate(&self, request: &ApiRequest, accept: Accept) -> Result<Caller, ApiError> {
        let (mode, credential) = match accept {
            Accept::RequestToken => (QshMode::Computed, Credential::ConnectRequestJwt),
            Accept::UserContextToken => (QshMode::Context, Credential::ConnectContextJwt),
        };
        let verified = self.tokens.verify(&*self.store, request, mode).await?;
        let user = match (verified.claims.sub.as_deref(), accept) {
            (Some(sub), _) => match AccountId::parse(sub) {
                Ok(user) => Some(user),
                Err(_) if accept == Accept::UserContextToken => {
                    return Err(ApiError::Unauthorized(
                        "the token's user is not an accountId".into(),
                    ));
                }
                Err(_) => None,
            },
            (None, Accept::UserContextToken) => {
                return Err(ApiError::Unauthorized(
                    "the context token names no user".into(),
                ));
            }
            (None, Accept::RequestToken) => None,
        };
        Ok(Caller {
            tenant: verified.tenant,
            user,
            credential,
        })
    }
}
