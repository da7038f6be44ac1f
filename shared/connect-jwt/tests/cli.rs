//! The CLI as a vendor uses it: run the binary, read stdout, stderr and the exit status.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connect-jwt"))
        .args(args)
        .env_remove("CONNECT_JWT_SECRET")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn qsh_prints_the_canonical_request_then_the_hash() {
    let o = run(&[
        "qsh",
        "GET",
        "https://example.com/test?param=some+spaces+in+this+parameter",
    ]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "GET&/test&param=some%20spaces%20in%20this%20parameter\nef4097d05395eaf1a133956f140116a9c411afad768d4f06daac9e305764265d\n"
    );
    let o = run(&[
        "qsh",
        "GET",
        "https://x.atlassian.net/wiki/api/v2/pages/123?body-format=storage",
        "--base-url",
        "https://x.atlassian.net/wiki",
    ]);
    assert_eq!(
        stdout(&o).lines().next(),
        Some("GET&/api/v2/pages/123&body-format=storage")
    );
}

#[test]
fn a_signed_token_verifies_and_fails_for_another_request_with_a_hint() {
    let o = run(&[
        "sign",
        "--secret",
        "s3cret",
        "--iss",
        "client-1",
        "--sub",
        "user-1",
        "POST",
        "http://localhost:3000/webhooks/page_updated",
    ]);
    assert!(o.status.success());
    let token = stdout(&o).trim().to_owned();

    let ok = run(&[
        "verify",
        "--secret",
        "s3cret",
        "--token",
        &token,
        "POST",
        "/webhooks/page_updated",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let claims: serde_json::Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(claims["iss"], "client-1");

    let bad = run(&[
        "verify",
        "--secret",
        "s3cret",
        "--token",
        &token,
        "POST",
        "/webhooks/page_created",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(bad.stdout.is_empty());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("POST&/webhooks/page_created&"), "{err}");
    assert!(!err.contains("s3cret") && !err.contains(&token));
}

#[test]
fn verify_reads_the_token_from_the_jwt_parameter_and_honours_now() {
    // A vector from Atlassian's interoperability test; it expired in 2014.
    let url = "https://example.com/test?param=value&jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEzOTIyMDQ2NDIsInN1YiI6IjEyMzQ1Njc4OSIsImlzcyI6ImppcmE6MTIzNC01Njc4LTkwMDAiLCJxc2giOiJiZTE2OTEwODU4YTQxZmQxOWVhNWMxYjRlOWRlY2NhOWE3ODRkMTAyNGNiMDBiMjE1OGRlZmUyZjI5ZGM4NmRkIiwiaWF0IjoxMzkyMjA0NDYyfQ.RX2cWoT3uD8W355G71nkAwZOAl36COJqRkgfIbsjVW8";
    let ok = run(&[
        "verify",
        "--secret",
        "s0m3-sh@r3d-s3cr37",
        "--now",
        "1392204500",
        "GET",
        url,
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let expired = run(&["verify", "--secret", "s0m3-sh@r3d-s3cr37", "GET", url]);
    assert_eq!(expired.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(expired.stderr).unwrap(),
        "connect-jwt: JWT expired\n"
    );
}

#[test]
fn decode_marks_its_output_unverified_and_bad_input_is_one_line() {
    let o = run(&[
        "sign", "--secret", "x", "--iss", "i", "--ttl", "600", "GET", "/p",
    ]);
    let token = stdout(&o).trim().to_owned();
    let d = run(&["decode", &token]);
    let text = stdout(&d);
    assert!(text.starts_with("UNVERIFIED"), "{text}");
    assert!(
        text.contains("expires in 10 min") || text.contains("expires in 9 min"),
        "{text}"
    );

    let bad = run(&["decode", "not-a-token"]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
}
