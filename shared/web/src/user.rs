//! The caller of the app's own API (the page panel's and the admin page's): a person, through
//! either front door. A Connect context JWT (`context-qsh`, from `AP.context.getToken()`), or a
//! Forge UI invocation (`Authorization: Bearer <FIT>` naming the user, with the user's own token).
//! Either way the handler gets the tenant's key, the user, and the door to act through.

use std::sync::Arc;

use connect_auth::{Clock, SecretString};
use understudy_core::{Door, ForgeDoor, Invoker};
use understudy_domain::{
    AccountId, ClientKey, ForgeInstallation, ForgeInstallations, Tenant, TenantState, TenantStore,
};

use crate::auth::{Accept, Authenticator, ConnectAuthenticator};
use crate::forge::{ForgeFrontDoor, Invocation};
use crate::{ApiError, ApiRequest};

/// Where a verified user came from.
#[derive(Debug)]
pub enum UserSite {
    /// A Connect context JWT of this tenant.
    Connect(Arc<Tenant>),
    /// A Forge UI invocation of this installation, with the user's own token.
    Forge {
        /// The installation (its tenant key, its latest system token).
        installation: ForgeInstallation,
        /// `x-forge-oauth-user`.
        user_token: SecretString,
    },
}

impl UserSite {
    /// The key the tenant's settings, rules and audit live under.
    pub fn tenant_key(&self) -> &ClientKey {
        match self {
            Self::Connect(tenant) => &tenant.client_key,
            Self::Forge { installation, .. } => &installation.tenant_key,
        }
    }

    /// The door to Confluence for work done for `user` (who called): on Forge, acting as that
    /// user uses their own token.
    pub fn door<'a>(&'a self, user: &'a AccountId) -> Door<'a> {
        match self {
            Self::Connect(tenant) => Door::Connect(tenant),
            Self::Forge {
                installation,
                user_token,
            } => Door::Forge(ForgeDoor {
                installation,
                invoker: Some(Invoker {
                    account: user,
                    token: user_token,
                }),
            }),
        }
    }
}

/// The verified user of an API request: a Forge invocation when the request carries a `Bearer`
/// token and the Forge door is open, else a Connect context token. A Connect tenant that
/// disabled the app is refused (403).
pub async fn api_user<S, C>(
    connect: &ConnectAuthenticator<S, C>,
    forge: Option<&ForgeFrontDoor<S, C>>,
    request: &ApiRequest,
) -> Result<(UserSite, AccountId), ApiError>
where
    S: TenantStore + ForgeInstallations + ?Sized,
    C: Clock + Clone,
{
    let bearer = request
        .authorization()
        .and_then(|a| a.get(..7))
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "));
    match forge.filter(|_| bearer) {
        Some(forge) => {
            let caller = forge.authenticate(request, Invocation::User).await?;
            let (Some(user), Some(user_token)) = (caller.user, caller.user_token) else {
                return Err(ApiError::Unauthorized(
                    "the invocation names no user".into(),
                ));
            };
            Ok((
                UserSite::Forge {
                    installation: caller.installation,
                    user_token,
                },
                user,
            ))
        }
        None => {
            let caller = connect
                .authenticate(request, Accept::UserContextToken)
                .await?;
            if caller.tenant.state == TenantState::Disabled {
                return Err(ApiError::Forbidden(
                    "the app is disabled on this site".into(),
                ));
            }
            let Some(user) = caller.user else {
                return Err(ApiError::Unauthorized(
                    "the context token names no user".into(),
                ));
            };
            Ok((UserSite::Connect(caller.tenant), user))
        }
    }
}
