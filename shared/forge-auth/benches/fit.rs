//! FIT verification with the key cached, as in a warm function: a realistic token (claims as Forge
//! sends them, ~1 KB, `benches/fit-claims.json`) signed RS256 with a 2048-bit key, and the refusal of
//! a token whose kid is unknown within the refresh interval (no fetch). The same token shape is timed
//! in `jose` by `tests/interop/bench-fit.mjs`; figures in `tests/interop/BENCH-FIT.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connect_auth::FixedClock;
use criterion::{Criterion, criterion_group, criterion_main};
use forge_auth::{AppId, FitError, FitVerifier, JwksSource, JwksUnavailable};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// The instant the token is verified at: 5 s after its `iat`, 20 s before its `exp`.
const NOW: i64 = 1_780_000_000;
const APP_ID: &str = "ari:cloud:ecosystem::app/8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93";
const KID: &str = "forge-test-key-1";
const UNKNOWN_KID: &str = "forge-test-key-2";
const CLAIMS: &str = include_str!("fit-claims.json");
const PRIVATE_1: &[u8] = include_bytes!("../tests/fixtures/fit-test-key-1.private.pem");
const PUBLIC_1: &str = include_str!("../tests/fixtures/fit-test-key-1.public.pem");
const PRIVATE_2: &[u8] = include_bytes!("../tests/fixtures/fit-test-key-2.private.pem");

/// A JWKS held in memory, counting fetches.
#[derive(Debug)]
struct InMemory {
    set: JwkSet,
    fetches: AtomicUsize,
}

#[async_trait]
impl JwksSource for InMemory {
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        Ok(self.set.clone())
    }
}

fn jwks() -> JwkSet {
    let key = rsa::RsaPublicKey::from_public_key_pem(PUBLIC_1).unwrap();
    serde_json::from_value(json!({ "keys": [{
        "kty": "RSA",
        "kid": KID,
        "alg": "RS256",
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    }]}))
    .unwrap()
}

fn bearer(private_pem: &[u8], kid: &str) -> String {
    let claims: Value = serde_json::from_str(CLAIMS).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(private_pem).unwrap(),
    )
    .unwrap();
    format!("Bearer {token}")
}

fn bench(c: &mut Criterion) {
    let source = Arc::new(InMemory {
        set: jwks(),
        fetches: AtomicUsize::new(0),
    });
    let verifier = FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Arc::clone(&source),
        FixedClock(NOW),
    );
    let valid = bearer(PRIVATE_1, KID);
    let unknown = bearer(PRIVATE_2, UNKNOWN_KID);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // The first call fetches the JWKS and caches the key; every call timed below finds it cached.
    let claims = runtime.block_on(verifier.verify(Some(&valid))).unwrap();
    assert_eq!(claims.app.contexts.len(), 1);
    assert_eq!(source.fetches.load(Ordering::Relaxed), 1);
    assert_eq!(verifier.cached_keys(), 1);
    println!(
        "token: {} bytes (claims {} bytes)",
        valid.len() - "Bearer ".len(),
        serde_json::to_vec(&serde_json::from_str::<Value>(CLAIMS).unwrap())
            .unwrap()
            .len()
    );

    c.bench_function("fit/verify_cached_key", |b| {
        b.iter(|| {
            runtime
                .block_on(verifier.verify(Some(black_box(&valid))))
                .unwrap()
        })
    });
    // The last fetch was at NOW and the clock is stopped there: an unknown kid is refused from the
    // cache's state alone.
    c.bench_function("fit/refuse_unknown_kid", |b| {
        b.iter(|| {
            let refused = runtime.block_on(verifier.verify(Some(black_box(&unknown))));
            assert_eq!(refused, Err(FitError::UnknownKid));
        })
    });
    assert_eq!(
        source.fetches.load(Ordering::Relaxed),
        1,
        "no fetch while benching"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
