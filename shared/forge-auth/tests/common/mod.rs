//! Test keys, a JWKS built from them, FIT signing, and a counting JWKS source.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use forge_auth::{AppId, FitVerifier, JwksSource, JwksUnavailable, ManualClock};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

pub const NOW: i64 = 1_780_000_000;
pub const APP_ID: &str = "ari:cloud:ecosystem::app/8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93";
pub const OTHER_APP_ID: &str = "ari:cloud:ecosystem::app/11111111-2222-3333-4444-555555555555";
pub const KID_1: &str = "forge-test-key-1";
pub const KID_2: &str = "forge-test-key-2";
pub const PRIVATE_1: &[u8] = include_bytes!("../fixtures/fit-test-key-1.private.pem");
pub const PUBLIC_1: &str = include_str!("../fixtures/fit-test-key-1.public.pem");
pub const PRIVATE_2: &[u8] = include_bytes!("../fixtures/fit-test-key-2.private.pem");
pub const PUBLIC_2: &str = include_str!("../fixtures/fit-test-key-2.public.pem");

/// The JWK (as JSON) of a PEM public key, under `kid`.
pub fn jwk_json(kid: &str, public_pem: &str) -> Value {
    let key = rsa::RsaPublicKey::from_public_key_pem(public_pem).unwrap();
    json!({
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

/// A JWKS document with the given keys.
pub fn jwks_json(keys: &[(&str, &str)]) -> Value {
    json!({ "keys": keys.iter().map(|(kid, pem)| jwk_json(kid, pem)).collect::<Vec<_>>() })
}

pub fn jwks(keys: &[(&str, &str)]) -> JwkSet {
    serde_json::from_value(jwks_json(keys)).unwrap()
}

/// The claims of a FIT as Forge documents them, for `APP_ID`, valid at `NOW`.
pub fn claims() -> Value {
    json!({
        "iss": "forge/invocation-token",
        "aud": APP_ID,
        "iat": NOW - 5,
        "nbf": NOW - 5,
        "exp": NOW + 20,
        "jti": "7a1c4e0f-5b2d-4c8e-9f3a-6d1b0e2c4a57",
        "app": {
            "id": APP_ID,
            "version": "12",
            "installationId": "ari:cloud:ecosystem::installation/0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4",
            "apiBaseUrl": "https://api.atlassian.com/ex/confluence/5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
            "environment": { "type": "DEVELOPMENT", "id": "c5d6e7f8-0000-4000-8000-000000000001" },
            "module": { "type": "core:endpoint", "key": "page-events" },
            "license": { "isActive": true },
            "installation": {
                "contexts": [{
                    "name": "confluence",
                    "apiBaseUrl": "https://api.atlassian.com/ex/confluence/5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
                    "cloudId": "5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
                    "somethingNew": 1
                }]
            },
            "unknownField": "ignored"
        },
        "context": {
            "cloudId": "5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
            "siteUrl": "https://example.atlassian.net",
            "extension": { "type": "confluence:contentBylineItem" }
        },
        "principal": "5be24ad8b1653240376955d2"
    })
}

/// Signs `claims` RS256 with a private PEM, under `kid`.
pub fn sign(claims: &Value, private_pem: &[u8], kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(private_pem).unwrap(),
    )
    .unwrap()
}

/// A FIT signed by key 1 with the default claims.
pub fn fit() -> String {
    sign(&claims(), PRIVATE_1, KID_1)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Builds a token from raw header and claims JSON and a raw signature segment.
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()),
        signature
    )
}

/// A JWKS source that counts fetches, can be taken down, and can hold fetches at a gate.
pub struct Counting {
    pub set: Mutex<JwkSet>,
    pub fetches: AtomicUsize,
    pub down: AtomicBool,
    pub gate: Option<tokio::sync::Semaphore>,
}

impl Counting {
    pub fn new(set: JwkSet) -> Arc<Self> {
        Arc::new(Self {
            set: Mutex::new(set),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            gate: None,
        })
    }
    pub fn gated(set: JwkSet) -> Arc<Self> {
        Arc::new(Self {
            set: Mutex::new(set),
            fetches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            gate: Some(tokio::sync::Semaphore::new(0)),
        })
    }
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    pub fn replace(&self, set: JwkSet) {
        *self.set.lock().unwrap() = set;
    }
    pub fn open(&self) {
        if let Some(gate) = &self.gate {
            gate.add_permits(1000);
        }
    }
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counting")
    }
}

#[async_trait]
impl JwksSource for Counting {
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(JwksUnavailable("test JWKS down".into()));
        }
        Ok(self.set.lock().unwrap().clone())
    }
}

pub type Verifier = FitVerifier<Arc<Counting>, Arc<ManualClock>>;

/// A verifier for `APP_ID` at `NOW`, with key 1 in the source.
pub fn verifier() -> (Verifier, Arc<Counting>, Arc<ManualClock>) {
    let source = Counting::new(jwks(&[(KID_1, PUBLIC_1)]));
    let clock = ManualClock::at(NOW);
    let verifier = FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Arc::clone(&source),
        Arc::clone(&clock),
    );
    (verifier, source, clock)
}
