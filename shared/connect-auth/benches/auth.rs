//! The three hot operations: qsh of a webhook request, HS256 verify of a webhook token (qsh
//! included), RS256 verify of a signed install (key cached, as in a warm function).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use connect_auth::{
    FixedClock, Hs256Verifier, InMemoryKeys, InstallVerifier, QshMode, RequestParts, SecretString,
    sign_hs256,
};
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const NOW: i64 = 1_750_000_000;
const PRIVATE_PEM: &[u8] = include_bytes!("../tests/fixtures/test-install-key.private.pem");
const PUBLIC_PEM: &[u8] = include_bytes!("../tests/fixtures/test-install-key.public.pem");

fn webhook() -> RequestParts<'static> {
    RequestParts::new("POST", "/webhooks/page_updated", "")
}

fn bench(c: &mut Criterion) {
    let secret = SecretString::from("a-shared-secret-of-typical-length-0123456789abcdef");
    let request = webhook();
    let token = sign_hs256(
        &json!({"iss": "a1b2c3d4-client-key", "sub": "557058:0000-1111", "iat": NOW, "exp": NOW + 180,
                "qsh": request.qsh(), "context": {}}),
        &secret,
    )
    .unwrap();
    let verifier = Hs256Verifier::with_clock(FixedClock(NOW));

    c.bench_function("qsh/webhook", |b| {
        b.iter(|| black_box(black_box(&request).qsh()))
    });
    c.bench_function("hs256/verify_webhook_with_qsh", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&token), &secret, &request, QshMode::Computed)
                .unwrap()
        })
    });

    let install = RequestParts::new("POST", "/installed", "");
    let keys = InMemoryKeys::new();
    keys.insert_pem("bench-kid", PUBLIC_PEM).unwrap();
    let installs = InstallVerifier::with_clock(keys, ["https://app.example.com"], FixedClock(NOW));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench-kid".into());
    let install_token = jsonwebtoken::encode(
        &header,
        &json!({"iss": "a1b2c3d4-client-key", "aud": ["https://app.example.com"], "iat": NOW,
                "exp": NOW + 180, "qsh": install.qsh()}),
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("rs256/verify_signed_install", |b| {
        b.iter(|| {
            runtime
                .block_on(installs.verify(black_box(&install_token), &install))
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
