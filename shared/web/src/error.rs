//! The one place failures become HTTP answers: 401 with `WWW-Authenticate` for
//! auth failures, 400/413/415 for bad input, 403 for a verified caller who may not, 503 for a
//! dependency that is down, 500 with an opaque body for bugs. Bodies are short JSON reasons that
//! never carry a token, a secret or the caller's input.

use connect_auth::AuthError;
use http::{HeaderValue, StatusCode, header};
use understudy_core::EditResult;
use understudy_domain::StoreError;

use crate::response::{ApiResponse, json};

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication failed (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The input is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than the route accepts (413).
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The route's limit.
        limit: usize,
    },
    /// The body is not JSON (415).
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// A verified caller who may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such route (404).
    #[error("no such route")]
    NotFound,
    /// The route exists for other methods (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The caller made more requests than its limit allows (429 with `Retry-After`).
    #[error("too many requests: try again in {retry_after_seconds} seconds")]
    TooManyRequests {
        /// When the caller may try again.
        retry_after_seconds: i64,
    },
    /// A dependency is down (503); the reason is logged, not sent.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug (500); the reason is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        if err.is_unavailable() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Unauthorized(err.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable { .. } => Self::Unavailable(err.to_string()),
            _ => Self::Internal(err.to_string()),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer, with `WWW-Authenticate: JWT realm="<app key>"` on 401. 503 and 500 bodies are
    /// opaque: their reasons are logged here instead.
    pub fn into_response(self, app_key: &str) -> ApiResponse {
        let status = self.status();
        let reason = match &self {
            Self::Unavailable(reason) => {
                tracing::warn!(status = status.as_u16(), reason = %reason, "dependency unavailable");
                "service temporarily unavailable, try again later".to_owned()
            }
            Self::Internal(reason) => {
                tracing::error!(status = status.as_u16(), reason = %reason, "internal error");
                "internal error".to_owned()
            }
            other => {
                tracing::info!(status = status.as_u16(), reason = %other, "request refused");
                other.to_string()
            }
        };
        let mut response = json(status, &serde_json::json!({ "error": reason }));
        if status == StatusCode::UNAUTHORIZED {
            // The realm is the app key; quote characters cannot occur in a Connect app key, but
            // never let one break the header.
            let realm = app_key.replace(['"', '\\'], "");
            if let Ok(value) = HeaderValue::from_str(&format!("JWT realm=\"{realm}\"")) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Self::TooManyRequests {
            retry_after_seconds,
        } = self
            && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The status of an edit that the API ran, by what came of it; its body is the audit record either
/// way. 200 edited or unchanged; 400 refused before anything was sent (over a bound); 403 blocked
/// (Confluence or the tenant's policy said no); 503 failed for a passing reason (try again); 502
/// failed for good (Confluence answered with an error that retrying will not fix).
pub fn edit_status(result: &EditResult) -> StatusCode {
    match result {
        EditResult::Edited | EditResult::Unchanged => StatusCode::OK,
        EditResult::Refused(_) => StatusCode::BAD_REQUEST,
        EditResult::Blocked(_) => StatusCode::FORBIDDEN,
        EditResult::Failed(error) if error.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        EditResult::Failed(_) => StatusCode::BAD_GATEWAY,
    }
}

/// Serves `result` or its error as the answer.
pub fn respond(result: Result<ApiResponse, ApiError>, app_key: &str) -> ApiResponse {
    result.unwrap_or_else(|err| err.into_response(app_key))
}

/// Body of an answer, for tests and logs.
pub fn body_text(response: &ApiResponse) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_401_with_the_realm_and_outages_503() {
        let r = ApiError::from(AuthError::BadSignature).into_response("understudy");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "JWT realm=\"understudy\""
        );
        // An unknown issuer and a bad signature read alike: a refusal does not say which
        // clientKeys are installed.
        assert_eq!(body_text(&r), "{\"error\":\"JWT could not be verified\"}");
        let r = ApiError::from(AuthError::UnknownIssuer).into_response("understudy");
        assert_eq!(body_text(&r), "{\"error\":\"JWT could not be verified\"}");

        let r = ApiError::from(AuthError::KeyUnavailable("down".into())).into_response("k");
        assert_eq!(r.status(), 503);
        assert!(!body_text(&r).contains("down"));

        let r = ApiError::from(StoreError::unavailable("throttled")).into_response("k");
        assert_eq!(r.status(), 503);
        let r = ApiError::from(StoreError::corrupt("tenant")).into_response("k");
        assert_eq!(r.status(), 500);
        assert_eq!(body_text(&r), "{\"error\":\"internal error\"}");
    }
}
