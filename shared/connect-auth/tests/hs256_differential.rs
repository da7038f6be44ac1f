//! Issue 19: `Hs256Verifier::verify` checks the signature with `hmac` + `sha2` and reads the header
//! and the claims once each, instead of going through `jsonwebtoken::decode`. This compares it with
//! the jsonwebtoken-based verifier it replaced, kept below as the oracle ([`previous`]), over
//! generated tokens: the same claims when accepted, the same `AuthError` when refused.
//!
//! `Hs256Verifier::verify_request` also reads the claims once (for the issuer, then for the checks
//! once the signature holds) where it read them twice; it is compared with the request-level flow
//! it replaced ([`previous_request`]), over the same tokens, with and without a rotated secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use connect_auth::{
    AuthError, Claims, ExposeSecret, FixedClock, Hs256Verifier, QshMode, RequestParts,
    SecretString, TenantSecrets,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};

const NOW: i64 = 1_750_000_000;

/// The verifier as it was before issue 19, copied from the crate with only visibility changes:
/// `require_alg`, then `jsonwebtoken::decode` with `signature_only(Algorithm::HS256)`, then
/// `RawClaims::into_claims`, `check_times`, `check_lifetime` and `check_qsh` (which hashed
/// `request.canonical()` into a hex `String`).
mod previous {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use connect_auth::{
        Audience, AuthError, CONTEXT_QSH, Claims, ExposeSecret, MAX_TOKEN_LEN, QshMode,
        RequestParts, SecretString,
    };
    use jsonwebtoken::errors::ErrorKind;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde::Deserialize;
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;

    #[derive(Debug, Clone, Copy)]
    pub struct Settings {
        pub now: i64,
        pub leeway: i64,
        pub max_lifetime: Option<i64>,
    }

    struct Segments<'a> {
        header: &'a str,
    }

    fn split(token: &str) -> Result<Segments<'_>, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token too long"));
        }
        let mut parts = token.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(_claims), Some(_signature), None) => Ok(Segments { header }),
            _ => Err(AuthError::Malformed("not three dot-separated parts")),
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct JoseHeader {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        typ: Option<String>,
    }

    pub fn require_alg(token: &str, expected: &'static str) -> Result<(), AuthError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(split(token)?.header)
            .map_err(|_| AuthError::Malformed("header is not base64url"))?;
        let header: JoseHeader = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
        if header.alg != expected {
            return Err(AuthError::WrongAlgorithm { expected });
        }
        Ok(())
    }

    fn signature_only(alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation
    }

    fn map_jwt_error(err: &jsonwebtoken::errors::Error) -> AuthError {
        match err.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm {
                expected: "the route's algorithm",
            },
            ErrorKind::Base64(_) => AuthError::Malformed("a segment is not base64url"),
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed("a segment is not JSON")
            }
            ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
                AuthError::KeyUnavailable("the public key is not a usable RSA key".into())
            }
            _ => AuthError::Malformed("token could not be decoded"),
        }
    }

    #[derive(Debug, Deserialize)]
    struct RawClaims {
        iss: Option<String>,
        sub: Option<String>,
        aud: Option<Audience>,
        iat: Option<i64>,
        exp: Option<i64>,
        nbf: Option<i64>,
        qsh: Option<String>,
        context: Option<serde_json::Value>,
    }

    impl RawClaims {
        fn into_claims(self) -> Result<Claims, AuthError> {
            Ok(Claims {
                iss: self
                    .iss
                    .filter(|s| !s.is_empty())
                    .ok_or(AuthError::MissingClaim("iss"))?,
                iat: self.iat.ok_or(AuthError::MissingClaim("iat"))?,
                exp: self.exp.ok_or(AuthError::MissingClaim("exp"))?,
                qsh: self.qsh,
                sub: self.sub,
                aud: self.aud,
                nbf: self.nbf,
                context: self.context,
            })
        }
    }

    fn check_times(claims: &Claims, now: i64, leeway: i64) -> Result<(), AuthError> {
        if now >= claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        let earliest = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
        if earliest > now.saturating_add(leeway) {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    fn check_lifetime(claims: &Claims, now: i64, leeway: i64, max: i64) -> Result<(), AuthError> {
        if claims.iat < now.saturating_sub(max.saturating_add(leeway)) {
            return Err(AuthError::IssuedTooLongAgo);
        }
        if claims.exp.saturating_sub(claims.iat) > max {
            return Err(AuthError::LifetimeTooLong);
        }
        Ok(())
    }

    fn check_qsh(
        claimed: Option<&str>,
        mode: QshMode,
        request: &RequestParts<'_>,
    ) -> Result<(), AuthError> {
        let claimed = claimed.ok_or(AuthError::MissingQsh)?;
        let matches = |expected: &str| bool::from(claimed.as_bytes().ct_eq(expected.as_bytes()));
        let qsh = || hex::encode(Sha256::digest(request.canonical().as_bytes()));
        match mode {
            QshMode::Context if matches(CONTEXT_QSH) => Ok(()),
            QshMode::Context => Err(AuthError::QshMismatch),
            QshMode::Computed if claimed == CONTEXT_QSH => Err(AuthError::ContextQshNotAllowed),
            QshMode::Computed if matches(&qsh()) => Ok(()),
            QshMode::Computed => Err(AuthError::QshMismatch),
        }
    }

    pub fn verify(
        token: &str,
        secret: &SecretString,
        request: &RequestParts<'_>,
        mode: QshMode,
        settings: Settings,
    ) -> Result<Claims, AuthError> {
        // What `Hs256Verifier::leeway` and `max_lifetime` store.
        let leeway = settings.leeway.max(0);
        let max_lifetime = settings.max_lifetime.map(|m| m.max(0));
        require_alg(token, "HS256")?;
        let key = DecodingKey::from_secret(secret.expose_secret().as_bytes())
            .map_err(|_| AuthError::BadSignature)?;
        let raw = jsonwebtoken::decode::<RawClaims>(token, &key, &signature_only(Algorithm::HS256))
            .map_err(|e| map_jwt_error(&e))?
            .claims;
        let claims = raw.into_claims()?;
        check_times(&claims, settings.now, leeway)?;
        if let Some(max) = max_lifetime {
            check_lifetime(&claims, settings.now, leeway, max)?;
        }
        check_qsh(claims.qsh.as_deref(), mode, request)?;
        Ok(claims)
    }
}

// ---- the requests, secrets and building blocks of generated tokens ------------------------------

fn requests() -> [RequestParts<'static>; 4] {
    [
        RequestParts::new("POST", "/webhooks/page_updated", ""),
        RequestParts::new("POST", "/api/pages/1/edits", ""),
        RequestParts::new("GET", "/wiki/rest/x/", "b=2&a=1&jwt=abc&a=%20").with_base_path("/wiki"),
        RequestParts::new("get", "/t&u", "x=%E5%AE%AE&y&JWT=1"),
    ]
}

const SECRETS: [&str; 6] = [
    "shared-secret-for-tests",
    "",
    "s",
    // One HMAC block exactly, and longer than a block (hashed first).
    "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
    "a-shared-secret-longer-than-one-sha256-block-0123456789abcdef-0123456789abcdef-0123456789",
    "s\u{e9}cr\u{e8}t-\u{1f511}",
];

/// How a claim's value is written.
#[derive(Debug, Clone)]
enum Val {
    /// JSON text as is (may be invalid on purpose).
    Raw(Vec<u8>),
    /// A number of seconds relative to `NOW`.
    Time(i64),
    /// A qsh chosen relative to the request.
    Qsh(QshChoice),
}

#[derive(Debug, Clone, Copy)]
enum QshChoice {
    Right,
    RightUpperCase,
    RightEscaped,
    RightTruncated,
    RightWithSpace,
    OtherRequest,
}

/// The claims' body.
#[derive(Debug, Clone)]
enum Body {
    /// An object of the fields, in the generated order (duplicates possible).
    Object,
    /// The eight fields of the claims struct as an array, in its field order.
    Array,
    /// The object with bytes before and after.
    Wrapped(Vec<u8>, Vec<u8>),
    /// Bytes that ignore the fields.
    Raw(Vec<u8>),
}

/// How a base64url segment is written (the header's and the claims').
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Plain,
    /// With `=` padding.
    Padded,
    /// Standard alphabet (`+`, `/`).
    Standard,
    /// One character replaced.
    Replace(usize, char),
    /// The last character with non-zero trailing bits.
    TrailingBits,
    /// Characters dropped from the end.
    Truncate(usize),
    /// A character added.
    Append(char),
}

