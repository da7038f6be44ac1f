//! The local app serves every URL the descriptor names, through the same handlers as on Lambda.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::Duration;

use understudy::LocalApp;

async fn start(dir: &std::path::Path) -> LocalApp {
    let dir = dir.to_str().unwrap().to_owned();
    LocalApp::start(&move |name| match name {
        "PORT" => Some("0".into()),
        "DATA_DIR" => Some(dir.clone()),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_url_in_the_descriptor_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr());
    let descriptor: serde_json::Value = http
        .get(format!("{base}/atlassian-connect.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        descriptor["baseUrl"],
        format!("http://localhost:{}", app.addr().port())
    );
    let paths = understudy_lifecycle::descriptor::paths(&descriptor);
    assert!(paths.len() >= 8, "{paths:?}");
    for path in paths {
        let method = if path.starts_with("/ui/") {
            reqwest::Method::GET
        } else {
            reqwest::Method::POST
        };
        let response = http
            .request(method, format!("{base}{path}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        // Unsigned requests: every route exists and refuses them as unauthenticated.
        assert_eq!(response.status(), 401, "{path}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "JWT realm=\"understudy\"",
            "{path}"
        );
    }
    assert_eq!(
        http.get(format!("{base}/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_any_handler() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}/webhooks/page_updated", app.addr()))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(app.wait_idle(Duration::from_secs(1)).await);
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_start_on_the_same_data_dir_finds_the_same_key_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = start(dir.path()).await;
    app.shutdown().await;
    let again = start(dir.path()).await;
    assert!(dir.path().join("keyring.json").exists());
    again.shutdown().await;
}
