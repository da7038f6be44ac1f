//! Every refusal reason of the FIT verifier, and the claims of an accepted token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::*;
use forge_auth::{AppId, FitError, InvalidAppId, OpaqueToken};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

async fn verify_claims(claims: &Value) -> Result<forge_auth::InvocationClaims, FitError> {
    let (verifier, _, _) = verifier();
    verifier
        .verify(Some(&bearer(&sign(claims, PRIVATE_1, KID_1))))
        .await
}

fn without(name: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(name);
    c
}

fn with(name: &str, value: Value) -> Value {
    let mut c = claims();
    c[name] = value;
    c
}

#[tokio::test]
async fn a_valid_fit_gives_its_typed_claims() {
    let (verifier, source, _) = verifier();
    let claims = verifier.verify(Some(&bearer(&fit()))).await.unwrap();
    assert_eq!(source.fetches(), 1);
    assert_eq!(claims.app.id, APP_ID);
    assert_eq!(
        claims.app.installation_id,
        "ari:cloud:ecosystem::installation/0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4"
    );
    assert_eq!(
        claims.app.api_base_url,
        "https://api.atlassian.com/ex/confluence/5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c"
    );
    assert_eq!(claims.app.contexts.len(), 1);
    let context = &claims.app.contexts[0];
    assert_eq!(context.name.as_deref(), Some("confluence"));
    assert_eq!(
        context.cloud_id.as_deref(),
        Some("5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c")
    );
    assert_eq!(
        context.api_base_url.as_deref(),
        Some(claims.app.api_base_url.as_str())
    );
    let environment = claims.app.environment.as_ref().unwrap();
    assert_eq!(environment.kind.as_deref(), Some("DEVELOPMENT"));
    let module = claims.app.module.as_ref().unwrap();
    assert_eq!(module.kind.as_deref(), Some("core:endpoint"));
    assert_eq!(module.key.as_deref(), Some("page-events"));
    assert_eq!(
        claims.principal.as_deref(),
        Some("5be24ad8b1653240376955d2")
    );
    let ctx = claims.context.as_ref().unwrap();
    assert_eq!(
        ctx.cloud_id.as_deref(),
        Some("5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c")
    );
    assert_eq!(
        ctx.site_url.as_deref(),
        Some("https://example.atlassian.net")
    );
    assert_eq!(claims.jti, "7a1c4e0f-5b2d-4c8e-9f3a-6d1b0e2c4a57");
    assert_eq!(claims.iat, NOW - 5);
    assert_eq!(claims.exp, NOW + 20);
}

#[tokio::test]
async fn optional_claims_may_be_absent() {
    let mut c = claims();
    let object = c.as_object_mut().unwrap();
    object.remove("principal");
    object.remove("context");
    object.remove("nbf");
    let app = object["app"].as_object_mut().unwrap();
    app.remove("installation");
    app.remove("environment");
    app.remove("module");
    let claims = verify_claims(&c).await.unwrap();
    assert!(claims.principal.is_none());
    assert!(claims.context.is_none());
    assert!(claims.app.contexts.is_empty());
    assert!(claims.app.environment.is_none());
    assert!(claims.app.module.is_none());
}

#[tokio::test]
async fn a_principal_object_with_an_account_id_is_read() {
    let c = with(
        "principal",
        json!({ "accountId": "5be24ad8b1653240376955d2" }),
    );
    let claims = verify_claims(&c).await.unwrap();
    assert_eq!(
        claims.principal.as_deref(),
        Some("5be24ad8b1653240376955d2")
    );
}

#[tokio::test]
async fn an_audience_array_naming_this_app_is_accepted() {
    let c = with("aud", json!([OTHER_APP_ID, APP_ID]));
    assert!(verify_claims(&c).await.is_ok());
}

