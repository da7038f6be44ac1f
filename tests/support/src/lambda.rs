//! API Gateway HTTP API (v2) events, as Lambda delivers them to an HTTP function.

use serde_json::json;

/// The raw event of a request to the app at `understudy.example.com` (`$default` stage), with
/// `Authorization: <authorization>` when given and `body` as text.
pub fn api_gateway_event(
    method: &str,
    path: &str,
    query: &str,
    authorization: Option<&str>,
    body: &str,
) -> String {
    let mut headers = json!({"host": "understudy.example.com", "content-type": "application/json",
                             "user-agent": "Atlassian Connect/1.0"});
    if let Some(authorization) = authorization {
        headers["authorization"] = json!(authorization);
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api1", "domainName": "understudy.example.com",
            "domainPrefix": "understudy",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1",
                     "userAgent": "Atlassian Connect/1.0"},
            "requestId": "req-1", "routeKey": "$default", "stage": "$default",
            "time": "29/Nov/2026:20:00:00 +0000", "timeEpoch": 1_780_000_000_000_i64
        },
        "body": body, "isBase64Encoded": false
    })
    .to_string()
}

/// [`api_gateway_event`] as lambda_http reads it, the request a function's handler is given.
pub fn api_gateway_request(
    method: &str,
    path: &str,
    query: &str,
    authorization: Option<&str>,
    body: &str,
) -> lambda_http::Request {
    lambda_http::request::from_str(&api_gateway_event(method, path, query, authorization, body))
        .unwrap_or_else(|e| panic!("not an API Gateway event: {e}"))
}
