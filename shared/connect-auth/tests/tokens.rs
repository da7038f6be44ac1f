//! HS256 request tokens and RS256 signed installs: every reason to refuse, and the happy paths.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_auth::{
    AuthError, CachingKeyProvider, FixedClock, Hs256Verifier, HttpKeyProvider,
    ImpersonationRequest, InMemoryKeys, InstallVerifier, KeyError, KeyProvider, Kid, QshMode,
    RequestParts, SecretString, TenantSecrets, TokenSource, extract_token, extract_token_from,
    mint_app_token, mint_impersonation_assertion, sign_hs256,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const NOW: i64 = 1_750_000_000;
const PRIVATE_PEM: &[u8] = include_bytes!("fixtures/test-install-key.private.pem");
const PUBLIC_PEM: &[u8] = include_bytes!("fixtures/test-install-key.public.pem");
const APP: &str = "https://app.example.com";

fn secret() -> SecretString {
    SecretString::from("shared-secret-for-tests")
}

fn webhook() -> RequestParts<'static> {
    RequestParts::new("POST", "/webhooks/page_updated", "")
}

fn claims_for(request: &RequestParts<'_>) -> Value {
    json!({"iss": "client-1", "sub": "user-1", "iat": NOW, "exp": NOW + 180, "qsh": request.qsh()})
}

fn verifier() -> Hs256Verifier<FixedClock> {
    Hs256Verifier::with_clock(FixedClock(NOW))
}

fn verify(token: &str) -> Result<connect_auth::Claims, AuthError> {
    verifier().verify(token, &secret(), &webhook(), QshMode::Computed)
}

fn with_claim(change: impl FnOnce(&mut Value)) -> String {
    let mut claims = claims_for(&webhook());
    change(&mut claims);
    sign_hs256(&claims, &secret()).unwrap()
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

#[test]
fn a_webhook_token_signed_with_the_tenant_secret_verifies() {
    let claims = verify(&with_claim(|_| {})).unwrap();
    assert_eq!(claims.iss, "client-1");
    assert_eq!(claims.sub.as_deref(), Some("user-1"));
}

#[test]
fn a_token_signed_with_another_secret_is_a_bad_signature() {
    let token = sign_hs256(&claims_for(&webhook()), &SecretString::from("other")).unwrap();
    assert_eq!(verify(&token), Err(AuthError::BadSignature));
}

#[test]
fn an_unknown_issuer_and_a_bad_signature_read_alike() {
    assert_eq!(
        AuthError::UnknownIssuer.to_string(),
        AuthError::BadSignature.to_string()
    );
    assert_eq!(
        AuthError::BadSignature.to_string(),
        connect_auth::UNVERIFIABLE_MESSAGE
    );
    assert_ne!(AuthError::UnknownIssuer, AuthError::BadSignature);
}

// ---- context tokens on the app's API: a bounded lifetime ---------------------------------------

fn api() -> RequestParts<'static> {
    RequestParts::new("POST", "/api/pages/1/edits", "")
}

fn context_token(iat: i64, exp: i64) -> String {
    let claims =
        json!({"iss": "client-1", "sub": "user-1", "iat": iat, "exp": exp, "qsh": "context-qsh"});
    sign_hs256(&claims, &secret()).unwrap()
}

fn verify_api(token: &str) -> Result<connect_auth::Claims, AuthError> {
    verifier()
        .max_lifetime(connect_auth::CONTEXT_TOKEN_MAX_LIFETIME_SECONDS)
        .verify(token, &secret(), &api(), QshMode::Context)
}

#[test]
fn a_context_token_may_live_at_most_15_minutes_on_the_api() {
    assert_eq!(connect_auth::CONTEXT_TOKEN_MAX_LIFETIME_SECONDS, 900);
    assert!(verify_api(&context_token(NOW, NOW + 180)).is_ok());
    assert!(verify_api(&context_token(NOW, NOW + 900)).is_ok());
    assert!(verify_api(&context_token(NOW - 600, NOW + 300)).is_ok());
    assert_eq!(
        verify_api(&context_token(NOW, NOW + 901)),
        Err(AuthError::LifetimeTooLong)
    );
    assert_eq!(
        verify_api(&context_token(NOW - 10, NOW + 10 * 365 * 86_400)),
        Err(AuthError::LifetimeTooLong)
    );
    // A token that also says it was issued far in the future is "not yet valid" first.
    assert_eq!(
        verify_api(&context_token(NOW + 31, NOW + 2000)),
        Err(AuthError::NotYetValid)
    );
    // Expired stays "expired".
    assert_eq!(
        verify_api(&context_token(NOW - 2000, NOW - 1000)),
        Err(AuthError::Expired)
    );
}