#[tokio::test]
async fn the_header_must_be_exactly_bearer_and_a_token() {
    let (verifier, source, _) = verifier();
    assert_eq!(verifier.verify(None).await, Err(FitError::MissingHeader));
    let token = fit();
    for garbled in [
        String::new(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("bearer {token}"),
        format!("JWT {token}"),
        format!("Bearer  {token}"),
        format!("Bearer {token} "),
        format!("Bearer {token}\n"),
        token.clone(),
        format!("Bearer {}", "a".repeat(forge_auth::MAX_TOKEN_LEN + 1)),
    ] {
        assert_eq!(
            verifier.verify(Some(&garbled)).await,
            Err(FitError::GarbledHeader),
            "{garbled:?}"
        );
    }
    assert_eq!(source.fetches(), 0, "nothing fetched for a garbled header");
}

#[tokio::test]
async fn a_malformed_token_is_refused() {
    let (verifier, source, _) = verifier();
    for bad in ["abc", "a.b", "a.b.c.d", ".b.c", "a..c", "AAA.e30.c"] {
        let result = verifier.verify(Some(&bearer(bad))).await;
        assert!(
            matches!(result, Err(FitError::Malformed(_))),
            "{bad}: {result:?}"
        );
    }
    // A header that is JSON but not an object.
    let token = format!("{}.e30.sig", base64_url(b"[1]"));
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::Malformed("header"))
    );
    assert_eq!(source.fetches(), 0);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn every_algorithm_but_rs256_is_refused_before_a_key_is_chosen() {
    let (verifier, source, _) = verifier();
    // alg none, unsigned.
    let none = raw_token(&json!({"alg": "none", "kid": KID_1}), &claims(), "");
    let none = format!("{}x", none.trim_end_matches('x'));
    assert_eq!(
        verifier.verify(Some(&bearer(&none))).await,
        Err(FitError::WrongAlgorithm)
    );
    // HS256, signed with the public key as the secret (the classic confusion attack).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(KID_1.to_owned());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(),
        &EncodingKey::from_secret(PUBLIC_1.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(Some(&bearer(&hs))).await,
        Err(FitError::WrongAlgorithm)
    );
    // Other algorithms, and no alg at all, with a valid RS256 signature segment.
    let good = fit();
    let signature = good.rsplit('.').next().unwrap();
    for alg in [
        json!("RS512"),
        json!("PS256"),
        json!("ES256"),
        json!("rs256"),
        json!(null),
    ] {
        let token = raw_token(&json!({"alg": alg, "kid": KID_1}), &claims(), signature);
        assert_eq!(
            verifier.verify(Some(&bearer(&token))).await,
            Err(FitError::WrongAlgorithm),
            "{alg}"
        );
    }
    let token = raw_token(&json!({"kid": KID_1}), &claims(), signature);
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::WrongAlgorithm)
    );
    assert_eq!(source.fetches(), 0, "no key was looked up");
}

#[tokio::test]
async fn a_missing_kid_is_refused() {
    let (verifier, source, _) = verifier();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(),
        &EncodingKey::from_rsa_pem(PRIVATE_1).unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::MissingKid)
    );
    let token = sign(&claims(), PRIVATE_1, "");
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::MissingKid)
    );
    assert_eq!(source.fetches(), 0);
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let (verifier, _, _) = verifier();
    let token = sign(&claims(), PRIVATE_1, "nobody-knows-this-kid");
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::UnknownKid)
    );
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let (verifier, _, _) = verifier();
    // Signed by key 2 but naming key 1.
    let token = sign(&claims(), PRIVATE_2, KID_1);
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::BadSignature)
    );
    // Claims changed after signing.
    let good = fit();
    let parts: Vec<&str> = good.split('.').collect();
    let forged = raw_token(
        &json!({"alg": "RS256", "typ": "JWT", "kid": KID_1}),
        &with("aud", json!(APP_ID)),
        parts[2],
    );
    assert_eq!(
        verifier.verify(Some(&bearer(&forged))).await,
        Err(FitError::BadSignature)
    );
    // A signature that is not base64url of anything.
    let token = format!("{}.{}.AAAA", parts[0], parts[1]);
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::BadSignature)
    );
}

#[tokio::test]
async fn the_issuer_must_be_forge() {
    for iss in [
        json!("forge/invocation-token2"),
        json!("atlassian"),
        json!(1),
    ] {
        assert_eq!(
            verify_claims(&with("iss", iss.clone())).await,
            Err(FitError::WrongIssuer),
            "{iss}"
        );
    }
    assert_eq!(
        verify_claims(&without("iss")).await,
        Err(FitError::MissingClaim("iss"))
    );
}

#[tokio::test]
async fn the_audience_must_be_the_configured_app_never_the_tokens_app_id() {
    // A token for another app, whose app.id agrees with its aud: still not ours.
    let mut c = with("aud", json!(OTHER_APP_ID));
    c["app"]["id"] = json!(OTHER_APP_ID);
    assert_eq!(verify_claims(&c).await, Err(FitError::WrongAudience));
    for aud in [
        json!(""),
        json!([]),
        json!([OTHER_APP_ID]),
        json!(42),
        json!({"aud": APP_ID}),
    ] {
        assert_eq!(
            verify_claims(&with("aud", aud.clone())).await,
            Err(FitError::WrongAudience),
            "{aud}"
        );
    }
    assert_eq!(
        verify_claims(&without("aud")).await,
        Err(FitError::MissingClaim("aud"))
    );
}

#[tokio::test]
async fn expiry_is_checked_with_a_30_second_leeway() {
    let (verifier, _, clock) = verifier();
    let token = bearer(&fit()); // exp = NOW + 20
    clock.set(NOW + 20 + 30);
    assert!(
        verifier.verify(Some(&token)).await.is_ok(),
        "within the leeway"
    );
    clock.set(NOW + 20 + 31);
    assert_eq!(verifier.verify(Some(&token)).await, Err(FitError::Expired));
}

#[tokio::test]
async fn iat_and_nbf_in_the_future_are_refused_beyond_the_leeway() {
    let (verifier, _, clock) = verifier();
    let token = bearer(&fit()); // iat = nbf = NOW - 5
    clock.set(NOW - 5 - 30);
    assert!(
        verifier.verify(Some(&token)).await.is_ok(),
        "within the leeway"
    );
    clock.set(NOW - 5 - 31);
    assert_eq!(
        verifier.verify(Some(&token)).await,
        Err(FitError::NotYetValid)
    );

    // nbf later than iat is honoured on its own.
    let mut c = with("nbf", json!(NOW + 100));
    c["exp"] = json!(NOW + 200);
    assert_eq!(verify_claims(&c).await, Err(FitError::NotYetValid));
    c["nbf"] = json!(NOW + 30);
    assert!(verify_claims(&c).await.is_ok());
}

