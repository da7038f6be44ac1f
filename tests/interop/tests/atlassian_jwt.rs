//! This project's Connect JWT code against Atlassian's own atlassian-jwt 2.0.3, in the same run.
//!
//! atlassian-jwt orders query parameters by their decoded names; Confluence (Java) orders them by
//! their encoded names (docs/protocol.md §2). Where the two differ, these tests assert the Java
//! order; everywhere else the two implementations must agree byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use connect_auth::{
    AuthError, FixedClock, Hs256Verifier, InMemoryKeys, InstallVerifier, QshMode, RequestParts,
    SecretString, mint_app_token, sign_hs256,
};
use interop_tests::Oracle;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const PRIVATE_PEM: &str =
    include_str!("../../../shared/connect-auth/tests/fixtures/test-install-key.private.pem");
const PUBLIC_PEM: &str =
    include_str!("../../../shared/connect-auth/tests/fixtures/test-install-key.public.pem");
const SECRET: &str = "interop-shared-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn seed() -> u64 {
    std::env::var("INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_129)
}

/// Percent-encodes like a browser or HTTP client might: either `+` or `%20` for spaces.
fn wire_encode(rng: &mut StdRng, s: &str) -> String {
    let plus = rng.gen_bool(0.5);
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' if plus => out.push('+'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b))
            }
            // Some clients leave these unencoded; both sides must decode them the same.
            b'*' | b'!' | b'(' | b')' | b'\'' | b',' if rng.gen_bool(0.5) => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const NAMES: &[&str] = &[
    "a",
    "aa",
    "a{",
    "a[]",
    "A",
    "b_1",
    "z~",
    "x y",
    "é",
    "中",
    "a.b",
    "JWT",
    "expand",
    "cql",
    "body-format",
    "id",
    "ids",
    "a%",
    "~",
    "Z",
    "a-b",
];
const VALUES: &[&str] = &[
    "",
    "1",
    "10",
    "2",
    "x",
    "some spaces here",
    "body.storage,version",
    "connect*",
    "it's",
    "(x)",
    "!",
    "a+b",
    "宮崎 駿",
    "😀",
    "ｱ",
    "%",
    "a=b",
    "a&b",
    "[1,2]",
    "{\"k\":\"v\"}",
    "-._~",
];

struct Generated {
    method: String,
    url: String,
    path: String,
    query: String,
    base_url: &'static str,
}

fn generate(rng: &mut StdRng) -> Generated {
    let method = ["GET", "POST", "PUT", "DELETE", "patch"]
        .choose(rng)
        .unwrap()
        .to_string();
    let segments = rng.gen_range(0..4);
    let mut path = String::new();
    for _ in 0..segments {
        let seg: String = (0..rng.gen_range(1..6))
            .map(|_| *b"abcxyz019-._~".choose(rng).unwrap() as char)
            .collect();
        path.push('/');
        path.push_str(&seg);
        if rng.gen_bool(0.1) {
            path.push_str("&x");
        }
    }
    if rng.gen_bool(0.2) {
        path.push('/');
    }
    let (base_url, path) = if rng.gen_bool(0.3) {
        ("https://site.atlassian.net/wiki", format!("/wiki{path}"))
    } else {
        (
            "",
            if path.is_empty() {
                "/".to_owned()
            } else {
                path
            },
        )
    };
    let mut pairs = Vec::new();
    for _ in 0..rng.gen_range(0..7) {
        let name = *NAMES.choose(rng).unwrap();
        let name = wire_encode(rng, name);
        if rng.gen_bool(0.05) {
            pairs.push(name); // a name without `=`
        } else {
            let value = *VALUES.choose(rng).unwrap();
            let value = wire_encode(rng, value);
            pairs.push(format!("{name}={value}"));
        }
    }
    if rng.gen_bool(0.2) {
        pairs.insert(
            rng.gen_range(0..=pairs.len()),
            "jwt=ignored.token.value".to_owned(),
        );
    }
    let query = pairs.join("&");
    let url = if query.is_empty() {
        format!("https://site.atlassian.net{path}")
    } else {
        format!("https://site.atlassian.net{path}?{query}")
    };
    Generated {
        method,
        url,
        path,
        query,
        base_url,
    }
}