#[test]
fn a_context_token_issued_long_ago_is_refused_on_the_api() {
    // 15 minutes and the 30 s leeway ago is the limit.
    assert_eq!(
        verify_api(&context_token(NOW - 931, NOW + 60)),
        Err(AuthError::IssuedTooLongAgo)
    );
    assert_eq!(
        verify_api(&context_token(NOW - 86_400, NOW + 60)),
        Err(AuthError::IssuedTooLongAgo)
    );
    assert_ne!(
        verify_api(&context_token(NOW - 930, NOW + 60)),
        Err(AuthError::IssuedTooLongAgo)
    );
    assert_ne!(
        AuthError::IssuedTooLongAgo.to_string(),
        AuthError::LifetimeTooLong.to_string()
    );
    // The leeway counts: with none, one second past 15 minutes is too long ago.
    let strict = verifier().leeway(0).max_lifetime(900);
    assert_eq!(
        strict.verify(
            &context_token(NOW - 901, NOW + 1),
            &secret(),
            &api(),
            QshMode::Context
        ),
        Err(AuthError::IssuedTooLongAgo)
    );
}

#[test]
fn without_a_bound_long_lived_tokens_verify_as_before() {
    // Webhook and lifecycle verification keep no bound on the lifetime.
    let token = with_claim(|c| {
        c["iat"] = json!(NOW - 86_400);
        c["exp"] = json!(NOW + 86_400);
    });
    assert!(verify(&token).is_ok());
    let context = context_token(NOW - 86_400, NOW + 86_400);
    assert!(
        verifier()
            .verify(&context, &secret(), &api(), QshMode::Context)
            .is_ok()
    );
}

#[test]
fn alg_none_hs512_and_rs256_are_refused_on_hs256_routes() {
    let claims = claims_for(&webhook());
    let none = unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    assert!(matches!(
        verify(&none),
        Err(AuthError::WrongAlgorithm { .. })
    ));

    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret(b"shared-secret-for-tests").unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify(&hs512),
        Err(AuthError::WrongAlgorithm { .. })
    ));

    let rs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        verify(&rs256),
        Err(AuthError::WrongAlgorithm { .. })
    ));
}

#[test]
fn expiry_not_before_and_issued_at_honour_the_leeway() {
    assert!(verify(&with_claim(|c| c["exp"] = json!(NOW - 29))).is_ok());
    assert_eq!(
        verify(&with_claim(|c| c["exp"] = json!(NOW - 30))),
        Err(AuthError::Expired)
    );
    assert!(verify(&with_claim(|c| c["nbf"] = json!(NOW + 30))).is_ok());
    assert_eq!(
        verify(&with_claim(|c| c["nbf"] = json!(NOW + 31))),
        Err(AuthError::NotYetValid)
    );
    assert_eq!(
        verify(&with_claim(|c| c["iat"] = json!(NOW + 31))),
        Err(AuthError::NotYetValid)
    );
    let strict = verifier().leeway(0);
    let token = with_claim(|c| c["exp"] = json!(NOW));
    assert_eq!(
        strict.verify(&token, &secret(), &webhook(), QshMode::Computed),
        Err(AuthError::Expired)
    );
}

#[test]
fn iss_iat_exp_and_qsh_are_required() {
    for (claim, expected) in [
        ("iss", AuthError::MissingClaim("iss")),
        ("iat", AuthError::MissingClaim("iat")),
        ("exp", AuthError::MissingClaim("exp")),
        ("qsh", AuthError::MissingQsh),
    ] {
        let token = with_claim(|c| {
            c.as_object_mut().unwrap().remove(claim);
        });
        assert_eq!(verify(&token), Err(expected), "without {claim}");
    }
    let wrong_type = with_claim(|c| c["exp"] = json!("tomorrow"));
    assert!(matches!(verify(&wrong_type), Err(AuthError::Malformed(_))));
}

