//! The Forge front door (docs/protocol.md §17): who is calling a `/forge/...` route or the edit
//! API through Forge, checked before anything is stored, queued or called.
//!
//! [`ForgeFrontDoor::authenticate`], in order:
//! 1. the Forge Invocation Token (`Authorization: Bearer <FIT>`): RS256 by `kid` from Forge's
//!    JWKS, `iss`, `aud` = the configured `FORGE_APP_ID`, times, `jti` (`forge-auth`); a JWKS that
//!    cannot be fetched is 503, every refusal 401;
//! 2. `app.id` is that same app, `app.installationId` an installation ARI;
//! 3. `app.apiBaseUrl` is https on a host of `FORGE_API_HOSTS`, and names a Confluence site
//!    (its cloudId);
//! 4. the app system token (`x-forge-oauth-system`) is there; for a user's invocation, the
//!    `principal` and the user's token (`x-forge-oauth-user`) too;
//! 5. only then: the installation is recorded (created, or its latest system token kept); a link
//!    to a Connect tenant is followed only when that tenant is the same site (its cloudId).

use std::sync::Arc;

use connect_auth::{Clock, SecretString};
use forge_auth::{FitVerifier, InvocationClaims, JwksSource, OpaqueToken};
use understudy_core::{TenantHosts, checked_tenant_key, confluence_site_ari};
use understudy_domain::{
    AccountId, ForgeInstallation, ForgeInstallations, InstallationId, SystemToken, TenantStore,
};
use url::Url;

use crate::config::ForgeSettings;
use crate::{ApiError, ApiRequest};

/// The header with the app system token.
pub const SYSTEM_TOKEN_HEADER: &str = "x-forge-oauth-system";
/// The header with the invoking user's token (UI invocations only).
pub const USER_TOKEN_HEADER: &str = "x-forge-oauth-user";

/// Whose invocation a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invocation {
    /// The app itself (product events, lifecycle events, scheduled triggers): no user needed.
    App,
    /// A user in Confluence's UI (`invokeRemote`): the FIT's `principal` and the user's token are
    /// required.
    User,
}

/// A verified Forge caller.
#[derive(Debug)]
pub struct ForgeCaller {
    /// The installation as stored after this invocation (its latest system token, its tenant key).
    pub installation: ForgeInstallation,
    /// The FIT's claims.
    pub claims: InvocationClaims,
    /// The invoking user (`principal`), for [`Invocation::User`].
    pub user: Option<AccountId>,
    /// The invoking user's token (`x-forge-oauth-user`), for [`Invocation::User`].
    pub user_token: Option<SecretString>,
}

/// Verifies Forge invocations and records their installations.
pub struct ForgeFrontDoor<S: ?Sized, C> {
    verifier: FitVerifier<Arc<dyn JwksSource>, C>,
    api_hosts: TenantHosts,
    store: Arc<S>,
    clock: C,
}

impl<S: ?Sized, C> std::fmt::Debug for ForgeFrontDoor<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeFrontDoor")
            .field("api_hosts", &self.api_hosts)
            .finish_non_exhaustive()
    }
}