/// The signature segment.
#[derive(Debug, Clone)]
enum Signature {
    /// The HMAC, then written as `Encoding` says.
    Mac(Encoding),
    /// Another segment altogether.
    Literal(String),
}

/// How the three segments are joined.
#[derive(Debug, Clone)]
enum Shape {
    Three,
    Extra(String),
    NoSignature,
    Prefix(String),
    Suffix(String),
}

#[derive(Debug, Clone)]
struct Recipe {
    header: Vec<u8>,
    fields: Vec<(String, Val)>,
    body: Body,
    header_encoding: Encoding,
    claims_encoding: Encoding,
    signature: Signature,
    /// Sign the message as sent (true) or the unaltered one (false).
    sign_as_sent: bool,
    /// Sign with another secret than the verifier's.
    sign_with_other: bool,
    shape: Shape,
    secret: usize,
    context_mode: bool,
    request: usize,
    clock: i64,
    leeway: i64,
    max_lifetime: Option<i64>,
}

fn raw(s: &str) -> Val {
    Val::Raw(s.as_bytes().to_vec())
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = "[".repeat(depth).into_bytes();
    v.extend("]".repeat(depth).into_bytes());
    v
}

fn pick(values: Vec<Val>) -> impl Strategy<Value = Val> {
    prop::sample::select(values)
}

fn time_junk() -> Vec<Val> {
    [
        "\"1750000000\"",
        "1750000000.0",
        "1.5",
        "1e3",
        "null",
        "-1",
        "true",
        "[]",
        "{}",
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
    ]
    .into_iter()
    .map(raw)
    .collect()
}

fn iss() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        20 => Just(Some(raw("\"client-1\""))),
        1 => Just(None),
        1 => pick(
            [
                "\"\"", "5", "null", "[\"a\"]", "{}", "true", "\"cl\\u0069ent-1\"",
                "\"\\ud800\"", "\"a\\u0000b\"", "\"x",
            ]
            .into_iter()
            .map(raw)
            .chain([Val::Raw(b"\"\xff\"".to_vec())])
            .collect()
        )
        .prop_map(Some),
    ]
}

