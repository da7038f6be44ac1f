//! At the most verbose log level, a signed install (whose body carries the tenant's shared secret,
//! whose `Authorization` header carries Atlassian's JWT) leaves neither in the logs: not through our
//! code, and not through the Lambda runtime, which logs every raw event at `trace`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "support/lambda_runtime_api.rs"]
mod lambda_runtime_api;

use std::io;
use std::sync::{Arc, Mutex};

use connect_auth::{FixedClock, InMemoryKeys, RequestParts};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::{Error, service_fn};
use serde_json::{Value, json};
use understudy_domain::MemoryStore;
use understudy_lifecycle::Lifecycle;
use understudy_web::AppConfig;
use understudy_web::lambda::{to_api_request, to_lambda_response};
use understudy_web::telemetry::{self, LogFormat};

const NOW: i64 = 1_780_000_000;
const APP: &str = "https://understudy.example.com";
const PRIVATE_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.private.pem");
const PUBLIC_PEM: &[u8] =
    include_bytes!("../../../shared/connect-auth/tests/fixtures/test-install-key.public.pem");
const CLIENT: &str = "7c3a1a66-4b1d-4f5e-9a57-1b2c3d4e5f60";
const SECRET: &str = "Sh4redSecretThatMustNeverBeLogged-0d1e2f";

fn app() -> Lifecycle<MemoryStore, InMemoryKeys, FixedClock> {
    let config = AppConfig::from_lookup(|name| match name {
        "APP_BASE_URL" => Some(APP.to_owned()),
        "APP_KEY" => Some("understudy".to_owned()),
        _ => None,
    })
    .unwrap();
    let keys = InMemoryKeys::new();
    keys.insert_pem("install-kid-1", PUBLIC_PEM).unwrap();
    Lifecycle::new(config, Arc::new(MemoryStore::new()), keys, FixedClock(NOW)).unwrap()
}

/// Atlassian's signed-install token for `/installed`.
fn install_token() -> String {
    let claims = json!({"iss": CLIENT, "aud": [APP], "iat": NOW, "exp": NOW + 180,
                        "qsh": RequestParts::new("POST", "/installed", "").qsh()});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("install-kid-1".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(PRIVATE_PEM).unwrap(),
    )
    .unwrap()
}

/// The raw API Gateway HTTP API (v2) event of a signed install, as Lambda delivers it.
fn install_event(token: &str) -> String {
    let body = json!({
        "key": "understudy", "clientKey": CLIENT, "sharedSecret": SECRET,
        "baseUrl": "https://acme.atlassian.net/wiki", "productType": "confluence",
        "eventType": "installed", "oauthClientId": "oauth-client-1"
    });
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/installed", "rawQueryString": "",
        "headers": {"host": "understudy.example.com", "content-type": "application/json",
                    "authorization": format!("JWT {token}")},
        "requestContext": {
            "accountId": "123456789012", "apiId": "api1", "domainName": "understudy.example.com",
            "domainPrefix": "understudy",
            "http": {"method": "POST", "path": "/installed", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "Atlassian Connect/1.0"},
            "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1_780_000_000_000_i64
        },
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
            let lifecycle = Arc::new(app());
            lambda_http::run(service_fn(move |request| {
                let lifecycle = lifecycle.clone();
                async move {
                    Ok::<_, Error>(to_lambda_response(
                        lifecycle.handle(to_api_request(request)).await,
                    ))
                }
            }))
            .await
        })
        .unwrap();
}

#[test]
fn under_the_lambda_runtime_at_rust_log_trace_an_install_logs_no_secret_and_no_token() {
    let token = install_token();
    for rust_log in [
        "trace",
        "lambda_runtime=trace,lambda_http=trace,hyper=trace,trace",
    ] {
        let run = lambda_runtime_api::run_child("lambda_child", rust_log, &[install_event(&token)]);
        assert_eq!(run.statuses(), [204], "{}", run.output());
        let logs = run.output();
        // The logs were captured: our line, inside the runtime's span (INFO, so kept).
        let installed = run
            .stdout
            .lines()
            // (the test harness's own "test lambda_child ... " may start the first line)
            .filter_map(|line| serde_json::from_str::<Value>(&line[line.find('{')?..]).ok())
            .find(|line| line["fields"]["message"] == "installed")
            .unwrap_or_else(|| panic!("no `installed` line:\n{logs}"));
        assert_eq!(installed["spans"][0]["name"], "Lambda runtime invoke");
        assert_eq!(installed["spans"][0]["requestId"], "req-1");
        assert_no_secret(&logs, &token);
        assert!(!logs.contains("raw JSON event"), "{logs}");
    }
}

/// Everything a subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

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
async fn through_the_handler_at_trace_in_both_formats_an_install_logs_no_secret() {
    let token = install_token();
    for format in [LogFormat::Json, LogFormat::Text] {
        let captured = Captured::default();
        let sink = captured.0.clone();
        let subscriber =
            telemetry::subscriber(format, Some("trace"), move || CaptureWriter(sink.clone()));
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
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("installed"), "{logs}");
        assert_no_secret(&logs, &token);
    }
}
