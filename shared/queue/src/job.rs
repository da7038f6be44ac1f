//! The queued edit job.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use understudy_core::{Edit, RestrictedPagePolicy, WebhookEvent};
use understudy_domain::{AccountId, ClientKey, InstallationId, PageId};

/// An accepted edit, as queued. It names the tenant but carries no secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EditJobMessage {
    /// The idempotency key: one job per (tenant, page, version, event).
    pub job_id: String,
    /// The tenant.
    pub client_key: ClientKey,
    /// The page.
    pub page_id: PageId,
    /// The page event that caused it (`page_created`, … on the wire, as before).
    pub event: WebhookEvent,
    /// The page version the event announced, when it did.
    pub page_version: Option<u64>,
    /// The user who triggered the event: the one to act as, or grant through, on a restricted page.
    pub user: Option<AccountId>,
    /// What to do when a restriction blocks the app.
    pub policy: RestrictedPagePolicy,
    /// The operations, from every rule that matched, in rule order.
    pub edit: Edit,
    /// The names of the rules that matched, for the audit trail.
    pub rules: Vec<String>,
    /// When the webhook accepted it (unix seconds).
    pub accepted_at: i64,
    /// The Forge installation whose event it was: the job edits through the Forge door (its system
    /// token, offline user impersonation). `None`: a Connect webhook's job (the Connect door).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_installation: Option<InstallationId>,
}

impl EditJobMessage {
    /// The FIFO message group: one per tenant and page, hashed so that no clientKey reaches SQS
    /// metadata and the id stays within SQS's 128 characters.
    pub fn group_id(&self) -> String {
        let tenant = Sha256::digest(self.client_key.as_str().as_bytes());
        format!(
            "{}-{}",
            hex::encode(tenant.get(..16).unwrap_or_default()),
            self.page_id.as_str()
        )
    }

    /// The FIFO de-duplication id: the job id, hashed to SQS's allowed length and alphabet.
    pub fn deduplication_id(&self) -> String {
        hex::encode(Sha256::digest(format!(
            "{}\n{}",
            self.client_key.as_str(),
            self.job_id
        )))
    }

    /// The message body.
    pub fn to_json(&self) -> Result<String, QueueError> {
        serde_json::to_string(self).map_err(|e| QueueError::Malformed(e.to_string()))
    }

    /// Parses a message body.
    pub fn from_json(body: &str) -> Result<Self, QueueError> {
        serde_json::from_str(body).map_err(|e| QueueError::Malformed(e.to_string()))
    }
}

/// Why a job could not be queued or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue could not be reached or refused the message: nothing was queued (503).
    #[error("edit queue unavailable: {0}")]
    Unavailable(String),
    /// A message that is not a job.
    #[error("malformed edit job: {0}")]
    Malformed(String),
}
