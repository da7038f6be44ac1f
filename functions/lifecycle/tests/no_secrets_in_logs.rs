//! At the most verbose log level, a signed install (whose body carries the tenant's shared secret,
//! whose `Authorization` header carries Atlassian's JWT) leaves neither in the logs: not through our
//! code, and not through the Lambda runtime, which logs every raw event at `trace`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::{FixedClock, InMemoryKeys};
use test_support::install::{install_keys, install_token};
use test_support::lambda::api_gateway_event;
use test_support::lambda_runtime_api;
use test_support::logs::{LogCapture, assert_no_secret, json_lines};
use test_support::{NOW, app_env, install_payload};
use understudy_domain::MemoryStore;
use understudy_lifecycle::Lifecycle;
use understudy_web::AppConfig;
use understudy_web::lambda::{serve_http, to_api_request, to_lambda_response};
use understudy_web::telemetry::{self, LogFormat};

const CLIENT: &str = "7c3a1a66-4b1d-4f5e-9a57-1b2c3d4e5f60";
const SECRET: &str = "Sh4redSecretThatMustNeverBeLogged-0d1e2f";

fn app() -> Lifecycle<MemoryStore, InMemoryKeys, FixedClock> {
    let config = AppConfig::from_lookup(app_env).unwrap();
    Lifecycle::new(
        config,
        Arc::new(MemoryStore::new()),
        install_keys(),
        FixedClock(NOW),
    )
    .unwrap()
}

/// Atlassian's signed-install token for `/installed`.
fn install_token_now() -> String {
    install_token(CLIENT, "/installed", NOW)
}

/// The raw API Gateway HTTP API (v2) event of a signed install, as Lambda delivers it.
fn install_event(token: &str) -> String {
    api_gateway_event(
        "POST",
        "/installed",
        "",
        Some(&format!("JWT {token}")),
        &install_payload(CLIENT, SECRET).to_string(),
    )
}

/// The function as `main` runs it, in the child process `run_child` starts.
#[test]
fn lambda_child() {
    lambda_runtime_api::child_main(async {
        telemetry::init_json_logs();
        serve_http(app(), |lifecycle, request| async move {
            lifecycle.handle(request).await
        })
        .await
    });
}

#[test]
fn under_the_lambda_runtime_at_rust_log_trace_an_install_logs_no_secret_and_no_token() {
    let token = install_token_now();
    for rust_log in [
        "trace",
        "lambda_runtime=trace,lambda_http=trace,hyper=trace,trace",
    ] {
        let run = lambda_runtime_api::run_child("lambda_child", rust_log, &[install_event(&token)]);
        assert_eq!(run.statuses(), [204], "{}", run.output());
        let logs = run.output();
        // The logs were captured: our line, inside the runtime's span (INFO, so kept).
        let installed = json_lines(&run.stdout)
            .into_iter()
            .find(|line| line["fields"]["message"] == "installed")
            .unwrap_or_else(|| panic!("no `installed` line:\n{logs}"));
        assert_eq!(installed["spans"][0]["name"], "Lambda runtime invoke");
        assert_eq!(installed["spans"][0]["requestId"], "req-1");
        assert_no_secret(&logs, SECRET, &token);
        assert!(!logs.contains("raw JSON event"), "{logs}");
    }
}

#[tokio::test]
async fn through_the_handler_at_trace_in_both_formats_an_install_logs_no_secret() {
    let token = install_token_now();
    for format in [LogFormat::Json, LogFormat::Text] {
        let captured = LogCapture::default();
        let sink = captured.clone();
        let subscriber = telemetry::subscriber(format, Some("trace"), move || sink.writer());
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = app();
        let raw = install_event(&token);
        // What the runtime logs of each event, at trace, from its own target: dropped.
        tracing::trace!(target: "lambda_runtime::layers::api_response", body = raw.as_str(),
            "raw JSON event received from Lambda");
        // lambda_http's conversion of the raw event, then the handler, as in `main`.
        let request = lambda_http::request::from_str(&raw).unwrap();
        let response = to_lambda_response(app.handle(to_api_request(request)).await);
        assert_eq!(response.status(), 204);
        let logs = captured.text();
        assert!(logs.contains("installed"), "{logs}");
        assert_no_secret(&logs, SECRET, &token);
    }
}