fn iat() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        20 => (-1200_i64..60).prop_map(|d| Some(Val::Time(d))),
        1 => Just(None),
        1 => pick(time_junk()).prop_map(Some),
    ]
}

fn exp() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        20 => (-100_i64..1200).prop_map(|d| Some(Val::Time(d))),
        1 => Just(None),
        1 => pick(time_junk()).prop_map(Some),
    ]
}

fn nbf() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        16 => Just(None),
        6 => (-120_i64..120).prop_map(|d| Some(Val::Time(d))),
        1 => pick(time_junk()).prop_map(Some),
    ]
}

fn qsh() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        14 => Just(Some(Val::Qsh(QshChoice::Right))),
        4 => Just(Some(raw("\"context-qsh\""))),
        1 => Just(None),
        3 => prop::sample::select(vec![
            QshChoice::RightUpperCase,
            QshChoice::RightEscaped,
            QshChoice::RightTruncated,
            QshChoice::RightWithSpace,
            QshChoice::OtherRequest,
        ])
        .prop_map(|q| Some(Val::Qsh(q))),
        2 => pick(
            [
                "\"CONTEXT-QSH\"", "\"context-qsh \"", "\"\"", "5", "null", "[]",
                "\"context\\u002dqsh\"",
            ]
            .into_iter()
            .map(raw)
            .collect()
        )
        .prop_map(Some),
    ]
}

fn sub() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        12 => Just(Some(raw("\"557058:0000-1111\""))),
        8 => Just(None),
        1 => pick(["null", "7", "{}", "[\"a\"]"].into_iter().map(raw).collect()).prop_map(Some),
    ]
}

fn aud() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        14 => Just(None),
        2 => pick(
            ["\"x\"", "[\"x\",\"y\"]", "[]", "[1]", "5", "{}", "null", "[\"x\",\"x\"]"]
                .into_iter()
                .map(raw)
                .collect()
        )
        .prop_map(Some),
    ]
}

fn context() -> impl Strategy<Value = Option<Val>> {
    prop_oneof![
        6 => Just(None),
        4 => Just(Some(raw("{}"))),
        3 => Just(Some(raw(
            "{\"user\":{\"accountId\":\"557058:0000-1111\",\"userKey\":\"u\"},\"license\":{\"active\":true}}"
        ))),
        1 => pick(
            [
                raw("\"x\""),
                raw("null"),
                raw("[1,2,{\"a\":null}]"),
                Val::Raw(nested(126)),
                Val::Raw(nested(127)),
                Val::Raw(nested(128)),
                Val::Raw(nested(200)),
                Val::Raw(b"\"\xff\"".to_vec()),
                raw("1e400"),
            ]
            .to_vec()
        )
        .prop_map(Some),
    ]
}

/// Fields the claims struct does not know, and second copies of the ones it does.
fn extras() -> impl Strategy<Value = Vec<(String, Val)>> {
    let extra = prop_oneof![
        Just(("tnt".to_owned(), raw("\"https://x.atlassian.net\""))),
        Just(("x".to_owned(), raw("[1,{\"y\":[null,true]}]"))),
        Just(("deep".to_owned(), Val::Raw(nested(300)))),
        Just(("bad-utf8".to_owned(), Val::Raw(b"\"\xfe\xff\"".to_vec()))),
        Just(("lone".to_owned(), raw("\"\\udc00\""))),
        Just(("iss".to_owned(), raw("\"client-2\""))),
        Just(("exp".to_owned(), Val::Time(60))),
        Just(("qsh".to_owned(), raw("\"context-qsh\""))),
        Just(("context".to_owned(), raw("{}"))),
        Just(("aud".to_owned(), raw("\"x\""))),
        Just(("ISS".to_owned(), raw("5"))),
        // Grows the token around MAX_TOKEN_LEN (8 KiB).
        (5_850_usize..6_250)
            .prop_map(|n| ("pad".to_owned(), raw(&format!("\"{}\"", "p".repeat(n))))),
    ];
    prop_oneof![
        10 => Just(Vec::new()),
        2 => prop::collection::vec(extra, 1..3),
    ]
}

fn fields() -> impl Strategy<Value = Vec<(String, Val)>> {
    (
        (iss(), sub(), aud(), iat()),
        (exp(), nbf(), qsh(), context()),
        extras(),
    )
        .prop_map(|((iss, sub, aud, iat), (exp, nbf, qsh, context), extras)| {
            let named = [
                ("iss", iss),
                ("sub", sub),
                ("aud", aud),
                ("iat", iat),
                ("exp", exp),
                ("nbf", nbf),
                ("qsh", qsh),
                ("context", context),
            ];
            let mut all: Vec<(String, Val)> = named
                .into_iter()
                .filter_map(|(name, value)| value.map(|v| (name.to_owned(), v)))
                .collect();
            all.extend(extras);
            all
        })
        .prop_shuffle()
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        50 => Just(Body::Object),
        2 => Just(Body::Array),
        1 => Just(Body::Wrapped(b" \n\t\r".to_vec(), b"\r\n ".to_vec())),
        1 => Just(Body::Wrapped(Vec::new(), b"x".to_vec())),
        1 => Just(Body::Wrapped(b"\xef\xbb\xbf".to_vec(), Vec::new())),
        1 => Just(Body::Wrapped(b"\x0c".to_vec(), Vec::new())),
        1 => Just(Body::Wrapped(b"[".to_vec(), b"]".to_vec())),
        2 => prop::sample::select(vec![
            b"".to_vec(),
            b"5".to_vec(),
            b"null".to_vec(),
            b"\"s\"".to_vec(),
            b"[]".to_vec(),
            b"{".to_vec(),
            b"not json".to_vec(),
            b"{}".to_vec(),
            b"[\"client-1\",null,null,1750000000,1750000180,null,\"context-qsh\",null]".to_vec(),
            b"[\"client-1\",null,null,1750000000,1750000180,null,\"context-qsh\"]".to_vec(),
        ])
        .prop_map(Body::Raw),
    ]
}

