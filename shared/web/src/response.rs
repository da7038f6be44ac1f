//! The response type every handler returns, and the two ways it builds one. It depends on nothing
//! else in this crate, so the request ([`crate::request`]) and the error mapping ([`crate::error`])
//! both use it without using each other for it.

use bytes::Bytes;
use http::{StatusCode, header};

/// What every handler answers: a plain `http` response, turned into Lambda's or axum's by the entry point.
pub type ApiResponse = http::Response<Bytes>;

/// An empty answer with a status.
pub fn empty(status: StatusCode) -> ApiResponse {
    let mut response = http::Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> ApiResponse {
    let mut response = http::Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_say_so_and_empty_ones_carry_nothing() {
        let r = json(StatusCode::OK, &serde_json::json!({"a": 1}));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.body().as_ref(), b"{\"a\":1}");
        let r = empty(StatusCode::NO_CONTENT);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.body().is_empty());
    }
}
