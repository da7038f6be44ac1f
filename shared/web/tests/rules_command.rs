//! `understudy-rules check`: a document is checked as the webhooks function checks it, before
//! anything is stored, and a refusal says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_understudy-rules"))
        .args(args)
        .env_remove("TABLE_NAME")
        .env_remove("KMS_KEY_ID")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_valid_document_and_refuses_a_broken_one_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"rules": [{"name": "stamp", "events": ["page_updated"], "edit": [{"append": "<p>ok</p>"}]}]}"#,
    )
    .unwrap();
    let (ok, said) = run(&["check", good.to_str().unwrap()]);
    assert!(ok, "{said}");
    assert!(said.contains("1 rules, valid"), "{said}");

    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        r#"{"rules": [{"name": "stamp", "events": ["page_updated"], "edit": [], "colour": 1}]}"#,
    )
    .unwrap();
    let (ok, said) = run(&["check", broken.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        said.contains("rule 1 (`stamp`)") && said.contains("colour"),
        "{said}"
    );

    // Writing needs the stack's table: without its settings, the command says which.
    let (ok, said) = run(&["set", good.to_str().unwrap()]);
    assert!(!ok);
    assert!(said.contains("TABLE_NAME"), "{said}");
    let (ok, said) = run(&["nonsense"]);
    assert!(!ok);
    assert!(said.contains("usage"), "{said}");
}