impl<S, C> ForgeFrontDoor<S, C>
where
    S: ForgeInstallations + TenantStore + ?Sized,
    C: Clock + Clone,
{
    /// The front door `config` asks for: `None` when `FORGE_APP_ID` is unset (every Forge route
    /// then answers 404), else one fetching keys over HTTPS from `FORGE_JWKS_URL`.
    pub fn from_config(
        config: &crate::AppConfig,
        store: Arc<S>,
        clock: C,
    ) -> Result<Option<Self>, crate::ConfigError> {
        let Some(settings) = &config.forge else {
            return Ok(None);
        };
        Ok(Some(Self::new(
            settings,
            settings.jwks_source()?,
            store,
            clock,
        )))
    }

    /// A front door for the app `settings` names, with keys from `jwks`.
    pub fn new(
        settings: &ForgeSettings,
        jwks: Arc<dyn JwksSource>,
        store: Arc<S>,
        clock: C,
    ) -> Self {
        Self {
            verifier: FitVerifier::with_clock(settings.app_id.clone(), jwks, clock.clone()),
            api_hosts: settings.api_hosts.clone(),
            store,
            clock,
        }
    }

    /// The verified caller of `request`, its installation recorded; or 401 (in fixed words), or
    /// 503 when the JWKS or the store is down. Nothing is stored for a refused request.
    pub async fn authenticate(
        &self,
        request: &ApiRequest,
        invocation: Invocation,
    ) -> Result<ForgeCaller, ApiError> {
        let claims = self
            .verifier
            .verify(request.authorization())
            .await
            .map_err(|error| {
                if error.is_unavailable() {
                    ApiError::Unavailable(error.to_string())
                } else {
                    tracing::warn!(reason = %error, "a Forge invocation token was refused");
                    ApiError::Unauthorized(error.to_string())
                }
            })?;
        let refuse = |reason: &str| {
            tracing::warn!(reason, "a verified Forge invocation was refused");
            ApiError::Unauthorized(reason.to_owned())
        };
        if claims.app.id != self.verifier.app_id().as_str() {
            return Err(refuse("the FIT's app is not this app"));
        }
        let id = InstallationId::parse(claims.app.installation_id.as_str())
            .map_err(|_| refuse("the FIT's installationId is not an installation ARI"))?;
        let api_base_url = claims.app.api_base_url.trim_end_matches('/').to_owned();
        if self.api_hosts.allows(&api_base_url).is_err() {
            return Err(refuse(
                "the FIT's apiBaseUrl is not https on an allowed Forge API host",
            ));
        }
        let cloud_id = cloud_id(&claims, &api_base_url)
            .ok_or_else(|| refuse("the FIT names no Confluence site (cloudId)"))?;
        let system_token = header_token(request, SYSTEM_TOKEN_HEADER)
            .ok_or_else(|| refuse("no app system token (x-forge-oauth-system)"))?;
        let (user, user_token) = match invocation {
            Invocation::App => (None, None),
            Invocation::User => {
                let user = claims
                    .principal
                    .as_deref()
                    .and_then(|p| AccountId::parse(p).ok())
                    .ok_or_else(|| refuse("the FIT names no user (principal)"))?;
                let token = header_token(request, USER_TOKEN_HEADER)
                    .ok_or_else(|| refuse("no user token (x-forge-oauth-user)"))?;
                (Some(user), Some(token))
            }
        };
        let now = self.clock.now_unix();
        let seen = ForgeInstallation {
            tenant_key: id.own_tenant_key(),
            id,
            app_id: claims.app.id.clone(),
            cloud_id,
            api_base_url,
            system_token: SystemToken::received(system_token, claims.iat.min(now)),
            created_at: now,
            updated_at: now,
        };
        let mut installation = self.store.record_installation(&seen, now).await?;
        installation.tenant_key = checked_tenant_key(&*self.store, &installation, now).await?;
        Ok(ForgeCaller {
            installation,
            claims,
            user,
            user_token,
        })
    }
}

fn header_token(request: &ApiRequest, name: &str) -> Option<SecretString> {
    let value = request.headers.get(name)?.to_str().ok();
    OpaqueToken::from_header(value).map(|t| SecretString::from(t.expose().to_owned()))
}

/// The site's cloudId: from `app.installation.contexts[]`, else the last segment of an
/// `apiBaseUrl` of the form `.../ex/confluence/<cloudId>`; only a value that can name a site.
fn cloud_id(claims: &InvocationClaims, api_base_url: &str) -> Option<String> {
    let from_contexts = claims
        .app
        .contexts
        .iter()
        .filter(|c| {
            c.api_base_url
                .as_deref()
                .is_none_or(|u| u.trim_end_matches('/') == api_base_url)
        })
        .find_map(|c| c.cloud_id.clone());
    let from_url = || {
        let url = Url::parse(api_base_url).ok()?;
        let mut segments = url.path_segments()?;
        match (segments.next(), segments.next(), segments.next()) {
            (Some("ex"), Some("confluence"), Some(id)) if segments.next().is_none() => {
                Some(id.to_owned())
            }
            _ => None,
        }
    };
    from_contexts
        .or_else(from_url)
        .filter(|id| confluence_site_ari(id).is_some())
}
