//! connect-auth's tenant lookup, over the tenant store (through the process's [`TenantCache`]).

use std::sync::Arc;

use async_trait::async_trait;
use connect_auth::{
    AuthError, CONTEXT_TOKEN_MAX_LIFETIME_SECONDS, Clock, Hs256Verifier, QshMode, SecretString,
    TenantSecrets, TokenSource, Verified, extract_token_from,
};
use understudy_domain::{ClientKey, StoreError, Tenant, TenantState, TenantStore};

use crate::tenant_cache::TenantCache;
use crate::{ApiError, ApiRequest};

/// Finds the tenant that signed a request, through `cache` when there is one. Unknown and
/// uninstalled tenants are both "no tenant": once uninstalled, requests signed with the old secret
/// are refused (401).
#[derive(Debug)]
pub struct StoreTenants<'a, S: ?Sized> {
    store: &'a S,
    now: i64,
    cache: Option<&'a TenantCache>,
}

impl<'a, S: ?Sized> StoreTenants<'a, S> {
    /// A lookup at time `now` (unix seconds) that reads the store every time.
    pub fn new(store: &'a S, now: i64) -> Self {
        Self {
            store,
            now,
            cache: None,
        }
    }

    /// The same lookup through `cache`.
    pub fn cached(self, cache: &'a TenantCache) -> Self {
        Self {
            cache: Some(cache),
            ..self
        }
    }
}

/// A tenant read (however) as the verifier wants it: a live tenant, else none.
fn live(
    client_key: &str,
    read: Result<Option<Arc<Tenant>>, StoreError>,
) -> Result<Option<Arc<Tenant>>, AuthError> {
    match read {
        Ok(Some(tenant)) if tenant.state != TenantState::Uninstalled => Ok(Some(tenant)),
        Ok(_) => Ok(None),
        Err(err) => {
            tracing::warn!(client_key = %client_key, error = %err, "tenant lookup failed");
            Err(AuthError::LookupUnavailable)
        }
    }
}

#[async_trait]
impl<S: TenantStore + ?Sized> TenantSecrets for StoreTenants<'_, S> {
    type Tenant = Arc<Tenant>;

    async fn find_tenant(&self, client_key: &str) -> Result<Option<Arc<Tenant>>, AuthError> {
        let Ok(key) = ClientKey::parse(client_key) else {
            return Ok(None);
        };
        let read = match self.cache {
            Some(cache) => cache.tenant(self.store, &key, self.now).await,
            None => (self.store.get_tenant(&key, self.now).await).map(|t| t.map(Arc::new)),
        };
        live(client_key, read)
    }

    async fn find_tenant_again(&self, client_key: &str) -> Result<Option<Arc<Tenant>>, AuthError> {
        let (Some(cache), Ok(key)) = (self.cache, ClientKey::parse(client_key)) else {
            return Ok(None);
        };
        live(
            client_key,
            cache.reload_tenant(self.store, &key, self.now).await,
        )
    }

    fn shared_secret<'t>(&self, tenant: &'t Arc<Tenant>) -> &'t SecretString {
        &tenant.shared_secret
    }
}

/// Verifies requests that tenants sign with their shared secret (HS256): the token from the
/// request, the tenant from the store, the qsh per `mode`. One place for what the lifecycle, webhook
/// and edit API routes all do first.
///
/// - [`TenantAuth::verify`]: lifecycle callbacks, webhooks and iframe loads (token in the
///   `Authorization` header or the `jwt` query parameter, qsh per `mode`, no lifetime bound).
/// - [`TenantAuth::verify_api`]: the app's own API, called with context JWTs: token in the
///   `Authorization` header only, `qsh = context-qsh`, lifetime at most
///   [`CONTEXT_TOKEN_MAX_LIFETIME_SECONDS`] and issued no longer ago than that (plus the leeway).
///
/// Tenants are read through a [`TenantCache`]: one of its own, or the process's shared one
/// ([`TenantAuth::with_cache`]).
#[derive(Debug, Clone)]
pub struct TenantAuth<C> {
    verifier: Hs256Verifier<C>,
    api_verifier: Hs256Verifier<C>,
    clock: C,
    base_path: String,
    cache: Arc<TenantCache>,
}

impl<C: Clock + Clone> TenantAuth<C> {
    /// Verifies against `clock`, for an app whose base URL has the path `base_path`.
    pub fn new(clock: C, base_path: &str) -> Self {
        Self {
            verifier: Hs256Verifier::with_clock(clock.clone()),
            api_verifier: Hs256Verifier::with_clock(clock.clone())
                .max_lifetime(CONTEXT_TOKEN_MAX_LIFETIME_SECONDS),
            clock,
            base_path: base_path.to_owned(),
            cache: Arc::new(TenantCache::default()),
        }
    }

