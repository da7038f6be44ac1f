//! The request as received. The response type lives in [`crate::response`] (re-exported here for
//! callers that name it `request::…`).

use bytes::Bytes;
use http::{HeaderMap, Method, header};

use crate::error::ApiError;
pub use crate::response::{ApiResponse, empty, json};

/// A request as it arrived, independent of Lambda or any web framework.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path as received, still percent-encoded.
    pub raw_path: String,
    /// The query string as received, without `?`.
    pub raw_query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The domain API Gateway routed the request by (`requestContext.domainName` of an HTTP API
    /// event): this API's execute-api hostname or a custom domain mapped to this API. `None`
    /// outside API Gateway (the local app, tests built from plain `http` requests).
    pub domain_name: Option<String>,
}

impl ApiRequest {
    /// From any `http::Request` whose body is already collected.
    pub fn from_http(request: http::Request<Bytes>) -> Self {
        let (parts, body) = request.into_parts();
        Self {
            method: parts.method,
            raw_path: parts.uri.path().to_owned(),
            raw_query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts.headers,
            body,
            domain_name: None,
        }
    }

    /// The app's base URL as this request reached it, `https://<domain_name>` (the HTTP API's
    /// `$default` stage has no path), for a deployment that does not set `APP_BASE_URL`
    /// ([`crate::AppConfig::base_url_for`]). `None` outside API Gateway, or when the domain is not
    /// a plain DNS name.
    ///
    /// Safe to trust, unlike the `Host` header a caller writes: API Gateway sets `domainName` to
    /// the domain it routed the request by ("the full domain name used to invoke the API",
    /// <https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-logging-variables.html>),
    /// and it finds the API by that domain, so a request that reaches this API's functions came
    /// through this API's own execute-api domain or through a custom domain that its AWS account
    /// mapped to this API
    /// (<https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-mappings.html>); a
    /// request naming another API's domain goes to that API, or is refused, never here. So a
    /// signed install replayed from another app (whose audience is that app's URL) still fails
    /// the audience check.
    pub fn own_base_url(&self) -> Option<String> {
        let domain = self.domain_name.as_deref()?.trim();
        let labels_ok = !domain.is_empty()
            && domain.len() <= 253
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        // At least one dot, and not an IP address: a DNS name.
        let is_name = domain.contains('.') && domain.parse::<std::net::IpAddr>().is_err();
        (labels_ok && is_name).then(|| format!("https://{}", domain.to_ascii_lowercase()))
    }

    /// The path relative to the app's base path: what routes match on and what the qsh covers.
    pub fn relative_path<'a>(&'a self, base_path: &str) -> &'a str {
        let base = base_path.trim_end_matches('/');
        match self.raw_path.strip_prefix(base) {
            Some(rest) if !base.is_empty() && (rest.is_empty() || rest.starts_with('/')) => {
                if rest.is_empty() { "/" } else { rest }
            }
            _ => &self.raw_path,
        }
    }

    /// The request as connect-auth hashes it.
    pub fn parts<'a>(&'a self, base_path: &'a str) -> connect_auth::RequestParts<'a> {
        connect_auth::RequestParts::new(self.method.as_str(), &self.raw_path, &self.raw_query)
            .with_base_path(base_path)
    }

    /// The `Authorization` header, if it is valid text.
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The body, refused when larger than `limit` bytes (413) or, when a content type is given,
    /// when it is not JSON (415).
    pub fn json_body(&self, limit: usize) -> Result<&[u8], ApiError> {
        if self.body.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        if let Some(content_type) = self.headers.get(header::CONTENT_TYPE) {
            let is_json = content_type
                .to_str()
                .ok()
                .and_then(|v| v.split(';').next())
                .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
            if !is_json {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        Ok(&self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> ApiRequest {
        ApiRequest::from_http(
            http::Request::builder()
                .uri(path)
                .body(Bytes::new())
                .unwrap(),
        )
    }

    #[test]
    fn the_relative_path_strips_the_base_path_on_a_segment_boundary() {
        assert_eq!(
            request("/app/installed").relative_path("/app"),
            "/installed"
        );
        assert_eq!(
            request("/application/installed").relative_path("/app"),
            "/application/installed"
        );
        assert_eq!(request("/installed").relative_path(""), "/installed");
        assert_eq!(request("/app").relative_path("/app/"), "/");
    }

    #[test]
    fn the_own_base_url_is_the_routed_domain_over_https_and_only_a_dns_name() {
        let mut r = request("/x");
        assert_eq!(r.own_base_url(), None, "not through API Gateway");
        for (domain, expected) in [
            (
                "abc.execute-api.us-east-1.amazonaws.com",
                Some("https://abc.execute-api.us-east-1.amazonaws.com"),
            ),
            (
                "Understudy.Example.com",
                Some("https://understudy.example.com"),
            ),
            ("", None),
            ("localhost", None),
            ("192.0.2.1", None),
            ("evil.example/x", None),
            ("user@evil.example", None),
            ("evil.example:8443", None),
            ("a..example", None),
            ("-a.example", None),
        ] {
            r.domain_name = Some(domain.to_owned());
            assert_eq!(r.own_base_url().as_deref(), expected, "{domain:?}");
        }
    }

    #[test]
    fn bodies_are_bounded_and_must_be_json_when_typed() {
        let mut r = request("/x");
        r.body = Bytes::from_static(b"{}");
        assert!(r.json_body(2).is_ok());
        assert!(matches!(
            r.json_body(1),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        r.headers
            .insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(
            r.json_body(10),
            Err(ApiError::UnsupportedMediaType)
        ));
        r.headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(r.json_body(10).is_ok());
    }
}
