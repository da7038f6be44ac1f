//! Load and timing harness for the local app, run by hand through `tests/load/run.sh`.
//!
//! - `load-prep`: writes tenants straight into an embedded store (before the app opens it: redb
//!   locks the file) and a wrk Lua script that signs one webhook token per tenant.
//! - `hello-floor`: a trivial HTTP server on the same stack (tokio + axum), the floor the webhook
//!   path is compared with.
//!
//! Nothing here runs in CI; `RESULTS.md` holds the figures and the commands behind them.

/// The event every generated request is for (`POST /webhooks/page_updated`).
pub const WEBHOOK_PATH: &str = "/webhooks/page_updated";

/// The rules document that matches every generated event, so each request reaches the queue.
pub const EDIT_RULES: &str = r#"{"restricted_pages": "skip", "rules": [{"name": "load", "events": ["page_updated"], "edit": [{"append": "<p>load</p>"}]}]}"#;

/// The clientKey of tenant `index`.
pub fn client_key(index: usize) -> String {
    format!("load-tenant-{index:04}")
}

/// The shared secret of tenant `index` (throw-away, for load tests only).
pub fn shared_secret(index: usize) -> String {
    format!("load-secret-{index:04}-{}", "s".repeat(40))
}
