//! The Lambda entry points' conversions: API Gateway HTTP API (v2) events in, responses out.

use bytes::Bytes;
use lambda_http::{Body, Request, RequestExt, Response};

use crate::request::{ApiRequest, ApiResponse};

/// The request as the app's handlers see it. The path is API Gateway's `rawPath` (with a `$default`
/// stage, exactly what the qsh covers), not the URI that lambda_http re-normalised.
pub fn to_api_request(request: Request) -> ApiRequest {
    let raw_path = match request.raw_http_path() {
        "" => request.uri().path().to_owned(),
        raw => raw.to_owned(),
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
