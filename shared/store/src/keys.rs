//! Sort keys of the single-table layout, shared by both adapters so the embedded file and the
//! DynamoDB table look the same to whoever reads them. Every prefix ends in `#`, so a prefix scan
//! cannot match another kind.

use understudy_domain::{AuditRecord, IdempotencyKey, PageId, TokenCacheKey};

pub(crate) const TENANT_SK: &str = "TENANT";
pub(crate) const SETTINGS_SK: &str = "SETTINGS";
pub(crate) const TOKEN_PREFIX: &str = "TOKEN#";
pub(crate) const AUDIT_PREFIX: &str = "AUDIT#";

pub(crate) fn token_sk(key: &TokenCacheKey) -> String {
    format!("{TOKEN_PREFIX}{}", key.as_str())
}

pub(crate) fn mark_sk(key: &IdempotencyKey) -> String {
    format!("MARK#{}", key.as_str())
}

/// Zero-padded so that string order is time order (DynamoDB sorts sort keys as bytes).
fn ms(at_ms: i64) -> String {
    format!("{:020}", at_ms.max(0))
}

pub(crate) fn audit_sk(at_ms: i64, id: &str) -> String {
    format!("{AUDIT_PREFIX}{}#{id}", ms(at_ms))
}

/// `PAGE#<pageId>#`: page ids are digits only, so page 1 never matches page 12.
pub(crate) fn page_prefix(page_id: &PageId) -> String {
    format!("PAGE#{}#", page_id.as_str())
}

pub(crate) fn page_sk(page_id: &PageId, at_ms: i64, id: &str) -> String {
    format!("{}{}#{id}", page_prefix(page_id), ms(at_ms))
}

/// An audit record expires `retention_seconds` after it happened.
pub(crate) fn audit_expiry(record: &AuditRecord, retention_seconds: i64) -> i64 {
    record
        .at_ms
        .div_euclid(1000)
        .saturating_add(retention_seconds)
}

/// Whether a record with this TTL is still visible at `now` (expired means `expires_at <= now`).
pub(crate) fn live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|t| t > now)
}