fn header() -> impl Strategy<Value = Vec<u8>> {
    let plain = prop::sample::select(vec![
        br#"{"alg":"HS256","typ":"JWT"}"#.to_vec(),
        br#"{"typ":"JWT","alg":"HS256"}"#.to_vec(),
        br#"{"alg":"HS256"}"#.to_vec(),
    ]);
    let other_valid = prop::sample::select(vec![
        br#"{ "alg" : "HS256" , "typ" : "JWT" }"#.to_vec(),
        b"\n{\"alg\":\"HS256\"}\r\n".to_vec(),
        br#"{"alg":"HS256","kid":"k"}"#.to_vec(),
        br#"{"alg":"HS\u0032\u003556"}"#.to_vec(),
        br#"{"typ":"jwt","alg":"HS256"}"#.to_vec(),
        br#"{"alg":"HS256","cty":"JWT","x5t#S256":"t","url":"u","nonce":"n"}"#.to_vec(),
        br#"{"alg":"HS256","enc":"A128GCM","zip":"DEF","x5c":["a"]}"#.to_vec(),
        br#"{"alg":"HS256","b64":true}"#.to_vec(),
        br#"{"alg":"HS256","crit":["b64"],"b64":true}"#.to_vec(),
        br#"{"alg":"HS256","foo":{"bar":[1,null]}}"#.to_vec(),
        br#"{"alg":"HS256","foo":1,"foo":2}"#.to_vec(),
        br#"{"alg":"HS256","jwk":{"kty":"oct","k":"AAAA"}}"#.to_vec(),
    ]);
    let refused = prop::sample::select(vec![
        // Other algorithms, or none.
        br#"{"alg":"hs256","typ":"JWT"}"#.to_vec(),
        br#"{"alg":"none","typ":"JWT"}"#.to_vec(),
        br#"{"alg":"HS384","typ":"JWT"}"#.to_vec(),
        br#"{"alg":"HS512"}"#.to_vec(),
        br#"{"alg":"RS256","kid":"k"}"#.to_vec(),
        br#"{"alg":""}"#.to_vec(),
        br#"{"alg":" HS256"}"#.to_vec(),
        br#"{"alg":5}"#.to_vec(),
        br#"{"alg":null}"#.to_vec(),
        br#"{"alg":["HS256"]}"#.to_vec(),
        br#"{"typ":"JWT"}"#.to_vec(),
        br#"{}"#.to_vec(),
        // Duplicate fields.
        br#"{"alg":"HS256","alg":"HS256"}"#.to_vec(),
        br#"{"alg":"none","alg":"HS256"}"#.to_vec(),
        br#"{"alg":"HS256","typ":"JWT","typ":"JWT"}"#.to_vec(),
        br#"{"alg":"HS256","cty":"a","cty":"b"}"#.to_vec(),
        // Fields jsonwebtoken types that `require_alg` does not read.
        br#"{"alg":"HS256","kid":5}"#.to_vec(),
        br#"{"alg":"HS256","typ":5}"#.to_vec(),
        br#"{"alg":"HS256","cty":1}"#.to_vec(),
        br#"{"alg":"HS256","jwk":{}}"#.to_vec(),
        br#"{"alg":"HS256","jwk":"k"}"#.to_vec(),
        br#"{"alg":"HS256","x5c":5}"#.to_vec(),
        br#"{"alg":"HS256","enc":5}"#.to_vec(),
        br#"{"alg":"HS256","crit":"b64"}"#.to_vec(),
        br#"{"alg":"HS256","nonce":null,"url":[]}"#.to_vec(),
        // jsonwebtoken's b64 and crit rules.
        br#"{"alg":"HS256","b64":false}"#.to_vec(),
        br#"{"alg":"HS256","b64":"x"}"#.to_vec(),
        br#"{"alg":"HS256","crit":["b64"]}"#.to_vec(),
        br#"{"alg":"HS256","crit":[]}"#.to_vec(),
        br#"{"alg":"HS256","crit":["exp"],"b64":true}"#.to_vec(),
        br#"{"alg":"HS256","crit":["b64","b64"],"b64":true}"#.to_vec(),
        br#"{"alg":"HS256","crit":["b64"],"b64":false}"#.to_vec(),
        // Arrays fill `require_alg`'s struct but not jsonwebtoken's header.
        br#"["HS256"]"#.to_vec(),
        br#"["HS256",null,null]"#.to_vec(),
        br#"["HS256","k","JWT"]"#.to_vec(),
        br#"["none"]"#.to_vec(),
        // Not a header at all.
        br#""HS256""#.to_vec(),
        b"null".to_vec(),
        b"5".to_vec(),
        b"".to_vec(),
        b"{".to_vec(),
        br#"{"alg":"HS256"}x"#.to_vec(),
        b"\xef\xbb\xbf{\"alg\":\"HS256\"}".to_vec(),
        b"{\"alg\":\"HS256\",\"x\":\"\xff\"}".to_vec(),
        b"{\"alg\":\"HS256\",\"typ\":\"\xff\"}".to_vec(),
        br#"{"alg":"HS256","x":"\ud800"}"#.to_vec(),
    ]);
    let deep = prop::sample::select(vec![120_usize, 126, 127, 128, 300]).prop_map(|depth| {
        let mut h = br#"{"alg":"HS256","x":"#.to_vec();
        h.extend(nested(depth));
        h.push(b'}');
        h
    });
    prop_oneof![20 => plain, 4 => other_valid, 6 => refused, 1 => deep]
}

