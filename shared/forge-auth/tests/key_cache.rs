//! The kid cache as a shield for Forge's JWKS: at most one fetch per minute on unknown kids,
//! shared by concurrent lookups, cached kids served while the JWKS is down. Time is a manual
//! clock; nothing sleeps.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::*;
use forge_auth::{AppId, FitError, FitVerifier, ManualClock};

#[tokio::test]
async fn a_hundred_forged_kids_within_a_minute_cost_one_fetch() {
    let (verifier, source, clock) = verifier();
    for i in 0..100 {
        let token = sign(&claims(), PRIVATE_1, &format!("forged-{i}"));
        assert_eq!(
            verifier.verify(Some(&bearer(&token))).await,
            Err(FitError::UnknownKid)
        );
    }
    assert_eq!(source.fetches(), 1);
    // The real kid was in that one fetch: cached, no more fetches.
    assert!(verifier.verify(Some(&bearer(&fit()))).await.is_ok());
    assert_eq!(source.fetches(), 1);

    clock.advance(59);
    let token = sign(&claims(), PRIVATE_1, "forged-again");
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::UnknownKid)
    );
    assert_eq!(source.fetches(), 1, "still within the minute");

    clock.advance(1);
    assert_eq!(
        verifier.verify(Some(&bearer(&token))).await,
        Err(FitError::UnknownKid)
    );
    assert_eq!(source.fetches(), 2, "one more fetch after 60 s");
    for i in 0..10 {
        let token = sign(&claims(), PRIVATE_1, &format!("forged-late-{i}"));
        let _ = verifier.verify(Some(&bearer(&token))).await;
    }
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_found_after_the_minute() {
    let (verifier, source, clock) = verifier();
    assert!(verifier.verify(Some(&bearer(&fit()))).await.is_ok());
    assert_eq!(source.fetches(), 1);

    // Forge rotates: key 2 joins the set, key 1 is withdrawn.
    source.replace(jwks(&[(KID_2, PUBLIC_2)]));
    let rotated = bearer(&sign(&claims(), PRIVATE_2, KID_2));
    clock.advance(10);
    assert_eq!(
        verifier.verify(Some(&rotated)).await,
        Err(FitError::UnknownKid),
        "within the minute the JWKS is not asked again"
    );
    assert_eq!(source.fetches(), 1);

    clock.advance(50);
    let claims_now = {
        let mut c = claims();
        c["exp"] = serde_json::json!(NOW + 120);
        c
    };
    let rotated = bearer(&sign(&claims_now, PRIVATE_2, KID_2));
    assert!(verifier.verify(Some(&rotated)).await.is_ok());
    assert_eq!(source.fetches(), 2);

    // The withdrawn key is no longer trusted once the set was refreshed.
    let old = bearer(&sign(&claims_now, PRIVATE_1, KID_1));
    assert_eq!(verifier.verify(Some(&old)).await, Err(FitError::UnknownKid));
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn a_cached_kid_still_verifies_while_the_jwks_is_down() {
    let (verifier, source, clock) = verifier();
    let token = bearer(&fit());
    assert!(verifier.verify(Some(&token)).await.is_ok());
    source.set_down(true);
    clock.advance(61);
    // A forged kid makes the cache try, and fail, to refresh: that must not drop key 1.
    let forged = bearer(&sign(&claims(), PRIVATE_1, "forged"));
    assert_eq!(
        verifier.verify(Some(&forged)).await,
        Err(FitError::JwksUnavailable)
    );
    assert_eq!(source.fetches(), 2);
    clock.set(NOW);
    assert!(verifier.verify(Some(&token)).await.is_ok());
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn an_unknown_kid_while_the_jwks_is_down_is_unavailable_not_refused() {
    let (verifier, source, clock) = verifier();
    source.set_down(true);
    let token = bearer(&fit());
    let error = verifier.verify(Some(&token)).await.unwrap_err();
    assert_eq!(error, FitError::JwksUnavailable);
    assert!(error.is_unavailable());
    assert_eq!(error.http_status(), 503);
    assert_eq!(source.fetches(), 1);

    // Within the minute: still unavailable, without asking again.
    assert_eq!(
        verifier.verify(Some(&token)).await,
        Err(FitError::JwksUnavailable)
    );
    assert_eq!(source.fetches(), 1);

    // The JWKS is back; after the minute the key is fetched and the token verifies.
    source.set_down(false);
    clock.advance(60);
    let mut c = claims();
    c["exp"] = serde_json::json!(NOW + 100);
    assert!(
        verifier
            .verify(Some(&bearer(&sign(&c, PRIVATE_1, KID_1))))
            .await
            .is_ok()
    );
    assert_eq!(source.fetches(), 2);
}

#[tokio::test]
async fn concurrent_lookups_during_a_refresh_share_one_fetch() {
    let source = Counting::gated(jwks(&[(KID_1, PUBLIC_1), (KID_2, PUBLIC_2)]));
    let clock = ManualClock::at(NOW);
    let verifier = Arc::new(FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Arc::clone(&source),
        Arc::clone(&clock),
    ));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let verifier = Arc::clone(&verifier);
        let token = if i % 2 == 0 {
            bearer(&fit())
        } else {
            bearer(&sign(&claims(), PRIVATE_2, KID_2))
        };
        tasks.push(tokio::spawn(
            async move { verifier.verify(Some(&token)).await },
        ));
    }
    // Let every task reach the cache before the one fetch completes.
    while source.fetches() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    source.open();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(source.fetches(), 1);
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let keys: Vec<(String, &str)> = (0..10).map(|i| (format!("k{i}"), PUBLIC_1)).collect();
    let refs: Vec<(&str, &str)> = keys.iter().map(|(k, p)| (k.as_str(), *p)).collect();
    let source = Counting::new(jwks(&refs));
    let clock = ManualClock::at(NOW);
    let verifier = FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Arc::clone(&source),
        Arc::clone(&clock),
    )
    .key_cache(4, 60);
    let token = bearer(&sign(&claims(), PRIVATE_1, "k0"));
    let _ = verifier.verify(Some(&token)).await;
    assert!(verifier.cached_keys() <= 4, "{}", verifier.cached_keys());
}

#[tokio::test]
async fn keys_that_are_not_rs256_signing_keys_are_not_used() {
    let mut set = jwks_json(&[(KID_1, PUBLIC_1)]);
    set["keys"][0]["use"] = serde_json::json!("enc");
    // Another key of a type this crate cannot read does not hide the others.
    let mut second = jwk_json(KID_2, PUBLIC_2);
    second["alg"] = serde_json::json!("RS256");
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"kty": "weird", "kid": "x"}));
    set["keys"].as_array_mut().unwrap().push(second);
    let parsed = forge_auth::parse_jwks(&serde_json::to_vec(&set).unwrap()).unwrap();
    let source = Counting::new(parsed);
    let verifier = FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Arc::clone(&source),
        ManualClock::at(NOW),
    );
    assert_eq!(
        verifier.verify(Some(&bearer(&fit()))).await,
        Err(FitError::UnknownKid),
        "an encryption key is not a signing key"
    );
    assert!(
        verifier
            .verify(Some(&bearer(&sign(&claims(), PRIVATE_2, KID_2))))
            .await
            .is_ok()
    );
}
