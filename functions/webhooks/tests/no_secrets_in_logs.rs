//! At the most verbose log level, a signed webhook (whose `Authorization` header carries a JWT signed
//! with the tenant's shared secret) leaves neither the token nor the secret in the logs: not through
//! our code, and not through the Lambda runtime, which logs every raw event at `trace`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;

use connect_auth::FixedClock;
use serde_json::{Value, json};
use test_support::lambda::api_gateway_event;
use test_support::lambda_runtime_api;
use test_support::logs::{LogCapture, assert_no_secret, json_lines};
use test_support::queue::RecordingQueue;
use test_support::{ConnectToken, NOW, app_env, tenant};
use understudy_domain::{MemoryStore, TenantStore};
use understudy_queue::MarkedQueue;
use understudy_web::AppConfig;
use understudy_web::lambda::{serve_http, to_api_request, to_lambda_response};
use understudy_web::telemetry::{self, LogFormat};
use understudy_webhooks::{Rules, Webhooks};

const SECRET: &str = "TenantSecretThatMustNeverBeLogged-9a8b7c";
const PATH: &str = "/webhooks/page_updated";
const RULES: &str = r#"{"rules": [{"name": "footer", "events": ["page_updated"],
    "edit": [{"append": "<p>Reviewed</p>"}]}]}"#;

type App = Webhooks<MemoryStore, MarkedQueue<MemoryStore, RecordingQueue>, FixedClock>;

async fn app() -> App {
    let config = AppConfig::from_lookup(app_env).unwrap();
    let store = Arc::new(MemoryStore::new());
    let tenant = tenant(
        "tenant-a",
        SECRET,
        "https://tenant-a.atlassian.net/wiki",
        NOW,
    );
    store.save_install(&tenant, NOW).await.unwrap();
    let queue = Arc::new(MarkedQueue::new(
        store.clone(),
        Arc::new(RecordingQueue::default()),
    ));
    Webhooks::new(
        config,
        Rules::parse(RULES).unwrap(),
        store,
        queue,
        FixedClock(NOW),
    )
}

fn token() -> String {
    ConnectToken::for_post("tenant-a", PATH, NOW)
        .user("557058:alice")
        .sign(SECRET)
}

/// The raw API Gateway HTTP API (v2) event of a signed page webhook, as Lambda delivers it.
fn webhook_event(token: &str) -> String {
    let body = json!({"userAccountId": "557058:alice", "accountType": "customer",
        "page": {"idAsString": "42", "id": 42, "title": "Release 1.0", "spaceKey": "DOCS", "version": 3},
        "timestamp": 1_631_606_188_983_i64});
    api_gateway_event(
        "POST",
        PATH,
        "",
        Some(&format!("JWT {token}")),
        &body.to_string(),
    )
}

/// The function as `main` runs it, in the child process `run_child` starts.
#[test]
fn lambda_child() {
    lambda_runtime_api::child_main(async {
        telemetry::init_json_logs();
        serve_http(app().await, |webhooks, request| async move {
            webhooks.handle(request).await
        })
        .await
    });
}

#[test]
fn under_the_lambda_runtime_at_rust_log_trace_a_webhook_logs_no_token() {
    let token = token();
    for rust_log in ["trace", "trace,lambda_runtime=trace,hyper_util=trace"] {
        let run = lambda_runtime_api::run_child("lambda_child", rust_log, &[webhook_event(&token)]);
        assert_eq!(run.statuses(), [204], "{}", run.output());
        let logs = run.output();
        let lines: Vec<Value> = json_lines(&run.stdout);
        // The logs were captured, inside the runtime's span (INFO, kept), and our crates log at
        // the level asked for (`webhook answered` is DEBUG).
        let queued = lines
            .iter()
            .find(|line| line["fields"]["message"] == "edit queued")
            .unwrap_or_else(|| panic!("no `edit queued` line:\n{logs}"));
        assert_eq!(queued["spans"][0]["name"], "Lambda runtime invoke");
        assert!(
            lines
                .iter()
                .any(|line| line["fields"]["message"] == "webhook answered"
                    && line["level"] == "DEBUG"),
            "{logs}"
        );
        assert_no_secret(&logs, SECRET, &token);
        assert!(!logs.contains("raw JSON event"), "{logs}");
    }
}

#[tokio::test]
async fn through_the_handler_at_trace_in_both_formats_a_webhook_logs_no_token() {
    let token = token();
    for format in [LogFormat::Json, LogFormat::Text] {
        let captured = LogCapture::default();
        let sink = captured.clone();
        let subscriber = telemetry::subscriber(format, Some("trace"), move || sink.writer());
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = app().await;
        let raw = webhook_event(&token);
        // What the runtime logs of each event, at trace, from its own target: dropped.
        tracing::trace!(target: "lambda_runtime::layers::api_response", body = raw.as_str(),
            "raw JSON event received from Lambda");
        // lambda_http's conversion of the raw event, then the handler, as in `main`.
        let request = lambda_http::request::from_str(&raw).unwrap();
        let response = to_lambda_response(app.handle(to_api_request(request)).await);
        assert_eq!(response.status(), 204);
        let logs = captured.text();
        assert!(logs.contains("edit queued"), "{logs}");
        assert_no_secret(&logs, SECRET, &token);
    }
}