fn encoding() -> impl Strategy<Value = Encoding> {
    let bad_char = prop::sample::select(vec!['+', '/', '=', '!', ' ', '~', '*', '.', '\u{e9}']);
    prop_oneof![
        60 => Just(Encoding::Plain),
        1 => Just(Encoding::Padded),
        1 => Just(Encoding::Standard),
        1 => (any::<usize>(), bad_char).prop_map(|(at, c)| Encoding::Replace(at, c)),
        1 => (any::<usize>(), prop::sample::select(vec!['A', 'z', '0', '-', '_']))
            .prop_map(|(at, c)| Encoding::Replace(at, c)),
        1 => Just(Encoding::TrailingBits),
        1 => (1_usize..4).prop_map(Encoding::Truncate),
        1 => prop::sample::select(vec!['A', '=', '-']).prop_map(Encoding::Append),
    ]
}

fn signature() -> impl Strategy<Value = Signature> {
    prop_oneof![
        12 => encoding().prop_map(Signature::Mac),
        1 => prop::sample::select(vec![
            String::new(),
            "A".repeat(43),
            "A".repeat(42),
            "A".repeat(44),
            "A".repeat(45),
            "A".repeat(100),
            format!("{}!", "A".repeat(99)),
            format!("{}=", "A".repeat(99)),
            "x".to_owned(),
            "AAAA".to_owned(),
            "____".to_owned(),
        ])
        .prop_map(Signature::Literal),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        60 => Just(Shape::Three),
        1 => prop::sample::select(vec![String::new(), "x".to_owned(), "e30".to_owned()]).prop_map(Shape::Extra),
        1 => Just(Shape::NoSignature),
        1 => prop::sample::select(vec![".".to_owned(), " ".to_owned(), "JWT ".to_owned()]).prop_map(Shape::Prefix),
        1 => prop::sample::select(vec![".".to_owned(), " ".to_owned(), "\n".to_owned(), "..".to_owned()]).prop_map(Shape::Suffix),
    ]
}

fn recipe() -> impl Strategy<Value = Recipe> {
    (
        (header(), fields(), body()),
        (encoding(), encoding(), signature()),
        (prop::bool::weighted(0.8), prop::bool::weighted(0.1), shape()),
        (
            prop_oneof![10 => Just(0_usize), 3 => 1_usize..SECRETS.len()],
            prop::bool::weighted(0.3),
            prop_oneof![3 => Just(0_usize), 1 => 1_usize..4],
        ),
        (
            prop_oneof![8 => Just(0_i64), 3 => -60_i64..60, 1 => -3000_i64..3000],
            prop_oneof![6 => Just(30_i64), 1 => Just(0_i64), 1 => Just(120_i64), 1 => Just(-5_i64)],
            prop_oneof![4 => Just(None), 2 => Just(Some(900_i64)), 1 => Just(Some(60_i64)), 1 => Just(Some(-1_i64))],
        ),
    )
        .prop_map(
            |(
                (header, fields, body),
                (header_encoding, claims_encoding, signature),
                (sign_as_sent, sign_with_other, shape),
                (secret, context_mode, request),
                (clock, leeway, max_lifetime),
            )| Recipe {
                header,
                fields,
                body,
                header_encoding,
                claims_encoding,
                signature,
                sign_as_sent,
                sign_with_other,
                shape,
                secret,
                context_mode,
                request,
                clock,
                leeway,
                max_lifetime,
            },
        )
}

// ---- building the token ------------------------------------------------------------------------

fn qsh_of(request: &RequestParts<'_>) -> String {
    hex::encode(Sha256::digest(request.canonical().as_bytes()))
}

fn render_value(value: &Val, request: usize) -> Vec<u8> {
    let all = requests();
    let right = qsh_of(&all[request]);
    match value {
        Val::Raw(bytes) => bytes.clone(),
        Val::Time(offset) => (NOW + offset).to_string().into_bytes(),
        Val::Qsh(choice) => {
            let text = match choice {
                QshChoice::Right => format!("\"{right}\""),
                QshChoice::RightUpperCase => format!("\"{}\"", right.to_ascii_uppercase()),
                QshChoice::RightEscaped => {
                    let first = right.chars().next().unwrap();
                    format!("\"\\u{:04x}{}\"", u32::from(first), &right[1..])
                }
                QshChoice::RightTruncated => format!("\"{}\"", &right[..63]),
                QshChoice::RightWithSpace => format!("\"{right} \""),
                QshChoice::OtherRequest => format!("\"{}\"", qsh_of(&all[(request + 1) % 4])),
            };
            text.into_bytes()
        }
    }
}

