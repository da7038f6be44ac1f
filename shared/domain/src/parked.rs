//! Parked jobs: the last job of a page that was blocked or failed, kept so that a site admin can
//! see why and queue it again ("retry now"). A later attempt on the page that edits it (or finds
//! nothing to change) takes it away.

use serde::{Deserialize, Serialize};

use crate::audit::EditOutcome;
use crate::ids::{AccountId, ClientKey, PageId};

/// How long a parked job is kept: as long as the audit trail it comes from (90 days).
pub const PARKED_JOB_RETENTION_SECONDS: i64 = 90 * 24 * 60 * 60;

/// One page's last blocked or failed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedJob {
    /// The tenant.
    pub client_key: ClientKey,
    /// The page.
    pub page_id: PageId,
    /// When it was parked, unix milliseconds (listing order).
    pub at_ms: i64,
    /// `blocked` or `failed`.
    pub outcome: EditOutcome,
    /// Why, in plain words, with what an admin can do (the audit record's reason).
    pub reason: String,
    /// Whether the queue gave up on it (its last delivery failed: the dead-letter queue).
    pub dead_lettered: bool,
    /// The queued job itself, as the queue's JSON (the store does not read it). It names the
    /// tenant and page but carries no secret; its `user` is an accountId, which is why parked
    /// jobs expire.
    pub job: String,
}

impl ParkedJob {
    /// Whether the queued job names `account` anywhere (as its user, or in the edit it carries):
    /// such a job goes when the account is closed. Read as text, not as the queue's format, so
    /// that no field is missed; an accountId that happens to be part of a longer word costs at
    /// most an admin's "retry now" button, never personal data kept.
    pub fn names(&self, account: &AccountId) -> bool {
        self.job.contains(account.as_str())
    }
}

/// A page of parked jobs, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParkedPage {
    /// The jobs.
    pub jobs: Vec<ParkedJob>,
    /// Where the next page starts (`at_ms` and page id of the last one listed), when there is one.
    pub next: Option<(i64, PageId)>,
}
