//! Forge Invocation Tokens: `FitVerifier` against tokens signed by an independent library (`jose`
//! on npm, pinned in package.json), and `jose` against a token signed by this project's test key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use async_trait::async_trait;
use forge_auth::{AppId, FitError, FitVerifier, JwksSource, JwksUnavailable, ManualClock};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const PRIVATE_1: &str =
    include_str!("../../../shared/forge-auth/tests/fixtures/fit-test-key-1.private.pem");
const PUBLIC_1: &str =
    include_str!("../../../shared/forge-auth/tests/fixtures/fit-test-key-1.public.pem");
const PRIVATE_2: &str =
    include_str!("../../../shared/forge-auth/tests/fixtures/fit-test-key-2.private.pem");
const KID: &str = "forge-interop-key";
const APP_ID: &str = "ari:cloud:ecosystem::app/8f2b0d6e-3c1a-4e5b-9a7d-2f6c4b1e0a93";
const OTHER_APP_ID: &str = "ari:cloud:ecosystem::app/11111111-2222-3333-4444-555555555555";
const NOW: i64 = 1_780_000_000;

/// `node jose-oracle.mjs`; ended when dropped.
struct Jose {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Jose {
    fn start() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        assert!(
            dir.join("node_modules/jose/package.json").exists(),
            "jose is not installed in {}: run the README's test command (bash tests/run.sh), or `npm ci` in that folder",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("jose-oracle.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn call(&mut self, request: &Value) -> Result<Value, String> {
        writeln!(self.stdin, "{request}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        if answer["ok"] == json!(true) {
            Ok(answer)
        } else {
            Err(answer["error"].as_str().unwrap_or("unknown").to_owned())
        }
    }

    /// The JWKS with key 1 under `KID`, exported by jose (not by this project's code).
    fn jwks(&mut self) -> Value {
        let answer = self
            .call(&json!({"op": "jwk", "publicKey": PUBLIC_1, "kid": KID}))
            .unwrap();
        json!({ "keys": [answer["jwk"]] })
    }

    fn sign(&mut self, payload: &Value, private_pem: &str) -> String {
        let answer = self
            .call(&json!({"op": "signFit", "payload": payload, "privateKey": private_pem, "kid": KID}))
            .unwrap();
        answer["token"].as_str().unwrap().to_owned()
    }
}

impl Drop for Jose {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Fixed(JwkSet);

#[async_trait]
impl JwksSource for Fixed {
    async fn fetch(&self) -> Result<JwkSet, JwksUnavailable> {
        Ok(self.0.clone())
    }
}

fn payload(aud: &str) -> Value {
    json!({
        "iss": "forge/invocation-token",
        "aud": aud,
        "iat": NOW - 5,
        "nbf": NOW - 5,
        "exp": NOW + 20,
        "jti": "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
        "app": {
            "id": aud,
            "installationId": "ari:cloud:ecosystem::installation/0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4",
            "apiBaseUrl": "https://api.atlassian.com/ex/confluence/5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
            "environment": { "type": "PRODUCTION", "id": "e1" },
            "module": { "type": "core:endpoint", "key": "page-events" },
            "installation": { "contexts": [{
                "name": "confluence",
                "apiBaseUrl": "https://api.atlassian.com/ex/confluence/5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c",
                "cloudId": "5e7a9c1b-2d3f-4e5a-8b6c-7d9e0f1a2b3c"
            }]}
        },
        "principal": "5be24ad8b1653240376955d2"
    })
}

fn verifier(jwks: &Value) -> FitVerifier<Fixed, std::sync::Arc<ManualClock>> {
    let set: JwkSet = forge_auth::parse_jwks(&serde_json::to_vec(jwks).unwrap()).unwrap();
    assert_eq!(set.keys.len(), 1);
    FitVerifier::with_clock(
        AppId::parse(APP_ID).unwrap(),
        Fixed(set),
        ManualClock::at(NOW),
    )
}

#[tokio::test]
async fn fits_signed_by_jose_verify_and_forgeries_do_not() {
    let mut jose = Jose::start();
    let jwks = jose.jwks();
    let verifier = verifier(&jwks);

    let token = jose.sign(&payload(APP_ID), PRIVATE_1);
    let claims = verifier
        .verify(Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert_eq!(claims.app.id, APP_ID);
    assert_eq!(
        claims.app.installation_id,
        "ari:cloud:ecosystem::installation/0b9e1d2c-3a4f-4b5c-8d6e-7f8091a2b3c4"
    );
    assert_eq!(claims.app.contexts.len(), 1);
    assert_eq!(
        claims.principal.as_deref(),
        Some("5be24ad8b1653240376955d2")
    );
    assert_eq!(claims.jti, "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0");
    assert_eq!((claims.iat, claims.exp), (NOW - 5, NOW + 20));

    // Another app's token, properly signed: refused on the configured audience.
    let other = jose.sign(&payload(OTHER_APP_ID), PRIVATE_1);
    assert_eq!(
        verifier.verify(Some(&format!("Bearer {other}"))).await,
        Err(FitError::WrongAudience)
    );
    // Signed by another key under the JWKS's kid.
    let forged = jose.sign(&payload(APP_ID), PRIVATE_2);
    assert_eq!(
        verifier.verify(Some(&format!("Bearer {forged}"))).await,
        Err(FitError::BadSignature)
    );
}

#[test]
fn jose_verifies_a_fit_signed_by_our_test_key() {
    let mut jose = Jose::start();
    let jwks = jose.jwks();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let key = EncodingKey::from_rsa_pem(PRIVATE_1.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &payload(APP_ID), &key).unwrap();

    let answer = jose
        .call(&json!({"op": "verifyFit", "token": token, "jwks": jwks, "audience": APP_ID, "now": NOW}))
        .unwrap();
    assert_eq!(answer["claims"]["app"]["id"], json!(APP_ID));
    assert_eq!(answer["header"]["kid"], json!(KID));

    // The oracle is not vacuous: it refuses the same token for another audience, and expired.
    assert!(
        jose.call(&json!({"op": "verifyFit", "token": token, "jwks": jwks, "audience": OTHER_APP_ID, "now": NOW}))
            .is_err()
    );
    assert!(
        jose.call(&json!({"op": "verifyFit", "token": token, "jwks": jwks, "audience": APP_ID, "now": NOW + 60}))
            .is_err()
    );
}