#[test]
fn the_qsh_must_match_the_request_and_context_qsh_only_context_routes() {
    let other = with_claim(|c| {
        c["qsh"] = json!(RequestParts::new("POST", "/webhooks/page_created", "").qsh())
    });
    assert_eq!(verify(&other), Err(AuthError::QshMismatch));

    let context = with_claim(|c| c["qsh"] = json!("context-qsh"));
    assert_eq!(verify(&context), Err(AuthError::ContextQshNotAllowed));
    let api = RequestParts::new("POST", "/api/pages/1/edits", "");
    assert!(
        verifier()
            .verify(&context, &secret(), &api, QshMode::Context)
            .is_ok()
    );

    let computed = with_claim(|_| {});
    assert_eq!(
        verifier().verify(&computed, &secret(), &webhook(), QshMode::Context),
        Err(AuthError::QshMismatch)
    );
}

#[test]
fn malformed_tokens_are_refused_without_echoing_them() {
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "e30.e30.",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.x",
    ] {
        let err = verify(bad).unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Malformed(_) | AuthError::WrongAlgorithm { .. }
            ),
            "{bad}: {err:?}"
        );
    }
    let token = with_claim(|_| {});
    let tampered = format!("{token}x");
    let err = verify(&tampered).unwrap_err();
    assert!(!err.to_string().contains(&token[..20]));
}

#[test]
fn tokens_come_from_the_jwt_header_or_the_query_and_two_different_ones_are_refused() {
    assert_eq!(extract_token(Some("JWT abc"), ""), Ok("abc"));
    assert_eq!(extract_token(None, "x=1&jwt=abc"), Ok("abc"));
    assert_eq!(extract_token(Some("JWT abc"), "jwt=abc"), Ok("abc"));
    assert_eq!(
        extract_token(Some("JWT abc"), "jwt=def"),
        Err(AuthError::ConflictingTokens)
    );
    assert_eq!(
        extract_token(None, "jwt=abc&jwt=def"),
        Err(AuthError::ConflictingTokens)
    );
    assert_eq!(extract_token(None, "x=1"), Err(AuthError::MissingToken));
    assert_eq!(
        extract_token(Some("JWT "), ""),
        Err(AuthError::MissingToken)
    );
    assert!(matches!(
        extract_token(Some("Bearer abc"), ""),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        extract_token(Some("jwt abc"), ""),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn api_routes_take_the_token_from_the_authorization_header_only() {
    let only = |header, query| extract_token_from(TokenSource::HeaderOnly, header, query);
    assert_eq!(only(Some("JWT abc"), ""), Ok("abc"));
    assert_eq!(only(Some("JWT abc"), "pageId=1&x=jwt"), Ok("abc"));
    assert_eq!(only(Some("JWT abc"), "jwtx=1&xjwt=2"), Ok("abc"));
    for query in [
        "jwt=abc",
        "x=1&jwt=abc",
        "jwt=",
        "jwt",
        "JWT=abc",
        "j%77t=abc",
        "%6A%77%74=abc",
    ] {
        assert_eq!(only(None, query), Err(AuthError::TokenInQuery), "{query}");
        // Even when the header carries the same token.
        assert_eq!(
            only(Some("JWT abc"), query),
            Err(AuthError::TokenInQuery),
            "{query}"
        );
    }
    assert_eq!(
        AuthError::TokenInQuery.to_string(),
        "token must be in the Authorization header"
    );
    assert_eq!(only(None, "pageId=1"), Err(AuthError::MissingToken));
    assert!(matches!(
        only(Some("Bearer abc"), ""),
        Err(AuthError::Malformed(_))
    ));
    // Iframe loads, lifecycle and webhooks: as before.
    assert_eq!(
        extract_token_from(TokenSource::HeaderOrQuery, None, "x=1&jwt=abc"),
        Ok("abc")
    );
    assert_eq!(
        extract_token_from(TokenSource::HeaderOrQuery, Some("JWT abc"), "jwt=abc"),
        Ok("abc")
    );
}

struct Tenants {
    unavailable: bool,
}

#[async_trait]
impl TenantSecrets for Tenants {
    type Tenant = (String, SecretString);
    async fn find_tenant(&self, client_key: &str) -> Result<Option<Self::Tenant>, AuthError> {
        if self.unavailable {
            return Err(AuthError::LookupUnavailable);
        }
        Ok((client_key == "client-1").then(|| (client_key.to_owned(), secret())))
    }
    fn shared_secret<'t>(&self, tenant: &'t Self::Tenant) -> &'t SecretString {
        &tenant.1
    }
}

#[tokio::test]
async fn a_request_is_verified_with_the_secret_of_the_tenant_it_names() {
    let tenants = Tenants { unavailable: false };
    let token = with_claim(|_| {});
    let verified = verifier()
        .verify_request(&tenants, &token, &webhook(), QshMode::Computed)
        .await
        .unwrap();
    assert_eq!(verified.tenant.0, "client-1");

    let stranger = with_claim(|c| c["iss"] = json!("client-2"));
    let err = verifier()
        .verify_request(&tenants, &stranger, &webhook(), QshMode::Computed)
        .await;
    let err = err.unwrap_err();
    assert_eq!(err, AuthError::UnknownIssuer);
    assert_eq!(err.to_string(), AuthError::BadSignature.to_string());

    let down = Tenants { unavailable: true };
    let err = verifier()
        .verify_request(&down, &token, &webhook(), QshMode::Computed)
        .await
        .unwrap_err();
    assert!(err.is_unavailable());
}

// ---- minting ----------------------------------------------------------------------------------

fn decode_any(token: &str, secret: &[u8]) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret).unwrap(),
        &validation,
    )
    .unwrap()
    .claims
}

