//! The kit of the Lambda entry points, so that a function's `main` is a few lines:
//!
//! - [`start`]: the function's settings read once (a [`FromEnv`] type; `RUST_LOG` too, for the
//!   logs), and its JSON logs started;
//! - [`DeployedConfig`]: what every deployed function reads (from [`crate::deployed`]), and
//!   [`StoreSettings::open`] for the DynamoDB store;
//! - [`serve_http`]: an HTTP function served on API Gateway HTTP API (v2) events;
//! - [`variables`]: what a function with given settings reads, for the deployment test.
//!
//! And the conversions it uses: API Gateway events in ([`to_api_request`]), responses out
//! ([`to_lambda_response`]).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use understudy_store::{DynamoConfig, DynamoStore, KmsCipher, KmsConfig, SdkConfig};

use crate::config::ConfigError;
use crate::deployed::read_function;
pub use crate::deployed::{DeployedConfig, StoreSettings, variables};
use crate::env::{Env, FromEnv};
use crate::request::ApiRequest;
use crate::response::ApiResponse;

/// Reads a function's settings from its environment, once, at its cold start, and starts its JSON
/// logs at the level `RUST_LOG` names. A missing or invalid variable stops the start, logged and
/// returned with the variable's name.
pub fn start<C: FromEnv>() -> Result<C, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let env = Env::new(&lookup);
    let (log, settings) = read_function::<C>(&env);
    crate::telemetry::init_json_logs_at(log.as_deref());
    env.finish(settings).inspect_err(|err| {
        tracing::error!(error = %err, "the function's settings are refused: it does not start");
    })
}

impl StoreSettings {
    /// The store, over the function's shared SDK configuration
    /// ([`understudy_store::load_aws_config`], loaded once per cold start).
    pub fn open(&self, sdk: &SdkConfig) -> DynamoStore {
        let kms = KmsConfig {
            key_id: self.kms_key_id.clone(),
            endpoint_url: None,
            region: None,
        };
        let table = DynamoConfig {
            table_name: self.table_name.clone(),
            endpoint_url: None,
            region: None,
        };
        DynamoStore::from_config(sdk, &table, Arc::new(KmsCipher::from_config(sdk, &kms)))
    }
}

/// Serves an HTTP function on Lambda until the runtime stops it: each API Gateway event becomes an
/// [`ApiRequest`] for `handle`, called with the function's state built once at the cold start
/// (`|function, request| async move { function.handle(request).await }`).
pub async fn serve_http<H, F, Fut>(function: H, handle: F) -> Result<(), Error>
where
    H: Send + Sync + 'static,
    F: Fn(Arc<H>, ApiRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ApiResponse> + Send + 'static,
{
    let function = Arc::new(function);
    let handle = Arc::new(handle);
    lambda_http::run(service_fn(move |request: Request| {
        let budget = time_left(request.lambda_context_ref().map(|c| c.deadline));
        let answer = handle(function.clone(), to_api_request(request));
        async move { Ok::<_, Error>(to_lambda_response(within_budget(budget, answer).await)) }
    }))
    .await
}

/// What is left of an invocation whose deadline is `deadline_ms` (unix milliseconds, as the
/// runtime tells it), less a second to answer in; `None` when the runtime said nothing.
fn time_left(deadline_ms: Option<u64>) -> Option<Duration> {
    let deadline_ms = deadline_ms?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_millis()).ok())?;
    Some(Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(ANSWER_MARGIN))
}

/// Kept back from an invocation's time to answer in.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// The handler's answer, or a 503 the caller may retry when it has not answered within `budget`:
/// every function answers before Lambda's timeout would cut it off without one. (The paths that
/// write in steps bound their own steps far below it, so the cut never falls between them.)
pub async fn within_budget(
    budget: Option<Duration>,
    answer: impl Future<Output = ApiResponse>,
) -> ApiResponse {
    let Some(budget) = budget else {
        return answer.await;
    };
    match tokio::time::timeout(budget, answer).await {
        Ok(answer) => answer,
        Err(_) => {
            tracing::error!(
                budget_ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
                "no answer before the function's timeout: 503"
            );
            crate::ApiError::Unavailable("the function ran out of time".into()).into_response("")
        }
    }
}

/// The request as the app's handlers see it. The path is API Gateway's `rawPath` (with a `$default`
/// stage, exactly what the qsh covers), not the URI that lambda_http re-normalised. The domain is
/// the event's `requestContext.domainName`, the domain API Gateway routed the request by (never the
/// `Host` header as such): what [`ApiRequest::own_base_url`] builds the app's base URL from when
/// `APP_BASE_URL` is unset (see there why it can be trusted).
pub fn to_api_request(request: Request) -> ApiRequest {
    let raw_path = match request.raw_http_path() {
        "" => request.uri().path().to_owned(),
        raw => raw.to_owned(),
    };
    let domain_name = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.domain_name.clone(),
        _ => None,
    };
    let (parts, body) = request.into_parts();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    ApiRequest {
        method: parts.method,
        raw_path,
        raw_query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
        domain_name,
    }
}

/// The handler's answer as Lambda's response.
pub fn to_lambda_response(response: ApiResponse) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let body = if body.is_empty() {
        Body::Empty
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(err) => Body::Binary(err.into_bytes()),
        }
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// An HTTP API (v2) event to `domain`, as API Gateway sends it.
    fn event(domain: Option<&str>, host: &str) -> Request {
        let mut context = serde_json::json!({
            "accountId": "123456789012", "apiId": "abc", "domainPrefix": "abc",
            "http": {"method": "GET", "path": "/atlassian-connect.json", "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.1", "userAgent": "test"},
            "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1_780_000_000_000_i64
        });
        if let Some(domain) = domain {
            context["domainName"] = serde_json::json!(domain);
        }
        let event = serde_json::json!({
            "version": "2.0", "routeKey": "$default", "rawPath": "/atlassian-connect.json",
            "rawQueryString": "", "headers": {"host": host}, "requestContext": context,
            "isBase64Encoded": false
        });
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn the_domain_is_api_gateways_routed_domain_not_the_host_header() {
        let request = to_api_request(event(
            Some("abc.execute-api.us-east-1.amazonaws.com"),
            "evil.example",
        ));
        assert_eq!(
            request.domain_name.as_deref(),
            Some("abc.execute-api.us-east-1.amazonaws.com")
        );
        assert_eq!(
            request.own_base_url().as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com")
        );
        assert_eq!(request.raw_path, "/atlassian-connect.json");
        let request = to_api_request(event(None, "evil.example"));
        assert_eq!(request.domain_name, None);
        assert_eq!(request.own_base_url(), None);
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_late_for_the_functions_timeout_is_a_503_in_time() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            crate::error::respond(Err(crate::ApiError::NotFound), "")
        };
        let started = std::time::Instant::now();
        let answer = within_budget(Some(Duration::from_millis(100)), slow).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(answer.status(), 503);
    }

    #[test]
    fn the_budget_is_what_is_left_less_a_second() {
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(0);
        let left = time_left(Some(now_ms + 10_000)).unwrap_or_default();
        assert!(
            left <= Duration::from_secs(9) && left > Duration::from_secs(8),
            "{left:?}"
        );
        assert_eq!(time_left(Some(now_ms)), Some(Duration::ZERO));
        assert_eq!(time_left(None), None);
    }
}