fn render_claims(recipe: &Recipe) -> Vec<u8> {
    let object = || {
        let mut out = b"{".to_vec();
        for (i, (name, value)) in recipe.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend(format!("\"{name}\":").into_bytes());
            out.extend(render_value(value, recipe.request));
        }
        out.push(b'}');
        out
    };
    match &recipe.body {
        Body::Object => object(),
        Body::Array => {
            let order = ["iss", "sub", "aud", "iat", "exp", "nbf", "qsh", "context"];
            let mut out = b"[".to_vec();
            for (i, name) in order.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match recipe.fields.iter().find(|(n, _)| n == name) {
                    Some((_, value)) => out.extend(render_value(value, recipe.request)),
                    None => out.extend(b"null"),
                }
            }
            out.push(b']');
            out
        }
        Body::Wrapped(before, after) => {
            let mut out = before.clone();
            out.extend(object());
            out.extend(after);
            out
        }
        Body::Raw(bytes) => bytes.clone(),
    }
}

const URL_SAFE_SYMBOLS: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode(bytes: &[u8], encoding: Encoding) -> String {
    let plain = URL_SAFE_NO_PAD.encode(bytes);
    match encoding {
        Encoding::Plain => plain,
        Encoding::Padded => {
            let padded = URL_SAFE.encode(bytes);
            if padded.ends_with('=') {
                padded
            } else {
                format!("{padded}=")
            }
        }
        Encoding::Standard => STANDARD_NO_PAD.encode(bytes),
        Encoding::Replace(at, c) => {
            let mut chars: Vec<char> = plain.chars().collect();
            if chars.is_empty() {
                return c.to_string();
            }
            let i = at % chars.len();
            chars[i] = c;
            chars.into_iter().collect()
        }
        Encoding::TrailingBits => {
            // With 2 or 3 symbols in the last quantum, the last symbol has unused low bits.
            if plain.len().is_multiple_of(4) {
                return plain;
            }
            let mut symbols = plain.into_bytes();
            let last = symbols.last_mut().unwrap();
            let index = URL_SAFE_SYMBOLS.iter().position(|s| s == last).unwrap();
            *last = URL_SAFE_SYMBOLS[index | 1];
            String::from_utf8(symbols).unwrap()
        }
        Encoding::Truncate(n) => plain[..plain.len().saturating_sub(n)].to_owned(),
        Encoding::Append(c) => format!("{plain}{c}"),
    }
}

fn mac(message: &str, secret: &str) -> String {
    // jsonwebtoken (aws-lc) signs, independently of the verifier's `hmac` + `sha2`; it refuses
    // an empty key, and every verifier refuses an empty secret before using it anyway.
    let secret = if secret.is_empty() { "x" } else { secret };
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap()
}

fn build(recipe: &Recipe) -> String {
    let header = &recipe.header;
    let claims = render_claims(recipe);
    let sent = format!(
        "{}.{}",
        encode(header, recipe.header_encoding),
        encode(&claims, recipe.claims_encoding)
    );
    let unaltered = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(&claims)
    );
    let signing_secret = if recipe.sign_with_other {
        "another-secret"
    } else {
        SECRETS[recipe.secret]
    };
    let signed = if recipe.sign_as_sent {
        &sent
    } else {
        &unaltered
    };
    let signature = match &recipe.signature {
        Signature::Mac(encoding) => {
            let tag = URL_SAFE_NO_PAD.decode(mac(signed, signing_secret)).unwrap();
            encode(&tag, *encoding)
        }
        Signature::Literal(literal) => literal.clone(),
    };
    match &recipe.shape {
        Shape::Three => format!("{sent}.{signature}"),
        Shape::Extra(extra) => format!("{sent}.{signature}.{extra}"),
        Shape::NoSignature => sent,
        Shape::Prefix(prefix) => format!("{prefix}{sent}.{signature}"),
        Shape::Suffix(suffix) => format!("{sent}.{signature}{suffix}"),
    }
}

// ---- the comparison ----------------------------------------------------------------------------

fn mode(recipe: &Recipe) -> QshMode {
    if recipe.context_mode {
        QshMode::Context
    } else {
        QshMode::Computed
    }
}

/// The request-level comparison's tenants: `client-1` alone is known. When `rotated`, its first
/// read still holds a secret it no longer signs with and `find_tenant_again` gives the current one,
/// as a cache does after a rotation.
struct Tenants {
    secret: SecretString,
    rotated: bool,
}

const OLD_SECRET: &str = "the-secret-before-the-rotation";

impl Tenants {
    fn first(&self, issuer: &str) -> Option<SecretString> {
        (issuer == "client-1").then(|| {
            if self.rotated {
                SecretString::from(OLD_SECRET)
            } else {
                self.secret.clone()
            }
        })
    }

    fn again(&self, issuer: &str) -> Option<SecretString> {
        (issuer == "client-1" && self.rotated).then(|| self.secret.clone())
    }
}

#[async_trait::async_trait]
impl TenantSecrets for Tenants {
    type Tenant = SecretString;

    async fn find_tenant(&self, client_key: &str) -> Result<Option<SecretString>, AuthError> {
        Ok(self.first(client_key))
    }

    async fn find_tenant_again(&self, client_key: &str) -> Result<Option<SecretString>, AuthError> {
        Ok(self.again(client_key))
    }

