//! Every vector in `fixtures/qsh.json` (Atlassian's interoperability test): canonical string, hash,
//! and the signed URLs' tokens verified against their own requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use connect_auth::{FixedClock, Hs256Verifier, QshMode, RequestParts, SecretString, extract_token};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    secret: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    name: String,
    method: String,
    path: String,
    query: String,
    app_base_path: Option<String>,
    canonical: String,
    qsh: String,
    signed_url: Option<String>,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("fixtures/qsh.json")).unwrap()
}

#[test]
fn every_vector_gives_the_canonical_string_and_hash() {
    let all = vectors();
    assert!(all.vectors.len() >= 30, "the vector file lost entries");
    for v in &all.vectors {
        let request = RequestParts::new(&v.method, &v.path, &v.query)
            .with_base_path(v.app_base_path.as_deref().unwrap_or(""));
        assert_eq!(request.canonical(), v.canonical, "canonical of {}", v.name);
        assert_eq!(request.qsh(), v.qsh, "qsh of {}", v.name);
    }
}

#[test]
fn every_signed_url_verifies_against_its_own_request_and_fails_against_another() {
    let all = vectors();
    let secret = SecretString::from(all.secret.clone());
    // The tokens were issued at 1392204462 and expire at 1392204642.
    let verifier = Hs256Verifier::with_clock(FixedClock(1_392_204_500));
    let mut checked = 0;
    for v in all.vectors.iter().filter(|v| v.signed_url.is_some()) {
        let url = v.signed_url.as_deref().unwrap();
        let path_and_query = url.strip_prefix("https://example.com").unwrap();
        let request = RequestParts::from_path_and_query(&v.method, path_and_query);
        let token = extract_token(None, request.raw_query).unwrap();
        let claims = verifier
            .verify(token, &secret, &request, QshMode::Computed)
            .unwrap();
        assert_eq!(claims.qsh.as_deref(), Some(v.qsh.as_str()), "{}", v.name);

        let other = RequestParts::new("GET", "/other", "");
        assert_eq!(
            verifier.verify(token, &secret, &other, QshMode::Computed),
            Err(connect_auth::AuthError::QshMismatch),
            "{}",
            v.name
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} signed URLs checked");
}

#[test]
fn the_vector_tokens_are_expired_today() {
    let all = vectors();
    let secret = SecretString::from(all.secret.clone());
    let v = all.vectors.iter().find(|v| v.signed_url.is_some()).unwrap();
    let url = v.signed_url.as_deref().unwrap();
    let request =
        RequestParts::from_path_and_query("GET", url.strip_prefix("https://example.com").unwrap());
    let token = extract_token(None, request.raw_query).unwrap();
    let verifier = Hs256Verifier::with_clock(FixedClock(1_392_204_642 + 31));
    assert_eq!(
        verifier.verify(token, &secret, &request, QshMode::Computed),
        Err(connect_auth::AuthError::Expired)
    );
}