#[tokio::test]
async fn each_required_claim_is_named_when_missing() {
    for name in ["exp", "iat", "jti", "app"] {
        assert_eq!(
            verify_claims(&without(name)).await,
            Err(FitError::MissingClaim(name)),
            "{name}"
        );
    }
    for (name, path) in [
        ("id", "app.id"),
        ("installationId", "app.installationId"),
        ("apiBaseUrl", "app.apiBaseUrl"),
    ] {
        let mut c = claims();
        c["app"].as_object_mut().unwrap().remove(name);
        assert_eq!(
            verify_claims(&c).await,
            Err(FitError::MissingClaim(path)),
            "{path}"
        );
    }
}

#[tokio::test]
async fn claims_of_the_wrong_type_are_named() {
    assert_eq!(
        verify_claims(&with("exp", json!("soon"))).await,
        Err(FitError::MissingClaim("exp"))
    );
    assert_eq!(
        verify_claims(&with("iat", json!(null))).await,
        Err(FitError::MissingClaim("iat"))
    );
    assert_eq!(
        verify_claims(&with("nbf", json!([1]))).await,
        Err(FitError::MissingClaim("nbf"))
    );
    assert_eq!(
        verify_claims(&with("jti", json!(""))).await,
        Err(FitError::MissingClaim("jti"))
    );
    assert_eq!(
        verify_claims(&with("jti", json!(7))).await,
        Err(FitError::MissingClaim("jti"))
    );
    assert_eq!(
        verify_claims(&with("app", json!("app"))).await,
        Err(FitError::MissingClaim("app"))
    );
    assert_eq!(
        verify_claims(&with("principal", json!(5))).await,
        Err(FitError::MissingClaim("principal"))
    );
    assert_eq!(
        verify_claims(&with("context", json!("x"))).await,
        Err(FitError::MissingClaim("context"))
    );
}

#[tokio::test]
async fn claims_that_are_not_a_json_object_are_malformed() {
    let (verifier, _, _) = verifier();
    let token = jsonwebtoken::encode(
        &{
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some(KID_1.to_owned());
            h
        },
        &json!([1, 2, 3]),
        &EncodingKey::from_rsa_pem(PRIVATE_1).unwrap(),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::Malformed("claims"))
    );
}

#[tokio::test]
async fn error_messages_are_fixed_words_and_statuses_are_401_or_503() {
    let token = fit();
    let all = [
        FitError::MissingHeader,
        FitError::GarbledHeader,
        FitError::Malformed("token"),
        FitError::WrongAlgorithm,
        FitError::MissingKid,
        FitError::UnknownKid,
        FitError::BadSignature,
        FitError::WrongIssuer,
        FitError::WrongAudience,
        FitError::Expired,
        FitError::NotYetValid,
        FitError::MissingClaim("jti"),
        FitError::JwksUnavailable,
    ];
    for error in &all {
        let message = error.to_string();
        assert!(
            !message.contains(&token) && !message.contains("eyJ"),
            "{message}"
        );
        let unavailable = *error == FitError::JwksUnavailable;
        assert_eq!(error.is_unavailable(), unavailable);
        assert_eq!(error.http_status(), if unavailable { 503 } else { 401 });
    }
}

#[test]
fn the_app_id_must_be_an_app_ari() {
    assert!(AppId::parse(APP_ID).is_ok());
    for bad in [
        "",
        "8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93",
        "ari:cloud:ecosystem::app/",
        "ari:cloud:ecosystem::installation/8f2b0d6e",
        "ari:cloud:ecosystem::app/8f2b 0d6e",
        "ari:cloud:ecosystem::app/../x",
    ] {
        assert_eq!(AppId::parse(bad), Err(InvalidAppId), "{bad}");
    }
}

#[test]
fn opaque_tokens_are_bounded_visible_ascii_and_redacted() {
    let token = OpaqueToken::from_header(Some("eyJhbGciOi.secret-system-token_~+/=")).unwrap();
    assert_eq!(token.expose(), "eyJhbGciOi.secret-system-token_~+/=");
    let debug = format!("{token:?}");
    assert!(!debug.contains("secret"), "{debug}");
    assert_eq!(debug, "OpaqueToken(<redacted>)");
    assert!(OpaqueToken::from_header(Some(&"t".repeat(OpaqueToken::MAX_LEN))).is_some());
    for bad in [
        None,
        Some(String::new()),
        Some("t".repeat(OpaqueToken::MAX_LEN + 1)),
        Some("has space".to_owned()),
        Some("tab\there".to_owned()),
        Some("newline\n".to_owned()),
        Some("caf\u{e9}".to_owned()),
    ] {
        assert!(
            OpaqueToken::from_header(bad.as_deref()).is_none(),
            "{bad:?}"
        );
    }
}