    fn shared_secret<'t>(&self, tenant: &'t SecretString) -> &'t SecretString {
        tenant
    }
}

/// `verify_request` before issue 19: the algorithm, the issuer read unverified, the lookup, then the
/// whole of `verify` (once more with a fresher read after a bad signature).
fn previous_request(
    token: &str,
    tenants: &Tenants,
    request: &RequestParts<'_>,
    mode: QshMode,
    settings: previous::Settings,
) -> Result<Claims, AuthError> {
    previous::require_alg(token, "HS256")?;
    let issuer = connect_auth::dangerous::unverified_issuer(token)?;
    let Some(secret) = tenants.first(&issuer) else {
        return Err(AuthError::UnknownIssuer);
    };
    match previous::verify(token, &secret, request, mode, settings) {
        Err(AuthError::BadSignature) => match tenants.again(&issuer) {
            Some(secret) => previous::verify(token, &secret, request, mode, settings),
            None => Err(AuthError::BadSignature),
        },
        outcome => outcome,
    }
}

/// `verify_request` and the flow it replaced on one token, with and without a rotation.
fn compare_request(
    token: &str,
    secret: &SecretString,
    request: &RequestParts<'_>,
    mode: QshMode,
    settings: previous::Settings,
) -> Result<(), String> {
    let mut verifier = Hs256Verifier::with_clock(FixedClock(settings.now)).leeway(settings.leeway);
    if let Some(max) = settings.max_lifetime {
        verifier = verifier.max_lifetime(max);
    }
    for rotated in [false, true] {
        let tenants = Tenants {
            secret: secret.clone(),
            rotated,
        };
        let current = block_on(verifier.verify_request(&tenants, token, request, mode))
            .map(|verified| verified.claims);
        let before = previous_request(token, &tenants, request, mode, settings);
        if current != before {
            return Err(format!(
                "verify_request, token {token:?} (secret {:?}, rotated {rotated}, {mode:?}, {settings:?}):\n  current  {current:?}\n  previous {before:?}",
                secret.expose_secret()
            ));
        }
    }
    Ok(())
}

/// Runs a future that never waits (the lookups above answer at once).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Both verifiers on one token: the current one must answer exactly as the previous one did.
fn compare(
    token: &str,
    secret: &SecretString,
    request: &RequestParts<'_>,
    mode: QshMode,
    settings: previous::Settings,
) -> Result<Result<Claims, AuthError>, String> {
    let mut verifier = Hs256Verifier::with_clock(FixedClock(settings.now)).leeway(settings.leeway);
    if let Some(max) = settings.max_lifetime {
        verifier = verifier.max_lifetime(max);
    }
    let current = verifier.verify(token, secret, request, mode);
    let before = previous::verify(token, secret, request, mode, settings);
    if current == before {
        Ok(current)
    } else {
        Err(format!(
            "token {token:?} (secret {:?}, {mode:?}, {settings:?}):\n  current  {current:?}\n  previous {before:?}",
            secret.expose_secret()
        ))
    }
}

fn outcome_name(outcome: &Result<Claims, AuthError>) -> String {
    match outcome {
        Ok(_) => "accepted".to_owned(),
        Err(err) => format!("{err:?}"),
    }
}

/// 20 000 generated tokens on every run; `PROPTEST_CASES=N` compares more by hand.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn the_hs256_verifier_answers_as_the_jsonwebtoken_path_did() {
    let tally: RefCell<BTreeMap<String, usize>> = RefCell::new(BTreeMap::new());
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&recipe(), |recipe| {
        let token = build(&recipe);
        let secret = SecretString::from(SECRETS[recipe.secret]);
        let request = requests()[recipe.request];
        let settings = previous::Settings {
            now: NOW + recipe.clock,
            leeway: recipe.leeway,
            max_lifetime: recipe.max_lifetime,
        };
        let outcome = compare(&token, &secret, &request, mode(&recipe), settings)
            .map_err(TestCaseError::fail)?;
        compare_request(&token, &secret, &request, mode(&recipe), settings)
            .map_err(TestCaseError::fail)?;
        *tally
            .borrow_mut()
            .entry(outcome_name(&outcome))
            .or_default() += 1;
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }

    let tally = tally.into_inner();
    let total: usize = tally.values().sum();
    println!("{total} generated tokens, by outcome (the same for both verifiers):");
    for (outcome, count) in &tally {
        println!("{count:>8}  {outcome}");
    }
    // The generator must keep reaching every way a token is accepted or refused.
    let accepted = tally.get("accepted").copied().unwrap_or(0);
    assert!(
        accepted * 25 >= total,
        "only {accepted} of {total} accepted"
    );
    if total >= 5_000 {
        for expected in [
            AuthError::Malformed("token too long"),
            AuthError::Malformed("not three dot-separated parts"),
            AuthError::Malformed("header is not base64url"),
            AuthError::Malformed("header is not a JSON object"),
            AuthError::WrongAlgorithm { expected: "HS256" },
            AuthError::Malformed("a segment is not JSON"),
            AuthError::Malformed("token could not be decoded"),
            AuthError::Malformed("a segment is not base64url"),
            AuthError::BadSignature,
            AuthError::MissingClaim("iss"),
            AuthError::MissingClaim("iat"),
            AuthError::MissingClaim("exp"),
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::LifetimeTooLong,
            AuthError::IssuedTooLongAgo,
            AuthError::MissingQsh,
            AuthError::QshMismatch,
            AuthError::ContextQshNotAllowed,
        ] {
            let name = format!("{expected:?}");
            assert!(tally.contains_key(&name), "no generated token gave {name}");
        }
    }
}