#[test]
fn the_app_token_hashes_the_request_relative_to_the_tenant_base_url() {
    let base = url::Url::parse("https://site.atlassian.net/wiki").unwrap();
    let url =
        url::Url::parse("https://site.atlassian.net/wiki/api/v2/pages/42?body-format=storage")
            .unwrap();
    let token =
        mint_app_token("understudy", "client-1", &secret(), "GET", &url, &base, NOW).unwrap();
    let claims = decode_any(&token, b"shared-secret-for-tests");
    assert_eq!(claims["iss"], "understudy");
    assert_eq!(claims["aud"], json!(["client-1"]));
    assert_eq!(claims["iat"], NOW);
    assert_eq!(claims["exp"], NOW + 180);
    assert_eq!(
        claims["qsh"],
        RequestParts::new("GET", "/api/v2/pages/42", "body-format=storage").qsh()
    );
    assert_eq!(claims.as_object().unwrap().len(), 5);
}

#[test]
fn the_impersonation_assertion_has_exactly_the_documented_claims() {
    let request = ImpersonationRequest {
        oauth_client_id: "oauth-client",
        tenant_base_url: "https://site.atlassian.net/wiki",
        account_id: "557058:abcd",
        audience: connect_auth::ATLASSIAN_OAUTH_AUDIENCE,
    };
    let token = mint_impersonation_assertion(&request, &secret(), NOW).unwrap();
    let claims = decode_any(&token, b"shared-secret-for-tests");
    assert_eq!(
        claims,
        json!({"iss": "urn:atlassian:connect:clientid:oauth-client",
               "sub": "urn:atlassian:connect:useraccountid:557058:abcd",
               "tnt": "https://site.atlassian.net/wiki",
               "aud": "https://oauth-2-authorization-server.services.atlassian.com",
               "iat": NOW, "exp": NOW + 60})
    );
}

// ---- signed installs ----------------------------------------------------------------------------

fn install_request() -> RequestParts<'static> {
    RequestParts::new("POST", "/installed", "")
}

fn install_claims() -> Value {
    json!({"iss": "client-1", "aud": [APP], "iat": NOW, "exp": NOW + 180, "qsh": install_request().qsh()})
}

fn rs256(kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap()
}

fn installs() -> InstallVerifier<InMemoryKeys, FixedClock> {
    let keys = InMemoryKeys::new();
    keys.insert_pem("kid-1", PUBLIC_PEM).unwrap();
    InstallVerifier::with_clock(keys, [APP, "https://staging.example.com/"], FixedClock(NOW))
}