/// The canonical request with its parameters re-ordered by encoded name: Atlassian's Java order.
fn in_java_order(canonical: &str) -> String {
    let mut parts = canonical.splitn(3, '&');
    let (method, path, query) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap_or(""),
    );
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_by_key(|p| p.split('=').next().unwrap_or(""));
    format!("{method}&{path}&{}", pairs.join("&"))
}

fn base_path(base_url: &str) -> &str {
    base_url
        .strip_prefix("https://site.atlassian.net")
        .unwrap_or("")
}

#[test]
fn generated_requests_hash_the_same_as_atlassian_jwt_except_where_java_orders_differently() {
    let mut oracle = Oracle::start().unwrap();
    let mut rng = StdRng::seed_from_u64(seed());
    let (mut same, mut java_order) = (0, 0);
    for _ in 0..400 {
        let g = generate(&mut rng);
        let ours =
            RequestParts::new(&g.method, &g.path, &g.query).with_base_path(base_path(g.base_url));
        let theirs = oracle
            .call(&json!({"op": "qsh", "method": g.method, "url": g.url, "baseUrl": g.base_url}))
            .unwrap();
        let node_canonical = theirs["canonical"].as_str().unwrap();
        if node_canonical == ours.canonical() {
            assert_eq!(theirs["qsh"], ours.qsh(), "{}", g.url);
            same += 1;
        } else {
            assert_eq!(
                in_java_order(node_canonical),
                ours.canonical(),
                "seed {} url {}",
                seed(),
                g.url
            );
            java_order += 1;
        }
    }
    eprintln!("{same} requests agreed byte for byte, {java_order} needed the Java order");
    assert!(same >= 200, "only {same} requests agreed byte for byte");
    assert!(
        java_order > 0,
        "no generated request exercised the Java ordering"
    );
}

#[test]
fn the_documented_ordering_difference_is_resolved_in_favour_of_java() {
    let mut oracle = Oracle::start().unwrap();
    let theirs = oracle
        .call(
            &json!({"op": "qsh", "method": "GET", "url": "https://x/t?aa=1&a%7B=2", "baseUrl": ""}),
        )
        .unwrap();
    assert_eq!(
        theirs["canonical"], "GET&/t&aa=1&a%7B=2",
        "atlassian-jwt changed its order"
    );
    assert_eq!(
        RequestParts::new("GET", "/t", "aa=1&a%7B=2").canonical(),
        "GET&/t&a%7B=2&aa=1"
    );
}

#[test]
fn hs256_tokens_cross_verify_in_both_directions() {
    let mut oracle = Oracle::start().unwrap();
    let mut rng = StdRng::seed_from_u64(seed() ^ 0x5eed);
    let secret = SecretString::from(SECRET);
    let now = now();
    let verifier = Hs256Verifier::with_clock(FixedClock(now));
    let mut checked = 0;
    while checked < 60 {
        let g = generate(&mut rng);
        let ours =
            RequestParts::new(&g.method, &g.path, &g.query).with_base_path(base_path(g.base_url));
        let theirs = oracle
            .call(&json!({"op": "qsh", "method": g.method, "url": g.url, "baseUrl": g.base_url}))
            .unwrap();
        let claims = json!({"iss": "client-1", "sub": "user-1", "iat": now, "exp": now + 180, "qsh": theirs["qsh"]});
        let node_token = oracle
            .call(&json!({"op": "encodeSymmetric", "payload": claims, "secret": SECRET}))
            .unwrap();
        let node_token = node_token["token"].as_str().unwrap();
        let result = verifier.verify(node_token, &secret, &ours, QshMode::Computed);
        if theirs["qsh"] == ours.qsh() {
            assert_eq!(result.unwrap().iss, "client-1");
        } else {
            // Node's qsh for such a request is one Confluence would refuse too.
            assert_eq!(result, Err(AuthError::QshMismatch), "{}", g.url);
            continue;
        }

        let our_token = sign_hs256(
            &json!({"iss": "client-1", "iat": now, "exp": now + 180, "qsh": ours.qsh()}),
            &secret,
        )
        .unwrap();
        let decoded = oracle
            .call(&json!({"op": "decodeSymmetric", "token": our_token, "secret": SECRET}))
            .unwrap();
        assert_eq!(decoded["claims"]["qsh"], theirs["qsh"]);
        let refused =
            oracle.call(&json!({"op": "decodeSymmetric", "token": our_token, "secret": "wrong"}));
        assert!(
            refused.is_err(),
            "atlassian-jwt accepted a token under the wrong secret"
        );
        checked += 1;
    }
}

