//! At the most verbose log level, a signed webhook (whose `Authorization` header carries a JWT signed
//! with the tenant's shared secret) leaves neither the token nor the secret in the logs: not through
//! our code, and not through the Lambda runtime, which logs every raw event at `trace`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../../lifecycle/tests/support/lambda_runtime_api.rs"]
mod lambda_runtime_api;

use std::io;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use connect_auth::{FixedClock, RequestParts, SecretString, sign_hs256};
use lambda_http::{Error, service_fn};
use serde_json::{Value, json};
use understudy_domain::{MemoryStore, Tenant, TenantStore};
use understudy_queue::{EditJobMessage, EditQueue, MarkedQueue, QueueError};
use understudy_web::AppConfig;
use understudy_web::lambda::{to_api_request, to_lambda_response};
use understudy_web::telemetry::{self, LogFormat};
use understudy_webhooks::{Rules, Webhooks};

const NOW: i64 = 1_780_000_000;
const SECRET: &str = "TenantSecretThatMustNeverBeLogged-9a8b7c";
const PATH: &str = "/webhooks/page_updated";
const RULES: &str = r#"{"rules": [{"name": "footer", "events": ["page_updated"],
    "edit": [{"append": "<p>Reviewed</p>"}]}]}"#;

#[derive(Default)]
struct Jobs(Mutex<Vec<EditJobMessage>>);

#[async_trait]
impl EditQueue for Jobs {
    async fn enqueue(&self, job: &EditJobMessage) -> Result<(), QueueError> {
        self.0.lock().unwrap().push(job.clone());
        Ok(())
    }
}

type App = Webhooks<MemoryStore, MarkedQueue<MemoryStore, Jobs>, FixedClock>;

async fn app() -> App {
    let config = AppConfig::from_lookup(|name| {
        (name == "APP_BASE_URL").then(|| "https://understudy.example.com".to_owned())
    })
    .unwrap();
    let store = Arc::new(MemoryStore::new());
    let install = json!({"key": "understudy", "clientKey": "tenant-a", "sharedSecret": SECRET,
        "baseUrl": "https://tenant-a.atlassian.net/wiki", "productType": "confluence"});
    store
        .save_install(&Tenant::from_install_payload(install, NOW).unwrap(), NOW)
        .await
        .unwrap();
    let queue = Arc::new(MarkedQueue::new(store.clone(), Arc::new(Jobs::default())));
    Webhooks::new(
        config,
        Rules::parse(RULES).unwrap(),
        store,
        queue,
        FixedClock(NOW),
    )
}

fn token() -> String {
    let claims = json!({"iss": "tenant-a", "sub": "557058:alice", "iat": NOW, "exp": NOW + 180,
                        "qsh": RequestParts::new("POST", PATH, "").qsh()});
    sign_hs256(&claims, &SecretString::from(SECRET)).unwrap()
}

/// The raw API Gateway HTTP API (v2) event of a signed page webhook, as Lambda delivers it.
fn webhook_event(token: &str) -> String {
    let body = json!({"userAccountId": "557058:alice", "accountType": "customer",
        "page": {"idAsString": "42", "id": 42, "title": "Release 1.0", "spaceKey": "DOCS", "version": 3},
        "timestamp": 1_631_606_188_983_i64});
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": PATH, "rawQueryString": "",
        "headers": {"host": "understudy.example.com", "content-type": "application/json",
                    "authorization": format!("JWT {token}")},
        "requestContext": {"accountId": "1", "apiId": "a", "domainName": "understudy.example.com",
            "domainPrefix": "understudy", "http": {"method": "POST", "path": PATH,
            "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "Atlassian Connect"},
            "requestId": "r", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 0},
        "body": body.to_string(), "isBase64Encoded": false
    })
    .to_string()
}

/// Fails when `logs` hold the secret or any of the token (whole, or its signature alone).
fn assert_no_secret(logs: &str, token: &str) {
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(SECRET),
        "the shared secret was logged:\n{logs}"
    );
    assert!(!logs.contains(signature), "the JWT was logged:\n{logs}");
}

/// The function as `main` runs it, in the child process `run_child` starts.
#[test]
fn lambda_child() {
    if !lambda_runtime_api::is_child() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(async {
            understudy_web::telemetry::init_json_logs();
            let webhooks = Arc::new(app().await);
            lambda_http::run(service_fn(move |request| {
                let webhooks = webhooks.clone();
                async move {
                    Ok::<_, Error>(to_lambda_response(
                        webhooks.handle(to_api_request(request)).await,
                    ))
                }
            }))
            .await
        })
        .unwrap();
}

#[test]
fn under_the_lambda_runtime_at_rust_log_trace_a_webhook_logs_no_token() {
    let token = token();
    for rust_log in ["trace", "trace,lambda_runtime=trace,hyper_util=trace"] {
        let run = lambda_runtime_api::run_child("lambda_child", rust_log, &[webhook_event(&token)]);
        assert_eq!(run.statuses(), [204], "{}", run.output());
        let logs = run.output();
        let lines: Vec<Value> = run
            .stdout
            .lines()
            // (the test harness's own "test lambda_child ... " may start the first line)
            .filter_map(|line| serde_json::from_str(&line[line.find('{')?..]).ok())
            .collect();
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
        assert_no_secret(&logs, &token);
        assert!(!logs.contains("raw JSON event"), "{logs}");
    }
}

/// Everything a subscriber writes.
struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn through_the_handler_at_trace_in_both_formats_a_webhook_logs_no_token() {
    let token = token();
    for format in [LogFormat::Json, LogFormat::Text] {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let sink = captured.clone();
        let subscriber =
            telemetry::subscriber(format, Some("trace"), move || CaptureWriter(sink.clone()));
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
        let logs = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("edit queued"), "{logs}");
        assert_no_secret(&logs, &token);
    }
}