async fn verify_install(token: &str) -> Result<connect_auth::Claims, AuthError> {
    installs().verify(token, &install_request()).await
}

#[tokio::test]
async fn a_signed_install_verifies_and_returns_the_issuer() {
    let claims = verify_install(&rs256(Some("kid-1"), &install_claims()))
        .await
        .unwrap();
    assert_eq!(claims.iss, "client-1");
    // aud as a plain string, and with a trailing slash on either side.
    let mut c = install_claims();
    c["aud"] = json!("https://staging.example.com");
    assert!(verify_install(&rs256(Some("kid-1"), &c)).await.is_ok());
    c["aud"] = json!(format!("{APP}/"));
    assert!(verify_install(&rs256(Some("kid-1"), &c)).await.is_ok());
}

#[tokio::test]
async fn signed_installs_are_refused_for_every_documented_reason() {
    let other_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let other_pem =
        rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other_key, rsa::pkcs8::LineEnding::LF).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("kid-1".into());
    let forged = jsonwebtoken::encode(
        &header,
        &install_claims(),
        &EncodingKey::from_rsa_pem(other_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(verify_install(&forged).await, Err(AuthError::BadSignature));

    let hs256 = sign_hs256(&install_claims(), &secret()).unwrap();
    assert!(matches!(
        verify_install(&hs256).await,
        Err(AuthError::WrongAlgorithm { .. })
    ));
    let none = unsigned(
        &json!({"alg": "none", "kid": "kid-1"}),
        &install_claims(),
        "",
    );
    assert!(matches!(
        verify_install(&none).await,
        Err(AuthError::WrongAlgorithm { .. })
    ));

    assert_eq!(
        verify_install(&rs256(Some("kid-2"), &install_claims())).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        verify_install(&rs256(None, &install_claims())).await,
        Err(AuthError::BadKid)
    );
    for kid in ["../kid-1", "https://evil.example/kid-1", "kid-1?x=1"] {
        assert_eq!(
            verify_install(&rs256(Some(kid), &install_claims())).await,
            Err(AuthError::BadKid)
        );
    }

    let mut c = install_claims();
    c["aud"] = json!(["https://someone-else.example.com"]);
    assert_eq!(
        verify_install(&rs256(Some("kid-1"), &c)).await,
        Err(AuthError::WrongAudience)
    );
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verify_install(&rs256(Some("kid-1"), &c)).await,
        Err(AuthError::WrongAudience)
    );

    let mut c = install_claims();
    c["exp"] = json!(NOW - 60);
    assert_eq!(
        verify_install(&rs256(Some("kid-1"), &c)).await,
        Err(AuthError::Expired)
    );

    let mut c = install_claims();
    c["qsh"] = json!(RequestParts::new("POST", "/uninstalled", "").qsh());
    assert_eq!(
        verify_install(&rs256(Some("kid-1"), &c)).await,
        Err(AuthError::QshMismatch)
    );
    c["qsh"] = json!("context-qsh");
    assert_eq!(
        verify_install(&rs256(Some("kid-1"), &c)).await,
        Err(AuthError::ContextQshNotAllowed)
    );
}

// ---- the HTTP key provider against a local key server ----------------------------------------

struct KeyServer {
    base: String,
    hits: Arc<AtomicUsize>,
}

