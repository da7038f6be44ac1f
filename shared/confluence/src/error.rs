//! The client's errors are the core's (`understudy_core::ConfluenceError`, the vocabulary of the
//! Confluence port); this module only turns transport failures into their words.

pub use understudy_core::{ConfluenceError, TokenError};

/// Text of a transport error without the URL (which is safe, but long) and without any header.
pub(crate) fn network_reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "response body failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}