    /// The same, reading tenants through `cache` (shared with the process's other handlers, so
    /// that their writes reach it).
    pub fn with_cache(mut self, cache: Arc<TenantCache>) -> Self {
        self.cache = cache;
        self
    }

    /// The cache tenants are read through.
    pub fn cache(&self) -> &Arc<TenantCache> {
        &self.cache
    }

    /// The verified tenant and claims of `request`, or why not (401, or 503 when the store is down).
    ///
    /// For lifecycle callbacks, webhooks and iframe loads ([`QshMode::Computed`]). A context token
    /// ([`QshMode::Context`]) is only ever for the app's API, so that mode gets the API's rules as
    /// [`TenantAuth::verify_api`] applies them, whichever of the two the caller used.
    pub async fn verify<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        request: &ApiRequest,
        mode: QshMode,
    ) -> Result<Verified<Arc<Tenant>>, ApiError> {
        match mode {
            QshMode::Computed => {
                self.verify_with(
                    store,
                    request,
                    TokenSource::HeaderOrQuery,
                    &self.verifier,
                    mode,
                )
                .await
            }
            QshMode::Context => self.verify_api(store, request).await,
        }
    }

    /// A call to the app's own API (`/api/...`), made with a context JWT (`AP.context.getToken()`):
    /// the token must be in the `Authorization: JWT ...` header (a `jwt` query parameter is refused,
    /// even alongside the header), its qsh must be `context-qsh`, its lifetime (`exp - iat`) at most
    /// [`CONTEXT_TOKEN_MAX_LIFETIME_SECONDS`] and its `iat` no further back than that plus the
    /// leeway. 401 otherwise, or 503 when the store is down.
    pub async fn verify_api<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        request: &ApiRequest,
    ) -> Result<Verified<Arc<Tenant>>, ApiError> {
        self.verify_with(
            store,
            request,
            TokenSource::HeaderOnly,
            &self.api_verifier,
            QshMode::Context,
        )
        .await
    }

    async fn verify_with<S: TenantStore + ?Sized>(
        &self,
        store: &S,
        request: &ApiRequest,
        source: TokenSource,
        verifier: &Hs256Verifier<C>,
        mode: QshMode,
    ) -> Result<Verified<Arc<Tenant>>, ApiError> {
        let token = extract_token_from(source, request.authorization(), &request.raw_query)?;
        let tenants = StoreTenants::new(store, self.clock.now_unix()).cached(&self.cache);
        let parts = request.parts(&self.base_path);
        let verified = verifier.verify_request(&tenants, token, &parts, mode).await;
        if let Err(err) = &verified {
            // The answer says only what the caller may know; the log keeps the precise reason.
            tracing::debug!(reason = ?err, "tenant token refused");
        }
        Ok(verified?)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use connect_auth::{FixedClock, RequestParts, sign_hs256};
    use serde_json::{Value, json};
    use understudy_domain::MemoryStore;

    use super::*;
    use crate::error::body_text;

    const NOW: i64 = 1_750_000_000;
    const CLIENT: &str = "client-1";
    const SECRET: &str = "tenant-secret-for-tests";

    async fn store() -> MemoryStore {
        let store = MemoryStore::new();
        let tenant = Tenant::from_install_payload(
            json!({"clientKey": CLIENT, "key": "understudy", "sharedSecret": SECRET,
                   "baseUrl": "https://site.atlassian.net/wiki"}),
            NOW,
        )
        .unwrap();
        store.save_install(&tenant, NOW).await.unwrap();
        store
    }

    fn auth() -> TenantAuth<FixedClock> {
        TenantAuth::new(FixedClock(NOW), "")
    }

    fn request(method: &str, uri: &str, token: Option<&str>) -> ApiRequest {
        let mut builder = http::Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header("authorization", format!("JWT {token}"));
        }
        ApiRequest::from_http(builder.body(Bytes::new()).unwrap())
    }

    fn context_token(change: impl FnOnce(&mut Value)) -> String {
        let mut claims = json!({"iss": CLIENT, "sub": "557058:user", "iat": NOW, "exp": NOW + 180,
                                "qsh": "context-qsh"});
        change(&mut claims);
        sign_hs256(&claims, &SecretString::from(SECRET)).unwrap()
    }

    fn refusal(result: Result<Verified<Arc<Tenant>>, ApiError>) -> String {
        let err = result.unwrap_err();
        assert!(matches!(err, ApiError::Unauthorized(_)), "{err:?}");
        let response = err.into_response("understudy");
        assert_eq!(response.status(), 401);
        serde_json::from_str::<Value>(&body_text(&response)).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    const AUDIT: &str = "/api/pages/42/audit";

    #[tokio::test]
    async fn the_api_takes_a_short_lived_context_token_from_the_header() {
        let store = store().await;
        let token = context_token(|_| {});
        let verified = auth()
            .verify_api(&store, &request("GET", AUDIT, Some(&token)))
            .await
            .unwrap();
        assert_eq!(verified.tenant.client_key.as_str(), CLIENT);
        // Exactly 15 minutes, issued up to 15 minutes and the leeway ago: still accepted.
        let token = context_token(|c| {
            c["iat"] = json!(NOW - 600);
            c["exp"] = json!(NOW + 300);
        });
        assert!(
            auth()
                .verify_api(&store, &request("GET", AUDIT, Some(&token)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_api_refuses_a_token_in_the_query_even_next_to_the_header() {
        let store = store().await;
        let token = context_token(|_| {});
        for (uri, header) in [
            (format!("{AUDIT}?jwt={token}"), None),
            (format!("{AUDIT}?jwt={token}"), Some(token.as_str())),
            (format!("{AUDIT}?x=1&jwt"), Some(token.as_str())),
        ] {
            let said = refusal(
                auth()
                    .verify_api(&store, &request("GET", &uri, header))
                    .await,
            );
            assert_eq!(said, "token must be in the Authorization header", "{uri}");
        }
        // Other query parameters are fine.
        let uri = format!("{AUDIT}?limit=5");
        assert!(
            auth()
                .verify_api(&store, &request("GET", &uri, Some(&token)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_api_refuses_long_lived_and_old_context_tokens() {
        let store = store().await;
        let long = context_token(|c| c["exp"] = json!(NOW + 901));
        let said = refusal(
            auth()
                .verify_api(&store, &request("POST", "/api/pages/42/edits", Some(&long)))
                .await,
        );
        assert_eq!(said, AuthError::LifetimeTooLong.to_string());

        let old = context_token(|c| {
            c["iat"] = json!(NOW - 931);
            c["exp"] = json!(NOW + 60);
        });
        let said = refusal(
            auth()
                .verify_api(&store, &request("POST", "/api/pages/42/edits", Some(&old)))
                .await,
        );
        assert_eq!(said, AuthError::IssuedTooLongAgo.to_string());
        assert_ne!(
            AuthError::LifetimeTooLong.to_string(),
            AuthError::IssuedTooLongAgo.to_string()
        );

        // A caller still on `verify` with the context mode gets the same rules.
        let said = refusal(
            auth()
                .verify(
                    &store,
                    &request("GET", AUDIT, Some(&long)),
                    QshMode::Context,
                )
                .await,
        );
        assert_eq!(said, AuthError::LifetimeTooLong.to_string());
        let uri = format!("{AUDIT}?jwt={}", context_token(|_| {}));
        let said = refusal(
            auth()
                .verify(&store, &request("GET", &uri, None), QshMode::Context)
                .await,
        );
        assert_eq!(said, "token must be in the Authorization header");
    }

    #[tokio::test]
    async fn iframe_loads_and_webhooks_keep_their_rules() {
        let store = store().await;
        let secret = SecretString::from(SECRET);
        // An iframe load: the token in the query, qsh computed, no bound on its lifetime.
        let qsh = RequestParts::new("GET", "/ui/page", "pageId=42").qsh();
        let claims = json!({"iss": CLIENT, "iat": NOW - 3600, "exp": NOW + 3600, "qsh": qsh});
        let token = sign_hs256(&claims, &secret).unwrap();
        let uri = format!("/ui/page?pageId=42&jwt={token}");
        assert!(
            auth()
                .verify(&store, &request("GET", &uri, None), QshMode::Computed)
                .await
                .is_ok()
        );
        // A webhook: the header, qsh computed, no bound either.
        let qsh = RequestParts::new("POST", "/webhooks/page_updated", "").qsh();
        let claims = json!({"iss": CLIENT, "iat": NOW - 3600, "exp": NOW + 3600, "qsh": qsh});
        let token = sign_hs256(&claims, &secret).unwrap();
        let webhook = request("POST", "/webhooks/page_updated", Some(&token));
        assert!(
            auth()
                .verify(&store, &webhook, QshMode::Computed)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_refusal_does_not_say_whether_the_client_key_is_installed() {
        let store = store().await;
        let stranger = context_token(|c| c["iss"] = json!("client-2"));
        let forged = sign_hs256(
            &json!({"iss": CLIENT, "iat": NOW, "exp": NOW + 180, "qsh": "context-qsh"}),
            &SecretString::from("not-the-secret"),
        )
        .unwrap();
        let unknown = refusal(
            auth()
                .verify_api(&store, &request("GET", AUDIT, Some(&stranger)))
                .await,
        );
        let bad_signature = refusal(
            auth()
                .verify_api(&store, &request("GET", AUDIT, Some(&forged)))
                .await,
        );
        assert_eq!(unknown, bad_signature);
        assert_eq!(unknown, "JWT could not be verified");
    }
}