/// Serves the test key at /kid-1, 404 for other kids, 500 at /broken/*, garbage at /garbage.
async fn key_server() -> KeyServer {
    use axum::{Router, extract::Path, http::StatusCode, routing::get};
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/{*kid}",
        get(move |Path(kid): Path<String>| {
            let counter = counter.clone();
            async move {
                use axum::response::IntoResponse;
                counter.fetch_add(1, Ordering::SeqCst);
                match kid.as_str() {
                    "kid-1" => (
                        StatusCode::OK,
                        String::from_utf8(PUBLIC_PEM.to_vec()).unwrap(),
                    )
                        .into_response(),
                    // A redirect to a genuine key: not followed.
                    "moved" => (StatusCode::FOUND, [("location", "/kid-1")]).into_response(),
                    "garbage" => (StatusCode::OK, "<html>not a key</html>").into_response(),
                    k if k.starts_with("broken") => {
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                    _ => (StatusCode::NOT_FOUND, "<html>Not Found</html>").into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyServer { base, hits }
}

#[tokio::test]
async fn the_http_key_provider_requires_200_and_caches_by_kid() {
    let server = key_server().await;
    let client = HttpKeyProvider::default_client().unwrap();
    let keys = CachingKeyProvider::new(HttpKeyProvider::configured(client, &server.base), 2);
    let kid = Kid::parse("kid-1").unwrap();
    keys.public_key(&kid).await.unwrap();
    keys.public_key(&kid).await.unwrap();
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        1,
        "the second lookup must come from the cache"
    );

    // A 404 page is not a key (the Node framework parsed it as one), and is remembered a while.
    for _ in 0..2 {
        assert_eq!(
            keys.public_key(&Kid::parse("kid-404").unwrap()).await.err(),
            Some(KeyError::NotFound)
        );
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    assert!(matches!(
        keys.public_key(&Kid::parse("broken").unwrap()).await,
        Err(KeyError::Unavailable(_))
    ));
    assert!(matches!(
        keys.public_key(&Kid::parse("garbage").unwrap()).await,
        Err(KeyError::Unavailable(_))
    ));
    // A key is trusted for coming from the key server named: a redirect is not followed.
    assert!(matches!(
        keys.public_key(&Kid::parse("moved").unwrap()).await,
        Err(KeyError::Unavailable(_))
    ));
    assert_eq!(keys.cached(), 1, "failures are not cached as keys");
    assert_eq!(keys.remembered_misses(), 1, "only the 404 is remembered");
}

#[tokio::test]
async fn a_flood_of_forged_installs_reaches_the_key_server_a_bounded_number_of_times() {
    let server = key_server().await;
    let client = HttpKeyProvider::default_client().unwrap();
    let keys = CachingKeyProvider::with_clock(
        HttpKeyProvider::configured(client, &server.base),
        CachingKeyProvider::<()>::DEFAULT_CAPACITY,
        FixedClock(NOW),
    );
    let verifier = InstallVerifier::with_clock(keys, [APP], FixedClock(NOW));
    // The real key first, as Atlassian's install would.
    verifier
        .verify(&rs256(Some("kid-1"), &install_claims()), &install_request())
        .await
        .unwrap();
    let mut refused = 0;
    let mut unavailable = 0;
    for i in 0..100 {
        let token = rs256(Some(&format!("forged-{i}")), &install_claims());
        match verifier.verify(&token, &install_request()).await {
            Err(AuthError::UnknownKey) => refused += 1,
            Err(err) if err.is_unavailable() => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    let hits = server.hits.load(Ordering::SeqCst);
    assert_eq!(
        hits,
        CachingKeyProvider::<()>::DEFAULT_MAX_FETCHES,
        "the first lookup plus 9 forged kids"
    );
    assert_eq!((refused, unavailable), (9, 91));
    // The genuine key is still answered, from the cache.
    verifier
        .verify(&rs256(Some("kid-1"), &install_claims()), &install_request())
        .await
        .unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), hits);
}

#[tokio::test]
async fn an_unreachable_key_server_makes_the_install_unavailable_not_forged() {
    // Bind and drop a listener to get a port nobody serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = HttpKeyProvider::default_client().unwrap();
    let provider = HttpKeyProvider::configured(client, &format!("http://127.0.0.1:{port}"));
    let verifier = InstallVerifier::with_clock(provider, [APP], FixedClock(NOW));
    let err = verifier
        .verify(&rs256(Some("kid-1"), &install_claims()), &install_request())
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn the_key_cache_stays_within_its_bound() {
    struct Counting(InMemoryKeys);
    #[async_trait]
    impl KeyProvider for Counting {
        async fn public_key(&self, _kid: &Kid) -> Result<DecodingKey, KeyError> {
            self.0.public_key(&Kid::parse("kid-1").unwrap()).await
        }
    }
    let inner = InMemoryKeys::new();
    inner.insert_pem("kid-1", PUBLIC_PEM).unwrap();
    let keys = CachingKeyProvider::new(Counting(inner), 3).fetch_budget(100, 10);
    for i in 0..10 {
        keys.public_key(&Kid::parse(&format!("k{i}")).unwrap())
            .await
            .unwrap();
    }
    assert_eq!(keys.cached(), 3);
}