#[test]
fn app_tokens_for_confluence_carry_the_qsh_atlassian_jwt_computes() {
    let mut oracle = Oracle::start().unwrap();
    let base = url::Url::parse("https://site.atlassian.net/wiki").unwrap();
    for (method, url) in [
        (
            "GET",
            "https://site.atlassian.net/wiki/api/v2/pages/123?body-format=storage",
        ),
        ("PUT", "https://site.atlassian.net/wiki/api/v2/pages/123"),
        (
            "GET",
            "https://site.atlassian.net/wiki/rest/api/content/123/restriction/byOperation/update/user?accountId=5b10ac8d82e05b22cc7d4ef5",
        ),
        (
            "GET",
            "https://site.atlassian.net/wiki/rest/api/user/current",
        ),
    ] {
        let token = mint_app_token(
            "understudy",
            "client-1",
            &SecretString::from(SECRET),
            method,
            &url::Url::parse(url).unwrap(),
            &base,
            now(),
        )
        .unwrap();
        let decoded = oracle
            .call(&json!({"op": "decodeSymmetric", "token": token, "secret": SECRET}))
            .unwrap();
        let theirs = oracle
            .call(&json!({"op": "qsh", "method": method, "url": url, "baseUrl": base.as_str()}))
            .unwrap();
        assert_eq!(decoded["claims"]["qsh"], theirs["qsh"], "{method} {url}");
        assert_eq!(decoded["claims"]["aud"], json!(["client-1"]));
    }
}

#[tokio::test]
async fn signed_installs_from_atlassian_jwt_verify_here_and_ours_verify_there() {
    let mut oracle = Oracle::start().unwrap();
    let now = now();
    let install = RequestParts::new("POST", "/installed", "");
    let claims = json!({"iss": "client-1", "aud": ["https://app.example.com"], "iat": now, "exp": now + 180, "qsh": install.qsh()});
    let token = oracle.call(&json!({"op": "encodeAsymmetric", "payload": claims, "privateKey": PRIVATE_PEM, "kid": "interop-kid"})).unwrap();
    let keys = InMemoryKeys::new();
    keys.insert_pem("interop-kid", PUBLIC_PEM.as_bytes())
        .unwrap();
    let verifier = InstallVerifier::with_clock(keys, ["https://app.example.com/"], FixedClock(now));
    let verified = verifier
        .verify(token["token"].as_str().unwrap(), &install)
        .await
        .unwrap();
    assert_eq!(verified.iss, "client-1");
    let uninstall = RequestParts::new("POST", "/uninstalled", "");
    assert_eq!(
        verifier
            .verify(token["token"].as_str().unwrap(), &uninstall)
            .await,
        Err(AuthError::QshMismatch)
    );

    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("interop-kid".into());
    let ours = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(PRIVATE_PEM.as_bytes()).unwrap(),
    )
    .unwrap();
    let decoded = oracle
        .call(&json!({"op": "decodeAsymmetric", "token": ours, "publicKey": PUBLIC_PEM}))
        .unwrap();
    assert_eq!(decoded["claims"]["iss"], "client-1");
    let _: Value = decoded;
}
