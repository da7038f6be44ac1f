//! Properties over generated input: nothing panics, and the qsh ignores what it must ignore.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use connect_auth::{
    FixedClock, Hs256Verifier, QshMode, RequestParts, SecretString, TokenSource, dangerous,
    extract_token, extract_token_from,
};
use proptest::prelude::*;

/// Query components: plain, reserved, percent escapes (valid and not), `+`, unicode.
fn component() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9._~-]{1,4}",
            Just("+".to_owned()),
            Just("%20".to_owned()),
            Just("%2C".to_owned()),
            Just("%E5%AE%AE".to_owned()),
            Just("%zz".to_owned()),
            Just("%".to_owned()),
            Just(",".to_owned()),
            Just("*".to_owned()),
            "[\u{00e9}\u{4e2d}\u{1f600}]",
        ],
        0..4,
    )
    .prop_map(|parts| parts.concat())
}

fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(
        (
            component().prop_filter("non-empty name", |n| !n.is_empty() && n != "jwt"),
            component(),
        ),
        0..6,
    )
}

fn join(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// 2 000 cases per property on every run; `PROPTEST_CASES=N` searches longer by hand.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn canonicalisation_never_panics(method in ".{0,8}", path in ".{0,40}", query in ".{0,80}", base in ".{0,10}") {
        let request = RequestParts::new(&method, &path, &query).with_base_path(&base);
        let canonical = request.canonical();
        prop_assert!(canonical.matches('&').count() >= 2);
        prop_assert_eq!(request.qsh().len(), 64);
    }

    #[test]
    fn token_handling_never_panics(token in ".{0,300}", header in proptest::option::of(".{0,40}"), query in ".{0,60}") {
        let verifier = Hs256Verifier::with_clock(FixedClock(0));
        let secret = SecretString::from("s");
        let request = RequestParts::new("GET", "/", "");
        let _ = verifier.verify(&token, &secret, &request, QshMode::Computed);
        let _ = dangerous::unverified_issuer(&token);
        let _ = dangerous::decode_unverified(&token);
        let _ = extract_token(header.as_deref(), &query);
        let _ = extract_token_from(TokenSource::HeaderOnly, header.as_deref(), &query);
        let bounded = verifier.clone().max_lifetime(900);
        let _ = bounded.verify(&token, &secret, &request, QshMode::Context);
    }

    #[test]
    fn base64_shaped_garbage_is_refused_not_panicked(a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,60}", c in "[A-Za-z0-9_-]{0,60}") {
        let verifier = Hs256Verifier::with_clock(FixedClock(0));
        let token = format!("{a}.{b}.{c}");
        prop_assert!(verifier.verify(&token, &SecretString::from("s"), &RequestParts::new("GET", "/", ""), QshMode::Computed).is_err());
    }

    #[test]
    fn parameter_order_does_not_change_the_hash(params in params(), seed in any::<u64>()) {
        let mut shuffled = params.clone();
        // A deterministic shuffle from the seed.
        let n = shuffled.len();
        if n > 1 {
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
        }
        let a = RequestParts::new("GET", "/p", &join(&params)).qsh();
        let b = RequestParts::new("GET", "/p", &join(&shuffled)).qsh();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn jwt_parameters_do_not_change_the_hash(params in params(), token in "[A-Za-z0-9._-]{0,40}", at in any::<prop::sample::Index>()) {
        let mut with_jwt = params.clone();
        let i = at.index(with_jwt.len() + 1);
        with_jwt.insert(i, ("jwt".to_owned(), token));
        prop_assert_eq!(
            RequestParts::new("GET", "/p", &join(&params)).qsh(),
            RequestParts::new("GET", "/p", &join(&with_jwt)).qsh()
        );
    }

    #[test]
    fn the_base_path_strips_only_whole_segments(seg in "[a-z]{1,6}", rest in "[a-z]{0,6}", tail in "(/[a-z]{1,5}){0,3}") {
        let base = format!("/{seg}");
        let glued = format!("/{seg}{rest}{tail}");
        let canonical = RequestParts::new("GET", &glued, "").with_base_path(&base).canonical();
        if rest.is_empty() {
            let expected = if tail.is_empty() { "/".to_owned() } else { tail.clone() };
            prop_assert_eq!(canonical, format!("GET&{expected}&"));
        } else {
            prop_assert_eq!(canonical, format!("GET&{glued}&"));
        }
    }
}