// ---- hand-picked tokens: the edges the generator is meant to reach, always checked -------------

fn signed(header: &[u8], claims: &[u8], secret: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    format!("{message}.{}", mac(&message, secret))
}

fn webhook_claims(qsh: &str) -> Vec<u8> {
    format!(
        r#"{{"iss":"client-1","sub":"u","iat":{NOW},"exp":{},"qsh":"{qsh}","context":{{}}}}"#,
        NOW + 180
    )
    .into_bytes()
}

#[test]
fn hand_picked_tokens_are_judged_as_before_and_as_documented() {
    let secret_text = SECRETS[0];
    let secret = SecretString::from(secret_text);
    let webhook = requests()[0];
    let settings = previous::Settings {
        now: NOW,
        leeway: 30,
        max_lifetime: None,
    };
    let right = qsh_of(&webhook);
    let plain = br#"{"typ":"JWT","alg":"HS256"}"#;
    let valid = signed(plain, &webhook_claims(&right), secret_text);
    let cases: Vec<(String, QshMode, Result<(), AuthError>)> = vec![
        (valid.clone(), QshMode::Computed, Ok(())),
        (
            signed(
                plain,
                &webhook_claims(&right.to_ascii_uppercase()),
                secret_text,
            ),
            QshMode::Computed,
            Err(AuthError::QshMismatch),
        ),
        (
            signed(plain, &webhook_claims("context-qsh"), secret_text),
            QshMode::Computed,
            Err(AuthError::ContextQshNotAllowed),
        ),
        (
            signed(plain, &webhook_claims("context-qsh"), secret_text),
            QshMode::Context,
            Ok(()),
        ),
        (
            signed(plain, &webhook_claims(&right), "another-secret"),
            QshMode::Computed,
            Err(AuthError::BadSignature),
        ),
        (
            format!("{valid}="),
            QshMode::Computed,
            Err(AuthError::Malformed("a segment is not base64url")),
        ),
        (
            format!("{valid}.x"),
            QshMode::Computed,
            Err(AuthError::Malformed("not three dot-separated parts")),
        ),
        // A correctly signed eight-element array: serde would fill the claims struct from it,
        // jsonwebtoken refused it.
        (
            signed(
                plain,
                format!(
                    r#"["client-1",null,null,{NOW},{},null,"{right}",null]"#,
                    NOW + 180
                )
                .as_bytes(),
                secret_text,
            ),
            QshMode::Computed,
            Err(AuthError::Malformed("a segment is not JSON")),
        ),
        // A header array fills `require_alg`'s struct, not jsonwebtoken's header.
        (
            signed(br#"["HS256"]"#, &webhook_claims(&right), secret_text),
            QshMode::Computed,
            Err(AuthError::Malformed("a segment is not JSON")),
        ),
        (
            signed(
                br#"{"alg":"HS256","crit":["b64"]}"#,
                &webhook_claims(&right),
                secret_text,
            ),
            QshMode::Computed,
            Err(AuthError::Malformed("token could not be decoded")),
        ),
        (
            signed(
                br#"{"alg":"HS256","crit":["b64"],"b64":true}"#,
                &webhook_claims(&right),
                secret_text,
            ),
            QshMode::Computed,
            Ok(()),
        ),
        (
            signed(br#"{"alg":"hs256"}"#, &webhook_claims(&right), secret_text),
            QshMode::Computed,
            Err(AuthError::WrongAlgorithm { expected: "HS256" }),
        ),
        (
            signed(br#"{"alg":"HS384"}"#, &webhook_claims(&right), secret_text),
            QshMode::Computed,
            Err(AuthError::WrongAlgorithm { expected: "HS256" }),
        ),
        (
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(webhook_claims(&right))
            ),
            QshMode::Computed,
            Err(AuthError::WrongAlgorithm { expected: "HS256" }),
        ),
        (
            signed(
                plain,
                br#"{"iss":"client-1","iat":"now","exp":1}"#,
                secret_text,
            ),
            QshMode::Computed,
            Err(AuthError::Malformed("a segment is not JSON")),
        ),
    ];
    for (token, mode, expected) in cases {
        let outcome =
            compare(&token, &secret, &webhook, mode, settings).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome.map(|_| ()), expected, "{token}");
    }
    // An empty secret verifies nothing, whatever the token.
    let empty = SecretString::from("");
    let outcome = compare(&valid, &empty, &webhook, QshMode::Computed, settings).unwrap();
    assert_eq!(outcome, Err(AuthError::BadSignature));
}

proptest! {
    #![proptest_config(Config { cases: 2_000, failure_persistence: None, ..Config::default() })]

    /// The qsh is hashed from the canonical request without building it: the same hash as hashing
    /// `canonical()`.
    #[test]
    fn the_qsh_is_the_hash_of_the_canonical_request(
        method in ".{0,8}",
        path in ".{0,40}",
        query in "([a-zA-Z%+&=,*]|.){0,80}",
        base in ".{0,10}",
    ) {
        let request = RequestParts::new(&method, &path, &query).with_base_path(&base);
        prop_assert_eq!(request.qsh(), qsh_of(&request));
    }
}
