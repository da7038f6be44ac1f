//! The audit trail of edits: one record per attempt to change a page.

use serde::{Deserialize, Serialize};

use crate::ids::{AccountId, ClientKey, PageId};

/// Who the edit was made as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "account_id", rename_all = "snake_case")]
pub enum ActedAs {
    /// The app user (JWT as the app).
    App,
    /// An impersonated user (OAuth JWT bearer grant).
    User(AccountId),
}

/// How the edit was attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditStrategy {
    /// As the app user.
    AsApp,
    /// As a user who may edit the restricted page.
    Impersonate,
    /// By granting the app user access first.
    Grant,
    /// Not attempted (policy said so).
    Skip,
}

/// What came of the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOutcome {
    /// The page has a new version.
    Edited,
    /// Nothing needed changing.
    Unchanged,
    /// Policy or permissions stopped the edit.
    Blocked,
    /// The edit was tried and failed.
    Failed,
    /// The edit was refused before any change was sent: it would exceed a bound (too many
    /// operations, a page larger than Confluence accepts).
    Refused,
    /// The job was dropped without a try: the user it would act for has a closed account
    /// (personal data erasure), so nothing is done in that person's name.
    Skipped,
}

/// One audited edit attempt. Contains no secret; `acted_as` may hold an accountId, which is why
/// audit records carry a TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Tenant whose page it was.
    pub client_key: ClientKey,
    /// The page.
    pub page_id: PageId,
    /// When, in unix milliseconds (listing order; ties keep no particular order).
    pub at_ms: i64,
    /// Page version before the attempt, when known.
    pub version_before: Option<u64>,
    /// Page version after the attempt, when one was made.
    pub version_after: Option<u64>,
    /// The app or the impersonated user.
    pub acted_as: ActedAs,
    /// How it was attempted.
    pub strategy: EditStrategy,
    /// What came of it.
    pub outcome: EditOutcome,
    /// Short human-readable reason (no secrets, no page content).
    pub reason: String,
    /// The edit job's id / idempotency key.
    pub job_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_record_round_trips_through_json_with_readable_enums() {
        let record = AuditRecord {
            client_key: ClientKey::parse("ck").unwrap(),
            page_id: PageId::parse("42").unwrap(),
            at_ms: 1_700_000_000_000,
            version_before: Some(3),
            version_after: None,
            acted_as: ActedAs::User(AccountId::parse("abc:123").unwrap()),
            strategy: EditStrategy::Impersonate,
            outcome: EditOutcome::Blocked,
            reason: "restricted".into(),
            job_id: "job-1".into(),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["acted_as"]["kind"], "user");
        assert_eq!(json["acted_as"]["account_id"], "abc:123");
        assert_eq!(json["strategy"], "impersonate");
        assert_eq!(serde_json::from_value::<AuditRecord>(json).unwrap(), record);
        let app = serde_json::to_value(ActedAs::App).unwrap();
        assert_eq!(
            serde_json::from_value::<ActedAs>(app).unwrap(),
            ActedAs::App
        );
    }
}
